//! The Jira connector against its fake: WHERE becomes JQL, values cannot change its meaning,
//! and the answer equals a local filter over the full scan.

use chrono::{TimeZone, Utc};
use joinery_providers::jira::fake;
use joinery_tests::{
    TestServer, assert_pushed_to_fake, assert_same_rows, assert_upstream_auth_error, text_rows,
};

const EMAIL: &str = "me@acme.com";
const TOKEN: &str = "jira_api_token_555";

async fn setup(token: &str) -> (joinery_engine::rest::fakekit::FakeServer, TestServer, usize) {
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let data = fake::generate(5, as_of, &["PAY", "WEB", "OPS"], 70, 1);
    let n = data.issues.len();
    let (server, _) = fake::start(
        data,
        Some((EMAIL, TOKEN)),
        10_000,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.jira]\nkind = \"jira\"\nbase_url = \"{}\"\nusername = \"{EMAIL}\"\npassword = \"{token}\"\n",
        server.base_url()
    );
    (server, TestServer::with_config(&config).await, n)
}

#[tokio::test]
async fn jira_where_becomes_jql() {
    let (fake, server, total) = setup(TOKEN).await;
    let client = server.client().await;

    // Unfiltered: a bounded default JQL (Jira rejects unbounded ones), every issue, fields=.
    fake.clear_requests();
    let n = text_rows(&client, "SELECT count(*) FROM jira.issues").await;
    assert_eq!(n, vec![vec![Some(total.to_string())]]);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), total.div_ceil(100), "{reqs:#?}");
    assert!(reqs[0].contains("jql=created"), "{reqs:#?}");

    // Each filter family, pushed, equals the local filter.
    for (pushed, local) in [
        ("project = 'PAY'", "(project || '') = 'PAY'"),
        (
            "project IN ('PAY', 'OPS') AND status = 'Done'",
            "(project || '') IN ('PAY', 'OPS') AND (status || '') = 'Done'",
        ),
        (
            "status_category = 'In Progress'",
            "(status_category || '') = 'In Progress'",
        ),
        (
            "priority IN ('Highest', 'High')",
            "(priority || '') IN ('Highest', 'High')",
        ),
        ("issue_type = 'Bug'", "(issue_type || '') = 'Bug'"),
        ("assignee IS NULL", "(assignee || '') IS NULL"),
        (
            "'backend' = ANY(labels)",
            "array_to_string(labels, ',') LIKE '%backend%'",
        ),
        (
            "'PAY Sprint 13' = ANY(sprints)",
            "array_to_string(sprints, ',') = 'PAY Sprint 13'",
        ),
        (
            "updated >= TIMESTAMP '2026-11-01 10:30:45'",
            "(updated + INTERVAL '0 seconds') >= TIMESTAMP '2026-11-01 10:30:45'",
        ),
        (
            "created < TIMESTAMP '2026-07-01 00:00:30' AND created >= TIMESTAMP '2026-06-01 00:00:00'",
            "(created + INTERVAL '0 seconds') < TIMESTAMP '2026-07-01 00:00:30' AND (created + INTERVAL '0 seconds') >= TIMESTAMP '2026-06-01 00:00:00'",
        ),
    ] {
        fake.clear_requests();
        let n = assert_same_rows(
            &client,
            "SELECT key, status FROM jira.issues",
            pushed,
            local,
        )
        .await
        .len();
        assert!(n > 0, "{pushed} matched nothing");
        let first = fake.requests().into_iter().next().unwrap_or_default();
        assert!(
            !first.contains("jql=created+%3E%3D+%221970"),
            "{pushed} was pushed: {first}"
        );
    }
    // Negations stay local: JQL's `!=` is case-insensitive, SQL's `<>` is not ('Done' <> 'done'
    // keeps the Done issues), so pushing it would lose rows a re-check cannot bring back.
    for (sql, local) in [
        ("status <> 'done'", "(status || '') <> 'done'"),
        (
            "project = 'PAY' AND status <> 'Done'",
            "(project || '') = 'PAY' AND (status || '') <> 'Done'",
        ),
        (
            "priority NOT IN ('low', 'Lowest')",
            "(priority || '') NOT IN ('low', 'Lowest')",
        ),
    ] {
        let n = assert_same_rows(&client, "SELECT key, status FROM jira.issues", sql, local)
            .await
            .len();
        assert!(n > 0, "{sql} matched nothing");
    }
    // The JQL that reached the wire, and fields= from the projection.
    fake.clear_requests();
    let _ = text_rows(
        &client,
        "SELECT key, summary FROM jira.issues WHERE project = 'PAY' AND priority = 'High'",
    )
    .await;
    let r = fake.requests().into_iter().next().unwrap_or_default();
    // Inexact clauses are re-checked, so their columns are fetched too.
    assert!(
        r.contains("fields=created%2Cproject%2Csummary%2Cpriority"),
        "{r}"
    );
    assert!(
        r.contains("project+%3D+%22PAY%22+AND+priority+%3D+%22High%22"),
        "{r}"
    );

    // Values that try to rewrite the JQL stay values: the answer is what a local filter gives.
    for evil in [
        "PAY\" OR project = \"WEB",
        "PAY' OR project = 'WEB",
        "PAY\\",
        "x) OR (project = WEB",
        "PAY & ORDER BY key #",
        "ПЭЙ ünïcødé",
    ] {
        let lit = evil.replace('\'', "''");
        let q = format!("SELECT count(*) FROM jira.issues WHERE project = '{lit}'");
        let rows = text_rows(&client, &q).await;
        assert_eq!(rows, vec![vec![Some("0".into())]], "{evil}");
    }
    let rows = text_rows(
        &client,
        "SELECT count(*) FROM jira.issues WHERE summary = 'line\nbreak' ",
    )
    .await;
    assert_eq!(rows, vec![vec![Some("0".into())]]);

    // Projects, boards, sprints.
    let rows = text_rows(&client, "SELECT key FROM jira.projects ORDER BY key").await;
    assert_eq!(rows.len(), 3);
    // Cache off: each pushed form must be seen on the wire, not answered from earlier pages.
    client
        .simple_query("SET joinery.cache = off")
        .await
        .expect("set");
    for (table, pushed, local, sent) in [
        (
            "projects",
            "key IN ('PAY', 'OPS', 'pay')",
            "(key || '') IN ('PAY', 'OPS', 'pay')",
            "keys=OPS&keys=PAY&keys=pay",
        ),
        (
            "boards",
            "project = 'WEB'",
            "(project || '') = 'WEB'",
            "projectKeyOrId=WEB",
        ),
        (
            "boards",
            "type = 'scrum'",
            "(type || '') = 'scrum'",
            "type=scrum",
        ),
    ] {
        let select = format!("SELECT id FROM jira.{table}");
        assert_pushed_to_fake(&client, &fake, &select, pushed, local, sent).await;
    }
    client
        .simple_query("RESET joinery.cache")
        .await
        .expect("reset");
    let rows = text_rows(
        &client,
        "SELECT count(*) FROM jira.sprints WHERE state = 'active'",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![Some("3".into())]],
        "one active sprint per board"
    );
    let rows = text_rows(
        &client,
        "SELECT s.name, sum(i.story_points) FROM jira.sprints s JOIN jira.issues i \
         ON array_has(i.sprints, s.name) WHERE s.state = 'closed' AND i.status_category = 'Done' \
         GROUP BY s.name ORDER BY 2 DESC LIMIT 1",
    )
    .await;
    assert_eq!(rows.len(), 1);
}

#[tokio::test]
async fn jira_bad_credentials() {
    let (_fake, server, _) = setup("not-the-token").await;
    let client = server.client().await;
    // The board list cannot be read at start; the tables still exist and a query names the
    // cause.
    assert_upstream_auth_error(
        &client,
        "SELECT * FROM jira.issues",
        "jira",
        "not-the-token",
    )
    .await;
}
