//! The graph as ServiceNow Identification and Reconciliation (IRE) payloads: pure, no
//! I/O.
//!
//! An IRE payload is `{"items": [...], "relations": [...]}`: each item a CI
//! (`className`, `values`, `sys_object_source_info`), each relation two indices into
//! `items` and a `cmdb_rel_type` name. Every item carries the asset's id as its
//! `source_native_key` under our `source_name`, so the IRE finds the CI it made the
//! last time (its `sys_object_source` record) whatever else changed: pushing the same
//! graph twice creates nothing new. A dependency `a -> b` ("a uses b") is the relation
//! `Depends on::Used by` with `a` the parent and `b` the child; several dependencies
//! between one pair (ports, protocols) are one relation, as the CMDB has no port on a
//! relation.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

/// The relation type of every dependency (a `cmdb_rel_type` name).
pub const DEPENDS_ON: &str = "Depends on::Used by";

/// Longest value written to a CI field: `name` and most string fields of `cmdb_ci`
/// are 255 characters, and values come from outside (reverse DNS, people).
const MAX_VALUE_CHARS: usize = 255;

/// An asset as the export reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CiSource {
    pub id: Uuid,
    pub name: Option<String>,
    pub fqdn: Option<String>,
    pub asset_type: String,
    pub ip_addresses: Vec<String>,
    pub mac_addresses: Vec<String>,
    pub os_family: Option<String>,
    pub os_version: Option<String>,
    pub environment: Option<String>,
    pub cloud_instance_id: Option<String>,
    pub discovery_source: String,
    pub last_seen: DateTime<Utc>,
}

/// A dependency as the export reads it: who uses whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct RelSource {
    pub source_asset_id: Uuid,
    pub target_asset_id: Uuid,
}

/// One IRE request body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Payload {
    pub items: Vec<Item>,
    pub relations: Vec<Relation>,
}

/// A CI.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Item {
    /// The CI class (`sys_class_name`).
    #[serde(rename = "className")]
    pub class_name: String,
    /// Field values by field name.
    #[schema(value_type = Object)]
    pub values: Map<String, Value>,
    /// Where the CI comes from: the stable key the IRE identifies it by on every push.
    pub sys_object_source_info: SourceInfo,
}

/// `sys_object_source_info` of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SourceInfo {
    /// The data source (`api.integrations.servicenow.data_source`).
    pub source_name: String,
    /// The asset's FlowLens id: stable across pushes, renames and address changes.
    pub source_native_key: String,
    /// When FlowLens last saw the asset, `YYYY-MM-DD HH:MM:SS` (UTC), so the IRE's
    /// recency rules can prefer fresher sources.
    pub source_recency_timestamp: String,
}

/// A relation between two items of the same payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Relation {
    /// Index in `items` of the CI that depends on the other.
    pub parent: usize,
    /// Index in `items` of the CI it depends on.
    pub child: usize,
    /// Always `Depends on::Used by`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// How assets become CIs.
#[derive(Debug, Clone)]
pub struct Mapping<'a> {
    /// `source_name` of every item.
    pub source_name: &'a str,
    /// CI class per asset type.
    pub classes: &'a BTreeMap<String, String>,
}

