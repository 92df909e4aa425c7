//! EDGE: the `process` side of the raw topic: a consumer in `kafka.consumer_group`
//! that hands each datagram to this instance's decode workers, in order per partition
//! (so one exporter's templates come before the data that needs them).
//!
//! Delivery is exactly once into the graph: the consumer sends a [`Mark`] with its
//! positions down the decode queues every `kafka.mark_interval_ms`; the graph flush
//! that holds the flows before a mark writes the mark's positions in its transaction
//! (`kafka_positions`). Partitions assigned to this instance start at the positions
//! stored there, and before partitions are taken away the instance flushes what it
//! holds of them, so their next owner starts where this one stopped. Kafka's own
//! committed offsets follow what is durable, for lag and tools.
//!
//! [`Mark`]: crate::ingest::datagram::Mark

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, ConsumerContext};
use rdkafka::message::Message as _;
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use sqlx::PgPool;

use super::client::{KafkaError, consumer_config};
use super::health::KafkaHealth;
use super::positions::{self, Durable, PartitionKey, Positions};
use super::raw;
use crate::config::KafkaConfig;
use crate::ingest::datagram::Dispatcher;

/// How long partitions being taken away wait for their flush.
const REVOKE_FLUSH_TIMEOUT: Duration = Duration::from_mins(1);

/// What the consumer thread needs.
pub struct ConsumerSetup {
    pub kafka: KafkaConfig,
    /// The graph's database, where positions are read from (none: Kafka's committed
    /// offsets, for outputs other than the graph).
    pub database_url: Option<String>,
    pub health: KafkaHealth,
}

/// Totals of one consumer's run.
#[derive(Debug, Default, Clone, Copy)]
pub struct ConsumeTotals {
    pub records: u64,
    pub undecodable: u64,
    /// Records that were copies of one already read (see [`raw::Copies`]).
    pub copies: u64,
}

/// Starts the consumer thread; it stops when `stop` is set, after handing everything
/// it read to the workers and flushing (through the rebalance at close).
///
/// # Errors
/// Kafka not configured, settings librdkafka refuses, or a database that cannot be
/// reached for positions.
pub fn spawn(
    setup: ConsumerSetup,
    dispatcher: Dispatcher,
    durable: Durable,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<ConsumeTotals>, KafkaError> {
    let k = &setup.kafka;
    let mut c = consumer_config(k, &k.consumer_group)?;
    c.set("statistics.interval.ms", "1000");
    for (name, value) in &k.properties {
        c.set(name, value);
    }
    let database = match &setup.database_url {
        Some(url) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(KafkaError::Io)?;
            let pool = rt
                .block_on(crate::store::connect(url, 2))
                .map_err(|e| KafkaError::Positions(e.to_string()))?;
            Some((rt, pool))
        }
        None => None,
    };
    let context = Rebalancing {
        group: k.consumer_group.clone(),
        topic: k.topics.raw.clone(),
        dispatcher: dispatcher.clone(),
        dirty: Mutex::default(),
        assigned: Mutex::default(),
        database,
        health: setup.health,
    };
    let consumer: BaseConsumer<Rebalancing> = c.create_with_context(context)?;
    consumer.subscribe(&[k.topics.raw.as_str()])?;
    let mark_every = Duration::from_millis(k.mark_interval_ms.max(1));
    std::thread::Builder::new()
        .name("flowlens-consume".into())
        .spawn(move || consume_loop(&consumer, &dispatcher, &durable, &stop, mark_every))
        .map_err(KafkaError::Io)
}

