//! Health and usage of every connection, for `/metrics` (Prometheus), `joinery.connector_stats`
//! and `joinery.queries`.
//!
//! Every API call and database statement is already a [`CallRecord`] in the [`CallLog`]; the
//! log feeds them here. Prometheus series are kept by `prometheus-client`; the figures a SQL
//! table needs that a counter cannot give (percentiles, uptime, the last error) are kept beside
//! them, bounded.
//!
//! [`CallLog`]: crate::rest::CallLog

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::rest::fetch::CallRecord;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    connection: String,
    table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    connection: String,
    table: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    connection: String,
    table: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnLabels {
    connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueryLabels {
    status: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

fn connectors_histogram() -> Histogram {
    Histogram::new([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 8.0])
}

/// How a failed call failed (the `kind` label of `joinery_api_errors_total`).
pub fn error_kind(r: &CallRecord) -> Option<&'static str> {
    match (r.status, r.error.as_deref()) {
        (None, Some(e)) if e.contains("timed out") => Some("timeout"),
        (None, _) => Some("network"),
        (Some(429), _) => Some("rate_limited"),
        (Some(403), Some(e)) if e.contains("rate limit") => Some("rate_limited"),
        (Some(401 | 403), _) => Some("auth"),
        (Some(s), _) if s >= 500 => Some("server"),
        (Some(s), _) if s >= 400 => Some("client"),
        (Some(_), Some(_)) => Some("bad_response"),
        _ => None,
    }
}

/// Whether a failure is the service's (it counts against uptime), not the caller's.
fn service_failure(kind: &str) -> bool {
    matches!(kind, "timeout" | "network" | "server" | "bad_response")
}

/// Latencies kept per connection for percentiles.
const LATENCY_SAMPLES: usize = 1024;
/// Minutes of history for uptime.
const UPTIME_MINUTES: usize = 24 * 60;
/// Statements kept for `joinery.queries`.
pub const QUERIES_KEPT: usize = 1000;

/// What `joinery.connector_stats` shows of one connection.
#[derive(Debug, Clone, Default)]
pub struct ConnectionStats {
    /// Requests that reached the service (retries included).
    pub requests: u64,
    pub cache_hits: u64,
    /// Failed requests by kind.
    pub errors: BTreeMap<&'static str, u64>,
    pub retries: u64,
    pub bytes: u64,
    latencies: VecDeque<u32>,
    /// (minute since the epoch, requests, service failures, successes).
    minutes: VecDeque<(u64, u32, u32, u32)>,
    pub last_error: Option<(SystemTime, String)>,
    pub last_success: Option<SystemTime>,
    pub rate_limit_remaining: Option<f64>,
    pub breaker_open: bool,
}

impl ConnectionStats {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Share of requests that succeeded, in percent (`None` before the first request).
    pub fn success_pct(&self) -> Option<f64> {
        (self.requests > 0).then(|| {
            100.0 * (self.requests - self.error_count().min(self.requests)) as f64
                / self.requests as f64
        })
    }

    /// Share of the last 24 hours' active minutes in which the service answered: a minute
    /// with service failures (5xx, timeouts, resets, malformed bodies) and no successful
    /// request is a minute down; 429s and the caller's own errors do not count against it.
    pub fn uptime_pct(&self) -> Option<f64> {
        let since = minute_of(SystemTime::now()).saturating_sub(UPTIME_MINUTES as u64);
        let recent = || self.minutes.iter().filter(|m| m.0 >= since);
        let active = recent().count();
        (active > 0).then(|| {
            let down = recent()
                .filter(|(_, _, failures, ok)| *failures > 0 && *ok == 0)
                .count();
            100.0 * (active - down) as f64 / active as f64
        })
    }

    /// The `q`-quantile of recent request latencies, in milliseconds.
    pub fn latency_ms(&self, q: f64) -> Option<f64> {
        if self.latencies.is_empty() {
            return None;
        }
        let mut v: Vec<u32> = self.latencies.iter().copied().collect();
        v.sort_unstable();
        let i = ((v.len() as f64 - 1.0) * q).round() as usize;
        Some(v[i.min(v.len() - 1)] as f64 / 1000.0)
    }
}

/// One finished statement, for `joinery.queries`.
#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub query_id: u64,
    pub at: SystemTime,
    pub user: String,
    /// The statement, secret-like literals masked.
    pub statement: String,
    pub duration: Duration,
    /// Connections the statement called (or read from the cache).
    pub connectors: BTreeSet<String>,
    pub api_calls: u64,
    pub cache_hits: u64,
    pub bytes: u64,
    pub rows: Option<u64>,
    /// `ok` or the SQLSTATE.
    pub status: String,
}

