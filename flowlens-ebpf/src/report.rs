//! The program's rare events, reported through aya-log: configuration or ABI mismatch,
//! setup problems (no ring for a CPU), and datagrams to a flow port it gave up on.
//!
//! Off by default. The level is aya-log's `AYA_LOG_LEVEL`, a global in `.rodata` that
//! the loader sets before the program is verified (`xdp.log_level`); the verifier
//! treats frozen read-only data as constants, so with logging off every branch below
//! is dead code it removes: the program that runs has no trace of it. Each call site
//! checks [`allowed`] first, so not even the rate limiter's map lookup runs when off.
//!
//! Every event is also counted (`Passed`, `TooBig`, ...): the log says *why* and *from
//! whom*, at most once a second per event and CPU, so a flood of odd packets cannot
//! fill the log ring or the daemon's log.

use aya_ebpf::{btf_maps::PerCpuArray, helpers::bpf_ktime_get_ns, macros::btf_map};
pub(crate) use aya_log_ebpf::macro_support::Level;

/// One rate-limit slot per event kind.
#[derive(Clone, Copy)]
#[repr(u32)]
pub(crate) enum Event {
    /// `FLOW_CONFIG` not written yet, or written by a daemon of another ABI.
    Config = 0,
    /// No ring for this CPU, or the payload could not be loaded.
    Setup = 1,
    /// A datagram over `MAX_PAYLOAD`.
    TooBig = 2,
    /// An IPv4 fragment of a datagram to a flow port.
    Fragment = 3,
    /// A UDP length that does not fit the IP packet, to a flow port.
    BadLength = 4,
}

const EVENTS: usize = 5;

/// Nanoseconds between two records of one event on one CPU.
const INTERVAL_NS: u64 = 1_000_000_000;

/// When each event was last reported on this CPU (`bpf_ktime_get_ns`).
#[btf_map]
static FLOW_LOG_LAST: PerCpuArray<u64, EVENTS> = PerCpuArray::new();

/// Whether to report `event` at `level` now: the level is enabled (a constant to the
/// verifier) and this CPU has not reported the event in the last second.
#[inline(always)]
pub(crate) fn allowed(level: Level, event: Event) -> bool {
    enabled(level) && due(event)
}

/// Whether aya-log records at `level` are wanted. A constant once loaded: call it
/// before anything else on a reporting path so the verifier drops the whole path.
#[inline(always)]
pub(crate) fn enabled(level: Level) -> bool {
    aya_log_ebpf::macro_support::level_enabled(level)
}

/// Whether this CPU may report `event` now (at most once a second); takes the slot.
#[inline(always)]
pub(crate) fn due(event: Event) -> bool {
    let Some(last) = FLOW_LOG_LAST.get_ptr_mut(event as u32) else {
        return false;
    };
    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the pointer comes from a successful lookup of this CPU's slot, which
    // nothing else writes while this program runs on this CPU.
    unsafe {
        if *last != 0 && now.wrapping_sub(*last) < INTERVAL_NS {
            return false;
        }
        *last = now;
    }
    true
}
