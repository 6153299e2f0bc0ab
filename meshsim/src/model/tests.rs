//! Behaviour of the [`Model`] as a whole: operations, diffs, pins, routing, save/load.

use std::collections::BTreeMap;

use super::{
    testkit::{Rng, check_routes, check_routes_by_optimality},
    *,
};

/// A model with nodes at `points`, ids 1.., loaded in one step.
fn model_with(settings: Settings, points: &[(f64, f64)]) -> Model {
    let topology = Topology {
        settings,
        nodes: points
            .iter()
            .enumerate()
            .map(|(i, &(x, y))| NodeDoc {
                id: Some(NodeId(i as u32 + 1)),
                name: None,
                x,
                y,
            })
            .collect(),
        pins: Vec::new(),
        ..Topology::default()
    };
    Model::from_topology(&topology).unwrap()
}

fn n(id: u32) -> NodeId {
    NodeId(id)
}

fn linked(model: &Model) -> Vec<(u32, u32)> {
    model
        .links()
        .map(|l| (l.pair.a().0, l.pair.b().0))
        .collect()
}

fn latency_pin(ms: f64) -> LinkPins {
    LinkPins {
        latency_ms: Some(ms),
        ..LinkPins::default()
    }
}

/// A random mesh of 2..=40 nodes with random settings and a few pins, some on unlinked pairs.
fn random_model(rng: &mut Rng) -> Model {
    let count = rng.below(39) as usize + 2;
    let side = rng.f64_in(100.0, 1500.0);
    let points: Vec<(f64, f64)> = (0..count)
        .map(|_| (rng.f64_in(0.0, side), rng.f64_in(0.0, side)))
        .collect();
    let settings = Settings {
        neighbours: rng.below(6) as u32 + 1,
        max_latency_ms: rng.f64_in(50.0, 400.0),
        latency_scale_pct: rng.f64_in(30.0, 150.0),
        bandwidth_mode: if rng.below(2) == 0 {
            BandwidthMode::Fixed
        } else {
            BandwidthMode::DecayWithDistance
        },
        cost: if rng.below(2) == 0 {
            CostMetric::Latency
        } else {
            CostMetric::Bandwidth
        },
        ..Settings::default()
    };
    let mut model = model_with(settings, &points);
    let links: Vec<Pair> = model.links().map(|l| l.pair).collect();
    for pair in links {
        if rng.below(4) == 0 {
            let pins = LinkPins {
                latency_ms: Some(rng.f64_in(0.0, 50.0)),
                bandwidth_bps: (rng.below(2) == 0).then(|| rng.below(1_000_000)),
                ..LinkPins::default()
            };
            model.pin(pair.a(), pair.b(), &pins).unwrap();
        }
    }
    model
}

type State = (
    BTreeMap<NodeId, Node>,
    BTreeMap<Pair, Link>,
    BTreeMap<(NodeId, NodeId), NodeId>,
);

fn state(model: &Model) -> State {
    (
        model.nodes().map(|n| (n.id, n.clone())).collect(),
        model.links().map(|l| (l.pair, l.clone())).collect(),
        model
            .routes()
            .map(|r| ((r.src, r.dst), r.next_hop))
            .collect(),
    )
}

/// Applies one kind of change to a map, checking each entry is consistent with the old state.
fn patch<K: Ord + Copy + std::fmt::Debug, V: PartialEq + Clone + std::fmt::Debug>(
    map: &mut BTreeMap<K, V>,
    key: impl Fn(&V) -> K,
    added: &[V],
    changed: &[V],
    removed: &[V],
) {
    for v in removed {
        assert_eq!(
            map.remove(&key(v)).as_ref(),
            Some(v),
            "removed carries the old value"
        );
    }
    for v in changed {
        let old = map.insert(key(v), v.clone());
        assert!(
            old.is_some_and(|old| old != *v),
            "changed {v:?} was there and differed"
        );
    }
    for v in added {
        assert!(
            map.insert(key(v), v.clone()).is_none(),
            "added {v:?} was new"
        );
    }
}

