//! EDGE: change events and alerts, from PostgreSQL to `kafka.topics.changes` and
//! `kafka.topics.alerts` (design §6.2), for consumers such as notifiers.
//!
//! The tables are the outbox (migration 16): whoever writes an event or an alert (the
//! graph writer of any instance, the API's edits, an editor acknowledging an alert),
//! the row gets its transaction's id and a sequence number, and one relay publishes
//! rows in that order past a cursor stored in `kafka_relay_cursors`. It reads only rows
//! of transactions older than the oldest one still running, so a transaction that
//! commits late is never passed over, and it moves the cursor only after the brokers
//! acknowledged every record of a batch: delivery is at least once (a relay that dies
//! between the two publishes its last batch again), nothing written is lost, and
//! nothing on the graph's write path waits for Kafka.
//!
//! Several `process` instances may run; one relays at a time, the one holding a
//! PostgreSQL advisory lock on its own connection. The others retry every few seconds
//! and take over when its connection goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prost::Message as _;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::statistics::Statistics;
use sqlx::PgConnection;
use sqlx::postgres::PgConnectOptions;
use uuid::Uuid;

use super::client::{KafkaError, producer_config};
use super::health::KafkaHealth;
use super::proto;
use crate::config::KafkaConfig;
use crate::store::outbox::{self, Cursors, sleep_unless};

/// Rows read per topic per pass.
const BATCH: i64 = 1000;
/// The pause between two passes that found nothing to publish.
const IDLE: Duration = Duration::from_millis(250);
/// The pause after a failure (database or brokers), and between two tries to lead.
const RETRY: Duration = Duration::from_secs(2);
/// The advisory lock the relaying instance holds (`hashtext` of a fixed name, so it
/// does not collide with another application's numbers by accident).
const LOCK: &str = "SELECT pg_try_advisory_lock(hashtext('flowlens.kafka.event-relay'))";

/// What the relay needs.
#[derive(Debug, Clone)]
pub struct RelaySetup {
    pub kafka: KafkaConfig,
    pub database_url: String,
    pub health: KafkaHealth,
}

/// The two outboxes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Changes,
    Alerts,
}

impl Stream {
    fn topic(self, k: &KafkaConfig) -> &str {
        match self {
            Self::Changes => &k.topics.changes,
            Self::Alerts => &k.topics.alerts,
        }
    }

    /// Rows past the cursor ($1 transaction, $2 sequence) of finished transactions, in
    /// outbox order, with their position as the last two columns.
    fn select(self) -> &'static str {
        match self {
            Self::Changes => {
                "SELECT id, change_type, entity_type, entity_id, detected_at,
                        before_state::text, after_state::text, relay_tx::text, relay_seq
                 FROM change_events
                 WHERE relay_tx IS NOT NULL
                   AND (relay_tx, relay_seq) > ($1::text::xid8, $2)
                   AND relay_tx < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY relay_tx, relay_seq
                 LIMIT $3"
            }
            Self::Alerts => {
                "SELECT id, change_event_id, rule_name, severity, title, description, status,
                        created_at, acknowledged_by, acknowledged_at, resolved_by, resolved_at,
                        relay_tx::text, relay_seq
                 FROM alerts
                 WHERE relay_tx IS NOT NULL
                   AND (relay_tx, relay_seq) > ($1::text::xid8, $2)
                   AND relay_tx < pg_snapshot_xmin(pg_current_snapshot())
                 ORDER BY relay_tx, relay_seq
                 LIMIT $3"
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Changes => "changes",
            Self::Alerts => "alerts",
        }
    }
}

/// A row made into its Kafka record.
struct Outgoing {
    key: String,
    payload: Vec<u8>,
    /// The row's outbox position.
    tx: String,
    seq: i64,
}

#[derive(sqlx::FromRow)]
struct ChangeRow {
    id: Uuid,
    change_type: String,
    entity_type: String,
    entity_id: Uuid,
    detected_at: DateTime<Utc>,
    before_state: Option<String>,
    after_state: Option<String>,
    relay_tx: String,
    relay_seq: i64,
}

