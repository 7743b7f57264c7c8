//! The `joinery` system schema: what is configured, described as SQL tables so users and agents
//! discover connections, tables and column descriptions with plain queries.

use std::fmt;
use std::sync::{Arc, Weak};

use arrow::array::{ArrayRef, BooleanBuilder, StringBuilder, UInt32Builder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::catalog::Catalog;
use crate::meta::{self, described, with_table_description};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SystemTableKind {
    Connections,
    Tables,
    Columns,
    ApiCalls,
    AuditLog,
    ConnectorStats,
    Queries,
}

/// Text fields of an audit event, in `joinery.audit_log` column order.
const AUDIT_TEXT: [(&str, &str, &str); 9] = [
    ("at", "at", "When the event was recorded (RFC 3339, UTC)"),
    ("kind", "kind", "statement, call or login"),
    ("user_name", "user", "The Joinery user"),
    ("client_addr", "client_addr", "The client's address"),
    (
        "statement",
        "statement",
        "The SQL (secret-like literals masked)",
    ),
    ("connection", "connection", "Connection (tool) called"),
    ("table_name", "table", "Table being scanned"),
    (
        "request",
        "request",
        "Method and URL or SQL sent (secrets redacted)",
    ),
    ("status", "status", "ok, an SQLSTATE, or the HTTP status"),
];

impl SystemTableKind {
    const ALL: [SystemTableKind; 7] = [
        SystemTableKind::Connections,
        SystemTableKind::Tables,
        SystemTableKind::Columns,
        SystemTableKind::ApiCalls,
        SystemTableKind::AuditLog,
        SystemTableKind::ConnectorStats,
        SystemTableKind::Queries,
    ];

    fn name(self) -> &'static str {
        match self {
            SystemTableKind::Connections => "connections",
            SystemTableKind::Tables => "tables",
            SystemTableKind::Columns => "columns",
            SystemTableKind::ApiCalls => "api_calls",
            SystemTableKind::AuditLog => "audit_log",
            SystemTableKind::ConnectorStats => "connector_stats",
            SystemTableKind::Queries => "queries",
        }
    }

    fn schema(self) -> SchemaRef {
        let s = |n: &str, d: &str| described(Field::new(n, DataType::Utf8, true), d);
        let u = |n: &str, d: &str| described(Field::new(n, DataType::UInt64, false), d);
        let f = |n: &str, d: &str| described(Field::new(n, DataType::Float64, true), d);
        let ts = |n: &str, d: &str| {
            described(
                Field::new(
                    n,
                    DataType::Timestamp(
                        arrow::datatypes::TimeUnit::Microsecond,
                        Some("UTC".into()),
                    ),
                    true,
                ),
                d,
            )
        };
        match self {
            SystemTableKind::ConnectorStats => with_table_description(
                Schema::new(vec![
                    s("connection", "Connection (schema)"),
                    s("kind", "Connector kind"),
                    u("requests", "Requests sent since start (retries included)"),
                    u("cache_hits", "Page reads answered from the cache"),
                    u("errors", "Failed requests (any kind)"),
                    u("rate_limited", "Requests refused with 429"),
                    u(
                        "server_errors",
                        "5xx answers, timeouts, resets and malformed bodies",
                    ),
                    u("retries", "Requests that retried an earlier attempt"),
                    u("bytes", "Response bytes received"),
                    f("success_pct", "Share of requests that succeeded, percent"),
                    f(
                        "uptime_pct",
                        "Share of the last 24 h's active minutes in which the service answered (a minute with only service failures is down), percent",
                    ),
                    f("p50_ms", "Median latency of the last 1024 requests"),
                    f(
                        "p95_ms",
                        "95th percentile latency of the last 1024 requests",
                    ),
                    s(
                        "last_error",
                        "The last failed request and why (secrets redacted)",
                    ),
                    ts("last_error_at", "When it failed"),
                    ts("last_success_at", "The last successful request"),
                    f(
                        "rate_limit_remaining",
                        "Requests left in the API's window, from its headers",
                    ),
                    s(
                        "circuit_breaker",
                        "closed, or open while requests fail fast",
                    ),
                ]),
                "Health of every connection since the server started",
            ),
            SystemTableKind::Queries => with_table_description(
                Schema::new(vec![
                    described(
                        Field::new("query_id", DataType::UInt64, false),
                        "The statement (joinery.api_calls.query_id)",
                    ),
                    ts("started_at", "When the statement started"),
                    s("user_name", "Who ran it"),
                    s("statement", "The SQL (secret-like literals masked)"),
                    described(
                        Field::new("duration_ms", DataType::Float64, false),
                        "Time to the last row",
                    ),
                    s("connectors", "Connections it used, comma-separated"),
                    described(
                        Field::new("connector_count", DataType::UInt32, false),
                        "How many connections it used (2+ is a cross-tool query)",
                    ),
                    u("api_calls", "Requests it sent"),
                    u("cache_hits", "Page reads it got from the cache"),
                    u("bytes", "Response bytes it received"),
                    described(Field::new("rows", DataType::Int64, true), "Rows returned"),
                    s("status", "ok or the SQLSTATE"),
                ]),
                "Recent statements (admins only; the last 1000), newest last",
            ),
            SystemTableKind::Connections => with_table_description(
                Schema::new(vec![
                    s("name", "Connection name; also its SQL schema"),
                    s("kind", "Connector kind (kind = \"...\" in the config)"),
                    described(
                        Field::new("table_count", DataType::UInt32, false),
                        "Number of tables the connection exposes",
                    ),
                ]),
                "Configured connections, one SQL schema each",
            ),
            SystemTableKind::Tables => with_table_description(
                Schema::new(vec![
                    s("schema_name", "Schema (connection) of the table"),
                    s("table_name", "Table name"),
                    s("description", "What the table holds"),
                ]),
                "Every table of every connection, with its description",
            ),
            SystemTableKind::Columns => with_table_description(
                Schema::new(vec![
                    s("schema_name", "Schema (connection) of the table"),
                    s("table_name", "Table name"),
                    described(
                        Field::new("ordinal_position", DataType::UInt32, false),
                        "1-based column position",
                    ),
                    s("column_name", "Column name"),
                    s("data_type", "Arrow data type of the column"),
                    described(
                        Field::new("is_nullable", DataType::Boolean, false),
                        "Whether the column may be NULL",
                    ),
                    s("description", "What the column holds"),
                ]),
                "Every column of every connection's tables, with its description",
            ),
            SystemTableKind::ApiCalls => with_table_description(
                Schema::new(vec![
                    described(
                        Field::new(
                            "at",
                            DataType::Timestamp(
                                arrow::datatypes::TimeUnit::Microsecond,
                                Some("UTC".into()),
                            ),
                            false,
                        ),
                        "When the call finished",
                    ),
                    described(
                        Field::new("query_id", DataType::UInt64, false),
                        "The statement the call served",
                    ),
                    s("connection", "Connection (schema) that made the call"),
                    s("table_name", "Table being scanned"),
                    s("method", "HTTP method"),
                    s("url", "Path and query sent (secrets redacted)"),
                    described(
                        Field::new("status", DataType::Int32, true),
                        "HTTP status; NULL when no response arrived",
                    ),
                    described(
                        Field::new("rows", DataType::UInt64, true),
                        "Records in the response",
                    ),
                    described(
                        Field::new("bytes", DataType::UInt64, false),
                        "Response body size",
                    ),
                    described(
                        Field::new("latency_ms", DataType::Float64, false),
                        "Time to the full response",
                    ),
                    described(
                        Field::new("attempt", DataType::UInt32, false),
                        "1 for the first try, more for retries",
                    ),
                    s("error", "Transport error, if any"),
                    described(
                        Field::new("cache_hit", DataType::Boolean, false),
                        "Answered from Joinery's cache (no request sent)",
                    ),
                ]),
                "Recent calls to upstream APIs (the last 10000), newest last",
            ),
            SystemTableKind::AuditLog => {
                let mut fields: Vec<Field> = AUDIT_TEXT.iter().map(|(n, _, d)| s(n, d)).collect();
                fields.insert(
                    4,
                    described(
                        Field::new("query_id", DataType::UInt64, true),
                        "The statement (links its calls)",
                    ),
                );
                fields.extend([
                    described(Field::new("rows", DataType::Int64, true), "Rows returned"),
                    described(
                        Field::new("bytes", DataType::Int64, true),
                        "Bytes received from the tool",
                    ),
                    described(
                        Field::new("latency_ms", DataType::Float64, true),
                        "Duration",
                    ),
                    described(
                        Field::new("cache_hit", DataType::Boolean, true),
                        "Answered from Joinery's cache",
                    ),
                ]);
                with_table_description(
                    Schema::new(fields),
                    "Who asked what of which tool (admins only; the last 10000 events, newest last; the full log is the audit file)",
                )
            }
        }
    }
}

