//! Every metric the daemon exports, with its type, labels and meaning: registered at
//! start (so `/metrics` carries `# HELP` for each, as `promtool check metrics` wants),
//! and the source of `docs/metrics.md`. A test fails when a metric name appears in the
//! code and not here, or here and not in the code, or when the document is stale.

use std::fmt::Write as _;

/// The Prometheus type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    /// Exported as a summary (quantiles) by the exporter.
    Histogram,
}

impl Kind {
    /// As `docs/metrics.md` and `# TYPE` say it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "summary",
        }
    }
}

/// One metric.
#[derive(Debug, Clone, Copy)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

const fn c(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        labels,
        help,
    }
}

const fn g(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        labels,
        help,
    }
}

const fn h(name: &'static str, labels: &'static [&'static str], help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        labels,
        help,
    }
}

const E: &[&str] = &["exporter"];

/// The sections of `docs/metrics.md`: (title, metrics).
pub const SECTIONS: &[(&str, &[Metric])] = &[
    ("Receiving", RECEIVING),
    ("Decoding", DECODING),
    ("Decoder state", STATE),
    ("The dependency graph", GRAPH),
    ("Reverse DNS", RDNS),
    ("Routing and Kafka", KAFKA),
];

const RECEIVING: &[Metric] = &[
    c(
        "flowlens_ingest_datagrams_received_total",
        &["exporter", "source"],
        "Datagrams received per exporter, from the XDP rings (source=xdp, including those the program sampled out or lost to a full ring) or the sockets (source=udp). Received = decoded + malformed + sampled out + dropped.",
    ),
    c(
        "flowlens_ingest_datagrams_sampled_out_total",
        E,
        "Datagrams left out by FlowLens's own 1:N sampling under pressure (XDP or userspace); the kept ones stand for them.",
    ),
    c(
        "flowlens_ingest_datagrams_dropped_total",
        E,
        "Datagrams received and lost: a full decode queue or XDP ring, a full Kafka producer buffer, or a record Kafka never took.",
    ),
    g(
        "flowlens_ingest_mode",
        &["mode"],
        "1 for the receive path in use (xdp or udp), 0 for the other.",
    ),
    g(
        "flowlens_ingest_sample_rate",
        &[],
        "The 1:N sampling rate applied under pressure (1 = every datagram kept).",
    ),
    g(
        "flowlens_ingest_queue_depth",
        &["worker"],
        "Datagrams waiting in each decode worker's queue.",
    ),
    c(
        "flowlens_xdp_packets_total",
        &["counter"],
        "The XDP program's own counts: seen = steered + passed + sampled_out + ring_full; too_big and lease_expired (a pinned program no daemon reads) are among passed.",
    ),
];

const DECODING: &[Metric] = &[
    c(
        "flowlens_decode_datagrams_total",
        E,
        "Datagrams decoded (every protocol).",
    ),
    c(
        "flowlens_decode_malformed_total",
        &["exporter", "reason"],
        "Datagrams that could not be decoded, by reason (truncated, bad version, bad length, ...); each is logged with what decode --explain says.",
    ),
    c(
        "flowlens_flows_received_total",
        E,
        "Flow records decoded per exporter (design name).",
    ),
    c(
        "flowlens_decode_flows_total",
        &["exporter", "protocol"],
        "Flow records decoded per exporter and protocol (netflow_v5, netflow_v9, ipfix, sflow_v5).",
    ),
    c(
        "flowlens_decode_template_missing_total",
        E,
        "NetFlow v9/IPFIX data sets given up because their template never came within decoder.template_hold_ms (or the hold's bound was passed).",
    ),
    c(
        "flowlens_decode_sequence_gaps_total",
        E,
        "Gaps in the exporters' sequence numbers (datagrams lost before the collector).",
    ),
    c(
        "flowlens_decode_lost_packets_total",
        E,
        "Datagrams lost before the collector, from the sequence numbers of protocols that number datagrams.",
    ),
    c(
        "flowlens_decode_lost_records_total",
        E,
        "Flow records lost before the collector, from the sequence numbers of protocols that number records.",
    ),
    c(
        "flowlens_decode_sampling_rate_unknown_total",
        E,
        "Records naming a sampler whose rate is not known yet (options data not received).",
    ),
    c(
        "flowlens_decode_clock_clamped_total",
        E,
        "Records whose timestamps were brought back within decoder.clock bounds.",
    ),
    c(
        "flowlens_decode_clock_skewed_total",
        E,
        "Datagrams whose export time is far from the collector's clock.",
    ),
    c(
        "flowlens_decode_templates_evicted_total",
        E,
        "Templates dropped by the template cache's bound (decoder.max_templates).",
    ),
    c(
        "flowlens_decode_sflow_counters_samples_total",
        E,
        "sFlow counter samples (interface counters) seen; they carry no flows.",
    ),
    c(
        "flowlens_decode_trailing_bytes_total",
        E,
        "Bytes after the last whole record or set, ignored.",
    ),
    c(
        "flowlens_decode_data_records_total",
        E,
        "NetFlow v9/IPFIX data records read (flows = data records - skipped + reverse records).",
    ),
    c(
        "flowlens_decode_records_skipped_total",
        &["exporter", "reason"],
        "NetFlow v9/IPFIX data records that are not flows (options data, records without addresses, ...), by reason.",
    ),
    c(
        "flowlens_decode_reverse_records_total",
        E,
        "Flows made from the reverse direction of IPFIX biflow records (RFC 5103).",
    ),
    c(
        "flowlens_flows_processed_total",
        &[],
        "Flow records handed to the sink.",
    ),
    h(
        "flowlens_processing_latency_seconds",
        &[],
        "Time from a datagram's receipt to its decoding.",
    ),
    g(
        "flowlens_exporter_flows_per_second",
        E,
        "Each exporter's decoded flows per second, over the last half second.",
    ),
    g(
        "flowlens_exporter_packets_per_second",
        E,
        "Each exporter's decoded datagrams per second, over the last half second.",
    ),
];

