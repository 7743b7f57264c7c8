//! The GitHub connector against its fake: pushed filters reach the wire and give the same rows
//! as a local filter over the full scan; defaults that hide rows are undone; calls are counted.

use chrono::{TimeZone, Utc};
use joinery_providers::github::fake;
use joinery_tests::{
    TestServer, assert_hostile_values_safe, assert_same_rows, assert_upstream_auth_error, sqlstate,
    text_rows,
};

const TOKEN: &str = "ghp_fake_token_123";

async fn setup() -> (joinery_engine::rest::fakekit::FakeServer, TestServer) {
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let keys: Vec<String> = (1..=20).map(|i| format!("PAY-{i}")).collect();
    let data = fake::generate(7, as_of, &["acme/api", "acme/web"], &keys, 2);
    let addr = "127.0.0.1:0".parse().expect("addr");
    let (server, _) = fake::start(data, Some(TOKEN.into()), 5000, addr)
        .await
        .expect("fake starts");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.github]\nkind = \"github\"\nbase_url = \"{}\"\ntoken = \"{TOKEN}\"\nrepositories = [\"acme/api\", \"acme/web\"]\n",
        server.base_url()
    );
    (server, TestServer::with_config(&config).await)
}

#[tokio::test]
async fn github_pushdown_matches_local_filtering() {
    let (fake, server) = setup().await;
    let client = server.client().await;

    // state: pushed as state=open; unconstrained scans send state=all.
    fake.clear_requests();
    assert_same_rows(
        &client,
        "SELECT repository, number, title FROM github.issues",
        "state = 'open'",
        "(state || '') = 'open'",
    )
    .await;
    let reqs = fake.requests();
    assert!(
        reqs.iter()
            .any(|r| r.contains("/repos/acme/api/issues") && r.contains("state=open")),
        "{reqs:#?}"
    );
    assert!(
        reqs.iter()
            .any(|r| r.contains("/repos/acme/web/issues") && r.contains("state=all")),
        "{reqs:#?}"
    );

    // Issues never include pull requests; PRs are their own table, closed ones included.
    let n = text_rows(&client, "SELECT count(*) FROM github.issues").await;
    let p = text_rows(&client, "SELECT count(*) FROM github.pull_requests").await;
    assert_eq!(
        n,
        vec![vec![Some("120".into())]],
        "60 items per repo x 2 repos x scale 2, half PRs"
    );
    assert_eq!(p, vec![vec![Some("120".into())]]);

    // since (updated_at >=), labels (AND, case-insensitive in GitHub), assignee, creator.
    fake.clear_requests();
    assert_same_rows(
        &client,
        "SELECT repository, number FROM github.issues",
        "updated_at >= TIMESTAMP '2026-10-01 00:00:00'",
        "(updated_at + INTERVAL '0 seconds') >= TIMESTAMP '2026-10-01 00:00:00'",
    )
    .await;
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("since=2026-10-01T00%3A00%3A00Z")
                || r.contains("since=2026-10-01T00:00:00Z")),
        "{:#?}",
        fake.requests()
    );
    fake.clear_requests();
    assert_same_rows(
        &client,
        "SELECT repository, number FROM github.issues",
        "'bug' = ANY(labels)",
        "array_to_string(labels, ',') LIKE '%bug%'",
    )
    .await;
    assert!(
        fake.requests().iter().any(|r| r.contains("labels=bug")),
        "{:#?}",
        fake.requests()
    );
    assert_same_rows(
        &client,
        "SELECT repository, number FROM github.issues",
        "assignee = 'ada-l'",
        "(assignee || '') = 'ada-l'",
    )
    .await;

    // repository narrows the fan-out to one request chain.
    fake.clear_requests();
    let rows = text_rows(
        &client,
        "SELECT count(*) FROM github.pull_requests WHERE repository = 'acme/web' AND state = 'closed'",
    )
    .await;
    assert!(rows[0][0].as_deref().unwrap_or("0") != "0");
    let reqs = fake.requests();
    assert!(
        reqs.iter().all(|r| r.contains("/repos/acme/web/pulls")),
        "{reqs:#?}"
    );
    assert_eq!(reqs.len(), 1, "60 PRs fit one page of 100: {reqs:#?}");

    // Commits by time range, runs by conclusion, deployments by environment.
    assert_same_rows(
        &client,
        "SELECT repository, sha FROM github.commits",
        "committed_at >= TIMESTAMP '2026-11-10 00:00:00' AND committed_at < TIMESTAMP '2026-11-15 00:00:00'",
        "(committed_at + INTERVAL '0 seconds') >= TIMESTAMP '2026-11-10 00:00:00' AND (committed_at + INTERVAL '0 seconds') < TIMESTAMP '2026-11-15 00:00:00'",
    )
    .await;
    assert_same_rows(
        &client,
        "SELECT repository, id FROM github.workflow_runs",
        "conclusion = 'failure'",
        "(conclusion || '') = 'failure'",
    )
    .await;
    fake.clear_requests();
    assert_same_rows(
        &client,
        "SELECT repository, id FROM github.deployments",
        "environment = 'production'",
        "(environment || '') = 'production'",
    )
    .await;
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("environment=production"))
    );

    // Hostile values in labels (comma-joined, re-checked) and environment (exact) parameters.
    assert_hostile_values_safe(
        &client,
        "SELECT id FROM github.issues",
        "{v} = ANY(labels)",
        "array_position(labels, {v}) IS NOT NULL",
        "bug",
    )
    .await;
    assert_hostile_values_safe(
        &client,
        "SELECT id FROM github.deployments",
        "environment = {v}",
        "(environment || '') = {v}",
        "production",
    )
    .await;

    // The repositories table, and a repository value that tries to walk the path.
    let rows = text_rows(
        &client,
        "SELECT full_name, default_branch FROM github.repositories ORDER BY 1",
    )
    .await;
    assert_eq!(rows.len(), 2);
    // full_name narrows the fan-out to the one repository's request.
    client
        .simple_query("SET joinery.cache = off")
        .await
        .expect("set");
    fake.clear_requests();
    let a = text_rows(
        &client,
        "SELECT full_name, default_branch FROM github.repositories WHERE full_name = 'acme/web'",
    )
    .await;
    assert_eq!(
        fake.requests(),
        vec!["GET /repos/acme/web".to_string()],
        "one request, for that repository"
    );
    let b = text_rows(
        &client,
        "SELECT full_name, default_branch FROM github.repositories WHERE (full_name || '') = 'acme/web'",
    )
    .await;
    assert_eq!(a, b);
    assert_eq!(a.len(), 1);
    client
        .simple_query("RESET joinery.cache")
        .await
        .expect("reset");
    let err = client
        .simple_query("SELECT * FROM github.issues WHERE repository = 'acme/../admin'")
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&err), "22023");
}

