//! The FlowLens XDP program: the kernel half of the fast path.
//!
//! It parses Ethernet (up to two VLAN tags), IPv4 or IPv6 and UDP ([`parse`]); when the
//! UDP destination port is one userspace put into `FLOW_PORTS` (and, with
//! `Config::FLAG_FILTER_EXPORTERS`, the source is inside a `FLOW_EXPORTERS` prefix) it
//! pre-samples 1:N per exporter ([`per_exporter`]), copies a `RingHeader` and the UDP payload
//! into the receiving CPU's ring buffer and drops the packet, or passes it too in mirror
//! mode ([`steer`]). Everything else, and every packet the program has the slightest
//! doubt about, is passed to the stack untouched, so the host's own traffic is never
//! harmed.
//!
//! This file holds only the maps and the entry point. Every packet lands in exactly one
//! of the counters `Steered`, `Passed`, `SampledOut` or `RingFull`, so
//! `Seen = Steered + Passed + SampledOut + RingFull` (`TooBig` and `LeaseExpired` are
//! subsets of `Passed`).
//!
//! Built for `bpfel-unknown-none` by `cargo xtask build-ebpf` (nightly, `build-std`,
//! bpf-linker; see this crate's rust-toolchain.toml), never by the stable workspace
//! build, which excludes this crate.
#![no_std]
#![no_main]
#![allow(
    clippy::inline_always,
    reason = "BPF: one flat function is what the verifier sees best; no bpf-to-bpf calls"
)]

mod parse;
mod per_exporter;
mod report;
mod steer;

use aya_ebpf::{
    bindings::xdp_action,
    btf_maps::{Array, ArrayOfMaps, HashMap, LpmTrie, LruPerCpuHashMap, PerCpuArray, RingBuf},
    macros::{btf_map, xdp},
    programs::XdpContext,
};
use flowlens_ebpf_common::{Config, Counter, ExporterState, MAX_PAYLOAD, PROGRAM_NAME, RingHeader};

/// Entries of `FLOW_RINGS`: the highest CPU id the program can steer from, plus one.
/// Userspace creates one ring per possible CPU and fails loudly if a machine has more.
const MAX_CPUS: usize = 1024;

/// Size of the inner ring template in `FLOW_RINGS`. Only a template: the kernel does
/// not compare a ring buffer's size with it, so userspace creates rings of any size.
/// One page, the smallest valid ring.
const RING_TEMPLATE_BYTES: usize = 4096;

/// Capacity of `FLOW_PORTS`: a handful of collector ports in practice.
const MAX_PORTS: usize = 64;

/// Capacity of `FLOW_EXPORTERS`.
const MAX_EXPORTER_PREFIXES: usize = 4096;

/// Exporters tracked in `FLOW_PER_EXPORTER`. LRU: a forgotten exporter restarts its
/// cycle at zero, which only shifts which packet of N it keeps, and its counts at zero,
/// which userspace takes as a fresh count.
const MAX_TRACKED_EXPORTERS: usize = 16384;

/// One ring per CPU, filled by userspace (`FLOW_RINGS[cpu]`): per-CPU rings never
/// contend between CPUs, and userspace reads each with its own consumer position.
#[btf_map]
static FLOW_RINGS: ArrayOfMaps<RingBuf<u8, RING_TEMPLATE_BYTES>, MAX_CPUS> = ArrayOfMaps::new();

/// UDP destination ports to steer (host byte order) -> `PortKind`.
#[btf_map]
static FLOW_PORTS: HashMap<u16, u8, MAX_PORTS> = HashMap::new();

/// Exporter prefixes allowed when `Config::FLAG_FILTER_EXPORTERS` is set; IPv4 as
/// IPv4-mapped IPv6, so one trie serves both families.
#[btf_map]
static FLOW_EXPORTERS: LpmTrie<[u8; 16], u8, MAX_EXPORTER_PREFIXES> = LpmTrie::new();

/// Runtime settings, one entry written by userspace.
#[btf_map]
static FLOW_CONFIG: Array<Config, 1> = Array::new();

/// Per-CPU counters indexed by `Counter`; userspace sums the CPUs.
#[btf_map]
static FLOW_COUNTERS: PerCpuArray<u64, { Counter::COUNT as usize }> = PerCpuArray::new();

/// Per-exporter, per-CPU state: the 1:N sampling cycle and the datagrams consumed
/// without delivery, which userspace reads for the per-exporter accounting.
#[btf_map]
static FLOW_PER_EXPORTER: LruPerCpuHashMap<[u8; 16], ExporterState, MAX_TRACKED_EXPORTERS> =
    LruPerCpuHashMap::new();

/// What one ring record holds: the header, then up to `MAX_PAYLOAD` bytes.
#[repr(C)]
pub(crate) struct Record {
    pub(crate) header: RingHeader,
    pub(crate) payload: [u8; MAX_PAYLOAD],
}

/// Per-CPU scratch space where a record is assembled before `bpf_ringbuf_output`
/// copies exactly `header + payload_len` bytes of it: compact records without a
/// variable-size `bpf_ringbuf_reserve`, which the verifier rejects (internal).
#[btf_map]
static FLOW_SCRATCH: PerCpuArray<Record, 1> = PerCpuArray::new();

/// The entry point. Its name is the ABI check: the loader looks for
/// `flowlens_ebpf_common::PROGRAM_NAME` (asserted equal below).
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature #[xdp] requires"
)]
fn flowlens_xdp_v3(ctx: XdpContext) -> u32 {
    steer::try_steer(&ctx).unwrap_or(xdp_action::XDP_PASS)
}

/// `const` string equality (`==` on `str` is not `const`).
const fn same_name(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

// The function above must carry the name the loader looks for: bump both together.
const _: () = assert!(same_name(PROGRAM_NAME, "flowlens_xdp_v3"));

/// Adds one to a per-CPU counter. Per-CPU, so no atomics: XDP runs with preemption
/// disabled and one CPU never touches another CPU's slot.
#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(slot) = FLOW_COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: the pointer comes from a successful map lookup, so it points at this
        // CPU's u64 slot, which nothing else writes while this program runs.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // verifier: unreachable in a loaded program (the verifier rejects any path that
    // could get here), but `no_std` needs a handler.
    loop {}
}
