//! EDGE: Redis, the state several API instances share (design §8): rate-limit buckets
//! (`api.rate_limiting.backend: redis`) and rendered answers (`api.cache.backend:
//! redis`), through `flowlens-redis` (shared with the daemon's enrichment caches),
//! counted in `flowlens_api_redis_fallbacks_total{use}` and `flowlens_api_redis_up`.

pub use flowlens_redis::{RETRY_AFTER, TIMEOUT};

use crate::telemetry::{REDIS_FALLBACKS, REDIS_UP};

/// The API's Redis: [`flowlens_redis::Redis`] counted by the API's metrics.
pub type Redis = flowlens_redis::Redis;

/// The API's metrics for Redis.
pub const METRICS: flowlens_redis::Metrics = flowlens_redis::Metrics {
    fallbacks: REDIS_FALLBACKS,
    up: REDIS_UP,
};
