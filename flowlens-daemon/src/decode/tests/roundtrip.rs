//! Property tests: encode arbitrary records with the wire builders, decode, compare.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use crate::decode::{Datagram, Decoder};
use crate::flow::FlowRecord;
use crate::testing::wire::*;

const EXPORTER: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7));
const T0_S: u32 = 1_767_225_600;

fn decode(d: &mut Decoder, payload: &[u8]) -> Vec<FlowRecord> {
    let mut out = Vec::new();
    d.decode(
        &Datagram {
            exporter: EXPORTER,
            received_at_ms: u64::from(T0_S) * 1000,
            payload,
        },
        &mut out,
    )
    .expect("round trip must decode");
    out
}

fn arb_v5() -> impl Strategy<Value = V5Record> {
    (
        any::<[u8; 4]>(),
        any::<[u8; 4]>(),
        any::<(u16, u16, u8, u8)>(),
        any::<(u32, u32)>(),
        0u32..3_600_000,
        0u32..3_600_000,
    )
        .prop_map(
            |(src, dst, (sp, dp, proto, flags), (packets, bytes), a, b)| V5Record {
                src,
                dst,
                src_port: sp,
                dst_port: dp,
                protocol: proto,
                tcp_flags: flags,
                packets,
                bytes,
                // Both within an hour before the export uptime of 10 h.
                first: 36_000_000 - a.max(b),
                last: 36_000_000 - a.min(b),
                ..V5Record::default()
            },
        )
}

#[derive(Debug, Clone)]
struct Flow {
    src: IpAddr,
    dst: IpAddr,
    sp: u16,
    dp: u16,
    proto: u8,
    bytes: u64,
    packets: u64,
    start_ms: u64,
    dur_ms: u64,
}

fn arb_flow(v6: bool) -> impl Strategy<Value = Flow> {
    let addr = move || {
        if v6 {
            any::<u128>()
                .prop_map(|a| IpAddr::V6(Ipv6Addr::from(a)))
                .boxed()
        } else {
            any::<u32>()
                .prop_map(|a| IpAddr::V4(Ipv4Addr::from(a)))
                .boxed()
        }
    };
    (
        addr(),
        addr(),
        any::<(u16, u16, u8)>(),
        any::<(u64, u64)>(),
        1_000u64..3_600_000,
        0u64..1_000,
    )
        .prop_map(
            |(src, dst, (sp, dp, proto), (bytes, packets), ago, dur)| Flow {
                src,
                dst,
                sp,
                dp,
                proto,
                bytes,
                packets,
                start_ms: u64::from(T0_S) * 1000 - ago,
                dur_ms: dur.min(ago),
            },
        )
}

