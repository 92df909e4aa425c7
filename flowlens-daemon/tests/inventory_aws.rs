//! The AWS inventory against moto's server, a real implementation of the EC2 and IAM
//! APIs on loopback. The estate is made with boto3 (`tests/data/aws_estate.py`), and
//! moto then checks every request's `SigV4` signature against an IAM user's key and
//! policy, as AWS does: the provider's instances and ENIs, credentials from a web
//! identity, a refresh after an instance is terminated, bad credentials keeping the
//! last snapshot, and the daemon giving assets seen in flows their AWS identity.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::disallowed_methods,
    reason = "tests: a failed unwrap is the failure message; waits poll a process"
)]

mod support;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Arc;

use flowlens_daemon::inventory::aws::{Aws, Environment};
use flowlens_daemon::inventory::config::AwsConfig;
use flowlens_daemon::inventory::{self, Inventory, Provider, ProviderError};
use flowlens_daemon::testing::moto::{self, Moto};
use flowlens_daemon::testing::postgres::scratch;
use flowlens_daemon::testing::wire::{V5Record, v5_packet};
use serde_json::Value;
use support::Daemon;

/// The estate's script, run with moto's venv's Python (which has boto3).
fn estate(args: &[&str]) -> String {
    let python = moto::binary().with_file_name("python");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/aws_estate.py");
    let out = std::process::Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "aws_estate.py {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn config(endpoint: &str) -> AwsConfig {
    AwsConfig {
        enabled: true,
        regions: vec!["eu-west-1".into(), "us-east-1".into()],
        endpoint_url: Some(endpoint.to_owned()),
        ..AwsConfig::default()
    }
}

fn keys<'a>(key: &'a str, secret: &'a str) -> Environment {
    Environment::fixed([
        ("AWS_ACCESS_KEY_ID", key),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_EC2_METADATA_DISABLED", "true"),
    ])
}

/// An asset's name, cloud provider, instance id and instance type.
type Identity = (String, Option<String>, Option<String>, Option<String>);

