//! `/api/v1/analysis`: impact, paths, single points of failure and blast radius, each
//! computed by the pure graph code on one consistent in-memory snapshot (see
//! `snapshot.rs`), and each answer saying which snapshot it used.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Viewer;
use crate::cache::{Answer, Cached};
use crate::error::{ApiError, Problem};
use crate::extract::ApiJson;
use crate::graph::Graph;
use crate::graph::blast_radius::{BlastRadius, blast_radius};
use crate::graph::impact::{Impact, impact_of_asset, impact_of_dependency};
use crate::graph::path::{AllPaths, PathStep, all_paths, shortest_path};
use crate::graph::spof::{Spof, spof};
use crate::snapshot::{INLINE_MAX_DEPENDENCIES, Snapshot, SnapshotInfo};
use crate::state::AppState;
use crate::telemetry::CACHE_LOOKUPS;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(impact))
        .routes(routes!(path))
        .routes(routes!(single_points_of_failure))
        .routes(routes!(blast))
}

/// Names of the assets an answer mentions, so a client need not look each one up.
type Names = BTreeMap<Uuid, Option<String>>;

fn names(g: &Graph, ids: impl IntoIterator<Item = Uuid>) -> Names {
    ids.into_iter()
        .map(|id| (id, g.node(id).and_then(|n| n.name.clone())))
        .collect()
}

/// What an analysis costs, for where it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cost {
    /// One traversal from an asset (impact, blast radius): at most every current
    /// dependency once.
    Traversal,
    /// Whole-graph work or enumeration (SPOF, paths): always on a blocking thread.
    Heavy,
}

/// The answer `key` names on the current snapshot: from the snapshot's cache, or
/// computed by `work` (on a blocking thread with a CPU permit, see
/// [`AppState::compute`], unless `cost` says it is a traversal of a small graph)
/// and kept there until the next reload (unless `api.cache.enabled` is false). The
/// key must name everything the answer depends on besides the snapshot.
async fn on_snapshot<T, F>(
    state: &AppState,
    key: String,
    cost: Cost,
    work: F,
) -> Result<Response, ApiError>
where
    T: Serialize,
    F: FnOnce(&Snapshot) -> Result<T, ApiError> + Send + 'static,
{
    let snap = state.snapshot.get(&state.pool).await?;
    // `api.cache.enabled: false` computes every time (benchmarks, debugging).
    let caching = state.config.api.cache.enabled;
    let hit = if caching {
        snap.answers.get(&key)
    } else {
        None
    };
    metrics::counter!(CACHE_LOOKUPS, "cache" => "analysis",
        "result" => if hit.is_some() { "hit" } else { "miss" })
    .increment(1);
    if let Some(hit) = hit {
        return Ok(hit.as_ref().into_response());
    }
    let inline = cost == Cost::Traversal && snap.info.dependencies <= INLINE_MAX_DEPENDENCIES;
    let body = if inline {
        serde_json::to_vec(&work(&snap)?)?
    } else {
        let on = snap.clone();
        state
            .compute(move || -> Result<Vec<u8>, ApiError> { Ok(serde_json::to_vec(&work(&on)?)?) })
            .await??
    };
    let answer: Cached = Arc::new(Answer {
        content_type: "application/json",
        body: body.into(),
    });
    if caching {
        snap.answers.insert(key, answer.clone());
    }
    Ok(answer.as_ref().into_response())
}

impl AppState {
    /// A requested depth, or the default, refused beyond the configured maximum.
    fn depth(&self, requested: Option<u32>) -> Result<u32, ApiError> {
        let a = &self.config.api.analysis;
        match requested {
            Some(d) if d > a.max_depth => Err(ApiError::Unprocessable(format!(
                "max_depth must be at most {}",
                a.max_depth
            ))),
            Some(d) => Ok(d),
            None => Ok(a.default_max_depth),
        }
    }
}

/// What fails if an asset, or one dependency, fails. Give exactly one of the two.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImpactRequest {
    pub asset_id: Option<Uuid>,
    pub dependency_id: Option<Uuid>,
    /// Hops to follow (default `api.analysis.default_max_depth`).
    pub max_depth: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ImpactAnswer {
    pub impact: Impact,
    #[schema(value_type = Object)]
    pub names: Names,
    pub graph: SnapshotInfo,
}

