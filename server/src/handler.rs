//! The Postgres wire handlers: startup, simple and extended query, cancel, error mapping.
//!
//! Each connection gets a [`Session`] (its own DataFusion context and settings). Statements are
//! parsed with `datafusion-pg-catalog`'s Postgres-compatibility parser, session commands are
//! answered here ([`crate::commands`]), everything else is planned by DataFusion (read-only) and
//! streamed to the client through [`ResultEncoder`], under the session's cancel token and
//! `statement_timeout`.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;

use crate::auth::AuthMethod;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::common::ParamValues;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::Expr;
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{self, Statement};
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::{Sink, SinkExt, Stream, StreamExt, stream};
use joinery_engine::SessionFactory;
use pgwire::api::PgWireConnectionState;
use pgwire::api::auth::{
    ServerParameterProvider, StartupHandler, finish_authentication, protocol_negotiation,
    save_startup_parameters_to_metadata,
};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::PortalExecutionState;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse, Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::Entry;
use pgwire::api::store::PortalStore;
use pgwire::api::{
    ClientInfo, ClientPortalStore, DEFAULT_NAME, ErrorHandler, PgWireServerHandlers, Type,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::extendedquery::{
    Close, CloseComplete, Execute, Parse, ParseComplete, PortalSuspended, TARGET_TYPE_BYTE_PORTAL,
    TARGET_TYPE_BYTE_STATEMENT,
};
use pgwire::messages::response::EmptyQueryResponse;
use pgwire::messages::response::NoticeResponse;
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::simplequery::Query;
use pgwire::messages::startup::Authentication;
use pgwire::messages::startup::{ParameterStatus, SecretKey};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::commands::{Command, classify};
use crate::config::ServerConfig;
use crate::encode::ResultEncoder;
use crate::errors::{SqlError, SqlState, from_datafusion};
use crate::pgcatalog::{self, SessionInfo};
use crate::session::Session;
use crate::settings::{Settings, canonical_name};
use joinery_engine::catalog::PlanEpoch;

/// Live sessions by backend pid: the cancel secret and the session.
type SessionRegistry = Mutex<HashMap<i32, (Vec<u8>, Weak<Session>)>>;

/// State shared by every connection of one server.
pub struct Shared {
    pub factory: SessionFactory,
    pub config: ServerConfig,
    parser: PostgresCompatibilityParser,
    sessions: SessionRegistry,
    next_pid: AtomicI32,
    next_query: std::sync::atomic::AtomicU64,
    pub active_connections: AtomicUsize,
    /// Statements that ran a plan optimized earlier (a prepared statement's, or a repeated
    /// simple query's) instead of planning again.
    pub plans_reused: std::sync::atomic::AtomicU64,
    pub logins: crate::auth::LoginLimiter,
    /// The users' SCRAM verifiers (mock ones for unknown users).
    pub verifiers: crate::auth::Verifiers,
    /// Running statements: query id -> (user, client address), for audit rows of their calls.
    running: Mutex<HashMap<u64, (String, SocketAddr)>>,
    /// The TLS certificate's `tls-server-end-point` hash when TLS is on and the certificate has
    /// one: SCRAM-SHA-256-PLUS binds to it.
    pub tls_end_point: Mutex<Option<Arc<[u8]>>>,
    /// Table and column descriptions for `pg_description`, shared by sessions, with the
    /// catalog version they were read at.
    descriptions: tokio::sync::Mutex<(u64, Arc<pgcatalog::Descriptions>)>,
}

impl Shared {
    pub fn new(factory: SessionFactory, config: ServerConfig) -> Arc<Self> {
        let verifiers = crate::auth::Verifiers::new(config.users.clone());
        Arc::new(Self {
            factory,
            config,
            parser: PostgresCompatibilityParser::new(),
            sessions: Mutex::new(HashMap::new()),
            next_pid: AtomicI32::new(10_000 + (std::process::id() as i32 % 10_000)),
            next_query: std::sync::atomic::AtomicU64::new(1),
            active_connections: AtomicUsize::new(0),
            plans_reused: std::sync::atomic::AtomicU64::new(0),
            logins: Default::default(),
            verifiers,
            running: Mutex::new(HashMap::new()),
            tls_end_point: Mutex::new(None),
            descriptions: tokio::sync::Mutex::new((0, Arc::default())),
        })
    }

    /// The catalog's descriptions, read again when a connection was added or refreshed.
    async fn descriptions(&self) -> Result<Arc<pgcatalog::Descriptions>, SqlError> {
        let catalog = self.factory.catalog();
        let mut d = self.descriptions.lock().await;
        if d.0 != catalog.version() {
            let version = catalog.version();
            let built = pgcatalog::build_descriptions(catalog)
                .await
                .map_err(|e| from_datafusion(&e))?;
            *d = (version, Arc::new(built));
        }
        Ok(d.1.clone())
    }

    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>, SqlError> {
        self.parser
            .parse(sql)
            .map(|stmts| stmts.into_iter().map(crate::rewrite::apply).collect())
            .map_err(|e| SqlError::new(SqlState::SYNTAX_ERROR, format!("syntax error: {e}")))
    }

    fn register(&self, pid: i32, secret: &SecretKey, session: &Arc<Session>) {
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|_, (_, w)| w.strong_count() > 0);
            s.insert(pid, (secret.to_bytes().to_vec(), Arc::downgrade(session)));
        }
    }

    /// Build a session for an authenticated user (also used by `joinery query`).
    pub async fn open_session(
        &self,
        pid: i32,
        user: &str,
        database: &str,
        addr: SocketAddr,
        startup: &BTreeMap<String, String>,
        gone: CancellationToken,
    ) -> Result<Arc<Session>, SqlError> {
        // The session's catalog answers to the database name the client asked for.
        let (ctx, view) = self
            .factory
            .new_session_live(Some(database), self.config.access.clone(), user)
            .map_err(|e| SqlError::from(&e))?;
        let settings = Arc::new(Mutex::new(Settings::new(
            user,
            startup,
            self.config.statement_timeout,
        )));
        pgcatalog::install(
            &ctx,
            &view,
            SessionInfo {
                user: user.to_string(),
                pid,
                database: database.to_string(),
                settings: settings.clone(),
            },
            self.descriptions().await?,
        )
        .map_err(|e| from_datafusion(&e))?;
        let session = Arc::new(Session::new(
            pid,
            user.to_string(),
            database.to_string(),
            addr,
            (ctx, view),
            settings,
            gone,
        ));
        session.apply_settings().await?;
        Ok(session)
    }

    /// Prometheus series, connection health and recent statements.
    pub fn metrics(&self) -> &joinery_engine::metrics::Metrics {
        self.factory.catalog().calls().metrics()
    }

    pub fn audit(&self) -> Arc<joinery_engine::audit::AuditLog> {
        self.factory.catalog().audit()
    }

    /// An audit row for a connector call, attributed to its statement's user.
    pub fn audit_call(&self, c: &joinery_engine::rest::fetch::CallRecord) {
        let who = self
            .running
            .lock()
            .ok()
            .and_then(|r| r.get(&c.query_id).cloned());
        let (user, addr) = match &who {
            Some((u, a)) => (Some(u.as_str()), Some(a.to_string())),
            None => (None, None),
        };
        self.audit().write(serde_json::json!({
            "kind": "call",
            "user": user,
            "client_addr": addr,
            "query_id": c.query_id,
            "connection": c.connection,
            "table": c.table,
            "request": format!("{} {}", c.method, c.url),
            "status": c.status.map(|s| s.to_string()).or_else(|| c.error.as_ref().map(|_| "error".to_string())),
            "error": c.error,
            "rows": c.rows,
            "bytes": c.bytes,
            "latency_ms": c.latency.as_secs_f64() * 1000.0,
            "cache_hit": c.cache_hit,
            "attempt": c.attempt,
        }));
    }

    /// An audit row for a login attempt.
    pub fn audit_login(&self, user: &str, addr: SocketAddr, status: &str, detail: &str) {
        self.audit().write(serde_json::json!({
            "kind": "login",
            "user": user,
            "client_addr": addr.to_string(),
            "status": status,
            "error": (!detail.is_empty()).then_some(detail),
        }));
    }

    /// An audit row for a statement that ended (status `ok` or its SQLSTATE).
    pub fn audit_statement(
        &self,
        session: &Session,
        query_id: Option<u64>,
        sql: &str,
        status: &str,
        rows: Option<u64>,
        elapsed: Option<std::time::Duration>,
    ) {
        self.audit().write(serde_json::json!({
            "kind": "statement",
            "user": session.user,
            "client_addr": session.addr.to_string(),
            "query_id": query_id,
            "statement": joinery_engine::audit::mask_statement(sql),
            "status": status,
            "rows": rows,
            "latency_ms": elapsed.map(|d| d.as_secs_f64() * 1000.0),
        }));
    }

    /// Forget the registry entries of closed sessions (called when a connection ends).
    pub fn forget_closed_sessions(&self) {
        if let Ok(mut s) = self.sessions.lock() {
            s.retain(|_, (_, w)| w.strong_count() > 0);
        }
    }

    /// Sessions still alive: open connections, plus any a closed connection failed to
    /// release (which must never happen; tests check it).
    pub fn live_sessions(&self) -> usize {
        self.sessions
            .lock()
            .map(|s| s.values().filter(|(_, w)| w.strong_count() > 0).count())
            .unwrap_or(0)
    }

    /// A new statement id (what `joinery.api_calls.query_id` refers to).
    pub fn next_query_id(&self) -> u64 {
        self.next_query.fetch_add(1, Ordering::Relaxed)
    }

    pub fn next_pid(&self) -> i32 {
        self.next_pid.fetch_add(1, Ordering::Relaxed)
    }
}

/// The handler set for one connection.
pub struct Handlers {
    shared: Arc<Shared>,
    /// Cancelled when the client's socket closes, even in the middle of a statement.
    gone: CancellationToken,
}

impl Handlers {
    pub fn new(shared: Arc<Shared>, gone: CancellationToken) -> Self {
        Self { shared, gone }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        Arc::new(QueryHandler {
            shared: self.shared.clone(),
            parser: Arc::new(StatementParser {
                shared: self.shared.clone(),
            }),
        })
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        Arc::new(QueryHandler {
            shared: self.shared.clone(),
            parser: Arc::new(StatementParser {
                shared: self.shared.clone(),
            }),
        })
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(Startup {
            shared: self.shared.clone(),
            gone: self.gone.clone(),
            tls_end_point: self
                .shared
                .tls_end_point
                .lock()
                .ok()
                .and_then(|p| p.clone()),
            sasl: tokio::sync::Mutex::new(Sasl::Initial),
            startup: Mutex::new(None),
        })
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(Errors)
    }

    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        Arc::new(Cancel {
            shared: self.shared.clone(),
        })
    }
}

