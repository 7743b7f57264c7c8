//! Planning (pure): which filters a table can push into its API, and the requests a scan makes.
//! Nothing here does I/O, so every rule is unit-tested without a server.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::scalar::ScalarValue;
use serde_json::Value;

use super::spec::{FilterOp, FilterRule, ListStyle, Method, TableSpec, ValueFormat};
use crate::error::{ErrorKind, JoineryError, Result};

/// Most requests one scan may fan out to; beyond it the query must narrow its IN lists.
pub const MAX_FANOUT: usize = 1000;

/// A filter recognized as `column op value(s)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Matched {
    pub column: String,
    pub op: FilterOp,
    pub values: Vec<ScalarValue>,
}

fn column_name(e: &Expr) -> Option<&str> {
    match e {
        Expr::Column(c) => Some(c.name.as_str()),
        // Text columns compared with Utf8View/LargeUtf8 literals arrive wrapped in a cast.
        Expr::Cast(c) => match (c.expr.as_ref(), c.field.data_type()) {
            (Expr::Column(col), t) if t.is_string() => Some(col.name.as_str()),
            _ => None,
        },
        _ => None,
    }
}

fn literal(e: &Expr) -> Option<&ScalarValue> {
    match e {
        Expr::Literal(v, _) if !v.is_null() => Some(v),
        _ => None,
    }
}

fn flip(op: Operator) -> Option<Operator> {
    Some(match op {
        Operator::Eq => Operator::Eq,
        Operator::NotEq => Operator::NotEq,
        Operator::Lt => Operator::Gt,
        Operator::LtEq => Operator::GtEq,
        Operator::Gt => Operator::Lt,
        Operator::GtEq => Operator::LtEq,
        _ => return None,
    })
}

fn filter_op(op: Operator) -> Option<FilterOp> {
    Some(match op {
        Operator::Eq => FilterOp::Eq,
        Operator::NotEq => FilterOp::Ne,
        Operator::Lt => FilterOp::Lt,
        Operator::LtEq => FilterOp::Lte,
        Operator::Gt => FilterOp::Gt,
        Operator::GtEq => FilterOp::Gte,
        _ => return None,
    })
}

/// `a = 1 OR a = 2 OR a IN (3)`: DataFusion rewrites short IN lists to ORs of equalities.
fn or_of_equalities(e: &Expr, column: &mut Option<String>, values: &mut Vec<ScalarValue>) -> bool {
    match e {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => or_of_equalities(left, column, values) && or_of_equalities(right, column, values),
        other => match recognize(other).as_deref() {
            Some([m]) if matches!(m.op, FilterOp::Eq | FilterOp::In) => {
                if column.get_or_insert_with(|| m.column.clone()) != &m.column {
                    return false;
                }
                values.extend(m.values.iter().cloned());
                true
            }
            _ => false,
        },
    }
}

