//! EDGE: loading, configuring and attaching the XDP program (the kernel half of the
//! fast path lives in the `flowlens-ebpf` crate).
//!
//! [`XdpHandle::load`] reads the BPF object built by `cargo xtask build-ebpf` from a
//! path (see [`default_object_path`]), checks that it contains
//! [`PROGRAM_NAME`] (which embeds the ABI version, so an object built from other
//! sources is refused with [`XdpError::AbiMismatch`] instead of misreading the rings),
//! fills the port, exporter and config maps, creates the per-CPU rings
//! ([`super::ring::create_rings`]) and attaches to every interface, native (driver)
//! mode first and generic (SKB) mode when the driver has no XDP support. The rings are
//! handed to [`super::ring::RingReader`] through [`XdpHandle::take_rings`].
//!
//! While running, [`XdpHandle::set_sample_rate`] is the pressure knob (1:N per exporter
//! in the kernel) and [`XdpHandle::counters`] sums the program's per-CPU counters.
//! Dropping the handle (or [`XdpHandle::detach`]) detaches from every interface; the
//! kernel also detaches when the process dies, because attachments are BPF links owned
//! by file descriptors.
//!
//! Nothing here needs `unsafe`: aya wraps the bpf(2) and netlink calls.

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, PerCpuHashMap};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::{ProgramError, Xdp, XdpMode, xdp::XdpLink, xdp::XdpLinkId};
use aya::{Ebpf, EbpfError, EbpfLoader};
use flowlens_ebpf_common::{
    ABI_VERSION, Config, Counter, ExporterState, MAP_CONFIG, MAP_COUNTERS, MAP_EXPORTERS,
    MAP_PER_EXPORTER, MAP_PORTS, PINNED_MAPS, PROGRAM_NAME, PortKind,
};

use super::datagram::exporter_ip;
use super::pin::{PinDir, Previous};
use super::ring::{self, CpuRing, RingError};

/// Environment variable naming the BPF object (over the built-in default path).
pub const OBJECT_ENV: &str = "FLOWLENS_EBPF_OBJECT";

/// Where `cargo xtask build-ebpf` puts the object, relative to the target directory.
const OBJECT_IN_TARGET: &str = "bpfel-unknown-none/release/flowlens-ebpf";

/// Default `Config::wakeup_bytes`: 256 `KiB` waiting in a ring forces a wakeup. Measured
/// on the veth bench (TOOLCHAIN.md): batched wakeups roughly double throughput over a
/// wakeup per record; the ~1 ms drain timer covers slower traffic.
pub const DEFAULT_WAKEUP_BYTES: u32 = 256 * 1024;

/// Default lease of a pinned program: as long as systemd gives a stopping daemon
/// (`TimeoutStopSec=60s`), so a restart that flushes the graph still finds the program
/// steering into the rings.
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_mins(1);

/// Default ring size per CPU: 8 `MiB` holds ~60 k small datagrams, tens of milliseconds
/// of a saturated core, enough to ride out a scheduling hiccup of the reader.
pub const DEFAULT_RING_SIZE_BYTES: u32 = 8 * 1024 * 1024;

/// The object path when none is configured: `$FLOWLENS_EBPF_OBJECT` if set, else the
/// first existing `<target>/bpfel-unknown-none/release/flowlens-ebpf` found beside the
/// running executable (walking up from it, so `target/release/flowlens-daemon` and test
/// binaries in `target/debug/deps` both find it), else the workspace's `target/` as
/// known at build time (`CARGO_MANIFEST_DIR/../target`), which also serves binaries
/// built into a different `CARGO_TARGET_DIR`.
pub fn default_object_path() -> PathBuf {
    if let Some(p) = std::env::var_os(OBJECT_ENV) {
        return PathBuf::from(p);
    }
    let workspace_target = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join(OBJECT_IN_TARGET);
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            for candidate in [
                dir.join(OBJECT_IN_TARGET),
                dir.join("target").join(OBJECT_IN_TARGET),
            ] {
                if candidate.is_file() {
                    return candidate;
                }
            }
        }
    }
    workspace_target
}

/// An exporter prefix for `FLOW_EXPORTERS`: `192.0.2.0/24`, `2001:db8::/32`, or a bare
/// address (a host route).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExporterPrefix {
    pub addr: IpAddr,
    pub len: u8,
}

/// Why an exporter prefix did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("exporter prefix {input:?}: {reason}")]
pub struct PrefixError {
    pub input: String,
    pub reason: &'static str,
}

impl FromStr for ExporterPrefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| PrefixError {
            input: s.to_owned(),
            reason,
        };
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| err("not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            Some(l) => l
                .trim()
                .parse::<u8>()
                .map_err(|_| err("prefix length is not a number"))?,
            None => max,
        };
        if len > max {
            return Err(err("prefix length too long for the address family"));
        }
        Ok(Self { addr, len })
    }
}

