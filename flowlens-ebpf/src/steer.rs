//! Is this NetFlow/IPFIX/sFlow? If so, copy it into this CPU's ring.
//!
//! The decision is by UDP destination port (`FLOW_PORTS`) and optionally by exporter
//! prefix (`FLOW_EXPORTERS`), never by payload: protocol detection belongs to the
//! daemon's decoders. A steered datagram ends as exactly one of `Steered` (in a ring),
//! `SampledOut` or `RingFull`, and is dropped, or also passed to the stack in mirror
//! mode; every other packet is `Passed` (`Err(Pass)`).

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, xdp_action},
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_ringbuf_discard, bpf_ringbuf_output,
        bpf_ringbuf_query, bpf_ringbuf_reserve, bpf_ringbuf_submit, bpf_xdp_load_bytes,
    },
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use aya_log_ebpf::{debug, error, warn};
use flowlens_ebpf_common::{ABI_VERSION, Config, Counter, MAX_PAYLOAD, RingHeader};

use crate::report::{self, Event, Level};
use crate::{
    FLOW_CONFIG, FLOW_EXPORTERS, FLOW_PORTS, FLOW_RINGS, FLOW_SCRATCH, count, parse, per_exporter,
};

/// `MAX_PAYLOAD` as aya-log formats it (it has no `usize` argument).
#[expect(clippy::cast_possible_truncation, reason = "9000")]
const MAX_PAYLOAD_U32: u32 = MAX_PAYLOAD as u32;

/// Why a steered datagram did not reach a ring.
enum CopyError {
    /// `bpf_ringbuf_output` failed: the ring is full (userspace is behind).
    RingFull,
    /// No ring for this CPU, no scratch slot, or the payload could not be loaded:
    /// a setup problem or a packet we misjudged, so the stack gets it.
    Unavailable,
}

/// Not ours, or in doubt: the entry point passes the packet (and it was counted).
pub(crate) struct Pass;

/// Decides the packet's fate and does the accounting. `Err(Pass)` (any `?` below) is
/// "give it to the stack": the entry point turns it into `XDP_PASS`.
#[inline(always)]
pub(crate) fn try_steer(ctx: &XdpContext) -> Result<u32, Pass> {
    count(Counter::Seen);
    let verdict = steer(ctx);
    if verdict.is_err() {
        count(Counter::Passed);
    }
    verdict
}

#[inline(always)]
fn steer(ctx: &XdpContext) -> Result<u32, Pass> {
    let cfg = FLOW_CONFIG.get(0).copied().ok_or(Pass)?;
    if cfg.abi != ABI_VERSION {
        if report::allowed(Level::Error, Event::Config) {
            error!(
                ctx,
                "FLOW_CONFIG is for ABI {} (0: not written yet), this program is ABI {}: passing every packet",
                cfg.abi,
                ABI_VERSION
            );
        }
        return Err(Pass);
    }
    let dg = parse::udp(ctx).ok_or(Pass)?;
    FLOW_PORTS.get_ptr(dg.dst_port).ok_or(Pass)?;
    if cfg.flags & Config::FLAG_FILTER_EXPORTERS != 0 {
        FLOW_EXPORTERS
            .get(&Key::new(128, dg.src_addr))
            .ok_or(Pass)?;
    }
    if dg.payload_len == 0 {
        // Nothing to collect; the stack can have it.
        return Err(Pass);
    }
    if dg.payload_len > MAX_PAYLOAD {
        count(Counter::TooBig);
        if report::allowed(Level::Debug, Event::TooBig) {
            #[expect(clippy::cast_possible_truncation, reason = "a UDP length, < 64 KiB")]
            let len = dg.payload_len as u32;
            debug!(
                ctx,
                "a datagram of {} bytes from {:i} to port {} is over the ring's limit of {}: passed to the stack",
                len,
                dg.src_addr,
                dg.dst_port,
                MAX_PAYLOAD_U32
            );
        }
        return Err(Pass);
    }

    // Mirror mode: a collector beside us still gets every packet.
    let consumed = if cfg.flags & Config::FLAG_MIRROR != 0 {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    };

    // SAFETY: a helper without arguments or side effects.
    let now = unsafe { bpf_ktime_get_ns() };
    if cfg.lease_until_ns != 0 && now > cfg.lease_until_ns {
        // A pinned program whose daemon stopped renewing its lease: nobody reads the
        // rings, so the stack (a successor's sockets) gets the datagram.
        count(Counter::LeaseExpired);
        return Err(Pass);
    }

    if !per_exporter::keep(&dg.src_addr, cfg.sample_rate) {
        count(Counter::SampledOut);
        return Ok(consumed);
    }

    match copy_to_ring(ctx, &dg, &cfg, now) {
        Ok(()) => {
            count(Counter::Steered);
            Ok(consumed)
        }
        Err(CopyError::RingFull) => {
            count(Counter::RingFull);
            per_exporter::ring_full(&dg.src_addr);
            Ok(consumed)
        }
        Err(CopyError::Unavailable) => {
            if report::allowed(Level::Warn, Event::Setup) {
                // SAFETY: a helper without arguments or side effects.
                let cpu = unsafe { bpf_get_smp_processor_id() };
                warn!(
                    ctx,
                    "no ring for CPU {}, or the payload of a datagram from {:i} could not be loaded: passed to the stack",
                    cpu,
                    dg.src_addr
                );
            }
            Err(Pass)
        }
    }
}

/// Payload bytes of a ring record reserved in place: a whole datagram of a 1500-byte
/// MTU (IPv4). Most exporters send these, and loading them straight into the ring
/// saves the copy through the scratch record (see [`copy_to_ring`]).
const RESERVED_PAYLOAD: usize = 1472;

