//! A fake of Stripe's list endpoints (`/v1/customers`, `/v1/subscriptions`, `/v1/invoices`,
//! `/v1/charges`) after Stripe's documented behaviour: newest first, `limit` 1-100 (default
//! 10, 400 outside), `starting_after` that must name an object of the list (400
//! `resource_missing` otherwise), `created` as an exact value or `created[gt|gte|lt|lte]`,
//! case-sensitive `email`, subscriptions hiding `canceled` unless `status=all`/`canceled`,
//! Bearer auth with Stripe's 401 body, and 429s *without* `Retry-After` (only
//! `Stripe-Should-Retry`) when the per-second budget is spent.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use joinery_engine::rest::fakekit::Budget;
use serde_json::{Value, json};

use crate::fakeutil::{Rng, template};

const CUSTOMER: &str = include_str!("examples/stripe_customer.json");
const SUBSCRIPTION: &str = include_str!("examples/stripe_subscription.json");
const INVOICE: &str = include_str!("examples/stripe_invoice.json");
const CHARGE: &str = include_str!("examples/stripe_charge.json");

/// A paying customer of the demo world.
#[derive(Debug, Clone)]
pub struct CustomerDef {
    pub salesforce_account_id: String,
    pub name: String,
    pub email: String,
    /// Monthly price in cents (0: no subscription).
    pub monthly_cents: i64,
}

#[derive(Debug, Clone, Default)]
pub struct StripeData {
    /// list name -> objects, newest first
    pub lists: BTreeMap<&'static str, Vec<Value>>,
}

fn put(v: &mut Value, pairs: Vec<(&str, Value)>) {
    if let Some(o) = v.as_object_mut() {
        for (k, x) in pairs {
            o.insert(k.to_string(), x);
        }
    }
}

