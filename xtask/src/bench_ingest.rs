//! `cargo xtask bench ingest`: the highest lossless flow rate of each collector.
//!
//! Two network namespaces joined by a veth pair: the sender side runs `flowlens-daemon
//! blast` (sendmmsg, realistic exports with templates and sequence numbers), the
//! collector side runs one collector at a time: FlowLens in XDP mode, FlowLens in socket
//! mode, nfdump's `nfcapd`/`sfcapd` and pmacct's `nfacctd`/`sfacctd`. For each collector
//! and protocol the offered datagram rate doubles until more than `--max-loss` of the
//! flows go missing (or the sender cannot go faster), then bisects. Each trial starts a
//! fresh collector, offers `rate x duration` datagrams, waits for it to drain, and counts
//! the flows the collector says it decoded:
//! - FlowLens: `flowlens_flows_received_total` from `/metrics`;
//! - nfcapd/sfcapd: `nfdump -I` on the file written at shutdown ("Flows: N");
//! - nfacctd/sfacctd: the print plugin's packet totals (every blasted flow says 10
//!   packets; an sFlow sample counts 1).
//!
//! The table goes to stdout and `target/bench/ingest.json`.

#![allow(
    clippy::disallowed_methods,
    reason = "a synchronous script: it waits for processes"
)]

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Options of `cargo xtask bench ingest`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    /// Seconds of traffic per trial.
    #[arg(long, default_value_t = 2.0)]
    pub(crate) duration: f64,
    /// Highest loss that still counts as lossless (fraction).
    #[arg(long, default_value_t = 0.001)]
    pub(crate) max_loss: f64,
    /// Protocols to measure (v5, v9, ipfix, sflow).
    #[arg(long, value_delimiter = ',', default_value = "v9,ipfix,sflow")]
    pub(crate) protocols: Vec<String>,
    /// Collectors to measure (xdp, udp, nfcapd, nfacctd; xdp-drop is the ceiling: an
    /// XDP program that only drops the flow port, via Debian's xdp-tools; xdp-debug is
    /// FlowLens's XDP path with the program's aya-log reports on).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "xdp-drop,xdp,udp,nfcapd,nfacctd"
    )]
    pub(crate) collectors: Vec<String>,
    /// First offered rate, datagrams per second.
    #[arg(long, default_value_t = 20_000)]
    pub(crate) start_rate: u64,
    /// The sender: `blast` (the daemon's sendmmsg sender, the default) or `trafgen`
    /// (netsniff-ng: frames straight into the veth from a packet socket). trafgen's
    /// frames overflow socket receive buffers at half the rate `blast`'s do (nfcapd:
    /// 50% `UdpRcvbufErrors` at 50k datagrams/s where blast's see none), so socket
    /// collectors are only compared with `blast`.
    #[arg(long)]
    pub(crate) sender: Option<String>,
    /// CPUs the collector under test may use (`taskset -c` list; empty = any). One
    /// core each for collector and sender makes the comparison one of collectors, not
    /// of who wins the scheduler: unpinned, a multi-threaded collector slows the sender
    /// down and every figure is a lower bound.
    #[arg(long, default_value = "1")]
    pub(crate) collector_cpus: String,
    /// CPUs the sender may use (`taskset -c` list; empty = any). The veth and the XDP
    /// program, or the UDP stack, run in the sender's softirq, so on this CPU too.
    #[arg(long, default_value = "0")]
    pub(crate) sender_cpus: String,
    /// Also measure the XDP programs' mean run time per packet (the kernel's BPF
    /// statistics, read with bpftool). The statistics slow every program a little, so
    /// rates measured with this are not the headline figures.
    #[arg(long)]
    pub(crate) bpf_stats: bool,
    /// Offer this rate only (datagrams/s), without searching for the highest lossless
    /// one: with `--bpf-stats`, the program's cost per packet compared at one load
    /// (`--collectors xdp,xdp-debug --rate 200000 --bpf-stats`, as often as noise needs).
    #[arg(long)]
    pub(crate) rate: Option<u64>,
}

/// Frames in one trafgen cycle (the first is the template for v9/IPFIX).
const TRAFGEN_FRAMES: usize = 1000;

