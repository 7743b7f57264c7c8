//! PostgreSQL catalog emulation for one session.
//!
//! `datafusion-pg-catalog` supplies `pg_catalog` (tables seeded from a real PostgreSQL and filled
//! from our live catalog) and most functions clients call. On top of it this module adds what it
//! leaves generic: the session's real user, pid and settings (`current_user`, `pg_backend_pid()`,
//! `current_setting()`, `set_config()`), our `version()`, and descriptions — the table and column
//! descriptions connectors declare appear in `pg_description`, `obj_description()` and
//! `col_description()`, so psql's `\d+`, pgjdbc's REMARKS and AI agents can read them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, RwLock, Weak};

use arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, StringArray, StringBuilder,
};
use arrow::datatypes::{DataType, Field, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, Session, TableProvider};
use datafusion::common::{ScalarValue, plan_err};
use datafusion::datasource::TableType;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::prelude::{Expr, SessionContext};
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{PgCatalogSchemaProvider, PgCatalogStaticTables};
use joinery_engine::catalog::SessionCatalog;
use joinery_engine::meta;

use crate::settings::{PG_VERSION, Settings};

/// `version()`'s answer: a PostgreSQL version clients can parse, then our own name.
pub fn version_string() -> String {
    format!(
        "PostgreSQL {PG_VERSION} (Joinery {}) on {}-unknown-linux-gnu, compiled by rustc, 64-bit",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// What the session-aware functions need to know.
#[derive(Clone)]
pub struct SessionInfo {
    pub user: String,
    pub pid: i32,
    pub database: String,
    pub settings: Arc<Mutex<Settings>>,
}

/// The `pg_catalog` tables seeded from a real PostgreSQL: decoded once per process and shared
/// by every session (they do not depend on the user).
fn static_tables() -> DfResult<Arc<PgCatalogStaticTables>> {
    static TABLES: OnceLock<Arc<PgCatalogStaticTables>> = OnceLock::new();
    if let Some(t) = TABLES.get() {
        return Ok(t.clone());
    }
    let t = Arc::new(PgCatalogStaticTables::try_new()?);
    Ok(TABLES.get_or_init(|| t).clone())
}

/// What every session shares: Postgres's stateless functions and type names, added once to
/// the session template (see [`joinery_engine::SessionFactory::customize`]).
pub fn prepare_template(state: SessionState) -> DfResult<SessionState> {
    use datafusion_pg_catalog::pg_catalog as pg;
    let tables = static_tables()?;
    let state = SessionStateBuilder::new_from_existing(state)
        .with_type_planner(Arc::new(pg::oid_type_planner::PgOidTypePlanner))
        .build();
    let ctx = SessionContext::new_with_state(state);
    for udf in [
        pg::has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
        pg::has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
        pg::has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
        pg::has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
        pg::create_pg_table_is_visible(),
        pg::format_type::create_format_type_udf(),
        pg::pg_get_expr_udf::create_pg_get_expr_udf(),
        pg::create_pg_get_partkeydef_udf(),
        pg::create_pg_relation_is_publishable_udf(),
        pg::create_pg_get_statisticsobjdef_columns_udf(),
        pg::create_pg_encoding_to_char_udf(),
        pg::create_pg_relation_size_udf(),
        pg::create_pg_total_relation_size_udf(),
        pg::create_pg_stat_get_numscans(),
        pg::create_pg_get_constraintdef(),
        pg::create_pg_get_partition_ancestors_udf(),
        pg::quote_ident_udf::create_quote_ident_udf(),
        pg::quote_ident_udf::create_parse_ident_udf(),
        pg::array_bounds_udf::create_array_upper_udf(),
        pg::array_bounds_udf::create_array_lower_udf(),
    ] {
        ctx.register_udf(udf);
    }
    ctx.register_udtf("pg_get_keywords", tables.pg_get_keywords.clone());
    pg::generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(&ctx);
    // Ours that do not depend on the session (they replace the crate's where names meet).
    for udf in shared_functions() {
        ctx.register_udf(udf);
    }
    Ok(ctx.state())
}

/// The session's catalog as `pg_catalog` reads it. It holds the session catalog weakly: the
/// session catalog holds `pg_catalog`, and a strong reference back would keep every closed
/// session alive.
#[derive(Debug, Clone)]
struct SessionCatalogInfo {
    database: String,
    catalog: Weak<SessionCatalog>,
}

impl SessionCatalogInfo {
    fn catalog(&self, name: &str) -> Option<Arc<SessionCatalog>> {
        (name == self.database)
            .then(|| self.catalog.upgrade())
            .flatten()
    }
}

#[async_trait]
impl CatalogInfo for SessionCatalogInfo {
    async fn catalog_names(&self) -> DfResult<Vec<String>> {
        Ok(vec![self.database.clone()])
    }

    async fn schema_names(&self, catalog_name: &str) -> DfResult<Option<Vec<String>>> {
        Ok(self.catalog(catalog_name).map(|c| c.schema_names()))
    }

    async fn table_names(
        &self,
        catalog_name: &str,
        schema_name: &str,
    ) -> DfResult<Option<Vec<String>>> {
        Ok(self
            .catalog(catalog_name)
            .and_then(|c| c.schema(schema_name))
            .map(|s| s.table_names()))
    }

    async fn table_schema(
        &self,
        catalog_name: &str,
        schema_name: &str,
        table_name: &str,
    ) -> DfResult<Option<SchemaRef>> {
        let Some(schema) = self
            .catalog(catalog_name)
            .and_then(|c| c.schema(schema_name))
        else {
            return Ok(None);
        };
        Ok(schema.table(table_name).await?.map(|t| t.schema()))
    }

    async fn table_type(
        &self,
        catalog_name: &str,
        schema_name: &str,
        table_name: &str,
    ) -> DfResult<Option<TableType>> {
        let Some(schema) = self
            .catalog(catalog_name)
            .and_then(|c| c.schema(schema_name))
        else {
            return Ok(None);
        };
        schema.table_type(table_name).await
    }
}

/// Table and column descriptions of every connection, by (schema, table): built once per
/// version of the catalog and shared by sessions (each session maps them to its own oids, and
/// sees only the oids of tables it was granted).
pub type Descriptions = HashMap<(String, String), TableDescriptions>;

/// Build [`Descriptions`] from the shared catalog.
pub async fn build_descriptions(catalog: &joinery_engine::Catalog) -> DfResult<Descriptions> {
    let mut by_name = HashMap::new();
    for schema_name in catalog.schema_names() {
        let Some(schema) = catalog.schema(&schema_name) else {
            continue;
        };
        for t in schema.table_names() {
            let Some(p) = schema.table(&t).await? else {
                continue;
            };
            let s = p.schema();
            let d = TableDescriptions {
                table: meta::table_description(&s).map(str::to_string),
                columns: s
                    .fields()
                    .iter()
                    .map(|f| meta::column_description(f).map(str::to_string))
                    .collect(),
            };
            if d.table.is_some() || d.columns.iter().any(Option::is_some) {
                by_name.insert((schema_name.clone(), t), d);
            }
        }
    }
    Ok(by_name)
}

/// Install the session's `pg_catalog` and the functions that answer for this session.
pub fn install(
    ctx: &SessionContext,
    view: &Arc<SessionCatalog>,
    info: SessionInfo,
    descriptions: Arc<Descriptions>,
) -> DfResult<()> {
    let catalog_info = SessionCatalogInfo {
        database: info.database.clone(),
        catalog: Arc::downgrade(view),
    };
    let pg_catalog = Arc::new(PgCatalogSchemaProvider::try_new(
        catalog_info,
        static_tables()?,
        EmptyContextProvider,
    )?);
    // Wrapped so descriptions and oids are visible to our functions.
    let index = Arc::new(DescriptionIndex::new(descriptions));
    view.register_schema(
        "pg_catalog",
        Arc::new(JoineryPgCatalog {
            inner: pg_catalog,
            index: index.clone(),
        }),
    )?;
    ctx.register_udf(
        datafusion_pg_catalog::pg_catalog::create_current_database_udf(&info.database),
    );
    for udf in session_functions(&info, view, index) {
        ctx.register_udf(udf);
    }
    Ok(())
}

type Body = dyn Fn(&[ColumnarValue], usize) -> DfResult<ColumnarValue> + Send + Sync;

/// A scalar function defined by a closure (session-bound functions capture their session).
struct FnUdf {
    name: &'static str,
    aliases: Vec<String>,
    signature: Signature,
    ret: DataType,
    body: Arc<Body>,
}

impl std::fmt::Debug for FnUdf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FnUdf({})", self.name)
    }
}

