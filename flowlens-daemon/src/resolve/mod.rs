//! Dependency resolution: turning flow records into "client asset depends on server
//! asset's (protocol, port)".
//!
//! PURE planning only: no clock, sockets or database. Today it owns direction
//! inference: [`direction`] decides which end of a unidirectional record is the client
//! and which the server, so a connection's two records make one dependency, helped by
//! [`fan_out`] (distinct-peer counts in bounded memory) when ports cannot tell, and by
//! [`listeners`] (endpoints learnt to listen across windows) before the port rules;
//! [`dynamic_ports`] recognizes per-transfer server ports (passive FTP, RPC, RTP) so
//! they fold into one dependency. Later
//! issues add aggregation windows and dependency upserts on top of [`direction::Oriented`].

pub mod direction;
pub mod dynamic_ports;
pub mod fan_out;
pub mod listeners;
