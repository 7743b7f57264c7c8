//! The fetch layer: one HTTP client per connection with auth, a concurrency limit, retries
//! with full-jitter backoff that honour `Retry-After` and rate-limit headers, and a log of every
//! call. Secrets never leave this module: URLs are redacted before they are logged or shown.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::Semaphore;
use url::Url;

use super::spec::Method;
use crate::error::{ErrorKind, JoineryError, Result};

/// A credential. Its `Debug` never shows the value, and each copy of the value is wiped from
/// memory when that copy is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(zeroize::Zeroizing<String>);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(zeroize::Zeroizing::new(s.into()))
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// How requests authenticate.
#[derive(Debug, Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Bearer(Secret),
    Basic {
        user: String,
        password: Secret,
    },
    /// A header such as `Authorization: Token token=...` or `X-Api-Key: ...`.
    Header {
        name: String,
        value: Secret,
    },
    /// A query parameter (redacted in logs and EXPLAIN).
    Query {
        param: String,
        value: Secret,
    },
    /// OAuth 2: the refresh-token grant when `refresh_token` is set, client credentials
    /// otherwise. Tokens are refreshed before they expire and when the API answers 401.
    OAuth2 {
        token_url: String,
        client_id: String,
        client_secret: Secret,
        refresh_token: Option<Secret>,
        scope: Option<String>,
    },
}

impl Auth {
    /// Query parameters whose values must never be shown.
    pub fn secret_params(&self) -> Vec<String> {
        match self {
            Auth::Query { param, .. } => vec![param.clone()],
            _ => vec![],
        }
    }
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// No retry starts after this much time has passed since the first attempt.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            deadline: Duration::from_secs(60),
        }
    }
}

/// Called with a refresh token the OAuth server rotated (to store it back, encrypted).
#[derive(Clone)]
pub struct RefreshHook(pub Arc<dyn Fn(&Secret) + Send + Sync>);

impl fmt::Debug for RefreshHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshHook")
    }
}

/// Stores a new value for a named secret (a user's rotated OAuth refresh token).
#[derive(Clone)]
pub struct StoreSecretHook(pub Arc<StoreSecretFn>);

/// `(secret name, new value)`.
pub type StoreSecretFn = dyn Fn(&str, &Secret) + Send + Sync;

impl fmt::Debug for StoreSecretHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreSecretHook")
    }
}

#[derive(Debug, Clone)]
pub struct FetchConfig {
    /// Told of each rotated OAuth refresh token.
    pub on_refresh_token: Option<RefreshHook>,
    /// Stores users' rotated refresh tokens under their secret's name.
    pub store_secret: Option<StoreSecretHook>,
    pub connection: String,
    pub base_url: Url,
    pub auth: Auth,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Requests in flight at once for this connection.
    pub concurrency: usize,
    /// How long a page stays cached; zero disables the cache.
    pub cache_ttl: Duration,
    /// Bytes of response bodies the cache may hold.
    pub cache_bytes: u64,
    /// Requests per second allowed by our own limiter (the API's headers can slow us further).
    pub rate_per_second: Option<u32>,
    /// Consecutive failed requests that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses requests before letting one through.
    pub breaker_cooldown: Duration,
}

impl FetchConfig {
    pub fn new(connection: impl Into<String>, base_url: &str) -> Result<Self> {
        let connection = connection.into();
        let mut base = Url::parse(base_url).map_err(|e| {
            JoineryError::config(format!("base_url '{base_url}' is not a URL: {e}"))
                .with_connection(connection.clone())
        })?;
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        Ok(Self {
            on_refresh_token: None,
            store_secret: None,
            connection,
            base_url: base,
            auth: Auth::None,
            headers: vec![],
            timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            concurrency: 8,
            cache_ttl: Duration::from_secs(60),
            cache_bytes: 64 * 1024 * 1024,
            rate_per_second: None,
            breaker_threshold: 5,
            breaker_cooldown: Duration::from_secs(30),
        })
    }
}

/// One API call, as `joinery.api_calls` and metrics see it.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub at: SystemTime,
    pub connection: String,
    pub table: String,
    pub method: &'static str,
    /// Redacted.
    pub url: String,
    pub status: Option<u16>,
    pub bytes: u64,
    pub latency: Duration,
    pub attempt: u32,
    pub error: Option<String>,
    /// Served from the cache: no request reached the API.
    pub cache_hit: bool,
    /// The statement the call served (0 when unknown).
    pub query_id: u64,
    /// Records in the response, when the caller said where they are.
    pub rows: Option<u64>,
}

/// Running totals for one connection (what metrics export).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallCounters {
    /// Requests that reached the API (retries included).
    pub requests: u64,
    /// Answered from the cache.
    pub cache_hits: u64,
    /// Requests that failed (HTTP >= 400 or no response).
    pub errors: u64,
    /// 429s and rate-limit 403s.
    pub rate_limited: u64,
    /// Requests that were retries of an earlier attempt.
    pub retries: u64,
    pub bytes: u64,
    pub latency_micros: u64,
}

/// Who else hears of each call (the server's audit log).
pub type CallSink = Arc<dyn Fn(&CallRecord) + Send + Sync>;

#[derive(Default)]
struct SinkSlot(std::sync::RwLock<Option<CallSink>>);

