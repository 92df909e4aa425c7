//! `cargo xtask bench api`: requests/s and latency of the API's hot reads.
//!
//! A private PostgreSQL cluster (`target/bench-pg`, a fresh database per run) seeded
//! with 10 000 assets and 50 000 dependencies in four tiers (7 000 clients -> 2 000
//! web servers -> 800 app servers -> 200 databases, each calling five of the next tier,
//! databases replicating to five peers), `flowlens-api serve` in release mode (answer
//! caches off, so every request computes; rate limits off, so the load generator is
//! not refused), and `wrk` on loopback with a Lua script that spreads requests over
//! random assets. wrk is closed-loop: it measures the most requests/s the API serves
//! with `--connections` in flight and the latency at that load, which is the harder
//! condition than a fixed 2k req/s.

#![allow(
    clippy::disallowed_methods,
    reason = "a synchronous script: it waits for processes"
)]

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bench_ingest::{Killer, run_ok};

/// Options of `cargo xtask bench api`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Options {
    /// Seconds of load per endpoint.
    #[arg(long, default_value_t = 10)]
    pub(crate) duration: u64,
    /// Connections wrk keeps busy.
    #[arg(long, default_value_t = 8)]
    pub(crate) connections: u32,
    /// Runs per endpoint (the table shows the median run).
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Another `flowlens-api` binary (an older build) served beside this one on the
    /// same database and measured in the same run, alternating run by run, so the two
    /// compare on one machine state; the table adds its figures and the ratio.
    #[arg(long)]
    pub(crate) baseline: Option<std::path::PathBuf>,
    /// Only the endpoints whose name contains this.
    #[arg(long)]
    pub(crate) only: Option<String>,
}

const ADDR: &str = "127.0.0.1:18700";
/// Where `--baseline` serves.
const BASELINE_ADDR: &str = "127.0.0.1:18701";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

/// The seed: deterministic UUIDs `00000000-0000-4000-8000-<i in hex>`.
pub(crate) const SEED: &str = "
CREATE FUNCTION pg_temp.uid(i int) RETURNS uuid IMMUTABLE LANGUAGE sql AS
  $$ SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid $$;
INSERT INTO assets (id, name, asset_type, ip_addresses, first_seen, last_seen,
                    discovery_source, environment, is_internal, tags)
SELECT pg_temp.uid(i), 'host-' || lpad(i::text, 5, '0'),
       CASE WHEN i < 3000 THEN 'server' ELSE 'vm' END,
       ARRAY[('10.' || (i / 65536) || '.' || ((i / 256) % 256) || '.' || (i % 256))::inet],
       now() - interval '30 days', now() - make_interval(mins => i % 600), 'flow',
       CASE WHEN i % 10 = 0 THEN 'staging' ELSE 'prod' END, true,
       jsonb_build_object('tier', CASE WHEN i < 200 THEN 'data' WHEN i < 1000 THEN 'app'
                                       WHEN i < 3000 THEN 'web' ELSE 'client' END)
FROM generate_series(0, 9999) i;
INSERT INTO dependencies (source_asset_id, target_asset_id, protocol, port, inferred_service,
                          first_seen, last_seen, total_bytes, total_flows, is_internal)
SELECT pg_temp.uid(s), pg_temp.uid(t), 6, port, svc, now() - interval '30 days', now(),
       (s::bigint * 7919 + t) % 100000000, 100, true
FROM (
  SELECT c AS s, 1000 + (c * 5 + k) % 2000 AS t, 443 AS port, 'https' AS svc
    FROM generate_series(3000, 9999) c, generate_series(0, 4) k
  UNION ALL SELECT w, 200 + (w * 5 + k) % 800, 8080, 'http-alt'
    FROM generate_series(1000, 2999) w, generate_series(0, 4) k
  UNION ALL SELECT a, (a * 5 + k) % 200, 5432, 'postgresql'
    FROM generate_series(200, 999) a, generate_series(0, 4) k
  UNION ALL SELECT d, (d + 1 + k) % 200, 5433, 'replication'
    FROM generate_series(0, 199) d, generate_series(0, 4) k
) x;
ANALYZE;
";

/// One endpoint under load: a name, the Lua that builds its requests, and its goal.
struct Case {
    name: &'static str,
    lua: String,
    /// p99 goal in milliseconds, and whether it needs >= 2000 req/s as well.
    goal_p99_ms: Option<f64>,
    needs_2k: bool,
    /// Connections for this case (default `--connections`): the full topology's goal
    /// is the latency of one 17 MB answer, measured with one client.
    connections: Option<u32>,
}

fn lua_get(path_expr: &str) -> String {
    format!("request = function()\n  return wrk.format(\"GET\", {path_expr})\nend\n")
}

