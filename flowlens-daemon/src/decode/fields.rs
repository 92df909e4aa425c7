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
}

impl Target {
    /// A small dense id, used to keep only the first occurrence of a repeated field.
    /// MPLS positions each get their own slot (`arg` is the stack position).
    pub(crate) fn slot(self, arg: u8) -> usize {
        match self {
            Self::Mpls => 64 + usize::from(arg),
            other => other as usize,
        }
    }
}

/// Number of distinct [`Target::slot`] values.
pub(crate) const SLOTS: usize = 64 + 10;

/// The target of field `ie` (enterprise bit already removed) from enterprise `pen`
/// (0 for IANA / v9). `None` means "skip by length".
pub(crate) fn target(dialect: Dialect, pen: u32, ie: u16) -> Option<(Target, u8)> {
    use Target as T;
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

/// Values that do not go straight into the record: timestamps in their many forms,
/// fallbacks, sampling, NSEL counters. Resolved by the template decoder per record.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Extra {
    pub(crate) first_uptime: Option<u32>,
    pub(crate) last_uptime: Option<u32>,
    pub(crate) start_ms: Option<u64>,
    pub(crate) end_ms: Option<u64>,
    pub(crate) start_delta_us: Option<u64>,
    pub(crate) end_delta_us: Option<u64>,
    pub(crate) system_init_ms: Option<u64>,
    pub(crate) observation_ms: Option<u64>,
    pub(crate) octet_total: Option<u64>,
    pub(crate) packet_total: Option<u64>,
    pub(crate) ingress_physical: Option<u32>,
    pub(crate) egress_physical: Option<u32>,
    pub(crate) dot1q_vlan: Option<u16>,
    pub(crate) sampler_id: Option<u64>,
    pub(crate) sampling_interval: Option<u64>,
    pub(crate) packet_interval: Option<u64>,
    pub(crate) packet_space: Option<u64>,
    pub(crate) sampling_size: Option<u64>,
    pub(crate) sampling_population: Option<u64>,
    pub(crate) icmp_type_code: Option<u16>,
    pub(crate) icmp_type: Option<u8>,
    pub(crate) icmp_code: Option<u8>,
    pub(crate) initiator_octets: Option<u64>,
    pub(crate) responder_octets: Option<u64>,
    pub(crate) initiator_packets: Option<u64>,
    pub(crate) responder_packets: Option<u64>,
}