impl ExporterPrefix {
    /// The LPM key: IPv4 as IPv4-mapped IPv6 (`::ffff:0:0/96` + the IPv4 prefix), the
    /// program's single address format.
    fn key(self) -> Key<[u8; 16]> {
        match self.addr {
            IpAddr::V4(a) => Key::new(96 + u32::from(self.len), a.to_ipv6_mapped().octets()),
            IpAddr::V6(a) => Key::new(u32::from(self.len), a.octets()),
        }
    }
}

/// Everything [`XdpHandle::load`] needs.
#[derive(Debug, Clone)]
pub struct XdpOptions {
    /// The BPF object (`xdp.object_path`, default [`default_object_path`]).
    pub object_path: PathBuf,
    /// Interfaces to attach to, by name, in the caller's network namespace.
    pub interfaces: Vec<String>,
    /// UDP destination ports to steer, with the protocol expected there (a hint).
    pub ports: Vec<(u16, PortKind)>,
    /// When non-empty, only datagrams from these prefixes are steered.
    pub exporter_prefixes: Vec<ExporterPrefix>,
    /// Initial 1:N pre-sampling rate (1 = keep everything).
    pub sample_rate: u32,
    /// Also pass steered datagrams to the stack (run beside another collector).
    pub mirror: bool,
    /// Bytes waiting in a ring that force a reader wakeup; 0 = wake on every record.
    pub wakeup_bytes: u32,
    /// Size of each per-CPU ring (a power of two, at least 4096).
    pub ring_size_bytes: u32,
    /// Try native (driver) mode before generic mode. Tests turn it off to exercise
    /// the generic path.
    pub try_native: bool,
    /// What the program reports through aya-log ([`XdpHandle::drain_log`]).
    pub log_level: XdpLogLevel,
    /// A bpffs directory where the program's links and shared maps are pinned, to be
    /// taken over by the next daemon ([`super::pin`]); `None`: the program lives as
    /// long as this process.
    pub pin_dir: Option<PathBuf>,
    /// How long a pinned program keeps steering into its rings after the daemon stopped
    /// renewing its lease (then it passes flow datagrams to the stack).
    pub lease: std::time::Duration,
}

impl XdpOptions {
    /// The defaults: NetFlow 2055, IPFIX 4739, sFlow 6343, every exporter, no sampling,
    /// no mirroring, batched wakeups.
    pub fn new(object_path: PathBuf, interfaces: Vec<String>) -> Self {
        Self {
            object_path,
            interfaces,
            ports: Self::default_ports(),
            exporter_prefixes: Vec::new(),
            sample_rate: 1,
            mirror: false,
            wakeup_bytes: DEFAULT_WAKEUP_BYTES,
            ring_size_bytes: DEFAULT_RING_SIZE_BYTES,
            try_native: true,
            log_level: XdpLogLevel::Off,
            pin_dir: None,
            lease: DEFAULT_LEASE,
        }
    }

    /// IANA's ports: NetFlow 2055, IPFIX 4739, sFlow 6343.
    pub fn default_ports() -> Vec<(u16, PortKind)> {
        vec![
            (2055, PortKind::Netflow),
            (4739, PortKind::Ipfix),
            (6343, PortKind::Sflow),
        ]
    }

    fn config(&self) -> Config {
        let mut flags = 0;
        if self.mirror {
            flags |= Config::FLAG_MIRROR;
        }
        if !self.exporter_prefixes.is_empty() {
            flags |= Config::FLAG_FILTER_EXPORTERS;
        }
        Config {
            sample_rate: self.sample_rate.max(1),
            flags,
            // A quarter of the ring at most: a threshold the ring cannot hold would
            // never force a wakeup, and a small ring would fill between timer drains.
            wakeup_bytes: self.wakeup_bytes.min(self.ring_size_bytes / 4),
            abi: ABI_VERSION,
            lease_until_ns: 0,
            ring_size_bytes: self.ring_size_bytes,
            _pad: 0,
        }
    }
}

/// Why the fast path could not start or be controlled. Callers fall back to UDP
/// sockets on any of these at startup; none is worth retrying as is.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    #[error("reading BPF object {path}: {source} (build it with `cargo xtask build-ebpf`)")]
    ReadObject { path: PathBuf, source: io::Error },
    #[error("loading BPF object {path}: {source}")]
    Load {
        path: PathBuf,
        source: Box<EbpfError>,
    },
    #[error(
        "{path} has no XDP program {expected} (it has: {found}): it was built from other \
         FlowLens sources than this daemon (ABI mismatch); rebuild it with \
         `cargo xtask build-ebpf`"
    )]
    AbiMismatch {
        path: PathBuf,
        expected: &'static str,
        found: String,
    },
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: MapError,
    },
    #[error("reading the program's aya-log ring: {0}")]
    Log(String),
    #[error("pinning {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("the BPF object has no map {0}")]
    MissingMap(&'static str),
    #[error("loading {PROGRAM_NAME} into the kernel: {0}")]
    Program(Box<ProgramError>),
    #[error(transparent)]
    Ring(#[from] RingError),
    #[error("attaching XDP to {iface}: {source}")]
    Attach {
        iface: String,
        source: Box<ProgramError>,
    },
    #[error("detaching XDP from {iface}: {source}")]
    Detach {
        iface: String,
        source: Box<ProgramError>,
    },
}

impl XdpError {
    /// A bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ReadObject { .. } => "object_missing",
            Self::Load { .. } => "object_invalid",
            Self::AbiMismatch { .. } => "abi_mismatch",
            Self::Map { .. } | Self::MissingMap(_) | Self::Log(_) => "map",
            Self::Pin { .. } => "pin",
            Self::Program(_) => "verifier",
            Self::Ring(e) => e.reason(),
            Self::Attach { .. } => "attach",
            Self::Detach { .. } => "detach",
        }
    }
}

