//! Interfaces: bridges, veth pairs, their state, and lookups.

use std::{fmt, os::fd::AsRawFd};

use futures_util::TryStreamExt as _;
use rtnetlink::{
    LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth,
    packet_route::link::{InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage},
};

use super::{
    names::check_ifname,
    netns::NetNs,
    rtnl::{Netlink, NetlinkError, is_errno},
};

/// What a lookup tells about an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    /// The interface index, unique within its namespace.
    pub index: u32,
    /// The Ethernet address; all zero for interfaces without a 6-byte address.
    pub mac: [u8; 6],
    /// The interface name.
    pub name: String,
}

/// Formats a MAC the usual way, `02:00:00:00:00:01`.
pub struct MacDisplay<'a>(pub &'a [u8; 6]);

impl fmt::Display for MacDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

/// Refuses addresses an Ethernet interface cannot take. The kernel would accept some of
/// them at creation and only fail later, with a bare EADDRNOTAVAIL, when the interface
/// is brought up.
pub fn check_mac(mac: [u8; 6]) -> Result<(), NetlinkError> {
    let reason = if mac == [0; 6] {
        "it is all zero"
    } else if mac[0] & 1 == 1 {
        "it is a multicast address (the low bit of the first byte is set)"
    } else {
        return Ok(());
    };
    Err(NetlinkError::InvalidMac {
        mac: MacDisplay(&mac).to_string(),
        reason,
    })
}

impl Netlink {
    /// Creates bridge `name`, up, and returns its index. Fails (EEXIST) if an interface
    /// of that name exists.
    pub async fn create_bridge(&self, name: &str) -> Result<u32, NetlinkError> {
        check_ifname(name)?;
        let op = self.op(format_args!("create bridge {name:?}"));
        // LinkBridge::new already sets IFF_UP.
        self.handle
            .link()
            .add(LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op.clone(), e))?;
        self.index_after_create(op, name).await
    }

    /// Creates a veth pair: `host_name` in this connection's namespace and `peer_name`
    /// directly inside `peer_ns` (with `peer_mac` if given), and returns the host end's
    /// index. Both ends start down; bring the peer up through a connection in `peer_ns`
    /// (the kernel ignores flags given for a veth peer at creation).
    ///
    /// Creating the peer in place, rather than moving it afterwards, means it never
    /// appears in this namespace, so names cannot collide here.
    pub async fn create_veth(
        &self,
        host_name: &str,
        peer_name: &str,
        peer_ns: &NetNs,
        peer_mac: Option<[u8; 6]>,
    ) -> Result<u32, NetlinkError> {
        check_ifname(host_name)?;
        check_ifname(peer_name)?;
        let op = self.op(format_args!(
            "create veth {host_name:?} (peer {peer_name:?} in network namespace {:?})",
            peer_ns.name()
        ));
        // The descriptor stays open (borrowed from peer_ns) until the kernel has answered.
        let mut peer = LinkMessageBuilder::<LinkUnspec>::new()
            .name(peer_name)
            .setns_by_fd(peer_ns.file().as_raw_fd());
        if let Some(mac) = peer_mac {
            check_mac(mac)?;
            peer = peer.address(mac.to_vec());
        }
        let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
            .name(host_name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build())))
            .build();
        self.handle
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op.clone(), e))?;
        self.index_after_create(op, host_name).await
    }

    /// Creates a veth pair with both ends in this connection's namespace (a trunk between two
    /// bridges, the host's client-link end) and returns their indices. Both start down.
    ///
    /// `a_mac` is given in the request that makes the device, not set afterwards: a device
    /// made with a random address is given one of udev's (MACAddressPolicy=persistent)
    /// once it appears, which would race with a later change.
    pub async fn create_veth_pair(
        &self,
        a: &str,
        b: &str,
        a_mac: Option<[u8; 6]>,
    ) -> Result<(u32, u32), NetlinkError> {
        check_ifname(a)?;
        check_ifname(b)?;
        let op = self.op(format_args!("create veth {a:?} (peer {b:?})"));
        let peer = LinkMessageBuilder::<LinkUnspec>::new().name(b).build();
        let mut veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(a);
        if let Some(mac) = a_mac {
            check_mac(mac)?;
            veth = veth.address(mac.to_vec());
        }
        let veth = veth
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        self.handle
            .link()
            .add(veth)
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op.clone(), e))?;
        let ia = self.index_after_create(op.clone(), a).await?;
        let ib = self.index_after_create(op, b).await?;
        Ok((ia, ib))
    }

    /// Enslaves interface `ifindex` to bridge `bridge_ifindex`.
    pub async fn set_master(&self, ifindex: u32, bridge_ifindex: u32) -> Result<(), NetlinkError> {
        let op = self.op(format_args!(
            "attach interface {ifindex} to bridge {bridge_ifindex}"
        ));
        self.set_link(
            op,
            LinkUnspec::new_with_index(ifindex)
                .controller(bridge_ifindex)
                .build(),
        )
        .await
    }

    /// Brings interface `ifindex` up.
    pub async fn set_up(&self, ifindex: u32) -> Result<(), NetlinkError> {
        let op = self.op(format_args!("bring interface {ifindex} up"));
        self.set_link(op, LinkUnspec::new_with_index(ifindex).up().build())
            .await
    }

    /// Sets the MAC address of interface `ifindex`. Some drivers refuse while the
    /// interface is up (EBUSY); veth and bridge do not.
    pub async fn set_mac(&self, ifindex: u32, mac: [u8; 6]) -> Result<(), NetlinkError> {
        check_mac(mac)?;
        let op = self.op(format_args!(
            "set MAC {} on interface {ifindex}",
            MacDisplay(&mac)
        ));
        self.set_link(
            op,
            LinkUnspec::new_with_index(ifindex)
                .address(mac.to_vec())
                .build(),
        )
        .await
    }

    /// Looks an interface up by name; `None` if there is none.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        check_ifname(name)?;
        let mut request = std::pin::pin!(self.handle.link().get().match_name(name).execute());
        match request.try_next().await {
            Ok(message) => Ok(message.map(|m| link_info(&m))),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(NetlinkError::from_rtnetlink(
                self.op(format_args!("look up interface {name:?}")),
                e,
            )),
        }
    }

    /// Looks an interface up by index; `None` if there is none.
    pub async fn link_by_index(&self, ifindex: u32) -> Result<Option<LinkInfo>, NetlinkError> {
        let mut request = std::pin::pin!(self.handle.link().get().match_index(ifindex).execute());
        match request.try_next().await {
            Ok(message) => Ok(message.map(|m| link_info(&m))),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(NetlinkError::from_rtnetlink(
                self.op(format_args!("look up interface {ifindex}")),
                e,
            )),
        }
    }

    /// The `iflink` of interface `name`: for one end of a veth pair, the index of the other
    /// end in *its* namespace (the kernel reports the peer's index, not a name). `None` if
    /// there is no such interface or it has no link.
    pub async fn peer_index(&self, name: &str) -> Result<Option<u32>, NetlinkError> {
        check_ifname(name)?;
        let mut request = std::pin::pin!(self.handle.link().get().match_name(name).execute());
        match request.try_next().await {
            Ok(message) => Ok(message.and_then(|m| {
                m.attributes.iter().find_map(|a| match a {
                    LinkAttribute::Link(index) => Some(*index),
                    _ => None,
                })
            })),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(None),
            Err(e) => Err(NetlinkError::from_rtnetlink(
                self.op(format_args!("look up the peer of interface {name:?}")),
                e,
            )),
        }
    }

    /// Every interface whose name starts with `prefix`, sorted by index.
    pub async fn links_with_prefix(&self, prefix: &str) -> Result<Vec<LinkInfo>, NetlinkError> {
        let op = || self.op(format_args!("list interfaces"));
        let mut links: Vec<LinkInfo> = self
            .handle
            .link()
            .get()
            .execute()
            .map_ok(|m| link_info(&m))
            .try_filter(|link| std::future::ready(link.name.starts_with(prefix)))
            .try_collect()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op(), e))?;
        links.sort_by_key(|link| link.index);
        Ok(links)
    }

    /// Deletes interface `ifindex` (for a veth, both ends). An interface that does not
    /// exist is not an error.
    pub async fn delete_link(&self, ifindex: u32) -> Result<(), NetlinkError> {
        match self.handle.link().del(ifindex).execute().await {
            Ok(()) => Ok(()),
            Err(e) if is_errno(&e, libc::ENODEV) => Ok(()),
            Err(e) => Err(NetlinkError::from_rtnetlink(
                self.op(format_args!("delete interface {ifindex}")),
                e,
            )),
        }
    }

    async fn set_link(&self, op: String, message: LinkMessage) -> Result<(), NetlinkError> {
        self.handle
            .link()
            .set(message)
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op, e))
    }

    /// The kernel does not answer a creation with the new index, so ask for it.
    async fn index_after_create(&self, op: String, name: &str) -> Result<u32, NetlinkError> {
        match self.link_by_name(name).await? {
            Some(link) => Ok(link.index),
            None => Err(NetlinkError::Vanished {
                op,
                what: format!("interface {name:?}"),
            }),
        }
    }
}

