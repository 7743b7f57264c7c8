//! One client connection's state: its DataFusion session, settings, and the token that cancels
//! the statement it is running.

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
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
    /// Cancelled when the client goes away: stops whatever the session is running.
    gone: CancellationToken,
    /// Names of prepared statements, for DEALLOCATE ALL / DISCARD ALL.
    pub prepared: Mutex<BTreeSet<String>>,
    /// The transaction status a simple query's statements left, for the wire layer to apply.
    pending_status: Mutex<Option<TransactionStatus>>,
    /// The DataFusion options last pushed by [`Session::apply_settings`].
    applied: Mutex<Vec<(String, String)>>,
    /// Moves whenever those options change (plans optimized before are stale).
    settings_gen: AtomicU64,
    /// Plans of recent simple-protocol statements, by their text, newest first.
    pub plan_cache: Mutex<VecDeque<(Box<str>, Arc<crate::handler::Prepared>)>>,
}

impl Session {
    pub fn new(
        pid: i32,
        user: String,
        database: String,
        addr: SocketAddr,
        (ctx, catalog): (SessionContext, Arc<SessionCatalog>),
        settings: Arc<Mutex<Settings>>,
        gone: CancellationToken,
    ) -> Self {
        Self {
            pid,
            user,
            database,
            addr,
            ctx,
            catalog,
            settings,
            current: Mutex::new(gone.child_token()),
            gone,
            prepared: Mutex::new(BTreeSet::new()),
            pending_status: Mutex::new(None),
            applied: Mutex::new(Vec::new()),
            settings_gen: AtomicU64::new(0),
            plan_cache: Mutex::new(VecDeque::new()),
        }
    }

    /// Changes whenever the session's DataFusion options change.
    pub fn settings_generation(&self) -> u64 {
        self.settings_gen.load(Ordering::SeqCst)
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
            Err(_) => self.gone.child_token(),
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
            *cur = self.gone.child_token();
        }
    }

    /// Push settings that DataFusion itself uses (search path, time zone) into its config.
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
        // Bare names resolve through the session catalog's view of `search_path`.
        self.catalog.set_search_path(path);
        let tz = if tz == "UTC" || tz == "Etc/UTC" {
            "+00:00".to_string()
        } else {
            tz
        };
        let mut assignments = vec![("datafusion.execution.time_zone".to_string(), tz)];
        assignments.extend(joinery);
        // Most statements change nothing DataFusion reads: skip the work then.
        if let Ok(mut applied) = self.applied.lock() {
            if *applied == assignments {
                return Ok(());
            }
            *applied = assignments.clone();
        }
        self.settings_gen.fetch_add(1, Ordering::SeqCst);
        // What DataFusion's own SET does, without planning a statement: set the options, then
        // let functions that depend on them (`now()` and the time zone) update.
        let state = self.ctx.state_ref();
        let mut state = state.write();
        for (key, value) in &assignments {
            state
                .config_mut()
                .options_mut()
                .set(key, value)
                .map_err(|e| SqlError::new(SqlState::INVALID_PARAMETER_VALUE, e.to_string()))?;
        }
        let options = state.config().options().clone();
        let updated: Vec<_> = state
            .scalar_functions()
            .values()
            .filter_map(|udf| udf.inner().with_updated_config(&options).map(Arc::new))
            .collect();
        for udf in updated {
            datafusion::execution::FunctionRegistry::register_udf(&mut *state, udf)
                .map_err(|e| SqlError::new(SqlState::INTERNAL_ERROR, e.to_string()))?;
        }
        Ok(())
    }
}
