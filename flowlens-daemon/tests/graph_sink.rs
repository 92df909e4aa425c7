//! The graph sink against a real PostgreSQL: the enterprise topology's flows go in,
//! exactly its dependencies come out (client -> server, service port, never an
//! ephemeral port), with totals that match what was sent, scaled by sampling, and the
//! change events and alerts a new network produces. Then PostgreSQL goes away
//! mid-run and comes back, and no window is lost.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use flowlens_daemon::flow::{FlowProtocol, FlowRecord};
use flowlens_daemon::generate::Topology;
use flowlens_daemon::graph::config::ObservationPolicy;
use flowlens_daemon::graph::sink::{GraphHealth, GraphSettings, GraphSink};
use flowlens_daemon::store::cluster::Cluster;
use flowlens_daemon::testing::postgres::scratch;
use sqlx::Row;

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits u64")
}

fn settings(url: String) -> GraphSettings {
    flowlens_daemon::testing::postgres::graph_settings(url)
}

type Edge = (IpAddr, IpAddr, i16, i32);
/// (name, country code, ASN, AS organization) of an asset.
type Geo = (String, Option<String>, Option<i64>, Option<String>);

async fn dependencies(pool: &sqlx::PgPool) -> Vec<(Edge, i64, i64)> {
    sqlx::query(
        "SELECT (SELECT ip FROM asset_addresses WHERE asset_id = d.source_asset_id),
                (SELECT ip FROM asset_addresses WHERE asset_id = d.target_asset_id),
                d.protocol, d.port, d.total_flows, d.total_bytes
         FROM dependencies d ORDER BY 1, 2, 3, 4",
    )
    .fetch_all(pool)
    .await
    .expect("dependencies query")
    .into_iter()
    .map(|r| {
        let s: sqlx::types::ipnetwork::IpNetwork = r.get(0);
        let t: sqlx::types::ipnetwork::IpNetwork = r.get(1);
        (
            (s.ip(), t.ip(), r.get(2), r.get(3)),
            r.get::<i64, _>(4),
            r.get::<i64, _>(5),
        )
    })
    .collect()
}

fn expected(t: &Topology) -> BTreeSet<Edge> {
    t.dependencies()
        .into_iter()
        .map(|(c, s, p, port)| (c, s, i16::from(p), i32::from(port)))
        .collect()
}

#[test]
fn the_enterprise_topology_comes_out_exactly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("graphsink"));
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let mut sink = GraphSink::open(&settings(db.url.clone()), GraphHealth::default()).unwrap();
    // Six rounds: three with handshake flags, three without (direction from ports and
    // fan-out); every 10th record of the flagless ones is sampled 1:10.
    let now = now_ms();
    let mut sent_flows = 0u64;
    let mut sent_bytes = 0u64;
    for round in 0..6u64 {
        let mut recs = topology.round(round, now - 1000, exporter, round < 3);
        for (i, r) in recs.iter_mut().enumerate() {
            if round >= 3 && i % 10 == 0 {
                r.sampling_rate = Some(10);
            }
            sent_flows += 1;
            sent_bytes += r.bytes.unwrap() * u64::from(r.sampling_rate.unwrap());
        }
        sink.write(&recs);
    }
    assert!(sink.flush_now());

    let got = rt.block_on(dependencies(&db.pool));
    let edges: BTreeSet<Edge> = got.iter().map(|(e, _, _)| *e).collect();
    assert_eq!(
        edges,
        expected(&topology),
        "exactly the topology's dependencies"
    );
    assert!(
        edges.iter().all(|e| e.3 < 32_768),
        "no ephemeral port: {edges:?}"
    );
    // Both directions of every connection counted on its one dependency.
    let flows: i64 = got.iter().map(|(_, f, _)| f).sum();
    let bytes: i64 = got.iter().map(|(_, _, b)| b).sum();
    assert_eq!(u64::try_from(flows).unwrap(), sent_flows);
    assert_eq!(u64::try_from(bytes).unwrap(), sent_bytes);
    // flow_stats adds up to the same.
    let (stat_flows, stat_bytes): (i64, i64) = rt
        .block_on(
            sqlx::query_as("SELECT sum(flow_count)::int8, sum(byte_count)::int8 FROM flow_stats")
                .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!((stat_flows, stat_bytes), (flows, bytes));

    // A new network: one new_asset per address, one new_dependency per edge, and a
    // warning for the one egress dependency (app -> 203.0.113.10:443).
    let counts: Vec<(String, i64)> = rt
        .block_on(
            sqlx::query_as("SELECT change_type, count(*) FROM change_events GROUP BY 1 ORDER BY 1")
                .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(
        counts,
        [
            (
                "new_asset".to_owned(),
                i64::try_from(topology.addresses().len()).unwrap()
            ),
            (
                "new_dependency".to_owned(),
                i64::try_from(edges.len()).unwrap()
            ),
        ]
    );
    let warnings: Vec<String> = rt
        .block_on(
            sqlx::query_scalar("SELECT title FROM alerts WHERE severity = 'warning'")
                .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("203.0.113.10"), "{warnings:?}");
    let services: Vec<Option<String>> = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT inferred_service FROM dependencies WHERE port = 5432 LIMIT 1",
            )
            .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(services, [Some("postgresql".to_owned())]);

    // The same traffic again: totals grow, nothing is new.
    sink.write(&topology.round(6, now - 500, exporter, false));
    assert!(sink.flush_now());
    let events: i64 = rt
        .block_on(sqlx::query_scalar("SELECT count(*) FROM change_events").fetch_one(&db.pool))
        .unwrap();
    assert_eq!(
        events,
        i64::try_from(topology.addresses().len() + edges.len()).unwrap()
    );
}

