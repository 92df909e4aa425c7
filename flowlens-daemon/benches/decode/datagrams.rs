//! Byte builders for realistic export datagrams: `NetFlow` v5, `NetFlow` v9 and IPFIX
//! (template-based, with typical Cisco/IPFIX field lists) and sFlow v5 (flow samples with
//! a 128-byte Ethernet/IPv4/TCP sampled header).
//!
//! Shared by the decode benchmarks (`benches/decode.rs`) and the fuzz seed writer
//! (`fuzz/examples/write_seeds.rs` includes this file by path), so the seeds are exactly
//! the datagrams that are benchmarked. Everything is deterministic: records come from a
//! fixed-seed generator, so every run builds the same bytes.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Export time of every datagram: 2026-01-01T00:00:00Z, in seconds.
pub(crate) const EXPORT_SECS: u32 = 1_767_225_600;
/// Receive time handed to the decoder, ms since the epoch (3 ms after the export).
pub(crate) const RECEIVED_AT_MS: u64 = 1_767_225_600_003;
/// Exporter uptime at export time: 12 days, in ms.
pub(crate) const SYS_UPTIME_MS: u32 = 1_036_800_000;
/// The `NetFlow` v9 / IPFIX template id every builder uses.
pub(crate) const TEMPLATE_ID: u16 = 256;

/// IPFIX variable-length marker (RFC 7011 §7).
const VARIABLE: u16 = 0xFFFF;

/// A `NetFlow` v9 IPv4 template as Cisco IOS exports it: (field type, length).
/// `IN_BYTES`, `IN_PKTS`, `PROTOCOL`, `TOS`, `TCP_FLAGS`, `L4_SRC_PORT`, `IPV4_SRC_ADDR`,
/// `SRC_MASK`, `INPUT_SNMP`, `L4_DST_PORT`, `IPV4_DST_ADDR`, `DST_MASK`, `OUTPUT_SNMP`,
/// `IPV4_NEXT_HOP`, `SRC_AS`, `DST_AS`, `LAST_SWITCHED`, `FIRST_SWITCHED`: 53 bytes a record.
pub(crate) const V9_IPV4_FIELDS: &[(u16, u16)] = &[
    (1, 4),
    (2, 4),
    (4, 1),
    (5, 1),
    (6, 1),
    (7, 2),
    (8, 4),
    (9, 1),
    (10, 4),
    (11, 2),
    (12, 4),
    (13, 1),
    (14, 4),
    (15, 4),
    (16, 4),
    (17, 4),
    (21, 4),
    (22, 4),
];

/// The IPv6 counterpart: `IPV6_SRC_ADDR` (27), `IPV6_SRC_MASK` (29), `IPV6_DST_ADDR` (28),
/// `IPV6_DST_MASK` (30), `IPV6_NEXT_HOP` (62) instead of the IPv4 fields: 89 bytes a
/// record.
pub(crate) const V9_IPV6_FIELDS: &[(u16, u16)] = &[
    (1, 4),
    (2, 4),
    (4, 1),
    (5, 1),
    (6, 1),
    (7, 2),
    (27, 16),
    (29, 1),
    (10, 4),
    (11, 2),
    (28, 16),
    (30, 1),
    (14, 4),
    (62, 16),
    (16, 4),
    (17, 4),
    (21, 4),
    (22, 4),
];

/// A typical IPFIX template: 64-bit counters, `flowStart/EndMilliseconds` (152/153), the
/// IPv4 5-tuple, `tcpControlBits`, type of service, interfaces, prefix lengths, AS numbers,
/// `flowDirection` (61) and the variable-length `applicationId` (95): 72 bytes a record
/// with a 4-octet application id.
pub(crate) const IPFIX_FIELDS: &[(u16, u16)] = &[
    (1, 8),
    (2, 8),
    (152, 8),
    (153, 8),
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 2),
    (5, 1),
    (10, 4),
    (14, 4),
    (9, 1),
    (13, 1),
    (16, 4),
    (17, 4),
    (61, 1),
    (95, VARIABLE),
];

/// A deterministic generator (splitmix64), so the datagrams are the same every run.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub(crate) fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let [high @ .., _, _, _, _] = z.to_be_bytes();
        u32::from_be_bytes(high)
    }

    /// A value in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + self.next_u32() % (hi - lo + 1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        let i = usize::try_from(self.next_u32()).expect("u32 fits usize") % items.len();
        items[i]
    }

    fn u8(&mut self, lo: u8, hi: u8) -> u8 {
        u8::try_from(self.range(u32::from(lo), u32::from(hi))).expect("range is within u8")
    }

    fn u16(&mut self, lo: u16, hi: u16) -> u16 {
        u16::try_from(self.range(u32::from(lo), u32::from(hi))).expect("range is within u16")
    }
}

