//! Decoder throughput per protocol, in datagrams and flows per second.
//!
//! Every case builds one realistic datagram (see `decode/datagrams.rs`), primes a fresh
//! decoder with the template packet when the protocol needs one, checks once that the
//! datagram decodes to the expected number of records, and then times decoding that same
//! datagram over and over into one reused output vector. `Throughput::Elements` is the
//! number of records per datagram, so criterion's elements/s are flows/s.
//!
//! For comparison the same bytes go through the `netflow_parser` crate (`NetFlow` v5, v9
//! and IPFIX; it has no sFlow), whose parser also keeps templates across calls: groups
//! `netflow_parser/<protocol>/<case>`.
//!
//! Run: `cargo bench -p flowlens-daemon --bench decode -- --warm-up-time 1
//! --measurement-time 3` and compare the medians.

#[path = "decode/datagrams.rs"]
mod datagrams;

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlens_daemon::decode::{Datagram, Decoder, DecoderConfig};
use flowlens_daemon::flow::FlowRecord;
use netflow_parser::{NetflowPacket, NetflowParser};

use datagrams::{Flow, TEMPLATE_ID};

/// The UDP source of the `NetFlow`/IPFIX cases.
const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

/// One benchmark case: what to feed first, what to time, how many records it holds.
struct Case {
    protocol: &'static str,
    name: &'static str,
    exporter: IpAddr,
    /// Datagrams decoded once before timing (templates).
    setup: Vec<Vec<u8>>,
    /// The timed datagram.
    datagram: Vec<u8>,
    /// Flow records the datagram holds.
    records: usize,
    /// Whether `netflow_parser` is measured on it too.
    compare: bool,
    /// Where the datagram's 32-bit sequence number sits and how much it advances per
    /// datagram, so each timed decode sees the next datagram in order (the steady state
    /// of a live exporter) rather than a repeat (which is a sequence reset).
    sequence: (usize, u32),
}

fn cases() -> Vec<Case> {
    let v9_ipv4_template = datagrams::v9_template_flowset(TEMPLATE_ID, datagrams::V9_IPV4_FIELDS);
    let v9_ipv4_data =
        datagrams::v9_data_flowset(TEMPLATE_ID, datagrams::V9_IPV4_FIELDS, &Flow::many(94, 24));
    let v9_ipv6_template = datagrams::v9_template_flowset(TEMPLATE_ID, datagrams::V9_IPV6_FIELDS);
    let v9_ipv6_data =
        datagrams::v9_data_flowset(TEMPLATE_ID, datagrams::V9_IPV6_FIELDS, &Flow::many(96, 16));
    let ipfix_fields = datagrams::ipfix_fields();
    let ipfix_template = datagrams::ipfix_template_set(TEMPLATE_ID, &ipfix_fields);
    let ipfix_data = datagrams::ipfix_data_set(TEMPLATE_ID, &ipfix_fields, &Flow::many(10, 20));
    vec![
        Case {
            protocol: "netflow_v5",
            name: "30_records",
            exporter: EXPORTER,
            setup: Vec::new(),
            datagram: datagrams::netflow_v5(1_000, &Flow::many(5, 30)),
            records: 30,
            compare: true,
            // v5 flow_sequence counts records.
            sequence: (16, 30),
        },
        Case {
            protocol: "netflow_v9",
            name: "ipv4_24",
            exporter: EXPORTER,
            setup: vec![datagrams::v9_packet(1, 0, 1, &[v9_ipv4_template])],
            datagram: datagrams::v9_packet(2, 0, 24, &[v9_ipv4_data]),
            records: 24,
            compare: true,
            // v9 package sequence counts packets.
            sequence: (12, 1),
        },
        Case {
            protocol: "netflow_v9",
            name: "ipv6_16",
            exporter: EXPORTER,
            setup: vec![datagrams::v9_packet(1, 0, 1, &[v9_ipv6_template])],
            datagram: datagrams::v9_packet(2, 0, 16, &[v9_ipv6_data]),
            records: 16,
            compare: true,
            sequence: (12, 1),
        },
        Case {
            protocol: "ipfix",
            name: "varlen_20",
            exporter: EXPORTER,
            setup: vec![datagrams::ipfix_message(0, 1, &[ipfix_template])],
            datagram: datagrams::ipfix_message(0, 1, &[ipfix_data]),
            records: 20,
            compare: true,
            // IPFIX sequence counts data records.
            sequence: (8, 20),
        },
        Case {
            protocol: "sflow",
            name: "headers_8",
            exporter: IpAddr::V4(datagrams::SFLOW_AGENT),
            setup: Vec::new(),
            datagram: datagrams::sflow_v5(1, &Flow::many(55, 8)),
            records: 8,
            compare: false,
            // sFlow datagram sequence after version, IPv4 agent and sub-agent id.
            sequence: (16, 1),
        },
    ]
}

fn throughput(records: usize) -> Throughput {
    Throughput::Elements(u64::try_from(records).expect("usize fits u64"))
}

