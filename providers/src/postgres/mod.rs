//! `kind = "postgres"`: a PostgreSQL database (or anything speaking its protocol) whose tables
//! and views join with every other connection, and whose share of a query runs inside it.
//!
//! ```toml
//! [connections.warehouse_pg]
//! kind = "postgres"
//! url = "postgres://analyst@db.internal:5432/analytics"
//! password = "${WAREHOUSE_PG_PASSWORD}"   # kept out of the URL (and out of every log)
//! schemas = ["public", "finance"]          # default ["public"]; tables of later schemas are <schema>_<table>
//! pool_size = 8
//! tls = "verify-full"                      # disable | require | verify-full (default: disable on loopback, else verify-full)
//! ca_file = "/etc/joinery/db-ca.pem"       # extra roots for verify-full
//! ```
//!
//! Column types: bool, int2/4/8, float4/8, numeric(p,s) (unconstrained numeric as
//! decimal(38,10)), text/varchar/char/name/citext, enums (as text), uuid (text), json/jsonb (text,
//! marked JSON), bytea, date, time, timestamp, timestamptz, interval, inet/cidr/macaddr (text),
//! and one-dimensional arrays of those. Columns of other types are left out (with a warning).

mod types;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::unparser::dialect::{Dialect, PostgreSqlDialect};
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use joinery_engine::sqldb::{Federation, RemoteDatabase, Semantics};
use joinery_engine::{Connector, ErrorKind, JoineryError, Result, TableEntry};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;
use tokio_postgres::{CancelToken, NoTls, RowStream};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::warn;

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};
use crate::sqldb::{CatalogColumn, DbOptions, TlsMode, catalog_tables, conform, rustls_config};
use types::{ColumnBuilder, PgType};

/// Rows per Arrow batch read from the database.
const BATCH_ROWS: usize = 8192;

pub struct PostgresFactory;

impl ConnectorFactory for PostgresFactory {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn description(&self) -> &'static str {
        "a PostgreSQL database: tables and views, with joins and aggregates run inside it"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        crate::sqldb::DB_KEYS.to_vec()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let opts = DbOptions::from_spec(spec, Some("public"))?;
        let mut config: tokio_postgres::Config = opts.url.parse().map_err(|e| {
            JoineryError::config(format!(
                "connection '{}': 'url' is not a PostgreSQL URL: {e}",
                spec.name
            ))
        })?;
        if let Some(p) = &opts.password {
            config.password(p);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(opts.connect_timeout);
        }
        config.application_name("joinery");
        let tls = match opts.tls {
            TlsMode::Disable => {
                config.ssl_mode(tokio_postgres::config::SslMode::Disable);
                Tls::None
            }
            mode => {
                config.ssl_mode(tokio_postgres::config::SslMode::Require);
                Tls::Rustls(MakeRustlsConnect::new(rustls_config(
                    mode,
                    opts.ca_file.as_deref(),
                )?))
            }
        };
        let context = compute_context(&config);
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Tls::None => Manager::from_config(config.clone(), NoTls, manager_config),
            Tls::Rustls(t) => Manager::from_config(config.clone(), t.clone(), manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size)
            .build()
            .map_err(|e| JoineryError::config(format!("connection '{}': {e}", spec.name)))?;
        let db = Arc::new(PgDatabase {
            name: spec.name.clone(),
            pool,
            tls,
            context,
        });
        let federation = Federation::new(db.clone(), ctx.calls.clone());
        Ok(Arc::new(PostgresConnector {
            db,
            federation,
            schemas: opts.schemas,
        }))
    }
}

/// Where statements run, for deciding which sub-plans can share one statement (no password).
fn compute_context(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
        })
        .collect();
    let ports: Vec<String> = config.get_ports().iter().map(u16::to_string).collect();
    format!(
        "{}:{}/{}@{}",
        hosts.join(","),
        ports.join(","),
        config.get_dbname().unwrap_or(""),
        config.get_user().unwrap_or("")
    )
}

#[derive(Clone)]
enum Tls {
    None,
    Rustls(MakeRustlsConnect),
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tls::None => write!(f, "no TLS"),
            Tls::Rustls(_) => write!(f, "TLS"),
        }
    }
}

pub struct PgDatabase {
    name: String,
    pool: Pool,
    tls: Tls,
    context: String,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PgDatabase({} at {}, {:?})",
            self.name, self.context, self.tls
        )
    }
}

/// A database error as Joinery reports it: the connection named, the server's own message and
/// SQLSTATE class kept, never the connection string.
fn db_error(connection: &str, e: &tokio_postgres::Error) -> JoineryError {
    let (kind, message) = match e.as_db_error() {
        Some(db) => {
            let code = db.code().code();
            let kind = match &code[..2] {
                "28" => ErrorKind::Unauthenticated,
                "42" if code == "42501" => ErrorKind::PermissionDenied,
                "42" | "22" => ErrorKind::InvalidInput,
                "57" if code == "57014" => ErrorKind::Canceled,
                "53" => ErrorKind::ResourceExhausted,
                "08" | "57" => ErrorKind::Unavailable,
                _ => ErrorKind::BadResponse,
            };
            (kind, format!("{} (SQLSTATE {code})", db.message()))
        }
        None if e.is_closed() => (ErrorKind::Unavailable, "the connection closed".to_string()),
        None => (ErrorKind::Unavailable, e.to_string()),
    };
    JoineryError::new(kind, format!("PostgreSQL: {message}")).with_connection(connection)
}

