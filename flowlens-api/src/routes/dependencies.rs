//! `/api/v1/dependencies`: list (filters), declare manual dependencies, read, patch the
//! human parts (tags, notes, confidence), delete.

#![allow(
    unused_qualifications,
    reason = "utoipa's params() expansion names the filter type by its full path"
)]

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::{FromRow, PgConnection, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{double_option, pick_fields, problems};
use crate::audit;
use crate::auth::{Editor, Viewer};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::pagination::{Page, PageRequest, fetch_page};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_dependencies, create_dependency))
        .routes(routes!(
            get_dependency,
            update_dependency,
            delete_dependency
        ))
}

/// A dependency: `source` (the client) uses `target`'s service on `protocol`/`port`.
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct Dependency {
    pub id: Uuid,
    pub source_asset_id: Uuid,
    pub source_name: Option<String>,
    pub target_asset_id: Uuid,
    pub target_name: Option<String>,
    /// IP protocol number (6 tcp, 17 udp, ...).
    pub protocol: i16,
    /// The service port on the target; 0 for a folded dynamic-port dependency
    /// (`inferred_service` "dynamic": passive FTP data, RPC, RTP), whose ports are
    /// `port_range_min`..=`port_range_max`.
    pub port: i32,
    pub port_range_min: Option<i32>,
    pub port_range_max: Option<i32>,
    pub inferred_service: Option<String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub total_bytes: Option<i64>,
    pub total_packets: Option<i64>,
    pub total_flows: Option<i64>,
    pub avg_flows_per_hour: Option<f32>,
    pub direction: Option<String>,
    pub is_internal: Option<bool>,
    pub confidence: Option<f32>,
    #[schema(value_type = Object)]
    pub tags: Value,
    pub notes: Option<String>,
    /// flow or manual.
    pub discovery_source: String,
    /// Fields a person set (confidence, tags, notes): flows never overwrite them.
    pub user_fields: Vec<String>,
    pub stale: bool,
    pub created_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
}

/// A dependency with its traffic over the last 24 hours (from `flow_stats`).
#[derive(Debug, Clone, Serialize, FromRow, ToSchema)]
pub struct DependencyWithStats {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub dependency: Dependency,
    pub bytes_24h: i64,
    pub flows_24h: i64,
}

/// Columns of [`DependencyWithStats`], from `dependencies d`.
pub const DEPENDENCY_SELECT: &str = "SELECT d.id, d.source_asset_id, s.name AS source_name,
    d.target_asset_id, t.name AS target_name, d.protocol, d.port, d.port_range_min,
    d.port_range_max, d.inferred_service,
    d.first_seen, d.last_seen, d.total_bytes, d.total_packets, d.total_flows,
    d.avg_flows_per_hour, d.direction, d.is_internal, d.confidence,
    COALESCE(d.tags, '{}'::jsonb) AS tags, d.notes, d.discovery_source, d.user_fields,
    d.stale,
    d.created_at, d.updated_at,
    COALESCE(fs.bytes, 0)::int8 AS bytes_24h, COALESCE(fs.flows, 0)::int8 AS flows_24h
    FROM dependencies d
    JOIN assets s ON s.id = d.source_asset_id
    JOIN assets t ON t.id = d.target_asset_id
    LEFT JOIN LATERAL (
        SELECT sum(f.byte_count) AS bytes, sum(f.flow_count) AS flows FROM flow_stats f
        WHERE f.source_asset_id = d.source_asset_id AND f.target_asset_id = d.target_asset_id
          AND f.protocol = d.protocol AND f.port = d.port
          AND f.time >= now() - interval '24 hours'
    ) fs ON true";

/// Filters of `GET /dependencies`. Unknown parameters are refused.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DependencyFilter {
    pub page: Option<u32>,
    pub page_size: Option<u32>,
    /// The client asset.
    pub source_asset_id: Option<Uuid>,
    /// The server asset.
    pub target_asset_id: Option<Uuid>,
    /// Either end.
    pub asset_id: Option<Uuid>,
    pub port: Option<u16>,
    pub protocol: Option<u8>,
    /// Inferred service name (`postgresql`, `https`, ...).
    pub service: Option<String>,
    /// true: both ends internal; false: egress, ingress or external.
    pub internal: Option<bool>,
    pub stale: Option<bool>,
    /// At least this many bytes in total.
    pub min_bytes: Option<i64>,
    /// Seen at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    pub discovery_source: Option<String>,
}