fn fatal(state: SqlState, msg: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        state.0.to_string(),
        msg.into(),
    )))
}

struct Params(Vec<(String, String)>);

impl ServerParameterProvider for Params {
    fn server_parameters<C>(&self, _client: &C) -> Option<HashMap<String, String>>
    where
        C: ClientInfo,
    {
        Some(self.0.iter().cloned().collect())
    }
}

/// Where a connection's SCRAM exchange is.
enum Sasl {
    /// Waiting for the SASLInitialResponse (client-first).
    Initial,
    /// Server-first sent, waiting for the client-final message.
    AwaitingFinal(crate::scram::AwaitingFinal),
    /// Over (a failure ends the connection).
    Done,
}

struct Startup {
    shared: Arc<Shared>,
    gone: CancellationToken,
    /// The certificate hash for SCRAM-SHA-256-PLUS (when TLS is configured).
    tls_end_point: Option<Arc<[u8]>>,
    sasl: tokio::sync::Mutex<Sasl>,
    /// The startup parameters, kept while the SCRAM exchange runs.
    startup: Mutex<Option<BTreeMap<String, String>>>,
}

impl Startup {
    /// Open the session and tell the client it may go on (after trust or a good password).
    async fn admit<C>(
        &self,
        client: &mut C,
        parameters: &BTreeMap<String, String>,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = parameters.get("user").cloned().unwrap_or_default();
        let database = parameters
            .get("database")
            .cloned()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        if database.len() > 63 || database.contains(['.', '"', '\0']) || database.starts_with('$') {
            return Err(fatal(
                SqlState("3D000"),
                format!("database \"{database}\" does not exist"),
            ));
        }
        let pid = self.shared.next_pid();
        let secret = SecretKey::I32(rand::random::<i32>());
        client.set_pid_and_secret_key(pid, secret.clone());
        let session = self
            .shared
            .open_session(
                pid,
                &user,
                &database,
                client.socket_addr(),
                parameters,
                self.gone.clone(),
            )
            .await
            .map_err(|e| fatal(e.state, e.message))?;
        self.shared.register(pid, &secret, &session);
        client.session_extensions().insert(session.clone());
        let mut params = session.settings().map_err(|e| e.into_pgwire())?.reported();
        if let Some(app) = parameters.get("application_name") {
            params.retain(|(k, _)| k != "application_name");
            params.push(("application_name".into(), app.clone()));
        }
        info!(pid, user = %user, database = %database, addr = %client.socket_addr(), tls = client.is_secure(), "session started");
        self.shared
            .audit_login(&user, client.socket_addr(), "ok", "");
        finish_authentication(client, &Params(params)).await
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let config = &self.shared.config;
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let active = self.shared.active_connections.load(Ordering::Relaxed);
                if active > config.max_connections {
                    return Err(fatal(
                        SqlState::TOO_MANY_CONNECTIONS,
                        "sorry, too many clients already",
                    ));
                }
                let Some(user) = startup.parameters.get("user").cloned() else {
                    return Err(fatal(
                        SqlState::INVALID_AUTHORIZATION,
                        "no PostgreSQL user name specified in startup packet",
                    ));
                };
                let addr = client.socket_addr();
                if config.require_tls && !client.is_secure() {
                    warn!(user = %user, %addr, "login refused: plaintext connection while require_tls is on");
                    self.shared
                        .audit_login(&user, addr, "28000", "plaintext while require_tls");
                    return Err(fatal(
                        SqlState::INVALID_AUTHORIZATION,
                        "this server requires TLS (connect with sslmode=require)",
                    ));
                }
                let parameters: BTreeMap<String, String> = startup
                    .parameters
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                match config.auth {
                    AuthMethod::Trust => {
                        if !crate::auth::is_loopback(&addr) {
                            warn!(user = %user, %addr, "login refused: trust is for loopback clients only");
                            self.shared.audit_login(
                                &user,
                                addr,
                                "28000",
                                "trust from a non-loopback address",
                            );
                            return Err(fatal(
                                SqlState::INVALID_AUTHORIZATION,
                                format!(
                                    "no login allowed from {} without a password: configure [users] and auth = \"scram\"",
                                    addr.ip()
                                ),
                            ));
                        }
                        if !config.users.is_empty() && !config.users.contains_key(&user) {
                            warn!(user = %user, %addr, "login refused: unknown user");
                            self.shared
                                .audit_login(&user, addr, "28P01", "unknown user");
                            return Err(fatal(
                                SqlState::INVALID_PASSWORD,
                                format!("role \"{user}\" does not exist"),
                            ));
                        }
                        self.admit(client, &parameters).await
                    }
                    AuthMethod::Scram => {
                        if let Err(wait) = self.shared.logins.check(&user, addr.ip()) {
                            warn!(user = %user, %addr, "login refused: too many failed attempts");
                            self.shared.audit_login(
                                &user,
                                addr,
                                "28P01",
                                "locked out after repeated failures",
                            );
                            return Err(fatal(
                                SqlState::INVALID_PASSWORD,
                                format!(
                                    "too many failed logins for user \"{user}\" from this address; try again in {wait} s"
                                ),
                            ));
                        }
                        if let Ok(mut p) = self.startup.lock() {
                            *p = Some(parameters);
                        }
                        client.set_state(PgWireConnectionState::AuthenticationInProgress);
                        let mut mechanisms = vec![crate::scram::MECHANISM.to_string()];
                        if client.is_secure() && self.tls_end_point.is_some() {
                            mechanisms.push(crate::scram::MECHANISM_PLUS.to_string());
                        }
                        client
                            .send(PgWireBackendMessage::Authentication(Authentication::SASL(
                                mechanisms,
                            )))
                            .await?;
                        Ok(())
                    }
                }
            }
            PgWireFrontendMessage::PasswordMessageFamily(msg) => {
                let parameters = self
                    .startup
                    .lock()
                    .ok()
                    .and_then(|p| p.clone())
                    .ok_or(PgWireError::InvalidSASLState)?;
                let user = parameters.get("user").cloned().unwrap_or_default();
                let addr = client.socket_addr();
                let mut state = self.sasl.lock().await;
                let outcome = match std::mem::replace(&mut *state, Sasl::Done) {
                    Sasl::Initial => {
                        let first = msg.into_sasl_initial_response()?;
                        if ![crate::scram::MECHANISM, crate::scram::MECHANISM_PLUS]
                            .contains(&first.auth_method.as_str())
                        {
                            return Err(PgWireError::UnsupportedSASLAuthMethod(first.auth_method));
                        }
                        // Channel binding only where it was offered: over TLS.
                        let end_point =
                            self.tls_end_point.as_deref().filter(|_| client.is_secure());
                        crate::scram::start(
                            &first.auth_method,
                            first.data.as_deref().unwrap_or_default(),
                            self.shared.verifiers.get(&user),
                            end_point,
                        )
                        .map(|(server_first, next)| {
                            *state = Sasl::AwaitingFinal(next);
                            Authentication::SASLContinue(server_first.into())
                        })
                    }
                    Sasl::AwaitingFinal(wait) => {
                        let resp = msg.into_sasl_response()?;
                        wait.finish(&resp.data)
                            .map(|server_final| Authentication::SASLFinal(server_final.into()))
                    }
                    Sasl::Done => return Err(PgWireError::InvalidSASLState),
                };
                match outcome {
                    Ok(res) => {
                        client
                            .send(PgWireBackendMessage::Authentication(res))
                            .await?;
                    }
                    Err(e) => {
                        self.shared.logins.failed(&user, addr.ip());
                        warn!(user = %user, %addr, "login failed: {e}");
                        self.shared
                            .audit_login(&user, addr, "28P01", &e.to_string());
                        return Err(fatal(
                            SqlState::INVALID_PASSWORD,
                            format!("password authentication failed for user \"{user}\""),
                        ));
                    }
                }
                if matches!(*state, Sasl::Done) {
                    drop(state);
                    self.shared.logins.succeeded(&user, addr.ip());
                    return self.admit(client, &parameters).await;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

struct Cancel {
    shared: Arc<Shared>,
}

#[async_trait]
impl CancelHandler for Cancel {
    async fn on_cancel_request(&self, req: CancelRequest) {
        let target = self.shared.sessions.lock().ok().and_then(|s| {
            s.get(&req.pid)
                .filter(|(secret, _)| secret.as_slice() == req.secret_key.to_bytes().as_ref())
                .and_then(|(_, w)| w.upgrade())
        });
        match target {
            Some(session) => {
                info!(pid = req.pid, "cancel request");
                session.cancel();
            }
            None => debug!(pid = req.pid, "cancel request for unknown session ignored"),
        }
    }
}

struct Errors;

impl ErrorHandler for Errors {
    fn on_error<C>(&self, _client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        // Errors raised inside pgwire or arrow-pg (parameter decoding) arrive untyped: classify
        // them here so clients never see XX000 for their own mistakes.
        let mapped = match error {
            PgWireError::ApiError(e) => {
                if let Some(df) = e.downcast_ref::<datafusion::error::DataFusionError>() {
                    Some(from_datafusion(df))
                } else {
                    Some(SqlError::new(
                        SqlState::INVALID_PARAMETER_VALUE,
                        e.to_string(),
                    ))
                }
            }
            PgWireError::FailedToParseParameter(e) => Some(SqlError::new(
                SqlState::INVALID_TEXT_REPRESENTATION,
                format!("invalid parameter value: {e}"),
            )),
            PgWireError::StatementNotFound(name) => Some(SqlError::new(
                SqlState::INVALID_SQL_STATEMENT_NAME,
                format!("prepared statement \"{name}\" does not exist"),
            )),
            PgWireError::PortalNotFound(name) => Some(SqlError::new(
                SqlState::INVALID_CURSOR_NAME,
                format!("portal \"{name}\" does not exist"),
            )),
            PgWireError::QueryCanceled => Some(SqlError::canceled()),
            _ => None,
        };
        if let Some(m) = mapped {
            debug!(error = %m, "statement failed");
            *error = m.into_pgwire();
        } else {
            debug!(error = %error, "protocol error");
        }
    }
}

fn session_of<C: ClientInfo + ?Sized>(client: &C) -> PgWireResult<Arc<Session>> {
    client
        .session_extensions()
        .get::<Arc<Session>>()
        .map(|s| (*s).clone())
        .ok_or_else(|| {
            fatal(
                SqlState::PROTOCOL_VIOLATION,
                "no session: startup did not complete",
            )
        })
}

/// A statement prepared by Parse (or by a simple query).
#[derive(Clone, Debug)]
pub struct Prepared {
    pub kind: PreparedKind,
}

#[derive(Clone, Debug)]
pub enum PreparedKind {
    Query {
        /// The statement's text, for the audit log.
        sql: Arc<str>,
        /// The statement as planned, to plan again when access, the catalog or `search_path`
        /// changed before it runs.
        source: Arc<Statement>,
        /// What the plan was made under.
        epoch: PlanEpoch,
        plan: Box<LogicalPlan>,
        /// The latest re-plan, for the epoch it was made under.
        replanned: Arc<Mutex<Option<(PlanEpoch, LogicalPlan)>>>,
        /// The plan as the optimizer left it at Parse (analyzed, optimized, federated): run as
        /// it is when nothing it depends on has changed (see [`reusable`]).
        optimized: Option<Arc<LogicalPlan>>,
        /// Whether `optimized` may run again later: no parameters to bind, and nothing folded
        /// into it that changes between executions (`now()`, `random()`).
        reusable: bool,
        /// The session settings generation it was optimized under (time zone and friends).
        settings_gen: u64,
        param_types: Vec<Type>,
        param_data_types: Vec<Option<DataType>>,
        schema: SchemaRef,
        /// Column names as Postgres would give them.
        names: Option<Vec<String>>,
        tag: &'static str,
    },
    Command(Command),
}

pub struct StatementParser {
    shared: Arc<Shared>,
}

/// Postgres types a client may declare in Parse, as SQL types for DataFusion's PREPARE.
fn sql_type_for(t: &Type) -> Option<ast::DataType> {
    use ast::DataType as D;
    Some(match *t {
        Type::INT2 => D::SmallInt(None),
        Type::INT4 => D::Int(None),
        Type::INT8 => D::BigInt(None),
        Type::FLOAT4 => D::Real,
        Type::FLOAT8 => D::DoublePrecision,
        Type::BOOL => D::Boolean,
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::JSON
        | Type::JSONB
        | Type::UUID => D::Text,
        Type::DATE => D::Date,
        Type::TIMESTAMP => D::Timestamp(None, ast::TimezoneInfo::None),
        Type::TIMESTAMPTZ => D::Timestamp(None, ast::TimezoneInfo::WithTimeZone),
        Type::BYTEA => D::Bytea,
        Type::NUMERIC => D::Numeric(ast::ExactNumberInfo::None),
        Type::OID => D::Int(None),
        _ => return None,
    })
}

/// `SELECT 1` is int4 in Postgres; DataFusion reads every integer literal as Int64. In
/// projections, an integer literal that fits is narrowed to Int32 where Postgres would type it
/// int4: a whole output column (`SELECT 1`), an element of an array literal (`ARRAY[1,2]`), or
/// the operand of arithmetic with an int4 expression (`$1::int4 + 1`, `int_col * 2`). Literal-
/// only arithmetic (`100000 * 100000`) stays Int64 so it cannot wrap in 32 bits. Changed
/// columns keep their names (an alias) and every schema above is recomputed.
fn narrow_int_literals(plan: LogicalPlan) -> datafusion::error::Result<LogicalPlan> {
    use datafusion::common::DFSchema;
    use datafusion::logical_expr::{BinaryExpr, ExprSchemable, Operator};

    fn small(e: &Expr) -> Option<Expr> {
        match e {
            Expr::Literal(ScalarValue::Int64(Some(v)), md) if i32::try_from(*v).is_ok() => Some(
                Expr::Literal(ScalarValue::Int32(Some(*v as i32)), md.clone()),
            ),
            Expr::Negative(inner) => small(inner).map(|n| Expr::Negative(Box::new(n))),
            _ => None,
        }
    }
    fn is_int4(e: &Expr, schema: &DFSchema) -> bool {
        matches!(
            e.get_type(schema),
            Ok(DataType::Int32) | Ok(DataType::Int16)
        )
    }
    fn narrow(e: Expr, schema: &DFSchema) -> datafusion::error::Result<Transformed<Expr>> {
        if let Some(n) = small(&e) {
            return Ok(Transformed::yes(n));
        }
        e.transform_up(|x| match x {
            Expr::BinaryExpr(BinaryExpr { left, op, right })
                if matches!(
                    op,
                    Operator::Plus
                        | Operator::Minus
                        | Operator::Multiply
                        | Operator::Divide
                        | Operator::Modulo
                ) =>
            {
                let (l, r) = (small(&left), small(&right));
                if let Some(l) = l.filter(|_| is_int4(&right, schema)) {
                    return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                        Box::new(l),
                        op,
                        right,
                    ))));
                }
                if let Some(r) = r.filter(|_| is_int4(&left, schema)) {
                    return Ok(Transformed::yes(Expr::BinaryExpr(BinaryExpr::new(
                        left,
                        op,
                        Box::new(r),
                    ))));
                }
                Ok(Transformed::no(Expr::BinaryExpr(BinaryExpr {
                    left,
                    op,
                    right,
                })))
            }
            Expr::ScalarFunction(mut f) if f.func.name() == "make_array" => {
                let all: Option<Vec<Expr>> = f.args.iter().map(small).collect();
                match all {
                    Some(args) if !args.is_empty() => {
                        f.args = args;
                        Ok(Transformed::yes(Expr::ScalarFunction(f)))
                    }
                    _ => Ok(Transformed::no(Expr::ScalarFunction(f))),
                }
            }
            other => Ok(Transformed::no(other)),
        })
    }
    let mut changed = false;
    let plan = plan
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::Projection(p) = &node else {
                return Ok(Transformed::no(node));
            };
            let schema = p.input.schema().clone();
            let t = node.map_expressions(|e| {
                let name = e.schema_name().to_string();
                let (inner, alias) = match &e {
                    Expr::Alias(a) => (a.expr.as_ref().clone(), Some(a.name.clone())),
                    other => (other.clone(), None),
                };
                let t = narrow(inner, &schema)?;
                Ok(if t.transformed {
                    Transformed::yes(t.data.alias(alias.unwrap_or(name)))
                } else {
                    Transformed::no(e)
                })
            })?;
            changed |= t.transformed;
            Ok(t)
        })?
        .data;
    if !changed {
        return Ok(plan);
    }
    // Types changed below: every node's schema is recomputed bottom-up.
    plan.transform_up_with_subqueries(|n| Ok(Transformed::yes(n.recompute_schema()?)))
        .map(|t| t.data)
}

