//! The unit of ingestion and the dispatcher that shards it onto decode workers.
//!
//! Template state is per exporter, so every datagram of one exporter must be decoded
//! by the same worker: the [`Dispatcher`] hashes the exporter address to pick a
//! worker's bounded queue. A full queue is never waited on (the receive path must not
//! stall); the datagram is dropped and counted, which is the backpressure of last
//! resort (the sampling in `pressure` acts before queues fill).
//!
//! The Kafka consumer (the `process` role) also sends [`Mark`]s down every queue: a
//! mark reaches the sink once each worker has handed over everything queued before
//! it, so the sink knows which raw-topic positions its aggregated flows cover.

use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::kafka::positions::Positions;

/// An exporter address as IPv6 octets back to an `IpAddr`: IPv4-mapped becomes IPv4,
/// so an exporter has one key (and one metrics label) whichever path counted it: the
/// sockets, the rings, or the XDP program's per-exporter map.
pub fn exporter_ip(octets: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(octets);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// Where a datagram was received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Xdp,
    Udp,
}

/// One received flow datagram, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDatagram {
    /// UDP source address: the exporter.
    pub exporter: IpAddr,
    /// Receive time, ms since the Unix epoch.
    pub received_at_ms: u64,
    /// 1:N pre-sampling applied before this datagram was kept (XDP or userspace); 1 when
    /// every datagram is kept. Decoded records' rates are multiplied by it.
    pub presample_rate: u32,
    pub source: Source,
    pub payload: Vec<u8>,
    /// The datagram's real length when it was longer than intake's buffer (`payload`
    /// holds only the start of it): counted as malformed, never decoded.
    pub truncated_from: Option<usize>,
}

/// A point in the raw topic that every decode worker passes on to the sink.
#[derive(Debug)]
pub struct Mark {
    /// Sent to every worker: the sink acts once all of them passed it on.
    pub workers: usize,
    /// Positions up to which everything was queued before this mark.
    pub positions: Positions,
    /// When set, the sink writes what it holds at once and answers whether that
    /// flush committed (a partition is being handed to another instance).
    pub flush: Option<std::sync::mpsc::SyncSender<bool>>,
}

/// What a decode worker's queue carries.
#[derive(Debug)]
pub enum Work {
    Datagram(RawDatagram),
    Mark(Arc<Mark>),
}

/// Shards datagrams by exporter onto bounded worker queues; cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    queues: Arc<[Sender<Work>]>,
    hasher: std::collections::hash_map::RandomState,
    dropped: Arc<AtomicU64>,
}

impl Dispatcher {
    /// Creates `workers` queues of `capacity` datagrams each; returns the dispatcher
    /// and one receiver per worker.
    pub fn new(workers: usize, capacity: usize) -> (Self, Vec<Receiver<Work>>) {
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..workers.max(1))
            .map(|_| bounded(capacity.max(1)))
            .unzip();
        let d = Self {
            queues: senders.into(),
            hasher: std::collections::hash_map::RandomState::new(),
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (d, receivers)
    }

    /// The worker index that owns `exporter`.
    pub fn shard(&self, exporter: IpAddr) -> usize {
        usize::try_from(self.hasher.hash_one(exporter) % self.queues.len() as u64).unwrap_or(0)
    }

    /// Queues a datagram for its worker. Returns `false` (and counts a drop) when that
    /// worker's queue is full or gone.
    pub fn dispatch(&self, d: RawDatagram) -> bool {
        let i = self.shard(d.exporter);
        let Some(q) = self.queues.get(i) else {
            return false;
        };
        match q.try_send(Work::Datagram(d)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Queues a datagram for its worker, waiting while that queue is full: for the
    /// Kafka consumer, whose backlog waits in the broker. Returns `false` when the
    /// workers are gone.
    pub fn dispatch_wait(&self, d: RawDatagram) -> bool {
        self.queues
            .get(self.shard(d.exporter))
            .is_some_and(|q| q.send(Work::Datagram(d)).is_ok())
    }

    /// Sends a mark down every queue (waiting while they are full), behind everything
    /// queued so far. Returns `false` when the workers are gone.
    pub fn mark(
        &self,
        positions: Positions,
        flush: Option<std::sync::mpsc::SyncSender<bool>>,
    ) -> bool {
        let m = Arc::new(Mark {
            workers: self.queues.len(),
            positions,
            flush,
        });
        self.queues
            .iter()
            .all(|q| q.send(Work::Mark(m.clone())).is_ok())
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.queues.len()
    }

    /// Datagrams dropped because a queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Current depth of every worker queue.
    pub fn depths(&self) -> Vec<usize> {
        self.queues.iter().map(Sender::len).collect()
    }

    /// The deepest queue, as a fraction of its capacity (0.0 - 1.0).
    pub fn max_fill(&self) -> f64 {
        self.queues
            .iter()
            .map(|q| {
                let cap = q.capacity().unwrap_or(1).max(1);
                #[expect(clippy::cast_precision_loss, reason = "a ratio of queue sizes")]
                let f = q.len() as f64 / cap as f64;
                f
            })
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(exporter: IpAddr) -> RawDatagram {
        RawDatagram {
            exporter,
            received_at_ms: 0,
            presample_rate: 1,
            source: Source::Udp,
            payload: vec![0; 4],
            truncated_from: None,
        }
    }

    #[test]
    fn one_exporter_always_lands_on_one_worker_and_full_queues_count_drops() {
        let (d, rx) = Dispatcher::new(4, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(d.dispatch(dg(a)));
        assert!(d.dispatch(dg(a)));
        assert!(!d.dispatch(dg(a)));
        assert_eq!(d.dropped(), 1);
        let i = d.shard(a);
        assert_eq!(rx[i].len(), 2);
        assert_eq!(rx.iter().map(Receiver::len).sum::<usize>(), 2);
        assert!((d.max_fill() - 1.0).abs() < f64::EPSILON);
    }
}
