//! `joinery.toml`: the `[server]` section and one `[connections.<name>]` section per connection.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:5433"      # where the Postgres wire server listens
//! max_connections = 500
//! query_memory_limit = "1GiB"    # memory one statement may use
//! statement_timeout = "0"        # default per session; "30s", "500ms", or milliseconds
//! database = "joinery"           # what current_database() answers
//! metrics_listen = "127.0.0.1:9187"  # /metrics (Prometheus) and /healthz; "off" to disable
//!
//! [connections.github]           # the connection's name is its SQL schema
//! kind = "github"
//! base_url = "https://api.github.com"
//! token = "${GITHUB_TOKEN}"      # ${NAME} reads an environment variable
//! ```
//!
//! Users, TLS and grants (see the README's security section):
//!
//! ```toml
//! [server]
//! auth = "scram"                 # "trust" (loopback clients only) is the default without users
//! tls_cert = "server.crt"        # PEM; relative paths are relative to this file
//! tls_key = "server.key"
//! require_tls = true             # refuse plaintext connections
//!
//! [users.alice]
//! password = "SCRAM-SHA-256$4096:...$..."   # from `joinery password`
//! admin = true
//! grants = ["github", "warehouse"]          # connections alice sees; "*" for all
//! roles = ["analysts"]                      # plus what these roles are granted
//!
//! [roles.analysts]
//! grants = ["salesforce"]
//! ```
//!
//! `[server] grants_file` keeps what admins change with SQL GRANT/REVOKE (default
//! `joinery-grants.json` beside this file).
//!
//! Unknown keys and kinds are errors naming the key and the line.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::auth::{AuthMethod, UserConfig, parse_verifier};

use joinery_engine::{EngineConfig, JoineryError, Result};
use joinery_providers::{ConnectionSpec, factories, factory_for};
use serde::Deserialize;
use toml::Spanned;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:5433";
pub const DEFAULT_METRICS_PORT: u16 = 9187;
pub const DEFAULT_MAX_CONNECTIONS: usize = 500;
pub const DEFAULT_DATABASE: &str = "joinery";

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `/metrics` and `/healthz` (`None`: off).
    pub metrics_listen: Option<SocketAddr>,
    pub max_connections: usize,
    pub statement_timeout: Option<Duration>,
    pub database: String,
    pub engine: EngineConfig,
    pub auth: AuthMethod,
    /// PEM certificate and key files.
    pub tls: Option<(PathBuf, PathBuf)>,
    pub require_tls: bool,
    /// `[users.<name>]`; empty: anyone may connect from loopback (trust).
    pub users: Arc<BTreeMap<String, UserConfig>>,
    /// `[[row_filters]]`.
    pub row_filters: Arc<Vec<RowFilter>>,
    /// Users, roles, grants (config and SQL) and row filters, as sessions see them.
    pub access: Arc<crate::access::AccessControl>,
    /// `[secrets]`, for `joinery.rotate_secret(...)`.
    pub secrets: Option<SecretsConfig>,
}

/// `[[row_filters]]`: rows of `table` a user may read.
#[derive(Debug, Clone)]
pub struct RowFilter {
    pub schema: String,
    pub table: String,
    /// A SQL predicate over the table's columns; `current_user` is the user's name.
    pub filter: String,
    /// Whom it applies to; with neither `users` nor `roles`: every user who is not an admin.
    pub users: Option<std::collections::BTreeSet<String>>,
    /// Members of these roles.
    pub roles: Option<std::collections::BTreeSet<String>>,
}

impl ServerConfig {
    /// The connections `user` may see (`None`: all).
    pub fn grants_of(&self, user: &str) -> Option<std::collections::BTreeSet<String>> {
        self.access.grants_of(user)
    }

    /// What `user` may reach, for their sessions.
    pub fn access_of(&self, user: &str) -> joinery_engine::grants::Access {
        joinery_engine::grants::AccessSource::access_of(self.access.as_ref(), user)
    }

