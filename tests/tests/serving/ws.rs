//! The WebSocket feed against a real mesh: the first `state`, a `state` after a change made
//! over HTTP, `traffic` frames that carry a real ping on exactly the links it crossed, the
//! token on the WebSocket, and a client that stops reading without holding anyone up.
//!
//! Needs root (see tests/serving): `cargo xtask test` runs these.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use futures_util::StreamExt as _;
use meshsim::server::ServerOptions;
use meshsim_tests::{
    serving::Lab,
    ws::{connect, next, next_of},
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::{
    connect_async,
    tungstenite::{self, Message, client::IntoClientRequest as _},
};

/// An echo request and its reply as counted on a link (Ethernet + IPv4 + ICMP + 56 bytes).
const ECHO_FRAME: u64 = 98;

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn state_on_connect_then_after_every_change() {
    let lab = Lab::start().await;
    let mut ws = connect(&lab, "").await;
    let first = next(&mut ws).await;
    assert_eq!(first["type"], "state");
    let (_, state) = lab.get("/api/state").await;
    let mut expected = state.as_object().unwrap().clone();
    expected.insert("type".into(), json!("state"));
    expected.insert("version".into(), first["version"].clone());
    assert_eq!(
        first,
        Value::Object(expected),
        "the same body as GET /api/state"
    );

    let id = lab.add_node(100.0, 100.0).await;
    let update = next_of(&mut ws, "state").await;
    assert!(update["version"].as_u64() > first["version"].as_u64());
    assert_eq!(update["nodes"][0]["id"], id.0);
    assert_eq!(update["nodes"][0]["ip"], lab.ip(id));

    lab.call(
        Method::PATCH,
        "/api/nodes/1",
        Some(json!({"x": 150.0, "y": 120.0})),
    )
    .await;
    let moved = next_of(&mut ws, "state").await;
    assert_eq!(moved["nodes"][0]["x"], 150.0);
    ws.close(None).await.unwrap();
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_real_ping_shows_up_in_traffic_frames_on_its_links() {
    let lab = Lab::start().await;
    let n1 = lab.add_node(100.0, 100.0).await;
    let n2 = lab.add_node(200.0, 100.0).await;
    // Resolve neighbours first: then every frame on the links is the ping's.
    assert!(lab.ping(n1, n2, 1).status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut ws = connect(&lab, "").await;
    assert_eq!(next(&mut ws).await["type"], "state");
    // Frames flow even while nothing moves; skip until they do.
    let idle = next_of(&mut ws, "traffic").await;
    assert!(idle["interval_ms"].as_u64().unwrap() > 0);

    let pinger = {
        let (ns, ip) = (format!("ms-{}", n1.name()), lab.ip(n2));
        std::thread::spawn(move || {
            meshsim::net::NetNs::open(&ns)
                .unwrap()
                .command("ping")
                .args(["-n", "-q", "-c", "5", "-i", "0.2", "-W", "1", &ip])
                .output()
                .unwrap()
        })
    };
    let mut links: BTreeMap<(u64, u64), (u64, u64)> = BTreeMap::new();
    let mut received: BTreeMap<u64, u64> = BTreeMap::new();
    let mut frames = 0;
    let until = Instant::now() + Duration::from_millis(2500);
    while Instant::now() < until {
        let frame = next_of(&mut ws, "traffic").await;
        frames += 1;
        for l in frame["links"].as_array().unwrap() {
            let key = (l["a"].as_u64().unwrap(), l["b"].as_u64().unwrap());
            let e = links.entry(key).or_default();
            e.0 += l["packets"].as_u64().unwrap();
            e.1 += l["bytes"].as_u64().unwrap();
            assert_eq!(l["dropped"], 0);
        }
        for n in frame["nodes"].as_array().unwrap() {
            *received.entry(n["id"].as_u64().unwrap()).or_default() +=
                n["packets"].as_u64().unwrap();
        }
    }
    let out = pinger.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // 2.5 s at ~20 Hz; a slow machine may deliver fewer, never far fewer.
    assert!(frames >= 20, "only {frames} traffic frames in 2.5 s");
    let (a, b) = (u64::from(n1.0), u64::from(n2.0));
    assert_eq!(
        links,
        BTreeMap::from([((a, b), (5, 5 * ECHO_FRAME)), ((b, a), (5, 5 * ECHO_FRAME)),]),
        "five requests n1 -> n2, five replies n2 -> n1"
    );
    assert_eq!(received, BTreeMap::from([(a, 5), (b, 5)]));
    lab.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn the_websocket_takes_the_token_as_a_header_or_in_the_query() {
    let lab = Lab::start_with(ServerOptions {
        token: Some("s3cret".into()),
        ..ServerOptions::default()
    })
    .await;
    let url = format!("ws://{}/ws", lab.addr);
    match connect_async(url.as_str()).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("connected without the token: {:?}", other.map(|(_, r)| r)),
    }
    match connect_async(format!("{url}?token=wrong")).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("connected with a wrong token: {:?}", other.map(|(_, r)| r)),
    }
    let mut ws = connect(&lab, "?token=s3cret").await;
    assert_eq!(next(&mut ws).await["type"], "state");
    let mut request = url.as_str().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    let (mut ws, _) = connect_async(request).await.unwrap();
    assert_eq!(next(&mut ws).await["type"], "state");

    // A page of another site cannot open it, token or not.
    let mut request = format!("{url}?token=s3cret").into_client_request().unwrap();
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN)
        }
        other => panic!("a foreign origin connected: {:?}", other.map(|(_, r)| r)),
    }
    lab.stop().await;
}

