//! sFlow version 5 decoder (sFlow.org, "sFlow Version 5", July 2004, §5 "sFlow Datagram
//! Format", with the sflow.org errata).
//!
//! A datagram is an XDR structure: agent address, sub-agent id, sequence number, uptime,
//! then `samples<>`. Each sample, flow record and counter record is tagged with a
//! `data_format` (20-bit enterprise, 12-bit format) and carries an opaque length, so
//! everything this decoder does not understand is skipped by that length and counted
//! (`sflow_unknown_records`). Every sample and record is read through a sub-reader of
//! exactly its declared length: a wrong inner length fails inside that structure or is
//! ignored by it, but can never misalign the next one.
//!
//! What becomes what:
//! - a flow sample (formats 1 and 3) is exactly one [`FlowRecord`]: interfaces and rate
//!   from the sample, the 5-tuple from the sampled header (dissected in [`header`], the
//!   innermost tuple when tunnelled) or else from a sampled IPv4/IPv6 record, VLANs,
//!   next hops, masks and AS numbers from the extended records 1001-1003;
//! - a counter sample (formats 2 and 4) is counted (`sflow_counter_samples`) and its
//!   generic interface counters are validated into [`InterfaceCounters`], but it is not
//!   turned into a flow.
//!
//! Only the sFlow framing can make a datagram malformed ([`DecodeError`] with the
//! absolute offset); the content of a sampled header never does, since agents cut it at
//! a fixed size. Per-sample counters are committed only when the whole datagram decodes,
//! so a malformed datagram is counted once, as malformed. The datagram sequence number is
//! tracked per (agent, sub-agent) as soon as the header is read: a datagram that arrived
//! but turned out malformed was not lost.

mod header;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::reader::Reader;
use super::sampling::{SamplingSettings, SamplingTable};
use super::{Context, DecodeError, ExporterCounters};
use crate::flow::{FlowProtocol, FlowRecord};
use header::{Dissected, Layer};

/// `data_format` of the samples we decode (enterprise 0).
const SAMPLE_FLOW: u32 = 1;
const SAMPLE_COUNTERS: u32 = 2;
const SAMPLE_FLOW_EXPANDED: u32 = 3;
const SAMPLE_COUNTERS_EXPANDED: u32 = 4;

/// `data_format` of the flow records we decode (enterprise 0).
const FLOW_SAMPLED_HEADER: u32 = 1;
const FLOW_SAMPLED_ETHERNET: u32 = 2;
const FLOW_SAMPLED_IPV4: u32 = 3;
const FLOW_SAMPLED_IPV6: u32 = 4;
const FLOW_EXTENDED_SWITCH: u32 = 1001;
const FLOW_EXTENDED_ROUTER: u32 = 1002;
const FLOW_EXTENDED_GATEWAY: u32 = 1003;

/// `data_format` of the generic interface counters (enterprise 0, format 1).
const COUNTERS_GENERIC_INTERFACE: u32 = 1;

/// XDR sizes of the fixed-size structures. sFlow never extends a structure (a new one
/// gets a new format), so any other length means we would misread it.
/// `sampled_ethernet`: length, two `mac` (6 bytes, XDR-padded to 8), type.
const SAMPLED_ETHERNET_LEN: usize = 24;
const SAMPLED_IPV4_LEN: usize = 32;
const SAMPLED_IPV6_LEN: usize = 56;
const EXTENDED_SWITCH_LEN: usize = 16;
/// `if_counters`: the 88-byte generic interface counters.
const GENERIC_INTERFACE_LEN: usize = 88;

/// Smallest encoding of a tagged structure (`data_format` + opaque length): bounds the
/// sample and record counts against the bytes left.
const TAGGED_MIN_LEN: usize = 8;

/// sFlow v5 `address` types. Type 0 (UNKNOWN) carries no address.
const ADDRESS_UNKNOWN: u32 = 0;
const ADDRESS_IPV4: u32 = 1;
const ADDRESS_IPV6: u32 = 2;

/// The compact `interface` encoding (`flow_sample`): the top 2 bits are the format, only
/// format 0 holds an ifIndex in the low 30 bits.
const INTERFACE_FORMAT_SHIFT: u32 = 30;
const INTERFACE_VALUE_MASK: u32 = 0x3FFF_FFFF;
/// Format 0 value meaning "no interface": the packet came from or went to the agent
/// itself. The errata make 0xFFFFFFFF the value in `interface_expanded`; agents written
/// before it send 0x3FFFFFFF there too, so both are accepted.
const INTERFACE_INTERNAL: u32 = 0x3FFF_FFFF;
const INTERFACE_INTERNAL_EXPANDED: u32 = 0xFFFF_FFFF;