/// Impact analysis: every asset that depends, transitively, on the failed asset (or on
/// the client side of the failed dependency), with its depth.
#[utoipa::path(post, path = "/analysis/impact", tag = "analysis", request_body = ImpactRequest,
    responses((status = 200, body = ImpactAnswer), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn impact(
    State(state): State<AppState>,
    _: Viewer,
    ApiJson(req): ApiJson<ImpactRequest>,
) -> Result<Response, ApiError> {
    let depth = state.depth(req.max_depth)?;
    let key = format!("impact:{:?}:{:?}:{depth}", req.asset_id, req.dependency_id);
    on_snapshot(&state, key, Cost::Traversal, move |snap| {
        let g = &snap.graph;
        let impact = match (req.asset_id, req.dependency_id) {
            (Some(a), None) => {
                impact_of_asset(g, a, Some(depth)).ok_or_else(|| ApiError::not_found("asset", a))?
            }
            (None, Some(d)) => impact_of_dependency(g, d, Some(depth))
                .ok_or_else(|| ApiError::not_found("current dependency", d))?,
            _ => {
                return Err(ApiError::Unprocessable(
                    "give exactly one of asset_id and dependency_id".to_owned(),
                ));
            }
        };
        Ok(ImpactAnswer {
            names: names(g, impact.affected.iter().map(|a| a.asset)),
            impact,
            graph: snap.info.clone(),
        })
    })
    .await
}

/// Paths between two assets.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PathRequest {
    pub from: Uuid,
    pub to: Uuid,
    /// Follow dependencies from client to server only (default true): "how does `from`
    /// come to depend on `to`". False ignores direction: "how are they connected".
    pub directed: Option<bool>,
    /// Longest path to enumerate, in hops (default `api.analysis.default_max_depth`).
    pub max_depth: Option<u32>,
    /// Most paths to enumerate (default and maximum `api.analysis.max_paths`).
    pub max_paths: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PathAnswer {
    /// The shortest path, `from` first; null when there is none.
    pub shortest: Option<Vec<PathStep>>,
    /// Every simple path within the bounds, shortest first; `truncated` when more exist
    /// or the search hit `api.analysis.max_path_steps` first.
    pub all: AllPaths,
    #[schema(value_type = Object)]
    pub names: Names,
    pub graph: SnapshotInfo,
}

/// Path finding: the shortest dependency path between two assets, and all paths up to
/// a bound.
#[utoipa::path(post, path = "/analysis/path", tag = "analysis", request_body = PathRequest,
    responses((status = 200, body = PathAnswer), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn path(
    State(state): State<AppState>,
    _: Viewer,
    ApiJson(req): ApiJson<PathRequest>,
) -> Result<Response, ApiError> {
    let depth = state.depth(req.max_depth)?;
    let max_steps = state.config.api.analysis.max_path_steps;
    let limit = state.config.api.analysis.max_paths;
    let max_paths = req.max_paths.unwrap_or(limit);
    if max_paths == 0 || max_paths > limit {
        return Err(ApiError::Unprocessable(format!(
            "max_paths must be between 1 and {limit}"
        )));
    }
    let directed = req.directed.unwrap_or(true);
    let key = format!(
        "path:{}:{}:{directed}:{depth}:{max_paths}",
        req.from, req.to
    );
    // Enumeration is bounded by `max_path_steps` but can still take a while: on a
    // blocking thread, like every analysis.
    on_snapshot(&state, key, Cost::Heavy, move |snap| {
        let g = &snap.graph;
        for id in [req.from, req.to] {
            if g.node(id).is_none() {
                return Err(ApiError::not_found("asset", id));
            }
        }
        let shortest = shortest_path(g, req.from, req.to, directed);
        let all = all_paths(g, req.from, req.to, directed, depth, max_paths, max_steps);
        let ids = all
            .paths
            .iter()
            .flatten()
            .copied()
            .chain([req.from, req.to]);
        Ok(PathAnswer {
            names: names(g, ids),
            shortest,
            all,
            graph: snap.info.clone(),
        })
    })
    .await
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SpofAnswer {
    pub spof: Spof,
    #[schema(value_type = Object)]
    pub names: Names,
    pub graph: SnapshotInfo,
}

/// Single points of failure: articulation points and bridges of the service graph
/// (direction ignored), and services with a single provider.
#[utoipa::path(get, path = "/analysis/spof", tag = "analysis",
    responses((status = 200, body = SpofAnswer)))]
async fn single_points_of_failure(
    State(state): State<AppState>,
    _: Viewer,
) -> Result<Response, ApiError> {
    // Parameterless and the costliest analysis: computed once per snapshot.
    on_snapshot(&state, "spof".to_owned(), Cost::Heavy, |snap| {
        let spof = spof(&snap.graph);
        let ids = spof
            .articulation_points
            .iter()
            .map(|a| a.asset)
            .chain(spof.bridges.iter().flat_map(|b| b.assets))
            .chain(spof.single_provider_services.iter().map(|s| s.provider));
        Ok(SpofAnswer {
            names: names(&snap.graph, ids),
            spof,
            graph: snap.info.clone(),
        })
    })
    .await
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlastRequest {
    pub asset_id: Uuid,
    /// Hops to follow (default `api.analysis.default_max_depth`).
    pub max_depth: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct BlastAnswer {
    pub blast_radius: BlastRadius,
    #[schema(value_type = Object)]
    pub names: Names,
    pub graph: SnapshotInfo,
}

/// Blast radius: the assets and services lost with an asset, and a 0-100 score.
#[utoipa::path(post, path = "/analysis/blast-radius", tag = "analysis",
    request_body = BlastRequest,
    responses((status = 200, body = BlastAnswer), (status = 404, body = Problem),
              (status = 422, body = Problem)))]
async fn blast(
    State(state): State<AppState>,
    _: Viewer,
    ApiJson(req): ApiJson<BlastRequest>,
) -> Result<Response, ApiError> {
    let depth = state.depth(req.max_depth)?;
    let key = format!("blast:{}:{depth}", req.asset_id);
    on_snapshot(&state, key, Cost::Traversal, move |snap| {
        let g = &snap.graph;
        let b = blast_radius(g, req.asset_id, Some(depth))
            .ok_or_else(|| ApiError::not_found("asset", req.asset_id))?;
        let ids = b.impact.affected.iter().map(|a| a.asset).chain(
            b.affected_services
                .iter()
                .flat_map(|s| s.providers.iter().copied()),
        );
        Ok(BlastAnswer {
            names: names(g, ids),
            blast_radius: b,
            graph: snap.info.clone(),
        })
    })
    .await
}
