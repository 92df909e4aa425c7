//! Answer caches for topology and search (`api.cache`): rendered bodies keyed by route
//! and canonical query, each with its TTL, and all dropped whenever the graph changes (a
//! change notification or a successful API write), so a cached answer is never older
//! than the last change the API heard of.
//!
//! Two guards: the caches are bounded in bytes, not entries (a full topology is
//! megabytes, and every distinct filter is a new key), and an answer computed before an
//! invalidation is never stored after it (each answer carries the generation it was
//! computed in; a `put` from an older generation is dropped).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use moka::sync::Cache;

use crate::config::CacheConfig;
use crate::telemetry::{CACHE_INVALIDATIONS, CACHE_LOOKUPS};

/// Which cache, for metrics.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Topology,
    Search,
}

impl Kind {
    fn label(self) -> &'static str {
        match self {
            Self::Topology => "topology",
            Self::Search => "search",
        }
    }
}

/// A rendered answer: its content type and body.
#[derive(Debug)]
pub struct Answer {
    pub content_type: &'static str,
    pub body: bytes::Bytes,
}

/// Shared between the cache and the responses built from it.
pub type Cached = Arc<Answer>;

impl IntoResponse for &Answer {
    fn into_response(self) -> Response {
        (
            [(header::CONTENT_TYPE, self.content_type)],
            self.body.clone(),
        )
            .into_response()
    }
}

/// Bytes each cache may hold (topology: a few full views of a 50k-edge graph).
const TOPOLOGY_BYTES: u64 = 256 << 20;
const SEARCH_BYTES: u64 = 32 << 20;

pub struct AnswerCache {
    enabled: bool,
    topology: Cache<String, Cached>,
    search: Cache<String, Cached>,
    generation: AtomicU64,
    /// `backend: redis`: answers shared by every instance.
    shared: Option<Shared>,
}

/// The Redis side: answers under `flowlens:cache:<generation>:<kind>:<key>`, the
/// generation a counter every instance bumps when it hears of a change (so an entry
/// of an older generation is never read again and expires by its TTL).
struct Shared {
    redis: Arc<crate::shared::Redis>,
    /// Wakes the task that bumps the generation: a burst of changes costs one INCR.
    bump: Arc<tokio::sync::Notify>,
    topology_ttl_ms: u64,
    search_ttl_ms: u64,
}

/// Redis keys.
const GENERATION_KEY: &str = "flowlens:cache:generation";
const ENTRY_PREFIX: &str = "flowlens:cache:";

/// The generation and the entry, in one round trip.
const LOOKUP_LUA: &str = r"
local g = redis.call('GET', KEYS[1]) or '0'
return {g, redis.call('GET', ARGV[1] .. g .. ':' .. ARGV[2]) or false}
";

/// Stores the entry only if the generation is still the one it was computed in.
const STORE_LUA: &str = r"
if (redis.call('GET', KEYS[1]) or '0') == ARGV[1] then
  redis.call('SET', ARGV[2] .. ARGV[1] .. ':' .. ARGV[3], ARGV[4], 'PX', ARGV[5])
  return 1
end
return 0
";

static LOOKUP: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(LOOKUP_LUA));
static STORE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(STORE_LUA));

/// What a lookup saw, for the store of an answer computed after it.
#[derive(Debug, Clone)]
pub struct Ticket {
    local: u64,
    /// The Redis generation, when Redis answered the lookup.
    shared: Option<String>,
}

/// The content types answers have, so an entry read back from Redis gets its
/// `&'static str` again.
const CONTENT_TYPES: [&str; 4] = [
    "application/json",
    "text/vnd.graphviz; charset=utf-8",
    "text/plain; charset=utf-8",
    "application/graphml+xml",
];

fn encode(a: &Answer) -> Vec<u8> {
    let mut v = Vec::with_capacity(a.content_type.len() + 1 + a.body.len());
    v.extend_from_slice(a.content_type.as_bytes());
    v.push(b'\n');
    v.extend_from_slice(&a.body);
    v
}

