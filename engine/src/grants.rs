//! What a session may see of the `joinery` system schema: the rows about connections it was
//! granted, nothing about the others (their names, tables and API calls stay hidden).

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::expressions::{col, in_list, lit};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExecBuilder;

/// The system schema seen through a session's grants.
#[derive(Debug)]
pub struct GrantedSystemSchema {
    pub inner: Arc<dyn SchemaProvider>,
    /// Connections the session may see (`None`: all).
    pub granted: Option<Arc<BTreeSet<String>>>,
    /// Only admins see the audit log.
    pub admin: bool,
}

/// System tables only platform admins read.
pub const ADMIN_TABLES: [&str; 4] = ["audit_log", "secrets", "grants", "queries"];

/// The column of a system table that names a connection.
fn connection_column(table: &str) -> Option<&'static str> {
    Some(match table {
        "connections" => "name",
        "tables" | "columns" => "schema_name",
        "api_calls" | "connector_stats" => "connection",
        _ => return None,
    })
}

#[async_trait]
impl SchemaProvider for GrantedSystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        if !self.admin {
            names.retain(|n| !ADMIN_TABLES.contains(&n.as_str()));
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if !self.admin && ADMIN_TABLES.contains(&name) {
            return Ok(None);
        }
        let Some(t) = self.inner.table(name).await? else {
            return Ok(None);
        };
        Ok(Some(match (connection_column(name), &self.granted) {
            (Some(column), Some(granted)) => Arc::new(GrantedTable {
                inner: t,
                column,
                granted: granted.clone(),
            }),
            _ => t,
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        (self.admin || !ADMIN_TABLES.contains(&name)) && self.inner.table_exist(name)
    }
}

/// A system table keeping only the rows whose connection column is granted.
#[derive(Debug)]
struct GrantedTable {
    inner: Arc<dyn TableProvider>,
    column: &'static str,
    granted: Arc<BTreeSet<String>>,
}

#[async_trait]
impl TableProvider for GrantedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let input = self.inner.scan(state, None, &[], None).await?;
        let schema = input.schema();
        let list = self
            .granted
            .iter()
            .map(|g| lit(ScalarValue::Utf8(Some(g.clone()))))
            .collect();
        let predicate = in_list(col(self.column, &schema)?, list, &false, &schema)?;
        let filter = FilterExecBuilder::new(predicate, input)
            .apply_projection(projection.cloned())?
            .build()?;
        Ok(Arc::new(filter))
    }
}

/// What one user may reach: granted connections (`None`: all), platform admin, and the
/// user's own upstream credentials per connection.
#[derive(Debug, Clone)]
pub struct Access {
    pub granted: Option<BTreeSet<String>>,
    pub admin: bool,
    pub credentials: Option<Arc<UserCredentials>>,
    /// Row filters on this user's reads: (schema, table, SQL predicate).
    pub row_filters: Vec<(String, String, String)>,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            granted: None,
            admin: true,
            credentials: None,
            row_filters: Vec::new(),
        }
    }
}

/// A user's own tokens, by connection (a session config extension: SQL cannot change it).
#[derive(Debug, Default)]
pub struct UserCredentials {
    pub by_connection: std::collections::BTreeMap<String, crate::rest::Secret>,
    /// The secret store names they came from, by connection (rotated OAuth refresh tokens
    /// are written back there).
    pub secret_names: std::collections::BTreeMap<String, String>,
}

/// Where sessions read their access when it can change while they are open (SQL `GRANT` and
/// `REVOKE`): a session re-reads its user's access whenever `version` moves.
pub trait AccessSource: Send + Sync + std::fmt::Debug {
    /// Changes whenever anyone's access may have changed.
    fn version(&self) -> u64;
    fn access_of(&self, user: &str) -> Access;
}
