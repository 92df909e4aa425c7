//! EDGE: a fast flow-datagram sender for benchmarks (`flowlens-daemon blast`).
//!
//! Builds realistic export datagrams once (NetFlow v5, v9 and IPFIX with their
//! templates, sFlow with sampled headers; see [`crate::testing`]), then sends them
//! with `sendmmsg(2)` in batches of 64 at a paced rate, so one core can offer several
//! hundred thousand datagrams per second to a collector. Sequence numbers are patched
//! per datagram so collectors that track them see no false loss. Templates are resent
//! every [`TEMPLATE_EVERY`] datagrams, as exporters do.
#![allow(unsafe_code, reason = "sendmmsg(2) has no safe std wrapper")]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::testing::sflow::{self, DatagramSpec, FlowRecordSpec, FlowSampleSpec, SampleSpec};
use crate::testing::wire;

/// Datagrams between template resends.
pub const TEMPLATE_EVERY: u64 = 1000;
const BATCH: usize = 64;

/// Which protocol to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BlastProtocol {
    V5,
    V9,
    Ipfix,
    Sflow,
}

/// What was sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct BlastReport {
    pub datagrams: u64,
    pub flows: u64,
    pub seconds: f64,
}

/// The datagrams of one protocol: an optional template datagram and a data datagram
/// whose sequence field sits at `seq_offset`.
struct Plan {
    template: Option<Vec<u8>>,
    data: Vec<u8>,
    flows_per_datagram: u64,
    seq_offset: usize,
    /// How much the sequence advances per data datagram.
    seq_step: u32,
    /// How much it advances per template datagram (v9 numbers every export packet;
    /// IPFIX numbers data records only).
    template_seq_step: u32,
}

