//! sFlow v5 decoder tests, through the public [`Decoder`] API, on datagrams built by
//! [`super::encoder`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{InterfaceCounters, Tagged};
use crate::decode::reader::Reader;
use crate::decode::sampling::SamplingSettings;
use crate::decode::{Datagram, DecodeError, Decoder, DecoderConfig, ExporterCounters};
use crate::flow::{FlowProtocol, FlowRecord, Tunnel};
use crate::testing::sflow::{
    AsPathSegment, CounterRecordSpec, CountersSampleSpec, DatagramSpec, ETHERTYPE_IPV4,
    ETHERTYPE_IPV6, ETHERTYPE_MPLS, FlowRecordSpec, FlowSampleSpec, Interface, SampleSpec,
    TPID_8021AD, TPID_8021Q, encode_datagram, encode_if_counters, ethernet, gre, icmp, ipv4,
    ipv4_with, ipv6, ipv6_extension, ipv6_fragment, mpls, put_u32, tcp, udp, vxlan,
};

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 250));
const AGENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const AGENT6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
const RECEIVED_AT_MS: u64 = 1_700_000_000_123;

const SRC4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DST4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const INNER_SRC4: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 1);
const INNER_DST4: Ipv4Addr = Ipv4Addr::new(172, 16, 0, 2);
const SRC6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1);
const DST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 2, 0, 0, 0, 0, 2);

const SYN_ACK: u8 = 0x12;

/// Offsets in a datagram from an `IPv4` agent: the header is 28 bytes, the first sample's
/// `data_format` and length follow, then a flow sample's 32 bytes of fields and its
/// record count, then the first record's `data_format` and length.
const FIRST_SAMPLE: usize = 28;
const FIRST_SAMPLE_BODY: usize = FIRST_SAMPLE + 8;
const FIRST_RECORD: usize = FIRST_SAMPLE_BODY + 32;
const FIRST_RECORD_BODY: usize = FIRST_RECORD + 8;

struct Decoded {
    result: Result<usize, DecodeError>,
    records: Vec<FlowRecord>,
    counters: ExporterCounters,
}

fn decode_with(
    decoder: &mut Decoder,
    payload: &[u8],
) -> (Result<usize, DecodeError>, Vec<FlowRecord>) {
    let mut out = Vec::new();
    let datagram = Datagram {
        exporter: EXPORTER,
        received_at_ms: RECEIVED_AT_MS,
        payload,
    };
    let result = decoder.decode(&datagram, &mut out);
    (result, out)
}

fn decode(payload: &[u8]) -> Decoded {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let (result, records) = decode_with(&mut decoder, payload);
    let counters = exporter_counters(&decoder);
    Decoded {
        result,
        records,
        counters,
    }
}

fn exporter_counters(decoder: &Decoder) -> ExporterCounters {
    let all = decoder.counters();
    assert_eq!(all.len(), 1, "one exporter");
    all.into_iter()
        .next()
        .map(|(ip, c)| {
            assert_eq!(ip, EXPORTER);
            c
        })
        .unwrap()
}

/// Decodes a datagram that must decode, returning its records and counters.
fn decode_ok(spec: &DatagramSpec) -> (Vec<FlowRecord>, ExporterCounters) {
    let d = decode(&encode_datagram(spec));
    assert_eq!(d.result, Ok(d.records.len()), "datagram decodes");
    assert_eq!(d.counters.decoded_packets, 1);
    assert_eq!(
        d.counters.records_for(FlowProtocol::SflowV5),
        d.records.len() as u64
    );
    (d.records, d.counters)
}

/// Decodes a datagram that must fail, checking nothing was emitted or committed.
fn decode_err(payload: &[u8]) -> DecodeError {
    let d = decode(payload);
    let err = d.result.expect_err("datagram is malformed");
    assert!(d.records.is_empty());
    assert_eq!(d.counters.malformed_packets, 1);
    assert_eq!(d.counters.malformed(err.reason()), 1);
    assert_eq!(d.counters.sflow_counter_samples, 0);
    assert_eq!(d.counters.sflow_unknown_records, 0);
    assert_eq!(d.counters.sflow_unparsed_headers, 0);
    err
}

/// One flow sample from `AGENT` with `records`.
fn one_flow(records: Vec<FlowRecordSpec>) -> DatagramSpec {
    DatagramSpec::new(AGENT, vec![SampleSpec::Flow(FlowSampleSpec::new(records))])
}

