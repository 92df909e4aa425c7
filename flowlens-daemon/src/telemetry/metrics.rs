//! Every metric the daemon exports, by name, and small functions to record them.
//!
//! Names follow `flowlens_<stage>_<thing>_total`, plus the design's own names
//! (`flowlens_flows_received_total{exporter}`, `flowlens_flows_processed_total`,
//! `flowlens_processing_latency_seconds`). Labels are bounded: `exporter`, `protocol`,
//! `reason`, `source`, `counter`, `mode`; never a flow address.
//!
//! Accounting: per exporter, `flowlens_ingest_datagrams_received_total` =
//! `flowlens_decode_datagrams_total` (decoded, all protocols) +
//! `flowlens_decode_malformed_total` (all reasons) +
//! `flowlens_ingest_datagrams_sampled_out_total` + `flowlens_ingest_datagrams_dropped_total`;
//! and for template data, `flowlens_decode_flows_total` (v9 and IPFIX) =
//! `flowlens_decode_data_records_total` - `flowlens_decode_records_skipped_total` (all
//! reasons) + `flowlens_decode_reverse_records_total`.

use std::net::IpAddr;

use metrics::{counter, gauge, histogram};

use crate::decode::{DecodeError, ExporterCounters, SkipReason};
use crate::flow::FlowProtocol;

pub const INGEST_RECEIVED: &str = "flowlens_ingest_datagrams_received_total";
pub const INGEST_SAMPLED_OUT: &str = "flowlens_ingest_datagrams_sampled_out_total";
pub const INGEST_DROPPED: &str = "flowlens_ingest_datagrams_dropped_total";
pub const INGEST_MODE: &str = "flowlens_ingest_mode";
pub const INGEST_SAMPLE_RATE: &str = "flowlens_ingest_sample_rate";
pub const INGEST_QUEUE_DEPTH: &str = "flowlens_ingest_queue_depth";
pub const DECODE_DATAGRAMS: &str = "flowlens_decode_datagrams_total";
pub const DECODE_MALFORMED: &str = "flowlens_decode_malformed_total";
pub const DECODE_TEMPLATE_MISSING: &str = "flowlens_decode_template_missing_total";
pub const DECODE_SEQUENCE_GAPS: &str = "flowlens_decode_sequence_gaps_total";
pub const DECODE_LOST_PACKETS: &str = "flowlens_decode_lost_packets_total";
pub const DECODE_LOST_RECORDS: &str = "flowlens_decode_lost_records_total";
pub const DECODE_SAMPLING_UNKNOWN: &str = "flowlens_decode_sampling_rate_unknown_total";
pub const DECODE_CLOCK_CLAMPED: &str = "flowlens_decode_clock_clamped_total";
pub const DECODE_CLOCK_SKEWED: &str = "flowlens_decode_clock_skewed_total";
pub const DECODE_TEMPLATES_EVICTED: &str = "flowlens_decode_templates_evicted_total";
pub const DECODE_SFLOW_COUNTER_SAMPLES: &str = "flowlens_decode_sflow_counters_samples_total";
pub const DECODE_TRAILING_BYTES: &str = "flowlens_decode_trailing_bytes_total";
pub const DECODE_DATA_RECORDS: &str = "flowlens_decode_data_records_total";
pub const DECODE_RECORDS_SKIPPED: &str = "flowlens_decode_records_skipped_total";
pub const DECODE_REVERSE_RECORDS: &str = "flowlens_decode_reverse_records_total";
pub const FLOWS_RECEIVED: &str = "flowlens_flows_received_total";
pub const FLOWS_BY_PROTOCOL: &str = "flowlens_decode_flows_total";
pub const FLOWS_PROCESSED: &str = "flowlens_flows_processed_total";
pub const PROCESSING_LATENCY: &str = "flowlens_processing_latency_seconds";
pub const EXPORTER_FLOWS_PER_SECOND: &str = "flowlens_exporter_flows_per_second";
pub const EXPORTER_PACKETS_PER_SECOND: &str = "flowlens_exporter_packets_per_second";
pub const XDP_PACKETS: &str = "flowlens_xdp_packets_total";

pub const SOURCE_UDP: &str = "udp";
pub const SOURCE_XDP: &str = "xdp";

pub fn ingest_received(exporter: IpAddr, source: &'static str, n: u64) {
    if n > 0 {
        counter!(INGEST_RECEIVED, "exporter" => exporter.to_string(), "source" => source)
            .increment(n);
    }
}

pub fn ingest_sampled_out(exporter: IpAddr, n: u64) {
    if n > 0 {
        counter!(INGEST_SAMPLED_OUT, "exporter" => exporter.to_string()).increment(n);
    }
}

pub fn ingest_dropped(exporter: IpAddr, n: u64) {
    if n > 0 {
        counter!(INGEST_DROPPED, "exporter" => exporter.to_string()).increment(n);
    }
}

