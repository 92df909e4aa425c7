//! The XDP fast path against a real kernel: two network namespaces joined by a veth
//! pair, the program attached on the collector side, flow datagrams sent from the peer
//! side, and what comes out of the rings (as `RawDatagram`s) and the program's counters
//! checked exactly.
//!
//! Needs root (`CAP_BPF`, `CAP_NET_ADMIN`, `CAP_SYS_ADMIN` for setns), iproute2, ping, and the
//! BPF object: `$FLOWLENS_EBPF_OBJECT`, or built once per test binary by running
//! `cargo xtask build-ebpf`. Where `CI` is set a missing prerequisite fails the test;
//! elsewhere the test prints why and skips.
//!
//! Every test has its own namespaces (unique names, deleted on drop), its own program
//! instance and maps, so the tests run in parallel. Namespaces are entered per thread
//! (`setns` in a scoped thread), so the test thread itself never changes namespace.
#![allow(
    unsafe_code,
    reason = "VLAN-tagged frames are sent raw through AF_PACKET (libc)"
)]

mod support;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use flowlens_daemon::ingest::datagram::{Dispatcher, RawDatagram, Source, Work};
use flowlens_daemon::ingest::ring::{CpuRing, RingReader, RingReaderOptions};
use flowlens_daemon::ingest::xdp::{
    AttachMode, ExporterLosses, XdpCounters, XdpError, XdpHandle, XdpLogLevel, XdpLogRecord,
    XdpOptions,
};
use flowlens_daemon::seam::Handoff;
use nix::sched::{CpuSet, sched_setaffinity};
use nix::unistd::Pid;
use support::netns::{Net, in_netns, setup};

const C4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const P4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const P4_B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 3);
const C6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const P6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

// ---------------------------------------------------------------------------------
// The collector side: program, rings, readers.

struct Collector {
    // Field order is drop order: readers, then the program (detach), then namespaces.
    reader: Option<RingReader>,
    handle: Option<XdpHandle>,
    /// Rings not read yet (`start_paused`), and the queue readers will fill.
    unread: Option<(Vec<CpuRing>, Dispatcher)>,
    rx: Receiver<Work>,
    net: Net,
}

impl Collector {
    fn start(net: Net, object: &Path, tweak: impl FnOnce(&mut XdpOptions)) -> Self {
        let mut c = Self::start_paused(net, object, tweak);
        c.resume();
        c
    }

    /// Attached, but nobody reads the rings until [`Self::resume`].
    fn start_paused(net: Net, object: &Path, tweak: impl FnOnce(&mut XdpOptions)) -> Self {
        let mut opts = XdpOptions::new(object.to_path_buf(), vec![net.vc.clone()]);
        tweak(&mut opts);
        let mut handle = in_netns(&net.collector, || XdpHandle::load(&opts))
            .unwrap_or_else(|e| panic!("loading the XDP program: {e}"));
        let rings = handle.take_rings().expect("rings");
        let (dispatcher, mut queues) = Dispatcher::new(1, 65_536);
        Self {
            reader: None,
            handle: Some(handle),
            unread: Some((rings, dispatcher)),
            rx: queues.remove(0),
            net,
        }
    }

    fn resume(&mut self) {
        let (rings, dispatcher) = self.unread.take().expect("paused");
        self.reader = Some(
            RingReader::spawn(
                rings,
                &Handoff::from(dispatcher),
                Arc::new(AtomicBool::new(false)),
                &RingReaderOptions::default(),
            )
            .expect("ring readers"),
        );
    }

    fn handle(&mut self) -> &mut XdpHandle {
        self.handle.as_mut().expect("attached")
    }

    fn counters(&mut self) -> XdpCounters {
        self.handle().counters().expect("counters")
    }

    /// Exactly `n` datagrams, then nothing more for a moment.
    fn expect(&self, n: usize) -> Vec<RawDatagram> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        while got.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Work::Datagram(d)) => got.push(d),
                Ok(Work::Mark(_)) => panic!("no marks without a consumer"),
                Err(e) => panic!(
                    "expected {n} datagrams from the rings, got {} ({e}): {got:?}",
                    got.len()
                ),
            }
        }
        if let Ok(Work::Datagram(extra)) = self.rx.recv_timeout(Duration::from_millis(200)) {
            panic!("expected {n} datagrams, got at least one more: {extra:?}");
        }
        got
    }

    /// Leaves the (pinned) program attached for the next daemon, as a stopping daemon
    /// does, and gives the namespaces back for it.
    fn hand_over(mut self) -> Net {
        if let Some(r) = self.reader.take() {
            r.stop();
        }
        self.handle
            .take()
            .expect("attached")
            .hand_over()
            .expect("hand over");
        let Self { net, .. } = self;
        net
    }

    /// Sends `n` tagged datagrams to NetFlow and expects exactly them from the rings.
    fn steers(&mut self, tag: &str, n: usize) {
        let sent = send_tagged(&self.net, tag, n);
        let got: Vec<Vec<u8>> = self.expect(n).into_iter().map(|d| d.payload).collect();
        assert_eq!(sorted(got), sorted(sent));
    }

    /// The program's log records (aya-log) until one satisfies `done`, for at most 5 s.
    fn log_until(&mut self, mut done: impl FnMut(&XdpLogRecord) -> bool) -> Vec<XdpLogRecord> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = Vec::new();
        loop {
            got.extend(self.handle().drain_log());
            if got.iter().any(&mut done) || Instant::now() > deadline {
                return got;
            }
            std::thread::park_timeout(Duration::from_millis(20));
        }
    }

    fn detach(&mut self) {
        if let Some(r) = self.reader.take() {
            let stats = r.stop();
            assert_eq!(stats.malformed, 0, "{stats:?}");
        }
        let mut handle = self.handle.take().expect("attached");
        in_netns(&self.net.collector, || handle.detach()).expect("detach");
        drop(handle);
        let link = self.net.collector_link();
        assert!(!link.contains("xdp"), "still attached after detach: {link}");
    }
}

