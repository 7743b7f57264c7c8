//! The catalog: one SQL schema per configured connection, the `public` schema, and the
//! `joinery` system schema. It is shared by every session; each session sees it through a
//! [`SessionCatalog`], which adds session-local schemas (the wire layer's `pg_catalog`) without
//! touching the shared state.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock, Weak};

use datafusion::catalog::{CatalogProvider, MemorySchemaProvider, SchemaProvider};
use datafusion::error::{DataFusionError, Result as DfResult};

use crate::connector::Connector;
use crate::error::{JoineryError, Result};
use crate::rest::CallLog;
use crate::system::SystemSchema;

/// The schema unqualified names resolve to when `search_path` names nothing else.
pub const DEFAULT_SCHEMA: &str = "public";
/// Joinery's own tables (connections, tables, columns, and later calls and queries).
pub const SYSTEM_SCHEMA: &str = "joinery";

/// Names that a connection may not take because the engine or the wire layer owns them.
pub const RESERVED_SCHEMAS: &[&str] = &[
    DEFAULT_SCHEMA,
    SYSTEM_SCHEMA,
    "pg_catalog",
    "information_schema",
];

/// A configured connection as the catalog knows it.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub name: String,
    pub kind: String,
    pub connector: Arc<dyn Connector>,
}

#[derive(Debug)]
pub struct Catalog {
    name: String,
    calls: Arc<CallLog>,
    schemas: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
    connections: RwLock<BTreeMap<String, ConnectionInfo>>,
    audit: RwLock<Arc<crate::audit::AuditLog>>,
    /// System tables the front end adds (`joinery.secrets`).
    extra_system: RwLock<BTreeMap<String, Arc<dyn datafusion::catalog::TableProvider>>>,
    /// Moves whenever a connection is added or refreshed (plans made before are stale).
    version: AtomicU64,
    /// Session views alive (one per open session).
    live_views: AtomicU64,
}

fn poisoned<T>(_: T) -> JoineryError {
    JoineryError::internal("catalog lock poisoned")
}

impl Catalog {
    /// A catalog named `name` (what `current_database()` answers) with the `public` and
    /// `joinery` schemas.
    pub fn new(name: impl Into<String>) -> Arc<Self> {
        Arc::new_cyclic(|weak: &Weak<Catalog>| {
            let mut schemas: BTreeMap<String, Arc<dyn SchemaProvider>> = BTreeMap::new();
            schemas.insert(
                DEFAULT_SCHEMA.to_string(),
                Arc::new(MemorySchemaProvider::new()),
            );
            schemas.insert(
                SYSTEM_SCHEMA.to_string(),
                Arc::new(SystemSchema::new(weak.clone())),
            );
            Catalog {
                name: name.into(),
                calls: Arc::new(CallLog::default()),
                audit: RwLock::new(Arc::new(crate::audit::AuditLog::default())),
                extra_system: RwLock::new(BTreeMap::new()),
                schemas: RwLock::new(schemas),
                connections: RwLock::new(BTreeMap::new()),
                version: AtomicU64::new(1),
                live_views: AtomicU64::new(0),
            }
        })
    }

    /// How many session views of this catalog exist: one per open session. A closed session
    /// must release its own (tests check it).
    pub fn live_session_views(&self) -> u64 {
        self.live_views.load(Ordering::SeqCst)
    }

    /// Changes whenever a connection's tables may have changed.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The audit log (memory-only until [`Catalog::set_audit`]).
    pub fn audit(&self) -> Arc<crate::audit::AuditLog> {
        self.audit
            .read()
            .map(|a| a.clone())
            .unwrap_or_else(|_| Arc::new(crate::audit::AuditLog::default()))
    }

    /// Add a table to the `joinery` schema.
    pub fn add_system_table(&self, name: &str, table: Arc<dyn datafusion::catalog::TableProvider>) {
        if let Ok(mut t) = self.extra_system.write() {
            t.insert(name.to_string(), table);
        }
    }