impl PartialEq for FnUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name && Arc::ptr_eq(&self.body, &other.body)
    }
}
impl Eq for FnUdf {}
impl std::hash::Hash for FnUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for FnUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn aliases(&self) -> &[String] {
        &self.aliases
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> DfResult<DataType> {
        Ok(self.ret.clone())
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        (self.body)(&args.args, args.number_rows)
    }
}

fn udf(
    name: &'static str,
    aliases: &[&str],
    signature: Signature,
    ret: DataType,
    body: impl Fn(&[ColumnarValue], usize) -> DfResult<ColumnarValue> + Send + Sync + 'static,
) -> ScalarUDF {
    ScalarUDF::new_from_impl(FnUdf {
        name,
        aliases: aliases.iter().map(|s| s.to_string()).collect(),
        signature,
        ret,
        body: Arc::new(body),
    })
}

fn utf8(v: Option<String>) -> ColumnarValue {
    ColumnarValue::Scalar(ScalarValue::Utf8(v))
}

/// Argument `i` as strings, one per row.
fn strings(args: &[ColumnarValue], i: usize, rows: usize) -> DfResult<Vec<Option<String>>> {
    let arr = args
        .get(i)
        .ok_or_else(|| DataFusionError::Plan("missing argument".into()))?
        .to_array(rows)?;
    let arr = arrow::compute::cast(&arr, &DataType::Utf8)?;
    let s = arr
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| DataFusionError::Internal("expected strings".into()))?;
    Ok((0..s.len())
        .map(|r| s.is_valid(r).then(|| s.value(r).to_string()))
        .collect())
}

