//! Each flush is counted exactly once, whatever happens to its COMMIT: the reply lost
//! (the commit happened, the daemon cannot know), PostgreSQL restarted while the COMMIT
//! was on its way (it did not happen), a connection that hangs without a reset (the
//! flush times out, `/health` says `stalled` meanwhile, and the COMMIT lands later).
//! A loopback proxy ([`PgProxy`]) breaks the connection at that moment; the graph's
//! totals must equal what was sent.
//!
//! The tests share a PostgreSQL cluster of their own (restarting the shared one would
//! break other tests), each in a database of its own; they run one at a time, as the
//! restart would break the others.

use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowlens_daemon::generate::Topology;
use flowlens_daemon::graph::sink::{GraphHealth, GraphSettings, GraphSink};
use flowlens_daemon::store::cluster::Cluster;
use flowlens_daemon::testing::pgproxy::{Fault, PgProxy};

/// One test at a time: one of them restarts the cluster.
static SERIAL: Mutex<()> = Mutex::new(());

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_millis(),
    )
    .expect("fits u64")
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(50));
    }
}

struct Fixture {
    rt: tokio::runtime::Runtime,
    cluster: Cluster,
    proxy: PgProxy,
    /// Straight to PostgreSQL, for the test's own queries.
    direct: String,
    /// Through the proxy, for the sink.
    proxied: String,
}

fn fixture(label: &str) -> Fixture {
    let rt = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-pg-faults");
    let cluster = Cluster::ensure(&dir).expect("the faults cluster");
    let name = format!("{label}_{}", std::process::id());
    rt.block_on(async {
        let admin = flowlens_daemon::store::connect(&cluster.url("postgres"), 1)
            .await
            .expect("admin connection");
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::query(&sql).execute(&admin).await.expect("scratch db");
        }
    });
    let upstream = SocketAddr::from(([127, 0, 0, 1], cluster.port));
    let proxy = PgProxy::start(upstream).expect("the proxy");
    Fixture {
        direct: cluster.url(&name),
        proxied: proxy.url(&name),
        rt,
        cluster,
        proxy,
    }
}

fn settings(url: String) -> GraphSettings {
    flowlens_daemon::testing::postgres::graph_settings(url)
}

/// (dependencies' total flows, `flow_stats` flows, change events, flushes recorded).
fn totals(f: &Fixture) -> (i64, i64, i64, i64) {
    f.rt.block_on(async {
        let pool = flowlens_daemon::store::connect(&f.direct, 1)
            .await
            .expect("direct connection");
        let t = sqlx::query_as(
            "SELECT (SELECT coalesce(sum(total_flows), 0)::int8 FROM dependencies),
                    (SELECT coalesce(sum(flow_count), 0)::int8 FROM flow_stats),
                    (SELECT count(*) FROM change_events),
                    (SELECT count(*) FROM graph_flushes)",
        )
        .fetch_one(&pool)
        .await
        .expect("totals");
        pool.close().await;
        t
    })
}

fn exporter() -> IpAddr {
    "192.0.2.1".parse().expect("an address")
}

/// Flows of one round, as the graph counts them.
fn per_round(t: &Topology) -> i64 {
    i64::try_from(t.connections_per_round() * 2).expect("fits")
}

/// Three rounds, flushed: every asset and dependency exists afterwards, so each later
/// round adds exactly [`per_round`] flows to the totals.
fn seed(sink: &mut GraphSink, t: &Topology, now: u64) {
    for round in 0..3 {
        sink.write(&t.round(round, now - 10_000, exporter(), true));
    }
    assert!(sink.flush_now());
}

