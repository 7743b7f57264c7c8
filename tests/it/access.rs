//! Access control where tables resolve: a user with a row filter and a grant on some
//! connections, against every way a statement can spell a table. Each case must return exactly
//! the filtered rows (compared with an admin's explicit WHERE) or a permission error; it runs
//! for a REST table (GitHub issues, fake) and a PostgreSQL warehouse table.

use chrono::{TimeZone, Utc};
use joinery_providers::github::fake;
use joinery_tests::{PgScratch, TestServer, sqlstate, text_rows};

type Rows = Vec<Vec<Option<String>>>;

/// One table under a row filter for bob.
struct Filtered {
    schema: &'static str,
    table: &'static str,
    /// A unique key column, for ORDER BY and joins.
    key: &'static str,
    /// Bob's row filter, as the admin writes it in a WHERE.
    predicate: &'static str,
    /// The column the filter reads (some cases leave it out of the projection).
    filtered_column: &'static str,
}

impl Filtered {
    fn q(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }
}

async fn rows_or_state(c: &tokio_postgres::Client, sql: &str) -> Result<Rows, String> {
    match c.simple_query(sql).await {
        Ok(msgs) => Ok(msgs
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect()),
        Err(e) => Err(format!(
            "{} {}",
            sqlstate(&e),
            e.as_db_error()
                .map(|d| d.message().to_string())
                .unwrap_or_default()
        )),
    }
}

/// Run `bob_sql` as bob (after `setup` statements) and `admin_sql` as alice: equal rows.
async fn same(
    bob: &tokio_postgres::Client,
    alice: &tokio_postgres::Client,
    case: &str,
    setup: &[&str],
    bob_sql: &str,
    admin_sql: &str,
    log: &mut Vec<String>,
) {
    for s in setup {
        bob.simple_query(s)
            .await
            .unwrap_or_else(|e| panic!("{case}: {s}: {e}"));
    }
    let got = rows_or_state(bob, bob_sql)
        .await
        .unwrap_or_else(|e| panic!("{case}: {bob_sql}: SQLSTATE {e}"));
    let want = text_rows(alice, admin_sql).await;
    assert_eq!(got, want, "{case}: {bob_sql} vs {admin_sql}");
    assert!(
        !want.is_empty(),
        "{case}: the case must return rows to mean anything"
    );
    bob.simple_query("RESET search_path").await.expect("reset");
    log.push(format!("{case}: {} filtered rows, equal", got.len()));
}

