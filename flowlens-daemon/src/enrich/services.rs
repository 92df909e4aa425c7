//! PURE: which service listens on a (protocol, port), and how a port number is usually
//! used.
//!
//! The table answers "what would an operator call this dependency" (`inferred_service`
//! in DESIGN.md §3.3) and gives the direction resolver its strongest port-based hint: a
//! side whose port is a known service is almost always the listening side. It is data,
//! not configuration: one const slice sorted by `(protocol, port)` and searched by
//! binary search, so a lookup is a handful of comparisons and costs no allocation.
//!
//! What goes in: ports an operator would recognise as the default of one service (IANA
//! service name registry, or the de-facto default where IANA lags, such as 6443 for the
//! Kubernetes API). Names are the application protocol as people filter for it
//! (`postgresql`, not `postgres`); TLS-only ports get the `s` suffix IANA gives them
//! (`https`, `ldaps`, `imaps`, `pop3s`, `smtps`), STARTTLS ports keep the plain name
//! (587 is `smtp`). What stays out, on purpose:
//! - ports that are only ever a *client's* source port (DHCP's 68): listing one would
//!   turn a confident "exactly one side is a service" decision into a weaker "both are";
//! - ports used by too many unrelated programs to name one (3000, 5000, 8888);
//! - a protocol's entry where the service does not run on it (TCP 514 is rsh, not
//!   syslog; memcached's UDP port is off by default since 1.5.6 and is mostly seen in
//!   amplification attacks, where naming it would make the victim look like a client).
//!
//! Port classes follow RFC 6335 §6 (system 0-1023, user 1024-49151, dynamic
//! 49152-65535), which [`PortClass`] calls by their traditional names. Real stacks
//! pick ephemeral ports from a wider range than RFC 6335's dynamic one: Linux's default
//! `net.ipv4.ip_local_port_range` is 32768-60999 and Windows (since Vista) and the BSDs
//! use 49152-65535, so [`is_likely_ephemeral`] starts at 32768.

/// IP protocol numbers the table uses.
const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;

/// Known services, sorted by `(protocol, port)` with no duplicate keys (a test checks
/// both, since [`service_for`] binary-searches it).
const SERVICES: &[(u8, u16, &str)] = &[
    (TCP, 21, "ftp"),
    (TCP, 22, "ssh"),
    (TCP, 23, "telnet"),
    (TCP, 25, "smtp"),
    (TCP, 53, "dns"),
    (TCP, 80, "http"),
    (TCP, 88, "kerberos"),
    (TCP, 110, "pop3"),
    (TCP, 111, "sunrpc"),
    (TCP, 135, "msrpc"),
    (TCP, 139, "netbios-ssn"),
    (TCP, 143, "imap"),
    (TCP, 179, "bgp"),
    (TCP, 389, "ldap"),
    (TCP, 443, "https"),
    (TCP, 445, "smb"),
    (TCP, 465, "smtps"),
    (TCP, 587, "smtp"),
    (TCP, 636, "ldaps"),
    (TCP, 873, "rsync"),
    (TCP, 993, "imaps"),
    (TCP, 995, "pop3s"),
    (TCP, 1433, "mssql"),
    (TCP, 1521, "oracle"),
    (TCP, 1883, "mqtt"),
    (TCP, 2049, "nfs"),
    (TCP, 2181, "zookeeper"),
    (TCP, 2379, "etcd"),
    (TCP, 2380, "etcd"),
    (TCP, 3306, "mysql"),
    (TCP, 3389, "rdp"),
    (TCP, 4222, "nats"),
    (TCP, 4739, "ipfix"),
    (TCP, 5060, "sip"),
    (TCP, 5061, "sips"),
    (TCP, 5432, "postgresql"),
    (TCP, 5671, "amqps"),
    (TCP, 5672, "amqp"),
    (TCP, 5985, "winrm"),
    (TCP, 5986, "winrm"),
    (TCP, 6379, "redis"),
    (TCP, 6443, "kubernetes-api"),
    (TCP, 6514, "syslog"),
    (TCP, 8000, "http"),
    (TCP, 8080, "http"),
    (TCP, 8443, "https"),
    (TCP, 8883, "mqtt"),
    (TCP, 9042, "cassandra"),
    (TCP, 9090, "prometheus"),
    (TCP, 9092, "kafka"),
    (TCP, 9200, "elasticsearch"),
    (TCP, 9300, "elasticsearch"),
    (TCP, 10250, "kubelet"),
    (TCP, 11211, "memcached"),
    (TCP, 27017, "mongodb"),
    (UDP, 53, "dns"),
    (UDP, 67, "dhcp"),
    (UDP, 69, "tftp"),
    (UDP, 88, "kerberos"),
    (UDP, 123, "ntp"),
    (UDP, 137, "netbios-ns"),
    (UDP, 161, "snmp"),
    (UDP, 162, "snmptrap"),
    (UDP, 389, "ldap"),
    // HTTP/3 (QUIC, RFC 9114) listens where HTTPS does.
    (UDP, 443, "https"),
    (UDP, 500, "ike"),
    (UDP, 514, "syslog"),
    (UDP, 547, "dhcpv6"),
    (UDP, 1194, "openvpn"),
    (UDP, 1812, "radius"),
    (UDP, 1813, "radius"),
    (UDP, 2049, "nfs"),
    (UDP, 2055, "netflow"),
    (UDP, 3389, "rdp"),
    // IKE behind NAT (RFC 3948).
    (UDP, 4500, "ike"),
    (UDP, 4739, "ipfix"),
    (UDP, 4789, "vxlan"),
    (UDP, 5060, "sip"),
    (UDP, 5353, "mdns"),
    (UDP, 6343, "sflow"),
    // WireGuard's documented default: the one listed port above 32768, which is why
    // `is_likely_ephemeral` consults the table.
    (UDP, 51820, "wireguard"),
    // RFC 7011 §10.1: IPFIX over SCTP is the transport every exporter must support.
    (SCTP, 4739, "ipfix"),
];

