//! EDGE: the in-memory graph the analyses run on, loaded from PostgreSQL.
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
use uuid::Uuid;

use crate::graph::{EdgeInput, Graph, NodeInput};

/// `dependencies` columns: id, source, target, protocol, port, service, bytes.
type EdgeRow = (Uuid, Uuid, Uuid, i16, i32, Option<String>, Option<i64>);

/// A loaded graph and what it was loaded from.
pub struct Snapshot {
    pub graph: Graph,
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

    /// The current snapshot, reloading first when it is dirty.
    pub async fn get(&self, pool: &PgPool) -> Result<Arc<Snapshot>, sqlx::Error> {
        if self.dirty.load(Ordering::Acquire) {
            let _one_at_a_time = self.reload.lock().await;
            // Another request may have reloaded while this one waited.
            if self.dirty.swap(false, Ordering::AcqRel) {
                match self.load(pool).await {
                    Ok(s) => {
                        *self
                            .current
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(s));
                    }
                    Err(e) => {
                        self.dirty.store(true, Ordering::Release);
                        return Err(e);
                    }
                }
            }
        }
        let current = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        match current {
            Some(s) => Ok(s),
            // Only reachable if the very first load raced an invalidate; load again.
            None => Box::pin(self.get(pool)).await,
        }
    }

    async fn load(&self, pool: &PgPool) -> Result<Snapshot, sqlx::Error> {
        let start = Instant::now();
        // One transaction at REPEATABLE READ: nodes and edges from the same moment.
        let mut tx = pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
        let nodes: Vec<(Uuid, Option<String>, String, Option<bool>)> =
            sqlx::query_as("SELECT id, name, asset_type, is_internal FROM assets")
                .fetch_all(&mut *tx)
                .await?;
        let edges: Vec<EdgeRow> = sqlx::query_as(
            "SELECT id, source_asset_id, target_asset_id, protocol, port, inferred_service,
                        total_bytes
                 FROM dependencies WHERE NOT stale",
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let nodes: Vec<NodeInput> = nodes
            .into_iter()
            .map(|(id, name, asset_type, is_internal)| NodeInput {
                id,
                name,
                asset_type,
                is_internal,
            })
            .collect();
        let edges: Vec<EdgeInput> = edges
            .into_iter()
            .map(
                |(id, source, target, protocol, port, service, bytes)| EdgeInput {
                    id,
                    source,
                    target,
                    protocol,
                    port,
                    service,
                    total_bytes: bytes.unwrap_or(0),
                },
            )
            .collect();
        // Building the indices is CPU work (tens of ms at 50k edges): off the runtime.
        let graph = tokio::task::spawn_blocking(move || Graph::new(nodes, edges))
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
        Ok(Snapshot { graph, info })
    }
}