fn assert_identity(c: &XdpCounters) {
    assert_eq!(
        c.seen,
        c.steered + c.passed + c.sampled_out + c.ring_full,
        "{c:?}"
    );
}

// ---------------------------------------------------------------------------------
// Senders.

/// Sends UDP datagrams from the peer namespace, from `src` to `dst`.
fn send_udp(net: &Net, src: IpAddr, dst: SocketAddr, payloads: &[Vec<u8>]) {
    in_netns(&net.peer, || {
        let s = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind sender");
        for p in payloads {
            s.send_to(p, dst).expect("send");
        }
    });
}

/// A UDP socket in the collector namespace (it receives what the program passes).
fn collector_socket(net: &Net, addr: SocketAddr) -> UdpSocket {
    let s = in_netns(&net.collector, || UdpSocket::bind(addr)).expect("bind collector socket");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s
}

fn recv_all(s: &UdpSocket, n: usize) -> Vec<Vec<u8>> {
    let mut buf = [0u8; 2048];
    (0..n)
        .map(|_| {
            let (len, _) = s.recv_from(&mut buf).expect("datagram reached the stack");
            buf[..len].to_vec()
        })
        .collect()
}

fn payload(tag: &str, i: usize) -> Vec<u8> {
    // Varying lengths, and bytes that are not all printable.
    let mut p = format!("{tag}-{i}-").into_bytes();
    p.extend((0..(i * 37) % 300).map(|b| u8::try_from(b % 251).expect("< 251")));
    p
}

fn sorted(mut v: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    v.sort();
    v
}

// ---------------------------------------------------------------------------------
// Raw frames (VLAN tags, IP options, fragments) through AF_PACKET.

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).expect("folded to 16 bits")
}

fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(8 + payload.len()).expect("small test payload");
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&[0, 0]); // no checksum (allowed for IPv4; XDP never checks)
    v.extend_from_slice(payload);
    v
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, options: &[u8], frag: u16, l4: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let ihl = u8::try_from(5 + options.len() / 4).expect("at most 40 bytes of options");
    let total = u16::try_from(usize::from(ihl) * 4 + l4.len()).expect("small test packet");
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, 17, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    let c = checksum(&h);
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h.extend_from_slice(l4);
    h
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, l4: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(
        &u16::try_from(l4.len())
            .expect("small test packet")
            .to_be_bytes(),
    );
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(l4);
    h
}

/// An Ethernet frame with the given (TPID, TCI) tags, outermost first.
fn eth(dst: [u8; 6], tags: &[(u16, u16)], ethertype: u16, l3: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    for (tpid, tci) in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(l3);
    f
}

/// Sends raw frames out of `ifname` in the peer namespace (the kernel here has no
/// 802.1Q devices, so tagged frames are written whole).
fn send_raw(net: &Net, frames: &[Vec<u8>]) {
    in_netns(&net.peer, || {
        let name = std::ffi::CString::new(net.vp.clone()).expect("no NUL in the name");
        // SAFETY: `name` is a valid NUL-terminated string for the duration of the call.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        assert_ne!(ifindex, 0, "peer veth exists");
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        for f in frames {
            let mut addr = [0u8; 8];
            addr[..6].copy_from_slice(&f[..6]);
            let sll = libc::sockaddr_ll {
                sll_family: u16::try_from(libc::AF_PACKET).expect("AF_PACKET is 17"),
                sll_protocol: 0,
                sll_ifindex: i32::try_from(ifindex).expect("ifindex fits"),
                sll_hatype: 0,
                sll_pkttype: 0,
                sll_halen: 6,
                sll_addr: addr,
            };
            // SAFETY: the buffer and the address are valid for the stated lengths.
            let n = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&raw const sll).cast(),
                    u32::try_from(size_of::<libc::sockaddr_ll>()).expect("20 bytes"),
                )
            };
            assert_eq!(
                usize::try_from(n).ok(),
                Some(f.len()),
                "sendto: {}",
                std::io::Error::last_os_error()
            );
        }
    });
}

