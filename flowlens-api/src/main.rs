//! `flowlens-api serve|migrate|token create`: wiring only; the service is the library.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use flowlens_api::auth::{Role, issue_token_for};
use flowlens_api::config::Config;

#[derive(Parser)]
#[command(
    name = "flowlens-api",
    version,
    about = "The FlowLens REST and WebSocket API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Migrate the database, then serve the API.
    Serve {
        #[arg(long, env = "FLOWLENS_CONFIG")]
        config: Option<PathBuf>,
        /// The database (over `DATABASE_URL` and `database.url`).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Bring the database schema up to date, then exit.
    Migrate {
        #[arg(long, env = "FLOWLENS_CONFIG")]
        config: Option<PathBuf>,
        /// The database (over `DATABASE_URL` and `database.url`).
        #[arg(long)]
        database_url: Option<String>,
    },
    /// Print the effective configuration (file < FLOWLENS_* environment, defaults for
    /// the rest; secrets redacted) on stdout and every problem on stderr; exit 1 when
    /// `serve` would refuse it.
    CheckConfig {
        /// The YAML file (none: defaults and the environment only).
        #[arg(env = "FLOWLENS_CONFIG")]
        file: Option<PathBuf>,
    },
    /// Tokens for callers.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a signed JWT (alone, on stdout).
    Create {
        #[arg(long, env = "FLOWLENS_CONFIG")]
        config: Option<PathBuf>,
        /// viewer, editor or admin.
        #[arg(long)]
        role: Role,
        /// Who the token is for (recorded in audit logs).
        #[arg(long)]
        subject: String,
        /// Hours until it expires (default: `api.auth.token_expiry_hours`).
        #[arg(long)]
        expiry_hours: Option<u64>,
    },
}

fn load(config: Option<&std::path::Path>) -> anyhow::Result<Config> {
    Config::load(config, std::env::vars()).context("loading the configuration")
}

/// Loads the config with `--database-url` over the file and the environment.
fn load_with_database(
    config: Option<&std::path::Path>,
    database_url: Option<String>,
) -> anyhow::Result<Config> {
    let mut config = load(config)?;
    if database_url.is_some() {
        config.database.url = database_url;
    }
    Ok(config)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FLOWLENS_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or journald would get escape sequences.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match cli.command {
        Command::CheckConfig { file } => {
            let config = match Config::load(file.as_deref(), std::env::vars()) {
                Ok(c) => c,
                Err(e) => {
                    #[expect(clippy::print_stderr, reason = "the command's verdict")]
                    {
                        eprintln!("flowlens-api check-config: {e}");
                    }
                    std::process::exit(1);
                }
            };
            let yaml = serde_yaml::to_string(&config.redacted())?;
            #[expect(
                clippy::print_stdout,
                clippy::print_stderr,
                reason = "the command's output"
            )]
            {
                print!("{yaml}");
                if config.database.url.is_none() {
                    eprintln!("note: no database (database.url or DATABASE_URL): serve needs one");
                }
                eprintln!("the configuration is valid");
            }
            Ok(())
        }
        Command::Token {
            command:
                TokenCommand::Create {
                    config,
                    role,
                    subject,
                    expiry_hours,
                },
        } => {
            let config = load(config.as_deref())?;
            anyhow::ensure!(
                config.api.auth.enabled,
                "api.auth.enabled is false: the API does not check tokens"
            );
            let limit = config.api.auth.token_expiry_hours;
            let hours = expiry_hours.unwrap_or(limit);
            anyhow::ensure!(
                (1..=limit).contains(&hours),
                "--expiry-hours must be between 1 and api.auth.token_expiry_hours ({limit}): \
                 the API refuses longer tokens"
            );
            let token = issue_token_for(
                &config.api.auth,
                &subject,
                role,
                SystemTime::now(),
                Duration::from_secs(hours.saturating_mul(3600)),
            )?;
            #[expect(clippy::print_stdout, reason = "the token is the command's output")]
            {
                println!("{token}");
            }
            Ok(())
        }
        Command::Migrate {
            config,
            database_url,
        } => {
            let config = load_with_database(config.as_deref(), database_url)?;
            runtime(1)?.block_on(async {
                let pool = connect(&config).await?;
                flowlens_api::migrate(&pool)
                    .await
                    .context("migrating the schema")?;
                tracing::info!("schema up to date");
                Ok(())
            })
        }
        Command::Serve {
            config,
            database_url,
        } => {
            let config = load_with_database(config.as_deref(), database_url)?;
            runtime(config.api.workers)?.block_on(serve(config))
        }
    }
}

fn runtime(workers: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        b.worker_threads(workers);
    }
    Ok(b.enable_all().build()?)
}

async fn connect(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    let url = config.database_url()?;
    flowlens_api::connect(url, config.database.max_connections)
        .await
        .context("connecting to PostgreSQL")
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Migrations run without the requests' statement timeout.
    {
        let pool = connect(&config).await?;
        flowlens_api::migrate(&pool)
            .await
            .context("migrating the schema")?;
        pool.close().await;
    }
    let pool = flowlens_api::connect_with_timeout(
        config.database_url()?,
        config.database.max_connections,
        Duration::from_secs(config.api.limits.statement_timeout_seconds),
    )
    .await
    .context("connecting to PostgreSQL")?;
    let addr = SocketAddr::new(
        config.api.host.parse().context("api.host")?,
        config.api.port,
    );
    if !config.api.auth.enabled {
        tracing::warn!("api.auth.enabled is false: every caller is an anonymous admin");
    }
    let api_config = config.api.clone();
    let state = flowlens_api::state::AppState::new(config, pool)?;
    // The change feed (WebSocket pushes, cache and snapshot invalidation).
    state.start_background();
    let app = flowlens_api::app(state);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    tracing::info!(%addr, "serving the FlowLens API");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing a SIGTERM handler")?;
    flowlens_api::server::serve(listener, app, &api_config, async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutting down");
    })
    .await;
    Ok(())
}
