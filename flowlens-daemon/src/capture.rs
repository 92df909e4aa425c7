//! Reading flow datagrams out of pcap and pcapng captures (for the `decode` command).
//!
//! PURE: it parses bytes already read from a file. Supports classic pcap (micro- and
//! nanosecond, either byte order) and pcapng (enhanced, simple and obsolete packet
//! blocks, per-interface link type and `if_tsresol`), and the link layers flow captures
//! come in: Ethernet (with 802.1Q/802.1ad tags), Linux cooked v1 and v2, raw IP, and
//! BSD loopback. It returns the UDP datagrams (any port) with their source address and
//! capture time; everything else is counted as skipped. IP fragments are skipped (and
//! counted) because reassembly is not implemented: flow exporters keep datagrams under
//! the path MTU.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A capture-level error: the file is not a capture we can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    #[error("not a pcap or pcapng file (magic {magic:#010x})")]
    UnknownFormat { magic: u32 },
    #[error("capture truncated at offset {offset}")]
    Truncated { offset: usize },
    #[error("bad pcapng block length {length} at offset {offset}")]
    BadBlock { offset: usize, length: usize },
}

/// One captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub linktype: u32,
    /// Capture time, ms since the Unix epoch.
    pub ts_ms: u64,
    pub data: &'a [u8],
}

/// A UDP datagram found in a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpDatagram<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub payload: &'a [u8],
}

/// Why a frame yielded no UDP datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Not IP/UDP (ARP, TCP, ...), or an unsupported link type.
    NotUdp,
    /// An IP fragment.
    Fragment,
    /// Headers cut short by the snap length or malformed.
    Truncated,
}

const LINKTYPE_NULL: u32 = 0;
const LINKTYPE_ETHERNET: u32 = 1;
const LINKTYPE_RAW: u32 = 101;
const LINKTYPE_LINUX_SLL: u32 = 113;
const LINKTYPE_IPV4: u32 = 228;
const LINKTYPE_IPV6: u32 = 229;
const LINKTYPE_LINUX_SLL2: u32 = 276;

fn get<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    data.get(at..at.checked_add(N)?)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
}

/// Reads every frame of a pcap or pcapng file held in memory.
pub fn frames(data: &[u8]) -> Result<Vec<Frame<'_>>, CaptureError> {
    let magic = get::<4>(data, 0).ok_or(CaptureError::Truncated { offset: 0 })?;
    match u32::from_le_bytes(magic) {
        0xa1b2_c3d4 | 0xa1b2_3c4d | 0xd4c3_b2a1 | 0x4d3c_b2a1 => pcap(data),
        0x0a0d_0d0a => pcapng(data),
        other => Err(CaptureError::UnknownFormat { magic: other }),
    }
}

fn pcap(data: &[u8]) -> Result<Vec<Frame<'_>>, CaptureError> {
    let magic = get::<4>(data, 0).ok_or(CaptureError::Truncated { offset: 0 })?;
    let le = matches!(u32::from_le_bytes(magic), 0xa1b2_c3d4 | 0xa1b2_3c4d);
    let nanos = matches!(u32::from_le_bytes(magic), 0xa1b2_3c4d | 0x4d3c_b2a1);
    let u32_at = |at: usize| {
        get::<4>(data, at)
            .map(|b| {
                if le {
                    u32::from_le_bytes(b)
                } else {
                    u32::from_be_bytes(b)
                }
            })
            .ok_or(CaptureError::Truncated { offset: at })
    };
    // The link type's low 16 bits (the upper bits carry FCS info in some writers).
    let linktype = u32_at(20)? & 0xFFFF;
    let mut frames = Vec::new();
    let mut at = 24;
    while at < data.len() {
        let secs = u64::from(u32_at(at)?);
        let frac = u64::from(u32_at(at + 4)?);
        let caplen = usize::try_from(u32_at(at + 8)?).unwrap_or(usize::MAX);
        let start = at + 16;
        let body = data
            .get(start..start.saturating_add(caplen))
            .ok_or(CaptureError::Truncated { offset: at })?;
        let frac_ms = if nanos {
            frac / 1_000_000
        } else {
            frac / 1_000
        };
        frames.push(Frame {
            linktype,
            ts_ms: secs * 1000 + frac_ms,
            data: body,
        });
        at = start + caplen;
    }
    Ok(frames)
}

