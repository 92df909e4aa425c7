//! PURE: the dependency-graph snapshot and the analyses the API serves over it.
//!
//! The routes load `assets` and `dependencies` rows, turn them into [`NodeInput`] and
//! [`EdgeInput`] and build one [`Graph`]; every analysis is then a function of `&Graph`
//! that returns a serde-serializable result naming assets and dependencies by their
//! `Uuid`. This module must not do I/O, read a clock, touch globals or spawn tasks: the
//! snapshot is a value, so the same rows always give the same answers.
//!
//! - [`impact`]: who depends, transitively, on an asset or on one dependency.
//! - [`path`]: shortest and all simple paths between two assets.
//! - [`spof`]: articulation points, bridges and single-provider services.
//! - [`blast_radius`]: impact plus the services lost with it, and a score.
//!
//! An edge `source -> target` means the source (the client) depends on the target (the
//! server's service on `protocol`/`port`). Inside, assets and dependencies become dense
//! `u32` indices in adjacency lists, so every query is O(V + E) over arrays rather than
//! hash maps: the API's benchmark graph has 10k assets and 50k dependencies. Both are
//! indexed in `Uuid` order, which makes "smallest id" tie-breaks and lexicographic path
//! order plain integer comparisons.

pub mod around;
pub mod blast_radius;
pub mod impact;
pub mod path;
pub mod service;
pub mod spof;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use self::service::Service;

/// One `assets` row, as far as the analyses care.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInput {
    pub id: Uuid,
    pub name: Option<String>,
    pub asset_type: String,
    pub is_internal: Option<bool>,
}

/// One `dependencies` row: `source` depends on `target`'s service at `protocol`/`port`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EdgeInput {
    /// The dependency's id (`dependencies.id`).
    pub id: Uuid,
    pub source: Uuid,
    pub target: Uuid,
    pub protocol: i16,
    pub port: i32,
    pub service: Option<String>,
    pub total_bytes: i64,
}

/// A dependency graph snapshot, immutable once built.
///
/// Self-loops (an asset depending on its own service, which the schema allows) are kept as
/// edges, so [`Graph::edge`] finds them, but they never change reachability, paths or
/// connectivity (the undirected view used by [`spof`] leaves them
/// out), and an asset calling its own service is not counted among that service's
/// consumers (see [`service`]).
#[derive(Debug, Clone)]
pub struct Graph {
    /// Sorted by id; a node's index is its position.
    nodes: Vec<NodeInput>,
    /// Sorted by id, only those whose two endpoints are nodes; index is position.
    edges: Vec<EdgeInput>,
    /// `(source, target)` node indices of each edge.
    ends: Vec<(u32, u32)>,
    /// Node -> `(target, edge)`: what a node depends on.
    out: Adjacency,
    /// Node -> `(source, edge)`: who depends on a node.
    inc: Adjacency,
    /// Node -> `(other end, edge)` over both directions, without self-loops.
    und: Adjacency,
    /// Dependencies grouped by `(protocol, port, service)`, sorted by that key.
    services: Vec<Service>,
    dangling_edges: usize,
    duplicate_nodes: usize,
    duplicate_edges: usize,
}

/// One adjacency entry: the node at the other end and the edge that leads there.
///
/// Ordered by node then edge, so in a sorted list the parallel edges to one neighbour are
/// contiguous and the first of them has the smallest dependency id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Half {
    node: u32,
    edge: u32,
}

/// Compressed sparse rows: node `n`'s entries are `entries[offsets[n]..offsets[n + 1]]`,
/// each row sorted. Two flat vectors instead of a `Vec` per node keep a 50k-edge graph in
/// a few hundred kilobytes and its traversals cache-friendly.
#[derive(Debug, Clone)]
struct Adjacency {
    offsets: Vec<u32>,
    entries: Vec<Half>,
}

