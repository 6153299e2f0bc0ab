//! Faults during a Synapse start: `meshsim up` of three Synapse nodes in a line killed with
//! SIGKILL right after its spawn, during the zygote's import of Synapse, while the zygote
//! forks the homeservers, while the homeservers start and once one is ready (on SQLite), and
//! while they start on Postgres; after each, `meshsim down` leaves
//! no zygote, homeserver or Postgres process and nothing else of the run (see
//! [`meshsim_tests::faults::assert_nothing_of`]).
//!
//! The delays come from a seeded generator whose seed is printed (`MESHSIM_FAULT_SEED`).
//! The run has a prefix, subnet and port of its own (`fltm`, 10.86.0.0/16, 3986).

use std::time::{Duration, Instant};

use meshsim_tests::{
    TempDir,
    faults::{Moments, SweepPrefix, assert_nothing_of, down},
    pgrep, spawn_meshsim, wait_for_line,
};

const PREFIX: &str = "fltm";
/// Every process of the run's homeservers names its directory: the zygote and what it
/// forked (`run/zygote.py`), a cold Synapse (its config), Postgres (`-D .../postgres`).
const RUN_PROCESSES: &str = "/tmp/meshsim-fltm/";

const LINE: &str = "[settings]\nneighbours = 2\nmax_latency_ms = 12.0\n\n\
    [[nodes]]\nname = \"n1\"\nx = 0\ny = 0\n\n\
    [[nodes]]\nname = \"n2\"\nx = 100\ny = 0\n\n\
    [[nodes]]\nname = \"n3\"\nx = 200\ny = 0\n";

/// What a round waits for before its random delay (none: right after the spawn).
struct Round {
    after_line: Option<&'static str>,
    /// The longest random delay after it, in ms.
    within_ms: u64,
    database: &'static str,
}

const ROUNDS: [Round; 6] = [
    Round {
        after_line: None,
        within_ms: 600,
        database: "sqlite",
    },
    // Somewhere in the zygote's import of Synapse (some 3 s here) or the nodes' making.
    Round {
        after_line: None,
        within_ms: 4000,
        database: "sqlite",
    },
    // The zygote says it imported Synapse, then forks a homeserver per node.
    Round {
        after_line: Some("imported Synapse"),
        within_ms: 300,
        database: "sqlite",
    },
    // The nodes are made and their homeservers forked: they start, answer, register.
    Round {
        after_line: Some("started 3/3 nodes"),
        within_ms: 1500,
        database: "sqlite",
    },
    // One homeserver is ready; the others may still be starting or registering.
    Round {
        after_line: Some("is ready"),
        within_ms: 400,
        database: "sqlite",
    },
    Round {
        after_line: Some("started 3/3 nodes"),
        within_ms: 1500,
        database: "postgres",
    },
];

#[test]
#[ignore = "needs root and Synapse: run with cargo xtask test"]
fn a_meshsim_killed_during_a_synapse_start_leaves_nothing_after_down() {
    let _sweep = SweepPrefix(PREFIX);
    let dir = TempDir::new("faults-synapse");
    let file = dir.path().join("line.toml");
    std::fs::write(&file, LINE).unwrap();
    let mut moments = Moments::from_env();
    println!(
        "Synapse fault rounds: seed {} (MESHSIM_FAULT_SEED replays it)",
        moments.seed
    );
    for (k, round) in ROUNDS.iter().enumerate() {
        let started = Instant::now();
        let (mut meshsim, lines) = spawn_meshsim(&[
            "up",
            file.to_str().unwrap(),
            "--workload",
            "synapse",
            "--database",
            round.database,
            "--prefix",
            PREFIX,
            "--subnet",
            "10.86.0.0/16",
            "--listen",
            "127.0.0.1:3986",
        ]);
        meshsim.sweep = false;
        if let Some(line) = round.after_line {
            wait_for_line(&lines, line);
        }
        let delay = Duration::from_millis(moments.below(round.within_ms));
        std::thread::sleep(delay);
        let ran = pgrep(&["-f", RUN_PROCESSES]).len();
        assert!(
            matches!(meshsim.child.try_wait(), Ok(None)),
            "round {}: meshsim ended before its kill",
            k + 1
        );
        meshsim.kill_9();
        let said = down(PREFIX);
        let what = format!(
            "round {} ({}, {:?} after {:?}, {ran} processes of the run when killed; down: {})",
            k + 1,
            round.database,
            delay,
            round.after_line.unwrap_or("the spawn"),
            said.trim()
        );
        // The kernel ends the zygote and what it forked (their parent-death signals), and
        // `down` the rest; either way none may be left once `down` returned.
        assert_nothing_of(PREFIX, RUN_PROCESSES, &what);
        println!(
            "{what}: nothing left ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    }
}
