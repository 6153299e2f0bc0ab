//! What a Docker run does when its daemon restarts or a container is killed behind its back,
//! on a dockerd of the test's own (the shared one is not the test's to restart):
//! - dockerd restarted with `live-restore` on: every container still runs, meshsim says so
//!   and carries on, and traffic still crosses the mesh;
//! - a container killed (`docker kill`): meshsim names it, stops the run and removes
//!   everything, exiting non-zero;
//! - dockerd restarted without `live-restore` (it stops every container): meshsim waits for
//!   it, names the stopped containers, and stops the run cleanly, exiting non-zero.

use std::{collections::HashMap, process::Command, time::Duration};

use bollard::{
    Docker,
    query_parameters::{KillContainerOptionsBuilder, ListContainersOptionsBuilder},
};
use meshsim::runtime::{
    docker::BASE_IMAGE,
    names::{PREFIX_LABEL, RunPrefix},
};
use meshsim_tests::{
    TempDir, dockerd::OwnDockerd, faults::assert_nothing_of, fixtures::LINE, mesh::run_lock,
    meshsim_bin, spawn_meshsim_with, wait_for_exit, wait_for_line,
};

const PREFIX: &str = "dkr";
const NODE_CMD: &str = "sleep 7301";

/// `meshsim down --prefix dkr` against the test's daemon when dropped, so a failed
/// assertion leaves nothing.
struct Down(String);

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(meshsim_bin())
            .args(["down", "--prefix", PREFIX])
            .env("DOCKER_HOST", &self.0)
            .output();
    }
}

/// Nothing of the run on the host, and no container or network of it in the daemon.
async fn assert_nothing_left(docker: &Docker, round: &str) {
    assert_nothing_of(PREFIX, NODE_CMD, round);
    let label = format!("{PREFIX_LABEL}={PREFIX}");
    let options = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&HashMap::from([("label", vec![label.as_str()])]))
        .build();
    let left = docker.list_containers(Some(options)).await.unwrap();
    assert!(left.is_empty(), "{round}: containers left: {left:?}");
    let prefix: RunPrefix = PREFIX.parse().unwrap();
    let network = prefix.docker_network();
    assert!(
        docker.inspect_network(&network, None).await.is_err(),
        "{round}: the network {network} is left"
    );
}

fn ping(from: &str, to: &str) -> bool {
    Command::new(meshsim_bin())
        .args([
            "exec", "--prefix", PREFIX, from, "--", "ping", "-c1", "-W2", to,
        ])
        .output()
        .expect("run meshsim exec")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Docker: run with cargo xtask test"]
async fn a_dockerd_restart_or_a_killed_container_is_reported_and_nothing_is_left() {
    let _lock = run_lock().await;
    let mut dockerd = OwnDockerd::start("restart", true, BASE_IMAGE).await;
    let host = dockerd.host().to_owned();
    let _down = Down(host.clone());
    let dir = TempDir::new("dockerd-restart");
    let file = dir.path().join("line.toml");
    std::fs::write(&file, LINE).unwrap();
    let file = file.to_str().unwrap();
    let args = [
        "up",
        file,
        "--backend",
        "docker",
        "--node-cmd",
        NODE_CMD,
        "--prefix",
        PREFIX,
        "--listen",
        "127.0.0.1:0",
    ];
    let envs = [("DOCKER_HOST", host.as_str())];
    let n3 = "10.77.0.4";

    // Live-restore: the containers outlive the restart, and so does the run.
    let (mut meshsim, lines) = spawn_meshsim_with(&args, &envs);
    wait_for_line(&lines, "running: Ctrl-C");
    assert!(ping("n1", n3), "n1 reaches n3 before the restart");
    dockerd.restart(true).await;
    wait_for_line(&lines, "still runs (dockerd's live-restore): carrying on");
    assert!(ping("n1", n3), "n1 reaches n3 after the restart");
    assert!(
        meshsim.child.try_wait().unwrap().is_none(),
        "meshsim runs on"
    );

    // A container killed behind meshsim's back ends the run, cleanly.
    let docker = dockerd.connect().await;
    docker
        .kill_container(
            "meshsim-dkr-n2",
            Some(KillContainerOptionsBuilder::new().signal("KILL").build()),
        )
        .await
        .unwrap();
    wait_for_line(
        &lines,
        "the container meshsim-dkr-n2 stopped (exit code 137) without meshsim asking",
    );
    let status = wait_for_exit(&mut meshsim, Duration::from_secs(60));
    assert!(!status.success(), "a lost run exits non-zero: {status}");
    assert_nothing_left(&docker, "after docker kill").await;

    // Without live-restore the restart stops every container: named, and the run ends.
    let (mut meshsim, lines) = spawn_meshsim_with(&args, &envs);
    wait_for_line(&lines, "running: Ctrl-C");
    dockerd.restart(false).await;
    wait_for_line(
        &lines,
        "Docker stopped the containers meshsim-dkr-n1, meshsim-dkr-n2, meshsim-dkr-n3",
    );
    let status = wait_for_exit(&mut meshsim, Duration::from_secs(90));
    assert!(!status.success(), "a lost run exits non-zero: {status}");
    let docker = dockerd.connect().await;
    assert_nothing_left(&docker, "after a dockerd restart").await;
}
