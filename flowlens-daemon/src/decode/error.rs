//! Decode errors: values that say where (absolute byte offset in the datagram) and why.
//!
//! A decoder returns an error for a datagram it cannot trust; the caller counts it by
//! [`DecodeError::reason`] (a bounded label for metrics) and goes on with the next
//! datagram. Missing templates are not errors: they are outcomes counted per exporter.

/// Why a datagram could not be decoded. Every variant carries the absolute offset of
/// the offending bytes in the datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The datagram ended before a field or structure it announced.
    #[error("truncated at offset {offset}: needed {needed} bytes, {available} available")]
    Truncated {
        offset: usize,
        needed: usize,
        available: usize,
    },

    /// The first bytes are not a version this collector understands.
    #[error("unknown flow protocol version {version} at offset {offset}")]
    UnknownVersion { offset: usize, version: u32 },

    /// A length field is impossible (shorter than its own header, longer than the
    /// datagram, or inconsistent with a count).
    #[error("bad {what} length {length} at offset {offset}")]
    BadLength {
        offset: usize,
        what: &'static str,
        length: usize,
    },

    /// A template or options template that cannot describe a record.
    #[error("invalid template {template_id} at offset {offset}: {what}")]
    BadTemplate {
        offset: usize,
        template_id: u16,
        what: &'static str,
    },

    /// A set or flowset id reserved by the RFC (IPFIX 4-255, v9 2-255).
    #[error("reserved set id {set_id} at offset {offset}")]
    ReservedSetId { offset: usize, set_id: u16 },

    /// A count field claims more items than could possibly fit in the datagram.
    #[error("{what} count {count} at offset {offset} exceeds the datagram")]
    BadCount {
        offset: usize,
        what: &'static str,
        count: u32,
    },

    /// An address family or type code the protocol does not define.
    #[error("unknown {what} {value} at offset {offset}")]
    UnknownType {
        offset: usize,
        what: &'static str,
        value: u32,
    },
}

impl DecodeError {
    /// A bounded, stable label for the `reason` metric label and the summary.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::Truncated { .. } => "truncated",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::BadLength { .. } => "bad_length",
            Self::BadTemplate { .. } => "bad_template",
            Self::ReservedSetId { .. } => "reserved_set_id",
            Self::BadCount { .. } => "bad_count",
            Self::UnknownType { .. } => "unknown_type",
        }
    }

    /// Absolute offset of the offending bytes.
    pub const fn offset(&self) -> usize {
        match self {
            Self::Truncated { offset, .. }
            | Self::UnknownVersion { offset, .. }
            | Self::BadLength { offset, .. }
            | Self::BadTemplate { offset, .. }
            | Self::ReservedSetId { offset, .. }
            | Self::BadCount { offset, .. }
            | Self::UnknownType { offset, .. } => *offset,
        }
    }

    /// Every reason label, for pre-registering metrics and printing summaries.
    pub const REASONS: [&'static str; 7] = [
        "truncated",
        "unknown_version",
        "bad_length",
        "bad_template",
        "reserved_set_id",
        "bad_count",
        "unknown_type",
    ];
}