fn ints(args: &[ColumnarValue], i: usize, rows: usize) -> DfResult<Vec<Option<i64>>> {
    let arr = args
        .get(i)
        .ok_or_else(|| DataFusionError::Plan("missing argument".into()))?
        .to_array(rows)?;
    let arr = arrow::compute::cast(&arr, &DataType::Int64)?;
    let a = arr
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| DataFusionError::Internal("expected integers".into()))?;
    Ok((0..a.len())
        .map(|r| a.is_valid(r).then(|| a.value(r)))
        .collect())
}

fn all_scalar(args: &[ColumnarValue]) -> bool {
    args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)))
}

fn string_result(args: &[ColumnarValue], vals: Vec<Option<String>>) -> ColumnarValue {
    if all_scalar(args) && vals.len() == 1 {
        return utf8(vals.into_iter().next().flatten());
    }
    ColumnarValue::Array(Arc::new(StringArray::from(vals)) as ArrayRef)
}

/// Functions that answer for one session (its user, pid, settings, schemas, descriptions).
fn session_functions(
    info: &SessionInfo,
    view: &Arc<SessionCatalog>,
    index: Arc<DescriptionIndex>,
) -> Vec<ScalarUDF> {
    let exact0 = || Signature::exact(vec![], Volatility::Stable);
    let user = info.user.clone();
    let user2 = info.user.clone();
    let pid = info.pid;
    let settings2 = info.settings.clone();
    let settings3 = info.settings.clone();
    let settings4 = info.settings.clone();
    let view1 = Arc::downgrade(view);
    let view2 = Arc::downgrade(view);
    let idx2 = index.clone();
    vec![
        udf(
            "session_user",
            &["current_user", "user", "current_role"],
            exact0(),
            DataType::Utf8,
            move |_, _| Ok(utf8(Some(user.clone()))),
        ),
        udf(
            "pg_get_userbyid",
            &[],
            Signature::any(1, Volatility::Stable),
            DataType::Utf8,
            move |args, rows| {
                let n = ints(args, 0, rows)?.len();
                Ok(string_result(args, vec![Some(user2.clone()); n]))
            },
        ),
        udf(
            "pg_backend_pid",
            &[],
            exact0(),
            DataType::Int32,
            move |_, _| Ok(ColumnarValue::Scalar(ScalarValue::Int32(Some(pid)))),
        ),
        udf(
            "current_schema",
            &[],
            exact0(),
            DataType::Utf8,
            move |_, _| {
                let view = view1
                    .upgrade()
                    .ok_or_else(|| DataFusionError::Internal("session closed".into()))?;
                Ok(utf8(view.current_schema()))
            },
        ),
        udf(
            "current_schemas",
            &[],
            Signature::any(1, Volatility::Stable),
            DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true))),
            move |args, rows| {
                let implicit = args
                    .first()
                    .map(|a| a.to_array(1))
                    .transpose()?
                    .and_then(|a| {
                        a.as_any()
                            .downcast_ref::<BooleanArray>()
                            .map(|b| !b.is_empty() && b.value(0))
                    })
                    .unwrap_or(false);
                let path = settings2
                    .lock()
                    .map_err(|_| DataFusionError::Internal("settings lock".into()))?
                    .search_path();
                let view = view2
                    .upgrade()
                    .ok_or_else(|| DataFusionError::Internal("session closed".into()))?;
                let visible = view.schema_names();
                let mut names = Vec::new();
                if implicit && !path.iter().any(|p| p == "pg_catalog") {
                    names.push("pg_catalog".to_string());
                }
                // Like PostgreSQL: only schemas that exist (and this user may use).
                names.extend(path.into_iter().filter(|p| visible.contains(p)));
                let values: Vec<Option<String>> = names.into_iter().map(Some).collect();
                let mut b = arrow::array::ListBuilder::new(StringBuilder::new());
                for _ in 0..rows.max(1) {
                    for v in &values {
                        b.values().append_option(v.as_deref());
                    }
                    b.append(true);
                }
                let arr: ArrayRef = Arc::new(b.finish());
                if all_scalar(args) {
                    Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&arr, 0)?))
                } else {
                    Ok(ColumnarValue::Array(arr))
                }
            },
        ),
        udf(
            "current_setting",
            &[],
            Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Stable,
            ),
            DataType::Utf8,
            move |args, rows| {
                let names = strings(args, 0, rows)?;
                let missing_ok = args.len() > 1
                    && args[1]
                        .to_array(1)
                        .ok()
                        .and_then(|a| {
                            a.as_any()
                                .downcast_ref::<BooleanArray>()
                                .map(|b| !b.is_empty() && b.value(0))
                        })
                        .unwrap_or(false);
                let s = settings3
                    .lock()
                    .map_err(|_| DataFusionError::Internal("settings lock".into()))?;
                let mut out = Vec::with_capacity(names.len());
                for n in names {
                    match n {
                        None => out.push(None),
                        Some(n) => match s.get(&n) {
                            Some(v) => out.push(Some(v.to_string())),
                            None if missing_ok => out.push(None),
                            None => {
                                return plan_err!("unrecognized configuration parameter \"{n}\"");
                            }
                        },
                    }
                }
                Ok(string_result(args, out))
            },
        ),
        udf(
            "set_config",
            &[],
            Signature::any(3, Volatility::Volatile),
            DataType::Utf8,
            move |args, rows| {
                let names = strings(args, 0, rows)?;
                let values = strings(args, 1, rows)?;
                let mut s = settings4
                    .lock()
                    .map_err(|_| DataFusionError::Internal("settings lock".into()))?;
                let mut out = Vec::with_capacity(names.len());
                for (n, v) in names.into_iter().zip(values) {
                    let (Some(n), Some(v)) = (n, v) else {
                        out.push(None);
                        continue;
                    };
                    s.set(&n, &v)
                        .map_err(|e| DataFusionError::Plan(e.message))?;
                    out.push(s.get(&n).map(str::to_string));
                }
                Ok(string_result(args, out))
            },
        ),
        udf(
            "obj_description",
            &[],
            Signature::one_of(
                vec![TypeSignature::Any(1), TypeSignature::Any(2)],
                Volatility::Stable,
            ),
            DataType::Utf8,
            move |args, rows| {
                let oids = ints(args, 0, rows)?;
                let kinds = if args.len() > 1 {
                    strings(args, 1, rows)?
                } else {
                    vec![Some("pg_class".to_string()); oids.len()]
                };
                let out = oids
                    .into_iter()
                    .zip(kinds)
                    .map(|(o, k)| match (o, k.as_deref()) {
                        (Some(o), Some("pg_class")) => index.table_description(o),
                        _ => None,
                    })
                    .collect();
                Ok(string_result(args, out))
            },
        ),
        udf(
            "col_description",
            &[],
            Signature::any(2, Volatility::Stable),
            DataType::Utf8,
            move |args, rows| {
                let oids = ints(args, 0, rows)?;
                let nums = ints(args, 1, rows)?;
                let out = oids
                    .into_iter()
                    .zip(nums)
                    .map(|(o, n)| match (o, n) {
                        (Some(o), Some(n)) => idx2.column_description(o, n),
                        _ => None,
                    })
                    .collect();
                Ok(string_result(args, out))
            },
        ),
    ]
}

