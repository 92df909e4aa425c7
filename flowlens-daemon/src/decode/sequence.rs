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
    /// The last sequence number seen.
    last: Option<u32>,
    /// Units the last packet carried (None: unknown, the next packet is not judged).
    advance: Option<u32>,
}

impl SequenceTracker {
    /// Records `seq` and sets the next expectation to `seq + advance` (wrapping, as the
    /// counters do on the wire). `advance = None` means the count of units in this
    /// packet is unknown (e.g. IPFIX data sets without a template), so the next packet
    /// cannot be checked.
    pub fn observe(&mut self, seq: u32, advance: Option<u32>) -> SequenceOutcome {
        self.observe_with_alternative(seq, advance, None)
    }

    /// Like [`Self::observe`], but also accepts `last + alternative` as in order.
    /// Some exporters number differently from their RFC: softflowd's IPFIX sequence
    /// already includes the flow records of the packet that carries it (and leaves
    /// options records out), so its next number is `last + this packet's flows`. A gap
    /// is measured from the nearest expectation, so neither style inflates loss.
    pub fn observe_with_alternative(
        &mut self,
        seq: u32,
        advance: Option<u32>,
        alternative: Option<u32>,
    ) -> SequenceOutcome {
        let outcome = match self.last {
            None => SequenceOutcome::First,
            Some(last) => {
                let expected = [self.advance, alternative]
                    .into_iter()
                    .flatten()
                    .map(|a| seq.wrapping_sub(last.wrapping_add(a)))
                    .min();
                match expected {
                    None => SequenceOutcome::First,
                    Some(0) => SequenceOutcome::InOrder,
                    Some(ahead) if ahead < MAX_PLAUSIBLE_GAP => {
                        SequenceOutcome::Gap { lost: ahead }
                    }
                    Some(_) => SequenceOutcome::Reset,
                }
            }
        };
        self.last = Some(seq);
        self.advance = advance;
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

    #[test]
    fn softflowd_inclusive_ipfix_numbering_is_in_order() {
        // softflowd: 20 flows (+1 options record) numbered 20, then 26 flows numbered 46.
        let mut t = SequenceTracker::default();
        assert_eq!(
            t.observe_with_alternative(20, Some(21), Some(20)),
            SequenceOutcome::First
        );
        assert_eq!(
            t.observe_with_alternative(46, Some(26), Some(26)),
            SequenceOutcome::InOrder
        );
        assert_eq!(
            t.observe_with_alternative(50, Some(4), Some(4)),
            SequenceOutcome::InOrder
        );
        // Three lost records are still three, measured from the nearest expectation.
        assert_eq!(
            t.observe_with_alternative(57, Some(4), Some(4)),
            SequenceOutcome::Gap { lost: 3 }
        );
    }
}