fn plan(proto: BlastProtocol, export_secs: u32) -> Plan {
    match proto {
        BlastProtocol::V5 => {
            let rec = wire::V5Record {
                src: [10, 0, 0, 1],
                dst: [10, 0, 1, 1],
                protocol: 6,
                src_port: 40000,
                dst_port: 443,
                packets: 10,
                bytes: 1500,
                first: 1000,
                last: 2000,
                ..wire::V5Record::default()
            };
            let recs: Vec<_> = (0..30u8)
                .map(|i| wire::V5Record {
                    src: [10, 0, 0, i],
                    ..rec
                })
                .collect();
            Plan {
                template: None,
                data: wire::v5_packet(0, 5000, export_secs, 0, 0, &recs),
                flows_per_datagram: 30,
                seq_offset: 16,
                seq_step: 30,
                template_seq_step: 0,
            }
        }
        BlastProtocol::V9 => {
            let fields = vec![
                (8, 4),
                (12, 4),
                (7, 2),
                (11, 2),
                (4, 1),
                (6, 1),
                (5, 1),
                (1, 4),
                (2, 4),
                (10, 2),
                (14, 2),
                (16, 2),
                (17, 2),
                (22, 4),
                (21, 4),
            ];
            let tpl = wire::v9_template_flowset(&[(256, fields)]);
            let mut data = Vec::new();
            for i in 0..30u8 {
                data.extend_from_slice(&[10, 0, 0, i, 10, 0, 1, i]);
                data.extend_from_slice(&40000u16.to_be_bytes());
                data.extend_from_slice(&443u16.to_be_bytes());
                data.extend_from_slice(&[6, 0x18, 0]);
                data.extend_from_slice(&1500u32.to_be_bytes());
                data.extend_from_slice(&10u32.to_be_bytes());
                data.extend_from_slice(&[0, 1, 0, 2, 0, 0, 0, 0]);
                data.extend_from_slice(&1000u32.to_be_bytes());
                data.extend_from_slice(&2000u32.to_be_bytes());
            }
            Plan {
                template: Some(wire::v9_packet(0, 5000, export_secs, 0, &[tpl])),
                data: wire::v9_packet(0, 5000, export_secs, 0, &[wire::data_set(256, &data, 0)]),
                flows_per_datagram: 30,
                seq_offset: 12,
                seq_step: 1,
                template_seq_step: 1,
            }
        }
        BlastProtocol::Ipfix => {
            let f = [
                wire::Ie::new(8, 4),
                wire::Ie::new(12, 4),
                wire::Ie::new(7, 2),
                wire::Ie::new(11, 2),
                wire::Ie::new(4, 1),
                wire::Ie::new(6, 1),
                wire::Ie::new(1, 8),
                wire::Ie::new(2, 8),
                wire::Ie::new(10, 4),
                wire::Ie::new(14, 4),
                wire::Ie::new(152, 8),
                wire::Ie::new(153, 8),
            ];
            let tpl = wire::ipfix_template_set(2, &[(256, &f[..])]);
            let start_ms = u64::from(export_secs) * 1000 - 2000;
            let mut data = Vec::new();
            for i in 0..25u8 {
                data.extend_from_slice(&[10, 0, 0, i, 10, 0, 1, i]);
                data.extend_from_slice(&40000u16.to_be_bytes());
                data.extend_from_slice(&443u16.to_be_bytes());
                data.extend_from_slice(&[6, 0x18]);
                data.extend_from_slice(&1500u64.to_be_bytes());
                data.extend_from_slice(&10u64.to_be_bytes());
                data.extend_from_slice(&1u32.to_be_bytes());
                data.extend_from_slice(&2u32.to_be_bytes());
                data.extend_from_slice(&start_ms.to_be_bytes());
                data.extend_from_slice(&(start_ms + 1000).to_be_bytes());
            }
            Plan {
                template: Some(wire::ipfix_message(export_secs, 0, 0, &[tpl])),
                data: wire::ipfix_message(export_secs, 0, 0, &[wire::data_set(256, &data, 0)]),
                flows_per_datagram: 25,
                seq_offset: 8,
                seq_step: 25,
                template_seq_step: 0,
            }
        }
        BlastProtocol::Sflow => {
            let frame = sflow::ethernet(
                &[],
                sflow::ETHERTYPE_IPV4,
                &sflow::ipv4(
                    Ipv4Addr::new(10, 0, 0, 1),
                    Ipv4Addr::new(10, 0, 1, 1),
                    6,
                    0,
                    &sflow::tcp(40000, 443, 0x18),
                ),
            );
            let sample = SampleSpec::Flow(FlowSampleSpec::new(vec![FlowRecordSpec::Header {
                protocol: 1,
                frame_length: 1500,
                stripped: 4,
                header: frame,
            }]));
            let spec = DatagramSpec::new(Ipv4Addr::new(192, 0, 2, 1).into(), vec![sample; 8]);
            Plan {
                template: None,
                data: sflow::encode_datagram(&spec),
                flows_per_datagram: 8,
                // version, address type, IPv4 agent, sub-agent id, then the sequence.
                seq_offset: 16,
                seq_step: 1,
                template_seq_step: 0,
            }
        }
    }
}