/// Functions that are the same in every session.
fn shared_functions() -> Vec<ScalarUDF> {
    let exact0 = || Signature::exact(vec![], Volatility::Stable);
    let version = version_string();
    vec![
        udf("version", &[], exact0(), DataType::Utf8, move |_, _| {
            Ok(utf8(Some(version.clone())))
        }),
        udf(
            "pg_size_pretty",
            &[],
            Signature::any(1, Volatility::Immutable),
            DataType::Utf8,
            move |args, rows| {
                let vals = ints(args, 0, rows)?;
                Ok(string_result(
                    args,
                    vals.into_iter().map(|v| v.map(size_pretty)).collect(),
                ))
            },
        ),
        udf(
            "pg_table_size",
            &[
                "pg_total_relation_size",
                "pg_relation_size",
                "pg_indexes_size",
            ],
            Signature::any(1, Volatility::Stable),
            DataType::Int64,
            // Remote tables have no local size.
            move |args, rows| {
                let n = ints(args, 0, rows)?.len();
                if all_scalar(args) {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Int64(None)));
                }
                Ok(ColumnarValue::Array(Arc::new(Int64Array::from(vec![
                    None;
                    n
                ]))))
            },
        ),
        udf(
            "pg_function_is_visible",
            &[
                "pg_type_is_visible",
                "pg_opclass_is_visible",
                "pg_operator_is_visible",
                "pg_collation_is_visible",
                "pg_conversion_is_visible",
                "pg_ts_config_is_visible",
            ],
            Signature::any(1, Volatility::Stable),
            DataType::Boolean,
            move |args, rows| {
                let n = ints(args, 0, rows)?.len();
                if all_scalar(args) {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Boolean(Some(true))));
                }
                Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(vec![
                    true;
                    n
                ]))))
            },
        ),
        udf(
            "pg_get_function_result",
            &[
                "pg_get_serial_sequence",
                "pg_get_function_arguments",
                "pg_get_function_identity_arguments",
                "pg_get_functiondef",
                "pg_get_triggerdef",
                "pg_get_viewdef",
                "pg_get_indexdef",
                "pg_get_ruledef",
            ],
            Signature::variadic_any(Volatility::Stable),
            DataType::Utf8,
            // Joinery defines no SQL functions, views or indexes of its own to describe.
            move |args, rows| {
                let n = match args.first() {
                    Some(a) => a.to_array(rows)?.len(),
                    None => 1,
                };
                Ok(string_result(args, vec![None; n]))
            },
        ),
        udf(
            "to_regtype",
            &[],
            Signature::any(1, Volatility::Stable),
            DataType::Int32,
            move |args, rows| {
                let names = strings(args, 0, rows)?;
                let oids: Vec<Option<i32>> = names
                    .iter()
                    .map(|n| n.as_deref().and_then(type_oid))
                    .collect();
                if all_scalar(args) && oids.len() == 1 {
                    return Ok(ColumnarValue::Scalar(ScalarValue::Int32(oids[0])));
                }
                Ok(ColumnarValue::Array(Arc::new(Int32Array::from(oids))))
            },
        ),
        udf(
            "joinery_like_escape",
            &[],
            Signature::any(2, Volatility::Immutable),
            DataType::Utf8,
            move |args, rows| {
                let patterns = strings(args, 0, rows)?;
                let escapes = strings(args, 1, rows)?;
                let out = patterns
                    .into_iter()
                    .zip(escapes)
                    .map(|(p, e)| match (p, e) {
                        (Some(p), Some(e)) => {
                            Some(crate::rewrite::like_pattern_to_backslash(&p, &e))
                        }
                        _ => None,
                    })
                    .collect();
                Ok(string_result(args, out))
            },
        ),
        udf(
            "json_build_object",
            &["jsonb_build_object"],
            Signature::variadic_any(Volatility::Immutable),
            DataType::Utf8,
            move |args, rows| {
                if args.len() % 2 != 0 {
                    return plan_err!("json_build_object needs an even number of arguments");
                }
                let arrays = args
                    .iter()
                    .map(|a| a.to_array(rows))
                    .collect::<DfResult<Vec<_>>>()?;
                let n = if all_scalar(args) { 1 } else { rows };
                let mut out = Vec::with_capacity(n);
                for r in 0..n {
                    let mut obj = serde_json::Map::new();
                    for pair in arrays.chunks(2) {
                        let key = ScalarValue::try_from_array(&pair[0], r)?;
                        let value = ScalarValue::try_from_array(&pair[1], r)?;
                        let key = if key.is_null() {
                            String::new()
                        } else {
                            key.to_string()
                        };
                        obj.insert(key, scalar_json(&value));
                    }
                    out.push(Some(serde_json::Value::Object(obj).to_string()));
                }
                Ok(string_result(args, out))
            },
        ),
        udf(
            "shobj_description",
            &[],
            Signature::any(2, Volatility::Stable),
            DataType::Utf8,
            move |args, rows| {
                let n = ints(args, 0, rows)?.len();
                Ok(string_result(args, vec![None; n]))
            },
        ),
    ]
}

