//! Template-based decoding shared by `NetFlow` v9 and IPFIX.
//!
//! Both protocols describe records with templates sent in-band; both put template sets
//! and data sets in one message. This module owns:
//! - parsing template and options-template sets into [`Template`]s (compiled once into
//!   field operations, first occurrence of a repeated field wins),
//! - walking a message's sets in two passes (templates first, so a data set that
//!   precedes its template in the same packet still decodes),
//! - decoding data records into [`FlowRecord`]s (timestamps, sampling, NSEL, fallbacks),
//! - options data (sampling rates, system init time),
//! - holding data sets whose template has not arrived ([`HeldSets`]).

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};

use super::explain::{Note, SkipReason};
use super::fields::{self, Ex, Extra, LAYOUT_SPAN, Layout, SLOTS, Target, Window};
use super::reader::Reader;
use super::sampling::{RecordSampling, Resolved};
use super::template_cache::{Dialect, Insert, TemplateKey};
use super::{Context, DecodeError, clock};
use crate::flow::{FlowProtocol, FlowRecord};

/// IPFIX variable-length marker (RFC 7011 §7).
pub(crate) const VARIABLE_LENGTH: u16 = 65_535;

/// Data template or options template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TemplateKind {
    Data,
    /// Options template; the first `scope_fields` fields are scope fields.
    Options {
        scope_fields: u16,
    },
}

impl TemplateKind {
    pub fn is_options(self) -> bool {
        matches!(self, Self::Options { .. })
    }
}

/// One field specifier as sent on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FieldSpec {
    /// Field type / information element id, enterprise bit removed.
    pub ie: u16,
    /// Enterprise number (0 for IANA and all `NetFlow` v9 fields).
    pub pen: u32,
    /// Field length in octets, or [`VARIABLE_LENGTH`].
    pub len: u16,
}

/// A compiled field operation.
#[derive(Debug, Clone, Copy)]
struct Op {
    /// Offset within the record (meaningful for fixed-length templates only).
    offset: usize,
    len: usize,
    target: Target,
    arg: u8,
}

/// A template compiled for decoding.
///
/// A record is split into its fixed-length prefix (every field before the first
/// variable-length one: all of them in `NetFlow` v9 and in most IPFIX templates, whose
/// variable-length fields come last) and the tail. In the prefix, offsets are known at
/// compile time: common fields go through [`Layout`], the rest through `ops`. The
/// tail is walked field by field, reading each length.
#[derive(Debug, Clone)]
pub struct Template {
    pub(crate) id: u16,
    pub(crate) dialect: Dialect,
    pub(crate) kind: TemplateKind,
    pub(crate) fields: Vec<FieldSpec>,
    /// Bytes of the fixed-length prefix.
    prefix_len: usize,
    /// Fields in the prefix; `fields[prefix_fields..]` is the tail.
    prefix_fields: usize,
    /// Shortest possible record (a variable-length field counts its length octet).
    min_len: usize,
    /// Common prefix fields, by target.
    layout: Layout,
    /// Other prefix fields we interpret, with offsets.
    ops: Vec<Op>,
    /// Per field: its target when it is the first occurrence we interpret.
    per_field: Vec<Option<(Target, u8)>>,
    /// The template has ordinary traffic counters (IEs 1, 2, 85 or 86): its records
    /// are flows whatever firewall event they carry (PAN-OS, Barracuda), unlike Cisco
    /// NSEL templates whose only counters are IEs 231/232/298/299.
    flow_counters: bool,
}

