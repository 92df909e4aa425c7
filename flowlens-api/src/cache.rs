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
        }
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

    /// Drops every cached answer.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.topology.invalidate_all();
        self.search.invalidate_all();
        metrics::counter!(CACHE_INVALIDATIONS).increment(1);
    }
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