#[tokio::test]
async fn github_calls_are_the_minimum_and_explain_shows_them() {
    let (fake, server) = setup().await;
    let client = server.client().await;
    // 120 issue-list items per repo (issues and PRs share the list): 2 pages of 100 per repo.
    fake.clear_requests();
    let _ = text_rows(&client, "SELECT count(*) FROM github.issues").await;
    assert_eq!(fake.request_count(), 4, "{:#?}", fake.requests());
    // A LIMIT that one page satisfies makes one call.
    fake.clear_requests();
    let rows = text_rows(
        &client,
        "SELECT number FROM github.pull_requests WHERE repository = 'acme/api' LIMIT 5",
    )
    .await;
    assert_eq!(rows.len(), 5);
    assert_eq!(fake.request_count(), 1, "{:#?}", fake.requests());
    let plan = text_rows(
        &client,
        "EXPLAIN SELECT number FROM github.issues WHERE repository = 'acme/api' AND state = 'open'",
    )
    .await;
    let text = format!("{plan:?}");
    assert!(text.contains("GET /repos/acme/api/issues"), "{text}");
    assert!(!text.contains(TOKEN), "the token never appears in EXPLAIN");
}

#[tokio::test]
async fn github_bad_token_is_a_clear_error() {
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let data = fake::generate(7, as_of, &["acme/api"], &[], 1);
    let (fake, _) = fake::start(
        data,
        Some("right".into()),
        5000,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.github]\nkind = \"github\"\nbase_url = \"{}\"\ntoken = \"wrong-token-xyz\"\nrepositories = [\"acme/api\"]\n",
        fake.base_url()
    );
    let server = TestServer::with_config(&config).await;
    let client = server.client().await;
    assert_upstream_auth_error(
        &client,
        "SELECT * FROM github.issues",
        "github",
        "wrong-token-xyz",
    )
    .await;
}

