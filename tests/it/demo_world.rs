//! The demo world end to end: the brief's Monday-morning question as one SQL statement over
//! GitHub, Jira, PagerDuty and the warehouse, answered from the fakes with the fewest calls.

use std::time::Duration;

use joinery_tests::text_rows;
use joinery_tests::workload::{BRIEF_QUESTION, DemoServer};

#[tokio::test]
async fn the_briefs_question_in_one_statement() {
    let demo = DemoServer::start(42, 1, Duration::ZERO, "", "").await;
    let (w, server) = (&demo.world, &demo.server);
    let client = server.client().await;
    let rows = text_rows(&client, BRIEF_QUESTION).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    let n = |i: usize| r[i].as_deref().unwrap_or("0").parse::<f64>().unwrap_or(0.0);
    assert!(
        n(0) > 0.0 && n(1) > 0.0,
        "PRs merged in both quarters: {r:?}"
    );
    assert!(n(2) > 0.0, "story points of merged PRs' Jira issues: {r:?}");
    assert!(
        n(4) >= 1.0,
        "the world's open P0 reaches a top customer: {r:?}"
    );

    // The same numbers computed the long way, table by table, locally.
    let prs = text_rows(
        &client,
        "SELECT count(*) FROM github.pull_requests WHERE (state || '') = 'closed' \
         AND merged_at >= TIMESTAMP '2026-08-22 12:00:00'",
    )
    .await;
    assert_eq!(prs[0][0], r[0], "PRs this quarter");

    // API calls: the minimum the filters allow. GitHub: one page of closed PRs per repository
    // (3); Jira: 240 issues in pages of 100 (3); PagerDuty: 180 incidents in pages of 100 (2);
    // Salesforce: 50 accounts in one SOQL batch (1).
    let calls = text_rows(
        &client,
        "SELECT connection, count(*) FROM joinery.api_calls WHERE NOT cache_hit AND method = 'GET' \
         AND query_id = (SELECT max(query_id) FROM joinery.api_calls WHERE connection = 'pagerduty') \
         GROUP BY connection ORDER BY 1",
    )
    .await;
    assert_eq!(
        calls,
        vec![
            vec![Some("github".into()), Some("3".into())],
            vec![Some("jira".into()), Some("3".into())],
            vec![Some("pagerduty".into()), Some("2".into())],
            vec![Some("salesforce".into()), Some("1".into())],
        ]
    );
    let gh = &w.fakes[0].1;
    assert!(
        gh.requests().iter().all(|r| !r.contains("/issues")),
        "PR reads only"
    );

    // The tools agree on who the customers are: Stripe's metadata names the Salesforce account,
    // whose id keys the warehouse.
    let linked = text_rows(
        &client,
        "SELECT count(*), count(r.account_id) FROM stripe.customers c \
         JOIN salesforce.accounts a ON a.id = c.salesforce_account_id \
         LEFT JOIN warehouse.revenue r ON r.account_id = a.id AND r.month = '2025-12'",
    )
    .await;
    assert_eq!(linked, vec![vec![Some("50".into()), Some("50".into())]]);
    let hubspot = text_rows(
        &client,
        "SELECT count(*) FROM hubspot.companies h JOIN salesforce.accounts a ON a.name = h.name \
         JOIN stripe.customers c ON c.email = 'billing@' || h.domain",
    )
    .await;
    assert_eq!(
        hubspot,
        vec![vec![Some("50".into())]],
        "HubSpot companies are the same customers"
    );

    // EXPLAIN shows every request the question will make.
    let plan = format!(
        "{:?}",
        text_rows(&client, &format!("EXPLAIN {BRIEF_QUESTION}")).await
    );
    for want in [
        "GET /repos/acme/api/pulls",
        "GET /repos/acme/billing/pulls",
        "GET /rest/api/3/search/jql",
        "GET /incidents",
        "SELECT Id, Name FROM Account",
    ] {
        assert!(plan.contains(want), "{want} in {plan}");
    }
}
