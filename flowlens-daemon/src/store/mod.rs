//! EDGE: the PostgreSQL store of the dependency graph.
//!
//! PostgreSQL is the truth: the schema lives in `migrations/` at the workspace root and
//! is embedded here with `sqlx::migrate!`, so the daemon (and the API, which embeds the
//! same directory) bring any database up to date on start. Migrations are idempotent:
//! sqlx records what ran in `_sqlx_migrations` and applies only what is new, under an
//! advisory lock, so two processes starting together do not race.

/// The private cluster of the embedded default (a crate of its own so the API's tests
/// can start the same cluster without depending on the daemon).
pub use flowlens_pgcluster as cluster;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// The embedded migrations (`migrations/` at the workspace root).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("connecting to PostgreSQL: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("PostgreSQL: {0}")]
    Query(#[from] sqlx::Error),
}

/// Connects a pool of at most `max_connections` to `url`.
pub async fn connect(url: &str, max_connections: u32) -> Result<PgPool, StoreError> {
    let options: PgConnectOptions = url.parse().map_err(StoreError::Connect)?;
    // A short acquire timeout: during an outage a flush should fail fast and be
    // retried at the next interval, not hold the sink thread for sqlx's default 30 s.
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(3))
        .connect_with(options)
        .await
        .map_err(StoreError::Connect)
}

/// Brings the schema up to date.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR.run(pool).await?;
    Ok(())
}

/// Creates the daily partitions of `flow_raw` and `flow_stats` for today and the
/// next `days_ahead` days and drops raw partitions older than `raw_retention_days`.
/// Returns how many partitions were created.
pub async fn ensure_partitions(
    pool: &PgPool,
    days_ahead: i32,
    raw_retention_days: i32,
) -> Result<i32, StoreError> {
    let created: i32 =
        sqlx::query_scalar("SELECT flowlens_ensure_partitions(current_date, $1, $2)")
            .bind(days_ahead + 1)
            .bind(raw_retention_days)
            .fetch_one(pool)
            .await?;
    Ok(created)
}