impl Template {
    /// Compiles a template. `offset` locates it in the datagram for errors.
    pub(crate) fn new(
        dialect: Dialect,
        id: u16,
        kind: TemplateKind,
        fields: Vec<FieldSpec>,
        offset: usize,
    ) -> Result<Self, DecodeError> {
        let bad = |what| DecodeError::BadTemplate {
            offset,
            template_id: id,
            what,
        };
        if fields.is_empty() {
            return Err(bad("no fields"));
        }
        let scope = match kind {
            TemplateKind::Options { scope_fields } => usize::from(scope_fields),
            TemplateKind::Data => 0,
        };
        let mut seen = [false; SLOTS];
        let mut per_field = Vec::with_capacity(fields.len());
        let mut layout = Layout::default();
        let mut ops = Vec::new();
        let mut prefix_fields = None;
        let mut at = 0usize;
        let mut min_len = 0usize;
        for (i, f) in fields.iter().enumerate() {
            let var = dialect == Dialect::Ipfix && f.len == VARIABLE_LENGTH;
            // NetFlow v9 scope field types (system, interface, line card, ...) share
            // numbers with flow fields but mean something else (RFC 3954 §6.1).
            let is_v9_scope = dialect == Dialect::V9 && i < scope;
            let t = if is_v9_scope {
                None
            } else {
                fields::target(dialect, f.pen, f.ie)
            };
            let t = t.filter(|(t, arg)| {
                let slot = t.slot(*arg);
                let first = seen.get(slot).is_some_and(|s| !*s);
                if let Some(s) = seen.get_mut(slot) {
                    *s = true;
                }
                first
            });
            per_field.push(t);
            if var {
                prefix_fields.get_or_insert(i);
                min_len += 1;
                continue;
            }
            let len = usize::from(f.len);
            if prefix_fields.is_none() {
                if let Some((target, arg)) = t
                    && !layout.place(target, arg, at, len)
                {
                    ops.push(Op {
                        offset: at,
                        len,
                        target,
                        arg,
                    });
                }
                at += len;
            }
            min_len += len;
        }
        if min_len == 0 {
            return Err(bad("zero-length record"));
        }
        let flow_counters = per_field.iter().flatten().any(|(t, _)| {
            matches!(
                t,
                Target::OctetDelta | Target::PacketDelta | Target::OctetTotal | Target::PacketTotal
            )
        });
        Ok(Self {
            id,
            dialect,
            kind,
            prefix_fields: prefix_fields.unwrap_or(fields.len()),
            fields,
            prefix_len: at,
            min_len,
            layout,
            ops,
            per_field,
            flow_counters,
        })
    }

    /// Decodes every record of one data set body in place: for each record it pushes a
    /// copy of `blank` onto `out`, fills it from the fields, and hands `out` (the record
    /// is its last element) and the record's [`Extra`] values to `each`, which may
    /// finish, replace, pop or add to it. Returns the number of records. Trailing bytes
    /// shorter than a record are padding (RFC 7011 §3.3.1, RFC 3954 §5.3). On error the
    /// caller truncates `out`.
    ///
    /// Filling the record where it will stay, rather than building it on the stack and
    /// pushing a copy, saves two 300-byte copies per record.
    fn for_each_record(
        &self,
        mut data: Reader<'_>,
        blank: &FlowRecord,
        out: &mut Vec<FlowRecord>,
        mut each: impl FnMut(&mut Vec<FlowRecord>, &Extra),
    ) -> Result<u32, DecodeError> {
        let mut n = 0u32;
        let mut x = Extra::default();
        let mut window: Window = [0; LAYOUT_SPAN + 16];
        let tail_fields = self.fields.get(self.prefix_fields..).unwrap_or(&[]);
        let tail_targets = self.per_field.get(self.prefix_fields..).unwrap_or(&[]);
        if tail_fields.is_empty() {
            out.reserve(data.remaining() / self.min_len.max(1));
        }
        while data.remaining() >= self.min_len {
            let prefix = data.bytes(self.prefix_len)?;
            let span = prefix.len().min(LAYOUT_SPAN);
            if let (Some(w), Some(p)) = (window.get_mut(..span), prefix.get(..span)) {
                w.copy_from_slice(p);
            }
            x.clear();
            out.push(*blank);
            if let Some(rec) = out.last_mut() {
                self.layout.fill(&window, rec, &mut x);
                for op in &self.ops {
                    if let Some(v) = prefix.get(op.offset..op.offset + op.len) {
                        fields::apply(op.target, op.arg, v, rec, &mut x);
                    }
                }
            }
            for (f, t) in tail_fields.iter().zip(tail_targets) {
                let len = if f.len == VARIABLE_LENGTH {
                    // RFC 7011 §7: one length octet, or 255 then a 16-bit length.
                    match data.u8()? {
                        255 => usize::from(data.u16()?),
                        short => usize::from(short),
                    }
                } else {
                    usize::from(f.len)
                };
                let v = data.bytes(len)?;
                if let Some((target, arg)) = *t
                    && let Some(rec) = out.last_mut()
                {
                    fields::apply(target, arg, v, rec, &mut x);
                }
            }
            each(out, &x);
            n += 1;
        }
        Ok(n)
    }
}

/// Header facts a data set needs to be decoded (kept with held sets).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ExportCtx {
    pub(crate) proto: FlowProtocol,
    pub(crate) domain: u32,
    pub(crate) export_time_ms: u64,
    /// `NetFlow` v9 header sysUptime, for `FIRST_SWITCHED/LAST_SWITCHED`.
    pub(crate) sys_uptime_ms: Option<u32>,
    pub(crate) received_at_ms: u64,
}

impl ExportCtx {
    fn dialect(&self) -> Dialect {
        if self.proto == FlowProtocol::NetflowV9 {
            Dialect::V9
        } else {
            Dialect::Ipfix
        }
    }
}

