//! The canvas in a real browser: Debian's Chromium, driven through chromedriver with
//! fantoccini, against a real `meshsim serve`.
//!
//! meshsim runs a command in every node (`--node-cmd`); the first click creates a node that
//! runs it, then "New nodes run: none" in the settings makes the second click a bare node,
//! which runs no process (checked in /proc) and whose panel says so.
//! Clicking empty canvas creates nodes, dragging moves one, clicking the link between them
//! opens its panel, and pinning a latency there reaches the datapath (the pin shows in
//! `/api/state` and the configured gauge in `/metrics`); a ping between the two nodes shows
//! on the link's rates. Then a 200-node mesh is loaded and the page's own frame-time
//! measurement is printed as a figure. Screenshots and logs go to `target/browser/`.
//!
//! Needs root (meshsim creates namespaces and loads the classifier), no other meshsim running,
//! and `chromium` + `chromium-driver`: `cargo xtask test` runs it.

use std::{process::Command, time::Duration};

use fantoccini::Locator;
use meshsim_tests::{
    Running,
    browser::{
        Browser, click_at, click_on, client_point, drag, screenshot, stats, text_of, type_into,
    },
    eventually, meshsim_bin, processes_in, target_dir,
};
use serde_json::{Value, json};

fn nodes(state: &Value) -> &Vec<Value> {
    state["nodes"].as_array().expect("state.nodes")
}

fn links(state: &Value) -> &Vec<Value> {
    state["links"].as_array().expect("state.links")
}

fn node_by_id(state: &Value, id: u64) -> Option<&Value> {
    nodes(state).iter().find(|n| n["id"] == id)
}

fn xy(node: &Value) -> (f64, f64) {
    (node["x"].as_f64().unwrap(), node["y"].as_f64().unwrap())
}

fn near(p: (f64, f64), q: (f64, f64)) -> bool {
    (p.0 - q.0).hypot(p.1 - q.1) < 2.0
}

