//! `/api/v1/changes`: the change events the daemon (and API edits) recorded.

#![allow(
    unused_qualifications,
    reason = "utoipa's params() expansion names the filter type by its full path"
)]

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Viewer;
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_changes))
        .routes(routes!(get_change))
}

/// One change of the graph, with the state before and after.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct ChangeEvent {
    pub id: Uuid,
    /// `new_asset`, `new_dependency`, `removed_asset`, `removed_dependency`,
    /// `asset_changed`, `dependency_changed`.
    pub change_type: String,
    /// asset or dependency.
    pub entity_type: String,
    pub entity_id: Uuid,
    pub detected_at: DateTime<Utc>,
    #[schema(value_type = Option<Object>)]
    pub before_state: Option<Value>,
    #[schema(value_type = Option<Object>)]
    pub after_state: Option<Value>,
    pub processed: Option<bool>,
    pub processed_at: Option<DateTime<Utc>>,
}

const CHANGE_SELECT: &str = "SELECT c.id, c.change_type, c.entity_type, c.entity_id,
    c.detected_at, c.before_state, c.after_state, c.processed, c.processed_at
    FROM change_events c";

/// Filters of `GET /changes`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ChangeFilter {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// Change type (`new_dependency`, ...).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub change_type: Option<String>,
    /// Entity type: `asset` or `dependency`.
    pub entity: Option<String>,
    pub entity_id: Option<Uuid>,
    /// Detected at or after (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Detected before (RFC 3339).
    pub until: Option<DateTime<Utc>>,
}

impl ChangeFilter {
    fn push_where(&self, qb: &mut QueryBuilder<'_, Postgres>) {
        qb.push(" WHERE true");
        if let Some(t) = &self.change_type {
            qb.push(" AND c.change_type = ").push_bind(t.clone());
        }
        if let Some(e) = &self.entity {
            qb.push(" AND c.entity_type = ").push_bind(e.clone());
        }
        if let Some(id) = self.entity_id {
            qb.push(" AND c.entity_id = ").push_bind(id);
        }
        if let Some(s) = self.since {
            qb.push(" AND c.detected_at >= ").push_bind(s);
        }
        if let Some(u) = self.until {
            qb.push(" AND c.detected_at < ").push_bind(u);
        }
    }
}

/// List change events, newest first.
#[utoipa::path(get, path = "/changes", tag = "changes", params(ChangeFilter),
    responses((status = 200, body = Page<ChangeEvent>), (status = 400, body = Problem)))]
async fn list_changes(
    State(state): State<AppState>,
    _: Viewer,
    ApiQuery(filter): ApiQuery<ChangeFilter>,
) -> Result<ApiJson<Page<ChangeEvent>>, ApiError> {
    let page = PageRequest::resolve(filter.page, filter.page_size, &state.config.api.pagination)?;
    let items = fetch_page(
        &state.pool,
        page,
        "change_events c",
        CHANGE_SELECT,
        "c.detected_at DESC, c.id",
        |qb| {
            filter.push_where(qb);
            Ok(())
        },
    )
    .await?;
    Ok(ApiJson(items))
}

/// Get one change event.
#[utoipa::path(get, path = "/changes/{id}", tag = "changes",
    params(("id" = Uuid, Path, description = "change event id")),
    responses((status = 200, body = ChangeEvent), (status = 404, body = Problem)))]
async fn get_change(
    State(state): State<AppState>,
    _: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<ChangeEvent>, ApiError> {
    sqlx::query_as::<_, ChangeEvent>(&format!("{CHANGE_SELECT} WHERE c.id = $1"))
        .bind(id)
        .fetch_optional(&state.pool)
        .await?
        .map(ApiJson)
        .ok_or_else(|| ApiError::not_found("change event", id))
}
