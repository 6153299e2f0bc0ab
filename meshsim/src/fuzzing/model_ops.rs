//! The model under any sequence of add, move, remove, pin, unpin and settings operations:
//! after every one, checked against what the model's docs promise, computed here without the
//! model's own code.
//!
//! - Links are exactly the link rule's, evaluated by brute force (every candidate sorted;
//!   `linkrule` selects): mutual nearest-k within `max_latency_ms`. So links are symmetric,
//!   join existing nodes, and no node has more than k = `neighbours` of them. Pins never add
//!   or remove a link (they only override parameters), so the bound has no exception.
//! - Each link's parameters are the derived ones with its pins winning field by field.
//! - Routes are loop-free shortest paths over the links (`testkit`: Floyd–Warshall, or the
//!   optimality condition for larger meshes; the model uses petgraph's Dijkstra).
//! - An operation that fails changes nothing.
//!
//! Cuts are left out: where a cut link still routes is a rule of its own (`routing`), which
//! this independent checker does not restate.

use std::collections::BTreeMap;

use super::Input;
use crate::model::{
    BandwidthMode, CostMetric, LinkField, LinkParams, LinkPins, MAX_BANDWIDTH_BPS,
    MAX_LATENCY_SCALE_PCT, Model, Node, NodeId, Pair, Settings, link_cost,
    testkit::{check_routes, check_routes_by_optimality},
};

/// At most this many operations per input, and nodes in the mesh: enough for crowds, ties
/// and multi-hop routes, small enough for a million inputs.
const MAX_OPS: usize = 32;
const MAX_NODES: usize = 32;

/// One operation, as decoded from the input.
#[derive(Debug, Clone)]
pub enum Op {
    Add {
        x: f64,
        y: f64,
    },
    Move {
        id: NodeId,
        x: f64,
        y: f64,
    },
    Remove {
        id: NodeId,
    },
    Pin {
        a: NodeId,
        b: NodeId,
        pins: LinkPins,
    },
    Unpin {
        a: NodeId,
        b: NodeId,
        field: Option<LinkField>,
    },
    Settings(Settings),
}

/// Decodes `data` into operations and checks the model after each.
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let mut model = Model::default();
    let mut ops = 0;
    while !input.is_empty() && ops < MAX_OPS {
        let op = decode(&mut input, &model);
        ops += 1;
        if matches!(op, Op::Add { .. }) && model.nodes().len() >= MAX_NODES {
            continue;
        }
        let before = model.clone();
        let result = apply(&mut model, &op);
        if let Err(e) = &result {
            assert_eq!(
                model.snapshot(),
                before.snapshot(),
                "{op:?} failed ({e}) but changed the mesh"
            );
            assert!(
                model.pins().eq(before.pins()),
                "{op:?} failed ({e}) but changed the pins"
            );
        }
        check_invariants(&model, &op);
    }
}

fn apply(model: &mut Model, op: &Op) -> Result<(), crate::model::ModelError> {
    match op {
        Op::Add { x, y } => model.add_node(*x, *y).map(drop),
        Op::Move { id, x, y } => model.move_node(*id, *x, *y).map(drop),
        Op::Remove { id } => model.remove_node(*id).map(drop),
        Op::Pin { a, b, pins } => model.pin(*a, *b, pins).map(drop),
        Op::Unpin { a, b, field } => model.unpin(*a, *b, *field).map(drop),
        Op::Settings(settings) => model.set_settings(settings.clone()).map(drop),
    }
}

/// A coordinate: a coarse grid most of the time (ties, crowds, equal distances), sometimes
/// anything, including values the model must refuse.
fn coord(input: &mut Input) -> f64 {
    let b = input.byte();
    match b {
        0..=239 => f64::from(b) * 4.0,
        240 => -1.5,
        241 => 100_000.0,
        242 => 100_000.5,
        243 => f64::NAN,
        244 => f64::INFINITY,
        _ => f64::from(input.u16() as i16) / 3.0,
    }
}

/// A node: one that exists most of the time, else one that never did or one removed.
fn node(input: &mut Input, model: &Model) -> NodeId {
    let b = input.byte();
    let ids: Vec<NodeId> = model.nodes().map(|n| n.id).collect();
    match (b, ids.len()) {
        (250.., _) | (_, 0) => NodeId(u32::from(b % 8)),
        (_, n) => ids[usize::from(b) % n],
    }
}

fn ms(input: &mut Input) -> f64 {
    match input.byte() {
        255 => -1.0,
        254 => f64::NAN,
        253 => 3_600_001.0,
        b => f64::from(b) * 2.5,
    }
}

fn bandwidth(input: &mut Input) -> u64 {
    [
        0,
        1,
        1_000,
        512_000,
        1_000_000_000,
        MAX_BANDWIDTH_BPS,
        MAX_BANDWIDTH_BPS + 1,
        u64::MAX,
    ][usize::from(input.byte() % 8)]
}

fn pct(input: &mut Input) -> f64 {
    match input.byte() {
        255 => -0.5,
        254 => 100.5,
        b => f64::from(b % 101),
    }
}

fn field(b: u8) -> Option<LinkField> {
    LinkField::ALL.get(usize::from(b % 5)).copied()
}

