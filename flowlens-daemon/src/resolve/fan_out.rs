//! PURE: fan-out evidence for the direction resolver, in bounded memory.
//!
//! A server's (address, port) talks to many peers; a client's ephemeral (address, port)
//! talks to one. When ports alone cannot say which end of a flow listens (two unknown
//! high ports), the end whose endpoint has more distinct peers is the better guess.
//! [`PeerCounter`] collects that evidence from observations; [`FanOut`] is what the
//! resolver is given for one flow, so [`super::direction`] stays a function of values.
//!
//! Memory is bounded twice. Per endpoint, peers are counted exactly up to
//! [`MAX_PEERS`] and then the endpoint saturates and forgets its peer list: beyond 64
//! distinct peers "this is a server" is already clear. Across endpoints, at most
//! `max_endpoints` are tracked. Ephemeral client endpoints (one peer each) are most of
//! what a busy network produces, so when the table is full and at least an eighth of
//! it holds single-peer endpoints, those are pruned in one pass (amortized O(1) per
//! observation); otherwise the new endpoint is not tracked. Both outcomes are counted.
//! There is no clock: callers bound the time span by calling [`PeerCounter::rotate`]
//! when an aggregation window ends. The ending window's counts (counts only, not peer
//! lists) stay as evidence through the next window, so flows just after a boundary
//! orient as those just before it, and a table that filled up empties at most two
//! windows later.
//!
//! The same entries collect listening evidence for [`super::listeners`]: the peer
//! *ports* an endpoint saw (up to three distinct) and whether a SYN without ACK was
//! sent to it. An endpoint that keeps its port while its peers' ports change is a
//! server's; [`PeerCounter::rotate`] hands the ending window's such endpoints over.

use std::collections::HashMap;
use std::net::IpAddr;

/// Distinct peers counted per endpoint before it saturates.
pub const MAX_PEERS: u32 = 64;

/// A transport endpoint: (address, protocol, port). TCP 53 and UDP 53 are different
/// listeners, so the protocol is part of the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub protocol: u8,
    pub port: u16,
}

/// Distinct-peer counts for the two ends of one flow record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FanOut {
    /// Distinct peers seen talking to the record's (source address, source port).
    pub src_peers: u32,
    /// Distinct peers seen talking to the record's (destination address, port).
    pub dst_peers: u32,
}

impl FanOut {
    /// The same evidence seen from the reverse record.
    #[must_use]
    pub const fn swapped(self) -> Self {
        Self {
            src_peers: self.dst_peers,
            dst_peers: self.src_peers,
        }
    }
}

#[derive(Debug, Clone)]
enum Peers {
    /// Fewer than [`MAX_PEERS`] distinct peers, listed (a linear scan of at most 63).
    Few(Vec<IpAddr>),
    Saturated,
}

impl Peers {
    fn count(&self) -> u32 {
        match self {
            Self::Few(list) => u32::try_from(list.len()).unwrap_or(MAX_PEERS),
            Self::Saturated => MAX_PEERS,
        }
    }
}

/// Distinct peer ports that make an endpoint look like a listener in a window (two
/// when a SYN without ACK was sent to it).
pub const LISTENER_PEER_PORTS: u8 = 3;

/// Peer ports an endpoint saw in a window, whether it was sent a SYN, and whether it
/// sent one (then it initiated: a scanner's fixed source port sees many peer ports).
#[derive(Debug, Clone, Copy, Default)]
struct PortSpread {
    ports: [u16; LISTENER_PEER_PORTS as usize],
    n: u8,
    syn: bool,
    sent_syn: bool,
}

impl PortSpread {
    fn add(&mut self, port: u16, syn: bool) {
        self.syn |= syn;
        let n = usize::from(self.n);
        if n < self.ports.len() && !self.ports[..n].contains(&port) {
            self.ports[n] = port;
            self.n += 1;
        }
    }

    /// One port, many peer ports (each connection a new ephemeral port), or SYNs to
    /// it from at least two peer ports: a listener's evidence for this window. A SYN
    /// scan (one source port per probe run) is not.
    fn listens(&self) -> bool {
        !self.sent_syn && (self.n >= LISTENER_PEER_PORTS || (self.syn && self.n >= 2))
    }
}

#[derive(Debug, Clone)]
struct Entry {
    peers: Peers,
    ports: PortSpread,
}

/// Counts distinct peers per endpoint, bounded as the module docs describe.
#[derive(Debug, Clone)]
pub struct PeerCounter {
    endpoints: HashMap<Endpoint, Entry>,
    /// Distinct-peer counts of the previous window (see [`Self::rotate`]).
    previous: HashMap<Endpoint, u32>,
    max_endpoints: usize,
    /// Endpoints currently holding exactly one peer (the prune candidates).
    single_peer: usize,
    pruned: u64,
    untracked: u64,
}

