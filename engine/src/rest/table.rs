//! Planning: the TableProvider that turns a [`TableSpec`] into pushdown verdicts and a
//! [`RestScanExec`]. A connector is a list of specs plus a [`Fetcher`].

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use super::exec::RestScanExec;
use super::fetch::{CallOptions, Fetcher};
use super::plan::{Vars, plan_scan_projected, pushdown_verdicts};
use super::spec::TableSpec;
use crate::connector::{Connector, TableEntry};
use crate::error::Result;
use crate::options::JoineryOptions;

#[derive(Debug)]
pub struct RestTable {
    spec: Arc<TableSpec>,
    schema: SchemaRef,
    fetcher: Arc<Fetcher>,
    /// Connection variables that fill path placeholders (`{owner}`).
    vars: Vars,
}

impl RestTable {
    pub fn try_new(spec: TableSpec, fetcher: Arc<Fetcher>, vars: Vars) -> Result<Self> {
        spec.validate()?;
        let schema = spec.schema();
        Ok(Self {
            spec: Arc::new(spec),
            schema,
            fetcher,
            vars,
        })
    }

    pub fn spec(&self) -> &TableSpec {
        &self.spec
    }
}

#[async_trait]
impl TableProvider for RestTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(pushdown_verdicts(&self.spec, filters))
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let plan = plan_scan_projected(
            &self.spec,
            &self.spec.name,
            &self.vars,
            filters,
            limit,
            projection.map(Vec::as_slice),
        )
        .map_err(|e| {
            e.with_connection(self.fetcher.config.connection.clone())
                .into_datafusion()
        })?;
        let projection: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let schema = Arc::new(self.schema.project(&projection)?);
        let cache = match state.config_options().extensions.get::<JoineryOptions>() {
            Some(o) => CallOptions {
                query_id: o.query_id,
                records: Some(self.spec.records.clone()),
                use_cache: o.cache,
                max_staleness: (o.max_staleness_s > 0)
                    .then(|| std::time::Duration::from_secs(o.max_staleness_s)),
                ttl: None,
                credential: None,
                credential_secret: None,
            },
            None => CallOptions {
                records: Some(self.spec.records.clone()),
                ..CallOptions::default()
            },
        };
        let creds = state
            .config()
            .get_extension::<crate::grants::UserCredentials>();
        let conn = &self.fetcher.config.connection;
        let credential = creds
            .as_ref()
            .and_then(|c| c.by_connection.get(conn).cloned());
        let credential_secret = creds
            .as_ref()
            .and_then(|c| c.secret_names.get(conn).cloned());
        let cache = CallOptions {
            ttl: self.spec.cache_ttl_s.map(std::time::Duration::from_secs),
            credential,
            credential_secret,
            ..cache
        };
        Ok(Arc::new(
            RestScanExec::new(
                self.spec.name.clone(),
                self.spec.clone(),
                self.fetcher.clone(),
                plan,
                projection,
                schema,
            )
            .with_cache_policy(cache),
        ))
    }
}

/// A connection whose tables are all REST specs.
#[derive(Debug)]
pub struct RestConnector {
    kind: String,
    tables: Vec<Arc<RestTable>>,
}

impl RestConnector {
    /// A connector from its tables' specs as JSON (a connector's own constants).
    pub fn from_json(
        kind: impl Into<String>,
        specs: Vec<serde_json::Value>,
        fetcher: Arc<Fetcher>,
        vars: Vars,
    ) -> Result<Self> {
        let kind = kind.into();
        let specs = specs
            .into_iter()
            .map(TableSpec::from_json)
            .collect::<Result<Vec<_>>>()
            .map_err(|e| {
                crate::error::JoineryError::internal(format!("{kind} table specs: {}", e.message))
            })?;
        Self::try_new(kind, specs, fetcher, vars)
    }

    pub fn try_new(
        kind: impl Into<String>,
        specs: Vec<TableSpec>,
        fetcher: Arc<Fetcher>,
        vars: Vars,
    ) -> Result<Self> {
        let tables = specs
            .into_iter()
            .map(|s| RestTable::try_new(s, fetcher.clone(), vars.clone()).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            kind: kind.into(),
            tables,
        })
    }
}

#[async_trait]
impl Connector for RestConnector {
    fn kind(&self) -> &str {
        &self.kind
    }

    async fn tables(&self) -> Result<Vec<TableEntry>> {
        Ok(self
            .tables
            .iter()
            .map(|t| TableEntry {
                name: t.spec().name.clone(),
                provider: t.clone(),
            })
            .collect())
    }
}