fn ip(v: &Value) -> IpAddr {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_and_enis_come_from_signed_calls_and_a_terminated_instance_leaves() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let endpoint = moto.endpoint();
    let made: Value = serde_json::from_str(&estate(&["setup", &endpoint])).unwrap();
    let (key, secret) = (
        made["key"].as_str().unwrap(),
        made["secret"].as_str().unwrap(),
    );
    let dir = support::temp_dir("inventory-aws");

    // EKS's IAM roles for service accounts: a token file and a role, exchanged at STS
    // (moto's, through AWS_ENDPOINT_URL) for temporary credentials with a session
    // token, with no key anywhere.
    let token = dir.join("token");
    std::fs::write(
        &token,
        "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJmbG93bGVucyJ9.c2ln\n",
    )
    .unwrap();
    let web = Aws::with_environment(
        config(&endpoint),
        Environment::fixed([
            ("AWS_WEB_IDENTITY_TOKEN_FILE", token.to_str().unwrap()),
            ("AWS_ROLE_ARN", made["role"].as_str().unwrap()),
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ]),
    )
    .unwrap();
    let by_role = web.snapshot().await.unwrap();
    assert_eq!(
        by_role.len(),
        made["instances"].as_array().unwrap().len() * 2 + 2
    );

    // From here on moto checks every request's signature and the user's policy.
    estate(&["lock", &endpoint]);
    let inv = Arc::new(Inventory::default());
    // One reservation a page: moto pages DescribeInstances, so NextToken is followed.
    let provider = Provider::Aws(Box::new(
        Aws::with_environment(config(&endpoint), keys(key, secret))
            .unwrap()
            .with_page_size(1),
    ));
    let mut streak = inventory::Streak::default();
    assert!(inventory::refresh_once(&inv, &provider, Some(&dir), &mut streak).await);
    let instances = made["instances"].as_array().unwrap();
    for i in instances {
        for field in ["private", "public"] {
            let entry = inv
                .lookup(ip(&i[field]))
                .unwrap_or_else(|| panic!("{field} address of {i}"));
            let item = &entry.item;
            assert_eq!(item.provider, "aws");
            assert_eq!(item.kind, "instance");
            assert_eq!(item.id, i["id"].as_str().unwrap());
            assert_eq!(item.name.as_deref(), i["name"].as_str());
            assert_eq!(item.instance_type.as_deref(), i["type"].as_str());
            assert_eq!(item.region.as_deref(), i["region"].as_str());
            assert_eq!(item.zone.as_deref(), i["zone"].as_str());
            assert_eq!(item.vpc.as_deref(), i["vpc"].as_str());
            assert_eq!(item.subnet.as_deref(), i["subnet"].as_str());
            // moto's account.
            assert_eq!(item.account.as_deref(), Some("123456789012"));
            assert_eq!(item.tags.get("team").map(String::as_str), Some("payments"));
        }
    }
    let names = [
        ("load_balancer", "payments-alb"),
        ("lambda", "resize-images"),
    ];
    for (eni, (kind, name)) in made["enis"].as_array().unwrap().iter().zip(names) {
        let item = inv.lookup(ip(&eni["private"])).unwrap().item.clone();
        assert_eq!(
            (item.kind.as_str(), item.id.as_str(), item.name.as_deref()),
            (kind, eni["id"].as_str().unwrap(), Some(name))
        );
        assert_eq!(item.region.as_deref(), Some("eu-west-1"));
    }
    assert_eq!(inv.sizes()["aws"], instances.len() * 2 + 2);

    // A key AWS does not know, or a wrong secret: refused, the last snapshot kept.
    for (k, s) in [(key, "not-the-secret"), ("AKIAUNKNOWN000000000", secret)] {
        let wrong = Aws::with_environment(config(&endpoint), keys(k, s)).unwrap();
        let e = wrong.snapshot().await.unwrap_err();
        assert!(
            matches!(&e, ProviderError::Credentials(m) if m.contains("AuthFailure")),
            "{e}"
        );
        assert!(!e.to_string().contains("not-the-secret"), "{e}");
        let wrong = Provider::Aws(Box::new(wrong));
        assert!(!inventory::refresh_once(&inv, &wrong, Some(&dir), &mut streak).await);
        assert!(streak.failing);
        assert_eq!(inv.sizes()["aws"], instances.len() * 2 + 2);
    }

    // An instance terminated: the next refresh no longer has its addresses.
    let gone = &instances[0];
    estate(&[
        "terminate",
        &endpoint,
        key,
        secret,
        gone["region"].as_str().unwrap(),
        gone["id"].as_str().unwrap(),
    ]);
    assert!(inventory::refresh_once(&inv, &provider, Some(&dir), &mut streak).await);
    assert!(!streak.failing);
    assert!(inv.lookup(ip(&gone["private"])).is_none());
    assert!(inv.lookup(ip(&gone["public"])).is_none());
    assert_eq!(
        inv.lookup(ip(&instances[1]["private"])).unwrap().item.id,
        instances[1]["id"].as_str().unwrap()
    );
    assert!(inventory::snapshot_path(&dir, "aws").is_file());
    let _ = std::fs::remove_dir_all(dir);
}