/// Decodes `one_flow(records)` and returns its single record and the counters.
fn single(records: Vec<FlowRecordSpec>) -> (FlowRecord, ExporterCounters) {
    let (recs, counters) = decode_ok(&one_flow(records));
    assert_eq!(recs.len(), 1);
    (recs[0], counters)
}

/// The record `FlowSampleSpec::new` yields from `AGENT` before its flow records count.
fn base_record(bytes: u32) -> FlowRecord {
    let mut rec = FlowRecord::empty(FlowProtocol::SflowV5, AGENT, RECEIVED_AT_MS);
    rec.observation_domain = 0;
    rec.packets = Some(1);
    rec.bytes = Some(u64::from(bytes));
    rec.sampling_rate = Some(1000);
    rec.input_interface = Some(1);
    rec.output_interface = Some(2);
    rec
}

fn set_tuple(
    rec: &mut FlowRecord,
    src: IpAddr,
    dst: IpAddr,
    protocol: u8,
    ports: Option<(u16, u16)>,
) {
    rec.ip_version = Some(if src.is_ipv4() { 4 } else { 6 });
    rec.src_ip = Some(src);
    rec.dst_ip = Some(dst);
    rec.protocol = Some(protocol);
    rec.src_port = ports.map(|p| p.0);
    rec.dst_port = ports.map(|p| p.1);
    rec.tos = Some(0);
}

fn header_len(spec: &FlowRecordSpec) -> u32 {
    match spec {
        FlowRecordSpec::Header { frame_length, .. } => *frame_length,
        _ => unreachable!(),
    }
}

#[test]
fn ipv4_agent_flow_sample_ethernet_vlan_ipv4_tcp() {
    let frame = ethernet(
        &[(TPID_8021Q, 0x2000 | 0x2A)],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 6, 0xB8, &tcp(49152, 443, SYN_ACK)),
    );
    let header = FlowRecordSpec::ethernet_header(frame);
    let mut spec = one_flow(vec![header.clone()]);
    spec.sub_agent_id = 7;
    let (recs, counters) = decode_ok(&spec);

    let mut want = base_record(header_len(&header));
    want.observation_domain = 7;
    set_tuple(&mut want, SRC4.into(), DST4.into(), 6, Some((49152, 443)));
    want.tos = Some(0xB8);
    want.tcp_flags = Some(u16::from(SYN_ACK));
    want.src_vlan = Some(42);
    assert_eq!(recs, vec![want]);
    assert_eq!(counters.sflow_unparsed_headers, 0);
    assert_eq!(counters.sflow_unknown_records, 0);
    assert_eq!(
        counters.packets_by_protocol[FlowProtocol::SflowV5.index()],
        1
    );
}

#[test]
fn ipv6_agent_expanded_flow_sample_ipv6_udp() {
    let frame = ethernet(
        &[],
        ETHERTYPE_IPV6,
        &ipv6(SRC6, DST6, 17, 0x28, &udp(5353, 53, &[0; 12])),
    );
    let header = FlowRecordSpec::ethernet_header(frame);
    let mut sample = FlowSampleSpec::new(vec![header.clone()]);
    sample.expanded = true;
    // Expanded samples exist for ifIndex values beyond the compact 30 bits.
    sample.input = Interface::Index(0x4000_0001);
    sample.output = Interface::Index(0xFFFF_FFF0);
    sample.sampling_rate = 4096;
    let mut spec = DatagramSpec::new(AGENT6, vec![SampleSpec::Flow(sample)]);
    spec.sub_agent_id = 3;
    let (recs, _) = decode_ok(&spec);

    let mut want = base_record(header_len(&header));
    want.exporter_ip = AGENT6;
    want.observation_domain = 3;
    want.sampling_rate = Some(4096);
    want.input_interface = Some(0x4000_0001);
    want.output_interface = Some(0xFFFF_FFF0);
    set_tuple(&mut want, SRC6.into(), DST6.into(), 17, Some((5353, 53)));
    want.tos = Some(0x28);
    assert_eq!(recs, vec![want]);
}

