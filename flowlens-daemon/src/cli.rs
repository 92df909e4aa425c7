//! Command-line interface of `flowlens-daemon`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::decode_command::Format;

#[derive(Debug, Parser)]
#[command(name = "flowlens-daemon", version, about = "FlowLens flow collector")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Decode `NetFlow` v5/v9, IPFIX and sFlow v5 datagrams from pcap/pcapng captures.
    Decode {
        /// Output: one JSON object per flow (summary on stderr), or the summary only.
        #[arg(long, value_enum, default_value = "jsonl")]
        format: Format,
        /// Load template/sampling state from this file if it exists, save it at the end.
        #[arg(long)]
        state: Option<PathBuf>,
        /// Capture files, decoded in order with one template state.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}
