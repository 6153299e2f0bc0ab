//! The netns backend: each node is a named network namespace `ms-<name>` (so
//! `ip netns exec ms-n1 ...` works) with a veth pair whose host side, also `ms-<name>`, is a
//! port of the bridge `ms-br0`. Inside, `eth0` has the node's address as a /32, so a node
//! reaches others only through routes via its links; forwarding is on and ICMP redirects off.

use std::{collections::HashMap, net::Ipv4Addr, path::PathBuf};

use super::{Addressing, NodeFacts, RouteChange, Runtime, RuntimeError, workload::Workload};
use crate::{
    model::NodeId,
    net::{NETNS_DIR, NetNs, Netlink, sysctl},
};

/// Everything meshsim makes carries this prefix, so `meshsim down` finds exactly its own.
pub const PREFIX: &str = "ms-";
pub const BRIDGE: &str = "ms-br0";

#[derive(Clone, Debug)]
pub struct NetnsConfig {
    pub addressing: Addressing,
    /// A command run in every node (`{name}`, `{ip}` filled in).
    pub node_cmd: Option<String>,
    /// Where the workloads' logs go (`<name>.log`).
    pub log_dir: PathBuf,
}

struct NodeHandle {
    ns: NetNs,
    nl: Netlink,
    eth0: u32,
    workload: Option<Workload>,
}

pub struct NetnsRuntime {
    config: NetnsConfig,
    root: Netlink,
    bridge: u32,
    nodes: HashMap<NodeId, NodeHandle>,
}

impl NetnsRuntime {
    /// Creates the bridge with the host's address. Fails if it exists (see `cleanup`).
    pub async fn start(config: NetnsConfig) -> Result<Self, RuntimeError> {
        let root = Netlink::connect()?;
        if root.link_by_name(BRIDGE).await?.is_some() {
            return Err(RuntimeError::Leftover(format!("the bridge {BRIDGE}")));
        }
        let bridge = root.create_bridge(BRIDGE).await?;
        root.add_address(
            bridge,
            config.addressing.host(),
            config.addressing.prefix_len(),
        )
        .await?;
        if let Some(cmd) = &config.node_cmd {
            tracing::info!(%cmd, logs = %config.log_dir.display(), "every node runs a workload");
            std::fs::create_dir_all(&config.log_dir).map_err(|source| RuntimeError::Workload {
                node: "(log directory)".into(),
                source,
            })?;
        }
        Ok(NetnsRuntime {
            config,
            root,
            bridge,
            nodes: HashMap::new(),
        })
    }

    /// The namespace of a node, for `exec` and tests.
    pub fn namespace(&self, id: NodeId) -> Option<&NetNs> {
        self.nodes.get(&id).map(|n| &n.ns)
    }

    async fn build_node(
        &mut self,
        id: NodeId,
        ns: &NetNs,
    ) -> Result<(NodeFacts, NodeHandle), RuntimeError> {
        let name = id.name();
        let ip = self.config.addressing.node(id)?;
        let mac = Addressing::mac(id);
        let host_side = format!("{PREFIX}{name}");
        let port = self
            .root
            .create_veth(&host_side, "eth0", ns, Some(mac))
            .await?;
        self.root.set_master(port, self.bridge).await?;
        self.root.set_up(port).await?;
        let nl = Netlink::connect_in(ns)?;
        if let Some(lo) = nl.link_by_name("lo").await? {
            nl.set_up(lo.index).await?;
        }
        let eth0 = nl
            .link_by_name("eth0")
            .await?
            .ok_or(RuntimeError::UnknownNode(id))?
            .index;
        // IPv6 would add router solicitations and neighbour discovery to the links.
        sysctl::disable_ipv6(ns)?;
        nl.set_up(eth0).await?;
        nl.add_address(eth0, ip, 32).await?;
        sysctl::enable_forwarding(ns)?;
        // After forwarding: changing ip_forward resets accept_redirects.
        sysctl::disable_redirects(ns, &["eth0"])?;
        // The host (API clients, tests) is on the bridge: reachable directly.
        let host = self.config.addressing.host();
        nl.replace_route(host, host, eth0).await?;
        let workload = match &self.config.node_cmd {
            Some(cmd) => Some(
                Workload::spawn(
                    ns,
                    cmd,
                    &name,
                    &ip.to_string(),
                    &self.config.log_dir.join(format!("{name}.log")),
                )
                .map_err(|source| RuntimeError::Workload {
                    node: name.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let facts = NodeFacts {
            id,
            name,
            ip,
            mac,
            port,
        };
        Ok((
            facts,
            NodeHandle {
                ns: ns.clone(),
                nl,
                eth0,
                workload,
            },
        ))
    }
}

impl Runtime for NetnsRuntime {
    fn host_ip(&self) -> Ipv4Addr {
        self.config.addressing.host()
    }

    async fn create_node(&mut self, id: NodeId) -> Result<NodeFacts, RuntimeError> {
        let ns_name = format!("{PREFIX}{}", id.name());
        let ns = NetNs::create(&ns_name).map_err(|e| match e {
            crate::net::NetNsError::AlreadyExists { .. } => {
                RuntimeError::Leftover(format!("the namespace {ns_name}"))
            }
            e => e.into(),
        })?;
        match self.build_node(id, &ns).await {
            Ok((facts, handle)) => {
                self.nodes.insert(id, handle);
                Ok(facts)
            }
            Err(e) => {
                // Nothing half-made stays: the namespace takes eth0 and its veth peer with it.
                let _ = NetNs::delete(&ns_name);
                if let Ok(Some(link)) = self
                    .root
                    .link_by_name(&format!("{PREFIX}{}", id.name()))
                    .await
                {
                    let _ = self.root.delete_link(link.index).await;
                }
                Err(e)
            }
        }
    }

    async fn remove_node(&mut self, id: NodeId) -> Result<(), RuntimeError> {
        let node = self
            .nodes
            .remove(&id)
            .ok_or(RuntimeError::UnknownNode(id))?;
        if let Some(w) = node.workload {
            tokio::task::spawn_blocking(move || w.stop()).await.ok();
        }
        let name = node.ns.name().to_owned();
        drop(node.nl);
        drop(node.ns);
        // Anything still running inside (say, started with `meshsim exec`) would keep the
        // namespace, and with it the veth, alive after the mount is gone.
        super::cleanup::kill_processes_in(&format!("{NETNS_DIR}/{name}"));
        NetNs::delete(&name)?;
        // And so may a socket someone still holds in it: remove our end of the veth
        // regardless, which takes the peer with it.
        if let Some(link) = self.root.link_by_name(&name).await? {
            self.root.delete_link(link.index).await?;
        }
        Ok(())
    }

    async fn set_routes(
        &mut self,
        id: NodeId,
        changes: Vec<RouteChange>,
    ) -> Result<(), RuntimeError> {
        let node = self.nodes.get(&id).ok_or(RuntimeError::UnknownNode(id))?;
        for change in changes {
            match change {
                RouteChange::Replace { dst, via } => {
                    node.nl.replace_route(dst, via, node.eth0).await?
                }
                RouteChange::Delete { dst } => node.nl.delete_route(dst).await?,
            }
        }
        Ok(())
    }

    async fn shutdown(&mut self) -> Result<(), RuntimeError> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        for id in ids {
            self.remove_node(id).await?;
        }
        self.root.delete_link(self.bridge).await?;
        Ok(())
    }
}
