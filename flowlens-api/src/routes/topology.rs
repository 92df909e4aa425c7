//! `/api/v1/topology`: the graph as nodes and edges (around an asset or whole, with
//! filters), its exports (JSON, DOT, Mermaid, GraphML), and `/ws`, which pushes change
//! events as they happen.

#![allow(
    unused_qualifications,
    reason = "utoipa's params() expansion names the filter type by its full path"
)]

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::auth::Viewer;
use crate::cache::{Answer, Cached, Kind};
use crate::error::{ApiError, Problem};
use crate::extract::ApiQuery;
use crate::graph::around::{edges_within, neighbourhood};
use crate::snapshot::{INLINE_MAX_DEPENDENCIES, Snapshot};
use crate::state::AppState;
use crate::topology::{self, TopoEdge, Topology, TopologyView};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_topology))
        .routes(routes!(export_topology))
        .routes(routes!(topology_groups))
        .routes(routes!(crate::websocket::topology_ws))
}

/// Which part of the graph to show. Unknown parameters are refused.
#[derive(Debug, Default, Clone, Deserialize, Serialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TopologyFilter {
    /// Show only the neighbourhood of this asset (both directions).
    pub asset_id: Option<Uuid>,
    /// Hops around `asset_id` (default 2, at most `api.analysis.max_depth`).
    pub depth: Option<u32>,
    /// Dependencies with at least one end in this environment.
    pub environment: Option<String>,
    /// Dependencies on this inferred service.
    pub service: Option<String>,
    /// Dependencies seen at or after this time (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// Dependencies with at least this many bytes.
    pub min_bytes: Option<i64>,
    /// Include egress, ingress and external dependencies (default true).
    pub include_external: Option<bool>,
    /// Include stale (removed) dependencies (default false).
    pub include_stale: Option<bool>,
    /// Export only: json (default), dot, mermaid or graphml.
    #[param(ignore)]
    pub format: Option<String>,
}

/// Selects, from one snapshot, the part of the topology a filter asks for.
fn select<'a>(
    snap: &'a Snapshot,
    f: &TopologyFilter,
    max_depth: u32,
) -> Result<TopologyView<'a>, ApiError> {
    let around: Option<Vec<Uuid>> = match f.asset_id {
        Some(center) => {
            let depth = f.depth.unwrap_or(2);
            if depth > max_depth {
                return Err(ApiError::BadRequest(format!(
                    "depth must be at most {max_depth}"
                )));
            }
            let mut ids = neighbourhood(&snap.graph, center, depth)
                .ok_or_else(|| ApiError::not_found("asset", center))?;
            ids.sort_unstable();
            Some(ids)
        }
        None if f.depth.is_some() => {
            return Err(ApiError::BadRequest("depth needs asset_id".to_owned()));
        }
        None => None,
    };
    let node = |id: Uuid| {
        snap.nodes
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .map(|i| &snap.nodes[i])
    };
    let inside = |id: &Uuid| {
        around
            .as_ref()
            .is_none_or(|ids| ids.binary_search(id).is_ok())
    };
    let in_env =
        |id: Uuid, env: &str| node(id).is_some_and(|n| n.environment.as_deref() == Some(env));
    let include_stale = f.include_stale.unwrap_or(false);
    let candidates: Box<dyn Iterator<Item = &TopoEdge>> = match &around {
        // Around an asset: only the edges inside the neighbourhood, through the
        // adjacency lists (a scan of every edge per request dominated this view).
        Some(ids) if !include_stale => {
            Box::new(edges_within(&snap.graph, ids).into_iter().filter_map(|id| {
                snap.edges
                    .binary_search_by_key(&id, |e| e.id)
                    .ok()
                    .map(|i| &snap.edges[i])
            }))
        }
        _ => Box::new(snap.edges.iter()),
    };
    let edges: Vec<&TopoEdge> = candidates
        .filter(|e| include_stale || !e.stale)
        .filter(|e| inside(&e.source) && inside(&e.target))
        .filter(|e| {
            f.environment
                .as_deref()
                .is_none_or(|env| in_env(e.source, env) || in_env(e.target, env))
        })
        .filter(|e| f.service.is_none() || e.service == f.service)
        .filter(|e| f.since.is_none_or(|s| e.last_seen >= s))
        .filter(|e| f.min_bytes.is_none_or(|b| e.total_bytes >= b))
        .filter(|e| f.include_external.unwrap_or(true) || e.is_internal.unwrap_or(true))
        .collect();
    let mut ids: Vec<Uuid> = edges.iter().flat_map(|e| [e.source, e.target]).collect();
    ids.extend(f.asset_id);
    ids.sort_unstable();
    ids.dedup();
    Ok(TopologyView {
        nodes: ids.into_iter().filter_map(node).collect(),
        edges,
        generated_at: Utc::now(),
    })
}

