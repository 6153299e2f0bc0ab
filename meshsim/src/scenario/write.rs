//! Scenario files written from a recording: the mesh as it was when recording began, and
//! every change since as a step at the time it happened, so that `meshsim run` (or the
//! canvas's timeline) replays the session.

use std::{fmt::Write as _, time::Duration};

use super::{
    file::show,
    step::{Action, Condition},
};
use crate::{
    model::{CutChange, NodeId, Topology},
    topology_file,
};

/// A scenario file: `topology` (with `[run] workload = ...` when not `none`), then one
/// `[[step]]` per action, `at` its time since the start.
///
/// The topology's partitions become `partition` steps at `0s`, in the order they were made,
/// rather than staying in the topology: the timeline shows them, and the report follows a
/// partition from its step to its heal. Links down stay in the topology, since a `down` step
/// needs its pair linked, and a pair taken down may be apart when recording begins.
pub fn to_toml(
    topology: &Topology,
    workload: Option<&str>,
    steps: &[(Duration, Action)],
) -> String {
    let mut out = String::from(
        "# Recorded by meshsim: the mesh when recording began, then every change\n# at the time it happened. Run it with `meshsim run FILE --out DIR`.\n\n",
    );
    let mut start = topology.clone();
    let partitions = std::mem::take(&mut start.partitions);
    // The topology's top-level keys (`next_id`, `down`) must come before any table, so
    // `[run]` follows the topology rather than leading it.
    out.push_str(&topology_file::to_toml(&start));
    if let Some(workload) = workload.filter(|w| *w != "none") {
        let _ = write!(out, "\n[run]\nworkload = {}\n", quote(workload));
    }
    for side in &partitions {
        let quoted: Vec<String> = side.iter().map(|name| quote(name)).collect();
        let _ = write!(
            out,
            "\n[[step]]\nat = {}\npartition = [{}]\n",
            quote(&show_exact(Duration::ZERO)),
            quoted.join(", ")
        );
    }
    for (at, action) in steps {
        let _ = write!(
            out,
            "\n[[step]]\nat = {}\n{}\n",
            quote(&show_exact(*at)),
            step_line(action)
        );
    }
    out
}

/// A time to the millisecond (`show` rounds whole seconds only when they are whole).
fn show_exact(d: Duration) -> String {
    let ms = Duration::from_millis(d.as_millis() as u64);
    show(ms)
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn names(ids: &[NodeId]) -> String {
    let quoted: Vec<String> = ids.iter().map(|id| quote(&id.name())).collect();
    format!("[{}]", quoted.join(", "))
}

/// An inline table of the keys with values (skipping `None`).
fn table(fields: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = fields
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} = {v}")))
        .collect();
    format!("{{ {} }}", parts.join(", "))
}

fn num(v: f64) -> String {
    toml::Value::Float(v).to_string()
}

