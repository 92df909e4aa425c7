//! The operator's contract: `flowlens-api migrate|serve|token create` as scripts call
//! them, with a YAML config and `${VAR}` secrets.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::support::scratch_db;

const BIN: &str = env!("CARGO_BIN_EXE_flowlens-api");

/// A plain HTTP/1.1 request; returns the status and body.
async fn http(port: u16, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

fn write_config(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let path = dir.join("api.yaml");
    std::fs::write(
        &path,
        format!(
            "# the design's api section\napi:\n  host: 127.0.0.1\n  port: {port}\n  workers: 1\n  auth:\n    jwt_secret: \"${{CLI_TEST_SECRET}}\"\n    token_expiry_hours: 2\n"
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn migrate_token_and_serve_as_scripts_use_them() {
    let (pool, url) = scratch_db("cli").await;
    // Start from an empty schema: drop what scratch_db migrated.
    sqlx::raw_sql("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        .execute(&pool)
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("flowlens-api-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = write_config(&dir, port);
    let secret = "cli-secret-0123456789abcdef0123456789";

    // --database-url wins over DATABASE_URL.
    let out = Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(&config)
        .args(["--database-url", &url])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env("CLI_TEST_SECRET", secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        usize::try_from(applied).unwrap(),
        flowlens_api::MIGRATOR.iter().count()
    );
    // Twice is fine.
    let again = Command::new(BIN)
        .args(["migrate", "--config"])
        .arg(&config)
        .env("DATABASE_URL", &url)
        .env("CLI_TEST_SECRET", secret)
        .status()
        .unwrap();
    assert!(again.success());

    // The token alone on stdout.
    let out = Command::new(BIN)
        .args([
            "token",
            "create",
            "--role",
            "editor",
            "--subject",
            "ci-bot",
            "--config",
        ])
        .arg(&config)
        .env("CLI_TEST_SECRET", secret)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    let token = stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    // Longer than the configured expiry: refused (the server would refuse it too).
    let out = Command::new(BIN)
        .args([
            "token",
            "create",
            "--role",
            "viewer",
            "--subject",
            "x",
            "--expiry-hours",
            "3",
            "--config",
        ])
        .arg(&config)
        .env("CLI_TEST_SECRET", secret)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("token_expiry_hours"));

    // An unset secret variable is a clear error, not a server with an empty secret.
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("DATABASE_URL", &url)
        .env_remove("CLI_TEST_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("${CLI_TEST_SECRET}"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut server = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .env("DATABASE_URL", &url)
        .env("CLI_TEST_SECRET", secret)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Healthy, with the change feed listening (serve starts it).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some((200, body)) = http(port, "/api/v1/admin/health", None).await
            && body.contains("\"change_feed\":\"ok\"")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "serve never became healthy with its change feed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = http(port, "/api/v1/assets", Some(&token)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"total\":0"), "{body}");
    assert_eq!(http(port, "/api/v1/assets", None).await.unwrap().0, 401);
    let (status, doc) = http(port, "/api/v1/openapi.json", Some(&token))
        .await
        .unwrap();
    assert_eq!(status, 200);
    assert!(doc.contains("/api/v1/topology/ws"), "{doc}");

    // SIGTERM: a clean exit.
    Command::new("kill")
        .arg(server.id().to_string())
        .status()
        .unwrap();
    let code = tokio::task::spawn_blocking(move || server.wait().unwrap())
        .await
        .unwrap();
    assert!(code.success(), "{code}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `check-config FILE`: the effective configuration (`${VAR}` expanded, the
/// environment over the file), secrets redacted; exit 1 with every problem when
/// `serve` would refuse it.
#[test]
fn check_config_prints_the_effective_configuration_or_every_problem() {
    let dir = std::env::temp_dir().join(format!("flowlens-api-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(
        &good,
        "api:\n  port: 9100\n  auth:\n    jwt_secret: \"${CHECK_SECRET}\"\n\
         database:\n  url: postgres://flowlens:pg-pass-123@db:5432/flowlens\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&good)
        .env("CHECK_SECRET", "check-secret-0123456789abcdef0123456789")
        .env("FLOWLENS_API__WORKERS", "3")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("the configuration is valid"), "{stderr}");
    assert!(
        !stdout.contains("check-secret-0123") && !stdout.contains("pg-pass-123"),
        "{stdout}"
    );
    let tree: serde_yaml::Value = serde_yaml::from_str(&stdout).unwrap();
    assert_eq!(tree["api"]["port"].as_u64(), Some(9100));
    assert_eq!(tree["api"]["workers"].as_u64(), Some(3));
    assert_eq!(
        tree["api"]["auth"]["jwt_secret"].as_str(),
        Some("<redacted>")
    );
    assert_eq!(
        tree["database"]["url"].as_str(),
        Some("postgres://flowlens:<redacted>@db:5432/flowlens")
    );

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "api:\n  host: not-an-address\n  auth:\n    jwt_secret: short\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("check-config")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("api.host \"not-an-address\""), "{stderr}");
    assert!(stderr.contains("jwt_secret"), "{stderr}");
    assert!(out.stdout.is_empty());
}

/// The API services of `deploy/docker-compose.*.yml` as docker-compose resolves them:
/// `check-config` accepts the config file the image installs with each service's
/// environment (and the image's own: listening on all addresses), the database is the
/// file's PostgreSQL with its credentials, Redis URLs name the file's Redis, and the
/// port is published. The collector's services: the daemon's `tests/containers.rs`.
#[test]
fn compose_files_give_the_api_a_configuration_it_accepts() {
    let has_compose = Command::new("docker-compose")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_compose {
        assert!(
            std::env::var_os("CI").is_none(),
            "docker-compose is missing (.ci/run installs it)"
        );
        eprintln!("skipping: docker-compose is not installed");
        return;
    }
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut checked = 0;
    for file in [
        "deploy/docker-compose.minimal.yml",
        "deploy/docker-compose.full.yml",
    ] {
        let out = Command::new("docker-compose")
            .arg("-f")
            .arg(repo.join(file))
            .arg("config")
            .env("DB_PASSWORD", "compose-check-password")
            .env("JWT_SECRET", "a-test-secret-of-at-least-32-bytes!!")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tree: serde_yaml::Value = serde_yaml::from_slice(&out.stdout).unwrap();
        let services = tree["services"].as_mapping().unwrap();
        for (name, svc) in services {
            if svc["image"].as_str() != Some("flowlens/api:latest") {
                continue;
            }
            checked += 1;
            let env: Vec<(String, String)> = svc["environment"]
                .as_mapping()
                .unwrap()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().unwrap().to_owned(),
                        v.as_str().map_or_else(
                            || serde_yaml::to_string(v).unwrap().trim().to_owned(),
                            str::to_owned,
                        ),
                    )
                })
                .collect();
            let get = |key: &str| env.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
            let check = Command::new(BIN)
                .arg("check-config")
                .arg(repo.join("deploy/flowlens-api.example.yaml"))
                .env_clear()
                // The image's ENV (deploy/docker/Dockerfile.api).
                .env("FLOWLENS_API__HOST", "0.0.0.0")
                .env("FLOWLENS_API__PORT", "8000")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .output()
                .unwrap();
            let stdout = String::from_utf8_lossy(&check.stdout);
            assert!(
                check.status.success(),
                "{file}: {name:?}: {}",
                String::from_utf8_lossy(&check.stderr)
            );
            let effective: serde_yaml::Value = serde_yaml::from_str(&stdout).unwrap();
            assert_eq!(effective["api"]["host"].as_str(), Some("0.0.0.0"));
            assert_eq!(
                get("DATABASE_URL"),
                Some("postgres://flowlens:compose-check-password@postgres:5432/flowlens"),
                "{file}"
            );
            for (key, url) in &env {
                if key.ends_with("REDIS_URL") {
                    assert!(url.starts_with("redis://redis:6379/"), "{file}: {key}");
                    assert!(
                        services.contains_key("redis"),
                        "{file}: {key} without redis"
                    );
                }
            }
            let ports = svc["ports"].as_sequence().unwrap();
            assert!(
                ports.iter().any(|p| p["target"].as_u64() == Some(8000)),
                "{file}: {ports:?}"
            );
        }
    }
    assert_eq!(checked, 2);
}
