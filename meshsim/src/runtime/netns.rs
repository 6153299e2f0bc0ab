//! The netns backend: each node is a named network namespace `ms-<name>` (so
//! `ip netns exec ms-n1 ...` works) with a veth pair whose host side, also `ms-<name>`, is a
//! port of the bridge `ms-br0`. The host has the subnet's first address on the bridge.
//!
//! A Linux bridge takes at most 1,023 ports. A mesh that outgrows `ms-br0` gets more bridges
//! (`ms-br1`, ...), each joined to `ms-br0` by a trunk, a veth pair `ms-tkNa` / `ms-tkNb` whose
//! ports carry no classifier: a frame is still shaped exactly once, leaving the bridge at its
//! destination's port, whichever bridges it crossed before. The bridges form a star, so there
//! is no loop for the bridges to learn around.
//!
//! A process a workload starts in a node runs in the node's namespace, in a mount namespace
//! of its own where the workload's covers (`NodeNeeds::covers`) are bound over their
//! targets; confined (`Program::confinement`, see `runtime::confine`) it runs as the node's
//! own uid and sees the host's files read-only but its node directory; as root it shares
//! the host's filesystem.

use std::{
    collections::{HashMap, HashSet},
    io,
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    RuntimeError,
    backend::{Backend, BackendNode},
    confine::PrivateMounts,
    host_link::HostLink,
    names::RunPrefix,
    node::NodeNet,
    process::{ChildProcess, kill_processes_in, kill_processes_in_any},
};
use crate::{
    model::NodeId,
    net::{LinkInfo, NETNS_DIR, NetNs, Netlink, rps},
    run_config::Addressing,
    workload::host::{
        Cover, HostKind, NodeEntry, NodeHost, NodeNeeds, NodeProcess, Program, Spawning,
    },
};

/// How long the kernel gets to free the namespaces of a run's end (and with them the veths)
/// before what is left is deleted one by one...
const FREE_NAMESPACES_WITHIN: Duration = Duration::from_secs(30);
/// ...or sooner, once it has freed none for this long. A namespace can outlive every
/// process in it: a TCP connection its homeserver had open to a node removed earlier is
/// orphaned, retransmitting to nowhere, and holds the namespace until it times out.
const NO_PROGRESS_FOR: Duration = Duration::from_secs(2);

/// Node ports per bridge. A Linux bridge takes at most 1,023 ports (`BR_MAX_PORTS` is
/// 1024, port 0 unused); `ms-br0` also holds one trunk per other bridge.
pub const NODES_PER_BRIDGE: usize = 1000;

/// One of the mesh's bridges and how many node ports it has.
struct Bridge {
    index: u32,
    /// The trunk that joins it to the first bridge (none for the first).
    trunk: Option<u32>,
    nodes: usize,
}

pub struct NetnsBackend {
    /// The host's end of its client links.
    host: HostLink,
    addressing: Addressing,
    /// The run's names: `ms-n1`, `ms-br0`, ...
    prefix: RunPrefix,
    root: Netlink,
    bridges: Vec<Bridge>,
    nodes_per_bridge: usize,
    /// Each node's namespace and the bridge its port is on.
    nodes: HashMap<NodeId, (NetNs, usize)>,
}

impl NetnsBackend {
    /// Creates the bridge with the host's address. Fails if the bridge exists (see
    /// `cleanup`); nothing is left behind when it fails.
    pub async fn start(addressing: Addressing, prefix: RunPrefix) -> Result<Self, RuntimeError> {
        Self::start_with(addressing, prefix, NODES_PER_BRIDGE).await
    }

    /// [`NetnsBackend::start`] with `nodes_per_bridge` node ports per bridge (tests use a
    /// few, to cross bridges without a thousand nodes).
    pub async fn start_with(
        addressing: Addressing,
        prefix: RunPrefix,
        nodes_per_bridge: usize,
    ) -> Result<Self, RuntimeError> {
        let root = Netlink::connect()?;
        let first = prefix.bridge(0);
        if root.link_by_name(&first).await?.is_some() {
            return Err(RuntimeError::Leftover(format!("the bridge {first}")));
        }
        let bridge = root.create_bridge(&first).await?;
        // The host joins the mesh like a node: its address and MAC are on a veth whose peer
        // is a bridge port, so node -> host frames leave the bridge through a port where
        // the classifier and fq sit (its client links). The bridge gets a fixed MAC of its
        // own (it would otherwise take its lowest port's).
        let host = match HostLink::join(&root, bridge, &addressing, &prefix).await {
            Ok(host) => host,
            Err(e) => {
                let _ = root.delete_link(bridge).await;
                return Err(e);
            }
        };
        Ok(NetnsBackend {
            host,
            addressing,
            prefix,
            root,
            bridges: vec![Bridge {
                index: bridge,
                trunk: None,
                nodes: 0,
            }],
            nodes_per_bridge: nodes_per_bridge.max(1),
            nodes: HashMap::new(),
        })
    }

