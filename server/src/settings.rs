//! Session settings (GUCs): what `SET`/`SHOW`/`RESET` act on, with PostgreSQL's names, defaults
//! and reporting rules. Parameters a driver watches (`client_encoding`, `DateStyle`, `TimeZone`,
//! ...) are re-sent as ParameterStatus when they change, as PostgreSQL does.

use std::collections::BTreeMap;
use std::time::Duration;

use pgwire::types::format::FormatOptions;

use crate::errors::{SqlError, SqlState};

/// The PostgreSQL version we are wire- and catalog-compatible with.
pub const PG_VERSION: &str = "16.4";
pub const PG_VERSION_NUM: &str = "160004";

struct Param {
    name: &'static str,
    default: &'static str,
    /// Sent as ParameterStatus at startup and on change (GUC_REPORT).
    report: bool,
    read_only: bool,
}

const fn p(name: &'static str, default: &'static str, report: bool, read_only: bool) -> Param {
    Param {
        name,
        default,
        report,
        read_only,
    }
}

/// Parameters we know. Unknown names that contain a dot (custom options such as
/// `joinery.cache`) are accepted like PostgreSQL's placeholder variables.
const PARAMS: &[Param] = &[
    p("application_name", "", true, false),
    p("bytea_output", "hex", false, false),
    p("client_encoding", "UTF8", true, false),
    p("client_min_messages", "notice", false, false),
    p("DateStyle", "ISO, MDY", true, false),
    p(
        "default_transaction_isolation",
        "read committed",
        false,
        false,
    ),
    p("default_transaction_read_only", "off", true, false),
    p("extra_float_digits", "1", false, false),
    p("idle_in_transaction_session_timeout", "0", false, false),
    p("in_hot_standby", "off", true, true),
    p("integer_datetimes", "on", true, true),
    p("IntervalStyle", "postgres", true, false),
    p("is_superuser", "off", true, true),
    p("jit", "off", false, false),
    p("lc_collate", "C.UTF-8", false, true),
    p("lc_ctype", "C.UTF-8", false, true),
    p("lc_messages", "C.UTF-8", false, false),
    p("lc_monetary", "C.UTF-8", false, false),
    p("lc_numeric", "C.UTF-8", false, false),
    p("lc_time", "C.UTF-8", false, false),
    p("lock_timeout", "0", false, false),
    p("max_identifier_length", "63", false, true),
    p("max_index_keys", "32", false, true),
    p("row_security", "on", false, false),
    p("scram_iterations", "4096", true, true),
    p("search_path", "\"$user\", public", false, false),
    p("server_encoding", "UTF8", true, true),
    p("server_version", PG_VERSION, true, true),
    p("server_version_num", PG_VERSION_NUM, false, true),
    p("session_authorization", "", true, true),
    p("standard_conforming_strings", "on", true, false),
    p("statement_timeout", "0", false, false),
    p("synchronous_commit", "on", false, false),
    p("TimeZone", "UTC", true, false),
    p("transaction_isolation", "read committed", false, false),
    p("transaction_read_only", "off", false, false),
    p("work_mem", "4MB", false, false),
];

fn lookup(name: &str) -> Option<&'static Param> {
    PARAMS.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