/// Renders (or finds in the cache) the answer for a filter and format.
async fn answer(state: &AppState, f: &TopologyFilter) -> Result<Cached, ApiError> {
    let format = f.format.clone().unwrap_or_else(|| "json".to_owned());
    let content_type = match format.as_str() {
        "json" => "application/json",
        "dot" => "text/vnd.graphviz; charset=utf-8",
        "mermaid" => "text/plain; charset=utf-8",
        "graphml" => "application/graphml+xml",
        other => {
            return Err(ApiError::BadRequest(format!(
                "format {other:?} must be json, dot, mermaid or graphml"
            )));
        }
    };
    let key = cache_key(f, &format);
    let ticket = match &key {
        Some(k) => match state.cache.lookup(Kind::Topology, k).await {
            (Some(hit), _) => return Ok(hit),
            (None, ticket) => Some(ticket),
        },
        None => None,
    };
    let snap = state.snapshot.get(&state.pool).await?;
    let max_depth = state.config.api.analysis.max_depth;
    // A view around an asset of a small graph is picked on the request's worker (a
    // traversal, see `INLINE_MAX_DEPENDENCIES`) and, when it is small too, rendered
    // there; anything bigger, and every whole-graph view, is filtered and rendered on a
    // blocking thread (tens of thousands of rows are milliseconds of CPU).
    let around = f.asset_id.is_some()
        && !f.include_stale.unwrap_or(false)
        && snap.info.dependencies <= INLINE_MAX_DEPENDENCIES;
    let small = if around {
        let t = select(&snap, f, max_depth)?;
        (t.edges.len() <= INLINE_MAX_RENDERED_EDGES)
            .then(|| render(&t, &format))
            .transpose()?
    } else {
        None
    };
    let body = if let Some(body) = small {
        body
    } else {
        let f = f.clone();
        state
            .compute(move || -> Result<String, ApiError> {
                render(&select(&snap, &f, max_depth)?, &format)
            })
            .await??
    };
    let value: Cached = Arc::new(Answer {
        content_type,
        body: bytes::Bytes::from(body),
    });
    if let (Some(key), Some(ticket)) = (key, ticket) {
        state
            .cache
            .store(Kind::Topology, key, value.clone(), ticket)
            .await;
    }
    Ok(value)
}

/// Views of at most this many edges are rendered on the request's worker (the
/// around-an-asset bench case, depth 2, rendered this way: 1.18x of the blocking-pool
/// build, p99 4.45 ms; not a timing of one render).
const INLINE_MAX_RENDERED_EDGES: usize = 2_000;

fn render(t: &TopologyView<'_>, format: &str) -> Result<String, ApiError> {
    Ok(match format {
        "dot" => topology::to_dot(t),
        "mermaid" => topology::to_mermaid(t),
        "graphml" => topology::to_graphml(t),
        _ => serde_json::to_string(t)?,
    })
}

/// The cache key of a view: the filter with every default written out, so spellings
/// of one view share an entry. Views with a free-form threshold (`min_bytes`, `since`)
/// are not cached at all: each value would be an entry of its own, and a caller
/// stepping through values would only evict the views everyone shares (such a view is
/// still served from the snapshot, on a CPU permit).
fn cache_key(f: &TopologyFilter, format: &str) -> Option<String> {
    // (`depth` without `asset_id` is refused: nothing to cache.)
    if f.min_bytes.is_some() || f.since.is_some() || (f.asset_id.is_none() && f.depth.is_some()) {
        return None;
    }
    // Exact strings: the filters compare exactly, so " prod" is another view.
    let text = |s: &Option<String>| format!("{:?}", s.as_deref());
    Some(format!(
        "{format}|{}|{}|{}|{}|{}|{}",
        f.asset_id.map(|a| a.to_string()).unwrap_or_default(),
        f.asset_id.map_or(0, |_| f.depth.unwrap_or(2)),
        text(&f.environment),
        text(&f.service),
        f.include_external.unwrap_or(true),
        f.include_stale.unwrap_or(false),
    ))
}

/// Get the topology: nodes (assets) and edges (dependencies, client to server).
/// Assets without a current dependency are not part of it (list them with /assets).
/// Served from the in-memory snapshot (and the topology cache): structure is as fresh
/// as the last change the API heard of; byte and flow counters are refreshed with the
/// snapshot (at least every minute) and may then be cached for `topology_ttl_seconds`.
#[utoipa::path(get, path = "/topology", tag = "topology", params(TopologyFilter),
    responses((status = 200, body = Topology), (status = 400, body = Problem),
              (status = 404, body = Problem)))]
async fn get_topology(
    State(state): State<AppState>,
    _: Viewer,
    ApiQuery(mut filter): ApiQuery<TopologyFilter>,
) -> Result<Response, ApiError> {
    if filter.format.is_some() {
        return Err(ApiError::BadRequest(
            "format belongs to /topology/export".to_owned(),
        ));
    }
    filter.format = Some("json".to_owned());
    let a = answer(&state, &filter).await?;
    Ok(a.as_ref().into_response())
}

