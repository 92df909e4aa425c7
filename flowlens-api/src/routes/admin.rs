//! `/api/v1/admin`: health (the one open route, design §6.3 contract), Prometheus
//! metrics, the effective configuration with secrets redacted, and API keys.

use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::audit;
use crate::auth::{self, Admin, Role, Viewer};
use crate::error::{ApiError, Problem};
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

/// The routes that need credentials.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(config))
        .routes(routes!(list_api_keys, create_api_key))
        .routes(routes!(revoke_api_key))
}

/// The open route.
pub fn open_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// Design §6.3.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// healthy, degraded or unhealthy.
    pub status: String,
    pub version: String,
    pub uptime_seconds: u64,
    /// `postgresql`: `ok` or the error; `kafka`: `not_configured` (the API does not use
    /// it); `redis`: `ok`, `unavailable: using memory` (status degraded) or
    /// `not_configured` (memory backends); `change_feed`: `ok` while the LISTEN connection is up, else `connecting`
    /// (answers are still right, but WebSocket clients hear nothing meanwhile).
    #[schema(value_type = Object)]
    pub checks: serde_json::Map<String, serde_json::Value>,
}

/// Health check; open to anonymous callers. 503 when PostgreSQL does not answer.
#[utoipa::path(get, path = "/admin/health", tag = "admin",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
async fn health(State(state): State<AppState>) -> (StatusCode, ApiJson<Health>) {
    let (postgresql, redis) = probe(&state).await;
    let healthy = postgresql == "ok";
    let mut checks = serde_json::Map::new();
    checks.insert("postgresql".into(), postgresql.into());
    checks.insert("kafka".into(), "not_configured".into());
    checks.insert("redis".into(), redis.clone().into());
    // The LISTEN connection behind WebSocket pushes and cache invalidation.
    let feed = if state
        .feed_listening
        .load(std::sync::atomic::Ordering::Acquire)
    {
        "ok"
    } else {
        "connecting"
    };
    checks.insert("change_feed".into(), feed.into());
    let body = Health {
        // Without the change feed the API answers correctly but pushes nothing.
        // Without Redis the instances answer alone (their own limits and caches).
        status: if !healthy {
            "unhealthy"
        } else if feed == "ok" && (redis == "ok" || redis == "not_configured") {
            "healthy"
        } else {
            "degraded"
        }
        .to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        uptime_seconds: state.started.elapsed().as_secs(),
        checks,
    };
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, ApiJson(body))
}

/// The path of the open route.
pub const HEALTH_PATH: &str = "/api/v1/admin/health";

/// How long one PostgreSQL probe answers for: health is open to anyone, so however
/// often it is asked, the database hears at most one query per this.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// PostgreSQL's and Redis's states as health reports them, from a probe at most
/// [`PROBE_EVERY`] old. Callers arriving while a probe runs wait for it rather than
/// start their own.
async fn probe(state: &AppState) -> (String, String) {
    let mut probe = state.health.lock().await;
    if let Some((at, pg, redis)) = probe.last.as_ref()
        && at.elapsed() < PROBE_EVERY
    {
        return (pg.clone(), redis.clone());
    }
    let mut redis = if state.redis.is_empty() {
        "not_configured"
    } else {
        "ok"
    };
    for r in &state.redis {
        let pong = r
            .run("health", async |c| {
                redis::cmd("PING").query_async::<String>(c).await
            })
            .await;
        if pong.is_none() {
            redis = "unavailable: using memory";
        }
    }
    probe.sent += 1;
    metrics::counter!(crate::telemetry::HEALTH_PROBES).increment(1);
    let pg = tokio::time::timeout(
        Duration::from_secs(2),
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.pool),
    )
    .await;
    // The detail goes to the log: health is open to anyone, and a connection error
    // names users and hosts.
    let said = match pg {
        Ok(Ok(_)) => "ok".to_owned(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "health: PostgreSQL");
            "error: query failed".to_owned()
        }
        Err(_) => "error: no answer within 2 s".to_owned(),
    };
    probe.last = Some((std::time::Instant::now(), said.clone(), redis.to_owned()));
    (said, redis.to_owned())
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/admin/metrics", tag = "admin",
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics(State(state): State<AppState>, _: Viewer) -> impl IntoResponse {
    state.prometheus.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.prometheus.render(),
    )
}

