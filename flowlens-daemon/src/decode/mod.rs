//! PURE decoders for `NetFlow` v5, `NetFlow` v9, IPFIX and sFlow v5.
//!
//! No sockets, no clock, no globals: a [`Decoder`] is a value holding the per-exporter
//! state (templates, sampling tables, sequence trackers, data held for a template that
//! has not arrived yet) and counters. Callers hand it one [`Datagram`] at a time, with
//! the receive time as an argument, and get [`FlowRecord`]s appended to a vector they
//! own (so the hot path does not allocate). A datagram either decodes whole or returns a
//! [`DecodeError`] with the byte offset; in the latter case nothing it contained is
//! emitted and the caller counts it. Missing templates, unknown sampling rates, clock
//! clamps and sequence gaps are outcomes, counted per exporter in [`ExporterCounters`].
//!
//! Flow: [`Decoder::decode`] detects the protocol from the first bytes, then
//! `netflow_v5`, `netflow_v9`/`ipfix` (sharing `template` and `fields`) or `sflow`
//! append records; `clock` settles timestamps; `sampling` picks each record's rate.
#![warn(clippy::indexing_slicing)]

mod clock;
pub mod error;
pub mod explain;
mod fields;
mod ipfix;
mod netflow_v5;
mod netflow_v9;
pub mod reader;
pub mod sampling;
pub mod sequence;
mod sflow;
pub mod state;
pub mod template;
pub mod template_cache;

use std::collections::HashMap;
use std::net::IpAddr;

pub use clock::ClockPolicy;
pub use error::DecodeError;
pub use explain::{Note, SkipReason};
pub use sampling::SamplingSettings;
pub use sflow::InterfaceCounters;

use crate::flow::{FlowProtocol, FlowRecord};
use sampling::SamplingTable;
use sequence::{SequenceOutcome, SequenceTracker};
use template::HeldSets;
use template_cache::TemplateCache;

/// One received datagram.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The UDP source address: the key of all per-exporter state and counters.
    pub exporter: IpAddr,
    /// When the datagram was received, ms since the Unix epoch (the pcap timestamp when
    /// decoding a capture).
    pub received_at_ms: u64,
    pub payload: &'a [u8],
}

/// Per-datagram lookups (the exporter, its sequence trackers) hash with foldhash, seeded
/// per process: `SipHash` cost about 2 ns of every v5 record's ~18.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// Decoder settings (a section of the daemon config; defaults documented per field).
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct DecoderConfig {
    /// Maximum templates kept across all exporters before the least recently used is
    /// evicted (and counted). 64 Ki templates is far above what real networks send
    /// (a few hundred per exporter) while bounding memory to a few tens of `MiB`.
    pub max_templates: usize,
    /// How long data sets that arrived before their template are held, in ms. Exporters
    /// resend templates every few seconds to minutes; 60 s covers the common defaults.
    pub template_hold_ms: u64,
    /// Maximum bytes of held data sets per exporter (the oldest are dropped and counted
    /// as `template_missing` beyond it).
    pub max_held_bytes_per_exporter: usize,
    /// Timestamp sanity rules.
    pub clock: ClockPolicy,
    /// Per-exporter sampling default/override, keyed by exporter address.
    pub sampling: HashMap<IpAddr, SamplingSettings>,
}

/// 64 Ki templates (see [`DecoderConfig::max_templates`]).
pub const DEFAULT_MAX_TEMPLATES: usize = 65_536;
/// 60 s (see [`DecoderConfig::template_hold_ms`]).
pub const DEFAULT_TEMPLATE_HOLD_MS: u64 = 60_000;
/// 1 `MiB` (see [`DecoderConfig::max_held_bytes_per_exporter`]).
pub const DEFAULT_MAX_HELD_BYTES: usize = 1 << 20;

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_templates: DEFAULT_MAX_TEMPLATES,
            template_hold_ms: DEFAULT_TEMPLATE_HOLD_MS,
            max_held_bytes_per_exporter: DEFAULT_MAX_HELD_BYTES,
            clock: ClockPolicy::default(),
            sampling: HashMap::new(),
        }
    }
}

