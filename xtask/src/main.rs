//! `cargo xtask`: the one place that knows how the parts of FlowLens that plain cargo
//! cannot build are built.
//!
//! Today it has one subcommand, `build-ebpf` ([`build_ebpf`]): it checks for what the
//! XDP program's build needs (a nightly toolchain whose LLVM bpf-linker can read,
//! `rust-src`, bpf-linker), installs `rust-src` and bpf-linker itself when it can, says
//! exactly what to install otherwise, builds `flowlens-ebpf` for `bpfel-unknown-none`
//! and prints the object's path on stdout (diagnostics go to stderr). The stable
//! workspace build never needs any of that: the daemon loads the object from a path.
//! Running the daemon and the benchmarks arrive as further subcommands.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod build_ebpf;

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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::BuildEbpf(opts) => build_ebpf::run(&opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cargo xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
