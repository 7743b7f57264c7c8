//! `kind = "mysql"`: a MySQL or MariaDB database, with the same federation as `postgres`.
//!
//! ```toml
//! [connections.shop]
//! kind = "mysql"
//! url = "mysql://reporting@db.internal:3306/shop"
//! password = "${SHOP_DB_PASSWORD}"
//! schemas = ["shop"]          # default: the URL's database
//! tls = "verify-full"         # disable | require | verify-full (default: disable on loopback, else verify-full)
//! ```
//!
//! Column types: integers (unsigned bigint as decimal(20,0)), decimal(p,s), float, double,
//! bit, year, date, datetime, timestamp (UTC), time (as text: MySQL times exceed a day),
//! char/varchar/text/enum/set (text), json (text, marked JSON), binary/varbinary/blob (bytea).
//! Rows are read in the text protocol and converted with Arrow's casts, so a value that does not
//! fit its column type is an error, not a NULL.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BinaryBuilder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::sql::unparser::dialect::{Dialect, MySqlDialect};
use futures::StreamExt;
use futures::future::BoxFuture;
use joinery_engine::sqldb::{Federation, RemoteDatabase, Semantics};
use joinery_engine::{Connector, ErrorKind, JoineryError, Result, TableEntry};
use mysql_async::prelude::Queryable;
use mysql_async::{Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, SslOpts, Value};
use tokio::sync::mpsc;
use tracing::warn;

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};
use crate::sqldb::{CatalogColumn, DbOptions, TlsMode, catalog_tables, conform};

const BATCH_ROWS: usize = 8192;
/// MySQL's binary collation: columns in it carry bytes, not text.
const BINARY_CHARSET: u16 = 63;

pub struct MysqlFactory;

impl ConnectorFactory for MysqlFactory {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    fn description(&self) -> &'static str {
        "a MySQL or MariaDB database: tables and views, with joins and aggregates run inside it"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        crate::sqldb::DB_KEYS.to_vec()
    }

    fn build(&self, spec: &ConnectionSpec, ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let opts = DbOptions::from_spec(spec, None)?;
        let url_opts = Opts::from_url(&opts.url).map_err(|e| {
            JoineryError::config(format!(
                "connection '{}': 'url' is not a MySQL URL: {e}",
                spec.name
            ))
        })?;
        let schemas = if opts.schemas.is_empty() {
            match url_opts.db_name() {
                Some(db) => vec![db.to_string()],
                None => {
                    return Err(JoineryError::config(format!(
                        "connection '{}': name a database in the URL or list 'schemas'",
                        spec.name
                    )));
                }
            }
        } else {
            opts.schemas.clone()
        };
        let context = format!(
            "{}:{}/{}@{}",
            url_opts.ip_or_hostname(),
            url_opts.tcp_port(),
            url_opts.db_name().unwrap_or(""),
            url_opts.user().unwrap_or("")
        );
        let constraints = PoolConstraints::new(0, opts.pool_size).ok_or_else(|| {
            JoineryError::config(format!("connection '{}': bad pool_size", spec.name))
        })?;
        let mut builder = OptsBuilder::from_opts(url_opts)
            .pool_opts(PoolOpts::default().with_constraints(constraints))
            // Timestamps cross the wire in UTC; text in UTF-8.
            .init(vec!["SET time_zone = '+00:00'", "SET NAMES utf8mb4"]);
        if let Some(p) = &opts.password {
            builder = builder.pass(Some(p.clone()));
        }
        builder = match opts.tls {
            TlsMode::Disable => builder.ssl_opts(None::<SslOpts>),
            TlsMode::Require => builder.ssl_opts(
                SslOpts::default()
                    .with_danger_accept_invalid_certs(true)
                    .with_danger_skip_domain_validation(true),
            ),
            TlsMode::VerifyFull => {
                let mut ssl = SslOpts::default();
                if let Some(ca) = &opts.ca_file {
                    ssl = ssl.with_root_certs(vec![std::path::PathBuf::from(ca).into()]);
                }
                builder.ssl_opts(ssl)
            }
        };
        let pool = Pool::new(builder);
        let db = Arc::new(MyDatabase {
            name: spec.name.clone(),
            pool,
            context,
        });
        let federation = Federation::new(db.clone(), ctx.calls.clone());
        Ok(Arc::new(MysqlConnector {
            db,
            federation,
            schemas,
        }))
    }
}

pub struct MyDatabase {
    name: String,
    pool: Pool,
    context: String,
}

impl std::fmt::Debug for MyDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MyDatabase({} at {})", self.name, self.context)
    }
}

fn db_error(connection: &str, e: &mysql_async::Error) -> JoineryError {
    let (kind, message) = match e {
        mysql_async::Error::Server(s) => {
            let kind = match s.code {
                1044 | 1045 | 1698 => ErrorKind::Unauthenticated,
                1142 | 1143 => ErrorKind::PermissionDenied,
                1317 => ErrorKind::Canceled,
                1064 | 1054 | 1146 | 1305 => ErrorKind::InvalidInput,
                _ => ErrorKind::BadResponse,
            };
            (
                kind,
                format!("{} (error {}, SQLSTATE {})", s.message, s.code, s.state),
            )
        }
        mysql_async::Error::Io(_) | mysql_async::Error::Driver(_) => {
            (ErrorKind::Unavailable, e.to_string())
        }
        other => (ErrorKind::BadResponse, other.to_string()),
    };
    JoineryError::new(kind, format!("MySQL: {message}")).with_connection(connection)
}