/// What to group, and by what. Unknown parameters are refused.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GroupFilter {
    /// `environment`, `asset_type`, `cloud_provider`, `cloud_account`, `cloud_region`,
    /// `vpc`, `subnet`, `cluster`, `namespace` or `workload`.
    pub by: String,
    /// Dependencies with at least one end in this environment.
    pub environment: Option<String>,
    /// Dependencies on this inferred service.
    pub service: Option<String>,
    /// Include egress, ingress and external dependencies (default true).
    pub include_external: Option<bool>,
    /// Include stale (removed) dependencies (default false).
    pub include_stale: Option<bool>,
}

/// The topology folded by one field (an account, a region, a VPC, a namespace ...):
/// a group per value with its asset count (null: assets without one), an edge per
/// pair of groups with the dependencies between them summed: the map of a large
/// estate before expanding a group.
#[utoipa::path(get, path = "/topology/groups", tag = "topology", params(GroupFilter),
    responses((status = 200, body = topology::Groups), (status = 400, body = Problem)))]
async fn topology_groups(
    State(state): State<AppState>,
    _: Viewer,
    ApiQuery(g): ApiQuery<GroupFilter>,
) -> Result<crate::extract::ApiJson<topology::Groups>, ApiError> {
    if !topology::GROUP_FIELDS.contains(&g.by.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "by must be one of {}",
            topology::GROUP_FIELDS.join(", ")
        )));
    }
    let f = TopologyFilter {
        environment: g.environment,
        service: g.service,
        include_external: g.include_external,
        include_stale: g.include_stale,
        ..TopologyFilter::default()
    };
    let snap = state.snapshot.get(&state.pool).await?;
    let max_depth = state.config.api.analysis.max_depth;
    let by = g.by;
    let groups = state
        .compute(move || -> Result<topology::Groups, ApiError> {
            Ok(topology::group(&select(&snap, &f, max_depth)?, &by))
        })
        .await??;
    Ok(crate::extract::ApiJson(groups))
}

/// Export the topology as JSON, Graphviz DOT, Mermaid or GraphML.
#[utoipa::path(get, path = "/topology/export", tag = "topology",
    params(TopologyFilter,
        ("format" = Option<String>, Query, description = "json (default), dot, mermaid or graphml")),
    responses((status = 200, description = "The diagram", content(
                  (Topology = "application/json"), (String = "text/vnd.graphviz"),
                  (String = "text/plain"), (String = "application/graphml+xml"))),
              (status = 400, body = Problem)))]
async fn export_topology(
    State(state): State<AppState>,
    _: Viewer,
    ApiQuery(filter): ApiQuery<TopologyFilter>,
) -> Result<Response, ApiError> {
    let a = answer(&state, &filter).await?;
    let ext = match filter.format.as_deref() {
        Some("dot") => "dot",
        Some("mermaid") => "mmd",
        Some("graphml") => "graphml",
        _ => "json",
    };
    Ok((
        [
            (header::CONTENT_TYPE, a.content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"flowlens-topology.{ext}\""),
            ),
        ],
        a.body.clone(),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(q: &str) -> TopologyFilter {
        serde_urlencoded_like(q)
    }

    /// The query string as the extractor would parse it.
    fn serde_urlencoded_like(q: &str) -> TopologyFilter {
        let uri: axum::http::Uri = format!("/t?{q}").parse().unwrap();
        axum::extract::Query::<TopologyFilter>::try_from_uri(&uri)
            .unwrap()
            .0
    }

    #[test]
    fn spellings_of_one_view_share_a_cache_key_and_thresholds_are_not_cached() {
        let plain = cache_key(&filter(""), "json");
        assert!(plain.is_some());
        assert_eq!(
            cache_key(&filter("include_external=true&include_stale=false"), "json"),
            plain
        );
        let id = Uuid::nil();
        assert_eq!(
            cache_key(&filter(&format!("asset_id={id}")), "json"),
            cache_key(&filter(&format!("asset_id={id}&depth=2")), "json"),
        );
        assert_ne!(
            cache_key(&filter(&format!("asset_id={id}&depth=3")), "json"),
            cache_key(&filter(&format!("asset_id={id}")), "json"),
        );
        assert_ne!(cache_key(&filter(""), "dot"), plain);
        assert_ne!(cache_key(&filter("environment=prod"), "json"), plain);
        assert_ne!(
            cache_key(&filter("environment=prod"), "json"),
            cache_key(&filter("environment=%20prod"), "json")
        );
        for q in [
            "min_bytes=1",
            "min_bytes=2",
            "since=2026-01-01T00:00:00Z",
            "depth=2",
        ] {
            assert_eq!(cache_key(&filter(q), "json"), None, "{q}");
        }
    }
}
