//! The demo world: one generated company, deterministic from a seed and an `as_of` date, served
//! by the connectors' own fakes on loopback, plus its warehouse files.
//!
//! - GitHub: `acme/api`, `acme/web`, `acme/billing`; pull request titles name Jira issues.
//! - Jira: projects `PAY`, `WEB`, `OPS`, one scrum board each, two-week sprints, story points.
//! - PagerDuty: the production services, incidents with priorities P0-P3.
//! - Salesforce: the customers as accounts (their ids key the warehouse), contacts,
//!   opportunities, cases, and a custom `Tier__c` field.
//! - HubSpot: the same companies (linked by domain) and a contact each.
//! - Slack: `#general`, `#eng` and one `#inc-<service>` channel per PagerDuty service.
//! - Stripe: the paying customers (`metadata.salesforce_account_id` links them), monthly
//!   subscriptions (some canceled), invoices and charges.
//! - Warehouse (`kind = "files"`): `accounts.csv` (customers and their ARR), monthly revenue
//!   (`revenue/month=YYYY-MM/*.parquet`), and `service_accounts.csv` (which customers depend
//!   on which PagerDuty service).
//!
//! Every fake counts requests and takes `api_latency` per call (0 for tests; ~50 ms makes the
//! benchmarks realistic).

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use joinery_engine::rest::fakekit::FakeServer;
use joinery_engine::{JoineryError, Result};
use serde_json::json;

use crate::registry::ConnectionSpec;

/// The repositories, Jira projects and PagerDuty services of the demo company.
pub const REPOSITORIES: &[&str] = &["acme/api", "acme/web", "acme/billing"];
pub const JIRA_PROJECTS: &[&str] = &["PAY", "WEB", "OPS"];
pub const SERVICES: &[(&str, &str)] = &[
    ("PSVC001", "Checkout API"),
    ("PSVC002", "Payments"),
    ("PSVC003", "Search"),
    ("PSVC004", "Web App"),
    ("PSVC005", "Billing Jobs"),
    ("PSVC006", "Notifications"),
];

/// The demo's credentials (the fakes check them like the real APIs do).
const GITHUB_TOKEN: &str = "demo-github-token";
const JIRA_USER: &str = "demo@acme.dev";
const JIRA_TOKEN: &str = "demo-jira-token";
const PAGERDUTY_TOKEN: &str = "demo-pagerduty-key";
const STRIPE_KEY: &str = "sk_test_demo_key";
const SLACK_TOKEN: &str = "xoxb-demo-token";
const HUBSPOT_TOKEN: &str = "pat-demo-token";
const SALESFORCE_CLIENT: &str = "demo-salesforce-client";
const SALESFORCE_SECRET: &str = "demo-salesforce-secret";
const SALESFORCE_REFRESH: &str = "demo-salesforce-refresh";

/// The running fakes; dropping this stops them.
pub struct DemoWorld {
    pub fakes: Vec<(String, FakeServer)>,
    pub connections: Vec<ConnectionSpec>,
}

fn spec(
    name: &str,
    kind: &str,
    base_url: Option<String>,
    options: serde_json::Value,
) -> ConnectionSpec {
    ConnectionSpec {
        name: name.into(),
        kind: kind.into(),
        base_url,
        options: options
            .as_object()
            .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
        base_dir: None,
        secret_refs: Default::default(),
    }
}

/// The default `as_of`: the world's "now".
pub fn default_as_of() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .unwrap_or_else(Utc::now)
}