/// Asserts that applying `diff` to `before` yields the model's current state.
fn assert_diff_exact(before: State, diff: &Diff, model: &Model) {
    let (mut nodes, mut links, mut routes) = before;
    patch(
        &mut nodes,
        |n| n.id,
        &diff.nodes_added,
        &diff.nodes_moved,
        &diff.nodes_removed,
    );
    patch(
        &mut links,
        |l| l.pair,
        &diff.links_added,
        &diff.links_changed,
        &diff.links_removed,
    );
    let mut route_map: BTreeMap<(NodeId, NodeId), Route> = routes
        .iter()
        .map(|(&(src, dst), &next_hop)| ((src, dst), Route { src, dst, next_hop }))
        .collect();
    patch(
        &mut route_map,
        |r| (r.src, r.dst),
        &diff.routes_added,
        &diff.routes_changed,
        &diff.routes_removed,
    );
    routes = route_map
        .into_values()
        .map(|r| ((r.src, r.dst), r.next_hop))
        .collect();
    assert_eq!((nodes, links, routes), state(model));
}

/// The independent route checks of `testkit`, fed from the model's links: Floyd–Warshall for
/// small meshes, the optimality condition (same verdict, O(n²·k)) for large ones.
fn assert_routes_shortest(model: &Model) {
    let nodes: Vec<NodeId> = model.nodes().map(|n| n.id).collect();
    let links: Vec<(Pair, u64)> = model
        .links()
        .map(|l| (l.pair, link_cost(&l.params, model.settings().cost)))
        .collect();
    let routes = model
        .routes()
        .map(|r| ((r.src, r.dst), r.next_hop))
        .collect();
    if nodes.len() <= 60 {
        check_routes(&nodes, &links, &routes);
    } else {
        check_routes_by_optimality(&nodes, &links, &routes);
    }
}

fn assert_cap_and_symmetry(model: &Model) {
    let mut degree: BTreeMap<NodeId, u32> = BTreeMap::new();
    for link in model.links() {
        let (a, b) = (link.pair.a(), link.pair.b());
        assert_eq!(model.link(a, b), model.link(b, a));
        *degree.entry(a).or_default() += 1;
        *degree.entry(b).or_default() += 1;
    }
    let cap = model.settings().neighbours;
    assert!(degree.values().all(|&d| d <= cap), "{degree:?} over {cap}");
}

#[test]
fn neighbour_cap_holds_and_links_are_symmetric_in_random_meshes() {
    let mut rng = Rng::new(10);
    for _ in 0..100 {
        assert_cap_and_symmetry(&random_model(&mut rng));
    }
}

#[test]
fn neighbour_cap_holds_when_nodes_crowd_together() {
    let mut model = Model::default();
    for i in 0..20 {
        model.add_node(f64::from(i), 0.0).unwrap();
    }
    assert_cap_and_symmetry(&model);
    assert!(model.links().len() >= 20, "a crowd is still well linked");
}

#[test]
fn moving_a_node_far_away_drops_its_links() {
    let mut model = model_with(
        Settings::default(),
        &[(0.0, 0.0), (100.0, 0.0), (200.0, 0.0)],
    );
    assert_eq!(linked(&model), [(1, 2), (1, 3), (2, 3)]);
    let diff = model.move_node(n(3), 5000.0, 0.0).unwrap();
    assert_eq!(linked(&model), [(1, 2)]);
    let removed: Vec<Pair> = diff.links_removed.iter().map(|l| l.pair).collect();
    assert_eq!(
        removed,
        [
            Pair::new(n(1), n(3)).unwrap(),
            Pair::new(n(2), n(3)).unwrap()
        ]
    );
    assert_eq!(model.next_hop(n(1), n(3)), None);
    assert_eq!(diff.nodes_moved.len(), 1);
}

#[test]
fn moving_a_node_close_links_it() {
    let mut model = model_with(Settings::default(), &[(0.0, 0.0), (1000.0, 0.0)]);
    assert!(linked(&model).is_empty());
    let diff = model.move_node(n(2), 30.0, 40.0).unwrap();
    assert_eq!(linked(&model), [(1, 2)]);
    assert_eq!(diff.links_added.len(), 1);
    assert_eq!(diff.links_added[0].params.latency_ms, 50.0);
    assert_eq!(model.next_hop(n(1), n(2)), Some(n(2)));
    assert_eq!(diff.routes_added.len(), 2);
}

#[test]
fn moving_a_node_changes_its_link_latencies() {
    let mut model = model_with(Settings::default(), &[(0.0, 0.0), (100.0, 0.0)]);
    let diff = model.move_node(n(2), 150.0, 0.0).unwrap();
    assert_eq!(diff.links_changed.len(), 1);
    assert_eq!(diff.links_changed[0].params.latency_ms, 150.0);
    assert!(diff.routes_changed.is_empty());
}

