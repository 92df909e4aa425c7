//! What every handler shares.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use sqlx::PgPool;

use crate::auth::Authenticator;
use crate::cache::AnswerCache;
use crate::config::{Config, ConfigError, Rate};
use crate::discovery::ScanSlots;
use crate::feed::{FeedSender, RevocationSender};
use crate::guard::Guard;
use crate::rate_limit::{CallerLimiter, RateLimiter};
use crate::shared::Redis;
use crate::snapshot::GraphSnapshot;

/// Cheap to clone: one `Arc`. Axum clones the state for every extractor and
/// middleware that takes it, several times a request, so it is one reference count,
/// not one per field.
#[derive(Clone)]
pub struct AppState(Arc<StateParts>);

impl std::ops::Deref for AppState {
    type Target = StateParts;

    fn deref(&self) -> &StateParts {
        &self.0
    }
}

/// What every handler shares.
pub struct StateParts {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub auth: Arc<Authenticator>,
    pub limiter: Arc<CallerLimiter>,
    /// What every request passes first (its per-address limit included).
    pub guard: Arc<Guard>,
    /// Health's PostgreSQL probes (one at a time).
    pub health: Arc<tokio::sync::Mutex<HealthProbe>>,
    pub cache: Arc<AnswerCache>,
    /// The Redis servers the backends use (none with memory backends), for health.
    pub redis: Vec<Arc<Redis>>,
    pub snapshot: Arc<GraphSnapshot>,
    /// Change events for WebSocket clients.
    pub feed: FeedSender,
    /// Revoked API keys, for the WebSockets they opened.
    pub revoked: RevocationSender,
    /// Open WebSocket connections.
    pub ws_open: Arc<AtomicUsize>,
    /// Open WebSocket connections per caller (`Caller::limit_key`).
    pub ws_callers: crate::slots::KeyCounts,
    /// The change feed is listening (reported by health).
    pub feed_listening: Arc<AtomicBool>,
    /// Change notifications this process has received.
    pub feed_received: Arc<AtomicU64>,
    pub prometheus: PrometheusHandle,
    pub started: Instant,
    /// Running discovery scans of this process, capped by config.
    pub scans: ScanSlots,
    /// This process, among the API instances sharing the database (on its scans).
    pub instance_id: uuid::Uuid,
    /// Permits for CPU-bound work on blocking threads (whole-graph analyses, big
    /// topology renders), four per core: enough that the cores stay busy while some
    /// renders wait on memory, few enough that a burst of heavy requests cannot stack
    /// hundreds of blocking threads and their answers in memory.
    pub cpu: Arc<tokio::sync::Semaphore>,
    /// The ServiceNow push loop, once started (`api.integrations.servicenow.enabled`).
    pub servicenow: std::sync::OnceLock<Arc<crate::servicenow::Schedule>>,
}

/// The last PostgreSQL probe of health.
#[derive(Debug, Default)]
pub struct HealthProbe {
    /// When it ran and what it found: PostgreSQL's and Redis's state.
    pub last: Option<(Instant, String, String)>,
    /// Probes sent since start.
    pub sent: u64,
}

/// A safety net under the change feed: the snapshot is reloaded at least this often,
/// so edits that announce nothing (the daemon's byte counters) still reach analyses.
const SNAPSHOT_MAX_AGE: Duration = Duration::from_mins(1);

