//! `flowlens`: the FlowLens API from a shell. Log in once, then list, search and show
//! assets and dependencies, export the topology, run the analyses, handle alerts and
//! follow the change feed. Tables by default, `--json` for scripts; exit codes in
//! docs/cli.md (0 ok, 1 other, 2 usage, 3 login, 4 role, 5 not found, 6 invalid
//! request, 7 unavailable: retry later).

#![allow(
    clippy::doc_markdown,
    rustdoc::bare_urls,
    reason = "the doc comments are --help text, read in a terminal, not rendered by rustdoc"
)]

use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use flowlens_api::client::table::{self, Table, bytes, text, time};
use flowlens_api::client::{self as api, Client, ClientError, Credentials, credentials};
use futures_util::StreamExt as _;
use reqwest::Method;
use serde_json::{Value, json};

#[derive(Parser)]
#[command(
    name = "flowlens",
    version,
    about = "The FlowLens API from a shell",
    after_help = "Exit codes: 0 ok, 1 other error, 2 usage, 3 not logged in or credentials \
                  refused, 4 role does not allow it, 5 not found, 6 invalid request, \
                  7 unavailable (retry later)."
)]
struct Cli {
    /// The API's URL (over the saved login's and FLOWLENS_URL).
    #[arg(long, global = true, env = "FLOWLENS_URL")]
    url: Option<String>,
    /// JSON on stdout instead of tables: the API's answers as they are.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a token or API key against the API and save it (0600) for later commands.
    Login {
        /// The API's URL, e.g. http://127.0.0.1:8000.
        #[arg(long)]
        url: Option<String>,
        /// Read an API key instead of a token. Either is read from stdin (a line),
        /// never from the command line: arguments show in `ps` and in shell history.
        #[arg(long)]
        api_key: bool,
    },
    /// Forget the saved login.
    Logout,
    /// Where and as whom the commands run.
    Status,
    /// Assets: list, search, show.
    #[command(subcommand)]
    Assets(AssetsCommand),
    /// Dependencies: list, show.
    #[command(subcommand, alias = "deps")]
    Dependencies(DependenciesCommand),
    /// The topology as JSON, Graphviz DOT, Mermaid or GraphML.
    Export {
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
        /// Write to this file instead of stdout.
        #[arg(long, short)]
        output: Option<PathBuf>,
        #[command(flatten)]
        filter: TopologyFilter,
    },
    /// Everything that depends, transitively, on an asset.
    Impact {
        /// Id, name, FQDN or address.
        asset: String,
        #[arg(long)]
        max_depth: Option<u32>,
    },
    /// How one asset comes to depend on another.
    Path {
        from: String,
        to: String,
        /// Ignore direction: how they are connected at all.
        #[arg(long)]
        undirected: bool,
        #[arg(long)]
        max_depth: Option<u32>,
    },
    /// What an asset takes down with it, and a 0-100 score.
    BlastRadius {
        asset: String,
        #[arg(long)]
        max_depth: Option<u32>,
    },
    /// Single points of failure: articulation points, bridges, single-provider services.
    Spof,
    /// Alerts: list, acknowledge, resolve.
    #[command(subcommand)]
    Alerts(AlertsCommand),
    /// The change feed: list past changes, or follow new ones.
    #[command(subcommand)]
    Changes(ChangesCommand),
    /// Shell completions on stdout (e.g. `flowlens completions bash >
    /// /etc/bash_completion.d/flowlens`).
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum AssetsCommand {
    /// List assets (newest first), filtered.
    List {
        #[command(flatten)]
        filter: AssetFilter,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Search by name, FQDN or address prefix (best matches first).
    Search {
        query: String,
        #[command(flatten)]
        filter: AssetFilter,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One asset and its dependencies.
    Show {
        /// Id, name, FQDN or address.
        asset: String,
    },
}

#[derive(clap::Args)]
struct AssetFilter {
    /// server, vm, container, network_device or unknown.
    #[arg(long = "type")]
    asset_type: Option<String>,
    #[arg(long)]
    environment: Option<String>,
    /// key or key:value.
    #[arg(long)]
    tag: Option<String>,
    /// An address or a CIDR.
    #[arg(long)]
    ip: Option<String>,
    /// Seen at or after (RFC 3339).
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    stale: Option<bool>,
    #[arg(long)]
    internal: Option<bool>,
}

#[derive(clap::Args)]
struct PageArgs {
    #[arg(long, default_value_t = 1)]
    page: u32,
    #[arg(long, default_value_t = 50)]
    page_size: u32,
}

#[derive(Subcommand)]
enum DependenciesCommand {
    /// List dependencies, filtered.
    List {
        /// Either end (id, name, FQDN or address).
        #[arg(long)]
        asset: Option<String>,
        /// The client end.
        #[arg(long)]
        source: Option<String>,
        /// The server end.
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        stale: Option<bool>,
        #[arg(long)]
        internal: Option<bool>,
        #[arg(long)]
        min_bytes: Option<i64>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// One dependency.
    Show { id: String },
}

#[derive(clap::Args)]
struct TopologyFilter {
    /// Only the neighbourhood of this asset.
    #[arg(long)]
    asset: Option<String>,
    #[arg(long)]
    depth: Option<u32>,
    #[arg(long)]
    environment: Option<String>,
    #[arg(long)]
    service: Option<String>,
    #[arg(long)]
    since: Option<String>,
    #[arg(long)]
    min_bytes: Option<i64>,
    #[arg(long)]
    include_external: Option<bool>,
    #[arg(long)]
    include_stale: Option<bool>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Dot,
    Mermaid,
    Graphml,
}

#[derive(Subcommand)]
enum AlertsCommand {
    /// List alerts, newest first.
    List {
        /// open, acknowledged or resolved.
        #[arg(long)]
        status: Option<String>,
        /// info, warning or critical.
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Acknowledge an alert (editor).
    #[command(alias = "ack")]
    Acknowledge { id: String },
    /// Resolve an alert (editor).
    Resolve { id: String },
}

#[derive(Subcommand)]
enum ChangesCommand {
    /// Past changes, newest first.
    List {
        /// new_dependency, removed_dependency, new_asset, ...
        #[arg(long)]
        change_type: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
    /// Follow changes as they happen (WebSocket) until interrupted.
    Tail {
        /// Stop after this many changes.
        #[arg(long)]
        count: Option<u64>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&ClientError::Other(e.to_string())),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(e: &ClientError) -> ExitCode {
    note(&e.to_string());
    ExitCode::from(e.exit_code())
}

/// Writes to stdout; a closed pipe (`flowlens ... | head`) ends the process quietly.
/// Text for people: names and titles come from the network and from the API, so
/// every character a terminal would act on is replaced, whatever the command.
fn out(s: &str) -> Result<(), ClientError> {
    out_bytes(table::printable(s).as_bytes())
}

fn out_bytes(bytes: &[u8]) -> Result<(), ClientError> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(ClientError::Other(format!("stdout: {e}"))),
    }
}

/// JSON for scripts: the same JSON, with the characters serde leaves raw escaped.
fn out_json(v: &Value) -> Result<(), ClientError> {
    let mut s = serde_json::to_string_pretty(v).map_err(|e| ClientError::Other(e.to_string()))?;
    s.push('\n');
    out_bytes(table::json_escaped(&s).as_bytes())
}

/// A note on stderr, cleaned like stdout.
fn note(s: &str) {
    let _ = writeln!(std::io::stderr(), "flowlens: {}", table::printable(s));
}

/// The saved login with `--url`/`FLOWLENS_URL` over its URL and `FLOWLENS_TOKEN` or
/// `FLOWLENS_API_KEY` over its credential (for scripts and CI without a login).
fn session(url: Option<String>) -> Result<Client, ClientError> {
    let path = credentials::path_in(&credentials::config_home()?);
    let saved = credentials::load(&path)?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let (token, api_key) = match (env("FLOWLENS_TOKEN"), env("FLOWLENS_API_KEY")) {
        (None, None) => match &saved {
            Some(c) => (c.token.clone(), c.api_key.clone()),
            None => {
                return Err(ClientError::Unauthorized(
                    "not logged in: run `flowlens login --url URL`, or set FLOWLENS_TOKEN"
                        .to_owned(),
                ));
            }
        },
        (token, key) => (token, key),
    };
    let from_env = env("FLOWLENS_TOKEN").is_some() || env("FLOWLENS_API_KEY").is_some();
    let url = match (url, &saved) {
        (Some(u), Some(c)) if !from_env && u.trim_end_matches('/') != c.url => {
            // The saved credential goes only where it was checked: a stray
            // FLOWLENS_URL must not send it to another server.
            return Err(ClientError::Unauthorized(format!(
                "the saved login is for {}, not {}: log in there, or set FLOWLENS_TOKEN",
                c.url,
                table::cell(&u)
            )));
        }
        (Some(u), _) => u,
        (None, Some(c)) => c.url.clone(),
        (None, None) => return Err(ClientError::Invalid("no API URL: give --url".to_owned())),
    };
    Client::new(Credentials {
        url,
        token,
        api_key,
    })
}

fn push_opt<T: ToString>(q: &mut Vec<(&'static str, String)>, key: &'static str, v: Option<T>) {
    if let Some(v) = v {
        q.push((key, v.to_string()));
    }
}

fn page_query(q: &mut Vec<(&'static str, String)>, p: &PageArgs) {
    q.push(("page", p.page.to_string()));
    q.push(("page_size", p.page_size.to_string()));
}

/// A page of `path`: the API's JSON with `--json`, else a table of `header` with a
/// row of `row` per item and the page's footer.
async fn list_page(
    client: &Client,
    path: &str,
    q: &[(&str, String)],
    json: bool,
    header: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> Result<(), ClientError> {
    let answer = client.get(path, q).await?;
    if json {
        return out_json(&answer);
    }
    let mut t = Table::new(header);
    for x in answer["items"].as_array().into_iter().flatten() {
        t.row(&row(x));
    }
    out(&format!("{}{}", t.render(), footer(&answer)))
}

/// "12 of 40 (page 1)" under a list.
fn footer(page: &Value) -> String {
    let shown = page["items"].as_array().map_or(0, Vec::len);
    let capped = if page["total_capped"] == true {
        " or more"
    } else {
        ""
    };
    format!(
        "{shown} of {}{capped} (page {})\n",
        text(&page["total"]),
        text(&page["page"])
    )
}

async fn run(cli: Cli) -> Result<(), ClientError> {
    let json = cli.json;
    match cli.command {
        Command::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "flowlens", &mut buf);
            out(&String::from_utf8_lossy(&buf))
        }
        Command::Login { url, api_key } => login(url.or(cli.url), api_key, json).await,
        Command::Logout => {
            let path = credentials::path_in(&credentials::config_home()?);
            let had = credentials::remove(&path)?;
            if json {
                out_json(&json!({"logged_out": had}))
            } else {
                out(if had {
                    "logged out\n"
                } else {
                    "not logged in\n"
                })
            }
        }
        Command::Status => {
            let client = session(cli.url)?;
            // An authenticated read: the credential is checked now, not at the next command.
            client
                .get("/api/v1/assets", &[("page_size", "1".to_owned())])
                .await?;
            let who = whoami(client.credentials());
            if json {
                out_json(&who)
            } else {
                out(&format!(
                    "{} as {} ({})\n",
                    client.credentials().url,
                    text(&who["subject"]),
                    text(&who["role"])
                ))
            }
        }
        command => {
            let client = session(cli.url)?;
            data(&client, command, json).await
        }
    }
}

/// Who a credential is, as far as the client can tell.
fn whoami(c: &Credentials) -> Value {
    match (&c.token, &c.api_key) {
        (Some(t), _) => {
            let claims = api::token_claims(t).unwrap_or(Value::Null);
            let expires = claims["exp"]
                .as_i64()
                .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
                .map(|t| t.to_rfc3339());
            json!({"url": c.url, "credential": "token", "subject": claims["sub"],
                   "role": claims["role"], "expires_at": expires})
        }
        _ => json!({"url": c.url, "credential": "api_key", "subject": null, "role": null}),
    }
}

async fn login(url: Option<String>, api_key: bool, json: bool) -> Result<(), ClientError> {
    let url = url.ok_or_else(|| {
        ClientError::Invalid("give the API's URL: flowlens login --url http://HOST:8000".to_owned())
    })?;
    let what = if api_key { "API key" } else { "token" };
    let line = if std::io::stdin().is_terminal() {
        // Typed: not echoed, so it stays off the screen and out of scrollback.
        rpassword::prompt_password(format!("{what}: "))
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    }
    .map_err(|e| ClientError::Other(format!("reading the {what}: {e}")))?;
    let secret = line.trim().to_owned();
    if secret.is_empty() {
        return Err(ClientError::Invalid(format!("no {what} on stdin")));
    }
    let credentials = Credentials {
        url,
        token: (!api_key).then(|| secret.clone()),
        api_key: api_key.then_some(secret),
    };
    let client = Client::new(credentials)?;
    if plain_http_elsewhere(&client.credentials().url) {
        note("the credential travels unencrypted over http:// to another host; use https");
    }
    client
        .get("/api/v1/assets", &[("page_size", "1".to_owned())])
        .await?;
    let path = credentials::path_in(&credentials::config_home()?);
    credentials::save(&path, client.credentials())?;
    let who = whoami(client.credentials());
    if json {
        out_json(&json!({"logged_in": who, "saved_to": path}))
    } else {
        let as_whom = match (&who["subject"], &who["role"]) {
            (Value::String(s), Value::String(r)) => format!(" as {s} ({r})"),
            _ => " with an API key".to_owned(),
        };
        out(&format!(
            "logged in to {}{as_whom}; saved to {}\n",
            client.credentials().url,
            path.display()
        ))
    }
}

/// `http://` to anything but this host.
fn plain_http_elsewhere(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| {
        u.scheme() == "http"
            && !matches!(u.host(), Some(url::Host::Domain("localhost")))
            && !match u.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                _ => false,
            }
    })
}

/// The commands that read or change the graph.
async fn data(client: &Client, command: Command, json: bool) -> Result<(), ClientError> {
    match command {
        Command::Assets(AssetsCommand::List { filter, page }) => {
            assets(client, None, &filter, &page, json).await
        }
        Command::Assets(AssetsCommand::Search {
            query,
            filter,
            page,
        }) => assets(client, Some(query), &filter, &page, json).await,
        Command::Assets(AssetsCommand::Show { asset }) => show_asset(client, &asset, json).await,
        Command::Dependencies(DependenciesCommand::List {
            asset,
            source,
            target,
            port,
            service,
            since,
            stale,
            internal,
            min_bytes,
            page,
        }) => {
            let mut q = Vec::new();
            for (key, who) in [
                ("asset_id", asset),
                ("source_asset_id", source),
                ("target_asset_id", target),
            ] {
                if let Some(who) = who {
                    q.push((key, client.resolve_asset(&who).await?));
                }
            }
            push_opt(&mut q, "port", port);
            push_opt(&mut q, "service", service);
            push_opt(&mut q, "since", since);
            push_opt(&mut q, "stale", stale);
            push_opt(&mut q, "internal", internal);
            push_opt(&mut q, "min_bytes", min_bytes);
            page_query(&mut q, &page);
            let answer = client.get("/api/v1/dependencies", &q).await?;
            if json {
                return out_json(&answer);
            }
            let rows = answer["items"].as_array().cloned().unwrap_or_default();
            out(&format!(
                "{}{}",
                dependency_table(&rows).render(),
                footer(&answer)
            ))
        }
        Command::Dependencies(DependenciesCommand::Show { id }) => {
            let d = client
                .get(&format!("/api/v1/dependencies/{}", id_arg(&id)?), &[])
                .await?;
            if json {
                return out_json(&d);
            }
            out(&fields(
                &d,
                &[
                    "id",
                    "source_name",
                    "source_asset_id",
                    "target_name",
                    "target_asset_id",
                    "protocol",
                    "port",
                    "inferred_service",
                    "confidence",
                    "total_bytes",
                    "total_flows",
                    "first_seen",
                    "last_seen",
                    "direction",
                    "stale",
                    "discovery_source",
                    "tags",
                    "notes",
                ],
            ))
        }
        Command::Export {
            format,
            output,
            filter,
        } => export(client, format, output, filter).await,
        Command::Impact { asset, max_depth } => {
            let id = client.resolve_asset(&asset).await?;
            let mut body = json!({"asset_id": id});
            if let Some(d) = max_depth {
                body["max_depth"] = d.into();
            }
            let a = client
                .json(Method::POST, "/api/v1/analysis/impact", &[], Some(&body))
                .await?;
            if json {
                return out_json(&a);
            }
            let t = affected(&a, &a["impact"]);
            out(&format!(
                "{} assets depend on {asset}{}\n{}",
                text(&a["impact"]["total_affected"]),
                if a["impact"]["truncated"] == true {
                    " (truncated)"
                } else {
                    ""
                },
                t.render()
            ))
        }
        Command::Path {
            from,
            to,
            undirected,
            max_depth,
        } => {
            let (f, t) = (
                client.resolve_asset(&from).await?,
                client.resolve_asset(&to).await?,
            );
            let mut body = json!({"from": f, "to": t, "directed": !undirected});
            if let Some(d) = max_depth {
                body["max_depth"] = d.into();
            }
            let a = client
                .json(Method::POST, "/api/v1/analysis/path", &[], Some(&body))
                .await?;
            if json {
                return out_json(&a);
            }
            let Some(steps) = a["shortest"].as_array() else {
                return Err(ClientError::NotFound(format!(
                    "no path from {from} to {to}{}",
                    if undirected {
                        ""
                    } else {
                        " (try --undirected)"
                    }
                )));
            };
            let shortest: Vec<String> = steps.iter().map(|s| name(&a, &s["asset"])).collect();
            let all = a["all"]["paths"].as_array().map_or(0, Vec::len);
            out(&format!(
                "{}\n{} hops; {all} path(s) within the bounds{}\n",
                shortest.join(" -> "),
                shortest.len().saturating_sub(1),
                if a["all"]["truncated"] == true {
                    ", more exist"
                } else {
                    ""
                }
            ))
        }
        Command::BlastRadius { asset, max_depth } => {
            let id = client.resolve_asset(&asset).await?;
            let mut body = json!({"asset_id": id});
            if let Some(d) = max_depth {
                body["max_depth"] = d.into();
            }
            let a = client
                .json(
                    Method::POST,
                    "/api/v1/analysis/blast-radius",
                    &[],
                    Some(&body),
                )
                .await?;
            if json {
                return out_json(&a);
            }
            let b = &a["blast_radius"];
            let assets = affected(&a, &b["impact"]);
            let mut services = Table::new(&["SERVICE", "PORT", "PROVIDERS", "CONSUMERS"]);
            for s in b["affected_services"].as_array().into_iter().flatten() {
                services.row(&[
                    text(&s["service"]["service"]),
                    format!(
                        "{}/{}",
                        text(&s["service"]["port"]),
                        proto(&s["service"]["protocol"])
                    ),
                    s["providers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|p| name(&a, p))
                        .collect::<Vec<_>>()
                        .join(","),
                    text(&s["consumers"]),
                ]);
            }
            out(&format!(
                "blast radius of {asset}: score {}, {} assets, {} services\n\n{}\n{}",
                text(&b["score"]),
                text(&b["impact"]["total_affected"]),
                b["affected_services"].as_array().map_or(0, Vec::len),
                assets.render(),
                services.render()
            ))
        }
        Command::Spof => {
            let a = client.get("/api/v1/analysis/spof", &[]).await?;
            if json {
                return out_json(&a);
            }
            let s = &a["spof"];
            let mut points = Table::new(&["ASSET", "NAME", "CUT OFF"]);
            for p in s["articulation_points"].as_array().into_iter().flatten() {
                points.row(&[
                    text(&p["asset"]),
                    name(&a, &p["asset"]),
                    text(&p["cut_off"]),
                ]);
            }
            let mut bridges = Table::new(&["BETWEEN", "AND", "CUT OFF"]);
            for b in s["bridges"].as_array().into_iter().flatten() {
                bridges.row(&[
                    name(&a, &b["assets"][0]),
                    name(&a, &b["assets"][1]),
                    text(&b["cut_off"]),
                ]);
            }
            let mut single = Table::new(&["SERVICE", "PORT", "ONLY PROVIDER"]);
            for x in s["single_provider_services"]
                .as_array()
                .into_iter()
                .flatten()
            {
                single.row(&[
                    text(&x["service"]["service"]),
                    format!(
                        "{}/{}",
                        text(&x["service"]["port"]),
                        proto(&x["service"]["protocol"])
                    ),
                    name(&a, &x["provider"]),
                ]);
            }
            out(&format!(
                "articulation points\n{}\nbridges\n{}\nservices with one provider\n{}",
                points.render(),
                bridges.render(),
                single.render()
            ))
        }
        Command::Alerts(AlertsCommand::List {
            status,
            severity,
            since,
            page,
        }) => {
            let mut q = Vec::new();
            push_opt(&mut q, "status", status);
            push_opt(&mut q, "severity", severity);
            push_opt(&mut q, "since", since);
            page_query(&mut q, &page);
            let header = ["ID", "SEVERITY", "STATUS", "CREATED", "TITLE"];
            list_page(client, "/api/v1/alerts", &q, json, &header, |x| {
                vec![
                    text(&x["id"]),
                    text(&x["severity"]),
                    text(&x["status"]),
                    time(&x["created_at"]),
                    text(&x["title"]),
                ]
            })
            .await
        }
        Command::Alerts(AlertsCommand::Acknowledge { id }) => {
            alert_status(client, &id, "acknowledged", json).await
        }
        Command::Alerts(AlertsCommand::Resolve { id }) => {
            alert_status(client, &id, "resolved", json).await
        }
        Command::Changes(ChangesCommand::List {
            change_type,
            since,
            until,
            page,
        }) => {
            let mut q = Vec::new();
            push_opt(&mut q, "type", change_type);
            push_opt(&mut q, "since", since);
            push_opt(&mut q, "until", until);
            page_query(&mut q, &page);
            let header = ["DETECTED", "CHANGE", "ENTITY", "ENTITY ID"];
            list_page(client, "/api/v1/changes", &q, json, &header, |x| {
                vec![
                    time(&x["detected_at"]),
                    text(&x["change_type"]),
                    text(&x["entity_type"]),
                    text(&x["entity_id"]),
                ]
            })
            .await
        }
        Command::Changes(ChangesCommand::Tail { count }) => tail(client, count, json).await,
        Command::Login { .. } | Command::Logout | Command::Status | Command::Completions { .. } => {
            Ok(())
        }
    }
}

/// A UUID argument, refused here with exit 6 rather than sent (the API would say 400).
fn id_arg(id: &str) -> Result<String, ClientError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ClientError::Invalid(format!("{id:?} is not an id (a UUID)")))
}

/// The assets an impact lists, by depth, named from the answer's `names`.
fn affected(answer: &Value, impact: &Value) -> Table {
    let mut t = Table::new(&["DEPTH", "ASSET", "NAME"]);
    for x in impact["affected"].as_array().into_iter().flatten() {
        t.row(&[
            text(&x["depth"]),
            text(&x["asset"]),
            name(answer, &x["asset"]),
        ]);
    }
    t
}

/// An asset's name from an analysis answer's `names`, else its id.
fn name(answer: &Value, id: &Value) -> String {
    let id = id.as_str().unwrap_or("");
    match answer["names"].get(id) {
        Some(Value::String(n)) => n.clone(),
        _ => id.to_owned(),
    }
}

fn proto(p: &Value) -> String {
    match p.as_i64() {
        Some(6) => "tcp".to_owned(),
        Some(17) => "udp".to_owned(),
        Some(132) => "sctp".to_owned(),
        _ => text(p),
    }
}

/// `key: value` lines of `v`'s `keys`.
fn fields(v: &Value, keys: &[&str]) -> String {
    let width = keys.iter().map(|k| k.len()).max().unwrap_or(0);
    let mut s = String::new();
    for k in keys {
        let value = if k.ends_with("_seen") || k.ends_with("_at") {
            time(&v[*k])
        } else if k.ends_with("_bytes") {
            bytes(&v[*k])
        } else {
            text(&v[*k])
        };
        let _ = writeln!(s, "{k:<width$}  {}", table::cell(&value));
    }
    s
}

async fn assets(
    client: &Client,
    query: Option<String>,
    f: &AssetFilter,
    page: &PageArgs,
    json: bool,
) -> Result<(), ClientError> {
    let mut q = Vec::new();
    push_opt(&mut q, "q", query);
    push_opt(&mut q, "type", f.asset_type.clone());
    push_opt(&mut q, "environment", f.environment.clone());
    push_opt(&mut q, "tag", f.tag.clone());
    push_opt(&mut q, "ip", f.ip.clone());
    push_opt(&mut q, "since", f.since.clone());
    push_opt(&mut q, "stale", f.stale);
    push_opt(&mut q, "internal", f.internal);
    page_query(&mut q, page);
    let header = ["ID", "NAME", "TYPE", "ADDRESSES", "ENV", "LAST SEEN"];
    list_page(client, "/api/v1/assets", &q, json, &header, |a| {
        vec![
            text(&a["id"]),
            text(&a["name"]),
            text(&a["asset_type"]),
            text(&a["ip_addresses"]),
            text(&a["environment"]),
            time(&a["last_seen"]),
        ]
    })
    .await
}

fn dependency_table(rows: &[Value]) -> Table {
    let mut t = Table::new(&[
        "ID",
        "SOURCE",
        "TARGET",
        "PORT",
        "SERVICE",
        "BYTES",
        "LAST SEEN",
    ]);
    for d in rows {
        t.row(&[
            text(&d["id"]),
            text(&d["source_name"]),
            text(&d["target_name"]),
            format!("{}/{}", text(&d["port"]), proto(&d["protocol"])),
            text(&d["inferred_service"]),
            bytes(&d["total_bytes"]),
            time(&d["last_seen"]),
        ]);
    }
    t
}

async fn show_asset(client: &Client, asset: &str, json: bool) -> Result<(), ClientError> {
    let id = client.resolve_asset(asset).await?;
    let a = client.get(&format!("/api/v1/assets/{id}"), &[]).await?;
    let deps = client
        .get(&format!("/api/v1/assets/{id}/dependencies"), &[])
        .await?;
    if json {
        return out_json(&json!({"asset": a, "dependencies": deps}));
    }
    let mut s = fields(
        &a,
        &[
            "id",
            "name",
            "fqdn",
            "asset_type",
            "ip_addresses",
            "mac_addresses",
            "os_family",
            "environment",
            "country_code",
            "asn",
            "as_org",
            "is_internal",
            "cloud_provider",
            "cloud_region",
            "cloud_instance_id",
            "tags",
            "discovery_source",
            "first_seen",
            "last_seen",
            "stale",
        ],
    );
    for (title, key) in [
        ("uses (outbound)", "outbound"),
        ("used by (inbound)", "inbound"),
    ] {
        let rows = deps[key].as_array().cloned().unwrap_or_default();
        let _ = write!(
            s,
            "\n{title}: {}\n",
            text(&deps[format!("{key}_total").as_str()])
        );
        if !rows.is_empty() {
            s.push_str(&dependency_table(&rows).render());
        }
    }
    out(&s)
}

async fn export(
    client: &Client,
    format: Format,
    output: Option<PathBuf>,
    f: TopologyFilter,
) -> Result<(), ClientError> {
    let format = match format {
        Format::Json => "json",
        Format::Dot => "dot",
        Format::Mermaid => "mermaid",
        Format::Graphml => "graphml",
    };
    let mut q = vec![("format", format.to_owned())];
    if let Some(a) = f.asset {
        q.push(("asset_id", client.resolve_asset(&a).await?));
    }
    push_opt(&mut q, "depth", f.depth);
    push_opt(&mut q, "environment", f.environment);
    push_opt(&mut q, "service", f.service);
    push_opt(&mut q, "since", f.since);
    push_opt(&mut q, "min_bytes", f.min_bytes);
    push_opt(&mut q, "include_external", f.include_external);
    push_opt(&mut q, "include_stale", f.include_stale);
    let body = client
        .send(Method::GET, "/api/v1/topology/export", &q, None)
        .await?;
    if let Some(path) = output {
        write_atomically(&path, &body.bytes)
            .map_err(|e| ClientError::Other(format!("{}: {e}", path.display())))?;
        note(&format!(
            "wrote {} bytes of {} to {}",
            body.bytes.len(),
            body.content_type,
            path.display()
        ));
        Ok(())
    } else if std::io::stdout().is_terminal() {
        // On a screen: cleaned like every other output. Piped: the bytes as they are.
        out(&String::from_utf8_lossy(&body.bytes))
    } else {
        out_bytes(&body.bytes)
    }
}

/// Writes `path` by a new file beside it (created exclusively: nothing planted under
/// its name is followed), renamed over it; a failure leaves the old file and no debris.
fn write_atomically(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    let name = path
        .file_name()
        .map_or_else(|| "export".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

async fn alert_status(
    client: &Client,
    id: &str,
    status: &str,
    json: bool,
) -> Result<(), ClientError> {
    let alert = client
        .json(
            Method::PATCH,
            &format!("/api/v1/alerts/{}", id_arg(id)?),
            &[],
            Some(&json!({"status": status})),
        )
        .await?;
    if json {
        return out_json(&alert);
    }
    out(&format!(
        "{} {}: {}\n",
        text(&alert["id"]),
        text(&alert["status"]),
        text(&alert["title"])
    ))
}

/// Follows the change feed: a line per change (a JSON line with `--json`), a note on
/// stderr when the server says events may have been missed.
async fn tail(client: &Client, count: Option<u64>, json: bool) -> Result<(), ClientError> {
    use flowlens_api::websocket::{CLOSE_KEY_REVOKED, CLOSE_TOKEN_EXPIRED};
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = client.change_feed().await?;
    note(&format!(
        "following the changes of {} (Ctrl-C stops)",
        client.credentials().url
    ));
    if count == Some(0) {
        return Ok(());
    }
    let mut seen = 0;
    let mut closed: Option<String> = None;
    while let Some(message) = ws.next().await {
        let message = match message {
            Ok(m) => m,
            Err(_) if closed.is_some() => break,
            Err(e) => return Err(ClientError::Unavailable(format!("change feed: {e}"))),
        };
        let text_message = match message {
            Message::Text(t) => t,
            Message::Close(frame) => {
                // The library answers it; read on until the socket ends.
                closed = Some(frame.map(|f| f.reason.to_string()).unwrap_or_default());
                continue;
            }
            _ => continue,
        };
        let v: Value = serde_json::from_str(&text_message)
            .map_err(|e| ClientError::Other(format!("the feed sent something else: {e}")))?;
        match v["type"].as_str() {
            Some("change") => {
                let e = &v["event"];
                if json {
                    out_bytes(table::json_escaped(&format!("{v}\n")).as_bytes())?;
                } else {
                    out(&format!(
                        "{}  {}  {}  {}\n",
                        time(&e["detected_at"]),
                        table::cell(&text(&e["change_type"])),
                        table::cell(&text(&e["entity_type"])),
                        table::cell(&text(&e["entity_id"]))
                    ))?;
                }
                seen += 1;
                if count.is_some_and(|c| seen >= c) {
                    let _ = ws.close(None).await;
                    return Ok(());
                }
            }
            Some("resync") => {
                if json {
                    out_bytes(table::json_escaped(&format!("{v}\n")).as_bytes())?;
                }
                note(
                    "the feed fell behind; changes may have been missed \
                     (`flowlens changes list --since ...` has them)",
                );
            }
            _ => {}
        }
    }
    Err(match closed {
        Some(reason) if reason == CLOSE_TOKEN_EXPIRED || reason == CLOSE_KEY_REVOKED => {
            ClientError::Unauthorized(format!("the server closed the feed: {reason}"))
        }
        Some(reason) => ClientError::Unavailable(format!(
            "the server closed the feed: {}",
            table::cell(&reason)
        )),
        None => ClientError::Unavailable("the change feed ended".to_owned()),
    })
}
