//! What the PostgreSQL graph holds, for tests that compare it with the generator's
//! topology.

use std::collections::BTreeSet;
use std::net::IpAddr;

use flowlens_daemon::generate::Topology;
use sqlx::{PgPool, Row};

/// (client, server, protocol, port) of every dependency.
pub(crate) async fn edges(pool: &PgPool) -> BTreeSet<(IpAddr, IpAddr, i16, i32)> {
    sqlx::query(
        "SELECT (SELECT ip FROM asset_addresses WHERE asset_id = d.source_asset_id),
                (SELECT ip FROM asset_addresses WHERE asset_id = d.target_asset_id),
                d.protocol, d.port
         FROM dependencies d",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        let s: sqlx::types::ipnetwork::IpNetwork = r.get(0);
        let t: sqlx::types::ipnetwork::IpNetwork = r.get(1);
        (s.ip(), t.ip(), r.get(2), r.get(3))
    })
    .collect()
}

/// The topology's dependencies in the form of [`edges`].
pub(crate) fn expected(topology: &Topology) -> BTreeSet<(IpAddr, IpAddr, i16, i32)> {
    topology
        .dependencies()
        .into_iter()
        .map(|(c, s, p, port)| (c, s, i16::from(p), i32::from(port)))
        .collect()
}

/// Flows counted in every dependency.
pub(crate) async fn total_flows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(sum(total_flows), 0)::int8 FROM dependencies")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Runs `flowlens-daemon generate` (the enterprise topology as IPFIX) to `target`:
/// `rounds` rounds at `rate` flows/s. The flows sent.
pub(crate) fn generate(target: std::net::SocketAddr, rounds: u64, rate: u64) -> u64 {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flowlens-daemon"))
        .args(["generate", "--target", &target.to_string()])
        .args(["--rounds", &rounds.to_string(), "--rate", &rate.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    report["flows"].as_u64().unwrap()
}