impl Mapping<'_> {
    /// The CI of an asset.
    pub fn item(&self, a: &CiSource) -> Item {
        let mut class = self
            .classes
            .get(&a.asset_type)
            .or_else(|| self.classes.get("unknown"))
            .map_or("cmdb_ci_server", String::as_str);
        let os = a.os_family.as_deref().map(str::to_ascii_lowercase);
        if class == "cmdb_ci_server" {
            match os.as_deref() {
                Some("linux") => class = "cmdb_ci_linux_server",
                Some("windows") => class = "cmdb_ci_win_server",
                _ => {}
            }
        }
        let mut values = Map::new();
        let mut put = |key: &str, value: &str| {
            let value = bounded(value);
            if !value.is_empty() {
                values.insert(key.to_owned(), Value::String(value));
            }
        };
        // An IPv4 address first: the CMDB's ip_address is usually read as one.
        let ip = a
            .ip_addresses
            .iter()
            .find(|ip| !ip.contains(':'))
            .or_else(|| a.ip_addresses.first());
        // The first of name, FQDN, address that is not empty once cleaned: the IRE
        // cannot identify a new CI without a name.
        let name = [a.name.as_deref(), a.fqdn.as_deref(), ip.map(String::as_str)]
            .into_iter()
            .flatten()
            .map(bounded)
            .find(|n| !n.is_empty())
            .unwrap_or_else(|| a.id.to_string());
        put("name", &name);
        if let Some(ip) = ip {
            put("ip_address", ip);
        }
        if let Some(fqdn) = a.fqdn.as_deref() {
            put("fqdn", fqdn);
            if let Some((host, domain)) = fqdn.trim_end_matches('.').split_once('.') {
                put("host_name", host);
                put("dns_domain", domain);
            }
        }
        if let Some(mac) = a.mac_addresses.first() {
            put("mac_address", mac);
        }
        if let Some(os) = a.os_family.as_deref() {
            put("os", os);
        }
        if let Some(v) = a.os_version.as_deref() {
            put("os_version", v);
        }
        if let Some(id) = a.cloud_instance_id.as_deref() {
            put("object_id", id);
        }
        if let Some(used_for) = a.environment.as_deref().and_then(used_for) {
            put("used_for", used_for);
        }
        put(
            "short_description",
            if a.discovery_source == "flow" {
                "Discovered by FlowLens from network flows"
            } else {
                "Recorded in FlowLens"
            },
        );
        if matches!(a.asset_type.as_str(), "vm" | "container") {
            values.insert("virtual".to_owned(), Value::Bool(true));
        }
        Item {
            class_name: class.to_owned(),
            values,
            sys_object_source_info: SourceInfo {
                source_name: self.source_name.to_owned(),
                source_native_key: a.id.to_string(),
                source_recency_timestamp: a.last_seen.format("%Y-%m-%d %H:%M:%S").to_string(),
            },
        }
    }

    /// The whole graph as one payload: every asset, and one relation per pair of
    /// assets with a dependency between them whose two ends are exported (a
    /// dependency on an asset left out, or on itself, is left out with it).
    pub fn payload(&self, assets: &[CiSource], deps: &[RelSource]) -> Payload {
        let index: HashMap<Uuid, usize> =
            assets.iter().enumerate().map(|(i, a)| (a.id, i)).collect();
        let mut seen = std::collections::HashSet::new();
        let relations = deps
            .iter()
            .filter_map(|d| {
                let parent = *index.get(&d.source_asset_id)?;
                let child = *index.get(&d.target_asset_id)?;
                (parent != child && seen.insert((parent, child))).then(|| Relation {
                    parent,
                    child,
                    kind: DEPENDS_ON.to_owned(),
                })
            })
            .collect();
        Payload {
            items: assets.iter().map(|a| self.item(a)).collect(),
            relations,
        }
    }
}

/// One request of a push: its payload, and which records of the whole export its
/// items and relations are (for counting each record once, however many requests
/// carried it).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub payload: Payload,
    /// `items[i]` of the payload is `full.items[items[i]]`.
    pub items: Vec<usize>,
    /// `relations[i]` of the payload is `full.relations[relations[i]]`.
    pub relations: Vec<usize>,
}