impl AppState {
    /// Builds the state from a validated config and a connected, migrated pool.
    pub fn new(config: Config, pool: PgPool) -> Result<Self, ConfigError> {
        let rl = &config.api.rate_limiting;
        let parse = |key: &str, v: &str| {
            v.parse::<Rate>()
                .map_err(|e| ConfigError::Invalid(vec![format!("{key}: {e}")]))
        };
        // One Redis client per URL a backend names.
        let mut servers: Vec<(String, Arc<Redis>)> = Vec::new();
        let mut redis_for = |key: &str, url: &str| -> Result<Arc<Redis>, ConfigError> {
            if let Some((_, r)) = servers.iter().find(|(u, _)| u == url) {
                return Ok(r.clone());
            }
            let r = Arc::new(
                Redis::new(url, crate::shared::METRICS)
                    .map_err(|e| ConfigError::Invalid(vec![format!("{key}: {e}")]))?,
            );
            servers.push((url.to_owned(), r.clone()));
            Ok(r)
        };
        let limiter_redis = (rl.backend == "redis")
            .then(|| redis_for("api.rate_limiting.redis_url", &rl.redis_url))
            .transpose()?;
        let cfg_cache = &config.api.cache;
        let cache = if cfg_cache.backend == "redis" {
            AnswerCache::with_redis(
                cfg_cache,
                redis_for("api.cache.redis_url", &cfg_cache.redis_url)?,
            )
        } else {
            AnswerCache::new(cfg_cache)
        };
        let limiter = CallerLimiter::new(
            rl.enabled,
            parse("api.rate_limiting.default_limit", &rl.default_limit)?,
            parse("api.rate_limiting.burst_limit", &rl.burst_limit)?,
            limiter_redis,
        );
        let address_limiter = RateLimiter::scoped(
            "address",
            rl.enabled,
            parse("api.rate_limiting.per_address_limit", &rl.per_address_limit)?,
            parse("api.rate_limiting.per_address_burst", &rl.per_address_burst)?,
        );
        Ok(Self(Arc::new(StateParts {
            auth: Arc::new(Authenticator::with_scope(
                config.api.auth.enabled,
                &config.api.auth.jwt_secret,
                Duration::from_secs(config.api.auth.token_expiry_hours.saturating_mul(3600)),
                config.api.auth.issuer.as_deref(),
                config.api.auth.audience.as_deref(),
            )),
            limiter: Arc::new(limiter),
            guard: Arc::new(Guard::new(&config.api, address_limiter)),
            health: Arc::default(),
            cache: Arc::new(cache),
            redis: servers.into_iter().map(|(_, r)| r).collect(),
            snapshot: Arc::new(GraphSnapshot::default()),
            feed: tokio::sync::broadcast::channel(1024).0,
            revoked: tokio::sync::broadcast::channel(64).0,
            ws_open: Arc::new(AtomicUsize::new(0)),
            ws_callers: Arc::default(),
            feed_listening: Arc::new(AtomicBool::new(false)),
            feed_received: Arc::new(AtomicU64::new(0)),
            prometheus: crate::telemetry::prometheus(),
            started: Instant::now(),
            scans: ScanSlots::new(config.api.discovery.max_running_scans),
            instance_id: uuid::Uuid::new_v4(),
            cpu: Arc::new(tokio::sync::Semaphore::new(
                4 * std::thread::available_parallelism().map_or(2, std::num::NonZero::get),
            )),
            servicenow: std::sync::OnceLock::new(),
            config: Arc::new(config),
            pool,
        })))
    }

    /// Starts the change feed (LISTEN) and the snapshot's safety timer on the current
    /// runtime. Without it the API still answers, but caches live out their TTLs and
    /// WebSockets stay silent.
    pub fn start_background(&self) {
        self.cache.start_background();
        tokio::spawn(crate::feed::run(
            self.pool.clone(),
            crate::feed::Targets {
                cache: self.cache.clone(),
                snapshot: self.snapshot.clone(),
                auth: self.auth.clone(),
                tx: self.feed.clone(),
                revoked: self.revoked.clone(),
                listening: self.feed_listening.clone(),
                received: self.feed_received.clone(),
            },
        ));
        // Scans whose instance died, whichever instance that was.
        let (pool, stale) = (
            self.pool.clone(),
            Duration::from_secs(self.config.api.discovery.orphaned_after_seconds),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(stale / 2);
            loop {
                tick.tick().await;
                match crate::discovery::store::fail_orphaned(&pool, stale).await {
                    Ok(0) => {}
                    Ok(n) => tracing::warn!(
                        scans = n,
                        "failed discovery scans whose API instance stopped"
                    ),
                    Err(e) => tracing::warn!(error = %e, "looking for orphaned scans"),
                }
            }
        });
        let sn = &self.config.api.integrations.servicenow;
        if sn.enabled && self.servicenow.get().is_none() {
            match crate::servicenow::spawn(self.pool.clone(), sn.clone()) {
                Ok(schedule) => {
                    let _ = self.servicenow.set(schedule);
                }
                Err(e) => tracing::error!(error = %e, "the ServiceNow push cannot start"),
            }
        }
        let snapshot = self.snapshot.clone();
        tokio::spawn(async move {
            let start = tokio::time::Instant::now() + SNAPSHOT_MAX_AGE;
            let mut tick = tokio::time::interval_at(start, SNAPSHOT_MAX_AGE);
            loop {
                tick.tick().await;
                snapshot.invalidate();
            }
        });
    }

    /// Runs CPU-bound `work` on a blocking thread once one of the [`AppState::cpu`]
    /// permits is free; the permit is held until the work ends, even if the request
    /// that asked for it has gone.
    pub async fn compute<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, crate::error::ApiError> {
        let permit = self
            .cpu
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| crate::error::ApiError::Unavailable("shutting down".to_owned()))?;
        Ok(tokio::task::spawn_blocking(move || {
            let out = work();
            drop(permit);
            out
        })
        .await?)
    }

    /// After a successful write through the API: drop cached answers and the snapshot
    /// at once (the change feed would too, a few milliseconds later; a client reading
    /// its own write must not see the old graph meanwhile). With a shared (Redis)
    /// cache the shared generation is bumped before the answer goes out, so the
    /// client's next read on any instance misses the old entries.
    pub async fn graph_changed(&self) {
        self.snapshot.invalidate();
        self.cache.invalidate_now().await;
    }
}
