//! Per-caller rate limits: two token buckets per user or API key, one for the
//! sustained budget (`default_limit`, e.g. 100/minute) and one for how fast it may be
//! spent (`burst_limit`, e.g. 20/second). A request needs a token from both; when one is
//! empty the answer is 429 with `Retry-After` saying when a token will be back.
//!
//! Counters live in this process (`backend: memory`) or in Redis (`backend: redis`),
//! where every API instance behind a load balancer spends from the same buckets: a
//! caller's budget is the configured one however many instances there are. The Redis
//! buckets are updated by one script, atomically, on Redis's clock; when Redis does
//! not answer, the memory buckets take over (see `shared`). Idle callers are forgotten
//! once their buckets are full again (memory) or expire (Redis), so either store stays
//! as small as the set of active callers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::Rate;
use crate::error::ApiError;

/// A token bucket: `capacity` tokens, refilled at `capacity / per`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug, Clone, Copy)]
struct Budget {
    capacity: f64,
    per_second: f64,
}

impl From<Rate> for Budget {
    fn from(r: Rate) -> Self {
        let capacity = f64::from(r.count);
        Self {
            capacity,
            per_second: capacity / r.per.as_secs_f64(),
        }
    }
}

impl Budget {
    fn refill(self, b: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.per_second).min(self.capacity);
        b.updated = now;
    }

    /// Seconds until one token is back.
    fn wait(self, b: &Bucket) -> f64 {
        ((1.0 - b.tokens) / self.per_second).max(0.0)
    }
}

/// The limiter shared by every request.
pub struct RateLimiter {
    enabled: bool,
    /// The metric's `scope` label.
    scope: &'static str,
    sustained: Budget,
    burst: Budget,
    buckets: Mutex<HashMap<String, [Bucket; 2]>>,
}

/// Above this many tracked callers, full (idle) buckets are pruned.
const PRUNE_ABOVE: usize = 10_000;

impl RateLimiter {
    pub fn new(enabled: bool, sustained: Rate, burst: Rate) -> Self {
        Self::scoped("caller", enabled, sustained, burst)
    }