#[test]
fn header_protocols_ipv4_and_ipv6_start_at_layer_3() {
    let v4 = ipv4(SRC4, DST4, 17, 0, &udp(1, 2, &[]));
    let v6 = ipv6(SRC6, DST6, 6, 0, &tcp(3, 4, 0x02));
    let (rec4, _) = single(vec![FlowRecordSpec::Header {
        protocol: 11,
        frame_length: 28,
        stripped: 0,
        header: v4,
    }]);
    assert_eq!(
        (rec4.src_ip, rec4.dst_port, rec4.bytes),
        (Some(SRC4.into()), Some(2), Some(28))
    );
    let (rec6, counters) = single(vec![FlowRecordSpec::Header {
        protocol: 12,
        frame_length: 60,
        stripped: 0,
        header: v6,
    }]);
    assert_eq!(
        (rec6.dst_ip, rec6.src_port, rec6.tcp_flags),
        (Some(DST6.into()), Some(3), Some(2))
    );
    assert_eq!(counters.sflow_unparsed_headers, 0);
}

#[test]
fn icmp_type_and_code_go_into_dst_port() {
    let v4 = ethernet(&[], ETHERTYPE_IPV4, &ipv4(SRC4, DST4, 1, 0, &icmp(8, 0)));
    let (rec, _) = single(vec![FlowRecordSpec::ethernet_header(v4)]);
    assert_eq!(
        (rec.protocol, rec.src_port, rec.dst_port),
        (Some(1), Some(0), Some(8 * 256))
    );

    let v6 = ethernet(&[], ETHERTYPE_IPV6, &ipv6(SRC6, DST6, 58, 0, &icmp(1, 4)));
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(v6)]);
    assert_eq!(
        (rec.protocol, rec.src_port, rec.dst_port),
        (Some(58), Some(0), Some(260))
    );
    assert_eq!(counters.sflow_unparsed_headers, 0);
}

#[test]
fn qinq_outer_vlan_is_the_source_vlan() {
    let frame = ethernet(
        &[(TPID_8021AD, 100), (TPID_8021Q, 200)],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 6, 0, &tcp(1000, 22, 0x10)),
    );
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(frame)]);
    assert_eq!(rec.src_vlan, Some(100));
    assert_eq!((rec.src_port, rec.dst_port), (Some(1000), Some(22)));
    assert_eq!(counters.sflow_unparsed_headers, 0);

    // A priority tag (VID 0) names no VLAN.
    let tagged = ethernet(
        &[(TPID_8021Q, 0xE000)],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 6, 0, &tcp(1, 2, 0)),
    );
    let (rec, _) = single(vec![FlowRecordSpec::ethernet_header(tagged)]);
    assert_eq!(rec.src_vlan, None);
}

#[test]
fn ipv4_options_and_fragments() {
    // Options (IHL 7) are skipped to reach TCP.
    let with_options = ipv4_with(
        SRC4,
        DST4,
        6,
        0,
        &[1, 1, 1, 0, 0x94, 4, 0, 0],
        0x4000,
        &tcp(7, 8, 0x18),
    );
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(ethernet(
        &[],
        ETHERTYPE_IPV4,
        &with_options,
    ))]);
    assert_eq!(
        (rec.src_port, rec.dst_port, rec.tcp_flags),
        (Some(7), Some(8), Some(0x18))
    );
    assert_eq!(counters.sflow_unparsed_headers, 0);

    // A first fragment (MF set, offset 0) carries the ports.
    let first = ipv4_with(SRC4, DST4, 17, 0, &[], 0x2000, &udp(9, 10, &[0; 8]));
    let (rec, _) = single(vec![FlowRecordSpec::ethernet_header(ethernet(
        &[],
        ETHERTYPE_IPV4,
        &first,
    ))]);
    assert_eq!((rec.src_port, rec.dst_port), (Some(9), Some(10)));

    // A later fragment has no transport header: what looks like ports is payload.
    let later = ipv4_with(SRC4, DST4, 17, 0, &[], 185, &udp(9, 10, &[0; 8]));
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(ethernet(
        &[],
        ETHERTYPE_IPV4,
        &later,
    ))]);
    assert_eq!(
        (rec.protocol, rec.src_port, rec.dst_port),
        (Some(17), None, None)
    );
    assert_eq!(
        counters.sflow_unparsed_headers, 0,
        "a non-first fragment is fully parsed"
    );
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    // Hop-by-hop (16 bytes) -> destination options (8) -> first fragment -> TCP.
    let chain = ipv6_extension(
        60,
        1,
        &ipv6_extension(44, 0, &ipv6_fragment(6, 0, true, &tcp(80, 8080, 0x11))),
    );
    let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(SRC6, DST6, 0, 0, &chain));
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(frame)]);
    assert_eq!(
        (rec.protocol, rec.src_port, rec.dst_port, rec.tcp_flags),
        (Some(6), Some(80), Some(8080), Some(0x11))
    );
    assert_eq!(counters.sflow_unparsed_headers, 0);

    let later = ipv6_fragment(17, 100, false, &udp(1, 2, &[]));
    let frame = ethernet(&[], ETHERTYPE_IPV6, &ipv6(SRC6, DST6, 44, 0, &later));
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(frame)]);
    assert_eq!(
        (rec.protocol, rec.src_port, rec.dst_port),
        (Some(17), None, None)
    );
    assert_eq!(counters.sflow_unparsed_headers, 0);
}

