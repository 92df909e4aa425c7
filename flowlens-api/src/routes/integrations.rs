//! `/api/v1/integrations`: the graph for other systems. ServiceNow: the CMDB payload
//! on demand, the scheduled push's status, and a push now.

#![allow(
    unused_qualifications,
    reason = "utoipa's params() expansion names the filter type by its full path"
)]

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{Admin, Viewer};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiQuery};
use crate::servicenow::payload::Payload;
use crate::servicenow::{self, PushReport, Scope};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(servicenow_payload))
        .routes(routes!(servicenow_status))
        .routes(routes!(servicenow_push))
}

/// What to export. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PayloadFilter {
    /// Include assets outside your networks and relations to them (default:
    /// `api.integrations.servicenow.include_external`).
    pub include_external: Option<bool>,
    /// Include stale assets and dependencies (default:
    /// `api.integrations.servicenow.include_stale`).
    pub include_stale: Option<bool>,
    /// Only assets of this environment, and relations between them.
    pub environment: Option<String>,
}

/// The graph as one ServiceNow Identification and Reconciliation payload (`items`:
/// CIs with their FlowLens id as `source_native_key`; `relations` of type
/// `Depends on::Used by`, parent the dependent CI), ready for
/// `POST /api/now/identifyreconcile`.
#[utoipa::path(get, path = "/integrations/servicenow/payload", tag = "integrations",
    params(PayloadFilter),
    responses((status = 200, body = Payload), (status = 400, body = Problem)))]
async fn servicenow_payload(
    State(state): State<AppState>,
    _: Viewer,
    ApiQuery(filter): ApiQuery<PayloadFilter>,
) -> Result<ApiJson<Payload>, ApiError> {
    let config = &state.config.api.integrations.servicenow;
    if filter
        .environment
        .as_deref()
        .is_some_and(|e| e.is_empty() || e.len() > 64)
    {
        return Err(ApiError::BadRequest(
            "environment must be 1 to 64 characters".to_owned(),
        ));
    }
    let scope = Scope {
        include_external: filter.include_external.unwrap_or(config.include_external),
        include_stale: filter.include_stale.unwrap_or(config.include_stale),
        environment: filter.environment,
    };
    let (assets, deps) = servicenow::load(&state.pool, &scope).await?;
    let config = state.config.clone();
    let payload = state
        .compute(move || {
            let sn = &config.api.integrations.servicenow;
            servicenow::payload::Mapping {
                source_name: &sn.data_source,
                classes: &sn.classes,
            }
            .payload(&assets, &deps)
        })
        .await?;
    Ok(ApiJson(payload))
}

/// The scheduled push on this instance.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushStatus {
    /// `api.integrations.servicenow.enabled`.
    pub enabled: bool,
    /// This instance pushes on schedule (one instance among several does).
    pub leader: bool,
    /// A push is running on this instance.
    pub running: bool,
    /// Pushes this instance has made since it started.
    pub pushes: u64,
    pub interval_seconds: u64,
    /// This instance's last push, if it made one.
    pub last_push: Option<PushReport>,
}

/// The scheduled push's state on the instance that answers.
#[utoipa::path(get, path = "/integrations/servicenow/status", tag = "integrations",
    responses((status = 200, body = PushStatus)))]
async fn servicenow_status(State(state): State<AppState>, _: Viewer) -> ApiJson<PushStatus> {
    let config = &state.config.api.integrations.servicenow;
    let (leader, running, pushes, last_push) = match state.servicenow.get() {
        Some(s) => {
            let (last, running) = s.last.lock().map_or((None, false), |l| l.clone());
            (
                s.leader.load(std::sync::atomic::Ordering::Relaxed),
                running,
                s.pushes.load(std::sync::atomic::Ordering::Acquire),
                last,
            )
        }
        None => (false, false, 0, None),
    };
    ApiJson(PushStatus {
        enabled: config.enabled,
        leader,
        running,
        pushes,
        interval_seconds: config.interval_seconds,
        last_push,
    })
}

/// Accepted: the push begins in the background.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushAccepted {
    /// Where to follow it.
    pub status: &'static str,
}

/// Push the graph to the configured instance now (from this instance, leader or not);
/// follow it at `/integrations/servicenow/status`.
#[utoipa::path(post, path = "/integrations/servicenow/push", tag = "integrations",
    responses((status = 202, body = PushAccepted), (status = 409, body = Problem)))]
async fn servicenow_push(
    State(state): State<AppState>,
    _: Admin,
) -> Result<(StatusCode, ApiJson<PushAccepted>), ApiError> {
    let schedule = state.servicenow.get().ok_or_else(|| {
        ApiError::Conflict(
            "the ServiceNow push is not enabled (api.integrations.servicenow.enabled)".to_owned(),
        )
    })?;
    schedule.now.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(PushAccepted {
            status: "/api/v1/integrations/servicenow/status",
        }),
    ))
}
