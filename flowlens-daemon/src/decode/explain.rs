//! Why a datagram was not decoded whole, in words a network engineer can act on.
//!
//! With [`super::Decoder::set_explain`] on, the decoder records a [`Note`] for everything it
//! did not turn into flows as sent (bytes after the declared content, records a rule
//! skipped, data sets waiting for or given up on their template) and for every template
//! it learned. Nothing is recorded, and nothing costs, when it is off: the live daemon
//! leaves it off and logs only malformed datagrams (rate-limited, see
//! `crate::malformed_log`); `flowlens-daemon decode --explain` turns it on.
//! [`excerpt`] and [`ie_name`] give both the same vocabulary.

use std::fmt::Write as _;

use super::DecodeError;
use super::template::{FieldSpec, TemplateKind, VARIABLE_LENGTH};
use crate::flow::FlowProtocol;

/// Why records of a data set were read but not emitted (the `reason` label of
/// `flowlens_decode_records_skipped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A firewall event without traffic of its own on an NSEL-style template (no IE
    /// 1/2/85/86 counters): flow created, denied, alert. Counting them would count a
    /// connection twice (created, then deleted with its bytes) or count denied traffic.
    FirewallEvent,
}

impl SkipReason {
    /// Every reason, in counter order.
    pub const ALL: [Self; 1] = [Self::FirewallEvent];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::FirewallEvent => "firewall_event",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One thing the decoder did not decode as sent, or learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Note {
    /// Bytes after the declared content (zero padding after the last set, bytes past the
    /// IPFIX message length, the v5 record count or the sFlow sample count), ignored.
    Trailing { offset: usize, len: usize },
    /// `records` data records of the set at `offset` were read and not emitted. The set
    /// came in datagram `serial` (an earlier one when it was held for its template).
    Skipped {
        serial: u64,
        offset: usize,
        template_id: u16,
        reason: SkipReason,
        records: u32,
    },
    /// The data set at `offset` waits for template `template_id` of `domain`.
    Held {
        offset: usize,
        domain: u32,
        template_id: u16,
    },
    /// A held data set was given up (counted as `template_missing`); it came in the
    /// datagram the decoder numbered `serial` (see [`super::Decoder::serial`]).
    TemplateMissing {
        serial: u64,
        offset: usize,
        domain: u32,
        template_id: u16,
    },
    /// A held data set met its template: decoded, or (`decoded: false`) malformed
    /// after all and counted as `template_missing`.
    HeldResolved {
        serial: u64,
        offset: usize,
        template_id: u16,
        decoded: bool,
    },
    /// A template or options template was learned, or redefined.
    Template {
        offset: usize,
        proto: FlowProtocol,
        domain: u32,
        template_id: u16,
        kind: TemplateKind,
        fields: Vec<FieldSpec>,
    },
}

impl Note {
    /// The datagram a note is about, when that may be an earlier one than the datagram
    /// being decoded (held sets).
    pub fn serial(&self) -> Option<u64> {
        match self {
            Self::Skipped { serial, .. }
            | Self::TemplateMissing { serial, .. }
            | Self::HeldResolved { serial, .. } => Some(*serial),
            Self::Trailing { .. } | Self::Held { .. } | Self::Template { .. } => None,
        }
    }

    /// Whether the note says what happened to state that outlives the datagram (a
    /// template learned, held data resolved or given up), so it stands even when the
    /// datagram itself turns out malformed.
    pub fn outlives_its_datagram(&self) -> bool {
        matches!(
            self,
            Self::Template { .. } | Self::TemplateMissing { .. } | Self::HeldResolved { .. }
        )
    }

