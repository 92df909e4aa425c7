//! flowlens-daemon: the `FlowLens` collector.
//!
//! Today it owns the pure decoders ([`decode`]), the normalized flow model ([`flow`]),
//! capture reading ([`capture`], pure) and the offline `decode` command
//! ([`decode_command`], the edge that reads files and writes [`output`]). The
//! ingestion, enrichment and `PostgreSQL` issues add the live pipeline.

pub mod blast;
pub mod capture;
pub mod cli;
pub mod config;
pub mod config_reference;
pub mod decode;
pub mod decode_command;
pub mod decoder_state;
pub mod enrich;
pub mod flow;
pub mod generate;
pub mod graph;
pub mod ingest;
pub mod inventory;
pub mod kafka;
pub mod malformed_log;
pub mod notify;
pub mod output;
pub mod pipeline;
pub mod pressure;
pub mod resolve;
pub mod routing;
pub mod seam;
pub mod store;
pub mod telemetry;
#[doc(hidden)]
pub mod testing;
