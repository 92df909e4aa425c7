//! Where each `process` instance is in the raw topic, kept in PostgreSQL.
//!
//! Offsets are not committed to Kafka when records are read, nor when their flows are
//! decoded, but in the graph flush's own transaction (`kafka_positions`): the records
//! before a position are in the graph, those after it are not. A partition assigned
//! to an instance starts from here, so a record is never counted twice (its flows
//! were flushed with its position) nor lost (a record not flushed is read again).
//! Kafka's committed offsets follow what is durable, for lag and tooling.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::{PgPool, Postgres, Transaction};

/// One partition of one topic, as one consumer group reads it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionKey {
    pub group: String,
    pub topic: String,
    pub partition: i32,
}

/// The next offset to read, per partition.
pub type Positions = BTreeMap<PartitionKey, i64>;

/// Adds `newer` to `into`, keeping the later position of each partition.
pub fn merge(into: &mut Positions, newer: Positions) {
    for (k, v) in newer {
        into.entry(k).and_modify(|o| *o = (*o).max(v)).or_insert(v);
    }
}

/// Positions known to be in PostgreSQL, shared by the graph writer (which adds them
/// once a flush committed) and the consumer (which commits them to Kafka).
#[derive(Debug, Clone, Default)]
pub struct Durable(Arc<Mutex<Positions>>);

impl Durable {
    /// Records positions that are committed in PostgreSQL.
    pub fn extend(&self, p: &Positions) {
        let mut d = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        merge(&mut d, p.clone());
    }

    /// Takes what was recorded since the last call.
    pub fn take(&self) -> Positions {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Writes positions in a flush's transaction.
///
/// # Errors
/// The database's, which fail the flush (and roll its graph rows back with it).
pub async fn write(tx: &mut Transaction<'_, Postgres>, p: &Positions) -> sqlx::Result<()> {
    if p.is_empty() {
        return Ok(());
    }
    let (mut groups, mut topics, mut partitions, mut offsets) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (k, v) in p {
        groups.push(k.group.as_str());
        topics.push(k.topic.as_str());
        partitions.push(k.partition);
        offsets.push(*v);
    }
    sqlx::query(
        "INSERT INTO kafka_positions (consumer_group, topic, partition, next_offset)
         SELECT * FROM unnest($1::text[], $2::text[], $3::int4[], $4::int8[])
         ON CONFLICT (consumer_group, topic, partition)
         DO UPDATE SET next_offset = EXCLUDED.next_offset, updated_at = now()",
    )
    .bind(groups)
    .bind(topics)
    .bind(partitions)
    .bind(offsets)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The stored positions of `partitions` of `topic` for `group` (partitions never
/// flushed are absent).
///
/// # Errors
/// The database's.
pub async fn read(
    pool: &PgPool,
    group: &str,
    topic: &str,
    partitions: &[i32],
) -> sqlx::Result<BTreeMap<i32, i64>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT partition, next_offset FROM kafka_positions
         WHERE consumer_group = $1 AND topic = $2 AND partition = ANY($3)",
    )
    .bind(group)
    .bind(topic)
    .bind(partitions)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_keeps_the_later_position() {
        let k = |p| PartitionKey {
            group: "g".into(),
            topic: "t".into(),
            partition: p,
        };
        let mut a = Positions::from([(k(0), 10), (k(1), 5)]);
        merge(&mut a, Positions::from([(k(0), 7), (k(1), 9), (k(2), 1)]));
        assert_eq!(a, Positions::from([(k(0), 10), (k(1), 9), (k(2), 1)]));
        let d = Durable::default();
        d.extend(&a);
        assert_eq!(d.take(), a);
        assert!(d.take().is_empty());
    }
}
