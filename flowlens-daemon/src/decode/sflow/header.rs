//! Dissects an sFlow sampled header (flow record 0:1) down to the innermost 5-tuple.
//!
//! An sFlow agent copies the first bytes of a sampled packet (128 by default) into the
//! datagram, so the header routinely ends in the middle of a protocol header: running
//! out of bytes here is normal and never a [`DecodeError`] for the datagram. The
//! dissector writes what it understood straight into the [`FlowRecord`] and reports
//! whether it reached the innermost transport header ([`Dissected::complete`]); the
//! caller counts incomplete headers as `sflow_unparsed_headers`.
//!
//! Layers: Ethernet (802.1Q/802.1ad/QinQ tags) -> MPLS label stack -> `IPv4` (IHL and
//! options, fragments) or `IPv6` (extension headers) -> TCP/UDP/SCTP ports, TCP flags,
//! ICMP type/code. Tunnels are unwrapped: VXLAN (UDP port 4789) and GRE with the
//! payload types sFlow agents see in data centres (transparent Ethernet, `IPv4`, `IPv6`,
//! MPLS). The inner IP header replaces the outer 5-tuple, so the record holds the
//! innermost one, and only then is [`FlowRecord::tunnel`] set, as its docs require.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::super::error::DecodeError;
use super::super::reader::Reader;
use crate::flow::{FlowRecord, Tunnel};

/// Where the sampled header starts, from its `header_protocol` (sFlow v5 §5,
/// `header_protocol`: 1 ETHERNET-ISO88023, 11 `IPv4`, 12 `IPv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Layer {
    Ethernet,
    Mpls,
    Ipv4,
    Ipv6,
}

impl Layer {
    /// The first layer of a header of sFlow `header_protocol` `protocol`, if we dissect it.
    pub(super) const fn from_header_protocol(protocol: u32) -> Option<Self> {
        match protocol {
            HEADER_PROTOCOL_ETHERNET => Some(Self::Ethernet),
            HEADER_PROTOCOL_IPV4 => Some(Self::Ipv4),
            HEADER_PROTOCOL_IPV6 => Some(Self::Ipv6),
            _ => None,
        }
    }
}

/// sFlow v5 `header_protocol` ETHERNET-ISO88023.
const HEADER_PROTOCOL_ETHERNET: u32 = 1;
/// sFlow v5 `header_protocol` `IPv4`.
const HEADER_PROTOCOL_IPV4: u32 = 11;
/// sFlow v5 `header_protocol` `IPv6`.
const HEADER_PROTOCOL_IPV6: u32 = 12;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
/// IEEE 802.1Q customer tag.
const ETHERTYPE_VLAN: u16 = 0x8100;
/// IEEE 802.1ad service tag (the outer tag of Q-in-Q).
const ETHERTYPE_QINQ: u16 = 0x88A8;
/// The pre-802.1ad Q-in-Q outer tag some switches still send.
const ETHERTYPE_QINQ_LEGACY: u16 = 0x9100;
const ETHERTYPE_MPLS_UNICAST: u16 = 0x8847;
const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;
/// RFC 1701 "transparent Ethernet bridging": GRE carrying Ethernet (NVGRE, `gretap`).
const ETHERTYPE_TRANSPARENT_ETHERNET: u16 = 0x6558;

const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_GRE: u8 = 47;
const PROTO_ICMPV6: u8 = 58;
const PROTO_SCTP: u8 = 132;

/// RFC 7348 §5: the IANA-assigned VXLAN UDP destination port.
const VXLAN_PORT: u16 = 4789;
/// RFC 7348 §5: the I flag, set when the VNI is valid.
const VXLAN_FLAG_VNI: u8 = 0x08;

/// GRE flags (RFC 2784 §2, RFC 2890 §2): checksum, routing (RFC 1701, obsolete), key,
/// sequence number present; the low three bits are the version.
const GRE_CHECKSUM: u16 = 0x8000;
const GRE_ROUTING: u16 = 0x4000;
const GRE_KEY: u16 = 0x2000;
const GRE_SEQUENCE: u16 = 0x1000;
const GRE_VERSION: u16 = 0x0007;

/// Tunnels unwrapped before giving up: real traffic nests one, maybe two; the bound only
/// stops crafted headers from making the dissector walk GRE-in-GRE for every sample.
const MAX_ENCAPSULATIONS: u8 = 4;

