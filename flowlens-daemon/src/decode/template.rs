//! Placeholder.
#[derive(Debug, Default)]
pub(crate) struct HeldSets;
impl HeldSets {
    pub(crate) fn expire(&mut self, _now: u64, _hold: u64) -> u64 { 0 }
}