fn consume_loop(
    consumer: &BaseConsumer<Rebalancing>,
    dispatcher: &Dispatcher,
    durable: &Durable,
    stop: &AtomicBool,
    mark_every: Duration,
) -> ConsumeTotals {
    let ctx = consumer.context();
    let mut totals = ConsumeTotals::default();
    let mut tally = Tally::default();
    let mut last_mark = Instant::now();
    let mut copies = raw::Copies::default();
    while !stop.load(Ordering::Relaxed) {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(msg)) => {
                totals.records += 1;
                ctx.advance(msg.partition(), msg.offset());
                let payload = msg.payload().unwrap_or(&[]);
                tally.bytes += payload.len() as u64;
                match raw::decode(payload) {
                    Ok((d, origin)) if copies.is_copy(d.exporter, &origin) => {
                        totals.copies += 1;
                        tally.copies += 1;
                    }
                    Ok((d, _)) => {
                        *tally.per_exporter.entry(d.exporter).or_default() += 1;
                        if !dispatcher.dispatch_wait(d) {
                            break;
                        }
                    }
                    Err(e) => {
                        totals.undecodable += 1;
                        tally.undecodable += 1;
                        if totals.undecodable.is_power_of_two() {
                            tracing::warn!(error = %e, partition = msg.partition(),
                                offset = msg.offset(), skipped = totals.undecodable,
                                "a raw-topic record is not a datagram; skipped");
                        }
                    }
                }
            }
            Some(Err(e)) => {
                metrics::counter!("flowlens_kafka_consumer_errors_total").increment(1);
                ctx.health.error(&e, "consuming");
            }
            None => {}
        }
        if last_mark.elapsed() >= mark_every {
            last_mark = Instant::now();
            // Sent when nothing was read too: the graph hands its windows over at
            // marks only.
            if !dispatcher.mark(ctx.take_dirty(), None) {
                break;
            }
            tally.publish();
            commit_durable(consumer, durable);
        }
    }
    // What was read goes with the last flush; the close that follows (when the
    // consumer is dropped) revokes the partitions, which flushes and waits.
    dispatcher.mark(ctx.take_dirty(), None);
    tally.publish();
    totals
}

/// Commits to Kafka what PostgreSQL holds, for the partitions this instance owns.
fn commit_durable(consumer: &BaseConsumer<Rebalancing>, durable: &Durable) {
    let done = durable.take();
    if done.is_empty() {
        return;
    }
    let ctx = consumer.context();
    let owned = ctx
        .assigned
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let mut tpl = TopicPartitionList::new();
    for (k, next) in done {
        if k.group == ctx.group && k.topic == ctx.topic && owned.contains(&k.partition) {
            let _ = tpl.add_partition_offset(&k.topic, k.partition, Offset::Offset(next));
        }
    }
    if tpl.count() > 0
        && let Err(e) = consumer.commit(&tpl, CommitMode::Async)
    {
        tracing::debug!(error = %e, "committing offsets to Kafka (PostgreSQL has them)");
    }
}

/// Consumed records, published with each mark.
#[derive(Default)]
struct Tally {
    per_exporter: HashMap<IpAddr, u64>,
    bytes: u64,
    undecodable: u64,
    copies: u64,
}

impl Tally {
    fn publish(&mut self) {
        for (exporter, n) in self.per_exporter.drain() {
            metrics::counter!("flowlens_kafka_datagrams_consumed_total",
                "exporter" => exporter.to_string())
            .increment(n);
        }
        metrics::counter!("flowlens_kafka_consumed_bytes_total").increment(self.bytes);
        metrics::counter!("flowlens_kafka_records_undecodable_total").increment(self.undecodable);
        metrics::counter!("flowlens_kafka_records_duplicate_total").increment(self.copies);
        self.bytes = 0;
        self.undecodable = 0;
        self.copies = 0;
    }
}

/// The consumer's context: positions, and what happens when partitions move.
struct Rebalancing {
    group: String,
    topic: String,
    dispatcher: Dispatcher,
    /// Positions read since the last mark.
    dirty: Mutex<Positions>,
    /// Partitions of the raw topic this instance owns.
    assigned: Mutex<BTreeSet<i32>>,
    database: Option<(tokio::runtime::Runtime, PgPool)>,
    health: KafkaHealth,
}

