//! Enrichment: what FlowLens can say about a flow beyond what the exporter sent.
//!
//! It owns two PURE pieces: [`classify`] (is an address ours; does a flow run internal,
//! egress, ingress or external) and [`services`] (which service a (protocol, port)
//! conventionally is, and how a port number is usually used). Both are functions of
//! values with their tables compiled in, so the dependency resolver and benches can call
//! them per record without I/O.
//!
//! And two EDGE pieces, each with its own config section (DESIGN.md §3.2): [`geoip`]
//! (country, city and AS from `MaxMind` DB files read into memory at startup, so a lookup
//! is a tree walk with no I/O) and [`rdns`] (reverse DNS through a bounded cache that is
//! filled by background tasks, so the flow path asks and moves on, never waiting on a
//! resolver). Asset correlation comes later, in the same shape.

pub mod classify;
pub mod geoip;
pub mod rdns;
pub mod services;
pub mod shared;
