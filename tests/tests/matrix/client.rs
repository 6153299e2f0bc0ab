//! A Matrix client on the host, over a shaped client link: three Synapse nodes in a line, n1's
//! client link set to 300 ms with 32 kbit/s up and 64 kbit/s down through the API. From
//! the host, with the plain Client-Server API over HTTP (not meshsim's code): log in to n1,
//! an initial `/v3/sync`, and a simplified sliding sync request (MSC4186, native in
//! Synapse) that lists the mesh room. Each direction of n1's client link counts what
//! crossed it; where delays are enforced the client's own timings show the link's 600 ms
//! round trip.
//!
//! Needs root, Python 3 with venv and PyPI the first time: `cargo xtask test` runs it.

use std::time::{Duration, Instant};

use meshsim::{model::HOST, server::ServerOptions, workload::SynapseOptions};
use meshsim_tests::{eventually, fixtures::line, id, mesh::MeshConfig, serving::Lab};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// A request to n1 from the host; the JSON answer and how long it took.
async fn call(
    http: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (Value, Duration) {
    let started = Instant::now();
    let mut request = http.request(method, format!("{base}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .expect("n1 answers over its client link");
    let status = response.status();
    let answer: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    (answer, started.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs root and Synapse: run with cargo xtask test"]
async fn a_client_on_the_host_syncs_and_slides_over_a_slow_client_link() {
    let n1 = id("n1");
    let options = SynapseOptions::default();
    let topology = line();
    let config = MeshConfig::synapse(
        &options,
        topology.settings.clone(),
        "meshsim-client-test-logs",
    )
    .await;
    let mut lab = Lab::start_mesh(config, ServerOptions::default()).await;
    let fq = lab.mesh.fq;
    lab.sim.load(topology, None).await.unwrap();
    lab.mesh.ready(3, options.start_timeout).await;
    let matrix = lab.mesh.matrix.clone().unwrap();
    let room = eventually(
        "n1 in the mesh room",
        Duration::from_secs(120),
        async || {
            let room = matrix.mesh_room()?;
            matrix.members(&room).contains("n1").then_some(room)
        },
    )
    .await;

    let (status, link) = lab
        .call(
            Method::PUT,
            "/api/nodes/n1/client",
            Some(
                json!({"latency_ms": 300, "bandwidth_up_bps": 32000, "bandwidth_down_bps": 64000}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{link}");

    let http = reqwest::Client::new();
    let base = format!("http://{}:8008", lab.ip(n1));
    let before = lab.sim.counters().await.unwrap();
    let (login, login_took) = call(
        &http,
        &base,
        Method::POST,
        "/_matrix/client/v3/login",
        None,
        Some(json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": options.user},
            "password": options.password,
        })),
    )
    .await;
    let token = login["access_token"].as_str().unwrap().to_owned();

    let counted = |c: &meshsim::sim::Counters| {
        let up = c.links.get(&(HOST, n1)).map_or(0, |l| l.bytes);
        let down = c.links.get(&(n1, HOST)).map_or(0, |l| l.bytes);
        (up, down)
    };
    // A room joined over federation is left out of a plain /sync while its server is still
    // fetching the room's full state ("faster joins"; meshsim's observer lazy-loads members
    // and sliding sync lists it, so both see it at once): ask again until it shows, and
    // measure the answer that has it.
    let (mut at_login, mut after_sync, mut after_slide);
    let (mut sync_took, mut slide_took);
    let mut attempt = 0;
    loop {
        at_login = lab.sim.counters().await.unwrap();
        // Synapse keeps an answer for identical /sync requests a while (its response
        // cache): each try asks with another (ignored) timeout, so it is answered anew.
        let (sync, took) = call(
            &http,
            &base,
            Method::GET,
            &format!("/_matrix/client/v3/sync?timeout={attempt}"),
            Some(&token),
            None,
        )
        .await;
        sync_took = took;
        after_sync = lab.sim.counters().await.unwrap();
        // Simplified sliding sync: the ten most recent rooms, one event each.
        let body = json!({"lists": {"recent": {
            "ranges": [[0, 9]], "timeline_limit": 1, "required_state": [["m.room.name", ""]]
        }}});
        let (slid, took) = call(
            &http,
            &base,
            Method::POST,
            SLIDING_SYNC,
            Some(&token),
            Some(body),
        )
        .await;
        slide_took = took;
        after_slide = lab.sim.counters().await.unwrap();
        let in_sync = sync["rooms"]["join"].get(&room).is_some();
        let listed = slid["lists"]["recent"]["ops"][0]["room_ids"]
            .as_array()
            .is_some_and(|ids| ids.iter().any(|r| r == room.as_str()));
        if in_sync && listed {
            assert!(slid["rooms"].get(&room).is_some(), "{slid}");
            assert!(slid["pos"].is_string(), "a position to continue from");
            break;
        }
        attempt += 1;
        assert!(
            attempt < 60,
            "the mesh room never showed: in /sync {in_sync}, in the sliding sync list {listed}: {slid}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if attempt > 0 {
        println!("the mesh room showed in /sync after {attempt} more tries");
    }

    let (sync_up, sync_down) = {
        let (a, b) = (counted(&at_login), counted(&after_sync));
        (b.0 - a.0, b.1 - a.1)
    };
    let (slide_up, slide_down) = {
        let (a, b) = (counted(&after_sync), counted(&after_slide));
        (b.0 - a.0, b.1 - a.1)
    };
    println!(
        "over n1's client link (300 ms, 32/64 kbit/s; delays {}): login {:.0} ms; initial \
         /v3/sync {:.0} ms, {sync_down} bytes down / {sync_up} up; sliding sync {:.0} ms, \
         {slide_down} bytes down / {slide_up} up",
        if fq {
            "enforced"
        } else {
            "NOT enforced: no sch_fq"
        },
        login_took.as_secs_f64() * 1000.0,
        sync_took.as_secs_f64() * 1000.0,
        slide_took.as_secs_f64() * 1000.0,
    );
    // Everything crossed n1's client link, each way counted on its own.
    let (up0, down0) = counted(&before);
    let (up1, down1) = counted(&after_slide);
    assert!(up1 > up0 && down1 > down0, "both directions counted");
    assert!(
        sync_down > sync_up,
        "a sync brings more down than it sends up"
    );
    if fq {
        // A request and its answer cross the link once each way: at least 600 ms.
        assert!(sync_took >= Duration::from_millis(600), "{sync_took:?}");
        assert!(slide_took >= Duration::from_millis(600), "{slide_took:?}");
    }
    lab.stop().await;
}
