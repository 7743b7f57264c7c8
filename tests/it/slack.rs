//! The Slack connector against its fake: ok:false bodies are errors, short pages are not the
//! end, exclusive oldest/latest give the same rows as SQL's bounds.

use chrono::{TimeZone, Utc};
use joinery_providers::slack::fake;
use joinery_tests::{
    TestServer, assert_pushed_to_fake, assert_upstream_auth_error, sqlstate, text_rows,
};

const TOKEN: &str = "xoxb-fake-123";

async fn setup(token: &str) -> (joinery_engine::rest::fakekit::FakeServer, TestServer) {
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let data = fake::generate(
        4,
        as_of,
        &[
            ("general", "Company-wide"),
            ("inc-payments", "Incident: payments"),
            ("eng", "Engineering"),
        ],
        &["ada", "grace", "linus"],
        450,
    );
    let (server, _) = fake::start(
        data,
        Some(TOKEN.into()),
        1000,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.slack]\nkind = \"slack\"\nbase_url = \"{}/api\"\ntoken = \"{token}\"\n",
        server.base_url()
    );
    (server, TestServer::with_config(&config).await)
}

#[tokio::test]
async fn slack_messages_channels_users() {
    let (fake, server) = setup(TOKEN).await;
    let client = server.client().await;
    let rows = text_rows(&client, "SELECT id, name FROM slack.channels ORDER BY id").await;
    assert_eq!(rows.len(), 3, "private incident channel included");

    // 450 messages in pages of 200 where every second page is short: not the end.
    fake.clear_requests();
    let n = text_rows(
        &client,
        "SELECT count(*) FROM slack.messages WHERE channel_id = 'C00000002'",
    )
    .await;
    assert_eq!(n, vec![vec![Some("450".into())]]);
    assert_eq!(
        fake.request_count(),
        4,
        "200 + 100 (short) + 100 (short) + 50: {:#?}",
        fake.requests()
    );

    // Bounds: exclusive oldest/latest sent so that >=, >, <=, < all match SQL.
    let t = text_rows(&client, "SELECT sent_at::text, ts FROM slack.messages WHERE channel_id = 'C00000001' ORDER BY ts LIMIT 1 OFFSET 100").await;
    let ts = t[0][0].clone().unwrap_or_default();
    for op in [">=", ">", "<=", "<"] {
        let pushed = format!(
            "SELECT ts FROM slack.messages WHERE channel_id = 'C00000001' AND sent_at {op} TIMESTAMPTZ '{ts}' ORDER BY ts"
        );
        let local = format!(
            "SELECT ts FROM slack.messages WHERE channel_id = 'C00000001' AND (sent_at + INTERVAL '0 seconds') {op} TIMESTAMPTZ '{ts}' ORDER BY ts"
        );
        fake.clear_requests();
        let a = text_rows(&client, &pushed).await;
        let param = if op.starts_with('>') {
            "oldest="
        } else {
            "latest="
        };
        assert!(
            fake.requests().iter().all(|r| r.contains(param)),
            "{op}: {:#?}",
            fake.requests()
        );
        assert_eq!(a, text_rows(&client, &local).await, "{op}");
    }

    // An IN list fans out per channel; channel_id is filled from the request.
    let rows = text_rows(&client, "SELECT channel_id, count(*) FROM slack.messages WHERE channel_id IN ('C00000001', 'C00000003') GROUP BY 1 ORDER BY 1").await;
    assert_eq!(
        rows,
        vec![
            vec![Some("C00000001".into()), Some("450".into())],
            vec![Some("C00000003".into()), Some("450".into())],
        ]
    );

    // Without channel_id there is nothing to read: a clear error. An unknown channel is ok:false.
    let err = client
        .simple_query("SELECT * FROM slack.messages")
        .await
        .expect_err("required");
    assert_eq!(sqlstate(&err), "22023");
    let err = client
        .simple_query("SELECT * FROM slack.messages WHERE channel_id = 'C999'")
        .await
        .expect_err("ok:false");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(
        msg.contains("channel_not_found") && msg.contains("slack"),
        "{msg}"
    );
    // users.list takes no filter: every user, filtered locally.
    let rows = text_rows(&client, "SELECT count(*) FROM slack.users").await;
    assert_eq!(rows, vec![vec![Some("3".into())]]);

    // Channel kind and archive state as conversations.list's own parameters.
    for (pushed, local, sent) in [
        ("is_private", "is_private IS TRUE", "types=private_channel"),
        (
            "NOT is_private",
            "is_private IS FALSE",
            "types=public_channel",
        ),
        (
            "is_private = true AND is_archived = false",
            "is_private IS TRUE AND is_archived IS FALSE",
            "exclude_archived=true",
        ),
    ] {
        let select = "SELECT id FROM slack.channels";
        assert_pushed_to_fake(&client, &fake, select, pushed, local, sent).await;
    }
}

#[tokio::test]
async fn slack_invalid_auth_is_an_error_not_an_empty_table() {
    let (_fake, server) = setup("xoxb-wrong").await;
    let client = server.client().await;
    let msg = assert_upstream_auth_error(
        &client,
        "SELECT * FROM slack.channels",
        "slack",
        "xoxb-wrong",
    )
    .await;
    assert!(msg.contains("invalid_auth"), "{msg}");
}
