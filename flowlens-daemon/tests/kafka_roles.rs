//! The split roles against a real Kafka-protocol broker (tansu) and a real
//! PostgreSQL: `flowlens-daemon run --role ingest` receives and produces raw
//! datagrams, `--role process` consumes them in a consumer group and writes the graph.
//! The graph is exactly the one the direct path builds (`graph_e2e`): the same
//! dependencies, every flow counted once, also when a `process` instance is killed
//! mid-run and another takes its partitions.

#![allow(
    clippy::unwrap_used,
    clippy::float_cmp,
    reason = "test helpers outside #[test] functions; metric values are small integers"
)]

mod support;

use std::time::Duration;

use flowlens_daemon::generate::Topology;
use flowlens_daemon::kafka::proto;
use flowlens_daemon::testing::postgres::scratch;
use flowlens_daemon::testing::tansu::Tansu;
use prost::Message as _;
use rdkafka::producer::{FutureProducer, FutureRecord};
use support::Daemon;
use support::topics::{Record, TopicReader};

/// Short group timeouts (the test settings), 4 partitions, marks often, and
/// a flush every second.
const KAFKA_YAML: &str = "kafka:\n  partitions: 4\n  mark_interval_ms: 200\n  properties:\n    \
     session.timeout.ms: \"6000\"\n    heartbeat.interval.ms: \"1000\"\n\
     dependency_resolution:\n  aggregation:\n    flush_interval_seconds: 1\n";