/// Recognize the shapes an API can take: `col op lit` (either side), `col IN (...)` (also as
/// an OR of equalities), `col BETWEEN a AND b`, `col IS [NOT] NULL`, `col LIKE 'prefix%'`.
pub fn recognize(e: &Expr) -> Option<Vec<Matched>> {
    let one = |column: &str, op, values| {
        Some(vec![Matched {
            column: column.to_string(),
            op,
            values,
        }])
    };
    match e {
        Expr::BinaryExpr(BinaryExpr {
            op: Operator::Or, ..
        }) => {
            let mut column = None;
            let mut values = Vec::new();
            if !or_of_equalities(e, &mut column, &mut values) {
                return None;
            }
            one(&column?, FilterOp::In, values)
        }
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if let (Some(c), Some(v)) = (column_name(left), literal(right)) {
                return one(c, filter_op(*op)?, vec![v.clone()]);
            }
            if let (Some(v), Some(c)) = (literal(left), column_name(right)) {
                return one(c, filter_op(flip(*op)?)?, vec![v.clone()]);
            }
            None
        }
        Expr::ScalarFunction(f)
            if matches!(f.func.name(), "array_has" | "list_has" | "array_contains") =>
        {
            let [list, value] = f.args.as_slice() else {
                return None;
            };
            one(
                column_name(list)?,
                FilterOp::Contains,
                vec![literal(value)?.clone()],
            )
        }
        // A boolean column alone (`WHERE is_private`, what `= true` simplifies to), or negated.
        Expr::Column(c) => one(
            &c.name,
            FilterOp::Eq,
            vec![ScalarValue::Boolean(Some(true))],
        ),
        Expr::Not(inner) => match inner.as_ref() {
            Expr::Column(c) => one(
                &c.name,
                FilterOp::Eq,
                vec![ScalarValue::Boolean(Some(false))],
            ),
            _ => None,
        },
        Expr::InList(l) => {
            let c = column_name(&l.expr)?;
            let values: Option<Vec<ScalarValue>> =
                l.list.iter().map(|v| literal(v).cloned()).collect();
            let op = if l.negated {
                FilterOp::NotIn
            } else {
                FilterOp::In
            };
            one(c, op, values?)
        }
        Expr::Between(b) if !b.negated => {
            let c = column_name(&b.expr)?;
            Some(vec![
                Matched {
                    column: c.to_string(),
                    op: FilterOp::Gte,
                    values: vec![literal(&b.low)?.clone()],
                },
                Matched {
                    column: c.to_string(),
                    op: FilterOp::Lte,
                    values: vec![literal(&b.high)?.clone()],
                },
            ])
        }
        Expr::IsNull(inner) => one(column_name(inner)?, FilterOp::IsNull, vec![]),
        Expr::IsNotNull(inner) => one(column_name(inner)?, FilterOp::IsNotNull, vec![]),
        Expr::Like(l) if !l.negated && !l.case_insensitive && l.escape_char.is_none() => {
            let c = column_name(&l.expr)?;
            let pattern = match literal(&l.pattern)? {
                ScalarValue::Utf8(Some(s))
                | ScalarValue::Utf8View(Some(s))
                | ScalarValue::LargeUtf8(Some(s)) => s,
                _ => return None,
            };
            let prefix = pattern.strip_suffix('%')?;
            if prefix.contains(['%', '_', '\\']) {
                return None;
            }
            one(
                c,
                FilterOp::Prefix,
                vec![ScalarValue::Utf8(Some(prefix.to_string()))],
            )
        }
        _ => None,
    }
}

/// A scalar as the API wants it written.
pub fn format_value(v: &ScalarValue, format: ValueFormat) -> Option<String> {
    let micros = |v: &ScalarValue| -> Option<i64> {
        match v {
            ScalarValue::TimestampSecond(Some(x), _) => x.checked_mul(1_000_000),
            ScalarValue::TimestampMillisecond(Some(x), _) => x.checked_mul(1_000),
            ScalarValue::TimestampMicrosecond(Some(x), _) => Some(*x),
            ScalarValue::TimestampNanosecond(Some(x), _) => Some(x / 1_000),
            ScalarValue::Date32(Some(d)) => i64::from(*d).checked_mul(86_400_000_000),
            _ => None,
        }
    };
    if let Some(us) = micros(v) {
        let slack = |us: i64| {
            format!(
                "{}.{:06}",
                us.div_euclid(1_000_000),
                us.rem_euclid(1_000_000)
            )
        };
        return match format {
            ValueFormat::SlackTs => Some(slack(us)),
            ValueFormat::SlackTsBefore => Some(slack(us - 1)),
            ValueFormat::SlackTsAfter => Some(slack(us + 1)),
            ValueFormat::EpochSeconds => Some(us.div_euclid(1_000_000).to_string()),
            ValueFormat::EpochMillis => Some(us.div_euclid(1_000).to_string()),
            _ => {
                if let ScalarValue::Date32(Some(d)) = v
                    && format == ValueFormat::Plain
                {
                    let day = NaiveDate::from_num_days_from_ce_opt(*d + 719_163)?;
                    return Some(day.format("%Y-%m-%d").to_string());
                }
                let t = DateTime::from_timestamp_micros(us)?;
                Some(if us % 1_000_000 == 0 {
                    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
                } else {
                    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
                })
            }
        };
    }
    let s = match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::Utf8View(Some(s))
        | ScalarValue::LargeUtf8(Some(s)) => s.clone(),
        ScalarValue::Boolean(Some(b)) => b.to_string(),
        // `1.5` is a decimal in Postgres-style SQL: written out exactly (`5000.5`).
        ScalarValue::Decimal128(Some(x), _, scale) => {
            let scale = u32::try_from(*scale).ok()?;
            let div = 10i128.checked_pow(scale)?;
            let (int, frac) = (x / div, (x % div).abs());
            let sign = if *x < 0 && int == 0 { "-" } else { "" };
            if scale == 0 {
                format!("{sign}{int}")
            } else {
                let f = format!("{frac:0width$}", width = scale as usize);
                let f = f.trim_end_matches('0');
                if f.is_empty() {
                    format!("{sign}{int}")
                } else {
                    format!("{sign}{int}.{f}")
                }
            }
        }
        ScalarValue::Int8(Some(_))
        | ScalarValue::Int16(Some(_))
        | ScalarValue::Int32(Some(_))
        | ScalarValue::Int64(Some(_))
        | ScalarValue::UInt8(Some(_))
        | ScalarValue::UInt16(Some(_))
        | ScalarValue::UInt32(Some(_))
        | ScalarValue::UInt64(Some(_))
        | ScalarValue::Float32(Some(_))
        | ScalarValue::Float64(Some(_)) => v.to_string(),
        _ => return None,
    };
    Some(match format {
        ValueFormat::Lowercase => s.to_lowercase(),
        _ => s,
    })
}

