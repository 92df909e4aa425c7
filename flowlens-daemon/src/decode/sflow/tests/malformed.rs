//! Malformed framing: at least one case per sFlow structure, each asserting the exact
//! error and absolute offset, and that a malformed datagram emits and commits nothing.

use super::*;

fn flow_datagram(records: Vec<FlowRecordSpec>) -> Vec<u8> {
    encode_datagram(&one_flow(records))
}

fn patch_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
}

#[test]
fn malformed_datagram_header() {
    let mut bad_agent = flow_datagram(vec![]);
    patch_u32(&mut bad_agent, 4, 3);
    assert_eq!(
        decode_err(&bad_agent),
        DecodeError::UnknownType {
            offset: 4,
            what: "agent address type",
            value: 3
        }
    );

    let mut unknown_agent = flow_datagram(vec![]);
    patch_u32(&mut unknown_agent, 4, 0);
    assert_eq!(
        decode_err(&unknown_agent),
        DecodeError::UnknownType {
            offset: 4,
            what: "agent address type",
            value: 0
        }
    );

    let whole = flow_datagram(vec![]);
    assert_eq!(
        decode_err(&whole[..22]),
        DecodeError::Truncated {
            offset: 20,
            needed: 4,
            available: 2
        }
    );
    let v6 = encode_datagram(&DatagramSpec::new(AGENT6, vec![]));
    assert_eq!(
        decode_err(&v6[..20]),
        DecodeError::Truncated {
            offset: 8,
            needed: 16,
            available: 12
        }
    );

    let mut too_many = flow_datagram(vec![]);
    patch_u32(&mut too_many, 24, 1000);
    assert_eq!(
        decode_err(&too_many),
        DecodeError::BadCount {
            offset: 24,
            what: "sample",
            count: 1000
        }
    );

    // One sample announced, two bytes follow: a sample needs at least eight.
    let mut short = whole[..FIRST_SAMPLE].to_vec();
    short.extend_from_slice(&[0, 0]);
    assert_eq!(
        decode_err(&short),
        DecodeError::BadCount {
            offset: 24,
            what: "sample",
            count: 1
        }
    );

    // Bytes after the declared samples are trailing bytes, not an error: see
    // `decode::tests::sflow_samples_beyond_num_samples_are_trailing_bytes`.
}

#[test]
fn malformed_sample_framing() {
    let good = flow_datagram(vec![]);
    let body_len = good.len() - FIRST_SAMPLE_BODY;

    let mut long = good.clone();
    patch_u32(&mut long, FIRST_SAMPLE + 4, 400);
    assert_eq!(
        decode_err(&long),
        DecodeError::Truncated {
            offset: FIRST_SAMPLE_BODY,
            needed: 400,
            available: body_len
        }
    );

    // Declared shorter than its fields: the error stays inside the sample.
    let mut short = good.clone();
    patch_u32(&mut short, FIRST_SAMPLE + 4, 8);
    short.truncate(FIRST_SAMPLE_BODY + 8);
    assert_eq!(
        decode_err(&short),
        DecodeError::Truncated {
            offset: FIRST_SAMPLE_BODY + 8,
            needed: 4,
            available: 0
        }
    );

    let mut records = good.clone();
    patch_u32(&mut records, FIRST_RECORD - 4, 5);
    assert_eq!(
        decode_err(&records),
        DecodeError::BadCount {
            offset: FIRST_RECORD - 4,
            what: "flow record",
            count: 5
        }
    );

    // A sample longer than its records: the count and the length disagree.
    let mut sample = FlowSampleSpec::new(vec![]);
    sample.records = vec![FlowRecordSpec::Raw {
        format: 1004,
        data: vec![0; 4],
    }];
    let mut padded = encode_datagram(&DatagramSpec::new(AGENT, vec![SampleSpec::Flow(sample)]));
    patch_u32(&mut padded, FIRST_RECORD - 4, 0);
    assert_eq!(
        decode_err(&padded),
        DecodeError::BadLength {
            offset: FIRST_SAMPLE + 4,
            what: "flow_sample",
            length: 32 + 12
        }
    );

    let mut counters = encode_datagram(&DatagramSpec::new(AGENT, vec![counters_sample(true)]));
    // Expanded counter sample: sequence, source type, source index, then the count.
    patch_u32(&mut counters, FIRST_SAMPLE_BODY + 12, 100);
    assert_eq!(
        decode_err(&counters),
        DecodeError::BadCount {
            offset: FIRST_SAMPLE_BODY + 12,
            what: "counter record",
            count: 100
        }
    );
}

#[test]
fn a_bad_record_length_cannot_misalign_the_next_sample() {
    // The first sample's record claims more than the sample holds: the read fails inside
    // that sample, whose bytes are all the reader can see.
    let header = FlowRecordSpec::ethernet_header(ethernet(
        &[],
        ETHERTYPE_IPV4,
        &ipv4(SRC4, DST4, 6, 0, &tcp(1, 2, 0)),
    ));
    let flow = SampleSpec::Flow(FlowSampleSpec::new(vec![header]));
    let mut bytes = encode_datagram(&DatagramSpec::new(AGENT, vec![flow.clone(), flow]));
    let sample_len = u32::from_be_bytes(
        bytes[FIRST_SAMPLE + 4..FIRST_SAMPLE + 8]
            .try_into()
            .unwrap(),
    );
    let record_len = sample_len as usize - 32 - 8;
    patch_u32(&mut bytes, FIRST_RECORD + 4, 200);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::Truncated {
            offset: FIRST_RECORD_BODY,
            needed: 200,
            available: record_len
        }
    );
}

