//! Building Joinery from a config, serving it, and running one statement in-process.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use joinery_engine::{Catalog, JoineryError, SessionFactory};
use joinery_providers::{BuildContext, factory_for};
use pgwire::api::portal::Format;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;
use crate::encode::{ResultEncoder, decode_text_row};
use crate::errors::{SqlError, SqlState, from_datafusion};
use crate::handler::{Handlers, Shared, log_connection_error};

/// Build the catalog and everything a server needs from a config.
pub async fn build(config: &Config) -> Result<Arc<Shared>, JoineryError> {
    let catalog = Catalog::new(config.server.database.clone());
    // Rotated OAuth refresh tokens go back to the store, encrypted.
    let secret_writer: Option<joinery_providers::SecretWriter> = config.secrets.clone().map(|sc| {
        Arc::new(move |name: &str, value: &str| {
            let mut store = sc.open().map_err(|e| e.to_string())?;
            store.rotate(name, value, "oauth-refresh")
        }) as joinery_providers::SecretWriter
    });
    let ctx = BuildContext {
        calls: catalog.calls().clone(),
        secret_writer,
    };
    for spec in &config.connections {
        let factory = factory_for(&spec.kind).ok_or_else(|| {
            JoineryError::config(format!(
                "connection '{}': unknown kind '{}'",
                spec.name, spec.kind
            ))
        })?;
        let connector = factory.build(spec, &ctx)?;
        catalog.add_connection(&spec.name, connector).await?;
        info!(connection = %spec.name, kind = %spec.kind, "connection ready");
    }
    // Record which secrets this server loaded (the store's "last used").
    if let (Some(sc), false) = (&config.secrets, config.secrets_used.is_empty()) {
        match sc.open() {
            Ok(mut store) => {
                if let Err(e) = store.mark_used(&config.secrets_used) {
                    warn!("secret store: cannot record use: {e}");
                }
            }
            Err(e) => warn!("secret store: {e}"),
        }
    }
    if !config.server.access.open_to_all() {
        catalog.add_system_table(
            "grants",
            Arc::new(crate::access::grants_table(config.server.access.clone())),
        );
        catalog.add_system_table(
            "policies",
            Arc::new(crate::access::policies_table(config.server.access.clone())),
        );
    }
    if let Some(sc) = &config.secrets {
        catalog.add_system_table(
            "secrets",
            Arc::new(crate::secrets::secrets_table(sc.clone())),
        );
    }
    if let Some(a) = &config.audit {
        let log = joinery_engine::audit::AuditLog::open(&a.path, a.fail_closed)
            .map_err(|e| JoineryError::config(format!("audit log {}: {e}", a.path.display())))?;
        catalog.set_audit(Arc::new(log));
    }
    let mut factory = SessionFactory::new(catalog, config.server.engine.clone());
    factory.customize(crate::pgcatalog::prepare_template)?;
    let shared = Shared::new(factory, config.server.clone());
    // Every connector call becomes an audit row naming the user and client of its statement.
    let weak = Arc::downgrade(&shared);
    shared.factory.catalog().calls().set_sink(Arc::new(
        move |c: &joinery_engine::rest::fetch::CallRecord| {
            if let Some(shared) = weak.upgrade() {
                shared.audit_call(c);
            }
        },
    ));
    Ok(shared)
}

/// The TLS acceptor of a config (`None` without tls_cert/tls_key).
fn tls_acceptor(shared: &Shared) -> std::io::Result<Option<pgwire::tokio::TlsAcceptor>> {
    let Some((cert, key)) = &shared.config.tls else {
        return Ok(None);
    };
    let (acceptor, end_point) = crate::auth::load_tls(cert, key)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if end_point.is_none() {
        warn!(
            "SCRAM channel binding unavailable: the TLS certificate's signature algorithm has no hash to bind to (SCRAM-SHA-256-PLUS is not offered)"
        );
    }
    if let Ok(mut p) = shared.tls_end_point.lock() {
        *p = end_point.map(Arc::from);
    }
    Ok(Some(acceptor))
}

/// The accepted socket and a second handle on it (a dup of the descriptor) that only watches
/// for the client closing: the protocol loop does not read while a statement runs, so without
/// it a client that disconnects mid-statement would leave the statement running.
fn with_probe(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, Option<tokio::net::TcpStream>)> {
    let std = socket.into_std()?;
    let probe = std.try_clone().ok();
    let socket = tokio::net::TcpStream::from_std(std)?;
    let probe = probe.and_then(|p| tokio::net::TcpStream::from_std(p).ok());
    Ok((socket, probe))
}

/// Cancel `gone` once the peer has closed its end. Returns then, and never before: while
/// bytes wait for the protocol loop (the next pipelined message) it looks again a little later.
async fn watch_close(probe: tokio::net::TcpStream, gone: CancellationToken) {
    loop {
        match probe.ready(tokio::io::Interest::READABLE).await {
            Ok(r) if r.is_read_closed() => break,
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(_) => break,
        }
    }
    gone.cancel();
    std::future::pending::<()>().await
}

/// A server accepting connections in the background.
pub struct RunningServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

struct ConnectionSlot(Arc<Shared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.active_connections.fetch_sub(1, Ordering::Relaxed);
        self.0.metrics().client_connections.dec();
    }
}