/// What the dissector found besides what it wrote into the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dissected {
    /// VLAN id of the first tag of the outermost Ethernet frame (1..=4094 only: 0 is a
    /// priority tag without a VLAN, 4095 is reserved, IEEE 802.1Q §9.6).
    pub(super) vlan: Option<u16>,
    /// True when the innermost 5-tuple was reached: transport ports were read, or the
    /// innermost IP packet has no ports to read (a non-first fragment, a protocol
    /// without ports, a tunnel payload we do not unwrap).
    pub(super) complete: bool,
}

/// Dissects `header` starting at `layer`, filling the 5-tuple, type of service, IP
/// version, TCP flags, MPLS labels and tunnel of `rec`.
pub(super) fn dissect(header: Reader<'_>, layer: Layer, rec: &mut FlowRecord) -> Dissected {
    let mut d = Dissector {
        rec,
        r: header,
        vlan: None,
        pending: None,
        encapsulations: 0,
    };
    let complete = d.run(layer);
    Dissected {
        vlan: d.vlan,
        complete,
    }
}

/// What comes after a layer.
enum Step {
    /// Dissect this layer next.
    Next(Layer),
    /// The innermost 5-tuple is in the record.
    Complete,
    /// Nothing more can be understood, and the 5-tuple is not (all) there.
    Incomplete,
}

/// Walks one sampled header layer by layer, writing into the record as it goes.
struct Dissector<'a, 'r> {
    rec: &'r mut FlowRecord,
    r: Reader<'a>,
    vlan: Option<u16>,
    /// A tunnel being unwrapped: recorded once its inner IP header is read.
    pending: Option<Tunnel>,
    encapsulations: u8,
}

impl Dissector<'_, '_> {
    fn run(&mut self, mut layer: Layer) -> bool {
        loop {
            let step = match layer {
                Layer::Ethernet => self.ethernet(),
                Layer::Mpls => self.mpls(),
                Layer::Ipv4 => self.ipv4(),
                Layer::Ipv6 => self.ipv6(),
            };
            // A short header is the normal case in sFlow: whatever was read so far stays.
            match step {
                Ok(Step::Next(next)) => layer = next,
                Ok(Step::Complete) => return true,
                Ok(Step::Incomplete) | Err(_) => return false,
            }
        }
    }

    /// IEEE 802.3 frame: two MAC addresses, then tags until a real ethertype.
    fn ethernet(&mut self) -> Result<Step, DecodeError> {
        self.r.skip(12)?;
        let outermost = self.encapsulations == 0;
        let mut ethertype = self.r.u16()?;
        let mut first_tag = true;
        while matches!(
            ethertype,
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_LEGACY
        ) {
            let tci = self.r.u16()?;
            if outermost && first_tag {
                self.vlan = Some(tci & 0x0FFF).filter(|vid| (1..=4094).contains(vid));
            }
            first_tag = false;
            ethertype = self.r.u16()?;
        }
        Ok(self.ethertype(ethertype))
    }

    fn ethertype(&self, ethertype: u16) -> Step {
        match ethertype {
            ETHERTYPE_IPV4 => Step::Next(Layer::Ipv4),
            ETHERTYPE_IPV6 => Step::Next(Layer::Ipv6),
            ETHERTYPE_MPLS_UNICAST | ETHERTYPE_MPLS_MULTICAST => Step::Next(Layer::Mpls),
            _ => self.unsupported(),
        }
    }

    /// A payload we do not dissect (ARP, LLDP, a GRE payload type we do not know...): the
    /// 5-tuple is complete if an (outer) IP header was already read, since that is the
    /// innermost one we can know.
    fn unsupported(&self) -> Step {
        if self.rec.ip_version.is_some() {
            Step::Complete
        } else {
            Step::Incomplete
        }
    }

    /// RFC 3032 §2.1 label stack entries until the bottom-of-stack bit, then the payload
    /// is guessed from its first nibble (RFC 4385 §3: 4 and 6 are IP, 0 is a pseudowire
    /// control word, which we do not unwrap).
    fn mpls(&mut self) -> Result<Step, DecodeError> {
        loop {
            let entry = self.r.u32()?;
            self.rec.mpls.push(entry >> 12);
            if entry & 0x100 != 0 {
                break;
            }
        }
        let first = self.r.clone().u8()?;
        Ok(match first >> 4 {
            4 => Step::Next(Layer::Ipv4),
            6 => Step::Next(Layer::Ipv6),
            _ => self.unsupported(),
        })
    }