/// Plan one statement for the query engine: read-only, Postgres literal typing.
///
/// Returns the plan and Postgres's names for its output columns.
pub async fn plan_statement(
    session: &Session,
    stmt: Statement,
) -> Result<(LogicalPlan, Option<Vec<String>>), SqlError> {
    // Grants and row filters are enforced where the session catalog hands out tables
    // (joinery_engine::policy): whatever the statement names, it gets only what it may read.
    let state = session.ctx.state();
    let stmt = DfStatement::Statement(Box::new(stmt));
    let plan = state
        .statement_to_plan(stmt)
        .await
        .map_err(|e| from_datafusion(&e))?;
    let plan = match plan {
        LogicalPlan::Statement(datafusion::logical_expr::Statement::Prepare(p)) => {
            Arc::unwrap_or_clone(p.input)
        }
        other => other,
    };
    // Joinery is read-only: no DDL, DML, or DataFusion statements (SET is handled before).
    datafusion::execution::context::SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false)
        .verify_plan(&plan)
        .map_err(|e| {
            SqlError::new(
                SqlState::READ_ONLY_TRANSACTION,
                format!("Joinery is read-only: {}", from_datafusion(&e).message),
            )
        })?;
    let names = crate::naming::output_names(&plan);
    let plan = narrow_int_literals(plan).map_err(|e| from_datafusion(&e))?;
    Ok((plan, names))
}

/// A policy command as the audit log keeps it.
fn policy_text(cmd: &Command) -> String {
    match cmd {
        Command::CreatePolicy {
            name,
            schema,
            table,
            filter,
            to,
        } => format!(
            "CREATE POLICY {name} ON {schema}.{table} FOR SELECT TO {} USING ({filter})",
            if to.is_empty() {
                "PUBLIC".to_string()
            } else {
                to.join(", ")
            }
        ),
        Command::DropPolicy {
            name,
            schema,
            table,
            ..
        } => format!("DROP POLICY {name} ON {schema}.{table}"),
        _ => String::new(),
    }
}

