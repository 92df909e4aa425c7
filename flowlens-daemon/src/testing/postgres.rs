//! A scratch PostgreSQL database per test: on the server of `DATABASE_URL` when it is
//! set, else in the private cluster under `target/test-pg` (started on first use and
//! shared by every test; see [`crate::store::cluster`]). Each call creates a new,
//! migrated database with a unique name, so tests run in parallel without seeing each
//! other's rows.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use crate::store::{self, cluster::Cluster};

/// A migrated scratch database.
pub struct ScratchDb {
    pub pool: PgPool,
    pub url: String,
    pub name: String,
    /// The private cluster, when not using `DATABASE_URL` (tests that stop and start
    /// the server need it).
    pub cluster: Option<Cluster>,
}

/// The private test cluster's directory: `<workspace>/target/test-pg`.
pub fn cluster_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-pg")
}

/// Creates and migrates a fresh database named after `label`.
pub async fn scratch(label: &str) -> ScratchDb {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "t_{}_{}_{}",
        label
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .take(24)
            .collect::<String>()
            .to_lowercase(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let (admin_url, cluster) = if let Ok(url) = std::env::var("DATABASE_URL") {
        (url, None)
    } else {
        let dir = cluster_dir();
        let c = tokio::task::spawn_blocking(move || Cluster::ensure(&dir))
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("private PostgreSQL cluster: {e}"));
        (c.url("postgres"), Some(c))
    };
    let admin = store::connect(&admin_url, 1)
        .await
        .unwrap_or_else(|e| panic!("{admin_url}: {e}"));
    if cluster.is_some() {
        drop_leftovers(&admin).await;
    }
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let options: PgConnectOptions = admin_url.parse().unwrap();
    let options = options.database(&name);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .connect_with(options)
        .await
        .unwrap();
    store::migrate(&pool).await.unwrap();
    let url = match &cluster {
        Some(c) => c.url(&name),
        None => format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0),
    };
    ScratchDb {
        pool,
        url,
        name,
        cluster,
    }
}

/// Drops, once per test process, the private cluster's scratch databases of test
/// processes that have ended and that nobody is connected to, so the cluster does not
/// grow run after run. Never on a `DATABASE_URL` server: other machines' tests may be
/// using it.
async fn drop_leftovers(admin: &PgPool) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, Ordering::AcqRel) {
        return;
    }
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT datname FROM pg_database d WHERE datname LIKE 't\\_%'
           AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a WHERE a.datname = d.datname)",
    )
    .fetch_all(admin)
    .await
    .unwrap_or_default();
    for name in names {
        if flowlens_pgcluster::is_dead_scratch_database(&name, "t") {
            // Without FORCE: a session that appeared meanwhile keeps it.
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                .execute(admin)
                .await;
        }
    }
}

/// Graph sink settings for tests against `url`: flushes and upkeep only when the test
/// asks (intervals of an hour), reverse DNS off (no lookups to the system resolver;
/// tests that want names point it at their own dnsmasq).
pub fn graph_settings(url: String) -> crate::graph::sink::GraphSettings {
    let mut resolution = crate::config::DependencyResolutionConfig::default();
    resolution.aggregation.flush_interval_seconds = 3600;
    resolution.change_detection.check_interval_seconds = 3600;
    let mut enrichment = crate::config::EnrichmentConfig::default();
    enrichment.dns.enabled = false;
    crate::graph::sink::GraphSettings {
        url,
        database: crate::config::DatabaseConfig::default(),
        resolution,
        alerts: crate::config::AlertsConfig::default(),
        classifier: crate::enrich::classify::Classifier::default(),
        enrichment,
        state_dir: None,
    }
}
