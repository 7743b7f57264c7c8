//! Builds the DataFusion session each client connection runs its statements in.

use std::num::NonZeroUsize;
use std::sync::Arc;

use datafusion::execution::memory_pool::{GreedyMemoryPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_federation::FederatedQueryPlanner;

use datafusion::catalog::MemoryCatalogProviderList;
use datafusion::execution::session_state::SessionState;

use crate::catalog::{Catalog, SessionCatalog};
use crate::error::{JoineryError, Result};
use crate::policy::SEARCH_PATH_SCHEMA;

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
///
/// Everything that is the same for every session — the function registry, optimizer rules,
/// the query planner, what the front end adds with [`SessionFactory::customize`] — lives in
/// one template state built once. A session copies the template's registries (maps of shared
/// function handles) and adds only its own settings, memory pool and catalog view.
#[derive(Clone)]
pub struct SessionFactory {
    catalog: Arc<Catalog>,
    config: EngineConfig,
    template: Arc<SessionState>,
    next_id: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for SessionFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionFactory")
            .field("catalog", &self.catalog.name())
            .field("config", &self.config)
            .finish()
    }
}

impl SessionFactory {
    pub fn new(catalog: Arc<Catalog>, config: EngineConfig) -> Self {
        let mut session_config = SessionConfig::new()
            .with_option_extension(crate::options::JoineryOptions::default())
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(catalog.name(), SEARCH_PATH_SCHEMA)
            .with_target_partitions(config.target_partitions.max(1));
        let options = session_config.options_mut();
        // Postgres semantics: unquoted identifiers fold to lowercase, `1.5` is numeric.
        options.sql_parser.enable_ident_normalization = true;
        options.sql_parser.parse_float_as_decimal = true;
        // Round-robin repartitioning pulls batches ahead of the consumer; for API-backed tables
        // that means fetching pages a LIMIT will never read. Sources bring their own partitions.
        options.optimizer.enable_round_robin_repartition = false;
        // Small join build sides reach the probe side as `key IN (...)` (up to this many keys
        // per partition); a database scan adds them to its SQL.
        options
            .optimizer
            .hash_join_inlist_pushdown_max_distinct_values = 1000;
        let template = SessionStateBuilder::new()
            .with_config(session_config)
            .with_default_features()
            .with_optimizer_rules(crate::sqldb::optimizer_rules())
            .with_query_planner(Arc::new(FederatedQueryPlanner::new()))
            .build();
        Self {
            catalog,
            config,
            template: Arc::new(template),
            next_id: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        }
    }

    /// Change what every session starts with (functions, type planners): `f` gets the
    /// template state and returns the new one. Sessions opened before keep theirs.
    pub fn customize(
        &mut self,
        f: impl FnOnce(SessionState) -> datafusion::error::Result<SessionState>,
    ) -> Result<()> {
        let state = f(self.template.as_ref().clone())
            .map_err(|e| JoineryError::internal(format!("cannot prepare sessions: {e}")))?;
        self.template = Arc::new(state);
        Ok(())
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
        let mut config = self
            .template
            .config()
            .clone()
            .with_default_catalog_and_schema(database, SEARCH_PATH_SCHEMA);
        if let Some(c) = &access.credentials {
            config = config.with_extension(c.clone());
        }
        let pool = TrackConsumersPool::new(
            GreedyMemoryPool::new(self.config.query_memory_limit),
            NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
        );
        // Disk manager, caches and object stores are shared; the memory pool is the session's.
        let runtime = RuntimeEnvBuilder::from_runtime_env(self.template.runtime_env())
            .with_memory_pool(Arc::new(pool))
            .build_arc()
            .map_err(|e| JoineryError::internal(format!("cannot build runtime: {e}")))?;
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let state = SessionStateBuilder::new_from_existing(self.template.as_ref().clone())
            .with_session_id(format!("joinery-{id}"))
            .with_config(config)
            .with_runtime_env(runtime)
            .with_catalog_list(Arc::new(MemoryCatalogProviderList::new()))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let view = self.catalog.session_view_for(access, source);
        ctx.register_catalog(database, view.clone());
        Ok((ctx, view))
    }
}