#[test]
fn pins_survive_moves() {
    let mut model = model_with(Settings::default(), &[(0.0, 0.0), (100.0, 0.0)]);
    model.pin(n(2), n(1), &latency_pin(7.0)).unwrap();
    model.move_node(n(2), 200.0, 0.0).unwrap();
    assert_eq!(model.link(n(1), n(2)).unwrap().params.latency_ms, 7.0);

    model.move_node(n(2), 900.0, 0.0).unwrap();
    assert!(model.link(n(1), n(2)).is_none());
    assert_eq!(model.pins().len(), 1, "the pin outlives the link");

    let diff = model.move_node(n(2), 50.0, 0.0).unwrap();
    let link = &diff.links_added[0];
    assert_eq!(link.params.latency_ms, 7.0);
    assert_eq!(link.pinned, [LinkField::LatencyMs]);
}

#[test]
fn latency_pins_are_absolute() {
    let mut model = model_with(Settings::default(), &[(0.0, 0.0), (100.0, 0.0)]);
    model.pin(n(1), n(2), &latency_pin(40.0)).unwrap();
    let settings = Settings {
        latency_scale_pct: 50.0,
        ..Settings::default()
    };
    let diff = model.set_settings(settings).unwrap();
    assert!(diff.is_empty(), "a pinned latency does not scale: {diff:?}");
    assert_eq!(model.link(n(1), n(2)).unwrap().params.latency_ms, 40.0);
    model.unpin(n(1), n(2), Some(LinkField::LatencyMs)).unwrap();
    assert_eq!(model.link(n(1), n(2)).unwrap().params.latency_ms, 50.0);
}

#[test]
fn pins_override_each_field_and_unpin_restores_derived_values() {
    let settings = Settings {
        jitter_ms: 2.0,
        loss_pct: 1.0,
        ..Settings::default()
    };
    let mut model = model_with(settings, &[(0.0, 0.0), (100.0, 0.0)]);
    let pins = LinkPins {
        latency_ms: Some(5.0),
        jitter_ms: Some(0.5),
        bandwidth_bps: Some(10_000_000),
        loss_pct: Some(3.0),
    };
    let diff = model.pin(n(1), n(2), &pins).unwrap();
    assert_eq!(diff.links_changed.len(), 1);
    let link = model.link(n(1), n(2)).unwrap();
    assert_eq!(
        link.params,
        LinkParams {
            latency_ms: 5.0,
            jitter_ms: 0.5,
            bandwidth_bps: 10_000_000,
            loss_pct: 3.0,
        }
    );
    assert_eq!(link.pinned, LinkField::ALL);
    model.unpin(n(1), n(2), None).unwrap();
    let link = model.link(n(1), n(2)).unwrap();
    assert_eq!(
        link.params,
        LinkParams {
            latency_ms: 100.0,
            jitter_ms: 2.0,
            bandwidth_bps: 512_000,
            loss_pct: 1.0,
        }
    );
    assert!(link.pinned.is_empty());
    assert_eq!(model.pins().len(), 0);
}

#[test]
fn pinning_jitter_changes_the_link_but_no_route() {
    let mut model = model_with(
        Settings::default(),
        &[(0.0, 0.0), (100.0, 0.0), (200.0, 0.0)],
    );
    let pins = LinkPins {
        jitter_ms: Some(5.0),
        ..LinkPins::default()
    };
    let diff = model.pin(n(1), n(2), &pins).unwrap();
    assert_eq!(diff.links_changed.len(), 1);
    assert_eq!(diff.links_changed[0].params.jitter_ms, 5.0);
    assert_eq!(diff.links_changed[0].pinned, [LinkField::JitterMs]);
    assert!(diff.routes_added.is_empty() && diff.routes_changed.is_empty());
    assert!(diff.routes_removed.is_empty());
}

#[test]
fn pinning_needs_a_link() {
    let mut model = model_with(Settings::default(), &[(0.0, 0.0), (1000.0, 0.0)]);
    let pin = latency_pin(1.0);
    assert_eq!(
        model.pin(n(2), n(1), &pin),
        Err(ModelError::NotLinked(n(1), n(2)))
    );
    assert_eq!(
        model.pin(n(1), n(3), &pin),
        Err(ModelError::UnknownNode(n(3)))
    );
    assert_eq!(model.pin(n(1), n(1), &pin), Err(ModelError::SameNode(n(1))));
}