fn decode(bytes: &[u8]) -> Option<Answer> {
    let split = bytes.iter().position(|b| *b == b'\n')?;
    let ct = std::str::from_utf8(&bytes[..split]).ok()?;
    let content_type = CONTENT_TYPES.iter().find(|c| **c == ct)?;
    Some(Answer {
        content_type,
        body: bytes::Bytes::copy_from_slice(&bytes[split + 1..]),
    })
}

impl AnswerCache {
    pub fn new(config: &CacheConfig) -> Self {
        let build = |ttl: u64, bytes: u64| {
            Cache::builder()
                .max_capacity(bytes)
                .weigher(|k: &String, v: &Cached| {
                    u32::try_from(k.len() + v.body.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(Duration::from_secs(ttl.max(1)))
                .build()
        };
        Self {
            enabled: config.enabled,
            topology: build(config.topology_ttl_seconds, TOPOLOGY_BYTES),
            search: build(config.search_ttl_seconds, SEARCH_BYTES),
            generation: AtomicU64::new(0),
            shared: None,
        }
    }

    /// A cache whose answers live in `redis` (memory when it does not answer).
    pub fn with_redis(config: &CacheConfig, redis: Arc<crate::shared::Redis>) -> Self {
        let mut c = Self::new(config);
        c.shared = Some(Shared {
            redis,
            bump: Arc::new(tokio::sync::Notify::new()),
            topology_ttl_ms: config.topology_ttl_seconds.max(1) * 1000,
            search_ttl_ms: config.search_ttl_seconds.max(1) * 1000,
        });
        c
    }

    /// Starts the task that bumps the shared generation (on the current runtime).
    pub fn start_background(&self) {
        let Some(shared) = &self.shared else {
            return;
        };
        let (redis, bump) = (shared.redis.clone(), shared.bump.clone());
        tokio::spawn(async move {
            loop {
                bump.notified().await;
                if !bump_generation(&redis).await {
                    // Entries written meanwhile must not outlive the change: try again
                    // once Redis is back (the lookups use memory until then).
                    tokio::time::sleep(crate::shared::RETRY_AFTER).await;
                    bump.notify_one();
                }
            }
        });
    }

    /// Looks `key` up (Redis when configured and answering, else memory) and returns
    /// the ticket [`AnswerCache::store`] needs for an answer computed after it.
    pub async fn lookup(&self, kind: Kind, key: &str) -> (Option<Cached>, Ticket) {
        let local = self.generation();
        let Some(shared) = self.shared.as_ref().filter(|_| self.enabled) else {
            return (
                self.get(kind, key),
                Ticket {
                    local,
                    shared: None,
                },
            );
        };
        let found: Option<(String, Option<Vec<u8>>)> = shared
            .redis
            .run("cache", async |c| {
                LOOKUP
                    .key(GENERATION_KEY)
                    .arg(ENTRY_PREFIX)
                    .arg(format!("{}:{key}", kind.label()))
                    .invoke_async(c)
                    .await
            })
            .await;
        let Some((generation, entry)) = found else {
            return (
                self.get(kind, key),
                Ticket {
                    local,
                    shared: None,
                },
            );
        };
        let hit = entry.as_deref().and_then(decode).map(Arc::new);
        let result = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!(CACHE_LOOKUPS, "cache" => kind.label(), "result" => result).increment(1);
        (
            hit,
            Ticket {
                local,
                shared: Some(generation),
            },
        )
    }

    /// Stores an answer computed after the lookup that gave `ticket`: in Redis if the
    /// lookup went there (and the shared generation has not moved), else in memory.
    pub async fn store(&self, kind: Kind, key: String, value: Cached, ticket: Ticket) {
        if !self.enabled {
            return;
        }
        let (Some(shared), Some(generation)) = (&self.shared, ticket.shared) else {
            self.put(kind, key, value, ticket.local);
            return;
        };
        let ttl = match kind {
            Kind::Topology => shared.topology_ttl_ms,
            Kind::Search => shared.search_ttl_ms,
        };
        let bytes = encode(&value);
        let _: Option<i64> = shared
            .redis
            .run("cache", async |c| {
                STORE
                    .key(GENERATION_KEY)
                    .arg(&generation)
                    .arg(ENTRY_PREFIX)
                    .arg(format!("{}:{key}", kind.label()))
                    .arg(bytes.as_slice())
                    .arg(ttl)
                    .invoke_async(c)
                    .await
            })
            .await;
    }

    fn cache(&self, kind: Kind) -> &Cache<String, Cached> {
        match kind {
            Kind::Topology => &self.topology,
            Kind::Search => &self.search,
        }
    }

    /// The current generation: take it before computing an answer, give it to `put`.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn get(&self, kind: Kind, key: &str) -> Option<Cached> {
        if !self.enabled {
            return None;
        }
        let hit = self.cache(kind).get(key);
        let result = if hit.is_some() { "hit" } else { "miss" };
        metrics::counter!(CACHE_LOOKUPS, "cache" => kind.label(), "result" => result).increment(1);
        hit
    }

    /// Stores an answer computed in `generation`, unless the graph changed since.
    pub fn put(&self, kind: Kind, key: String, value: Cached, generation: u64) {
        if self.enabled && self.generation() == generation {
            self.cache(kind).insert(key, value);
            // An invalidation may have slipped in between the check and the insert.
            if self.generation() != generation {
                self.cache(kind).invalidate_all();
            }
        }
    }

    /// Drops every cached answer, the shared ones by bumping their generation before
    /// returning (within `shared::TIMEOUT`; when Redis does not answer, the background
    /// task bumps it once it is back).
    pub async fn invalidate_now(&self) {
        self.drop_local();
        if let Some(shared) = &self.shared
            && !bump_generation(&shared.redis).await
        {
            shared.bump.notify_one();
        }
    }

    /// Drops every cached answer (the shared ones by bumping their generation, soon).
    pub fn invalidate(&self) {
        self.drop_local();
        if let Some(shared) = &self.shared {
            shared.bump.notify_one();
        }
    }

    /// Drops this process's answers and moves its generation on.
    fn drop_local(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.topology.invalidate_all();
        self.search.invalidate_all();
        metrics::counter!(CACHE_INVALIDATIONS).increment(1);
    }
}

/// Moves the shared generation on; false when Redis did not answer.
async fn bump_generation(redis: &crate::shared::Redis) -> bool {
    redis
        .run("cache", async |c| {
            redis::cmd("INCR")
                .arg(GENERATION_KEY)
                .query_async::<i64>(c)
                .await
        })
        .await
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: usize) -> Cached {
        Arc::new(Answer {
            content_type: "application/json",
            body: bytes::Bytes::from(vec![b'x'; n]),
        })
    }

    #[test]
    fn a_put_from_before_an_invalidation_is_dropped() {
        let c = AnswerCache::new(&CacheConfig::default());
        let g = c.generation();
        c.invalidate();
        c.put(Kind::Topology, "k".into(), answer(1), g);
        assert!(c.get(Kind::Topology, "k").is_none());
        c.put(Kind::Topology, "k".into(), answer(1), c.generation());
        assert!(c.get(Kind::Topology, "k").is_some());
    }

    #[test]
    fn answers_survive_the_trip_through_redis_bytes() {
        for ct in CONTENT_TYPES {
            let a = Answer {
                content_type: ct,
                body: bytes::Bytes::from_static(b"{\"x\":\n1}"),
            };
            let back = decode(&encode(&a)).unwrap();
            assert_eq!((back.content_type, back.body), (a.content_type, a.body));
        }
        assert!(
            decode(b"text/html\n<b>").is_none(),
            "only our content types"
        );
    }

    #[test]
    fn bounded_in_bytes() {
        let c = AnswerCache::new(&CacheConfig::default());
        for i in 0..40 {
            c.put(
                Kind::Search,
                format!("k{i}"),
                answer(1 << 20),
                c.generation(),
            );
        }
        c.search.run_pending_tasks();
        assert!(
            c.search.weighted_size() <= SEARCH_BYTES,
            "{}",
            c.search.weighted_size()
        );
    }
}