    /// Platform admin (everyone when no users are configured: a single-user local setup).
    pub fn is_admin(&self, user: &str) -> bool {
        self.access.is_admin(user)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 5433))),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_METRICS_PORT))),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            statement_timeout: None,
            database: DEFAULT_DATABASE.to_string(),
            engine: EngineConfig::default(),
            auth: AuthMethod::Trust,
            tls: None,
            require_tls: false,
            users: Arc::new(BTreeMap::new()),
            row_filters: Arc::new(Vec::new()),
            access: Arc::new(crate::access::AccessControl::default()),
            secrets: None,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Config {
    pub server: ServerConfig,
    pub connections: Vec<ConnectionSpec>,
    pub secrets: Option<SecretsConfig>,
    pub audit: Option<AuditConfig>,
    /// Secrets the connections refer to.
    pub secrets_used: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<RawServer>,
    #[serde(default)]
    connections: BTreeMap<String, BTreeMap<String, Spanned<toml::Value>>>,
    #[serde(default)]
    users: BTreeMap<String, RawUser>,
    secrets: Option<RawSecrets>,
    audit: Option<RawAudit>,
    #[serde(default)]
    row_filters: Vec<RawRowFilter>,
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRole {
    grants: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRowFilter {
    /// `connection.table`.
    table: String,
    filter: String,
    users: Option<Vec<String>>,
    roles: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    /// The JSON-lines file (appended; created 0600).
    path: String,
    /// Fail a statement whose audit rows cannot be written (default true).
    fail_closed: Option<bool>,
}

/// `[audit]`: where the audit log goes.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    pub path: PathBuf,
    pub fail_closed: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecrets {
    /// The encrypted store file.
    path: String,
    /// The key file (0600); `JOINERY_SECRET_KEY` takes precedence.
    key_file: Option<String>,
}

/// Where the secret store is, for `joinery secrets` and the server.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    pub path: PathBuf,
    pub key_file: Option<PathBuf>,
}

impl SecretsConfig {
    /// Only the `[secrets]` section of a config file (what `joinery secrets` needs: the
    /// connections may refer to secrets not stored yet).
    pub fn from_file(path: &Path) -> Result<Option<SecretsConfig>> {
        #[derive(Deserialize)]
        struct Only {
            secrets: Option<RawSecrets>,
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            JoineryError::config(format!("cannot read config {}: {e}", path.display()))
        })?;
        let only: Only = toml::from_str(&text)
            .map_err(|e| JoineryError::config(format!("{}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        Ok(only.secrets.map(|s| SecretsConfig {
            path: dir.join(&s.path),
            key_file: s.key_file.as_deref().map(|k| dir.join(k)),
        }))
    }

    pub fn open(&self) -> Result<crate::secrets::SecretStore> {
        let key =
            crate::secrets::load_key(self.key_file.as_deref()).map_err(JoineryError::config)?;
        crate::secrets::SecretStore::open(&self.path, key).map_err(JoineryError::config)
    }
}

thread_local! {
    /// The store `${secret:NAME}` reads while a config is parsed, and the names it read.
    static PARSING_SECRETS: std::cell::RefCell<Option<(std::rc::Rc<crate::secrets::SecretStore>, Vec<String>)>> =
        const { std::cell::RefCell::new(None) };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    password: Option<String>,
    #[serde(default)]
    admin: bool,
    grants: Option<Vec<String>>,
    /// The user's own upstream tokens, by connection (`${secret:...}` recommended).
    #[serde(default)]
    credentials: BTreeMap<String, String>,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_connections: Option<usize>,
    query_memory_limit: Option<toml::Value>,
    statement_timeout: Option<toml::Value>,
    database: Option<String>,
    auth: Option<String>,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    require_tls: Option<bool>,
    /// Where SQL GRANT/REVOKE persist (default: `joinery-grants.json` beside the config).
    grants_file: Option<String>,
    /// `/metrics` and `/healthz`: an address, or "off".
    metrics_listen: Option<String>,
}

