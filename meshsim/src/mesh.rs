//! Running a mesh (`meshsim`, `meshsim serve`, `meshsim up FILE`) and `meshsim down`.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, Result, anyhow, bail};
use meshsim::{
    datapath::{Datapath, DatapathOptions},
    model::{NodeId, Settings, Topology},
    net::{FqSupport, probe_fq},
    run_config::{BackendKind, RunConfig},
    runtime::{self, cleanup::remove_leftovers, docker_watch::DockerLost, lock, names::RunPrefix},
    scenario::{desk::Desk, run::Ports},
    server::{self, Server, ServerOptions},
    sim::{Progress, Sim, SimHandle},
    topology_file::{self, RunTable, TopologyFile},
    workload::{
        NodeWorkload, WorkloadKind, WorkloadStatus, matrix::Matrix, restart::RestartPolicies,
        synapse::Database,
    },
};
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot, watch},
};

use crate::{RunOptions, experiment::Job};

/// How the run is made: the flags, else the topology file's `[run]`, else the defaults.
struct RunChoice {
    backend: BackendKind,
    workload: WorkloadKind,
    image: Option<String>,
}

impl RunChoice {
    fn new(options: &RunOptions, file: &RunTable) -> Result<Self> {
        // `--workload` and `--node-cmd` are one choice: either flag replaces the file's.
        let mut workload = if options.workload.is_some() || options.node_cmd.is_some() {
            WorkloadKind::from_cli(options.workload.as_deref(), options.node_cmd.clone())?
        } else {
            file.workload.clone().unwrap_or_default()
        };
        match (options.node_cmd_as_root, &mut workload) {
            (true, WorkloadKind::Command(command)) => command.as_root = true,
            (true, other) => bail!(
                "--node-cmd-as-root says how a node command runs, but this run's workload is {}: \
                 give the command with --node-cmd (or `node_cmd` in the file's [run] table)",
                other.name()
            ),
            (false, _) => {}
        }
        let backend = options
            .backend
            .map(BackendKind::from)
            .or(file.backend)
            .unwrap_or_default();
        match (options.database.or(file.database), &mut workload) {
            (Some(Database::Sqlite), WorkloadKind::Synapse(synapse))
                if synapse.workers.is_some() =>
            {
                bail!(
                    "workers share one database, so synapse-workers needs postgres (its \
                     default): leave out `--database sqlite`"
                )
            }
            (Some(database), WorkloadKind::Synapse(synapse)) => synapse.database = database,
            (Some(Database::Postgres), other) => bail!(
                "database postgres is for homeservers, but this run's workload is {}: add \
                 `--workload synapse` (or `workload = \"synapse\"` in the file's [run] table)",
                other.name()
            ),
            _ => {}
        }
        match (options.profile.or(file.profile), &mut workload) {
            (Some(profile), WorkloadKind::Synapse(synapse)) if synapse.workers.is_some() => {
                synapse.workers = Some(profile)
            }
            (Some(_), other) => bail!(
                "a profile chooses workers, but this run's workload is {}: use \
                 `--workload synapse-workers`",
                other.name()
            ),
            (None, _) => {}
        }
        match (options.launch.or(file.launch), &mut workload) {
            (Some(launch), WorkloadKind::Synapse(synapse)) => synapse.launch = launch,
            (Some(launch), other) => bail!(
                "--launch {} says how homeservers start, but this run's workload is {}: add \
                 `--workload synapse`",
                launch.name(),
                other.name()
            ),
            (None, _) => {}
        }
        match (options.restart.or(file.restart), &mut workload) {
            (Some(restart), WorkloadKind::Synapse(synapse)) => synapse.restart = restart,
            (Some(restart), other) => bail!(
                "--restart {} says whether homeservers start again, but this run's workload is \
                 {}: add `--workload synapse`",
                restart.name(),
                other.name()
            ),
            (None, _) => {}
        }
        let image = options.image.clone().or_else(|| file.image.clone());
        if image.is_some() && backend == BackendKind::Netns {
            tracing::warn!(
                "an image is given but the backend is netns: the image is ignored (`--backend docker` uses it)"
            );
        }
        Ok(RunChoice {
            backend,
            workload,
            image,
        })
    }
}

