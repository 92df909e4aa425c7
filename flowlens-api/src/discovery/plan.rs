//! PURE: turns a scan request into a [`Plan`] (which addresses, which ports) or the
//! reason it is refused, against `api.discovery`.
//!
//! Refusals come in two kinds, told apart by [`PlanError::is_forbidden`]: the policy
//! says no (scans disabled, a target outside every allowed range), which the API
//! answers 403 because no rewording of the request makes it acceptable to this
//! server short of picking another target; and the request is malformed (bad CIDR,
//! ports, too many hosts), answered 422 like any other invalid body.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:0:0/96`) are IPv4 on the wire: Linux connects
//! a dual-stack socket aimed at `::ffff:169.254.169.254` to 169.254.169.254. So a
//! requested network inside that /96 is turned into its IPv4 equivalent before any
//! check and judged (and scanned) as IPv4; an IPv6 range covering the /96 (`::/0`)
//! must not let IPv4 targets in by the back door.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv4Network};

use crate::config::DiscoveryConfig;

/// Why a scan request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// `api.discovery.allowed_ranges` is empty: probing a network nobody allowed is
    /// not a default.
    #[error("discovery scans are disabled: api.discovery.allowed_ranges is empty")]
    Disabled,
    #[error("cidr {cidr:?} is not a CIDR ({reason})")]
    BadCidr { cidr: String, reason: String },
    /// `10.1.2.3/16` may mean the host or the network; scanning 65k addresses when one
    /// was meant is the worse guess, so the caller says which.
    #[error("cidr {cidr:?} has host bits set; the network is {network}")]
    HostBitsSet { cidr: String, network: String },
    #[error("no ports: name some, or set api.discovery.ports")]
    NoPorts,
    #[error("port {port} is not between 1 and 65535")]
    BadPort { port: i64 },
    /// A scan connects to the ports the operator configured, never to ones a caller
    /// picks: the configured list is what was agreed to be probed.
    #[error("ports {ports} are not in api.discovery.ports ({allowed})")]
    PortsNotAllowed { ports: String, allowed: String },
    /// An IPv6 network holding both IPv4-mapped addresses (which are IPv4 on the wire)
    /// and others cannot be judged by one family's rules; the caller splits it.
    #[error(
        "{cidr} holds the IPv4-mapped range ::ffff:0:0/96 and other IPv6 addresses; \
         scan the IPv4 addresses as IPv4 and the rest as narrower IPv6 networks"
    )]
    StraddlesV4Mapped { cidr: String },
    /// The whole CIDR must lie inside one allowed range; overlapping is not enough.
    #[error("{cidr} is not inside an allowed range ({allowed})")]
    OutsideAllowed { cidr: String, allowed: String },
    #[error("{cidr} has {hosts} addresses to scan; at most {max} are allowed")]
    TooManyHosts { cidr: String, hosts: u128, max: u32 },
    /// Loopback, link-local (cloud metadata services live there), multicast and the
    /// like are never scanned because a broad allowed range happens to cover them;
    /// only an allowed range inside them (configured for that purpose) lets a scan in.
    #[error(
        "{cidr} reaches {range} ({what}), which is scanned only when an entry of \
         api.discovery.allowed_ranges lies inside it"
    )]
    Reserved {
        cidr: String,
        range: String,
        what: &'static str,
    },
}

impl PlanError {
    /// True when policy refuses the scan (403), false when the request is invalid (422).
    pub fn is_forbidden(&self) -> bool {
        matches!(
            self,
            Self::Disabled | Self::OutsideAllowed { .. } | Self::Reserved { .. }
        )
    }

    /// A bounded label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Disabled => "disabled",
            Self::BadCidr { .. } => "bad_cidr",
            Self::HostBitsSet { .. } => "host_bits_set",
            Self::NoPorts => "no_ports",
            Self::BadPort { .. } => "bad_port",
            Self::PortsNotAllowed { .. } => "port_not_allowed",
            Self::StraddlesV4Mapped { .. } => "straddles_v4_mapped",
            Self::OutsideAllowed { .. } => "outside_allowed",
            Self::TooManyHosts { .. } => "too_many_hosts",
            Self::Reserved { .. } => "reserved",
        }
    }
}