/// Customers with `metadata.salesforce_account_id`, a monthly subscription each (some
/// canceled), twelve monthly invoices and their charges before `as_of`.
pub fn generate(seed: u64, as_of: DateTime<Utc>, customers: &[CustomerDef]) -> StripeData {
    let mut rng = Rng(seed ^ 0x7374_7269);
    let (ct, st, it, cht) = (
        template(CUSTOMER),
        template(SUBSCRIPTION),
        template(INVOICE),
        template(CHARGE),
    );
    let mut cus = Vec::new();
    let mut subs = Vec::new();
    let mut invs = Vec::new();
    let mut chs = Vec::new();
    for (i, c) in customers.iter().enumerate() {
        let id = format!("cus_{:014}", 10_000 + i);
        let created = as_of - ChronoDuration::days(400 + rng.below(600) as i64);
        let mut v = ct.clone();
        put(
            &mut v,
            vec![
                ("id", json!(id)),
                ("email", json!(c.email)),
                ("name", json!(c.name)),
                ("created", json!(created.timestamp())),
                ("currency", json!("usd")),
                ("balance", json!(0)),
                ("delinquent", json!(false)),
                ("description", Value::Null),
                (
                    "metadata",
                    json!({"salesforce_account_id": c.salesforce_account_id}),
                ),
            ],
        );
        cus.push(v);
        if c.monthly_cents <= 0 {
            continue;
        }
        let sub_id = format!("sub_{:014}", 10_000 + i);
        let canceled = rng.below(8) == 0;
        let status = if canceled {
            "canceled"
        } else if rng.below(10) == 0 {
            "past_due"
        } else {
            "active"
        };
        let start = created + ChronoDuration::days(1);
        let period_start = as_of - ChronoDuration::days(rng.below(30) as i64);
        let mut s = st.clone();
        put(
            &mut s,
            vec![
                ("id", json!(sub_id)),
                ("customer", json!(id)),
                ("status", json!(status)),
                ("currency", json!("usd")),
                ("created", json!(start.timestamp())),
                ("start_date", json!(start.timestamp())),
                ("current_period_start", json!(period_start.timestamp())),
                (
                    "current_period_end",
                    json!((period_start + ChronoDuration::days(30)).timestamp()),
                ),
                ("cancel_at_period_end", json!(false)),
                (
                    "canceled_at",
                    if canceled {
                        json!((as_of - ChronoDuration::days(20)).timestamp())
                    } else {
                        Value::Null
                    },
                ),
                (
                    "ended_at",
                    if canceled {
                        json!((as_of - ChronoDuration::days(20)).timestamp())
                    } else {
                        Value::Null
                    },
                ),
                (
                    "items",
                    json!({"object": "list", "has_more": false, "url": format!("/v1/subscription_items?subscription={sub_id}"),
                "data": [{"id": format!("si_{:014}", i), "object": "subscription_item",
                          "price": {"id": format!("price_{:06}", c.monthly_cents), "object": "price", "unit_amount": c.monthly_cents, "currency": "usd", "recurring": {"interval": "month"}}}]}),
                ),
                ("metadata", json!({})),
            ],
        );
        subs.push(s);
        for m in 0..12i64 {
            let at = as_of - ChronoDuration::days(30 * m + 1);
            if at < start || (canceled && m < 1) {
                continue;
            }
            let inv_id = format!("in_{:010}{:04}", i, m);
            let paid = m > 0 || rng.below(3) != 0;
            let mut v = it.clone();
            put(
                &mut v,
                vec![
                    ("id", json!(inv_id)),
                    ("customer", json!(id)),
                    ("subscription", json!(sub_id)),
                    ("status", json!(if paid { "paid" } else { "open" })),
                    ("number", json!(format!("ACME-{:04}-{m:03}", i))),
                    ("amount_due", json!(c.monthly_cents)),
                    ("amount_paid", json!(if paid { c.monthly_cents } else { 0 })),
                    ("currency", json!("usd")),
                    ("created", json!(at.timestamp())),
                    (
                        "due_date",
                        json!((at + ChronoDuration::days(30)).timestamp()),
                    ),
                    (
                        "period_start",
                        json!((at - ChronoDuration::days(30)).timestamp()),
                    ),
                    ("period_end", json!(at.timestamp())),
                    ("customer_email", json!(c.email)),
                    ("metadata", json!({})),
                ],
            );
            invs.push(v);
            if paid {
                let mut ch = cht.clone();
                put(
                    &mut ch,
                    vec![
                        ("id", json!(format!("ch_{:010}{:04}", i, m))),
                        ("customer", json!(id)),
                        ("amount", json!(c.monthly_cents)),
                        ("amount_captured", json!(c.monthly_cents)),
                        ("amount_refunded", json!(0)),
                        ("currency", json!("usd")),
                        ("status", json!("succeeded")),
                        ("paid", json!(true)),
                        ("refunded", json!(false)),
                        ("failure_code", Value::Null),
                        (
                            "created",
                            json!((at + ChronoDuration::hours(1)).timestamp()),
                        ),
                        ("metadata", json!({})),
                    ],
                );
                chs.push(ch);
            }
        }
    }
    let mut out = StripeData::default();
    for (name, mut list) in [
        ("customers", cus),
        ("subscriptions", subs),
        ("invoices", invs),
        ("charges", chs),
    ] {
        // Newest first; ties broken by id so paging is stable.
        list.sort_by(|a, b| {
            (b["created"].as_i64(), b["id"].as_str())
                .cmp(&(a["created"].as_i64(), a["id"].as_str()))
        });
        out.lists.insert(name, list);
    }
    out
}

#[derive(Debug)]
pub struct FakeState {
    data: StripeData,
    key: Option<String>,
    budget: Budget,
}

pub type Shared = Arc<Mutex<FakeState>>;

pub async fn start(
    data: StripeData,
    key: Option<String>,
    per_second: u64,
    addr: std::net::SocketAddr,
) -> std::io::Result<(joinery_engine::rest::fakekit::FakeServer, Shared)> {
    let state = Arc::new(Mutex::new(FakeState {
        data,
        key,
        budget: Budget::new(per_second, std::time::Duration::from_secs(1)),
    }));
    let router = Router::new()
        .route("/v1/customers", get(|s, h, q| list(s, h, q, "customers")))
        .route(
            "/v1/subscriptions",
            get(|s, h, q| list(s, h, q, "subscriptions")),
        )
        .route("/v1/invoices", get(|s, h, q| list(s, h, q, "invoices")))
        .route("/v1/charges", get(|s, h, q| list(s, h, q, "charges")))
        .with_state(state.clone());
    let server = joinery_engine::rest::fakekit::FakeServer::start(router, addr).await?;
    Ok((server, state))
}

