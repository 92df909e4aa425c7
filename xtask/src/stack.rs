//! `cargo xtask run -- ARGS`: build the XDP object and the daemon, then run
//! `flowlens-daemon run ARGS` in the foreground.
//!
//! When the object cannot be built (no nightly, no bpf-linker), it says why and runs
//! the daemon anyway: the daemon falls back to UDP sockets.
//!
//! Without `DATABASE_URL` it provides the embedded default: a private PostgreSQL
//! cluster under `target/flowlens-pg` made from the system's binaries (Debian's
//! `postgresql` package, installed with apt when missing and we are root), database
//! `flowlens`, and the daemon writes the graph there. The cluster keeps running after
//! the daemon stops (Ctrl-C), with its data; `cargo xtask run --stop-postgres` stops
//! it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::build_ebpf;

/// Options of `cargo xtask run`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Stop the embedded PostgreSQL cluster (its data stays) and exit.
    #[arg(long)]
    stop_postgres: bool,
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
    let bin = ws.join("target/release/flowlens-daemon");
    let pg_dir = ws.join("target/flowlens-pg");
    if opts.stop_postgres {
        let status = Command::new(&bin)
            .args(["embedded-postgres", "--stop", "--dir"])
            .arg(&pg_dir)
            .status()?;
        if !status.success() {
            bail!("stopping the embedded PostgreSQL failed");
        }
        return Ok(());
    }
    let mut daemon = Command::new(&bin);
    daemon.arg("run").args(&opts.args);
    if std::env::var_os("DATABASE_URL").is_none() {
        let url = embedded_postgres(&bin, &pg_dir)?;
        eprintln!("cargo xtask: the graph goes to the embedded PostgreSQL at {url}");
        daemon.env("DATABASE_URL", url);
    }
    if let Some(o) = object {
        daemon.env("FLOWLENS_EBPF_OBJECT", o);
    }
    let status = daemon.status().context("starting flowlens-daemon")?;
    if !status.success() {
        bail!("flowlens-daemon exited with {status}");
    }
    Ok(())
}

/// Starts the embedded cluster (installing PostgreSQL when missing) and returns the
/// URL of its `flowlens` database.
fn embedded_postgres(daemon: &Path, dir: &Path) -> Result<String> {
    let has_binaries = std::fs::read_dir("/usr/lib/postgresql").is_ok_and(|d| {
        d.filter_map(Result::ok)
            .any(|e| e.path().join("bin/initdb").exists())
    });
    if !has_binaries {
        eprintln!(
            "cargo xtask: PostgreSQL is not installed; installing Debian's postgresql package"
        );
        let status = Command::new("apt-get")
            .args([
                "install",
                "-y",
                "-q",
                "--no-install-recommends",
                "postgresql",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get (install PostgreSQL yourself, or set DATABASE_URL)")?;
        if !status.success() {
            bail!("apt-get install postgresql failed: install it, or set DATABASE_URL");
        }
    }
    let out = Command::new(daemon)
        .args(["embedded-postgres", "--dir"])
        .arg(dir)
        .output()
        .context("starting the embedded PostgreSQL")?;
    if !out.status.success() {
        bail!(
            "the embedded PostgreSQL did not start: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