fn pool_error(connection: &str, e: deadpool_postgres::PoolError) -> JoineryError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => db_error(connection, &e),
        other => JoineryError::new(
            ErrorKind::Unavailable,
            format!("PostgreSQL: cannot get a connection: {other}"),
        )
        .with_connection(connection),
    }
}

impl PgDatabase {
    async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| pool_error(&self.name, e))
    }
}

/// Stop the statement running on `client` and wait until the connection is idle, so it goes
/// back to the pool clean. PostgreSQL ignores a cancel request that lands between two protocol
/// messages, so the request is repeated until a `SELECT 1` queued behind the statement answers.
async fn cancel_until_idle(client: &Object, token: &CancelToken, tls: &Tls) {
    tracing::debug!("statement abandoned before its end: cancelling it");
    for _ in 0..20 {
        let sent = match tls {
            Tls::None => token.cancel_query(NoTls).await,
            Tls::Rustls(t) => token.cancel_query(t.clone()).await,
        };
        if let Err(e) = sent {
            warn!(error = %e, "could not cancel a PostgreSQL statement");
            return;
        }
        let idle = tokio::time::timeout(
            std::time::Duration::from_millis(250),
            client.simple_query("SELECT 1"),
        )
        .await;
        if idle.is_ok() {
            return;
        }
    }
    warn!("a PostgreSQL statement did not stop after 20 cancel requests");
}

struct Reading {
    rows: Pin<Box<RowStream>>,
    types: Vec<PgType>,
    schema: SchemaRef,
    connection: String,
    done: bool,
}

impl Reading {
    async fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        if self.done {
            return None;
        }
        let mut builders: Vec<ColumnBuilder> = self
            .types
            .iter()
            .map(|t| ColumnBuilder::new(t, BATCH_ROWS))
            .collect();
        let mut n = 0;
        while n < BATCH_ROWS {
            match self.rows.next().await {
                None => {
                    self.done = true;
                    break;
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Some(Err(db_error(&self.connection, &e)));
                }
                Some(Ok(row)) => {
                    for (i, b) in builders.iter_mut().enumerate() {
                        if let Err(e) = b.push(&row, i) {
                            self.done = true;
                            return Some(Err(JoineryError::new(
                                ErrorKind::BadResponse,
                                format!(
                                    "column \"{}\": {e}",
                                    self.schema
                                        .fields()
                                        .get(i)
                                        .map(|f| f.name().as_str())
                                        .unwrap_or("?")
                                ),
                            )
                            .with_connection(&self.connection)));
                        }
                    }
                    n += 1;
                }
            }
        }
        if n == 0 && self.done {
            return None;
        }
        let mut columns = Vec::with_capacity(builders.len());
        for (b, t) in builders.into_iter().zip(&self.types) {
            match b.finish(t) {
                Ok(a) => columns.push(a),
                Err(e) => {
                    return Some(Err(JoineryError::new(ErrorKind::BadResponse, e)
                        .with_connection(&self.connection)));
                }
            }
        }
        Some(conform(&self.connection, columns, &self.schema, n))
    }
}

impl RemoteDatabase for PgDatabase {
    fn connection(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        "postgres"
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(PostgreSqlDialect {})
    }

    fn compute_context(&self) -> String {
        self.context.clone()
    }

    fn semantics(&self) -> Semantics {
        Semantics::postgres()
    }

    fn query(
        &self,
        sql: String,
        schema: SchemaRef,
    ) -> BoxFuture<'static, Result<SendableRecordBatchStream>> {
        let pool = self.pool.clone();
        let tls = self.tls.clone();
        let name = self.name.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(run_statement(pool, tls, name, sql, schema.clone(), tx));
            let stream = futures::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b: Result<RecordBatch>| (b.map_err(JoineryError::into_datafusion), rx))
            });
            let stream: Pin<Box<dyn Stream<Item = _> + Send>> = Box::pin(stream);
            Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream))
                as SendableRecordBatchStream)
        })
    }
}

