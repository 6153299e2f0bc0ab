//! The Sim against a fake host (`fake`): the order a change is applied in, the undo of a
//! change that fails half-way, the refusal of one that cannot fit, the folding of queued
//! moves, and, over random operations with random failures, that the host always equals the
//! model. No root needed.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use meshsim_common::LinkKey;
use tokio::sync::Semaphore;

use super::{
    ShaperCapacity, Sim, SimError, SimHandle,
    fake::{FakeRuntime, FakeShaper, World, mac},
};
use crate::model::{
    ClientLink, HOST, LinkField, LinkPins, ModelError, NodeDoc, NodeId, Pair, Settings, Topology,
    link_cost,
    testkit::{Rng, check_routes},
};

struct Lab {
    sim: SimHandle,
    world: Arc<Mutex<World>>,
    gate: Arc<Semaphore>,
}

/// A Sim on a fake host with default settings. With `gated`, every node creation waits for
/// a permit on `gate`.
fn lab(gated: bool) -> Lab {
    lab_with(gated, false)
}

/// A lab whose host has client links (`host`), as on the netns backend.
fn lab_with(gated: bool, host: bool) -> Lab {
    lab_sized(gated, host, None)
}

/// A lab whose maps hold `capacity` (the real sizes when `None`); the fake's maps refuse a
/// new entry past it, as the kernel's do.
fn lab_sized(gated: bool, host: bool, capacity: Option<ShaperCapacity>) -> Lab {
    let world = World::new();
    let gate = Arc::new(Semaphore::new(0));
    let runtime = FakeRuntime {
        world: Arc::clone(&world),
        gate: gated.then(|| Arc::clone(&gate)),
        host,
    };
    let mut shaper = FakeShaper::new(Arc::clone(&world));
    if let Some(capacity) = capacity {
        shaper.capacity = capacity;
    }
    let (sim, _task) = Sim::spawn(runtime, shaper, Settings::default()).unwrap();
    Lab { sim, world, gate }
}

impl Lab {
    /// Waits until the Sim has put the host into the datapath (its first step).
    async fn host_joined(&self) {
        let mut state = self.sim.state();
        while state.borrow_and_update().host.is_none() {
            state.changed().await.unwrap();
        }
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.world.lock().unwrap()
    }

    fn log_since(&self, from: usize) -> Vec<String> {
        self.world().log[from..].to_vec()
    }

    fn log_len(&self) -> usize {
        self.world().log.len()
    }

    /// Asserts that the fake host holds exactly what the published state says, and routes
    /// that are shortest and loop-free over the published links (checked independently of
    /// the model's routing).
    fn assert_host_is_model(&self) {
        let state = self.sim.state().borrow().clone();
        let w = self.world();
        let ids: BTreeSet<NodeId> = state.snapshot.nodes.iter().map(|n| n.id).collect();
        assert_eq!(
            w.nodes.keys().copied().collect::<BTreeSet<_>>(),
            ids,
            "nodes"
        );
        assert_eq!(
            state.nodes.keys().copied().collect::<BTreeSet<_>>(),
            ids,
            "facts"
        );
        for (id, facts) in &state.nodes {
            assert_eq!(w.nodes[id].1, facts.port, "port of {id}");
            assert_eq!(w.nodes[id].0, facts.workload, "workload of {id}");
        }
        let known: BTreeMap<[u8; 6], (NodeId, u32)> = state
            .nodes
            .values()
            .chain(&state.host)
            .map(|f| (f.mac, (f.id, f.port)))
            .collect();
        assert_eq!(w.known, known, "datapath nodes");
        let ports: BTreeSet<u32> = state
            .nodes
            .values()
            .chain(&state.host)
            .map(|f| f.port)
            .collect();
        assert_eq!(w.attached, ports, "attached ports");
        let mut links = BTreeMap::new();
        if let Some(host) = &state.host {
            for (&id, facts) in &state.nodes {
                let (up, down) = state.clients.of(id).directions();
                let key = |a, b| LinkKey {
                    src: mac(a),
                    dst: mac(b),
                };
                links.insert(key(HOST, id), (facts.port, up));
                links.insert(key(id, HOST), (host.port, down));
            }
            assert!(
                state.clients.nodes.keys().all(|id| ids.contains(id)),
                "a removed node's client settings are forgotten"
            );
        }
        for l in &state.snapshot.links {
            for (a, b) in [(l.pair.a(), l.pair.b()), (l.pair.b(), l.pair.a())] {
                let key = LinkKey {
                    src: mac(a),
                    dst: mac(b),
                };
                links.insert(key, (state.nodes[&b].port, l.params));
            }
        }
        assert_eq!(w.links, links, "directed links");
        let nodes: Vec<NodeId> = ids.iter().copied().collect();
        let costs: Vec<(Pair, u64)> = state
            .snapshot
            .links
            .iter()
            .map(|l| (l.pair, link_cost(&l.params, state.snapshot.settings.cost)))
            .collect();
        let mut routes = BTreeMap::new();
        for (&src, table) in &w.routes {
            for (&dst, &via) in table {
                routes.insert((src, dst), via);
            }
        }
        check_routes(&nodes, &costs, &routes);
    }
}

