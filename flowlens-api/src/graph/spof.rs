//! Single points of failure: assets and links whose loss disconnects the graph, and
//! services that only one asset provides.
//!
//! Connectivity is judged on the undirected, simple view of the graph: direction is
//! ignored (a broken link cuts traffic both ways, and answers flow back over it), parallel
//! dependencies between two assets merge into one link, and self-loops are left out. So
//! two assets joined by several dependencies (several ports, or both directions) still
//! form a bridge when nothing else joins their sides: the parallel dependencies share
//! the hosts and the network path between them, and fail together far more often than
//! independently.
//!
//! Articulation points and bridges come from one depth-first search with Hopcroft-Tarjan
//! low-links, written with an explicit stack: a recursive search would overflow the
//! thread's stack on a long chain of 10k+ assets. The same pass counts subtree sizes, so
//! each cut also says how much of the graph it separates. O(V + E).

use serde::Serialize;
use uuid::Uuid;

use super::service::{ServiceKey, consumer_count};
use super::{Graph, index};

/// What [`spof`] found, each list sorted worst first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Spof {
    /// Sorted by `cut_off` descending, then `components` descending, then asset id.
    pub articulation_points: Vec<ArticulationPoint>,
    /// Sorted by `cut_off` descending, then by the two asset ids.
    pub bridges: Vec<Bridge>,
    /// Sorted by `consumers` descending, then by service key.
    pub single_provider_services: Vec<SingleProviderService>,
}

/// An asset whose removal splits its connected component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ArticulationPoint {
    pub asset: Uuid,
    /// How many connected pieces the asset's component falls into without it (at least
    /// 2). Other components are not counted: they were never connected to it.
    pub components: u32,
    /// How many assets (the removed one aside) end up outside the largest of those
    /// pieces. This is the number to rank by: an asset that only holds one leaf on
    /// cuts off 1, a gateway between two halves cuts off half the component.
    pub cut_off: u32,
}

/// A link whose removal splits its connected component in two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Bridge {
    /// The two assets it joins, smaller id first.
    #[schema(value_type = Vec<Uuid>)]
    pub assets: [Uuid; 2],
    /// Every dependency joining the two, in either direction, sorted by id.
    pub dependencies: Vec<Uuid>,
    /// Assets on the smaller side: how many lose contact with the rest.
    pub cut_off: u32,
}

/// A service that exactly one asset provides and at least one other asset uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SingleProviderService {
    pub service: ServiceKey,
    pub provider: Uuid,
    /// Distinct assets depending on the service, the provider itself aside (an asset
    /// calling its own service does not lose a dependency when it goes down).
    pub consumers: u32,
}

/// Not yet discovered by the search.
const UNSEEN: u32 = u32::MAX;

/// Finds the articulation points, bridges and single-provider services of `g`.
///
/// A service is a `(protocol, port, service name)` group of dependencies (see
/// [`ServiceKey`]); its providers are the distinct targets of those dependencies. With
/// exactly one provider and at least one consumer, losing that provider loses the service
/// for everyone, however well connected the graph otherwise is, which the
/// connectivity view alone would miss.
pub fn spof(g: &Graph) -> Spof {
    let mut search = LowLink::new(g.node_count());
    let mut cuts = Vec::new();
    let mut bridges = Vec::new();
    for root in 0..index(g.node_count()) {
        if search.disc[root as usize] == UNSEEN {
            search.component(g, root, &mut cuts, &mut bridges);
        }
    }

    let mut articulation_points: Vec<ArticulationPoint> = cuts
        .into_iter()
        .map(|(node, components, cut_off)| ArticulationPoint {
            asset: g.node_id(node),
            components,
            cut_off,
        })
        .collect();
    articulation_points.sort_by(|a, b| {
        (b.cut_off, b.components)
            .cmp(&(a.cut_off, a.components))
            .then(a.asset.cmp(&b.asset))
    });

    let mut bridges: Vec<Bridge> = bridges
        .into_iter()
        .map(|(parent, child, cut_off)| {
            let (low, high) = (parent.min(child), parent.max(child));
            let row = g.und.of(low);
            let first = row.partition_point(|h| h.node < high);
            let dependencies = row[first..]
                .iter()
                .take_while(|h| h.node == high)
                .map(|h| g.edge_id(h.edge))
                .collect();
            Bridge {
                assets: [g.node_id(low), g.node_id(high)],
                dependencies,
                cut_off,
            }
        })
        .collect();
    bridges.sort_by(|a, b| b.cut_off.cmp(&a.cut_off).then(a.assets.cmp(&b.assets)));

    let mut single_provider_services: Vec<SingleProviderService> = g
        .services
        .iter()
        .filter(|s| s.providers.len() == 1 && !s.consumers.is_empty())
        .map(|s| SingleProviderService {
            service: s.key.clone(),
            provider: g.node_id(s.providers[0]),
            consumers: consumer_count(s),
        })
        .collect();
    single_provider_services.sort_by(|a, b| {
        b.consumers
            .cmp(&a.consumers)
            .then_with(|| a.service.cmp(&b.service))
    });

    Spof {
        articulation_points,
        bridges,
        single_provider_services,
    }
}

