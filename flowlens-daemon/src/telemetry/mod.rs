//! EDGE: metrics names and publishing (`metrics`) and the `/health` + `/metrics` HTTP
//! server (`server`).

pub mod metrics;
pub mod server;
