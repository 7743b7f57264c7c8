//! The REST toolkit end to end: a `kind = "rest"` connection declared in TOML, served by the
//! generic fake API in each pagination style, queried over the wire.

use joinery_engine::rest::fake::{FakeApi, Fault, Style};
use joinery_tests::{TestServer, sqlstate, text_rows};
use serde_json::{Value, json};

const STATUSES: [&str; 3] = ["open", "closed", "pending"];

fn records(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({
                "id": i + 1,
                "title": format!("Item {} {}", i + 1, if i % 4 == 0 { "Alpha" } else { "beta" }),
                "status": STATUSES[i % 3],
                "updated_at": format!("2024-03-{:02}T{:02}:00:00Z", 1 + i % 28, i % 24),
                "score": (i as f64) * 1.5,
                "owner": {"login": format!("user{}", i % 5)},
                "labels": if i % 2 == 0 { json!([{"name": "bug"}, {"name": "p0"}]) } else { json!([]) }
            })
        })
        .collect()
}

/// The TOML of a rest connection over `fake` with the given pagination.
fn config(
    fake: &FakeApi,
    pagination: &str,
    records_path: &str,
    page_param: &str,
    extra: &str,
) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"

[connections.api]
kind = "rest"
base_url = "{base}"
max_attempts = 3
{extra}

[[connections.api.tables]]
name = "items"
description = "Items of the fake API"
path = "/items"
records = "{records_path}"
pagination = {pagination}
page_size = {{ param = "{page_param}", max = 10 }}
columns = [
  {{ name = "id", type = "bigint", description = "Item id" }},
  {{ name = "title", type = "text" }},
  {{ name = "status", type = "text" }},
  {{ name = "updated_at", type = "timestamp" }},
  {{ name = "score", type = "double" }},
  {{ name = "owner", type = "text", path = "owner.login" }},
  {{ name = "raw", type = "json", path = "$" }},
  {{ name = "labels", type = "text_list", path = "labels.*.name", description = "Label names" }},
]
sort = [ {{ column = "updated_at", param = "sort", value = "updated_at", direction_param = "direction", exact = true }} ]
fields = {{ param = "fields", always = ["id"] }}
filters = [
  {{ column = "status", ops = ["eq", "in"], param = "status", exact = true }},
  {{ column = "updated_at", ops = ["gte", "gt"], param = "since", format = "iso8601" }},
]
"#,
        base = fake.base_url()
    )
}

async fn setup(style: Style, n: usize) -> (FakeApi, TestServer) {
    // Most tests count requests, so the cache is off unless a test turns it on.
    setup_with(style, n, "cache_ttl_s = 0").await
}

