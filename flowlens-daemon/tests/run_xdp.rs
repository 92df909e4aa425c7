//! `flowlens-daemon run` in XDP mode, as a real process in a collector namespace with
//! the program attached to its veth: every protocol from the peer namespace over IPv4
//! and IPv6, per-exporter accounting, the host's own traffic untouched, a clean detach
//! on SIGTERM; and a real exporter (softflowd) in the peer namespace.
//!
//! Needs root, iproute2, ping and the BPF object (see `support::netns`); where `CI` is
//! set a missing prerequisite fails the test, elsewhere it skips with a message.
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::float_cmp,
    reason = "tests poll a separate process; metric values are small integers"
)]

mod support;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowlens_daemon::testing::sflow::{DatagramSpec, FlowRecordSpec, FlowSampleSpec, SampleSpec};
use flowlens_daemon::testing::{sflow, wire};
use support::netns::{Net, in_netns, setup};
use support::sum_metric;

const C4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const P4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const P6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// The daemon running inside the collector namespace.
struct XdpDaemon<'n> {
    net: &'n Net,
    child: Option<Child>,
    dir: PathBuf,
    /// Its telemetry port on the collector namespace's loopback.
    telemetry: u16,
}

impl<'n> XdpDaemon<'n> {
    fn start(net: &'n Net, object: &Path, name: &str) -> Self {
        Self::start_with(net, object, name, &[], None)
    }

    /// With extra environment, and the JSON-lines output at `output` (a FIFO, say)
    /// instead of `flows.jsonl` in the test directory.
    fn start_with(
        net: &'n Net,
        object: &Path,
        name: &str,
        env: &[(&str, &str)],
        output: Option<&Path>,
    ) -> Self {
        let d = Self::spawn(net, object, name, env, output, &["--iface", &net.vc], 9464);
        d.wait_until("the XDP program to attach and /health to answer", |d| {
            d.get("/health").is_some() && net.collector_link().contains("xdp")
        });
        d
    }

    /// As the systemd unit runs it ([`as_unit`]), with extra environment.
    fn start_as_unit(net: &'n Net, object: &Path, name: &str, env: &[(&str, &str)]) -> Self {
        let (dir, binary, bpf) = unit_files(name, object);
        std::fs::write(
            dir.join("config.yaml"),
            "ingestion:\n  batch_timeout_ms: 20\ntelemetry:\n  listen_address: 127.0.0.1:9464\n",
        )
        .unwrap();
        let child = as_unit(net)
            .arg(&binary)
            .args(["run", "--iface", &net.vc, "--config"])
            .arg(dir.join("config.yaml"))
            .arg("--output")
            .arg(format!("jsonl:{}", dir.join("flows.jsonl").display()))
            .envs(env.iter().copied())
            .env("FLOWLENS_EBPF_OBJECT", &bpf)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        let d = Self {
            net,
            child: Some(child),
            dir,
            telemetry: 9464,
        };
        d.wait_until("the XDP program attached and /health ready", |d| {
            d.get("/health")
                .is_some_and(|h| h.contains("\"ready\":true"))
                && net.collector_link().contains("xdp")
        });
        d
    }

    /// A second daemon on the same ports with sockets only (`--no-xdp`; SO_REUSEPORT
    /// lets it share them), telemetry on `telemetry`.
    fn start_sockets(net: &'n Net, object: &Path, name: &str, telemetry: u16) -> Self {
        let d = Self::spawn(net, object, name, &[], None, &["--no-xdp"], telemetry);
        d.wait_until("ready", |d| {
            d.get("/health")
                .is_some_and(|h| h.contains("\"ready\":true"))
        });
        d
    }