/// A scalar as a JSON value: numbers and booleans stay typed, everything else is text.
fn scalar_json(v: &ScalarValue) -> serde_json::Value {
    if v.is_null() {
        return serde_json::Value::Null;
    }
    match v {
        ScalarValue::Boolean(Some(b)) => serde_json::Value::Bool(*b),
        ScalarValue::Int8(_)
        | ScalarValue::Int16(_)
        | ScalarValue::Int32(_)
        | ScalarValue::Int64(_)
        | ScalarValue::UInt8(_)
        | ScalarValue::UInt16(_)
        | ScalarValue::UInt32(_)
        | ScalarValue::UInt64(_)
        | ScalarValue::Float32(_)
        | ScalarValue::Float64(_)
        | ScalarValue::Decimal128(..) => serde_json::from_str(&v.to_string())
            .unwrap_or_else(|_| serde_json::Value::String(v.to_string())),
        other => serde_json::Value::String(other.to_string()),
    }
}

/// The oid of a built-in type by any of its SQL names (what `to_regtype` needs).
fn type_oid(name: &str) -> Option<i32> {
    let n = name
        .trim()
        .trim_start_matches("pg_catalog.")
        .trim_matches('"')
        .to_ascii_lowercase();
    let (base, array) = match n.strip_suffix("[]") {
        Some(b) => (b.trim().to_string(), true),
        None => (n, false),
    };
    let (oid, array_oid) = match base.as_str() {
        "bool" | "boolean" => (16, 1000),
        "bytea" => (17, 1001),
        "char" => (18, 1002),
        "name" => (19, 1003),
        "int8" | "bigint" => (20, 1016),
        "int2" | "smallint" => (21, 1005),
        "int4" | "integer" | "int" => (23, 1007),
        "text" => (25, 1009),
        "oid" => (26, 1028),
        "json" => (114, 199),
        "float4" | "real" => (700, 1021),
        "float8" | "double precision" => (701, 1022),
        "bpchar" | "character" => (1042, 1014),
        "varchar" | "character varying" => (1043, 1015),
        "date" => (1082, 1182),
        "time" | "time without time zone" => (1083, 1183),
        "timestamp" | "timestamp without time zone" => (1114, 1115),
        "timestamptz" | "timestamp with time zone" => (1184, 1185),
        "interval" => (1186, 1187),
        "timetz" | "time with time zone" => (1266, 1270),
        "numeric" | "decimal" => (1700, 1231),
        "uuid" => (2950, 2951),
        "jsonb" => (3802, 3807),
        "regtype" => (2206, 2211),
        "regclass" => (2205, 2210),
        "record" => (2249, 2287),
        _ => return None,
    };
    Some(if array { array_oid } else { oid })
}