#[test]
fn the_topology_through_ingest_kafka_and_process_is_the_direct_graph() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Tansu::start();
    let db = rt.block_on(scratch("kafka_roles"));
    let bootstrap = broker.bootstrap();
    let process = Daemon::start_with(
        "kafka-process",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("KAFKA_BOOTSTRAP_SERVERS", &bootstrap),
        ],
        "postgres",
        &["--role", "process"],
        &KAFKA_YAML.replacen("kafka:\n", "kafka:\n  publish_flows: true\n", 1),
    );
    let ingest = Daemon::start_with(
        "kafka-ingest",
        &[("KAFKA_BOOTSTRAP_SERVERS", &bootstrap)],
        "discard",
        &["--role", "ingest", "--no-xdp"],
        KAFKA_YAML,
    );
    // A record that is not a datagram, on the raw topic (created at start).
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    rt.block_on(
        producer.send(
            FutureRecord::to("flowlens.raw-v1")
                .key(&[0_u8; 16])
                .payload(&b"\x0a\xff\xff"[..]),
            Duration::from_secs(10),
        ),
    )
    .map_err(|(e, _)| e)
    .unwrap();

    let rounds = 6;
    let sent = support::graph::generate(ingest.ipfix, rounds, 5000);
    let topology = Topology::enterprise();
    assert_eq!(
        sent,
        rounds * 2 * u64::try_from(topology.connections_per_round()).unwrap()
    );
    process.wait_until("every generated flow in the dependencies table", |_| {
        rt.block_on(support::graph::total_flows(&db.pool)) == i64::try_from(sent).unwrap()
    });
    assert_eq!(
        rt.block_on(support::graph::edges(&db.pool)),
        support::graph::expected(&topology)
    );

    // Both sides of the seam account for every datagram.
    let exporter = "exporter=\"127.0.0.1\"";
    ingest.wait_until("every received datagram produced", |d| {
        let received = d.metric("flowlens_ingest_datagrams_received_total", &[exporter]);
        received > 0.0
            && d.metric("flowlens_kafka_datagrams_produced_total", &[exporter]) == received
    });
    assert_eq!(
        ingest.metric("flowlens_ingest_datagrams_dropped_total", &[]),
        0.0
    );
    let to_kafka = ingest.metric("flowlens_kafka_datagrams_produced_total", &[exporter]);
    process.wait_until("every datagram consumed and decoded", |d| {
        d.metric("flowlens_kafka_datagrams_consumed_total", &[exporter]) == to_kafka
            && d.metric("flowlens_decode_datagrams_total", &[exporter]) == to_kafka
            && d.metric("flowlens_kafka_records_undecodable_total", &[]) == 1.0
    });
    assert_eq!(process.metric("flowlens_decode_malformed_total", &[]), 0.0);
    for d in [&ingest, &process] {
        let health = d.get("/health").unwrap();
        assert!(health.contains("\"kafka\":\"ok\""), "{health}");
        support::promtool_accepts(&d.get("/metrics").unwrap());
    }
    assert!(
        process
            .get("/health")
            .unwrap()
            .contains("\"postgresql\":\"ok\"")
    );

    // The positions in PostgreSQL cover every record of the topic, the
    // undecodable one included.
    let positions = || -> i64 {
        rt.block_on(
            sqlx::query_scalar(
                "SELECT coalesce(sum(next_offset), 0)::int8 FROM kafka_positions
                 WHERE consumer_group = 'flowlens-process' AND topic = 'flowlens.raw-v1'",
            )
            .fetch_one(&db.pool),
        )
        .unwrap()
    };
    #[expect(clippy::cast_possible_truncation, reason = "a small count")]
    let records = to_kafka as i64 + 1;
    process.wait_until("positions of every record in PostgreSQL", |_| {
        positions() == records
    });
    // Kafka's committed offsets follow: no lag left on any partition.
    process.wait_until("no consumer lag", |d| {
        d.metrics()
            .keys()
            .any(|k| k.starts_with("flowlens_kafka_consumer_lag{"))
            && d.metric("flowlens_kafka_consumer_lag", &[]) == 0.0
    });
    // The relay counts what it published: every event and alert written so far.
    let rows = |table: &str| -> f64 {
        let sql = format!("SELECT count(*)::float8 FROM {table}");
        rt.block_on(sqlx::query_scalar::<_, f64>(&sql).fetch_one(&db.pool))
            .unwrap()
    };
    process.wait_until("change events and alerts published", |d| {
        let published = |topic: &str| {
            d.metric(
                "flowlens_kafka_events_published_total",
                &[&format!("topic=\"{topic}\"")],
            )
        };
        published("changes") == rows("change_events") && published("alerts") == rows("alerts")
    });
    assert_eq!(
        process.metric("flowlens_kafka_event_relay_leader", &[]),
        1.0
    );
    #[expect(clippy::cast_precision_loss, reason = "a small count")]
    let sent_f = sent as f64;
    process.wait_until("every decoded flow published", |d| {
        d.metric("flowlens_kafka_flows_published_total", &[]) == sent_f
    });
    assert_eq!(
        process.metric("flowlens_kafka_flows_dropped_total", &[]),
        0.0
    );
    ingest.stop();
    process.stop();
    assert_eq!(positions(), records);
    assert_eq!(
        rt.block_on(support::graph::total_flows(&db.pool)),
        i64::try_from(sent).unwrap(),
        "nothing counted again at shutdown"
    );

    // Every change event and alert the graph wrote is on its topic, once.
    let ids = |sql: &str| -> std::collections::BTreeSet<String> {
        rt.block_on(sqlx::query_scalar::<_, String>(sql).fetch_all(&db.pool))
            .unwrap()
            .into_iter()
            .collect()
    };
    let events = ids("SELECT id::text FROM change_events");
    let alerts = ids("SELECT id::text FROM alerts");
    assert!(!events.is_empty() && !alerts.is_empty());
    let mut reader = TopicReader::new(&bootstrap, &["flowlens.changes-v1", "flowlens.alerts-v1"]);
    let published = |records: &[Record], topic: &str| -> Vec<String> {
        records
            .iter()
            .filter(|r| r.topic == topic)
            .map(|r| match topic {
                "flowlens.changes-v1" => proto::ChangeEvent::decode(&r.payload[..]).unwrap().id,
                _ => proto::Alert::decode(&r.payload[..]).unwrap().id,
            })
            .collect()
    };
    assert!(reader.read_until(30, |r| {
        published(r, "flowlens.changes-v1").len() >= events.len()
            && published(r, "flowlens.alerts-v1").len() >= alerts.len()
    }));
    reader.read_for(1);
    for (topic, rows) in [
        ("flowlens.changes-v1", &events),
        ("flowlens.alerts-v1", &alerts),
    ] {
        let ids = published(&reader.records, topic);
        assert_eq!(ids.len(), rows.len(), "{topic}: each once");
        assert_eq!(
            &ids.into_iter().collect::<std::collections::BTreeSet<_>>(),
            rows
        );
    }

    // The flows topic: every decoded record once, each on one of the topology's
    // dependencies (one record each way), with its scope and the port's service.
    let mut flows = TopicReader::new(&bootstrap, &["flowlens.flows-v1"]);
    assert!(flows.read_until(30, |r| r.len() >= usize::try_from(sent).unwrap()));
    flows.read_for(1);
    assert_eq!(flows.records.len(), usize::try_from(sent).unwrap());
    let expected = support::graph::expected(&topology);
    let ip = |b: &[u8]| -> std::net::IpAddr {
        match b.len() {
            4 => <[u8; 4]>::try_from(b).unwrap().into(),
            _ => <[u8; 16]>::try_from(b).unwrap().into(),
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    for r in &flows.records {
        let f = proto::Flow::decode(&r.payload[..]).unwrap();
        assert_eq!(r.key, flowlens_daemon::kafka::raw::key(ip(&f.exporter)));
        let (src, dst) = (ip(&f.src_addr), ip(&f.dst_addr));
        let p = i16::try_from(f.protocol).unwrap();
        let forward = (src, dst, p, i32::try_from(f.dst_port).unwrap());
        let reverse = (dst, src, p, i32::try_from(f.src_port).unwrap());
        let edge = if expected.contains(&forward) {
            forward
        } else {
            reverse
        };
        assert!(expected.contains(&edge), "{f:?} is on no dependency");
        let service = flowlens_daemon::enrich::services::service_for(
            u8::try_from(f.protocol).unwrap(),
            u16::try_from(edge.3).unwrap(),
        );
        assert_eq!(f.service, service.unwrap_or_default(), "{f:?}");
        assert!(
            ["internal", "egress", "ingress", "external"].contains(&f.scope.as_str()),
            "{f:?}"
        );
        assert!(
            f.bytes > 0 && f.packets > 0 && f.flow_protocol == "ipfix",
            "{f:?}"
        );
        seen.insert(edge);
    }
    assert_eq!(seen, expected, "every dependency has its flows");
}

/// Waits up to `secs` for `ok`, panicking with `what` and the logs of `daemons`.
fn wait_for(secs: u64, what: &str, daemons: &[&Daemon], mut ok: impl FnMut() -> bool) {
    wait_for_state(secs, what, daemons, || {
        if ok() { Ok(()) } else { Err(String::new()) }
    });
}

/// [`wait_for`] where `state` says what it saw when it is not there yet (in the
/// panic message).
fn wait_for_state(
    secs: u64,
    what: &str,
    daemons: &[&Daemon],
    mut state: impl FnMut() -> Result<(), String>,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    let mut seen = String::new();
    while std::time::Instant::now() < deadline {
        match state() {
            Ok(()) => return,
            Err(s) => seen = s,
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
    let logs: Vec<String> = daemons
        .iter()
        .map(|d| std::fs::read_to_string(d.dir.join("daemon.log")).unwrap_or_default())
        .collect();
    panic!(
        "timed out waiting for {what} (last seen: {seen}); logs:\n{}",
        logs.join("\n----\n")
    );
}

/// Two `process` instances share the group; the one reading the exporter's partition
/// is killed with SIGKILL mid-run, with flows read and not yet flushed. The survivor
/// takes the partition from the last position flushed with the graph, and the final
/// graph counts every flow exactly once.
///
/// Evidence below the creation thresholds (an address seen fewer than
/// `assets.min_flows_for_creation` times, a dependency below its own) is held in the
/// memory of the instance that saw it and dies with it, as it does when a single
/// daemon is killed; the thresholds are 1 here so that the test measures delivery.
#[test]
fn a_killed_process_instance_loses_nothing_and_counts_nothing_twice() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Tansu::start();
    let db = rt.block_on(scratch("kafka_kill"));
    let bootstrap = broker.bootstrap();
    let yaml = format!(
        "{KAFKA_YAML}  assets:\n    min_flows_for_creation: 1\n  dependencies:\n    \
         min_flows_for_creation: 1\n"
    );
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
    ];
    let start = |name| Daemon::start_with(name, &env, "postgres", &["--role", "process"], &yaml);
    let mut a = start("kafka-kill-a");
    let b = start("kafka-kill-b");
    let ingest = Daemon::start_with(
        "kafka-kill-ingest",
        &env[1..],
        "discard",
        &["--role", "ingest", "--no-xdp"],
        &yaml,
    );
    let assigned = |d: &Daemon| d.metric("flowlens_kafka_rebalances_total", &["kind=\"assign\""]);
    wait_for(30, "both instances in the group", &[&a, &b], || {
        assigned(&a) >= 1.0 && assigned(&b) >= 1.0
    });

    let generator = std::thread::spawn({
        let target = ingest.ipfix;
        move || support::graph::generate(target, 30, 300)
    });
    let consumed = |d: &Daemon| d.metric("flowlens_kafka_datagrams_consumed_total", &[]);
    wait_for(30, "a flush of the first flows", &[&a, &b], || {
        rt.block_on(support::graph::total_flows(&db.pool)) > 0 && consumed(&a) + consumed(&b) > 0.0
    });
    // Kill the owner of the exporter's partition, after it read more than it flushed.
    let (victim, survivor) = if consumed(&a) > 0.0 {
        (&mut a, &b)
    } else {
        (&mut { b }, &a)
    };
    std::thread::park_timeout(Duration::from_millis(700));
    let mut child = victim.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    let sent = generator.join().unwrap();
    let topology = Topology::enterprise();
    wait_for(
        60,
        "every flow once, through the survivor",
        &[survivor],
        || rt.block_on(support::graph::total_flows(&db.pool)) == i64::try_from(sent).unwrap(),
    );
    assert_eq!(
        rt.block_on(support::graph::edges(&db.pool)),
        support::graph::expected(&topology)
    );
    assert!(consumed(survivor) > 0.0, "the survivor took the partition");
    // Nothing more arrives later (a double count would show after the rebalance).
    std::thread::park_timeout(Duration::from_secs(2));
    assert_eq!(
        rt.block_on(support::graph::total_flows(&db.pool)),
        i64::try_from(sent).unwrap()
    );
    ingest.stop();
}

/// `--role all` with `ingestion.routing.mode: auto`: above the threshold for a few
/// seconds the datagrams go through Kafka (and back through this instance's own
/// consumer), below it for longer they go straight to the decode workers again. Each
/// switch is counted, both ways carried datagrams, and the graph counts every flow
/// exactly once.
#[test]
fn auto_routing_crosses_the_threshold_both_ways_without_loss_or_double_count() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker = Tansu::start();
    let db = rt.block_on(scratch("kafka_auto"));
    let bootstrap = broker.bootstrap();
    let d = Daemon::start_with(
        "kafka-auto",
        &[
            ("DATABASE_URL", db.url.as_str()),
            ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
            ("FLOWLENS_INGESTION__ROUTING__MODE", "auto"),
            (
                "FLOWLENS_INGESTION__ROUTING__KAFKA_THRESHOLD_FLOWS_PER_SEC",
                "400",
            ),
        ],
        "postgres",
        &["--no-xdp"],
        KAFKA_YAML,
    );
    let switches = |to: &str| {
        d.metric(
            "flowlens_routing_switches_total",
            &[&format!("to=\"{to}\"")],
        )
    };
    // 1000 flows/s for about 7 s: through Kafka after 3 s above 400.
    let mut sent = support::graph::generate(d.ipfix, 110, 1000);
    wait_for(10, "the switch to Kafka", &[&d], || {
        switches("kafka") == 1.0
    });
    // Quiet: back to the decode workers after 10 s below 280.
    wait_for(30, "the switch back", &[&d], || switches("postgres") == 1.0);
    // A little more, below the threshold, straight to the workers.
    sent += support::graph::generate(d.ipfix, 4, 100);
    wait_for(30, "every flow once", &[&d], || {
        rt.block_on(support::graph::total_flows(&db.pool)) == i64::try_from(sent).unwrap()
    });
    assert_eq!(
        rt.block_on(support::graph::edges(&db.pool)),
        support::graph::expected(&Topology::enterprise())
    );
    let produced = d.metric("flowlens_kafka_datagrams_produced_total", &[]);
    let consumed = d.metric("flowlens_kafka_datagrams_consumed_total", &[]);
    let decoded = d.metric("flowlens_decode_datagrams_total", &[]);
    assert!(produced > 0.0, "some datagrams went through Kafka");
    assert_eq!(consumed, produced, "and came back once each");
    assert!(decoded > consumed, "others went straight to the workers");
    assert_eq!(
        d.metric("flowlens_ingest_datagrams_received_total", &[]),
        decoded,
        "received = decoded, nothing dropped or sampled out"
    );
    assert_eq!(
        d.metric("flowlens_routing_mode", &["mode=\"postgres\""]),
        1.0
    );
    d.stop();
    assert_eq!(
        rt.block_on(support::graph::total_flows(&db.pool)),
        i64::try_from(sent).unwrap()
    );
}