fn link_info(message: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: message.header.index,
        mac: [0; 6],
        name: String::new(),
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => info.name.clone_from(name),
            LinkAttribute::Address(bytes) => {
                if let Ok(mac) = <[u8; 6]>::try_from(bytes.as_slice()) {
                    info.mac = mac;
                }
            }
            _ => {}
        }
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unicast_macs_pass_and_others_say_why_not() {
        assert!(check_mac([0x02, 0, 0, 0, 0, 1]).is_ok());
        let err = check_mac([0x01, 0x00, 0x5e, 0, 0, 1]).unwrap_err();
        assert!(err.to_string().contains("multicast"), "{err}");
        assert!(err.to_string().contains("01:00:5e:00:00:01"), "{err}");
        assert!(matches!(
            check_mac([0; 6]),
            Err(NetlinkError::InvalidMac { .. })
        ));
        assert!(matches!(
            check_mac([0xff; 6]),
            Err(NetlinkError::InvalidMac { .. })
        ));
    }

    #[test]
    fn link_info_reads_name_and_mac_and_tolerates_odd_addresses() {
        let mut message = LinkMessage::default();
        message.header.index = 7;
        message
            .attributes
            .push(LinkAttribute::IfName("eth0".into()));
        message
            .attributes
            .push(LinkAttribute::Address(vec![2, 0, 0, 0, 0, 9]));
        assert_eq!(
            link_info(&message),
            LinkInfo {
                index: 7,
                mac: [2, 0, 0, 0, 0, 9],
                name: "eth0".into()
            }
        );
        message.attributes[1] = LinkAttribute::Address(vec![10, 0, 0, 1]);
        assert_eq!(link_info(&message).mac, [0; 6]);
    }
}
