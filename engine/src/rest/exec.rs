//! Execution: walk the pages of each planned request lazily (a page is fetched only when the
//! consumer asks for more rows), decode them to Arrow, and stop at the LIMIT.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::SortOrderPushdownResult;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use futures::{Stream, StreamExt, stream};
use serde_json::Value;
use url::Url;

use super::decode::{decode, lookup, records};
use super::fetch::{CallOptions, Fetcher, HttpCall, Page};
use super::plan::{RequestTemplate, ScanPlan};
use super::spec::{ColumnSpec, Pagination, SortDirection, TableSpec};
use crate::error::{ErrorKind, JoineryError, Result};

/// Most pages one request may walk; a guard against APIs that never say "done".
pub const MAX_PAGES: u64 = 100_000;

#[derive(Debug)]
pub struct RestScanExec {
    table: String,
    spec: Arc<TableSpec>,
    fetcher: Arc<Fetcher>,
    plan: ScanPlan,
    projection: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    cache: CallOptions,
}

impl RestScanExec {
    pub fn new(
        table: String,
        spec: Arc<TableSpec>,
        fetcher: Arc<Fetcher>,
        plan: ScanPlan,
        projection: Vec<usize>,
        schema: SchemaRef,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            table,
            spec,
            fetcher,
            plan,
            projection,
            schema,
            properties,
            cache: CallOptions::default(),
        }
    }

    /// This scan with another plan (sort or LIMIT pushed in), keeping options and properties.
    fn with_plan(&self, plan: ScanPlan) -> RestScanExec {
        RestScanExec {
            table: self.table.clone(),
            spec: self.spec.clone(),
            fetcher: self.fetcher.clone(),
            plan,
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            properties: self.properties.clone(),
            cache: self.cache.clone(),
        }
    }

    /// Use the session's cache policy.
    pub fn with_cache_policy(mut self, cache: CallOptions) -> Self {
        self.cache = cache;
        self
    }

    pub fn scan_plan(&self) -> &ScanPlan {
        &self.plan
    }

    /// The requests as EXPLAIN shows them (secrets redacted).
    pub fn shown_requests(&self) -> Vec<String> {
        let secrets = self.fetcher.config.auth.secret_params();
        self.plan
            .requests
            .iter()
            .map(|r| r.display(&secrets))
            .collect()
    }
}

impl DisplayAs for RestScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let reqs = self.shown_requests();
        let n = reqs.len();
        let shown: Vec<&str> = reqs.iter().take(5).map(String::as_str).collect();
        write!(
            f,
            "RestScanExec: {}.{} requests=[{}{}]",
            self.fetcher.config.connection,
            self.table,
            shown.join("; "),
            if n > 5 {
                format!("; ... {} more", n - 5)
            } else {
                String::new()
            }
        )?;
        if !self.plan.pushed.is_empty() {
            write!(f, ", pushed=[{}]", self.plan.pushed.join(", "))?;
        }
        if let Some(l) = self.plan.limit {
            write!(f, ", limit={l}")?;
        }
        write!(f, ", {}", self.estimated_calls())
    }
}

impl RestScanExec {
    /// What EXPLAIN says about the calls a scan makes: exact without pagination, bounded
    /// by the LIMIT and page size when both are known, a lower bound otherwise.
    pub fn estimated_calls(&self) -> String {
        let n = self.plan.requests.len();
        if matches!(self.spec.pagination, Pagination::None) {
            return format!("calls={n}");
        }
        match (self.plan.limit, self.plan.page_size) {
            (Some(l), Some(ps)) if ps > 0 => {
                let per = (l as u64).div_ceil(ps).max(1) as usize;
                format!("calls<={}", n.saturating_mul(per))
            }
            _ => format!("calls>={n} (one per page)"),
        }
    }
}