#[test]
fn sampled_ipv4_and_ipv6_records_without_a_header() {
    let (rec, counters) = single(vec![FlowRecordSpec::Ipv4 {
        length: 1500,
        protocol: 6,
        src: SRC4,
        dst: DST4,
        src_port: 1234,
        dst_port: 80,
        tcp_flags: 0x19,
        tos: 0x20,
    }]);
    let mut want = base_record(1500);
    set_tuple(&mut want, SRC4.into(), DST4.into(), 6, Some((1234, 80)));
    want.tcp_flags = Some(0x19);
    want.tos = Some(0x20);
    assert_eq!(rec, want);
    assert_eq!(counters.sflow_unparsed_headers, 0);

    let (rec, _) = single(vec![FlowRecordSpec::Ipv6 {
        length: 200,
        protocol: 17,
        src: SRC6,
        dst: DST6,
        src_port: 53,
        dst_port: 40000,
        tcp_flags: 0,
        priority: 3,
    }]);
    let mut want = base_record(200);
    set_tuple(&mut want, SRC6.into(), DST6.into(), 17, Some((53, 40000)));
    want.tcp_flags = Some(0);
    want.tos = Some(3);
    assert_eq!(rec, want);
}

#[test]
fn sampled_header_wins_over_sampled_ipv4_record_in_any_order() {
    let header = FlowRecordSpec::ethernet_header(ethernet(
        &[],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 6, 0, &tcp(1, 2, 0)),
    ));
    let sampled = FlowRecordSpec::Ipv4 {
        length: 40,
        protocol: 17,
        src: INNER_SRC4,
        dst: INNER_DST4,
        src_port: 5,
        dst_port: 6,
        tcp_flags: 0,
        tos: 0,
    };
    for records in [
        vec![header.clone(), sampled.clone()],
        vec![sampled, header.clone()],
    ] {
        let (rec, _) = single(records);
        assert_eq!(
            (rec.src_ip, rec.protocol, rec.dst_port),
            (Some(SRC4.into()), Some(6), Some(2))
        );
        assert_eq!(rec.bytes, Some(u64::from(header_len(&header))));
    }
}

#[test]
fn sampled_ethernet_length_when_nothing_else_says() {
    let (rec, counters) = single(vec![FlowRecordSpec::Ethernet {
        length: 64,
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        ethertype: 0x0806,
    }]);
    assert_eq!(rec, base_record(64));
    assert_eq!(counters.sflow_unknown_records, 0);
}

#[test]
fn extended_switch_router_and_gateway() {
    let header = FlowRecordSpec::ethernet_header(ethernet(
        &[(TPID_8021Q, 5)],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 6, 0, &tcp(1, 2, 0)),
    ));
    let next_hop = IpAddr::V4(Ipv4Addr::new(10, 255, 0, 1));
    let bgp_next_hop = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1));
    let (rec, counters) = single(vec![
        header.clone(),
        FlowRecordSpec::Switch {
            src_vlan: 10,
            src_priority: 0,
            dst_vlan: 20,
            dst_priority: 3,
        },
        FlowRecordSpec::Router {
            next_hop: Some(next_hop),
            src_mask: 24,
            dst_mask: 16,
        },
        FlowRecordSpec::Gateway {
            next_hop: Some(bgp_next_hop),
            router_as: 64500,
            src_as: 64501,
            src_peer_as: 64502,
            as_path: vec![
                AsPathSegment {
                    segment_type: 2,
                    numbers: vec![64510, 64511],
                },
                AsPathSegment {
                    segment_type: 1,
                    numbers: vec![4_200_000_000, 64520],
                },
            ],
            communities: vec![0xFDE8_0001, 0xFDE8_0002],
            local_pref: 100,
        },
    ]);
    let mut want = base_record(header_len(&header));
    set_tuple(&mut want, SRC4.into(), DST4.into(), 6, Some((1, 2)));
    want.tcp_flags = Some(0);
    // The switch's own view wins over the header tag.
    want.src_vlan = Some(10);
    want.dst_vlan = Some(20);
    want.next_hop = Some(next_hop);
    want.src_mask = Some(24);
    want.dst_mask = Some(16);
    want.bgp_next_hop = Some(bgp_next_hop);
    want.src_as = Some(64501);
    want.dst_as = Some(64520);
    assert_eq!(rec, want);
    assert_eq!(counters.sflow_unknown_records, 0);
}