/// The addresses of a network a scan probes, as a half-open run of integers, so a
/// large network is never materialised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRange {
    V4 { first: u32, count: u32 },
    V6 { first: u128, count: u32 },
}

impl HostRange {
    /// Every address, lowest first.
    pub fn iter(self) -> impl Iterator<Item = IpAddr> {
        let (v4, v6) = match self {
            Self::V4 { first, count } => (Some((first, count)), None),
            Self::V6 { first, count } => (None, Some((first, count))),
        };
        // first + count - 1 is the last host of the network, so the sums never wrap.
        let v4 = v4.into_iter().flat_map(|(first, count)| {
            (0..count).map(move |i| IpAddr::V4(Ipv4Addr::from_bits(first.wrapping_add(i))))
        });
        let v6 = v6.into_iter().flat_map(|(first, count)| {
            (0..count)
                .map(move |i| IpAddr::V6(Ipv6Addr::from_bits(first.wrapping_add(u128::from(i)))))
        });
        v4.chain(v6)
    }

    pub fn len(self) -> u32 {
        match self {
            Self::V4 { count, .. } | Self::V6 { count, .. } => count,
        }
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// What an accepted scan will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub network: IpNetwork,
    /// Sorted, without duplicates, never empty.
    pub ports: Vec<u16>,
    pub hosts: HostRange,
}

/// The first address probed and how many there are (which may exceed any `u32`, hence
/// `u128`, saturating for an IPv6 `/0`). IPv4 networks wider than /31 lose their
/// network and broadcast addresses, which no host owns; a /31 has two hosts
/// (RFC 3021) and a /32 one. IPv6 has no broadcast, so every address counts.
fn host_span(network: IpNetwork) -> (u128, u128) {
    match network {
        IpNetwork::V4(n) => {
            let base = u128::from(n.network().to_bits());
            let size = 1u128 << (32 - u32::from(n.prefix()));
            if n.prefix() < 31 {
                (base + 1, size - 2)
            } else {
                (base, size)
            }
        }
        IpNetwork::V6(n) => {
            let bits = 128 - u32::from(n.prefix());
            let size = 1u128.checked_shl(bits).unwrap_or(u128::MAX);
            (n.network().to_bits(), size)
        }
    }
}

/// The prefix length of `::ffff:0:0/96`, the IPv4-mapped IPv6 addresses.
const V4_MAPPED_PREFIX: u8 = 96;

/// `network` as the kernel will reach it: an IPv6 network inside `::ffff:0:0/96`
/// becomes the IPv4 network it maps (prefix - 96); anything else is unchanged. `Err`
/// (with the network) for an IPv6 network that holds the whole /96 and other
/// addresses too, which is neither family.
fn unmap(network: IpNetwork) -> Result<IpNetwork, IpNetwork> {
    let IpNetwork::V6(n) = network else {
        return Ok(network);
    };
    if n.prefix() < V4_MAPPED_PREFIX {
        // A shorter prefix either holds the whole /96 or none of it.
        return if n.contains(Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0)) {
            Err(network)
        } else {
            Ok(network)
        };
    }
    match n.network().to_ipv4_mapped() {
        Some(v4) => Ipv4Network::new(v4, n.prefix() - V4_MAPPED_PREFIX)
            .map(IpNetwork::V4)
            .map_err(|_| network),
        None => Ok(network),
    }
}

/// IPv4 ranges no scan reaches by accident: connecting to them reaches this host
/// (`0.0.0.0/8` and loopback), a cloud's metadata service or the link (link-local),
/// or every listener of a group (multicast, broadcast).
const RESERVED_V4: [(&str, &str); 6] = [
    ("0.0.0.0/8", "this host"),
    ("127.0.0.0/8", "loopback"),
    (
        "169.254.0.0/16",
        "link-local, incl. cloud metadata 169.254.169.254",
    ),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("100.100.100.200/32", "cloud metadata (Alibaba Cloud)"),
];