impl ExecutionPlan for RestScanExec {
    fn name(&self) -> &str {
        "RestScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    /// `ORDER BY` a column the API can sort by: add the sort parameters and declare the
    /// ordering, so DataFusion drops its sort and a top-N stops after the first page(s).
    /// Only for a single request chain (fanned-out requests interleave).
    fn try_pushdown_sort(
        &self,
        order: &[PhysicalSortExpr],
    ) -> DfResult<SortOrderPushdownResult<Arc<dyn ExecutionPlan>>> {
        let [first] = order else {
            return Ok(SortOrderPushdownResult::Unsupported);
        };
        if self.plan.requests.len() != 1 {
            return Ok(SortOrderPushdownResult::Unsupported);
        }
        let Some(col) = first.expr.downcast_ref::<Column>() else {
            return Ok(SortOrderPushdownResult::Unsupported);
        };
        let name = self.schema.field(col.index()).name();
        let desc = first.options.descending;
        // SQL puts NULLs last ascending and first descending; anything else stays local.
        if first.options.nulls_first != desc {
            return Ok(SortOrderPushdownResult::Unsupported);
        }
        let Some(rule) = self.spec.sort.iter().find(|r| &r.column == name) else {
            return Ok(SortOrderPushdownResult::Unsupported);
        };
        let mut plan = self.plan.clone();
        if let Some(field) = &rule.clause {
            // Written into the query language's `{order_by}` slot, with SQL's NULL placement.
            let (Some(ql), Some((before, after))) =
                (&self.spec.query_language, &plan.ql_order_slot)
            else {
                return Ok(SortOrderPushdownResult::Unsupported);
            };
            let text = format!(
                "{before} ORDER BY {field} {}{after}",
                if desc {
                    "DESC NULLS FIRST"
                } else {
                    "ASC NULLS LAST"
                }
            );
            for r in &mut plan.requests {
                if let Some(param) = &ql.param {
                    for (k, v) in &mut r.query {
                        if k == param {
                            *v = text.clone();
                        }
                    }
                } else if let (Some(pointer), Some(body)) = (&ql.body, &mut r.body) {
                    super::plan::set_pointer(
                        body,
                        pointer,
                        serde_json::Value::String(text.clone()),
                    );
                }
            }
        } else {
            let word = if desc { &rule.desc } else { &rule.asc };
            // `{dir}` in the value carries the direction (`sort_by=created_at:desc`).
            let in_value = rule.value.contains("{dir}");
            let mut params = vec![(rule.param.clone(), rule.value.replace("{dir}", word))];
            match &rule.direction_param {
                _ if in_value => {}
                Some(p) => params.push((
                    p.clone(),
                    if desc {
                        rule.desc.clone()
                    } else {
                        rule.asc.clone()
                    },
                )),
                None => {
                    if (rule.natural == SortDirection::Desc) != desc {
                        return Ok(SortOrderPushdownResult::Unsupported);
                    }
                }
            }
            for r in &mut plan.requests {
                r.query.retain(|(k, _)| !params.iter().any(|(p, _)| p == k));
                r.query.extend(params.iter().cloned());
                r.query.sort();
            }
        }
        plan.pushed.push(format!(
            "ORDER BY {name}{} -> {}",
            if desc { " DESC" } else { "" },
            rule.clause.as_deref().unwrap_or(&rule.param)
        ));
        let mut exec = self.with_plan(plan);
        if rule.exact {
            exec.properties = Arc::new(PlanProperties::new(
                EquivalenceProperties::new_with_orderings(
                    self.schema.clone(),
                    [vec![first.clone()]],
                ),
                Partitioning::UnknownPartitioning(1),
                EmissionType::Incremental,
                Boundedness::Bounded,
            ));
            Ok(SortOrderPushdownResult::Exact {
                inner: Arc::new(exec),
            })
        } else {
            Ok(SortOrderPushdownResult::Inexact {
                inner: Arc::new(exec),
            })
        }
    }

    /// A LIMIT above an exactly ordered scan: stop paging after `limit` rows.
    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let mut plan = self.plan.clone();
        plan.limit = match (plan.limit, limit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Some(Arc::new(self.with_plan(plan)))
    }

    fn fetch(&self) -> Option<usize> {
        self.plan.limit
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "RestScanExec has one partition, not {partition}"
            )));
        }
        let columns: Vec<ColumnSpec> = self
            .projection
            .iter()
            .map(|i| self.spec.columns[*i].clone())
            .collect();
        let columns = Arc::new(columns);
        let concurrency = self.fetcher.config.concurrency.max(1);
        let walkers: Vec<_> = self
            .plan
            .requests
            .iter()
            .map(|r| {
                page_batches(
                    self.fetcher.clone(),
                    self.spec.clone(),
                    self.table.clone(),
                    r.clone(),
                    columns.clone(),
                    self.schema.clone(),
                    self.cache.clone(),
                )
                .boxed()
            })
            .map(eager_first)
            .collect();
        let merged = stream::iter(walkers).flatten_unordered(concurrency);
        let limited = limit_rows(merged, self.plan.limit);
        let out = limited.map(|r| r.map_err(|e| e.into_datafusion()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            out,
        )))
    }
}

