//! The partition example (`examples/scenarios/partition-heal.toml`) run as a user runs it:
//! six Synapse homeservers, partitioned west (n1, n2, n4) from east (n3, n5, n6), both sides
//! sending; what each side said reaches the other only after the heal, and report.md says
//! how long that took. And a wait that cannot be met fails the run with a clear line.

use std::{
    collections::BTreeSet,
    path::Path,
    process::{Command, Output},
};

use meshsim_tests::{Sweep, TempDir, fixtures::examples_dir, leftovers, meshsim_bin};
use serde_json::Value;

fn run(scenario: &Path, out: &Path) -> Output {
    Command::new(meshsim_bin())
        .args([
            "run",
            scenario.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap()
}

/// The `t_ms` at which the step of this kind ran (its first one).
fn step_done_ms(out: &Path, action: &str) -> f64 {
    std::fs::read_to_string(out.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["kind"] == "step" && e["action"] == action)
        .unwrap_or_else(|| panic!("no {action} step"))["done_ms"]
        .as_f64()
        .unwrap()
}

#[test]
#[ignore = "needs root, Python 3 with venv and PyPI: run with cargo xtask test"]
fn the_partition_example_converges_after_the_heal_and_says_how_long_it_took() {
    let _sweep = Sweep;
    let dir = TempDir::new("scenario-partition");
    let out_dir = dir.path().join("out");
    let out = run(
        &examples_dir().join("scenarios/partition-heal.toml"),
        &out_dir,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(leftovers(), Vec::<String>::new());

    let partitioned = step_done_ms(&out_dir, "partition");
    let healed = step_done_ms(&out_dir, "heal");
    let west: BTreeSet<&str> = ["n1", "n2", "n4"].into();
    let deliveries = std::fs::read_to_string(out_dir.join("deliveries.csv")).unwrap();
    let mut across = 0;
    for row in deliveries.lines().skip(1) {
        let f: Vec<&str> = row.split(',').collect();
        let (origin, sent, node, seen) = (f[1], f[2].parse::<f64>().unwrap(), f[3], f[4]);
        let seen: f64 = seen
            .parse()
            .unwrap_or_else(|_| panic!("never delivered: {row}"));
        if sent > partitioned && sent < healed && west.contains(origin) != west.contains(node) {
            across += 1;
            assert!(
                seen > healed,
                "crossed the partition while it stood: {row} (healed at {healed})"
            );
        }
    }
    // Two messages from the west to three eastern servers, one from the east to three western.
    assert_eq!(across, 9, "{deliveries}");
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("**n1 n2 n4** cut off at"), "{report}");
    assert!(
        report.contains(
            "0 crossed while it stood, 9 arrived after the heal, 0 never arrived. **Converged "
        ),
        "{report}"
    );
    for plot in ["traffic.svg", "delivery-cdf.svg", "delivery-time.svg"] {
        assert!(out_dir.join(plot).exists(), "{plot}");
    }
}

#[test]
#[ignore = "needs root, Python 3 with venv and PyPI: run with cargo xtask test"]
fn a_message_that_cannot_arrive_fails_its_wait_with_a_clear_line() {
    let _sweep = Sweep;
    let dir = TempDir::new("scenario-undelivered");
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        r#"[run]
workload = "synapse"

[[nodes]]
name = "n1"
x = 100
y = 100

[[nodes]]
name = "n2"
x = 200
y = 100

[[step]]
wait = { until = "converged", timeout = "300s" }

[[step]]
partition = ["n1"]

[[step]]
send = { from = "n1", body = "into the void" }

[[step]]
wait = { until = "delivered", timeout = "5s" }
"#,
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = run(&file, &out_dir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.lines().last().unwrap().contains(
            "step 4 (line 23, wait) failed: not delivered after 5s: 1 of 1 messages not everywhere (n2 awaits 1)"
        ),
        "{stderr}"
    );
    assert_eq!(leftovers(), Vec::<String>::new());
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("1 never arrived"), "{report}");
}
