//! Information elements: which template field fills which part of a [`FlowRecord`].
//!
//! `NetFlow` v9 field types 1-127 and IPFIX information elements share numbers (RFC 3954
//! §8, IANA IPFIX registry), so one table serves both; v9-only Cisco ids (40005) and the
//! enterprise bit of IPFIX are handled by [`target`]. A template is compiled once into a
//! list of (offset, length, [`Target`]) so decoding a record never looks a field id up.
//! Unknown fields, including every enterprise-specific one we do not interpret, get no
//! target: they are skipped by their length, so they can never misalign the record.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::reader::be_uint;
use super::template_cache::Dialect;
use crate::flow::{ApplicationId, FlowRecord};

/// Where a field's value goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub(crate) enum Target {
    OctetDelta,
    PacketDelta,
    OctetTotal,
    PacketTotal,
    Protocol,
    Tos,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcV4,
    DstV4,
    SrcV6,
    DstV6,
    SrcMask,
    DstMask,
    Input,
    Output,
    IngressPhysical,
    EgressPhysical,
    NextHopV4,
    NextHopV6,
    BgpNextHopV4,
    BgpNextHopV6,
    SrcAs,
    DstAs,
    FirstUptime,
    LastUptime,
    StartSeconds,
    EndSeconds,
    StartMillis,
    EndMillis,
    StartMicros,
    EndMicros,
    StartNanos,
    EndNanos,
    StartDeltaMicros,
    EndDeltaMicros,
    SystemInitMillis,
    ObservationMillis,
    IpVersion,
    Direction,
    SrcVlan,
    DstVlan,
    Dot1qVlan,
    /// MPLS label stack entry; the op's `arg` is the stack position (0 = top).
    Mpls,
    ApplicationId,
    SamplerId,
    SamplingInterval,
    PacketInterval,
    PacketSpace,
    SamplingSize,
    SamplingPopulation,
    IcmpTypeCode,
    IcmpType,
    IcmpCode,
    FirewallEvent,
    InitiatorOctets,
    ResponderOctets,
    InitiatorPackets,
    ResponderPackets,
    /// RFC 5103 reverse-direction elements (enterprise 29305).
    RevOctetDelta,
    RevPacketDelta,
    RevOctetTotal,
    RevPacketTotal,
    RevTcpFlags,
    RevStartSeconds,
    RevEndSeconds,
    RevStartMillis,
    RevEndMillis,
}

impl Target {
    /// A small dense id, used to keep only the first occurrence of a repeated field.
    /// MPLS positions each get their own slot (`arg` is the stack position).
    pub(crate) fn slot(self, arg: u8) -> usize {
        match self {
            Self::Mpls => MPLS_SLOTS + usize::from(arg),
            other => other as usize,
        }
    }
}

/// The first MPLS slot: above every other target's.
const MPLS_SLOTS: usize = Target::RevEndMillis as usize + 1;

/// Number of distinct [`Target::slot`] values.
pub(crate) const SLOTS: usize = MPLS_SLOTS + 10;

/// RFC 5103 §6.1: the reverse of IANA element N is element N of this enterprise.
pub(crate) const PEN_REVERSE: u32 = 29_305;