/// Start fetching a walker's first page now, when the plan starts executing, instead of when a
/// consumer first asks: a hash join reads its build side to the end before it polls the probe
/// side, so a lazy probe-side scan would only begin once the other tool's pages are all in.
/// Only the first page goes ahead (any stream that is read needs it); later pages are fetched
/// on demand, so a LIMIT above the scan never causes extra calls. Dropping the stream before the
/// first page arrives cancels the fetch.
fn eager_first<S>(walker: S) -> futures::stream::BoxStream<'static, Result<RecordBatch>>
where
    S: Stream<Item = Result<RecordBatch>> + Send + Unpin + 'static,
{
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return walker.boxed();
    };
    let mut walker = walker;
    let task = AbortOnDrop(rt.spawn(async move {
        let first = walker.next().await;
        (first, walker)
    }));
    stream::once(task)
        .flat_map(|joined| match joined {
            Ok((Some(first), rest)) => stream::once(async move { first }).chain(rest).boxed(),
            Ok((None, _)) => stream::empty().boxed(),
            Err(e) => stream::once(async move {
                Err(JoineryError::new(
                    ErrorKind::Internal,
                    format!("page fetch task failed: {e}"),
                ))
            })
            .boxed(),
        })
        .boxed()
}

/// A spawned task that is aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = std::result::Result<T, tokio::task::JoinError>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

/// Stop after `limit` rows; ending the stream drops the page walkers, so no more calls are made.
/// The limit is checked before polling, so no page is fetched once enough rows arrived.
fn limit_rows(
    s: impl Stream<Item = Result<RecordBatch>> + Send + 'static,
    limit: Option<usize>,
) -> impl Stream<Item = Result<RecordBatch>> + Send + 'static {
    stream::unfold((Box::pin(s), limit), |(mut s, remaining)| async move {
        if remaining == Some(0) {
            return None;
        }
        match s.next().await? {
            Err(e) => Some((Err(e), (s, Some(0)))),
            Ok(b) => match remaining {
                None => Some((Ok(b), (s, None))),
                Some(r) => {
                    let b = if b.num_rows() > r { b.slice(0, r) } else { b };
                    let left = r - b.num_rows();
                    Some((Ok(b), (s, Some(left))))
                }
            },
        }
    })
}

struct Walker {
    fetcher: Arc<Fetcher>,
    spec: Arc<TableSpec>,
    table: String,
    template: RequestTemplate,
    next: Option<HttpCall>,
    pages: u64,
    offset: u64,
    page_no: u64,
    seen: HashSet<String>,
}

/// Parse `Link: <url>; rel="next", <url>; rel="last"`.
fn link_next(page: &Page) -> Option<String> {
    let header = page.headers.get_all("link");
    for v in header.iter() {
        let Ok(s) = v.to_str() else { continue };
        for part in s.split(',') {
            let mut pieces = part.split(';');
            let url = pieces
                .next()?
                .trim()
                .trim_start_matches('<')
                .trim_end_matches('>');
            if pieces.any(|p| {
                let p = p.trim().replace(' ', "");
                p == "rel=\"next\"" || p == "rel=next"
            }) {
                return Some(url.to_string());
            }
        }
    }
    None
}

fn truthy(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => Some(s == "true"),
        Value::Number(n) => Some(n.as_f64() != Some(0.0)),
        Value::Null => None,
        _ => Some(true),
    }
}