/// Postgres's pg_size_pretty: bytes, then kB/MB/GB/TB rounded once the value reaches 10240.
fn size_pretty(bytes: i64) -> String {
    let mut v = bytes;
    for unit in ["bytes", "kB", "MB", "GB", "TB"] {
        if v.abs() < 10 * 1024 || unit == "TB" {
            return format!("{v} {unit}");
        }
        v = (v + v.signum() * 512) / 1024;
    }
    format!("{v} PB")
}

#[derive(Debug, Default)]
pub struct TableDescriptions {
    table: Option<String>,
    columns: Vec<Option<String>>,
}

/// Descriptions of the session's tables by name, and the oids this session's `pg_catalog`
/// assigned to them (learned whenever `pg_class`/`pg_namespace` are scanned).
#[derive(Debug, Default)]
pub struct DescriptionIndex {
    by_name: Arc<Descriptions>,
    rel: RwLock<HashMap<i64, (i64, String)>>,
    nsp: RwLock<HashMap<i64, String>>,
}

impl DescriptionIndex {
    fn new(by_name: Arc<Descriptions>) -> Self {
        Self {
            by_name,
            ..Default::default()
        }
    }

    fn lookup(&self, oid: i64) -> Option<&TableDescriptions> {
        let (nsp_oid, rel) = self.rel.read().ok()?.get(&oid).cloned()?;
        let nsp = self.nsp.read().ok()?.get(&nsp_oid).cloned()?;
        self.by_name.get(&(nsp, rel))
    }