/// A data set waiting for its template.
#[derive(Debug, Clone)]
pub(crate) struct HeldSet {
    key: TemplateKey,
    hdr: ExportCtx,
    /// Absolute offset of the set body in its original datagram (for errors).
    offset: usize,
    /// The decoder's number of the datagram it came in (for notes).
    serial: u64,
    body: Vec<u8>,
}

impl HeldSet {
    /// Records that this set is given up, when explaining.
    fn give_up(&self, notes: Option<&mut Vec<Note>>) {
        if let Some(notes) = notes {
            notes.push(Note::TemplateMissing {
                serial: self.serial,
                offset: self.offset,
                domain: self.key.domain,
                template_id: self.key.template_id,
            });
        }
    }

    /// What holding this set costs against the byte bound: its body plus the
    /// bookkeeping, so a flood of empty sets is bounded too (found by fuzzing: body
    /// bytes alone let a million empty sets through).
    fn cost(&self) -> usize {
        self.body.len() + size_of::<Self>()
    }
}

/// Data sets held per exporter, bounded by bytes; oldest dropped first.
#[derive(Debug, Default)]
pub(crate) struct HeldSets {
    sets: VecDeque<HeldSet>,
    bytes: usize,
}

impl HeldSets {
    /// Holds a set; returns how many sets were dropped to make room (the set itself
    /// when it alone is over the bound).
    fn hold(&mut self, set: HeldSet, max_bytes: usize, mut notes: Option<&mut Vec<Note>>) -> u64 {
        let mut dropped = 0;
        let cost = set.cost();
        if cost > max_bytes {
            set.give_up(notes);
            return 1;
        }
        while self.bytes + cost > max_bytes {
            match self.sets.pop_front() {
                Some(old) => {
                    self.bytes -= old.cost();
                    old.give_up(notes.as_deref_mut());
                    dropped += 1;
                }
                None => break,
            }
        }
        self.bytes += cost;
        self.sets.push_back(set);
        dropped
    }

    /// Drops sets received more than `hold_ms` before `now_ms`; returns how many.
    pub(crate) fn expire(
        &mut self,
        now_ms: u64,
        hold_ms: u64,
        mut notes: Option<&mut Vec<Note>>,
    ) -> u64 {
        let mut dropped = 0;
        while let Some(front) = self.sets.front() {
            if front.hdr.received_at_ms.saturating_add(hold_ms) >= now_ms {
                break;
            }
            if let Some(old) = self.sets.pop_front() {
                self.bytes -= old.cost();
                old.give_up(notes.as_deref_mut());
                dropped += 1;
            }
        }
        dropped
    }

    /// Removes and returns the sets whose key satisfies `ready`, in arrival order.
    fn take(&mut self, mut ready: impl FnMut(&TemplateKey) -> bool) -> Vec<HeldSet> {
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(self.sets.len());
        for s in self.sets.drain(..) {
            if ready(&s.key) {
                self.bytes -= s.cost();
                taken.push(s);
            } else {
                kept.push_back(s);
            }
        }
        self.sets = kept;
        taken
    }

    pub(crate) fn len(&self) -> usize {
        self.sets.len()
    }

    /// Drops the sets that came in datagram `serial` (it turned out malformed: nothing
    /// of it may be decoded later).
    fn forget(&mut self, serial: u64) {
        let mut freed = 0;
        self.sets.retain(|s| {
            let keep = s.serial != serial;
            if !keep {
                freed += s.cost();
            }
            keep
        });
        self.bytes -= freed;
    }
}

/// Data records a message carried, for sequence checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RecordCount {
    /// All data records (flow and options).
    pub(crate) all: u32,
    /// Options data records among them.
    pub(crate) options: u32,
}

