//! The warehouse toolkit: a connection to a SQL database (PostgreSQL, MySQL, ...) whose tables
//! join with everything else, and whose share of a query runs *inside* the database.
//!
//! Planning uses `datafusion-federation`: an optimizer rule (added last, after DataFusion has
//! pushed filters and limits down) finds the largest sub-plans that touch only one database and
//! replaces each with one SQL statement, unparsed in the database's dialect. A filter, projection,
//! LIMIT, join, aggregate or `ORDER BY ... LIMIT` over tables of one database therefore runs
//! remotely; EXPLAIN shows the statement (`base_sql=`).
//!
//! Execution belongs to the connector ([`RemoteDatabase::query`]): rows stream back as Arrow
//! batches while the remote statement runs, and dropping the stream (LIMIT satisfied, client
//! cancel, error elsewhere) cancels the remote statement.
//!
//! Join keys travel too: when a hash join's build side (a filtered SaaS table, say) is small,
//! DataFusion publishes a dynamic filter (`key IN (...)`, min/max bounds) to the probe side. The
//! remote scan waits until it is first polled — by then the build side is complete — and adds
//! the filter's SQL form to its statement, so the database returns only matching rows.

use std::any::Any;
use std::fmt::{self, Debug};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Statistics, TableReference};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Expr, Extension, LogicalPlan, Operator, binary_expr};
use datafusion::optimizer::optimizer::Optimizer;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::physical_expr::expressions::{
    BinaryExpr, CaseExpr, Column as PhysColumn, InListExpr, Literal,
};
use datafusion::physical_expr_common::physical_expr::snapshot_physical_expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, PhysicalExpr};
use datafusion::sql::unparser::Unparser;
use datafusion::sql::unparser::dialect::Dialect;
use datafusion_federation::schema_cast::SchemaCastScanExec;
use datafusion_federation::sql::{
    RemoteTableRef, SQLExecutor, SQLFederationProvider, SQLTableSource, VirtualExecutionPlan,
};
use datafusion_federation::{
    FederatedPlanNode, FederatedTableProviderAdaptor, FederationOptimizerRule, FederationPlanner,
};
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};

use crate::error::Result;

mod rules;
use crate::options::JoineryOptions;
use crate::rest::CallLog;
use crate::rest::fetch::CallRecord;
pub use rules::Semantics;

/// What a database connector implements: its dialect and how to run one statement.
pub trait RemoteDatabase: Send + Sync + Debug {
    /// The connection's name (its SQL schema in Joinery).
    fn connection(&self) -> &str;
    /// `postgres`, `mysql`, ...
    fn kind(&self) -> &str;
    /// How DataFusion's plans are written as this database's SQL.
    fn dialect(&self) -> Arc<dyn Dialect>;
    /// Which remote compute a statement runs in (server, database, user; never a secret).
    /// Sub-plans are combined into one statement only within one context.
    fn compute_context(&self) -> String;
    /// Where the database's SQL means something else than Joinery's (collation, functions).
    fn semantics(&self) -> Semantics;
    /// Start `sql`, returning rows converted to `schema` as they arrive. Dropping the stream
    /// before its end must cancel the remote statement.
    fn query(
        &self,
        sql: String,
        schema: SchemaRef,
    ) -> BoxFuture<'static, Result<SendableRecordBatchStream>>;
}

/// Everything the tables of one database connection share.
#[derive(Debug, Clone)]
pub struct Federation {
    provider: Arc<SQLFederationProvider>,
}

impl Federation {
    pub fn new(db: Arc<dyn RemoteDatabase>, calls: Arc<CallLog>) -> Self {
        let executor: Arc<dyn SQLExecutor> = Arc::new(DbExecutor {
            db: db.clone(),
            calls: calls.clone(),
            query_id: 0,
        });
        let rule = DbFederationRule {
            semantics: db.semantics(),
            planner: Arc::new(DbPlanner { db, calls }),
        };
        let provider = SQLFederationProvider {
            optimizer: Arc::new(Optimizer::with_rules(vec![Arc::new(rule)])),
            executor,
        };
        Self {
            provider: Arc::new(provider),
        }
    }

