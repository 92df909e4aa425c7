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

pub mod outbox;

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
    connect_with(url, max_connections, std::time::Duration::ZERO).await
}

/// Connects like [`connect`], with `statement_timeout` set on every connection (zero
/// leaves the server's setting).
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    statement_timeout: std::time::Duration,
) -> Result<PgPool, StoreError> {
    let mut options: PgConnectOptions = url.parse().map_err(StoreError::Connect)?;
    if !statement_timeout.is_zero() {
        options = options.options([(
            "statement_timeout",
            format!("{}ms", statement_timeout.as_millis()),
        )]);
    }
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

/// Days of partitions kept ahead of today by [`maintain_partitions`].
pub const PARTITION_DAYS_AHEAD: i32 = 7;

/// What one partition upkeep did, and what is left in the default partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionUpkeep {
    /// Partitions created (days ahead, and days moved out of a default partition).
    pub created: i32,
    /// Rows moved from a default partition into their day's new partition.
    pub moved_rows: i64,
    /// Partitions dropped by retention.
    pub dropped: i32,
    /// Rows deleted from a default partition because their day is past retention.
    pub expired_rows: i64,
    /// Rows left in `flow_raw_default` and `flow_stats_default` afterwards.
    pub default_raw_rows: i64,
    pub default_stats_rows: i64,
}

/// Partition upkeep (migration 7, `flowlens_maintain_partitions`): daily partitions
/// for today and [`PARTITION_DAYS_AHEAD`] days after it, rows that landed in a default
/// partition moved into a partition of their day, partitions older than the retention
/// dropped (0 keeps them). Safe to run from several processes at once.
pub async fn maintain_partitions(
    pool: &PgPool,
    raw_retention_days: u32,
    stats_retention_days: u32,
) -> Result<PartitionUpkeep, StoreError> {
    let days = |d: u32| i32::try_from(d).unwrap_or(i32::MAX);
    let (created, moved_rows, dropped, expired_rows): (i32, i64, i32, i64) = sqlx::query_as(
        "SELECT created, moved_rows, dropped, expired_rows \
         FROM flowlens_maintain_partitions($1, $2, $3)",
    )
    .bind(PARTITION_DAYS_AHEAD)
    .bind(days(raw_retention_days))
    .bind(days(stats_retention_days))
    .fetch_one(pool)
    .await?;
    let (default_raw_rows, default_stats_rows): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM flow_raw_default), \
                (SELECT count(*) FROM flow_stats_default)",
    )
    .fetch_one(pool)
    .await?;
    Ok(PartitionUpkeep {
        created,
        moved_rows,
        dropped,
        expired_rows,
        default_raw_rows,
        default_stats_rows,
    })
}

/// Listening endpoints learnt before (`service_endpoints`, migration 10), most recently
/// confirmed first, at most `max`.
pub async fn learnt_listeners(
    pool: &PgPool,
    max: usize,
) -> Result<Vec<crate::resolve::fan_out::Endpoint>, StoreError> {
    let rows: Vec<(sqlx::types::ipnetwork::IpNetwork, i16, i32)> = sqlx::query_as(
        "SELECT ip, protocol, port FROM service_endpoints ORDER BY last_seen DESC LIMIT $1",
    )
    .bind(i64::try_from(max).unwrap_or(i64::MAX))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(ip, protocol, port)| {
            Some(crate::resolve::fan_out::Endpoint {
                ip: ip.ip(),
                protocol: u8::try_from(protocol).ok()?,
                port: u16::try_from(port).ok()?,
            })
        })
        .collect())
}
