//! Shared by integration tests that run the real `flowlens-daemon run` process.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    clippy::float_cmp,
    reason = "tests poll a separate process; metric values are small integers"
)]

pub(crate) mod graph;
pub(crate) mod netns;
pub(crate) mod topics;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running daemon, killed (SIGKILL) if the test panics before stopping it.
pub(crate) struct Daemon {
    pub(crate) child: Option<Child>,
    pub(crate) telemetry: SocketAddr,
    pub(crate) netflow: SocketAddr,
    pub(crate) ipfix: SocketAddr,
    pub(crate) sflow: SocketAddr,
    pub(crate) dir: PathBuf,
}

/// A free port on 127.0.0.1 for `udp` or TCP (best effort: the port is released before
/// the daemon binds it).
pub(crate) fn free_port(udp: bool) -> u16 {
    if udp {
        UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    } else {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }
}

pub(crate) fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("flowlens-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Daemon {
    /// Starts `flowlens-daemon run --no-xdp` with UDP ports and telemetry on free
    /// loopback ports, `env` as extra `FLOWLENS_*` overrides, writing flows to
    /// `<dir>/flows.jsonl` (or `output`).
    pub(crate) fn start(name: &str, env: &[(&str, &str)], output: Option<&Path>) -> Self {
        let dir = temp_dir(name);
        let out = output.map_or_else(|| dir.join("flows.jsonl"), Path::to_path_buf);
        Self::start_in(dir, env, &format!("jsonl:{}", out.display()), &["--no-xdp"])
    }

    /// [`Self::start`] with any `--output` (e.g. `postgres`).
    pub(crate) fn start_output(name: &str, env: &[(&str, &str)], output: &str) -> Self {
        Self::start_in(temp_dir(name), env, output, &["--no-xdp"])
    }

    /// [`Self::start`] with `ingest_args` instead of `--no-xdp` (e.g. an `--iface`).
    pub(crate) fn start_ingest(name: &str, ingest_args: &[&str]) -> Self {
        let dir = temp_dir(name);
        let out = format!("jsonl:{}", dir.join("flows.jsonl").display());
        Self::start_in(dir, &[], &out, ingest_args)
    }

    fn start_in(dir: PathBuf, env: &[(&str, &str)], output: &str, ingest_args: &[&str]) -> Self {
        Self::start_configured(dir, env, output, ingest_args, "")
    }

    /// `flowlens-daemon run ARGS --output OUTPUT` (no `--no-xdp` unless in `args`) with
    /// `extra_yaml` appended to the test's configuration (top-level sections other
    /// than `ingestion` and `telemetry`).
    pub(crate) fn start_with(
        name: &str,
        env: &[(&str, &str)],
        output: &str,
        args: &[&str],
        extra_yaml: &str,
    ) -> Self {
        Self::start_configured(temp_dir(name), env, output, args, extra_yaml)
    }

    fn start_configured(
        dir: PathBuf,
        env: &[(&str, &str)],
        output: &str,
        ingest_args: &[&str],
        extra_yaml: &str,
    ) -> Self {
        let (nf, ipfix, sflow, tel) = (
            free_port(true),
            free_port(true),
            free_port(true),
            free_port(false),
        );
        let config = format!(
            "ingestion:\n  netflow_port: {nf}\n  ipfix_port: {ipfix}\n  sflow_port: {sflow}\n  \
             batch_timeout_ms: 20\ntelemetry:\n  listen_address: 127.0.0.1:{tel}\n{extra_yaml}"
        );
        std::fs::write(dir.join("config.yaml"), config).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flowlens-daemon"))
            .arg("run")
            .args(ingest_args)
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .arg("--output")
            .arg(output)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap())
            .envs(env.iter().copied())
            .spawn()
            .expect("spawning flowlens-daemon");
        let d = Self {
            child: Some(child),
            telemetry: SocketAddr::from(([127, 0, 0, 1], tel)),
            netflow: SocketAddr::from(([127, 0, 0, 1], nf)),
            ipfix: SocketAddr::from(([127, 0, 0, 1], ipfix)),
            sflow: SocketAddr::from(([127, 0, 0, 1], sflow)),
            dir,
        };
        // Ready, not just answering: /health answers before the sockets are bound, and
        // a datagram sent then is refused (ICMP), failing the sender's next send.
        d.wait_until("the daemon ready", |d| {
            d.get("/health")
                .is_some_and(|h| h.contains("\"ready\":true"))
        });
        d
    }

    /// `GET path` on the telemetry address; the body on 200.
    pub(crate) fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect_timeout(&self.telemetry, Duration::from_millis(200)).ok()?;
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
    }

    /// Current metrics: (name with labels) -> value.
    pub(crate) fn metrics(&self) -> HashMap<String, f64> {
        let body = self.get("/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_owned(), v.parse().ok()?))
            })
            .collect()
    }

    /// Sum of every series of `name` whose labels contain all of `labels`.
    pub(crate) fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        sum_metric(&self.metrics(), name, labels)
    }

    pub(crate) fn wait_until(&self, what: &str, mut ok: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if ok(self) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        panic!("timed out waiting for {what}; daemon log:\n{log}");
    }

    /// SIGTERM, then wait for a clean exit; returns the log.
    pub(crate) fn stop(mut self) -> String {
        let mut child = self.child.take().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
                assert!(status.success(), "daemon exited with {status}; log:\n{log}");
                return log;
            }
            assert!(Instant::now() < deadline, "daemon did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub(crate) fn sum_metric(m: &HashMap<String, f64>, name: &str, labels: &[&str]) -> f64 {
    m.iter()
        .filter(|(k, _)| {
            (k.as_str() == name || k.starts_with(&format!("{name}{{")))
                && labels.iter().all(|l| k.contains(l))
        })
        .map(|(_, v)| *v)
        .sum()
}