/// Counters for one exporter (UDP source). Every datagram is exactly one of decoded or
/// malformed: `packets == decoded_packets + malformed_packets`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ExporterCounters {
    pub packets: u64,
    pub decoded_packets: u64,
    pub malformed_packets: u64,
    /// Malformed packets by [`DecodeError::reason`], same order as
    /// [`DecodeError::REASONS`].
    pub malformed_by_reason: [u64; 7],
    /// Flow records emitted, by [`FlowProtocol::index`].
    pub records: [u64; 4],
    /// Datagrams by protocol (decoded or not, once the version was recognised).
    pub packets_by_protocol: [u64; 4],
    /// Data sets dropped because their template never arrived in time (or their hold
    /// buffer overflowed).
    pub template_missing: u64,
    /// Data sets held for a template, later decoded when it arrived.
    pub held_sets_decoded: u64,
    pub templates_learned: u64,
    pub templates_redefined: u64,
    pub templates_withdrawn: u64,
    pub templates_evicted: u64,
    /// Sequence discontinuities that look like loss.
    pub sequence_gaps: u64,
    /// Lost export packets (`NetFlow` v9, sFlow datagrams).
    pub lost_packets: u64,
    /// Lost flow records (`NetFlow` v5 and IPFIX number records, not packets).
    pub lost_records: u64,
    /// Sequence jumps that look like an exporter restart.
    pub sequence_resets: u64,
    /// Sequence gaps in datagrams kept by pre-sampling (expected, not loss).
    pub sequence_gaps_presampled: u64,
    /// Records whose sampler was announced but whose rate is not known.
    pub sampling_rate_unknown: u64,
    /// Records whose timestamps were clamped (uptime wrap mistakes, absurd clocks).
    pub clock_clamped: u64,
    /// Datagrams whose export time was far from the receive time.
    pub clock_skewed: u64,
    /// Data records read from flow (not options) data sets, before any rule: with
    /// `records_skipped` and `reverse_records` they account for every record emitted:
    /// `records == data_records - skipped + reverse_records` (sFlow flow samples and v5
    /// records are not template data and are emitted one for one).
    pub data_records: u64,
    /// Data records read and deliberately not emitted, by [`SkipReason::index`].
    pub records_skipped: [u64; 1],
    /// Extra records made by splitting one into two directions (Cisco NSEL
    /// initiator/responder counters, RFC 5103 biflows).
    pub reverse_records: u64,
    /// Bytes after the declared content of decoded datagrams (zero padding after the
    /// last set, bytes past the IPFIX message length, the v5 count or the sFlow sample
    /// count), ignored as Wireshark and other collectors do.
    pub trailing_bytes: u64,
    /// sFlow counter samples seen (counted, not turned into flows).
    pub sflow_counter_samples: u64,
    /// sFlow flow/counter records of unknown format, skipped by length.
    pub sflow_unknown_records: u64,
    /// sFlow flow samples whose sampled header could not be parsed to a 5-tuple.
    pub sflow_unparsed_headers: u64,
    /// Options data records decoded (sampling, system init time, ...).
    pub options_records: u64,
}

impl ExporterCounters {
    /// Counts one malformed datagram under `error`'s reason.
    fn count_malformed(&mut self, error: &DecodeError) {
        self.malformed_packets += 1;
        if let Some(i) = DecodeError::REASONS
            .iter()
            .position(|r| *r == error.reason())
            && let Some(n) = self.malformed_by_reason.get_mut(i)
        {
            *n += 1;
        }
    }

    pub fn malformed(&self, reason: &str) -> u64 {
        DecodeError::REASONS
            .iter()
            .position(|r| *r == reason)
            .and_then(|i| self.malformed_by_reason.get(i).copied())
            .unwrap_or(0)
    }

    /// The counters a decode attempt adds to record by record, saved so that a failed
    /// attempt can take its additions back (see [`RecordTally`]).
    pub(crate) fn tally(&self) -> RecordTally {
        RecordTally {
            data_records: self.data_records,
            records_skipped: self.records_skipped,
            reverse_records: self.reverse_records,
            clock_clamped: self.clock_clamped,
            sampling_rate_unknown: self.sampling_rate_unknown,
        }
    }

    /// Puts back counters saved by [`Self::tally`].
    pub(crate) fn restore(&mut self, t: RecordTally) {
        self.data_records = t.data_records;
        self.records_skipped = t.records_skipped;
        self.reverse_records = t.reverse_records;
        self.clock_clamped = t.clock_clamped;
        self.sampling_rate_unknown = t.sampling_rate_unknown;
    }

    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.records_skipped
            .get(reason.index())
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn count_skipped(&mut self, reason: SkipReason) {
        if let Some(n) = self.records_skipped.get_mut(reason.index()) {
            *n += 1;
        }
    }

    pub fn records_for(&self, proto: FlowProtocol) -> u64 {
        self.records.get(proto.index()).copied().unwrap_or(0)
    }

