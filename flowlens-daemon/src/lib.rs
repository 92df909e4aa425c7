//! flowlens-daemon: the FlowLens collector.
//!
//! Today it owns the pure decoders (`decode`), the normalized flow model (`flow`) and
//! the offline `decode` command (`capture` reads pcap/pcapng, `output` writes JSON
//! lines). The ingestion, enrichment and PostgreSQL issues add the live pipeline.

pub mod decode;
pub mod flow;