/// The values of `meshsim_link_latency_seconds{src=.., dst=..}`, in any label order.
fn latency_gauge(metrics: &str, src: &str, dst: &str) -> Option<f64> {
    let (want_src, want_dst) = (format!("src=\"{src}\""), format!("dst=\"{dst}\""));
    metrics.lines().find_map(|line| {
        let rest = line.strip_prefix("meshsim_link_latency_seconds{")?;
        let (labels, value) = rest.split_once('}')?;
        let labels: Vec<&str> = labels.split(',').map(str::trim).collect();
        (labels.contains(&want_src.as_str()) && labels.contains(&want_dst.as_str()))
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

/// The packets per second the link panel shows for `direction` ("n1 → n2"), from its rates
/// table as WebDriver reads it: one row per line, "n1 → n2 130 kbit/s 17 pkt/s 0.0 drop/s".
fn packets_per_second(rates: &str, direction: &str) -> Option<f64> {
    let row = rates.lines().find(|l| l.starts_with(direction))?;
    let words: Vec<&str> = row.split_whitespace().collect();
    let unit = words.iter().position(|&w| w == "pkt/s")?;
    words.get(unit.checked_sub(1)?)?.parse().ok()
}

/// The command every node of the test's run runs, unless made bare.
const NODE_CMD: &str = "exec sleep 1000";

/// A mesh of `n` nodes scattered over a jittered grid inside `w` x `h` (a fixed LCG, so every
/// run loads the same mesh).
fn scattered_mesh(n: usize, w: f64, h: f64, neighbours: u32) -> Value {
    let cols = ((n as f64) * w / h).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let (dx, dy) = (w / cols as f64, h / rows as f64);
    let mut seed: u64 = 0x006d_6573_6873_696d;
    let mut jitter = move || {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((seed >> 33) as f64 / f64::from(1u32 << 31)) - 0.5
    };
    let nodes: Vec<Value> = (0..n)
        .map(|i| {
            let (c, r) = (i % cols, i / cols);
            let x = (c as f64 + 0.5 + 0.7 * jitter()) * dx;
            let y = (r as f64 + 0.5 + 0.7 * jitter()) * dy;
            json!({"name": format!("n{}", i + 1), "x": x.round(), "y": y.round()})
        })
        .collect();
    json!({"settings": {"neighbours": neighbours}, "nodes": nodes})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and chromium: run with cargo xtask test"]
async fn canvas_creates_moves_and_pins_in_a_real_browser() {
    let browser = Browser::open(
        &["serve", "--node-cmd", NODE_CMD],
        // Tearing down a 200-node mesh removes 200 namespaces.
        Duration::from_secs(90),
    )
    .await;
    let (page, api) = (&browser.page, &browser.api);

    // The run has a workload, so the settings offer to make new nodes bare.
    eventually(
        "the run in the top bar and the new-node choice",
        Duration::from_secs(10),
        async || {
            let run = text_of(page, "run").await?;
            let row = page.find(Locator::Id("new-workload-row")).await.ok()?;
            (run == "netns · command" && row.is_displayed().await.ok()?).then_some(())
        },
    )
    .await;

    // Click empty space: a node where the click was, running the run's command.
    let first_at = (300.0, 250.0);
    click_at(page, client_point(page, first_at.0, first_at.1).await).await;
    let first = eventually(
        "the first node in /api/state",
        Duration::from_secs(20),
        async || {
            let state = api.state().await;
            let n = nodes(&state).first()?;
            assert!(
                near(xy(n), first_at),
                "node at {:?}, clicked at {first_at:?}",
                xy(n)
            );
            n["id"].as_u64()
        },
    )
    .await;

    // "New nodes run: none", then click elsewhere, within reach: a second node, linked to
    // the first, that runs nothing.
    page.find(Locator::Id("new-workload"))
        .await
        .expect("the new-node choice")
        .select_by_value("none")
        .await
        .expect("choose none");
    let second_at = (480.0, 330.0);
    click_at(page, client_point(page, second_at.0, second_at.1).await).await;
    let second = eventually(
        "the second node, linked",
        Duration::from_secs(20),
        async || {
            let state = api.state().await;
            let n = nodes(&state).iter().find(|n| n["id"] != first)?;
            (links(&state).len() == 1).then(|| n["id"].as_u64())?
        },
    )
    .await;
    let state = api.state().await;
    let workload_of = |id| node_by_id(&state, id).unwrap()["workload"].clone();
    assert_eq!(
        (workload_of(first), workload_of(second)),
        (json!("command"), json!("none"))
    );
    let name_of = |id| {
        node_by_id(&state, id).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (runs, bare) = (name_of(first), name_of(second));
    eventually(
        "sleep 1000 in the first node",
        Duration::from_secs(5),
        async || {
            let found = processes_in(&runs);
            found
                .iter()
                .any(|c| c.trim_end() == "sleep 1000")
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        processes_in(&bare),
        Vec::<String>::new(),
        "{bare} runs something"
    );
    // Its panel says so.
    click_at(page, client_point(page, second_at.0, second_at.1).await).await;
    eventually(
        "the node panel to show a bare router",
        Duration::from_secs(10),
        async || {
            let text = text_of(page, "node-workload").await?;
            (text == "nothing (a bare router)").then_some(())
        },
    )
    .await;
    eventually(
        "the page to show two nodes",
        Duration::from_secs(10),
        async || {
            let text = text_of(page, "counts").await?;
            text.starts_with("2 nodes").then_some(())
        },
    )
    .await;

    // Drag the second node: its position changes in meshsim.
    let moved_to = (430.0, 420.0);
    drag(
        page,
        client_point(page, second_at.0, second_at.1).await,
        client_point(page, moved_to.0, moved_to.1).await,
        10,
        Duration::from_millis(500),
    )
    .await;
    let state = eventually(
        "the move in /api/state",
        Duration::from_secs(20),
        async || {
            let state = api.state().await;
            near(xy(node_by_id(&state, second)?), moved_to).then_some(state)
        },
    )
    .await;
    assert_eq!(links(&state).len(), 1, "still within reach after the move");

    // Click the link between them: its panel opens.
    let (a, b) = (
        xy(node_by_id(&state, first).unwrap()),
        xy(node_by_id(&state, second).unwrap()),
    );
    let middle = client_point(page, (a.0 + b.0) / 2.0, (a.1 + b.1) / 2.0).await;
    click_at(page, middle).await;
    let panel = page
        .find(Locator::Id("link-panel"))
        .await
        .expect("the link panel");
    eventually(
        "the link panel to open",
        Duration::from_secs(10),
        async || panel.is_displayed().await.ok()?.then_some(()),
    )
    .await;
    let title = text_of(page, "link-title")
        .await
        .expect("the panel's title");
    let names = |id| {
        node_by_id(&state, id).unwrap()["name"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (first_name, second_name) = (names(first), names(second));
    assert!(
        title.contains(&first_name) && title.contains(&second_name),
        "panel title {title:?}"
    );

    // Pin a latency in the panel: meshsim pins it and the datapath's gauge shows it.
    type_into(page, "#link-latency_ms", "42").await;
    click_on(page, "#pin-latency_ms").await;
    eventually(
        "the pin in /api/state",
        Duration::from_secs(20),
        async || {
            let state = api.state().await;
            let link = links(&state).first()?.clone();
            (link["pinned"].as_array()?.contains(&json!("latency_ms"))
                && link["latency_ms"] == 42.0)
                .then_some(())
        },
    )
    .await;
    eventually(
        "meshsim_link_latency_seconds = 0.042 both ways",
        Duration::from_secs(20),
        async || {
            let metrics = api.metrics().await;
            let there = latency_gauge(&metrics, &first_name, &second_name)?;
            let back = latency_gauge(&metrics, &second_name, &first_name)?;
            ((there - 0.042).abs() < 1e-9 && (back - 0.042).abs() < 1e-9).then_some(())
        },
    )
    .await;
    eventually(
        "the panel to show the pin",
        Duration::from_secs(10),
        async || {
            let unpin = page.find(Locator::Id("unpin-latency_ms")).await.ok()?;
            unpin.is_displayed().await.ok()?.then_some(())
        },
    )
    .await;

    // Real traffic: a ping from the first node to the second shows on the link's rates.
    let second_ip = node_by_id(&state, second).unwrap()["ip"]
        .as_str()
        .expect("the node's ip")
        .to_owned();
    let ping = Running::start(
        "ping",
        Command::new(meshsim_bin()).args([
            "exec",
            &first_name,
            "--",
            "ping",
            "-i",
            "0.05",
            "-s",
            "1000",
            "-c",
            "400",
            &second_ip,
        ]),
        &target_dir().join("browser/ping.log"),
        Duration::from_secs(5),
    );
    let direction = format!("{first_name} → {second_name}");
    eventually(
        "the link panel to show the ping's packets",
        Duration::from_secs(20),
        async || {
            let rates = text_of(page, "link-rates").await?;
            packets_per_second(&rates, &direction).filter(|&pps| pps > 0.0)
        },
    )
    .await;
    // A moment more, so the screenshot shows dots along the link and the receive rings.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    screenshot(page, "canvas.png").await;
    drop(ping);

    // The small screen by the first node is its client: a click opens the node with its
    // client link, and the form there shapes it.
    let state = api.state().await;
    let at = xy(node_by_id(&state, first).expect("the first node"));
    let (x, y) = client_point(page, at.0, at.1).await;
    click_at(page, (x - 20.0, y + 22.0)).await;
    eventually(
        "the client link form",
        Duration::from_secs(10),
        async || {
            let form = page.find(Locator::Id("node-client")).await.ok()?;
            let whose = text_of(page, "client-whose").await?;
            (form.is_displayed().await.ok()? && whose.contains("default")).then_some(())
        },
    )
    .await;
    type_into(page, "#client-form input[name=latency_ms]", "150").await;
    click_on(page, "#client-form button[type=submit]").await;
    eventually(
        "the node's own client link in meshsim",
        Duration::from_secs(10),
        async || {
            let c: Value = api
                .get(&format!("/api/nodes/{first}/client"))
                .await?
                .json()
                .await
                .ok()?;
            (c["own"] == true && c["latency_ms"] == 150.0).then_some(())
        },
    )
    .await;

    // 200 nodes: load a topology behind the page's back; the page follows over its WebSocket.
    let topology = scattered_mesh(200, 1000.0, 760.0, 9);
    let response = api
        .http
        .put(format!("{}/api/topology", api.base))
        .json(&topology)
        .send()
        .await
        .expect("PUT /api/topology");
    assert!(
        response.status().is_success(),
        "PUT /api/topology: {}",
        response.status()
    );
    let state = eventually(
        "200 nodes in /api/state",
        Duration::from_secs(180),
        async || {
            let state = api.state().await;
            (nodes(&state).len() == 200).then_some(state)
        },
    )
    .await;
    let link_count = links(&state).len();
    eventually(
        "the page to show 200 nodes",
        Duration::from_secs(30),
        async || {
            let text = text_of(page, "counts").await?;
            text.starts_with("200 nodes").then_some(())
        },
    )
    .await;

    // Idle: the page only copies its cached layer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = stats(page).await;
    // Dragging: every frame draws the node and its links over the cached layer, and each of
    // meshsim's ~20 relinks a second redraws that layer and the 200-node state is applied.
    let grabbed = xy(&nodes(&state)[100]);
    let from = client_point(page, grabbed.0, grabbed.1).await;
    drag(
        page,
        from,
        (from.0 + 150.0, from.1 + 90.0),
        60,
        Duration::from_secs(3),
    )
    .await;
    let dragging = stats(page).await;
    screenshot(page, "canvas-200.png").await;

    let ms = |s: &Value, k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    println!(
        "figure: frame time {:.2} ms at 200 nodes / {link_count} links (while dragging a node; \
         {:.1} ms between frames)",
        ms(&dragging, "frameMs"),
        ms(&dragging, "intervalMs"),
    );
    println!(
        "figure: frame time {:.2} ms at 200 nodes / {link_count} links (idle; a full redraw \
         costs {:.2} ms, applying one state message {:.2} ms)",
        ms(&idle, "frameMs"),
        ms(&dragging, "staticMs"),
        ms(&dragging, "stateMs"),
    );

    browser.close().await;
}

/// The timeline in a real browser: a scenario posted to the API shows as a tick per step and
/// a label that follows it to the end; Record records a click on the canvas as a step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root and chromium: run with cargo xtask test"]
async fn the_timeline_shows_a_scenario_and_records_the_canvas() {
    let browser = Browser::open(&["serve"], Duration::from_secs(30)).await;
    let (page, api) = (&browser.page, &browser.api);
    let scenario = "[[nodes]]\nname = \"n1\"\nx = 200\ny = 200\n\n[[nodes]]\nname = \"n2\"\nx = 400\ny = 200\n\n\
                    [[step]]\nat = \"300ms\"\npartition = [\"n1\"]\n\n[[step]]\nwait = { for = \"3s\" }\n\n\
                    [[step]]\nheal = \"all\"\n\n[[step]]\nmark = \"end\"\n";
    let posted = api
        .http
        .post(format!("{}/api/scenario?name=tl.toml", api.base))
        .header("content-type", "text/plain")
        .body(scenario)
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), reqwest::StatusCode::ACCEPTED);
    eventually(
        "a tick per step and the running label",
        Duration::from_secs(10),
        async || {
            let ticks = page
                .find_all(Locator::Css("#timeline-track .tick"))
                .await
                .ok()?;
            let label = text_of(page, "timeline-label").await?;
            (ticks.len() >= 2 && label.starts_with("tl.toml") && label.contains("of 4"))
                .then_some(())
        },
    )
    .await;
    screenshot(page, "timeline.png").await;
    eventually(
        "the end of the scenario",
        Duration::from_secs(20),
        async || {
            let label = text_of(page, "timeline-label").await?;
            label.contains("done: all 4 steps ran").then_some(())
        },
    )
    .await;
    let ticks = page
        .find_all(Locator::Css("#timeline-track .tick.done"))
        .await
        .unwrap();
    assert_eq!(ticks.len(), 4);

    click_on(page, "#record").await;
    eventually("the recorder on", Duration::from_secs(10), async || {
        let button = text_of(page, "record").await?;
        (button == "Stop & save").then_some(())
    })
    .await;
    click_at(page, client_point(page, 300.0, 350.0).await).await;
    let recorded = eventually(
        "the click in the recording",
        Duration::from_secs(10),
        async || {
            let text = api.get("/api/recording").await?.text().await.ok()?;
            text.contains("add = { name = \"n3\"").then_some(text)
        },
    )
    .await;
    assert!(recorded.contains("[[nodes]]"), "{recorded}");
    browser.close().await;
}
