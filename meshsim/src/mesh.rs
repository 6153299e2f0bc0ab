//! Running a mesh (`meshsim`, `meshsim serve`, `meshsim up FILE`) and `meshsim down`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use meshsim::{
    datapath::{Datapath, DatapathOptions},
    model::Settings,
    net::{FqSupport, probe_fq},
    runtime::{
        cleanup::remove_leftovers,
        lock,
        netns::{NetnsConfig, NetnsRuntime},
    },
    sim::{Progress, Sim, SimHandle},
    topology_file,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::mpsc,
};

use crate::RunOptions;

pub async fn run(file: Option<PathBuf>, options: RunOptions) -> Result<()> {
    // A bad file stops here, before anything is created.
    let topology = file.as_deref().map(topology_file::read).transpose()?;
    let _lock = lock::acquire()?;
    let removed = remove_leftovers()
        .await
        .context("removing what a previous run left")?;
    if !removed.is_empty() {
        tracing::warn!(
            namespaces = removed.namespaces.len(),
            links = removed.links.len(),
            processes = removed.processes,
            "removed what a previous meshsim left behind (it did not stop cleanly)"
        );
    }
    let fq = match probe_fq().await {
        FqSupport::Available => true,
        FqSupport::Missing => {
            tracing::warn!(
                "this kernel has no sch_fq: links are counted but NOT delayed or rate-limited (`meshsim check`)"
            );
            false
        }
        FqSupport::Unknown(why) => {
            tracing::warn!(
                "could not tell whether this kernel has sch_fq ({why}): delays may not be enforced"
            );
            false
        }
    };
    let dp = Datapath::load(DatapathOptions {
        strict: !options.loose,
        orphan: true,
    })
    .context("loading the classifier")?;
    let config = NetnsConfig {
        addressing: options.subnet,
        node_cmd: options.node_cmd.clone(),
        log_dir: options.log_dir.clone(),
    };
    let runtime = NetnsRuntime::start(config)
        .await
        .context("creating the mesh bridge")?;
    let (sim, task) = Sim::spawn(runtime, dp, Settings::default(), fq)?;

    let result = tokio::select! {
        r = start(&sim, topology) => match r {
            Ok(()) => {
                tracing::info!("running: Ctrl-C (or SIGTERM) stops the mesh and removes everything it made");
                wait_for_stop().await
            }
            Err(e) => Err(e),
        },
        r = wait_for_stop() => r,
    };
    eprintln!("meshsim: stopping, removing the nodes");
    if let Err(e) = sim.shutdown().await {
        tracing::error!("stopping: {e}");
    }
    let _ = task.await;
    result
}

async fn start(sim: &SimHandle, topology: Option<meshsim::model::Topology>) -> Result<()> {
    let Some(topology) = topology else {
        return Ok(());
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Progress>();
    let printer = tokio::spawn(async move {
        let mut shown = 0;
        while let Some(p) = rx.recv().await {
            let step = (p.nodes_total / 10).max(1);
            if p.nodes_done == p.nodes_total || p.nodes_done >= shown + step {
                eprintln!("meshsim: started {}/{} nodes", p.nodes_done, p.nodes_total);
                shown = p.nodes_done;
            }
        }
    });
    sim.load(topology, Some(tx))
        .await
        .context("starting the topology")?;
    let _ = printer.await;
    let state = sim.state().borrow().clone();
    println!(
        "{} nodes, {} links; delays {}",
        state.nodes.len(),
        state.snapshot.links.len(),
        if state.delays_enforced {
            "enforced"
        } else {
            "NOT enforced (no sch_fq)"
        }
    );
    for facts in state.nodes.values().take(20) {
        let links = state
            .snapshot
            .links
            .iter()
            .filter(|l| l.pair.contains(facts.id))
            .count();
        println!("  {:<6} {:<15} {} links", facts.name, facts.ip, links);
    }
    if let Some(second) = state.nodes.values().nth(1) {
        let first = state.nodes.values().next().expect("two nodes");
        println!(
            "try: sudo meshsim exec {} -- ping {}",
            first.name, second.ip
        );
    }
    Ok(())
}

async fn wait_for_stop() -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

pub async fn down() -> Result<()> {
    let _lock = lock::acquire()?;
    let removed = remove_leftovers().await?;
    if removed.is_empty() {
        println!("nothing to remove");
    } else {
        println!(
            "removed {} namespaces, {} links, {} processes",
            removed.namespaces.len(),
            removed.links.len(),
            removed.processes
        );
    }
    Ok(())
}
