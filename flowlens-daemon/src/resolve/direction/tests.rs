use std::net::Ipv4Addr;

use proptest::prelude::*;

use super::*;
use crate::resolve::fan_out::PeerCounter;

const UDP: u8 = 17;
const SYN: u16 = 0x02;
const SYN_ACK: u16 = 0x12;
/// FIN|SYN|PSH|ACK: what either side's record of a whole connection carries.
const WHOLE_CONNECTION: u16 = 0x1b;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn flow(src: &str, sport: u16, dst: &str, dport: u16, protocol: u8) -> FlowEnds {
    FlowEnds {
        src_ip: Some(ip(src)),
        dst_ip: Some(ip(dst)),
        src_port: Some(sport),
        dst_port: Some(dport),
        protocol: Some(protocol),
        tcp_flags: None,
        flags_scope: FlagsScope::Cumulative,
    }
}

fn with_flags(f: FlowEnds, flags: u16, scope: FlagsScope) -> FlowEnds {
    FlowEnds {
        tcp_flags: Some(flags),
        flags_scope: scope,
        ..f
    }
}

fn reverse(f: &FlowEnds) -> FlowEnds {
    FlowEnds {
        src_ip: f.dst_ip,
        dst_ip: f.src_ip,
        src_port: f.dst_port,
        dst_port: f.src_port,
        tcp_flags: None,
        ..*f
    }
}

fn key(o: &Oriented) -> (IpAddr, IpAddr, u16, u8) {
    (o.client, o.server, o.server_port, o.protocol)
}

fn oriented(f: &FlowEnds) -> Oriented {
    orient(f, None).unwrap()
}

#[test]
fn tcp_handshake_records_orient_to_one_dependency() {
    let fwd = flow("10.0.0.5", 51514, "10.0.1.10", 5432, TCP);
    let want = (ip("10.0.0.5"), ip("10.0.1.10"), 5432, TCP);

    let syn = oriented(&with_flags(fwd, SYN, FlagsScope::Cumulative));
    assert_eq!(
        (key(&syn), syn.reason, syn.confidence),
        (want, Reason::TcpSyn, 0.95)
    );

    let syn_ack = oriented(&with_flags(reverse(&fwd), SYN_ACK, FlagsScope::PerPacket));
    assert_eq!((key(&syn_ack), syn_ack.reason), (want, Reason::TcpSynAck));

    // Cumulative SYN+ACK says nothing (the client's record has it too): ports decide.
    let cumulative = oriented(&with_flags(reverse(&fwd), SYN_ACK, FlagsScope::Cumulative));
    assert_eq!(
        (key(&cumulative), cumulative.reason),
        (want, Reason::KnownService)
    );
}

#[test]
fn whole_connection_records_of_both_sides_agree() {
    let fwd = flow("10.0.0.5", 51514, "10.0.1.10", 5432, TCP);
    for f in [fwd, reverse(&fwd)] {
        let o = oriented(&with_flags(f, WHOLE_CONNECTION, FlagsScope::Cumulative));
        assert_eq!(key(&o), (ip("10.0.0.5"), ip("10.0.1.10"), 5432, TCP));
        assert_eq!(o.reason, Reason::KnownService);
    }
}

#[test]
fn per_packet_whole_connection_flags_trust_syn_ack() {
    // A single sampled SYN+ACK from a server on an unknown high port still orients.
    let f = with_flags(
        flow("10.0.1.10", 45000, "10.0.0.5", 51514, TCP),
        SYN_ACK,
        FlagsScope::PerPacket,
    );
    let o = oriented(&f);
    assert_eq!(
        (o.client, o.server, o.server_port),
        (ip("10.0.0.5"), ip("10.0.1.10"), 45000)
    );
}