/// How long a shutdown waits for open sessions before closing them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl RunningServer {
    /// Bind `addr` (port 0 picks a free port) and start accepting.
    pub async fn start(shared: Arc<Shared>, addr: SocketAddr) -> std::io::Result<RunningServer> {
        let tls = tls_acceptor(&shared)?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                    accepted = listener.accept() => match accepted {
                        Ok((socket, peer)) => {
                            let _ = socket.set_nodelay(true);
                            let (socket, probe) = match with_probe(socket) {
                                Ok(s) => s,
                                Err(e) => {
                                    log_connection_error(peer, &e);
                                    continue;
                                }
                            };
                            shared.active_connections.fetch_add(1, Ordering::Relaxed);
                            shared.metrics().client_connections.inc();
                            shared.metrics().client_connections_total.inc();
                            let slot = ConnectionSlot(shared.clone());
                            let gone = CancellationToken::new();
                            let handlers = Arc::new(Handlers::new(shared.clone(), gone.clone()));
                            let tls = tls.clone();
                            let shared_for_close = shared.clone();
                            conns.spawn(async move {
                                let _slot = slot;
                                let serve = pgwire::tokio::process_socket(socket, tls, handlers);
                                let result = match probe {
                                    Some(probe) => {
                                        let watch = watch_close(probe, gone.clone());
                                        tokio::pin!(serve, watch);
                                        loop {
                                            tokio::select! {
                                                r = &mut serve => break r,
                                                () = &mut watch => {}
                                            }
                                        }
                                    }
                                    None => serve.await,
                                };
                                gone.cancel();
                                shared_for_close.forget_closed_sessions();
                                if let Err(e) = result {
                                    log_connection_error(peer, &e);
                                }
                            });
                        }
                        Err(e) => {
                            // Out of file descriptors and similar: back off instead of spinning.
                            warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
            drop(listener);
            info!(open = conns.len(), "shutting down: no new connections");
            let drain = async { while conns.join_next().await.is_some() {} };
            if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
                warn!(
                    open = conns.len(),
                    "closing sessions still open after the grace period"
                );
                conns.shutdown().await;
            }
        });
        info!(%addr, "listening (Postgres wire protocol)");
        Ok(RunningServer {
            addr,
            shutdown,
            task,
        })
    }

    /// Stop accepting, let open sessions finish (up to the grace period), then return.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }

    /// A handle that triggers shutdown from elsewhere.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// One statement's result in text form, exactly as a Postgres client would receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct TextResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

/// Run statements in-process as `user` (for `joinery query` and the golden-SQL suite).
pub async fn run_local(
    shared: &Arc<Shared>,
    user: &str,
    sql: &str,
) -> Result<Vec<TextResult>, SqlError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], 0));
    let database = shared.config.database.clone();
    let session = shared
        .open_session(
            shared.next_pid(),
            user,
            &database,
            addr,
            &Default::default(),
            CancellationToken::new(),
        )
        .await?;
    let mut results = Vec::new();
    for stmt in shared.parse(sql)? {
        if crate::commands::classify(&stmt, user).is_some() {
            return Err(SqlError::new(
                SqlState::FEATURE_NOT_SUPPORTED,
                "session commands (SET, BEGIN, ...) have no effect in `joinery query`; connect with psql instead",
            ));
        }
        let text = stmt.to_string();
        let (plan, names) = crate::handler::plan_statement(&session, stmt).await?;
        // A query id links the calls to the statement (progress, joinery.queries).
        let query_id = shared.next_query_id();
        session.set_query_id(query_id);
        shared.metrics().begin_query(query_id);
        let started = std::time::Instant::now();
        let run = async {
            let df = session
                .ctx
                .execute_logical_plan(plan)
                .await
                .map_err(|e| from_datafusion(&e))?;
            let schema = df.schema().as_arrow().clone();
            let batches = df.collect().await.map_err(|e| from_datafusion(&e))?;
            Ok::<_, SqlError>((schema, batches))
        }
        .await;
        let status = match &run {
            Ok(_) => "ok",
            Err(e) => e.state.0,
        };
        let rows = run
            .as_ref()
            .ok()
            .map(|(_, b)| b.iter().map(|b| b.num_rows() as u64).sum());
        shared
            .metrics()
            .finish_query(joinery_engine::metrics::QueryRecord::finished(
                query_id,
                user,
                &text,
                started.elapsed(),
                rows,
                status,
            ));
        let (schema, batches) = run?;
        let opts = Arc::new(session.settings()?.format_options());
        let enc = ResultEncoder::with_names(&schema, names.as_deref(), &Format::UnifiedText, opts)
            .map_err(|e| SqlError::new(SqlState::INTERNAL_ERROR, e.to_string()))?;
        let mut rows = Vec::new();
        for b in batches {
            for r in enc
                .encode(b)
                .map_err(|e| SqlError::new(SqlState::INTERNAL_ERROR, e.to_string()))?
            {
                rows.push(decode_text_row(&r));
            }
        }
        results.push(TextResult {
            columns: enc.fields.iter().map(|f| f.name().to_string()).collect(),
            rows,
        });
    }
    Ok(results)
}