fn addr_bytes(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

fn check(out: &[FlowRecord], flows: &[Flow]) -> Result<(), TestCaseError> {
    prop_assert_eq!(out.len(), flows.len());
    for (r, f) in out.iter().zip(flows) {
        prop_assert_eq!(r.src_ip, Some(f.src));
        prop_assert_eq!(r.dst_ip, Some(f.dst));
        prop_assert_eq!(
            (r.src_port, r.dst_port, r.protocol),
            (Some(f.sp), Some(f.dp), Some(f.proto))
        );
        prop_assert_eq!((r.bytes, r.packets), (Some(f.bytes), Some(f.packets)));
        prop_assert_eq!(r.flow_start_ms, Some(f.start_ms));
        prop_assert_eq!(r.flow_end_ms, Some(f.start_ms + f.dur_ms));
    }
    Ok(())
}

proptest! {
    #[test]
    fn netflow_v5_round_trip(recs in proptest::collection::vec(arb_v5(), 1..=30), seq: u32) {
        let pkt = v5_packet(seq, 36_000_000, T0_S, 0, 0, &recs);
        let out = decode(&mut Decoder::default(), &pkt);
        prop_assert_eq!(out.len(), recs.len());
        let export = u64::from(T0_S) * 1000;
        for (r, v) in out.iter().zip(&recs) {
            prop_assert_eq!(r.src_ip, Some(IpAddr::V4(Ipv4Addr::from(v.src))));
            prop_assert_eq!(r.dst_ip, Some(IpAddr::V4(Ipv4Addr::from(v.dst))));
            prop_assert_eq!((r.src_port, r.dst_port), (Some(v.src_port), Some(v.dst_port)));
            prop_assert_eq!((r.protocol, r.tcp_flags), (Some(v.protocol), Some(u16::from(v.tcp_flags))));
            prop_assert_eq!((r.bytes, r.packets), (Some(u64::from(v.bytes)), Some(u64::from(v.packets))));
            prop_assert_eq!(r.flow_start_ms, Some(export - u64::from(36_000_000 - v.first)));
            prop_assert_eq!(r.flow_end_ms, Some(export - u64::from(36_000_000 - v.last)));
        }
    }

    #[test]
    fn netflow_v9_round_trip(v6: bool, flows in proptest::collection::vec(arb_flow(false), 1..20), flows6 in proptest::collection::vec(arb_flow(true), 1..20)) {
        let flows = if v6 { flows6 } else { flows };
        let (s, d) = if v6 { (27, 28) } else { (8, 12) };
        let alen = if v6 { 16 } else { 4 };
        // FIRST/LAST_SWITCHED relative to an uptime of 10 h at export.
        let fields = vec![(s, alen), (d, alen), (7, 2), (11, 2), (4, 1), (1, 8), (2, 8), (22, 4), (21, 4)];
        let uptime: u32 = 36_000_000;
        let export = u64::from(T0_S) * 1000;
        let mut data = Vec::new();
        for f in &flows {
            data.extend(addr_bytes(f.src));
            data.extend(addr_bytes(f.dst));
            data.extend_from_slice(&f.sp.to_be_bytes());
            data.extend_from_slice(&f.dp.to_be_bytes());
            data.push(f.proto);
            data.extend_from_slice(&f.bytes.to_be_bytes());
            data.extend_from_slice(&f.packets.to_be_bytes());
            let first = uptime - u32::try_from(export - f.start_ms).unwrap();
            let last = first + u32::try_from(f.dur_ms).unwrap();
            data.extend_from_slice(&first.to_be_bytes());
            data.extend_from_slice(&last.to_be_bytes());
        }
        let tpl = v9_template_flowset(&[(256, fields)]);
        let pkt = v9_packet(1, uptime, T0_S, 0, &[tpl, data_set(256, &data, 3)]);
        check(&decode(&mut Decoder::default(), &pkt), &flows)?;
    }

    #[test]
    fn ipfix_round_trip(v6: bool, flows in proptest::collection::vec(arb_flow(false), 1..20), flows6 in proptest::collection::vec(arb_flow(true), 1..20), names in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 20)) {
        let flows = if v6 { flows6 } else { flows };
        let (s, d) = if v6 { (27, 28) } else { (8, 12) };
        let alen = if v6 { 16 } else { 4 };
        let fields = [
            Ie::new(s, alen), Ie::new(d, alen), Ie::new(7, 2), Ie::new(11, 2), Ie::new(4, 1),
            // A variable-length enterprise field between the counters and the times
            // (Barracuda's ServiceName).
            Ie::new(1, 8), Ie::ent(5, 65535, 10_704), Ie::new(2, 8), Ie::new(152, 8), Ie::new(153, 8),
        ];
        let mut data = Vec::new();
        for (f, name) in flows.iter().zip(&names) {
            data.extend(addr_bytes(f.src));
            data.extend(addr_bytes(f.dst));
            data.extend_from_slice(&f.sp.to_be_bytes());
            data.extend_from_slice(&f.dp.to_be_bytes());
            data.push(f.proto);
            data.extend_from_slice(&f.bytes.to_be_bytes());
            if name.len() < 255 {
                data.push(u8::try_from(name.len()).unwrap());
            } else {
                data.push(255);
                data.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
            }
            data.extend_from_slice(name);
            data.extend_from_slice(&f.packets.to_be_bytes());
            data.extend_from_slice(&f.start_ms.to_be_bytes());
            data.extend_from_slice(&(f.start_ms + f.dur_ms).to_be_bytes());
        }
        let tpl = ipfix_template_set(2, &[(300, &fields[..])]);
        let msg = ipfix_message(T0_S, 0, 9, &[tpl, data_set(300, &data, 0)]);
        prop_assume!(u16::try_from(msg.len()).is_ok());
        check(&decode(&mut Decoder::default(), &msg), &flows)?;
    }
}

