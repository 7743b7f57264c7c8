//! The protocol: simple and extended queries, errors and recovery, session commands,
//! transactions.

use joinery_tests::{TestServer, sqlstate, text_rows};
use tokio_postgres::SimpleQueryMessage;

#[tokio::test]
async fn simple_query_and_startup_parameters() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let rows = text_rows(&c, "SELECT 1, 'a'::text, NULL::int").await;
    assert_eq!(rows, vec![vec![Some("1".into()), Some("a".into()), None]]);
    let v = text_rows(&c, "SELECT version()").await;
    let v = v[0][0].clone().unwrap_or_default();
    assert!(v.starts_with("PostgreSQL 16.4 (Joinery "), "{v}");
    let rows = text_rows(&c, "SHOW server_version").await;
    assert_eq!(rows[0][0].as_deref(), Some("16.4"));
    let rows = text_rows(
        &c,
        "SELECT current_database(), current_user, current_schema()",
    )
    .await;
    assert_eq!(
        rows[0],
        vec![
            Some("joinery".into()),
            Some("tester".into()),
            Some("public".into())
        ]
    );
    let pid = text_rows(&c, "SELECT pg_backend_pid()").await;
    assert!(
        pid[0][0]
            .as_deref()
            .and_then(|p| p.parse::<i32>().ok())
            .is_some()
    );
}

#[tokio::test]
async fn postgres_column_names_and_types() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let stmt = c
        .prepare("SELECT 1, 1 + 1 AS two, count(*), max(id), 1.5, 'x', now() FROM demo.orders")
        .await
        .expect("prepare");
    let names: Vec<&str> = stmt.columns().iter().map(|c| c.name()).collect();
    assert_eq!(
        names,
        vec![
            "?column?", "two", "count", "max", "?column?", "?column?", "now"
        ]
    );
    let oids: Vec<u32> = stmt.columns().iter().map(|c| c.type_().oid()).collect();
    // int4, int8 (Postgres says int4 for `1 + 1`; Joinery keeps literal-only arithmetic in
    // int8 because DataFusion wraps on overflow instead of raising 22003), int8, int8,
    // numeric, text, timestamptz
    assert_eq!(oids, vec![23, 20, 20, 20, 1700, 25, 1184]);
}

#[tokio::test]
async fn multiple_statements_and_empty_query() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let msgs = c
        .simple_query("SELECT 1; SELECT 2, 3;")
        .await
        .expect("multi");
    let complete: Vec<u64> = msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::CommandComplete(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(complete, vec![1, 1]);
    let msgs = c.simple_query("").await.expect("empty");
    assert!(
        msgs.iter()
            .all(|m| !matches!(m, SimpleQueryMessage::Row(_)))
    );
    let msgs = c.simple_query(" ; ; ").await.expect("only semicolons");
    assert!(
        msgs.iter()
            .all(|m| !matches!(m, SimpleQueryMessage::Row(_)))
    );
}

#[tokio::test]
async fn extended_protocol_with_inferred_parameters() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    // tokio-postgres sends no parameter types: the server infers them from the SQL.
    let stmt = c
        .prepare("SELECT id, name FROM demo.customers WHERE id = $1 AND region <> $2")
        .await
        .expect("prepare");
    let params: Vec<u32> = stmt.params().iter().map(|t| t.oid()).collect();
    assert_eq!(params, vec![20, 25]);
    let rows = c.query(&stmt, &[&7i64, &"nowhere"]).await.expect("query");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), 7);
    // Re-executing a named statement with other values.
    let rows = c.query(&stmt, &[&8i64, &"nowhere"]).await.expect("again");
    assert_eq!(rows[0].get::<_, i64>(0), 8);
    // An unconstrained parameter is text, like Postgres.
    let rows = c
        .query("SELECT $1 AS v", &[&"hi"])
        .await
        .expect("text param");
    assert_eq!(rows[0].get::<_, &str>("v"), "hi");
    // Declared types from the client win.
    let stmt = c
        .prepare_typed(
            "SELECT $1::int4 + 1 AS n",
            &[tokio_postgres::types::Type::INT4],
        )
        .await
        .expect("typed");
    let rows = c.query(&stmt, &[&41i32]).await.expect("typed query");
    assert_eq!(rows[0].get::<_, i32>("n"), 42);
}

#[tokio::test]
async fn portal_row_limits_stream_in_chunks() {
    let s = TestServer::demo().await;
    let mut c = s.client().await;
    let tx = c.transaction().await.expect("begin");
    let stmt = tx
        .prepare("SELECT id FROM demo.orders ORDER BY id")
        .await
        .expect("prepare");
    let portal = tx.bind(&stmt, &[]).await.expect("bind");
    let first = tx.query_portal(&portal, 100).await.expect("first chunk");
    let second = tx.query_portal(&portal, 100).await.expect("second chunk");
    assert_eq!(first.len(), 100);
    assert_eq!(first[0].get::<_, i64>(0), 1);
    assert_eq!(second[0].get::<_, i64>(0), 101);
    let mut total = first.len() + second.len();
    loop {
        let more = tx.query_portal(&portal, 100).await.expect("chunk");
        if more.is_empty() {
            break;
        }
        total += more.len();
    }
    assert_eq!(total, 500);
    tx.commit().await.expect("commit");
}