impl DependencyFilter {
    fn push_where(&self, qb: &mut QueryBuilder<'_, Postgres>) {
        qb.push(" WHERE true");
        for (column, value) in [
            ("d.source_asset_id", self.source_asset_id),
            ("d.target_asset_id", self.target_asset_id),
        ] {
            if let Some(v) = value {
                qb.push(format_args!(" AND {column} = ")).push_bind(v);
            }
        }
        if let Some(a) = self.asset_id {
            qb.push(" AND (d.source_asset_id = ")
                .push_bind(a)
                .push(" OR d.target_asset_id = ")
                .push_bind(a)
                .push(")");
        }
        if let Some(p) = self.port {
            qb.push(" AND d.port = ").push_bind(i32::from(p));
        }
        if let Some(p) = self.protocol {
            qb.push(" AND d.protocol = ").push_bind(i16::from(p));
        }
        if let Some(s) = &self.service {
            qb.push(" AND d.inferred_service = ").push_bind(s.clone());
        }
        if let Some(i) = self.internal {
            qb.push(" AND COALESCE(d.is_internal, true) = ")
                .push_bind(i);
        }
        if let Some(s) = self.stale {
            qb.push(" AND d.stale = ").push_bind(s);
        }
        if let Some(b) = self.min_bytes {
            qb.push(" AND COALESCE(d.total_bytes, 0) >= ").push_bind(b);
        }
        if let Some(since) = self.since {
            qb.push(" AND d.last_seen >= ").push_bind(since);
        }
        if let Some(s) = &self.discovery_source {
            qb.push(" AND d.discovery_source = ").push_bind(s.clone());
        }
    }
}

/// List dependencies.
#[utoipa::path(get, path = "/dependencies", tag = "dependencies", params(DependencyFilter),
    responses((status = 200, body = Page<DependencyWithStats>), (status = 400, body = Problem)))]
async fn list_dependencies(
    State(state): State<AppState>,
    _: Viewer,
    ApiQuery(filter): ApiQuery<DependencyFilter>,
) -> Result<ApiJson<Page<DependencyWithStats>>, ApiError> {
    let page = PageRequest::resolve(filter.page, filter.page_size, &state.config.api.pagination)?;
    // Newest first by an immutable key, so offset pages do not shift.
    let items = fetch_page(
        &state.pool,
        page,
        "dependencies d",
        DEPENDENCY_SELECT,
        "d.created_at DESC NULLS LAST, d.id",
        |qb| {
            filter.push_where(qb);
            Ok(())
        },
    )
    .await?;
    Ok(ApiJson(items))
}

pub async fn fetch_dependency(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<DependencyWithStats, ApiError> {
    sqlx::query_as::<_, DependencyWithStats>(&format!("{DEPENDENCY_SELECT} WHERE d.id = $1"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found("dependency", id))
}

/// A dependency declared by hand (one flows have not shown, or not yet).
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewDependency {
    /// The client.
    pub source_asset_id: Uuid,
    /// The server.
    pub target_asset_id: Uuid,
    /// IP protocol number (6 tcp, 17 udp).
    pub protocol: u8,
    /// The service port on the target.
    pub port: u16,
    pub inferred_service: Option<String>,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub tags: serde_json::Map<String, Value>,
    pub notes: Option<String>,
    /// Defaults to 1.0.
    pub confidence: Option<f32>,
}

/// Declare a manual dependency.
#[utoipa::path(post, path = "/dependencies", tag = "dependencies", request_body = NewDependency,
    responses((status = 201, body = DependencyWithStats),
              (status = 404, body = Problem, description = "An asset it names does not exist"),
              (status = 409, body = Problem), (status = 422, body = Problem)))]