    fn count_sequence(&mut self, outcome: SequenceOutcome, unit_is_packet: bool) {
        match outcome {
            SequenceOutcome::First | SequenceOutcome::InOrder => {}
            SequenceOutcome::Gap { lost } => {
                self.sequence_gaps += 1;
                if unit_is_packet {
                    self.lost_packets += u64::from(lost);
                } else {
                    self.lost_records += u64::from(lost);
                }
            }
            SequenceOutcome::Reset => self.sequence_resets += 1,
        }
    }

    /// Adds `other` into `self` (for totals across exporters).
    pub fn accumulate(&mut self, other: &Self) {
        macro_rules! add {
            ($($f:ident),*) => { $( self.$f += other.$f; )* };
        }
        add!(
            packets,
            decoded_packets,
            malformed_packets,
            template_missing,
            held_sets_decoded,
            templates_learned,
            templates_redefined,
            templates_withdrawn,
            templates_evicted,
            sequence_gaps,
            lost_packets,
            lost_records,
            sequence_resets,
            sequence_gaps_presampled,
            sampling_rate_unknown,
            clock_clamped,
            clock_skewed,
            data_records,
            reverse_records,
            trailing_bytes,
            sflow_counter_samples,
            sflow_unknown_records,
            sflow_unparsed_headers,
            options_records
        );
        for (a, b) in self
            .malformed_by_reason
            .iter_mut()
            .zip(other.malformed_by_reason)
        {
            *a += b;
        }
        for (a, b) in self.records.iter_mut().zip(other.records) {
            *a += b;
        }
        for (a, b) in self.records_skipped.iter_mut().zip(other.records_skipped) {
            *a += b;
        }
        for (a, b) in self
            .packets_by_protocol
            .iter_mut()
            .zip(other.packets_by_protocol)
        {
            *a += b;
        }
    }
}

/// Per-record counters as they were before a decode attempt: records of a datagram (or
/// held set) that fails are not emitted, so what they added is taken back and the
/// accounting `records == data_records - skipped + reverse_records` holds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordTally {
    data_records: u64,
    records_skipped: [u64; 1],
    reverse_records: u64,
    clock_clamped: u64,
    sampling_rate_unknown: u64,
}

/// Everything the decoder remembers about one exporter (UDP source).
#[derive(Debug, Default)]
pub(crate) struct ExporterState {
    pub(crate) counters: ExporterCounters,
    /// (protocol, domain) -> tracker. sFlow keys the agent's sub-agent id here and the
    /// agent address separately in `sflow_sequences`.
    pub(crate) sequences: FastMap<(FlowProtocol, u32), SequenceTracker>,
    pub(crate) sflow_sequences: FastMap<(IpAddr, u32), SequenceTracker>,
    pub(crate) sampling: SamplingTable,
    /// IPFIX systemInitTimeMilliseconds (IE 160) per observation domain, needed to turn
    /// flowStart/EndSysUpTime into absolute times.
    pub(crate) system_init_ms: HashMap<u32, u64>,
    pub(crate) held: HeldSets,
}

/// The decoder: all per-exporter state plus the shared, bounded template cache.
#[derive(Debug, Default)]
pub struct Decoder {
    config: DecoderConfig,
    exporters: FastMap<IpAddr, ExporterState>,
    templates: TemplateCache,
    /// Datagrams handed to [`Self::decode_presampled`] so far: the number of the next
    /// one, by which [`Note::TemplateMissing`] names the datagram a held set came in.
    serial: u64,
    /// What was not decoded as sent, when explaining (see [`explain`]).
    notes: Option<Vec<Note>>,
}

impl Decoder {
    pub fn new(config: DecoderConfig) -> Self {
        let templates = TemplateCache::new(config.max_templates);
        Self {
            config,
            exporters: FastMap::default(),
            templates,
            serial: 0,
            notes: None,
        }
    }

    pub fn config(&self) -> &DecoderConfig {
        &self.config
    }

    /// Starts (or stops) recording [`Note`]s: what each datagram did not deliver as
    /// sent, and every template learned. Off by default; it costs an allocation per
    /// template and note.
    pub fn set_explain(&mut self, on: bool) {
        self.notes = on.then(Vec::new);
    }

    /// The notes recorded since the last call (empty when not explaining).
    pub fn take_notes(&mut self) -> Vec<Note> {
        self.notes.as_mut().map(std::mem::take).unwrap_or_default()
    }

    /// The serial number the next datagram will get (the first is 0).
    pub fn serial(&self) -> u64 {
        self.serial
    }

