//! A fake of Slack's Web API (`conversations.list`, `conversations.history`, `users.list`):
//! Bearer auth, errors as HTTP 200 with `"ok": false`, cursor paging where pages are sometimes
//! shorter than `limit` (even empty) without being the end and `next_cursor` is `""` at the
//! end, newest-first history with *exclusive* `oldest`/`latest` unless `inclusive=true`, and 429
//! with `Retry-After` when the per-minute budget is spent.

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

use crate::fakeutil::Rng;

#[derive(Debug, Clone, Default)]
pub struct SlackData {
    pub channels: Vec<Value>,
    pub users: Vec<Value>,
    /// channel id -> messages, newest first
    pub messages: BTreeMap<String, Vec<Value>>,
}

/// `(channel name, purpose)` pairs as channels (incident channels included), `users`, and
/// `per_channel` messages each over the 30 days before `as_of`.
pub fn generate(
    seed: u64,
    as_of: DateTime<Utc>,
    channels: &[(&str, &str)],
    users: &[&str],
    per_channel: u64,
) -> SlackData {
    let mut rng = Rng(seed ^ 0x736c_6163);
    let mut out = SlackData::default();
    for (i, u) in users.iter().enumerate() {
        out.users.push(json!({"id": format!("U{:08}", i + 1), "team_id": "T0001", "name": u, "deleted": false,
            "real_name": u, "tz": "Europe/Berlin", "tz_offset": 3600, "is_admin": i == 0, "is_bot": false,
            "profile": {"email": format!("{u}@acme.dev"), "display_name": u, "real_name": u}, "updated": 1_700_000_000}));
    }
    for (i, (name, purpose)) in channels.iter().enumerate() {
        let id = format!("C{:08}", i + 1);
        out.channels.push(json!({"id": id, "name": name, "is_channel": true, "is_private": name.starts_with("inc-"),
            "is_archived": false, "is_member": true, "num_members": 3 + i, "created": 1_600_000_000 + i as i64 * 86_400,
            "creator": "U00000001", "topic": {"value": "", "creator": "", "last_set": 0},
            "purpose": {"value": purpose, "creator": "U00000001", "last_set": 1_600_000_000}}));
        let mut msgs = Vec::new();
        for _ in 0..per_channel {
            let at =
                as_of - ChronoDuration::microseconds(rng.below(30 * 86_400 * 1_000_000) as i64);
            let ts = format!("{}.{:06}", at.timestamp(), at.timestamp_subsec_micros());
            let user = if users.is_empty() {
                "U00000001".to_string()
            } else {
                format!("U{:08}", 1 + rng.below(users.len() as u64))
            };
            msgs.push(json!({"type": "message", "user": user, "ts": ts,
                "text": format!("{} {}", rng.pick(&["Looking into", "Deployed a fix for", "Customer reports", "Rolling back"]), rng.pick(&["checkout errors", "latency", "the webhook queue", "PAY-12"]))}));
        }
        msgs.sort_by(|a, b| b["ts"].as_str().cmp(&a["ts"].as_str()));
        out.messages.insert(id, msgs);
    }
    out
}

