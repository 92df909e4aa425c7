//! PURE: dynamic service ports folded into one dependency per client, server and
//! protocol.
//!
//! Some services open a new server port per transfer or call: passive FTP data (after
//! a control connection on 21), the ports the RPC endpoint mapper (135) hands out,
//! RTP media (after SIP on 5060/5061, RTSP on 554, H.323 on 1720), TFTP transfers
//! (after a request to 69). Taken port by port, each makes a dependency and an alert of
//! its own, and a week later a removal each. [`DynamicPorts`] recognizes them and the
//! sink folds them into one edge on port 0 of the pair (`inferred_service` "dynamic"),
//! whose port range is kept (`port_range_min`, `port_range_max`).
//!
//! A server port is *dynamic* when it is a registered or ephemeral port (>= 1024) that
//! is neither in the port table nor a learnt listener, and either
//! - the same client used one of the control services above on the same server within
//!   the last [`CONTROL_MEMORY_MS`] (companion rule), or
//! - the client used at least [`SPREAD_PORTS`] such ports on the same server in the
//!   current window (spread rule: media whose signalling went elsewhere). The ports
//!   seen before the spread was reached stay as they were.
//!
//! Memory is bounded by `max` pairs per table; beyond it a table is cleared (counted).

use std::collections::HashMap;
use std::net::IpAddr;

use crate::enrich::services;

/// Control services whose sessions open dynamic server ports: (protocol, port).
pub const CONTROL_SERVICES: [(u8, u16); 8] = [
    (6, 21),    // FTP (passive data)
    (6, 135),   // MSRPC endpoint mapper
    (6, 5060),  // SIP
    (17, 5060), // SIP
    (6, 5061),  // SIP over TLS
    (6, 554),   // RTSP
    (6, 1720),  // H.323
    (17, 69),   // TFTP
];

/// How long a control connection makes its pair's dynamic ports recognizable.
pub const CONTROL_MEMORY_MS: u64 = 3_600_000;

/// Distinct unlisted high server ports between one pair in one window that make them
/// dynamic without a control connection.
pub const SPREAD_PORTS: usize = 4;

/// Counters (exported by the sink).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DynamicCounters {
    /// Records folded into a dynamic-port edge.
    pub folded: u64,
    /// Times a table was cleared because it was full.
    pub tables_cleared: u64,
}

/// One oriented record's use of a server port.
#[derive(Debug, Clone, Copy)]
pub struct PortUse {
    pub client: IpAddr,
    pub server: IpAddr,
    pub protocol: u8,
    pub port: u16,
    /// Whether the server endpoint is a learnt listener.
    pub listener: bool,
}

/// Recognizes dynamic server ports (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct DynamicPorts {
    /// (client, server) -> when a control service was last used between them.
    controls: HashMap<(IpAddr, IpAddr), u64>,
    /// (client, server, protocol) -> distinct unlisted high ports this window.
    spread: HashMap<(IpAddr, IpAddr, u8), Vec<u16>>,
    spread_window: u64,
    max: usize,
    pub counters: DynamicCounters,
}