/// The canonical spelling of a parameter name (`timezone` -> `TimeZone`), as SHOW's column.
pub fn canonical_name(name: &str) -> String {
    match lookup(name) {
        Some(p) => p.name.to_string(),
        None => name.to_ascii_lowercase(),
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    /// Keyed by lowercase name.
    values: BTreeMap<String, String>,
    defaults: BTreeMap<String, String>,
}

impl Settings {
    /// Defaults, then the values the client sent in its startup packet.
    pub fn new(user: &str, startup: &BTreeMap<String, String>, timeout: Option<Duration>) -> Self {
        let mut defaults: BTreeMap<String, String> = PARAMS
            .iter()
            .map(|p| (p.name.to_ascii_lowercase(), p.default.to_string()))
            .collect();
        defaults.insert("session_authorization".into(), user.to_string());
        if let Some(t) = timeout {
            defaults.insert("statement_timeout".into(), t.as_millis().to_string());
        }
        let mut s = Settings {
            values: defaults.clone(),
            defaults,
        };
        // Startup options (psql sends client_encoding, pgjdbc DateStyle and TimeZone, ...).
        // Bad values there are ignored rather than refusing the connection.
        for (k, v) in startup {
            if matches!(k.as_str(), "user" | "database" | "options" | "replication") {
                continue;
            }
            let _ = s.set(k, v);
        }
        // Startup values become this session's defaults (RESET returns to them), as in Postgres.
        s.defaults = s.values.clone();
        s
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Set a parameter; returns the (canonical name, value) pair to report when the client must
    /// be told (GUC_REPORT parameters).
    pub fn set(&mut self, name: &str, value: &str) -> Result<Option<(String, String)>, SqlError> {
        let key = name.to_ascii_lowercase();
        let param = lookup(&key);
        match param {
            Some(p) if p.read_only => {
                return Err(SqlError::new(
                    SqlState::CANT_CHANGE_RUNTIME_PARAM,
                    format!("parameter \"{}\" cannot be changed", p.name),
                ));
            }
            None if key.starts_with("joinery.")
                && !joinery_engine::options::OPTION_NAMES
                    .contains(&key.trim_start_matches("joinery.")) =>
            {
                return Err(SqlError::new(
                    SqlState::UNDEFINED_OBJECT,
                    format!(
                        "unrecognized configuration parameter \"{name}\"; Joinery's are {}",
                        joinery_engine::options::OPTION_NAMES
                            .iter()
                            .map(|n| format!("joinery.{n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            None if !key.contains('.') => {
                return Err(SqlError::new(
                    SqlState::UNDEFINED_OBJECT,
                    format!("unrecognized configuration parameter \"{name}\""),
                ));
            }
            _ => {}
        }
        let value = normalize(&key, value)?;
        self.values.insert(key, value.clone());
        Ok(param
            .filter(|p| p.report)
            .map(|p| (p.name.to_string(), value)))
    }

    pub fn reset(&mut self, name: &str) -> Result<Option<(String, String)>, SqlError> {
        let key = name.to_ascii_lowercase();
        match self.defaults.get(&key).cloned() {
            Some(v) => {
                self.values.insert(key.clone(), v.clone());
                Ok(lookup(&key)
                    .filter(|p| p.report)
                    .map(|p| (p.name.to_string(), v)))
            }
            None if key.contains('.') => {
                self.values.remove(&key);
                Ok(None)
            }
            None => Err(SqlError::new(
                SqlState::UNDEFINED_OBJECT,
                format!("unrecognized configuration parameter \"{name}\""),
            )),
        }
    }

    /// RESET ALL / DISCARD ALL; returns the reported parameters that changed.
    pub fn reset_all(&mut self) -> Vec<(String, String)> {
        let changed: Vec<(String, String)> = PARAMS
            .iter()
            .filter(|p| p.report)
            .filter_map(|p| {
                let k = p.name.to_ascii_lowercase();
                let d = self.defaults.get(&k)?;
                (self.values.get(&k) != Some(d)).then(|| (p.name.to_string(), d.clone()))
            })
            .collect();
        self.values = self.defaults.clone();
        changed
    }

    /// What a ParameterStatus burst at startup carries.
    pub fn reported(&self) -> Vec<(String, String)> {
        PARAMS
            .iter()
            .filter(|p| p.report)
            .map(|p| {
                (
                    p.name.to_string(),
                    self.get(p.name).unwrap_or(p.default).to_string(),
                )
            })
            .collect()
    }

    /// Every parameter, for `SHOW ALL` and `pg_settings`-like use.
    pub fn all(&self) -> Vec<(String, String)> {
        self.values
            .iter()
            .map(|(k, v)| (canonical_name(k), v.clone()))
            .collect()
    }

    pub fn statement_timeout(&self) -> Option<Duration> {
        let v = self.get("statement_timeout")?;
        crate::config::parse_duration(v)
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// How often a statement that has sent no row yet reports progress (`None`: never; the
    /// default is every 2 s).
    pub fn progress_interval(&self) -> Option<std::time::Duration> {
        let ms = self
            .get("joinery.progress_notices_ms")
            .map(|v| v.parse::<u64>().unwrap_or(2000))
            .unwrap_or(2000);
        (ms > 0).then(|| std::time::Duration::from_millis(ms))
    }

    pub fn time_zone(&self) -> &str {
        self.get("timezone").unwrap_or("UTC")
    }

    /// `joinery.*` options as DataFusion config assignments (defaults included, so RESET works).
    pub fn joinery_options(&self) -> Vec<(String, String)> {
        joinery_engine::options::OPTION_NAMES
            .iter()
            .map(|name| {
                let key = format!("joinery.{name}");
                let v = match (self.values.get(&key).map(String::as_str), *name) {
                    (Some("on"), _) | (None, "cache") => "true".to_string(),
                    (None, "progress_notices_ms") => "2000".to_string(),
                    (Some("off"), _) => "false".to_string(),
                    (Some(other), _) => other.to_string(),
                    (None, _) => "0".to_string(),
                };
                (key, v)
            })
            .collect()
    }

    /// Schemas of `search_path`, in order: unquoted names folded to lower case, quoted ones as
    /// written, `$user` as the session user's name.
    pub fn search_path(&self) -> Vec<String> {
        let user = self.get("session_authorization").unwrap_or("").to_string();
        parse_search_path(self.get("search_path").unwrap_or(""))
            .into_iter()
            .map(|s| if s == "$user" { user.clone() } else { s })
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub fn format_options(&self) -> FormatOptions {
        let mut f = FormatOptions::default();
        if let Some(v) = self.get("datestyle") {
            f.date_style = v.to_string();
        }
        if let Some(v) = self.get("intervalstyle") {
            f.interval_style = v.to_string();
        }
        if let Some(v) = self.get("bytea_output") {
            f.bytea_output = v.to_string();
        }
        if let Some(v) = self.get("extra_float_digits").and_then(|v| v.parse().ok()) {
            f.extra_float_digits = v;
        }
        f.time_zone = self.time_zone().to_string();
        f
    }
}

fn invalid(name: &str, value: &str, hint: &str) -> SqlError {
    SqlError::new(
        SqlState::INVALID_PARAMETER_VALUE,
        format!("invalid value for parameter \"{name}\": \"{value}\""),
    )
    .with_hint(hint)
}

fn normalize(key: &str, value: &str) -> Result<String, SqlError> {
    let v = value.trim();
    Ok(match key {
        "client_encoding" => {
            let up = v.to_ascii_uppercase().replace(['-', '_'], "");
            if up == "UTF8" || up == "UNICODE" {
                "UTF8".to_string()
            } else {
                return Err(SqlError::new(
                    SqlState::FEATURE_NOT_SUPPORTED,
                    format!("client encoding \"{v}\" is not supported; Joinery speaks UTF8 only"),
                ));
            }
        }
        "datestyle" => {
            let up = v.to_ascii_uppercase();
            if !up.contains("ISO")
                && !up.is_empty()
                && up.split(',').all(|p| {
                    matches!(
                        p.trim(),
                        "MDY" | "DMY" | "YMD" | "US" | "EUROPEAN" | "NONEURO" | "NONEUROPEAN"
                    )
                })
            {
                // Only an order was given (SET DateStyle = 'MDY'): keep ISO output.
                format!("ISO, {}", up.trim())
            } else if up.starts_with("ISO") {
                if up.contains("DMY") {
                    "ISO, DMY".into()
                } else if up.contains("YMD") {
                    "ISO, YMD".into()
                } else {
                    "ISO, MDY".into()
                }
            } else {
                return Err(invalid(
                    "DateStyle",
                    v,
                    "Joinery writes dates in ISO style only",
                ));
            }
        }
        "timezone" => normalize_time_zone(v).ok_or_else(|| {
            invalid(
                "TimeZone",
                v,
                "use a name such as 'UTC' or 'Europe/Paris', or an offset such as '+02:00'",
            )
        })?,
        "extra_float_digits" => {
            let n: i32 = v
                .parse()
                .map_err(|_| invalid("extra_float_digits", v, "an integer from -15 to 3"))?;
            if !(-15..=3).contains(&n) {
                return Err(invalid("extra_float_digits", v, "an integer from -15 to 3"));
            }
            n.to_string()
        }
        "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => {
            crate::config::parse_duration(v)
                .map_err(|e| invalid(key, v, &e))?
                .as_millis()
                .to_string()
        }
        "transaction_isolation" | "default_transaction_isolation" => v.to_ascii_lowercase(),
        "joinery.cache" => match v.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" | "yes" => "on".to_string(),
            "off" | "false" | "0" | "no" => "off".to_string(),
            _ => return Err(invalid(key, v, "on or off")),
        },
        "joinery.max_staleness_s" => v
            .parse::<u64>()
            .map_err(|_| invalid(key, v, "a number of seconds"))?
            .to_string(),
        _ => v.to_string(),
    })
}

/// Accept what Postgres accepts for common cases: UTC aliases, IANA names, numeric offsets.
fn normalize_time_zone(v: &str) -> Option<String> {
    let t = v.trim();
    if t.eq_ignore_ascii_case("utc")
        || t.eq_ignore_ascii_case("etc/utc")
        || t.eq_ignore_ascii_case("z")
        || t.eq_ignore_ascii_case("gmt")
        || t.eq_ignore_ascii_case("zulu")
    {
        return Some(if t.eq_ignore_ascii_case("etc/utc") {
            "Etc/UTC".into()
        } else {
            "UTC".into()
        });
    }
    if t.eq_ignore_ascii_case("local") || t.eq_ignore_ascii_case("default") {
        return Some("UTC".into());
    }
    // Arrow's time zone parser accepts IANA names and +HH:MM offsets; it is what the encoder uses.
    if t.parse::<arrow::array::timezone::Tz>().is_ok() {
        return Some(t.to_string());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s() -> Settings {
        Settings::new("alice", &BTreeMap::new(), None)
    }

    #[test]
    fn progress_notices_default_to_two_seconds_and_zero_turns_them_off() {
        let mut s = s();
        assert_eq!(s.progress_interval(), Some(Duration::from_secs(2)));
        assert!(s.set("joinery.progress_notices_ms", "0").is_ok());
        assert_eq!(s.progress_interval(), None);
        assert!(s.set("joinery.progress_notices_ms", "250").is_ok());
        assert_eq!(s.progress_interval(), Some(Duration::from_millis(250)));
    }

    #[test]
    fn defaults_match_postgres() {
        let s = s();
        assert_eq!(s.get("DateStyle"), Some("ISO, MDY"));
        assert_eq!(s.get("server_version"), Some(PG_VERSION));
        assert_eq!(s.get("session_authorization"), Some("alice"));
        assert_eq!(canonical_name("timezone"), "TimeZone");
    }

    #[test]
    fn set_reports_guc_report_params_only() {
        let mut s = s();
        assert_eq!(
            s.set("timezone", "Europe/Paris").ok().flatten(),
            Some(("TimeZone".to_string(), "Europe/Paris".to_string()))
        );
        assert_eq!(s.set("extra_float_digits", "3").ok().flatten(), None);
        assert!(s.set("timezone", "Mars/Olympus").is_err());
        assert!(s.set("server_version", "1").is_err());
        assert!(s.set("no_such_thing", "1").is_err());
        assert!(s.set("joinery.cache", "off").is_ok());
        assert_eq!(s.set("statement_timeout", "2s").ok().flatten(), None);
        assert_eq!(s.statement_timeout(), Some(Duration::from_secs(2)));
        assert!(s.set("client_encoding", "LATIN1").is_err());
    }

    #[test]
    fn reset_all_reports_changes() {
        let mut s = s();
        let _ = s.set("application_name", "x");
        let changed = s.reset_all();
        assert_eq!(
            changed,
            vec![("application_name".to_string(), String::new())]
        );
    }
}

/// Split a `search_path` value into schema names: commas outside double quotes separate,
/// quoted names keep their case (`""` is a quote), unquoted ones fold to lower case.
pub fn parse_search_path(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars().peekable();
    let mut in_quotes = false;
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                chars.next();
                current.push('"');
            }
            '"' => {
                in_quotes = !in_quotes;
                quoted = true;
            }
            ',' if !in_quotes => {
                out.push(finish_name(&current, quoted));
                current.clear();
                quoted = false;
            }
            c => current.push(c),
        }
    }
    if !current.trim().is_empty() || quoted {
        out.push(finish_name(&current, quoted));
    }
    out.retain(|s| !s.is_empty());
    out
}

fn finish_name(raw: &str, quoted: bool) -> String {
    if quoted {
        raw.trim().to_string()
    } else {
        raw.trim().to_ascii_lowercase()
    }
}

/// A schema name as `SHOW search_path` prints it: bare when it is a plain lower-case
/// identifier, double-quoted otherwise (`$user` is always quoted, as PostgreSQL shows it).
pub fn quote_schema_name(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if plain {
        name.to_string()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

#[cfg(test)]
mod search_path_tests {
    use super::*;

    #[test]
    fn search_path_lists_fold_and_quote_like_postgres() {
        assert_eq!(
            parse_search_path("demo, \"MixedCase\", public"),
            vec!["demo", "MixedCase", "public"]
        );
        assert_eq!(parse_search_path("DEMO,github"), vec!["demo", "github"]);
        assert_eq!(
            parse_search_path("\"$user\", public"),
            vec!["$user", "public"]
        );
        assert_eq!(parse_search_path("\"a,b\", c"), vec!["a,b", "c"]);
        assert_eq!(parse_search_path("\"say \"\"hi\"\"\""), vec!["say \"hi\""]);
        assert_eq!(parse_search_path(""), Vec::<String>::new());
        assert_eq!(quote_schema_name("demo"), "demo");
        assert_eq!(quote_schema_name("Demo"), "\"Demo\"");
        assert_eq!(quote_schema_name("$user"), "\"$user\"");
        assert_eq!(quote_schema_name("my schema"), "\"my schema\"");
    }
}