/// One statement, on its own task: batches go out through a bounded channel (so memory stays
/// bounded: PostgreSQL waits on TCP while we wait on the consumer). When the consumer goes away
/// (LIMIT satisfied, client cancel, an error elsewhere), the statement is cancelled.
async fn run_statement(
    pool: Pool,
    tls: Tls,
    name: String,
    sql: String,
    schema: SchemaRef,
    tx: mpsc::Sender<Result<RecordBatch>>,
) {
    let client = match pool.get().await {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(pool_error(&name, e))).await;
            return;
        }
    };
    let stmt = match client.prepare(&sql).await {
        Ok(s) => s,
        Err(e) => {
            let _ = tx.send(Err(db_error(&name, &e))).await;
            return;
        }
    };
    let mut types = Vec::with_capacity(stmt.columns().len());
    for c in stmt.columns() {
        match PgType::from_type(c.type_()) {
            Some(t) => types.push(t),
            None => {
                let e = JoineryError::new(
                    ErrorKind::Unsupported,
                    format!(
                        "column \"{}\" has type {}, which Joinery cannot read",
                        c.name(),
                        c.type_().name()
                    ),
                )
                .with_connection(&name);
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
    let token = client.cancel_token();
    let params: [&(dyn ToSql + Sync); 0] = [];
    let rows = tokio::select! {
        rows = client.query_raw(&stmt, params) => rows,
        _ = tx.closed() => {
            cancel_until_idle(&client, &token, &tls).await;
            return;
        }
    };
    let rows = match rows {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.send(Err(db_error(&name, &e))).await;
            return;
        }
    };
    let mut reading = Reading {
        rows: Box::pin(rows),
        types,
        schema,
        connection: name,
        done: false,
    };
    loop {
        let next = tokio::select! {
            b = reading.next_batch() => b,
            _ = tx.closed() => None,
        };
        let Some(batch) = next else {
            if !reading.done {
                drop(reading);
                cancel_until_idle(&client, &token, &tls).await;
            }
            return;
        };
        let failed = batch.is_err();
        if tx.send(batch).await.is_err() {
            if !reading.done {
                drop(reading);
                cancel_until_idle(&client, &token, &tls).await;
            }
            return;
        }
        if failed {
            return;
        }
    }
}

#[derive(Debug)]
pub struct PostgresConnector {
    db: Arc<PgDatabase>,
    federation: Federation,
    schemas: Vec<String>,
}

/// Every column of every table and view the user may read in the configured schemas.
const DISCOVER: &str = "
SELECT n.nspname::text, c.relname::text, a.attname::text,
       COALESCE(bt.typname, t.typname)::text AS typname,
       COALESCE(bt.typtype, t.typtype)::text AS typtype,
       et.typname::text AS elem, COALESCE(et.typtype, '')::text AS elem_typtype,
       CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END AS typmod,
       a.attnotnull,
       col_description(c.oid, a.attnum) AS col_comment,
       obj_description(c.oid, 'pg_class') AS table_comment
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_type bt ON t.typtype = 'd' AND bt.oid = t.typbasetype
LEFT JOIN pg_type et ON et.oid = COALESCE(bt.typelem, t.typelem) AND COALESCE(bt.typcategory, t.typcategory) = 'A'
WHERE c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND n.nspname = ANY($1)
  AND has_table_privilege(c.oid, 'SELECT')
ORDER BY n.nspname, c.relname, a.attnum";

#[async_trait]
impl Connector for PostgresConnector {
    fn kind(&self) -> &str {
        "postgres"
    }

    async fn tables(&self) -> Result<Vec<TableEntry>> {
        let client = self.db.client().await?;
        let rows = client
            .query(DISCOVER, &[&self.schemas])
            .await
            .map_err(|e| db_error(&self.db.name, &e))?;
        // (schema, table) -> (fields, table comment)
        let mut columns = Vec::with_capacity(rows.len());
        for row in rows {
            let get = |i: usize| -> Result<Option<String>> {
                row.try_get::<_, Option<String>>(i)
                    .map_err(|e| JoineryError::internal(format!("catalog query: {e}")))
            };
            let typname = get(3)?.unwrap_or_default();
            let typtype = get(4)?.unwrap_or_default();
            let elem = get(5)?;
            let elem_typtype = get(6)?.unwrap_or_default();
            let typmod: i32 = row.try_get(7).unwrap_or(-1);
            let ty = match &elem {
                Some(e) => {
                    PgType::from_name(e, &elem_typtype, typmod).map(|e| PgType::Array(Box::new(e)))
                }
                None => PgType::from_name(&typname, &typtype, typmod),
            };
            columns.push(CatalogColumn {
                schema: get(0)?.unwrap_or_default(),
                table: get(1)?.unwrap_or_default(),
                table_comment: get(10)?,
                column: get(2)?.unwrap_or_default(),
                db_type: typname,
                json: ty.as_ref().is_some_and(PgType::is_json),
                data_type: ty.as_ref().map(PgType::declared),
                nullable: !row.try_get::<_, bool>(8).unwrap_or(false),
                comment: get(9)?,
            });
        }
        Ok(catalog_tables(
            &self.db.name,
            &self.schemas,
            &self.federation,
            columns,
        ))
    }

    async fn check(&self) -> Result<String> {
        let client = self.db.client().await?;
        let row = client
            .query_one("SELECT current_setting('server_version')", &[])
            .await
            .map_err(|e| db_error(&self.db.name, &e))?;
        let version: String = row.try_get(0).unwrap_or_default();
        Ok(format!("PostgreSQL {version} at {}", self.db.context))
    }
}
