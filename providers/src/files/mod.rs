//! `kind = "files"`: a directory of CSV, Parquet and JSON files as tables, on DataFusion's own
//! listing tables (so Parquet row groups are pruned by statistics, and `key=value` directories
//! are partitions whose filters skip whole directories).
//!
//! ```toml
//! [connections.warehouse]
//! kind = "files"
//! path = "./warehouse"        # relative to the config file's directory
//! csv_has_header = true       # default true
//! ```
//!
//! Every file `name.csv|parquet|json|ndjson` at the top of `path` is the table `name`; every
//! sub-directory `name/` is the table `name` over all its files (of the format of the first file
//! found), with Hive partitions (`name/region=eu/month=2026-01/part-0.parquet`) inferred as text
//! columns.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use joinery_engine::{Connector, ErrorKind, JoineryError, Result, TableEntry};

use crate::registry::{BuildContext, ConnectionSpec, ConnectorFactory};

pub struct FilesFactory;

impl ConnectorFactory for FilesFactory {
    fn kind(&self) -> &'static str {
        "files"
    }

    fn description(&self) -> &'static str {
        "a directory of CSV, Parquet and JSON files (sub-directories are partitioned tables)"
    }

    fn option_keys(&self) -> Vec<&'static str> {
        vec!["path", "csv_has_header"]
    }

    fn build(&self, spec: &ConnectionSpec, _ctx: &BuildContext) -> Result<Arc<dyn Connector>> {
        let path = spec.path_option("path")?.ok_or_else(|| {
            JoineryError::config(format!("connection '{}': 'path' is required", spec.name))
        })?;
        let has_header = match spec.options.get("csv_has_header") {
            None => true,
            Some(serde_json::Value::Bool(b)) => *b,
            Some(_) => {
                return Err(JoineryError::config(format!(
                    "connection '{}': csv_has_header must be true or false",
                    spec.name
                )));
            }
        };
        Ok(Arc::new(FilesConnector {
            name: spec.name.clone(),
            root: path,
            has_header,
        }))
    }
}

#[derive(Debug)]
pub struct FilesConnector {
    name: String,
    root: PathBuf,
    has_header: bool,
}

/// The format of a file, by its extension.
fn format_of(path: &Path) -> Option<&'static str> {
    match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
        "csv" => Some("csv"),
        "parquet" => Some("parquet"),
        "json" => Some("json"),
        "ndjson" => Some("ndjson"),
        _ => None,
    }
}

/// The first data file under `dir` (depth-first, sorted), for a directory table's format.
fn first_file(dir: &Path) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    for p in &entries {
        if p.is_file() && format_of(p).is_some() {
            return Some(p.clone());
        }
    }
    entries
        .iter()
        .filter(|p| p.is_dir())
        .find_map(|p| first_file(p))
}

impl FilesConnector {
    fn err(&self, message: String) -> JoineryError {
        JoineryError::new(ErrorKind::Config, message).with_connection(&self.name)
    }

    async fn table(
        &self,
        ctx: &SessionContext,
        path: &Path,
        format: &str,
        is_dir: bool,
    ) -> Result<Arc<ListingTable>> {
        let file_format: Arc<dyn FileFormat> = match format {
            "csv" => Arc::new(CsvFormat::default().with_has_header(self.has_header)),
            "parquet" => Arc::new(ParquetFormat::default()),
            _ => Arc::new(JsonFormat::default()),
        };
        let abs =
            std::path::absolute(path).map_err(|e| self.err(format!("{}: {e}", path.display())))?;
        let mut url = abs.display().to_string();
        if is_dir && !url.ends_with('/') {
            url.push('/');
        }
        let table_url = ListingTableUrl::parse(&url)
            .map_err(|e| self.err(format!("{}: {e}", path.display())))?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| format!(".{e}"));
        let mut options = ListingOptions::new(file_format);
        options = match (is_dir, ext) {
            (false, Some(ext)) => options.with_file_extension(ext),
            _ => options.with_file_extension(format!(".{format}")),
        };
        let state = ctx.state();
        if is_dir {
            let partitions = options
                .infer_partitions(&state, &table_url)
                .await
                .map_err(|e| self.err(format!("{}: {e}", path.display())))?;
            options = options.with_table_partition_cols(
                partitions
                    .into_iter()
                    .map(|p| (p, DataType::Utf8))
                    .collect(),
            );
        }
        let schema = options
            .infer_schema(&state, &table_url)
            .await
            .map_err(|e| self.err(format!("{}: cannot read its schema: {e}", path.display())))?;
        let config = ListingTableConfig::new(table_url)
            .with_listing_options(options)
            .with_schema(schema);
        let table = ListingTable::try_new(config)
            .map_err(|e| self.err(format!("{}: {e}", path.display())))?;
        Ok(Arc::new(table))
    }
}

#[async_trait]
impl Connector for FilesConnector {
    fn kind(&self) -> &str {
        "files"
    }

    async fn tables(&self) -> Result<Vec<TableEntry>> {
        let entries = std::fs::read_dir(&self.root)
            .map_err(|e| self.err(format!("cannot read {}: {e}", self.root.display())))?;
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        let ctx = SessionContext::new();
        let mut out: Vec<TableEntry> = Vec::new();
        for p in paths {
            let Some(stem) = p.file_stem().and_then(|s| s.to_str()).map(str::to_string) else {
                continue;
            };
            if stem.starts_with('.') || stem.starts_with('_') {
                continue;
            }
            let (format, is_dir) = if p.is_dir() {
                match first_file(&p).as_deref().and_then(format_of) {
                    Some(f) => (f, true),
                    None => continue,
                }
            } else {
                match format_of(&p) {
                    Some(f) => (f, false),
                    None => continue,
                }
            };
            let name = stem.to_ascii_lowercase();
            if out.iter().any(|t| t.name == name) {
                return Err(self.err(format!(
                    "two files or directories would both be the table '{name}' (in {})",
                    self.root.display()
                )));
            }
            let table = self.table(&ctx, &p, format, is_dir).await?;
            out.push(TableEntry {
                name,
                provider: table,
            });
        }
        Ok(out)
    }

    async fn check(&self) -> Result<String> {
        let n = self.tables().await?.len();
        Ok(format!("{n} tables in {}", self.root.display()))
    }
}
