//! Placeholder while the decoder is written.
use super::{Context, DecodeError};
use crate::flow::FlowRecord;

pub(super) fn decode(
    _ctx: &mut Context<'_, '_>,
    _out: &mut Vec<FlowRecord>,
) -> Result<(), DecodeError> {
    Ok(())
}