async fn matrix(
    bob: &tokio_postgres::Client,
    alice: &tokio_postgres::Client,
    t: &Filtered,
    log: &mut Vec<String>,
) {
    let (q, k, p, schema, table) = (t.q(), t.key, t.predicate, t.schema, t.table);
    let all = text_rows(alice, &format!("SELECT count(*) FROM {q}")).await;
    let filtered = text_rows(alice, &format!("SELECT count(*) FROM {q} WHERE {p}")).await;
    assert_ne!(all, filtered, "{q}: the filter must remove rows");
    let want_keys = format!("SELECT {k} FROM {q} WHERE {p} ORDER BY {k}");
    let cases: Vec<(&str, Vec<String>, String, String)> = vec![
        (
            "qualified name",
            vec![],
            format!("SELECT {k} FROM {q} ORDER BY {k}"),
            want_keys.clone(),
        ),
        (
            "bare name, search_path one schema",
            vec![format!("SET search_path TO {schema}")],
            format!("SELECT {k} FROM {table} ORDER BY {k}"),
            want_keys.clone(),
        ),
        (
            "bare name, search_path list",
            vec![format!("SET search_path TO public, {schema}")],
            format!("SELECT {k} FROM {table} ORDER BY {k}"),
            want_keys.clone(),
        ),
        (
            "search_path whose first schema is ungranted (and has the table)",
            vec![format!("SET search_path TO secret, {schema}")],
            format!("SELECT {k} FROM {table} ORDER BY {k}"),
            want_keys.clone(),
        ),
        (
            "search_path as a string literal",
            vec![format!("SET search_path = '{schema}'")],
            format!("SELECT {k} FROM \"{table}\" ORDER BY {k}"),
            want_keys.clone(),
        ),
        (
            "quoted identifiers",
            vec![],
            format!("SELECT \"{k}\" FROM \"{schema}\".\"{table}\" ORDER BY 1"),
            want_keys.clone(),
        ),
        (
            "mixed case",
            vec![],
            format!(
                "SELECT {} FROM {}.{} ORDER BY 1",
                k.to_uppercase(),
                schema.to_uppercase(),
                table.to_uppercase()
            ),
            want_keys.clone(),
        ),
        (
            "three-part name",
            vec![],
            format!("SELECT {k} FROM joinery.{q} ORDER BY {k}"),
            want_keys.clone(),
        ),
        (
            "alias",
            vec![],
            format!("SELECT x.{k} FROM {q} AS x ORDER BY 1"),
            want_keys.clone(),
        ),
        (
            "CTE",
            vec![],
            format!("WITH c AS (SELECT * FROM {q}) SELECT {k} FROM c ORDER BY {k}"),
            want_keys.clone(),
        ),
        (
            "CTE named like the table, bare",
            vec![format!("SET search_path TO {schema}")],
            format!("WITH {table} AS (SELECT * FROM {table}) SELECT {k} FROM {table} ORDER BY {k}"),
            want_keys.clone(),
        ),
        (
            "subquery in FROM",
            vec![],
            format!("SELECT s.{k} FROM (SELECT * FROM {q}) s ORDER BY 1"),
            want_keys.clone(),
        ),
        (
            "subquery in WHERE",
            vec![],
            format!(
                "SELECT v.x FROM (SELECT {k} AS x FROM {q} UNION ALL SELECT -1) v \
                 WHERE v.x IN (SELECT {k} FROM {q}) ORDER BY 1"
            ),
            want_keys.clone(),
        ),
        (
            "UNION",
            vec![],
            format!("SELECT {k} FROM {q} UNION SELECT {k} FROM {q} ORDER BY 1"),
            want_keys.clone(),
        ),
        (
            "self-join",
            vec![],
            format!("SELECT a.{k} FROM {q} a JOIN {q} b ON a.{k} = b.{k} ORDER BY 1"),
            want_keys.clone(),
        ),
        (
            "SELECT *",
            vec![],
            format!("SELECT * FROM {q} ORDER BY {k}"),
            format!("SELECT * FROM {q} WHERE {p} ORDER BY {k}"),
        ),
        (
            "projection without the filtered column",
            vec![],
            format!("SELECT count({k}) FROM {q}"),
            format!("SELECT count({k}) FROM {q} WHERE {p}"),
        ),
        (
            "aggregate over the filtered column",
            vec![],
            format!(
                "SELECT {c}, count(*) FROM {q} GROUP BY 1 ORDER BY 1",
                c = t.filtered_column
            ),
            format!(
                "SELECT {c}, count(*) FROM {q} WHERE {p} GROUP BY 1 ORDER BY 1",
                c = t.filtered_column
            ),
        ),
        (
            "the user's own OR cannot widen it",
            vec![],
            format!("SELECT {k} FROM {q} WHERE true OR {k} IS NOT NULL ORDER BY {k}"),
            want_keys.clone(),
        ),
    ];
    for (case, setup, bob_sql, admin_sql) in &cases {
        let setup: Vec<&str> = setup.iter().map(String::as_str).collect();
        same(
            bob,
            alice,
            &format!("{q}: {case}"),
            &setup,
            bob_sql,
            admin_sql,
            log,
        )
        .await;
    }

    // EXPLAIN shows the filter; EXPLAIN ANALYZE hides what the scan saw before it.
    let explain = format!(
        "{:?}",
        text_rows(bob, &format!("EXPLAIN SELECT {k} FROM {q}")).await
    );
    let literal = p.rsplit('\'').nth(1).unwrap_or(p);
    assert!(
        explain.contains(literal),
        "{q}: EXPLAIN shows the filter: {explain}"
    );
    let analyze = format!(
        "{:?}",
        text_rows(bob, &format!("EXPLAIN ANALYZE SELECT {k} FROM {q}")).await
    );
    let total = all[0][0].clone().unwrap_or_default();
    assert!(
        analyze.contains("hidden: below a row filter"),
        "{q}: {analyze}"
    );
    assert!(
        !analyze.contains(&format!("output_rows={total}"))
            && !analyze.contains(&format!("/{total})")),
        "{q}: EXPLAIN ANALYZE must not show the {total} rows before the filter: {analyze}"
    );
    log.push(format!(
        "{q}: EXPLAIN shows the filter; EXPLAIN ANALYZE hides the scan's {total} rows"
    ));

    // Listings: the filtered table is there, the ungranted connection is not.
    let listed = text_rows(
        bob,
        &format!(
            "SELECT table_schema FROM information_schema.tables \
             WHERE table_schema IN ('{schema}', 'secret') AND table_name = '{table}'"
        ),
    )
    .await;
    assert_eq!(listed, vec![vec![Some(schema.to_string())]], "{q}");
    let ns = text_rows(
        bob,
        "SELECT nspname FROM pg_catalog.pg_namespace WHERE nspname = 'secret'",
    )
    .await;
    assert!(ns.is_empty(), "ungranted schema listed: {ns:?}");
    log.push(format!(
        "{q}: information_schema and pg_catalog list it; not the ungranted schema"
    ));

    // The API calls of a filtered table are not shown to bob (their pages, rows and bytes
    // would tell what the filter removed); alice sees them.
    let calls = text_rows(
        bob,
        &format!("SELECT count(*) FROM joinery.api_calls WHERE connection = '{schema}'"),
    )
    .await;
    assert_eq!(calls, vec![vec![Some("0".into())]], "{q}");
    let stats = text_rows(
        bob,
        &format!(
            "SELECT requests, bytes FROM joinery.connector_stats WHERE connection = '{schema}'"
        ),
    )
    .await;
    assert_eq!(stats, vec![vec![None, None]], "{q}: volume counters hidden");
    let admin_calls = text_rows(
        alice,
        &format!("SELECT count(*) FROM joinery.api_calls WHERE connection = '{schema}'"),
    )
    .await;
    assert_ne!(admin_calls, vec![vec![Some("0".into())]], "{q}");
    log.push(format!(
        "{q}: api_calls hidden from bob, volume counters NULL; alice sees them"
    ));

    // Prepared statements (extended protocol): planned again after a policy change.
    let st = bob
        .prepare(&format!("SELECT {k}::text AS k FROM {q} ORDER BY {k}"))
        .await
        .expect("prepare");
    let run = |rows: Vec<tokio_postgres::Row>| -> Rows {
        rows.iter()
            .map(|r| vec![r.get::<_, Option<String>>(0)])
            .collect()
    };
    assert_eq!(
        run(bob.query(&st, &[]).await.expect("run")),
        text_rows(alice, &want_keys).await
    );
    alice
        .simple_query(&format!(
            "CREATE POLICY narrower ON {q} FOR SELECT TO bob USING ({k} % 2 = 0)"
        ))
        .await
        .expect("create policy");
    let narrower = format!("SELECT {k} FROM {q} WHERE {p} AND {k} % 2 = 0 ORDER BY {k}");
    assert_eq!(
        run(bob.query(&st, &[]).await.expect("run after the policy")),
        text_rows(alice, &narrower).await,
        "{q}: the prepared statement follows the new policy"
    );
    alice
        .simple_query(&format!("DROP POLICY narrower ON {q}"))
        .await
        .expect("drop policy");
    assert_eq!(
        run(bob.query(&st, &[]).await.expect("run after the drop")),
        text_rows(alice, &want_keys).await
    );
    log.push(format!(
        "{q}: prepared statement re-planned after CREATE POLICY and DROP POLICY"
    ));

    // ... and after a REVOKE: refused.
    alice
        .simple_query(&format!("REVOKE USAGE ON SCHEMA {schema} FROM bob"))
        .await
        .expect("revoke");
    let err = bob.query(&st, &[]).await.expect_err("revoked");
    assert_eq!(sqlstate(&err), "42501", "{q}: {err}");
    let r = rows_or_state(bob, &format!("SELECT {k} FROM {q}")).await;
    assert!(matches!(&r, Err(e) if e.starts_with("42501")), "{q}: {r:?}");
    alice
        .simple_query(&format!("GRANT USAGE ON SCHEMA {schema} TO bob"))
        .await
        .expect("grant");
    log.push(format!("{q}: prepared statement after REVOKE: 42501"));

    // After SET search_path: a bare name prepared under one path is resolved again.
    bob.simple_query(&format!("SET search_path TO {schema}"))
        .await
        .expect("set");
    let bare = bob
        .prepare(&format!("SELECT {k}::text AS k FROM {table} ORDER BY {k}"))
        .await
        .expect("prepare bare");
    assert_eq!(
        run(bob.query(&bare, &[]).await.expect("bare")),
        text_rows(alice, &want_keys).await
    );
    bob.simple_query("SET search_path TO public")
        .await
        .expect("set");
    let err = bob
        .query(&bare, &[])
        .await
        .expect_err("no longer on the path");
    assert_eq!(sqlstate(&err), "42P01", "{q}: {err}");
    bob.simple_query("RESET search_path").await.expect("reset");
    log.push(format!(
        "{q}: prepared bare name after SET search_path: re-resolved (42P01)"
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_filters_and_grants_hold_for_every_spelling() {
    let Some(pg) = PgScratch::new("access").await else {
        return;
    };
    pg.exec(
        "CREATE TABLE $S.customers (id int8 PRIMARY KEY, name text NOT NULL, region text NOT NULL);
         INSERT INTO $S.customers SELECT g, 'c' || g, (ARRAY['eu','us','apac'])[1 + g % 3]
           FROM generate_series(1, 30) g;",
    )
    .await;
    let as_of = Utc
        .with_ymd_and_hms(2026, 11, 20, 12, 0, 0)
        .single()
        .expect("date");
    let data = fake::generate(7, as_of, &["acme/api", "acme/web"], &[], 1);
    let (gh, _) = fake::start(data, None, 5000, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("fake");
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = format!(
        r#"
[server]
listen = "127.0.0.1:0"
auth = "trust"
grants_file = "{grants}"

[connections.github]
kind = "github"
base_url = "{gh}"
repositories = ["acme/api", "acme/web"]

{wh}
[connections.secret]
kind = "demo"

[users.alice]
admin = true

[users.bob]
grants = ["github", "wh"]

[[row_filters]]
table = "github.issues"
filter = "state = 'open'"
users = ["bob"]

[[row_filters]]
table = "wh.customers"
filter = "region = 'eu'"
users = ["bob"]
"#,
        grants = dir.path().join("grants.json").display(),
        gh = gh.base_url(),
        wh = pg.connection("wh"),
    );
    let server = TestServer::with_config(&cfg).await;
    let alice = server.client_as("alice").await;
    let bob = server.client_as("bob").await;
    let mut log = Vec::new();

    // The ungranted connection: refused by name, everywhere.
    for sql in [
        "SELECT * FROM secret.customers",
        "SELECT * FROM joinery.secret.customers",
        "SELECT 1 FROM github.issues i JOIN secret.customers c ON true",
        "SELECT * FROM github.issues WHERE id IN (SELECT id FROM secret.customers)",
        "WITH x AS (SELECT * FROM \"secret\".customers) SELECT * FROM x",
        "EXPLAIN SELECT * FROM secret.customers",
        "SELECT * FROM joinery.audit_log",
        "SELECT * FROM joinery.policies",
    ] {
        let r = rows_or_state(&bob, sql).await;
        assert!(
            matches!(&r, Err(e) if e.starts_with("42501")),
            "{sql}: {r:?}"
        );
        log.push(format!("ungranted: {sql}: 42501"));
    }
    let err = bob
        .prepare("SELECT * FROM secret.orders")
        .await
        .expect_err("prepare refused");
    assert_eq!(sqlstate(&err), "42501");
    log.push("ungranted: extended-protocol Parse: 42501".into());

    let tables = [
        Filtered {
            schema: "github",
            table: "issues",
            key: "id",
            predicate: "state = 'open'",
            filtered_column: "state",
        },
        Filtered {
            schema: "wh",
            table: "customers",
            key: "id",
            predicate: "region = 'eu'",
            filtered_column: "region",
        },
    ];
    for t in &tables {
        matrix(&bob, &alice, t, &mut log).await;
    }

    // The filter reached the API request and the warehouse SQL, like a user's WHERE.
    gh.clear_requests();
    let fresh = server.client_as("bob").await;
    fresh.simple_query("SET joinery.cache = off").await.ok();
    text_rows(&fresh, "SELECT id FROM github.issues").await;
    let reqs = gh.requests();
    assert!(
        !reqs.is_empty() && reqs.iter().all(|r| r.contains("state=open")),
        "every issues request carries state=open: {reqs:#?}"
    );
    log.push(format!(
        "github.issues: the row filter reached the API as state=open ({} requests)",
        reqs.len()
    ));
    text_rows(&bob, "SELECT name FROM wh.customers WHERE id < 20").await;
    let sent = text_rows(
        &alice,
        "SELECT url FROM joinery.api_calls WHERE connection = 'wh' AND method = 'SQL' ORDER BY at DESC LIMIT 1",
    )
    .await;
    let sql = sent[0][0].clone().unwrap_or_default();
    assert!(sql.contains("'eu'") && sql.contains("region"), "{sql}");
    log.push(format!(
        "wh.customers: the row filter reached the database: {sql}"
    ));

    // `joinery query` (in-process) sees the same.
    let local = joinery_server::server::run_local(
        &server.shared,
        "bob",
        "SELECT count(*) FROM wh.customers",
    )
    .await
    .expect("local");
    let want = text_rows(
        &alice,
        "SELECT count(*) FROM wh.customers WHERE region = 'eu'",
    )
    .await;
    assert_eq!(local[0].rows, want);
    log.push("joinery query as bob: filtered".into());

    // Policies are listed for admins, with where they come from.
    let policies = text_rows(
        &alice,
        "SELECT schema_name, table_name, filter, applies_to, source FROM joinery.policies ORDER BY 1",
    )
    .await;
    assert_eq!(policies.len(), 2, "{policies:?}");
    println!("{}", log.join("\n"));
    pg.drop().await;
}
