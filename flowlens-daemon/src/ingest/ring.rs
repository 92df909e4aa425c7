//! EDGE: the per-CPU ring buffers between the XDP program and the decode workers.
//!
//! [`create_rings`] makes one BPF ring buffer per possible CPU and stores each in the
//! program's `FLOW_RINGS[cpu]`: per-CPU rings never contend between CPUs, and the
//! program writes to the ring of the CPU that received the packet. [`RingReader::spawn`]
//! then reads them on plain threads (the daemon's receive path is threads, like the UDP
//! path): each thread waits in `epoll(2)` on its rings and drains all of them when one
//! signals or after [`RingReaderOptions::drain_interval`] (~1 ms). The program only
//! forces a wakeup once `Config::wakeup_bytes` are waiting, so at high rates one wakeup
//! drains a batch; the timer bounds the latency of a trickle below that threshold. No
//! busy loop: an idle reader sleeps in `epoll_wait` between timer ticks.
//!
//! Each record is a `RingHeader` followed by the payload; it becomes a [`RawDatagram`]
//! (exporter from the header, IPv4-mapped addresses back to IPv4, receive time from the
//! kernel timestamp) handed to [`Handoff::hand`], which never blocks.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use aya::Ebpf;
use aya::maps::{ArrayOfMaps, Map, MapData, MapError, RingBuf};
use aya_obj::generated::bpf_map_type;
use flowlens_ebpf_common::{MAP_RINGS, RingHeader};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::time::{ClockId, clock_gettime};

use super::datagram::{RawDatagram, Source, exporter_ip};
use super::pin::PinDir;
use crate::seam::Handoff;
use crate::telemetry::metrics as m;

/// One CPU's ring, as created by [`create_rings`].
pub struct CpuRing {
    /// The CPU whose packets land in this ring.
    pub cpu: u32,
    ring: RingBuf<MapData>,
}

impl std::fmt::Debug for CpuRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuRing")
            .field("cpu", &self.cpu)
            .finish_non_exhaustive()
    }
}

/// Why the rings could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("ring size {0} bytes: must be a power of two and at least one page (4096)")]
    Size(u32),
    #[error("counting possible CPUs ({path}): {source}")]
    Cpus {
        path: &'static str,
        source: io::Error,
    },
    #[error("this machine has {cpus} possible CPUs but {MAP_RINGS} holds only {slots} rings")]
    TooManyCpus { cpus: u32, slots: u32 },
    #[error("the BPF object has no map {MAP_RINGS}")]
    MissingMap,
    #[error("ring for CPU {cpu}: {source}")]
    Map { cpu: u32, source: MapError },
    #[error("{MAP_RINGS}: {0}")]
    Outer(MapError),
}

impl RingError {
    /// A bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Size(_) => "ring_size",
            Self::Cpus { .. } => "possible_cpus",
            Self::TooManyCpus { .. } => "too_many_cpus",
            Self::MissingMap => "missing_map",
            Self::Map { .. } | Self::Outer(_) => "map",
        }
    }
}

/// Whether `size_bytes` can be a ring: a power of two, at least one page.
pub fn check_size(size_bytes: u32) -> Result<(), RingError> {
    if !size_bytes.is_power_of_two() || size_bytes < 4096 {
        return Err(RingError::Size(size_bytes));
    }
    Ok(())
}

