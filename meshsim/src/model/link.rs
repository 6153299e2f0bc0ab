//! Links: the node pair that names one, its parameters, and the pinned overrides.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use super::{
    NodeId,
    error::{ModelError, check_bandwidth, check_ms, check_pct},
};

/// An unordered pair of distinct nodes, lower id first, so `(a, b)` and `(b, a)` are one key.
/// Links are undirected in the model; the datapath turns each into two directed links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawPair", into = "RawPair")]
pub struct Pair {
    a: NodeId,
    b: NodeId,
}

impl Pair {
    /// The pair of `x` and `y` in either order.
    pub fn new(x: NodeId, y: NodeId) -> Result<Self, ModelError> {
        match x.cmp(&y) {
            std::cmp::Ordering::Less => Ok(Self { a: x, b: y }),
            std::cmp::Ordering::Greater => Ok(Self { a: y, b: x }),
            std::cmp::Ordering::Equal => Err(ModelError::SameNode(x)),
        }
    }

    /// The pair of `a < b`, for callers that already know the order.
    pub(crate) fn ordered(a: NodeId, b: NodeId) -> Self {
        debug_assert!(a < b, "{a} is not below {b}");
        Self { a, b }
    }

    /// The lower id.
    pub fn a(self) -> NodeId {
        self.a
    }

    /// The higher id.
    pub fn b(self) -> NodeId {
        self.b
    }

    pub fn contains(self, id: NodeId) -> bool {
        self.a == id || self.b == id
    }
}

impl fmt::Display for Pair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.a, self.b)
    }
}

/// The wire form of a [`Pair`]; deserialising goes through [`Pair::new`] so the order
/// invariant holds for pairs read from clients too.
#[derive(Serialize, Deserialize)]
struct RawPair {
    a: NodeId,
    b: NodeId,
}

impl TryFrom<RawPair> for Pair {
    type Error = ModelError;

    fn try_from(raw: RawPair) -> Result<Self, Self::Error> {
        Pair::new(raw.a, raw.b)
    }
}

impl From<Pair> for RawPair {
    fn from(pair: Pair) -> Self {
        Self {
            a: pair.a,
            b: pair.b,
        }
    }
}

/// What a link does to traffic, the same in both directions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LinkParams {
    pub latency_ms: f64,
    pub jitter_ms: f64,
    /// Bits per second; 0 means unlimited.
    pub bandwidth_bps: u64,
    pub loss_pct: f64,
}

/// One parameter of a link, named as in the API (`latency_ms`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkField {
    LatencyMs,
    JitterMs,
    BandwidthBps,
    LossPct,
}

impl LinkField {
    pub const ALL: [LinkField; 4] = [
        Self::LatencyMs,
        Self::JitterMs,
        Self::BandwidthBps,
        Self::LossPct,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::LatencyMs => "latency_ms",
            Self::JitterMs => "jitter_ms",
            Self::BandwidthBps => "bandwidth_bps",
            Self::LossPct => "loss_pct",
        }
    }
}

impl fmt::Display for LinkField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for LinkField {
    type Err = ModelError;

    /// Parses a field name, as in `DELETE /api/links/{a}/{b}?field=latency_ms`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                ModelError::invalid(
                    "field",
                    format!(
                        "no link field {s:?}: expected latency_ms, jitter_ms, bandwidth_bps \
                         or loss_pct"
                    ),
                )
            })
    }
}

/// Overrides pinned on a node pair; a `Some` field wins over the derived value.
///
/// A latency pin is absolute: it is used as given, not scaled by `latency_scale_pct` (the
/// Python meshsim scaled it, which surprised its users). A pin overrides only its own field:
/// a pinned latency does not change the decayed bandwidth, which follows the distance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LinkPins {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bandwidth_bps: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss_pct: Option<f64>,
}

impl LinkPins {
    /// Checks every present field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ModelError> {
        if let Some(v) = self.latency_ms {
            check_ms(LinkField::LatencyMs.name(), v)?;
        }
        if let Some(v) = self.jitter_ms {
            check_ms(LinkField::JitterMs.name(), v)?;
        }
        if let Some(v) = self.bandwidth_bps {
            check_bandwidth(LinkField::BandwidthBps.name(), v)?;
        }
        if let Some(v) = self.loss_pct {
            check_pct(LinkField::LossPct.name(), v)?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.fields().is_empty()
    }

    /// The pinned fields, in [`LinkField::ALL`] order.
    pub fn fields(&self) -> Vec<LinkField> {
        let present = [
            self.latency_ms.is_some(),
            self.jitter_ms.is_some(),
            self.bandwidth_bps.is_some(),
            self.loss_pct.is_some(),
        ];
        LinkField::ALL
            .into_iter()
            .zip(present)
            .filter_map(|(field, set)| set.then_some(field))
            .collect()
    }