/// Splits a payload into requests of at most `max_items` items, each self-contained
/// (a relation's two CIs are in its request: the IRE resolves indices per request).
/// Relations go first, grouped so their CIs fill requests; the CIs no relation took
/// follow. A CI in several requests is sent each time with the same source key and
/// values, which the IRE reconciles into one.
pub fn batches(full: &Payload, max_items: usize) -> Vec<Batch> {
    let max_items = max_items.max(2);
    let mut out = Vec::new();
    let mut sent = vec![false; full.items.len()];
    let mut current = Batch::default();
    let mut local: HashMap<usize, usize> = HashMap::new();
    for (n, r) in full.relations.iter().enumerate() {
        let missing = usize::from(!local.contains_key(&r.parent))
            + usize::from(!local.contains_key(&r.child));
        if current.items.len() + missing > max_items {
            out.push(std::mem::take(&mut current));
            local.clear();
        }
        let mut place = |i: usize, current: &mut Batch| {
            *local.entry(i).or_insert_with(|| {
                current.payload.items.push(full.items[i].clone());
                current.items.push(i);
                sent[i] = true;
                current.items.len() - 1
            })
        };
        let parent = place(r.parent, &mut current);
        let child = place(r.child, &mut current);
        current.payload.relations.push(Relation {
            parent,
            child,
            kind: r.kind.clone(),
        });
        current.relations.push(n);
    }
    for (i, item) in full.items.iter().enumerate() {
        if sent[i] {
            continue;
        }
        if current.items.len() >= max_items {
            out.push(std::mem::take(&mut current));
        }
        current.payload.items.push(item.clone());
        current.items.push(i);
    }
    if !current.items.is_empty() {
        out.push(current);
    }
    out
}

/// FlowLens environments as `cmdb_ci.used_for` choices.
fn used_for(environment: &str) -> Option<&'static str> {
    Some(match environment.to_ascii_lowercase().as_str() {
        "prod" | "production" => "Production",
        "staging" | "stage" => "Staging",
        "qa" => "QA",
        "test" | "testing" => "Test",
        "dev" | "development" => "Development",
        "dr" | "disaster_recovery" => "Disaster recovery",
        "demo" => "Demonstration",
        "training" => "Training",
        _ => return None,
    })
}