/// The records of a JSON-lines flow file.
pub(crate) fn read_flows(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

/// The daemon settings of the pressure tests: one decode worker, sampling 1:10 from
/// 1000 queued datagrams, back to 1:1 below 500, dropping only at 10000 (room for a
/// slow pressure tick on a busy machine, so nothing is dropped).
pub(crate) const PRESSURE_ENV: [(&str, &str); 6] = [
    ("FLOWLENS_INGESTION__WORKERS", "1"),
    ("FLOWLENS_INGESTION__BATCH_SIZE", "30"),
    (
        "FLOWLENS_INGESTION__BACKPRESSURE__DROP_THRESHOLD_QUEUE_DEPTH",
        "10000",
    ),
    ("FLOWLENS_INGESTION__BACKPRESSURE__HIGH_WATERMARK", "0.1"),
    ("FLOWLENS_INGESTION__BACKPRESSURE__LOW_WATERMARK", "0.05"),
    (
        "FLOWLENS_INGESTION__BACKPRESSURE__SAMPLE_RATE_UNDER_PRESSURE",
        "10",
    ),
];

/// A sink that does not read until told to: a FIFO for the daemon's JSON-lines output,
/// its read side opened (the daemon opens the write side at start) but read only after
/// [`SlowSink::drain`], so the daemon's queues fill meanwhile.
pub(crate) struct SlowSink {
    pub(crate) path: PathBuf,
    go: std::sync::mpsc::Sender<()>,
    reader: std::thread::JoinHandle<String>,
}

impl SlowSink {
    pub(crate) fn new(name: &str) -> Self {
        let path = temp_dir(name).join("flows.fifo");
        assert!(
            Command::new("mkfifo")
                .arg(&path)
                .status()
                .unwrap()
                .success()
        );
        let (go, go_rx) = std::sync::mpsc::channel::<()>();
        let reader_path = path.clone();
        let reader = std::thread::spawn(move || {
            let mut f = std::fs::File::open(&reader_path).unwrap();
            go_rx.recv().unwrap();
            let mut all = String::new();
            f.read_to_string(&mut all).unwrap();
            all
        });
        Self { path, go, reader }
    }

    /// Starts reading.
    pub(crate) fn drain(&self) {
        self.go.send(()).unwrap();
    }

    /// Everything the daemon wrote, once it has closed the FIFO (stopped).
    pub(crate) fn output(self) -> String {
        self.reader.join().unwrap()
    }

    /// The sum of `bytes * sampling_rate` over the flows written: what the sampled
    /// output says was sent.
    pub(crate) fn renormalised_bytes(self) -> f64 {
        self.output()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .map(|f| f["bytes"].as_f64().unwrap() * f["sampling_rate"].as_f64().unwrap())
            .sum()
    }
}

/// `promtool check metrics` (Debian's `prometheus` package) accepts `body`, a
/// `/metrics` page. Without promtool: fails where `CI` is set, skips elsewhere.
pub(crate) fn promtool_accepts(body: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(mut child) = child else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed"
        );
        eprintln!("skipping the promtool check: promtool is not installed");
        return;
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