#[derive(Debug)]
pub struct FakeState {
    data: SlackData,
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

pub async fn start(
    data: SlackData,
    token: Option<String>,
    per_minute: u64,
    addr: std::net::SocketAddr,
) -> std::io::Result<(joinery_engine::rest::fakekit::FakeServer, Shared)> {
    let state = Arc::new(Mutex::new(FakeState {
        data,
        token,
        budget: Budget::new(per_minute, std::time::Duration::from_secs(60)),
    }));
    let router = Router::new()
        .route("/api/conversations.list", get(channels))
        .route("/api/users.list", get(users))
        .route("/api/conversations.history", get(history))
        .with_state(state.clone());
    let server = joinery_engine::rest::fakekit::FakeServer::start(router, addr).await?;
    Ok((server, state))
}

fn not_ok(error: &str) -> Response {
    axum::Json(json!({"ok": false, "error": error})).into_response()
}

type Q = Query<BTreeMap<String, String>>;

fn admit(state: &Shared, headers: &HeaderMap) -> Result<SlackData, Box<Response>> {
    let Ok(mut s) = state.lock() else {
        return Err(Box::new(not_ok("internal_error")));
    };
    if let Some(t) = &s.token {
        let got = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if got.is_empty() {
            return Err(Box::new(not_ok("not_authed")));
        }
        if got != format!("Bearer {t}") {
            return Err(Box::new(not_ok("invalid_auth")));
        }
    }
    if let Err(reset) = s.budget.take() {
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            axum::Json(json!({"ok": false, "error": "ratelimited"})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
            r.headers_mut().insert("retry-after", v);
        }
        return Err(Box::new(r));
    }
    Ok(s.data.clone())
}

/// A page from `cursor` (opaque: `dXNlcjo` + offset); every second page is half as long as
/// asked, without being the last.
fn page(
    items: &[Value],
    q: &BTreeMap<String, String>,
) -> Result<(Vec<Value>, String), Box<Response>> {
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100)
        .clamp(1, 1000);
    let start = match q.get("cursor").filter(|c| !c.is_empty()) {
        None => 0,
        Some(c) => c
            .strip_prefix("dXNlcjo")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| Box::new(not_ok("invalid_cursor")))?,
    };
    let take = if (start / limit) % 2 == 1 {
        limit.div_ceil(2)
    } else {
        limit
    };
    let chunk: Vec<Value> = items.iter().skip(start).take(take).cloned().collect();
    let end = start + chunk.len();
    let next = if end < items.len() {
        format!("dXNlcjo{end}")
    } else {
        String::new()
    };
    Ok((chunk, next))
}

async fn channels(State(state): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    let data = match admit(&state, &headers) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let types: Vec<&str> = q
        .get("types")
        .map(|t| t.split(',').collect())
        .unwrap_or_else(|| vec!["public_channel"]);
    let items: Vec<Value> = data
        .channels
        .into_iter()
        .filter(|c| {
            if c["is_private"] == true {
                types.contains(&"private_channel")
            } else {
                types.contains(&"public_channel")
            }
        })
        .filter(|c| {
            q.get("exclude_archived").map(String::as_str) != Some("true")
                || c["is_archived"] == false
        })
        .collect();
    match page(&items, &q) {
        Ok((chunk, next)) => axum::Json(
            json!({"ok": true, "channels": chunk, "response_metadata": {"next_cursor": next}}),
        )
        .into_response(),
        Err(r) => *r,
    }
}

async fn users(State(state): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    let data = match admit(&state, &headers) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    match page(&data.users, &q) {
        Ok((chunk, next)) => axum::Json(json!({"ok": true, "members": chunk, "cache_ts": 1_498_777_272, "response_metadata": {"next_cursor": next}})).into_response(),
        Err(r) => *r,
    }
}

fn ts_micros(s: &str) -> Option<i64> {
    let (a, b) = s.split_once('.').unwrap_or((s, "0"));
    let frac = format!("{b:0<6}");
    Some(a.parse::<i64>().ok()? * 1_000_000 + frac.get(..6)?.parse::<i64>().ok()?)
}

async fn history(State(state): State<Shared>, headers: HeaderMap, Query(q): Q) -> Response {
    let data = match admit(&state, &headers) {
        Ok(d) => d,
        Err(r) => return *r,
    };
    let Some(channel) = q.get("channel") else {
        return not_ok("invalid_arguments");
    };
    let Some(msgs) = data.messages.get(channel) else {
        return not_ok("channel_not_found");
    };
    let inclusive = q.get("inclusive").map(String::as_str) == Some("true");
    let bound = |k: &str| q.get(k).map(|v| ts_micros(v));
    let (oldest, latest) = (bound("oldest"), bound("latest"));
    if matches!(oldest, Some(None)) {
        return not_ok("invalid_ts_oldest");
    }
    if matches!(latest, Some(None)) {
        return not_ok("invalid_ts_latest");
    }
    let items: Vec<Value> = msgs
        .iter()
        .filter(|m| {
            let t = m["ts"].as_str().and_then(ts_micros).unwrap_or(0);
            oldest
                .flatten()
                .is_none_or(|o| if inclusive { t >= o } else { t > o })
                && latest
                    .flatten()
                    .is_none_or(|l| if inclusive { t <= l } else { t < l })
        })
        .cloned()
        .collect();
    match page(&items, &q) {
        Ok((chunk, next)) => {
            let has_more = !next.is_empty();
            axum::Json(
                json!({"ok": true, "messages": chunk, "has_more": has_more, "pin_count": 0,
                "response_metadata": {"next_cursor": next}}),
            )
            .into_response()
        }
        Err(r) => *r,
    }
}
