//! PURE: which end of a unidirectional flow record is the client and which the server.
//!
//! Exporters report each direction of a connection as its own record. A dependency is
//! "client depends on server's (protocol, port)", so both records must orient to the
//! same (client, server, `server_port`); otherwise every ephemeral client port becomes a
//! dependency of its own. [`orient`] applies the first rule that decides:
//!
//! | rule | [`Reason`] | when | server | confidence |
//! |---|---|---|---|---|
//! | a | `TcpSyn` | TCP, SYN without ACK | destination | 0.95 |
//! | a | `TcpSynAck` | TCP, exactly a SYN-ACK packet's flags, per-packet only | source | 0.95 |
//! | a2 | `LearntListener` | exactly one end is a learnt listener ([`super::listeners`]) | that side | 0.8 |
//! | b | `KnownService` | exactly one port is in [`services`] | that side | 0.85 |
//! | b | `BothKnownServices` | both are (443<->8080, 53<->53) | lower port | 0.5 (equal: 0.4) |
//! | c | `WellKnownPort` | exactly one port < 1024 | that side | 0.75 |
//! | c | `RegisteredPort` | one port in 1024-32767, the other >= 32768 | the registered one | 0.6 |
//! | d | `FanOut` | one end has >= 3 distinct peers, more than the other | busier end | 0.35-0.7 |
//! | e | `LowerPort` | otherwise | lower port | 0.3 (equal: 0.2) |
//!
//! Why flags first, and why only SYN-without-ACK always counts: NetFlow v5/v9 and IPFIX
//! (IE 6, `tcpControlBits`) export the OR of the flags of every packet in the record, and
//! a client's record of a whole connection carries SYN (its first packet) *and* ACK (the
//! rest), exactly like the server's. So SYN+ACK proves the sender is the server only when
//! the flags are one packet's ([`FlagsScope::PerPacket`]: sFlow samples, or any record
//! of a single packet, common under sampled NetFlow). SYN without ACK is only ever sent
//! by an initiator, whatever the scope. Because flags can be cleared, absent or
//! uninformative on the reverse record, rules b-e are symmetric: a record and its
//! reverse always give the same answer (a property test checks it). Ties (equal ports)
//! break on the lower address: arbitrary, but it collapses both directions of 53<->53 or
//! 123<->123 into one dependency; the lower confidence says the choice was a guess.
//!
//! Learnt listeners come before the port rules: what the network showed across
//! windows (an endpoint that kept its port while its peers' changed) beats a guess from
//! the port number, and it is symmetric too.
//!
//! Fan-out ([`FanOut`], counted by [`super::fan_out::PeerCounter`]) comes after the port
//! rules because it needs history and is the weakest evidence that still beats a coin.
//! Its confidence is `0.35 + 0.35 * (1 - fewer/more)`, so a 64:1 endpoint scores ~0.7.
//!
//! ICMP (1) and `ICMPv6` (58) have no ports; decoders put `type << 8 | code` in
//! `dst_port`. An echo request's sender is the client (0.9); an echo reply's sender is
//! the server, 0.9 for `ICMPv6` (type 129) but 0.5 for ICMP, whose reply encodes as 0,
//! which is also what an exporter that did not report the type sends. Any other type:
//! the destination is the server, 0.2 (errors and redirects are rarely dependencies, and
//! callers may drop [`Reason::IcmpOther`]). The server port is 0 for all ICMP.
//!
//! Known limitation: without flags, a scanner using source port 53 or 80 to slip past
//! stateless firewalls looks like a server to rules b-c.

use std::net::IpAddr;

use super::fan_out::{Endpoint, FanOut};
use super::listeners::Listening;
use crate::enrich::services::{self, LINUX_EPHEMERAL_START, PortClass};
use crate::flow::{FlowProtocol, FlowRecord};

const ICMP: u8 = 1;
const TCP: u8 = 6;
const ICMPV6: u8 = 58;
const TCP_FIN: u16 = 0x01;
const TCP_SYN: u16 = 0x02;
const TCP_RST: u16 = 0x04;
const TCP_PSH: u16 = 0x08;
const TCP_ACK: u16 = 0x10;
const TCP_URG: u16 = 0x20;
/// Flags a SYN-ACK packet cannot carry (it may carry ECE, CWR and NS besides SYN and
/// ACK): with any of them, "SYN+ACK" flags are an aggregate's, not one packet's.
const TCP_NOT_HANDSHAKE: u16 = TCP_FIN | TCP_RST | TCP_PSH | TCP_URG;
/// Peers an endpoint needs before its fan-out counts as evidence: one or two peers is
/// what any client endpoint has.
const MIN_FAN_OUT_PEERS: u32 = 3;

