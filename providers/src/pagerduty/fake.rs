//! A fake of PagerDuty's REST API v2 (`/incidents`, `/services`), after its documented
//! behaviour: `Token token=` auth (401 with PagerDuty's error body otherwise), classic
//! `offset`/`limit` paging (default 25, at most 100) with `more` and `total: null` unless
//! `total=true`, repeated `statuses[]`/`urgencies[]`/`service_ids[]`, the default one-month
//! window over `created_at` unless `date_range=all`, `since`/`until` limited to six months, and
//! `ratelimit-*` headers with 429 when the per-minute budget is spent.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use joinery_engine::rest::fakekit::Budget;
use serde_json::{Value, json};

use crate::fakeutil::{Rng, parse_time, template, ts};

const INCIDENT: &str = include_str!("examples/pagerduty_incident.json");
const SERVICE: &str = include_str!("examples/pagerduty_service.json");

/// A service of the demo world: its PagerDuty id and name.
#[derive(Debug, Clone)]
pub struct ServiceDef {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Default)]
pub struct PagerdutyData {
    pub services: Vec<Value>,
    /// Oldest first.
    pub incidents: Vec<Value>,
    /// The fake's "now": the default window ends here.
    pub now: DateTime<Utc>,
}

/// `per_service * scale` incidents per service over the 200 days before `as_of`; priorities
/// P0..P3; the newest ones still triggered or acknowledged.
pub fn generate(
    seed: u64,
    as_of: DateTime<Utc>,
    services: &[ServiceDef],
    per_service: u64,
    scale: u64,
) -> PagerdutyData {
    let mut rng = Rng(seed ^ 0x7061_6765_7264);
    let inc_t = template(INCIDENT);
    let svc_t = template(SERVICE);
    let mut out = PagerdutyData {
        now: as_of,
        ..Default::default()
    };
    for s in services {
        let mut v = svc_t.clone();
        if let Some(o) = v.as_object_mut() {
            o.insert("id".into(), json!(s.id));
            o.insert("name".into(), json!(s.name));
            o.insert("summary".into(), json!(s.name));
            o.insert(
                "description".into(),
                json!(format!("{} (production)", s.name)),
            );
            o.insert(
                "self".into(),
                json!(format!("https://api.pagerduty.com/services/{}", s.id)),
            );
            o.insert(
                "html_url".into(),
                json!(format!(
                    "https://acme.pagerduty.com/service-directory/{}",
                    s.id
                )),
            );
            o.insert("created_at".into(), json!("2023-11-06T11:12:51-05:00"));
            o.insert("status".into(), json!("active"));
        }
        out.services.push(v);
    }
    let mut number = 1000i64;
    let mut all = Vec::new();
    for s in services {
        for _ in 0..per_service * scale {
            number += 1;
            let created = as_of - ChronoDuration::minutes(rng.below(200 * 24 * 60) as i64);
            let age_h = (as_of - created).num_hours();
            let status = if age_h < 14 * 24 && rng.below(5) < 3 {
                if rng.below(2) == 0 {
                    "triggered"
                } else {
                    "acknowledged"
                }
            } else {
                "resolved"
            };
            let priority = ["P0", "P1", "P2", "P3"][(rng.below(100) as usize * 4 / 100).min(3)];
            let priority = if rng.below(10) == 0 {
                None
            } else {
                Some(priority)
            };
            let urgency = if matches!(priority, Some("P0") | Some("P1")) {
                "high"
            } else {
                "low"
            };
            let resolved_at = (status == "resolved")
                .then(|| created + ChronoDuration::minutes(10 + rng.below(600) as i64));
            let id = format!("Q{number:06}");
            let title = format!(
                "{} {}",
                s.name,
                rng.pick(&[
                    "latency above SLO",
                    "error rate spike",
                    "5xx from upstream",
                    "queue backlog",
                    "disk almost full"
                ])
            );
            let mut v = inc_t.clone();
            if let Some(o) = v.as_object_mut() {
                o.insert("id".into(), json!(id));
                o.insert("incident_number".into(), json!(number));
                o.insert("title".into(), json!(title));
                o.insert("summary".into(), json!(format!("[#{number}] {title}")));
                o.insert(
                    "self".into(),
                    json!(format!("https://api.pagerduty.com/incidents/{id}")),
                );
                o.insert(
                    "html_url".into(),
                    json!(format!("https://acme.pagerduty.com/incidents/{id}")),
                );
                o.insert("created_at".into(), json!(ts(created)));
                o.insert(
                    "updated_at".into(),
                    json!(ts(resolved_at.unwrap_or(created))),
                );
                o.insert(
                    "last_status_change_at".into(),
                    json!(ts(resolved_at.unwrap_or(created))),
                );
                o.insert(
                    "resolved_at".into(),
                    resolved_at.map(|t| json!(ts(t))).unwrap_or(Value::Null),
                );
                o.insert("status".into(), json!(status));
                o.insert("urgency".into(), json!(urgency));
                o.insert(
                    "incident_key".into(),
                    json!(format!("{:032x}", rng.next_u64() as u128 * 7919)),
                );
                o.insert(
                    "service".into(),
                    json!({"id": s.id, "type": "service_reference", "summary": s.name,
                    "self": format!("https://api.pagerduty.com/services/{}", s.id),
                    "html_url": format!("https://acme.pagerduty.com/service-directory/{}", s.id)}),
                );
                o.insert("priority".into(), match priority {
                    Some(p) => json!({"id": format!("PPRI{}", &p[1..]), "type": "priority_reference", "summary": p}),
                    None => Value::Null,
                });
                o.insert("assignments".into(), if status == "resolved" { json!([]) } else {
                    json!([{"at": ts(created), "assignee": {"id": "PUSR01", "type": "user_reference", "summary": "On-call Engineer"}}])
                });
            }
            all.push((created, v));
        }
    }
    all.sort_by_key(|(t, _)| *t);
    // The world always has one open P0: on the second service, two hours old.
    if let Some(s) = services.get(1 % services.len().max(1)) {
        let created = as_of - ChronoDuration::hours(2);
        if let Some((t, v)) = all
            .iter_mut()
            .rev()
            .find(|(_, v)| v["service"]["id"] == s.id.as_str())
        {
            *t = created;
            if let Some(o) = v.as_object_mut() {
                let number = o.get("incident_number").cloned().unwrap_or(json!(0));
                let title = format!("{} checkout failures for EU customers", s.name);
                o.insert("title".into(), json!(title));
                o.insert("summary".into(), json!(format!("[#{number}] {title}")));
                o.insert("status".into(), json!("triggered"));
                o.insert("urgency".into(), json!("high"));
                o.insert(
                    "priority".into(),
                    json!({"id": "PPRI0", "type": "priority_reference", "summary": "P0"}),
                );
                o.insert("created_at".into(), json!(ts(created)));
                o.insert("updated_at".into(), json!(ts(created)));
                o.insert("last_status_change_at".into(), json!(ts(created)));
                o.insert("resolved_at".into(), Value::Null);
            }
        }
        all.sort_by_key(|(t, _)| *t);
    }
    out.incidents = all.into_iter().map(|(_, v)| v).collect();
    out
}

