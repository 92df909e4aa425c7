//! The systemd units under `deploy/systemd`: `systemd-analyze verify` accepts them
//! (every directive known, every command executable: the installed paths are replaced
//! by the built daemon for the check), and the collector's units keep the contract of
//! the packaging issue: the `flowlens` user, readiness by notification, and only
//! `CAP_BPF`, `CAP_PERFMON`, `CAP_NET_ADMIN` and `CAP_NET_BIND_SERVICE`.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn units() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd");
    let mut units: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path()).unwrap(),
            )
        })
        .filter(|(name, _)| name.ends_with(".service"))
        .collect();
    units.sort();
    units
}

fn values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn units_verify_and_keep_the_capability_contract() {
    let units = units();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "flowlens-api.service",
            "flowlens-daemon.service",
            "flowlens-daemon@.service"
        ]
    );
    let caps: BTreeSet<&str> = [
        "CAP_BPF",
        "CAP_NET_ADMIN",
        "CAP_NET_BIND_SERVICE",
        "CAP_PERFMON",
    ]
    .into_iter()
    .collect();
    for (name, unit) in &units {
        assert_eq!(values(unit, "User"), ["flowlens"], "{name}");
        assert_eq!(values(unit, "NoNewPrivileges"), ["yes"], "{name}");
        assert_eq!(values(unit, "ProtectSystem"), ["strict"], "{name}");
        assert_eq!(values(unit, "Restart"), ["on-failure"], "{name}");
        let set = |key| -> BTreeSet<&str> {
            values(unit, key)
                .iter()
                .flat_map(|v| v.split_whitespace())
                .collect()
        };
        if name.starts_with("flowlens-daemon") {
            assert_eq!(values(unit, "Type"), ["notify"], "{name}");
            assert_eq!(set("AmbientCapabilities"), caps, "{name}");
            assert_eq!(set("CapabilityBoundingSet"), caps, "{name}");
        } else {
            assert!(set("AmbientCapabilities").is_empty(), "{name}");
            assert!(set("CapabilityBoundingSet").is_empty(), "{name}");
        }
    }

    if !support::netns::tool("systemd-analyze") {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing"
        );
        eprintln!("skipping systemd-analyze verify: not installed");
        return;
    }
    let dir = support::temp_dir("systemd-units");
    let daemon = env!("CARGO_BIN_EXE_flowlens-daemon");
    let mut files = Vec::new();
    for (name, unit) in &units {
        let unit = unit
            .replace("/usr/bin/flowlens-daemon", daemon)
            .replace("/usr/bin/flowlens-api", daemon);
        // A template is verified as one of its instances.
        let name = name.replace("@.service", "@ingest.service");
        std::fs::write(dir.join(&name), unit).unwrap();
        files.push(dir.join(name));
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}
