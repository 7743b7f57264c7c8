//! What the database connectors (`postgres`, `mysql`) share: their config keys, TLS, how
//! remote tables are named in Joinery, and the last step of every batch (columns cast to the
//! schema the plan expects).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::compute::{CastOptions, cast_with_options};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::FormatOptions;
use joinery_engine::{ErrorKind, JoineryError, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::registry::ConnectionSpec;

/// Keys every database connection accepts besides `kind`.
pub const DB_KEYS: &[&str] = &[
    "url",
    "password",
    "schemas",
    "pool_size",
    "tls",
    "ca_file",
    "connect_timeout_s",
];

/// How a database connection uses TLS (`tls = "..."`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP.
    Disable,
    /// Encrypted, the server's certificate not checked (libpq's `sslmode=require`).
    Require,
    /// Encrypted, certificate chain and host name checked (libpq's `verify-full`).
    VerifyFull,
}

/// The settings every database connector reads from its section.
#[derive(Debug, Clone)]
pub struct DbOptions {
    pub url: String,
    pub password: Option<String>,
    pub schemas: Vec<String>,
    pub pool_size: usize,
    pub tls: TlsMode,
    pub ca_file: Option<String>,
    pub connect_timeout: std::time::Duration,
}

impl DbOptions {
    pub fn from_spec(spec: &ConnectionSpec, default_schema: Option<&str>) -> Result<Self> {
        let url = spec
            .str_option("url")?
            .or(spec.base_url.as_deref())
            .ok_or_else(|| {
                JoineryError::config(format!(
                    "connection '{}': 'url' is required (for example \"{}://user@host/db\")",
                    spec.name, spec.kind
                ))
            })?
            .to_string();
        let schemas = match spec.options.get("schemas") {
            None => default_schema
                .map(|s| vec![s.to_string()])
                .unwrap_or_default(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| {
                    v.as_str().map(str::to_string).ok_or_else(|| {
                        JoineryError::config(format!(
                            "connection '{}': 'schemas' must be a list of names",
                            spec.name
                        ))
                    })
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(JoineryError::config(format!(
                    "connection '{}': 'schemas' must be a list of names",
                    spec.name
                )));
            }
        };
        let tls = match spec.str_option("tls")? {
            None => {
                if is_loopback_url(&spec.kind, &url) {
                    TlsMode::Disable
                } else {
                    TlsMode::VerifyFull
                }
            }
            Some("disable") => TlsMode::Disable,
            Some("require") => TlsMode::Require,
            Some("verify-full") => TlsMode::VerifyFull,
            Some(other) => {
                return Err(JoineryError::config(format!(
                    "connection '{}': tls = \"{other}\" is not one of disable, require, verify-full",
                    spec.name
                )));
            }
        };
        let pool_size = spec.u64_option("pool_size")?.unwrap_or(8).clamp(1, 256) as usize;
        let connect_timeout =
            std::time::Duration::from_secs(spec.u64_option("connect_timeout_s")?.unwrap_or(10));
        Ok(Self {
            url,
            password: spec.str_option("password")?.map(str::to_string),
            schemas,
            pool_size,
            tls,
            ca_file: spec
                .path_option("ca_file")?
                .map(|p| p.display().to_string()),
            connect_timeout,
        })
    }
}

/// Whether every host the URL names is this machine (then TLS defaults to off, as libpq's
/// `prefer` would find no certificate to check anyway). The hosts come from the driver's own
/// parser, so what is checked is what will be connected to: a PostgreSQL URL's hosts (several,
/// `?host=` and `?hostaddr=` included) and a MySQL URL's host or `?socket=`. Local means a
/// Unix socket, an IP literal in 127.0.0.0/8, `::1` or `::ffff:127.x.x.x`, or exactly
/// `localhost`: a name that merely starts like one (`localhost.example.com`, `127.example.com`)
/// is remote, and so is a URL the driver cannot parse.
fn is_loopback_url(kind: &str, url: &str) -> bool {
    if kind == "mysql" {
        let Ok(opts) = mysql_async::Opts::from_url(url) else {
            return false;
        };
        // A socket path is used instead of TCP whenever it is given.
        return opts.socket().is_some() || is_loopback_host(opts.ip_or_hostname());
    }
    let Ok(config) = url.parse::<tokio_postgres::Config>() else {
        return false;
    };
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    if hosts.is_empty() && addrs.is_empty() {
        return false;
    }
    hosts.iter().all(|h| match h {
        tokio_postgres::config::Host::Tcp(name) => is_loopback_host(name),
        tokio_postgres::config::Host::Unix(_) => true,
    }) && addrs.iter().all(is_loopback_ip)
}

/// `localhost` or a loopback IP literal (IPv6 with or without brackets).
fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| is_loopback_ip(&ip))
}