#[test]
fn removing_a_node_reroutes_its_traffic_through_others() {
    // n1 -- n2 -- n3 in a line (200 ms apart, out of reach of each other at 150 ms), with
    // n4 above n2 as a detour: n1 - n4 - n3 is 283 ms against 200 ms through n2.
    let settings = Settings {
        max_latency_ms: 150.0,
        ..Settings::default()
    };
    let mut model = model_with(
        settings,
        &[(0.0, 0.0), (100.0, 0.0), (200.0, 0.0), (100.0, 100.0)],
    );
    assert_eq!(model.next_hop(n(1), n(3)), Some(n(2)));
    assert_eq!(model.next_hop(n(3), n(1)), Some(n(2)));

    let diff = model.remove_node(n(2)).unwrap();
    assert_eq!(model.next_hop(n(1), n(3)), Some(n(4)));
    assert_eq!(model.next_hop(n(3), n(1)), Some(n(4)));
    assert!(diff.routes_changed.contains(&Route {
        src: n(1),
        dst: n(3),
        next_hop: n(4),
    }));
    assert!(
        diff.routes_removed
            .iter()
            .all(|r| r.src == n(2) || r.dst == n(2))
    );
    assert!(diff.links_removed.iter().all(|l| l.pair.contains(n(2))));
    assert_eq!(diff.links_removed.len(), 3);
    assert!(model.routes().all(|r| r.next_hop != n(2)));
}

#[test]
fn removing_a_node_drops_its_pins() {
    let mut model = model_with(Settings::default(), &[(0.0, 0.0), (100.0, 0.0)]);
    model.pin(n(1), n(2), &latency_pin(3.0)).unwrap();
    model.remove_node(n(2)).unwrap();
    assert_eq!(model.pins().len(), 0);
    assert!(model.topology().pins.is_empty());
}

#[test]
fn routes_are_shortest_paths_and_loop_free_in_random_meshes() {
    let mut rng = Rng::new(11);
    for _ in 0..200 {
        assert_routes_shortest(&random_model(&mut rng));
    }
}

#[test]
fn bandwidth_cost_routes_around_slow_links() {
    // A triangle: the direct n1-n3 link is pinned slow, so n1 reaches n3 through n2 by
    // bandwidth even though the direct link is shorter in latency.
    let mut model = model_with(
        Settings::default(),
        &[(0.0, 0.0), (50.0, 50.0), (100.0, 0.0)],
    );
    let slow = LinkPins {
        bandwidth_bps: Some(1000),
        ..LinkPins::default()
    };
    model.pin(n(1), n(3), &slow).unwrap();
    assert_eq!(model.next_hop(n(1), n(3)), Some(n(3)));
    let diff = model
        .set_settings(Settings {
            cost: CostMetric::Bandwidth,
            ..Settings::default()
        })
        .unwrap();
    assert_eq!(model.next_hop(n(1), n(3)), Some(n(2)));
    assert!(
        diff.links_changed.is_empty(),
        "the metric changes routes only"
    );
    assert_eq!(diff.routes_changed.len(), 2);
}

