//! A generic fake JSON API for tests and benchmarks: serves a list of records under `/items` in
//! any of the pagination styles real APIs use, answers a few filters with the API-side
//! semantics, counts and records every request, and injects faults (429 with and without
//! Retry-After, 5xx, GitHub's 403 with zero remaining, delays, malformed and truncated bodies).
//! Connector-specific fakes live with their connectors; this one exercises the toolkit.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::decode::parse_timestamp;
use super::spec::TimeFormat;

/// The pagination style `/items` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `per_page`/`page`, `Link: <...>; rel="next"`; body is the array (GitHub).
    Link,
    /// `limit`/`cursor`; `{"data": [...], "next_cursor": "..."}`, "" at the end (Slack). Pages
    /// are sometimes shorter than `limit` without being the end.
    Cursor,
    /// `limit`/`offset`; `{"items": [...], "more": bool}` (PagerDuty).
    Offset,
    /// `{"records": [...], "done": bool, "nextRecordsUrl": "..."}` (Salesforce).
    NextUrl,
    /// `limit`/`starting_after`; `{"data": [...], "has_more": bool}` (Stripe).
    StartingAfter,
    /// `page`/`per_page`; a bare array, an empty page at the end.
    PageNumber,
}

/// A fault to inject into the next request.
#[derive(Debug, Clone)]
pub enum Fault {
    Status {
        code: u16,
        retry_after: Option<u64>,
    },
    /// 403 with `x-ratelimit-remaining: 0` and a reset `secs` from now.
    GithubRateLimit {
        secs: u64,
    },
    Delay(Duration),
    Malformed,
    Truncated,
    /// The current OAuth access token stops working (the next request gets 401).
    ExpireToken,
    /// The connection drops after the status line, before any body byte.
    Reset,
    /// Half the body arrives, then the connection drops (chunked, so the client can tell).
    CutMidBody,
    /// The page's next cursor is the cursor it was asked for (`Style::Cursor`).
    RepeatCursor,
}

#[derive(Debug, Default)]
struct FakeState {
    records: Vec<Value>,
    style: Option<Style>,
    default_page: usize,
    max_page: usize,
    faults: VecDeque<Fault>,
    requests: Vec<String>,
    /// When each request arrived.
    times: Vec<std::time::Instant>,
    /// Fault applied to every request from this request number on (a dying server).
    die_after: Option<usize>,
    addr: Option<SocketAddr>,
    /// With OAuth on, requests must carry `Bearer <this>`.
    /// Access tokens issued and still valid.
    oauth_tokens: std::collections::HashSet<String>,
    /// The refresh token each refresh-token grant presented, in order.
    refresh_tokens_seen: Vec<String>,
    oauth_on: bool,
    token_grants: usize,
    last_grant_type: Option<String>,
}