/// A fresh decoder that has seen the case's setup datagrams.
fn primed_decoder(case: &Case) -> Decoder {
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut out = Vec::new();
    for payload in &case.setup {
        let datagram = Datagram {
            exporter: case.exporter,
            received_at_ms: datagrams::RECEIVED_AT_MS,
            payload,
        };
        if let Err(e) = decoder.decode(&datagram, &mut out) {
            panic!(
                "{}/{}: setup datagram failed to decode: {e}",
                case.protocol, case.name
            );
        }
    }
    decoder
}

/// The case's sequence number in `payload`.
fn sequence_of(case: &Case, payload: &[u8]) -> u32 {
    let at = case.sequence.0;
    let bytes: [u8; 4] = payload[at..at + 4].try_into().expect("4 bytes");
    u32::from_be_bytes(bytes)
}

/// Writes sequence number `seq` into `payload`.
fn set_sequence(case: &Case, payload: &mut [u8], seq: u32) {
    let at = case.sequence.0;
    payload[at..at + 4].copy_from_slice(&seq.to_be_bytes());
}

fn bench_ours(c: &mut Criterion, case: &Case) {
    let mut decoder = primed_decoder(case);
    let mut payload = case.datagram.clone();
    let mut seq = sequence_of(case, &payload);
    let datagram = Datagram {
        exporter: case.exporter,
        received_at_ms: datagrams::RECEIVED_AT_MS,
        payload: &payload,
    };
    let mut out: Vec<FlowRecord> = Vec::with_capacity(64);
    let first_run = match decoder.decode(&datagram, &mut out) {
        Ok(n) => n,
        Err(e) => panic!(
            "{}/{}: datagram failed to decode: {e}",
            case.protocol, case.name
        ),
    };
    if first_run == 0 && case.protocol == "sflow" {
        eprintln!(
            "warning: decode/{}/{} decoded 0 of {} records (is the sFlow decoder merged?); \
             timing it anyway",
            case.protocol, case.name, case.records
        );
    } else {
        assert_eq!(
            first_run, case.records,
            "decode/{}/{}: records decoded",
            case.protocol, case.name
        );
    }
    let mut group = c.benchmark_group(format!("decode/{}", case.protocol));
    group.throughput(throughput(case.records));
    group.bench_function(case.name, |b| {
        b.iter(|| {
            seq = seq.wrapping_add(case.sequence.1);
            set_sequence(case, &mut payload, seq);
            let datagram = Datagram {
                exporter: case.exporter,
                received_at_ms: datagrams::RECEIVED_AT_MS,
                payload: &payload,
            };
            out.clear();
            let n = decoder.decode(black_box(&datagram), &mut out);
            black_box(n)
        });
    });
    group.finish();
    let totals = decoder.totals();
    assert_eq!(
        (totals.sequence_gaps, totals.sequence_resets),
        (0, 0),
        "decode/{}/{}: the timed datagrams must be in sequence",
        case.protocol,
        case.name
    );
}

/// Flow records in what `netflow_parser` returned, or why there are none.
fn parser_records(packets: &[NetflowPacket]) -> Result<usize, String> {
    let mut n = 0;
    for p in packets {
        match p {
            NetflowPacket::V5(v5) => n += v5.flowsets.len(),
            NetflowPacket::V7(v7) => n += v7.flowsets.len(),
            NetflowPacket::V9(v9) => {
                for set in &v9.flowsets {
                    if let netflow_parser::variable_versions::v9::FlowSetBody::Data(d) = &set.body {
                        n += d.fields.len();
                    }
                }
            }
            NetflowPacket::IPFix(ipfix) => {
                for set in &ipfix.flowsets {
                    if let netflow_parser::variable_versions::ipfix::FlowSetBody::Data(d) =
                        &set.body
                    {
                        n += d.fields.len();
                    }
                }
            }
            NetflowPacket::Error(e) => return Err(format!("{e:?}")),
        }
    }
    Ok(n)
}

fn bench_netflow_parser(c: &mut Criterion, case: &Case) {
    let mut parser = NetflowParser::default();
    for payload in &case.setup {
        if let Err(e) = parser_records(&parser.parse_bytes(payload)) {
            eprintln!(
                "warning: netflow_parser/{}/{}: setup datagram not parsed ({e}); skipped",
                case.protocol, case.name
            );
            return;
        }
    }
    match parser_records(&parser.parse_bytes(&case.datagram)) {
        Ok(n) if n == case.records => {}
        Ok(n) => {
            eprintln!(
                "warning: netflow_parser/{}/{}: parsed {n} of {} records; skipped",
                case.protocol, case.name, case.records
            );
            return;
        }
        Err(e) => {
            eprintln!(
                "warning: netflow_parser/{}/{}: datagram not parsed ({e}); skipped",
                case.protocol, case.name
            );
            return;
        }
    }
    let mut group = c.benchmark_group(format!("netflow_parser/{}", case.protocol));
    group.throughput(throughput(case.records));
    group.bench_function(case.name, |b| {
        b.iter(|| black_box(parser.parse_bytes(black_box(&case.datagram))));
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    for case in cases() {
        bench_ours(c, &case);
        if case.compare {
            bench_netflow_parser(c, &case);
        }
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