    fn spawn(
        net: &'n Net,
        object: &Path,
        name: &str,
        env: &[(&str, &str)],
        output: Option<&Path>,
        args: &[&str],
        telemetry: u16,
    ) -> Self {
        let dir = support::temp_dir(name);
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "ingestion:\n  batch_timeout_ms: 20\ntelemetry:\n  \
                 listen_address: 127.0.0.1:{telemetry}\n"
            ),
        )
        .unwrap();
        let output = output.map_or_else(|| dir.join("flows.jsonl"), Path::to_path_buf);
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &net.collector,
                env!("CARGO_BIN_EXE_flowlens-daemon"),
            ])
            .arg("run")
            .args(args)
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .arg("--output")
            .arg(format!("jsonl:{}", output.display()))
            .envs(env.iter().copied())
            .env("FLOWLENS_EBPF_OBJECT", object)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .spawn()
            .unwrap();
        Self {
            net,
            child: Some(child),
            dir,
            telemetry,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Option<String> {
        let port = self.telemetry;
        in_netns(&self.net.collector, || {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            write!(
                s,
                "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut resp = String::new();
            s.read_to_string(&mut resp).ok()?;
            let (head, body) = resp.split_once("\r\n\r\n")?;
            head.starts_with("HTTP/1.1 200").then(|| body.to_owned())
        })
    }

    fn metrics(&self) -> HashMap<String, f64> {
        self.get("/metrics")
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    fn wait_until(&self, what: &str, mut ok: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("timed out waiting for {what}; daemon log:\n{}", self.log());
    }

    /// SIGTERM; asserts a clean exit and that no program stays attached.
    fn stop(self) -> Vec<serde_json::Value> {
        self.stop_leaving(false)
    }

    /// SIGTERM, a clean exit, and the program detached, or still attached when it is
    /// `pinned` (left for the next daemon). The flows written.
    fn stop_leaving(mut self, pinned: bool) -> Vec<serde_json::Value> {
        let mut child = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(15);
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "daemon ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.success(),
            "daemon exited with {status}:\n{}",
            self.log()
        );
        assert_eq!(
            self.net.collector_link().contains("xdp"),
            pinned,
            "attached after the stop: {}",
            self.net.collector_link()
        );
        support::read_flows(&self.dir.join("flows.jsonl"))
    }

    /// Waits until every datagram `exporter` sent is accounted for, then checks the
    /// identity received = decoded + malformed + sampled out + dropped.
    fn assert_accounted(&self, exporter: IpAddr, sent: f64) -> HashMap<String, f64> {
        let e = format!("exporter=\"{exporter}\"");
        let mut m = HashMap::new();
        let accounted = |m: &HashMap<String, f64>| {
            sum_metric(m, "flowlens_decode_datagrams_total", &[&e])
                + sum_metric(m, "flowlens_decode_malformed_total", &[&e])
                + sum_metric(m, "flowlens_ingest_datagrams_sampled_out_total", &[&e])
                + sum_metric(m, "flowlens_ingest_datagrams_dropped_total", &[&e])
        };
        // The ring readers publish their per-exporter received counts on a timer of
        // their own, after the decoders may already have counted: wait for both.
        self.wait_until(&format!("{sent} datagrams of {exporter} accounted"), |d| {
            m = d.metrics();
            accounted(&m) >= sent
                && sum_metric(&m, "flowlens_ingest_datagrams_received_total", &[&e]) >= sent
        });
        let received = sum_metric(&m, "flowlens_ingest_datagrams_received_total", &[&e]);
        let accounted = accounted(&m);
        assert_eq!(received, sent, "{exporter}: received");
        assert_eq!(received, accounted, "{exporter}: accounting identity");
        m
    }
}

impl Drop for XdpDaemon<'_> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The copies `unit_files` made (a debug binary is a few hundred megabytes;
        // left behind, every run would fill /tmp). Logs and outputs stay.
        for copy in ["flowlens-daemon", "flowlens-ebpf"] {
            let _ = std::fs::remove_file(self.dir.join(copy));
        }
    }
}