/// What a run does once its topology is up.
pub enum Then<'a> {
    /// Serve until Ctrl-C or SIGTERM.
    Serve,
    /// Run a scenario's steps, then stop.
    Scenario(&'a mut Job),
}

pub async fn run(file: Option<PathBuf>, options: RunOptions) -> Result<()> {
    // A bad file stops here, before anything is created.
    let file = file.as_deref().map(topology_file::read_file).transpose()?;
    run_with(file, options, Then::Serve).await
}

/// Runs the mesh of `file` (an empty one for `None`), then does what `then` says.
pub async fn run_with(
    file: Option<TopologyFile>,
    options: RunOptions,
    then: Then<'_>,
) -> Result<()> {
    // An unknown or conflicting workload, or a node asking for another one, stops here,
    // before anything is created.
    let choice = RunChoice::new(
        &options,
        file.as_ref().map_or(&RunTable::default(), |f| &f.run),
    )?;
    let mut workload = choice.workload.clone();
    // Each run's homeservers live under its own directory.
    if let WorkloadKind::Synapse(synapse) = &mut workload {
        synapse.run_dir = options.prefix.run_dir();
        synapse.postgres_dir = options.prefix.postgres_dir();
    }
    if let Then::Scenario(job) = &then
        && job.scenario.needs_matrix()
        && !matches!(workload, WorkloadKind::Synapse(_))
    {
        bail!(
            "{}: its steps send messages or wait for Matrix, so its nodes must run homeservers: \
             add workload = \"synapse\" to its [run] table, or give --workload synapse",
            job.scenario.path.display()
        );
    }
    let node_restarts = file
        .as_ref()
        .map(|f| f.node_restarts.clone())
        .unwrap_or_default();
    if !node_restarts.is_empty() && !matches!(workload, WorkloadKind::Synapse(_)) {
        bail!(
            "nodes of the file say whether their homeserver restarts, but this run's workload \
             is {}: add `--workload synapse`",
            workload.name()
        );
    }
    let topology: Option<Start> = match file {
        Some(file) => {
            let workloads = file.node_workloads(workload.name())?;
            Some((file.topology, workloads))
        }
        None => None,
    };
    let prefix = options.prefix.clone();
    let _lock = lock::acquire(&prefix)?;
    // A taken port stops here too, before anything is created.
    let listener = listen(options.listen, matches!(then, Then::Scenario(_))).await?;
    let removed = remove_leftovers(&prefix)
        .await
        .context("removing what a previous run left")?;
    if !removed.is_empty() {
        tracing::warn!(
            namespaces = removed.namespaces.len(),
            links = removed.links.len(),
            processes = removed.processes,
            containers = removed.containers.len(),
            dirs = ?removed.dirs,
            "removed what a previous meshsim left behind (it did not stop cleanly)"
        );
    }
    // Before any node process is spawned, so that all of them ask to be merged.
    let _ksm = options
        .ksm
        .then(|| runtime::ksm::Ksm::enable(&prefix))
        .transpose()?;
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
        fq,
        debug_log: options.debug_classifier,
    })
    .context("loading the classifier")?;
    let run = RunConfig {
        backend: choice.backend,
        addressing: options.subnet,
        log_dir: options
            .log_dir
            .clone()
            .unwrap_or_else(|| prefix.tmp_dir().join("logs")),
        image: choice.image.clone(),
        prefix: prefix.clone(),
    };
    let runtime = runtime::start(&run, &workload)
        .await
        .with_context(|| format!("starting the {} backend", run.backend))?;
    let restarts = runtime.restarts();
    if let Some(restarts) = &restarts {
        for (&node, &policy) in &node_restarts {
            restarts.set(node, Some(policy));
        }
    }
    let views = Views {
        lost: runtime.lost(),
        matrix: runtime.matrix(),
        workloads: runtime.workload_status(),
        restarts,
    };
    let (sim, task) = Sim::spawn(runtime, dp, Settings::default())?;

    let result = serve_and_run(&sim, listener, topology, &options, views, then).await;
    eprintln!("meshsim: stopping, removing the nodes");
    if let Err(e) = sim.shutdown().await {
        tracing::error!("stopping: {e}");
    }
    let _ = task.await;
    result
}

