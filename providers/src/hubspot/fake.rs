//! A fake of HubSpot's CRM v3 objects API: the list endpoint (`limit` ≤ 100, default 10,
//! `after` cursor, only the default properties unless `properties=` names more, `paging`
//! absent on the last page) and the search endpoint (`filterGroups` in DNF with `EQ`, `NEQ`,
//! `GT`/`GTE`/`LT`/`LTE`, `BETWEEN`, `IN`/`NOT_IN`, `HAS_PROPERTY`/`NOT_HAS_PROPERTY`;
//! case-insensitive string matching; at most 5 groups and 6 filters per group; `limit` ≤ 200;
//! 400 past 10,000 results), every property value a string, Bearer auth.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use joinery_engine::rest::fakekit::Budget;
use serde_json::{Value, json};

use crate::fakeutil::parse_time;

/// object -> records `{id, properties, createdAt, updatedAt, archived}` (ascending id).
#[derive(Debug, Clone, Default)]
pub struct HubspotData {
    pub objects: BTreeMap<String, Vec<Value>>,
}

/// The properties every list answer carries without `properties=`.
const DEFAULTS: &[&str] = &[
    "createdate",
    "hs_lastmodifieddate",
    "lastmodifieddate",
    "hs_object_id",
    "name",
    "domain",
    "email",
    "firstname",
    "lastname",
    "dealname",
    "amount",
    "dealstage",
    "pipeline",
    "closedate",
];

/// A record with string-typed properties.
pub fn record(id: u64, props: &[(&str, Option<String>)], created: DateTime<Utc>) -> Value {
    let mut p = serde_json::Map::new();
    for (k, v) in props {
        p.insert(
            (*k).to_string(),
            v.clone().map(Value::String).unwrap_or(Value::Null),
        );
    }
    let ts = created.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    p.insert("hs_object_id".into(), json!(id.to_string()));
    p.insert("createdate".into(), json!(ts));
    json!({"id": id.to_string(), "properties": p, "createdAt": ts, "updatedAt": ts, "archived": false})
}

#[derive(Debug)]
pub struct FakeState {
    data: HubspotData,
    token: Option<String>,
    /// Private-app budget: 100 requests per rolling 10 seconds (Free/Starter).
    budget: Budget,
}

impl FakeState {
    /// Change the request budget (`limit` per `window`).
    pub fn set_rate_limit(&mut self, limit: u64, window: std::time::Duration) {
        self.budget = Budget::new(limit, window);
    }

    /// Requests answered 429 so far.
    pub fn rate_limited(&self) -> u64 {
        self.budget.refused()
    }
}

pub type Shared = Arc<Mutex<FakeState>>;

pub async fn start(
    data: HubspotData,
    token: Option<String>,
    addr: std::net::SocketAddr,
) -> std::io::Result<(joinery_engine::rest::fakekit::FakeServer, Shared)> {
    let state = Arc::new(Mutex::new(FakeState {
        data,
        token,
        budget: Budget::new(100, std::time::Duration::from_secs(10)),
    }));
    let router = Router::new()
        .route("/crm/v3/objects/{object}", get(list))
        .route("/crm/v3/objects/{object}/search", post(search))
        .with_state(state.clone());
    let server = joinery_engine::rest::fakekit::FakeServer::start(router, addr).await?;
    Ok((server, state))
}

fn error(status: StatusCode, category: &str, message: &str) -> Response {
    (status, axum::Json(json!({"status": "error", "message": message, "correlationId": "fake-0001", "category": category}))).into_response()
}

fn admit(state: &Shared, headers: &HeaderMap, object: &str) -> Result<Vec<Value>, Box<Response>> {
    let Ok(mut s) = state.lock() else {
        return Err(Box::new(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_ERROR",
            "fake state",
        )));
    };
    if let Some(t) = &s.token {
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if got != format!("Bearer {t}") {
            return Err(Box::new(error(
                StatusCode::UNAUTHORIZED,
                "INVALID_AUTHENTICATION",
                "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            )));
        }
    }
    if s.budget.take().is_err() {
        // HubSpot's 429 carries no Retry-After: the client backs off.
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": "00000000-0000-4000-8000-000000000000",
                "policyName": "TEN_SECONDLY_ROLLING"
            })),
        )
            .into_response();
        for (k, v) in [
            ("x-hubspot-ratelimit-max", s.budget.limit().to_string()),
            ("x-hubspot-ratelimit-remaining", "0".to_string()),
            (
                "x-hubspot-ratelimit-interval-milliseconds",
                "10000".to_string(),
            ),
        ] {
            if let Ok(v) = HeaderValue::from_str(&v) {
                r.headers_mut().insert(k, v);
            }
        }
        return Err(Box::new(r));
    }
    s.data.objects.get(object).cloned().ok_or_else(|| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("Unable to infer object type from: {object}"),
        ))
    })
}