#[tokio::test]
async fn errors_carry_sqlstate_and_session_recovers() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let cases = [
        ("SELEC 1", "42601"),
        ("SELECT * FROM demo.nope", "42P01"),
        ("SELECT nope FROM demo.orders", "42703"),
        ("SELECT frobnicate(1)", "42883"),
        ("SELECT 1/0", "22012"),
        ("SELECT 'abc'::int", "22P02"),
        ("CREATE TABLE t (x int)", "25006"),
        ("SHOW no_such_setting", "42704"),
        ("SET no_such_setting = 1", "42704"),
        ("SET TimeZone = 'Mars/Olympus'", "22023"),
        ("DEALLOCATE nothing_here", "26000"),
    ];
    for (sql, want) in cases {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert_eq!(sqlstate(&e), want, "{sql}: {e}");
        // Same through the extended protocol, where the statement can be parsed.
        if let Err(e) = c.query(sql, &[]).await {
            assert_eq!(sqlstate(&e), want, "extended {sql}: {e}");
        }
        // The session is still usable.
        assert_eq!(
            text_rows(&c, "SELECT 42").await[0][0].as_deref(),
            Some("42")
        );
    }
}

#[tokio::test]
async fn set_show_reset_and_parameter_status() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    for (set, show, want) in [
        (
            "SET search_path TO demo, public",
            "SHOW search_path",
            "demo, public",
        ),
        (
            "SET client_encoding = 'UTF8'",
            "SHOW client_encoding",
            "UTF8",
        ),
        ("SET DateStyle = 'ISO, MDY'", "SHOW DateStyle", "ISO, MDY"),
        (
            "SET TIME ZONE 'Europe/Paris'",
            "SHOW TimeZone",
            "Europe/Paris",
        ),
        (
            "SET application_name = 'tests'",
            "SHOW application_name",
            "tests",
        ),
        ("SET extra_float_digits = 3", "SHOW extra_float_digits", "3"),
        (
            "SET statement_timeout = '5s'",
            "SHOW statement_timeout",
            "5000",
        ),
        ("SET joinery.cache = 'off'", "SHOW joinery.cache", "off"),
    ] {
        c.simple_query(set)
            .await
            .unwrap_or_else(|e| panic!("{set}: {e}"));
        assert_eq!(
            text_rows(&c, show).await[0][0].as_deref(),
            Some(want),
            "{show}"
        );
    }
    // search_path decides what unqualified names mean.
    let n = text_rows(&c, "SELECT count(*) FROM customers").await;
    assert_eq!(n[0][0].as_deref(), Some("50"));
    // TimeZone decides how timestamptz is written.
    let t = text_rows(
        &c,
        "SELECT c_timestamptz FROM demo.types WHERE c_int32 = -32",
    )
    .await;
    assert_eq!(t[0][0].as_deref(), Some("2024-03-10 11:34:56.123456+01"));
    let t = text_rows(&c, "SELECT current_setting('TimeZone')").await;
    assert_eq!(t[0][0].as_deref(), Some("Europe/Paris"));
    c.simple_query("RESET ALL").await.expect("reset");
    assert_eq!(
        text_rows(&c, "SHOW TimeZone").await[0][0].as_deref(),
        Some("UTC")
    );
    assert_eq!(
        text_rows(&c, "SHOW transaction isolation level").await[0][0].as_deref(),
        Some("read committed")
    );
    assert_eq!(
        text_rows(&c, "SHOW standard_conforming_strings").await[0][0].as_deref(),
        Some("on")
    );
    let all = text_rows(&c, "SHOW ALL").await;
    assert!(all.iter().any(|r| r[0].as_deref() == Some("TimeZone")));
    c.simple_query("DISCARD ALL").await.expect("discard");
}

