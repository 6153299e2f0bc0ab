//! Matrix events as meshsim observes them, on three Synapse nodes in a line n1 - n2 - n3
//! (100 ms a link): every node's test user is in the mesh room; a message sent through the
//! API from n1 is seen on n2 and n3 with a delivery time no shorter than the path's delay,
//! in `GET /api/events`, on the WebSocket (with its path n1 -> n2 -> n3) and in `/metrics`;
//! each observer's session is a loopback connection inside its node; a message sent while
//! its destination was away is delivered when it returns, with the whole wait as its time.
//!
//! Needs root, Python 3 with venv and PyPI the first time: `cargo xtask test` runs it.

use std::time::{Duration, Instant};

use meshsim::{
    server::ServerOptions,
    workload::{SynapseOptions, matrix::Matrix},
};
use meshsim_tests::{
    eventually,
    fixtures::line,
    id,
    mesh::MeshConfig,
    serving::{Lab, assert_error},
    ws::{connect, next_of},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// How long a node that returns may take to catch up (its server restarts, then federation
/// retries it).
const RETURN_TIMEOUT: Duration = Duration::from_secs(180);

/// The event `event_id` from `GET /api/events`, once `done` says it is complete; panics with
/// what the log had of it when `within` passes.
async fn event_when(
    lab: &Lab,
    event_id: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (status, page) = lab.get("/api/events?limit=1000").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let event = page["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == event_id)
            .cloned();
        match event {
            Some(e) if done(&e) => return e,
            _ if Instant::now() > deadline => {
                panic!("event {event_id} not complete after {within:?}: {event:?}; the log: {page}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

fn delivered_to(event: &Value, node: &str) -> Option<f64> {
    event["deliveries"][node].as_f64()
}

/// Sends `body` from `node` into the mesh room over the API; the event id.
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

/// Established TCP connections from 127.0.0.1 to 127.0.0.1:`port` in the network namespace
/// of process `pid` (its `/proc/<pid>/net/tcp`).
fn loopback_connections(pid: u32, port: u16) -> usize {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap();
    let server = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local address, remote address, state (01 = established).
            f.len() > 3 && f[3] == "01" && f[2] == server && f[1].starts_with("0100007F:")
        })
        .count()
}

fn members(matrix: &Matrix) -> usize {
    matrix
        .mesh_room()
        .map_or(0, |room| matrix.members(&room).len())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Synapse: run with cargo xtask test"]
async fn events_reach_every_server_with_their_delivery_time() {
    let (n1, n2, n3) = (id("n1"), id("n2"), id("n3"));
    let options = SynapseOptions::default();
    let topology = line();
    let config = MeshConfig::synapse(
        &options,
        topology.settings.clone(),
        "meshsim-events-test-logs",
    )
    .await;
    let mut lab = Lab::start_mesh(config, ServerOptions::default()).await;
    let fq = lab.mesh.fq;
    lab.sim.load(topology, None).await.unwrap();
    let status = lab.mesh.ready(3, options.start_timeout).await;
    let matrix = lab.mesh.matrix.clone().expect("a Matrix view with Synapse");

    // Every node's test user ends up in the mesh room, without anyone asking.
    let joined = Instant::now();
    eventually(
        "all three in the mesh room",
        Duration::from_secs(120),
        async || (members(&matrix) == 3).then_some(()),
    )
    .await;
    let room = matrix.mesh_room().unwrap();
    // Each server must also know of the others' joins, or a message skips a server (as
    // Matrix does: it learns of the message only with a later one).
    eventually(
        "every server knows every member",
        Duration::from_secs(60),
        async || matrix.converged(&room).await.then_some(()),
    )
    .await;
    println!(
        "the mesh room has all three nodes {:.1} s after they were ready",
        joined.elapsed().as_secs_f64()
    );

    // Each observer long-polls its own node from inside it: a loopback connection in the
    // node's namespace, where the host cannot connect from.
    for node in [n1, n2, n3] {
        assert!(matrix.syncs(&node.name()) > 0, "{node} is observed");
        let pid = status[&node].pid.unwrap();
        assert!(
            loopback_connections(pid, 8008) >= 1,
            "{node}: no loopback session to its homeserver"
        );
    }

    // Refusals say what is wrong.
    let lab_ref = &lab;
    let post = |node: &str, body: Value| {
        let path = format!("/api/nodes/{node}/messages");
        async move { lab_ref.call(Method::POST, &path, Some(body)).await }
    };
    assert_error(
        &post("n1", json!({"body": " "})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("body"),
    );
    assert_error(
        &post("n1", json!({"body": "x".repeat(40_000)})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("body"),
    );
    assert_error(
        &post("n1", json!({"body": "hi", "room": "!nowhere:n1"})).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("room"),
    );
    assert_error(
        &post("n9", json!({"body": "hi"})).await,
        StatusCode::NOT_FOUND,
        Some("id"),
    );

    let mut ws = connect(&lab, "").await;
    let event_id = send(&lab, "n1", "hello everyone, from n1").await;
    let event = event_when(&lab, &event_id, Duration::from_secs(60), |e| {
        delivered_to(e, "n2").is_some() && delivered_to(e, "n3").is_some()
    })
    .await;
    let (to_n2, to_n3) = (
        delivered_to(&event, "n2").unwrap(),
        delivered_to(&event, "n3").unwrap(),
    );
    println!(
        "n1's message: seen on n2 after {to_n2:.0} ms (path 100 ms), on n3 after {to_n3:.0} ms \
         (path 200 ms){}",
        if fq {
            ""
        } else {
            " (delays NOT enforced: no sch_fq)"
        }
    );
    assert_eq!(event["origin"], "n1");
    assert_eq!(event["body"], "hello everyone, from n1");
    assert_eq!(event["mesh_room"], true);
    assert_eq!(event["paths"]["n3"], json!(["n1", "n2", "n3"]));
    assert_eq!(event["paths"]["n2"], json!(["n1", "n2"]));
    assert!(event["pending"].as_array().unwrap().is_empty(), "{event}");
    if fq {
        assert!(to_n2 >= 100.0, "faster than the link: {to_n2} ms");
        assert!(to_n3 >= 200.0, "faster than the path: {to_n3} ms");
    }
    assert!(to_n3 < 30_000.0, "{to_n3} ms");

    // The WebSocket shows it too, with the path it took.
    let deadline = Instant::now() + Duration::from_secs(30);
    let on_ws = loop {
        assert!(
            Instant::now() < deadline,
            "no events message with n3's sighting"
        );
        let m = next_of(&mut ws, "events").await;
        if let Some(e) = m["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["id"] == event_id.as_str() && e["seen"]["n3"].is_number())
        {
            break e.clone();
        }
    };
    assert_eq!(on_ws["paths"]["n3"], json!(["n1", "n2", "n3"]));

    // And /metrics.
    let text = lab
        .request(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let count = |node: &str| {
        text.lines()
            .find(|l| {
                l.starts_with(&format!(
                    "meshsim_matrix_event_delivery_seconds_count{{dst=\"{node}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
    };
    assert!(count("n3").is_some_and(|c| c >= 1.0), "{text}");
    assert!(
        text.contains("meshsim_matrix_events_seen_total{node=\"n2\"}"),
        "{text}"
    );

    // A destination away: the message waits for it, and its delivery time says so.
    let n3_doc = lab.mesh.node_doc(n3).await;
    lab.sim.remove_node(n3).await.unwrap();
    let away = Instant::now();
    let while_away = send(&lab, "n1", "while n3 was away").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    lab.mesh.add_back(&n3_doc).await;
    let gone_for = away.elapsed();
    let back = event_when(&lab, &while_away, RETURN_TIMEOUT, |e| {
        delivered_to(e, "n3").is_some()
    })
    .await;
    let late = delivered_to(&back, "n3").unwrap();
    println!(
        "sent while n3 was away ({:.1} s): seen on n3 after {:.1} s",
        gone_for.as_secs_f64(),
        late / 1000.0
    );
    assert!(
        late >= 5_000.0,
        "delivered to n3 after {late} ms, but it was away 5 s"
    );
    assert!(
        late <= away.elapsed().as_millis() as f64 + 1_000.0,
        "{late} ms"
    );
    lab.stop().await;
}