/// Creates one ring of `size_bytes` per possible CPU and stores it in `FLOW_RINGS[cpu]`.
///
/// With `pins`, each ring is pinned too (`ring-<cpu>`), and with `adopt` a ring a
/// previous daemon pinned (same size: the caller checked) is opened by its path and
/// kept with what it holds, counted in the second value. Paths, not ids: opening a map
/// by id needs `CAP_SYS_ADMIN`.
///
/// The program's inner-map declaration is only a template: the kernel does not compare
/// a ring's size with it, so any power-of-two size works.
pub fn create_rings(
    ebpf: &mut Ebpf,
    size_bytes: u32,
    pins: Option<&PinDir>,
    adopt: bool,
) -> Result<(Vec<CpuRing>, usize), RingError> {
    check_size(size_bytes)?;
    let cpus = aya::util::nr_cpus().map_err(|(path, source)| RingError::Cpus { path, source })?;
    let cpus = u32::try_from(cpus).unwrap_or(u32::MAX);
    let map = ebpf.map_mut(MAP_RINGS).ok_or(RingError::MissingMap)?;
    let mut outer: ArrayOfMaps<&mut MapData, RingBuf<MapData>> =
        ArrayOfMaps::try_from(map).map_err(RingError::Outer)?;
    if cpus > outer.len() {
        return Err(RingError::TooManyCpus {
            cpus,
            slots: outer.len(),
        });
    }
    let mut rings = Vec::with_capacity(cpus as usize);
    let mut adopted = 0;
    for cpu in 0..cpus {
        let err = |source| RingError::Map { cpu, source };
        let pinned = pins.map(|p| p.ring_path(cpu));
        if adopt && let Some(path) = &pinned {
            match MapData::from_pin(path) {
                Ok(data) => {
                    let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(err)?;
                    // The pinned outer map holds it already; set again all the same,
                    // so the program and the reader agree whatever the map held.
                    outer.set(cpu, &ring, 0).map_err(err)?;
                    adopted += 1;
                    rings.push(CpuRing { cpu, ring });
                    continue;
                }
                Err(e) => tracing::warn!(
                    cpu,
                    error = %e,
                    "no pinned ring for this CPU: a new one (what the old one held is lost)"
                ),
            }
        }
        let def = aya_obj::Map::new_from_params(
            bpf_map_type::BPF_MAP_TYPE_RINGBUF as u32,
            0,
            0,
            size_bytes,
            0,
        );
        // Kernel map names hold 15 characters: "flowlens_rb1023" fits.
        let data = MapData::create(def, &format!("flowlens_rb{cpu}"), None).map_err(err)?;
        if let Some(path) = &pinned {
            let _ = std::fs::remove_file(path);
            data.pin(path).map_err(|e| {
                err(MapError::PinError {
                    name: Some(format!("flowlens_rb{cpu}")),
                    error: e,
                })
            })?;
        }
        let ring = RingBuf::try_from(Map::RingBuf(data)).map_err(err)?;
        outer.set(cpu, &ring, 0).map_err(err)?;
        rings.push(CpuRing { cpu, ring });
    }
    Ok((rings, adopted))
}

/// How the readers run.
#[derive(Debug, Clone)]
pub struct RingReaderOptions {
    /// Reader threads; the rings are dealt round-robin among them (1 is plenty up to
    /// several hundred thousand datagrams/s: a record costs ~1 µs to hand over).
    pub threads: usize,
    /// Drain every ring at least this often, whether or not the program forced a
    /// wakeup: the latency bound for traffic below `Config::wakeup_bytes`.
    pub drain_interval: Duration,
    /// How long the last drain at a stop may read; `None`: to the end. A pinned
    /// program keeps filling the rings after the stop, and what it adds is the next
    /// daemon's, so its readers stop after a bound.
    pub last_drain: Option<Duration>,
}

impl Default for RingReaderOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            drain_interval: Duration::from_millis(1),
            last_drain: None,
        }
    }
}

/// Counts kept by the readers (all threads together).
#[derive(Debug, Default)]
struct Stats {
    records: AtomicU64,
    malformed: AtomicU64,
    rejected: AtomicU64,
}

/// A snapshot of the readers' counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingStats {
    /// Records read from the rings.
    pub records: u64,
    /// Records too short for their header or their stated payload (never expected:
    /// counted so a program/daemon ABI slip shows up).
    pub malformed: u64,
    /// Datagrams the hand-over refused (a full queue).
    pub rejected: u64,
}

/// The reader threads; stop them with [`RingReader::stop`] (also on drop).
#[derive(Debug)]
pub struct RingReader {
    stop: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    stats: Arc<Stats>,
    threads: Vec<JoinHandle<()>>,
}

