//! Matrix events over six Synapse homeservers (examples/mesh6.toml, netns, the real Sim):
//! how long an event takes to reach each server, by hop count, against the path's configured
//! latency; how far behind the origin's own observer is; and what the observers cost the
//! links (nothing: they never cross one). Needs root and the cached Synapse venv, which the
//! first run installs; `cargo xtask bench` runs it.
//!
//! n1's test user sends `MESSAGES` messages into the mesh room, one every `GAP`, through
//! `Matrix::send` (what `POST /api/nodes/n1/messages` calls). The figures are ratios in the
//! same run: delivery over configured path latency, per hop count. Delays are enforced only
//! where the kernel has sch_fq; elsewhere the bench says so and the ratios show Synapse's
//! own processing over an undelayed mesh.
//!
//! Nothing is asserted, but a message that does not reach every server ends the bench with
//! an error.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use meshsim::{
    model::NodeId,
    workload::{
        SynapseOptions,
        matrix::{EventRecord, now_ms},
    },
};
use meshsim_stats::{quantile, sorted};
use meshsim_tests::{
    fixtures::mesh6,
    id,
    mesh::{MeshConfig, MeshLab},
};

const MESSAGES: usize = 100;
const GAP: Duration = Duration::from_millis(200);
/// How long the last message may take to reach every server.
const SETTLE: Duration = Duration::from_secs(120);
/// The idle window in which link traffic is counted.
const IDLE: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<()> {
    let options = SynapseOptions::default();
    let topology = mesh6();
    let config = MeshConfig::synapse(
        &options,
        topology.settings.clone(),
        "meshsim-events-bench-logs",
    )
    .await;
    let mut mesh = MeshLab::start(config).await;
    println!(
        "events bench: 6 Synapse {} nodes (examples/mesh6.toml), {MESSAGES} messages from n1, one every {} ms; delays {}",
        options.version,
        GAP.as_millis(),
        if mesh.fq {
            "enforced (sch_fq)"
        } else {
            "NOT enforced (no sch_fq on this kernel): deliveries are Synapse's processing only"
        }
    );
    let result = run(&mut mesh, &options).await;
    mesh.stop().await;
    result
}

async fn run(mesh: &mut MeshLab, options: &SynapseOptions) -> Result<()> {
    let up = Instant::now();
    mesh.sim.load(mesh6(), None).await?;
    mesh.ready(6, options.start_timeout).await;
    let matrix = mesh.matrix.clone().context("a Matrix view")?;
    let room = loop {
        if let Some(room) = matrix.mesh_room()
            && matrix.members(&room).len() == 6
            && matrix.converged(&room).await
        {
            break room;
        }
        if up.elapsed() > options.start_timeout {
            bail!("the mesh room did not get all 6 nodes");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!(
        "6 nodes ready and in the mesh room {:.1} s after the load",
        up.elapsed().as_secs_f64()
    );

    // What the observers cost the links while nothing happens: they never cross one, so
    // this is Synapse's own federation chatter.
    let before = mesh.sim.counters().await?;
    let syncs_before: u64 = names().map(|n| matrix.syncs(&n)).sum();
    tokio::time::sleep(IDLE).await;
    let after = mesh.sim.counters().await?;
    let syncs_after: u64 = names().map(|n| matrix.syncs(&n)).sum();
    let idle_packets: u64 = after
        .links
        .iter()
        .map(|(k, c)| c.packets - before.links.get(k).map_or(0, |b| b.packets))
        .sum();
    println!(
        "idle {} s: {} syncs returned on the observers, {idle_packets} packets on all links",
        IDLE.as_secs(),
        syncs_after - syncs_before
    );

    let mut sent = Vec::with_capacity(MESSAGES);
    for i in 0..MESSAGES {
        let t = now_ms();
        let s = matrix
            .send("n1", Some(&room), &format!("bench message {i}"))
            .await
            .with_context(|| format!("sending message {i}"))?;
        sent.push((s.event_id, t, now_ms()));
        tokio::time::sleep(GAP).await;
    }
    let deadline = Instant::now() + SETTLE;
    let records = loop {
        let all = matrix.events_since(0, 10_000);
        let by_id: BTreeMap<&str, _> = all.iter().map(|r| (r.id.as_str(), r)).collect();
        let complete = sent
            .iter()
            .all(|(id, _, _)| by_id.get(id.as_str()).is_some_and(|r| r.seen.len() == 6));
        if complete {
            break all;
        }
        if Instant::now() > deadline {
            bail!("not every message reached all 6 servers within {SETTLE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    report(mesh, &sent, &records)
}

fn names() -> impl Iterator<Item = String> {
    (1..=6).map(|i| format!("n{i}"))
}

fn report(mesh: &MeshLab, sent: &[(String, f64, f64)], records: &[EventRecord]) -> Result<()> {
    let state = mesh.sim.state().borrow().clone();
    let latency = |a: NodeId, b: NodeId| {
        state
            .snapshot
            .links
            .iter()
            .find(|l| (l.pair.a(), l.pair.b()) == (a.min(b), a.max(b)))
            .map_or(0.0, |l| l.params.latency_ms)
    };
    let by_id: BTreeMap<&str, _> = records.iter().map(|r| (r.id.as_str(), r)).collect();
    let n1 = id("n1");
    // Hop count -> (configured path ms, deliveries ms).
    let mut by_hops: BTreeMap<usize, (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    let mut lag = Vec::new();
    for (event, _before, returned) in sent {
        let r = by_id[event.as_str()];
        if let Some(at_origin) = r.seen.get("n1") {
            lag.push(at_origin - returned);
        }
        for (node, ms) in r.deliveries() {
            let dst: NodeId = node.parse()?;
            let path = state.routes.path(n1, dst).context("a route from n1")?;
            let configured: f64 = path.windows(2).map(|w| latency(w[0], w[1])).sum();
            let entry = by_hops.entry(path.len() - 1).or_default();
            entry.0.push(configured);
            entry.1.push(ms);
        }
    }
    let lag = sorted(&lag);
    println!(
        "observation lag on the origin (its observer's sighting after the send returned): median {:.1} ms, p95 {:.1} ms",
        quantile(&lag, 0.5),
        quantile(&lag, 0.95)
    );
    println!();
    println!("| hops | deliveries | configured path | median | p95 | max | median / configured |");
    println!("|---|---|---|---|---|---|---|");
    for (hops, (configured, deliveries)) in &by_hops {
        let d = sorted(deliveries);
        let c = quantile(&sorted(configured), 0.5);
        println!(
            "| {hops} | {} | {c:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2} |",
            d.len(),
            quantile(&d, 0.5),
            quantile(&d, 0.95),
            d[d.len() - 1],
            quantile(&d, 0.5) / c
        );
    }
    println!();
    println!("delivery time CDF by hop count (ms at each fraction of deliveries):");
    let fractions = [0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0];
    println!(
        "| hops | {} |",
        fractions
            .iter()
            .map(|f| format!("{:.0} %", f * 100.0))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(fractions.len()));
    for (hops, (_, deliveries)) in &by_hops {
        let d = sorted(deliveries);
        println!(
            "| {hops} | {} |",
            fractions
                .iter()
                .map(|f| format!("{:.0}", quantile(&d, *f)))
                .collect::<Vec<_>>()
                .join(" | ")
        );
    }
    Ok(())
}
