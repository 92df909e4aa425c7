//! The audit trail: every mutation through the API writes one `audit_logs` row in the
//! same transaction as the change, so the log cannot claim what did not happen nor
//! miss what did. Graph mutations also write a `change_events` row (whose trigger
//! notifies `flowlens_changes`), so WebSocket clients, caches and the analysis snapshot
//! hear about manual edits exactly as they hear about the daemon's.

use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::auth::Caller;

/// Records that `caller` did `action` to an entity.
pub async fn record(
    conn: &mut PgConnection,
    caller: &Caller,
    action: &str,
    entity_type: &str,
    entity_id: Option<Uuid>,
    details: Value,
) -> Result<(), sqlx::Error> {
    record_as(
        conn,
        &caller.subject,
        action,
        entity_type,
        entity_id,
        details,
    )
    .await
}

/// Records that `actor` did `action` to an entity, for work done on someone's behalf
/// after their request has been answered (a discovery scan writes assets as the admin
/// who started it, whose [`Caller`] is long gone).
pub async fn record_as(
    conn: &mut PgConnection,
    actor: &str,
    action: &str,
    entity_type: &str,
    entity_id: Option<Uuid>,
    details: Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO audit_logs (actor, action, entity_type, entity_id, details)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(actor)
    .bind(action)
    .bind(entity_type)
    .bind(entity_id)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a change of the graph (`new_asset`, `asset_changed`, `removed_dependency`,
/// ...) with its before and after states.
pub async fn change_event(
    conn: &mut PgConnection,
    change_type: &str,
    entity_type: &str,
    entity_id: Uuid,
    before: Option<Value>,
    after: Option<Value>,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO change_events (change_type, entity_type, entity_id, before_state, after_state)
         VALUES ($1, $2, $3, $4, $5) RETURNING id",
    )
    .bind(change_type)
    .bind(entity_type)
    .bind(entity_id)
    .bind(before)
    .bind(after)
    .fetch_one(conn)
    .await
}