/// `filter` with the word `current_user` (outside string literals) replaced by `user` as a
/// quoted literal.
pub fn with_current_user(filter: &str, user: &str) -> String {
    let lit = format!("'{}'", user.replace('\'', "''"));
    let mut out = String::new();
    for (i, part) in filter.split('\'').enumerate() {
        if i > 0 {
            out.push('\'');
        }
        if i % 2 == 1 {
            out.push_str(part);
            continue;
        }
        let mut rest = part;
        while let Some(pos) = rest.to_ascii_lowercase().find("current_user") {
            let before = rest[..pos].chars().last();
            let after = rest[pos + 12..].chars().next();
            let word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
            out.push_str(&rest[..pos]);
            if word(before) || word(after) {
                out.push_str(&rest[pos..pos + 12]);
            } else {
                out.push_str(&lit);
            }
            rest = &rest[pos + 12..];
        }
        out.push_str(rest);
    }
    out
}

/// Where a byte offset of the source lies, for messages.
fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            JoineryError::config(format!("cannot read config {}: {e}", path.display()))
        })?;
        let dir = path.parent().map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".").to_path_buf()
            } else {
                p.to_path_buf()
            }
        });
        let mut cfg = Self::parse_in(&text, &path.display().to_string(), dir.as_deref())?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    p
                }
            })
            .map(Path::to_path_buf);
        for c in &mut cfg.connections {
            c.base_dir = base.clone();
        }
        if let (Some((cert, key)), Some(base)) = (&mut cfg.server.tls, &base) {
            *cert = base.join(&cert);
            *key = base.join(&key);
        }
        Ok(cfg)
    }

    /// Parse config text; `origin` names the file in messages.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        Self::parse_in(text, origin, None)
    }

    /// Parse config text whose relative paths are relative to `dir`.
    pub fn parse_in(text: &str, origin: &str, dir: Option<&Path>) -> Result<Config> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| JoineryError::config(format!("{origin}: {e}")))?;
        let mut cfg = Config::default();
        let resolve = |p: &str| match dir {
            Some(d) => d.join(p),
            None => PathBuf::from(p),
        };
        if let Some(s) = &raw.secrets {
            let sc = SecretsConfig {
                path: resolve(&s.path),
                key_file: s.key_file.as_deref().map(resolve),
            };
            cfg.server.secrets = Some(sc.clone());
            cfg.secrets = Some(sc);
        }
        if let Some(a) = &raw.audit {
            cfg.audit = Some(AuditConfig {
                path: resolve(&a.path),
                fail_closed: a.fail_closed.unwrap_or(true),
            });
        }
        let store = match &cfg.secrets {
            Some(sc) if text.contains("${secret:") => Some(std::rc::Rc::new(sc.open()?)),
            _ => None,
        };
        PARSING_SECRETS.with(|p| *p.borrow_mut() = store.map(|s| (s, Vec::new())));
        let grants_file = match raw.server.as_ref().and_then(|s| s.grants_file.as_deref()) {
            Some(f) => Some(resolve(f)),
            None if !raw.users.is_empty() => dir.map(|d| d.join("joinery-grants.json")),
            None => None,
        };
        let parsed = Self::parse_raw(raw, cfg, text, origin, grants_file);
        let used = PARSING_SECRETS.with(|p| p.borrow_mut().take().map(|(_, u)| u));
        let mut cfg = parsed?;
        cfg.secrets_used = used.unwrap_or_default();
        cfg.secrets_used.sort();
        cfg.secrets_used.dedup();
        Ok(cfg)
    }

    fn parse_raw(
        raw: RawConfig,
        mut cfg: Config,
        text: &str,
        origin: &str,
        grants_file: Option<PathBuf>,
    ) -> Result<Config> {
        if let Some(s) = raw.server {
            if let Some(listen) = s.listen {
                cfg.server.listen = parse_listen(&listen)
                    .map_err(|e| JoineryError::config(format!("{origin}: [server] listen: {e}")))?;
            }
            match s.metrics_listen.as_deref() {
                None => {}
                Some("off") => cfg.server.metrics_listen = None,
                Some(a) => {
                    cfg.server.metrics_listen = Some(parse_listen(a).map_err(|e| {
                        JoineryError::config(format!("{origin}: [server] metrics_listen: {e}"))
                    })?);
                }
            }
            if let Some(n) = s.max_connections {
                if n == 0 {
                    return Err(JoineryError::config(format!(
                        "{origin}: [server] max_connections must be at least 1"
                    )));
                }
                cfg.server.max_connections = n;
            }
            if let Some(v) = s.query_memory_limit {
                cfg.server.engine.query_memory_limit = parse_bytes(&v).map_err(|e| {
                    JoineryError::config(format!("{origin}: [server] query_memory_limit: {e}"))
                })?;
            }
            if let Some(v) = s.statement_timeout {
                let d = match &v {
                    toml::Value::Integer(ms) if *ms >= 0 => Duration::from_millis(*ms as u64),
                    toml::Value::String(s) => parse_duration(s).map_err(|e| {
                        JoineryError::config(format!("{origin}: [server] statement_timeout: {e}"))
                    })?,
                    _ => {
                        return Err(JoineryError::config(format!(
                            "{origin}: [server] statement_timeout must be a duration such as \"30s\""
                        )));
                    }
                };
                cfg.server.statement_timeout = (!d.is_zero()).then_some(d);
            }
            if let Some(db) = s.database {
                cfg.server.database = db;
            }
            cfg.server.auth = match s.auth.as_deref() {
                None if raw.users.is_empty() => AuthMethod::Trust,
                None | Some("scram" | "scram-sha-256") => AuthMethod::Scram,
                Some("trust") => AuthMethod::Trust,
                Some(other) => {
                    return Err(JoineryError::config(format!(
                        "{origin}: [server] auth = \"{other}\": expected \"scram\" or \"trust\""
                    )));
                }
            };
            match (s.tls_cert, s.tls_key) {
                (Some(c), Some(k)) => cfg.server.tls = Some((c.into(), k.into())),
                (None, None) => {}
                _ => {
                    return Err(JoineryError::config(format!(
                        "{origin}: [server] tls_cert and tls_key go together"
                    )));
                }
            }
            cfg.server.require_tls = s.require_tls.unwrap_or(false);
            if cfg.server.require_tls && cfg.server.tls.is_none() {
                return Err(JoineryError::config(format!(
                    "{origin}: [server] require_tls needs tls_cert and tls_key"
                )));
            }
        } else if !raw.users.is_empty() {
            cfg.server.auth = AuthMethod::Scram;
        }
        if cfg.server.auth == AuthMethod::Scram && raw.users.is_empty() {
            return Err(JoineryError::config(format!(
                "{origin}: [server] auth = \"scram\" needs at least one [users.<name>] section"
            )));
        }
        for (name, table) in raw.connections {
            cfg.connections
                .push(connection_spec(text, origin, &name, table)?);
        }
        let mut users = BTreeMap::new();
        for (name, u) in raw.users {
            let verifier = match (&u.password, cfg.server.auth) {
                (Some(p), _) => Some(parse_verifier(p).map_err(|e| {
                    JoineryError::config(format!("{origin}: [users.{name}] password: {e}"))
                })?),
                (None, AuthMethod::Scram) => {
                    return Err(JoineryError::config(format!(
                        "{origin}: [users.{name}] has no password (make one with `joinery password`)"
                    )));
                }
                (None, AuthMethod::Trust) => None,
            };
            // A member of roles gets what the roles give unless `grants` says more.
            let grants = match (u.grants, u.roles.is_empty()) {
                (None, false) => Some(Default::default()),
                (g, _) => connection_list(&cfg, g, origin, &format!("[users.{name}]"))?,
            };
            if name == crate::access::PUBLIC {
                return Err(JoineryError::config(format!(
                    "{origin}: [users.public]: \"public\" is the name of every user in GRANT ... TO PUBLIC"
                )));
            }
            for r in &u.roles {
                if !raw.roles.contains_key(r) {
                    return Err(JoineryError::config(format!(
                        "{origin}: [users.{name}] roles names '{r}', which is not in [roles]"
                    )));
                }
            }
            let mut credentials = BTreeMap::new();
            let mut credential_secrets = BTreeMap::new();
            for (conn, value) in &u.credentials {
                if let Some(secret) = value
                    .strip_prefix("${secret:")
                    .and_then(|r| r.strip_suffix('}'))
                {
                    credential_secrets.insert(conn.clone(), secret.to_string());
                }
                if !cfg.connections.iter().any(|s| &s.name == conn) {
                    return Err(JoineryError::config(format!(
                        "{origin}: [users.{name}.credentials] names '{conn}', which is not a connection"
                    )));
                }
                let v = interpolate(value).map_err(|e| {
                    JoineryError::config(format!(
                        "{origin}: [users.{name}.credentials] {conn}: {e}"
                    ))
                })?;
                credentials.insert(conn.clone(), joinery_engine::rest::Secret::new(v));
            }
            users.insert(
                name,
                UserConfig {
                    verifier,
                    admin: u.admin,
                    grants,
                    credentials,
                    roles: u.roles,
                    credential_secrets,
                },
            );
        }
        let mut roles = BTreeMap::new();
        for (name, r) in raw.roles {
            if users.contains_key(&name) || name == crate::access::PUBLIC {
                return Err(JoineryError::config(format!(
                    "{origin}: [roles.{name}]: a role cannot share its name with a user or PUBLIC"
                )));
            }
            // A role without `grants` gives nothing until granted ("*" gives every connection).
            let grants = match r.grants {
                None => Some(Default::default()),
                g => connection_list(&cfg, g, origin, &format!("[roles.{name}]"))?,
            };
            roles.insert(name, crate::access::RoleConfig { grants });
        }
        let mut filters = Vec::new();
        for f in raw.row_filters {
            let Some((schema, table)) = f.table.split_once('.') else {
                return Err(JoineryError::config(format!(
                    "{origin}: [[row_filters]] table '{}' must be connection.table",
                    f.table
                )));
            };
            if !cfg.connections.iter().any(|c| c.name == schema) {
                return Err(JoineryError::config(format!(
                    "{origin}: [[row_filters]] table '{}': no connection '{schema}'",
                    f.table
                )));
            }
            if let Some(u) = &f.users
                && let Some(bad) = u.iter().find(|u| !users.contains_key(*u))
            {
                return Err(JoineryError::config(format!(
                    "{origin}: [[row_filters]] on '{}' names user '{bad}', who is not in [users]",
                    f.table
                )));
            }
            if let Some(r) = &f.roles
                && let Some(bad) = r.iter().find(|r| !roles.contains_key(*r))
            {
                return Err(JoineryError::config(format!(
                    "{origin}: [[row_filters]] on '{}' names role '{bad}', which is not in [roles]",
                    f.table
                )));
            }
            filters.push(RowFilter {
                schema: schema.to_string(),
                table: table.to_string(),
                filter: f.filter,
                users: f.users.map(|u| u.into_iter().collect()),
                roles: f.roles.map(|r| r.into_iter().collect()),
            });
        }
        cfg.server.users = Arc::new(users);
        cfg.server.row_filters = Arc::new(filters);
        cfg.server.access = Arc::new(
            crate::access::AccessControl::new(
                cfg.server.users.clone(),
                roles,
                cfg.server.row_filters.as_ref().clone(),
                cfg.connections.iter().map(|c| c.name.clone()).collect(),
                grants_file,
            )
            .map_err(|e| JoineryError::config(format!("{origin}: {e}")))?,
        );
        Ok(cfg)
    }
}

