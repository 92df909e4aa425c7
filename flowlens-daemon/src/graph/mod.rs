//! The graph stage: decoded flows in, the PostgreSQL dependency graph out.
//!
//! [`sink::GraphSink`] orients each flow (client -> server service, see
//! [`crate::resolve::direction`]), aggregates it into tumbling windows
//! ([`window`], pure) and every `flush_interval_seconds` hands the windows to the
//! [`writer`], which upserts assets, dependencies, `flow_stats` and change events in one
//! transaction and keeps what it could not write for the next try.

pub mod config;
pub mod sink;
pub mod window;
pub mod writer;