// ---------------------------------------------------------------------------------
// Tests.

#[test]
fn steers_netflow_ipfix_sflow_over_ipv4_and_ipv6_and_passes_everything_else() {
    let Some((net, object)) = setup("steer") else {
        return;
    };
    let mut c = Collector::start(net, &object, |_| {});
    assert_eq!(c.handle().attachments()[0].mode, AttachMode::Native);
    let link = c.net.collector_link();
    assert!(link.contains("xdp"), "attached in native mode: {link}");

    // Other traffic first: it must reach the collector's stack untouched.
    let other = collector_socket(&c.net, SocketAddr::new(IpAddr::V4(C4), 9999));
    send_udp(
        &c.net,
        IpAddr::V4(P4),
        SocketAddr::new(IpAddr::V4(C4), 9999),
        &[b"hi".to_vec()],
    );
    assert_eq!(recv_all(&other, 1), vec![b"hi".to_vec()]);
    assert!(
        c.net.ping(IpAddr::V4(C4)),
        "IPv4 ping through the XDP program"
    );
    assert!(
        c.net.ping(IpAddr::V6(C6)),
        "IPv6 ping through the XDP program"
    );

    let mut sent = Vec::new();
    for (i, port) in [2055u16, 4739, 6343].into_iter().enumerate() {
        let p4 = payload(&format!("v4-{port}"), i);
        let p6 = payload(&format!("v6-{port}"), i + 3);
        send_udp(
            &c.net,
            IpAddr::V4(P4),
            SocketAddr::new(IpAddr::V4(C4), port),
            std::slice::from_ref(&p4),
        );
        send_udp(
            &c.net,
            IpAddr::V6(P6),
            SocketAddr::new(IpAddr::V6(C6), port),
            std::slice::from_ref(&p6),
        );
        sent.push((IpAddr::V4(P4), p4));
        sent.push((IpAddr::V6(P6), p6));
    }
    let got = c.expect(sent.len());
    for d in &got {
        assert_eq!(d.source, Source::Xdp);
        assert_eq!(d.presample_rate, 1);
        assert!(
            d.received_at_ms > 1_600_000_000_000,
            "wall-clock ms: {}",
            d.received_at_ms
        );
    }
    let mut got: Vec<_> = got.into_iter().map(|d| (d.exporter, d.payload)).collect();
    got.sort();
    sent.sort();
    assert_eq!(got, sent);

    let k = c.counters();
    assert_identity(&k);
    assert_eq!(k.steered, 6, "{k:?}");
    assert_eq!((k.sampled_out, k.ring_full, k.too_big), (0, 0, 0), "{k:?}");
    // The UDP to 9999, two echo requests, and neighbour discovery at least.
    assert!(k.passed >= 3, "{k:?}");
    c.detach();
}

#[test]
fn vlan_tagged_frames_ip_options_and_qinq_are_steered_fragments_and_extension_headers_pass() {
    let Some((net, object)) = setup("vlan") else {
        return;
    };
    let mut c = Collector::start(net, &object, |_| {});
    let mac = c.net.collector_mac();
    let exp4 = Ipv4Addr::new(192, 0, 2, 10);
    let exp6: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let (dot1q, qinq, opts) = (
        payload("dot1q", 1),
        payload("qinq", 2),
        payload("options", 3),
    );

    let steered = vec![
        // 802.1Q, IPv4 to NetFlow.
        eth(
            mac,
            &[(0x8100, 100)],
            0x0800,
            &ipv4(exp4, C4, &[], 0, &udp(5000, 2055, &dot1q)),
        ),
        // QinQ (802.1ad outer, 802.1Q inner), IPv6 to IPFIX.
        eth(
            mac,
            &[(0x88a8, 10), (0x8100, 20)],
            0x86dd,
            &ipv6(exp6, C6, 17, &udp(5001, 4739, &qinq)),
        ),
        // Untagged IPv4 with 8 bytes of options (two NOPs + padding) to sFlow.
        eth(
            mac,
            &[],
            0x0800,
            &ipv4(
                exp4,
                C4,
                &[1, 1, 1, 0, 0, 0, 0, 0],
                0,
                &udp(5002, 6343, &opts),
            ),
        ),
    ];
    let passed = vec![
        // First fragment (More Fragments set) of a datagram to 2055: the stack's business.
        eth(
            mac,
            &[(0x8100, 100)],
            0x0800,
            &ipv4(exp4, C4, &[], 0x2000, &udp(5003, 2055, &dot1q)),
        ),
        // IPv6 with a hop-by-hop header before UDP: passed, not parsed.
        eth(
            mac,
            &[],
            0x86dd,
            &ipv6(exp6, C6, 0, &{
                let mut hbh = vec![17, 0, 1, 4, 0, 0, 0, 0];
                hbh.extend(udp(5004, 2055, &dot1q));
                hbh
            }),
        ),
        // Three tags: more than the parser accepts.
        eth(
            mac,
            &[(0x88a8, 1), (0x8100, 2), (0x8100, 3)],
            0x0800,
            &ipv4(exp4, C4, &[], 0, &udp(5005, 2055, &dot1q)),
        ),
    ];
    let before = c.counters();
    send_raw(&c.net, &steered);
    send_raw(&c.net, &passed);

    let mut got: Vec<_> = c
        .expect(3)
        .into_iter()
        .map(|d| (d.exporter, d.payload))
        .collect();
    got.sort();
    let mut want = vec![
        (IpAddr::V4(exp4), dot1q),
        (IpAddr::V6(exp6), qinq),
        (IpAddr::V4(exp4), opts),
    ];
    want.sort();
    assert_eq!(got, want);

    let k = c.counters();
    assert_identity(&k);
    assert_eq!(k.steered - before.steered, 3, "{k:?}");
    assert!(k.passed - before.passed >= 3, "{k:?}");
    c.detach();
}