/// A running fake; dropping it stops the server.
pub struct FakeApi {
    pub addr: SocketAddr,
    state: Arc<Mutex<FakeState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeApi {
    /// Serve `records` in `style` with pages of `default_page` rows (at most `max_page`).
    pub async fn start(
        style: Style,
        records: Vec<Value>,
        default_page: usize,
        max_page: usize,
    ) -> std::io::Result<FakeApi> {
        let state = Arc::new(Mutex::new(FakeState {
            records,
            style: Some(style),
            default_page,
            max_page,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/items", axum::routing::get(handle))
            .route("/graphql", axum::routing::post(graphql))
            .route("/oauth/token", axum::routing::post(token))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        if let Ok(mut s) = state.lock() {
            s.addr = Some(addr);
        }
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeApi { addr, state, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// Arrival times of the requests so far.
    pub fn request_times(&self) -> Vec<std::time::Instant> {
        self.state
            .lock()
            .map(|s| s.times.clone())
            .unwrap_or_default()
    }

    pub fn request_count(&self) -> usize {
        self.state.lock().map(|s| s.requests.len()).unwrap_or(0)
    }

    pub fn clear_requests(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.requests.clear();
        }
    }

    pub fn inject(&self, f: Fault) {
        if let Ok(mut s) = self.state.lock() {
            s.faults.push_back(f);
        }
    }

    /// Require OAuth bearer tokens issued by `/oauth/token`.
    pub fn require_oauth(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.oauth_on = true;
        }
    }

    /// The refresh tokens presented to the token endpoint, in order.
    pub fn refresh_tokens_seen(&self) -> Vec<String> {
        self.state
            .lock()
            .map(|s| s.refresh_tokens_seen.clone())
            .unwrap_or_default()
    }

    /// Tokens issued so far, and the grant type of the last one.
    pub fn token_grants(&self) -> (usize, Option<String>) {
        self.state
            .lock()
            .map(|s| (s.token_grants, s.last_grant_type.clone()))
            .unwrap_or((0, None))
    }

    /// From the `n`-th request on (counting from now), every request fails with 500.
    pub fn die_after(&self, n: usize) {
        if let Ok(mut s) = self.state.lock() {
            s.die_after = Some(s.requests.len() + n);
        }
    }
}

/// Rows `start..start + n` of the filtered records.
fn slice(all: &[&Value], start: usize, n: usize) -> Vec<Value> {
    all.iter()
        .skip(start)
        .take(n)
        .map(|v| (*v).clone())
        .collect()
}

/// A numeric query parameter, 0 when absent.
fn num(q: &[(String, String)], k: &str) -> usize {
    param(q, k)
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0)
}

fn param<'a>(q: &'a [(String, String)], k: &str) -> Option<&'a str> {
    q.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
}

/// Filters with API semantics: `status` is an exact match (several via `status[]`), `since`
/// keeps `updated_at >= since`, `q` is a case-insensitive substring of `title` (a superset of
/// what SQL `=` would keep, so the engine must re-check).
fn matches(rec: &Value, q: &[(String, String)]) -> bool {
    let statuses: Vec<&str> = q
        .iter()
        .filter(|(k, _)| k == "status" || k == "status[]")
        .map(|(_, v)| v.as_str())
        .collect();
    if !statuses.is_empty()
        && !statuses
            .iter()
            .any(|s| rec.get("status").and_then(Value::as_str) == Some(*s))
    {
        return false;
    }
    if let Some(since) = param(q, "since") {
        let want = parse_timestamp(&json!(since), TimeFormat::Iso8601);
        let have = rec
            .get("updated_at")
            .and_then(|v| parse_timestamp(v, TimeFormat::Iso8601));
        match (want, have) {
            (Some(w), Some(h)) if h >= w => {}
            _ => return false,
        }
    }
    if let Some(sub) = param(q, "q") {
        let title = rec
            .get("title")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_lowercase();
        if !title.contains(&sub.to_lowercase()) {
            return false;
        }
    }
    true
}

/// The OAuth token endpoint: form-encoded `grant_type` of `refresh_token` (with a
/// `refresh_token`) or `client_credentials`; answers a fresh token, a rotated refresh token
/// and an `instance_url`.
async fn token(State(state): State<Arc<Mutex<FakeState>>>, body: String) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let grant = get("grant_type").unwrap_or_default();
    let ok = get("client_id").is_some()
        && match grant.as_str() {
            "refresh_token" => get("refresh_token").is_some_and(|r| r.starts_with("refresh-")),
            "client_credentials" => get("client_secret").is_some(),
            _ => false,
        };
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant"})),
        )
            .into_response();
    }
    s.token_grants += 1;
    if let Some(r) = get("refresh_token") {
        s.refresh_tokens_seen.push(r);
    }
    s.last_grant_type = Some(grant);
    let token = format!("tok-{}", s.token_grants);
    s.oauth_tokens.insert(token.clone());
    let instance = s.addr.map(|a| format!("http://{a}")).unwrap_or_default();
    let body = json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 3600,
        "refresh_token": format!("refresh-{}", s.token_grants),
        "instance_url": instance
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

