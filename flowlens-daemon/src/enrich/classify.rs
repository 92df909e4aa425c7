//! PURE: is an address ours, and which way does traffic cross our boundary.
//!
//! DESIGN.md §3.2 classifies every flow as internal (both ends ours), egress (ours ->
//! outside) or ingress (outside -> ours); [`Direction3`] adds the fourth case, neither
//! end ours, which a collector on a transit link does see. Classify the *oriented*
//! pair (client, server) from [`crate::resolve::direction`], not a record's raw
//! (src, dst): a connection's reply records run the other way and would otherwise turn
//! one egress dependency into an ingress one.
//!
//! "Ours" means: inside our administrative domain, so an address that cannot be routed
//! on the public Internet is ours by construction. Built in ([`BUILTIN_INTERNAL`]):
//! - RFC 1918 private space (10/8, 172.16/12, 192.168/16) and RFC 4193 unique local
//!   IPv6 (`fc00::/7`): the design's definition of internal;
//! - RFC 6598 shared address space (100.64/10): CGNAT between a provider and its
//!   subscribers, and reused inside enterprises by overlays such as Tailscale and by
//!   Kubernetes CNIs. RFC 6598 §4 forbids routing it beyond the provider's network, so a
//!   flow carrying it was seen inside that network;
//! - loopback (127/8, `::1`) and link-local (169.254/16 RFC 3927, `fe80::/10` RFC 4291):
//!   they never leave a host or a link, so both ends are necessarily local.
//!
//! Not built in: multicast, broadcast, the unspecified address and the documentation
//! and benchmarking ranges. They name no host that owns a service, so the resolver
//! should drop such flows rather than classify them. Everything else that is ours (a
//! public block we own, a partner range reached over VPN) is configured
//! (`enrichment.internal_prefixes`) and checked after the built-ins.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as dual-stack sockets and some
//! exporters report them) are classified as their IPv4 address, so write IPv4 prefixes
//! in IPv4 form.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IP prefix such as `10.0.0.0/8` or `fd00::/8`. Host bits are always zero: parsing
/// rejects `10.1.0.0/8` rather than guess whether `/8` or `/16` was meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

/// Why a prefix string did not parse. Each variant says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("missing \"/length\": write a prefix such as 10.0.0.0/8 (or 10.0.0.1/32 for one host)")]
    MissingLength,
    #[error("{text:?} is not an IPv4 or IPv6 address")]
    InvalidAddress { text: String },
    #[error("{text:?} is not a prefix length")]
    InvalidLength { text: String },
    #[error("prefix length {len} is longer than the address ({max} bits)")]
    LengthTooLong { len: u8, max: u8 },
    #[error("{addr}/{len} has host bits set; the network is {network}/{len}")]
    HostBitsSet {
        addr: IpAddr,
        len: u8,
        network: IpAddr,
    },
}

impl PrefixError {
    /// A bounded label for metrics and config-check output.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::MissingLength => "missing_length",
            Self::InvalidAddress { .. } => "invalid_address",
            Self::InvalidLength { .. } => "invalid_length",
            Self::LengthTooLong { .. } => "length_too_long",
            Self::HostBitsSet { .. } => "host_bits_set",
        }
    }
}

impl Prefix {
    /// A prefix of `len` bits at `addr`; fails when `len` exceeds the address or
    /// `addr` has bits set past `len`.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, PrefixError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(PrefixError::LengthTooLong { len, max });
        }
        let network = mask(addr, len);
        if network != addr {
            return Err(PrefixError::HostBitsSet { addr, len, network });
        }
        Ok(Self { addr, len })
    }

    /// The network address (host bits zero).
    pub const fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in bits.
    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    /// Whether `ip` is inside the prefix. Families never match each other: canonicalize
    /// IPv4-mapped addresses first (as [`Classifier::is_internal`] does).
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

/// `addr` with every bit past `len` cleared (`len` beyond the address keeps it whole).
fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & bits))
        }
        IpAddr::V6(v6) => {
            let bits = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & bits))
        }
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or(PrefixError::MissingLength)?;
        let addr = IpAddr::from_str(addr).map_err(|_| PrefixError::InvalidAddress {
            text: addr.to_owned(),
        })?;
        // u8::from_str accepts a leading '+'; a prefix length is digits only.
        let len = Some(len)
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|l| l.parse::<u8>().ok())
            .ok_or_else(|| PrefixError::InvalidLength {
                text: len.to_owned(),
            })?;
        Self::new(addr, len)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Prefix {
    Prefix {
        addr: IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        len,
    }
}

