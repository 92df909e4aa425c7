//! The `/health` and `/metrics` HTTP endpoints (design §6.3 contract).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

/// What the endpoints need.
#[derive(Clone)]
pub struct Telemetry {
    pub prometheus: PrometheusHandle,
    pub started: Instant,
    /// Checks reported under `checks` (`"ok"`, `"not_configured"`, or an error).
    pub checks: Arc<dyn Fn() -> Vec<(&'static str, String)> + Send + Sync>,
    /// Whether the daemon receives (the XDP program attached or the sockets bound,
    /// the consumer subscribed) and its database answered: what systemd's readiness
    /// notification says too. `/health` answers before it, with `ready: false`.
    pub ready: Arc<AtomicBool>,
}

/// Builds the router: `GET /health`, `GET /metrics`.
pub fn router(t: Telemetry) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .with_state(t)
}

async fn health(State(t): State<Telemetry>) -> Json<Value> {
    let checks: serde_json::Map<String, Value> = (t.checks)()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Value::String(v)))
        .collect();
    let degraded = checks.values().any(|v| v != "ok" && v != "not_configured");
    Json(json!({
        "status": if degraded { "degraded" } else { "healthy" },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": t.started.elapsed().as_secs(),
        "ready": t.ready.load(Ordering::Relaxed),
        "checks": checks,
    }))
}

async fn metrics(State(t): State<Telemetry>) -> String {
    t.prometheus.run_upkeep();
    t.prometheus.render()
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    t: Telemetry,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(t))
        .with_graceful_shutdown(shutdown)
        .await
}
