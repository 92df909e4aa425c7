//! sFlow v5 encoder for tests and benchmarks: builds datagrams from a plain description, so tests say
//! what an agent sent instead of spelling bytes, and round-trip property tests can
//! encode arbitrary flows. [`encode_datagram`] writes the XDR framing (sFlow v5 §5);
//! the packet builders ([`ethernet`], [`ipv4`], [`tcp`], [`vxlan`], ...) write the
//! sampled headers that go into [`FlowRecordSpec::Header`].
//!
//! Everything is as the spec lays it out and nothing is validated: tests that want a
//! malformed datagram encode a good one and then patch bytes or use the `Raw` variants.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::decode::InterfaceCounters;

/// One sFlow v5 datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramSpec {
    pub agent: IpAddr,
    pub sub_agent_id: u32,
    pub sequence: u32,
    pub uptime_ms: u32,
    pub samples: Vec<SampleSpec>,
}

impl DatagramSpec {
    /// A datagram from `agent`, sub-agent 0, sequence 1.
    pub fn new(agent: IpAddr, samples: Vec<SampleSpec>) -> Self {
        Self {
            agent,
            sub_agent_id: 0,
            sequence: 1,
            uptime_ms: 60_000,
            samples,
        }
    }
}

/// One `sample_record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SampleSpec {
    Flow(FlowSampleSpec),
    Counters(CountersSampleSpec),
    /// Any `data_format` (enterprise << 12 | format) with opaque data.
    Raw {
        format: u32,
        data: Vec<u8>,
    },
}

/// An interface as a flow sample reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// Format 0 with an ifIndex (at most 30 bits in the compact encoding).
    Index(u32),
    /// Format 0 with the "no interface" value (0x3FFFFFFF, or 0xFFFFFFFF expanded).
    Internal,
    /// Format 1: dropped, with a reason code.
    Discarded(u32),
    /// Format 2: sent to this many interfaces.
    Multiple(u32),
}

impl Interface {
    fn compact(self) -> u32 {
        match self {
            Self::Index(i) => i & 0x3FFF_FFFF,
            Self::Internal => 0x3FFF_FFFF,
            Self::Discarded(reason) => 1 << 30 | (reason & 0x3FFF_FFFF),
            Self::Multiple(n) => 2 << 30 | (n & 0x3FFF_FFFF),
        }
    }

    fn expanded(self) -> (u32, u32) {
        match self {
            Self::Index(i) => (0, i),
            Self::Internal => (0, 0xFFFF_FFFF),
            Self::Discarded(reason) => (1, reason),
            Self::Multiple(n) => (2, n),
        }
    }
}

/// `flow_sample` (format 1) or, when `expanded`, `flow_sample_expanded` (format 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowSampleSpec {
    pub expanded: bool,
    pub sequence: u32,
    /// The data source ifIndex (source type 0).
    pub source_index: u32,
    pub sampling_rate: u32,
    pub sample_pool: u32,
    pub drops: u32,
    pub input: Interface,
    pub output: Interface,
    pub records: Vec<FlowRecordSpec>,
}

impl FlowSampleSpec {
    /// A compact flow sample at 1:1000 from ifIndex 1 to ifIndex 2.
    pub fn new(records: Vec<FlowRecordSpec>) -> Self {
        Self {
            expanded: false,
            sequence: 1,
            source_index: 1,
            sampling_rate: 1000,
            sample_pool: 1000,
            drops: 0,
            input: Interface::Index(1),
            output: Interface::Index(2),
            records,
        }
    }
}

/// An AS path segment of an extended gateway record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsPathSegment {
    /// 1 `AS_SET`, 2 `AS_SEQUENCE`.
    pub segment_type: u32,
    pub numbers: Vec<u32>,
}

