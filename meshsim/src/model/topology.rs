//! The topology document: what `GET/PUT /api/topology` and `meshsim up <file>` exchange.
//!
//! It holds the inputs of the model only (settings, nodes, pins, cuts); links and routes
//! follow from them. Every struct refuses unknown fields, so a misspelt key is an error
//! rather than a silently ignored setting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    ClientLink, ClientLinks, LinkPins, ModelError, Node, NodeId, Pair, Settings, cut::Cuts,
};

/// A whole mesh: settings, nodes with positions, pinned link parameters, and the cuts
/// standing.
///
/// ```toml
/// [settings]
/// neighbours = 3
///
/// [[nodes]]
/// name = "n1"
/// x = 100
/// y = 100
///
/// [[pins]]
/// a = "n1"
/// b = "n2"
/// latency_ms = 20
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// The id the next added node gets, when it is not the one above the highest node's:
    /// ids are never reused, so a mesh whose highest nodes were removed remembers them here,
    /// and a scenario recorded from it adds the nodes the live mesh added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_id: Option<NodeId>,
    #[serde(default)]
    pub settings: Settings,
    #[serde(default)]
    pub nodes: Vec<NodeDoc>,
    /// Pins of pairs that are not linked are kept: they apply once the pair links again.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pins: Vec<PinDoc>,
    /// Every node's client link unless it has its own (`[client]`); unshaped when left out.
    #[serde(default, skip_serializing_if = "ClientLink::is_unshaped")]
    pub client: ClientLink,
    /// Nodes with a client link of their own (`[[clients]]`, like `[[pins]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientDoc>,
    /// Partitioned sides, each a list of node names, in the order they were made; the nodes
    /// not listed are the rest (see [`super::CutChange::Partition`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions: Vec<Vec<String>>,
    /// Links taken down on their own, as pairs of node names; like pins, kept while the
    /// pair is not linked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub down: Vec<[String; 2]>,
}

/// The client link of the node named `node`: `{node, latency_ms, jitter_ms, loss_pct,
/// bandwidth_up_bps, bandwidth_down_bps}`, each left out = 0 (unshaped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientDoc {
    pub node: String,
    #[serde(default)]
    pub latency_ms: f64,
    #[serde(default)]
    pub jitter_ms: f64,
    #[serde(default)]
    pub loss_pct: f64,
    #[serde(default)]
    pub bandwidth_up_bps: u64,
    #[serde(default)]
    pub bandwidth_down_bps: u64,
}

impl ClientDoc {
    pub fn new(node: NodeId, link: &ClientLink) -> Self {
        ClientDoc {
            node: node.name(),
            latency_ms: link.latency_ms,
            jitter_ms: link.jitter_ms,
            loss_pct: link.loss_pct,
            bandwidth_up_bps: link.bandwidth_up_bps,
            bandwidth_down_bps: link.bandwidth_down_bps,
        }
    }

    pub fn link(&self) -> ClientLink {
        ClientLink {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            loss_pct: self.loss_pct,
            bandwidth_up_bps: self.bandwidth_up_bps,
            bandwidth_down_bps: self.bandwidth_down_bps,
        }
    }
}

/// A node in a document. Give its `id`, its `name` (`n<id>`) or both; saving writes both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDoc {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<NodeId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub x: f64,
    pub y: f64,
}

/// Pinned parameters of the pair of nodes named `a` and `b` (in either order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinDoc {
    pub a: String,
    pub b: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_bps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss_pct: Option<f64>,
}

impl PinDoc {
    pub(crate) fn new(pair: Pair, pins: &LinkPins) -> Self {
        Self {
            a: pair.a().name(),
            b: pair.b().name(),
            latency_ms: pins.latency_ms,
            jitter_ms: pins.jitter_ms,
            bandwidth_bps: pins.bandwidth_bps,
            loss_pct: pins.loss_pct,
        }
    }

    fn pins(&self) -> LinkPins {
        LinkPins {
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            bandwidth_bps: self.bandwidth_bps,
            loss_pct: self.loss_pct,
        }
    }
}

