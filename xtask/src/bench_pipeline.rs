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
/// The `ingest` instance's telemetry when the flows go through Kafka.
const INGEST_TELEMETRY: &str = "127.0.0.1:19472";

fn metric(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l.as_bytes().get(series.len()) == Some(&b' '))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

/// The largest value of any series of `name`.
fn max_metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .fold(0.0, f64::max)
}

fn metrics() -> String {
    metrics_of(TELEMETRY)
}

fn metrics_of(addr: &str) -> String {
    Command::new("curl")
        .args(["-s", &format!("http://{addr}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn psql(url: &str, sql: &str) -> Result<String> {
    Ok(run_ok(Command::new("psql").args([url, "-Atc", sql]))?
        .trim()
        .to_owned())
}

/// Where the flows go from the receiving socket to the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    /// One `run` process (the in-process queues).
    Direct,
    /// `run --role ingest` -> a tansu broker -> `run --role process`.
    Kafka,
}

/// What one run measured.
pub(crate) struct Measured {
    pub(crate) offered: f64,
    pub(crate) sent: u64,
    pub(crate) decoded: f64,
    pub(crate) committed: u64,
    pub(crate) loss: f64,
    pub(crate) dependencies: String,
    pub(crate) flushes: f64,
    pub(crate) failures: f64,
    pub(crate) flush_median: f64,
    pub(crate) flush_max: f64,
    pub(crate) flush_times: String,
    pub(crate) done_secs: f64,
    /// The largest consumer lag seen (records), through Kafka.
    pub(crate) max_lag: f64,
    /// Through Kafka: change events and alerts written, those the relay published,
    /// and when (s from the start) the last was.
    pub(crate) events: (u64, f64, f64),
}

/// The sum of every series of `name`.
fn sum_metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b' ' | b'{'))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

pub(crate) fn run(opts: &Options, workspace: &Path) -> Result<()> {
    let daemon = build(workspace)?;
    let m = measure(opts, &daemon, workspace, Way::Direct)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| offered flows/s | sent | decoded | committed | loss | dependencies | flushes (failed) | flush median s | flush max s | interval s | all committed after s |\n|---|---|---|---|---|---|---|---|---|---|---|\n| {:.0} | {} | {:.0} | {} | {:.4}% | {} | {:.0} ({:.0}) | {:.3} | {:.3} | {} | {:.1} |\nflush times in order, s: {}",
        m.offered,
        m.sent,
        m.decoded,
        m.committed,
        m.loss * 100.0,
        m.dependencies,
        m.flushes,
        m.failures,
        m.flush_median,
        m.flush_max,
        opts.flush_interval,
        m.done_secs,
        m.flush_times,
    )?;
    Ok(())
}

/// Builds the release daemon; its path.
pub(crate) fn build(workspace: &Path) -> Result<std::path::PathBuf> {
    run_ok(Command::new("cargo").current_dir(workspace).args([
        "build",
        "--release",
        "-p",
        "flowlens-daemon",
    ]))?;
    Ok(workspace.join("target/release/flowlens-daemon"))
}

/// Starts `daemon run ARGS --config DIR/NAME.yaml` with its log in `DIR/NAME.log`.
fn start(
    daemon: &Path,
    dir: &Path,
    name: &str,
    config: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<Killer> {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config)?;
    let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
    let child = Command::new(daemon)
        .arg("run")
        .args(args)
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .env("FLOWLENS_LOG", "info,flowlens_daemon::graph=debug")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    Ok(Killer(child))
}