/// The service conventionally listening on `port` for IP `protocol`, if the table
/// knows one.
#[must_use]
pub fn service_for(protocol: u8, port: u16) -> Option<&'static str> {
    SERVICES
        .binary_search_by_key(&(protocol, port), |&(proto, p, _)| (proto, p))
        .ok()
        .and_then(|i| SERVICES.get(i))
        .map(|&(_, _, name)| name)
}

/// RFC 6335 §6 port ranges, by their traditional names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PortClass {
    /// 0-1023 (RFC 6335 "system ports"): binding needs privilege on Unix, so a program
    /// listening here was deliberately set up as a service.
    WellKnown,
    /// 1024-49151 (RFC 6335 "user ports"): services register here, but Linux also hands
    /// out 32768 and up as ephemeral ports (see [`is_likely_ephemeral`]).
    Registered,
    /// 49152-65535 (RFC 6335 "dynamic and/or private ports").
    Ephemeral,
}

/// Where Linux starts handing out ephemeral ports by default (the low end of
/// `net.ipv4.ip_local_port_range`, 32768-60999).
pub const LINUX_EPHEMERAL_START: u16 = 32768;

/// The RFC 6335 class of `port`.
#[must_use]
pub const fn classify_port(port: u16) -> PortClass {
    match port {
        0..=1023 => PortClass::WellKnown,
        1024..=49151 => PortClass::Registered,
        _ => PortClass::Ephemeral,
    }
}