/// Removes files when dropped (a test's copies of the binaries).
struct RemoveOnDrop(Vec<PathBuf>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

fn now_s() -> u32 {
    u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// One datagram of each protocol: (destination port, payload, flows it carries).
fn datagrams(agent: IpAddr) -> Vec<(u16, Vec<u8>, usize)> {
    let rec = wire::V5Record {
        src: [10, 1, 0, 1],
        dst: [10, 1, 0, 2],
        protocol: 6,
        src_port: 1234,
        dst_port: 80,
        packets: 2,
        bytes: 120,
        ..wire::V5Record::default()
    };
    let v5 = wire::v5_packet(0, 1000, now_s(), 0, 0, &[rec; 3]);
    let tpl = wire::v9_template_flowset(&[(256, vec![(8, 4), (12, 4), (4, 1), (1, 4)])]);
    let data = [
        10, 2, 0, 1, 10, 2, 0, 2, 17, 0, 0, 1, 0, 10, 2, 0, 3, 10, 2, 0, 4, 6, 0, 0, 2, 0,
    ];
    let v9 = wire::v9_packet(0, 1000, now_s(), 0, &[tpl, wire::data_set(256, &data, 0)]);
    let f = [
        wire::Ie::new(8, 4),
        wire::Ie::new(12, 4),
        wire::Ie::new(1, 8),
    ];
    let itpl = wire::ipfix_template_set(2, &[(300, &f[..])]);
    let mut idata = vec![10, 3, 0, 1, 10, 3, 0, 2];
    idata.extend_from_slice(&500u64.to_be_bytes());
    let ipfix = wire::ipfix_message(now_s(), 0, 0, &[itpl, wire::data_set(300, &idata, 0)]);
    let frame = sflow::ethernet(
        &[(0x8100, 42)],
        sflow::ETHERTYPE_IPV4,
        &sflow::ipv4(
            Ipv4Addr::new(10, 4, 0, 1),
            Ipv4Addr::new(10, 4, 0, 2),
            17,
            0,
            &sflow::udp(53, 5353, &[0; 8]),
        ),
    );
    let sample = SampleSpec::Flow(FlowSampleSpec::new(vec![FlowRecordSpec::Header {
        protocol: 1,
        frame_length: 100,
        stripped: 4,
        header: frame,
    }]));
    let sf = sflow::encode_datagram(&DatagramSpec::new(agent, vec![sample.clone(), sample]));
    vec![
        (2055, v5, 3),
        (2055, v9, 2),
        (4739, ipfix, 1),
        (6343, sf, 2),
    ]
}

#[test]
fn run_in_xdp_mode_decodes_every_protocol_and_detaches_on_sigterm() {
    let Some((net, object)) = setup("runx") else {
        return;
    };
    let d = XdpDaemon::start(&net, &object, "run-xdp");
    let mut expected_flows = 0;
    for (src, dst) in [
        (IpAddr::V4(P4), IpAddr::V4(C4)),
        (IpAddr::V6(P6), IpAddr::V6(C6)),
    ] {
        let sent = in_netns(&net.peer, || {
            let s = UdpSocket::bind(SocketAddr::new(src, 0)).unwrap();
            let mut n = 0;
            for (port, payload, flows) in datagrams(src) {
                s.send_to(&payload, SocketAddr::new(dst, port)).unwrap();
                n += flows;
            }
            // Not a flow export, on a flow port: malformed, counted, nothing else lost.
            s.send_to(b"\x00\x09junk", SocketAddr::new(dst, 2055))
                .unwrap();
            n
        });
        expected_flows += sent;
        let m = d.assert_accounted(src, 5.0);
        let e = format!("exporter=\"{src}\"");
        assert_eq!(
            sum_metric(
                &m,
                "flowlens_ingest_datagrams_received_total",
                &[&e, "source=\"xdp\""]
            ),
            5.0
        );
        assert_eq!(
            sum_metric(&m, "flowlens_decode_malformed_total", &[&e]),
            1.0
        );
    }
    let m = d.metrics();
    assert_eq!(
        sum_metric(&m, "flowlens_ingest_mode", &["mode=\"xdp\""]),
        1.0
    );
    assert!(sum_metric(&m, "flowlens_xdp_packets_total", &["counter=\"steered\""]) >= 10.0);
    // The host's own traffic still gets through.
    assert!(net.ping(IpAddr::V4(C4)) && net.ping(IpAddr::V6(C6)));
    let flows = d.stop();
    assert_eq!(flows.len(), expected_flows);
    for proto in ["netflow_v5", "netflow_v9", "ipfix", "sflow_v5"] {
        assert!(
            flows
                .iter()
                .any(|f| f["proto"] == proto && f["exporter_ip"] == "fd00::2"),
            "{proto} over IPv6"
        );
        assert!(
            flows
                .iter()
                .any(|f| f["proto"] == proto && f["exporter_ip"] == "10.0.0.2"),
            "{proto} over IPv4"
        );
    }
}

#[test]
fn the_daemon_forwards_what_the_program_reports_to_its_log() {
    let Some((net, object)) = setup("xlog") else {
        return;
    };
    let d = XdpDaemon::start_with(
        &net,
        &object,
        "run-xdp-log",
        &[("FLOWLENS_XDP__LOG_LEVEL", "debug")],
        None,
    );
    d.wait_until("the attachment logged with its level", |d| {
        d.log().contains("log_level=Debug")
    });
    // Bigger than the veth's MTU: the sender's kernel fragments it, the program passes
    // the fragments (and says so), the collector's stack reassembles them for the
    // daemon's socket, which counts the junk as malformed.
    in_netns(&net.peer, || {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(P4), 0)).unwrap();
        s.send_to(&[0u8; 3000], SocketAddr::new(IpAddr::V4(C4), 2055))
            .unwrap();
    });
    let want = format!(
        "a fragmented datagram from {P4} to flow port 2055: passed to the stack, which reassembles it"
    );
    d.wait_until("the program's report in the daemon's log", |d| {
        d.log()
            .lines()
            .any(|l| l.contains("flowlens::xdp") && l.contains(&want))
    });
    d.wait_until("the reassembled datagram to be counted", |d| {
        sum_metric(&d.metrics(), "flowlens_decode_malformed_total", &[]) >= 1.0
    });
    // Reporting on, every protocol still goes through the rings and is decoded.
    let flows = in_netns(&net.peer, || {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(P4), 0)).unwrap();
        let mut n = 0;
        for (port, payload, f) in datagrams(IpAddr::V4(P4)) {
            s.send_to(&payload, SocketAddr::new(IpAddr::V4(C4), port))
                .unwrap();
            n += f;
        }
        n
    });
    d.wait_until("the datagrams decoded", |d| {
        sum_metric(&d.metrics(), "flowlens_decode_flows_total", &[])
            >= f64::from(u32::try_from(flows).unwrap())
    });
    let m = d.metrics();
    assert!(
        sum_metric(&m, "flowlens_xdp_packets_total", &["counter=\"steered\""]) >= 4.0,
        "{m:?}"
    );
    assert_eq!(d.stop().len(), flows);
}

