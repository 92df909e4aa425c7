//! Types shared by the FlowLens XDP program (`flowlens-ebpf`) and the daemon's loader.
//!
//! Everything here crosses the kernel/user boundary, so every type is `#[repr(C)]` with
//! explicit padding, a compile-time size assert, and no `bool`. Names of maps and the
//! program live here as constants so the two sides cannot drift. [`ABI_VERSION`] is
//! part of the program's name ([`PROGRAM_NAME`]): a daemon refuses an object built from
//! other sources because it cannot find the program it expects.
//!
//! Data flow: the program copies a [`RingHeader`] followed by the UDP payload into the
//! ring of the CPU that received the packet (`FLOW_RINGS[cpu]`); userspace fills
//! `FLOW_PORTS` and `CONFIG`, reads `COUNTERS` (indexed by [`Counter`]).
//!
//! [`PINNED_MAPS`] are the maps a daemon pins (with the program's link) to hand the
//! running program, its rings and their contents to the next daemon.
#![no_std]
// Padding fields are public so both sides can build the structs with struct literals
// (no constructor to keep in sync); the leading underscore says "always zero".
#![allow(
    clippy::pub_underscore_fields,
    reason = "explicit ABI padding, always zero"
)]

/// ABI version of everything in this crate; bumped whenever a shared type changes.
pub const ABI_VERSION: u32 = 3;

/// The XDP entry point's name (includes the ABI version on purpose).
pub const PROGRAM_NAME: &str = "flowlens_xdp_v3";

/// `ArrayOfMaps` of per-CPU ring buffers, indexed by CPU id.
pub const MAP_RINGS: &str = "FLOW_RINGS";
/// `HashMap<u16, u8>`: UDP destination ports to steer (host byte order) -> [`PortKind`].
pub const MAP_PORTS: &str = "FLOW_PORTS";
/// `LpmTrie<[u8; 16], u8>`: exporter prefixes allowed when
/// [`Config::FLAG_FILTER_EXPORTERS`] is set (IPv4 as IPv4-mapped IPv6).
pub const MAP_EXPORTERS: &str = "FLOW_EXPORTERS";
/// `Array<Config>` with one entry.
pub const MAP_CONFIG: &str = "FLOW_CONFIG";
/// `PerCpuArray<u64>` indexed by [`Counter`].
pub const MAP_COUNTERS: &str = "FLOW_COUNTERS";
/// `LruPerCpuHashMap<[u8; 16], ExporterState>`: per-exporter state (IPv4 as
/// IPv4-mapped IPv6); userspace reads the `sampled_out` and `ring_full` counts.
pub const MAP_PER_EXPORTER: &str = "FLOW_PER_EXPORTER";

/// The maps pinned beside the program's link when it is kept attached across
/// restarts: what the next daemon's program instance must share with this one (the
/// rings and their contents, the settings, the counts). Scratch space and the log ring
/// stay per instance.
pub const PINNED_MAPS: [&str; 6] = [
    MAP_RINGS,
    MAP_PORTS,
    MAP_EXPORTERS,
    MAP_CONFIG,
    MAP_COUNTERS,
    MAP_PER_EXPORTER,
];

/// Largest UDP payload copied into a ring; bigger datagrams are passed to the stack
/// (the socket path still sees them). 9000 covers jumbo-frame exporters.
pub const MAX_PAYLOAD: usize = 9000;

/// What userspace expects on a steered port (a hint; the daemon detects the protocol
/// from the payload anyway).
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Netflow = 1,
    Ipfix = 2,
    Sflow = 3,
}