impl PeerCounter {
    /// A counter tracking at most `max_endpoints` endpoints. Worst-case memory is
    /// about 1.1 kB per endpoint (63 listed peers of 17 bytes), so 65 536 endpoints stay
    /// under 75 MB.
    pub fn new(max_endpoints: usize) -> Self {
        Self {
            endpoints: HashMap::new(),
            previous: HashMap::new(),
            max_endpoints,
            single_peer: 0,
            pruned: 0,
            untracked: 0,
        }
    }

    /// Records that `peer` talked to `endpoint`. Returns false when the endpoint could
    /// not be tracked because the table is full (counted in [`Self::untracked`]).
    pub fn observe(&mut self, endpoint: Endpoint, peer: IpAddr) -> bool {
        self.observe_from(endpoint, peer, None, false, false)
    }

    /// Like [`Self::observe`], with the peer's port (listening evidence) and whether
    /// the peer sent `endpoint` a SYN without ACK.
    fn observe_from(
        &mut self,
        endpoint: Endpoint,
        peer: IpAddr,
        peer_port: Option<u16>,
        syn: bool,
        sent_syn: bool,
    ) -> bool {
        if let Some(entry) = self.endpoints.get_mut(&endpoint) {
            if let Some(port) = peer_port {
                entry.ports.add(port, syn);
            }
            entry.ports.sent_syn |= sent_syn;
            let peers = &mut entry.peers;
            if let Peers::Few(list) = peers
                && !list.contains(&peer)
            {
                if list.len() == 1 {
                    self.single_peer = self.single_peer.saturating_sub(1);
                }
                list.push(peer);
                if list.len() >= MAX_PEERS as usize {
                    *peers = Peers::Saturated;
                }
            }
            return true;
        }
        if self.endpoints.len() >= self.max_endpoints && !self.prune() {
            self.untracked += 1;
            return false;
        }
        let mut ports = PortSpread {
            sent_syn,
            ..PortSpread::default()
        };
        if let Some(port) = peer_port {
            ports.add(port, syn);
        }
        self.endpoints.insert(
            endpoint,
            Entry {
                peers: Peers::Few(vec![peer]),
                ports,
            },
        );
        self.single_peer += 1;
        true
    }

    /// Records one flow record: each end is a peer of the other.
    pub fn observe_pair(&mut self, src: Endpoint, dst: Endpoint) {
        self.observe_flow(src, dst, false);
    }

    /// Records one flow record with listening evidence: each end is a peer of the
    /// other, each sees the other's port, and `syn` says the record was a SYN without
    /// ACK from `src` to `dst`.
    pub fn observe_flow(&mut self, src: Endpoint, dst: Endpoint, syn: bool) {
        self.observe_from(src, dst.ip, Some(dst.port), false, syn);
        self.observe_from(dst, src.ip, Some(src.port), syn, false);
    }

    /// Distinct peers seen for `endpoint` in this window or the previous one, whichever
    /// saw more (0 when untracked, at most [`MAX_PEERS`]).
    #[must_use]
    pub fn distinct_peers(&self, endpoint: &Endpoint) -> u32 {
        let now = self.endpoints.get(endpoint).map_or(0, |e| e.peers.count());
        if self.previous.is_empty() {
            return now;
        }
        now.max(self.previous.get(endpoint).copied().unwrap_or(0))
    }

    /// The fan-out evidence for a record from `src` to `dst`.
    #[must_use]
    pub fn fan_out(&self, src: &Endpoint, dst: &Endpoint) -> FanOut {
        FanOut {
            src_peers: self.distinct_peers(src),
            dst_peers: self.distinct_peers(dst),
        }
    }

    /// Endpoints currently tracked.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Single-peer endpoints dropped to make room, since creation.
    pub fn pruned(&self) -> u64 {
        self.pruned
    }

    /// Observations of new endpoints refused because the table was full, since creation.
    pub fn untracked(&self) -> u64 {
        self.untracked
    }

    /// Ends a window: this window's counts become the previous window's (what the
    /// previous window held is forgotten) and counting starts afresh; the pruned and
    /// untracked counters are kept. Returns the endpoints that looked like listeners
    /// in the ending window (see [`super::listeners`]).
    pub fn rotate(&mut self) -> Vec<Endpoint> {
        let mut listening = Vec::new();
        self.previous = self
            .endpoints
            .drain()
            .map(|(endpoint, entry)| {
                if entry.ports.listens() {
                    listening.push(endpoint);
                }
                (endpoint, entry.peers.count())
            })
            .collect();
        self.single_peer = 0;
        listening
    }

