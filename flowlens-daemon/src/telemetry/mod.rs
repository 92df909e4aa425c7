//! EDGE: metrics names and publishing (`metrics`), what each metric means
//! (`catalogue`), the `/health` + `/metrics` HTTP server (`server`), and systemd's
//! readiness notification (`notify`).

pub mod catalogue;
pub mod metrics;
pub mod notify;
pub mod server;