#[test]
fn a_lost_commit_reply_is_counted_once() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let f = fixture("lost_reply");
    let topology = Topology::enterprise();
    let health = GraphHealth::default();
    let mut sink = GraphSink::open(&settings(f.proxied.clone()), health.clone()).unwrap();
    let now = now_ms();
    seed(&mut sink, &topology, now);
    let (flows0, stats0, events0, flushes0) = totals(&f);

    f.proxy.arm(Fault::LoseCommitReply);
    sink.write(&topology.round(3, now - 4000, exporter(), true));
    assert!(
        !sink.flush_now(),
        "the COMMIT's reply never came: the flush cannot say it succeeded"
    );
    assert_eq!(f.proxy.broken(), 1);
    assert_eq!(health.status(), "error");
    // The commit happened.
    assert_eq!(totals(&f).3, flushes0 + 1);
    // More flows arrive while the flush is in doubt; the next flush settles it (landed)
    // and writes only these.
    sink.write(&topology.round(4, now - 3000, exporter(), true));
    assert!(sink.flush_now());
    assert_eq!(health.status(), "ok");
    let (flows, stats, events, flushes) = totals(&f);
    assert_eq!(
        flows,
        flows0 + 2 * per_round(&topology),
        "counted once, not twice"
    );
    assert_eq!(stats, stats0 + 2 * per_round(&topology));
    assert_eq!(
        events, events0,
        "no event recorded twice (nothing new after the seed)"
    );
    assert_eq!(flushes, flushes0 + 2);
}

#[test]
fn a_postgresql_restart_during_commit_is_written_again_once() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let f = fixture("restart");
    let topology = Topology::enterprise();
    let mut sink = GraphSink::open(&settings(f.proxied.clone()), GraphHealth::default()).unwrap();
    let now = now_ms();
    seed(&mut sink, &topology, now);
    let (flows0, stats0, _, _) = totals(&f);

    f.proxy.arm(Fault::HoldCommit);
    sink.write(&topology.round(3, now - 4000, exporter(), true));
    let flushed = std::thread::scope(|s| {
        let flush = s.spawn(|| sink.flush_now());
        wait_until("the COMMIT to be held", Duration::from_secs(30), || {
            f.proxy.holding()
        });
        // The server goes away with the transaction open (its COMMIT still in the
        // proxy): PostgreSQL rolls it back. Then the COMMIT goes on, to nobody.
        f.cluster.stop().expect("stop");
        f.cluster.start().expect("start");
        f.proxy.release();
        flush.join().expect("the flush thread")
    });
    assert!(!flushed, "the flush failed with the server gone");
    assert_eq!(totals(&f).0, flows0, "round 3 did not land");
    let mut ok = false;
    for _ in 0..20 {
        if sink.flush_now() {
            ok = true;
            break;
        }
        std::thread::park_timeout(Duration::from_millis(500));
    }
    assert!(ok, "a flush after the restart");
    let (flows, stats, _, _) = totals(&f);
    assert_eq!(flows, flows0 + per_round(&topology), "written again, once");
    assert_eq!(stats, stats0 + per_round(&topology));
}

#[test]
fn a_hung_connection_times_out_is_reported_stalled_and_lands_once() {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let f = fixture("hung");
    let topology = Topology::enterprise();
    let mut s = settings(f.proxied.clone());
    // Stalled after 1.5 s (half the timeout), given up after 3 s.
    s.database.flush_timeout_seconds = 3;
    let health = GraphHealth::default();
    let mut sink = GraphSink::open(&s, health.clone()).unwrap();
    let now = now_ms();
    seed(&mut sink, &topology, now);
    let (flows0, stats0, _, flushes0) = totals(&f);

    f.proxy.arm(Fault::HoldCommit);
    sink.write(&topology.round(3, now - 4000, exporter(), true));
    let (flushed, seen_stalled) = std::thread::scope(|sc| {
        let flush = sc.spawn(|| sink.flush_now());
        wait_until("the COMMIT to be held", Duration::from_secs(30), || {
            f.proxy.holding()
        });
        let mut stalled = false;
        wait_until("/health to say stalled", Duration::from_secs(10), || {
            stalled = health.status() == "stalled";
            stalled
        });
        (flush.join().expect("the flush thread"), stalled)
    });
    assert!(seen_stalled);
    assert!(!flushed, "the flush timed out");
    assert_eq!(health.status(), "error");
    // The network recovers: the COMMIT reaches the server after all.
    f.proxy.release();
    wait_until("the late COMMIT to land", Duration::from_secs(10), || {
        totals(&f).3 == flushes0 + 1
    });
    assert!(sink.flush_now(), "the flush in doubt is settled");
    let (flows, stats, _, _) = totals(&f);
    assert_eq!(
        flows,
        flows0 + per_round(&topology),
        "landed once, not written again"
    );
    assert_eq!(stats, stats0 + per_round(&topology));
}
