//! A scenario's steps, checked: when each runs and what it does.

use std::time::Duration;

use serde::Serialize;

use crate::model::{ClientLink, CutChange, LinkField, LinkPins, NodeId};

/// One step of a scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Its place in the file's `[[step]]` list, from 0.
    pub index: usize,
    /// The line of its `[[step]]` header.
    pub line: usize,
    pub when: When,
    pub action: Action,
}

/// When a step runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// This long after the scenario started (the topology was up).
    At(Duration),
    /// This long after the previous step ended (a wait ends when its condition holds).
    After(Duration),
}

/// What a step does.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Adds the node that gets `id` (the next id) at (x, y).
    Add {
        id: NodeId,
        x: f64,
        y: f64,
    },
    Move {
        node: NodeId,
        x: f64,
        y: f64,
    },
    Remove(NodeId),
    Pin {
        a: NodeId,
        b: NodeId,
        pins: LinkPins,
    },
    Unpin {
        a: NodeId,
        b: NodeId,
        field: Option<LinkField>,
    },
    /// The settings named in the table change; the others stay.
    Settings(toml::Table),
    /// A node's own client link, or the default (`node` None).
    Client {
        node: Option<NodeId>,
        link: ClientLink,
    },
    /// Partition, heal, a link down or up.
    Cut(CutChange),
    /// The link goes down for half of each period and up for the other half, for
    /// `duration`, in the background; it ends up.
    Flap {
        a: NodeId,
        b: NodeId,
        period: Duration,
        duration: Duration,
    },
    /// `count` messages from `from`'s test user, `every` apart (in the background when more
    /// than one), into `room` (the mesh room when None).
    Send {
        from: NodeId,
        body: Option<String>,
        room: Option<String>,
        count: u32,
        every: Duration,
    },
    WaitUntil {
        condition: Condition,
        timeout: Duration,
    },
    WaitFor(Duration),
    Mark(String),
}

/// What a `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Every node's workload answers (nothing to wait for without a workload).
    Ready,
    /// Every homeserver is in the mesh room, as each of them says.
    Converged,
    /// Every message the scenario sent has reached every homeserver that was in its room
    /// when it was sent and is still there.
    Delivered,
}

impl Action {
    /// The step's kind, as the event log and progress lines name it.
    pub fn kind(&self) -> &'static str {
        match self {
            Action::Add { .. } => "add",
            Action::Move { .. } => "move",
            Action::Remove(_) => "remove",
            Action::Pin { .. } => "pin",
            Action::Unpin { .. } => "unpin",
            Action::Settings(_) => "settings",
            Action::Client { .. } => "client",
            Action::Cut(CutChange::Partition(_)) => "partition",
            Action::Cut(CutChange::Heal(_)) => "heal",
            Action::Cut(CutChange::Down(..)) => "down",
            Action::Cut(CutChange::Up(..)) => "up",
            Action::Flap { .. } => "flap",
            Action::Send { .. } => "send",
            Action::WaitUntil { .. } | Action::WaitFor(_) => "wait",
            Action::Mark(_) => "mark",
        }
    }

    /// Whether it needs homeservers.
    pub fn needs_matrix(&self) -> bool {
        matches!(
            self,
            Action::Send { .. }
                | Action::WaitUntil {
                    condition: Condition::Converged | Condition::Delivered,
                    ..
                }
        )
    }

    /// One line for people: `partition n1 n2 n3`, `wait until delivered (timeout 60s)`.
    pub fn describe(&self) -> String {
        let names = |ids: &[NodeId]| ids.iter().map(|id| id.name()).collect::<Vec<_>>().join(" ");
        let show = super::file::show;
        match self {
            Action::Add { id, x, y } => format!("add {id} at ({x}, {y})"),
            Action::Move { node, x, y } => format!("move {node} to ({x}, {y})"),
            Action::Remove(node) => format!("remove {node}"),
            Action::Pin { a, b, pins } => format!(
                "pin {a}-{b} {}",
                serde_json::to_string(pins).unwrap_or_default()
            ),
            Action::Unpin { a, b, field } => match field {
                Some(f) => format!("unpin {a}-{b} {f}"),
                None => format!("unpin {a}-{b}"),
            },
            Action::Settings(patch) => {
                format!("settings {}", patch.to_string().trim().replace('\n', ", "))
            }
            Action::Client { node, link } => format!(
                "client link of {} {}",
                node.map_or("every node".to_owned(), |n| n.name()),
                serde_json::to_string(link).unwrap_or_default()
            ),
            Action::Cut(CutChange::Partition(ids)) => format!("partition {}", names(ids)),
            Action::Cut(CutChange::Heal(None)) => "heal all".to_owned(),
            Action::Cut(CutChange::Heal(Some(ids))) => format!("heal {}", names(ids)),
            Action::Cut(CutChange::Down(a, b)) => format!("down {a}-{b}"),
            Action::Cut(CutChange::Up(a, b)) => format!("up {a}-{b}"),
            Action::Flap {
                a,
                b,
                period,
                duration,
            } => format!(
                "flap {a}-{b} every {} for {}",
                show(*period),
                show(*duration)
            ),
            Action::Send {
                from, count, every, ..
            } => {
                if *count == 1 {
                    format!("send from {from}")
                } else {
                    format!("send {count} messages from {from} every {}", show(*every))
                }
            }
            Action::WaitUntil { condition, timeout } => {
                let c = serde_json::to_value(condition)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                format!("wait until {c} (timeout {})", show(*timeout))
            }
            Action::WaitFor(d) => format!("wait {}", show(*d)),
            Action::Mark(name) => format!("mark {name:?}"),
        }
    }
}
