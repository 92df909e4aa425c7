//! EDGE: the in-memory graph the analyses and topology views run on, loaded from
//! PostgreSQL (assets and dependencies with the columns the topology shows, and the
//! analysis graph over the current dependencies).
//!
//! Each request takes one `Arc` of the current snapshot and computes on it alone, so an
//! answer is always about one consistent graph even while a reload swaps in the next.
//! Reloads are lazy: a change notification, an API mutation or the periodic safety
//! timer only marks the snapshot dirty, and the next analysis request reloads it (one
//! reload at a time; concurrent requests wait for it rather than all reloading). So a
//! burst of a thousand change events costs one reload, and nobody sees a graph older
//! than the last change they could know about.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
pub struct GraphSnapshot {
    current: RwLock<Option<Arc<Snapshot>>>,
    dirty: AtomicBool,
    version: AtomicU64,
    reload: tokio::sync::Mutex<()>,
}

impl Default for GraphSnapshot {
    fn default() -> Self {
        Self {
            current: RwLock::new(None),
            dirty: AtomicBool::new(true),
            version: AtomicU64::new(0),
            reload: tokio::sync::Mutex::new(()),
        }
    }
}

impl GraphSnapshot {
    /// The next request reloads.
    pub fn invalidate(&self) {
        self.dirty.store(true, Ordering::Release);
    }

    fn current(&self) -> Option<Arc<Snapshot>> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current snapshot, reloading first when it is dirty or there is none yet.
    ///
    /// The reload lock is the only place the snapshot is replaced: a request that finds
    /// no snapshot while another is loading the first one waits for that load instead
    /// of spinning (a recursion here once overflowed a worker's stack under load).
    pub async fn get(&self, pool: &PgPool) -> Result<Arc<Snapshot>, sqlx::Error> {
        if !self.dirty.load(Ordering::Acquire)
            && let Some(s) = self.current()
        {
            return Ok(s);
        }
        let _one_at_a_time = self.reload.lock().await;
        // Another request may have reloaded while this one waited.
        let dirty = self.dirty.swap(false, Ordering::AcqRel);
        if let (false, Some(s)) = (dirty, self.current()) {
            return Ok(s);
        }
        match self.load(pool).await {
            Ok(s) => {
                let s = Arc::new(s);
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(s.clone());
                Ok(s)
            }
            Err(e) => {
                self.dirty.store(true, Ordering::Release);
                Err(e)
            }
        }
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
                          ORDER BY n) AS ip_addresses
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
        })
    }
}