const STATE: &[Metric] = &[
    c(
        "flowlens_decoder_state_saves_total",
        &[],
        "Times the decoder state file was written (state.directory).",
    ),
    c(
        "flowlens_decoder_state_save_failures_total",
        &[],
        "Failed writes of the decoder state file (the previous file stays whole).",
    ),
    g(
        "flowlens_decoder_state_templates",
        &[],
        "Templates in the last decoder state file written.",
    ),
    g(
        "flowlens_decoder_state_loaded_templates",
        &[],
        "Templates loaded from the decoder state file at start.",
    ),
    c(
        "flowlens_decoder_state_load_failures_total",
        &[],
        "Decoder state files (or parts) that could not be loaded and were set aside.",
    ),
];

const GRAPH: &[Metric] = &[
    c(
        "flowlens_graph_flushes_total",
        &[],
        "Graph flushes committed to PostgreSQL.",
    ),
    c(
        "flowlens_graph_flush_failures_total",
        &[],
        "Graph flushes that failed; what they held is kept for the next one.",
    ),
    c(
        "flowlens_graph_flush_timeouts_total",
        &[],
        "Graph flushes given up after database.flush_timeout_seconds.",
    ),
    c(
        "flowlens_graph_flushes_deferred_total",
        &[],
        "Flushes put off because the previous one was still running.",
    ),
    c(
        "flowlens_graph_flushes_in_doubt_total",
        &[],
        "Flushes whose COMMIT got no answer, settled later by their flush id.",
    ),
    c(
        "flowlens_graph_flushes_in_doubt_committed_total",
        &[],
        "Flushes in doubt that had landed (not written again).",
    ),
    h(
        "flowlens_graph_flush_seconds",
        &[],
        "Time a graph flush took, from its first statement to its commit.",
    ),
    c(
        "flowlens_graph_assets_created_total",
        &[],
        "Assets created from flows.",
    ),
    c(
        "flowlens_graph_dependencies_created_total",
        &[],
        "Dependencies created from flows.",
    ),
    c(
        "flowlens_graph_flow_stats_rows_total",
        &[],
        "flow_stats rows written (5-minute windows).",
    ),
    c(
        "flowlens_graph_raw_rows_total",
        &[],
        "flow_raw rows written (database.write_raw_flows).",
    ),
    c(
        "flowlens_graph_raw_rows_rejected_total",
        &[],
        "Raw flows PostgreSQL refused as data, set aside so that they do not hold back the graph.",
    ),
    c(
        "flowlens_graph_rows_refused_total",
        &["table"],
        "Graph rows PostgreSQL refused as data, set aside, per table.",
    ),
    c(
        "flowlens_graph_rows_dropped_total",
        &[],
        "Edge rows dropped because the retry buffer was full during an outage.",
    ),
    c(
        "flowlens_graph_rows_without_asset_total",
        &[],
        "Edge rows given up because an end never became an asset.",
    ),
    g(
        "flowlens_graph_held_rows",
        &[],
        "Edge rows held for the next flush (an outage, or below the creation thresholds).",
    ),
    c(
        "flowlens_graph_change_events_total",
        &[],
        "Change events recorded (new and removed assets and dependencies).",
    ),
    c(
        "flowlens_graph_alerts_total",
        &[],
        "Alerts raised by alerts.rules.",
    ),
    c(
        "flowlens_graph_flows_suppressed_total",
        &[],
        "Flows of dependencies a person deleted: kept in flow_stats, not made a dependency again.",
    ),
    c(
        "flowlens_graph_deleted_assets_forgotten_total",
        &[],
        "Cached asset ids forgotten because the asset was deleted.",
    ),
    c(
        "flowlens_graph_flows_unoriented_total",
        &["reason"],
        "Flows whose client and server could not be told apart, by reason.",
    ),
    c(
        "flowlens_graph_flows_clock_skewed_total",
        &[],
        "Flows whose time was too far from the collector's clock to place in a window.",
    ),
    c(
        "flowlens_graph_flows_duplicate_observation_total",
        &[],
        "Flows of an edge already counted from another exporter in the same window (observation-point policy).",
    ),
    c(
        "flowlens_graph_flows_over_capacity_total",
        &[],
        "Flows not aggregated because the window's edge table was full.",
    ),
    c(
        "flowlens_graph_flows_dynamic_port_folded_total",
        &[],
        "Flows on dynamic data ports folded into their service's dependency.",
    ),
    c(
        "flowlens_graph_dynamic_port_tables_cleared_total",
        &[],
        "Times the dynamic-port table was cleared at its bound.",
    ),
    g(
        "flowlens_graph_listeners",
        &[],
        "Listening (server) endpoints learnt from flows.",
    ),
    c(
        "flowlens_graph_listeners_learnt_total",
        &[],
        "Listening endpoints learnt.",
    ),
    c(
        "flowlens_graph_listener_candidates_dropped_total",
        &[],
        "Listener candidates dropped at the table's bound.",
    ),
    c(
        "flowlens_graph_listeners_not_kept_total",
        &[],
        "Learnt listeners not kept at the table's bound.",
    ),
    c(
        "flowlens_graph_listeners_not_persisted_total",
        &[],
        "Learnt listeners not persisted because the queue to persist was full (still used).",
    ),
    c(
        "flowlens_graph_fan_out_pruned_total",
        &[],
        "Peers pruned from the fan-out table at its bound.",
    ),
    c(
        "flowlens_graph_fan_out_untracked_total",
        &[],
        "Flows whose peers the fan-out table could not track.",
    ),
    g(
        "flowlens_graph_default_partition_rows",
        &["table"],
        "Rows in the default partitions of flow_raw and flow_stats (data outside the dated partitions).",
    ),
];

