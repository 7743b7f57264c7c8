//! The benchmark suite: the workload's queries over the demo world, cold and warm, beside the
//! physical limit; 64 concurrent clients; the dlt + DuckDB alternative; and the wire against
//! PostgreSQL. Prints Markdown tables and writes the figures as JSON.
//!
//! ```sh
//! scripts/bench.sh                      # = the line below with the defaults
//! cargo bench -p joinery-benches --bench suite --profile bench-fast -- \
//!     --scale 1 --api-latency 50 --runs 5 --json target/bench.json [--skip-dlt] [--skip-wire]
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use joinery_benches::stream;
use joinery_tests::workload::{BRIEF_QUESTION, DemoServer, QUERIES};
use joinery_tests::{TestServer, pg_url, text_rows};
use serde_json::{Value, json};

struct Args {
    scale: u64,
    latency_ms: u64,
    runs: usize,
    json: String,
    skip_dlt: bool,
    skip_wire: bool,
    wire_rows: u64,
}

fn args() -> Args {
    let mut a = Args {
        scale: 1,
        latency_ms: 50,
        runs: 5,
        json: "target/bench.json".into(),
        skip_dlt: false,
        skip_wire: false,
        wire_rows: 1_000_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match arg.as_str() {
            "--scale" => a.scale = num("--scale").max(1),
            "--api-latency" => a.latency_ms = num("--api-latency"),
            "--runs" => a.runs = num("--runs").max(1) as usize,
            "--wire-rows" => a.wire_rows = num("--wire-rows").max(1),
            "--json" => a.json = it.next().expect("--json needs a path"),
            "--skip-dlt" => a.skip_dlt = true,
            "--skip-wire" => a.skip_wire = true,
            // `cargo bench` passes `--bench` to harness-less benches.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

fn percentile(v: &[f64], q: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return 0.0;
    }
    s[(((s.len() - 1) as f64) * q).round() as usize]
}

async fn number(client: &tokio_postgres::Client, sql: &str) -> f64 {
    text_rows(client, sql).await[0][0]
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Response bytes received so far, over every connection.
async fn bytes_so_far(admin: &tokio_postgres::Client) -> f64 {
    number(
        admin,
        "SELECT coalesce(sum(bytes), 0) FROM joinery.connector_stats",
    )
    .await
}

struct Measured {
    ms: Vec<f64>,
    calls: Vec<usize>,
    bytes: Vec<f64>,
    rows: usize,
}

/// Run `sql` `runs` times on `client`; API calls are what the fakes received.
async fn measure(
    demo: &DemoServer,
    client: &tokio_postgres::Client,
    admin: &tokio_postgres::Client,
    sql: &str,
    runs: usize,
) -> Measured {
    let mut m = Measured {
        ms: Vec::new(),
        calls: Vec::new(),
        bytes: Vec::new(),
        rows: 0,
    };
    for _ in 0..runs {
        let (calls0, bytes0) = (demo.total_requests(), bytes_so_far(admin).await);
        let t = Instant::now();
        let rows = client
            .simple_query(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        m.ms.push(t.elapsed().as_secs_f64() * 1000.0);
        m.calls.push(demo.total_requests() - calls0);
        m.bytes.push(bytes_so_far(admin).await - bytes0);
        m.rows = rows;
    }
    m
}

async fn query_set(a: &Args, out: &mut BTreeMap<&'static str, Value>) {
    let latency = Duration::from_millis(a.latency_ms);
    let demo = DemoServer::start(42, a.scale, latency, "", "").await;
    let cold = demo.server.client().await;
    cold.simple_query("SET joinery.cache = off")
        .await
        .expect("cache off");
    let warm = demo.server.client().await;
    let admin = demo.server.client().await;
    println!(
        "\n## Query set: demo world scale {}, API latency {} ms, {} runs each\n",
        a.scale, a.latency_ms, a.runs
    );
    println!(
        "| query | cold p50 ms | cold p95 ms | warm p50 ms | warm p95 ms | API calls (cold) | minimum | physical limit ms | p50 / limit | KiB fetched | rows |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rows = Vec::new();
    for q in QUERIES {
        let c = measure(&demo, &cold, &admin, q.sql, a.runs).await;
        // Warm: one read fills the cache, then the timed runs.
        let _ = measure(&demo, &warm, &admin, q.sql, 1).await;
        let w = measure(&demo, &warm, &admin, q.sql, a.runs).await;
        let min_calls = number(&admin, q.min_calls_sql).await;
        let chain = match q.chain_sql {
            Some(s) => number(&admin, s).await,
            None => min_calls,
        };
        let limit_ms = chain * a.latency_ms as f64;
        let cold_p50 = percentile(&c.ms, 0.5);
        let ratio = if limit_ms > 0.0 {
            format!("{:.2}", cold_p50 / limit_ms)
        } else {
            "-".into()
        };
        let calls = c.calls.iter().max().copied().unwrap_or(0);
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.1} | {} | {} | {:.0} | {} | {:.0} | {} |",
            q.name,
            cold_p50,
            percentile(&c.ms, 0.95),
            percentile(&w.ms, 0.5),
            percentile(&w.ms, 0.95),
            calls,
            min_calls,
            limit_ms,
            ratio,
            percentile(&c.bytes, 0.5) / 1024.0,
            c.rows
        );
        rows.push(json!({
            "query": q.name,
            "cold_ms": c.ms, "warm_ms": w.ms,
            "cold_p50_ms": cold_p50, "cold_p95_ms": percentile(&c.ms, 0.95),
            "warm_p50_ms": percentile(&w.ms, 0.5), "warm_p95_ms": percentile(&w.ms, 0.95),
            "api_calls_cold": c.calls, "api_calls_warm": w.calls,
            "min_calls": min_calls, "sequential_round_trips": chain,
            "physical_limit_ms": limit_ms,
            "bytes_cold": percentile(&c.bytes, 0.5), "rows": c.rows,
        }));
    }
    out.insert("query_set", Value::Array(rows));
}

/// 64 clients at once: the same cold query (coalesced), then 64 different ones under a
/// configured rate limit.
async fn concurrency(a: &Args, out: &mut BTreeMap<&'static str, Value>) {
    let latency = Duration::from_millis(a.latency_ms);
    // One cold run alone, on its own world, for the reference call count.
    let alone = DemoServer::start(42, a.scale, latency, "", "").await;
    let startup = alone.total_requests();
    let c = alone.server.client().await;
    let _ = text_rows(&c, BRIEF_QUESTION).await;
    let one = alone.total_requests() - startup;
    drop(c);
    drop(alone);

    let demo = DemoServer::start(42, a.scale, latency, "", "").await;
    let startup = demo.total_requests();
    let mut clients = Vec::new();
    for _ in 0..64 {
        clients.push(demo.server.client().await);
    }
    let t = Instant::now();
    let answers: Vec<_> = futures::future::join_all(
        clients
            .iter()
            .map(|c| async move { text_rows(c, BRIEF_QUESTION).await }),
    )
    .await;
    let same_ms = t.elapsed().as_secs_f64() * 1000.0;
    let all_equal = answers.windows(2).all(|w| w[0] == w[1]);
    let same_calls = demo.total_requests() - startup;
    drop(clients);
    drop(demo);

    // 64 different Jira queries (one JQL each) against a 20 requests/s limit.
    let limit = 20;
    let demo = DemoServer::start(42, a.scale, latency, &format!("rate_limit = {limit}"), "").await;
    let startup = demo.total_requests();
    let mut clients = Vec::new();
    for _ in 0..64 {
        clients.push(demo.server.client().await);
    }
    let t = Instant::now();
    let results: Vec<_> =
        futures::future::join_all(clients.iter().enumerate().map(|(i, c)| async move {
            c.simple_query(&format!(
                "SELECT key, summary FROM jira.issues WHERE project = 'PAY' AND key = 'PAY-{}'",
                i + 1
            ))
            .await
        }))
        .await;
    let diff_ms = t.elapsed().as_secs_f64() * 1000.0;
    let failed = results.iter().filter(|r| r.is_err()).count();
    let admin = demo.server.client().await;
    let refused = number(
        &admin,
        "SELECT count(*) FROM joinery.api_calls WHERE connection = 'jira' AND status = 429",
    )
    .await;
    let peak = number(
        &admin,
        "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM joinery.api_calls \
         WHERE connection = 'jira' AND NOT cache_hit \
         GROUP BY date_trunc('second', at)) s",
    )
    .await;
    println!("\n## 64 concurrent clients\n");
    println!("| case | wall ms | API calls | reference | outcome |");
    println!("|---|---|---|---|---|");
    println!(
        "| same cold brief question x64 | {same_ms:.0} | {same_calls} | {one} (one query alone) | {} |",
        if all_equal {
            "64 equal answers"
        } else {
            "ANSWERS DIFFER"
        }
    );
    println!(
        "| 64 different Jira queries, limit {limit}/s | {diff_ms:.0} | {} | peak {peak} req in one second | {} failed, {refused} 429s seen by Joinery |",
        demo.total_requests() - startup,
        failed
    );
    out.insert(
        "concurrency",
        json!({
            "same_query": {"clients": 64, "wall_ms": same_ms, "api_calls": same_calls, "one_query_calls": one, "answers_equal": all_equal},
            "different_queries": {"clients": 64, "rate_limit_per_s": limit, "wall_ms": diff_ms, "api_calls": demo.total_requests() - startup, "failed": failed, "http_429": refused, "peak_requests_per_second": peak},
        }),
    );
}

/// The JOINERY_DEMO document compare.py reads: each fake's URL and the demo credentials, taken
/// from the world's own connection specs.
fn dlt_input(demo: &DemoServer, warehouse: &std::path::Path) -> Value {
    let mut v = json!({"warehouse_dir": warehouse.display().to_string()});
    for c in &demo.world.connections {
        let opt = |k: &str| c.options.get(k).cloned().unwrap_or(Value::Null);
        let base = c.base_url.clone().unwrap_or_default();
        match c.name.as_str() {
            "github" => {
                v["github"] = json!({"base_url": base, "token": opt("token"), "repositories": opt("repositories")})
            }
            "jira" => {
                v["jira"] =
                    json!({"base_url": base, "user": opt("username"), "token": opt("password")})
            }
            "pagerduty" => v["pagerduty"] = json!({"base_url": base, "token": opt("token")}),
            "salesforce" => {
                v["salesforce"] = json!({"base_url": base, "client_id": opt("client_id"),
                    "client_secret": opt("client_secret"), "refresh_token": opt("refresh_token")})
            }
            _ => {}
        }
    }
    v
}

async fn dlt(a: &Args, out: &mut BTreeMap<&'static str, Value>) {
    let latency = Duration::from_millis(a.latency_ms);
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let setup = std::process::Command::new("bash")
        .arg(root.join("dlt/setup.sh"))
        .stderr(std::process::Stdio::inherit())
        .output();
    let python = match setup {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .trim()
            .to_string(),
        other => {
            println!("\n## dlt + DuckDB: skipped (setup failed: {other:?})");
            return;
        }
    };
    // Joinery: a fresh server, first connection, the question once.
    let demo = DemoServer::start(42, a.scale, latency, "", "").await;
    let startup = demo.total_requests();
    let t = Instant::now();
    let client = demo.server.client().await;
    let answer = text_rows(&client, BRIEF_QUESTION).await;
    let joinery_s = t.elapsed().as_secs_f64();
    let joinery_calls = demo.total_requests() - startup;
    drop(client);
    drop(demo);

    // dlt + DuckDB on a fresh world of its own.
    let demo = DemoServer::start(42, a.scale, latency, "", "").await;
    let warehouse = demo
        .world
        .connections
        .iter()
        .find(|c| c.name == "warehouse")
        .and_then(|c| c.options.get("path"))
        .and_then(Value::as_str)
        .map(std::path::PathBuf::from)
        .expect("warehouse path");
    let input = dlt_input(&demo, &warehouse);
    let before = demo.total_requests();
    let t = Instant::now();
    let run = tokio::process::Command::new(&python)
        .arg(root.join("dlt/compare.py"))
        .env("JOINERY_DEMO", input.to_string())
        .stderr(std::process::Stdio::null())
        .output()
        .await;
    let dlt_wall = t.elapsed().as_secs_f64();
    let dlt_calls = demo.total_requests() - before;
    let report: Value = match run {
        Ok(o) if o.status.success() => {
            serde_json::from_slice(o.stdout.trim_ascii()).unwrap_or(Value::Null)
        }
        other => {
            println!("\n## dlt + DuckDB: failed ({other:?})");
            return;
        }
    };
    let dlt_answer = &report["answer"];
    let same = answer.first().is_some_and(|r| {
        let n = |i: usize| r[i].as_deref().and_then(|v| v.parse::<f64>().ok());
        [
            "prs_this_quarter",
            "prs_last_quarter",
            "points_this_quarter",
            "points_last_quarter",
            "open_p0_incidents",
        ]
        .iter()
        .enumerate()
        .all(|(i, k)| n(i) == dlt_answer[*k].as_f64())
    });
    println!("\n## The brief's question: Joinery vs dlt + DuckDB (fresh start, first answer)\n");
    println!("| | time to first answer s | API calls | notes |");
    println!("|---|---|---|---|");
    println!(
        "| Joinery (cold server, one statement) | {joinery_s:.2} | {joinery_calls} (+{startup} at start-up: catalog discovery, OAuth) | filters pushed into each API |"
    );
    println!(
        "| dlt {} + DuckDB {} (load, then query) | {dlt_wall:.2} (load {:.2}, query {:.3}, imports {:.2}) | {dlt_calls} | full loads of 4 tables |",
        report["dlt_version"].as_str().unwrap_or("?"),
        report["duckdb_version"].as_str().unwrap_or("?"),
        report["load_seconds"].as_f64().unwrap_or(0.0),
        report["query_seconds"].as_f64().unwrap_or(0.0),
        report["import_seconds"].as_f64().unwrap_or(0.0),
    );
    println!("answers {}", if same { "agree" } else { "DIFFER" });
    out.insert(
        "dlt_duckdb",
        json!({"joinery_seconds": joinery_s, "joinery_api_calls": joinery_calls,
               "dlt_wall_seconds": dlt_wall, "dlt_api_calls": dlt_calls, "dlt_report": report,
               "answers_agree": same}),
    );
}

/// The same rows from a local file through Joinery and from PostgreSQL directly, and an
/// aggregate over them.
async fn wire(a: &Args, out: &mut BTreeMap<&'static str, Value>) {
    let rows = a.wire_rows;
    let (pg, conn) = match tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await {
        Ok(x) => x,
        Err(e) => {
            println!("\n## Wire: skipped (PostgreSQL at {}: {e})", pg_url());
            return;
        }
    };
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let schema = format!("jbench_{}", std::process::id());
    let rows_sql = |n: u64| {
        format!(
            "SELECT g AS id, g % 1000 AS account_id, md5(g::text) AS payload, (g % 10000) * 1.5 AS amount \
             FROM generate_series(1, {n}) g"
        )
    };
    pg.batch_execute(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.events AS {}; ANALYZE {schema}.events;",
        rows_sql(rows)
    ))
    .await
    .unwrap_or_else(|e| panic!("setup: {e}"));
    // The same rows as a Parquet file, written by PostgreSQL's answer through DataFusion.
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("events.parquet");
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.sql(&format!(
        "COPY (SELECT value AS id, value % 1000 AS account_id, md5(CAST(value AS VARCHAR)) AS payload, \
         CAST(value % 10000 AS DOUBLE) * 1.5 AS amount FROM generate_series(1, {rows})) TO '{}' STORED AS PARQUET",
        file.display()
    ))
    .await
    .expect("copy plan")
    .collect()
    .await
    .expect("parquet written");
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.bench]\nkind = \"files\"\npath = \"{}\"\n",
        dir.path().display()
    ))
    .await;
    let joinery = server.client().await;
    let (n_pg, s_pg, _) = stream(&pg, &format!("SELECT * FROM {schema}.events")).await;
    let (n_j, s_j, rss_j) = stream(&joinery, "SELECT * FROM bench.events").await;
    let agg =
        "SELECT account_id % 10 AS bucket, count(*), sum(amount) FROM bench.events GROUP BY 1";
    let mut agg_ms = Vec::new();
    for _ in 0..a.runs {
        let t = Instant::now();
        let _ = text_rows(&joinery, agg).await;
        agg_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let mut pg_agg_ms = Vec::new();
    for _ in 0..a.runs {
        let t = Instant::now();
        let _ = pg
            .simple_query(&format!(
                "SELECT account_id % 10 AS bucket, count(*), sum(amount) FROM {schema}.events GROUP BY 1"
            ))
            .await;
        pg_agg_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = pg
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    println!(
        "\n## Wire: {rows} rows streamed to a client (tokio-postgres), and an aggregate over them\n"
    );
    println!("| path | rows | rows/s | seconds | peak RSS growth |");
    println!("|---|---|---|---|---|");
    println!(
        "| PostgreSQL 15 direct (heap table) | {n_pg} | {:.0} | {s_pg:.2} | - |",
        n_pg as f64 / s_pg
    );
    println!(
        "| Joinery (Parquet file, over the wire) | {n_j} | {:.0} | {s_j:.2} | {rss_j} MiB |",
        n_j as f64 / s_j
    );
    println!(
        "rows/s ratio Joinery / PostgreSQL: {:.2}; GROUP BY over {rows} rows: Joinery p50 {:.0} ms, PostgreSQL p50 {:.0} ms",
        (n_j as f64 / s_j) / (n_pg as f64 / s_pg),
        percentile(&agg_ms, 0.5),
        percentile(&pg_agg_ms, 0.5)
    );
    out.insert(
        "wire",
        json!({"rows": rows, "postgres_rows_per_s": n_pg as f64 / s_pg, "joinery_rows_per_s": n_j as f64 / s_j,
               "joinery_peak_rss_growth_mib": rss_j, "aggregate_joinery_ms": agg_ms, "aggregate_postgres_ms": pg_agg_ms}),
    );
    server.shutdown().await;
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(|l| l.to_string()))
        .unwrap_or_default();
    json!({"cpu": cpu, "cores": cores, "memory": mem})
}

#[tokio::main]
async fn main() {
    let a = args();
    let mut out = BTreeMap::new();
    let m = machine();
    println!(
        "# Joinery benchmarks\n\nmachine: {} ({} cores), {}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memory"].as_str().unwrap_or("?")
    );
    out.insert("machine", m);
    out.insert(
        "settings",
        json!({"scale": a.scale, "api_latency_ms": a.latency_ms, "runs": a.runs}),
    );
    query_set(&a, &mut out).await;
    concurrency(&a, &mut out).await;
    if !a.skip_dlt {
        dlt(&a, &mut out).await;
    }
    if !a.skip_wire {
        wire(&a, &mut out).await;
    }
    let text = serde_json::to_string_pretty(&out).unwrap_or_default();
    match std::fs::write(&a.json, text) {
        Ok(()) => println!("\nfigures written to {}", a.json),
        Err(e) => println!("\ncannot write {}: {e}", a.json),
    }
}