/// An asset deleted behind the writer's back (as the API's DELETE does) does not wedge
/// it: the next flush notices, re-reads the assets and recreates the deleted one.
#[test]
fn a_deleted_asset_is_recreated_not_a_stuck_flush() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("deleted"));
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let mut sink = GraphSink::open(&settings(db.url.clone()), GraphHealth::default()).unwrap();
    let now = now_ms();
    for round in 0..3 {
        sink.write(&topology.round(round, now - 1000, exporter, true));
    }
    assert!(sink.flush_now());
    rt.block_on(sqlx::query("DELETE FROM assets WHERE name = '10.4.0.10'").execute(&db.pool))
        .unwrap();
    for round in 3..6 {
        sink.write(&topology.round(round, now - 500, exporter, true));
    }
    assert!(sink.flush_now(), "the flush after the delete succeeds");
    let edges: BTreeSet<Edge> = rt
        .block_on(dependencies(&db.pool))
        .into_iter()
        .map(|(e, _, _)| e)
        .collect();
    assert_eq!(edges, expected(&topology));
}

/// PostgreSQL stops between two flushes and starts again: the failed flush is kept
/// and written by the next one, so nothing is lost.
#[test]
fn a_postgresql_outage_loses_no_window() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A cluster of its own: stopping the shared one would break other tests.
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-pg-outage");
    let cluster = Cluster::ensure(&dir).unwrap();
    let url = rt.block_on(async {
        let admin = flowlens_daemon::store::connect(&cluster.url("postgres"), 1)
            .await
            .unwrap();
        let name = format!("outage_{}", std::process::id());
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
            .execute(&admin)
            .await
            .unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        cluster.url(&name)
    });
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let health = GraphHealth::default();
    let mut sink = GraphSink::open(&settings(url.clone()), health.clone()).unwrap();
    let now = now_ms();
    let per_round = topology.connections_per_round() * 2;
    sink.write(&topology.round(0, now - 1000, exporter, true));
    assert!(sink.flush_now());

    cluster.stop().unwrap();
    sink.write(&topology.round(1, now - 900, exporter, true));
    assert!(
        !sink.flush_now(),
        "the flush fails while PostgreSQL is down"
    );
    assert_eq!(health.status(), "error");
    sink.write(&topology.round(2, now - 800, exporter, false));
    assert!(!sink.flush_now());

    cluster.start().unwrap();
    // The pool reconnects; the next flush writes all three rounds' worth.
    let mut ok = false;
    for _ in 0..10 {
        if sink.flush_now() {
            ok = true;
            break;
        }
        std::thread::park_timeout(std::time::Duration::from_millis(500));
    }
    assert!(ok, "flush after restart");
    assert_eq!(health.status(), "ok");
    let pool = rt
        .block_on(flowlens_daemon::store::connect(&url, 1))
        .unwrap();
    let flows: i64 = rt
        .block_on(
            sqlx::query_scalar("SELECT sum(total_flows)::int8 FROM dependencies").fetch_one(&pool),
        )
        .unwrap();
    assert_eq!(flows, i64::try_from(3 * per_round).unwrap());
    let edges: BTreeSet<Edge> = rt
        .block_on(dependencies(&pool))
        .into_iter()
        .map(|(e, _, _)| e)
        .collect();
    assert_eq!(edges, expected(&topology));
}

