//! The normalized flow model every decoder produces and every later stage consumes.
//!
//! A [`FlowRecord`] holds what the exporter said, never a reinterpretation of it: bytes
//! and packets are the exported (sampled) counts and `sampling_rate` says how to scale
//! them, so a stage that wants estimates multiplies explicitly. Fields an exporter did
//! not send are `None`. The struct is plain data (`Copy`) so decoders can fill it from a
//! template record without allocating.

use std::fmt;
use std::net::IpAddr;

/// Which wire protocol a record came from (the `proto` key of the JSON output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowProtocol {
    NetflowV5,
    NetflowV9,
    Ipfix,
    SflowV5,
}

impl FlowProtocol {
    /// Every protocol, in the order summaries list them.
    pub const ALL: [Self; 4] = [Self::NetflowV5, Self::NetflowV9, Self::Ipfix, Self::SflowV5];

    /// The stable name used in JSON output and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::NetflowV5 => "netflow_v5",
            Self::NetflowV9 => "netflow_v9",
            Self::Ipfix => "ipfix",
            Self::SflowV5 => "sflow_v5",
        }
    }

    /// Index into per-protocol counter arrays.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for FlowProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An MPLS label stack as exported (IPFIX IEs 70-79, or parsed from an sFlow header),
/// top of stack first. Only the 20-bit label values are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MplsLabels {
    len: u8,
    labels: [u32; Self::MAX],
}

impl MplsLabels {
    /// IPFIX defines ten label stack positions (IEs 70..=79).
    pub const MAX: usize = 10;

    /// Sets the label at stack `position` (0 = top), growing the stack to cover it.
    /// Positions beyond [`Self::MAX`] are ignored.
    pub fn set(&mut self, position: usize, label: u32) {
        if let Some(slot) = self.labels.get_mut(position) {
            *slot = label & 0x000F_FFFF;
            let needed = u8::try_from(position + 1).unwrap_or(u8::MAX);
            self.len = self.len.max(needed);
        }
    }

    /// Appends a label below the current bottom of the stack, if there is room.
    pub fn push(&mut self, label: u32) {
        self.set(usize::from(self.len), label);
    }

    /// The labels, top of stack first.
    pub fn as_slice(&self) -> &[u32] {
        self.labels.get(..usize::from(self.len)).unwrap_or(&[])
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An RFC 6759 application id: a classification engine id followed by a selector id,
/// kept as the exported octets (at most 16; longer ids are truncated and flagged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ApplicationId {
    len: u8,
    bytes: [u8; 16],
}

impl ApplicationId {
    /// Builds an id from its exported octets; `None` when empty.
    pub fn from_octets(octets: &[u8]) -> Option<Self> {
        if octets.is_empty() {
            return None;
        }
        let mut id = Self::default();
        // A byte loop: ids are a few octets, where a variable-length copy_from_slice
        // is a call to memcpy.
        let mut n = 0u8;
        for (dst, src) in id.bytes.iter_mut().zip(octets) {
            *dst = *src;
            n += 1;
        }
        id.len = n;
        Some(id)
    }

    /// The classification engine id (first octet, RFC 6759 §4).
    pub fn engine(&self) -> u8 {
        self.bytes[0]
    }

    /// The selector id octets after the engine id.
    pub fn selector(&self) -> &[u8] {
        self.bytes.get(1..usize::from(self.len)).unwrap_or(&[])
    }
}

/// The encapsulation a sampled header was unwrapped from, when the 5-tuple is the inner
/// one (sFlow raw headers carrying VXLAN or GRE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tunnel {
    /// VXLAN (RFC 7348) with its 24-bit network identifier.
    Vxlan { vni: u32 },
    /// GRE (RFC 2784/2890) with its key when present (NVGRE puts the VSID there).
    Gre { key: Option<u32> },
}

/// One normalized flow record. See the module docs for the "as exported" rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowRecord {
    pub proto: FlowProtocol,
    /// The exporter: the UDP source of NetFlow/IPFIX, the agent address of sFlow.
    pub exporter_ip: IpAddr,
    /// `NetFlow` v9 source id, IPFIX observation domain, sFlow sub-agent id (v5: engine
    /// type << 8 | engine id).
    pub observation_domain: u32,
    pub src_ip: Option<IpAddr>,
    pub dst_ip: Option<IpAddr>,
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// IP protocol number (TCP 6, UDP 17, ICMP 1, `ICMPv6` 58).
    pub protocol: Option<u8>,
    pub bytes: Option<u64>,
    pub packets: Option<u64>,
    pub tcp_flags: Option<u16>,
    pub input_interface: Option<u32>,
    pub output_interface: Option<u32>,
    pub src_as: Option<u32>,
    pub dst_as: Option<u32>,
    /// 1:N sampling rate that applies to `bytes`/`packets`; 1 when unsampled, `None`
    /// when the exporter announced sampling whose rate is not known (counted as
    /// `sampling_rate_unknown`).
    pub sampling_rate: Option<u32>,
    /// The 1:N sampling FlowLens itself applied before decoding (the XDP program or
    /// userspace, under pressure): already part of `sampling_rate`, kept apart because
    /// it also scales the number of records (one kept datagram stands for N), where
    /// the exporter's packet sampling does not. 1 normally.
    pub presample_rate: u32,
    /// Flow start and end, milliseconds since the Unix epoch.
    pub flow_start_ms: Option<u64>,
    pub flow_end_ms: Option<u64>,
    /// The export (or, for sFlow, receive) time of the datagram, ms since the epoch.
    pub export_time_ms: u64,
    /// 4 or 6.
    pub ip_version: Option<u8>,
    pub src_vlan: Option<u16>,
    pub dst_vlan: Option<u16>,
    pub next_hop: Option<IpAddr>,
    pub bgp_next_hop: Option<IpAddr>,
    pub src_mask: Option<u8>,
    pub dst_mask: Option<u8>,
    pub tos: Option<u8>,
    /// 0 ingress, 1 egress (IPFIX flowDirection, IE 61).
    pub direction: Option<u8>,
    pub mpls: MplsLabels,
    pub application_id: Option<ApplicationId>,
    pub tunnel: Option<Tunnel>,
    /// Cisco NSEL firewall event (IE 233 or 40005) when exported.
    pub firewall_event: Option<u8>,
}

impl FlowRecord {
    /// An empty record for `proto` from `exporter_ip`: every optional field `None`.
    pub const fn empty(proto: FlowProtocol, exporter_ip: IpAddr, export_time_ms: u64) -> Self {
        Self {
            proto,
            exporter_ip,
            observation_domain: 0,
            src_ip: None,
            dst_ip: None,
            src_port: None,
            dst_port: None,
            protocol: None,
            bytes: None,
            packets: None,
            tcp_flags: None,
            input_interface: None,
            output_interface: None,
            src_as: None,
            dst_as: None,
            sampling_rate: Some(1),
            presample_rate: 1,
            flow_start_ms: None,
            flow_end_ms: None,
            export_time_ms,
            ip_version: None,
            src_vlan: None,
            dst_vlan: None,
            next_hop: None,
            bgp_next_hop: None,
            src_mask: None,
            dst_mask: None,
            tos: None,
            direction: None,
            mpls: MplsLabels {
                len: 0,
                labels: [0; MplsLabels::MAX],
            },
            application_id: None,
            tunnel: None,
            firewall_event: None,
        }
    }
}
