//! The raw topic against a real Kafka-protocol broker (tansu, `.ci/install-tansu`):
//! topics are created at start with `kafka.partitions` (and left alone when they
//! exist), datagrams produced keyed by exporter come back whole through a consumer
//! group, every exporter's in one partition and in the order sent, and a record that
//! is not a `RawDatagram` is an error the consumer counts, never a crash.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::Duration;

use flowlens_daemon::config::KafkaConfig;
use flowlens_daemon::ingest::datagram::{RawDatagram, Source};
use flowlens_daemon::kafka::client::{consumer_config, ensure_topics, producer_config};
use flowlens_daemon::kafka::raw::{Origin, decode, encode, key};
use flowlens_daemon::testing::tansu::Tansu;
use rdkafka::Message as _;
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_datagrams_round_trip_keyed_by_exporter() {
    let broker = Tansu::start();
    let k = KafkaConfig {
        bootstrap_servers: broker.bootstrap(),
        partitions: 4,
        ..KafkaConfig::default()
    };
    let mut created = ensure_topics(&k).await.unwrap();
    created.sort();
    assert_eq!(
        created,
        [
            "flowlens.alerts-v1",
            "flowlens.changes-v1",
            "flowlens.flows-v1",
            "flowlens.raw-v1"
        ]
    );
    assert!(
        ensure_topics(&k).await.unwrap().is_empty(),
        "existing topics are left alone"
    );

    let producer: FutureProducer = producer_config(&k).unwrap().create().unwrap();
    let exporters: Vec<IpAddr> = (1..=10)
        .map(|i| format!("192.0.2.{i}").parse().unwrap())
        .chain(["2001:db8::5".parse().unwrap()])
        .collect();
    let mut sent: HashMap<IpAddr, Vec<u32>> = HashMap::new();
    for n in 0..660_u32 {
        let exporter = exporters[n as usize % exporters.len()];
        let d = RawDatagram {
            exporter,
            received_at_ms: 1_765_000_000_000 + u64::from(n),
            presample_rate: 1,
            source: if n % 2 == 0 { Source::Xdp } else { Source::Udp },
            payload: n.to_be_bytes().to_vec(),
            truncated_from: None,
        };
        let record_key = key(exporter);
        let payload = encode(&d, &Origin::named("ingest-test"));
        producer
            .send(
                FutureRecord::to(&k.topics.raw)
                    .key(&record_key)
                    .payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
        sent.entry(exporter).or_default().push(n);
    }
    // A record of another schema (or a corrupt one) on the same topic.
    producer
        .send(
            FutureRecord::to(&k.topics.raw)
                .key(&[0_u8; 16])
                .payload(&b"\xff\xff\xff"[..]),
            Duration::from_secs(10),
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();

    let consumer: StreamConsumer = consumer_config(&k, "flowlens-test")
        .unwrap()
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .create()
        .unwrap();
    let metadata = consumer
        .fetch_metadata(Some(&k.topics.raw), Duration::from_secs(10))
        .unwrap();
    assert_eq!(metadata.topics()[0].partitions().len(), 4);
    consumer.subscribe(&[&k.topics.raw]).unwrap();
    let mut received: HashMap<IpAddr, Vec<u32>> = HashMap::new();
    let mut partitions: HashMap<IpAddr, HashSet<i32>> = HashMap::new();
    let (mut records, mut undecodable) = (0, 0);
    while records < 661 {
        let m = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
            .await
            .expect("every record within 30 s")
            .unwrap();
        records += 1;
        match decode(m.payload().unwrap_or_default()) {
            Ok((d, ingest)) => {
                assert_eq!(ingest.ingest_id, "ingest-test");
                assert_eq!(m.key(), Some(&key(d.exporter)[..]));
                let n = u32::from_be_bytes(d.payload[..4].try_into().unwrap());
                assert_eq!(d.received_at_ms, 1_765_000_000_000 + u64::from(n));
                received.entry(d.exporter).or_default().push(n);
                partitions
                    .entry(d.exporter)
                    .or_default()
                    .insert(m.partition());
            }
            Err(_) => undecodable += 1,
        }
    }
    assert_eq!(undecodable, 1);
    assert_eq!(
        received, sent,
        "every datagram once, each exporter's in order"
    );
    assert!(
        partitions.values().all(|p| p.len() == 1),
        "one partition per exporter: {partitions:?}"
    );
    let used: HashSet<i32> = partitions.values().flatten().copied().collect();
    assert!(used.len() > 1, "exporters spread over partitions: {used:?}");
}