/// A dnsmasq on 127.0.0.1 answering PTR queries for the topology's database server;
/// killed when dropped.
struct Dnsmasq(std::process::Child, u16);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq() -> Option<Dnsmasq> {
    if Command::new("dnsmasq").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "dnsmasq is not installed");
        eprintln!("skipping: dnsmasq is not installed");
        return None;
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let child = Command::new("dnsmasq")
        .args([
            "--no-daemon",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--no-resolv",
            "--no-hosts",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--local=/10.in-addr.arpa/",
            "--ptr-record=10.0.4.10.in-addr.arpa,db1.corp.example",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning dnsmasq");
    Some(Dnsmasq(child, port))
}

/// Waits until dnsmasq answers (a probe with its own cache), so the writer's first
/// lookup does not meet a server still starting and cache "no name".
fn wait_for_dnsmasq(rt: &tokio::runtime::Runtime, dns: &Dnsmasq) {
    let probe_cfg = flowlens_daemon::enrich::rdns::DnsConfig {
        resolver: format!("127.0.0.1:{}", dns.1),
        negative_cache_ttl_seconds: 0,
        ..Default::default()
    };
    let ready = (0..50).any(|_| {
        let probe =
            flowlens_daemon::enrich::rdns::ReverseDns::new(&probe_cfg, 10, rt.handle().clone())
                .expect("probe config")
                .expect("probe enabled");
        let answer = rt.block_on(probe.resolve_now("10.4.0.10".parse().expect("an address")));
        if answer.is_none() {
            std::thread::park_timeout(std::time::Duration::from_millis(100));
        }
        answer.is_some()
    });
    assert!(ready, "dnsmasq answers");
}

/// New assets get GeoIP/ASN columns (`MaxMind`'s test databases) and, once the reverse
/// lookup answers, an fqdn and name with an `asset_changed` event.
#[test]
fn new_assets_are_enriched_with_geoip_and_reverse_dns() {
    let Some(dns) = dnsmasq() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_for_dnsmasq(&rt, &dns);
    let db = rt.block_on(scratch("enrich"));
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/geoip");
    let mut s = settings(db.url.clone());
    s.enrichment.geoip.enabled = true;
    s.enrichment.geoip.database_path = Some(data.join("GeoLite2-City-Test.mmdb"));
    s.enrichment.geoip.asn_database_path = Some(data.join("GeoLite2-ASN-Test.mmdb"));
    s.enrichment.dns.enabled = true;
    s.enrichment.dns.resolver = format!("127.0.0.1:{}", dns.1);
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let now = now_ms();
    let mut recs = topology.round(0, now - 1000, exporter, true);
    // The app server also calls an API in London (GB in the test City database) and
    // one in Telstra's space (AS1221 in the test ASN database).
    for (i, server) in ["81.2.69.142", "1.128.0.1"].iter().enumerate() {
        for round in 0..6u16 {
            let mut r = recs[0];
            r.src_ip = Some("10.3.0.10".parse().unwrap());
            r.dst_ip = Some(server.parse().unwrap());
            r.src_port = Some(40_000 + round * 10 + u16::try_from(i).unwrap());
            r.dst_port = Some(443);
            r.protocol = Some(6);
            r.tcp_flags = Some(0x02);
            recs.push(r);
        }
    }
    for round in 1..4 {
        recs.extend(topology.round(round, now - 900, exporter, true));
    }
    sink.write(&recs);
    assert!(sink.flush_now());
    let geo: Vec<Geo> = rt
        .block_on(
            sqlx::query_as(
                "SELECT name, country_code, asn, as_org FROM assets
                 WHERE name IN ('81.2.69.142', '1.128.0.1') ORDER BY name",
            )
            .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(
        geo,
        [
            (
                "1.128.0.1".to_owned(),
                None,
                Some(1221),
                Some("Telstra Pty Ltd".to_owned())
            ),
            ("81.2.69.142".to_owned(), Some("GB".to_owned()), None, None),
        ]
    );
    // The lookups run between flushes; a later flush writes the names.
    let mut named = None;
    for _ in 0..40 {
        std::thread::park_timeout(std::time::Duration::from_millis(100));
        assert!(sink.flush_now());
        named = rt
            .block_on(
                sqlx::query_as::<_, (String, Option<String>)>(
                    "SELECT name, fqdn FROM assets a JOIN asset_addresses aa ON aa.asset_id = a.id
                     WHERE aa.ip = '10.4.0.10'",
                )
                .fetch_optional(&db.pool),
            )
            .unwrap()
            .filter(|(_, fqdn)| fqdn.is_some());
        if named.is_some() {
            break;
        }
    }
    assert_eq!(
        named,
        Some((
            "db1.corp.example".to_owned(),
            Some("db1.corp.example".to_owned())
        ))
    );
    let changed: Vec<serde_json::Value> = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT before_state FROM change_events WHERE change_type = 'asset_changed'",
            )
            .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["name"], "10.4.0.10");
    // Addresses dnsmasq has no name for stay as they were.
    let unnamed: i64 = rt
        .block_on(
            sqlx::query_scalar("SELECT count(*) FROM assets WHERE fqdn IS NULL")
                .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(
        unnamed,
        i64::try_from(topology.addresses().len() + 2 - 1).unwrap()
    );
}

/// A dependency silent for `stale_after_hours` becomes a `removed_dependency` event
/// (with an alert), once; when its traffic returns it is new again.
#[test]
fn stale_dependencies_are_removed_and_come_back() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("stale"));
    let mut s = settings(db.url.clone());
    s.resolution.change_detection.check_interval_seconds = 1;
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let now = now_ms();
    for round in 0..3 {
        sink.write(&topology.round(round, now - 1000, exporter, true));
    }
    assert!(sink.flush_now());
    // The database dependency has been silent for 200 hours (stale after 168).
    rt.block_on(
        sqlx::query(
            "UPDATE dependencies SET last_seen = now() - interval '200 hours' WHERE port = 5432",
        )
        .execute(&db.pool),
    )
    .unwrap();
    let removed = || -> i64 {
        rt.block_on(
            sqlx::query_scalar(
                "SELECT count(*) FROM change_events WHERE change_type = 'removed_dependency'",
            )
            .fetch_one(&db.pool),
        )
        .unwrap()
    };
    for _ in 0..2 {
        std::thread::park_timeout(std::time::Duration::from_millis(1100));
        sink.tick();
        // Jobs run in order: when this flush answers, the stale check has run.
        assert!(sink.flush_now());
    }
    assert_eq!(removed(), 1, "one removal, not one per check");
    let alerts: i64 = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT count(*) FROM alerts WHERE rule_name = 'removed-dependency'",
            )
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(alerts, 1);
    // Traffic returns: the dependency is new again, and no longer stale.
    for round in 3..5 {
        sink.write(&topology.round(round, now - 500, exporter, true));
    }
    assert!(sink.flush_now());
    let back: Vec<serde_json::Value> = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT c.before_state FROM change_events c JOIN dependencies d ON d.id = c.entity_id
                 WHERE c.change_type = 'new_dependency' AND d.port = 5432 AND c.before_state IS NOT NULL",
            )
            .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0]["stale"], true);
    let stale: bool = rt
        .block_on(
            sqlx::query_scalar("SELECT stale FROM dependencies WHERE port = 5432")
                .fetch_one(&db.pool),
        )
        .unwrap();
    assert!(!stale);
}