#[test]
fn softflowd_in_the_peer_namespace_exports_to_the_xdp_collector() {
    let Some((net, object)) = setup("sfd") else {
        return;
    };
    if Command::new("softflowd").arg("-h").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "softflowd is not installed"
        );
        eprintln!("skipping: softflowd is not installed");
        return;
    }
    let d = XdpDaemon::start(&net, &object, "run-xdp-softflowd");
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pcap/input.pcap");
    // softflowd -r never exits when its control socket path is 13 bytes or longer.
    let ctl = format!("/run/fl{}.c", std::process::id() % 1000);
    let out = Command::new("ip")
        .args(["netns", "exec", &net.peer, "softflowd", "-d", "-a", "-r"])
        .arg(&input)
        .args(["-n", "10.0.0.1:2055", "-v", "9", "-c"])
        .arg(&ctl)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softflowd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // softflowd -r exports the capture's 50 flows (see tests/data/pcap/netflow_v9).
    let e = "exporter=\"10.0.0.2\"";
    // Ingest and decode counters are published on their own timers: wait for both.
    d.wait_until("softflowd's 50 flows, counted at intake and decode", |d| {
        let m = d.metrics();
        let received = sum_metric(&m, "flowlens_ingest_datagrams_received_total", &[e]);
        sum_metric(&m, "flowlens_flows_received_total", &[e]) >= 50.0
            && received >= 1.0
            && received == sum_metric(&m, "flowlens_decode_datagrams_total", &[e])
    });
    let m = d.metrics();
    let received = sum_metric(&m, "flowlens_ingest_datagrams_received_total", &[e]);
    assert!(received >= 1.0);
    assert_eq!(
        received,
        sum_metric(&m, "flowlens_decode_datagrams_total", &[e])
    );
    assert_eq!(
        sum_metric(&m, "flowlens_decode_template_missing_total", &[e]),
        0.0
    );
    assert_eq!(
        sum_metric(&m, "flowlens_decode_sequence_gaps_total", &[e]),
        0.0
    );
    let flows = d.stop();
    assert_eq!(flows.len(), 50);
    assert!(flows.iter().all(|f| f["proto"] == "netflow_v9"));
    assert!(
        flows
            .iter()
            .any(|f| f["src_ip"].as_str().is_some_and(|s| s.contains(':'))),
        "IPv6 flows"
    );
}

