//! `cargo xtask bench kafka`: flows per second from the receiving socket to committed
//! PostgreSQL rows through `run --role ingest` -> a Kafka-protocol broker (tansu,
//! `.ci/install-tansu`, memory storage) -> `run --role process`, next to the direct
//! path (one `run` process) in the same run: the same generator, topology, rate and
//! flush interval (`bench pipeline`'s options; the goal is `--rate 300000`),
//! each into a fresh database.

use std::io::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::bench_pipeline::{self, Measured, Options, Way};

pub(crate) fn run(opts: &Options, workspace: &Path) -> Result<()> {
    let daemon = bench_pipeline::build(workspace)?;
    let direct = bench_pipeline::measure(opts, &daemon, workspace, Way::Direct)?;
    let kafka = bench_pipeline::measure(opts, &daemon, workspace, Way::Kafka)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "| path | offered flows/s | sent | committed | loss | committed flows/s | flush median s | flush max s | max consumer lag | all committed after s |\n|---|---|---|---|---|---|---|---|---|---|"
    )?;
    for (name, m) in [("direct", &direct), ("kafka", &kafka)] {
        writeln!(
            out,
            "| {name} | {:.0} | {} | {} | {:.4}% | {:.0} | {:.3} | {:.3} | {:.0} | {:.1} |",
            m.offered,
            m.sent,
            m.committed,
            m.loss * 100.0,
            rate(m),
            m.flush_median,
            m.flush_max,
            m.max_lag,
            m.done_secs
        )?;
    }
    writeln!(
        out,
        "kafka / direct, committed flows/s: {:.2}\nflush times (kafka), s: {}",
        rate(&kafka) / rate(&direct).max(1.0),
        kafka.flush_times
    )?;
    let (written, published, at) = kafka.events;
    writeln!(
        out,
        "change events + alerts (kafka): {written} written, {published:.0} published, the last {at:.1} s after the start"
    )?;
    Ok(())
}

/// Flows committed per second of the whole run (sending and the last flush).
fn rate(m: &Measured) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let committed = m.committed as f64;
    committed / m.done_secs.max(1e-3)
}