/// Start every fake of the world on loopback and write the warehouse under `dir`.
pub async fn start(
    seed: u64,
    scale: u64,
    as_of: DateTime<Utc>,
    api_latency: Duration,
    dir: &Path,
) -> Result<DemoWorld> {
    let loopback = "127.0.0.1:0"
        .parse()
        .map_err(|e| JoineryError::internal(format!("address: {e}")))?;
    let io = |what: &str, e: std::io::Error| {
        JoineryError::internal(format!("cannot start the {what} fake: {e}"))
    };
    let jira_keys: Vec<String> = JIRA_PROJECTS
        .iter()
        .flat_map(|p| (1..=40).map(move |n| format!("{p}-{n}")))
        .collect();

    let gh = crate::github::fake::generate(seed, as_of, REPOSITORIES, &jira_keys, scale);
    let (gh, _) = crate::github::fake::start(gh, Some(GITHUB_TOKEN.into()), 5000, loopback)
        .await
        .map_err(|e| io("GitHub", e))?;
    let jira = crate::jira::fake::generate(seed, as_of, JIRA_PROJECTS, 80, scale);
    let (jira, _) = crate::jira::fake::start(jira, Some((JIRA_USER, JIRA_TOKEN)), 6000, loopback)
        .await
        .map_err(|e| io("Jira", e))?;
    let services: Vec<crate::pagerduty::fake::ServiceDef> = SERVICES
        .iter()
        .map(|(id, name)| crate::pagerduty::fake::ServiceDef {
            id: (*id).into(),
            name: (*name).into(),
        })
        .collect();
    let pd = crate::pagerduty::fake::generate(seed, as_of, &services, 30, scale);
    let (pd, _) = crate::pagerduty::fake::start(pd, Some(PAGERDUTY_TOKEN.into()), 960, loopback)
        .await
        .map_err(|e| io("PagerDuty", e))?;
    let demo_accounts = super::warehouse::accounts(seed, scale)?;
    let customers: Vec<crate::stripe::fake::CustomerDef> = demo_accounts
        .iter()
        .map(|a| crate::stripe::fake::CustomerDef {
            salesforce_account_id: a.id.clone(),
            name: a.name.clone(),
            email: format!(
                "billing@{}.example",
                a.name
                    .chars()
                    .filter(char::is_ascii_alphanumeric)
                    .collect::<String>()
                    .to_lowercase()
            ),
            monthly_cents: i64::try_from(a.arr_cents / 12).unwrap_or(0),
        })
        .collect();
    let st = crate::stripe::fake::generate(seed, as_of, &customers);
    let (st, _) = crate::stripe::fake::start(st, Some(STRIPE_KEY.into()), 100, loopback)
        .await
        .map_err(|e| io("Stripe", e))?;
    // HubSpot: the same companies, linked by domain, plus a contact each.
    let domain = |name: &str| {
        format!(
            "{}.example",
            name.chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_lowercase()
        )
    };
    let mut hs = crate::hubspot::fake::HubspotData::default();
    let mut companies = Vec::new();
    let mut contacts = Vec::new();
    for (i, a) in demo_accounts.iter().enumerate() {
        let created = as_of - chrono::Duration::days(100 + i as i64);
        companies.push(crate::hubspot::fake::record(
            i as u64 + 1,
            &[
                ("name", Some(a.name.clone())),
                ("domain", Some(domain(&a.name))),
                (
                    "lifecyclestage",
                    Some(if a.arr_cents > 0 { "customer" } else { "lead" }.to_string()),
                ),
                ("annualrevenue", Some(format!("{}", a.arr_cents / 100))),
                ("country", Some(a.region.clone())),
            ],
            created,
        ));
        contacts.push(crate::hubspot::fake::record(
            i as u64 + 1,
            &[
                ("email", Some(format!("cto@{}", domain(&a.name)))),
                ("firstname", Some("Pat".into())),
                ("lastname", Some(format!("Customer{i}"))),
                ("company", Some(a.name.clone())),
                ("lifecyclestage", Some("customer".into())),
            ],
            created,
        ));
    }
    hs.objects.insert("companies".into(), companies);
    hs.objects.insert("contacts".into(), contacts);
    hs.objects.insert("deals".into(), Vec::new());
    let (hs, _) = crate::hubspot::fake::start(hs, Some(HUBSPOT_TOKEN.into()), loopback)
        .await
        .map_err(|e| io("HubSpot", e))?;
    let accounts: Vec<crate::salesforce::fake::AccountDef> = demo_accounts
        .into_iter()
        .map(|a| crate::salesforce::fake::AccountDef {
            id: a.id,
            name: a.name,
            arr: a.arr_cents as f64 / 100.0,
            country: a.region,
        })
        .collect();
    let sf = crate::salesforce::fake::generate(seed, as_of, &accounts);
    let (sf, _) = crate::salesforce::fake::start(
        sf,
        crate::salesforce::fake::Credentials {
            client_id: SALESFORCE_CLIENT.into(),
            client_secret: SALESFORCE_SECRET.into(),
            refresh_token: SALESFORCE_REFRESH.into(),
        },
        2000,
        loopback,
    )
    .await
    .map_err(|e| io("Salesforce", e))?;
    let mut channels: Vec<(String, String)> = vec![
        ("general".into(), "Company-wide".into()),
        ("eng".into(), "Engineering".into()),
    ];
    for (id, name) in SERVICES {
        channels.push((
            format!("inc-{}", name.to_lowercase().replace(' ', "-")),
            format!("Incidents on {name} ({id})"),
        ));
    }
    let channel_refs: Vec<(&str, &str)> = channels
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let people: Vec<&str> = crate::github::fake::ENGINEERS.to_vec();
    let sl = crate::slack::fake::generate(seed, as_of, &channel_refs, &people, 60 * scale);
    let (sl, _) = crate::slack::fake::start(sl, Some(SLACK_TOKEN.into()), 1000, loopback)
        .await
        .map_err(|e| io("Slack", e))?;
    for f in [&gh, &jira, &pd, &sf, &st, &sl, &hs] {
        f.set_latency(api_latency);
    }
    super::warehouse::write(dir, seed, scale, SERVICES)?;

    let connections = vec![
        spec(
            "github",
            "github",
            Some(gh.base_url()),
            json!({"token": GITHUB_TOKEN, "repositories": REPOSITORIES, "cache_ttl_s": 60}),
        ),
        spec(
            "jira",
            "jira",
            Some(jira.base_url()),
            json!({"username": JIRA_USER, "password": JIRA_TOKEN, "cache_ttl_s": 60}),
        ),
        spec(
            "pagerduty",
            "pagerduty",
            Some(pd.base_url()),
            json!({"token": PAGERDUTY_TOKEN, "cache_ttl_s": 60}),
        ),
        spec(
            "salesforce",
            "salesforce",
            Some(sf.base_url()),
            json!({
                "oauth_token_url": format!("{}/services/oauth2/token", sf.base_url()),
                "client_id": SALESFORCE_CLIENT,
                "client_secret": SALESFORCE_SECRET,
                "refresh_token": SALESFORCE_REFRESH,
                "cache_ttl_s": 60
            }),
        ),
        spec(
            "stripe",
            "stripe",
            Some(st.base_url()),
            json!({"token": STRIPE_KEY, "cache_ttl_s": 60}),
        ),
        spec(
            "slack",
            "slack",
            Some(format!("{}/api", sl.base_url())),
            json!({"token": SLACK_TOKEN, "cache_ttl_s": 60}),
        ),
        spec(
            "hubspot",
            "hubspot",
            Some(hs.base_url()),
            json!({"token": HUBSPOT_TOKEN, "cache_ttl_s": 60}),
        ),
        spec(
            "warehouse",
            "files",
            None,
            json!({"path": dir.display().to_string()}),
        ),
    ];
    Ok(DemoWorld {
        fakes: vec![
            ("github".into(), gh),
            ("jira".into(), jira),
            ("pagerduty".into(), pd),
            ("salesforce".into(), sf),
            ("stripe".into(), st),
            ("slack".into(), sl),
            ("hubspot".into(), hs),
        ],
        connections,
    })
}
