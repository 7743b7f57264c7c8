//! The HubSpot connector against its fake: list endpoint unfiltered, search endpoint with
//! filterGroups when filtered, properties typed, the 10,000-result cap a clear error.

use chrono::{Duration, TimeZone, Utc};
use joinery_providers::hubspot::fake::{self, HubspotData};
use joinery_tests::{TestServer, assert_hostile_values_safe, assert_pushed_to_fake, text_rows};

const TOKEN: &str = "pat-na1-fake";

async fn setup(contacts: u64) -> (joinery_engine::rest::fakekit::FakeServer, TestServer) {
    let t0 = Utc
        .with_ymd_and_hms(2025, 1, 1, 0, 0, 0)
        .single()
        .expect("date");
    let companies = (1..=250u64)
        .map(|i| {
            fake::record(
                i,
                &[
                    ("name", Some(format!("Company {i}"))),
                    ("domain", Some(format!("c{i}.example"))),
                    (
                        "lifecyclestage",
                        Some(["lead", "customer", "opportunity"][(i % 3) as usize].to_string()),
                    ),
                    (
                        "numberofemployees",
                        if i % 10 == 0 {
                            None
                        } else {
                            Some((i * 7).to_string())
                        },
                    ),
                    ("annualrevenue", Some(format!("{}.5", i * 1000))),
                ],
                t0 + Duration::days(i as i64),
            )
        })
        .collect();
    let contacts = (1..=contacts)
        .map(|i| {
            fake::record(
                i,
                &[
                    ("email", Some(format!("p{i}@x.example"))),
                    ("lifecyclestage", Some("lead".into())),
                ],
                t0,
            )
        })
        .collect();
    let mut data = HubspotData::default();
    data.objects.insert("companies".into(), companies);
    data.objects.insert("contacts".into(), contacts);
    let deals = (1..=60u64)
        .map(|i| {
            fake::record(
                i,
                &[
                    ("dealname", Some(format!("Deal {i}"))),
                    ("amount", (i % 7 != 0).then(|| format!("{}", i * 2500))),
                    (
                        "dealstage",
                        Some(
                            ["closedwon", "closedlost", "contractsent"][(i % 3) as usize]
                                .to_string(),
                        ),
                    ),
                    ("pipeline", Some("default".into())),
                    (
                        "closedate",
                        Some(format!("2026-{:02}-15T00:00:00Z", 1 + i % 12)),
                    ),
                ],
                t0 + Duration::days(i as i64),
            )
        })
        .collect();
    data.objects.insert("deals".into(), deals);
    let (server, state) = fake::start(
        data,
        Some(TOKEN.into()),
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    // An Enterprise-sized budget, so reading 10,000 contacts takes a second, not ten (the
    // default pacing against the default budget is in rate_limits.rs).
    if let Ok(mut s) = state.lock() {
        s.set_rate_limit(2000, std::time::Duration::from_secs(10));
    }
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.hubspot]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken = \"{TOKEN}\"\nrate_limit = 200\n",
        server.base_url()
    );
    (server, TestServer::with_config(&config).await)
}

