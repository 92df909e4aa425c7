//! PURE: queue depth -> sampling decision, with hysteresis.
//!
//! Under load the cheapest work to shed is work not yet done: the daemon keeps 1 of N
//! datagrams per exporter (in the XDP program, or in userspace in socket mode) and
//! multiplies the decoded records' sampling rate by N, so totals stay unbiased. Pressure
//! starts when the fullest decode queue passes the high watermark and ends only when it
//! falls below the low one, so the rate does not flap.

/// The controller's state: the rate in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pressure {
    rate: u32,
}

impl Default for Pressure {
    fn default() -> Self {
        Self { rate: 1 }
    }
}

/// Controller settings (from `ingestion.backpressure`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PressurePolicy {
    pub enabled: bool,
    pub rate_under_pressure: u32,
    pub high_watermark: f64,
    pub low_watermark: f64,
}

impl Pressure {
    /// The 1:N rate currently in force.
    pub fn rate(self) -> u32 {
        self.rate
    }

    /// Feeds the fill of the fullest queue (0.0 - 1.0); returns the new rate when it
    /// changes.
    pub fn update(&mut self, policy: &PressurePolicy, fill: f64) -> Option<u32> {
        let target = if !policy.enabled {
            1
        } else if fill >= policy.high_watermark {
            policy.rate_under_pressure.max(1)
        } else if fill <= policy.low_watermark {
            1
        } else {
            self.rate
        };
        (target != self.rate).then(|| {
            self.rate = target;
            target
        })
    }
}

/// Keeps 1 of N per exporter (userspace sampling in socket mode).
#[derive(Debug, Default)]
pub struct Sampler {
    seen: std::collections::HashMap<std::net::IpAddr, u64>,
}

impl Sampler {
    /// Whether to keep this exporter's next datagram at rate `n`.
    pub fn keep(&mut self, exporter: std::net::IpAddr, n: u32) -> bool {
        if n <= 1 {
            return true;
        }
        let c = self.seen.entry(exporter).or_default();
        let keep = (*c).is_multiple_of(u64::from(n));
        *c += 1;
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PressurePolicy = PressurePolicy {
        enabled: true,
        rate_under_pressure: 10,
        high_watermark: 0.5,
        low_watermark: 0.1,
    };

    #[test]
    fn rises_above_high_and_falls_below_low_only() {
        let mut p = Pressure::default();
        assert_eq!(p.update(&P, 0.3), None);
        assert_eq!(p.update(&P, 0.6), Some(10));
        assert_eq!(p.update(&P, 0.3), None);
        assert_eq!(p.rate(), 10);
        assert_eq!(p.update(&P, 0.05), Some(1));
        let off = PressurePolicy {
            enabled: false,
            ..P
        };
        assert_eq!(p.update(&off, 1.0), None);
    }

    #[test]
    fn sampler_keeps_one_in_n_per_exporter() {
        let mut s = Sampler::default();
        let a = "192.0.2.1".parse().unwrap();
        let b = "192.0.2.2".parse().unwrap();
        let kept_a = (0..100).filter(|_| s.keep(a, 4)).count();
        let kept_b = (0..10).filter(|_| s.keep(b, 4)).count();
        assert_eq!((kept_a, kept_b), (25, 3));
        assert!(s.keep(a, 1));
    }
}