/// Decodes the sets of one v9 or IPFIX message body. Returns the number of data
/// records decoded from this message's own data sets, or `None` when some were held
/// (so the sequence check for the next message is skipped).
pub(crate) fn decode_sets(
    ctx: &mut Context<'_, '_>,
    hdr: &ExportCtx,
    body: &Reader<'_>,
    out: &mut Vec<FlowRecord>,
) -> Result<Option<RecordCount>, DecodeError> {
    let dialect = hdr.dialect();
    // Pass 1: validate set framing and learn templates. Zero padding after the last
    // set (PAN-OS pads v9 datagrams) or fewer than 4 bytes left is not a set: the
    // declared content ends there and the rest is trailing bytes. Anything else must
    // be a well-formed set.
    let mut learned = false;
    let mut sets = body.clone();
    while !sets.is_empty() && !is_padding(sets.rest()) {
        let set_offset = sets.offset();
        let (id, mut set) = next_set(&mut sets)?;
        match (dialect, id) {
            (Dialect::V9, 0) => learned |= learn_v9(ctx, hdr, &mut set, false)?,
            (Dialect::V9, 1) => learned |= learn_v9(ctx, hdr, &mut set, true)?,
            (Dialect::Ipfix, 2) => learned |= learn_ipfix(ctx, hdr, &mut set, false)?,
            (Dialect::Ipfix, 3) => learned |= learn_ipfix(ctx, hdr, &mut set, true)?,
            (_, 256..) => {}
            (_, id) => {
                return Err(DecodeError::ReservedSetId {
                    offset: set_offset,
                    set_id: id,
                });
            }
        }
    }
    let trailing = sets.remaining();
    ctx.trailing(sets.offset(), trailing);
    // Pass 2: data sets.
    let sets = body.clone().sub(body.remaining() - trailing)?;
    let records = decode_data_sets(ctx, hdr, sets, out).inspect_err(|_| {
        // Sets this datagram held must not be decoded later: it is malformed.
        ctx.state.held.forget(ctx.serial);
    })?;
    // Data that waited for a template this message delivered (only once the message
    // is known good: a malformed one emits nothing).
    if learned && ctx.state.held.len() > 0 {
        decode_held(ctx, out);
    }
    Ok(records)
}

/// Pass 2 of [`decode_sets`]: the data sets of a message whose framing is checked.
fn decode_data_sets(
    ctx: &mut Context<'_, '_>,
    hdr: &ExportCtx,
    mut sets: Reader<'_>,
    out: &mut Vec<FlowRecord>,
) -> Result<Option<RecordCount>, DecodeError> {
    let dialect = hdr.dialect();
    let mut records = Some(RecordCount::default());
    while !sets.is_empty() {
        let (id, set) = next_set(&mut sets)?;
        if id < 256 {
            continue;
        }
        let key = TemplateKey {
            exporter: ctx.datagram.exporter,
            dialect,
            domain: hdr.domain,
            template_id: id,
        };
        if let Some(t) = ctx.templates.get(&key) {
            let n = decode_data(ctx, &t, hdr, ctx.serial, set, out)?;
            let options = if t.kind.is_options() { n } else { 0 };
            records = records.map(|r| RecordCount {
                all: r.all.wrapping_add(n),
                options: r.options.wrapping_add(options),
            });
        } else {
            let held = HeldSet {
                key,
                hdr: *hdr,
                offset: set.offset(),
                serial: ctx.serial,
                body: set.rest().to_vec(),
            };
            ctx.note(|| Note::Held {
                offset: held.offset,
                domain: hdr.domain,
                template_id: id,
            });
            let dropped = ctx
                .state
                .held
                .hold(held, ctx.max_held_bytes, ctx.notes.as_deref_mut());
            ctx.state.counters.template_missing += dropped;
            records = None;
        }
    }
    Ok(records)
}

/// Whether the rest of a message is padding rather than sets: too short for a set
/// header, or all zeros (a set of id 0 and length 0 cannot exist, so zeros are never
/// the start of a set).
fn is_padding(rest: &[u8]) -> bool {
    match rest {
        [0, 0, 0, 0, ..] => rest.iter().all(|&b| b == 0),
        [_, _, _, _, ..] => false,
        _ => true,
    }
}

/// Reads one set header and returns (set id, body reader).
fn next_set<'a>(r: &mut Reader<'a>) -> Result<(u16, Reader<'a>), DecodeError> {
    let offset = r.offset();
    let id = r.u16()?;
    let len = usize::from(r.u16()?);
    if len < 4 {
        return Err(DecodeError::BadLength {
            offset: offset + 2,
            what: "set",
            length: len,
        });
    }
    let body = r.sub(len - 4)?;
    Ok((id, body))
}

/// Caches a template; when explaining, notes it if it is new or changed (exporters
/// resend unchanged templates every few seconds: those are not news).
fn insert_template(ctx: &mut Context<'_, '_>, hdr: &ExportCtx, offset: usize, t: Template) {
    let (template_id, kind) = (t.id, t.kind);
    let fields = ctx.notes.is_some().then(|| t.fields.clone());
    let key = TemplateKey {
        exporter: ctx.datagram.exporter,
        dialect: t.dialect,
        domain: hdr.domain,
        template_id: t.id,
    };
    match ctx.templates.insert(key, t) {
        Insert::New => ctx.state.counters.templates_learned += 1,
        Insert::Redefined => ctx.state.counters.templates_redefined += 1,
        Insert::Refreshed => return,
    }
    if let Some(fields) = fields {
        ctx.note(|| Note::Template {
            offset,
            proto: hdr.proto,
            domain: hdr.domain,
            template_id,
            kind,
            fields,
        });
    }
}

