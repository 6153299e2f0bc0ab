//! The canvas's timeline and recorder through the API: a recording of changes made over the
//! API is a scenario file that parses back step for step; a scenario posted to the API loads
//! its mesh, runs its steps (pausable, stoppable) and leaves its results; the WebSocket
//! tells every client where it stands.
//!
//! Needs root (see tests/serving): `cargo xtask test` runs these.

use std::{path::Path, time::Duration};

use meshsim::server::ServerOptions;
use meshsim_tests::{
    TempDir, eventually,
    serving::{Lab, answer, assert_error},
    ws::{connect, next_of},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn post_scenario(lab: &Lab, name: &str, text: &str) -> (StatusCode, Value) {
    let r = lab
        .request(Method::POST, &format!("/api/scenario?name={name}"))
        .header("content-type", "text/plain")
        .body(text.to_owned());
    answer(r.send().await.unwrap()).await
}

async fn state_of(lab: &Lab) -> String {
    lab.get("/api/scenario").await.1["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_recording_is_a_scenario_that_replays_what_was_done() {
    let lab = Lab::start().await;
    let n1 = lab.add_node(100.0, 100.0).await;
    let (status, _) = lab.call(Method::POST, "/api/recording", None).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_error(
        &lab.call(Method::POST, "/api/recording", None).await,
        StatusCode::CONFLICT,
        None,
    );
    let n2 = lab.add_node(200.0, 100.0).await;
    lab.call(
        Method::PATCH,
        &format!("/api/nodes/{}", n2.0),
        Some(json!({"x": 210, "y": 110})),
    )
    .await;
    lab.call(
        Method::PUT,
        "/api/links/1/2",
        Some(json!({"latency_ms": 40})),
    )
    .await;
    lab.call(
        Method::POST,
        "/api/cuts",
        Some(json!({"partition": ["n1"]})),
    )
    .await;
    lab.call(Method::PUT, "/api/settings", Some(json!({"neighbours": 3})))
        .await;
    lab.call(
        Method::PUT,
        "/api/client",
        Some(json!({"bandwidth_down_bps": 64000})),
    )
    .await;
    // A whole new mesh cannot be a step: refused while recording.
    assert_error(
        &lab.call(Method::PUT, "/api/topology", Some(json!({"nodes": []})))
            .await,
        StatusCode::CONFLICT,
        None,
    );
    let recorded = lab
        .request(Method::DELETE, "/api/recording")
        .send()
        .await
        .unwrap();
    assert_eq!(recorded.status(), StatusCode::OK);
    let text = recorded.text().await.unwrap();
    let scenario = meshsim::scenario::parse(Path::new("recorded.toml"), &text)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    // It starts from the mesh as it was (n1 alone), then every change in order.
    assert_eq!(scenario.file.topology.nodes.len(), 1);
    assert_eq!(scenario.file.topology.nodes[0].id, Some(n1));
    let kinds: Vec<&str> = scenario.steps.iter().map(|s| s.action.kind()).collect();
    assert_eq!(
        kinds,
        ["add", "move", "pin", "partition", "settings", "client"]
    );
    assert!(text.contains("settings = { neighbours = 3 }"), "{text}");
    assert_error(&lab.get("/api/recording").await, StatusCode::CONFLICT, None);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_posted_scenario_runs_pauses_resumes_and_leaves_its_results() {
    let results = TempDir::new("serving-scenario");
    let lab = Lab::start_with(ServerOptions {
        results_dir: results.path().to_owned(),
        ..ServerOptions::default()
    })
    .await;
    let mut ws = connect(&lab, "").await;
    let first = next_of(&mut ws, "scenario").await;
    assert_eq!(first["state"], "idle");

    // A bad file is refused with its line, and nothing starts.
    let (status, bad) = post_scenario(
        &lab,
        "bad.toml",
        "[[step]]\nmove = { node = \"n9\", x = 1, y = 1 }\n",
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        bad["error"].as_str().unwrap().starts_with("bad.toml:2:"),
        "{bad}"
    );
    assert_eq!(bad["field"], "step[0].move.node");

    let text = "[[nodes]]\nname = \"n1\"\nx = 100\ny = 100\n\n[[nodes]]\nname = \"n2\"\nx = 200\ny = 100\n\n\
                [[step]]\nat = \"300ms\"\npartition = [\"n1\"]\n\n[[step]]\nwait = { for = \"2s\" }\n\n\
                [[step]]\nheal = \"all\"\n\n[[step]]\nmark = \"end\"\n";
    let (status, started) = post_scenario(&lab, "two.toml", text).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["state"], "running");
    assert_eq!(started["steps"].as_array().unwrap().len(), 4);
    assert_eq!(started["steps"][0]["due_ms"], 300.0);
    // Its mesh replaced the empty one.
    assert_eq!(
        lab.get("/api/state").await.1["nodes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_error(
        &post_scenario(&lab, "two.toml", text).await,
        StatusCode::CONFLICT,
        None,
    );

    // The partition shows in the state; then pause during the wait.
    eventually("the partition", Duration::from_secs(10), async || {
        let (_, cuts) = lab.get("/api/cuts").await;
        (cuts["partitions"] == json!([["n1"]])).then_some(())
    })
    .await;
    let (status, paused) = lab.call(Method::POST, "/api/scenario/pause", None).await;
    assert_eq!(status, StatusCode::OK, "{paused}");
    assert_eq!(paused["state"], "paused");
    assert!(paused["held_at_ms"].as_f64().unwrap() > 300.0);
    let on_ws = next_of(&mut ws, "scenario").await;
    assert!(["paused", "running"].contains(&on_ws["state"].as_str().unwrap()));
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Held: the heal after the 2 s wait has not run.
    assert_eq!(state_of(&lab).await, "paused");
    assert_eq!(lab.get("/api/cuts").await.1["partitions"], json!([["n1"]]));
    let (status, _) = lab.call(Method::POST, "/api/scenario/resume", None).await;
    assert_eq!(status, StatusCode::OK);
    let done = eventually("the scenario's end", Duration::from_secs(20), async || {
        let (_, s) = lab.get("/api/scenario").await;
        (s["state"] == "done").then_some(s)
    })
    .await;
    assert!(done["paused_ms"].as_f64().unwrap() >= 2500.0, "{done}");
    assert_eq!(lab.get("/api/cuts").await.1["partitions"], json!([]));
    let out = Path::new(done["out"].as_str().unwrap());
    assert!(
        out.starts_with(results.path()) && out.join("report.md").exists(),
        "{done}"
    );
    assert!(out.join("events.jsonl").exists());

    // Stop: a long scenario ends as interrupted, with its results.
    let (status, _) =
        post_scenario(&lab, "long.toml", "[[step]]\nwait = { for = \"10m\" }\n").await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _) = lab.call(Method::DELETE, "/api/scenario", None).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let stopped = eventually("the stop", Duration::from_secs(10), async || {
        let (_, s) = lab.get("/api/scenario").await;
        (s["state"] == "failed").then_some(s)
    })
    .await;
    assert!(
        stopped["failure"].as_str().unwrap().contains("interrupted"),
        "{stopped}"
    );
    assert_error(
        &lab.call(Method::DELETE, "/api/scenario", None).await,
        StatusCode::CONFLICT,
        None,
    );
    lab.stop().await;
}