#[test]
fn syn_ack_with_flags_no_syn_ack_packet_has_is_no_evidence() {
    // A "single-packet" record from 10.0.0.5:51000 to 10.0.1.10:7777 (a registered port
    // the service table does not know) whose flags are SYN+ACK plus FIN, PSH or RST is
    // an aggregate of a client's connection, not the server's SYN-ACK: the port rules
    // decide, and 7777 is the server. Plain SYN-ACK (with or without ECN's ECE) still
    // means the sender is the server.
    let f = flow("10.0.0.5", 51000, "10.0.1.10", 7777, TCP);
    for flags in [
        SYN_ACK | 0x01,
        SYN_ACK | 0x08,
        WHOLE_CONNECTION,
        SYN_ACK | 0x04,
    ] {
        let o = oriented(&with_flags(f, flags, FlagsScope::PerPacket));
        assert_ne!(o.reason, Reason::TcpSynAck, "flags {flags:#x}");
        assert_eq!(
            (o.server, o.server_port),
            (ip("10.0.1.10"), 7777),
            "flags {flags:#x}"
        );
    }
    for flags in [SYN_ACK, SYN_ACK | 0x40] {
        let o = oriented(&with_flags(f, flags, FlagsScope::PerPacket));
        assert_eq!(
            (o.reason, o.server),
            (Reason::TcpSynAck, ip("10.0.0.5")),
            "{flags:#x}"
        );
    }
    // SYN without ACK is an initiator's whatever rides along (a SYN scan's RST).
    let o = oriented(&with_flags(f, SYN | 0x04, FlagsScope::Cumulative));
    assert_eq!((o.reason, o.server_port), (Reason::TcpSyn, 7777));
}

#[test]
fn multicast_broadcast_unspecified_and_link_local_ends_make_no_dependency() {
    for (src, dst) in [
        ("0.0.0.0", "255.255.255.255"), // DHCP discovery
        ("10.0.0.5", "239.1.2.3"),      // multicast
        ("10.0.0.5", "224.0.0.251"),    // mDNS
        ("169.254.10.1", "10.0.0.5"),   // link-local
        ("fe80::1", "2001:db8::5"),
        ("2001:db8::5", "ff02::fb"),
        ("::", "ff02::1:2"),
    ] {
        let f = flow(src, 5353, dst, 443, UDP);
        assert_eq!(
            orient(&f, None),
            Err(Unoriented::NotUnicast),
            "{src} -> {dst}"
        );
    }
    assert!(orient(&flow("10.0.0.5", 40000, "192.0.2.9", 443, TCP), None).is_ok());
}

#[test]
fn icmp_without_a_type_orients_both_records_the_same_way() {
    let mut f = flow("10.0.0.9", 0, "10.0.0.2", 0, ICMP);
    (f.src_port, f.dst_port) = (None, None);
    let (a, b) = (oriented(&f), oriented(&reverse(&f)));
    assert_eq!(key(&a), key(&b), "one dependency, not A->B and B->A");
    assert_eq!(a.server, ip("10.0.0.2"));
}

#[test]
fn without_flags_the_service_table_decides() {
    let fwd = flow("10.0.0.5", 51514, "10.0.1.10", 5432, TCP);
    for f in [fwd, reverse(&fwd)] {
        let o = oriented(&f);
        assert_eq!(key(&o), (ip("10.0.0.5"), ip("10.0.1.10"), 5432, TCP));
        assert_eq!((o.reason, o.confidence), (Reason::KnownService, 0.85));
    }
}

#[test]
fn unknown_registered_port_beats_ephemeral() {
    for (client_port, server_port) in [(40001, 8500), (60999, 8500), (50000, 31000)] {
        let fwd = flow("10.0.0.5", client_port, "10.0.1.10", server_port, TCP);
        for f in [fwd, reverse(&fwd)] {
            let o = oriented(&f);
            assert_eq!(key(&o), (ip("10.0.0.5"), ip("10.0.1.10"), server_port, TCP));
            assert_eq!((o.reason, o.confidence), (Reason::RegisteredPort, 0.6));
        }
    }
}

#[test]
fn unknown_well_known_port_beats_any_other() {
    let o = oriented(&flow("10.0.0.6", 600, "10.0.0.5", 20000, UDP));
    assert_eq!(
        (o.server, o.server_port, o.reason),
        (ip("10.0.0.6"), 600, Reason::WellKnownPort)
    );
}

