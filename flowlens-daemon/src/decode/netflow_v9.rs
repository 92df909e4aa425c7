//! `NetFlow` v9 (RFC 3954): the 20-byte header, then template, options template and data
//! flowsets decoded by [`super::template`].
//!
//! Header: version (9), count, sysUptime (ms), `unix_secs`, package sequence, source id.
//! The package sequence counts export packets per source id, so a gap is lost packets.

use super::reader::Reader;
use super::template::{ExportCtx, decode_sets};
use super::{Context, DecodeError};
use crate::flow::{FlowProtocol, FlowRecord};

pub(super) fn decode(
    ctx: &mut Context<'_, '_>,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let payload = ctx.datagram.payload;
    let mut r = Reader::new(payload);
    let _version = r.u16()?;
    let _count = r.u16()?;
    let sys_uptime_ms = r.u32()?;
    let unix_secs = r.u32()?;
    let sequence = r.u32()?;
    let source_id = r.u32()?;
    let hdr = ExportCtx {
        proto: FlowProtocol::NetflowV9,
        domain: source_id,
        export_time_ms: u64::from(unix_secs) * 1000,
        sys_uptime_ms: Some(sys_uptime_ms),
        received_at_ms: ctx.datagram.received_at_ms,
    };
    ctx.begin_message(hdr.export_time_ms);
    decode_sets(ctx, &hdr, &r, out)?;
    let outcome = ctx
        .state
        .sequences
        .entry((FlowProtocol::NetflowV9, source_id))
        .or_default()
        .observe(sequence, Some(1));
    ctx.count_sequence(outcome, true);
    Ok(())
}
