//! `cargo xtask build-ebpf`: build the XDP program and print the object's path.
//!
//! The BPF target is tier 3, so the build needs a nightly toolchain with `rust-src`
//! (`-Z build-std=core`) and bpf-linker, and bpf-linker's LLVM must be able to read
//! rustc's bitcode (Debian 12 builds it against LLVM 22; a nightly on LLVM 23 fails with
//! `Invalid record`). This module checks each of those, installs `rust-src` and
//! bpf-linker when it can, and otherwise lists everything missing with the command that
//! fixes it, before starting a build that would fail obscurely.
//!
//! The object goes to `<workspace>/target/bpfel-unknown-none/release/flowlens-ebpf`
//! (whatever `CARGO_TARGET_DIR` says, unless `--target-dir` is given), because that is
//! where the daemon looks by default. The path is the only thing printed on stdout.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The BPF target triple (little-endian; every host FlowLens runs on).
const TARGET: &str = "bpfel-unknown-none";
/// The newest LLVM major the recipe's bpf-linker reads (Debian 12's LLVM 22).
const LINKER_LLVM_MAJOR: u32 = 22;
/// Where Debian's LLVM 22 lives; bpf-linker's `llvm-22` feature builds against it.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// System packages bpf-linker's build needs on Debian 12 (LLVM 22 from
/// bookworm-security).
const APT_PACKAGES: &str = "llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev";
/// bpf-linker's version line that the recipe was verified with.
const BPF_LINKER_VERSION: &str = "~0.13";
/// Environment a parent cargo may have set that would point the nested build at the
/// wrong compiler, flags, target or directory.
const SCRUBBED_ENV: &[&str] = &[
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "RUSTFLAGS",
    "RUSTUP_TOOLCHAIN",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_BUILD_TARGET",
    "CARGO_BUILD_TARGET_DIR",
    "CARGO_TARGET_DIR",
    "CARGO_ENCODED_RUSTFLAGS",
    "CARGO_MAKEFLAGS",
];

/// Options of `cargo xtask build-ebpf`.
#[derive(Debug, Default, clap::Args)]
pub(crate) struct Options {
    /// Toolchain for the BPF build [default: the channel in
    /// flowlens-ebpf/rust-toolchain.toml]. Its LLVM must be 22 or older.
    #[arg(long, env = "FLOWLENS_EBPF_TOOLCHAIN")]
    toolchain: Option<String>,
    /// Cargo target directory [default: <workspace>/target, where the daemon looks].
    #[arg(long)]
    target_dir: Option<PathBuf>,
    /// Only report what is missing; never run `rustup component add` or `cargo install`.
    #[arg(long)]
    no_install: bool,
    /// Build with `--locked` (CI: flowlens-ebpf/Cargo.lock must be up to date).
    #[arg(long)]
    locked: bool,
}

/// Checks the prerequisites, builds, prints the object path.
pub(crate) fn run(opts: &Options) -> Result<()> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("xtask lives inside the workspace")?
        .to_path_buf();
    let crate_dir = workspace.join("flowlens-ebpf");
    let toolchain = match &opts.toolchain {
        Some(t) => t.clone(),
        None => toolchain_from_file(&crate_dir.join("rust-toolchain.toml"))?,
    };
    let path = search_path();

    check_prerequisites(&toolchain, &path, opts.no_install)?;

    let target_dir = opts
        .target_dir
        .clone()
        .unwrap_or_else(|| workspace.join("target"));
    build(&crate_dir, &toolchain, &target_dir, &path, opts.locked)?;

    let object = target_dir
        .join(TARGET)
        .join("release")
        .join("flowlens-ebpf");
    if !object.is_file() {
        bail!(
            "the build succeeded but {} does not exist",
            object.display()
        );
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", object.display())?;
    Ok(())
}

/// `channel = "..."` from a rust-toolchain.toml (a one-line lookup; the file is ours).
fn toolchain_from_file(file: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .with_context(|| format!("no `channel = \"...\"` in {}", file.display()))
}