/// The broker (tansu on S3 storage, so it keeps its topics) stopped and started
/// again under the generator's load. The producer holds at most 40 datagrams while the
/// broker is away: those reach the graph once it is back, the ones beyond the bound
/// are counted as dropped for their exporter, and received = produced + dropped holds
/// (pressure sampling is off here; with it on, the producer's fill raises the 1:N
/// sampling before the bound is reached, as the decode queues' fill does);
/// `/health` says `kafka: error` meanwhile.
#[test]
fn a_broker_restart_loses_nothing_within_the_producers_bound_and_counts_the_rest() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = flowlens_daemon::testing::moto::Moto::start();
    moto.create_bucket("flowlens");
    let mut broker = Tansu::start_with(flowlens_daemon::testing::tansu::Storage::S3 {
        endpoint: moto.endpoint(),
        bucket: "flowlens".into(),
    });
    let db = rt.block_on(scratch("kafka_restart"));
    let bootstrap = broker.bootstrap();
    let yaml = KAFKA_YAML
        .replacen(
            "kafka:\n",
            "kafka:\n  max_buffered_datagrams: 40\n  message_timeout_ms: 8000\n",
            1,
        )
        .replacen(
            "  properties:\n",
            "  properties:\n    reconnect.backoff.max.ms: \"500\"\n",
            1,
        );
    // Pressure sampling off: this test is about the producer's bound, which the
    // sampling would otherwise keep from filling.
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("KAFKA_BOOTSTRAP_SERVERS", bootstrap.as_str()),
        ("FLOWLENS_INGESTION__BACKPRESSURE__ENABLED", "false"),
    ];
    let process = Daemon::start_with(
        "kafka-restart-p",
        &env,
        "postgres",
        &["--role", "process"],
        &yaml,
    );
    let ingest = Daemon::start_with(
        "kafka-restart-i",
        &env[1..],
        "discard",
        &["--role", "ingest", "--no-xdp"],
        &yaml,
    );
    let both = [&process, &ingest];
    wait_for(30, "the consumer in its group", &both, || {
        process.metric("flowlens_kafka_rebalances_total", &["kind=\"assign\""]) >= 1.0
    });
    let generator = std::thread::spawn({
        let target = ingest.ipfix;
        move || support::graph::generate(target, 40, 300)
    });
    let exporter = "exporter=\"127.0.0.1\"";
    let produced = |d: &Daemon| d.metric("flowlens_kafka_datagrams_produced_total", &[exporter]);
    let dropped = |d: &Daemon| d.metric("flowlens_ingest_datagrams_dropped_total", &[exporter]);
    let received = |d: &Daemon| d.metric("flowlens_ingest_datagrams_received_total", &[exporter]);
    wait_for(20, "datagrams through the broker", &both, || {
        produced(&ingest) > 0.0
    });
    broker.stop();
    wait_for(
        20,
        "the buffer's bound exceeded while the broker is away",
        &both,
        || {
            dropped(&ingest) > 0.0
                && ingest
                    .get("/health")
                    .is_some_and(|h| h.contains("\"kafka\":\"error\""))
        },
    );
    broker.restart();
    let sent = generator.join().unwrap();

    // At the end, both sides at once (each metric read afresh: a delivery report may
    // come late): at ingest, nothing left in the producer's queue and received =
    // produced + dropped, where dropped = refused at the bound + given up after
    // message_timeout_ms; at process, every delivered datagram decoded once and its
    // flows in the graph. A datagram the broker wrote as it was killed, whose
    // acknowledgement never came, is given up (counted dropped) and yet consumed:
    // delivery is at least once, so consumed lies between produced and produced +
    // given up; copies a retry made are counted and skipped.
    wait_for_state(
        60,
        "every datagram accounted for on both sides",
        &both,
        || {
            let (r, p, d) = (received(&ingest), produced(&ingest), dropped(&ingest));
            let fill = ingest.metric("flowlens_kafka_producer_buffer_fill", &[]);
            let errors = |reason: &str| {
                ingest.metric(
                    "flowlens_kafka_produce_errors_total",
                    &[&format!("reason=\"{reason}\"")],
                )
            };
            let (refused, given_up) = (errors("buffer_full"), errors("delivery"));
            let consumed = process.metric("flowlens_kafka_datagrams_consumed_total", &[exporter]);
            let decoded = process.metric("flowlens_decode_datagrams_total", &[exporter]);
            let flows = process.metric("flowlens_flows_processed_total", &[]);
            #[expect(clippy::cast_possible_truncation, reason = "a small count")]
            let flows = flows as i64;
            let in_graph = rt.block_on(support::graph::total_flows(&db.pool));
            if r > 0.0
                && fill == 0.0
                && r == p + d
                && d == refused + given_up
                && refused > 0.0
                && consumed >= p
                && consumed <= p + given_up
                && decoded == consumed
                && in_graph == flows
            {
                Ok(())
            } else {
                Err(format!(
                    "received {r}, produced {p}, dropped {d} (refused {refused}, given up \
                 {given_up}), fill {fill}; consumed {consumed}, decoded {decoded}, copies \
                 {}, flows decoded {flows}, in the graph {in_graph}",
                    process.metric("flowlens_kafka_records_duplicate_total", &[])
                ))
            }
        },
    );
    let in_graph = rt.block_on(support::graph::total_flows(&db.pool));
    assert!(
        in_graph < i64::try_from(sent).unwrap(),
        "the datagrams beyond the bound are missing, and counted: {in_graph} of {sent}"
    );
    assert!(
        rt.block_on(support::graph::edges(&db.pool))
            .is_subset(&support::graph::expected(&Topology::enterprise()))
    );
    ingest.wait_until("kafka ok again", |d| {
        d.get("/health")
            .is_some_and(|h| h.contains("\"kafka\":\"ok\""))
    });
    ingest.stop();
    process.stop();
}