/// Decodes one sFlow v5 datagram (the dispatcher has checked the version) and appends
/// one record per flow sample.
pub(super) fn decode(
    ctx: &mut Context<'_, '_>,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let mut r = Reader::new(ctx.datagram.payload);
    r.skip(4)?;
    // An agent must say who it is: the address is the exporter of every record and half
    // of the sequence key, so type 0 (UNKNOWN) is as unusable as an undefined type.
    let Some(agent) = read_address(&mut r, "agent address type")? else {
        return Err(DecodeError::UnknownType {
            offset: 4,
            what: "agent address type",
            value: ADDRESS_UNKNOWN,
        });
    };
    let sub_agent_id = r.u32()?;
    let sequence = r.u32()?;
    let _uptime_ms = r.u32()?;
    let samples = read_count(&mut r, "sample", TAGGED_MIN_LEN)?;

    let outcome = ctx
        .state
        .sflow_sequences
        .entry((agent, sub_agent_id))
        .or_default()
        .observe(sequence, Some(1));
    ctx.count_sequence(outcome, true);

    let datagram = DatagramHeader {
        agent,
        sub_agent_id,
        received_at_ms: ctx.datagram.received_at_ms,
        settings: ctx.settings,
    };
    let mut tally = Tally::default();
    for _ in 0..samples {
        let sample = Tagged::read(&mut r)?;
        match sample.standard_format() {
            Some(SAMPLE_FLOW) => flow_sample(sample, false, &datagram, &mut tally, out)?,
            Some(SAMPLE_FLOW_EXPANDED) => flow_sample(sample, true, &datagram, &mut tally, out)?,
            Some(SAMPLE_COUNTERS) => counter_sample(sample, false, &mut tally)?,
            Some(SAMPLE_COUNTERS_EXPANDED) => counter_sample(sample, true, &mut tally)?,
            // Discarded-packet samples (format 5), enterprise samples, future formats.
            _ => tally.unknown_records += 1,
        }
    }
    // Bytes after the samples the datagram declares (agents that send a sample count
    // lower than the samples present, or pad): decoded as declared, the rest ignored
    // and counted as trailing bytes, as Wireshark does.
    ctx.trailing(r.offset(), r.remaining());
    tally.commit(&mut ctx.state.counters);
    Ok(())
}

/// The datagram fields every record of it shares.
struct DatagramHeader {
    agent: IpAddr,
    sub_agent_id: u32,
    received_at_ms: u64,
    settings: SamplingSettings,
}

/// Per-datagram counts, added to the exporter's counters only if the datagram decodes.
#[derive(Debug, Default)]
struct Tally {
    counter_samples: u64,
    unknown_records: u64,
    unparsed_headers: u64,
}

impl Tally {
    fn commit(&self, counters: &mut ExporterCounters) {
        counters.sflow_counter_samples += self.counter_samples;
        counters.sflow_unknown_records += self.unknown_records;
        counters.sflow_unparsed_headers += self.unparsed_headers;
    }
}

/// One tagged structure (`sample_record`, `flow_record`, `counter_record`): its
/// `data_format` and a reader over exactly its opaque data.
struct Tagged<'a> {
    format: u32,
    /// Absolute offset of the length field, for [`DecodeError::BadLength`].
    length_offset: usize,
    /// The declared length (of `body`).
    length: usize,
    body: Reader<'a>,
}