fn value_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Walker {
    /// An answer that arrived but cannot be used (ok=false, no records where the spec says,
    /// undecodable values, a cursor that repeats): the connection's error, counted in its
    /// health like a failed call (the call itself was counted as a success).
    fn answer_error(&self, e: JoineryError) -> JoineryError {
        let kind = match e.kind {
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => "auth",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::InvalidInput | ErrorKind::NotFound => "client",
            _ => "bad_response",
        };
        self.fetcher.log().metrics().note_error(
            &self.fetcher.config.connection,
            &self.table,
            kind,
            &e.message,
        );
        e.with_connection(self.fetcher.config.connection.clone())
            .with_table(self.table.clone())
    }

    /// The first request again with `value` in the body at `pointer`.
    fn with_body(&self, pointer: &str, value: Value) -> Result<HttpCall> {
        let mut body = self
            .template
            .body
            .clone()
            .unwrap_or(Value::Object(Default::default()));
        super::plan::set_pointer(&mut body, pointer, value);
        Ok(HttpCall {
            method: self.template.method,
            url: self
                .fetcher
                .url(&self.template.path, &self.template.query)?,
            body: Some(body),
        })
    }

    fn with_param(&self, param: &str, value: String) -> Result<HttpCall> {
        let mut q: Vec<(String, String)> = self
            .template
            .query
            .iter()
            .filter(|(k, _)| k != param)
            .cloned()
            .collect();
        q.push((param.to_string(), value));
        Ok(HttpCall {
            method: self.template.method,
            url: self.fetcher.url(&self.template.path, &q)?,
            body: self.template.body.clone(),
        })
    }

    fn absolute(&self, url: &str) -> Result<HttpCall> {
        Ok(HttpCall {
            method: self.template.method,
            url: self.fetcher.url(url, &[])?,
            body: self.template.body.clone(),
        })
    }

    /// The request for the page after `page`, or `None` at the end of data.
    fn next_call(&mut self, page: &Page, recs: &[Value]) -> Result<Option<HttpCall>> {
        let n = recs.len() as u64;
        let next = match &self.spec.pagination {
            Pagination::None => None,
            Pagination::LinkHeader => link_next(page).map(|u| self.absolute(&u)).transpose()?,
            Pagination::NextUrl { path, done } => {
                if truthy(done.as_deref().and_then(|d| lookup(&page.body, d))) == Some(true) {
                    None
                } else {
                    match value_text(lookup(&page.body, path)) {
                        Some(u) => Some(self.absolute(&u)?),
                        None => None,
                    }
                }
            }
            Pagination::Relay { page_info, cursor } => {
                let info = lookup(&page.body, page_info);
                let more = truthy(info.and_then(|i| lookup(i, "hasNextPage"))) == Some(true);
                match (more, value_text(info.and_then(|i| lookup(i, "endCursor")))) {
                    (true, Some(c)) => Some(self.with_body(cursor, Value::String(c))?),
                    _ => None,
                }
            }
            Pagination::Cursor {
                param,
                body,
                response,
                last_record,
                has_more,
                is_last,
            } => {
                let ended = truthy(has_more.as_deref().and_then(|p| lookup(&page.body, p)))
                    == Some(false)
                    || truthy(is_last.as_deref().and_then(|p| lookup(&page.body, p))) == Some(true);
                let cursor = match (response, last_record) {
                    (Some(r), _) => value_text(lookup(&page.body, r)),
                    (None, Some(f)) => recs.last().and_then(|rec| value_text(lookup(rec, f))),
                    (None, None) => None,
                };
                match (ended, cursor, param, body) {
                    (true, ..) | (false, None, ..) => None,
                    (false, Some(c), Some(p), _) => Some(self.with_param(p, c)?),
                    (false, Some(c), None, Some(pointer)) => {
                        Some(self.with_body(pointer, Value::String(c))?)
                    }
                    (false, Some(_), None, None) => None,
                }
            }
            Pagination::Offset {
                offset_param,
                more,
                total,
                is_last,
            } => {
                self.offset += n;
                if truthy(is_last.as_deref().and_then(|p| lookup(&page.body, p))) == Some(true) {
                    return Ok(None);
                }
                let more_flag = truthy(more.as_deref().and_then(|p| lookup(&page.body, p)));
                let total_n = total
                    .as_deref()
                    .and_then(|p| lookup(&page.body, p))
                    .and_then(Value::as_u64);
                let ended = match (more_flag, total_n) {
                    (Some(false), _) => true,
                    (_, Some(t)) => self.offset >= t,
                    (Some(true), None) => false,
                    (None, None) => n == 0,
                };
                if ended || n == 0 {
                    None
                } else {
                    Some(self.with_param(offset_param, self.offset.to_string())?)
                }
            }
            Pagination::Page { param, .. } => {
                if n == 0 {
                    None
                } else {
                    self.page_no += 1;
                    Some(self.with_param(param, self.page_no.to_string())?)
                }
            }
        };
        if let Some(call) = &next {
            if !self.seen.insert(call_key(call)) {
                return Err(JoineryError::new(
                    ErrorKind::BadResponse,
                    format!(
                        "the API returned the same next page twice ({}); stopping instead of looping",
                        self.fetcher.redact(&call.url)
                    ),
                ));
            }
            if self.pages >= MAX_PAGES {
                return Err(JoineryError::new(
                    ErrorKind::BadResponse,
                    format!("more than {MAX_PAGES} pages"),
                ));
            }
        }
        Ok(next)
    }
}