/// A document that passed every check, in the model's own terms.
pub(crate) struct Checked {
    /// The document's `next_id`, or the id above its highest node's.
    pub(crate) next_id: u32,
    pub(crate) settings: Settings,
    pub(crate) nodes: BTreeMap<NodeId, Node>,
    pub(crate) pins: BTreeMap<Pair, LinkPins>,
    pub(crate) cuts: Cuts,
}

impl Topology {
    /// The client links the document sets (for a document that passed [`Self::validate`]).
    pub fn client_links(&self) -> ClientLinks {
        ClientLinks {
            default: self.client,
            nodes: self
                .clients
                .iter()
                .filter_map(|c| Some((c.node.parse().ok()?, c.link())))
                .collect(),
        }
    }

    /// Checks the document without loading it; the error names the first bad field, as a
    /// path such as `nodes[3].x` or `pins[0].b`.
    pub fn validate(&self) -> Result<(), ModelError> {
        self.check().map(drop)
    }

    pub(crate) fn check(&self) -> Result<Checked, ModelError> {
        self.settings.validate().map_err(|e| e.within("settings"))?;

        let mut nodes = BTreeMap::new();
        let mut seen_at: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (i, doc) in self.nodes.iter().enumerate() {
            let at = format!("nodes[{i}]");
            let id = doc.id(&at)?;
            if let Some(first) = seen_at.insert(id, i) {
                let (field, what) = match doc.name {
                    Some(_) => ("name", "name"),
                    None => ("id", "id"),
                };
                return Err(ModelError::invalid(
                    format!("{at}.{field}"),
                    format!("duplicate {what} {id} (also nodes[{first}])"),
                ));
            }
            let node = Node::new(id, doc.x, doc.y).map_err(|e| e.within(&at))?;
            nodes.insert(id, node);
        }

        // The node named `name`, which must be one of this document's; `field` is its path.
        let known = |field: String, name: &str| -> Result<NodeId, ModelError> {
            let id: NodeId = name
                .parse()
                .map_err(|e: super::NodeNameError| ModelError::invalid(&field, e.to_string()))?;
            if !nodes.contains_key(&id) {
                return Err(ModelError::invalid(field, format!("unknown node {id}")));
            }
            Ok(id)
        };

        let mut pins = BTreeMap::new();
        let mut pinned_at: BTreeMap<Pair, usize> = BTreeMap::new();
        for (i, doc) in self.pins.iter().enumerate() {
            let at = format!("pins[{i}]");
            let (a, b) = (
                known(format!("{at}.a"), &doc.a)?,
                known(format!("{at}.b"), &doc.b)?,
            );
            let pair = Pair::new(a, b).map_err(|_| {
                ModelError::invalid(format!("{at}.b"), format!("same node as a ({a})"))
            })?;
            let link_pins = doc.pins();
            link_pins.validate().map_err(|e| e.within(&at))?;
            if link_pins.is_empty() {
                return Err(ModelError::invalid(
                    at,
                    "pins no field: give latency_ms, jitter_ms, bandwidth_bps or loss_pct",
                ));
            }
            if let Some(first) = pinned_at.insert(pair, i) {
                return Err(ModelError::invalid(
                    at,
                    format!("{pair} is pinned already by pins[{first}]"),
                ));
            }
            pins.insert(pair, link_pins);
        }

        let above = nodes
            .keys()
            .next_back()
            .map_or(1, |last| last.0.saturating_add(1));
        let next_id = match self.next_id {
            None => above,
            Some(NodeId(0)) => return Err(ModelError::invalid("next_id", "ids start at 1")),
            Some(next) if next.0 < above => {
                return Err(ModelError::invalid(
                    "next_id",
                    format!(
                        "{next} is not above every node (the highest is n{}): ids are never reused",
                        above - 1
                    ),
                ));
            }
            Some(next) => next.0,
        };

        self.client.validate().map_err(|e| e.within("client"))?;
        let mut clients = BTreeMap::new();
        for (i, doc) in self.clients.iter().enumerate() {
            let at = format!("clients[{i}]");
            let field = format!("{at}.node");
            let id: NodeId = doc
                .node
                .parse()
                .map_err(|e: super::NodeNameError| ModelError::invalid(&field, e.to_string()))?;
            if !nodes.contains_key(&id) {
                return Err(ModelError::invalid(field, format!("unknown node {id}")));
            }
            doc.link().validate().map_err(|e| e.within(&at))?;
            if clients.insert(id, doc.link()).is_some() {
                return Err(ModelError::invalid(
                    field,
                    format!("{id} has a client link already"),
                ));
            }
        }

        let mut sides = Vec::with_capacity(self.partitions.len());
        let mut side_of: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (i, names) in self.partitions.iter().enumerate() {
            let at = format!("partitions[{i}]");
            if names.is_empty() {
                return Err(ModelError::invalid(at, "lists no node"));
            }
            let mut side = Vec::with_capacity(names.len());
            for (j, name) in names.iter().enumerate() {
                let field = format!("{at}[{j}]");
                let id = known(field.clone(), name)?;
                if let Some(first) = side_of.insert(id, i) {
                    return Err(ModelError::invalid(
                        field,
                        format!(
                            "{id} is in partitions[{first}] already: a node is on one side at most"
                        ),
                    ));
                }
                side.push(id);
            }
            sides.push(side);
        }
        let mut down: BTreeMap<Pair, usize> = BTreeMap::new();
        for (i, [a, b]) in self.down.iter().enumerate() {
            let at = format!("down[{i}]");
            let (a, b) = (known(format!("{at}[0]"), a)?, known(format!("{at}[1]"), b)?);
            let pair = Pair::new(a, b).map_err(|_| {
                ModelError::invalid(format!("{at}[1]"), format!("same node as the first ({a})"))
            })?;
            if let Some(first) = down.insert(pair, i) {
                return Err(ModelError::invalid(
                    at,
                    format!("{pair} is down already by down[{first}]"),
                ));
            }
        }

        Ok(Checked {
            next_id,
            settings: self.settings.clone(),
            nodes,
            pins,
            cuts: Cuts::new(&sides, down.into_keys().collect()),
        })
    }
}

