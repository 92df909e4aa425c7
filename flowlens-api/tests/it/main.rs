//! The API's integration tests, one binary: every route against a real PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::duration_suboptimal_units,
    reason = "tests: a failed unwrap is the failure message"
)]

mod admin;
mod alerts_changes;
mod analysis;
mod assets;
mod auth;
mod cli;
mod client;
mod console;
mod dependencies;
mod discovery;
mod graph_fixture;
mod instances;
mod limits;
mod servicenow;
mod support;
mod topology;
mod websocket;
