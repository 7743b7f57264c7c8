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
    pub granted: Arc<BTreeSet<String>>,
}

/// The column of a system table that names a connection.
fn connection_column(table: &str) -> Option<&'static str> {
    Some(match table {
        "connections" => "name",
        "tables" | "columns" => "schema_name",
        "api_calls" => "connection",
        _ => return None,
    })
}

#[async_trait]
impl SchemaProvider for GrantedSystemSchema {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(t) = self.inner.table(name).await? else {
            return Ok(None);
        };
        Ok(Some(match connection_column(name) {
            Some(column) => Arc::new(GrantedTable {
                inner: t,
                column,
                granted: self.granted.clone(),
            }),
            None => t,
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
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