/// Whether a record's TCP flags are one packet's or the OR over many.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlagsScope {
    /// The OR over every packet of the record (NetFlow, IPFIX): the safe assumption.
    #[default]
    Cumulative,
    /// One packet's flags (sFlow samples, single-packet records).
    PerPacket,
}

/// The fields of a flow record that orientation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowEnds {
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    /// For ICMP, `type << 8 | code`.
    pub dst_port: Option<u16>,
    pub protocol: Option<u8>,
    pub tcp_flags: Option<u16>,
    pub flags_scope: FlagsScope,
}

impl From<&FlowRecord> for FlowEnds {
    fn from(rec: &FlowRecord) -> Self {
        let per_packet = rec.proto == FlowProtocol::SflowV5 || rec.packets == Some(1);
        Self {
            src_ip: rec.src_ip,
            dst_ip: rec.dst_ip,
            src_port: rec.src_port,
            dst_port: rec.dst_port,
            protocol: rec.protocol,
            tcp_flags: rec.tcp_flags,
            flags_scope: if per_packet {
                FlagsScope::PerPacket
            } else {
                FlagsScope::Cumulative
            },
        }
    }
}

impl FlowEnds {
    /// Whether this is a TCP record with SYN and without ACK: sent by an initiator.
    #[must_use]
    pub fn is_syn(&self) -> bool {
        self.protocol == Some(TCP)
            && self
                .tcp_flags
                .is_some_and(|f| f & TCP_SYN != 0 && f & TCP_ACK == 0)
    }

    /// The (source, destination) endpoints, for feeding a `PeerCounter`; `None` when
    /// the record has no usable ports (missing fields, port 0, ICMP, a portless
    /// protocol), so such records do not fill the counter with endpoints fan-out never
    /// consults.
    #[must_use]
    pub fn endpoints(&self) -> Option<(Endpoint, Endpoint)> {
        let protocol = self.protocol.filter(|&p| has_ports(p))?;
        let src = Endpoint {
            ip: self.src_ip?,
            protocol,
            port: self.src_port.filter(|&p| p != 0)?,
        };
        let dst = Endpoint {
            ip: self.dst_ip?,
            protocol,
            port: self.dst_port.filter(|&p| p != 0)?,
        };
        Some((src, dst))
    }
}

/// TCP, UDP, DCCP, SCTP and UDP-Lite: the IANA protocols with ports.
const fn has_ports(protocol: u8) -> bool {
    matches!(protocol, 6 | 17 | 33 | 132 | 136)
}

/// Which rule decided an orientation (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    TcpSyn,
    TcpSynAck,
    LearntListener,
    KnownService,
    BothKnownServices,
    WellKnownPort,
    RegisteredPort,
    FanOut,
    LowerPort,
    IcmpEchoRequest,
    IcmpEchoReply,
    IcmpOther,
}

impl Reason {
    /// A bounded label for metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TcpSyn => "tcp_syn",
            Self::TcpSynAck => "tcp_syn_ack",
            Self::LearntListener => "learnt_listener",
            Self::KnownService => "known_service",
            Self::BothKnownServices => "both_known_services",
            Self::WellKnownPort => "well_known_port",
            Self::RegisteredPort => "registered_port",
            Self::FanOut => "fan_out",
            Self::LowerPort => "lower_port",
            Self::IcmpEchoRequest => "icmp_echo_request",
            Self::IcmpEchoReply => "icmp_echo_reply",
            Self::IcmpOther => "icmp_other",
        }
    }

    /// Whether the TCP flags decided, the only rules that are not symmetric.
    pub const fn is_tcp_flags(self) -> bool {
        matches!(self, Self::TcpSyn | Self::TcpSynAck)
    }
}

/// A flow record oriented as "client uses server's (protocol, `server_port`)".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Oriented {
    pub client: IpAddr,
    pub server: IpAddr,
    /// The server's port; 0 for ICMP.
    pub server_port: u16,
    pub protocol: u8,
    /// How far to trust the orientation, 0.0-1.0 (see the module table).
    pub confidence: f32,
    pub reason: Reason,
}

