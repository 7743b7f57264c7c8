//! Test support: a Joinery server on an ephemeral port, clients for it, and the addresses of
//! the local services (PostgreSQL, MariaDB, Redis) tests may use.

pub mod workload;

use std::net::SocketAddr;
use std::sync::Arc;

use joinery_server::config::Config;
use joinery_server::handler::Shared;
use joinery_server::server::{RunningServer, build};

/// A demo-world config; tests add connections as they need.
pub const DEMO_CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
statement_timeout = "60s"

[connections.demo]
kind = "demo"
"#;

pub struct TestServer {
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    server: Option<RunningServer>,
}

impl TestServer {
    pub async fn demo() -> TestServer {
        Self::with_config(DEMO_CONFIG).await
    }

    pub async fn with_config(toml: &str) -> TestServer {
        let config = Config::parse(toml, "test.toml").expect("test config parses");
        let shared = build(&config).await.expect("catalog builds");
        let listen: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let server = RunningServer::start(shared.clone(), listen)
            .await
            .expect("server starts");
        TestServer {
            addr: server.addr,
            shared,
            server: Some(server),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A libpq-style connection string.
    pub fn conn_str(&self, user: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} dbname=joinery",
            self.addr.port()
        )
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        self.client_as("tester").await
    }

    pub async fn client_as(&self, user: &str) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(user), tokio_postgres::NoTls)
            .await
            .expect("connects");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// Log in as `user` with `password` (SCRAM when the server declares users).
    pub async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} user={user} password={password} dbname=joinery",
                self.port()
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// This process's resident memory, in KiB (0 where /proc is missing).
pub fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// An encrypted secret store in a temporary directory: a fresh 0600 key file and the
/// `entries` stored. Paths go into a config's `[secrets]` section.
pub struct TempSecrets {
    pub dir: tempfile::TempDir,
    pub key_path: std::path::PathBuf,
    pub store_path: std::path::PathBuf,
    pub key: [u8; 32],
}

impl TempSecrets {
    pub fn new(entries: &[(&str, &str)]) -> TempSecrets {
        use joinery_server::secrets::{SecretStore, load_key, write_key_file};
        let dir = tempfile::tempdir().expect("tmp");
        let key_path = dir.path().join("k");
        write_key_file(&key_path).expect("key file");
        let key = load_key(Some(&key_path)).expect("key");
        let store_path = dir.path().join("secrets.json");
        let mut store = SecretStore::open(&store_path, key).expect("store");
        for (name, value) in entries {
            store.set(name, value, "setup", None).expect("set");
        }
        TempSecrets {
            dir,
            key_path,
            store_path,
            key,
        }
    }

    /// The store as it is on disk now.
    pub fn open(&self) -> joinery_server::secrets::SecretStore {
        joinery_server::secrets::SecretStore::open(&self.store_path, self.key).expect("store")
    }
}

/// Simple-query rows as text (NULL as `None`), the way psql sees them.
pub async fn text_rows(client: &tokio_postgres::Client, sql: &str) -> Vec<Vec<Option<String>>> {
    let msgs = client.simple_query(sql).await.unwrap_or_else(|e| {
        let detail = e
            .as_db_error()
            .map(|d| format!("{} ({})", d.message(), d.code().code()))
            .unwrap_or_else(|| e.to_string());
        panic!("{sql}: {detail}")
    });
    msgs.into_iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
            }
            _ => None,
        })
        .collect()
}

/// A PostgreSQL schema of its own for one test, dropped at the end.
pub struct PgScratch {
    pub client: tokio_postgres::Client,
    pub schema: String,
}

impl PgScratch {
    pub async fn new(tag: &str) -> Option<PgScratch> {
        let url = pg_url();
        let (client, conn) = match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => {
                skip("PostgreSQL warehouse tests", &format!("{url}: {e}"));
                return None;
            }
        };
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let schema = format!("jit_{tag}_{}", std::process::id());
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};"
            ))
            .await
            .expect("scratch schema");
        Some(PgScratch { client, schema })
    }

    pub async fn exec(&self, sql: &str) {
        let sql = sql.replace("$S", &self.schema);
        self.client
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    pub fn connection(&self, name: &str) -> String {
        format!(
            "[connections.{name}]\nkind = \"postgres\"\nurl = \"{}\"\nschemas = [\"{}\"]\npool_size = 4\n",
            pg_url(),
            self.schema
        )
    }

    pub async fn drop(self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema))
            .await;
    }
}

/// A self-signed certificate for localhost/127.0.0.1 made with openssl.
pub fn self_signed(dir: &std::path::Path) -> Option<(std::path::PathBuf, std::path::PathBuf)> {
    let cert = dir.join("server.crt");
    let key = dir.join("server.key");
    let ok = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .ok()?
        .status
        .success();
    ok.then_some((cert, key))
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no sqlstate: {e}"))
}

