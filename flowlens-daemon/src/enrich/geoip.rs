//! EDGE: where a public address is and which network announces it, read from `MaxMind` DB
//! files (DESIGN.md §3.2, "`GeoIP` Lookup": country, city and ASN).
//!
//! [`GeoIp::open`] reads the City database (`enrichment.geoip.database_path`) and the ASN
//! database (`enrichment.geoip.asn_database_path`) into memory once, at startup; after
//! that [`GeoIp::lookup`] is a tree walk and a few borrowed-string decodes with no I/O, so
//! the enrichment stage may call it per record. Either file may be left out (a site that
//! only wants AS numbers needs no City file); with `enabled: false` (the default, since
//! the design's example paths do not exist on a fresh machine) nothing is opened.
//!
//! Records are decoded into this module's own small serde structs, which borrow their
//! strings from the database buffer, rather than into `maxminddb::geoip2`: we read five
//! fields, and the crate's model types change between releases.
//!
//! Private, loopback and other addresses the databases do not cover are "not found"
//! (`None`), never an error. A record that fails to decode (a damaged file) is counted
//! in [`GeoIp::decode_errors`] and also answers `None`, so one bad record costs an
//! enrichment, not the flow.
//!
//! Not done here: reloading the files when `geoipupdate` replaces them (restart the
//! daemon), and caching answers (a lookup is already an in-memory tree walk; measure
//! before adding a cache in front of it).

use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use maxminddb::{MaxMindDbError, Reader};
use serde::{Deserialize, Serialize};

/// `enrichment.geoip` (DESIGN.md §3.2).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct GeoIpConfig {
    /// Off by default: the design's example paths (`/data/GeoLite2-City.mmdb`) do not
    /// exist on a fresh machine, and `MaxMind`'s databases need an account to download, so
    /// an operator turns this on after installing them.
    pub enabled: bool,
    /// A GeoIP2/GeoLite2 City (or Country) database: country, city, coordinates.
    pub database_path: Option<PathBuf>,
    /// A GeoLite2/GeoIP2 ASN database: AS number and organization.
    pub asn_database_path: Option<PathBuf>,
}

/// What the databases say about one address (DESIGN.md §3.2 `GeoInfo`). Every field is
/// optional because each database, and each record in it, may lack any of them: the
/// test City database has Japan's `2001:218::/32` with a country but no city.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GeoInfo {
    /// ISO 3166-1 alpha-2 code of the country the address is located in (`"GB"`).
    pub country_code: Option<String>,
    /// The city's English name.
    pub city: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    /// The autonomous system announcing the address's network.
    pub asn: Option<u32>,
    /// The organization registered for that AS (`"Telstra Pty Ltd"`).
    pub as_org: Option<String>,
}

impl GeoInfo {
    fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Why the `GeoIP` databases could not be opened. Startup fails on these: an operator who
/// enabled `GeoIP` wants to hear that the file is missing, not find empty columns later.
#[derive(Debug, thiserror::Error)]
pub enum GeoIpError {
    #[error("enrichment.geoip is enabled but neither database_path nor asn_database_path is set")]
    NoDatabase,
    #[error("cannot read GeoIP database {}: {source}", path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid MaxMind DB file: {source}", path.display())]
    Invalid {
        path: PathBuf,
        #[source]
        source: MaxMindDbError,
    },
}

impl GeoIpError {
    /// A bounded label for metrics and logs.
    pub const fn reason(&self) -> &'static str {
        match self {
            Self::NoDatabase => "no_database",
            Self::Unreadable { .. } => "unreadable",
            Self::Invalid { .. } => "invalid",
        }
    }
}

/// One opened database and whether it can answer IPv6 questions.
#[derive(Debug)]
struct Database {
    reader: Reader<Vec<u8>>,
    /// An IPv4-only database rejects IPv6 lookups with an error; we treat them as "not
    /// found" instead of counting an error for every IPv6 flow.
    has_ipv6: bool,
}