impl QueryRecord {
    /// A statement that ran for `duration`; its calls are attached by [`Metrics::finish_query`].
    pub fn finished(
        query_id: u64,
        user: &str,
        statement: &str,
        duration: Duration,
        rows: Option<u64>,
        status: &str,
    ) -> QueryRecord {
        QueryRecord {
            query_id,
            at: SystemTime::now()
                .checked_sub(duration)
                .unwrap_or(UNIX_EPOCH),
            user: user.to_string(),
            statement: crate::audit::mask_statement(statement),
            duration,
            connectors: BTreeSet::new(),
            api_calls: 0,
            cache_hits: 0,
            bytes: 0,
            rows,
            status: status.to_string(),
        }
    }
}

/// Calls attributed to a statement that is still running.
#[derive(Debug, Default, Clone)]
pub struct QueryCalls {
    pub connectors: BTreeSet<String>,
    pub api_calls: u64,
    pub cache_hits: u64,
    pub bytes: u64,
    pub pages: u64,
    pub rows: u64,
}

/// Metrics of one process.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<TableLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    retries: Family<TableLabels, Counter>,
    cache: Family<CacheLabels, Counter>,
    bytes: Family<TableLabels, Counter>,
    latency: HistogramFamily<TableLabels>,
    rate_limit_remaining: Family<ConnLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    breaker_open: Family<ConnLabels, Gauge>,
    queries: Family<QueryLabels, Counter>,
    query_duration: Histogram,
    query_connectors: Histogram,
    query_api_calls: Histogram,
    /// Client connections open now (set by the front end).
    pub client_connections: Gauge,
    /// Client connections accepted since start.
    pub client_connections_total: Counter,
    stats: Mutex<BTreeMap<String, ConnectionStats>>,
    running: Mutex<BTreeMap<u64, QueryCalls>>,
    recent_queries: Mutex<VecDeque<QueryRecord>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("joinery");
        let requests = Family::<TableLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let retries = Family::<TableLabels, Counter>::default();
        let cache = Family::<CacheLabels, Counter>::default();
        let bytes = Family::<TableLabels, Counter>::default();
        let latency: HistogramFamily<TableLabels> =
            Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let rate_limit_remaining = Family::default();
        let breaker_open = Family::<ConnLabels, Gauge>::default();
        let queries = Family::<QueryLabels, Counter>::default();
        let query_duration = latency_histogram();
        let query_connectors = connectors_histogram();
        let query_api_calls = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        let client_connections = Gauge::default();
        let client_connections_total = Counter::default();
        registry.register(
            "api_requests",
            "Requests sent to a connection's API or database (retries included)",
            requests.clone(),
        );
        registry.register(
            "api_errors",
            "Failed requests by kind: timeout, network, rate_limited, auth, server, client, bad_response",
            errors.clone(),
        );
        registry.register(
            "api_retries",
            "Requests that retried an earlier attempt",
            retries.clone(),
        );
        registry.register(
            "cache_lookups",
            "Page reads answered from the cache (result=hit) or sent to the API (result=miss)",
            cache.clone(),
        );
        registry.register(
            "api_response_bytes",
            "Response bytes received",
            bytes.clone(),
        );
        registry.register(
            "api_request_duration_seconds",
            "Latency of each request",
            latency.clone(),
        );
        registry.register(
            "rate_limit_remaining",
            "Requests left in the API's current rate-limit window, from its own headers",
            rate_limit_remaining.clone(),
        );
        registry.register(
            "circuit_breaker_open",
            "1 while the connection's circuit breaker fails requests fast",
            breaker_open.clone(),
        );
        registry.register("queries", "Statements finished, by status", queries.clone());
        registry.register(
            "query_duration_seconds",
            "Statement duration",
            query_duration.clone(),
        );
        registry.register(
            "query_connectors",
            "Connections one statement used",
            query_connectors.clone(),
        );
        registry.register(
            "query_api_calls",
            "Requests one statement sent",
            query_api_calls.clone(),
        );
        registry.register(
            "client_connections",
            "Client connections open now",
            client_connections.clone(),
        );
        registry.register(
            "client_connections_accepted",
            "Client connections accepted since start",
            client_connections_total.clone(),
        );
        Metrics {
            registry,
            requests,
            errors,
            retries,
            cache,
            bytes,
            latency,
            rate_limit_remaining,
            breaker_open,
            queries,
            query_duration,
            query_connectors,
            query_api_calls,
            client_connections,
            client_connections_total,
            stats: Mutex::new(BTreeMap::new()),
            running: Mutex::new(BTreeMap::new()),
            recent_queries: Mutex::new(VecDeque::new()),
        }
    }
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / 60
}