/// What the server shows beside the Sim's state, taken from the runtime before the Sim owns it.
struct Views {
    /// Set when the backend's nodes went away behind meshsim's back (Docker).
    lost: Option<watch::Receiver<Option<DockerLost>>>,
    matrix: Option<Arc<Matrix>>,
    workloads: watch::Receiver<WorkloadStatus>,
    restarts: Option<RestartPolicies>,
}

/// A topology to start, with what its nodes run.
type Start = (Topology, BTreeMap<NodeId, NodeWorkload>);

/// Serves the canvas and the API while the mesh runs; the server stops first on the way
/// out, so no client changes the mesh while it is being removed.
async fn serve_and_run(
    sim: &SimHandle,
    listener: TcpListener,
    topology: Option<Start>,
    options: &RunOptions,
    views: Views,
    then: Then<'_>,
) -> Result<()> {
    let ports = Ports {
        sim: sim.clone(),
        matrix: views.matrix.clone(),
        workloads: views.workloads.clone(),
    };
    let desk = match &then {
        Then::Scenario(job) => Arc::clone(&job.desk),
        Then::Serve => Desk::new(),
    };
    let server_options = ServerOptions {
        token: options.token.clone(),
        matrix: views.matrix,
        workloads: Some(views.workloads),
        restarts: views.restarts,
        desk,
        results_dir: options.prefix.tmp_dir().join("scenarios"),
        version: crate::version(),
        ..ServerOptions::default()
    };
    let server = Server::new(listener, sim.clone(), server_options)
        .await
        .context("starting the server")?;
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let mut serving = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    // A wildcard address is no place to browse to; this host's loopback is one of its names.
    let shown = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    eprintln!(
        "meshsim: the canvas is on http://{shown}/{}",
        if options.token.is_some() {
            "?token=<your token>"
        } else {
            ""
        }
    );

    // One pair of listeners for the whole run: a signal that arrives between two listeners
    // (say, right after "running:" is printed) would otherwise be lost.
    let mut stop_signals = StopSignals::new()?;
    let mut lost = views.lost;
    let result = tokio::select! {
        r = start(sim, topology) => match (r, then) {
            (Ok(()), Then::Serve) => {
                tracing::info!("running: Ctrl-C (or SIGTERM) stops the mesh and removes everything it made");
                tokio::select! {
                    () = stop_signals.wait() => Ok(()),
                    r = &mut serving => server_ended(r),
                    why = backend_lost(&mut lost, &options.prefix) => Err(why),
                }
            }
            (Ok(()), Then::Scenario(job)) => tokio::select! {
                r = job.run(ports, &mut stop_signals) => r,
                r = &mut serving => server_ended(r),
                why = backend_lost(&mut lost, &options.prefix) => Err(why),
            },
            (Err(e), _) => Err(e),
        },
        () = stop_signals.wait() => Ok(()),
        r = &mut serving => server_ended(r),
        why = backend_lost(&mut lost, &options.prefix) => Err(why),
    };
    let _ = stop.send(());
    if !serving.is_finished() {
        match tokio::time::timeout(Duration::from_secs(5), &mut serving).await {
            Ok(r) => {
                if let Err(e) = server_ended(r) {
                    tracing::warn!("stopping the server: {e:#}");
                }
            }
            Err(_) => {
                tracing::warn!("the server did not stop within 5 s; closing it");
                serving.abort();
            }
        }
    }
    result
}