    /// Drops single-peer endpoints when they are at least an eighth of the table, so
    /// the O(n) pass frees enough room to pay for itself. Returns whether room was made.
    fn prune(&mut self) -> bool {
        if self.single_peer < (self.max_endpoints / 8).max(1) {
            return false;
        }
        let before = self.endpoints.len();
        self.endpoints.retain(|_, e| e.peers.count() != 1);
        self.pruned += (before - self.endpoints.len()) as u64;
        self.single_peer = 0;
        self.endpoints.len() < self.max_endpoints
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn ep(last: u8, port: u16) -> Endpoint {
        Endpoint {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)),
            protocol: 6,
            port,
        }
    }

    fn peer(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + n))
    }

    #[test]
    fn counts_distinct_peers_only() {
        let mut c = PeerCounter::new(16);
        let server = ep(1, 5432);
        for n in [1, 2, 2, 3, 1] {
            assert!(c.observe(server, peer(n)));
        }
        assert_eq!(c.distinct_peers(&server), 3);
        assert_eq!(c.distinct_peers(&ep(1, 5433)), 0, "port is part of the key");
        let udp = Endpoint {
            protocol: 17,
            ..server
        };
        assert_eq!(c.distinct_peers(&udp), 0, "protocol is part of the key");
    }

    #[test]
    fn saturates_at_max_peers() {
        let mut c = PeerCounter::new(4);
        let server = ep(1, 443);
        for n in 0..200 {
            c.observe(server, peer(n));
        }
        assert_eq!(c.distinct_peers(&server), MAX_PEERS);
        c.observe(server, peer(1));
        assert_eq!(c.distinct_peers(&server), MAX_PEERS);
    }

    #[test]
    fn observe_pair_counts_both_ends_and_fan_out_swaps() {
        let mut c = PeerCounter::new(64);
        let server = ep(1, 40000);
        for n in 0..5u16 {
            let client = Endpoint {
                ip: peer(u32::from(n)),
                protocol: 6,
                port: 50000 + n,
            };
            c.observe_pair(client, server);
            // The reply record adds nothing new: same pair of endpoints.
            c.observe_pair(server, client);
        }
        let client = Endpoint {
            ip: peer(0),
            protocol: 6,
            port: 50000,
        };
        let f = c.fan_out(&client, &server);
        assert_eq!(
            f,
            FanOut {
                src_peers: 1,
                dst_peers: 5
            }
        );
        assert_eq!(c.fan_out(&server, &client), f.swapped());
    }

    #[test]
    fn full_table_prunes_single_peer_endpoints() {
        let mut c = PeerCounter::new(8);
        let server = ep(1, 9000);
        c.observe(server, peer(1));
        c.observe(server, peer(2));
        for port in 0..7 {
            assert!(c.observe(ep(2, 50000 + port), peer(9)));
        }
        assert_eq!(c.len(), 8);
        assert!(c.observe(ep(3, 60000), peer(9)), "pruning makes room");
        assert_eq!(c.pruned(), 7);
        assert_eq!(c.len(), 2);
        assert_eq!(c.distinct_peers(&server), 2, "multi-peer endpoints survive");
        assert_eq!(c.untracked(), 0);
    }

    #[test]
    fn full_table_of_servers_refuses_new_endpoints() {
        let mut c = PeerCounter::new(2);
        for last in [1, 2] {
            c.observe(ep(last, 80), peer(1));
            c.observe(ep(last, 80), peer(2));
        }
        assert!(!c.observe(ep(3, 80), peer(1)));
        assert_eq!(c.untracked(), 1);
        assert_eq!(c.distinct_peers(&ep(3, 80)), 0);
        assert!(c.observe(ep(1, 80), peer(3)), "known endpoints still count");
        assert_eq!(c.distinct_peers(&ep(1, 80)), 3);
    }

    #[test]
    fn zero_capacity_tracks_nothing() {
        let mut c = PeerCounter::new(0);
        assert!(!c.observe(ep(1, 80), peer(1)));
        assert!(c.is_empty());
        assert_eq!(c.untracked(), 1);
    }

    #[test]
    fn rotation_keeps_one_window_of_evidence_and_frees_the_table() {
        let mut c = PeerCounter::new(4);
        for n in 0..5 {
            c.observe(ep(1, 8080), peer(n));
        }
        c.observe(ep(2, 443), peer(9));
        c.observe(ep(3, 443), peer(9));
        c.observe(ep(4, 443), peer(9));
        assert_eq!(c.len(), 4, "the table is full");
        c.rotate();
        assert!(c.is_empty(), "a new window starts empty");
        // The busy endpoint keeps its evidence through the next window.
        assert_eq!(c.distinct_peers(&ep(1, 8080)), 5);
        assert!(c.observe(ep(5, 9000), peer(1)), "room again");
        c.observe(ep(1, 8080), peer(1));
        assert_eq!(c.distinct_peers(&ep(1, 8080)), 5, "max of the two windows");
        // Two windows later without traffic it is gone.
        c.rotate();
        c.rotate();
        assert_eq!(c.distinct_peers(&ep(1, 8080)), 0);
    }

    #[test]
    fn rotation_forgets_endpoints_but_keeps_counters() {
        let mut c = PeerCounter::new(1);
        c.observe(ep(1, 80), peer(1));
        c.observe(ep(1, 80), peer(2));
        assert!(!c.observe(ep(2, 80), peer(1)));
        c.rotate();
        assert!(c.is_empty());
        assert!(c.observe(ep(2, 80), peer(1)));
        assert_eq!(c.untracked(), 1);
    }
}
