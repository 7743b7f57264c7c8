//! Benchmarks live in `benches/`; this crate carries them and what they share.

use std::time::Instant;

use futures::StreamExt;
use joinery_tests::rss_kb;

/// Stream every row of `sql` to this client; (rows, seconds, peak RSS growth of this process
/// in MiB while streaming — the process that hosts the Joinery server).
pub async fn stream(client: &tokio_postgres::Client, sql: &str) -> (u64, f64, u64) {
    let before = rss_kb();
    let mut peak = before;
    let started = Instant::now();
    let rows = client
        .query_raw(sql, std::iter::empty::<i32>())
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    futures::pin_mut!(rows);
    let mut n = 0u64;
    while let Some(row) = rows.next().await {
        if let Err(e) = row {
            panic!("{sql}: {e}");
        }
        n += 1;
        if n.is_multiple_of(50_000) {
            peak = peak.max(rss_kb());
        }
    }
    (
        n,
        started.elapsed().as_secs_f64(),
        peak.saturating_sub(before) / 1024,
    )
}
