//! IPFIX (RFC 7011): the 16-byte message header, then sets decoded by
//! [`super::template`].
//!
//! Header: version (10), message length, export time (s), sequence number, observation
//! domain id. The sequence counts data records (not messages) per domain, so a gap is
//! lost records; when a message had data sets held for a template, its record count is
//! unknown and the next message is not checked.

use super::reader::Reader;
use super::template::{ExportCtx, decode_sets};
use super::{Context, DecodeError};
use crate::flow::{FlowProtocol, FlowRecord};

/// Header length in octets (RFC 7011 §3.1).
pub(crate) const HEADER_LEN: usize = 16;

pub(super) fn decode(
    ctx: &mut Context<'_, '_>,
    out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    let payload = ctx.datagram.payload;
    let mut r = Reader::new(payload);
    let _version = r.u16()?;
    let length = usize::from(r.u16()?);
    if length < HEADER_LEN || length > payload.len() {
        return Err(DecodeError::BadLength {
            offset: 2,
            what: "message",
            length,
        });
    }
    let export_secs = r.u32()?;
    let sequence = r.u32()?;
    let domain = r.u32()?;
    // Bytes after the message length are not part of the message (RFC 7011 §3.1):
    // trailing bytes.
    let body = r.sub(length - HEADER_LEN)?;
    ctx.trailing(length, payload.len() - length);
    let hdr = ExportCtx {
        proto: FlowProtocol::Ipfix,
        domain,
        export_time_ms: u64::from(export_secs) * 1000,
        sys_uptime_ms: None,
        received_at_ms: ctx.datagram.received_at_ms,
    };
    ctx.begin_message(hdr.export_time_ms);
    let records = decode_sets(ctx, &hdr, &body, out)?;
    let outcome = ctx
        .state
        .sequences
        .entry((FlowProtocol::Ipfix, domain))
        .or_default()
        .observe_with_alternative(
            sequence,
            records.map(|r| r.all),
            records.map(|r| r.all - r.options),
        );
    ctx.count_sequence(outcome, false);
    Ok(())
}
