//! Every analysis against a brute force on small random graphs (at most 9 assets and 20
//! dependency rows, some dangling, with self-loops and parallel edges).
//!
//! The oracles are deliberately naive: an adjacency test per pair, a component count
//! after removing each asset or link, Floyd-Warshall, recursive enumeration of every
//! simple path, and relaxation to a fixed point for depths. None shares code with the
//! graph module, and they work on the rows' `Uuid`s and input order, not on the
//! snapshot's indices.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;
use uuid::Uuid;

use super::blast_radius::blast_radius;
use super::impact::{AffectedAsset, Impact, impact_of_asset, impact_of_dependency};
use super::path::{all_paths, enumerate, shortest_path};
use super::service::ServiceKey;
use super::spof::spof;
use super::{EdgeInput, Graph, NodeInput};
use crate::config::AnalysisConfig;

/// The rows of one random graph, nodes in a shuffled id order.
#[derive(Debug, Clone)]
struct Case {
    nodes: Vec<Uuid>,
    rows: Vec<EdgeInput>,
}

const UNKNOWN: Uuid = Uuid::from_u128(999);

fn case() -> impl Strategy<Value = Case> {
    (1_u128..=9)
        .prop_flat_map(|n| {
            let ids: Vec<u128> = (1..=n).collect();
            let n = usize::try_from(n).unwrap();
            // Endpoint `n` stands for an asset missing from the snapshot.
            (
                Just(ids).prop_shuffle(),
                vec((0..=n, 0..=n, 0_usize..3), 0..=20),
            )
        })
        .prop_flat_map(|(ids, ends)| {
            let edge_ids: Vec<u128> = (1..=ends.len() as u128).collect();
            (Just(ids), Just(ends), Just(edge_ids).prop_shuffle())
        })
        .prop_map(|(ids, ends, edge_ids)| {
            let nodes: Vec<Uuid> = ids.into_iter().map(Uuid::from_u128).collect();
            let at = |i: usize| nodes.get(i).copied().unwrap_or(UNKNOWN);
            let services = [(80, None), (443, Some("https")), (80, Some("http"))];
            let rows = ends
                .iter()
                .zip(edge_ids)
                .map(|(&(s, t, kind), eid)| EdgeInput {
                    id: Uuid::from_u128((1 << 64) | eid),
                    source: at(s),
                    target: at(t),
                    protocol: 6,
                    port: services[kind].0,
                    service: services[kind].1.map(str::to_owned),
                    total_bytes: 1,
                })
                .collect();
            Case { nodes, rows }
        })
}

impl Case {
    fn graph(&self) -> Graph {
        let nodes = self
            .nodes
            .iter()
            .map(|&id| NodeInput {
                id,
                name: None,
                asset_type: "server".to_owned(),
                is_internal: None,
            })
            .collect();
        Graph::new(nodes, self.rows.clone())
    }
}

/// The brute-force view: local indices are positions in `Case::nodes`.
struct Oracle {
    ids: Vec<Uuid>,
    /// Kept edges: `(source, target, dependency id, service)`.
    edges: Vec<(usize, usize, Uuid, ServiceKey)>,
}

impl Oracle {
    fn new(case: &Case) -> Self {
        let local = |id: Uuid| case.nodes.iter().position(|&n| n == id);
        let edges = case
            .rows
            .iter()
            .filter_map(|e| {
                let key = ServiceKey {
                    protocol: e.protocol,
                    port: e.port,
                    service: e.service.clone(),
                };
                Some((local(e.source)?, local(e.target)?, e.id, key))
            })
            .collect();
        Self {
            ids: case.nodes.clone(),
            edges,
        }
    }

    fn n(&self) -> usize {
        self.ids.len()
    }

    /// Is there a hop from `a` to `b` (self-loops are not hops)?
    fn hop(&self, a: usize, b: usize, directed: bool) -> bool {
        a != b
            && self
                .edges
                .iter()
                .any(|&(s, t, ..)| (s, t) == (a, b) || (!directed && (s, t) == (b, a)))
    }

