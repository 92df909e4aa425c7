//! `NetFlow` v5: a 24-byte header and up to 30 fixed 48-byte records.
//!
//! Header: version, count, sysUptime (ms), `unix_secs`, `unix_nsecs`, `flow_sequence` (the
//! number of the first flow in this packet), engine type, engine id, and a 16-bit
//! sampling field (2-bit mode, 14-bit interval). First/last switched are sysUptime
//! values, converted to absolute time with wrapping arithmetic (see `clock`).

use std::net::{IpAddr, Ipv4Addr};

use super::reader::Reader;
use super::sampling::SamplingTable;
use super::{Context, DecodeError, clock};
use crate::flow::{FlowProtocol, FlowRecord};

pub(crate) const RECORD_LEN: usize = 48;
/// Cisco's documented maximum records per packet.
pub(crate) const MAX_RECORDS: usize = 30;

pub(super) fn decode(
    ctx: &mut Context<'_, '_>,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let payload = ctx.datagram.payload;
    let mut r = Reader::new(payload);
    let _version = r.u16()?;
    let count = r.u16()?;
    let sys_uptime = r.u32()?;
    let unix_secs = r.u32()?;
    let nanos = r.u32()?;
    let sequence = r.u32()?;
    let engine_type = r.u8()?;
    let engine_id = r.u8()?;
    let sampling = r.u16()?;
    let n = usize::from(count);
    if n == 0 || n > MAX_RECORDS {
        return Err(DecodeError::BadCount {
            offset: 2,
            what: "record",
            count: u32::from(count),
        });
    }
    if r.remaining() < n * RECORD_LEN {
        return Err(DecodeError::Truncated {
            offset: r.offset(),
            needed: n * RECORD_LEN,
            available: r.remaining(),
        });
    }
    let export_ms = u64::from(unix_secs) * 1000 + u64::from(nanos / 1_000_000);
    ctx.note_clock(export_ms);
    let rate = SamplingTable::resolve_header(ctx.settings, u32::from(sampling & 0x3FFF));
    let domain = u32::from(engine_type) << 8 | u32::from(engine_id);
    let mut blank = FlowRecord::empty(FlowProtocol::NetflowV5, ctx.datagram.exporter, export_ms);
    blank.observation_domain = domain;
    blank.sampling_rate = Some(rate);
    blank.ip_version = Some(4);
    out.reserve(n);
    for _ in 0..n {
        let mut f = r.sub(RECORD_LEN)?;
        let mut rec = blank;
        let ip = |a: [u8; 4]| IpAddr::V4(Ipv4Addr::from(a));
        rec.src_ip = Some(ip(f.array()?));
        rec.dst_ip = Some(ip(f.array()?));
        rec.next_hop = Some(ip(f.array()?));
        rec.input_interface = Some(u32::from(f.u16()?));
        rec.output_interface = Some(u32::from(f.u16()?));
        rec.packets = Some(u64::from(f.u32()?));
        rec.bytes = Some(u64::from(f.u32()?));
        let first = f.u32()?;
        let last = f.u32()?;
        let mut start = Some(clock::from_uptime(export_ms, sys_uptime, first));
        let mut end = Some(clock::from_uptime(export_ms, sys_uptime, last));
        if ctx.clock.settle(export_ms, &mut start, &mut end) {
            ctx.state.counters.clock_clamped += 1;
        }
        rec.flow_start_ms = start;
        rec.flow_end_ms = end;
        rec.src_port = Some(f.u16()?);
        rec.dst_port = Some(f.u16()?);
        let _pad1 = f.u8()?;
        rec.tcp_flags = Some(u16::from(f.u8()?));
        rec.protocol = Some(f.u8()?);
        rec.tos = Some(f.u8()?);
        rec.src_as = Some(u32::from(f.u16()?));
        rec.dst_as = Some(u32::from(f.u16()?));
        rec.src_mask = Some(f.u8()?);
        rec.dst_mask = Some(f.u8()?);
        out.push(rec);
    }
    // Bytes after the `count` records (padding some exporters add) are ignored.
    ctx.trailing(r.offset(), r.remaining());
    let outcome = ctx
        .state
        .sequences
        .entry((FlowProtocol::NetflowV5, domain))
        .or_default()
        .observe(sequence, Some(u32::from(count)));
    ctx.count_sequence(outcome, false);
    Ok(())
}