/// Partition upkeep runs on the check timer while the daemon runs (not only at start):
/// a week of partitions ahead comes back after it was dropped, rows that landed in a
/// default partition move into their day's partition, and the default-rows gauge says
/// what is left. Change detection off: upkeep does not depend on it.
#[test]
fn partitions_are_kept_ahead_while_running() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("upkeep_timer"));
    let mut s = settings(db.url.clone());
    s.resolution.change_detection.check_interval_seconds = 1;
    s.resolution.change_detection.enabled = false;
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    let last_day = |pool: &sqlx::PgPool| {
        let pool = pool.clone();
        rt.block_on(async move {
            sqlx::query_scalar::<_, String>(
                "SELECT 'flow_stats_' || to_char(current_date + 7, 'YYYYMMDD')",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        })
    };
    let name = last_day(&db.pool);
    let exists = |name: &str| -> bool {
        rt.block_on(
            sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                .bind(name)
                .fetch_one(&db.pool),
        )
        .unwrap()
    };
    assert!(exists(&name), "made at start, 7 days ahead");
    // Time passes (simulated): the last partition ahead is gone, and a row of that day
    // arrives and lands in the default partition.
    rt.block_on(async {
        sqlx::query(&format!("DROP TABLE {name}"))
            .execute(&db.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO flow_stats (time, source_asset_id, target_asset_id, protocol, port,
                                     flow_count, byte_count, packet_count)
             VALUES (current_date + 7, gen_random_uuid(), gen_random_uuid(), 6, 80, 1, 1, 1)",
        )
        .execute(&db.pool)
        .await
        .unwrap();
    });
    std::thread::park_timeout(std::time::Duration::from_millis(1100));
    sink.tick();
    // Jobs run in order: when this flush answers, the upkeep has run.
    assert!(sink.flush_now());
    assert!(exists(&name), "recreated by the upkeep timer");
    let (moved, left): (i64, i64) = rt
        .block_on(
            sqlx::query_as(&format!(
                "SELECT (SELECT count(*) FROM {name}), (SELECT count(*) FROM flow_stats_default)"
            ))
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!((moved, left), (1, 0));
}

/// The fan-out evidence starts afresh each aggregation window (the previous window's
/// counts kept as evidence meanwhile), so its bounded table never stays full.
#[test]
fn fan_out_evidence_rotates_with_the_window() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("fan_out_window"));
    let mut s = settings(db.url.clone());
    s.resolution.aggregation.window_size_seconds = 1;
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    sink.write(&Topology::enterprise().round(0, now_ms(), exporter, true));
    assert!(sink.fan_out_endpoints() > 0);
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1100);
    while std::time::Instant::now() < until {
        std::thread::park_timeout(until - std::time::Instant::now());
    }
    sink.write(&[]);
    assert_eq!(sink.fan_out_endpoints(), 0, "a new window starts empty");
}

/// Plays three rounds of the enterprise topology, `ago_ms` before now, and flushes
/// them: the graph the later tests start from.
fn seed(sink: &mut GraphSink, ago_ms: u64) -> (Topology, IpAddr) {
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().expect("an address");
    let now = now_ms();
    for round in 0..3 {
        sink.write(&topology.round(round, now - ago_ms, exporter, true));
    }
    assert!(sink.flush_now());
    (topology, exporter)
}

/// `min_flows_for_creation` and the confidence threshold decide creation only: an
/// existing dependency seen by a single flow (a nightly job) still moves its
/// `last_seen` and totals, so it is not reported removed while in use.
#[test]
fn thresholds_create_but_do_not_starve_existing_dependencies() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("thresholds"));
    let mut sink = GraphSink::open(&settings(db.url.clone()), GraphHealth::default()).unwrap();
    let (topology, exporter) = seed(&mut sink, 60_000);
    let pg = |pool: &sqlx::PgPool| {
        let pool = pool.clone();
        rt.block_on(async move {
            sqlx::query_as::<_, (i64, f64)>(
                "SELECT total_flows, extract(epoch FROM now() - last_seen)::float8
                 FROM dependencies WHERE port = 5432",
            )
            .fetch_one(&pool)
            .await
            .unwrap()
        })
    };
    let (flows, _) = pg(&db.pool);
    rt.block_on(
        sqlx::query(
            "UPDATE dependencies SET last_seen = now() - interval '2 days' WHERE port = 5432",
        )
        .execute(&db.pool),
    )
    .unwrap();
    // One flow of that dependency (below min_flows_for_creation = 3), a day later.
    let one: Vec<_> = topology
        .round(3, now_ms(), exporter, true)
        .into_iter()
        .filter(|r| r.dst_port == Some(5432))
        .take(1)
        .collect();
    assert_eq!(one.len(), 1);
    sink.write(&one);
    assert!(sink.flush_now());
    let (after, age_s) = pg(&db.pool);
    assert_eq!(after, flows + 1, "the one flow is added");
    assert!(age_s < 600.0, "last_seen moved to now, not {age_s} s ago");
}