/// `PATH` with cargo's bin directory first, so a bpf-linker that `cargo install` just
/// put there is found even when the caller's `PATH` lacks it.
fn search_path() -> OsString {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")));
    let mut dirs: Vec<PathBuf> = cargo_home.map(|h| h.join("bin")).into_iter().collect();
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).unwrap_or_default()
}

/// Runs a command quietly; its stdout when it exits successfully.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with inherited output (for installs); whether it succeeded.
fn status(cmd: &mut Command) -> bool {
    eprintln!("cargo xtask: running {cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::inherit())
        .status()
        .is_ok_and(|s| s.success())
}

fn rustup(path: &OsString) -> Command {
    let mut c = Command::new("rustup");
    c.env("PATH", path);
    for k in SCRUBBED_ENV {
        c.env_remove(k);
    }
    c
}

/// What `rustc -vV` of a toolchain says.
struct RustcVersion {
    release: String,
    llvm_major: Option<u32>,
}

fn rustc_version(toolchain: &str, path: &OsString) -> Option<RustcVersion> {
    let text = output(rustup(path).args(["run", toolchain, "rustc", "-vV"]))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    Some(RustcVersion {
        release: field("release:")?,
        llvm_major: field("LLVM version:")
            .and_then(|v| v.split('.').next().and_then(|m| m.parse().ok())),
    })
}

/// Checks (and where allowed, installs) everything the build needs; fails with the
/// complete list of what is still missing.
fn check_prerequisites(toolchain: &str, path: &OsString, no_install: bool) -> Result<()> {
    if output(rustup(path).arg("--version")).is_none() {
        bail!(
            "rustup is not installed; the BPF build selects its nightly through rustup. \
             Install it from https://rustup.rs, then run this again"
        );
    }
    let mut missing: Vec<String> = Vec::new();

    match rustc_version(toolchain, path) {
        None => missing.push(format!(
            "the Rust toolchain `{toolchain}` is not installed:\n    rustup toolchain install \
             {toolchain} --profile minimal --component rust-src\n  Its `rustc -vV` must say \
             LLVM {LINKER_LLVM_MAJOR} or older (newer nightlies fail to link with `Invalid \
             record`); if `{toolchain}` is too new, pin a dated nightly and pass \
             --toolchain (or FLOWLENS_EBPF_TOOLCHAIN)"
        )),
        Some(v) => {
            if !v.release.contains("nightly") && !v.release.contains("dev") {
                missing.push(format!(
                    "toolchain `{toolchain}` is {}, not a nightly: the BPF target needs \
                     `-Z build-std`; pass --toolchain nightly (or a dated nightly)",
                    v.release
                ));
            }
            match v.llvm_major {
                Some(m) if m > LINKER_LLVM_MAJOR => eprintln!(
                    "cargo xtask: warning: `{toolchain}` uses LLVM {m}; a bpf-linker built \
                     against LLVM {LINKER_LLVM_MAJOR} cannot read its bitcode (`Invalid \
                     record`). Pin a nightly on LLVM {LINKER_LLVM_MAJOR} unless your \
                     bpf-linker uses LLVM {m}"
                ),
                _ => {}
            }
            if let Some(problem) = ensure_rust_src(toolchain, path, no_install) {
                missing.push(problem);
            }
        }
    }

    if let Some(problem) = ensure_bpf_linker(path, no_install) {
        missing.push(problem);
    }

    if missing.is_empty() {
        return Ok(());
    }
    for m in &missing {
        eprintln!("cargo xtask: missing: {m}");
    }
    bail!(
        "{} prerequisite(s) of the eBPF build missing (see above)",
        missing.len()
    )
}

fn ensure_rust_src(toolchain: &str, path: &OsString, no_install: bool) -> Option<String> {
    let installed =
        output(rustup(path).args(["component", "list", "--installed", "--toolchain", toolchain]))
            .is_some_and(|list| list.lines().any(|l| l.trim().starts_with("rust-src")));
    if installed {
        return None;
    }
    let fix = format!("rustup component add rust-src --toolchain {toolchain}");
    if !no_install
        && status(rustup(path).args(["component", "add", "rust-src", "--toolchain", toolchain]))
    {
        return None;
    }
    Some(format!(
        "rust-src for `{toolchain}` (needed by -Z build-std):\n    {fix}"
    ))
}

fn bpf_linker_works(path: &OsString) -> bool {
    output(
        Command::new("bpf-linker")
            .arg("--version")
            .env("PATH", path),
    )
    .is_some()
}

fn ensure_bpf_linker(path: &OsString, no_install: bool) -> Option<String> {
    if bpf_linker_works(path) {
        return None;
    }
    let llvm_config = Path::new(LLVM_PREFIX).join("bin").join("llvm-config");
    let llvm_path = {
        let mut dirs = vec![Path::new(LLVM_PREFIX).join("bin")];
        dirs.extend(std::env::split_paths(path));
        std::env::join_paths(dirs).unwrap_or_default()
    };
    let install = format!(
        "PATH={LLVM_PREFIX}/bin:$PATH LLVM_SYS_221_PREFIX={LLVM_PREFIX} cargo install \
         bpf-linker --version '{BPF_LINKER_VERSION}' --no-default-features --features llvm-22"
    );
    if !llvm_config.is_file() {
        return Some(format!(
            "bpf-linker, and LLVM 22 to build it against ({} not found):\n    apt-get \
             update && apt-get install -y {APT_PACKAGES}\n    {install}",
            llvm_config.display()
        ));
    }
    if !no_install {
        // About a minute on two cores.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", "llvm-22"])
            .env("PATH", &llvm_path)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX);
        for k in SCRUBBED_ENV {
            cmd.env_remove(k);
        }
        if status(&mut cmd) && bpf_linker_works(path) {
            return None;
        }
    }
    Some(format!(
        "bpf-linker (if its build failed, check the LLVM 22 development packages: \
         apt-get install -y {APT_PACKAGES}):\n    {install}"
    ))
}

