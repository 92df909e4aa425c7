//! The daemon's WARN line for malformed datagrams, rate-limited per exporter and reason.
//!
//! A network engineer who points a new device at FlowLens and sees
//! `flowlens_decode_malformed_total` rise needs the reason without a capture: the first
//! malformed datagram of each (exporter, reason) is logged with the same detail as
//! `decode --explain` (protocol, reason, offset, the bytes around it), then at most one
//! a minute per pair, saying how many were not logged in between. A flood of garbage
//! from one source costs one line a minute, and the table of pairs is bounded.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::decode::{DecodeError, explain};

/// At most one line per (exporter, reason) in this interval, after the first.
pub const INTERVAL: Duration = Duration::from_mins(1);

/// Pairs remembered at most; beyond it, pairs quiet for an interval are forgotten, and
/// if none are, new pairs are not logged until some are (they are still counted in the
/// metrics).
const MAX_PAIRS: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Pair {
    logged_at: Instant,
    suppressed: u64,
}

/// Per-worker state: each exporter is decoded by exactly one worker.
#[derive(Debug, Default)]
pub struct MalformedLog {
    pairs: HashMap<(IpAddr, &'static str), Pair>,
}

impl MalformedLog {
    /// Logs `error` for a datagram from `exporter` if its pair is due, at `now`.
    /// Returns whether a line was written.
    pub fn report(
        &mut self,
        exporter: IpAddr,
        payload: &[u8],
        error: &DecodeError,
        now: Instant,
    ) -> bool {
        let Some(suppressed) = self.due(exporter, error.reason(), now) else {
            return false;
        };
        tracing::warn!(
            %exporter,
            protocol = explain::protocol(payload),
            reason = error.reason(),
            offset = error.offset(),
            length = payload.len(),
            not_logged_since_last = suppressed,
            "malformed datagram from {exporter}: {}",
            explain::malformed(payload, error)
        );
        true
    }

    /// Whether the pair may log now; if so, how many of its datagrams were not logged
    /// since its last line.
    fn due(&mut self, exporter: IpAddr, reason: &'static str, now: Instant) -> Option<u64> {
        let key = (exporter, reason);
        if let Some(pair) = self.pairs.get_mut(&key) {
            if now.duration_since(pair.logged_at) < INTERVAL {
                pair.suppressed += 1;
                return None;
            }
            let suppressed = pair.suppressed;
            *pair = Pair {
                logged_at: now,
                suppressed: 0,
            };
            return Some(suppressed);
        }
        if self.pairs.len() >= MAX_PAIRS {
            self.pairs
                .retain(|_, p| now.duration_since(p.logged_at) < INTERVAL);
            if self.pairs.len() >= MAX_PAIRS {
                return None;
            }
        }
        self.pairs.insert(
            key,
            Pair {
                logged_at: now,
                suppressed: 0,
            },
        );
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const A: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn first_per_exporter_and_reason_then_one_a_minute() {
        let mut log = MalformedLog::default();
        let t0 = Instant::now();
        assert_eq!(log.due(A, "bad_length", t0), Some(0));
        assert_eq!(log.due(A, "bad_length", t0 + Duration::from_secs(1)), None);
        assert_eq!(
            log.due(A, "truncated", t0 + Duration::from_secs(1)),
            Some(0)
        );
        assert_eq!(
            log.due(B, "bad_length", t0 + Duration::from_secs(2)),
            Some(0)
        );
        assert_eq!(log.due(A, "bad_length", t0 + Duration::from_secs(59)), None);
        assert_eq!(log.due(A, "bad_length", t0 + INTERVAL), Some(2));
        assert_eq!(log.due(A, "bad_length", t0 + INTERVAL), None);
    }

    #[test]
    fn the_table_of_pairs_is_bounded() {
        let mut log = MalformedLog::default();
        let t0 = Instant::now();
        for i in 0..MAX_PAIRS {
            let ip = IpAddr::V4(Ipv4Addr::from(u32::try_from(i).unwrap()));
            assert_eq!(log.due(ip, "truncated", t0), Some(0));
        }
        assert_eq!(log.due(A, "truncated", t0), None);
        assert_eq!(log.pairs.len(), MAX_PAIRS);
        // A minute later the quiet pairs are forgotten and new ones log again.
        assert_eq!(log.due(A, "truncated", t0 + INTERVAL), Some(0));
        assert_eq!(log.pairs.len(), 1);
    }
}
