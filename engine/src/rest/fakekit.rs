//! What every connector's fake API shares: a loopback HTTP server around the connector's own
//! routes that records each request (so tests assert what reached the wire), adds latency, and
//! injects faults (statuses with or without `Retry-After`, delays, malformed or truncated
//! bodies, a server that dies). The routes themselves — paths, parameters, pagination, default
//! filters, error bodies — are the connector's, written after the real API.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// A fault for the next request(s).
#[derive(Debug, Clone)]
pub enum FakeFault {
    /// Answer with this status and a JSON error body; `retry_after` seconds if given.
    Status {
        code: u16,
        retry_after: Option<u64>,
        body: String,
    },
    /// Wait before answering.
    Delay(Duration),
    /// A body that is not JSON.
    Malformed,
    /// The real answer cut in the middle.
    Truncated,
    /// GitHub's spent budget: 403 with `x-ratelimit-remaining: 0`, reset in `reset_secs`.
    RateLimitExhausted { reset_secs: u64 },
    /// The connection drops after the status line, before any body byte.
    Reset,
    /// Half the real answer arrives, then the connection drops.
    CutMidBody,
    /// The previous answer on the same path again, headers and next-page pointer included:
    /// asked for page 2, the API sends page 1 (whose cursor leads to page 2 again).
    RepeatPage,
}

#[derive(Debug, Default)]
struct KitState {
    faults: VecDeque<FakeFault>,
    requests: Vec<String>,
    latency: Duration,
    die_after: Option<usize>,
    /// The last answer per path (status, headers, body), for `RepeatPage`.
    last: std::collections::HashMap<String, (StatusCode, axum::http::HeaderMap, bytes::Bytes)>,
}

/// A running fake; dropping it stops the server.
pub struct FakeServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<KitState>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Serve `routes` on `addr` (port 0 for any free port).
    pub async fn start(routes: Router, addr: SocketAddr) -> std::io::Result<FakeServer> {
        let state = Arc::new(Mutex::new(KitState::default()));
        let app = routes.layer(axum::middleware::from_fn_with_state(state.clone(), knobs));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeServer { addr, state, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut KitState) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    /// Requests so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.with(|s| s.requests.clone()).unwrap_or_default()
    }

    pub fn request_count(&self) -> usize {
        self.with(|s| s.requests.len()).unwrap_or(0)
    }

    pub fn clear_requests(&self) {
        self.with(|s| s.requests.clear());
    }

    /// Queue a fault for the next request.
    pub fn inject(&self, f: FakeFault) {
        self.with(|s| s.faults.push_back(f));
    }

    /// Add this latency to every answer (the demo's `--api-latency`).
    pub fn set_latency(&self, d: Duration) {
        self.with(|s| s.latency = d);
    }

    /// From request number `n` on (0-based), every request gets a 503: a dying server.
    pub fn die_after(&self, n: usize) {
        self.with(|s| s.die_after = Some(n));
    }

    /// Faults queued and not yet served.
    pub fn pending_faults(&self) -> usize {
        self.with(|s| s.faults.len()).unwrap_or(0)
    }

    /// Drop queued faults and bring a dying server back.
    pub fn heal(&self) {
        self.with(|s| {
            s.faults.clear();
            s.die_after = None;
            s.last.clear();
        });
    }
}

