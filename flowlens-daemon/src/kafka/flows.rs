//! The flows topic (`kafka.topics.flows`, on with `kafka.publish_flows`): each decoded
//! record as a `flowlens.v1.Flow`, with its scope, conventional service and, when the
//! `GeoIP` databases are configured, countries and AS numbers, for consumers that want
//! flows rather than the graph.
//!
//! [`flow`] is PURE (a record and the enrichment tables in, the message out);
//! [`FlowPublisher`] is the EDGE. Like ingest, the decode workers never wait for the
//! broker: a record that does not fit in the producer's buffer is dropped and counted
//! (`flowlens_kafka_flows_dropped_total{reason="buffer_full"}`), as is one librdkafka
//! gives up (`reason="delivery"`). The graph does not depend on this topic.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use prost::Message as _;
use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer as _, ProducerContext, ThreadedProducer,
};
use rdkafka::statistics::Statistics;
use rdkafka::types::RDKafkaErrorCode;

use super::client::{KafkaError, producer_config};
use super::health::KafkaHealth;
use super::proto;
use super::raw;
use crate::config::KafkaConfig;
use crate::enrich::classify::Classifier;
use crate::enrich::geoip::GeoIp;
use crate::enrich::services::service_for;
use crate::flow::FlowRecord;

/// Records the flows producer holds at most while the broker is slow or away (with
/// `kafka.max_buffered_mib`); about five seconds at 200k flows/s.
pub const MAX_BUFFERED_FLOWS: u32 = 1_000_000;

fn addr(ip: Option<IpAddr>) -> Vec<u8> {
    match ip.map(|ip| ip.to_canonical()) {
        Some(IpAddr::V4(v4)) => v4.octets().to_vec(),
        Some(IpAddr::V6(v6)) => v6.octets().to_vec(),
        None => Vec::new(),
    }
}

/// What enrichment the flows get: the internal prefixes, and the `GeoIP` databases
/// when configured.
#[derive(Debug, Default)]
pub struct FlowEnrichment {
    pub classifier: Classifier,
    pub geoip: Option<GeoIp>,
}

/// The message for `r`.
#[must_use]
pub fn flow(r: &FlowRecord, e: &FlowEnrichment) -> proto::Flow {
    let protocol = r.protocol.unwrap_or(0);
    let service = match (r.dst_port, r.src_port) {
        (Some(d), s) => {
            service_for(protocol, d).or_else(|| s.and_then(|s| service_for(protocol, s)))
        }
        (None, Some(s)) => service_for(protocol, s),
        (None, None) => None,
    };
    let scope = match (r.src_ip, r.dst_ip) {
        (Some(s), Some(d)) => e.classifier.classify(s, d).as_str(),
        _ => "",
    };
    let geo = |ip: Option<IpAddr>| {
        e.geoip
            .as_ref()
            .zip(ip)
            .and_then(|(g, ip)| g.lookup(ip))
            .unwrap_or_default()
    };
    let (src_geo, dst_geo) = (geo(r.src_ip), geo(r.dst_ip));
    proto::Flow {
        exporter: addr(Some(r.exporter_ip)),
        flow_protocol: r.proto.as_str().to_owned(),
        observation_domain: r.observation_domain,
        src_addr: addr(r.src_ip),
        dst_addr: addr(r.dst_ip),
        src_port: r.src_port.map_or(0, u32::from),
        dst_port: r.dst_port.map_or(0, u32::from),
        protocol: u32::from(protocol),
        bytes: r.bytes.unwrap_or(0),
        packets: r.packets.unwrap_or(0),
        sampling_rate: r.sampling_rate.unwrap_or(0),
        flow_start_ms: r.flow_start_ms.unwrap_or(0),
        flow_end_ms: r.flow_end_ms.unwrap_or(0),
        export_time_ms: r.export_time_ms,
        tcp_flags: r.tcp_flags.map_or(0, u32::from),
        input_interface: r.input_interface.unwrap_or(0),
        output_interface: r.output_interface.unwrap_or(0),
        src_as: r.src_as.unwrap_or(0),
        dst_as: r.dst_as.unwrap_or(0),
        tos: r.tos.map_or(0, u32::from),
        src_vlan: r.src_vlan.map_or(0, u32::from),
        dst_vlan: r.dst_vlan.map_or(0, u32::from),
        next_hop: addr(r.next_hop),
        scope: scope.to_owned(),
        service: service.unwrap_or_default().to_owned(),
        src_country: src_geo.country_code.unwrap_or_default(),
        dst_country: dst_geo.country_code.unwrap_or_default(),
        src_asn: src_geo.asn.unwrap_or(0),
        dst_asn: dst_geo.asn.unwrap_or(0),
    }
}

/// Produces decoded records to the flows topic; shared by the decode workers.
pub struct FlowPublisher {
    producer: ThreadedProducer<FlowDeliveries>,
    topic: String,
    enrichment: FlowEnrichment,
}