/// `NetFlow` v9 template flowset (id 0) or options template flowset (id 1), RFC 3954
/// §5.2 and §6.1.
fn learn_v9(
    ctx: &mut Context<'_, '_>,
    hdr: &ExportCtx,
    set: &mut Reader<'_>,
    options: bool,
) -> Result<bool, DecodeError> {
    let mut learned = false;
    let min_header = if options { 6 } else { 4 };
    while set.remaining() >= min_header {
        let offset = set.offset();
        let id = set.u16()?;
        let (kind, count) = if options {
            let scope_len = set.u16()?;
            let opt_len = set.u16()?;
            if scope_len % 4 != 0 || opt_len % 4 != 0 {
                return Err(DecodeError::BadTemplate {
                    offset,
                    template_id: id,
                    what: "options lengths not a multiple of 4",
                });
            }
            (
                TemplateKind::Options {
                    scope_fields: scope_len / 4,
                },
                scope_len / 4 + opt_len / 4,
            )
        } else {
            (TemplateKind::Data, set.u16()?)
        };
        if id < 256 {
            return Err(DecodeError::BadTemplate {
                offset,
                template_id: id,
                what: "id below 256",
            });
        }
        let fields = read_fields(set, usize::from(count), Dialect::V9)?;
        insert_template(
            ctx,
            hdr,
            offset,
            Template::new(Dialect::V9, id, kind, fields, offset)?,
        );
        learned = true;
    }
    Ok(learned)
}

/// IPFIX template set (2) or options template set (3), RFC 7011 §3.4, including
/// withdrawals (§8.1): a record with field count 0.
fn learn_ipfix(
    ctx: &mut Context<'_, '_>,
    hdr: &ExportCtx,
    set: &mut Reader<'_>,
    options: bool,
) -> Result<bool, DecodeError> {
    let mut learned = false;
    while set.remaining() >= 4 {
        let offset = set.offset();
        let id = set.u16()?;
        let count = set.u16()?;
        let all_id = if options { 3 } else { 2 };
        if count == 0 {
            if id == all_id {
                let n = ctx.templates.withdraw_all(
                    ctx.datagram.exporter,
                    Dialect::Ipfix,
                    hdr.domain,
                    options,
                );
                ctx.state.counters.templates_withdrawn += n;
            } else if id >= 256 {
                let key = TemplateKey {
                    exporter: ctx.datagram.exporter,
                    dialect: Dialect::Ipfix,
                    domain: hdr.domain,
                    template_id: id,
                };
                if ctx.templates.withdraw(&key) {
                    ctx.state.counters.templates_withdrawn += 1;
                }
            } else {
                return Err(DecodeError::BadTemplate {
                    offset,
                    template_id: id,
                    what: "withdrawal of a reserved id",
                });
            }
            continue;
        }
        if id < 256 {
            return Err(DecodeError::BadTemplate {
                offset,
                template_id: id,
                what: "id below 256",
            });
        }
        let kind = if options {
            let scope = set.u16()?;
            if scope == 0 || scope > count {
                return Err(DecodeError::BadTemplate {
                    offset,
                    template_id: id,
                    what: "scope field count out of range",
                });
            }
            TemplateKind::Options {
                scope_fields: scope,
            }
        } else {
            TemplateKind::Data
        };
        let fields = read_fields(set, usize::from(count), Dialect::Ipfix)?;
        insert_template(
            ctx,
            hdr,
            offset,
            Template::new(Dialect::Ipfix, id, kind, fields, offset)?,
        );
        learned = true;
    }
    Ok(learned)
}

fn read_fields(
    set: &mut Reader<'_>,
    count: usize,
    dialect: Dialect,
) -> Result<Vec<FieldSpec>, DecodeError> {
    // Each field specifier is at least 4 bytes: refuse counts the set cannot hold
    // before allocating for them.
    if count * 4 > set.remaining() {
        return Err(DecodeError::Truncated {
            offset: set.offset(),
            needed: count * 4,
            available: set.remaining(),
        });
    }
    let mut fields = Vec::with_capacity(count);
    for _ in 0..count {
        let raw = set.u16()?;
        let len = set.u16()?;
        let (ie, pen) = if dialect == Dialect::Ipfix && raw & 0x8000 != 0 {
            (raw & 0x7FFF, set.u32()?)
        } else {
            (raw, 0)
        };
        fields.push(FieldSpec { ie, pen, len });
    }
    Ok(fields)
}

