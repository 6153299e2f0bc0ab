//! Privileged tests of `meshsim::net` against the real kernel: namespaces, a bridge, veth
//! pairs, addresses, routes, sysctls, qdiscs and a real ping.
//!
//! Each test makes its own uniquely named namespaces (`ms-t<pid><n>...`) and removes them,
//! and any interface it put in the host's namespace, through a guard that also runs when
//! the test fails. Bridges and host-side veths live in a per-test "hub" namespace, so the
//! host's own namespace is only touched by the test that is about it.

use std::{
    net::Ipv4Addr,
    os::unix::fs::MetadataExt,
    path::Path,
    process::Output,
    sync::atomic::{AtomicU32, Ordering},
};

use meshsim::net::{
    FqOptions, FqSupport, NetNs, NetNsError, Netlink, NetlinkError, PROBE_PREFIX, Route4, probe_fq,
    rps, sysctl,
};

/// A base name unique to this test: `ms-t` + 7-digit pid + 2-digit counter is 13 bytes,
/// which leaves 2 for suffixes within the 15-byte interface name limit.
fn unique_base() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    format!(
        "ms-t{:07}{:02}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// What a test created; removed on drop, whether the test passed or not.
#[derive(Default)]
struct Cleanup {
    namespaces: Vec<String>,
    root_links: Vec<String>,
}

impl Cleanup {
    fn netns(&mut self, name: &str) -> NetNs {
        let ns = NetNs::create(name).unwrap_or_else(|e| panic!("create namespace {name}: {e}"));
        self.namespaces.push(name.to_owned());
        ns
    }

    fn root_link(&mut self, name: &str) {
        self.root_links.push(name.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.root_links.is_empty() {
            // Drop cannot await, and we may be inside the test's runtime: use a thread with
            // a runtime of its own.
            let links = std::mem::take(&mut self.root_links);
            let deleted = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    let netlink = Netlink::connect()?;
                    for name in &links {
                        if let Some(link) = netlink.link_by_name(name).await? {
                            netlink.delete_link(link.index).await?;
                        }
                    }
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
                })
            })
            .join();
            match deleted {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("cleanup: could not delete test interfaces: {e}"),
                Err(_) => eprintln!("cleanup: the interface cleanup thread panicked"),
            }
        }
        for name in self.namespaces.drain(..) {
            if let Err(e) = NetNs::delete(&name) {
                eprintln!("cleanup: could not delete namespace {name}: {e}");
            }
        }
    }
}

/// One emulated node: a namespace whose `eth0` is a veth into the hub's bridge.
struct Node {
    ns: NetNs,
    netlink: Netlink,
    ip: Ipv4Addr,
    mac: [u8; 6],
    eth0: u32,
    host_side: u32,
}

/// A hub namespace holding a bridge, and `n` nodes attached to it, with addresses but no
/// routes. Fields drop in order, so the handles go before `cleanup` deletes namespaces.
struct Lab {
    nodes: Vec<Node>,
    hub: Netlink,
    bridge: u32,
    base: String,
    _cleanup: Cleanup,
}

impl Lab {
    async fn new(n: u8) -> Lab {
        let base = unique_base();
        let mut cleanup = Cleanup::default();
        let hub_ns = cleanup.netns(&format!("{base}hub"));
        let hub = Netlink::connect_in(&hub_ns).expect("connect in the hub namespace");
        let bridge = hub
            .create_bridge(&format!("{base}br"))
            .await
            .expect("create bridge");
        let mut nodes = Vec::new();
        for i in 1..=n {
            let ns = cleanup.netns(&format!("{base}n{i}"));
            let mac = [0x02, 0, 0, 0, 0, i];
            let ip = Ipv4Addr::new(10, 77, 0, 1 + i);
            let host_side = hub
                .create_veth(&format!("{base}v{i}"), "eth0", &ns, Some(mac))
                .await
                .expect("create veth");
            hub.set_master(host_side, bridge)
                .await
                .expect("attach veth to bridge");
            hub.set_up(host_side).await.expect("bring host side up");
            let netlink = Netlink::connect_in(&ns).expect("connect in node namespace");
            let eth0 = netlink
                .link_by_name("eth0")
                .await
                .expect("look up eth0")
                .expect("eth0 exists in the node");
            assert_eq!(eth0.mac, mac, "the peer got the MAC it was created with");
            let lo = netlink
                .link_by_name("lo")
                .await
                .expect("look up lo")
                .expect("every namespace has lo");
            netlink.set_up(lo.index).await.expect("bring lo up");
            netlink.set_up(eth0.index).await.expect("bring eth0 up");
            netlink
                .add_address(eth0.index, ip, 32)
                .await
                .expect("add address");
            nodes.push(Node {
                ns,
                netlink,
                ip,
                mac,
                eth0: eth0.index,
                host_side,
            });
        }
        drop(hub_ns);
        Lab {
            nodes,
            hub,
            bridge,
            base,
            _cleanup: cleanup,
        }
    }

