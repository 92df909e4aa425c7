//! The `flowlens` command line, run as a user runs it (the built binary, a config
//! directory of its own) against a real API on 127.0.0.1 over real PostgreSQL.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use axum::http::Method;
use flowlens_api::auth::Role;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;

use crate::support::TestApi;

/// The API served on a port the OS picks, and a config home for the CLI.
struct Cli {
    url: String,
    home: PathBuf,
}

/// What a run printed and its exit code.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", self.stdout, self.stderr))
    }
}

impl Cli {
    async fn new(api: &TestApi, label: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = api.app.clone();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let home = std::env::temp_dir().join(format!(
            "flowlens-cli-{label}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::create_dir_all(&home).unwrap();
        Self { url, home }
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_flowlens"));
        c.args(args)
            .env("XDG_CONFIG_HOME", &self.home)
            .env_remove("FLOWLENS_URL")
            .env_remove("FLOWLENS_TOKEN")
            .env_remove("FLOWLENS_API_KEY")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        c
    }

    /// Runs `flowlens args...` with `stdin` as its input.
    async fn run_with(&self, args: &[&str], stdin: &str) -> Run {
        let mut child = self.command(args).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        input.write_all(stdin.as_bytes()).await.unwrap();
        drop(input);
        let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
            .await
            .expect("the command ends within 60 s")
            .unwrap();
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, "").await
    }

    /// Runs and asserts exit 0.
    async fn ok(&self, args: &[&str]) -> Run {
        let r = self.run(args).await;
        assert_eq!(r.code, 0, "flowlens {args:?}: {}\n{}", r.stdout, r.stderr);
        r
    }

    async fn login(&self, role: Role) {
        let r = self
            .run_with(
                &["login", "--url", &self.url],
                &format!("{}\n", TestApi::token(role)),
            )
            .await;
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    }

    fn credentials(&self) -> PathBuf {
        self.home.join("flowlens/credentials.json")
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn login_keeps_the_token_private_and_every_later_command_uses_it() {
    let api = TestApi::new("cli_login").await;
    let cli = Cli::new(&api, "login").await;

    let r = cli.run(&["assets", "list"]).await;
    assert_eq!(r.code, 3, "not logged in: {}", r.stderr);
    assert!(r.stderr.contains("flowlens login"), "{}", r.stderr);

    // A refused token is not saved.
    let r = cli
        .run_with(&["login", "--url", &cli.url], "not-a-token\n")
        .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(!cli.credentials().exists());

    let alice = TestApi::token_for("alice", Role::Editor);
    let r = cli
        .run_with(&["login", "--url", &cli.url], &format!("{alice}\n"))
        .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("as alice (editor)"), "{}", r.stdout);
    assert!(!r.stdout.contains(&alice) && !r.stderr.contains(&alice));
    assert_eq!(mode(&cli.credentials()), 0o600);
    assert_eq!(mode(cli.credentials().parent().unwrap()), 0o700);
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(cli.credentials()).unwrap()).unwrap();
    assert_eq!(saved["url"], cli.url.as_str());

    let s = cli.ok(&["status", "--json"]).await.json();
    assert_eq!(
        (&s["subject"], &s["role"]),
        (&json!("alice"), &json!("editor"))
    );
    let r = cli.ok(&["status"]).await;
    assert_eq!(r.stdout, format!("{} as alice (editor)\n", cli.url));
    // The saved token goes only where it was checked, not to another --url.
    let r = cli
        .run(&["assets", "list", "--url", "http://127.0.0.1:9"])
        .await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("the saved login is for"), "{}", r.stderr);
    assert!(!r.stderr.contains(&alice));

