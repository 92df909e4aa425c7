//! Byte builders for `NetFlow` v5, v9 and IPFIX test packets (test-only).

/// One `NetFlow` v5 record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct V5Record {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    pub next_hop: [u8; 4],
    pub input: u16,
    pub output: u16,
    pub packets: u32,
    pub bytes: u32,
    pub first: u32,
    pub last: u32,
    pub src_port: u16,
    pub dst_port: u16,
    pub tcp_flags: u8,
    pub protocol: u8,
    pub tos: u8,
    pub src_as: u16,
    pub dst_as: u16,
    pub src_mask: u8,
    pub dst_mask: u8,
}

pub fn v5_packet(
    seq: u32,
    uptime: u32,
    secs: u32,
    nsecs: u32,
    sampling: u16,
    records: &[V5Record],
) -> Vec<u8> {
    let mut p = Vec::with_capacity(24 + 48 * records.len());
    p.extend_from_slice(&5u16.to_be_bytes());
    p.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&uptime.to_be_bytes());
    p.extend_from_slice(&secs.to_be_bytes());
    p.extend_from_slice(&nsecs.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[1, 2]);
    p.extend_from_slice(&sampling.to_be_bytes());
    for r in records {
        p.extend_from_slice(&r.src);
        p.extend_from_slice(&r.dst);
        p.extend_from_slice(&r.next_hop);
        p.extend_from_slice(&r.input.to_be_bytes());
        p.extend_from_slice(&r.output.to_be_bytes());
        p.extend_from_slice(&r.packets.to_be_bytes());
        p.extend_from_slice(&r.bytes.to_be_bytes());
        p.extend_from_slice(&r.first.to_be_bytes());
        p.extend_from_slice(&r.last.to_be_bytes());
        p.extend_from_slice(&r.src_port.to_be_bytes());
        p.extend_from_slice(&r.dst_port.to_be_bytes());
        p.push(0);
        p.push(r.tcp_flags);
        p.push(r.protocol);
        p.push(r.tos);
        p.extend_from_slice(&r.src_as.to_be_bytes());
        p.extend_from_slice(&r.dst_as.to_be_bytes());
        p.push(r.src_mask);
        p.push(r.dst_mask);
        p.extend_from_slice(&[0, 0]);
    }
    p
}

/// A `NetFlow` v9 packet from already-built flowsets.
pub fn v9_packet(
    seq: u32,
    uptime: u32,
    secs: u32,
    source_id: u32,
    flowsets: &[Vec<u8>],
) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&9u16.to_be_bytes());
    p.extend_from_slice(&u16::try_from(flowsets.len()).unwrap().to_be_bytes());
    p.extend_from_slice(&uptime.to_be_bytes());
    p.extend_from_slice(&secs.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&source_id.to_be_bytes());
    for s in flowsets {
        p.extend_from_slice(s);
    }
    p
}

fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut s = id.to_be_bytes().to_vec();
    s.extend_from_slice(&u16::try_from(body.len() + 4).unwrap().to_be_bytes());
    s.extend_from_slice(body);
    s
}

/// A v9 template flowset (id 0) with (template id, [(type, length)]) templates.
pub fn v9_template_flowset(templates: &[(u16, Vec<(u16, u16)>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, fields) in templates {
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&u16::try_from(fields.len()).unwrap().to_be_bytes());
        for (t, l) in fields {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&l.to_be_bytes());
        }
    }
    set(0, &body)
}

/// A v9 options template flowset (id 1), padded to 4 bytes.
pub fn v9_options_template_flowset(
    id: u16,
    scope: &[(u16, u16)],
    options: &[(u16, u16)],
) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(&u16::try_from(scope.len() * 4).unwrap().to_be_bytes());
    body.extend_from_slice(&u16::try_from(options.len() * 4).unwrap().to_be_bytes());
    for (t, l) in scope.iter().chain(options) {
        body.extend_from_slice(&t.to_be_bytes());
        body.extend_from_slice(&l.to_be_bytes());
    }
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    set(1, &body)
}