impl Metrics {
    /// Count one call.
    pub fn on_call(&self, r: &CallRecord) {
        let labels = TableLabels {
            connection: r.connection.clone(),
            table: r.table.clone(),
        };
        let kind = error_kind(r);
        self.cache
            .get_or_create(&CacheLabels {
                connection: r.connection.clone(),
                table: r.table.clone(),
                result: if r.cache_hit { "hit" } else { "miss" }.into(),
            })
            .inc();
        if !r.cache_hit {
            self.requests.get_or_create(&labels).inc();
            self.bytes.get_or_create(&labels).inc_by(r.bytes);
            self.latency
                .get_or_create(&labels)
                .observe(r.latency.as_secs_f64());
            if r.attempt > 1 {
                self.retries.get_or_create(&labels).inc();
            }
            if let Some(k) = kind {
                self.errors
                    .get_or_create(&ErrorLabels {
                        connection: r.connection.clone(),
                        table: r.table.clone(),
                        kind: k.into(),
                    })
                    .inc();
            }
        }
        if let Ok(mut all) = self.stats.lock() {
            let s = all.entry(r.connection.clone()).or_default();
            if r.cache_hit {
                s.cache_hits += 1;
            } else {
                s.requests += 1;
                s.bytes += r.bytes;
                if r.attempt > 1 {
                    s.retries += 1;
                }
                if s.latencies.len() == LATENCY_SAMPLES {
                    s.latencies.pop_front();
                }
                s.latencies
                    .push_back(r.latency.as_micros().min(u32::MAX as u128) as u32);
                let minute = minute_of(r.at);
                // Records arrive about in order; a late one joins the newest minute.
                let minute = s.minutes.back().map_or(minute, |m| minute.max(m.0));
                if s.minutes.back().is_none_or(|m| m.0 != minute) {
                    if s.minutes.len() == UPTIME_MINUTES {
                        s.minutes.pop_front();
                    }
                    s.minutes.push_back((minute, 0, 0, 0));
                }
                if let Some(m) = s.minutes.back_mut() {
                    m.1 += 1;
                    match kind {
                        Some(k) if service_failure(k) => m.2 += 1,
                        Some(_) => {}
                        None => m.3 += 1,
                    }
                }
                match kind {
                    Some(k) => {
                        *s.errors.entry(k).or_default() += 1;
                        let what = match (&r.error, r.status) {
                            (Some(e), _) => format!("{} {}: {e}", r.method, r.url),
                            (None, Some(st)) => format!("{} {}: HTTP {st}", r.method, r.url),
                            (None, None) => format!("{} {}: failed", r.method, r.url),
                        };
                        s.last_error = Some((r.at, what));
                    }
                    None => s.last_success = Some(r.at),
                }
            }
        }
        // Only statements that began and have not finished: a call landing after its statement
        // ended (a fetch that outlived a cancelled query) does not bring it back.
        if r.query_id != 0
            && let Ok(mut running) = self.running.lock()
            && let Some(q) = running.get_mut(&r.query_id)
        {
            q.connectors.insert(r.connection.clone());
            if r.cache_hit {
                q.cache_hits += 1;
            } else {
                q.api_calls += 1;
                q.bytes += r.bytes;
            }
            if kind.is_none() {
                q.pages += 1;
                q.rows += r.rows.unwrap_or(0);
            }
        }
    }

    /// A statement starts: its calls are counted from now until [`Metrics::finish_query`].
    pub fn begin_query(&self, query_id: u64) {
        if let Ok(mut running) = self.running.lock() {
            running.insert(query_id, QueryCalls::default());
            // Statements that never finish (a crashed client) must not grow this forever.
            while running.len() > QUERIES_KEPT * 10 {
                running.pop_first();
            }
        }
    }