/// Per-node state of the iterative low-link search.
struct LowLink {
    /// Discovery time, [`UNSEEN`] before.
    disc: Vec<u32>,
    /// Smallest discovery time reachable from the subtree with one back edge.
    low: Vec<u32>,
    parent: Vec<u32>,
    /// Next position to look at in the node's undirected row.
    cursor: Vec<usize>,
    /// Nodes in the subtree, the node included.
    size: Vec<u32>,
    /// Children whose subtree would be cut off without the node: how many, their total
    /// size and the largest.
    separated: Vec<u32>,
    separated_size: Vec<u32>,
    separated_max: Vec<u32>,
    time: u32,
}

impl LowLink {
    fn new(n: usize) -> Self {
        Self {
            disc: vec![UNSEEN; n],
            low: vec![0; n],
            parent: vec![UNSEEN; n],
            cursor: vec![0; n],
            size: vec![1; n],
            separated: vec![0; n],
            separated_size: vec![0; n],
            separated_max: vec![0; n],
            time: 0,
        }
    }

    fn discover(&mut self, node: u32, parent: u32) {
        let i = node as usize;
        self.disc[i] = self.time;
        self.low[i] = self.time;
        self.parent[i] = parent;
        self.time += 1;
    }

    /// Searches the component of `root`, appending `(node, components, cut_off)` for its
    /// articulation points and `(parent, child, cut_off)` for its bridges.
    fn component(
        &mut self,
        g: &Graph,
        root: u32,
        cuts: &mut Vec<(u32, u32, u32)>,
        bridges: &mut Vec<(u32, u32, u32)>,
    ) {
        let mut visited = vec![root];
        let mut stack = vec![root];
        let first_bridge = bridges.len();
        self.discover(root, UNSEEN);
        while let Some(&node) = stack.last() {
            let at = node as usize;
            let row = g.und.of(node);
            if let Some(half) = row.get(self.cursor[at]) {
                self.cursor[at] += 1;
                let next = half.node;
                // Skipping the parent by node, not by edge, skips all the parallel edges
                // to it: the merged simple graph the module documents.
                if next == self.parent[at] {
                    continue;
                }
                if self.disc[next as usize] == UNSEEN {
                    self.discover(next, node);
                    visited.push(next);
                    stack.push(next);
                } else {
                    self.low[at] = self.low[at].min(self.disc[next as usize]);
                }
                continue;
            }
            stack.pop();
            let parent = self.parent[at];
            if parent == UNSEEN {
                continue;
            }
            let up = parent as usize;
            self.low[up] = self.low[up].min(self.low[at]);
            self.size[up] += self.size[at];
            if self.low[at] >= self.disc[up] {
                // Nothing in the subtree reaches above `parent`: removing it cuts the
                // subtree off.
                self.separated[up] += 1;
                self.separated_size[up] += self.size[at];
                self.separated_max[up] = self.separated_max[up].max(self.size[at]);
            }
            if self.low[at] > self.disc[up] {
                // Not even `parent` itself is reachable but through this link.
                bridges.push((parent, node, 0));
            }
        }

        let total = self.size[root as usize];
        for &node in &visited {
            let i = node as usize;
            let (pieces, largest) = if node == root {
                // Every child of the root is cut off from the others.
                (self.separated[i], self.separated_max[i])
            } else {
                // The rest of the component, through the parent, is one more piece.
                let rest = total - 1 - self.separated_size[i];
                (self.separated[i] + 1, self.separated_max[i].max(rest))
            };
            if pieces >= 2 {
                cuts.push((node, pieces, total - 1 - largest));
            }
        }
        for bridge in &mut bridges[first_bridge..] {
            let below = self.size[bridge.1 as usize];
            bridge.2 = below.min(total - below);
        }
    }
}

#[cfg(test)]
mod tests;
