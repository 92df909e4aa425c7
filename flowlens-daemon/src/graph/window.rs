//! PURE: flows into 5-minute tumbling windows of client -> server edges.
//!
//! Each flow record, once oriented (client, server, service port; see
//! `resolve::direction`), adds to the edge (window start, client address, server
//! address, protocol, port). Bytes and packets are scaled by the record's sampling rate
//! here, so every total downstream is an estimate of the real traffic.
//!
//! Windowing rule: a flow belongs to the window holding its end time (`flow_end`, else
//! the export time). Exporters with broken clocks are tolerated: a flow time further
//! than `max_clock_skew` from the aggregator's wall clock is replaced by the wall
//! clock, and counted. Late flows (whose window was already written) are not special:
//! every flush writes sums to add to what is stored (`flow_stats` rows are upserted by
//! addition), so a late flow tops up its window whenever it comes.
//!
//! Between flushes the aggregator holds deltas only; [`Aggregator::take`] hands them
//! over and starts afresh.
//!
//! Observation points: under [`ObservationPolicy::FirstPerEdge`] (the default) the
//! first observation point (exporter address, flow direction) to report an
//! edge in a window owns it for that window, and other points' records of it are
//! counted as duplicates, not added: one connection seen by two routers, or by one
//! router's ingress and egress export, is counted once. Owners outlive hand-overs (a
//! window spans several flushes) and are kept for the current and the previous wall
//! clock window.

use std::collections::HashMap;
use std::net::IpAddr;

use super::config::ObservationPolicy;
use crate::flow::FlowRecord;

/// Where a record was observed: exporter address and flow direction. Not the
/// observation domain (or v5 engine): line cards of one router export under domains of
/// their own, and a connection's two directions often enter on different cards, so
/// telling them apart would drop one direction of every such connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ObservationPoint {
    exporter: IpAddr,
    direction: Option<u8>,
}

/// One edge of one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    /// Window start, ms since the epoch (a multiple of the window length).
    pub window_start_ms: u64,
    pub client: IpAddr,
    pub server: IpAddr,
    pub protocol: u8,
    /// The server's service port (0 for ICMP).
    pub port: u16,
}

/// What an edge carried in a window (estimates: scaled by sampling).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EdgeStats {
    pub flows: u64,
    pub bytes: u64,
    pub packets: u64,
    /// TCP flags seen in either direction, OR-ed.
    pub tcp_flags: u16,
    /// The highest confidence of the direction decisions behind it.
    pub confidence: f32,
    pub first_ms: u64,
    pub last_ms: u64,
    /// The server ports behind the edge: its own port, or for a folded dynamic-port
    /// edge (port 0, see `resolve::dynamic_ports`) the range of ports it stands for.
    pub port_min: u16,
    pub port_max: u16,
}

impl EdgeStats {
    /// Adds `other` (another delta of the same edge).
    pub fn merge(&mut self, other: &Self) {
        self.flows += other.flows;
        self.bytes = self.bytes.saturating_add(other.bytes);
        self.packets = self.packets.saturating_add(other.packets);
        self.tcp_flags |= other.tcp_flags;
        self.confidence = self.confidence.max(other.confidence);
        self.first_ms = self.first_ms.min(other.first_ms);
        self.last_ms = self.last_ms.max(other.last_ms);
        self.port_min = self.port_min.min(other.port_min);
        self.port_max = self.port_max.max(other.port_max);
    }
}

/// A flow's direction, as decided before aggregation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Orientation {
    pub client: IpAddr,
    pub server: IpAddr,
    pub protocol: u8,
    pub port: u16,
    pub confidence: f32,
    /// The server's real port (differs from `port` when a dynamic port was folded).
    pub real_port: u16,
}

/// Aggregation counters (exported as metrics by the sink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowCounters {
    /// Flows re-stamped with the wall clock because their own time was absurd.
    pub clock_skewed: u64,
    /// Flows of a new edge refused because the aggregator held `max_edges` already
    /// (the writer is stalled and windows pile up).
    pub over_capacity: u64,
    /// Flows left out because another observation point reported their edge first
    /// in the window.
    pub duplicate_observations: u64,
}