/// Backpressure in XDP mode: a slow sink (a FIFO nobody reads yet) fills the decode
/// queue, the daemon sets the program's rate to 1:10, and the kernel samples out. Those
/// datagrams never reach userspace, yet each is counted for its exporter as received
/// and sampled out, so the identity holds with every sent datagram received; the rate
/// returns to 1 once the sink drains, and `bytes * sampling_rate` over the output
/// estimates what was sent.
#[test]
fn pressure_samples_in_the_kernel_and_every_datagram_is_accounted_per_exporter() {
    let Some((net, object)) = setup("xpress") else {
        return;
    };
    let sink = support::SlowSink::new("run-xdp-pressure-fifo");
    let d = XdpDaemon::start_with(
        &net,
        &object,
        "run-xdp-pressure",
        &support::PRESSURE_ENV,
        Some(&sink.path),
    );
    assert!(net.ping(IpAddr::V4(C4)), "warm-up ping");
    // 5k datagrams/s: the queue passes its high watermark (1000) within a second, the
    // 100 ms pressure loop switches to 1:10 soon after, and the 2000 sent after the
    // switch add 200, far from the 10000 that drop: the estimate below is tight.
    let mut sent = 0u32;
    let mut after_switch = 0u32;
    while after_switch < 2000 {
        // Asked before sending, so a chunk counted here went out entirely at 1:10.
        let switched = after_switch > 0 || metric(&d, "flowlens_ingest_sample_rate") >= 10.0;
        in_netns(&net.peer, || {
            // The program samples per exporter and CPU: one CPU keeps the cycle exact.
            let mut cpus = nix::sched::CpuSet::new();
            cpus.set(0).unwrap();
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &cpus).unwrap();
            let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(P4), 0)).unwrap();
            for seq in sent..sent + 50 {
                let dg = wire::v5_packet(seq * 30, 10_000, now_s(), 0, 0, &[v5_record(); 30]);
                s.send_to(&dg, SocketAddr::new(IpAddr::V4(C4), 2055))
                    .unwrap();
            }
        });
        sent += 50;
        if switched {
            after_switch += 50;
        }
        assert!(sent < 20_000, "the rate never went to 1:10");
        std::thread::sleep(Duration::from_millis(10));
    }
    sink.drain();
    d.wait_until("sampling back to 1:1", |d| {
        metric(d, "flowlens_ingest_sample_rate") == 1.0
    });
    let m = d.assert_accounted(IpAddr::V4(P4), f64::from(sent));
    let e = "exporter=\"10.0.0.2\"";
    let sampled = sum_metric(&m, "flowlens_ingest_datagrams_sampled_out_total", &[e]);
    let dropped = sum_metric(&m, "flowlens_ingest_datagrams_dropped_total", &[e]);
    // 1800 of the 2000 sent after the switch, less a few: the program samples per CPU,
    // and a datagram the veth happens to process on the other CPU starts a cycle there.
    assert!(
        sampled >= 1780.0,
        "the 2000 after the switch were sampled 1:10: {sampled} of {sent}"
    );
    assert_eq!(dropped, 0.0, "the queue never overflowed");
    // Per exporter and in the program's own counters alike.
    assert_eq!(
        sampled,
        sum_metric(
            &m,
            "flowlens_xdp_packets_total",
            &["counter=\"sampled_out\""]
        )
    );
    drop(d.stop());
    let estimate = sink.renormalised_bytes();
    // Each rate switch can misplace at most one 1:10 phase.
    let per_datagram = 30.0 * 1000.0;
    let truth = f64::from(sent) * per_datagram;
    let slack = 2.0 * 10.0 * per_datagram;
    assert!(
        (estimate - truth).abs() <= slack,
        "estimate {estimate} vs sent {truth} (sampled out {sampled})"
    );
    eprintln!(
        "sent {sent}, sampled out in the kernel {sampled}, estimate/truth {:.4}",
        estimate / truth
    );
}