/// Three nodes in a line, 200 px apart: n1 - n2 - n3 (n1 and n3 are beyond 300 ms).
async fn line(lab: &Lab) {
    for x in [0.0, 200.0, 400.0] {
        lab.sim.add_node(x, 0.0).await.unwrap();
    }
    lab.assert_host_is_model();
}

fn position(log: &[String], entry: &str) -> usize {
    log.iter()
        .position(|l| l == entry)
        .unwrap_or_else(|| panic!("{entry:?} not in {log:?}"))
}

#[tokio::test]
async fn a_moved_nodes_traffic_switches_before_its_old_link_goes() {
    let lab = lab(false);
    line(&lab).await;
    let from = lab.log_len();
    // n3 moves next to n1 (250 ms) and away from n2 (320 ms): n1-n3 comes, n2-n3 goes.
    lab.sim.move_node(NodeId(3), 0.0, 250.0).await.unwrap();
    let log = lab.log_since(from);
    let new_link = position(&log, "link n1>n3").max(position(&log, "link n3>n1"));
    let first_route = log.iter().position(|l| l.starts_with("routes")).unwrap();
    let last_route = log.iter().rposition(|l| l.starts_with("routes")).unwrap();
    let old_link = position(&log, "unlink n2>n3").min(position(&log, "unlink n3>n2"));
    assert!(
        new_link < first_route && last_route < old_link,
        "links, then routes, then removals: {log:?}"
    );
    lab.assert_host_is_model();
}

#[tokio::test]
async fn a_node_is_made_before_its_links_and_removed_after_them() {
    let lab = lab(false);
    line(&lab).await;
    let from = lab.log_len();
    lab.sim.add_node(600.0, 0.0).await.unwrap();
    let log = lab.log_since(from);
    assert_eq!(&log[..3], ["create n4", "attach 104", "know n4"], "{log:?}");
    assert!(position(&log, "know n4") < position(&log, "link n3>n4"));

    let from = lab.log_len();
    lab.sim.remove_node(NodeId(4)).await.unwrap();
    let log = lab.log_since(from);
    let routes = log.iter().rposition(|l| l.starts_with("routes")).unwrap();
    assert!(routes < position(&log, "unlink n3>n4"), "{log:?}");
    assert!(position(&log, "unlink n4>n3") < position(&log, "forget n4"));
    assert_eq!(log.last().unwrap(), "remove n4", "{log:?}");
    lab.assert_host_is_model();
}

#[tokio::test]
async fn a_failed_add_is_undone_and_does_not_use_up_its_id() {
    let lab = lab(false);
    lab.world().fail_on("attach");
    let err = lab.sim.add_node(0.0, 0.0).await.unwrap_err();
    assert!(matches!(err, SimError::Host(_)), "{err}");
    assert_eq!(
        lab.log_since(0),
        ["create n1", "FAILED attach 101", "remove n1"],
        "the node made is taken back"
    );
    assert!(lab.sim.state().borrow().snapshot.nodes.is_empty());
    lab.assert_host_is_model();
    let node = lab.sim.add_node(0.0, 0.0).await.unwrap();
    assert_eq!(node.id, NodeId(1), "the failed add did not use up n1");
    lab.assert_host_is_model();
}

#[tokio::test]
async fn a_change_that_fails_at_its_routes_puts_links_and_routes_back() {
    let lab = lab(false);
    line(&lab).await;
    let before = lab.sim.state().borrow().clone();
    // n4 between n1 and n2 takes over: the routes of every node change.
    lab.world().fail_on("routes n2");
    let err = lab.sim.add_node(100.0, 10.0).await.unwrap_err();
    assert!(err.to_string().contains("routes n2"), "{err}");
    let after = lab.sim.state().borrow().clone();
    assert_eq!(after.snapshot, before.snapshot, "the model is as before");
    lab.assert_host_is_model();
    assert!(lab.world().nodes.len() == 3);
}

