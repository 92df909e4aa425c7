//! EDGE: librdkafka settings from `kafka.*`, and the topics created at start.
//!
//! Producers are idempotent with `acks=all` (a retried batch is written once, and only
//! once every in-sync replica has it), compress (`kafka.compression`) and batch
//! (`kafka.linger_ms`, `kafka.batch_size`); consumers commit offsets by hand, after
//! what they read is safely written. `kafka.properties` are applied last, so TLS, SASL
//! or any librdkafka setting can be given as the operator's cluster needs.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// Why talking to Kafka failed.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("kafka.bootstrap_servers (or KAFKA_BOOTSTRAP_SERVERS) is not set")]
    NotConfigured,
    #[error("Kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    #[error("starting the Kafka client: {0}")]
    Io(#[source] std::io::Error),
    #[error("reading raw-topic positions from PostgreSQL: {0}")]
    Positions(String),
    #[error("creating topic {topic}: {code}")]
    CreateTopic {
        topic: String,
        code: RDKafkaErrorCode,
    },
}

fn base(k: &KafkaConfig) -> Result<ClientConfig, KafkaError> {
    if !k.configured() {
        return Err(KafkaError::NotConfigured);
    }
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", k.bootstrap_servers.trim());
    Ok(c)
}

fn apply_properties(c: &mut ClientConfig, k: &KafkaConfig) {
    for (name, value) in &k.properties {
        c.set(name, value);
    }
}

/// Settings of a producer.
pub fn producer_config(k: &KafkaConfig) -> Result<ClientConfig, KafkaError> {
    let mut c = base(k)?;
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.type", &k.compression)
        .set("linger.ms", k.linger_ms.to_string())
        .set("batch.size", k.batch_size.to_string());
    apply_properties(&mut c, k);
    Ok(c)
}

/// Settings of a consumer in `group`: offsets are committed by the caller, never
/// automatically, and a new group starts at the earliest record.
pub fn consumer_config(k: &KafkaConfig, group: &str) -> Result<ClientConfig, KafkaError> {
    let mut c = base(k)?;
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    apply_properties(&mut c, k);
    Ok(c)
}

/// Creates the four topics that are missing (with `kafka.partitions` and
/// `kafka.replication_factor`); existing ones are left as they are. Returns the names
/// created.
pub async fn ensure_topics(k: &KafkaConfig) -> Result<Vec<String>, KafkaError> {
    let mut c = base(k)?;
    apply_properties(&mut c, k);
    let admin: AdminClient<DefaultClientContext> = c.create()?;
    let t = &k.topics;
    let names = [&t.raw, &t.flows, &t.changes, &t.alerts];
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| {
            NewTopic::new(
                n.as_str(),
                k.partitions,
                TopicReplication::Fixed(k.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let mut created = Vec::new();
    for result in admin.create_topics(&topics, &options).await? {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => return Err(KafkaError::CreateTopic { topic, code }),
        }
    }
    Ok(created)
}