/// The `joinery` schema.
#[derive(Debug)]
pub struct SystemSchema {
    catalog: Weak<Catalog>,
}

impl SystemSchema {
    pub(crate) fn new(catalog: Weak<Catalog>) -> Self {
        Self { catalog }
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = SystemTableKind::ALL
            .iter()
            .map(|k| k.name().to_string())
            .collect();
        if let Some(c) = self.catalog.upgrade() {
            names.extend(c.extra_system_tables().into_keys());
        }
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if let Some(t) = self
            .catalog
            .upgrade()
            .and_then(|c| c.extra_system_tables().remove(name))
        {
            return Ok(Some(t));
        }
        Ok(SystemTableKind::ALL
            .iter()
            .find(|k| k.name() == name)
            .map(|k| {
                Arc::new(SystemTable {
                    kind: *k,
                    schema: k.schema(),
                    catalog: self.catalog.clone(),
                }) as Arc<dyn TableProvider>
            }))
    }

    fn table_exist(&self, name: &str) -> bool {
        SystemTableKind::ALL.iter().any(|k| k.name() == name)
            || self
                .catalog
                .upgrade()
                .is_some_and(|c| c.extra_system_tables().contains_key(name))
    }
}

struct SystemTable {
    kind: SystemTableKind,
    schema: SchemaRef,
    catalog: Weak<Catalog>,
}

