//! EDGE: the in-memory graph the analyses and topology views run on, loaded from
//! PostgreSQL (assets and dependencies with the columns the topology shows, and the
//! analysis graph over the current dependencies).
//!
//! Each request takes one `Arc` of the current snapshot and computes on it alone, so an
//! answer is always about one consistent graph even while a reload swaps in the next.
//! Reloads are lazy: a change notification, an API mutation or the periodic safety
//! timer only bumps the wanted generation, and the next request reloads (one reload at
//! a time; concurrent requests wait for it rather than all reloading). A snapshot
//! remembers the generation that was wanted when its load began, and is served only
//! while that is still the wanted one, so a burst of a thousand change events costs one
//! reload and nobody sees a graph older than the last change they could know about,
//! not even while a reload that started before their write is still running.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::graph::{EdgeInput, Graph, NodeInput};
use crate::topology::{TopoEdge, TopoNode};

/// A loaded graph and what it was loaded from.
pub struct Snapshot {
    /// Current (non-stale) dependencies, for the analyses.
    pub graph: Graph,
    /// Every asset as the topology shows it, sorted by id.
    pub nodes: Vec<TopoNode>,
    /// Every dependency, stale ones included, sorted by id.
    pub edges: Vec<TopoEdge>,
    pub info: SnapshotInfo,
    /// Analysis answers computed on this snapshot, by request: a snapshot never
    /// changes, so an answer holds until the next reload (and goes with this one).
    pub answers: moka::sync::Cache<String, crate::cache::Cached>,
}

/// Up to this many current dependencies, a traversal from one asset (impact, blast
/// radius, a view around an asset) runs on the request's own worker. What was
/// measured (`cargo xtask bench api`, 50 000 dependencies, 2 cores shared with wrk and
/// PostgreSQL): blast radius at 0.53x of inline when every request went through the
/// blocking pool, and even whole-graph SPOF, run on blocking threads, answers ~3700
/// times a second, so a traversal of a graph this size is on the order of a
/// millisecond at worst (an estimate from those rates, not a timing of one
/// traversal). Larger graphs traverse on blocking threads.
pub const INLINE_MAX_DEPENDENCIES: usize = 100_000;

/// Bytes of analysis answers one snapshot keeps.
const ANSWER_BYTES: u64 = 64 << 20;

fn answer_cache() -> moka::sync::Cache<String, crate::cache::Cached> {
    moka::sync::Cache::builder()
        .max_capacity(ANSWER_BYTES)
        .weigher(|k: &String, v: &crate::cache::Cached| {
            u32::try_from(k.len() + v.body.len()).unwrap_or(u32::MAX)
        })
        .build()
}

/// Said with every analysis answer, so a client knows which graph it got.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SnapshotInfo {
    /// Increases with every reload.
    pub version: u64,
    pub loaded_at: DateTime<Utc>,
    pub assets: usize,
    /// Current dependencies (stale ones are left out: they are the removed ones).
    pub dependencies: usize,
}

/// The holder of the current snapshot.
#[derive(Default)]
pub struct GraphSnapshot {
    /// The snapshot and the generation it was loaded for.
    current: RwLock<Option<(u64, Arc<Snapshot>)>>,
    /// Bumped by every invalidation.
    wanted: AtomicU64,
    version: AtomicU64,
    reload: tokio::sync::Mutex<()>,
}

impl GraphSnapshot {
    /// The next request reloads.
    pub fn invalidate(&self) {
        self.wanted.fetch_add(1, Ordering::AcqRel);
    }

