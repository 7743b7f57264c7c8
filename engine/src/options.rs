//! Joinery's per-session options, stored in DataFusion's config so scans can read them:
//! `SET joinery.cache = off`, `SET joinery.max_staleness_s = 5`.

use datafusion::common::extensions_options;
use datafusion::config::ConfigExtension;

extensions_options! {
    /// Options a session can change with `SET joinery.<name>`.
    pub struct JoineryOptions {
        /// Answer from cached API responses when possible.
        pub cache: bool, default = true
        /// The oldest cached response (seconds) a query accepts; 0 means the connection's TTL.
        pub max_staleness_s: u64, default = 0
        /// While a statement has sent no row yet, a NOTICE with its progress (connections,
        /// pages, rows fetched) this often, in milliseconds; 0 turns them off.
        pub progress_notices_ms: u64, default = 2000
        /// Set by the server for each statement: links API calls to the query that made them.
        pub query_id: u64, default = 0
    }
}

impl ConfigExtension for JoineryOptions {
    const PREFIX: &'static str = "joinery";
}

/// Names `SET joinery.<name>` accepts.
pub const OPTION_NAMES: &[&str] = &["cache", "max_staleness_s", "progress_notices_ms"];
