//! The declarative description of a REST table. The same types deserialize from a connector's
//! Rust constants (via `serde_json::json!`) and from a user's `joinery.toml`.

use std::collections::BTreeMap;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::Deserialize;

use crate::error::{JoineryError, Result};
use crate::meta;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    #[default]
    Get,
    Post,
}

/// One table of a REST API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub method: Method,
    /// Path relative to the connection's base URL, with `{placeholders}` filled from filters
    /// (rules with `path = "..."`) or connection variables.
    pub path: String,
    /// Query parameters sent on every request (e.g. `state = "all"` so defaults hide nothing).
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON body for POST-search APIs; filter rules with `body` targets write into it.
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    /// Dotted path to the array of records in a response; empty when the body is the array.
    #[serde(default)]
    pub records: String,
    pub columns: Vec<ColumnSpec>,
    #[serde(default)]
    pub filters: Vec<FilterRule>,
    #[serde(default)]
    pub pagination: Pagination,
    #[serde(default)]
    pub page_size: Option<PageSize>,
    /// Orderings the API can produce, so `ORDER BY ... LIMIT n` needs no local sort.
    #[serde(default)]
    pub sort: Vec<SortRule>,
    /// Ask only for the columns a query reads (`fields=summary,status`).
    #[serde(default)]
    pub fields: Option<FieldsParam>,
    /// How long this table's pages stay cached (seconds); the connection's TTL otherwise.
    #[serde(default)]
    pub cache_ttl_s: Option<u64>,
    /// APIs that answer errors with HTTP 200 (Slack): when this dotted path is `false`, the
    /// page is an error whose text is at `error_path`.
    #[serde(default)]
    pub ok_path: Option<String>,
    #[serde(default)]
    pub error_path: Option<String>,
    /// Records where this dotted path holds a value are not rows of the table (GitHub's issues
    /// list includes pull requests, marked by `pull_request`).
    #[serde(default)]
    pub skip_if: Option<String>,
    /// Filters written as clauses of the API's own query language (Jira's JQL, Salesforce's
    /// SOQL) into one parameter: rules with `clause` contribute, ANDed.
    #[serde(default)]
    pub query_language: Option<QueryLanguage>,
    /// Placeholders whose values span path segments (`{repository}` = `org/repo`).
    #[serde(default)]
    pub multi_segment: Vec<String>,
}

/// Which query language, so literals are quoted and escaped its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QlDialect {
    Jql,
    Soql,
}

/// One parameter (or body field) holding a query in the API's language.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryLanguage {
    pub dialect: QlDialect,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    /// The query with `{where}` (the ANDed clauses, or `default_where`) and `{where_clause}`
    /// (` WHERE ...` or nothing): `"{where} ORDER BY created DESC"`.
    pub template: String,
    /// What `{where}` is without any pushed filter (Jira rejects unbounded JQL).
    #[serde(default)]
    pub default_where: Option<String>,
    /// Fields `{fields}` always starts with (`Id`); the projected columns' paths follow.
    /// `{limit}` becomes ` LIMIT n` when the query's LIMIT can be pushed.
    #[serde(default)]
    pub always: Vec<String>,
}

/// The parameter that selects response fields: the projected columns' top-level JSON keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldsParam {
    pub param: String,
    #[serde(default = "default_separator")]
    pub separator: String,
    /// Keys always requested (ids that pagination or the API itself needs).
    #[serde(default)]
    pub always: Vec<String>,
    /// Fields are the keys under this object (Jira's `fields.summary` -> `summary`).
    #[serde(default)]
    pub under: Option<String>,
    /// The value that asks for every field (Jira's `*all`), sent when the whole record is read.
    #[serde(default)]
    pub all: Option<String>,
}

/// `ORDER BY column [ASC|DESC]` -> `param=value` (and `direction_param=asc|desc`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SortRule {
    pub column: String,
    #[serde(default)]
    pub param: String,
    #[serde(default)]
    pub value: String,
    /// The field to name in the query language's `{order_by}` slot (SOQL `ORDER BY Amount DESC
    /// NULLS FIRST`) instead of a parameter.
    #[serde(default)]
    pub clause: Option<String>,
    /// Parameter carrying the direction; without it (and without `{dir}` in `value`, which
    /// becomes `asc`/`desc`) only `natural` is available.
    #[serde(default)]
    pub direction_param: Option<String>,
    #[serde(default = "asc_word")]
    pub asc: String,
    #[serde(default = "desc_word")]
    pub desc: String,
    /// The only direction the API sorts in when there is no direction parameter.
    #[serde(default)]
    pub natural: SortDirection,
    /// The API orders exactly as SQL would (collation, NULLs): the local sort is dropped.
    #[serde(default)]
    pub exact: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SortDirection {
    #[default]
    Asc,
    Desc,
}

