//! Sessions: what a connection costs and leaves behind, and the price of every statement —
//! Joinery beside the PostgreSQL on this machine, in the same run.
//!
//! This process serves Joinery (the demo world, cache on); the load comes from separate
//! processes (`pgbench`), so this process's RSS is the server's. PostgreSQL is measured with
//! the same `pgbench` commands.
//!
//! ```sh
//! cargo bench -p joinery-server -p joinery-benches --bench sessions --profile bench-fast -- \
//!     [--cycles 10000] [--idle 500] [--seconds 10] [--soak-secs 600] [--soak-rate 100] [--json F]
//! ```
//!
//! Figures:
//! - RSS per idle connection (500 clients that connect, then wait) and what closing them gives
//!   back;
//! - `--cycles` connect / `SELECT 1` / disconnect cycles with RSS sampled every second: the
//!   RSS after them must be within 50 MB of the RSS after the first 100 (printed PASS/FAIL);
//! - connect + `SELECT 1` + disconnect per second (4 clients), pgbench with 8 clients and three
//!   constant SELECTs per transaction (prepared and simple), one client's `SELECT 1` latency,
//!   the brief's question warm, and a cached REST table;
//! - a mixed soak (`--soak-secs`) at `--soak-rate` transactions/s over REST tables, with
//!   cancels, errors and statement timeouts from a second driver: RSS and open file
//!   descriptors sampled every 10 s.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use joinery_tests::workload::{BRIEF_QUESTION, DemoServer};
use joinery_tests::{pg_url, rss_kb};
use serde_json::{Value, json};

struct Args {
    cycles: u64,
    idle: u64,
    seconds: u64,
    soak_secs: u64,
    soak_rate: u64,
    json: String,
}

