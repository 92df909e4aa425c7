//! The `decode` command's output: one JSON object per flow record, and a summary.
//!
//! The keys are a contract (tests and other tools read them): `proto`, `exporter_ip`,
//! `src_ip`, `dst_ip`, `src_port`, `dst_port`, `protocol`, `bytes`, `packets`,
//! `tcp_flags`, `input_interface`, `output_interface`, `src_as`, `dst_as`,
//! `sampling_rate`, `flow_start`, `flow_end`, `export_time`; times are RFC 3339 UTC
//! with milliseconds; fields the record lacks are `null`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

use crate::decode::{DecodeError, ExporterCounters, SkipReason};
use crate::flow::{FlowProtocol, FlowRecord};

#[derive(Serialize)]
struct JsonFlow {
    proto: &'static str,
    exporter_ip: IpAddr,
    src_ip: Option<IpAddr>,
    dst_ip: Option<IpAddr>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    protocol: Option<u8>,
    bytes: Option<u64>,
    packets: Option<u64>,
    tcp_flags: Option<u16>,
    input_interface: Option<u32>,
    output_interface: Option<u32>,
    src_as: Option<u32>,
    dst_as: Option<u32>,
    sampling_rate: Option<u32>,
    flow_start: Option<String>,
    flow_end: Option<String>,
    export_time: String,
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-27T03:47:40.123Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Serializes one record as a JSON line (without the newline).
pub fn json_line(rec: &FlowRecord) -> String {
    let j = JsonFlow {
        proto: rec.proto.as_str(),
        exporter_ip: rec.exporter_ip,
        src_ip: rec.src_ip,
        dst_ip: rec.dst_ip,
        src_port: rec.src_port,
        dst_port: rec.dst_port,
        protocol: rec.protocol,
        bytes: rec.bytes,
        packets: rec.packets,
        tcp_flags: rec.tcp_flags,
        input_interface: rec.input_interface,
        output_interface: rec.output_interface,
        src_as: rec.src_as,
        dst_as: rec.dst_as,
        sampling_rate: rec.sampling_rate,
        flow_start: rec.flow_start_ms.map(rfc3339_ms),
        flow_end: rec.flow_end_ms.map(rfc3339_ms),
        export_time: rfc3339_ms(rec.export_time_ms),
    };
    // Serializing a struct of numbers, strings and addresses cannot fail.
    serde_json::to_string(&j).unwrap_or_default()
}

/// What one `decode` invocation saw, printed as a single JSON line.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Frames read from the capture files.
    pub packets_read: u64,
    /// UDP datagrams handed to the decoder.
    pub datagrams: u64,
    /// Frames that were not UDP, were IP fragments, or were cut short.
    pub frames_skipped: BTreeMap<&'static str, u64>,
    pub flows: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub template_missing: u64,
    pub sequence_gaps: u64,
    pub lost_packets: u64,
    pub lost_records: u64,
    pub sampling_rate_unknown: u64,
    pub clock_clamped: u64,
    pub sflow_counter_samples: u64,
    /// Bytes after the declared content of decoded datagrams, ignored.
    pub trailing_bytes: u64,
    /// Template data records read (v9 and IPFIX, before rules).
    pub data_records: u64,
    /// Records read and not emitted, by reason.
    pub records_skipped: BTreeMap<&'static str, u64>,
    /// Records added by splitting one into two directions (NSEL, RFC 5103).
    pub reverse_records: u64,
}

impl Summary {
    /// Fills the decoder-side figures from the decoder's totals.
    pub fn absorb(&mut self, totals: &ExporterCounters) {
        for p in FlowProtocol::ALL {
            self.flows.insert(p.as_str(), totals.records_for(p));
        }
        for reason in DecodeError::REASONS {
            let n = totals.malformed(reason);
            if n > 0 {
                self.errors.insert(reason, n);
            }
        }
        self.template_missing = totals.template_missing;
        self.sequence_gaps = totals.sequence_gaps;
        self.lost_packets = totals.lost_packets;
        self.lost_records = totals.lost_records;
        self.sampling_rate_unknown = totals.sampling_rate_unknown;
        self.clock_clamped = totals.clock_clamped;
        self.sflow_counter_samples = totals.sflow_counter_samples;
        self.trailing_bytes = totals.trailing_bytes;
        self.data_records = totals.data_records;
        for reason in SkipReason::ALL {
            self.records_skipped
                .insert(reason.as_str(), totals.skipped(reason));
        }
        self.reverse_records = totals.reverse_records;
    }

    pub fn json_line(&self) -> String {
        serde_json::to_string(&serde_json::json!({ "summary": self })).unwrap_or_default()
    }
}