impl<'a> Tagged<'a> {
    /// Reads `data_format`, the opaque length and data, and the XDR padding after it.
    #[expect(
        clippy::inline_always,
        reason = "called for every sample and record; returned through memory it cost a \
                  store-forwarding stall per call, about 10% of decode time (perf)"
    )]
    #[inline(always)]
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let format = r.u32()?;
        let length_offset = r.offset();
        let length = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
        let body = r.sub(length)?;
        // RFC 4506 §4.10: an opaque is zero-padded to a multiple of four bytes. sFlow's
        // own structures are always aligned; this keeps odd enterprise data in step.
        r.skip(xdr_padding(length))?;
        Ok(Self {
            format,
            length_offset,
            length,
            body,
        })
    }

    /// The format number when the enterprise is 0 (the sFlow.org standard structures):
    /// `data_format` is enterprise << 12 | format.
    #[inline]
    fn standard_format(&self) -> Option<u32> {
        (self.format >> 12 == 0).then_some(self.format & 0x0FFF)
    }

    /// Checks the length of a fixed-size structure.
    #[inline]
    fn expect_len(&self, what: &'static str, expected: usize) -> Result<(), DecodeError> {
        if self.length == expected {
            Ok(())
        } else {
            Err(DecodeError::BadLength {
                offset: self.length_offset,
                what,
                length: self.length,
            })
        }
    }

    /// A sample whose records did not fill its declared length: its record count and
    /// length disagree, so a record could be lost without trace.
    fn expect_consumed(&self, what: &'static str) -> Result<(), DecodeError> {
        if self.body.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::BadLength {
                offset: self.length_offset,
                what,
                length: self.length,
            })
        }
    }
}

/// Bytes of zero padding after an XDR opaque of `length` bytes.
#[inline]
const fn xdr_padding(length: usize) -> usize {
    (4 - length % 4) % 4
}

/// Reads an XDR array count and rejects one that cannot fit in the bytes left, given the
/// smallest encoding of an element.
#[inline]
fn read_count(r: &mut Reader<'_>, what: &'static str, min_len: usize) -> Result<u32, DecodeError> {
    let offset = r.offset();
    let count = r.u32()?;
    let needed = usize::try_from(count)
        .unwrap_or(usize::MAX)
        .saturating_mul(min_len);
    if needed > r.remaining() {
        return Err(DecodeError::BadCount {
            offset,
            what,
            count,
        });
    }
    Ok(count)
}

/// Reads an sFlow `address` (type, then 4 or 16 bytes). `None` is type 0, UNKNOWN.
fn read_address(r: &mut Reader<'_>, what: &'static str) -> Result<Option<IpAddr>, DecodeError> {
    let offset = r.offset();
    match r.u32()? {
        ADDRESS_UNKNOWN => Ok(None),
        ADDRESS_IPV4 => Ok(Some(IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)))),
        ADDRESS_IPV6 => Ok(Some(IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)))),
        value => Err(DecodeError::UnknownType {
            offset,
            what,
            value,
        }),
    }
}

/// An ifIndex from a format 0 interface value; 0 ("not known", sFlow v5 §5 `interface`)
/// and the internal-interface values are no interface.
#[inline]
fn if_index(value: u32) -> Option<u32> {
    match value {
        0 | INTERFACE_INTERNAL | INTERFACE_INTERNAL_EXPANDED => None,
        index => Some(index),
    }
}

/// `interface` (`flow_sample`): format in the top 2 bits; formats 1 (discarded, value is a
/// reason) and 2 (multiple outputs, value is a count) name no single interface.
#[inline]
fn compact_interface(raw: u32) -> Option<u32> {
    if raw >> INTERFACE_FORMAT_SHIFT == 0 {
        if_index(raw & INTERFACE_VALUE_MASK)
    } else {
        None
    }
}

/// `interface_expanded` (`flow_sample_expanded`): format and value in two words.
#[inline]
fn expanded_interface(format: u32, value: u32) -> Option<u32> {
    if format == 0 { if_index(value) } else { None }
}

/// A VLAN id from an extended switch record: only 1..=4094 name a VLAN (0 is "no VLAN",
/// 4095 reserved, and the errata make 0xFFFFFFFF "unknown").
#[inline]
fn vlan_id(value: u32) -> Option<u16> {
    u16::try_from(value)
        .ok()
        .filter(|vid| (1..=4094).contains(vid))
}

/// What the sampled IPv4/IPv6 records say, used when no sampled header gave a 5-tuple.
#[derive(Debug, Clone, Copy)]
struct SampledIp {
    length: u32,
    version: u8,
    protocol: u32,
    src: IpAddr,
    dst: IpAddr,
    src_port: u32,
    dst_port: u32,
    tcp_flags: u32,
    tos: u32,
}

/// Flow record contents that depend on which other records the sample carries; settled
/// in [`SampleParts::finish`] whatever their order.
#[derive(Debug, Default)]
struct SampleParts {
    /// `frame_length` of the sampled header record.
    frame_length: Option<u32>,
    /// `length` of the sampled Ethernet record.
    ethernet_length: Option<u32>,
    sampled_ip: Option<SampledIp>,
    header_vlan: Option<u16>,
    /// `src_vlan`, `dst_vlan` of the extended switch record.
    switch_vlans: Option<(Option<u16>, Option<u16>)>,
}

