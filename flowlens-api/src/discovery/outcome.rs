//! PURE: what probe answers mean. A probe's connect result becomes a
//! [`ProbeOutcome`]; [`Tally`] folds outcomes, in any order, into finished hosts and the
//! scan's counters; [`merge_open_ports`] says what a finished host does to its asset's
//! `open_ports` tag.
//!
//! The up/down rule: a host is up when any port accepted the connection *or refused
//! it*, because a refusal (TCP RST) is the host's own kernel answering. A timeout or
//! an ICMP unreachable proves nothing, so a host with only those is not counted up.

use std::collections::HashMap;
use std::net::IpAddr;

use serde_json::{Map, Value};

/// How one TCP connection attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    /// The handshake completed: something listens.
    Open,
    /// RST: the host is there, the port is closed.
    Refused,
    /// Timed out, unreachable or any other error: nothing is known.
    NoAnswer,
}

impl ProbeOutcome {
    /// `None` means the attempt ran out of time.
    pub fn classify(result: Option<std::io::Result<()>>) -> Self {
        match result {
            Some(Ok(())) => Self::Open,
            Some(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Self::Refused,
            Some(Err(_)) | None => Self::NoAnswer,
        }
    }

    /// The `result` label of `flowlens_api_discovery_probes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Refused => "refused",
            Self::NoAnswer => "no_answer",
        }
    }
}

/// A host whose every port has been probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedHost {
    pub ip: IpAddr,
    /// Sorted.
    pub open: Vec<u16>,
    pub up: bool,
}

#[derive(Debug, Default)]
struct HostProgress {
    answered: usize,
    open: Vec<u16>,
    refused: bool,
}

/// The scan's running counters, and the hosts still waiting for probe answers.
#[derive(Debug)]
pub struct Tally {
    ports_per_host: usize,
    pending: HashMap<IpAddr, HostProgress>,
    pub hosts_scanned: u64,
    pub hosts_up: u64,
    pub assets_created: u64,
    pub assets_updated: u64,
    /// Open ports of hosts finished since the last [`Tally::take_open_ports`].
    open_ports: Map<String, Value>,
}

impl Tally {
    pub fn new(ports_per_host: usize) -> Self {
        Self {
            ports_per_host,
            pending: HashMap::new(),
            hosts_scanned: 0,
            hosts_up: 0,
            assets_created: 0,
            assets_updated: 0,
            open_ports: Map::new(),
        }
    }

    /// Records one answer; returns the host once all of its ports have answered.
    pub fn record(&mut self, ip: IpAddr, port: u16, outcome: ProbeOutcome) -> Option<FinishedHost> {
        let host = self.pending.entry(ip).or_default();
        host.answered += 1;
        match outcome {
            ProbeOutcome::Open => host.open.push(port),
            ProbeOutcome::Refused => host.refused = true,
            ProbeOutcome::NoAnswer => {}
        }
        if host.answered < self.ports_per_host {
            return None;
        }
        let mut host = self.pending.remove(&ip)?;
        host.open.sort_unstable();
        host.open.dedup();
        let up = host.refused || !host.open.is_empty();
        self.hosts_scanned += 1;
        if up {
            self.hosts_up += 1;
        }
        if !host.open.is_empty() {
            self.open_ports
                .insert(ip.to_string(), Value::from(host.open.clone()));
        }
        Some(FinishedHost {
            ip,
            open: host.open,
            up,
        })
    }

    /// The open ports found since the last call, for a `jsonb ||` merge into the row.
    pub fn take_open_ports(&mut self) -> Value {
        Value::Object(std::mem::take(&mut self.open_ports))
    }
}

/// The tag on an asset that lists its open TCP ports, as the last scan of each port saw
/// them: a JSON array of port numbers, ascending.
pub const OPEN_PORTS_TAG: &str = "open_ports";

