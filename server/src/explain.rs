//! `EXPLAIN ANALYZE` for a session that reads tables through row filters.
//!
//! DataFusion's own output gives every operator's row counts. Below a row filter those counts
//! are of rows the filter removes (a scan that fetched 50 customers before keeping 9), which
//! would tell the user what the filter hides. For such statements the plan is run and printed
//! here instead, with the metrics of every operator that may have seen unfiltered rows (a
//! source, everything between it and the first filter above it, and that filter, whose
//! selectivity counts its input) shown as hidden.

use std::fmt;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray};
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::{Analyze, LogicalPlan};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayFormatType, ExecutionPlan, execute_stream};
use datafusion::prelude::SessionContext;
use futures::StreamExt;
use joinery_engine::catalog::SessionCatalog;

/// Whether `plan` reads a table this session sees through a row filter: the filtered tables'
/// own scans carry the name the session catalog gave them (`$row_filter.schema.table`), never
/// what the user wrote.
pub fn reads_row_filtered(catalog: &SessionCatalog, plan: &LogicalPlan) -> bool {
    if !catalog.has_row_filters() {
        return false;
    }
    let mut found = false;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node
            && scan.table_name.catalog() == Some(joinery_engine::policy::ROW_FILTER_CATALOG)
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// Whether an operator's output may include rows a row filter removes: a source does, a
/// filter does not, anything else does when one of its inputs does.
fn sees_unfiltered(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.is::<FilterExec>() {
        return false;
    }
    let children = plan.children();
    children.is_empty() || children.into_iter().any(sees_unfiltered)
}

struct NodeLine<'a>(&'a dyn ExecutionPlan);

impl fmt::Display for NodeLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt_as(DisplayFormatType::Default, f)
    }
}

fn render(plan: &Arc<dyn ExecutionPlan>, depth: usize, out: &mut String) {
    use std::fmt::Write as _;
    let _ = write!(
        out,
        "{:indent$}{}",
        "",
        NodeLine(plan.as_ref()),
        indent = depth * 2
    );
    // A filter's own metrics include its selectivity (rows in, rows out): hidden too when
    // its input saw unfiltered rows.
    let hide = sees_unfiltered(plan)
        || (plan.is::<FilterExec>() && plan.children().into_iter().any(sees_unfiltered));
    if hide {
        out.push_str(", metrics=[hidden: below a row filter]");
    } else if let Some(m) = plan.metrics() {
        let m = m
            .aggregate_by_name()
            .sorted_for_display()
            .timestamps_removed();
        let _ = write!(out, ", metrics=[{m}]");
    } else {
        out.push_str(", metrics=[]");
    }
    out.push('\n');
    for child in plan.children() {
        render(child, depth + 1, out);
    }
}

/// Run `analyze`'s input to the end and answer like `EXPLAIN ANALYZE`, hiding what the
/// operators beneath a row filter saw.
pub async fn analyze(
    ctx: &SessionContext,
    analyze: &Analyze,
) -> datafusion::error::Result<SendableRecordBatchStream> {
    let physical = ctx.state().create_physical_plan(&analyze.input).await?;
    let started = std::time::Instant::now();
    let mut stream = execute_stream(physical.clone(), ctx.task_ctx())?;
    while let Some(batch) = stream.next().await {
        batch?;
    }
    let mut text = String::new();
    render(&physical, 0, &mut text);
    text.push_str(&format!(
        "Execution time: {:.3} ms (metrics of operators that read rows before the row filter are hidden)",
        started.elapsed().as_secs_f64() * 1000.0
    ));
    let schema = Arc::new(analyze.schema.as_arrow().clone());
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec!["Plan with Metrics"])) as ArrayRef,
            Arc::new(StringArray::from(vec![text])),
        ],
    )?;
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::iter(vec![Ok(batch)]),
    )))
}