#[test]
fn dns_between_resolvers_collapses_to_one_dependency() {
    let fwd = flow("10.0.0.53", 53, "10.9.0.53", 53, UDP);
    for f in [fwd, reverse(&fwd)] {
        let o = oriented(&f);
        assert_eq!(
            key(&o),
            (ip("10.9.0.53"), ip("10.0.0.53"), 53, UDP),
            "lower address serves"
        );
        assert_eq!((o.reason, o.confidence), (Reason::BothKnownServices, 0.4));
    }
    let client = oriented(&flow("10.0.0.5", 41000, "10.0.0.53", 53, UDP));
    assert_eq!(
        (client.server_port, client.reason),
        (53, Reason::KnownService)
    );
}

#[test]
fn two_known_ports_prefer_the_lower() {
    let o = oriented(&flow("10.0.0.5", 8080, "10.0.1.10", 443, TCP));
    assert_eq!((o.server, o.server_port), (ip("10.0.1.10"), 443));
    assert_eq!((o.reason, o.confidence), (Reason::BothKnownServices, 0.5));
}

#[test]
fn port_scan_syns_orient_to_the_scanned_port() {
    // A scanner sweeping ports from source port 80 (to pass stateless firewalls): the
    // SYN rule wins over the known source port.
    for port in [22, 8500, 31337, 65000] {
        let f = with_flags(
            flow("203.0.113.9", 80, "10.0.0.5", port, TCP),
            SYN,
            FlagsScope::Cumulative,
        );
        let o = oriented(&f);
        assert_eq!(key(&o), (ip("203.0.113.9"), ip("10.0.0.5"), port, TCP));
        assert_eq!(o.reason, Reason::TcpSyn);
    }
}

#[test]
fn fan_out_decides_between_unknown_high_ports() {
    let mut peers = PeerCounter::new(1024);
    let server = Endpoint {
        ip: ip("10.0.1.10"),
        protocol: TCP,
        port: 40000,
    };
    for n in 0..20u8 {
        let client = Endpoint {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, 2, 1 + n)),
            protocol: TCP,
            port: 50000 + u16::from(n),
        };
        peers.observe_pair(client, server);
    }
    let fwd = flow("10.0.2.1", 50000, "10.0.1.10", 40000, TCP);
    let (src, dst) = fwd.endpoints().unwrap();
    let evidence = peers.fan_out(&src, &dst);
    assert_eq!(
        evidence,
        FanOut {
            src_peers: 1,
            dst_peers: 20
        }
    );

    let o = orient(&fwd, Some(evidence)).unwrap();
    let back = orient(&reverse(&fwd), Some(evidence.swapped())).unwrap();
    for o in [o, back] {
        assert_eq!(key(&o), (ip("10.0.2.1"), ip("10.0.1.10"), 40000, TCP));
        assert_eq!(o.reason, Reason::FanOut);
        assert!((0.6..=0.7).contains(&o.confidence), "{}", o.confidence);
    }
    // Without evidence the lower port would have been chosen: the client's.
    let guess = oriented(&flow("10.0.2.1", 39000, "10.0.1.10", 40000, TCP));
    assert_eq!(
        (guess.server_port, guess.reason),
        (39000, Reason::LowerPort)
    );
}

#[test]
fn weak_or_tied_fan_out_falls_through_to_lower_port() {
    let f = flow("10.0.0.5", 45000, "10.0.0.6", 50000, TCP);
    for evidence in [
        FanOut {
            src_peers: 1,
            dst_peers: 2,
        },
        FanOut {
            src_peers: 64,
            dst_peers: 64,
        },
    ] {
        let o = orient(&f, Some(evidence)).unwrap();
        assert_eq!(
            (o.server_port, o.reason, o.confidence),
            (45000, Reason::LowerPort, 0.3)
        );
    }
    let capped = orient(
        &f,
        Some(FanOut {
            src_peers: 0,
            dst_peers: 1_000_000,
        }),
    )
    .unwrap();
    assert_eq!((capped.server_port, capped.reason), (50000, Reason::FanOut));
    assert!(capped.confidence <= 0.7);
    let equal = oriented(&flow("10.0.0.6", 40000, "10.0.0.5", 40000, TCP));
    assert_eq!((equal.server, equal.confidence), (ip("10.0.0.5"), 0.2));
}