#[derive(sqlx::FromRow)]
struct AlertRow {
    id: Uuid,
    change_event_id: Option<Uuid>,
    rule_name: Option<String>,
    severity: String,
    title: String,
    description: Option<String>,
    status: Option<String>,
    created_at: Option<DateTime<Utc>>,
    acknowledged_by: Option<String>,
    acknowledged_at: Option<DateTime<Utc>>,
    resolved_by: Option<String>,
    resolved_at: Option<DateTime<Utc>>,
    relay_tx: String,
    relay_seq: i64,
}

fn ms(t: Option<DateTime<Utc>>) -> u64 {
    t.and_then(|t| u64::try_from(t.timestamp_millis()).ok())
        .unwrap_or(0)
}

impl From<ChangeRow> for Outgoing {
    fn from(r: ChangeRow) -> Self {
        let event = proto::ChangeEvent {
            id: r.id.to_string(),
            change_type: r.change_type,
            entity_type: r.entity_type,
            entity_id: r.entity_id.to_string(),
            detected_at_ms: ms(Some(r.detected_at)),
            before_state: r.before_state.unwrap_or_default(),
            after_state: r.after_state.unwrap_or_default(),
        };
        Self {
            key: event.entity_id.clone(),
            payload: event.encode_to_vec(),
            tx: r.relay_tx,
            seq: r.relay_seq,
        }
    }
}

impl From<AlertRow> for Outgoing {
    fn from(r: AlertRow) -> Self {
        let alert = proto::Alert {
            id: r.id.to_string(),
            change_event_id: r.change_event_id.map(|u| u.to_string()).unwrap_or_default(),
            rule_name: r.rule_name.unwrap_or_default(),
            severity: r.severity,
            title: r.title,
            description: r.description.unwrap_or_default(),
            status: r.status.unwrap_or_default(),
            created_at_ms: ms(r.created_at),
            acknowledged_by: r.acknowledged_by.unwrap_or_default(),
            acknowledged_at_ms: ms(r.acknowledged_at),
            resolved_by: r.resolved_by.unwrap_or_default(),
            resolved_at_ms: ms(r.resolved_at),
        };
        Self {
            key: alert.id.clone(),
            payload: alert.encode_to_vec(),
            tx: r.relay_tx,
            seq: r.relay_seq,
        }
    }
}

/// The relay's producer context: statistics and errors go where the other clients' go.
struct Reporting(KafkaHealth);

impl ClientContext for Reporting {
    fn stats(&self, statistics: Statistics) {
        self.0.observe(&statistics);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.0.error(&error, reason);
    }
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.0.log(level, fac, log_message);
    }
}

/// Publishes change events and alerts until `stop` is set, then once more (what the
/// last flush wrote) and returns.
pub struct Relay {
    kafka: KafkaConfig,
    connect: PgConnectOptions,
    producer: FutureProducer<Reporting>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").finish_non_exhaustive()
    }
}

impl Relay {
    /// # Errors
    /// Kafka not configured, settings librdkafka refuses, or a database URL that does
    /// not parse.
    pub fn new(setup: RelaySetup) -> Result<Self, KafkaError> {
        let mut c = producer_config(&setup.kafka)?;
        c.set("statistics.interval.ms", "1000").set(
            "message.timeout.ms",
            setup.kafka.message_timeout_ms.to_string(),
        );
        for (name, value) in &setup.kafka.properties {
            c.set(name, value);
        }
        let producer = c.create_with_context(Reporting(setup.health))?;
        let connect = setup
            .database_url
            .parse::<PgConnectOptions>()
            .map_err(|e| KafkaError::Positions(e.to_string()))?
            .application_name("flowlens-event-relay");
        Ok(Self {
            kafka: setup.kafka,
            connect,
            producer,
        })
    }

