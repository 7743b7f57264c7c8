//! Real clients: psql (Debian's postgresql-client) and Python (psycopg 3, SQLAlchemy), installed
//! by scripts/setup-clients.sh. Under CI a missing client is a failure, elsewhere a loud skip.

use std::path::PathBuf;

use joinery_tests::{TestServer, skip};
use tokio::process::Command;

fn psql() -> Option<PathBuf> {
    let p = std::env::var("JOINERY_TEST_PSQL").unwrap_or_else(|_| "psql".into());
    std::process::Command::new(&p)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| PathBuf::from(p))
}

async fn run_psql(psql: &PathBuf, port: u16, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(psql)
        .args([
            "-X",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "demo",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(args)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .await
        .expect("psql runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn psql_lists_describes_and_joins() {
    let Some(psql) = psql() else {
        return skip(
            "psql tests",
            "psql not found (scripts/setup-clients.sh installs it)",
        );
    };
    let s = TestServer::demo().await;
    let (ok, out, err) = run_psql(&psql, s.port(), &["-c", "\\dt *.*"]).await;
    assert!(ok, "\\dt failed: {err}");
    for t in ["customers", "orders", "types"] {
        assert!(
            out.lines().any(|l| l.contains(" demo ") && l.contains(t)),
            "{t} in:\n{out}"
        );
    }
    let (ok, out, err) = run_psql(&psql, s.port(), &["-c", "\\dt demo.*"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("(3 rows)"), "{out}");
    let (ok, out, err) = run_psql(&psql, s.port(), &["-c", "\\d demo.customers"]).await;
    assert!(ok, "\\d failed: {err}");
    assert!(out.contains("Table \"demo.customers\""), "{out}");
    assert!(
        out.contains("created_at | timestamp with time zone"),
        "{out}"
    );
    assert!(out.contains("arr        | numeric"), "{out}");
    let (ok, out, err) = run_psql(&psql, s.port(), &["-c", "\\dn"]).await;
    assert!(ok, "\\dn failed: {err}");
    assert!(out.contains("demo") && out.contains("joinery"), "{out}");
    let (ok, _, err) = run_psql(&psql, s.port(), &["-c", "\\l"]).await;
    assert!(ok, "\\l failed: {err}");
    let (ok, _, err) = run_psql(&psql, s.port(), &["-c", "\\df"]).await;
    assert!(ok, "\\df failed: {err}");
    let (ok, out, err) = run_psql(&psql, s.port(), &["-c", "\\dt+ demo.*"]).await;
    assert!(ok, "\\dt+ failed: {err}");
    assert!(
        out.contains("Demo orders (generated)"),
        "descriptions in \\dt+:\n{out}"
    );
    let (ok, out, err) = run_psql(
        &psql,
        s.port(),
        &[
            "-A",
            "-t",
            "-c",
            "SELECT c.region, count(*) FROM demo.orders o JOIN demo.customers c ON c.id = o.customer_id GROUP BY 1 ORDER BY 1",
        ],
    )
    .await;
    assert!(ok, "join failed: {err}");
    assert_eq!(out.lines().count(), 4, "{out}");
    // An error, then the next command in the same session works.
    let (ok, out, err) = run_psql(
        &psql,
        s.port(),
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "SELECT * FROM nope",
            "-c",
            "SELECT 41 + 1",
        ],
    )
    .await;
    assert!(ok || out.contains("42"), "{out} {err}");
    assert!(err.contains("nope"), "{err}");
    assert!(out.contains("42"), "{out}");
}

#[tokio::test]
async fn python_psycopg_and_sqlalchemy() {
    let Ok(python) = std::env::var("JOINERY_TEST_PYTHON") else {
        return skip(
            "python client tests",
            "JOINERY_TEST_PYTHON is not set (scripts/test.sh sets up the venv)",
        );
    };
    let s = TestServer::demo().await;
    // A second server with a SCRAM user, for psycopg's password login.
    let scram = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.demo]\nkind = \"demo\"\n\n[users.pyuser]\npassword = \"{}\"\n",
        joinery_server::auth::make_verifier("py-secret-1")
    ))
    .await;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/clients_test.py");
    let out = Command::new(&python)
        .arg(&script)
        .args(["--host", "127.0.0.1", "--port", &s.port().to_string()])
        .args(["--scram-port", &scram.port().to_string()])
        .args(["--scram-user", "pyuser", "--scram-password", "py-secret-1"])
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python client tests failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("all python client checks passed") && stdout.contains("psycopg scram ok"),
        "{stdout}"
    );
}

#[tokio::test]
async fn pgjdbc_metadata_and_prepared_statements() {
    let jar = std::env::var("JOINERY_TEST_JDBC_JAR")
        .unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    let java_ok = std::process::Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !java_ok || !std::path::Path::new(&jar).exists() {
        return skip(
            "pgjdbc tests",
            "java or the pgjdbc jar is missing (scripts/setup-clients.sh installs them)",
        );
    }
    let s = TestServer::demo().await;
    let src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("java/JdbcClientTest.java");
    let out = Command::new("java")
        .args(["-cp", &jar])
        .arg(&src)
        .arg(s.port().to_string())
        .output()
        .await
        .expect("java runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgjdbc checks failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("all jdbc checks passed"), "{stdout}");
}