/// Reads one statement's rows into batches on its own task; the channel's bound keeps memory
/// bounded (the database waits on TCP while we wait on the consumer). If the consumer goes
/// away first, the statement is killed and the connection discarded.
async fn run_query(
    pool: Pool,
    name: String,
    sql: String,
    schema: SchemaRef,
    tx: mpsc::Sender<Result<RecordBatch>>,
) {
    let mut conn = match pool.get_conn().await {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Err(db_error(&name, &e))).await;
            return;
        }
    };
    let conn_id = conn.id();
    let outcome: std::result::Result<bool, JoineryError> = async {
        let mut result = conn
            .query_iter(sql)
            .await
            .map_err(|e| db_error(&name, &e))?;
        let Some(mut rows) = result
            .stream::<mysql_async::Row>()
            .await
            .map_err(|e| db_error(&name, &e))?
        else {
            return Ok(true);
        };
        let mut buffer: Vec<mysql_async::Row> = Vec::with_capacity(BATCH_ROWS);
        loop {
            let next = rows.next().await;
            let end = match next {
                Some(Ok(row)) => {
                    buffer.push(row);
                    false
                }
                Some(Err(e)) => return Err(db_error(&name, &e)),
                None => true,
            };
            if buffer.len() == BATCH_ROWS || (end && !buffer.is_empty()) {
                let batch = to_batch(&name, std::mem::take(&mut buffer), &schema)?;
                if tx.send(Ok(batch)).await.is_err() {
                    return Ok(false);
                }
            }
            if end {
                return Ok(true);
            }
        }
    }
    .await;
    match outcome {
        Ok(true) => {}
        Ok(false) => {
            // The consumer stopped reading: kill the statement instead of draining its rows.
            if let Ok(mut killer) = pool.get_conn().await
                && let Err(e) = killer.query_drop(format!("KILL QUERY {conn_id}")).await
            {
                warn!(error = %e, "could not cancel a MySQL statement");
            }
            let _ = conn.disconnect().await;
        }
        Err(e) => {
            let _ = tx.send(Err(e)).await;
        }
    }
}

/// Rows (text protocol: every value is bytes or NULL) as a batch of `schema`.
fn to_batch(name: &str, rows: Vec<mysql_async::Row>, schema: &SchemaRef) -> Result<RecordBatch> {
    let n = rows.len();
    let Some(first) = rows.first() else {
        return Ok(RecordBatch::new_empty(schema.clone()));
    };
    let binary: Vec<bool> = first
        .columns_ref()
        .iter()
        .map(|c| c.character_set() == BINARY_CHARSET && !is_numeric_or_time(c.column_type()))
        .collect();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(binary.len());
    for (i, is_binary) in binary.iter().enumerate() {
        if *is_binary {
            let mut b = BinaryBuilder::with_capacity(n, n * 16);
            for row in &rows {
                match row.as_ref(i) {
                    Some(Value::Bytes(v)) => b.append_value(v),
                    Some(Value::NULL) | None => b.append_null(),
                    Some(other) => b.append_value(other.as_sql(true).as_bytes()),
                }
            }
            columns.push(Arc::new(b.finish()));
        } else {
            let mut b = StringBuilder::with_capacity(n, n * 16);
            for row in &rows {
                match row.as_ref(i) {
                    Some(Value::Bytes(v)) => match std::str::from_utf8(v) {
                        Ok(s) => b.append_value(s),
                        Err(_) => {
                            return Err(JoineryError::new(
                                ErrorKind::BadResponse,
                                format!("column {}: text is not valid UTF-8", i + 1),
                            )
                            .with_connection(name));
                        }
                    },
                    Some(Value::NULL) | None => b.append_null(),
                    Some(other) => b.append_value(other.as_sql(true).trim_matches('\'')),
                }
            }
            columns.push(Arc::new(b.finish()));
        }
    }
    conform(name, columns, schema, n)
}

fn is_numeric_or_time(t: mysql_async::consts::ColumnType) -> bool {
    use mysql_async::consts::ColumnType::*;
    matches!(
        t,
        MYSQL_TYPE_TINY
            | MYSQL_TYPE_SHORT
            | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG
            | MYSQL_TYPE_INT24
            | MYSQL_TYPE_FLOAT
            | MYSQL_TYPE_DOUBLE
            | MYSQL_TYPE_DECIMAL
            | MYSQL_TYPE_NEWDECIMAL
            | MYSQL_TYPE_DATE
            | MYSQL_TYPE_DATETIME
            | MYSQL_TYPE_TIMESTAMP
            | MYSQL_TYPE_TIME
            | MYSQL_TYPE_YEAR
            | MYSQL_TYPE_BIT
    )
}