/// Only `wanted` properties (or the defaults), as HubSpot answers.
fn with_properties(r: &Value, wanted: Option<&[String]>) -> Value {
    let mut out = r.clone();
    let mut p = serde_json::Map::new();
    if let Some(src) = r["properties"].as_object() {
        for (k, v) in src {
            let keep = match wanted {
                Some(w) => w.iter().any(|x| x == k) || k == "hs_object_id" || k == "createdate",
                None => DEFAULTS.contains(&k.as_str()),
            };
            if keep {
                p.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(w) = wanted {
        for k in w {
            p.entry(k.clone()).or_insert(Value::Null);
        }
    }
    out["properties"] = Value::Object(p);
    out
}

async fn list(
    State(state): State<Shared>,
    Path(object): Path<String>,
    headers: HeaderMap,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let records = match admit(&state, &headers, &object) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let after = q
        .get("after")
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(0);
    let wanted: Option<Vec<String>> = q
        .get("properties")
        .map(|p| p.split(',').map(str::to_string).collect());
    let page: Vec<Value> = records
        .iter()
        .filter(|r| {
            r["id"]
                .as_str()
                .and_then(|i| i.parse::<u64>().ok())
                .unwrap_or(0)
                > after
        })
        .take(limit + 1)
        .cloned()
        .collect();
    let more = page.len() > limit;
    let page: Vec<Value> = page
        .into_iter()
        .take(limit)
        .map(|r| with_properties(&r, wanted.as_deref()))
        .collect();
    let mut body = json!({"results": page});
    if more
        && let Some(last) = body["results"]
            .as_array()
            .and_then(|a| a.last())
            .map(|r| r["id"].clone())
    {
        body["paging"] = json!({"next": {"after": last, "link": format!("?after={}", last.as_str().unwrap_or(""))}});
    }
    axum::Json(body).into_response()
}

fn compare(actual: &str, wanted: &str) -> Option<std::cmp::Ordering> {
    if let (Ok(a), Ok(b)) = (actual.parse::<f64>(), wanted.parse::<f64>()) {
        return a.partial_cmp(&b);
    }
    if let (Some(a), Some(b)) = (parse_time(actual), parse_time(wanted)) {
        return Some(a.cmp(&b));
    }
    Some(actual.to_lowercase().cmp(&wanted.to_lowercase()))
}

fn filter_ok(r: &Value, f: &Value) -> Result<bool, String> {
    let name = f["propertyName"]
        .as_str()
        .ok_or("filter without propertyName")?;
    let v = r["properties"][name].as_str();
    let op = f["operator"].as_str().ok_or("filter without operator")?;
    let val = f["value"]
        .as_str()
        .map(str::to_string)
        .or_else(|| f["value"].as_f64().map(|x| x.to_string()));
    let cmp = |w: &str| v.and_then(|a| compare(a, w));
    Ok(match op {
        "HAS_PROPERTY" => v.is_some_and(|s| !s.is_empty()),
        "NOT_HAS_PROPERTY" => v.is_none_or(str::is_empty),
        "EQ" => cmp(val.as_deref().ok_or("EQ needs value")?).is_some_and(|o| o.is_eq()),
        "NEQ" => cmp(val.as_deref().ok_or("NEQ needs value")?).is_none_or(|o| o.is_ne()),
        "GT" => cmp(val.as_deref().ok_or("GT needs value")?).is_some_and(|o| o.is_gt()),
        "GTE" => cmp(val.as_deref().ok_or("GTE needs value")?).is_some_and(|o| o.is_ge()),
        "LT" => cmp(val.as_deref().ok_or("LT needs value")?).is_some_and(|o| o.is_lt()),
        "LTE" => cmp(val.as_deref().ok_or("LTE needs value")?).is_some_and(|o| o.is_le()),
        "BETWEEN" => {
            let hi = f["highValue"].as_str().ok_or("BETWEEN needs highValue")?;
            cmp(val.as_deref().ok_or("BETWEEN needs value")?).is_some_and(|o| o.is_ge())
                && cmp(hi).is_some_and(|o| o.is_le())
        }
        "IN" | "NOT_IN" => {
            let values = f["values"].as_array().ok_or("IN needs values")?;
            let hit = values
                .iter()
                .filter_map(Value::as_str)
                .any(|w| cmp(w).is_some_and(|o| o.is_eq()));
            if op == "IN" { hit } else { !hit }
        }
        other => return Err(format!("Unsupported operator {other}")),
    })
}

async fn search(
    State(state): State<Shared>,
    Path(object): Path<String>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let records = match admit(&state, &headers, &object) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let groups = body["filterGroups"].as_array().cloned().unwrap_or_default();
    if groups.len() > 5
        || groups
            .iter()
            .any(|g| g["filters"].as_array().is_some_and(|f| f.len() > 6))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "Too many filters: at most 5 filter groups with 6 filters each.",
        );
    }
    let limit = body["limit"].as_u64().unwrap_or(10) as usize;
    if !(1..=200).contains(&limit) {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "limit must be between 1 and 200",
        );
    }
    let after = body["after"]
        .as_str()
        .and_then(|a| a.parse::<usize>().ok())
        .or_else(|| body["after"].as_u64().map(|a| a as usize))
        .unwrap_or(0);
    if after + limit > 10_000 {
        return error(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "The search API returns at most 10,000 results; narrow the filters (for example on createdate).",
        );
    }
    let mut hits = Vec::new();
    for r in &records {
        let mut any = groups.is_empty();
        for g in &groups {
            let mut all = true;
            for f in g["filters"].as_array().into_iter().flatten() {
                match filter_ok(r, f) {
                    Ok(true) => {}
                    Ok(false) => {
                        all = false;
                        break;
                    }
                    Err(e) => return error(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", &e),
                }
            }
            if all {
                any = true;
                break;
            }
        }
        if any {
            hits.push(r.clone());
        }
    }
    let wanted: Option<Vec<String>> = body["properties"].as_array().map(|a| {
        a.iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect()
    });
    let total = hits.len();
    let page: Vec<Value> = hits
        .iter()
        .skip(after)
        .take(limit)
        .map(|r| with_properties(r, wanted.as_deref()))
        .collect();
    let mut out = json!({"total": total, "results": page});
    if after + limit < total {
        out["paging"] = json!({"next": {"after": (after + limit).to_string()}});
    }
    axum::Json(out).into_response()
}