impl std::fmt::Debug for FlowPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowPublisher")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl FlowPublisher {
    /// # Errors
    /// Kafka not configured, or settings librdkafka refuses.
    pub fn new(
        k: &KafkaConfig,
        enrichment: FlowEnrichment,
        health: KafkaHealth,
    ) -> Result<Self, KafkaError> {
        let mut c = producer_config(k)?;
        c.set("statistics.interval.ms", "1000")
            .set(
                "queue.buffering.max.messages",
                MAX_BUFFERED_FLOWS.to_string(),
            )
            .set(
                "queue.buffering.max.kbytes",
                (u64::from(k.max_buffered_mib) * 1024).to_string(),
            )
            .set("message.timeout.ms", k.message_timeout_ms.to_string());
        for (name, value) in &k.properties {
            c.set(name, value);
        }
        let producer = c.create_with_context(FlowDeliveries {
            health,
            delivered: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })?;
        Ok(Self {
            producer,
            topic: k.topics.flows.clone(),
            enrichment,
        })
    }

    /// Queues `records`; never waits (what does not fit is counted dropped).
    pub fn publish(&self, records: &[FlowRecord]) {
        let mut full = 0;
        let mut refused = 0;
        let mut payload = Vec::with_capacity(160);
        for r in records {
            payload.clear();
            if flow(r, &self.enrichment).encode(&mut payload).is_err() {
                refused += 1;
                continue;
            }
            let key = raw::key(r.exporter_ip);
            let record = BaseRecord::to(&self.topic).key(&key).payload(&payload);
            if let Err((e, _)) = self.producer.send(record) {
                match e.rdkafka_error_code() {
                    Some(RDKafkaErrorCode::QueueFull) => full += 1,
                    _ => refused += 1,
                }
            }
        }
        if full > 0 {
            metrics::counter!("flowlens_kafka_flows_dropped_total", "reason" => "buffer_full")
                .increment(full);
        }
        if refused > 0 {
            metrics::counter!("flowlens_kafka_flows_dropped_total", "reason" => "refused")
                .increment(refused);
        }
    }

    /// Publishes the delivery counts tallied since the last call (the control loop
    /// calls it).
    pub fn publish_metrics(&self) {
        let c = self.producer.context();
        let delivered = c.delivered.swap(0, Ordering::Relaxed);
        let bytes = c.bytes.swap(0, Ordering::Relaxed);
        let failed = c.failed.swap(0, Ordering::Relaxed);
        metrics::counter!("flowlens_kafka_flows_published_total").increment(delivered);
        metrics::counter!("flowlens_kafka_flows_published_bytes_total").increment(bytes);
        if failed > 0 {
            metrics::counter!("flowlens_kafka_flows_dropped_total", "reason" => "delivery")
                .increment(failed);
        }
    }

    /// Waits up to `timeout` for what is buffered (at shutdown).
    pub fn flush(&self, timeout: std::time::Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "flow records still buffered for Kafka at shutdown");
        }
        self.publish_metrics();
    }
}

/// Delivery reports of the flows producer, counted without a lock (one per record).
struct FlowDeliveries {
    health: KafkaHealth,
    delivered: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for FlowDeliveries {
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

impl ProducerContext for FlowDeliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(m) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
                self.bytes
                    .fetch_add(m.payload().map_or(0, |p| p.len() as u64), Ordering::Relaxed);
            }
            Err(_) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowProtocol;

    #[test]
    fn a_record_becomes_its_message_with_scope_and_service() {
        let mut r = FlowRecord::empty(FlowProtocol::Ipfix, "192.0.2.1".parse().unwrap(), 7);
        r.src_ip = Some("10.1.0.5".parse().unwrap());
        r.dst_ip = Some("198.51.100.9".parse().unwrap());
        r.src_port = Some(51_000);
        r.dst_port = Some(443);
        r.protocol = Some(6);
        r.bytes = Some(1500);
        r.packets = Some(3);
        r.sampling_rate = Some(10);
        let f = flow(&r, &FlowEnrichment::default());
        assert_eq!(f.exporter, [192, 0, 2, 1]);
        assert_eq!(f.flow_protocol, "ipfix");
        assert_eq!(f.src_addr, [10, 1, 0, 5]);
        assert_eq!((f.src_port, f.dst_port, f.protocol), (51_000, 443, 6));
        assert_eq!((f.bytes, f.packets, f.sampling_rate), (1500, 3, 10));
        assert_eq!(f.scope, "egress");
        assert_eq!(f.service, "https");
        assert_eq!(f.export_time_ms, 7);
        assert!(f.src_country.is_empty() && f.next_hop.is_empty());
        // The reply direction names the same service by its source port.
        std::mem::swap(&mut r.src_ip, &mut r.dst_ip);
        std::mem::swap(&mut r.src_port, &mut r.dst_port);
        let back = flow(&r, &FlowEnrichment::default());
        assert_eq!(
            (back.scope.as_str(), back.service.as_str()),
            ("ingress", "https")
        );
        // IPv4-mapped addresses are written as IPv4.
        r.src_ip = Some("::ffff:10.0.0.1".parse().unwrap());
        assert_eq!(flow(&r, &FlowEnrichment::default()).src_addr, [10, 0, 0, 1]);
    }
}
