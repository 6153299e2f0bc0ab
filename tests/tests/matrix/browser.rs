//! Matrix events on the canvas, in a real browser: `meshsim up` with three Synapse nodes in
//! a line (n1 - n2 - n3, 100 ms a link). Once the mesh room has converged, the test selects n1 on the
//! canvas, types a message into its send box and sends it; the page then draws bubbles
//! along the routes and lists the message with its delivery time to n2 and n3; clicking the
//! message in the list replays its journey. The screenshot (`target/browser/events.png`)
//! is the README's. Then n3's homeserver is killed: selected on the canvas, n3 says it
//! crashed and counts down to its restart (`target/browser/restart.png`), then is ready
//! again.
//!
//! Needs root, chromium and chromium-driver, Python 3 with venv and PyPI the first time:
//! `cargo xtask test` runs it.

use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use meshsim_tests::{
    TempDir,
    browser::{Browser, click_at, click_on, client_point, screenshot, type_into},
    eventually,
};
use serde_json::Value;

/// The fixtures' line (n1 - n2 - n3, 100 ms a link, n1 and n3 not linked), drawn three
/// times as wide so the journeys are easy to see.
const WIDE_LINE: &str = r#"
[settings]
max_latency_ms = 150.0
latency_scale_pct = 33.333
bandwidth_bps = 10_000_000

[[nodes]]
name = "n1"
x = 200
y = 300

[[nodes]]
name = "n2"
x = 500
y = 300

[[nodes]]
name = "n3"
x = 800
y = 300
"#;

/// Bubbles moving and servers popping on the canvas now.
async fn bubbles(page: &Client) -> (u64, u64) {
    let b = page
        .execute("return window.meshsim.bubbles();", vec![])
        .await
        .expect("window.meshsim.bubbles");
    (b["moving"].as_u64().unwrap(), b["pops"].as_u64().unwrap())
}

/// Watches the canvas for `within`; the most bubbles seen moving at once. Takes the
/// screenshot `shot` once bubbles have been moving for a second (well on their way).
async fn watch_bubbles(page: &Client, within: Duration, shot: Option<&str>) -> u64 {
    let started = Instant::now();
    let mut most = 0;
    let mut shot = shot;
    let mut first_moving = None;
    while started.elapsed() < within {
        let (moving, _) = bubbles(page).await;
        if moving > 0 {
            let since = *first_moving.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(1)
                && let Some(name) = shot.take()
            {
                screenshot(page, name).await;
            }
        }
        most = most.max(moving);
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    most
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs root, chromium and Synapse: run with cargo xtask test"]
async fn events_travel_and_pop_on_the_canvas() {
    let dir = TempDir::new("events-browser");
    let topology = dir.path().join("line.toml");
    std::fs::write(&topology, WIDE_LINE).unwrap();
    let browser = Browser::open(
        &["up", topology.to_str().unwrap(), "--workload", "synapse"],
        Duration::from_secs(60),
    )
    .await;
    let (page, api) = (&browser.page, &browser.api);

    let started = Instant::now();
    eventually(
        "the mesh room to converge",
        Duration::from_secs(300),
        async || {
            // All three in it: a room of its maker alone is trivially converged.
            let room: Value = api.get("/api/rooms/mesh").await?.json().await.ok()?;
            let members = room["members"].as_array()?.len();
            (members == 3 && room["converged"] == true).then_some(())
        },
    )
    .await;
    println!(
        "three Synapse nodes up and in a converged mesh room {:.1} s after meshsim answered",
        started.elapsed().as_secs_f64()
    );
    let panel = page.find(Locator::Id("events-panel")).await.unwrap();
    assert!(
        panel.is_displayed().await.unwrap(),
        "the events panel shows with homeservers"
    );

    // Slow journeys down, so they are on the canvas long enough to see (and to screenshot).
    page.execute(
        "const s = document.getElementById('slow'); s.value = 20; \
         s.dispatchEvent(new Event('input'));",
        vec![],
    )
    .await
    .unwrap();

    // The whole mesh in view, as big as it fits.
    click_on(page, "#fit").await;

    // Select n1 on the canvas.
    click_at(page, client_point(page, 200.0, 300.0).await).await;
    eventually("n1's send box", Duration::from_secs(20), async || {
        let form = page.find(Locator::Id("node-send")).await.ok()?;
        form.is_displayed().await.ok()?.then_some(())
    })
    .await;
    let body = format!("hello from the canvas ({})", std::process::id());
    type_into(page, "#node-send-body", &body).await;
    click_on(page, "#node-send button[type=submit]").await;

    // Deselect, so the event list moves up into the screenshot.
    click_on(page, "#node-panel [data-close]").await;
    let most = watch_bubbles(page, Duration::from_secs(10), Some("events.png")).await;
    assert!(most >= 1, "no bubble travelled after the send");
    let row = format!("//ol[@id='events-list']/li[contains(., '{body}')]");
    let listed = eventually(
        "the message in the list with n2's and n3's delivery times",
        Duration::from_secs(30),
        async || {
            let text = page
                .find(Locator::XPath(&row))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.contains("n2 ") && text.contains("n3 ") && !text.contains('…')).then_some(text)
        },
    )
    .await;
    println!("listed: {listed}");

    // A click on the message replays its journey.
    while bubbles(page).await != (0, 0) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    page.find(Locator::XPath(&row))
        .await
        .expect("the message's row")
        .click()
        .await
        .unwrap();
    let replayed = watch_bubbles(page, Duration::from_secs(3), None).await;
    assert!(
        replayed >= 2,
        "a replay sends a bubble to n2 and to n3: {replayed}"
    );

    // A homeserver that crashes: the canvas says so, counts down, and shows it back.
    let pid_of_n3 = async || -> Option<i32> {
        let w: Value = api.get("/api/workloads").await?.json().await.ok()?;
        w["nodes"].as_array()?.iter().find(|n| n["name"] == "n3")?["pid"]
            .as_i64()
            .map(|p| p as i32)
    };
    let pid = pid_of_n3().await.expect("n3's homeserver pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill n3's homeserver");
    click_at(page, client_point(page, 800.0, 300.0).await).await;
    let state = async || -> Option<String> {
        page.find(Locator::Id("node-hs-state"))
            .await
            .ok()?
            .text()
            .await
            .ok()
    };
    let crashed = eventually(
        "n3's panel to say it crashed and when it restarts",
        Duration::from_secs(20),
        async || {
            state()
                .await
                .filter(|t| t.contains("crashed, restarting in"))
        },
    )
    .await;
    println!("n3: {crashed}");
    assert!(crashed.contains("crashed 1×"), "{crashed}");
    screenshot(page, "restart.png").await;
    let back = eventually(
        "n3 ready again on the canvas",
        Duration::from_secs(60),
        async || state().await.filter(|t| t.starts_with("ready")),
    )
    .await;
    assert!(back.contains("restarted 1×"), "{back}");
    assert_ne!(pid_of_n3().await, Some(pid), "a new homeserver process");

    browser.close().await;
}