/// One `flow_record` of a flow sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowRecordSpec {
    /// `sampled_header` (1); `header_protocol` 1 Ethernet, 11 `IPv4`, 12 `IPv6`.
    Header {
        protocol: u32,
        frame_length: u32,
        stripped: u32,
        header: Vec<u8>,
    },
    /// `sampled_ethernet` (2).
    Ethernet {
        length: u32,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        ethertype: u32,
    },
    /// `sampled_ipv4` (3).
    Ipv4 {
        length: u32,
        protocol: u32,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        src_port: u32,
        dst_port: u32,
        tcp_flags: u32,
        tos: u32,
    },
    /// `sampled_ipv6` (4).
    Ipv6 {
        length: u32,
        protocol: u32,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        src_port: u32,
        dst_port: u32,
        tcp_flags: u32,
        priority: u32,
    },
    /// `extended_switch` (1001).
    Switch {
        src_vlan: u32,
        src_priority: u32,
        dst_vlan: u32,
        dst_priority: u32,
    },
    /// `extended_router` (1002); `None` encodes address type 0 (unknown).
    Router {
        next_hop: Option<IpAddr>,
        src_mask: u32,
        dst_mask: u32,
    },
    /// `extended_gateway` (1003).
    Gateway {
        next_hop: Option<IpAddr>,
        router_as: u32,
        src_as: u32,
        src_peer_as: u32,
        as_path: Vec<AsPathSegment>,
        communities: Vec<u32>,
        local_pref: u32,
    },
    /// Any `data_format` with opaque data.
    Raw { format: u32, data: Vec<u8> },
}

impl FlowRecordSpec {
    /// A sampled Ethernet header whose frame length is the header length plus the FCS.
    pub fn ethernet_header(header: Vec<u8>) -> Self {
        let frame_length = u32::try_from(header.len()).expect("test header fits u32") + 4;
        Self::Header {
            protocol: 1,
            frame_length,
            stripped: 4,
            header,
        }
    }
}

/// `counters_sample` (format 2) or, when `expanded`, `counters_sample_expanded` (4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersSampleSpec {
    pub expanded: bool,
    pub sequence: u32,
    pub source_index: u32,
    pub records: Vec<CounterRecordSpec>,
}

/// One `counter_record`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterRecordSpec {
    /// Generic interface counters (1).
    Interface(InterfaceCounters),
    Raw {
        format: u32,
        data: Vec<u8>,
    },
}

/// Encodes a datagram (version 5).
pub fn encode_datagram(spec: &DatagramSpec) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    put_u32(&mut b, 5);
    put_address(&mut b, Some(spec.agent));
    put_u32(&mut b, spec.sub_agent_id);
    put_u32(&mut b, spec.sequence);
    put_u32(&mut b, spec.uptime_ms);
    put_len(&mut b, spec.samples.len());
    for sample in &spec.samples {
        match sample {
            SampleSpec::Flow(flow) => {
                let format = if flow.expanded { 3 } else { 1 };
                put_tagged(&mut b, format, &encode_flow_sample(flow));
            }
            SampleSpec::Counters(counters) => {
                let format = if counters.expanded { 4 } else { 2 };
                put_tagged(&mut b, format, &encode_counters_sample(counters));
            }
            SampleSpec::Raw { format, data } => put_tagged(&mut b, *format, data),
        }
    }
    b
}

fn encode_flow_sample(spec: &FlowSampleSpec) -> Vec<u8> {
    let mut b = Vec::new();
    put_u32(&mut b, spec.sequence);
    if spec.expanded {
        put_u32(&mut b, 0);
        put_u32(&mut b, spec.source_index);
    } else {
        put_u32(&mut b, spec.source_index & 0x00FF_FFFF);
    }
    put_u32(&mut b, spec.sampling_rate);
    put_u32(&mut b, spec.sample_pool);
    put_u32(&mut b, spec.drops);
    if spec.expanded {
        for interface in [spec.input, spec.output] {
            let (format, value) = interface.expanded();
            put_u32(&mut b, format);
            put_u32(&mut b, value);
        }
    } else {
        put_u32(&mut b, spec.input.compact());
        put_u32(&mut b, spec.output.compact());
    }
    put_len(&mut b, spec.records.len());
    for record in &spec.records {
        let (format, data) = encode_flow_record(record);
        put_tagged(&mut b, format, &data);
    }
    b
}

