//! `cargo xtask bench console`: the web console in a real browser on the `bench api`
//! graph (10 000 assets, 50 000 dependencies).
//!
//! Builds the console and the API (release), seeds a fresh database in the private
//! cluster `target/bench-pg` with `bench api`'s seed, serves it as production would
//! (answer caches on; rate limits off, since one caller makes every request), and runs
//! `flowlens-api/console/bench/console.bench.mjs` in Debian's chromium: time from the
//! sign-in click to an interactive map (grouped, collapsed), to one opened group drawn
//! (expanded), and the longest task while panning and zooming. Prints the medians as
//! a Markdown table, with the bundle's size.

#![allow(
    clippy::disallowed_methods,
    reason = "a synchronous script: it waits for processes"
)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_ingest::{Killer, run_ok};

/// Options of `cargo xtask bench console`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    /// Tabs opened (the table shows the median).
    #[arg(long, default_value_t = 5)]
    pub(crate) runs: usize,
}

const ADDR: &str = "127.0.0.1:18710";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

pub(crate) fn run(opts: &Options, workspace: &Path) -> Result<()> {
    crate::build_console::run(
        &crate::build_console::Options { reinstall: false },
        workspace,
    )?;
    crate::stack::build_release(workspace, false)?;
    let daemon = workspace.join("target/release/flowlens-daemon");
    let api = workspace.join("target/release/flowlens-api");
    let db = format!("bench_console_{}", std::process::id());
    let url = run_ok(
        Command::new(&daemon)
            .args(["embedded-postgres", "--database", &db, "--dir"])
            .arg(workspace.join("target/bench-pg")),
    )?
    .trim()
    .to_owned();
    let dir = std::env::temp_dir().join("flowlens-bench-console");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let (host, port) = ADDR.split_once(':').context("addr")?;
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "api:\n  host: {host}\n  port: {port}\n  auth:\n    jwt_secret: {SECRET}\n  \
             rate_limiting:\n    enabled: false\n"
        ),
    )?;
    run_ok(
        Command::new(&api)
            .arg("migrate")
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", &url),
    )?;
    run_ok(Command::new("psql").args([
        url.as_str(),
        "-v",
        "ON_ERROR_STOP=1",
        "-qc",
        crate::bench_api::SEED,
    ]))?;
    let _server = Killer(
        Command::new(&api)
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .env("DATABASE_URL", &url)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("api.log"))?)
            .spawn()?,
    );
    let token = run_ok(
        Command::new(&api)
            .args(["token", "create", "--role", "viewer", "--subject", "bench"])
            .arg("--config")
            .arg(&config),
    )?
    .trim()
    .to_owned();
    let started = Instant::now();
    while !Command::new("curl")
        .args(["-sf", &format!("http://{ADDR}/api/v1/admin/health")])
        .output()
        .is_ok_and(|o| o.status.success())
    {
        if started.elapsed() > Duration::from_secs(30) {
            bail!(
                "the API did not start; see {}",
                dir.join("api.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let console = crate::build_console::console_dir(workspace);
    let out = run_ok(
        Command::new("node")
            .arg("bench/console.bench.mjs")
            .current_dir(&console)
            .env("FLOWLENS_URL", format!("http://{ADDR}"))
            .env("FLOWLENS_TOKEN", &token)
            .env("FLOWLENS_RUNS", opts.runs.to_string()),
    )?;
    let json = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .context("the browser script printed no result")?;
    eprintln!("bench console: {json}");
    let v: Value = parse(json)?;
    let (raw, gz) = bundle_size(&console.join("dist/assets"))?;
    let m = |k: &str| v.median.get(k).copied().unwrap_or(f64::NAN);
    #[expect(clippy::print_stdout, reason = "the report is the command's output")]
    let () = println!(
        "| measure (median of {} tabs) | value | goal |\n|---|---|---|\n\
         | sign-in -> interactive map, collapsed ({} groups) | {:.0} ms | < 2000 ms |\n\
         | open the biggest group ({} assets, {} edges drawn) | {:.0} ms | |\n\
         | longest task while panning and zooming | {:.0} ms | < 200 ms |\n\
         | longest task while loading | {:.0} ms | |\n\
         | bundle (JavaScript + CSS) | {} kB, {} kB gzipped | |",
        opts.runs,
        v.groups,
        m("collapsed_ms"),
        v.expanded_assets,
        v.expanded_edges,
        m("expanded_ms"),
        m("pan_longest_task_ms"),
        m("load_longest_task_ms"),
        raw / 1000,
        gz / 1000,
    );
    Ok(())
}

/// What the table needs from the script's JSON (xtask has no JSON crate; the
/// script's output is flat enough to read by key).
struct Value {
    median: std::collections::HashMap<String, f64>,
    groups: u64,
    expanded_assets: u64,
    expanded_edges: u64,
}

fn number_after(s: &str, key: &str) -> Option<f64> {
    let at = s.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &s[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

fn parse(json: &str) -> Result<Value> {
    let median_part = &json[json.find("\"median\"").context("no median")?..];
    let mut median = std::collections::HashMap::new();
    for k in [
        "collapsed_ms",
        "expanded_ms",
        "pan_longest_task_ms",
        "load_longest_task_ms",
    ] {
        median.insert(
            k.to_owned(),
            number_after(median_part, k).with_context(|| format!("no {k}"))?,
        );
    }
    let f = |k: &str| {
        number_after(json, k)
            .and_then(|v| format!("{v:.0}").parse().ok())
            .unwrap_or(0)
    };
    Ok(Value {
        median,
        groups: f("collapsed_groups"),
        expanded_assets: f("expanded_assets_drawn"),
        expanded_edges: f("expanded_edges_drawn"),
    })
}

/// Bytes of the bundle's scripts and styles, plain and gzipped.
fn bundle_size(assets: &Path) -> Result<(u64, u64)> {
    let (mut raw, mut gz) = (0, 0);
    for entry in std::fs::read_dir(assets)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_ascii_lowercase();
        let len = entry.metadata()?.len();
        let (stem, zipped) = name
            .strip_suffix(".gz")
            .map_or((name.as_str(), false), |s| (s, true));
        let ext = Path::new(stem).extension().and_then(|e| e.to_str());
        if matches!(ext, Some("js" | "css")) {
            if zipped {
                gz += len;
            } else {
                raw += len;
            }
        }
    }
    Ok((raw, gz))
}
