//! Observability: `/metrics` (Prometheus text) and `/healthz`, `joinery.connector_stats`,
//! `joinery.queries`, and NOTICE progress while a slow scan has sent no row yet.

use std::time::Duration;

use futures::StreamExt;
use joinery_tests::text_rows;
use joinery_tests::workload::{BRIEF_QUESTION, DemoServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.expect("read");
    let status = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_connector_stats_and_queries() {
    let demo = DemoServer::start(42, 1, Duration::ZERO, "", "").await;
    let observe = joinery_server::observe::start(
        demo.server.shared.clone(),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("metrics listener");
    let client = demo.server.client().await;
    let answer = text_rows(&client, BRIEF_QUESTION).await;
    assert_eq!(answer.len(), 1);

    let (code, metrics) = http_get(observe.addr, "/metrics").await;
    assert_eq!(code, 200);
    for line in [
        r#"joinery_api_requests_total{connection="github",table="pull_requests"} 3"#,
        r#"joinery_api_requests_total{connection="jira",table="issues"} 3"#,
        r#"joinery_queries_total{status="ok"} 1"#,
        "joinery_client_connections 1",
        "# TYPE joinery_api_request_duration_seconds histogram",
        "joinery_query_connectors_sum 4.0",
        "joinery_query_api_calls_sum 9.0",
    ] {
        assert!(metrics.contains(line), "{line} missing from:\n{metrics}");
    }

    // The statement as joinery.queries sees it: four tools, nine API calls.
    let q = text_rows(
        &client,
        "SELECT connectors, connector_count, api_calls, rows, status FROM joinery.queries \
         WHERE statement LIKE '%velocity%' ORDER BY query_id DESC LIMIT 1",
    )
    .await;
    assert_eq!(
        q,
        vec![vec![
            Some("github,jira,pagerduty,salesforce".into()),
            Some("4".into()),
            Some("9".into()),
            Some("1".into()),
            Some("ok".into())
        ]]
    );
    let stats = text_rows(
        &client,
        "SELECT requests, errors, success_pct, uptime_pct, p50_ms IS NOT NULL, circuit_breaker \
         FROM joinery.connector_stats WHERE connection = 'github'",
    )
    .await;
    assert_eq!(
        stats,
        vec![vec![
            Some("3".into()),
            Some("0".into()),
            Some("100".into()),
            Some("100".into()),
            Some("t".into()),
            Some("closed".into())
        ]]
    );

    // A dead API: the failure shows in connector_stats, /healthz and /metrics.
    client
        .simple_query("SET joinery.cache = off")
        .await
        .expect("set");
    demo.fake("pagerduty").die_after(0);
    let err = client
        .simple_query("SELECT count(*) FROM pagerduty.services")
        .await
        .expect_err("dead API");
    assert!(format!("{err:?}").contains("pagerduty"), "{err:?}");
    let pd = text_rows(
        &client,
        "SELECT errors > 0, server_errors > 0, last_error LIKE '%503%', success_pct < 100 \
         FROM joinery.connector_stats WHERE connection = 'pagerduty'",
    )
    .await;
    assert_eq!(pd, vec![vec![Some("t".into()); 4]]);
    let (code, health) = http_get(observe.addr, "/healthz").await;
    assert_eq!(code, 200);
    let h: serde_json::Value = serde_json::from_str(&health).expect("json");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["connections"]["github"]["state"], "up");
    assert_eq!(h["connections"]["pagerduty"]["state"], "degraded", "{h}");
    let (_, metrics) = http_get(observe.addr, "/metrics").await;
    assert!(
        metrics.contains(
            r#"joinery_api_errors_total{connection="pagerduty",table="services",kind="server"}"#
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_scans_send_progress_notices() {
    let demo = DemoServer::start(42, 1, Duration::from_millis(250), "", "").await;
    let (client, mut conn) =
        tokio_postgres::connect(&demo.server.conn_str("tester"), tokio_postgres::NoTls)
            .await
            .expect("connect");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            if let Ok(tokio_postgres::AsyncMessage::Notice(n)) = m {
                let _ = tx.send(n.message().to_string());
            }
        }
    });
    client
        .simple_query("SET joinery.progress_notices_ms = 100")
        .await
        .expect("set");
    // Three Jira pages one after the other, 250 ms each: several progress ticks first.
    let rows = text_rows(&client, "SELECT count(*) FROM jira.issues").await;
    assert_eq!(rows.len(), 1);
    let mut notices = Vec::new();
    while let Ok(n) = rx.try_recv() {
        notices.push(n);
    }
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("joinery: ") && n.contains("page(s)") && n.contains("jira")),
        "{notices:?}"
    );
    // Off means off.
    client
        .simple_query("SET joinery.progress_notices_ms = 0; SET joinery.cache = off")
        .await
        .expect("set");
    let _ = text_rows(&client, "SELECT count(*) FROM jira.issues").await;
    assert!(rx.try_recv().is_err());
}
