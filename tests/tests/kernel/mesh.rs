//! `meshsim up` end to end on the host kernel, through the library: the Sim applies the
//! example topology with the netns runtime, real `ping` crosses the routed mesh, and the
//! per-link counters grow exactly along the Dijkstra path.
//!
//! These need root and use the real names (`ms-*`), so they take meshsim's run lock: they
//! refuse to run while a meshsim is running. `cargo xtask test` runs them.

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use meshsim::{
    model::{Model, NodeId, Topology},
    net::{Netlink, rps, sysctl},
    workload::host::NODE_GID,
};
use meshsim_tests::{
    fixtures::mesh6,
    growth, id,
    mesh::{MeshConfig, MeshLab},
};

const ECHO_FRAME: u64 = 98;

/// The example mesh, loaded into a fresh lab.
async fn start(topology: &Topology) -> MeshLab {
    let mesh = MeshLab::start(MeshConfig::default()).await;
    mesh.sim.load(topology.clone(), None).await.unwrap();
    mesh
}

fn path(model: &Model, from: NodeId, to: NodeId) -> Vec<NodeId> {
    let mut p = vec![from];
    while *p.last().unwrap() != to {
        p.push(model.next_hop(*p.last().unwrap(), to).expect("reachable"));
        assert!(p.len() <= 64, "routing loop");
    }
    p
}

