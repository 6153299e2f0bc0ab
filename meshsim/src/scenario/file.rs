//! Scenario files: a topology file plus a `[[step]]` list, checked in full before anything
//! starts. Every error is one line with file:line:column and the field, like topology files:
//!
//! ```text
//! partition.toml:31:13: step[4].move.node: no node n9 at this step (there are n1 … n6)
//! ```
//!
//! Which nodes exist at each step is followed through the list (adds get the next ids,
//! removes take theirs away), so a step that names a node removed earlier is refused here,
//! not half-way through a run.

use std::{
    collections::BTreeSet,
    fs,
    ops::Range,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::Deserialize;
use toml::Spanned;

use super::step::{Action, Condition, Step, When};
use crate::{
    model::{ClientLink, CutChange, LinkField, LinkPins, ModelError, NodeId, Settings},
    topology_file::{self, Location, TopologyFile, TopologyFileError},
};

/// Why a scenario file was refused: its topology part, or one of its steps.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error(transparent)]
    File(#[from] TopologyFileError),
    #[error("{at}: {field}: {message}")]
    Step {
        at: Location,
        field: String,
        message: String,
    },
    /// A `--set key=value` that cannot be.
    #[error("--set {key}: {message}")]
    Set { key: String, message: String },
}

impl ScenarioError {
    /// The field the error is about (`step[3].at`).
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::File(e) => e.field(),
            Self::Step { field, .. } => Some(field),
            Self::Set { key, .. } => Some(key),
        }
    }

    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::File(e) => e.location(),
            Self::Step { at, .. } => Some(at),
            Self::Set { .. } => None,
        }
    }
}

/// A checked scenario: the topology and run settings, and the steps in file order.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub path: PathBuf,
    /// The file as read, kept for the run's output.
    pub text: String,
    pub file: TopologyFile,
    pub steps: Vec<Step>,
}

impl Scenario {
    /// Whether a step needs homeservers (a `send`, or a wait for Matrix).
    pub fn needs_matrix(&self) -> bool {
        self.steps.iter().any(|s| s.action.needs_matrix())
    }
}