    /// Component label per node (`None` for the removed one), and the number of components,
    /// without `skip_node` and without the link between `skip_pair`.
    #[expect(
        clippy::needless_range_loop,
        reason = "an oracle should read like the textbook's index loops"
    )]
    fn components(
        &self,
        skip_node: Option<usize>,
        skip_pair: Option<(usize, usize)>,
    ) -> (Vec<Option<usize>>, usize) {
        let linked = |a: usize, b: usize| {
            let cut = skip_pair.is_some_and(|(x, y)| (a, b) == (x, y) || (a, b) == (y, x));
            !cut && self.hop(a, b, false)
        };
        let mut label = vec![None; self.n()];
        let mut count = 0;
        for start in 0..self.n() {
            if Some(start) == skip_node || label[start].is_some() {
                continue;
            }
            label[start] = Some(count);
            let mut todo = vec![start];
            while let Some(a) = todo.pop() {
                for b in 0..self.n() {
                    if Some(b) != skip_node && label[b].is_none() && linked(a, b) {
                        label[b] = Some(count);
                        todo.push(b);
                    }
                }
            }
            count += 1;
        }
        (label, count)
    }

    /// Floyd-Warshall hop counts.
    #[expect(
        clippy::needless_range_loop,
        reason = "an oracle should read like the textbook's index loops"
    )]
    fn distances(&self, directed: bool) -> Vec<Vec<Option<u32>>> {
        let n = self.n();
        let mut d = vec![vec![None; n]; n];
        for a in 0..n {
            d[a][a] = Some(0);
            for b in 0..n {
                if self.hop(a, b, directed) {
                    d[a][b] = Some(1);
                }
            }
        }
        for k in 0..n {
            for a in 0..n {
                for b in 0..n {
                    if let (Some(x), Some(y)) = (d[a][k], d[k][b])
                        && d[a][b].is_none_or(|z| x + y < z)
                    {
                        d[a][b] = Some(x + y);
                    }
                }
            }
        }
        d
    }

    /// Every simple path from `from` to `to` with at most `max_depth` hops, ordered by
    /// length then by asset ids.
    fn simple_paths(
        &self,
        from: usize,
        to: usize,
        directed: bool,
        max_depth: u32,
    ) -> Vec<Vec<Uuid>> {
        fn walk(
            o: &Oracle,
            path: &mut Vec<usize>,
            to: usize,
            directed: bool,
            max_depth: usize,
            out: &mut Vec<Vec<Uuid>>,
        ) {
            let at = *path.last().unwrap();
            if at == to {
                out.push(path.iter().map(|&i| o.ids[i]).collect());
                return;
            }
            if path.len() > max_depth {
                return;
            }
            for next in 0..o.n() {
                if !path.contains(&next) && o.hop(at, next, directed) {
                    path.push(next);
                    walk(o, path, to, directed, max_depth, out);
                    path.pop();
                }
            }
        }
        let mut out = Vec::new();
        let max_depth = usize::try_from(max_depth).unwrap();
        walk(self, &mut vec![from], to, directed, max_depth, &mut out);
        out.sort_by(|a, b| a.len().cmp(&b.len()).then_with(|| a.cmp(b)));
        out
    }

    /// Minimal reverse depth of every node from `root` (given `root_depth`), by relaxing
    /// every edge until nothing changes.
    fn reverse_depths(&self, root: usize, root_depth: u32) -> Vec<Option<u32>> {
        let mut depth = vec![None; self.n()];
        depth[root] = Some(root_depth);
        loop {
            let mut changed = false;
            for &(s, t, ..) in &self.edges {
                if let Some(dt) = depth[t]
                    && depth[s].is_none_or(|ds| dt + 1 < ds)
                {
                    depth[s] = Some(dt + 1);
                    changed = true;
                }
            }
            if !changed {
                return depth;
            }
        }
    }

    /// The expected [`Impact`], given depths (the failed asset excluded by the caller).
    fn impact(
        &self,
        depths: &[Option<u32>],
        exclude: Option<usize>,
        max_depth: Option<u32>,
    ) -> Impact {
        let limit = max_depth.unwrap_or(u32::MAX);
        let mut affected: Vec<AffectedAsset> = Vec::new();
        let mut truncated = false;
        for (i, depth) in depths.iter().enumerate() {
            match *depth {
                Some(d) if Some(i) != exclude && d <= limit => {
                    affected.push(AffectedAsset {
                        asset: self.ids[i],
                        depth: d,
                    });
                }
                Some(_) if Some(i) != exclude => truncated = true,
                _ => {}
            }
        }
        affected.sort_by_key(|a| (a.depth, a.asset));
        let deepest = affected.iter().map(|a| a.depth).max().unwrap_or(0);
        let by_depth = (1..=deepest)
            .map(|d| u32::try_from(affected.iter().filter(|a| a.depth == d).count()).unwrap())
            .collect();
        Impact {
            total_affected: u32::try_from(affected.len()).unwrap(),
            affected,
            by_depth,
            truncated,
        }
    }

    /// Services: key -> (providers, consumers that are not providers).
    fn services(&self) -> BTreeMap<ServiceKey, (BTreeSet<usize>, BTreeSet<usize>)> {
        let mut services: BTreeMap<ServiceKey, (BTreeSet<usize>, BTreeSet<usize>)> =
            BTreeMap::new();
        for (s, t, _, key) in &self.edges {
            let entry = services.entry(key.clone()).or_default();
            entry.0.insert(*t);
            entry.1.insert(*s);
        }
        for (providers, consumers) in services.values_mut() {
            consumers.retain(|c| !providers.contains(c));
        }
        services
    }
}

