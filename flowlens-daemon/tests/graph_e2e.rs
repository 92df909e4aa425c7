//! End to end on a real PostgreSQL: `flowlens-daemon generate` plays the enterprise
//! topology as IPFIX over UDP to `flowlens-daemon run --output postgres`; the
//! dependencies table then holds exactly the topology's edges, every flow counted, the
//! change events and the egress warning present, and `/health` reports PostgreSQL ok.

mod support;

use flowlens_daemon::generate::Topology;
use flowlens_daemon::testing::postgres::scratch;
use flowlens_daemon::testing::wire;
use support::Daemon;

#[test]
fn generated_topology_through_the_real_intake_into_postgresql() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("e2e"));
    let d = Daemon::start_output(
        "graph-e2e",
        &[
            ("DATABASE_URL", db.url.as_str()),
            (
                "FLOWLENS_DEPENDENCY_RESOLUTION__AGGREGATION__FLUSH_INTERVAL_SECONDS",
                "1",
            ),
        ],
        "postgres",
    );
    let rounds = 6u64;
    let sent = support::graph::generate(d.ipfix, rounds, 5000);
    let topology = Topology::enterprise();
    assert_eq!(
        sent,
        rounds * 2 * u64::try_from(topology.connections_per_round()).unwrap()
    );

    let total_flows = || rt.block_on(support::graph::total_flows(&db.pool));
    d.wait_until("every generated flow in the dependencies table", |_| {
        total_flows() == i64::try_from(sent).unwrap()
    });
    let health = d.get("/health").unwrap();
    assert!(health.contains("\"postgresql\":\"ok\""), "{health}");
    // Every metric has its help text and a name Prometheus's linter accepts.
    support::promtool_accepts(&d.get("/metrics").unwrap());
    d.stop();

    let edges = rt.block_on(support::graph::edges(&db.pool));
    let expected = support::graph::expected(&topology);
    assert_eq!(edges, expected);
    let (assets, deps, warnings): (i64, i64, i64) = rt
        .block_on(
            sqlx::query_as(
                "SELECT (SELECT count(*) FROM change_events WHERE change_type = 'new_asset'),
                        (SELECT count(*) FROM change_events WHERE change_type = 'new_dependency'),
                        (SELECT count(*) FROM alerts WHERE severity = 'warning')",
            )
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(
        (assets, deps, warnings),
        (
            i64::try_from(topology.addresses().len()).unwrap(),
            i64::try_from(expected.len()).unwrap(),
            1
        )
    );
    let raw: i64 = rt
        .block_on(sqlx::query_scalar("SELECT count(*) FROM flow_raw").fetch_one(&db.pool))
        .unwrap();
    assert_eq!(raw, i64::try_from(sent).unwrap());
}

/// An exporter whose clock is a day behind: its flows still count, in the window of
/// their arrival (the aggregator clamps them to now, beyond
/// `max_clock_skew_seconds`), and `flowlens_graph_flows_clock_skewed_total` says how
/// many were moved.
#[test]
fn flows_from_a_skewed_clock_land_in_the_current_window_and_are_counted() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("skew"));
    let d = Daemon::start_output(
        "graph-skew",
        &[
            ("DATABASE_URL", db.url.as_str()),
            (
                "FLOWLENS_DEPENDENCY_RESOLUTION__AGGREGATION__FLUSH_INTERVAL_SECONDS",
                "1",
            ),
        ],
        "postgres",
    );
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let day_ago = u32::try_from(now_s - 86_400).unwrap();
    let rec = wire::V5Record {
        src: [10, 7, 0, 1],
        dst: [10, 7, 0, 2],
        src_port: 40_000,
        dst_port: 5432,
        protocol: 6,
        packets: 4,
        bytes: 800,
        first: 9_000,
        last: 9_500,
        ..wire::V5Record::default()
    };
    // Six flows: an address becomes an asset after five (the design's default).
    let dg = wire::v5_packet(0, 10_000, day_ago, 0, 0, &[rec; 6]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.send_to(&dg, d.netflow).unwrap();

    let edge = || -> Option<(i64, i64)> {
        rt.block_on(
            sqlx::query_as(
                "SELECT d.total_flows, extract(epoch FROM d.last_seen)::int8
                 FROM dependencies d
                 JOIN asset_addresses s ON s.asset_id = d.source_asset_id
                 JOIN asset_addresses t ON t.asset_id = d.target_asset_id
                 WHERE s.ip = '10.7.0.1' AND t.ip = '10.7.0.2' AND d.port = 5432",
            )
            .fetch_optional(&db.pool),
        )
        .unwrap()
    };
    d.wait_until("the skewed flows in the dependencies table", |_| {
        edge().is_some_and(|(flows, _)| flows == 6)
    });
    let (_, last_seen) = edge().unwrap();
    let age = i64::try_from(now_s).unwrap() - last_seen;
    assert!(age.abs() < 600, "last_seen is {age} s from now, not a day");
    d.wait_until("the clock-skewed counter", |d| {
        (d.metric("flowlens_graph_flows_clock_skewed_total", &[]) - 6.0).abs() < 0.5
    });
    // The decoder saw the export clock a day off, too.
    assert!(d.metric("flowlens_decode_clock_skewed_total", &[]) >= 1.0);
    // Partition upkeep at start published what sits in the default partitions:
    // nothing, since every day has its partition.
    for table in ["table=\"flow_stats\"", "table=\"flow_raw\""] {
        assert!(
            d.metric("flowlens_graph_default_partition_rows", &[table])
                .abs()
                < 0.5
        );
    }
    assert!(
        d.metrics()
            .contains_key("flowlens_graph_default_partition_rows{table=\"flow_stats\"}"),
        "the gauge is exported"
    );
    d.stop();
}