#[test]
fn extended_gateway_empty_path_is_the_routers_own_as() {
    let (rec, _) = single(vec![FlowRecordSpec::Gateway {
        next_hop: None,
        router_as: 65000,
        src_as: 65001,
        src_peer_as: 0,
        as_path: vec![],
        communities: vec![],
        local_pref: 0,
    }]);
    assert_eq!(
        (rec.src_as, rec.dst_as, rec.bgp_next_hop),
        (Some(65001), Some(65000), None)
    );
}

#[test]
fn extended_switch_unknown_vlans_fall_back_to_the_header_tag() {
    let header = FlowRecordSpec::ethernet_header(ethernet(
        &[(TPID_8021Q, 5)],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 6, 0, &tcp(1, 2, 0)),
    ));
    let (rec, _) = single(vec![
        FlowRecordSpec::Switch {
            src_vlan: u32::MAX,
            src_priority: 0,
            dst_vlan: 0,
            dst_priority: 0,
        },
        header,
    ]);
    assert_eq!((rec.src_vlan, rec.dst_vlan), (Some(5), None));
}

#[test]
fn interface_encodings() {
    let cases = [
        (false, Interface::Index(7), Some(7)),
        (false, Interface::Index(0), None),
        (false, Interface::Internal, None),
        (false, Interface::Discarded(258), None),
        (false, Interface::Multiple(3), None),
        (true, Interface::Index(7), Some(7)),
        (true, Interface::Internal, None),
        (true, Interface::Index(0x3FFF_FFFF), None),
        (true, Interface::Discarded(1), None),
        (true, Interface::Multiple(0), None),
    ];
    for (expanded, interface, want) in cases {
        let mut sample = FlowSampleSpec::new(vec![]);
        sample.expanded = expanded;
        sample.input = interface;
        sample.output = interface;
        let (recs, _) = decode_ok(&DatagramSpec::new(AGENT, vec![SampleSpec::Flow(sample)]));
        assert_eq!(
            (recs[0].input_interface, recs[0].output_interface),
            (want, want),
            "{interface:?} expanded={expanded}"
        );
    }
}

#[test]
fn sampling_rate_goes_through_the_exporter_settings() {
    let mut sample = FlowSampleSpec::new(vec![]);
    sample.sampling_rate = 0;
    let payload = encode_datagram(&DatagramSpec::new(
        AGENT,
        vec![SampleSpec::Flow(sample.clone())],
    ));
    let (_, recs) = decode_with(&mut Decoder::new(DecoderConfig::default()), &payload);
    assert_eq!(recs[0].sampling_rate, Some(1));

    // Settings are keyed by the UDP source, not the agent address.
    let settings = SamplingSettings {
        default_rate: Some(64),
        override_rate: None,
    };
    let config = DecoderConfig {
        sampling: HashMap::from([(EXPORTER, settings)]),
        ..DecoderConfig::default()
    };
    let (_, recs) = decode_with(&mut Decoder::new(config), &payload);
    assert_eq!(recs[0].sampling_rate, Some(64));

    let settings = SamplingSettings {
        default_rate: None,
        override_rate: Some(10),
    };
    let config = DecoderConfig {
        sampling: HashMap::from([(EXPORTER, settings)]),
        ..DecoderConfig::default()
    };
    sample.sampling_rate = 512;
    let payload = encode_datagram(&DatagramSpec::new(AGENT, vec![SampleSpec::Flow(sample)]));
    let (_, recs) = decode_with(&mut Decoder::new(config), &payload);
    assert_eq!(recs[0].sampling_rate, Some(10));
}