    /// A limiter whose refusals are counted under `scope`.
    pub fn scoped(scope: &'static str, enabled: bool, sustained: Rate, burst: Rate) -> Self {
        Self {
            enabled,
            scope,
            sustained: sustained.into(),
            burst: burst.into(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether it limits at all (`api.rate_limiting.enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Takes a token for `key` now, or says how long to wait.
    pub fn check(&self, key: &str) -> Result<(), ApiError> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), ApiError> {
        if !self.enabled {
            return Ok(());
        }
        let mut map = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > PRUNE_ABOVE {
            let (s, b) = (self.sustained, self.burst);
            map.retain(|_, [bs, bb]| {
                s.refill(bs, now);
                b.refill(bb, now);
                bs.tokens < s.capacity || bb.tokens < b.capacity
            });
        }
        let fresh = |budget: Budget| Bucket {
            tokens: budget.capacity,
            updated: now,
        };
        let [bs, bb] = map
            .entry(key.to_owned())
            .or_insert_with(|| [fresh(self.sustained), fresh(self.burst)]);
        self.sustained.refill(bs, now);
        self.burst.refill(bb, now);
        if bs.tokens >= 1.0 && bb.tokens >= 1.0 {
            bs.tokens -= 1.0;
            bb.tokens -= 1.0;
            return Ok(());
        }
        Err(refusal(
            self.scope,
            self.sustained.wait(bs).max(self.burst.wait(bb)),
        ))
    }
}

/// A 429 for a caller who may try again in `wait_seconds`, counted under `scope`.
fn refusal(scope: &'static str, wait_seconds: f64) -> ApiError {
    metrics::counter!(crate::telemetry::RATE_LIMITED, "scope" => scope).increment(1);
    let wait = Duration::from_secs_f64(wait_seconds.clamp(0.0, 86_400.0));
    // Rounded up: a client that waits the whole seconds it is told must succeed.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::RateLimited {
        retry_after_seconds: seconds.max(1),
    }
}

/// The per-caller limit: memory, or Redis with memory under it.
pub struct CallerLimiter {
    memory: RateLimiter,
    shared: Option<Arc<crate::shared::Redis>>,
    sustained: Budget,
    burst: Budget,
    /// How long an idle caller's buckets stay in Redis: until both are full again.
    ttl_ms: u64,
}

/// Both buckets of `KEYS[1]` in one step on Redis's clock. ARGV: sustained capacity
/// and tokens per second, burst capacity and tokens per second, TTL in ms. Answers
/// "0" when a token was taken, else the seconds until one is back (as text: Lua
/// numbers become integers in replies).
const BUCKETS_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 's', 'b', 'ts')
local cs, rs = tonumber(ARGV[1]), tonumber(ARGV[2])
local cb, rb = tonumber(ARGV[3]), tonumber(ARGV[4])
local s = tonumber(v[1]) or cs
local b = tonumber(v[2]) or cb
local ts = tonumber(v[3]) or now
local el = math.max(0, now - ts) / 1000
s = math.min(cs, s + el * rs)
b = math.min(cb, b + el * rb)
local wait = 0
if s >= 1 and b >= 1 then
  s = s - 1
  b = b - 1
else
  wait = math.max((1 - s) / rs, (1 - b) / rb)
end
redis.call('HSET', KEYS[1], 's', tostring(s), 'b', tostring(b), 'ts', now)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return tostring(wait)
";

static BUCKETS: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(BUCKETS_LUA));

/// Prefix of the bucket keys in Redis.
const KEY_PREFIX: &str = "flowlens:ratelimit:";

impl CallerLimiter {
    pub fn new(
        enabled: bool,
        sustained: Rate,
        burst: Rate,
        shared: Option<Arc<crate::shared::Redis>>,
    ) -> Self {
        Self {
            memory: RateLimiter::new(enabled, sustained, burst),
            shared: shared.filter(|_| enabled),
            sustained: sustained.into(),
            burst: burst.into(),
            ttl_ms: u64::try_from(sustained.per.max(burst.per).as_millis()).unwrap_or(u64::MAX / 2)
                + 1000,
        }
    }

    /// Takes a token for `key`, from Redis when it is configured and answers.
    pub async fn check(&self, key: &str) -> Result<(), ApiError> {
        let Some(redis) = &self.shared else {
            return self.memory.check(key);
        };
        let (s, b, ttl_ms) = (self.sustained, self.burst, self.ttl_ms);
        let bucket = format!("{KEY_PREFIX}{key}");
        let answer: Option<String> = redis
            .run("rate_limit", async |c| {
                BUCKETS
                    .key(&bucket)
                    .arg(s.capacity)
                    .arg(s.per_second)
                    .arg(b.capacity)
                    .arg(b.per_second)
                    .arg(ttl_ms)
                    .invoke_async(c)
                    .await
            })
            .await;
        let Some(wait) = answer else {
            return self.memory.check(key);
        };
        let wait: f64 = wait.parse().unwrap_or(0.0);
        if wait <= 0.0 {
            return Ok(());
        }
        Err(refusal("caller", wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(s: &str) -> Rate {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_sustained_then_refill() {
        let l = RateLimiter::new(true, rate("10/minute"), rate("3/second"));
        let t0 = Instant::now();
        for _ in 0..3 {
            l.check_at("a", t0).unwrap();
        }
        // The burst bucket is empty: back in a third of a second, said as 1 s.
        match l.check_at("a", t0) {
            Err(ApiError::RateLimited {
                retry_after_seconds,
            }) => assert_eq!(retry_after_seconds, 1),
            other => panic!("{other:?}"),
        }
        // Another caller has its own buckets.
        l.check_at("b", t0).unwrap();
        let mut t = t0;
        for _ in 0..8 {
            t += Duration::from_secs(1);
            l.check_at("a", t).unwrap();
        }
        // 11 spent in 8 s: the sustained bucket (one token back per 6 s) is empty.
        match l.check_at("a", t + Duration::from_millis(100)) {
            Err(ApiError::RateLimited {
                retry_after_seconds,
            }) => assert!(
                (1..=6).contains(&retry_after_seconds),
                "{retry_after_seconds}"
            ),
            other => panic!("{other:?}"),
        }
        l.check_at("a", t + Duration::from_secs(7)).unwrap();
    }

    #[test]
    fn disabled_never_limits() {
        let l = RateLimiter::new(false, rate("1/day"), rate("1/day"));
        let t = Instant::now();
        for _ in 0..100 {
            l.check_at("a", t).unwrap();
        }
    }
}