#[test]
fn diffs_are_exact_over_random_operations() {
    let mut rng = Rng::new(12);
    for _ in 0..40 {
        let mut model = random_model(&mut rng);
        for _ in 0..25 {
            let before = state(&model);
            let ids: Vec<NodeId> = model.nodes().map(|n| n.id).collect();
            let any = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize];
            let diff = match rng.below(9) {
                7 if ids.len() > 2 => {
                    let side: Vec<NodeId> =
                        ids.iter().copied().filter(|_| rng.below(3) == 0).collect();
                    if side.is_empty() {
                        model.cut(&CutChange::Heal(None))
                    } else {
                        model.cut(&CutChange::Partition(side))
                    }
                }
                8 if model.links().len() > 0 => {
                    let pair = model
                        .links()
                        .nth(rng.below(model.links().len() as u64) as usize)
                        .unwrap()
                        .pair;
                    if model.links_down().contains(&pair) {
                        model.cut(&CutChange::Up(pair.a(), pair.b()))
                    } else {
                        model.cut(&CutChange::Down(pair.a(), pair.b()))
                    }
                }
                0 => model
                    .add_node(rng.f64_in(0.0, 800.0), rng.f64_in(0.0, 800.0))
                    .map(|(_, d)| d),
                1 | 2 if !ids.is_empty() => model.move_node(
                    any(&mut rng),
                    rng.f64_in(0.0, 800.0),
                    rng.f64_in(0.0, 800.0),
                ),
                3 if ids.len() > 2 => model.remove_node(any(&mut rng)),
                4 if model.links().len() > 0 => {
                    let link = model
                        .links()
                        .nth(rng.below(model.links().len() as u64) as usize);
                    let pair = link.unwrap().pair;
                    let pins = if rng.below(2) == 0 {
                        latency_pin(rng.f64_in(0.0, 100.0))
                    } else {
                        LinkPins {
                            jitter_ms: Some(rng.f64_in(0.0, 10.0)),
                            ..LinkPins::default()
                        }
                    };
                    model.pin(pair.a(), pair.b(), &pins)
                }
                5 if model.pins().len() > 0 => {
                    let (pair, _) = model
                        .pins()
                        .nth(rng.below(model.pins().len() as u64) as usize)
                        .unwrap();
                    model.unpin(pair.a(), pair.b(), None)
                }
                _ => {
                    let settings = Settings {
                        neighbours: rng.below(6) as u32 + 1,
                        max_latency_ms: rng.f64_in(50.0, 400.0),
                        ..model.settings().clone()
                    };
                    model.set_settings(settings)
                }
            }
            .unwrap();
            assert_diff_exact(before, &diff, &model);
        }
        // Routes are shortest over the links that are not cut; healed, over all of them.
        assert_cap_and_symmetry(&model);
        model.cut(&CutChange::Heal(None)).unwrap();
        for pair in model.links_down() {
            model.cut(&CutChange::Up(pair.a(), pair.b())).unwrap();
        }
        assert!(model.links().all(|l| !l.cut));
        assert_routes_shortest(&model);
    }
}

#[test]
fn load_diffs_are_exact() {
    let mut rng = Rng::new(13);
    for _ in 0..30 {
        let mut model = random_model(&mut rng);
        let other = random_model(&mut rng);
        let before = state(&model);
        let diff = model.load(&other.topology()).unwrap();
        assert_diff_exact(before, &diff, &model);
        assert_eq!(model.snapshot(), other.snapshot());
    }
}

#[test]
fn no_op_operations_give_empty_diffs() {
    let mut model = model_with(
        Settings::default(),
        &[(0.0, 0.0), (100.0, 0.0), (100.0, 100.0)],
    );
    model.pin(n(1), n(2), &latency_pin(9.0)).unwrap();
    let unchanged = model.snapshot();

    assert!(model.move_node(n(3), 100.0, 100.0).unwrap().is_empty());
    assert!(model.set_settings(Settings::default()).unwrap().is_empty());
    assert!(model.pin(n(1), n(2), &latency_pin(9.0)).unwrap().is_empty());
    assert!(
        model
            .pin(n(1), n(2), &LinkPins::default())
            .unwrap()
            .is_empty()
    );
    assert!(model.unpin(n(2), n(3), None).unwrap().is_empty());
    assert!(
        model
            .unpin(n(1), n(2), Some(LinkField::LossPct))
            .unwrap()
            .is_empty()
    );
    assert!(model.load(&model.topology()).unwrap().is_empty());
    assert_eq!(model.snapshot(), unchanged);
}

#[test]
fn a_change_that_moves_nothing_downstream_still_reports_the_node() {
    // Moving a lone node changes no link or route, but the canvas must still see it move.
    let mut model = model_with(Settings::default(), &[(0.0, 0.0)]);
    let diff = model.move_node(n(1), 10.0, 0.0).unwrap();
    assert_eq!(diff.nodes_moved.len(), 1);
    assert!(diff.links_changed.is_empty() && diff.routes_changed.is_empty());
}

