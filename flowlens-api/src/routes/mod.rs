//! One module per resource, each with `router() -> OpenApiRouter<AppState>`, so every
//! route the server has is also in the OpenAPI document.

pub mod admin;
pub mod alerts;
pub mod analysis;
pub mod assets;
pub mod changes;
pub mod dependencies;
pub mod discovery;
pub mod integrations;
pub mod session;
pub mod topology;

use serde::{Deserialize, Deserializer};

use crate::error::ApiError;

/// For PATCH bodies: absent -> `None`, `null` -> `Some(None)`, a value -> `Some(Some)`.
#[expect(
    clippy::option_option,
    reason = "PATCH must tell an absent field from an explicit null"
)]
pub(crate) fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// Escapes LIKE wildcards so a search for `50%` finds "50%", not everything.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The fields of `entity` named by `keys`, as a JSON object: the before and after
/// states of a change event say only what changed.
pub(crate) fn pick_fields<'k>(
    entity: &impl serde::Serialize,
    keys: impl IntoIterator<Item = &'k String>,
) -> serde_json::Value {
    let full = serde_json::to_value(entity).unwrap_or(serde_json::Value::Null);
    serde_json::Value::Object(
        keys.into_iter()
            .filter_map(|k| full.get(k).map(|v| (k.clone(), v.clone())))
            .collect(),
    )
}

/// Locks a row of `table` for this transaction (`FOR UPDATE`), or answers 404: two
/// requests changing or deleting one row take turns, and the later one sees the
/// earlier one's result (a row deleted meanwhile is not found), so the change feed and
/// the audit log record each change once.
pub(crate) async fn lock_row(
    conn: &mut sqlx::PgConnection,
    table: &'static str,
    what: &'static str,
    id: uuid::Uuid,
) -> Result<(), ApiError> {
    sqlx::query(&format!("SELECT 1 FROM {table} WHERE id = $1 FOR UPDATE"))
        .bind(id)
        .fetch_optional(conn)
        .await?
        .map(|_| ())
        .ok_or_else(|| ApiError::not_found(what, id))
}

/// 422 listing every problem, or Ok when there are none.
pub(crate) fn problems(problems: &[String]) -> Result<(), ApiError> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ApiError::Unprocessable(problems.join("; ")))
    }
}
