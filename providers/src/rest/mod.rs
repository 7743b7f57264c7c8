//! `kind = "rest"`: any JSON API, described in `joinery.toml` without a line of Rust.
//!
//! ```toml
//! [connections.billing]
//! kind = "rest"
//! base_url = "https://billing.internal/api"
//! token = "${BILLING_TOKEN}"                 # or username/password, or api_key + api_key_header/param
//! cache_ttl_s = 60                           # identical requests within a minute are served from memory
//! rate_limit = 10                            # requests per second (the API's headers can slow us more)
//! max_attempts = 5                           # retries on 429/5xx/timeouts, with backoff
//! breaker_threshold = 5                      # failed requests in a row that open the breaker
//!
//! [[connections.billing.tables]]
//! name = "invoices"
//! path = "/v1/invoices"
//! records = "data"
//! pagination = { type = "cursor", param = "starting_after", last_record = "id", has_more = "has_more" }
//! page_size = { param = "limit", max = 100 }
//! columns = [
//!   { name = "id", type = "text" },
//!   { name = "status", type = "text", description = "draft, open, paid, void" },
//!   { name = "created", type = "timestamp", format = "epoch_seconds" },
//! ]
//! filters = [ { column = "status", op = "eq", param = "status", exact = true } ]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use joinery_engine::rest::{Auth, FetchConfig, Fetcher, RestConnector, Secret, TableSpec};
use joinery_engine::{Connector, JoineryError, Result};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};

pub struct RestFactory;

fn string_map(spec: &ConnectionSpec, key: &str) -> Result<BTreeMap<String, String>> {
    match spec.options.get(key) {
        None => Ok(BTreeMap::new()),
        Some(serde_json::Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k.clone(), s.clone())),
                other => Ok((k.clone(), other.to_string())),
            })
            .collect(),
        Some(_) => Err(JoineryError::config(format!(
            "connection '{}': '{key}' must be a table of strings",
            spec.name
        ))),
    }
}

/// The auth options shared by every HTTP connector.
pub fn auth_from(spec: &ConnectionSpec) -> Result<Auth> {
    if let Some(token_url) = spec.str_option("oauth_token_url")? {
        let client_id = spec.str_option("client_id")?.ok_or_else(|| {
            JoineryError::config(format!("connection '{}': OAuth needs client_id", spec.name))
        })?;
        return Ok(Auth::OAuth2 {
            token_url: token_url.to_string(),
            client_id: client_id.to_string(),
            client_secret: Secret::new(spec.str_option("client_secret")?.unwrap_or_default()),
            refresh_token: spec.str_option("refresh_token")?.map(Secret::new),
            scope: spec.str_option("scope")?.map(str::to_string),
        });
    }
    let token = spec.str_option("token")?;
    let user = spec.str_option("username")?;
    let password = spec.str_option("password")?;
    let key = spec.str_option("api_key")?;
    let header = spec.str_option("api_key_header")?;
    let param = spec.str_option("api_key_param")?;
    Ok(match (token, user, key) {
        (Some(t), None, None) => Auth::Bearer(Secret::new(t)),
        (None, Some(u), None) => Auth::Basic {
            user: u.to_string(),
            password: Secret::new(password.unwrap_or_default()),
        },
        (None, None, Some(k)) => match (header, param) {
            (Some(h), None) => Auth::Header {
                name: h.to_string(),
                value: Secret::new(k),
            },
            (None, Some(p)) => Auth::Query {
                param: p.to_string(),
                value: Secret::new(k),
            },
            _ => {
                return Err(JoineryError::config(format!(
                    "connection '{}': api_key needs exactly one of api_key_header or api_key_param",
                    spec.name
                )));
            }
        },
        (None, None, None) => Auth::None,
        _ => {
            return Err(JoineryError::config(format!(
                "connection '{}': use one of token, username/password or api_key",
                spec.name
            )));
        }
    })
}