/// A `grants = [...]` list: connection names, or `"*"` for all (`None`).
fn connection_list(
    cfg: &Config,
    list: Option<Vec<String>>,
    origin: &str,
    section: &str,
) -> Result<Option<std::collections::BTreeSet<String>>> {
    match list {
        None => Ok(None),
        Some(g) if g.iter().any(|x| x == "*") => Ok(None),
        Some(g) => {
            for c in &g {
                if !cfg.connections.iter().any(|s| &s.name == c) {
                    return Err(JoineryError::config(format!(
                        "{origin}: {section} grants names '{c}', which is not a connection"
                    )));
                }
            }
            Ok(Some(g.into_iter().collect()))
        }
    }
}

fn connection_spec(
    text: &str,
    origin: &str,
    name: &str,
    table: BTreeMap<String, Spanned<toml::Value>>,
) -> Result<ConnectionSpec> {
    let valid_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if !valid_name {
        return Err(JoineryError::config(format!(
            "{origin}: connection name '{name}' must be lowercase letters, digits and '_' (it becomes a SQL schema)"
        )));
    }
    let at = |v: &Spanned<toml::Value>| format!("{origin} line {}", line_of(text, v.span().start));
    let kind = match table.get("kind") {
        Some(v) => match v.get_ref() {
            toml::Value::String(s) => s.clone(),
            _ => {
                return Err(JoineryError::config(format!(
                    "{}: [connections.{name}] kind must be a string",
                    at(v)
                )));
            }
        },
        None => {
            return Err(JoineryError::config(format!(
                "{origin}: [connections.{name}] has no kind; known kinds: {}",
                known_kinds()
            )));
        }
    };
    let Some(factory) = factory_for(&kind) else {
        let v = &table["kind"];
        return Err(JoineryError::config(format!(
            "{}: [connections.{name}] unknown kind '{kind}'; known kinds: {}",
            at(v),
            known_kinds()
        )));
    };
    let mut spec = ConnectionSpec {
        name: name.to_string(),
        kind: kind.clone(),
        base_url: None,
        options: BTreeMap::new(),
        base_dir: None,
        secret_refs: Default::default(),
    };
    for (key, value) in &table {
        match key.as_str() {
            "kind" => {}
            "base_url" => match value.get_ref() {
                toml::Value::String(s) => {
                    spec.base_url = Some(interpolate(s).map_err(|e| {
                        JoineryError::config(format!(
                            "{}: [connections.{name}] base_url: {e}",
                            at(value)
                        ))
                    })?)
                }
                _ => {
                    return Err(JoineryError::config(format!(
                        "{}: [connections.{name}] base_url must be a string",
                        at(value)
                    )));
                }
            },
            other if factory.option_keys().contains(&other) => {
                if let toml::Value::String(v) = value.get_ref()
                    && let Some(name) = v
                        .strip_prefix("${secret:")
                        .and_then(|r| r.strip_suffix('}'))
                {
                    spec.secret_refs.insert(other.to_string(), name.to_string());
                }
                let json = to_json(value.get_ref()).map_err(|e| {
                    JoineryError::config(format!(
                        "{}: [connections.{name}] {other}: {e}",
                        at(value)
                    ))
                })?;
                spec.options.insert(other.to_string(), json);
            }
            other => {
                let allowed: Vec<&str> = ["kind", "base_url"]
                    .into_iter()
                    .chain(factory.option_keys().iter().copied())
                    .collect();
                return Err(JoineryError::config(format!(
                    "{}: [connections.{name}] unknown key '{other}' for kind '{kind}'; allowed keys: {}",
                    at(value),
                    allowed.join(", ")
                )));
            }
        }
    }
    Ok(spec)
}

