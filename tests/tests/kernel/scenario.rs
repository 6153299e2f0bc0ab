//! `meshsim run` as a user runs it: a scenario of every network step kind runs headless and
//! leaves its results; a wait that fails, an interruption and bad files end with a clear
//! line and a non-zero exit, still leaving what was gathered (or, for a bad file, nothing).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Output, Stdio},
    time::Duration,
};

use meshsim_tests::{
    Running, Sweep, TempDir, fixtures::examples_dir, leftovers, meshsim_bin, spawn_meshsim,
    wait_for_line,
};
use serde_json::Value;

/// mesh6's settings and nodes (n1 -> n2 -> n3 -> n6 along the top), every node pinging n6
/// five times a second once its routes are in, and `steps`.
fn mesh6_scenario(steps: &str) -> String {
    let mesh6 = std::fs::read_to_string(examples_dir().join("mesh6.toml")).unwrap();
    format!("[run]\nnode_cmd = \"sleep 1; exec ping -q -i 0.2 10.77.0.7\"\n\n{mesh6}\n{steps}")
}

fn run(args: &[&str]) -> Output {
    Command::new(meshsim_bin())
        .arg("run")
        .args(args)
        .output()
        .unwrap()
}

fn events(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["kind"] == kind).collect()
}

/// counters.csv: the last sample's (from, to) -> (packets, dropped_loss), and every row.
fn counters(dir: &Path) -> Vec<(f64, String, String, u64, u64)> {
    std::fs::read_to_string(dir.join("counters.csv"))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (
                f[0].parse().unwrap(),
                f[1].to_owned(),
                f[2].to_owned(),
                f[3].parse().unwrap(),
                f[5].parse().unwrap(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_scenario_runs_every_network_step_and_leaves_its_results() {
    let _sweep = Sweep;
    let dir = TempDir::new("scenario-run");
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        mesh6_scenario(
            r#"
[[step]]
at = "2s"
mark = "cut"
[[step]]
partition = ["n1", "n2", "n4"]
[[step]]
at = "5s"
heal = "all"
[[step]]
flap = { a = "n3", b = "n6", period = "1s", for = "2s" }
[[step]]
add = { x = 700, y = 460 }
[[step]]
after = "200ms"
move = { node = "n7", x = 720, y = 470 }
[[step]]
pin = { a = "n5", b = "n6", latency_ms = 5, loss_pct = 1 }
[[step]]
unpin = { a = "n5", b = "n6", field = "loss_pct" }
[[step]]
settings = { jitter_ms = 1.0 }
[[step]]
client = { node = "n1", latency_ms = 100, bandwidth_down_bps = 64000 }
[[step]]
remove = "n7"
[[step]]
at = "8s"
wait = { until = "ready", timeout = "10s" }
"#,
        ),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = run(&[
        file.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        "settings.bandwidth_bps=1000000",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("[step 2/12,") && stderr.contains("partition n1 n2 n4"),
        "{stderr}"
    );
    assert!(stderr.contains("all 12 steps ran"), "{stderr}");
    assert_eq!(leftovers(), Vec::<String>::new());
    for f in [
        "events.jsonl",
        "counters.csv",
        "deliveries.csv",
        "report.md",
        "scenario.toml",
        "run.json",
        "traffic.svg",
    ] {
        assert!(out_dir.join(f).exists(), "{f} is missing");
    }

    let events = events(&out_dir);
    let steps = of_kind(&events, "step");
    let indices: Vec<u64> = steps.iter().map(|s| s["index"].as_u64().unwrap()).collect();
    assert_eq!(indices, (0..12).collect::<Vec<_>>());
    assert!(
        steps
            .iter()
            .all(|s| s["error"].is_null() && s["late_ms"].as_f64().unwrap() >= 0.0)
    );
    assert_eq!(steps[2]["due_ms"], 5000.0);
    // The Sim showed the cut: two changes carry it, and every link back whole after.
    let changes = of_kind(&events, "change");
    assert!(changes.iter().any(
        |c| c["partitions"] == serde_json::json!([["n1", "n2", "n4"]]) && c["cut_links"] == 3
    ));
    let flaps: Vec<bool> = of_kind(&events, "flap")
        .iter()
        .map(|f| f["down"].as_bool().unwrap())
        .collect();
    assert_eq!(flaps, [true, false, true, false]);
    assert_eq!(changes.last().unwrap()["cut_links"], 0);
    assert_eq!(of_kind(&events, "mark")[0]["name"], "cut");
    assert!(
        events
            .iter()
            .all(|e| e["t_ms"].is_number() && e["wall_ms"].is_number())
    );

    // n1 and n2 kept pinging n6 across the cut: their packets reached n2 -> n3 and died
    // there, counted as lost; before the cut and after the heal that link lost nothing.
    let rows = counters(&out_dir);
    let lost_on = |from: &str, to: &str, until_ms: f64| {
        rows.iter()
            .filter(|r| r.1 == from && r.2 == to && r.0 <= until_ms)
            .map(|r| r.4)
            .max()
            .unwrap_or(0)
    };
    assert_eq!(lost_on("n2", "n3", 1900.0), 0);
    assert!(lost_on("n2", "n3", f64::MAX) > 5, "{rows:?}");
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("**Outcome: every step ran.**"), "{report}");
    assert!(report.contains("**n1 n2 n4** cut off at"), "{report}");
    assert!(
        report.contains("settings.bandwidth_bps=1000000"),
        "{report}"
    );
    let run_json: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("run.json")).unwrap()).unwrap();
    assert_eq!(run_json["settings"]["bandwidth_bps"], 1_000_000);
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn a_step_that_fails_ends_the_run_non_zero_with_its_results() {
    let _sweep = Sweep;
    let dir = TempDir::new("scenario-fail");
    let file = dir.path().join("s.toml");
    // n1 and n6 are too far apart to be linked: pinning their link fails when it runs.
    std::fs::write(
        &file,
        mesh6_scenario("[[step]]\nmark = \"first\"\n\n[[step]]\npin = { a = \"n1\", b = \"n6\", latency_ms = 5 }\n\n[[step]]\nmark = \"never\"\n"),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = run(&[file.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    let last = stderr.lines().last().unwrap();
    assert!(
        last.contains("step 2 (line ") && last.contains(", pin) failed: n1 and n6 are not linked"),
        "{stderr}"
    );
    assert_eq!(leftovers(), Vec::<String>::new());
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(
        report.contains("**Outcome: stopped early: step 2"),
        "{report}"
    );
    assert!(report.contains("(1 of 3 steps ran)"), "{report}");
    assert_eq!(of_kind(&events(&out_dir), "mark").len(), 1);
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn an_interrupted_run_still_writes_what_it_gathered() {
    let _sweep = Sweep;
    let dir = TempDir::new("scenario-int");
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        mesh6_scenario("[[step]]\nmark = \"started\"\n\n[[step]]\nwait = { for = \"10m\" }\n"),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let mut meshsim = Running::spawn(
        "meshsim",
        Command::new(meshsim_bin())
            .args([
                "run",
                file.to_str().unwrap(),
                "--out",
                out_dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        Duration::from_secs(20),
    );
    meshsim.sweep = true;
    let mut stderr = BufReader::new(meshsim.child.stderr.take().unwrap()).lines();
    for line in stderr.by_ref() {
        if line.unwrap().contains("[step 2/2") {
            break;
        }
    }
    let status = meshsim.terminate();
    assert!(!status.success());
    let rest: Vec<String> = stderr.map_while(Result::ok).collect();
    assert!(rest.iter().any(|l| l.contains("interrupted")), "{rest:?}");
    assert_eq!(leftovers(), Vec::<String>::new());
    let report = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(report.contains("stopped early: interrupted"), "{report}");
    assert!(!of_kind(&events(&out_dir), "interrupted").is_empty());
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn bad_scenarios_fail_with_one_line_before_anything_starts() {
    let _sweep = Sweep;
    let dir = TempDir::new("scenario-bad");
    let cases: BTreeMap<&str, (String, &str)> = BTreeMap::from([
        (
            "unknown-node",
            (
                mesh6_scenario("[[step]]\nmove = { node = \"n9\", x = 1, y = 1 }\n"),
                ": step[0].move.node: no node n9 at this step",
            ),
        ),
        (
            "send-without-homeservers",
            (
                mesh6_scenario("[[step]]\nsend = { from = \"n1\" }\n"),
                "must run homeservers",
            ),
        ),
    ]);
    for (name, (text, says)) in &cases {
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, text).unwrap();
        let out_dir = dir.path().join(format!("{name}-out"));
        let out = run(&[file.to_str().unwrap(), "--out", out_dir.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        let last = stderr.lines().last().unwrap_or("");
        assert!(
            last.starts_with("meshsim: ") && last.contains(says),
            "{name}: {stderr}"
        );
        assert_eq!(
            leftovers(),
            Vec::<String>::new(),
            "{name} started something"
        );
    }
    // Results are never mixed with an earlier run's.
    let full = dir.path().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("report.md"), "earlier").unwrap();
    let file = dir.path().join("ok.toml");
    std::fs::write(&file, mesh6_scenario("[[step]]\nmark = \"x\"\n")).unwrap();
    let out = run(&[file.to_str().unwrap(), "--out", full.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    assert_eq!(
        std::fs::read_to_string(full.join("report.md")).unwrap(),
        "earlier"
    );
}

/// Removes the `exp2` run's leftovers when dropped.
struct SweepExp2;
impl Drop for SweepExp2 {
    fn drop(&mut self) {
        let _ = Command::new(meshsim_bin())
            .args(["down", "--prefix", "exp2"])
            .output();
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn two_scenarios_run_at_once_each_with_its_own_names() {
    let (_sweep, _sweep2) = (Sweep, SweepExp2);
    let dir = TempDir::new("scenario-two");
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        mesh6_scenario("[[step]]\nat = \"1s\"\npartition = [\"n1\"]\n\n[[step]]\nat = \"8s\"\nmark = \"end\"\n"),
    )
    .unwrap();
    let (a_out, b_out) = (dir.path().join("a"), dir.path().join("b"));
    let (mut a, a_lines) = spawn_meshsim(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        a_out.to_str().unwrap(),
    ]);
    let (mut b, b_lines) = spawn_meshsim(&[
        "run",
        file.to_str().unwrap(),
        "--out",
        b_out.to_str().unwrap(),
        "--prefix",
        "exp2",
        "--subnet",
        "10.78.0.0/16",
        "--node-cmd",
        "sleep 1; exec ping -q -i 0.2 10.78.0.7",
    ]);
    wait_for_line(&a_lines, "[step 1/2");
    wait_for_line(&b_lines, "[step 1/2");
    let names = |prefix: &str| -> Vec<String> {
        let mut v: Vec<String> = meshsim_tests::leftovers_of(prefix)
            .into_iter()
            .filter(|n| n.contains("-n"))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    assert_eq!(names("ms-").len(), 6);
    assert_eq!(names("exp2-").len(), 6);

    // A running run is nobody's leftover: `down` refuses it, `down --all` leaves it alone.
    let down = Command::new(meshsim_bin())
        .args(["down", "--prefix", "exp2"])
        .output()
        .unwrap();
    assert!(!down.status.success());
    assert!(String::from_utf8_lossy(&down.stderr).contains("prefix exp2 is running"));
    let all = Command::new(meshsim_bin())
        .args(["down", "--all"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&all.stdout);
    assert!(
        said.contains("exp2: running, left alone") && said.contains("ms: running, left alone"),
        "{said}"
    );
    assert_eq!(names("exp2-").len(), 6);

    // A third run in a subnet already taken stops before making anything.
    let third = run(&[
        file.to_str().unwrap(),
        "--out",
        dir.path().join("c").to_str().unwrap(),
        "--prefix",
        "exp3",
        "--subnet",
        "10.78.0.0/16",
    ]);
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success());
    assert!(
        stderr
            .contains("the subnet 10.78.0.0/16 is in use on this host (10.78.0.1/16 on exp2-host)"),
        "{stderr}"
    );
    assert_eq!(meshsim_tests::leftovers_of("exp3-"), Vec::<String>::new());

    assert!(a.child.wait().unwrap().success());
    assert!(b.child.wait().unwrap().success());
    assert_eq!(leftovers(), Vec::<String>::new());
    assert_eq!(meshsim_tests::leftovers_of("exp2-"), Vec::<String>::new());
    // Each run counted its own mesh: n1's pings to n6 died on its cut link to n2 in both.
    for out in [&a_out, &b_out] {
        let lost = counters(out)
            .iter()
            .filter(|r| r.1 == "n1" && r.2 == "n2")
            .map(|r| r.4)
            .max();
        assert!(lost.unwrap() > 0, "{}", out.display());
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn down_removes_a_crashed_runs_leftovers_by_prefix_and_all() {
    let (_sweep, _sweep2) = (Sweep, SweepExp2);
    let example = examples_dir().join("mesh6.toml");
    let (mut crashed, lines) = spawn_meshsim(&[
        "up",
        example.to_str().unwrap(),
        "--prefix",
        "exp2",
        "--subnet",
        "10.78.0.0/16",
        "--listen",
        "127.0.0.1:0",
    ]);
    wait_for_line(&lines, "running:");
    crashed.kill_9();
    assert!(!meshsim_tests::leftovers_of("exp2-").is_empty());
    // The default run's down touches nothing of exp2's.
    let down = Command::new(meshsim_bin()).arg("down").output().unwrap();
    assert!(down.status.success());
    assert!(!meshsim_tests::leftovers_of("exp2-").is_empty());
    let all = Command::new(meshsim_bin())
        .args(["down", "--all"])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&all.stdout);
    assert!(
        all.status.success(),
        "{}",
        String::from_utf8_lossy(&all.stderr)
    );
    assert!(said.contains("exp2: removed 6 namespaces"), "{said}");
    assert_eq!(meshsim_tests::leftovers_of("exp2-"), Vec::<String>::new());
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn repeat_runs_into_numbered_folders_with_a_summary() {
    let _sweep = Sweep;
    let dir = TempDir::new("scenario-repeat");
    let file = dir.path().join("s.toml");
    std::fs::write(
        &file,
        mesh6_scenario("[[step]]\nat = \"1s\"\npartition = [\"n1\"]\n\n[[step]]\nat = \"2s\"\nheal = \"all\"\n"),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let out = run(&[
        file.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--repeat",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("run 1 of 2") && stderr.contains("run 2 of 2"),
        "{stderr}"
    );
    for k in ["1", "2"] {
        assert!(out_dir.join(k).join("report.md").exists(), "run {k}");
    }
    let summary = std::fs::read_to_string(out_dir.join("summary.md")).unwrap();
    assert!(summary.starts_with("# 2 runs of "), "{summary}");
    assert!(
        summary.contains("| [1](1/report.md) | 2/2 |")
            && summary.contains("| [2](2/report.md) | 2/2 |"),
        "{summary}"
    );
    assert_eq!(leftovers(), Vec::<String>::new());
}
