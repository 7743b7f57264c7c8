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