/// pcapng (draft-ietf-opsawg-pcapng): sections, interfaces, packet blocks.
fn pcapng(data: &[u8]) -> Result<Vec<Frame<'_>>, CaptureError> {
    let mut frames = Vec::new();
    let mut le = true;
    // Per interface of the current section: (link type, units per second).
    let mut interfaces: Vec<(u32, u64)> = Vec::new();
    let mut at = 0usize;
    while at + 12 <= data.len() {
        let raw_type = get::<4>(data, at).ok_or(CaptureError::Truncated { offset: at })?;
        if u32::from_le_bytes(raw_type) == 0x0a0d_0d0a {
            // Section header: the byte-order magic decides endianness for the section.
            let bom = get::<4>(data, at + 8).ok_or(CaptureError::Truncated { offset: at })?;
            le = u32::from_le_bytes(bom) == 0x1a2b_3c4d;
            interfaces.clear();
        }
        let u32_at = |o: usize| {
            get::<4>(data, o)
                .map(|b| {
                    if le {
                        u32::from_le_bytes(b)
                    } else {
                        u32::from_be_bytes(b)
                    }
                })
                .ok_or(CaptureError::Truncated { offset: o })
        };
        let u16_at = |o: usize| {
            get::<2>(data, o)
                .map(|b| {
                    if le {
                        u16::from_le_bytes(b)
                    } else {
                        u16::from_be_bytes(b)
                    }
                })
                .ok_or(CaptureError::Truncated { offset: o })
        };
        let block_type = u32_at(at)?;
        let len = usize::try_from(u32_at(at + 4)?).unwrap_or(usize::MAX);
        if len < 12 || len % 4 != 0 || at.saturating_add(len) > data.len() {
            return Err(CaptureError::BadBlock {
                offset: at,
                length: len,
            });
        }
        let body = data.get(at + 8..at + len - 4).unwrap_or(&[]);
        let ts = |high: u32, low: u32, iface: usize| -> u64 {
            let units = interfaces.get(iface).map_or(1_000_000, |i| i.1).max(1);
            let raw = (u64::from(high) << 32) | u64::from(low);
            u64::try_from(u128::from(raw) * 1000 / u128::from(units)).unwrap_or(u64::MAX)
        };
        match block_type {
            // Interface description: link type, then options (if_tsresol = 9).
            1 => {
                let linktype = u32::from(u16_at(at + 8)?);
                let mut units = 1_000_000u64;
                let mut o = at + 16;
                while o + 4 <= at + len - 4 {
                    let code = u16_at(o)?;
                    let olen = usize::from(u16_at(o + 2)?);
                    if code == 0 {
                        break;
                    }
                    if code == 9 && olen >= 1 {
                        let v = data.get(o + 4).copied().unwrap_or(6);
                        units = if v & 0x80 != 0 {
                            1u64.checked_shl(u32::from(v & 0x7F)).unwrap_or(u64::MAX)
                        } else {
                            10u64.checked_pow(u32::from(v)).unwrap_or(u64::MAX)
                        };
                    }
                    o += 4 + olen.div_ceil(4) * 4;
                }
                interfaces.push((linktype, units));
            }
            // Enhanced packet block (interface id u32) and the obsolete packet block
            // (interface id u16 + drops u16): the rest of their layout is the same.
            6 | 2 => {
                let iface = if block_type == 6 {
                    usize::try_from(u32_at(at + 8)?).unwrap_or(usize::MAX)
                } else {
                    usize::from(u16_at(at + 8)?)
                };
                let t = ts(u32_at(at + 12)?, u32_at(at + 16)?, iface);
                let caplen = usize::try_from(u32_at(at + 20)?).unwrap_or(usize::MAX);
                let pkt =
                    body.get(20..20usize.saturating_add(caplen))
                        .ok_or(CaptureError::BadBlock {
                            offset: at,
                            length: len,
                        })?;
                let linktype = interfaces.get(iface).map_or(LINKTYPE_ETHERNET, |i| i.0);
                frames.push(Frame {
                    linktype,
                    ts_ms: t,
                    data: pkt,
                });
            }
            // Simple packet block: no timestamp, interface 0.
            3 => {
                let orig = usize::try_from(u32_at(at + 8)?).unwrap_or(usize::MAX);
                let pkt = body.get(4..).unwrap_or(&[]);
                let pkt = pkt.get(..orig.min(pkt.len())).unwrap_or(pkt);
                let linktype = interfaces.first().map_or(LINKTYPE_ETHERNET, |i| i.0);
                frames.push(Frame {
                    linktype,
                    ts_ms: 0,
                    data: pkt,
                });
            }
            _ => {}
        }
        at += len;
    }
    Ok(frames)
}