fn encode_flow_record(spec: &FlowRecordSpec) -> (u32, Vec<u8>) {
    let mut b = Vec::new();
    let format = match spec {
        FlowRecordSpec::Header {
            protocol,
            frame_length,
            stripped,
            header,
        } => {
            put_u32(&mut b, *protocol);
            put_u32(&mut b, *frame_length);
            put_u32(&mut b, *stripped);
            put_opaque(&mut b, header);
            1
        }
        FlowRecordSpec::Ethernet {
            length,
            src_mac,
            dst_mac,
            ethertype,
        } => {
            put_u32(&mut b, *length);
            for mac in [src_mac, dst_mac] {
                b.extend_from_slice(mac);
                b.extend_from_slice(&[0, 0]);
            }
            put_u32(&mut b, *ethertype);
            2
        }
        FlowRecordSpec::Ipv4 {
            length,
            protocol,
            src,
            dst,
            src_port,
            dst_port,
            tcp_flags,
            tos,
        } => {
            put_u32(&mut b, *length);
            put_u32(&mut b, *protocol);
            b.extend_from_slice(&src.octets());
            b.extend_from_slice(&dst.octets());
            for v in [src_port, dst_port, tcp_flags, tos] {
                put_u32(&mut b, *v);
            }
            3
        }
        FlowRecordSpec::Ipv6 {
            length,
            protocol,
            src,
            dst,
            src_port,
            dst_port,
            tcp_flags,
            priority,
        } => {
            put_u32(&mut b, *length);
            put_u32(&mut b, *protocol);
            b.extend_from_slice(&src.octets());
            b.extend_from_slice(&dst.octets());
            for v in [src_port, dst_port, tcp_flags, priority] {
                put_u32(&mut b, *v);
            }
            4
        }
        FlowRecordSpec::Switch {
            src_vlan,
            src_priority,
            dst_vlan,
            dst_priority,
        } => {
            for v in [src_vlan, src_priority, dst_vlan, dst_priority] {
                put_u32(&mut b, *v);
            }
            1001
        }
        FlowRecordSpec::Router {
            next_hop,
            src_mask,
            dst_mask,
        } => {
            put_address(&mut b, *next_hop);
            put_u32(&mut b, *src_mask);
            put_u32(&mut b, *dst_mask);
            1002
        }
        FlowRecordSpec::Gateway {
            next_hop,
            router_as,
            src_as,
            src_peer_as,
            as_path,
            communities,
            local_pref,
        } => {
            put_address(&mut b, *next_hop);
            for v in [router_as, src_as, src_peer_as] {
                put_u32(&mut b, *v);
            }
            put_len(&mut b, as_path.len());
            for segment in as_path {
                put_u32(&mut b, segment.segment_type);
                put_len(&mut b, segment.numbers.len());
                for n in &segment.numbers {
                    put_u32(&mut b, *n);
                }
            }
            put_len(&mut b, communities.len());
            for c in communities {
                put_u32(&mut b, *c);
            }
            put_u32(&mut b, *local_pref);
            1003
        }
        FlowRecordSpec::Raw { format, data } => {
            b.extend_from_slice(data);
            *format
        }
    };
    (format, b)
}

fn encode_counters_sample(spec: &CountersSampleSpec) -> Vec<u8> {
    let mut b = Vec::new();
    put_u32(&mut b, spec.sequence);
    if spec.expanded {
        put_u32(&mut b, 0);
        put_u32(&mut b, spec.source_index);
    } else {
        put_u32(&mut b, spec.source_index & 0x00FF_FFFF);
    }
    put_len(&mut b, spec.records.len());
    for record in &spec.records {
        match record {
            CounterRecordSpec::Interface(c) => put_tagged(&mut b, 1, &encode_if_counters(c)),
            CounterRecordSpec::Raw { format, data } => put_tagged(&mut b, *format, data),
        }
    }
    b
}

