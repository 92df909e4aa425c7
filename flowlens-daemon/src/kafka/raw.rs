//! PURE: received datagrams to and from `flowlens.v1.RawDatagram` records.
//!
//! The record key is the exporter's address as 16 bytes (IPv4 as IPv4-mapped IPv6),
//! the same key whichever family or intake path saw it, so the default partitioner
//! puts every datagram of one exporter in one partition, where one consumer reads
//! them in order: its templates arrive before the data that needs them, and its
//! sequence numbers can be checked. The consequence, documented in the README: one
//! exporter's rate is bounded by what one `process` consumer can decode.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use prost::Message as _;

use super::proto;
use crate::ingest::datagram::{RawDatagram, Source, exporter_ip};

/// Why a record could not be read as a `RawDatagram`. The consumer counts it
/// (`flowlens_kafka_records_undecodable_total`) and skips it.
#[derive(Debug, thiserror::Error)]
pub enum RawRecordError {
    #[error("not a flowlens.v1.RawDatagram: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("exporter address of {0} bytes (4 or 16 expected)")]
    Exporter(usize),
    #[error("unknown source {0}")]
    Source(i32),
    #[error("empty payload")]
    Empty,
}

/// Which ingest process produced a record, and its number there: what tells a copy
/// (a producer's retry the broker wrote twice) from a new record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub ingest_id: String,
    /// When the ingest process started, ms since the epoch (0: unknown).
    pub started_ms: u64,
    /// The record's number in that process's output, from 1 (0: unknown).
    pub sequence: u64,
}

impl Origin {
    /// An origin with only a name (no sequence: never taken for a copy).
    pub fn named(ingest_id: &str) -> Self {
        Self {
            ingest_id: ingest_id.to_owned(),
            ..Self::default()
        }
    }
}

/// Tells a copy from a new record: per exporter and ingest process, the highest record
/// number seen. One exporter's records are in one partition, in the order of their
/// numbers (the producer numbers and queues them under one lock), so a number not
/// above the last is a copy a producer's retry had the broker write twice (tansu does
/// after a restart; a Kafka whose producer state was lost would too).
#[derive(Debug, Default)]
pub struct Copies {
    last: HashMap<(IpAddr, u64), Vec<(String, u64)>>,
}

impl Copies {
    /// Exporter and ingest-process pairs remembered at most (then forgotten all at
    /// once: a copy right after that is taken as new).
    pub const MAX_TRACKED: usize = 100_000;

    /// Whether the record is a copy of one seen before; remembers it when it is not.
    pub fn is_copy(&mut self, exporter: IpAddr, o: &Origin) -> bool {
        if o.sequence == 0 {
            return false;
        }
        if self.last.len() >= Self::MAX_TRACKED
            && !self.last.contains_key(&(exporter, o.started_ms))
        {
            self.last.clear();
        }
        let seen = self.last.entry((exporter, o.started_ms)).or_default();
        match seen.iter_mut().find(|(id, _)| *id == o.ingest_id) {
            Some((_, last)) if o.sequence <= *last => true,
            Some((_, last)) => {
                *last = o.sequence;
                false
            }
            None => {
                seen.push((o.ingest_id.clone(), o.sequence));
                false
            }
        }
    }
}

