//! `flowlens-daemon check-config FILE`: the effective configuration with secrets
//! redacted on stdout, every problem on stderr, and an exit status scripts can test.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::process::{Command, Output};

fn check(yaml: &str, env: &[(&str, &str)]) -> Output {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = support::temp_dir(&format!("check-config-{n}"));
    let file = dir.join("flowlens.yaml");
    std::fs::write(&file, yaml).unwrap();
    Command::new(env!("CARGO_BIN_EXE_flowlens-daemon"))
        .arg("check-config")
        .arg(&file)
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BOOTSTRAP_SERVERS")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn prints_the_effective_configuration_without_its_secrets() {
    let out = check(
        "database:\n  url: postgres://flowlens:hunter2@db.example:5432/flowlens\n\
         kafka:\n  bootstrap_servers: k1:9092\n  properties:\n    sasl.username: collector\n    \
         sasl.password: s3cret-sasl\n\
         enrichment:\n  cache:\n    redis_url: redis://:r3dis@cache:6379/0\n\
         api:\n  auth:\n    jwt_secret: very-secret-signing-key-of-32-bytes!!\n",
        &[("FLOWLENS_INGESTION__BATCH_SIZE", "77")],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the configuration is valid"), "{stderr}");
    for secret in ["hunter2", "s3cret-sasl", "r3dis", "very-secret-signing-key"] {
        assert!(!stdout.contains(secret), "{secret} leaked:\n{stdout}");
    }
    let tree: serde_yaml::Value = serde_yaml::from_str(&stdout).unwrap();
    assert_eq!(
        tree["database"]["url"].as_str(),
        Some("postgres://flowlens:<redacted>@db.example:5432/flowlens")
    );
    assert_eq!(
        tree["kafka"]["properties"]["sasl.password"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(
        tree["kafka"]["properties"]["sasl.username"].as_str(),
        Some("collector"),
        "only secrets are hidden"
    );
    assert_eq!(
        tree["api"]["auth"]["jwt_secret"].as_str(),
        Some("<redacted>")
    );
    // The environment wins over the file; defaults fill the rest.
    assert_eq!(tree["ingestion"]["batch_size"].as_u64(), Some(77));
    assert_eq!(
        tree["state"]["decoder_save_interval_seconds"].as_u64(),
        Some(60)
    );
    assert_eq!(
        tree["kafka"]["topics"]["raw"].as_str(),
        Some("flowlens.raw-v1")
    );
    // What will not work as the operator may expect is said, without failing.
    let out = check(
        "state:\n  directory: \"off\"\nenrichment:\n  geoip:\n    enabled: true\n    \
         database_path: /nonexistent/GeoLite2-City.mmdb\n",
        &[],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("note: decoder state is not kept"),
        "{stderr}"
    );
    assert!(
        stderr.contains("/nonexistent/GeoLite2-City.mmdb does not exist"),
        "{stderr}"
    );
}

#[test]
fn refuses_what_the_daemon_would_refuse_and_says_every_problem() {
    let out = check("ingestion:\n  bogus_key: 1\n", &[]);
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("bogus_key"), "{stderr}");
    assert!(out.stdout.is_empty());

    let out = check(
        "kafka:\n  compression: brotli\nstate:\n  decoder_save_interval_seconds: 0\n",
        &[],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("kafka.compression \"brotli\""), "{stderr}");
    assert!(
        stderr.contains("state.decoder_save_interval_seconds must be at least 1"),
        "{stderr}"
    );
}

#[test]
fn notification_secrets_are_redacted_and_targets_checked() {
    let out = check(
        "notifications:\n  targets:\n\
         \x20   - name: ops\n      kind: slack\n      url: https://hooks.slack.com/services/T0/B0/s3cr3tpath\n\
         \x20   - name: oncall\n      kind: pagerduty\n      routing_key: r0utingkey-secret\n\
         \x20   - name: siem\n      kind: webhook\n      url: https://siem.example/hook\n      secret: hmac-s3cret\n",
        &[],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    for secret in ["s3cr3tpath", "r0utingkey-secret", "hmac-s3cret"] {
        assert!(!stdout.contains(secret), "{secret} leaked:\n{stdout}");
    }
    assert!(stdout.contains("https://siem.example/hook"), "{stdout}");

    let bad = check(
        "notifications:\n  targets:\n\
         \x20   - name: oncall\n      kind: pagerduty\n\
         \x20   - name: oncall\n      kind: webhook\n      url: ftp://x\n\
         \x20   - name: env\n      kind: slack\n      url: ${FLOWLENS_TEST_UNSET_SLACK_URL}\n",
        &[],
    );
    let stderr = String::from_utf8(bad.stderr).unwrap();
    assert!(!bad.status.success());
    for problem in [
        "routing_key is required for pagerduty",
        "names must be unique",
        "url must be http(s)://",
        "${FLOWLENS_TEST_UNSET_SLACK_URL} is not set",
    ] {
        assert!(stderr.contains(problem), "{problem}:\n{stderr}");
    }
}

#[test]
fn cloud_inventories_are_checked_and_their_secrets_redacted() {
    let out = check(
        "enrichment:\n  snmp:\n    enabled: true\n    credentials:\n      - prefixes: [10.0.0.0/8]\n        community: hunter2-snmp\n  \
         cloud:\n    aws:\n      enabled: true\n      regions: [eu-west-1, us-gov-west-1]\n      \
         profile: inventory\n    azure:\n      enabled: true\n      client_secret: hunter2-azure\n      \
         subscriptions: [00000000-0000-0000-0000-000000000001]\n    gcp:\n      enabled: true\n      \
         projects: [payments-prod]\n",
        &[],
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(!stdout.contains("hunter2-azure"), "{stdout}");
    assert!(!stdout.contains("hunter2-snmp"), "{stdout}");
    assert!(stdout.contains("payments-prod"), "{stdout}");

    let out = check(
        "enrichment:\n  cloud:\n    kubernetes:\n      enabled: true\n    aws:\n      enabled: true\n      regions: [eu west 1]\n      \
         endpoint_url: ftp://ec2.example\n    gcp:\n      enabled: true\n      \
         projects: [Not_A_Project]\n      refresh_interval_seconds: 5\n    azure:\n      \
         subscriptions: [prod]\n      management_endpoint: https://management.azure.com/\n",
        &[],
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for want in [
        "enrichment.cloud.aws.regions: \"eu west 1\" is not a region name",
        "enrichment.cloud.aws.endpoint_url",
        "\"Not_A_Project\" is not a project id",
        "enrichment.cloud.kubernetes.cluster: name the cluster",
        "enrichment.cloud.gcp.refresh_interval_seconds must be at least 30",
        "\"prod\" is not a subscription id",
        "enrichment.cloud.azure.management_endpoint",
    ] {
        assert!(stderr.contains(want), "{want}: {stderr}");
    }
}