    /// Decodes one datagram, appending its flow records (and those of any held data
    /// sets its templates unlock) to `out`. Returns how many records were appended. On
    /// error nothing is appended and the packet is counted as malformed.
    pub fn decode(
        &mut self,
        datagram: &Datagram<'_>,
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, DecodeError> {
        self.decode_presampled(datagram, 1, out)
    }

    /// Decodes a datagram that was kept by 1:`presample_rate` sampling before the
    /// decoder (XDP or userspace sampling under pressure): each record's sampling rate
    /// is multiplied by `presample_rate`, and sequence gaps (which the sampling itself
    /// creates) are not counted as loss but as `sequence_gaps_presampled`.
    pub fn decode_presampled(
        &mut self,
        datagram: &Datagram<'_>,
        presample_rate: u32,
        out: &mut Vec<FlowRecord>,
    ) -> Result<usize, DecodeError> {
        let start = out.len();
        // Most deployments configure no per-exporter sampling: skip hashing then.
        let settings = if self.config.sampling.is_empty() {
            SamplingSettings::default()
        } else {
            self.config
                .sampling
                .get(&datagram.exporter)
                .copied()
                .unwrap_or_default()
        };
        let state = self.exporters.entry(datagram.exporter).or_default();
        state.counters.packets += 1;
        let tally = state.counters.tally();
        let notes_before = self.notes.as_ref().map_or(0, Vec::len);
        let serial = self.serial;
        self.serial += 1;
        let mut ctx = Context {
            datagram,
            settings,
            clock: self.config.clock,
            hold_ms: self.config.template_hold_ms,
            max_held_bytes: self.config.max_held_bytes_per_exporter,
            state,
            templates: &mut self.templates,
            presampled: presample_rate > 1,
            serial,
            trailing: 0,
            notes: self.notes.as_mut(),
        };
        let detected = detect(datagram.payload);
        let detected_proto = detected.as_ref().ok().copied();
        let result = match detected {
            Ok(proto) => {
                if let Some(n) = ctx
                    .state
                    .counters
                    .packets_by_protocol
                    .get_mut(proto.index())
                {
                    *n += 1;
                }
                match proto {
                    FlowProtocol::NetflowV5 => netflow_v5::decode(&mut ctx, out),
                    FlowProtocol::NetflowV9 => netflow_v9::decode(&mut ctx, out),
                    FlowProtocol::Ipfix => ipfix::decode(&mut ctx, out),
                    FlowProtocol::SflowV5 => sflow::decode(&mut ctx, out),
                }
            }
            Err(e) => Err(e),
        };
        let counters = &mut ctx.state.counters;
        match result {
            Ok(()) => {
                counters.decoded_packets += 1;
                counters.trailing_bytes += ctx.trailing as u64;
                let emitted = out.get_mut(start..).unwrap_or(&mut []);
                // Every record of a datagram is of its protocol (held sets included:
                // they wait for a template of their own dialect).
                if let Some(proto) = detected_proto
                    && let Some(n) = counters.records.get_mut(proto.index())
                {
                    *n += emitted.len() as u64;
                }
                if presample_rate > 1 {
                    for rec in emitted.iter_mut() {
                        rec.sampling_rate =
                            rec.sampling_rate.map(|r| r.saturating_mul(presample_rate));
                        rec.presample_rate = presample_rate;
                    }
                }
                Ok(emitted.len())
            }
            Err(e) => {
                // Nothing of a malformed datagram counts but the datagram: its records
                // are not emitted, and notes about them would describe nothing.
                out.truncate(start);
                counters.restore(tally);
                counters.count_malformed(&e);
                if let Some(notes) = self.notes.as_mut() {
                    let mut i = 0;
                    notes.retain(|n| {
                        i += 1;
                        i <= notes_before || n.outlives_its_datagram()
                    });
                }
                Err(e)
            }
        }
    }

    /// Counts a datagram from `exporter` that was not decoded because intake already
    /// knows it is malformed (it arrived truncated): a malformed packet with `error`'s
    /// reason, as if decoding had failed.
    pub fn reject(&mut self, exporter: IpAddr, error: &DecodeError) {
        self.serial += 1;
        let counters = &mut self.exporters.entry(exporter).or_default().counters;
        counters.packets += 1;
        counters.count_malformed(error);
    }

    /// Drops data held longer than the hold time (counting `template_missing`); call
    /// periodically with the current time. Returns how many sets were dropped.
    pub fn expire(&mut self, now_ms: u64) -> u64 {
        let hold = self.config.template_hold_ms;
        let mut dropped = 0;
        for state in self.exporters.values_mut() {
            let n = state.held.expire(now_ms, hold, self.notes.as_mut());
            state.counters.template_missing += n;
            dropped += n;
        }
        dropped
    }

    /// Gives up on every held data set (end of a capture, shutdown).
    pub fn expire_all(&mut self) -> u64 {
        self.expire(u64::MAX)
    }

    /// Counters per exporter, sorted by address.
    pub fn counters(&self) -> Vec<(IpAddr, ExporterCounters)> {
        let evicted = self.templates.evictions_by_exporter();
        let mut v: Vec<_> = self
            .exporters
            .iter()
            .map(|(ip, s)| {
                let mut c = s.counters.clone();
                c.templates_evicted = evicted.get(ip).copied().unwrap_or(0);
                (*ip, c)
            })
            .collect();
        v.sort_unstable_by_key(|(ip, _)| *ip);
        v
    }

    /// Counters summed over all exporters.
    pub fn totals(&self) -> ExporterCounters {
        let mut total = ExporterCounters::default();
        for (_, c) in self.counters() {
            total.accumulate(&c);
        }
        total
    }

    /// Number of templates currently cached.
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }
}

