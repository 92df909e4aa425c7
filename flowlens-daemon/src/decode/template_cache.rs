//! The bounded template cache shared by all exporters.
//!
//! Templates are keyed by (exporter address, protocol version, source id / observation
//! domain, template id), so two exporters, or two domains of one exporter, can reuse a
//! template id without clobbering each other (RFC 7011 §8, RFC 3954 §5.1). The cache is
//! an LRU bounded by entry count: an exporter that churns template ids cannot grow it
//! without bound, and every eviction is counted against the exporter that lost the
//! template.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

use super::template::Template;

/// Which template family a key belongs to (the version on the wire).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Dialect {
    /// `NetFlow` v9 (RFC 3954).
    V9,
    /// IPFIX (RFC 7011).
    Ipfix,
}

/// Identity of one template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TemplateKey {
    pub exporter: IpAddr,
    pub dialect: Dialect,
    /// v9 source id or IPFIX observation domain id.
    pub domain: u32,
    pub template_id: u16,
}

/// What inserting a template did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insert {
    New,
    /// Same id, same definition (the periodic resend): nothing changed.
    Refreshed,
    /// Same id, different definition (exporter restart or reconfiguration).
    Redefined,
}

/// Bounded LRU of templates with per-exporter eviction counts.
#[derive(Debug)]
pub struct TemplateCache {
    entries: LruCache<TemplateKey, Arc<Template>>,
    evictions: HashMap<IpAddr, u64>,
}

impl Default for TemplateCache {
    fn default() -> Self {
        Self::new(super::DEFAULT_MAX_TEMPLATES)
    }
}

impl TemplateCache {
    /// A cache holding at most `capacity` templates (at least one).
    pub fn new(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            entries: LruCache::new(cap),
            evictions: HashMap::new(),
        }
    }

    #[inline]
    pub fn get(&mut self, key: &TemplateKey) -> Option<Arc<Template>> {
        self.entries.get(key).cloned()
    }

    /// Inserts or replaces a template, evicting (and counting) the least recently used
    /// when full.
    pub fn insert(&mut self, key: TemplateKey, template: Template) -> Insert {
        if let Some(old) = self.entries.get_mut(&key) {
            if old.fields == template.fields && old.kind == template.kind {
                return Insert::Refreshed;
            }
            *old = Arc::new(template);
            return Insert::Redefined;
        }
        if let Some((evicted, _)) = self.entries.push(key, Arc::new(template))
            && evicted != key
        {
            *self.evictions.entry(evicted.exporter).or_default() += 1;
        }
        Insert::New
    }

    /// Removes one template (IPFIX withdrawal). Returns whether it existed.
    pub fn withdraw(&mut self, key: &TemplateKey) -> bool {
        self.entries.pop(key).is_some()
    }

    /// Removes every template of `kind` in one exporter's domain (IPFIX "withdraw all",
    /// RFC 7011 §8.1). Returns how many were removed.
    pub fn withdraw_all(
        &mut self,
        exporter: IpAddr,
        dialect: Dialect,
        domain: u32,
        options: bool,
    ) -> u64 {
        let doomed: Vec<TemplateKey> = self
            .entries
            .iter()
            .filter(|(k, t)| {
                k.exporter == exporter
                    && k.dialect == dialect
                    && k.domain == domain
                    && t.kind.is_options() == options
            })
            .map(|(k, _)| *k)
            .collect();
        for k in &doomed {
            self.entries.pop(k);
        }
        doomed.len() as u64
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Evictions so far, by the exporter whose template was evicted.
    pub fn evictions_by_exporter(&self) -> HashMap<IpAddr, u64> {
        self.evictions.clone()
    }

    /// Every cached template, least recently used first (the order to re-insert them
    /// in so a restored cache has the same recency).
    pub fn iter_lru_first(&self) -> impl Iterator<Item = (&TemplateKey, &Arc<Template>)> {
        self.entries.iter().rev()
    }
}
