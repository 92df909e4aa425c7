//! EDGE: the `ingest` side of the raw topic: received datagrams produced as
//! `flowlens.v1.RawDatagram` records, keyed by exporter.
//!
//! Receiving never waits for the broker: librdkafka's queue holds at most
//! `kafka.max_buffered_datagrams` records (and `kafka.max_buffered_mib`) while the
//! broker is slow or away, and a datagram that does not fit is refused at once, for
//! the receive thread to count as dropped for its exporter. A record the broker never
//! took within `kafka.message_timeout_ms` is counted dropped for its exporter too when
//! librdkafka gives it up, so at the ingest side received = produced + sampled out +
//! dropped (plus what is in flight).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::types::RDKafkaErrorCode;

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::statistics::Statistics;

use super::client::{KafkaError, producer_config};
use super::health::KafkaHealth;
use super::raw;
use crate::config::KafkaConfig;
use crate::ingest::datagram::{RawDatagram, exporter_ip};
use crate::telemetry::metrics as m;

/// Shards of the per-exporter record numbers.
const SEQUENCE_SHARDS: usize = 64;

/// Produces received datagrams to the raw topic.
pub struct RawProducer {
    producer: ThreadedProducer<Deliveries>,
    topic: String,
    ingest_id: String,
    /// When this producer started (ms since the epoch), in every record.
    started_ms: u64,
    /// The last record number given out per exporter, in shards by exporter; a shard
    /// stays locked while its record is queued, so each exporter's records enter its
    /// partition in the order of their numbers (what consumers' copy detection needs).
    sequences: Box<[Mutex<HashMap<IpAddr, u64>>]>,
    max_in_flight: usize,
}

impl std::fmt::Debug for RawProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawProducer")
            .field("topic", &self.topic)
            .field("ingest_id", &self.ingest_id)
            .finish_non_exhaustive()
    }
}

impl RawProducer {
    /// A producer for `kafka.topics.raw` (librdkafka's own thread serves deliveries).
    ///
    /// # Errors
    /// Kafka not configured, or settings librdkafka refuses.
    pub fn new(k: &KafkaConfig, health: KafkaHealth) -> Result<Self, KafkaError> {
        let mut c = producer_config(k)?;
        c.set("statistics.interval.ms", "1000")
            .set(
                "queue.buffering.max.messages",
                k.max_buffered_datagrams.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                (u64::from(k.max_buffered_mib) * 1024).to_string(),
            )
            .set("message.timeout.ms", k.message_timeout_ms.to_string());
        for (name, value) in &k.properties {
            c.set(name, value);
        }
        let producer = c.create_with_context(Deliveries {
            tally: Mutex::default(),
            health,
        })?;
        Ok(Self {
            producer,
            topic: k.topics.raw.clone(),
            ingest_id: k.instance_name(),
            started_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            sequences: (0..SEQUENCE_SHARDS).map(|_| Mutex::default()).collect(),
            max_in_flight: usize::try_from(k.max_buffered_datagrams).unwrap_or(usize::MAX),
        })
    }

    /// Queues a datagram for the broker; `false` when the buffer is full (the caller
    /// counts it dropped). Never waits.
    pub fn send(&self, d: &RawDatagram) -> bool {
        let key = raw::key(d.exporter);
        let shard = usize::from(key[15]) % SEQUENCE_SHARDS;
        let Some(lock) = self.sequences.get(shard) else {
            return false;
        };
        let mut numbers = lock.lock().unwrap_or_else(PoisonError::into_inner);
        let number = numbers.entry(d.exporter).or_insert(0);
        *number += 1;
        let origin = raw::Origin {
            ingest_id: self.ingest_id.clone(),
            started_ms: self.started_ms,
            sequence: *number,
        };
        let payload = raw::encode(d, &origin);
        let record = BaseRecord::to(&self.topic).key(&key).payload(&payload);
        let sent = self.producer.send(record);
        drop(numbers);
        match sent {
            Ok(()) => true,
            Err((e, _)) => {
                let reason = match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::QueueFull) => "buffer_full",
                    _ => "refused",
                };
                metrics::counter!("flowlens_kafka_produce_errors_total", "reason" => reason)
                    .increment(1);
                false
            }
        }
    }

    /// How full the producer's buffer is (0.0 - 1.0).
    pub fn fill(&self) -> f64 {
        let n = usize::try_from(self.producer.in_flight_count()).unwrap_or(0);
        #[expect(clippy::cast_precision_loss, reason = "a ratio of queue sizes")]
        let f = n as f64 / self.max_in_flight.max(1) as f64;
        metrics::gauge!("flowlens_kafka_producer_buffer_fill").set(f);
        f.min(1.0)
    }

    /// Publishes the delivery counts tallied so far (the control loop calls it; the
    /// delivery reports publish too, at most every 250 ms).
    pub fn publish(&self) {
        self.producer.context().publish();
    }

    /// Records not yet acknowledged by the broker.
    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }

    /// Waits up to `timeout` for what is buffered to reach the broker (at shutdown);
    /// what is still buffered after it is counted as dropped when librdkafka gives it
    /// up. Publishes the delivery counts.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, in_flight = self.in_flight(),
                "datagrams still buffered for Kafka at shutdown");
        }
        self.producer.context().publish();
    }
}

/// Delivery reports, tallied per exporter and published a few times a second.
struct Deliveries {
    tally: Mutex<Tally>,
    health: KafkaHealth,
}

#[derive(Default)]
struct Tally {
    /// Per exporter: (produced, given up).
    per_exporter: HashMap<IpAddr, (u64, u64)>,
    bytes: u64,
    published: Option<Instant>,
}

impl Deliveries {
    fn publish(&self) {
        let mut t = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        t.publish();
    }
}

impl Tally {
    fn publish(&mut self) {
        for (exporter, (produced, failed)) in self.per_exporter.drain() {
            if produced > 0 {
                metrics::counter!("flowlens_kafka_datagrams_produced_total",
                    "exporter" => exporter.to_string())
                .increment(produced);
            }
            // Given up by librdkafka (the broker away past message_timeout_ms): lost
            // for the exporter, and counted so.
            m::ingest_dropped(exporter, failed);
        }
        metrics::counter!("flowlens_kafka_produced_bytes_total").increment(self.bytes);
        self.bytes = 0;
        self.published = Some(Instant::now());
    }
}

impl ClientContext for Deliveries {
    fn stats(&self, statistics: Statistics) {
        self.health.observe(&statistics);
    }
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.health.log(level, fac, log_message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.health.error(&error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        let (message, ok) = match result {
            Ok(m) => (m, true),
            Err((e, m)) => {
                metrics::counter!("flowlens_kafka_produce_errors_total", "reason" => "delivery")
                    .increment(1);
                tracing::debug!(error = %e, "a datagram was not delivered to Kafka");
                (m, false)
            }
        };
        let exporter = message
            .key()
            .and_then(|k| <[u8; 16]>::try_from(k).ok())
            .map(exporter_ip);
        let mut t = self.tally.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(exporter) = exporter {
            let e = t.per_exporter.entry(exporter).or_default();
            if ok {
                e.0 += 1;
            } else {
                e.1 += 1;
            }
        }
        if ok {
            t.bytes += message.payload().map_or(0, |p| p.len() as u64);
        }
        if t.published
            .is_none_or(|p| p.elapsed() >= Duration::from_millis(250))
        {
            t.publish();
        }
    }
}
