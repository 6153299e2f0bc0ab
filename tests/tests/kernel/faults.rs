//! Faults: `meshsim up` of a large mesh killed with SIGKILL at a random moment (during the
//! bring-up, while it runs, or during its teardown after a SIGTERM), then cleaned up by
//! `meshsim down` or by the next start; after each cleanup nothing of the run is left (see
//! [`meshsim_tests::faults::assert_nothing_of`]).
//!
//! The moments come from a seeded generator whose seed is printed; `MESHSIM_FAULT_SEED=N`
//! replays a run's moments (as far as the machine's speed lets the same moment recur).
//! The run has a prefix and subnet of its own (`flt`, 10.85.0.0/16), so it never meets the
//! default `ms` run of another test.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use meshsim_tests::{
    Running, TempDir,
    faults::{Moments, SweepPrefix, assert_nothing_of, down},
    spawn_meshsim, wait_for_line,
};

const PREFIX: &str = "flt";
const SUBNET: &str = "10.85.0.0/16";
/// A port of its own, so a kill never meets another run's listener.
const LISTEN: &str = "127.0.0.1:3985";
/// The node command, recognisable by its argument, and forking so that the node's process
/// group holds a child the kernel's death signal does not reach.
const NODE_CMD: &str = "sleep 685 & exec sleep 685";
/// What finds the node command's processes (pgrep -f).
const NODE_CMD_PATTERN: &str = "^sleep 685$";
const NODES: usize = 100;
const ROUNDS: usize = 20;

/// `n` nodes on a square grid 100 px apart: each has its grid neighbours as links.
fn grid(dir: &TempDir, n: usize) -> PathBuf {
    let side = (n as f64).sqrt().ceil() as usize;
    let mut text = String::from("[settings]\nneighbours = 4\nmax_latency_ms = 12.0\n");
    for k in 0..n {
        let (x, y) = ((k % side) * 100, (k / side) * 100);
        text.push_str(&format!(
            "\n[[nodes]]\nname = \"n{}\"\nx = {x}\ny = {y}\n",
            k + 1
        ));
    }
    let path = dir.path().join("grid.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// `meshsim` with the run's prefix, subnet and port.
fn args<'a>(first: &[&'a str]) -> Vec<&'a str> {
    let mut v = first.to_vec();
    v.extend(["--prefix", PREFIX, "--subnet", SUBNET, "--listen", LISTEN]);
    v
}

/// When a round kills meshsim.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// After it said it started `nodes` nodes (0: any time after the spawn), plus a delay.
    BringUp { nodes: usize, after: Duration },
    /// A while after "running:".
    Running { after: Duration },
    /// A SIGTERM after "running:", then SIGKILL this long into the teardown.
    Teardown { after: Duration },
}

fn pick(moments: &mut Moments) -> Moment {
    match moments.below(3) {
        0 => Moment::BringUp {
            nodes: moments.below(10) as usize * NODES / 10,
            after: Duration::from_millis(moments.below(400)),
        },
        1 => Moment::Running {
            after: Duration::from_millis(moments.below(1500)),
        },
        // Squared, so that more moments fall early in the teardown, where the nodes go
        // (100 of them within some 400 ms here), and some late, where the bridge and the
        // directories go.
        _ => Moment::Teardown {
            after: Duration::from_millis(moments.below(35).pow(2)),
        },
    }
}

/// Waits for a line containing `text`; false if meshsim ended (or went quiet) first.
fn saw(lines: &std::sync::mpsc::Receiver<String>, text: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        match lines.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains(text) => return true,
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
        }
    }
    false
}