#[tokio::test]
async fn github_pull_requests_join_a_postgres_warehouse() {
    // Issue 4's "done": a SaaS table joined to a real PostgreSQL table over the wire, the
    // repositories of the filtered pull requests reaching PostgreSQL as an IN list.
    let url = joinery_tests::pg_url();
    let Ok((pg, conn)) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await else {
        joinery_tests::skip("github x postgres", "no PostgreSQL");
        return;
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let schema = format!("jit_gh_{}", std::process::id());
    pg.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};
         CREATE TABLE {schema}.deploy_targets (repository text PRIMARY KEY, environment text, owner_team text);
         INSERT INTO {schema}.deploy_targets SELECT 'acme/svc' || g, 'production', 'team' || (g % 7) FROM generate_series(1, 5000) g;
         INSERT INTO {schema}.deploy_targets VALUES ('acme/api', 'production', 'payments'), ('acme/web', 'staging', 'growth');"
    ))
    .await
    .expect("setup");
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let data = fake::generate(7, as_of, &["acme/api", "acme/web"], &[], 1);
    let (gh, _) = fake::start(data, None, 5000, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.github]\nkind = \"github\"\nbase_url = \"{}\"\nrepositories = [\"acme/api\", \"acme/web\"]\n\n[connections.warehouse_pg]\nkind = \"postgres\"\nurl = \"{url}\"\nschemas = [\"{schema}\"]\n",
        gh.base_url()
    );
    let server = TestServer::with_config(&config).await;
    let client = server.client().await;
    let rows = text_rows(
        &client,
        "SELECT t.owner_team, count(*) AS open_prs FROM github.pull_requests p \
         JOIN warehouse_pg.deploy_targets t ON t.repository = p.repository \
         WHERE p.state = 'open' GROUP BY t.owner_team ORDER BY 1",
    )
    .await;
    let expected = text_rows(
        &client,
        "SELECT CASE repository WHEN 'acme/api' THEN 'payments' ELSE 'growth' END, count(*) \
         FROM github.pull_requests WHERE state = 'open' GROUP BY 1 ORDER BY 1",
    )
    .await;
    assert_eq!(rows, expected);
    let sent = text_rows(
        &client,
        "SELECT url, rows FROM joinery.api_calls WHERE connection = 'warehouse_pg' AND method = 'SQL'",
    )
    .await;
    assert!(
        sent.iter().any(|r| r[0]
            .as_deref()
            .is_some_and(|s| s.contains("IN (") && s.contains("acme/api"))),
        "{sent:?}"
    );
    assert!(
        sent.iter()
            .all(|r| r[1].as_deref().unwrap_or("0").parse::<i64>().unwrap_or(0) <= 2),
        "only the 2 matching rows of 5002 came back: {sent:?}"
    );
    server.shutdown().await;
    let _ = pg
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
}

#[tokio::test]
async fn github_owner_lists_its_repositories() {
    // `owner = "acme"` without a list: the repositories come from /orgs/acme/repos (paged);
    // an owner that is no organization falls back to /users/{owner}/repos.
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let data = fake::generate(7, as_of, &["acme/api", "acme/web", "other/x"], &[], 1);
    let (gh, _) = fake::start(data, None, 5000, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake");
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.github]\nkind = \"github\"\nbase_url = \"{}\"\nowner = \"acme\"\n",
        gh.base_url()
    ))
    .await;
    let client = server.client().await;
    let rows = text_rows(
        &client,
        "SELECT DISTINCT repository FROM github.pull_requests ORDER BY 1",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![Some("acme/api".into())], vec![Some("acme/web".into())]]
    );
    assert!(
        gh.requests()[0].starts_with("GET /orgs/acme/repos?per_page=100"),
        "{:#?}",
        gh.requests()
    );
}