/// One field the accounting property draws templates from: an information element
/// (enterprise 0 or a vendor's) and its length (65535 = variable).
#[derive(Debug, Clone, Copy)]
struct Pool {
    ie: u16,
    pen: u32,
    len: u16,
}

/// Fields real templates carry: both address families, counters of every kind
/// (IANA, NSEL, RFC 5103 reverse), firewall events, and enterprise fields of fixed and
/// variable length from Barracuda (10704), Procera (15397) and CERT/YAF (6871).
const POOL: &[Pool] = &[
    Pool {
        ie: 8,
        pen: 0,
        len: 4,
    },
    Pool {
        ie: 12,
        pen: 0,
        len: 4,
    },
    Pool {
        ie: 27,
        pen: 0,
        len: 16,
    },
    Pool {
        ie: 28,
        pen: 0,
        len: 16,
    },
    Pool {
        ie: 15,
        pen: 0,
        len: 4,
    },
    Pool {
        ie: 62,
        pen: 0,
        len: 16,
    },
    Pool {
        ie: 7,
        pen: 0,
        len: 2,
    },
    Pool {
        ie: 11,
        pen: 0,
        len: 2,
    },
    Pool {
        ie: 4,
        pen: 0,
        len: 1,
    },
    Pool {
        ie: 6,
        pen: 0,
        len: 1,
    },
    Pool {
        ie: 60,
        pen: 0,
        len: 1,
    },
    Pool {
        ie: 1,
        pen: 0,
        len: 8,
    },
    Pool {
        ie: 2,
        pen: 0,
        len: 4,
    },
    Pool {
        ie: 85,
        pen: 0,
        len: 8,
    },
    Pool {
        ie: 86,
        pen: 0,
        len: 8,
    },
    Pool {
        ie: 152,
        pen: 0,
        len: 8,
    },
    Pool {
        ie: 153,
        pen: 0,
        len: 8,
    },
    Pool {
        ie: 233,
        pen: 0,
        len: 1,
    },
    Pool {
        ie: 231,
        pen: 0,
        len: 4,
    },
    Pool {
        ie: 232,
        pen: 0,
        len: 4,
    },
    Pool {
        ie: 298,
        pen: 0,
        len: 4,
    },
    Pool {
        ie: 299,
        pen: 0,
        len: 4,
    },
    Pool {
        ie: 1,
        pen: 29_305,
        len: 8,
    },
    Pool {
        ie: 2,
        pen: 29_305,
        len: 8,
    },
    Pool {
        ie: 6,
        pen: 29_305,
        len: 1,
    },
    Pool {
        ie: 1,
        pen: 10_704,
        len: 4,
    },
    Pool {
        ie: 4,
        pen: 10_704,
        len: 65_535,
    },
    Pool {
        ie: 5,
        pen: 10_704,
        len: 65_535,
    },
    Pool {
        ie: 7,
        pen: 10_704,
        len: 65_535,
    },
    Pool {
        ie: 1,
        pen: 15_397,
        len: 65_535,
    },
    Pool {
        ie: 3,
        pen: 15_397,
        len: 8,
    },
    Pool {
        ie: 14,
        pen: 6_871,
        len: 1,
    },
    Pool {
        ie: 999,
        pen: 0,
        len: 65_535,
    },
];

/// Values for each field of each record: bytes for fixed fields, a length-prefixed
/// string for variable ones; small values often, so zero addresses, zero counters and
/// every firewall event come up.
fn arb_value(p: Pool) -> BoxedStrategy<Vec<u8>> {
    if p.len == 65_535 {
        return proptest::collection::vec(any::<u8>(), 0..300).boxed();
    }
    let len = usize::from(p.len);
    prop_oneof![
        proptest::collection::vec(any::<u8>(), len),
        Just(vec![0; len]),
        (0u8..=5).prop_map(move |v| {
            let mut b = vec![0; len];
            b[len - 1] = v;
            b
        }),
    ]
    .boxed()
}