/// How the program ended up attached to an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver (`ip link` shows `xdp`/`xdpdrv`).
    Native,
    /// In the generic receive path (`xdpgeneric`), for drivers without XDP support.
    Generic,
    /// Swapped into the link a previous daemon pinned (its mode kept).
    TakenOver,
}

/// How this daemon holds an attachment.
#[derive(Debug)]
enum Held {
    /// Owned by the program object: detached when it goes.
    Owned(XdpLinkId),
    /// Pinned in bpffs: stays attached when this process goes, until unpinned.
    Pinned(PinnedLink),
}

/// One interface the program is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub iface: String,
    pub mode: AttachMode,
}

/// The program's counters summed over all CPUs. Every packet the program sees ends
/// in exactly one of `steered`, `passed`, `sampled_out` and `ring_full`, so
/// `seen == steered + passed + sampled_out + ring_full`; `too_big` counts the flow
/// datagrams among `passed` that exceeded `MAX_PAYLOAD`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    pub seen: u64,
    pub steered: u64,
    pub passed: u64,
    pub sampled_out: u64,
    pub ring_full: u64,
    pub too_big: u64,
    /// Passed because a pinned program's lease ran out (no daemon reads its rings).
    pub lease_expired: u64,
}

impl XdpCounters {
    /// `(label, value)` pairs for metrics, labels as in `flowlens_xdp_packets_total`.
    pub fn labelled(&self) -> [(&'static str, u64); 7] {
        [
            ("seen", self.seen),
            ("steered", self.steered),
            ("passed", self.passed),
            ("sampled_out", self.sampled_out),
            ("ring_full", self.ring_full),
            ("too_big", self.too_big),
            ("lease_expired", self.lease_expired),
        ]
    }
}

/// Datagrams from one exporter the program consumed without delivering them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExporterLosses {
    pub sampled_out: u64,
    pub ring_full: u64,
}

/// The most verbose of the program's rare events to report (`xdp.log_level`): `error`
/// (configuration or ABI mismatch), `warn` (setup problems such as a CPU without a
/// ring), `debug` (each kind of datagram to a flow port it passed on doubt:
/// fragments, bad UDP lengths, oversized datagrams; at most one a second per kind and
/// CPU). Off by default, and then free: the level is a read-only global the verifier
/// sees as a constant, so it removes every reporting branch before the program runs.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum XdpLogLevel {
    #[default]
    Off,
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

impl XdpLogLevel {
    /// aya-log's `AYA_LOG_LEVEL` value: 0 disables every record, 1..=5 are
    /// error..trace (`aya_log_common::Level`).
    fn aya_level(self) -> u8 {
        self as u8
    }
}

/// One record the program reported, as read from aya-log's ring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XdpLogRecord {
    pub level: log::Level,
    pub message: String,
}

/// Records read from the program's log ring and not yet drained; bounded, because
/// the daemon drains it once a second and the program reports at most one record per
/// event kind, CPU and second.
const MAX_PENDING_LOG_RECORDS: usize = 1024;

/// aya-log's reader writes into a `log::Log`; this one keeps the records for
/// [`XdpHandle::drain_log`], so the daemon decides where they go (its tracing log)
/// and tests can read them.
#[derive(Debug, Default, Clone)]
struct Collect(std::sync::Arc<std::sync::Mutex<Vec<XdpLogRecord>>>);

impl log::Log for Collect {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let mut pending = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pending.len() < MAX_PENDING_LOG_RECORDS {
            pending.push(XdpLogRecord {
                level: record.level(),
                message: record.args().to_string(),
            });
        } else {
            metrics::counter!("flowlens_xdp_log_records_dropped_total").increment(1);
        }
    }

    fn flush(&self) {}
}

/// The loaded, attached program. Detaches on drop.
pub struct XdpHandle {
    /// aya-log's reader, when `log_level` is not off.
    logger: Option<(aya_log::EbpfLogger<Collect>, Collect)>,
    ebpf: Ebpf,
    config: Config,
    links: Vec<(Attachment, Held)>,
    /// The pin directory, when the program is kept attached across restarts.
    pins: Option<PinDir>,
    lease: std::time::Duration,
    lease_renewed: std::time::Instant,
    /// Rings adopted from a previous daemon, with whatever they held.
    adopted_rings: usize,
    rings: Option<Vec<CpuRing>>,
    object_path: PathBuf,
}