/// Runtime settings userspace writes into `FLOW_CONFIG[0]`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Config {
    /// Keep 1 of N steered packets per exporter (1 = keep all).
    pub sample_rate: u32,
    /// Bit set of `FLAG_*`.
    pub flags: u32,
    /// Force a ring wakeup once this many bytes are waiting (batched notifications).
    pub wakeup_bytes: u32,
    /// [`ABI_VERSION`] as the writer knows it. The program passes everything while it
    /// differs from its own: zero means userspace has not configured it yet, anything
    /// else a daemon of another version wrote the map (reported through aya-log).
    pub abi: u32,
    /// With a pinned program (kept attached across daemon restarts): the
    /// `CLOCK_MONOTONIC` time (ns) until which a daemon is reading the rings, renewed
    /// by it every second. Past it the program passes flow datagrams to the stack (a
    /// successor's sockets) instead of filling rings nobody reads. 0: no lease (the
    /// program lives only as long as its daemon).
    pub lease_until_ns: u64,
    /// Userspace bookkeeping the program ignores: the size of the rings in
    /// `FLOW_RINGS`, so that a successor adopts them only when its own are the same.
    pub ring_size_bytes: u32,
    pub _pad: u32,
}

impl Config {
    /// Also pass steered packets to the stack (run beside another collector).
    pub const FLAG_MIRROR: u32 = 1;
    /// Only steer packets whose source is in `FLOW_EXPORTERS`.
    pub const FLAG_FILTER_EXPORTERS: u32 = 2;
}

/// Per-CPU counters, indices into `FLOW_COUNTERS`.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Every packet the program ran on.
    Seen = 0,
    /// Flow datagrams copied into a ring.
    Steered = 1,
    /// Packets passed to the stack (not flow traffic, or any doubt).
    Passed = 2,
    /// Flow datagrams dropped by 1:N pre-sampling.
    SampledOut = 3,
    /// Flow datagrams lost because the ring was full.
    RingFull = 4,
    /// Flow datagrams passed because they exceed [`MAX_PAYLOAD`].
    TooBig = 5,
    /// Flow datagrams passed because the lease expired (`Config::lease_until_ns`): no
    /// daemon reads the rings of this pinned program.
    LeaseExpired = 6,
}

impl Counter {
    pub const COUNT: u32 = 7;
}

/// One exporter's state on one CPU (`FLOW_PER_EXPORTER`). The program writes it;
/// userspace sums the counts over CPUs for the per-exporter metrics. An entry exists
/// only once there was something to record (a datagram seen while N > 1, or a full
/// ring), so most exporters have none while the collector keeps up.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExporterState {
    /// Position in the 1:N cycle: the datagram at position 0 is kept.
    pub sample_position: u32,
    pub _pad: u32,
    /// Datagrams dropped by 1:N pre-sampling (until the LRU evicts the entry).
    pub sampled_out: u64,
    /// Datagrams lost because the ring was full (until the LRU evicts the entry).
    pub ring_full: u64,
}

/// Header written before each payload in a ring. Addresses are network byte order;
/// IPv4 exporters are IPv4-mapped IPv6 (`::ffff:a.b.c.d`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RingHeader {
    /// `bpf_ktime_get_ns()` when the packet was seen (`CLOCK_MONOTONIC`).
    pub ts_ns: u64,
    pub src_addr: [u8; 16],
    pub ifindex: u32,
    pub rx_queue: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes of payload following this header.
    pub payload_len: u16,
    /// 4 or 6.
    pub family: u8,
    pub _pad0: u8,
    /// The 1:N pre-sampling rate in force when this packet was kept.
    pub sample_rate: u32,
    pub _pad1: u32,
}

const _: () = assert!(size_of::<RingHeader>() == 48);
const _: () = assert!(size_of::<Config>() == 32);
const _: () = assert!(size_of::<ExporterState>() == 24);

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), contain only integers and arrays of integers, and have
    // explicit padding fields, so every bit pattern is valid and there are no holes.
    #[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    unsafe impl aya::Pod for super::Config {}
    // SAFETY: as above.
    #[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    unsafe impl aya::Pod for super::RingHeader {}
    // SAFETY: as above.
    #[allow(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    unsafe impl aya::Pod for super::ExporterState {}
}
