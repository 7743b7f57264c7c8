//! Access control where tables resolve.
//!
//! A session's catalog ([`crate::catalog::SessionCatalog`]) hands out tables only through the
//! schemas in this module, so every way a statement can reach a table — a qualified or bare
//! name, `search_path`, a view, a CTE, a subquery, a set operation, a prepared statement,
//! `EXPLAIN`, any front end — meets the same controls:
//!
//! - [`DeniedSchema`]: a connection the session was not granted. It lists nothing, and naming
//!   one of its tables fails with `permission denied for schema` (42501).
//! - [`RowFilteredSchema`] / [`RowFilteredTable`]: a table with a row filter for this user is a
//!   view-like provider whose plan is `Filter(row filter, TableScan(table))`. DataFusion inlines
//!   it when the statement is planned, so the filter sits beneath everything the user wrote,
//!   and the optimizer pushes it into the API request or the warehouse SQL like any WHERE.
//! - [`SearchPathSchema`]: bare names resolve through `search_path` the way PostgreSQL does
//!   (`pg_catalog` first unless listed, then each schema in order, ungranted ones skipped).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DFSchema, TableReference};
use datafusion::datasource::{TableType, provider_as_source};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::limit::GlobalLimitExec;
use datafusion::prelude::SessionConfig;

use crate::error::{ErrorKind, JoineryError};

/// The schema name bare table names resolve in: a view of the session's `search_path`.
pub const SEARCH_PATH_SCHEMA: &str = "$search_path";

fn denied(message: String) -> DataFusionError {
    DataFusionError::External(Box::new(JoineryError::new(
        ErrorKind::PermissionDenied,
        message,
    )))
}

/// A connection the session may not use: nothing listed, every table refused with 42501.
#[derive(Debug)]
pub struct DeniedSchema {
    pub name: String,
}

#[async_trait]
impl SchemaProvider for DeniedSchema {
    fn table_names(&self) -> Vec<String> {
        Vec::new()
    }

    async fn table(&self, _name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Err(denied(format!(
            "permission denied for schema {}",
            self.name
        )))
    }

    fn table_exist(&self, _name: &str) -> bool {
        false
    }
}

/// The state row filters are parsed with: DataFusion's built-in functions and Postgres
/// identifier and literal rules (the same parser options as sessions).
fn parse_state() -> &'static SessionState {
    static STATE: OnceLock<SessionState> = OnceLock::new();
    STATE.get_or_init(|| {
        let mut config = SessionConfig::new();
        config.options_mut().sql_parser.enable_ident_normalization = true;
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build()
    })
}

/// A connection's schema seen by a user with row filters on some of its tables.
#[derive(Debug)]
pub struct RowFilteredSchema {
    pub inner: Arc<dyn SchemaProvider>,
    pub schema: String,
    /// Table name -> SQL predicates (ANDed).
    pub filters: BTreeMap<String, Vec<String>>,
}

#[async_trait]
impl SchemaProvider for RowFilteredSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(table) = self.inner.table(name).await? else {
            return Ok(None);
        };
        match self.filters.get(name) {
            Some(predicates) => Ok(Some(Arc::new(RowFilteredTable::try_new(
                table,
                filtered_scan_name(&self.schema, name),
                predicates,
            )?))),
            None => Ok(Some(table)),
        }
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

/// The catalog part of the name a row-filtered table's own scan carries. Inlining puts the
/// scan under an alias named as the user wrote the table; the scan's name must differ from any
/// such spelling (a federated plan renames columns by their table's name), and no database
/// can be called this.
pub const ROW_FILTER_CATALOG: &str = "$row_filter";

/// The name of a row-filtered table's own scan: `$row_filter.schema.table`.
pub fn filtered_scan_name(schema: &str, table: &str) -> TableReference {
    TableReference::full(ROW_FILTER_CATALOG, schema, table)
}

/// A table read through a row filter: a view-like provider whose plan is the filter over the
/// table's own scan. DataFusion inlines the plan wherever the table is named, so the filter is
/// beneath every operator of the statement and still reaches the source's pushdown.
#[derive(Debug)]
pub struct RowFilteredTable {
    inner: Arc<dyn TableProvider>,
    predicate: Expr,
    plan: LogicalPlan,
}

impl RowFilteredTable {
    /// `predicates` are SQL over the table's columns (ANDed). A predicate that does not fit the
    /// table fails here: a filter that cannot be applied never yields the unfiltered table.
    pub fn try_new(
        inner: Arc<dyn TableProvider>,
        name: TableReference,
        predicates: &[String],
    ) -> DfResult<Self> {
        let fail = |e: &dyn std::fmt::Display| {
            DataFusionError::External(Box::new(
                JoineryError::new(
                    ErrorKind::Config,
                    format!("the row filter on {name} cannot be applied: {e}"),
                )
                .with_hint("an admin must fix the filter ([[row_filters]] or CREATE POLICY)"),
            ))
        };
        let df_schema = DFSchema::try_from_qualified_schema(name.clone(), &inner.schema())
            .map_err(|e| fail(&e))?;
        let mut predicate: Option<Expr> = None;
        for sql in predicates {
            let e = parse_state()
                .create_logical_expr(sql, &df_schema)
                .map_err(|e| fail(&e))?;
            predicate = Some(match predicate {
                Some(p) => p.and(e),
                None => e,
            });
        }
        let predicate =
            predicate.ok_or_else(|| fail(&"no predicate (an empty filter list)".to_string()))?;
        let plan = LogicalPlanBuilder::scan(name.clone(), provider_as_source(inner.clone()), None)
            .and_then(|b| b.filter(predicate.clone()))
            .and_then(|b| b.build())
            .map_err(|e| fail(&e))?;
        Ok(Self {
            inner,
            predicate,
            plan,
        })
    }
}

#[async_trait]
impl TableProvider for RowFilteredTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn get_logical_plan(&self) -> Option<Cow<'_, LogicalPlan>> {
        Some(Cow::Borrowed(&self.plan))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    /// Only reached when a plan was built without inlining (never from SQL): the filter is
    /// applied here too, so no path reads the table unfiltered.
    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut all = filters.to_vec();
        all.push(self.predicate.clone());
        let input = self.inner.scan(state, None, &all, None).await?;
        let df_schema = DFSchema::try_from(input.schema())?;
        let predicate =
            state.create_physical_expr(self.predicate.clone().unalias_nested().data, &df_schema)?;
        let filtered: Arc<dyn ExecutionPlan> = Arc::new(
            FilterExecBuilder::new(predicate, input)
                .apply_projection(projection.cloned())?
                .build()?,
        );
        Ok(match limit {
            Some(n) => Arc::new(GlobalLimitExec::new(filtered, 0, Some(n))),
            None => filtered,
        })
    }
}

/// Bare table names, resolved through the session's `search_path`: the schemas in order,
/// ungranted ones already left out by the session catalog.
#[derive(Debug)]
pub struct SearchPathSchema {
    /// The schemas to search, in order.
    pub path: Vec<Arc<dyn SchemaProvider>>,
}

#[async_trait]
impl SchemaProvider for SearchPathSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for s in &self.path {
            for n in s.table_names() {
                if !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        for s in &self.path {
            if let Some(t) = s.table(name).await? {
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    fn table_exist(&self, name: &str) -> bool {
        self.path.iter().any(|s| s.table_exist(name))
    }
}