/// Runs the generator through `way` into a fresh database; what it measured.
#[expect(clippy::too_many_lines, reason = "one script, in the order it runs")]
pub(crate) fn measure(
    opts: &Options,
    daemon: &Path,
    workspace: &Path,
    way: Way,
) -> Result<Measured> {
    let db = format!("bench_{}_{}", std::process::id(), way == Way::Kafka);
    let (cluster, durable) = if opts.durable {
        ("target/bench-pg-durable", &["--durable"][..])
    } else {
        ("target/bench-pg", &[][..])
    };
    let url = run_ok(
        Command::new(daemon)
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
    let mut procs = Vec::new();
    let mut broker = None;
    match way {
        Way::Direct => procs.push(start(
            daemon,
            &dir,
            "daemon",
            &config,
            &["--no-xdp", "--output", "postgres"],
            &[("DATABASE_URL", &url)],
        )?),
        Way::Kafka => {
            let tansu = workspace.join("target/tools/tansu");
            if !tansu.exists() {
                bail!("{} is missing: run .ci/install-tansu", tansu.display());
            }
            let listen = "tcp://127.0.0.1:19092";
            broker = Some(Killer(
                Command::new(&tansu)
                    .args([
                        "broker",
                        "--listener-url",
                        listen,
                        "--advertised-listener-url",
                        listen,
                    ])
                    .args(["--storage-engine", "memory://tansu/"])
                    .env("RUST_LOG", "warn")
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.join("tansu.log"))?)
                    .spawn()?,
            ));
            let kafka = [
                ("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092"),
                ("DATABASE_URL", url.as_str()),
            ];
            procs.push(start(
                daemon,
                &dir,
                "process",
                &config,
                &["--role", "process", "--output", "postgres"],
                &kafka,
            )?);
            let ingest_config = config.replace(TELEMETRY, INGEST_TELEMETRY);
            let ready = Instant::now();
            while metrics().is_empty() {
                if ready.elapsed() > Duration::from_mins(1) {
                    bail!(
                        "the process instance did not start; see {}",
                        dir.join("process.log").display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // The consumer joins its group before the generator starts, so the run
            // measures sustained consumption, not a backlog.
            while max_metric(&metrics(), "flowlens_kafka_rebalances_total") < 1.0 {
                if ready.elapsed() > Duration::from_mins(2) {
                    bail!(
                        "the process instance got no partitions; see {}",
                        dir.join("process.log").display()
                    );
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            procs.push(start(
                daemon,
                &dir,
                "ingest",
                &ingest_config,
                &["--role", "ingest", "--no-xdp", "--output", "discard"],
                &kafka[..1],
            )?);
            while metrics_of(INGEST_TELEMETRY).is_empty() {
                if ready.elapsed() > Duration::from_mins(1) {
                    bail!(
                        "the ingest instance did not start; see {}",
                        dir.join("ingest.log").display()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let ready = Instant::now();
    while metrics().is_empty() {
        if ready.elapsed() > Duration::from_secs(30) {
            bail!("the daemon did not start; see {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Records per round: two per connection, one connection per client and service.
    let per_round = 2 * (opts.clients as u64 * 3 + 2 + 3);
    let rounds = (opts.rate * opts.duration).div_ceil(per_round).max(1);
    eprintln!(
        "bench pipeline ({way:?}): {} clients ({} edges/window), {rounds} rounds of {per_round} flows at {} flows/s",
        opts.clients,
        opts.clients * 3 + 5,
        opts.rate
    );
    let started = Instant::now();
    let report = run_ok(Command::new(daemon).args([
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
    let mut max_lag = 0.0_f64;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(1));
        max_lag = max_lag.max(max_metric(&metrics(), "flowlens_kafka_consumer_lag"));
        committed = psql(&url, "SELECT coalesce(sum(flow_count), 0) FROM flow_stats")?
            .parse()
            .unwrap_or(0);
        if committed >= sent {
            break;
        }
    }
    let done_secs = started.elapsed().as_secs_f64();
    // Through Kafka, the relay publishes the change events and alerts the flushes
    // wrote (a new network: one per asset and dependency, and their alerts).
    let mut events = (0, 0.0, 0.0);
    if way == Way::Kafka {
        let written: u64 = psql(
            &url,
            "SELECT (SELECT count(*) FROM change_events) + (SELECT count(*) FROM alerts)",
        )?
        .parse()
        .unwrap_or(0);
        let deadline = Instant::now() + Duration::from_mins(2);
        loop {
            #[expect(clippy::cast_precision_loss, reason = "a count")]
            let all = written as f64;
            let published = sum_metric(&metrics(), "flowlens_kafka_events_published_total");
            events = (written, published, started.elapsed().as_secs_f64());
            if published >= all || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let body = metrics();
    // Every flush's own time, from the writer's debug line: the metric is a summary
    // over a rolling window, which forgets the early flushes of a long run.
    let log = std::fs::read_to_string(dir.join(if way == Way::Kafka {
        "process.log"
    } else {
        "daemon.log"
    }))
    .unwrap_or_default();
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
    drop(procs);
    drop(broker);
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    Ok(Measured {
        offered: sent as f64 / send_secs,
        sent,
        decoded: received,
        committed,
        loss: 1.0 - committed.min(sent) as f64 / sent.max(1) as f64,
        dependencies: deps,
        flushes,
        failures,
        flush_median: median,
        flush_max: max,
        flush_times: listed,
        done_secs,
        max_lag,
        events,
    })
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