    fn table_description(&self, oid: i64) -> Option<String> {
        self.lookup(oid)?.table.clone()
    }

    fn column_description(&self, oid: i64, attnum: i64) -> Option<String> {
        let i = usize::try_from(attnum.checked_sub(1)?).ok()?;
        self.lookup(oid)?.columns.get(i).cloned().flatten()
    }

    fn record_classes(&self, batches: &[RecordBatch]) {
        let Ok(mut rel) = self.rel.write() else {
            return;
        };
        for b in batches {
            let (Some(oid), Some(ns), Some(name)) = (
                int_col(b, "oid"),
                int_col(b, "relnamespace"),
                b.column_by_name("relname")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            ) else {
                continue;
            };
            for i in 0..b.num_rows() {
                rel.insert(
                    i64::from(oid.value(i)),
                    (i64::from(ns.value(i)), name.value(i).to_string()),
                );
            }
        }
    }

    fn record_namespaces(&self, batches: &[RecordBatch]) {
        let Ok(mut nsp) = self.nsp.write() else {
            return;
        };
        for b in batches {
            let (Some(oid), Some(name)) = (
                int_col(b, "oid"),
                b.column_by_name("nspname")
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>()),
            ) else {
                continue;
            };
            for i in 0..b.num_rows() {
                nsp.insert(i64::from(oid.value(i)), name.value(i).to_string());
            }
        }
    }

    /// (objoid, objsubid, description) rows for pg_description.
    fn rows(&self) -> Vec<(i64, i32, String)> {
        let Ok(rel) = self.rel.read() else {
            return vec![];
        };
        let Ok(nsp) = self.nsp.read() else {
            return vec![];
        };
        let mut out = Vec::new();
        for (oid, (ns, name)) in rel.iter() {
            let Some(ns) = nsp.get(ns) else { continue };
            let Some(d) = self.by_name.get(&(ns.clone(), name.clone())) else {
                continue;
            };
            if let Some(t) = &d.table {
                out.push((*oid, 0, t.clone()));
            }
            for (i, c) in d.columns.iter().enumerate() {
                if let Some(c) = c {
                    out.push((*oid, i32::try_from(i + 1).unwrap_or(i32::MAX), c.clone()));
                }
            }
        }
        out.sort();
        out
    }
}

