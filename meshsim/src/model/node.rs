//! Node identity (`NodeId`, the `n<id>` names) and canvas positions.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::error::{ModelError, check_range};

/// Largest |x| or |y| accepted. The canvas is far smaller; the bound keeps squared distances
/// exact enough to rank neighbours and turns garbage such as `1e308` into an error.
pub const MAX_COORD: f64 = 100_000.0;

/// A node's identity. Ids start at 1 and are never reused within a run, so a name such as
/// `n3` (and the namespace, veth or container named after it) always means the same node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The node's name, `n<id>`.
    pub fn name(self) -> String {
        self.to_string()
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A string that is not the name of any node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("node names look like n1, n2, ...: got {0:?}")]
pub struct NodeNameError(pub String);

impl FromStr for NodeId {
    type Err = NodeNameError;

    /// Parses `n<id>`. Leading zeros and `n0` are refused so that every node has exactly one
    /// name and parsing a name back always gives the node it came from.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || NodeNameError(s.to_owned());
        let digits = s.strip_prefix('n').ok_or_else(bad)?;
        if digits.is_empty()
            || digits.starts_with('0')
            || !digits.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        digits.parse().map(NodeId).map_err(|_| bad())
    }
}

/// A node as the canvas and the API see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    pub x: f64,
    pub y: f64,
}

impl Node {
    /// A node at a checked position; errors name `x` or `y`.
    pub(crate) fn new(id: NodeId, x: f64, y: f64) -> Result<Self, ModelError> {
        check_coord("x", x)?;
        check_coord("y", y)?;
        Ok(Self {
            id,
            name: id.name(),
            x,
            y,
        })
    }

    /// Pixel distance squared: exact for ranking, and symmetric bit for bit because
    /// `(-d)² == d²`, which keeps the link rule symmetric.
    pub(crate) fn distance_sq(&self, other: &Node) -> f64 {
        let dx = self.x - other.x;
        let dy = self.y - other.y;
        dx * dx + dy * dy
    }
}

fn check_coord(field: &str, value: f64) -> Result<(), ModelError> {
    check_range(field, value, -MAX_COORD, MAX_COORD)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_ids() {
        for id in [1, 9, 10, 4_000_000_000] {
            let id = NodeId(id);
            assert_eq!(id.name().parse::<NodeId>(), Ok(id));
        }
    }

    #[test]
    fn malformed_names_are_refused() {
        for name in [
            "",
            "n",
            "n0",
            "n01",
            "x1",
            "n-1",
            "n1a",
            "N1",
            "n99999999999",
        ] {
            assert!(name.parse::<NodeId>().is_err(), "{name:?} parsed");
        }
    }

    #[test]
    fn positions_must_be_finite_and_in_range() {
        assert!(Node::new(NodeId(1), MAX_COORD, -MAX_COORD).is_ok());
        let err = Node::new(NodeId(1), f64::NAN, 0.0).unwrap_err();
        assert_eq!(err.field(), Some("x"));
        let err = Node::new(NodeId(1), 0.0, f64::INFINITY).unwrap_err();
        assert_eq!(err.field(), Some("y"));
        let err = Node::new(NodeId(1), 0.0, MAX_COORD + 1.0).unwrap_err();
        assert_eq!(err.field(), Some("y"));
    }
}
