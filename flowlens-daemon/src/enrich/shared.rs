//! EDGE: `enrichment.cache.backend: redis`, what one daemon learnt shared with the
//! others writing the same graph: reverse-DNS answers (with the expiry they were
//! given) and the clouds' inventory snapshots (one instance calls a cloud's API per
//! refresh interval, the others take its snapshot). Redis is an accelerator through
//! `flowlens-redis`: when it is down every instance goes on with its own memory, says
//! so once, and counts it in `flowlens_enrich_cache_redis_fallbacks_total{use}`
//! (`flowlens_enrich_cache_redis_up` is 0 meanwhile).
//!
//! `GeoIP` answers are not shared: a lookup in the in-memory database is a tree walk
//! of a few hundred nanoseconds, cheaper than any round trip to Redis, and every
//! instance reads the same file.

use std::time::Duration;

use flowlens_redis::redis::AsyncCommands as _;

use crate::config::CacheConfig;

/// Metric names of the shared cache.
pub mod metric {
    /// Requests answered from memory because Redis was down, by `use` (`rdns`,
    /// `inventory`).
    pub const FALLBACKS: &str = "flowlens_enrich_cache_redis_fallbacks_total";
    /// 1 while Redis answers, 0 during an outage.
    pub const UP: &str = "flowlens_enrich_cache_redis_up";
    /// Answers another instance had already found, by `use`.
    pub const SHARED_HITS: &str = "flowlens_enrich_cache_shared_hits_total";
}

/// Where every key lives, so one Redis can serve other things too.
const PREFIX: &str = "flowlens:enrich:";
/// The largest value kept (an inventory snapshot of a large estate).
const MAX_VALUE: usize = 64 << 20;
/// How long a large value (a snapshot) may take to cross; small ones get
/// `flowlens-redis`'s 250 ms.
pub const LARGE: Duration = Duration::from_secs(5);

/// The Redis the daemons share.
pub struct SharedCache {
    redis: flowlens_redis::Redis,
}

impl std::fmt::Debug for SharedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCache").finish_non_exhaustive()
    }
}

impl SharedCache {
    /// The cache `config` names: `None` for the `memory` backend.
    ///
    /// # Errors
    /// A Redis URL that is not one.
    pub fn new(config: &CacheConfig) -> Result<Option<Self>, String> {
        if config.backend != "redis" {
            return Ok(None);
        }
        let redis = flowlens_redis::Redis::new(
            &config.redis_url,
            flowlens_redis::Metrics {
                fallbacks: metric::FALLBACKS,
                up: metric::UP,
            },
        )
        .map_err(|e| format!("enrichment.cache.redis_url: {e}"))?;
        Ok(Some(Self { redis }))
    }

    /// The value of `key`, if another instance stored one (`None` too when Redis is
    /// down: the caller does the work itself).
    pub async fn get(&self, use_: &'static str, key: &str) -> Option<Vec<u8>> {
        self.get_within(use_, key, flowlens_redis::TIMEOUT).await
    }

    /// [`Self::get`] for a large value, given `limit`.
    pub async fn get_within(
        &self,
        use_: &'static str,
        key: &str,
        limit: Duration,
    ) -> Option<Vec<u8>> {
        let key = format!("{PREFIX}{key}");
        self.redis
            .run_within(use_, limit, async move |c| {
                c.get::<_, Option<Vec<u8>>>(&key).await
            })
            .await
            .flatten()
    }

    /// Stores `value` under `key` for `ttl` (at least a millisecond), for the other
    /// instances; best effort.
    pub async fn set(&self, use_: &'static str, key: &str, value: Vec<u8>, ttl: Duration) {
        let limit = if value.len() > 1 << 20 {
            LARGE
        } else {
            flowlens_redis::TIMEOUT
        };
        if value.len() > MAX_VALUE {
            return;
        }
        let key = format!("{PREFIX}{key}");
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let _ = self
            .redis
            .run_within(use_, limit, async move |c| {
                c.pset_ex::<_, _, ()>(&key, value, ms).await
            })
            .await;
    }
}
