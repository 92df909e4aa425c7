//! EDGE: metrics names and publishing (`metrics`), what each metric means
//! (`catalogue`), and the `/health` + `/metrics` HTTP server (`server`).

pub mod catalogue;
pub mod metrics;
pub mod server;
