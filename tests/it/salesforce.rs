//! The Salesforce connector against its fake: OAuth refresh, WHERE/projection/LIMIT as SOQL
//! with escaped literals, nextRecordsUrl paging, custom fields.

use chrono::{TimeZone, Utc};
use joinery_providers::salesforce::fake::{self, AccountDef, Credentials};
use joinery_tests::{TestServer, text_rows};

async fn setup() -> (
    joinery_engine::rest::fakekit::FakeServer,
    fake::Shared,
    TestServer,
) {
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let mut accounts: Vec<AccountDef> = (0..30)
        .map(|i| AccountDef {
            id: format!("001A0000{i:010}"),
            name: format!("Company {i}"),
            arr: 5_000.0 * f64::from(i),
            country: ["DE", "US", "FR"][i as usize % 3].into(),
        })
        .collect();
    accounts[3].name = "O'Brien & Sons".into();
    accounts[4].name = "company 4".into();
    accounts[5].name = "Company 4".into();
    let data = fake::generate(3, as_of, &accounts);
    let (server, state) = fake::start(
        data,
        Credentials {
            client_id: "cid".into(),
            client_secret: "csecret-777".into(),
            refresh_token: "rtoken-888".into(),
        },
        7,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.salesforce]\nkind = \"salesforce\"\nbase_url = \"{b}\"\noauth_token_url = \"{b}/services/oauth2/token\"\nclient_id = \"cid\"\nclient_secret = \"csecret-777\"\nrefresh_token = \"rtoken-888\"\n",
        b = server.base_url()
    );
    let ts = TestServer::with_config(&config).await;
    (server, state, ts)
}