/// Runs one round up to its kill; says what happened.
fn kill_at(meshsim: &mut Running, lines: &std::sync::mpsc::Receiver<String>, at: Moment) -> String {
    match at {
        Moment::BringUp { nodes, after } => {
            if nodes > 0 {
                let said = format!("started {nodes}/{NODES} nodes");
                assert!(saw(lines, &said), "meshsim never said {said:?}");
            }
            std::thread::sleep(after);
        }
        Moment::Running { after } => {
            assert!(saw(lines, "running:"), "meshsim never said it runs");
            std::thread::sleep(after);
        }
        Moment::Teardown { after } => {
            assert!(saw(lines, "running:"), "meshsim never said it runs");
            let pid = nix::unistd::Pid::from_raw(meshsim.child.id() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
            std::thread::sleep(after);
        }
    }
    let ended_first = matches!(meshsim.child.try_wait(), Ok(Some(_)));
    meshsim.kill_9();
    if ended_first {
        "it had ended by itself".to_owned()
    } else {
        "killed".to_owned()
    }
}

#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn kill_9_at_random_moments_then_down_or_the_next_start_leaves_nothing() {
    let _sweep = SweepPrefix(PREFIX);
    let dir = TempDir::new("faults");
    let file = grid(&dir, NODES);
    let file = file.to_str().unwrap();
    let mut moments = Moments::from_env();
    println!(
        "fault rounds: seed {} (MESHSIM_FAULT_SEED replays it)",
        moments.seed
    );
    let started = Instant::now();
    for round in 1..=ROUNDS {
        let at = pick(&mut moments);
        let round_started = Instant::now();
        let (mut meshsim, lines) = spawn_meshsim(&args(&["up", file, "--node-cmd", NODE_CMD]));
        meshsim.sweep = false;
        let what = kill_at(&mut meshsim, &lines, at);
        // Odd rounds: `meshsim down`; even ones: the next start cleans up (an empty run,
        // which must find and remove the killed run's nodes before it says it runs).
        let cleanup = if round % 2 == 1 {
            let said = down(PREFIX);
            format!("down: {}", said.trim())
        } else {
            let (mut next, lines) = spawn_meshsim(&args(&["serve"]));
            wait_for_line(&lines, "running:");
            let running = meshsim_tests::leftovers_of(&format!("{PREFIX}-n"));
            assert_eq!(
                running,
                Vec::<String>::new(),
                "round {round}: the next start left the killed run's nodes"
            );
            assert!(
                next.terminate().success(),
                "round {round}: the next run failed"
            );
            "the next start".to_owned()
        };
        assert_nothing_of(
            PREFIX,
            NODE_CMD_PATTERN,
            &format!("round {round} ({at:?}, {what}, {cleanup})"),
        );
        println!(
            "round {round}: {at:?}, {what}; {cleanup}; nothing left ({:.1} s)",
            round_started.elapsed().as_secs_f64()
        );
    }
    println!(
        "{ROUNDS} rounds of {NODES} nodes in {:.0} s",
        started.elapsed().as_secs_f64()
    );
}

/// A run killed between making its directories and marking them left them empty: `down`
/// removes them, and the next start is not refused (it once said "not made by meshsim").
#[test]
#[ignore = "needs root: run with cargo xtask test"]
fn empty_run_directories_of_a_run_killed_before_its_markers_are_removed() {
    let _sweep = SweepPrefix(PREFIX);
    let run: meshsim::runtime::names::RunPrefix = PREFIX.parse().unwrap();
    for dir in [run.run_dir(), run.node_dirs()] {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let said = down(PREFIX);
    assert!(said.contains("/nodes") && said.contains("/run"), "{said}");
    assert_nothing_of(PREFIX, NODE_CMD_PATTERN, "after down");
    std::fs::create_dir_all(run.node_dirs()).unwrap();
    let dir = TempDir::new("faults-empty");
    let file = grid(&dir, 2);
    let (mut meshsim, lines) = spawn_meshsim(&args(&[
        "up",
        file.to_str().unwrap(),
        "--node-cmd",
        NODE_CMD,
    ]));
    wait_for_line(&lines, "running:");
    assert!(meshsim.terminate().success());
    assert_nothing_of(PREFIX, NODE_CMD_PATTERN, "after the next run");
}
