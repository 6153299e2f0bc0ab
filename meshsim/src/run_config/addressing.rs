//! Addresses and MACs of nodes, derived from their ids so they never collide and a node keeps
//! them for its life.

use std::net::Ipv4Addr;

use crate::model::NodeId;

/// The mesh subnet: the host is `.1`, node `nK` is the subnet's address number `K + 1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addressing {
    base: u32,
    prefix_len: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddressingError {
    #[error("subnet {0}: write it as A.B.C.D/N with N between 8 and 24, e.g. 10.77.0.0/16")]
    BadSubnet(String),
    #[error("node {0} does not fit in the mesh subnet: choose a larger subnet (--subnet)")]
    Full(NodeId),
}

impl Default for Addressing {
    /// 10.77.0.0/16.
    fn default() -> Self {
        Addressing {
            base: u32::from(Ipv4Addr::new(10, 77, 0, 0)),
            prefix_len: 16,
        }
    }
}

impl Addressing {
    /// Whether `ip/len` (an address on some interface, with its prefix) shares addresses
    /// with the mesh subnet. Loopback never does: it is no network of the host's.
    pub fn overlaps(&self, ip: Ipv4Addr, len: u8) -> bool {
        if ip.is_loopback() {
            return false;
        }
        let mask = |l: u8| {
            if l == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(l.min(32)))
            }
        };
        // Two prefixes overlap iff they agree on the shorter one's bits.
        let shorter = mask(self.prefix_len.min(len));
        (u32::from(ip) & shorter) == (self.base & shorter)
    }
}

impl std::fmt::Display for Addressing {
    /// As it is written: `10.77.0.0/16`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix_len)
    }
}

impl std::str::FromStr for Addressing {
    type Err = AddressingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AddressingError::BadSubnet(s.to_owned());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix_len: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=24).contains(&prefix_len) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix_len);
        Ok(Addressing {
            base: u32::from(ip) & mask,
            prefix_len,
        })
    }
}

impl Addressing {
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn host(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }

    /// The subnet, `10.77.0.0/16`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.prefix_len)
    }

    pub fn node(&self, id: NodeId) -> Result<Ipv4Addr, AddressingError> {
        let offset = id.0 as u64 + 1;
        // The last address is the broadcast address.
        if offset >= (1u64 << (32 - self.prefix_len)) - 1 {
            return Err(AddressingError::Full(id));
        }
        Ok(Ipv4Addr::from(self.base + offset as u32))
    }

    /// The host's MAC on the mesh (the bridge's): `02:6d:73:ff:ff:ff`, beyond every node
    /// id a subnet can hold. Fixed, so nodes can keep a static neighbour entry for it.
    pub fn host_mac() -> [u8; 6] {
        [0x02, 0x6d, 0x73, 0xff, 0xff, 0xff]
    }

    /// A locally administered unicast MAC: 02:6d:73 ("ms") and the id.
    pub fn mac(id: NodeId) -> [u8; 6] {
        let [_, a, b, c] = id.0.to_be_bytes();
        [0x02, 0x6d, 0x73, a, b, c]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_overlap_when_they_share_an_address() {
        let mesh: Addressing = "10.77.0.0/16".parse().unwrap();
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(mesh.overlaps(ip("10.77.0.1"), 16));
        assert!(mesh.overlaps(ip("10.77.9.9"), 24));
        assert!(mesh.overlaps(ip("10.1.2.3"), 8));
        assert!(!mesh.overlaps(ip("10.78.0.1"), 16));
        assert!(!mesh.overlaps(ip("192.168.1.5"), 24));
        assert!(!mesh.overlaps(ip("127.0.0.1"), 8));
        assert_eq!(mesh.to_string(), "10.77.0.0/16");
    }

    #[test]
    fn host_is_dot_one_and_nodes_follow() {
        let a = Addressing::default();
        assert_eq!(a.host(), Ipv4Addr::new(10, 77, 0, 1));
        assert_eq!(a.node(NodeId(1)).unwrap(), Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(a.node(NodeId(300)).unwrap(), Ipv4Addr::new(10, 77, 1, 45));
        assert_eq!(Addressing::mac(NodeId(258)), [0x02, 0x6d, 0x73, 0, 1, 2]);
        assert_eq!(a.cidr(), "10.77.0.0/16");
    }

    #[test]
    fn subnets_parse_and_fill_up() {
        let a: Addressing = "192.168.7.9/24".parse().unwrap();
        assert_eq!(a.host(), Ipv4Addr::new(192, 168, 7, 1));
        assert_eq!(
            a.node(NodeId(253)).unwrap(),
            Ipv4Addr::new(192, 168, 7, 254)
        );
        assert_eq!(a.node(NodeId(254)), Err(AddressingError::Full(NodeId(254))));
        for bad in ["10.0.0.0", "10.0.0.0/30", "10.0.0/16", "x/16"] {
            assert!(bad.parse::<Addressing>().is_err(), "{bad}");
        }
    }
}
