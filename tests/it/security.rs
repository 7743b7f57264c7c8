//! Security on the wire: SCRAM-SHA-256 logins against config verifiers, trust for loopback only,
//! failed-login lockout, TLS (require_tls, psql verify-full), and connection grants that hide
//! schemas from catalogs and refuse queries with 42501 wherever the table is referenced.

use joinery_server::auth::make_verifier;
use joinery_tests::{TestServer, sqlstate, text_rows};

const ALICE_PW: &str = "alice-pw-Xq7!";
const BOB_PW: &str = "bob-pw-Lm3?";

fn config(extra_server: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
{extra_server}

[connections.sales]
kind = "demo"

[connections.engineering]
kind = "demo"

[users.alice]
password = "{a}"
admin = true
grants = ["*"]

[users.bob]
password = "{b}"
grants = ["engineering"]
"#,
        a = make_verifier(ALICE_PW),
        b = make_verifier(BOB_PW),
    )
}

#[tokio::test]
async fn scram_logins_and_grants() {
    let server = TestServer::with_config(&config("")).await;

    // Right password: in. Wrong password, unknown user, no password: 28P01, same message shape.
    let alice = server
        .login("alice", ALICE_PW)
        .await
        .expect("alice logs in");
    assert_eq!(
        text_rows(&alice, "SELECT current_user").await[0][0].as_deref(),
        Some("alice")
    );
    for (user, pw) in [("alice", "wrong"), ("mallory", "whatever"), ("bob", "")] {
        let err = server.login(user, pw).await.expect_err("refused");
        assert_eq!(sqlstate(&err), "28P01", "{user}: {err:?}");
    }

    // Bob sees only engineering: not in information_schema, pg_catalog or \dt's query.
    let bob = server.login("bob", BOB_PW).await.expect("bob logs in");
    let schemas = text_rows(
        &bob,
        "SELECT schema_name FROM information_schema.schemata ORDER BY 1",
    )
    .await;
    let names: Vec<&str> = schemas.iter().filter_map(|r| r[0].as_deref()).collect();
    assert!(names.contains(&"engineering"), "{names:?}");
    assert!(!names.contains(&"sales"), "{names:?}");
    let n = text_rows(
        &bob,
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'sales'",
    )
    .await;
    assert_eq!(n, vec![vec![Some("0".into())]]);
    let n = text_rows(
        &bob,
        "SELECT count(*) FROM pg_catalog.pg_namespace WHERE nspname = 'sales'",
    )
    .await;
    assert_eq!(n, vec![vec![Some("0".into())]]);
    let dt = text_rows(
        &bob,
        "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c \
         LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r','p','v','m','f') AND n.nspname <> 'pg_catalog' \
         AND n.nspname <> 'information_schema'",
    )
    .await;
    assert!(
        dt.iter().all(|r| r[0].as_deref() != Some("sales")),
        "{dt:?}"
    );
    assert!(
        dt.iter().any(|r| r[0].as_deref() == Some("engineering")),
        "{dt:?}"
    );

    // The system schema speaks only of granted connections.
    let n = text_rows(&bob, "SELECT name FROM joinery.connections ORDER BY 1").await;
    assert_eq!(n, vec![vec![Some("engineering".into())]]);
    let n = text_rows(
        &bob,
        "SELECT count(*) FROM joinery.tables WHERE schema_name = 'sales'",
    )
    .await;
    assert_eq!(n, vec![vec![Some("0".into())]]);
    let n = text_rows(
        &bob,
        "SELECT count(DISTINCT schema_name) FROM joinery.columns",
    )
    .await;
    assert_eq!(n, vec![vec![Some("1".into())]]);

    // Querying it is 42501 however it is reached; the session goes on.
    for sql in [
        "SELECT * FROM sales.customers",
        "SELECT e.id FROM engineering.customers e JOIN sales.customers s ON s.id = e.id",
        "SELECT * FROM engineering.customers WHERE id IN (SELECT id FROM sales.orders)",
        "WITH x AS (SELECT * FROM sales.orders) SELECT count(*) FROM x",
        "EXPLAIN SELECT * FROM sales.orders",
        "SELECT * FROM joinery.sales.orders",
    ] {
        let err = bob.simple_query(sql).await.expect_err("refused");
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err:?}");
        let msg = err
            .as_db_error()
            .map(|e| e.message().to_string())
            .unwrap_or_default();
        assert!(msg.contains("sales"), "{msg}");
    }
    // Prepared statements too.
    let err = bob
        .prepare("SELECT * FROM sales.orders WHERE id = $1")
        .await
        .expect_err("refused");
    assert_eq!(sqlstate(&err), "42501");
    let n = text_rows(&bob, "SELECT count(*) > 0 FROM engineering.customers").await;
    assert_eq!(n, vec![vec![Some("t".into())]]);

    // Alice (grants = "*") sees both.
    let n = text_rows(
        &alice,
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name IN ('sales', 'engineering')",
    )
    .await;
    assert_eq!(n, vec![vec![Some("2".into())]]);
}