/// A known asset's `last_seen` moves with any flow it sends or receives, also when the
/// peer is no asset yet; an asset that had gone stale and talks again gets a
/// `new_asset` event.
#[test]
fn assets_are_seen_whatever_their_peer_and_come_back_from_stale() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("asset_seen"));
    let mut sink = GraphSink::open(&settings(db.url.clone()), GraphHealth::default()).unwrap();
    let (topology, exporter) = seed(&mut sink, 60_000);
    // The PostgreSQL server went quiet long ago and was marked stale.
    let one = topology
        .round(3, now_ms(), exporter, true)
        .into_iter()
        .find(|r| r.dst_port == Some(5432))
        .unwrap();
    let server = one.dst_ip.unwrap().to_string();
    rt.block_on(
        sqlx::query(
            "UPDATE assets SET last_seen = now() - interval '10 days', stale = true
             WHERE name = $1",
        )
        .bind(&server)
        .execute(&db.pool),
    )
    .unwrap();
    // One flow from a client never seen before (no asset: below
    // assets.min_flows_for_creation).
    let mut from_new = one;
    from_new.src_ip = Some("10.99.0.7".parse().unwrap());
    sink.write(&[from_new]);
    assert!(sink.flush_now());
    let (age_s, stale): (f64, bool) = rt
        .block_on(
            sqlx::query_as(
                "SELECT extract(epoch FROM now() - last_seen)::float8, stale
                 FROM assets WHERE name = $1",
            )
            .bind(&server)
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert!(age_s < 600.0, "last_seen moved: {age_s} s ago");
    assert!(!stale);
    let back: i64 = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT count(*) FROM change_events c JOIN assets a ON a.id = c.entity_id
                 WHERE c.change_type = 'new_asset' AND a.name = $1",
            )
            .bind(&server)
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(back, 2, "created, then back from stale");
    let no_asset: i64 = rt
        .block_on(
            sqlx::query_scalar("SELECT count(*) FROM asset_addresses WHERE ip = '10.99.0.7'")
                .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(no_asset, 0, "the new client is not an asset yet");
}

/// A raw flow PostgreSQL refuses as data is set aside and counted: the graph and the
/// other raw flows of the flush are written (it used to fail the whole flush, again
/// at every retry).
#[test]
fn a_refused_raw_flow_does_not_hold_back_the_graph() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("raw_refused"));
    // A constraint standing for whatever PostgreSQL may refuse in a raw row.
    rt.block_on(
        sqlx::query("ALTER TABLE flow_raw ADD CONSTRAINT no_5432 CHECK (dst_port <> 5432)")
            .execute(&db.pool),
    )
    .unwrap();
    let topology = Topology::enterprise();
    let exporter: IpAddr = "192.0.2.1".parse().unwrap();
    let mut sink = GraphSink::open(&settings(db.url.clone()), GraphHealth::default()).unwrap();
    let now = now_ms();
    let mut sent = 0;
    let mut refused = 0;
    for round in 0..3 {
        let batch = topology.round(round, now - 1000, exporter, true);
        sent += batch.len();
        refused += batch.iter().filter(|r| r.dst_port == Some(5432)).count();
        sink.write(&batch);
    }
    assert!(refused > 0);
    assert!(sink.flush_now(), "the flush succeeds");
    let edges: BTreeSet<Edge> = rt
        .block_on(dependencies(&db.pool))
        .into_iter()
        .map(|(e, _, _)| e)
        .collect();
    assert_eq!(edges, expected(&topology));
    let raw: i64 = rt
        .block_on(sqlx::query_scalar("SELECT count(*) FROM flow_raw").fetch_one(&db.pool))
        .unwrap();
    assert_eq!(raw, i64::try_from(sent - refused).unwrap());
}

/// A reverse lookup dropped because every slot was busy (a large first flush) is asked
/// for again at the next flushes, so the asset gets its name in the end.
#[test]
fn dropped_reverse_lookups_are_retried() {
    let Some(dns) = dnsmasq() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_for_dnsmasq(&rt, &dns);
    let db = rt.block_on(scratch("rdns_retry"));
    let mut s = settings(db.url.clone());
    s.enrichment.dns.enabled = true;
    s.enrichment.dns.resolver = format!("127.0.0.1:{}", dns.1);
    // One lookup at a time: of the first flush's dozen new assets, all but one are
    // dropped at creation.
    s.enrichment.dns.max_concurrent_lookups = 1;
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    seed(&mut sink, 1000);
    let fqdn = || -> Option<String> {
        rt.block_on(
            sqlx::query_scalar(
                "SELECT a.fqdn FROM assets a JOIN asset_addresses aa ON aa.asset_id = a.id
                 WHERE aa.ip = '10.4.0.10'",
            )
            .fetch_one(&db.pool),
        )
        .unwrap()
    };
    let named = (0..80).any(|_| {
        std::thread::park_timeout(std::time::Duration::from_millis(50));
        assert!(sink.flush_now());
        fqdn().is_some()
    });
    assert!(named, "the database server got its name after retries");
    assert_eq!(fqdn().as_deref(), Some("db1.corp.example"));
}