/// A data set/flowset with `pad` zero bytes of padding after the records.
pub fn data_set(id: u16, records: &[u8], pad: usize) -> Vec<u8> {
    let mut body = records.to_vec();
    body.resize(records.len() + pad, 0);
    set(id, &body)
}

/// An IPFIX field specifier.
#[derive(Debug, Clone, Copy)]
pub struct Ie {
    pub id: u16,
    pub len: u16,
    pub pen: u32,
}

impl Ie {
    pub const fn new(id: u16, len: u16) -> Self {
        Self { id, len, pen: 0 }
    }
    pub const fn ent(id: u16, len: u16, pen: u32) -> Self {
        Self { id, len, pen }
    }
}

fn push_ies(body: &mut Vec<u8>, fields: &[Ie]) {
    for f in fields {
        let raw = if f.pen == 0 { f.id } else { f.id | 0x8000 };
        body.extend_from_slice(&raw.to_be_bytes());
        body.extend_from_slice(&f.len.to_be_bytes());
        if f.pen != 0 {
            body.extend_from_slice(&f.pen.to_be_bytes());
        }
    }
}

/// An IPFIX template set (`set_id` 2) of (template id, fields); empty fields make a
/// withdrawal record.
pub fn ipfix_template_set(set_id: u16, templates: &[(u16, &[Ie])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, fields) in templates {
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&u16::try_from(fields.len()).unwrap().to_be_bytes());
        push_ies(&mut body, fields);
    }
    set(set_id, &body)
}

/// An IPFIX options template set (3) with one options template.
pub fn ipfix_options_template_set(id: u16, scope: &[Ie], options: &[Ie]) -> Vec<u8> {
    let mut body = id.to_be_bytes().to_vec();
    body.extend_from_slice(
        &u16::try_from(scope.len() + options.len())
            .unwrap()
            .to_be_bytes(),
    );
    body.extend_from_slice(&u16::try_from(scope.len()).unwrap().to_be_bytes());
    push_ies(&mut body, scope);
    push_ies(&mut body, options);
    set(3, &body)
}

/// An IPFIX message from already-built sets.
pub fn ipfix_message(export_secs: u32, seq: u32, domain: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let len: usize = 16 + sets.iter().map(Vec::len).sum::<usize>();
    let mut m = 10u16.to_be_bytes().to_vec();
    m.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    m.extend_from_slice(&export_secs.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(&domain.to_be_bytes());
    for s in sets {
        m.extend_from_slice(s);
    }
    m
}

/// A classic pcap capture (Ethernet link type) of UDP datagrams from `(source,
/// payload)` pairs, IPv4 from each source to 192.0.2.100 port 2055, one frame a
/// millisecond from `start_ms`. IP checksums are left zero (decoders and tshark do
/// not check them by default).
pub fn pcap_udp(start_ms: u64, datagrams: &[(std::net::Ipv4Addr, Vec<u8>)]) -> Vec<u8> {
    // Magic, version 2.4, thiszone, sigfigs, snaplen, link type 1 (Ethernet).
    let mut p = 0xa1b2_c3d4u32.to_le_bytes().to_vec();
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&4u16.to_le_bytes());
    for v in [0u32, 0, 65_535, 1] {
        p.extend_from_slice(&v.to_le_bytes());
    }
    for (i, (src, payload)) in datagrams.iter().enumerate() {
        let udp_len = u16::try_from(8 + payload.len()).unwrap();
        let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&(udp_len + 20).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
        frame.extend_from_slice(&src.octets());
        frame.extend_from_slice(&[192, 0, 2, 100]);
        frame.extend_from_slice(&40_000u16.to_be_bytes());
        frame.extend_from_slice(&2055u16.to_be_bytes());
        frame.extend_from_slice(&udp_len.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(payload);
        let ts = start_ms + i as u64;
        let len = u32::try_from(frame.len()).unwrap();
        for v in [
            u32::try_from(ts / 1000).unwrap(),
            u32::try_from(ts % 1000 * 1000).unwrap(),
            len,
            len,
        ] {
            p.extend_from_slice(&v.to_le_bytes());
        }
        p.extend_from_slice(&frame);
    }
    p
}
