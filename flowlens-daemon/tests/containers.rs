//! The container files under `deploy/`: no container engine runs here, so this is what
//! can be checked without one (the README says the images are untested).
//!
//! - hadolint accepts both Dockerfiles; every `COPY` from the build context names a
//!   file that exists; the final stage runs as a numeric, non-root user.
//! - `docker-compose config` (Debian's docker-compose) accepts both compose files,
//!   and refuses them without `DB_PASSWORD`.
//! - Every collector service's environment is a configuration the daemon accepts
//!   (`flowlens-daemon check-config` on the config file the image installs, with that
//!   environment); its role is one the daemon has, with what the role needs (a
//!   database to write the graph, Kafka for the split roles); `DATABASE_URL` and
//!   `KAFKA_BOOTSTRAP_SERVERS` point at services of the same file with their
//!   credentials; the flow ports are published over UDP.
//!
//! The API's services are checked the same way by the API's tests (`tests/it/cli.rs`).

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn hadolint() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FLOWLENS_HADOLINT") {
        return Some(PathBuf::from(p));
    }
    let venv = repo().join("target/tools/hadolint-venv/bin/hadolint");
    if venv.is_file() {
        return Some(venv);
    }
    support::netns::tool("hadolint").then(|| PathBuf::from("hadolint"))
}

/// The tool, or `None` to skip (never under CI, where `.ci/run` installs it).
fn required(name: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing (.ci/run installs it)"
        );
        eprintln!("skipping: {name} is not installed");
    }
    found
}

const DOCKERFILES: [&str; 2] = [
    "deploy/docker/Dockerfile.daemon",
    "deploy/docker/Dockerfile.api",
];

const COMPOSE_FILES: [&str; 2] = [
    "deploy/docker-compose.minimal.yml",
    "deploy/docker-compose.full.yml",
];

const DB_PASSWORD: &str = "compose-check-password";

#[test]
fn dockerfiles_lint_clean_copy_what_exists_and_run_as_a_numeric_non_root_user() {
    for file in DOCKERFILES {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        // Instructions with their continuation lines joined.
        let joined = text.replace("\\\n", " ");
        let instructions: Vec<&str> = joined
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        for copy in instructions.iter().filter(|l| l.starts_with("COPY ")) {
            let words: Vec<&str> = copy.split_whitespace().skip(1).collect();
            if words.iter().any(|w| w.starts_with("--from=")) {
                continue;
            }
            let sources = &words[..words.len() - 1];
            for src in sources {
                assert!(
                    src == &"." || repo().join(src).exists(),
                    "{file}: {copy}: {src} is not in the build context"
                );
            }
        }
        let last_from = instructions
            .iter()
            .rposition(|l| l.starts_with("FROM "))
            .unwrap();
        let user = instructions[last_from..]
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or_else(|| panic!("{file}: the final stage sets no USER (it would be root)"));
        let uid: u32 = user
            .split(':')
            .next()
            .unwrap()
            .parse()
            .unwrap_or_else(|_| panic!("{file}: USER {user} is not numeric"));
        assert_ne!(uid, 0, "{file}: runs as root");
    }

    let Some(hadolint) = required("hadolint", hadolint()) else {
        return;
    };
    let out = Command::new(&hadolint)
        .args(["--no-color"])
        .args(DOCKERFILES.map(|f| repo().join(f)))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn compose_config(file: &str, env: &[(&str, &str)]) -> std::process::Output {
    Command::new("docker-compose")
        .arg("-f")
        .arg(repo().join(file))
        .arg("config")
        .env_remove("DB_PASSWORD")
        .env_remove("JWT_SECRET")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The compose file as docker-compose resolves it, with the secrets it asks for.
fn resolved(file: &str) -> serde_yaml::Value {
    let out = compose_config(
        file,
        &[
            ("DB_PASSWORD", DB_PASSWORD),
            ("JWT_SECRET", "a-test-secret-of-at-least-32-bytes!!"),
        ],
    );
    assert!(
        out.status.success(),
        "docker-compose config {file}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_yaml::from_slice(&out.stdout).unwrap()
}

fn env_of(service: &serde_yaml::Value) -> Vec<(String, String)> {
    service["environment"]
        .as_mapping()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        serde_yaml::Value::String(s) => s.clone(),
                        other => serde_yaml::to_string(other).unwrap().trim().to_owned(),
                    };
                    (k.as_str().unwrap().to_owned(), v)
                })
                .collect()
        })
        .unwrap_or_default()
}

