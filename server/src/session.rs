//! One client connection's state: its DataFusion session, settings, and the token that cancels
//! the statement it is running.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use datafusion::prelude::SessionContext;
use joinery_engine::catalog::SessionCatalog;
use pgwire::messages::response::TransactionStatus;
use tokio_util::sync::CancellationToken;

use crate::errors::{SqlError, SqlState};
use crate::settings::Settings;

pub struct Session {
    pub pid: i32,
    pub user: String,
    pub database: String,
    pub addr: SocketAddr,
    pub ctx: SessionContext,
    pub catalog: Arc<SessionCatalog>,
    pub settings: Arc<Mutex<Settings>>,
    /// Parent of every running statement's token: a CancelRequest cancels it (so all
    /// statements of a multi-statement query and any open portal stop), then installs a fresh one.
    current: Mutex<CancellationToken>,
    /// Names of prepared statements, for DEALLOCATE ALL / DISCARD ALL.
    pub prepared: Mutex<BTreeSet<String>>,
    /// The transaction status a simple query's statements left, for the wire layer to apply.
    pending_status: Mutex<Option<TransactionStatus>>,
}

impl Session {
    pub fn new(
        pid: i32,
        user: String,
        database: String,
        addr: SocketAddr,
        ctx: SessionContext,
        catalog: Arc<SessionCatalog>,
        settings: Arc<Mutex<Settings>>,
    ) -> Self {
        Self {
            pid,
            user,
            database,
            addr,
            ctx,
            catalog,
            settings,
            current: Mutex::new(CancellationToken::new()),
            prepared: Mutex::new(BTreeSet::new()),
            pending_status: Mutex::new(None),
        }
    }

    pub fn settings(&self) -> Result<MutexGuard<'_, Settings>, SqlError> {
        self.settings
            .lock()
            .map_err(|_| SqlError::new(SqlState::INTERNAL_ERROR, "session settings lock poisoned"))
    }

    pub fn set_pending_status(&self, s: TransactionStatus) {
        if let Ok(mut p) = self.pending_status.lock() {
            *p = Some(s);
        }
    }

    pub fn take_pending_status(&self) -> Option<TransactionStatus> {
        self.pending_status.lock().ok().and_then(|mut p| p.take())
    }

    /// A cancel token for the statement about to run.
    pub fn begin_statement(&self) -> CancellationToken {
        match self.current.lock() {
            Ok(cur) => cur.child_token(),
            Err(_) => CancellationToken::new(),
        }
    }

    /// Tag the calls the next statement makes with `id`.
    pub fn set_query_id(&self, id: u64) {
        let state = self.ctx.state_ref();
        let mut state = state.write();
        if let Some(o) = state
            .config_mut()
            .options_mut()
            .extensions
            .get_mut::<joinery_engine::options::JoineryOptions>()
        {
            o.query_id = id;
        }
    }

    /// CancelRequest: stop everything this session is running.
    pub fn cancel(&self) {
        if let Ok(mut cur) = self.current.lock() {
            cur.cancel();
            *cur = CancellationToken::new();
        }
    }

    /// Push settings that DataFusion itself uses (default schema, time zone) into its config.
    /// Goes through DataFusion's own SET so config-dependent functions (`now()`) follow.
    pub async fn apply_settings(&self) -> Result<(), SqlError> {
        let (path, tz, joinery) = {
            let s = self.settings()?;
            (
                s.search_path(),
                s.time_zone().to_string(),
                s.joinery_options(),
            )
        };
        let schemas = {
            use datafusion::catalog::CatalogProvider;
            self.catalog.schema_names()
        };
        let default_schema = path
            .into_iter()
            .find(|p| schemas.contains(p))
            .unwrap_or_else(|| joinery_engine::DEFAULT_SCHEMA.to_string());
        let tz = if tz == "UTC" || tz == "Etc/UTC" {
            "+00:00".to_string()
        } else {
            tz
        };
        let mut assignments = vec![
            (
                "datafusion.catalog.default_schema".to_string(),
                default_schema,
            ),
            ("datafusion.execution.time_zone".to_string(), tz),
        ];
        assignments.extend(joinery);
        for (key, value) in assignments {
            let sql = format!("SET {key} = '{}'", value.replace('\'', "''"));
            self.ctx
                .sql(&sql)
                .await
                .map_err(|e| SqlError::new(SqlState::INVALID_PARAMETER_VALUE, e.to_string()))?;
        }
        Ok(())
    }
}