/// Fill in parameter types DataFusion left open, the way Postgres would resolve them:
/// `$1::int[]` takes the cast's type, `x = ANY($1)` is an array of x's type.
fn refine_parameter_types(plan: &LogicalPlan, params: &mut HashMap<String, Option<DataType>>) {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::ExprSchemable;
    if params.values().all(Option::is_some) {
        return;
    }
    let mut found: Vec<(String, DataType)> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        let schema = node
            .inputs()
            .into_iter()
            .map(|i| i.schema().as_ref().clone())
            .reduce(|mut a, b| {
                a.merge(&b);
                a
            })
            .unwrap_or_else(|| node.schema().as_ref().clone());
        for e in node.expressions() {
            let _ = e.apply(|x| {
                match x {
                    Expr::Cast(c) => {
                        if let Expr::Placeholder(p) = c.expr.as_ref() {
                            found.push((p.id.clone(), c.field.data_type().clone()));
                        }
                    }
                    Expr::TryCast(c) => {
                        if let Expr::Placeholder(p) = c.expr.as_ref() {
                            found.push((p.id.clone(), c.field.data_type().clone()));
                        }
                    }
                    Expr::ScalarFunction(f)
                        if matches!(f.func.name(), "array_has" | "array_contains")
                            && f.args.len() == 2 =>
                    {
                        if let Expr::Placeholder(p) = &f.args[0]
                            && let Ok(t) = f.args[1].get_type(&schema)
                        {
                            found.push((
                                p.id.clone(),
                                DataType::List(Arc::new(Field::new_list_field(t, true))),
                            ));
                        }
                    }
                    _ => {}
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(TreeNodeRecursion::Continue)
    });
    for (id, t) in found {
        if let Some(slot @ None) = params.get_mut(&id) {
            *slot = Some(t);
        }
    }
}

/// The result columns a plan will produce. Describe must announce the types execution will
/// produce: type coercion (run by the analyzer) can still change them, so this is the
/// analyzed plan's schema.
fn described_schema(session: &Session, plan: &LogicalPlan) -> SchemaRef {
    match session.ctx.state().optimize(plan) {
        Ok(analyzed) => Arc::new(analyzed.schema().as_arrow().clone()),
        Err(_) => Arc::new(plan.schema().as_arrow().clone()),
    }
}

/// Functions the optimizer folds into constants that stay true for the whole session unless
/// its settings change (which invalidates the plan anyway).
const SESSION_CONSTANT_FUNCTIONS: &[&str] = &[
    "version",
    "session_user",
    "current_user",
    "current_role",
    "user",
    "current_database",
    "current_catalog",
    "current_schema",
    "current_schemas",
    "pg_backend_pid",
    "current_setting",
    "pg_get_userbyid",
    "format_type",
    "pg_table_is_visible",
    "has_table_privilege",
    "has_schema_privilege",
    "has_database_privilege",
    "has_any_column_privilege",
];

/// Whether an optimized plan may run again later as it is: it binds no parameters, and every
/// function in it either always gives the same answer for the same arguments or is constant for
/// the session. `now()`, `current_date`, `random()` and the like make it single-use.
fn plan_is_reusable(plan: &LogicalPlan) -> bool {
    use datafusion::common::tree_node::TreeNodeRecursion;
    use datafusion::logical_expr::Volatility;
    let mut ok = true;
    let _ = plan.apply_with_subqueries(|node| {
        for e in node.expressions() {
            let _ = e.apply(|x| {
                let fine = match x {
                    Expr::Placeholder(_) => false,
                    Expr::ScalarFunction(f) => {
                        f.func.signature().volatility == Volatility::Immutable
                            || SESSION_CONSTANT_FUNCTIONS.contains(&f.func.name())
                    }
                    _ => true,
                };
                if fine {
                    Ok(TreeNodeRecursion::Continue)
                } else {
                    ok = false;
                    Ok(TreeNodeRecursion::Stop)
                }
            });
            if !ok {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    ok
}

/// The plan a prepared statement runs now: the one made at Parse, or — when grants, policies,
/// the catalog or `search_path` changed since — a fresh one, refused if its result columns
/// differ from what Describe announced (as PostgreSQL refuses a cached plan that would).
async fn current_plan(
    session: &Session,
    source: &Statement,
    epoch: PlanEpoch,
    plan: &LogicalPlan,
    replanned: &Mutex<Option<(PlanEpoch, LogicalPlan)>>,
    schema: &SchemaRef,
) -> Result<LogicalPlan, SqlError> {
    let now = session.catalog.plan_epoch();
    if now == epoch {
        return Ok(plan.clone());
    }
    if let Ok(r) = replanned.lock()
        && let Some((e, p)) = r.as_ref()
        && *e == now
    {
        return Ok(p.clone());
    }
    let (fresh, _) = plan_statement(session, source.clone()).await?;
    let fresh_schema = described_schema(session, &fresh);
    let types = |s: &SchemaRef| {
        s.fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect::<Vec<_>>()
    };
    if types(&fresh_schema) != types(schema) {
        return Err(SqlError::new(
            SqlState::FEATURE_NOT_SUPPORTED,
            "cached plan must not change result type",
        )
        .with_hint("prepare the statement again"));
    }
    if let Ok(mut r) = replanned.lock() {
        *r = Some((now, fresh.clone()));
    }
    Ok(fresh)
}

fn statement_tag(stmt: &Statement) -> &'static str {
    match stmt {
        Statement::Explain { .. } => "EXPLAIN",
        Statement::ShowTables { .. } | Statement::ShowColumns { .. } => "SHOW",
        _ => "SELECT",
    }
}

impl StatementParser {
    async fn prepare(
        &self,
        session: &Session,
        stmt: Statement,
        client_types: &[Option<Type>],
    ) -> Result<Prepared, SqlError> {
        if let Some(cmd) = classify(&stmt, &session.user) {
            return Ok(Prepared {
                kind: PreparedKind::Command(cmd?),
            });
        }
        let tag = statement_tag(&stmt);
        // When the client declared every parameter type, plan as PREPARE so DataFusion types the
        // placeholders the way the client will send them.
        let declared: Option<Vec<ast::DataType>> = if client_types.is_empty() {
            None
        } else {
            client_types
                .iter()
                .map(|t| t.as_ref().and_then(sql_type_for))
                .collect()
        };
        let to_plan = match declared {
            Some(data_types) if matches!(stmt, Statement::Query(_)) => Statement::Prepare {
                name: ast::Ident::new("joinery_stmt"),
                data_types,
                statement: Box::new(stmt),
            },
            _ => stmt,
        };
        let sql: Arc<str> = Arc::from(to_plan.to_string());
        let source = Arc::new(to_plan.clone());
        let epoch = session.catalog.plan_epoch();
        let settings_gen = session.settings_generation();
        let (plan, names) = match plan_statement(session, to_plan).await {
            Ok(p) => p,
            Err(e) => {
                // Refused or unplannable statements are audited too (42501 above all).
                self.shared
                    .audit_statement(session, None, &sql, e.state.0, None, None);
                return Err(e);
            }
        };
        let mut params = plan
            .get_parameter_types()
            .map_err(|e| from_datafusion(&e))?;
        refine_parameter_types(&plan, &mut params);
        let mut ordered: Vec<(usize, Option<DataType>)> = params
            .into_iter()
            .filter_map(|(k, v)| {
                k.trim_start_matches('$')
                    .parse::<usize>()
                    .ok()
                    .map(|i| (i, v))
            })
            .collect();
        ordered.sort_by_key(|(i, _)| *i);
        // Bind carries at most 65535 parameters; a larger index can never be bound.
        if ordered.last().is_some_and(|(i, _)| *i > u16::MAX as usize) {
            return Err(SqlError::new(
                SqlState::PROGRAM_LIMIT_EXCEEDED,
                "too many parameters: at most 65535 are allowed",
            ));
        }
        let n = ordered
            .last()
            .map(|(i, _)| *i)
            .unwrap_or(0)
            .max(client_types.len());
        let mut param_data_types: Vec<Option<DataType>> = vec![None; n];
        for (i, t) in ordered {
            if i >= 1 && i <= n {
                param_data_types[i - 1] = t;
            }
        }
        let param_types = param_data_types
            .iter()
            .enumerate()
            .map(|(i, dt)| {
                if let Some(Some(t)) = client_types.get(i) {
                    return t.clone();
                }
                match dt {
                    Some(dt) => arrow_pg::datatypes::into_pg_type(dt).unwrap_or(Type::TEXT),
                    // Postgres resolves an unconstrained parameter as text.
                    None => Type::TEXT,
                }
            })
            .collect();
        // Describe must announce the types execution will produce: type coercion (run by the
        // analyzer) can still change them, so describe the optimized plan, and keep it to run.
        let optimized = match &plan {
            // EXPLAIN renders its plans while optimizing; EXPLAIN ANALYZE runs its own way.
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) => None,
            p => session.ctx.state().optimize(p).ok().map(Arc::new),
        };
        let schema = match &optimized {
            Some(o) => Arc::new(o.schema().as_arrow().clone()),
            None => described_schema(session, &plan),
        };
        let reusable = optimized.is_some() && plan_is_reusable(&plan);
        Ok(Prepared {
            kind: PreparedKind::Query {
                sql,
                source,
                epoch,
                optimized,
                reusable,
                settings_gen,
                plan: Box::new(plan),
                replanned: Arc::default(),
                param_types,
                param_data_types,
                schema,
                names,
                tag,
            },
        })
    }
}

#[async_trait]
impl QueryParser for StatementParser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let session = session_of(client)?;
        let mut stmts = self.shared.parse(sql).map_err(SqlError::into_pgwire)?;
        if stmts.is_empty() {
            return Ok(None);
        }
        if stmts.len() > 1 {
            return Err(SqlError::new(
                SqlState::SYNTAX_ERROR,
                "cannot insert multiple commands into a prepared statement",
            )
            .into_pgwire());
        }
        let stmt = stmts.remove(0);
        self.prepare(&session, stmt, types)
            .await
            .map(Some)
            .map_err(SqlError::into_pgwire)
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        Ok(match &stmt.kind {
            PreparedKind::Query { param_types, .. } => param_types.clone(),
            PreparedKind::Command(_) => vec![],
        })
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        let format = column_format.cloned().unwrap_or(Format::UnifiedText);
        let (schema, names) = match &stmt.kind {
            PreparedKind::Query { schema, names, .. } => (schema.clone(), names.as_deref()),
            PreparedKind::Command(c) => match show_schema(c) {
                Some(s) => (s, None),
                None => return Ok(vec![]),
            },
        };
        let enc = ResultEncoder::with_names(&schema, names, &format, Default::default())?;
        Ok((*enc.fields).clone())
    }
}

fn show_schema(c: &Command) -> Option<SchemaRef> {
    match c {
        Command::Show(name) => Some(Arc::new(Schema::new(vec![Field::new(
            canonical_name(name),
            DataType::Utf8,
            true,
        )]))),
        Command::Refresh(_) => Some(Arc::new(Schema::new(vec![Field::new(
            "refresh",
            DataType::Utf8,
            true,
        )]))),
        Command::RotateSecret(..) => Some(Arc::new(Schema::new(vec![Field::new(
            "rotate_secret",
            DataType::Utf8,
            true,
        )]))),
        Command::ShowAll => Some(Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, false),
            Field::new("setting", DataType::Utf8, true),
            Field::new("description", DataType::Utf8, true),
        ]))),
        _ => None,
    }
}

/// Plans kept per session for repeated simple-protocol text.
const PLAN_CACHE_ENTRIES: usize = 16;
/// Longer statements are not kept (they are rarely repeated, and their plans are large).
const PLAN_CACHE_MAX_SQL: usize = 4096;

/// A plan made earlier in this session for exactly this text, if it may run again now.
fn cached_plan(session: &Session, sql: &str) -> Option<Arc<Prepared>> {
    let mut cache = session.plan_cache.lock().ok()?;
    let i = cache.iter().position(|(k, _)| k.as_ref() == sql)?;
    let valid = match &cache[i].1.kind {
        PreparedKind::Query {
            epoch,
            settings_gen,
            reusable,
            ..
        } => {
            *reusable
                && *epoch == session.catalog.plan_epoch()
                && *settings_gen == session.settings_generation()
        }
        PreparedKind::Command(_) => false,
    };
    let entry = cache.remove(i)?;
    if !valid {
        return None;
    }
    let prepared = entry.1.clone();
    cache.push_front(entry);
    Some(prepared)
}

/// Keep a reusable query's plan for the next time this text comes.
fn remember_plan(session: &Session, sql: &str, prepared: &Prepared) {
    if sql.len() > PLAN_CACHE_MAX_SQL
        || !matches!(prepared.kind, PreparedKind::Query { reusable: true, .. })
    {
        return;
    }
    if let Ok(mut cache) = session.plan_cache.lock() {
        cache.retain(|(k, _)| k.as_ref() != sql);
        cache.push_front((Box::from(sql), Arc::new(prepared.clone())));
        cache.truncate(PLAN_CACHE_ENTRIES);
    }
}

/// What [`QueryHandler::run_plan`] runs: a plan still to optimize, or one the optimizer
/// already made (at Parse).
enum PlanToRun {
    Logical(LogicalPlan),
    Optimized(Arc<LogicalPlan>),
}