/// Waits until the backend's nodes went away behind meshsim's back, and says so; never
/// returns for a backend that cannot lose them.
async fn backend_lost(
    lost: &mut Option<watch::Receiver<Option<DockerLost>>>,
    prefix: &RunPrefix,
) -> anyhow::Error {
    let Some(rx) = lost else {
        return std::future::pending().await;
    };
    let why = match rx.wait_for(Option::is_some).await {
        Ok(why) => why.clone().expect("waited for Some"),
        Err(_) => return std::future::pending().await,
    };
    eprintln!("meshsim: {why}: stopping the run and removing what it made");
    let hint = if why == DockerLost::Gone {
        let down = if prefix.is_default() {
            "sudo meshsim down".to_owned()
        } else {
            format!("sudo meshsim down --prefix {prefix}")
        };
        format!("; once dockerd runs again, `{down}` removes the containers and network left")
    } else {
        String::new()
    };
    anyhow!("the run stopped: {why}{hint}")
}

/// The server task ends only when asked to, or when serving failed.
fn server_ended(r: Result<Result<(), server::ServerError>, tokio::task::JoinError>) -> Result<()> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e).context("the HTTP server stopped"),
        Err(e) => Err(anyhow!("the HTTP server task failed: {e}")),
    }
}

async fn start(sim: &SimHandle, topology: Option<Start>) -> Result<()> {
    let Some((topology, workloads)) = topology else {
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
    sim.load_running(topology, workloads, Some(tx))
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
        let runs = meshsim::workload::node_workload_name(facts.workload, state.run.workload);
        println!(
            "  {:<6} {:<15} {} links, runs {runs}",
            facts.name, facts.ip, links
        );
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

/// SIGTERM and SIGINT, listened for from the start of a run.
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<Self> {
        Ok(StopSignals {
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("listening for SIGINT")?,
        })
    }

    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Binds the server's address: the one given, else the default; a headless run (`meshsim
/// run`) whose default port is taken (by another run, say) takes a free one instead.
async fn listen(given: Option<SocketAddr>, headless: bool) -> Result<TcpListener> {
    let default: SocketAddr = server::DEFAULT_LISTEN
        .parse()
        .expect("the default listen address parses");
    match (given, server::bind(given.unwrap_or(default)).await) {
        (_, Ok(listener)) => Ok(listener),
        (None, Err(e)) if headless => {
            tracing::warn!("{e}: the canvas is on a free port instead");
            Ok(server::bind(SocketAddr::new(default.ip(), 0)).await?)
        }
        (_, Err(e)) => Err(e.into()),
    }
}

/// `meshsim down`: the leftovers of the run `prefix`, or of every run that is not running.
pub async fn down(prefix: &RunPrefix, all: bool) -> Result<()> {
    let prefixes = if all {
        RunPrefix::known()
    } else {
        vec![prefix.clone()]
    };
    let mut failed = None;
    for prefix in &prefixes {
        let _lock = match lock::acquire(prefix) {
            Ok(lock) => lock,
            Err(lock::LockError::Held(_)) if all => {
                println!("{prefix}: running, left alone");
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        match remove_leftovers(prefix).await {
            Ok(removed) => {
                let label = if all || !prefix.is_default() {
                    format!("{prefix}: ")
                } else {
                    String::new()
                };
                if removed.is_empty() {
                    println!("{label}nothing to remove");
                } else {
                    println!(
                        "{label}removed {} namespaces, {} links, {} processes, {} containers, {} networks{}{}",
                        removed.namespaces.len(),
                        removed.links.len(),
                        removed.processes,
                        removed.containers.len(),
                        removed.networks.len(),
                        removed
                            .dirs
                            .iter()
                            .map(|d| format!(", {}", d.display()))
                            .collect::<String>(),
                        if removed.ksm_restored {
                            "; the host's KSM settings are back"
                        } else {
                            ""
                        }
                    );
                }
            }
            Err(e) => {
                eprintln!("meshsim: {prefix}: {e}");
                failed.get_or_insert(anyhow!("removing the leftovers of {prefix} failed: {e}"));
            }
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
