//! `/api/v1/discovery/scans`: start and cancel active scans (admin), list scans and
//! read one with its progress (viewer).
//!
//! Refusals, all problem+json: scans disabled (empty `api.discovery.allowed_ranges`)
//! or a target outside every allowed range is 403, because policy says no; a bad
//! CIDR, ports outside `api.discovery.ports` or more hosts than `max_hosts` is 422
//! like any invalid body; more than `max_running_scans` scans at once is 503 (the
//! server is busy, not the caller over a rate: retrying once a scan ends succeeds). A
//! refused request writes nothing. Cancelling a scan that has ended is 409.

#![allow(
    unused_qualifications,
    reason = "utoipa's params() expansion names the filter type by its full path"
)]

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::audit;
use crate::auth::{Admin, Viewer};
use crate::discovery::plan::{self, PlanError};
use crate::discovery::scanner::{self, Pace};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::state::AppState;
use crate::telemetry;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_scans, create_scan))
        .routes(routes!(get_scan, cancel_scan))
}

/// The states of a scan, in the order it passes them.
pub const STATUSES: [&str; 5] = ["queued", "running", "completed", "failed", "cancelled"];

/// A scan and its progress.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct Scan {
    pub id: Uuid,
    /// The network scanned.
    pub cidr: String,
    /// TCP ports tried on every address, ascending.
    pub ports: Vec<i32>,
    /// queued, running, completed, failed or cancelled.
    pub status: String,
    /// Who asked for it.
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Addresses to scan (IPv4 networks wider than /31 exclude network and broadcast).
    pub hosts_total: i64,
    /// Addresses whose every port has answered or timed out.
    pub hosts_scanned: i64,
    /// Addresses where a port accepted or refused a connection.
    pub hosts_up: i64,
    /// New `scan` assets, for addresses no asset owned.
    pub assets_created: i64,
    /// Existing assets refreshed (`last_seen`, the `open_ports` tag).
    pub assets_updated: i64,
    /// `hosts_scanned / hosts_total`, from 0 to 1.
    pub progress: f64,
    /// Address -> open ports, for addresses with at least one.
    #[schema(value_type = Object)]
    pub open_ports: Value,
    /// Why a failed scan failed.
    pub error: Option<String>,
}

const SCAN_SELECT: &str = "SELECT id, cidr::text AS cidr, ports, status, requested_by,
    created_at, started_at, finished_at, hosts_total, hosts_scanned, hosts_up,
    assets_created, assets_updated,
    CASE WHEN hosts_total = 0 THEN 1.0::float8
         ELSE hosts_scanned::float8 / hosts_total END AS progress,
    open_ports, error
    FROM discovery_scans";

async fn fetch_scan(conn: &mut PgConnection, id: Uuid) -> Result<Scan, ApiError> {
    sqlx::query_as::<_, Scan>(&format!("{SCAN_SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found("scan", id))
}

/// Filters of `GET /discovery/scans`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScanFilter {
    /// 1-based page number.
    pub page: Option<u32>,
    /// Items per page (default and maximum from `api.pagination`).
    pub page_size: Option<u32>,
    /// queued, running, completed, failed or cancelled.
    pub status: Option<String>,
}

impl ScanFilter {
    fn push_where(&self, qb: &mut QueryBuilder<'_, Postgres>) -> Result<(), ApiError> {
        qb.push(" WHERE true");
        if let Some(s) = &self.status {
            if !STATUSES.contains(&s.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "status {s:?} must be one of {}",
                    STATUSES.join(", ")
                )));
            }
            qb.push(" AND status = ").push_bind(s.clone());
        }
        Ok(())
    }
}

/// List scans, newest first.
#[utoipa::path(get, path = "/discovery/scans", tag = "discovery", params(ScanFilter),
    responses((status = 200, body = Page<Scan>), (status = 400, body = Problem)))]
async fn list_scans(
    State(state): State<AppState>,
    _: Viewer,
    ApiQuery(filter): ApiQuery<ScanFilter>,
) -> Result<ApiJson<Page<Scan>>, ApiError> {
    let page = PageRequest::resolve(filter.page, filter.page_size, &state.config.api.pagination)?;
    let items = fetch_page(
        &state.pool,
        page,
        "discovery_scans",
        SCAN_SELECT,
        "created_at DESC, id",
        |qb| filter.push_where(qb),
    )
    .await?;
    Ok(ApiJson(items))
}

/// A scan to start.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewScan {
    /// The network to scan, e.g. `10.0.3.0/24` (host bits clear), or one address. It
    /// must lie wholly inside one of `api.discovery.allowed_ranges`.
    pub cidr: String,
    /// TCP ports, each one of `api.discovery.ports`; default all of them.
    pub ports: Option<Vec<i64>>,
}

