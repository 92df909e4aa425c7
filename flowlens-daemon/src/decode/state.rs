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