impl fmt::Debug for SinkSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CallSink")
    }
}

/// Recent calls (bounded) and counters, shared by every connection of the process.
#[derive(Debug, Default)]
pub struct CallLog {
    recent: Mutex<VecDeque<CallRecord>>,
    total: AtomicU64,
    /// Cached pages whose decoded batches a scan reused (no JSON decoded again).
    decodes_reused: AtomicU64,
    counters: Mutex<std::collections::BTreeMap<String, CallCounters>>,
    sink: SinkSlot,
    metrics: crate::metrics::Metrics,
}

impl CallLog {
    pub const KEEP: usize = 10_000;

    /// Cached pages a scan read without decoding their JSON again.
    pub fn decodes_reused(&self) -> u64 {
        self.decodes_reused.load(Ordering::Relaxed)
    }

    pub(crate) fn note_decode_reused(&self) {
        self.decodes_reused.fetch_add(1, Ordering::Relaxed);
    }

    /// Send every call recorded from now on to `sink` as well.
    pub fn set_sink(&self, sink: CallSink) {
        if let Ok(mut s) = self.sink.0.write() {
            *s = Some(sink);
        }
    }

    /// Prometheus series, connection health and recent statements.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    pub fn record(&self, r: CallRecord) {
        if let Some(sink) = self.sink.0.read().ok().and_then(|s| s.clone()) {
            sink(&r);
        }
        self.metrics.on_call(&r);
        tracing::debug!(
            query_id = r.query_id,
            connection = %r.connection,
            table = %r.table,
            request = %format_args!("{} {}", r.method, r.url),
            status = r.status,
            latency_ms = r.latency.as_millis() as u64,
            cache_hit = r.cache_hit,
            attempt = r.attempt,
            "api call"
        );
        self.total.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut all) = self.counters.lock() {
            let c = all.entry(r.connection.clone()).or_default();
            if r.cache_hit {
                c.cache_hits += 1;
            } else {
                c.requests += 1;
                c.bytes += r.bytes;
                c.latency_micros += r.latency.as_micros() as u64;
                if r.attempt > 1 {
                    c.retries += 1;
                }
                match r.status {
                    None => c.errors += 1,
                    Some(429) => {
                        c.errors += 1;
                        c.rate_limited += 1;
                    }
                    Some(s) if s >= 400 => c.errors += 1,
                    _ => {}
                }
            }
        }
        if let Ok(mut q) = self.recent.lock() {
            if q.len() == Self::KEEP {
                q.pop_front();
            }
            q.push_back(r);
        }
    }

    /// Totals per connection.
    pub fn counters(&self) -> std::collections::BTreeMap<String, CallCounters> {
        self.counters.lock().map(|c| c.clone()).unwrap_or_default()
    }

    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    pub fn recent(&self) -> Vec<CallRecord> {
        self.recent
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// A response page.
#[derive(Debug)]
pub struct Page {
    pub status: u16,
    pub headers: HeaderMap,
    /// The parsed body, shared with the cache (never copied on a cache hit).
    pub body: Arc<Value>,
    pub url: Url,
    /// Response body size in bytes.
    pub bytes: u64,
    /// Batches already decoded from this (cached) page, for scans that read it again.
    pub memo: Option<Arc<DecodeMemo>>,
}

/// Arrow batches decoded from one cached page, by what they were decoded for (the columns and
/// projection of a scan): a warm scan reuses them instead of decoding the JSON again. At most
/// [`DecodeMemo::KEEP`] shapes per page.
#[derive(Debug, Default)]
pub struct DecodeMemo {
    batches: std::sync::Mutex<Vec<(String, arrow::record_batch::RecordBatch)>>,
}

impl DecodeMemo {
    const KEEP: usize = 4;

    pub fn get(&self, key: &str) -> Option<arrow::record_batch::RecordBatch> {
        self.batches
            .lock()
            .ok()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, b)| b.clone())
    }

    pub fn put(&self, key: String, batch: arrow::record_batch::RecordBatch) {
        if let Ok(mut b) = self.batches.lock() {
            if b.iter().any(|(k, _)| *k == key) {
                return;
            }
            if b.len() >= Self::KEEP {
                b.remove(0);
            }
            b.push((key, batch));
        }
    }
}

/// What a query brings to its calls: how it wants the cache used, and who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOptions {
    /// The statement these calls serve (links `joinery.api_calls` to the query).
    pub query_id: u64,
    /// Where the records are in a response, to count the rows each call returned.
    pub records: Option<String>,
    pub use_cache: bool,
    /// Refetch entries older than this.
    pub max_staleness: Option<Duration>,
    /// How long a page fetched now may be kept (the table's TTL); the connection's otherwise.
    pub ttl: Option<Duration>,
    /// The querying user's own credential for this connection (sent in place of the
    /// connection's, in the same form; cached pages are kept apart per credential).
    pub credential: Option<Secret>,
    /// The secret store name the credential came from (a rotated refresh token goes back there).
    pub credential_secret: Option<String>,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self {
            query_id: 0,
            records: None,
            use_cache: true,
            max_staleness: None,
            ttl: None,
            credential: None,
            credential_secret: None,
        }
    }
}