#[tokio::test]
async fn repeated_failures_lock_the_user_out_for_a_while() {
    let server = TestServer::with_config(&config("")).await;
    for _ in 0..joinery_server::auth::MAX_FAILURES {
        let err = server.login("bob", "guess").await.expect_err("wrong");
        assert_eq!(sqlstate(&err), "28P01");
    }
    // Now even the right password is refused (from this address, for this user) ...
    let err = server.login("bob", BOB_PW).await.expect_err("locked");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("too many failed logins"), "{msg}");
    // ... while other users are not affected.
    server
        .login("alice", ALICE_PW)
        .await
        .expect("alice unaffected");
}

#[tokio::test]
async fn trust_without_users_is_for_loopback_and_plain_passwords_are_refused() {
    // No users: trust, the demo's default (these tests connect from loopback).
    let server = TestServer::demo().await;
    let c = server.client_as("anyone").await;
    assert_eq!(text_rows(&c, "SELECT 1").await.len(), 1);
    // A plain password in config is refused with a pointer to `joinery password`.
    let err =
        joinery_server::config::Config::parse("[users.eve]\npassword = \"hunter2\"\n", "t.toml")
            .expect_err("plain password");
    assert!(err.to_string().contains("joinery password"), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
    // Grants must name connections.
    let err = joinery_server::config::Config::parse(
        &format!(
            "[users.eve]\npassword = \"{}\"\ngrants = [\"nope\"]\n",
            make_verifier("x")
        ),
        "t.toml",
    )
    .expect_err("unknown grant");
    assert!(err.to_string().contains("nope"), "{err}");
}

// psql runs as a blocking child process: the server needs a thread of its own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_required_and_verify_full_from_psql() {
    let dir = tempfile::tempdir().expect("tmp");
    let (cert, key) = joinery_tests::self_signed(dir.path()).expect("openssl makes a certificate");
    let server = TestServer::with_config(&config(&format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\nrequire_tls = true",
        cert.display(),
        key.display()
    )))
    .await;
    // Plaintext is refused with a clear message.
    let err = server
        .login("alice", ALICE_PW)
        .await
        .expect_err("plaintext");
    assert_eq!(sqlstate(&err), "28000", "{err:?}");
    let msg = err
        .as_db_error()
        .map(|e| e.message().to_string())
        .unwrap_or_default();
    assert!(msg.contains("requires TLS"), "{msg}");

    // psql with sslmode=verify-full against our certificate, SCRAM over TLS (channel binding
    // offered: SCRAM-SHA-256-PLUS).
    for mode in ["require", "verify-full"] {
        let out = std::process::Command::new("psql")
            .arg(format!(
                "host=localhost port={} user=alice dbname=joinery sslmode={mode} sslrootcert={}",
                server.port(),
                cert.display()
            ))
            .args(["-XAt", "-c", "\\conninfo", "-c", "SELECT current_user"])
            .env("PGPASSWORD", ALICE_PW)
            .output()
            .expect("psql runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{mode}: {stderr}");
        assert!(stdout.contains("alice"), "{mode}: {stdout} {stderr}");
        assert!(stdout.contains("SSL connection"), "{mode}: {stdout}");
    }
    // A certificate the client does not trust fails verify-full.
    let other = tempfile::tempdir().expect("tmp");
    let (other_cert, _) = joinery_tests::self_signed(other.path()).expect("openssl");
    let out = std::process::Command::new("psql")
        .arg(format!(
            "host=localhost port={} user=alice dbname=joinery sslmode=verify-full sslrootcert={}",
            server.port(),
            other_cert.display()
        ))
        .args(["-XAtc", "SELECT 1"])
        .env("PGPASSWORD", ALICE_PW)
        .output()
        .expect("psql runs");
    assert!(!out.status.success(), "an untrusted certificate is refused");
}