#[tokio::test]
async fn hubspot_list_and_search() {
    let (fake, server) = setup(30).await;
    let client = server.client().await;
    fake.clear_requests();
    let n = text_rows(
        &client,
        "SELECT count(*), sum(numberofemployees), count(numberofemployees) FROM hubspot.companies",
    )
    .await;
    assert_eq!(
        n,
        vec![vec![
            Some("250".into()),
            Some(
                ((1..=250u64)
                    .filter(|i| i % 10 != 0)
                    .map(|i| i * 7)
                    .sum::<u64>())
                .to_string()
            ),
            Some("225".into())
        ]]
    );
    let reqs = fake.requests();
    assert_eq!(
        reqs.len(),
        3,
        "pages of 100 on the list endpoint: {reqs:#?}"
    );
    assert!(
        reqs.iter()
            .all(|r| r.starts_with("GET /crm/v3/objects/companies?")),
        "{reqs:#?}"
    );
    assert!(
        reqs[0].contains("properties=numberofemployees"),
        "{reqs:#?}"
    );

    for (pushed, local) in [
        (
            "lifecyclestage = 'customer'",
            "(lifecyclestage || '') = 'customer'",
        ),
        (
            "domain IN ('c7.example', 'C8.EXAMPLE', 'c9.example')",
            "(domain || '') IN ('c7.example', 'C8.EXAMPLE', 'c9.example')",
        ),
        (
            "numberofemployees > 1500 AND lifecyclestage = 'lead'",
            "(numberofemployees + 0) > 1500 AND (lifecyclestage || '') = 'lead'",
        ),
        (
            "numberofemployees IS NULL",
            "(numberofemployees + 0) IS NULL",
        ),
        (
            "createdate >= TIMESTAMP '2025-06-01 00:00:00'",
            "(createdate + INTERVAL '0 seconds') >= TIMESTAMP '2025-06-01 00:00:00'",
        ),
        ("annualrevenue < 5000.5", "(annualrevenue + 0) < 5000.5"),
    ] {
        fake.clear_requests();
        let q = |w: &str| format!("SELECT id, name FROM hubspot.companies WHERE {w} ORDER BY id");
        let a = text_rows(&client, &q(pushed)).await;
        assert!(
            fake.requests()
                .iter()
                .all(|r| r.starts_with("POST /crm/v3/objects/companies/search")),
            "{pushed}: {:#?}",
            fake.requests()
        );
        let b = text_rows(&client, &q(local)).await;
        assert_eq!(a, b, "{pushed}");
        assert!(!a.is_empty(), "{pushed} matched nothing");
    }
    assert_hostile_values_safe(
        &client,
        "SELECT id FROM hubspot.companies",
        "domain = {v}",
        "(domain || '') = {v}",
        "c7.example",
    )
    .await;
    // Contacts: search by email, equal to the local filter.
    let a = text_rows(&client, "SELECT id FROM hubspot.contacts WHERE email IN ('p3@x.example', 'P4@X.EXAMPLE') ORDER BY id").await;
    let b = text_rows(&client, "SELECT id FROM hubspot.contacts WHERE (email || '') IN ('p3@x.example', 'P4@X.EXAMPLE') ORDER BY id").await;
    assert_eq!(a, b);
    assert_eq!(a, vec![vec![Some("3".into())]]);

    // Deals: stage, amount and close date through search, equal to local filtering.
    for (pushed, local) in [
        (
            "dealstage = 'closedwon' AND amount >= 50000",
            "(dealstage || '') = 'closedwon' AND (amount + 0) >= 50000",
        ),
        (
            "closedate < TIMESTAMP '2026-04-01 00:00:00' AND amount IS NOT NULL",
            "(closedate + INTERVAL '0 seconds') < TIMESTAMP '2026-04-01 00:00:00' AND (amount + 0) IS NOT NULL",
        ),
    ] {
        let select = "SELECT id, amount FROM hubspot.deals";
        let sent = "POST /crm/v3/objects/deals/search";
        assert_pushed_to_fake(&client, &fake, select, pushed, local, sent).await;
    }
}

#[tokio::test]
async fn hubspot_search_cap_is_a_clear_error() {
    let (_fake, server) = setup(10_050).await;
    let client = server.client().await;
    // Unfiltered, the list endpoint reads all of them.
    let n = text_rows(&client, "SELECT count(*) FROM hubspot.contacts").await;
    assert_eq!(n, vec![vec![Some("10050".into())]]);
    // A filter matching more than 10,000 records cannot be answered by search: an error, not a
    // silently truncated result.
    let err = client
        .simple_query("SELECT count(*) FROM hubspot.contacts WHERE lifecyclestage = 'lead'")
        .await
        .expect_err("cap");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("10,000") && msg.contains("hubspot"), "{msg}");
}
