//! PURE: the topology model (nodes and edges as the API returns them) and its exports
//! as Graphviz DOT, Mermaid and GraphML, each escaped for its syntax so any asset name
//! renders.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A node of the topology: an asset.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TopoNode {
    pub id: Uuid,
    pub name: Option<String>,
    pub asset_type: String,
    pub environment: Option<String>,
    pub is_internal: Option<bool>,
    pub ip_addresses: Vec<String>,
    /// The asset's tags (what the console groups by `tag:<key>`); left out when empty.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    #[sqlx(json)]
    #[schema(value_type = Object)]
    pub tags: serde_json::Map<String, serde_json::Value>,
    /// Where the asset runs, from the inventories (all null without one).
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub placement: Placement,
}

/// Where an asset runs, as the clouds' and clusters' inventories say: what the map can
/// group by.
#[derive(Debug, Clone, Default, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Placement {
    pub cloud_provider: Option<String>,
    /// AWS account, Azure subscription or GCP project.
    pub cloud_account: Option<String>,
    pub cloud_region: Option<String>,
    /// The VPC, `VNet` or network.
    pub vpc: Option<String>,
    pub subnet: Option<String>,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub workload: Option<String>,
}

/// What a topology can be grouped by.
pub const GROUP_FIELDS: &[&str] = &[
    "environment",
    "asset_type",
    "cloud_provider",
    "cloud_account",
    "cloud_region",
    "vpc",
    "subnet",
    "cluster",
    "namespace",
    "workload",
];

impl TopoNode {
    /// The node's value of a [`GROUP_FIELDS`] field (`None`: not set, or no such field).
    pub fn group_key(&self, field: &str) -> Option<&str> {
        let p = &self.placement;
        match field {
            "environment" => self.environment.as_deref(),
            "asset_type" => Some(self.asset_type.as_str()),
            "cloud_provider" => p.cloud_provider.as_deref(),
            "cloud_account" => p.cloud_account.as_deref(),
            "cloud_region" => p.cloud_region.as_deref(),
            "vpc" => p.vpc.as_deref(),
            "subnet" => p.subnet.as_deref(),
            "cluster" => p.cluster.as_deref(),
            "namespace" => p.namespace.as_deref(),
            "workload" => p.workload.as_deref(),
            _ => None,
        }
    }
}

/// The topology folded by one field: a node per value (null: assets without one), an
/// edge per pair of values with the dependencies between them summed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Groups {
    /// The field grouped by.
    pub by: String,
    pub groups: Vec<Group>,
    pub edges: Vec<GroupEdge>,
    pub generated_at: DateTime<Utc>,
}

/// One value of the field and how many assets of the view have it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Group {
    pub key: Option<String>,
    pub assets: u64,
}

/// The dependencies from assets of one group to assets of another (or the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct GroupEdge {
    pub source: Option<String>,
    pub target: Option<String>,
    pub dependencies: u64,
    pub total_bytes: i64,
    pub total_flows: i64,
}

/// Folds a view by `field` (one of [`GROUP_FIELDS`]), in a stable order (nulls last).
pub fn group(t: &TopologyView<'_>, field: &str) -> Groups {
    use std::collections::{BTreeMap, HashMap};
    type Key = (bool, Option<String>);
    let key_of: HashMap<Uuid, Option<&str>> =
        t.nodes.iter().map(|n| (n.id, n.group_key(field))).collect();
    // `(is_none, value)` sorts values first, the null group last.
    let sort = |k: Option<&str>| -> Key { (k.is_none(), k.map(str::to_owned)) };
    let mut groups: BTreeMap<Key, u64> = BTreeMap::new();
    for k in key_of.values() {
        *groups.entry(sort(*k)).or_default() += 1;
    }
    let mut edges: BTreeMap<(Key, Key), GroupEdge> = BTreeMap::new();
    for e in &t.edges {
        let (Some(s), Some(d)) = (key_of.get(&e.source), key_of.get(&e.target)) else {
            continue;
        };
        let g = edges
            .entry((sort(*s), sort(*d)))
            .or_insert_with(|| GroupEdge {
                source: s.map(str::to_owned),
                target: d.map(str::to_owned),
                dependencies: 0,
                total_bytes: 0,
                total_flows: 0,
            });
        g.dependencies += 1;
        g.total_bytes = g.total_bytes.saturating_add(e.total_bytes);
        g.total_flows = g.total_flows.saturating_add(e.total_flows);
    }
    Groups {
        by: field.to_owned(),
        groups: groups
            .into_iter()
            .map(|((_, key), assets)| Group { key, assets })
            .collect(),
        edges: edges.into_values().collect(),
        generated_at: t.generated_at,
    }
}

