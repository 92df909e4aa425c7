//! flowlens-api: the axum REST and `WebSocket` service over the `PostgreSQL` graph.
//!
//! It will own the `/api/v1` routes (assets, dependencies, topology, analysis, changes,
//! alerts, discovery, admin), JWT auth with roles, rate limits and caching. It shares
//! no Rust types with the daemon: the schema in `migrations/` is the contract.
//!
//! Today the library holds only the pure analysis core, [`graph`]: a snapshot of the
//! dependency graph built from plain rows, and the impact, path, single-point-of-failure
//! and blast-radius algorithms over it. The routes will load the rows from `PostgreSQL`,
//! build a [`graph::Graph`] and serialize what the algorithms return; nothing in
//! [`graph`] does I/O, so it is tested without a database.

pub mod graph;