fn cases() -> Vec<Case> {
    let uid = "string.format(\"00000000-0000-4000-8000-%012x\", math.random(0, 9999))";
    vec![
        Case {
            name: "GET asset",
            lua: lua_get(&format!("\"/api/v1/assets/\" .. {uid}")),
            goal_p99_ms: Some(20.0),
            needs_2k: true,
            connections: None,
        },
        Case {
            name: "list assets, filtered",
            lua: lua_get(
                "\"/api/v1/assets?type=server&environment=prod&tag=tier:web&page=\" .. math.random(1, 30)",
            ),
            goal_p99_ms: None,
            needs_2k: false,
            connections: None,
        },
        Case {
            name: "topology around an asset, depth 2",
            lua: lua_get(&format!("\"/api/v1/topology?depth=2&asset_id=\" .. {uid}")),
            goal_p99_ms: None,
            needs_2k: false,
            connections: None,
        },
        Case {
            name: "full topology, one client",
            lua: lua_get("\"/api/v1/topology\""),
            goal_p99_ms: Some(300.0),
            needs_2k: false,
            connections: Some(1),
        },
        Case {
            name: "full topology",
            lua: lua_get("\"/api/v1/topology\""),
            goal_p99_ms: None,
            needs_2k: false,
            connections: None,
        },
        Case {
            name: "blast radius",
            lua: format!(
                "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\n\
                 request = function()\n  local body = string.format('{{\"asset_id\": \"%s\"}}', {uid})\n  \
                 return wrk.format(\"POST\", \"/api/v1/analysis/blast-radius\", nil, body)\nend\n"
            ),
            goal_p99_ms: Some(50.0),
            needs_2k: false,
            connections: None,
        },
        Case {
            name: "SPOF",
            lua: lua_get("\"/api/v1/analysis/spof\""),
            goal_p99_ms: Some(50.0),
            needs_2k: false,
            connections: None,
        },
    ]
}

/// wrk's `Requests/sec` and the 50th/99th percentile latency in ms.
fn parse_wrk(out: &str) -> Option<(f64, f64, f64)> {
    let ms = |s: &str| -> Option<f64> {
        let s = s.trim();
        if let Some(v) = s.strip_suffix("ms") {
            v.parse().ok()
        } else if let Some(v) = s.strip_suffix("us") {
            v.parse::<f64>().ok().map(|v| v / 1000.0)
        } else if let Some(v) = s.strip_suffix('s') {
            v.parse::<f64>().ok().map(|v| v * 1000.0)
        } else {
            None
        }
    };
    let pct = |p: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(p))
            .and_then(|l| ms(l.trim_start().trim_start_matches(p)))
    };
    let rps = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .trim_start_matches("Requests/sec:")
        .trim()
        .parse()
        .ok()?;
    Some((rps, pct("50%")?, pct("99%")?))
}

fn median(mut v: Vec<(f64, f64, f64)>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v[v.len() / 2]
}