/// A fetcher from the common HTTP options (`base_url`, auth, `headers`, `concurrency`,
/// `timeout_ms`, `max_attempts`).
pub fn fetcher_from(
    spec: &ConnectionSpec,
    ctx: &BuildContext,
    default_base: Option<&str>,
) -> Result<Arc<Fetcher>> {
    let base = spec.base_url.as_deref().or(default_base).ok_or_else(|| {
        JoineryError::config(format!("connection '{}' needs base_url", spec.name))
    })?;
    let mut cfg = FetchConfig::new(spec.name.clone(), base)?;
    cfg.auth = auth_from(spec)?;
    cfg.headers = string_map(spec, "headers")?.into_iter().collect();
    if let Some(n) = spec.u64_option("concurrency")? {
        cfg.concurrency = n.clamp(1, 256) as usize;
    }
    if let Some(ms) = spec.u64_option("timeout_ms")? {
        cfg.timeout = Duration::from_millis(ms.max(1));
    }
    if let Some(n) = spec.u64_option("max_attempts")? {
        cfg.retry.max_attempts = n.clamp(1, 20) as u32;
    }
    if let Some(s) = spec.u64_option("cache_ttl_s")? {
        cfg.cache_ttl = Duration::from_secs(s);
    }
    if let Some(mb) = spec.u64_option("cache_mb")? {
        cfg.cache_bytes = mb.saturating_mul(1024 * 1024);
    }
    if let Some(r) = spec.u64_option("rate_limit")? {
        cfg.rate_per_second = Some(r.clamp(1, 100_000) as u32);
    }
    if let Some(n) = spec.u64_option("breaker_threshold")? {
        cfg.breaker_threshold = n.clamp(1, 1000) as u32;
    }
    if let Some(s) = spec.u64_option("breaker_cooldown_s")? {
        cfg.breaker_cooldown = Duration::from_secs(s);
    }
    // Users' own refresh tokens kept in the secret store: rotated ones are written back too.
    if let Some(writer) = &ctx.secret_writer {
        let (writer, conn) = (writer.clone(), spec.name.clone());
        cfg.store_secret = Some(joinery_engine::rest::fetch::StoreSecretHook(Arc::new(
            move |name: &str, t: &Secret| match writer(name, t.expose()) {
                Ok(()) => {
                    tracing::info!(connection = %conn, secret = %name, "rotated user refresh token stored")
                }
                Err(e) => {
                    tracing::error!(connection = %conn, secret = %name, "cannot store the rotated user refresh token: {e}")
                }
            },
        )));
    }
    // A refresh token kept in the secret store: rotated ones are written back, encrypted.
    if let (Some(name), Some(writer)) = (spec.secret_refs.get("refresh_token"), &ctx.secret_writer)
    {
        let (name, writer, conn) = (name.clone(), writer.clone(), spec.name.clone());
        cfg.on_refresh_token = Some(joinery_engine::rest::fetch::RefreshHook(Arc::new(
            move |t: &Secret| match writer(&name, t.expose()) {
                Ok(()) => {
                    tracing::info!(connection = %conn, secret = %name, "rotated refresh token stored")
                }
                Err(e) => {
                    tracing::error!(connection = %conn, secret = %name, "cannot store the rotated refresh token: {e}")
                }
            },
        )));
    }
    Ok(Arc::new(Fetcher::new(cfg, ctx.calls.clone())?))
}

/// Keys every HTTP connector accepts.
pub const HTTP_KEYS: &[&str] = &[
    "oauth_token_url",
    "client_id",
    "client_secret",
    "refresh_token",
    "scope",
    "token",
    "username",
    "password",
    "api_key",
    "api_key_header",
    "api_key_param",
    "headers",
    "concurrency",
    "timeout_ms",
    "max_attempts",
    "cache_ttl_s",
    "cache_mb",
    "rate_limit",
    "breaker_threshold",
    "breaker_cooldown_s",
];

impl ConnectorFactory for RestFactory {
    fn kind(&self) -> &'static str {
        "rest"
    }

    fn description(&self) -> &'static str {
        "any JSON API, tables declared in the config"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        [&["tables", "vars"][..], HTTP_KEYS].concat()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let fetcher = fetcher_from(spec, ctx, None)?;
        let tables = match spec.options.get("tables") {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|t| {
                    TableSpec::from_json(t.clone()).map_err(|e| {
                        JoineryError::config(format!("connection '{}': {}", spec.name, e.message))
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            _ => {
                return Err(JoineryError::config(format!(
                    "connection '{}': declare its tables as [[connections.{}.tables]]",
                    spec.name, spec.name
                )));
            }
        };
        let vars = string_map(spec, "vars")?
            .into_iter()
            .map(|(k, v)| (k, vec![v]))
            .collect();
        Ok(Arc::new(RestConnector::try_new(
            "rest", tables, fetcher, vars,
        )?))
    }
}