    // Readable by others: refused, as ssh refuses such a key.
    std::fs::set_permissions(cli.credentials(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = cli.run(&["assets", "list"]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("chmod 600"), "{}", r.stderr);
    std::fs::set_permissions(cli.credentials(), std::fs::Permissions::from_mode(0o600)).unwrap();

    // An API key works the same way; the environment overrides the file for scripts.
    let key = api
        .call(
            Method::POST,
            "/api/v1/admin/api-keys",
            Some(&TestApi::token(Role::Admin)),
            Some(json!({"name": "cli", "role": "viewer"})),
        )
        .await
        .2["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut c = cli.command(&["status", "--json"]);
    c.env("FLOWLENS_API_KEY", &key);
    let out = c.output().await.unwrap();
    assert!(out.status.success());
    let s: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(s["credential"], "api_key");

    let r = cli.ok(&["logout"]).await;
    assert_eq!(r.stdout, "logged out\n");
    assert!(!cli.credentials().exists());
    assert_eq!(cli.run(&["assets", "list"]).await.code, 3);

    // Nothing listening there: 7, retry later.
    let r = cli
        .run_with(
            &["login", "--url", "http://127.0.0.1:9"],
            &format!("{}\n", TestApi::token(Role::Viewer)),
        )
        .await;
    assert_eq!(r.code, 7, "{}", r.stderr);
    assert!(r.stderr.contains("could not connect"), "{}", r.stderr);
}

#[tokio::test]
async fn assets_dependencies_exports_and_analyses_as_tables_and_json() {
    let api = TestApi::new("cli_graph").await;
    let web = api.asset("web", &["10.0.1.1"]).await;
    let db = api.asset("db", &["10.0.2.1"]).await;
    let store = api.asset("store", &["10.0.3.1"]).await;
    api.asset("dup", &["10.0.9.1"]).await;
    api.asset("dup", &["10.0.9.2"]).await;
    let web_db = api.dependency(&web, &db, 5432).await;
    api.dependency(&db, &store, 2049).await;
    // A name as reverse DNS may hand it over: escape sequences, a bidi override.
    let evil = api.asset("evil", &["10.0.6.6"]).await;
    sqlx::query("UPDATE assets SET name = E'ev\\x1b]0;pwned\\x07il\\u202e' WHERE id = $1::uuid")
        .bind(&evil)
        .execute(&api.pool)
        .await
        .unwrap();
    api.dependency(&evil, &db, 5432).await;
    let cli = Cli::new(&api, "graph").await;
    cli.login(Role::Viewer).await;
    let hostile = |s: &str| {
        s.chars()
            .any(|c| (c.is_control() && c != '\n') || c == '\u{202e}')
    };

    let r = cli.ok(&["assets", "list"]).await;
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("NAME") && lines[0].contains("ADDRESSES"),
        "{}",
        r.stdout
    );
    assert_eq!(
        lines.len(),
        1 + 6 + 1,
        "header, six assets, footer: {}",
        r.stdout
    );
    assert_eq!(*lines.last().unwrap(), "6 of 6 (page 1)");
    assert!(!hostile(&r.stdout), "{:?}", r.stdout);
    assert!(r.stdout.contains("ev?]0;pwned?il?"), "{}", r.stdout);
    let page = cli
        .ok(&["assets", "list", "--json", "--page-size", "2"])
        .await;
    assert!(!hostile(&page.stdout), "{:?}", page.stdout);
    let page = page.json();
    assert_eq!(
        (page["items"].as_array().unwrap().len(), &page["total"]),
        (2, &json!(6))
    );
    let found = cli
        .ok(&["assets", "search", "store", "--json"])
        .await
        .json();
    assert_eq!(found["items"][0]["id"], store.as_str());

    // One asset by name, by address, by id; its dependencies both ways.
    let r = cli.ok(&["assets", "show", "db"]).await;
    assert!(
        r.stdout.contains(&db) && r.stdout.contains("10.0.2.1"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("uses (outbound): 1"), "{}", r.stdout);
    assert!(r.stdout.contains("used by (inbound): 2"), "{}", r.stdout);
    let shown = cli
        .ok(&["assets", "show", "10.0.1.1", "--json"])
        .await
        .json();
    assert_eq!(shown["asset"]["id"], web.as_str());
    assert_eq!(
        shown["dependencies"]["outbound"][0]["target_asset_id"],
        db.as_str()
    );
    let r = cli.run(&["assets", "show", "nothing-by-that-name"]).await;
    assert_eq!(r.code, 5, "{}", r.stderr);
    let r = cli.run(&["assets", "show", "dup"]).await;
    assert_eq!(r.code, 6, "ambiguous: {}", r.stderr);
    assert!(r.stderr.contains("names 2 assets"), "{}", r.stderr);

    let r = cli.ok(&["deps", "list", "--asset", "db"]).await;
    assert!(!hostile(&r.stdout), "{:?}", r.stdout);
    let deps = cli
        .ok(&["deps", "list", "--asset", "web", "--json"])
        .await
        .json();
    assert_eq!(deps["items"].as_array().unwrap().len(), 1);
    assert_eq!(deps["items"][0]["id"], web_db.as_str());
    let r = cli.ok(&["dependencies", "show", &web_db]).await;
    assert!(
        r.stdout.contains("5432") && r.stdout.contains("web"),
        "{}",
        r.stdout
    );
    assert_eq!(cli.run(&["deps", "show", "not-an-id"]).await.code, 6);
    assert_eq!(
        cli.run(&["deps", "show", &uuid::Uuid::new_v4().to_string()])
            .await
            .code,
        5
    );

    // Exports as the API renders them, to stdout or a file.
    let dot = cli.ok(&["export", "--format", "dot"]).await.stdout;
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains(r#"label="web\n10.0.1.1""#), "{dot}");
    assert!(dot.contains(&format!("\"{web}\" -> \"{db}\"")), "{dot}");
    // Piped, an export is the API's bytes; the server drops controls from names (a
    // bidi override is text, kept in a file).
    let controls = |s: &str| s.chars().any(|c| c.is_control() && c != '\n');
    assert!(!controls(&dot), "{dot:?}");
    let mermaid = cli.ok(&["export", "--format", "mermaid"]).await.stdout;
    assert!(!controls(&mermaid), "{mermaid:?}");
    let file = cli.home.join("map.graphml");
    cli.ok(&[
        "export",
        "--format",
        "graphml",
        "-o",
        file.to_str().unwrap(),
    ])
    .await;
    let graphml = std::fs::read_to_string(&file).unwrap();
    assert!(graphml.contains("<graphml"), "{graphml}");
    let topo = cli.ok(&["export"]).await.json();
    assert_eq!(topo["edges"].as_array().unwrap().len(), 3, "{topo}");

    // Analyses: the rows, not just the words.
    let rows = |out: &str| -> std::collections::BTreeSet<(String, String)> {
        out.lines()
            .skip_while(|l| !l.starts_with("DEPTH"))
            .skip(1)
            .take_while(|l| !l.is_empty())
            .map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                (cells[0].to_owned(), cells[cells.len() - 1].to_owned())
            })
            .collect()
    };
    let r = cli.ok(&["impact", "store"]).await;
    assert!(
        r.stdout.starts_with("3 assets depend on store"),
        "{}",
        r.stdout
    );
    assert_eq!(
        rows(&r.stdout),
        [("1", "db"), ("2", "web"), ("2", "ev?]0;pwned?il?")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect(),
        "{}",
        r.stdout
    );
    let r = cli.ok(&["path", "web", "store"]).await;
    assert!(
        r.stdout.starts_with("web -> db -> store\n2 hops"),
        "{}",
        r.stdout
    );
    let r = cli.run(&["path", "store", "web"]).await;
    assert_eq!(r.code, 5, "against the direction: {}", r.stderr);
    cli.ok(&["path", "store", "web", "--undirected"]).await;
    let b = cli.ok(&["blast-radius", "db", "--json"]).await.json();
    assert!(b["blast_radius"]["score"].as_f64().unwrap() > 0.0, "{b}");
    let r = cli.ok(&["blast-radius", "db"]).await;
    assert!(
        r.stdout.starts_with("blast radius of db: score"),
        "{}",
        r.stdout
    );
    let affected = b["blast_radius"]["impact"]["total_affected"]
        .as_u64()
        .unwrap();
    assert_eq!(rows(&r.stdout).len() as u64, affected, "{}", r.stdout);
    let r = cli.ok(&["spof"]).await;
    assert!(r.stdout.contains("articulation points"), "{}", r.stdout);
    assert!(
        r.stdout.contains("db"),
        "db joins web and store: {}",
        r.stdout
    );
    let s = cli.ok(&["spof", "--json"]).await.json();
    assert_eq!(s["spof"]["articulation_points"][0]["asset"], db.as_str());
}

#[tokio::test]
async fn alerts_are_handled_by_editors_and_the_change_feed_is_followed() {
    let api = TestApi::new("cli_alerts").await;
    let alert: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO alerts (severity, title, rule_name) VALUES ('warning', 'web talks to the internet', 'egress') RETURNING id",
    )
    .fetch_one(&api.pool)
    .await
    .unwrap();
    let alert = alert.to_string();
    let cli = Cli::new(&api, "alerts").await;
    cli.login(Role::Viewer).await;
    let r = cli.ok(&["alerts", "list", "--status", "open"]).await;
    assert!(
        r.stdout.contains(&alert) && r.stdout.contains("web talks to the internet"),
        "{}",
        r.stdout
    );
    let r = cli.run(&["alerts", "ack", &alert]).await;
    assert_eq!(r.code, 4, "a viewer may not: {}", r.stderr);

    cli.login(Role::Editor).await;
    let r = cli.ok(&["alerts", "ack", &alert]).await;
    assert!(r.stdout.contains("acknowledged"), "{}", r.stdout);
    let a = cli
        .ok(&["alerts", "resolve", &alert, "--json"])
        .await
        .json();
    assert_eq!(a["status"], "resolved");
    let r = cli.run(&["alerts", "ack", &alert]).await;
    assert_eq!(r.code, 6, "resolved cannot be acknowledged: {}", r.stderr);
    let open = cli
        .ok(&["alerts", "list", "--status", "open", "--json"])
        .await
        .json();
    assert_eq!(open["total"], 0);

    // The feed: a change made while `tail` runs is printed and the command ends.
    // Earlier changes heard first, so none still in flight is taken for it.
    api.settle().await;
    let mut child = cli
        .command(&["changes", "tail", "--count", "1", "--json"])
        .spawn()
        .unwrap();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap());
    let mut said = String::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        while !said.contains("following the changes") {
            let mut line = String::new();
            let n = tokio::io::AsyncBufReadExt::read_line(&mut stderr, &mut line)
                .await
                .unwrap();
            assert!(n > 0, "tail ended: {said}");
            said.push_str(&line);
        }
    })
    .await
    .expect("tail connects");
    let id = api.asset("new-one", &["10.0.7.7"]).await;
    let out = tokio::time::timeout(Duration::from_secs(10), child.wait_with_output())
        .await
        .expect("tail ends after one change")
        .unwrap();
    assert!(out.status.success(), "{said}");
    let line: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["type"], "change");
    assert_eq!(line["event"]["entity_id"], id.as_str());
    assert_eq!(line["event"]["change_type"], "new_asset");
    let listed = cli
        .ok(&["changes", "list", "--change-type", "new_asset", "--json"])
        .await
        .json();
    let items = listed["items"].as_array().unwrap();
    assert!(
        items.iter().any(|c| c["entity_id"] == id.as_str())
            && items.iter().all(|c| c["change_type"] == "new_asset"),
        "{listed}"
    );
    // A token that expires while tailing: the server closes the feed, exit 3 (log in
    // again), not 7 (retry).
    let brief = flowlens_api::auth::issue_token(
        crate::support::SECRET,
        "brief",
        Role::Viewer,
        std::time::SystemTime::now(),
        Duration::from_secs(2),
    )
    .unwrap();
    let mut c = cli.command(&["changes", "tail", "--url", &cli.url]);
    c.env("FLOWLENS_TOKEN", &brief);
    let out = tokio::time::timeout(Duration::from_secs(15), c.output())
        .await
        .expect("the feed is closed when the token expires")
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{said}");
    assert!(said.contains("token expired"), "{said}");
    let others = cli
        .ok(&[
            "changes",
            "list",
            "--change-type",
            "removed_dependency",
            "--json",
        ])
        .await
        .json();
    assert_eq!(others["total"], 0, "{others}");
}

#[tokio::test]
async fn completions_are_valid_shell_and_usage_errors_exit_2() {
    let api = TestApi::new("cli_compl").await;
    let cli = Cli::new(&api, "compl").await;
    let bash = cli.ok(&["completions", "bash"]).await.stdout;
    assert!(
        bash.contains("_flowlens") && bash.contains("complete"),
        "{bash}"
    );
    let script = cli.home.join("flowlens.bash");
    std::fs::write(&script, &bash).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&script)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let zsh = cli.ok(&["completions", "zsh"]).await.stdout;
    assert!(zsh.starts_with("#compdef flowlens"), "{zsh}");
    let fish = cli.ok(&["completions", "fish"]).await.stdout;
    assert!(fish.contains("complete -c flowlens"), "{fish}");
    assert_eq!(cli.run(&["assets", "frobnicate"]).await.code, 2);
    assert_eq!(cli.run(&["export", "--format", "png"]).await.code, 2);
}
