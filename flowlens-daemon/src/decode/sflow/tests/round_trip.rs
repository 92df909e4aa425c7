//! Property tests: arbitrary flows encoded as sampled headers decode to what was
//! encoded, and mutated or random datagrams never panic.

use proptest::prelude::*;

use super::*;

#[derive(Debug, Clone)]
struct FlowCase {
    agent: IpAddr,
    sub_agent_id: u32,
    expanded: bool,
    sampling_rate: u32,
    input: u32,
    output: u32,
    vlan: Option<u16>,
    src: IpAddr,
    dst: IpAddr,
    tcp: bool,
    src_port: u16,
    dst_port: u16,
    tos: u8,
    flags: u8,
    padding: usize,
}

fn ip_pair() -> impl Strategy<Value = (IpAddr, IpAddr)> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<[u8; 4]>()).prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
        (any::<[u8; 16]>(), any::<[u8; 16]>())
            .prop_map(|(a, b)| (IpAddr::from(a), IpAddr::from(b))),
    ]
}

fn flow_case() -> impl Strategy<Value = FlowCase> {
    (
        (
            ip_pair(),
            any::<u32>(),
            any::<bool>(),
            any::<u32>(),
            1..0x3FFF_FFFEu32,
            1..0x3FFF_FFFEu32,
        ),
        (
            proptest::option::of(1..=4094u16),
            ip_pair(),
            any::<bool>(),
            any::<u16>(),
            any::<u16>(),
        ),
        (any::<u8>(), any::<u8>(), 0..200usize),
    )
        .prop_map(|(a, b, c)| {
            let ((agent, _), sub_agent_id, expanded, sampling_rate, input, output) = a;
            let (vlan, (src, dst), tcp, src_port, dst_port) = b;
            let (tos, flags, padding) = c;
            // UDP to 4789 is VXLAN, which this case does not build.
            let dst_port = if !tcp && dst_port == 4789 {
                4790
            } else {
                dst_port
            };
            FlowCase {
                agent,
                sub_agent_id,
                expanded,
                sampling_rate,
                input,
                output,
                vlan,
                src,
                dst,
                tcp,
                src_port,
                dst_port,
                tos,
                flags,
                padding,
            }
        })
}

impl FlowCase {
    fn header(&self) -> Vec<u8> {
        let protocol = if self.tcp { 6 } else { 17 };
        let l4 = if self.tcp {
            tcp(self.src_port, self.dst_port, self.flags)
        } else {
            udp(self.src_port, self.dst_port, &vec![0xEE; self.padding])
        };
        let tags: Vec<_> = self.vlan.map(|vid| (TPID_8021Q, vid)).into_iter().collect();
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                ethernet(&tags, ETHERTYPE_IPV4, &ipv4(s, d, protocol, self.tos, &l4))
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                ethernet(&tags, ETHERTYPE_IPV6, &ipv6(s, d, protocol, self.tos, &l4))
            }
            _ => unreachable!("ip_pair yields one family"),
        }
    }

    fn sample(&self) -> SampleSpec {
        let mut sample = FlowSampleSpec::new(vec![FlowRecordSpec::ethernet_header(self.header())]);
        sample.expanded = self.expanded;
        sample.sampling_rate = self.sampling_rate;
        sample.input = Interface::Index(self.input);
        sample.output = Interface::Index(self.output);
        SampleSpec::Flow(sample)
    }

    fn expected(&self) -> FlowRecord {
        let mut rec = FlowRecord::empty(FlowProtocol::SflowV5, self.agent, RECEIVED_AT_MS);
        rec.observation_domain = self.sub_agent_id;
        rec.packets = Some(1);
        rec.bytes = Some(self.header().len() as u64 + 4);
        rec.sampling_rate = Some(self.sampling_rate.max(1));
        rec.input_interface = Some(self.input);
        rec.output_interface = Some(self.output);
        rec.src_vlan = self.vlan;
        set_tuple(
            &mut rec,
            self.src,
            self.dst,
            if self.tcp { 6 } else { 17 },
            Some((self.src_port, self.dst_port)),
        );
        rec.tos = Some(self.tos);
        rec.tcp_flags = self.tcp.then_some(u16::from(self.flags));
        rec
    }
}

/// Every case becomes a flow sample of one datagram from the first case's agent.
fn check_round_trip(cases: &[FlowCase], sequence: u32) -> Result<(), TestCaseError> {
    let first = &cases[0];
    let samples = cases.iter().map(FlowCase::sample).collect();
    let mut spec = DatagramSpec::new(first.agent, samples);
    spec.sub_agent_id = first.sub_agent_id;
    spec.sequence = sequence;
    let d = decode(&encode_datagram(&spec));
    let want: Vec<_> = cases
        .iter()
        .map(|c| FlowRecord {
            exporter_ip: first.agent,
            observation_domain: first.sub_agent_id,
            ..c.expected()
        })
        .collect();
    prop_assert_eq!(d.result, Ok(cases.len()));
    prop_assert_eq!(d.records, want);
    prop_assert_eq!(d.counters.sflow_unparsed_headers, 0);
    Ok(())
}

/// Whatever happened, the datagram is counted once and a failure emits nothing.
fn check_accounted(payload: &[u8]) -> Result<(), TestCaseError> {
    let d = decode(payload);
    let c = &d.counters;
    prop_assert_eq!(c.packets, c.decoded_packets + c.malformed_packets);
    match d.result {
        Ok(n) => prop_assert_eq!(n, d.records.len()),
        Err(_) => prop_assert!(d.records.is_empty()),
    }
    Ok(())
}

/// A valid datagram (flow samples and a counter sample) with bytes overwritten and its
/// end cut off. The version is left alone: the dispatcher owns it.
fn mutate(
    cases: &[FlowCase],
    patches: &[(prop::sample::Index, u8)],
    cut: prop::sample::Index,
) -> Vec<u8> {
    let samples = cases
        .iter()
        .map(FlowCase::sample)
        .chain([counters_sample(true)])
        .collect();
    let mut bytes = encode_datagram(&DatagramSpec::new(cases[0].agent, samples));
    for (at, byte) in patches {
        let i = 4 + at.index(bytes.len() - 4);
        bytes[i] = *byte;
    }
    bytes.truncate(4 + cut.index(bytes.len() - 3));
    bytes
}

proptest! {
    #[test]
    fn round_trip(cases in prop::collection::vec(flow_case(), 1..6), sequence in any::<u32>()) {
        check_round_trip(&cases, sequence)?;
    }

    /// Mutated datagrams reach every parser with nonsense: records or an error, no panic.
    #[test]
    fn mutated_datagrams_never_panic(
        cases in prop::collection::vec(flow_case(), 1..4),
        patches in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        check_accounted(&mutate(&cases, &patches, cut))?;
    }

    /// Random bytes after the version: records or an error, no panic.
    #[test]
    fn arbitrary_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..300)) {
        let mut payload = vec![0, 0, 0, 5];
        payload.extend_from_slice(&tail);
        check_accounted(&payload)?;
    }
}
