//! Streaming a PostgreSQL table through Joinery, beside reading it from PostgreSQL directly.
//!
//! ```sh
//! cargo bench -p joinery-benches --bench warehouse_stream --profile bench-fast -- [rows]
//! ```
//!
//! Prints rows/s for both paths, their ratio, the peak RSS growth of the process (which hosts
//! the Joinery server) while streaming, and the time of an aggregate that runs inside
//! PostgreSQL. Needs the PostgreSQL of `JOINERY_TEST_PG` (default 127.0.0.1:5432, db `test`).

use std::time::Instant;

use joinery_benches::stream;
use joinery_tests::{TestServer, pg_url};

#[tokio::main]
async fn main() {
    let rows: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let (pg, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", pg_url()));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let schema = format!("jbench_{}", std::process::id());
    pg.batch_execute(&format!(
        "CREATE SCHEMA {schema}; CREATE TABLE {schema}.events AS \
         SELECT g AS id, g % 1000 AS account_id, md5(g::text) AS payload, now() - g * interval '1 second' AS at \
         FROM generate_series(1, {rows}) g; ANALYZE {schema}.events;"
    ))
    .await
    .unwrap_or_else(|e| panic!("setup: {e}"));
    let server = TestServer::with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[connections.wh]\nkind = \"postgres\"\nurl = \"{}\"\nschemas = [\"{schema}\"]\n",
        pg_url()
    ))
    .await;
    let joinery = server.client().await;

    let (n_pg, s_pg, _) = stream(&pg, &format!("SELECT * FROM {schema}.events")).await;
    let (n_j, s_j, rss_j) = stream(&joinery, "SELECT * FROM wh.events").await;
    assert_eq!(n_pg, n_j, "same rows both ways");
    let started = Instant::now();
    let agg = joinery
        .simple_query("SELECT account_id, count(*), max(at) FROM wh.events GROUP BY account_id")
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let s_agg = started.elapsed().as_secs_f64();

    println!("rows: {rows}");
    println!("| path | rows/s | seconds | peak RSS growth |");
    println!("|---|---|---|---|");
    println!(
        "| PostgreSQL direct | {:.0} | {s_pg:.2} | - |",
        n_pg as f64 / s_pg
    );
    println!(
        "| through Joinery (postgres connection, over the wire) | {:.0} | {s_j:.2} | {rss_j} MB |",
        n_j as f64 / s_j
    );
    println!("ratio Joinery / direct: {:.2}", s_pg / s_j);
    println!(
        "aggregate run inside PostgreSQL via Joinery ({} messages): {s_agg:.2} s",
        agg
    );
    let _ = pg
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    server.shutdown().await;
}