proptest! {
    #[test]
    fn rows_are_kept_or_counted_and_found_by_id(case in case()) {
        let g = case.graph();
        let o = Oracle::new(&case);
        prop_assert_eq!(g.node_count(), case.nodes.len());
        prop_assert_eq!(g.edge_count(), o.edges.len());
        prop_assert_eq!(g.edge_count() + g.dangling_edges(), case.rows.len());
        for &(s, t, dep, _) in &o.edges {
            let e = g.edge(dep).unwrap();
            prop_assert_eq!((e.source, e.target), (o.ids[s], o.ids[t]));
        }
        for (i, &id) in o.ids.iter().enumerate() {
            let index = g.node_index(id).unwrap();
            prop_assert_eq!(g.nodes()[index as usize].id, id);
            prop_assert_eq!(o.ids.iter().filter(|&&other| other < id).count(), index as usize, "{}", i);
        }
    }

    #[test]
    fn impact_equals_reverse_reachability(
        case in case(),
        max_depth in proptest::option::of(0_u32..5),
    ) {
        let g = case.graph();
        let o = Oracle::new(&case);
        for root in 0..o.n() {
            let want = o.impact(&o.reverse_depths(root, 0), Some(root), max_depth);
            prop_assert_eq!(impact_of_asset(&g, o.ids[root], max_depth).unwrap(), want);
        }
        for &(source, _, dep, _) in &o.edges {
            let want = o.impact(&o.reverse_depths(source, 1), None, max_depth);
            prop_assert_eq!(impact_of_dependency(&g, dep, max_depth).unwrap(), want);
        }
        prop_assert_eq!(impact_of_asset(&g, UNKNOWN, max_depth), None);
    }

    #[test]
    fn shortest_path_is_a_minimal_valid_path(case in case(), directed in any::<bool>()) {
        let g = case.graph();
        let o = Oracle::new(&case);
        let dist = o.distances(directed);
        for (from, row) in dist.iter().enumerate() {
            for (to, &want) in row.iter().enumerate() {
                let found = shortest_path(&g, o.ids[from], o.ids[to], directed);
                let Some(want) = want else {
                    prop_assert_eq!(found, None);
                    continue;
                };
                let path = found.unwrap();
                prop_assert_eq!(path.len(), usize::try_from(want).unwrap() + 1);
                prop_assert_eq!(path[0].asset, o.ids[from]);
                prop_assert_eq!(path[0].dependency, None);
                prop_assert_eq!(path.last().unwrap().asset, o.ids[to]);
                for step in path.windows(2) {
                    let (a, b) = (step[0].asset, step[1].asset);
                    // The smallest dependency id joining the two in an allowed direction.
                    let best = o
                        .edges
                        .iter()
                        .filter(|&&(s, t, ..)| {
                            let (s, t) = (o.ids[s], o.ids[t]);
                            (s, t) == (a, b) || (!directed && (s, t) == (b, a))
                        })
                        .map(|e| e.2)
                        .min();
                    prop_assert_eq!(step[1].dependency, best);
                }
            }
        }
    }

    #[test]
    fn all_paths_equal_the_enumeration(
        case in case(),
        pick in (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
        directed in any::<bool>(),
        max_depth in 0_u32..=9,
        max_paths in 0_usize..=12,
        cut in any::<prop::sample::Index>(),
    ) {
        let g = case.graph();
        let o = Oracle::new(&case);
        let (from, to) = (pick.0.index(o.n()), pick.1.index(o.n()));
        let want = o.simple_paths(from, to, directed, max_depth);
        // Small graphs never come near the default step budget.
        let budget = AnalysisConfig::default().max_path_steps;
        let (a, b) = (o.ids[from], o.ids[to]);

        let every = all_paths(&g, a, b, directed, max_depth, usize::MAX, budget);
        prop_assert!(!every.truncated);
        prop_assert_eq!(&every.paths, &want);

        let some = all_paths(&g, a, b, directed, max_depth, max_paths, budget);
        prop_assert_eq!(some.truncated, want.len() > max_paths);
        prop_assert_eq!(&some.paths[..], &want[..want.len().min(max_paths)]);

        // With any smaller budget the search stops having spent exactly that, truncated,
        // with a prefix of the answer; with exactly the steps it needs, nothing changes.
        let (full, needed) = enumerate(&g, a, b, directed, max_depth, max_paths, u64::MAX);
        prop_assert_eq!(&full, &some);
        prop_assert!(needed < budget);
        let small = u64::try_from(cut.index(usize::try_from(needed).unwrap() + 1)).unwrap();
        let (short, spent) = enumerate(&g, a, b, directed, max_depth, max_paths, small);
        prop_assert_eq!(spent, small);
        if small == needed {
            prop_assert_eq!(&short, &full);
        } else {
            prop_assert!(short.truncated);
            prop_assert_eq!(&short.paths[..], &full.paths[..short.paths.len()]);
        }

        // The shortest path is the first of all paths, when one exists.
        let everywhere = o.simple_paths(from, to, directed, 9);
        let shortest = shortest_path(&g, o.ids[from], o.ids[to], directed)
            .map(|p| p.iter().map(|s| s.asset).collect::<Vec<_>>());
        prop_assert_eq!(shortest.as_ref(), everywhere.first());
    }

    #[test]
    fn cuts_equal_removals_that_split_the_graph(case in case()) {
        let g = case.graph();
        let o = Oracle::new(&case);
        let found = spof(&g);
        let (label, before) = o.components(None, None);

        let mut points = Vec::new();
        for v in 0..o.n() {
            let (without, after) = o.components(Some(v), None);
            if after <= before {
                continue;
            }
            // Pieces of v's own component, and their sizes.
            let mut sizes: BTreeMap<usize, u32> = BTreeMap::new();
            for u in 0..o.n() {
                if u != v && label[u] == label[v] {
                    *sizes.entry(without[u].unwrap()).or_default() += 1;
                }
            }
            let total: u32 = sizes.values().sum();
            let largest = sizes.values().max().copied().unwrap_or(0);
            let pieces = u32::try_from(after - before + 1).unwrap();
            prop_assert_eq!(u32::try_from(sizes.len()).unwrap(), pieces);
            points.push((o.ids[v], pieces, total - largest));
        }
        let mut got: Vec<(Uuid, u32, u32)> = found
            .articulation_points
            .iter()
            .map(|p| (p.asset, p.components, p.cut_off))
            .collect();
        points.sort();
        got.sort();
        prop_assert_eq!(got, points);

        let mut links = Vec::new();
        for a in 0..o.n() {
            for b in 0..o.n() {
                if o.ids[a] >= o.ids[b] || !o.hop(a, b, false) {
                    continue;
                }
                let (split, after) = o.components(None, Some((a, b)));
                if after <= before {
                    continue;
                }
                let side = u32::try_from(label.iter().zip(&split).filter(|&(l, s)| *l == label[a] && *s == split[a]).count()).unwrap();
                let whole = u32::try_from(label.iter().filter(|&&l| l == label[a]).count()).unwrap();
                let mut deps: Vec<Uuid> = o
                    .edges
                    .iter()
                    .filter(|&&(s, t, ..)| (s, t) == (a, b) || (s, t) == (b, a))
                    .map(|e| e.2)
                    .collect();
                deps.sort();
                links.push(([o.ids[a], o.ids[b]], deps, side.min(whole - side)));
            }
        }
        let mut got: Vec<([Uuid; 2], Vec<Uuid>, u32)> = found
            .bridges
            .iter()
            .map(|b| (b.assets, b.dependencies.clone(), b.cut_off))
            .collect();
        links.sort();
        got.sort();
        prop_assert_eq!(got, links);

        // Worst first: the documented orders.
        prop_assert!(found.articulation_points.windows(2).all(|w| w[0].cut_off >= w[1].cut_off));
        prop_assert!(found.bridges.windows(2).all(|w| w[0].cut_off >= w[1].cut_off));
    }

    #[test]
    fn services_and_score_follow_the_grouping(
        case in case(),
        max_depth in proptest::option::of(0_u32..4),
    ) {
        let g = case.graph();
        let o = Oracle::new(&case);
        let services = o.services();

        let mut single: Vec<(ServiceKey, Uuid, u32)> = services
            .iter()
            .filter(|(_, (providers, consumers))| providers.len() == 1 && !consumers.is_empty())
            .map(|(key, (providers, consumers))| {
                let provider = *providers.iter().next().unwrap();
                (key.clone(), o.ids[provider], u32::try_from(consumers.len()).unwrap())
            })
            .collect();
        let mut got: Vec<(ServiceKey, Uuid, u32)> = spof(&g)
            .single_provider_services
            .into_iter()
            .map(|s| (s.service, s.provider, s.consumers))
            .collect();
        single.sort();
        got.sort();
        prop_assert_eq!(got, single);

        for root in 0..o.n() {
            let b = blast_radius(&g, o.ids[root], max_depth).unwrap();
            prop_assert_eq!(&b.impact, &impact_of_asset(&g, o.ids[root], max_depth).unwrap());

            let limit = max_depth.unwrap_or(u32::MAX);
            let depths: Vec<Option<u32>> = o
                .reverse_depths(root, 0)
                .into_iter()
                .map(|d| d.filter(|&d| d <= limit))
                .collect();
            let mut lost: Vec<(ServiceKey, u32, u32)> = services
                .iter()
                .filter(|(_, (_, consumers))| !consumers.is_empty())
                .filter_map(|(key, (providers, consumers))| {
                    let deepest = providers.iter().map(|&p| depths[p]).collect::<Option<Vec<u32>>>()?;
                    let deepest = deepest.into_iter().max().unwrap_or(0);
                    Some((key.clone(), u32::try_from(consumers.len()).unwrap(), deepest))
                })
                .collect();
            let mut got: Vec<(ServiceKey, u32, u32)> = b
                .affected_services
                .iter()
                .map(|s| (s.service.clone(), s.consumers, s.depth))
                .collect();
            lost.sort();
            got.sort();
            prop_assert_eq!(got, lost);

            prop_assert!((0.0..=100.0).contains(&b.score));
            let others = o.n() - 1;
            if others == 0 {
                prop_assert!(b.score.abs() < f64::EPSILON);
            } else {
                let weight: f64 = b.impact.affected.iter().map(|a| 1.0 / f64::from(a.depth)).sum();
                let others = f64::from(u32::try_from(others).unwrap());
                prop_assert!((b.score - 100.0 * weight / others).abs() <= 0.005 + 1e-9);
            }
        }
    }
}