/// What makes two page requests the same: URL and body.
fn call_key(call: &HttpCall) -> String {
    match &call.body {
        Some(b) => format!("{} {b}", call.url),
        None => call.url.to_string(),
    }
}

fn first_call(fetcher: &Fetcher, spec: &TableSpec, t: &RequestTemplate) -> Result<HttpCall> {
    let mut q = t.query.clone();
    match &spec.pagination {
        Pagination::Page { param, start } => q.push((param.clone(), start.to_string())),
        Pagination::Offset { offset_param, .. } => q.push((offset_param.clone(), "0".into())),
        _ => {}
    }
    Ok(HttpCall {
        method: t.method,
        url: fetcher.url(&t.path, &q)?,
        body: t.body.clone(),
    })
}

/// Every value of `column` in `spec`'s records, read (unfiltered) through the same planning and
/// page walker a scan uses: how a connector discovers what to fan out over at start (GitHub
/// repositories of an owner, Jira boards) without a pagination loop of its own.
pub async fn read_column(
    fetcher: Arc<Fetcher>,
    spec: TableSpec,
    vars: &super::plan::Vars,
    column: &str,
) -> Result<Vec<String>> {
    spec.validate()?;
    let col = spec
        .columns
        .iter()
        .find(|c| c.name == column)
        .cloned()
        .ok_or_else(|| JoineryError::internal(format!("{}: no column {column}", spec.name)))?;
    let plan = super::plan::plan_scan(&spec, &spec.name, vars, &[], None)?;
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new(&col.name, col.data_type.data_type(), true),
    ]));
    let columns = Arc::new(vec![col]);
    let options = CallOptions {
        records: Some(spec.records.clone()),
        ..CallOptions::default()
    };
    let table = spec.name.clone();
    let spec = Arc::new(spec);
    let mut out = Vec::new();
    for template in plan.requests {
        let mut pages = Box::pin(page_batches(
            fetcher.clone(),
            spec.clone(),
            table.clone(),
            template,
            columns.clone(),
            schema.clone(),
            options.clone(),
        ));
        while let Some(batch) = pages.next().await {
            let batch = batch?;
            let text = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)
                .map_err(|e| JoineryError::internal(e.to_string()))?;
            if let Some(a) = text.as_any().downcast_ref::<arrow::array::StringArray>() {
                out.extend(a.iter().flatten().map(str::to_string));
            }
        }
    }
    Ok(out)
}

