//! How close to their time scenario steps are applied, on a 100-node mesh (netns, no
//! workload, the real Sim and classifier): a 10 × 10 grid and 400 steps 15 ms apart (moves,
//! partitions and heals, settings changes), run through `scenario::run` as `meshsim run` does,
//! lateness read back from the event log (`late_ms` of each step). The baseline, in the same
//! run, is the same schedule with nothing applied: the timer's own lateness. Target: p99
//! within 5 ms. Needs root; `cargo xtask bench` runs it.
//!
//! Nothing is asserted, but a step that fails ends the bench with an error.

use std::{
    fmt::Write as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use meshsim::scenario::{
    self,
    desk::Desk,
    record::{Clock, Recorder},
    run::Ports,
};
use meshsim_stats::{quantile, sorted};
use meshsim_tests::{
    TempDir,
    mesh::{MeshConfig, MeshLab},
};

const SIDE: usize = 10;
const STEPS: usize = 400;
const GAP: Duration = Duration::from_millis(15);
const TARGET_P99_MS: f64 = 5.0;

/// The scenario: a grid 60 px apart (reach 300 px: every node has neighbours to spare), and
/// steps cycling through a move, a partition of one grid row, a heal and a settings change.
fn scenario_text() -> String {
    let mut s = String::from("[settings]\nmax_latency_ms = 30.0\nlatency_scale_pct = 10.0\n");
    for i in 0..SIDE * SIDE {
        let _ = write!(
            s,
            "\n[[nodes]]\nname = \"n{}\"\nx = {}\ny = {}\n",
            i + 1,
            100 + 60 * (i % SIDE),
            100 + 60 * (i / SIDE)
        );
    }
    for k in 0..STEPS {
        let at = GAP * (k as u32 + 1);
        let node = 1 + (k * 37) % (SIDE * SIDE);
        let action = match k % 4 {
            0 => format!(
                "move = {{ node = \"n{node}\", x = {}, y = {} }}",
                100 + 60 * ((node - 1) % SIDE) + (k % 7),
                100 + 60 * ((node - 1) / SIDE)
            ),
            1 => {
                let row = (k / 4) % SIDE;
                let names: Vec<String> = (0..SIDE)
                    .map(|c| format!("\"n{}\"", row * SIDE + c + 1))
                    .collect();
                format!("partition = [{}]", names.join(", "))
            }
            2 => "heal = \"all\"".to_owned(),
            _ => format!("settings = {{ jitter_ms = {}.0 }}", k % 3),
        };
        let _ = write!(s, "\n[[step]]\nat = \"{}ms\"\n{action}\n", at.as_millis());
    }
    s
}

fn late_ms_from_log(path: &Path) -> Result<Vec<f64>> {
    let text = std::fs::read_to_string(path).context("reading the event log")?;
    let mut late = Vec::new();
    for line in text.lines() {
        let record: serde_json::Value = serde_json::from_str(line)?;
        if record["kind"] == "step" {
            if !record["error"].is_null() {
                bail!("step {} failed: {}", record["index"], record["error"]);
            }
            late.push(record["late_ms"].as_f64().context("late_ms")?);
        }
    }
    Ok(late)
}

/// The same schedule with nothing applied: how late the timer alone wakes up.
async fn baseline() -> Vec<f64> {
    let start = Instant::now();
    let mut late = Vec::with_capacity(STEPS);
    for k in 0..STEPS {
        let due = start + GAP * (k as u32 + 1);
        tokio::time::sleep_until(due.into()).await;
        late.push(due.elapsed().as_secs_f64() * 1000.0);
    }
    late
}

fn figures(late: &[f64]) -> (f64, f64, f64) {
    let s = sorted(late);
    (quantile(&s, 0.5), quantile(&s, 0.99), s[s.len() - 1])
}

#[tokio::main]
async fn main() -> Result<()> {
    let text = scenario_text();
    let parsed = scenario::parse(Path::new("bench-100.toml"), &text)?;
    let mesh = MeshLab::start(MeshConfig::default()).await;
    mesh.sim
        .load(parsed.file.topology.clone(), None)
        .await
        .context("loading the 100-node grid")?;
    println!(
        "scenario bench: {} nodes, {} links; {STEPS} steps {} ms apart (moves, partitions of a row, heals, settings)",
        SIDE * SIDE,
        mesh.sim.state().borrow().snapshot.links.len(),
        GAP.as_millis()
    );
    let out = TempDir::new("scenario-bench");
    let log = out.path().join("events.jsonl");
    let (recorder, writer) = Recorder::create(&log, Clock::now())?;
    let ports = Ports {
        sim: mesh.sim.clone(),
        matrix: None,
        workloads: mesh.status.clone(),
    };
    let desk = Desk::new();
    let data = scenario::run::run(
        &parsed,
        &ports,
        recorder,
        &desk,
        &|_| {},
        std::future::pending(),
    )
    .await;
    writer.await??;
    if let Some(why) = data.failure {
        bail!("the scenario stopped: {why}");
    }
    let applied = late_ms_from_log(&log)?;
    let took: Vec<f64> = data
        .steps
        .iter()
        .map(|s| s.done_ms - s.started_ms)
        .collect();
    let timer = baseline().await;
    let (a50, a99, amax) = figures(&applied);
    let (b50, b99, bmax) = figures(&timer);
    let (t50, t99, _) = figures(&took);
    println!("  step lateness (event log): p50 {a50:.2} ms, p99 {a99:.2} ms, max {amax:.2} ms");
    println!("  timer alone (baseline):    p50 {b50:.2} ms, p99 {b99:.2} ms, max {bmax:.2} ms");
    println!("  ratio p99 steps / timer:   {:.2}", a99 / b99.max(1e-3));
    println!("  a step's own work:         p50 {t50:.2} ms, p99 {t99:.2} ms");
    println!(
        "  target p99 <= {TARGET_P99_MS} ms: {}",
        if a99 <= TARGET_P99_MS {
            "met"
        } else {
            "MISSED"
        }
    );
    mesh.stop().await;
    Ok(())
}