#[test]
fn mirror_mode_passes_steered_datagrams_to_the_stack_too() {
    let Some((net, object)) = setup("mirror") else {
        return;
    };
    let mut c = Collector::start(net, &object, |o| o.mirror = true);
    let sock = collector_socket(&c.net, SocketAddr::new(IpAddr::V4(C4), 2055));
    let payloads: Vec<_> = (0..3).map(|i| payload("mirror", i)).collect();
    send_udp(
        &c.net,
        IpAddr::V4(P4),
        SocketAddr::new(IpAddr::V4(C4), 2055),
        &payloads,
    );

    let ring: Vec<_> = c.expect(3).into_iter().map(|d| d.payload).collect();
    assert_eq!(sorted(ring), sorted(payloads.clone()));
    assert_eq!(sorted(recv_all(&sock, 3)), sorted(payloads));
    let k = c.counters();
    assert_identity(&k);
    assert_eq!(k.steered, 3, "{k:?}");

    // Mirror off at runtime: steered datagrams are consumed again.
    c.handle().set_mirror(false).expect("mirror off");
    send_udp(
        &c.net,
        IpAddr::V4(P4),
        SocketAddr::new(IpAddr::V4(C4), 2055),
        &[b"x".to_vec()],
    );
    assert_eq!(c.expect(1)[0].payload, b"x");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        sock.recv_from(&mut [0u8; 64]).is_err(),
        "consumed datagram reached the stack"
    );
    c.detach();
}

#[test]
fn a_full_ring_drops_and_counts_and_what_fit_arrives() {
    let Some((net, object)) = setup("ringfull") else {
        return;
    };
    // The smallest ring, and nobody reading it yet: it fills after a few dozen records.
    let mut c = Collector::start_paused(net, &object, |o| o.ring_size_bytes = 4096);
    assert!(c.net.ping(IpAddr::V4(C4)), "warm-up ping");
    let dst = SocketAddr::new(IpAddr::V4(C4), 2055);
    let payloads: Vec<Vec<u8>> = (0..500).map(|i| payload("full", i % 7)).collect();
    send_udp(&c.net, IpAddr::V4(P4), dst, &payloads);
    let k = c.counters();
    assert_identity(&k);
    assert!(
        k.ring_full > 0,
        "a 4 KiB ring cannot hold 500 records: {k:?}"
    );
    // Every datagram is either in a ring or counted as dropped for a full one.
    assert_eq!(k.steered + k.ring_full, 500, "{k:?}");
    // ...and the losses are the sender's, by exporter.
    let lost = ExporterLosses {
        sampled_out: 0,
        ring_full: k.ring_full,
    };
    assert_eq!(
        c.handle().per_exporter().expect("per-exporter map"),
        vec![(IpAddr::V4(P4), lost)]
    );
    c.resume();
    let got = c.expect(usize::try_from(k.steered).expect("fits"));
    assert!(got.iter().all(|d| d.exporter == IpAddr::V4(P4)));
    c.detach();
}