/// Reads and checks the scenario at `path`.
pub fn read(path: &Path) -> Result<Scenario, ScenarioError> {
    let text = fs::read_to_string(path).map_err(|error| TopologyFileError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse(path, &text)
}

/// The `[[step]]` list as serde reads it.
#[derive(Deserialize)]
struct StepsDoc {
    #[serde(default)]
    step: Vec<Spanned<StepDoc>>,
}

/// One step: a time, and exactly one action.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDoc {
    at: Option<Spanned<String>>,
    after: Option<Spanned<String>>,
    add: Option<Spanned<AddDoc>>,
    #[serde(rename = "move")]
    move_node: Option<Spanned<MoveDoc>>,
    remove: Option<Spanned<String>>,
    pin: Option<Spanned<PinStepDoc>>,
    unpin: Option<Spanned<UnpinDoc>>,
    settings: Option<Spanned<toml::Table>>,
    client: Option<Spanned<ClientStepDoc>>,
    partition: Option<Spanned<Vec<Spanned<String>>>>,
    /// `"all"` or a list of nodes (a `toml::Value`: serde's untagged enums lose spans).
    heal: Option<Spanned<toml::Value>>,
    down: Option<Spanned<[Spanned<String>; 2]>>,
    up: Option<Spanned<[Spanned<String>; 2]>>,
    flap: Option<Spanned<FlapDoc>>,
    send: Option<Spanned<SendDoc>>,
    wait: Option<Spanned<WaitDoc>>,
    mark: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddDoc {
    name: Option<Spanned<String>>,
    x: f64,
    y: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveDoc {
    node: Spanned<String>,
    x: f64,
    y: f64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinStepDoc {
    a: Spanned<String>,
    b: Spanned<String>,
    latency_ms: Option<f64>,
    jitter_ms: Option<f64>,
    bandwidth_bps: Option<u64>,
    loss_pct: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnpinDoc {
    a: Spanned<String>,
    b: Spanned<String>,
    field: Option<Spanned<String>>,
}

/// A client link: a node's own (`node = "n1"`) or the default; fields left out are 0.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientStepDoc {
    node: Option<Spanned<String>>,
    #[serde(flatten)]
    link: ClientLink,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlapDoc {
    a: Spanned<String>,
    b: Spanned<String>,
    period: Spanned<String>,
    #[serde(rename = "for")]
    duration: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendDoc {
    from: Spanned<String>,
    body: Option<String>,
    room: Option<String>,
    count: Option<Spanned<u32>>,
    every: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WaitDoc {
    until: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    #[serde(rename = "for")]
    duration: Option<Spanned<String>>,
}

/// Parses and checks `text`; `path` only names the file in errors.
pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
    let (file, doc) = topology_file::parse_file_with::<StepsDoc>(path, text)?;
    let mut checker = Checker::new(path, text, &file);
    let mut steps = Vec::with_capacity(doc.step.len());
    for (index, step) in doc.step.into_iter().enumerate() {
        steps.push(checker.step(index, step)?);
    }
    Ok(Scenario {
        path: path.to_owned(),
        text: text.to_owned(),
        file,
        steps,
    })
}

/// Follows the scenario through its steps: which nodes exist, the next id, the last `at`.
struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    nodes: BTreeSet<NodeId>,
    next_id: u32,
    settings: Settings,
    last_at: Option<(Duration, usize)>,
}

impl<'a> Checker<'a> {
    fn new(path: &'a Path, text: &'a str, file: &TopologyFile) -> Self {
        let model = crate::model::Model::from_topology(&file.topology)
            .expect("a checked topology file loads");
        Checker {
            path,
            text,
            nodes: model.nodes().map(|n| n.id).collect(),
            next_id: model.next_id().0,
            settings: file.topology.settings.clone(),
            last_at: None,
        }
    }

    fn error(
        &self,
        span: Range<usize>,
        field: String,
        message: impl Into<String>,
    ) -> ScenarioError {
        ScenarioError::Step {
            at: Location::of(self.path, self.text, span.start),
            field,
            message: message.into(),
        }
    }

    fn duration(&self, value: &Spanned<String>, field: String) -> Result<Duration, ScenarioError> {
        parse_duration(value.get_ref()).map_err(|m| self.error(value.span(), field, m))
    }

    fn node(&self, name: &Spanned<String>, field: String) -> Result<NodeId, ScenarioError> {
        let id = name
            .get_ref()
            .parse::<NodeId>()
            .map_err(|e| self.error(name.span(), field.clone(), e.to_string()))?;
        if !self.nodes.contains(&id) {
            let there = match (self.nodes.first(), self.nodes.last()) {
                (Some(first), Some(last)) if first == last => format!("there is {first}"),
                (Some(first), Some(last)) => {
                    format!("there are {} from {first} to {last}", self.nodes.len())
                }
                _ => "there are none".to_owned(),
            };
            return Err(self.error(
                name.span(),
                field,
                format!("no node {id} at this step ({there})"),
            ));
        }
        Ok(id)
    }

    fn step(&mut self, index: usize, doc: Spanned<StepDoc>) -> Result<Step, ScenarioError> {
        let span = doc.span();
        let line = Location::of(self.path, self.text, span.start).line;
        let doc = doc.into_inner();
        let field = |name: &str| format!("step[{index}].{name}");
        let when = match (&doc.at, &doc.after) {
            (Some(_), Some(after)) => {
                return Err(self.error(
                    after.span(),
                    field("after"),
                    "give `at` (from the start) or `after` (from the previous step's end), not both",
                ));
            }
            (Some(at), None) => {
                let t = self.duration(at, field("at"))?;
                if let Some((last, last_index)) = self.last_at
                    && t < last
                {
                    return Err(self.error(
                        at.span(),
                        field("at"),
                        format!(
                            "steps out of order: {} comes after step[{last_index}] at {}; \
                             steps run in file order",
                            show(t),
                            show(last)
                        ),
                    ));
                }
                self.last_at = Some((t, index));
                When::At(t)
            }
            (None, Some(after)) => When::After(self.duration(after, field("after"))?),
            (None, None) => When::After(Duration::ZERO),
        };
        let action = self.action(index, span, doc)?;
        Ok(Step {
            index,
            line,
            when,
            action,
        })
    }

    fn action(
        &mut self,
        index: usize,
        span: Range<usize>,
        doc: StepDoc,
    ) -> Result<Action, ScenarioError> {
        let field = |name: &str| format!("step[{index}].{name}");
        let given: Vec<&str> = [
            ("add", doc.add.is_some()),
            ("move", doc.move_node.is_some()),
            ("remove", doc.remove.is_some()),
            ("pin", doc.pin.is_some()),
            ("unpin", doc.unpin.is_some()),
            ("settings", doc.settings.is_some()),
            ("client", doc.client.is_some()),
            ("partition", doc.partition.is_some()),
            ("heal", doc.heal.is_some()),
            ("down", doc.down.is_some()),
            ("up", doc.up.is_some()),
            ("flap", doc.flap.is_some()),
            ("send", doc.send.is_some()),
            ("wait", doc.wait.is_some()),
            ("mark", doc.mark.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect();
        match given.as_slice() {
            [_] => {}
            [] => {
                return Err(self.error(
                    span,
                    format!("step[{index}]"),
                    "says nothing to do: give one of add, move, remove, pin, unpin, settings, \
                     client, partition, heal, down, up, flap, send, wait, mark",
                ));
            }
            more => {
                return Err(self.error(
                    span,
                    format!("step[{index}]"),
                    format!("gives {}: one action per step", more.join(" and ")),
                ));
            }
        }
        if let Some(add) = doc.add {
            let (add_span, add) = (add.span(), add.into_inner());
            let id = NodeId(self.next_id);
            if let Some(name) = &add.name
                && name.get_ref() != &id.name()
            {
                return Err(self.error(
                    name.span(),
                    field("add.name"),
                    format!(
                        "the node this step adds is {id} (ids are given in order and never \
                         reused); name it {id} or leave the name out"
                    ),
                ));
            }
            crate::model::Node::new(id, add.x, add.y)
                .map_err(|e| self.error(add_span, field("add"), e.to_string()))?;
            self.next_id += 1;
            self.nodes.insert(id);
            return Ok(Action::Add {
                id,
                x: add.x,
                y: add.y,
            });
        }
        if let Some(m) = doc.move_node {
            let (m_span, m) = (m.span(), m.into_inner());
            let node = self.node(&m.node, field("move.node"))?;
            crate::model::Node::new(node, m.x, m.y)
                .map_err(|e| self.error(m_span, field("move"), e.to_string()))?;
            return Ok(Action::Move {
                node,
                x: m.x,
                y: m.y,
            });
        }
        if let Some(name) = doc.remove {
            let node = self.node(&name, field("remove"))?;
            self.nodes.remove(&node);
            return Ok(Action::Remove(node));
        }
        if let Some(pin) = doc.pin {
            let (pin_span, pin) = (pin.span(), pin.into_inner());
            let (a, b) = self.pair(&pin.a, &pin.b, "pin", index)?;
            let pins = LinkPins {
                latency_ms: pin.latency_ms,
                jitter_ms: pin.jitter_ms,
                bandwidth_bps: pin.bandwidth_bps,
                loss_pct: pin.loss_pct,
            };
            if pins.is_empty() {
                return Err(self.error(
                    pin_span,
                    field("pin"),
                    "pins nothing: give latency_ms, jitter_ms, bandwidth_bps or loss_pct",
                ));
            }
            pins.validate().map_err(|e| {
                self.error(
                    pin_span.clone(),
                    field(&format!("pin.{}", e.field().unwrap_or(""))),
                    e.to_string(),
                )
            })?;
            return Ok(Action::Pin { a, b, pins });
        }
        if let Some(unpin) = doc.unpin {
            let unpin = unpin.into_inner();
            let (a, b) = self.pair(&unpin.a, &unpin.b, "unpin", index)?;
            let field_name = unpin
                .field
                .as_ref()
                .map(|f| {
                    f.get_ref()
                        .parse::<LinkField>()
                        .map_err(|e| self.error(f.span(), field("unpin.field"), e.to_string()))
                })
                .transpose()?;
            return Ok(Action::Unpin {
                a,
                b,
                field: field_name,
            });
        }
        if let Some(patch) = doc.settings {
            let (patch_span, patch) = (patch.span(), patch.into_inner());
            let settings = patch_settings(&self.settings, &patch)
                .map_err(|e| self.error(patch_span, field(&format!("settings.{}", e.0)), e.1))?;
            self.settings = settings;
            return Ok(Action::Settings(patch));
        }
        if let Some(client) = doc.client {
            let (client_span, client) = (client.span(), client.into_inner());
            let node = client
                .node
                .as_ref()
                .map(|n| self.node(n, field("client.node")))
                .transpose()?;
            client.link.validate().map_err(|e| {
                self.error(
                    client_span,
                    field(&format!("client.{}", e.field().unwrap_or(""))),
                    e.to_string(),
                )
            })?;
            return Ok(Action::Client {
                node,
                link: client.link,
            });
        }
        if let Some(names) = doc.partition {
            let (names_span, names) = (names.span(), names.into_inner());
            if names.is_empty() {
                return Err(self.error(names_span, field("partition"), "lists no node"));
            }
            let ids = names
                .iter()
                .enumerate()
                .map(|(i, n)| self.node(n, field(&format!("partition[{i}]"))))
                .collect::<Result<Vec<_>, _>>()?;
            return Ok(Action::Cut(CutChange::Partition(ids)));
        }
        if let Some(heal) = doc.heal {
            let heal_span = heal.span();
            let spanned = |name: String| Spanned::new(heal_span.clone(), name);
            return match heal.into_inner() {
                toml::Value::String(w) if w == "all" => Ok(Action::Cut(CutChange::Heal(None))),
                toml::Value::Array(items) if !items.is_empty() => {
                    let ids = items
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| match item {
                            toml::Value::String(name) => {
                                self.node(&spanned(name), field(&format!("heal[{i}]")))
                            }
                            other => Err(self.error(
                                heal_span.clone(),
                                field(&format!("heal[{i}]")),
                                format!("expected a node name, got {other}"),
                            )),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Ok(Action::Cut(CutChange::Heal(Some(ids))))
                }
                toml::Value::Array(_) => Err(self.error(
                    heal_span,
                    field("heal"),
                    "lists no node: heal = \"all\" heals every partition",
                )),
                other => Err(self.error(
                    heal_span,
                    field("heal"),
                    format!("expected \"all\" or a list of nodes, got {other}"),
                )),
            };
        }
        if let Some(pair) = doc.down {
            let [a, b] = pair.into_inner();
            let (a, b) = self.pair(&a, &b, "down", index)?;
            return Ok(Action::Cut(CutChange::Down(a, b)));
        }
        if let Some(pair) = doc.up {
            let [a, b] = pair.into_inner();
            let (a, b) = self.pair(&a, &b, "up", index)?;
            return Ok(Action::Cut(CutChange::Up(a, b)));
        }
        if let Some(flap) = doc.flap {
            let flap = flap.into_inner();
            let (a, b) = self.pair(&flap.a, &flap.b, "flap", index)?;
            let period = self.duration(&flap.period, field("flap.period"))?;
            let duration = self.duration(&flap.duration, field("flap.for"))?;
            if period < Duration::from_millis(10) {
                return Err(self.error(
                    flap.period.span(),
                    field("flap.period"),
                    "must be at least 10ms (the link is down half of it, up the other half)",
                ));
            }
            if duration < period {
                return Err(self.error(
                    flap.duration.span(),
                    field("flap.for"),
                    format!("is shorter than one period ({})", show(period)),
                ));
            }
            return Ok(Action::Flap {
                a,
                b,
                period,
                duration,
            });
        }
        if let Some(send) = doc.send {
            let send = send.into_inner();
            let from = self.node(&send.from, field("send.from"))?;
            let count = send.count.as_ref().map_or(1, |c| *c.get_ref());
            if count == 0 {
                let c = send.count.as_ref().expect("count 0 was given");
                return Err(self.error(c.span(), field("send.count"), "must be at least 1"));
            }
            let every = send
                .every
                .as_ref()
                .map(|e| self.duration(e, field("send.every")))
                .transpose()?;
            if count > 1 && every.is_none() {
                return Err(self.error(
                    send.from.span(),
                    field("send.every"),
                    format!("{count} messages need an interval: every = \"1s\""),
                ));
            }
            return Ok(Action::Send {
                from,
                body: send.body,
                room: send.room,
                count,
                every: every.unwrap_or_default(),
            });
        }
        if let Some(wait) = doc.wait {
            let (wait_span, wait) = (wait.span(), wait.into_inner());
            return match (&wait.until, &wait.duration) {
                (Some(_), Some(d)) => Err(self.error(
                    d.span(),
                    field("wait.for"),
                    "give `until` (a condition, with a timeout) or `for` (a time), not both",
                )),
                (None, Some(d)) => {
                    if let Some(t) = &wait.timeout {
                        return Err(self.error(
                            t.span(),
                            field("wait.timeout"),
                            "a wait `for` a time has no timeout",
                        ));
                    }
                    Ok(Action::WaitFor(self.duration(d, field("wait.for"))?))
                }
                (Some(until), None) => {
                    let condition = match until.get_ref().as_str() {
                        "ready" => Condition::Ready,
                        "converged" => Condition::Converged,
                        "delivered" => Condition::Delivered,
                        other => {
                            return Err(self.error(
                                until.span(),
                                field("wait.until"),
                                format!(
                                    "unknown condition {other:?}: expected \"ready\" (every \
                                     node's workload answers), \"converged\" (every homeserver \
                                     is in the mesh room) or \"delivered\" (every message \
                                     sent so far has reached every homeserver)"
                                ),
                            ));
                        }
                    };
                    let timeout = match &wait.timeout {
                        Some(t) => self.duration(t, field("wait.timeout"))?,
                        None => {
                            return Err(self.error(
                                wait_span,
                                field("wait.timeout"),
                                "a wait until a condition needs a timeout: timeout = \"120s\"",
                            ));
                        }
                    };
                    Ok(Action::WaitUntil { condition, timeout })
                }
                (None, None) => Err(self.error(
                    wait_span,
                    field("wait"),
                    "give until = \"ready\" | \"converged\" | \"delivered\" with a timeout, or for = \"10s\"",
                )),
            };
        }
        if let Some(mark) = doc.mark {
            if mark.get_ref().trim().is_empty() {
                return Err(self.error(mark.span(), field("mark"), "must not be empty"));
            }
            return Ok(Action::Mark(mark.into_inner()));
        }
        unreachable!("exactly one action was given")
    }

    fn pair(
        &self,
        a: &Spanned<String>,
        b: &Spanned<String>,
        what: &str,
        index: usize,
    ) -> Result<(NodeId, NodeId), ScenarioError> {
        let field = |end: &str| format!("step[{index}].{what}.{end}");
        let ida = self.node(a, field("a"))?;
        let idb = self.node(b, field("b"))?;
        if ida == idb {
            return Err(self.error(
                b.span(),
                field("b"),
                format!("a link joins two different nodes, got {ida} twice"),
            ));
        }
        Ok((ida, idb))
    }
}

/// `settings` with the keys of `patch` replaced; `Err((key, message))` names the bad key.
pub(crate) fn patch_settings(
    settings: &Settings,
    patch: &toml::Table,
) -> Result<Settings, (String, String)> {
    let mut value = serde_json::to_value(settings).expect("settings serialise");
    let object = value.as_object_mut().expect("settings are an object");
    for (key, v) in patch {
        if !object.contains_key(key) {
            let known: Vec<&String> = object.keys().collect();
            return Err((
                key.clone(),
                format!(
                    "unknown setting; the settings are {}",
                    known
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let json = serde_json::to_value(v).map_err(|e| (key.clone(), e.to_string()))?;
        object.insert(key.clone(), json);
    }
    let patched: Settings = serde_json::from_value(value).map_err(|e| {
        let key = patch.keys().next().cloned().unwrap_or_default();
        (key, e.to_string())
    })?;
    patched.validate().map_err(|e: ModelError| {
        (
            e.field()
                .map(|f| f.trim_start_matches("settings.").to_owned())
                .unwrap_or_default(),
            e.to_string(),
        )
    })?;
    Ok(patched)
}

/// `12s`, `500ms`, `2m`, `1m 30s`, `1.5s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a time: write it as 500ms, 12s, 1.5s, 2m or 1m 30s");
    let t = text.trim();
    if t.is_empty() {
        return Err(bad());
    }
    // A decimal number of one unit (`1.5s`), which humantime does not read.
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.contains('.') {
        let n: f64 = number.parse().map_err(|_| bad())?;
        let scale = match unit.trim() {
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        return Duration::try_from_secs_f64(n * scale).map_err(|_| bad());
    }
    humantime::parse_duration(t).map_err(|_| bad())
}

/// A duration as a person writes it: `1.5s`, `250ms`.
pub fn show(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

impl Scenario {
    /// Applies `--set key=value`: `settings.<field>` (the mesh's settings) or
    /// `client.<field>` (the default client link), with `value` read as a TOML value (a
    /// bare word is a string). The steps were checked against the file's settings; a
    /// `settings` step later still changes only its own keys.
    pub fn set(&mut self, assignment: &str) -> Result<(), ScenarioError> {
        let refuse = |key: &str, message: String| ScenarioError::Set {
            key: key.to_owned(),
            message,
        };
        let Some((key, value)) = assignment.split_once('=') else {
            return Err(refuse(
                assignment,
                "write it as key=value, e.g. --set client.bandwidth_down_bps=64000".into(),
            ));
        };
        let key = key.trim();
        let value: toml::Value = format!("v = {}", value.trim())
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.trim().to_owned()));
        let (table, field) = key.split_once('.').unwrap_or((key, ""));
        let patch = toml::Table::from_iter([(field.to_owned(), value)]);
        match table {
            "settings" => {
                self.file.topology.settings = patch_settings(&self.file.topology.settings, &patch)
                    .map_err(|(_, message)| refuse(key, message))?;
            }
            "client" => {
                let mut link = serde_json::to_value(self.file.topology.client)
                    .expect("a client link serialises");
                let object = link.as_object_mut().expect("a client link is an object");
                if !object.contains_key(field) {
                    let known: Vec<&str> = object.keys().map(String::as_str).collect();
                    return Err(refuse(
                        key,
                        format!("unknown field; a client link has {}", known.join(", ")),
                    ));
                }
                object.insert(
                    field.to_owned(),
                    serde_json::to_value(&patch[field]).map_err(|e| refuse(key, e.to_string()))?,
                );
                let link: ClientLink =
                    serde_json::from_value(link).map_err(|e| refuse(key, e.to_string()))?;
                link.validate().map_err(|e| refuse(key, e.to_string()))?;
                self.file.topology.client = link;
            }
            _ => {
                return Err(refuse(
                    key,
                    "only settings.<field> and client.<field> can be set (e.g. \
                     settings.latency_scale_pct=200, client.bandwidth_down_bps=64000)"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[[nodes]]\nname = \"n1\"\nx = 100\ny = 100\n\n[[nodes]]\nname = \"n2\"\nx = 200\ny = 100\n\n[[nodes]]\nname = \"n3\"\nx = 300\ny = 100\n";

    fn parse_steps(steps: &str) -> Result<Scenario, ScenarioError> {
        parse(Path::new("s.toml"), &format!("{HEAD}\n{steps}"))
    }

    /// The line (within the steps text, from 1) and field of the error for `steps`.
    fn refused(steps: &str) -> (usize, String, String) {
        let e = parse_steps(steps).expect_err("refused");
        let head_lines = HEAD.lines().count() + 1;
        let line = e.location().expect("located").line - head_lines;
        (line, e.field().unwrap_or("").to_owned(), e.to_string())
    }

    #[test]
    fn every_step_kind_parses() {
        let s = parse_steps(
            r#"
[[step]]
wait = { until = "ready", timeout = "2m" }
[[step]]
at = "1.5s"
add = { x = 400, y = 100 }
[[step]]
after = "500ms"
move = { node = "n4", x = 410, y = 100 }
[[step]]
pin = { a = "n1", b = "n2", latency_ms = 50, loss_pct = 1 }
[[step]]
unpin = { a = "n1", b = "n2", field = "loss_pct" }
[[step]]
settings = { latency_scale_pct = 200.0 }
[[step]]
client = { node = "n1", latency_ms = 300, bandwidth_down_bps = 64000 }
[[step]]
client = { bandwidth_up_bps = 32000 }
[[step]]
partition = ["n1", "n2"]
[[step]]
heal = ["n1"]
[[step]]
heal = "all"
[[step]]
down = ["n2", "n3"]
[[step]]
up = ["n2", "n3"]
[[step]]
flap = { a = "n1", b = "n2", period = "2s", for = "10s" }
[[step]]
send = { from = "n1", body = "hi" }
[[step]]
send = { from = "n2", count = 5, every = "1s" }
[[step]]
wait = { until = "delivered", timeout = "60s" }
[[step]]
wait = { until = "converged", timeout = "60s" }
[[step]]
wait = { for = "3s" }
[[step]]
mark = "done"
[[step]]
remove = "n4"
"#,
        )
        .unwrap();
        let kinds: Vec<&str> = s.steps.iter().map(|s| s.action.kind()).collect();
        assert_eq!(
            kinds,
            [
                "wait",
                "add",
                "move",
                "pin",
                "unpin",
                "settings",
                "client",
                "client",
                "partition",
                "heal",
                "heal",
                "down",
                "up",
                "flap",
                "send",
                "send",
                "wait",
                "wait",
                "wait",
                "mark",
                "remove"
            ]
        );
        assert_eq!(s.steps[1].when, When::At(Duration::from_millis(1500)));
        assert_eq!(s.steps[2].when, When::After(Duration::from_millis(500)));
        assert_eq!(s.steps[0].when, When::After(Duration::ZERO));
        assert_eq!(
            s.steps[1].action,
            Action::Add {
                id: NodeId(4),
                x: 400.0,
                y: 100.0
            }
        );
        assert_eq!(
            s.steps[8].action,
            Action::Cut(CutChange::Partition(vec![NodeId(1), NodeId(2)]))
        );
        assert_eq!(s.steps[10].action, Action::Cut(CutChange::Heal(None)));
        assert_eq!(
            s.steps[15].action,
            Action::Send {
                from: NodeId(2),
                body: None,
                room: None,
                count: 5,
                every: Duration::from_secs(1)
            }
        );
        assert!(s.needs_matrix());
        // The head, the blank line after it, the steps text's opening newline, 9 lines of steps.
        assert_eq!(s.steps[3].line, HEAD.lines().count() + 2 + 9);
    }

    #[test]
    fn errors_point_at_the_field() {
        let cases: &[(&str, usize, &str, &str)] = &[
            (
                "[[step]]\njump = \"n1\"\n",
                2,
                "step[0].jump",
                "unknown field",
            ),
            (
                "[[step]]\nat = \"soon\"\nmark = \"x\"\n",
                2,
                "step[0].at",
                "not a time",
            ),
            (
                "[[step]]\nat = \"5s\"\nmark = \"a\"\n[[step]]\nat = \"2s\"\nmark = \"b\"\n",
                5,
                "step[1].at",
                "out of order",
            ),
            (
                "[[step]]\nmove = { node = \"n9\", x = 1, y = 1 }\n",
                2,
                "step[0].move.node",
                "no node n9",
            ),
            (
                "[[step]]\nremove = \"n2\"\n[[step]]\npartition = [\"n1\", \"n2\"]\n",
                4,
                "step[1].partition[1]",
                "no node n2",
            ),
            (
                "[[step]]\nmark = \"a\"\nheal = \"all\"\n",
                1,
                "step[0]",
                "one action per step",
            ),
            ("[[step]]\nat = \"1s\"\n", 1, "step[0]", "nothing to do"),
            (
                "[[step]]\nat = \"1s\"\nafter = \"1s\"\nmark = \"a\"\n",
                3,
                "step[0].after",
                "not both",
            ),
            (
                "[[step]]\nadd = { name = \"n7\", x = 1, y = 1 }\n",
                2,
                "step[0].add.name",
                "is n4",
            ),
            (
                "[[step]]\nflap = { a = \"n1\", b = \"n2\", period = \"4s\", for = \"1s\" }\n",
                2,
                "step[0].flap.for",
                "shorter than one period",
            ),
            (
                "[[step]]\nsend = { from = \"n1\", count = 3 }\n",
                2,
                "step[0].send.every",
                "need an interval",
            ),
            (
                "[[step]]\nwait = { until = \"done\", timeout = \"1s\" }\n",
                2,
                "step[0].wait.until",
                "unknown condition",
            ),
            (
                "[[step]]\nwait = { until = \"ready\" }\n",
                2,
                "step[0].wait.timeout",
                "needs a timeout",
            ),
            (
                "[[step]]\nsettings = { neighbors = 3 }\n",
                2,
                "step[0].settings.neighbors",
                "unknown setting",
            ),
            (
                "[[step]]\nsettings = { loss_pct = 300.0 }\n",
                2,
                "step[0].settings.loss_pct",
                "loss_pct",
            ),
            (
                "[[step]]\ndown = [\"n1\", \"n1\"]\n",
                2,
                "step[0].down.b",
                "two different nodes",
            ),
            (
                "[[step]]\npin = { a = \"n1\", b = \"n2\" }\n",
                2,
                "step[0].pin",
                "pins nothing",
            ),
            ("[[step]]\nheal = \"some\"\n", 2, "step[0].heal", "\"all\""),
        ];
        for (steps, line, field, says) in cases {
            let (l, f, message) = refused(steps);
            assert_eq!((l, f.as_str()), (*line, *field), "{steps}: {message}");
            assert!(message.contains(says), "{steps}: {message} lacks {says:?}");
            assert!(message.starts_with("s.toml:"), "{message}");
        }
    }

    #[test]
    fn a_topology_file_with_steps_is_refused_by_up() {
        let e = topology_file::parse(
            Path::new("t.toml"),
            &format!("{HEAD}\n[[step]]\nmark = \"x\"\n"),
        )
        .unwrap_err();
        assert_eq!(e.field(), Some("step"));
        assert!(e.to_string().contains("meshsim run"), "{e}");
    }

    #[test]
    fn the_example_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/scenarios");
        let mut parsed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let scenario = read(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(scenario.needs_matrix(), "{}", path.display());
            parsed += 1;
        }
        assert_eq!(parsed, 3);
    }

    #[test]
    fn times_read_as_people_write_them() {
        for (text, ms) in [
            ("500ms", 500),
            ("12s", 12_000),
            ("1.5s", 1500),
            ("2m", 120_000),
            ("1m 30s", 90_000),
            ("0s", 0),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for text in ["", "soon", "-1s", "1.5x", "s"] {
            assert!(parse_duration(text).is_err(), "{text}");
        }
        assert_eq!(show(Duration::from_secs(12)), "12s");
        assert_eq!(show(Duration::from_millis(250)), "250ms");
    }

    #[test]
    fn set_overrides_settings_and_the_client_link() {
        let mut s = parse_steps("").unwrap();
        s.set("settings.latency_scale_pct=250").unwrap();
        assert_eq!(s.file.topology.settings.latency_scale_pct, 250.0);
        s.set("client.bandwidth_down_bps=64000").unwrap();
        assert_eq!(s.file.topology.client.bandwidth_down_bps, 64_000);
        s.set("settings.bandwidth_mode=decay_with_distance")
            .unwrap();
        for (bad, says) in [
            ("settings.neighbors=3", "unknown setting"),
            ("client.speed=1", "unknown field"),
            ("client.loss_pct=200", "loss_pct"),
            ("run.backend=docker", "only settings"),
            ("latency", "key=value"),
        ] {
            let e = s.set(bad).unwrap_err();
            assert!(e.to_string().contains(says), "{bad}: {e}");
            assert!(e.to_string().starts_with("--set "), "{e}");
        }
    }
}
