//! The PagerDuty connector against its fake.

use chrono::{TimeZone, Utc};
use joinery_providers::pagerduty::fake::{self, ServiceDef};
use joinery_tests::{
    TestServer, assert_hostile_values_safe, assert_upstream_auth_error, text_rows,
};

const TOKEN: &str = "pd_fake_key_987";

async fn setup(token: &str) -> (joinery_engine::rest::fakekit::FakeServer, TestServer, usize) {
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let services: Vec<ServiceDef> = (1..=4)
        .map(|i| ServiceDef {
            id: format!("PSVC{i:03}"),
            name: ["Checkout API", "Payments", "Search", "Web"][i - 1].to_string(),
        })
        .collect();
    let data = fake::generate(11, as_of, &services, 40, 1);
    let total = data.incidents.len();
    let (server, _) = fake::start(
        data,
        Some(TOKEN.into()),
        1000,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.pagerduty]\nkind = \"pagerduty\"\nbase_url = \"{}\"\ntoken = \"{token}\"\n",
        server.base_url()
    );
    (server, TestServer::with_config(&config).await, total)
}

#[tokio::test]
async fn pagerduty_pushdown_matches_local_filtering() {
    let (fake, server, total) = setup(TOKEN).await;
    let client = server.client().await;
    // The one-month default window never hides rows: date_range=all on every request.
    fake.clear_requests();
    let n = text_rows(&client, "SELECT count(*) FROM pagerduty.incidents").await;
    assert_eq!(n, vec![vec![Some(total.to_string())]]);
    let reqs = fake.requests();
    assert!(
        reqs.iter().all(|r| r.contains("date_range=all")),
        "{reqs:#?}"
    );
    assert_eq!(reqs.len(), total.div_ceil(100), "pages of 100: {reqs:#?}");

    for (pushed, local, param) in [
        ("status <> 'resolved'", "(status || '') <> 'resolved'", ""),
        (
            "status IN ('triggered', 'acknowledged')",
            "(status || '') IN ('triggered', 'acknowledged')",
            "statuses%5B%5D=triggered",
        ),
        (
            "urgency = 'high'",
            "(urgency || '') = 'high'",
            "urgencies%5B%5D=high",
        ),
        (
            "service_id = 'PSVC002'",
            "(service_id || '') = 'PSVC002'",
            "service_ids%5B%5D=PSVC002",
        ),
        ("priority = 'P0'", "(priority || '') = 'P0'", ""),
    ] {
        fake.clear_requests();
        let a = text_rows(
            &client,
            &format!("SELECT id, status FROM pagerduty.incidents WHERE {pushed} ORDER BY 1"),
        )
        .await;
        let b = text_rows(
            &client,
            &format!("SELECT id, status FROM pagerduty.incidents WHERE {local} ORDER BY 1"),
        )
        .await;
        assert_eq!(a, b, "{pushed}");
        assert!(!a.is_empty(), "{pushed} matched nothing");
        if !param.is_empty() {
            assert!(
                fake.requests()
                    .iter()
                    .any(|r| r.contains(param) || r.contains(&param.replace("%5B%5D", "[]"))),
                "{param}: {:#?}",
                fake.requests()
            );
        }
    }
    // Services; a name filter goes out as PagerDuty's substring `query` and is re-checked.
    let rows = text_rows(
        &client,
        "SELECT id FROM pagerduty.services WHERE name = 'Payments'",
    )
    .await;
    assert_eq!(rows, vec![vec![Some("PSVC002".into())]]);

    assert_hostile_values_safe(
        &client,
        "SELECT id FROM pagerduty.services",
        "name = {v}",
        "(name || '') = {v}",
        "Payments",
    )
    .await;

    // ORDER BY created_at / incident_number ... LIMIT: sort_by=field:dir, one page, no local sort.
    for (order, sent) in [
        ("created_at DESC", "sort_by=created_at%3Adesc"),
        ("incident_number", "sort_by=incident_number%3Aasc"),
    ] {
        fake.clear_requests();
        let q = format!(
            "SELECT id FROM pagerduty.incidents WHERE status IN ('triggered', 'acknowledged') ORDER BY {order} LIMIT 3"
        );
        let a = text_rows(&client, &q).await;
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 1, "{order}: {reqs:#?}");
        assert!(reqs[0].contains(sent), "{order}: {reqs:#?}");
        let plan = format!("{:?}", text_rows(&client, &format!("EXPLAIN {q}")).await);
        assert!(!plan.contains("SortExec"), "{order}: {plan}");
        let (col, dir) = order.split_once(' ').unwrap_or((order, "ASC"));
        let b = text_rows(
            &client,
            &format!(
                "SELECT id FROM pagerduty.incidents WHERE (status || '') IN ('triggered', 'acknowledged') ORDER BY {col} + {} {dir} LIMIT 3",
                if col == "created_at" { "interval '0 seconds'" } else { "0" }
            ),
        )
        .await;
        assert_eq!(a.len(), 3, "{order}");
        assert_eq!(a, b, "{order}");
    }
}

#[tokio::test]
async fn pagerduty_bad_key_is_a_clear_error() {
    let (_fake, server, _) = setup("wrong-key-000").await;
    let client = server.client().await;
    assert_upstream_auth_error(
        &client,
        "SELECT * FROM pagerduty.incidents",
        "pagerduty",
        "wrong-key-000",
    )
    .await;
}