fn int_col<'a>(b: &'a RecordBatch, name: &str) -> Option<&'a Int32Array> {
    b.column_by_name(name)?
        .as_any()
        .downcast_ref::<Int32Array>()
}

/// `pg_catalog` with taps on `pg_class`/`pg_namespace` and a live `pg_description`.
#[derive(Debug)]
struct JoineryPgCatalog {
    inner: Arc<dyn SchemaProvider>,
    index: Arc<DescriptionIndex>,
}

#[async_trait]
impl SchemaProvider for JoineryPgCatalog {
    fn table_names(&self) -> Vec<String> {
        self.inner.table_names()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(inner) = self.inner.table(name).await? else {
            return Ok(None);
        };
        let tap = match name {
            "pg_class" => Tap::Classes,
            "pg_namespace" => Tap::Namespaces,
            "pg_description" => {
                let (Some(classes), Some(namespaces)) = (
                    self.inner.table("pg_class").await?,
                    self.inner.table("pg_namespace").await?,
                ) else {
                    return Ok(Some(inner));
                };
                return Ok(Some(Arc::new(DescriptionTable {
                    inner,
                    classes,
                    namespaces,
                    index: self.index.clone(),
                })));
            }
            _ => return Ok(Some(inner)),
        };
        Ok(Some(Arc::new(TapTable {
            inner,
            tap,
            index: self.index.clone(),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.inner.table_exist(name)
    }
}

#[derive(Debug, Clone, Copy)]
enum Tap {
    Classes,
    Namespaces,
}

#[derive(Debug)]
struct TapTable {
    inner: Arc<dyn TableProvider>,
    tap: Tap,
    index: Arc<DescriptionIndex>,
}

async fn scan_all(t: &Arc<dyn TableProvider>, state: &dyn Session) -> DfResult<Vec<RecordBatch>> {
    let plan = t.scan(state, None, &[], None).await?;
    collect(plan, state.task_ctx()).await
}

#[async_trait]
impl TableProvider for TapTable {
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
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        // These tables are small; reading them once more keeps oids in step with descriptions.
        let all = scan_all(&self.inner, state).await?;
        match self.tap {
            Tap::Classes => self.index.record_classes(&all),
            Tap::Namespaces => self.index.record_namespaces(&all),
        }
        self.inner.scan(state, projection, filters, limit).await
    }
}

#[derive(Debug)]
struct DescriptionTable {
    inner: Arc<dyn TableProvider>,
    classes: Arc<dyn TableProvider>,
    namespaces: Arc<dyn TableProvider>,
    index: Arc<DescriptionIndex>,
}

#[async_trait]
impl TableProvider for DescriptionTable {
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
        self.index
            .record_classes(&scan_all(&self.classes, state).await?);
        self.index
            .record_namespaces(&scan_all(&self.namespaces, state).await?);
        let mut batches = scan_all(&self.inner, state).await?;
        let schema = self.inner.schema();
        let rows = self.index.rows();
        if !rows.is_empty() {
            let mut cols: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
            for f in schema.fields() {
                let col: ArrayRef = match f.name().as_str() {
                    "objoid" => int_array(f.data_type(), rows.iter().map(|r| r.0))?,
                    "classoid" => int_array(f.data_type(), rows.iter().map(|_| 1259))?,
                    "objsubid" => int_array(f.data_type(), rows.iter().map(|r| i64::from(r.1)))?,
                    "description" => Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| r.2.as_str()),
                    )),
                    other => {
                        return plan_err!("unexpected pg_description column {other}");
                    }
                };
                cols.push(col);
            }
            batches.push(RecordBatch::try_new(schema.clone(), cols)?);
        }
        Ok(MemorySourceConfig::try_new_exec(
            &[batches],
            schema,
            projection.cloned(),
        )?)
    }
}

fn int_array(dt: &DataType, vals: impl Iterator<Item = i64>) -> DfResult<ArrayRef> {
    let a: ArrayRef = Arc::new(Int64Array::from_iter_values(vals));
    Ok(arrow::compute::cast(&a, dt)?)
}