/// What a person set wins over flows, as the API writes it: a confidence an editor
/// lowered (`user_fields`) stays lowered; a dependency an editor deleted
/// (`dependency_suppressions`) is not created again by its flows; a declared one
/// (`discovery_source = 'manual'`) does not go stale from silence; and a deleted
/// asset's cached id is forgotten, so no `flow_stats` row refers to it.
#[test]
fn manual_edits_survive_flushes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("manual_edits"));
    let mut s = settings(db.url.clone());
    s.resolution.change_detection.check_interval_seconds = 1;
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    let (topology, exporter) = seed(&mut sink, 60_000);
    let sql = |q: &str| {
        rt.block_on(sqlx::query(q).execute(&db.pool))
            .unwrap_or_else(|e| panic!("{q}: {e}"));
    };
    let one = |q: &str| -> i64 {
        rt.block_on(sqlx::query_scalar(q).fetch_one(&db.pool))
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    };
    // An editor lowers the PostgreSQL dependency's confidence; another deletes the
    // Redis dependency; a third declares one that no flow shows, silent for 30 days.
    sql(
        "UPDATE dependencies SET confidence = 0.2, user_fields = ARRAY['confidence']
         WHERE port = 5432",
    );
    sql("WITH d AS (DELETE FROM dependencies WHERE port = 6379
                    RETURNING source_asset_id, target_asset_id, protocol, port)
         INSERT INTO dependency_suppressions (source_asset_id, target_asset_id, protocol, port,
                                              deleted_by)
         SELECT *, 'editor' FROM d");
    sql(
        "INSERT INTO dependencies (source_asset_id, target_asset_id, protocol, port,
             first_seen, last_seen, discovery_source, user_fields, confidence)
         SELECT s.id, t.id, 6, 9999, now() - interval '30 days', now() - interval '30 days',
                'manual', ARRAY['confidence', 'tags', 'notes'], 1.0
         FROM assets s, assets t WHERE s.name = '10.2.0.10' AND t.name = '10.3.0.10'",
    );
    let redis_before = one("SELECT count(*) FROM flow_stats WHERE port = 6379");
    let pg_flows = one("SELECT total_flows FROM dependencies WHERE port = 5432");
    for round in 3..6 {
        sink.write(&topology.round(round, now_ms() - 1000, exporter, true));
    }
    std::thread::park_timeout(std::time::Duration::from_millis(1100));
    sink.tick();
    assert!(sink.flush_now());
    let conf: f32 = rt
        .block_on(
            sqlx::query_scalar("SELECT confidence FROM dependencies WHERE port = 5432")
                .fetch_one(&db.pool),
        )
        .unwrap();
    assert!(
        (conf - 0.2).abs() < 1e-6,
        "the editor's confidence stays: {conf}"
    );
    assert!(
        one("SELECT total_flows FROM dependencies WHERE port = 5432") > pg_flows,
        "its traffic is still counted"
    );
    assert_eq!(
        one("SELECT count(*) FROM dependencies WHERE port = 6379"),
        0,
        "a deleted dependency is not created again"
    );
    assert!(
        one("SELECT count(*) FROM flow_stats WHERE port = 6379") >= redis_before,
        "its traffic is still recorded"
    );
    assert_eq!(
        one("SELECT count(*) FROM dependencies WHERE port = 9999 AND NOT stale"),
        1,
        "a declared dependency does not go stale from silence"
    );

    // An asset deleted behind the writer's back: nothing written after refers to it.
    let gone: sqlx::types::Uuid = rt
        .block_on(
            sqlx::query_scalar("DELETE FROM assets WHERE name = '10.4.0.10' RETURNING id")
                .fetch_one(&db.pool),
        )
        .unwrap();
    let orphans = || -> i64 {
        rt.block_on(
            sqlx::query_scalar(
                "SELECT coalesce(sum(flow_count), 0)::int8 FROM flow_stats
                 WHERE source_asset_id = $1 OR target_asset_id = $1",
            )
            .bind(gone)
            .fetch_one(&db.pool),
        )
        .unwrap()
    };
    let history = orphans();
    sink.write(&topology.round(6, now_ms() - 500, exporter, true));
    assert!(sink.flush_now());
    assert_eq!(
        orphans(),
        history,
        "no new flow_stats row revives the deleted asset's id"
    );
}

/// Two routers on one path export the same connections. With the default policy
/// (`first_per_edge`) every edge of a window counts from one of them, so the graph's
/// totals equal what was sent; with `all` they are double: the double counting,
/// measured.
#[test]
fn two_observation_points_count_each_connection_once() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let measure = |policy| -> (i64, i64) {
        let db = rt.block_on(scratch("observation_points"));
        let mut s = settings(db.url.clone());
        s.resolution.aggregation.observation_policy = policy;
        let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
        let topology = Topology::enterprise();
        let now = now_ms();
        let mut sent = 0;
        for round in 0..4 {
            for router in ["192.0.2.1", "192.0.2.2"] {
                let exporter: IpAddr = router.parse().unwrap();
                sink.write(&topology.round(round, now - 1000, exporter, true));
            }
            sent += topology.connections_per_round() * 2;
        }
        assert!(sink.flush_now());
        let counted: i64 = rt
            .block_on(
                sqlx::query_scalar("SELECT sum(flow_count)::int8 FROM flow_stats")
                    .fetch_one(&db.pool),
            )
            .unwrap();
        (counted, i64::try_from(sent).unwrap())
    };
    let (once, sent) = measure(ObservationPolicy::FirstPerEdge);
    assert_eq!(once, sent, "each connection once");
    let (all, sent) = measure(ObservationPolicy::All);
    assert_eq!(all, 2 * sent, "every record counted: double");
}