#[tokio::test]
async fn salesforce_soql_pushdown() {
    let (fake, state, server) = setup().await;
    let client = server.client().await;

    // 30 accounts in batches of 7: the query and four nextRecordsUrl follow-ups.
    fake.clear_requests();
    let n = text_rows(&client, "SELECT count(*) FROM salesforce.accounts").await;
    assert_eq!(n, vec![vec![Some("30".into())]]);
    let reqs: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| !r.contains("oauth2"))
        .collect();
    assert_eq!(reqs.len(), 5, "{reqs:#?}");
    assert!(reqs[1].contains("/query/01gFAKE"), "{reqs:#?}");

    // Pushed filters (text re-checked: SOQL is case-insensitive) equal local filtering.
    for (pushed, local) in [
        ("name = 'Company 4'", "(name || '') = 'Company 4'"),
        (
            "name IN ('Company 1', 'company 4', 'Nope')",
            "(name || '') IN ('Company 1', 'company 4', 'Nope')",
        ),
        ("name LIKE 'Company 1%'", "(name || '') LIKE 'Company 1%'"),
        ("annual_revenue > 4000000", "(annual_revenue + 0) > 4000000"),
        (
            "billing_country = 'DE' AND number_of_employees >= 100",
            "(billing_country || '') = 'DE' AND (number_of_employees + 0) >= 100",
        ),
    ] {
        fake.clear_requests();
        let q = |w: &str| format!("SELECT id, name FROM salesforce.accounts WHERE {w} ORDER BY id");
        let a = text_rows(&client, &q(pushed)).await;
        let b = text_rows(&client, &q(local)).await;
        assert_eq!(a, b, "{pushed}");
        assert!(!a.is_empty(), "{pushed} matched nothing");
        let first = fake
            .requests()
            .into_iter()
            .find(|r| r.contains("/query?"))
            .unwrap_or_default();
        assert!(first.contains("WHERE"), "{pushed}: {first}");
    }
    // Case: SOQL's `=` matches 'company 4' and 'Company 4'; SQL keeps only the exact one.
    let rows = text_rows(
        &client,
        "SELECT name FROM salesforce.accounts WHERE name = 'company 4'",
    )
    .await;
    assert_eq!(rows, vec![vec![Some("company 4".into())]]);

    // Projection and LIMIT in the SOQL itself.
    fake.clear_requests();
    let rows = text_rows(
        &client,
        "SELECT id FROM salesforce.accounts WHERE annual_revenue > 0 LIMIT 3",
    )
    .await;
    assert_eq!(rows.len(), 3);
    let first = fake
        .requests()
        .into_iter()
        .find(|r| r.contains("/query?"))
        .unwrap_or_default();
    assert!(
        first.contains("SELECT+Id%2C+AnnualRevenue+FROM+Account")
            || first.contains("SELECT+Id+FROM+Account"),
        "{first}"
    );
    assert!(first.contains("LIMIT+3"), "{first}");

    // Literals cannot change the statement.
    for evil in [
        "O'Brien & Sons",
        "x' OR Name != '",
        "a\\' OR Name != 'b",
        "%",
        "Ünïcødé #1",
    ] {
        let lit = evil.replace('\'', "''");
        let rows = text_rows(
            &client,
            &format!("SELECT name FROM salesforce.accounts WHERE name = '{lit}'"),
        )
        .await;
        let local = text_rows(
            &client,
            &format!("SELECT name FROM salesforce.accounts WHERE (name || '') = '{lit}'"),
        )
        .await;
        assert_eq!(rows, local, "{evil}");
    }

    // Relationship field, custom field found through describe.
    let rows = text_rows(&client, "SELECT count(DISTINCT owner_email), count(*) FILTER (WHERE tier__c = 'Growth') FROM salesforce.accounts").await;
    assert_eq!(rows[0][0].as_deref(), Some("3"));
    assert_ne!(rows[0][1].as_deref(), Some("0"));

    // An expired session is refreshed once and the query goes on.
    let before = state.lock().map(|s| s.tokens_issued()).unwrap_or(0);
    if let Ok(mut s) = state.lock() {
        s.expire_token();
    }
    let n = text_rows(
        &client,
        "SELECT count(*) FROM salesforce.opportunities WHERE amount > 0",
    )
    .await;
    assert_eq!(n, vec![vec![Some("29".into())]]);
    assert_eq!(
        state.lock().map(|s| s.tokens_issued()).unwrap_or(0),
        before + 1
    );

    // The other objects: pushed = local for a filter each.
    for (table, pushed, local) in [
        (
            "contacts",
            "account_id = '001A00000000000007'",
            "(account_id || '') = '001A00000000000007'",
        ),
        (
            "opportunities",
            "amount >= 100000 AND stage_name IN ('Closed Won', 'Negotiation')",
            "(amount + 0) >= 100000 AND (stage_name || '') IN ('Closed Won', 'Negotiation')",
        ),
        ("cases", "status = 'Closed'", "(status || '') = 'Closed'"),
        (
            "users",
            "email LIKE 'grace%'",
            "(email || '') LIKE 'grace%'",
        ),
    ] {
        fake.clear_requests();
        let q = |w: &str| format!("SELECT id FROM salesforce.{table} WHERE {w} ORDER BY id");
        let a = text_rows(&client, &q(pushed)).await;
        let sent = fake
            .requests()
            .into_iter()
            .find(|r| r.contains("/query?"))
            .unwrap_or_default();
        assert!(sent.contains("WHERE"), "{table}: {sent}");
        let b = text_rows(&client, &q(local)).await;
        assert_eq!(a, b, "{table}: {pushed}");
        assert!(!a.is_empty(), "{table}: {pushed} matched nothing");
    }

    // ORDER BY a number or datetime ... LIMIT: written into the SOQL (with SQL's NULL
    // placement), no local sort, paging stops after the first batch.
    for (col, dir, sent, local_key) in [
        (
            "amount",
            "DESC",
            "ORDER+BY+Amount+DESC+NULLS+FIRST",
            "amount + 0",
        ),
        (
            "close_date",
            "ASC",
            "ORDER+BY+CloseDate+ASC+NULLS+LAST",
            "CAST(close_date AS TEXT)",
        ),
        (
            "created_date",
            "DESC",
            "ORDER+BY+CreatedDate+DESC+NULLS+FIRST",
            "CAST(created_date AS TEXT)",
        ),
    ] {
        fake.clear_requests();
        let q = format!("SELECT {col} FROM salesforce.opportunities ORDER BY {col} {dir} LIMIT 4");
        let a = text_rows(&client, &q).await;
        let reqs = fake.requests();
        assert_eq!(reqs.len(), 1, "{col}: {reqs:#?}");
        assert!(reqs[0].contains(sent), "{col}: {reqs:#?}");
        let plan = format!("{:?}", text_rows(&client, &format!("EXPLAIN {q}")).await);
        assert!(!plan.contains("SortExec"), "{col}: {plan}");
        let b = text_rows(
            &client,
            &format!(
                "SELECT {col} FROM salesforce.opportunities ORDER BY {local_key} {dir} LIMIT 4"
            ),
        )
        .await;
        assert_eq!(a.len(), 4, "{col}");
        assert_eq!(a, b, "{col}");
    }

    // Secrets never reach EXPLAIN.
    let plan = format!(
        "{:?}",
        text_rows(&client, "EXPLAIN SELECT * FROM salesforce.cases").await
    );
    assert!(
        !plan.contains("csecret-777") && !plan.contains("rtoken-888") && !plan.contains("00Dfake"),
        "{plan}"
    );
}