/// Policy refusals are 403, invalid requests 422; both counted by reason.
impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        metrics::counter!(telemetry::DISCOVERY_REFUSED, "reason" => e.reason()).increment(1);
        if e.is_forbidden() {
            Self::Forbidden(e.to_string())
        } else {
            Self::Unprocessable(e.to_string())
        }
    }
}

/// Start a scan. It runs after the answer, which is the `queued` scan; poll
/// `GET /discovery/scans/{id}` for progress.
#[utoipa::path(post, path = "/discovery/scans", tag = "discovery", request_body = NewScan,
    responses((status = 202, body = Scan),
              (status = 403, body = Problem, description = "not an admin, scans disabled, or a target outside the allowed ranges"),
              (status = 422, body = Problem, description = "bad CIDR, ports not in api.discovery.ports, or too many hosts"),
              (status = 503, body = Problem, description = "api.discovery.max_running_scans scans are running")))]
async fn create_scan(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<NewScan>,
) -> Result<(StatusCode, ApiJson<Scan>), ApiError> {
    let config = &state.config.api.discovery;
    let plan = plan::plan(&body.cidr, body.ports.as_deref(), config)?;
    // Chosen here rather than by the database, so the slot (and with it the cancel
    // switch) is registered under the id before anyone can learn the id.
    let id = Uuid::new_v4();
    let Some(slot) = state.scans.try_take(id) else {
        metrics::counter!(telemetry::DISCOVERY_REFUSED, "reason" => "busy").increment(1);
        return Err(ApiError::Unavailable(format!(
            "{} scans are already running (api.discovery.max_running_scans); retry when one ends",
            config.max_running_scans
        )));
    };
    let ports: Vec<i32> = plan.ports.iter().copied().map(i32::from).collect();
    let mut tx = state.pool.begin().await?;
    sqlx::query(
        "INSERT INTO discovery_scans (id, cidr, ports, requested_by, hosts_total,
             instance_id, heartbeat_at)
         VALUES ($1, $2, $3, $4, $5, $6, now())",
    )
    .bind(id)
    .bind(plan.network)
    .bind(&ports)
    .bind(&caller.subject)
    .bind(i64::from(plan.hosts.len()))
    .bind(state.instance_id)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "create",
        "discovery_scan",
        Some(id),
        json!({"cidr": plan.network.to_string(), "ports": ports, "hosts": plan.hosts.len()}),
    )
    .await?;
    let scan = fetch_scan(&mut tx, id).await?;
    tx.commit().await?;
    // Only after the commit: the scan task updates a row it must be able to see.
    scanner::spawn(
        state.pool.clone(),
        id,
        caller.subject,
        plan,
        Pace::from_config(config),
        slot,
    );
    Ok((StatusCode::ACCEPTED, ApiJson(scan)))
}

/// Get one scan with its progress.
#[utoipa::path(get, path = "/discovery/scans/{id}", tag = "discovery",
    params(("id" = Uuid, Path, description = "scan id")),
    responses((status = 200, body = Scan), (status = 400, body = Problem),
              (status = 404, body = Problem)))]
async fn get_scan(
    State(state): State<AppState>,
    _: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<Scan>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    Ok(ApiJson(fetch_scan(&mut conn, id).await?))
}

/// Cancel a queued or running scan. It is `cancelled` when this answers; probing
/// stops within moments, and what it found until then stays.
#[utoipa::path(delete, path = "/discovery/scans/{id}", tag = "discovery",
    params(("id" = Uuid, Path, description = "scan id")),
    responses((status = 200, body = Scan, description = "the scan, now cancelled"),
              (status = 400, body = Problem), (status = 403, body = Problem),
              (status = 404, body = Problem),
              (status = 409, body = Problem, description = "the scan has already ended")))]
async fn cancel_scan(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<Scan>, ApiError> {
    let mut tx = state.pool.begin().await?;
    // Locked, so a scan completing meanwhile either finishes first (and this is 409)
    // or waits and then sees `cancelled`, which it leaves alone.
    let status: String =
        sqlx::query_scalar("SELECT status FROM discovery_scans WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::not_found("scan", id))?;
    if !matches!(status.as_str(), "queued" | "running") {
        return Err(ApiError::Conflict(format!(
            "scan {id} is {status}; only a queued or running scan can be cancelled"
        )));
    }
    sqlx::query(
        "UPDATE discovery_scans SET status = 'cancelled', finished_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(&mut *tx)
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "cancel",
        "discovery_scan",
        Some(id),
        json!({ "status": status }),
    )
    .await?;
    let scan = fetch_scan(&mut tx, id).await?;
    tx.commit().await?;
    // After the commit: the task may stop at once and must find the row cancelled.
    // No task holds the id when it ended meanwhile (its last write waited for our
    // lock, then left the row cancelled).
    let stopped = state.scans.cancel(id);
    tracing::info!(scan = %id, by = %caller.subject, task = stopped, "discovery scan cancelled");
    Ok(ApiJson(scan))
}