/// Both records of a mid-connection TCP exchange (ACK|PSH, no SYN) between `client`
/// and `server`, as a NetFlow exporter sends them.
fn connection(client: (&str, u16), server: (&str, u16), now: u64) -> [FlowRecord; 2] {
    let exporter: IpAddr = "192.0.2.1".parse().expect("an address");
    let one = |src: (&str, u16), dst: (&str, u16)| {
        let mut r = FlowRecord::empty(FlowProtocol::Ipfix, exporter, now);
        r.src_ip = Some(src.0.parse().expect("an address"));
        r.dst_ip = Some(dst.0.parse().expect("an address"));
        r.src_port = Some(src.1);
        r.dst_port = Some(dst.1);
        r.protocol = Some(6);
        r.tcp_flags = Some(0x18);
        r.bytes = Some(4000);
        r.packets = Some(10);
        r.flow_start_ms = Some(now - 500);
        r.flow_end_ms = Some(now);
        r
    };
    [one(client, server), one(server, client)]
}

/// Waits for the next wall-clock window of `window_ms`.
fn next_window(window_ms: u64) {
    let now = now_ms();
    let until = std::time::Instant::now()
        + std::time::Duration::from_millis(window_ms - now % window_ms + 20);
    while std::time::Instant::now() < until {
        std::thread::park_timeout(until - std::time::Instant::now());
    }
}

/// A gRPC service on 50051 with two clients whose ephemeral ports are lower than 50051
/// (so "lower port" guesses the client), no SYNs and too few clients for fan-out: it
/// keeps its port while its peers' ports change, is learnt after two windows, becomes
/// the server of the dependencies, and is remembered across a restart.
#[test]
fn listening_endpoints_are_learnt_and_remembered() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("listeners"));
    let mut s = settings(db.url.clone());
    s.resolution.aggregation.window_size_seconds = 1;
    let server = ("10.9.0.1", 50051);
    let play = |sink: &mut GraphSink, clients: &[&str], round: u16| {
        let now = now_ms();
        let mut batch = Vec::new();
        for (i, c) in clients.iter().enumerate() {
            for k in 0..3u16 {
                let port = 40_000 + round * 100 + k * 10 + u16::try_from(i).unwrap();
                batch.extend(connection((c, port), server, now));
            }
        }
        sink.write(&batch);
    };
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    for round in 0..4 {
        play(&mut sink, &["10.9.0.2", "10.9.0.3"], round);
        next_window(1000);
        sink.write(&[]);
    }
    assert!(sink.learnt_listeners() >= 1);
    assert!(sink.flush_now());
    let deps: BTreeSet<Edge> = rt
        .block_on(dependencies(&db.pool))
        .into_iter()
        .map(|(e, _, _)| e)
        .collect();
    let want: BTreeSet<Edge> = ["10.9.0.2", "10.9.0.3"]
        .iter()
        .map(|c| (c.parse().unwrap(), server.0.parse().unwrap(), 6, 50051))
        .collect();
    assert_eq!(
        deps, want,
        "clients depend on the server's 50051, nothing reversed"
    );
    let learnt: Vec<(String, i32)> = rt
        .block_on(
            sqlx::query_as("SELECT host(ip), port FROM service_endpoints ORDER BY 1, 2")
                .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(learnt, vec![("10.9.0.1".to_owned(), 50051)]);
    sink.close();
    drop(sink);

    // Restarted: known at once; a new client's first window orients right.
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    assert_eq!(sink.learnt_listeners(), 1);
    play(&mut sink, &["10.9.0.4"], 9);
    assert!(sink.flush_now());
    let deps: BTreeSet<Edge> = rt
        .block_on(dependencies(&db.pool))
        .into_iter()
        .map(|(e, _, _)| e)
        .collect();
    assert!(
        deps.contains(&(
            "10.9.0.4".parse().unwrap(),
            server.0.parse().unwrap(),
            6,
            50051
        )),
        "{deps:?}"
    );
    assert_eq!(deps.len(), 3);
}