/// What a protocol decoder gets: the datagram, its exporter's state, and the cache.
pub(crate) struct Context<'d, 's> {
    pub(crate) datagram: &'d Datagram<'d>,
    pub(crate) settings: SamplingSettings,
    pub(crate) clock: ClockPolicy,
    pub(crate) hold_ms: u64,
    pub(crate) max_held_bytes: usize,
    pub(crate) state: &'s mut ExporterState,
    pub(crate) templates: &'s mut TemplateCache,
    /// The datagram survived pre-sampling, so sequence gaps are expected.
    pub(crate) presampled: bool,
    /// The datagram's number (see [`Decoder::serial`]).
    pub(crate) serial: u64,
    /// Bytes after the declared content, counted once the datagram decodes.
    pub(crate) trailing: usize,
    /// Where notes go when explaining.
    pub(crate) notes: Option<&'s mut Vec<Note>>,
}

impl Context<'_, '_> {
    /// Records a note when explaining; `note` is only called then.
    #[inline]
    pub(crate) fn note(&mut self, note: impl FnOnce() -> Note) {
        if let Some(notes) = self.notes.as_deref_mut() {
            notes.push(note());
        }
    }

    /// Ignores the `len` bytes at `offset` after the declared content (counted as
    /// trailing bytes if the datagram decodes).
    pub(crate) fn trailing(&mut self, offset: usize, len: usize) {
        if len > 0 {
            self.trailing += len;
            self.note(|| Note::Trailing { offset, len });
        }
    }

    /// Counts an export time far from the receive time (the record times are still
    /// those the exporter sent; see `clock`).
    pub(crate) fn note_clock(&mut self, export_time_ms: u64) {
        if self
            .clock
            .is_skewed(export_time_ms, self.datagram.received_at_ms)
        {
            self.state.counters.clock_skewed += 1;
        }
    }

    /// Bookkeeping before a template-based message's sets: the clock check, and held
    /// data past its hold time given up as `template_missing`.
    pub(crate) fn begin_message(&mut self, export_time_ms: u64) {
        self.note_clock(export_time_ms);
        let expired = self.state.held.expire(
            self.datagram.received_at_ms,
            self.hold_ms,
            self.notes.as_deref_mut(),
        );
        self.state.counters.template_missing += expired;
    }

    /// Counts a sequence outcome, unless pre-sampling explains the gap.
    pub(crate) fn count_sequence(&mut self, outcome: SequenceOutcome, unit_is_packet: bool) {
        if self.presampled && matches!(outcome, SequenceOutcome::Gap { .. }) {
            self.state.counters.sequence_gaps_presampled += 1;
            return;
        }
        self.state.counters.count_sequence(outcome, unit_is_packet);
    }
}

/// Detects the protocol from the version field: NetFlow/IPFIX start with a 16-bit
/// version (5, 9, 10), sFlow with a 32-bit one (5).
pub fn detect(payload: &[u8]) -> Result<FlowProtocol, DecodeError> {
    let mut r = reader::Reader::new(payload);
    let version = r.u16()?;
    match version {
        5 => Ok(FlowProtocol::NetflowV5),
        9 => Ok(FlowProtocol::NetflowV9),
        10 => Ok(FlowProtocol::Ipfix),
        0 => match r.u16()? {
            5 => Ok(FlowProtocol::SflowV5),
            low => Err(DecodeError::UnknownVersion {
                offset: 0,
                version: u32::from(low),
            }),
        },
        v => Err(DecodeError::UnknownVersion {
            offset: 0,
            version: u32::from(v),
        }),
    }
}

#[cfg(test)]
mod tests;
