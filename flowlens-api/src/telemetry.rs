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
/// ServiceNow pushes ended, by `outcome` (`ok`, `partial`, `failed`, `skipped`: another
/// push was running).
pub const SERVICENOW_PUSHES: &str = "flowlens_api_servicenow_pushes_total";
/// Records of ServiceNow pushes, by `kind` (`ci`, `relation`) and `outcome`
/// (`accepted`, `rejected` by the IRE, `unsent`: their request failed).
pub const SERVICENOW_RECORDS: &str = "flowlens_api_servicenow_records_total";
/// When the last push that delivered every record ended (Unix seconds).
pub const SERVICENOW_LAST_SUCCESS: &str = "flowlens_api_servicenow_last_success_timestamp_seconds";
/// 1 on the instance that pushes on schedule (holds the lock), else 0.
pub const SERVICENOW_LEADER: &str = "flowlens_api_servicenow_leader";

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// As `# TYPE` says it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// Every metric of the API: (name, type, labels, meaning). Registered with the
/// recorder (`# HELP` lines, as `promtool check metrics` wants) and the source of
/// `docs/metrics-api.md`; a test fails when the code and this list differ.
pub const CATALOGUE: &[(&str, Kind, &[&str], &str)] = &[
    (
        REQUESTS,
        Kind::Counter,
        &["route", "method", "status"],
        "Requests answered, by route template, method and status.",
    ),
    (
        REQUEST_SECONDS,
        Kind::Histogram,
        &["route", "method"],
        "Request latency, by route template and method.",
    ),
    (
        RATE_LIMITED,
        Kind::Counter,
        &["scope"],
        "Requests refused with 429 by a rate limit: caller (after authentication) or address (before it).",
    ),
    (
        CONNECTIONS_REFUSED,
        Kind::Counter,
        &["reason"],
        "TCP connections closed on arrival: max_connections or per_address.",
    ),
    (
        REQUESTS_SHED,
        Kind::Counter,
        &[],
        "Requests refused (429) at api.limits.max_concurrent_requests.",
    ),
    (
        REQUEST_TIMEOUTS,
        Kind::Counter,
        &[],
        "Requests answered 503 at api.limits.request_timeout_seconds.",
    ),
    (
        REDIS_FALLBACKS,
        Kind::Counter,
        &["use"],
        "Requests that used this instance's memory because Redis did not answer (rate_limit, cache).",
    ),
    (
        REDIS_UP,
        Kind::Gauge,
        &[],
        "1 while Redis answers, 0 during an outage (absent when nothing uses Redis).",
    ),
    (
        HEALTH_PROBES,
        Kind::Counter,
        &[],
        "Queries /health sent to PostgreSQL (at most one a second).",
    ),
    (
        CACHE_LOOKUPS,
        Kind::Counter,
        &["cache", "result"],
        "Cache lookups, by cache and result (hit, miss).",
    ),
    (
        CACHE_INVALIDATIONS,
        Kind::Counter,
        &[],
        "Cache invalidations on graph changes.",
    ),
    (
        WEBSOCKET_CONNECTIONS,
        Kind::Gauge,
        &[],
        "Open WebSocket connections.",
    ),
    (
        WEBSOCKET_REFUSED,
        Kind::Counter,
        &["reason"],
        "WebSocket upgrades refused: max_connections, per_caller, origin.",
    ),
    (
        WEBSOCKET_CLOSED,
        Kind::Counter,
        &["reason"],
        "WebSockets the server closed: client_data, too_large, expired, revoked, unresponsive.",
    ),
    (
        KEY_NOTIFICATIONS,
        Kind::Counter,
        &[],
        "API key creations and revocations heard from PostgreSQL (any instance's).",
    ),
    (
        CHANGE_NOTIFICATIONS,
        Kind::Counter,
        &[],
        "Change notifications received from PostgreSQL.",
    ),
    (
        SNAPSHOT_RELOADS,
        Kind::Counter,
        &[],
        "Graph snapshot reloads (for the analyses).",
    ),
    (
        SNAPSHOT_SECONDS,
        Kind::Histogram,
        &[],
        "Time a graph snapshot reload took.",
    ),
    (
        DISCOVERY_PROBES,
        Kind::Counter,
        &["result"],
        "Discovery connection attempts: open, refused, no_answer.",
    ),
    (
        DISCOVERY_SCANS,
        Kind::Counter,
        &["status"],
        "Discovery scans ended: completed, failed, cancelled, abandoned.",
    ),
    (
        DISCOVERY_REFUSED,
        Kind::Counter,
        &["reason"],
        "Scan requests refused, by reason (a plan refusal, or busy).",
    ),
    (
        SERVICENOW_PUSHES,
        Kind::Counter,
        &["outcome"],
        "ServiceNow CMDB pushes ended: ok, partial (records rejected or unsent), failed, skipped (another push was running).",
    ),
    (
        SERVICENOW_RECORDS,
        Kind::Counter,
        &["kind", "outcome"],
        "Records of ServiceNow pushes, by kind (ci, relation) and outcome (accepted, rejected by the IRE, unsent).",
    ),
    (
        SERVICENOW_LAST_SUCCESS,
        Kind::Gauge,
        &[],
        "When the last ServiceNow push that delivered every record (outcome ok) ended (Unix seconds).",
    ),
    (
        SERVICENOW_LEADER,
        Kind::Gauge,
        &[],
        "1 on the API instance that pushes to ServiceNow on schedule, else 0.",
    ),
];

