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
        Self::enterprise_with_clients(8)
    }

    /// [`Self::enterprise`] with `clients` clients (10.1.0.1, 10.1.0.2, ... 250 per
    /// /24, up to 62 500), for load: each client adds three dependencies (two web
    /// servers and DNS).
    pub fn enterprise_with_clients(clients: usize) -> Self {
        let clients: Vec<IpAddr> = (0..clients.clamp(1, 62_500))
            .map(|i| {
                let third = u8::try_from(i / 250).unwrap_or(u8::MAX);
                let fourth = u8::try_from(i % 250 + 1).unwrap_or(u8::MAX);
                v4(10, 1, third, fourth)
            })
            .collect();
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
    fn ipfix_messages_decode_back_to_the_records() {
        use crate::decode::{Datagram, Decoder};
        let t = Topology::enterprise();
        let exporter = v4(192, 0, 2, 1);
        let recs = t.round(3, 1_767_225_600_000, exporter, true);
        let mut seq = 0;
        let msgs = ipfix_messages(&recs, 1_767_225_601, &mut seq);
        assert_eq!(seq as usize, recs.len());
        let mut d = Decoder::default();
        let mut out = Vec::new();
        assert_eq!(msgs.iter().map(|(_, n)| n).sum::<usize>(), recs.len());
        for (m, _) in &msgs {
            d.decode(
                &Datagram {
                    exporter,
                    received_at_ms: 1_767_225_601_000,
                    payload: m,
                },
                &mut out,
            )
            .unwrap();
        }
        assert_eq!(out.len(), recs.len());
        for (a, b) in out.iter().zip(&recs) {
            assert_eq!(
                (
                    a.src_ip,
                    a.dst_ip,
                    a.src_port,
                    a.dst_port,
                    a.protocol,
                    a.tcp_flags.filter(|f| *f != 0),
                    a.bytes
                ),
                (
                    b.src_ip,
                    b.dst_ip,
                    b.src_port,
                    b.dst_port,
                    b.protocol,
                    b.tcp_flags,
                    b.bytes
                )
            );
            assert_eq!(
                (a.flow_start_ms, a.flow_end_ms),
                (b.flow_start_ms, b.flow_end_ms)
            );
        }
        assert_eq!(d.totals().sequence_gaps, 0);
    }

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

/// IPFIX template id of generated data.
const TEMPLATE_ID: u16 = 256;

/// The generated records' IPFIX fields: the IPv4 5-tuple, tcpControlBits, 64-bit
/// counters and flowStart/EndMilliseconds (47 bytes a record).
fn ipfix_fields() -> [crate::testing::wire::Ie; 10] {
    use crate::testing::wire::Ie;
    [
        Ie::new(8, 4),
        Ie::new(12, 4),
        Ie::new(7, 2),
        Ie::new(11, 2),
        Ie::new(4, 1),
        Ie::new(6, 2),
        Ie::new(1, 8),
        Ie::new(2, 8),
        Ie::new(152, 8),
        Ie::new(153, 8),
    ]
}

/// Records per IPFIX message (47 bytes each: 28 keep a datagram under 1400 bytes).
const RECORDS_PER_MESSAGE: usize = 28;

/// Encodes flow records (IPv4 only; others are skipped) as IPFIX messages, each
/// starting with the template so a collector that missed one loses nothing.
/// `sequence` is the IPFIX sequence number (data records sent before), advanced here.
pub fn ipfix_messages(
    records: &[FlowRecord],
    export_secs: u32,
    sequence: &mut u32,
) -> Vec<(Vec<u8>, usize)> {
    use crate::testing::wire;
    let fields = ipfix_fields();
    let template = wire::ipfix_template_set(2, &[(TEMPLATE_ID, &fields[..])]);
    let v4s: Vec<&FlowRecord> = records
        .iter()
        .filter(|r| {
            matches!(
                (r.src_ip, r.dst_ip),
                (Some(IpAddr::V4(_)), Some(IpAddr::V4(_)))
            )
        })
        .collect();
    let mut out = Vec::new();
    for chunk in v4s.chunks(RECORDS_PER_MESSAGE) {
        let mut data = Vec::with_capacity(chunk.len() * 47);
        for r in chunk {
            let (Some(IpAddr::V4(s)), Some(IpAddr::V4(d))) = (r.src_ip, r.dst_ip) else {
                continue;
            };
            data.extend_from_slice(&s.octets());
            data.extend_from_slice(&d.octets());
            data.extend_from_slice(&r.src_port.unwrap_or(0).to_be_bytes());
            data.extend_from_slice(&r.dst_port.unwrap_or(0).to_be_bytes());
            data.push(r.protocol.unwrap_or(0));
            data.extend_from_slice(&r.tcp_flags.unwrap_or(0).to_be_bytes());
            data.extend_from_slice(&r.bytes.unwrap_or(0).to_be_bytes());
            data.extend_from_slice(&r.packets.unwrap_or(0).to_be_bytes());
            data.extend_from_slice(&r.flow_start_ms.unwrap_or(0).to_be_bytes());
            data.extend_from_slice(&r.flow_end_ms.unwrap_or(0).to_be_bytes());
        }
        let set = wire::data_set(TEMPLATE_ID, &data, 0);
        out.push((
            wire::ipfix_message(export_secs, *sequence, 1, &[template.clone(), set]),
            chunk.len(),
        ));
        *sequence = sequence.wrapping_add(u32::try_from(chunk.len()).unwrap_or(0));
    }
    out
}

/// Sends one datagram, retrying while the socket buffer is full.
fn send_all(sock: &std::net::UdpSocket, m: &[u8]) -> std::io::Result<()> {
    loop {
        match sock.send(m) {
            Ok(_) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
}

/// What `generate` sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct GenerateReport {
    pub rounds: u64,
    pub flows: u64,
    pub datagrams: u64,
}

/// EDGE: plays `rounds` rounds of the enterprise topology to `target` as IPFIX, at
/// about `rate` flow records per second (0 = as fast as possible), from `source` (the
/// exporter's address; any when `None`). Odd rounds carry no handshake flags, so a
/// collector must orient them by ports and fan-out.
pub fn generate(
    target: std::net::SocketAddr,
    source: Option<IpAddr>,
    rounds: u64,
    rate: u64,
    clients: usize,
) -> std::io::Result<GenerateReport> {
    use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
    let bind: std::net::SocketAddr = match source {
        Some(ip) => (ip, 0).into(),
        None if target.is_ipv4() => (Ipv4Addr::UNSPECIFIED, 0).into(),
        None => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = std::net::UdpSocket::bind(bind)?;
    sock.connect(target)?;
    let topology = Topology::enterprise_with_clients(clients);
    let exporter = sock.local_addr()?.ip();
    let started = Instant::now();
    let mut report = GenerateReport::default();
    let mut sequence = 0u32;
    for round in 0..rounds {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let now_ms = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
        let secs = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
        let records = topology.round(round, now_ms.saturating_sub(1000), exporter, round % 2 == 0);
        // Each message with the records it carries (records the IPFIX template cannot
        // carry are left out, and so not counted as sent).
        for (m, n) in &ipfix_messages(&records, secs, &mut sequence) {
            // Paced per datagram: a large topology's round must not leave as one
            // burst that overflows the collector's socket buffer.
            if rate > 0 {
                #[expect(clippy::cast_precision_loss, reason = "pacing arithmetic")]
                let due = Duration::from_secs_f64(report.flows as f64 / rate as f64);
                while let Some(wait) = due.checked_sub(started.elapsed()) {
                    if wait > Duration::from_millis(1) {
                        std::thread::park_timeout(wait);
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
            send_all(&sock, m)?;
            report.datagrams += 1;
            report.flows += *n as u64;
        }
        report.rounds += 1;
    }
    Ok(report)
}