/// Extracts the UDP datagram of a frame.
pub fn udp<'a>(frame: &Frame<'a>) -> Result<UdpDatagram<'a>, Skip> {
    let d = frame.data;
    let (ethertype, l3) = match frame.linktype {
        LINKTYPE_ETHERNET => ethernet(d)?,
        LINKTYPE_RAW | LINKTYPE_IPV4 | LINKTYPE_IPV6 => match d.first().map(|b| b >> 4) {
            Some(4) => (0x0800, d),
            Some(6) => (0x86DD, d),
            _ => return Err(Skip::NotUdp),
        },
        LINKTYPE_LINUX_SLL => {
            let et = get::<2>(d, 14).ok_or(Skip::Truncated)?;
            (u16::from_be_bytes(et), d.get(16..).ok_or(Skip::Truncated)?)
        }
        LINKTYPE_LINUX_SLL2 => {
            let et = get::<2>(d, 0).ok_or(Skip::Truncated)?;
            (u16::from_be_bytes(et), d.get(20..).ok_or(Skip::Truncated)?)
        }
        LINKTYPE_NULL => {
            // BSD loopback: address family in host byte order (2 = IPv4; 24/28/30 = v6).
            let af = get::<4>(d, 0).ok_or(Skip::Truncated)?;
            let af = u32::from_le_bytes(af).min(u32::from_be_bytes(af));
            let et = if af == 2 { 0x0800 } else { 0x86DD };
            (et, d.get(4..).ok_or(Skip::Truncated)?)
        }
        _ => return Err(Skip::NotUdp),
    };
    match ethertype {
        0x0800 => ipv4(l3),
        0x86DD => ipv6(l3),
        _ => Err(Skip::NotUdp),
    }
}

fn ethernet(d: &[u8]) -> Result<(u16, &[u8]), Skip> {
    let mut at = 12;
    let mut et = u16::from_be_bytes(get::<2>(d, at).ok_or(Skip::Truncated)?);
    // Up to two VLAN tags (802.1Q, 802.1ad QinQ).
    for _ in 0..2 {
        if et == 0x8100 || et == 0x88A8 {
            at += 4;
            et = u16::from_be_bytes(get::<2>(d, at).ok_or(Skip::Truncated)?);
        }
    }
    Ok((et, d.get(at + 2..).ok_or(Skip::Truncated)?))
}

fn ipv4(d: &[u8]) -> Result<UdpDatagram<'_>, Skip> {
    let vihl = *d.first().ok_or(Skip::Truncated)?;
    let ihl = usize::from(vihl & 0x0F) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return Err(Skip::Truncated);
    }
    let total = usize::from(u16::from_be_bytes(get::<2>(d, 2).ok_or(Skip::Truncated)?));
    let frag = u16::from_be_bytes(get::<2>(d, 6).ok_or(Skip::Truncated)?);
    let proto = *d.get(9).ok_or(Skip::Truncated)?;
    let src = Ipv4Addr::from(get::<4>(d, 12).ok_or(Skip::Truncated)?);
    let dst = Ipv4Addr::from(get::<4>(d, 16).ok_or(Skip::Truncated)?);
    if proto != 17 {
        return Err(Skip::NotUdp);
    }
    // More-fragments flag or a non-zero offset.
    if frag & 0x3FFF != 0 {
        return Err(Skip::Fragment);
    }
    // Trailing Ethernet padding is not part of the IP packet.
    let end = if total >= ihl {
        total.min(d.len())
    } else {
        d.len()
    };
    udp_in(
        d.get(ihl..end).ok_or(Skip::Truncated)?,
        IpAddr::V4(src),
        IpAddr::V4(dst),
    )
}

fn ipv6(d: &[u8]) -> Result<UdpDatagram<'_>, Skip> {
    let payload_len = usize::from(u16::from_be_bytes(get::<2>(d, 4).ok_or(Skip::Truncated)?));
    let mut next = *d.get(6).ok_or(Skip::Truncated)?;
    let src = Ipv6Addr::from(get::<16>(d, 8).ok_or(Skip::Truncated)?);
    let dst = Ipv6Addr::from(get::<16>(d, 24).ok_or(Skip::Truncated)?);
    let end = (40 + payload_len).min(d.len());
    let mut at = 40;
    // Skip extension headers: hop-by-hop, routing, destination options; a fragment
    // header means a fragment.
    loop {
        match next {
            17 => break,
            0 | 43 | 60 => {
                next = *d.get(at).ok_or(Skip::Truncated)?;
                at += (usize::from(*d.get(at + 1).ok_or(Skip::Truncated)?) + 1) * 8;
            }
            44 => return Err(Skip::Fragment),
            _ => return Err(Skip::NotUdp),
        }
    }
    udp_in(
        d.get(at..end).ok_or(Skip::Truncated)?,
        IpAddr::V6(src),
        IpAddr::V6(dst),
    )
}