async fn create_dependency(
    State(state): State<AppState>,
    Editor(caller): Editor,
    ApiJson(body): ApiJson<NewDependency>,
) -> Result<(StatusCode, ApiJson<DependencyWithStats>), ApiError> {
    let mut bad = Vec::new();
    if body.source_asset_id == body.target_asset_id {
        bad.push("an asset cannot depend on itself".to_owned());
    }
    let confidence = body.confidence.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&confidence) {
        bad.push(format!("confidence {confidence} must be between 0 and 1"));
    }
    problems(&bad)?;
    let mut tx = state.pool.begin().await?;
    // FOR SHARE: an asset deleted concurrently is either gone before this look (404)
    // or waits for this transaction (and then deletes the new dependency with it).
    let found: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM assets WHERE id = ANY($1) ORDER BY id FOR SHARE")
            .bind([body.source_asset_id, body.target_asset_id])
            .fetch_all(&mut *tx)
            .await?;
    if let Some(missing) = [body.source_asset_id, body.target_asset_id]
        .into_iter()
        .find(|id| !found.contains(id))
    {
        return Err(ApiError::not_found("asset", missing));
    }
    let existing: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM dependencies WHERE source_asset_id = $1 AND target_asset_id = $2
           AND protocol = $3 AND port = $4",
    )
    .bind(body.source_asset_id)
    .bind(body.target_asset_id)
    .bind(i16::from(body.protocol))
    .bind(i32::from(body.port))
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(id) = existing {
        return Err(ApiError::Conflict(format!(
            "that dependency already exists: {id}"
        )));
    }
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO dependencies (source_asset_id, target_asset_id, protocol, port,
            inferred_service, first_seen, last_seen, tags, notes, confidence, discovery_source,
            is_internal, user_fields)
         SELECT $1, $2, $3, $4, $5, now(), now(), $6, $7, $8, 'manual',
                COALESCE(s.is_internal, true) AND COALESCE(t.is_internal, true),
                ARRAY['confidence', 'notes', 'tags']
         FROM assets s, assets t WHERE s.id = $1 AND t.id = $2
         ON CONFLICT (source_asset_id, target_asset_id, protocol, port) DO NOTHING
         RETURNING id",
    )
    .bind(body.source_asset_id)
    .bind(body.target_asset_id)
    .bind(i16::from(body.protocol))
    .bind(i32::from(body.port))
    .bind(&body.inferred_service)
    .bind(Value::Object(body.tags.clone()))
    .bind(&body.notes)
    .bind(confidence)
    .fetch_optional(&mut *tx)
    .await?
    // Declared by another request (or written by the daemon) since the look above.
    .ok_or_else(|| {
        ApiError::Conflict("that dependency was created concurrently; fetch it".to_owned())
    })?;
    // Declaring a dependency a person deleted lifts the deletion.
    sqlx::query(
        "DELETE FROM dependency_suppressions WHERE source_asset_id = $1
           AND target_asset_id = $2 AND protocol = $3 AND port = $4",
    )
    .bind(body.source_asset_id)
    .bind(body.target_asset_id)
    .bind(i16::from(body.protocol))
    .bind(i32::from(body.port))
    .execute(&mut *tx)
    .await?;
    let dep = fetch_dependency(&mut tx, id).await?;
    audit::change_event(
        &mut tx,
        "new_dependency",
        "dependency",
        id,
        None,
        serde_json::to_value(&dep.dependency).ok(),
    )
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "create",
        "dependency",
        Some(id),
        serde_json::to_value(&body).unwrap_or(Value::Null),
    )
    .await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, ApiJson(dep)))
}

/// Get one dependency.
#[utoipa::path(get, path = "/dependencies/{id}", tag = "dependencies",
    params(("id" = Uuid, Path, description = "dependency id")),
    responses((status = 200, body = DependencyWithStats), (status = 404, body = Problem)))]
async fn get_dependency(
    State(state): State<AppState>,
    _: Viewer,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<ApiJson<DependencyWithStats>, ApiError> {
    let mut conn = state.pool.acquire().await?;
    Ok(ApiJson(fetch_dependency(&mut conn, id).await?))
}

/// What people may change on a dependency; the rest comes from flows.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DependencyPatch {
    /// Replaces every tag.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub tags: Option<serde_json::Map<String, Value>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>)]
    pub notes: Option<Option<String>>,
    /// A person's confidence, kept over what flows say; `null` hands it back to the
    /// flows.
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<f32>)]
    pub confidence: Option<Option<f32>>,
}