fn interface_counters() -> InterfaceCounters {
    InterfaceCounters {
        if_index: 3,
        if_type: 6,
        if_speed: 100_000_000_000,
        if_direction: 1,
        if_status: 3,
        if_in_octets: 0x0123_4567_89AB_CDEF,
        if_in_ucast_pkts: 10,
        if_in_multicast_pkts: 11,
        if_in_broadcast_pkts: 12,
        if_in_discards: 13,
        if_in_errors: 14,
        if_in_unknown_protos: 15,
        if_out_octets: 1 << 40,
        if_out_ucast_pkts: 20,
        if_out_multicast_pkts: 21,
        if_out_broadcast_pkts: 22,
        if_out_discards: 23,
        if_out_errors: 24,
        if_promiscuous_mode: 0,
    }
}

fn counters_sample(expanded: bool) -> SampleSpec {
    SampleSpec::Counters(CountersSampleSpec {
        expanded,
        sequence: 9,
        source_index: 3,
        records: vec![
            CounterRecordSpec::Interface(interface_counters()),
            // Ethernet interface counters (0:2): known, not decoded, not "unknown".
            CounterRecordSpec::Raw {
                format: 2,
                data: vec![0; 52],
            },
        ],
    })
}

#[test]
fn interface_counters_parse_all_88_bytes() {
    let mut bytes = Vec::new();
    put_u32(&mut bytes, 1);
    put_u32(&mut bytes, 88);
    bytes.extend_from_slice(&encode_if_counters(&interface_counters()));
    let tagged = Tagged::read(&mut Reader::new(&bytes)).unwrap();
    assert_eq!(InterfaceCounters::parse(tagged), Ok(interface_counters()));
}

#[test]
fn counter_samples_are_counted_not_turned_into_flows() {
    let header = FlowRecordSpec::ethernet_header(ethernet(
        &[],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 6, 0, &tcp(1, 2, 0)),
    ));
    let spec = DatagramSpec::new(
        AGENT,
        vec![
            counters_sample(false),
            SampleSpec::Flow(FlowSampleSpec::new(vec![header])),
            counters_sample(true),
        ],
    );
    let (recs, counters) = decode_ok(&spec);
    assert_eq!(recs.len(), 1);
    assert_eq!(counters.sflow_counter_samples, 2);
    assert_eq!(counters.sflow_unknown_records, 0);
}

#[test]
fn unknown_samples_and_records_are_skipped_and_counted() {
    let header = FlowRecordSpec::ethernet_header(ethernet(
        &[],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 17, 0, &udp(1, 2, &[])),
    ));
    let spec = DatagramSpec::new(
        AGENT,
        vec![
            // An enterprise sample whose content would be nonsense as a flow sample.
            SampleSpec::Raw {
                format: 4300 << 12 | 1,
                data: vec![0xFF; 13],
            },
            // A discarded-packet sample (sflow_drops, 0:5).
            SampleSpec::Raw {
                format: 5,
                data: vec![0; 8],
            },
            SampleSpec::Flow(FlowSampleSpec::new(vec![
                // Extended user (0:1004), an enterprise record, and a future format.
                FlowRecordSpec::Raw {
                    format: 1004,
                    data: vec![0; 12],
                },
                FlowRecordSpec::Raw {
                    format: 4413 << 12 | 1,
                    data: vec![1, 2, 3],
                },
                header,
                FlowRecordSpec::Raw {
                    format: 4095,
                    data: vec![],
                },
            ])),
        ],
    );
    let (recs, counters) = decode_ok(&spec);
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].protocol, recs[0].dst_port), (Some(17), Some(2)));
    assert_eq!(counters.sflow_unknown_records, 5);
}

#[test]
fn unknown_header_protocol_and_non_ip_frames_are_unparsed_but_emitted() {
    let (rec, counters) = single(vec![FlowRecordSpec::Header {
        protocol: 7, // PPP
        frame_length: 100,
        stripped: 0,
        header: vec![0xFF, 0x03, 0, 0x21],
    }]);
    assert_eq!(rec, base_record(100));
    assert_eq!(counters.sflow_unparsed_headers, 1);

    let arp = ethernet(&[(TPID_8021Q, 9)], 0x0806, &[0; 28]);
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(arp)]);
    assert_eq!((rec.src_vlan, rec.src_ip), (Some(9), None));
    assert_eq!(counters.sflow_unparsed_headers, 1);
}

