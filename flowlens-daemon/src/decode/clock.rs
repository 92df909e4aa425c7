//! Timestamp sanity: uptime wrap-around, flows ending after their export, absurd clocks.
//!
//! `NetFlow` v5/v9 and IPFIX sysUpTime fields are 32-bit milliseconds since the exporter
//! booted; they wrap every 49.7 days. Converting with wrapping arithmetic makes a flow
//! that started just before a wrap come out right. What is still impossible after that
//! (a flow ending after the packet that exports it, a flow older than
//! `max_flow_age_ms`) is clamped and counted, so one broken exporter cannot put flows
//! into the distant past or future of the aggregation windows.

/// Rules for timestamps (part of [`super::DecoderConfig`]).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct ClockPolicy {
    /// How far a flow may end after its export time (exporter rounding), in ms.
    pub max_future_ms: u64,
    /// The oldest a flow's start may be relative to its export time, in ms. Active
    /// timeouts are minutes to an hour; a day leaves room for very long flows.
    pub max_flow_age_ms: u64,
    /// Export time further than this from the receive time counts as a skewed clock.
    pub max_skew_ms: u64,
}

impl Default for ClockPolicy {
    fn default() -> Self {
        Self {
            max_future_ms: 5_000,
            max_flow_age_ms: 86_400_000,
            max_skew_ms: 3_600_000,
        }
    }
}

/// Absolute time in ms of an uptime-relative timestamp, given the export time and the
/// uptime at export (both from the header). The difference is taken modulo 2^32 and
/// read as signed: a flow that started just before the 32-bit uptime wrapped comes out
/// a few ms old (not 49 days in the future), and a timestamp slightly *after* the
/// export uptime (an exporter bug) comes out in the future, where `settle` clamps it.
#[inline]
pub(crate) fn from_uptime(export_time_ms: u64, uptime_at_export_ms: u32, uptime_ms: u32) -> u64 {
    #[expect(
        clippy::cast_possible_wrap,
        reason = "modular difference read as signed on purpose"
    )]
    let age = uptime_at_export_ms.wrapping_sub(uptime_ms) as i32;
    if age >= 0 {
        export_time_ms.saturating_sub(u64::from(age.unsigned_abs()))
    } else {
        export_time_ms.saturating_add(u64::from(age.unsigned_abs()))
    }
}

impl ClockPolicy {
    /// Clamps `start`/`end` into `[export - max_flow_age, export + max_future]` and
    /// `start <= end`. Returns whether anything was changed.
    #[inline]
    pub(crate) fn settle(
        &self,
        export_time_ms: u64,
        start: &mut Option<u64>,
        end: &mut Option<u64>,
    ) -> bool {
        let lo = export_time_ms.saturating_sub(self.max_flow_age_ms);
        let hi = export_time_ms.saturating_add(self.max_future_ms);
        let mut changed = false;
        for t in [&mut *start, &mut *end].into_iter().flatten() {
            let c = (*t).clamp(lo, hi);
            if c != *t {
                *t = c;
                changed = true;
            }
        }
        if let (Some(s), Some(e)) = (start.as_mut(), end.as_ref())
            && *s > *e
        {
            *s = *e;
            changed = true;
        }
        changed
    }

    /// Whether the exporter's clock is further from the receive time than allowed.
    pub(crate) fn is_skewed(&self, export_time_ms: u64, received_at_ms: u64) -> bool {
        export_time_ms.abs_diff(received_at_ms) > self.max_skew_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_wraps() {
        // Flow started 10 ms before the uptime counter wrapped; export 5 ms after.
        let export = 1_000_000;
        assert_eq!(from_uptime(export, 5, u32::MAX - 9), export - 15);
        assert_eq!(from_uptime(export, 100, 40), export - 60);
        // Slightly after the export uptime: in the future, for `settle` to clamp.
        assert_eq!(from_uptime(export, 100, 160), export + 60);
    }

    #[test]
    fn clamps_absurd_times() {
        let p = ClockPolicy::default();
        let export = 10 * 86_400_000;
        let (mut s, mut e) = (Some(export - 1000), Some(export + 60_000));
        assert!(p.settle(export, &mut s, &mut e));
        assert_eq!(e, Some(export + 5_000));
        let (mut s2, mut e2) = (Some(0), Some(export));
        assert!(p.settle(export, &mut s2, &mut e2));
        assert_eq!(s2, Some(export - 86_400_000));
        let (mut s3, mut e3) = (Some(export - 10), Some(export - 20));
        assert!(p.settle(export, &mut s3, &mut e3));
        assert_eq!(s3, e3);
        let (mut s4, mut e4) = (Some(export - 10), Some(export - 5));
        assert!(!p.settle(export, &mut s4, &mut e4));
        assert!(s.is_some());
    }
}