pub(crate) fn run(opts: &Options, workspace: &Path) -> Result<()> {
    // wrk prints its version and exits 1: only a missing binary matters.
    Command::new("wrk")
        .arg("--version")
        .output()
        .context("wrk is needed (apt install wrk)")?;
    run_ok(Command::new("cargo").current_dir(workspace).args([
        "build",
        "--release",
        "-p",
        "flowlens-daemon",
        "-p",
        "flowlens-api",
    ]))?;
    let daemon = workspace.join("target/release/flowlens-daemon");
    let api = workspace.join("target/release/flowlens-api");
    // A database per binary (an older one refuses a schema with migrations it does
    // not know), in the same cluster, seeded alike.
    let database = |suffix: &str| -> Result<String> {
        let db = format!("bench_api_{}{suffix}", std::process::id());
        Ok(run_ok(
            Command::new(&daemon)
                .args(["embedded-postgres", "--database", &db, "--dir"])
                .arg(workspace.join("target/bench-pg")),
        )?
        .trim()
        .to_owned())
    };
    let url = database("")?;
    let dir = std::env::temp_dir().join("flowlens-bench-api");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let write_config = |name: &str, addr: &str| -> Result<std::path::PathBuf> {
        let (host, port) = addr.split_once(':').context("addr")?;
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!(
                "api:\n  host: {host}\n  port: {port}\n  workers: 2\n  auth:\n    jwt_secret: {SECRET}\n  \
                 rate_limiting:\n    enabled: false\n  cache:\n    enabled: false\n"
            ),
        )?;
        Ok(path)
    };
    let config = write_config("config.yaml", ADDR)?;
    let prepare = |binary: &Path, config: &Path, url: &str| -> Result<()> {
        run_ok(
            Command::new(binary)
                .arg("migrate")
                .arg("--config")
                .arg(config)
                .env("DATABASE_URL", url),
        )?;
        let seeded = Instant::now();
        run_ok(Command::new("psql").args([url, "-v", "ON_ERROR_STOP=1", "-qc", SEED]))?;
        eprintln!(
            "bench api: seeded 10 000 assets and 50 000 dependencies in {:.1} s",
            seeded.elapsed().as_secs_f64()
        );
        Ok(())
    };
    prepare(&api, &config, &url)?;
    let serve = |binary: &Path, config: &Path, url: &str, log: &str| -> Result<Killer> {
        let log = std::fs::File::create(dir.join(log))?;
        Ok(Killer(
            Command::new(binary)
                .arg("serve")
                .arg("--config")
                .arg(config)
                .env("DATABASE_URL", url)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()?,
        ))
    };
    let _server = serve(&api, &config, &url, "api.log")?;
    let mut targets = vec![ADDR];
    let _baseline = match &opts.baseline {
        Some(binary) => {
            targets.push(BASELINE_ADDR);
            let config = write_config("baseline.yaml", BASELINE_ADDR)?;
            let url = database("_baseline")?;
            prepare(binary, &config, &url)?;
            Some(serve(binary, &config, &url, "baseline.log")?)
        }
        None => None,
    };
    let token = run_ok(
        Command::new(&api)
            .args([
                "token",
                "create",
                "--role",
                "viewer",
                "--subject",
                "bench",
                "--config",
            ])
            .arg(&config),
    )?
    .trim()
    .to_owned();
    let started = Instant::now();
    for addr in &targets {
        loop {
            let ok = Command::new("curl")
                .args(["-sf", &format!("http://{addr}/api/v1/admin/health")])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the API on {addr} did not start; see the logs in {}",
                    dir.display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let mut table = String::from(
        "| endpoint | connections | req/s (median run) | p50 ms | p99 ms | goal | met |",
    );
    if opts.baseline.is_some() {
        table.push_str(" baseline req/s | baseline p99 ms | req/s ratio |\n|---|---|---|---|---|---|---|---|---|---|\n");
    } else {
        table.push_str("\n|---|---|---|---|---|---|---|\n");
    }
    for case in cases()
        .into_iter()
        .filter(|c| opts.only.as_deref().is_none_or(|o| c.name.contains(o)))
    {
        let script = dir.join("case.lua");
        std::fs::write(
            &script,
            format!(
                "math.randomseed(42)\nwrk.headers[\"Authorization\"] = \"Bearer {token}\"\n{}",
                case.lua
            ),
        )?;
        // Run by run, each target in turn: drift of the machine hits both alike.
        let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); targets.len()];
        for _ in 0..opts.runs {
            for (addr, out_of) in targets.iter().zip(results.iter_mut()) {
                let connections = case.connections.unwrap_or(opts.connections);
                let out = run_ok(Command::new("wrk").args([
                    "--threads",
                    &connections.min(2).to_string(),
                    "--connections",
                    &connections.to_string(),
                    "--duration",
                    &format!("{}s", opts.duration),
                    "--latency",
                    "--script",
                    &script.to_string_lossy(),
                    &format!("http://{addr}"),
                ]))?;
                if out.contains("Non-2xx") {
                    bail!("{} on {addr}: wrk saw errors:\n{out}", case.name);
                }
                out_of.push(parse_wrk(&out).with_context(|| format!("parsing wrk:\n{out}"))?);
            }
        }
        let mut medians = results.into_iter().map(median);
        let (rps, p50, p99) = medians.next().context("no runs")?;
        let baseline = medians.next();
        let (goal, met) = match case.goal_p99_ms {
            Some(ms) if case.needs_2k => (
                format!("p99 < {ms} ms at >= 2k req/s"),
                if p99 <= ms && rps >= 2000.0 {
                    "yes"
                } else {
                    "no"
                },
            ),
            Some(ms) => (
                format!("p99 < {ms} ms"),
                if p99 <= ms { "yes" } else { "no" },
            ),
            None => ("(none set)".to_owned(), "-"),
        };
        let _ = write!(
            table,
            "| {} | {} | {rps:.0} | {p50:.2} | {p99:.2} | {goal} | {met} |",
            case.name,
            case.connections.unwrap_or(opts.connections)
        );
        if let Some((b_rps, _, b_p99)) = baseline {
            let _ = write!(table, " {b_rps:.0} | {b_p99:.2} | {:.2} |", rps / b_rps);
        }
        table.push('\n');
        eprintln!("bench api: {} done", case.name);
    }
    #[expect(clippy::print_stdout, reason = "the report is the command's output")]
    {
        println!(
            "wrk, 2 threads, {} s x {} runs per endpoint, caches off\n{table}",
            opts.duration, opts.runs
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_output() {
        let out = "  Latency Distribution\n     50%  412.00us\n     75%    1.02ms\n     90%    2.00ms\n     99%    7.31ms\n  40000 requests in 10.00s, 30.00MB read\nRequests/sec:   3999.12\nTransfer/sec:      3.00MB\n";
        let (rps, p50, p99) = parse_wrk(out).unwrap();
        assert!((rps - 3999.12).abs() < 1e-6);
        assert!((p50 - 0.412).abs() < 1e-9);
        assert!((p99 - 7.31).abs() < 1e-9);
        let slow = parse_wrk("Requests/sec: 1\n     99%  1.50s\n     50% 1s\n").unwrap();
        assert!((slow.2 - 1500.0).abs() < 1e-9);
    }
}