/// The 88-byte `if_counters` structure.
pub fn encode_if_counters(c: &InterfaceCounters) -> Vec<u8> {
    let mut b = Vec::with_capacity(88);
    put_u32(&mut b, c.if_index);
    put_u32(&mut b, c.if_type);
    b.extend_from_slice(&c.if_speed.to_be_bytes());
    put_u32(&mut b, c.if_direction);
    put_u32(&mut b, c.if_status);
    b.extend_from_slice(&c.if_in_octets.to_be_bytes());
    for v in [
        c.if_in_ucast_pkts,
        c.if_in_multicast_pkts,
        c.if_in_broadcast_pkts,
        c.if_in_discards,
        c.if_in_errors,
        c.if_in_unknown_protos,
    ] {
        put_u32(&mut b, v);
    }
    b.extend_from_slice(&c.if_out_octets.to_be_bytes());
    for v in [
        c.if_out_ucast_pkts,
        c.if_out_multicast_pkts,
        c.if_out_broadcast_pkts,
        c.if_out_discards,
        c.if_out_errors,
        c.if_promiscuous_mode,
    ] {
        put_u32(&mut b, v);
    }
    b
}

pub fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_be_bytes());
}

fn put_len(b: &mut Vec<u8>, len: usize) {
    put_u32(b, u32::try_from(len).expect("test lengths fit u32"));
}

/// XDR variable-length opaque: length, bytes, zero padding to 4.
fn put_opaque(b: &mut Vec<u8>, data: &[u8]) {
    put_len(b, data.len());
    b.extend_from_slice(data);
    b.resize(b.len() + (4 - data.len() % 4) % 4, 0);
}

/// A tagged structure: `data_format`, then its data as an opaque.
fn put_tagged(b: &mut Vec<u8>, format: u32, data: &[u8]) {
    put_u32(b, format);
    put_opaque(b, data);
}

/// sFlow `address`: type 1 or 2 and the address, or type 0 for `None`.
fn put_address(b: &mut Vec<u8>, address: Option<IpAddr>) {
    match address {
        None => put_u32(b, 0),
        Some(IpAddr::V4(a)) => {
            put_u32(b, 1);
            b.extend_from_slice(&a.octets());
        }
        Some(IpAddr::V6(a)) => {
            put_u32(b, 2);
            b.extend_from_slice(&a.octets());
        }
    }
}

// Sampled header builders.

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
pub const ETHERTYPE_MPLS: u16 = 0x8847;
pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88A8;

/// An Ethernet frame with VLAN tags `(tpid, vid)`, outermost first.
pub fn ethernet(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    for (tpid, vid) in tags {
        b.extend_from_slice(&tpid.to_be_bytes());
        b.extend_from_slice(&vid.to_be_bytes());
    }
    b.extend_from_slice(&ethertype.to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// An `IPv4` packet without options, not fragmented.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, tos: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, protocol, tos, &[], 0, payload)
}

/// An `IPv4` packet with `options` (a multiple of 4 bytes) and the flags/fragment offset
/// word `flags_offset` (0x2000 more fragments, low 13 bits the offset in 8-byte units).
pub fn ipv4_with(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    protocol: u8,
    tos: u8,
    options: &[u8],
    flags_offset: u16,
    payload: &[u8],
) -> Vec<u8> {
    let header_len = 20 + options.len();
    let ihl = u8::try_from(header_len / 4).expect("IHL fits");
    let total = u16::try_from(header_len + payload.len()).unwrap_or(u16::MAX);
    let mut b = vec![0x40 | ihl, tos];
    b.extend_from_slice(&total.to_be_bytes());
    b.extend_from_slice(&[0x12, 0x34]);
    b.extend_from_slice(&flags_offset.to_be_bytes());
    b.extend_from_slice(&[64, protocol, 0, 0]);
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(options);
    b.extend_from_slice(payload);
    b
}

/// An `IPv6` packet; `payload` starts with any extension headers `next_header` names.
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next_header: u8,
    traffic_class: u8,
    payload: &[u8],
) -> Vec<u8> {
    let first = 6u32 << 28 | u32::from(traffic_class) << 20 | 0x0_1234;
    let mut b = first.to_be_bytes().to_vec();
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&[next_header, 64]);
    b.extend_from_slice(&src.octets());
    b.extend_from_slice(&dst.octets());
    b.extend_from_slice(payload);
    b
}