#[test]
fn topology_save_and_load_round_trips() {
    let mut rng = Rng::new(14);
    for _ in 0..30 {
        let mut model = random_model(&mut rng);
        // A pin on a pair that is unlinked at save time must survive too.
        let first = model.links().next().map(|link| link.pair);
        if let Some(pair) = first {
            let (a, b) = (pair.a(), pair.b());
            model.pin(a, b, &latency_pin(1.0)).unwrap();
            model.move_node(b, 99_000.0, 99_000.0).unwrap();
        }
        // Cuts standing when saved come back with the document, a link down while its pair
        // is apart among them.
        let second = model.links().nth(1).map(|l| l.pair);
        if let Some(pair) = second {
            model.cut(&CutChange::Down(pair.b(), pair.a())).unwrap();
        }
        let ids: Vec<NodeId> = model.nodes().map(|n| n.id).collect();
        if ids.len() > 2 {
            model
                .cut(&CutChange::Partition(vec![ids[2], ids[0]]))
                .unwrap();
            model.cut(&CutChange::Partition(vec![ids[1]])).unwrap();
        }
        if let Some(pair) = first {
            model.move_node(pair.a(), -99_000.0, 99_000.0).unwrap();
        }
        let saved = model.topology();
        let loaded = Model::from_topology(&saved).unwrap();
        assert_eq!(loaded.topology(), saved);
        assert_eq!(loaded.snapshot(), model.snapshot());
        assert_eq!(state(&loaded), state(&model));
        assert_eq!(
            loaded.pins().collect::<Vec<_>>(),
            model.pins().collect::<Vec<_>>()
        );
    }
}

#[test]
fn ids_are_never_reused() {
    let mut model = Model::default();
    let (first, _) = model.add_node(0.0, 0.0).unwrap();
    let (second, _) = model.add_node(10.0, 0.0).unwrap();
    assert_eq!((first, second), (n(1), n(2)));
    model.remove_node(second).unwrap();
    let (third, _) = model.add_node(10.0, 0.0).unwrap();
    assert_eq!(third, n(3));
    assert_eq!(model.node(third).unwrap().name, "n3");

    // Loading a document with lower ids does not wind the counter back.
    model.load(&Topology::default()).unwrap();
    assert_eq!(model.add_node(0.0, 0.0).unwrap().0, n(4));
    let mut loaded = model_with(Settings::default(), &[(0.0, 0.0); 7]);
    assert_eq!(loaded.add_node(0.0, 0.0).unwrap().0, n(8));
}

#[test]
fn a_saved_mesh_keeps_the_ids_of_removed_nodes_used() {
    let mut model = model_with(Settings::default(), &[(0.0, 0.0); 3]);
    assert_eq!(model.topology().next_id, None, "implied by n3");
    model.remove_node(n(3)).unwrap();
    let saved = model.topology();
    assert_eq!(saved.next_id, Some(n(4)));
    let mut loaded = Model::from_topology(&saved).unwrap();
    assert_eq!(loaded.topology(), saved);
    assert_eq!(loaded.add_node(0.0, 0.0).unwrap().0, n(4));
    // A live mesh that went further keeps its own count.
    for _ in 0..3 {
        model.add_node(0.0, 0.0).unwrap();
    }
    model.load(&saved).unwrap();
    assert_eq!(model.add_node(0.0, 0.0).unwrap().0, n(7));
}

#[test]
fn bad_input_errors_name_the_field_and_change_nothing() {
    let mut model = model_with(Settings::default(), &[(0.0, 0.0), (100.0, 0.0)]);
    let unchanged = (model.snapshot(), model.topology());
    let field = |r: Result<Diff, ModelError>| r.unwrap_err().field().map(str::to_owned);

    assert_eq!(
        model.add_node(f64::NAN, 0.0).unwrap_err().field(),
        Some("x")
    );
    assert_eq!(
        field(model.move_node(n(1), 0.0, -100_001.0)),
        Some("y".into())
    );
    assert_eq!(
        model.move_node(n(9), 0.0, 0.0),
        Err(ModelError::UnknownNode(n(9)))
    );
    assert_eq!(model.remove_node(n(9)), Err(ModelError::UnknownNode(n(9))));
    let settings = Settings {
        loss_pct: 120.0,
        ..Settings::default()
    };
    assert_eq!(field(model.set_settings(settings)), Some("loss_pct".into()));
    let pins = LinkPins {
        jitter_ms: Some(-1.0),
        ..LinkPins::default()
    };
    assert_eq!(
        field(model.pin(n(1), n(2), &pins)),
        Some("jitter_ms".into())
    );
    let mut topology = model.topology();
    topology.nodes[1].x = f64::INFINITY;
    assert_eq!(field(model.load(&topology)), Some("nodes[1].x".into()));
    assert_eq!(
        Model::new(Settings {
            neighbours: 0,
            ..Settings::default()
        })
        .unwrap_err()
        .field(),
        Some("neighbours")
    );

    assert_eq!((model.snapshot(), model.topology()), unchanged);
    assert_eq!(
        model.add_node(0.0, 0.0).unwrap().0,
        n(3),
        "failed adds use no id"
    );
}