    /// A bridge with room for one more node port: the first that has one, or a new one
    /// trunked to the first.
    async fn bridge_with_room(&mut self) -> Result<usize, RuntimeError> {
        if let Some(i) = self
            .bridges
            .iter()
            .position(|b| b.nodes < self.nodes_per_bridge)
        {
            return Ok(i);
        }
        let n = self.bridges.len();
        let name = self.prefix.bridge(n);
        let index = self.root.create_bridge(&name).await?;
        let trunk = async {
            let (a, b) = self
                .root
                .create_veth_pair(&self.prefix.trunk(n, 'a'), &self.prefix.trunk(n, 'b'), None)
                .await?;
            self.root.set_master(a, self.bridges[0].index).await?;
            self.root.set_master(b, index).await?;
            self.root.set_up(a).await?;
            self.root.set_up(b).await?;
            Ok::<_, RuntimeError>(a)
        }
        .await;
        match trunk {
            Ok(trunk) => {
                tracing::info!(
                    "{name}: a bridge for nodes beyond {}",
                    n * self.nodes_per_bridge
                );
                self.bridges.push(Bridge {
                    index,
                    trunk: Some(trunk),
                    nodes: 0,
                });
                Ok(n)
            }
            Err(e) => {
                // The trunk's ends go with the bridge or on their own.
                if let Ok(Some(a)) = self.root.link_by_name(&self.prefix.trunk(n, 'a')).await {
                    let _ = self.root.delete_link(a.index).await;
                }
                let _ = self.root.delete_link(index).await;
                Err(e)
            }
        }
    }

    async fn build(
        &self,
        id: NodeId,
        ns: &NetNs,
        bridge: usize,
    ) -> Result<(u32, NodeNet), RuntimeError> {
        let ip = self.addressing.node(id)?;
        let port = self
            .root
            .create_veth(&self.prefix.node(id), "eth0", ns, Some(Addressing::mac(id)))
            .await?;
        self.root
            .set_master(port, self.bridges[bridge].index)
            .await?;
        self.root.set_up(port).await?;
        // Our end receives what the node sends: each flow on one CPU (see `rps`).
        rps::steer_host_by_flow(&self.prefix.node(id))?;
        let net = NodeNet::open(ns.clone()).await?;
        net.configure(ip, &self.addressing).await?;
        self.host.pin_node(&self.root, id, ip).await?;
        Ok((port, net))
    }

    /// Removes a node's namespace and our end of its veth, whatever state they are in.
    async fn tear_down(&self, id: NodeId) -> Result<(), RuntimeError> {
        let name = self.prefix.node(id);
        // Anything still running inside (say, started with `meshsim exec`) would keep the
        // namespace, and with it the veth, alive after the mount is gone.
        kill_processes_in(&format!("{NETNS_DIR}/{name}"));
        NetNs::delete(&name)?;
        // And so may a socket someone still holds in it: remove our end of the veth
        // regardless, which takes the peer with it.
        if let Some(link) = self.root.link_by_name(&name).await? {
            self.root.delete_link(link.index).await?;
        }
        Ok(())
    }
}