    pub fn extra_system_tables(
        &self,
    ) -> BTreeMap<String, Arc<dyn datafusion::catalog::TableProvider>> {
        self.extra_system
            .read()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    pub fn set_audit(&self, log: Arc<crate::audit::AuditLog>) {
        if let Ok(mut a) = self.audit.write() {
            *a = log;
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Every API call made by this catalog's connections (for `joinery.api_calls`).
    pub fn calls(&self) -> &Arc<CallLog> {
        &self.calls
    }

    /// Add a connection: its tables become the schema `name`. Replaces an existing connection of
    /// the same name (that is how a refresh works).
    pub async fn add_connection(&self, name: &str, connector: Arc<dyn Connector>) -> Result<()> {
        if RESERVED_SCHEMAS.contains(&name) {
            return Err(JoineryError::config(format!(
                "connection name '{name}' is reserved; choose another name"
            )));
        }
        let tables = connector.tables().await.map_err(|e| {
            if e.connection.is_none() {
                e.with_connection(name)
            } else {
                e
            }
        })?;
        let schema = MemorySchemaProvider::new();
        for t in tables {
            schema
                .register_table(t.name.clone(), t.provider)
                .map_err(|e| JoineryError::internal(e.to_string()).with_connection(name))?;
        }
        self.schemas
            .write()
            .map_err(poisoned)?
            .insert(name.to_string(), Arc::new(schema));
        self.connections.write().map_err(poisoned)?.insert(
            name.to_string(),
            ConnectionInfo {
                name: name.to_string(),
                kind: connector.kind().to_string(),
                connector,
            },
        );
        self.version.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Re-read a connection's tables (new tables, changed columns).
    pub async fn refresh(&self, name: &str) -> Result<()> {
        let info = self.connection(name).ok_or_else(|| {
            JoineryError::new(
                crate::ErrorKind::NotFound,
                format!("no connection named '{name}'"),
            )
        })?;
        self.add_connection(name, info.connector).await
    }

    pub fn connection(&self, name: &str) -> Option<ConnectionInfo> {
        self.connections.read().ok()?.get(name).cloned()
    }

    pub fn connections(&self) -> Vec<ConnectionInfo> {
        self.connections
            .read()
            .map(|c| c.values().cloned().collect())
            .unwrap_or_default()
    }

    pub fn schema_names(&self) -> Vec<String> {
        self.schemas
            .read()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        self.schemas.read().ok()?.get(name).cloned()
    }

    /// A per-session view of this catalog.
    pub fn session_view(self: &Arc<Self>) -> Arc<SessionCatalog> {
        self.session_view_for(crate::grants::Access::default(), None)
    }

    /// A per-session view that shows only the connections `access` grants (system schemas are
    /// always there). With a `source`, the view follows `user`'s access as it changes.
    pub fn session_view_for(
        self: &Arc<Self>,
        access: crate::grants::Access,
        source: Option<(Arc<dyn crate::grants::AccessSource>, String)>,
    ) -> Arc<SessionCatalog> {
        let version = source.as_ref().map(|(s, _)| s.version()).unwrap_or(0);
        self.live_views.fetch_add(1, Ordering::SeqCst);
        Arc::new(SessionCatalog {
            shared: self.clone(),
            local: RwLock::new(BTreeMap::new()),
            view: RwLock::new(AccessView::new(access, version)),
            source,
            search_path: RwLock::new((vec![DEFAULT_SCHEMA.to_string()], 0)),
        })
    }
}

/// Row filters of one session, by schema and table: SQL predicates, ANDed.
type FilterMap = BTreeMap<String, BTreeMap<String, Vec<String>>>;

/// A session's access as of one version of its source.
#[derive(Debug, Clone)]
struct AccessView {
    granted: Option<Arc<std::collections::BTreeSet<String>>>,
    /// Platform admin: may read `joinery.audit_log`.
    admin: bool,
    row_filters: Arc<FilterMap>,
    version: u64,
}

impl AccessView {
    fn new(a: crate::grants::Access, version: u64) -> Self {
        let mut row_filters = FilterMap::new();
        for (schema, table, sql) in a.row_filters {
            row_filters
                .entry(schema)
                .or_default()
                .entry(table)
                .or_default()
                .push(sql);
        }
        AccessView {
            granted: a.granted.map(Arc::new),
            admin: a.admin,
            row_filters: Arc::new(row_filters),
            version,
        }
    }
}

/// What makes a planned statement stale: access (GRANT, REVOKE, policies), the connections'
/// tables (refresh) and the session's `search_path`. A prepared statement planned under one
/// epoch is planned again when it runs under another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PlanEpoch {
    pub access: u64,
    pub catalog: u64,
    pub search_path: u64,
}

/// What one session sees: the shared catalog plus schemas registered by this session only.
#[derive(Debug)]
pub struct SessionCatalog {
    shared: Arc<Catalog>,
    local: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
    view: RwLock<AccessView>,
    source: Option<(Arc<dyn crate::grants::AccessSource>, String)>,
    /// The schemas bare names resolve in, in order, and a counter of changes.
    search_path: RwLock<(Vec<String>, u64)>,
}

impl Drop for SessionCatalog {
    fn drop(&mut self) {
        self.shared.live_views.fetch_sub(1, Ordering::SeqCst);
    }
}

impl SessionCatalog {
    /// The session's access now: re-read from the source when a GRANT or REVOKE changed it.
    fn access(&self) -> AccessView {
        if let Some((source, user)) = &self.source {
            let version = source.version();
            let stale = self
                .view
                .read()
                .map(|v| v.version != version)
                .unwrap_or(true);
            if stale {
                let fresh = AccessView::new(source.access_of(user), version);
                if let Ok(mut v) = self.view.write() {
                    *v = fresh.clone();
                }
                return fresh;
            }
        }
        match self.view.read() {
            Ok(v) => v.clone(),
            // A poisoned lock: see nothing rather than everything.
            Err(_) => AccessView {
                granted: Some(Arc::new(Default::default())),
                admin: false,
                row_filters: Arc::new(FilterMap::new()),
                version: 0,
            },
        }
    }

    pub fn is_admin(&self) -> bool {
        self.access().admin
    }

    /// Whether any row filter applies to this session's reads.
    pub fn has_row_filters(&self) -> bool {
        !self.access().row_filters.is_empty()
    }

    /// Whether this session reads `schema.table` through a row filter.
    pub fn is_row_filtered(&self, schema: &str, table: &str) -> bool {
        self.access()
            .row_filters
            .get(schema)
            .is_some_and(|t| t.contains_key(table))
    }

    /// The (schema, table) pairs this session reads through row filters.
    pub fn row_filtered_tables(&self) -> Vec<(String, String)> {
        self.access()
            .row_filters
            .iter()
            .flat_map(|(s, t)| t.keys().map(move |t| (s.clone(), t.clone())))
            .collect()
    }

    pub fn shared(&self) -> &Arc<Catalog> {
        &self.shared
    }

    /// A connection that exists but this session was not granted.
    pub fn is_hidden(&self, schema: &str) -> bool {
        Self::hidden_in(&self.access(), &self.shared, schema)
    }

    fn hidden_in(view: &AccessView, shared: &Catalog, schema: &str) -> bool {
        match &view.granted {
            None => false,
            Some(g) => !g.contains(schema) && shared.connection(schema).is_some(),
        }
    }

    /// Set the schemas bare names resolve in (`SET search_path`), in order.
    pub fn set_search_path(&self, path: Vec<String>) {
        if let Ok(mut p) = self.search_path.write()
            && p.0 != path
        {
            p.0 = path;
            p.1 += 1;
        }
    }

    /// `current_schema()`: the first schema of `search_path` that exists and is visible.
    pub fn current_schema(&self) -> Option<String> {
        let path = self.search_path.read().ok()?.0.clone();
        let visible = self.schema_names();
        path.into_iter().find(|p| visible.contains(p))
    }

    /// The session's plan epoch now (see [`PlanEpoch`]).
    pub fn plan_epoch(&self) -> PlanEpoch {
        PlanEpoch {
            access: self.access().version,
            catalog: self.shared.version(),
            search_path: self.search_path.read().map(|p| p.1).unwrap_or(u64::MAX),
        }
    }

    /// A schema as this session may see it (`None`: no such schema).
    fn resolve(&self, view: &AccessView, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(s) = self.local.read().ok().and_then(|l| l.get(name).cloned()) {
            return Some(s);
        }
        if Self::hidden_in(view, &self.shared, name) {
            return Some(Arc::new(crate::policy::DeniedSchema {
                name: name.to_string(),
            }));
        }
        let schema = self.shared.schema(name)?;
        if name == SYSTEM_SCHEMA
            && (view.granted.is_some() || !view.admin || !view.row_filters.is_empty())
        {
            return Some(Arc::new(crate::grants::GrantedSystemSchema {
                inner: schema,
                granted: view.granted.clone(),
                admin: view.admin,
                row_filtered: view
                    .row_filters
                    .iter()
                    .flat_map(|(s, t)| t.keys().map(move |t| (s.clone(), t.clone())))
                    .collect(),
            }));
        }
        if let Some(filters) = view.row_filters.get(name) {
            return Some(Arc::new(crate::policy::RowFilteredSchema {
                inner: schema,
                schema: name.to_string(),
                filters: filters.clone(),
            }));
        }
        Some(schema)
    }

    /// The schemas bare names resolve in: `pg_catalog` first unless the path names it, then
    /// the path's schemas that exist and are granted (as PostgreSQL skips the others).
    fn search_path_schema(&self, view: &AccessView) -> Arc<dyn SchemaProvider> {
        let path = self
            .search_path
            .read()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        let mut names: Vec<&str> = Vec::new();
        if !path.iter().any(|p| p == "pg_catalog") {
            names.push("pg_catalog");
        }
        names.extend(path.iter().map(String::as_str));
        let schemas = names
            .into_iter()
            .filter(|n| *n != crate::policy::SEARCH_PATH_SCHEMA)
            .filter(|n| !Self::hidden_in(view, &self.shared, n))
            .filter_map(|n| self.resolve(view, n))
            .collect();
        Arc::new(crate::policy::SearchPathSchema { path: schemas })
    }
}

impl CatalogProvider for SessionCatalog {
    fn schema_names(&self) -> Vec<String> {
        let view = self.access();
        let mut names = self.shared.schema_names();
        names.retain(|n| !Self::hidden_in(&view, &self.shared, n));
        if let Ok(local) = self.local.read() {
            for k in local.keys() {
                if !names.contains(k) {
                    names.push(k.clone());
                }
            }
        }
        names.sort();
        names
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let view = self.access();
        if name == crate::policy::SEARCH_PATH_SCHEMA {
            return Some(self.search_path_schema(&view));
        }
        self.resolve(&view, name)
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        let mut local = self
            .local
            .write()
            .map_err(|_| DataFusionError::Internal("session catalog lock poisoned".into()))?;
        Ok(local.insert(name.to_string(), schema))
    }
}
