//! NetFlow v5: a 24-byte header and up to 30 fixed 48-byte records.
//!
//! Header: version, count, sysUptime (ms), unix_secs, unix_nsecs, flow_sequence (the
//! number of the first flow in this packet), engine type, engine id, and a 16-bit
//! sampling field (2-bit mode, 14-bit interval). First/last switched are sysUptime
//! values, converted to absolute time with wrapping arithmetic (see `clock`).

use std::net::{IpAddr, Ipv4Addr};

use super::netflow_v9::note_clock;
use super::reader::Reader;
use super::sampling::SamplingTable;
use super::{Context, DecodeError, clock};
use crate::flow::{FlowProtocol, FlowRecord};

pub(crate) const HEADER_LEN: usize = 24;
pub(crate) const RECORD_LEN: usize = 48;
/// Cisco's documented maximum records per packet.
pub(crate) const MAX_RECORDS: usize = 30;

pub(super) fn decode(ctx: &mut Context<'_, '_>, out: &mut Vec<FlowRecord>) -> Result<(), DecodeError> {
    let payload = ctx.datagram.payload;
    let mut r = Reader::new(payload);
    let _version = r.u16()?;
    let count = r.u16()?;
    let sys_uptime = r.u32()?;
    let unix_secs = r.u32()?;
    let unix_nsecs = r.u32()?;
    let sequence = r.u32()?;
    let engine_type = r.u8()?;
    let engine_id = r.u8()?;
    let sampling = r.u16()?;
    let n = usize::from(count);
    if n == 0 || n > MAX_RECORDS {
        return Err(DecodeError::BadCount { offset: 2, what: "record", count: u32::from(count) });
    }
    if r.remaining() < n * RECORD_LEN {
        return Err(DecodeError::Truncated {
            offset: r.offset(),
            needed: n * RECORD_LEN,
            available: r.remaining(),
        });
    }
    let export_ms = u64::from(unix_secs) * 1000 + u64::from(unix_nsecs / 1_000_000);
    note_clock(ctx, export_ms);
    let rate = SamplingTable::resolve_header(ctx.settings, u32::from(sampling & 0x3FFF));
    let domain = u32::from(engine_type) << 8 | u32::from(engine_id);
    let mut blank = FlowRecord::empty(FlowProtocol::NetflowV5, ctx.datagram.exporter, export_ms);
    blank.observation_domain = domain;
    blank.sampling_rate = Some(rate);
    blank.ip_version = Some(4);
    out.reserve(n);
    for _ in 0..n {
        let b: [u8; RECORD_LEN] = r.array()?;
        let mut rec = blank;
        let ip = |o: usize| {
            let a = [b[o], b[o + 1], b[o + 2], b[o + 3]];
            IpAddr::V4(Ipv4Addr::from(a))
        };
        let u16_at = |o: usize| u16::from_be_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        rec.src_ip = Some(ip(0));
        rec.dst_ip = Some(ip(4));
        rec.next_hop = Some(ip(8));
        rec.input_interface = Some(u32::from(u16_at(12)));
        rec.output_interface = Some(u32::from(u16_at(14)));
        rec.packets = Some(u64::from(u32_at(16)));
        rec.bytes = Some(u64::from(u32_at(20)));
        let mut start = Some(clock::from_uptime(export_ms, sys_uptime, u32_at(24)));
        let mut end = Some(clock::from_uptime(export_ms, sys_uptime, u32_at(28)));
        if ctx.clock.settle(export_ms, &mut start, &mut end) {
            ctx.state.counters.clock_clamped += 1;
        }
        rec.flow_start_ms = start;
        rec.flow_end_ms = end;
        rec.src_port = Some(u16_at(32));
        rec.dst_port = Some(u16_at(34));
        // b[36] is padding.
        rec.tcp_flags = Some(u16::from(b[37]));
        rec.protocol = Some(b[38]);
        rec.tos = Some(b[39]);
        rec.src_as = Some(u32::from(u16_at(40)));
        rec.dst_as = Some(u32::from(u16_at(42)));
        rec.src_mask = Some(b[44]);
        rec.dst_mask = Some(b[45]);
        out.push(rec);
    }
    let outcome = ctx
        .state
        .sequences
        .entry((FlowProtocol::NetflowV5, domain))
        .or_default()
        .observe(sequence, Some(u32::from(count)));
    ctx.state.counters.count_sequence(outcome, false);
    Ok(())
}
