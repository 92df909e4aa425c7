//! 1:N pre-sampling per exporter, used when userspace's queues are deep.
//!
//! Userspace sets `Config::sample_rate` to N > 1 under pressure; this keeps the first
//! datagram of every N from each exporter and the daemon multiplies the decoded records'
//! sampling rate by N (the rate travels in each `RingHeader`). Sampling whole datagrams
//! per exporter, rather than globally, keeps every exporter represented and keeps its
//! template/data mix roughly intact.
//!
//! The position in the cycle lives in an LRU per-CPU hash keyed by exporter address:
//! per-CPU so there is no atomic on the hot path. An exporter's datagrams normally hash
//! to one receive queue (and so one CPU); if they spread, each CPU keeps 1 of N of its
//! share, which is still 1 of N overall up to rounding.

use crate::FLOW_SAMPLE;

/// Whether to keep this datagram from `exporter` at 1:`rate`.
#[inline(always)]
pub(crate) fn keep(exporter: &[u8; 16], rate: u32) -> bool {
    if rate <= 1 {
        return true;
    }
    let Some(pos) = FLOW_SAMPLE.get_ptr_mut(exporter) else {
        // First datagram from this exporter (or evicted): keep it, and the next
        // N - 1 are sampled out. If the insert fails the next one is kept too,
        // which errs on the side of keeping data.
        let _ = FLOW_SAMPLE.insert(exporter, 1u32, 0);
        return true;
    };
    // SAFETY: the pointer comes from a successful lookup in a per-CPU map, so it points
    // at this CPU's u32, which only this program on this CPU writes.
    let current = unsafe { *pos };
    // `>=` rather than `==`: the rate may have been lowered since the last packet.
    let next = if current + 1 >= rate { 0 } else { current + 1 };
    // SAFETY: as above.
    unsafe { *pos = next };
    current == 0
}