impl SampleParts {
    fn finish(self, rec: &mut FlowRecord) {
        if let Some(ip) = self.sampled_ip.filter(|_| rec.ip_version.is_none()) {
            rec.ip_version = Some(ip.version);
            rec.src_ip = Some(ip.src);
            rec.dst_ip = Some(ip.dst);
            rec.protocol = u8::try_from(ip.protocol).ok();
            rec.src_port = u16::try_from(ip.src_port).ok();
            rec.dst_port = u16::try_from(ip.dst_port).ok();
            rec.tcp_flags = u16::try_from(ip.tcp_flags).ok();
            rec.tos = u8::try_from(ip.tos).ok();
        }
        // The header's frame length counts what the wire carried (layer 2 included);
        // without a header, the sampled IP length, then the Ethernet length.
        let bytes = self
            .frame_length
            .or(self.sampled_ip.map(|ip| ip.length))
            .or(self.ethernet_length);
        rec.bytes = bytes.map(u64::from);
        // The switch says which VLAN it forwarded in even for untagged ports (sFlow v5
        // §5 `extended_switch`); the header tag is the fallback.
        let (src_vlan, dst_vlan) = self.switch_vlans.unwrap_or_default();
        rec.src_vlan = src_vlan.or(self.header_vlan);
        rec.dst_vlan = dst_vlan;
    }
}

/// `flow_sample` (format 1) or `flow_sample_expanded` (format 3): one flow record.
fn flow_sample(
    mut sample: Tagged<'_>,
    expanded: bool,
    datagram: &DatagramHeader,
    tally: &mut Tally,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let s = &mut sample.body;
    let _sequence = s.u32()?;
    // source_id: one word (type << 24 | index), or two when expanded.
    s.skip(if expanded { 8 } else { 4 })?;
    let sampling_rate = s.u32()?;
    let _sample_pool = s.u32()?;
    let _drops = s.u32()?;
    let (input, output) = if expanded {
        let [f_in, v_in, f_out, v_out] = [s.u32()?, s.u32()?, s.u32()?, s.u32()?];
        (
            expanded_interface(f_in, v_in),
            expanded_interface(f_out, v_out),
        )
    } else {
        (compact_interface(s.u32()?), compact_interface(s.u32()?))
    };
    let records = read_count(s, "flow record", TAGGED_MIN_LEN)?;

    // The record is filled where it will stay: it is a few hundred bytes, and copying it
    // out of this function and into `out` cost more than decoding it. On an error the
    // dispatcher truncates `out`, so a half-filled record never escapes.
    out.push(FlowRecord::empty(
        FlowProtocol::SflowV5,
        datagram.agent,
        datagram.received_at_ms,
    ));
    let Some(rec) = out.last_mut() else {
        return Ok(()); // Never taken: a record was just pushed.
    };
    rec.observation_domain = datagram.sub_agent_id;
    rec.packets = Some(1);
    rec.sampling_rate = Some(SamplingTable::resolve_header(
        datagram.settings,
        sampling_rate,
    ));
    rec.input_interface = input;
    rec.output_interface = output;

    let mut parts = SampleParts::default();
    for _ in 0..records {
        let record = Tagged::read(s)?;
        match record.standard_format() {
            Some(FLOW_SAMPLED_HEADER) => sampled_header(record, rec, &mut parts, tally)?,
            Some(FLOW_SAMPLED_ETHERNET) => {
                record.expect_len("sampled_ethernet", SAMPLED_ETHERNET_LEN)?;
                parts.ethernet_length = Some(record.body.clone().u32()?);
            }
            Some(FLOW_SAMPLED_IPV4) => parts.sampled_ip = Some(sampled_ipv4(record)?),
            Some(FLOW_SAMPLED_IPV6) => parts.sampled_ip = Some(sampled_ipv6(record)?),
            Some(FLOW_EXTENDED_SWITCH) => parts.switch_vlans = Some(extended_switch(record)?),
            Some(FLOW_EXTENDED_ROUTER) => extended_router(record, rec)?,
            Some(FLOW_EXTENDED_GATEWAY) => extended_gateway(record, rec)?,
            _ => tally.unknown_records += 1,
        }
    }
    sample.expect_consumed(if expanded {
        "flow_sample_expanded"
    } else {
        "flow_sample"
    })?;
    parts.finish(rec);
    Ok(())
}

