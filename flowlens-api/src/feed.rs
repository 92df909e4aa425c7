//! EDGE: the change feed. One `LISTEN flowlens_changes` connection per API process;
//! each notification (the daemon's or an API edit's change event) drops the answer
//! caches, marks the analysis snapshot dirty and is broadcast to WebSocket clients.
//! When the connection drops, sqlx reconnects; whatever was missed meanwhile is covered
//! by dropping the caches and the snapshot again, and clients are told to refetch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;

use crate::cache::AnswerCache;
use crate::snapshot::GraphSnapshot;
use crate::telemetry::CHANGE_NOTIFICATIONS;

/// The channel the schema's trigger notifies.
pub const CHANNEL: &str = "flowlens_changes";

/// What WebSocket clients receive: `{"type": "change", "event": {...}}` per change
/// event, `{"type": "resync"}` when notifications may have been lost.
pub type FeedSender = broadcast::Sender<Arc<str>>;

/// Runs until the process ends. Reconnects with a bounded backoff.
pub async fn run(
    pool: sqlx::PgPool,
    cache: Arc<AnswerCache>,
    snapshot: Arc<GraphSnapshot>,
    tx: FeedSender,
    listening: Arc<AtomicBool>,
    received: Arc<AtomicU64>,
) {
    // Everything derived from the graph is dropped on any change.
    let changed = || {
        cache.invalidate();
        snapshot.invalidate();
    };
    let mut backoff = Duration::from_millis(200);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "change feed: connecting");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Err(e) = listener.listen(CHANNEL).await {
            tracing::warn!(error = %e, "change feed: LISTEN");
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(200);
        // Anything may have changed while we were not listening.
        changed();
        let _ = tx.send(Arc::from(json!({"type": "resync"}).to_string()));
        listening.store(true, Ordering::Release);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) => {
                    metrics::counter!(CHANGE_NOTIFICATIONS).increment(1);
                    received.fetch_add(1, Ordering::AcqRel);
                    changed();
                    let event: Value = serde_json::from_str(n.payload()).unwrap_or(Value::Null);
                    let _ = tx.send(Arc::from(
                        json!({"type": "change", "event": event}).to_string(),
                    ));
                }
                Ok(None) => {
                    // The connection dropped and sqlx reconnected: notifications in
                    // between are gone.
                    changed();
                    let _ = tx.send(Arc::from(json!({"type": "resync"}).to_string()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: receiving");
                    listening.store(false, Ordering::Release);
                    break;
                }
            }
        }
    }
}