/// One synthetic flow with every value any of the builders can encode.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Flow {
    src4: Ipv4Addr,
    dst4: Ipv4Addr,
    next_hop4: Ipv4Addr,
    src6: Ipv6Addr,
    dst6: Ipv6Addr,
    next_hop6: Ipv6Addr,
    src_port: u16,
    dst_port: u16,
    protocol: u8,
    tos: u8,
    tcp_flags: u8,
    bytes: u32,
    packets: u32,
    input: u16,
    output: u16,
    src_mask: u8,
    dst_mask: u8,
    src_as: u16,
    dst_as: u16,
    /// How long before the export the flow ended, and how long it lasted (ms).
    ended_ago_ms: u32,
    duration_ms: u32,
    direction: u8,
    /// RFC 6759 application id: engine 13 (Cisco NBAR2) and a 3-octet selector.
    app_id: [u8; 4],
}

impl Flow {
    pub(crate) fn random(rng: &mut Rng) -> Self {
        let protocol = rng.pick(&[6, 6, 6, 17, 17, 1]);
        let (src_port, dst_port) = if protocol == 1 {
            (0, rng.pick(&[0x0800, 0x0000, 0x0303]))
        } else {
            (
                rng.u16(32_768, 60_999),
                rng.pick(&[443, 80, 53, 22, 123, 8443, 5432, 3306]),
            )
        };
        let packets = rng.range(1, 2_000);
        let bytes = packets * rng.range(40, 1_500);
        let v6 = |rng: &mut Rng, net: u16| {
            Ipv6Addr::new(
                0x2001,
                0xdb8,
                net,
                rng.u16(0, 0xff),
                0,
                0,
                0,
                rng.u16(1, 0xfffe),
            )
        };
        Self {
            src4: Ipv4Addr::new(10, rng.u8(0, 15), rng.u8(0, 255), rng.u8(1, 254)),
            dst4: Ipv4Addr::new(198, 51, 100, rng.u8(1, 254)),
            next_hop4: Ipv4Addr::new(10, 255, 0, rng.u8(1, 4)),
            src6: v6(rng, 0x10),
            dst6: v6(rng, 0x20),
            next_hop6: Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, rng.u16(1, 4)),
            src_port,
            dst_port,
            protocol,
            tos: rng.pick(&[0, 0, 0, 0x28, 0xb8]),
            tcp_flags: if protocol == 6 {
                rng.pick(&[0x1b, 0x1a, 0x12, 0x10, 0x19])
            } else {
                0
            },
            bytes,
            packets,
            input: rng.u16(1, 48),
            output: rng.u16(1, 48),
            src_mask: rng.pick(&[16, 20, 24]),
            dst_mask: rng.pick(&[24, 22, 0]),
            src_as: rng.pick(&[0, 64_512, 64_513]),
            dst_as: rng.pick(&[15_169, 13_335, 16_509, 32_934]),
            ended_ago_ms: rng.range(0, 60_000),
            duration_ms: rng.range(0, 300_000),
            direction: rng.u8(0, 1),
            app_id: [13, 0, rng.u8(0, 3), rng.u8(1, 250)],
        }
    }

    /// `n` flows from a fixed seed.
    pub(crate) fn many(seed: u64, n: usize) -> Vec<Self> {
        let mut rng = Rng::new(seed);
        (0..n).map(|_| Self::random(&mut rng)).collect()
    }
}

