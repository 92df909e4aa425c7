//! flowlens-api: the axum REST and `WebSocket` service over the `PostgreSQL` graph.
//!
//! It will own the `/api/v1` routes (assets, dependencies, topology, analysis, changes,
//! alerts, discovery, admin), JWT auth with roles, rate limits and caching. It shares
//! no Rust types with the daemon: the schema in `migrations/` is the contract. Filled
//! by the API issue; until then the binary only says so.

fn main() -> std::process::ExitCode {
    eprintln!("flowlens-api: not built yet (see the API issue); nothing to serve");
    std::process::ExitCode::from(2)
}