impl Adjacency {
    fn build(node_count: usize, mut rows: Vec<(u32, Half)>) -> Self {
        rows.sort_unstable();
        let mut offsets = vec![0_u32; node_count + 1];
        for &(from, _) in &rows {
            offsets[from as usize + 1] += 1;
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let entries = rows.into_iter().map(|(_, half)| half).collect();
        Self { offsets, entries }
    }

    fn of(&self, node: u32) -> &[Half] {
        let node = node as usize;
        &self.entries[self.offsets[node] as usize..self.offsets[node + 1] as usize]
    }
}

impl Graph {
    /// Builds the snapshot. Rows are accounted for, never silently lost: an edge whose
    /// source or target is not among `nodes` is dropped and counted in
    /// [`Graph::dangling_edges`] (an asset deleted between the two queries, or a page
    /// that filtered assets); a repeated node or edge id keeps its first row and counts
    /// the others in [`Graph::duplicate_nodes`] / [`Graph::duplicate_edges`].
    ///
    /// # Panics
    ///
    /// If there are `u32::MAX` nodes or edges or more: indices are `u32` to halve the
    /// adjacency lists, and such a graph would not fit in memory as rows anyway.
    pub fn new(mut nodes: Vec<NodeInput>, edges: Vec<EdgeInput>) -> Self {
        assert!(
            nodes.len() < u32::MAX as usize && edges.len() < u32::MAX as usize,
            "graph too large for u32 indices"
        );
        // Stable sorts, so the first row of a repeated id is the one kept.
        let node_rows = nodes.len();
        nodes.sort_by_key(|n| n.id);
        nodes.dedup_by_key(|n| n.id);
        let duplicate_nodes = node_rows - nodes.len();

        let edge_rows = edges.len();
        let find = |id: Uuid| nodes.binary_search_by_key(&id, |n| n.id).ok().map(index);
        let mut kept: Vec<(EdgeInput, (u32, u32))> = edges
            .into_iter()
            .filter_map(|e| {
                let ends = (find(e.source)?, find(e.target)?);
                Some((e, ends))
            })
            .collect();
        let dangling_edges = edge_rows - kept.len();
        let kept_rows = kept.len();
        kept.sort_by_key(|(e, _)| e.id);
        kept.dedup_by_key(|(e, _)| e.id);
        let duplicate_edges = kept_rows - kept.len();
        let (edges, ends): (Vec<EdgeInput>, Vec<(u32, u32)>) = kept.into_iter().unzip();

        let n = nodes.len();
        let mut out = Vec::with_capacity(ends.len());
        let mut inc = Vec::with_capacity(ends.len());
        let mut und = Vec::with_capacity(ends.len() * 2);
        for (e, &(s, t)) in ends.iter().enumerate() {
            let edge = index(e);
            out.push((s, Half { node: t, edge }));
            inc.push((t, Half { node: s, edge }));
            if s != t {
                und.push((s, Half { node: t, edge }));
                und.push((t, Half { node: s, edge }));
            }
        }
        let services = service::group(&edges, &ends);
        Self {
            out: Adjacency::build(n, out),
            inc: Adjacency::build(n, inc),
            und: Adjacency::build(n, und),
            nodes,
            edges,
            ends,
            services,
            dangling_edges,
            duplicate_nodes,
            duplicate_edges,
        }
    }

    /// Number of distinct assets in the snapshot.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of distinct dependencies kept (both endpoints known).
    pub fn edge_count(&self) -> usize {
        self.edges.len()
    }

    /// Edge rows dropped because an endpoint was not among the nodes.
    pub fn dangling_edges(&self) -> usize {
        self.dangling_edges
    }

    /// Node rows dropped because their id repeated an earlier row's.
    pub fn duplicate_nodes(&self) -> usize {
        self.duplicate_nodes
    }

    /// Edge rows (with both endpoints known) dropped because their id repeated an earlier
    /// row's.
    pub fn duplicate_edges(&self) -> usize {
        self.duplicate_edges
    }

    /// The asset's dense index: its position in [`Graph::nodes`], stable for this
    /// snapshot only.
    pub fn node_index(&self, id: Uuid) -> Option<u32> {
        self.nodes
            .binary_search_by_key(&id, |n| n.id)
            .ok()
            .map(index)
    }

    /// The asset's row.
    pub fn node(&self, id: Uuid) -> Option<&NodeInput> {
        self.node_index(id).map(|i| &self.nodes[i as usize])
    }

    /// The dependency's row, if it was kept.
    pub fn edge(&self, id: Uuid) -> Option<&EdgeInput> {
        self.edge_index(id).map(|i| &self.edges[i as usize])
    }

    /// All assets, sorted by id.
    pub fn nodes(&self) -> &[NodeInput] {
        &self.nodes
    }

    /// All kept dependencies, sorted by id.
    pub fn edges(&self) -> &[EdgeInput] {
        &self.edges
    }

    fn edge_index(&self, id: Uuid) -> Option<u32> {
        self.edges
            .binary_search_by_key(&id, |e| e.id)
            .ok()
            .map(index)
    }

    fn node_id(&self, node: u32) -> Uuid {
        self.nodes[node as usize].id
    }

    fn edge_id(&self, edge: u32) -> Uuid {
        self.edges[edge as usize].id
    }
}

/// Converts a position to a `u32` index or count.
#[expect(
    clippy::cast_possible_truncation,
    reason = "Graph::new asserts node and edge counts fit in u32, and every index or \
              count is bounded by one of them"
)]
fn index(i: usize) -> u32 {
    i as u32
}
