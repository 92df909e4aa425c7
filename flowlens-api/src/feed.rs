//! EDGE: the change feed. One `LISTEN flowlens_changes` connection per API process;
//! each notification (the daemon's or an API edit's change event) drops the answer
//! caches, marks the analysis snapshot dirty and is broadcast to WebSocket clients.
//! When the connection drops, sqlx reconnects; whatever was missed meanwhile is covered
//! by dropping the caches and the snapshot again, and clients are told to refetch.
//! The same connection hears API key creations and revocations ([`KEY_CHANNEL`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use sqlx::postgres::PgListener;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::auth::Authenticator;
use crate::cache::AnswerCache;
use crate::snapshot::GraphSnapshot;
use crate::telemetry::{CHANGE_NOTIFICATIONS, KEY_NOTIFICATIONS};

/// The channel the schema's trigger notifies.
pub const CHANNEL: &str = "flowlens_changes";

/// The channel API key creations and revocations are announced on (payload: the key's
/// id), so every API instance drops its cached keys and closes the revoked key's open
/// WebSockets within the notification's latency, not a cache TTL.
pub const KEY_CHANNEL: &str = "flowlens_api_keys";

/// What WebSocket clients receive: `{"type": "change", "event": {...}}` per change
/// event, `{"type": "resync"}` when notifications may have been lost.
pub type FeedSender = broadcast::Sender<Arc<str>>;

/// API keys revoked (by any instance), for the WebSockets they opened. `None`: the
/// feed lost notifications, so any key may have been revoked; sockets opened with a key
/// re-check theirs.
pub type RevocationSender = broadcast::Sender<Option<Uuid>>;

/// Everything the feed updates.
pub struct Targets {
    pub cache: Arc<AnswerCache>,
    pub snapshot: Arc<GraphSnapshot>,
    pub auth: Arc<Authenticator>,
    pub tx: FeedSender,
    pub revoked: RevocationSender,
    pub listening: Arc<AtomicBool>,
    pub received: Arc<AtomicU64>,
}

impl Targets {
    /// Anything may have changed while the feed was not listening.
    fn missed(&self) {
        self.cache.invalidate();
        self.snapshot.invalidate();
        self.auth.forget_keys();
        let _ = self
            .tx
            .send(Arc::from(json!({"type": "resync"}).to_string()));
        let _ = self.revoked.send(None);
    }

    fn stopped(&self) {
        self.listening.store(false, Ordering::Release);
        self.auth.set_revocations_heard(false);
    }
}

/// Runs until the process ends. Reconnects with a bounded backoff.
pub async fn run(pool: sqlx::PgPool, t: Targets) {
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
        if let Err(e) = listener.listen_all([CHANNEL, KEY_CHANNEL]).await {
            tracing::warn!(error = %e, "change feed: LISTEN");
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(200);
        t.missed();
        t.auth.set_revocations_heard(true);
        t.listening.store(true, Ordering::Release);
        loop {
            match listener.try_recv().await {
                Ok(Some(n)) if n.channel() == KEY_CHANNEL => {
                    metrics::counter!(KEY_NOTIFICATIONS).increment(1);
                    t.auth.forget_keys();
                    if let Ok(id) = n.payload().parse::<Uuid>() {
                        let _ = t.revoked.send(Some(id));
                    }
                }
                Ok(Some(n)) => {
                    metrics::counter!(CHANGE_NOTIFICATIONS).increment(1);
                    t.received.fetch_add(1, Ordering::AcqRel);
                    t.cache.invalidate();
                    t.snapshot.invalidate();
                    let event: Value = serde_json::from_str(n.payload()).unwrap_or(Value::Null);
                    let _ = t.tx.send(Arc::from(
                        json!({"type": "change", "event": event}).to_string(),
                    ));
                }
                Ok(None) => {
                    // The connection dropped and sqlx reconnected: notifications in
                    // between are gone.
                    t.missed();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "change feed: receiving");
                    t.stopped();
                    break;
                }
            }
        }
    }
}