#[tokio::test]
async fn audit_log_names_who_asked_what_of_which_tool_and_never_a_secret() {
    use chrono::TimeZone;
    use joinery_providers::github::fake;
    const TOKEN: &str = "ghp_AuditTestToken0000000000000001";
    let as_of = chrono::Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let data = fake::generate(7, as_of, &["acme/api", "acme/web"], &[], 2);
    let (gh, _) = fake::start(
        data,
        Some(TOKEN.into()),
        5000,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    let dir = tempfile::tempdir().expect("tmp");
    let audit_path = dir.path().join("audit.jsonl");
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[audit]
path = "{audit}"

[connections.github]
kind = "github"
base_url = "{base}"
token = "{TOKEN}"
repositories = ["acme/api", "acme/web"]

[connections.sales]
kind = "demo"

[users.alice]
password = "{a}"
admin = true

[users.bob]
password = "{b}"
grants = ["github"]
"#,
        audit = audit_path.display(),
        base = gh.base_url(),
        a = make_verifier(ALICE_PW),
        b = make_verifier(BOB_PW),
    );
    let server = TestServer::with_config(&cfg).await;
    let bob = server.login("bob", BOB_PW).await.expect("bob");
    gh.clear_requests();
    let n = text_rows(
        &bob,
        "SELECT count(*) FROM github.pull_requests WHERE state = 'open'",
    )
    .await;
    assert_eq!(n.len(), 1);
    let reached = gh.request_count();
    assert!(reached > 0);
    // Refused statements are audited too; the audit table is for admins only.
    let err = bob
        .simple_query("SELECT * FROM sales.orders")
        .await
        .expect_err("42501");
    assert_eq!(sqlstate(&err), "42501");
    let err = bob
        .simple_query("SELECT * FROM joinery.audit_log")
        .await
        .expect_err("admins only");
    assert_eq!(sqlstate(&err), "42501");
    // A literal that looks like a token is masked in the statement text.
    text_rows(&bob, "SELECT 'ghp_LiteralSecret999999999' AS t").await;
    let plan = format!(
        "{:?}",
        text_rows(&bob, "EXPLAIN SELECT * FROM github.issues").await
    );
    assert!(!plan.contains(TOKEN), "{plan}");

    server
        .login("bob", "not-his-password")
        .await
        .expect_err("wrong password");
    let alice = server.login("alice", ALICE_PW).await.expect("alice");
    let logins = text_rows(
        &alice,
        "SELECT user_name, status FROM joinery.audit_log WHERE kind = 'login' ORDER BY at",
    )
    .await;
    assert_eq!(
        logins,
        vec![
            vec![Some("bob".into()), Some("ok".into())],
            vec![Some("bob".into()), Some("28P01".into())],
            vec![Some("alice".into()), Some("ok".into())],
        ],
        "logins, failed ones included"
    );
    let calls = text_rows(
        &alice,
        "SELECT count(*) FROM joinery.audit_log WHERE kind = 'call' AND user_name = 'bob' \
         AND connection = 'github' AND cache_hit = false",
    )
    .await;
    assert_eq!(
        calls,
        vec![vec![Some(reached.to_string())]],
        "every request that reached the API has an audit row naming bob"
    );
    let stmts = text_rows(
        &alice,
        "SELECT status, client_addr IS NOT NULL, rows FROM joinery.audit_log \
         WHERE kind = 'statement' AND user_name = 'bob' ORDER BY at",
    )
    .await;
    let statuses: Vec<&str> = stmts.iter().filter_map(|r| r[0].as_deref()).collect();
    assert!(
        statuses.contains(&"ok") && statuses.contains(&"42501"),
        "{stmts:?}"
    );
    assert!(stmts.iter().all(|r| r[1].as_deref() == Some("t")));
    let linked = text_rows(
        &alice,
        "SELECT count(*) FROM joinery.audit_log s JOIN joinery.audit_log c \
         ON c.query_id = s.query_id AND c.kind = 'call' \
         WHERE s.kind = 'statement' AND s.statement LIKE '%pull_requests%'",
    )
    .await;
    assert_eq!(
        linked,
        vec![vec![Some(reached.to_string())]],
        "calls link to their statement"
    );

    // The file has the same rows, and no secret anywhere in it.
    let text = std::fs::read_to_string(&audit_path).expect("audit file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(lines.len() as u64 >= reached as u64 + 3, "{}", lines.len());
    assert!(!text.contains(TOKEN), "token in the audit file");
    assert!(
        !text.contains("ghp_LiteralSecret999999999"),
        "literal not masked"
    );
    assert!(text.contains("'***'"));
    let api = format!(
        "{:?}",
        text_rows(&alice, "SELECT url FROM joinery.api_calls").await
    );
    assert!(!api.contains(TOKEN), "{api}");
}

#[tokio::test]
async fn per_user_upstream_tokens_with_separate_cache_entries() {
    use chrono::TimeZone;
    use joinery_providers::github::fake;
    const TOKEN: &str = "ghp_ServiceToken00000000000000001";
    let as_of = chrono::Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let data = fake::generate(7, as_of, &["acme/api"], &[], 2);
    let (gh, _) = fake::start(
        data,
        Some(TOKEN.into()),
        5000,
        "127.0.0.1:0".parse().expect("addr"),
    )
    .await
    .expect("fake");
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[connections.github]
kind = "github"
base_url = "{base}"
token = "{TOKEN}"
repositories = ["acme/api"]

[users.alice]
password = "{a}"

[users.bob]
password = "{b}"
credentials = {{ github = "ghp_BobsRevokedToken000000000001" }}

[users.carol]
password = "{a}"
credentials = {{ github = "{TOKEN}" }}
"#,
        base = gh.base_url(),
        a = make_verifier(ALICE_PW),
        b = make_verifier(BOB_PW),
    );
    let server = TestServer::with_config(&cfg).await;
    let q = "SELECT count(*) FROM github.pull_requests";
    // Alice uses the connection's token and fills the cache.
    let alice = server.login("alice", ALICE_PW).await.expect("alice");
    let n = text_rows(&alice, q).await;
    let after_alice = gh.request_count();
    assert!(after_alice > 0);
    // Bob's own token reaches the API (and is refused there): Alice's cached pages are not his.
    let bob = server.login("bob", BOB_PW).await.expect("bob");
    let msg = joinery_tests::assert_upstream_auth_error(
        &bob,
        q,
        "github",
        "ghp_BobsRevokedToken000000000001",
    )
    .await;
    assert!(!msg.contains(TOKEN), "{msg}");
    // Carol's token is valid: same rows, fetched under her own cache entries.
    let before_carol = gh.request_count();
    let carol = server.login("carol", ALICE_PW).await.expect("carol");
    assert_eq!(text_rows(&carol, q).await, n);
    assert!(
        gh.request_count() > before_carol,
        "carol's pages were fetched with her token, not served from alice's cache"
    );
    // Alice again: her cache entries still answer.
    let before = gh.request_count();
    assert_eq!(text_rows(&alice, q).await, n);
    assert_eq!(gh.request_count(), before, "alice's repeat is a cache hit");
}