/// The asset's tags after a scan that `probed` these ports and found `open` ones open.
///
/// The tag keeps what this scan cannot know (ports it did not probe stay as earlier
/// scans or people left them) and takes this scan's word for the ports it probed, so a
/// closed service disappears and a narrow rescan does not erase a wide one. A tag that
/// is not a list of ports is replaced; every other tag is untouched.
pub fn merge_open_ports(tags: &Value, probed: &[u16], open: &[u16]) -> Value {
    let mut tags = match tags {
        Value::Object(map) => map.clone(),
        _ => Map::new(),
    };
    let mut ports: Vec<u16> = tags
        .get(OPEN_PORTS_TAG)
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_u64().and_then(|p| u16::try_from(p).ok()))
                .filter(|p| *p > 0 && !probed.contains(p))
                .collect()
        })
        .unwrap_or_default();
    ports.extend_from_slice(open);
    ports.sort_unstable();
    ports.dedup();
    tags.insert(OPEN_PORTS_TAG.to_owned(), Value::from(ports));
    Value::Object(tags)
}

#[cfg(test)]
mod tests {
    use std::io::{Error, ErrorKind};

    use serde_json::json;

    use super::*;

    #[test]
    fn refused_proves_the_host_timeouts_prove_nothing() {
        assert_eq!(ProbeOutcome::classify(Some(Ok(()))), ProbeOutcome::Open);
        assert_eq!(
            ProbeOutcome::classify(Some(Err(Error::from(ErrorKind::ConnectionRefused)))),
            ProbeOutcome::Refused
        );
        for e in [
            ErrorKind::HostUnreachable,
            ErrorKind::NetworkUnreachable,
            ErrorKind::Other,
        ] {
            assert_eq!(
                ProbeOutcome::classify(Some(Err(Error::from(e)))),
                ProbeOutcome::NoAnswer
            );
        }
        assert_eq!(ProbeOutcome::classify(None), ProbeOutcome::NoAnswer);
    }

    #[test]
    fn hosts_finish_when_every_port_answered_in_any_order() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let mut t = Tally::new(2);
        assert_eq!(t.record(a, 443, ProbeOutcome::Open), None);
        assert_eq!(t.record(b, 22, ProbeOutcome::NoAnswer), None);
        assert_eq!(t.record(c, 22, ProbeOutcome::Refused), None);
        assert_eq!(
            t.record(a, 22, ProbeOutcome::Open),
            Some(FinishedHost {
                ip: a,
                open: vec![22, 443],
                up: true
            })
        );
        let down = t.record(b, 443, ProbeOutcome::NoAnswer).unwrap();
        assert!(!down.up && down.open.is_empty());
        let refused = t.record(c, 443, ProbeOutcome::NoAnswer).unwrap();
        assert!(refused.up && refused.open.is_empty());
        // Every host is scanned once; up <= scanned.
        assert_eq!((t.hosts_scanned, t.hosts_up), (3, 2));
        // Only hosts with an open port are listed, and only once.
        assert_eq!(t.take_open_ports(), json!({"10.0.0.1": [22, 443]}));
        assert_eq!(t.take_open_ports(), json!({}));
    }

    #[test]
    fn the_tag_takes_this_scans_word_for_probed_ports_only() {
        let tags = json!({"team": "db", "open_ports": [22, 8080, 5432]});
        // 5432 closed, 443 newly open, 8080 not probed so kept.
        assert_eq!(
            merge_open_ports(&tags, &[22, 443, 5432], &[22, 443]),
            json!({"team": "db", "open_ports": [22, 443, 8080]})
        );
        // No tag yet, or tags that are not an object.
        assert_eq!(
            merge_open_ports(&json!({}), &[80], &[80]),
            json!({"open_ports": [80]})
        );
        assert_eq!(
            merge_open_ports(&Value::Null, &[80], &[]),
            json!({"open_ports": []})
        );
        // A tag someone set to something else is replaced; junk entries are dropped.
        assert_eq!(
            merge_open_ports(&json!({"open_ports": "lots"}), &[80], &[80]),
            json!({"open_ports": [80]})
        );
        assert_eq!(
            merge_open_ports(&json!({"open_ports": [0, 70000, "x", 25]}), &[80], &[80]),
            json!({"open_ports": [25, 80]})
        );
    }
}