/// Update a dependency's tags, notes or confidence. What is set here is the person's:
/// the daemon's flushes leave it alone (`user_fields`) until a person changes it
/// again; `"confidence": null` hands the confidence back to the flows.
#[utoipa::path(patch, path = "/dependencies/{id}", tag = "dependencies",
    request_body = DependencyPatch,
    params(("id" = Uuid, Path, description = "dependency id")),
    responses((status = 200, body = DependencyWithStats), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn update_dependency(
    State(state): State<AppState>,
    Editor(caller): Editor,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(patch): ApiJson<DependencyPatch>,
) -> Result<ApiJson<DependencyWithStats>, ApiError> {
    let mut bad = Vec::new();
    if let Some(Some(c)) = patch.confidence
        && !(0.0..=1.0).contains(&c)
    {
        bad.push(format!("confidence {c} must be between 0 and 1"));
    }
    let changed = serde_json::to_value(&patch).unwrap_or(Value::Null);
    if changed.as_object().is_none_or(serde_json::Map::is_empty) {
        bad.push("the patch changes nothing".to_owned());
    }
    problems(&bad)?;
    let mut tx = state.pool.begin().await?;
    // Locked, so concurrent patches take turns and each change event's before-state is
    // the state the update really replaced.
    super::lock_row(&mut tx, "dependencies", "dependency", id).await?;
    let before = fetch_dependency(&mut tx, id).await?;
    // The fields this patch sets become the person's; a confidence set to null is the
    // flows' again (and keeps its value until they raise it).
    let mut owned: Vec<&str> = Vec::new();
    if patch.tags.is_some() {
        owned.push("tags");
    }
    if patch.notes.is_some() {
        owned.push("notes");
    }
    if matches!(patch.confidence, Some(Some(_))) {
        owned.push("confidence");
    }
    let released: Vec<&str> = if matches!(patch.confidence, Some(None)) {
        vec!["confidence"]
    } else {
        Vec::new()
    };
    sqlx::query(
        "UPDATE dependencies SET updated_at = now(),
            tags = CASE WHEN $2 THEN $3 ELSE tags END,
            notes = CASE WHEN $4 THEN $5 ELSE notes END,
            confidence = COALESCE($6, confidence),
            user_fields = ARRAY(SELECT DISTINCT f FROM unnest(user_fields || $7::text[]) AS f
                                WHERE f <> ALL($8::text[]) ORDER BY f)
         WHERE id = $1",
    )
    .bind(id)
    .bind(patch.tags.is_some())
    .bind(patch.tags.clone().map(Value::Object))
    .bind(patch.notes.is_some())
    .bind(patch.notes.clone().flatten())
    .bind(patch.confidence.flatten())
    .bind(&owned)
    .bind(&released)
    .execute(&mut *tx)
    .await?;
    let after = fetch_dependency(&mut tx, id).await?;
    let pick =
        |d: &Dependency| pick_fields(d, changed.as_object().into_iter().flat_map(|o| o.keys()));
    audit::change_event(
        &mut tx,
        "dependency_changed",
        "dependency",
        id,
        Some(pick(&before.dependency)),
        Some(pick(&after.dependency)),
    )
    .await?;
    audit::record(&mut tx, &caller, "update", "dependency", Some(id), changed).await?;
    tx.commit().await?;
    Ok(ApiJson(after))
}

/// Remove a dependency. It stays removed while flows still show it (the daemon does
/// not create it again); declaring it (`POST /dependencies`) brings it back.
#[utoipa::path(delete, path = "/dependencies/{id}", tag = "dependencies",
    params(("id" = Uuid, Path, description = "dependency id")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn delete_dependency(
    State(state): State<AppState>,
    Editor(caller): Editor,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.pool.begin().await?;
    // Concurrent deletes take turns: the second finds nothing (404) and records nothing.
    super::lock_row(&mut tx, "dependencies", "dependency", id).await?;
    let before = fetch_dependency(&mut tx, id).await?;
    let deleted = sqlx::query("DELETE FROM dependencies WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if deleted == 0 {
        return Err(ApiError::not_found("dependency", id));
    }
    let d = &before.dependency;
    sqlx::query(
        "INSERT INTO dependency_suppressions (source_asset_id, target_asset_id, protocol, port,
                                             deleted_by)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source_asset_id, target_asset_id, protocol, port)
         DO UPDATE SET deleted_at = now(), deleted_by = EXCLUDED.deleted_by",
    )
    .bind(d.source_asset_id)
    .bind(d.target_asset_id)
    .bind(d.protocol)
    .bind(d.port)
    .bind(&caller.subject)
    .execute(&mut *tx)
    .await?;
    audit::change_event(
        &mut tx,
        "removed_dependency",
        "dependency",
        id,
        serde_json::to_value(&before.dependency).ok(),
        None,
    )
    .await?;
    audit::record(
        &mut tx,
        &caller,
        "delete",
        "dependency",
        Some(id),
        serde_json::json!({
            "source_asset_id": before.dependency.source_asset_id,
            "target_asset_id": before.dependency.target_asset_id,
            "protocol": before.dependency.protocol,
            "port": before.dependency.port,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
