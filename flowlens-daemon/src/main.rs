//! flowlens-daemon binary: parses the command line and runs the chosen command.

use std::io::{BufWriter, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use clap::Parser;
use flowlens_daemon::cli::{Cli, Command};
use flowlens_daemon::config::Config;
use flowlens_daemon::decode::DecoderConfig;
use flowlens_daemon::decode_command;
use flowlens_daemon::pipeline::{self, RunOptions};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode {
            format,
            state,
            explain,
            files,
        } => {
            let stdout = std::io::stdout();
            let mut out = BufWriter::with_capacity(1 << 16, stdout.lock());
            let mut err = std::io::stderr();
            let result = decode_command::run(
                &files,
                format,
                state.as_deref(),
                DecoderConfig::default(),
                explain,
                &mut out,
                &mut err,
            );
            let _ = out.flush();
            match result {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    let _ = writeln!(err, "flowlens-daemon decode: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::EmbeddedPostgres {
            dir,
            database,
            stop,
            durable,
        } => one_line(
            "embedded-postgres",
            embedded_postgres(&dir, &database, stop, durable),
        ),
        Command::CheckConfig { file } => check_config(file.as_deref()),
        Command::Generate {
            proto: _,
            target,
            source,
            rate,
            rounds,
            clients,
        } => one_line(
            "generate",
            flowlens_daemon::generate::generate(target, source, rounds, rate, clients)
                .map_err(anyhow::Error::from)
                .map(|r| serde_json::to_string(&r).unwrap_or_default()),
        ),
        Command::Blast {
            proto,
            target,
            trafgen_frames: Some(frames),
            trafgen_config: Some(path),
            dst_mac: Some(mac),
            source: Some(source),
            ..
        } => one_line(
            "blast",
            write_trafgen(proto, target, frames, &path, &mac, source),
        ),
        Command::Blast {
            proto,
            target,
            count,
            rate,
            ..
        } => one_line(
            "blast",
            flowlens_daemon::blast::blast(proto, target, count, rate)
                .map_err(anyhow::Error::from)
                .map(|r| serde_json::to_string(&r).unwrap_or_default()),
        ),
        Command::Run {
            config,
            ifaces,
            no_xdp,
            output,
            role,
            log_level,
        } => {
            init_logging(&log_level);
            match run(config.as_deref(), ifaces, no_xdp, output, role) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("flowlens-daemon run: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only on a terminal: a log file or journald would get escape sequences.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

fn run(
    config: Option<&std::path::Path>,
    ifaces: Vec<String>,
    no_xdp: bool,
    output: pipeline::Output,
    role: pipeline::Role,
) -> anyhow::Result<()> {
    let mut config = Config::load(config, std::env::vars()).context("loading configuration")?;
    config.xdp.interfaces.extend(ifaces);
    let shutdown = Arc::new(AtomicBool::new(false));
    let summary = pipeline::run(
        &RunOptions {
            config,
            no_xdp,
            output,
            role,
        },
        &shutdown,
    )
    .context("running the collector")?;
    tracing::info!(
        datagrams = summary.decoder.packets,
        flows = summary.flows_processed,
        malformed = summary.decoder.malformed_packets,
        "stopped"
    );
    Ok(())
}

/// `blast --trafgen-frames`: writes the configuration, returns a one-line JSON summary.
fn write_trafgen(
    proto: flowlens_daemon::blast::BlastProtocol,
    target: std::net::SocketAddr,
    frames: usize,
    path: &std::path::Path,
    mac: &str,
    source: std::net::SocketAddrV4,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let std::net::SocketAddr::V4(target) = target else {
        anyhow::bail!("trafgen frames are IPv4 only");
    };
    let octets: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC address {mac}"))?;
    let dst_mac: [u8; 6] = octets
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC address {mac}"))?;
    let config = flowlens_daemon::blast::trafgen_config(proto, dst_mac, source, target, frames);
    std::fs::write(path, &config.text).with_context(|| format!("writing {}", path.display()))?;
    Ok(format!(
        "{{\"frames\":{},\"templates_per_cycle\":{},\"flows_per_datagram\":{}}}",
        config.frames, config.templates_per_cycle, config.flows_per_datagram
    ))
}

/// `embedded-postgres`: ensures the cluster and the database; returns the URL.
fn embedded_postgres(
    dir: &std::path::Path,
    database: &str,
    stop: bool,
    durable: bool,
) -> anyhow::Result<String> {
    use anyhow::Context as _;
    use flowlens_daemon::store::cluster::{Cluster, Durability};
    let durability = if durable {
        Durability::Durable
    } else {
        Durability::Fast
    };
    let cluster =
        Cluster::ensure_with(dir, durability).context("starting the private PostgreSQL cluster")?;
    if stop {
        cluster.stop()?;
        return Ok(String::new());
    }
    anyhow::ensure!(
        database
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_'),
        "database name {database:?}: letters, digits and _ only"
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let admin = flowlens_daemon::store::connect(&cluster.url("postgres"), 1).await?;
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
                .bind(database)
                .fetch_one(&admin)
                .await?;
        if !exists {
            sqlx::query(&format!("CREATE DATABASE {database}"))
                .execute(&admin)
                .await?;
        }
        anyhow::Ok(())
    })?;
    Ok(cluster.url(database))
}

/// The tool subcommands' convention: one line on stdout on success, the error on
/// stderr and a failing exit code otherwise.
fn one_line(command: &str, result: anyhow::Result<String>) -> ExitCode {
    match result {
        Ok(line) => {
            let mut out = std::io::stdout();
            let _ = writeln!(out, "{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("flowlens-daemon {command}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `check-config`: the effective configuration, redacted, and what is wrong with it.
fn check_config(file: Option<&std::path::Path>) -> ExitCode {
    let mut err = std::io::stderr();
    let config = match Config::load(file, std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "flowlens-daemon check-config: {e}");
            return ExitCode::FAILURE;
        }
    };
    let notes = config.notes(std::env::var("STATE_DIRECTORY").ok().as_deref());
    match serde_yaml::to_string(&config.redacted()) {
        Ok(yaml) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(yaml.as_bytes());
        }
        Err(e) => {
            let _ = writeln!(err, "flowlens-daemon check-config: {e}");
            return ExitCode::FAILURE;
        }
    }
    for n in &notes {
        let _ = writeln!(err, "note: {n}");
    }
    let _ = writeln!(err, "the configuration is valid");
    ExitCode::SUCCESS
}