/// The step's action as its TOML key and value.
fn step_line(action: &Action) -> String {
    let s = |v: &str| Some(quote(v));
    match action {
        Action::Add { id, x, y } => format!(
            "add = {}",
            table(&[
                ("name", s(&id.name())),
                ("x", Some(num(*x))),
                ("y", Some(num(*y)))
            ])
        ),
        Action::Move { node, x, y } => format!(
            "move = {}",
            table(&[
                ("node", s(&node.name())),
                ("x", Some(num(*x))),
                ("y", Some(num(*y)))
            ])
        ),
        Action::Remove(node) => format!("remove = {}", quote(&node.name())),
        Action::Pin { a, b, pins } => format!(
            "pin = {}",
            table(&[
                ("a", s(&a.name())),
                ("b", s(&b.name())),
                ("latency_ms", pins.latency_ms.map(num)),
                ("jitter_ms", pins.jitter_ms.map(num)),
                ("bandwidth_bps", pins.bandwidth_bps.map(|v| v.to_string())),
                ("loss_pct", pins.loss_pct.map(num)),
            ])
        ),
        Action::Unpin { a, b, field } => format!(
            "unpin = {}",
            table(&[
                ("a", s(&a.name())),
                ("b", s(&b.name())),
                ("field", field.map(|f| quote(f.name()))),
            ])
        ),
        Action::Settings(patch) => {
            let parts: Vec<String> = patch.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            format!("settings = {{ {} }}", parts.join(", "))
        }
        Action::Client { node, link } => format!(
            "client = {}",
            table(&[
                ("node", node.map(|n| quote(&n.name()))),
                ("latency_ms", Some(num(link.latency_ms))),
                ("jitter_ms", Some(num(link.jitter_ms))),
                ("loss_pct", Some(num(link.loss_pct))),
                ("bandwidth_up_bps", Some(link.bandwidth_up_bps.to_string())),
                (
                    "bandwidth_down_bps",
                    Some(link.bandwidth_down_bps.to_string())
                ),
            ])
        ),
        Action::Cut(CutChange::Partition(ids)) => format!("partition = {}", names(ids)),
        Action::Cut(CutChange::Heal(None)) => "heal = \"all\"".to_owned(),
        Action::Cut(CutChange::Heal(Some(ids))) => format!("heal = {}", names(ids)),
        Action::Cut(CutChange::Down(a, b)) => format!("down = {}", names(&[*a, *b])),
        Action::Cut(CutChange::Up(a, b)) => format!("up = {}", names(&[*a, *b])),
        Action::Flap {
            a,
            b,
            period,
            duration,
        } => format!(
            "flap = {}",
            table(&[
                ("a", s(&a.name())),
                ("b", s(&b.name())),
                ("period", s(&show_exact(*period))),
                ("for", s(&show_exact(*duration))),
            ])
        ),
        Action::Send {
            from,
            body,
            room,
            count,
            every,
        } => format!(
            "send = {}",
            table(&[
                ("from", s(&from.name())),
                ("body", body.as_deref().map(quote)),
                ("room", room.as_deref().map(quote)),
                ("count", (*count > 1).then(|| count.to_string())),
                ("every", (*count > 1).then(|| quote(&show_exact(*every)))),
            ])
        ),
        Action::WaitUntil { condition, timeout } => format!(
            "wait = {}",
            table(&[
                (
                    "until",
                    s(match condition {
                        Condition::Ready => "ready",
                        Condition::Converged => "converged",
                        Condition::Delivered => "delivered",
                    })
                ),
                ("timeout", s(&show_exact(*timeout))),
            ])
        ),
        Action::WaitFor(d) => format!("wait = {}", table(&[("for", s(&show_exact(*d)))])),
        Action::Mark(name) => format!("mark = {}", quote(name)),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::{
        model::{ClientLink, LinkField, LinkPins, Model, NodeDoc, testkit::Rng},
        scenario::{file::parse, step::When},
    };

    /// Applies a step's action to a model, as the runner does to the Sim.
    fn apply(model: &mut Model, action: &Action) {
        match action {
            Action::Add { x, y, .. } => {
                model.add_node(*x, *y).unwrap();
            }
            Action::Move { node, x, y } => {
                model.move_node(*node, *x, *y).unwrap();
            }
            Action::Remove(node) => {
                model.remove_node(*node).unwrap();
            }
            Action::Pin { a, b, pins } => {
                model.pin(*a, *b, pins).unwrap();
            }
            Action::Unpin { a, b, field } => {
                model.unpin(*a, *b, *field).unwrap();
            }
            Action::Settings(patch) => {
                let settings =
                    crate::scenario::file::patch_settings(model.settings(), patch).unwrap();
                model.set_settings(settings).unwrap();
            }
            Action::Cut(change) => {
                model.cut(change).unwrap();
            }
            _ => {}
        }
    }

    /// A random change, valid for `model` as it is.
    fn random_action(rng: &mut Rng, model: &Model) -> Action {
        let ids: Vec<NodeId> = model.nodes().map(|n| n.id).collect();
        let any = |rng: &mut Rng| ids[rng.below(ids.len() as u64) as usize];
        let link = (model.links().len() > 0).then(|| {
            model
                .links()
                .nth(rng.below(model.links().len() as u64) as usize)
                .unwrap()
                .pair
        });
        match rng.below(9) {
            0 => Action::Add {
                id: model.next_id(),
                x: rng.f64_in(0.0, 600.0).round(),
                y: rng.f64_in(0.0, 600.0),
            },
            1 if ids.len() > 2 => Action::Remove(any(rng)),
            2 if link.is_some() => {
                let pair = link.unwrap();
                Action::Pin {
                    a: pair.a(),
                    b: pair.b(),
                    pins: LinkPins {
                        latency_ms: Some(rng.f64_in(1.0, 50.0)),
                        bandwidth_bps: Some(rng.below(1_000_000)),
                        ..LinkPins::default()
                    },
                }
            }
            3 if model.pins().len() > 0 => {
                let (pair, _) = model.pins().next().unwrap();
                Action::Unpin {
                    a: pair.a(),
                    b: pair.b(),
                    field: (rng.below(2) == 0).then_some(LinkField::LatencyMs),
                }
            }
            4 => Action::Settings(toml::Table::from_iter([(
                "max_latency_ms".to_owned(),
                toml::Value::Float(rng.f64_in(100.0, 400.0)),
            )])),
            5 => Action::Cut(CutChange::Partition(vec![any(rng)])),
            6 => Action::Cut(CutChange::Heal(None)),
            7 if link.is_some() => {
                let pair = link.unwrap();
                Action::Cut(CutChange::Down(pair.b(), pair.a()))
            }
            _ => Action::Move {
                node: any(rng),
                x: rng.f64_in(0.0, 600.0),
                y: rng.f64_in(0.0, 600.0),
            },
        }
    }

    /// A random session: some changes before recording begins (at least the highest node
    /// removed and a partition standing, as a recording may find the mesh), then `ops`
    /// changes recorded as they are made.
    fn random_session(rng: &mut Rng, ops: usize) -> (Topology, Model, Vec<(Duration, Action)>) {
        let nodes: Vec<NodeDoc> = (1..=rng.below(6) as u32 + 3)
            .map(|i| NodeDoc {
                id: Some(NodeId(i)),
                name: None,
                x: rng.f64_in(0.0, 600.0),
                y: rng.f64_in(0.0, 600.0),
            })
            .collect();
        let mut model = Model::from_topology(&Topology {
            nodes,
            ..Topology::default()
        })
        .unwrap();
        for _ in 0..rng.below(20) {
            let action = random_action(rng, &model);
            apply(&mut model, &action);
        }
        if model.nodes().len() < 3 {
            model.add_node(300.0, 300.0).unwrap();
        }
        let ids: Vec<NodeId> = model.nodes().map(|n| n.id).collect();
        model.remove_node(ids[ids.len() - 1]).unwrap();
        model.cut(&CutChange::Partition(vec![ids[0]])).unwrap();
        let start = model.topology();
        let mut steps = Vec::new();
        let mut t = Duration::ZERO;
        for _ in 0..ops {
            t += Duration::from_millis(rng.below(3000));
            let action = random_action(rng, &model);
            apply(&mut model, &action);
            steps.push((t, action));
        }
        (start, model, steps)
    }

    #[test]
    fn a_recorded_session_replays_to_the_same_final_state() {
        let mut rng = Rng::new(14);
        for _ in 0..60 {
            let (start, recorded, steps) = random_session(&mut rng, 30);
            assert!(!start.partitions.is_empty());
            let text = to_toml(&start, Some("none"), &steps);
            let scenario =
                parse(Path::new("recorded.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
            // The partitions standing when recording began come first, at 0 s.
            let (leading, rest) = scenario.steps.split_at(start.partitions.len());
            assert!(
                leading
                    .iter()
                    .all(|step| step.when == When::At(Duration::ZERO)
                        && matches!(step.action, Action::Cut(CutChange::Partition(_))))
            );
            assert_eq!(rest.len(), steps.len());
            let mut replayed = Model::from_topology(&scenario.file.topology).unwrap();
            for step in leading {
                apply(&mut replayed, &step.action);
            }
            for (step, (t, _)) in rest.iter().zip(&steps) {
                assert_eq!(
                    step.when,
                    When::At(Duration::from_millis(t.as_millis() as u64))
                );
                apply(&mut replayed, &step.action);
            }
            assert_eq!(replayed.snapshot(), recorded.snapshot(), "{text}");
            assert_eq!(replayed.topology(), recorded.topology(), "{text}");
            let routes: Vec<_> = replayed.routes().collect();
            assert_eq!(routes, recorded.routes().collect::<Vec<_>>());
        }
    }

    fn nodes_in_a_row(count: u32) -> Topology {
        Topology {
            nodes: (1..=count)
                .map(|i| NodeDoc {
                    id: Some(NodeId(i)),
                    name: None,
                    x: f64::from(i) * 100.0,
                    y: 100.0,
                })
                .collect(),
            ..Topology::default()
        }
    }

    #[test]
    fn a_recording_begun_after_the_highest_node_was_removed_adds_the_same_ids() {
        let mut live = Model::from_topology(&nodes_in_a_row(4)).unwrap();
        live.remove_node(NodeId(4)).unwrap();
        let start = live.topology();
        let (added, _) = live.add_node(250.0, 200.0).unwrap();
        assert_eq!(added, NodeId(5), "ids are never reused");
        let steps = vec![(
            Duration::from_secs(2),
            Action::Add {
                id: added,
                x: 250.0,
                y: 200.0,
            },
        )];
        let text = to_toml(&start, Some("synapse"), &steps);
        assert!(text.contains("\nnext_id = 5\n"), "{text}");
        let scenario = parse(Path::new("r.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(scenario.steps[0].action, steps[0].1);
        let mut replayed = Model::from_topology(&scenario.file.topology).unwrap();
        apply(&mut replayed, &scenario.steps[0].action);
        assert_eq!(replayed.snapshot(), live.snapshot(), "{text}");
    }

    #[test]
    fn a_recording_begun_with_cuts_standing_starts_with_them() {
        let mut live = Model::from_topology(&nodes_in_a_row(4)).unwrap();
        live.cut(&CutChange::Partition(vec![NodeId(4)])).unwrap();
        live.cut(&CutChange::Down(NodeId(1), NodeId(2))).unwrap();
        live.cut(&CutChange::Down(NodeId(2), NodeId(3))).unwrap();
        // A link taken down stays down while its pair is apart, and again once it relinks.
        live.move_node(NodeId(3), 5000.0, 100.0).unwrap();
        let start = live.topology();
        let steps = vec![(
            Duration::from_secs(1),
            Action::Move {
                node: NodeId(3),
                x: 300.0,
                y: 100.0,
            },
        )];
        apply(&mut live, &steps[0].1);
        let text = to_toml(&start, None, &steps);
        assert!(
            text.contains("[[step]]\nat = \"0s\"\npartition = [\"n4\"]\n"),
            "{text}"
        );
        let scenario = parse(Path::new("r.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut replayed = Model::from_topology(&scenario.file.topology).unwrap();
        for step in &scenario.steps {
            apply(&mut replayed, &step.action);
        }
        assert_eq!(replayed.snapshot(), live.snapshot(), "{text}");
        assert!(replayed.links().filter(|l| l.cut).count() >= 3, "{text}");
    }

    #[test]
    fn every_action_writes_a_step_that_parses_back() {
        let start = nodes_in_a_row(3);
        let actions = vec![
            Action::Client {
                node: Some(NodeId(1)),
                link: ClientLink {
                    latency_ms: 300.0,
                    bandwidth_down_bps: 64_000,
                    ..ClientLink::default()
                },
            },
            Action::Flap {
                a: NodeId(1),
                b: NodeId(2),
                period: Duration::from_millis(1500),
                duration: Duration::from_secs(6),
            },
            Action::Send {
                from: NodeId(2),
                body: Some("a \"quoted\" body".into()),
                room: None,
                count: 3,
                every: Duration::from_secs(1),
            },
            Action::WaitUntil {
                condition: Condition::Delivered,
                timeout: Duration::from_secs(60),
            },
            Action::WaitFor(Duration::from_millis(250)),
            Action::Mark("half way".into()),
            Action::Cut(CutChange::Up(NodeId(1), NodeId(2))),
            Action::Cut(CutChange::Heal(Some(vec![NodeId(3)]))),
        ];
        let steps: Vec<(Duration, Action)> = actions
            .iter()
            .enumerate()
            .map(|(i, a)| (Duration::from_secs(i as u64), a.clone()))
            .collect();
        let text = to_toml(&start, Some("synapse"), &steps);
        let scenario = parse(Path::new("r.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let parsed: Vec<Action> = scenario.steps.into_iter().map(|s| s.action).collect();
        assert_eq!(parsed, actions);
        assert!(text.contains("[run]\nworkload = \"synapse\""));
    }
}
