//! `/api/v1/alerts`: alerts raised from change events, and their life cycle
//! open -> acknowledged -> resolved (or open -> resolved), recording who and when.

#![allow(
    unused_qualifications,
    reason = "utoipa's params() expansion names the filter type by its full path"
)]

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::audit;
use crate::auth::{Editor, Viewer};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_alerts))
        .routes(routes!(get_alert, update_alert))
}

/// An alert.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct Alert {
    pub id: Uuid,
    pub change_event_id: Option<Uuid>,
    pub rule_id: Option<Uuid>,
    pub rule_name: Option<String>,
    /// info, warning or critical.
    pub severity: String,
    pub title: String,
    pub description: Option<String>,
    /// open, acknowledged or resolved.
    pub status: String,
    pub created_at: Option<DateTime<Utc>>,
    pub acknowledged_by: Option<String>,
    pub acknowledged_at: Option<DateTime<Utc>>,
    pub resolved_by: Option<String>,
    pub resolved_at: Option<DateTime<Utc>>,
}

const ALERT_SELECT: &str = "SELECT id, change_event_id, rule_id, rule_name, severity, title,
    description, COALESCE(status, 'open') AS status, created_at, acknowledged_by,
    acknowledged_at, resolved_by, resolved_at FROM alerts";

/// Filters of `GET /alerts`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertFilter {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// open, acknowledged or resolved.
    pub status: Option<String>,
    /// info, warning or critical.
    pub severity: Option<String>,
    /// The rule's name.
    pub rule: Option<String>,
    /// Created at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
}

const STATUSES: [&str; 3] = ["open", "acknowledged", "resolved"];

impl AlertFilter {
    fn push_where(&self, qb: &mut QueryBuilder<'_, Postgres>) -> Result<(), ApiError> {
        qb.push(" WHERE true");
        if let Some(s) = &self.status {
            if !STATUSES.contains(&s.as_str()) {
                return Err(ApiError::BadRequest(format!(
                    "status {s:?} must be one of {}",
                    STATUSES.join(", ")
                )));
            }
            qb.push(" AND COALESCE(status, 'open') = ")
                .push_bind(s.clone());
        }
        if let Some(s) = &self.severity {
            qb.push(" AND severity = ").push_bind(s.clone());
        }
        if let Some(r) = &self.rule {
            qb.push(" AND rule_name = ").push_bind(r.clone());
        }
        if let Some(s) = self.since {
            qb.push(" AND created_at >= ").push_bind(s);
        }
        Ok(())
    }
}

/// List alerts, newest first.
#[utoipa::path(get, path = "/alerts", tag = "alerts", params(AlertFilter),
    responses((status = 200, body = Page<Alert>), (status = 400, body = Problem)))]
async fn list_alerts(
    State(state): State<AppState>,
    _: Viewer,
    ApiQuery(filter): ApiQuery<AlertFilter>,
) -> Result<ApiJson<Page<Alert>>, ApiError> {
    let page = PageRequest::resolve(filter.page, filter.page_size, &state.config.api.pagination)?;
    let items = fetch_page(
        &state.pool,
        page,
        "alerts",
        ALERT_SELECT,
        "created_at DESC, id",
        |qb| filter.push_where(qb),
    )
    .await?;
    Ok(ApiJson(items))
}

/// Get one alert.
#[utoipa::path(get, path = "/alerts/{id}", tag = "alerts",
    params(("id" = Uuid, Path, description = "alert id")),
    responses((status = 200, body = Alert), (status = 404, body = Problem)))]
async fn get_alert(
    State(state): State<AppState>,
    _: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<Alert>, ApiError> {
    sqlx::query_as::<_, Alert>(&format!("{ALERT_SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .map(ApiJson)
        .ok_or_else(|| ApiError::not_found("alert", id))
}

/// Where an alert goes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AlertTransition {
    Acknowledged,
    Resolved,
}

/// `{"status": "acknowledged" | "resolved"}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AlertPatch {
    pub status: AlertTransition,
}

/// Acknowledge or resolve an alert. Allowed: open -> acknowledged, open -> resolved,
/// acknowledged -> resolved; anything else is 409.
#[utoipa::path(patch, path = "/alerts/{id}", tag = "alerts", request_body = AlertPatch,
    params(("id" = Uuid, Path, description = "alert id")),
    responses((status = 200, body = Alert), (status = 404, body = Problem),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn update_alert(
    State(state): State<AppState>,
    Editor(caller): Editor,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<AlertPatch>,
) -> Result<ApiJson<Alert>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let current: String =
        sqlx::query_scalar("SELECT COALESCE(status, 'open') FROM alerts WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| ApiError::not_found("alert", id))?;
    let sql = match (current.as_str(), patch.status) {
        ("open", AlertTransition::Acknowledged) => {
            "UPDATE alerts SET status = 'acknowledged', acknowledged_by = $2,
                 acknowledged_at = now() WHERE id = $1"
        }
        ("open" | "acknowledged", AlertTransition::Resolved) => {
            "UPDATE alerts SET status = 'resolved', resolved_by = $2, resolved_at = now()
                 WHERE id = $1"
        }
        (from, to) => {
            return Err(ApiError::Conflict(format!(
                "an alert that is {from} cannot become {}",
                serde_json::to_value(to)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            )));
        }
    };
    sqlx::query(sql)
        .bind(id)
        .bind(&caller.subject)
        .execute(&mut *tx)
        .await?;
    let action = match patch.status {
        AlertTransition::Acknowledged => "acknowledge",
        AlertTransition::Resolved => "resolve",
    };
    audit::record(
        &mut tx,
        &caller,
        action,
        "alert",
        Some(id),
        serde_json::json!({"from": current}),
    )
    .await?;
    let alert = sqlx::query_as::<_, Alert>(&format!("{ALERT_SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ApiJson(alert))
}