#[test]
fn sample_rate_four_keeps_one_in_four_per_exporter() {
    let Some((net, object)) = setup("sample") else {
        return;
    };
    let mut c = Collector::start(net, &object, |_| {});
    c.handle().set_sample_rate(4).expect("set sample rate");
    assert_eq!(c.handle().config().sample_rate, 4);

    // The program samples per exporter *and CPU*; veth runs XDP on the sending CPU, so
    // one pinned sender makes the count exact. Resolve the neighbour first: datagrams
    // queued behind ARP would leave from whichever CPU handles the reply.
    assert!(c.net.ping(IpAddr::V4(C4)), "warm-up ping");
    let dst = SocketAddr::new(IpAddr::V4(C4), 2055);
    in_netns(&c.net.peer, || {
        let mut cpus = CpuSet::new();
        cpus.set(0).expect("cpu 0");
        sched_setaffinity(Pid::from_raw(0), &cpus).expect("pin sender");
        for src in [P4, P4_B] {
            let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(src), 0)).expect("bind");
            for i in 0..20 {
                s.send_to(&payload(&src.to_string(), i), dst).expect("send");
            }
        }
    });

    let got = c.expect(10);
    for src in [P4, P4_B] {
        let kept: Vec<_> = got
            .iter()
            .filter(|d| d.exporter == IpAddr::V4(src))
            .map(|d| d.payload.clone())
            .collect();
        let want: Vec<_> = [0, 4, 8, 12, 16]
            .iter()
            .map(|&i| payload(&src.to_string(), i))
            .collect();
        assert_eq!(sorted(kept), sorted(want), "1 in 4 from {src}");
    }
    assert!(
        got.iter().all(|d| d.presample_rate == 4),
        "rate travels with the datagram"
    );
    let k = c.counters();
    assert_identity(&k);
    assert_eq!((k.steered, k.sampled_out), (10, 30), "{k:?}");
    // The same 30, split by exporter.
    let mut by_exporter = c.handle().per_exporter().expect("per-exporter map");
    by_exporter.sort();
    let fifteen = ExporterLosses {
        sampled_out: 15,
        ring_full: 0,
    };
    assert_eq!(
        by_exporter,
        vec![(IpAddr::V4(P4), fifteen), (IpAddr::V4(P4_B), fifteen)]
    );

    c.handle().set_sample_rate(1).expect("back to 1");
    send_udp(&c.net, IpAddr::V4(P4), dst, &[b"a".to_vec(), b"b".to_vec()]);
    let got = c.expect(2);
    assert!(got.iter().all(|d| d.presample_rate == 1));
    c.detach();
}

#[test]
fn exporter_filter_steers_only_listed_prefixes() {
    let Some((net, object)) = setup("filter") else {
        return;
    };
    let mut c = Collector::start(net, &object, |o| {
        o.exporter_prefixes = vec![
            "10.0.0.3/32".parse().unwrap(),
            "2001:db8::/32".parse().unwrap(),
        ];
    });
    let sock = collector_socket(&c.net, SocketAddr::new(IpAddr::V4(C4), 2055));
    let dst = SocketAddr::new(IpAddr::V4(C4), 2055);
    send_udp(&c.net, IpAddr::V4(P4_B), dst, &[b"listed".to_vec()]);
    send_udp(&c.net, IpAddr::V4(P4), dst, &[b"unlisted".to_vec()]);
    let got = c.expect(1);
    assert_eq!(
        (got[0].exporter, got[0].payload.as_slice()),
        (IpAddr::V4(P4_B), &b"listed"[..])
    );
    assert_eq!(recv_all(&sock, 1), vec![b"unlisted".to_vec()]);
    let k = c.counters();
    assert_identity(&k);
    assert_eq!(k.steered, 1);
    c.detach();
}

#[test]
fn generic_mode_attaches_steers_and_detaches() {
    let Some((net, object)) = setup("generic") else {
        return;
    };
    let mut c = Collector::start(net, &object, |o| {
        o.try_native = false;
        // Wake the reader on every record: the unbatched path works too.
        o.wakeup_bytes = 0;
    });
    assert_eq!(c.handle().attachments()[0].mode, AttachMode::Generic);
    assert!(
        c.net.collector_link().contains("xdpgeneric"),
        "{}",
        c.net.collector_link()
    );
    send_udp(
        &c.net,
        IpAddr::V6(P6),
        SocketAddr::new(IpAddr::V6(C6), 6343),
        &[b"sflow".to_vec()],
    );
    let got = c.expect(1);
    assert_eq!(
        (got[0].exporter, got[0].payload.as_slice()),
        (IpAddr::V6(P6), &b"sflow"[..])
    );
    assert!(c.net.ping(IpAddr::V4(C4)));
    c.detach();
}

