//! Each API's own rate-limit signal, from its fake: GitHub's 403 with no requests remaining
//! (reset an hour away: a clear error at once, not a stalled query) and Stripe's 429 without
//! `Retry-After` (backoff until the next second: a complete answer), PagerDuty's
//! `ratelimit-remaining: 0` (Joinery waits for `ratelimit-reset` before sending: paced, no 429)
//! and Slack's 429 with `Retry-After` (waited out, the page asked again). The fakes' windows are
//! shortened to a second so the tests are quick.

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

#[tokio::test]
async fn pagerduty_paces_on_its_ratelimit_headers_without_a_429() {
    use joinery_providers::pagerduty::fake::{self, ServiceDef};
    let services = vec![ServiceDef {
        id: "PSVC001".into(),
        name: "Payments".into(),
    }];
    let data = fake::generate(3, as_of(), &services, 350, 1);
    let total = data.incidents.len();
    assert!(total > 300, "enough for four pages: {total}");
    let (pd, state) = fake::start(data, None, 2, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake");
    if let Ok(mut s) = state.lock() {
        s.set_rate_window(std::time::Duration::from_secs(1));
    }
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.pagerduty]\nkind = \"pagerduty\"\nbase_url = \"{}\"\ntoken = \"k\"\nconcurrency = 1\n",
        pd.base_url()
    ))
    .await;
    let client = server.client().await;
    let rows = text_rows(
        &client,
        "SELECT count(*), count(DISTINCT id) FROM pagerduty.incidents",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![Some(total.to_string()), Some(total.to_string())]]
    );
    assert_eq!(
        pd.request_count(),
        total.div_ceil(100),
        "one request per page"
    );
    assert_eq!(
        state.lock().map(|s| s.rate_limited()).unwrap_or(99),
        0,
        "ratelimit-remaining: 0 was waited out, never answered 429"
    );
}

#[tokio::test]
async fn slack_429_with_retry_after_is_retried_to_a_complete_answer() {
    use joinery_providers::slack::fake;
    let data = fake::generate(2, as_of(), &[("general", "Company-wide")], &["ada"], 450);
    let (sl, state) = fake::start(data, None, 2, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake");
    if let Ok(mut s) = state.lock() {
        s.set_rate_window(std::time::Duration::from_secs(1));
    }
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.slack]\nkind = \"slack\"\nbase_url = \"{}/api\"\ntoken = \"xoxb-1\"\nconcurrency = 1\nmax_attempts = 8\n",
        sl.base_url()
    ))
    .await;
    let client = server.client().await;
    let rows = text_rows(
        &client,
        "SELECT count(*), count(DISTINCT ts) FROM slack.messages WHERE channel_id = 'C00000001'",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![Some("450".into()), Some("450".into())]],
        "complete, no duplicates"
    );
    let refused = state.lock().map(|s| s.rate_limited()).unwrap_or(0);
    assert!(refused > 0, "the budget of 2 per second was hit");
    assert_eq!(
        sl.request_count() as u64,
        4 + refused,
        "each refused page was asked again, nothing more"
    );
}

#[tokio::test]
async fn hubspot_429_without_retry_after_backs_off_to_a_complete_answer() {
    use joinery_providers::hubspot::fake::{self, HubspotData};
    let companies = (1..=250u64)
        .map(|i| fake::record(i, &[("name", Some(format!("C{i}")))], as_of()))
        .collect();
    let mut data = HubspotData::default();
    data.objects.insert("companies".into(), companies);
    let (hs, state) = fake::start(data, None, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake");
    if let Ok(mut s) = state.lock() {
        s.set_rate_limit(1, std::time::Duration::from_secs(1));
    }
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.hubspot]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken = \"t\"\nconcurrency = 1\nmax_attempts = 8\n",
        hs.base_url()
    ))
    .await;
    let client = server.client().await;
    let rows = text_rows(
        &client,
        "SELECT count(*), count(DISTINCT id) FROM hubspot.companies",
    )
    .await;
    assert_eq!(rows, vec![vec![Some("250".into()), Some("250".into())]]);
    let refused = state.lock().map(|s| s.rate_limited()).unwrap_or(0);
    assert!(refused > 0, "the budget of 1 per second was hit");
    assert_eq!(hs.request_count() as u64, 3 + refused);
}

#[tokio::test]
async fn salesforce_daily_allocation_spent_is_a_clear_error() {
    use joinery_providers::salesforce::fake::{self, AccountDef, Credentials};
    let accounts: Vec<AccountDef> = (0..30)
        .map(|i| AccountDef {
            id: format!("001A0000{i:010}"),
            name: format!("Company {i}"),
            arr: 1000.0,
            country: "DE".into(),
        })
        .collect();
    let data = fake::generate(1, as_of(), &accounts);
    let (sf, state) = fake::start(
        data,
        Credentials {
            client_id: "cid".into(),
            client_secret: "cs".into(),
            refresh_token: "rt".into(),
        },
        7,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.salesforce]\nkind = \"salesforce\"\nbase_url = \"{b}\"\noauth_token_url = \"{b}/services/oauth2/token\"\nclient_id = \"cid\"\nclient_secret = \"cs\"\nrefresh_token = \"rt\"\ncache_ttl_s = 0\n",
        b = sf.base_url()
    ))
    .await;
    let client = server.client().await;
    // Describe calls made while the catalog loaded count too; leave room for one more page.
    if let Ok(mut s) = state.lock() {
        let used = s.calls();
        s.set_daily_limit(used + 2);
    }
    sf.clear_requests();
    let err = client
        .simple_query("SELECT count(*) FROM salesforce.accounts")
        .await
        .expect_err("allocation spent");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(&err), "53400", "{msg}");
    assert!(
        msg.contains("salesforce") && msg.contains("REQUEST_LIMIT_EXCEEDED"),
        "{msg}"
    );
    let asked = sf
        .requests()
        .into_iter()
        .filter(|r| r.contains("/query"))
        .count();
    assert_eq!(asked, 3, "two pages, then the refused one, not retried");
    assert_eq!(text_rows(&client, "SELECT 1").await.len(), 1);
}

#[tokio::test]
async fn jira_429_with_retry_after_is_retried_to_a_complete_answer() {
    use joinery_providers::jira::fake;
    let data = fake::generate(5, as_of(), &["PAY", "WEB", "OPS"], 70, 1);
    let n = data.issues.len();
    let (jira, state) = fake::start(data, None, 2, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake");
    if let Ok(mut s) = state.lock() {
        s.set_rate_window(std::time::Duration::from_secs(1));
    }
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.jira]\nkind = \"jira\"\nbase_url = \"{}\"\nconcurrency = 1\n",
        jira.base_url()
    ))
    .await;
    let client = server.client().await;
    let rows = text_rows(
        &client,
        "SELECT count(*), count(DISTINCT key) FROM jira.issues",
    )
    .await;
    assert_eq!(rows, vec![vec![Some(n.to_string()), Some(n.to_string())]]);
    let refused = state.lock().map(|s| s.rate_limited()).unwrap_or(0);
    assert!(refused > 0, "the budget of 2 per second was hit");
    let pages = jira
        .requests()
        .iter()
        .filter(|r| r.contains("/search/jql"))
        .count() as u64;
    assert_eq!(
        pages,
        n.div_ceil(100) as u64 + refused,
        "{:#?}",
        jira.requests()
    );
}