/// Appends `v` as a `len`-octet big-endian unsigned integer (high octets dropped).
fn put_uint(out: &mut Vec<u8>, v: u64, len: usize) {
    let be = v.to_be_bytes();
    if len <= be.len() {
        out.extend_from_slice(&be[be.len() - len..]);
    } else {
        out.resize(out.len() + len - be.len(), 0);
        out.extend_from_slice(&be);
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends `octets` cut or zero-padded to `len`.
fn put_octets(out: &mut Vec<u8>, octets: &[u8], len: usize) {
    let n = octets.len().min(len);
    out.extend_from_slice(&octets[..n]);
    out.resize(out.len() + len - n, 0);
}

/// Overwrites the big-endian u16 at `at`.
fn set_u16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn len_u16(n: usize) -> u16 {
    u16::try_from(n).expect("builders stay below 64 KiB")
}

/// Appends one v9/IPFIX field of flow `f`. Unknown field types are zero-filled.
fn put_field(out: &mut Vec<u8>, ie: u16, len: u16, f: &Flow) {
    let n = usize::from(len);
    let export_ms = u64::from(EXPORT_SECS) * 1000;
    let end_ms = export_ms - u64::from(f.ended_ago_ms);
    let start_ms = end_ms - u64::from(f.duration_ms);
    let end_uptime = SYS_UPTIME_MS - f.ended_ago_ms;
    let start_uptime = end_uptime - f.duration_ms;
    match ie {
        1 => put_uint(out, u64::from(f.bytes), n),
        2 => put_uint(out, u64::from(f.packets), n),
        4 => put_uint(out, u64::from(f.protocol), n),
        5 => put_uint(out, u64::from(f.tos), n),
        6 => put_uint(out, u64::from(f.tcp_flags), n),
        7 => put_uint(out, u64::from(f.src_port), n),
        8 => put_octets(out, &f.src4.octets(), n),
        9 | 29 => put_uint(out, u64::from(f.src_mask), n),
        10 => put_uint(out, u64::from(f.input), n),
        11 => put_uint(out, u64::from(f.dst_port), n),
        12 => put_octets(out, &f.dst4.octets(), n),
        13 | 30 => put_uint(out, u64::from(f.dst_mask), n),
        14 => put_uint(out, u64::from(f.output), n),
        15 => put_octets(out, &f.next_hop4.octets(), n),
        16 => put_uint(out, u64::from(f.src_as), n),
        17 => put_uint(out, u64::from(f.dst_as), n),
        21 => put_uint(out, u64::from(end_uptime), n),
        22 => put_uint(out, u64::from(start_uptime), n),
        27 => put_octets(out, &f.src6.octets(), n),
        28 => put_octets(out, &f.dst6.octets(), n),
        61 => put_uint(out, u64::from(f.direction), n),
        // FLOW_SAMPLER_ID / selectorId: every builder's flows come from sampler 1.
        48 | 302 => put_uint(out, 1, n),
        62 => put_octets(out, &f.next_hop6.octets(), n),
        95 if len == VARIABLE => {
            out.push(u8::try_from(f.app_id.len()).expect("4 fits u8"));
            out.extend_from_slice(&f.app_id);
        }
        152 => put_uint(out, start_ms, n),
        153 => put_uint(out, end_ms, n),
        _ if len == VARIABLE => out.push(0),
        _ => out.resize(out.len() + n, 0),
    }
}

/// Pads a set or flowset to a multiple of 4 octets and fills in its length at `start + 2`.
fn finish_set(out: &mut Vec<u8>, start: usize, pad: bool) {
    if pad {
        while !(out.len() - start).is_multiple_of(4) {
            out.push(0);
        }
    }
    let len = len_u16(out.len() - start);
    set_u16(out, start + 2, len);
}

/// A `NetFlow` v9 template flowset (id 0) defining `template_id`.
pub(crate) fn v9_template_flowset(template_id: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u16(&mut out, 0);
    put_u16(&mut out, 0);
    put_u16(&mut out, template_id);
    put_u16(&mut out, len_u16(fields.len()));
    for &(ie, len) in fields {
        put_u16(&mut out, ie);
        put_u16(&mut out, len);
    }
    finish_set(&mut out, 0, true);
    out
}

/// A `NetFlow` v9 data flowset for `template_id`, one record per flow, padded to 4.
pub(crate) fn v9_data_flowset(template_id: u16, fields: &[(u16, u16)], flows: &[Flow]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u16(&mut out, template_id);
    put_u16(&mut out, 0);
    for f in flows {
        for &(ie, len) in fields {
            put_field(&mut out, ie, len, f);
        }
    }
    finish_set(&mut out, 0, true);
    out
}

/// A `NetFlow` v9 export packet: the 20-byte header, then `flowsets` as given. `count` is
/// the number of records (templates plus data records) the header announces.
pub(crate) fn v9_packet(
    sequence: u32,
    source_id: u32,
    count: u16,
    flowsets: &[Vec<u8>],
) -> Vec<u8> {
    let mut out = Vec::new();
    put_u16(&mut out, 9);
    put_u16(&mut out, count);
    put_u32(&mut out, SYS_UPTIME_MS);
    put_u32(&mut out, EXPORT_SECS);
    put_u32(&mut out, sequence);
    put_u32(&mut out, source_id);
    for s in flowsets {
        out.extend_from_slice(s);
    }
    out
}

/// An IPFIX template set (id 2) defining `template_id`. Fields with a non-zero
/// enterprise number get the enterprise bit and the number (RFC 7011 §3.2).
pub(crate) fn ipfix_template_set(template_id: u16, fields: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u16(&mut out, 2);
    put_u16(&mut out, 0);
    put_u16(&mut out, template_id);
    put_u16(&mut out, len_u16(fields.len()));
    for &(ie, len, pen) in fields {
        if pen == 0 {
            put_u16(&mut out, ie);
            put_u16(&mut out, len);
        } else {
            put_u16(&mut out, ie | 0x8000);
            put_u16(&mut out, len);
            put_u32(&mut out, pen);
        }
    }
    finish_set(&mut out, 0, false);
    out
}

/// An IPFIX data set for `template_id`, one record per flow, unpadded. Enterprise fields
/// are encoded like the IANA field of the same number would be.
pub(crate) fn ipfix_data_set(
    template_id: u16,
    fields: &[(u16, u16, u32)],
    flows: &[Flow],
) -> Vec<u8> {
    let mut out = Vec::new();
    put_u16(&mut out, template_id);
    put_u16(&mut out, 0);
    for f in flows {
        for &(ie, len, _pen) in fields {
            put_field(&mut out, ie, len, f);
        }
    }
    finish_set(&mut out, 0, false);
    out
}

/// An IPFIX message: the 16-byte header, then `sets` as given.
pub(crate) fn ipfix_message(sequence: u32, domain: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u16(&mut out, 10);
    put_u16(&mut out, 0);
    put_u32(&mut out, EXPORT_SECS);
    put_u32(&mut out, sequence);
    put_u32(&mut out, domain);
    for s in sets {
        out.extend_from_slice(s);
    }
    let len = len_u16(out.len());
    set_u16(&mut out, 2, len);
    out
}

/// The IANA fields of [`IPFIX_FIELDS`] with enterprise number 0.
pub(crate) fn ipfix_fields() -> Vec<(u16, u16, u32)> {
    IPFIX_FIELDS.iter().map(|&(ie, len)| (ie, len, 0)).collect()
}

/// A `NetFlow` v5 export packet with one 48-byte record per flow (at most 30).
pub(crate) fn netflow_v5(sequence: u32, flows: &[Flow]) -> Vec<u8> {
    let mut out = Vec::new();
    put_u16(&mut out, 5);
    put_u16(&mut out, len_u16(flows.len()));
    put_u32(&mut out, SYS_UPTIME_MS);
    put_u32(&mut out, EXPORT_SECS);
    put_u32(&mut out, 0); // unix_nsecs
    put_u32(&mut out, sequence);
    out.push(0); // engine type
    out.push(1); // engine id
    put_u16(&mut out, 0); // unsampled
    for f in flows {
        let end_uptime = SYS_UPTIME_MS - f.ended_ago_ms;
        out.extend_from_slice(&f.src4.octets());
        out.extend_from_slice(&f.dst4.octets());
        out.extend_from_slice(&f.next_hop4.octets());
        put_u16(&mut out, f.input);
        put_u16(&mut out, f.output);
        put_u32(&mut out, f.packets);
        put_u32(&mut out, f.bytes);
        put_u32(&mut out, end_uptime - f.duration_ms);
        put_u32(&mut out, end_uptime);
        put_u16(&mut out, f.src_port);
        put_u16(&mut out, f.dst_port);
        out.push(0); // pad1
        out.push(f.tcp_flags);
        out.push(f.protocol);
        out.push(f.tos);
        put_u16(&mut out, f.src_as);
        put_u16(&mut out, f.dst_as);
        out.push(f.src_mask);
        out.push(f.dst_mask);
        put_u16(&mut out, 0); // pad2
    }
    out
}

/// Bytes of sampled header in every sFlow flow sample (the common agent default).
pub(crate) const SFLOW_HEADER_LEN: usize = 128;
/// The sFlow agent (and UDP source) address.
pub(crate) const SFLOW_AGENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);

/// The first [`SFLOW_HEADER_LEN`] octets of an Ethernet/IPv4/TCP frame for flow `f`, as
/// an agent samples them: real headers (IPv4 checksum included), then payload bytes.
pub(crate) fn ethernet_ipv4_tcp_header(f: &Flow, frame_len: u16) -> Vec<u8> {
    let mut h = Vec::with_capacity(SFLOW_HEADER_LEN);
    h.extend_from_slice(&[0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e]); // destination MAC
    h.extend_from_slice(&[0x02, 0x42, 0xac, 0x11, 0x00, 0x02]); // source MAC
    put_u16(&mut h, 0x0800);
    let ip_start = h.len();
    h.push(0x45);
    h.push(f.tos);
    put_u16(&mut h, frame_len - 14 - 4); // total length: frame minus Ethernet and FCS
    put_u16(&mut h, f.src_port ^ f.dst_port); // identification
    put_u16(&mut h, 0x4000); // don't fragment
    h.push(64);
    h.push(6);
    put_u16(&mut h, 0); // checksum, filled below
    h.extend_from_slice(&f.src4.octets());
    h.extend_from_slice(&f.dst4.octets());
    let sum = h[ip_start..ip_start + 20]
        .chunks_exact(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xFFFF) + (sum >> 16);
    let folded = (folded & 0xFFFF) + (folded >> 16);
    let checksum = !u16::try_from(folded).expect("folded twice into 16 bits");
    set_u16(&mut h, ip_start + 10, checksum);
    put_u16(&mut h, f.src_port.max(1));
    put_u16(&mut h, if f.dst_port == 0 { 443 } else { f.dst_port });
    put_u32(&mut h, f.bytes); // sequence number
    put_u32(&mut h, f.packets); // acknowledgement number
    h.push(0x50); // data offset 5 words
    h.push(0x18); // PSH ACK
    put_u16(&mut h, 0xFAF0); // window
    put_u16(&mut h, 0); // checksum (not checked by collectors)
    put_u16(&mut h, 0); // urgent pointer
    let mut b = 0u8;
    while h.len() < SFLOW_HEADER_LEN {
        h.push(b);
        b = b.wrapping_add(37);
    }
    h
}

/// An sFlow v5 datagram from [`SFLOW_AGENT`] with one flow sample (format 1) per flow,
/// each carrying a sampled header record (format 1, Ethernet, 128 octets) and an
/// extended switch record (format 1001).
pub(crate) fn sflow_v5(sequence: u32, flows: &[Flow]) -> Vec<u8> {
    const SAMPLING_RATE: u32 = 2_048;
    let mut out = Vec::new();
    put_u32(&mut out, 5); // version
    put_u32(&mut out, 1); // agent address type: IPv4
    out.extend_from_slice(&SFLOW_AGENT.octets());
    put_u32(&mut out, 0); // sub-agent id
    put_u32(&mut out, sequence);
    put_u32(&mut out, SYS_UPTIME_MS);
    put_u32(&mut out, u32::try_from(flows.len()).expect("few samples"));
    for (i, f) in flows.iter().enumerate() {
        let i = u32::try_from(i).expect("few samples");
        let frame_len = u16::try_from(f.bytes / f.packets)
            .expect("< 1500")
            .clamp(64, 1_518);
        let header = ethernet_ipv4_tcp_header(f, frame_len);
        let sample_start = out.len();
        put_u32(&mut out, 1); // flow_sample, enterprise 0
        put_u32(&mut out, 0); // length, filled below
        put_u32(&mut out, sequence.wrapping_mul(8).wrapping_add(i)); // sample sequence
        put_u32(&mut out, u32::from(f.input)); // source id: ifIndex
        put_u32(&mut out, SAMPLING_RATE);
        put_u32(
            &mut out,
            (sequence.wrapping_mul(8).wrapping_add(i)).wrapping_mul(SAMPLING_RATE),
        );
        put_u32(&mut out, 0); // drops
        put_u32(&mut out, u32::from(f.input));
        put_u32(&mut out, u32::from(f.output));
        put_u32(&mut out, 2); // flow records
        // Sampled header.
        put_u32(&mut out, 1);
        put_u32(&mut out, u32::try_from(16 + header.len()).expect("small"));
        put_u32(&mut out, 1); // header protocol: Ethernet
        put_u32(&mut out, u32::from(frame_len));
        put_u32(&mut out, 4); // stripped: the FCS
        put_u32(&mut out, u32::try_from(header.len()).expect("small"));
        out.extend_from_slice(&header);
        // Extended switch: VLAN 100 in and out, priority 0.
        put_u32(&mut out, 1001);
        put_u32(&mut out, 16);
        put_u32(&mut out, 100);
        put_u32(&mut out, 0);
        put_u32(&mut out, 100);
        put_u32(&mut out, 0);
        let len = u32::try_from(out.len() - sample_start - 8).expect("small");
        out[sample_start + 4..sample_start + 8].copy_from_slice(&len.to_be_bytes());
    }
    out
}
