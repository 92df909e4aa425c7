//! flowlens-api: the axum REST and `WebSocket` service over the `PostgreSQL` graph.
//!
//! It owns the `/api/v1` routes (assets, dependencies, topology, analysis, changes,
//! alerts, discovery, admin), JWT and API-key auth with roles, rate limits and caching.
//! It shares no Rust types with the daemon: the schema in `migrations/` is the
//! contract, embedded here as in the daemon, so either process brings a database up to
//! date on start.

pub mod audit;
pub mod auth;
pub mod cache;
pub mod client;
pub mod config;
pub mod console;
pub mod discovery;
pub mod error;
pub mod extract;
pub mod feed;
pub mod graph;
pub mod guard;
pub mod pagination;
pub mod rate_limit;
pub mod routes;
pub mod server;
pub mod servicenow;
pub mod shared;
pub mod slots;
pub mod snapshot;
pub mod state;
pub mod telemetry;
pub mod topology;
pub mod websocket;

use axum::Router;
use axum::routing::get;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use utoipa::OpenApi as _;
use utoipa_axum::router::OpenApiRouter;

use crate::extract::ApiJson;
use crate::state::AppState;

/// The embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Connects a pool; a short acquire timeout so an outage answers 500/503 quickly
/// instead of holding requests for sqlx's default 30 s. No statement timeout: for
/// migrations and tools; the server uses [`connect_with_timeout`].
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = url.parse()?;
    pool_options(max_connections).connect_with(options).await
}

/// As [`connect`], with PostgreSQL's `statement_timeout` set on every connection
/// (`api.limits.statement_timeout_seconds`).
pub async fn connect_with_timeout(
    url: &str,
    max_connections: u32,
    statement_timeout: std::time::Duration,
) -> Result<PgPool, sqlx::Error> {
    let timeout = format!("{}ms", statement_timeout.as_millis());
    let options: PgConnectOptions = url
        .parse::<PgConnectOptions>()?
        .options([("statement_timeout", timeout.as_str())]);
    pool_options(max_connections).connect_with(options).await
}

fn pool_options(max_connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
}

/// Brings the schema up to date (idempotent; sqlx serialises concurrent runs with an
/// advisory lock, so the API and the daemon may start together).
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "FlowLens API", description = "The dependency graph FlowLens maps from flows."),
    modifiers(&Security),
    security(("bearer" = []), ("api_key" = [])),
    tags(
        (name = "assets"), (name = "dependencies"), (name = "topology"), (name = "analysis"),
        (name = "changes"), (name = "alerts"), (name = "discovery"), (name = "admin"),
        (name = "integrations")
    )
)]
struct ApiDoc;

/// Declares the two credentials.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
    }
}

/// The OpenAPI document path.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

/// The routes and their OpenAPI document, before state is attached.
pub fn routes(state: &AppState) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    // Writes here change what caches and the snapshot were derived from. (Analysis
    // requests are POSTs too, but read-only.)
    let writable = OpenApiRouter::new()
        .merge(routes::assets::router())
        .merge(routes::dependencies::router())
        .merge(routes::alerts::router())
        .merge(routes::discovery::router())
        .merge(routes::admin::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            invalidate_on_write,
        ));
    let protected = OpenApiRouter::new()
        .merge(writable)
        .merge(routes::topology::router())
        .merge(routes::analysis::router())
        .merge(routes::changes::router())
        .merge(routes::integrations::router())
        .merge(routes::session::router())
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    let api = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(protected)
        .merge(routes::admin::open_router());
    let (router, mut doc) = OpenApiRouter::new().nest("/api/v1", api).split_for_parts();
    // The document itself, served to authenticated callers.
    doc.paths.add_path_operation(
        OPENAPI_PATH,
        vec![utoipa::openapi::HttpMethod::Get],
        utoipa::openapi::path::OperationBuilder::new()
            .tag("admin")
            .summary(Some("This OpenAPI document"))
            .response("200", utoipa::openapi::Response::new("OpenAPI 3 JSON")),
    );
    (router, doc)
}

/// Error answers are served as `application/problem+json` (error.rs); utoipa documents
/// every body as `application/json`, so the document is corrected to say what the
/// server sends.
fn problems_as_problem_json(doc: &mut serde_json::Value) {
    let Some(paths) = doc
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    for item in paths.values_mut() {
        let Some(ops) = item.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let Some(responses) = op
                .get_mut("responses")
                .and_then(serde_json::Value::as_object_mut)
            else {
                continue;
            };
            for response in responses.values_mut() {
                let Some(content) = response
                    .get_mut("content")
                    .and_then(serde_json::Value::as_object_mut)
                else {
                    continue;
                };
                let is_problem = content
                    .get("application/json")
                    .and_then(|c| c.pointer("/schema/$ref"))
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|r| r.ends_with("/Problem"));
                if is_problem && let Some(c) = content.remove("application/json") {
                    content.insert("application/problem+json".to_owned(), c);
                }
            }
        }
    }
}

/// Successful writes change the graph (or alerts): drop what was derived from it.
async fn invalidate_on_write(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let write = !matches!(
        *request.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let response = next.run(request).await;
    if write && response.status().is_success() {
        state.graph_changed().await;
    }
    response
}

/// The whole application: every route, auth, rate limits, metrics.
///
/// # Panics
/// Never in practice: the OpenAPI document is plain data that always serializes.
pub fn app(state: AppState) -> Router {
    let (router, doc) = routes(&state);
    let mut doc = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    problems_as_problem_json(&mut doc);
    let doc = std::sync::Arc::new(doc);
    let openapi = Router::new()
        .route(
            OPENAPI_PATH,
            get(move || {
                let doc = doc.clone();
                async move { ApiJson(doc) }
            }),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ));
    router
        .merge(openapi)
        .merge(console::router())
        .fallback(|| async {
            error::ApiError::NotFound {
                what: "route",
                id: "(no such path)".to_owned(),
            }
        })
        .layer(axum::middleware::from_fn_with_state(
            state.guard.clone(),
            guard::admit,
        ))
        .layer(axum::middleware::from_fn(telemetry::track))
        .with_state(state)
}