fn decode_held(ctx: &mut Context<'_, '_>, out: &mut Vec<FlowRecord>) {
    let templates = &mut *ctx.templates;
    let ready = ctx.state.held.take(|k| templates.get(k).is_some());
    for held in ready {
        let Some(t) = ctx.templates.get(&held.key) else {
            continue;
        };
        let start = out.len();
        let tally = ctx.state.counters.tally();
        let body = Reader::with_base(&held.body, held.offset);
        let decoded = decode_data(ctx, &t, &held.hdr, held.serial, body, out).is_ok();
        if decoded {
            ctx.state.counters.held_sets_decoded += 1;
        } else {
            // The set was malformed after all; it belongs to an earlier datagram
            // that was already counted as decoded, so count it as a missing set.
            out.truncate(start);
            ctx.state.counters.restore(tally);
            ctx.state.counters.template_missing += 1;
        }
        ctx.note(|| Note::HeldResolved {
            serial: held.serial,
            offset: held.offset,
            template_id: held.key.template_id,
            decoded,
        });
    }
}

/// Decodes one data set with its template; options records update exporter state.
fn decode_data(
    ctx: &mut Context<'_, '_>,
    t: &Template,
    hdr: &ExportCtx,
    serial: u64,
    body: Reader<'_>,
    out: &mut Vec<FlowRecord>,
) -> Result<u32, DecodeError> {
    let mut blank = FlowRecord::empty(hdr.proto, ctx.datagram.exporter, hdr.export_time_ms);
    blank.observation_domain = hdr.domain;
    let state = &mut *ctx.state;
    if t.kind.is_options() {
        let mut scratch = Vec::with_capacity(1);
        return t.for_each_record(body, &blank, &mut scratch, |scratch, x| {
            scratch.clear();
            state.counters.options_records += 1;
            if let Some(rate) = x.sampling_rate() {
                state.sampling.learn(hdr.domain, x.get(Ex::SamplerId), rate);
            }
            if let Some(init) = x.get(Ex::SystemInitMs) {
                state.system_init_ms.insert(hdr.domain, init);
            }
        });
    }
    let mut set = SetFacts {
        settings: ctx.settings,
        clock: ctx.clock,
        domain_init_ms: state.system_init_ms.get(&hdr.domain).copied(),
        set_rate: None,
        flow_counters: t.flow_counters,
    };
    let offset = body.offset();
    let skipped_before = state.counters.skipped(SkipReason::FirewallEvent);
    let n = t.for_each_record(body, &blank, out, |out, x| {
        if let Some(rec) = out.last_mut() {
            finish(rec, x, hdr, state, &mut set);
        }
        emit(out, x, hdr.export_time_ms, state, &set);
    })?;
    state.counters.data_records += u64::from(n);
    let skipped = state.counters.skipped(SkipReason::FirewallEvent) - skipped_before;
    if skipped > 0 {
        ctx.note(|| Note::Skipped {
            serial,
            offset,
            template_id: t.id,
            reason: SkipReason::FirewallEvent,
            records: u32::try_from(skipped).unwrap_or(u32::MAX),
        });
    }
    Ok(n)
}

/// What every record of one data set shares, looked up once per set.
struct SetFacts {
    settings: super::SamplingSettings,
    clock: clock::ClockPolicy,
    /// The domain's systemInitTimeMilliseconds from options data.
    domain_init_ms: Option<u64>,
    /// The rate of records that say nothing about sampling themselves, resolved at the
    /// first such record.
    set_rate: Option<Resolved>,
    /// See [`Template::flow_counters`].
    flow_counters: bool,
}