async fn handle(
    State(state): State<Arc<Mutex<FakeState>>>,
    Query(q): Query<Vec<(String, String)>>,
    uri: axum::http::Uri,
    req_headers: HeaderMap,
) -> Response {
    let (fault, page, headers, body) = {
        let Ok(mut s) = state.lock() else {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        };
        s.requests.push(
            uri.path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
        );
        s.times.push(std::time::Instant::now());
        if s.oauth_on {
            if matches!(s.faults.front(), Some(Fault::ExpireToken)) {
                s.faults.pop_front();
                s.oauth_tokens.clear();
            }
            let sent = req_headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::to_string);
            if !sent.is_some_and(|t| s.oauth_tokens.contains(&t)) {
                return (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"message": "invalid token"})),
                )
                    .into_response();
            }
        }
        let dying = s.die_after.is_some_and(|n| s.requests.len() > n);
        let fault = if dying {
            Some(Fault::Status {
                code: 500,
                retry_after: None,
            })
        } else {
            s.faults.pop_front()
        };
        let mut all: Vec<&Value> = s.records.iter().filter(|r| matches(r, &q)).collect();
        // `sort=<field>&direction=asc|desc`, like GitHub's list endpoints.
        if let Some(field) = param(&q, "sort") {
            let key = |r: &Value| r.get(field).map(|v| v.to_string()).unwrap_or_default();
            all.sort_by_key(|r| key(r));
            if param(&q, "direction") == Some("desc") {
                all.reverse();
            }
        }
        let size = |name: &str| {
            param(&q, name)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(s.default_page)
                .clamp(1, s.max_page)
        };
        let mut headers = HeaderMap::new();
        let style = s.style.unwrap_or(Style::Link);
        let (page, body): (usize, Value) = match style {
            Style::Link | Style::PageNumber => {
                let per = size("per_page");
                let p = param(&q, "page")
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(1)
                    .max(1);
                let chunk: Vec<Value> = slice(&all, (p - 1) * per, per);
                if style == Style::Link && p * per < all.len() {
                    let mut next: Vec<(String, String)> =
                        q.iter().filter(|(k, _)| k != "page").cloned().collect();
                    next.push(("page".into(), (p + 1).to_string()));
                    let qs = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(next)
                        .finish();
                    let host = s.addr.map(|a| a.to_string()).unwrap_or_default();
                    if let Ok(v) =
                        HeaderValue::from_str(&format!("<http://{host}/items?{qs}>; rel=\"next\""))
                    {
                        headers.insert("link", v);
                    }
                }
                (chunk.len(), Value::Array(chunk))
            }
            Style::Cursor => {
                let per = size("limit");
                let asked = param(&q, "cursor").unwrap_or("c0").to_string();
                let repeat = matches!(fault, Some(Fault::RepeatCursor));
                let start = param(&q, "cursor")
                    .and_then(|c| c.strip_prefix("c").and_then(|n| n.parse::<usize>().ok()))
                    .unwrap_or(0);
                // Every third page is short without being the last one.
                let take = if (start / per.max(1)) % 3 == 1 {
                    per.div_ceil(2)
                } else {
                    per
                };
                let chunk: Vec<Value> = slice(&all, start, take);
                let end = start + chunk.len();
                let next = if repeat {
                    asked
                } else if end < all.len() {
                    format!("c{end}")
                } else {
                    String::new()
                };
                (
                    chunk.len(),
                    json!({"ok": true, "data": chunk, "response_metadata": {"next_cursor": next}}),
                )
            }
            Style::Offset => {
                let per = size("limit");
                let off = num(&q, "offset");
                let chunk: Vec<Value> = slice(&all, off, per);
                let more = off + chunk.len() < all.len();
                (
                    chunk.len(),
                    json!({"items": chunk, "limit": per, "offset": off, "more": more}),
                )
            }
            Style::NextUrl => {
                let per = s.default_page.max(1);
                let start = num(&q, "locator");
                let chunk: Vec<Value> = slice(&all, start, per);
                let end = start + chunk.len();
                let done = end >= all.len();
                let mut body = json!({"totalSize": all.len(), "done": done, "records": chunk});
                if !done {
                    let mut next: Vec<(String, String)> =
                        q.iter().filter(|(k, _)| k != "locator").cloned().collect();
                    next.push(("locator".into(), end.to_string()));
                    let qs = url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(next)
                        .finish();
                    body["nextRecordsUrl"] = json!(format!("/items?{qs}"));
                }
                (chunk.len(), body)
            }
            Style::StartingAfter => {
                let per = size("limit");
                let start = match param(&q, "starting_after") {
                    Some(id) => all
                        .iter()
                        .position(|r| {
                            r.get("id")
                                .map(|v| v.to_string().trim_matches('"').to_string())
                                == Some(id.to_string())
                        })
                        .map(|i| i + 1)
                        .unwrap_or(all.len()),
                    None => 0,
                };
                let chunk: Vec<Value> = slice(&all, start, per);
                let more = start + chunk.len() < all.len();
                (
                    chunk.len(),
                    json!({"object": "list", "data": chunk, "has_more": more}),
                )
            }
        };
        (fault, page, headers, body)
    };
    let _ = page;
    match fault {
        None => (StatusCode::OK, headers, axum::Json(body)).into_response(),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, headers, axum::Json(body)).into_response()
        }
        Some(Fault::Status { code, retry_after }) => {
            let mut h = HeaderMap::new();
            if let Some(s) = retry_after
                && let Ok(v) = HeaderValue::from_str(&s.to_string())
            {
                h.insert("retry-after", v);
            }
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, h, axum::Json(json!({"message": "injected fault"}))).into_response()
        }
        Some(Fault::GithubRateLimit { secs }) => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() + secs)
                .unwrap_or(0);
            let mut h = HeaderMap::new();
            h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
                h.insert("x-ratelimit-reset", v);
            }
            (
                StatusCode::FORBIDDEN,
                h,
                axum::Json(json!({"message": "API rate limit exceeded"})),
            )
                .into_response()
        }
        Some(Fault::Malformed) => (StatusCode::OK, "{\"data\": [nope").into_response(),
        Some(Fault::ExpireToken | Fault::RepeatCursor) => {
            (StatusCode::OK, headers, axum::Json(body)).into_response()
        }
        Some(Fault::Reset) => (
            StatusCode::OK,
            super::fakekit::broken_body(bytes::Bytes::new()),
        )
            .into_response(),
        Some(Fault::CutMidBody) => {
            let text = bytes::Bytes::from(body.to_string().into_bytes());
            let half = text.slice(0..text.len() / 2);
            (StatusCode::OK, headers, super::fakekit::broken_body(half)).into_response()
        }
        Some(Fault::Truncated) => {
            let text = body.to_string();
            let cut = text.len() / 2;
            let cut = (0..=cut)
                .rev()
                .find(|i| text.is_char_boundary(*i))
                .unwrap_or(0);
            (StatusCode::OK, text[..cut].to_string()).into_response()
        }
    }
}