impl RemoteDatabase for MyDatabase {
    fn connection(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &str {
        "mysql"
    }

    fn dialect(&self) -> Arc<dyn Dialect> {
        Arc::new(MySqlDialect {})
    }

    fn compute_context(&self) -> String {
        self.context.clone()
    }

    fn semantics(&self) -> Semantics {
        Semantics::mysql()
    }

    fn query(
        &self,
        sql: String,
        schema: SchemaRef,
    ) -> BoxFuture<'static, Result<SendableRecordBatchStream>> {
        let pool = self.pool.clone();
        let name = self.name.clone();
        Box::pin(async move {
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(run_query(pool, name, sql, schema.clone(), tx));
            let stream = tokio_stream_from(rx).map(|r| r.map_err(JoineryError::into_datafusion));
            Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream))
                as SendableRecordBatchStream)
        })
    }
}

fn tokio_stream_from<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// A MySQL column type (`information_schema.columns`) as an Arrow type.
fn arrow_type(
    data_type: &str,
    column_type: &str,
    precision: Option<u64>,
    scale: Option<u64>,
) -> Option<DataType> {
    let unsigned = column_type.contains("unsigned");
    Some(match data_type {
        "tinyint" | "smallint" | "mediumint" | "year" => DataType::Int32,
        "int" | "integer" if unsigned => DataType::Int64,
        "int" | "integer" => DataType::Int32,
        "bigint" if unsigned => DataType::Decimal128(20, 0),
        "bigint" => DataType::Int64,
        "decimal" | "numeric" => {
            let p = precision.unwrap_or(10).clamp(1, 38) as u8;
            let s = scale.unwrap_or(0).min(p as u64) as i8;
            DataType::Decimal128(p, s)
        }
        "float" => DataType::Float32,
        "double" | "real" => DataType::Float64,
        "date" => DataType::Date32,
        "datetime" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "enum" | "set"
        | "json" | "time" => DataType::Utf8,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            DataType::Binary
        }
        _ => return None,
    })
}

#[derive(Debug)]
pub struct MysqlConnector {
    db: Arc<MyDatabase>,
    federation: Federation,
    schemas: Vec<String>,
}

type ColumnRow = (
    String,
    String,
    String,
    String,
    String,
    Option<u64>,
    Option<u64>,
    String,
    String,
    String,
);

#[async_trait]
impl Connector for MysqlConnector {
    fn kind(&self) -> &str {
        "mysql"
    }

    async fn tables(&self) -> Result<Vec<TableEntry>> {
        let mut conn = self
            .db
            .pool
            .get_conn()
            .await
            .map_err(|e| db_error(&self.db.name, &e))?;
        let placeholders = vec!["?"; self.schemas.len()].join(", ");
        let sql = format!(
            "SELECT c.TABLE_SCHEMA, c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, \
                    c.NUMERIC_PRECISION, c.NUMERIC_SCALE, c.IS_NULLABLE, c.COLUMN_COMMENT, \
                    COALESCE(t.TABLE_COMMENT, '') \
             FROM information_schema.COLUMNS c \
             JOIN information_schema.TABLES t \
               ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
             WHERE c.TABLE_SCHEMA IN ({placeholders}) \
             ORDER BY c.TABLE_SCHEMA, c.TABLE_NAME, c.ORDINAL_POSITION"
        );
        let rows: Vec<ColumnRow> = conn
            .exec(sql, self.schemas.clone())
            .await
            .map_err(|e| db_error(&self.db.name, &e))?;
        let columns = rows
            .into_iter()
            .map(
                |(
                    schema,
                    table,
                    column,
                    data_type,
                    column_type,
                    precision,
                    scale,
                    nullable,
                    comment,
                    table_comment,
                )| {
                    let data_type = data_type.to_ascii_lowercase();
                    CatalogColumn {
                        schema,
                        table,
                        table_comment: Some(table_comment),
                        column,
                        data_type: arrow_type(&data_type, &column_type, precision, scale),
                        json: data_type == "json",
                        db_type: column_type,
                        nullable: nullable == "YES",
                        comment: Some(comment),
                    }
                },
            )
            .collect();
        Ok(catalog_tables(
            &self.db.name,
            &self.schemas,
            &self.federation,
            columns,
        ))
    }

    async fn check(&self) -> Result<String> {
        let mut conn = self
            .db
            .pool
            .get_conn()
            .await
            .map_err(|e| db_error(&self.db.name, &e))?;
        let version: Option<String> = conn
            .query_first("SELECT VERSION()")
            .await
            .map_err(|e| db_error(&self.db.name, &e))?;
        Ok(format!(
            "MySQL {} at {}",
            version.unwrap_or_default(),
            self.db.context
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types() {
        assert_eq!(
            arrow_type("bigint", "bigint(20) unsigned", Some(20), Some(0)),
            Some(DataType::Decimal128(20, 0))
        );
        assert_eq!(
            arrow_type("decimal", "decimal(12,2)", Some(12), Some(2)),
            Some(DataType::Decimal128(12, 2))
        );
        assert_eq!(arrow_type("geometry", "geometry", None, None), None);
    }
}