    /// One line describing the note (without the file, frame and exporter prefix).
    pub fn describe(&self, payload: Option<&[u8]>) -> String {
        let hex = |offset: usize| payload.map(|p| excerpt(p, offset)).unwrap_or_default();
        match self {
            Self::Trailing { offset, len } => format!(
                "trailing bytes: {len} bytes after the declared content at offset {offset} \
                 ignored{}",
                hex(*offset)
            ),
            Self::Skipped {
                offset,
                template_id,
                reason,
                records,
                ..
            } => format!(
                "records skipped ({}): {records} record(s) of template {template_id} in the \
                 set at offset {offset}{}",
                reason.as_str(),
                hex(*offset)
            ),
            Self::Held {
                offset,
                domain,
                template_id,
            } => format!(
                "template not known yet: data set at offset {offset} held for template \
                 {template_id} (domain {domain}){}",
                hex(*offset)
            ),
            Self::TemplateMissing {
                offset,
                domain,
                template_id,
                ..
            } => format!(
                "template missing: data set at offset {offset} dropped, template \
                 {template_id} (domain {domain}) never arrived"
            ),
            Self::HeldResolved {
                offset,
                template_id,
                decoded,
                ..
            } => {
                if *decoded {
                    format!(
                        "held data set at offset {offset} decoded: template {template_id} \
                         arrived"
                    )
                } else {
                    format!(
                        "held data set at offset {offset} does not fit template \
                         {template_id}, which arrived later: dropped, counted as \
                         template_missing"
                    )
                }
            }
            Self::Template {
                offset,
                proto,
                domain,
                template_id,
                kind,
                fields,
            } => {
                let what = match kind {
                    TemplateKind::Data => "template".to_owned(),
                    TemplateKind::Options { scope_fields } => {
                        format!("options template ({scope_fields} scope)")
                    }
                };
                let mut line = format!(
                    "{proto} {what} {template_id} (domain {domain}, offset {offset}): {} \
                     fields:",
                    fields.len()
                );
                for f in fields {
                    line.push(' ');
                    line.push_str(&field_label(f));
                }
                line
            }
        }
    }
}

/// The line for a datagram that could not be decoded: the reason label, what was
/// wrong, and the bytes around the offset.
pub fn malformed(payload: &[u8], error: &DecodeError) -> String {
    format!(
        "malformed ({}): {error}{}",
        error.reason(),
        excerpt(payload, error.offset())
    )
}

/// The protocol a datagram claims to be, for messages (`unknown` when the version is
/// not one we decode).
pub fn protocol(payload: &[u8]) -> &'static str {
    super::detect(payload).map_or("unknown", FlowProtocol::as_str)
}

/// A field as `label(numbers)/length`: `sourceIPv4Address(8)/4` for IANA elements,
/// `reverseOctetDeltaCount(29305:1)/8` for named enterprise ones, the vendor's name for
/// the others (`barracuda(10704:5)/var`, `enterprise(99999:7)/2`), `unknown(999)/2` for
/// IANA numbers we have no name for; `var` is variable length.
pub fn field_label(f: &FieldSpec) -> String {
    let name = ie_name(f.pen, f.ie).unwrap_or(match f.pen {
        0 => "unknown",
        pen => enterprise_name(pen).unwrap_or("enterprise"),
    });
    let mut s = String::from(name);
    let _ = match f.pen {
        0 => write!(s, "({})", f.ie),
        pen => write!(s, "({pen}:{})", f.ie),
    };
    if f.len == VARIABLE_LENGTH {
        s.push_str("/var");
    } else {
        let _ = write!(s, "/{}", f.len);
    }
    s
}

/// ` [bytes A..B: .. >xx ..]`: up to 16 bytes before `offset` and 16 from it, the byte
/// at `offset` marked with `>`, so the reader sees what led to it and what is there.
pub fn excerpt(payload: &[u8], offset: usize) -> String {
    const AROUND: usize = 16;
    let start = offset.saturating_sub(AROUND).min(payload.len());
    let end = offset.saturating_add(AROUND).min(payload.len());
    let mut s = format!(" [bytes {start}..{end}:");
    for (i, b) in payload.get(start..end).unwrap_or(&[]).iter().enumerate() {
        s.push(' ');
        if start + i == offset {
            s.push('>');
        }
        let _ = write!(s, "{b:02x}");
    }
    if offset >= payload.len() {
        s.push_str(" >(end)");
    }
    s.push(']');
    s
}

/// Names of the enterprises whose elements exporters commonly send.
pub fn enterprise_name(pen: u32) -> Option<&'static str> {
    Some(match pen {
        9 => "cisco",
        2636 => "juniper",
        6871 => "cert",
        6876 => "vmware",
        10_704 => "barracuda",
        15_397 => "procera",
        25_461 => "paloalto",
        29_305 => "reverse",
        _ => return None,
    })
}

/// The IANA name of IPFIX / `NetFlow` v9 element `ie` (enterprise 0), or of a reverse
/// element (enterprise 29305, RFC 5103), or of the vendor elements we know by name.
pub fn ie_name(pen: u32, ie: u16) -> Option<&'static str> {
    match pen {
        0 => iana_name(ie),
        29_305 => reverse_name(ie),
        _ => None,
    }
}

fn reverse_name(ie: u16) -> Option<&'static str> {
    Some(match ie {
        1 => "reverseOctetDeltaCount",
        2 => "reversePacketDeltaCount",
        6 => "reverseTcpControlBits",
        85 => "reverseOctetTotalCount",
        86 => "reversePacketTotalCount",
        150 => "reverseFlowStartSeconds",
        151 => "reverseFlowEndSeconds",
        152 => "reverseFlowStartMilliseconds",
        153 => "reverseFlowEndMilliseconds",
        _ => return None,
    })
}