/// Sets `flowlens_ingest_mode{mode}`: 1 for the mode in use, 0 for the other.
pub fn ingest_mode(xdp: bool) {
    gauge!(INGEST_MODE, "mode" => "xdp").set(if xdp { 1.0 } else { 0.0 });
    gauge!(INGEST_MODE, "mode" => "udp").set(if xdp { 0.0 } else { 1.0 });
}

/// Sets `flowlens_routing_mode{mode}`: 1 for the way datagrams go now (`kafka` or
/// `postgres`, the in-process queues), 0 for the other.
pub fn routing(via_kafka: bool) {
    gauge!("flowlens_routing_mode", "mode" => "kafka").set(if via_kafka { 1.0 } else { 0.0 });
    gauge!("flowlens_routing_mode", "mode" => "postgres").set(if via_kafka { 0.0 } else { 1.0 });
}

pub fn sample_rate(rate: u32) {
    gauge!(INGEST_SAMPLE_RATE).set(f64::from(rate));
}

pub fn queue_depth(worker: usize, depth: usize) {
    #[expect(clippy::cast_precision_loss, reason = "a gauge")]
    gauge!(INGEST_QUEUE_DEPTH, "worker" => worker.to_string()).set(depth as f64);
}

pub fn flows_processed(n: u64) {
    counter!(FLOWS_PROCESSED).increment(n);
}

/// The processing-latency histogram; workers keep the handle so the per-datagram
/// path does not look the metric up each time.
pub fn processing_latency() -> metrics::Histogram {
    histogram!(PROCESSING_LATENCY)
}

pub fn exporter_rates(exporter: IpAddr, flows_per_s: f64, packets_per_s: f64) {
    let e = exporter.to_string();
    gauge!(EXPORTER_FLOWS_PER_SECOND, "exporter" => e.clone()).set(flows_per_s);
    gauge!(EXPORTER_PACKETS_PER_SECOND, "exporter" => e).set(packets_per_s);
}

/// Publishes one exporter's decoder counters. Each exporter lives in exactly one decode
/// worker, so absolute values are safe.
pub fn decoder(exporter: IpAddr, c: &ExporterCounters) {
    let e = exporter.to_string();
    for p in FlowProtocol::ALL {
        let packets = c.packets_by_protocol.get(p.index()).copied().unwrap_or(0);
        if packets > 0 {
            counter!(FLOWS_BY_PROTOCOL, "exporter" => e.clone(), "protocol" => p.as_str())
                .absolute(c.records_for(p));
        }
    }
    counter!(DECODE_DATAGRAMS, "exporter" => e.clone()).absolute(c.decoded_packets);
    for (reason, n) in DecodeError::REASONS.iter().zip(c.malformed_by_reason) {
        if n > 0 {
            counter!(DECODE_MALFORMED, "exporter" => e.clone(), "reason" => *reason).absolute(n);
        }
    }
    counter!(FLOWS_RECEIVED, "exporter" => e.clone()).absolute(c.records.iter().sum());
    counter!(DECODE_TEMPLATE_MISSING, "exporter" => e.clone()).absolute(c.template_missing);
    counter!(DECODE_SEQUENCE_GAPS, "exporter" => e.clone()).absolute(c.sequence_gaps);
    counter!(DECODE_LOST_PACKETS, "exporter" => e.clone()).absolute(c.lost_packets);
    counter!(DECODE_LOST_RECORDS, "exporter" => e.clone()).absolute(c.lost_records);
    counter!(DECODE_SAMPLING_UNKNOWN, "exporter" => e.clone()).absolute(c.sampling_rate_unknown);
    counter!(DECODE_CLOCK_CLAMPED, "exporter" => e.clone()).absolute(c.clock_clamped);
    counter!(DECODE_CLOCK_SKEWED, "exporter" => e.clone()).absolute(c.clock_skewed);
    counter!(DECODE_TEMPLATES_EVICTED, "exporter" => e.clone()).absolute(c.templates_evicted);
    counter!(DECODE_SFLOW_COUNTER_SAMPLES, "exporter" => e.clone())
        .absolute(c.sflow_counter_samples);
    counter!(DECODE_TRAILING_BYTES, "exporter" => e.clone()).absolute(c.trailing_bytes);
    counter!(DECODE_DATA_RECORDS, "exporter" => e.clone()).absolute(c.data_records);
    for reason in SkipReason::ALL {
        counter!(DECODE_RECORDS_SKIPPED, "exporter" => e.clone(), "reason" => reason.as_str())
            .absolute(c.skipped(reason));
    }
    counter!(DECODE_REVERSE_RECORDS, "exporter" => e).absolute(c.reverse_records);
}

/// Publishes the XDP program's counters (summed over CPUs).
pub fn xdp_counter(name: &'static str, value: u64) {
    counter!(XDP_PACKETS, "counter" => name).absolute(value);
}