/// `sampled_header` (flow record 1): framing errors are errors, the header content is
/// dissected as far as it goes.
fn sampled_header(
    mut record: Tagged<'_>,
    rec: &mut FlowRecord,
    parts: &mut SampleParts,
    tally: &mut Tally,
) -> Result<(), DecodeError> {
    let r = &mut record.body;
    let protocol = r.u32()?;
    let frame_length = r.u32()?;
    let _stripped = r.u32()?;
    let header_length = usize::try_from(r.u32()?).unwrap_or(usize::MAX);
    // The XDR padding after the header is left unread: the record ends at its own
    // length, so nothing after it depends on the padding being there.
    let header = r.sub(header_length)?;
    parts.frame_length = Some(frame_length);
    let dissected = match Layer::from_header_protocol(protocol) {
        Some(layer) => header::dissect(header, layer, rec),
        None => Dissected {
            vlan: None,
            complete: false,
        },
    };
    if !dissected.complete {
        tally.unparsed_headers += 1;
    }
    parts.header_vlan = dissected.vlan;
    Ok(())
}

/// `sampled_ipv4` (flow record 3).
fn sampled_ipv4(mut record: Tagged<'_>) -> Result<SampledIp, DecodeError> {
    record.expect_len("sampled_ipv4", SAMPLED_IPV4_LEN)?;
    let r = &mut record.body;
    let length = r.u32()?;
    let protocol = r.u32()?;
    let src = IpAddr::V4(Ipv4Addr::from(r.array::<4>()?));
    let dst = IpAddr::V4(Ipv4Addr::from(r.array::<4>()?));
    Ok(SampledIp {
        length,
        version: 4,
        protocol,
        src,
        dst,
        src_port: r.u32()?,
        dst_port: r.u32()?,
        tcp_flags: r.u32()?,
        tos: r.u32()?,
    })
}

/// `sampled_ipv6` (flow record 4); its `priority` goes into `tos`, like the header's
/// traffic class.
fn sampled_ipv6(mut record: Tagged<'_>) -> Result<SampledIp, DecodeError> {
    record.expect_len("sampled_ipv6", SAMPLED_IPV6_LEN)?;
    let r = &mut record.body;
    let length = r.u32()?;
    let protocol = r.u32()?;
    let src = IpAddr::V6(Ipv6Addr::from(r.array::<16>()?));
    let dst = IpAddr::V6(Ipv6Addr::from(r.array::<16>()?));
    Ok(SampledIp {
        length,
        version: 6,
        protocol,
        src,
        dst,
        src_port: r.u32()?,
        dst_port: r.u32()?,
        tcp_flags: r.u32()?,
        tos: r.u32()?,
    })
}

/// `extended_switch` (flow record 1001): source and destination VLANs.
fn extended_switch(mut record: Tagged<'_>) -> Result<(Option<u16>, Option<u16>), DecodeError> {
    record.expect_len("extended_switch", EXTENDED_SWITCH_LEN)?;
    let r = &mut record.body;
    let src_vlan = r.u32()?;
    let _src_priority = r.u32()?;
    let dst_vlan = r.u32()?;
    let _dst_priority = r.u32()?;
    Ok((vlan_id(src_vlan), vlan_id(dst_vlan)))
}

/// `extended_router` (flow record 1002): the immediate next hop and the prefix lengths.
fn extended_router(mut record: Tagged<'_>, rec: &mut FlowRecord) -> Result<(), DecodeError> {
    let r = &mut record.body;
    rec.next_hop = read_address(r, "next hop address type")?;
    rec.src_mask = u8::try_from(r.u32()?).ok();
    rec.dst_mask = u8::try_from(r.u32()?).ok();
    Ok(())
}

