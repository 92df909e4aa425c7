//! EDGE: what a scan writes to PostgreSQL: its `discovery_scans` row (state and
//! progress) and the assets of the hosts it found.
//!
//! Assets follow the schema's rule that an address belongs to one asset
//! (`asset_addresses`, kept by triggers on `assets`). A host's address that an asset
//! already owns refreshes that asset, whoever made it; an unowned address gets a new
//! `scan` asset. Another writer (the daemon, a person, a parallel scan) may claim the
//! address between our look-up and our insert: the insert trigger then raises
//! `unique_violation`, which rolls back to a savepoint and turns into an update of the
//! winner's asset.
//!
//! Every asset write is a mutation made on an admin's request, so like any other it
//! writes an `audit_logs` row (as the admin who asked for the scan) in its own
//! transaction, beside the `change_events` row that tells the rest of the system.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::outcome::{OPEN_PORTS_TAG, Tally, merge_open_ports};
use crate::audit;
use crate::routes::assets::{ASSET_SELECT, Asset};

/// What writing one host did to the assets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssetWrite {
    Created(Uuid),
    Updated(Uuid),
}

/// Confidence of a scan-made asset: something answered on that address, but nothing
/// says what it is or whether it is one machine (`manual` assets get 1.0).
pub const SCAN_CONFIDENCE: f32 = 0.6;

/// Look-up-then-insert rounds before giving up on an address that keeps changing
/// owner (it would take an asset created and deleted between every two statements).
const ATTEMPTS: usize = 3;

/// The scan an asset write belongs to, as its audit rows name it.
#[derive(Debug, Clone, Copy)]
pub struct ScanRef<'a> {
    pub id: Uuid,
    /// The admin who asked for the scan: the actor of what it writes.
    pub requested_by: &'a str,
}

/// Why a host's asset could not be written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the asset owning {ip} changed {ATTEMPTS} times while the scan wrote it")]
    Contended { ip: IpAddr },
}

/// Creates or refreshes the asset owning `ip`, in one transaction with its audit row
/// and change event. `probed` are the ports `scan` tried on it, `open` those that
/// accepted.
pub async fn record_host(
    pool: &PgPool,
    scan: ScanRef<'_>,
    ip: IpAddr,
    probed: &[u16],
    open: &[u16],
) -> Result<AssetWrite, StoreError> {
    let mut tx = pool.begin().await?;
    let address = IpNetwork::from(ip);
    for _ in 0..ATTEMPTS {
        let owner: Option<Uuid> =
            sqlx::query_scalar("SELECT asset_id FROM asset_addresses WHERE ip = $1")
                .bind(address)
                .fetch_optional(&mut *tx)
                .await?;
        let written = match owner {
            Some(id) => update(&mut tx, id, probed, open).await?,
            None => insert(&mut tx, address, probed, open).await?,
        };
        if let Some(write) = written {
            let (action, id) = match write {
                AssetWrite::Created(id) => ("create", id),
                AssetWrite::Updated(id) => ("update", id),
            };
            audit::record_as(
                &mut tx,
                scan.requested_by,
                action,
                "asset",
                Some(id),
                json!({ "scan_id": scan.id, "open_ports": open }),
            )
            .await?;
            tx.commit().await?;
            return Ok(write);
        }
    }
    Err(StoreError::Contended { ip })
}

