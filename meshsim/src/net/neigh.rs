//! Static IPv4 neighbours (ARP entries).

use std::net::{IpAddr, Ipv4Addr};

use rtnetlink::packet_route::neighbour::NeighbourState;

use super::rtnl::{Netlink, NetlinkError};

impl Netlink {
    /// Pins `ip` to `mac` on `ifindex`: the node then never sends ARP for it, so every
    /// frame on a link is traffic somebody sent (and counts can be exact).
    pub async fn set_neighbour(
        &self,
        ifindex: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), NetlinkError> {
        let op = self.op(format_args!("neighbour {ip} on interface {ifindex}"));
        self.handle
            .neighbours()
            .add(ifindex, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op, e))
    }
}
