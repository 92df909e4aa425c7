//! Saving and restoring template and sampling state.
//!
//! After a restart a collector would otherwise drop every data set until each exporter
//! resends its templates (minutes, for some). A [`StateSnapshot`] is plain data (serde),
//! taken from a [`Decoder`] and loaded into a new one; reading and writing the file is
//! the caller's business (this module stays pure). Counters and held data are not
//! saved: they belong to the process that saw them.

use std::net::IpAddr;

use super::template::{FieldSpec, Template, TemplateKind};
use super::template_cache::{Dialect, TemplateKey};
use super::{DecodeError, Decoder};

/// Format version of [`StateSnapshot`]; bumped on incompatible changes.
pub const STATE_VERSION: u32 = 1;

/// Everything a decoder needs to decode data without waiting for templates again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StateSnapshot {
    pub version: u32,
    pub templates: Vec<SavedTemplate>,
    pub sampling: Vec<SavedRate>,
    pub system_init: Vec<SavedInit>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedTemplate {
    pub exporter: IpAddr,
    pub dialect: Dialect,
    pub domain: u32,
    pub template_id: u16,
    pub kind: TemplateKind,
    pub fields: Vec<FieldSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedRate {
    pub exporter: IpAddr,
    pub domain: u32,
    pub sampler_id: Option<u64>,
    pub rate: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedInit {
    pub exporter: IpAddr,
    pub domain: u32,
    pub system_init_ms: u64,
}

impl StateSnapshot {
    /// An empty snapshot of this format.
    pub const fn empty() -> Self {
        Self {
            version: STATE_VERSION,
            templates: Vec::new(),
            sampling: Vec::new(),
            system_init: Vec::new(),
        }
    }

    /// Splits the snapshot into `parts` by exporter (`part_of(exporter)`, below
    /// `parts`): each decode worker gets the state of the exporters it decodes. Entries
    /// keep their order (templates least recently used first).
    pub fn split(self, parts: usize, part_of: impl Fn(IpAddr) -> usize) -> Vec<Self> {
        let mut out: Vec<Self> = (0..parts.max(1)).map(|_| Self::empty()).collect();
        let last = out.len() - 1;
        let at = |ip: IpAddr| part_of(ip).min(last);
        for t in self.templates {
            if let Some(p) = out.get_mut(at(t.exporter)) {
                p.templates.push(t);
            }
        }
        for r in self.sampling {
            if let Some(p) = out.get_mut(at(r.exporter)) {
                p.sampling.push(r);
            }
        }
        for i in self.system_init {
            if let Some(p) = out.get_mut(at(i.exporter)) {
                p.system_init.push(i);
            }
        }
        out
    }

    /// One snapshot of several (the workers' parts, whose exporters do not overlap).
    pub fn merge(parts: impl IntoIterator<Item = Self>) -> Self {
        let mut all = Self::empty();
        for p in parts {
            all.templates.extend(p.templates);
            all.sampling.extend(p.sampling);
            all.system_init.extend(p.system_init);
        }
        all
    }
}

/// Why a snapshot could not be loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("state version {found} is not supported (expected {STATE_VERSION})")]
    Version { found: u32 },
    #[error("saved template {template_id} of {exporter} is invalid: {source}")]
    Template {
        exporter: IpAddr,
        template_id: u16,
        source: DecodeError,
    },
}

impl Decoder {
    /// Takes a snapshot of templates (least recently used first), sampling tables and
    /// system init times.
    pub fn save_state(&self) -> StateSnapshot {
        let templates = self
            .templates
            .iter_lru_first()
            .map(|(k, t)| SavedTemplate {
                exporter: k.exporter,
                dialect: k.dialect,
                domain: k.domain,
                template_id: k.template_id,
                kind: t.kind,
                fields: t.fields.clone(),
            })
            .collect();
        let mut sampling = Vec::new();
        let mut system_init = Vec::new();
        let mut exporters: Vec<_> = self.exporters.iter().collect();
        exporters.sort_unstable_by_key(|(ip, _)| **ip);
        for (ip, s) in exporters {
            for (domain, sampler_id, rate) in s.sampling.entries() {
                sampling.push(SavedRate {
                    exporter: *ip,
                    domain,
                    sampler_id,
                    rate,
                });
            }
            let mut inits: Vec<_> = s.system_init_ms.iter().collect();
            inits.sort_unstable();
            for (d, ms) in inits {
                system_init.push(SavedInit {
                    exporter: *ip,
                    domain: *d,
                    system_init_ms: *ms,
                });
            }
        }
        StateSnapshot {
            version: STATE_VERSION,
            templates,
            sampling,
            system_init,
        }
    }

    /// Loads a snapshot into this decoder (on top of what it already knows).
    pub fn load_state(&mut self, snapshot: StateSnapshot) -> Result<(), StateError> {
        if snapshot.version != STATE_VERSION {
            return Err(StateError::Version {
                found: snapshot.version,
            });
        }
        for t in snapshot.templates {
            let compiled =
                Template::new(t.dialect, t.template_id, t.kind, t.fields, 0).map_err(|source| {
                    StateError::Template {
                        exporter: t.exporter,
                        template_id: t.template_id,
                        source,
                    }
                })?;
            let key = TemplateKey {
                exporter: t.exporter,
                dialect: t.dialect,
                domain: t.domain,
                template_id: t.template_id,
            };
            self.templates.insert(key, compiled);
        }
        for r in snapshot.sampling {
            let state = self.exporters.entry(r.exporter).or_default();
            state.sampling.learn(r.domain, r.sampler_id, r.rate);
        }
        for i in snapshot.system_init {
            let state = self.exporters.entry(i.exporter).or_default();
            state.system_init_ms.insert(i.domain, i.system_init_ms);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn split_by_exporter_and_merge_back() {
        let mut s = StateSnapshot::empty();
        for last in 1..=6 {
            s.sampling.push(SavedRate {
                exporter: ip(last),
                domain: 0,
                sampler_id: None,
                rate: u32::from(last),
            });
            s.system_init.push(SavedInit {
                exporter: ip(last),
                domain: 1,
                system_init_ms: u64::from(last),
            });
        }
        let parts = s.clone().split(3, |e| match e {
            IpAddr::V4(v4) => usize::from(v4.octets()[3] % 3),
            IpAddr::V6(_) => 0,
        });
        assert_eq!(parts.len(), 3);
        for (i, p) in parts.iter().enumerate() {
            assert_eq!(p.sampling.len(), 2);
            assert!(p.sampling.iter().all(|r| r.rate as usize % 3 == i));
            assert!(
                p.system_init
                    .iter()
                    .all(|r| r.system_init_ms % 3 == i as u64)
            );
        }
        let mut back = StateSnapshot::merge(parts);
        back.sampling.sort_by_key(|r| r.rate);
        back.system_init.sort_by_key(|r| r.system_init_ms);
        assert_eq!(back, s);
        // A part index past the end goes to the last part, never out of bounds.
        assert_eq!(s.split(2, |_| 7)[1].sampling.len(), 6);
    }
}