/// The daemon as operators run it (`enrichment.cloud.aws` in its configuration, keys
/// in its environment): flows between the estate's instances make assets that carry
/// their instances' identity and names, also while the shared cache's Redis is down.
#[test]
fn assets_seen_in_flows_take_their_aws_identity() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let moto = Moto::start();
    let endpoint = moto.endpoint();
    let made: Value = serde_json::from_str(&estate(&["setup", &endpoint])).unwrap();
    estate(&["lock", &endpoint]);
    let db = rt.block_on(scratch("inventory_aws"));
    // The shared cache is configured but its Redis is not there: the daemon carries
    // on with its own memory, says so, and counts it.
    let dead = support::free_port(false);
    let yaml = format!(
        "enrichment:\n  cache:\n    backend: redis\n    redis_url: redis://127.0.0.1:{dead}/0\n  \
         cloud:\n    aws:\n      enabled: true\n      regions: [eu-west-1, \
         us-east-1]\n      endpoint_url: {endpoint}\n"
    );
    let d = Daemon::start_with(
        "inventory-aws-daemon",
        &[
            ("DATABASE_URL", db.url.as_str()),
            (
                "FLOWLENS_DEPENDENCY_RESOLUTION__AGGREGATION__FLUSH_INTERVAL_SECONDS",
                "1",
            ),
            ("AWS_ACCESS_KEY_ID", made["key"].as_str().unwrap()),
            ("AWS_SECRET_ACCESS_KEY", made["secret"].as_str().unwrap()),
            ("AWS_EC2_METADATA_DISABLED", "true"),
        ],
        "postgres",
        &["--no-xdp"],
        &yaml,
    );
    let instances = made["instances"].as_array().unwrap();
    let v4 = |i: usize| -> [u8; 4] {
        instances[i]["private"]
            .as_str()
            .unwrap()
            .parse::<Ipv4Addr>()
            .unwrap()
            .octets()
    };
    // edge-proxy-1 -> payments-api-1:443, payments-api-1 -> orders-db-1:5432.
    let flow = |src, dst, port| V5Record {
        src,
        dst,
        src_port: 40_000,
        dst_port: port,
        protocol: 6,
        packets: 10,
        bytes: 6000,
        first: 1000,
        last: 2000,
        ..V5Record::default()
    };
    let secs = u32::try_from(chrono::Utc::now().timestamp()).unwrap();
    // Enough flows for an asset and a dependency to be created (min_flows_for_creation).
    let records: Vec<V5Record> = (0..6)
        .flat_map(|_| [flow(v4(2), v4(0), 443), flow(v4(0), v4(1), 5432)])
        .collect();
    let packet = v5_packet(1, 3000, secs, 0, 0, &records);
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.send_to(&packet, d.netflow).unwrap();

    let identity = |ip: &str| -> Option<Identity> {
        rt.block_on(
            sqlx::query_as(
                "SELECT a.name, a.cloud_provider, a.cloud_instance_id, a.instance_type
                 FROM assets a JOIN asset_addresses aa ON aa.asset_id = a.id
                 WHERE aa.ip = $1::inet",
            )
            .bind(ip)
            .fetch_optional(&db.pool),
        )
        .unwrap()
    };
    d.wait_until(
        "the three instances' assets with their AWS identity",
        |_| {
            instances
                .iter()
                .all(|i| identity(i["private"].as_str().unwrap()).is_some_and(|r| r.1.is_some()))
        },
    );
    for i in instances {
        let (name, provider, id, itype) = identity(i["private"].as_str().unwrap()).unwrap();
        assert_eq!(name, i["name"].as_str().unwrap());
        assert_eq!(provider.as_deref(), Some("aws"));
        assert_eq!(id.as_deref(), i["id"].as_str());
        assert_eq!(itype.as_deref(), i["type"].as_str());
    }
    let m = d.metric(
        "flowlens_inventory_refreshes_total",
        &["provider=\"aws\"", "outcome=\"ok\""],
    );
    assert!(m >= 1.0, "{m}");
    assert!(
        d.metric(
            "flowlens_enrich_cache_redis_fallbacks_total",
            &["use=\"inventory\""]
        ) >= 1.0
    );
    assert!(
        d.metric("flowlens_enrich_cache_redis_up", &[]) < 0.5,
        "Redis is down"
    );
    let log = d.stop();
    assert!(log.contains("Redis unavailable"), "{log}");
}