/// An RFC 8200 §4 extension header (hop-by-hop, routing, destination options) with
/// `units` 8-octet units beyond the first, followed by `payload`.
pub fn ipv6_extension(next_header: u8, units: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![next_header, units];
    b.resize(8 + usize::from(units) * 8, 0);
    b.extend_from_slice(payload);
    b
}

/// An RFC 8200 §4.5 fragment header (offset in 8-octet units) followed by `payload`.
pub fn ipv6_fragment(next_header: u8, offset: u16, more: bool, payload: &[u8]) -> Vec<u8> {
    let mut b = vec![next_header, 0];
    b.extend_from_slice(&(offset << 3 | u16::from(more)).to_be_bytes());
    b.extend_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD]);
    b.extend_from_slice(payload);
    b
}

/// A 20-byte TCP header with `flags` (FIN 0x01 ... CWR 0x80).
pub fn tcp(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&src_port.to_be_bytes());
    b.extend_from_slice(&dst_port.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]);
    b
}

/// A UDP header followed by `payload`.
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(8 + payload.len());
    b.extend_from_slice(&src_port.to_be_bytes());
    b.extend_from_slice(&dst_port.to_be_bytes());
    let len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    b.extend_from_slice(&len.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(payload);
    b
}

/// An echo-style ICMP header (v4 or v6).
pub fn icmp(icmp_type: u8, code: u8) -> Vec<u8> {
    vec![icmp_type, code, 0, 0, 0, 1, 0, 1]
}

/// A VXLAN header (I flag set) followed by the inner Ethernet frame.
pub fn vxlan(vni: u32, inner: &[u8]) -> Vec<u8> {
    let [_, v0, v1, v2] = vni.to_be_bytes();
    let mut b = vec![0x08, 0, 0, 0, v0, v1, v2, 0];
    b.extend_from_slice(inner);
    b
}

/// A GRE version 0 header with the optional checksum, key and sequence number.
pub fn gre(
    checksum: bool,
    key: Option<u32>,
    sequence: Option<u32>,
    protocol_type: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut flags = 0u16;
    if checksum {
        flags |= 0x8000;
    }
    if key.is_some() {
        flags |= 0x2000;
    }
    if sequence.is_some() {
        flags |= 0x1000;
    }
    let mut b = flags.to_be_bytes().to_vec();
    b.extend_from_slice(&protocol_type.to_be_bytes());
    if checksum {
        b.extend_from_slice(&[0xAB, 0xCD, 0, 0]);
    }
    if let Some(key) = key {
        b.extend_from_slice(&key.to_be_bytes());
    }
    if let Some(sequence) = sequence {
        b.extend_from_slice(&sequence.to_be_bytes());
    }
    b.extend_from_slice(payload);
    b
}

/// An MPLS label stack (top first; bottom-of-stack set on the last) followed by `payload`.
pub fn mpls(labels: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for (i, label) in labels.iter().enumerate() {
        let bottom = u32::from(i + 1 == labels.len());
        let entry = label << 12 | bottom << 8 | 64;
        b.extend_from_slice(&entry.to_be_bytes());
    }
    b.extend_from_slice(payload);
    b
}