/// A recognized filter bound to the rule that takes it.
#[derive(Debug, Clone)]
struct Binding {
    rule: usize,
    op: FilterOp,
    values: Vec<String>,
}

impl Binding {
    fn target(&self, spec: &TableSpec) -> String {
        spec.filters[self.rule].target()
    }
}

/// Decide each filter: the first filter that binds a parameter is pushed (Exact or Inexact as
/// the rule says); a second filter on the same parameter stays with DataFusion.
fn bind_all(
    spec: &TableSpec,
    filters: &[&Expr],
) -> (Vec<TableProviderFilterPushDown>, Vec<Binding>) {
    let mut verdicts = Vec::with_capacity(filters.len());
    let mut bindings: Vec<Binding> = Vec::new();
    for f in filters {
        let mut verdict = TableProviderFilterPushDown::Unsupported;
        if let Some(parts) = recognize(f) {
            let mut local: Vec<Binding> = Vec::new();
            let mut all_exact = true;
            let mut ok = true;
            for m in &parts {
                let found = spec.filters.iter().enumerate().find(|(_, r)| {
                    r.column == m.column
                        && r.accepts(m.op)
                        // Query-language clauses AND together; parameters take one value.
                        && (r.clause.is_some()
                            || !bindings
                                .iter()
                                .chain(local.iter())
                                .any(|b| b.target(spec) == r.target()))
                });
                // `=` can ride on an IN rule, and IN of one value on an `=` rule.
                let found = found.or_else(|| {
                    let alt = match (m.op, m.values.len()) {
                        (FilterOp::Eq, _) => FilterOp::In,
                        (FilterOp::In, 1) => FilterOp::Eq,
                        (FilterOp::Ne, _) => FilterOp::NotIn,
                        (FilterOp::NotIn, 1) => FilterOp::Ne,
                        _ => return None,
                    };
                    spec.filters.iter().enumerate().find(|(_, r)| {
                        r.column == m.column
                            && r.accepts(alt)
                            && (r.clause.is_some()
                                || !bindings
                                    .iter()
                                    .chain(local.iter())
                                    .any(|b| b.target(spec) == r.target()))
                    })
                });
                let Some((idx, rule)) = found else {
                    ok = false;
                    break;
                };
                let values: Option<Vec<String>> = m
                    .values
                    .iter()
                    .map(|v| {
                        let s = format_value(v, rule.format)?;
                        // A value map: only the listed SQL values have an API spelling.
                        if rule.map.is_empty() {
                            Some(s)
                        } else {
                            rule.map.get(&s).cloned()
                        }
                    })
                    .collect();
                let Some(values) = values else {
                    ok = false;
                    break;
                };
                let op = match m.op {
                    FilterOp::In if values.len() == 1 && !rule.accepts(FilterOp::In) => {
                        FilterOp::Eq
                    }
                    FilterOp::NotIn if values.len() == 1 && !rule.accepts(FilterOp::NotIn) => {
                        FilterOp::Ne
                    }
                    other => other,
                };
                // A clause must be writable in the query language (no control characters...).
                if let (Some(field), Some(ql)) = (&rule.clause, &spec.query_language)
                    && super::ql::clause(ql.dialect, field, op, rule.format, &values).is_none()
                {
                    ok = false;
                    break;
                }
                all_exact &= rule.exact && !matches!(op, FilterOp::Ne | FilterOp::NotIn);
                local.push(Binding {
                    rule: idx,
                    op,
                    values,
                });
            }
            if ok {
                bindings.extend(local);
                verdict = if all_exact {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                };
            }
        }
        verdicts.push(verdict);
    }
    (verdicts, bindings)
}