fn is_loopback_ip(ip: &std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(a) => a.is_loopback(),
        std::net::IpAddr::V6(a) => {
            a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback())
        }
    }
}

/// A rustls client config for `mode` (never called for `Disable`).
pub fn rustls_config(mode: TlsMode, ca_file: Option<&str>) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| JoineryError::internal(format!("TLS setup: {e}")))?;
    if mode == TlsMode::Require {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth());
    }
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| JoineryError::config(format!("cannot read ca_file '{path}': {e}")))?;
        for cert in certs {
            let cert = cert
                .map_err(|e| JoineryError::config(format!("bad certificate in '{path}': {e}")))?;
            roots
                .add(cert)
                .map_err(|e| JoineryError::config(format!("bad certificate in '{path}': {e}")))?;
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `tls = "require"`: encrypt, accept any certificate (signatures are still checked).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The name a remote table gets in Joinery: tables of the first configured schema keep their
/// name; tables of further schemas are `<schema>_<table>`.
pub fn local_table_name(schemas: &[String], schema: &str, table: &str) -> String {
    if schemas.first().map(String::as_str) == Some(schema) {
        table.to_string()
    } else {
        format!("{schema}_{table}")
    }
}

/// Columns as the database returned them, cast to the types the plan expects (a remote
/// `sum()` may come back as numeric where DataFusion planned int64). A value that does not fit
/// is an error, never a silent NULL.
pub fn conform(
    connection: &str,
    columns: Vec<ArrayRef>,
    schema: &SchemaRef,
    rows: usize,
) -> Result<RecordBatch> {
    if columns.len() != schema.fields().len() {
        return Err(JoineryError::new(
            ErrorKind::BadResponse,
            format!(
                "the database returned {} columns where {} were expected",
                columns.len(),
                schema.fields().len()
            ),
        )
        .with_connection(connection));
    }
    let options = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    let mut out = Vec::with_capacity(columns.len());
    for (col, field) in columns.into_iter().zip(schema.fields()) {
        if col.data_type() == field.data_type() {
            out.push(col);
            continue;
        }
        let cast = cast_with_options(&col, field.data_type(), &options).map_err(|e| {
            JoineryError::new(
                ErrorKind::BadResponse,
                format!(
                    "column \"{}\": cannot convert {} to {}: {e}",
                    field.name(),
                    col.data_type(),
                    field.data_type()
                ),
            )
            .with_connection(connection)
        })?;
        out.push(cast);
    }
    let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(rows));
    RecordBatch::try_new_with_options(schema.clone(), out, &options)
        .map_err(|e| JoineryError::internal(e.to_string()).with_connection(connection))
}

/// One column as a database's catalog describes it, already mapped to Arrow (`None`: a type
/// Joinery cannot read; the column is left out with a warning).
pub struct CatalogColumn {
    pub schema: String,
    pub table: String,
    pub table_comment: Option<String>,
    pub column: String,
    /// The database's own type name, for the warning.
    pub db_type: String,
    pub data_type: Option<datafusion::arrow::datatypes::DataType>,
    pub nullable: bool,
    pub json: bool,
    pub comment: Option<String>,
}