/// Sends `count` data datagrams (plus templates) to `target` at about `rate` datagrams
/// per second (0 = as fast as possible).
pub fn blast(
    proto: BlastProtocol,
    target: SocketAddr,
    count: u64,
    rate: u64,
) -> std::io::Result<BlastReport> {
    let bind: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0".parse()
    } else {
        "[::]:0".parse()
    }
    .map_err(|e: std::net::AddrParseError| std::io::Error::other(e.to_string()))?;
    let sock = UdpSocket::bind(bind)?;
    sock.connect(target)?;
    let export_secs = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
    .unwrap_or(u32::MAX);
    let mut p = plan(proto, export_secs);
    let mut batch: Vec<Vec<u8>> = vec![p.data.clone(); BATCH];
    let started = Instant::now();
    let mut sent = 0u64;
    let mut seq = 0u32;
    while sent < count {
        if let Some(t) = p.template.as_mut()
            && sent % TEMPLATE_EVERY < BATCH as u64
        {
            if let Some(field) = t.get_mut(p.seq_offset..p.seq_offset + 4) {
                field.copy_from_slice(&seq.to_be_bytes());
            }
            seq = seq.wrapping_add(p.template_seq_step);
            sock.send(t)?;
        }
        let n = usize::try_from((count - sent).min(BATCH as u64)).unwrap_or(BATCH);
        for d in batch.iter_mut().take(n) {
            if let Some(field) = d.get_mut(p.seq_offset..p.seq_offset + 4) {
                field.copy_from_slice(&seq.to_be_bytes());
            }
            seq = seq.wrapping_add(p.seq_step);
        }
        send_batch(&sock, batch.get(..n).unwrap_or(&[]))?;
        sent += n as u64;
        if rate > 0 {
            #[expect(clippy::cast_precision_loss, reason = "pacing arithmetic")]
            let due = Duration::from_secs_f64(sent as f64 / rate as f64);
            while started.elapsed() < due {
                std::hint::spin_loop();
            }
        }
    }
    Ok(BlastReport {
        datagrams: sent,
        flows: sent * p.flows_per_datagram,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// A trafgen(8) packet configuration for `proto`: `cycle` Ethernet/IPv4/UDP frames
/// from `source` to `target` (whose MAC is `dst_mac`) that trafgen sends round-robin.
/// For template protocols frame 0 is the template datagram, so every cycle starts by
/// resending it; the data frames carry consecutive sequence numbers (the wrap at the
/// end of a cycle looks like one exporter restart per cycle to a collector).
///
/// trafgen sends from a packet socket straight into the device, skipping the sender's
/// UDP stack: on a veth pair that leaves more of the machine to the collector than
/// `sendmmsg` does.
pub fn trafgen_config(
    proto: BlastProtocol,
    dst_mac: [u8; 6],
    source: std::net::SocketAddrV4,
    target: std::net::SocketAddrV4,
    cycle: usize,
) -> TrafgenConfig {
    use std::fmt::Write as _;
    let export_secs = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
    .unwrap_or(u32::MAX);
    let mut p = plan(proto, export_secs);
    let mac = dst_mac
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":");
    let mut text = String::new();
    let mut frame = |payload: &[u8]| {
        let _ = write!(
            text,
            "{{ eth(da={mac}, type=0x0800), ipv4(sa={}, da={}, ttl=64, df), udp(sp={}, dp={})",
            source.ip(),
            target.ip(),
            source.port(),
            target.port()
        );
        for b in payload {
            let _ = write!(text, ", 0x{b:02x}");
        }
        text.push_str(" }\n");
    };
    let mut seq = 0u32;
    let mut templates = 0;
    let cycle = cycle.max(2);
    for i in 0..cycle {
        if i == 0
            && let Some(t) = p.template.as_mut()
        {
            if let Some(field) = t.get_mut(p.seq_offset..p.seq_offset + 4) {
                field.copy_from_slice(&seq.to_be_bytes());
            }
            seq = seq.wrapping_add(p.template_seq_step);
            frame(t);
            templates = 1;
            continue;
        }
        if let Some(field) = p.data.get_mut(p.seq_offset..p.seq_offset + 4) {
            field.copy_from_slice(&seq.to_be_bytes());
        }
        seq = seq.wrapping_add(p.seq_step);
        frame(&p.data);
    }
    TrafgenConfig {
        text,
        frames: cycle,
        templates_per_cycle: templates,
        flows_per_datagram: p.flows_per_datagram,
    }
}

/// A trafgen configuration and what one cycle of it holds.
#[derive(Debug, Clone)]
pub struct TrafgenConfig {
    pub text: String,
    /// Frames per cycle.
    pub frames: usize,
    /// Template frames per cycle (0 or 1, the first).
    pub templates_per_cycle: usize,
    pub flows_per_datagram: u64,
}

impl TrafgenConfig {
    /// Flows in the first `count` frames trafgen sends (one process, round-robin).
    pub fn flows_in(&self, count: u64) -> u64 {
        let frames = self.frames as u64;
        let templates = if self.templates_per_cycle == 0 {
            0
        } else {
            count.div_ceil(frames)
        };
        (count - templates.min(count)) * self.flows_per_datagram
    }
}

fn send_batch(sock: &UdpSocket, datagrams: &[Vec<u8>]) -> std::io::Result<()> {
    let mut iovecs: Vec<libc::iovec> = datagrams
        .iter()
        .map(|d| libc::iovec {
            iov_base: d.as_ptr().cast_mut().cast(),
            iov_len: d.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = iovecs
        .iter_mut()
        .map(|iov| {
            // SAFETY: mmsghdr is a plain C struct for which all-zero is valid.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = std::ptr::from_mut(iov);
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    let mut done = 0usize;
    while done < msgs.len() {
        let rest = msgs.get_mut(done..).unwrap_or(&mut []);
        let vlen = libc::c_uint::try_from(rest.len()).unwrap_or(0);
        // SAFETY: every header points at a live iovec over a live datagram buffer; the
        // kernel only reads them (the socket is connected, so no msg_name).
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), rest.as_mut_ptr(), vlen, 0) };
        if let Ok(n) = usize::try_from(n) {
            done += n;
        } else {
            let e = std::io::Error::last_os_error();
            // ENOBUFS/EAGAIN: the device queue is full; try again.
            if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::EAGAIN)) {
                std::hint::spin_loop();
                continue;
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Datagram, Decoder};

    #[test]
    fn trafgen_config_frames_and_flow_counts() {
        let src = "10.0.0.2:5000".parse().unwrap();
        let dst = "10.0.0.1:2055".parse().unwrap();
        let c = trafgen_config(BlastProtocol::V9, [2, 0, 0, 0, 0, 1], src, dst, 4);
        assert_eq!(c.text.lines().count(), 4);
        assert!(c.text.starts_with(
            "{ eth(da=02:00:00:00:00:01, type=0x0800), ipv4(sa=10.0.0.2, da=10.0.0.1, \
             ttl=64, df), udp(sp=5000, dp=2055), 0x00, 0x09,"
        ));
        // Frames 0 and 4 are templates: 6 data frames of 30 flows in the first 8.
        assert_eq!(c.flows_in(8), 6 * 30);
        assert_eq!(c.flows_in(5), 3 * 30);
        let s = trafgen_config(BlastProtocol::Sflow, [2, 0, 0, 0, 0, 1], src, dst, 4);
        assert_eq!(s.flows_in(8), 8 * 8);
    }

    #[test]
    fn every_plan_decodes_to_its_flow_count_with_templates_first() {
        for proto in [
            BlastProtocol::V5,
            BlastProtocol::V9,
            BlastProtocol::Ipfix,
            BlastProtocol::Sflow,
        ] {
            let p = plan(proto, 1_767_225_600);
            let mut d = Decoder::default();
            let mut out = Vec::new();
            let exporter = "192.0.2.1".parse().unwrap();
            if let Some(t) = &p.template {
                d.decode(
                    &Datagram {
                        exporter,
                        received_at_ms: 0,
                        payload: t,
                    },
                    &mut out,
                )
                .unwrap();
            }
            let first = p.template_seq_step;
            let mut data = p.data.clone();
            for seq in [first, first + p.seq_step] {
                data[p.seq_offset..p.seq_offset + 4].copy_from_slice(&seq.to_be_bytes());
                d.decode(
                    &Datagram {
                        exporter,
                        received_at_ms: 0,
                        payload: &data,
                    },
                    &mut out,
                )
                .unwrap();
            }
            assert_eq!(out.len() as u64, 2 * p.flows_per_datagram, "{proto:?}");
            let c = d.totals();
            assert_eq!((c.sequence_gaps, c.sequence_resets), (0, 0), "{proto:?}");
        }
    }
}
