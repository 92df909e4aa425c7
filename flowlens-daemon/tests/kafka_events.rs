//! The changes and alerts topics (design §6.2) against a real Kafka-protocol broker
//! (tansu) and a real PostgreSQL: the relay publishes every change event and alert
//! written after it first started, whoever wrote them, once each; a transaction that
//! commits after a later one is not passed over; an alert is published again when its
//! state changes; and when the relaying instance goes, another takes over from the
//! stored cursor.

#![allow(clippy::unwrap_used, reason = "tests")]

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use flowlens_daemon::config::KafkaConfig;
use flowlens_daemon::kafka::client::ensure_topics;
use flowlens_daemon::kafka::health::KafkaHealth;
use flowlens_daemon::kafka::proto;
use flowlens_daemon::kafka::relay::{Relay, RelaySetup};
use flowlens_daemon::testing::postgres::scratch;
use flowlens_daemon::testing::tansu::Tansu;
use prost::Message as _;
use sqlx::{Connection as _, PgPool};
use support::topics::{Record, TopicReader};
use uuid::Uuid;

const CHANGES: &str = "flowlens.changes-v1";
const ALERTS: &str = "flowlens.alerts-v1";

/// Inserts a `new_asset` event for a new entity on `conn`; its id.
async fn event(conn: &mut sqlx::PgConnection) -> Uuid {
    let entity = Uuid::new_v4();
    sqlx::query_scalar(
        "INSERT INTO change_events (change_type, entity_type, entity_id, after_state)
         VALUES ('new_asset', 'asset', $1, jsonb_build_object('name', 'db-' || $1::text))
         RETURNING id",
    )
    .bind(entity)
    .fetch_one(conn)
    .await
    .unwrap()
}

async fn alert(pool: &PgPool, event: Uuid) -> Uuid {
    sqlx::query_scalar(
        "INSERT INTO alerts (change_event_id, severity, title, description, rule_name)
         VALUES ($1, 'warning', 'New asset', 'seen in flows', 'new-asset') RETURNING id",
    )
    .bind(event)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Change event ids published, in the order read.
fn changes(records: &[Record]) -> Vec<Uuid> {
    records
        .iter()
        .filter(|r| r.topic == CHANGES)
        .map(|r| {
            let e = proto::ChangeEvent::decode(&r.payload[..]).unwrap();
            assert_eq!(r.key, e.entity_id.as_bytes(), "keyed by the entity");
            e.id.parse().unwrap()
        })
        .collect()
}

/// Alerts published, in the order read.
fn alerts(records: &[Record]) -> Vec<proto::Alert> {
    records
        .iter()
        .filter(|r| r.topic == ALERTS)
        .map(|r| {
            let a = proto::Alert::decode(&r.payload[..]).unwrap();
            assert_eq!(r.key, a.id.as_bytes(), "keyed by the alert");
            a
        })
        .collect()
}

fn relay(k: &KafkaConfig, url: &str) -> tokio::task::JoinHandle<()> {
    let relay = Relay::new(RelaySetup {
        kafka: k.clone(),
        database_url: url.to_owned(),
        health: KafkaHealth::default(),
    })
    .unwrap();
    tokio::spawn(relay.run(Arc::new(AtomicBool::new(false))))
}

async fn advisory_locks(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_and_alert_is_published_once_in_transaction_order() {
    let broker = Tansu::start();
    let db = scratch("kafka_events").await;
    let k = KafkaConfig {
        bootstrap_servers: broker.bootstrap(),
        // One partition: a reader sees the relay's order whole (with several, each
        // entity's events stay in order within its partition).
        partitions: 1,
        ..KafkaConfig::default()
    };
    ensure_topics(&k).await.unwrap();
    let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();

    // History: written before any relay started, not published.
    let history = event(&mut conn).await;

    let first = relay(&k, &db.url);
    let cursors = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM kafka_relay_cursors")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    for _ in 0..100 {
        if cursors().await == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        cursors().await,
        2,
        "the relay took the lead and its cursors"
    );
    // A second instance waits for the lock.
    let second = relay(&k, &db.url);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(advisory_locks(&db.pool).await, 1, "one relay at a time");

    // A transaction that began writing first and commits last.
    let mut late = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut late).await.unwrap();
    let early = event(&mut late).await;
    // A later transaction commits first: an event and the alert it raised.
    let mut tx = db.pool.begin().await.unwrap();
    let raised = event(&mut tx).await;
    tx.commit().await.unwrap();
    let alert_id = alert(&db.pool, raised).await;

    let mut reader = TopicReader::new(&k.bootstrap_servers, &[CHANGES, ALERTS]);
    // Held back behind the open transaction, which may still write an earlier row.
    reader.read_for(2);
    assert!(
        changes(&reader.records).is_empty(),
        "nothing passes a running writer: {:?}",
        changes(&reader.records)
    );
    sqlx::query("COMMIT").execute(&mut late).await.unwrap();
    assert!(
        reader.read_until(20, |r| changes(r).len() >= 2 && !alerts(r).is_empty()),
        "both events and the alert: {:?}",
        changes(&reader.records)
    );

    // The alert's new state is published again.
    sqlx::query(
        "UPDATE alerts SET status = 'acknowledged', acknowledged_by = 'oncall',
                acknowledged_at = now() WHERE id = $1",
    )
    .bind(alert_id)
    .execute(&db.pool)
    .await
    .unwrap();
    // An update that changes nothing the alert says is not.
    sqlx::query("UPDATE alerts SET rule_id = NULL WHERE id = $1")
        .bind(alert_id)
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(reader.read_until(20, |r| alerts(r).len() >= 2));

    // The leader goes (its connection, and the lock, with it); the other takes over.
    first.abort();
    let _ = first.await;
    let after = event(&mut conn).await;
    assert!(
        reader.read_until(30, |r| changes(r).contains(&after)),
        "the second relay publishes"
    );
    reader.read_for(2);

    assert_eq!(
        changes(&reader.records),
        [early, raised, after],
        "once each, in transaction order, history left out"
    );
    assert!(!changes(&reader.records).contains(&history));
    let published = alerts(&reader.records);
    assert_eq!(published.len(), 2, "{published:?}");
    let states: Vec<(&str, &str, &str)> = published
        .iter()
        .map(|a| {
            (
                a.status.as_str(),
                a.acknowledged_by.as_str(),
                a.change_event_id.as_str(),
            )
        })
        .collect();
    let raised_text = raised.to_string();
    assert_eq!(
        states,
        [
            ("open", "", raised_text.as_str()),
            ("acknowledged", "oncall", raised_text.as_str())
        ]
    );
    assert!(published.iter().all(|a| a.id == alert_id.to_string()
        && a.severity == "warning"
        && a.rule_name == "new-asset"
        && a.created_at_ms > 0));
    assert!(published[1].acknowledged_at_ms >= published[0].created_at_ms);
    let e = reader
        .records
        .iter()
        .filter(|r| r.topic == CHANGES)
        .map(|r| proto::ChangeEvent::decode(&r.payload[..]).unwrap())
        .find(|e| e.id == after.to_string())
        .unwrap();
    assert_eq!(e.change_type, "new_asset");
    assert_eq!(e.entity_type, "asset");
    assert!(e.before_state.is_empty());
    let state: HashMap<String, String> = serde_json::from_str(&e.after_state).unwrap();
    assert_eq!(state["name"], format!("db-{}", e.entity_id));
    assert!(e.detected_at_ms > 0);
    second.abort();
}
