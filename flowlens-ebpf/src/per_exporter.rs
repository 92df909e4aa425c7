//! What the program knows per exporter: the 1:N pre-sampling cycle, and the datagrams
//! it consumed without delivering (sampled out, or lost to a full ring), so the daemon
//! can account for every datagram per exporter, not only in the global counters.
//!
//! Pre-sampling is used when userspace's queues are deep: userspace sets
//! `Config::sample_rate` to N > 1; this keeps the first datagram of every N from each
//! exporter and the daemon multiplies the decoded records' sampling rate by N (the rate
//! travels in each `RingHeader`). Sampling whole datagrams per exporter, rather than
//! globally, keeps every exporter represented and keeps its template/data mix roughly
//! intact.
//!
//! The state lives in an LRU per-CPU hash keyed by exporter address (`FLOW_PER_EXPORTER`):
//! per-CPU so there is no atomic on the hot path. An entry is made only when there is
//! something to remember (N > 1, or a full ring), so at rate 1 with a reader keeping up
//! the map is never touched. An exporter's datagrams normally hash to one receive queue
//! (and so one CPU); if they spread, each CPU keeps 1 of N of its share, which is still
//! 1 of N overall up to rounding.

use flowlens_ebpf_common::ExporterState;

use crate::FLOW_PER_EXPORTER;

/// Whether to keep this datagram from `exporter` at 1:`rate`; a datagram not kept is
/// counted in the exporter's `ExporterState::sampled_out`.
#[inline(always)]
pub(crate) fn keep(exporter: &[u8; 16], rate: u32) -> bool {
    if rate <= 1 {
        return true;
    }
    let Some(state) = FLOW_PER_EXPORTER.get_ptr_mut(exporter) else {
        // First datagram from this exporter (or evicted): keep it, and the next
        // N - 1 are sampled out. If the insert fails the next one is kept too,
        // which errs on the side of keeping data.
        insert(exporter, 1, 0);
        return true;
    };
    // SAFETY: the pointer comes from a successful lookup in a per-CPU map, so it points
    // at this CPU's entry, which only this program on this CPU writes (userspace only
    // reads it).
    unsafe {
        let current = (*state).sample_position;
        // `>=` rather than `==`: the rate may have been lowered since the last packet.
        (*state).sample_position = if current + 1 >= rate { 0 } else { current + 1 };
        if current != 0 {
            (*state).sampled_out += 1;
        }
        current == 0
    }
}

/// Counts a datagram from `exporter` lost because this CPU's ring was full.
#[inline(always)]
pub(crate) fn ring_full(exporter: &[u8; 16]) {
    match FLOW_PER_EXPORTER.get_ptr_mut(exporter) {
        // SAFETY: as in `keep`.
        Some(state) => unsafe { (*state).ring_full += 1 },
        // A new entry starts a sampling cycle at 0, so the next datagram is kept.
        None => insert(exporter, 0, 1),
    }
}

#[inline(always)]
fn insert(exporter: &[u8; 16], sample_position: u32, ring_full: u64) {
    let fresh = ExporterState {
        sample_position,
        _pad: 0,
        sampled_out: 0,
        ring_full,
    };
    // A failed insert (map full of entries other CPUs hold) loses one count at most;
    // the global counters still have the datagram.
    let _ = FLOW_PER_EXPORTER.insert(exporter, fresh, 0);
}