#[test]
fn icmp_echo_orients_to_the_pinged_host() {
    let mut request = flow("10.0.0.5", 0, "8.8.8.8", 8 << 8, ICMP);
    let o = oriented(&request);
    assert_eq!(key(&o), (ip("10.0.0.5"), ip("8.8.8.8"), 0, ICMP));
    assert_eq!((o.reason, o.confidence), (Reason::IcmpEchoRequest, 0.9));

    let reply = oriented(&flow("8.8.8.8", 0, "10.0.0.5", 0, ICMP));
    assert_eq!(key(&reply), key(&o));
    assert_eq!(
        (reply.reason, reply.confidence),
        (Reason::IcmpEchoReply, 0.5)
    );

    let v6_reply = oriented(&flow("2001:db8::1", 0, "fd00::5", 129 << 8, ICMPV6));
    assert_eq!(
        (v6_reply.client, v6_reply.server),
        (ip("fd00::5"), ip("2001:db8::1"))
    );
    assert_eq!(
        (v6_reply.reason, v6_reply.confidence),
        (Reason::IcmpEchoReply, 0.9)
    );

    let unreachable = oriented(&flow("10.0.0.1", 0, "10.0.0.5", 3 << 8 | 3, ICMP));
    assert_eq!(
        (unreachable.server, unreachable.reason),
        (ip("10.0.0.5"), Reason::IcmpOther)
    );
    // No type at all: a guess, the same for both records (see below).
    request.dst_port = None;
    assert_eq!(
        (oriented(&request).reason, oriented(&request).confidence),
        (Reason::IcmpOther, 0.1)
    );
}

#[test]
fn records_that_cannot_be_oriented_say_why() {
    let ok = flow("10.0.0.5", 51514, "10.0.1.10", 5432, TCP);
    let cases = [
        (
            FlowEnds {
                protocol: None,
                ..ok
            },
            Unoriented::MissingProtocol,
        ),
        (FlowEnds { dst_ip: None, ..ok }, Unoriented::MissingAddress),
        (
            FlowEnds {
                src_port: None,
                ..ok
            },
            Unoriented::MissingPorts,
        ),
        (
            FlowEnds {
                dst_port: Some(0),
                ..ok
            },
            Unoriented::MissingPorts,
        ),
        (
            FlowEnds {
                protocol: Some(47),
                ..ok
            },
            Unoriented::PortlessProtocol,
        ),
    ];
    for (f, want) in cases {
        assert_eq!(orient(&f, None), Err(want), "{}", want.reason());
        assert_eq!(f.endpoints(), None, "no fan-out evidence without ports");
    }
    let icmp = flow("10.0.0.5", 0, "8.8.8.8", 8 << 8, ICMP);
    assert_eq!(icmp.endpoints(), None);
}

#[test]
fn flow_record_conversion_picks_the_flags_scope() {
    let mut rec = FlowRecord::empty(FlowProtocol::Ipfix, ip("192.0.2.1"), 0);
    rec.src_ip = Some(ip("10.0.1.10"));
    rec.tcp_flags = Some(SYN_ACK);
    rec.packets = Some(12);
    assert_eq!(FlowEnds::from(&rec).flags_scope, FlagsScope::Cumulative);
    rec.packets = Some(1);
    assert_eq!(FlowEnds::from(&rec).flags_scope, FlagsScope::PerPacket);
    rec.proto = FlowProtocol::SflowV5;
    rec.packets = None;
    let ends = FlowEnds::from(&rec);
    assert_eq!(
        (ends.flags_scope, ends.src_ip, ends.tcp_flags),
        (FlagsScope::PerPacket, rec.src_ip, Some(SYN_ACK))
    );
}