#[tokio::test]
async fn transactions_track_status_like_postgres() {
    let s = TestServer::demo().await;
    let mut c = s.client().await;
    c.simple_query("BEGIN").await.expect("begin");
    assert!(c.simple_query("SELECT nope").await.is_err());
    // In a failed transaction everything but ROLLBACK/COMMIT is refused with 25P02.
    let e = c.simple_query("SELECT 1").await.expect_err("aborted");
    assert_eq!(sqlstate(&e), "25P02");
    let e = c
        .query("SELECT 1", &[])
        .await
        .expect_err("aborted extended");
    assert_eq!(sqlstate(&e), "25P02");
    let msgs = c.simple_query("ROLLBACK").await.expect("rollback");
    assert!(!msgs.is_empty());
    assert_eq!(text_rows(&c, "SELECT 1").await[0][0].as_deref(), Some("1"));
    // tokio-postgres' transaction API (extended protocol BEGIN/COMMIT).
    let tx = c.transaction().await.expect("tx");
    let r = tx
        .query_one("SELECT count(*) FROM demo.orders", &[])
        .await
        .expect("in tx");
    assert_eq!(r.get::<_, i64>(0), 500);
    tx.commit().await.expect("commit");
    for sql in [
        "START TRANSACTION READ ONLY",
        "SAVEPOINT a",
        "RELEASE SAVEPOINT a",
        "COMMIT",
    ] {
        c.simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let e = c
        .simple_query("SAVEPOINT outside")
        .await
        .expect_err("no tx");
    assert_eq!(sqlstate(&e), "25P01");
}

#[tokio::test]
async fn read_only_engine_and_system_schema() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let rows = text_rows(
        &c,
        "SELECT name, kind, table_count FROM joinery.connections",
    )
    .await;
    assert_eq!(
        rows,
        vec![vec![
            Some("demo".into()),
            Some("demo".into()),
            Some("3".into())
        ]]
    );
    let rows = text_rows(
        &c,
        "SELECT description FROM joinery.columns WHERE schema_name = 'demo' AND table_name = 'customers' AND column_name = 'arr'",
    )
    .await;
    assert_eq!(
        rows[0][0].as_deref(),
        Some("Annual recurring revenue in USD")
    );
    for sql in [
        "INSERT INTO demo.orders VALUES (1)",
        "CREATE VIEW v AS SELECT 1",
        "DROP TABLE demo.orders",
    ] {
        let e = c.simple_query(sql).await.expect_err(sql);
        assert!(
            ["25006", "42601", "0A000", "42P01"].contains(&sqlstate(&e).as_str()),
            "{sql}: {e}"
        );
    }
}

#[tokio::test]
async fn cross_schema_join() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let rows = text_rows(
        &c,
        "SELECT c.region, count(*) AS orders, round(sum(o.amount)::numeric, 2) AS total \
         FROM demo.orders o JOIN demo.customers c ON c.id = o.customer_id \
         WHERE o.status = 'paid' GROUP BY c.region ORDER BY c.region",
    )
    .await;
    assert_eq!(rows.len(), 4);
    let total: i64 = rows
        .iter()
        .map(|r| {
            r[1].as_deref()
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or(0)
        })
        .sum();
    let paid = text_rows(&c, "SELECT count(*) FROM demo.orders WHERE status = 'paid'").await;
    assert_eq!(Some(total.to_string()), paid[0][0]);
}

#[tokio::test]
async fn literal_typing_survives_subqueries_and_unions() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    let rows = c
        .query("SELECT * FROM (SELECT 1 AS id, now() AS ts) t", &[])
        .await
        .expect("subquery with narrowed literal");
    assert_eq!(rows[0].get::<_, i32>("id"), 1);
    let rows = c
        .query("SELECT 1 AS n UNION ALL SELECT 2", &[])
        .await
        .expect("union");
    // Whatever type Describe announces is the type the rows carry.
    let mut ns: Vec<i64> = rows
        .iter()
        .map(|r| match r.columns()[0].type_().oid() {
            23 => i64::from(r.get::<_, i32>(0)),
            _ => r.get::<_, i64>(0),
        })
        .collect();
    ns.sort();
    assert_eq!(ns, vec![1, 2]);
    // Arithmetic on literals must not wrap around in 32 bits.
    let r = text_rows(&c, "SELECT 100000 * 100000").await;
    assert_eq!(r[0][0].as_deref(), Some("10000000000"));
    let e = c
        .prepare("SELECT $70000")
        .await
        .expect_err("too many parameters");
    assert_eq!(sqlstate(&e), "54000");
}

#[tokio::test]
async fn transaction_commands_in_one_query_string() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    c.simple_query("BEGIN; SAVEPOINT a; RELEASE SAVEPOINT a; SELECT 1; COMMIT")
        .await
        .expect("BEGIN and SAVEPOINT in one string");
    assert_eq!(text_rows(&c, "SELECT 2").await[0][0].as_deref(), Some("2"));
}

#[tokio::test]
async fn rollback_to_savepoint_recovers_a_failed_transaction() {
    let s = TestServer::demo().await;
    let c = s.client().await;
    c.simple_query("BEGIN; SAVEPOINT a").await.expect("begin");
    assert!(c.simple_query("SELECT * FROM demo.nope").await.is_err());
    assert_eq!(
        sqlstate(&c.simple_query("SELECT 1").await.expect_err("aborted")),
        "25P02"
    );
    c.simple_query("ROLLBACK TO SAVEPOINT a")
        .await
        .expect("rollback to");
    assert_eq!(text_rows(&c, "SELECT 3").await[0][0].as_deref(), Some("3"));
    c.simple_query("COMMIT").await.expect("commit");
    // An error while rows stream after BEGIN in the same string fails the transaction.
    assert!(
        c.simple_query("BEGIN; SELECT 1/(c_int32 + 32) FROM demo.types")
            .await
            .is_err()
    );
    assert_eq!(
        sqlstate(&c.simple_query("SELECT 1").await.expect_err("failed tx")),
        "25P02"
    );
    c.simple_query("ROLLBACK").await.expect("rollback");
}