/// The in-memory windows since the last flush.
#[derive(Debug)]
pub struct Aggregator {
    window_ms: u64,
    max_skew_ms: u64,
    /// Edges held at most; flows of further new edges are counted and dropped.
    max_edges: usize,
    edges: HashMap<EdgeKey, EdgeStats>,
    policy: ObservationPolicy,
    /// The observation point each edge of the current and previous window counts from.
    owners: HashMap<EdgeKey, ObservationPoint>,
    /// The wall-clock window `owners` was last pruned in.
    owners_window: u64,
    pub counters: WindowCounters,
}

impl Aggregator {
    /// Windows of `window_secs` (at least 1 s); flow times further than
    /// `max_skew_secs` from the wall clock are replaced by it. At most `max_edges` are
    /// held: memory stays bounded while the writer cannot keep up.
    pub fn new(window_secs: u64, max_skew_secs: u64, max_edges: usize) -> Self {
        Self {
            window_ms: window_secs.max(1) * 1000,
            max_skew_ms: max_skew_secs * 1000,
            max_edges: max_edges.max(1),
            edges: HashMap::new(),
            policy: ObservationPolicy::All,
            owners: HashMap::new(),
            owners_window: 0,
            counters: WindowCounters::default(),
        }
    }

    /// Counts flows seen by several observation points as `policy` says (`All` until
    /// set).
    #[must_use]
    pub fn with_observation_policy(mut self, policy: ObservationPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Whether `point` may count for `key` (it owns it, or nobody does yet).
    fn owns(&mut self, key: &EdgeKey, point: ObservationPoint, now_ms: u64) -> bool {
        let window = now_ms / self.window_ms;
        if window != self.owners_window {
            self.owners_window = window;
            let keep_from = window.saturating_sub(1) * self.window_ms;
            self.owners.retain(|k, _| k.window_start_ms >= keep_from);
        }
        if let Some(owner) = self.owners.get(key) {
            return *owner == point;
        }
        // Bounded like the edges: past it, no owner is recorded (counts as All).
        if self.owners.len() < self.max_edges.saturating_mul(2) {
            self.owners.insert(*key, point);
        }
        true
    }

    /// The window length in ms.
    pub const fn window_ms(&self) -> u64 {
        self.window_ms
    }

    /// Adds one oriented flow record; `now_ms` is the wall clock.
    pub fn add(&mut self, rec: &FlowRecord, dir: Orientation, now_ms: u64) {
        let mut at = rec.flow_end_ms.unwrap_or(rec.export_time_ms);
        if at.abs_diff(now_ms) > self.max_skew_ms {
            at = now_ms;
            self.counters.clock_skewed += 1;
        }
        let start = rec.flow_start_ms.unwrap_or(at).min(at);
        // Bytes and packets scale by all the sampling (the exporter's and ours; ours
        // alone when the exporter's rate is unknown); the record count by ours only: a
        // datagram kept 1:N stands for N datagrams' records, while a record of a
        // packet-sampled flow is still one flow.
        let presampled = rec.presample_rate.max(1);
        let rate = u64::from(rec.sampling_rate.unwrap_or(presampled).max(1));
        let key = EdgeKey {
            window_start_ms: at - at % self.window_ms,
            client: dir.client,
            server: dir.server,
            protocol: dir.protocol,
            port: dir.port,
        };
        let delta = EdgeStats {
            flows: u64::from(presampled),
            bytes: rec.bytes.unwrap_or(0).saturating_mul(rate),
            packets: rec.packets.unwrap_or(0).saturating_mul(rate),
            tcp_flags: rec.tcp_flags.unwrap_or(0),
            confidence: dir.confidence,
            first_ms: start,
            last_ms: at,
            port_min: dir.real_port,
            port_max: dir.real_port,
        };
        if self.policy == ObservationPolicy::FirstPerEdge {
            let point = ObservationPoint {
                exporter: rec.exporter_ip,
                direction: rec.direction,
            };
            if !self.owns(&key, point, now_ms) {
                self.counters.duplicate_observations += delta.flows;
                return;
            }
        }
        if let Some(s) = self.edges.get_mut(&key) {
            s.merge(&delta);
        } else if self.edges.len() < self.max_edges {
            self.edges.insert(key, delta);
        } else {
            self.counters.over_capacity += u64::from(presampled);
        }
    }

    /// Edges accumulated since the last call, sorted by key (deterministic writes).
    pub fn take(&mut self) -> Vec<(EdgeKey, EdgeStats)> {
        let mut v: Vec<_> = self.edges.drain().collect();
        v.sort_unstable_by_key(|a| a.0);
        v
    }

    /// Puts edges taken by [`Self::take`] back (a hand-over that could not happen),
    /// merging with what arrived since.
    pub fn restore(&mut self, edges: Vec<(EdgeKey, EdgeStats)>) {
        for (key, stats) in edges {
            self.edges
                .entry(key)
                .and_modify(|s| s.merge(&stats))
                .or_insert(stats);
        }
    }

    /// Edges held right now.
    pub fn len(&self) -> usize {
        self.edges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.edges.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::flow::FlowProtocol;

    const NOW: u64 = 1_767_225_900_000; // 2026-01-01T00:05:00Z, a window boundary

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, last))
    }

    fn rec(end_ms: u64, bytes: u64, rate: u32) -> FlowRecord {
        let mut r = FlowRecord::empty(FlowProtocol::Ipfix, ip(254), end_ms);
        r.flow_start_ms = Some(end_ms - 1000);
        r.flow_end_ms = Some(end_ms);
        r.bytes = Some(bytes);
        r.packets = Some(2);
        r.sampling_rate = Some(rate);
        r.tcp_flags = Some(0x02);
        r
    }

    fn dir(confidence: f32) -> Orientation {
        Orientation {
            client: ip(1),
            server: ip(2),
            protocol: 6,
            port: 5432,
            confidence,
            real_port: 5432,
        }
    }

    #[test]
    fn flows_land_in_the_window_of_their_end_and_scale_by_sampling() {
        let mut a = Aggregator::new(300, 3600, 1_000);
        a.add(&rec(NOW - 1, 100, 1), dir(0.5), NOW);
        a.add(&rec(NOW - 2, 100, 10), dir(0.9), NOW);
        a.add(&rec(NOW + 10, 7, 1), dir(0.3), NOW);
        let edges = a.take();
        assert_eq!(edges.len(), 2);
        let (k0, s0) = edges[0];
        assert_eq!(k0.window_start_ms, NOW - 300_000);
        assert_eq!((s0.flows, s0.bytes, s0.packets), (2, 1100, 22));
        assert!((s0.confidence - 0.9).abs() < f32::EPSILON);
        assert_eq!((s0.first_ms, s0.last_ms), (NOW - 1002, NOW - 1));
        let (k1, s1) = edges[1];
        assert_eq!(k1.window_start_ms, NOW);
        assert_eq!(s1.bytes, 7);
        assert!(a.is_empty(), "take drains");
    }

    #[test]
    fn pressure_sampling_scales_flows_bytes_and_packets_alike() {
        // Under 1:10 pressure sampling one kept record of an unsampled exporter stands
        // for ten: the three counts scale alike. A packet-sampled exporter's record
        // (1:100, no pressure) is one flow with bytes and packets scaled.
        let mut a = Aggregator::new(300, 3600, 1_000);
        let mut kept = rec(NOW - 1, 100, 10);
        kept.presample_rate = 10;
        a.add(&kept, dir(0.9), NOW);
        let (_, s) = a.take()[0];
        assert_eq!((s.flows, s.bytes, s.packets), (10, 1000, 20));
        a.add(&rec(NOW - 1, 100, 100), dir(0.9), NOW);
        let (_, s) = a.take()[0];
        assert_eq!((s.flows, s.bytes, s.packets), (1, 10_000, 200));
        // An exporter rate we do not know: still our own factor.
        let mut unknown = kept;
        unknown.sampling_rate = None;
        a.add(&unknown, dir(0.9), NOW);
        let (_, s) = a.take()[0];
        assert_eq!((s.flows, s.bytes), (10, 1000));
    }

    #[test]
    fn absurd_exporter_clocks_are_windowed_by_the_wall_clock() {
        let mut a = Aggregator::new(300, 3600, 1_000);
        a.add(&rec(NOW - 2 * 86_400_000, 1, 1), dir(0.5), NOW + 5);
        a.add(&rec(NOW + 86_400_000, 1, 1), dir(0.5), NOW + 5);
        assert_eq!(a.counters.clock_skewed, 2);
        let edges = a.take();
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].0.window_start_ms, NOW);
        assert_eq!(edges[0].1.flows, 2);
    }

    #[test]
    fn unknown_rate_counts_as_unsampled_and_missing_counters_as_zero() {
        let mut a = Aggregator::new(60, 3600, 1_000);
        let mut r = rec(NOW, 50, 1);
        r.sampling_rate = None;
        r.packets = None;
        a.add(&r, dir(0.5), NOW);
        let (_, s) = a.take()[0];
        assert_eq!((s.bytes, s.packets), (50, 0));
    }

    #[test]
    fn a_full_aggregator_tops_up_known_edges_and_counts_new_ones() {
        let mut a = Aggregator::new(300, 3600, 1);
        a.add(&rec(NOW - 1, 10, 1), dir(0.9), NOW);
        // A second edge (another window) does not fit: counted, not held.
        a.add(&rec(NOW - 400_000, 10, 1), dir(0.9), NOW);
        a.add(&rec(NOW - 2, 10, 1), dir(0.9), NOW);
        assert_eq!(a.counters.over_capacity, 1);
        let edges = a.take();
        assert_eq!(edges.len(), 1);
        assert_eq!(edges[0].1.flows, 2, "the held edge still takes its flows");
    }

    #[test]
    fn one_edge_counts_from_one_observation_point_per_window() {
        let both = |policy| {
            let mut a = Aggregator::new(300, 3600, 1_000).with_observation_policy(policy);
            let first = rec(NOW - 1, 100, 1);
            // The same connection from a second router, and from the first router's
            // egress export.
            let mut second = first;
            second.exporter_ip = ip(200);
            let mut egress = first;
            egress.direction = Some(1);
            for r in [first, second, egress, first] {
                a.add(&r, dir(0.9), NOW);
            }
            // A later hand-over does not forget who owns the window.
            let mut flows = a.take()[0].1.flows;
            a.add(&second, dir(0.9), NOW + 1);
            flows += a.take().first().map_or(0, |e| e.1.flows);
            (flows, a.counters.duplicate_observations)
        };
        assert_eq!(both(ObservationPolicy::FirstPerEdge), (2, 3));
        assert_eq!(both(ObservationPolicy::All), (5, 0));
        // A new window starts afresh: the second router may own it.
        let mut a = Aggregator::new(300, 3600, 1_000)
            .with_observation_policy(ObservationPolicy::FirstPerEdge);
        let mut second = rec(NOW + 300_001, 100, 1);
        second.exporter_ip = ip(200);
        a.add(&rec(NOW - 1, 100, 1), dir(0.9), NOW);
        a.add(&second, dir(0.9), NOW + 300_002);
        assert_eq!(a.take().len(), 2);
        assert_eq!(a.counters.duplicate_observations, 0);
    }

    #[test]
    fn line_cards_of_one_router_are_one_observation_point() {
        // Request and response enter on different line cards (observation domains) of
        // one ingress-only exporter: both directions count.
        let mut a = Aggregator::new(300, 3600, 1_000)
            .with_observation_policy(ObservationPolicy::FirstPerEdge);
        let mut card1 = rec(NOW - 1, 100, 1);
        card1.observation_domain = 1;
        let mut card2 = card1;
        card2.observation_domain = 2;
        a.add(&card1, dir(0.9), NOW);
        a.add(&card2, dir(0.9), NOW);
        assert_eq!(a.take()[0].1.flows, 2);
        assert_eq!(a.counters.duplicate_observations, 0);
    }
}
