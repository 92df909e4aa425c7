//! Answer caches for topology and search (`api.cache`): rendered JSON keyed by route and
//! canonical query, each with its TTL, and all dropped whenever the graph changes (a
//! change notification or a successful API write), so a cached answer is never older
//! than the last change the API heard of.

use std::sync::Arc;
use std::time::Duration;

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

/// Cached answers: the body bytes and the content type.
pub type Cached = Arc<(String, bytes::Bytes)>;

pub struct AnswerCache {
    enabled: bool,
    topology: Cache<String, Cached>,
    search: Cache<String, Cached>,
}

impl AnswerCache {
    pub fn new(config: &CacheConfig) -> Self {
        let build = |ttl: u64| {
            Cache::builder()
                .max_capacity(1024)
                .time_to_live(Duration::from_secs(ttl.max(1)))
                .build()
        };
        Self {
            enabled: config.enabled,
            topology: build(config.topology_ttl_seconds),
            search: build(config.search_ttl_seconds),
        }
    }

    fn cache(&self, kind: Kind) -> &Cache<String, Cached> {
        match kind {
            Kind::Topology => &self.topology,
            Kind::Search => &self.search,
        }
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

    pub fn put(&self, kind: Kind, key: String, value: Cached) {
        if self.enabled {
            self.cache(kind).insert(key, value);
        }
    }

    /// Drops every cached answer.
    pub fn invalidate(&self) {
        self.topology.invalidate_all();
        self.search.invalidate_all();
        metrics::counter!(CACHE_INVALIDATIONS).increment(1);
    }
}