#[tokio::test]
async fn row_filters_hold_under_joins_subqueries_ctes_and_explain() {
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"

[connections.sales]
kind = "demo"

[users.alice]
password = "{a}"
admin = true

[users.bob]
password = "{b}"

[[row_filters]]
table = "sales.customers"
filter = "region = 'EMEA' OR name = current_user"
"#,
        a = make_verifier(ALICE_PW),
        b = make_verifier(BOB_PW),
    );
    let server = TestServer::with_config(&cfg).await;
    let alice = server.login("alice", ALICE_PW).await.expect("alice");
    let bob = server.login("bob", BOB_PW).await.expect("bob");
    let emea = "(region = 'EMEA' OR name = 'bob')";
    for (bobs, alices) in [
        (
            "SELECT count(*) FROM sales.customers".to_string(),
            format!("SELECT count(*) FROM sales.customers WHERE {emea}"),
        ),
        (
            "SELECT count(*) FROM sales.orders o JOIN sales.customers c ON c.id = o.customer_id"
                .to_string(),
            format!(
                "SELECT count(*) FROM sales.orders o JOIN sales.customers c ON c.id = o.customer_id WHERE {emea}"
            ),
        ),
        (
            "SELECT count(*) FROM sales.orders WHERE customer_id IN (SELECT id FROM sales.customers)"
                .to_string(),
            format!(
                "SELECT count(*) FROM sales.orders WHERE customer_id IN (SELECT id FROM sales.customers WHERE {emea})"
            ),
        ),
        (
            "WITH c AS (SELECT * FROM sales.customers) SELECT count(DISTINCT region) FROM c"
                .to_string(),
            format!("SELECT count(DISTINCT region) FROM sales.customers WHERE {emea}"),
        ),
    ] {
        let b = text_rows(&bob, &bobs).await;
        let a = text_rows(&alice, &alices).await;
        assert_eq!(b, a, "{bobs}");
    }
    let all = text_rows(&alice, "SELECT count(*) FROM sales.customers").await;
    let mine = text_rows(&bob, "SELECT count(*) FROM sales.customers").await;
    assert_ne!(
        all, mine,
        "the filter narrows bob's rows; alice (admin) sees all"
    );
    let plan = format!(
        "{:?}",
        text_rows(&bob, "EXPLAIN SELECT name FROM sales.customers").await
    );
    assert!(plan.contains("EMEA"), "{plan}");
    // Prepared statements too.
    let rows = bob
        .query(
            "SELECT count(*) FROM sales.customers WHERE id > $1",
            &[&0i64],
        )
        .await
        .expect("prepared");
    let n: i64 = rows[0].get(0);
    assert_eq!(Some(n.to_string()), mine[0][0].clone());
}