const RDNS: &[Metric] = &[
    c(
        "flowlens_enrich_rdns_lookups_total",
        &["outcome"],
        "Reverse DNS lookups, by outcome (resolved, not_found, failed, timed_out, invalid_name, shared: answered by another instance through enrichment.cache's Redis).",
    ),
    c(
        "flowlens_enrich_cache_redis_fallbacks_total",
        &["use"],
        "Shared-cache requests (use: rdns, inventory) served from this instance's memory because Redis was down or slow.",
    ),
    g(
        "flowlens_enrich_cache_redis_up",
        &[],
        "1 while the shared cache's Redis answers, 0 during an outage (enrichment.cache.backend: redis).",
    ),
    c(
        "flowlens_enrich_cache_shared_hits_total",
        &["use"],
        "Answers taken from another instance through the shared cache, by use (rdns, inventory).",
    ),
    c(
        "flowlens_enrich_rdns_dropped_for_concurrency_total",
        &[],
        "Reverse DNS lookups not made because enrichment.dns.max_concurrent were running; retried later.",
    ),
    g(
        "flowlens_enrich_rdns_waiting",
        &[],
        "Assets waiting for a reverse DNS answer.",
    ),
];

const KAFKA: &[Metric] = &[
    g(
        "flowlens_routing_mode",
        &["mode"],
        "1 for where datagrams go now in role all (kafka, or postgres: straight to the decode workers), 0 for the other.",
    ),
    g(
        "flowlens_routing_flows_per_second",
        &[],
        "The decoded flow rate that drives auto routing.",
    ),
    c(
        "flowlens_routing_switches_total",
        &["to"],
        "Switches of auto routing, by the way taken.",
    ),
    c(
        "flowlens_kafka_datagrams_produced_total",
        E,
        "Raw datagrams the brokers acknowledged, per exporter.",
    ),
    c(
        "flowlens_kafka_produced_bytes_total",
        &[],
        "Bytes of raw records the brokers acknowledged.",
    ),
    c(
        "flowlens_kafka_produce_errors_total",
        &["reason"],
        "Raw records not produced: buffer_full (the bound while the brokers are away), refused, delivery (given up after kafka.message_timeout_ms).",
    ),
    g(
        "flowlens_kafka_producer_buffer_fill",
        &[],
        "How full the raw producer's buffer is (0 to 1).",
    ),
    c(
        "flowlens_kafka_datagrams_consumed_total",
        E,
        "Raw datagrams consumed, per exporter (consumed = decoded + malformed).",
    ),
    c(
        "flowlens_kafka_consumed_bytes_total",
        &[],
        "Bytes of raw records consumed.",
    ),
    c(
        "flowlens_kafka_records_undecodable_total",
        &[],
        "Raw-topic records that are not a flowlens.v1.RawDatagram, skipped.",
    ),
    c(
        "flowlens_kafka_records_duplicate_total",
        &[],
        "Raw-topic records that are copies a producer's retry wrote twice, skipped.",
    ),
    g(
        "flowlens_kafka_consumer_lag",
        &["partition"],
        "Raw records of each owned partition not yet durable in PostgreSQL.",
    ),
    c(
        "flowlens_kafka_rebalances_total",
        &["kind"],
        "Consumer-group rebalances: partitions assigned or revoked.",
    ),
    c(
        "flowlens_kafka_revoke_flush_failures_total",
        &[],
        "Revoked partitions whose flush did not complete in time (their next owner reads again from the last durable position).",
    ),
    c(
        "flowlens_kafka_position_read_failures_total",
        &[],
        "Failures to read the stored positions of assigned partitions from PostgreSQL.",
    ),
    c(
        "flowlens_kafka_consumer_errors_total",
        &[],
        "Errors the consumer reported.",
    ),
    c(
        "flowlens_kafka_client_errors_total",
        &[],
        "Errors Kafka clients reported (while a broker is away, each reconnect attempt).",
    ),
    g(
        "flowlens_kafka_up",
        &["client"],
        "1 while a client has a broker connection up (producer, consumer).",
    ),
    c(
        "flowlens_kafka_events_published_total",
        &["topic"],
        "Change events and alerts published by the relay (topic = changes, alerts).",
    ),
    c(
        "flowlens_kafka_events_published_bytes_total",
        &["topic"],
        "Bytes of change events and alerts published by the relay.",
    ),
    c(
        "flowlens_xdp_log_records_dropped_total",
        &[],
        "Reports of the XDP program (xdp.log_level) not forwarded to the log: more than 1024 waited between two drains.",
    ),
    c(
        "flowlens_notifications_total",
        &["target", "outcome"],
        "Alert notifications per target: delivered, retried (an attempt failed, another is due), failed (gave up: max_attempts, or an answer retrying cannot change), dropped (the queue held notifications.max_pending).",
    ),
    g(
        "flowlens_notifications_pending",
        &[],
        "Notifications waiting in the queue (notification_deliveries, status pending).",
    ),
    g(
        "flowlens_notifications_leader",
        &[],
        "1 in the instance sending alert notifications (one at a time).",
    ),
    c(
        "flowlens_notifications_errors_total",
        &[],
        "Notifier passes that failed on PostgreSQL; retried from the stored cursor.",
    ),
    c(
        "flowlens_inventory_refreshes_total",
        &["provider", "outcome"],
        "Inventory snapshots taken, by provider (aws, azure, gcp) and outcome (ok, failed: the last snapshot is kept).",
    ),
    g(
        "flowlens_inventory_addresses",
        &["provider"],
        "Addresses in each inventory provider's current snapshot.",
    ),
    g(
        "flowlens_inventory_last_success_timestamp_seconds",
        &["provider"],
        "When each inventory provider's last good snapshot was taken (Unix seconds).",
    ),
    c(
        "flowlens_snmp_polls_total",
        &["outcome"],
        "SNMP polls of exporters (sysName, ifName, ifAlias, speed), by outcome (ok, failed: what the exporter said last is kept).",
    ),
    g(
        "flowlens_snmp_exporters",
        &[],
        "Exporters whose SNMP description (sysName and interfaces) is known.",
    ),
    g(
        "flowlens_inventory_ambiguous_addresses",
        &["provider"],
        "Addresses the last snapshot left out because two items claimed them (networks with overlapping ranges).",
    ),
    g(
        "flowlens_kafka_event_relay_leader",
        &[],
        "1 in the instance relaying change events and alerts (one at a time).",
    ),
    c(
        "flowlens_kafka_event_relay_errors_total",
        &["reason"],
        "Relay passes that failed (database, kafka); retried from the stored cursor.",
    ),
    c(
        "flowlens_kafka_flows_published_total",
        &[],
        "Decoded flow records the brokers acknowledged on the flows topic.",
    ),
    c(
        "flowlens_kafka_flows_published_bytes_total",
        &[],
        "Bytes of flow records acknowledged on the flows topic.",
    ),
    c(
        "flowlens_kafka_flows_dropped_total",
        &["reason"],
        "Flow records not published: buffer_full, refused, delivery.",
    ),
];

