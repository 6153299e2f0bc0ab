//! The unit tier's share of fuzzing: every committed seed (`fuzz/seeds/<target>/`) and every
//! input a fuzzer found a bug with (`fuzz/regressions/<target>/`) goes through the check its
//! target uses, so a fixed bug stays fixed without a fuzzer.

use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        files.extend(dir.map(|entry| entry.expect("a directory entry").path()));
    }
    files.sort();
    files
}

fn replay(target: &str, check: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "no seeds for {target} under fuzz/seeds/{target}"
    );
    for file in files {
        let data = std::fs::read(&file).expect("a readable input");
        println!("{}", file.display());
        check(&data);
    }
}

#[test]
fn topology_file_inputs_pass() {
    replay("topology_file", super::parsers::topology_file);
}

#[test]
fn scenario_file_inputs_pass() {
    replay("scenario_file", super::parsers::scenario_file);
}

#[test]
fn model_ops_inputs_pass() {
    replay("model_ops", super::model_ops::check);
}

#[test]
fn api_inputs_pass() {
    replay("api", super::api::check);
}

#[test]
fn ws_inputs_pass() {
    replay("ws", super::ws::check);
}

/// A panic tokio catches in a task still fails the input.
#[test]
fn a_panic_in_a_task_fails_the_input() {
    let caught = std::panic::catch_unwind(|| {
        super::no_panic_on_this_thread(|| {
            super::runtime().block_on(async {
                let _ = tokio::spawn(async { panic!("in a task") }).await;
            })
        })
    });
    assert!(caught.is_err());
}

/// The brute-force link rule the model is checked against, on a case worked by hand: three
/// nodes 10 px apart in a row with k = 1. n2's nearest is n1 (a tie with n3, lower id wins),
/// n1's is n2, n3's is n2: only n1-n2 is mutual.
#[test]
fn the_independent_link_rule_breaks_ties_by_id_and_needs_both_sides() {
    use crate::model::{Node, NodeId, Pair, Settings};
    let nodes: Vec<Node> = (1..=3)
        .map(|i| Node::new(NodeId(i), f64::from(i) * 10.0, 0.0).unwrap())
        .collect();
    let by_id = nodes.iter().map(|n| (n.id, n)).collect();
    let settings = Settings {
        neighbours: 1,
        ..Settings::default()
    };
    assert_eq!(
        super::model_ops::link_rule(&by_id, &settings),
        vec![Pair::new(NodeId(1), NodeId(2)).unwrap()]
    );
}