    /// Pins every field `other` pins, keeping the rest.
    pub(crate) fn merge(&mut self, other: &LinkPins) {
        self.latency_ms = other.latency_ms.or(self.latency_ms);
        self.jitter_ms = other.jitter_ms.or(self.jitter_ms);
        self.bandwidth_bps = other.bandwidth_bps.or(self.bandwidth_bps);
        self.loss_pct = other.loss_pct.or(self.loss_pct);
    }

    pub(crate) fn clear(&mut self, field: LinkField) {
        match field {
            LinkField::LatencyMs => self.latency_ms = None,
            LinkField::JitterMs => self.jitter_ms = None,
            LinkField::BandwidthBps => self.bandwidth_bps = None,
            LinkField::LossPct => self.loss_pct = None,
        }
    }

    /// The parameters of a link whose derived ones are `derived`.
    pub(crate) fn apply(&self, derived: LinkParams) -> LinkParams {
        LinkParams {
            latency_ms: self.latency_ms.unwrap_or(derived.latency_ms),
            jitter_ms: self.jitter_ms.unwrap_or(derived.jitter_ms),
            bandwidth_bps: self.bandwidth_bps.unwrap_or(derived.bandwidth_bps),
            loss_pct: self.loss_pct.unwrap_or(derived.loss_pct),
        }
    }
}

/// A link as the API shows it: `{a, b, latency_ms, jitter_ms, bandwidth_bps, loss_pct, pinned}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Link {
    #[serde(flatten)]
    pub pair: Pair,
    /// The effective parameters: derived, with pins applied.
    #[serde(flatten)]
    pub params: LinkParams,
    /// Which of `params` come from pins (the canvas draws such a link red).
    pub pinned: Vec<LinkField>,
    /// The link is cut (a partition or taken down): it drops everything, its `loss_pct` is
    /// 100 whatever it is pinned to.
    #[serde(default)]
    pub cut: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_ignore_order_and_refuse_loops() {
        let p = Pair::new(NodeId(7), NodeId(3)).unwrap();
        assert_eq!(p, Pair::new(NodeId(3), NodeId(7)).unwrap());
        assert_eq!((p.a(), p.b()), (NodeId(3), NodeId(7)));
        assert_eq!(
            Pair::new(NodeId(2), NodeId(2)),
            Err(ModelError::SameNode(NodeId(2)))
        );
    }

    #[test]
    fn pins_win_field_by_field() {
        let derived = LinkParams {
            latency_ms: 10.0,
            jitter_ms: 1.0,
            bandwidth_bps: 100,
            loss_pct: 0.0,
        };
        let pins = LinkPins {
            latency_ms: Some(99.0),
            loss_pct: Some(5.0),
            ..LinkPins::default()
        };
        assert_eq!(
            pins.apply(derived),
            LinkParams {
                latency_ms: 99.0,
                loss_pct: 5.0,
                ..derived
            }
        );
        assert_eq!(pins.fields(), [LinkField::LatencyMs, LinkField::LossPct]);
    }

    #[test]
    fn merge_and_clear_touch_only_their_fields() {
        let mut pins = LinkPins {
            latency_ms: Some(1.0),
            jitter_ms: Some(2.0),
            ..LinkPins::default()
        };
        pins.merge(&LinkPins {
            jitter_ms: Some(3.0),
            bandwidth_bps: Some(4),
            ..LinkPins::default()
        });
        assert_eq!(
            pins,
            LinkPins {
                latency_ms: Some(1.0),
                jitter_ms: Some(3.0),
                bandwidth_bps: Some(4),
                loss_pct: None,
            }
        );
        pins.clear(LinkField::LatencyMs);
        assert_eq!(pins.latency_ms, None);
        assert_eq!(
            pins.fields(),
            [LinkField::JitterMs, LinkField::BandwidthBps]
        );
    }

    #[test]
    fn bad_pins_name_the_field() {
        let cases = [
            (
                "latency_ms",
                LinkPins {
                    latency_ms: Some(-1.0),
                    ..LinkPins::default()
                },
            ),
            (
                "jitter_ms",
                LinkPins {
                    jitter_ms: Some(f64::NAN),
                    ..LinkPins::default()
                },
            ),
            (
                "loss_pct",
                LinkPins {
                    loss_pct: Some(101.0),
                    ..LinkPins::default()
                },
            ),
        ];
        for (field, pins) in cases {
            assert_eq!(pins.validate().unwrap_err().field(), Some(field));
        }
    }

    #[test]
    fn field_names_parse_back() {
        for field in LinkField::ALL {
            assert_eq!(field.name().parse::<LinkField>(), Ok(field));
        }
        assert_eq!(
            "latency".parse::<LinkField>().unwrap_err().field(),
            Some("field")
        );
    }
}
