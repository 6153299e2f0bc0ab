//! The `meshsim` command as a user runs it: bad topology files fail with one clear line and
//! start nothing; `up` runs until SIGTERM and then removes everything; `down` cleans up
//! after a `kill -9`; `--ksm` changes the host's KSM settings only while a run lasts.
//!
//! These need root (and no other meshsim running): `cargo xtask test` runs them.

use std::{process::Command, sync::mpsc, time::Duration};

use meshsim_tests::{
    Running, Sweep, fixtures::examples_dir, leftovers, meshsim_bin, pgrep, processes_in,
    spawn_meshsim, wait_for_line,
};

fn example() -> String {
    examples_dir().join("mesh6.toml").display().to_string()
}

/// Starts `meshsim ARGS` and waits until it says it is running; returns its guard (which
/// ends it, also when the test fails) and the receiver of the rest of its stderr.
fn start(args: &[&str]) -> (Running, mpsc::Receiver<String>) {
    let (meshsim, lines) = spawn_meshsim(args);
    wait_for_line(&lines, "running:");
    (meshsim, lines)
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn bad_topology_files_fail_with_one_line_and_start_nothing() {
    let _sweep = Sweep;
    let dir = std::env::temp_dir().join(format!("meshsim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let node = |name: &str, x: &str| format!("[[nodes]]\nname = \"{name}\"\nx = {x}\ny = 0\n");
    let cases = [
        (
            "syntax.toml",
            "[settings\nneighbours = 3\n".to_owned(),
            ":1:",
            "unclosed table",
        ),
        (
            "unknown.toml",
            "[settings]\nneighbors = 3\n".to_owned(),
            ":2:",
            "neighbors",
        ),
        (
            "negative.toml",
            "[settings]\nmax_latency_ms = -5.0\n".to_owned(),
            ":2:",
            "max_latency_ms",
        ),
        ("nan.toml", node("n1", "nan"), ":3:", "nodes[0].x"),
        (
            "duplicate.toml",
            node("n1", "0") + &node("n1", "10"),
            ":6:",
            "nodes[1].name",
        ),
        ("far.toml", node("n1", "1e9"), ":3:", "nodes[0].x"),
        (
            "workload.toml",
            "[run]\nworkload = \"dendrite\"\n".to_owned(),
            ":2:",
            "run.workload",
        ),
        (
            "backend.toml",
            "[run]\nbackend = \"vm\"\n".to_owned(),
            ":2:",
            "run.backend",
        ),
        // The run has no workload (no flag, no [run]): a node cannot ask for Synapse.
        (
            "router.toml",
            node("n1", "0") + "workload = \"synapse\"\n",
            ":5:",
            "nodes[0].workload",
        ),
    ];
    for (file, text, line, field) in cases {
        let path = dir.join(file);
        std::fs::write(&path, text).unwrap();
        let out = Command::new(meshsim_bin())
            .arg("up")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file} was accepted");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{file}: one line, got {stderr}");
        assert!(
            lines[0].contains(&format!("{file}{line}")) && lines[0].contains(field),
            "{file}: {stderr}"
        );
        assert_eq!(
            leftovers(),
            Vec::<String>::new(),
            "{file} started something"
        );
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn up_runs_until_sigterm_and_then_removes_everything() {
    let _sweep = Sweep;
    let (mut meshsim, _rest) = start(&[
        "up",
        &example(),
        "--node-cmd",
        "echo {name} {ip}; exec sleep 600",
    ]);
    // n6 is 10.77.0.7; n1 reaches it over three hops.
    let out = Command::new(meshsim_bin())
        .args([
            "exec",
            "n1",
            "--",
            "ping",
            "-c",
            "2",
            "-i",
            "0.2",
            "10.77.0.7",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let log = std::fs::read_to_string("/tmp/meshsim/logs/n3.log").unwrap();
    assert_eq!(log.trim(), "n3 10.77.0.4");
    let unknown = Command::new(meshsim_bin())
        .args(["exec", "n9", "--", "true"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("running nodes: n1 n2 n3 n4 n5 n6"));
    assert!(meshsim.terminate().success());
    assert_eq!(leftovers(), Vec::<String>::new());
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn the_files_run_table_holds_unless_a_flag_overrides_it() {
    let _sweep = Sweep;
    let dir = std::env::temp_dir().join(format!("meshsim-cli-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("run.toml");
    // Docker is asked for, but `--backend netns` wins (no daemon is needed); the node
    // command comes from the file, and n2 runs nothing.
    std::fs::write(
        &path,
        "[run]\nbackend = \"docker\"\nnode_cmd = \"exec sleep 601\"\n\n\
         [[nodes]]\nname = \"n1\"\nx = 0\ny = 0\n\n\
         [[nodes]]\nname = \"n2\"\nx = 100\ny = 0\nworkload = \"none\"\n",
    )
    .unwrap();
    let (mut meshsim, _rest) = start(&["up", path.to_str().unwrap(), "--backend", "netns"]);
    // The shell execs the command a moment after meshsim spawned it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while processes_in("n1") != ["sleep 601 "] && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(processes_in("n1"), ["sleep 601 "]);
    assert_eq!(processes_in("n2"), Vec::<String>::new());
    assert!(meshsim.terminate().success());
    assert_eq!(leftovers(), Vec::<String>::new());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn down_cleans_up_after_kill_9() {
    let _sweep = Sweep;
    let (mut meshsim, _rest) = start(&["up", &example(), "--node-cmd", "exec sleep 600"]);
    meshsim.kill_9();
    assert!(
        !leftovers().is_empty(),
        "a killed meshsim leaves its namespaces"
    );
    let node_dirs = std::path::Path::new("/tmp/meshsim/nodes");
    assert!(
        node_dirs.join("n1").is_dir(),
        "and its commands' directories"
    );
    let out = Command::new(meshsim_bin()).arg("down").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(leftovers(), Vec::<String>::new());
    assert!(
        !node_dirs.exists(),
        "`down` removes the commands' directories"
    );
    let sleepers = Command::new("pgrep")
        .args(["-f", "^sleep 600$"])
        .output()
        .unwrap();
    assert!(
        sleepers.stdout.is_empty(),
        "workloads survived: {}",
        String::from_utf8_lossy(&sleepers.stdout)
    );
    // And a new run starts cleanly after another crash, without a manual down.
    let (mut meshsim, _rest) = start(&["up", &example()]);
    meshsim.kill_9();
    let (mut meshsim, _rest) = start(&["up", &example()]);
    assert!(meshsim.terminate().success());
    assert_eq!(leftovers(), Vec::<String>::new());
}

/// The kernel's KSM knobs that `--ksm` changes.
const KSM_KNOBS: [&str; 3] = ["run", "pages_to_scan", "sleep_millisecs"];

fn ksm_knobs() -> [String; 3] {
    KSM_KNOBS.map(|knob| {
        std::fs::read_to_string(format!("/sys/kernel/mm/ksm/{knob}"))
            .unwrap()
            .trim()
            .to_owned()
    })
}

/// Puts the host's KSM settings back however the test ends.
struct RestoreKsm([String; 3]);

impl Drop for RestoreKsm {
    fn drop(&mut self) {
        for (knob, value) in KSM_KNOBS.iter().zip(&self.0).rev() {
            let _ = std::fs::write(format!("/sys/kernel/mm/ksm/{knob}"), value);
        }
        let _ = std::fs::remove_file("/run/meshsim-ksm.host");
        let _ = std::fs::remove_file("/run/meshsim-ms.ksm");
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn ksm_runs_for_the_run_and_the_hosts_settings_come_back() {
    let _sweep = Sweep;
    assert!(
        std::path::Path::new("/sys/kernel/mm/ksm").is_dir(),
        "this kernel has no KSM (CONFIG_KSM): `--ksm` cannot be tested here"
    );
    let host = ksm_knobs();
    let _restore = RestoreKsm(host.clone());
    let command = "sleep 602";
    let args = ["up", &example(), "--node-cmd", "exec sleep 602", "--ksm"];

    let (mut meshsim, _rest) = start(&args);
    assert_eq!(
        ksm_knobs(),
        ["1", "1000", "20"],
        "ksmd runs at meshsim's rate"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pgrep(&["-x", "-f", command]).len() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let sleepers = pgrep(&["-x", "-f", command]);
    assert_eq!(sleepers.len(), 6, "one node command per node");
    for pid in sleepers {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/ksm_stat")).unwrap();
        assert!(
            stat.contains("ksm_merge_any: yes"),
            "node process {pid} asks to be merged: {stat}"
        );
    }
    assert!(meshsim.terminate().success());
    assert_eq!(
        ksm_knobs(),
        host,
        "the host's settings are back after the run"
    );
    assert_eq!(leftovers(), Vec::<String>::new());

    // After kill -9 they stay changed until `meshsim down`, which puts them back.
    let (mut meshsim, _rest) = start(&args);
    meshsim.kill_9();
    assert_eq!(ksm_knobs()[0], "1");
    let out = Command::new(meshsim_bin()).arg("down").output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("KSM settings are back"),
        "{said}"
    );
    assert_eq!(ksm_knobs(), host, "`down` puts the host's settings back");

    // Without --ksm nothing asks to be merged and nothing changes.
    let (mut meshsim, _rest) = start(&["up", &example(), "--node-cmd", "exec sleep 602"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pgrep(&["-x", "-f", command]).len() < 6 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = pgrep(&["-x", "-f", command])[0];
    let stat = std::fs::read_to_string(format!("/proc/{pid}/ksm_stat")).unwrap();
    assert!(stat.contains("ksm_merge_any: no"), "{stat}");
    assert_eq!(ksm_knobs(), host);
    assert!(meshsim.terminate().success());
}