pub struct QueryHandler {
    shared: Arc<Shared>,
    parser: Arc<StatementParser>,
}

/// Race a future against the statement's cancel token and deadline.
async fn guarded<T>(
    fut: impl std::future::Future<Output = Result<T, SqlError>>,
    token: &CancellationToken,
    deadline: Option<tokio::time::Instant>,
) -> Result<T, SqlError> {
    let timeout = async {
        match deadline {
            Some(d) => tokio::time::sleep_until(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        _ = token.cancelled() => Err(SqlError::canceled()),
        _ = timeout => Err(SqlError::timed_out()),
        r = fut => r,
    }
}

/// Encode a batch stream into wire rows, stopping with 57014 on cancel or timeout and failing
/// (never truncating) when a batch fails.
/// The audit row of one running statement: written once, when it ends (or is abandoned).
struct StatementAudit {
    shared: Arc<Shared>,
    session: Arc<Session>,
    query_id: u64,
    sql: Arc<str>,
    started: Instant,
    failures_before: u64,
    done: std::sync::atomic::AtomicBool,
}

impl StatementAudit {
    fn begin(shared: Arc<Shared>, session: Arc<Session>, query_id: u64, sql: Arc<str>) -> Self {
        if let Ok(mut r) = shared.running.lock() {
            r.insert(query_id, (session.user.clone(), session.addr));
        }
        let failures_before = shared.audit().failures();
        shared.metrics().begin_query(query_id);
        StatementAudit {
            shared,
            session,
            query_id,
            sql,
            started: Instant::now(),
            failures_before,
            done: std::sync::atomic::AtomicBool::new(false),
        }
    }

    fn finish(&self, status: &str, rows: u64) {
        if self.done.swap(true, Ordering::SeqCst) {
            return;
        }
        self.shared.audit_statement(
            &self.session,
            Some(self.query_id),
            &self.sql,
            status,
            Some(rows),
            Some(self.started.elapsed()),
        );
        if let Ok(mut r) = self.shared.running.lock() {
            r.remove(&self.query_id);
        }
        let elapsed = self.started.elapsed();
        self.shared
            .metrics()
            .finish_query(joinery_engine::metrics::QueryRecord::finished(
                self.query_id,
                &self.session.user,
                &self.sql,
                elapsed,
                Some(rows),
                status,
            ));
        tracing::info!(
            query_id = self.query_id,
            user = %self.session.user,
            status,
            rows,
            duration_ms = elapsed.as_millis() as u64,
            "statement finished"
        );
    }

    /// A statement that ran to the end: `ok`, unless its audit rows could not be written and
    /// the log fails closed.
    fn complete(&self, rows: u64) -> Result<(), SqlError> {
        let log = self.shared.audit();
        if log.fail_closed && log.failures() > self.failures_before {
            self.finish("58030", rows);
            return Err(SqlError::new(
                SqlState("58030"),
                "the audit log cannot be written, so the statement is refused (see [audit] fail_closed)",
            ));
        }
        self.finish("ok", rows);
        Ok(())
    }
}

impl Drop for StatementAudit {
    fn drop(&mut self) {
        // The client stopped reading (a closed portal, a dropped connection).
        self.finish("abandoned", 0);
    }
}

fn row_stream(
    batches: SendableRecordBatchStream,
    encoder: Arc<ResultEncoder>,
    token: CancellationToken,
    deadline: Option<tokio::time::Instant>,
    started: Instant,
    pid: i32,
    audit: Arc<StatementAudit>,
) -> impl Stream<Item = PgWireResult<pgwire::messages::data::DataRow>> + Send {
    let state = (batches, false, 0usize);
    stream::unfold(state, move |(mut batches, done, rows)| {
        let token = token.clone();
        let encoder = encoder.clone();
        let audit = audit.clone();
        async move {
            if done {
                return None;
            }
            let next = guarded(async { Ok(batches.next().await) }, &token, deadline).await;
            match next {
                Err(e) => {
                    audit.finish(e.state.0, rows as u64);
                    Some((Err(e.into_pgwire()), (batches, true, rows)))
                }
                Ok(None) => {
                    debug!(
                        pid,
                        rows,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "statement finished"
                    );
                    // Fail closed: a statement whose audit rows were not written fails.
                    if let Err(e) = audit.complete(rows as u64) {
                        return Some((Err(e.into_pgwire()), (batches, true, rows)));
                    }
                    None
                }
                Ok(Some(Err(e))) => {
                    let e = from_datafusion(&e);
                    audit.finish(e.state.0, rows as u64);
                    Some((Err(e.into_pgwire()), (batches, true, rows)))
                }
                Ok(Some(Ok(batch))) => {
                    let n = batch.num_rows();
                    match encoder.encode(batch) {
                        Ok(r) => Some((Ok(r), (batches, false, rows + n))),
                        Err(e) => Some((Err(e), (batches, true, rows))),
                    }
                }
            }
        }
    })
    .flat_map(
        |r: PgWireResult<Vec<pgwire::messages::data::DataRow>>| match r {
            Ok(rows) => stream::iter(rows.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(e) => stream::iter(vec![Err(e)]),
        },
    )
}

fn batch_response(
    schema: SchemaRef,
    batch: RecordBatch,
    format: &Format,
    tag: &str,
    opts: Arc<pgwire::types::format::FormatOptions>,
) -> Result<QueryResponse, SqlError> {
    let enc = ResultEncoder::try_new(&schema, format, opts).map_err(pgwire_to_sql)?;
    let rows = enc.encode(batch).map_err(pgwire_to_sql)?;
    let mut resp = QueryResponse::new(enc.fields.clone(), stream::iter(rows.into_iter().map(Ok)));
    resp.set_command_tag(tag);
    Ok(resp)
}

fn pgwire_to_sql(e: PgWireError) -> SqlError {
    match e {
        PgWireError::UserError(info) => SqlError {
            state: SqlState(leak_state(&info.code)),
            message: info.message,
            detail: info.detail,
            hint: info.hint,
        },
        other => SqlError::new(SqlState::INTERNAL_ERROR, other.to_string()),
    }
}

/// SQLSTATEs are a fixed set of 5-character codes; map known ones back to constants.
fn leak_state(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "42601", "42P01", "42703", "42883", "3F000", "42704", "42702", "42710", "42804", "42501",
        "22023", "22P02", "22012", "22003", "22000", "0A000", "55P02", "57014", "53200", "53300",
        "53400", "54000", "25P02", "25006", "25P01", "25001", "26000", "34000", "08P01", "08006",
        "28P01", "28000", "F0000", "38000", "HV000", "HV00N", "HV004", "XX000", "57P01", "58030",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("XX000")
}

impl QueryHandler {
    /// Run a planned query and stream its rows.
    #[allow(clippy::too_many_arguments)]
    async fn run_plan<C>(
        &self,
        client: &mut C,
        session: &Arc<Session>,
        plan: PlanToRun,
        names: Option<&[String]>,
        format: &Format,
        tag: &str,
        sql: &Arc<str>,
    ) -> Result<Response, SqlError>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
    {
        let token = session.begin_statement();
        let query_id = self.shared.next_query_id();
        session.set_query_id(query_id);
        debug!(pid = session.pid, query_id, "statement");
        let audit = Arc::new(StatementAudit::begin(
            self.shared.clone(),
            session.clone(),
            query_id,
            sql.clone(),
        ));
        let (timeout, opts, progress_every) = {
            let s = session.settings()?;
            (
                s.statement_timeout(),
                Arc::new(s.format_options()),
                s.progress_interval(),
            )
        };
        let started = Instant::now();
        let deadline = timeout.map(|d| tokio::time::Instant::now() + d);
        let ctx = session.ctx.clone();
        let hide_filtered = match &plan {
            PlanToRun::Logical(p) => crate::explain::reads_row_filtered(&session.catalog, p),
            PlanToRun::Optimized(_) => false,
        };
        let span = tracing::info_span!("query", query_id, user = %session.user, pid = session.pid);
        let (schema, stream) = match tracing::Instrument::instrument(
            guarded(
                async move {
                    let stream = match plan {
                        // Row counts beneath a row filter would tell what it removed.
                        PlanToRun::Logical(LogicalPlan::Analyze(a)) if hide_filtered => {
                            crate::explain::analyze(&ctx, &a)
                                .await
                                .map_err(|e| from_datafusion(&e))?
                        }
                        PlanToRun::Logical(plan) => {
                            let df = ctx
                                .execute_logical_plan(plan)
                                .await
                                .map_err(|e| from_datafusion(&e))?;
                            df.execute_stream().await.map_err(|e| from_datafusion(&e))?
                        }
                        // Already analyzed and optimized: straight to the physical planner.
                        PlanToRun::Optimized(plan) => {
                            let state = ctx.state();
                            let physical = state
                                .query_planner()
                                .create_physical_plan(&plan, &state)
                                .await
                                .map_err(|e| from_datafusion(&e))?;
                            datafusion::physical_plan::execute_stream(physical, ctx.task_ctx())
                                .map_err(|e| from_datafusion(&e))?
                        }
                    };
                    Ok((stream.schema(), stream))
                },
                &token,
                deadline,
            ),
            span,
        )
        .await
        {
            Ok(x) => x,
            Err(e) => {
                audit.finish(e.state.0, 0);
                return Err(e);
            }
        };
        let stream = match progress_every {
            Some(every) => {
                match self
                    .first_batch_with_progress(
                        client,
                        stream,
                        query_id,
                        every,
                        (&token, deadline),
                        session.catalog.has_row_filters(),
                    )
                    .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        audit.finish(e.state.0, 0);
                        return Err(e);
                    }
                }
            }
            None => stream,
        };
        let encoder = Arc::new(
            ResultEncoder::with_names(&schema, names, format, opts).map_err(pgwire_to_sql)?,
        );
        let fields = encoder.fields.clone();
        let rows = row_stream(
            stream,
            encoder,
            token,
            deadline,
            started,
            session.pid,
            audit,
        );
        let mut resp = QueryResponse::new(fields, rows);
        resp.set_command_tag(tag);
        Ok(Response::Query(resp))
    }

    /// Wait for a statement's first batch; while none has come, tell the client every `every`
    /// what the scans fetched so far (a NOTICE, as psql prints them). The batch goes back in
    /// front of the stream.
    async fn first_batch_with_progress<C>(
        &self,
        client: &mut C,
        mut stream: SendableRecordBatchStream,
        query_id: u64,
        every: std::time::Duration,
        (token, deadline): (&CancellationToken, Option<tokio::time::Instant>),
        hide_volume: bool,
    ) -> Result<SendableRecordBatchStream, SqlError>
    where
        C: Sink<PgWireBackendMessage> + Unpin + Send,
    {
        let started = Instant::now();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let first = loop {
            tokio::select! {
                next = guarded(async { Ok(stream.next().await) }, token, deadline) => break next?,
                _ = tick.tick() => {
                    let Some(p) = self.shared.metrics().query_progress(query_id) else {
                        continue;
                    };
                    let connectors = p.connectors.iter().cloned().collect::<Vec<_>>().join(", ");
                    // Pages and rows fetched before a row filter would tell what it removes.
                    let msg = if hide_volume {
                        format!(
                            "joinery: waiting for {connectors} ({:.1}s)",
                            started.elapsed().as_secs_f64()
                        )
                    } else {
                        format!(
                            "joinery: {} page(s), {} row(s), {} from cache, from {connectors} so far ({:.1}s)",
                            p.pages,
                            p.rows,
                            p.cache_hits,
                            started.elapsed().as_secs_f64()
                        )
                    };
                    let mut info = ErrorInfo::new("NOTICE".into(), "00000".into(), msg);
                    info.severity = "NOTICE".into();
                    // A client that cannot take a notice will fail on the rows too.
                    let _ = client
                        .send(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(info)))
                        .await;
                }
            }
        };
        let schema = stream.schema();
        let rest = stream::iter(first).chain(stream);
        Ok(Box::pin(
            datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, rest),
        ))
    }

    /// `joinery.rotate_secret`: admins only, against the configured store.
    fn rotate_secret(
        &self,
        session: &Session,
        name: &str,
        value: &joinery_engine::rest::Secret,
    ) -> Result<(), SqlError> {
        if !session.catalog.is_admin() {
            return Err(SqlError::new(
                SqlState::INSUFFICIENT_PRIVILEGE,
                "permission denied: only admins manage secrets",
            ));
        }
        let sc = self.shared.config.secrets.as_ref().ok_or_else(|| {
            SqlError::new(
                SqlState::FEATURE_NOT_SUPPORTED,
                "this server has no [secrets] store configured",
            )
        })?;
        let mut store = sc.open().map_err(|e| SqlError::from(&e))?;
        store
            .rotate(name, value.expose(), &session.user)
            .map_err(|e| SqlError::new(SqlState::INVALID_PARAMETER_VALUE, e))
    }

    /// `GRANT`/`REVOKE USAGE ON SCHEMA`: admins only; open sessions see it at their next statement.
    fn change_grants(
        &self,
        session: &Session,
        grant: bool,
        connections: &[String],
        grantees: &[String],
    ) -> Result<crate::access::Change, SqlError> {
        if !session.catalog.is_admin() {
            return Err(SqlError::new(
                SqlState::INSUFFICIENT_PRIVILEGE,
                "permission denied: only admins grant or revoke access to connections",
            ));
        }
        self.shared
            .config
            .access
            .change(grant, connections, grantees)
            .map_err(|e| {
                let state = if e.contains("does not exist") && e.starts_with("schema") {
                    SqlState::UNDEFINED_SCHEMA
                } else if e.contains("does not exist") {
                    SqlState::UNDEFINED_OBJECT
                } else {
                    SqlState::FEATURE_NOT_SUPPORTED
                };
                SqlError::new(state, e)
            })
    }

    /// `CREATE POLICY` / `DROP POLICY`: admins only. A new policy's table must exist and its
    /// predicate must apply to it (checked as the reading users will meet it).
    async fn change_policy(
        &self,
        session: &Session,
        cmd: &Command,
    ) -> Result<(&'static str, Option<String>), SqlError> {
        if !session.catalog.is_admin() {
            return Err(SqlError::new(
                SqlState::INSUFFICIENT_PRIVILEGE,
                "permission denied: only admins create or drop policies",
            ));
        }
        let access = &self.shared.config.access;
        if access.open_to_all() {
            return Err(SqlError::new(
                SqlState::FEATURE_NOT_SUPPORTED,
                "this server has no [users]: a policy would apply to nobody",
            ));
        }
        let policy_error = |(kind, m): (crate::access::PolicyError, String)| {
            let state = match kind {
                crate::access::PolicyError::NoSuchObject if m.starts_with("schema") => {
                    SqlState::UNDEFINED_SCHEMA
                }
                crate::access::PolicyError::NoSuchObject => SqlState::UNDEFINED_OBJECT,
                crate::access::PolicyError::Exists => SqlState::DUPLICATE_OBJECT,
                crate::access::PolicyError::Other => SqlState::CONFIG_FILE_ERROR,
            };
            SqlError::new(state, m)
        };
        let persisted = match cmd {
            Command::CreatePolicy {
                name,
                schema,
                table,
                filter,
                to,
            } => {
                let provider = match self.shared.factory.catalog().schema(schema) {
                    Some(s) => s.table(table).await.map_err(|e| from_datafusion(&e))?,
                    None => None,
                };
                let Some(provider) = provider else {
                    return Err(SqlError::new(
                        SqlState::UNDEFINED_TABLE,
                        format!("relation \"{schema}.{table}\" does not exist"),
                    ));
                };
                // The predicate must fit the table for any reader.
                joinery_engine::policy::RowFilteredTable::try_new(
                    provider,
                    joinery_engine::policy::filtered_scan_name(schema, table),
                    &[crate::config::with_current_user(filter, &session.user)],
                )
                .map_err(|e| from_datafusion(&e))?;
                access
                    .create_policy(crate::access::Policy {
                        name: name.clone(),
                        schema: schema.clone(),
                        table: table.clone(),
                        filter: filter.clone(),
                        to: to.iter().cloned().collect(),
                    })
                    .map_err(policy_error)?
            }
            Command::DropPolicy {
                name,
                schema,
                table,
                if_exists,
            } => {
                let existed = access
                    .drop_policy(name, schema, table, *if_exists)
                    .map_err(policy_error)?;
                if !existed {
                    return Ok((
                        "DROP POLICY",
                        Some(format!(
                            "policy \"{name}\" for table \"{table}\" does not exist, skipping"
                        )),
                    ));
                }
                true
            }
            _ => {
                return Err(SqlError::new(
                    SqlState::INTERNAL_ERROR,
                    "not a policy command",
                ));
            }
        };
        let tag = if matches!(cmd, Command::CreatePolicy { .. }) {
            "CREATE POLICY"
        } else {
            "DROP POLICY"
        };
        let warn = (!persisted).then(|| {
            "no grants_file is configured: this change lasts until the server restarts".to_string()
        });
        Ok((tag, warn))
    }

    /// Run a session command.
    async fn run_command<C>(
        &self,
        client: &mut C,
        session: &Arc<Session>,
        cmd: &Command,
        format: &Format,
        status: TransactionStatus,
    ) -> Result<Response, SqlError>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let in_txn = !matches!(status, TransactionStatus::Idle);
        let mut report: Vec<(String, String)> = Vec::new();
        let mut notice: Option<(SqlState, String)> = None;
        let resp = match cmd {
            Command::Set { name, value } => {
                let r = {
                    let mut s = session.settings()?;
                    match value {
                        Some(v) => s.set(name, v)?,
                        None => s.reset(name)?,
                    }
                };
                report.extend(r);
                session.apply_settings().await?;
                Response::Execution(Tag::new("SET"))
            }
            Command::Reset(name) => {
                {
                    let mut s = session.settings()?;
                    match name {
                        Some(n) => report.extend(s.reset(n)?),
                        None => report.extend(s.reset_all()),
                    }
                }
                session.apply_settings().await?;
                Response::Execution(Tag::new("RESET"))
            }
            Command::Show(name) => {
                let value = session
                    .settings()?
                    .get(name)
                    .map(str::to_string)
                    .ok_or_else(|| {
                        SqlError::new(
                            SqlState::UNDEFINED_OBJECT,
                            format!("unrecognized configuration parameter \"{name}\""),
                        )
                    })?;
                let schema = show_schema(cmd)
                    .ok_or_else(|| SqlError::new(SqlState::INTERNAL_ERROR, "show schema"))?;
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(arrow::array::StringArray::from(vec![value]))],
                )
                .map_err(|e| SqlError::new(SqlState::INTERNAL_ERROR, e.to_string()))?;
                let opts = Arc::new(session.settings()?.format_options());
                Response::Query(batch_response(schema, batch, format, "SHOW", opts)?)
            }
            Command::RotateSecret(name, value) => {
                let masked = format!("SELECT joinery.rotate_secret('{name}', '***')");
                let outcome = self.rotate_secret(session, name, value);
                self.shared.audit_statement(
                    session,
                    None,
                    &masked,
                    match &outcome {
                        Ok(()) => "ok",
                        Err(e) => e.state.0,
                    },
                    None,
                    None,
                );
                outcome?;
                let schema = show_schema(cmd)
                    .ok_or_else(|| SqlError::new(SqlState::INTERNAL_ERROR, "rotate schema"))?;
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(arrow::array::StringArray::from(vec![format!(
                        "rotated {name}; servers pick it up at their next start"
                    )]))],
                )
                .map_err(|e| SqlError::new(SqlState::INTERNAL_ERROR, e.to_string()))?;
                let opts = Arc::new(session.settings()?.format_options());
                Response::Query(batch_response(schema, batch, format, "SELECT 1", opts)?)
            }
            Command::Refresh(name) => {
                if !session.catalog.is_admin() {
                    return Err(SqlError::new(
                        SqlState::INSUFFICIENT_PRIVILEGE,
                        "permission denied: only admins refresh connections",
                    ));
                }
                let catalog = self.shared.factory.catalog();
                catalog
                    .refresh(name)
                    .await
                    .map_err(|e| SqlError::from(&e))?;
                let tables = catalog
                    .schema(name)
                    .map(|s| s.table_names().len())
                    .unwrap_or(0);
                let schema = show_schema(cmd)
                    .ok_or_else(|| SqlError::new(SqlState::INTERNAL_ERROR, "refresh schema"))?;
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(arrow::array::StringArray::from(vec![format!(
                        "{name}: {tables} tables"
                    )]))],
                )
                .map_err(|e| SqlError::new(SqlState::INTERNAL_ERROR, e.to_string()))?;
                let opts = Arc::new(session.settings()?.format_options());
                Response::Query(batch_response(schema, batch, format, "SELECT 1", opts)?)
            }
            Command::ShowAll => {
                let all = session.settings()?.all();
                let schema = show_schema(cmd)
                    .ok_or_else(|| SqlError::new(SqlState::INTERNAL_ERROR, "show schema"))?;
                let batch = RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(arrow::array::StringArray::from_iter_values(
                            all.iter().map(|(k, _)| k.as_str()),
                        )),
                        Arc::new(arrow::array::StringArray::from_iter_values(
                            all.iter().map(|(_, v)| v.as_str()),
                        )),
                        Arc::new(arrow::array::StringArray::from(vec![
                            None::<&str>;
                            all.len()
                        ])),
                    ],
                )
                .map_err(|e| SqlError::new(SqlState::INTERNAL_ERROR, e.to_string()))?;
                let opts = Arc::new(session.settings()?.format_options());
                Response::Query(batch_response(schema, batch, format, "SHOW", opts)?)
            }
            Command::Begin(tag) => {
                if in_txn {
                    notice = Some((
                        SqlState::ACTIVE_TRANSACTION,
                        "there is already a transaction in progress".into(),
                    ));
                }
                Response::TransactionStart(Tag::new(tag))
            }
            Command::Commit => {
                if !in_txn {
                    notice = Some((
                        SqlState::NO_ACTIVE_TRANSACTION,
                        "there is no transaction in progress".into(),
                    ));
                }
                // COMMIT of a failed transaction rolls it back, and says so.
                let tag = if matches!(status, TransactionStatus::Error) {
                    "ROLLBACK"
                } else {
                    "COMMIT"
                };
                Response::TransactionEnd(Tag::new(tag))
            }
            Command::Rollback => {
                if !in_txn {
                    notice = Some((
                        SqlState::NO_ACTIVE_TRANSACTION,
                        "there is no transaction in progress".into(),
                    ));
                }
                Response::TransactionEnd(Tag::new("ROLLBACK"))
            }
            Command::Savepoint | Command::Release | Command::RollbackTo => {
                if !in_txn {
                    return Err(SqlError::new(
                        SqlState::NO_ACTIVE_TRANSACTION,
                        format!(
                            "{} can only be used in transaction blocks",
                            match cmd {
                                Command::Savepoint => "SAVEPOINT",
                                Command::Release => "RELEASE SAVEPOINT",
                                _ => "ROLLBACK TO SAVEPOINT",
                            }
                        ),
                    ));
                }
                Response::Execution(Tag::new(match cmd {
                    Command::Savepoint => "SAVEPOINT",
                    Command::Release => "RELEASE",
                    _ => "ROLLBACK",
                }))
            }
            Command::DiscardAll => {
                if in_txn {
                    return Err(SqlError::new(
                        SqlState::ACTIVE_TRANSACTION,
                        "DISCARD ALL cannot run inside a transaction block",
                    ));
                }
                report.extend(session.settings()?.reset_all());
                session.apply_settings().await?;
                deallocate(client, session, None);
                client.portal_store().clear_portals();
                if let Ok(mut c) = session.plan_cache.lock() {
                    c.clear();
                }
                Response::Execution(Tag::new("DISCARD ALL"))
            }
            Command::Deallocate(name) => {
                if let Some(n) = name {
                    let known = session
                        .prepared
                        .lock()
                        .map(|p| p.contains(n))
                        .unwrap_or(false);
                    if !known {
                        return Err(SqlError::new(
                            SqlState::INVALID_SQL_STATEMENT_NAME,
                            format!("prepared statement \"{n}\" does not exist"),
                        ));
                    }
                }
                deallocate(client, session, name.as_deref());
                Response::Execution(Tag::new(if name.is_some() {
                    "DEALLOCATE"
                } else {
                    "DEALLOCATE ALL"
                }))
            }
            Command::Noop(tag) => Response::Execution(Tag::new(tag)),
            Command::CreatePolicy { .. } | Command::DropPolicy { .. } => {
                let outcome = self.change_policy(session, cmd).await;
                self.shared.audit_statement(
                    session,
                    None,
                    &policy_text(cmd),
                    match &outcome {
                        Ok(_) => "ok",
                        Err(e) => e.state.0,
                    },
                    None,
                    None,
                );
                let (tag, warn) = outcome?;
                if let Some(w) = warn {
                    notice = Some((SqlState::WARNING, w));
                }
                Response::Execution(Tag::new(tag))
            }
            Command::Grant {
                grant,
                connections,
                grantees,
            } => {
                let outcome = self.change_grants(session, *grant, connections, grantees);
                let text = format!(
                    "{} USAGE ON SCHEMA {} {} {}",
                    if *grant { "GRANT" } else { "REVOKE" },
                    connections.join(", "),
                    if *grant { "TO" } else { "FROM" },
                    grantees.join(", ")
                );
                self.shared.audit_statement(
                    session,
                    None,
                    &text,
                    match &outcome {
                        Ok(_) => "ok",
                        Err(e) => e.state.0,
                    },
                    None,
                    None,
                );
                let change = outcome?;
                if !change.still_via_role.is_empty() {
                    notice = Some((
                        SqlState::WARNING,
                        format!(
                            "{} still may use {} through a role or PUBLIC",
                            change.still_via_role.join(", "),
                            connections.join(", ")
                        ),
                    ));
                } else if !change.persisted {
                    notice = Some((
                        SqlState::WARNING,
                        "no grants_file is configured: this change lasts until the server restarts"
                            .to_string(),
                    ));
                }
                Response::Execution(Tag::new(if *grant { "GRANT" } else { "REVOKE" }))
            }
        };
        if let Some((state, msg)) = notice {
            let mut info = ErrorInfo::new("WARNING".into(), state.0.into(), msg);
            info.severity = "WARNING".into();
            let _ = client
                .feed(PgWireBackendMessage::NoticeResponse(NoticeResponse::from(
                    info,
                )))
                .await;
        }
        for (name, value) in report {
            client
                .feed(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                    name, value,
                )))
                .await
                .map_err(|_| SqlError::new(SqlState::CONNECTION_FAILURE, "client went away"))?;
        }
        Ok(resp)
    }

    async fn run_prepared<C>(
        &self,
        client: &mut C,
        session: &Arc<Session>,
        prepared: &Prepared,
        params: Option<&ParamValues>,
        format: &Format,
        (status, fresh): (TransactionStatus, bool),
    ) -> Result<Response, SqlError>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if matches!(status, TransactionStatus::Error) {
            let ends =
                matches!(&prepared.kind, PreparedKind::Command(c) if c.ends_failed_transaction());
            if !ends {
                return Err(SqlError::in_failed_transaction());
            }
        }
        match &prepared.kind {
            PreparedKind::Command(cmd) => {
                self.run_command(client, session, cmd, format, status).await
            }
            PreparedKind::Query {
                plan,
                tag,
                names,
                sql,
                source,
                epoch,
                replanned,
                schema,
                optimized,
                reusable,
                settings_gen,
                ..
            } => {
                // The plan optimized at Parse runs as it is when nothing it depends on moved:
                // no parameters, the same access, catalog, search_path and settings, and either
                // it was made for this very execution or it holds nothing time-dependent.
                let no_params = match params {
                    None => true,
                    Some(ParamValues::List(v)) => v.is_empty(),
                    Some(ParamValues::Map(m)) => m.is_empty(),
                };
                if let Some(optimized) = optimized
                    && no_params
                    && (*reusable || fresh)
                    && session.catalog.plan_epoch() == *epoch
                    && session.settings_generation() == *settings_gen
                {
                    if !fresh {
                        self.shared.plans_reused.fetch_add(1, Ordering::Relaxed);
                    }
                    return self
                        .run_plan(
                            client,
                            session,
                            PlanToRun::Optimized(optimized.clone()),
                            names.as_deref(),
                            format,
                            tag,
                            sql,
                        )
                        .await;
                }
                // Access, the catalog or search_path may have changed since Parse (REVOKE,
                // a new policy, SET search_path): then the statement is planned again.
                let plan = current_plan(session, source, *epoch, plan, replanned, schema).await?;
                let plan = match params {
                    Some(p) => plan
                        .replace_params_with_values(p)
                        .map_err(|e| from_datafusion(&e))?,
                    None => {
                        if !plan
                            .get_parameter_types()
                            .map(|p| p.is_empty())
                            .unwrap_or(true)
                        {
                            return Err(SqlError::new(
                                SqlState::PROTOCOL_VIOLATION,
                                "there is no parameter $1 (use the extended protocol to bind parameters)",
                            ));
                        }
                        plan
                    }
                };
                self.run_plan(
                    client,
                    session,
                    PlanToRun::Logical(plan),
                    names.as_deref(),
                    format,
                    tag,
                    sql,
                )
                .await
            }
        }
    }
}

