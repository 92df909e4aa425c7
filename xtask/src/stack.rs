//! `cargo xtask run -- ARGS`: build the XDP object, the daemon and the API, then run
//! `flowlens-daemon run ARGS` in the foreground and `flowlens-api serve` beside it
//! (on 127.0.0.1:8000 unless `FLOWLENS_API__HOST`/`FLOWLENS_API__PORT` say otherwise;
//! `--no-api` leaves it out). Without `JWT_SECRET` the API signs tokens with a secret
//! kept in `target/flowlens-api.secret` (made on first run, so tokens survive
//! restarts), and an admin token is printed at start.
//!
//! When the object cannot be built (no nightly, no bpf-linker), it says why and runs
//! the daemon anyway: the daemon falls back to UDP sockets.
//!
//! Without `DATABASE_URL` it provides the embedded default: a private, durable
//! PostgreSQL cluster (fsync on, password authentication; see `flowlens-pgcluster`) made
//! from the system's binaries (Debian's `postgresql` package, installed with apt when
//! missing and we are root), database `flowlens`, and the daemon writes the graph there.
//! Its data lives outside `target/`, so `cargo clean` cannot delete the graph:
//! `$FLOWLENS_DATA_DIR/pg` when set, else `/var/lib/flowlens/pg` as root, else
//! `$XDG_DATA_HOME/flowlens/pg` (`~/.local/share/flowlens/pg`). The cluster keeps
//! running after the daemon stops (Ctrl-C), with its data; `cargo xtask run
//! --stop-postgres` stops it.

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
    /// Run the daemon only, without the API.
    #[arg(long)]
    no_api: bool,
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

/// `cargo build --release` of the daemon and the API (`--locked` for packages).
pub(crate) fn build_release(ws: &Path, locked: bool) -> Result<()> {
    let mut cargo = Command::new("cargo");
    cargo.current_dir(ws).args([
        "build",
        "--release",
        "-p",
        "flowlens-daemon",
        "-p",
        "flowlens-api",
    ]);
    if locked {
        cargo.arg("--locked");
    }
    let status = cargo.status().context("running cargo build")?;
    if !status.success() {
        bail!("building flowlens-daemon and flowlens-api failed");
    }
    Ok(())
}

pub(crate) fn run(opts: &Options) -> Result<()> {
    let object = build_object();
    let ws = workspace();
    // The console is embedded in the API at build time: build it first. Without Node
    // the API still runs and says at / how to get the console.
    if !opts.no_api
        && let Err(e) =
            crate::build_console::run(&crate::build_console::Options { reinstall: false }, &ws)
    {
        eprintln!("cargo xtask: no web console this time: {e:#}");
    }
    build_release(&ws, false)?;
    let bin = ws.join("target/release/flowlens-daemon");
    let pg_dir = data_dir()?.join("pg");
    notice_old_cluster(&ws, &pg_dir);
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
    // The decoder's templates survive a restart next to the embedded cluster.
    if std::env::var_os("FLOWLENS_STATE__DIRECTORY").is_none() {
        daemon.env("FLOWLENS_STATE__DIRECTORY", data_dir()?);
    }
    let database = if let Ok(url) = std::env::var("DATABASE_URL") {
        url
    } else {
        let url = embedded_postgres(&bin, &pg_dir)?;
        eprintln!("cargo xtask: the graph goes to the embedded PostgreSQL at {url}");
        daemon.env("DATABASE_URL", &url);
        url
    };
    if let Some(o) = object {
        daemon.env("FLOWLENS_EBPF_OBJECT", o);
    }
    let _api = if opts.no_api {
        None
    } else {
        Some(start_api(&ws, &database)?)
    };
    let status = daemon.status().context("starting flowlens-daemon")?;
    if !status.success() {
        bail!("flowlens-daemon exited with {status}");
    }
    Ok(())
}

/// Stops the API when the daemon has stopped.
struct ApiProcess(std::process::Child);

impl Drop for ApiProcess {
    fn drop(&mut self) {
        // Ctrl-C reached it too; this is for the daemon failing on its own.
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// Starts `flowlens-api serve` on the daemon's database and prints an admin token.
fn start_api(ws: &Path, database: &str) -> Result<ApiProcess> {
    let api = ws.join("target/release/flowlens-api");
    let secret = if let Ok(s) = std::env::var("JWT_SECRET") {
        s
    } else {
        let file = ws.join("target/flowlens-api.secret");
        if !file.exists() {
            let mut bytes = [0_u8; 32];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").context("reading /dev/urandom")?,
                &mut bytes,
            )?;
            let hex = bytes.iter().fold(String::new(), |mut h, b| {
                use std::fmt::Write as _;
                let _ = write!(h, "{b:02x}");
                h
            });
            std::fs::write(&file, hex).context("writing target/flowlens-api.secret")?;
        }
        std::fs::read_to_string(&file)?.trim().to_owned()
    };
    let mut cmd = Command::new(&api);
    cmd.arg("serve")
        .env("DATABASE_URL", database)
        .env("JWT_SECRET", &secret);
    if std::env::var_os("FLOWLENS_API__HOST").is_none() {
        cmd.env("FLOWLENS_API__HOST", "127.0.0.1");
    }
    let child = cmd.spawn().context("starting flowlens-api")?;
    let token = Command::new(&api)
        .args(["token", "create", "--role", "admin", "--subject", "admin"])
        .env("JWT_SECRET", &secret)
        .output()
        .context("creating an admin token")?;
    let port = std::env::var("FLOWLENS_API__PORT").unwrap_or_else(|_| "8000".to_owned());
    let host = std::env::var("FLOWLENS_API__HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    eprintln!(
        "cargo xtask: the web console is at http://{host}:{port}/ (sign in with the token \
         below); the API serves on port {port}; an admin token (24 h):\n{}\n\
         e.g. curl -H \"Authorization: Bearer $TOKEN\" http://127.0.0.1:{port}/api/v1/assets",
        String::from_utf8_lossy(&token.stdout).trim()
    );
    Ok(ApiProcess(child))
}

/// Where the embedded default keeps its data (see the module docs).
fn data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("FLOWLENS_DATA_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    // Root owns /proc/self when we run as root (xtask has no libc binding of its own).
    let root = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self")?) == 0;
    if root {
        return Ok(PathBuf::from("/var/lib/flowlens"));
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(xdg).join("flowlens"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("neither FLOWLENS_DATA_DIR, XDG_DATA_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".local/share/flowlens"))
}

/// Says how to carry a graph over from where earlier versions kept the embedded
/// cluster (`target/flowlens-pg`: fsync off, trust authentication, and deleted by
/// `cargo clean`) when the durable cluster does not exist yet. Nothing is moved: that
/// cluster's settings are not the durable ones, and a dump is the safe way across.
fn notice_old_cluster(ws: &Path, pg_dir: &Path) {
    let old = ws.join("target/flowlens-pg");
    if pg_dir.join("data").exists() || !old.join("data/PG_VERSION").exists() {
        return;
    }
    eprintln!(
        "cargo xtask: a graph from an earlier version is in {old} (fast settings, inside          target/); the embedded default now keeps its data in {new}. To carry it over,          start the old cluster (`flowlens-daemon embedded-postgres --dir {old}`), then          `pg_dump -Fc` its flowlens database and `pg_restore` into the new one.",
        old = old.display(),
        new = pg_dir.display()
    );
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
        .args(["embedded-postgres", "--durable", "--dir"])
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