impl NodeDoc {
    /// The node's id from `id`, `name`, or both if they agree.
    fn id(&self, at: &str) -> Result<NodeId, ModelError> {
        let from_name = self
            .name
            .as_deref()
            .map(|name| {
                name.parse::<NodeId>()
                    .map_err(|e| ModelError::invalid(format!("{at}.name"), e.to_string()))
            })
            .transpose()?;
        match (self.id, from_name) {
            (None, None) => Err(ModelError::invalid(
                format!("{at}.id"),
                "a node needs an id or a name",
            )),
            (Some(NodeId(0)), _) => Err(ModelError::invalid(format!("{at}.id"), "ids start at 1")),
            (Some(id), Some(named)) if id != named => Err(ModelError::invalid(
                format!("{at}.name"),
                format!("{named} does not match id {} (names are n<id>)", id.0),
            )),
            (Some(id), _) | (None, Some(id)) => Ok(id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u32, x: f64, y: f64) -> NodeDoc {
        NodeDoc {
            id: Some(NodeId(id)),
            name: Some(NodeId(id).name()),
            x,
            y,
        }
    }

    fn pin(a: &str, b: &str) -> PinDoc {
        PinDoc {
            a: a.into(),
            b: b.into(),
            latency_ms: Some(10.0),
            jitter_ms: None,
            bandwidth_bps: None,
            loss_pct: None,
        }
    }

    fn valid() -> Topology {
        Topology {
            settings: Settings::default(),
            nodes: vec![node(1, 0.0, 0.0), node(2, 100.0, 0.0), node(5, 200.0, 0.0)],
            pins: vec![pin("n1", "n2")],
            ..Topology::default()
        }
    }

    fn error_field(spoil: impl FnOnce(&mut Topology)) -> String {
        let mut topology = valid();
        spoil(&mut topology);
        let err = topology.validate().unwrap_err();
        err.field()
            .unwrap_or_else(|| panic!("{err} names no field"))
            .to_owned()
    }

    #[test]
    fn a_valid_document_passes() {
        let checked = valid().check().unwrap();
        assert_eq!(checked.nodes.len(), 3);
        assert_eq!(checked.pins.len(), 1);
    }

    #[test]
    fn nodes_may_give_only_a_name_or_only_an_id() {
        let mut topology = valid();
        topology.nodes[0].id = None;
        topology.nodes[1].name = None;
        let checked = topology.check().unwrap();
        assert_eq!(
            checked.nodes.keys().copied().collect::<Vec<_>>(),
            [NodeId(1), NodeId(2), NodeId(5)]
        );
    }

    #[test]
    fn bad_documents_name_the_field() {
        type Spoil = Box<dyn FnOnce(&mut Topology)>;
        let cases: Vec<(&str, Spoil)> = vec![
            (
                "settings.loss_pct",
                Box::new(|t| t.settings.loss_pct = -1.0),
            ),
            ("nodes[1].x", Box::new(|t| t.nodes[1].x = f64::NAN)),
            ("nodes[2].y", Box::new(|t| t.nodes[2].y = 1e9)),
            (
                "nodes[2].name",
                Box::new(|t| t.nodes[2] = node(1, 5.0, 5.0)),
            ),
            (
                "nodes[2].id",
                Box::new(|t| {
                    t.nodes[2] = NodeDoc {
                        name: None,
                        ..node(2, 5.0, 5.0)
                    }
                }),
            ),
            (
                "nodes[0].name",
                Box::new(|t| t.nodes[0].name = Some("n7".into())),
            ),
            (
                "nodes[0].name",
                Box::new(|t| t.nodes[0].name = Some("alice".into())),
            ),
            (
                "nodes[0].id",
                Box::new(|t| {
                    t.nodes[0] = NodeDoc {
                        id: None,
                        name: None,
                        x: 0.0,
                        y: 0.0,
                    }
                }),
            ),
            (
                "nodes[0].id",
                Box::new(|t| {
                    t.nodes[0] = NodeDoc {
                        name: None,
                        ..node(0, 0.0, 0.0)
                    }
                }),
            ),
            ("pins[0].b", Box::new(|t| t.pins[0].b = "n9".into())),
            ("pins[0].a", Box::new(|t| t.pins[0].a = "1".into())),
            ("pins[0].b", Box::new(|t| t.pins[0].b = "n1".into())),
            (
                "pins[0].latency_ms",
                Box::new(|t| t.pins[0].latency_ms = Some(-5.0)),
            ),
            (
                "pins[0].loss_pct",
                Box::new(|t| t.pins[0].loss_pct = Some(f64::INFINITY)),
            ),
            ("pins[0]", Box::new(|t| t.pins[0].latency_ms = None)),
            ("pins[1]", Box::new(|t| t.pins.push(pin("n2", "n1")))),
            ("partitions[0]", Box::new(|t| t.partitions = vec![vec![]])),
            (
                "partitions[0][1]",
                Box::new(|t| t.partitions = vec![vec!["n1".into(), "n3".into()]]),
            ),
            (
                "partitions[1][0]",
                Box::new(|t| t.partitions = vec![vec!["n1".into()], vec!["n1".into()]]),
            ),
            (
                "down[0][1]",
                Box::new(|t| t.down = vec![["n1".into(), "n9".into()]]),
            ),
            (
                "down[0][1]",
                Box::new(|t| t.down = vec![["n2".into(), "n2".into()]]),
            ),
            (
                "down[1]",
                Box::new(|t| t.down = vec![["n1".into(), "n5".into()], ["n5".into(), "n1".into()]]),
            ),
            ("next_id", Box::new(|t| t.next_id = Some(NodeId(0)))),
            ("next_id", Box::new(|t| t.next_id = Some(NodeId(5)))),
        ];
        for (field, spoil) in cases {
            assert_eq!(error_field(spoil), field);
        }
    }

    #[test]
    fn next_id_defaults_to_the_one_above_the_highest_node() {
        assert_eq!(valid().check().unwrap().next_id, 6);
        let mut topology = valid();
        topology.next_id = Some(NodeId(9));
        assert_eq!(topology.check().unwrap().next_id, 9);
    }

    #[test]
    fn unknown_top_level_fields_are_refused() {
        use serde::de::{IntoDeserializer, value::MapDeserializer};
        let fields = [("nodez", 1u32)];
        let de: MapDeserializer<'_, _, serde::de::value::Error> =
            MapDeserializer::new(fields.into_iter().map(|(k, v)| (k, v.into_deserializer())));
        let err = Topology::deserialize(de).unwrap_err();
        assert!(err.to_string().contains("unknown field `nodez`"), "{err}");
    }
}