/// The target of field `ie` (enterprise bit already removed) from enterprise `pen`
/// (0 for IANA / v9). `None` means "skip by length".
pub(crate) fn target(dialect: Dialect, pen: u32, ie: u16) -> Option<(Target, u8)> {
    use Target as T;
    if pen == PEN_REVERSE {
        return reverse_target(ie).map(|t| (t, 0));
    }
    if pen != 0 {
        return None;
    }
    if let 70..=79 = ie {
        return Some((T::Mpls, u8::try_from(ie - 70).unwrap_or(0)));
    }
    let t = match ie {
        1 => T::OctetDelta,
        2 => T::PacketDelta,
        4 => T::Protocol,
        5 => T::Tos,
        6 => T::TcpFlags,
        7 => T::SrcPort,
        8 => T::SrcV4,
        9 | 29 => T::SrcMask,
        10 => T::Input,
        11 => T::DstPort,
        12 => T::DstV4,
        13 | 30 => T::DstMask,
        14 => T::Output,
        15 => T::NextHopV4,
        16 => T::SrcAs,
        17 => T::DstAs,
        18 => T::BgpNextHopV4,
        21 => T::LastUptime,
        22 => T::FirstUptime,
        27 => T::SrcV6,
        28 => T::DstV6,
        32 | 139 => T::IcmpTypeCode,
        34 | 50 => T::SamplingInterval,
        // v9 FLOW_SAMPLER_ID / IPFIX samplerId (48) and IPFIX selectorId (302).
        48 | 302 => T::SamplerId,
        58 => T::SrcVlan,
        59 => T::DstVlan,
        60 => T::IpVersion,
        61 => T::Direction,
        62 => T::NextHopV6,
        63 => T::BgpNextHopV6,
        85 => T::OctetTotal,
        86 => T::PacketTotal,
        95 => T::ApplicationId,
        150 => T::StartSeconds,
        151 => T::EndSeconds,
        152 => T::StartMillis,
        153 => T::EndMillis,
        154 => T::StartMicros,
        155 => T::EndMicros,
        156 => T::StartNanos,
        157 => T::EndNanos,
        158 => T::StartDeltaMicros,
        159 => T::EndDeltaMicros,
        160 => T::SystemInitMillis,
        176 | 178 => T::IcmpType,
        177 | 179 => T::IcmpCode,
        231 => T::InitiatorOctets,
        232 => T::ResponderOctets,
        233 => T::FirewallEvent,
        243 => T::Dot1qVlan,
        252 => T::IngressPhysical,
        253 => T::EgressPhysical,
        298 => T::InitiatorPackets,
        299 => T::ResponderPackets,
        305 => T::PacketInterval,
        306 => T::PacketSpace,
        309 => T::SamplingSize,
        310 => T::SamplingPopulation,
        323 => T::ObservationMillis,
        // Cisco ASA NSEL, v9 only: NF_F_FW_EVENT (deprecated twin of 233).
        40005 if dialect == Dialect::V9 => T::FirewallEvent,
        _ => return None,
    };
    Some((t, 0))
}

/// The reverse-direction elements of a biflow we interpret (RFC 5103): the counters,
/// TCP flags and absolute times of the responder's direction. Other reverse elements
/// (reverse interfaces, VLANs, ...) are skipped by length.
fn reverse_target(ie: u16) -> Option<Target> {
    use Target as T;
    Some(match ie {
        1 => T::RevOctetDelta,
        2 => T::RevPacketDelta,
        6 => T::RevTcpFlags,
        85 => T::RevOctetTotal,
        86 => T::RevPacketTotal,
        150 => T::RevStartSeconds,
        151 => T::RevEndSeconds,
        152 => T::RevStartMillis,
        153 => T::RevEndMillis,
        _ => return None,
    })
}

/// Values that do not go straight into the record: timestamps in their many forms,
/// fallbacks, sampling, NSEL counters. Resolved by the template decoder per record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Ex {
    FirstUptime,
    LastUptime,
    StartMs,
    EndMs,
    StartDeltaUs,
    EndDeltaUs,
    SystemInitMs,
    ObservationMs,
    OctetTotal,
    PacketTotal,
    IngressPhysical,
    EgressPhysical,
    Dot1qVlan,
    SamplerId,
    SamplingInterval,
    PacketInterval,
    PacketSpace,
    SamplingSize,
    SamplingPopulation,
    IcmpTypeCode,
    IcmpType,
    IcmpCode,
    InitiatorOctets,
    ResponderOctets,
    InitiatorPackets,
    ResponderPackets,
    /// An IPv4 source (destination) displaced by a real IPv6 one in a dual-stack
    /// record, kept in case `ipVersion` (IE 60) says the record is IPv4.
    SrcV4Alt,
    DstV4Alt,
    NextHopV4Alt,
    BgpNextHopV4Alt,
    RevOctets,
    RevPackets,
    RevOctetTotal,
    RevPacketTotal,
    RevTcpFlags,
    RevStartMs,
    RevEndMs,
}

impl Ex {
    /// The presence bits of `es`, for [`Extra::any`] (evaluated at compile time).
    pub(crate) const fn mask(es: &[Self]) -> u64 {
        let mut m = 0;
        let mut rest = es;
        while let [e, tail @ ..] = rest {
            m |= 1 << (*e as u64);
            rest = tail;
        }
        m
    }
}