#[expect(clippy::too_many_lines, reason = "a table")]
fn iana_name(ie: u16) -> Option<&'static str> {
    Some(match ie {
        1 => "octetDeltaCount",
        2 => "packetDeltaCount",
        3 => "deltaFlowCount",
        4 => "protocolIdentifier",
        5 => "ipClassOfService",
        6 => "tcpControlBits",
        7 => "sourceTransportPort",
        8 => "sourceIPv4Address",
        9 => "sourceIPv4PrefixLength",
        10 => "ingressInterface",
        11 => "destinationTransportPort",
        12 => "destinationIPv4Address",
        13 => "destinationIPv4PrefixLength",
        14 => "egressInterface",
        15 => "ipNextHopIPv4Address",
        16 => "bgpSourceAsNumber",
        17 => "bgpDestinationAsNumber",
        18 => "bgpNextHopIPv4Address",
        19 => "postMCastPacketDeltaCount",
        20 => "postMCastOctetDeltaCount",
        21 => "flowEndSysUpTime",
        22 => "flowStartSysUpTime",
        23 => "postOctetDeltaCount",
        24 => "postPacketDeltaCount",
        25 => "minimumIpTotalLength",
        26 => "maximumIpTotalLength",
        27 => "sourceIPv6Address",
        28 => "destinationIPv6Address",
        29 => "sourceIPv6PrefixLength",
        30 => "destinationIPv6PrefixLength",
        31 => "flowLabelIPv6",
        32 => "icmpTypeCodeIPv4",
        33 => "igmpType",
        34 => "samplingInterval",
        35 => "samplingAlgorithm",
        36 => "flowActiveTimeout",
        37 => "flowIdleTimeout",
        38 => "engineType",
        39 => "engineId",
        40 => "exportedOctetTotalCount",
        41 => "exportedMessageTotalCount",
        42 => "exportedFlowRecordTotalCount",
        44 => "sourceIPv4Prefix",
        45 => "destinationIPv4Prefix",
        46 => "mplsTopLabelType",
        47 => "mplsTopLabelIPv4Address",
        48 => "samplerId",
        49 => "samplerMode",
        50 => "samplerRandomInterval",
        51 => "classId",
        52 => "minimumTTL",
        53 => "maximumTTL",
        54 => "fragmentIdentification",
        55 => "postIpClassOfService",
        56 => "sourceMacAddress",
        57 => "postDestinationMacAddress",
        58 => "vlanId",
        59 => "postVlanId",
        60 => "ipVersion",
        61 => "flowDirection",
        62 => "ipNextHopIPv6Address",
        63 => "bgpNextHopIPv6Address",
        64 => "ipv6ExtensionHeaders",
        70..=79 => "mplsLabelStackSection",
        80 => "destinationMacAddress",
        81 => "postSourceMacAddress",
        82 => "interfaceName",
        83 => "interfaceDescription",
        84 => "samplerName",
        85 => "octetTotalCount",
        86 => "packetTotalCount",
        88 => "fragmentOffset",
        89 => "forwardingStatus",
        90 => "mplsVpnRouteDistinguisher",
        94 => "applicationDescription",
        95 => "applicationId",
        96 => "applicationName",
        98 => "postIpDiffServCodePoint",
        102 => "layer2packetSectionOffset",
        128 => "bgpNextAdjacentAsNumber",
        129 => "bgpPrevAdjacentAsNumber",
        130 => "exporterIPv4Address",
        131 => "exporterIPv6Address",
        132 => "droppedOctetDeltaCount",
        133 => "droppedPacketDeltaCount",
        136 => "flowEndReason",
        137 => "commonPropertiesId",
        138 => "observationPointId",
        139 => "icmpTypeCodeIPv6",
        143 => "meteringProcessId",
        144 => "exportingProcessId",
        145 => "templateId",
        147 => "wlanSSID",
        148 => "flowId",
        149 => "observationDomainId",
        150 => "flowStartSeconds",
        151 => "flowEndSeconds",
        152 => "flowStartMilliseconds",
        153 => "flowEndMilliseconds",
        154 => "flowStartMicroseconds",
        155 => "flowEndMicroseconds",
        156 => "flowStartNanoseconds",
        157 => "flowEndNanoseconds",
        158 => "flowStartDeltaMicroseconds",
        159 => "flowEndDeltaMicroseconds",
        160 => "systemInitTimeMilliseconds",
        161 => "flowDurationMilliseconds",
        162 => "flowDurationMicroseconds",
        163 => "observedFlowTotalCount",
        164 => "ignoredPacketTotalCount",
        165 => "ignoredOctetTotalCount",
        166 => "notSentFlowTotalCount",
        167 => "notSentPacketTotalCount",
        168 => "notSentOctetTotalCount",
        176 => "icmpTypeIPv4",
        177 => "icmpCodeIPv4",
        178 => "icmpTypeIPv6",
        179 => "icmpCodeIPv6",
        180 => "udpSourcePort",
        181 => "udpDestinationPort",
        182 => "tcpSourcePort",
        183 => "tcpDestinationPort",
        184 => "tcpSequenceNumber",
        185 => "tcpAcknowledgementNumber",
        186 => "tcpWindowSize",
        189 => "ipHeaderLength",
        190 => "totalLengthIPv4",
        192 => "ipTTL",
        194 => "ipDiffServCodePoint",
        195 => "ipPrecedence",
        196 => "fragmentFlags",
        197 => "octetDeltaSumOfSquares",
        205 => "udpMessageLength",
        206 => "isMulticast",
        210 => "paddingOctets",
        211 => "collectorIPv4Address",
        212 => "collectorIPv6Address",
        213 => "exportInterface",
        214 => "exportProtocolVersion",
        215 => "exportTransportProtocol",
        216 => "collectorTransportPort",
        217 => "exporterTransportPort",
        218 => "tcpSynTotalCount",
        219 => "tcpFinTotalCount",
        220 => "tcpRstTotalCount",
        221 => "tcpPshTotalCount",
        222 => "tcpAckTotalCount",
        223 => "tcpUrgTotalCount",
        224 => "ipTotalLength",
        225 => "postNATSourceIPv4Address",
        226 => "postNATDestinationIPv4Address",
        227 => "postNAPTSourceTransportPort",
        228 => "postNAPTDestinationTransportPort",
        229 => "natOriginatingAddressRealm",
        230 => "natEvent",
        231 => "initiatorOctets",
        232 => "responderOctets",
        233 => "firewallEvent",
        234 => "ingressVRFID",
        235 => "egressVRFID",
        236 => "VRFname",
        239 => "biflowDirection",
        243 => "dot1qVlanId",
        244 => "dot1qPriority",
        252 => "ingressPhysicalInterface",
        253 => "egressPhysicalInterface",
        256 => "ethernetType",
        281 => "postNATSourceIPv6Address",
        282 => "postNATDestinationIPv6Address",
        298 => "initiatorPackets",
        299 => "responderPackets",
        302 => "selectorId",
        305 => "samplingPacketInterval",
        306 => "samplingPacketSpace",
        309 => "samplingSize",
        310 => "samplingPopulation",
        322 => "observationTimeSeconds",
        323 => "observationTimeMilliseconds",
        324 => "observationTimeMicroseconds",
        325 => "observationTimeNanoseconds",
        346 => "privateEnterpriseNumber",
        // NetFlow v9 vendor types in the IANA range's upper half.
        33_000 => "NF_F_INGRESS_ACL_ID",
        33_001 => "NF_F_EGRESS_ACL_ID",
        33_002 => "NF_F_FW_EXT_EVENT",
        40_000 => "NF_F_USERNAME",
        40_005 => "NF_F_FW_EVENT",
        56_701 => "PANOS_APPID",
        56_702 => "PANOS_USERID",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_marks_the_offset_and_the_end() {
        let p: Vec<u8> = (0..40).collect();
        let e = excerpt(&p, 20);
        assert!(e.starts_with(" [bytes 4..36:"), "{e}");
        assert!(e.contains(" 13 >14 15"), "{e}");
        assert_eq!(excerpt(&[1, 2], 2), " [bytes 0..2: 01 02 >(end)]");
    }

    #[test]
    fn field_labels_name_iana_reverse_and_vendor_fields() {
        let f = |ie, pen, len| field_label(&FieldSpec { ie, pen, len });
        assert_eq!(f(8, 0, 4), "sourceIPv4Address(8)/4");
        assert_eq!(f(1, 29_305, 8), "reverseOctetDeltaCount(29305:1)/8");
        assert_eq!(f(2, 10_704, VARIABLE_LENGTH), "barracuda(10704:2)/var");
        assert_eq!(f(7, 99_999, 2), "enterprise(99999:7)/2");
        assert_eq!(f(999, 0, 2), "unknown(999)/2");
    }
}