#[tokio::test]
async fn only_admins_rotate_secrets_and_refresh_connections() {
    use joinery_server::secrets::{SecretStore, load_key, write_key_file};
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("k");
    write_key_file(&key).expect("key");
    let store_path = dir.path().join("secrets.json");
    let k = load_key(Some(&key)).expect("load key");
    SecretStore::open(&store_path, k)
        .expect("store")
        .set("sales_token", "old-value-1", "setup", None)
        .expect("set");
    let audit = dir.path().join("audit.jsonl");
    let cfg = config("").replace(
        "[connections.sales]",
        &format!(
            "[secrets]\npath = \"{}\"\nkey_file = \"{}\"\n\n[audit]\npath = \"{}\"\n\n[connections.sales]",
            store_path.display(),
            key.display(),
            audit.display()
        ),
    );
    let server = TestServer::with_config(&cfg).await;
    let bob = server.login("bob", BOB_PW).await.expect("bob");
    for sql in [
        "SELECT joinery.rotate_secret('sales_token', 'bobs-value-2')",
        "SELECT joinery.refresh('engineering')",
    ] {
        let err = bob.simple_query(sql).await.expect_err("admins only");
        assert_eq!(sqlstate(&err), "42501", "{sql}");
    }
    let alice = server.login("alice", ALICE_PW).await.expect("alice");
    let rows = text_rows(
        &alice,
        "SELECT joinery.rotate_secret('sales_token', 'new-value-3')",
    )
    .await;
    assert!(
        rows[0][0]
            .as_deref()
            .unwrap_or_default()
            .contains("rotated")
    );
    let store = SecretStore::open(&store_path, k).expect("store");
    assert_eq!(
        store.get("sales_token").expect("decrypts").as_str(),
        "new-value-3"
    );
    // Metadata in SQL for admins, with the rotation warning; never the value; others: 42501.
    let meta = text_rows(
        &alice,
        "SELECT name, created_by, rotation_days, overdue FROM joinery.secrets",
    )
    .await;
    assert_eq!(
        meta,
        vec![vec![
            Some("sales_token".into()),
            Some("setup".into()),
            Some("90".into()),
            Some("f".into())
        ]]
    );
    let all = format!(
        "{:?}",
        text_rows(&alice, "SELECT * FROM joinery.secrets").await
    );
    assert!(!all.contains("new-value-3"), "{all}");
    let err = bob
        .simple_query("SELECT * FROM joinery.secrets")
        .await
        .expect_err("admins only");
    assert_eq!(sqlstate(&err), "42501");
    let text = std::fs::read_to_string(&audit).expect("audit");
    assert!(
        text.contains("rotate_secret('sales_token', '***')"),
        "{text}"
    );
    assert!(
        !text.contains("new-value-3") && !text.contains("bobs-value-2"),
        "{text}"
    );
}