    /// The current snapshot if it was loaded for generation `at_least` or later.
    fn fresh(&self, at_least: u64) -> Option<Arc<Snapshot>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
            .filter(|(generation, _)| *generation >= at_least)
            .map(|(_, s)| s.clone())
    }

    /// A snapshot that reflects every change invalidated before this call, reloading
    /// when the current one does not.
    ///
    /// The reload lock is the only place the snapshot is replaced: a request that finds
    /// no snapshot while another is loading the first one waits for that load instead
    /// of spinning (a recursion here once overflowed a worker's stack under load). A
    /// request that waited while another reloaded takes that reload when it began after
    /// the request arrived, so a storm of notifications does not queue one reload per
    /// request.
    pub async fn get(&self, pool: &PgPool) -> Result<Arc<Snapshot>, sqlx::Error> {
        let arrived = self.wanted.load(Ordering::Acquire);
        if let Some(s) = self.fresh(arrived) {
            return Ok(s);
        }
        let _one_at_a_time = self.reload.lock().await;
        if let Some(s) = self.fresh(arrived) {
            return Ok(s);
        }
        // Read before loading: the load sees every change made before this point.
        let generation = self.wanted.load(Ordering::Acquire);
        let s = Arc::new(self.load(pool).await?);
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((generation, s.clone()));
        Ok(s)
    }

    async fn load(&self, pool: &PgPool) -> Result<Snapshot, sqlx::Error> {
        let start = Instant::now();
        // One transaction at REPEATABLE READ: nodes and edges from the same moment.
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut nodes = sqlx::query_as::<_, TopoNode>(
            "SELECT a.id, a.name, a.asset_type, a.environment, a.is_internal,
                    ARRAY(SELECT abbrev(x) FROM unnest(a.ip_addresses) WITH ORDINALITY AS u(x, n)
                          ORDER BY n) AS ip_addresses,
                    CASE WHEN jsonb_typeof(a.tags) = 'object' THEN a.tags ELSE '{}' END AS tags,
                    a.cloud_provider, a.cloud_account, a.cloud_region, a.vpc, a.subnet,
                    a.cluster, a.namespace, a.workload
             FROM assets a",
        )
        .fetch_all(&mut *tx)
        .await?;
        let mut edges = sqlx::query_as::<_, TopoEdge>(
            "SELECT d.id, d.source_asset_id AS source, d.target_asset_id AS target, d.protocol,
                    d.port, d.inferred_service AS service,
                    COALESCE(d.total_bytes, 0) AS total_bytes,
                    COALESCE(d.total_flows, 0) AS total_flows, d.last_seen, d.confidence,
                    d.is_internal, d.stale
             FROM dependencies d",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        // Building the indices is CPU work (tens of ms at 50k edges): off the runtime.
        let (graph, nodes, edges) = tokio::task::spawn_blocking(move || {
            nodes.sort_unstable_by_key(|n| n.id);
            edges.sort_unstable_by_key(|e| e.id);
            let graph = Graph::new(
                nodes
                    .iter()
                    .map(|n| NodeInput {
                        id: n.id,
                        name: n.name.clone(),
                        asset_type: n.asset_type.clone(),
                        is_internal: n.is_internal,
                    })
                    .collect(),
                // Stale dependencies are the removed ones: not part of the analyses.
                edges
                    .iter()
                    .filter(|e| !e.stale)
                    .map(|e| EdgeInput {
                        id: e.id,
                        source: e.source,
                        target: e.target,
                        protocol: e.protocol,
                        port: e.port,
                        service: e.service.clone(),
                        total_bytes: e.total_bytes,
                    })
                    .collect(),
            );
            (graph, nodes, edges)
        })
        .await
        .map_err(|e| sqlx::Error::Protocol(format!("building the graph: {e}")))?;
        let info = SnapshotInfo {
            version: self.version.fetch_add(1, Ordering::Relaxed) + 1,
            loaded_at: Utc::now(),
            assets: graph.node_count(),
            dependencies: graph.edge_count(),
        };
        metrics::counter!(crate::telemetry::SNAPSHOT_RELOADS).increment(1);
        metrics::histogram!(crate::telemetry::SNAPSHOT_SECONDS)
            .record(start.elapsed().as_secs_f64());
        Ok(Snapshot {
            graph,
            nodes,
            edges,
            info,
            answers: answer_cache(),
        })
    }
}