impl Database {
    /// Reads the whole file into memory. Owning the bytes (rather than mapping them)
    /// means a file truncated or rewritten in place cannot crash the daemon with SIGBUS.
    fn open(path: &Path) -> Result<Self, GeoIpError> {
        let bytes = std::fs::read(path).map_err(|source| GeoIpError::Unreadable {
            path: path.to_owned(),
            source,
        })?;
        let reader = Reader::from_source(bytes).map_err(|source| GeoIpError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        let has_ipv6 = reader.metadata().ip_version == 6;
        Ok(Self { reader, has_ipv6 })
    }

    /// The record for `ip` decoded as `T`: `Ok(None)` when the address is not covered.
    fn record<'a, T: Deserialize<'a>>(&'a self, ip: IpAddr) -> Result<Option<T>, MaxMindDbError> {
        if ip.is_ipv6() && !self.has_ipv6 {
            return Ok(None);
        }
        self.reader.lookup(ip)?.decode()
    }
}

/// The `GeoIP` lookup handle: immutable after [`GeoIp::open`], so share it with `Arc`.
#[derive(Debug)]
pub struct GeoIp {
    city: Option<Database>,
    asn: Option<Database>,
    decode_errors: AtomicU64,
}

impl GeoIp {
    /// Opens the configured databases; `Ok(None)` when `GeoIP` is disabled.
    pub fn open(config: &GeoIpConfig) -> Result<Option<Self>, GeoIpError> {
        if !config.enabled {
            return Ok(None);
        }
        if config.database_path.is_none() && config.asn_database_path.is_none() {
            return Err(GeoIpError::NoDatabase);
        }
        let open = |path: &Option<PathBuf>| path.as_deref().map(Database::open).transpose();
        Ok(Some(Self {
            city: open(&config.database_path)?,
            asn: open(&config.asn_database_path)?,
            decode_errors: AtomicU64::new(0),
        }))
    }

    /// What the databases know about `ip`; `None` when neither has anything for it.
    ///
    /// IPv4-mapped IPv6 addresses (`::ffff:81.2.69.142`) are looked up as IPv4, as
    /// [`super::classify`] treats them.
    pub fn lookup(&self, ip: IpAddr) -> Option<GeoInfo> {
        let ip = ip.to_canonical();
        let mut info = GeoInfo::default();
        if let Some(city) = self
            .city
            .as_ref()
            .and_then(|db| self.decode::<CityRecord<'_>>(db, ip))
        {
            info.country_code = city.country.and_then(|c| c.iso_code).and_then(country_code);
            info.city = city
                .city
                .and_then(|c| c.names)
                .and_then(|n| n.en)
                .map(str::to_owned);
            if let Some(location) = city.location {
                info.latitude = location.latitude;
                info.longitude = location.longitude;
            }
        }
        if let Some(asn) = self
            .asn
            .as_ref()
            .and_then(|db| self.decode::<AsnRecord<'_>>(db, ip))
        {
            info.asn = asn.autonomous_system_number;
            info.as_org = asn.autonomous_system_organization.and_then(as_org);
        }
        (!info.is_empty()).then_some(info)
    }

    /// Lookups whose record could not be decoded since startup: a non-zero value means a
    /// damaged or unexpected database file.
    pub fn decode_errors(&self) -> u64 {
        self.decode_errors.load(Ordering::Relaxed)
    }

    fn decode<'a, T: Deserialize<'a>>(&self, db: &'a Database, ip: IpAddr) -> Option<T> {
        match db.record(ip) {
            Ok(record) => record,
            Err(err) => {
                self.decode_errors.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%err, "undecodable GeoIP record");
                None
            }
        }
    }
}

/// The part of a GeoIP2/GeoLite2 City record we read. Missing keys decode as `None`,
/// and keys not named here are skipped.
#[derive(Deserialize)]
struct CityRecord<'a> {
    #[serde(borrow)]
    country: Option<Country<'a>>,
    #[serde(borrow)]
    city: Option<City<'a>>,
    location: Option<Location>,
}

#[derive(Deserialize)]
struct Country<'a> {
    iso_code: Option<&'a str>,
}

#[derive(Deserialize)]
struct City<'a> {
    #[serde(borrow)]
    names: Option<Names<'a>>,
}

