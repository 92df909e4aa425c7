//! Command-line interface of `flowlens-daemon`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::blast::BlastProtocol;
use crate::decode_command::Format;
use crate::pipeline::{Output, Role};

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
        /// Say on stderr why each datagram not decoded whole was not (malformed,
        /// trailing bytes, records skipped, template missing), and list every template
        /// learned with its fields.
        #[arg(long)]
        explain: bool,
        /// Capture files, decoded in order with one template state.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Run the collector: receive (XDP or UDP), decode, hand flows to the sink.
    Run {
        /// YAML configuration (DESIGN.md section and key names); env FLOWLENS_* overrides it.
        #[arg(long, env = "FLOWLENS_CONFIG")]
        config: Option<PathBuf>,
        /// Interface to attach the XDP program to (repeatable); adds to xdp.interfaces.
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// Never use XDP: receive on UDP sockets.
        #[arg(long)]
        no_xdp: bool,
        /// Where decoded flows go: `postgres` (the dependency graph), `jsonl:PATH`,
        /// `discard`, or `auto`: postgres when `DATABASE_URL` or `database.url` is set.
        #[arg(long, default_value = "auto")]
        output: Output,
        /// Which stages run here: `all` (receive, decode, write the graph), `ingest`
        /// (receive and produce to Kafka), or `process` (consume from Kafka, decode,
        /// write the graph).
        #[arg(long, value_enum, default_value = "all")]
        role: Role,
        /// Log filter (tracing EnvFilter syntax), e.g. `info` or `flowlens_daemon=debug`.
        #[arg(long, env = "FLOWLENS_LOG", default_value = "info")]
        log_level: String,
    },
    /// Print the effective configuration (file < FLOWLENS_* environment, defaults for
    /// the rest; secrets redacted) on stdout and every problem on stderr; exit 1 when
    /// the daemon would refuse it.
    CheckConfig {
        /// The YAML file (none: defaults and the environment only).
        #[arg(env = "FLOWLENS_CONFIG")]
        file: Option<PathBuf>,
    },
    /// Play a known enterprise topology (clients, web, app, database, cache, DNS, one
    /// external API) to a collector as IPFIX, to check a setup end to end.
    Generate {
        /// Export protocol (IPFIX).
        #[arg(long, default_value = "ipfix")]
        proto: GenerateProtocol,
        /// Collector address, e.g. 127.0.0.1:4739.
        #[arg(long)]
        target: std::net::SocketAddr,
        /// The exporter's address: the source address datagrams are sent from (e.g.
        /// 127.0.0.2 to play a second exporter on loopback).
        #[arg(long)]
        source: Option<std::net::IpAddr>,
        /// Flow records per second (0 = as fast as possible).
        #[arg(long, default_value_t = 1000)]
        rate: u64,
        /// Rounds of the topology (one connection per client and service each).
        #[arg(long, default_value_t = 10)]
        rounds: u64,
        /// Clients in the topology (each adds three dependencies).
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
    /// Start (creating if needed) a private PostgreSQL cluster in DIR from the system's
    /// binaries, create DATABASE in it, print its URL. Used by `cargo xtask run` when
    /// no `DATABASE_URL` is given.
    #[command(hide = true)]
    EmbeddedPostgres {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value = "flowlens")]
        database: String,
        /// Stop the cluster instead (its data stays).
        #[arg(long)]
        stop: bool,
        /// Create it durable (fsync on, password authentication): the main job's
        /// cluster. Without it a new cluster is a fast scratch one (tests, benchmarks).
        #[arg(long)]
        durable: bool,
    },
    /// Benchmark helper: send synthetic export datagrams fast (sendmmsg) to a collector.
    #[command(hide = true)]
    Blast {
        #[arg(long, value_enum)]
        proto: BlastProtocol,
        /// Collector address, e.g. 10.0.0.1:2055.
        #[arg(long)]
        target: std::net::SocketAddr,
        /// Data datagrams to send.
        #[arg(long, default_value_t = 100_000)]
        count: u64,
        /// Datagrams per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Instead of sending, write a trafgen(8) configuration of this many frames
        /// (templates included) to `--trafgen-config` and print what it holds.
        #[arg(long, requires_all = ["trafgen_config", "dst_mac", "source"])]
        trafgen_frames: Option<usize>,
        /// Where to write the trafgen configuration.
        #[arg(long)]
        trafgen_config: Option<PathBuf>,
        /// The collector's MAC address, for the trafgen frames.
        #[arg(long)]
        dst_mac: Option<String>,
        /// The source address and port of the trafgen frames.
        #[arg(long)]
        source: Option<std::net::SocketAddrV4>,
    },
}

/// Protocols `generate` can export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GenerateProtocol {
    Ipfix,
}