/// IPv6 ranges likewise; NAT64 prefixes are IPv4 behind a translator, so the
/// well-known prefix's images of [`RESERVED_V4`] are added in [`reserved`], and the
/// local-use prefix (whose embedding depends on its length) is reserved whole.
const RESERVED_V6: [(&str, &str); 6] = [
    ("::/128", "this host"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
    ("fd00:ec2::254/128", "cloud metadata (AWS, IPv6)"),
];

/// Every reserved range, with what it is.
fn reserved() -> Vec<(IpNetwork, &'static str)> {
    let mut out: Vec<(IpNetwork, &'static str)> = RESERVED_V4
        .iter()
        .chain(RESERVED_V6.iter())
        .filter_map(|(cidr, what)| cidr.parse().ok().map(|n| (n, *what)))
        .collect();
    // RFC 6052 with the well-known /96: the IPv4 address is the last 32 bits.
    for (cidr, what) in RESERVED_V4 {
        if let Ok(IpNetwork::V4(v4)) = cidr.parse::<IpNetwork>() {
            let bits = (0x0064_ff9b_u128 << 96) | u128::from(v4.network().to_bits());
            if let Ok(n) = ipnetwork::Ipv6Network::new(Ipv6Addr::from_bits(bits), 96 + v4.prefix())
            {
                out.push((IpNetwork::V6(n), what));
            }
        }
    }
    out
}

/// True when `a` and `b` share an address.
fn overlaps(a: IpNetwork, b: IpNetwork) -> bool {
    a.is_ipv4() == b.is_ipv4() && (a.contains(b.network()) || b.contains(a.network()))
}

/// True when all of `inner` lies inside `outer`.
fn contains(outer: IpNetwork, inner: IpNetwork) -> bool {
    outer.is_ipv4() == inner.is_ipv4()
        && outer.prefix() <= inner.prefix()
        && outer.contains(inner.network())
}

/// Validates `cidr` and `ports` (the request's; `None` means the configured defaults)
/// against `config`, checking policy before size so a refusal names the real reason.
pub fn plan(
    cidr: &str,
    ports: Option<&[i64]>,
    config: &DiscoveryConfig,
) -> Result<Plan, PlanError> {
    // Validated when the config was loaded; an unparsable entry allows nothing. An
    // allowed IPv4-mapped range allows the IPv4 addresses it maps, which is what its
    // requests become; one straddling the /96 still allows its IPv6 addresses only,
    // since no request it could match is left IPv4-mapped.
    let allowed: Vec<IpNetwork> = config
        .allowed_ranges
        .iter()
        .filter_map(|r| r.trim().parse().ok())
        .map(|r| unmap(r).unwrap_or_else(|straddling| straddling))
        .collect();
    if allowed.is_empty() {
        return Err(PlanError::Disabled);
    }
    let text = cidr.trim();
    let network: IpNetwork = text.parse().map_err(|e| PlanError::BadCidr {
        cidr: cidr.to_owned(),
        reason: format!("{e}"),
    })?;
    if network.ip() != network.network() {
        return Err(PlanError::HostBitsSet {
            cidr: text.to_owned(),
            network: format!("{}/{}", network.network(), network.prefix()),
        });
    }
    // Before any other check, so an IPv4 target is judged by IPv4 rules however it
    // is spelt.
    let network = unmap(network).map_err(|n| PlanError::StraddlesV4Mapped {
        cidr: n.to_string(),
    })?;
    let ports = resolve_ports(ports, &config.ports)?;
    if !allowed.iter().any(|a| contains(*a, network)) {
        return Err(PlanError::OutsideAllowed {
            cidr: network.to_string(),
            allowed: config.allowed_ranges.join(", "),
        });
    }
    for (range, what) in reserved() {
        let explicitly = allowed
            .iter()
            .any(|a| contains(range, *a) && contains(*a, network));
        if overlaps(range, network) && !explicitly {
            return Err(PlanError::Reserved {
                cidr: network.to_string(),
                range: range.to_string(),
                what,
            });
        }
    }
    let (first, count) = host_span(network);
    let too_many = || PlanError::TooManyHosts {
        cidr: network.to_string(),
        hosts: count,
        max: config.max_hosts,
    };
    if count > u128::from(config.max_hosts) {
        return Err(too_many());
    }
    let count = u32::try_from(count).map_err(|_| too_many())?;
    let hosts = match network {
        IpNetwork::V4(_) => HostRange::V4 {
            first: u32::try_from(first).map_err(|_| too_many())?,
            count,
        },
        IpNetwork::V6(_) => HostRange::V6 { first, count },
    };
    Ok(Plan {
        network,
        ports,
        hosts,
    })
}

/// The request's ports, which must all be configured ones, or else every configured
/// port: in range, sorted, de-duplicated.
fn resolve_ports(requested: Option<&[i64]>, configured: &[u16]) -> Result<Vec<u16>, PlanError> {
    let mut ports = match requested {
        Some(list) => list
            .iter()
            .map(|&p| match u16::try_from(p) {
                Ok(port) if port > 0 => Ok(port),
                _ => Err(PlanError::BadPort { port: p }),
            })
            .collect::<Result<Vec<u16>, _>>()?,
        None => configured.iter().copied().filter(|&p| p > 0).collect(),
    };
    ports.sort_unstable();
    ports.dedup();
    if ports.is_empty() {
        return Err(PlanError::NoPorts);
    }
    let refused: Vec<String> = ports
        .iter()
        .filter(|p| !configured.contains(p))
        .map(u16::to_string)
        .collect();
    if !refused.is_empty() {
        let mut allowed = configured.to_vec();
        allowed.sort_unstable();
        allowed.dedup();
        let allowed: Vec<String> = allowed.iter().map(u16::to_string).collect();
        return Err(PlanError::PortsNotAllowed {
            ports: refused.join(", "),
            allowed: if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            },
        });
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(allowed: &[&str]) -> DiscoveryConfig {
        DiscoveryConfig {
            allowed_ranges: allowed.iter().map(|s| (*s).to_owned()).collect(),
            ports: vec![443, 22, 80, 22],
            max_hosts: 1024,
            ..DiscoveryConfig::default()
        }
    }

    fn hosts(p: &Plan) -> Vec<String> {
        p.hosts.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn reserved_ranges_need_an_allowed_range_of_their_own() {
        let everything = config(&["0.0.0.0/0", "::/0"]);
        for cidr in [
            "127.0.0.1",
            "169.254.169.254",
            "169.254.0.0/24",
            "224.0.0.251",
            "0.0.0.0",
            "168.0.0.0/6",
            "::1",
            "fe80::1",
            "ff02::1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "fd00:ec2::254",
            "100.100.100.200",
        ] {
            let e = plan(cidr, Some(&[22]), &everything).unwrap_err();
            assert!(
                matches!(e, PlanError::Reserved { .. }) && e.is_forbidden(),
                "{cidr}: {e}"
            );
        }
        // Ordinary addresses inside the broad ranges, NAT64 images of them included.
        for cidr in [
            "192.0.2.0/28",
            "8.8.8.8",
            "2001:db8::/120",
            "64:ff9b::808:808",
        ] {
            plan(cidr, Some(&[22]), &everything).unwrap();
        }
        // Configured explicitly: allowed.
        let lab = config(&["127.0.0.0/8", "169.254.169.254/32", "::1/128"]);
        plan("127.0.0.1", Some(&[22]), &lab).unwrap();
        plan("169.254.169.254", Some(&[22]), &lab).unwrap();
        plan("::1", Some(&[22]), &lab).unwrap();
        // ...but only what was configured.
        assert!(plan("169.254.169.0/24", Some(&[22]), &lab).is_err());
    }

    #[test]
    fn ipv4_skips_network_and_broadcast_below_slash_31() {
        let c = config(&["10.0.0.0/8"]);
        let p = plan("10.1.2.0/30", None, &c).unwrap();
        assert_eq!(hosts(&p), ["10.1.2.1", "10.1.2.2"]);
        assert_eq!(p.hosts.len(), 2);
        let p = plan("10.1.2.0/29", None, &c).unwrap();
        assert_eq!(p.hosts.len(), 6);
        assert_eq!(hosts(&p).last().unwrap(), "10.1.2.6");
        // RFC 3021 point-to-point links and single hosts keep every address.
        let p = plan("10.1.2.2/31", None, &c).unwrap();
        assert_eq!(hosts(&p), ["10.1.2.2", "10.1.2.3"]);
        let p = plan("10.1.2.9/32", None, &c).unwrap();
        assert_eq!(hosts(&p), ["10.1.2.9"]);
        // A bare address is a /32.
        let p = plan(" 10.1.2.9 ", None, &c).unwrap();
        assert_eq!(hosts(&p), ["10.1.2.9"]);
    }

    #[test]
    fn ipv6_counts_every_address_and_is_bounded_by_max_hosts() {
        let c = config(&["fd00::/16"]);
        let p = plan("fd00:1::/126", Some(&[22]), &c).unwrap();
        assert_eq!(
            hosts(&p),
            ["fd00:1::", "fd00:1::1", "fd00:1::2", "fd00:1::3"]
        );
        assert_eq!(
            plan("fd00::/64", None, &c).unwrap_err(),
            PlanError::TooManyHosts {
                cidr: "fd00::/64".into(),
                hosts: 1 << 64,
                max: 1024
            }
        );
        // An IPv6 /0 saturates rather than overflowing (plan refuses it earlier, as
        // it holds the IPv4-mapped addresses).
        assert_eq!(host_span("::/0".parse().unwrap()), (0, u128::MAX));
    }

    #[test]
    fn ports_default_from_config_sorted_and_deduplicated() {
        let c = config(&["10.0.0.0/8"]);
        assert_eq!(plan("10.0.0.1", None, &c).unwrap().ports, [22, 80, 443]);
        assert_eq!(
            plan("10.0.0.1", Some(&[443, 22, 443]), &c).unwrap().ports,
            [22, 443]
        );
    }

    #[test]
    fn requested_ports_must_be_configured_ones() {
        let c = config(&["10.0.0.0/8"]);
        let e = plan("10.0.0.1", Some(&[22, 8080, 1, 8080]), &c).unwrap_err();
        assert_eq!(
            e,
            PlanError::PortsNotAllowed {
                ports: "1, 8080".into(),
                allowed: "22, 80, 443".into()
            }
        );
        assert_eq!(
            e.to_string(),
            "ports 1, 8080 are not in api.discovery.ports (22, 80, 443)"
        );
        assert!(!e.is_forbidden());
        // Nothing configured: no port may be asked for.
        let none = DiscoveryConfig {
            ports: Vec::new(),
            ..config(&["10.0.0.0/8"])
        };
        assert_eq!(
            plan("10.0.0.1", Some(&[22]), &none).unwrap_err(),
            PlanError::PortsNotAllowed {
                ports: "22".into(),
                allowed: "none".into()
            }
        );
    }

    #[test]
    fn bad_ports_are_named() {
        let c = config(&["10.0.0.0/8"]);
        for (ports, want) in [
            (&[][..], PlanError::NoPorts),
            (&[80, 0][..], PlanError::BadPort { port: 0 }),
            (&[65_536][..], PlanError::BadPort { port: 65_536 }),
            (&[-1][..], PlanError::BadPort { port: -1 }),
        ] {
            assert_eq!(plan("10.0.0.1", Some(ports), &c).unwrap_err(), want);
        }
        let none = DiscoveryConfig {
            ports: Vec::new(),
            ..config(&["10.0.0.0/8"])
        };
        assert_eq!(
            plan("10.0.0.1", None, &none).unwrap_err(),
            PlanError::NoPorts
        );
    }

    #[test]
    fn the_whole_cidr_must_lie_in_one_allowed_range() {
        let c = config(&["10.0.0.0/24", "10.0.1.0/24", "fd00::/64"]);
        assert!(plan("10.0.0.128/25", None, &c).is_ok());
        for cidr in ["10.0.0.0/23", "10.0.2.0/30", "192.168.0.1", "fd01::/126"] {
            let e = plan(cidr, None, &c).unwrap_err();
            assert!(matches!(e, PlanError::OutsideAllowed { .. }), "{cidr}: {e}");
            assert!(e.is_forbidden());
        }
        // Families never mix: an IPv6 range allows no IPv4 address.
        let v6 = config(&["fd00::/8"]);
        assert!(matches!(
            plan("10.0.0.1", None, &v6).unwrap_err(),
            PlanError::OutsideAllowed { .. }
        ));
    }

    #[test]
    fn ipv4_mapped_networks_are_judged_and_scanned_as_ipv4() {
        // Every IPv6 address is allowed, no IPv4 one: the metadata address spelt as
        // IPv6 is still IPv4, and refused.
        let v6 = config(&["::/0"]);
        for cidr in [
            "::ffff:169.254.169.254/128",
            "::ffff:169.254.169.254",
            "::ffff:a9fe:a9fe",
            "::ffff:10.0.0.0/120",
            "::ffff:0:0/96",
        ] {
            let e = plan(cidr, None, &v6).unwrap_err();
            assert!(matches!(e, PlanError::OutsideAllowed { .. }), "{cidr}: {e}");
            assert!(e.is_forbidden());
        }
        assert_eq!(
            plan("::ffff:169.254.169.254/128", None, &v6).unwrap_err(),
            PlanError::OutsideAllowed {
                cidr: "169.254.169.254/32".into(),
                allowed: "::/0".into()
            }
        );
        // Other IPv6 addresses under ::/0 are still fine.
        assert!(plan("fd00::/126", None, &v6).is_ok());
        // Allowed as IPv4, a mapped request is the IPv4 network, with IPv4's rules
        // (no network or broadcast address below /31).
        let v4 = config(&["10.0.0.0/8"]);
        let p = plan("::ffff:10.1.2.0/126", None, &v4).unwrap();
        assert_eq!(p.network, "10.1.2.0/30".parse::<IpNetwork>().unwrap());
        assert_eq!(hosts(&p), ["10.1.2.1", "10.1.2.2"]);
        assert_eq!(
            plan("::ffff:10.0.0.1", None, &v4).unwrap().hosts,
            plan("10.0.0.1", None, &v4).unwrap().hosts
        );
        // An allowed mapped range allows the IPv4 addresses it maps, and no others.
        let mapped = config(&["::ffff:10.0.0.0/104"]);
        assert_eq!(plan("10.2.0.0/30", None, &mapped).unwrap().hosts.len(), 2);
        assert!(matches!(
            plan("11.0.0.1", None, &mapped).unwrap_err(),
            PlanError::OutsideAllowed { .. }
        ));
        // Networks holding the whole /96 and more are neither family: refused before
        // policy or size are weighed.
        for cidr in ["::/64", "::fffe:0:0/95", "::/0"] {
            assert_eq!(
                plan(cidr, None, &v6).unwrap_err(),
                PlanError::StraddlesV4Mapped {
                    cidr: cidr.to_owned()
                },
                "{cidr}"
            );
        }
        // A shorter prefix beside the /96 holds none of it.
        assert_eq!(
            unmap("::1:0:0:0/80".parse().unwrap()),
            Ok("::1:0:0:0/80".parse().unwrap())
        );
    }

    #[test]
    fn policy_refusals_come_before_size_and_empty_ranges_disable_scans() {
        let c = config(&[]);
        assert_eq!(
            plan("10.0.0.0/30", None, &c).unwrap_err(),
            PlanError::Disabled
        );
        assert_eq!(plan("nonsense", None, &c).unwrap_err(), PlanError::Disabled);
        let c = config(&["10.0.0.0/30"]);
        let e = plan("10.0.0.0/8", None, &c).unwrap_err();
        assert_eq!(e.reason(), "outside_allowed");
        let c = config(&["10.0.0.0/8"]);
        let e = plan("10.0.0.0/16", None, &c).unwrap_err();
        assert_eq!(
            e,
            PlanError::TooManyHosts {
                cidr: "10.0.0.0/16".into(),
                hosts: 65_534,
                max: 1024
            }
        );
        assert!(!e.is_forbidden());
        assert_eq!(plan("10.0.0.0/22", None, &c).unwrap().hosts.len(), 1022);
        // Exactly max_hosts is fine: an IPv6 /118 has 1024 addresses.
        let c = config(&["fd00::/16"]);
        assert_eq!(plan("fd00::/118", None, &c).unwrap().hosts.len(), 1024);
        assert!(plan("fd00::/117", None, &c).is_err());
    }

    #[test]
    fn malformed_cidrs_are_refused() {
        let c = config(&["10.0.0.0/8"]);
        for cidr in ["", "10.0.0.0/33", "10.0.0.300/24", "ten/8"] {
            let e = plan(cidr, None, &c).unwrap_err();
            assert_eq!(e.reason(), "bad_cidr", "{cidr}: {e}");
            assert!(!e.is_forbidden());
        }
        assert_eq!(
            plan("10.1.2.3/16", None, &c).unwrap_err(),
            PlanError::HostBitsSet {
                cidr: "10.1.2.3/16".into(),
                network: "10.1.0.0/16".into()
            }
        );
    }
}