    /// Routes node `from`'s traffic for node `to` via node `via` (indexes into `nodes`).
    async fn route(&self, from: usize, to: usize, via: usize) {
        let node = &self.nodes[from];
        node.netlink
            .replace_route(self.nodes[to].ip, self.nodes[via].ip, node.eth0)
            .await
            .expect("replace route");
    }
}

/// `ping -c1 -W1 dst` inside `ns`; busybox's ping where iputils' is not installed.
fn ping(ns: &NetNs, dst: Ipv4Addr) -> Output {
    let on_path = |program: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
    };
    let mut command = if on_path("ping") {
        ns.command("ping")
    } else if on_path("busybox") {
        let mut command = ns.command("busybox");
        command.arg("ping");
        command
    } else {
        panic!("neither ping nor busybox is installed: install iputils-ping to run this test");
    };
    command
        .args(["-c1", "-W1", &dst.to_string()])
        .output()
        .expect("run ping")
}

fn assert_ping_ok(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what}: ping failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

fn root_sysctl(key: &str) -> String {
    std::fs::read_to_string(Path::new("/proc/sys/net/ipv4").join(key))
        .expect("read root sysctl")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and a kernel with netns: run with cargo xtask test"]
async fn two_nodes_on_a_bridge_reach_each_other() {
    let lab = Lab::new(2).await;
    lab.route(0, 1, 1).await;
    lab.route(1, 0, 0).await;
    let (n1, n2) = (&lab.nodes[0], &lab.nodes[1]);

    let routes = n1.netlink.routes_v4().await.expect("list routes");
    let to_n2 = Route4 {
        dst: n2.ip,
        prefix_len: 32,
        gateway: Some(n2.ip),
        ifindex: Some(n1.eth0),
    };
    assert_eq!(
        routes,
        vec![to_n2],
        "a /32 address adds no connected route; only ours is there"
    );

    n1.netlink
        .add_address(n1.eth0, n1.ip, 32)
        .await
        .expect("adding the same address again is fine");
    assert_eq!(
        n1.netlink
            .addresses_v4(n1.eth0)
            .await
            .expect("list addresses"),
        vec![(n1.ip, 32)]
    );

    let hub_links = lab
        .hub
        .links_with_prefix(&lab.base)
        .await
        .expect("list hub links");
    let names: Vec<&str> = hub_links.iter().map(|link| link.name.as_str()).collect();
    let base = &lab.base;
    assert_eq!(
        names,
        vec![
            format!("{base}br"),
            format!("{base}v1"),
            format!("{base}v2")
        ]
    );
    assert_eq!(hub_links[0].index, lab.bridge);
    assert_eq!(hub_links[1].index, n1.host_side);
    assert_ne!(hub_links[1].mac, n1.mac, "the host side has its own MAC");

    assert_ping_ok(&ping(&n1.ns, n2.ip), "n1 -> n2");
    assert_ping_ok(&ping(&n2.ns, n1.ip), "n2 -> n1");
    let unrouted = ping(&n1.ns, Ipv4Addr::new(10, 77, 0, 99));
    assert!(
        !unrouted.status.success(),
        "ping to an address with no route must fail"
    );
}

#[tokio::test]
#[ignore = "needs root and a kernel with netns: run with cargo xtask test"]
async fn receive_steering_is_written_in_the_namespace_and_mounts_nothing() {
    let lab = Lab::new(1).await;
    let ns = &lab.nodes[0].ns;
    let mounts = || std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    let before = mounts();
    let all_cpus = match std::thread::available_parallelism().map_or(1, |n| n.get()) {
        1 => "1",
        2 => "3",
        4 => "f",
        n => panic!("this test knows the masks of 1, 2 and 4 CPUs, not {n}"),
    };

    assert_eq!(
        rps::steering(ns, "eth0").expect("read"),
        vec!["0"],
        "the default"
    );
    rps::steer_by_flow(ns, "eth0").expect("steer");
    assert_eq!(rps::steering(ns, "eth0").expect("read"), vec![all_cpus]);
    rps::steer_off(ns, "eth0").expect("steer off");
    assert_eq!(rps::steering(ns, "eth0").expect("read"), vec!["0"]);
    assert_eq!(mounts(), before, "no mount is left on the host");

    let err = rps::steer_by_flow(ns, "nosuch0").expect_err("no such interface");
    assert!(
        err.to_string()
            .contains("could not list the receive queues")
            && err.to_string().contains("nosuch0"),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs root and a kernel with netns: run with cargo xtask test"]
async fn a_forwarding_node_carries_traffic_between_two_others() {
    let root_forwarding = root_sysctl("ip_forward");
    let lab = Lab::new(3).await;
    let (n1, n2, n3) = (&lab.nodes[0], &lab.nodes[1], &lab.nodes[2]);
    sysctl::enable_forwarding(&n2.ns).expect("enable forwarding");
    sysctl::disable_redirects(&n2.ns, &["eth0"]).expect("disable redirects");
    // n1 and n3 are not neighbours: each reaches the other through n2.
    lab.route(0, 1, 1).await;
    lab.route(0, 2, 1).await;
    lab.route(1, 0, 0).await;
    lab.route(1, 2, 2).await;
    lab.route(2, 1, 1).await;
    lab.route(2, 0, 1).await;

    assert_eq!(sysctl::read_ipv4(&n2.ns, "ip_forward").expect("read"), "1");
    assert_eq!(
        sysctl::read_ipv4(&n2.ns, "conf/eth0/forwarding").expect("read"),
        "1"
    );
    for scope in ["all", "default", "eth0"] {
        for key in ["send_redirects", "accept_redirects"] {
            assert_eq!(
                sysctl::read_ipv4(&n2.ns, &format!("conf/{scope}/{key}")).expect("read"),
                "0",
                "{scope}/{key}"
            );
        }
    }
    assert_eq!(
        root_sysctl("ip_forward"),
        root_forwarding,
        "the host's forwarding is untouched"
    );

    let out = assert_ping_ok(&ping(&n1.ns, n3.ip), "n1 -> n3 via n2");
    assert!(
        out.contains("ttl=63"),
        "the reply crossed exactly one router:\n{out}"
    );
    let out = assert_ping_ok(&ping(&n1.ns, n2.ip), "n1 -> n2");
    assert!(
        out.contains("ttl=64"),
        "a neighbour is reached directly:\n{out}"
    );

    let err = sysctl::disable_redirects(&n1.ns, &["nosuch0"]).expect_err("no such interface");
    assert!(
        err.to_string().contains("check that the interface exists"),
        "{err}"
    );
}

#[tokio::test]
#[ignore = "needs root and a kernel with netns: run with cargo xtask test"]
async fn veth_from_the_root_namespace_puts_its_peer_in_the_node() {
    let base = unique_base();
    let mut cleanup = Cleanup::default();
    let ns = cleanup.netns(&format!("{base}n1"));
    let host_name = format!("{base}rt");
    cleanup.root_link(&host_name);
    let root = Netlink::connect().expect("connect in the root namespace");
    let inside = Netlink::connect_in(&ns).expect("connect in the node namespace");
    let peer_mac = [0x02, 0xaa, 0, 0, 0, 1];

    let host = root
        .create_veth(&host_name, "eth0", &ns, Some(peer_mac))
        .await
        .expect("create veth");
    let found = root
        .link_by_name(&host_name)
        .await
        .expect("look up")
        .expect("host side in root namespace");
    assert_eq!(found.index, host);
    assert_eq!(
        root.link_by_name("eth0-not-here").await.expect("look up"),
        None
    );
    let peer = inside
        .link_by_name("eth0")
        .await
        .expect("look up")
        .expect("peer inside the namespace");
    assert_eq!(peer.mac, peer_mac);

    let host_mac = [0x02, 0xbb, 0, 0, 0, 1];
    root.set_mac(host, host_mac).await.expect("set MAC");
    assert_eq!(
        root.link_by_name(&host_name)
            .await
            .expect("look up")
            .map(|l| l.mac),
        Some(host_mac)
    );
    let err = root
        .set_mac(host, [0x01, 0, 0, 0, 0, 1])
        .await
        .expect_err("multicast MAC");
    assert!(matches!(err, NetlinkError::InvalidMac { .. }), "{err}");

    let err = root
        .create_veth(&host_name, "eth1", &ns, None)
        .await
        .expect_err("name taken");
    assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
    let err = root
        .create_veth("this-name-is-too-long", "eth1", &ns, None)
        .await
        .expect_err("long name");
    assert!(matches!(err, NetlinkError::Name(_)), "{err}");

    root.delete_link(host).await.expect("delete veth");
    assert_eq!(root.link_by_name(&host_name).await.expect("look up"), None);
    assert_eq!(
        inside.link_by_name("eth0").await.expect("look up"),
        None,
        "deleting one end deletes both"
    );
    root.delete_link(host)
        .await
        .expect("deleting a deleted link is fine");
}

#[tokio::test]
#[ignore = "needs root and a kernel with netns: run with cargo xtask test"]
async fn replace_route_is_idempotent_and_delete_route_tolerates_missing() {
    let lab = Lab::new(1).await;
    let node = &lab.nodes[0];
    let dst = Ipv4Addr::new(10, 77, 1, 1);
    let (via_a, via_b) = (Ipv4Addr::new(10, 77, 0, 50), Ipv4Addr::new(10, 77, 0, 51));
    let routes_to_dst = || async {
        let routes = node.netlink.routes_v4().await.expect("list routes");
        routes
            .into_iter()
            .filter(|route| route.dst == dst)
            .collect::<Vec<_>>()
    };
    let expected = |via| {
        vec![Route4 {
            dst,
            prefix_len: 32,
            gateway: Some(via),
            ifindex: Some(node.eth0),
        }]
    };

    node.netlink
        .replace_route(dst, via_a, node.eth0)
        .await
        .expect("add route");
    node.netlink
        .replace_route(dst, via_a, node.eth0)
        .await
        .expect("same route again");
    assert_eq!(routes_to_dst().await, expected(via_a));
    node.netlink
        .replace_route(dst, via_b, node.eth0)
        .await
        .expect("change next hop");
    assert_eq!(routes_to_dst().await, expected(via_b));

    node.netlink.delete_route(dst).await.expect("delete route");
    assert_eq!(routes_to_dst().await, vec![]);
    node.netlink
        .delete_route(dst)
        .await
        .expect("deleting a deleted route is fine");
    node.netlink
        .delete_route(Ipv4Addr::new(10, 99, 9, 9))
        .await
        .expect("deleting a route never added is fine");

    let err = node
        .netlink
        .replace_route(dst, via_a, 999_999)
        .await
        .expect_err("no such interface");
    assert_eq!(err.errno(), Some(libc::ENODEV), "{err}");
}

#[tokio::test]
#[ignore = "needs root and a kernel with netns: run with cargo xtask test"]
async fn deleting_what_is_not_there_is_not_an_error() {
    let base = unique_base();
    let mut cleanup = Cleanup::default();
    let ns = cleanup.netns(&format!("{base}n1"));
    let netlink = Netlink::connect_in(&ns).expect("connect");
    netlink.delete_link(424_242).await.expect("missing link");
    netlink
        .delete_route(Ipv4Addr::new(10, 1, 2, 3))
        .await
        .expect("missing route");
    let lo = netlink
        .link_by_name("lo")
        .await
        .expect("look up")
        .expect("lo");
    netlink
        .delete_root_qdisc(lo.index)
        .await
        .expect("lo has only its default qdisc");
    NetNs::delete(&format!("{base}never")).expect("missing namespace");
}

#[tokio::test]
#[ignore = "needs root and a kernel with netns: run with cargo xtask test"]
async fn fq_probe_answers_and_leaves_nothing_behind() {
    let support = probe_fq().await;
    eprintln!("fq support: {support:?}");
    assert!(
        matches!(support, FqSupport::Available | FqSupport::Missing),
        "the probe could not decide: {support:?}"
    );
    assert_eq!(
        NetNs::list_with_prefix(PROBE_PREFIX).expect("list namespaces"),
        Vec::<String>::new()
    );
    let root = Netlink::connect().expect("connect");
    assert_eq!(
        root.links_with_prefix(PROBE_PREFIX)
            .await
            .expect("list links"),
        vec![]
    );
}

#[tokio::test]
#[ignore = "needs root and a kernel with netns: run with cargo xtask test"]
async fn fq_is_installed_or_reported_missing() {
    let lab = Lab::new(1).await;
    let veth = lab.nodes[0].host_side;
    assert_eq!(
        lab.hub
            .root_qdisc_kind(veth)
            .await
            .expect("read qdisc")
            .as_deref(),
        Some("noqueue")
    );
    match lab.hub.replace_root_fq(veth, &FqOptions::default()).await {
        Ok(()) => {
            assert_eq!(
                lab.hub
                    .root_qdisc_kind(veth)
                    .await
                    .expect("read qdisc")
                    .as_deref(),
                Some("fq")
            );
            let changed = FqOptions {
                flow_limit: 20_000,
                ..FqOptions::default()
            };
            lab.hub
                .replace_root_fq(veth, &changed)
                .await
                .expect("change fq in place");
            lab.hub.delete_root_qdisc(veth).await.expect("delete fq");
            assert_eq!(
                lab.hub
                    .root_qdisc_kind(veth)
                    .await
                    .expect("read qdisc")
                    .as_deref(),
                Some("noqueue")
            );
        }
        Err(err @ NetlinkError::FqUnsupported { .. }) => {
            eprintln!("this kernel has no fq: {err}");
            assert!(err.to_string().contains("CONFIG_NET_SCH_FQ"), "{err}");
            assert_eq!(
                lab.hub
                    .root_qdisc_kind(veth)
                    .await
                    .expect("read qdisc")
                    .as_deref(),
                Some("noqueue")
            );
        }
        Err(err) => panic!("installing fq failed for another reason: {err}"),
    }
    lab.hub
        .delete_root_qdisc(veth)
        .await
        .expect("nothing to delete is fine");
}

#[tokio::test]
#[ignore = "needs root and a kernel with netns: run with cargo xtask test"]
async fn namespaces_are_created_entered_listed_and_deleted() {
    let base = unique_base();
    let mut cleanup = Cleanup::default();
    let name = format!("{base}n1");
    let ns = cleanup.netns(&name);
    assert_eq!(ns.path(), Path::new("/run/netns").join(&name));
    assert!(matches!(
        NetNs::create(&name),
        Err(NetNsError::AlreadyExists { .. })
    ));
    assert_eq!(
        NetNs::list_with_prefix(&base).expect("list"),
        vec![name.clone()]
    );

    // The namespace's identity is its nsfs inode: compare what each view reports.
    let inode = ns.file().metadata().expect("stat namespace").ino();
    let expected = format!("net:[{inode}]");
    let seen = ns
        .run(|| std::fs::read_link("/proc/thread-self/ns/net"))
        .expect("enter")
        .expect("readlink");
    assert_eq!(seen.to_string_lossy(), expected);
    let root = std::fs::read_link("/proc/thread-self/ns/net").expect("readlink");
    assert_ne!(
        root.to_string_lossy(),
        expected,
        "the caller's thread stays where it was"
    );
    let output = ns
        .command("readlink")
        .arg("/proc/self/ns/net")
        .output()
        .expect("run readlink");
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), expected);

    let borrowed = [1, 2, 3];
    assert_eq!(
        ns.run(|| borrowed.iter().sum::<i32>()).expect("enter"),
        6,
        "run can borrow"
    );

    let opened = NetNs::open(&name).expect("open");
    assert_eq!(opened.file().metadata().expect("stat").ino(), inode);
    drop(opened);
    ns.remove().expect("remove");
    assert!(matches!(
        NetNs::open(&name),
        Err(NetNsError::NotFound { .. })
    ));
    assert_eq!(
        NetNs::list_with_prefix(&base).expect("list"),
        Vec::<String>::new()
    );

    let stale = format!("{base}st");
    cleanup.namespaces.push(stale.clone());
    std::fs::write(Path::new("/run/netns").join(&stale), b"").expect("make a leftover file");
    let err = NetNs::open(&stale).expect_err("a plain file is not a namespace");
    assert!(matches!(err, NetNsError::NotANamespace { .. }), "{err}");
    NetNs::delete(&stale).expect("delete removes a leftover file");
    assert!(!Path::new("/run/netns").join(&stale).exists());
}
