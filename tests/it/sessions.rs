//! Sessions that leave nothing behind: every way a connection can end (a clean close, a
//! dropped socket mid-statement, a cancelled query, an open portal, a failed login) releases
//! the session and its catalog view.

use std::time::Duration;

use joinery_tests::{TestServer, text_rows};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A startup packet for protocol 3.0.
fn startup(user: &str) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for (k, v) in [("user", user), ("database", "joinery")] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn query(sql: &str) -> Vec<u8> {
    let mut out = vec![b'Q'];
    out.extend_from_slice(&((sql.len() + 5) as i32).to_be_bytes());
    out.extend_from_slice(sql.as_bytes());
    out.push(0);
    out
}

/// Log in over a raw socket, start a statement, and drop the socket without a Terminate.
async fn abrupt(server: &TestServer, sql: &str) {
    let mut sock = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    sock.write_all(&startup("tester")).await.expect("startup");
    // Read until ReadyForQuery ('Z').
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen
        .windows(6)
        .any(|w| w[0] == b'Z' && w[1..5] == [0, 0, 0, 5])
    {
        let n = tokio::time::timeout(Duration::from_secs(30), sock.read(&mut buf))
            .await
            .expect("startup answered")
            .expect("read");
        assert!(n > 0, "server closed during startup");
        seen.extend_from_slice(&buf[..n]);
    }
    sock.write_all(&query(sql)).await.expect("query");
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(sock);
}

async fn settled(server: &TestServer) -> (u64, usize) {
    let catalog = server.shared.factory.catalog().clone();
    // Closing is asynchronous (the connection task notices the socket): wait for it.
    for _ in 0..200 {
        if catalog.live_session_views() == 0 && server.shared.live_sessions() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (catalog.live_session_views(), server.shared.live_sessions())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_sessions_leave_nothing_behind() {
    let server = TestServer::demo().await;
    assert_eq!(settled(&server).await, (0, 0));

    // Clean closes, with the catalog queries clients send on connect and a prepared statement.
    for _ in 0..20 {
        let c = server.client().await;
        text_rows(&c, "SELECT count(*) FROM demo.customers").await;
        text_rows(
            &c,
            "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace LIMIT 5",
        )
        .await;
        let st = c
            .prepare("SELECT name FROM demo.customers WHERE id = $1")
            .await
            .expect("prepare");
        c.query(&st, &[&1i64]).await.expect("run");
        drop(c);
    }
    let open: Vec<_> = futures::future::join_all((0..10).map(|_| server.client())).await;
    assert!(server.shared.factory.catalog().live_session_views() >= 10);
    drop(open);

    // Sockets dropped mid-statement, and a cancelled statement.
    for _ in 0..10 {
        abrupt(
            &server,
            "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3",
        )
        .await;
    }
    let c = server.client().await;
    let token = c.cancel_token();
    let running = tokio::spawn(async move {
        let _ = c
            .simple_query(
                "SELECT count(*) FROM generate_series(1, 100000000000) AS t(x) WHERE x % 7 = 3",
            )
            .await;
        c
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    token
        .cancel_query(tokio_postgres::NoTls)
        .await
        .expect("cancel");
    drop(running.await.expect("task"));

    assert_eq!(
        settled(&server).await,
        (0, 0),
        "every closed session released its catalog view and its state"
    );
}

#[tokio::test]
async fn plans_are_reused_only_while_they_stay_right() {
    use std::sync::atomic::Ordering;
    let server = TestServer::demo().await;
    let c = server.client().await;
    let reused = || server.shared.plans_reused.load(Ordering::Relaxed);

    // A repeated simple query runs its earlier plan, with the same answer.
    let q = "SELECT region, count(*) FROM demo.customers GROUP BY 1 ORDER BY 1";
    let first = text_rows(&c, q).await;
    let before = reused();
    assert_eq!(text_rows(&c, q).await, first);
    assert_eq!(text_rows(&c, q).await, first);
    assert_eq!(reused(), before + 2, "the repeats ran the kept plan");

    // A prepared statement without parameters runs its Parse-time plan at each Execute.
    let st = c
        .prepare("SELECT count(*) FROM demo.orders WHERE status = 'paid'")
        .await
        .expect("prepare");
    let before = reused();
    let a: i64 = c.query_one(&st, &[]).await.expect("run").get(0);
    let b: i64 = c.query_one(&st, &[]).await.expect("run").get(0);
    assert_eq!(a, b);
    assert_eq!(reused(), before + 2);

    // now() is folded by the optimizer: such plans are never reused, so time moves.
    let t1 = text_rows(&c, "SELECT now()::text").await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t2 = text_rows(&c, "SELECT now()::text").await;
    assert_ne!(t1, t2, "now() is evaluated per statement");
    let st = c.prepare("SELECT now()::text").await.expect("prepare");
    let p1: String = c.query_one(&st, &[]).await.expect("run").get(0);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let p2: String = c.query_one(&st, &[]).await.expect("run").get(0);
    assert_ne!(p1, p2);

    // Settings that change planning invalidate kept plans: the same bare text follows
    // search_path, and a time zone change is seen.
    let bare = "SELECT count(*) FROM customers";
    c.simple_query("SET search_path TO demo")
        .await
        .expect("set");
    assert_eq!(text_rows(&c, bare).await[0][0].as_deref(), Some("50"));
    assert_eq!(text_rows(&c, bare).await[0][0].as_deref(), Some("50"));
    c.simple_query("SET search_path TO public")
        .await
        .expect("set");
    let e = c
        .simple_query(bare)
        .await
        .expect_err("not on the path any more");
    assert_eq!(joinery_tests::sqlstate(&e), "42P01");
    let tz = "SELECT TIMESTAMPTZ '2026-01-01 12:00:00+00'::text";
    c.simple_query("SET TIME ZONE 'UTC'").await.expect("tz");
    let utc = text_rows(&c, tz).await;
    c.simple_query("SET TIME ZONE 'America/New_York'")
        .await
        .expect("tz");
    assert_ne!(
        text_rows(&c, tz).await,
        utc,
        "the kept plan is not used across SET TIME ZONE"
    );
}
