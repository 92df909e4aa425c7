//! Export sequence tracking: how many export packets (or records) were lost.
//!
//! Each protocol numbers its exports: `NetFlow` v5 counts flows, `NetFlow` v9 counts export
//! packets, IPFIX counts data records, sFlow counts datagrams. A tracker per exporter
//! and domain remembers the next expected number. A jump forward within
//! [`MAX_PLAUSIBLE_GAP`] is a loss; anything else (going backwards, or a jump too big to
//! be loss) is an exporter restart or reordering and resets the expectation without
//! inflating the loss counter.

/// A forward jump larger than this is treated as a restart, not as loss: no exporter
/// loses a billion units between two packets we did receive.
pub const MAX_PLAUSIBLE_GAP: u32 = 1 << 30;

/// What one observed sequence number says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceOutcome {
    /// The first packet seen for this tracker.
    First,
    /// Exactly what was expected.
    InOrder,
    /// `lost` units (packets or records, by protocol) never arrived.
    Gap { lost: u32 },
    /// The exporter restarted, wrapped oddly, or packets were reordered.
    Reset,
}

/// Remembers the next sequence number expected from one exporter and domain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SequenceTracker {
    expected: Option<u32>,
}

impl SequenceTracker {
    /// Records `seq` and sets the next expectation to `seq + advance` (wrapping, as the
    /// counters do on the wire). `advance = None` means the count of units in this
    /// packet is unknown (e.g. IPFIX data sets without a template), so the next packet
    /// cannot be checked.
    pub fn observe(&mut self, seq: u32, advance: Option<u32>) -> SequenceOutcome {
        let outcome = match self.expected {
            None => SequenceOutcome::First,
            Some(expected) if expected == seq => SequenceOutcome::InOrder,
            Some(expected) => {
                let ahead = seq.wrapping_sub(expected);
                if ahead < MAX_PLAUSIBLE_GAP {
                    SequenceOutcome::Gap { lost: ahead }
                } else {
                    SequenceOutcome::Reset
                }
            }
        };
        self.expected = advance.map(|a| seq.wrapping_add(a));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_gaps_and_resets() {
        let mut t = SequenceTracker::default();
        assert_eq!(t.observe(10, Some(1)), SequenceOutcome::First);
        assert_eq!(t.observe(11, Some(1)), SequenceOutcome::InOrder);
        assert_eq!(t.observe(15, Some(1)), SequenceOutcome::Gap { lost: 3 });
        // Restart: back to zero.
        assert_eq!(t.observe(0, Some(1)), SequenceOutcome::Reset);
        assert_eq!(t.observe(1, Some(1)), SequenceOutcome::InOrder);
    }

    #[test]
    fn wraps_around_u32() {
        let mut t = SequenceTracker::default();
        t.observe(u32::MAX - 1, Some(2));
        assert_eq!(t.observe(0, Some(30)), SequenceOutcome::InOrder);
        assert_eq!(t.observe(31, None), SequenceOutcome::Gap { lost: 1 });
        // Unknown advance: the next packet cannot be judged.
        assert_eq!(t.observe(1000, Some(1)), SequenceOutcome::First);
    }
}
