//! The seam between receiving and processing: what the receive threads (UDP sockets,
//! XDP ring readers) hand a datagram to.
//!
//! - `all` with `ingestion.routing.mode: postgres` (or no Kafka): the in-process
//!   [`Dispatcher`], bounded queues to the decode workers.
//! - `ingest`: the raw topic ([`RawProducer`]), bounded by the producer's queue.
//! - `all` with `kafka` or `auto`: either, switched by [`Route`] as the rate crosses
//!   the threshold; datagrams sent to Kafka come back through this instance's own
//!   consumer to the same decode workers.
//!
//! Either way a hand-over never waits: a full queue refuses the datagram, and the
//! caller counts it dropped for its exporter, so at the receive side
//! received = handed over + sampled out + dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::ingest::datagram::{Dispatcher, RawDatagram};
use crate::kafka::produce::RawProducer;

/// Which way datagrams go when both ways exist.
#[derive(Debug, Default)]
pub struct Route {
    via_kafka: AtomicBool,
}

impl Route {
    /// Whether datagrams go through Kafka now.
    pub fn via_kafka(&self) -> bool {
        self.via_kafka.load(Ordering::Relaxed)
    }

    /// Sends datagrams through Kafka (`true`) or the in-process queues.
    pub fn set_via_kafka(&self, yes: bool) {
        self.via_kafka.store(yes, Ordering::Relaxed);
    }
}

/// Where received datagrams go; cheap to clone (one per receive thread).
#[derive(Debug, Clone)]
pub enum Handoff {
    /// The decode workers of this process.
    Local(Dispatcher),
    /// The raw topic.
    Kafka(Arc<RawProducer>),
    /// One or the other, as `route` says.
    Routed {
        local: Dispatcher,
        kafka: Arc<RawProducer>,
        route: Arc<Route>,
    },
}

impl From<Dispatcher> for Handoff {
    fn from(d: Dispatcher) -> Self {
        Self::Local(d)
    }
}

/// The way a datagram goes now.
enum Way<'a> {
    Local(&'a Dispatcher),
    Kafka(&'a RawProducer),
}

impl Handoff {
    fn way(&self) -> Way<'_> {
        match self {
            Self::Local(q) => Way::Local(q),
            Self::Kafka(k) => Way::Kafka(k),
            Self::Routed {
                local,
                kafka,
                route,
            } => {
                if route.via_kafka() {
                    Way::Kafka(kafka)
                } else {
                    Way::Local(local)
                }
            }
        }
    }

    /// Hands a datagram over without waiting; `false` when it was refused (a full
    /// queue), for the caller to count as dropped.
    pub fn hand(&self, d: RawDatagram) -> bool {
        match self.way() {
            Way::Local(q) => q.dispatch(d),
            Way::Kafka(k) => k.send(&d),
        }
    }

    /// How full the way datagrams go now is (0.0 - 1.0), for the pressure control.
    pub fn fill(&self) -> f64 {
        match self.way() {
            Way::Local(q) => q.max_fill(),
            Way::Kafka(k) => k.fill(),
        }
    }
}