#[test]
fn decaying_bandwidth_follows_distance() {
    let settings = Settings {
        bandwidth_mode: BandwidthMode::DecayWithDistance,
        ..Settings::default()
    };
    let model = model_with(settings, &[(0.0, 0.0), (150.0, 0.0)]);
    assert_eq!(
        model.link(n(1), n(2)).unwrap().params.bandwidth_bps,
        256_000
    );
}

#[test]
fn five_hundred_node_mesh_stays_consistent_through_moves() {
    let mut rng = Rng::new(15);
    let points: Vec<(f64, f64)> = (0..500)
        .map(|_| (rng.f64_in(0.0, 3000.0), rng.f64_in(0.0, 3000.0)))
        .collect();
    let mut model = model_with(Settings::default(), &points);
    assert_eq!(model.nodes().len(), 500);
    for _ in 0..3 {
        let before = state(&model);
        let id = n(rng.below(500) as u32 + 1);
        let diff = model
            .move_node(id, rng.f64_in(0.0, 3000.0), rng.f64_in(0.0, 3000.0))
            .unwrap();
        assert_diff_exact(before, &diff, &model);
    }
    assert_cap_and_symmetry(&model);
    assert_routes_shortest(&model);
}

#[test]
fn a_partition_cuts_the_links_across_it_and_routes_go_around() {
    // A ring of six around the centre, each linked to its two ring neighbours (k = 2).
    let settings = Settings {
        neighbours: 2,
        ..Settings::default()
    };
    let points: Vec<(f64, f64)> = (0..6)
        .map(|i| {
            let a = f64::from(i) * std::f64::consts::TAU / 6.0;
            (300.0 + 100.0 * a.cos(), 300.0 + 100.0 * a.sin())
        })
        .collect();
    let mut model = model_with(settings, &points);
    assert_eq!(model.links().len(), 6);
    let pin = LinkPins {
        loss_pct: Some(1.0),
        ..LinkPins::default()
    };
    model.pin(n(1), n(2), &pin).unwrap();
    assert_eq!(model.next_hop(n(1), n(2)), Some(n(2)));

    // n1 and n2 on their own: the links n1-n6 and n2-n3 cross the cut.
    let diff = model.cut(&CutChange::Partition(vec![n(1), n(2)])).unwrap();
    let cut: Vec<(u32, u32)> = model
        .links()
        .filter(|l| l.cut)
        .map(|l| (l.pair.a().0, l.pair.b().0))
        .collect();
    assert_eq!(cut, [(1, 6), (2, 3)]);
    assert!(
        model
            .links()
            .filter(|l| l.cut)
            .all(|l| l.params.loss_pct == 100.0)
    );
    assert_eq!(diff.links_changed.len(), 2);
    assert_eq!(model.snapshot().partitions, [vec![n(1), n(2)]]);
    // Each side routes within itself; across the cut, the old path stays (and drops).
    assert_eq!(model.next_hop(n(6), n(3)), Some(n(5)));
    assert_eq!(model.next_hop(n(1), n(6)), Some(n(6)));

    // A link taken down inside a side: n1-n2 has no other path, so it keeps its route.
    model.cut(&CutChange::Down(n(1), n(2))).unwrap();
    assert!(model.link(n(1), n(2)).unwrap().cut);
    assert_eq!(model.next_hop(n(1), n(2)), Some(n(2)));

    // Healing restores every link's own parameters, pins included.
    model.cut(&CutChange::Heal(None)).unwrap();
    model.cut(&CutChange::Up(n(2), n(1))).unwrap();
    assert!(model.links().all(|l| !l.cut));
    assert_eq!(model.link(n(1), n(2)).unwrap().params.loss_pct, 1.0);
    assert_eq!(model.link(n(1), n(6)).unwrap().params.loss_pct, 0.0);
    assert!(model.snapshot().partitions.is_empty());
    assert_routes_shortest(&model);
}