impl RingReader {
    /// Starts reading `rings`, dispatching every record. The threads stop when
    /// `shutdown` becomes true or [`RingReader::stop`] is called, after one last drain.
    pub fn spawn(
        rings: Vec<CpuRing>,
        handoff: &Handoff,
        shutdown: Arc<AtomicBool>,
        options: &RingReaderOptions,
    ) -> io::Result<Self> {
        let n = options.threads.clamp(1, rings.len().max(1));
        let mut groups: Vec<Vec<CpuRing>> = (0..n).map(|_| Vec::new()).collect();
        for (i, ring) in rings.into_iter().enumerate() {
            if let Some(g) = groups.get_mut(i % n) {
                g.push(ring);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stats = Arc::new(Stats::default());
        let mut threads = Vec::with_capacity(n);
        for (i, group) in groups.into_iter().enumerate() {
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
            for (j, r) in group.iter().enumerate() {
                epoll.add(&r.ring, EpollEvent::new(EpollFlags::EPOLLIN, j as u64))?;
            }
            let worker = Worker {
                rings: group,
                epoll,
                handoff: handoff.clone(),
                stop: stop.clone(),
                shutdown: shutdown.clone(),
                stats: stats.clone(),
                tick: options.drain_interval,
                last_drain: options.last_drain,
                clock: Clock::new(),
                counts: HashMap::new(),
                published: Instant::now(),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("flowlens-ring-{i}"))
                    .spawn(move || worker.run())?,
            );
        }
        Ok(Self {
            stop,
            shutdown,
            stats,
            threads,
        })
    }

    /// The readers' counts so far.
    pub fn stats(&self) -> RingStats {
        RingStats {
            records: self.stats.records.load(Ordering::Relaxed),
            malformed: self.stats.malformed.load(Ordering::Relaxed),
            rejected: self.stats.rejected.load(Ordering::Relaxed),
        }
    }

    /// Whether every reader thread is still running (false after a stop or a panic).
    pub fn is_running(&self) -> bool {
        !self.shutdown.load(Ordering::Relaxed) && self.threads.iter().all(|t| !t.is_finished())
    }

    /// Stops the readers after a last drain and waits for them.
    pub fn stop(mut self) -> RingStats {
        self.join();
        self.stats()
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.join();
    }
}

/// One reader thread's state.
struct Worker {
    rings: Vec<CpuRing>,
    epoll: Epoll,
    handoff: Handoff,
    stop: Arc<AtomicBool>,
    shutdown: Arc<AtomicBool>,
    stats: Arc<Stats>,
    tick: Duration,
    last_drain: Option<Duration>,
    clock: Clock,
    /// Per exporter (received, dropped) since the last publish, for the accounting
    /// metrics (`flowlens_ingest_datagrams_received_total{source="xdp"}`).
    counts: HashMap<IpAddr, (u64, u64)>,
    published: Instant,
}

impl Worker {
    /// How often per-exporter counts go to the metrics registry.
    const PUBLISH_EVERY: Duration = Duration::from_millis(200);

    fn publish(&mut self) {
        for (exporter, (received, dropped)) in self.counts.drain() {
            m::ingest_received(exporter, m::SOURCE_XDP, received);
            m::ingest_dropped(exporter, dropped);
        }
        self.published = Instant::now();
    }