/// `supports_filters_pushdown` for a spec.
pub fn pushdown_verdicts(spec: &TableSpec, filters: &[&Expr]) -> Vec<TableProviderFilterPushDown> {
    bind_all(spec, filters).0
}

/// One HTTP request a scan starts with (pagination adds the rest).
#[derive(Debug, Clone, PartialEq)]
pub struct RequestTemplate {
    pub method: Method,
    /// Path with placeholders filled and percent-encoded.
    pub path: String,
    pub query: Vec<(String, String)>,
    pub body: Option<Value>,
    /// The raw values of the path placeholders, for columns declared as `path = "{name}"`
    /// (GitHub's `repository`, which the records themselves do not carry).
    pub vars: Vec<(String, String)>,
}

impl RequestTemplate {
    /// `GET /path?a=1&b=2` with values shown as sent (the caller redacts secrets).
    pub fn display(&self, redact: &[String]) -> String {
        let mut s = format!(
            "{} {}",
            if self.method == Method::Get {
                "GET"
            } else {
                "POST"
            },
            self.path
        );
        if !self.query.is_empty() {
            let q: Vec<String> = self
                .query
                .iter()
                .map(|(k, v)| {
                    if redact.iter().any(|r| r.eq_ignore_ascii_case(k)) {
                        format!("{k}=***")
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            s.push('?');
            s.push_str(&q.join("&"));
        }
        if let Some(b) = &self.body {
            s.push(' ');
            s.push_str(&b.to_string());
        }
        s
    }
}

/// What a scan will do.
#[derive(Debug, Clone)]
pub struct ScanPlan {
    pub requests: Vec<RequestTemplate>,
    /// Pushed filters, as `column op target`.
    pub pushed: Vec<String>,
    pub page_size: Option<u64>,
    /// Rows wanted at most (only when every filter is Exact).
    pub limit: Option<usize>,
    /// The query-language text split where the template's `{order_by}` stands, so a pushed
    /// sort can be written into it later (`None` without such a slot).
    pub ql_order_slot: Option<(String, String)>,
}

/// A filter value as JSON: numbers and booleans typed, the rest strings.
fn json_value(s: &str) -> Value {
    match serde_json::from_str::<Value>(s) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(s.to_string()),
    }
}

/// Write `v` at the JSON pointer `pointer` of `doc`, creating objects on the way.
pub fn set_pointer(doc: &mut Value, pointer: &str, v: Value) {
    let mut cur = doc;
    let parts: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if !cur.is_object() {
            *cur = Value::Object(Default::default());
        }
        let Value::Object(map) = cur else { return };
        if last {
            map.insert(part.clone(), v);
            return;
        }
        cur = map
            .entry(part.clone())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    *cur = v;
}

/// Connection variables: default values of path placeholders. More than one value fans out
/// (GitHub's `{repository}` over every configured repository).
pub type Vars = BTreeMap<String, Vec<String>>;

/// A value for a placeholder that may span segments (`org/repo`): each segment encoded, empty,
/// `.` and `..` segments refused so no value can walk the path.
fn encode_multi_segment(s: &str) -> Option<String> {
    let parts: Vec<&str> = s.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return None;
    }
    Some(
        parts
            .iter()
            .map(|p| encode_path_segment(p))
            .collect::<Vec<_>>()
            .join("/"),
    )
}

fn encode_path_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Build the requests for `filters` (those the table accepted), connection variables `vars`
/// (defaults for path placeholders), and an optional LIMIT.
pub fn plan_scan(
    spec: &TableSpec,
    table: &str,
    vars: &Vars,
    filters: &[Expr],
    limit: Option<usize>,
) -> Result<ScanPlan> {
    plan_scan_projected(spec, table, vars, filters, limit, None)
}

/// The top-level keys the projected columns read, or `None` when one needs the whole record.
fn projected_keys(spec: &TableSpec, projection: &[usize]) -> Option<Vec<String>> {
    let f = spec.fields.as_ref()?;
    let mut keys: Vec<String> = f.always.clone();
    if let super::spec::Pagination::Cursor {
        last_record: Some(k),
        ..
    } = &spec.pagination
    {
        keys.push(k.split('.').next().unwrap_or(k).to_string());
    }
    let prefix = f.under.as_deref().map(|u| format!("{u}."));
    for i in projection {
        let path = spec.columns.get(*i)?.path();
        if path == "$" || path.is_empty() {
            // The whole record: everything, in the API's own spelling if it has one.
            return f.all.clone().map(|a| vec![a]);
        }
        match &prefix {
            Some(p) => {
                if let Some(rest) = path.strip_prefix(p.as_str()) {
                    keys.push(rest.split('.').next().unwrap_or(rest).to_string());
                }
                // Paths outside `under` (Jira's `key`, `id`) come back anyway.
            }
            None => keys.push(path.split('.').next().unwrap_or(path).to_string()),
        }
    }
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.clone()));
    Some(keys)
}