fn v5_record() -> wire::V5Record {
    wire::V5Record {
        src: [10, 5, 0, 1],
        dst: [10, 5, 0, 2],
        src_port: 40000,
        dst_port: 443,
        protocol: 6,
        packets: 3,
        bytes: 1000,
        first: 9_000,
        last: 9_500,
        ..wire::V5Record::default()
    }
}

fn metric(d: &XdpDaemon<'_>, name: &str) -> f64 {
    sum_metric(&d.metrics(), name, &[])
}

/// A rolling restart under load: a second daemon (sockets only) shares the ports while
/// the XDP daemon is stopped mid-stream. The stopping daemon detaches its program
/// first (what arrives from then on takes the kernel's path to the sockets of both),
/// reads its rings to the end and its sockets until empty, and only then closes them:
/// every datagram sent is decoded by one of the two, none twice.
#[test]
fn a_daemon_stopped_under_load_hands_over_without_losing_a_datagram() {
    let Some((net, object)) = setup("xroll") else {
        return;
    };
    let a = XdpDaemon::start(&net, &object, "roll-a");
    let b = XdpDaemon::start_sockets(&net, &object, "roll-b", 9465);
    let sent = 3000_u32;
    let to_a = std::thread::scope(|scope| {
        let sender = scope.spawn(|| {
            in_netns(&net.peer, || {
                for i in 0..sent {
                    let rec = wire::V5Record {
                        src: [10, 9, 0, 1],
                        dst: [10, 9, 0, 2],
                        protocol: 6,
                        src_port: 40_000,
                        dst_port: 443,
                        packets: 1,
                        bytes: 100,
                        ..wire::V5Record::default()
                    };
                    let dg = wire::v5_packet(0, 1000, now_s(), i, 0, &[rec]);
                    // A fresh source port each time, so that the kernel spreads the
                    // datagrams over every socket of the port once XDP lets go.
                    let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(P4), 0)).unwrap();
                    s.send_to(&dg, SocketAddr::new(IpAddr::V4(C4), 2055))
                        .unwrap();
                    std::thread::park_timeout(Duration::from_micros(500));
                }
            });
        });
        a.wait_until("the stream under way", |d| {
            sum_metric(&d.metrics(), "flowlens_decode_flows_total", &[]) >= 500.0
        });
        let to_a = u32::try_from(a.stop().len()).unwrap();
        sender.join().unwrap();
        to_a
    });
    let flows = |d: &XdpDaemon<'_>| sum_metric(&d.metrics(), "flowlens_decode_flows_total", &[]);
    let expected = f64::from(sent - to_a);
    b.wait_until("the rest decoded by the other daemon", |d| {
        flows(d) >= expected
    });
    assert!(to_a < sent, "the stop came mid-stream");
    let to_b = u32::try_from(b.stop().len()).unwrap();
    assert_eq!(
        to_a + to_b,
        sent,
        "every datagram decoded once ({to_a} by the stopped daemon, {to_b} by the other)"
    );
}

/// The capabilities the packaged unit grants (deploy/systemd/flowlens-daemon.service).
const CAPS: &str = "-all,+bpf,+perfmon,+net_admin,+net_bind_service";

/// `ip netns exec <collector> setpriv ...`: the user nobody with only [`CAPS`], as the
/// systemd unit runs the daemon; the program to run follows.
fn as_unit(net: &Net) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &net.collector, "setpriv"])
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={CAPS}"))
        .arg(format!("--ambient-caps={CAPS}"))
        .arg(format!("--bounding-set={CAPS}"));
    c
}