/// Fills what a record's fields imply: fallbacks, absolute times, sampling rate.
#[inline]
fn finish(
    rec: &mut FlowRecord,
    x: &Extra,
    hdr: &ExportCtx,
    state: &mut super::ExporterState,
    set: &mut SetFacts,
) {
    rec.bytes = rec.bytes.or(x.get(Ex::OctetTotal));
    rec.packets = rec.packets.or(x.get(Ex::PacketTotal));
    // IEs 252/253 when the exporter has no logical interface numbers (10/14).
    rec.input_interface = rec.input_interface.or(x.get_u32(Ex::IngressPhysical));
    rec.output_interface = rec.output_interface.or(x.get_u32(Ex::EgressPhysical));
    if rec.src_vlan.is_none() {
        rec.src_vlan = x
            .get(Ex::Dot1qVlan)
            .map(|v| u16::try_from(v).unwrap_or(u16::MAX));
    }
    // A dual-stack record with real addresses of both families: ipVersion (IE 60)
    // says which (see `fields::merge_address`; without it the IPv6 ones are kept).
    if x.any(V4_ALTERNATIVES) && rec.ip_version == Some(4) {
        let alt = |e| {
            x.get(e)
                .map(|a| IpAddr::V4(Ipv4Addr::from_bits(u32::try_from(a).unwrap_or(0))))
        };
        rec.src_ip = alt(Ex::SrcV4Alt).or(rec.src_ip);
        rec.dst_ip = alt(Ex::DstV4Alt).or(rec.dst_ip);
        rec.next_hop = alt(Ex::NextHopV4Alt).or(rec.next_hop);
        rec.bgp_next_hop = alt(Ex::BgpNextHopV4Alt).or(rec.bgp_next_hop);
    }
    if rec.ip_version.is_none() {
        rec.ip_version = rec.src_ip.map(|ip| if ip.is_ipv4() { 4 } else { 6 });
    }
    // ICMP type/code travel in the destination port (as NetFlow v5 does).
    if matches!(rec.protocol, Some(1 | 58)) && rec.dst_port.unwrap_or(0) == 0 {
        let narrow = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
        if let Some(tc) = x.get(Ex::IcmpTypeCode) {
            rec.dst_port = Some(narrow(tc));
        } else if let Some(ty) = x.get(Ex::IcmpType) {
            rec.dst_port = Some(narrow(ty) << 8 | narrow(x.get(Ex::IcmpCode).unwrap_or(0)));
        }
    }
    // Timestamps: absolute forms first, then uptime-relative, then export deltas.
    let export = hdr.export_time_ms;
    let mut start = x.get(Ex::StartMs);
    let mut end = x.get(Ex::EndMs);
    if start.is_none() || end.is_none() {
        // The uptime at export: v9 says it in the header; IPFIX uptimes are relative
        // to systemInitTimeMilliseconds (IE 160, from the record or from options
        // data), so the uptime at export is export - init, taken modulo 2^32 like the
        // uptimes themselves (exporters replaying old packets, softflowd -r for one,
        // send "negative" uptimes).
        let uptime_at_export = hdr.sys_uptime_ms.or_else(|| {
            let init = x.get(Ex::SystemInitMs).or(set.domain_init_ms)?;
            #[expect(
                clippy::cast_possible_truncation,
                reason = "uptimes are modulo 2^32 ms"
            )]
            Some(export.wrapping_sub(init) as u32)
        });
        let from_up = |up: Option<u32>| Some(clock::from_uptime(export, uptime_at_export?, up?));
        start = start
            .or_else(|| from_up(x.get_u32(Ex::FirstUptime)))
            .or_else(|| {
                x.get(Ex::StartDeltaUs)
                    .map(|d| export.saturating_sub(d / 1000))
            });
        end = end
            .or_else(|| from_up(x.get_u32(Ex::LastUptime)))
            .or_else(|| {
                x.get(Ex::EndDeltaUs)
                    .map(|d| export.saturating_sub(d / 1000))
            })
            .or(x.get(Ex::ObservationMs));
    }
    if set.clock.settle(export, &mut start, &mut end) {
        state.counters.clock_clamped += 1;
    }
    rec.flow_start_ms = start;
    rec.flow_end_ms = end;
    let resolved = if x.has_sampling() {
        let sampling = RecordSampling {
            sampler_id: x.get(Ex::SamplerId),
            rate: x.sampling_rate(),
        };
        state.sampling.resolve(set.settings, hdr.domain, sampling)
    } else {
        *set.set_rate.get_or_insert_with(|| {
            state
                .sampling
                .resolve(set.settings, hdr.domain, RecordSampling::default())
        })
    };
    rec.sampling_rate = match resolved {
        Resolved::Known(rate) => Some(rate),
        Resolved::Unknown => {
            state.counters.sampling_rate_unknown += 1;
            None
        }
    };
}

/// IPv4 addresses displaced by IPv6 ones in a dual-stack record.
const V4_ALTERNATIVES: u64 = Ex::mask(&[
    Ex::SrcV4Alt,
    Ex::DstV4Alt,
    Ex::NextHopV4Alt,
    Ex::BgpNextHopV4Alt,
]);

/// RFC 5103 reverse start/end times.
const REVERSE_TIMES: u64 = Ex::mask(&[Ex::RevStartMs, Ex::RevEndMs]);

/// RFC 5103 reverse counters: a biflow record with any of them has a responder
/// direction of its own.
const REVERSE_COUNTERS: u64 = Ex::mask(&[
    Ex::RevOctets,
    Ex::RevPackets,
    Ex::RevOctetTotal,
    Ex::RevPacketTotal,
]);

/// Cisco NSEL's bidirectional counters (IEs 231/232, 298/299).
const NSEL_COUNTERS: u64 = Ex::mask(&[
    Ex::InitiatorOctets,
    Ex::ResponderOctets,
    Ex::InitiatorPackets,
    Ex::ResponderPackets,
]);