fn deallocate<C>(client: &mut C, session: &Arc<Session>, name: Option<&str>)
where
    C: ClientPortalStore,
    C::PortalStore: PortalStore,
{
    let Ok(mut prepared) = session.prepared.lock() else {
        return;
    };
    match name {
        Some(n) => {
            client.portal_store().rm_statement(n);
            prepared.remove(n);
        }
        None => {
            for n in prepared.iter() {
                client.portal_store().rm_statement(n);
            }
            prepared.clear();
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for QueryHandler {
    /// pgwire's default applies transaction changes after sending every result; here the status
    /// the statements produced is known first, so an error while streaming rows after `BEGIN`
    /// leaves the transaction failed (E), and `ROLLBACK TO SAVEPOINT` recovers one.
    async fn on_query<C>(&self, client: &mut C, query: Query) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        client.set_state(PgWireConnectionState::QueryInProgress);
        let sql = query.query;
        if sql.chars().all(|c| c == ';' || c.is_whitespace()) {
            client
                .feed(PgWireBackendMessage::EmptyQueryResponse(
                    EmptyQueryResponse::new(),
                ))
                .await?;
        } else {
            let session = session_of(client)?;
            let responses = match SimpleQueryHandler::do_query(self, client, &sql).await {
                Ok(r) => r,
                Err(e) => {
                    if let Some(st) = session.take_pending_status() {
                        client.set_transaction_status(st);
                    }
                    return Err(e);
                }
            };
            let status = session
                .take_pending_status()
                .unwrap_or(client.transaction_status());
            // Set before streaming, so an error in the rows fails the right transaction.
            client.set_transaction_status(status);
            for r in responses {
                match r {
                    Response::EmptyQuery => {
                        client
                            .feed(PgWireBackendMessage::EmptyQueryResponse(
                                EmptyQueryResponse::new(),
                            ))
                            .await?;
                    }
                    Response::Query(results) => {
                        pgwire::api::query::send_query_response(client, results, true).await?;
                    }
                    Response::Execution(tag)
                    | Response::TransactionStart(tag)
                    | Response::TransactionEnd(tag) => {
                        client
                            .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                            .await?;
                    }
                    Response::Error(e) => {
                        client
                            .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
                            .await?;
                    }
                    _ => {
                        return Err(SqlError::new(
                            SqlState::FEATURE_NOT_SUPPORTED,
                            "COPY is not supported",
                        )
                        .into_pgwire());
                    }
                }
            }
        }
        client.set_state(PgWireConnectionState::ReadyForQuery);
        let status = client.transaction_status();
        pgwire::api::query::send_ready_for_query(client, status).await?;
        Ok(())
    }

    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        debug!(pid = session.pid, sql = %query, "simple query");
        // The same text again (dashboards, agents, pgbench): its plan is reused while valid.
        if let Some(prepared) = cached_plan(&session, query) {
            let status = client.transaction_status();
            return match self
                .run_prepared(
                    client,
                    &session,
                    &prepared,
                    None,
                    &Format::UnifiedText,
                    (status, false),
                )
                .await
            {
                Ok(r) => {
                    session.set_pending_status(status);
                    Ok(vec![r])
                }
                Err(e) => {
                    session.set_pending_status(status.to_error_state());
                    Err(e.into_pgwire())
                }
            };
        }
        let stmts = self.shared.parse(query).map_err(SqlError::into_pgwire)?;
        if stmts.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let single = stmts.len() == 1;
        let mut out = Vec::with_capacity(stmts.len());
        // pgwire applies transaction changes after the whole query string: track them here so
        // `BEGIN; SAVEPOINT a; ...` sees its own BEGIN.
        let mut status = client.transaction_status();
        for stmt in stmts {
            let result = async {
                let prepared = self.parser.prepare(&session, stmt, &[]).await?;
                if single {
                    remember_plan(&session, query, &prepared);
                }
                let rollback_to =
                    matches!(prepared.kind, PreparedKind::Command(Command::RollbackTo));
                self.run_prepared(
                    client,
                    &session,
                    &prepared,
                    None,
                    &Format::UnifiedText,
                    (status, true),
                )
                .await
                .map(|r| (r, rollback_to))
            }
            .await;
            match result {
                Ok((r, rollback_to)) => {
                    status = match &r {
                        Response::TransactionStart(_) => status.to_in_transaction_state(),
                        Response::TransactionEnd(_) => status.to_idle_state(),
                        // ROLLBACK TO SAVEPOINT recovers a failed transaction.
                        _ if rollback_to && matches!(status, TransactionStatus::Error) => {
                            TransactionStatus::Transaction
                        }
                        _ => status,
                    };
                    out.push(r)
                }
                Err(e) => {
                    status = status.to_error_state();
                    session.set_pending_status(status);
                    // Like Postgres: earlier statements' results stand, the rest are skipped.
                    if out.is_empty() {
                        return Err(e.into_pgwire());
                    }
                    out.push(Response::Error(Box::new(e.into_info())));
                    return Ok(out);
                }
            }
        }
        session.set_pending_status(status);
        Ok(out)
    }
}

#[async_trait]
impl ExtendedQueryHandler for QueryHandler {
    type Statement = Prepared;
    type QueryParser = StatementParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    async fn on_parse<C>(&self, client: &mut C, message: Parse) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message
            .name
            .clone()
            .unwrap_or_else(|| DEFAULT_NAME.to_owned());
        let session = session_of(client)?;
        if matches!(client.transaction_status(), TransactionStatus::Error) {
            // Parsing is allowed in a failed transaction only for statements that end it.
            let ends = self
                .shared
                .parse(&message.query)
                .ok()
                .and_then(|s| s.first().and_then(|s| classify(s, &session.user)))
                .and_then(Result::ok)
                .is_some_and(|c| c.ends_failed_transaction());
            if !ends && !message.query.trim().is_empty() {
                return Err(SqlError::in_failed_transaction().into_pgwire());
            }
        }
        match StoredStatement::parse(client, &message, self.parser.clone()).await? {
            Some(stmt) => client.portal_store().put_statement(Arc::new(stmt)),
            None => client.portal_store().put_empty_statement(&name),
        }
        if name != DEFAULT_NAME
            && let Ok(mut p) = session.prepared.lock()
        {
            p.insert(name);
        }
        client
            .send(PgWireBackendMessage::ParseComplete(ParseComplete::new()))
            .await?;
        Ok(())
    }

    /// Execute streams rows to the client as they are produced, in chunks of the client's
    /// row limit (pgwire's default would collect a whole result in memory first).
    async fn on_execute<C>(&self, client: &mut C, message: Execute) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !matches!(client.state(), PgWireConnectionState::ReadyForQuery) {
            return Err(PgWireError::NotReadyForQuery);
        }
        let mut status = client.transaction_status();
        client.set_state(PgWireConnectionState::QueryInProgress);
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        // 0 (or negative) means all rows.
        let max_rows = usize::try_from(message.max_rows).unwrap_or(0);
        let portal = match client.portal_store().get_portal(name) {
            Some(Entry::Value(p)) => p,
            Some(Entry::Empty) => {
                client
                    .feed(PgWireBackendMessage::EmptyQueryResponse(
                        EmptyQueryResponse::new(),
                    ))
                    .await?;
                client.set_state(PgWireConnectionState::ReadyForQuery);
                return Ok(());
            }
            None => return Err(PgWireError::PortalNotFound(name.to_owned())),
        };
        let state = portal.state();
        let initial = matches!(*state.lock().await, PortalExecutionState::Initial);
        if initial {
            match ExtendedQueryHandler::do_query(self, client, &portal, max_rows).await? {
                Response::Query(results) => portal.start(results).await,
                Response::EmptyQuery => {
                    client
                        .feed(PgWireBackendMessage::EmptyQueryResponse(
                            EmptyQueryResponse::new(),
                        ))
                        .await?;
                }
                Response::Execution(tag) => {
                    client
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                    let rollback_to = matches!(
                        portal.statement.statement.kind,
                        PreparedKind::Command(Command::RollbackTo)
                    );
                    if rollback_to && matches!(status, TransactionStatus::Error) {
                        status = TransactionStatus::Transaction;
                    }
                }
                Response::TransactionStart(tag) => {
                    client
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                    status = status.to_in_transaction_state();
                }
                Response::TransactionEnd(tag) => {
                    client
                        .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                        .await?;
                    status = status.to_idle_state();
                    client.portal_store().rm_portal(DEFAULT_NAME);
                }
                Response::Error(e) => {
                    client
                        .feed(PgWireBackendMessage::ErrorResponse((*e).into()))
                        .await?;
                    status = status.to_error_state();
                }
                _ => {
                    return Err(SqlError::new(
                        SqlState::FEATURE_NOT_SUPPORTED,
                        "COPY is not supported",
                    )
                    .into_pgwire());
                }
            }
        }
        let mut guard = state.lock().await;
        if let PortalExecutionState::Suspended(resp) = &mut *guard {
            let mut sent = 0usize;
            let mut finished = false;
            loop {
                if max_rows > 0 && sent == max_rows {
                    break;
                }
                match resp.data_rows().next().await {
                    Some(row) => {
                        client.feed(PgWireBackendMessage::DataRow(row?)).await?;
                        sent += 1;
                    }
                    None => {
                        finished = true;
                        break;
                    }
                }
            }
            if finished {
                let tag = Tag::new(resp.command_tag()).with_rows(sent);
                client
                    .feed(PgWireBackendMessage::CommandComplete(tag.into()))
                    .await?;
                *guard = PortalExecutionState::Finished;
            } else {
                client
                    .feed(PgWireBackendMessage::PortalSuspended(PortalSuspended::new()))
                    .await?;
            }
        } else if matches!(*guard, PortalExecutionState::Finished) && !initial {
            // Executing a finished portal again returns no rows, like Postgres.
            client
                .feed(PgWireBackendMessage::CommandComplete(
                    Tag::new("SELECT").with_rows(0).into(),
                ))
                .await?;
        }
        drop(guard);
        client.set_state(PgWireConnectionState::ReadyForQuery);
        client.set_transaction_status(status);
        Ok(())
    }

    async fn on_close<C>(&self, client: &mut C, message: Close) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let name = message.name.as_deref().unwrap_or(DEFAULT_NAME);
        match message.target_type {
            TARGET_TYPE_BYTE_STATEMENT => {
                client.portal_store().rm_statement(name);
                if let Ok(session) = session_of(client)
                    && let Ok(mut p) = session.prepared.lock()
                {
                    p.remove(name);
                }
            }
            TARGET_TYPE_BYTE_PORTAL => client.portal_store().rm_portal(name),
            _ => {}
        }
        client
            .send(PgWireBackendMessage::CloseComplete(CloseComplete::new()))
            .await?;
        Ok(())
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let params = self.parser.get_parameter_types(&target.statement)?;
        let fields = self.parser.get_result_schema(&target.statement, None)?;
        Ok(DescribeStatementResponse::new(params, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let fields = self.parser.get_result_schema(
            &target.statement.statement,
            Some(&target.result_column_format),
        )?;
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client)?;
        let prepared = &portal.statement.statement;
        check_bind(portal)?;
        let params = match &prepared.kind {
            PreparedKind::Query {
                param_types,
                param_data_types,
                ..
            } => {
                let inferred: Vec<Option<&DataType>> =
                    param_data_types.iter().map(|t| t.as_ref()).collect();
                let server: Vec<Option<&Type>> = param_types.iter().map(Some).collect();
                Some(
                    arrow_pg::datatypes::df::deserialize_parameters_with_server_types(
                        portal, &inferred, &server,
                    )?,
                )
            }
            PreparedKind::Command(_) => None,
        };
        let status = client.transaction_status();
        self.run_prepared(
            client,
            &session,
            prepared,
            params.as_ref(),
            &portal.result_column_format,
            (status, false),
        )
        .await
        .map_err(SqlError::into_pgwire)
    }
}

