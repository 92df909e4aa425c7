//! Wire encoders for tests, benchmarks and fuzz seeds: build NetFlow v5/v9, IPFIX
//! ([`wire`]) and sFlow v5 ([`sflow`]) datagrams from plain descriptions instead of
//! spelling bytes. Nothing here validates: malformed cases are made by patching bytes.
//! Public (and hidden from the docs) so integration tests and benches share one
//! encoder; never used by the daemon itself.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test support: builders given impossible sizes panic"
)]

pub mod moto;
pub mod pgproxy;
pub mod postgres;
pub mod sflow;
pub mod tansu;
pub mod wire;
