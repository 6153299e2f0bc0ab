//! The host's end of its client links, alike for both backends: the host's mesh address and
//! MAC sit on a veth (`<prefix>-host`, `ms-host` by default) whose peer (`ms-hostp`) is a port of the nodes' bridge, so
//! node -> host frames leave the bridge through a port where the classifier and fq sit,
//! exactly like node -> node frames. The bridge itself gets a fixed MAC of its own.

use std::net::Ipv4Addr;

use super::{RuntimeError, names::RunPrefix};
use crate::{
    model::NodeId,
    net::{Netlink, rps},
    run_config::Addressing,
};

/// The bridges' own MAC: not the host's, which is on the host's veth (frames to the host
/// must leave the bridge through that port, not be taken up by the bridge itself).
pub const BRIDGE_MAC: [u8; 6] = [0x02, 0x6d, 0x73, 0xff, 0xff, 0xfe];

/// The two ends, by interface index.
#[derive(Debug, Clone, Copy)]
pub struct HostLink {
    /// `ms-host`, with the host's address.
    pub link: u32,
    /// `ms-hostp`, the bridge port.
    pub port: u32,
}

impl HostLink {
    /// Hangs the host on `bridge` (whose MAC becomes [`BRIDGE_MAC`]). On a failure nothing
    /// of it stays.
    pub async fn join(
        root: &Netlink,
        bridge: u32,
        addressing: &Addressing,
        prefix: &RunPrefix,
    ) -> Result<HostLink, RuntimeError> {
        // Two runs in one subnet would both put its `.1` on the host: refuse the second.
        for (ifindex, ip, len) in root.all_addresses_v4().await? {
            if addressing.overlaps(ip, len) {
                let name = root
                    .link_by_index(ifindex)
                    .await?
                    .map_or(format!("interface {ifindex}"), |l| l.name);
                return Err(RuntimeError::SubnetInUse {
                    subnet: addressing.to_string(),
                    by: format!("{ip}/{len} on {name}"),
                });
            }
        }
        let host_link = prefix.host_link();
        let made = async {
            root.set_mac(bridge, BRIDGE_MAC).await?;
            let (link, port) = root
                .create_veth_pair(
                    &host_link,
                    &prefix.host_port(),
                    Some(Addressing::host_mac()),
                )
                .await?;
            root.set_master(port, bridge).await?;
            root.set_up(port).await?;
            root.set_up(link).await?;
            root.add_address(link, addressing.host(), addressing.prefix_len())
                .await?;
            Ok::<_, RuntimeError>(HostLink { link, port })
        };
        match made.await {
            Ok(host) => {
                // The host's end receives each flow on one CPU, as a node's eth0 does.
                if let Err(e) = rps::steer_host_by_flow(&host_link) {
                    tracing::warn!("{e}: flows to the host may be reordered");
                }
                Ok(host)
            }
            Err(e) => {
                let _ = Self::remove(root, prefix).await;
                Err(e)
            }
        }
    }

    /// Pins node `id`'s MAC on the host's end, so no ARP crosses its client link. The
    /// entry stays when the node goes (harmless, and right again if the id comes back) and
    /// goes with the veth at the end of the run.
    pub async fn pin_node(
        &self,
        root: &Netlink,
        id: NodeId,
        ip: Ipv4Addr,
    ) -> Result<(), RuntimeError> {
        Ok(root
            .set_neighbour(self.link, ip, Addressing::mac(id))
            .await?)
    }

    /// Removes both ends (deleting one end of a veth pair deletes both), if they exist.
    pub async fn remove(root: &Netlink, prefix: &RunPrefix) -> Result<(), RuntimeError> {
        if let Some(host) = root.link_by_name(&prefix.host_link()).await? {
            root.delete_link(host.index).await?;
        }
        Ok(())
    }
}
