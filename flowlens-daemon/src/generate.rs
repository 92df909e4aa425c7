//! PURE: a known enterprise topology, played as flow records.
//!
//! `flowlens-daemon generate` sends these (as IPFIX) to a collector so users can check
//! a setup end to end, and the graph tests assert that exactly this topology comes out
//! of PostgreSQL. Clients talk to a web tier, the web tier to an app tier, the app tier
//! to a database and a cache; everyone asks DNS; the app tier calls one external API.
//! Every connection is exported as two unidirectional records (client -> server and
//! back), the client side on a fresh ephemeral port each time, as real exporters see
//! it, so a collector that keys dependencies by port pair would invent one edge per
//! connection.

use std::net::{IpAddr, Ipv4Addr};

use crate::flow::{FlowProtocol, FlowRecord};

/// One service dependency of the topology: every client talks to `server:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyEdge {
    pub clients: Vec<IpAddr>,
    pub server: IpAddr,
    pub protocol: u8,
    pub port: u16,
    /// Bytes client -> server and back, per connection.
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// A topology: its edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub edges: Vec<TopologyEdge>,
}

const TCP: u8 = 6;
const UDP: u8 = 17;
const SYN: u16 = 0x02;
const ACK: u16 = 0x10;
const PSH: u16 = 0x08;
const FIN: u16 = 0x01;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

impl Topology {
    /// Clients 10.1.0.1-8 -> web 10.2.0.10-11:443; web -> app 10.3.0.10:8080; app ->
    /// PostgreSQL 10.4.0.10:5432 and Redis 10.4.0.20:6379; clients and web -> DNS
    /// 10.0.0.53:53/udp; app -> external API 203.0.113.10:443.
    pub fn enterprise() -> Self {
        let clients: Vec<IpAddr> = (1..=8).map(|i| v4(10, 1, 0, i)).collect();
        let web = [v4(10, 2, 0, 10), v4(10, 2, 0, 11)];
        let app = v4(10, 3, 0, 10);
        let edge = |clients: Vec<IpAddr>, server, protocol, port, req, resp| TopologyEdge {
            clients,
            server,
            protocol,
            port,
            request_bytes: req,
            response_bytes: resp,
        };
        let mut edges = Vec::new();
        for w in web {
            edges.push(edge(clients.clone(), w, TCP, 443, 1_200, 48_000));
        }
        edges.push(edge(web.to_vec(), app, TCP, 8080, 900, 12_000));
        edges.push(edge(vec![app], v4(10, 4, 0, 10), TCP, 5432, 400, 6_000));
        edges.push(edge(vec![app], v4(10, 4, 0, 20), TCP, 6379, 120, 800));
        let mut dns_clients = clients.clone();
        dns_clients.extend(web);
        edges.push(edge(dns_clients, v4(10, 0, 0, 53), UDP, 53, 70, 140));
        edges.push(edge(vec![app], v4(203, 0, 113, 10), TCP, 443, 2_000, 9_000));
        Self { edges }
    }

    /// Every (client, server, protocol, port) dependency the topology has.
    pub fn dependencies(&self) -> Vec<(IpAddr, IpAddr, u8, u16)> {
        let mut v: Vec<_> = self
            .edges
            .iter()
            .flat_map(|e| e.clients.iter().map(|c| (*c, e.server, e.protocol, e.port)))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Every address in the topology.
    pub fn addresses(&self) -> Vec<IpAddr> {
        let mut v: Vec<_> = self
            .edges
            .iter()
            .flat_map(|e| e.clients.iter().copied().chain([e.server]))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Connections per round (one per client of every edge).
    pub fn connections_per_round(&self) -> usize {
        self.edges.iter().map(|e| e.clients.len()).sum()
    }

    /// The flow records of round `round`: two per connection, ending at `end_ms`.
    /// With `flags`, TCP records are single packets carrying the handshake (SYN from
    /// the client, SYN+ACK from the server); without, they carry the OR of a whole
    /// connection's flags, which says nothing about direction, so it must come from
    /// ports and fan-out.
    pub fn round(&self, round: u64, end_ms: u64, exporter: IpAddr, flags: bool) -> Vec<FlowRecord> {
        let mut out = Vec::with_capacity(self.connections_per_round() * 2);
        let mut n = 0u64;
        for e in &self.edges {
            for client in &e.clients {
                // Ephemeral ports in Linux's default range, different per connection.
                let port =
                    32_768 + u16::try_from((round * 7919 + n * 104_729) % 28_000).unwrap_or(0);
                n += 1;
                let tcp = e.protocol == TCP;
                let mut fwd = FlowRecord::empty(FlowProtocol::Ipfix, exporter, end_ms);
                fwd.src_ip = Some(*client);
                fwd.dst_ip = Some(e.server);
                fwd.src_port = Some(port);
                fwd.dst_port = Some(e.port);
                fwd.protocol = Some(e.protocol);
                fwd.bytes = Some(e.request_bytes);
                fwd.packets = Some(4);
                fwd.flow_start_ms = Some(end_ms.saturating_sub(2_000));
                fwd.flow_end_ms = Some(end_ms);
                fwd.ip_version = Some(4);
                let mut rev = fwd;
                rev.src_ip = Some(e.server);
                rev.dst_ip = Some(*client);
                rev.src_port = Some(e.port);
                rev.dst_port = Some(port);
                rev.bytes = Some(e.response_bytes);
                if tcp && flags {
                    // The handshake as single-packet records show it (sFlow samples,
                    // per-packet exporters): the client's bare SYN, the server's
                    // SYN+ACK.
                    fwd.packets = Some(1);
                    fwd.tcp_flags = Some(SYN);
                    rev.packets = Some(1);
                    rev.tcp_flags = Some(SYN | ACK);
                } else if tcp {
                    // Cumulative flags of a whole connection: no direction in them.
                    fwd.tcp_flags = Some(SYN | ACK | PSH | FIN);
                    rev.tcp_flags = Some(SYN | ACK | PSH | FIN);
                }
                out.push(fwd);
                out.push(rev);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enterprise_topology_has_its_dependencies() {
        let t = Topology::enterprise();
        let deps = t.dependencies();
        // 8 clients x 2 web, 2 web -> app, app -> db, cache, external, 10 -> DNS.
        assert_eq!(deps.len(), 16 + 2 + 3 + 10);
        assert_eq!(t.addresses().len(), 8 + 2 + 1 + 2 + 1 + 1);
        let r = t.round(0, 1_000_000, v4(192, 0, 2, 1), true);
        assert_eq!(r.len(), 2 * t.connections_per_round());
        // Client ports differ between connections.
        let ports: std::collections::HashSet<_> = r.iter().step_by(2).map(|f| f.src_port).collect();
        assert!(ports.len() > 20);
    }
}