#[test]
fn datagrams_over_max_payload_pass_to_the_stack_and_count_as_too_big() {
    let Some((net, object)) = setup("toobig") else {
        return;
    };
    // A 9001-byte payload needs jumbo frames. Native XDP on veth refuses an MTU above
    // one page less headroom, so this runs in generic mode, where the program sees the
    // same (linearised) packet.
    net.set_mtu(9200).expect("jumbo MTU on the veth pair");
    let mut c = Collector::start(net, &object, |o| {
        o.try_native = false;
        o.log_level = XdpLogLevel::Debug;
    });
    assert_eq!(c.handle().attachments()[0].mode, AttachMode::Generic);
    let max = flowlens_ebpf_common::MAX_PAYLOAD;
    let fits: Vec<u8> = (0..max)
        .map(|i| u8::try_from(i % 251).expect("< 251"))
        .collect();
    let mut too_big = fits.clone();
    too_big.push(0xee);

    for (src, dst) in [
        (IpAddr::V4(P4), IpAddr::V4(C4)),
        (IpAddr::V6(P6), IpAddr::V6(C6)),
    ] {
        let before = c.counters();
        let sock = collector_socket(&c.net, SocketAddr::new(dst, 2055));
        send_udp(
            &c.net,
            src,
            SocketAddr::new(dst, 2055),
            &[fits.clone(), too_big.clone()],
        );
        // The largest payload that fits is steered whole...
        let got = c.expect(1);
        assert_eq!((got[0].exporter, got[0].payload.len()), (src, max));
        assert_eq!(got[0].payload, fits);
        // ...one byte more goes to the stack untouched, and is counted.
        let mut buf = vec![0u8; 16_384];
        let (len, _) = sock.recv_from(&mut buf).expect("the stack got it");
        assert_eq!(&buf[..len], too_big.as_slice());
        let k = c.counters();
        assert_identity(&k);
        assert_eq!(k.too_big - before.too_big, 1, "{k:?}");
        assert_eq!(k.steered - before.steered, 1, "{k:?}");
        assert!(k.passed - before.passed >= 1, "{k:?}");
    }
    // The program said why (debug level): the first of the two, at least; the second
    // may fall in the same second on the same CPU and be held back.
    let said = c.log_until(|r| r.message.contains("is over the ring's limit"));
    assert!(
        said.iter().any(|r| r.level == log::Level::Debug
            && r.message
                == format!(
                    "a datagram of {} bytes from ::ffff:{P4} to port 2055 is over the ring's limit of {max}: passed to the stack",
                    max + 1
                )),
        "{said:?}"
    );
    c.detach();
}

/// Frames the program passes on doubt, to flow ports and not: two first fragments to
/// NetFlow, one to a port nobody collects on, a UDP length longer than its packet to IPFIX.
fn doubtful_frames(mac: [u8; 6], exporter: Ipv4Addr) -> Vec<Vec<u8>> {
    let p = payload("doubt", 1);
    let mut bad_len = udp(5006, 4739, &p);
    let claimed = u16::try_from(8 + p.len() + 100).expect("small");
    bad_len[4..6].copy_from_slice(&claimed.to_be_bytes());
    vec![
        eth(
            mac,
            &[],
            0x0800,
            &ipv4(exporter, C4, &[], 0x2000, &udp(5003, 2055, &p)),
        ),
        eth(
            mac,
            &[],
            0x0800,
            &ipv4(exporter, C4, &[], 0x2000, &udp(5003, 2055, &p)),
        ),
        eth(
            mac,
            &[],
            0x0800,
            &ipv4(exporter, C4, &[], 0x2000, &udp(5004, 9999, &p)),
        ),
        eth(mac, &[], 0x0800, &ipv4(exporter, C4, &[], 0, &bad_len)),
    ]
}