/// `extended_gateway` (flow record 1003): BGP next hop and AS numbers. The destination
/// AS is the origin of the path (its last AS number); an empty path means the
/// destination is in the router's own AS, whose number is `as`. Communities and
/// local preference have no place in a [`FlowRecord`] and are only checked for framing.
fn extended_gateway(mut record: Tagged<'_>, rec: &mut FlowRecord) -> Result<(), DecodeError> {
    let r = &mut record.body;
    let next_hop = read_address(r, "BGP next hop address type")?;
    let router_as = r.u32()?;
    let src_as = r.u32()?;
    let _src_peer_as = r.u32()?;
    // Each segment is at least its type and its count.
    let segments = read_count(r, "AS path segment", 8)?;
    let mut origin_as = None;
    for _ in 0..segments {
        let _segment_type = r.u32()?;
        let numbers = read_count(r, "AS number", 4)?;
        for _ in 0..numbers {
            origin_as = Some(r.u32()?);
        }
    }
    let communities = read_count(r, "community", 4)?;
    r.skip(
        usize::try_from(communities)
            .unwrap_or(usize::MAX)
            .saturating_mul(4),
    )?;
    let _local_pref = r.u32()?;
    rec.bgp_next_hop = next_hop;
    rec.src_as = Some(src_as);
    rec.dst_as = Some(origin_as.unwrap_or(router_as));
    Ok(())
}

/// `counters_sample` (format 2) or `counters_sample_expanded` (format 4): counted, and
/// its generic interface counters validated. Other counter records (Ethernet, VLAN,
/// processor, host...) are known structures that no stage consumes yet, so they are
/// skipped without counting them as unknown: the sample is already counted.
fn counter_sample(
    mut sample: Tagged<'_>,
    expanded: bool,
    tally: &mut Tally,
) -> Result<(), DecodeError> {
    let s = &mut sample.body;
    let _sequence = s.u32()?;
    s.skip(if expanded { 8 } else { 4 })?;
    let records = read_count(s, "counter record", TAGGED_MIN_LEN)?;
    for _ in 0..records {
        let record = Tagged::read(s)?;
        if record.standard_format() == Some(COUNTERS_GENERIC_INTERFACE) {
            InterfaceCounters::parse(record)?;
        }
    }
    sample.expect_consumed(if expanded {
        "counters_sample_expanded"
    } else {
        "counters_sample"
    })?;
    tally.counter_samples += 1;
    Ok(())
}

/// Generic interface counters (sFlow v5 §5 `if_counters`, counter record 0:1, 88 bytes),
/// the RFC 2863 ifTable/ifXTable values of one interface.
///
/// Decoded and length-checked today but not emitted anywhere: a later issue exposes them
/// (interface utilisation from sFlow agents), and will make this type public then.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfaceCounters {
    pub if_index: u32,
    pub if_type: u32,
    pub if_speed: u64,
    /// 0 unknown, 1 full-duplex, 2 half-duplex, 3 in, 4 out (RFC 3635 derived).
    pub if_direction: u32,
    /// Bit 0 ifAdminStatus up, bit 1 ifOperStatus up.
    pub if_status: u32,
    pub if_in_octets: u64,
    pub if_in_ucast_pkts: u32,
    pub if_in_multicast_pkts: u32,
    pub if_in_broadcast_pkts: u32,
    pub if_in_discards: u32,
    pub if_in_errors: u32,
    pub if_in_unknown_protos: u32,
    pub if_out_octets: u64,
    pub if_out_ucast_pkts: u32,
    pub if_out_multicast_pkts: u32,
    pub if_out_broadcast_pkts: u32,
    pub if_out_discards: u32,
    pub if_out_errors: u32,
    pub if_promiscuous_mode: u32,
}

impl InterfaceCounters {
    fn parse(mut record: Tagged<'_>) -> Result<Self, DecodeError> {
        record.expect_len("if_counters", GENERIC_INTERFACE_LEN)?;
        let r = &mut record.body;
        Ok(Self {
            if_index: r.u32()?,
            if_type: r.u32()?,
            if_speed: r.u64()?,
            if_direction: r.u32()?,
            if_status: r.u32()?,
            if_in_octets: r.u64()?,
            if_in_ucast_pkts: r.u32()?,
            if_in_multicast_pkts: r.u32()?,
            if_in_broadcast_pkts: r.u32()?,
            if_in_discards: r.u32()?,
            if_in_errors: r.u32()?,
            if_in_unknown_protos: r.u32()?,
            if_out_octets: r.u64()?,
            if_out_ucast_pkts: r.u32()?,
            if_out_multicast_pkts: r.u32()?,
            if_out_broadcast_pkts: r.u32()?,
            if_out_discards: r.u32()?,
            if_out_errors: r.u32()?,
            if_promiscuous_mode: r.u32()?,
        })
    }
}

#[cfg(test)]
mod tests;
