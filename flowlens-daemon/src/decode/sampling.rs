//! Sampling rates: which 1:N applies to a record.
//!
//! Exporters announce sampling in several ways: the `NetFlow` v5 header, v9/IPFIX options
//! data keyed by a sampler (selector) id, a rate field inside the data record itself, or
//! nothing at all. Operators can also set a per-exporter default (used when the exporter
//! says nothing) and an override (always wins, for exporters known to lie). The decision
//! order is documented on [`SamplingTable::resolve`].

use std::collections::HashMap;

/// Per-exporter operator settings.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct SamplingSettings {
    /// Rate used when the exporter announces none (instead of assuming unsampled).
    pub default_rate: Option<u32>,
    /// Rate that replaces whatever the exporter announces.
    pub override_rate: Option<u32>,
}

/// What a data record itself says about sampling.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordSampling {
    /// Sampler/selector id (v9 `FLOW_SAMPLER_ID` 48, IPFIX selectorId 302).
    pub sampler_id: Option<u64>,
    /// A rate carried in the record (samplingInterval 34, samplerRandomInterval 50, ...).
    pub rate: Option<u32>,
}

/// Rates learned from options data for one exporter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SamplingTable {
    /// (observation domain / source id, sampler id) -> rate.
    by_sampler: HashMap<(u32, u64), u32>,
    /// Domain -> rate announced without a sampler id (v9 `SAMPLING_INTERVAL` options).
    by_domain: HashMap<u32, u32>,
    /// Domain -> (number of distinct samplers seen, the rate of the last one), so that
    /// data records without a sampler id can use the rate when only one sampler exists
    /// (single-sampler exporters often omit the id in data records).
    samplers: HashMap<u32, (u32, u32)>,
}

/// Outcome of rate resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolved {
    Known(u32),
    /// The record names a sampler whose rate never arrived and no default is set.
    Unknown,
}

impl SamplingTable {
    /// Learns a rate from an options data record. `sampler_id = None` means the record
    /// applies to the whole domain.
    pub fn learn(&mut self, domain: u32, sampler_id: Option<u64>, rate: u32) {
        let rate = rate.max(1);
        match sampler_id {
            Some(id) => {
                let new = self.by_sampler.insert((domain, id), rate).is_none();
                let entry = self.samplers.entry(domain).or_default();
                entry.0 += u32::from(new);
                entry.1 = rate;
            }
            None => {
                self.by_domain.insert(domain, rate);
            }
        }
    }

    /// Every learned (domain, sampler id, rate), for saving state; domain-wide rates
    /// have no sampler id.
    pub fn entries(&self) -> Vec<(u32, Option<u64>, u32)> {
        let mut v: Vec<_> = self
            .by_sampler
            .iter()
            .map(|(&(d, id), &rate)| (d, Some(id), rate))
            .collect();
        v.extend(self.by_domain.iter().map(|(&d, &rate)| (d, None, rate)));
        v.sort_unstable();
        v
    }

    /// Resolves the rate for one record, in this order:
    /// 1. the operator's override;
    /// 2. a rate carried in the record;
    /// 3. the record's sampler id looked up in options data;
    /// 4. without a sampler id: the domain's rate from options data, or the rate of
    ///    the domain's only sampler;
    /// 5. the operator's default;
    /// 6. a record that names an unknown sampler is [`Resolved::Unknown`]; a record
    ///    from an exporter that never mentioned sampling is unsampled (1).
    pub fn resolve(
        &self,
        settings: SamplingSettings,
        domain: u32,
        record: RecordSampling,
    ) -> Resolved {
        if let Some(rate) = settings.override_rate {
            return Resolved::Known(rate.max(1));
        }
        if let Some(rate) = record.rate.filter(|&r| r > 0) {
            return Resolved::Known(rate);
        }
        let learned = match record.sampler_id {
            Some(id) => self.by_sampler.get(&(domain, id)).copied(),
            None => self.by_domain.get(&domain).copied().or_else(|| {
                self.samplers
                    .get(&domain)
                    .filter(|(n, _)| *n == 1)
                    .map(|(_, rate)| *rate)
            }),
        };
        if let Some(rate) = learned {
            return Resolved::Known(rate);
        }
        if let Some(rate) = settings.default_rate {
            return Resolved::Known(rate.max(1));
        }
        // Sampler id 0 is what several exporters put in when no sampler is configured.
        match record.sampler_id {
            Some(id) if id != 0 => Resolved::Unknown,
            _ => Resolved::Known(1),
        }
    }

    /// Applies a header-announced rate (`NetFlow` v5, sFlow) through the same settings.
    pub fn resolve_header(settings: SamplingSettings, header_rate: u32) -> u32 {
        if let Some(rate) = settings.override_rate {
            return rate.max(1);
        }
        if header_rate > 1 {
            return header_rate;
        }
        settings.default_rate.unwrap_or(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_samplers_on_one_exporter_are_chosen_by_id() {
        let mut t = SamplingTable::default();
        t.learn(0, Some(1), 100);
        t.learn(0, Some(2), 1000);
        let s = SamplingSettings::default();
        let by = |id| RecordSampling {
            sampler_id: Some(id),
            rate: None,
        };
        assert_eq!(t.resolve(s, 0, by(1)), Resolved::Known(100));
        assert_eq!(t.resolve(s, 0, by(2)), Resolved::Known(1000));
        assert_eq!(t.resolve(s, 0, by(3)), Resolved::Unknown);
        // Another domain of the same exporter knows nothing.
        assert_eq!(t.resolve(s, 7, by(1)), Resolved::Unknown);
    }

    #[test]
    fn single_sampler_applies_to_records_without_id() {
        let mut t = SamplingTable::default();
        t.learn(3, Some(9), 512);
        let none = RecordSampling::default();
        assert_eq!(
            t.resolve(SamplingSettings::default(), 3, none),
            Resolved::Known(512)
        );
    }

    #[test]
    fn default_and_override() {
        let t = SamplingTable::default();
        let unknown = RecordSampling {
            sampler_id: Some(4),
            rate: None,
        };
        let default = SamplingSettings {
            default_rate: Some(64),
            override_rate: None,
        };
        assert_eq!(t.resolve(default, 0, unknown), Resolved::Known(64));
        let over = SamplingSettings {
            default_rate: None,
            override_rate: Some(2048),
        };
        let carried = RecordSampling {
            sampler_id: None,
            rate: Some(10),
        };
        assert_eq!(t.resolve(over, 0, carried), Resolved::Known(2048));
        assert_eq!(
            t.resolve(SamplingSettings::default(), 0, carried),
            Resolved::Known(10)
        );
        assert_eq!(
            t.resolve(SamplingSettings::default(), 0, RecordSampling::default()),
            Resolved::Known(1)
        );
        assert_eq!(SamplingTable::resolve_header(default, 0), 64);
        assert_eq!(SamplingTable::resolve_header(default, 100), 100);
        assert_eq!(SamplingTable::resolve_header(over, 100), 2048);
    }
}