fn known_kinds() -> String {
    factories()
        .iter()
        .map(|f| f.kind())
        .collect::<Vec<_>>()
        .join(", ")
}

/// TOML to JSON, resolving `${NAME}` in every string.
fn to_json(v: &toml::Value) -> std::result::Result<serde_json::Value, String> {
    Ok(match v {
        toml::Value::String(s) => serde_json::Value::String(interpolate(s)?),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Value::from(*f),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(
            a.iter()
                .map(to_json)
                .collect::<std::result::Result<_, _>>()?,
        ),
        toml::Value::Table(t) => serde_json::Value::Object(
            t.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<std::result::Result<_, String>>()?,
        ),
    })
}

/// Replace `${NAME}` with the environment variable NAME. `$${` escapes a literal `${`.
/// The error names the variable, never a value.
pub fn interpolate(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i..];
        if let Some(stripped) = after.strip_prefix("$${") {
            out.push_str("${");
            rest = stripped;
        } else if let Some(body) = after.strip_prefix("${") {
            let end = body
                .find('}')
                .ok_or_else(|| "unterminated ${...} reference".to_string())?;
            let name = &body[..end];
            if let Some(secret) = name.strip_prefix("secret:") {
                let val = PARSING_SECRETS.with(|p| {
                    let mut p = p.borrow_mut();
                    let Some((store, used)) = p.as_mut() else {
                        return Err(format!(
                            "'${{{name}}}' refers to the secret store, but the config has no [secrets] section"
                        ));
                    };
                    used.push(secret.to_string());
                    store.get(secret)
                })?;
                out.push_str(&val);
                rest = &body[end + 1..];
                continue;
            }
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!(
                    "'${{{name}}}' is not a valid environment variable reference"
                ));
            }
            let val = std::env::var(name)
                .map_err(|_| format!("environment variable {name} is not set"))?;
            out.push_str(&val);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = &after[1..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

pub fn parse_listen(s: &str) -> std::result::Result<SocketAddr, String> {
    use std::net::ToSocketAddrs;
    s.to_socket_addrs()
        .map_err(|e| format!("'{s}' is not a host:port address ({e})"))?
        .next()
        .ok_or_else(|| format!("'{s}' resolves to no address"))
}

/// "1GiB", "512MB", "1048576" or an integer.
fn parse_bytes(v: &toml::Value) -> std::result::Result<usize, String> {
    match v {
        toml::Value::Integer(i) if *i > 0 => Ok(*i as usize),
        toml::Value::String(s) => {
            let s = s.trim();
            let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: usize = num
                .parse()
                .map_err(|_| format!("'{s}' is not a size such as \"512MiB\""))?;
            let mult: usize = match unit.trim().to_ascii_lowercase().as_str() {
                "" | "b" => 1,
                "k" | "kb" | "kib" => 1 << 10,
                "m" | "mb" | "mib" => 1 << 20,
                "g" | "gb" | "gib" => 1 << 30,
                other => return Err(format!("unknown size unit '{other}'")),
            };
            n.checked_mul(mult)
                .filter(|b| *b > 0)
                .ok_or_else(|| format!("'{s}' is out of range"))
        }
        _ => Err("must be a size such as \"1GiB\"".into()),
    }
}

/// Postgres-style durations: "500" (ms), "500ms", "30s", "5min", "1h", "1d".
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration such as \"30s\""))?;
    let ms = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "ms" => n,
        "us" => n / 1000.0,
        "s" => n * 1000.0,
        "min" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        "d" => n * 86_400_000.0,
        other => {
            return Err(format!(
                "unknown time unit '{other}' (use ms, s, min, h or d)"
            ));
        }
    };
    if !ms.is_finite() || !(0.0..=1e12).contains(&ms) {
        return Err(format!("'{s}' is out of range"));
    }
    Ok(Duration::from_micros((ms * 1000.0) as u64))
}

