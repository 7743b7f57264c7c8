//! The catalog: one SQL schema per configured connection, the `public` schema, and the
//! `joinery` system schema. It is shared by every session; each session sees it through a
//! [`SessionCatalog`], which adds session-local schemas (the wire layer's `pg_catalog`) without
//! touching the shared state.

use std::collections::BTreeMap;
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
            }
        })
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
        Arc::new(SessionCatalog {
            shared: self.clone(),
            local: RwLock::new(BTreeMap::new()),
            view: RwLock::new(AccessView::new(access, version)),
            source,
        })
    }
}

/// A session's access as of one version of its source.
#[derive(Debug, Clone)]
struct AccessView {
    granted: Option<Arc<std::collections::BTreeSet<String>>>,
    /// Platform admin: may read `joinery.audit_log`.
    admin: bool,
    row_filters: Arc<Vec<(String, String, String)>>,
    version: u64,
}

impl AccessView {
    fn new(a: crate::grants::Access, version: u64) -> Self {
        AccessView {
            granted: a.granted.map(Arc::new),
            admin: a.admin,
            row_filters: Arc::new(a.row_filters),
            version,
        }
    }
}

/// What one session sees: the shared catalog plus schemas registered by this session only.
#[derive(Debug)]
pub struct SessionCatalog {
    shared: Arc<Catalog>,
    local: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
    view: RwLock<AccessView>,
    source: Option<(Arc<dyn crate::grants::AccessSource>, String)>,
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
                row_filters: Arc::new(Vec::new()),
                version: 0,
            },
        }
    }

    pub fn is_admin(&self) -> bool {
        self.access().admin
    }

    /// Row filters on this session's reads: (schema, table, SQL predicate).
    pub fn row_filters(&self) -> Arc<Vec<(String, String, String)>> {
        self.access().row_filters
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
        if let Some(s) = self.local.read().ok().and_then(|l| l.get(name).cloned()) {
            return Some(s);
        }
        let view = self.access();
        if Self::hidden_in(&view, &self.shared, name) {
            return None;
        }
        let schema = self.shared.schema(name)?;
        if name == SYSTEM_SCHEMA && (view.granted.is_some() || !view.admin) {
            return Some(Arc::new(crate::grants::GrantedSystemSchema {
                inner: schema,
                granted: view.granted.clone(),
                admin: view.admin,
            }));
        }
        Some(schema)
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