#[tokio::test]
async fn a_removal_that_fails_brings_the_node_back_as_it_was() {
    let lab = lab(false);
    line(&lab).await;
    // The removal of n2 fails after its links went: they, its routes and n2 come back.
    lab.world().fail_on("remove n2");
    assert!(lab.sim.remove_node(NodeId(2)).await.is_err());
    lab.assert_host_is_model();
    assert_eq!(lab.sim.state().borrow().snapshot.nodes.len(), 3);
    // And a removal that goes through still works afterwards.
    lab.sim.remove_node(NodeId(2)).await.unwrap();
    lab.assert_host_is_model();
}

#[tokio::test]
async fn a_change_the_host_cannot_take_is_refused_before_anything_is_touched() {
    let lab = lab(false);
    line(&lab).await;
    lab.world().max_id = 3;
    let calls = lab.world().calls();
    let err = lab.sim.add_node(600.0, 0.0).await.unwrap_err();
    assert!(matches!(err, SimError::Refused(_)), "{err}");
    assert!(err.to_string().contains("n4 does not fit"), "{err}");
    assert_eq!(lab.world().calls(), calls, "nothing was touched");
    // A topology that holds an id beyond the limit is refused whole.
    let mut topology = lab.sim.topology().await.unwrap();
    topology.nodes.push(NodeDoc {
        id: Some(NodeId(9)),
        name: None,
        x: 0.0,
        y: 100.0,
    });
    assert!(matches!(
        lab.sim.load(topology, None).await,
        Err(SimError::Refused(_))
    ));
    assert_eq!(lab.world().calls(), calls);
    lab.world().max_id = 10;
    assert_eq!(lab.sim.add_node(600.0, 0.0).await.unwrap().id, NodeId(4));
    lab.assert_host_is_model();
}

/// The datapath's limits (4,096 nodes, 16,384 directed links) at a size a test can fill: a
/// change past either is refused whole, never attempted and failed half-way by a full map.
#[tokio::test]
async fn a_mesh_grows_to_the_maps_limits_and_is_refused_there() {
    for (capacity, limit) in [
        (
            ShaperCapacity {
                nodes: 6,
                directed_links: 1000,
            },
            "at most 5 nodes besides the host",
        ),
        (
            ShaperCapacity {
                nodes: 100,
                directed_links: 40,
            },
            "at most 40 directed links",
        ),
    ] {
        let lab = lab_sized(false, true, Some(capacity));
        lab.host_joined().await;
        let mut rng = Rng::new(7);
        let mut added = 0;
        let refusal = loop {
            let (x, y) = (rng.f64_in(0.0, 600.0), rng.f64_in(0.0, 600.0));
            match lab.sim.add_node(x, y).await {
                Ok(_) => added += 1,
                Err(e) => break e,
            }
            assert!(added < 100, "never refused");
        };
        assert!(matches!(refusal, SimError::Refused(_)), "{refusal}");
        assert!(refusal.to_string().contains(limit), "{refusal}");
        lab.assert_host_is_model();
        // Moves at the limit are refused or done, never half-done.
        let nodes: Vec<NodeId> = lab
            .sim
            .state()
            .borrow()
            .snapshot
            .nodes
            .iter()
            .map(|n| n.id)
            .collect();
        for i in 0..50 {
            let id = nodes[i % nodes.len()];
            let (x, y) = (rng.f64_in(0.0, 600.0), rng.f64_in(0.0, 600.0));
            match lab.sim.move_node(id, x, y).await {
                Ok(_) | Err(SimError::Refused(_)) => {}
                Err(e) => panic!("a move at the limit failed instead of being refused: {e}"),
            }
            lab.assert_host_is_model();
        }
    }
}

#[tokio::test]
async fn settings_of_an_empty_mesh_are_published() {
    let lab = lab(false);
    let settings = Settings {
        jitter_ms: 3.0,
        neighbours: 2,
        ..Settings::default()
    };
    lab.sim.set_settings(settings.clone()).await.unwrap();
    assert_eq!(lab.sim.state().borrow().snapshot.settings, settings);
}

#[tokio::test]
async fn moves_queued_while_the_sim_is_busy_fold_into_the_latest() {
    let lab = lab(true);
    lab.gate.add_permits(1);
    lab.sim.add_node(0.0, 0.0).await.unwrap();
    let version = lab.sim.state().borrow().version;
    // The Sim is busy making n2 (held at the gate) while 20 moves of n1 queue up.
    let moves = (1..=20).map(|x| (NodeId(1), f64::from(x))).collect();
    for answer in queued_moves(&lab, moves).await {
        answer.expect("every mover gets its answer");
    }
    let state = lab.sim.state().borrow().clone();
    assert_eq!(state.snapshot.nodes[0].x, 20.0, "the latest position wins");
    assert_eq!(
        state.version,
        version + 2,
        "one change for n2, one for all 20 moves"
    );
    lab.assert_host_is_model();
}