#[test]
fn the_program_reports_what_it_passed_on_doubt_and_a_config_abi_mismatch_only_when_asked() {
    let Some((net, object)) = setup("log") else {
        return;
    };
    let exp4 = Ipv4Addr::new(192, 0, 2, 10);
    let mut c = Collector::start(net, &object, |o| o.log_level = XdpLogLevel::Debug);
    let debug_size = c.handle().translated_instructions().expect("program info");
    let mac = c.net.collector_mac();
    let before = c.counters();
    send_raw(&c.net, &doubtful_frames(mac, exp4));
    let said = c.log_until(|r| r.message.contains("UDP length"));
    let fragments: Vec<_> = said
        .iter()
        .filter(|r| r.message.contains("fragmented"))
        .collect();
    // Both fragments to 2055 passed; reported once per CPU and second (the sender's
    // frames arrive on one or two CPUs here), and never the one to port 9999.
    assert!(!fragments.is_empty() && fragments.len() <= 2, "{said:?}");
    for r in &fragments {
        assert_eq!(r.level, log::Level::Debug);
        assert_eq!(
            r.message,
            format!(
                "a fragmented datagram from {exp4} to flow port 2055: passed to the stack, which reassembles it"
            )
        );
    }
    let p = payload("doubt", 1);
    assert!(
        said.iter().any(|r| r.message
            == format!(
                "a UDP length of {} from ::ffff:{exp4} to flow port 4739 does not fit its IP packet: passed to the stack",
                8 + p.len() + 100
            )),
        "{said:?}"
    );
    assert!(!said.iter().any(|r| r.message.contains("9999")), "{said:?}");
    let k = c.counters();
    assert_identity(&k);
    assert_eq!(k.steered, before.steered, "{k:?}");
    // At least the four (the host's own traffic, an IPv6 router solicitation say, may
    // pass meanwhile too).
    assert!(k.passed - before.passed >= 4, "{k:?}");

    // A configuration written for another ABI (as another daemon version would): the
    // program passes everything, says so at error level, and steers again once the
    // right configuration is back.
    let good = c.handle().config();
    let mut other = good;
    other.abi = 99;
    c.handle().overwrite_config(other).expect("write config");
    let sock = collector_socket(&c.net, SocketAddr::new(IpAddr::V4(C4), 2055));
    let dst = SocketAddr::new(IpAddr::V4(C4), 2055);
    send_udp(&c.net, IpAddr::V4(P4), dst, &[b"while mismatched".to_vec()]);
    assert_eq!(recv_all(&sock, 1), vec![b"while mismatched".to_vec()]);
    let said = c.log_until(|r| r.level == log::Level::Error);
    let want = format!(
        "FLOW_CONFIG is for ABI 99 (0: not written yet), this program is ABI {}: passing every packet",
        flowlens_ebpf_common::ABI_VERSION
    );
    assert!(
        said.iter()
            .any(|r| r.level == log::Level::Error && r.message == want),
        "{said:?}"
    );
    c.handle().overwrite_config(good).expect("write config");
    send_udp(&c.net, IpAddr::V4(P4), dst, &[b"configured".to_vec()]);
    assert_eq!(c.expect(1)[0].payload, b"configured");
    // Reporting on changes nothing for what is steered: datagrams of every size.
    let sizes: Vec<Vec<u8>> = [100_usize, 1400, 1472]
        .iter()
        .map(|&n| vec![0x5a; n])
        .collect();
    send_udp(
        &c.net,
        IpAddr::V4(P4),
        SocketAddr::new(IpAddr::V4(C4), 4739),
        &sizes,
    );
    let got: Vec<Vec<u8>> = c.expect(3).into_iter().map(|d| d.payload).collect();
    assert_eq!(sorted(got), sorted(sizes), "{:?}", c.counters());
    c.detach();

    // Off (the default): the same doubtful frames, nothing reported, and the program
    // the kernel runs is smaller: the verifier removed every reporting branch.
    let Some((net, object)) = setup("logoff") else {
        return;
    };
    let mut c = Collector::start(net, &object, |_| {});
    let off_size = c.handle().translated_instructions().expect("program info");
    let mac = c.net.collector_mac();
    let before = c.counters();
    send_raw(&c.net, &doubtful_frames(mac, exp4));
    let deadline = Instant::now() + Duration::from_secs(3);
    while c.counters().passed - before.passed < 4 {
        assert!(Instant::now() < deadline, "{:?}", c.counters());
        std::thread::park_timeout(Duration::from_millis(20));
    }
    assert!(
        off_size < debug_size,
        "instructions with logging off {off_size}, at debug {debug_size}"
    );
    eprintln!("XDP program: {off_size} instructions with logging off, {debug_size} at debug");
    c.detach();
}

/// A bpffs mounted on a fresh directory for one test (this kernel's /sys/fs/bpf is not
/// mounted), unmounted on drop.
struct BpfFs {
    dir: std::path::PathBuf,
}

impl BpfFs {
    fn mount(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("flowlens-bpffs-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("bpffs mount point");
        let out = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&dir)
            .output()
            .expect("mount");
        assert!(out.status.success(), "mount -t bpf: {out:?}");
        Self { dir }
    }

    fn pins(&self) -> std::path::PathBuf {
        self.dir.join("flowlens")
    }

    fn pinned(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.pins())
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }
}

impl Drop for BpfFs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// `n` datagrams to NetFlow from the peer, tagged.
fn send_tagged(net: &Net, tag: &str, n: usize) -> Vec<Vec<u8>> {
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| payload(tag, i)).collect();
    send_udp(
        net,
        IpAddr::V4(P4),
        SocketAddr::new(IpAddr::V4(C4), 2055),
        &payloads,
    );
    payloads
}

