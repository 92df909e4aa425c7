//! The `decode` command's own contract: template state saved with `--state` carries to a
//! later invocation, `--format summary` prints only the summary on stdout, malformed
//! packets are counted not fatal, and only an unreadable file fails the command.
#![allow(clippy::unwrap_used, reason = "test")]

mod common;

use std::process::Command;

fn decode(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_flowlens-daemon"))
        .arg("decode")
        .args(args)
        .output()
        .unwrap()
}

fn pcap(rel: &str) -> String {
    common::data_dir().join(rel).display().to_string()
}

fn summary(text: &str) -> serde_json::Value {
    let line = text.lines().last().unwrap();
    serde_json::from_str::<serde_json::Value>(line).unwrap()["summary"].clone()
}

#[test]
fn state_file_carries_templates_to_the_next_invocation() {
    let dir = std::env::temp_dir().join(format!("flowlens-decode-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let _ = std::fs::remove_file(&state);
    let state = state.display().to_string();
    // Data alone: every set waits for a template that never comes.
    let alone = decode(&["--format", "summary", &pcap("ipfix/data-only.pcap")]);
    assert!(alone.status.success());
    let s = summary(&String::from_utf8(alone.stdout).unwrap());
    assert_eq!(s["flows"]["ipfix"], 0);
    assert!(s["template_missing"].as_u64().unwrap() > 0);
    // Templates in one run, data in the next: the state file bridges them.
    let first = decode(&["--state", &state, &pcap("ipfix/template-only.pcap")]);
    assert!(first.status.success());
    assert!(first.stdout.is_empty());
    let second = decode(&["--state", &state, &pcap("ipfix/data-only.pcap")]);
    assert!(second.status.success());
    let records = String::from_utf8(second.stdout).unwrap();
    assert_eq!(records.lines().count(), 50);
    let s = summary(&String::from_utf8(second.stderr).unwrap());
    assert_eq!(
        (s["flows"]["ipfix"].as_u64(), s["template_missing"].as_u64()),
        (Some(50), Some(0))
    );
}

#[test]
fn bad_packets_are_counted_and_bad_files_fail() {
    // A capture whose UDP payloads are not flow exports: counted by reason, exit 0.
    let input = decode(&["--format", "summary", &pcap("input.pcap")]);
    assert!(input.status.success());
    let s = summary(&String::from_utf8(input.stdout).unwrap());
    assert!(s["packets_read"].as_u64().unwrap() > 0);
    assert!(!s["errors"].as_object().unwrap().is_empty(), "{s}");
    let missing = decode(&["/nonexistent/capture.pcap"]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8(missing.stderr)
            .unwrap()
            .contains("/nonexistent/capture.pcap")
    );
    let not_pcap = decode(&[concat!(env!("CARGO_MANIFEST_DIR"), "/tests/decode_cli.rs")]);
    assert!(!not_pcap.status.success());
    assert!(
        String::from_utf8(not_pcap.stderr)
            .unwrap()
            .contains("not a pcap")
    );
}
