use super::blast_radius::blast_radius;
use super::fixtures::{dep, dep_nth, edge, graph, id, node};
use super::impact::impact_of_asset;
use super::path::{all_paths, shortest_path};
use super::spof::spof;
use super::*;
use crate::config::AnalysisConfig;

#[test]
fn every_row_is_kept_or_counted() {
    let mut first = node(2);
    first.name = Some("first".to_owned());
    let mut second = node(2);
    second.name = Some("second".to_owned());
    let nodes = vec![node(3), first, node(1), second];

    let mut repeated = edge(1, 2, 0, 80, None);
    repeated.port = 81;
    let edges = vec![
        edge(2, 3, 0, 80, None),
        edge(1, 2, 0, 80, None),
        repeated,                // same id as the row before: dropped
        edge(1, 9, 0, 80, None), // 9 is unknown: dangling
        edge(9, 1, 0, 80, None), // dangling too
        edge(3, 3, 0, 80, None), // self-loop: kept
    ];
    let (node_rows, edge_rows) = (nodes.len(), edges.len());
    let g = Graph::new(nodes, edges);

    assert_eq!(g.node_count(), 3);
    assert_eq!(g.duplicate_nodes(), 1);
    assert_eq!(g.node_count() + g.duplicate_nodes(), node_rows);
    assert_eq!(g.edge_count(), 3);
    assert_eq!(g.dangling_edges(), 2);
    assert_eq!(g.duplicate_edges(), 1);
    assert_eq!(
        g.edge_count() + g.dangling_edges() + g.duplicate_edges(),
        edge_rows
    );

    // The first row of a repeated id wins.
    assert_eq!(g.node(id(2)).unwrap().name.as_deref(), Some("first"));
    assert_eq!(g.edge(dep(1, 2)).unwrap().port, 80);
    assert_eq!(g.edge(dep(1, 9)), None);
    assert_eq!(g.edge(dep(3, 3)).unwrap().target, id(3));
}

#[test]
fn indices_follow_ids() {
    let g = graph([30, 10, 20], &[(30, 10), (10, 20)]);
    assert_eq!(g.node_index(id(10)), Some(0));
    assert_eq!(g.node_index(id(20)), Some(1));
    assert_eq!(g.node_index(id(30)), Some(2));
    assert_eq!(g.node_index(id(40)), None);
    assert_eq!(g.node(id(40)), None);
    let ids: Vec<u128> = g.nodes().iter().map(|n| n.id.as_u128()).collect();
    assert_eq!(ids, [10, 20, 30]);
    assert!(g.edges().windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(g.edges()[0].id, dep(10, 20));
}

#[test]
fn adjacency_rows_sort_parallel_edges_together() {
    let g = graph(1..=3, &[(1, 3), (1, 2), (1, 3), (2, 1)]);
    let row: Vec<(u32, Uuid)> = g
        .out
        .of(0)
        .iter()
        .map(|h| (h.node, g.edge_id(h.edge)))
        .collect();
    assert_eq!(
        row,
        [(1, dep(1, 2)), (2, dep_nth(1, 3, 0)), (2, dep_nth(1, 3, 1))]
    );
    // Undirected: both directions between 1 and 2, smallest id first.
    let und: Vec<Uuid> = g.und.of(0).iter().map(|h| g.edge_id(h.edge)).collect();
    assert_eq!(
        und,
        [dep(1, 2), dep(2, 1), dep_nth(1, 3, 0), dep_nth(1, 3, 1)]
    );
    assert!(g.inc.of(1).iter().all(|h| h.node == 0));
}

#[test]
fn empty_graph_answers_nothing() {
    let g = Graph::new(Vec::new(), vec![edge(1, 2, 0, 80, None)]);
    assert_eq!(g.node_count(), 0);
    assert_eq!(g.dangling_edges(), 1);
    assert_eq!(impact_of_asset(&g, id(1), None), None);
    assert_eq!(blast_radius(&g, id(1), None), None);
    assert_eq!(shortest_path(&g, id(1), id(2), false), None);
    let s = spof(&g);
    assert!(s.articulation_points.is_empty() && s.bridges.is_empty());
}

/// `SplitMix64`: a seeded generator for the large graphs, so they are the same on every
/// run without a `rand` dependency.
struct SplitMix(u64);

impl SplitMix {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound
    }
}

/// The API benchmark's size: a recursive search or a quadratic step would show here as a
/// stack overflow or a test that never ends. No timing is asserted (see STYLE.md §8).
#[test]
fn benchmark_sized_graph_runs_spof_and_blast_radius() {
    const NODES: u64 = 10_000;
    const EDGES: u64 = 50_000;
    let mut rng = SplitMix(0x5eed);
    let edges: Vec<EdgeInput> = (0..EDGES)
        .map(|k| {
            // Skewed towards low ids, so a few assets are hubs with many dependents.
            let spread = rng.below(NODES) + 1;
            let target = rng.below(spread);
            let source = rng.below(NODES);
            let port = [53, 80, 443, 5432, 6379][usize::try_from(rng.below(5)).unwrap()];
            edge(
                u128::from(source),
                u128::from(target),
                u128::from(k),
                port,
                None,
            )
        })
        .collect();
    let g = Graph::new((0..u128::from(NODES)).map(node).collect(), edges);
    assert_eq!(g.edge_count(), 50_000);

    let s = spof(&g);
    assert!(s.articulation_points.iter().all(|p| p.components >= 2));
    assert!(s.bridges.iter().all(|b| !b.dependencies.is_empty()));

    let hub = blast_radius(&g, id(0), None).unwrap();
    let impact = &hub.impact;
    assert!(impact.total_affected > 0);
    assert_eq!(impact.by_depth.iter().sum::<u32>(), impact.total_affected);
    assert!((0.0..=100.0).contains(&hub.score));
    assert!(impact.affected.windows(2).all(|w| w[0].depth <= w[1].depth));

    let capped = blast_radius(&g, id(0), Some(1)).unwrap();
    assert_eq!(capped.impact.by_depth.len(), 1);
    assert!(capped.score <= hub.score);
}

/// A 100k-asset chain is as deep as a depth-first search can get: recursion would need
/// 100k frames, far past a test thread's stack.
#[test]
fn long_chain_does_not_overflow_the_stack() {
    const N: u128 = 100_000;
    let pairs: Vec<(u128, u128)> = (1..N).map(|i| (i, i + 1)).collect();
    let g = graph(1..=N, &pairs);

    let s = spof(&g);
    assert_eq!(s.articulation_points.len(), 99_998);
    assert_eq!(s.bridges.len(), 99_999);
    // The middle asset and link cut the chain in halves.
    assert_eq!(s.articulation_points[0].cut_off, 49_999);
    assert_eq!(s.bridges[0].cut_off, 50_000);

    let b = blast_radius(&g, id(N), None).unwrap();
    assert_eq!(b.impact.total_affected, 99_999);
    assert_eq!(b.impact.by_depth.len(), 99_999);

    assert_eq!(
        shortest_path(&g, id(1), id(N), true).unwrap().len(),
        100_000
    );
    // One length, 2 * 100k adjacency entries: within the default step budget.
    let budget = AnalysisConfig::default().max_path_steps;
    let all = all_paths(&g, id(N), id(1), false, u32::MAX, 2, budget);
    assert!(!all.truncated);
    assert_eq!(all.paths.len(), 1);
    assert_eq!(all.paths[0].len(), 100_000);
}