/// Why a record could not be oriented: an outcome to count (by [`Self::reason`]), not
/// an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unoriented {
    MissingProtocol,
    MissingAddress,
    /// A port is absent or 0. Port 0 is reserved (RFC 6335 §6); exporters report it
    /// when they could not read the transport header, as for non-first fragments.
    MissingPorts,
    /// A protocol without ports (GRE, ESP, OSPF, ...): no service to depend on.
    PortlessProtocol,
    /// An end is not one host: multicast, broadcast (255.255.255.255), unspecified
    /// (`0.0.0.0`, `::`: DHCP discovery) or link-local (169.254/16, `fe80::/10`, which
    /// names a different host on every link). No asset, no dependency.
    NotUnicast,
}

impl Unoriented {
    pub const ALL: [Self; 5] = [
        Self::MissingProtocol,
        Self::MissingAddress,
        Self::MissingPorts,
        Self::PortlessProtocol,
        Self::NotUnicast,
    ];

    /// Position in [`Self::ALL`] (for per-reason counts in an array).
    pub const fn index(self) -> usize {
        match self {
            Self::MissingProtocol => 0,
            Self::MissingAddress => 1,
            Self::MissingPorts => 2,
            Self::PortlessProtocol => 3,
            Self::NotUnicast => 4,
        }
    }