#[derive(Debug)]
pub struct FakeState {
    data: PagerdutyData,
    token: Option<String>,
    budget: Budget,
}

impl FakeState {
    /// Shorten (or lengthen) the rate-limit window, a minute by default.
    pub fn set_rate_window(&mut self, window: std::time::Duration) {
        self.budget.set_window(window);
    }

    /// Requests answered 429 so far.
    pub fn rate_limited(&self) -> u64 {
        self.budget.refused()
    }
}

pub type Shared = Arc<Mutex<FakeState>>;

pub fn router(data: PagerdutyData, token: Option<String>, per_minute: u64) -> (Router, Shared) {
    let state = Arc::new(Mutex::new(FakeState {
        data,
        token,
        budget: Budget::new(per_minute, std::time::Duration::from_secs(60)),
    }));
    let r = Router::new()
        .route("/incidents", get(incidents))
        .route("/services", get(services))
        .with_state(state.clone());
    (r, state)
}

pub async fn start(
    data: PagerdutyData,
    token: Option<String>,
    per_minute: u64,
    addr: std::net::SocketAddr,
) -> std::io::Result<(joinery_engine::rest::fakekit::FakeServer, Shared)> {
    let (router, state) = router(data, token, per_minute);
    let server = joinery_engine::rest::fakekit::FakeServer::start(router, addr).await?;
    Ok((server, state))
}

fn error(status: StatusCode, code: u64, message: &str, errors: &[&str]) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "code": code, "errors": errors}})),
    )
        .into_response()
}

type Params = Vec<(String, String)>;
type RateHeaders = Vec<(&'static str, String)>;

fn all(q: &Params, k: &str) -> Vec<String> {
    q.iter()
        .filter(|(n, _)| n == k)
        .map(|(_, v)| v.clone())
        .collect()
}

fn one<'a>(q: &'a Params, k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Auth and the per-minute budget; the `ratelimit-*` headers on success.
fn admit(
    state: &Shared,
    headers: &HeaderMap,
) -> Result<(RateHeaders, PagerdutyData), Box<Response>> {
    let Ok(mut s) = state.lock() else {
        return Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            2000,
            "Internal Error",
            &[],
        )));
    };
    if let Some(t) = &s.token {
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if got != format!("Token token={t}") {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                2006,
                "Unauthorized",
                &[],
            )));
        }
    }
    let limit = s.budget.limit();
    let remaining = match s.budget.take() {
        Ok(r) => r,
        Err(reset) => {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                2020,
                "Rate Limit Exceeded",
                &[],
            );
            for (k, v) in [
                ("ratelimit-limit", limit.to_string()),
                ("ratelimit-remaining", "0".into()),
                ("ratelimit-reset", reset.to_string()),
            ] {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    r.headers_mut().insert(k, v);
                }
            }
            return Err(Box::new(r));
        }
    };
    let hs = vec![
        ("ratelimit-limit", limit.to_string()),
        ("ratelimit-remaining", remaining.to_string()),
        ("ratelimit-reset", s.budget.reset_secs().to_string()),
    ];
    Ok((hs, s.data.clone()))
}

