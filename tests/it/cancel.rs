//! Cancel, statement timeout, connection limits, concurrency, shutdown.

use std::time::Duration;

use joinery_tests::{DEMO_CONFIG, TestServer, sqlstate, text_rows};

/// A query that runs far longer than any test (it is always stopped early).
const ENDLESS: &str =
    "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3";

/// Guard against hangs only; not a speed assertion.
const HANG_GUARD: Duration = Duration::from_secs(120);

#[tokio::test]
async fn cancel_request_stops_a_running_query() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let token = c.cancel_token();
    let running = tokio::spawn(async move {
        let r = c.simple_query(ENDLESS).await;
        (c, r)
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel sent");
    let (c, r) = tokio::time::timeout(HANG_GUARD, running)
        .await
        .expect("query stopped")
        .expect("task");
    let e = r.expect_err("canceled");
    assert_eq!(sqlstate(&e), "57014", "{e}");
    // The session carries on.
    assert_eq!(text_rows(&c, "SELECT 7").await[0][0].as_deref(), Some("7"));
}

#[tokio::test]
async fn cancel_with_wrong_secret_is_ignored() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    // Another session's cancel key must not cancel this one.
    let other = s.client().await;
    let other_token = other.cancel_token();
    other_token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("sent");
    let rows = text_rows(&c, "SELECT count(*) FROM demo.orders").await;
    assert_eq!(rows[0][0].as_deref(), Some("500"));
}

#[tokio::test]
async fn statement_timeout_cancels_with_57014() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    c.simple_query("SET statement_timeout = '300ms'")
        .await
        .expect("set");
    let e = tokio::time::timeout(HANG_GUARD, c.simple_query(ENDLESS))
        .await
        .expect("stopped")
        .expect_err("timed out");
    assert_eq!(sqlstate(&e), "57014");
    assert!(
        e.to_string().contains("statement timeout")
            || format!("{e:?}").contains("statement timeout")
    );
    c.simple_query("SET statement_timeout = 0")
        .await
        .expect("reset");
    assert_eq!(text_rows(&c, "SELECT 1").await[0][0].as_deref(), Some("1"));
}

#[tokio::test]
async fn two_hundred_concurrent_connections() {
    let s = TestServer::demo().await;
    let mut tasks = Vec::new();
    for i in 0..200i64 {
        let conn = s.conn_str(&format!("user{i}"));
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            let row = c
                .query_one("SELECT count(*) + $1, current_user FROM demo.orders", &[&i])
                .await?;
            Ok::<_, tokio_postgres::Error>((row.get::<_, i64>(0), row.get::<_, String>(1)))
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (n, user) = t.await.expect("task").expect("query");
        assert_eq!(n, 500 + i as i64);
        // No session sees another's identity.
        assert_eq!(user, format!("user{i}"));
    }
}

#[tokio::test]
async fn max_connections_refuses_with_53300() {
    let cfg = DEMO_CONFIG.replace("[server]", "[server]\nmax_connections = 2");
    let s = TestServer::with_config(&cfg).await;
    let a = s.client().await;
    let b = s.client().await;
    let e = tokio_postgres::connect(&s.conn_str("third"), tokio_postgres::NoTls)
        .await
        .err()
        .expect("third connection refused");
    assert_eq!(sqlstate(&e), "53300");
    drop(a);
    // A freed slot can be used again.
    let mut ok = false;
    for _ in 0..50 {
        if tokio_postgres::connect(&s.conn_str("again"), tokio_postgres::NoTls)
            .await
            .is_ok()
        {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "slot freed after disconnect");
    drop(b);
}

#[tokio::test]
async fn graceful_shutdown_lets_idle_server_stop() {
    let s = TestServer::demo().await;
    let port = s.port();
    tokio::time::timeout(HANG_GUARD, s.shutdown())
        .await
        .expect("stops");
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "listener closed after shutdown");
}

#[tokio::test]
async fn memory_limit_fails_the_statement_with_53200() {
    let cfg = DEMO_CONFIG.replace("[server]", "[server]\nquery_memory_limit = \"1MiB\"");
    let s = TestServer::with_config(&cfg).await;
    let c = s.client().await;
    let e = c
        .simple_query(
            "SELECT count(*) FROM generate_series(1, 2000000) AS a(x) \
             JOIN generate_series(1, 2000000) AS b(y) ON a.x = b.y",
        )
        .await
        .expect_err("hash join over the limit");
    assert_eq!(sqlstate(&e), "53200", "{e:?}");
    // Small statements still run in the same session.
    assert_eq!(
        text_rows(&c, "SELECT count(*) FROM demo.orders").await[0][0].as_deref(),
        Some("500")
    );
}