/// An edge of the topology: a dependency, from client to server.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct TopoEdge {
    pub id: Uuid,
    pub source: Uuid,
    pub target: Uuid,
    pub protocol: i16,
    pub port: i32,
    pub service: Option<String>,
    pub total_bytes: i64,
    pub total_flows: i64,
    pub last_seen: DateTime<Utc>,
    pub confidence: Option<f32>,
    pub is_internal: Option<bool>,
    pub stale: bool,
}

/// The graph for a view.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Topology {
    pub nodes: Vec<TopoNode>,
    pub edges: Vec<TopoEdge>,
    pub generated_at: DateTime<Utc>,
}

/// A view over a snapshot's rows, serialized exactly as [`Topology`] (no copies of
/// the rows: a full topology is tens of thousands of them).
#[derive(Debug, Clone, Serialize)]
pub struct TopologyView<'a> {
    pub nodes: Vec<&'a TopoNode>,
    pub edges: Vec<&'a TopoEdge>,
    pub generated_at: DateTime<Utc>,
}

/// `tcp/5432 postgresql`.
fn edge_label(e: &TopoEdge) -> String {
    let proto = match e.protocol {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        132 => "sctp".to_owned(),
        1 => "icmp".to_owned(),
        58 => "icmpv6".to_owned(),
        p => format!("ip{p}"),
    };
    match &e.service {
        Some(s) => format!("{proto}/{} {s}", e.port),
        None => format!("{proto}/{}", e.port),
    }
}

fn node_label(n: &TopoNode) -> String {
    let name = n
        .name
        .clone()
        .or_else(|| n.ip_addresses.first().cloned())
        .unwrap_or_else(|| n.id.to_string());
    match n.ip_addresses.first() {
        Some(ip) if *ip != name => format!("{name}\n{ip}"),
        _ => name,
    }
}

/// Graphviz DOT: a quoted string with `\` and `"` escaped, newlines as `\n`.
fn dot_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => {}
            // Names come from reverse DNS: no escape sequence reaches a terminal.
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Graphviz DOT, left to right, external assets dashed.
pub fn to_dot(t: &TopologyView<'_>) -> String {
    let mut out = String::from("digraph flowlens {\n  rankdir=LR;\n  node [shape=box];\n");
    for n in &t.nodes {
        let style = if n.is_internal == Some(false) {
            ", style=dashed"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {} [label={}{style}];",
            dot_quote(&n.id.to_string()),
            dot_quote(&node_label(n))
        );
    }
    for e in &t.edges {
        let _ = writeln!(
            out,
            "  {} -> {} [label={}];",
            dot_quote(&e.source.to_string()),
            dot_quote(&e.target.to_string()),
            dot_quote(&edge_label(e))
        );
    }
    out.push_str("}\n");
    out
}