#[test]
fn a_pinned_program_stays_attached_and_the_next_daemon_takes_it_over_with_its_rings() {
    let Some((net, object)) = setup("pin") else {
        return;
    };
    let fs = BpfFs::mount("pin");
    let pins = fs.pins();
    // The first daemon never reads its rings: what it leaves in them, and what arrives
    // while no daemon runs, must reach the second.
    let mut first = Collector::start_paused(net, &object, |o| o.pin_dir = Some(pins.clone()));
    assert!(first.handle().is_pinned());
    assert_eq!(first.handle().adopted_rings(), 0);
    let before_handover = send_tagged(&first.net, "first", 5);
    let deadline = Instant::now() + Duration::from_secs(3);
    while first.counters().steered < 5 {
        assert!(Instant::now() < deadline, "{:?}", first.counters());
        std::thread::park_timeout(Duration::from_millis(10));
    }
    let iface = first.net.vc.clone();
    // While a daemon uses the directory, no other may (both would consume the rings).
    let busy = flowlens_daemon::ingest::pin::PinDir::open(&pins, Duration::from_millis(200))
        .expect_err("locked");
    assert!(
        busy.to_string().contains("in use by another daemon"),
        "{busy}"
    );
    assert!(
        fs.pinned().contains(&format!("link-{iface}")),
        "{:?}",
        fs.pinned()
    );
    let net = first.hand_over();
    assert!(
        net.collector_link().contains("xdp"),
        "the program stays attached with no daemon: {}",
        net.collector_link()
    );
    let between = send_tagged(&net, "between", 5);

    let mut second = Collector::start(net, &object, |o| o.pin_dir = Some(pins.clone()));
    let cpus = u32::try_from(aya::util::nr_cpus().expect("cpus")).expect("few");
    assert_eq!(second.handle().adopted_rings(), cpus as usize);
    assert_eq!(second.handle().attachments()[0].mode, AttachMode::TakenOver);
    let after = send_tagged(&second.net, "after", 5);
    let got: Vec<Vec<u8>> = second.expect(15).into_iter().map(|d| d.payload).collect();
    let mut want = before_handover;
    want.extend(between);
    want.extend(after);
    assert_eq!(sorted(got), sorted(want));
    // The counters are the pinned ones: they go on across the handover.
    let k = second.counters();
    assert_identity(&k);
    assert_eq!(k.steered, 15, "{k:?}");

    // A detach leaves nothing behind: no link, no pinned map.
    second.detach();
    assert!(fs.pinned().is_empty(), "{:?}", fs.pinned());
}

#[test]
fn a_pinned_program_whose_lease_ran_out_passes_flow_datagrams_to_the_stack() {
    let Some((net, object)) = setup("lease") else {
        return;
    };
    let fs = BpfFs::mount("lease");
    let pins = fs.pins();
    let mut first = Collector::start(net, &object, |o| {
        o.pin_dir = Some(pins.clone());
        o.lease = Duration::from_secs(3);
    });
    first.steers("leased", 2);
    let net = first.hand_over();
    // No daemon renews the lease (the handover granted a whole one, 3 s): then the
    // program hands flow datagrams to the stack, where a collector's socket gets them.
    std::thread::park_timeout(Duration::from_millis(3500));
    assert!(net.collector_link().contains("xdp"));
    let sock = collector_socket(&net, SocketAddr::new(IpAddr::V4(C4), 2055));
    let sent = send_tagged(&net, "expired", 3);
    assert_eq!(sorted(recv_all(&sock, 3)), sorted(sent));
    drop(sock);

    // The next daemon renews the lease and counts what passed meanwhile.
    let mut second = Collector::start(net, &object, |o| o.pin_dir = Some(pins.clone()));
    let k = second.counters();
    assert_identity(&k);
    assert_eq!(k.lease_expired, 3, "{k:?}");
    second.steers("renewed", 2);
    second.detach();
}

#[test]
fn a_new_ring_size_takes_the_link_over_with_new_rings() {
    let Some((net, object)) = setup("pinsize") else {
        return;
    };
    let fs = BpfFs::mount("pinsize");
    let pins = fs.pins();
    let first = Collector::start_paused(net, &object, |o| {
        o.pin_dir = Some(pins.clone());
        o.ring_size_bytes = 1 << 16;
    });
    send_tagged(&first.net, "old", 3);
    let net = first.hand_over();
    let mut second = Collector::start(net, &object, |o| {
        o.pin_dir = Some(pins.clone());
        o.ring_size_bytes = 1 << 17;
    });
    assert_eq!(second.handle().adopted_rings(), 0);
    assert_eq!(second.handle().attachments()[0].mode, AttachMode::TakenOver);
    second.steers("new", 2);
    second.detach();
}

#[test]
fn an_object_without_the_expected_program_is_an_abi_mismatch() {
    let Some((net, object)) = setup("abi") else {
        return;
    };
    // The same object with its program renamed, as an older build would name it.
    let mut bytes = std::fs::read(&object).expect("object");
    let from = flowlens_ebpf_common::PROGRAM_NAME.as_bytes();
    let to = b"flowlens_xdp_v0";
    let mut i = 0;
    while let Some(at) = bytes[i..].windows(from.len()).position(|w| w == from) {
        bytes[i + at..i + at + from.len()].copy_from_slice(to);
        i += at + from.len();
    }
    let path = std::env::temp_dir().join(format!("flowlens-abi-{}.o", std::process::id()));
    std::fs::write(&path, bytes).expect("write renamed object");
    let opts = XdpOptions::new(path.clone(), vec![net.vc.clone()]);
    let err = in_netns(&net.collector, || XdpHandle::load(&opts)).expect_err("must refuse");
    let _ = std::fs::remove_file(&path);
    assert!(matches!(err, XdpError::AbiMismatch { .. }), "{err}");
    assert!(err.to_string().contains("flowlens_xdp_v0"), "{err}");
    assert!(!net.collector_link().contains("xdp"));
}
