//! A homeserver that crashes, on two Synapse nodes (forked by the run's zygote, the
//! default, or cold): `kill -9` of n2's homeserver is reported within 2 s in `GET /api/workloads`
//! (with the signal) and on `/metrics`; n2 comes back by itself after its backoff as the
//! same server (a message sent while it was down reaches it, from its own database and
//! room); with its restart policy set to `never`, the next crash leaves it failed; a node
//! removed while it waits to restart is not restarted and leaves nothing.
//!
//! Needs root, Python 3 with venv and PyPI the first time: `cargo xtask test` runs it.

use std::time::{Duration, Instant};

use meshsim::{
    model::Settings,
    server::ServerOptions,
    workload::{SynapseOptions, synapse::Launch},
};
use meshsim_tests::{
    eventually,
    mesh::MeshConfig,
    serving::{Lab, promtool_check},
};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// n2's entry in `GET /api/workloads`.
async fn workload_of(lab: &Lab, node: &str) -> Value {
    let (status, body) = lab.get("/api/workloads").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == node)
        .cloned()
        .unwrap_or_else(|| panic!("{node} is not in {body}"))
}

/// The value of the series `series` (name and labels, as written) on `/metrics`, which
/// promtool accepts.
async fn metric(lab: &Lab, series: &str) -> Option<f64> {
    let text = lab
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    promtool_check(&text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn pid_of(workload: &Value) -> u32 {
    workload["pid"].as_u64().expect("a pid") as u32
}

async fn send(lab: &Lab, node: &str, body: &str) -> String {
    let (status, sent) = lab
        .call(
            Method::POST,
            &format!("/api/nodes/{node}/messages"),
            Some(json!({"body": body})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{sent}");
    sent["event_id"].as_str().unwrap().to_owned()
}

/// Waits until event `id` was seen on `node`.
async fn delivered(lab: &Lab, id: &str, node: &str, within: Duration) {
    eventually(&format!("{id} seen on {node}"), within, async || {
        let (_, page) = lab.get("/api/events?limit=1000").await;
        page["events"]
            .as_array()?
            .iter()
            .find(|e| e["id"] == id)
            .and_then(|e| e["seen"][node].as_f64())
            .map(|_| ())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Synapse: run with cargo xtask test"]
async fn a_crashed_homeserver_is_reported_and_restarted_with_its_data() {
    crash_and_restart(SynapseOptions::default(), "meshsim-restart-test-logs").await;
}

/// The same with homeservers that start cold, each meshsim's own child.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Synapse: run with cargo xtask test"]
async fn a_crashed_cold_homeserver_is_reported_and_restarted_with_its_data() {
    let options = SynapseOptions {
        launch: Launch::Cold,
        ..SynapseOptions::default()
    };
    crash_and_restart(options, "meshsim-restart-cold-test-logs").await;
}

async fn crash_and_restart(options: SynapseOptions, logs: &str) {
    let config = MeshConfig::synapse(&options, Settings::default(), logs).await;
    let mut lab = Lab::start_mesh(config, ServerOptions::default()).await;
    lab.add_node(100.0, 100.0).await;
    lab.add_node(200.0, 100.0).await;
    lab.mesh.ready(2, options.start_timeout).await;
    let matrix = lab.mesh.matrix.clone().expect("a Matrix view with Synapse");
    eventually(
        "both in the mesh room, each server knowing the other",
        Duration::from_secs(120),
        async || {
            let room = matrix.mesh_room()?;
            (matrix.members(&room).len() == 2 && matrix.converged(&room).await).then_some(())
        },
    )
    .await;
    let before = workload_of(&lab, "n2").await;
    assert_eq!(before["state"], "ready", "{before}");
    assert_eq!(
        (before["crashes"].as_u64(), before["restarts"].as_u64()),
        (Some(0), Some(0))
    );
    let (status, policy) = lab.get("/api/nodes/n2/restart").await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(
        policy,
        json!({"node": "n2", "own": false, "restart": "on-failure", "default": "on-failure"})
    );
    assert_eq!(
        metric(&lab, "meshsim_workload_up{node=\"n2\"}").await,
        Some(1.0)
    );

    // Killed: noticed within 2 s, with how it ended.
    let first = pid_of(&before);
    kill(Pid::from_raw(first as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let crashed = eventually("n2 reported crashed", Duration::from_secs(10), async || {
        let w = workload_of(&lab, "n2").await;
        (w["crashes"] == 1).then_some(w)
    })
    .await;
    let noticed = killed.elapsed();
    println!(
        "the crash was reported {:.2} s after the kill",
        noticed.as_secs_f64()
    );
    assert!(
        noticed < Duration::from_secs(2),
        "noticed after {noticed:?}"
    );
    assert_eq!(crashed["exit"], json!({"signal": 9}), "{crashed}");
    assert_eq!(crashed["state"], "restarting", "{crashed}");
    let detail = crashed["detail"].as_str().unwrap();
    assert!(
        detail.contains("was killed by signal 9 (SIGKILL)"),
        "{detail}"
    );
    assert!(crashed["restart_at_ms"].as_u64().is_some(), "{crashed}");
    assert_eq!(
        metric(&lab, "meshsim_workload_crashes_total{node=\"n2\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&lab, "meshsim_workload_up{node=\"n2\"}").await,
        Some(0.0)
    );
    // Sent while n2 is down: n1's federation delivers it when n2 is back.
    let while_down = send(&lab, "n1", "sent while n2 was down").await;

    // Back by itself, as the same server: the message reaches it from its own room.
    let back = eventually("n2 ready again", Duration::from_secs(120), async || {
        let w = workload_of(&lab, "n2").await;
        (w["state"] == "ready").then_some(w)
    })
    .await;
    println!(
        "n2 was ready again {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(back["restarts"], 1, "{back}");
    assert_ne!(pid_of(&back), first, "a new process");
    assert_eq!(
        metric(&lab, "meshsim_workload_restarts_total{node=\"n2\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&lab, "meshsim_workload_up{node=\"n2\"}").await,
        Some(1.0)
    );
    delivered(&lab, &while_down, "n2", Duration::from_secs(120)).await;
    let after = send(&lab, "n1", "sent after n2 came back").await;
    delivered(&lab, &after, "n2", Duration::from_secs(60)).await;

    // `never`: the next crash leaves it failed.
    let (status, policy) = lab
        .call(
            Method::PUT,
            "/api/nodes/n2/restart",
            Some(json!({"restart": "never"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(
        policy,
        json!({"node": "n2", "own": true, "restart": "never", "default": "on-failure"})
    );
    let second = pid_of(&back);
    kill(Pid::from_raw(second as i32), Signal::SIGKILL).unwrap();
    let failed = eventually("n2 failed", Duration::from_secs(10), async || {
        let w = workload_of(&lab, "n2").await;
        (w["state"] == "failed").then_some(w)
    })
    .await;
    assert!(
        failed["detail"].as_str().unwrap().contains("not restarted"),
        "{failed}"
    );
    // Well past the backoff, it is still failed and no process was started.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = workload_of(&lab, "n2").await;
    assert_eq!(
        (&still["state"], &still["crashes"], &still["restarts"]),
        (&json!("failed"), &json!(2), &json!(1)),
        "{still}"
    );
    assert_eq!(
        metric(&lab, "meshsim_workload_crashes_total{node=\"n2\"}").await,
        Some(2.0)
    );

    // A node removed while it waits to restart: the restart is cancelled, and nothing of its
    // homeserver is left.
    let n1 = workload_of(&lab, "n1").await;
    assert_eq!(
        homeserver_processes("n1"),
        [pid_of(&n1)],
        "found by name or configuration"
    );
    kill(Pid::from_raw(pid_of(&n1) as i32), Signal::SIGKILL).unwrap();
    eventually(
        "n1 waiting to restart",
        Duration::from_secs(10),
        async || (workload_of(&lab, "n1").await["state"] == "restarting").then_some(()),
    )
    .await;
    let (status, _) = lab.call(Method::DELETE, "/api/nodes/n1", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(homeserver_processes("n1"), Vec::<u32>::new());
    let (_, listed) = lab.get("/api/workloads").await;
    assert!(
        listed["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["name"] != "n1"),
        "{listed}"
    );
    lab.stop().await;
}

/// Processes of `node`'s homeserver: named after it (forked: `synapse n1`) or started with
/// its configuration (cold).
fn homeserver_processes(node: &str) -> Vec<u32> {
    let config = format!("/{node}/homeserver.yaml");
    meshsim::runtime::process::all_pids()
        .into_iter()
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            comm.trim_end() == format!("synapse {node}")
                || String::from_utf8_lossy(&cmdline).contains(&config)
        })
        .collect()
}