/// A trafgen configuration written for one protocol, and what a cycle holds.
#[derive(Debug, Clone)]
struct TrafgenPlan {
    config: PathBuf,
    frames: u64,
    templates_per_cycle: u64,
    flows_per_datagram: u64,
    /// Seconds trafgen needs to start (parse the configuration) before sending.
    startup: f64,
}

impl TrafgenPlan {
    fn create(daemon: &Path, proto: &str) -> Result<Self> {
        let mac = run_ok(Command::new("ip").args(["-n", COL_NS, "-br", "link", "show", COL_IF]))?
            .split_whitespace()
            .nth(2)
            .context("no MAC address for the collector veth")?
            .to_owned();
        let config = std::env::temp_dir().join(format!("flowlens-bench-{proto}.trafgen"));
        let out = run_ok(Command::new(daemon).args([
            "blast",
            "--proto",
            proto,
            "--target",
            &format!("{COL_IP}:{}", port(proto)),
            "--trafgen-frames",
            &TRAFGEN_FRAMES.to_string(),
            "--trafgen-config",
            &config.display().to_string(),
            "--dst-mac",
            &mac,
            "--source",
            &format!("{SND_IP}:5000"),
        ]))?;
        let line = out.lines().last().context("blast printed nothing")?;
        let num = |key| serde_like::field(line, key).context(format!("no {key} in {line}"));
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "small counts"
        )]
        let mut plan = Self {
            config,
            frames: num("frames")? as u64,
            templates_per_cycle: num("templates_per_cycle")? as u64,
            flows_per_datagram: num("flows_per_datagram")? as u64,
            startup: 0.0,
        };
        // Sending one frame is all start-up (to a port nothing listens on yet).
        plan.startup = plan.send(1, 1000)?;
        Ok(plan)
    }

    /// Flows in the first `count` frames (round-robin from frame 0, one process).
    fn flows_in(&self, count: u64) -> u64 {
        let templates = if self.templates_per_cycle == 0 {
            0
        } else {
            count.div_ceil(self.frames.max(1))
        };
        (count - templates.min(count)) * self.flows_per_datagram
    }

    /// Sends `count` frames at `rate` frames/s; returns the seconds it took, less
    /// trafgen's start-up (parsing the configuration, measured once). trafgen's own
    /// "N sec, M usec" line is not wall time.
    fn send(&self, count: u64, rate: u64) -> Result<f64> {
        let started = Instant::now();
        let out = run_ok(in_ns(SND_NS, "trafgen").args([
            "-o",
            SND_IF,
            "-c",
            &self.config.display().to_string(),
            "-n",
            &count.to_string(),
            "-P",
            "1",
            "-q",
            "-b",
            &format!("{rate}pps"),
        ]))?;
        let _ = out;
        Ok((started.elapsed().as_secs_f64() - self.startup).max(1e-3))
    }
}

const COL_NS: &str = "flbench-col";
const SND_NS: &str = "flbench-snd";
const COL_IF: &str = "flbc0";
const SND_IF: &str = "flbs0";
const COL_IP: &str = "10.250.0.1";
const SND_IP: &str = "10.250.0.2";
const TELEMETRY: &str = "127.0.0.1:19464";

/// Flows per data datagram of each blasted protocol (see the daemon's `blast.rs`).
fn flows_per_datagram(proto: &str) -> u64 {
    match proto {
        "v5" | "v9" => 30,
        "ipfix" => 25,
        _ => 8,
    }
}

fn port(proto: &str) -> u16 {
    match proto {
        "ipfix" => 4739,
        "sflow" => 6343,
        _ => 2055,
    }
}

/// The namespaces and veth pair; removed on drop.
struct NetPair;