    /// A failure found in an answer that arrived fine (a cursor that repeats, a page that does
    /// not decode): counted as an error of the connection, with no request of its own.
    pub fn note_error(&self, connection: &str, table: &str, kind: &'static str, message: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                connection: connection.to_string(),
                table: table.to_string(),
                kind: kind.into(),
            })
            .inc();
        if let Ok(mut all) = self.stats.lock() {
            let s = all.entry(connection.to_string()).or_default();
            *s.errors.entry(kind).or_default() += 1;
            s.last_error = Some((SystemTime::now(), message.to_string()));
        }
    }

    /// The API's own count of requests left in its window.
    pub fn set_rate_limit_remaining(&self, connection: &str, remaining: f64) {
        self.rate_limit_remaining
            .get_or_create(&ConnLabels {
                connection: connection.to_string(),
            })
            .set(remaining);
        if let Ok(mut all) = self.stats.lock() {
            all.entry(connection.to_string())
                .or_default()
                .rate_limit_remaining = Some(remaining);
        }
    }

    pub fn set_breaker_open(&self, connection: &str, open: bool) {
        self.breaker_open
            .get_or_create(&ConnLabels {
                connection: connection.to_string(),
            })
            .set(i64::from(open));
        if let Ok(mut all) = self.stats.lock() {
            all.entry(connection.to_string()).or_default().breaker_open = open;
        }
    }

    /// What a running statement has fetched so far (progress notices).
    pub fn query_progress(&self, query_id: u64) -> Option<QueryCalls> {
        self.running.lock().ok()?.get(&query_id).cloned()
    }

    /// What every running statement has fetched so far, summed (a CLI progress line).
    pub fn running_totals(&self) -> QueryCalls {
        let mut total = QueryCalls::default();
        if let Ok(running) = self.running.lock() {
            for q in running.values() {
                total.connectors.extend(q.connectors.iter().cloned());
                total.api_calls += q.api_calls;
                total.cache_hits += q.cache_hits;
                total.bytes += q.bytes;
                total.pages += q.pages;
                total.rows += q.rows;
            }
        }
        total
    }

    /// Record a finished statement; its calls are attached to it.
    pub fn finish_query(&self, mut q: QueryRecord) {
        if let Some(calls) = self
            .running
            .lock()
            .ok()
            .and_then(|mut r| r.remove(&q.query_id))
        {
            q.connectors = calls.connectors;
            q.api_calls = calls.api_calls;
            q.cache_hits = calls.cache_hits;
            q.bytes = calls.bytes;
        }
        self.queries
            .get_or_create(&QueryLabels {
                status: q.status.clone(),
            })
            .inc();
        self.query_duration.observe(q.duration.as_secs_f64());
        self.query_connectors.observe(q.connectors.len() as f64);
        self.query_api_calls.observe(q.api_calls as f64);
        if let Ok(mut recent) = self.recent_queries.lock() {
            if recent.len() == QUERIES_KEPT {
                recent.pop_front();
            }
            recent.push_back(q);
        }
    }

    pub fn connection_stats(&self) -> BTreeMap<String, ConnectionStats> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn recent_queries(&self) -> Vec<QueryRecord> {
        self.recent_queries
            .lock()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(status: Option<u16>, error: Option<&str>, ms: u64) -> CallRecord {
        CallRecord {
            at: SystemTime::now(),
            connection: "gh".into(),
            table: "issues".into(),
            method: "GET",
            url: "/repos/a/b/issues".into(),
            status,
            bytes: 100,
            latency: Duration::from_millis(ms),
            attempt: 1,
            error: error.map(str::to_string),
            cache_hit: false,
            query_id: 7,
            rows: Some(10),
        }
    }

    #[test]
    fn stats_percentiles_uptime_and_exposition() {
        let m = Metrics::default();
        m.begin_query(7);
        for ms in 1..=100 {
            m.on_call(&call(Some(200), None, ms));
        }
        m.on_call(&call(Some(503), None, 5));
        m.on_call(&call(None, Some("timed out"), 30_000));
        m.on_call(&call(Some(429), None, 1));
        let s = m.connection_stats().remove("gh").expect("stats");
        assert_eq!(s.requests, 103);
        assert_eq!(s.errors.get("server"), Some(&1));
        assert_eq!(s.errors.get("timeout"), Some(&1));
        assert_eq!(s.errors.get("rate_limited"), Some(&1));
        // Successes in the same minute: the service was up.
        assert_eq!(s.uptime_pct(), Some(100.0));
        let p50 = s.latency_ms(0.5).expect("p50");
        assert!((45.0..=56.0).contains(&p50), "{p50}");
        assert!(s.last_error.is_some());
        let text = m.encode();
        assert!(
            text.contains(r#"joinery_api_requests_total{connection="gh",table="issues"} 103"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"joinery_api_errors_total{connection="gh",table="issues",kind="timeout"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains("joinery_api_request_duration_seconds_bucket"),
            "{text}"
        );

        let progress = m.query_progress(7).expect("running");
        assert_eq!((progress.pages, progress.rows), (100, 1000));
        m.finish_query(QueryRecord::finished(
            7,
            "u",
            "SELECT 1",
            Duration::from_millis(3),
            Some(1),
            "ok",
        ));
        let q = m.recent_queries().pop().expect("query");
        assert_eq!(q.api_calls, 103);
        assert_eq!(q.connectors.len(), 1);
        assert!(m.query_progress(7).is_none());
    }

    #[test]
    fn a_minute_of_only_service_failures_is_down() {
        let m = Metrics::default();
        m.on_call(&call(Some(500), None, 1));
        m.on_call(&call(None, Some("connection failed"), 1));
        let s = m.connection_stats().remove("gh").expect("stats");
        assert_eq!(s.uptime_pct(), Some(0.0));
        assert_eq!(s.success_pct(), Some(0.0));
    }
}