    fn run(mut self) {
        let timeout = EpollTimeout::try_from(self.tick).unwrap_or(EpollTimeout::from(1u16));
        let mut events = [EpollEvent::empty(); 64];
        loop {
            let stopping =
                self.stop.load(Ordering::Relaxed) || self.shutdown.load(Ordering::Relaxed);
            // Readiness only says "something is waiting"; draining every ring is as
            // cheap as finding out which (an empty ring costs two loads). The last
            // drain may be bounded (`last_drain`, a pinned program).
            let deadline = if stopping {
                self.last_drain.map(|d| Instant::now() + d)
            } else {
                None
            };
            self.drain(deadline);
            if stopping {
                self.publish();
                return;
            }
            if self.published.elapsed() >= Self::PUBLISH_EVERY {
                self.publish();
            }
            match self.epoll.wait(&mut events, timeout) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!(error = %e, "epoll_wait on the XDP rings failed; reader stops");
                    return;
                }
            }
        }
    }

    fn drain(&mut self, deadline: Option<Instant>) {
        self.clock.refresh();
        let (mut records, mut malformed, mut rejected) = (0u64, 0u64, 0u64);
        for r in &mut self.rings {
            loop {
                // Checked before taking a record: one taken is one handed on.
                if records.is_multiple_of(4096)
                    && records > 0
                    && deadline.is_some_and(|d| Instant::now() > d)
                {
                    break;
                }
                let Some(item) = r.ring.next() else { break };
                records += 1;
                let Some(d) = to_datagram(&item, &self.clock) else {
                    malformed += 1;
                    continue;
                };
                drop(item);
                let c = self.counts.entry(d.exporter).or_default();
                c.0 += 1;
                if !self.handoff.hand(d) {
                    rejected += 1;
                    c.1 += 1;
                }
            }
        }
        if records > 0 {
            self.stats.records.fetch_add(records, Ordering::Relaxed);
            self.stats.malformed.fetch_add(malformed, Ordering::Relaxed);
            self.stats.rejected.fetch_add(rejected, Ordering::Relaxed);
        }
    }
}

/// Converts `bpf_ktime_get_ns()` (`CLOCK_MONOTONIC`) into wall-clock milliseconds: the
/// offset between the two clocks is sampled about once a second, so a record's time is
/// when the program saw the packet, not when a batched wakeup got round to it.
struct Clock {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, in ns.
    offset_ns: i128,
    sampled: Instant,
}

impl Clock {
    const RESAMPLE: Duration = Duration::from_secs(1);

    fn new() -> Self {
        Self {
            offset_ns: Self::sample(),
            sampled: Instant::now(),
        }
    }

    fn refresh(&mut self) {
        if self.sampled.elapsed() >= Self::RESAMPLE {
            self.offset_ns = Self::sample();
            self.sampled = Instant::now();
        }
    }

    fn sample() -> i128 {
        let ns = |c| {
            clock_gettime(c).map_or(0, |t| {
                i128::from(t.tv_sec()) * 1_000_000_000 + i128::from(t.tv_nsec())
            })
        };
        ns(ClockId::CLOCK_REALTIME) - ns(ClockId::CLOCK_MONOTONIC)
    }

    fn wall_ms(&self, ktime_ns: u64) -> u64 {
        let ms = (i128::from(ktime_ns) + self.offset_ns) / 1_000_000;
        u64::try_from(ms).unwrap_or(0)
    }
}

/// Decodes a ring record: the header fields by their offsets (native byte order, as the
/// program wrote them; addresses are network order) and the payload after it.
fn parse_record(rec: &[u8]) -> Option<(RingHeader, &[u8])> {
    use std::mem::offset_of;
    fn arr<const N: usize>(rec: &[u8], at: usize) -> Option<[u8; N]> {
        rec.get(at..at + N)?.try_into().ok()
    }
    let h = RingHeader {
        ts_ns: u64::from_ne_bytes(arr(rec, offset_of!(RingHeader, ts_ns))?),
        src_addr: arr(rec, offset_of!(RingHeader, src_addr))?,
        ifindex: u32::from_ne_bytes(arr(rec, offset_of!(RingHeader, ifindex))?),
        rx_queue: u32::from_ne_bytes(arr(rec, offset_of!(RingHeader, rx_queue))?),
        src_port: u16::from_ne_bytes(arr(rec, offset_of!(RingHeader, src_port))?),
        dst_port: u16::from_ne_bytes(arr(rec, offset_of!(RingHeader, dst_port))?),
        payload_len: u16::from_ne_bytes(arr(rec, offset_of!(RingHeader, payload_len))?),
        family: *rec.get(offset_of!(RingHeader, family))?,
        _pad0: 0,
        sample_rate: u32::from_ne_bytes(arr(rec, offset_of!(RingHeader, sample_rate))?),
        _pad1: 0,
    };
    let start = size_of::<RingHeader>();
    let payload = rec.get(start..start + usize::from(h.payload_len))?;
    Some((h, payload))
}

