//! EDGE: runs a [`Plan`]: TCP connects to every (address, port), at most
//! `concurrency` in flight and `rate_per_second` started per second, in a task of its
//! own that outlives the request which started it.
//!
//! Two tasks per scan. The prober walks the plan lazily (a /16 is never a list in
//! memory), paces attempts with a ticker, bounds them with a semaphore and sends each
//! outcome down a bounded channel; a probe keeps its permit until its outcome is
//! taken, so a slow database slows probing instead of piling up answers. The
//! collector folds outcomes into a [`Tally`], writes each finished host's asset, and
//! writes the counters to the scan row every [`PROGRESS_INTERVAL`] (not per probe),
//! then once more on completion. Any error, or a panic, ends the scan `failed` with a
//! message fit for viewers; the detail goes to the log.
//!
//! Cancellation (the row already says `cancelled`) is seen by the collector between
//! two answers, not at the next answer: it stops waiting, aborts the prober and with
//! it every probe in flight, and writes the counters as they stand. A host whose
//! asset is being written when the switch is thrown is written whole first.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::MissedTickBehavior;
use uuid::Uuid;

use super::outcome::{ProbeOutcome, Tally};
use super::plan::Plan;
use super::store::{self, AssetWrite, ScanRef, StoreError};
use super::{Cancel, Slot};
use crate::config::DiscoveryConfig;
use crate::telemetry;

/// How often a running scan writes its progress.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);

/// The knobs of one scan, from `api.discovery`.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub concurrency: usize,
    pub rate_per_second: u32,
    pub connect_timeout: Duration,
}

impl Pace {
    pub fn from_config(config: &DiscoveryConfig) -> Self {
        Self {
            concurrency: config.concurrency.max(1),
            rate_per_second: config.rate_per_second.max(1),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms.max(1)),
        }
    }

    /// The gap between two connection attempts (a ticker needs a non-zero period).
    fn attempt_period(self) -> Duration {
        (Duration::from_secs(1) / self.rate_per_second).max(Duration::from_nanos(1))
    }
}

/// Why a scan failed.
#[derive(Debug, thiserror::Error)]
enum ScanError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The scan or its prober panicked (a bug; the log has the detail).
    #[error("the scan task stopped unexpectedly")]
    Panicked,
}

impl From<sqlx::Error> for ScanError {
    fn from(e: sqlx::Error) -> Self {
        Self::Store(StoreError::Database(e))
    }
}

