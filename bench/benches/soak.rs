//! Whether meshsim's memory stays flat under a long stream of changes (issue: nothing grows
//! without bound). The real binary (`target/release/meshsim`, run prefix `sk`) serves a
//! 100-node netns mesh; 20 WebSocket clients read everything it sends; moves and pins arrive
//! at 100 a second through the API. Every 10 s the bench samples meshsim's resident memory
//! (VmRSS), threads and open files; at the end it prints the growth over the run after the
//! first five minutes (a least-squares slope, MiB per hour) and the first and last windows.
//!
//! `cargo xtask bench` runs it for an hour; `-- --minutes N` (or `MESHSIM_SOAK_MINUTES`)
//! changes that. Needs root. Nothing is asserted: the figures are the result, and a failed
//! request or a dead meshsim ends the bench with an error.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use futures_util::StreamExt as _;
use meshsim_tests::{meshsim_bin, spawn_meshsim};
use serde_json::{Value, json};
use tokio::sync::{Mutex, Semaphore};

const PREFIX: &str = "sk";
const SUBNET: &str = "10.89.0.0/16";
const LISTEN: &str = "127.0.0.1:3919";
const NODES: u32 = 100;
const CLIENTS: usize = 20;
const OPS_PER_SECOND: u64 = 100;
const SAMPLE: Duration = Duration::from_secs(10);
const WARM_UP: Duration = Duration::from_secs(300);

fn minutes() -> Result<u64> {
    let arg = std::env::args()
        .skip_while(|a| a != "--minutes")
        .nth(1)
        .or_else(|| std::env::var("MESHSIM_SOAK_MINUTES").ok());
    match arg {
        None => Ok(60),
        Some(m) => m
            .parse()
            .with_context(|| format!("--minutes takes a whole number, got {m:?}")),
    }
}

/// `VmRSS`, `Threads` and open files of `pid`.
fn sample(pid: u32) -> Result<(u64, u64, usize)> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).context("meshsim has gone away")?;
    let field = |name: &str| -> Result<u64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .with_context(|| format!("no {name} in /proc/{pid}/status"))
    };
    let files = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok((field("VmRSS:")? * 1024, field("Threads:")?, files))
}

fn mib(bytes: f64) -> f64 {
    bytes / (1024.0 * 1024.0)
}

/// Least-squares slope of `(seconds, bytes)`, in bytes per second.
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    let (sx, sy) = points
        .iter()
        .fold((0.0, 0.0), |(sx, sy), (x, y)| (sx + x, sy + y));
    let (mx, my) = (sx / n, sy / n);
    let (num, den) = points.iter().fold((0.0, 0.0), |(num, den), (x, y)| {
        (num + (x - mx) * (y - my), den + (x - mx) * (x - mx))
    });
    if den == 0.0 { 0.0 } else { num / den }
}

struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let minutes = minutes()?;
    let run_for = Duration::from_secs(minutes * 60);
    println!(
        "soak: {NODES} nodes, {CLIENTS} WebSocket clients, {OPS_PER_SECOND} moves and pins a \
         second, for {minutes} min; meshsim's memory every {SAMPLE:?}"
    );
    let (mut meshsim, lines) = spawn_meshsim(&[
        "serve", "--prefix", PREFIX, "--subnet", SUBNET, "--listen", LISTEN,
    ]);
    // `lines` stays alive: its thread drains meshsim's stderr, so a full pipe never blocks it.
    let result = soak(meshsim.child.id(), run_for).await;
    drop(lines);
    let status = meshsim.terminate();
    let down = std::process::Command::new(meshsim_bin())
        .args(["down", "--prefix", PREFIX])
        .output()
        .context("running meshsim down")?;
    ensure!(
        down.status.success(),
        "meshsim down --prefix {PREFIX}: {}",
        String::from_utf8_lossy(&down.stderr)
    );
    result?;
    ensure!(status.success(), "meshsim ended with {status}");
    Ok(())
}

