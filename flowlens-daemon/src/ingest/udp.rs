//! EDGE: the UDP socket path, used when XDP cannot be (no `CAP_BPF`, no interface,
//! `--no-xdp`).
//!
//! One receive thread per worker; each owns one socket per (port, address family), all
//! bound with SO_REUSEPORT so the kernel spreads exporters over the threads, with
//! SO_RCVBUF from `ingestion.receive_buffer_size`. A thread waits in `poll(2)` and
//! drains readable sockets with `recvmmsg(2)` in batches of [`BATCH`], so a busy
//! exporter costs one system call per 64 datagrams. In socket mode, sampling under
//! pressure happens here (1 of N per exporter) before any copy is queued.
#![allow(
    unsafe_code,
    reason = "recvmmsg(2) and poll(2) have no safe std wrapper"
)]

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use socket2::{Domain, Protocol, Socket, Type};

use super::datagram::{RawDatagram, Source, exporter_ip};
use crate::pressure::Sampler;
use crate::seam::Handoff;
use crate::telemetry::metrics as m;

/// Datagrams per `recvmmsg` call.
pub const BATCH: usize = 64;
/// Largest datagram received whole: the payload of the largest jumbo frame (9216-byte
/// MTU). Flow exporters keep datagrams within the path MTU (RFC 7011, UDP transport),
/// so a bigger one is a broken exporter; it arrives truncated (`MSG_TRUNC` gives its
/// real length), is logged once, and is counted as malformed (`truncated`) without
/// decoding. Slots of the UDP maximum (64 `KiB`) made a batch's buffer 4 `MiB`, which
/// cost socket mode 15% of its v9 rate (`cargo xtask bench ingest`: 170k datagrams/s
/// against 200k).
const MAX_DATAGRAM: usize = 9_216;
/// Distance between the receive slots of one batch: a slot plus a cache line.
const SLOT_STRIDE: usize = MAX_DATAGRAM + 64;
/// How often per-exporter receive counts are published.
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// Sockets for one receive thread.
pub struct SocketSet {
    sockets: Vec<UdpSocket>,
}

/// Binds `workers` socket sets: for every port, one socket on `bind` and, when `bind`
/// is the `IPv4` wildcard, one on the `IPv6` wildcard (`IPV6_V6ONLY`) too.
pub fn bind(
    bind: IpAddr,
    ports: &[u16],
    workers: usize,
    receive_buffer: usize,
) -> io::Result<Vec<SocketSet>> {
    let mut addrs = Vec::new();
    for &port in ports {
        addrs.push(SocketAddr::new(bind, port));
        if bind.is_unspecified() && bind.is_ipv4() {
            addrs.push(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port));
        }
    }
    let mut sets = Vec::with_capacity(workers);
    for _ in 0..workers.max(1) {
        let mut sockets = Vec::with_capacity(addrs.len());
        for addr in &addrs {
            match open(*addr, receive_buffer) {
                Ok(s) => sockets.push(s),
                // A host without IPv6 still gets its IPv4 sockets.
                Err(e) if addr.is_ipv6() && bind.is_ipv4() => {
                    tracing::warn!(%addr, error = %e, "skipping IPv6 socket");
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("binding {addr}: {e}"))),
            }
        }
        sets.push(SocketSet { sockets });
    }
    Ok(sets)
}