fn decode(input: &mut Input, model: &Model) -> Op {
    match input.byte() % 8 {
        0 | 1 => Op::Add {
            x: coord(input),
            y: coord(input),
        },
        2 | 3 => Op::Move {
            id: node(input, model),
            x: coord(input),
            y: coord(input),
        },
        4 => Op::Remove {
            id: node(input, model),
        },
        5 => {
            let (a, b) = (node(input, model), node(input, model));
            let which = input.byte();
            let pins = LinkPins {
                latency_ms: (which & 1 != 0).then(|| ms(input)),
                jitter_ms: (which & 2 != 0).then(|| ms(input)),
                bandwidth_bps: (which & 4 != 0).then(|| bandwidth(input)),
                loss_pct: (which & 8 != 0).then(|| pct(input)),
            };
            Op::Pin { a, b, pins }
        }
        6 => Op::Unpin {
            a: node(input, model),
            b: node(input, model),
            field: field(input.byte()),
        },
        _ => Op::Settings(Settings {
            neighbours: u32::from(input.byte() % 9),
            max_latency_ms: ms(input) * 4.0,
            latency_scale_pct: [0.0, 1.0, 50.0, 100.0, 250.0, MAX_LATENCY_SCALE_PCT, -1.0]
                [usize::from(input.byte() % 7)],
            bandwidth_bps: bandwidth(input),
            bandwidth_mode: if input.byte() & 1 == 0 {
                BandwidthMode::Fixed
            } else {
                BandwidthMode::DecayWithDistance
            },
            jitter_ms: ms(input),
            loss_pct: pct(input),
            cost: if input.byte() & 1 == 0 {
                CostMetric::Latency
            } else {
                CostMetric::Bandwidth
            },
        }),
    }
}

/// Every promise of the model's docs, checked after `op`.
pub fn check_invariants(model: &Model, op: &Op) {
    let settings = model.settings();
    let nodes: BTreeMap<NodeId, &Node> = model.nodes().map(|n| (n.id, n)).collect();
    let expected = link_rule(&nodes, settings);
    let actual: Vec<Pair> = model.links().map(|l| l.pair).collect();
    assert_eq!(
        actual, expected,
        "after {op:?}: links are not the link rule's"
    );

    let mut degree: BTreeMap<NodeId, u32> = BTreeMap::new();
    let pins: BTreeMap<Pair, &LinkPins> = model.pins().collect();
    for link in model.links() {
        let (a, b) = (link.pair.a(), link.pair.b());
        assert!(a < b, "after {op:?}: pair {} is not ordered", link.pair);
        assert_eq!(
            model.link(a, b),
            model.link(b, a),
            "after {op:?}: asymmetric"
        );
        *degree.entry(a).or_default() += 1;
        *degree.entry(b).or_default() += 1;
        let derived = derived(nodes[&a], nodes[&b], settings);
        let pinned = pins.get(&link.pair).copied().copied().unwrap_or_default();
        let params = LinkParams {
            latency_ms: pinned.latency_ms.unwrap_or(derived.latency_ms),
            jitter_ms: pinned.jitter_ms.unwrap_or(derived.jitter_ms),
            bandwidth_bps: pinned.bandwidth_bps.unwrap_or(derived.bandwidth_bps),
            loss_pct: pinned.loss_pct.unwrap_or(derived.loss_pct),
        };
        assert_eq!(
            link.params, params,
            "after {op:?}: link {} has the wrong parameters",
            link.pair
        );
        assert_eq!(link.pinned, pinned.fields(), "after {op:?}: pinned fields");
    }
    for (id, d) in &degree {
        assert!(
            *d <= settings.neighbours,
            "after {op:?}: {id} has {d} links, over {}",
            settings.neighbours
        );
    }
    for (pair, _) in model.pins() {
        assert!(
            nodes.contains_key(&pair.a()) && nodes.contains_key(&pair.b()),
            "after {op:?}: a pin of {pair} outlived its node"
        );
    }

    let ids: Vec<NodeId> = nodes.keys().copied().collect();
    let costs: Vec<(Pair, u64)> = model
        .links()
        .map(|l| (l.pair, link_cost(&l.params, settings.cost)))
        .collect();
    let routes = model
        .routes()
        .map(|r| ((r.src, r.dst), r.next_hop))
        .collect();
    if ids.len() <= 16 {
        check_routes(&ids, &costs, &routes);
    } else {
        check_routes_by_optimality(&ids, &costs, &routes);
    }
}

/// The link rule of the model's docs, by brute force.
pub(super) fn link_rule(nodes: &BTreeMap<NodeId, &Node>, settings: &Settings) -> Vec<Pair> {
    // Ranked by squared distance: the same order as by distance, without sqrt's rounding.
    let nearest: BTreeMap<NodeId, Vec<NodeId>> = nodes
        .values()
        .map(|a| {
            let mut candidates: Vec<(f64, NodeId)> = nodes
                .values()
                .filter(|b| b.id != a.id)
                .map(|b| (distance_sq(a, b), b.id))
                .filter(|&(d2, _)| {
                    d2.sqrt() * settings.latency_scale_pct / 100.0 <= settings.max_latency_ms
                })
                .collect();
            candidates.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
            candidates.truncate(settings.neighbours as usize);
            (a.id, candidates.into_iter().map(|(_, id)| id).collect())
        })
        .collect();
    let mut pairs = Vec::new();
    for (&a, chosen) in &nearest {
        for &b in chosen.iter().filter(|&&b| b > a) {
            if nearest[&b].contains(&a) {
                pairs.push(Pair::new(a, b).expect("distinct nodes"));
            }
        }
    }
    pairs.sort();
    pairs
}

/// A link's parameters from the settings alone, as [`Settings`]' docs define them.
fn derived(a: &Node, b: &Node, settings: &Settings) -> LinkParams {
    let latency_ms = distance_sq(a, b).sqrt() * settings.latency_scale_pct / 100.0;
    LinkParams {
        latency_ms,
        jitter_ms: settings.jitter_ms,
        bandwidth_bps: settings.derived_bandwidth_bps(latency_ms),
        loss_pct: settings.loss_pct,
    }
}

fn distance_sq(a: &Node, b: &Node) -> f64 {
    let (dx, dy) = (a.x - b.x, a.y - b.y);
    dx * dx + dy * dy
}