impl NetPair {
    fn create() -> Result<Self> {
        NetPair::remove();
        let cmds: [&[&str]; 10] = [
            &["netns", "add", COL_NS],
            &["netns", "add", SND_NS],
            &[
                "link", "add", COL_IF, "netns", COL_NS, "type", "veth", "peer", "name", SND_IF,
                "netns", SND_NS,
            ],
            &["-n", COL_NS, "addr", "add", "10.250.0.1/24", "dev", COL_IF],
            &["-n", SND_NS, "addr", "add", "10.250.0.2/24", "dev", SND_IF],
            &["-n", COL_NS, "link", "set", COL_IF, "up"],
            &["-n", SND_NS, "link", "set", SND_IF, "up"],
            &["-n", COL_NS, "link", "set", "lo", "up"],
            &["-n", SND_NS, "link", "set", "lo", "up"],
            &["-n", SND_NS, "neigh", "flush", "all"],
        ];
        for args in cmds {
            run_ok(Command::new("ip").args(args))
                .with_context(|| format!("ip {}", args.join(" ")))?;
        }
        Ok(Self)
    }

    fn remove() {
        for ns in [COL_NS, SND_NS] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for NetPair {
    fn drop(&mut self) {
        Self::remove();
    }
}

/// Runs `cmd`; its stdout, or an error with its stderr.
/// A child process killed (and reaped) when the bench is done with it, however it
/// ends.
pub(crate) struct Killer(pub(crate) Child);

impl Drop for Killer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn run_ok(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// `program` in namespace `ns`, on `cpus` (a `taskset -c` list) unless empty.
fn pinned_in_ns(ns: &str, cpus: &str, program: &str) -> Command {
    if cpus.is_empty() {
        return in_ns(ns, program);
    }
    let mut c = in_ns(ns, "taskset");
    c.args(["-c", cpus, program]);
    c
}

/// One collector process under test.
struct Collector {
    child: Child,
    kind: String,
    dir: PathBuf,
    /// The ceiling's shell: its stdout, read past "ready".
    shell_out: Option<std::io::BufReader<std::process::ChildStdout>>,
}

impl Drop for Collector {
    /// However a trial ends, its collector goes (the ceiling's shell takes its bpffs,
    /// and with it xdp-filter's attachment, along).
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Collector {
    fn start(
        kind: &str,
        proto: &str,
        daemon: &Path,
        object: Option<&Path>,
        dir: &Path,
        cpus: &str,
    ) -> Result<Self> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        let p = port(proto);
        let log = std::fs::File::create(dir.join("collector.log"))?;
        let child = match kind {
            "xdp" | "xdp-debug" | "udp" => {
                // xdp-debug: the program's aya-log reports on (`xdp.log_level`), to
                // compare with its default (off), where the verifier removes them.
                let log_level = if kind == "xdp-debug" {
                    "\n  log_level: debug"
                } else {
                    ""
                };
                let config = format!(
                    "ingestion:\n  bind_address: {COL_IP}\n  netflow_port: 2055\n  ipfix_port: 4739\n  \
                     sflow_port: 6343\n  backpressure:\n    enabled: false\n    drop_threshold_queue_depth: 1000000\n\
                     telemetry:\n  listen_address: {TELEMETRY}\nxdp:\n  interfaces: [{COL_IF}]{log_level}\n"
                );
                std::fs::write(dir.join("config.yaml"), config)?;
                let mut c = pinned_in_ns(COL_NS, cpus, &daemon.display().to_string());
                c.args(["run", "--config"])
                    .arg(dir.join("config.yaml"))
                    .args(["--output", "discard"]);
                if kind == "udp" {
                    c.arg("--no-xdp");
                }
                if let Some(o) = object {
                    c.env("FLOWLENS_EBPF_OBJECT", o);
                }
                c.stdout(Stdio::null()).stderr(log).spawn()?
            }
            "nfcapd" | "sfcapd" => {
                let program = if proto == "sflow" { "sfcapd" } else { "nfcapd" };
                pinned_in_ns(COL_NS, cpus, program)
                    .args(["-w"])
                    .arg(dir)
                    .args([
                        "-b",
                        COL_IP,
                        "-p",
                        &p.to_string(),
                        "-t",
                        "3600",
                        "-B",
                        "16777216",
                    ])
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()?
            }
            "nfacctd" | "sfacctd" => {
                let program = if proto == "sflow" {
                    "sfacctd"
                } else {
                    "nfacctd"
                };
                let key = if proto == "sflow" {
                    "sfacctd"
                } else {
                    "nfacctd"
                };
                let config = format!(
                    "daemonize: false\n{key}_ip: {COL_IP}\n{key}_port: {p}\n{key}_pipe_size: 16777216\n\
                     plugins: print\naggregate: proto\nprint_output: csv\nprint_output_file: {}\n\
                     print_output_file_append: true\nprint_refresh_time: 1\n",
                    dir.join("flows.csv").display()
                );
                std::fs::write(dir.join("pmacct.conf"), config)?;
                pinned_in_ns(COL_NS, cpus, program)
                    .arg("-f")
                    .arg(dir.join("pmacct.conf"))
                    .stdout(Stdio::null())
                    .stderr(log)
                    .spawn()?
            }
            "xdp-drop" => {
                // The ceiling: xdp-filter (xdp-tools) dropping the flow port in native
                // mode, as cheap as an XDP program that looks at the packet gets. It
                // stands in for `xdp-bench drop`, which Debian's xdp-tools 1.3.1 cannot
                // load on this kernel (its tracepoint program wants the
                // `xdp_redirect_map_err` tracepoint, which newer kernels dropped).
                // bpffs is mounted inside `ip netns exec`'s own mount namespace, where
                // xdp-filter pins its maps; the shell waits on stdin until `finish`.
                let script = format!(
                    "mount -t bpf bpf /sys/fs/bpf && xdp-filter load -m native {COL_IF} && \
                     xdp-filter port {p} -p udp && echo ready && read _; \
                     xdp-filter status; xdp-filter unload {COL_IF}"
                );
                in_ns(COL_NS, "sh")
                    .args(["-c", &script])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(log)
                    .spawn()?
            }
            other => bail!("unknown collector {other}"),
        };
        let mut c = Self {
            child,
            kind: kind.to_owned(),
            dir: dir.to_owned(),
            shell_out: None,
        };
        if kind == "xdp-drop" {
            use std::io::BufRead as _;
            let mut out = std::io::BufReader::new(c.child.stdout.take().context("shell stdout")?);
            let mut line = String::new();
            out.read_line(&mut line)?;
            if line.trim() != "ready" {
                let log = std::fs::read_to_string(dir.join("collector.log")).unwrap_or_default();
                bail!("xdp-filter did not start: {log}");
            }
            c.shell_out = Some(out);
            return Ok(c);
        }
        // Give it time to bind (and to attach XDP).
        std::thread::sleep(Duration::from_millis(if kind.starts_with("xdp") {
            1500
        } else {
            700
        }));
        Ok(c)
    }

    /// Stops the collector and returns the flows it decoded.
    fn finish(mut self, proto: &str) -> Result<u64> {
        if self.kind == "xdp-drop" {
            return self.finish_drop(proto);
        }
        let flows = match self.kind.as_str() {
            "xdp" | "xdp-debug" | "udp" => {
                let body = run_ok(
                    in_ns(COL_NS, "curl").args(["-s", &format!("http://{TELEMETRY}/metrics")]),
                )?;
                sum_metric(&body, "flowlens_flows_received_total")
            }
            _ => 0,
        };
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait()?.is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.wait();
        Ok(match self.kind.as_str() {
            "xdp" | "xdp-debug" | "udp" => flows,
            "nfcapd" | "sfcapd" => nfdump_flows(&self.dir)?,
            _ => pmacct_flows(&self.dir.join("flows.csv"), proto),
        })
    }
}

impl Collector {
    /// The ceiling's "flows": datagrams xdp-filter dropped on the flow port, times the
    /// flows a data datagram carries (templates, one in a thousand, count as data).
    fn finish_drop(mut self, proto: &str) -> Result<u64> {
        use std::io::Read as _;
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let mut status = String::new();
        if let Some(mut out) = self.shell_out.take() {
            out.read_to_string(&mut status)?;
        }
        let _ = self.child.wait();
        let dropped = status
            .lines()
            .find(|l| l.trim_start().starts_with("XDP_DROP"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .with_context(|| format!("no XDP_DROP count in xdp-filter status:\n{status}"))?;
        Ok(dropped * flows_per_datagram(proto))
    }
}

fn sum_metric(body: &str, name: &str) -> u64 {
    body.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a counter"
            )]
            let n = v as u64;
            n
        })
        .sum()
}

/// Sums "Flows: N" of every nfcapd file in `dir`.
fn nfdump_flows(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if !name.starts_with("nfcapd.") {
            continue;
        }
        let out = run_ok(Command::new("nfdump").arg("-I").arg("-r").arg(&path))?;
        for line in out.lines() {
            if let Some(n) = line.strip_prefix("Flows:") {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(total)
}

/// Sums the PACKETS column of pmacct's CSV output: blasted NetFlow/IPFIX flows carry 10
/// packets each; an sFlow sample is one packet.
fn pmacct_flows(csv: &Path, proto: &str) -> u64 {
    let text = std::fs::read_to_string(csv).unwrap_or_default();
    let mut col = None;
    let mut packets = 0u64;
    for line in text.lines() {
        let cells: Vec<&str> = line.split(',').collect();
        if let Some(i) = cells.iter().position(|c| c.eq_ignore_ascii_case("PACKETS")) {
            col = Some(i);
            continue;
        }
        if let Some(v) = col
            .and_then(|i| cells.get(i))
            .and_then(|v| v.trim().parse::<u64>().ok())
        {
            packets += v;
        }
    }
    if proto == "sflow" {
        packets
    } else {
        packets / 10
    }
}

/// The outcome of offering one rate.
#[derive(Debug, Clone, Copy)]
struct Trial {
    offered_dps: u64,
    achieved_dps: f64,
    sent_flows: u64,
    got_flows: u64,
    /// The XDP program's mean run time per packet (`--bpf-stats`).
    ns_per_packet: Option<f64>,
}

impl Trial {
    #[expect(clippy::cast_precision_loss, reason = "a ratio")]
    fn loss(&self) -> f64 {
        1.0 - self.got_flows.min(self.sent_flows) as f64 / self.sent_flows.max(1) as f64
    }
}

fn trial(
    opts: &Options,
    kind: &str,
    proto: &str,
    rate: u64,
    daemon: &Path,
    object: Option<&Path>,
    trafgen: Option<&TrafgenPlan>,
) -> Result<Trial> {
    let dir = std::env::temp_dir().join(format!("flowlens-bench-{kind}-{proto}"));
    let collector = Collector::start(kind, proto, daemon, object, &dir, &opts.collector_cpus)?;
    let program = match kind {
        "xdp" | "xdp-debug" => Some("flowlens_xdp"),
        "xdp-drop" => Some("xdpfilt"),
        _ => None,
    }
    .filter(|_| opts.bpf_stats);
    let _stats = program.map(|_| BpfStats::enable()).transpose()?;
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "rates"
    )]
    let count = ((rate as f64) * opts.duration) as u64;
    if let Some(t) = trafgen {
        #[expect(clippy::cast_precision_loss, reason = "a rate")]
        let achieved_dps = count as f64 / t.send(count, rate)?.max(1e-9);
        std::thread::sleep(Duration::from_millis(1500));
        let ns_per_packet = program.and_then(bpf_ns_per_run);
        let got = collector.finish(proto)?;
        return Ok(Trial {
            offered_dps: rate,
            achieved_dps,
            sent_flows: t.flows_in(count),
            got_flows: got,
            ns_per_packet,
        });
    }
    let target = format!("{COL_IP}:{}", port(proto));
    let out = run_ok(
        pinned_in_ns(SND_NS, &opts.sender_cpus, &daemon.display().to_string()).args([
            "blast",
            "--proto",
            proto,
            "--target",
            &target,
            "--count",
            &count.to_string(),
            "--rate",
            &rate.to_string(),
        ]),
    )?;
    let report: serde_like::Report = serde_like::parse(&out)?;
    // Let the collector drain its queues.
    std::thread::sleep(Duration::from_millis(1500));
    let ns_per_packet = program.and_then(bpf_ns_per_run);
    let got = collector.finish(proto)?;
    Ok(Trial {
        offered_dps: rate,
        achieved_dps: report.datagrams / report.seconds.max(1e-9),
        sent_flows: count * flows_per_datagram(proto),
        got_flows: got,
        ns_per_packet,
    })
}

/// The kernel's BPF run-time statistics (`kernel.bpf_stats_enabled`), on while this
/// lives. They cost every BPF program two clock reads a run, so they are off unless
/// `--bpf-stats` asks for them.
struct BpfStats;

impl BpfStats {
    fn enable() -> Result<Self> {
        run_ok(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;
        Ok(Self)
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = run_ok(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]));
    }
}