impl Extra {
    /// The 1:N rate this record (or options record) announces, if any: RFC 7011 IE 34
    /// or v9 `FLOW_SAMPLER_RANDOM_INTERVAL` (50); RFC 5477 systematic count-based
    /// (interval, space) -> (interval + space) / interval; random n-out-of-N
    /// (size, population) -> population / size.
    pub(crate) fn sampling_rate(&self) -> Option<u32> {
        let sat = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        if let Some(n) = self.sampling_interval.filter(|&n| n > 0) {
            return Some(sat(n));
        }
        if let (Some(i), Some(s)) = (self.packet_interval, self.packet_space)
            && i > 0
        {
            return Some(sat(i.saturating_add(s) / i));
        }
        if let (Some(n), Some(pop)) = (self.sampling_size, self.sampling_population)
            && n > 0
        {
            return Some(sat(pop / n));
        }
        None
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

/// Stores field value `v` (exactly the field's bytes) for `target`. Addresses of the
/// wrong length are ignored rather than guessed at.
#[inline]
pub(crate) fn apply(target: Target, arg: u8, v: &[u8], rec: &mut FlowRecord, x: &mut Extra) {
    use Target as T;
    match target {
        T::OctetDelta => rec.bytes = Some(be_uint(v)),
        T::PacketDelta => rec.packets = Some(be_uint(v)),
        T::OctetTotal => x.octet_total = Some(be_uint(v)),
        T::PacketTotal => x.packet_total = Some(be_uint(v)),
        T::Protocol => rec.protocol = Some(sat_u8(be_uint(v))),
        T::Tos => rec.tos = Some(sat_u8(be_uint(v))),
        T::TcpFlags => rec.tcp_flags = Some(sat_u16(be_uint(v))),
        T::SrcPort => rec.src_port = Some(sat_u16(be_uint(v))),
        T::DstPort => rec.dst_port = Some(sat_u16(be_uint(v))),
        T::SrcV4 => rec.src_ip = v4(v).or(rec.src_ip),
        T::DstV4 => rec.dst_ip = v4(v).or(rec.dst_ip),
        T::SrcV6 => rec.src_ip = v6(v).or(rec.src_ip),
        T::DstV6 => rec.dst_ip = v6(v).or(rec.dst_ip),
        T::SrcMask => rec.src_mask = Some(sat_u8(be_uint(v))),
        T::DstMask => rec.dst_mask = Some(sat_u8(be_uint(v))),
        T::Input => rec.input_interface = Some(sat_u32(be_uint(v))),
        T::Output => rec.output_interface = Some(sat_u32(be_uint(v))),
        T::IngressPhysical => x.ingress_physical = Some(sat_u32(be_uint(v))),
        T::EgressPhysical => x.egress_physical = Some(sat_u32(be_uint(v))),
        T::NextHopV4 => rec.next_hop = v4(v).or(rec.next_hop),
        T::NextHopV6 => rec.next_hop = v6(v).or(rec.next_hop),
        T::BgpNextHopV4 => rec.bgp_next_hop = v4(v).or(rec.bgp_next_hop),
        T::BgpNextHopV6 => rec.bgp_next_hop = v6(v).or(rec.bgp_next_hop),
        T::SrcAs => rec.src_as = Some(sat_u32(be_uint(v))),
        T::DstAs => rec.dst_as = Some(sat_u32(be_uint(v))),
        T::FirstUptime => x.first_uptime = Some(sat_u32(be_uint(v))),
        T::LastUptime => x.last_uptime = Some(sat_u32(be_uint(v))),
        T::StartSeconds => x.start_ms = Some(be_uint(v).saturating_mul(1000)),
        T::EndSeconds => x.end_ms = Some(be_uint(v).saturating_mul(1000)),
        T::StartMillis => x.start_ms = Some(be_uint(v)),
        T::EndMillis => x.end_ms = Some(be_uint(v)),
        T::StartMicros | T::StartNanos => x.start_ms = Some(ntp_to_unix_ms(be_uint(v))),
        T::EndMicros | T::EndNanos => x.end_ms = Some(ntp_to_unix_ms(be_uint(v))),
        T::StartDeltaMicros => x.start_delta_us = Some(be_uint(v)),
        T::EndDeltaMicros => x.end_delta_us = Some(be_uint(v)),
        T::SystemInitMillis => x.system_init_ms = Some(be_uint(v)),
        T::ObservationMillis => x.observation_ms = Some(be_uint(v)),
        T::IpVersion => rec.ip_version = Some(sat_u8(be_uint(v))),
        T::Direction => rec.direction = Some(sat_u8(be_uint(v))),
        T::SrcVlan => rec.src_vlan = Some(sat_u16(be_uint(v))),
        T::DstVlan => rec.dst_vlan = Some(sat_u16(be_uint(v))),
        T::Dot1qVlan => x.dot1q_vlan = Some(sat_u16(be_uint(v))),
        // RFC 7011 IE 70: a 3-octet label stack entry; the label is the top 20 bits.
        T::Mpls => rec.mpls.set(usize::from(arg), sat_u32(be_uint(v) >> 4)),
        T::ApplicationId => rec.application_id = ApplicationId::from_octets(v),
        T::SamplerId => x.sampler_id = Some(be_uint(v)),
        T::SamplingInterval => x.sampling_interval = Some(be_uint(v)),
        T::PacketInterval => x.packet_interval = Some(be_uint(v)),
        T::PacketSpace => x.packet_space = Some(be_uint(v)),
        T::SamplingSize => x.sampling_size = Some(be_uint(v)),
        T::SamplingPopulation => x.sampling_population = Some(be_uint(v)),
        T::IcmpTypeCode => x.icmp_type_code = Some(sat_u16(be_uint(v))),
        T::IcmpType => x.icmp_type = Some(sat_u8(be_uint(v))),
        T::IcmpCode => x.icmp_code = Some(sat_u8(be_uint(v))),
        T::FirewallEvent => rec.firewall_event = Some(sat_u8(be_uint(v))),
        T::InitiatorOctets => x.initiator_octets = Some(be_uint(v)),
        T::ResponderOctets => x.responder_octets = Some(be_uint(v)),
        T::InitiatorPackets => x.initiator_packets = Some(be_uint(v)),
        T::ResponderPackets => x.responder_packets = Some(be_uint(v)),
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
        assert_eq!(target(Dialect::Ipfix, 0, 40005), None);
        assert_eq!(
            target(Dialect::V9, 0, 40005),
            Some((Target::FirewallEvent, 0))
        );
        assert_eq!(target(Dialect::Ipfix, 0, 72), Some((Target::Mpls, 2)));
    }
}