impl fmt::Debug for SystemTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SystemTable({})", self.kind.name())
    }
}

impl SystemTable {
    async fn build(&self) -> DfResult<RecordBatch> {
        let catalog = self
            .catalog
            .upgrade()
            .ok_or_else(|| DataFusionError::Internal("catalog dropped".into()))?;
        let micros = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros() as i64)
                .unwrap_or(0)
        };
        let columns: Vec<ArrayRef> = match self.kind {
            SystemTableKind::ConnectorStats => {
                let stats = catalog.calls().metrics().connection_stats();
                let mut b_conn = StringBuilder::new();
                let mut b_kind = StringBuilder::new();
                let mut ints: Vec<arrow::array::UInt64Builder> =
                    (0..7).map(|_| arrow::array::UInt64Builder::new()).collect();
                let mut floats: Vec<arrow::array::Float64Builder> = (0..4)
                    .map(|_| arrow::array::Float64Builder::new())
                    .collect();
                let mut last_error = StringBuilder::new();
                let mut last_error_at =
                    arrow::array::TimestampMicrosecondBuilder::new().with_timezone("UTC");
                let mut last_ok_at =
                    arrow::array::TimestampMicrosecondBuilder::new().with_timezone("UTC");
                let mut remaining = arrow::array::Float64Builder::new();
                let mut breaker = StringBuilder::new();
                for c in catalog.connections() {
                    let st = stats.get(&c.name).cloned().unwrap_or_default();
                    b_conn.append_value(&c.name);
                    b_kind.append_value(&c.kind);
                    let server: u64 = ["server", "timeout", "network", "bad_response"]
                        .iter()
                        .filter_map(|k| st.errors.get(k))
                        .sum();
                    let values = [
                        st.requests,
                        st.cache_hits,
                        st.error_count(),
                        st.errors.get("rate_limited").copied().unwrap_or(0),
                        server,
                        st.retries,
                        st.bytes,
                    ];
                    for (b, v) in ints.iter_mut().zip(values) {
                        b.append_value(v);
                    }
                    let fl = [
                        st.success_pct(),
                        st.uptime_pct(),
                        st.latency_ms(0.5),
                        st.latency_ms(0.95),
                    ];
                    for (b, v) in floats.iter_mut().zip(fl) {
                        b.append_option(v);
                    }
                    last_error.append_option(st.last_error.as_ref().map(|e| e.1.as_str()));
                    last_error_at.append_option(st.last_error.as_ref().map(|e| micros(e.0)));
                    last_ok_at.append_option(st.last_success.map(micros));
                    remaining.append_option(st.rate_limit_remaining);
                    breaker.append_value(if st.breaker_open { "open" } else { "closed" });
                }
                let mut cols: Vec<ArrayRef> =
                    vec![Arc::new(b_conn.finish()), Arc::new(b_kind.finish())];
                cols.extend(
                    ints.into_iter()
                        .map(|mut b| Arc::new(b.finish()) as ArrayRef),
                );
                cols.extend(
                    floats
                        .into_iter()
                        .map(|mut b| Arc::new(b.finish()) as ArrayRef),
                );
                cols.extend([
                    Arc::new(last_error.finish()) as ArrayRef,
                    Arc::new(last_error_at.finish()),
                    Arc::new(last_ok_at.finish()),
                    Arc::new(remaining.finish()),
                    Arc::new(breaker.finish()),
                ]);
                cols
            }
            SystemTableKind::Queries => {
                let queries = catalog.calls().metrics().recent_queries();
                let mut qid = arrow::array::UInt64Builder::new();
                let mut at = arrow::array::TimestampMicrosecondBuilder::new().with_timezone("UTC");
                let mut user = StringBuilder::new();
                let mut stmt = StringBuilder::new();
                let mut dur = arrow::array::Float64Builder::new();
                let mut conns = StringBuilder::new();
                let mut count = UInt32Builder::new();
                let mut calls = arrow::array::UInt64Builder::new();
                let mut hits = arrow::array::UInt64Builder::new();
                let mut bytes = arrow::array::UInt64Builder::new();
                let mut rows = arrow::array::Int64Builder::new();
                let mut status = StringBuilder::new();
                for q in &queries {
                    qid.append_value(q.query_id);
                    at.append_value(micros(q.at));
                    user.append_value(&q.user);
                    stmt.append_value(&q.statement);
                    dur.append_value(q.duration.as_secs_f64() * 1000.0);
                    conns.append_value(q.connectors.iter().cloned().collect::<Vec<_>>().join(","));
                    count.append_value(u32::try_from(q.connectors.len()).unwrap_or(u32::MAX));
                    calls.append_value(q.api_calls);
                    hits.append_value(q.cache_hits);
                    bytes.append_value(q.bytes);
                    rows.append_option(q.rows.and_then(|r| i64::try_from(r).ok()));
                    status.append_value(&q.status);
                }
                vec![
                    Arc::new(qid.finish()),
                    Arc::new(at.finish()),
                    Arc::new(user.finish()),
                    Arc::new(stmt.finish()),
                    Arc::new(dur.finish()),
                    Arc::new(conns.finish()),
                    Arc::new(count.finish()),
                    Arc::new(calls.finish()),
                    Arc::new(hits.finish()),
                    Arc::new(bytes.finish()),
                    Arc::new(rows.finish()),
                    Arc::new(status.finish()),
                ]
            }
            SystemTableKind::AuditLog => {
                let events = catalog.audit().recent();
                let mut text: Vec<StringBuilder> =
                    AUDIT_TEXT.iter().map(|_| StringBuilder::new()).collect();
                let mut qid = arrow::array::UInt64Builder::new();
                let mut rows = arrow::array::Int64Builder::new();
                let mut bytes = arrow::array::Int64Builder::new();
                let mut latency = arrow::array::Float64Builder::new();
                let mut hit = BooleanBuilder::new();
                for e in &events {
                    for (b, (_, key, _)) in text.iter_mut().zip(AUDIT_TEXT.iter()) {
                        b.append_option(match &e[*key] {
                            serde_json::Value::Null => None,
                            serde_json::Value::String(s) => Some(s.clone()),
                            other => Some(other.to_string()),
                        });
                    }
                    qid.append_option(e["query_id"].as_u64());
                    rows.append_option(e["rows"].as_i64());
                    bytes.append_option(e["bytes"].as_i64());
                    latency.append_option(e["latency_ms"].as_f64());
                    hit.append_option(e["cache_hit"].as_bool());
                }
                let mut cols: Vec<ArrayRef> = text
                    .into_iter()
                    .map(|mut b| Arc::new(b.finish()) as ArrayRef)
                    .collect();
                cols.insert(4, Arc::new(qid.finish()));
                cols.extend([
                    Arc::new(rows.finish()) as ArrayRef,
                    Arc::new(bytes.finish()),
                    Arc::new(latency.finish()),
                    Arc::new(hit.finish()),
                ]);
                cols
            }
            SystemTableKind::ApiCalls => {
                let calls = catalog.calls().recent();
                let mut at = arrow::array::TimestampMicrosecondBuilder::new().with_timezone("UTC");
                let mut qid = arrow::array::UInt64Builder::new();
                let mut conn = StringBuilder::new();
                let mut table = StringBuilder::new();
                let mut method = StringBuilder::new();
                let mut url = StringBuilder::new();
                let mut status = arrow::array::Int32Builder::new();
                let mut rows = arrow::array::UInt64Builder::new();
                let mut bytes = arrow::array::UInt64Builder::new();
                let mut latency = arrow::array::Float64Builder::new();
                let mut attempt = UInt32Builder::new();
                let mut error = StringBuilder::new();
                let mut hit = BooleanBuilder::new();
                for c in calls {
                    let micros =
                        c.at.duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_micros() as i64)
                            .unwrap_or(0);
                    at.append_value(micros);
                    qid.append_value(c.query_id);
                    conn.append_value(&c.connection);
                    table.append_value(&c.table);
                    method.append_value(c.method);
                    url.append_value(&c.url);
                    status.append_option(c.status.map(i32::from));
                    rows.append_option(c.rows);
                    bytes.append_value(c.bytes);
                    latency.append_value(c.latency.as_secs_f64() * 1000.0);
                    attempt.append_value(c.attempt);
                    error.append_option(c.error.as_deref());
                    hit.append_value(c.cache_hit);
                }
                vec![
                    Arc::new(at.finish()),
                    Arc::new(qid.finish()),
                    Arc::new(conn.finish()),
                    Arc::new(table.finish()),
                    Arc::new(method.finish()),
                    Arc::new(url.finish()),
                    Arc::new(status.finish()),
                    Arc::new(rows.finish()),
                    Arc::new(bytes.finish()),
                    Arc::new(latency.finish()),
                    Arc::new(attempt.finish()),
                    Arc::new(error.finish()),
                    Arc::new(hit.finish()),
                ]
            }
            SystemTableKind::Connections => {
                let mut name = StringBuilder::new();
                let mut kind = StringBuilder::new();
                let mut count = UInt32Builder::new();
                for c in catalog.connections() {
                    let n = match catalog.schema(&c.name) {
                        Some(s) => s.table_names().len(),
                        None => 0,
                    };
                    name.append_value(&c.name);
                    kind.append_value(&c.kind);
                    count.append_value(u32::try_from(n).unwrap_or(u32::MAX));
                }
                vec![
                    Arc::new(name.finish()),
                    Arc::new(kind.finish()),
                    Arc::new(count.finish()),
                ]
            }
            SystemTableKind::Tables | SystemTableKind::Columns => {
                let mut rows: Vec<(String, String, SchemaRef)> = Vec::new();
                for c in catalog.connections() {
                    let Some(schema) = catalog.schema(&c.name) else {
                        continue;
                    };
                    let mut names = schema.table_names();
                    names.sort();
                    for t in names {
                        if let Some(p) = schema.table(&t).await? {
                            rows.push((c.name.clone(), t, p.schema()));
                        }
                    }
                }
                if self.kind == SystemTableKind::Tables {
                    let mut s = StringBuilder::new();
                    let mut t = StringBuilder::new();
                    let mut d = StringBuilder::new();
                    for (schema, table, ts) in &rows {
                        s.append_value(schema);
                        t.append_value(table);
                        d.append_option(meta::table_description(ts));
                    }
                    vec![
                        Arc::new(s.finish()),
                        Arc::new(t.finish()),
                        Arc::new(d.finish()),
                    ]
                } else {
                    let mut s = StringBuilder::new();
                    let mut t = StringBuilder::new();
                    let mut pos = UInt32Builder::new();
                    let mut cn = StringBuilder::new();
                    let mut dt = StringBuilder::new();
                    let mut nullable = BooleanBuilder::new();
                    let mut d = StringBuilder::new();
                    for (schema, table, ts) in &rows {
                        for (i, f) in ts.fields().iter().enumerate() {
                            s.append_value(schema);
                            t.append_value(table);
                            pos.append_value(u32::try_from(i + 1).unwrap_or(u32::MAX));
                            cn.append_value(f.name());
                            dt.append_value(f.data_type().to_string());
                            nullable.append_value(f.is_nullable());
                            d.append_option(meta::column_description(f));
                        }
                    }
                    vec![
                        Arc::new(s.finish()),
                        Arc::new(t.finish()),
                        Arc::new(pos.finish()),
                        Arc::new(cn.finish()),
                        Arc::new(dt.finish()),
                        Arc::new(nullable.finish()),
                        Arc::new(d.finish()),
                    ]
                }
            }
        };
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = self.build().await?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}

/// Rows computed at each scan.
pub type SnapshotRows = dyn Fn() -> DfResult<RecordBatch> + Send + Sync;

/// A system table a front end adds (`Catalog::add_system_table`): its rows are computed afresh
/// at each scan (the grants in force, the secret store's metadata).
pub struct SnapshotTable {
    schema: SchemaRef,
    rows: Box<SnapshotRows>,
}

impl SnapshotTable {
    pub fn new(
        schema: SchemaRef,
        rows: impl Fn() -> DfResult<RecordBatch> + Send + Sync + 'static,
    ) -> Self {
        SnapshotTable {
            schema,
            rows: Box::new(rows),
        }
    }
}

impl fmt::Debug for SnapshotTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SnapshotTable")
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let batch = (self.rows)()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema.clone(),
            projection.cloned(),
        )?)
    }
}