/// Number of [`Ex`] values.
const EXTRAS: usize = Ex::RevEndMs as usize + 1;
const _: () = assert!(EXTRAS <= 64, "Extra::present is a u64");

/// The [`Ex`] values of one record, stored as raw unsigned integers with a presence
/// mask. One `Extra` is reused across the records of a set and [`Extra::clear`]ed
/// between them: clearing is one store, where the struct of two dozen `Option<u64>`s
/// it replaces was ~400 bytes to zero and copy per record (in perf, `memmove` was the
/// third-largest cost of v9 decoding before this change).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Extra {
    present: u64,
    values: [u64; EXTRAS],
}

impl Default for Extra {
    fn default() -> Self {
        Self {
            present: 0,
            values: [0; EXTRAS],
        }
    }
}

impl Extra {
    #[inline]
    pub(crate) fn clear(&mut self) {
        self.present = 0;
    }

    #[inline]
    pub(crate) fn set(&mut self, e: Ex, v: u64) {
        let i = e as usize;
        if let Some(slot) = self.values.get_mut(i) {
            *slot = v;
            self.present |= 1 << i;
        }
    }

    #[inline]
    pub(crate) fn get(&self, e: Ex) -> Option<u64> {
        let i = e as usize;
        if self.present & (1 << i) == 0 {
            return None;
        }
        self.values.get(i).copied()
    }

    /// Whether any value of `mask` (built with [`Ex::mask`]) is present.
    #[inline]
    pub(crate) const fn any(&self, mask: u64) -> bool {
        self.present & mask != 0
    }

    /// The value as a u32 (saturating), as the 32-bit fields are kept.
    #[inline]
    pub(crate) fn get_u32(&self, e: Ex) -> Option<u32> {
        self.get(e).map(sat_u32)
    }

    /// The 1:N rate this record (or options record) announces, if any: RFC 7011 IE 34
    /// or v9 `FLOW_SAMPLER_RANDOM_INTERVAL` (50); RFC 5477 systematic count-based
    /// (interval, space) -> (interval + space) / interval; random n-out-of-N
    /// (size, population) -> population / size.
    pub(crate) fn sampling_rate(&self) -> Option<u32> {
        if let Some(n) = self.get(Ex::SamplingInterval).filter(|&n| n > 0) {
            return Some(sat_u32(n));
        }
        if let (Some(i), Some(s)) = (self.get(Ex::PacketInterval), self.get(Ex::PacketSpace))
            && i > 0
        {
            return Some(sat_u32(i.saturating_add(s) / i));
        }
        if let (Some(n), Some(pop)) = (self.get(Ex::SamplingSize), self.get(Ex::SamplingPopulation))
            && n > 0
        {
            return Some(sat_u32(pop / n));
        }
        None
    }

    /// Whether the record says anything about sampling itself (a sampler id or a rate
    /// field); when not, its rate is the same for the whole set.
    #[inline]
    pub(crate) const fn has_sampling(&self) -> bool {
        const SAMPLING: u64 = Ex::mask(&[
            Ex::SamplerId,
            Ex::SamplingInterval,
            Ex::PacketInterval,
            Ex::PacketSpace,
            Ex::SamplingSize,
            Ex::SamplingPopulation,
        ]);
        self.any(SAMPLING)
    }
}

#[inline]
fn sat_u32(v: u64) -> u32 {
    u32::try_from(v).unwrap_or(u32::MAX)
}

#[inline]
fn sat_u16(v: u64) -> u16 {
    u16::try_from(v).unwrap_or(u16::MAX)
}

#[inline]
fn sat_u8(v: u64) -> u8 {
    u8::try_from(v).unwrap_or(u8::MAX)
}

#[inline]
fn v4(v: &[u8]) -> Option<IpAddr> {
    <[u8; 4]>::try_from(v)
        .ok()
        .map(|a| IpAddr::V4(Ipv4Addr::from(a)))
}

#[inline]
fn v6(v: &[u8]) -> Option<IpAddr> {
    <[u8; 16]>::try_from(v)
        .ok()
        .map(|a| IpAddr::V6(Ipv6Addr::from(a)))
}

