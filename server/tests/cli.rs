//! The `joinery` binary as a user runs it.

use std::process::Command;

fn joinery(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_joinery"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("joinery runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn query_prints_postgres_text() {
    let (ok, out, err) = joinery(&[
        "query",
        "SELECT count(*), 20.0::float8 AS f FROM demo.orders",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(" count | f "), "{out}");
    assert!(out.contains(" 500   | 20"), "{out}");
    assert!(out.contains("(1 row)"), "{out}");
    let (ok, out, err) = joinery(&[
        "query",
        "--format",
        "csv",
        "SELECT id, status FROM demo.orders ORDER BY id LIMIT 2",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().next(), Some("id,status"), "{out}");
    assert_eq!(out.lines().count(), 3, "{out}");
}

#[test]
fn demo_world_has_a_file_warehouse() {
    // The demo's warehouse joins the demo connection; a month filter reads one partition.
    let (ok, out, err) = joinery(&[
        "query",
        "--format",
        "csv",
        "SELECT count(*) AS n, count(DISTINCT r.account_id) AS accounts \
         FROM warehouse.revenue r JOIN warehouse.accounts a ON a.id = r.account_id \
         WHERE r.month = '2025-12'",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().nth(1), Some("50,50"), "{out}");
    let (ok, out, err) = joinery(&[
        "query",
        "EXPLAIN SELECT sum(mrr) FROM warehouse.revenue WHERE month = '2025-12'",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("month=2025-12"), "{out}");
    assert!(!out.contains("month=2025-11"), "{out}");
}

#[test]
fn errors_exit_non_zero_with_a_sqlstate() {
    let (ok, _, err) = joinery(&["query", "SELECT * FROM demo.nope"]);
    assert!(!ok);
    assert!(err.contains("42P01"), "{err}");
}

#[test]
fn check_reports_config_errors_with_lines() {
    let dir = std::env::temp_dir().join(format!("joinery-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[connections.d]\nkind = \"demo\"\nsede = 1\n").expect("write");
    let (ok, _, err) = joinery(&["check", "--config", bad.to_str().unwrap_or_default()]);
    assert!(!ok);
    assert!(
        err.contains("unknown key 'sede'") && err.contains("line 3"),
        "{err}"
    );
    let good = dir.join("good.toml");
    std::fs::write(&good, "[connections.d]\nkind = \"demo\"\n").expect("write");
    let (ok, out, err) = joinery(&["check", "--config", good.to_str().unwrap_or_default()]);
    assert!(ok, "{err}");
    assert!(out.contains("ok    d (demo)"), "{out}");
    let (ok, out, _) = joinery(&["kinds"]);
    assert!(ok && out.contains("demo") && out.contains("rest"), "{out}");
}