impl std::fmt::Debug for XdpHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpHandle")
            .field("object_path", &self.object_path)
            .field("config", &self.config)
            .field("attachments", &self.attachments())
            .finish_non_exhaustive()
    }
}

impl XdpHandle {
    /// Loads the object, fills the maps, creates the rings and attaches to every
    /// interface in `options.interfaces` (in the calling thread's network namespace).
    /// On error nothing stays attached.
    pub fn load(options: &XdpOptions) -> Result<Self, XdpError> {
        raise_memlock_limit();
        let path = &options.object_path;
        let bytes = std::fs::read(path).map_err(|source| XdpError::ReadObject {
            path: path.clone(),
            source,
        })?;
        let pins = match &options.pin_dir {
            Some(dir) => open_pins(dir, options.lease)?,
            None => None,
        };
        let previous = pins.as_ref().map(PinDir::previous).unwrap_or_default();
        if let Some(p) = &pins
            && !previous.compatible()
        {
            if !previous.interfaces.is_empty() {
                tracing::warn!(
                    abi = ?previous.config.map(|c| c.abi),
                    expected = ABI_VERSION,
                    "the pinned XDP program is of another version: its links are taken over, \
                     its maps are not (what its rings held is lost)"
                );
            }
            p.remove_maps();
        }
        let level = options.log_level.aya_level();
        let mut loader = EbpfLoader::new();
        // Before verification: with 0 the verifier prunes every log call.
        loader.override_global(aya_log::LEVEL, &level, true);
        if let Some(p) = &pins {
            for name in PINNED_MAPS {
                // Opened when pinned (a previous daemon's), else created and pinned.
                loader.map_pin_path(name, p.map_path(name));
            }
        }
        let mut ebpf = loader.load(&bytes).map_err(|source| XdpError::Load {
            path: path.clone(),
            source: Box::new(source),
        })?;
        if ebpf.program(PROGRAM_NAME).is_none() {
            let mut found: Vec<_> = ebpf.programs().map(|(name, _)| name.to_owned()).collect();
            found.sort();
            return Err(XdpError::AbiMismatch {
                path: path.clone(),
                expected: PROGRAM_NAME,
                found: if found.is_empty() {
                    "none".to_owned()
                } else {
                    found.join(", ")
                },
            });
        }
        // Everything that can fail without side effects first: a previous daemon's
        // program shares the pinned maps and must not see settings of a load that
        // then fails.
        ring::check_size(options.ring_size_bytes)?;
        let logger = if options.log_level == XdpLogLevel::Off {
            None
        } else {
            let collect = Collect::default();
            let logger = aya_log::EbpfLogger::init_with_logger(&mut ebpf, collect.clone())
                .map_err(|e| XdpError::Log(e.to_string()))?;
            Some((logger, collect))
        };
        let adopting = pins.is_some() && previous.compatible();
        let before = previous.config.filter(|_| adopting);
        let mut config = options.config();
        if pins.is_some() {
            config.lease_until_ns = lease_deadline(options.lease);
        }
        let mut handle = Self {
            logger,
            ebpf,
            config,
            links: Vec::new(),
            pins,
            lease: options.lease,
            lease_renewed: std::time::Instant::now(),
            adopted_rings: 0,
            rings: None,
            object_path: path.clone(),
        };
        // The verifier, before anything is written.
        handle
            .program()?
            .load()
            .map_err(|e| XdpError::Program(Box::new(e)))?;
        if let Err(e) = handle.set_up(options, &previous, before, adopting) {
            if adopting {
                // The previous daemon's program may still be attached where this one
                // did not get to: let it pass to the stack (this daemon falls back to
                // sockets) rather than fill rings nobody will read.
                let mut cfg = handle.config;
                cfg.lease_until_ns = 1;
                let _ = handle.write_config(cfg);
            }
            return Err(e);
        }
        handle.detach_unconfigured(&previous, &options.interfaces);
        Ok(handle)
    }

    /// The steps of [`Self::load`] that write the (maybe shared) maps and attach.
    fn set_up(
        &mut self,
        options: &XdpOptions,
        previous: &Previous,
        before: Option<Config>,
        adopting: bool,
    ) -> Result<(), XdpError> {
        fill_maps(&mut self.ebpf, options, self.config, adopting)?;
        let adopt_rings = before.is_some_and(|c| c.ring_size_bytes == options.ring_size_bytes);
        if adopting && !adopt_rings {
            tracing::warn!(
                ring_size_bytes = options.ring_size_bytes,
                before = before.map(|c| c.ring_size_bytes),
                "the previous daemon's rings are not adopted (another size, or unreadable): \
                 new rings, what the old ones held is lost"
            );
        }
        let (rings, adopted) = ring::create_rings(
            &mut self.ebpf,
            options.ring_size_bytes,
            self.pins.as_ref(),
            adopt_rings,
        )?;
        self.rings = Some(rings);
        self.adopted_rings = adopted;
        if !previous.interfaces.is_empty() {
            tracing::info!(
                adopted,
                interfaces = ?previous.interfaces,
                "taking over the pinned XDP program"
            );
        }
        for iface in &options.interfaces {
            // On error the caller drops the handle, which detaches what is attached.
            self.attach(iface, options.try_native)?;
        }
        Ok(())
    }