impl CallOptions {
    /// Which credential the calls use: "" for the connection's own, else a hash of the user's.
    pub fn credential_key(&self) -> String {
        self.credential
            .as_ref()
            .map(|c| {
                use std::hash::{Hash, Hasher};
                let mut h = std::collections::hash_map::DefaultHasher::new();
                c.expose().hash(&mut h);
                format!("u{:x}", h.finish())
            })
            .unwrap_or_default()
    }
}

/// Each cached page expires after its own TTL.
struct PageExpiry;

impl moka::Expiry<String, Arc<CachedPage>> for PageExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<CachedPage>,
        _at: std::time::Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// A request to send.
#[derive(Debug, Clone)]
pub struct HttpCall {
    pub method: Method,
    pub url: Url,
    pub body: Option<Value>,
}

/// A current OAuth access token.
/// One credential's access token, refreshed under its own lock.
type OAuthSlot = Arc<tokio::sync::Mutex<Option<AccessToken>>>;

#[derive(Debug, Clone)]
struct AccessToken {
    token: Secret,
    expires_at: Instant,
    /// Salesforce-style token responses name the instance the API lives on.
    instance_url: Option<Url>,
}

/// What the cache keeps of a page: enough to decode it and find the next one, and what scans
/// decoded from it.
#[derive(Debug)]
struct CachedPage {
    at: Instant,
    ttl: Duration,
    status: u16,
    link: Option<HeaderValue>,
    body: Arc<Value>,
    bytes: u64,
    memo: Arc<DecodeMemo>,
}

type Limiter = governor::RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    governor::clock::DefaultClock,
>;

/// Consecutive failures and, when open, until when.
#[derive(Debug, Default)]
struct Breaker {
    failures: u32,
    open_until: Option<Instant>,
}

pub struct Fetcher {
    client: reqwest::Client,
    pub config: FetchConfig,
    pub(crate) log: Arc<CallLog>,
    permits: Arc<Semaphore>,
    cache: Option<moka::future::Cache<String, Arc<CachedPage>>>,
    /// Identity of the credential, so cache entries never cross credentials.
    identity: u64,
    limiter: Option<Limiter>,
    /// Set from the API's own rate-limit headers: wait until then before the next request.
    paused_until: Mutex<Option<Instant>>,
    breaker: Mutex<Breaker>,
    /// OAuth access tokens by credential key (the connection's own is ""). Each key has its own
    /// async mutex: concurrent requests of one credential share one refresh, and one user's
    /// slow token endpoint never holds up another's requests.
    oauth: Mutex<HashMap<String, OAuthSlot>>,
    /// Rotated refresh tokens by credential key, when the provider issues new ones.
    refresh_token: Mutex<HashMap<String, Secret>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("connection", &self.config.connection)
            .field("base_url", &self.config.base_url.as_str())
            .finish()
    }
}

/// Install the process-wide TLS provider once (ring: no cmake, same as the wire server).
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let now = chrono::Utc::now();
    (when.with_timezone(&chrono::Utc) - now).to_std().ok()
}

/// The API's rate-limit state from `X-RateLimit-*` (GitHub, PagerDuty) or IETF `RateLimit-*`
/// headers: requests remaining and how long until the window resets.
fn rate_limit_state(headers: &HeaderMap) -> Option<(f64, Duration)> {
    let num = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| headers.get(*n)?.to_str().ok()?.trim().parse::<f64>().ok())
    };
    let remaining = num(["x-ratelimit-remaining", "ratelimit-remaining"])?;
    let reset = num(["x-ratelimit-reset", "ratelimit-reset"])?;
    // Epoch seconds (GitHub) or seconds from now (IETF RateLimit-Reset, PagerDuty).
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let wait = if reset > 1e9 { reset - now } else { reset };
    Some((remaining, Duration::from_secs_f64(wait.max(0.0))))
}

/// GitHub-style exhaustion: no requests remaining; wait until the reset.
fn rate_limit_reset(headers: &HeaderMap) -> Option<Duration> {
    rate_limit_state(headers).and_then(|(remaining, wait)| (remaining <= 0.0).then_some(wait))
}

