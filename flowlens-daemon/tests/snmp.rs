//! SNMP for exporters against Debian's `snmpd`, started by the tests on 127.0.0.1
//! with a configuration that sets `sysName`, an interface's speed and its `ifAlias`
//! and an `SNMPv3` user: the poller reads them with `SNMPv2c` and with `SNMPv3`
//! (SHA authentication, AES privacy), wrong credentials and silent agents fail
//! cleanly, and the daemon writes the router's and the interfaces' names into the
//! `exporters` table and onto the raw flows that crossed them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    reason = "tests: a failed unwrap is the failure message; waits poll a process"
)]

mod support;

use std::net::{IpAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowlens_daemon::inventory::snmp::{self, SnmpConfig, SnmpCredentials, SnmpError};
use flowlens_daemon::testing::postgres::scratch;
use flowlens_daemon::testing::wire::{V5Record, v5_packet};
use serde_json::Value;
use support::Daemon;

const COMMUNITY: &str = "flowlens-ro";
const LOCALHOST: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// A private `snmpd` on a free loopback port, killed when dropped.
struct Snmpd {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Snmpd {
    fn start(label: &str) -> Self {
        let dir = support::temp_dir(&format!("snmpd-{label}"));
        let port = support::free_port(true);
        std::fs::write(
            dir.join("snmpd.conf"),
            format!(
                "agentAddress udp:127.0.0.1:{port}\n\
                 rocommunity {COMMUNITY} 127.0.0.1\n\
                 sysName edge-router-1\n\
                 sysLocation lab\n\
                 interface lo 24 10000000000\n\
                 override 1.3.6.1.2.1.31.1.1.1.18.1 octet_str \"uplink to core-1\"\n\
                 createUser flowlens SHA \"auth-pass-123\" AES \"priv-pass-123\"\n\
                 rouser flowlens priv\n\
                 createUser flowlens192 SHA \"auth-pass-123\" AES-192 \"priv-pass-123\"\n\
                 rouser flowlens192 priv\n\
                 createUser flowlens256 SHA-256 \"auth-pass-123\" AES-256 \"priv-pass-123\"\n\
                 rouser flowlens256 priv\n"
            ),
        )
        .unwrap();
        let bin = ["/usr/sbin/snmpd", "snmpd"]
            .into_iter()
            .find(|b| std::path::Path::new(b).exists())
            .unwrap_or("snmpd");
        let child = Command::new(bin)
            .args(["-f", "-Lf"])
            .arg(dir.join("snmpd.log"))
            .args(["-C", "-c"])
            .arg(dir.join("snmpd.conf"))
            .arg("-p")
            .arg(dir.join("snmpd.pid"))
            .env("SNMP_PERSISTENT_DIR", dir.join("persist"))
            .env("MIBDIRS", dir.join("no-mibs"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting snmpd (apt install snmpd): {e}"));
        Self { child, port, dir }
    }

    fn config(&self, credentials: Vec<SnmpCredentials>) -> SnmpConfig {
        SnmpConfig {
            enabled: true,
            port: self.port,
            timeout_seconds: 1,
            retries: 1,
            credentials,
            ..SnmpConfig::default()
        }
    }
}

impl Drop for Snmpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn v2c(community: &str) -> SnmpCredentials {
    SnmpCredentials {
        prefixes: vec!["127.0.0.0/8".into()],
        community: community.into(),
        ..SnmpCredentials::default()
    }
}

fn v3(auth: &str, privacy: &str) -> SnmpCredentials {
    v3_as("flowlens", ("sha", "aes"), auth, privacy)
}

fn v3_as(
    user: &str,
    (auth_protocol, cipher): (&str, &str),
    auth: &str,
    privacy: &str,
) -> SnmpCredentials {
    SnmpCredentials {
        prefixes: vec!["127.0.0.0/8".into()],
        version: "3".into(),
        username: user.into(),
        auth_protocol: auth_protocol.into(),
        auth_password: auth.into(),
        privacy_protocol: cipher.into(),
        privacy_password: privacy.into(),
        ..SnmpCredentials::default()
    }
}

/// Polls until the agent answers (it takes a moment to start).
async fn first_answer(config: &SnmpConfig) -> snmp::Device {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match snmp::poll(config, LOCALHOST).await {
            Ok(d) => return d,
            Err(e) => assert!(Instant::now() < deadline, "snmpd never answered: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn exporters_describe_themselves_over_v2c_and_v3() {
    let agent = Snmpd::start("poll");
    let device = first_answer(&agent.config(vec![v2c(COMMUNITY)])).await;
    assert_eq!(device.sys_name.as_deref(), Some("edge-router-1"));
    let lo = &device.interfaces[&1];
    assert_eq!(lo.name.as_deref(), Some("lo"));
    assert_eq!(lo.alias.as_deref(), Some("uplink to core-1"));
    // ifHighSpeed (Mb/s) wins over ifSpeed; either way a speed in bits per second.
    assert!(lo.speed_bps.is_some_and(|s| s >= 10_000_000), "{lo:?}");
    assert!(device.polled_at.is_some());

    // SNMPv3, authenticated (SHA) and encrypted (AES): the same answers.
    let secure = snmp::poll(
        &agent.config(vec![v3("auth-pass-123", "priv-pass-123")]),
        LOCALHOST,
    )
    .await
    .unwrap();
    assert_eq!(secure.sys_name, device.sys_name);
    assert_eq!(secure.interfaces, device.interfaces);
    // Longer keys than the hash gives (AES-192 with SHA-1), extended as net-snmp
    // does; and SHA-256 with AES-256.
    for (user, protocols) in [
        ("flowlens192", ("sha", "aes192")),
        ("flowlens256", ("sha256", "aes256")),
    ] {
        let got = snmp::poll(
            &agent.config(vec![v3_as(
                user,
                protocols,
                "auth-pass-123",
                "priv-pass-123",
            )]),
            LOCALHOST,
        )
        .await
        .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(got.sys_name, device.sys_name, "{user}");
    }
    // An exporter no configured prefix holds is not asked at all.
    let elsewhere = SnmpCredentials {
        prefixes: vec!["192.0.2.0/24".into()],
        ..v2c(COMMUNITY)
    };
    let e = snmp::poll(&agent.config(vec![elsewhere]), LOCALHOST)
        .await
        .unwrap_err();
    assert!(matches!(e, SnmpError::Credentials(_)), "{e}");

    // A wrong password is refused; a wrong community is met with silence (snmpd
    // drops it), which ends as a timeout; so does an agent that is not there.
    let e = snmp::poll(
        &agent.config(vec![v3("not-the-password", "priv-pass-123")]),
        LOCALHOST,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, SnmpError::Protocol(_) | SnmpError::Timeout(..)),
        "{e}"
    );
    let e = snmp::poll(&agent.config(vec![v2c("guess")]), LOCALHOST)
        .await
        .unwrap_err();
    assert!(matches!(e, SnmpError::Timeout(..)), "{e}");
    let nobody = SnmpConfig {
        port: support::free_port(true),
        ..agent.config(vec![v2c(COMMUNITY)])
    };
    let e = snmp::poll(&nobody, LOCALHOST).await.unwrap_err();
    assert!(
        matches!(e, SnmpError::Timeout(..) | SnmpError::Protocol(_)),
        "{e}"
    );
}

/// The daemon as operators run it: flows from an exporter (here 127.0.0.1, whose
/// agent is the test's snmpd) are written with the router's and the interfaces'
/// names, and the `exporters` table holds what the router said.
#[test]
fn flows_name_the_router_and_interfaces_they_crossed() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let agent = Snmpd::start("daemon");
    rt.block_on(first_answer(&agent.config(vec![v2c(COMMUNITY)])));
    let db = rt.block_on(scratch("snmp"));
    let yaml = format!(
        "enrichment:\n  snmp:\n    enabled: true\n    port: {}\n    timeout_seconds: 1\n    \
         credentials:\n      - prefixes: [127.0.0.0/8]\n        version: \"2c\"\n        \
         community: ${{FLOWLENS_TEST_SNMP_COMMUNITY}}\n",
        agent.port
    );
    let d = Daemon::start_with(
        "snmp-daemon",
        &[
            ("DATABASE_URL", db.url.as_str()),
            (
                "FLOWLENS_DEPENDENCY_RESOLUTION__AGGREGATION__FLUSH_INTERVAL_SECONDS",
                "1",
            ),
            ("FLOWLENS_TEST_SNMP_COMMUNITY", COMMUNITY),
        ],
        "postgres",
        &["--no-xdp"],
        &yaml,
    );
    let flow = V5Record {
        src: [10, 1, 0, 10],
        dst: [10, 2, 0, 20],
        src_port: 40_000,
        dst_port: 443,
        protocol: 6,
        packets: 10,
        bytes: 6000,
        first: 1000,
        last: 2000,
        input: 1,
        output: 1,
        ..V5Record::default()
    };
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let named = || -> Option<(Option<String>, Option<String>, Option<String>)> {
        rt.block_on(
            sqlx::query_as(
                "SELECT exporter_name, input_if_name, output_if_name FROM flow_raw
                 WHERE exporter_name IS NOT NULL LIMIT 1",
            )
            .fetch_optional(&db.pool),
        )
        .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 0;
    let row = loop {
        // Flows keep coming, as from a router: the first ones arrive before the
        // exporter has been polled, later ones carry the names.
        seq += 1;
        let secs = u32::try_from(chrono::Utc::now().timestamp()).unwrap();
        socket
            .send_to(&v5_packet(seq, 3000, secs, 0, 0, &[flow; 6]), d.netflow)
            .unwrap();
        if let Some(row) = named() {
            break row;
        }
        assert!(Instant::now() < deadline, "no flow was named");
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(
        row,
        (
            Some("edge-router-1".to_owned()),
            Some("lo".to_owned()),
            Some("lo".to_owned())
        )
    );
    let (name, interfaces): (Option<String>, Value) = rt
        .block_on(
            sqlx::query_as(
                "SELECT sys_name, interfaces FROM exporters WHERE exporter_ip = '127.0.0.1'",
            )
            .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!(name.as_deref(), Some("edge-router-1"));
    assert_eq!(interfaces["1"]["alias"], "uplink to core-1");
    let (ok, failed) = (
        d.metric("flowlens_snmp_polls_total", &["outcome=\"ok\""]),
        d.metric("flowlens_snmp_polls_total", &["outcome=\"failed\""]),
    );
    assert!(ok >= 1.0 && failed == 0.0, "{ok} {failed}");
    // The interfaces' indices are kept with every raw flow.
    let (input, output): (Option<i64>, Option<i64>) = rt
        .block_on(
            sqlx::query_as("SELECT input_interface, output_interface FROM flow_raw LIMIT 1")
                .fetch_one(&db.pool),
        )
        .unwrap();
    assert_eq!((input, output), (Some(1), Some(1)));
    d.stop();
}