/// A GraphQL-style endpoint: `variables.first`, `variables.after` (a cursor) and
/// `variables.status` (a string or a list) over the same records, answered as a Relay
/// connection `{data: {items: {nodes, pageInfo: {hasNextPage, endCursor}}}}`.
async fn graphql(State(state): State<Arc<Mutex<FakeState>>>, body: axum::Json<Value>) -> Response {
    let Ok(mut s) = state.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    s.requests.push(format!("POST /graphql {}", body.0));
    if let Some(Fault::Status { code, .. }) = s.faults.pop_front() {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (
            status,
            axum::Json(json!({"errors": [{"message": "injected"}]})),
        )
            .into_response();
    }
    let vars = body.0.get("variables").cloned().unwrap_or(Value::Null);
    let wanted: Vec<String> = match vars.get("status") {
        Some(Value::String(x)) => vec![x.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => vec![],
    };
    let all: Vec<&Value> = s
        .records
        .iter()
        .filter(|r| {
            wanted.is_empty()
                || wanted
                    .iter()
                    .any(|w| r.get("status").and_then(Value::as_str) == Some(w))
        })
        .collect();
    let first = vars
        .get("first")
        .and_then(Value::as_u64)
        .map(|n| n as usize)
        .unwrap_or(s.default_page)
        .clamp(1, s.max_page);
    let start = vars
        .get("after")
        .and_then(Value::as_str)
        .and_then(|c| c.strip_prefix("c"))
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(0);
    let nodes: Vec<Value> = slice(&all, start, first);
    let end = start + nodes.len();
    let body = json!({"data": {"items": {"nodes": nodes, "pageInfo": {"hasNextPage": end < all.len(), "endCursor": format!("c{end}")}}}});
    (StatusCode::OK, axum::Json(body)).into_response()
}