/// Settles the record just pushed (the last of `out`): dropped (and counted) for
/// firewall events that carry no traffic of their own, split in two directed flows for
/// Cisco NSEL initiator/responder counters and for RFC 5103 biflows, else kept as it
/// is.
#[inline]
fn emit(
    out: &mut Vec<FlowRecord>,
    x: &Extra,
    export_ms: u64,
    state: &mut super::ExporterState,
    set: &SetFacts,
) {
    let Some(rec) = out.last_mut() else {
        return;
    };
    if let Some(event) = rec.firewall_event {
        // Firewall events: 1 created, 2 deleted (teardown), 3 denied, 4 alert, 5
        // update. On an NSEL-style template (no ordinary counters) only teardown and
        // update carry byte counts to add up: created would count a connection twice
        // and denied moved no traffic. A template with IE 1/2/85/86 counters exports
        // flows that happen to say which event ended them (PAN-OS sends "created" with
        // real counts), so its records are kept whatever the event.
        if !set.flow_counters && event != 2 && event != 5 {
            state.counters.count_skipped(SkipReason::FirewallEvent);
            out.pop();
            return;
        }
    }
    // One test for the common case: nothing to split.
    if !x.any(NSEL_COUNTERS | REVERSE_COUNTERS) {
        return;
    }
    if x.any(NSEL_COUNTERS) {
        let orig = *rec;
        rec.bytes = x.get(Ex::InitiatorOctets).or(orig.bytes);
        rec.packets = x.get(Ex::InitiatorPackets).or(orig.packets);
        let rev_bytes = x.get(Ex::ResponderOctets);
        let rev_packets = x.get(Ex::ResponderPackets);
        if rev_bytes.unwrap_or(0) > 0 || rev_packets.unwrap_or(0) > 0 {
            let _ = push_reverse(out, &orig, rev_bytes, rev_packets, state);
        }
    } else {
        // RFC 5103: the reverse elements describe the responder's direction of the
        // same connection; it becomes a record of its own with the endpoints swapped.
        let orig = *rec;
        let rev_bytes = x.get(Ex::RevOctets).or(x.get(Ex::RevOctetTotal));
        let rev_packets = x.get(Ex::RevPackets).or(x.get(Ex::RevPacketTotal));
        if (rev_bytes.unwrap_or(0) > 0 || rev_packets.unwrap_or(0) > 0)
            && let Some(rev) = push_reverse(out, &orig, rev_bytes, rev_packets, state)
        {
            rev.tcp_flags = x
                .get(Ex::RevTcpFlags)
                .map(|f| u16::try_from(f).unwrap_or(u16::MAX));
            // The responder's own times when exported, under the same clock rules
            // as the forward direction's (`finish`).
            if x.any(REVERSE_TIMES) {
                let mut start = x.get(Ex::RevStartMs).or(rev.flow_start_ms);
                let mut end = x.get(Ex::RevEndMs).or(rev.flow_end_ms);
                if set.clock.settle(export_ms, &mut start, &mut end) {
                    state.counters.clock_clamped += 1;
                }
                rev.flow_start_ms = start;
                rev.flow_end_ms = end;
            }
        }
    }
}

/// Appends the reverse direction of `orig` (endpoints, ports, interfaces, AS numbers,
/// masks and VLANs swapped) with the given counters, and returns it. The forward TCP
/// flags are not the responder's: copying a SYN would make the responder look like a
/// client to direction inference, so the reverse record has none unless the caller
/// knows them.
fn push_reverse<'a>(
    out: &'a mut Vec<FlowRecord>,
    orig: &FlowRecord,
    bytes: Option<u64>,
    packets: Option<u64>,
    state: &mut super::ExporterState,
) -> Option<&'a mut FlowRecord> {
    let mut rev = *orig;
    rev.src_ip = orig.dst_ip;
    rev.dst_ip = orig.src_ip;
    rev.src_port = orig.dst_port;
    rev.dst_port = orig.src_port;
    rev.input_interface = orig.output_interface;
    rev.output_interface = orig.input_interface;
    rev.src_as = orig.dst_as;
    rev.dst_as = orig.src_as;
    rev.src_mask = orig.dst_mask;
    rev.dst_mask = orig.src_mask;
    rev.src_vlan = orig.dst_vlan;
    rev.dst_vlan = orig.src_vlan;
    rev.bytes = bytes;
    rev.packets = packets;
    rev.tcp_flags = None;
    state.counters.reverse_records += 1;
    out.push(rev);
    out.last_mut()
}