fn asc_word() -> String {
    "asc".into()
}

fn desc_word() -> String {
    "desc".into()
}

/// The Arrow type a column is decoded to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    #[serde(alias = "string", alias = "utf8")]
    Text,
    #[serde(alias = "int", alias = "int64", alias = "integer")]
    Bigint,
    #[serde(alias = "float", alias = "float64", alias = "double")]
    Double,
    #[serde(alias = "bool")]
    Boolean,
    /// ISO 8601 (with or without a colon in the offset), or epoch seconds/milliseconds as
    /// declared by `format`.
    Timestamp,
    Date,
    /// Any JSON value, kept as JSON text (sent to clients as `json`).
    Json,
    /// A list of strings (`text[]`); with `*` in the path, one value per array element
    /// (`labels.*.name`).
    TextList,
    /// A list of integers (`bigint[]`).
    BigintList,
}

impl ColumnType {
    pub fn data_type(self) -> DataType {
        match self {
            ColumnType::Text | ColumnType::Json => DataType::Utf8,
            ColumnType::Bigint => DataType::Int64,
            ColumnType::Double => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
            ColumnType::TextList => DataType::List(std::sync::Arc::new(Field::new_list_field(
                DataType::Utf8,
                true,
            ))),
            ColumnType::BigintList => DataType::List(std::sync::Arc::new(Field::new_list_field(
                DataType::Int64,
                true,
            ))),
        }
    }
}

/// How a timestamp column is written in responses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    #[default]
    Iso8601,
    EpochSeconds,
    EpochMillis,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub data_type: ColumnType,
    /// Dotted path in the record (`user.login`); defaults to the column name. `$` is the whole
    /// record (a JSON column holding the full object).
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub format: TimeFormat,
}

impl ColumnSpec {
    pub fn path(&self) -> &str {
        self.path.as_deref().unwrap_or(&self.name)
    }
}

/// SQL operators a rule can accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    Eq,
    In,
    Gt,
    Gte,
    Lt,
    Lte,
    /// `LIKE 'prefix%'`
    Prefix,
    IsNull,
    IsNotNull,
    /// `array_has(list_column, 'x')` / `'x' = ANY(list_column)`.
    Contains,
    /// `<>`, only in a query-language clause, never exact. Declare it only where the
    /// language's equality is SQL's (case-sensitive, no aliases): a re-check can drop rows the
    /// API sent, never restore rows a looser negation left out.
    Ne,
    /// `NOT IN (...)`, under the same rule as `<>`.
    NotIn,
}

impl FilterOp {
    pub fn sql(self) -> &'static str {
        match self {
            FilterOp::Eq => "=",
            FilterOp::In => "IN",
            FilterOp::Gt => ">",
            FilterOp::Gte => ">=",
            FilterOp::Lt => "<",
            FilterOp::Lte => "<=",
            FilterOp::Prefix => "LIKE 'prefix%'",
            FilterOp::IsNull => "IS NULL",
            FilterOp::IsNotNull => "IS NOT NULL",
            FilterOp::Contains => "= ANY",
            FilterOp::Ne => "<>",
            FilterOp::NotIn => "NOT IN",
        }
    }
}

/// How an `IN` list reaches the API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListStyle {
    /// One request per value, run in parallel.
    #[default]
    Fanout,
    /// One request, values joined by `separator` in one parameter.
    Join,
    /// One request, the parameter repeated (`statuses[]=a&statuses[]=b`).
    Repeat,
}

