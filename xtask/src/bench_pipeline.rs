//! `cargo xtask bench pipeline`: flows per second from intake to committed PostgreSQL
//! rows.
//!
//! A private PostgreSQL cluster (`target/bench-pg`, a fresh database per run), the
//! daemon in socket mode writing the graph (`--output postgres`, raw flows off: at this
//! rate the design routes raw flows through Kafka), and `flowlens-daemon generate`
//! playing the enterprise topology scaled to `--clients` clients (three dependencies
//! each: 33 334 clients give 100 002 distinct edges per window) at `--rate` flows/s for
//! `--duration` seconds. When the generator is done and the last flush is in, the
//! flows committed (`sum(flow_count)` of `flow_stats`) are compared with those sent,
//! and the flush times (`flowlens_graph_flush_seconds`) with the flush interval.

#![allow(
    clippy::disallowed_methods,
    reason = "a synchronous script: it waits for processes"
)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_ingest::{Killer, run_ok};

/// Options of `cargo xtask bench pipeline`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    /// Offered flow records per second.
    #[arg(long, default_value_t = 500_000)]
    pub(crate) rate: u64,
    /// Seconds of traffic.
    #[arg(long, default_value_t = 30)]
    pub(crate) duration: u64,
    /// Topology clients (three dependencies each).
    #[arg(long, default_value_t = 33_334)]
    pub(crate) clients: usize,
    /// `dependency_resolution.aggregation.flush_interval_seconds`.
    #[arg(long, default_value_t = 10)]
    pub(crate) flush_interval: u64,
    /// Against a durable cluster (fsync on, as the main job runs; `target/bench-pg-durable`)
    /// instead of the fast scratch one (`target/bench-pg`).
    #[arg(long)]
    pub(crate) durable: bool,
}

const IPFIX_PORT: u16 = 24_739;
const TELEMETRY: &str = "127.0.0.1:19471";

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l.as_bytes().get(series.len()) == Some(&b' '))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