impl DynamicPorts {
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            ..Self::default()
        }
    }

    /// Whether a record's server port is dynamic; `window` is the current aggregation
    /// window's number, `now_ms` the wall clock.
    pub fn is_dynamic(&mut self, u: PortUse, window: u64, now_ms: u64) -> bool {
        let PortUse {
            client,
            server,
            protocol,
            port,
            listener,
        } = u;
        if CONTROL_SERVICES.contains(&(protocol, port)) {
            if self.controls.len() >= self.max && !self.controls.contains_key(&(client, server)) {
                self.controls
                    .retain(|_, last| now_ms.saturating_sub(*last) < CONTROL_MEMORY_MS);
                if self.controls.len() >= self.max {
                    self.controls.clear();
                    self.counters.tables_cleared += 1;
                }
            }
            self.controls.insert((client, server), now_ms);
            return false;
        }
        if port < 1024 || listener || services::service_for(protocol, port).is_some() {
            return false;
        }
        let dynamic = self
            .controls
            .get(&(client, server))
            .is_some_and(|last| now_ms.saturating_sub(*last) < CONTROL_MEMORY_MS)
            || self.spread_reached(client, server, protocol, port, window);
        if dynamic {
            self.counters.folded += 1;
        }
        dynamic
    }

    fn spread_reached(
        &mut self,
        client: IpAddr,
        server: IpAddr,
        protocol: u8,
        port: u16,
        window: u64,
    ) -> bool {
        if window != self.spread_window {
            self.spread_window = window;
            self.spread.clear();
        }
        if self.spread.len() >= self.max && !self.spread.contains_key(&(client, server, protocol)) {
            self.spread.clear();
            self.counters.tables_cleared += 1;
        }
        let ports = self.spread.entry((client, server, protocol)).or_default();
        if ports.len() >= SPREAD_PORTS {
            return true;
        }
        if !ports.contains(&port) {
            ports.push(port);
        }
        ports.len() >= SPREAD_PORTS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn pu(client: IpAddr, server: IpAddr, protocol: u8, port: u16, listener: bool) -> PortUse {
        PortUse {
            client,
            server,
            protocol,
            port,
            listener,
        }
    }

    #[test]
    fn passive_ftp_data_ports_after_a_control_connection_are_dynamic() {
        let mut d = DynamicPorts::new(100);
        let (c, s) = (ip("10.0.0.2"), ip("10.0.0.1"));
        assert!(
            !d.is_dynamic(pu(c, s, 6, 40_001, false), 1, 1000),
            "no control yet, one port"
        );
        assert!(
            !d.is_dynamic(pu(c, s, 6, 21, false), 1, 1000),
            "the control itself stays"
        );
        assert!(d.is_dynamic(pu(c, s, 6, 40_002, false), 1, 2000));
        assert!(d.is_dynamic(pu(c, s, 6, 51_000, false), 2, 3_000_000));
        // Known services, low ports and learnt listeners never fold.
        assert!(!d.is_dynamic(pu(c, s, 6, 5432, false), 1, 2000));
        assert!(!d.is_dynamic(pu(c, s, 6, 999, false), 1, 2000));
        assert!(!d.is_dynamic(pu(c, s, 6, 50_051, true), 1, 2000));
        // Another client has no control connection to that server.
        assert!(!d.is_dynamic(pu(ip("10.0.0.3"), s, 6, 40_003, false), 1, 2000));
        // The control is forgotten after an hour.
        assert!(!d.is_dynamic(pu(c, s, 6, 40_004, false), 9, 1000 + CONTROL_MEMORY_MS));
        assert_eq!(d.counters.folded, 2);
    }

    #[test]
    fn media_ports_fold_once_their_spread_is_seen_in_a_window() {
        let mut d = DynamicPorts::new(100);
        let (c, s) = (ip("10.0.0.2"), ip("10.0.0.1"));
        let folded: Vec<bool> = [16_384, 16_386, 16_384, 16_388, 16_390, 16_392]
            .iter()
            .map(|p| d.is_dynamic(pu(c, s, 17, *p, false), 7, 1))
            .collect();
        assert_eq!(folded, [false, false, false, false, true, true]);
        // A new window counts afresh.
        assert!(!d.is_dynamic(pu(c, s, 17, 16_394, false), 8, 2));
    }

    #[test]
    fn tables_stay_bounded() {
        let mut d = DynamicPorts::new(2);
        for n in 0..10u8 {
            let c = IpAddr::from([10, 0, 1, n]);
            d.is_dynamic(pu(c, ip("10.0.0.1"), 6, 21, false), 1, 1);
            d.is_dynamic(pu(c, ip("10.0.0.1"), 17, 20_000, false), 1, 1);
        }
        assert!(d.controls.len() <= 2 && d.spread.len() <= 2);
        assert!(d.counters.tables_cleared > 0);
    }
}