/// How a filter value is written in a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueFormat {
    #[default]
    Plain,
    /// Timestamps as ISO 8601 UTC (`2024-03-10T10:34:56Z`).
    Iso8601,
    EpochSeconds,
    EpochMillis,
    Lowercase,
    /// A number, written unquoted in a query language (`Amount > 1000`).
    Number,
    /// Slack's `ts`: epoch seconds with six decimals (`1512085950.000216`).
    SlackTs,
    /// The `ts` one microsecond before the value: `>= t` through an exclusive `oldest`.
    SlackTsBefore,
    /// The `ts` one microsecond after the value: `<= t` through an exclusive `latest`.
    SlackTsAfter,
}

/// `column op value` -> a request parameter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterRule {
    pub column: String,
    /// The operators this rule accepts (`op = "eq"` or `ops = ["eq", "in"]`).
    #[serde(default)]
    pub op: Option<FilterOp>,
    #[serde(default)]
    pub ops: Vec<FilterOp>,
    /// Query parameter the value goes to.
    #[serde(default)]
    pub param: Option<String>,
    /// Path placeholder the value goes to (`{repo}`).
    #[serde(default)]
    pub path: Option<String>,
    /// JSON pointer into the request body the value is written to (POST search APIs,
    /// GraphQL variables): `/variables/status`.
    #[serde(default)]
    pub body: Option<String>,
    /// A template for the parameter's value; `{value}` is replaced (e.g. `">={value}"`).
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub format: ValueFormat,
    /// The API's semantics equal SQL's: DataFusion need not re-check the rows.
    #[serde(default)]
    pub exact: bool,
    /// The table cannot be read without this filter (or a connection default for the placeholder).
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub list: ListStyle,
    #[serde(default = "default_separator")]
    pub separator: String,
    /// The field this rule constrains in the table's query language (`status`, `assignee`):
    /// the filter becomes a clause such as `status in ("Done", "Closed")`.
    #[serde(default)]
    pub clause: Option<String>,
    /// SQL value -> API value (`{"true": "private_channel"}`); a value not listed is not pushed.
    #[serde(default)]
    pub map: std::collections::BTreeMap<String, String>,
}

fn default_separator() -> String {
    ",".into()
}

impl FilterRule {
    pub fn accepts(&self, op: FilterOp) -> bool {
        self.op == Some(op) || self.ops.contains(&op)
    }

    pub fn operators(&self) -> Vec<FilterOp> {
        let mut v: Vec<FilterOp> = self
            .op
            .into_iter()
            .chain(self.ops.iter().copied())
            .collect();
        v.dedup();
        v
    }

    /// Where the value goes, for messages and EXPLAIN.
    pub fn target(&self) -> String {
        if let Some(c) = &self.clause {
            return format!("clause {c}");
        }
        match (&self.param, &self.path, &self.body) {
            (Some(p), _, _) => p.clone(),
            (None, Some(p), _) => format!("{{{p}}}"),
            (None, None, Some(b)) => format!("body{b}"),
            _ => "?".into(),
        }
    }
}

/// The page-size parameter: a query parameter, or a JSON pointer into the body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageSize {
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub body: Option<String>,
    pub max: u64,
}

/// How to get the next page, and how the API says there is none.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Pagination {
    /// One request returns everything.
    #[default]
    None,
    /// Follow `Link: <...>; rel="next"` until it is absent (GitHub).
    LinkHeader,
    /// Follow a URL found in the body until it is null/absent or `done` is true (Salesforce
    /// `nextRecordsUrl`).
    NextUrl {
        path: String,
        #[serde(default)]
        done: Option<String>,
    },
    /// Send a cursor as `param`: from the body (`response`) or the last record's field
    /// (`last_record`, Stripe's `starting_after`). Ends when `has_more` is false, `is_last` is
    /// true, or the cursor is empty/absent. Short pages are not the end.
    Cursor {
        /// Query parameter the cursor goes to...
        #[serde(default)]
        param: Option<String>,
        /// ...or JSON pointer into the body (POST search APIs).
        #[serde(default)]
        body: Option<String>,
        #[serde(default)]
        response: Option<String>,
        #[serde(default)]
        last_record: Option<String>,
        #[serde(default)]
        has_more: Option<String>,
        #[serde(default)]
        is_last: Option<String>,
    },
    /// `offset`/`limit` parameters. Ends when `more` is false, when offset reaches `total`,
    /// or (with neither) on an empty page.
    Offset {
        offset_param: String,
        #[serde(default)]
        more: Option<String>,
        #[serde(default)]
        total: Option<String>,
        /// Ends when this is true (Jira's `isLast`).
        #[serde(default)]
        is_last: Option<String>,
    },
    /// GraphQL Relay connections: `page_info` is the dotted path of `pageInfo`; its
    /// `endCursor` is written at the JSON pointer `cursor` of the body (`/variables/after`)
    /// while `hasNextPage` is true.
    Relay { page_info: String, cursor: String },
    /// Page numbers from `start`; ends on an empty page.
    Page {
        param: String,
        #[serde(default = "one")]
        start: u64,
    },
}