/// The nested cargo build, run in the crate's directory so its rust-toolchain.toml and
/// .cargo/config.toml apply; the flags that matter are passed explicitly as well.
fn build(
    crate_dir: &Path,
    toolchain: &str,
    target_dir: &Path,
    path: &OsString,
    locked: bool,
) -> Result<()> {
    let mut cmd = rustup(path);
    cmd.args([
        "run",
        toolchain,
        "cargo",
        "build",
        "--release",
        "--target",
        TARGET,
    ])
    .args(["-Z", "build-std=core", "--target-dir"])
    .arg(target_dir)
    .current_dir(crate_dir)
    // Debug info is where bpf-linker gets the BTF that describes the maps
    // (`#[btf_map]`, map-in-map) to the loader.
    .env(
        "CARGO_ENCODED_RUSTFLAGS",
        "-Cdebuginfo=2\x1f-Clink-arg=--btf",
    )
    .env("CARGO_TERM_PROGRESS_WHEN", "never")
    .stdin(Stdio::null())
    .stdout(Stdio::inherit())
    .stderr(Stdio::piped());
    if locked {
        cmd.arg("--locked");
    }
    eprintln!("cargo xtask: building flowlens-ebpf with {toolchain} for {TARGET}");
    let mut child = cmd.spawn().context("starting the eBPF build")?;
    let mut llvm_mismatch = false;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            llvm_mismatch |= line.contains("Invalid record");
            eprintln!("{line}");
        }
    }
    let st = child.wait().context("waiting for the eBPF build")?;
    if st.success() {
        return Ok(());
    }
    if llvm_mismatch {
        bail!(
            "bpf-linker could not read rustc's bitcode (`Invalid record`): `{toolchain}` uses \
             a newer LLVM than bpf-linker. Use a nightly on LLVM {LINKER_LLVM_MAJOR} \
             (--toolchain / FLOWLENS_EBPF_TOOLCHAIN) or rebuild bpf-linker against that LLVM"
        );
    }
    bail!("the eBPF build failed ({st})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_channel_of_the_crates_toolchain_file() {
        let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../flowlens-ebpf/rust-toolchain.toml");
        assert_eq!(toolchain_from_file(&f).unwrap(), "nightly");
    }
}