#[derive(Deserialize)]
struct Names<'a> {
    en: Option<&'a str>,
}

#[derive(Deserialize)]
struct Location {
    latitude: Option<f64>,
    longitude: Option<f64>,
}

/// A GeoLite2/GeoIP2 ASN record.
#[derive(Deserialize)]
struct AsnRecord<'a> {
    autonomous_system_number: Option<u32>,
    autonomous_system_organization: Option<&'a str>,
}

/// Longest `as_org` kept (the column is `VARCHAR(255)`).
const MAX_AS_ORG_CHARS: usize = 255;

/// An ISO 3166 code as the `country_code` column (`VARCHAR(2)`) takes it: two ASCII
/// letters, else none. The database file comes from outside: a damaged or crafted one
/// must not make every flush fail.
fn country_code(code: &str) -> Option<String> {
    (code.len() == 2 && code.bytes().all(|b| b.is_ascii_alphabetic()))
        .then(|| code.to_ascii_uppercase())
}

/// An AS organization as the `as_org` column takes it: control characters (NUL, which
/// PostgreSQL text refuses, among them) dropped, at most 255 characters, none if empty.
fn as_org(org: &str) -> Option<String> {
    let clean: String = org
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_AS_ORG_CHARS)
        .collect();
    let clean = clean.trim();
    (!clean.is_empty()).then(|| clean.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/geoip")
            .join(name)
    }

    fn config(city: Option<PathBuf>, asn: Option<PathBuf>) -> GeoIpConfig {
        GeoIpConfig {
            enabled: true,
            database_path: city,
            asn_database_path: asn,
        }
    }

    fn both() -> GeoIp {
        let cfg = config(
            Some(data("GeoLite2-City-Test.mmdb")),
            Some(data("GeoLite2-ASN-Test.mmdb")),
        );
        GeoIp::open(&cfg).unwrap().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn london_from_the_city_database() {
        let info = both().lookup(ip("81.2.69.142")).unwrap();
        assert_eq!(info.country_code.as_deref(), Some("GB"));
        assert_eq!(info.city.as_deref(), Some("London"));
        assert_eq!(info.latitude, Some(51.5142));
        assert_eq!(info.longitude, Some(-0.0931));
        assert_eq!(info.asn, None, "the ASN test database has no record for it");
    }

    #[test]
    fn ipv4_mapped_ipv6_is_looked_up_as_ipv4() {
        let geo = both();
        assert_eq!(
            geo.lookup(ip("::ffff:81.2.69.142")),
            geo.lookup(ip("81.2.69.142"))
        );
    }

    #[test]
    fn ipv6_country_without_a_city() {
        let info = both().lookup(ip("2001:218::1")).unwrap();
        assert_eq!(info.country_code.as_deref(), Some("JP"));
        assert_eq!(info.city, None);
    }

    #[test]
    fn asn_and_organization() {
        let info = both().lookup(ip("1.128.0.1")).unwrap();
        assert_eq!(info.asn, Some(1221));
        assert_eq!(info.as_org.as_deref(), Some("Telstra Pty Ltd"));
        let no_org = both().lookup(ip("12.81.96.1")).unwrap();
        assert_eq!((no_org.asn, no_org.as_org), (Some(7018), None));
    }

    #[test]
    fn private_and_loopback_addresses_are_not_found() {
        let geo = both();
        for addr in ["10.0.0.1", "127.0.0.1", "192.168.1.1", "::1", "fd00::1"] {
            assert_eq!(geo.lookup(ip(addr)), None, "{addr}");
        }
        assert_eq!(geo.decode_errors(), 0);
    }

    #[test]
    fn either_database_alone() {
        let asn_only = GeoIp::open(&config(None, Some(data("GeoLite2-ASN-Test.mmdb"))))
            .unwrap()
            .unwrap();
        let info = asn_only.lookup(ip("1.128.0.1")).unwrap();
        assert_eq!((info.asn, info.country_code), (Some(1221), None));
        assert_eq!(asn_only.lookup(ip("81.2.69.142")), None);
    }

    #[test]
    fn disabled_opens_nothing() {
        let missing = Some(data("does-not-exist.mmdb"));
        let cfg = GeoIpConfig {
            enabled: false,
            ..config(missing.clone(), missing)
        };
        assert!(GeoIp::open(&cfg).unwrap().is_none());
        assert!(GeoIp::open(&GeoIpConfig::default()).unwrap().is_none());
    }

    #[test]
    fn enabled_without_paths_is_an_error() {
        let err = GeoIp::open(&config(None, None)).unwrap_err();
        assert!(matches!(err, GeoIpError::NoDatabase), "{err}");
    }

    #[test]
    fn missing_file_names_the_file() {
        let path = data("GeoLite2-Nope.mmdb");
        let err = GeoIp::open(&config(
            Some(data("GeoLite2-City-Test.mmdb")),
            Some(path.clone()),
        ))
        .unwrap_err();
        assert_eq!(err.reason(), "unreadable");
        let text = err.to_string();
        assert!(text.contains(&*path.to_string_lossy()), "{text}");
        assert!(text.contains("No such file"), "{text}");
    }

    #[test]
    fn garbage_file_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("flowlens-geoip-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("garbage.mmdb");
        std::fs::write(&path, b"this is not a MaxMind database\n".repeat(100)).unwrap();
        let err = GeoIp::open(&config(Some(path.clone()), None)).unwrap_err();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(err.reason(), "invalid");
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
    }

    #[test]
    fn damaged_tree_and_data_are_counted_never_panic() {
        let good = std::fs::read(data("GeoLite2-City-Test.mmdb")).unwrap();
        let dir = std::env::temp_dir().join(format!("flowlens-geoip-dmg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Overwrite 4 kB of the search tree (0xff: pointers past the end), of the tree
        // (zeros: everything points at "not found") and of the data section, keeping the
        // metadata at the end intact so the file still opens.
        let mut errors = Vec::new();
        for (start, fill) in [(0, 0xff), (64, 0x00), (good.len() / 2, 0xee)] {
            let mut bad = good.clone();
            bad[start..start + 4096].fill(fill);
            let path = dir.join(format!("damaged-{start}.mmdb"));
            std::fs::write(&path, &bad).unwrap();
            let geo = GeoIp::open(&config(Some(path), None)).unwrap().unwrap();
            for addr in ["81.2.69.142", "2001:218::1", "10.0.0.1", "214.78.120.1"] {
                assert_eq!(geo.lookup(ip(addr)), None, "{addr} in damaged-{start}");
            }
            errors.push(geo.decode_errors());
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            errors[0] > 0 && errors[2] > 0,
            "decode errors counted: {errors:?}"
        );
    }

    #[test]
    fn config_defaults_and_unknown_keys() {
        let cfg: GeoIpConfig = serde_yaml::from_str("{}").unwrap();
        assert_eq!(cfg, GeoIpConfig::default());
        assert!(!cfg.enabled);
        let cfg: GeoIpConfig =
            serde_yaml::from_str("enabled: true\ndatabase_path: /data/GeoLite2-City.mmdb\n")
                .unwrap();
        assert_eq!(
            cfg.database_path,
            Some(PathBuf::from("/data/GeoLite2-City.mmdb"))
        );
        assert!(serde_yaml::from_str::<GeoIpConfig>("databse_path: /x\n").is_err());
    }

    #[test]
    fn values_from_the_database_file_are_bounded_for_their_columns() {
        assert_eq!(country_code("gb").as_deref(), Some("GB"));
        assert_eq!(country_code("GBR"), None);
        assert_eq!(country_code("G\u{0}"), None);
        assert_eq!(
            as_org("Telstra Pty Ltd").as_deref(),
            Some("Telstra Pty Ltd")
        );
        assert_eq!(as_org("a\u{0}b\nc").as_deref(), Some("abc"));
        assert_eq!(as_org(" \u{0} "), None);
        let long = "\u{e9}".repeat(1000);
        assert_eq!(as_org(&long).map(|s| s.chars().count()), Some(255));
    }
}