fn udp_in(d: &[u8], src: IpAddr, dst: IpAddr) -> Result<UdpDatagram<'_>, Skip> {
    let src_port = u16::from_be_bytes(get::<2>(d, 0).ok_or(Skip::Truncated)?);
    let dst_port = u16::from_be_bytes(get::<2>(d, 2).ok_or(Skip::Truncated)?);
    let len = usize::from(u16::from_be_bytes(get::<2>(d, 4).ok_or(Skip::Truncated)?));
    if len < 8 || len > d.len() {
        return Err(Skip::Truncated);
    }
    let payload = d.get(8..len).ok_or(Skip::Truncated)?;
    Ok(UdpDatagram {
        src,
        dst,
        src_port,
        dst_port,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp4_frame(payload: &[u8], vlan: bool) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        if vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0A]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        let total = u16::try_from(20 + 8 + payload.len()).unwrap();
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f[if vlan { 18 } else { 14 } + 2..][..2].copy_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&1234u16.to_be_bytes());
        f.extend_from_slice(&2055u16.to_be_bytes());
        f.extend_from_slice(&u16::try_from(8 + payload.len()).unwrap().to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f.extend_from_slice(&[0; 4]); // Ethernet padding
        f
    }

    fn pcap_file(frames: &[Vec<u8>], linktype: u32) -> Vec<u8> {
        let mut p = Vec::new();
        p.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&4u16.to_le_bytes());
        p.extend_from_slice(&[0; 8]);
        p.extend_from_slice(&65535u32.to_le_bytes());
        p.extend_from_slice(&linktype.to_le_bytes());
        for (i, f) in frames.iter().enumerate() {
            p.extend_from_slice(&(1_700_000_000u32 + u32::try_from(i).unwrap()).to_le_bytes());
            p.extend_from_slice(&250_000u32.to_le_bytes());
            let n = u32::try_from(f.len()).unwrap();
            p.extend_from_slice(&n.to_le_bytes());
            p.extend_from_slice(&n.to_le_bytes());
            p.extend_from_slice(f);
        }
        p
    }

    #[test]
    fn reads_pcap_ethernet_and_vlan() {
        let file = pcap_file(&[udp4_frame(b"hello", false), udp4_frame(b"vlan", true)], 1);
        let frames = frames(&file).unwrap();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].ts_ms, 1_700_000_000_250);
        let d = udp(&frames[0]).unwrap();
        assert_eq!(d.payload, b"hello");
        assert_eq!(d.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(d.dst_port, 2055);
        assert_eq!(udp(&frames[1]).unwrap().payload, b"vlan");
    }

    #[test]
    fn reads_pcapng_with_nanosecond_resolution() {
        let frame = udp4_frame(b"ng", false);
        let mut f = Vec::new();
        // SHB
        f.extend_from_slice(&0x0a0d_0d0au32.to_le_bytes());
        f.extend_from_slice(&28u32.to_le_bytes());
        f.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
        f.extend_from_slice(&[1, 0, 0, 0]);
        f.extend_from_slice(&u64::MAX.to_le_bytes());
        f.extend_from_slice(&28u32.to_le_bytes());
        // IDB with if_tsresol = 9 (ns)
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&32u32.to_le_bytes());
        f.extend_from_slice(&1u16.to_le_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&[9, 0, 1, 0, 9, 0, 0, 0]);
        f.extend_from_slice(&[0, 0, 0, 0]);
        f.extend_from_slice(&32u32.to_le_bytes());
        // EPB
        let padded = frame.len().div_ceil(4) * 4;
        let blen = u32::try_from(32 + padded).unwrap();
        let ts: u64 = 1_700_000_000_123_456_789;
        f.extend_from_slice(&6u32.to_le_bytes());
        f.extend_from_slice(&blen.to_le_bytes());
        f.extend_from_slice(&0u32.to_le_bytes());
        f.extend_from_slice(&u32::try_from(ts >> 32).unwrap().to_le_bytes());
        f.extend_from_slice(&u32::try_from(ts & 0xFFFF_FFFF).unwrap().to_le_bytes());
        let n = u32::try_from(frame.len()).unwrap();
        f.extend_from_slice(&n.to_le_bytes());
        f.extend_from_slice(&n.to_le_bytes());
        f.extend_from_slice(&frame);
        f.resize(f.len() + padded - frame.len(), 0);
        f.extend_from_slice(&blen.to_le_bytes());
        let frames = frames(&f).unwrap();
        assert_eq!(frames.len(), 1);
        assert_eq!(frames[0].ts_ms, 1_700_000_000_123);
        assert_eq!(udp(&frames[0]).unwrap().payload, b"ng");
    }

    #[test]
    fn rejects_garbage_and_skips_fragments() {
        assert_eq!(
            frames(b"nope").unwrap_err(),
            CaptureError::UnknownFormat { magic: 0x6570_6f6e }
        );
        let mut frag = udp4_frame(b"x", false);
        frag[14 + 6] = 0x20; // more fragments
        let fr = Frame {
            linktype: 1,
            ts_ms: 0,
            data: &frag,
        };
        assert_eq!(udp(&fr).unwrap_err(), Skip::Fragment);
    }
}