/// The exporter address of a header: IPv4-mapped addresses (how the program stores
/// IPv4) become IPv4 again, so the same exporter has one key on both ingest paths.
fn exporter(h: &RingHeader) -> IpAddr {
    if h.family == 4 {
        exporter_ip(h.src_addr)
    } else {
        IpAddr::V6(Ipv6Addr::from(h.src_addr))
    }
}

fn to_datagram(rec: &[u8], clock: &Clock) -> Option<RawDatagram> {
    let (h, payload) = parse_record(rec)?;
    Some(RawDatagram {
        exporter: exporter(&h),
        received_at_ms: clock.wall_ms(h.ts_ns),
        presample_rate: h.sample_rate.max(1),
        source: Source::Xdp,
        payload: payload.to_vec(),
        truncated_from: None,
    })
}

/// For tests: the current CLOCK_MONOTONIC in ns, the clock of `RingHeader::ts_ns`.
#[doc(hidden)]
pub fn monotonic_ns() -> u64 {
    clock_gettime(ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000_000
            + u64::try_from(t.tv_nsec()).unwrap_or(0)
    })
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::*;

    fn record(h: &RingHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&h.ts_ns.to_ne_bytes());
        v.extend_from_slice(&h.src_addr);
        v.extend_from_slice(&h.ifindex.to_ne_bytes());
        v.extend_from_slice(&h.rx_queue.to_ne_bytes());
        v.extend_from_slice(&h.src_port.to_ne_bytes());
        v.extend_from_slice(&h.dst_port.to_ne_bytes());
        v.extend_from_slice(&h.payload_len.to_ne_bytes());
        v.push(h.family);
        v.push(0);
        v.extend_from_slice(&h.sample_rate.to_ne_bytes());
        v.extend_from_slice(&[0; 4]);
        assert_eq!(v.len(), size_of::<RingHeader>());
        v.extend_from_slice(payload);
        v
    }

    fn header(addr: IpAddr, payload_len: u16) -> RingHeader {
        let (src_addr, family) = match addr {
            IpAddr::V4(a) => (a.to_ipv6_mapped().octets(), 4),
            IpAddr::V6(a) => (a.octets(), 6),
        };
        RingHeader {
            ts_ns: monotonic_ns(),
            src_addr,
            ifindex: 7,
            rx_queue: 0,
            src_port: 40000,
            dst_port: 2055,
            payload_len,
            family,
            sample_rate: 4,
            ..RingHeader::default()
        }
    }

    #[test]
    fn ipv4_record_becomes_an_ipv4_datagram_with_wall_clock_time() {
        let addr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));
        let rec = record(&header(addr, 3), &[1, 2, 3]);
        let clock = Clock::new();
        let d = to_datagram(&rec, &clock).expect("well-formed record");
        assert_eq!(d.exporter, addr);
        assert_eq!(d.payload, vec![1, 2, 3]);
        assert_eq!(d.presample_rate, 4);
        assert_eq!(d.source, Source::Xdp);
        let now_ms = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap();
        assert!(
            now_ms.abs_diff(d.received_at_ms) < 1000,
            "{now_ms} vs {}",
            d.received_at_ms
        );
    }

    #[test]
    fn ipv6_record_keeps_its_address_even_when_it_looks_mapped() {
        let addr: IpAddr = "2001:db8::5".parse().unwrap();
        let d = to_datagram(&record(&header(addr, 0), &[]), &Clock::new()).unwrap();
        assert_eq!(d.exporter, addr);
        // A genuine IPv6 packet from ::ffff:a.b.c.d stays IPv6 (family says so).
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let d = to_datagram(&record(&header(mapped, 0), &[]), &Clock::new()).unwrap();
        assert_eq!(d.exporter, mapped);
    }

    #[test]
    fn short_records_are_malformed() {
        let addr = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let rec = record(&header(addr, 10), &[0; 4]);
        assert!(parse_record(&rec).is_none());
        assert!(parse_record(&rec[..20]).is_none());
    }
}