    /// A table of the database: `schema.table` there, with the Arrow schema its columns map to.
    pub fn table(&self, schema: &str, table: &str, arrow: SchemaRef) -> Arc<dyn TableProvider> {
        let remote: RemoteTableRef = TableReference::partial(schema, table).into();
        let source = SQLTableSource::new_with_schema(self.provider.clone(), remote, arrow);
        Arc::new(FederatedTableProviderAdaptor::new(Arc::new(source)))
    }
}

/// The optimizer rules of a Joinery session: DataFusion's own, then federation last, so the
/// sub-plans handed to a database already carry the pushed-down filters and limits.
pub fn optimizer_rules() -> Vec<Arc<dyn OptimizerRule + Send + Sync>> {
    let mut rules = Optimizer::new().rules;
    rules.push(Arc::new(Federate(FederationOptimizerRule::new())));
    rules
}

/// `datafusion-federation`'s rule, plus the one case it leaves out: a plan that is nothing but
/// a scan (`SELECT * FROM db.t`), which it only federates below another node.
#[derive(Debug)]
struct Federate(FederationOptimizerRule);

impl OptimizerRule for Federate {
    fn name(&self) -> &str {
        "joinery_federation"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        let plan = match plan {
            LogicalPlan::TableScan(_) => {
                let columns = plan.schema().columns().into_iter().map(Expr::Column);
                LogicalPlan::Projection(datafusion::logical_expr::Projection::try_new(
                    columns.collect(),
                    Arc::new(plan),
                )?)
            }
            other => other,
        };
        self.0.rewrite(plan, config)
    }
}

/// Wraps a single-database sub-plan in a node our planner turns into a remote statement.
#[derive(Debug)]
struct DbFederationRule {
    semantics: Semantics,
    planner: Arc<DbPlanner>,
}

impl OptimizerRule for DbFederationRule {
    fn name(&self) -> &str {
        "joinery_federate_sql"
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> DfResult<Transformed<LogicalPlan>> {
        if let LogicalPlan::Extension(Extension { node }) = &plan
            && node.name() == "Federated"
        {
            return Ok(Transformed::no(plan));
        }
        let planner = self.planner.clone();
        let wrap = move |p: LogicalPlan| {
            let node = FederatedPlanNode::new(p, planner.clone());
            LogicalPlan::Extension(Extension {
                node: Arc::new(node),
            })
        };
        Ok(Transformed::yes(rules::federate_where_exact(
            plan,
            &self.semantics,
            &wrap,
        )?))
    }
}

/// Plans a federated sub-plan: the statement runs through an executor that knows which query
/// it serves (for `joinery.api_calls`).
#[derive(Debug)]
struct DbPlanner {
    db: Arc<dyn RemoteDatabase>,
    calls: Arc<CallLog>,
}

#[async_trait]
impl FederationPlanner for DbPlanner {
    async fn plan_federation(
        &self,
        node: &FederatedPlanNode,
        session: &dyn Session,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let query_id = session
            .config_options()
            .extensions
            .get::<JoineryOptions>()
            .map(|o| o.query_id)
            .unwrap_or(0);
        let executor: Arc<dyn SQLExecutor> = Arc::new(DbExecutor {
            db: self.db.clone(),
            calls: self.calls.clone(),
            query_id,
        });
        let schema = Arc::new(node.plan().schema().as_arrow().clone());
        let stats = Statistics::new_unknown(&schema);
        let exec = VirtualExecutionPlan::new(node.plan().clone(), executor, stats);
        Ok(Arc::new(SchemaCastScanExec::new(Arc::new(exec), schema)))
    }
}

/// Runs the statements of one database for one query.
struct DbExecutor {
    db: Arc<dyn RemoteDatabase>,
    calls: Arc<CallLog>,
    query_id: u64,
}

#[async_trait]
impl SQLExecutor for DbExecutor {
    fn name(&self) -> &str {
        self.db.connection()
    }