/// The effective configuration, secrets redacted.
#[utoipa::path(get, path = "/admin/config", tag = "admin",
    responses((status = 200, body = Object), (status = 403, body = Problem)))]
async fn config(State(state): State<AppState>, _: Admin) -> ApiJson<serde_json::Value> {
    ApiJson(state.config.redacted())
}

/// An API key as listed (the key itself is shown once, at creation).
#[derive(Debug, Serialize, FromRow, ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    /// The key's first characters.
    pub prefix: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// List API keys.
#[utoipa::path(get, path = "/admin/api-keys", tag = "admin",
    responses((status = 200, body = Vec<ApiKey>), (status = 403, body = Problem)))]
async fn list_api_keys(
    State(state): State<AppState>,
    _: Admin,
) -> Result<ApiJson<Vec<ApiKey>>, ApiError> {
    let keys = sqlx::query_as::<_, ApiKey>(
        "SELECT id, name, role, prefix, created_by, created_at, last_used_at, revoked_at
         FROM api_keys ORDER BY created_at, id",
    )
    .fetch_all(&state.pool)
    .await?;
    Ok(ApiJson(keys))
}

#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewApiKey {
    pub name: String,
    pub role: Role,
}

/// A created key: `key` is shown this once.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedApiKey {
    pub id: Uuid,
    pub name: String,
    pub role: Role,
    /// Send as `X-API-Key`.
    pub key: String,
}

/// Create an API key.
#[utoipa::path(post, path = "/admin/api-keys", tag = "admin", request_body = NewApiKey,
    responses((status = 201, body = CreatedApiKey), (status = 403, body = Problem),
              (status = 422, body = Problem)))]
async fn create_api_key(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiJson(body): ApiJson<NewApiKey>,
) -> Result<(StatusCode, ApiJson<CreatedApiKey>), ApiError> {
    let name = body.name.trim();
    // The key's audit actor is `key:<name>`, which must fit `audit_logs.actor`.
    let max = auth::MAX_KEY_NAME_CHARS;
    if name.is_empty() || name.chars().count() > max {
        return Err(ApiError::Unprocessable(format!(
            "name must have 1 to {max} characters"
        )));
    }
    let key = auth::new_api_key();
    let mut tx = state.pool.begin().await?;
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO api_keys (name, role, key_hash, prefix, created_by)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(name)
    .bind(body.role.as_str())
    .bind(auth::hash_api_key(&key))
    .bind(&key[..12])
    .bind(&caller.subject)
    .fetch_one(&mut *tx)
    .await?;
    // Other instances may hold this key's hash as unknown: they forget on commit.
    notify_key(&mut tx, id).await?;
    audit::record(
        &mut tx,
        &caller,
        "create",
        "api_key",
        Some(id),
        serde_json::json!({"name": name, "role": body.role}),
    )
    .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedApiKey {
            id,
            name: name.to_owned(),
            role: body.role,
            key,
        }),
    ))
}

/// Revoke an API key; it stops working at once.
#[utoipa::path(delete, path = "/admin/api-keys/{id}", tag = "admin",
    params(("id" = Uuid, Path, description = "API key id")),
    responses((status = 204), (status = 404, body = Problem)))]
async fn revoke_api_key(
    State(state): State<AppState>,
    Admin(caller): Admin,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut tx = state.pool.begin().await?;
    let revoked =
        sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if revoked == 0 {
        return Err(ApiError::not_found("active API key", id));
    }
    // Every instance (this one too) drops its cached keys and closes this key's
    // WebSockets when the revocation commits.
    notify_key(&mut tx, id).await?;
    audit::record(
        &mut tx,
        &caller,
        "revoke",
        "api_key",
        Some(id),
        serde_json::Value::Null,
    )
    .await?;
    tx.commit().await?;
    // At once here, without waiting for the notification to come back.
    state.auth.forget_keys();
    let _ = state.revoked.send(Some(id));
    Ok(StatusCode::NO_CONTENT)
}

/// Announces a key's creation or revocation on [`crate::feed::KEY_CHANNEL`] (delivered
/// when the transaction commits, never if it rolls back).
async fn notify_key(tx: &mut sqlx::PgConnection, id: Uuid) -> Result<(), ApiError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(crate::feed::KEY_CHANNEL)
        .bind(id.to_string())
        .execute(tx)
        .await?;
    Ok(())
}