/// NTP timestamp (RFC 5905 era 0: seconds since 1900, 2^-32 fractions) to Unix ms, as
/// IPFIX dateTimeMicroseconds/Nanoseconds are encoded (RFC 7011 §6.1.9-10).
#[inline]
fn ntp_to_unix_ms(v: u64) -> u64 {
    const NTP_UNIX_OFFSET_S: u64 = 2_208_988_800;
    let secs = v >> 32;
    let frac_ms = ((v & 0xFFFF_FFFF) * 1000) >> 32;
    secs.saturating_sub(NTP_UNIX_OFFSET_S) * 1000 + frac_ms
}

/// Where the common fields of a template sit in the fixed-length part of its record
/// (offset and length per [`Target`]; length 0 = not there).
///
/// Decoding through a list of (offset, target) operations costs one indirect jump per
/// field, all from one call site with a different target each time; on this machine
/// that mispredicted badly enough to dominate v9 decoding (perf put the samples on
/// the instructions after the jump; this VM has no branch-miss counters, and from the
/// throughput a field cost about 30 cycles).
/// [`Layout::fill`] instead tests every common target in a fixed order with straight
/// line code: each test is its own branch, taken or not the same way for every record
/// of a template, so they predict perfectly, and [`apply`] folds to one store per site.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Layout {
    at: [(u8, u8); COMMON_SLOTS],
}

/// Targets below this index are "common" (see [`Layout`]); the order of the enum puts
/// them first.
const COMMON_SLOTS: usize = Target::IpVersion as usize + 2;

/// The record bytes a [`Layout`] reads: fields must end within the first
/// `LAYOUT_SPAN` bytes of the record (later ones are decoded the generic way).
pub(crate) const LAYOUT_SPAN: usize = 248;

/// A copy of a record's first bytes with eight bytes of slack, so that every
/// [`Layout`] read is an eight-byte load at an offset below 256 that needs no bounds
/// check and no branch on the field width.
pub(crate) type Window = [u8; LAYOUT_SPAN + 16];

impl Default for Layout {
    fn default() -> Self {
        Self {
            at: [(0, 0); COMMON_SLOTS],
        }
    }
}

impl Layout {
    /// Records that `target` sits at `offset` with `len` bytes, when it is one of the
    /// common targets, has no stack position and ends within [`LAYOUT_SPAN`]; returns
    /// whether it was taken.
    pub(crate) fn place(&mut self, target: Target, arg: u8, offset: usize, len: usize) -> bool {
        if arg != 0 || !Self::is_common(target) || len == 0 || len > 16 {
            return false;
        }
        if offset + len > LAYOUT_SPAN {
            return false;
        }
        let (Ok(offset), Ok(len)) = (u8::try_from(offset), u8::try_from(len)) else {
            return false;
        };
        match self.at.get_mut(target as usize) {
            Some(slot) => {
                *slot = (offset, len);
                true
            }
            None => false,
        }
    }

    fn is_common(target: Target) -> bool {
        (target as usize) < COMMON_SLOTS && target != Target::Mpls
    }