/// Whether tests that need an external tool must fail (CI) or may skip (a laptop without it).
pub fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Report a skipped check loudly; under CI a skip is a failure.
pub fn skip(what: &str, why: &str) {
    assert!(!required(), "{what} cannot run under CI: {why}");
    eprintln!("SKIPPED {what}: {why}");
}

pub fn pg_url() -> String {
    std::env::var("JOINERY_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub fn mysql_url() -> String {
    std::env::var("JOINERY_TEST_MYSQL")
        .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306/test".into())
}

/// (user, host, port, database) of a `mysql://user[:password]@host[:port]/db` URL, for the
/// `mariadb` command-line client that test setup uses.
pub fn mysql_parts(url: &str) -> (String, String, String, String) {
    let rest = url.trim_start_matches("mysql://");
    let (auth, rest) = rest.split_once('@').unwrap_or(("root", rest));
    let user = auth.split(':').next().unwrap_or("root").to_string();
    let (hostport, db) = rest.split_once('/').unwrap_or((rest, "test"));
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "3306"));
    (user, host.to_string(), port.to_string(), db.to_string())
}

/// `select WHERE pushed` and `select WHERE local` give the same rows, and some rows: a filter
/// pushed into an API answers exactly what DataFusion's own filter over the full scan does
/// (`local` hides the column from the planner, e.g. `(status || '') = 'open'`).
pub async fn assert_same_rows(
    client: &tokio_postgres::Client,
    select: &str,
    pushed: &str,
    local: &str,
) -> Vec<Vec<Option<String>>> {
    let a = text_rows(client, &format!("{select} WHERE {pushed} ORDER BY 1, 2")).await;
    let b = text_rows(client, &format!("{select} WHERE {local} ORDER BY 1, 2")).await;
    assert_eq!(a, b, "{pushed}  vs  {local}");
    assert!(
        !a.is_empty(),
        "{pushed} matched nothing; the comparison would prove nothing"
    );
    a
}

/// The API refused Joinery's credentials: SQLSTATE HV00N, the connection named, the secret not.
pub async fn assert_upstream_auth_error(
    client: &tokio_postgres::Client,
    sql: &str,
    connection: &str,
    secret: &str,
) -> String {
    let err = client
        .simple_query(sql)
        .await
        .expect_err("credentials refused");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert_eq!(sqlstate(&err), "HV00N", "{msg}");
    assert!(msg.contains(connection), "{msg}");
    assert!(!msg.contains(secret), "the secret leaked: {msg}");
    assert_eq!(
        text_rows(client, "SELECT 1").await.len(),
        1,
        "the session goes on"
    );
    msg
}

/// Filter values that try to break out of a parameter, a query-language literal or a URL.
pub const HOSTILE_VALUES: &[&str] = &[
    "O'Brien & Sons",
    "x' OR '1'='1",
    "a\" OR key != \"b",
    "PAY ORDER BY key #",
    "50%_off",
    "Ünïcødé ✓",
    "a&b=c#d?e/../f",
    "back\\slash",
    "{limit}{where}",
];

/// For each hostile value (and `present`, which must match rows): `pushed` and `local` (SQL
/// with `{v}` standing for the quoted literal) give the same rows, and no statement fails.
pub async fn assert_hostile_values_safe(
    client: &tokio_postgres::Client,
    select: &str,
    pushed: &str,
    local: &str,
    present: &str,
) {
    for v in HOSTILE_VALUES.iter().copied().chain([present]) {
        let lit = format!("'{}'", v.replace('\'', "''"));
        let a = text_rows(
            client,
            &format!("{select} WHERE {} ORDER BY 1", pushed.replace("{v}", &lit)),
        )
        .await;
        let b = text_rows(
            client,
            &format!("{select} WHERE {} ORDER BY 1", local.replace("{v}", &lit)),
        )
        .await;
        assert_eq!(a, b, "value {v:?}");
        if v == present {
            assert!(!a.is_empty(), "{present:?} matched nothing");
        }
    }
}

/// A filter pushed to a fake API: `SELECT ... WHERE pushed ORDER BY 1` sent requests (at least
/// one, every one containing `sent`) and returned the same non-empty rows as the `local` form.
pub async fn assert_pushed_to_fake(
    client: &tokio_postgres::Client,
    fake: &joinery_engine::rest::fakekit::FakeServer,
    select: &str,
    pushed: &str,
    local: &str,
    sent: &str,
) -> Vec<Vec<Option<String>>> {
    fake.clear_requests();
    let a = text_rows(client, &format!("{select} WHERE {pushed} ORDER BY 1")).await;
    let reqs = fake.requests();
    assert!(
        !reqs.is_empty() && reqs.iter().all(|r| r.contains(sent)),
        "{pushed}: expected every request to carry {sent:?}: {reqs:#?}"
    );
    let b = text_rows(client, &format!("{select} WHERE {local} ORDER BY 1")).await;
    assert_eq!(a, b, "{pushed}  vs  {local}");
    assert!(!a.is_empty(), "{pushed} matched nothing");
    a
}
