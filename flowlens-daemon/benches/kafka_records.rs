//! What the Kafka path adds per record on a `process` instance that publishes flows
//! (`kafka.publish_flows`): building and encoding a `flowlens.v1.Flow` (scope and
//! service lookups included) for a batch of decoded records, next to encoding the raw
//! datagram they came in (what `ingest` does per datagram). Elements are records, so
//! criterion's elements/s are flows/s one core can turn into messages.
//!
//! Run: `cargo bench -p flowlens-daemon --bench kafka_records -- --warm-up-time 1
//! --measurement-time 3` and compare the medians.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flowlens_daemon::flow::{FlowProtocol, FlowRecord};
use flowlens_daemon::ingest::datagram::{RawDatagram, Source};
use flowlens_daemon::kafka::flows::{FlowEnrichment, flow};
use flowlens_daemon::kafka::raw::{Origin, encode};
use prost::Message as _;

/// 30 records, as one IPFIX datagram of the generator holds about.
fn records() -> Vec<FlowRecord> {
    (0..30_u8)
        .map(|i| {
            let mut r = FlowRecord::empty(
                FlowProtocol::Ipfix,
                IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
                1_765_000_000_000,
            );
            r.src_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 1, i, 5)));
            r.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 2, 0, i)));
            r.src_port = Some(40_000 + u16::from(i));
            r.dst_port = Some([443, 5432, 6379, 8080, 9092][usize::from(i % 5)]);
            r.protocol = Some(6);
            r.bytes = Some(12_000);
            r.packets = Some(12);
            r.sampling_rate = Some(1);
            r.flow_start_ms = Some(1_765_000_000_000);
            r.flow_end_ms = Some(1_765_000_001_000);
            r.input_interface = Some(3);
            r.output_interface = Some(7);
            r
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let batch = records();
    let enrichment = FlowEnrichment::default();
    let mut g = c.benchmark_group("kafka_records");
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function("flow_messages_per_batch", |b| {
        let mut payload = Vec::with_capacity(160);
        b.iter(|| {
            let mut total = 0;
            for r in &batch {
                payload.clear();
                flow(black_box(r), &enrichment)
                    .encode(&mut payload)
                    .expect("a Vec grows");
                total += payload.len();
            }
            black_box(total)
        });
    });
    let datagram = RawDatagram {
        exporter: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        received_at_ms: 1_765_000_000_000,
        presample_rate: 1,
        source: Source::Xdp,
        payload: vec![0x5a; 1400],
        truncated_from: None,
    };
    let origin = Origin::named("ingest-bench");
    g.bench_function("raw_datagram_of_the_batch", |b| {
        b.iter(|| black_box(encode(black_box(&datagram), &origin)).len());
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
