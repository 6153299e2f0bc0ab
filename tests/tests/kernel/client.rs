//! Client links on the host kernel: the host joins the mesh like a node (its address on
//! `ms-host`, whose peer is a bridge port with the classifier), every node gets a link to
//! the host and one back, each counted on its own; strict mode still stops what is not a
//! link; a client link's settings are a map update.

use std::collections::BTreeMap;

use meshsim::{
    model::{ClientLink, HOST, NodeId},
    net::Netlink,
};
use meshsim_tests::{
    fixtures::line,
    growth, id,
    mesh::{MeshConfig, MeshLab},
};

const ECHO_FRAME: u64 = 98;

/// `ping` from the host itself.
fn ping_from_host(ip: &str, count: u32) -> std::process::Output {
    std::process::Command::new("ping")
        .args([
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            ip,
        ])
        .output()
        .expect("ping (apt-get install iputils-ping)")
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn the_host_reaches_every_node_over_its_own_counted_client_link() {
    let mesh = MeshLab::start(MeshConfig::default()).await;
    mesh.sim.load(line(), None).await.unwrap();
    let (n1, n3) = (id("n1"), id("n3"));
    let state = mesh.sim.state().borrow().clone();
    let host = state
        .host
        .clone()
        .expect("netns gives the host client links");
    assert_eq!((host.id, host.name.as_str()), (HOST, "host"));
    for n in [n1, n3] {
        for pair in [(HOST, n), (n, HOST)] {
            assert!(
                state.link_slots.contains_key(&pair),
                "no client link {pair:?}"
            );
        }
    }
    // The host's address is on its veth now, not on the bridge.
    let root = Netlink::connect().unwrap();
    assert!(root.link_by_name("ms-host").await.unwrap().is_some());

    // A slow, asymmetric client link on n1 is a map update: still no packet lost.
    let slow = ClientLink {
        latency_ms: 30.0,
        bandwidth_up_bps: 32_000,
        bandwidth_down_bps: 64_000,
        ..ClientLink::default()
    };
    mesh.sim.set_client(n1, Some(slow)).await.unwrap();

    // Each direction of each client link counts exactly the pings that crossed it (no
    // ARP: the host pins every node's MAC, and every node the host's).
    for (node, count) in [(n1, 5u64), (n3, 3)] {
        let before = mesh.sim.counters().await.unwrap();
        let out = ping_from_host(&mesh.ip(node), count as u32);
        assert!(out.status.success(), "host -> {node}: {out:?}");
        let after = mesh.sim.counters().await.unwrap();
        let grew: BTreeMap<(NodeId, NodeId), u64> = growth(&before, &after);
        assert_eq!(
            grew,
            BTreeMap::from([((HOST, node), count), ((node, HOST), count)]),
            "host <-> {node}: only its client link, each way"
        );
        let bytes = after.links[&(HOST, node)].bytes - before.links[&(HOST, node)].bytes;
        assert_eq!(bytes, count * ECHO_FRAME);
    }

    // n3's client link follows the default; n1 keeps its own.
    mesh.sim
        .set_client_default(ClientLink {
            loss_pct: 100.0,
            ..ClientLink::default()
        })
        .await
        .unwrap();
    let lost = ping_from_host(&mesh.ip(n3), 3);
    assert!(!lost.status.success(), "100 % loss on n3's client link");
    let fine = ping_from_host(&mesh.ip(n1), 2);
    assert!(
        fine.status.success(),
        "n1 has its own client link: {fine:?}"
    );
    let after = mesh.sim.counters().await.unwrap();
    assert!(after.links[&(HOST, n3)].dropped_loss >= 3, "losses counted");

    mesh.stop().await;
    assert!(
        root.link_by_name("ms-host").await.unwrap().is_none(),
        "the host's veth goes with the run"
    );
}