    fn compute_context(&self) -> Option<String> {
        Some(format!("{}:{}", self.db.kind(), self.db.compute_context()))
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        self.db.dialect()
    }

    fn execute(
        &self,
        query: &str,
        schema: SchemaRef,
        filters: &[Arc<dyn PhysicalExpr>],
    ) -> DfResult<SendableRecordBatchStream> {
        let db = self.db.clone();
        let calls = self.calls.clone();
        let query_id = self.query_id;
        let query = query.to_string();
        let filters = filters.to_vec();
        let out_schema = schema.clone();
        // Lazy: the dynamic filters are complete only once the join's build side is, which is
        // before the probe side is first polled.
        let stream = futures::stream::once(async move {
            let sql = with_dynamic_filters(&query, &schema, &filters, db.dialect().as_ref());
            let mut log = CallGuard::new(calls, &*db, &sql, query_id);
            let rows = match db.query(sql, schema.clone()).await {
                Ok(rows) => rows,
                Err(e) => {
                    log.fail(&e.message);
                    return Err(e.into_datafusion());
                }
            };
            let counted = rows.map(move |batch| {
                match &batch {
                    Ok(b) => log.add(b),
                    Err(e) => log.fail(&e.to_string()),
                }
                batch
            });
            Ok(counted)
        })
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(out_schema, stream)))
    }

    async fn table_names(&self) -> DfResult<Vec<String>> {
        Err(DataFusionError::NotImplemented(
            "table discovery goes through the connector".into(),
        ))
    }

    async fn get_table_schema(&self, _table_name: &str) -> DfResult<SchemaRef> {
        Err(DataFusionError::NotImplemented(
            "table discovery goes through the connector".into(),
        ))
    }
}

/// One row of `joinery.api_calls` per remote statement, written when its stream ends or is
/// dropped (a LIMIT or a cancel stops reading early; that is not an error).
struct CallGuard {
    calls: Arc<CallLog>,
    connection: String,
    sql: String,
    query_id: u64,
    started: Instant,
    at: SystemTime,
    rows: u64,
    bytes: u64,
    error: Option<String>,
}

impl CallGuard {
    fn new(calls: Arc<CallLog>, db: &dyn RemoteDatabase, sql: &str, query_id: u64) -> Self {
        Self {
            calls,
            connection: db.connection().to_string(),
            sql: sql.to_string(),
            query_id,
            started: Instant::now(),
            at: SystemTime::now(),
            rows: 0,
            bytes: 0,
            error: None,
        }
    }

    fn add(&mut self, batch: &RecordBatch) {
        self.rows += batch.num_rows() as u64;
        self.bytes += batch.get_array_memory_size() as u64;
    }