async fn setup_with(style: Style, n: usize, extra: &str) -> (FakeApi, TestServer) {
    let fake = FakeApi::start(style, records(n), 10, 10)
        .await
        .expect("fake starts");
    let (pagination, path, page_param) = match style {
        Style::Link => (r#"{ type = "link_header" }"#, "", "per_page"),
        Style::PageNumber => (r#"{ type = "page", param = "page" }"#, "", "per_page"),
        Style::Cursor => (
            r#"{ type = "cursor", param = "cursor", response = "response_metadata.next_cursor" }"#,
            "data",
            "limit",
        ),
        Style::Offset => (
            r#"{ type = "offset", offset_param = "offset", more = "more" }"#,
            "items",
            "limit",
        ),
        Style::NextUrl => (
            r#"{ type = "next_url", path = "nextRecordsUrl", done = "done" }"#,
            "records",
            "limit",
        ),
        Style::StartingAfter => (
            r#"{ type = "cursor", param = "starting_after", last_record = "id", has_more = "has_more" }"#,
            "data",
            "limit",
        ),
    };
    let server = TestServer::with_config(&config(&fake, pagination, path, page_param, extra)).await;
    (fake, server)
}

fn ids(rows: &[Vec<Option<String>>]) -> Vec<i64> {
    let mut v: Vec<i64> = rows
        .iter()
        .filter_map(|r| r[0].as_deref().and_then(|s| s.parse().ok()))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn every_pagination_style_reads_everything_once() {
    for style in [
        Style::Link,
        Style::PageNumber,
        Style::Cursor,
        Style::Offset,
        Style::NextUrl,
        Style::StartingAfter,
    ] {
        let (fake, s) = setup(style, 57).await;
        let c = s.client().await;
        let rows = text_rows(&c, "SELECT id FROM api.items").await;
        assert_eq!(ids(&rows), (1..=57).collect::<Vec<i64>>(), "{style:?}");
        let n = fake.request_count();
        // 6 pages of 10 (the cursor fake also serves short pages that are not the end; the
        // page-number style needs one empty page to learn the end).
        let expected = match style {
            Style::Cursor => 7..=9,
            Style::PageNumber => 7..=7,
            _ => 6..=6,
        };
        assert!(
            expected.contains(&n),
            "{style:?}: {n} requests: {:?}",
            fake.requests()
        );
    }
}

#[tokio::test]
async fn filters_reach_the_api_and_results_equal_a_local_filter() {
    let (fake, s) = setup(Style::Link, 57).await;
    let c = s.client().await;
    let all = text_rows(&c, "SELECT id, status, updated_at FROM api.items").await;
    fake.clear_requests();
    let rows = text_rows(&c, "SELECT id FROM api.items WHERE status = 'open'").await;
    let want: Vec<i64> = ids(&all
        .iter()
        .filter(|r| r[1].as_deref() == Some("open"))
        .cloned()
        .collect::<Vec<_>>());
    assert_eq!(ids(&rows), want);
    assert!(
        fake.requests().iter().all(|r| r.contains("status=open")),
        "{:?}",
        fake.requests()
    );
    assert_eq!(
        fake.request_count(),
        2,
        "19 open rows are 2 pages: {:?}",
        fake.requests()
    );

    // An IN list fans out, one request chain per value.
    fake.clear_requests();
    let rows = text_rows(
        &c,
        "SELECT id FROM api.items WHERE status IN ('open', 'pending')",
    )
    .await;
    let want: Vec<i64> = ids(&all
        .iter()
        .filter(|r| matches!(r[1].as_deref(), Some("open") | Some("pending")))
        .cloned()
        .collect::<Vec<_>>());
    assert_eq!(ids(&rows), want);
    assert!(fake.requests().iter().any(|r| r.contains("status=pending")));

    // Inexact: the API's `since` narrows, DataFusion re-checks `>` exactly.
    fake.clear_requests();
    let rows = text_rows(
        &c,
        "SELECT id FROM api.items WHERE updated_at > '2024-03-20T05:00:00Z'",
    )
    .await;
    let cutoff = "2024-03-20 05:00:00+00";
    let want: Vec<i64> = ids(&all
        .iter()
        .filter(|r| r[2].as_deref().is_some_and(|t| t > cutoff))
        .cloned()
        .collect::<Vec<_>>());
    assert_eq!(ids(&rows), want);
    assert!(
        fake.requests()[0].contains("since=2024-03-20T05%3A00%3A00Z"),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn pushed_results_equal_full_scan_for_random_filters() {
    let (_fake, s) = setup(Style::Offset, 83).await;
    let c = s.client().await;
    let all = text_rows(&c, "SELECT id, status, updated_at FROM api.items").await;
    // A small deterministic generator: the filters differ run to run of the loop, not of the test.
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for _ in 0..25 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let status = STATUSES[(x % 3) as usize];
        let day = 1 + (x >> 8) % 28;
        let hour = (x >> 16) % 24;
        let op = [">", ">=", "<", "="][((x >> 24) % 4) as usize];
        let ts = format!("2024-03-{day:02}T{hour:02}:00:00Z");
        let sql = format!(
            "SELECT id FROM api.items WHERE status = '{status}' AND updated_at {op} '{ts}'"
        );
        let got = ids(&text_rows(&c, &sql).await);
        let local_ts = format!("2024-03-{day:02} {hour:02}:00:00+00");
        let want = ids(&all
            .iter()
            .filter(|r| r[1].as_deref() == Some(status))
            .filter(|r| {
                let t = r[2].as_deref().unwrap_or_default();
                match op {
                    ">" => t > local_ts.as_str(),
                    ">=" => t >= local_ts.as_str(),
                    "<" => t < local_ts.as_str(),
                    _ => t == local_ts.as_str(),
                }
            })
            .cloned()
            .collect::<Vec<_>>());
        assert_eq!(got, want, "{sql}");
    }
}

#[tokio::test]
async fn limit_stops_paging_early() {
    let (fake, s) = setup(Style::Link, 57).await;
    let c = s.client().await;
    // No filter: the LIMIT is pushed and shrinks the page.
    let rows = text_rows(&c, "SELECT id FROM api.items LIMIT 3").await;
    assert_eq!(rows.len(), 3);
    assert_eq!(fake.request_count(), 1, "{:?}", fake.requests());
    assert!(
        fake.requests()[0].contains("per_page=3"),
        "{:?}",
        fake.requests()
    );
    // With a residual (inexact) filter the LIMIT is not pushed, but paging still stops early.
    fake.clear_requests();
    let rows = text_rows(
        &c,
        "SELECT id FROM api.items WHERE title LIKE '%Alpha%' LIMIT 2",
    )
    .await;
    assert_eq!(rows.len(), 2);
    assert!(
        fake.request_count() < 6,
        "stopped before the last page: {:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn retries_survive_429_and_5xx_without_wrong_results() {
    let (fake, s) = setup(Style::Cursor, 30).await;
    let c = s.client().await;
    fake.inject(Fault::Status {
        code: 429,
        retry_after: Some(0),
    });
    fake.inject(Fault::Status {
        code: 503,
        retry_after: None,
    });
    let rows = text_rows(&c, "SELECT id FROM api.items").await;
    assert_eq!(ids(&rows), (1..=30).collect::<Vec<i64>>());
    let calls = text_rows(
        &c,
        "SELECT count(*), max(attempt) FROM joinery.api_calls WHERE connection = 'api'",
    )
    .await;
    assert_eq!(
        calls[0][1].as_deref(),
        Some("3"),
        "third attempt succeeded: {calls:?}"
    );
    // GitHub's 403 with `x-ratelimit-remaining: 0` waits for the reset, then succeeds.
    fake.inject(Fault::GithubRateLimit { secs: 1 });
    let rows = text_rows(&c, "SELECT id FROM api.items WHERE status = 'open'").await;
    assert_eq!(rows.len(), 10);
    // A truncated page is retried, not returned as data.
    fake.clear_requests();
    fake.inject(Fault::Truncated);
    let rows = text_rows(&c, "SELECT id FROM api.items").await;
    assert_eq!(ids(&rows), (1..=30).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_failed_page_fails_the_query() {
    let (fake, s) = setup(Style::Link, 57).await;
    let c = s.client().await;
    // The fake dies after two pages: no partial result may come back.
    fake.die_after(2);
    let e = c
        .simple_query("SELECT id FROM api.items")
        .await
        .expect_err("must fail");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(&e), "HV00N", "{msg}");
    assert!(
        msg.contains("api.items") && msg.contains("HTTP 500"),
        "{msg}"
    );
    assert!(msg.contains("gave up after 3 attempt(s)"), "{msg}");
    // The session keeps working.
    assert_eq!(text_rows(&c, "SELECT 1").await[0][0].as_deref(), Some("1"));
}

#[tokio::test]
async fn explain_shows_the_requests() {
    let (fake, s) = setup(Style::Link, 10).await;
    let c = s.client().await;
    let plan = text_rows(
        &c,
        "EXPLAIN SELECT id FROM api.items WHERE status IN ('open', 'closed') AND updated_at >= '2024-03-05T00:00:00Z'",
    )
    .await;
    let text: String = plan
        .iter()
        .filter_map(|r| r.get(1).cloned().flatten())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(text.contains("RestScanExec: api.items"), "{text}");
    assert!(
        text.contains(
            "GET /items?fields=id,updated_at&per_page=10&since=2024-03-05T00:00:00Z&status=closed"
        ),
        "{text}"
    );
    assert!(text.contains("status=open"), "{text}");
    assert!(text.contains("calls>=2 (one per page)"), "{text}");
    let plan = text_rows(
        &c,
        "EXPLAIN SELECT id FROM api.items WHERE status = 'open' LIMIT 5",
    )
    .await;
    let text: String = plan
        .iter()
        .filter_map(|r| r.get(1).cloned().flatten())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        text.contains("per_page=5") && text.contains("calls<=1"),
        "{text}"
    );
    assert_eq!(fake.request_count(), 0, "EXPLAIN makes no calls");
}

#[tokio::test]
async fn json_and_nested_columns() {
    let (_fake, s) = setup(Style::Link, 5).await;
    let c = s.client().await;
    let rows = text_rows(
        &c,
        "SELECT labels FROM api.items WHERE id IN (1, 2) ORDER BY id",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![Some("{bug,p0}".into())], vec![Some("{}".into())]]
    );
    let r = c
        .query_one("SELECT labels FROM api.items WHERE id = 1", &[])
        .await
        .expect("binary list");
    assert_eq!(
        r.get::<_, Vec<String>>(0),
        vec!["bug".to_string(), "p0".to_string()]
    );
    let n = text_rows(
        &c,
        "SELECT count(*) FROM api.items WHERE array_has(labels, 'bug')",
    )
    .await;
    assert_eq!(n[0][0].as_deref(), Some("3"));
    let rows = text_rows(&c, "SELECT owner, raw::text FROM api.items WHERE id = 2").await;
    assert_eq!(rows[0][0].as_deref(), Some("user1"));
    let raw: Value =
        serde_json::from_str(rows[0][1].as_deref().unwrap_or("null")).unwrap_or(Value::Null);
    assert_eq!(raw["owner"]["login"], json!("user1"));
    let desc = text_rows(
        &c,
        "SELECT description FROM joinery.columns WHERE schema_name = 'api' AND column_name = 'id'",
    )
    .await;
    assert_eq!(desc[0][0].as_deref(), Some("Item id"));
}

#[tokio::test]
async fn cache_answers_repeats_and_coalesces_concurrent_scans() {
    let (fake, s) = setup_with(Style::Link, 57, "cache_ttl_s = 60").await;
    // Eight clients send the same cold query at once: one scan's worth of calls reaches the API.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let c = s.client().await;
        tasks.push(tokio::spawn(async move {
            text_rows(&c, "SELECT id FROM api.items").await
        }));
    }
    for t in tasks {
        let rows = t.await.expect("task");
        assert_eq!(ids(&rows), (1..=57).collect::<Vec<i64>>());
    }
    assert_eq!(fake.request_count(), 6, "{:?}", fake.requests());
    // A repeat within the TTL makes no call at all, and says so in joinery.api_calls; its
    // pages are not even decoded again (the batches decoded the first time are reused).
    let c = s.client().await;
    let calls = s.shared.factory.catalog().calls().clone();
    let reused = calls.decodes_reused();
    let rows = text_rows(&c, "SELECT id FROM api.items").await;
    assert_eq!(ids(&rows), (1..=57).collect::<Vec<i64>>());
    assert_eq!(fake.request_count(), 6);
    assert_eq!(
        calls.decodes_reused(),
        reused + 6,
        "six cached pages, none decoded again"
    );
    // Another shape of scan over the same pages decodes them for itself, with its own answer.
    let names = text_rows(&c, "SELECT title FROM api.items ORDER BY id").await;
    assert_eq!(names.len(), 57);
    assert_eq!(calls.decodes_reused(), reused + 6);
    let hits = text_rows(&c, "SELECT count(*) FROM joinery.api_calls WHERE cache_hit").await;
    assert!(
        hits[0][0]
            .as_deref()
            .and_then(|n| n.parse::<i64>().ok())
            .unwrap_or(0)
            >= 6,
        "{hits:?}"
    );
}

#[tokio::test]
async fn circuit_breaker_fails_fast_after_repeated_failures() {
    let (fake, s) = setup_with(
        Style::Link,
        20,
        "cache_ttl_s = 0\nbreaker_threshold = 1\nbreaker_cooldown_s = 300",
    )
    .await;
    let c = s.client().await;
    fake.die_after(0);
    let e = c
        .simple_query("SELECT id FROM api.items")
        .await
        .expect_err("API down");
    assert_eq!(sqlstate(&e), "HV00N");
    let before = fake.request_count();
    let e = c
        .simple_query("SELECT id FROM api.items")
        .await
        .expect_err("breaker open");
    let msg = e
        .as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("circuit breaker open"), "{msg}");
    assert_eq!(
        fake.request_count(),
        before,
        "no request while the breaker is open"
    );
}

#[tokio::test]
async fn graphql_relay_with_filters_in_the_body() {
    let fake = FakeApi::start(Style::Link, records(37), 10, 10)
        .await
        .expect("fake");
    let cfg = format!(
        r#"
[connections.gql]
kind = "rest"
base_url = "{base}"
cache_ttl_s = 0

[[connections.gql.tables]]
name = "items"
method = "POST"
path = "/graphql"
body = {{ query = "query($first: Int, $after: String, $status: [String]) {{ items(first: $first, after: $after, status: $status) {{ nodes {{ id status }} pageInfo {{ hasNextPage endCursor }} }} }}", variables = {{}} }}
records = "data.items.nodes"
pagination = {{ type = "relay", page_info = "data.items.pageInfo", cursor = "/variables/after" }}
page_size = {{ body = "/variables/first", max = 10 }}
columns = [ {{ name = "id", type = "bigint" }}, {{ name = "status", type = "text" }} ]
filters = [ {{ column = "status", ops = ["eq", "in"], body = "/variables/status", exact = true }} ]
"#,
        base = fake.base_url()
    );
    let s = TestServer::with_config(&cfg).await;
    let c = s.client().await;
    let rows = text_rows(&c, "SELECT id FROM gql.items").await;
    assert_eq!(ids(&rows), (1..=37).collect::<Vec<i64>>());
    assert_eq!(fake.request_count(), 4, "{:?}", fake.requests());
    assert!(
        fake.requests()[1].contains(r#""after":"c10""#),
        "{:?}",
        fake.requests()
    );
    fake.clear_requests();
    let rows = text_rows(
        &c,
        "SELECT id, status FROM gql.items WHERE status IN ('open', 'pending')",
    )
    .await;
    assert!(
        rows.iter()
            .all(|r| matches!(r[1].as_deref(), Some("open") | Some("pending")))
    );
    assert_eq!(rows.len(), 25);
    assert!(
        fake.requests()[0].contains(r#""status":["open","pending"]"#),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn oauth_refresh_on_start_and_after_401() {
    let fake = FakeApi::start(Style::Link, records(25), 10, 10)
        .await
        .expect("fake");
    fake.require_oauth();
    let cfg = format!(
        r#"
[connections.crm]
kind = "rest"
base_url = "{base}"
oauth_token_url = "/oauth/token"
client_id = "joinery"
client_secret = "s3cr3t-client"
refresh_token = "refresh-0"
cache_ttl_s = 0

[[connections.crm.tables]]
name = "items"
path = "/items"
pagination = {{ type = "link_header" }}
page_size = {{ param = "per_page", max = 10 }}
columns = [ {{ name = "id", type = "bigint" }} ]
"#,
        base = fake.base_url()
    );
    let s = TestServer::with_config(&cfg).await;
    let c = s.client().await;
    let rows = text_rows(&c, "SELECT id FROM crm.items").await;
    assert_eq!(ids(&rows), (1..=25).collect::<Vec<i64>>());
    assert_eq!(fake.token_grants(), (1, Some("refresh_token".to_string())));
    // The API revokes the token: the next request gets 401, Joinery refreshes (with the
    // rotated refresh token) and carries on without a wrong or partial result.
    fake.inject(Fault::ExpireToken);
    let rows = text_rows(&c, "SELECT id FROM crm.items").await;
    assert_eq!(ids(&rows), (1..=25).collect::<Vec<i64>>());
    assert_eq!(fake.token_grants().0, 2);
    // Secrets never reach joinery.api_calls.
    let urls = text_rows(
        &c,
        "SELECT url FROM joinery.api_calls WHERE connection = 'crm'",
    )
    .await;
    assert!(
        urls.iter()
            .all(|r| !r[0].as_deref().unwrap_or_default().contains("s3cr3t")),
        "{urls:?}"
    );
}

#[tokio::test]
async fn rotated_refresh_tokens_are_written_back_encrypted() {
    let fake = FakeApi::start(Style::Link, records(5), 10, 10)
        .await
        .expect("fake");
    fake.require_oauth();
    let secrets = joinery_tests::TempSecrets::new(&[("crm_refresh", "refresh-0")]);
    let (store_path, key_path) = (&secrets.store_path, &secrets.key_path);
    let cfg = format!(
        r#"
[secrets]
path = "{store}"
key_file = "{key}"

[connections.crm]
kind = "rest"
base_url = "{base}"
oauth_token_url = "/oauth/token"
client_id = "joinery"
client_secret = "s3cr3t-client"
refresh_token = "${{secret:crm_refresh}}"
cache_ttl_s = 0

[[connections.crm.tables]]
name = "items"
path = "/items"
pagination = {{ type = "link_header" }}
columns = [ {{ name = "id", type = "bigint" }} ]
"#,
        store = store_path.display(),
        key = key_path.display(),
        base = fake.base_url()
    );
    let s = TestServer::with_config(&cfg).await;
    let c = s.client().await;
    assert_eq!(
        text_rows(&c, "SELECT count(*) FROM crm.items").await[0][0].as_deref(),
        Some("5")
    );
    let stored = |n: &str| {
        assert_eq!(
            secrets
                .open()
                .get("crm_refresh")
                .expect("decrypts")
                .as_str(),
            n
        );
        let raw = std::fs::read_to_string(store_path).expect("file");
        assert!(!raw.contains(n), "encrypted at rest");
    };
    // The OAuth server rotated refresh-0 into refresh-1: the store now holds refresh-1.
    stored("refresh-1");
    fake.inject(Fault::ExpireToken);
    assert_eq!(
        text_rows(&c, "SELECT count(*) FROM crm.items").await[0][0].as_deref(),
        Some("5")
    );
    stored("refresh-2");
}

#[tokio::test]
async fn order_by_limit_is_answered_by_the_api() {
    let (fake, s) = setup(Style::Link, 57).await;
    let c = s.client().await;
    let all = text_rows(&c, "SELECT id, updated_at FROM api.items").await;
    let mut sorted: Vec<(String, i64)> = all
        .iter()
        .map(|r| {
            (
                r[1].clone().unwrap_or_default(),
                r[0].as_deref().and_then(|x| x.parse().ok()).unwrap_or(0),
            )
        })
        .collect();
    sorted.sort();
    sorted.reverse();
    fake.clear_requests();
    let sql = "SELECT id, updated_at FROM api.items ORDER BY updated_at DESC LIMIT 3";
    let top = text_rows(&c, sql).await;
    let got: Vec<String> = top
        .iter()
        .map(|r| r[1].clone().unwrap_or_default())
        .collect();
    let want: Vec<String> = sorted.iter().take(3).map(|(t, _)| t.clone()).collect();
    assert_eq!(got, want);
    assert_eq!(
        fake.request_count(),
        1,
        "one page answers a top-3: {:?}",
        fake.requests()
    );
    assert!(
        fake.requests()[0].contains("direction=desc")
            && fake.requests()[0].contains("sort=updated_at"),
        "{:?}",
        fake.requests()
    );
    let plan = text_rows(&c, &format!("EXPLAIN {sql}")).await;
    let text: String = plan
        .iter()
        .filter_map(|r| r.get(1).cloned().flatten())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        !text.contains("SortExec"),
        "the API's order is used: {text}"
    );
}

#[tokio::test]
async fn session_controls_the_cache() {
    let (fake, s) = setup_with(Style::Link, 15, "cache_ttl_s = 600").await;
    let c = s.client().await;
    text_rows(&c, "SELECT id FROM api.items").await;
    assert_eq!(fake.request_count(), 2);
    text_rows(&c, "SELECT id FROM api.items").await;
    assert_eq!(fake.request_count(), 2, "served from the cache");
    c.simple_query("SET joinery.cache = off")
        .await
        .expect("set");
    text_rows(&c, "SELECT id FROM api.items").await;
    assert_eq!(fake.request_count(), 4, "cache bypassed");
    c.simple_query("RESET joinery.cache").await.expect("reset");
    c.simple_query("SET joinery.max_staleness_s = 1")
        .await
        .expect("set");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    text_rows(&c, "SELECT id FROM api.items").await;
    assert_eq!(fake.request_count(), 6, "entries older than 1s refetched");
    let e = c
        .simple_query("SET joinery.nope = 1")
        .await
        .expect_err("unknown joinery option");
    assert_eq!(sqlstate(&e), "42704");
    // Another session is not affected by this one's settings.
    let other = s.client().await;
    text_rows(&other, "SELECT id FROM api.items").await;
    assert_eq!(fake.request_count(), 6);
}

#[tokio::test]
async fn projection_asks_only_for_needed_fields() {
    let (fake, s) = setup(Style::Link, 5).await;
    let c = s.client().await;
    text_rows(&c, "SELECT title, owner FROM api.items").await;
    assert!(
        fake.requests()[0].contains("fields=id%2Ctitle%2Cowner"),
        "{:?}",
        fake.requests()
    );
    fake.clear_requests();
    // A column holding the whole record needs every field.
    text_rows(&c, "SELECT raw FROM api.items").await;
    assert!(
        !fake.requests()[0].contains("fields="),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn a_table_ttl_of_zero_is_never_cached() {
    let fake = FakeApi::start(Style::Link, records(5), 10, 10)
        .await
        .expect("fake");
    let cfg = format!(
        r#"
[connections.live]
kind = "rest"
base_url = "{base}"
cache_ttl_s = 600

[[connections.live.tables]]
name = "items"
path = "/items"
cache_ttl_s = 0
columns = [ {{ name = "id", type = "bigint" }} ]

[[connections.live.tables]]
name = "cached_items"
path = "/items"
columns = [ {{ name = "id", type = "bigint" }} ]
"#,
        base = fake.base_url()
    );
    let s = TestServer::with_config(&cfg).await;
    let c = s.client().await;
    for _ in 0..2 {
        text_rows(&c, "SELECT id FROM live.items").await;
        text_rows(&c, "SELECT id FROM live.cached_items").await;
    }
    // Two live reads, one cached read.
    assert_eq!(fake.request_count(), 3, "{:?}", fake.requests());
}

#[tokio::test]
async fn the_limiter_keeps_under_the_configured_rate() {
    // 16 pages of one row at 4 requests/second (a burst of 4, then one every 250 ms).
    let fake = FakeApi::start(Style::Link, records(16), 1, 1)
        .await
        .expect("fake");
    let cfg = format!(
        r#"
[connections.slow]
kind = "rest"
base_url = "{base}"
cache_ttl_s = 0
rate_limit = 4

[[connections.slow.tables]]
name = "items"
path = "/items"
pagination = {{ type = "link_header" }}
page_size = {{ param = "per_page", max = 1 }}
columns = [ {{ name = "id", type = "bigint" }} ]
"#,
        base = fake.base_url()
    );
    let s = TestServer::with_config(&cfg).await;
    let c = s.client().await;
    let rows = text_rows(&c, "SELECT id FROM slow.items").await;
    assert_eq!(rows.len(), 16);
    // An upper bound on the rate: a slow machine only makes it easier to meet.
    let times = fake.request_times();
    for (i, t) in times.iter().enumerate() {
        let in_window = times[i..]
            .iter()
            .take_while(|u| u.duration_since(*t).as_millis() < 1000)
            .count();
        assert!(in_window <= 8, "{in_window} requests within one second");
    }
}

#[tokio::test]
async fn client_credentials_and_redacted_api_keys() {
    let fake = FakeApi::start(Style::Link, records(4), 10, 10)
        .await
        .expect("fake");
    fake.require_oauth();
    let cfg = format!(
        r#"
[connections.svc]
kind = "rest"
base_url = "{base}"
oauth_token_url = "/oauth/token"
client_id = "joinery"
client_secret = "cc-s3cret"
cache_ttl_s = 0

[[connections.svc.tables]]
name = "items"
path = "/items"
columns = [ {{ name = "id", type = "bigint" }} ]
"#,
        base = fake.base_url()
    );
    let s = TestServer::with_config(&cfg).await;
    let c = s.client().await;
    assert_eq!(text_rows(&c, "SELECT id FROM svc.items").await.len(), 4);
    assert_eq!(
        fake.token_grants(),
        (1, Some("client_credentials".to_string()))
    );

    // An API key sent as a query parameter reaches the API but never EXPLAIN or api_calls.
    let plain = FakeApi::start(Style::Link, records(3), 10, 10)
        .await
        .expect("fake");
    let cfg = format!(
        r#"
[connections.keyed]
kind = "rest"
base_url = "{base}"
api_key = "k3y-s3cret"
api_key_param = "api_key"
cache_ttl_s = 0

[[connections.keyed.tables]]
name = "items"
path = "/items"
columns = [ {{ name = "id", type = "bigint" }} ]
"#,
        base = plain.base_url()
    );
    let s = TestServer::with_config(&cfg).await;
    let c = s.client().await;
    assert_eq!(text_rows(&c, "SELECT id FROM keyed.items").await.len(), 3);
    assert!(
        plain.requests()[0].contains("api_key=k3y-s3cret"),
        "{:?}",
        plain.requests()
    );
    let plan = text_rows(&c, "EXPLAIN SELECT id FROM keyed.items").await;
    let calls = text_rows(&c, "SELECT url FROM joinery.api_calls").await;
    let shown = format!("{plan:?} {calls:?}");
    assert!(!shown.contains("k3y-s3cret"), "{shown}");
    assert!(shown.contains("api_key=***"), "{shown}");
}

#[tokio::test]
async fn users_own_oauth_refresh_tokens_get_their_own_access_tokens() {
    use joinery_server::auth::make_verifier;
    let fake = FakeApi::start(Style::Link, records(5), 10, 10)
        .await
        .expect("fake");
    fake.require_oauth();
    let secrets = joinery_tests::TempSecrets::new(&[
        ("bob_crm", "refresh-bob"),
        ("carol_crm", "revoked-carol"),
    ]);
    let (store_path, key_path) = (&secrets.store_path, &secrets.key_path);
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[secrets]
path = "{store}"
key_file = "{key}"

[connections.crm]
kind = "rest"
base_url = "{base}"
oauth_token_url = "/oauth/token"
client_id = "joinery"
client_secret = "s3cr3t-client"

[[connections.crm.tables]]
name = "items"
path = "/items"
pagination = {{ type = "link_header" }}
columns = [ {{ name = "id", type = "bigint" }} ]

[users.alice]
password = "{pw}"
admin = true

[users.bob]
password = "{pw}"
credentials = {{ crm = "${{secret:bob_crm}}" }}

[users.carol]
password = "{pw}"
credentials = {{ crm = "${{secret:carol_crm}}" }}
"#,
        store = store_path.display(),
        key = key_path.display(),
        base = fake.base_url(),
        pw = make_verifier("pw"),
    );
    let s = TestServer::with_config(&cfg).await;
    let login = |user: &'static str| async { s.login(user, "pw").await.expect("login") };
    let (alice, bob, carol) = (
        login("alice").await,
        login("bob").await,
        login("carol").await,
    );
    let count = "SELECT count(*) FROM crm.items";
    // Alice uses the connection's client credentials.
    assert_eq!(text_rows(&alice, count).await[0][0].as_deref(), Some("5"));
    assert_eq!(fake.token_grants().1.as_deref(), Some("client_credentials"));
    assert!(fake.refresh_tokens_seen().is_empty());
    // Bob's own refresh token buys his own access token (alice's cached pages are not his).
    fake.clear_requests();
    assert_eq!(text_rows(&bob, count).await[0][0].as_deref(), Some("5"));
    assert_eq!(fake.refresh_tokens_seen(), vec!["refresh-bob".to_string()]);
    assert!(fake.request_count() > 0, "bob's read reached the API");
    // The OAuth server rotated it: the store holds the new one, encrypted; alice's is untouched.
    let st = secrets.open();
    let rotated = st.get("bob_crm").expect("bob's secret").to_string();
    assert!(
        rotated.starts_with("refresh-") && rotated != "refresh-bob",
        "{rotated}"
    );
    assert!(
        !std::fs::read_to_string(store_path)
            .expect("file")
            .contains(&rotated)
    );
    // A second read reuses bob's access token: no new grant.
    let grants = fake.token_grants().0;
    assert_eq!(text_rows(&bob, count).await[0][0].as_deref(), Some("5"));
    assert_eq!(fake.token_grants().0, grants);
    // Carol's refresh token is refused by the token endpoint: her query fails, naming the
    // connection and never the token; the others keep working.
    let err = carol.simple_query(count).await.expect_err("refused");
    let msg = format!("{err:?}");
    assert!(msg.contains("crm"), "{msg}");
    assert!(!msg.contains("revoked-carol"), "{msg}");
    assert_eq!(text_rows(&alice, count).await[0][0].as_deref(), Some("5"));
    assert_eq!(text_rows(&bob, count).await[0][0].as_deref(), Some("5"));
}
