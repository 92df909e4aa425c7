//! Things held per key (TCP connections per client address, WebSockets per caller):
//! a count per key, bounded, each held thing a [`KeySlot`] that gives its count back
//! when dropped, keys with none forgotten so the map is as small as what is held.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The counts, shared by every holder.
pub type KeyCounts = Arc<Mutex<HashMap<String, usize>>>;

/// One of a key's held things.
pub struct KeySlot {
    counts: KeyCounts,
    key: String,
}

impl KeySlot {
    /// Takes one of `key`'s `max` slots, or `None` when it holds them all.
    pub fn take(counts: &KeyCounts, key: &str, max: usize) -> Option<Self> {
        let mut m = counts.lock().unwrap_or_else(PoisonError::into_inner);
        let n = m.entry(key.to_owned()).or_insert(0);
        if *n >= max {
            if *n == 0 {
                m.remove(key);
            }
            return None;
        }
        *n += 1;
        Some(Self {
            counts: counts.clone(),
            key: key.to_owned(),
        })
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}