impl Rebalancing {
    fn advance(&self, partition: i32, offset: i64) {
        let key = PartitionKey {
            group: self.group.clone(),
            topic: self.topic.clone(),
            partition,
        };
        self.dirty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, offset + 1);
    }

    fn take_dirty(&self) -> Positions {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Starts each assigned partition at its stored position.
    fn assign(&self, base: &BaseConsumer<Self>, tpl: &mut TopicPartitionList) {
        let partitions: Vec<i32> = tpl
            .elements_for_topic(&self.topic)
            .iter()
            .map(rdkafka::topic_partition_list::TopicPartitionListElem::partition)
            .collect();
        let stored = self.stored(&partitions);
        for (p, next) in &stored {
            if let Err(e) = tpl.set_partition_offset(&self.topic, *p, Offset::Offset(*next)) {
                tracing::error!(error = %e, partition = p, "setting a partition's start");
            }
        }
        if let Err(e) = base.assign(tpl) {
            tracing::error!(error = %e, "assigning partitions");
        }
        self.assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(partitions.iter().copied());
        metrics::counter!("flowlens_kafka_rebalances_total", "kind" => "assign").increment(1);
        tracing::info!(
            ?partitions,
            from_postgresql = stored.len(),
            "raw-topic partitions assigned"
        );
    }

    /// Positions stored in PostgreSQL, tried for a while: starting from Kafka's
    /// offsets instead (which follow PostgreSQL's, never lead) may count again what
    /// the last flush wrote, so it is counted when it happens.
    fn stored(&self, partitions: &[i32]) -> Vec<(i32, i64)> {
        let Some((rt, pool)) = &self.database else {
            return Vec::new();
        };
        for attempt in 0..10 {
            match rt.block_on(positions::read(pool, &self.group, &self.topic, partitions)) {
                Ok(p) => return p.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(error = %e, attempt, "reading raw-topic positions");
                    std::thread::park_timeout(Duration::from_secs(1));
                }
            }
        }
        metrics::counter!("flowlens_kafka_position_read_failures_total").increment(1);
        tracing::error!(
            "raw-topic positions unreadable: starting from Kafka's committed offsets, \
             which may count again what the last flush wrote"
        );
        Vec::new()
    }

    /// Before partitions go to another instance: everything read from them is
    /// flushed, with their positions, and only then are they given up.
    fn revoke(&self, base: &BaseConsumer<Self>) {
        let (reply, answer) = std::sync::mpsc::sync_channel(1);
        let flushed = self.dispatcher.mark(self.take_dirty(), Some(reply))
            && answer.recv_timeout(REVOKE_FLUSH_TIMEOUT).unwrap_or(false);
        if !flushed {
            metrics::counter!("flowlens_kafka_revoke_flush_failures_total").increment(1);
            tracing::error!(
                "partitions taken away before their flows were flushed: their next owner \
                 reads again from the last flushed position (flows may count twice)"
            );
        }
        if let Err(e) = base.unassign() {
            tracing::error!(error = %e, "unassigning partitions");
        }
        self.assigned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        metrics::counter!("flowlens_kafka_rebalances_total", "kind" => "revoke").increment(1);
        tracing::info!(flushed, "raw-topic partitions revoked");
    }
}

impl ClientContext for Rebalancing {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.health.log(level, fac, log_message);
    }
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.health.error(&error, reason);
    }
    fn stats(&self, s: Statistics) {
        self.health.observe(&s);
        if let Some(t) = s.topics.get(&self.topic) {
            let owned = self
                .assigned
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for (p, st) in &t.partitions {
                if !owned.contains(p) || st.hi_offset < 0 {
                    continue;
                }
                // Records not yet durable: Kafka's committed offset follows what the
                // graph committed; before the first commit, everything retained is.
                let durable = if st.committed_offset >= 0 {
                    st.committed_offset
                } else {
                    st.lo_offset.max(0)
                };
                #[expect(clippy::cast_precision_loss, reason = "a gauge")]
                metrics::gauge!("flowlens_kafka_consumer_lag", "partition" => p.to_string())
                    .set(st.hi_offset.saturating_sub(durable).max(0) as f64);
            }
        }
    }
}

impl ConsumerContext for Rebalancing {
    fn rebalance(
        &self,
        base: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => self.assign(base, tpl),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => self.revoke(base),
            other => {
                tracing::error!(error = ?other, "Kafka rebalance error");
                let _ = base.unassign();
                self.assigned
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clear();
            }
        }
    }
}