/// The largest a TCP socket's receive or send buffer grows to (`tcp_rmem` / `tcp_wmem`).
fn tcp_buffer_max(which: &str) -> usize {
    let path = format!("/proc/sys/net/ipv4/tcp_{which}");
    let text = std::fs::read_to_string(&path).unwrap();
    text.split_whitespace().last().unwrap().parse().unwrap()
}

/// A grid of `n` nodes 60 px apart, as a topology document.
fn grid(n: u32) -> Value {
    let nodes: Vec<Value> = (1..=n)
        .map(|i| json!({"id": i, "x": f64::from(i % 10) * 60.0, "y": f64::from(i / 10) * 60.0}))
        .collect();
    json!({"nodes": nodes})
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root: run with cargo xtask test"]
async fn a_client_that_stops_reading_is_dropped_and_holds_up_nothing() {
    let lab = Lab::start().await;
    let (status, _) = lab.call(Method::PUT, "/api/topology", Some(grid(50))).await;
    assert_eq!(status, StatusCode::OK);
    // Connected, then never read: its socket buffers fill with full states.
    let mut stalled = connect(&lab, "").await;
    let mut watcher = connect(&lab, "").await;
    let state_len = lab
        .request(Method::GET, "/api/state")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .len();
    // More states than the stalled socket's buffers (both ends) can ever hold.
    let moves = (tcp_buffer_max("rmem") + tcp_buffer_max("wmem")) / state_len + 1;
    let started = Instant::now();
    let mut x = 0.0;
    for i in 0..moves {
        x = 600.0 + (i % 2) as f64;
        let (status, _) = lab
            .call(
                Method::PATCH,
                "/api/nodes/1",
                Some(json!({"x": x, "y": 600.0})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(60),
        "{moves} moves took {took:?}"
    );
    // The watcher keeps up to the latest state (it may skip some in between) ...
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = next_of(&mut watcher, "state").await;
        if m["nodes"][0]["x"] == x {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher never saw the last move"
        );
    }
    // ... and traffic frames keep coming to it.
    next_of(&mut watcher, "traffic").await;
    // By now its buffers are full and the server's send to it waits; give that wait the
    // server's 5 s limit (and some), without reading, or reading would let the send finish.
    tokio::time::sleep(Duration::from_secs(7)).await;
    // The stalled client was dropped: what it can still read ends well before all the states.
    let mut states = 0;
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(Ok(m)) = stalled.next().await {
            if let Message::Text(t) = m
                && t.starts_with(r#"{"type":"state""#)
            {
                states += 1;
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the stalled client is still connected");
    assert!(states < moves, "the stalled client got all {moves} states");
    eprintln!(
        "{moves} moves of a 50-node mesh in {took:?}; the stalled client got {states} states, then was dropped"
    );
    lab.stop().await;
}