/// Sends `moves` while the Sim is busy adding a node (held at the gate), so they queue up
/// together (`join_all` polls in order, so they are sent in order); their answers in order.
async fn queued_moves(lab: &Lab, moves: Vec<(NodeId, f64)>) -> Vec<Result<(), SimError>> {
    let busy = {
        let sim = lab.sim.clone();
        tokio::spawn(async move { sim.add_node(900.0, 900.0).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let answers = {
        let sim = lab.sim.clone();
        tokio::spawn(async move {
            futures_util::future::join_all(
                moves.into_iter().map(|(id, x)| sim.move_node(id, x, 300.0)),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    lab.gate.add_permits(1);
    busy.await.unwrap().unwrap();
    answers.await.unwrap()
}

#[tokio::test]
async fn moves_of_many_nodes_queued_together_are_one_change_and_answer_each_mover() {
    let lab = lab(true);
    lab.gate.add_permits(5);
    for i in 0..5 {
        lab.sim.add_node(f64::from(i) * 100.0, 0.0).await.unwrap();
    }
    let version = lab.sim.state().borrow().version;
    // Two moves of each of n1..n5: one change for all ten, each node at its latest.
    let moves = (0..10)
        .map(|i| (NodeId(i % 5 + 1), f64::from(i) * 10.0))
        .collect();
    for answer in queued_moves(&lab, moves).await {
        answer.expect("every mover gets its answer");
    }
    let state = lab.sim.state().borrow().clone();
    let xs: Vec<f64> = state.snapshot.nodes.iter().take(5).map(|n| n.x).collect();
    assert_eq!(
        xs,
        [50.0, 60.0, 70.0, 80.0, 90.0],
        "each node's latest position"
    );
    assert_eq!(
        state.version,
        version + 2,
        "one change for n6, one for the moves"
    );
    lab.assert_host_is_model();

    // A move that cannot be done fails alone: the others are still done.
    let answers = queued_moves(
        &lab,
        vec![(NodeId(1), 500.0), (NodeId(99), 0.0), (NodeId(2), 510.0)],
    )
    .await;
    assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
    assert!(
        matches!(
            answers[1],
            Err(SimError::Model(ModelError::UnknownNode(NodeId(99))))
        ),
        "{:?}",
        answers[1]
    );
    let state = lab.sim.state().borrow().clone();
    assert_eq!(
        (state.snapshot.nodes[0].x, state.snapshot.nodes[1].x),
        (500.0, 510.0)
    );
    lab.assert_host_is_model();
}

/// Random operations, a third of them with a host failure at a random step: after each,
/// whether it succeeded or not, the host holds exactly the model.
#[tokio::test]
async fn the_host_equals_the_model_after_every_operation_even_when_steps_fail() {
    for seed in 1..=8 {
        random_operations(seed, seed > 4).await;
    }
}

async fn random_operations(seed: u64, host: bool) {
    let lab = lab_with(false, host);
    if host {
        lab.host_joined().await;
    }
    let mut rng = Rng::new(seed);
    let (mut failed, mut done) = (0, 0);
    for _ in 0..400 {
        if rng.below(3) == 0 {
            let n = rng.below(12);
            lab.world().fail_after(n);
        }
        let ids: Vec<NodeId> = lab
            .sim
            .state()
            .borrow()
            .snapshot
            .nodes
            .iter()
            .map(|n| n.id)
            .collect();
        let pick = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize];
        let result = match rng.below(if host { 12 } else { 10 }) {
            0..=2 => lab
                .sim
                .add_node(rng.f64_in(0.0, 800.0), rng.f64_in(0.0, 600.0))
                .await
                .map(|_| ()),
            3..=4 if !ids.is_empty() => {
                let id = pick(&mut rng);
                lab.sim
                    .move_node(id, rng.f64_in(0.0, 800.0), rng.f64_in(0.0, 600.0))
                    .await
            }
            5 if ids.len() > 3 => lab.sim.remove_node(pick(&mut rng)).await,
            6 => {
                let links = lab.sim.state().borrow().snapshot.links.clone();
                if links.is_empty() {
                    continue;
                }
                let link = &links[rng.below(links.len() as u64) as usize];
                let pins = LinkPins {
                    latency_ms: Some(rng.f64_in(1.0, 400.0)),
                    ..LinkPins::default()
                };
                lab.sim.pin(link.pair.a(), link.pair.b(), pins).await
            }
            7 if ids.len() > 1 => {
                let (a, b) = (pick(&mut rng), pick(&mut rng));
                if a == b {
                    continue;
                }
                lab.sim.unpin(a, b, Some(LinkField::LatencyMs)).await
            }
            8 => {
                let settings = Settings {
                    neighbours: 1 + rng.below(5) as u32,
                    max_latency_ms: rng.f64_in(150.0, 500.0),
                    ..Settings::default()
                };
                lab.sim.set_settings(settings).await
            }
            9 => {
                // A whole new mesh, keeping some ids.
                let nodes = (0..rng.below(6))
                    .map(|i| NodeDoc {
                        id: Some(NodeId(1 + i as u32 * 2)),
                        name: None,
                        x: rng.f64_in(0.0, 800.0),
                        y: rng.f64_in(0.0, 600.0),
                    })
                    .collect();
                let topology = Topology {
                    settings: Settings::default(),
                    nodes,
                    pins: Vec::new(),
                    ..Topology::default()
                };
                lab.sim.load(topology, None).await
            }
            10 if !ids.is_empty() => {
                let link = (rng.below(3) > 0).then(|| ClientLink {
                    latency_ms: rng.f64_in(0.0, 500.0),
                    bandwidth_up_bps: rng.below(100_000),
                    bandwidth_down_bps: rng.below(100_000),
                    ..ClientLink::default()
                });
                lab.sim.set_client(pick(&mut rng), link).await
            }
            11 => {
                let link = ClientLink {
                    latency_ms: rng.f64_in(0.0, 500.0),
                    loss_pct: rng.f64_in(0.0, 5.0),
                    ..ClientLink::default()
                };
                lab.sim.set_client_default(link).await
            }
            _ => continue,
        };
        match result {
            Ok(()) => done += 1,
            Err(SimError::Host(_)) => failed += 1,
            Err(SimError::Model(_)) => {}
            Err(e) => panic!("unexpected: {e}"),
        }
        lab.world().disarm();
        lab.assert_host_is_model();
    }
    assert!(failed > 30 && done > 100, "{failed} failed, {done} done");
}

#[tokio::test]
async fn every_node_gets_its_client_links_and_settings_change_them() {
    let lab = lab_with(false, true);
    lab.host_joined().await;
    line(&lab).await;
    let (n1, n2) = (NodeId(1), NodeId(2));
    let slow = ClientLink {
        latency_ms: 300.0,
        bandwidth_up_bps: 32_000,
        bandwidth_down_bps: 64_000,
        ..ClientLink::default()
    };
    lab.sim.set_client(n1, Some(slow)).await.unwrap();
    lab.assert_host_is_model();
    let up = |w: &World, id| {
        w.links[&LinkKey {
            src: mac(HOST),
            dst: mac(id),
        }]
            .1
    };
    assert_eq!(up(&lab.world(), n1).bandwidth_bps, 32_000);
    assert_eq!(
        up(&lab.world(), n2).bandwidth_bps,
        0,
        "the default: unshaped"
    );

    // The default changes every node without its own settings.
    let default = ClientLink {
        latency_ms: 20.0,
        ..ClientLink::default()
    };
    lab.sim.set_client_default(default).await.unwrap();
    assert_eq!(up(&lab.world(), n2).latency_ms, 20.0);
    assert_eq!(up(&lab.world(), n1).latency_ms, 300.0);
    lab.sim.set_client(n1, None).await.unwrap();
    assert_eq!(up(&lab.world(), n1).latency_ms, 20.0);
    lab.assert_host_is_model();

    // Bad values and unknown nodes change nothing.
    let bad = ClientLink {
        loss_pct: 200.0,
        ..ClientLink::default()
    };
    assert!(matches!(
        lab.sim.set_client(n2, Some(bad)).await,
        Err(SimError::Model(_))
    ));
    assert!(matches!(
        lab.sim.set_client(NodeId(42), None).await,
        Err(SimError::Model(ModelError::UnknownNode(_)))
    ));
    // A removed node's client links go with it.
    lab.sim.remove_node(NodeId(3)).await.unwrap();
    lab.assert_host_is_model();
}

#[tokio::test]
async fn without_a_host_port_client_links_are_refused_in_words() {
    let lab = lab(false);
    line(&lab).await;
    let refused = lab
        .sim
        .set_client_default(ClientLink::default())
        .await
        .unwrap_err();
    assert!(refused.to_string().contains("no client links"), "{refused}");
}