/// Assets left unnamed by an earlier run (lookups off, or a restart before the answers
/// came) are queued again when the daemon starts: no new traffic is needed. Every
/// settled lookup, name or none, is marked checked.
#[test]
fn unnamed_assets_are_looked_up_after_a_restart() {
    let Some(dns) = dnsmasq() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    wait_for_dnsmasq(&rt, &dns);
    let db = rt.block_on(scratch("rdns_requeue"));
    let mut s = settings(db.url.clone());
    {
        let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
        seed(&mut sink, 1000);
        sink.close();
    }
    let one = |q: &str| -> i64 {
        rt.block_on(sqlx::query_scalar(q).fetch_one(&db.pool))
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    };
    let assets = one("SELECT count(*) FROM assets");
    assert_eq!(one("SELECT count(*) FROM assets WHERE fqdn IS NOT NULL"), 0);
    s.enrichment.dns.enabled = true;
    s.enrichment.dns.resolver = format!("127.0.0.1:{}", dns.1);
    let mut sink = GraphSink::open(&s, GraphHealth::default()).unwrap();
    let settled = (0..80).any(|_| {
        std::thread::park_timeout(std::time::Duration::from_millis(50));
        assert!(sink.flush_now());
        one("SELECT count(*) FROM assets WHERE rdns_checked_at IS NOT NULL") == assets
    });
    assert!(settled, "every asset's lookup settled");
    let named: Vec<(String, String)> = rt
        .block_on(
            sqlx::query_as("SELECT name, fqdn FROM assets WHERE fqdn IS NOT NULL")
                .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(
        named,
        vec![("db1.corp.example".to_owned(), "db1.corp.example".to_owned())]
    );
}

/// A graph row PostgreSQL refuses as data (here: totals that would overflow their
/// columns, SQLSTATE 22003) is set aside, not retried with the whole flush: the rest
/// of the graph is written, this flush and the next.
#[test]
fn a_refused_graph_row_does_not_block_the_graph() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("refused_graph_row"));
    let mut sink = GraphSink::open(&settings(db.url.clone()), GraphHealth::default()).unwrap();
    let (topology, exporter) = seed(&mut sink, 1000);
    let one = |q: &str| -> i64 {
        rt.block_on(sqlx::query_scalar(q).fetch_one(&db.pool))
            .unwrap_or_else(|e| panic!("{q}: {e}"))
    };
    let sql = |q: &str| {
        rt.block_on(sqlx::query(q).execute(&db.pool))
            .unwrap_or_else(|e| panic!("{q}: {e}"));
    };
    // The PostgreSQL dependency's bytes and the Redis rows of this window are at the
    // top of their types: the next flush's additions overflow.
    sql("UPDATE dependencies SET total_bytes = 9223372036854775000 WHERE port = 5432");
    sql("UPDATE flow_stats SET flow_count = 2147483600 WHERE port = 6379");
    let before =
        one("SELECT sum(total_flows)::int8 FROM dependencies WHERE port NOT IN (5432, 6379)");
    for round in 3..5 {
        sink.write(&topology.round(round, now_ms() - 500, exporter, true));
        assert!(
            sink.flush_now(),
            "the flush succeeds without the refused rows"
        );
    }
    let after =
        one("SELECT sum(total_flows)::int8 FROM dependencies WHERE port NOT IN (5432, 6379)");
    assert!(after > before, "the rest of the graph is written");
    assert_eq!(
        one("SELECT total_bytes FROM dependencies WHERE port = 5432"),
        9_223_372_036_854_775_000,
        "the refused row is as it was"
    );
}

/// A dependency's port, service and port range.
type PortRange = (i32, Option<String>, Option<i32>, Option<i32>);

/// Passive FTP: a control connection on 21, then a data connection per transfer to a
/// new high port. The data ports fold into one dependency (port 0, "dynamic", with the
/// range they cover) instead of one dependency (and alert) per port.
#[test]
fn dynamic_data_ports_fold_into_one_dependency() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("dynamic_ports"));
    let mut sink = GraphSink::open(&settings(db.url.clone()), GraphHealth::default()).unwrap();
    let now = now_ms();
    let (client, server) = ("10.8.0.2", "10.8.0.1");
    let mut batch = Vec::new();
    for k in 0..3u16 {
        batch.extend(connection((client, 41_000 + k), (server, 21), now));
    }
    let data_ports = [50_123u16, 51_777, 49_200, 60_001, 55_555];
    for (i, port) in data_ports.iter().enumerate() {
        for k in 0..2u16 {
            let cport = 42_000 + u16::try_from(i).unwrap() * 10 + k;
            let [mut fwd, back] = connection((client, cport), (server, *port), now);
            // The client's opening SYN, exported on its own.
            fwd.packets = Some(1);
            fwd.tcp_flags = Some(0x02);
            batch.extend([fwd, back]);
        }
    }
    sink.write(&batch);
    assert!(sink.flush_now());
    let deps: Vec<PortRange> = rt
        .block_on(
            sqlx::query_as(
                "SELECT port, inferred_service, port_range_min, port_range_max
                 FROM dependencies ORDER BY port",
            )
            .fetch_all(&db.pool),
        )
        .unwrap();
    assert_eq!(
        deps,
        vec![
            (0, Some("dynamic".to_owned()), Some(49_200), Some(60_001)),
            (21, Some("ftp".to_owned()), None, None),
        ]
    );
}

/// A steady flush rewrites only what changes: assets seen again within their 5-minute
/// step are left as they are (same row version), and no index on `last_seen` makes
/// the dependency and asset updates touch every index (migration 13).
#[test]
fn a_steady_flush_leaves_unchanged_rows_alone() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("steady_flush"));
    let mut sink = GraphSink::open(&settings(db.url.clone()), GraphHealth::default()).unwrap();
    let (topology, exporter) = seed(&mut sink, 1000);
    let versions = || -> Vec<(String, String)> {
        rt.block_on(
            sqlx::query_as("SELECT id::text, xmin::text FROM assets ORDER BY id")
                .fetch_all(&db.pool),
        )
        .unwrap()
    };
    let before = versions();
    sink.write(&topology.round(3, now_ms(), exporter, true));
    assert!(sink.flush_now());
    assert_eq!(versions(), before, "no asset row rewritten");
    let indexes: i64 = rt
        .block_on(
            sqlx::query_scalar(
                "SELECT count(*) FROM pg_indexes
                 WHERE tablename IN ('assets', 'dependencies') AND indexdef LIKE '%(last_seen)%'",
            )
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(indexes, 0);
}