/// The tables of a database connection from its catalog rows (in table, then column order):
/// fields with descriptions and JSON markers, federated under their Joinery names.
pub fn catalog_tables(
    connection: &str,
    schemas: &[String],
    federation: &joinery_engine::sqldb::Federation,
    columns: Vec<CatalogColumn>,
) -> Vec<joinery_engine::TableEntry> {
    use datafusion::arrow::datatypes::{Field, Schema};
    use joinery_engine::meta;
    let mut tables: std::collections::BTreeMap<(String, String), (Vec<Field>, Option<String>)> =
        std::collections::BTreeMap::new();
    for c in columns {
        let entry = tables
            .entry((c.schema.clone(), c.table.clone()))
            .or_insert_with(|| {
                (
                    Vec::new(),
                    c.table_comment.clone().filter(|t| !t.is_empty()),
                )
            });
        let Some(dt) = c.data_type else {
            tracing::warn!(
                connection,
                table = %format!("{}.{}", c.schema, c.table),
                column = %c.column,
                r#type = %c.db_type,
                "column left out: type not supported"
            );
            continue;
        };
        let mut field = Field::new(&c.column, dt, c.nullable);
        if c.json {
            field = meta::json_field(field);
        }
        if let Some(d) = c.comment.as_deref().filter(|d| !d.is_empty()) {
            field = meta::described(field, d);
        }
        entry.0.push(field);
    }
    tables
        .into_iter()
        .filter(|(_, (fields, _))| !fields.is_empty())
        .map(|((schema, table), (fields, comment))| {
            let arrow = Schema::new(fields);
            let arrow = match comment.as_deref() {
                Some(c) => meta::with_table_description(arrow, c),
                None => Arc::new(arrow),
            };
            joinery_engine::TableEntry {
                name: local_table_name(schemas, &schema, &table),
                provider: federation.table(&schema, &table, arrow),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        let pg = |u: &str| is_loopback_url("postgres", u);
        let my = |u: &str| is_loopback_url("mysql", u);
        // Local: loopback literals, exactly `localhost`, Unix sockets.
        assert!(pg("postgres://u:p@127.0.0.1:5432/test"));
        assert!(pg("postgres://127.8.9.10/test"));
        assert!(pg("postgres://localhost/test"));
        assert!(pg("postgresql://LOCALHOST/test"));
        assert!(pg("postgres://[::1]:5432/test"));
        assert!(pg("postgres://[::ffff:127.0.0.1]/test"));
        assert!(pg("postgres://u@/test?host=/var/run/postgresql"));
        assert!(pg("host=/var/run/postgresql dbname=test"));
        assert!(pg("postgres://localhost,127.0.0.1:5433/test"));
        assert!(my("mysql://root@127.0.0.1:3306/test"));
        assert!(my("mysql://root@[::1]:3306/test"));
        assert!(my("mysql://root@LOCALHOST/test"));
        assert!(my("mysql://root@[::ffff:127.0.0.1]/test"));
        assert!(my(
            "mysql://root@db.example.com/test?socket=%2Frun%2Fmysqld%2Fmysqld.sock"
        ));
        // Remote: names that only start like loopback ones.
        assert!(!pg("postgres://u@db.example.com/test"));
        assert!(!pg("postgres://u@localhost.evil.com/test"));
        assert!(!pg("postgres://u@127.evil.com/test"));
        assert!(!pg("postgres://u@127.0.0.1.nip.io/test"));
        assert!(!pg("postgres://u@[::ffff:10.0.0.1]/test"));
        assert!(!my("mysql://root@localhost.evil.com/test"));
        assert!(!my("mysql://root@127.evil.com/test"));
        assert!(!my("mysql://root@127.0.0.1.nip.io/test"));
        // The password or user name may look like a host; the host is what counts.
        assert!(!pg("postgres://u:127.0.0.1@db.example.com/test"));
        assert!(!pg("postgres://u%40127.0.0.1@db.example.com/test"));
        assert!(!pg("postgres://u@127.0.0.1@db.example.com/test"));
        assert!(!my("mysql://u@127.0.0.1@db.example.com/test"));
        assert!(!pg("postgres://u:p%40127.0.0.1@db.example.com/test"));
        assert!(!my("mysql://u:p%40127.0.0.1@db.example.com/test"));
        // Query parameters add hosts, and every host must be local.
        assert!(!pg("postgres://127.0.0.1/test?host=db.example.com"));
        assert!(!pg("postgres:///test?host=db.example.com"));
        assert!(!pg("postgres://127.0.0.1,db.example.com/test"));
        assert!(!pg("host=127.0.0.1,db.example.com dbname=test"));
        assert!(!pg("postgres://localhost/test?hostaddr=10.1.2.3"));
        // No host at all, or a URL the driver cannot parse: not local.
        assert!(!pg("postgres:///test"));
        assert!(!pg("postgres://[::1/test"));
        assert!(!pg("not a url at all ="));
        assert!(!my("mysql://[::1/test"));
        assert!(!my("not a url"));
    }

    #[test]
    fn names() {
        let schemas = vec!["public".to_string(), "sales".to_string()];
        assert_eq!(local_table_name(&schemas, "public", "orders"), "orders");
        assert_eq!(
            local_table_name(&schemas, "sales", "orders"),
            "sales_orders"
        );
    }
}
