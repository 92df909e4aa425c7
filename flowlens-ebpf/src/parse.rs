//! Bounds-checked header access: Ethernet, up to two VLAN tags, IPv4 or IPv6, UDP.
//!
//! Every packet byte is read through [`ptr_at`], the one place that compares against
//! `data_end` (the verifier rejects any packet access it cannot prove in bounds). Headers
//! are read as byte arrays, so there are no alignment assumptions and fields are decoded
//! explicitly big-endian. Anything this parser does not fully understand returns `None`
//! and the caller passes the packet: IPv4 fragments (only the first carries the UDP
//! header, and the stack reassembles), IPv6 extension headers, more than two VLAN tags,
//! truncated or inconsistent lengths. Those to a flow port are reported through
//! [`crate::report`] when debug logging is on.

use aya_ebpf::programs::XdpContext;
use aya_log_ebpf::debug;

use crate::FLOW_PORTS;
use crate::report::{self, Event, Level};

/// Ethernet header length (no FCS in XDP).
const ETH_LEN: usize = 14;
/// An 802.1Q / 802.1ad tag: TCI then the inner `EtherType`.
const VLAN_LEN: usize = 4;
const IPV4_MIN_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const UDP_LEN: usize = 8;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// 802.1Q customer tag.
const ETH_P_8021Q: u16 = 0x8100;
/// 802.1ad service tag (the outer tag of `QinQ`).
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_UDP: u8 = 17;

/// IPv4 flags/fragment offset: More Fragments plus the 13-bit offset (RFC 791 §3.1).
const IPV4_MF_AND_OFFSET: u16 = 0x3fff;
/// The 13-bit fragment offset alone.
const IPV4_OFFSET: u16 = 0x1fff;

/// A UDP datagram found in the packet. Offsets are from the start of the frame.
pub(crate) struct Udp {
    /// Source address, IPv4 as IPv4-mapped IPv6 (network byte order).
    pub(crate) src_addr: [u8; 16],
    /// 4 or 6.
    pub(crate) family: u8,
    pub(crate) src_port: u16,
    pub(crate) dst_port: u16,
    pub(crate) payload_offset: usize,
    /// From the UDP length field, checked against the frame (Ethernet padding makes the
    /// frame longer than the datagram, so the frame length is not the payload length).
    pub(crate) payload_len: usize,
}

/// The one bounds-checked accessor: a pointer to a `T` at `offset` bytes into the
/// frame, or `None` when the frame is too short.
#[inline(always)]
pub(crate) fn ptr_at<T>(ctx: &XdpContext, offset: usize) -> Option<*const T> {
    let start = ctx.data();
    let end = ctx.data_end();
    // verifier: this comparison against data_end is what makes the access provable.
    if start + offset + size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *const T)
}

/// Reads `N` bytes at `offset`.
#[inline(always)]
fn bytes_at<const N: usize>(ctx: &XdpContext, offset: usize) -> Option<[u8; N]> {
    let p = ptr_at::<[u8; N]>(ctx, offset)?;
    // SAFETY: `ptr_at` proved `offset..offset + N` lies inside the frame, and `[u8; N]`
    // has alignment 1.
    Some(unsafe { *p })
}

#[inline(always)]
fn be16(b0: u8, b1: u8) -> u16 {
    u16::from_be_bytes([b0, b1])
}

