//! The Stripe connector against its fake.

use chrono::{TimeZone, Utc};
use joinery_providers::stripe::fake::{self, CustomerDef};
use joinery_tests::{
    TestServer, assert_hostile_values_safe, assert_upstream_auth_error, text_rows,
};

const KEY: &str = "sk_test_fake_4242";

async fn setup(key: &str) -> (joinery_engine::rest::fakekit::FakeServer, TestServer) {
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let customers: Vec<CustomerDef> = (0..40)
        .map(|i| CustomerDef {
            salesforce_account_id: format!("001A0000{i:010}"),
            name: format!("Customer {i}"),
            email: if i == 7 {
                "Billing@Example.com".into()
            } else {
                format!("billing{i}@example.com")
            },
            monthly_cents: if i % 5 == 0 { 0 } else { 10_000 * i64::from(i) },
        })
        .collect();
    let data = fake::generate(9, as_of, &customers);
    let (server, _) = fake::start(
        data,
        Some(KEY.into()),
        1000,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.stripe]\nkind = \"stripe\"\nbase_url = \"{}\"\ntoken = \"{key}\"\n",
        server.base_url()
    );
    (server, TestServer::with_config(&config).await)
}

#[tokio::test]
async fn stripe_pushdown_and_paging() {
    let (fake, server) = setup(KEY).await;
    let client = server.client().await;

    // Canceled subscriptions are hidden by Stripe's default; status=all brings them back.
    fake.clear_requests();
    let all = text_rows(&client, "SELECT count(*) FROM stripe.subscriptions").await;
    assert_eq!(
        all,
        vec![vec![Some("32".into())]],
        "40 customers, every 5th without a plan"
    );
    assert!(
        fake.requests().iter().all(|r| r.contains("status=all")),
        "{:#?}",
        fake.requests()
    );
    let canceled = text_rows(
        &client,
        "SELECT count(*) FROM stripe.subscriptions WHERE status = 'canceled'",
    )
    .await;
    assert_ne!(canceled, vec![vec![Some("0".into())]]);

    // starting_after paging: 32 subscriptions in pages of 100 is one call; invoices need several.
    fake.clear_requests();
    let n: i64 = text_rows(&client, "SELECT count(*) FROM stripe.invoices").await[0][0]
        .as_deref()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0);
    assert!(n > 200);
    let reqs = fake.requests();
    assert_eq!(reqs.len() as i64, (n + 99) / 100, "{reqs:#?}");
    assert!(
        reqs.iter()
            .skip(1)
            .all(|r| r.contains("starting_after=in_")),
        "{reqs:#?}"
    );

    for (pushed, local, param) in [
        (
            "created >= TIMESTAMP '2026-09-01 00:00:00.5' AND created < TIMESTAMP '2026-10-01 00:00:00'",
            "(created + INTERVAL '0 seconds') >= TIMESTAMP '2026-09-01 00:00:00.5' AND (created + INTERVAL '0 seconds') < TIMESTAMP '2026-10-01 00:00:00'",
            "created%5Bgte%5D=",
        ),
        (
            "customer = 'cus_00000000010003'",
            "(customer || '') = 'cus_00000000010003'",
            "customer=cus_00000000010003",
        ),
        ("status = 'open'", "(status || '') = 'open'", "status=open"),
    ] {
        fake.clear_requests();
        let a = text_rows(
            &client,
            &format!("SELECT id FROM stripe.invoices WHERE {pushed} ORDER BY id"),
        )
        .await;
        let b = text_rows(
            &client,
            &format!("SELECT id FROM stripe.invoices WHERE {local} ORDER BY id"),
        )
        .await;
        assert_eq!(a, b, "{pushed}");
        assert!(!a.is_empty(), "{pushed} matched nothing");
        assert!(
            fake.requests().iter().any(|r| r.contains(param)),
            "{param}: {:#?}",
            fake.requests()
        );
    }
    // Email is exact and case-sensitive in Stripe, as in SQL.
    let rows = text_rows(
        &client,
        "SELECT name FROM stripe.customers WHERE email = 'billing@example.com'",
    )
    .await;
    assert!(rows.is_empty());
    assert_hostile_values_safe(
        &client,
        "SELECT id FROM stripe.customers",
        "email = {v}",
        "(email || '') = {v}",
        "Billing@Example.com",
    )
    .await;
    let rows = text_rows(&client, "SELECT name, salesforce_account_id FROM stripe.customers WHERE email = 'Billing@Example.com'").await;
    assert_eq!(
        rows,
        vec![vec![
            Some("Customer 7".into()),
            Some("001A00000000000007".into())
        ]]
    );

    // A LIMIT with only exact filters is one small request.
    fake.clear_requests();
    let rows = text_rows(
        &client,
        "SELECT id FROM stripe.charges WHERE customer = 'cus_00000000010003' LIMIT 2",
    )
    .await;
    assert_eq!(rows.len(), 2);
    assert_eq!(fake.requests().len(), 1);
    assert!(
        fake.requests()[0].contains("limit=2"),
        "{:#?}",
        fake.requests()
    );
}

#[tokio::test]
async fn stripe_bad_key() {
    let (_fake, server) = setup("sk_test_wrong_9999").await;
    let client = server.client().await;
    assert_upstream_auth_error(
        &client,
        "SELECT * FROM stripe.customers",
        "stripe",
        "sk_test_wrong_9999",
    )
    .await;
}