/// The partitioning key of an exporter's records.
pub fn key(exporter: IpAddr) -> [u8; 16] {
    match exporter {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Encodes a received datagram and where it was produced.
pub fn encode(d: &RawDatagram, origin: &Origin) -> Vec<u8> {
    let exporter = match d.exporter {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    proto::RawDatagram {
        exporter,
        received_at_ms: d.received_at_ms,
        presample_rate: d.presample_rate,
        source: match d.source {
            Source::Xdp => proto::Source::Xdp,
            Source::Udp => proto::Source::Udp,
        } as i32,
        payload: d.payload.clone(),
        truncated_from: d
            .truncated_from
            .map_or(0, |n| u32::try_from(n).unwrap_or(u32::MAX)),
        ingest_id: origin.ingest_id.clone(),
        ingest_started_ms: origin.started_ms,
        sequence: origin.sequence,
    }
    .encode_to_vec()
}

/// Decodes a record into the datagram it carries and where it was produced.
pub fn decode(bytes: &[u8]) -> Result<(RawDatagram, Origin), RawRecordError> {
    let r = proto::RawDatagram::decode(bytes)?;
    let exporter = match r.exporter.len() {
        4 => IpAddr::V4(Ipv4Addr::new(
            r.exporter[0],
            r.exporter[1],
            r.exporter[2],
            r.exporter[3],
        )),
        16 => {
            let mut o = [0_u8; 16];
            o.copy_from_slice(&r.exporter);
            exporter_ip(Ipv6Addr::from(o).octets())
        }
        n => return Err(RawRecordError::Exporter(n)),
    };
    let source = match proto::Source::try_from(r.source) {
        Ok(proto::Source::Xdp) => Source::Xdp,
        Ok(proto::Source::Udp) => Source::Udp,
        _ => return Err(RawRecordError::Source(r.source)),
    };
    if r.payload.is_empty() {
        return Err(RawRecordError::Empty);
    }
    Ok((
        RawDatagram {
            exporter,
            received_at_ms: r.received_at_ms,
            // proto3 leaves 0 for "not set": nothing was sampled out.
            presample_rate: r.presample_rate.max(1),
            source,
            payload: r.payload,
            truncated_from: (r.truncated_from > 0)
                .then(|| usize::try_from(r.truncated_from).unwrap_or(usize::MAX)),
        },
        Origin {
            ingest_id: r.ingest_id,
            started_ms: r.ingest_started_ms,
            sequence: r.sequence,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn datagram(exporter: &str) -> RawDatagram {
        RawDatagram {
            exporter: exporter.parse().unwrap(),
            received_at_ms: 1_765_000_000_123,
            presample_rate: 4,
            source: Source::Xdp,
            payload: vec![0, 9, 0, 1, 2, 3],
            truncated_from: None,
        }
    }

    #[test]
    fn datagrams_round_trip_and_keys_ignore_the_family() {
        for e in ["192.0.2.7", "2001:db8::7"] {
            let d = datagram(e);
            let origin = Origin {
                ingest_id: "ingest-a".into(),
                started_ms: 1_765_000_000_000,
                sequence: 42,
            };
            let (back, o) = decode(&encode(&d, &origin)).unwrap();
            assert_eq!((back, o), (d, origin));
        }
        let mut t = datagram("192.0.2.7");
        t.truncated_from = Some(70_000);
        t.source = Source::Udp;
        assert_eq!(decode(&encode(&t, &Origin::default())).unwrap().0, t);
        // An IPv4 exporter has one key whether it came as IPv4 or IPv4-mapped IPv6.
        assert_eq!(
            key("192.0.2.7".parse().unwrap()),
            key("::ffff:192.0.2.7".parse().unwrap())
        );
        assert_ne!(
            key("192.0.2.7".parse().unwrap()),
            key("192.0.2.8".parse().unwrap())
        );
    }

    #[test]
    fn copies_are_told_by_exporter_ingest_process_and_number() {
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let o = |id: &str, started_ms, sequence| Origin {
            ingest_id: id.into(),
            started_ms,
            sequence,
        };
        let mut c = Copies::default();
        assert!(!c.is_copy(a, &o("i1", 100, 1)));
        assert!(!c.is_copy(a, &o("i1", 100, 2)));
        assert!(c.is_copy(a, &o("i1", 100, 2)), "a retry written twice");
        assert!(c.is_copy(a, &o("i1", 100, 1)));
        // Another exporter, ingest instance or process start counts on its own.
        assert!(!c.is_copy(b, &o("i1", 100, 1)));
        assert!(!c.is_copy(a, &o("i2", 100, 1)));
        assert!(
            !c.is_copy(a, &o("i1", 200, 1)),
            "the ingest process restarted"
        );
        // Gaps (refused datagrams) are fine; unnumbered records are never copies.
        assert!(!c.is_copy(a, &o("i1", 100, 9)));
        assert!(!c.is_copy(a, &o("i1", 100, 0)));
        assert!(!c.is_copy(a, &o("i1", 100, 0)));
    }

    #[test]
    fn records_that_are_not_datagrams_are_errors_not_panics() {
        assert!(decode(b"\xff\xff\xff\xff").is_err());
        let bad_exporter = proto::RawDatagram {
            exporter: vec![1, 2, 3],
            payload: vec![1],
            source: 1,
            ..Default::default()
        };
        assert!(matches!(
            decode(&bad_exporter.encode_to_vec()),
            Err(RawRecordError::Exporter(3))
        ));
        let bad_source = proto::RawDatagram {
            exporter: vec![1, 2, 3, 4],
            payload: vec![1],
            source: 9,
            ..Default::default()
        };
        assert!(matches!(
            decode(&bad_source.encode_to_vec()),
            Err(RawRecordError::Source(9))
        ));
        assert!(matches!(decode(&[]), Err(RawRecordError::Exporter(0))));
    }
}