#[test]
fn vxlan_inner_five_tuple() {
    let inner = ethernet(
        &[(TPID_8021Q, 300)],
        ETHERTYPE_IPV4,
        &ipv4(INNER_SRC4, INNER_DST4, 6, 0x10, &tcp(33000, 3306, 0x18)),
    );
    let outer = ethernet(
        &[(TPID_8021Q, 7)],
        ETHERTYPE_IPV4,
        &ipv4(
            SRC4,
            DST4,
            17,
            0,
            &udp(51000, 4789, &vxlan(0x00AB_CDEF, &inner)),
        ),
    );
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(outer)]);
    assert_eq!(rec.tunnel, Some(Tunnel::Vxlan { vni: 0x00AB_CDEF }));
    assert_eq!(
        (rec.src_ip, rec.dst_ip),
        (Some(INNER_SRC4.into()), Some(INNER_DST4.into()))
    );
    assert_eq!(
        (rec.protocol, rec.src_port, rec.dst_port),
        (Some(6), Some(33000), Some(3306))
    );
    assert_eq!((rec.tos, rec.tcp_flags), (Some(0x10), Some(0x18)));
    // The VLAN is the outer frame's: the port the packet crossed.
    assert_eq!(rec.src_vlan, Some(7));
    assert_eq!(counters.sflow_unparsed_headers, 0);
}

#[test]
fn gre_with_key_inner_five_tuple() {
    // NVGRE-style: transparent Ethernet with a key, plus checksum and sequence number.
    let inner = ethernet(
        &[],
        ETHERTYPE_IPV6,
        &ipv6(SRC6, DST6, 17, 0, &udp(123, 123, &[])),
    );
    let gre_packet = gre(true, Some(0x0012_3456), Some(99), 0x6558, &inner);
    let outer = ethernet(&[], ETHERTYPE_IPV4, &ipv4(SRC4, DST4, 47, 0, &gre_packet));
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(outer)]);
    assert_eq!(
        rec.tunnel,
        Some(Tunnel::Gre {
            key: Some(0x0012_3456)
        })
    );
    assert_eq!(rec.ip_version, Some(6));
    assert_eq!(
        (rec.src_ip, rec.dst_ip),
        (Some(SRC6.into()), Some(DST6.into()))
    );
    assert_eq!(
        (rec.protocol, rec.src_port, rec.dst_port),
        (Some(17), Some(123), Some(123))
    );
    assert_eq!(counters.sflow_unparsed_headers, 0);

    // Plain GRE carrying IPv4, no key.
    let gre_packet = gre(
        false,
        None,
        None,
        ETHERTYPE_IPV4,
        &ipv4(INNER_SRC4, INNER_DST4, 1, 0, &icmp(0, 0)),
    );
    let outer = ethernet(&[], ETHERTYPE_IPV4, &ipv4(SRC4, DST4, 47, 0, &gre_packet));
    let (rec, _) = single(vec![FlowRecordSpec::ethernet_header(outer)]);
    assert_eq!(rec.tunnel, Some(Tunnel::Gre { key: None }));
    assert_eq!(
        (rec.src_ip, rec.protocol, rec.dst_port),
        (Some(INNER_SRC4.into()), Some(1), Some(0))
    );

    // A GRE payload we do not unwrap (ERSPAN) leaves the outer 5-tuple, complete.
    let gre_packet = gre(false, None, Some(1), 0x88BE, &[0; 16]);
    let outer = ethernet(&[], ETHERTYPE_IPV4, &ipv4(SRC4, DST4, 47, 0, &gre_packet));
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(outer)]);
    assert_eq!(
        (rec.src_ip, rec.protocol, rec.tunnel),
        (Some(SRC4.into()), Some(47), None)
    );
    assert_eq!(counters.sflow_unparsed_headers, 0);
}

#[test]
fn mpls_labels_are_kept_with_the_inner_five_tuple() {
    let frame = ethernet(
        &[],
        ETHERTYPE_MPLS,
        &mpls(
            &[16, 1_048_575, 299_792],
            &ipv4(SRC4, DST4, 6, 0, &tcp(179, 50000, 0x18)),
        ),
    );
    let (rec, counters) = single(vec![FlowRecordSpec::ethernet_header(frame)]);
    assert_eq!(rec.mpls.as_slice(), &[16, 1_048_575, 299_792]);
    assert_eq!(
        (rec.src_ip, rec.src_port, rec.dst_port),
        (Some(SRC4.into()), Some(179), Some(50000))
    );
    assert_eq!(rec.tunnel, None);
    assert_eq!(counters.sflow_unparsed_headers, 0);

    // MPLS over GRE to IPv6.
    let gre_packet = gre(
        false,
        Some(5),
        None,
        ETHERTYPE_MPLS,
        &mpls(&[100], &ipv6(SRC6, DST6, 6, 0, &tcp(1, 2, 0))),
    );
    let frame = ethernet(&[], ETHERTYPE_IPV4, &ipv4(SRC4, DST4, 47, 0, &gre_packet));
    let (rec, _) = single(vec![FlowRecordSpec::ethernet_header(frame)]);
    assert_eq!(rec.mpls.as_slice(), &[100]);
    assert_eq!(rec.tunnel, Some(Tunnel::Gre { key: Some(5) }));
    assert_eq!((rec.src_ip, rec.dst_port), (Some(SRC6.into()), Some(2)));
}

