//! Reads Kafka topics from their beginning, without a consumer group (assigned
//! partitions: no rebalance to wait for), for tests that check what was published.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::{Message as _, Offset, TopicPartitionList};

/// One record read.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub(crate) topic: String,
    pub(crate) key: Vec<u8>,
    pub(crate) payload: Vec<u8>,
}

/// A reader of every partition of `topics`, from offset 0.
pub(crate) struct TopicReader {
    consumer: BaseConsumer,
    /// Everything read so far, in the order read (per partition, the topic's order).
    pub(crate) records: Vec<Record>,
}

impl TopicReader {
    pub(crate) fn new(bootstrap: &str, topics: &[&str]) -> Self {
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", "flowlens-test-reader")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let mut assignment = TopicPartitionList::new();
        for topic in topics {
            let metadata = consumer
                .fetch_metadata(Some(topic), Duration::from_secs(10))
                .unwrap();
            for p in metadata.topics()[0].partitions() {
                assignment
                    .add_partition_offset(topic, p.id(), Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&assignment).unwrap();
        Self {
            consumer,
            records: Vec::new(),
        }
    }

    /// Reads for up to `secs` until `done(records)`; false when it never was.
    pub(crate) fn read_until(
        &mut self,
        secs: u64,
        mut done: impl FnMut(&[Record]) -> bool,
    ) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if done(&self.records) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            if let Some(m) = self.consumer.poll(Duration::from_millis(100)) {
                let m = m.unwrap();
                self.records.push(Record {
                    topic: m.topic().to_owned(),
                    key: m.key().unwrap_or_default().to_vec(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                });
            }
        }
    }

    /// Reads whatever arrives within `secs`.
    pub(crate) fn read_for(&mut self, secs: u64) {
        self.read_until(secs, |_| false);
    }
}
