//! IPv4 host routes in the main table: one /32 per destination, via its next hop.

use std::net::Ipv4Addr;

use futures_util::TryStreamExt as _;
use rtnetlink::{
    RouteMessageBuilder,
    packet_route::{
        AddressFamily,
        route::{
            RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope,
            RouteType,
        },
    },
};

use super::rtnl::{Netlink, NetlinkError, is_errno};

/// An IPv4 route as the kernel lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route4 {
    /// Destination network (0.0.0.0 for the default route).
    pub dst: Ipv4Addr,
    /// Destination prefix length.
    pub prefix_len: u8,
    /// Next hop, if the route has one.
    pub gateway: Option<Ipv4Addr>,
    /// Output interface, if the route names one.
    pub ifindex: Option<u32>,
}

impl Netlink {
    /// Routes `dst/32` via `via` out of interface `ifindex`, replacing any route to
    /// `dst/32` in the main table; calling it again with the same arguments changes
    /// nothing.
    ///
    /// The route is `onlink`: nodes have /32 addresses and no connected subnet, so without
    /// it the kernel refuses every gateway with ENETUNREACH. The interface must be up
    /// (ENETDOWN otherwise).
    pub async fn replace_route(
        &self,
        dst: Ipv4Addr,
        via: Ipv4Addr,
        ifindex: u32,
    ) -> Result<(), NetlinkError> {
        let op = self.op(format_args!(
            "route {dst}/32 via {via} on interface {ifindex}"
        ));
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst, 32)
            .gateway(via)
            .output_interface(ifindex)
            .onlink()
            .build();
        self.handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op, e))
    }

    /// Deletes the route to `dst/32` from the main table, whoever added it. A route that
    /// does not exist is not an error.
    pub async fn delete_route(&self, dst: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut builder = RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst, 32);
        // Wildcards for the kernel's match (fib_table_delete): any protocol, scope, type.
        let header = &mut builder.get_mut().header;
        header.protocol = RouteProtocol::Unspec;
        header.scope = RouteScope::NoWhere;
        header.kind = RouteType::Unspec;
        match self.handle.route().del(builder.build()).execute().await {
            Ok(()) => Ok(()),
            // ESRCH: no such route.
            Err(e) if is_errno(&e, libc::ESRCH) => Ok(()),
            Err(e) => Err(NetlinkError::from_rtnetlink(
                self.op(format_args!("delete route {dst}/32")),
                e,
            )),
        }
    }

    /// The IPv4 routes of the main table.
    pub async fn routes_v4(&self) -> Result<Vec<Route4>, NetlinkError> {
        let op = self.op(format_args!("list routes"));
        let messages: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|e| NetlinkError::from_rtnetlink(op, e))?;
        Ok(messages
            .iter()
            .filter(|m| in_main_table(m))
            .filter_map(route4)
            .collect())
    }
}

/// The dump covers every table and family whatever the request says (unless strict
/// checking is on), so filter here. Tables above 255 are only in RTA_TABLE.
fn in_main_table(message: &RouteMessage) -> bool {
    let main = u32::from(RouteHeader::RT_TABLE_MAIN);
    let table = message
        .attributes
        .iter()
        .find_map(|attribute| match attribute {
            RouteAttribute::Table(table) => Some(*table),
            _ => None,
        });
    table.unwrap_or(u32::from(message.header.table)) == main
}

fn route4(message: &RouteMessage) -> Option<Route4> {
    if message.header.address_family != AddressFamily::Inet {
        return None;
    }
    let mut route = Route4 {
        dst: Ipv4Addr::UNSPECIFIED,
        prefix_len: message.header.destination_prefix_length,
        gateway: None,
        ifindex: None,
    };
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => route.dst = *ip,
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
            RouteAttribute::Oif(index) => route.ifindex = Some(*index),
            _ => {}
        }
    }
    Some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(table: u8, attributes: Vec<RouteAttribute>) -> RouteMessage {
        let mut message = RouteMessage::default();
        message.header.address_family = AddressFamily::Inet;
        message.header.table = table;
        message.header.destination_prefix_length = 32;
        message.attributes = attributes;
        message
    }

    #[test]
    fn route4_reads_destination_gateway_and_interface() {
        let m = message(
            RouteHeader::RT_TABLE_MAIN,
            vec![
                RouteAttribute::Destination(RouteAddress::Inet(Ipv4Addr::new(10, 77, 0, 3))),
                RouteAttribute::Gateway(RouteAddress::Inet(Ipv4Addr::new(10, 77, 0, 2))),
                RouteAttribute::Oif(4),
            ],
        );
        assert!(in_main_table(&m));
        assert_eq!(
            route4(&m),
            Some(Route4 {
                dst: Ipv4Addr::new(10, 77, 0, 3),
                prefix_len: 32,
                gateway: Some(Ipv4Addr::new(10, 77, 0, 2)),
                ifindex: Some(4),
            })
        );
    }

    #[test]
    fn other_tables_are_filtered_out_including_large_ids() {
        assert!(!in_main_table(&message(255, vec![])));
        assert!(!in_main_table(&message(
            252,
            vec![RouteAttribute::Table(1000)]
        )));
        assert!(in_main_table(&message(
            252,
            vec![RouteAttribute::Table(254)]
        )));
    }

    #[test]
    fn ipv6_routes_are_skipped() {
        let mut m = message(
            254,
            vec![RouteAttribute::Destination(RouteAddress::Inet6(
                "fe80::".parse().unwrap(),
            ))],
        );
        m.header.address_family = AddressFamily::Inet6;
        assert_eq!(route4(&m), None);
    }
}