fn metrics() -> String {
    Command::new("curl")
        .args(["-s", &format!("http://{TELEMETRY}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn psql(url: &str, sql: &str) -> Result<String> {
    Ok(run_ok(Command::new("psql").args([url, "-Atc", sql]))?
        .trim()
        .to_owned())
}

pub(crate) fn run(opts: &Options, workspace: &Path) -> Result<()> {
    run_ok(Command::new("cargo").current_dir(workspace).args([
        "build",
        "--release",
        "-p",
        "flowlens-daemon",
    ]))?;
    let daemon = workspace.join("target/release/flowlens-daemon");
    let db = format!("bench_{}", std::process::id());
    let (cluster, durable) = if opts.durable {
        ("target/bench-pg-durable", &["--durable"][..])
    } else {
        ("target/bench-pg", &[][..])
    };
    let url = run_ok(
        Command::new(&daemon)
            .args(["embedded-postgres", "--database", &db])
            .args(durable)
            .arg("--dir")
            .arg(workspace.join(cluster)),
    )?
    .trim()
    .to_owned();
    let dir = std::env::temp_dir().join("flowlens-bench-pipeline");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let config = format!(
        "ingestion:\n  bind_address: 127.0.0.1\n  ipfix_port: {IPFIX_PORT}\n  netflow_port: 24755\n  \
         sflow_port: 24763\n  receive_buffer_size: 67108864\n  backpressure:\n    enabled: false\n    \
         drop_threshold_queue_depth: 1000000\ntelemetry:\n  listen_address: {TELEMETRY}\n\
         database:\n  write_raw_flows: false\nenrichment:\n  dns:\n    enabled: false\ndependency_resolution:\n  aggregation:\n    \
         flush_interval_seconds: {}\n",
        opts.flush_interval
    );
    std::fs::write(dir.join("config.yaml"), config)?;
    let log = std::fs::File::create(dir.join("daemon.log"))?;
    let child = Command::new(&daemon)
        .args(["run", "--no-xdp", "--output", "postgres", "--config"])
        .arg(dir.join("config.yaml"))
        .env("DATABASE_URL", &url)
        .env("FLOWLENS_LOG", "info,flowlens_daemon::graph=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let daemon_proc = Killer(child);
    let ready = Instant::now();
    while metrics().is_empty() {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!(
                "the daemon did not start; see {}",
                dir.join("daemon.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Records per round: two per connection, one connection per client and service.
    let per_round = 2 * (opts.clients as u64 * 3 + 2 + 3);
    let rounds = (opts.rate * opts.duration).div_ceil(per_round).max(1);
    eprintln!(
        "bench pipeline: {} clients ({} edges/window), {rounds} rounds of {per_round} flows at {} flows/s",
        opts.clients,
        opts.clients * 3 + 5,
        opts.rate
    );
    let started = Instant::now();
    let report = run_ok(Command::new(&daemon).args([
        "generate",
        "--target",
        &format!("127.0.0.1:{IPFIX_PORT}"),
        "--rate",
        &opts.rate.to_string(),
        "--rounds",
        &rounds.to_string(),
        "--clients",
        &opts.clients.to_string(),
    ]))?;
    let send_secs = started.elapsed().as_secs_f64();
    let sent: u64 = report
        .split("\"flows\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .context("no flows in the generator's report")?;
    // Wait for the decode queues to drain and one more flush to commit them.
    let deadline = Instant::now() + Duration::from_secs(opts.flush_interval * 3 + 30);
    let mut committed = 0u64;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        committed = psql(&url, "SELECT coalesce(sum(flow_count), 0) FROM flow_stats")?
            .parse()
            .unwrap_or(0);
        if committed >= sent {
            break;
        }
    }
    let done_secs = started.elapsed().as_secs_f64();
    let body = metrics();
    // Every flush's own time, from the writer's debug line: the metric is a summary
    // over a rolling window, which forgets the early flushes of a long run.
    let log = std::fs::read_to_string(dir.join("daemon.log")).unwrap_or_default();
    let times = flush_times(&log);
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let max = sorted.last().copied().unwrap_or(0.0);
    let listed = times
        .iter()
        .map(|t| format!("{t:.1}"))
        .collect::<Vec<_>>()
        .join(", ");
    let flushes = metric(&body, "flowlens_graph_flushes_total").unwrap_or(0.0);
    let failures = metric(&body, "flowlens_graph_flush_failures_total").unwrap_or(0.0);
    let received = metric(&body, "flowlens_flows_processed_total").unwrap_or(0.0);
    let deps = psql(&url, "SELECT count(*) FROM dependencies")?;
    drop(daemon_proc);
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    let (offered, loss) = (
        sent as f64 / send_secs,
        1.0 - committed.min(sent) as f64 / sent.max(1) as f64,
    );
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| offered flows/s | sent | decoded | committed | loss | dependencies | flushes (failed) | flush median s | flush max s | interval s | all committed after s |\n|---|---|---|---|---|---|---|---|---|---|---|\n| {offered:.0} | {sent} | {received:.0} | {committed} | {:.4}% | {deps} | {flushes:.0} ({failures:.0}) | {median:.3} | {max:.3} | {} | {done_secs:.1} |\nflush times in order, s: {listed}",
        loss * 100.0,
        opts.flush_interval
    )?;
    Ok(())
}

/// The total time of each flush, in order: the `commit` phase of the writer's
/// `graph flush ... phases=[(\"assets\", s), ..., (\"commit\", s)]` debug lines.
fn flush_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter(|l| l.contains("graph flush"))
        .filter_map(|l| {
            let rest = &l[l.find("(\"commit\", ")? + "(\"commit\", ".len()..];
            rest[..rest.find(')')?].trim().parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_flush_times_from_the_debug_log() {
        let log = "x DEBUG graph flush edges=3 phases=[(\"assets\", 1.5), (\"commit\", 14.25)]\n\
                   y INFO other\nz DEBUG graph flush phases=[(\"commit\", 0.5)]\n";
        assert_eq!(super::flush_times(log), vec![14.25, 0.5]);
    }
}
