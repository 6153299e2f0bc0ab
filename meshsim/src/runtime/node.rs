//! What every node has, whichever backend made it: an `eth0` inside its namespace with the
//! node's address as a /32 (so it reaches others only through the routes of its links),
//! forwarding on, redirects and IPv6 off, a route to the host; and a routing table that the
//! Sim changes route by route.

use std::net::Ipv4Addr;

use super::RuntimeError;
use crate::{
    model::NodeId,
    net::{NetNs, Netlink, sysctl},
    run_config::Addressing,
    sim::RouteChange,
};

/// A node's namespace and its `eth0`, with a netlink connection inside.
pub struct NodeNet {
    pub ns: NetNs,
    pub nl: Netlink,
    pub eth0: u32,
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
        Ok(NodeNet { ns, nl, eth0 })
    }

    /// Gives the node its addressing: `ip` as a /32 on `eth0`, `lo` up, forwarding on,
    /// redirects and IPv6 off, and a route to the host, which is on the bridge.
    pub async fn configure(&self, ip: Ipv4Addr, host: Ipv4Addr) -> Result<(), RuntimeError> {
        if let Some(lo) = self.nl.link_by_name("lo").await? {
            self.nl.set_up(lo.index).await?;
        }
        // IPv6 would add router solicitations and neighbour discovery to the links.
        sysctl::disable_ipv6(&self.ns)?;
        self.nl.set_up(self.eth0).await?;
        self.nl.add_address(self.eth0, ip, 32).await?;
        sysctl::enable_forwarding(&self.ns)?;
        // After forwarding: changing ip_forward resets accept_redirects.
        sysctl::disable_redirects(&self.ns, &["eth0"])?;
        self.nl.replace_route(host, host, self.eth0).await?;
        Ok(())
    }

    /// Applies route changes in order; node ids become addresses through `addressing`.
    pub async fn set_routes(
        &self,
        addressing: &Addressing,
        changes: &[RouteChange],
    ) -> Result<(), RuntimeError> {
        for change in changes {
            match *change {
                RouteChange::Replace { dst, via } => {
                    self.nl
                        .replace_route(
                            address(addressing, dst)?,
                            address(addressing, via)?,
                            self.eth0,
                        )
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
