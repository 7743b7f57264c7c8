//! The observability listener (default 127.0.0.1:9187; `[server] metrics_listen`):
//! `GET /metrics` in the Prometheus text format and `GET /healthz` (liveness plus each
//! connection's state as JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

use crate::handler::Shared;

/// A running listener; dropping it stops it.
pub struct ObserveServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for ObserveServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Bind `addr` (port 0 picks one) and serve `/metrics` and `/healthz` in the background.
pub async fn start(shared: Arc<Shared>, addr: SocketAddr) -> std::io::Result<ObserveServer> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let stop = CancellationToken::new();
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(shared);
    let token = stop.clone();
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::warn!("metrics listener stopped: {e}");
        }
    });
    Ok(ObserveServer { addr, stop })
}

async fn metrics(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        shared.metrics().encode(),
    )
}

/// 200 while the server runs; per connection `up`, `degraded` (failures since its last
/// success) or `down` (circuit breaker open), with request and error counts.
async fn healthz(State(shared): State<Arc<Shared>>) -> impl IntoResponse {
    let stats = shared.metrics().connection_stats();
    let mut conns = serde_json::Map::new();
    for c in shared.factory.catalog().connections() {
        let st = stats.get(&c.name).cloned().unwrap_or_default();
        let failing = match (&st.last_error, st.last_success) {
            (Some((at, _)), Some(ok)) => *at > ok,
            (Some(_), None) => true,
            _ => false,
        };
        let state = if st.breaker_open {
            "down"
        } else if failing {
            "degraded"
        } else {
            "up"
        };
        conns.insert(
            c.name.clone(),
            serde_json::json!({
                "kind": c.kind,
                "state": state,
                "requests": st.requests,
                "errors": st.error_count(),
                // Not the error text: its URL can carry other users' filter values. Admins
                // read it in joinery.connector_stats.
            }),
        );
    }
    let body = serde_json::json!({
        "status": "ok",
        "client_connections": shared.active_connections.load(std::sync::atomic::Ordering::Relaxed),
        "connections": conns,
    });
    (StatusCode::OK, axum::Json(body))
}