#[tokio::test]
async fn sql_grants_and_roles_reach_open_sessions_and_persist() {
    let dir = tempfile::tempdir().expect("tmp");
    let grants_file = dir.path().join("grants.json");
    let audit_file = dir.path().join("audit.jsonl");
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
grants_file = "{g}"

[audit]
path = "{au}"

[connections.sales]
kind = "demo"

[connections.engineering]
kind = "demo"

[roles.analysts]
grants = ["sales"]

[roles.contractors]

[users.alice]
password = "{a}"
admin = true

[users.bob]
password = "{b}"
grants = ["engineering"]

[users.carol]
password = "{c}"
roles = ["analysts"]

[users.dave]
password = "{c}"
roles = ["contractors"]

[[row_filters]]
table = "sales.customers"
filter = "region = 'EMEA'"
roles = ["analysts"]
"#,
        g = grants_file.display(),
        au = audit_file.display(),
        a = make_verifier(ALICE_PW),
        b = make_verifier(BOB_PW),
        c = make_verifier("carol-pw"),
    );
    let server = TestServer::with_config(&cfg).await;
    let alice = server.login("alice", ALICE_PW).await.expect("alice");
    let bob = server.login("bob", BOB_PW).await.expect("bob");
    let carol = server.login("carol", "carol-pw").await.expect("carol");
    let schemata = "SELECT schema_name FROM information_schema.schemata \
                    WHERE schema_name IN ('sales', 'engineering') ORDER BY 1";
    let all = text_rows(&alice, "SELECT count(*) FROM sales.customers").await;
    let emea = text_rows(
        &alice,
        "SELECT count(*) FROM sales.customers WHERE region = 'EMEA'",
    )
    .await;
    assert_ne!(all, emea);

    // A role without grants gives nothing (until an admin grants it something).
    let dave = server.login("dave", "carol-pw").await.expect("dave");
    assert!(text_rows(&dave, schemata).await.is_empty());

    // Carol holds sales through her role, with the role's row filter; engineering is not hers.
    assert_eq!(
        text_rows(&carol, schemata).await,
        vec![vec![Some("sales".to_string())]]
    );
    assert_eq!(
        text_rows(&carol, "SELECT count(*) FROM sales.customers").await,
        emea
    );
    let err = carol
        .simple_query("SELECT 1 FROM engineering.customers")
        .await
        .expect_err("not granted");
    assert_eq!(sqlstate(&err), "42501");

    // Only admins grant.
    let err = bob
        .simple_query("GRANT USAGE ON SCHEMA sales TO bob")
        .await
        .expect_err("bob is no admin");
    assert_eq!(sqlstate(&err), "42501");
    let err = bob
        .simple_query("SELECT count(*) FROM sales.customers")
        .await
        .expect_err("not yet");
    assert_eq!(sqlstate(&err), "42501");

    // A grant reaches bob's open session at his next statement, without his role's filter.
    alice
        .simple_query("GRANT USAGE ON SCHEMA sales TO bob")
        .await
        .expect("grant");
    assert_eq!(
        text_rows(&bob, schemata).await,
        vec![
            vec![Some("engineering".to_string())],
            vec![Some("sales".to_string())]
        ]
    );
    assert_eq!(
        text_rows(&bob, "SELECT count(*) FROM sales.customers").await,
        all
    );
    // A revoke of what the config gave takes it away, from prepared statements too.
    let prepared = bob
        .prepare("SELECT count(*) FROM engineering.customers")
        .await
        .expect("prepare before the revoke");
    bob.query(&prepared, &[]).await.expect("runs while granted");
    alice
        .simple_query("REVOKE USAGE ON SCHEMA engineering FROM bob")
        .await
        .expect("revoke");
    let err = bob
        .query(&prepared, &[])
        .await
        .expect_err("prepared before, run after the revoke");
    assert_eq!(sqlstate(&err), "42501");
    let err = bob
        .simple_query("SELECT count(*) FROM engineering.customers")
        .await
        .expect_err("revoked");
    assert_eq!(sqlstate(&err), "42501");
    assert_eq!(
        text_rows(&bob, schemata).await,
        vec![vec![Some("sales".to_string())]]
    );
    // Revoking from carol what her role gives leaves it (as in PostgreSQL); from the role, not.
    alice
        .simple_query("REVOKE USAGE ON SCHEMA sales FROM carol")
        .await
        .expect("revoke from member");
    assert_eq!(text_rows(&carol, schemata).await.len(), 1);
    alice
        .simple_query("REVOKE ALL ON SCHEMA sales FROM analysts")
        .await
        .expect("revoke from role");
    assert!(text_rows(&carol, schemata).await.is_empty());

    // Clear errors for what Joinery does not grant.
    for (sql, state) in [
        ("GRANT SELECT ON sales.customers TO bob", "0A000"),
        ("GRANT USAGE ON SCHEMA nope TO bob", "3F000"),
        ("GRANT USAGE ON SCHEMA sales TO nobody", "42704"),
    ] {
        let err = alice.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&err), state, "{sql}: {err:?}");
    }
    let listing = text_rows(
        &alice,
        "SELECT grantee, connection, grantee_kind FROM joinery.grants \
         WHERE grantee IN ('bob', 'analysts') ORDER BY 1, 2",
    )
    .await;
    assert_eq!(
        listing,
        vec![vec![
            Some("bob".to_string()),
            Some("sales".to_string()),
            Some("user".to_string())
        ]]
    );
    let err = bob
        .simple_query("SELECT * FROM joinery.grants")
        .await
        .expect_err("admins only");
    assert_eq!(sqlstate(&err), "42501");

    // PUBLIC reaches everyone, dave included.
    alice
        .simple_query("GRANT USAGE ON SCHEMA engineering TO PUBLIC")
        .await
        .expect("grant to public");
    assert_eq!(
        text_rows(&dave, schemata).await,
        vec![vec![Some("engineering".to_string())]]
    );
    alice
        .simple_query("REVOKE USAGE ON SCHEMA engineering FROM PUBLIC")
        .await
        .expect("revoke from public");
    assert!(text_rows(&dave, schemata).await.is_empty());
    // Health and statements: connector_stats shows only granted connections, joinery.queries
    // is for admins.
    assert_eq!(
        text_rows(
            &bob,
            "SELECT connection FROM joinery.connector_stats ORDER BY 1"
        )
        .await,
        vec![vec![Some("sales".to_string())]]
    );
    let err = bob
        .simple_query("SELECT * FROM joinery.queries")
        .await
        .expect_err("admins only");
    assert_eq!(sqlstate(&err), "42501");
    assert!(
        !text_rows(
            &alice,
            "SELECT user_name FROM joinery.queries WHERE user_name = 'bob'"
        )
        .await
        .is_empty()
    );

    // Saved (0600) and audited; a restarted server starts from them.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&grants_file)
            .expect("saved")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let audit = std::fs::read_to_string(&audit_file).expect("audit");
    assert!(
        audit.lines().any(|l| l.contains("\"user\":\"alice\"")
            && l.contains("GRANT USAGE ON SCHEMA sales TO bob")),
        "{audit}"
    );
    drop(server);
    let again = TestServer::with_config(&cfg).await;
    let bob = again.login("bob", BOB_PW).await.expect("bob again");
    assert_eq!(
        text_rows(&bob, schemata).await,
        vec![vec![Some("sales".to_string())]]
    );
}
