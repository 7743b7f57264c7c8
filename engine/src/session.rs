//! Builds the DataFusion session each client connection runs its statements in.

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_federation::FederatedQueryPlanner;

use crate::catalog::{Catalog, DEFAULT_SCHEMA, SessionCatalog};
use crate::error::{JoineryError, Result};

/// Engine limits, from the `[server]` section of the config.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Memory one statement may hold (sorts, joins, aggregates spill or fail beyond it).
    pub query_memory_limit: usize,
    /// Parallelism of one statement.
    pub target_partitions: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            query_memory_limit: 1024 * 1024 * 1024,
            target_partitions: std::thread::available_parallelism()
                .map(NonZeroUsize::get)
                .unwrap_or(2),
        }
    }
}

/// Makes sessions over one shared catalog.
#[derive(Debug, Clone)]
pub struct SessionFactory {
    catalog: Arc<Catalog>,
    config: EngineConfig,
}

impl SessionFactory {
    pub fn new(catalog: Arc<Catalog>, config: EngineConfig) -> Self {
        Self { catalog, config }
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// A fresh session: its own settings and its own memory pool (one statement runs at a time
    /// in a session, so the pool bounds each statement), seeing the shared catalog.
    ///
    /// `database` is the name the catalog answers to in this session (what the client asked for
    /// at connect time); `None` uses the catalog's own name.
    pub fn new_session(
        &self,
        database: Option<&str>,
    ) -> Result<(SessionContext, Arc<SessionCatalog>)> {
        self.new_session_for(database, crate::grants::Access::default())
    }

    /// A session that sees only the `granted` connections (`None`: all).
    pub fn new_session_for(
        &self,
        database: Option<&str>,
        access: crate::grants::Access,
    ) -> Result<(SessionContext, Arc<SessionCatalog>)> {
        self.new_session_with(database, access, None)
    }

    /// A session for `user` that follows their access in `source` as it changes (GRANT,
    /// REVOKE). Upstream credentials are fixed when the session opens.
    pub fn new_session_live(
        &self,
        database: Option<&str>,
        source: Arc<dyn crate::grants::AccessSource>,
        user: &str,
    ) -> Result<(SessionContext, Arc<SessionCatalog>)> {
        let access = source.access_of(user);
        self.new_session_with(database, access, Some((source, user.to_string())))
    }

    fn new_session_with(
        &self,
        database: Option<&str>,
        access: crate::grants::Access,
        source: Option<(Arc<dyn crate::grants::AccessSource>, String)>,
    ) -> Result<(SessionContext, Arc<SessionCatalog>)> {
        let database = database.unwrap_or(self.catalog.name());
        let mut config = SessionConfig::new()
            .with_option_extension(crate::options::JoineryOptions::default())
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(database, DEFAULT_SCHEMA)
            .with_target_partitions(self.config.target_partitions.max(1));
        if let Some(c) = &access.credentials {
            config = config.with_extension(c.clone());
        }
        // Postgres semantics: unquoted identifiers fold to lowercase, `1.5` is numeric.
        config.options_mut().sql_parser.enable_ident_normalization = true;
        config.options_mut().sql_parser.parse_float_as_decimal = true;
        // Round-robin repartitioning pulls batches ahead of the consumer; for API-backed tables
        // that means fetching pages a LIMIT will never read. Sources bring their own partitions.
        config
            .options_mut()
            .optimizer
            .enable_round_robin_repartition = false;
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(self.config.query_memory_limit),
            NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
        );
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(|e| JoineryError::internal(format!("cannot build runtime: {e}")))?;
        // Small join build sides reach the probe side as `key IN (...)` (up to this many keys per
        // partition); a database scan adds them to its SQL.
        config
            .options_mut()
            .optimizer
            .hash_join_inlist_pushdown_max_distinct_values = 1000;
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_optimizer_rules(crate::sqldb::optimizer_rules())
            .with_query_planner(Arc::new(FederatedQueryPlanner::new()))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let view = self.catalog.session_view_for(access, source);
        ctx.register_catalog(database, view.clone());
        Ok((ctx, view))
    }
}