fn get<'a>(env: &'a [(String, String)], key: &str) -> Option<&'a str> {
    env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

#[test]
fn compose_files_resolve_and_give_each_collector_a_configuration_it_accepts() {
    if required(
        "docker-compose",
        support::netns::tool("docker-compose").then(PathBuf::new),
    )
    .is_none()
    {
        return;
    }
    // The example config is what the image installs as /etc/flowlens/flowlens.yaml.
    let image_config = repo().join("deploy/flowlens-daemon.example.yaml");
    let mut collectors = 0;
    for file in COMPOSE_FILES {
        let refused = compose_config(file, &[]);
        assert!(!refused.status.success(), "{file} without DB_PASSWORD");
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("set DB_PASSWORD"),
            "{}",
            String::from_utf8_lossy(&refused.stderr)
        );

        let tree = resolved(file);
        let services = tree["services"].as_mapping().unwrap();
        let service = |name: &str| {
            services
                .get(name)
                .unwrap_or_else(|| panic!("{file}: {name}"))
        };
        for (name, svc) in services {
            let name = name.as_str().unwrap();
            if let Some(dockerfile) = svc["build"]["dockerfile"].as_str() {
                let context = Path::new(svc["build"]["context"].as_str().unwrap());
                assert!(
                    context.join(dockerfile).is_file(),
                    "{file}: {name}: {dockerfile}"
                );
            }
            if svc["image"].as_str() != Some("flowlens/daemon:latest") {
                continue;
            }
            collectors += 1;
            let env = env_of(svc);
            let command: Vec<&str> = svc["command"].as_sequence().map_or_else(
                || vec!["run", "--config", "/etc/flowlens/flowlens.yaml"],
                |c| c.iter().map(|w| w.as_str().unwrap()).collect(),
            );
            assert_eq!(command[0], "run", "{file}: {name}: {command:?}");
            let role = command
                .iter()
                .position(|w| *w == "--role")
                .map_or("all", |i| command[i + 1]);
            assert!(
                ["all", "ingest", "process"].contains(&role),
                "{file}: {name}: role {role}"
            );

            let check = Command::new(env!("CARGO_BIN_EXE_flowlens-daemon"))
                .arg("check-config")
                .arg(&image_config)
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            assert!(
                check.status.success(),
                "{file}: {name}: check-config with {env:?}:\n{}",
                String::from_utf8_lossy(&check.stderr)
            );

            if role != "ingest" {
                let url = get(&env, "DATABASE_URL")
                    .unwrap_or_else(|| panic!("{file}: {name} ({role}) writes the graph"));
                let pg = service("postgres");
                let pg_env = env_of(pg);
                let want = format!(
                    "postgres://{}:{}@postgres:5432/{}",
                    get(&pg_env, "POSTGRES_USER").unwrap(),
                    get(&pg_env, "POSTGRES_PASSWORD").unwrap(),
                    get(&pg_env, "POSTGRES_DB").unwrap()
                );
                assert_eq!(url, want, "{file}: {name}");
                assert!(url.contains(DB_PASSWORD));
            }
            if role != "all" {
                let servers = get(&env, "KAFKA_BOOTSTRAP_SERVERS")
                    .unwrap_or_else(|| panic!("{file}: {name} ({role}) needs Kafka"));
                let kafka_env = env_of(service("kafka"));
                let advertised = get(&kafka_env, "KAFKA_ADVERTISED_LISTENERS").unwrap();
                assert!(
                    advertised.contains(&format!("//{servers}")),
                    "{file}: {name}: {servers} is not what the broker advertises ({advertised})"
                );
            }
            if role != "process" {
                let ports = svc["ports"].as_sequence().unwrap();
                for port in [2055, 4739, 6343] {
                    assert!(
                        ports.iter().any(|p| p["target"].as_u64() == Some(port)
                            && p["protocol"].as_str() == Some("udp")),
                        "{file}: {name}: UDP {port} is not published: {ports:?}"
                    );
                }
            }
        }
    }
    // minimal: one collector; full: ingest and process.
    assert_eq!(collectors, 3);
}
