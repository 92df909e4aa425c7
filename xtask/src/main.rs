//! `cargo xtask`: the one place that knows how the parts of FlowLens that plain cargo
//! cannot build are built.
//!
//! Today it has one subcommand, `build-ebpf` ([`build_ebpf`]): it checks for what the
//! XDP program's build needs (a nightly toolchain whose LLVM bpf-linker can read,
//! `rust-src`, bpf-linker), installs `rust-src` and bpf-linker itself when it can, says
//! exactly what to install otherwise, builds `flowlens-ebpf` for `bpfel-unknown-none`
//! and prints the object's path on stdout (diagnostics go to stderr). The stable
//! workspace build never needs any of that: the daemon loads the object from a path.
//!
//! `run` ([`stack`]) builds the object and the daemon and runs `flowlens-daemon run`
//! with the object's path; `bench ingest` ([`bench_ingest`]) measures the highest
//! lossless flow rate of FlowLens (XDP and socket modes) and the C collectors on a veth
//! pair between two network namespaces; `bench pipeline` ([`bench_pipeline`]) the flows
//! per second from intake to committed PostgreSQL rows; `package` ([`package`]) the
//! Debian packages of both services; `build-console` ([`build_console`]) the web
//! console's bundle that `flowlens-api` embeds.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench_api;
mod bench_console;
mod bench_ingest;
mod bench_kafka;
mod bench_pipeline;
mod build_console;
mod build_ebpf;
mod package;
mod stack;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "FlowLens build tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build the XDP program (flowlens-ebpf) and print the object's path.
    BuildEbpf(build_ebpf::Options),
    /// Build the web console's bundle (npm ci + esbuild) for flowlens-api to embed.
    BuildConsole(build_console::Options),
    /// Build everything and run the daemon (`cargo xtask run -- ARGS` passes ARGS to
    /// `flowlens-daemon run`).
    Run(stack::Options),
    /// Benchmarks.
    #[command(subcommand)]
    Bench(Bench),
    /// Build the Debian packages (flowlens-daemon, flowlens-api) into target/package.
    Package(package::Options),
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Highest lossless flows/s per collector and protocol over a veth pair.
    Ingest(bench_ingest::Options),
    /// Flows/s from intake to committed PostgreSQL rows (the graph sink).
    Pipeline(bench_pipeline::Options),
    /// Requests/s and latency of the API's hot reads over a seeded graph.
    Api(bench_api::Options),
    /// The web console in chromium on the `bench api` graph: time to an interactive
    /// map, collapsed and expanded, the longest task while panning, the bundle size.
    Console(bench_console::Options),
    /// Flows/s through ingest -> Kafka -> process -> PostgreSQL, next to the direct
    /// path in the same run.
    Kafka(bench_pipeline::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BuildEbpf(opts) => build_ebpf::run(&opts),
        Command::BuildConsole(opts) => build_console::run(&opts, &stack::workspace()),
        Command::Run(opts) => stack::run(&opts),
        Command::Bench(Bench::Ingest(opts)) => {
            let object = stack::build_object();
            bench_ingest::run(&opts, &stack::workspace(), object.as_deref())
        }
        Command::Bench(Bench::Pipeline(opts)) => bench_pipeline::run(&opts, &stack::workspace()),
        Command::Bench(Bench::Api(opts)) => bench_api::run(&opts, &stack::workspace()),
        Command::Bench(Bench::Console(opts)) => bench_console::run(&opts, &stack::workspace()),
        Command::Bench(Bench::Kafka(opts)) => bench_kafka::run(&opts, &stack::workspace()),
        Command::Package(opts) => package::run(&opts, &stack::workspace()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cargo xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