#[test]
fn malformed_flow_records() {
    let sampled = FlowRecordSpec::Ipv4 {
        length: 1,
        protocol: 6,
        src: SRC4,
        dst: DST4,
        src_port: 1,
        dst_port: 2,
        tcp_flags: 0,
        tos: 0,
    };
    // sampled_ipv4 cut to 28 bytes (and the sample shortened to match).
    let mut bytes = flow_datagram(vec![sampled]);
    patch_u32(&mut bytes, FIRST_SAMPLE + 4, 32 + 8 + 28);
    patch_u32(&mut bytes, FIRST_RECORD + 4, 28);
    bytes.truncate(bytes.len() - 4);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::BadLength {
            offset: FIRST_RECORD + 4,
            what: "sampled_ipv4",
            length: 28
        }
    );

    let mut bytes = flow_datagram(vec![FlowRecordSpec::Switch {
        src_vlan: 1,
        src_priority: 0,
        dst_vlan: 2,
        dst_priority: 0,
    }]);
    patch_u32(&mut bytes, FIRST_RECORD, 4);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::BadLength {
            offset: FIRST_RECORD + 4,
            what: "sampled_ipv6",
            length: 16
        }
    );

    // The header's length runs past its record.
    let header = FlowRecordSpec::Header {
        protocol: 1,
        frame_length: 64,
        stripped: 0,
        header: vec![0; 16],
    };
    let mut bytes = flow_datagram(vec![header]);
    patch_u32(&mut bytes, FIRST_RECORD_BODY + 12, 17);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::Truncated {
            offset: FIRST_RECORD_BODY + 16,
            needed: 17,
            available: 16
        }
    );

    let router = FlowRecordSpec::Router {
        next_hop: Some(SRC4.into()),
        src_mask: 8,
        dst_mask: 8,
    };
    let mut bytes = flow_datagram(vec![router]);
    patch_u32(&mut bytes, FIRST_RECORD_BODY, 9);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::UnknownType {
            offset: FIRST_RECORD_BODY,
            what: "next hop address type",
            value: 9
        }
    );

    let gateway = FlowRecordSpec::Gateway {
        next_hop: Some(SRC4.into()),
        router_as: 1,
        src_as: 2,
        src_peer_as: 3,
        as_path: vec![AsPathSegment {
            segment_type: 2,
            numbers: vec![4, 5],
        }],
        communities: vec![],
        local_pref: 0,
    };
    // Next hop (8), three AS numbers (12), then the segment count, type, AS count.
    let segments = FIRST_RECORD_BODY + 20;
    let mut bytes = flow_datagram(vec![gateway.clone()]);
    patch_u32(&mut bytes, segments, 0x4000_0000);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::BadCount {
            offset: segments,
            what: "AS path segment",
            count: 0x4000_0000
        }
    );
    let mut bytes = flow_datagram(vec![gateway.clone()]);
    patch_u32(&mut bytes, segments + 8, 6);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::BadCount {
            offset: segments + 8,
            what: "AS number",
            count: 6
        }
    );
    let communities = segments + 8 + 4 + 8;
    let mut bytes = flow_datagram(vec![gateway]);
    patch_u32(&mut bytes, communities, 2);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::BadCount {
            offset: communities,
            what: "community",
            count: 2
        }
    );
}

#[test]
fn malformed_counter_records() {
    let mut bytes = encode_datagram(&DatagramSpec::new(AGENT, vec![counters_sample(false)]));
    // Compact counter sample: sequence, source, count; then the if_counters record.
    let record = FIRST_SAMPLE_BODY + 12;
    // Swap the two records' formats: the 52-byte record now claims to be if_counters.
    patch_u32(&mut bytes, record, 2);
    patch_u32(&mut bytes, record + 8 + 88, 1);
    assert_eq!(
        decode_err(&bytes),
        DecodeError::BadLength {
            offset: record + 8 + 88 + 4,
            what: "if_counters",
            length: 52
        }
    );
}

#[test]
fn counters_are_committed_only_for_decoded_datagrams() {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let bad_flow = SampleSpec::Flow(FlowSampleSpec::new(vec![FlowRecordSpec::Raw {
        format: 3,
        data: vec![0; 8],
    }]));
    let spec = DatagramSpec::new(
        AGENT,
        vec![
            counters_sample(false),
            SampleSpec::Raw {
                format: 99,
                data: vec![],
            },
            bad_flow,
        ],
    );
    let (result, out) = decode_with(&mut decoder, &encode_datagram(&spec));
    assert!(matches!(
        result,
        Err(DecodeError::BadLength {
            what: "sampled_ipv4",
            ..
        })
    ));
    assert!(out.is_empty());
    let counters = exporter_counters(&decoder);
    assert_eq!(
        (
            counters.sflow_counter_samples,
            counters.sflow_unknown_records
        ),
        (0, 0)
    );
    assert_eq!(counters.malformed("bad_length"), 1);
    assert_eq!(
        counters.packets,
        counters.decoded_packets + counters.malformed_packets
    );
}
