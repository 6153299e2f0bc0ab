//! The HTTP API against a real mesh: every route, every kind of bad input with the JSON error
//! shape, the canvas's static files, and the guards (Host, Origin, token).
//!
//! Needs root (see tests/serving): `cargo xtask test` runs these.

use std::time::Duration;

use meshsim::{model::NodeId, server::ServerOptions, workload::WorkloadKind};
use meshsim_tests::{
    eventually,
    serving::{Lab, answer, assert_error},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// With the default settings (reach 300 px), these two are linked and the third is alone.
const NEAR: [(f64, f64); 2] = [(100.0, 100.0), (200.0, 100.0)];
const FAR: (f64, f64) = (5000.0, 5000.0);

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn nodes_are_created_read_moved_and_deleted() {
    let lab = Lab::start().await;
    let (status, state) = lab.get("/api/state").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["nodes"], json!([]));
    assert_eq!(state["links"], json!([]));
    assert_eq!(state["delays_enforced"], false);
    assert_eq!(state["settings"]["neighbours"], 5);

    let response = lab
        .request(Method::POST, "/api/nodes")
        .json(&json!({"x": NEAR[0].0, "y": NEAR[0].1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["location"], "/api/nodes/1");
    let (status, n1) = answer(response).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(n1["id"], 1);
    assert_eq!(n1["name"], "n1");
    assert_eq!(
        (n1["x"].as_f64(), n1["y"].as_f64()),
        (Some(100.0), Some(100.0))
    );
    assert_eq!(n1["ip"], lab.ip(NodeId(1)));
    let mac = n1["mac"].as_str().unwrap();
    assert_eq!(mac.len(), 17, "{mac}");
    let n2 = lab.add_node(NEAR[1].0, NEAR[1].1).await;
    let n3 = lab.add_node(FAR.0, FAR.1).await;

    let (_, state) = lab.get("/api/state").await;
    assert_eq!(ids(&state["nodes"]), [1, 2, 3]);
    assert!(
        state["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["ip"].is_string() && n["mac"].is_string())
    );
    assert_eq!(
        state["links"],
        json!([{
            "a": 1, "b": 2, "latency_ms": 100.0, "jitter_ms": 0.0,
            "bandwidth_bps": 512000, "loss_pct": 0.0, "pinned": [], "cut": false
        }])
    );

    let (status, detail) = lab.get("/api/nodes/1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(detail["node"]["name"], "n1");
    assert_eq!(detail["neighbours"], json!([n2.0]));
    assert_eq!(detail["routes"], json!([{"dst": n2.0, "next_hop": n2.0}]));
    let (_, alone) = lab.get(&format!("/api/nodes/{}", n3.0)).await;
    assert_eq!(alone["neighbours"], json!([]));
    assert_eq!(alone["routes"], json!([]));

    // Moving n3 next to n2 links it, and n1 reaches it through n2 or directly.
    let (status, moved) = lab
        .call(
            Method::PATCH,
            &format!("/api/nodes/{}", n3.0),
            Some(json!({"x": 300.0, "y": 100.0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{moved}");
    assert_eq!(moved["x"], 300.0);
    let (_, detail) = lab.get("/api/nodes/1").await;
    let dsts: Vec<u64> = detail["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["dst"].as_u64().unwrap())
        .collect();
    assert_eq!(dsts, [2, 3]);
    let (_, detail) = lab.get(&format!("/api/nodes/{}", n3.0)).await;
    assert!(
        detail["neighbours"]
            .as_array()
            .unwrap()
            .contains(&json!(n2.0))
    );

    let (status, body) = lab.call(Method::DELETE, "/api/nodes/2", None).await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    let (_, state) = lab.get("/api/state").await;
    assert_eq!(ids(&state["nodes"]), [1, 3]);
    assert_error(
        &lab.get("/api/nodes/2").await,
        StatusCode::NOT_FOUND,
        Some("id"),
    );
    assert_error(
        &lab.call(Method::DELETE, "/api/nodes/2", None).await,
        StatusCode::NOT_FOUND,
        Some("id"),
    );
    assert_error(
        &lab.call(Method::PATCH, "/api/nodes/2", Some(json!({"x": 1, "y": 1})))
            .await,
        StatusCode::NOT_FOUND,
        Some("id"),
    );
    // Ids are never reused.
    assert_eq!(lab.add_node(10.0, 10.0).await, NodeId(4));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_node_added_with_workload_none_runs_no_process() {
    let lab = Lab::start_running(
        WorkloadKind::Command("sleep 1000".into()),
        ServerOptions::default(),
    )
    .await;
    let (_, state) = lab.get("/api/state").await;
    assert_eq!(
        state["run"],
        json!({"backend": "netns", "workload": "command"})
    );

    // The run's workload by default, by its name, or nothing.
    let runs = lab.add_node(NEAR[0].0, NEAR[0].1).await;
    let (status, bare) = lab
        .call(
            Method::POST,
            "/api/nodes",
            Some(json!({"x": NEAR[1].0, "y": NEAR[1].1, "workload": "none"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bare}");
    assert_eq!(bare["workload"], "none");
    let bare = NodeId(bare["id"].as_u64().unwrap() as u32);
    let (status, named) = lab
        .call(
            Method::POST,
            "/api/nodes",
            Some(json!({"x": 300.0, "y": 100.0, "workload": "command"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{named}");
    let named = NodeId(named["id"].as_u64().unwrap() as u32);
    let refused = lab
        .call(
            Method::POST,
            "/api/nodes",
            Some(json!({"x": 1.0, "y": 1.0, "workload": "synapse"})),
        )
        .await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, Some("workload"));

    let (_, state) = lab.get("/api/state").await;
    let workloads: Vec<(u64, &str)> = state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_u64().unwrap(), n["workload"].as_str().unwrap()))
        .collect();
    assert_eq!(
        workloads,
        [
            (u64::from(runs.0), "command"),
            (u64::from(bare.0), "none"),
            (u64::from(named.0), "command")
        ]
    );
    let (_, detail) = lab.get(&format!("/api/nodes/{}", bare.0)).await;
    assert_eq!(detail["node"]["workload"], "none");

    // The processes, as the kernel sees them: `sleep 1000` in each workload node's
    // namespace, nothing at all in the bare one.
    for id in [runs, named] {
        eventually(
            &format!("sleep 1000 in {id}"),
            Duration::from_secs(5),
            async || {
                lab.processes_in(id)
                    .iter()
                    .any(|cmd| cmd.trim_end() == "sleep 1000")
                    .then_some(())
            },
        )
        .await;
    }
    assert_eq!(lab.processes_in(bare), Vec::<String>::new());
    // Every workload node's state, as the WebSocket gives it; a command is ready once it
    // runs, and only homeservers are restarted.
    let (status, listed) = lab.get("/api/workloads").await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let states: Vec<(&str, &str, u64)> = listed["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["name"].as_str().unwrap(),
                n["state"].as_str().unwrap(),
                n["crashes"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            (runs.name().as_str(), "ready", 0),
            (named.name().as_str(), "ready", 0)
        ]
    );
    let path = format!("/api/nodes/{}/restart", runs.0);
    assert_error(&lab.get(&path).await, StatusCode::CONFLICT, None);
    assert_error(
        &lab.get("/api/nodes/n99/restart").await,
        StatusCode::NOT_FOUND,
        Some("id"),
    );
    let refused = lab
        .call(
            Method::POST,
            "/api/nodes",
            Some(json!({"x": 2.0, "y": 2.0, "restart": "never"})),
        )
        .await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, Some("restart"));
    let refused = lab
        .call(Method::PUT, &path, Some(json!({"restart": "always"})))
        .await;
    assert_error(&refused, StatusCode::UNPROCESSABLE_ENTITY, Some("restart"));
    // The bare node still forwards and answers.
    let out = lab.ping(runs, bare, 2);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn bad_node_input_is_refused_with_its_field() {
    let lab = Lab::start().await;
    let post = |body: &'static str| lab.call_raw(Method::POST, "/api/nodes", body);
    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    // A bad number, a NaN as browsers send it (null), out of range, missing, unknown.
    assert_error(
        &post(r#"{"x":"ten","y":1}"#).await,
        unprocessable,
        Some("x"),
    );
    assert_error(&post(r#"{"x":1,"y":null}"#).await, unprocessable, Some("y"));
    assert_error(&post(r#"{"x":1e9,"y":1}"#).await, unprocessable, Some("x"));
    assert_error(
        &post(r#"{"x":1e999,"y":1}"#).await,
        unprocessable,
        Some("x"),
    );
    assert_error(&post(r#"{"x":1,"y":-1e6}"#).await, unprocessable, Some("y"));
    assert_error(&post(r#"{"x":1}"#).await, unprocessable, Some("y"));
    assert_error(
        &post(r#"{"x":1,"y":1,"z":1}"#).await,
        unprocessable,
        Some("z"),
    );
    // A workload this run does not have (it has none), or not a name at all.
    let refused = post(r#"{"x":1,"y":1,"workload":"synapse"}"#).await;
    assert_error(&refused, unprocessable, Some("workload"));
    let message = refused.1["error"].as_str().unwrap();
    assert!(message.contains("this run's workload is none"), "{message}");
    assert_error(
        &post(r#"{"x":1,"y":1,"workload":3}"#).await,
        unprocessable,
        Some("workload"),
    );
    // Not JSON at all: a NaN literal, a cut-off body, trailing garbage.
    assert_error(
        &post(r#"{"x":NaN,"y":1}"#).await,
        StatusCode::BAD_REQUEST,
        None,
    );
    assert_error(&post(r#"{"x":1,"#).await, StatusCode::BAD_REQUEST, None);
    assert_error(
        &post(r#"{"x":1,"y":1}x"#).await,
        StatusCode::BAD_REQUEST,
        None,
    );
    // Not declared as JSON.
    let (status, body) = answer(
        lab.request(Method::POST, "/api/nodes")
            .body(r#"{"x":1,"y":1}"#)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&(status, body), StatusCode::UNSUPPORTED_MEDIA_TYPE, None);
    // Too large: refused before it is read.
    let huge = format!(r#"{{"x":1,"y":1,"pad":"{}"}}"#, "x".repeat(2 << 20));
    let (status, body) = answer(
        // Not kept alive: the server answers before reading the whole body and closes the
        // connection, and the next request must not be sent on it.
        lab.request(Method::POST, "/api/nodes")
            .header("content-type", "application/json")
            .header("connection", "close")
            .body(huge)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&(status, body), StatusCode::PAYLOAD_TOO_LARGE, None);
    // Paths that name no node.
    assert_error(
        &lab.get("/api/nodes/99").await,
        StatusCode::NOT_FOUND,
        Some("id"),
    );
    assert_error(
        &lab.get("/api/nodes/n1").await,
        StatusCode::NOT_FOUND,
        Some("id"),
    );
    assert_error(
        &lab.get("/api/nodes/0").await,
        StatusCode::NOT_FOUND,
        Some("id"),
    );
    // Nothing was created by any of that.
    let (_, state) = lab.get("/api/state").await;
    assert_eq!(state["nodes"], json!([]));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn links_are_pinned_both_ways_and_unpinned() {
    let lab = Lab::start().await;
    let n1 = lab.add_node(NEAR[0].0, NEAR[0].1).await;
    let n2 = lab.add_node(NEAR[1].0, NEAR[1].1).await;
    let n3 = lab.add_node(FAR.0, FAR.1).await;
    let link = format!("/api/links/{}/{}", n1.0, n2.0);
    let (status, read) = lab.get(&link).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["latency_ms"], 100.0);

    // The names the canvas, /metrics and the CLI show work wherever an id does.
    let (status, by_name) = lab.get("/api/links/n1/n2").await;
    assert_eq!((status, &by_name), (StatusCode::OK, &read));
    let (status, node) = lab.get("/api/nodes/n3").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["node"]["name"], "n3");
    // An unknown one says what was looked up and what exists.
    let missing = lab.get("/api/links/n1/n7").await;
    assert_error(&missing, StatusCode::NOT_FOUND, Some("b"));
    assert_eq!(
        missing.1["error"], "no node \"n7\" (nodes: n1, n2, n3)",
        "{}",
        missing.1
    );

    // Pinned through either order of the pair.
    let (status, pinned) = lab
        .call(
            Method::PUT,
            &format!("/api/links/{}/{}", n2.name(), n1.0),
            Some(json!({"latency_ms": 25, "loss_pct": 1.5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{pinned}");
    assert_eq!(
        pinned,
        json!({
            "a": 1, "b": 2, "latency_ms": 25.0, "jitter_ms": 0.0,
            "bandwidth_bps": 512000, "loss_pct": 1.5, "pinned": ["latency_ms", "loss_pct"], "cut": false
        })
    );
    let (status, pinned) = lab
        .call(
            Method::PUT,
            &link,
            Some(json!({"bandwidth_bps": 1000000, "jitter_ms": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        pinned["pinned"],
        json!(["latency_ms", "jitter_ms", "bandwidth_bps", "loss_pct"])
    );
    let (_, state) = lab.get("/api/state").await;
    assert_eq!(state["links"][0], pinned);

    let (status, _) = lab
        .call(Method::DELETE, &format!("{link}?field=latency_ms"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, read) = lab.get(&link).await;
    assert_eq!(read["latency_ms"], 100.0);
    assert_eq!(
        read["pinned"],
        json!(["jitter_ms", "bandwidth_bps", "loss_pct"])
    );
    let (status, _) = lab.call(Method::DELETE, &link, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, read) = lab.get(&link).await;
    assert_eq!(read["pinned"], json!([]));
    assert_eq!(read["loss_pct"], 0.0);

    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let l = &lab;
    let put = |path: String, body: &'static str| async move {
        l.call_raw(Method::PUT, &path, body).await
    };
    assert_error(
        &put(link.clone(), r#"{"latency_ms":-1}"#).await,
        unprocessable,
        Some("latency_ms"),
    );
    assert_error(
        &put(link.clone(), r#"{"loss_pct":101}"#).await,
        unprocessable,
        Some("loss_pct"),
    );
    assert_error(
        &put(link.clone(), r#"{"loss_pct":null}"#).await,
        unprocessable,
        Some("loss_pct"),
    );
    assert_error(
        &put(link.clone(), r#"{"jitter_ms":"2"}"#).await,
        unprocessable,
        Some("jitter_ms"),
    );
    assert_error(
        &put(link.clone(), r#"{"bandwidth_bps":-5}"#).await,
        unprocessable,
        Some("bandwidth_bps"),
    );
    assert_error(
        &put(link.clone(), r#"{"latency":5}"#).await,
        unprocessable,
        Some("latency"),
    );
    assert_error(&put(link.clone(), r#"{}"#).await, unprocessable, None);
    assert_error(
        &put(link.clone(), r#"{"latency_ms":"#).await,
        StatusCode::BAD_REQUEST,
        None,
    );
    // A pair that is not linked, a node with itself, a node that does not exist.
    let far = format!("/api/links/{}/{}", n1.0, n3.0);
    assert_error(
        &put(far.clone(), r#"{"latency_ms":5}"#).await,
        unprocessable,
        Some("b"),
    );
    assert_error(&lab.get(&far).await, StatusCode::NOT_FOUND, None);
    assert_error(
        &put("/api/links/1/1".into(), r#"{"latency_ms":5}"#).await,
        unprocessable,
        Some("b"),
    );
    assert_error(
        &put("/api/links/1/99".into(), r#"{"latency_ms":5}"#).await,
        StatusCode::NOT_FOUND,
        Some("b"),
    );
    assert_error(
        &put("/api/links/99/1".into(), r#"{"latency_ms":5}"#).await,
        StatusCode::NOT_FOUND,
        Some("a"),
    );
    assert_error(
        &lab.call(Method::DELETE, "/api/links/1/99", None).await,
        StatusCode::NOT_FOUND,
        Some("b"),
    );
    assert_error(
        &lab.call(Method::DELETE, &format!("{link}?field=latency"), None)
            .await,
        unprocessable,
        Some("field"),
    );
    // Nothing of that changed the link.
    let (_, read) = lab.get(&link).await;
    assert_eq!(read["pinned"], json!([]));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn settings_are_read_replaced_and_checked() {
    let lab = Lab::start().await;
    lab.add_node(NEAR[0].0, NEAR[0].1).await;
    lab.add_node(NEAR[1].0, NEAR[1].1).await;
    let (status, settings) = lab.get("/api/settings").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        settings,
        json!({
            "neighbours": 5, "max_latency_ms": 300.0, "latency_scale_pct": 100.0,
            "bandwidth_bps": 512000, "bandwidth_mode": "fixed", "jitter_ms": 0.0,
            "loss_pct": 0.0, "cost": "latency"
        })
    );
    // Links follow: a shorter reach unlinks the pair.
    let (status, now) = lab
        .call(
            Method::PUT,
            "/api/settings",
            Some(json!({"max_latency_ms": 50, "cost": "bandwidth"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{now}");
    assert_eq!(now["max_latency_ms"], 50.0);
    assert_eq!(now["cost"], "bandwidth");
    assert_eq!(now["neighbours"], 5, "left-out fields take their defaults");
    let (_, state) = lab.get("/api/state").await;
    assert_eq!(state["links"], json!([]));
    assert_eq!(state["settings"], now);

    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let put = |body: &'static str| lab.call_raw(Method::PUT, "/api/settings", body);
    assert_error(
        &put(r#"{"neighbours":0}"#).await,
        unprocessable,
        Some("neighbours"),
    );
    assert_error(
        &put(r#"{"neighbours":-1}"#).await,
        unprocessable,
        Some("neighbours"),
    );
    assert_error(
        &put(r#"{"loss_pct":100.5}"#).await,
        unprocessable,
        Some("loss_pct"),
    );
    assert_error(
        &put(r#"{"max_latency_ms":-3}"#).await,
        unprocessable,
        Some("max_latency_ms"),
    );
    assert_error(
        &put(r#"{"jitter_ms":null}"#).await,
        unprocessable,
        Some("jitter_ms"),
    );
    assert_error(
        &put(r#"{"cost":"hops"}"#).await,
        unprocessable,
        Some("cost"),
    );
    assert_error(
        &put(r#"{"neighbors":3}"#).await,
        unprocessable,
        Some("neighbors"),
    );
    assert_error(&put("[").await, StatusCode::BAD_REQUEST, None);
    let (_, after) = lab.get("/api/settings").await;
    assert_eq!(after, now);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn topology_documents_save_and_load() {
    let lab = Lab::start().await;
    let document = json!({
        "settings": {"neighbours": 2},
        "nodes": [
            {"id": 1, "name": "n1", "x": 100.0, "y": 100.0},
            {"id": 2, "name": "n2", "x": 200.0, "y": 100.0},
            {"id": 5, "name": "n5", "x": 200.0, "y": 200.0}
        ],
        "pins": [{"a": "n1", "b": "n2", "latency_ms": 7.0}]
    });
    let (status, state) = lab
        .call(Method::PUT, "/api/topology", Some(document.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(ids(&state["nodes"]), [1, 2, 5]);
    assert_eq!(state["settings"]["neighbours"], 2);
    let pinned = state["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["a"] == 1 && l["b"] == 2)
        .unwrap();
    assert_eq!(pinned["latency_ms"], 7.0);
    assert_eq!(pinned["pinned"], json!(["latency_ms"]));

    let (status, saved) = lab.get("/api/topology").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(saved["nodes"], document["nodes"]);
    assert_eq!(saved["pins"], document["pins"]);
    assert_eq!(saved["settings"]["neighbours"], 2);
    // What was saved loads back to the same mesh; new nodes get ids above the document's.
    let (status, again) = lab.call(Method::PUT, "/api/topology", Some(saved)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, state);
    assert_eq!(lab.add_node(0.0, 0.0).await, NodeId(6));

    let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
    let put = |body: Value| lab.call(Method::PUT, "/api/topology", Some(body));
    let mut bad = document.clone();
    bad["nodes"][1]["x"] = json!(1e9);
    assert_error(&put(bad).await, unprocessable, Some("nodes[1].x"));
    let mut bad = document.clone();
    bad["pins"][0]["b"] = json!("n9");
    assert_error(&put(bad).await, unprocessable, Some("pins[0].b"));
    let mut bad = document.clone();
    bad["nodes"][0]["y"] = json!(null);
    assert_error(&put(bad).await, unprocessable, Some("nodes[0].y"));
    assert_error(
        &put(json!({"nodez": []})).await,
        unprocessable,
        Some("nodez"),
    );
    let (_, state) = lab.get("/api/state").await;
    assert_eq!(
        ids(&state["nodes"]),
        [1, 2, 5, 6],
        "a refused document changes nothing"
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn unknown_routes_and_methods_answer_json_and_the_canvas_is_served() {
    let lab = Lab::start().await;
    assert_error(&lab.get("/api/nope").await, StatusCode::NOT_FOUND, None);
    assert_error(
        &lab.get("/api/nodes/1/extra").await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_error(
        &lab.get("/no-such-file.js").await,
        StatusCode::NOT_FOUND,
        None,
    );
    assert_error(
        &lab.call(Method::DELETE, "/api/state", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        None,
    );
    assert_error(
        &lab.call(Method::POST, "/index.html", None).await,
        StatusCode::METHOD_NOT_ALLOWED,
        None,
    );
    // /ws without an upgrade is a plain bad request.
    assert_error(&lab.get("/ws").await, StatusCode::BAD_REQUEST, None);

    let page = lab.http.get(lab.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let etag = page.headers()["etag"].clone();
    let same = lab
        .http
        .get(lab.url("/index.html"))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::NOT_MODIFIED);
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn foreign_host_and_origin_are_refused() {
    let lab = Lab::start().await;
    let port = lab.addr.port();
    let with = |header: &'static str, value: String| {
        lab.http
            .get(lab.url("/api/state"))
            .header(header, value)
            .send()
    };
    for host in [format!("localhost:{port}"), format!("127.0.0.1:{port}")] {
        assert_eq!(with("host", host).await.unwrap().status(), StatusCode::OK);
    }
    for host in [
        format!("evil.example:{port}"),
        format!("localhost:{}", port.wrapping_add(1)),
        "localhost".to_owned(),
    ] {
        let got = answer(with("host", host.clone()).await.unwrap()).await;
        assert_error(&got, StatusCode::FORBIDDEN, None);
    }
    assert_eq!(
        with("origin", format!("http://localhost:{port}"))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    for origin in [
        format!("http://evil.example:{port}"),
        "null".to_owned(),
        format!("https://127.0.0.1:{port}"),
    ] {
        let got = answer(with("origin", origin).await.unwrap()).await;
        assert_error(&got, StatusCode::FORBIDDEN, None);
    }
    // A rebinding page cannot change the mesh either, nor load the canvas.
    let post = lab
        .http
        .post(lab.url("/api/nodes"))
        .header("origin", format!("http://evil.example:{port}"))
        .json(&json!({"x": 1, "y": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::FORBIDDEN);
    let page = lab
        .http
        .get(lab.url("/"))
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::FORBIDDEN);
    let (_, state) = lab.get("/api/state").await;
    assert_eq!(state["nodes"], json!([]));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn the_token_is_required_when_set() {
    let lab = Lab::start_with(ServerOptions {
        token: Some("correct horse".into()),
        ..ServerOptions::default()
    })
    .await;
    for path in ["/api/state", "/api/settings", "/metrics", "/api/nope"] {
        let none = answer(lab.http.get(lab.url(path)).send().await.unwrap()).await;
        assert_error(&none, StatusCode::UNAUTHORIZED, None);
        let wrong = lab
            .http
            .get(lab.url(path))
            .bearer_auth("correct horsf")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(wrong.headers()["www-authenticate"], "Bearer");
    }
    let post = lab
        .http
        .post(lab.url("/api/nodes"))
        .json(&json!({"x": 1, "y": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), StatusCode::UNAUTHORIZED);
    // The query form is for the WebSocket only.
    let query = lab
        .http
        .get(lab.url("/api/state?token=correct%20horse"))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), StatusCode::UNAUTHORIZED);
    // With it (the lab sends it), everything works; the canvas needs none.
    let (status, state) = lab.get("/api/state").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["nodes"], json!([]));
    let metrics = lab.request(Method::GET, "/metrics").send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::OK);
    let page = lab.http.get(lab.url("/")).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    lab.stop().await;
}

/// Issue 16's reproductions against the real runtime: a request the host cannot take is
/// refused whole, names its field, uses up no id, and leaves the mesh (and the host) as it
/// was; limits answer with 4xx.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_change_the_host_cannot_take_leaves_the_mesh_as_it_was() {
    let lab = Lab::start().await;
    let n1 = lab.add_node(0.0, 0.0).await;
    let n2 = lab.add_node(100.0, 0.0).await;
    let (_, before) = lab.get("/api/state").await;

    // An id whose address does not fit the /16: 422 naming it, nothing changed.
    let bad = json!({"nodes": [
        {"id": 1, "x": 0, "y": 0}, {"id": 2, "x": 100, "y": 0}, {"id": 65534, "x": 0, "y": 0}
    ]});
    let refused = lab.call(Method::PUT, "/api/topology", Some(bad)).await;
    assert_error(
        &refused,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("nodes[2].id"),
    );
    assert!(
        refused.1["error"].as_str().unwrap().contains("subnet"),
        "{}",
        refused.1
    );
    let (_, after) = lab.get("/api/state").await;
    assert_eq!(after["nodes"], before["nodes"], "no phantom node");
    // (processes_in reads n2's namespace, which must still be there.)
    assert!(lab.processes_in(n2).is_empty());
    // The mesh still works, and the refused request used up no id.
    let moved = lab
        .call(
            Method::PATCH,
            &format!("/api/nodes/{}", n1.name()),
            Some(json!({"x": 10, "y": 0})),
        )
        .await;
    assert_eq!(moved.0, StatusCode::OK, "{}", moved.1);
    assert_eq!(
        lab.call(Method::DELETE, &format!("/api/nodes/{}", n2.0), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(lab.add_node(200.0, 0.0).await, NodeId(3));

    // Ids exhausted: the last address of the subnet is taken, the next node is a 409.
    let last = json!({"nodes": [{"id": 65533, "x": 0, "y": 0}]});
    let (status, body) = lab.call(Method::PUT, "/api/topology", Some(last)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let full = lab
        .call(Method::POST, "/api/nodes", Some(json!({"x": 1, "y": 1})))
        .await;
    assert_error(&full, StatusCode::CONFLICT, None);
    assert_eq!(
        lab.get("/api/state").await.1["nodes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Settings of an empty mesh are reported back.
    let (status, _) = lab
        .call(Method::PUT, "/api/topology", Some(json!({"nodes": []})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, settings) = lab
        .call(
            Method::PUT,
            "/api/settings",
            Some(json!({"jitter_ms": 3, "neighbours": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{settings}");
    assert_eq!(
        (
            settings["jitter_ms"].as_f64(),
            settings["neighbours"].as_u64()
        ),
        (Some(3.0), Some(2))
    );
    let (_, read) = lab.get("/api/settings").await;
    assert_eq!(read, settings);

    // Shapes and bounds.
    let array = lab.call_raw(Method::POST, "/api/nodes", "[1, 2]").await;
    assert_error(&array, StatusCode::UNPROCESSABLE_ENTITY, None);
    let null = lab
        .call(
            Method::POST,
            "/api/nodes",
            Some(json!({"x": 1, "y": 1, "workload": null})),
        )
        .await;
    assert_error(&null, StatusCode::UNPROCESSABLE_ENTITY, Some("workload"));
    let huge = lab
        .call(
            Method::PUT,
            "/api/settings",
            Some(json!({"bandwidth_bps": 18446744073709551615u64})),
        )
        .await;
    assert_error(
        &huge,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("bandwidth_bps"),
    );
    let scale = lab
        .call_raw(
            Method::PUT,
            "/api/settings",
            r#"{"latency_scale_pct": 1e308}"#,
        )
        .await;
    assert_error(
        &scale,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("latency_scale_pct"),
    );
    let api = lab.get("/api").await;
    assert_error(&api, StatusCode::NOT_FOUND, None);
    assert!(
        api.1["error"].as_str().unwrap().contains("/api/state"),
        "{}",
        api.1
    );
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn client_links_are_read_set_and_put_back_per_node_and_by_default() {
    let lab = Lab::start().await;
    let n1 = lab.add_node(100.0, 100.0).await;
    let n2 = lab.add_node(200.0, 100.0).await;
    let (status, state) = lab.get("/api/state").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(state["host"]["name"], "host");
    assert_eq!(state["host"]["ip"], "10.77.0.1");

    // Unshaped by default, and every node follows the default.
    let (status, c) = lab.get("/api/nodes/n1/client").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (c["own"].clone(), c["latency_ms"].clone()),
        (json!(false), json!(0.0))
    );

    let slow = json!({"latency_ms": 300, "bandwidth_up_bps": 32000, "bandwidth_down_bps": 64000});
    let (status, c) = lab
        .call(Method::PUT, "/api/nodes/n1/client", Some(slow))
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["own"], true);
    assert_eq!(c["bandwidth_down_bps"], 64000);
    let (status, d) = lab
        .call(Method::PUT, "/api/client", Some(json!({"latency_ms": 50})))
        .await;
    assert_eq!(
        (status, d["latency_ms"].clone()),
        (StatusCode::OK, json!(50.0))
    );
    // By number as well as by name.
    let by_number = format!("/api/nodes/{}/client", n2.0);
    assert_eq!(lab.get(&by_number).await.1["latency_ms"], 50.0);
    assert_eq!(lab.get("/api/nodes/n1/client").await.1["latency_ms"], 300.0);
    // The state and the saved document carry them.
    let state = lab.get("/api/state").await.1;
    assert_eq!(state["clients"]["default"]["latency_ms"], 50.0);
    assert_eq!(
        state["clients"]["nodes"][n1.0.to_string()]["latency_ms"],
        300.0
    );
    let doc = lab.get("/api/topology").await.1;
    assert_eq!(doc["client"]["latency_ms"], 50.0);
    assert_eq!(doc["clients"][0]["node"], "n1");

    // Bad values name their field and change nothing.
    assert_error(
        &lab.call(
            Method::PUT,
            "/api/nodes/n1/client",
            Some(json!({"loss_pct": 101})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("loss_pct"),
    );
    assert_error(
        &lab.call(Method::PUT, "/api/client", Some(json!({"latency": 1})))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("latency"),
    );
    assert_error(
        &lab.call(Method::PUT, "/api/nodes/n9/client", Some(json!({})))
            .await,
        StatusCode::NOT_FOUND,
        Some("id"),
    );
    assert_eq!(lab.get("/api/nodes/n1/client").await.1["latency_ms"], 300.0);

    // DELETE puts a node back on the default; a loaded document sets them all.
    let (status, _) = lab.call(Method::DELETE, "/api/nodes/n1/client", None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(lab.get("/api/nodes/n1/client").await.1["own"], false);
    let mut doc = lab.get("/api/topology").await.1;
    doc["clients"] = json!([{"node": "n2", "loss_pct": 2}]);
    doc["client"] = json!({});
    let (status, _) = lab.call(Method::PUT, "/api/topology", Some(doc)).await;
    assert_eq!(status, StatusCode::OK);
    let c2 = lab.get("/api/nodes/n2/client").await.1;
    assert_eq!(
        (c2["own"].clone(), c2["loss_pct"].clone()),
        (json!(true), json!(2.0))
    );
    assert_eq!(lab.get("/api/client").await.1["latency_ms"], 0.0);
    lab.stop().await;
}