/// A learnt listener on a high port beats the port rules (here "lower port", which
/// would pick the client's 41000), from either record; both or neither learnt: the
/// port rules decide.
#[test]
fn a_learnt_listener_is_the_server_before_the_port_rules() {
    let f = flow("10.0.0.5", 41000, "10.0.0.9", 50051, UDP);
    assert_eq!(
        orient(&f, None).unwrap().server_port,
        41000,
        "the guess is wrong"
    );
    let l = Listening {
        src: false,
        dst: true,
    };
    let o = orient_with(&f, None, l).unwrap();
    assert_eq!(
        (o.server, o.server_port, o.reason),
        (ip("10.0.0.9"), 50051, Reason::LearntListener)
    );
    let back = orient_with(&reverse(&f), None, l.swapped()).unwrap();
    assert_eq!(key(&back), key(&o));
    let both = Listening {
        src: true,
        dst: true,
    };
    assert_eq!(
        orient_with(&f, None, both).unwrap().reason,
        Reason::LowerPort
    );
    // A SYN still decides first.
    let mut syn = flow("10.0.0.9", 50051, "10.0.0.5", 41000, TCP);
    syn.tcp_flags = Some(0x02);
    let o = orient_with(
        &syn,
        None,
        Listening {
            src: true,
            dst: false,
        },
    )
    .unwrap();
    assert_eq!(o.reason, Reason::TcpSyn);
}

#[test]
fn reason_labels_are_distinct() {
    let all = [
        Reason::TcpSyn,
        Reason::TcpSynAck,
        Reason::LearntListener,
        Reason::KnownService,
        Reason::BothKnownServices,
        Reason::WellKnownPort,
        Reason::RegisteredPort,
        Reason::FanOut,
        Reason::LowerPort,
        Reason::IcmpEchoRequest,
        Reason::IcmpEchoReply,
        Reason::IcmpOther,
    ];
    let labels: std::collections::HashSet<_> = all.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), all.len());
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        Just(0u16),
        prop::sample::select(vec![22u16, 53, 123, 443, 5432, 8080, 8500, 40000, 51820]),
        1u16..1024,
        1024u16..32768,
        any::<u16>(),
    ]
}

fn addr() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        (0u8..4).prop_map(|n| IpAddr::V4(Ipv4Addr::new(10, 0, 0, n))),
        any::<u128>().prop_map(|n| IpAddr::V6(n.into())),
    ]
}

fn flow_ends() -> impl Strategy<Value = FlowEnds> {
    let scope = prop_oneof![Just(FlagsScope::Cumulative), Just(FlagsScope::PerPacket)];
    let protocol = prop::sample::select(vec![TCP, UDP, 132u8, ICMP, 47]);
    (
        addr(),
        addr(),
        port(),
        port(),
        protocol,
        proptest::option::of(any::<u16>()),
        scope,
    )
        .prop_map(
            |(src, dst, sp, dp, protocol, tcp_flags, flags_scope)| FlowEnds {
                src_ip: Some(src),
                dst_ip: Some(dst),
                src_port: Some(sp),
                dst_port: Some(dp),
                protocol: Some(protocol),
                tcp_flags,
                flags_scope,
            },
        )
}

proptest! {
    /// Rules b-e see a record and its reverse the same way, so a connection's two
    /// records make one dependency however its flags were reported.
    #[test]
    fn reverse_record_orients_the_same(
        f in flow_ends(),
        evidence in proptest::option::of((0u32..80, 0u32..80)),
        listening in (any::<bool>(), any::<bool>()),
    ) {
        let evidence = evidence.map(|(src_peers, dst_peers)| FanOut { src_peers, dst_peers });
        let listening = Listening { src: listening.0, dst: listening.1 };
        let Ok(o) = orient_with(&f, evidence, listening) else { return Ok(()) };
        prop_assert!((0.0..=1.0).contains(&o.confidence));
        let is_icmp = matches!(f.protocol, Some(ICMP));
        if o.reason.is_tcp_flags() || is_icmp {
            return Ok(());
        }
        let back =
            orient_with(&reverse(&f), evidence.map(FanOut::swapped), listening.swapped()).unwrap();
        prop_assert_eq!(key(&o), key(&back));
        prop_assert_eq!((o.reason, o.confidence), (back.reason, back.confidence));
        prop_assert!(o.server_port == f.src_port.unwrap() || o.server_port == f.dst_port.unwrap());
    }
}

#[test]
fn every_unoriented_reason_has_its_own_index() {
    for (i, why) in Unoriented::ALL.iter().enumerate() {
        assert_eq!(why.index(), i, "{why:?}");
    }
}