async fn soak(pid: u32, run_for: Duration) -> Result<()> {
    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{LISTEN}{path}");
    let ready = Instant::now();
    while http.get(url("/api/state")).send().await.is_err() {
        ensure!(
            ready.elapsed() < Duration::from_secs(60),
            "meshsim did not serve within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let side = 10;
    let nodes: Vec<Value> = (0..NODES)
        .map(|i| json!({"id": i + 1, "x": 80 * (i % side), "y": 80 * (i / side)}))
        .collect();
    let response = http
        .put(url("/api/topology"))
        .json(&json!({"nodes": nodes}))
        .send()
        .await?;
    ensure!(
        response.status().is_success(),
        "loading the mesh: {}",
        response.text().await?
    );

    let received = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..CLIENTS {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{LISTEN}/ws"))
            .await
            .context("a WebSocket client")?;
        let received = Arc::clone(&received);
        readers.push(tokio::spawn(async move {
            let (_, mut rx) = ws.split();
            while let Some(Ok(_)) = rx.next().await {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let links: Arc<Mutex<Vec<(u64, u64)>>> = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let failed: Arc<Mutex<Option<String>>> = Arc::default();
    let in_flight = Arc::new(Semaphore::new(32));
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_micros(1_000_000 / OPS_PER_SECOND));
    let mut next_sample = started;
    let mut next_links = started;
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let mut files = Vec::new();
    let mut rng = Rng(0x736f_616b);
    let mut op = 0u64;
    while started.elapsed() < run_for {
        ticker.tick().await;
        if let Some(why) = failed.lock().await.take() {
            bail!("{why}");
        }
        if Instant::now() >= next_links {
            next_links += Duration::from_secs(5);
            let state: Value = http.get(url("/api/state")).send().await?.json().await?;
            *links.lock().await = state["links"]
                .as_array()
                .context("links in the state")?
                .iter()
                .filter_map(|l| Some((l["a"].as_u64()?, l["b"].as_u64()?)))
                .collect();
        }
        if Instant::now() >= next_sample {
            next_sample += SAMPLE;
            let (rss, threads, open) = sample(pid)?;
            let t = started.elapsed().as_secs_f64();
            samples.push((t, rss as f64));
            files.push(open);
            if samples.len() % 6 == 1 {
                println!(
                    "  {:>5.1} min: RSS {:.1} MiB, {threads} threads, {open} open files, {} \
                     changes, {} WebSocket messages",
                    t / 60.0,
                    mib(rss as f64),
                    done.load(Ordering::Relaxed),
                    received.load(Ordering::Relaxed)
                );
            }
        }
        op += 1;
        let request = if op.is_multiple_of(4) {
            let pair = {
                let links = links.lock().await;
                (!links.is_empty()).then(|| links[(rng.unit() * links.len() as f64) as usize])
            };
            let Some((a, b)) = pair else { continue };
            // Pins and unpins by turns, so the pin table neither stays empty nor only grows.
            if op.is_multiple_of(8) {
                http.delete(url(&format!("/api/links/{a}/{b}")))
            } else {
                http.put(url(&format!("/api/links/{a}/{b}")))
                    .json(&json!({"latency_ms": (rng.unit() * 100.0).round()}))
            }
        } else {
            let id = 1 + (rng.unit() * f64::from(NODES)) as u32;
            http.patch(url(&format!("/api/nodes/{id}"))).json(
                &json!({"x": (rng.unit() * 800.0).round(), "y": (rng.unit() * 800.0).round()}),
            )
        };
        let permit = Arc::clone(&in_flight).acquire_owned().await?;
        let (done, failed) = (Arc::clone(&done), Arc::clone(&failed));
        tokio::spawn(async move {
            let outcome = request.send().await;
            drop(permit);
            match outcome {
                // 422: a pin on a pair a move has since unlinked; 404: an unpin of nothing.
                Ok(r) if r.status().is_success() || r.status() == 422 || r.status() == 404 => {
                    done.fetch_add(1, Ordering::Relaxed);
                }
                Ok(r) => *failed.lock().await = Some(format!("a change got {}", r.status())),
                Err(e) => *failed.lock().await = Some(format!("a change failed: {e}")),
            }
        });
    }
    for reader in &readers {
        ensure!(!reader.is_finished(), "a WebSocket client was dropped");
        reader.abort();
    }

    let elapsed = started.elapsed().as_secs_f64();
    let after_warm_up: Vec<(f64, f64)> = samples
        .iter()
        .copied()
        .filter(|(t, _)| *t >= WARM_UP.as_secs_f64().min(elapsed / 2.0))
        .collect();
    let window = |from: f64, to: f64| {
        let w: Vec<f64> = samples
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, r)| *r)
            .collect();
        mib(w.iter().sum::<f64>() / w.len().max(1) as f64)
    };
    let warm = WARM_UP.as_secs_f64().min(elapsed / 2.0);
    let max = samples.iter().map(|(_, r)| *r).fold(0.0, f64::max);
    println!(
        "soak: {} changes in {:.1} min ({:.0}/s), {} WebSocket messages to {CLIENTS} clients",
        done.load(Ordering::Relaxed),
        elapsed / 60.0,
        done.load(Ordering::Relaxed) as f64 / elapsed,
        received.load(Ordering::Relaxed)
    );
    println!(
        "soak: meshsim RSS {:.1} MiB just after warm-up ({:.0} s), {:.1} MiB in the last 5 min, \
         {:.1} MiB at most; growth after warm-up {:+.2} MiB/hour; open files {} -> {}",
        window(warm, warm + 300.0),
        warm,
        window(elapsed - 300.0, elapsed + 1.0),
        mib(max),
        mib(slope(&after_warm_up) * 3600.0),
        files.first().copied().unwrap_or(0),
        files.last().copied().unwrap_or(0),
    );
    Ok(())
}
