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

fn joinery_stdin(args: &[&str], stdin: &str) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_joinery"))
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("JOINERY_SECRET_KEY")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("joinery runs");
    if let Some(mut i) = child.stdin.take() {
        i.write_all(stdin.as_bytes()).expect("stdin");
    }
    let out = child.wait_with_output().expect("joinery ends");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn secrets_are_stored_encrypted_and_resolved_in_config() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("joinery.key");
    let key_s = key.display().to_string();
    let (ok, _, err) = joinery_stdin(&["secrets", "keygen", "--out", &key_s], "");
    assert!(ok, "{err}");
    // The CSV file path is the "secret" here: resolving it proves ${secret:...} reached the
    // connection; its value must appear nowhere else.
    let data = dir.path().join("private-data-dir");
    std::fs::create_dir(&data).expect("dir");
    std::fs::write(data.join("t.csv"), "id,name\n1,a\n2,b\n").expect("csv");
    let cfg = dir.path().join("joinery.toml");
    std::fs::write(
        &cfg,
        "[secrets]\npath = \"secrets.json\"\nkey_file = \"joinery.key\"\n\n[connections.files]\nkind = \"files\"\npath = \"${secret:csv_path}\"\n",
    )
    .expect("config");
    let cfg_s = cfg.display().to_string();
    let secret = data.display().to_string();
    let (ok, out, err) = joinery_stdin(
        &[
            "secrets",
            "-c",
            &cfg_s,
            "set",
            "csv_path",
            "--rotation-days",
            "30",
        ],
        &format!("{secret}\n"),
    );
    assert!(ok, "{err}");
    assert!(out.contains("stored secret 'csv_path'"), "{out}");
    let store = std::fs::read_to_string(dir.path().join("secrets.json")).expect("store");
    assert!(!store.contains(&secret), "encrypted at rest: {store}");

    let (ok, out, err) =
        joinery_stdin(&["query", "-c", &cfg_s, "SELECT count(*) FROM files.t"], "");
    assert!(ok, "{err}");
    assert!(out.contains(" 2"), "{out}");

    let (ok, out, err) = joinery_stdin(&["secrets", "-c", &cfg_s, "list"], "");
    assert!(ok, "{err}");
    assert!(out.contains("csv_path") && out.contains(" ok"), "{out}");
    assert!(!out.contains(&secret), "list never prints values: {out}");

    // A flipped byte in the ciphertext: a clear error naming the secret, not a crash.
    let mut doc: serde_json::Value = serde_json::from_str(&store).expect("json");
    let ct = doc["secrets"]["csv_path"]["ciphertext"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut chars: Vec<char> = ct.chars().collect();
    chars[0] = if chars[0] == 'A' { 'B' } else { 'A' };
    doc["secrets"]["csv_path"]["ciphertext"] = chars.into_iter().collect::<String>().into();
    std::fs::write(dir.path().join("secrets.json"), doc.to_string()).expect("write");
    let (ok, _, err) = joinery_stdin(&["query", "-c", &cfg_s, "SELECT 1"], "");
    assert!(!ok);
    assert!(
        err.contains("'csv_path'") && err.contains("cannot be decrypted"),
        "{err}"
    );
    assert!(!err.contains(&secret), "{err}");

    // A key file others can read is refused.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let (ok, _, err) = joinery_stdin(&["secrets", "-c", &cfg_s, "list"], "");
        assert!(!ok);
        assert!(err.contains("chmod 600"), "{err}");
    }
}

#[test]
fn password_prints_a_verifier_not_the_password() {
    let (ok, out, err) = joinery_stdin(&["password"], "correct horse\n");
    assert!(ok, "{err}");
    assert!(out.starts_with("SCRAM-SHA-256$4096:"), "{out}");
    assert!(!out.contains("correct horse"));
    // <salt>$<StoredKey>:<ServerKey>, the form PostgreSQL keeps (no salted password).
    let keys = out.trim().rsplit('$').next().unwrap_or_default();
    assert_eq!(keys.split(':').count(), 2, "{out}");
    assert!(
        joinery_server::auth::parse_verifier(out.trim()).is_ok(),
        "{out}"
    );
}

#[test]
fn secrets_never_reach_logs_errors_or_check_output() {
    // Debug logs, a failing upstream, EXPLAIN and `joinery check`: the token appears in none.
    const TOKEN: &str = "ghp_RedactionProbe0000000000000042";
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = dir.path().join("joinery.toml");
    std::fs::write(
        &cfg,
        format!(
            "[connections.gh]\nkind = \"github\"\nbase_url = \"http://127.0.0.1:9\"\ntoken = \"{TOKEN}\"\nrepositories = [\"acme/api\"]\nmax_attempts = 1\n\n[connections.pd]\nkind = \"pagerduty\"\nbase_url = \"http://127.0.0.1:9\"\ntoken = \"{TOKEN}\"\nmax_attempts = 1\n"
        ),
    )
    .expect("config");
    let cfg_s = cfg.display().to_string();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_joinery"))
            .args(args)
            .env("RUST_LOG", "trace")
            .env("RUST_BACKTRACE", "1")
            .output()
            .expect("joinery runs");
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let mut all = String::new();
    all.push_str(&run(&["check", "-c", &cfg_s]));
    all.push_str(&run(&["query", "-c", &cfg_s, "SELECT * FROM gh.issues"]));
    all.push_str(&run(&["query", "-c", &cfg_s, "SELECT * FROM pd.incidents"]));
    all.push_str(&run(&[
        "query",
        "-c",
        &cfg_s,
        "EXPLAIN SELECT * FROM gh.pull_requests",
    ]));
    assert!(all.contains("gh"), "the runs said something: {all}");
    assert!(
        all.len() > 1000,
        "trace logging was on: {} bytes",
        all.len()
    );
    assert!(!all.contains(TOKEN), "token leaked:\n{all}");
    assert!(!all.contains("RedactionProbe"), "part of the token leaked");
}