/// The select list of a query-language template (`SELECT {fields} FROM Account`): the paths of
/// the projected columns (every column's when the whole record is read), after `always`.
fn ql_fields(spec: &TableSpec, projection: Option<&[usize]>, always: &[String]) -> Vec<String> {
    let wanted: Vec<&super::spec::ColumnSpec> = match projection {
        Some(p) => p.iter().filter_map(|i| spec.columns.get(*i)).collect(),
        None => spec.columns.iter().collect(),
    };
    let whole = wanted.iter().any(|c| c.path() == "$");
    let columns: Vec<&super::spec::ColumnSpec> = if whole {
        spec.columns.iter().collect()
    } else {
        wanted
    };
    let mut out: Vec<String> = always.to_vec();
    for c in columns {
        let p = c.path();
        if p == "$" || p.starts_with('{') || p.contains('*') {
            continue;
        }
        if !out.iter().any(|x| x.eq_ignore_ascii_case(p)) {
            out.push(p.to_string());
        }
    }
    out
}

/// [`plan_scan`] with the columns the query reads, for APIs that can return fewer fields.
pub fn plan_scan_projected(
    spec: &TableSpec,
    table: &str,
    vars: &Vars,
    filters: &[Expr],
    limit: Option<usize>,
    projection: Option<&[usize]>,
) -> Result<ScanPlan> {
    let refs: Vec<&Expr> = filters.iter().collect();
    let (verdicts, bindings) = bind_all(spec, &refs);
    let all_exact = verdicts
        .iter()
        .all(|v| matches!(v, TableProviderFilterPushDown::Exact));

    // Every placeholder must be filled by a filter or a connection variable.
    let mut path_values: Vec<(String, Vec<String>)> = Vec::new();
    for p in spec.placeholders() {
        let bound = bindings
            .iter()
            .find(|b| spec.filters[b.rule].path.as_deref() == Some(p.as_str()));
        match (bound, vars.get(&p).filter(|v| !v.is_empty())) {
            (Some(b), _) => path_values.push((p, b.values.clone())),
            (None, Some(v)) => path_values.push((p, v.clone())),
            (None, None) => {
                let how: Vec<String> = spec
                    .filters
                    .iter()
                    .filter(|r| r.path.as_deref() == Some(p.as_str()))
                    .map(|r| {
                        let ops: Vec<&str> = r.operators().iter().map(|o| o.sql()).collect();
                        format!("{} ({})", r.column, ops.join(" or "))
                    })
                    .collect();
                return Err(JoineryError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "a WHERE filter on {} is required to read this table",
                        if how.is_empty() {
                            p.clone()
                        } else {
                            how.join(" or ")
                        }
                    ),
                )
                .with_table(table)
                .with_hint("add e.g. WHERE <column> = '...' to the query"));
            }
        }
    }
    for (i, r) in spec.filters.iter().enumerate() {
        if r.required && r.param.is_some() && !bindings.iter().any(|b| b.rule == i) {
            let ops: Vec<&str> = r.operators().iter().map(|o| o.sql()).collect();
            return Err(JoineryError::new(
                ErrorKind::InvalidInput,
                format!(
                    "a WHERE filter on {} ({}) is required to read this table",
                    r.column,
                    ops.join(" or ")
                ),
            )
            .with_table(table));
        }
    }

    // Query parameters: fixed ones, then pushed filters; fan-out lists multiply requests.
    let mut base: Vec<(String, String)> = spec
        .query
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut fanouts: Vec<(String, Vec<String>)> = Vec::new();
    let mut pushed = Vec::new();
    let mut body_sets: Vec<(String, Value)> = Vec::new();
    let mut clauses: Vec<String> = Vec::new();
    for b in &bindings {
        let rule: &FilterRule = &spec.filters[b.rule];
        if let (Some(field), Some(ql)) = (&rule.clause, &spec.query_language) {
            if let Some(c) = super::ql::clause(ql.dialect, field, b.op, rule.format, &b.values) {
                pushed.push(format!("{} {} -> {c}", rule.column, b.op.sql()));
                clauses.push(c);
            }
            continue;
        }
        let render = |v: &str| match &rule.template {
            Some(t) => t.replace("{value}", v),
            None => v.to_string(),
        };
        pushed.push(format!(
            "{} {} -> {}",
            rule.column,
            b.op.sql(),
            rule.target()
        ));
        if let Some(pointer) = &rule.body {
            let json_values: Vec<Value> = b.values.iter().map(|v| json_value(&render(v))).collect();
            let v = match (b.op, json_values.len()) {
                (FilterOp::IsNull, _) => Value::Null,
                (FilterOp::In, n) if n != 1 => Value::Array(json_values),
                _ => json_values.into_iter().next().unwrap_or(Value::Null),
            };
            body_sets.push((pointer.clone(), v));
            continue;
        }
        let Some(param) = &rule.param else { continue };
        let values: Vec<String> = match b.op {
            FilterOp::IsNull => vec![render("null")],
            FilterOp::IsNotNull => vec![render("*")],
            _ => b.values.iter().map(|v| render(v)).collect(),
        };
        // A fixed parameter of the same name is replaced by the filter's value.
        base.retain(|(k, _)| k != param);
        if b.op == FilterOp::In && values.len() > 1 {
            match rule.list {
                ListStyle::Fanout => fanouts.push((param.clone(), values)),
                ListStyle::Join => base.push((param.clone(), values.join(&rule.separator))),
                ListStyle::Repeat => base.extend(values.into_iter().map(|v| (param.clone(), v))),
            }
        } else if let Some(v) = values.into_iter().next() {
            base.push((param.clone(), v));
        }
    }
    let mut ql_order_slot = None;
    if let Some(ql) = &spec.query_language {
        let fields = ql_fields(spec, projection, &ql.always).join(", ");
        // Only when every filter was pushed exactly is the API's LIMIT the query's.
        let lim = match limit {
            Some(l) if all_exact => format!(" LIMIT {l}"),
            _ => String::new(),
        };
        // Literals never hold control characters (`ql::quote` refuses them), so NUL marks
        // where a pushed ORDER BY goes.
        let text = super::ql::render(
            &ql.template,
            &clauses,
            ql.default_where.as_deref(),
            &[("fields", &fields), ("limit", &lim), ("order_by", "\0")],
        );
        if let Some((a, b)) = text.split_once('\0') {
            ql_order_slot = Some((a.to_string(), b.to_string()));
        }
        let text = text.replace('\0', "");
        if let Some(param) = &ql.param {
            base.retain(|(k, _)| k != param);
            base.push((param.clone(), text));
        } else if let Some(pointer) = &ql.body {
            body_sets.push((pointer.clone(), Value::String(text)));
        }
    }
    let page_size = spec.page_size.as_ref().map(|p| match limit {
        Some(l) if all_exact => (l as u64).clamp(1, p.max),
        _ => p.max,
    });
    if let (Some(ps), Some(p)) = (page_size, &spec.page_size) {
        if let Some(param) = &p.param {
            base.retain(|(k, _)| k != param);
            base.push((param.clone(), ps.to_string()));
        }
        if let Some(pointer) = &p.body {
            body_sets.push((pointer.clone(), Value::from(ps)));
        }
    }
    if let (Some(f), Some(p)) = (&spec.fields, projection)
        && let Some(keys) = projected_keys(spec, p)
    {
        base.retain(|(k, _)| k != &f.param);
        base.push((f.param.clone(), keys.join(&f.separator)));
    }
    let body = spec.body.clone().map(|mut b| {
        for (pointer, v) in &body_sets {
            set_pointer(&mut b, pointer, v.clone());
        }
        b
    });

    // Cartesian product of path values and fan-out parameters.
    // (path placeholder values, fan-out query parameters) of each request.
    type Pairs = Vec<(String, String)>;
    let mut combos: Vec<(Pairs, Pairs)> = vec![(vec![], vec![])];
    for (name, vals) in &path_values {
        combos = combos
            .into_iter()
            .flat_map(|(p, q)| {
                vals.iter().map(move |v| {
                    let mut p = p.clone();
                    p.push((name.clone(), v.clone()));
                    (p, q.clone())
                })
            })
            .collect();
    }
    for (name, vals) in &fanouts {
        combos = combos
            .into_iter()
            .flat_map(|(p, q)| {
                vals.iter().map(move |v| {
                    let mut q = q.clone();
                    q.push((name.clone(), v.clone()));
                    (p.clone(), q)
                })
            })
            .collect();
        if combos.len() > MAX_FANOUT {
            return Err(JoineryError::new(
                ErrorKind::InvalidInput,
                format!("the IN lists would fan out to more than {MAX_FANOUT} requests"),
            )
            .with_table(table));
        }
    }
    let requests = combos
        .into_iter()
        .map(|(p, q)| {
            let mut path = spec.path.clone();
            let vars = p.clone();
            for (name, v) in p {
                let encoded = if spec.multi_segment.contains(&name) {
                    encode_multi_segment(&v).ok_or_else(|| {
                        JoineryError::invalid_input(format!(
                            "'{v}' is not a valid {name} (expected segments like 'org/name')"
                        ))
                        .with_table(table)
                    })?
                } else {
                    encode_path_segment(&v)
                };
                path = path.replace(&format!("{{{name}}}"), &encoded);
            }
            let mut query = base.clone();
            query.extend(q);
            query.sort();
            // Query parameter values can be columns too (Slack's `channel`).
            let mut vars = vars;
            vars.extend(query.iter().cloned());
            Ok(RequestTemplate {
                method: spec.method,
                path,
                query,
                body: body.clone(),
                vars,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(ScanPlan {
        requests,
        pushed,
        page_size,
        limit: if all_exact { limit } else { None },
        ql_order_slot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn spec() -> TableSpec {
        TableSpec::from_json(serde_json::json!({
            "name": "issues",
            "path": "/repos/{owner}/{repo}/issues",
            "query": {"state": "all"},
            "records": "",
            "columns": [
                {"name": "repository", "type": "text"},
                {"name": "state", "type": "text"},
                {"name": "number", "type": "bigint"},
                {"name": "updated_at", "type": "timestamp"},
                {"name": "labels", "type": "text"}
            ],
            "filters": [
                {"column": "repository", "ops": ["eq", "in"], "path": "repo", "exact": true},
                {"column": "state", "ops": ["eq"], "param": "state", "exact": true},
                {"column": "updated_at", "ops": ["gte", "gt"], "param": "since", "format": "iso8601"},
                {"column": "labels", "ops": ["eq", "in"], "param": "labels", "list": "join"}
            ],
            "pagination": {"type": "link_header"},
            "page_size": {"param": "per_page", "max": 100}
        }))
        .expect("spec")
    }

    fn vars() -> Vars {
        [("owner".to_string(), vec!["acme".to_string()])]
            .into_iter()
            .collect()
    }

    #[test]
    fn verdicts_follow_rules() {
        let s = spec();
        let f1 = col("state").eq(lit("open"));
        let f2 = col("updated_at").gt_eq(lit(ScalarValue::TimestampMicrosecond(
            Some(0),
            Some("UTC".into()),
        )));
        let f3 = col("number").eq(lit(5i64));
        let f4 = col("state").eq(lit("closed"));
        let v = pushdown_verdicts(&s, &[&f1, &f2, &f3, &f4]);
        assert_eq!(
            v,
            vec![
                TableProviderFilterPushDown::Exact,
                TableProviderFilterPushDown::Inexact,
                TableProviderFilterPushDown::Unsupported,
                // the second filter on `state` stays with DataFusion
                TableProviderFilterPushDown::Unsupported,
            ]
        );
    }

    #[test]
    fn in_list_fans_out_and_joins() {
        let s = spec();
        let f = vec![
            col("repository").in_list(vec![lit("a"), lit("b")], false),
            col("labels").in_list(vec![lit("bug"), lit("p0")], false),
            col("state").eq(lit("open")),
        ];
        let p = plan_scan(&s, "issues", &vars(), &f, Some(5)).expect("plan");
        let shown: Vec<String> = p.requests.iter().map(|r| r.display(&[])).collect();
        assert_eq!(
            shown,
            vec![
                "GET /repos/acme/a/issues?labels=bug,p0&per_page=100&state=open",
                "GET /repos/acme/b/issues?labels=bug,p0&per_page=100&state=open",
            ]
        );
        // labels is Inexact, so the LIMIT is not pushed.
        assert_eq!(p.limit, None);
    }

    #[test]
    fn limit_shrinks_page_when_all_exact() {
        let s = spec();
        let f = vec![col("repository").eq(lit("r")), col("state").eq(lit("open"))];
        let p = plan_scan(&s, "issues", &vars(), &f, Some(5)).expect("plan");
        assert_eq!(p.page_size, Some(5));
        assert_eq!(p.limit, Some(5));
        assert_eq!(
            p.requests[0].display(&[]),
            "GET /repos/acme/r/issues?per_page=5&state=open"
        );
    }

    #[test]
    fn missing_required_placeholder_says_what_to_filter() {
        let s = spec();
        let e = plan_scan(&s, "issues", &vars(), &[], None).expect_err("needs repo");
        assert!(e.message.contains("repository (= or IN)"), "{}", e.message);
    }

    #[test]
    fn values_are_encoded_not_injected() {
        let s = spec();
        let f = vec![col("repository").eq(lit("a/../b?x=1&y#z"))];
        let p = plan_scan(&s, "issues", &vars(), &f, None).expect("plan");
        assert_eq!(
            p.requests[0].path,
            "/repos/acme/a%2F..%2Fb%3Fx%3D1%26y%23z/issues"
        );
    }

    #[test]
    fn recognizes_shapes() {
        assert_eq!(
            recognize(&lit("x").eq(col("state"))).map(|m| m[0].op),
            Some(FilterOp::Eq)
        );
        assert_eq!(
            recognize(&lit(3i64).lt(col("number"))).map(|m| m[0].op),
            Some(FilterOp::Gt)
        );
        let b = recognize(&col("number").between(lit(1i64), lit(9i64))).unwrap_or_default();
        assert_eq!(
            b.iter().map(|m| m.op).collect::<Vec<_>>(),
            vec![FilterOp::Gte, FilterOp::Lte]
        );
        assert_eq!(
            recognize(&col("state").like(lit("op%"))).map(|m| m[0].op),
            Some(FilterOp::Prefix)
        );
        assert_eq!(recognize(&col("state").like(lit("o_%"))), None);
        assert_eq!(
            recognize(&col("state").not_eq(lit("x"))).map(|m| m[0].op),
            Some(FilterOp::Ne)
        );
        let or = col("state").eq(lit("a")).or(col("state").eq(lit("b")));
        assert_eq!(
            recognize(&or).map(|m| (m[0].op, m[0].values.len())),
            Some((FilterOp::In, 2))
        );
        let mixed = col("state").eq(lit("a")).or(col("labels").eq(lit("b")));
        assert_eq!(recognize(&mixed), None);
    }

    #[test]
    fn timestamps_format_per_rule() {
        let t = ScalarValue::TimestampMicrosecond(Some(1_710_066_896_000_000), Some("UTC".into()));
        assert_eq!(
            format_value(&t, ValueFormat::Iso8601).as_deref(),
            Some("2024-03-10T10:34:56Z")
        );
        assert_eq!(
            format_value(&t, ValueFormat::EpochSeconds).as_deref(),
            Some("1710066896")
        );
        assert_eq!(
            format_value(&t, ValueFormat::EpochMillis).as_deref(),
            Some("1710066896000")
        );
    }
}