/// A directory anyone may use, with copies of the daemon and the BPF object that
/// nobody can read (the checkout may be private): `(dir, binary, object)`.
fn unit_files(name: &str, object: &Path) -> (PathBuf, PathBuf, PathBuf) {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = support::temp_dir(name);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let binary = dir.join("flowlens-daemon");
    std::fs::copy(env!("CARGO_BIN_EXE_flowlens-daemon"), &binary).unwrap();
    let bpf = dir.join("flowlens-ebpf");
    std::fs::copy(object, &bpf).unwrap();
    (dir, binary, bpf)
}

#[test]
fn a_restarted_daemon_takes_over_its_pinned_program_and_loses_nothing_in_between() {
    let Some((net, object)) = setup("xpin") else {
        return;
    };
    // A bpffs of the test's own (this kernel's /sys/fs/bpf is not mounted); the
    // daemons see it through `ip netns exec`'s mount namespace (a slave of ours).
    let bpffs = support::temp_dir("xpin-bpffs");
    let mounted = Command::new("mount")
        .args(["-t", "bpf", "bpf"])
        .arg(&bpffs)
        .status()
        .unwrap();
    assert!(mounted.success());
    if !support::netns::tool("setpriv") {
        assert!(std::env::var_os("CI").is_none(), "setpriv is missing");
        return;
    }
    // As the unit prepares them (ExecStartPre): the pins' and the state's directories
    // belong to the daemon's user, which has no CAP_SYS_ADMIN: everything is found by
    // path.
    let pins = bpffs.join("flowlens");
    let state = support::temp_dir("xpin-state");
    for dir in [&pins, &state] {
        std::fs::create_dir_all(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
    }
    let (pin_env, state_env) = (pins.display().to_string(), state.display().to_string());
    let env = [
        ("FLOWLENS_XDP__PIN_PATH", pin_env.as_str()),
        ("FLOWLENS_STATE__DIRECTORY", state_env.as_str()),
    ];
    let a = XdpDaemon::start_as_unit(&net, &object, "pin-a", &env);
    // The generator's enterprise topology as IPFIX, 40 rounds at 2000 flows/s.
    let (report, to_a, b) = std::thread::scope(|scope| {
        let generator = scope.spawn(|| {
            let out = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &net.peer,
                    env!("CARGO_BIN_EXE_flowlens-daemon"),
                ])
                .args(["generate", "--target", &format!("{C4}:4739")])
                .args(["--rate", "2000", "--rounds", "40"])
                .output()
                .unwrap();
            assert!(out.status.success(), "{out:?}");
            let line = String::from_utf8(out.stdout).unwrap();
            serde_json::from_str::<serde_json::Value>(line.trim()).unwrap()
        });
        a.wait_until("the generator under way", |d| {
            sum_metric(&d.metrics(), "flowlens_decode_flows_total", &[]) >= 300.0
        });
        // The program stays attached through the restart: what arrives meanwhile
        // waits in the rings.
        let to_a = a.stop_leaving(true).len();
        let b = XdpDaemon::start_as_unit(&net, &object, "pin-b", &env);
        (generator.join().unwrap(), to_a, b)
    });
    let sent = usize::try_from(report["flows"].as_u64().unwrap()).unwrap();
    assert!(
        to_a > 0 && to_a < sent,
        "the stop came mid-stream: {to_a} of {sent}"
    );
    let log = b.log();
    assert!(
        log.contains("TakenOver") && log.contains("pinned=true"),
        "{log}"
    );
    assert!(!log.contains("adopted_rings=0"), "{log}");
    #[expect(clippy::cast_precision_loss, reason = "small counts")]
    let expected = (sent - to_a) as f64;
    b.wait_until("the rest decoded by the next daemon", |d| {
        sum_metric(&d.metrics(), "flowlens_decode_flows_total", &[]) >= expected
    });
    let m = b.metrics();
    assert_eq!(
        m.get("flowlens_xdp_packets_total{counter=\"lease_expired\"}"),
        Some(&0.0),
        "{m:?}"
    );
    for zero in [
        "flowlens_ingest_datagrams_dropped_total",
        "flowlens_decode_malformed_total",
    ] {
        assert_eq!(sum_metric(&m, zero, &[]), 0.0, "{zero}");
    }
    let to_b = b.stop_leaving(true).len();
    assert_eq!(
        to_a + to_b,
        sent,
        "every generated flow decoded once ({to_a} before the restart, {to_b} after)"
    );
    // Removing the pins detaches the program for good (the kernel frees the link
    // after an RCU grace period: a moment later).
    std::fs::remove_dir_all(&pins).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while net.collector_link().contains("xdp") {
        assert!(Instant::now() < deadline, "{}", net.collector_link());
        std::thread::park_timeout(Duration::from_millis(20));
    }
    let _ = Command::new("umount").arg(&bpffs).status();
}