fn describe(recorder: &impl metrics::Recorder) {
    for (name, kind, _, help) in CATALOGUE {
        let (key, help) = (
            metrics::KeyName::from(*name),
            metrics::SharedString::from(*help),
        );
        match kind {
            Kind::Counter => recorder.describe_counter(key, None, help),
            Kind::Gauge => recorder.describe_gauge(key, None, help),
            Kind::Histogram => recorder.describe_histogram(key, None, help),
        }
    }
}

/// `docs/metrics-api.md`.
pub fn markdown() -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# Metrics of flowlens-api\n\n<!-- Generated from the code's metric catalogue; a \
         test fails when it is stale (FLOWLENS_BLESS=1 rewrites it). -->\n\n\
         `flowlens-api serve` serves these at `GET /metrics` (and `/api/v1/admin/metrics`). \
         Labels come from fixed sets: the route template (never the raw path), a standard \
         method or `other`, the status code.\n\n\
         | metric | type | labels | meaning |\n|---|---|---|---|\n",
    );
    for (name, kind, labels, help) in CATALOGUE {
        let labels = labels
            .iter()
            .map(|l| format!("`{l}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(out, "| `{name}` | {} | {labels} | {help} |", kind.as_str());
    }
    out
}

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
            describe(&recorder);
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("src is readable").flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn every_metric_is_in_the_catalogue_and_docs_are_current() {
        let mut files = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut code = BTreeSet::new();
        for f in &files {
            let text = std::fs::read_to_string(f).expect("a source file");
            for (i, _) in text.match_indices("\"flowlens_") {
                let rest = &text[i + 1..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                if end > "flowlens_".len() && rest[end..].starts_with('"') {
                    code.insert(rest[..end].to_owned());
                }
            }
        }
        // PostgreSQL notification channels, not metrics.
        code.remove("flowlens_changes");
        code.remove("flowlens_api_keys");
        let listed: BTreeSet<String> = CATALOGUE.iter().map(|m| m.0.to_owned()).collect();
        assert_eq!(code, listed, "metric names in the code and in CATALOGUE");
        for (name, kind, _, help) in CATALOGUE {
            assert_eq!(*kind == Kind::Counter, name.ends_with("_total"), "{name}");
            assert!(!help.is_empty(), "{name}");
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics-api.md");
        let bless = "cargo test -p flowlens-api --lib telemetry";
        flowlens_docgen::check_current(&path, &markdown(), bless).expect("a current file");
    }
}