fn error(status: StatusCode, kind: &str, code: Option<&str>, message: &str) -> Response {
    let mut e = json!({"error": {"type": kind, "message": message}});
    if let Some(c) = code {
        e["error"]["code"] = json!(c);
    }
    (status, axum::Json(e)).into_response()
}

fn created_ok(v: &Value, q: &BTreeMap<String, String>) -> Result<bool, String> {
    let t = v["created"].as_i64().unwrap_or(0);
    let num = |k: &str| -> Result<Option<i64>, String> {
        q.get(k)
            .map(|s| {
                s.parse::<i64>()
                    .map_err(|_| format!("Invalid integer: {s}"))
            })
            .transpose()
    };
    Ok(num("created")?.is_none_or(|x| t == x)
        && num("created[gt]")?.is_none_or(|x| t > x)
        && num("created[gte]")?.is_none_or(|x| t >= x)
        && num("created[lt]")?.is_none_or(|x| t < x)
        && num("created[lte]")?.is_none_or(|x| t <= x))
}

async fn list(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
    name: &'static str,
) -> Response {
    let data = {
        let Ok(mut s) = state.lock() else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                None,
                "fake state",
            );
        };
        if let Some(k) = &s.key {
            let got = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if got != format!("Bearer {k}") {
                let shown = got.trim_start_matches("Bearer ");
                let tail: String = shown
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                return error(
                    StatusCode::UNAUTHORIZED,
                    "invalid_request_error",
                    None,
                    &format!("Invalid API Key provided: sk_test_****{tail}"),
                );
            }
        }
        if s.budget.take().is_err() {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                "invalid_request_error",
                Some("rate_limit"),
                "Request rate limit exceeded. Learn more about rate limits here https://stripe.com/docs/rate-limits.",
            );
            r.headers_mut()
                .insert("stripe-should-retry", HeaderValue::from_static("true"));
            return r;
        }
        s.data.lists.get(name).cloned().unwrap_or_default()
    };
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 10,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_invalid_integer"),
                "Invalid integer: limit must be between 1 and 100",
            );
        }
    };
    if name == "subscriptions" {
        const STATUSES: &[&str] = &[
            "active",
            "past_due",
            "unpaid",
            "canceled",
            "incomplete",
            "incomplete_expired",
            "trialing",
            "paused",
            "all",
            "ended",
        ];
        if let Some(s) = q.get("status")
            && !STATUSES.contains(&s.as_str())
        {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                Some("parameter_invalid_string"),
                &format!("Invalid status: must be one of {}", STATUSES.join(", ")),
            );
        }
    }
    let mut items = Vec::new();
    for v in data {
        match created_ok(&v, &q) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("parameter_invalid_integer"),
                    &e,
                );
            }
        }
        if q.get("customer")
            .is_some_and(|c| v["customer"] != c.as_str())
            || q.get("email").is_some_and(|e| v["email"] != e.as_str())
            || q.get("subscription")
                .is_some_and(|s| v["subscription"] != s.as_str())
        {
            continue;
        }
        let status = v["status"].as_str().unwrap_or("");
        let keep = match (name, q.get("status").map(String::as_str)) {
            ("subscriptions", None) => status != "canceled" && status != "incomplete_expired",
            ("subscriptions", Some("all")) => true,
            ("subscriptions", Some("ended")) => {
                status == "canceled" || status == "incomplete_expired"
            }
            (_, Some(s)) => status == s,
            (_, None) => true,
        };
        if keep {
            items.push(v);
        }
    }
    let start = match q.get("starting_after") {
        None => 0,
        Some(id) => match items.iter().position(|v| v["id"] == id.as_str()) {
            Some(p) => p + 1,
            None => {
                let what = name.trim_end_matches('s');
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("resource_missing"),
                    &format!("No such {what}: '{id}'"),
                );
            }
        },
    };
    let page: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
    let has_more = start + page.len() < items.len();
    axum::Json(
        json!({"object": "list", "url": format!("/v1/{name}"), "has_more": has_more, "data": page}),
    )
    .into_response()
}
