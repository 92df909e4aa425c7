//! The web console in a real browser, end to end: `flowlens-daemon run` fills a real
//! PostgreSQL from the generator's enterprise topology, `flowlens-api serve` (the
//! binary, with the console embedded by `cargo xtask build-console`) serves it, and
//! Debian's chromium, driven by playwright-core under `node --test`, signs in, reads
//! the map, a panel, groups, a blast radius, SPOFs, a path, the "since" view and the
//! exports, acknowledges an alert, edits and declares a dependency, checks what a
//! viewer sees and what a revoked key gets, and watches a new dependency arrive over
//! the WebSocket
//! (`flowlens-api/console/tests/console.test.mjs` holds the browser side).
//!
//! Needs: node and npm, the console's `node_modules` and bundle (`cargo xtask
//! build-console`, which `.ci/run` runs), and /usr/bin/chromium (`.ci/run` installs
//! them). It fails, saying which, when one is missing: a browser test that skips is no
//! test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods,
    clippy::print_stdout,
    reason = "tests: a failed unwrap is the failure message; the test polls other processes \
              and prints the browser's report (its timings) for --nocapture"
)]

mod support;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flowlens_daemon::generate::Topology;
use flowlens_daemon::testing::postgres::scratch;
use support::Daemon;

const SECRET: &str = "console-test-secret-0123456789abcdef01234567";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The API binary cargo built beside the daemon's (`cargo test --workspace` builds
/// every package's binaries).
fn api_binary() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_flowlens-daemon")).with_file_name("flowlens-api");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p flowlens-api` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

struct Api(Child);

impl Drop for Api {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

fn token(api: &Path, role: &str) -> String {
    let out = Command::new(api)
        .args(["token", "create", "--role", role, "--subject"])
        .arg(format!("console-{role}"))
        .env("JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Every asset that depends on `root`, directly or through others (what blast radius
/// must highlight).
fn dependents(topology: &Topology, root: IpAddr) -> BTreeSet<IpAddr> {
    let mut clients: HashMap<IpAddr, Vec<IpAddr>> = HashMap::new();
    for (c, s, _, _) in topology.dependencies() {
        clients.entry(s).or_default().push(c);
    }
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::from([root]);
    while let Some(a) = queue.pop_front() {
        for c in clients.get(&a).into_iter().flatten() {
            if *c != root && seen.insert(*c) {
                queue.push_back(*c);
            }
        }
    }
    seen
}

fn triples(deps: impl IntoIterator<Item = (IpAddr, IpAddr, u8, u16)>) -> serde_json::Value {
    deps.into_iter()
        .map(|(c, s, _, port)| serde_json::json!([c.to_string(), s.to_string(), port]))
        .collect()
}

#[test]
fn the_console_in_chromium_over_a_real_api_and_daemon() {
    let console = workspace().join("flowlens-api/console");
    assert!(
        console.join("node_modules/playwright-core").is_dir(),
        "the console's Node packages are missing: run `cargo xtask build-console` first"
    );
    let chromium =
        std::env::var("FLOWLENS_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium"
    );
    let api_bin = api_binary();

    let rt = tokio::runtime::Runtime::new().unwrap();
    let db = rt.block_on(scratch("console"));
    let d = Daemon::start_output(
        "console",
        &[
            ("DATABASE_URL", db.url.as_str()),
            (
                "FLOWLENS_DEPENDENCY_RESOLUTION__AGGREGATION__FLUSH_INTERVAL_SECONDS",
                "1",
            ),
        ],
        "postgres",
    );
    let topology = Topology::enterprise();
    let sent = support::graph::generate(d.ipfix, 6, 5000);
    d.wait_until("the topology in PostgreSQL", |_| {
        rt.block_on(support::graph::total_flows(&db.pool)) == i64::try_from(sent).unwrap()
    });
    assert_eq!(
        rt.block_on(support::graph::edges(&db.pool)),
        support::graph::expected(&topology)
    );

    let port = support::free_port(false);
    let log = d.dir.join("api.log");
    let _api = Api(Command::new(&api_bin)
        .arg("serve")
        .env("DATABASE_URL", &db.url)
        .env("JWT_SECRET", SECRET)
        .env("FLOWLENS_API__HOST", "127.0.0.1")
        .env("FLOWLENS_API__PORT", port.to_string())
        // Every tab and the test's own polling come from 127.0.0.1 under a few
        // callers: the production budgets would make the test about 429s.
        .env(
            "FLOWLENS_API__RATE_LIMITING__DEFAULT_LIMIT",
            "100000/minute",
        )
        .env("FLOWLENS_API__RATE_LIMITING__BURST_LIMIT", "1000/second")
        .env(
            "FLOWLENS_API__RATE_LIMITING__PER_ADDRESS_LIMIT",
            "100000/minute",
        )
        .env(
            "FLOWLENS_API__RATE_LIMITING__PER_ADDRESS_BURST",
            "1000/second",
        )
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap());
    let start = Instant::now();
    loop {
        if http_get(port, "/api/v1/admin/health").is_some_and(|r| r.starts_with("HTTP/1.1 200")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the API did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let page = http_get(port, "/").unwrap();
    assert!(
        page.contains("id=\"app\""),
        "{} was built without the console: run `cargo xtask build-console`, then the \
         tests (the bundle is embedded at build time)",
        api_bin.display()
    );

    let app = "10.3.0.10".parse::<IpAddr>().unwrap();
    let bigger = Topology::enterprise_with_clients(9);
    let old = topology.dependencies();
    let new: Vec<_> = bigger
        .dependencies()
        .into_iter()
        .filter(|dep| !old.contains(dep))
        .collect();
    assert_eq!(new.len(), 3, "one more client: two web servers and DNS");
    let expected = serde_json::json!({
        "assets": topology.addresses().iter().map(ToString::to_string).collect::<Vec<_>>(),
        "dependencies": triples(old),
        "blast": {
            "root": app.to_string(),
            "affected": dependents(&topology, app).iter().map(ToString::to_string).collect::<Vec<_>>(),
        },
        "new_dependencies": triples(new),
    });
    let tokens = serde_json::json!({
        "viewer": token(&api_bin, "viewer"),
        "editor": token(&api_bin, "editor"),
        "admin": token(&api_bin, "admin"),
    });
    let generate = serde_json::json!([
        env!("CARGO_BIN_EXE_flowlens-daemon"),
        "generate",
        "--target",
        d.ipfix.to_string(),
        "--rounds",
        "6",
        "--rate",
        "5000",
        "--clients",
        "9",
    ]);
    let mut node = Command::new("node");
    node.args(["--test", "--test-reporter=spec", "--test-concurrency=1"])
        .args(["tests/console.test.mjs", "tests/unit.test.mjs"])
        .current_dir(&console)
        .env("FLOWLENS_URL", format!("http://127.0.0.1:{port}"))
        .env("FLOWLENS_TOKENS", tokens.to_string())
        .env("FLOWLENS_EXPECTED", expected.to_string())
        .env("FLOWLENS_GENERATE", generate.to_string())
        .env("FLOWLENS_CHROMIUM", &chromium);
    if let Some(dir) = std::env::var_os("FLOWLENS_SCREENSHOTS") {
        node.env("FLOWLENS_SCREENSHOTS", dir);
    }
    let out = node
        .output()
        .expect("running node (apt-get install nodejs)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{report}");
    assert!(
        out.status.success(),
        "the browser tests failed:\n{report}\nAPI log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        report.contains("pass 22") && report.contains("fail 0"),
        "every browser test ran:\n{report}"
    );
    d.stop();
}