    /// Starts a tunnel's inner packet, unless too many were unwrapped already.
    fn enter(&mut self, tunnel: Tunnel, inner: Layer) -> Step {
        if self.encapsulations >= MAX_ENCAPSULATIONS {
            return Step::Incomplete;
        }
        self.encapsulations += 1;
        self.pending = Some(tunnel);
        Step::Next(inner)
    }

    /// Replaces the 5-tuple with that of a (possibly inner) IP header: the outer ports and
    /// flags must not survive into the inner flow.
    fn set_ip(&mut self, src: IpAddr, dst: IpAddr, protocol: Option<u8>, tos: u8, version: u8) {
        let rec = &mut *self.rec;
        rec.src_ip = Some(src);
        rec.dst_ip = Some(dst);
        rec.protocol = protocol;
        rec.tos = Some(tos);
        rec.ip_version = Some(version);
        rec.src_port = None;
        rec.dst_port = None;
        rec.tcp_flags = None;
        if let Some(tunnel) = self.pending.take() {
            rec.tunnel = Some(tunnel);
        }
    }

    /// RFC 791 §3.1. The fixed 20 bytes are read at once; options are skipped by IHL.
    /// Only the first fragment (offset 0) carries the transport header.
    fn ipv4(&mut self) -> Result<Step, DecodeError> {
        let [
            version_ihl,
            tos,
            _,
            _,
            _,
            _,
            flags_offset_hi,
            flags_offset_lo,
            _,
            protocol,
            _,
            _,
            s0,
            s1,
            s2,
            s3,
            d0,
            d1,
            d2,
            d3,
        ] = self.r.array::<20>()?;
        if version_ihl >> 4 != 4 {
            return Ok(Step::Incomplete);
        }
        let src = IpAddr::V4(Ipv4Addr::new(s0, s1, s2, s3));
        let dst = IpAddr::V4(Ipv4Addr::new(d0, d1, d2, d3));
        self.set_ip(src, dst, Some(protocol), tos, 4);
        let header_len = usize::from(version_ihl & 0x0F) * 4;
        let Some(options_len) = header_len.checked_sub(20) else {
            // IHL < 5 cannot be a real header: keep the addresses, trust nothing after.
            return Ok(Step::Incomplete);
        };
        self.r.skip(options_len)?;
        let fragment_offset = u16::from_be_bytes([flags_offset_hi, flags_offset_lo]) & 0x1FFF;
        if fragment_offset != 0 {
            return Ok(Step::Complete);
        }
        self.transport(protocol)
    }

    /// RFC 8200 §3 fixed header, then the §4 extension header chain to the upper-layer
    /// protocol. The traffic class goes into `tos`, as IPFIX `ipClassOfService` does.
    fn ipv6(&mut self) -> Result<Step, DecodeError> {
        let version_class_flow = self.r.u32()?;
        let _payload_length = self.r.u16()?;
        let [next_header, _hop_limit] = self.r.array::<2>()?;
        let src = Ipv6Addr::from(self.r.array::<16>()?);
        let dst = Ipv6Addr::from(self.r.array::<16>()?);
        if version_class_flow >> 28 != 6 {
            return Ok(Step::Incomplete);
        }
        // Version (4 bits), traffic class (8), flow label (20): shift the version out.
        let [traffic_class, _, _, _] = (version_class_flow << 4).to_be_bytes();
        // The protocol is only known once the extension headers are walked.
        self.set_ip(IpAddr::V6(src), IpAddr::V6(dst), None, traffic_class, 6);
        let mut protocol = next_header;
        loop {
            match protocol {
                // Hop-by-hop, routing, destination options, mobility, HIP, shim6 share
                // the RFC 8200 §4 layout: next header, length in 8-octet units minus one.
                0 | 43 | 60 | 135 | 139 | 140 => {
                    let [next, len] = self.r.array::<2>()?;
                    self.r.skip(usize::from(len) * 8 + 6)?;
                    protocol = next;
                }
                // Fragment (RFC 8200 §4.5): fixed 8 bytes; a non-first fragment has no
                // upper-layer header.
                44 => {
                    let [next, _reserved] = self.r.array::<2>()?;
                    let offset_flags = self.r.u16()?;
                    self.r.skip(4)?;
                    if offset_flags & 0xFFF8 != 0 {
                        self.rec.protocol = Some(next);
                        return Ok(Step::Complete);
                    }
                    protocol = next;
                }
                // Authentication header (RFC 4302 §2.2): length in 4-octet units minus two.
                51 => {
                    let [next, len] = self.r.array::<2>()?;
                    self.r.skip((usize::from(len) + 2) * 4 - 2)?;
                    protocol = next;
                }
                _ => break,
            }
        }
        self.rec.protocol = Some(protocol);
        self.transport(protocol)
    }