/// Both directions of every hop on `path`.
fn hops(path: &[NodeId]) -> Vec<(NodeId, NodeId)> {
    path.windows(2)
        .flat_map(|w| [(w[0], w[1]), (w[1], w[0])])
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn ping_follows_the_shortest_path_and_reroutes() {
    let topology = mesh6();
    let mut model = Model::from_topology(&topology).unwrap();
    let (n1, n6) = (id("n1"), id("n6"));
    let first = path(&model, n1, n6);
    assert_eq!(
        first.len(),
        4,
        "the example's n1 -> n6 path is 3 hops: {first:?}"
    );
    let mesh = start(&topology).await;

    // No warm-up: every next hop has a static neighbour entry, so no ARP reply crosses a
    // link (it would count there) and not even the first packets wait for one.
    let before = mesh.sim.counters().await.unwrap();
    let out = mesh.ping(n1, n6, 5, "0.2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after = mesh.sim.counters().await.unwrap();
    let want: BTreeMap<_, _> = hops(&first).into_iter().map(|h| (h, 5)).collect();
    assert_eq!(
        growth(&before, &after),
        want,
        "counters grew off the path {first:?}"
    );
    for hop in hops(&first) {
        let bytes = after.links[&hop].bytes - before.links[&hop].bytes;
        assert_eq!(bytes, 5 * ECHO_FRAME, "bytes on {hop:?}");
    }

    // Move a middle node far away: the path changes while pings flow, and none is lost
    // after the switch (the one in flight may be).
    let (mover, to) = first[1..3]
        .iter()
        .flat_map(|&m| [(m, 50_000.0, 50_000.0), (m, -50_000.0, 50_000.0)])
        .find(|&(m, x, y)| {
            let mut trial = model.clone();
            trial.move_node(m, x, y).is_ok() && trial.next_hop(n1, n6).is_some()
        })
        .map(|(m, x, y)| (m, (x, y)))
        .expect("a middle node whose move keeps n1 and n6 connected");
    model.move_node(mover, to.0, to.1).unwrap();
    let second = path(&model, n1, n6);
    assert_ne!(second, first);
    let pinger = {
        let ns = mesh.ns(n1);
        let ip = mesh.ip(n6);
        std::thread::spawn(move || {
            ns.command("ping")
                .args(["-n", "-q", "-c", "30", "-i", "0.1", "-W", "1", &ip])
                .output()
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    mesh.sim.move_node(mover, to.0, to.1).await.unwrap();
    let out = pinger.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let received: u32 = text
        .split(" received")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(
        received >= 29,
        "lost more than the ping in flight while rerouting: {text}"
    );
    assert!(mesh.ping(n1, n6, 1, "0.2").status.success());
    let before = mesh.sim.counters().await.unwrap();
    assert!(mesh.ping(n1, n6, 5, "0.2").status.success());
    let after = mesh.sim.counters().await.unwrap();
    let want: BTreeMap<_, _> = hops(&second).into_iter().map(|h| (h, 5)).collect();
    assert_eq!(
        growth(&before, &after),
        want,
        "after the move the path is {second:?}"
    );

    // Remove a middle node of the new path: traffic reroutes around it, if the mesh allows.
    if let Some(&gone) = second[1..second.len() - 1].iter().find(|&&m| {
        let mut trial = model.clone();
        trial.remove_node(m).is_ok() && trial.next_hop(n1, n6).is_some()
    }) {
        model.remove_node(gone).unwrap();
        mesh.sim.remove_node(gone).await.unwrap();
        let third = path(&model, n1, n6);
        assert!(!third.contains(&gone));
        let out = mesh.ping(n1, n6, 3, "0.2");
        assert!(
            out.status.success(),
            "no route around {gone}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
    } else {
        panic!("the example has no middle node whose removal keeps n1 and n6 connected");
    }
    mesh.stop().await;
}

/// What the runtime gives every node: its sysctls (one trip into the namespace), receive
/// steering on every CPU, and a routing table equal to the model's next hops (the routes of
/// all nodes are written several nodes at once).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn every_node_gets_its_settings_and_exactly_the_models_routes() {
    let topology = mesh6();
    let model = Model::from_topology(&topology).unwrap();
    let mesh = start(&topology).await;
    let state = mesh.sim.state().borrow().clone();
    let ip_of = |id: NodeId| state.nodes[&id].ip;
    let node_ips: Vec<Ipv4Addr> = state.nodes.values().map(|n| n.ip).collect();
    let all_cpus = match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => "1",
        2 => "3",
        4 => "f",
        n => panic!("this test knows the masks of 1, 2 and 4 CPUs, not {n}"),
    };
    for node in model.nodes() {
        let ns = mesh.ns(node.id);
        let read = |key: &str| sysctl::read_ipv4(&ns, key).expect("read a sysctl");
        assert_eq!(read("ip_forward"), "1", "{}", node.id);
        for scope in ["all", "default", "eth0"] {
            for key in ["send_redirects", "accept_redirects"] {
                assert_eq!(
                    read(&format!("conf/{scope}/{key}")),
                    "0",
                    "{} {scope}/{key}",
                    node.id
                );
            }
        }
        assert_eq!(
            read("ping_group_range"),
            format!("{NODE_GID}\t{NODE_GID}"),
            "{}",
            node.id
        );
        let ipv6_off = ns
            .run(|| std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6"))
            .unwrap()
            .unwrap();
        assert_eq!(ipv6_off.trim(), "1", "{}", node.id);
        assert_eq!(
            rps::steering(&ns, "eth0").unwrap(),
            vec![all_cpus],
            "{}",
            node.id
        );

        let routes: BTreeMap<Ipv4Addr, Option<Ipv4Addr>> = Netlink::connect_in(&ns)
            .unwrap()
            .routes_v4()
            .await
            .unwrap()
            .into_iter()
            // The main table's routes to nodes (the other one is to the host).
            .filter(|r| r.prefix_len == 32 && node_ips.contains(&r.dst))
            .map(|r| (r.dst, r.gateway))
            .collect();
        let want: BTreeMap<Ipv4Addr, Option<Ipv4Addr>> = model
            .nodes()
            .filter(|other| other.id != node.id)
            .filter_map(|other| {
                let via = model.next_hop(node.id, other.id)?;
                Some((ip_of(other.id), Some(ip_of(via))))
            })
            .collect();
        assert_eq!(
            want.len(),
            model.nodes().len() - 1,
            "the example is connected"
        );
        assert_eq!(routes, want, "{}'s routing table", node.id);
    }
    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_forced_route_between_unlinked_nodes_is_stopped_at_l2() {
    let topology = mesh6();
    let model = Model::from_topology(&topology).unwrap();
    let (n1, n6) = (id("n1"), id("n6"));
    assert!(
        model.link(n1, n6).is_none(),
        "n1 and n6 must not be linked in the example"
    );
    let mesh = start(&topology).await;
    // Route n1's traffic for n6 straight at n6, as a user could by hand.
    let ns = mesh.ns(n1);
    let nl = Netlink::connect_in(&ns).unwrap();
    let eth0 = nl.link_by_name("eth0").await.unwrap().unwrap().index;
    let ip6 = mesh.ip(n6).parse().unwrap();
    nl.replace_route(ip6, ip6, eth0).await.unwrap();
    let before = mesh.sim.counters().await.unwrap();
    let out = mesh.ping(n1, n6, 3, "0.2");
    assert!(!out.status.success(), "n1 reached n6 without a link");
    let after = mesh.sim.counters().await.unwrap();
    // ARP for n6 goes out as a broadcast (passes); its unicast answer and the echoes die.
    assert!(after.global.unlinked_packets > before.global.unlinked_packets);
    assert_eq!(
        growth(&before, &after),
        BTreeMap::new(),
        "no link carried the forced traffic"
    );
    drop(nl);
    drop(ns);
    mesh.stop().await;
}

/// Five nodes in a line, 100 ms apart (nothing else is within reach).
fn five_in_a_line() -> Topology {
    let mut topology = Topology {
        settings: meshsim::model::Settings {
            max_latency_ms: 150.0,
            ..Default::default()
        },
        ..Topology::default()
    };
    for i in 0..5u32 {
        topology.nodes.push(meshsim::model::NodeDoc {
            id: Some(NodeId(i + 1)),
            name: None,
            x: 100.0 * f64::from(i),
            y: 0.0,
        });
    }
    topology
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_mesh_past_one_bridge_is_shaped_once_per_link() {
    // Two node ports per bridge: n1, n2 on ms-br0; n3, n4 on ms-br1; n5 on ms-br2, each
    // bridge trunked to ms-br0. A ping from n1 to n5 crosses every bridge.
    let mesh = MeshLab::with_small_bridges(MeshConfig::default(), 2).await;
    mesh.sim.load(five_in_a_line(), None).await.unwrap();
    let root = Netlink::connect().unwrap();
    for name in ["ms-br1", "ms-br2", "ms-tk1a", "ms-tk2b"] {
        assert!(root.link_by_name(name).await.unwrap().is_some(), "{name}");
    }
    let (n1, n5) = (id("n1"), id("n5"));
    let before = mesh.sim.counters().await.unwrap();
    let out = mesh.ping(n1, n5, 5, "0.2");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let after = mesh.sim.counters().await.unwrap();
    let path: Vec<NodeId> = (1..=5).map(NodeId).collect();
    // Each directed link counts each echo exactly once: the trunks carry no classifier.
    let want: BTreeMap<_, _> = hops(&path).into_iter().map(|h| (h, 5)).collect();
    // (The bridges flood a frame whose destination they have not learnt yet; the copies at
    // other nodes' ports are dropped there and counted as flooded, on no link.)
    assert_eq!(growth(&before, &after), want);
    mesh.stop().await;
    assert!(root.links_with_prefix("ms-").await.unwrap().is_empty());
}
