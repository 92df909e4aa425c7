//! EDGE: what the readers of the outboxes share (migration 16: `change_events` and
//! `alerts` carry their writing transaction and a sequence). The Kafka relay
//! ([`crate::kafka::relay`]) and the notifier ([`crate::notify`]) each keep cursors in a
//! table of their own, lead through an advisory lock, and pause between passes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::ConnectOptions as _;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection as _, PgConnection};

/// Where a reader keeps its cursors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cursors {
    /// `kafka_relay_cursors`, one per topic.
    Kafka,
    /// `notification_cursors`.
    Notifications,
}

impl Cursors {
    fn insert(self) -> &'static str {
        match self {
            Self::Kafka => {
                "INSERT INTO kafka_relay_cursors (topic, relay_tx, relay_seq)
                 VALUES ($1, pg_snapshot_xmin(pg_current_snapshot()), 0)
                 ON CONFLICT (topic) DO NOTHING"
            }
            Self::Notifications => {
                "INSERT INTO notification_cursors (name, relay_tx, relay_seq)
                 VALUES ($1, pg_snapshot_xmin(pg_current_snapshot()), 0)
                 ON CONFLICT (name) DO NOTHING"
            }
        }
    }

    fn update(self) -> &'static str {
        match self {
            Self::Kafka => {
                "UPDATE kafka_relay_cursors SET relay_tx = $2::text::xid8, relay_seq = $3,
                        updated_at = now()
                 WHERE topic = $1"
            }
            Self::Notifications => {
                "UPDATE notification_cursors SET relay_tx = $2::text::xid8, relay_seq = $3,
                        updated_at = now()
                 WHERE name = $1"
            }
        }
    }

    fn select(self) -> &'static str {
        match self {
            Self::Kafka => {
                "SELECT relay_tx::text, relay_seq FROM kafka_relay_cursors WHERE topic = $1"
            }
            Self::Notifications => {
                "SELECT relay_tx::text, relay_seq FROM notification_cursors WHERE name = $1"
            }
        }
    }
}

/// The stored cursor `name` of `table`; one read for the first time starts at the
/// present (rows of transactions that ended before it are history).
pub async fn cursor(
    conn: &mut PgConnection,
    table: Cursors,
    name: &str,
) -> Result<(String, i64), sqlx::Error> {
    sqlx::query(table.insert())
        .bind(name)
        .execute(&mut *conn)
        .await?;
    sqlx::query_as(table.select())
        .bind(name)
        .fetch_one(&mut *conn)
        .await
}

/// Moves the cursor `name` of `table` to `position` (a row's `relay_tx` as text and
/// `relay_seq`), on `conn` (a transaction, when the move must commit with other work).
pub async fn advance(
    conn: &mut PgConnection,
    table: Cursors,
    name: &str,
    position: &(String, i64),
) -> Result<(), sqlx::Error> {
    sqlx::query(table.update())
        .bind(name)
        .bind(&position.0)
        .bind(position.1)
        .execute(conn)
        .await
        .map(drop)
}

/// A connection holding the advisory lock `lock` (a `SELECT pg_try_advisory_lock(..)`),
/// or none when another instance has it. The lock goes with the connection.
pub async fn lead(
    connect: &PgConnectOptions,
    lock: &str,
) -> Result<Option<PgConnection>, sqlx::Error> {
    let mut conn = connect.connect().await?;
    let got: bool = sqlx::query_scalar(lock).fetch_one(&mut conn).await?;
    if got {
        Ok(Some(conn))
    } else {
        conn.close().await.ok();
        Ok(None)
    }
}

/// Sleeps `d`, in steps, unless `stop` is set meanwhile.
pub async fn sleep_unless(stop: &AtomicBool, d: Duration) {
    let mut left = d;
    while !left.is_zero() && !stop.load(Ordering::Relaxed) {
        let nap = left.min(Duration::from_millis(50));
        tokio::time::sleep(nap).await;
        left -= nap;
    }
}
