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
            // A variable-length enterprise field between the counters and the times.
            Ie::new(1, 8), Ie::ent(1, 65535, 29305), Ie::new(2, 8), Ie::new(152, 8), Ie::new(153, 8),
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