    /// The transport header of the innermost IP packet so far, or a tunnel inside it.
    fn transport(&mut self, protocol: u8) -> Result<Step, DecodeError> {
        match protocol {
            PROTO_TCP => {
                self.ports()?;
                // RFC 9293 §3.1: flags sit in bytes 12-13 under the data offset; keep the
                // 12 bits RFC 7125 defines for tcpControlBits. A header cut right after
                // the ports still has its 5-tuple.
                let mut flags = self.r.clone();
                if let Ok(bits) = flags.skip(8).and_then(|()| flags.u16()) {
                    self.rec.tcp_flags = Some(bits & 0x0FFF);
                }
                Ok(Step::Complete)
            }
            PROTO_UDP => {
                let dst_port = self.ports()?;
                if dst_port == VXLAN_PORT {
                    return self.vxlan();
                }
                Ok(Step::Complete)
            }
            PROTO_SCTP => {
                self.ports()?;
                Ok(Step::Complete)
            }
            // Like NetFlow v5 exporters: no source port, destination port type * 256 + code.
            PROTO_ICMP | PROTO_ICMPV6 => {
                let [icmp_type, code] = self.r.array::<2>()?;
                self.rec.src_port = Some(0);
                self.rec.dst_port = Some(u16::from_be_bytes([icmp_type, code]));
                Ok(Step::Complete)
            }
            PROTO_GRE => self.gre(),
            _ => Ok(Step::Complete),
        }
    }

    /// Reads the source and destination ports every port-based transport starts with;
    /// returns the destination port.
    fn ports(&mut self) -> Result<u16, DecodeError> {
        let [s0, s1, d0, d1] = self.r.array::<4>()?;
        let dst = u16::from_be_bytes([d0, d1]);
        self.rec.src_port = Some(u16::from_be_bytes([s0, s1]));
        self.rec.dst_port = Some(dst);
        Ok(dst)
    }

    /// RFC 7348 §5: after the UDP length and checksum, 8 bytes of flags, reserved, VNI,
    /// reserved, then the inner Ethernet frame. Without the I flag the VNI is not valid,
    /// and the datagram is taken for plain UDP to port 4789.
    fn vxlan(&mut self) -> Result<Step, DecodeError> {
        self.r.skip(4)?;
        let [flags, _, _, _, v0, v1, v2, _] = self.r.array::<8>()?;
        if flags & VXLAN_FLAG_VNI == 0 {
            return Ok(Step::Complete);
        }
        let vni = u32::from_be_bytes([0, v0, v1, v2]);
        Ok(self.enter(Tunnel::Vxlan { vni }, Layer::Ethernet))
    }

    /// RFC 2784 §2 with the RFC 2890 key and sequence extensions. Version 1 (PPTP) and
    /// the obsolete RFC 1701 routing field are left wrapped: the outer 5-tuple stands.
    fn gre(&mut self) -> Result<Step, DecodeError> {
        let flags = self.r.u16()?;
        let protocol_type = self.r.u16()?;
        if flags & (GRE_VERSION | GRE_ROUTING) != 0 {
            return Ok(Step::Complete);
        }
        if flags & GRE_CHECKSUM != 0 {
            self.r.skip(4)?;
        }
        let key = if flags & GRE_KEY != 0 {
            Some(self.r.u32()?)
        } else {
            None
        };
        if flags & GRE_SEQUENCE != 0 {
            self.r.skip(4)?;
        }
        let inner = match protocol_type {
            ETHERTYPE_TRANSPARENT_ETHERNET => Layer::Ethernet,
            ETHERTYPE_IPV4 => Layer::Ipv4,
            ETHERTYPE_IPV6 => Layer::Ipv6,
            ETHERTYPE_MPLS_UNICAST | ETHERTYPE_MPLS_MULTICAST => Layer::Mpls,
            _ => return Ok(Step::Complete),
        };
        Ok(self.enter(Tunnel::Gre { key }, inner))
    }
}