#[test]
fn truncated_sampled_header_gives_a_partial_record() {
    let full = ethernet(
        &[(TPID_8021Q, 12)],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 6, 0x04, &tcp(1, 2, 0)),
    );
    let frame_length = 1518;
    // Cut in the middle of the TCP ports: 18 (Ethernet + tag) + 20 (IPv4) + 3.
    let cut = full[..41].to_vec();
    let (rec, counters) = single(vec![FlowRecordSpec::Header {
        protocol: 1,
        frame_length,
        stripped: 4,
        header: cut,
    }]);
    let mut want = base_record(frame_length);
    set_tuple(&mut want, SRC4.into(), DST4.into(), 6, None);
    want.tos = Some(0x04);
    want.src_vlan = Some(12);
    assert_eq!(rec, want);
    assert_eq!(counters.sflow_unparsed_headers, 1);

    // Ports but no room for the flags: the 5-tuple is complete.
    let cut = full[..42].to_vec();
    let (rec, counters) = single(vec![FlowRecordSpec::Header {
        protocol: 1,
        frame_length,
        stripped: 4,
        header: cut,
    }]);
    assert_eq!(
        (rec.src_port, rec.dst_port, rec.tcp_flags),
        (Some(1), Some(2), None)
    );
    assert_eq!(counters.sflow_unparsed_headers, 0);

    // Cut inside the IPv4 header: only the layer 2 facts remain.
    let cut = full[..30].to_vec();
    let (rec, counters) = single(vec![FlowRecordSpec::Header {
        protocol: 1,
        frame_length,
        stripped: 4,
        header: cut,
    }]);
    let mut want = base_record(frame_length);
    want.src_vlan = Some(12);
    assert_eq!(rec, want);
    assert_eq!(counters.sflow_unparsed_headers, 1);

    // A VXLAN packet cut before its inner IP header keeps the outer tuple, no tunnel.
    let inner = ethernet(
        &[],
        ETHERTYPE_IPV4,
        &ipv4(INNER_SRC4, INNER_DST4, 6, 0, &tcp(1, 2, 0)),
    );
    let outer = ethernet(
        &[],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 17, 0, &udp(1, 4789, &vxlan(1, &inner))),
    );
    let cut = outer[..14 + 20 + 8 + 8 + 14 + 10].to_vec();
    let (rec, counters) = single(vec![FlowRecordSpec::Header {
        protocol: 1,
        frame_length,
        stripped: 4,
        header: cut,
    }]);
    assert_eq!(
        (rec.src_ip, rec.dst_port, rec.tunnel),
        (Some(SRC4.into()), Some(4789), None)
    );
    assert_eq!(counters.sflow_unparsed_headers, 1);
}

#[test]
fn sequence_numbers_are_tracked_per_agent_and_sub_agent() {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut send = |agent, sub_agent_id, sequence| {
        let mut spec = DatagramSpec::new(agent, vec![]);
        spec.sub_agent_id = sub_agent_id;
        spec.sequence = sequence;
        let (result, _) = decode_with(&mut decoder, &encode_datagram(&spec));
        assert_eq!(result, Ok(0));
    };
    send(AGENT, 0, 10);
    send(AGENT, 1, 500);
    send(AGENT6, 0, 7);
    send(AGENT, 0, 11);
    send(AGENT, 0, 14);
    send(AGENT, 1, 501);
    send(AGENT, 0, 2);
    let counters = exporter_counters(&decoder);
    assert_eq!(counters.sequence_gaps, 1);
    assert_eq!(counters.lost_packets, 2);
    assert_eq!(counters.sequence_resets, 1);
    assert_eq!(counters.decoded_packets, 7);
}

mod malformed;
mod round_trip;
