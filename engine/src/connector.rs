//! The contract between the engine and a connection (a SaaS connector, a database, a directory
//! of files). A configured connection becomes one SQL schema whose tables are the
//! [`TableEntry`]s its connector returns.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::TableProvider;

use crate::error::Result;

/// One table of a connection.
#[derive(Debug, Clone)]
pub struct TableEntry {
    pub name: String,
    pub provider: Arc<dyn TableProvider>,
}

/// A live connection: what a `[connections.<name>]` section of the config becomes.
#[async_trait]
pub trait Connector: Send + Sync + Debug {
    /// The `kind = "..."` this connector was built from.
    fn kind(&self) -> &str;

    /// The tables this connection exposes. Called when the catalog is built (and on refresh).
    async fn tables(&self) -> Result<Vec<TableEntry>>;

    /// Check that the connection works (reachability, credentials); returns a short status line.
    /// Must not leak secrets in either the status or the error.
    async fn check(&self) -> Result<String> {
        Ok("ok".to_string())
    }
}
