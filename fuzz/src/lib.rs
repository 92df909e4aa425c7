//! What the decode fuzz targets share: how a fuzz input becomes a datagram, and the
//! invariants checked after every decode.
//!
//! `flowlens-daemon/tests/fuzz_regressions.rs` includes this file by path, so a saved
//! crash input is replayed exactly as the fuzzer fed it.
//!
//! Input layout: the first byte selects the exporter (low 2 bits, one of [`EXPORTERS`])
//! and the receive time (high 6 bits, 2 s steps from [`BASE_MS`], so held data sets
//! expire now and then). The per-protocol targets then overwrite the version bytes with
//! their protocol's version, so that first byte does double duty and the fuzzer spends
//! no time in the dispatcher; `decode_any` feeds the bytes after the selector unchanged.

use std::cell::RefCell;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use flowlens_daemon::decode::{Datagram, DecodeError, Decoder, DecoderConfig};
use flowlens_daemon::flow::FlowRecord;

/// The exporters a fuzz input can come from: the per-exporter state (templates, held
/// sets, sequence trackers) of each is exercised separately, and one is IPv6.
pub const EXPORTERS: [IpAddr; 4] = [
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
];

/// Receive time of selector 0: 2026-01-01T00:00:00Z in ms.
pub const BASE_MS: u64 = 1_767_225_600_000;

/// Templates kept by the fuzzing decoder: far below the default so that a long run
/// stays within libFuzzer's RSS limit and the eviction path is exercised.
pub const FUZZ_MAX_TEMPLATES: usize = 256;

/// A fuzz target: which protocol it forces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    NetflowV5,
    NetflowV9,
    Ipfix,
    Sflow,
    Any,
}

impl Target {
    pub const ALL: [Self; 5] = [
        Self::NetflowV5,
        Self::NetflowV9,
        Self::Ipfix,
        Self::Sflow,
        Self::Any,
    ];

    /// The cargo-fuzz target name (also the prefix of regression file names).
    pub const fn name(self) -> &'static str {
        match self {
            Self::NetflowV5 => "decode_netflow_v5",
            Self::NetflowV9 => "decode_netflow_v9",
            Self::Ipfix => "decode_ipfix",
            Self::Sflow => "decode_sflow",
            Self::Any => "decode_any",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// The version field written over the start of the input.
    const fn version(self) -> &'static [u8] {
        match self {
            Self::NetflowV5 => &[0, 5],
            Self::NetflowV9 => &[0, 9],
            Self::Ipfix => &[0, 10],
            Self::Sflow => &[0, 0, 0, 5],
            Self::Any => &[],
        }
    }

    /// Turns a fuzz input into a datagram whose payload is built in `payload`.
    pub fn datagram<'p>(self, data: &[u8], payload: &'p mut Vec<u8>) -> Datagram<'p> {
        let selector = data.first().copied().unwrap_or(0);
        payload.clear();
        let skip = match self {
            Self::Any => 1,
            forced => {
                payload.extend_from_slice(forced.version());
                forced.version().len()
            }
        };
        payload.extend_from_slice(data.get(skip..).unwrap_or(&[]));
        Datagram {
            exporter: EXPORTERS[usize::from(selector & 3)],
            received_at_ms: BASE_MS + u64::from(selector >> 2) * 2_000,
            payload,
        }
    }
}

/// The decoder configuration every fuzz target and the regression replay use.
pub fn fuzz_config() -> DecoderConfig {
    DecoderConfig {
        max_templates: FUZZ_MAX_TEMPLATES,
        ..DecoderConfig::default()
    }
}

/// Decodes one datagram into `out` (cleared first) and panics if an invariant that must
/// hold for any input is broken: `Ok(n)` appended exactly `n` records, an error appended
/// none, and the datagram was counted exactly once, as decoded or as malformed.
pub fn decode_checked(
    decoder: &mut Decoder,
    datagram: &Datagram<'_>,
    out: &mut Vec<FlowRecord>,
) -> Result<usize, DecodeError> {
    out.clear();
    let before = decoder.totals();
    let result = decoder.decode(datagram, out);
    let after = decoder.totals();
    match &result {
        Ok(n) => assert_eq!(
            *n,
            out.len(),
            "Ok(n) must be the number of records appended"
        ),
        Err(e) => assert!(out.is_empty(), "a failed decode appended records: {e}"),
    }
    assert_eq!(
        after.packets,
        before.packets + 1,
        "the datagram was not counted"
    );
    assert_eq!(
        after.packets,
        after.decoded_packets + after.malformed_packets,
        "packets != decoded + malformed"
    );
    assert_eq!(
        after.malformed_packets - before.malformed_packets,
        u64::from(result.is_err()),
        "malformed counted wrongly"
    );
    result
}

struct State {
    decoder: Decoder,
    payload: Vec<u8>,
    out: Vec<FlowRecord>,
}

thread_local! {
    /// One decoder for the whole fuzzing process, so that a template learned from one
    /// input decodes the data sets of later ones.
    static STATE: RefCell<State> = RefCell::new(State {
        decoder: Decoder::new(fuzz_config()),
        payload: Vec::new(),
        out: Vec::new(),
    });
}

/// The body of every fuzz target.
pub fn fuzz_one(target: Target, data: &[u8]) {
    STATE.with_borrow_mut(|state| {
        let datagram = target.datagram(data, &mut state.payload);
        // Errors are expected outcomes; only the invariants (and panics) matter.
        let _ = decode_checked(&mut state.decoder, &datagram, &mut state.out);
    });
}