/// A Bind whose format codes or parameter count do not fit the statement is a protocol
/// violation (08P01), as in Postgres, never an index out of bounds.
fn check_bind(portal: &Portal<Prepared>) -> PgWireResult<()> {
    let violation = |m: String| SqlError::new(SqlState::PROTOCOL_VIOLATION, m).into_pgwire();
    let (columns, params) = match &portal.statement.statement.kind {
        PreparedKind::Query {
            schema,
            param_types,
            ..
        } => (schema.fields().len(), param_types.len()),
        PreparedKind::Command(c) => (show_schema(c).map(|s| s.fields().len()).unwrap_or(0), 0),
    };
    if let Format::Individual(codes) = &portal.result_column_format
        && codes.len() != columns
    {
        return Err(violation(format!(
            "bind message has {} result formats but query has {columns} columns",
            codes.len()
        )));
    }
    if let Format::Individual(codes) = &portal.parameter_format
        && codes.len() != portal.parameters.len()
    {
        return Err(violation(format!(
            "bind message has {} parameter formats but {} parameters",
            codes.len(),
            portal.parameters.len()
        )));
    }
    if portal.parameters.len() != params {
        return Err(violation(format!(
            "bind message supplies {} parameters, but prepared statement requires {params}",
            portal.parameters.len()
        )));
    }
    Ok(())
}

/// Log-and-continue for connection-level failures.
pub fn log_connection_error(addr: SocketAddr, e: &std::io::Error) {
    warn!(%addr, error = %e, "connection ended with an error");
}