impl ScanError {
    /// What the scan row says: no SQL, which is for the log.
    fn public(&self) -> String {
        match self {
            Self::Store(StoreError::Database(_)) => {
                "database error during the scan; see the API log".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// How a scan that did not fail ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    Completed,
    Cancelled,
    /// Its row ended elsewhere (failed as orphaned by another instance while this one
    /// stalled): it stops probing and leaves the row as it is.
    Abandoned,
}

/// Starts scan `id` (already `queued` in `discovery_scans`), asked for by
/// `requested_by`. `slot` is the scan's place under `api.discovery.max_running_scans`
/// and its cancel switch, given back when the scan ends however it ends.
pub fn spawn(
    pool: PgPool,
    id: Uuid,
    requested_by: String,
    plan: Plan,
    pace: Pace,
    slot: Slot,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let cancel = slot.cancel().clone();
        let _slot = slot;
        // Its own task, so a panic becomes a JoinError here instead of a row stuck in
        // `running`.
        let task = run(pool.clone(), id, requested_by, plan, pace, cancel);
        let outcome = match tokio::spawn(task).await {
            Ok(result) => result,
            Err(join) => {
                tracing::error!(scan = %id, error = %join, "discovery scan task died");
                Err(ScanError::Panicked)
            }
        };
        let status = match &outcome {
            Ok(Ended::Completed) => "completed",
            Ok(Ended::Cancelled) => "cancelled",
            Ok(Ended::Abandoned) => "abandoned",
            Err(e) => {
                tracing::error!(scan = %id, error = %e, "discovery scan failed");
                if let Err(db) = store::mark_failed(&pool, id, &e.public()).await {
                    tracing::error!(scan = %id, error = %db, "recording the failed scan");
                }
                "failed"
            }
        };
        metrics::counter!(telemetry::DISCOVERY_SCANS, "status" => status).increment(1);
    })
}

async fn run(
    pool: PgPool,
    id: Uuid,
    requested_by: String,
    plan: Plan,
    pace: Pace,
    cancel: Cancel,
) -> Result<Ended, ScanError> {
    // Cancelled while queued: the row says so already, and nothing was probed.
    if cancel.is_cancelled() || !store::mark_running(&pool, id).await? {
        tracing::info!(scan = %id, "discovery scan cancelled before it started");
        return Ok(Ended::Cancelled);
    }
    tracing::info!(scan = %id, cidr = %plan.network, hosts = plan.hosts.len(),
        ports = plan.ports.len(), "discovery scan started");
    let scan = ScanRef {
        id,
        requested_by: &requested_by,
    };
    let (tx, mut rx) = mpsc::channel(pace.concurrency);
    // Dropping the set (an early return below) aborts the prober and, with it, the
    // probes it owns.
    let mut prober = JoinSet::new();
    prober.spawn(probe_all(plan.clone(), pace, tx, cancel.clone()));
    let mut tally = Tally::new(plan.ports.len());
    let mut progress = tokio::time::interval(PROGRESS_INTERVAL);
    progress.set_missed_tick_behavior(MissedTickBehavior::Delay);
    progress.tick().await;
    let mut ended = Ended::Completed;
    loop {
        tokio::select! {
            // Checked first: once cancelled, no further answer is taken.
            biased;
            () = cancel.cancelled() => {
                ended = Ended::Cancelled;
                break;
            }
            answer = rx.recv() => {
                let Some((ip, port, outcome, _permit)) = answer else { break };
                metrics::counter!(telemetry::DISCOVERY_PROBES, "result" => outcome.as_str())
                    .increment(1);
                let Some(host) = tally.record(ip, port, outcome) else { continue };
                if host.open.is_empty() {
                    continue;
                }
                match store::record_host(&pool, scan, host.ip, &plan.ports, &host.open).await? {
                    AssetWrite::Created(_) => tally.assets_created += 1,
                    AssetWrite::Updated(_) => tally.assets_updated += 1,
                }
            }
            _ = progress.tick() => {
                if !store::write_progress(&pool, id, &mut tally, false).await? {
                    ended = if cancel.is_cancelled() { Ended::Cancelled } else { Ended::Abandoned };
                    break;
                }
            }
        }
    }
    if ended != Ended::Completed {
        // Stops the probes in flight too: they belong to the prober's set.
        prober.abort_all();
    }
    // The channel closes when the prober has finished, or died.
    while let Some(done) = prober.join_next().await {
        match done {
            Err(e) if !e.is_cancelled() => return Err(ScanError::Panicked),
            _ => {}
        }
    }
    // Completing is skipped for a cancelled scan, and refused by the row for a scan
    // cancelled since the loop ended.
    let completed = ended == Ended::Completed;
    let _still = store::write_progress(&pool, id, &mut tally, completed).await?;
    tracing::info!(scan = %id, hosts_scanned = tally.hosts_scanned, hosts_up = tally.hosts_up,
    created = tally.assets_created, updated = tally.assets_updated,
    "discovery scan {}", match ended {
        Ended::Completed => "completed",
        Ended::Cancelled => "cancelled",
        Ended::Abandoned => "abandoned: its row was ended by another instance",
    });
    Ok(ended)
}

/// One probe's answer, with the concurrency permit it holds until the answer is read.
type Answer = (IpAddr, u16, ProbeOutcome, OwnedSemaphorePermit);

/// Starts every probe of `plan` at the configured pace, none once `cancel` is thrown
/// (even while the collector is busy writing and has not yet aborted us).
async fn probe_all(plan: Plan, pace: Pace, tx: mpsc::Sender<Answer>, cancel: Cancel) {
    let in_flight = Arc::new(Semaphore::new(pace.concurrency));
    let mut ticker = tokio::time::interval(pace.attempt_period());
    // After a stall (all permits taken) carry on at the rate, never in a burst.
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut probes = JoinSet::new();
    for ip in plan.hosts.iter() {
        for &port in &plan.ports {
            ticker.tick().await;
            if cancel.is_cancelled() {
                return;
            }
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                return; // never closed
            };
            // Reap finished probes so the set stays as small as what is in flight.
            while probes.try_join_next().is_some() {}
            let tx = tx.clone();
            let timeout = pace.connect_timeout;
            probes.spawn(async move {
                let outcome = probe(SocketAddr::new(ip, port), timeout).await;
                // A closed channel means the scan is over; nobody wants the answer.
                let _ = tx.send((ip, port, outcome, permit)).await;
            });
        }
    }
    while probes.join_next().await.is_some() {}
}

/// One TCP connect, closed as soon as it is made: we learn that the port is open and
/// send nothing.
async fn probe(addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
    let result = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .ok()
        .map(|r| r.map(drop));
    ProbeOutcome::classify(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attempt_period_follows_the_rate_and_is_never_zero() {
        let pace = |rate| Pace {
            concurrency: 1,
            rate_per_second: rate,
            connect_timeout: Duration::from_secs(1),
        };
        assert_eq!(pace(1).attempt_period(), Duration::from_secs(1));
        assert_eq!(pace(500).attempt_period(), Duration::from_millis(2));
        assert_eq!(pace(u32::MAX).attempt_period(), Duration::from_nanos(1));
    }

    #[tokio::test]
    async fn probes_tell_open_from_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        // A bound socket that does not listen: the kernel answers RST.
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let closed = closed.local_addr().unwrap();
        let t = Duration::from_secs(2);
        assert_eq!(probe(open, t).await, ProbeOutcome::Open);
        assert_eq!(probe(closed, t).await, ProbeOutcome::Refused);
    }
}
