//! PURE: received datagrams to and from `flowlens.v1.RawDatagram` records.
//!
//! The record key is the exporter's address as 16 bytes (IPv4 as IPv4-mapped IPv6),
//! the same key whichever family or intake path saw it, so the default partitioner
//! puts every datagram of one exporter in one partition, where one consumer reads
//! them in order: its templates arrive before the data that needs them, and its
//! sequence numbers can be checked. The consequence, documented in the README: one
//! exporter's rate is bounded by what one `process` consumer can decode.

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

/// The partitioning key of an exporter's records.
pub fn key(exporter: IpAddr) -> [u8; 16] {
    match exporter {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// Encodes a received datagram; `ingest_id` names the instance that received it.
pub fn encode(d: &RawDatagram, ingest_id: &str) -> Vec<u8> {
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
        ingest_id: ingest_id.to_owned(),
    }
    .encode_to_vec()
}

/// Decodes a record into the datagram it carries and the ingest instance's id.
pub fn decode(bytes: &[u8]) -> Result<(RawDatagram, String), RawRecordError> {
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
        r.ingest_id,
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
            let (back, id) = decode(&encode(&d, "ingest-a")).unwrap();
            assert_eq!((back, id.as_str()), (d, "ingest-a"));
        }
        let mut t = datagram("192.0.2.7");
        t.truncated_from = Some(70_000);
        t.source = Source::Udp;
        assert_eq!(decode(&encode(&t, "")).unwrap().0, t);
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
