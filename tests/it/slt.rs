//! Golden SQL in sqllogictest format (tests/slt/*.slt), run twice: in-process against the
//! engine, and over the wire through tokio-postgres. Both must give the same text.
//! `JOINERY_SLT_COMPLETE=1` rewrites the files' expected output from the in-process engine.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use joinery_server::handler::Shared;
use joinery_server::server::run_local;
use joinery_tests::TestServer;
use sqllogictest::{AsyncDB, DBOutput, DefaultColumnType};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for SltError {}

fn cell(v: Option<String>) -> String {
    match v {
        None => "NULL".into(),
        Some(s) if s.is_empty() => "(empty)".into(),
        Some(s) => s,
    }
}

struct InProcess(Arc<Shared>);

#[async_trait]
impl AsyncDB for InProcess {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let mut results = run_local(&self.0, "slt", sql)
            .await
            .map_err(|e| SltError(format!("{} ({})", e.message, e.state.0)))?;
        let Some(r) = results.pop() else {
            return Ok(DBOutput::StatementComplete(0));
        };
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; r.columns.len()],
            rows: r
                .rows
                .into_iter()
                .map(|row| row.into_iter().map(cell).collect())
                .collect(),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "joinery-in-process"
    }
}

struct Wire(tokio_postgres::Client);

#[async_trait]
impl AsyncDB for Wire {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let msgs = self
            .0
            .simple_query(sql)
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) => SltError(format!("{} ({})", db.message(), db.code().code())),
                None => SltError(e.to_string()),
            })?;
        let mut rows = Vec::new();
        let mut ncols = None;
        for m in msgs {
            match m {
                tokio_postgres::SimpleQueryMessage::RowDescription(d) => ncols = Some(d.len()),
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    ncols = Some(r.len());
                    rows.push(
                        (0..r.len())
                            .map(|i| cell(r.get(i).map(str::to_string)))
                            .collect(),
                    );
                }
                _ => {}
            }
        }
        Ok(match ncols {
            Some(n) => DBOutput::Rows {
                types: vec![DefaultColumnType::Any; n],
                rows,
            },
            None => DBOutput::StatementComplete(0),
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "joinery-wire"
    }
}

fn slt_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "slt"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[tokio::test]
async fn golden_sql_in_process() {
    let s = TestServer::demo().await;
    let files = slt_files();
    assert!(!files.is_empty(), "tests/slt has .slt files");
    let complete = std::env::var("JOINERY_SLT_COMPLETE").is_ok();
    for f in files {
        let shared = s.shared.clone();
        let mut runner = sqllogictest::Runner::new(move || {
            let shared = shared.clone();
            async move { Ok::<_, SltError>(InProcess(shared)) }
        });
        if complete {
            runner
                .update_test_file(
                    &f,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        } else {
            runner
                .run_file_async(&f)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
    }
}

#[tokio::test]
async fn golden_sql_over_the_wire() {
    let s = TestServer::demo().await;
    for f in slt_files() {
        let conn = s.conn_str("slt");
        let mut runner = sqllogictest::Runner::new(move || {
            let conn = conn.clone();
            async move {
                let (c, connection) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
                    .await
                    .map_err(|e| SltError(e.to_string()))?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok::<_, SltError>(Wire(c))
            }
        });
        runner
            .run_file_async(&f)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}