impl Fetcher {
    pub fn new(config: FetchConfig, log: Arc<CallLog>) -> Result<Self> {
        install_crypto();
        let mut headers = HeaderMap::new();
        headers.insert(
            reqwest::header::USER_AGENT,
            HeaderValue::from_static(concat!("joinery/", env!("CARGO_PKG_VERSION"))),
        );
        headers.insert(
            reqwest::header::ACCEPT,
            HeaderValue::from_static("application/json"),
        );
        let bad = |what: &str| {
            JoineryError::config(format!("invalid {what} header"))
                .with_connection(config.connection.clone())
        };
        for (k, v) in &config.headers {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad(k))?;
            let value = HeaderValue::from_str(v).map_err(|_| bad(k))?;
            headers.insert(name, value);
        }
        match &config.auth {
            Auth::Bearer(t) => {
                let text = zeroize::Zeroizing::new(format!("Bearer {}", t.expose()));
                let mut v = HeaderValue::from_str(&text).map_err(|_| bad("Authorization"))?;
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            Auth::Header { name, value } => {
                let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad(name))?;
                let mut v = HeaderValue::from_str(value.expose()).map_err(|_| bad(name))?;
                v.set_sensitive(true);
                headers.insert(n, v);
            }
            Auth::Basic { user, password } => {
                use base64::Engine;
                let plain = zeroize::Zeroizing::new(format!("{user}:{}", password.expose()));
                let token = zeroize::Zeroizing::new(
                    base64::engine::general_purpose::STANDARD.encode(&*plain),
                );
                let text = zeroize::Zeroizing::new(format!("Basic {}", *token));
                let mut v = HeaderValue::from_str(&text).map_err(|_| bad("Authorization"))?;
                v.set_sensitive(true);
                headers.insert(reqwest::header::AUTHORIZATION, v);
            }
            Auth::None | Auth::Query { .. } | Auth::OAuth2 { .. } => {}
        }
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(config.concurrency.max(1))
            .build()
            .map_err(|e| {
                JoineryError::internal(format!("cannot build HTTP client: {e}"))
                    .with_connection(config.connection.clone())
            })?;
        let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
        let cache = (!config.cache_ttl.is_zero()).then(|| {
            moka::future::Cache::builder()
                .max_capacity(config.cache_bytes)
                // A page counts twice: its JSON, and room for the batches decoded from it.
                .weigher(|_k: &String, v: &Arc<CachedPage>| {
                    u32::try_from(v.bytes.saturating_mul(2)).unwrap_or(u32::MAX)
                })
                .expire_after(PageExpiry)
                .build()
        });
        let identity = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            format!("{:?}", std::mem::discriminant(&config.auth)).hash(&mut h);
            match &config.auth {
                Auth::Bearer(t) => t.expose().hash(&mut h),
                Auth::Basic { user, password } => (user, password.expose()).hash(&mut h),
                Auth::Header { name, value } => (name, value.expose()).hash(&mut h),
                Auth::Query { param, value } => (param, value.expose()).hash(&mut h),
                Auth::OAuth2 {
                    client_id,
                    token_url,
                    ..
                } => (client_id, token_url).hash(&mut h),
                Auth::None => {}
            }
            h.finish()
        };
        let limiter = config
            .rate_per_second
            .and_then(std::num::NonZeroU32::new)
            // Evenly spaced, no burst: a burst of n on top of n per second would put up to 2n
            // requests in one second (and 110 into HubSpot's 100-per-10-s window).
            .map(|n| {
                governor::RateLimiter::direct(
                    governor::Quota::per_second(n).allow_burst(std::num::NonZeroU32::MIN),
                )
            });
        Ok(Self {
            client,
            config,
            log,
            permits,
            cache,
            identity,
            limiter,
            paused_until: Mutex::new(None),
            breaker: Mutex::new(Breaker::default()),
            oauth: Mutex::new(HashMap::new()),
            refresh_token: Mutex::new(HashMap::new()),
        })
    }

    pub fn log(&self) -> &Arc<CallLog> {
        &self.log
    }

    /// Resolve a request path (or an absolute next-page URL from the API) against the base URL,
    /// adding the auth query parameter if there is one.
    pub fn url(&self, path_or_url: &str, query: &[(String, String)]) -> Result<Url> {
        let mut url =
            if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
                Url::parse(path_or_url)
            } else {
                self.config
                    .base_url
                    .join(path_or_url.trim_start_matches('/'))
            }
            .map_err(|e| {
                JoineryError::new(ErrorKind::BadResponse, format!("bad request URL: {e}"))
                    .with_connection(self.config.connection.clone())
            })?;
        if !query.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                pairs.append_pair(k, v);
            }
        }
        if let Auth::Query { param, value } = &self.config.auth {
            let present = url.query_pairs().any(|(k, _)| k == param.as_str());
            if !present {
                url.query_pairs_mut().append_pair(param, value.expose());
            }
        }
        Ok(url)
    }

    /// A URL safe to show: secret query parameters replaced by `***`.
    pub fn redact(&self, url: &Url) -> String {
        let secrets = self.config.auth.secret_params();
        let mut shown = url.clone();
        if url.query().is_some() {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if secrets.iter().any(|s| s == k.as_ref()) {
                        "***".to_string()
                    } else {
                        v.into_owned()
                    };
                    (k.into_owned(), v)
                })
                .collect();
            shown.query_pairs_mut().clear().extend_pairs(pairs);
        }
        // Show the path and query relative to the API: hosts are configuration, not news.
        match shown.query() {
            Some(q) => format!("{}?{}", shown.path(), q.replace("%2A%2A%2A", "***")),
            None => shown.path().to_string(),
        }
    }

    /// Send through the cache: identical requests (same credential, method, URL and body)
    /// within the TTL are answered from memory, and concurrent identical requests share one
    /// call. Errors are not cached.
    pub async fn send(&self, table: &str, call: &HttpCall) -> Result<Page> {
        self.send_with(table, call, CallOptions::default()).await
    }

    /// [`send`](Self::send) under a query's cache policy (`SET joinery.cache = off`,
    /// `SET joinery.max_staleness_s = n`).
    pub async fn send_with(
        &self,
        table: &str,
        call: &HttpCall,
        policy: CallOptions,
    ) -> Result<Page> {
        let no_ttl = policy.ttl.is_some_and(|t| t.is_zero());
        let Some(cache) = self.cache.as_ref().filter(|_| policy.use_cache && !no_ttl) else {
            return self.send_guarded(table, call, &policy).await;
        };
        let user = policy.credential_key();
        let key = format!(
            "{}{user}|{:?}|{}|{}",
            self.identity,
            call.method,
            call.url.as_str(),
            call.body
                .as_ref()
                .map(|b| b.to_string())
                .unwrap_or_default()
        );
        if let Some(max) = policy.max_staleness
            && let Some(entry) = cache.get(&key).await
            && entry.at.elapsed() > max
        {
            cache.invalidate(&key).await;
        }
        let loaded = std::sync::atomic::AtomicBool::new(false);
        let cached = cache
            .try_get_with(key, async {
                loaded.store(true, Ordering::Relaxed);
                let page = self.send_guarded(table, call, &policy).await?;
                Ok::<_, JoineryError>(Arc::new(CachedPage {
                    at: Instant::now(),
                    ttl: policy.ttl.unwrap_or(self.config.cache_ttl),
                    status: page.status,
                    link: page.headers.get("link").cloned(),
                    body: page.body,
                    bytes: page.bytes,
                    memo: Arc::default(),
                }))
            })
            .await
            .map_err(|e: Arc<JoineryError>| (*e).clone())?;
        if !loaded.load(Ordering::Relaxed) {
            self.log.record(CallRecord {
                at: SystemTime::now(),
                connection: self.config.connection.clone(),
                table: table.to_string(),
                method: if call.method == Method::Get {
                    "GET"
                } else {
                    "POST"
                },
                url: self.redact(&call.url),
                status: Some(cached.status),
                bytes: cached.bytes,
                latency: Duration::ZERO,
                attempt: 0,
                error: None,
                cache_hit: true,
                query_id: policy.query_id,
                rows: policy
                    .records
                    .as_deref()
                    .and_then(|p| super::decode::records(&cached.body, p).ok())
                    .map(|r| r.len() as u64),
            });
        }
        let mut headers = HeaderMap::new();
        if let Some(l) = &cached.link {
            headers.insert("link", l.clone());
        }
        Ok(Page {
            status: cached.status,
            headers,
            body: cached.body.clone(),
            bytes: cached.bytes,
            memo: Some(cached.memo.clone()),
            url: call.url.clone(),
        })
    }

    /// The circuit breaker around retries: after `breaker_threshold` failed requests in a row
    /// the connection fails fast until the cooldown passes, then one request tests the API.
    async fn send_guarded(&self, table: &str, call: &HttpCall, opts: &CallOptions) -> Result<Page> {
        if let Ok(b) = self.breaker.lock()
            && let Some(until) = b.open_until
            && Instant::now() < until
        {
            let secs = until
                .saturating_duration_since(Instant::now())
                .as_secs_f64();
            return Err(JoineryError::new(
                ErrorKind::Unavailable,
                format!(
                    "circuit breaker open after {} consecutive failed requests; next try in {secs:.0}s",
                    b.failures
                ),
            )
            .with_connection(self.config.connection.clone())
            .with_table(table.to_string()));
        }
        // One span per logical call (its retries inside), linked to the statement by query_id.
        let span = tracing::debug_span!(
            "api_call",
            query_id = opts.query_id,
            connection = %self.config.connection,
            table = %table,
        );
        let result =
            tracing::Instrument::instrument(self.send_with_retries(table, call, opts), span).await;
        if let Ok(mut b) = self.breaker.lock() {
            let was_open = b.open_until.is_some();
            match &result {
                Ok(_) => *b = Breaker::default(),
                // The user's own mistakes do not trip the breaker.
                Err(e)
                    if matches!(
                        e.kind,
                        ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::PermissionDenied
                    ) => {}
                Err(_) => {
                    b.failures += 1;
                    if b.failures >= self.config.breaker_threshold.max(1) {
                        b.open_until = Some(Instant::now() + self.config.breaker_cooldown);
                    }
                }
            }
            let open = b.open_until.is_some();
            if open != was_open {
                self.log
                    .metrics()
                    .set_breaker_open(&self.config.connection, open);
            }
        }
        result
    }

    /// The token slot of one credential.
    fn oauth_slot(&self, key: &str) -> Result<OAuthSlot> {
        let mut all = self
            .oauth
            .lock()
            .map_err(|_| JoineryError::internal("OAuth state lock poisoned"))?;
        Ok(all.entry(key.to_string()).or_default().clone())
    }

    /// A valid OAuth access token (refreshing it if needed), or `None` without OAuth.
    async fn oauth_token(&self, table: &str, opts: &CallOptions) -> Result<Option<AccessToken>> {
        let Auth::OAuth2 {
            token_url,
            client_id,
            client_secret,
            refresh_token,
            scope,
        } = &self.config.auth
        else {
            return Ok(None);
        };
        let key = opts.credential_key();
        let slot = self.oauth_slot(&key)?;
        let mut state = slot.lock().await;
        if let Some(t) = state.as_ref()
            && t.expires_at > Instant::now() + Duration::from_secs(30)
        {
            return Ok(Some(t.clone()));
        }
        let fail = |kind, msg: String| {
            JoineryError::new(kind, msg)
                .with_connection(self.config.connection.clone())
                .with_table(table.to_string())
        };
        let rotated = self
            .refresh_token
            .lock()
            .ok()
            .and_then(|r| r.get(&key).cloned());
        // A user's own credential on an OAuth connection is their refresh token.
        let own = opts.credential.as_ref().or(refresh_token.as_ref());
        let refresh = rotated.as_ref().or(own);
        let form_body = {
            let mut form = url::form_urlencoded::Serializer::new(String::new());
            match refresh {
                Some(r) => {
                    form.append_pair("grant_type", "refresh_token");
                    form.append_pair("refresh_token", r.expose());
                }
                None => {
                    form.append_pair("grant_type", "client_credentials");
                }
            }
            form.append_pair("client_id", client_id);
            form.append_pair("client_secret", client_secret.expose());
            if let Some(s) = scope {
                form.append_pair("scope", s);
            }
            form.finish()
        };
        let url = self.url(token_url, &[])?;
        let t0 = Instant::now();
        let resp = self
            .client
            .post(url.clone())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(form_body)
            .send()
            .await
            .map_err(|_| {
                fail(
                    ErrorKind::Unavailable,
                    format!("POST {}: token endpoint unreachable", url.path()),
                )
            })?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap_or_default();
        self.log.record(CallRecord {
            at: SystemTime::now(),
            connection: self.config.connection.clone(),
            table: table.to_string(),
            method: "POST",
            url: url.path().to_string(),
            status: Some(status),
            bytes: bytes.len() as u64,
            latency: t0.elapsed(),
            attempt: 1,
            error: None,
            cache_hit: false,
            query_id: opts.query_id,
            rows: None,
        });
        if !(200..300).contains(&status) {
            // The body may echo what we sent; say only what the client needs.
            return Err(fail(
                ErrorKind::Unauthenticated,
                format!("token refresh at {} failed with HTTP {status}", url.path()),
            ));
        }
        let mut body: Value = serde_json::from_slice(&bytes).map_err(|_| {
            fail(
                ErrorKind::BadResponse,
                "token endpoint sent invalid JSON".into(),
            )
        })?;
        // The tokens are moved out of the parsed answer into `Secret`s (no copies left behind
        // in it): they are wiped when the last one is dropped.
        let token = match body.get_mut("access_token").map(Value::take) {
            Some(Value::String(t)) => Secret::new(t),
            _ => {
                return Err(fail(
                    ErrorKind::BadResponse,
                    "token response has no access_token".into(),
                ));
            }
        };
        let ttl = body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        let issued = match body.get_mut("refresh_token").map(Value::take) {
            Some(Value::String(r)) => Some(Secret::new(r)),
            _ => None,
        };
        if let Some(new) = issued
            && let Ok(mut slots) = self.refresh_token.lock()
        {
            let changed = slots.get(&key) != Some(&new) && refresh.is_none_or(|old| old != &new);
            slots.insert(key.clone(), new.clone());
            drop(slots);
            if changed {
                match (&opts.credential, &opts.credential_secret) {
                    (None, _) => {
                        if let Some(hook) = &self.config.on_refresh_token {
                            (hook.0)(&new);
                        }
                    }
                    (Some(_), Some(name)) => {
                        if let Some(hook) = &self.config.store_secret {
                            (hook.0)(name, &new);
                        }
                    }
                    // A user token written inline in the config: kept in memory only.
                    (Some(_), None) => {}
                }
            }
        }
        let instance_url = body
            .get("instance_url")
            .and_then(Value::as_str)
            .and_then(|u| Url::parse(u).ok());
        let t = AccessToken {
            token,
            expires_at: Instant::now() + Duration::from_secs(ttl),
            instance_url,
        };
        *state = Some(t.clone());
        Ok(Some(t))
    }

    /// Requests go to the instance the token response named, keeping path and query.
    fn on_instance(&self, url: &Url, token: &AccessToken) -> Url {
        let Some(inst) = &token.instance_url else {
            return url.clone();
        };
        let mut u = url.clone();
        let _ = u.set_scheme(inst.scheme());
        let _ = u.set_host(inst.host_str());
        let _ = u.set_port(inst.port());
        u
    }

    /// Wait for our own limiter and for any pause the API's headers asked for.
    async fn wait_for_quota(&self) {
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let until = self.paused_until.lock().ok().and_then(|p| *p);
        if let Some(until) = until {
            tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
        }
    }

    /// Read `X-RateLimit-Remaining`/`RateLimit-Remaining` and slow down before the API says 429:
    /// when the remaining quota is below the number of requests we may have in flight, pause
    /// until the reset.
    fn observe_rate_headers(&self, headers: &HeaderMap) {
        let Some((remaining, wait)) = rate_limit_state(headers) else {
            return;
        };
        self.log
            .metrics()
            .set_rate_limit_remaining(&self.config.connection, remaining);
        if remaining >= self.config.concurrency as f64 {
            return;
        }
        // A reset beyond the retry deadline cannot be waited out inside a query: let the next
        // request meet the API's refusal and fail at once with its message.
        if wait > self.config.retry.deadline {
            return;
        }
        if let Ok(mut p) = self.paused_until.lock() {
            *p = Some(Instant::now() + wait);
        }
    }

    /// Send with retries; returns the parsed JSON page. Never returns a partial page.
    async fn send_with_retries(
        &self,
        table: &str,
        call: &HttpCall,
        opts: &CallOptions,
    ) -> Result<Page> {
        let started = Instant::now();
        let policy = &self.config.retry;
        let shown = self.redact(&call.url);
        let err = |kind, msg: String| {
            JoineryError::new(kind, msg)
                .with_connection(self.config.connection.clone())
                .with_table(table.to_string())
        };
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            // The limiter sits inside the retry loop: every attempt spends quota.
            self.wait_for_quota().await;
            let permit = self
                .permits
                .acquire()
                .await
                .map_err(|_| err(ErrorKind::Internal, "connection closed".into()))?;
            let t0 = Instant::now();
            let (url, bearer) = match self.oauth_token(table, opts).await {
                Ok(Some(t)) => (self.on_instance(&call.url, &t), Some(t.token)),
                Ok(None) => (call.url.clone(), None),
                Err(e) => return Err(e),
            };
            let mut rb = match call.method {
                Method::Get => self.client.get(url),
                Method::Post => self.client.post(url),
            };
            if let Some(t) = &bearer {
                rb = rb.bearer_auth(t.expose());
            }
            if let Some(c) = &opts.credential {
                rb = match &self.config.auth {
                    Auth::Bearer(_) => rb.bearer_auth(c.expose()),
                    Auth::Header { name, .. } => rb.header(name.as_str(), c.expose()),
                    Auth::Basic { user, .. } => match c.expose().split_once(':') {
                        Some((u, p)) => rb.basic_auth(u, Some(p)),
                        None => rb.basic_auth(user, Some(c.expose())),
                    },
                    // The user's refresh token already bought the bearer token above.
                    Auth::OAuth2 { .. } => rb,
                    Auth::None | Auth::Query { .. } => {
                        return Err(err(
                            ErrorKind::InvalidInput,
                            "per-user credentials need a connection with token, header, basic or OAuth auth"
                                .into(),
                        ));
                    }
                };
            }
            if let Some(b) = &call.body {
                rb = rb.json(b);
            }
            let outcome = match rb.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    match resp.bytes().await {
                        Ok(bytes) => Ok((status, headers, bytes)),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            drop(permit);
            let latency = t0.elapsed();
            let method = if call.method == Method::Get {
                "GET"
            } else {
                "POST"
            };
            // What to do next: Ok(page) | Err((retryable, kind, message, wait))
            let decision: std::result::Result<Page, (bool, ErrorKind, String, Option<Duration>)> =
                match outcome {
                    Err(e) => {
                        let kind = if e.is_timeout() {
                            ErrorKind::Timeout
                        } else {
                            ErrorKind::Unavailable
                        };
                        let what = if e.is_timeout() {
                            "timed out".to_string()
                        } else if e.is_connect() {
                            "could not connect".to_string()
                        } else {
                            "connection failed".to_string()
                        };
                        self.log.record(CallRecord {
                            at: SystemTime::now(),
                            connection: self.config.connection.clone(),
                            table: table.to_string(),
                            method,
                            url: shown.clone(),
                            status: None,
                            bytes: 0,
                            latency,
                            attempt,
                            error: Some(what.clone()),
                            cache_hit: false,
                            query_id: opts.query_id,
                            rows: None,
                        });
                        Err((true, kind, format!("{method} {shown}: {what}"), None))
                    }
                    Ok((status, headers, bytes)) => {
                        self.observe_rate_headers(&headers);
                        // Parse once: the rows count goes in the log, the value in the page.
                        let parsed = (200..300)
                            .contains(&status)
                            .then(|| serde_json::from_slice::<Value>(&bytes));
                        let rows = match (&parsed, &opts.records) {
                            (Some(Ok(v)), Some(p)) => {
                                super::decode::records(v, p).ok().map(|r| r.len() as u64)
                            }
                            _ => None,
                        };
                        self.log.record(CallRecord {
                            at: SystemTime::now(),
                            connection: self.config.connection.clone(),
                            table: table.to_string(),
                            method,
                            url: shown.clone(),
                            status: Some(status),
                            bytes: bytes.len() as u64,
                            latency,
                            attempt,
                            error: if matches!(parsed, Some(Err(_))) {
                                Some("response is not valid JSON".to_string())
                            } else if status == 403 && rate_limit_reset(&headers).is_some() {
                                Some("rate limit exhausted".to_string())
                            } else {
                                None
                            },
                            cache_hit: false,
                            query_id: opts.query_id,
                            rows,
                        });
                        let snippet = || -> String {
                            let s = String::from_utf8_lossy(&bytes);
                            let s: String = s.chars().take(200).collect();
                            s.replace('\n', " ")
                        };
                        match status {
                            200..=299 => match parsed
                                .unwrap_or_else(|| serde_json::from_slice::<Value>(&bytes))
                            {
                                Ok(body) => Ok(Page {
                                    status,
                                    headers,
                                    body: Arc::new(body),
                                    url: call.url.clone(),
                                    bytes: bytes.len() as u64,
                                    memo: None,
                                }),
                                // A truncated or garbled page may be a transient fault: retry, and
                                // fail the query if it persists.
                                Err(e) => Err((
                                    true,
                                    ErrorKind::BadResponse,
                                    format!("{method} {shown}: response is not valid JSON ({e})"),
                                    None,
                                )),
                            },
                            429 => Err((
                                true,
                                ErrorKind::RateLimited,
                                format!("{method} {shown}: 429 Too Many Requests"),
                                retry_after(&headers).or_else(|| rate_limit_reset(&headers)),
                            )),
                            403 if rate_limit_reset(&headers).is_some()
                                || headers.contains_key("retry-after") =>
                            {
                                Err((
                                    true,
                                    ErrorKind::RateLimited,
                                    format!("{method} {shown}: 403 rate limit exceeded"),
                                    retry_after(&headers).or_else(|| rate_limit_reset(&headers)),
                                ))
                            }
                            // A quota spelled in the body (a daily allocation spent, say): no
                            // reset is known, so it is not waited for.
                            403 if {
                                let b = snippet().to_ascii_lowercase();
                                b.contains("limit_exceeded") || b.contains("rate limit")
                            } =>
                            {
                                Err((
                                    false,
                                    ErrorKind::RateLimited,
                                    format!(
                                        "{method} {shown}: 403 request limit exceeded ({})",
                                        snippet()
                                    ),
                                    None,
                                ))
                            }
                            // An expired token: refresh it and try again (once per call).
                            401 if bearer.is_some() && attempt == 1 => {
                                if let Ok(slot) = self.oauth_slot(&opts.credential_key()) {
                                    *slot.lock().await = None;
                                }
                                Err((
                                    true,
                                    ErrorKind::Unauthenticated,
                                    format!("{method} {shown}: 401 Unauthorized"),
                                    Some(Duration::ZERO),
                                ))
                            }
                            401 => Err((
                                false,
                                ErrorKind::Unauthenticated,
                                format!("{method} {shown}: 401 Unauthorized ({})", snippet()),
                                None,
                            )),
                            403 => Err((
                                false,
                                ErrorKind::PermissionDenied,
                                format!("{method} {shown}: 403 Forbidden ({})", snippet()),
                                None,
                            )),
                            404 => Err((
                                false,
                                ErrorKind::NotFound,
                                format!("{method} {shown}: 404 Not Found ({})", snippet()),
                                None,
                            )),
                            408 | 500..=599 => Err((
                                true,
                                ErrorKind::Unavailable,
                                format!("{method} {shown}: HTTP {status} ({})", snippet()),
                                retry_after(&headers),
                            )),
                            _ => Err((
                                false,
                                ErrorKind::InvalidInput,
                                format!("{method} {shown}: HTTP {status} ({})", snippet()),
                                None,
                            )),
                        }
                    }
                };
            let (retryable, kind, msg, wait) = match decision {
                Ok(page) => return Ok(page),
                Err(d) => d,
            };
            let cap = policy
                .base_backoff
                .saturating_mul(2u32.saturating_pow(attempt.min(16)))
                .min(policy.max_backoff);
            let jitter =
                Duration::from_micros(rand::random_range(0..=cap.as_micros().max(1) as u64));
            let wait = wait
                .map(|w| w.max(Duration::from_millis(1)))
                .unwrap_or(jitter);
            let out_of_time = started.elapsed() + wait > policy.deadline;
            // A 429 is back-pressure, not a failure: it may be retried until the deadline (an
            // API with a ten-second window and no Retry-After outlasts five short backoffs).
            let attempts = if kind == ErrorKind::RateLimited {
                policy.max_attempts.max(RATE_LIMITED_ATTEMPTS)
            } else {
                policy.max_attempts
            };
            if !retryable || attempt >= attempts || out_of_time {
                let msg = if retryable {
                    format!("{msg}; gave up after {attempt} attempt(s)")
                } else {
                    msg
                };
                return Err(err(kind, msg));
            }
            tracing::debug!(connection = %self.config.connection, %table, attempt, wait_ms = wait.as_millis() as u64, "retrying: {msg}");
            tokio::time::sleep(wait).await;
        }
    }
}

/// Attempts a rate-limited call gets at least (the retry deadline bounds them too).
const RATE_LIMITED_ATTEMPTS: u32 = 12;

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(status: Option<u16>, attempt: u32, cache_hit: bool) -> CallRecord {
        CallRecord {
            at: SystemTime::now(),
            connection: "c".into(),
            table: "t".into(),
            method: "GET",
            url: "/x".into(),
            status,
            bytes: 10,
            latency: Duration::from_millis(2),
            attempt,
            error: None,
            cache_hit,
            query_id: 1,
            rows: None,
        }
    }

    #[test]
    fn counters_add_up() {
        let log = CallLog::default();
        log.record(rec(Some(429), 1, false));
        log.record(rec(Some(200), 2, false));
        log.record(rec(None, 1, false));
        log.record(rec(Some(200), 0, true));
        let c = log.counters().remove("c").unwrap_or_default();
        assert_eq!(
            (
                c.requests,
                c.cache_hits,
                c.errors,
                c.rate_limited,
                c.retries,
                c.bytes
            ),
            (3, 1, 2, 1, 1, 30)
        );
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let a = Auth::Bearer(Secret::new("tok-very-secret"));
        assert!(!format!("{a:?}").contains("very-secret"));
    }
}