/// `s` without control characters, at most [`MAX_VALUE_CHARS`] characters.
fn bounded(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control())
        .take(MAX_VALUE_CHARS)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(n: u128, name: &str, asset_type: &str) -> CiSource {
        CiSource {
            id: Uuid::from_u128(n),
            name: Some(name.to_owned()),
            fqdn: None,
            asset_type: asset_type.to_owned(),
            ip_addresses: vec![format!("10.0.0.{n}")],
            mac_addresses: vec![],
            os_family: None,
            os_version: None,
            environment: None,
            cloud_instance_id: None,
            discovery_source: "flow".to_owned(),
            last_seen: DateTime::from_timestamp(1_700_000_000, 0).unwrap_or_default(),
        }
    }

    fn classes() -> BTreeMap<String, String> {
        crate::config::ServiceNowConfig::default().classes
    }

    fn rel(a: u128, b: u128) -> RelSource {
        RelSource {
            source_asset_id: Uuid::from_u128(a),
            target_asset_id: Uuid::from_u128(b),
        }
    }

    #[test]
    fn an_asset_becomes_a_ci_with_its_stable_key() {
        let classes = classes();
        let m = Mapping {
            source_name: "FlowLens",
            classes: &classes,
        };
        let mut a = asset(7, "db-1", "server");
        a.os_family = Some("Linux".into());
        a.fqdn = Some("db-1.prod.example.com".into());
        a.ip_addresses = vec!["2001:db8::7".into(), "10.0.0.7".into()];
        a.environment = Some("prod".into());
        a.name = Some(format!("x{}\u{7}", "y".repeat(400)));
        let item = m.item(&a);
        assert_eq!(item.class_name, "cmdb_ci_linux_server");
        assert_eq!(item.values["ip_address"], "10.0.0.7");
        assert_eq!(item.values["host_name"], "db-1");
        assert_eq!(item.values["dns_domain"], "prod.example.com");
        assert_eq!(item.values["used_for"], "Production");
        let name = item.values["name"].as_str().unwrap_or_default();
        assert_eq!(name.chars().count(), 255);
        assert!(!name.contains('\u{7}'));
        assert_eq!(
            item.sys_object_source_info,
            SourceInfo {
                source_name: "FlowLens".into(),
                source_native_key: Uuid::from_u128(7).to_string(),
                source_recency_timestamp: "2023-11-14 22:13:20".into(),
            }
        );
        let json = serde_json::to_value(&item).unwrap_or_default();
        assert_eq!(json["className"], "cmdb_ci_linux_server");
        let mut switch = asset(8, " \u{1}", "network_device");
        let item = m.item(&switch);
        assert_eq!(item.class_name, "cmdb_ci_netgear");
        assert_eq!(
            item.values["name"], "10.0.0.8",
            "no usable name: its address"
        );
        switch.ip_addresses.clear();
        let item = m.item(&switch);
        assert_eq!(
            item.values["name"],
            Uuid::from_u128(8).to_string(),
            "nothing: its id"
        );
    }

    #[test]
    fn dependencies_between_one_pair_are_one_relation_and_dangling_ones_are_left_out() {
        let classes = classes();
        let m = Mapping {
            source_name: "FlowLens",
            classes: &classes,
        };
        let assets = [asset(1, "web", "server"), asset(2, "db", "server")];
        let p = m.payload(
            &assets,
            &[rel(1, 2), rel(1, 2), rel(2, 1), rel(1, 9), rel(1, 1)],
        );
        assert_eq!(
            serde_json::to_value(&p.relations).unwrap_or_default(),
            serde_json::json!([
                {"parent": 0, "child": 1, "type": "Depends on::Used by"},
                {"parent": 1, "child": 0, "type": "Depends on::Used by"}
            ])
        );
    }

    #[test]
    fn batches_are_self_contained_bounded_and_carry_everything() {
        let classes = classes();
        let m = Mapping {
            source_name: "FlowLens",
            classes: &classes,
        };
        let assets: Vec<_> = (1..=20).map(|n| asset(n, &format!("h{n}"), "vm")).collect();
        // A hub used by everyone, a chain, and assets without relations.
        let mut deps: Vec<_> = (2..=12).map(|n| rel(n, 1)).collect();
        deps.extend((13..16).map(|n| rel(n, n + 1)));
        let full = m.payload(&assets, &deps);
        for size in [2, 3, 5, 100] {
            let parts = batches(&full, size);
            let mut keys = std::collections::HashSet::new();
            let mut pairs = std::collections::HashSet::new();
            for b in &parts {
                let p = &b.payload;
                assert!(!p.items.is_empty() && p.items.len() <= size, "size {size}");
                for (local, whole) in b.items.iter().enumerate() {
                    assert_eq!(p.items[local], full.items[*whole]);
                }
                for (local, whole) in b.relations.iter().enumerate() {
                    let r = &full.relations[*whole];
                    let here = &p.relations[local];
                    assert_eq!(
                        (b.items[here.parent], b.items[here.child]),
                        (r.parent, r.child)
                    );
                }
                for r in &p.relations {
                    let key =
                        |i: usize| p.items[i].sys_object_source_info.source_native_key.clone();
                    pairs.insert((key(r.parent), key(r.child)));
                }
                keys.extend(
                    p.items
                        .iter()
                        .map(|i| i.sys_object_source_info.source_native_key.clone()),
                );
            }
            assert_eq!(keys.len(), 20, "every CI sent, size {size}");
            let want: std::collections::HashSet<_> = full
                .relations
                .iter()
                .map(|r| {
                    (
                        full.items[r.parent]
                            .sys_object_source_info
                            .source_native_key
                            .clone(),
                        full.items[r.child]
                            .sys_object_source_info
                            .source_native_key
                            .clone(),
                    )
                })
                .collect();
            assert_eq!(pairs, want, "every relation sent, size {size}");
        }
        let one = batches(&full, 100);
        assert_eq!(one.len(), 1, "all fits in one request");
        assert_eq!(one[0].payload.items.len(), 20, "each CI once");
        assert_eq!(one[0].payload.relations.len(), full.relations.len());
        assert!(batches(&Payload::default(), 10).is_empty());
    }
}
