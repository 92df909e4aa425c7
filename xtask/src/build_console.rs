//! `cargo xtask build-console`: the web console's bundle (`flowlens-api/console/dist`),
//! which `flowlens-api`'s build script embeds in the binary.
//!
//! Installs the locked Node packages (`npm ci`, only when `package-lock.json` is newer
//! than what `node_modules` holds) and runs the console's `build.mjs` (esbuild). The
//! stable `cargo build` never needs Node: without the bundle the API serves a page
//! saying how to build it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    /// Run `npm ci` even when `node_modules` looks current.
    #[arg(long)]
    pub(crate) reinstall: bool,
}

/// The console's source directory.
pub(crate) fn console_dir(ws: &Path) -> PathBuf {
    ws.join("flowlens-api/console")
}

/// Whether `node` and `npm` are on PATH.
pub(crate) fn node_available() -> bool {
    ["node", "npm"].iter().all(|tool| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

pub(crate) fn run(opts: &Options, ws: &Path) -> Result<()> {
    if !node_available() {
        bail!(
            "the console needs Node.js and npm (Debian: apt-get install nodejs npm); \
             the API still builds and runs without it, serving a page that says so"
        );
    }
    let dir = console_dir(ws);
    // npm writes this marker after a successful install; it is newer than the lock
    // file unless the lock changed since.
    let marker = dir.join("node_modules/.package-lock.json");
    let stale = match (modified(&marker), modified(&dir.join("package-lock.json"))) {
        (Some(installed), Some(lock)) => installed < lock,
        _ => true,
    };
    if opts.reinstall || stale {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .status()
            .context("running npm ci")?;
        if !status.success() {
            bail!("npm ci failed in {}", dir.display());
        }
    }
    let status = Command::new("node")
        .arg("build.mjs")
        .current_dir(&dir)
        .status()
        .context("running node build.mjs")?;
    if !status.success() {
        bail!("building the console failed");
    }
    Ok(())
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