fn args() -> Args {
    let mut a = Args {
        cycles: 10_000,
        idle: 500,
        seconds: 10,
        soak_secs: 600,
        soak_rate: 100,
        json: "target/bench-sessions.json".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> u64 {
            it.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match arg.as_str() {
            "--cycles" => a.cycles = num("--cycles").max(200),
            "--idle" => a.idle = num("--idle").max(1),
            "--seconds" => a.seconds = num("--seconds").max(1),
            "--soak-secs" => a.soak_secs = num("--soak-secs"),
            "--soak-rate" => a.soak_rate = num("--soak-rate").max(1),
            "--json" => a.json = it.next().expect("--json needs a path"),
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// Where pgbench connects.
#[derive(Clone)]
struct Target {
    name: &'static str,
    host: String,
    port: u16,
    user: String,
    db: String,
}

impl Target {
    fn postgres() -> Target {
        // postgres://user@host:port/db
        let url = pg_url();
        let rest = url.trim_start_matches("postgres://");
        let (user, rest) = rest.split_once('@').unwrap_or(("postgres", rest));
        let (hostport, db) = rest.split_once('/').unwrap_or((rest, "test"));
        let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
        Target {
            name: "PostgreSQL",
            host: host.to_string(),
            port: port.parse().unwrap_or(5432),
            user: user.split(':').next().unwrap_or("postgres").to_string(),
            db: db.split('?').next().unwrap_or("test").to_string(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Run {
    tps: f64,
    latency_ms: f64,
    failed: u64,
}

/// Run pgbench with `script` (written to a temp file) and `extra` flags against `t`.
fn pgbench(t: &Target, script: &str, extra: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("script.sql");
    std::fs::write(&path, script).expect("script");
    let out = Command::new("pgbench")
        .args([
            "-h",
            &t.host,
            "-p",
            &t.port.to_string(),
            "-U",
            &t.user,
            "-n",
        ])
        .arg("-f")
        .arg(&path)
        .args(extra)
        .arg(&t.db)
        .output()
        .expect("pgbench runs (apt install postgresql-client)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let field = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN)
    };
    let run = Run {
        tps: field("tps = "),
        latency_ms: field("latency average = "),
        failed: field("number of failed transactions: ") as u64,
    };
    if run.tps.is_nan() {
        eprintln!("pgbench against {} failed:\n{text}\n{err}", t.name);
    }
    run
}

/// Open file descriptors of this process.
fn fds() -> u64 {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

fn mib(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// Sample RSS every `every` until `stop`: (seconds since start, KiB).
fn sampler(
    stop: Arc<AtomicBool>,
    every: Duration,
) -> std::thread::JoinHandle<Vec<(f64, u64, u64)>> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut v = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            v.push((started.elapsed().as_secs_f64(), rss_kb(), fds()));
            std::thread::sleep(every);
        }
        v.push((started.elapsed().as_secs_f64(), rss_kb(), fds()));
        v
    })
}

const SELECT1: &str = "SELECT 1;\n";
const THREE: &str = "SELECT 1;\nSELECT 'a' || 'b';\nSELECT 2 + 3;\n";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    let mut out = serde_json::Map::new();
    let demo = DemoServer::start(42, 1, Duration::ZERO, "", "max_connections = 2000").await;
    let joinery = Target {
        name: "Joinery",
        host: "127.0.0.1".into(),
        port: demo.server.port(),
        user: "bench".into(),
        db: "joinery".into(),
    };
    let pg = Target::postgres();
    let secs = a.seconds.to_string();
    println!(
        "# Sessions and statements: Joinery (demo world, this process) vs PostgreSQL 15 (same machine)\n"
    );

    // Warm up: the first connections build shared state (descriptions, pg_catalog tables).
    pgbench(&joinery, SELECT1, &["-C", "-c", "2", "-t", "10"]);
    let base = rss_kb();

    // Idle connections: clients connect, run one statement, then wait (pgbench sleeps).
    let idle_script = "SELECT 1;\n\\sleep 8 s\n";
    let stop = Arc::new(AtomicBool::new(false));
    let samples = sampler(stop.clone(), Duration::from_millis(250));
    let n = a.idle.to_string();
    let idle = {
        let j = joinery.clone();
        std::thread::spawn(move || pgbench(&j, idle_script, &["-c", &n, "-j", "4", "-t", "1"]))
    };
    let idle_run = idle.join().expect("idle run");
    stop.store(true, Ordering::Relaxed);
    let s = samples.join().expect("samples");
    let peak = s.iter().map(|x| x.1).max().unwrap_or(base);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_close = rss_kb();
    let per_conn_kb = peak.saturating_sub(base) as f64 / a.idle as f64;
    println!("## Connections\n");
    println!("| what | Joinery | PostgreSQL 15 |\n|---|---|---|");
    println!(
        "| RSS per connection, {} held open ({} failed) | {:.0} KB (RSS {:.1} -> {:.1} MiB) | - |",
        a.idle,
        idle_run.failed,
        per_conn_kb,
        mib(base),
        mib(peak)
    );
    println!(
        "| RSS after those connections close | {:.1} MiB ({:+.1} MiB vs before they opened) | - |",
        mib(after_close),
        mib(after_close) - mib(base)
    );
    out.insert(
        "idle".into(),
        json!({"connections": a.idle, "per_connection_kb": per_conn_kb, "rss_before_mib": mib(base),
               "rss_peak_mib": mib(peak), "rss_after_close_mib": mib(after_close)}),
    );

    // Connect / query / disconnect cycles.
    pgbench(&joinery, SELECT1, &["-C", "-c", "4", "-t", "25"]);
    let after_100 = rss_kb();
    let stop = Arc::new(AtomicBool::new(false));
    let samples = sampler(stop.clone(), Duration::from_secs(1));
    let per_client = ((a.cycles - 100) / 4).to_string();
    let cyc = {
        let j = joinery.clone();
        std::thread::spawn(move || pgbench(&j, SELECT1, &["-C", "-c", "4", "-t", &per_client]))
    };
    let cycles_run = cyc.join().expect("cycles");
    stop.store(true, Ordering::Relaxed);
    let s = samples.join().expect("samples");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after_all = rss_kb();
    let max_rss = s.iter().map(|x| x.1).max().unwrap_or(after_all);
    let grew_mib = mib(after_all) - mib(after_100);
    let pass = grew_mib.abs() <= 50.0;
    let curve: Vec<String> = s
        .iter()
        .step_by((s.len() / 8).max(1))
        .map(|x| format!("{:.0}s {:.0}", x.0, mib(x.1)))
        .collect();
    println!(
        "| RSS after {} connect/`SELECT 1`/disconnect cycles | {:.1} MiB after 100, {:.1} MiB after all ({:+.1} MiB, peak {:.1}): {} | - |",
        a.cycles,
        mib(after_100),
        mib(after_all),
        grew_mib,
        mib(max_rss),
        if pass { "PASS (within 50 MB)" } else { "FAIL" }
    );
    println!("| RSS curve (MiB) | {} | - |", curve.join(", "));
    let cj = pgbench(&joinery, SELECT1, &["-C", "-c", "4", "-T", &secs]);
    let cp = pgbench(&pg, SELECT1, &["-C", "-c", "4", "-T", &secs]);
    println!(
        "| connect + `SELECT 1` + disconnect, 4 clients | {:.0} per s | {:.0} per s ({:.2}x) |",
        cj.tps,
        cp.tps,
        cj.tps / cp.tps
    );
    out.insert(
        "cycles".into(),
        json!({"cycles": a.cycles, "rss_after_100_mib": mib(after_100), "rss_after_mib": mib(after_all),
               "rss_peak_mib": mib(max_rss), "pass": pass, "failed": cycles_run.failed,
               "connect_per_s": cj.tps, "postgres_connect_per_s": cp.tps}),
    );

    // Statements.
    println!("\n## Statements\n");
    println!("| what | Joinery | PostgreSQL 15 | ratio |\n|---|---|---|---|");
    let mut stmts = serde_json::Map::new();
    let mut row = |what: &str, key: &str, j: Run, p: Option<Run>, latency: bool| {
        let (jv, pv) = if latency {
            (j.latency_ms, p.map(|p| p.latency_ms))
        } else {
            (j.tps, p.map(|p| p.tps))
        };
        let unit = if latency { "ms" } else { "tps" };
        match pv {
            Some(pv) => println!(
                "| {what} | {jv:.3} {unit} | {pv:.3} {unit} | {:.2}x |",
                if latency { pv / jv } else { jv / pv }
            ),
            None => println!("| {what} | {jv:.3} {unit} | - | - |"),
        }
        stmts.insert(
            key.into(),
            json!({"joinery": jv, "postgres": pv, "unit": unit, "failed": j.failed}),
        );
    };
    for mode in ["prepared", "simple"] {
        let j = pgbench(
            &joinery,
            THREE,
            &["-c", "8", "-j", "2", "-T", &secs, "-M", mode],
        );
        let p = pgbench(&pg, THREE, &["-c", "8", "-j", "2", "-T", &secs, "-M", mode]);
        row(
            &format!("pgbench 8 clients, 3 constant SELECTs, {mode}"),
            &format!("three_{mode}"),
            j,
            Some(p),
            false,
        );
    }
    for mode in ["prepared", "simple"] {
        let j = pgbench(&joinery, SELECT1, &["-c", "1", "-T", &secs, "-M", mode]);
        let p = pgbench(&pg, SELECT1, &["-c", "1", "-T", &secs, "-M", mode]);
        row(
            &format!("one client, `SELECT 1`, {mode} (latency)"),
            &format!("select1_{mode}"),
            j,
            Some(p),
            true,
        );
    }
    let brief = format!("{};\n", BRIEF_QUESTION.trim());
    pgbench(&joinery, &brief, &["-c", "1", "-t", "2"]);
    for mode in ["prepared", "simple"] {
        let j = pgbench(&joinery, &brief, &["-c", "1", "-T", &secs, "-M", mode]);
        row(
            &format!("the brief's question, warm cache, {mode} (latency)"),
            &format!("brief_{mode}"),
            j,
            None,
            true,
        );
    }
    let rest = "SELECT count(*) FROM github.issues WHERE state = 'open';\n";
    for mode in ["prepared", "simple"] {
        let j = pgbench(
            &joinery,
            rest,
            &["-c", "8", "-j", "2", "-T", &secs, "-M", mode],
        );
        row(
            &format!(
                "pgbench 8 clients, a cached REST table (github.issues, state = 'open'), {mode}"
            ),
            &format!("rest_{mode}"),
            j,
            None,
            false,
        );
    }
    out.insert("statements".into(), Value::Object(stmts));

    // The soak.
    if a.soak_secs > 0 {
        println!(
            "\n## Soak: {} s at {} transactions/s, 8 clients, plus cancels, errors and timeouts\n",
            a.soak_secs, a.soak_rate
        );
        let mixed = "SELECT count(*) FROM github.issues WHERE state = 'open';\n\
                     SELECT key, status FROM jira.issues WHERE project = 'PAY' LIMIT 5;\n\
                     SELECT count(*) FROM pagerduty.incidents WHERE urgency = 'high';\n\
                     SELECT name FROM salesforce.accounts ORDER BY name LIMIT 3;\n";
        let stop = Arc::new(AtomicBool::new(false));
        let samples = sampler(stop.clone(), Duration::from_secs(10));
        let port = joinery.port;
        let side_stop = stop.clone();
        // Cancels, errors and statement timeouts, on connections that come and go.
        let side = tokio::spawn(async move {
            let mut counts = (0u64, 0u64, 0u64);
            while !side_stop.load(Ordering::Relaxed) {
                let Ok((c, conn)) = tokio_postgres::connect(
                    &format!("host=127.0.0.1 port={port} user=soak dbname=joinery"),
                    tokio_postgres::NoTls,
                )
                .await
                else {
                    continue;
                };
                tokio::spawn(conn);
                if c.simple_query("SELECT 1/0").await.is_err() {
                    counts.0 += 1;
                }
                let _ = c.simple_query("SET statement_timeout = '50ms'").await;
                if c.simple_query(
                    "SELECT count(*) FROM generate_series(1, 1000000000) t(x) WHERE x % 3 = 1",
                )
                .await
                .is_err()
                {
                    counts.1 += 1;
                }
                let _ = c.simple_query("RESET statement_timeout").await;
                let token = c.cancel_token();
                let running = tokio::spawn(async move {
                    c.simple_query(
                        "SELECT count(*) FROM generate_series(1, 1000000000) t(x) WHERE x % 3 = 1",
                    )
                    .await
                    .is_err()
                });
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _ = token.cancel_query(tokio_postgres::NoTls).await;
                if running.await.unwrap_or(false) {
                    counts.2 += 1;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            counts
        });
        let j = joinery.clone();
        let rate = a.soak_rate.to_string();
        let dur = a.soak_secs.to_string();
        let soak = std::thread::spawn(move || {
            pgbench(
                &j,
                mixed,
                &[
                    "-c", "8", "-j", "2", "-R", &rate, "-T", &dur, "-M", "prepared",
                ],
            )
        });
        let soak_run = tokio::task::spawn_blocking(move || soak.join().expect("soak"))
            .await
            .expect("join");
        stop.store(true, Ordering::Relaxed);
        let (errors, timeouts, cancels) = side.await.unwrap_or_default();
        let s = tokio::task::spawn_blocking(move || samples.join().expect("samples"))
            .await
            .expect("join");
        // Skip the first minute (caches and pools filling up) when judging flatness.
        let settled: Vec<_> = s.iter().filter(|x| x.0 >= 60.0).collect();
        let first = settled.first().map(|x| (x.1, x.2)).unwrap_or((0, 0));
        let last = settled.last().map(|x| (x.1, x.2)).unwrap_or((0, 0));
        let max = settled.iter().map(|x| x.1).max().unwrap_or(0);
        let min = settled.iter().map(|x| x.1).min().unwrap_or(0);
        let max_fd = settled.iter().map(|x| x.2).max().unwrap_or(0);
        println!("| what | value |\n|---|---|");
        println!(
            "| transactions | {:.1} per s, {} failed |",
            soak_run.tps, soak_run.failed
        );
        println!(
            "| errors / timeouts / cancels from the side driver | {errors} / {timeouts} / {cancels} |"
        );
        println!(
            "| RSS after 1 min -> end (min, max) | {:.1} -> {:.1} MiB ({:.1}, {:.1}) |",
            mib(first.0),
            mib(last.0),
            mib(min),
            mib(max)
        );
        println!(
            "| open file descriptors after 1 min -> end (max) | {} -> {} ({max_fd}) |",
            first.1, last.1
        );
        let curve: Vec<String> = s
            .iter()
            .step_by((s.len() / 12).max(1))
            .map(|x| format!("{:.0}s {:.0} MiB/{} fd", x.0, mib(x.1), x.2))
            .collect();
        println!("| curve | {} |", curve.join(", "));
        out.insert(
            "soak".into(),
            json!({"seconds": a.soak_secs, "rate": a.soak_rate, "tps": soak_run.tps, "failed": soak_run.failed,
                   "errors": errors, "timeouts": timeouts, "cancels": cancels,
                   "rss_first_mib": mib(first.0), "rss_last_mib": mib(last.0), "rss_min_mib": mib(min), "rss_max_mib": mib(max),
                   "fd_first": first.1, "fd_last": last.1, "fd_max": max_fd,
                   "samples": s.iter().map(|x| json!([x.0, x.1, x.2])).collect::<Vec<_>>()}),
        );
    }
    let _ = std::fs::write(&a.json, Value::Object(out).to_string());
    println!("\nJSON: {}", a.json);
}