#[cfg(test)]
mod tests {

    #[test]
    fn current_user_becomes_a_literal_outside_quotes_only() {
        assert_eq!(
            with_current_user("owner = current_user AND note <> 'current_user'", "o'neil"),
            "owner = 'o''neil' AND note <> 'current_user'"
        );
        assert_eq!(
            with_current_user("my_current_user = 1", "x"),
            "my_current_user = 1"
        );
    }

    use super::*;

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "[connections.d]\nkind = \"demo\"\nsede = 4\n";
        let e = Config::parse(text, "j.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("unknown key 'sede'"), "{e}");
        assert!(e.contains("j.toml line 3"), "{e}");
    }

    #[test]
    fn unknown_kind_is_an_error() {
        let text = "\n[connections.x]\nkind = \"nope\"\n";
        let e = Config::parse(text, "j.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("unknown kind 'nope'") && e.contains("line 3"),
            "{e}"
        );
    }

    #[test]
    fn unknown_server_key_is_an_error() {
        let e = Config::parse("[server]\nlisen = \"x\"\n", "j.toml")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("lisen") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn env_interpolation() {
        let Ok(path) = std::env::var("PATH") else {
            return;
        };
        assert_eq!(interpolate("a${PATH}b"), Ok(format!("a{path}b")));
        assert_eq!(interpolate("$${X}").as_deref(), Ok("${X}"));
        assert_eq!(interpolate("cost $5").as_deref(), Ok("cost $5"));
        let e = interpolate("${JOINERY_TEST_MISSING_VAR}")
            .err()
            .unwrap_or_default();
        assert!(e.contains("JOINERY_TEST_MISSING_VAR is not set"), "{e}");
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(
            parse_bytes(&toml::Value::String("2MiB".into())),
            Ok(2 << 20)
        );
        assert!(parse_bytes(&toml::Value::String("2 parsecs".into())).is_err());
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("3 fortnights").is_err());
    }
}