    /// A bounded label for metrics.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::MissingProtocol => "missing_protocol",
            Self::MissingAddress => "missing_address",
            Self::MissingPorts => "missing_ports",
            Self::PortlessProtocol => "portless_protocol",
            Self::NotUnicast => "not_unicast",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// Orients one record; `fan_out` is the distinct-peer evidence for its two endpoints,
/// when the caller keeps any.
pub fn orient(flow: &FlowEnds, fan_out: Option<FanOut>) -> Result<Oriented, Unoriented> {
    orient_with(flow, fan_out, Listening::default())
}

/// [`orient`] with the learnt listeners among the record's two endpoints.
pub fn orient_with(
    flow: &FlowEnds,
    fan_out: Option<FanOut>,
    listening: Listening,
) -> Result<Oriented, Unoriented> {
    let protocol = flow.protocol.ok_or(Unoriented::MissingProtocol)?;
    let (Some(src_ip), Some(dst_ip)) = (flow.src_ip, flow.dst_ip) else {
        return Err(Unoriented::MissingAddress);
    };
    if !is_one_host(src_ip) || !is_one_host(dst_ip) {
        return Err(Unoriented::NotUnicast);
    }
    if protocol == ICMP || protocol == ICMPV6 {
        return Ok(orient_icmp(src_ip, dst_ip, protocol, flow.dst_port));
    }
    if !has_ports(protocol) {
        return Err(Unoriented::PortlessProtocol);
    }
    let (src_port, dst_port) = match (flow.src_port, flow.dst_port) {
        (Some(s), Some(d)) if s != 0 && d != 0 => (s, d),
        _ => return Err(Unoriented::MissingPorts),
    };
    let src = (src_port, src_ip);
    let dst = (dst_port, dst_ip);
    let (side, confidence, reason) = by_tcp_flags(protocol, flow.tcp_flags, flow.flags_scope)
        .or_else(|| by_listening(listening))
        .unwrap_or_else(|| by_ports(protocol, src, dst, fan_out));
    let ((server_port, server), (_, client)) = match side {
        Side::Src => (src, dst),
        Side::Dst => (dst, src),
    };
    Ok(Oriented {
        client,
        server,
        server_port,
        protocol,
        confidence,
        reason,
    })
}

/// Rule a.
fn by_tcp_flags(
    protocol: u8,
    flags: Option<u16>,
    scope: FlagsScope,
) -> Option<(Side, f32, Reason)> {
    let flags = flags.filter(|_| protocol == TCP)?;
    let (syn, ack) = (flags & TCP_SYN != 0, flags & TCP_ACK != 0);
    // SYN without ACK comes from an initiator whatever else is set (a SYN scan's RST,
    // a SYN-FIN probe): every later packet of a connection carries ACK. SYN+ACK says
    // "server" only when it is exactly one SYN-ACK packet's flags: a "single packet"
    // record that also has FIN, RST, PSH or URG is an aggregate, and no evidence.
    let handshake_packet = flags & TCP_NOT_HANDSHAKE == 0;
    match (syn, ack, scope) {
        (true, false, _) => Some((Side::Dst, 0.95, Reason::TcpSyn)),
        (true, true, FlagsScope::PerPacket) if handshake_packet => {
            Some((Side::Src, 0.95, Reason::TcpSynAck))
        }
        _ => None,
    }
}

/// Rule a2: exactly one end is a learnt listener.
fn by_listening(l: Listening) -> Option<(Side, f32, Reason)> {
    match (l.src, l.dst) {
        (true, false) => Some((Side::Src, 0.8, Reason::LearntListener)),
        (false, true) => Some((Side::Dst, 0.8, Reason::LearntListener)),
        _ => None,
    }
}

/// Rules b-e, each symmetric in (src, dst): `(port, address)` per side.
fn by_ports(
    protocol: u8,
    src: (u16, IpAddr),
    dst: (u16, IpAddr),
    fan_out: Option<FanOut>,
) -> (Side, f32, Reason) {
    let (sp, dp) = (src.0, dst.0);
    // Ties break on (port, address), the same whichever record we are looking at.
    let lower = if src <= dst { Side::Src } else { Side::Dst };
    let pick = |src_wins: bool| if src_wins { Side::Src } else { Side::Dst };

    let known = |p| services::service_for(protocol, p).is_some();
    match (known(sp), known(dp)) {
        (true, true) => {
            let confidence = if sp == dp { 0.4 } else { 0.5 };
            return (lower, confidence, Reason::BothKnownServices);
        }
        (s, d) if s != d => return (pick(s), 0.85, Reason::KnownService),
        _ => {}
    }

    let well_known = |p| services::classify_port(p) == PortClass::WellKnown;
    if well_known(sp) != well_known(dp) {
        return (pick(well_known(sp)), 0.75, Reason::WellKnownPort);
    }
    // Neither port is in the table here, so "likely ephemeral" is just ">= 32768".
    let registered = |p| (1024..LINUX_EPHEMERAL_START).contains(&p);
    let ephemeral = |p| services::is_likely_ephemeral(protocol, p);
    if (registered(sp) && ephemeral(dp)) || (registered(dp) && ephemeral(sp)) {
        return (pick(registered(sp)), 0.6, Reason::RegisteredPort);
    }

    if let Some((side, confidence)) = fan_out.and_then(by_fan_out) {
        return (side, confidence, Reason::FanOut);
    }
    let confidence = if sp == dp { 0.2 } else { 0.3 };
    (lower, confidence, Reason::LowerPort)
}

/// Rule d: the busier endpoint, scored by how lopsided the counts are.
fn by_fan_out(f: FanOut) -> Option<(Side, f32)> {
    let (side, more, fewer) = match f.src_peers.cmp(&f.dst_peers) {
        std::cmp::Ordering::Greater => (Side::Src, f.src_peers, f.dst_peers),
        std::cmp::Ordering::Less => (Side::Dst, f.dst_peers, f.src_peers),
        std::cmp::Ordering::Equal => return None,
    };
    if more < MIN_FAN_OUT_PEERS {
        return None;
    }
    // An endpoint in a flow has at least its peer: 0 means "not tracked".
    let as_f32 = |n: u32| f32::from(u16::try_from(n).unwrap_or(u16::MAX));
    let ratio = as_f32(fewer.max(1)) / as_f32(more);
    Some((side, (0.35 + 0.35 * (1.0 - ratio)).min(0.7)))
}

/// The ICMP rules; `type_code` is `type << 8 | code`.
fn orient_icmp(src: IpAddr, dst: IpAddr, protocol: u8, type_code: Option<u16>) -> Oriented {
    let (request, reply) = if protocol == ICMP { (8, 0) } else { (128, 129) };
    let (client, server, confidence, reason) = match type_code.map(|tc| tc >> 8) {
        Some(t) if t == request => (src, dst, 0.9, Reason::IcmpEchoRequest),
        Some(t) if t == reply => {
            let confidence = if protocol == ICMP { 0.5 } else { 0.9 };
            (dst, src, confidence, Reason::IcmpEchoReply)
        }
        Some(_) => (src, dst, 0.2, Reason::IcmpOther),
        // No type exported: nothing says which end asked, and "the sender is the
        // client" would make A->B from one record and B->A from its reverse. Both
        // records orient the same way: the lower address is the server (a guess,
        // hence the lowest confidence).
        None => {
            let (low, high) = if src <= dst { (src, dst) } else { (dst, src) };
            (high, low, 0.1, Reason::IcmpOther)
        }
    };
    Oriented {
        client,
        server,
        server_port: 0,
        protocol,
        confidence,
        reason,
    }
}

/// Whether an address names one host wherever it is seen (see
/// [`Unoriented::NotUnicast`]).
fn is_one_host(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_multicast() || a.is_broadcast() || a.is_unspecified() || a.is_link_local())
        }
        IpAddr::V6(a) => !(a.is_multicast() || a.is_unspecified() || a.is_unicast_link_local()),
    }
}

#[cfg(test)]
mod tests;
