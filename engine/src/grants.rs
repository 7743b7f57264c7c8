//! What a session may see of the `joinery` system schema: the rows about connections it was
//! granted, nothing about the others (their names, tables and API calls stay hidden), and
//! nothing that would tell how many rows a row filter removed.

use std::collections::BTreeSet;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, StringArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::{Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};

use crate::error::{ErrorKind, JoineryError};

/// The system schema seen through a session's grants.
#[derive(Debug)]
pub struct GrantedSystemSchema {
    pub inner: Arc<dyn SchemaProvider>,
    /// Connections the session may see (`None`: all).
    pub granted: Option<Arc<BTreeSet<String>>>,
    /// Only admins see the audit log.
    pub admin: bool,
    /// (connection, table) pairs the session reads through row filters: their API calls are
    /// not shown, and their connections' counters are NULL (pages, rows and bytes fetched
    /// before the filter would tell how many rows it removed).
    pub row_filtered: Vec<(String, String)>,
}

/// System tables only platform admins read.
pub const ADMIN_TABLES: [&str; 5] = ["audit_log", "secrets", "grants", "queries", "policies"];

/// The column of a system table that names a connection.
fn connection_column(table: &str) -> Option<&'static str> {
    Some(match table {
        "connections" => "name",
        "tables" | "columns" => "schema_name",
        "api_calls" | "connector_stats" => "connection",
        _ => return None,
    })
}

/// Counters of `connector_stats` that move with every page fetched.
const VOLUME_COLUMNS: [&str; 8] = [
    "requests",
    "cache_hits",
    "errors",
    "rate_limited",
    "server_errors",
    "retries",
    "bytes",
    "rate_limit_remaining",
];

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
            if !self.inner.table_exist(name) {
                return Ok(None);
            }
            return Err(DataFusionError::External(Box::new(JoineryError::new(
                ErrorKind::PermissionDenied,
                format!("permission denied for table {name}: only admins read it"),
            ))));
        }
        let Some(t) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let Some(column) = connection_column(name) else {
            return Ok(Some(t));
        };
        if self.granted.is_none() && self.row_filtered.is_empty() {
            return Ok(Some(t));
        }
        let hidden_calls = if name == "api_calls" {
            self.row_filtered.clone()
        } else {
            Vec::new()
        };
        let (volume_hidden_for, schema) = if name == "connector_stats" {
            let conns: BTreeSet<String> =
                self.row_filtered.iter().map(|(c, _)| c.clone()).collect();
            // The hidden counters become nullable.
            let inner = t.schema();
            let fields: Vec<Field> = inner
                .fields()
                .iter()
                .map(|f| {
                    if VOLUME_COLUMNS.contains(&f.name().as_str()) {
                        f.as_ref().clone().with_nullable(true)
                    } else {
                        f.as_ref().clone()
                    }
                })
                .collect();
            (
                conns,
                Arc::new(Schema::new_with_metadata(fields, inner.metadata().clone())),
            )
        } else {
            (BTreeSet::new(), t.schema())
        };
        Ok(Some(Arc::new(GrantedTable {
            inner: t,
            schema,
            column,
            granted: self.granted.clone(),
            hidden_calls,
            volume_hidden_for,
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        (self.admin || !ADMIN_TABLES.contains(&name)) && self.inner.table_exist(name)
    }
}

/// A system table keeping only the rows whose connection column is granted, without the API
/// calls of row-filtered tables and with the volume counters of their connections NULL.
#[derive(Debug)]
struct GrantedTable {
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    column: &'static str,
    granted: Option<Arc<BTreeSet<String>>>,
    hidden_calls: Vec<(String, String)>,
    volume_hidden_for: BTreeSet<String>,
}

impl GrantedTable {
    fn restrict(&self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let text = |batch: &RecordBatch, name: &str| -> DfResult<Option<StringArray>> {
            Ok(match batch.column_by_name(name) {
                Some(c) => Some(
                    arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)?
                        .as_any()
                        .downcast_ref::<StringArray>()
                        .cloned()
                        .ok_or_else(|| DataFusionError::Internal("expected text".into()))?,
                ),
                None => None,
            })
        };
        let conn = text(batch, self.column)?
            .ok_or_else(|| DataFusionError::Internal(format!("no column {}", self.column)))?;
        let table = if self.hidden_calls.is_empty() {
            None
        } else {
            text(batch, "table_name")?
        };
        let keep: BooleanArray = (0..batch.num_rows())
            .map(|i| {
                let c = conn.is_valid(i).then(|| conn.value(i));
                let granted = match (&self.granted, c) {
                    (None, _) => true,
                    (Some(g), Some(c)) => g.contains(c),
                    (Some(_), None) => false,
                };
                // A warehouse call is a statement over any of its tables (no table name).
                let hidden = match (&table, c) {
                    (Some(t), Some(c)) => self.hidden_calls.iter().any(|(hc, ht)| {
                        hc == c && (!t.is_valid(i) || t.value(i).is_empty() || ht == t.value(i))
                    }),
                    _ => false,
                };
                Some(granted && !hidden)
            })
            .collect();
        let kept = filter_record_batch(batch, &keep)?;
        if self.volume_hidden_for.is_empty() {
            return Ok(RecordBatch::try_new(
                self.schema.clone(),
                kept.columns().to_vec(),
            )?);
        }
        let conn = text(&kept, self.column)?
            .ok_or_else(|| DataFusionError::Internal(format!("no column {}", self.column)))?;
        let hide: BooleanArray = (0..kept.num_rows())
            .map(|i| Some(conn.is_valid(i) && self.volume_hidden_for.contains(conn.value(i))))
            .collect();
        let columns: Vec<ArrayRef> = kept
            .schema()
            .fields()
            .iter()
            .zip(kept.columns())
            .map(|(f, c)| {
                if VOLUME_COLUMNS.contains(&f.name().as_str()) {
                    arrow::compute::nullif(c.as_ref(), &hide).map_err(DataFusionError::from)
                } else {
                    Ok(c.clone())
                }
            })
            .collect::<DfResult<_>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[async_trait]
impl TableProvider for GrantedTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
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
        // System tables are small and built in memory: restrict them batch by batch.
        let input = self.inner.scan(state, None, &[], None).await?;
        let batches = collect(input, state.task_ctx()).await?;
        let restricted = batches
            .iter()
            .map(|b| self.restrict(b))
            .collect::<DfResult<Vec<_>>>()?;
        let restricted = if restricted.is_empty() {
            vec![RecordBatch::new_empty(self.schema.clone())]
        } else {
            restricted
        };
        Ok(MemorySourceConfig::try_new_exec(
            &[restricted],
            self.schema.clone(),
            projection.cloned(),
        )?)
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
