//! PURE: `ingestion.routing` in the `all` role: the measured flow rate -> whether
//! datagrams go through Kafka, with hysteresis.
//!
//! Below `kafka_threshold_flows_per_sec` one process handles everything without a
//! broker in the way; above it, datagrams go through the raw topic so that `process`
//! instances elsewhere can share the load. The rate must stay above the threshold for
//! [`Router::UP_AFTER`] to switch to Kafka, and below [`Router::DOWN_RATIO`] of it for
//! [`Router::DOWN_AFTER`] to switch back, so a rate near the threshold does not flap.
//! A switch only changes where new datagrams go: each datagram takes exactly one way
//! and both ways end in the same decode workers, so nothing is lost or counted twice.

use std::time::Duration;

/// `ingestion.routing.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Always the in-process queues.
    Postgres,
    /// Always through Kafka.
    Kafka,
    /// Kafka while the rate is above the threshold.
    Auto,
}

impl Mode {
    /// Parses `ingestion.routing.mode` (validated by the config).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "postgres" => Some(Self::Postgres),
            "kafka" => Some(Self::Kafka),
            "auto" => Some(Self::Auto),
            _ => None,
        }
    }
}

/// The routing decision and the evidence for changing it.
#[derive(Debug, Clone)]
pub struct Router {
    mode: Mode,
    threshold: f64,
    via_kafka: bool,
    /// How long the rate has been on the other side of its limit.
    beyond: Duration,
}

impl Router {
    /// Above the threshold this long: through Kafka.
    pub const UP_AFTER: Duration = Duration::from_secs(3);
    /// Below `DOWN_RATIO` of the threshold this long: back to the in-process queues.
    pub const DOWN_AFTER: Duration = Duration::from_secs(10);
    pub const DOWN_RATIO: f64 = 0.7;

    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    pub fn new(mode: Mode, threshold_flows_per_sec: u64) -> Self {
        Self {
            mode,
            threshold: threshold_flows_per_sec as f64,
            via_kafka: mode == Mode::Kafka,
            beyond: Duration::ZERO,
        }
    }

    /// Whether datagrams go through Kafka now.
    pub fn via_kafka(&self) -> bool {
        self.via_kafka
    }

    /// Feeds the flow rate measured over the last `elapsed`; returns the new decision
    /// when it changes.
    pub fn update(&mut self, flows_per_sec: f64, elapsed: Duration) -> Option<bool> {
        if self.mode != Mode::Auto {
            return None;
        }
        let (beyond, after) = if self.via_kafka {
            (
                flows_per_sec < self.threshold * Self::DOWN_RATIO,
                Self::DOWN_AFTER,
            )
        } else {
            (flows_per_sec >= self.threshold, Self::UP_AFTER)
        };
        if !beyond {
            self.beyond = Duration::ZERO;
            return None;
        }
        self.beyond += elapsed;
        if self.beyond < after {
            return None;
        }
        self.beyond = Duration::ZERO;
        self.via_kafka = !self.via_kafka;
        Some(self.via_kafka)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn auto_switches_after_a_sustained_crossing_and_not_on_a_spike() {
        let mut r = Router::new(Mode::Auto, 10_000);
        assert!(!r.via_kafka());
        // A spike shorter than UP_AFTER changes nothing.
        assert_eq!(r.update(50_000.0, S), None);
        assert_eq!(r.update(50_000.0, S), None);
        assert_eq!(r.update(1_000.0, S), None);
        // Sustained: through Kafka after three seconds.
        assert_eq!(r.update(12_000.0, S), None);
        assert_eq!(r.update(12_000.0, S), None);
        assert_eq!(r.update(12_000.0, S), Some(true));
        // Just under the threshold is not low enough to come back.
        for _ in 0..20 {
            assert_eq!(r.update(9_000.0, S), None);
        }
        for _ in 0..9 {
            assert_eq!(r.update(5_000.0, S), None);
        }
        assert_eq!(r.update(5_000.0, S), Some(false));
        assert!(!r.via_kafka());
    }

    #[test]
    fn fixed_modes_never_switch() {
        let mut k = Router::new(Mode::Kafka, 10);
        let mut p = Router::new(Mode::Postgres, 10);
        for _ in 0..30 {
            assert_eq!(k.update(0.0, S), None);
            assert_eq!(p.update(1e9, S), None);
        }
        assert!(k.via_kafka());
        assert!(!p.via_kafka());
        assert_eq!(Mode::parse("auto"), Some(Mode::Auto));
        assert_eq!(Mode::parse("redis"), None);
    }
}
