//! Each API's own rate-limit signal, from its fake: GitHub's 403 with no requests remaining
//! (reset an hour away: a clear error at once, not a stalled query) and Stripe's 429 without
//! `Retry-After` (backoff until the next second: a complete answer). PagerDuty's
//! `ratelimit-remaining: 0` makes Joinery wait for the window's reset before sending (paced, no
//! 429), which takes the window's minute, so it is exercised by the fault matrix, not here.

use chrono::{TimeZone, Utc};
use joinery_tests::{TestServer, sqlstate, text_rows};

fn as_of() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date")
}

#[tokio::test]
async fn github_budget_spent_is_a_clear_error() {
    use joinery_providers::github::fake;
    let data = fake::generate(1, as_of(), &["acme/api"], &[], 1);
    let (gh, _) = fake::start(data, None, 3, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake");
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.github]\nkind = \"github\"\nbase_url = \"{}\"\nrepositories = [\"acme/api\"]\nconcurrency = 1\ncache_ttl_s = 0\n",
        gh.base_url()
    ))
    .await;
    let client = server.client().await;
    for _ in 0..3 {
        let rows = text_rows(&client, "SELECT count(*) FROM github.pull_requests").await;
        assert_eq!(rows.len(), 1);
    }
    let err = client
        .simple_query("SELECT count(*) FROM github.pull_requests")
        .await
        .expect_err("budget spent");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(&err), "53400", "{msg}");
    assert!(msg.contains("github") && msg.contains("403"), "{msg}");
    assert_eq!(
        gh.request_count(),
        4,
        "no retry when the reset is an hour away"
    );
    assert_eq!(
        text_rows(&client, "SELECT 1").await.len(),
        1,
        "the session goes on"
    );
}

#[tokio::test]
async fn stripe_429_without_retry_after_backs_off_to_a_complete_answer() {
    use joinery_providers::stripe::fake::{self, CustomerDef};
    let customers: Vec<CustomerDef> = (0..250)
        .map(|i| CustomerDef {
            salesforce_account_id: format!("001{i}"),
            name: format!("C{i}"),
            email: format!("c{i}@x.example"),
            monthly_cents: 0,
        })
        .collect();
    let data = fake::generate(1, as_of(), &customers);
    let (st, _) = fake::start(data, None, 2, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake");
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.stripe]\nkind = \"stripe\"\nbase_url = \"{}\"\nconcurrency = 1\nmax_attempts = 8\n",
        st.base_url()
    ))
    .await;
    let client = server.client().await;
    let rows = text_rows(
        &client,
        "SELECT count(*), count(DISTINCT id) FROM stripe.customers",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![Some("250".into()), Some("250".into())]],
        "complete, no duplicates"
    );
    assert!(
        st.request_count() > 3,
        "some pages were refused and retried: {:#?}",
        st.requests()
    );
}
