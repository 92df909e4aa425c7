//! PURE: listening endpoints learnt from evidence that holds across windows.
//!
//! Services on high ports outside the port table (gRPC 50051, `ActiveMQ` 61616, `MySQL` X
//! 33060, Windows RPC 49152+) with few clients defeat the port rules: two high ports,
//! and too few peers for fan-out. But a listener keeps its port while its peers' ports
//! change (each connection a new ephemeral port), and SYNs without ACK are sent to it.
//! [`super::fan_out::PeerCounter`] collects that per window; an endpoint with that
//! evidence in [`LEARN_AFTER_WINDOWS`] windows is *learnt* here, and from then on
//! [`super::direction::orient_with`] uses it before the port-number rules.
//!
//! Learnt endpoints are what the daemon persists (`service_endpoints`) and loads at
//! start, so a restart does not have to learn them again. Memory is bounded: at most
//! `max` candidates (endpoints seen once, waiting for a second window; when full they
//! are forgotten in one pass and counted) and `max` learnt endpoints (beyond it new
//! ones are counted, not kept).

use std::collections::HashMap;

use super::fan_out::Endpoint;

/// Windows with listening evidence before an endpoint is learnt: one window's worth can
/// be a burst; two windows apart is a service.
pub const LEARN_AFTER_WINDOWS: u8 = 2;

/// A learnt endpoint confirmed again is handed out for persisting (its `last_seen`) at
/// most once per this many windows, so a busy network does not rewrite every
/// listener every window.
pub const CONFIRM_EVERY_WINDOWS: u64 = 288;

/// Which ends of a record are learnt listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Listening {
    pub src: bool,
    pub dst: bool,
}

impl Listening {
    /// The same evidence seen from the reverse record.
    #[must_use]
    pub const fn swapped(self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
        }
    }
}

/// Counters of the book (exported as metrics by the sink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListenerCounters {
    /// Endpoints learnt since start (not counting those loaded).
    pub learnt: u64,
    /// Candidates forgotten because the candidate table was full.
    pub candidates_dropped: u64,
    /// Endpoints that qualified but found the learnt table full.
    pub not_kept: u64,
}

/// Learnt listeners and the candidates on their way.
#[derive(Debug, Clone, Default)]
pub struct ListenerBook {
    /// Windows with evidence so far, for endpoints not learnt yet.
    candidates: HashMap<Endpoint, u8>,
    /// Learnt endpoints, with the window they were last handed out for persisting.
    learnt: HashMap<Endpoint, u64>,
    max: usize,
    pub counters: ListenerCounters,
}