/// Mean ns per run of the loaded program whose name starts with `prefix` (bpftool).
fn bpf_ns_per_run(prefix: &str) -> Option<f64> {
    let out = run_ok(Command::new("bpftool").args(["-j", "prog", "show"])).ok()?;
    let object = out
        .split("},{")
        .find(|o| o.contains(&format!("\"name\":\"{prefix}")))?;
    let time = serde_like::field(object, "run_time_ns")?;
    let runs = serde_like::field(object, "run_cnt")?;
    (runs > 0.0).then(|| time / runs)
}

/// Minimal parsing of the blaster's one-line JSON report (xtask keeps no JSON
/// dependency).
mod serde_like {
    use anyhow::{Context, Result};

    pub(super) struct Report {
        pub(super) datagrams: f64,
        pub(super) seconds: f64,
    }

    pub(super) fn field(line: &str, key: &str) -> Option<f64> {
        let at = line.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = line.get(at..)?;
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest.get(..end)?.trim().parse().ok()
    }

    pub(super) fn parse(out: &str) -> Result<Report> {
        let line = out.lines().last().context("blast printed nothing")?;
        Ok(Report {
            datagrams: field(line, "datagrams").context("no datagrams in blast report")?,
            seconds: field(line, "seconds").context("no seconds in blast report")?,
        })
    }
}

