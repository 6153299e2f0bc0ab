//! IPv4 addresses on interfaces.

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt as _;
use rtnetlink::packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage},
};

use super::rtnl::{Netlink, NetlinkError};

impl Netlink {
    /// Puts `address/prefix_len` on interface `ifindex`; adding it again is not an error
    /// (the request replaces).
    ///
    /// A /32 gets no connected route (the kernel adds one only for shorter prefixes),
    /// which is what meshsim nodes want: every destination is routed explicitly, via
    /// [`Netlink::replace_route`].
    pub async fn add_address(
        &self,
        ifindex: u32,
        address: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        if prefix_len > 32 {
            return Err(NetlinkError::InvalidPrefix(prefix_len));
        }
        let op = self.op(format_args!(
            "add address {address}/{prefix_len} to interface {ifindex}"
        ));
        self.handle
            .address()
            .add(ifindex, IpAddr::V4(address), prefix_len)
            .replace()
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op, e))
    }

    /// Removes every IPv4 address from interface `ifindex` (and with them the routes the
    /// kernel derived from them).
    pub async fn flush_addresses_v4(&self, ifindex: u32) -> Result<(), NetlinkError> {
        let op = || self.op(format_args!("remove the addresses of interface {ifindex}"));
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op(), e))?;
        for message in messages {
            if message.header.family != AddressFamily::Inet {
                continue;
            }
            self.handle
                .address()
                .del(message)
                .execute()
                .await
                .map_err(|e| NetlinkError::from_rtnetlink(op(), e))?;
        }
        Ok(())
    }

    /// Every IPv4 address in this namespace: (interface index, address, prefix length).
    pub async fn all_addresses_v4(&self) -> Result<Vec<(u32, Ipv4Addr, u8)>, NetlinkError> {
        let op = self.op(format_args!("list addresses"));
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op, e))?;
        Ok(messages
            .iter()
            .filter_map(|m| ipv4_of(m).map(|(ip, len)| (m.header.index, ip, len)))
            .collect())
    }

    /// The IPv4 addresses on interface `ifindex`, with their prefix lengths.
    pub async fn addresses_v4(&self, ifindex: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let op = self.op(format_args!("list addresses of interface {ifindex}"));
        let messages: Vec<AddressMessage> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(ifindex)
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op, e))?;
        Ok(messages.iter().filter_map(ipv4_of).collect())
    }
}

/// For IPv4, IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer's on
/// point-to-point links), so prefer it.
fn ipv4_of(message: &AddressMessage) -> Option<(Ipv4Addr, u8)> {
    if message.header.family != AddressFamily::Inet {
        return None;
    }
    let pick = |local: bool| {
        message
            .attributes
            .iter()
            .find_map(|attribute| match attribute {
                AddressAttribute::Local(IpAddr::V4(ip)) if local => Some(*ip),
                AddressAttribute::Address(IpAddr::V4(ip)) if !local => Some(*ip),
                _ => None,
            })
    };
    pick(true)
        .or_else(|| pick(false))
        .map(|ip| (ip, message.header.prefix_len))
}