impl ListenerBook {
    /// A book of at most `max` learnt endpoints (and as many candidates).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            ..Self::default()
        }
    }

    /// Adds endpoints learnt before (persisted), up to the bound.
    pub fn load(&mut self, endpoints: impl IntoIterator<Item = Endpoint>) {
        for e in endpoints {
            if self.learnt.len() >= self.max {
                break;
            }
            self.learnt.insert(e, 0);
        }
    }

    /// The evidence of window number `window` (from `PeerCounter::rotate`). Returns
    /// the endpoints to persist: those it taught, and learnt ones it confirmed that
    /// were last persisted [`CONFIRM_EVERY_WINDOWS`] or more windows before.
    pub fn end_window(&mut self, window: u64, listening: Vec<Endpoint>) -> Vec<Endpoint> {
        let mut confirmed = Vec::new();
        for e in listening {
            if let Some(last) = self.learnt.get_mut(&e) {
                if *last == 0 || window.saturating_sub(*last) >= CONFIRM_EVERY_WINDOWS {
                    *last = window;
                    confirmed.push(e);
                }
                continue;
            }
            let windows = self.candidates.get(&e).copied().unwrap_or(0) + 1;
            if windows < LEARN_AFTER_WINDOWS {
                if self.candidates.len() >= self.max {
                    self.counters.candidates_dropped += self.candidates.len() as u64;
                    self.candidates.clear();
                }
                self.candidates.insert(e, windows);
                continue;
            }
            self.candidates.remove(&e);
            if self.learnt.len() >= self.max {
                self.counters.not_kept += 1;
                continue;
            }
            self.learnt.insert(e, window);
            self.counters.learnt += 1;
            confirmed.push(e);
        }
        confirmed
    }

    /// Which ends of a record from `src` to `dst` are learnt listeners.
    pub fn listening(&self, src: &Endpoint, dst: &Endpoint) -> Listening {
        if self.learnt.is_empty() {
            return Listening::default();
        }
        Listening {
            src: self.learnt.contains_key(src),
            dst: self.learnt.contains_key(dst),
        }
    }

    /// Learnt endpoints held.
    pub fn len(&self) -> usize {
        self.learnt.len()
    }

    pub fn is_empty(&self) -> bool {
        self.learnt.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::super::fan_out::PeerCounter;
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            protocol: 6,
            port,
        }
    }

    /// One window of a gRPC server on 50051 with two clients, each connection from a
    /// new ephemeral port (some above 50051, so "lower port" would pick the client).
    fn grpc_window(counter: &mut PeerCounter, first_port: u16, syn: bool) {
        let server = ep(1, 50051);
        for (i, client) in [2u8, 3].into_iter().enumerate() {
            for c in 0..3u16 {
                let port = first_port + c * 7 + u16::try_from(i).unwrap_or(0);
                let cl = ep(client, port);
                counter.observe_flow(cl, server, syn);
                counter.observe_flow(server, cl, false);
            }
        }
    }

    #[test]
    fn an_endpoint_with_changing_peer_ports_in_two_windows_is_learnt() {
        let mut counter = PeerCounter::new(1000);
        let mut book = ListenerBook::new(100);
        grpc_window(&mut counter, 55_000, false);
        let first = book.end_window(1, counter.rotate());
        assert!(first.is_empty(), "one window is not enough");
        assert!(!book.listening(&ep(2, 55_000), &ep(1, 50051)).dst);
        grpc_window(&mut counter, 40_000, false);
        let second = book.end_window(2, counter.rotate());
        assert_eq!(
            second,
            vec![ep(1, 50051)],
            "only the server: clients' ports change"
        );
        let l = book.listening(&ep(2, 61_000), &ep(1, 50051));
        assert_eq!(
            l,
            Listening {
                src: false,
                dst: true
            }
        );
        assert_eq!(book.listening(&ep(1, 50051), &ep(2, 61_000)), l.swapped());
        assert_eq!(book.counters.learnt, 1);
        // Later windows confirm it, handed out for persisting once a day.
        grpc_window(&mut counter, 30_000, false);
        assert!(book.end_window(3, counter.rotate()).is_empty());
        grpc_window(&mut counter, 20_000, false);
        let later = book.end_window(2 + CONFIRM_EVERY_WINDOWS, counter.rotate());
        assert_eq!(later, vec![ep(1, 50051)]);
        assert_eq!(book.counters.learnt, 1);
    }

    #[test]
    fn a_syn_scan_and_a_single_long_connection_are_not_listeners() {
        let mut counter = PeerCounter::new(1000);
        let mut book = ListenerBook::new(100);
        for _ in 0..3 {
            // A scanner probing 100 ports from one source port, every window.
            let scanner = ep(9, 40_000);
            for port in 1000..1100 {
                counter.observe_flow(scanner, ep(1, port), true);
            }
            // One long connection between two high ports.
            counter.observe_flow(ep(2, 45_000), ep(3, 46_000), false);
            counter.observe_flow(ep(3, 46_000), ep(2, 45_000), false);
            assert!(book.end_window(1, counter.rotate()).is_empty());
        }
        assert!(book.is_empty());
    }

    #[test]
    fn syns_from_two_peer_ports_count_and_the_book_is_bounded() {
        let mut counter = PeerCounter::new(1000);
        let mut book = ListenerBook::new(1);
        book.load([ep(7, 61_616)]);
        for _ in 0..2 {
            for port in [50_001, 50_002] {
                counter.observe_flow(ep(2, port), ep(1, 33_060), true);
            }
            book.end_window(1, counter.rotate());
        }
        assert!(
            !book.listening(&ep(2, 1), &ep(1, 33_060)).dst,
            "the book is full"
        );
        assert_eq!(book.counters.not_kept, 1);
        assert!(
            book.listening(&ep(2, 1), &ep(7, 61_616)).dst,
            "loaded ones stay"
        );
    }
}