    /// Runs until `stop` is set (checked between passes), then makes one last pass when
    /// it leads. Failures are counted, logged and retried; it never gives up.
    pub async fn run(self, stop: Arc<AtomicBool>) {
        let mut warned = false;
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            match self.lead().await {
                Ok(Some(conn)) => {
                    warned = false;
                    metrics::gauge!("flowlens_kafka_event_relay_leader").set(1.0);
                    tracing::info!("relaying change events and alerts to Kafka");
                    let why = self.relay(conn, &stop).await;
                    metrics::gauge!("flowlens_kafka_event_relay_leader").set(0.0);
                    match why {
                        Ok(()) => return,
                        Err(e) => {
                            metrics::counter!("flowlens_kafka_event_relay_errors_total",
                                "reason" => e.reason())
                            .increment(1);
                            tracing::warn!("event relay: {e}; retrying in {RETRY:?}");
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    metrics::counter!("flowlens_kafka_event_relay_errors_total",
                        "reason" => "database")
                    .increment(1);
                    if !warned {
                        tracing::warn!("event relay: PostgreSQL: {e}; retrying");
                        warned = true;
                    }
                }
            }
            if stopping {
                return;
            }
            sleep_unless(&stop, RETRY).await;
        }
    }

    /// A connection holding the relay's lock, or none when another instance has it.
    async fn lead(&self) -> Result<Option<PgConnection>, sqlx::Error> {
        outbox::lead(&self.connect, LOCK).await
    }

    /// Passes until `stop` (then one more); an error ends it, and the connection with
    /// it, which lets the lock go.
    async fn relay(&self, mut conn: PgConnection, stop: &AtomicBool) -> Result<(), RelayError> {
        let mut cursors = Vec::new();
        for stream in [Stream::Changes, Stream::Alerts] {
            cursors.push((
                stream,
                outbox::cursor(&mut conn, Cursors::Kafka, stream.topic(&self.kafka)).await?,
            ));
        }
        loop {
            let stopping = stop.load(Ordering::Relaxed);
            let mut busy = false;
            for (stream, at) in &mut cursors {
                let sent = self.pass(&mut conn, *stream, at).await?;
                busy |= sent == usize::try_from(BATCH).unwrap_or(usize::MAX);
            }
            if stopping {
                return Ok(());
            }
            if !busy {
                sleep_unless(stop, IDLE).await;
            }
        }
    }

    /// Publishes one batch of `stream` past `at` and moves `at` (in memory and in the
    /// database) past it once every record is acknowledged. The rows published.
    async fn pass(
        &self,
        conn: &mut PgConnection,
        stream: Stream,
        at: &mut (String, i64),
    ) -> Result<usize, RelayError> {
        let rows: Vec<Outgoing> = match stream {
            Stream::Changes => fetch::<ChangeRow>(conn, stream, at).await?,
            Stream::Alerts => fetch::<AlertRow>(conn, stream, at).await?,
        };
        let Some(last) = rows.last() else {
            return Ok(0);
        };
        let topic = stream.topic(&self.kafka);
        // Queue the whole batch, then wait for each acknowledgement.
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let record = FutureRecord::to(topic).key(&row.key).payload(&row.payload);
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| RelayError::Kafka(e))?;
            deliveries.push(delivery);
        }
        let mut bytes = 0;
        for (row, delivery) in rows.iter().zip(deliveries) {
            match delivery.await {
                Ok(Ok(_)) => bytes += row.payload.len() as u64,
                Ok(Err((e, _))) => return Err(RelayError::Kafka(e)),
                Err(_cancelled) => {
                    return Err(RelayError::Kafka(rdkafka::error::KafkaError::Canceled));
                }
            }
        }
        let position = (last.tx.clone(), last.seq);
        outbox::advance(conn, Cursors::Kafka, topic, &position)
            .await
            .map_err(RelayError::Database)?;
        *at = position;
        metrics::counter!("flowlens_kafka_events_published_total", "topic" => stream.label())
            .increment(rows.len() as u64);
        metrics::counter!("flowlens_kafka_events_published_bytes_total",
            "topic" => stream.label())
        .increment(bytes);
        Ok(rows.len())
    }
}

/// Why the leading relay stopped leading.
#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("PostgreSQL: {0}")]
    Database(#[from] sqlx::Error),
    #[error("Kafka: {0}")]
    Kafka(rdkafka::error::KafkaError),
}

impl RelayError {
    fn reason(&self) -> &'static str {
        match self {
            Self::Database(_) => "database",
            Self::Kafka(_) => "kafka",
        }
    }
}

/// One batch of `stream`'s rows past `at`, as records.
async fn fetch<R>(
    conn: &mut PgConnection,
    stream: Stream,
    at: &(String, i64),
) -> Result<Vec<Outgoing>, RelayError>
where
    R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin + Into<Outgoing>,
{
    Ok(sqlx::query_as::<_, R>(stream.select())
        .bind(&at.0)
        .bind(at.1)
        .bind(BATCH)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .map(Into::into)
        .collect())
}
