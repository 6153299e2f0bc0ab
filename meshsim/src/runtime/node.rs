//! What every node has, whichever backend made it: an `eth0` inside its namespace with the
//! node's address as a /32 (so it reaches others only through the routes of its links),
//! forwarding on, redirects and IPv6 off, a route to the host; and a routing table that the
//! Sim changes route by route.
//!
//! Two things keep a flow's packets in order and its first packets on time:
//! - receive steering by flow hash on `eth0` (RPS): fq releases held packets from timers
//!   that fire on any CPU, and each CPU has its own receive backlog, so without steering two
//!   packets of one flow released on two CPUs could be processed, and delivered, swapped;
//! - static neighbour entries for every next hop and for the host: MACs follow from node
//!   ids, so no ARP request or reply ever crosses a shaped link, and the first packets of a
//!   flow do not wait for one. A lab gives up ARP's own behaviour, which is not what it
//!   studies.

use std::{collections::HashSet, net::Ipv4Addr};

use super::RuntimeError;
use crate::{
    model::NodeId,
    net::{NetNs, Netlink, rps, sysctl::NetSettings},
    run_config::Addressing,
    sim::RouteChange,
    workload::host::NODE_GID,
};

/// A node's namespace and its `eth0`, with a netlink connection inside.
pub struct NodeNet {
    pub ns: NetNs,
    pub nl: Netlink,
    pub eth0: u32,
    /// Next hops that have a static neighbour entry already.
    neighbours: HashSet<NodeId>,
}

impl NodeNet {
    /// Connects inside `ns` and finds `eth0`.
    pub async fn open(ns: NetNs) -> Result<Self, RuntimeError> {
        let nl = Netlink::connect_in(&ns)?;
        let eth0 = nl
            .link_by_name("eth0")
            .await?
            .ok_or_else(|| RuntimeError::NoEth0(ns.name().to_owned()))?
            .index;
        Ok(NodeNet {
            ns,
            nl,
            eth0,
            neighbours: HashSet::new(),
        })
    }

    /// Gives the node its addressing: `ip` as a /32 on `eth0`, `lo` up, forwarding on,
    /// redirects and IPv6 off, receive steering by flow, and a route (with a static
    /// neighbour entry) to the host, which is on the bridge.
    pub async fn configure(
        &self,
        ip: Ipv4Addr,
        addressing: &Addressing,
    ) -> Result<(), RuntimeError> {
        let host = addressing.host();
        if let Some(lo) = self.nl.link_by_name("lo").await? {
            self.nl.set_up(lo.index).await?;
        }
        // All before eth0 is up: IPv6 would add router solicitations and neighbour discovery
        // to the links.
        NetSettings::default()
            .disable_ipv6()
            .enable_forwarding()
            // After forwarding: changing ip_forward resets accept_redirects.
            .disable_redirects(&["eth0"])?
            // Its confined processes have no capability and cannot gain one (no new
            // privileges, so not ping's file capability either): ICMP echo sockets let them
            // ping.
            .ipv4("ping_group_range", &format!("{NODE_GID} {NODE_GID}"))?
            .write(&self.ns)?;
        rps::steer_by_flow(&self.ns, "eth0")?;
        self.nl.set_up(self.eth0).await?;
        self.nl.add_address(self.eth0, ip, 32).await?;
        self.nl
            .set_neighbour(self.eth0, host, Addressing::host_mac())
            .await?;
        self.nl.replace_route(host, host, self.eth0).await?;
        Ok(())
    }

    /// Applies route changes in order; node ids become addresses (and next hops' MACs)
    /// through `addressing`.
    pub async fn set_routes(
        &mut self,
        addressing: &Addressing,
        changes: &[RouteChange],
    ) -> Result<(), RuntimeError> {
        for change in changes {
            match *change {
                RouteChange::Replace { dst, via } => {
                    let via_ip = address(addressing, via)?;
                    if !self.neighbours.contains(&via) {
                        self.nl
                            .set_neighbour(self.eth0, via_ip, Addressing::mac(via))
                            .await?;
                        self.neighbours.insert(via);
                    }
                    self.nl
                        .replace_route(address(addressing, dst)?, via_ip, self.eth0)
                        .await?
                }
                RouteChange::Delete { dst } => {
                    self.nl.delete_route(address(addressing, dst)?).await?
                }
            }
        }
        Ok(())
    }
}

fn address(addressing: &Addressing, id: NodeId) -> Result<Ipv4Addr, RuntimeError> {
    Ok(addressing.node(id)?)
}
