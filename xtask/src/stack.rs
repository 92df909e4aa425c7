//! `cargo xtask run -- ARGS`: build the XDP object and the daemon, then run
//! `flowlens-daemon run ARGS` in the foreground.
//!
//! When the object cannot be built (no nightly, no bpf-linker), it says why and runs
//! the daemon anyway: the daemon falls back to UDP sockets. The PostgreSQL issue adds
//! the embedded database to this command.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::build_ebpf;

/// Options of `cargo xtask run`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Arguments for `flowlens-daemon run` (after `--`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

/// The workspace root (xtask's parent directory).
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// Builds the XDP object; `None` (with the reason on stderr) when it cannot be built.
pub(crate) fn build_object() -> Option<PathBuf> {
    match build_ebpf::run(&build_ebpf::Options::default()) {
        Ok(()) => {
            let object = workspace().join("target/bpfel-unknown-none/release/flowlens-ebpf");
            object.is_file().then_some(object)
        }
        Err(e) => {
            eprintln!(
                "cargo xtask: cannot build the XDP object ({e:#}); the daemon will use UDP sockets"
            );
            None
        }
    }
}

pub(crate) fn run(opts: &Options) -> Result<()> {
    let object = build_object();
    let ws = workspace();
    let status = Command::new("cargo")
        .current_dir(&ws)
        .args(["build", "--release", "-p", "flowlens-daemon"])
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building flowlens-daemon failed");
    }
    let mut daemon = Command::new(ws.join("target/release/flowlens-daemon"));
    daemon.arg("run").args(&opts.args);
    if let Some(o) = object {
        daemon.env("FLOWLENS_EBPF_OBJECT", o);
    }
    let status = daemon.status().context("starting flowlens-daemon")?;
    if !status.success() {
        bail!("flowlens-daemon exited with {status}");
    }
    Ok(())
}
