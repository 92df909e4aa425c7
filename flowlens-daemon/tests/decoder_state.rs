//! The live daemon keeps its decoder state across restarts (`state.directory`): an
//! IPFIX exporter that sent its template before a restart, a crash (SIGKILL) after the
//! periodic save or a clean stop (SIGTERM) saving at shutdown, has its data decoded at
//! once by the next process, without waiting for the template again. With state off,
//! the same data waits for a template that does not come.

#![allow(clippy::unwrap_used, clippy::float_cmp, reason = "tests")]

mod support;

use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flowlens_daemon::testing::wire::{Ie, data_set, ipfix_message, ipfix_template_set};
use support::Daemon;

const DOMAIN: u32 = 7;
/// src, dst, sport, dport, proto, octets, packets: 25 bytes a record.
const FIELDS: [Ie; 7] = [
    Ie::new(8, 4),
    Ie::new(12, 4),
    Ie::new(7, 2),
    Ie::new(11, 2),
    Ie::new(4, 1),
    Ie::new(1, 8),
    Ie::new(2, 8),
];

fn now() -> u32 {
    u32::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn template(id: u16, seq: u32) -> Vec<u8> {
    ipfix_message(
        now(),
        seq,
        DOMAIN,
        &[ipfix_template_set(2, &[(id, &FIELDS)])],
    )
}

/// `n` records of template `id`, client 10.0.0.1..n to 10.9.9.9:5432.
fn data(id: u16, seq: u32, n: u8) -> Vec<u8> {
    let mut records = Vec::new();
    for i in 1..=n {
        records.extend_from_slice(&[10, 0, 0, i, 10, 9, 9, 9]);
        records.extend_from_slice(&40_000_u16.to_be_bytes());
        records.extend_from_slice(&5432_u16.to_be_bytes());
        records.push(6);
        records.extend_from_slice(&1500_u64.to_be_bytes());
        records.extend_from_slice(&3_u64.to_be_bytes());
    }
    ipfix_message(now(), seq, DOMAIN, &[data_set(id, &records, 0)])
}

fn send(d: &Daemon, datagrams: &[Vec<u8>]) {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    for dg in datagrams {
        s.send_to(dg, d.ipfix).unwrap();
    }
}

fn flows(d: &Daemon) -> f64 {
    d.metric("flowlens_decode_flows_total", &[])
}

fn start(name: &str, state: &Path, interval: &str) -> Daemon {
    Daemon::start(
        name,
        &[
            ("FLOWLENS_STATE__DIRECTORY", state.to_str().unwrap()),
            ("FLOWLENS_STATE__DECODER_SAVE_INTERVAL_SECONDS", interval),
        ],
        None,
    )
}

#[test]
fn templates_survive_a_crash_and_a_clean_restart() {
    let state = support::temp_dir("decoder-state").join("state");
    let file = state.join("decoder-state.json");

    // 1. Template 256 and its data; saved every second; then a crash.
    let a = start("state-a", &state, "1");
    send(&a, &[template(256, 0), data(256, 1, 5)]);
    a.wait_until("the first data decoded", |d| flows(d) == 5.0);
    a.wait_until("template 256 saved", |_| {
        std::fs::read_to_string(&file).is_ok_and(|s| s.contains("\"template_id\":256"))
    });
    drop(a); // SIGKILL: no shutdown save.

    // 2. Data alone is decoded at once; a second template arrives; a clean stop
    //    (the periodic save is an hour away: only the shutdown save can keep it).
    let b = start("state-b", &state, "3600");
    assert_eq!(
        b.metric("flowlens_decoder_state_loaded_templates", &[]),
        1.0
    );
    send(&b, &[data(256, 6, 4)]);
    b.wait_until("data of the saved template decoded", |d| flows(d) == 4.0);
    send(&b, &[template(257, 10), data(257, 10, 3)]);
    b.wait_until("template 257 used", |d| flows(d) == 7.0);
    assert_eq!(b.metric("flowlens_decode_template_missing_total", &[]), 0.0);
    b.stop();

    // 3. Both templates after the restart.
    let c = start("state-c", &state, "3600");
    assert_eq!(
        c.metric("flowlens_decoder_state_loaded_templates", &[]),
        2.0
    );
    send(&c, &[data(256, 13, 2), data(257, 15, 6)]);
    c.wait_until("data of both templates decoded", |d| flows(d) == 8.0);
    assert_eq!(c.metric("flowlens_decode_template_missing_total", &[]), 0.0);
    assert_eq!(c.metric("flowlens_decode_malformed_total", &[]), 0.0);
    c.stop();

    // 4. The same data with state off waits for its template.
    let off = start("state-off", Path::new("off"), "60");
    send(&off, &[data(256, 21, 2), data(257, 23, 6)]);
    off.wait_until("both datagrams received", |d| {
        d.metric("flowlens_decode_datagrams_total", &[]) == 2.0
    });
    std::thread::park_timeout(Duration::from_millis(500));
    assert_eq!(flows(&off), 0.0, "nothing decodable without the templates");
    off.stop();

    // 5. An unreadable file is set aside, and the daemon collects all the same.
    std::fs::write(&file, b"{\"version\": 1, \"templ").unwrap();
    let e = start("state-bad", &state, "3600");
    assert_eq!(
        e.metric("flowlens_decoder_state_load_failures_total", &[]),
        1.0
    );
    send(&e, &[template(256, 30), data(256, 31, 3)]);
    e.wait_until("decoding from a fresh template", |d| flows(d) == 3.0);
    e.stop();
    assert!(state.join("decoder-state.json.unreadable").exists());
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains("\"template_id\":256"),
        "saved anew at shutdown"
    );
}