fn open(addr: SocketAddr, receive_buffer: usize) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    // The kernel caps this at net.core.rmem_max unless we are privileged; either way
    // ask for what is configured.
    if let Err(e) = s.set_recv_buffer_size(receive_buffer) {
        tracing::warn!(%addr, error = %e, "could not set SO_RCVBUF");
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Shared controls of the receive threads.
#[derive(Debug, Clone)]
pub struct Controls {
    pub shutdown: Arc<AtomicBool>,
    /// Userspace 1:N sampling rate (1 = keep all), set by the pressure controller.
    pub sample_rate: Arc<AtomicU32>,
}

/// Starts one receive thread per socket set.
pub fn spawn(
    sets: Vec<SocketSet>,
    handoff: &Handoff,
    controls: &Controls,
) -> io::Result<Vec<JoinHandle<()>>> {
    sets.into_iter()
        .enumerate()
        .map(|(i, set)| {
            let d = handoff.clone();
            let c = controls.clone();
            std::thread::Builder::new()
                .name(format!("flowlens-udp-{i}"))
                .spawn(move || receive_loop(&set, &d, &c))
        })
        .collect()
}

#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    received: u64,
    sampled_out: u64,
    dropped: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn receive_loop(set: &SocketSet, handoff: &Handoff, controls: &Controls) {
    let mut bufs = vec![0u8; BATCH * SLOT_STRIDE];
    let mut counts: HashMap<IpAddr, Counts> = HashMap::new();
    let mut sampler = Sampler::default();
    let mut last_publish = Instant::now();
    let mut warned_truncated = false;
    let mut fds: Vec<libc::pollfd> = set
        .sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    while !controls.shutdown.load(Ordering::Relaxed) {
        let nfds = libc::nfds_t::try_from(fds.len()).unwrap_or(0);
        // SAFETY: `fds` is a valid, exclusively borrowed array of `nfds` pollfd structs
        // that outlives the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), nfds, 100) };
        if ready > 0 {
            for (pfd, sock) in fds.iter_mut().zip(&set.sockets) {
                if pfd.revents & libc::POLLIN == 0 {
                    continue;
                }
                pfd.revents = 0;
                let _ = drain(
                    sock,
                    &mut bufs,
                    handoff,
                    controls,
                    &mut sampler,
                    &mut counts,
                    &mut warned_truncated,
                );
            }
        }
        if last_publish.elapsed() >= PUBLISH_EVERY {
            publish(&mut counts);
            last_publish = Instant::now();
        }
    }
    // Stopping: what the kernel queued for us is read before the sockets close (they
    // close when this thread returns), until a pass over all of them finds nothing.
    loop {
        let mut read = 0;
        for sock in &set.sockets {
            read += drain(
                sock,
                &mut bufs,
                handoff,
                controls,
                &mut sampler,
                &mut counts,
                &mut warned_truncated,
            );
        }
        if read == 0 {
            break;
        }
    }
    publish(&mut counts);
}

/// Reads every queued datagram of one socket; how many it read.
fn drain(
    sock: &UdpSocket,
    bufs: &mut [u8],
    handoff: &Handoff,
    controls: &Controls,
    sampler: &mut Sampler,
    counts: &mut HashMap<IpAddr, Counts>,
    warned_truncated: &mut bool,
) -> usize {
    let mut read = 0;
    loop {
        let mut addrs: [MaybeUninit<libc::sockaddr_storage>; BATCH] =
            [const { MaybeUninit::uninit() }; BATCH];
        let mut iovecs: Vec<libc::iovec> = bufs
            .chunks_exact_mut(SLOT_STRIDE)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: MAX_DATAGRAM,
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovecs
            .iter_mut()
            .zip(addrs.iter_mut())
            .map(|(iov, addr)| {
                // SAFETY: mmsghdr is a plain C struct for which all-zero is valid.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = addr.as_mut_ptr().cast();
                h.msg_hdr.msg_namelen =
                    libc::socklen_t::try_from(size_of::<libc::sockaddr_storage>()).unwrap_or(0);
                h.msg_hdr.msg_iov = std::ptr::from_mut(iov);
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        let vlen = libc::c_uint::try_from(msgs.len()).unwrap_or(0);
        // MSG_TRUNC: a datagram longer than its slot reports its real length.
        // SAFETY: every mmsghdr points at a live iovec over the first MAX_DATAGRAM
        // bytes of a distinct SLOT_STRIDE chunk of `bufs` and at a live
        // sockaddr_storage; all outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                vlen,
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                std::ptr::null_mut(),
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return read;
        };
        if n == 0 {
            return read;
        }
        read += n;
        let received_at_ms = now_ms();
        let rate = controls.sample_rate.load(Ordering::Relaxed).max(1);
        for (i, msg) in msgs.iter().take(n).enumerate() {
            let len = usize::try_from(msg.msg_len).unwrap_or(0);
            // SAFETY: the kernel filled msg_name for each of the `n` received messages.
            let Some(exporter) = (unsafe { sockaddr_ip(addrs[i].as_ptr()) }) else {
                continue;
            };
            let truncated_from = (len > MAX_DATAGRAM).then_some(len);
            if truncated_from.is_some() && !*warned_truncated {
                *warned_truncated = true;
                tracing::warn!(
                    %exporter,
                    len,
                    limit = MAX_DATAGRAM,
                    "datagram larger than the receive limit arrived truncated; counted as \
                     malformed (truncated), not decoded (warned once per receive thread)"
                );
            }
            let c = counts.entry(exporter).or_default();
            c.received += 1;
            if !sampler.keep(exporter, rate) {
                c.sampled_out += 1;
                continue;
            }
            let start = i * SLOT_STRIDE;
            let payload = bufs
                .get(start..start + len.min(MAX_DATAGRAM))
                .unwrap_or(&[])
                .to_vec();
            let d = RawDatagram {
                exporter,
                received_at_ms,
                presample_rate: rate,
                source: Source::Udp,
                payload,
                truncated_from,
            };
            if !handoff.hand(d) {
                c.dropped += 1;
            }
        }
        if n < BATCH {
            return read;
        }
    }
}

/// The source address of a received datagram; IPv4-mapped `IPv6` becomes `IPv4`.
///
/// # Safety
/// `ss` must point at a `sockaddr_storage` filled by the kernel.
unsafe fn sockaddr_ip(ss: *const libc::sockaddr_storage) -> Option<IpAddr> {
    // SAFETY: the caller guarantees `ss` is a valid sockaddr_storage; we read the
    // family first and then the matching struct, which sockaddr_storage is sized and
    // aligned for.
    unsafe {
        match i32::from((*ss).ss_family) {
            libc::AF_INET => {
                let sin = &*ss.cast::<libc::sockaddr_in>();
                Some(IpAddr::V4(u32::from_be(sin.sin_addr.s_addr).into()))
            }
            libc::AF_INET6 => {
                let sin6 = &*ss.cast::<libc::sockaddr_in6>();
                Some(exporter_ip(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

fn publish(counts: &mut HashMap<IpAddr, Counts>) {
    for (exporter, c) in counts.drain() {
        m::ingest_received(exporter, m::SOURCE_UDP, c.received);
        m::ingest_sampled_out(exporter, c.sampled_out);
        m::ingest_dropped(exporter, c.dropped);
    }
}