    /// The bytes of `target`'s field.
    #[inline(always)]
    #[expect(clippy::inline_always, reason = "must fold into Layout::fill's sites")]
    fn field<'a>(&self, target: Target, window: &'a Window) -> Option<&'a [u8]> {
        let &(offset, len) = self.at.get(target as usize)?;
        if len == 0 {
            return None;
        }
        let offset = usize::from(offset);
        window.get(offset..offset + usize::from(len))
    }

    /// The unsigned value of `target`'s field: one big-endian load and a shift.
    /// Fields wider than eight bytes keep their low-order eight (as [`be_uint`]).
    #[inline(always)]
    #[expect(clippy::inline_always, reason = "must fold into Layout::fill's sites")]
    fn uint(&self, target: Target, window: &Window) -> Option<u64> {
        let &(offset, len) = self.at.get(target as usize)?;
        if len == 0 {
            return None;
        }
        let (offset, len) = (usize::from(offset), usize::from(len));
        let start = offset + len.saturating_sub(8);
        let word = window.get(start..start + 8)?;
        let word = <[u8; 8]>::try_from(word).ok()?;
        Some(u64::from_be_bytes(word) >> ((8 - len.min(8)) * 8))
    }

    /// Applies every placed common field of the record whose first bytes are in
    /// `window` (bytes past the record are only slack for the eight-byte loads).
    #[inline(always)]
    pub(crate) fn fill(&self, window: &Window, rec: &mut FlowRecord, x: &mut Extra) {
        macro_rules! uints {
            ($($t:ident),* $(,)?) => {
                $(
                    if let Some(v) = self.uint(Target::$t, window) {
                        apply_uint(Target::$t, 0, v, rec, x);
                    }
                )*
            };
        }
        macro_rules! addresses {
            ($($t:ident),* $(,)?) => {
                $(
                    if let Some(v) = self.field(Target::$t, window) {
                        apply(Target::$t, 0, v, rec, x);
                    }
                )*
            };
        }
        uints!(
            OctetDelta,
            PacketDelta,
            OctetTotal,
            PacketTotal,
            Protocol,
            Tos,
            TcpFlags,
            SrcPort,
            DstPort,
            SrcMask,
            DstMask,
            Input,
            Output,
            IngressPhysical,
            EgressPhysical,
            SrcAs,
            DstAs,
            FirstUptime,
            LastUptime,
            StartSeconds,
            EndSeconds,
            StartMillis,
            EndMillis,
            StartMicros,
            EndMicros,
            StartNanos,
            EndNanos,
            StartDeltaMicros,
            EndDeltaMicros,
            SystemInitMillis,
            ObservationMillis,
            IpVersion,
            Direction,
        );
        addresses!(
            SrcV4,
            DstV4,
            SrcV6,
            DstV6,
            NextHopV4,
            NextHopV6,
            BgpNextHopV4,
            BgpNextHopV6,
        );
    }
}

/// Stores field value `v` (exactly the field's bytes) for `target`. Addresses of the
/// wrong length are ignored rather than guessed at.
///
/// Inlined everywhere: the octet-string targets (addresses, application id) are a
/// small match handled at the call site, and a call with a constant target (from
/// [`Layout::fill`]) folds to the one store it makes. Numeric targets known only at
/// run time go to [`apply_uint_dyn`], out of line, so the big numeric match exists
/// once.
#[inline(always)]
pub(crate) fn apply(target: Target, arg: u8, v: &[u8], rec: &mut FlowRecord, x: &mut Extra) {
    use Target as T;
    match target {
        T::SrcV4 => merge_address(&mut rec.src_ip, v4(v), x, Ex::SrcV4Alt),
        T::DstV4 => merge_address(&mut rec.dst_ip, v4(v), x, Ex::DstV4Alt),
        T::SrcV6 => merge_address(&mut rec.src_ip, v6(v), x, Ex::SrcV4Alt),
        T::DstV6 => merge_address(&mut rec.dst_ip, v6(v), x, Ex::DstV4Alt),
        T::NextHopV4 => merge_address(&mut rec.next_hop, v4(v), x, Ex::NextHopV4Alt),
        T::NextHopV6 => merge_address(&mut rec.next_hop, v6(v), x, Ex::NextHopV4Alt),
        T::BgpNextHopV4 => merge_address(&mut rec.bgp_next_hop, v4(v), x, Ex::BgpNextHopV4Alt),
        T::BgpNextHopV6 => merge_address(&mut rec.bgp_next_hop, v6(v), x, Ex::BgpNextHopV4Alt),
        T::ApplicationId => rec.application_id = ApplicationId::from_octets(v),
        _ => apply_uint_dyn(target, arg, be_uint(v), rec, x),
    }
}

/// Puts an exported address into one of the record's address slots, for templates
/// that carry both families (IEs 8/12 and 27/28, next hops 15/62, 18/63): exporters
/// such as Cisco IOS XE, pmacct and Procera fill one family per record and send the
/// other as zeros. A zero address is absence when a real one is there, whatever the
/// order of the fields, so `0.0.0.0` or `::` stays only when the record has no real
/// address of either family. When both families are real the IPv6 one is kept and the
/// IPv4 one saved under `alt`, for `ipVersion` (IE 60) to choose in `finish`.
#[inline(always)]
#[expect(
    clippy::inline_always,
    reason = "folds into Layout::fill's address sites"
)]
fn merge_address(slot: &mut Option<IpAddr>, new: Option<IpAddr>, x: &mut Extra, alt: Ex) {
    let Some(new) = new else {
        return;
    };
    match *slot {
        None => *slot = Some(new),
        Some(old) => merge_second(slot, old, new, x, alt),
    }
}