    /// Whether the program is pinned (kept attached across restarts).
    pub fn is_pinned(&self) -> bool {
        self.pins.is_some()
    }

    /// Rings adopted from the previous daemon's pinned program (0 on a fresh start).
    pub fn adopted_rings(&self) -> usize {
        self.adopted_rings
    }

    /// Renews the pinned program's lease (at most once a second): until
    /// `now + lease` it steers into the rings; past it, it passes flow datagrams to
    /// the stack. Nothing to do for a program that is not pinned.
    pub fn renew_lease(&mut self) -> Result<(), XdpError> {
        if self.pins.is_none() || self.lease_renewed.elapsed() < std::time::Duration::from_secs(1) {
            return Ok(());
        }
        let mut cfg = self.config;
        cfg.lease_until_ns = lease_deadline(self.lease);
        self.write_config(cfg)?;
        self.lease_renewed = std::time::Instant::now();
        Ok(())
    }

    /// Leaves the pinned program attached for the next daemon: the links stay pinned,
    /// the program keeps steering into the rings until its lease runs out. The
    /// per-exporter losses are cleared (this daemon has published them), so the next
    /// daemon counts only those after this point. Without pinning, a plain detach.
    pub fn hand_over(mut self) -> Result<(), XdpError> {
        if self.pins.is_none() {
            return self.detach();
        }
        if let Err(e) = self.clear_per_exporter() {
            // The next daemon may count some losses again; the handover matters more.
            tracing::warn!(error = %e, "clearing the per-exporter losses before the handover");
        }
        // A whole lease for the restart, however long this stop took.
        let mut cfg = self.config;
        cfg.lease_until_ns = lease_deadline(self.lease);
        if let Err(e) = self.write_config(cfg) {
            tracing::warn!(error = %e, "renewing the lease before the handover");
        }
        // With pinning on every attachment is pinned (`attach` refuses one that
        // cannot be): dropping our hold leaves it attached.
        for (att, _) in std::mem::take(&mut self.links) {
            tracing::info!(iface = %att.iface, "XDP program left attached for the next daemon");
        }
        // Dropping the handle must not unpin what was just handed over.
        self.pins = None;
        Ok(())
    }

    /// Empties the per-exporter losses map (after they were published).
    fn clear_per_exporter(&mut self) -> Result<(), XdpError> {
        let map = self
            .ebpf
            .map_mut(MAP_PER_EXPORTER)
            .ok_or(XdpError::MissingMap(MAP_PER_EXPORTER))?;
        let err = |source| XdpError::Map {
            name: MAP_PER_EXPORTER,
            source,
        };
        let mut states: PerCpuHashMap<&mut MapData, [u8; 16], ExporterState> =
            PerCpuHashMap::try_from(map).map_err(err)?;
        let keys: Vec<[u8; 16]> = states.keys().flatten().collect();
        for key in keys {
            // Gone already (evicted) is fine.
            let _ = states.remove(&key);
        }
        Ok(())
    }

    /// Links a previous daemon pinned on interfaces this one does not use: detached.
    fn detach_unconfigured(&mut self, previous: &Previous, interfaces: &[String]) {
        let Some(pins) = &self.pins else { return };
        for iface in &previous.interfaces {
            if !interfaces.contains(iface) && pins.take_link(iface).is_some() {
                tracing::info!(
                    iface,
                    "detached the previous daemon's XDP program: interface no longer configured"
                );
            }
        }
    }