impl Backend for NetnsBackend {
    fn name(&self) -> &'static str {
        "netns"
    }

    /// Bridges are added as the mesh grows: the datapath's maps are the limit.
    fn room_for(&self, _nodes: usize) -> Result<(), String> {
        Ok(())
    }

    async fn create(&mut self, id: NodeId, needs: &NodeNeeds) -> Result<BackendNode, RuntimeError> {
        let bridge = self.bridge_with_room().await?;
        let name = self.prefix.node(id);
        let ns = NetNs::create(&name).map_err(RuntimeError::from_netns)?;
        match self.build(id, &ns, bridge).await {
            Ok((port, net)) => {
                self.bridges[bridge].nodes += 1;
                self.nodes.insert(id, (ns.clone(), bridge));
                let host = NetnsHost {
                    ns,
                    covers: needs.covers.clone(),
                };
                Ok(BackendNode {
                    port,
                    net,
                    host: Arc::new(host),
                })
            }
            Err(e) => {
                // Nothing half-made stays: the namespace takes eth0 and its veth peer with it.
                drop(ns);
                let _ = self.tear_down(id).await;
                Err(e)
            }
        }
    }

    async fn remove(&mut self, id: NodeId) -> Result<(), RuntimeError> {
        let (ns, bridge) = self
            .nodes
            .remove(&id)
            .ok_or(RuntimeError::UnknownNode(id))?;
        drop(ns);
        self.bridges[bridge].nodes -= 1;
        self.tear_down(id).await
    }

    /// Kills what runs in every node (one pass over /proc), unmounts every namespace, then
    /// lets the kernel free them: a dying namespace's devices are deleted in batches, veth
    /// peers included, far faster than one `RTM_DELLINK` (and its RCU grace period) per
    /// node. What has not gone after a while is deleted one by one.
    async fn remove_all(&mut self) -> Result<(), RuntimeError> {
        let names: Vec<String> = self.nodes.keys().map(|&id| self.prefix.node(id)).collect();
        self.nodes.clear();
        for bridge in &mut self.bridges {
            bridge.nodes = 0;
        }
        let paths: Vec<String> = names.iter().map(|n| format!("{NETNS_DIR}/{n}")).collect();
        kill_processes_in_any(&paths);
        for name in &names {
            NetNs::delete(name)?;
        }
        let ports: HashSet<&str> = names.iter().map(String::as_str).collect();
        let deadline = Instant::now() + FREE_NAMESPACES_WITHIN;
        let mut last = (usize::MAX, Instant::now());
        loop {
            let left: Vec<LinkInfo> = self
                .root
                .links_with_prefix(&self.prefix.names())
                .await?
                .into_iter()
                .filter(|l| ports.contains(l.name.as_str()))
                .collect();
            if left.is_empty() {
                return Ok(());
            }
            if left.len() < last.0 {
                last = (left.len(), Instant::now());
            }
            if Instant::now() >= deadline || last.1.elapsed() >= NO_PROGRESS_FOR {
                for link in left {
                    self.root.delete_link(link.index).await?;
                }
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The bridges, trunks first (deleting one end of a veth takes the other).
    fn host_port(&self) -> Option<u32> {
        Some(self.host.port)
    }

    async fn finish(&mut self) -> Result<(), RuntimeError> {
        HostLink::remove(&self.root, &self.prefix).await?;
        for bridge in self.bridges.iter().rev() {
            if let Some(trunk) = bridge.trunk {
                self.root.delete_link(trunk).await?;
            }
            self.root.delete_link(bridge.index).await?;
        }
        Ok(())
    }
}

/// A netns node, for workloads.
struct NetnsHost {
    ns: NetNs,
    covers: Vec<Cover>,
}

impl NodeHost for NetnsHost {
    fn kind(&self) -> HostKind {
        HostKind::Namespace
    }

    fn netns(&self) -> &NetNs {
        &self.ns
    }

    fn spawn<'a>(&'a self, program: &'a Program) -> Spawning<'a> {
        Box::pin(async move { self.spawn_now(program) })
    }

    fn entry(&self) -> Option<NodeEntry> {
        Some(NodeEntry {
            netns: self.ns.path().to_owned(),
            covers: self.covers.clone(),
        })
    }
}

impl NetnsHost {
    fn spawn_now(&self, program: &Program) -> io::Result<Box<dyn NodeProcess>> {
        let mut cmd = self.ns.command(&program.program);
        cmd.args(&program.args);
        if let Some(dir) = &program.dir {
            cmd.current_dir(dir);
        }
        // The API's token is meshsim's, not the node's.
        cmd.env_remove("MESHSIM_TOKEN");
        if let Some(c) = &program.confinement {
            cmd.env("HOME", &c.dir);
        }
        cmd.envs(program.env.iter().map(|(k, v)| (k, v)));
        let mounts = PrivateMounts::new(&self.covers, program.confinement.as_ref())?;
        Ok(Box::new(ChildProcess::spawn_in(cmd, &program.log, mounts)?))
    }
}