fn arb_template() -> impl Strategy<Value = (Vec<Pool>, Vec<Vec<Vec<u8>>>)> {
    proptest::collection::vec(proptest::sample::select(POOL), 1..28).prop_flat_map(|fields| {
        let record = fields.iter().map(|f| arb_value(*f)).collect::<Vec<_>>();
        (Just(fields), proptest::collection::vec(record, 1..8))
    })
}

/// The value of the first occurrence of (`ie`, `pen`) in a record.
fn first(fields: &[Pool], values: &[Vec<u8>], ie: u16, pen: u32) -> Option<u64> {
    fields
        .iter()
        .position(|f| f.ie == ie && f.pen == pen)
        .map(|i| values[i].iter().fold(0u64, |a, b| a << 8 | u64::from(*b)))
}

proptest! {
    /// Every data record read is emitted or counted: records out = records in -
    /// skipped (counted by reason) + reverse directions split off, the skips are
    /// exactly the NSEL-style events, and no record has a zero endpoint when its
    /// template gave it a real one.
    #[test]
    fn every_record_is_emitted_or_counted((fields, records) in arb_template()) {
        let ies: Vec<Ie> = fields.iter().map(|f| Ie::ent(f.ie, f.len, f.pen)).collect();
        let mut data = Vec::new();
        for values in &records {
            for (f, v) in fields.iter().zip(values) {
                if f.len == 65_535 {
                    if v.len() < 255 {
                        data.push(u8::try_from(v.len()).unwrap());
                    } else {
                        data.push(255);
                        data.extend_from_slice(&u16::try_from(v.len()).unwrap().to_be_bytes());
                    }
                }
                data.extend_from_slice(v);
            }
        }
        let tpl = ipfix_template_set(2, &[(400, &ies[..])]);
        let msg = ipfix_message(T0_S, 0, 3, &[tpl, data_set(400, &data, 0)]);
        prop_assume!(u16::try_from(msg.len()).is_ok());
        let mut d = Decoder::default();
        let out = decode(&mut d, &msg);
        let c = d.totals();
        prop_assert_eq!(c.data_records, records.len() as u64);
        let skipped = c.skipped(crate::decode::SkipReason::FirewallEvent);
        prop_assert_eq!(out.len() as u64, c.data_records - skipped + c.reverse_records);
        prop_assert_eq!(c.records_for(crate::flow::FlowProtocol::Ipfix), out.len() as u64);

        let counters = [1, 2, 85, 86].iter().any(|ie| first(&fields, &records[0], *ie, 0).is_some());
        let mut expected_skips = 0;
        let mut primary = out.iter();
        for values in &records {
            let event = first(&fields, values, 233, 0);
            if !counters && event.is_some_and(|e| e != 2 && e != 5) {
                expected_skips += 1;
                continue;
            }
            let Some(rec) = primary.next() else {
                return Err(TestCaseError::fail("fewer records than expected"));
            };
            let real = |ies: [u16; 2]| ies.iter().any(|ie| first(&fields, values, *ie, 0).is_some_and(|a| a != 0));
            if real([8, 27]) {
                prop_assert!(rec.src_ip.is_some_and(|a| !a.is_unspecified()), "{:?}", rec.src_ip);
            }
            if real([12, 28]) {
                prop_assert!(rec.dst_ip.is_some_and(|a| !a.is_unspecified()), "{:?}", rec.dst_ip);
            }
            // Skip the reverse record this one may have split off.
            let nsel = [231, 232, 298, 299].iter().any(|ie| first(&fields, values, *ie, 0).is_some());
            let responder = if nsel {
                [232, 299].iter().any(|ie| first(&fields, values, *ie, 0).is_some_and(|v| v > 0))
            } else {
                [1, 2].iter().any(|ie| first(&fields, values, *ie, 29_305).is_some_and(|v| v > 0))
            };
            if responder {
                prop_assert!(primary.next().is_some(), "a reverse record");
            }
        }
        prop_assert!(primary.next().is_none());
        prop_assert_eq!(skipped, expected_skips);
    }
}