const fn v6(first: u16, last: u16, len: u8) -> Prefix {
    Prefix {
        addr: IpAddr::V6(Ipv6Addr::new(first, 0, 0, 0, 0, 0, 0, last)),
        len,
    }
}

/// The prefixes that are internal without configuration (see the module docs for why
/// each is here).
pub const BUILTIN_INTERNAL: [Prefix; 9] = [
    v4(10, 0, 0, 0, 8),
    v4(172, 16, 0, 0, 12),
    v4(192, 168, 0, 0, 16),
    v4(100, 64, 0, 0, 10),
    v4(127, 0, 0, 0, 8),
    v4(169, 254, 0, 0, 16),
    v6(0xfc00, 0, 7),
    v6(0xfe80, 0, 10),
    v6(0, 1, 128),
];

/// How a (client, server) pair crosses our boundary (DESIGN.md §3.2). Also the
/// `scope` of an alert rule in the config (`internal`, `egress`, ...).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Direction3 {
    /// Both ends are ours.
    Internal,
    /// Ours -> outside.
    Egress,
    /// Outside -> ours.
    Ingress,
    /// Neither end is ours (transit traffic).
    External,
}

impl Direction3 {
    /// The stable name for storage and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Internal => "internal",
            Self::Egress => "egress",
            Self::Ingress => "ingress",
            Self::External => "external",
        }
    }
}

/// Decides whether addresses are internal: the built-ins plus configured prefixes.
///
/// Configured prefixes are scanned linearly, which is right for the tens an operator
/// writes by hand; thousands (an imported IPAM export) would want a trie.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Classifier {
    configured: Vec<Prefix>,
}

impl Classifier {
    /// A classifier that also treats `configured` prefixes as internal.
    pub fn new(configured: impl IntoIterator<Item = Prefix>) -> Self {
        Self {
            configured: configured.into_iter().collect(),
        }
    }

    /// The configured prefixes, in the order given.
    pub fn configured(&self) -> &[Prefix] {
        &self.configured
    }

    /// Whether `ip` is ours (built-in ranges first, then configured ones).
    #[must_use]
    pub fn is_internal(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        BUILTIN_INTERNAL
            .iter()
            .chain(&self.configured)
            .any(|p| p.contains(ip))
    }