/// Highest lossless offered rate: double, then bisect.
fn search(
    opts: &Options,
    kind: &str,
    proto: &str,
    daemon: &Path,
    object: Option<&Path>,
    trafgen: Option<&TrafgenPlan>,
) -> Result<(Trial, bool)> {
    if let Some(rate) = opts.rate {
        let t = trial(opts, kind, proto, rate, daemon, object, trafgen)?;
        eprintln!(
            "  {kind:8} {proto:5} offered {rate:>8} dgram/s achieved {:>9.0} loss {:.4}% program {}",
            t.achieved_dps,
            t.loss() * 100.0,
            t.ns_per_packet
                .map_or_else(|| "-".to_owned(), |ns| format!("{ns:.0} ns/packet"))
        );
        #[expect(clippy::cast_precision_loss, reason = "rates")]
        let sender_short = t.achieved_dps < 0.95 * rate as f64;
        return Ok((t, sender_short));
    }
    let mut good: Option<Trial> = None;
    let mut bad: Option<u64> = None;
    let mut rate = opts.start_rate;
    let mut sender_bound = false;
    for _ in 0..16 {
        let t = trial(opts, kind, proto, rate, daemon, object, trafgen)?;
        eprintln!(
            "  {kind:8} {proto:5} offered {rate:>8} dgram/s achieved {:>9.0} loss {:.4}%",
            t.achieved_dps,
            t.loss() * 100.0
        );
        #[expect(clippy::cast_precision_loss, reason = "rates")]
        let sender_short = t.achieved_dps < 0.95 * rate as f64;
        if t.loss() <= opts.max_loss {
            good = Some(t);
            if sender_short {
                sender_bound = true;
                break;
            }
        } else {
            bad = Some(rate);
        }
        let next = match (good, bad) {
            (Some(g), None) => g.offered_dps * 2,
            (g, Some(b)) => {
                let lo = g.map_or(0, |g| g.offered_dps);
                if b - lo <= b / 16 {
                    break;
                }
                u64::midpoint(lo, b)
            }
            (None, None) => break,
        };
        rate = next;
    }
    let best = good.context(format!("{kind} {proto}: no rate was lossless"))?;
    Ok((best, sender_bound))
}