fn respond(body: Value, hs: Vec<(&'static str, String)>) -> Response {
    let mut r = axum::Json(body).into_response();
    for (k, v) in hs {
        if let Ok(v) = HeaderValue::from_str(&v) {
            r.headers_mut().insert(k, v);
        }
    }
    r
}

fn page(items: Vec<Value>, q: &Params, key: &str) -> Result<Value, Box<Response>> {
    let limit = match one(q, "limit").map(str::parse::<usize>) {
        None => 25,
        Some(Ok(n)) if (1..=100).contains(&n) => n,
        Some(_) => {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                2001,
                "Invalid Input Provided",
                &["Limit must be between 1 and 100"],
            )));
        }
    };
    let offset = one(q, "offset")
        .and_then(|o| o.parse::<usize>().ok())
        .unwrap_or(0);
    let total = items.len();
    let chunk: Vec<Value> = items.into_iter().skip(offset).take(limit).collect();
    let more = offset + chunk.len() < total;
    let with_total = one(q, "total") == Some("true");
    Ok(json!({
        key: chunk, "limit": limit, "offset": offset, "more": more,
        "total": if with_total { json!(total) } else { Value::Null }
    }))
}

async fn incidents(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    let (hs, data) = match admit(&state, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let statuses = all(&q, "statuses[]");
    let urgencies = all(&q, "urgencies[]");
    let services = all(&q, "service_ids[]");
    let bad = |m: &str| {
        error(
            StatusCode::BAD_REQUEST,
            2001,
            "Invalid Input Provided",
            &[m],
        )
    };
    for s in &statuses {
        if !["triggered", "acknowledged", "resolved"].contains(&s.as_str()) {
            return bad("Statuses must be triggered, acknowledged or resolved");
        }
    }
    // The window over created_at: everything with date_range=all, else since..until with a
    // one-month default, at most six months.
    let window = if one(&q, "date_range") == Some("all") {
        None
    } else {
        let until = match one(&q, "until").map(parse_time) {
            None => data.now,
            Some(Some(t)) => t,
            Some(None) => return bad("Until must be a date"),
        };
        let since = match one(&q, "since").map(parse_time) {
            None => until - ChronoDuration::days(30),
            Some(Some(t)) => t,
            Some(None) => return bad("Since must be a date"),
        };
        if until - since > ChronoDuration::days(183) {
            return bad("Date range is over 6 months");
        }
        Some((since, until))
    };
    // sort_by=field[:asc|:desc], one of PagerDuty's sortable fields.
    let mut order: Option<(String, bool)> = None;
    if let Some(sb) = one(&q, "sort_by") {
        let (field, dir) = sb.split_once(':').unwrap_or((sb, "asc"));
        if !["incident_number", "created_at", "resolved_at", "urgency"].contains(&field)
            || !["asc", "desc"].contains(&dir)
        {
            return bad("Sort by must be incident_number, created_at, resolved_at or urgency");
        }
        order = Some((field.to_string(), dir == "desc"));
    }
    let mut items: Vec<Value> = data
        .incidents
        .into_iter()
        .filter(|i| statuses.is_empty() || statuses.iter().any(|s| i["status"] == s.as_str()))
        .filter(|i| urgencies.is_empty() || urgencies.iter().any(|s| i["urgency"] == s.as_str()))
        .filter(|i| {
            services.is_empty() || services.iter().any(|s| i["service"]["id"] == s.as_str())
        })
        .filter(|i| {
            window.is_none_or(|(since, until)| {
                i["created_at"]
                    .as_str()
                    .and_then(parse_time)
                    .is_some_and(|t| t >= since && t < until)
            })
        })
        .collect();
    if let Some((field, desc)) = order {
        let key = |i: &Value| -> (Option<i64>, String) {
            match &i[&field] {
                Value::Number(n) => (n.as_i64(), String::new()),
                Value::String(s) => (
                    None,
                    parse_time(s).map(|t| t.to_rfc3339()).unwrap_or(s.clone()),
                ),
                _ => (None, String::new()),
            }
        };
        items.sort_by(|a, b| {
            let o = key(a).cmp(&key(b));
            if desc { o.reverse() } else { o }
        });
    }
    match page(items, &q, "incidents") {
        Ok(body) => respond(body, hs),
        Err(r) => *r,
    }
}

async fn services(
    State(state): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<Params>,
) -> Response {
    let (hs, data) = match admit(&state, &headers) {
        Ok(x) => x,
        Err(r) => return *r,
    };
    let query = one(&q, "query").map(str::to_lowercase);
    let items: Vec<Value> = data
        .services
        .into_iter()
        .filter(|s| {
            query.as_deref().is_none_or(|needle| {
                s["name"]
                    .as_str()
                    .is_some_and(|n| n.to_lowercase().contains(needle))
            })
        })
        .collect();
    match page(items, &q, "services") {
        Ok(body) => respond(body, hs),
        Err(r) => *r,
    }
}