/// Mermaid: labels in quotes with `"` as `#quot;` (Mermaid's entity form) and newlines
/// as `<br/>`. Mermaid renders labels as HTML, and names come from reverse DNS, which
/// outsiders control: `<`, `>` and `&` become entities too, `#` (which starts one) and
/// the backtick (which starts a Markdown string) numeric ones, so a name can neither
/// inject markup nor forge an entity.
fn mermaid_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            '#' => out.push_str("#35;"),
            '`' => out.push_str("#96;"),
            '\n' => out.push_str("<br/>"),
            '\r' => {}
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Mermaid flowchart; node ids are `n<index>` (Mermaid ids cannot hold every character
/// a name can).
pub fn to_mermaid(t: &TopologyView<'_>) -> String {
    let mut out = String::from("flowchart LR\n");
    let index: std::collections::HashMap<Uuid, usize> =
        t.nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    for (i, n) in t.nodes.iter().enumerate() {
        let _ = writeln!(out, "  n{i}[{}]", mermaid_quote(&node_label(n)));
    }
    for e in &t.edges {
        if let (Some(s), Some(d)) = (index.get(&e.source), index.get(&e.target)) {
            let _ = writeln!(out, "  n{s} -- {} --> n{d}", mermaid_quote(&edge_label(e)));
        }
    }
    out
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Characters XML 1.0 cannot carry at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// GraphML with typed attributes (yEd, Gephi and `NetworkX` read it).
pub fn to_graphml(t: &TopologyView<'_>) -> String {
    let mut out = String::from(concat!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n",
        "<graphml xmlns=\"http://graphml.graphdrawing.org/xmlns\" ",
        "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" ",
        "xsi:schemaLocation=\"http://graphml.graphdrawing.org/xmlns ",
        "http://graphml.graphdrawing.org/xmlns/1.0/graphml.xsd\">\n",
        "  <key id=\"name\" for=\"node\" attr.name=\"name\" attr.type=\"string\"/>\n",
        "  <key id=\"type\" for=\"node\" attr.name=\"asset_type\" attr.type=\"string\"/>\n",
        "  <key id=\"env\" for=\"node\" attr.name=\"environment\" attr.type=\"string\"/>\n",
        "  <key id=\"ips\" for=\"node\" attr.name=\"ip_addresses\" attr.type=\"string\"/>\n",
        "  <key id=\"internal\" for=\"node\" attr.name=\"is_internal\" attr.type=\"boolean\"/>\n",
        "  <key id=\"protocol\" for=\"edge\" attr.name=\"protocol\" attr.type=\"int\"/>\n",
        "  <key id=\"port\" for=\"edge\" attr.name=\"port\" attr.type=\"int\"/>\n",
        "  <key id=\"service\" for=\"edge\" attr.name=\"service\" attr.type=\"string\"/>\n",
        "  <key id=\"bytes\" for=\"edge\" attr.name=\"total_bytes\" attr.type=\"long\"/>\n",
        "  <graph id=\"flowlens\" edgedefault=\"directed\">\n",
    ));
    for n in &t.nodes {
        let _ = write!(out, "    <node id=\"{}\">", n.id);
        if let Some(name) = &n.name {
            let _ = write!(out, "<data key=\"name\">{}</data>", xml_escape(name));
        }
        let _ = write!(
            out,
            "<data key=\"type\">{}</data>",
            xml_escape(&n.asset_type)
        );
        if let Some(env) = &n.environment {
            let _ = write!(out, "<data key=\"env\">{}</data>", xml_escape(env));
        }
        let _ = write!(
            out,
            "<data key=\"ips\">{}</data>",
            xml_escape(&n.ip_addresses.join(" "))
        );
        if let Some(i) = n.is_internal {
            let _ = write!(out, "<data key=\"internal\">{i}</data>");
        }
        out.push_str("</node>\n");
    }
    for e in &t.edges {
        let _ = write!(
            out,
            "    <edge id=\"{}\" source=\"{}\" target=\"{}\"><data key=\"protocol\">{}</data><data key=\"port\">{}</data>",
            e.id, e.source, e.target, e.protocol, e.port
        );
        if let Some(s) = &e.service {
            let _ = write!(out, "<data key=\"service\">{}</data>", xml_escape(s));
        }
        let _ = writeln!(out, "<data key=\"bytes\">{}</data></edge>", e.total_bytes);
    }
    out.push_str("  </graph>\n</graphml>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Topology {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        Topology {
            nodes: vec![
                TopoNode {
                    id: a,
                    name: Some("web \"blue\" <1> & \\ co".into()),
                    asset_type: "server".into(),
                    environment: Some("prod".into()),
                    is_internal: Some(true),
                    ip_addresses: vec!["10.0.0.1".into()],
                    tags: serde_json::Map::new(),
                    placement: Placement {
                        vpc: Some("prod-vpc".into()),
                        ..Placement::default()
                    },
                },
                TopoNode {
                    id: b,
                    name: None,
                    asset_type: "unknown".into(),
                    environment: None,
                    is_internal: Some(false),
                    ip_addresses: vec!["203.0.113.7".into()],
                    tags: serde_json::Map::new(),
                    placement: Placement::default(),
                },
            ],
            edges: vec![TopoEdge {
                id: Uuid::from_u128(3),
                source: a,
                target: b,
                protocol: 6,
                port: 443,
                service: Some("https".into()),
                total_bytes: 10,
                total_flows: 1,
                last_seen: DateTime::<Utc>::UNIX_EPOCH,
                confidence: Some(0.9),
                is_internal: Some(false),
                stale: false,
            }],
            generated_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    fn view(t: &Topology) -> TopologyView<'_> {
        TopologyView {
            nodes: t.nodes.iter().collect(),
            edges: t.edges.iter().collect(),
            generated_at: t.generated_at,
        }
    }

    #[test]
    fn view_serializes_as_the_owned_topology() {
        let t = sample();
        assert_eq!(
            serde_json::to_value(view(&t)).unwrap(),
            serde_json::to_value(&t).unwrap()
        );
    }

    #[test]
    fn dot_escapes_quotes_and_backslashes() {
        let d = to_dot(&view(&sample()));
        assert!(
            d.contains(r#"label="web \"blue\" <1> & \\ co\n10.0.0.1""#),
            "{d}"
        );
        assert!(d.contains("style=dashed"), "{d}");
        assert!(
            d.contains(r#"-> "00000000-0000-0000-0000-000000000002" [label="tcp/443 https"]"#),
            "{d}"
        );
    }

    #[test]
    fn mermaid_uses_index_ids_and_entities() {
        let m = to_mermaid(&view(&sample()));
        assert!(m.starts_with("flowchart LR\n"));
        assert!(
            m.contains(r#"n0["web #quot;blue#quot; #lt;1#gt; #amp; \ co<br/>10.0.0.1"]"#),
            "{m}"
        );
        assert!(m.contains(r#"n0 -- "tcp/443 https" --> n1"#), "{m}");
    }

    #[test]
    fn mermaid_labels_cannot_carry_markup_or_forge_entities() {
        let q = mermaid_quote("<img src=x onerror=alert(1)>#quot;`**b**`");
        assert_eq!(
            q,
            r##""#lt;img src=x onerror=alert(1)#gt;#35;quot;#96;**b**#96;""##
        );
        assert!(!q.contains('<') && !q.contains('>') && !q.contains('`'));
    }

    #[test]
    fn graphml_escapes_markup() {
        let g = to_graphml(&view(&sample()));
        assert!(
            g.contains("web &quot;blue&quot; &lt;1&gt; &amp; \\ co"),
            "{g}"
        );
        assert!(g.contains("<data key=\"port\">443</data>"), "{g}");
        assert_eq!(xml_escape("a\u{1}b"), "ab");
    }

    #[test]
    fn a_view_folds_into_groups_with_summed_edges_and_the_unset_last() {
        let t = sample();
        let view = TopologyView {
            nodes: t.nodes.iter().collect(),
            edges: t.edges.iter().collect(),
            generated_at: t.generated_at,
        };
        let g = group(&view, "vpc");
        assert_eq!(
            g.groups,
            vec![
                Group {
                    key: Some("prod-vpc".into()),
                    assets: 1
                },
                Group {
                    key: None,
                    assets: 1
                },
            ]
        );
        assert_eq!(g.edges.len(), 1);
        let e = &g.edges[0];
        assert_eq!(
            (e.source.as_deref(), e.target.as_deref(), e.dependencies),
            (Some("prod-vpc"), None, 1)
        );
        assert_eq!(e.total_bytes, t.edges[0].total_bytes);
        let by_type = group(&view, "asset_type");
        assert_eq!(by_type.groups.len(), 2);
    }
}