/// Refreshes `last_seen` and the `open_ports` tag; `None` when the asset vanished
/// since the look-up.
async fn update(
    conn: &mut PgConnection,
    id: Uuid,
    probed: &[u16],
    open: &[u16],
) -> Result<Option<AssetWrite>, sqlx::Error> {
    let Some(tags): Option<Value> = sqlx::query_scalar(
        "SELECT COALESCE(tags, '{}'::jsonb) FROM assets WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };
    let merged = merge_open_ports(&tags, probed, open);
    sqlx::query(
        "UPDATE assets SET last_seen = GREATEST(last_seen, now()), updated_at = now(),
             tags = $2
         WHERE id = $1",
    )
    .bind(id)
    .bind(&merged)
    .execute(&mut *conn)
    .await?;
    // A refreshed last_seen is not news; a changed set of services is.
    if tags.get(OPEN_PORTS_TAG) != merged.get(OPEN_PORTS_TAG) {
        audit::change_event(
            conn,
            "asset_changed",
            "asset",
            id,
            Some(json!({ "tags": tags })),
            Some(json!({ "tags": merged })),
        )
        .await?;
    }
    Ok(Some(AssetWrite::Updated(id)))
}

/// Inserts a `scan` asset for an unowned address; `None` when another writer claimed
/// the address first (its trigger says `unique_violation`).
async fn insert(
    conn: &mut PgConnection,
    address: IpNetwork,
    probed: &[u16],
    open: &[u16],
) -> Result<Option<AssetWrite>, sqlx::Error> {
    let tags = merge_open_ports(&json!({}), probed, open);
    // A savepoint, so the violation does not abort the whole transaction.
    sqlx::query("SAVEPOINT scan_insert")
        .execute(&mut *conn)
        .await?;
    let inserted: Result<Uuid, sqlx::Error> = sqlx::query_scalar(
        "INSERT INTO assets (name, asset_type, ip_addresses, tags, first_seen, last_seen,
             discovery_source, confidence)
         VALUES ($1, 'unknown', ARRAY[$2::inet], $3, now(), now(), 'scan', $4)
         RETURNING id",
    )
    .bind(address.ip().to_string())
    .bind(address)
    .bind(&tags)
    .bind(SCAN_CONFIDENCE)
    .fetch_one(&mut *conn)
    .await;
    let id = match inserted {
        Ok(id) => id,
        Err(e) if is_unique_violation(&e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT scan_insert")
                .execute(&mut *conn)
                .await?;
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    sqlx::query("RELEASE SAVEPOINT scan_insert")
        .execute(&mut *conn)
        .await?;
    let asset = sqlx::query_as::<_, Asset>(&format!("{ASSET_SELECT} WHERE a.id = $1"))
        .bind(id)
        .fetch_one(&mut *conn)
        .await?;
    audit::change_event(
        conn,
        "new_asset",
        "asset",
        id,
        None,
        serde_json::to_value(&asset).ok(),
    )
    .await?;
    Ok(Some(AssetWrite::Created(id)))
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(sqlx::error::DatabaseError::code)
        .is_some_and(|c| c == "23505")
}

/// queued -> running; false when the scan is no longer queued (it was cancelled
/// before its task began), so it must not run.
pub async fn mark_running(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE discovery_scans SET status = 'running', started_at = now(),
             heartbeat_at = now()
         WHERE id = $1 AND status = 'queued'",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Writes the counters (and the heartbeat) and merges the open ports found since the
/// last write; with `completed`, also ends the scan, unless it was cancelled meanwhile
/// (the cancellation, already answered to its caller, stands). Returns whether the
/// scan is still queued or running: false once it has ended, here or elsewhere (a
/// cancellation, or another instance failing it as orphaned after its heartbeat
/// stalled), and then the scan must stop probing.
pub async fn write_progress(
    pool: &PgPool,
    id: Uuid,
    tally: &mut Tally,
    completed: bool,
) -> Result<bool, sqlx::Error> {
    let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let still: Option<bool> = sqlx::query_scalar(
        "UPDATE discovery_scans SET hosts_scanned = $2, hosts_up = $3, assets_created = $4,
             assets_updated = $5, open_ports = open_ports || $6,
             status = CASE WHEN $7 AND status = 'running' THEN 'completed' ELSE status END,
             finished_at = CASE WHEN $7 AND status = 'running' THEN now() ELSE finished_at END,
             heartbeat_at = now()
         WHERE id = $1
         RETURNING status IN ('queued', 'running')",
    )
    .bind(id)
    .bind(count(tally.hosts_scanned))
    .bind(count(tally.hosts_up))
    .bind(count(tally.assets_created))
    .bind(count(tally.assets_updated))
    .bind(tally.take_open_ports())
    .bind(completed)
    .fetch_optional(pool)
    .await?;
    Ok(still.unwrap_or(false))
}

/// Ends a scan that could not finish, with a message any viewer may read.
pub async fn mark_failed(pool: &PgPool, id: Uuid, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE discovery_scans SET status = 'failed', error = $2, finished_at = now()
         WHERE id = $1 AND status IN ('queued', 'running')",
    )
    .bind(id)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Fails the scans whose instance stopped saying it is alive: no heartbeat (written
/// with every progress update, each second while a scan runs) for `stale_after`.
/// Their tasks died with their API process, and a row saying `running` forever would
/// mislead; scans of other instances that are alive are left alone (several API
/// instances share one database). Run at start-up and periodically by every instance.
pub async fn fail_orphaned(
    pool: &PgPool,
    stale_after: std::time::Duration,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE discovery_scans SET status = 'failed', finished_at = now(),
             error = 'the API instance running it stopped'
         WHERE status IN ('queued', 'running')
           AND COALESCE(heartbeat_at, created_at) < now() - make_interval(secs => $1)",
    )
    .bind(stale_after.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}
