//! A small lab for tests that need real traffic: node namespaces on a bridge, with the
//! classifier at egress of each node's bridge-side veth.
//!
//! The bridge and the bridge-side veths live in a "hub" namespace of the test's own, not in
//! the root namespace, so a test can never touch a running meshsim or the host's links; the
//! guard removes every namespace it made (and with them every interface), also on panic.

use std::{
    net::Ipv4Addr,
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
};

use meshsim::{
    datapath::{Datapath, DatapathOptions, LinkShape},
    net::{FqOptions, FqSupport, NetNs, Netlink, probe_fq, rps, sysctl},
};
use meshsim_common::LinkKey;

static LABS: AtomicU32 = AtomicU32::new(0);

pub struct Node {
    pub name: String,
    pub ns: NetNs,
    pub nl: Netlink,
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    /// The bridge-side veth, in the hub namespace: where the classifier runs.
    pub port: u32,
    /// `eth0` inside the node.
    pub eth0: u32,
}

pub struct Lab {
    pub hub: NetNs,
    pub hub_nl: Netlink,
    pub nodes: Vec<Node>,
    pub dp: Datapath,
    pub fq: bool,
}

impl Lab {
    /// `n` nodes on one bridge, none linked yet. With `fq`, fq is put on every port and the
    /// kernel must have it.
    pub async fn new(n: usize, fq: bool) -> Lab {
        let tag = format!(
            "mt{}x{}",
            std::process::id() % 100_000,
            LABS.fetch_add(1, Ordering::Relaxed)
        );
        let hub = NetNs::create(&format!("{tag}hub")).expect("create hub namespace (run as root)");
        let mut lab = Lab {
            hub_nl: Netlink::connect_in(&hub).unwrap(),
            hub,
            nodes: Vec::new(),
            dp: Datapath::load(DatapathOptions::default()).expect("load the classifier"),
            fq,
        };
        if fq {
            assert_eq!(
                probe_fq().await,
                FqSupport::Available,
                "this kernel has no sch_fq"
            );
        }
        let bridge = lab.hub_nl.create_bridge("br0").await.unwrap();
        for i in 0..n {
            let name = format!("{tag}n{}", i + 1);
            let ns = NetNs::create(&name).unwrap();
            let mac = [0x02, 0x6d, 0, 0, 0, i as u8 + 1];
            let port = lab
                .hub_nl
                .create_veth(&format!("p{}", i + 1), "eth0", &ns, Some(mac))
                .await
                .unwrap();
            lab.hub_nl.set_master(port, bridge).await.unwrap();
            lab.hub_nl.set_up(port).await.unwrap();
            let nl = Netlink::connect_in(&ns).unwrap();
            let eth0 = nl
                .link_by_name("eth0")
                .await
                .unwrap()
                .expect("eth0 in node")
                .index;
            sysctl::disable_ipv6(&ns).unwrap();
            nl.set_up(eth0).await.unwrap();
            let ip = Ipv4Addr::new(10, 99, 0, i as u8 + 1);
            nl.add_address(eth0, ip, 32).await.unwrap();
            sysctl::enable_forwarding(&ns).unwrap();
            sysctl::disable_redirects(&ns, &["eth0"]).unwrap();
            // As meshsim's nodes do: one flow, one CPU (runtime::node).
            rps::steer_by_flow(&ns, "eth0").unwrap();
            // The classifier is attached from inside the hub, where the port's index means it.
            let dp = &mut lab.dp;
            lab.hub.run(|| dp.attach_egress(port)).unwrap().unwrap();
            if fq {
                lab.hub_nl
                    .replace_root_fq(port, &FqOptions::default())
                    .await
                    .unwrap();
            }
            lab.dp.upsert_node(mac, i as u32, port).unwrap();
            lab.nodes.push(Node {
                name,
                ns,
                nl,
                ip,
                mac,
                port,
                eth0,
            });
        }
        // Static neighbours: no ARP, so every frame on a link is traffic the test sent.
        for a in &lab.nodes {
            for b in &lab.nodes {
                if a.ip != b.ip {
                    a.nl.set_neighbour(a.eth0, b.ip, b.mac).await.unwrap();
                }
            }
        }
        lab
    }

    pub fn key(&self, from: usize, to: usize) -> LinkKey {
        LinkKey {
            src: self.nodes[from].mac,
            dst: self.nodes[to].mac,
        }
    }

    /// Links `a` and `b` both ways with `shape`, and routes each to the other directly.
    pub async fn link(&mut self, a: usize, b: usize, shape: &LinkShape) {
        for (x, y) in [(a, b), (b, a)] {
            self.dp
                .upsert_link(self.key(x, y), self.nodes[y].port, shape)
                .unwrap();
            self.route(x, y, y).await;
        }
    }

    /// Routes `from`'s traffic for `to` through `via`.
    pub async fn route(&self, from: usize, to: usize, via: usize) {
        let n = &self.nodes[from];
        n.nl.replace_route(self.nodes[to].ip, self.nodes[via].ip, n.eth0)
            .await
            .unwrap();
    }

    /// Runs a program inside node `i`.
    pub fn run(&self, i: usize, program: &str, args: &[&str]) -> Output {
        self.nodes[i]
            .ns
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    pub fn ping(&self, from: usize, to: usize, count: u32, interval: &str) -> Output {
        let to = self.nodes[to].ip.to_string();
        self.run(
            from,
            "ping",
            &[
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                interval,
                "-W",
                "2",
                &to,
            ],
        )
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for n in &self.nodes {
            let _ = NetNs::delete(n.ns.name());
        }
        let _ = NetNs::delete(self.hub.name());
    }
}