fn one() -> u64 {
    1
}

impl TableSpec {
    /// Parse a spec from JSON (connector constants, or TOML converted to JSON).
    pub fn from_json(v: serde_json::Value) -> Result<TableSpec> {
        let spec: TableSpec = serde_json::from_value(v)
            .map_err(|e| JoineryError::config(format!("invalid table spec: {e}")))?;
        spec.validate()?;
        Ok(spec)
    }

    /// Structural checks, so mistakes surface at start-up rather than at query time.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(JoineryError::config(format!("table '{}': {m}", self.name)));
        if self.columns.is_empty() {
            return err("has no columns".into());
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.columns {
            if !seen.insert(c.name.as_str()) {
                return err(format!("column '{}' is declared twice", c.name));
            }
        }
        for f in &self.filters {
            let negation = f
                .ops
                .iter()
                .any(|o| matches!(o, FilterOp::Ne | FilterOp::NotIn));
            if negation && f.clause.is_none() {
                return err(format!(
                    "filter on '{}': `ne`/`not_in` can only be written into a query-language `clause`",
                    f.column
                ));
            }
        }
        for r in &self.sort {
            if !seen.contains(r.column.as_str()) {
                return err(format!("sort on unknown column '{}'", r.column));
            }
            match (&r.clause, r.param.is_empty()) {
                (Some(_), true) if self.query_language.is_some() => {}
                (Some(_), _) => {
                    return err(format!(
                        "sort on '{}': `clause` needs a query_language and no `param`",
                        r.column
                    ));
                }
                (None, true) => {
                    return err(format!("sort on '{}' names no `param`", r.column));
                }
                (None, false) => {}
            }
        }
        for r in &self.filters {
            if !seen.contains(r.column.as_str()) {
                return err(format!("filter on unknown column '{}'", r.column));
            }
            if r.operators().is_empty() {
                return err(format!("filter on '{}' names no operator", r.column));
            }
            let targets = [
                r.param.is_some(),
                r.path.is_some(),
                r.body.is_some(),
                r.clause.is_some(),
            ];
            if targets.iter().filter(|t| **t).count() != 1 {
                return err(format!(
                    "filter on '{}' needs exactly one of param, path, body or clause",
                    r.column
                ));
            }
            if r.clause.is_some() && self.query_language.is_none() {
                return err(format!(
                    "filter on '{}' is a clause, but the table has no query_language",
                    r.column
                ));
            }
            if r.body.is_some() && self.body.is_none() {
                return err(format!(
                    "filter on '{}' writes into a body, but the table has none",
                    r.column
                ));
            }
            if let Some(p) = &r.path
                && !self.path.contains(&format!("{{{p}}}"))
            {
                return err(format!(
                    "filter on '{}' targets {{{p}}}, which the path lacks",
                    r.column
                ));
            }
        }
        Ok(())
    }

    /// The Arrow schema, with descriptions.
    pub fn schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .columns
            .iter()
            .map(|c| {
                let mut f = Field::new(&c.name, c.data_type.data_type(), true);
                if c.data_type == ColumnType::Json {
                    f = meta::json_field(f);
                }
                if !c.description.is_empty() {
                    f = meta::described(f, &c.description);
                }
                f
            })
            .collect();
        let schema = Schema::new(fields);
        if self.description.is_empty() {
            std::sync::Arc::new(schema)
        } else {
            meta::with_table_description(schema, &self.description)
        }
    }

    /// `{placeholders}` in the path.
    pub fn placeholders(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.path.as_str();
        while let Some(i) = rest.find('{') {
            let Some(j) = rest[i..].find('}') else { break };
            out.push(rest[i + 1..i + j].to_string());
            rest = &rest[i + j + 1..];
        }
        out
    }
}