/// Every metric.
pub fn all() -> impl Iterator<Item = &'static Metric> {
    SECTIONS.iter().flat_map(|(_, m)| m.iter())
}

/// Registers every metric's description with the installed recorder.
pub fn describe() {
    for m in all() {
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, m.help),
        }
    }
}

/// `docs/metrics.md` for `service`'s `sections`.
pub fn markdown(service: &str, intro: &str, sections: &[(&str, &[Metric])]) -> String {
    let mut out = format!(
        "# Metrics of {service}\n\n<!-- Generated from the code's metric catalogue; a test \
         fails when it is stale (FLOWLENS_BLESS=1 rewrites it). -->\n\n{intro}\n"
    );
    for (title, metrics) in sections {
        let _ = write!(
            out,
            "\n## {title}\n\n| metric | type | labels | meaning |\n|---|---|---|---|\n"
        );
        for m in *metrics {
            let labels = m
                .labels
                .iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} |",
                m.name,
                m.kind.as_str(),
                labels,
                m.help.replace('|', "\\|")
            );
        }
    }
    out
}

/// The introduction of the daemon's `docs/metrics.md`.
pub const INTRO: &str = "`flowlens-daemon run` serves these on `telemetry.listen_address` \
(`GET /metrics`, default 127.0.0.1:9464). Labels are bounded: an exporter, a protocol, a \
reason, never a flow's address. Per exporter, received = decoded + malformed + sampled out \
+ dropped; for NetFlow v9 and IPFIX, flows = data records - skipped + reverse records.";

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::*;

    /// Quoted `flowlens_...` names in the daemon's sources, but this file's.
    fn names_in_code() -> BTreeSet<String> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut names = BTreeSet::new();
        for f in files
            .iter()
            .filter(|f| !f.ends_with("telemetry/catalogue.rs"))
        {
            let text = std::fs::read_to_string(f).unwrap();
            for (i, _) in text.match_indices("\"flowlens_") {
                let rest = &text[i + 1..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                if rest[end..].starts_with('"') {
                    names.insert(rest[..end].to_owned());
                }
            }
        }
        // Not metrics: the XDP program's ring map names.
        names.retain(|n| !n.starts_with("flowlens_rb"));
        names
    }

    #[test]
    fn every_metric_in_the_code_is_described_and_every_described_one_exists() {
        let code = names_in_code();
        let described: BTreeSet<String> = all().map(|m| m.name.to_owned()).collect();
        assert_eq!(described.len(), all().count(), "a metric described twice");
        let undescribed: Vec<_> = code.difference(&described).collect();
        assert!(
            undescribed.is_empty(),
            "in the code, not in the catalogue: {undescribed:?}"
        );
        let gone: Vec<_> = described.difference(&code).collect();
        assert!(
            gone.is_empty(),
            "in the catalogue, not in the code: {gone:?}"
        );
        for m in all() {
            assert_eq!(
                m.kind == Kind::Counter,
                m.name.ends_with("_total"),
                "{}: counters, and only counters, end in _total",
                m.name
            );
            assert!(!m.help.is_empty() && !m.help.contains('\n'), "{}", m.name);
        }
    }

    #[test]
    fn docs_metrics_md_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics-daemon.md");
        let text = markdown("flowlens-daemon", INTRO, SECTIONS);
        let bless = "cargo test -p flowlens-daemon --lib catalogue";
        flowlens_docgen::check_current(&path, &text, bless).unwrap();
    }
}