/// As the systemd unit runs it: an unprivileged user (nobody here) with only `CAP_BPF`,
/// `CAP_PERFMON`, `CAP_NET_ADMIN` and `CAP_NET_BIND_SERVICE` (setpriv). The daemon attaches
/// the program, receives, and tells systemd it is ready (`READY=1` on
/// `$NOTIFY_SOCKET`) only once it does: at that moment the program is attached and
/// `/health` says `ready: true`.
#[test]
fn an_unprivileged_user_with_four_capabilities_attaches_binds_and_notifies_ready() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::net::UnixDatagram;

    let Some((net, object)) = setup("xuser") else {
        return;
    };
    if !support::netns::tool("setpriv") {
        assert!(std::env::var_os("CI").is_none(), "setpriv is missing");
        return;
    }
    let (dir, binary, bpf) = unit_files("run-xdp-user", &object);
    let _copies = RemoveOnDrop(vec![binary.clone(), bpf.clone()]);
    std::fs::write(
        dir.join("config.yaml"),
        "ingestion:\n  batch_timeout_ms: 20\ntelemetry:\n  listen_address: 127.0.0.1:9464\n\
         state:\n  directory: \"off\"\n",
    )
    .unwrap();
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let child = as_unit(&net)
        .arg(&binary)
        .args(["run", "--iface", &net.vc, "--config"])
        .arg(dir.join("config.yaml"))
        .arg("--output")
        .arg(format!("jsonl:{}", dir.join("flows.jsonl").display()))
        .env("FLOWLENS_EBPF_OBJECT", &bpf)
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let d = XdpDaemon {
        net: &net,
        child: Some(child),
        dir: dir.clone(),
        telemetry: 9464,
    };
    let mut buf = [0u8; 256];
    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no READY=1 ({e}); log:\n{}", d.log()));
    assert_eq!(&buf[..n], b"READY=1");
    assert!(
        net.collector_link().contains("xdp"),
        "ready before the program was attached:\n{}",
        d.log()
    );
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert!(field("Uid:").starts_with("65534"), "{status}");
    // bpf (39), perfmon (38), net_admin (12), net_bind_service (10).
    assert_eq!(field("CapEff:"), "000000c000001400", "{status}");
    d.wait_until("/health ready", |d| {
        d.get("/health")
            .is_some_and(|h| h.contains("\"ready\":true"))
    });

    let sent = in_netns(&net.peer, || {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(P4), 0)).unwrap();
        let mut n = 0;
        for (port, payload, flows) in datagrams(IpAddr::V4(P4)) {
            s.send_to(&payload, SocketAddr::new(IpAddr::V4(C4), port))
                .unwrap();
            n += flows;
        }
        n
    });
    let m = d.assert_accounted(IpAddr::V4(P4), 4.0);
    assert_eq!(
        sum_metric(&m, "flowlens_ingest_mode", &["mode=\"xdp\""]),
        1.0,
        "{}",
        d.log()
    );
    let stopping = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        notify.recv(&mut buf).map(|n| buf[..n].to_vec())
    });
    let flows = d.stop();
    assert_eq!(flows.len(), sent);
    assert_eq!(stopping.join().unwrap().unwrap(), b"STOPPING=1");
}