/// Finds the UDP datagram in an Ethernet frame, or `None` for anything else.
#[inline(always)]
pub(crate) fn udp(ctx: &XdpContext) -> Option<Udp> {
    let eth = bytes_at::<ETH_LEN>(ctx, 0)?;
    let mut ethertype = be16(eth[12], eth[13]);
    let mut l3 = ETH_LEN;

    // Up to two tags (QinQ), unrolled: the verifier wants bounded offsets and no loop.
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        let tag = bytes_at::<VLAN_LEN>(ctx, l3)?;
        ethertype = be16(tag[2], tag[3]);
        l3 += VLAN_LEN;
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            let tag = bytes_at::<VLAN_LEN>(ctx, l3)?;
            ethertype = be16(tag[2], tag[3]);
            l3 += VLAN_LEN;
        }
    }

    let frame_len = ctx.data_end() - ctx.data();
    match ethertype {
        ETH_P_IP => ipv4(ctx, l3, frame_len),
        ETH_P_IPV6 => ipv6(ctx, l3, frame_len),
        _ => None,
    }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize, frame_len: usize) -> Option<Udp> {
    let ip = bytes_at::<IPV4_MIN_LEN>(ctx, l3)?;
    if ip[0] >> 4 != 4 {
        return None;
    }
    // The mask keeps the header length provably in [0, 60] for the verifier as well.
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ihl < IPV4_MIN_LEN {
        return None;
    }
    if ip[9] != IPPROTO_UDP {
        return None;
    }
    let frag = be16(ip[6], ip[7]);
    if frag & IPV4_MF_AND_OFFSET != 0 {
        // Only the first fragment (offset 0) carries the UDP header and so the port.
        if report::enabled(Level::Debug) && frag & IPV4_OFFSET == 0 {
            let src = [ip[12], ip[13], ip[14], ip[15]];
            if let Some(port) = bytes_at::<4>(ctx, l3 + ihl).map(|u| be16(u[2], u[3]))
                && FLOW_PORTS.get_ptr(port).is_some()
                && report::due(Event::Fragment)
            {
                debug!(
                    ctx,
                    "a fragmented datagram from {:i} to flow port {}: passed to the stack, which reassembles it",
                    src,
                    port
                );
            }
        }
        return None;
    }
    let total_len = usize::from(be16(ip[2], ip[3]));
    if total_len < ihl || l3 + total_len > frame_len {
        return None;
    }
    let mut src_addr = [0u8; 16];
    src_addr[10] = 0xff;
    src_addr[11] = 0xff;
    src_addr[12] = ip[12];
    src_addr[13] = ip[13];
    src_addr[14] = ip[14];
    src_addr[15] = ip[15];
    udp_at(ctx, l3 + ihl, l3 + total_len, src_addr, 4)
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize, frame_len: usize) -> Option<Udp> {
    let ip = bytes_at::<IPV6_LEN>(ctx, l3)?;
    if ip[0] >> 4 != 6 || ip[6] != IPPROTO_UDP {
        // Extension headers (or anything but UDP right after the fixed header): pass.
        return None;
    }
    let end = l3 + IPV6_LEN + usize::from(be16(ip[4], ip[5]));
    if end > frame_len {
        return None;
    }
    let mut src_addr = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        src_addr[i] = ip[8 + i];
        i += 1;
    }
    udp_at(ctx, l3 + IPV6_LEN, end, src_addr, 6)
}

/// Reads the UDP header at `l4`; `l3_end` is where the IP packet ends.
#[inline(always)]
fn udp_at(
    ctx: &XdpContext,
    l4: usize,
    l3_end: usize,
    src_addr: [u8; 16],
    family: u8,
) -> Option<Udp> {
    let udp = bytes_at::<UDP_LEN>(ctx, l4)?;
    let udp_len = usize::from(be16(udp[4], udp[5]));
    if udp_len < UDP_LEN || l4 + udp_len > l3_end {
        if report::enabled(Level::Debug) {
            let port = be16(udp[2], udp[3]);
            if FLOW_PORTS.get_ptr(port).is_some() && report::due(Event::BadLength) {
                #[expect(clippy::cast_possible_truncation, reason = "a UDP length field")]
                let len = udp_len as u32;
                debug!(
                    ctx,
                    "a UDP length of {} from {:i} to flow port {} does not fit its IP packet: passed to the stack",
                    len,
                    src_addr,
                    port
                );
            }
        }
        return None;
    }
    Some(Udp {
        src_addr,
        family,
        src_port: be16(udp[0], udp[1]),
        dst_port: be16(udp[2], udp[3]),
        payload_offset: l4 + UDP_LEN,
        payload_len: udp_len - UDP_LEN,
    })
}
