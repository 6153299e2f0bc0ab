//! Homeservers as production runs them (`--workload synapse-workers`, the `small` profile): a
//! main process, a sync worker, a federation reader and a federation sender per node, Redis
//! and nginx, on Postgres. A real client's message n1 -> n2 -> n3 leaves n1 through its
//! federation sender and lands on n3's federation reader (their logs say so, the main
//! processes' do not), the counters show only that path, and the events are in n1's and n3's
//! databases. Removing a node stops every process it had; `meshsim down` after `kill -9`
//! leaves no process and no socket.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use meshsim::{
    runtime::process::pid_alive,
    workload::{SynapseOptions, WorkloadKind, synapse::workers::Profile},
};
use meshsim_tests::{
    Sweep, TempDir, assert_carried, assert_runs_as_node,
    fixtures::{check_line, line},
    id,
    matrix::Nio,
    mesh::{MeshConfig, MeshLab},
    meshsim_bin, spawn_meshsim, wait_for_line,
};

use crate::postgres::messages_in;

/// The processes whose working directory is `dir` or below it: everything a node's script
/// started runs in the node's directory.
fn processes_under(dir: &Path) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|cwd| cwd.starts_with(dir))
        })
        .filter(|pid| pid_alive(*pid))
        .collect()
}

/// Unix sockets (files) under `dir`.
fn sockets_under(dir: &Path) -> Vec<PathBuf> {
    use std::os::unix::fs::FileTypeExt as _;
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_socket() {
                found.push(entry.path());
            }
        }
    }
    found
}

fn log_of(logs: &Path, node: &str, process: &str) -> String {
    std::fs::read_to_string(logs.join(format!("{node}.{process}.log"))).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root, Postgres, Redis, nginx and Synapse: run with cargo xtask test"]
async fn federation_leaves_through_the_sender_and_lands_on_the_reader() {
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    let topology = line();
    check_line(&topology);
    let options = SynapseOptions::with_workers(Profile::Small);
    let logs = std::env::temp_dir().join("meshsim-workers-test-logs");
    let _ = std::fs::remove_dir_all(&logs);
    let nio = Nio::prepare(&options, true).await;
    let mut mesh = MeshLab::start(MeshConfig {
        workload: WorkloadKind::Synapse(options.clone()),
        settings: topology.settings.clone(),
        fq_if_available: true,
        log_dir: logs.clone(),
        ..MeshConfig::default()
    })
    .await;
    let up = Instant::now();
    mesh.sim.load(topology, None).await.unwrap();
    mesh.ready(3, options.start_timeout).await;
    println!(
        "3 homeservers with workers (small) ready {:.1} s after the load",
        up.elapsed().as_secs_f64()
    );
    let n3_dir = options.run_dir.join("n3");
    let n3_processes = processes_under(&n3_dir);
    // bash, Redis, main, three workers, nginx's master and worker.
    assert!(
        n3_processes.len() >= 8,
        "n3 runs every process of its layout: {n3_processes:?}"
    );
    // Its script, Redis, every Synapse process and nginx run as n3's own user.
    for pid in &n3_processes {
        assert_runs_as_node(*pid, n3);
    }

    let before = mesh.sim.counters().await.unwrap();
    let room = nio.step(&mesh, n1, "invite", "@meshsim:n3", "").await;
    nio.step(&mesh, n3, "join", &room, "").await;
    let body = format!("through the workers ({})", std::process::id());
    nio.step(&mesh, n1, "send", &room, &body).await;
    nio.step(&mesh, n3, "await", &room, &body).await;
    let after = mesh.sim.counters().await.unwrap();
    assert_carried(&before, &after, &[(n1, n2), (n2, n3), (n3, n2), (n2, n1)]);
    assert!(
        !after.links.contains_key(&(n1, n3)) && !after.links.contains_key(&(n3, n1)),
        "n1 and n3 have no link"
    );

    // Out through n1's federation sender, never its main process...
    let sent = log_of(&logs, "n1", "federation_sender1");
    assert!(
        sent.lines()
            .any(|l| l.contains("TX [n3]") && l.contains("got 200 response")),
        "n1's federation sender sent transactions to n3:\n{sent}"
    );
    assert!(
        !log_of(&logs, "n1", "main").contains("TX [n3]"),
        "n1's main process sends no federation"
    );
    // ...in through n3's federation reader, never its main process.
    let received = log_of(&logs, "n3", "federation_reader1");
    assert!(
        received
            .lines()
            .any(|l| l.contains("{n1}") && l.contains("PUT /_matrix/federation/v1/send/")),
        "n3's federation reader took n1's transactions:\n{received}"
    );
    assert!(!log_of(&logs, "n3", "main").contains("/_matrix/federation/v1/send/"));
    for node in ["n1", "n3"] {
        assert!(messages_in(&options, node).await.contains(&body), "{node}");
    }

    // Removing n3 stops every one of its processes; its database stays.
    mesh.sim.remove_node(n3).await.unwrap();
    let left: Vec<u32> = n3_processes.into_iter().filter(|p| pid_alive(*p)).collect();
    assert!(left.is_empty(), "n3's processes outlived it: {left:?}");
    assert!(messages_in(&options, "n3").await.contains(&body));
    mesh.stop().await;
    assert!(processes_under(&options.run_dir).is_empty());
}

#[test]
#[ignore = "needs root, Postgres, Redis, nginx and Synapse: run with cargo xtask test"]
fn down_after_kill_9_leaves_no_process_and_no_socket() {
    let _sweep = Sweep;
    let options = SynapseOptions::default();
    // Two nodes: each runs eight processes, five of them Pythons importing Synapse.
    let dir = TempDir::new("workers-kill-9");
    let file = dir.path().join("two.toml");
    std::fs::write(
        &file,
        "[[nodes]]\nname = \"n1\"\nx = 100\ny = 100\n\n[[nodes]]\nname = \"n2\"\nx = 150\ny = 100\n",
    )
    .unwrap();
    let (mut meshsim, lines) = spawn_meshsim(&[
        "up",
        file.to_str().unwrap(),
        "--workload",
        "synapse-workers",
    ]);
    // The first homeserver up: every process of its layout runs.
    wait_for_line(&lines, "synapse answers after");
    let running = processes_under(&options.run_dir);
    assert!(running.len() >= 8, "{running:?}");
    assert!(!sockets_under(&options.run_dir).is_empty());
    meshsim.kill_9();
    let out = std::process::Command::new(meshsim_bin())
        .arg("down")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let left: Vec<u32> = running.into_iter().filter(|p| pid_alive(*p)).collect();
    assert!(left.is_empty(), "processes outlived the run: {left:?}");
    assert!(processes_under(&options.run_dir).is_empty());
    assert_eq!(sockets_under(&options.run_dir), Vec::<PathBuf>::new());
    assert!(!options.run_dir.exists(), "down removes the run directory");
    assert!(!options.postgres_dir.exists(), "and the Postgres cluster's");
}
