use super::*;
use crate::graph::Graph;
use crate::graph::fixtures::{dep, dep_nth, edge, graph, id, node};

fn points(s: &Spof) -> Vec<(u128, u32, u32)> {
    s.articulation_points
        .iter()
        .map(|p| (p.asset.as_u128(), p.components, p.cut_off))
        .collect()
}

fn links(s: &Spof) -> Vec<(u128, u128, u32)> {
    s.bridges
        .iter()
        .map(|b| (b.assets[0].as_u128(), b.assets[1].as_u128(), b.cut_off))
        .collect()
}

#[test]
fn chain_is_all_cuts() {
    let s = spof(&graph(1..=4, &[(1, 2), (2, 3), (3, 4)]));
    assert_eq!(points(&s), [(2, 2, 1), (3, 2, 1)]);
    // The middle link splits 2 | 2, the end ones only cut a leaf off.
    assert_eq!(links(&s), [(2, 3, 2), (1, 2, 1), (3, 4, 1)]);
    assert_eq!(s.bridges[0].dependencies, [dep(2, 3)]);
}

#[test]
fn star_hub_splits_into_one_piece_per_spoke() {
    let s = spof(&graph(1..=5, &[(2, 1), (3, 1), (1, 4), (5, 1)]));
    assert_eq!(points(&s), [(1, 4, 3)]);
    assert_eq!(links(&s), [(1, 2, 1), (1, 3, 1), (1, 4, 1), (1, 5, 1)]);
}

#[test]
fn cycle_and_diamond_have_no_cuts() {
    for g in [
        graph(1..=4, &[(1, 2), (2, 3), (3, 4), (4, 1)]),
        graph(1..=4, &[(1, 2), (1, 3), (2, 4), (3, 4)]),
    ] {
        let s = spof(&g);
        assert!(s.articulation_points.is_empty(), "{s:?}");
        assert!(s.bridges.is_empty(), "{s:?}");
    }
}

#[test]
fn bowtie_centre_is_a_cut_without_bridges() {
    // Triangles 1-2-3 and 3-4-5 sharing 3.
    let s = spof(&graph(
        1..=5,
        &[(1, 2), (2, 3), (3, 1), (3, 4), (4, 5), (5, 3)],
    ));
    assert_eq!(points(&s), [(3, 2, 2)]);
    assert!(s.bridges.is_empty());
}

#[test]
fn parallel_dependencies_still_make_one_bridge() {
    // Two ports 1 -> 2, and 2 -> 1 back: one merged link, still the only one between
    // {1} and {2, 3}.
    let s = spof(&graph(1..=3, &[(1, 2), (1, 2), (2, 1), (2, 3)]));
    assert_eq!(points(&s), [(2, 2, 1)]);
    assert_eq!(links(&s), [(1, 2, 1), (2, 3, 1)]);
    assert_eq!(
        s.bridges[0].dependencies,
        [dep_nth(1, 2, 0), dep_nth(1, 2, 1), dep(2, 1)]
    );
}

#[test]
fn lopsided_cut_ranks_above_a_leaf() {
    // 1 - 2 - 3, a triangle 3-4-5 and a pendant 6 on 5: 3 separates {1, 2} from
    // {4, 5, 6}, while 2 and 5 each hold only a leaf on.
    let s = spof(&graph(
        1..=6,
        &[(1, 2), (2, 3), (3, 4), (4, 5), (5, 3), (5, 6)],
    ));
    assert_eq!(points(&s), [(3, 2, 2), (2, 2, 1), (5, 2, 1)]);
    assert_eq!(links(&s), [(2, 3, 2), (1, 2, 1), (5, 6, 1)]);
}

#[test]
fn components_are_judged_separately() {
    // A chain 1-2-3, a triangle 4-5-6, an isolated 7 and a self-loop on 8.
    let s = spof(&graph(
        1..=8,
        &[(1, 2), (2, 3), (4, 5), (5, 6), (6, 4), (8, 8)],
    ));
    assert_eq!(points(&s), [(2, 2, 1)]);
    assert_eq!(links(&s), [(1, 2, 1), (2, 3, 1)]);
}

#[test]
fn empty_and_single_node_graphs_have_nothing() {
    for g in [graph(0..0, &[]), graph(1..=1, &[(1, 1)])] {
        let s = spof(&g);
        assert!(s.articulation_points.is_empty());
        assert!(s.bridges.is_empty());
        assert!(s.single_provider_services.is_empty());
    }
}

#[test]
fn single_provider_services_follow_the_service_key() {
    let pg = Some("postgresql");
    let edges = vec![
        // postgresql: 1, 2, 3 all on 10.
        edge(1, 10, 0, 5432, pg),
        edge(2, 10, 0, 5432, pg),
        edge(3, 10, 0, 5432, pg),
        // http on 20 and 21: two providers.
        edge(1, 20, 0, 80, Some("http")),
        edge(1, 21, 0, 80, Some("http")),
        // 30 serves port 9000 to 20 and to itself: one consumer.
        edge(20, 30, 0, 9000, None),
        edge(30, 30, 0, 9000, None),
        // Only a self-loop: no consumer, not reported.
        edge(40, 40, 0, 9100, None),
        // Same port, different names: two services.
        edge(1, 50, 0, 8080, Some("a")),
        edge(2, 51, 0, 8080, Some("b")),
        // Replicas calling each other: two providers, no consumer.
        edge(60, 61, 0, 5433, pg),
        edge(61, 60, 0, 5433, pg),
    ];
    let nodes = [1, 2, 3, 10, 20, 21, 30, 40, 50, 51, 60, 61]
        .map(node)
        .to_vec();
    let s = spof(&Graph::new(nodes, edges));
    let found: Vec<(i32, Option<&str>, u128, u32)> = s
        .single_provider_services
        .iter()
        .map(|p| {
            (
                p.service.port,
                p.service.service.as_deref(),
                p.provider.as_u128(),
                p.consumers,
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (5432, pg, 10, 3),
            (8080, Some("a"), 50, 1),
            (8080, Some("b"), 51, 1),
            (9000, None, 30, 1)
        ]
    );
    assert!(
        s.single_provider_services
            .iter()
            .all(|p| p.service.protocol == 6)
    );
}

#[test]
fn unknown_ids_do_not_exist_in_results() {
    // A dependency towards an asset outside the snapshot is dropped, not a bridge.
    let mut edges = vec![edge(1, 2, 0, 80, None)];
    edges.push(edge(2, 99, 0, 80, None));
    let g = Graph::new(vec![node(1), node(2)], edges);
    assert_eq!(g.dangling_edges(), 1);
    let s = spof(&g);
    assert_eq!(links(&s), [(1, 2, 1)]);
    assert!(s.bridges.iter().all(|b| !b.assets.contains(&id(99))));
}