/// The second address for one slot (a dual-stack template): out of line, since
/// single-family templates (nearly all) never get here.
#[cold]
#[inline(never)]
fn merge_second(slot: &mut Option<IpAddr>, old: IpAddr, new: IpAddr, x: &mut Extra, alt: Ex) {
    if new.is_unspecified() {
        return;
    }
    match (old, new) {
        (IpAddr::V4(o), IpAddr::V6(_)) if !o.is_unspecified() => {
            x.set(alt, u64::from(o.to_bits()));
            *slot = Some(new);
        }
        (IpAddr::V6(o), IpAddr::V4(n)) if !o.is_unspecified() => {
            x.set(alt, u64::from(n.to_bits()));
        }
        _ => *slot = Some(new),
    }
}

/// [`apply_uint`] for a target known only at run time.
#[inline(never)]
fn apply_uint_dyn(target: Target, arg: u8, v: u64, rec: &mut FlowRecord, x: &mut Extra) {
    apply_uint(target, arg, v, rec, x);
}

/// Stores the unsigned value `v` of a numeric field for `target` (address and octet
/// string targets are [`apply`]'s and ignored here).
#[inline(always)]
fn apply_uint(target: Target, arg: u8, v: u64, rec: &mut FlowRecord, x: &mut Extra) {
    use Target as T;
    match target {
        T::OctetDelta => rec.bytes = Some(v),
        T::PacketDelta => rec.packets = Some(v),
        T::OctetTotal => x.set(Ex::OctetTotal, v),
        T::PacketTotal => x.set(Ex::PacketTotal, v),
        T::Protocol => rec.protocol = Some(sat_u8(v)),
        T::Tos => rec.tos = Some(sat_u8(v)),
        T::TcpFlags => rec.tcp_flags = Some(sat_u16(v)),
        T::SrcPort => rec.src_port = Some(sat_u16(v)),
        T::DstPort => rec.dst_port = Some(sat_u16(v)),
        T::SrcMask => rec.src_mask = Some(sat_u8(v)),
        T::DstMask => rec.dst_mask = Some(sat_u8(v)),
        T::Input => rec.input_interface = Some(sat_u32(v)),
        T::Output => rec.output_interface = Some(sat_u32(v)),
        T::IngressPhysical => x.set(Ex::IngressPhysical, v),
        T::EgressPhysical => x.set(Ex::EgressPhysical, v),
        T::SrcAs => rec.src_as = Some(sat_u32(v)),
        T::DstAs => rec.dst_as = Some(sat_u32(v)),
        T::FirstUptime => x.set(Ex::FirstUptime, v),
        T::LastUptime => x.set(Ex::LastUptime, v),
        T::StartSeconds => x.set(Ex::StartMs, v.saturating_mul(1000)),
        T::EndSeconds => x.set(Ex::EndMs, v.saturating_mul(1000)),
        T::StartMillis => x.set(Ex::StartMs, v),
        T::EndMillis => x.set(Ex::EndMs, v),
        T::StartMicros | T::StartNanos => x.set(Ex::StartMs, ntp_to_unix_ms(v)),
        T::EndMicros | T::EndNanos => x.set(Ex::EndMs, ntp_to_unix_ms(v)),
        T::StartDeltaMicros => x.set(Ex::StartDeltaUs, v),
        T::EndDeltaMicros => x.set(Ex::EndDeltaUs, v),
        T::SystemInitMillis => x.set(Ex::SystemInitMs, v),
        T::ObservationMillis => x.set(Ex::ObservationMs, v),
        T::IpVersion => rec.ip_version = Some(sat_u8(v)),
        T::Direction => rec.direction = Some(sat_u8(v)),
        T::SrcVlan => rec.src_vlan = Some(sat_u16(v)),
        T::DstVlan => rec.dst_vlan = Some(sat_u16(v)),
        T::Dot1qVlan => x.set(Ex::Dot1qVlan, u64::from(sat_u16(v))),
        // RFC 7011 IE 70: a 3-octet label stack entry; the label is the top 20 bits.
        T::Mpls => rec.mpls.set(usize::from(arg), sat_u32(v >> 4)),
        T::SamplerId => x.set(Ex::SamplerId, v),
        T::SamplingInterval => x.set(Ex::SamplingInterval, v),
        T::PacketInterval => x.set(Ex::PacketInterval, v),
        T::PacketSpace => x.set(Ex::PacketSpace, v),
        T::SamplingSize => x.set(Ex::SamplingSize, v),
        T::SamplingPopulation => x.set(Ex::SamplingPopulation, v),
        T::IcmpTypeCode => x.set(Ex::IcmpTypeCode, u64::from(sat_u16(v))),
        T::IcmpType => x.set(Ex::IcmpType, u64::from(sat_u8(v))),
        T::IcmpCode => x.set(Ex::IcmpCode, u64::from(sat_u8(v))),
        T::FirewallEvent => rec.firewall_event = Some(sat_u8(v)),
        T::InitiatorOctets => x.set(Ex::InitiatorOctets, v),
        T::ResponderOctets => x.set(Ex::ResponderOctets, v),
        T::InitiatorPackets => x.set(Ex::InitiatorPackets, v),
        T::ResponderPackets => x.set(Ex::ResponderPackets, v),
        T::RevOctetDelta => x.set(Ex::RevOctets, v),
        T::RevPacketDelta => x.set(Ex::RevPackets, v),
        T::RevOctetTotal => x.set(Ex::RevOctetTotal, v),
        T::RevPacketTotal => x.set(Ex::RevPacketTotal, v),
        T::RevTcpFlags => x.set(Ex::RevTcpFlags, v),
        T::RevStartSeconds => x.set(Ex::RevStartMs, v.saturating_mul(1000)),
        T::RevEndSeconds => x.set(Ex::RevEndMs, v.saturating_mul(1000)),
        T::RevStartMillis => x.set(Ex::RevStartMs, v),
        T::RevEndMillis => x.set(Ex::RevEndMs, v),
        T::SrcV4
        | T::DstV4
        | T::SrcV6
        | T::DstV6
        | T::NextHopV4
        | T::NextHopV6
        | T::BgpNextHopV4
        | T::BgpNextHopV6
        | T::ApplicationId => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for ie in 0..=u16::MAX {
            if let Some((t, arg)) = target(Dialect::V9, 0, ie) {
                let s = t.slot(arg);
                assert!(s < SLOTS);
                // Aliases (e.g. 9 and 29) map to the same target and so the same slot.
                seen.insert((t, s));
            }
        }
        let mut by_slot = std::collections::HashMap::new();
        for (t, s) in seen {
            assert_eq!(*by_slot.entry(s).or_insert(t), t, "slot {s} shared");
        }
        assert!(by_slot.len() > 60);
    }

    #[test]
    fn ntp_conversion() {
        // 2024-01-01T00:00:00.500Z in NTP format.
        let secs = 1_704_067_200u64 + 2_208_988_800;
        assert_eq!(
            ntp_to_unix_ms((secs << 32) | 0x8000_0000),
            1_704_067_200_500
        );
    }

    #[test]
    fn enterprise_fields_are_skipped() {
        assert_eq!(target(Dialect::Ipfix, 9, 1), None);
        assert_eq!(target(Dialect::Ipfix, 10_704, 1), None);
        // RFC 5103 reverse elements are interpreted, in slots of their own.
        assert_eq!(
            target(Dialect::Ipfix, PEN_REVERSE, 1),
            Some((Target::RevOctetDelta, 0))
        );
        assert_eq!(target(Dialect::Ipfix, PEN_REVERSE, 8), None);
        assert!(Target::RevEndMillis.slot(0) < Target::Mpls.slot(0));
        assert_eq!(target(Dialect::Ipfix, 0, 40005), None);
        assert_eq!(
            target(Dialect::V9, 0, 40005),
            Some((Target::FirewallEvent, 0))
        );
        assert_eq!(target(Dialect::Ipfix, 0, 72), Some((Target::Mpls, 2)));
    }
}