/// The pages of one request, as batches, fetched one at a time on demand.
fn page_batches(
    fetcher: Arc<Fetcher>,
    spec: Arc<TableSpec>,
    table: String,
    template: RequestTemplate,
    columns: Arc<Vec<ColumnSpec>>,
    schema: SchemaRef,
    cache: CallOptions,
) -> impl Stream<Item = Result<RecordBatch>> + Send + 'static {
    let start_page = match &spec.pagination {
        Pagination::Page { start, .. } => *start,
        _ => 0,
    };
    let first = first_call(&fetcher, &spec, &template);
    let walker = Walker {
        fetcher,
        spec,
        table,
        template,
        next: None,
        pages: 0,
        offset: 0,
        page_no: start_page,
        seen: HashSet::new(),
    };
    // What a decoded page depends on besides the page itself: a cached page's batches are
    // reused by scans of the same shape.
    let shape: Arc<str> = Arc::from(format!(
        "{}|{:?}|{:?}|{:?}",
        template_shape(&columns),
        schema.fields(),
        walker.spec.skip_if,
        walker.template.vars
    ));
    stream::unfold((walker, Some(first)), move |(mut w, pending)| {
        let columns = columns.clone();
        let schema = schema.clone();
        let cache = cache.clone();
        let shape = shape.clone();
        async move {
            let call = match pending {
                None => match w.next.take() {
                    Some(c) => c,
                    None => return None,
                },
                Some(Err(e)) => return Some((Err(e), (w, None))),
                Some(Ok(c)) => c,
            };
            w.seen.insert(call_key(&call));
            let page = match w.fetcher.send_with(&w.table, &call, cache).await {
                Ok(p) => p,
                // A failed page fails the scan: no partial results.
                Err(e) => {
                    w.next = None;
                    return Some((Err(e), (w, None)));
                }
            };
            w.pages += 1;
            if let Some(ok) = &w.spec.ok_path
                && lookup(&page.body, ok) == Some(&Value::Bool(false))
            {
                let code = w
                    .spec
                    .error_path
                    .as_deref()
                    .and_then(|p| lookup(&page.body, p))
                    .and_then(Value::as_str)
                    .unwrap_or("unknown_error")
                    .to_string();
                let kind = match code.as_str() {
                    "invalid_auth" | "not_authed" | "account_inactive" | "token_revoked"
                    | "token_expired" => ErrorKind::Unauthenticated,
                    "ratelimited" => ErrorKind::RateLimited,
                    "missing_scope" | "not_in_channel" | "no_permission" => {
                        ErrorKind::PermissionDenied
                    }
                    "channel_not_found" | "user_not_found" => ErrorKind::NotFound,
                    "invalid_cursor" | "invalid_ts_latest" | "invalid_ts_oldest"
                    | "invalid_arguments" => ErrorKind::InvalidInput,
                    _ => ErrorKind::BadResponse,
                };
                let e = w.answer_error(JoineryError::new(
                    kind,
                    format!("the API answered ok=false: {code}"),
                ));
                w.next = None;
                return Some((Err(e), (w, None)));
            }
            let recs = match records(&page.body, &w.spec.records) {
                Ok(r) => r,
                Err(e) => return Some((Err(w.answer_error(e)), (w, None))),
            };
            let memo = page.memo.as_ref().and_then(|m| m.get(&shape));
            let batch = match memo {
                // Decoded from this cached page before, for a scan of this shape.
                Some(b) => {
                    w.fetcher.log.note_decode_reused();
                    Ok(b)
                }
                None => {
                    let cols: Vec<&ColumnSpec> = columns.iter().collect();
                    // Records the table leaves out (GitHub's issues list also returns PRs).
                    let kept: Vec<Value>;
                    let recs_for_rows = match &w.spec.skip_if {
                        Some(path) => {
                            kept = recs
                                .iter()
                                .filter(|r| lookup(r, path).is_none_or(Value::is_null))
                                .cloned()
                                .collect();
                            kept.as_slice()
                        }
                        None => recs,
                    };
                    let batch = decode(&cols, schema, recs_for_rows)
                        .and_then(|b| fill_request_columns(b, &cols, &w.template.vars))
                        .map_err(|e| w.answer_error(e));
                    if let (Ok(b), Some(m)) = (&batch, &page.memo) {
                        m.put(shape.to_string(), b.clone());
                    }
                    batch
                }
            };
            let next = match w.next_call(&page, recs) {
                Ok(n) => n,
                Err(e) => return Some((Err(w.answer_error(e)), (w, None))),
            };
            w.next = next;
            Some((batch, (w, None)))
        }
    })
    .scan(false, |failed, item: Result<RecordBatch>| {
        // After an error, end the stream.
        if *failed {
            return futures::future::ready(None);
        }
        if item.is_err() {
            *failed = true;
        }
        futures::future::ready(Some(item))
    })
}

/// The columns a scan decodes, as a key: names, paths and types.
fn template_shape(columns: &[ColumnSpec]) -> String {
    columns
        .iter()
        .map(|c| format!("{c:?}"))
        .collect::<Vec<_>>()
        .join(";")
}

/// Columns declared as `path = "{placeholder}"` hold the request's value for that placeholder
/// (the same for every record of the page).
fn fill_request_columns(
    batch: RecordBatch,
    columns: &[&ColumnSpec],
    vars: &[(String, String)],
) -> Result<RecordBatch> {
    let mut arrays = batch.columns().to_vec();
    let mut changed = false;
    for (i, c) in columns.iter().enumerate() {
        let Some(name) = c
            .path
            .as_deref()
            .and_then(|p| p.strip_prefix('{'))
            .and_then(|p| p.strip_suffix('}'))
        else {
            continue;
        };
        let value = vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str());
        let array: arrow::array::StringArray =
            std::iter::repeat_n(value, batch.num_rows()).collect();
        if let Some(slot) = arrays.get_mut(i) {
            *slot = Arc::new(array);
            changed = true;
        }
    }
    if !changed {
        return Ok(batch);
    }
    RecordBatch::try_new(batch.schema(), arrays)
        .map_err(|e| JoineryError::internal(format!("building a batch: {e}")))
}

/// Helper for tests and callers that need a URL from a base and a path.
pub fn join(base: &Url, path: &str) -> Option<Url> {
    base.join(path.trim_start_matches('/')).ok()
}