async fn knobs(State(state): State<Arc<Mutex<KitState>>>, req: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default()
    );
    let path = req.uri().path().to_string();
    let (fault, latency) = match state.lock() {
        Ok(mut s) => {
            let n = s.requests.len();
            s.requests.push(line);
            let dead = s.die_after.is_some_and(|d| n >= d);
            let fault = if dead {
                Some(FakeFault::Status {
                    code: 503,
                    retry_after: None,
                    body: r#"{"message":"Service Unavailable"}"#.into(),
                })
            } else {
                s.faults.pop_front()
            };
            (fault, s.latency)
        }
        Err(_) => (None, Duration::ZERO),
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match fault {
        None => remember(&state, path, next.run(req).await).await,
        Some(FakeFault::Delay(d)) => {
            tokio::time::sleep(d).await;
            remember(&state, path, next.run(req).await).await
        }
        Some(FakeFault::RateLimitExhausted { reset_secs }) => {
            let reset = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() + reset_secs)
                .unwrap_or(0);
            let mut resp = (
                StatusCode::FORBIDDEN,
                r#"{"message":"API rate limit exceeded","documentation_url":"https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting"}"#,
            )
                .into_response();
            let h = resp.headers_mut();
            h.insert("content-type", HeaderValue::from_static("application/json"));
            h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
            if let Ok(v) = HeaderValue::from_str(&reset.to_string()) {
                h.insert("x-ratelimit-reset", v);
            }
            resp
        }
        Some(FakeFault::Reset) => {
            (StatusCode::OK, broken_body(bytes::Bytes::new())).into_response()
        }
        Some(FakeFault::CutMidBody) => {
            let resp = next.run(req).await;
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            parts.headers.remove("content-length");
            Response::from_parts(parts, broken_body(bytes.slice(0..bytes.len() / 2)))
        }
        Some(FakeFault::RepeatPage) => {
            let last = state.lock().ok().and_then(|s| s.last.get(&path).cloned());
            match last {
                Some((status, headers, body)) => {
                    let mut resp = (status, body).into_response();
                    *resp.headers_mut() = headers;
                    resp
                }
                None => remember(&state, path, next.run(req).await).await,
            }
        }
        Some(FakeFault::Status {
            code,
            retry_after,
            body,
        }) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut resp = (status, body).into_response();
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            if let Some(s) = retry_after
                && let Ok(v) = HeaderValue::from_str(&s.to_string())
            {
                resp.headers_mut().insert("retry-after", v);
            }
            resp
        }
        Some(FakeFault::Malformed) => {
            let mut resp = (StatusCode::OK, "<html>upstream proxy error</html>").into_response();
            resp.headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            resp
        }
        Some(FakeFault::Truncated) => {
            let resp = next.run(req).await;
            let (mut parts, body) = resp.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .unwrap_or_default();
            let cut = bytes.slice(0..bytes.len() / 2);
            parts.headers.remove("content-length");
            Response::from_parts(parts, Body::from(cut))
        }
    }
}

/// A body that sends `prefix` and then breaks the connection (a reset when `prefix` is empty).
pub fn broken_body(prefix: bytes::Bytes) -> Body {
    let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "injected reset");
    let chunks = if prefix.is_empty() {
        vec![Err(reset)]
    } else {
        vec![Ok(prefix), Err(reset)]
    };
    Body::from_stream(futures::stream::iter(chunks))
}

/// Keep a copy of a successful answer (for `RepeatPage`) and pass it on.
async fn remember(state: &Arc<Mutex<KitState>>, path: String, resp: Response) -> Response {
    if !resp.status().is_success() {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    if let Ok(mut s) = state.lock() {
        s.last
            .insert(path, (parts.status, parts.headers.clone(), bytes.clone()));
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// A fake API's request budget: `limit` requests per fixed `window` (PagerDuty's and Slack's
/// minute, Stripe's second). Tests shorten the window to exercise the limits quickly.
#[derive(Debug, Clone)]
pub struct Budget {
    limit: u64,
    window: Duration,
    used: u64,
    start: std::time::Instant,
    refused: u64,
}

impl Budget {
    pub fn new(limit: u64, window: Duration) -> Budget {
        Budget {
            limit,
            window,
            used: 0,
            start: std::time::Instant::now(),
            refused: 0,
        }
    }

    /// Requests refused so far for want of budget.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    /// Change the window (and start a fresh one).
    pub fn set_window(&mut self, window: Duration) {
        self.window = window;
        self.used = 0;
        self.start = std::time::Instant::now();
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whole seconds until the window resets, at least 1.
    pub fn reset_secs(&self) -> u64 {
        let left = self.window.saturating_sub(self.start.elapsed());
        left.as_secs_f64().ceil().max(1.0) as u64
    }

    /// Spend one request: `Ok(remaining)` or `Err(seconds until the window resets)`.
    pub fn take(&mut self) -> Result<u64, u64> {
        if self.start.elapsed() >= self.window {
            self.start = std::time::Instant::now();
            self.used = 0;
        }
        if self.used >= self.limit {
            self.refused += 1;
            return Err(self.reset_secs());
        }
        self.used += 1;
        Ok(self.limit - self.used)
    }
}
