//! Which `kind = "..."` values exist and how each is built.

use std::collections::BTreeMap;
use std::sync::Arc;

use joinery_engine::{Connector, JoineryError, Result};

/// A connection as the config file describes it, with `${ENV}` references already resolved.
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    /// Kind-specific keys, as JSON values.
    pub options: BTreeMap<String, serde_json::Value>,
    /// The config file's directory: relative paths in options are relative to it.
    pub base_dir: Option<std::path::PathBuf>,
    /// Options whose whole value was `${secret:NAME}`: option key -> secret name.
    pub secret_refs: BTreeMap<String, String>,
}

impl ConnectionSpec {
    /// A path option, resolved against the config file's directory.
    pub fn path_option(&self, key: &str) -> Result<Option<std::path::PathBuf>> {
        Ok(self.str_option(key)?.map(|p| {
            let p = std::path::PathBuf::from(p);
            match &self.base_dir {
                Some(base) if p.is_relative() => base.join(p),
                _ => p,
            }
        }))
    }

    pub fn str_option(&self, key: &str) -> Result<Option<&str>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(JoineryError::config(format!(
                "connection '{}': '{key}' must be a string",
                self.name
            ))),
        }
    }

    pub fn u64_option(&self, key: &str) -> Result<Option<u64>> {
        match self.options.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                JoineryError::config(format!(
                    "connection '{}': '{key}' must be a non-negative integer",
                    self.name
                ))
            }),
        }
    }
}

/// What connectors share with the engine when they are built.
#[derive(Clone, Default)]
pub struct BuildContext {
    /// Where every API call is recorded (`joinery.api_calls`).
    pub calls: Arc<joinery_engine::rest::CallLog>,
    /// Stores a new value for a named secret (rotated OAuth refresh tokens).
    pub secret_writer: Option<SecretWriter>,
}

impl std::fmt::Debug for BuildContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildContext")
            .field("secret_writer", &self.secret_writer.is_some())
            .finish_non_exhaustive()
    }
}

/// `(secret name, new value)` -> stored encrypted.
pub type SecretWriter = Arc<dyn Fn(&str, &str) -> std::result::Result<(), String> + Send + Sync>;

/// Builds connectors of one kind.
pub trait ConnectorFactory: Send + Sync {
    /// The `kind = "..."` value.
    fn kind(&self) -> &'static str;
    /// One line for `--help` and docs.
    fn description(&self) -> &'static str;
    /// Keys allowed in the connection's section besides `kind` and `base_url`.
    fn option_keys(&self) -> Vec<&'static str>;
    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>>;
}

/// Every connector kind this build knows.
pub fn factories() -> Vec<&'static dyn ConnectorFactory> {
    vec![
        &crate::demo::DemoFactory,
        &crate::rest::RestFactory,
        &crate::postgres::PostgresFactory,
        &crate::mysql::MysqlFactory,
        &crate::files::FilesFactory,
        &crate::github::GithubFactory,
        &crate::pagerduty::PagerdutyFactory,
        &crate::jira::JiraFactory,
        &crate::salesforce::SalesforceFactory,
        &crate::stripe::StripeFactory,
        &crate::slack::SlackFactory,
        &crate::hubspot::HubspotFactory,
    ]
}

pub fn factory_for(kind: &str) -> Option<&'static dyn ConnectorFactory> {
    factories().into_iter().find(|f| f.kind() == kind)
}
