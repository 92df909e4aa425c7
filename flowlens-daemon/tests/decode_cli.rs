//! The `decode` command's own contract: template state saved with `--state` carries to a
//! later invocation, `--format summary` prints only the summary on stdout, malformed
//! packets are counted not fatal, only an unreadable file fails the command, and
//! `--explain` says why each datagram was not decoded whole.
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

#[test]
fn explain_says_why_each_datagram_was_not_decoded_whole() {
    use flowlens_daemon::testing::wire::{
        Ie, data_set, ipfix_message, ipfix_template_set, pcap_udp, v9_packet, v9_template_flowset,
    };
    use std::net::Ipv4Addr;
    const T0_S: u32 = 1_767_225_600;
    let (one, two) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
    // 1: an IPFIX template with a Barracuda variable-length field.
    let tpl = ipfix_template_set(
        2,
        &[(
            256,
            &[Ie::new(8, 4), Ie::new(12, 4), Ie::ent(5, 65535, 10_704)][..],
        )],
    );
    let f1 = ipfix_message(T0_S, 0, 0, &[tpl]);
    // 2: its data followed by zero padding (trailing bytes).
    let mut f2 = ipfix_message(
        T0_S,
        0,
        0,
        &[data_set(
            256,
            &[10, 0, 0, 1, 10, 0, 0, 2, 3, b'd', b'n', b's'],
            0,
        )],
    );
    let declared = f2.len();
    f2.extend_from_slice(&[0; 20]);
    // 3: a v9 flowset that claims 2 bytes (malformed, bad_length at offset 22).
    let mut f3 = v9_packet(0, 1, T0_S, 0, &[]);
    f3.extend_from_slice(&[1, 0, 0, 2, 0xAA, 0xBB]);
    // 4: data for a template that never comes.
    let f4 = ipfix_message(T0_S, 1, 7, &[data_set(999, &[1, 2, 3, 4], 0)]);
    // 5: NSEL "flow created" without counters: skipped by the firewall-event rule.
    let nsel = v9_template_flowset(&[(263, vec![(8, 4), (12, 4), (233, 1), (231, 4)])]);
    let f5 = v9_packet(
        1,
        1,
        T0_S,
        0,
        &[
            nsel,
            data_set(263, &[10, 0, 0, 1, 10, 0, 0, 2, 1, 0, 0, 0, 0], 0),
        ],
    );
    // 6: two data sets for templates that never come: two lines, both for frame 6.
    let f6 = ipfix_message(
        T0_S,
        2,
        8,
        &[
            data_set(500, &[1, 2, 3, 4], 0),
            data_set(501, &[5, 6, 7, 8], 0),
        ],
    );
    // 7, 8: NSEL data before its template (held), then the template: the held set is
    // decoded, and its skipped record is reported against frame 7, where it came.
    let f7 = v9_packet(
        2,
        1,
        T0_S,
        1,
        &[data_set(264, &[10, 0, 0, 3, 10, 0, 0, 4, 3, 0, 0, 0, 0], 0)],
    );
    let f8 = v9_packet(
        3,
        1,
        T0_S,
        1,
        &[v9_template_flowset(&[(
            264,
            vec![(8, 4), (12, 4), (233, 1), (231, 4)],
        )])],
    );
    let frames = [
        (one, f1),
        (one, f2),
        (two, f3),
        (one, f4),
        (two, f5),
        (one, f6),
        (two, f7),
        (two, f8),
    ];
    let dir = std::env::temp_dir().join(format!("flowlens-explain-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("vendors.pcap");
    std::fs::write(&file, pcap_udp(u64::from(T0_S) * 1000, &frames)).unwrap();
    let path = file.display().to_string();

    let run = decode(&["--explain", &path]);
    assert!(run.status.success());
    assert_eq!(String::from_utf8(run.stdout).unwrap().lines().count(), 1);
    let err = String::from_utf8(run.stderr).unwrap();
    let line = |frame: usize, what: &str| {
        err.lines()
            .find(|l| l.starts_with(&format!("{path} frame {frame}: ")) && l.contains(what))
            .unwrap_or_else(|| panic!("no line for frame {frame} with {what:?} in:\n{err}"))
            .to_owned()
    };
    let template = line(1, "ipfix template 256");
    assert!(template.contains("exporter 192.0.2.1 ipfix"), "{template}");
    assert!(
        template
            .contains("sourceIPv4Address(8)/4 destinationIPv4Address(12)/4 barracuda(10704:5)/var"),
        "{template}"
    );
    let tr = line(2, "trailing bytes");
    assert!(
        tr.contains(&format!(
            "20 bytes after the declared content at offset {declared}"
        )),
        "{tr}"
    );
    assert!(tr.contains(&format!("[bytes {}..", declared - 16)), "{tr}");
    let m = line(3, "malformed (bad_length)");
    assert!(m.contains("exporter 192.0.2.2 netflow_v9"), "{m}");
    assert!(m.contains("bad set length 2 at offset 22"), "{m}");
    assert!(m.contains(">00 02 aa bb"), "{m}");
    line(4, "template not known yet");
    let missing = line(4, "template missing");
    assert!(
        missing.contains("template 999 (domain 7) never arrived"),
        "{missing}"
    );
    let skipped = line(5, "records skipped (firewall_event)");
    assert!(skipped.contains("1 record(s) of template 263"), "{skipped}");
    assert!(line(6, "template missing").contains("template 500 (domain 8)"));
    assert!(line(6, "template 501 (domain 8) never arrived").contains("frame 6"));
    line(7, "template not known yet");
    assert!(line(7, "records skipped (firewall_event)").contains("template 264"));
    line(
        7,
        "held data set at offset 24 decoded: template 264 arrived",
    );
    let s = summary(&err);
    assert_eq!(s["trailing_bytes"], 20);
    assert_eq!(s["records_skipped"]["firewall_event"], 2);
    assert_eq!(s["template_missing"], 3);
    assert_eq!(s["errors"]["bad_length"], 1);

    // Without --explain: the same records and summary, no explanations.
    let quiet = decode(&[&path]);
    let err = String::from_utf8(quiet.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