pub(crate) fn run(opts: &Options, workspace: &Path, object: Option<&Path>) -> Result<()> {
    if !rustix_is_root() {
        bail!("bench ingest needs root (network namespaces, XDP)");
    }
    let mut opts = opts.clone();
    if std::thread::available_parallelism().map_or(1, std::num::NonZero::get) < 2 {
        eprintln!("one CPU: collector and sender are not pinned");
        opts.collector_cpus.clear();
        opts.sender_cpus.clear();
    }
    let opts = &opts;
    run_ok(Command::new("cargo").current_dir(workspace).args([
        "build",
        "--release",
        "-p",
        "flowlens-daemon",
    ]))?;
    let daemon = workspace.join("target/release/flowlens-daemon");
    let _net = NetPair::create()?;
    let has_trafgen = Command::new("which")
        .arg("trafgen")
        .output()
        .is_ok_and(|o| o.status.success());
    let sender = opts.sender.clone().unwrap_or_else(|| "blast".to_owned());
    if sender == "trafgen" && !has_trafgen {
        bail!("--sender trafgen: trafgen (Debian netsniff-ng) is not installed");
    }
    eprintln!("sender: {sender}");
    let mut rows = Vec::new();
    for proto in &opts.protocols {
        let trafgen = if sender == "trafgen" {
            Some(TrafgenPlan::create(&daemon, proto)?)
        } else {
            None
        };
        for kind in &opts.collectors {
            // The C peers are protocol-specific daemons.
            let kind = match (kind.as_str(), proto.as_str()) {
                ("nfcapd", "sflow") => "sfcapd",
                ("nfacctd", "sflow") => "sfacctd",
                (k, _) => k,
            };
            let tool = match kind {
                "xdp-drop" => Some("xdp-filter"),
                "nfcapd" | "sfcapd" | "nfacctd" | "sfacctd" => Some(kind),
                _ => None,
            };
            if let Some(tool) = tool
                && Command::new("which")
                    .arg(tool)
                    .output()
                    .map_or(true, |o| !o.status.success())
            {
                eprintln!("{kind} / {proto}: {tool} is not installed here, skipped");
                let why = format!("{tool} not installed");
                rows.push((kind.to_owned(), proto.clone(), None, false, why));
                continue;
            }
            eprintln!("{kind} / {proto}:");
            match search(opts, kind, proto, &daemon, object, trafgen.as_ref()) {
                Ok((t, sender_bound)) => {
                    rows.push((
                        kind.to_owned(),
                        proto.clone(),
                        Some(t),
                        sender_bound,
                        String::new(),
                    ));
                }
                Err(e) => {
                    eprintln!("  {e:#}");
                    let why = "failed (see log)".to_owned();
                    rows.push((kind.to_owned(), proto.clone(), None, false, why));
                }
            }
        }
    }
    let mut table = String::from(
        "| protocol | collector | lossless datagrams/s | lossless flows/s | note |\n|---|---|---|---|---|\n",
    );
    let mut json = String::from("[");
    for (kind, proto, t, sender_bound, why) in &rows {
        match t {
            Some(t) => {
                // Report what was really offered: the sender may fall short of the
                // target rate, and a lossless trial is only as fast as what it sent.
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss,
                    reason = "a rate"
                )]
                let dps = (t.achieved_dps.min(t.offered_dps as f64)) as u64;
                let fps = dps * flows_per_datagram(proto);
                let mut note = if *sender_bound {
                    "sender-bound (at least this)".to_owned()
                } else {
                    String::new()
                };
                if let Some(ns) = t.ns_per_packet {
                    let _ = write!(
                        note,
                        "{}XDP program {ns:.0} ns/packet",
                        if note.is_empty() { "" } else { "; " }
                    );
                }
                let _ = writeln!(table, "| {proto} | {kind} | {dps} | {fps} | {note} |");
                let _ = write!(
                    json,
                    "{}{{\"protocol\":\"{proto}\",\"collector\":\"{kind}\",\"datagrams_per_s\":{dps},\"flows_per_s\":{fps},\"loss\":{:.6},\"sender_bound\":{sender_bound}}}",
                    if json.len() > 1 { "," } else { "" },
                    t.loss()
                );
            }
            None => {
                let _ = writeln!(table, "| {proto} | {kind} | - | - | {why} |");
            }
        }
    }
    json.push(']');
    let out_dir = workspace.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(out_dir.join("ingest.json"), json)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{table}")?;
    Ok(())
}

fn rustix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}