    /// The records the program reported since the last call (none when
    /// `log_level` is off), oldest first.
    pub fn drain_log(&mut self) -> Vec<XdpLogRecord> {
        let Some((logger, collect)) = self.logger.as_mut() else {
            return Vec::new();
        };
        logger.flush();
        std::mem::take(
            &mut *collect
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// The per-CPU rings, for [`super::ring::RingReader::spawn`]; `None` once taken.
    pub fn take_rings(&mut self) -> Option<Vec<CpuRing>> {
        self.rings.take()
    }

    /// Where the program is attached, and how.
    pub fn attachments(&self) -> Vec<Attachment> {
        self.links.iter().map(|(a, _)| a.clone()).collect()
    }

    /// The settings the program currently runs with.
    pub fn config(&self) -> Config {
        self.config
    }

    /// Sets the 1:N pre-sampling rate (1 = keep everything); takes effect on the next
    /// packet. Datagrams kept under N > 1 carry N in their `presample_rate`.
    pub fn set_sample_rate(&mut self, n: u32) -> Result<(), XdpError> {
        let mut cfg = self.config;
        cfg.sample_rate = n.max(1);
        self.write_config(cfg)
    }

    /// Turns mirror mode on or off at runtime.
    pub fn set_mirror(&mut self, on: bool) -> Result<(), XdpError> {
        let mut cfg = self.config;
        if on {
            cfg.flags |= Config::FLAG_MIRROR;
        } else {
            cfg.flags &= !Config::FLAG_MIRROR;
        }
        self.write_config(cfg)
    }

    /// Writes `cfg` as is, ABI field included: what a daemon of another version would
    /// write into a program it found. For tests of the program's mismatch path.
    #[doc(hidden)]
    pub fn overwrite_config(&mut self, cfg: Config) -> Result<(), XdpError> {
        self.write_config(cfg)
    }

    /// The size of the program the kernel runs, in BPF instructions, after the
    /// verifier removed dead code (with `log_level` off, every reporting branch).
    pub fn translated_instructions(&mut self) -> Option<u32> {
        let info = self.program().ok()?.info().ok()?;
        info.size_translated().map(|bytes| bytes / 8)
    }

    fn write_config(&mut self, cfg: Config) -> Result<(), XdpError> {
        write_config(&mut self.ebpf, cfg)?;
        self.config = cfg;
        Ok(())
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Result<XdpCounters, XdpError> {
        let map = self
            .ebpf
            .map(MAP_COUNTERS)
            .ok_or(XdpError::MissingMap(MAP_COUNTERS))?;
        let err = |source| XdpError::Map {
            name: MAP_COUNTERS,
            source,
        };
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(err)?;
        let sum = |c: Counter| -> Result<u64, XdpError> {
            Ok(counters.get(&(c as u32), 0).map_err(err)?.iter().sum())
        };
        Ok(XdpCounters {
            seen: sum(Counter::Seen)?,
            steered: sum(Counter::Steered)?,
            passed: sum(Counter::Passed)?,
            sampled_out: sum(Counter::SampledOut)?,
            ring_full: sum(Counter::RingFull)?,
            too_big: sum(Counter::TooBig)?,
            lease_expired: sum(Counter::LeaseExpired)?,
        })
    }

    /// What the program consumed without delivering, per exporter, summed over CPUs:
    /// the global `sampled_out` and `ring_full` counters split by exporter. Exporters
    /// with nothing to report may be absent. The LRU map forgets an exporter (and its
    /// counts) only after `MAX_TRACKED_EXPORTERS` (16384) others, so a caller
    /// publishing deltas treats a smaller value as a fresh count.
    pub fn per_exporter(&self) -> Result<Vec<(IpAddr, ExporterLosses)>, XdpError> {
        let map = self
            .ebpf
            .map(MAP_PER_EXPORTER)
            .ok_or(XdpError::MissingMap(MAP_PER_EXPORTER))?;
        let err = |source| XdpError::Map {
            name: MAP_PER_EXPORTER,
            source,
        };
        let states: PerCpuHashMap<&MapData, [u8; 16], ExporterState> =
            PerCpuHashMap::try_from(map).map_err(err)?;
        let mut out = Vec::new();
        for entry in &states {
            // An entry evicted between the key walk and its lookup is simply skipped.
            let Ok((addr, per_cpu)) = entry else { continue };
            let losses = per_cpu
                .iter()
                .fold(ExporterLosses::default(), |acc, s| ExporterLosses {
                    sampled_out: acc.sampled_out + s.sampled_out,
                    ring_full: acc.ring_full + s.ring_full,
                });
            out.push((exporter_ip(addr), losses));
        }
        Ok(out)
    }

    /// Detaches from every interface (in the calling thread's network namespace for
    /// netlink attachments; BPF links need no namespace). Idempotent; reports the first
    /// failure after trying them all.
    pub fn detach(&mut self) -> Result<(), XdpError> {
        let links = std::mem::take(&mut self.links);
        let mut first = None;
        for (att, held) in links {
            let res = match held {
                Held::Owned(id) => self.program().and_then(|p| {
                    p.detach(id).map_err(|source| XdpError::Detach {
                        iface: att.iface.clone(),
                        source: Box::new(source),
                    })
                }),
                // Unpinned, the link goes with its last file descriptor, dropped here.
                Held::Pinned(link) => link.unpin().map(drop).map_err(|e| XdpError::Detach {
                    iface: att.iface.clone(),
                    source: Box::new(ProgramError::IOError(e)),
                }),
            };
            match res {
                Ok(()) => tracing::info!(iface = %att.iface, "detached XDP program"),
                Err(e) => {
                    tracing::warn!(iface = %att.iface, error = %e, "detaching XDP program failed");
                    first.get_or_insert(e);
                }
            }
        }
        if let Some(p) = &self.pins
            && p.previous().interfaces.is_empty()
        {
            // Nothing attached for a successor to adopt: it starts fresh.
            p.remove_maps();
        }
        first.map_or(Ok(()), Err)
    }

    fn program(&mut self) -> Result<&mut Xdp, XdpError> {
        self.ebpf
            .program_mut(PROGRAM_NAME)
            .ok_or(XdpError::AbiMismatch {
                path: self.object_path.clone(),
                expected: PROGRAM_NAME,
                found: "none".to_owned(),
            })?
            .try_into()
            .map_err(|e| XdpError::Program(Box::new(e)))
    }

    /// Takes over the link a previous daemon pinned on `iface` when there is one (the
    /// program swapped in atomically); else attaches, native mode first and generic
    /// when the driver refuses (no native XDP support). Pinned when pinning is on.
    fn attach(&mut self, iface: &str, try_native: bool) -> Result<(), XdpError> {
        let attach_err = |source| XdpError::Attach {
            iface: iface.to_owned(),
            source: Box::new(source),
        };
        let previous = self.pins.as_ref().and_then(|p| p.take_link(iface));
        let (id, mode) = if let Some(old) = previous {
            let link = XdpLink::try_from(old).map_err(|e| XdpError::Pin {
                path: self
                    .pins
                    .as_ref()
                    .map(|p| p.link_path(iface))
                    .unwrap_or_default(),
                message: format!("the pinned link is not an XDP link: {e}"),
            })?;
            let id = self.program()?.attach_to_link(link).map_err(attach_err)?;
            (id, AttachMode::TakenOver)
        } else {
            self.attach_fresh(iface, try_native)?
        };
        tracing::info!(iface, mode = ?mode, "attached XDP program");
        let held = match &self.pins {
            Some(pins) => {
                let path = pins.link_path(iface);
                let link = self.program()?.take_link(id).map_err(attach_err)?;
                match FdLink::try_from(link) {
                    Ok(fd) => Held::Pinned(fd.pin(&path).map_err(|e| XdpError::Pin {
                        path: path.clone(),
                        message: e.to_string(),
                    })?),
                    Err(e) => {
                        return Err(XdpError::Pin {
                            path,
                            message: format!(
                                "a netlink attachment (no BPF link) cannot be pinned: {e}"
                            ),
                        });
                    }
                }
            }
            None => Held::Owned(id),
        };
        self.links.push((
            Attachment {
                iface: iface.to_owned(),
                mode,
            },
            held,
        ));
        Ok(())
    }

    fn attach_fresh(
        &mut self,
        iface: &str,
        try_native: bool,
    ) -> Result<(XdpLinkId, AttachMode), XdpError> {
        let prog = self.program()?;
        let native = if try_native {
            Some(prog.attach(iface, XdpMode::Driver))
        } else {
            None
        };
        match native {
            Some(Ok(id)) => Ok((id, AttachMode::Native)),
            Some(Err(ProgramError::UnknownInterface { name })) => Err(XdpError::Attach {
                iface: iface.to_owned(),
                source: Box::new(ProgramError::UnknownInterface { name }),
            }),
            other => {
                if let Some(Err(e)) = other {
                    tracing::info!(iface, error = %e, "native XDP unavailable, trying generic mode");
                }
                let id = prog
                    .attach(iface, XdpMode::Skb)
                    .map_err(|source| XdpError::Attach {
                        iface: iface.to_owned(),
                        source: Box::new(source),
                    })?;
                Ok((id, AttachMode::Generic))
            }
        }
    }
}

impl Drop for XdpHandle {
    fn drop(&mut self) {
        // Errors are logged by detach; the kernel detaches BPF links anyway when the
        // program's file descriptors close with `self.ebpf`.
        let _ = self.detach();
    }
}

/// Writes the ports, exporter prefixes and settings. Maps adopted from a previous
/// daemon (`adopting`) first lose the entries this configuration no longer has.
fn fill_maps(
    ebpf: &mut Ebpf,
    options: &XdpOptions,
    config: Config,
    adopting: bool,
) -> Result<(), XdpError> {
    {
        let map = ebpf
            .map_mut(MAP_PORTS)
            .ok_or(XdpError::MissingMap(MAP_PORTS))?;
        let err = |source| XdpError::Map {
            name: MAP_PORTS,
            source,
        };
        let mut ports: HashMap<&mut MapData, u16, u8> = HashMap::try_from(map).map_err(err)?;
        if adopting {
            let stale: Vec<u16> = ports
                .keys()
                .flatten()
                .filter(|p| !options.ports.iter().any(|(want, _)| want == p))
                .collect();
            for port in stale {
                ports.remove(&port).map_err(err)?;
            }
        }
        for &(port, kind) in &options.ports {
            ports.insert(port, kind as u8, 0).map_err(err)?;
        }
    }
    {
        let map = ebpf
            .map_mut(MAP_EXPORTERS)
            .ok_or(XdpError::MissingMap(MAP_EXPORTERS))?;
        let err = |source| XdpError::Map {
            name: MAP_EXPORTERS,
            source,
        };
        let mut trie: LpmTrie<&mut MapData, [u8; 16], u8> = LpmTrie::try_from(map).map_err(err)?;
        if adopting {
            let wanted: Vec<Key<[u8; 16]>> =
                options.exporter_prefixes.iter().map(|p| p.key()).collect();
            let stale: Vec<Key<[u8; 16]>> = trie
                .keys()
                .flatten()
                .filter(|k| {
                    !wanted
                        .iter()
                        .any(|w| w.prefix_len() == k.prefix_len() && w.data() == k.data())
                })
                .collect();
            for key in stale {
                trie.remove(&key).map_err(err)?;
            }
        }
        for prefix in &options.exporter_prefixes {
            trie.insert(&prefix.key(), 1, 0).map_err(err)?;
        }
    }
    write_config(ebpf, config)
}

/// The pin directory, locked (waiting up to the lease for a daemon still stopping), or
/// `None` when pinning cannot work here (no bpffs: warned, the program lives as long
/// as the process; a kernel before 5.9 has no XDP links to pin). Another daemon that
/// keeps the directory is an error: this one must not attach beside it.
fn open_pins(dir: &Path, lease: std::time::Duration) -> Result<Option<PinDir>, XdpError> {
    let links = aya::util::KernelVersion::current()
        .is_ok_and(|v| v >= aya::util::KernelVersion::new(5, 9, 0));
    if !links {
        tracing::warn!("the XDP program is not pinned: pinning needs XDP links (kernel 5.9)");
        return Ok(None);
    }
    match PinDir::open(dir, lease.min(std::time::Duration::from_secs(30))) {
        Ok(p) => Ok(Some(p)),
        Err(e @ super::pin::PinDirError::InUse(_)) => Err(XdpError::Pin {
            path: dir.to_owned(),
            message: e.to_string(),
        }),
        Err(e) => {
            tracing::warn!(error = %e, "the XDP program is not pinned: a restart detaches it");
            Ok(None)
        }
    }
}

/// `CLOCK_MONOTONIC` now plus `lease`, in ns (the program's `bpf_ktime_get_ns` clock).
fn lease_deadline(lease: std::time::Duration) -> u64 {
    ring::monotonic_ns().saturating_add(u64::try_from(lease.as_nanos()).unwrap_or(u64::MAX))
}

fn write_config(ebpf: &mut Ebpf, config: Config) -> Result<(), XdpError> {
    let map = ebpf
        .map_mut(MAP_CONFIG)
        .ok_or(XdpError::MissingMap(MAP_CONFIG))?;
    let err = |source| XdpError::Map {
        name: MAP_CONFIG,
        source,
    };
    let mut array: Array<&mut MapData, Config> = Array::try_from(map).map_err(err)?;
    array.set(0, config, 0).map_err(err)
}

/// Kernels before 5.11 charge BPF maps to `RLIMIT_MEMLOCK`; newer ones use memcg and
/// ignore it. Some sandboxes refuse the raise: harmless on a memcg kernel, so warn.
fn raise_memlock_limit() {
    use nix::sys::resource::{Resource, setrlimit};
    if let Err(e) = setrlimit(
        Resource::RLIMIT_MEMLOCK,
        libc::RLIM_INFINITY,
        libc::RLIM_INFINITY,
    ) {
        tracing::debug!(error = %e, "cannot raise RLIMIT_MEMLOCK (harmless on kernels >= 5.11)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_parse_into_mapped_lpm_keys() {
        let p: ExporterPrefix = "192.0.2.0/24".parse().unwrap();
        let k = p.key();
        assert_eq!(k.prefix_len(), 120);
        assert_eq!(k.data()[10..], [0xff, 0xff, 192, 0, 2, 0]);
        let p: ExporterPrefix = "2001:db8::/32".parse().unwrap();
        assert_eq!(p.key().prefix_len(), 32);
        let host: ExporterPrefix = "198.51.100.9".parse().unwrap();
        assert_eq!(host.len, 32);
        assert_eq!(
            "10.0.0.0/33".parse::<ExporterPrefix>().unwrap_err().reason,
            "prefix length too long for the address family"
        );
        assert_eq!(
            "nope/8".parse::<ExporterPrefix>().unwrap_err().reason,
            "not an IP address"
        );
    }

    #[test]
    fn options_turn_into_program_config() {
        let mut o = XdpOptions::new(PathBuf::from("x"), vec![]);
        assert_eq!(o.config().flags, 0);
        assert_eq!(o.config().sample_rate, 1);
        o.mirror = true;
        o.sample_rate = 0;
        o.exporter_prefixes.push("192.0.2.0/24".parse().unwrap());
        let c = o.config();
        assert_eq!(c.flags, Config::FLAG_MIRROR | Config::FLAG_FILTER_EXPORTERS);
        assert_eq!(c.sample_rate, 1);
    }

    #[test]
    fn the_wakeup_threshold_fits_in_the_ring() {
        let mut o = XdpOptions::new(PathBuf::from("x"), vec![]);
        assert_eq!(o.config().wakeup_bytes, DEFAULT_WAKEUP_BYTES);
        o.ring_size_bytes = 64 * 1024;
        assert_eq!(o.config().wakeup_bytes, 16 * 1024);
        o.wakeup_bytes = 0;
        assert_eq!(o.config().wakeup_bytes, 0, "0 still means every record");
    }

    #[test]
    fn a_missing_object_is_a_clear_error() {
        let o = XdpOptions::new(PathBuf::from("/nonexistent/flowlens-ebpf"), vec![]);
        let e = XdpHandle::load(&o).unwrap_err();
        assert_eq!(e.reason(), "object_missing");
        assert!(e.to_string().contains("cargo xtask build-ebpf"), "{e}");
    }
}
