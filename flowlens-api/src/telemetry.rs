//! Prometheus metrics of the API: names as consts, the recorder, and the middleware
//! that counts and times every request by its route template (never the raw path, so
//! the label set stays bounded however many asset ids are asked for). Every label is
//! from a fixed set: the route template or "unmatched", one of the nine standard
//! methods or "other" (any token is a valid HTTP method, so raw methods would let an
//! anonymous caller create series without limit), and the status code the server
//! itself answered.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Requests answered, by `route`, `method` and `status`.
pub const REQUESTS: &str = "flowlens_api_requests_total";
/// Request latency histogram, by `route` and `method`.
pub const REQUEST_SECONDS: &str = "flowlens_api_request_duration_seconds";
/// Requests refused with 429 by a rate limit, by `scope`: `caller` (after
/// authentication, `api.rate_limiting.default_limit`/`burst_limit`) or `address`
/// (before it, `per_address_limit`/`per_address_burst`).
pub const RATE_LIMITED: &str = "flowlens_api_rate_limited_total";
/// TCP connections closed on arrival, by `reason`: `max_connections` or
/// `per_address` (`api.limits.max_connections_per_address`).
pub const CONNECTIONS_REFUSED: &str = "flowlens_api_connections_refused_total";
/// Requests refused (429) at `api.limits.max_concurrent_requests`.
pub const REQUESTS_SHED: &str = "flowlens_api_requests_shed_total";
/// Requests answered 503 at `api.limits.request_timeout_seconds`.
pub const REQUEST_TIMEOUTS: &str = "flowlens_api_request_timeouts_total";
/// Requests that used this instance's memory because Redis did not answer, by `use`
/// (`rate_limit`, `cache`).
pub const REDIS_FALLBACKS: &str = "flowlens_api_redis_fallbacks_total";
/// 1 while Redis answers, 0 during an outage (absent when no backend uses Redis).
pub const REDIS_UP: &str = "flowlens_api_redis_up";
/// Queries health has sent to PostgreSQL (at most one a second, however often it is
/// asked).
pub const HEALTH_PROBES: &str = "flowlens_api_health_probes_total";
/// Cache lookups, by `cache` and `result` (`hit`, `miss`).
pub const CACHE_LOOKUPS: &str = "flowlens_api_cache_lookups_total";
/// Cache invalidations on graph changes.
pub const CACHE_INVALIDATIONS: &str = "flowlens_api_cache_invalidations_total";
/// Open WebSocket connections.
pub const WEBSOCKET_CONNECTIONS: &str = "flowlens_api_websocket_connections";
/// WebSocket upgrades refused, by `reason`: `max_connections`, `per_caller` (the
/// caller's `api.websocket.max_connections_per_caller`), `origin` (a cross-site page).
pub const WEBSOCKET_REFUSED: &str = "flowlens_api_websocket_refused_total";
/// WebSockets the server closed, by `reason`: `client_data` (clients never send data),
/// `too_large`, `expired` (the token), `revoked` (the API key), `unresponsive`.
pub const WEBSOCKET_CLOSED: &str = "flowlens_api_websocket_closed_total";
/// API key creations and revocations heard from PostgreSQL (any instance's).
pub const KEY_NOTIFICATIONS: &str = "flowlens_api_key_notifications_total";
/// Change notifications received from PostgreSQL.
pub const CHANGE_NOTIFICATIONS: &str = "flowlens_api_change_notifications_total";
/// Graph snapshot reloads and their duration.
pub const SNAPSHOT_RELOADS: &str = "flowlens_api_graph_snapshot_reloads_total";
pub const SNAPSHOT_SECONDS: &str = "flowlens_api_graph_snapshot_seconds";
/// Discovery connection attempts, by `result` (`open`, `refused`, `no_answer`).
pub const DISCOVERY_PROBES: &str = "flowlens_api_discovery_probes_total";
/// Discovery scans ended, by `status` (`completed`, `failed`, `cancelled`, `abandoned`:
/// another instance failed it as orphaned while this one stalled).
pub const DISCOVERY_SCANS: &str = "flowlens_api_discovery_scans_total";
/// Scan requests refused, by `reason` (a plan refusal or `busy`).
pub const DISCOVERY_REFUSED: &str = "flowlens_api_discovery_refused_total";

/// The process-wide recorder (installed once; tests build many apps in one process).
///
/// # Panics
/// Never: the bucket list is a non-empty constant.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    &[
                        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                        10.0,
                    ],
                )
                .expect("the bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist (a test harness); ours still renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The `method` label: a standard method's name, else "other".
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Counts and times each request.
pub async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = method_label(request.method());
    let start = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::histogram!(REQUEST_SECONDS, "route" => route.clone(), "method" => method)
        .record(start.elapsed().as_secs_f64());
    metrics::counter!(REQUESTS, "route" => route, "method" => method, "status" => status)
        .increment(1);
    response
}
