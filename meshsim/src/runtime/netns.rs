//! The netns backend: each node is a named network namespace `ms-<name>` (so
//! `ip netns exec ms-n1 ...` works) with a veth pair whose host side, also `ms-<name>`, is a
//! port of the bridge `ms-br0`. The host has the subnet's first address on the bridge.
//!
//! A process a workload starts in a node runs in the node's namespace, in a mount namespace
//! of its own where the workload's covers (`NodeNeeds::covers`) are bound over their
//! targets; it shares the host's filesystem otherwise.

use std::{collections::HashMap, io, path::Path, sync::Arc};

use super::{
    RuntimeError,
    backend::{Backend, BackendNode},
    names::{BRIDGE, PREFIX},
    node::NodeNet,
    process::{ChildProcess, kill_processes_in, with_private_files},
};
use crate::{
    model::NodeId,
    net::{NETNS_DIR, NetNs, Netlink},
    run_config::Addressing,
    workload::host::{Cover, HostKind, NodeHost, NodeNeeds, NodeProcess, Program, Spawning},
};

/// A Linux bridge takes at most this many ports (`BR_MAX_PORTS` is 1024, port 0 unused).
pub const BRIDGE_PORTS: usize = 1023;

pub struct NetnsBackend {
    addressing: Addressing,
    root: Netlink,
    bridge: u32,
    nodes: HashMap<NodeId, NetNs>,
}

impl NetnsBackend {
    /// Creates the bridge with the host's address. Fails if the bridge exists (see
    /// `cleanup`); nothing is left behind when it fails.
    pub async fn start(addressing: Addressing) -> Result<Self, RuntimeError> {
        let root = Netlink::connect()?;
        if root.link_by_name(BRIDGE).await?.is_some() {
            return Err(RuntimeError::Leftover(format!("the bridge {BRIDGE}")));
        }
        let bridge = root.create_bridge(BRIDGE).await?;
        if let Err(e) = root
            .add_address(bridge, addressing.host(), addressing.prefix_len())
            .await
        {
            let _ = root.delete_link(bridge).await;
            return Err(e.into());
        }
        Ok(NetnsBackend {
            addressing,
            root,
            bridge,
            nodes: HashMap::new(),
        })
    }

    async fn build(&self, id: NodeId, ns: &NetNs) -> Result<(u32, NodeNet), RuntimeError> {
        let ip = self.addressing.node(id)?;
        let port = self
            .root
            .create_veth(&port_name(id), "eth0", ns, Some(Addressing::mac(id)))
            .await?;
        self.root.set_master(port, self.bridge).await?;
        self.root.set_up(port).await?;
        let net = NodeNet::open(ns.clone()).await?;
        net.configure(ip, self.addressing.host()).await?;
        Ok((port, net))
    }

    /// Removes a node's namespace and our end of its veth, whatever state they are in.
    async fn tear_down(&self, id: NodeId) -> Result<(), RuntimeError> {
        let name = port_name(id);
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

/// The namespace and the host side of the veth of node `id` share this name.
fn port_name(id: NodeId) -> String {
    format!("{PREFIX}{}", id.name())
}

impl Backend for NetnsBackend {
    fn name(&self) -> &'static str {
        "netns"
    }

    fn room_for(&self, nodes: usize) -> Result<(), String> {
        if nodes > BRIDGE_PORTS {
            return Err(format!(
                "the mesh bridge takes at most {BRIDGE_PORTS} nodes: remove nodes first"
            ));
        }
        Ok(())
    }

    async fn create(&mut self, id: NodeId, needs: &NodeNeeds) -> Result<BackendNode, RuntimeError> {
        let name = port_name(id);
        let ns = NetNs::create(&name).map_err(RuntimeError::from_netns)?;
        match self.build(id, &ns).await {
            Ok((port, net)) => {
                self.nodes.insert(id, ns.clone());
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
        let ns = self
            .nodes
            .remove(&id)
            .ok_or(RuntimeError::UnknownNode(id))?;
        drop(ns);
        self.tear_down(id).await
    }

    async fn finish(&mut self) -> Result<(), RuntimeError> {
        self.root.delete_link(self.bridge).await?;
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
}

impl NetnsHost {
    fn spawn_now(&self, program: &Program) -> io::Result<Box<dyn NodeProcess>> {
        let mut cmd = self.ns.command(&program.program);
        cmd.args(&program.args);
        if let Some(dir) = &program.dir {
            cmd.current_dir(dir);
        }
        cmd.envs(program.env.iter().map(|(k, v)| (k, v)));
        let binds: Vec<(&Path, &Path)> = self
            .covers
            .iter()
            .map(|c| (c.file.as_path(), c.target.as_path()))
            .collect();
        with_private_files(&mut cmd, &binds)?;
        Ok(Box::new(ChildProcess::spawn(cmd, &program.log)?))
    }
}