    /// Where traffic from `src` to `dst` runs relative to our boundary.
    #[must_use]
    pub fn classify(&self, src: IpAddr, dst: IpAddr) -> Direction3 {
        match (self.is_internal(src), self.is_internal(dst)) {
            (true, true) => Direction3::Internal,
            (true, false) => Direction3::Egress,
            (false, true) => Direction3::Ingress,
            (false, false) => Direction3::External,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn prefix(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn builtin_ranges_at_their_edges() {
        let c = Classifier::default();
        let cases = [
            ("9.255.255.255", false),
            ("10.0.0.0", true),
            ("10.255.255.255", true),
            ("11.0.0.0", false),
            ("172.15.255.255", false),
            ("172.16.0.0", true),
            ("172.31.255.255", true),
            ("172.32.0.0", false),
            ("192.167.255.255", false),
            ("192.168.0.0", true),
            ("192.168.255.255", true),
            ("192.169.0.0", false),
            ("100.63.255.255", false),
            ("100.64.0.0", true),
            ("100.127.255.255", true),
            ("100.128.0.0", false),
            ("127.0.0.1", true),
            ("169.253.255.255", false),
            ("169.254.0.1", true),
            ("169.255.0.0", false),
            ("fbff:ffff::1", false),
            ("fc00::", true),
            ("fd12:3456::1", true),
            ("fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
            ("fe00::", false),
            ("fe7f:ffff::1", false),
            ("fe80::1", true),
            ("febf:ffff::1", true),
            ("fec0::", false),
            ("::1", true),
            ("::2", false),
            ("8.8.8.8", false),
            ("2001:4860:4860::8888", false),
            ("224.0.0.1", false),
            ("255.255.255.255", false),
            ("0.0.0.0", false),
        ];
        for (addr, internal) in cases {
            assert_eq!(c.is_internal(ip(addr)), internal, "{addr}");
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_classified_as_ipv4() {
        let c = Classifier::new([prefix("198.51.100.0/24")]);
        assert!(c.is_internal(ip("::ffff:10.1.2.3")));
        assert!(c.is_internal(ip("::ffff:198.51.100.7")));
        assert!(!c.is_internal(ip("::ffff:8.8.8.8")));
        assert!(!c.is_internal(ip("::ffff:172.32.0.0")));
    }

    #[test]
    fn configured_prefixes_add_to_the_builtins() {
        let c = Classifier::new([prefix("203.0.113.0/25"), prefix("2001:db8:1::/48")]);
        assert!(c.is_internal(ip("203.0.113.0")));
        assert!(c.is_internal(ip("203.0.113.127")));
        assert!(!c.is_internal(ip("203.0.113.128")));
        assert!(c.is_internal(ip("2001:db8:1:ffff::1")));
        assert!(!c.is_internal(ip("2001:db8:2::1")));
        assert!(c.is_internal(ip("10.0.0.1")), "built-ins still apply");
        assert_eq!(c.configured().len(), 2);
    }

    #[test]
    fn classify_all_four_directions() {
        let c = Classifier::default();
        let dir = |src: &str, dst: &str| c.classify(ip(src), ip(dst));
        assert_eq!(dir("10.0.0.5", "192.168.1.1"), Direction3::Internal);
        assert_eq!(dir("10.0.0.5", "1.1.1.1"), Direction3::Egress);
        assert_eq!(dir("1.1.1.1", "fd00::1"), Direction3::Ingress);
        assert_eq!(dir("1.1.1.1", "8.8.8.8"), Direction3::External);
        assert_eq!(Direction3::Egress.as_str(), "egress");
    }

    #[test]
    fn prefix_contains_edges_and_families() {
        let p = prefix("172.16.0.0/12");
        assert!(p.contains(ip("172.16.0.0")));
        assert!(p.contains(ip("172.31.255.255")));
        assert!(!p.contains(ip("172.32.0.0")));
        assert!(
            !p.contains(ip("::ffff:172.16.0.1")),
            "contains does not canonicalize"
        );
        assert!(prefix("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!prefix("0.0.0.0/0").contains(ip("::1")));
        assert!(prefix("::/0").contains(ip("::1")));
        assert!(prefix("10.0.0.1/32").contains(ip("10.0.0.1")));
        assert!(!prefix("10.0.0.1/32").contains(ip("10.0.0.2")));
        assert!(prefix("fd00::1/128").contains(ip("fd00::1")));
    }

    #[test]
    fn prefix_round_trips_through_display() {
        for (s, len) in [
            ("10.0.0.0/8", 8),
            ("fd00::/8", 8),
            ("::1/128", 128),
            ("0.0.0.0/0", 0),
        ] {
            let p = prefix(s);
            assert_eq!((p.to_string().as_str(), p.prefix_len()), (s, len));
        }
        assert_eq!(prefix("fd00::/8").addr(), ip("fd00::"));
    }

    #[test]
    fn builtins_are_valid_prefixes() {
        for p in BUILTIN_INTERNAL {
            assert_eq!(Prefix::new(p.addr(), p.prefix_len()), Ok(p), "{p}");
        }
    }

    #[test]
    fn prefix_parse_errors() {
        let err = |s: &str| s.parse::<Prefix>().unwrap_err();
        let bad_addr = |t: &str| PrefixError::InvalidAddress { text: t.into() };
        let bad_len = |t: &str| PrefixError::InvalidLength { text: t.into() };
        let cases = [
            ("10.0.0.0", PrefixError::MissingLength),
            ("10.0.0/8", bad_addr("10.0.0")),
            ("fe80::1%eth0/64", bad_addr("fe80::1%eth0")),
            ("10.0.0.0/", bad_len("")),
            ("10.0.0.0/+8", bad_len("+8")),
            ("10.0.0.0/-1", bad_len("-1")),
            ("10.0.0.0/256", bad_len("256")),
            ("10.0.0.0/8/8", bad_len("8/8")),
            (
                "10.0.0.0/33",
                PrefixError::LengthTooLong { len: 33, max: 32 },
            ),
            (
                "fd00::/129",
                PrefixError::LengthTooLong { len: 129, max: 128 },
            ),
        ];
        for (input, want) in cases {
            assert_eq!(err(input), want, "{input}");
        }
        let host_bits = err("10.1.0.0/8");
        let network = ip("10.0.0.0");
        let addr = ip("10.1.0.0");
        assert_eq!(
            host_bits,
            PrefixError::HostBitsSet {
                addr,
                len: 8,
                network
            }
        );
        assert_eq!(host_bits.reason(), "host_bits_set");
        assert_eq!(
            host_bits.to_string(),
            "10.1.0.0/8 has host bits set; the network is 10.0.0.0/8"
        );
    }
}
