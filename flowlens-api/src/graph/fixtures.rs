//! Test graphs with readable ids: asset `n` is `Uuid::from_u128(n)`, and the `k`-th
//! dependency from `s` to `t` in a list has an id built from `(s, t, k)`, so tests name
//! both without bookkeeping.

use std::collections::HashMap;

use uuid::Uuid;

use super::{EdgeInput, Graph, NodeInput};

pub(super) fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

/// The first dependency from `s` to `t`.
pub(super) fn dep(s: u128, t: u128) -> Uuid {
    dep_nth(s, t, 0)
}

/// The `k`-th parallel dependency from `s` to `t` (0-based). Ids sort by `(s, t, k)`.
pub(super) fn dep_nth(s: u128, t: u128, k: u128) -> Uuid {
    Uuid::from_u128((1 << 100) | (s << 40) | (t << 20) | k)
}

pub(super) fn node(n: u128) -> NodeInput {
    NodeInput {
        id: id(n),
        name: Some(format!("asset-{n}")),
        asset_type: "server".to_owned(),
        is_internal: Some(true),
    }
}

pub(super) fn edge(s: u128, t: u128, k: u128, port: i32, service: Option<&str>) -> EdgeInput {
    EdgeInput {
        id: dep_nth(s, t, k),
        source: id(s),
        target: id(t),
        protocol: 6,
        port,
        service: service.map(str::to_owned),
        total_bytes: 1000,
    }
}

/// Assets `nodes`, and one dependency per `(source, target)` pair in `edges`; a repeated
/// pair becomes a parallel dependency on the next port (8000, 8001, ...).
pub(super) fn graph(nodes: impl IntoIterator<Item = u128>, edges: &[(u128, u128)]) -> Graph {
    let mut seen: HashMap<(u128, u128), u128> = HashMap::new();
    let mut built: Vec<EdgeInput> = Vec::new();
    for &(s, t) in edges {
        let k = seen.entry((s, t)).or_default();
        let port = 8000 + i32::try_from(*k).expect("few parallel edges");
        built.push(edge(s, t, *k, port, None));
        *k += 1;
    }
    Graph::new(nodes.into_iter().map(node).collect(), built)
}