/// One ring record reserved in place (`bpf_ringbuf_reserve` needs a constant size).
#[repr(C)]
struct ReservedRecord {
    header: RingHeader,
    payload: [u8; RESERVED_PAYLOAD],
}

/// Writes one record (header, then the UDP payload) into this CPU's ring. Datagrams of
/// up to `RESERVED_PAYLOAD` bytes are loaded straight into a fixed-size reserved record
/// (the reader goes by `payload_len`; the tail of the slot is unused); bigger ones are
/// assembled in this CPU's scratch record, of which `bpf_ringbuf_output` copies
/// exactly `header + payload_len` bytes: compact records without a variable-size
/// `bpf_ringbuf_reserve`, which the verifier rejects.
#[inline(always)]
fn copy_to_ring(
    ctx: &XdpContext,
    dg: &parse::Udp,
    cfg: &Config,
    now: u64,
) -> Result<(), CopyError> {
    // SAFETY: a helper without arguments or side effects.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let ring = FLOW_RINGS.get(cpu).ok_or(CopyError::Unavailable)?;
    let ring_ptr: *mut c_void = core::ptr::from_ref(ring).cast_mut().cast();

    let len = dg.payload_len;
    // verifier: `bpf_xdp_load_bytes` needs the length proven in [1, destination size]
    // (else "invalid zero-sized read" or "invalid access to ..."); try_steer has
    // checked it already, but the compiler may not keep that knowledge in a register.
    if len == 0 || len > MAX_PAYLOAD {
        return Err(CopyError::Unavailable);
    }
    #[expect(clippy::cast_possible_truncation, reason = "len <= MAX_PAYLOAD (9000)")]
    let len16 = len as u16;
    let header = RingHeader {
        ts_ns: now,
        src_addr: dg.src_addr,
        // SAFETY: `ctx.ctx` is the kernel's xdp_md for this run.
        ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
        // SAFETY: as above.
        rx_queue: unsafe { (*ctx.ctx).rx_queue_index },
        src_port: dg.src_port,
        dst_port: dg.dst_port,
        payload_len: len16,
        family: dg.family,
        _pad0: 0,
        sample_rate: cfg.sample_rate.max(1),
        _pad1: 0,
    };
    #[expect(clippy::cast_possible_truncation, reason = "offsets within a frame")]
    let offset = dg.payload_offset as u32;

    if len <= RESERVED_PAYLOAD {
        let size = size_of::<ReservedRecord>() as u64;
        let flags = wakeup_flags(ring_ptr, size, cfg);
        // SAFETY: `ring_ptr` is a ring buffer map; the size is a constant.
        let rec: *mut ReservedRecord = unsafe { bpf_ringbuf_reserve(ring_ptr, size, 0) }.cast();
        if rec.is_null() {
            return Err(CopyError::RingFull);
        }
        // SAFETY: `rec` is a reserved record of `size` bytes that only this run owns
        // until it is submitted or discarded below; `len` bytes fit in its payload
        // (checked above) and the helper checks the packet side itself.
        unsafe {
            (*rec).header = header;
            let loaded = bpf_xdp_load_bytes(
                ctx.ctx,
                offset,
                (*rec).payload.as_mut_ptr().cast(),
                u32::from(len16),
            );
            if loaded != 0 {
                bpf_ringbuf_discard(rec.cast(), u64::from(BPF_RB_NO_WAKEUP));
                return Err(CopyError::Unavailable);
            }
            bpf_ringbuf_submit(rec.cast(), flags);
        }
        return Ok(());
    }

    let rec = FLOW_SCRATCH.get_ptr_mut(0).ok_or(CopyError::Unavailable)?;
    // SAFETY: `rec` comes from a successful lookup of this CPU's scratch slot, which
    // only this program on this CPU touches, and is valid for the whole run; `len`
    // bytes fit in its payload (checked above); the helper checks the packet side.
    let loaded = unsafe {
        (*rec).header = header;
        bpf_xdp_load_bytes(
            ctx.ctx,
            offset,
            (*rec).payload.as_mut_ptr().cast(),
            u32::from(len16),
        )
    };
    if loaded != 0 {
        return Err(CopyError::Unavailable);
    }
    let size = (size_of::<RingHeader>() + len) as u64;
    let flags = wakeup_flags(ring_ptr, size, cfg);
    // SAFETY: `rec` holds `size` initialised bytes (header + `len` loaded bytes) and
    // `ring_ptr` is a ring buffer map.
    let ret = unsafe { bpf_ringbuf_output(ring_ptr, rec.cast(), size, flags) };
    if ret < 0 {
        return Err(CopyError::RingFull);
    }
    Ok(())
}

/// Batched notifications: without a threshold every record wakes the reader (the
/// kernel's default), which halves throughput; userspace drains on a ~1 ms timer too,
/// so a trickle below the threshold is still read promptly. Only the record that
/// crosses the threshold forces a wakeup: forcing one for every record while the
/// reader is on its way cost ~300 ns a datagram (`bpf_stats`; README, Ingest), a third
/// of the program's time.
#[inline(always)]
fn wakeup_flags(ring_ptr: *mut c_void, size: u64, cfg: &Config) -> u64 {
    if cfg.wakeup_bytes == 0 {
        return 0;
    }
    // SAFETY: `ring_ptr` is a ring buffer map returned by the outer lookup.
    let waiting = unsafe { bpf_ringbuf_query(ring_ptr, u64::from(BPF_RB_AVAIL_DATA)) };
    let threshold = u64::from(cfg.wakeup_bytes);
    if waiting < threshold && waiting + size >= threshold {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}
