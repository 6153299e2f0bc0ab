//! The server at its limits and under load (docs/api.md, "Limits"): a thousand WebSocket
//! clients and one more, a flood of requests, and a hundred clients changing a 200-node mesh
//! at once, after which the mesh must be exactly what the accepted changes make it.

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    sync::Arc,
    time::{Duration, Instant},
};

use futures_util::future::join_all;
use meshsim::{
    model::{Model, NodeId, Topology},
    net::Netlink,
    server::{MAX_WS_CLIENTS, metrics_to_classic},
};
use meshsim_tests::{
    eventually,
    serving::Lab,
    ws::{Ws, next_of},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio_tungstenite::{connect_async, tungstenite};

/// A thousand clients need two thousand descriptors here (both ends live in this process).
fn raise_open_files_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
}

async fn gauge(lab: &Lab, name: &str) -> Option<f64> {
    let text = lab
        .request(Method::GET, "/metrics")
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    metrics_to_classic(&text).lines().find_map(|line| {
        let (series, value) = line.split_once(' ')?;
        (series == name).then(|| value.parse().ok())?
    })
}

async fn connect(lab: &Lab) -> Result<Ws, tungstenite::Error> {
    connect_async(format!("ws://{}/ws", lab.addr))
        .await
        .map(|(ws, _)| ws)
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_thousand_websocket_clients_are_served_and_one_more_is_refused_in_words() {
    raise_open_files_limit();
    let lab = Lab::start().await;
    lab.add_node(0.0, 0.0).await;

    let mut clients = Vec::with_capacity(MAX_WS_CLIENTS);
    for batch in 0..MAX_WS_CLIENTS / 100 {
        let connected = join_all((0..100).map(|_| async {
            let mut ws = connect(&lab).await.expect("a client within the limit");
            next_of(&mut ws, "state").await;
            ws
        }))
        .await;
        clients.extend(connected);
        assert_eq!(clients.len(), (batch + 1) * 100);
    }
    assert_eq!(
        gauge(&lab, "meshsim_websocket_clients").await,
        Some(MAX_WS_CLIENTS as f64)
    );

    // One more: refused before the upgrade, with the JSON error of every refusal.
    match connect(&lab).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(response.headers()["retry-after"], "1");
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains("1000 WebSocket clients"),
                "the refusal says which limit: {error}"
            );
        }
        Err(e) => panic!("the client over the limit got {e} instead of a 503"),
        Ok(_) => panic!("client {} was taken", MAX_WS_CLIENTS + 1),
    }

    // Every one of the thousand sees the next change.
    let (status, _) = lab
        .call(
            Method::PATCH,
            "/api/nodes/1",
            Some(json!({"x": 42, "y": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let seen = join_all(clients.iter_mut().map(|ws| async {
        loop {
            if next_of(ws, "state").await["nodes"][0]["x"] == 42.0 {
                return;
            }
        }
    }))
    .await;
    assert_eq!(seen.len(), MAX_WS_CLIENTS);

    // A client that goes gives its place back.
    let mut one = clients.pop().unwrap();
    one.close(None).await.unwrap();
    drop(one);
    let mut again = eventually(
        "a place freed by a closed client",
        Duration::from_secs(5),
        async || connect(&lab).await.ok(),
    )
    .await;
    next_of(&mut again, "state").await;
    drop(again);
    drop(clients);
    eventually("the gauge back to 0", Duration::from_secs(10), async || {
        (gauge(&lab, "meshsim_websocket_clients").await == Some(0.0)).then_some(())
    })
    .await;
    lab.stop().await;
}

/// Requests as fast as 64 connections send them, for 5 s: each is answered, with its answer
/// or with the 503 of the limit on requests in flight; no connection fails, nothing is 5xx
/// otherwise.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_flood_of_requests_is_answered_or_refused_never_dropped() {
    let lab = Lab::start().await;
    lab.add_node(0.0, 0.0).await;
    lab.add_node(100.0, 0.0).await;
    let lab = Arc::new(lab);
    let until = Instant::now() + Duration::from_secs(5);
    let counts = join_all((0..64).map(|_| {
        let lab = Arc::clone(&lab);
        tokio::spawn(async move {
            let mut counts = BTreeMap::<u16, u64>::new();
            while Instant::now() < until {
                let response = lab
                    .request(Method::GET, "/api/nodes/1")
                    .send()
                    .await
                    .expect("every request gets an answer");
                let status = response.status();
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    let body: Value = response.json().await.unwrap();
                    assert!(
                        body["error"].as_str().unwrap().contains("requests"),
                        "{body}"
                    );
                } else {
                    assert_eq!(status, StatusCode::OK);
                }
                *counts.entry(status.as_u16()).or_default() += 1;
            }
            counts
        })
    }))
    .await;
    let mut total = BTreeMap::<u16, u64>::new();
    for counts in counts {
        for (status, n) in counts.unwrap() {
            *total.entry(status).or_default() += n;
        }
    }
    let answered: u64 = total.values().sum();
    eprintln!(
        "{answered} requests in 5 s ({:.0}/s) over 64 connections: {total:?}",
        answered as f64 / 5.0
    );
    assert!(answered > 0);
    let lab = Arc::into_inner(lab).expect("every client has finished");
    lab.stop().await;
}

/// Scattered positions for `n` nodes in a `side` square, from a fixed seed.
fn scatter(n: usize, side: f64, seed: &mut u64) -> Vec<(f64, f64)> {
    (0..n)
        .map(|_| (unit(seed) * side, unit(seed) * side))
        .collect()
}

fn unit(seed: &mut u64) -> f64 {
    *seed = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

const NODES: usize = 200;
const CLIENTS: usize = 100;
const LOAD: Duration = Duration::from_secs(60);
const SIDE: f64 = 1400.0;

/// What one client had accepted: the last position of each node it owns, and the last pin
/// of each pair it owns (a pair belongs to the owner of its lower id), so the end state is
/// known whatever order the server took the clients' requests in.
#[derive(Default)]
struct Accepted {
    positions: BTreeMap<u32, (f64, f64)>,
    pins: BTreeMap<(u32, u32), f64>,
    moves: Vec<Duration>,
    reads: u64,
    refused: u64,
}

fn owner(id: u32) -> usize {
    (id as usize - 1) % CLIENTS
}

/// 100 clients mix reads, moves and pins against a 200-node netns mesh for 60 s: no 5xx, and
/// at the end every accepted change is there, the links are the ones a model built from the
/// final document has, and every node's kernel routes are that model's next hops.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn the_api_under_load_while_the_mesh_changes_keeps_every_accepted_change() {
    let lab = Lab::start().await;
    let mut seed = 0x6c6f_6164;
    let nodes: Vec<Value> = scatter(NODES, SIDE, &mut seed)
        .into_iter()
        .enumerate()
        .map(|(i, (x, y))| json!({"id": i + 1, "x": x.round(), "y": y.round()}))
        .collect();
    let (status, body) = lab
        .call(Method::PUT, "/api/topology", Some(json!({"nodes": nodes})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let lab = Arc::new(lab);
    let links: Arc<Mutex<Vec<(u32, u32)>>> = Arc::new(Mutex::new(Vec::new()));
    let until = Instant::now() + LOAD;
    let tasks = (0..CLIENTS).map(|client| {
        let (lab, links) = (Arc::clone(&lab), Arc::clone(&links));
        tokio::spawn(async move {
            let mut seed = 0x1000 + client as u64;
            let mut accepted = Accepted::default();
            let own: Vec<u32> = (1..=NODES as u32)
                .filter(|&id| owner(id) == client)
                .collect();
            while Instant::now() < until {
                let roll = unit(&mut seed);
                if roll < 0.5 {
                    let path = if roll < 0.1 {
                        "/api/state".to_owned()
                    } else {
                        format!("/api/nodes/{}", 1 + (unit(&mut seed) * NODES as f64) as u32)
                    };
                    let (status, body) = lab.get(&path).await;
                    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
                    if path == "/api/state" {
                        *links.lock().await = body["links"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|l| {
                                (
                                    l["a"].as_u64().unwrap() as u32,
                                    l["b"].as_u64().unwrap() as u32,
                                )
                            })
                            .collect();
                    }
                    accepted.reads += 1;
                } else if roll < 0.85 {
                    let id = own[(unit(&mut seed) * own.len() as f64) as usize];
                    let (x, y) = (
                        (unit(&mut seed) * SIDE).round(),
                        (unit(&mut seed) * SIDE).round(),
                    );
                    let started = Instant::now();
                    let (status, body) = lab
                        .call(
                            Method::PATCH,
                            &format!("/api/nodes/{id}"),
                            Some(json!({"x": x, "y": y})),
                        )
                        .await;
                    accepted.moves.push(started.elapsed());
                    assert_eq!(status, StatusCode::OK, "move n{id}: {body}");
                    accepted.positions.insert(id, (x, y));
                } else {
                    // A pair this client owns, as linked when someone last read the state.
                    let pair = links
                        .lock()
                        .await
                        .iter()
                        .copied()
                        .filter(|&(a, b)| owner(a.min(b)) == client)
                        .nth((unit(&mut seed) * 4.0) as usize);
                    let Some((a, b)) = pair else { continue };
                    let latency = (unit(&mut seed) * 200.0).round();
                    let (status, body) = lab
                        .call(
                            Method::PUT,
                            &format!("/api/links/{a}/{b}"),
                            Some(json!({"latency_ms": latency})),
                        )
                        .await;
                    match status {
                        StatusCode::OK => {
                            accepted.pins.insert((a.min(b), a.max(b)), latency);
                        }
                        // A move unlinked the pair since it was read.
                        StatusCode::UNPROCESSABLE_ENTITY => accepted.refused += 1,
                        other => panic!("pin n{a}-n{b}: {other} {body}"),
                    }
                }
            }
            accepted
        })
    });
    let accepted: Vec<Accepted> = join_all(tasks)
        .await
        .into_iter()
        .map(|a| a.expect("a client task"))
        .collect();
    let lab = Arc::into_inner(lab).expect("every client has finished");

    let mut moves: Vec<Duration> = accepted
        .iter()
        .flat_map(|a| a.moves.iter().copied())
        .collect();
    moves.sort();
    let p = |q: f64| moves[((moves.len() - 1) as f64 * q) as usize];
    let reads: u64 = accepted.iter().map(|a| a.reads).sum();
    let pins: usize = accepted.iter().map(|a| a.pins.len()).sum();
    let refused: u64 = accepted.iter().map(|a| a.refused).sum();
    eprintln!(
        "{CLIENTS} clients for {LOAD:?} on {NODES} nodes: {reads} reads, {} moves (p50 {:?}, \
         p99 {:?}, max {:?}), {pins} pairs pinned, {refused} pins refused as unlinked",
        moves.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
    assert!(!moves.is_empty());

    // Every accepted change is there.
    let (_, document) = lab.get("/api/topology").await;
    let mut document: serde_json::Map<String, Value> = serde_json::from_value(document).unwrap();
    document.remove("partitions");
    document.remove("down");
    let topology: Topology = serde_json::from_value(Value::Object(document)).unwrap();
    let at: BTreeMap<u32, (f64, f64)> = topology
        .nodes
        .iter()
        .map(|n| (n.id.unwrap().0, (n.x, n.y)))
        .collect();
    for a in &accepted {
        for (id, position) in &a.positions {
            assert_eq!(at[id], *position, "n{id}'s last accepted move");
        }
        for (&(a, b), &latency) in &a.pins {
            let (na, nb) = (format!("n{a}"), format!("n{b}"));
            let pin = topology
                .pins
                .iter()
                .find(|p| (p.a == na && p.b == nb) || (p.a == nb && p.b == na))
                .unwrap_or_else(|| panic!("the pin of n{a}-n{b} is lost"));
            assert_eq!(pin.latency_ms, Some(latency), "n{a}-n{b}'s last pin");
        }
    }

    // The links are what a model built from the final document makes of it ...
    let model = Model::from_topology(&topology).unwrap();
    let (_, state) = lab.get("/api/state").await;
    let mut expected = serde_json::to_value(model.links().collect::<Vec<_>>()).unwrap();
    let mut got = state["links"].clone();
    for links in [&mut expected, &mut got] {
        links
            .as_array_mut()
            .unwrap()
            .sort_by_key(|l| (l["a"].as_u64(), l["b"].as_u64()));
    }
    if got != expected {
        let (g, e) = (got.as_array().unwrap(), expected.as_array().unwrap());
        let differ: Vec<String> = g
            .iter()
            .zip(e)
            .filter(|(g, e)| g != e)
            .take(5)
            .map(|(g, e)| format!("\n  got      {g}\n  expected {e}"))
            .collect();
        panic!(
            "the links are not the final positions' links ({} vs {}): {}",
            g.len(),
            e.len(),
            differ.concat()
        );
    }

    // ... and so is every route in every node.
    let ip_of: BTreeMap<Ipv4Addr, u32> = (1..=NODES as u32)
        .map(|id| (lab.ip(NodeId(id)).parse().unwrap(), id))
        .collect();
    for src in 1..=NODES as u32 {
        let netlink = Netlink::connect_in(&lab.mesh.ns(NodeId(src))).unwrap();
        let routes: BTreeMap<u32, u32> = netlink
            .routes_v4()
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| Some((*ip_of.get(&r.dst)?, *ip_of.get(&r.gateway?)?)))
            .collect();
        for dst in (1..=NODES as u32).filter(|&d| d != src) {
            assert_eq!(
                routes.get(&dst).copied(),
                model.next_hop(NodeId(src), NodeId(dst)).map(|n| n.0),
                "n{src}'s route to n{dst}"
            );
        }
    }
    lab.stop().await;
}
