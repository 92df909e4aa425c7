//! `cargo xtask`: the one place that knows how FlowLens is built and run.
//!
//! It will build the eBPF object (nightly, `build-std`, bpf-linker), load it, run the
//! whole stack on an embedded PostgreSQL and drive the benchmarks. The ingestion and
//! PostgreSQL issues add those subcommands; today it has none.

fn main() -> std::process::ExitCode {
    eprintln!("cargo xtask: no subcommands yet (build-ebpf and run arrive with ingestion)");
    std::process::ExitCode::from(2)
}
