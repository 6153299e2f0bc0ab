//! Client links: the link between the host (where a person's client, curl or a test client
//! runs) and each node, shaped like a node link but asymmetric, as a phone's or a satellite
//! uplink's is. A run-wide default (unshaped unless set) and a per-node override; each
//! gives two directed links: host -> node (the uplink, `bandwidth_up_bps`) and node -> host
//! (the downlink, `bandwidth_down_bps`). Pure: the Sim installs what this derives.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    LinkParams, ModelError, NodeId,
    error::{check_bandwidth, check_ms, check_pct},
};

/// The host in the datapath: the address before node n1's (`.1`), so id 0.
pub const HOST: NodeId = NodeId(0);

/// One client link's parameters, named like a link's.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientLink {
    /// One way, each direction.
    pub latency_ms: f64,
    pub jitter_ms: f64,
    /// Each direction, 0..=100.
    pub loss_pct: f64,
    /// Host -> node, bits per second; 0 means unlimited.
    pub bandwidth_up_bps: u64,
    /// Node -> host, bits per second; 0 means unlimited.
    pub bandwidth_down_bps: u64,
}

impl ClientLink {
    /// Whether this is the unshaped link (all zero).
    pub fn is_unshaped(&self) -> bool {
        *self == ClientLink::default()
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_ms("latency_ms", self.latency_ms)?;
        check_ms("jitter_ms", self.jitter_ms)?;
        check_pct("loss_pct", self.loss_pct)?;
        check_bandwidth("bandwidth_up_bps", self.bandwidth_up_bps)?;
        check_bandwidth("bandwidth_down_bps", self.bandwidth_down_bps)
    }

    /// The two directed links: (host -> node, node -> host).
    pub fn directions(&self) -> (LinkParams, LinkParams) {
        let one = |bandwidth_bps| LinkParams {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            bandwidth_bps,
            loss_pct: self.loss_pct,
        };
        (one(self.bandwidth_up_bps), one(self.bandwidth_down_bps))
    }
}

/// The run's client links: the default and the nodes that override it.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct ClientLinks {
    pub default: ClientLink,
    pub nodes: BTreeMap<NodeId, ClientLink>,
}

impl ClientLinks {
    /// What `node`'s client link is.
    pub fn of(&self, node: NodeId) -> ClientLink {
        self.nodes.get(&node).copied().unwrap_or(self.default)
    }

    /// Whether `node` has its own settings.
    pub fn overridden(&self, node: NodeId) -> bool {
        self.nodes.contains_key(&node)
    }

    /// Forgets a node's override (the node is gone).
    pub fn forget(&mut self, node: NodeId) {
        self.nodes.remove(&node);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_link_is_two_directed_links_with_their_own_bandwidth() {
        let link = ClientLink {
            latency_ms: 300.0,
            jitter_ms: 5.0,
            loss_pct: 2.0,
            bandwidth_up_bps: 32_000,
            bandwidth_down_bps: 64_000,
        };
        let (up, down) = link.directions();
        assert_eq!((up.bandwidth_bps, down.bandwidth_bps), (32_000, 64_000));
        assert!(up.latency_ms == 300.0 && down.latency_ms == 300.0);
        assert!(up.loss_pct == 2.0 && down.jitter_ms == 5.0);
    }

    #[test]
    fn the_default_is_unshaped_and_a_node_may_override_it() {
        let mut links = ClientLinks::default();
        let (up, down) = links.of(NodeId(3)).directions();
        for p in [up, down] {
            assert!(p.latency_ms == 0.0 && p.bandwidth_bps == 0 && p.loss_pct == 0.0);
        }
        links.default.latency_ms = 50.0;
        links.nodes.insert(
            NodeId(3),
            ClientLink {
                latency_ms: 500.0,
                ..ClientLink::default()
            },
        );
        assert_eq!(links.of(NodeId(3)).latency_ms, 500.0);
        assert_eq!(links.of(NodeId(4)).latency_ms, 50.0);
        links.forget(NodeId(3));
        assert_eq!(links.of(NodeId(3)).latency_ms, 50.0);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases = [
            (
                "latency_ms",
                ClientLink {
                    latency_ms: -1.0,
                    ..Default::default()
                },
            ),
            (
                "jitter_ms",
                ClientLink {
                    jitter_ms: f64::NAN,
                    ..Default::default()
                },
            ),
            (
                "loss_pct",
                ClientLink {
                    loss_pct: 101.0,
                    ..Default::default()
                },
            ),
            (
                "bandwidth_up_bps",
                ClientLink {
                    bandwidth_up_bps: u64::MAX,
                    ..Default::default()
                },
            ),
            (
                "bandwidth_down_bps",
                ClientLink {
                    bandwidth_down_bps: u64::MAX,
                    ..Default::default()
                },
            ),
        ];
        for (field, link) in cases {
            assert_eq!(link.validate().unwrap_err().field(), Some(field));
        }
    }
}
