//! Enrichment: what FlowLens can say about a flow beyond what the exporter sent.
//!
//! It owns, today, two PURE pieces: [`classify`] (is an address ours; does a flow run
//! internal, egress, ingress or external) and [`services`] (which service a (protocol,
//! port) conventionally is, and how a port number is usually used). Both are functions
//! of values with their tables compiled in, so the dependency resolver and benches can
//! call them per record without I/O. Later issues add `GeoIP`, reverse DNS and asset
//! correlation as EDGE modules behind small traits, so the pure pieces never wait on a
//! lookup.

pub mod classify;
pub mod services;