/// Whether `port` is probably a client's ephemeral port: at or above Linux's default
/// ephemeral start (which also covers Windows' and the BSDs' 49152-65535), and not a
/// service the table knows for `protocol`. Stacks configured with a lower range (old
/// Windows used 1025-5000) are not detected; the resolver's other rules cover them.
#[must_use]
pub fn is_likely_ephemeral(protocol: u8, port: u16) -> bool {
    port >= LINUX_EPHEMERAL_START && service_for(protocol, port).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_without_duplicate_keys() {
        for pair in SERVICES.windows(2) {
            let (a, b) = ((pair[0].0, pair[0].1), (pair[1].0, pair[1].1));
            assert!(a < b, "{a:?} must sort strictly before {b:?}");
        }
    }

    #[test]
    fn names_are_lowercase_label_safe() {
        for &(_, port, name) in SERVICES {
            assert!(
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
                "port {port}: {name:?} must be a lower-case label",
            );
        }
    }

    #[test]
    fn every_entry_is_found() {
        for &(proto, port, name) in SERVICES {
            assert_eq!(service_for(proto, port), Some(name), "{proto}/{port}");
        }
    }

    #[test]
    fn required_services() {
        let cases = [
            (TCP, 80, "http"),
            (TCP, 8080, "http"),
            (TCP, 8000, "http"),
            (TCP, 443, "https"),
            (TCP, 8443, "https"),
            (TCP, 22, "ssh"),
            (TCP, 53, "dns"),
            (UDP, 53, "dns"),
            (TCP, 5432, "postgresql"),
            (TCP, 3306, "mysql"),
            (TCP, 6379, "redis"),
            (TCP, 27017, "mongodb"),
            (TCP, 9092, "kafka"),
            (TCP, 389, "ldap"),
            (TCP, 636, "ldaps"),
            (TCP, 25, "smtp"),
            (TCP, 587, "smtp"),
            (TCP, 465, "smtps"),
            (UDP, 123, "ntp"),
            (UDP, 161, "snmp"),
            (UDP, 162, "snmptrap"),
            (TCP, 3389, "rdp"),
            (TCP, 6443, "kubernetes-api"),
            (TCP, 2379, "etcd"),
            (TCP, 2380, "etcd"),
            (TCP, 11211, "memcached"),
            (TCP, 9200, "elasticsearch"),
            (TCP, 9300, "elasticsearch"),
            (TCP, 5672, "amqp"),
            (TCP, 2181, "zookeeper"),
            (TCP, 1433, "mssql"),
            (TCP, 1521, "oracle"),
            (TCP, 9042, "cassandra"),
            (TCP, 4222, "nats"),
            (TCP, 9090, "prometheus"),
            (UDP, 514, "syslog"),
            (UDP, 2055, "netflow"),
            (UDP, 4739, "ipfix"),
            (TCP, 4739, "ipfix"),
            (UDP, 6343, "sflow"),
            (TCP, 88, "kerberos"),
            (UDP, 88, "kerberos"),
            (TCP, 445, "smb"),
            (TCP, 2049, "nfs"),
            (TCP, 143, "imap"),
            (TCP, 993, "imaps"),
            (TCP, 110, "pop3"),
            (TCP, 995, "pop3s"),
            (TCP, 21, "ftp"),
            (TCP, 23, "telnet"),
            (TCP, 5060, "sip"),
            (UDP, 5060, "sip"),
            (TCP, 179, "bgp"),
            (UDP, 67, "dhcp"),
            (UDP, 69, "tftp"),
        ];
        for (proto, port, name) in cases {
            assert_eq!(service_for(proto, port), Some(name), "{proto}/{port}");
        }
    }

    #[test]
    fn protocol_is_part_of_the_key() {
        assert_eq!(service_for(UDP, 514), Some("syslog"));
        assert_eq!(service_for(TCP, 514), None, "TCP 514 is rsh, not syslog");
        assert_eq!(service_for(UDP, 5432), None);
        assert_eq!(service_for(TCP, 123), None);
        assert_eq!(service_for(1, 8), None, "ICMP has no ports");
    }

    #[test]
    fn client_only_and_ambiguous_ports_are_absent() {
        assert_eq!(service_for(UDP, 68), None, "DHCP client port");
        assert_eq!(service_for(TCP, 3000), None);
        assert_eq!(service_for(TCP, 8500), None);
        assert_eq!(service_for(TCP, 0), None);
    }

    #[test]
    fn port_class_edges() {
        assert_eq!(classify_port(0), PortClass::WellKnown);
        assert_eq!(classify_port(1023), PortClass::WellKnown);
        assert_eq!(classify_port(1024), PortClass::Registered);
        assert_eq!(classify_port(49151), PortClass::Registered);
        assert_eq!(classify_port(49152), PortClass::Ephemeral);
        assert_eq!(classify_port(u16::MAX), PortClass::Ephemeral);
    }

    #[test]
    fn likely_ephemeral_edges() {
        assert!(!is_likely_ephemeral(TCP, 32767));
        assert!(is_likely_ephemeral(TCP, 32768));
        assert!(is_likely_ephemeral(TCP, 60999));
        assert!(
            is_likely_ephemeral(TCP, 61000),
            "Windows and BSD go up to 65535"
        );
        assert!(is_likely_ephemeral(TCP, u16::MAX));
        assert!(
            !is_likely_ephemeral(UDP, 51820),
            "WireGuard's listening port"
        );
        assert!(is_likely_ephemeral(TCP, 51820), "WireGuard is UDP only");
        assert!(
            !is_likely_ephemeral(TCP, 27017),
            "below the Linux range anyway"
        );
    }
}