    fn fail(&mut self, message: &str) {
        if self.error.is_none() {
            self.error = Some(message.to_string());
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        let latency: Duration = self.started.elapsed();
        self.calls.record(CallRecord {
            at: self.at,
            connection: self.connection.clone(),
            table: String::new(),
            method: "SQL",
            url: std::mem::take(&mut self.sql),
            status: if self.error.is_some() {
                None
            } else {
                Some(200)
            },
            bytes: self.bytes,
            latency,
            attempt: 1,
            error: self.error.take(),
            cache_hit: false,
            query_id: self.query_id,
            rows: Some(self.rows),
        });
    }
}

/// `query` narrowed by the dynamic filters DataFusion pushed to this scan (join keys, TopK
/// bounds), as far as they translate to SQL. Parts that do not translate are left out: the
/// join itself still filters, so leaving them out costs rows, never correctness.
fn with_dynamic_filters(
    query: &str,
    schema: &SchemaRef,
    filters: &[Arc<dyn PhysicalExpr>],
    dialect: &dyn Dialect,
) -> String {
    let mut predicates = Vec::new();
    for f in filters {
        let Ok(snap) = snapshot_physical_expr(f.clone()) else {
            continue;
        };
        tracing::debug!(filter = %snap, "dynamic filter at scan start");
        let mut conjuncts = Vec::new();
        split_and(&snap, &mut conjuncts);
        for c in conjuncts {
            if let Some(expr) = to_logical(&c, schema).filter(|e| !e.column_refs().is_empty()) {
                let unparser = Unparser::new(dialect);
                if let Ok(sql) = unparser.expr_to_sql(&expr) {
                    predicates.push(sql.to_string());
                }
            }
        }
    }
    if predicates.is_empty() {
        return query.to_string();
    }
    format!(
        "SELECT * FROM ({query}) AS joinery_keys WHERE {}",
        predicates.join(" AND ")
    )
}

fn split_and(expr: &Arc<dyn PhysicalExpr>, out: &mut Vec<Arc<dyn PhysicalExpr>>) {
    if let Some(b) = (expr.as_ref() as &dyn Any).downcast_ref::<BinaryExpr>()
        && *b.op() == Operator::And
    {
        split_and(b.left(), out);
        split_and(b.right(), out);
        return;
    }
    out.push(expr.clone());
}

/// The logical form of a (snapshotted) dynamic filter, for the parts SQL can say: columns of
/// the scan's output (by unique, unqualified name), literals, comparisons, AND/OR, IN lists.
fn to_logical(expr: &Arc<dyn PhysicalExpr>, schema: &SchemaRef) -> Option<Expr> {
    let any = expr.as_ref() as &dyn Any;
    if let Some(c) = any.downcast_ref::<PhysColumn>() {
        let field = schema.fields().get(c.index())?;
        let name = field.name();
        // Unqualified in the wrapping SELECT: only usable if no other output column shares it.
        if schema.fields().iter().filter(|f| f.name() == name).count() != 1 {
            return None;
        }
        return Some(Expr::Column(Column::new_unqualified(name)));
    }
    if let Some(l) = any.downcast_ref::<Literal>() {
        if l.value().is_null() {
            return None;
        }
        return Some(Expr::Literal(l.value().clone(), None));
    }
    if let Some(b) = any.downcast_ref::<BinaryExpr>() {
        let op = *b.op();
        let supported = matches!(
            op,
            Operator::And
                | Operator::Or
                | Operator::Eq
                | Operator::NotEq
                | Operator::Lt
                | Operator::LtEq
                | Operator::Gt
                | Operator::GtEq
        );
        if !supported {
            return None;
        }
        let l = to_logical(b.left(), schema)?;
        let r = to_logical(b.right(), schema)?;
        return Some(binary_expr(l, op, r));
    }
    if let Some(c) = any.downcast_ref::<CaseExpr>() {
        // A partitioned join's filter: `CASE hash(key) % n WHEN 0 THEN f0 WHEN 1 THEN f1 ...`.
        // Each row matches exactly one branch, so `f0 OR f1 OR ...` keeps every row the real
        // filter keeps (and maybe more, which the join removes).
        let else_is_false = match c.else_expr() {
            None => true,
            Some(e) => (e.as_ref() as &dyn Any)
                .downcast_ref::<Literal>()
                .is_some_and(|l| {
                    matches!(
                        l.value(),
                        ScalarValue::Boolean(Some(false)) | ScalarValue::Boolean(None)
                    )
                }),
        };
        if !else_is_false || c.expr().is_none() {
            return None;
        }
        let branches = c
            .when_then_expr()
            .iter()
            .map(|(_, then)| to_logical(then, schema))
            .collect::<Option<Vec<_>>>()?;
        return datafusion::logical_expr::utils::disjunction(branches);
    }
    if let Some(i) = any.downcast_ref::<InListExpr>() {
        let target = to_logical(i.expr(), schema)?;
        let list = i
            .list()
            .iter()
            .map(|e| to_logical(e, schema))
            .collect::<Option<Vec<_>>>()?;
        if list.is_empty() {
            return None;
        }
        return Some(target.in_list(list, i.negated()));
    }
    None
}

impl fmt::Debug for DbExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DbExecutor({})", self.db.connection())
    }
}
