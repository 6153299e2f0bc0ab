//! How many Synapse homeservers fit on this machine (needs root and the cached Synapse venv,
//! which the first run installs; `cargo xtask bench` runs it).
//!
//! The real Sim and netns runtime with `--workload synapse` grow a mesh live, `STEP` nodes at
//! a time through `SimHandle::add_node`. After each step the bench waits until every node is
//! ready (the runtime's own probe on the plain port, and the test user made), then asks every
//! node `GET https://nK:8448/_matrix/federation/v1/version` `PROBES` times from the host, with
//! curl verifying the run's CA as another homeserver would. It stops at the first step where
//! a node is not ready within `READY_BOUND` or answers slower than `LATENCY_LIMIT`, when
//! MemAvailable falls below `MEM_FLOOR`, at `CAP` nodes, or when the next step would pass
//! `BUDGET`. The servers are idle (no rooms): the figure is what idle homeservers cost.
//!
//! `--database sqlite|postgres` (default sqlite) chooses where the homeservers keep their
//! data, `--workers small|full` lays them out with workers (on Postgres); `--launch
//! fork|cold` (default fork) forks one-process homeservers from the run's zygote or starts
//! each cold; `--ksm` lets ksmd merge their pages, and then waits after each step until
//! what ksmd merges has settled (`ksm_settles`) before measuring; `--cap N` stops at N nodes;
//! `--idle SECS` leaves the last step's mesh idle that long and measures it again (what idle
//! homeservers settle to, KSM merging a little more with every scan). A node's
//! memory is its whole process group's proportional set size (a page shared by n processes
//! counts 1/n). MemAvailable used per node is measured from before the runtime started, so
//! the run's Postgres cluster and the zygote count too.
//!
//! Nothing is asserted, but any failure ends the bench with an error. It takes the run lock
//! and removes every `ms-` namespace and interface before and after.

mod common;

use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use common::isolated;
use meshsim::{
    datapath::{Datapath, DatapathOptions},
    model::{NodeId, Settings},
    net::{FqSupport, probe_fq},
    run_config::RunConfig,
    runtime::{
        self,
        ksm::{KSM_DIR, Ksm},
        names::RunPrefix,
        process::{ProcStat, all_pids},
    },
    sim::{Sim, SimHandle},
    workload::{
        NodeState, SynapseOptions, WorkloadKind, WorkloadStatus,
        synapse::{Database, FEDERATION_PORT, Launch, workers::Profile},
    },
};
use tokio::sync::watch;

/// Nodes added per step.
const STEP: usize = 8;
/// Never more nodes than this (`--cap` lowers it).
const CAP: usize = 200;
/// Every node must answer the federation version within this...
const LATENCY_LIMIT: Duration = Duration::from_secs(1);
/// ...this many times in a row.
const PROBES: usize = 3;
/// A probe slower than this counts as no answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a step's new nodes may take to be ready.
const READY_BOUND: Duration = Duration::from_secs(180);
/// How long ksmd may take to settle after a step (`--ksm`)...
const KSM_SETTLE_BOUND: Duration = Duration::from_secs(300);
/// ...settled meaning a full scan added less than this share to the pages it shares.
const KSM_SETTLED: f64 = 0.02;
/// Stop growing when the kernel has less than this available.
const MEM_FLOOR: u64 = 2 << 30;
/// The whole bench, bring-up of the last step included.
const BUDGET: Duration = Duration::from_secs(15 * 60);
/// `--idle`, the wait after the last step before the figures are taken again, at most.
const IDLE_MAX: Duration = Duration::from_secs(60 * 60);
/// Nodes sit on a grid this many px apart, `COLUMNS` to a row: near enough to link.
const SPACING: f64 = 80.0;
const COLUMNS: usize = 8;

/// What the command line chose.
struct Args {
    database: Database,
    workers: Option<Profile>,
    launch: Launch,
    ksm: bool,
    cap: usize,
    idle: Duration,
}

/// `--database sqlite|postgres` and `--cap N`; cargo's own `--bench` is passed through.
fn args() -> Result<Args> {
    let mut parsed = Args {
        database: Database::Sqlite,
        workers: None,
        launch: Launch::Fork,
        ksm: false,
        cap: CAP,
        idle: Duration::ZERO,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database" => {
                parsed.database = match args.next().as_deref() {
                    Some("sqlite") => Database::Sqlite,
                    Some("postgres") => Database::Postgres,
                    other => bail!("--database sqlite|postgres, not {other:?}"),
                }
            }
            "--cap" => {
                parsed.cap = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|n| (STEP..=CAP).contains(n))
                    .with_context(|| format!("--cap takes a number of nodes, {STEP} to {CAP}"))?
            }
            "--workers" => {
                parsed.workers = match args.next().as_deref() {
                    Some("small") => Some(Profile::Small),
                    Some("full") => Some(Profile::Full),
                    other => bail!("--workers small|full, not {other:?}"),
                };
                parsed.database = Database::Postgres;
            }
            "--launch" => {
                parsed.launch = match args.next().as_deref() {
                    Some("fork") => Launch::Fork,
                    Some("cold") => Launch::Cold,
                    other => bail!("--launch fork|cold, not {other:?}"),
                }
            }
            "--ksm" => parsed.ksm = true,
            "--idle" => {
                parsed.idle = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .filter(|&n| n <= IDLE_MAX.as_secs())
                    .map(Duration::from_secs)
                    .with_context(|| format!("--idle takes seconds, 0 to {}", IDLE_MAX.as_secs()))?
            }
            "--bench" => {}
            other => bail!(
                "unknown argument {other:?}: --database sqlite|postgres, --workers small|full, \
                 --launch fork|cold, --ksm, --cap N, --idle SECS"
            ),
        }
    }
    Ok(parsed)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = args()?;
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    println!(
        "synapse bench: the real Sim + netns runtime with a Synapse per node, kernel {}, {cpus} CPUs, {:.1} GiB RAM, {:.1} GiB available",
        kernel.trim(),
        gib(meminfo("MemTotal")?),
        gib(meminfo("MemAvailable")?)
    );
    println!(
        "homeservers on {}{}, {} start{}; growing by {STEP} nodes up to {}; a step passes when every node is ready within {} s and answers https /_matrix/federation/v1/version {PROBES} times within {} s each; stops below {:.0} GiB available or after {} min",
        args.database.name(),
        args.workers
            .map_or(String::new(), |p| format!(" with workers ({})", p.name())),
        if args.workers.is_some() {
            "cold"
        } else {
            args.launch.name()
        },
        if args.ksm { ", KSM on" } else { "" },
        args.cap,
        READY_BOUND.as_secs(),
        LATENCY_LIMIT.as_secs_f64(),
        gib(MEM_FLOOR),
        BUDGET.as_secs() / 60
    );
    let options = SynapseOptions {
        database: args.database,
        workers: args.workers,
        launch: args.launch,
        ..SynapseOptions::default()
    };
    let venv = options.clone();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || venv.prepare(&mut |line: &str| println!("{line}")))
        .await?
        .context("installing Synapse")?;
    println!(
        "synapse {} venv ready in {}",
        options.version,
        secs(started.elapsed())
    );
    isolated(grow(options, args.cap, args.ksm, args.idle)).await
}

/// One row of the table.
struct StepFigures {
    nodes: usize,
    /// `Some` for the figures taken again after the last step, idle this long (`--idle`).
    idle: Option<Duration>,
    /// From the step's first `add_node` to every node ready and answering over TLS.
    to_ready: Duration,
    worst: Duration,
    median: Duration,
    /// Every Synapse's proportional set size (its process group's), MiB.
    pss_mib: Vec<f64>,
    mem_available: u64,
}

/// Why the growth ended.
enum Stop {
    Failed(String),
    Memory,
    Cap,
    Budget,
}

/// Starts the Sim, grows the mesh step by step, prints the table; the Sim is shut down
/// whatever happened.
async fn grow(options: SynapseOptions, cap: usize, ksm: bool, idle: Duration) -> Result<()> {
    // After the leftovers are gone (which puts the host's KSM settings back) and before any
    // process starts; the host's settings come back when this is dropped.
    let _ksm = ksm
        .then(|| Ksm::enable(&RunPrefix::default()))
        .transpose()?;
    let baseline = meminfo("MemAvailable")?;
    let fq = matches!(probe_fq().await, FqSupport::Available);
    let dp = Datapath::load(DatapathOptions {
        fq,
        ..DatapathOptions::default()
    })
    .context("loading the classifier")?;
    let run = RunConfig {
        log_dir: std::env::temp_dir().join("meshsim-synapse-bench-logs"),
        ..RunConfig::default()
    };
    let runtime = runtime::start(&run, &WorkloadKind::Synapse(options.clone()))
        .await
        .context("starting the netns runtime")?;
    let status = runtime.workload_status();
    let (sim, task) = Sim::spawn(runtime, dp, Settings::default())?;
    let ca = options.ca_path();
    let mut result = steps(&sim, status.clone(), &ca, cap, ksm).await;
    if let Ok((rows, stop)) = &mut result
        && !idle.is_zero()
        && !rows.is_empty()
        && !matches!(stop, Stop::Failed(_))
    {
        println!("\nidle for {} after the last step", secs(idle));
        tokio::time::sleep(idle).await;
        let ips = node_ips(&sim);
        let to_ready = rows.last().map_or(Duration::ZERO, |r| r.to_ready);
        match measure(&ca, &ips, &status, ksm, to_ready, Some(idle)).await {
            Ok((row, slow)) => {
                rows.push(row);
                if let Some(why) = slow {
                    *stop = Stop::Failed(why);
                }
            }
            Err(e) => result = Err(e),
        }
    }
    let stopped = sim.shutdown().await;
    let joined = task.await;
    let (rows, stop) = result?;
    stopped.context("shutting the Sim down")?;
    joined.context("the Sim's task")?;
    report(&rows, &stop, baseline)
}

async fn steps(
    sim: &SimHandle,
    mut status: watch::Receiver<WorkloadStatus>,
    ca: &Path,
    cap: usize,
    ksm: bool,
) -> Result<(Vec<StepFigures>, Stop)> {
    let bench = Instant::now();
    let mut rows: Vec<StepFigures> = Vec::new();
    loop {
        let have = rows.last().map_or(0, |r| r.nodes);
        if have + STEP > cap {
            return Ok((rows, Stop::Cap));
        }
        // The next step takes about as long as the last one did, or longer.
        let expected = rows.last().map_or(Duration::ZERO, |r| r.to_ready);
        if bench.elapsed() + expected > BUDGET {
            return Ok((rows, Stop::Budget));
        }
        let nodes = have + STEP;
        println!(
            "\nstep to {nodes} nodes ({} into the bench)",
            secs(bench.elapsed())
        );
        let started = Instant::now();
        for i in have..nodes {
            let (x, y) = grid(i);
            sim.add_node(x, y)
                .await
                .with_context(|| format!("adding node {}", i + 1))?;
        }
        if let Err(why) = all_ready(&mut status, nodes, started).await {
            return Ok((rows, Stop::Failed(why)));
        }
        let ips = node_ips(sim);
        // Ready means the plain port answers; federating means TLS on 8448 answers too.
        let deadline = started + READY_BOUND;
        for (id, ip) in &ips {
            while probe(ca, *id, *ip).await.is_err() {
                if Instant::now() > deadline {
                    let why = format!("{id} never answered over TLS");
                    return Ok((rows, Stop::Failed(why)));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
        let to_ready = started.elapsed();
        println!(
            "  all {nodes} ready and answering over TLS {} after the step began; probing",
            secs(to_ready)
        );
        let (row, slow) = measure(ca, &ips, &status, ksm, to_ready, None).await?;
        let low_memory = row.mem_available < MEM_FLOOR;
        if let Some(why) = slow {
            rows.push(row);
            return Ok((rows, Stop::Failed(why)));
        }
        rows.push(row);
        if low_memory {
            return Ok((rows, Stop::Memory));
        }
    }
}

fn node_ips(sim: &SimHandle) -> BTreeMap<NodeId, Ipv4Addr> {
    sim.state()
        .borrow()
        .nodes
        .iter()
        .map(|(id, facts)| (*id, facts.ip))
        .collect()
}

/// Probes every node `PROBES` times, waits for ksmd to settle (`--ksm`), and takes the
/// memory figures; the second value says which node was too slow, if one was.
async fn measure(
    ca: &Path,
    ips: &BTreeMap<NodeId, Ipv4Addr>,
    status: &watch::Receiver<WorkloadStatus>,
    ksm: bool,
    to_ready: Duration,
    idle: Option<Duration>,
) -> Result<(StepFigures, Option<String>)> {
    let mut latencies = Vec::new();
    let mut slow = None;
    for _ in 0..PROBES {
        for (id, ip) in ips {
            match probe(ca, *id, *ip).await {
                Ok(took) => {
                    if took > LATENCY_LIMIT && slow.is_none() {
                        slow = Some(format!("{id} answered in {}", ms(took)));
                    }
                    latencies.push(took);
                }
                Err(why) => {
                    slow.get_or_insert(format!("{id}: {why}"));
                }
            }
        }
    }
    latencies.sort();
    if ksm {
        ksm_settles().await?;
    }
    // A node's process leads its group: with workers, the group is all of its processes.
    let pids: Vec<u32> = status.borrow().values().filter_map(|s| s.pid).collect();
    let groups = pss_by_group();
    let mut pss_mib: Vec<f64> = pids
        .iter()
        .map(|pid| groups.get(pid).copied().unwrap_or(0) as f64 / 1024.0)
        .collect();
    pss_mib.sort_by(f64::total_cmp);
    let row = StepFigures {
        nodes: ips.len(),
        idle,
        to_ready,
        worst: *latencies.last().context("no probe answered")?,
        median: latencies[latencies.len() / 2],
        pss_mib,
        mem_available: meminfo("MemAvailable")?,
    };
    println!(
        "  version latency p50 {}, worst {}; PSS total {:.0} MiB (median {:.0}, max {:.0} per node); MemAvailable {:.1} GiB",
        ms(row.median),
        ms(row.worst),
        row.pss_mib.iter().sum::<f64>(),
        median(&row.pss_mib),
        row.pss_mib.last().copied().unwrap_or(0.0),
        gib(row.mem_available)
    );
    Ok((row, slow))
}

/// Waits until what ksmd merges has settled: full scans, one after another, until one adds
/// less than `KSM_SETTLED` to the pages shared (a page is merged only on a scan that finds
/// it unchanged since the last, so the first scans after a step keep adding), printing what
/// it shares.
async fn ksm_settles() -> Result<()> {
    let knob = |name: &str| -> Result<u64> {
        let path = format!("{KSM_DIR}/{name}");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        text.trim()
            .parse()
            .with_context(|| format!("{path}: {text:?}"))
    };
    ensure!(
        knob("run")? == 1,
        "--ksm: ksmd is not running ({KSM_DIR}/run is not 1)"
    );
    let started = Instant::now();
    let mut scans = 0;
    let mut sharing = knob("pages_sharing")?;
    loop {
        let scan = knob("full_scans")?;
        while knob("full_scans")? == scan {
            if started.elapsed() > KSM_SETTLE_BOUND {
                println!(
                    "  ksmd had not settled after {} s; measuring anyway",
                    KSM_SETTLE_BOUND.as_secs()
                );
                return report_ksm(started, scans, &knob);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        scans += 1;
        let now = knob("pages_sharing")?;
        let grew = now.saturating_sub(sharing) as f64 / now.max(1) as f64;
        sharing = now;
        if scans >= 2 && grew < KSM_SETTLED {
            return report_ksm(started, scans, &knob);
        }
    }
}

fn report_ksm(started: Instant, scans: u32, knob: &dyn Fn(&str) -> Result<u64>) -> Result<()> {
    let sharing = knob("pages_sharing")?;
    println!(
        "  ksmd: {scans} full scans in {}; {} pages shared by {sharing} mappings ({:.0} MiB saved)",
        secs(started.elapsed()),
        knob("pages_shared")?,
        sharing as f64 * 4096.0 / (1 << 20) as f64
    );
    Ok(())
}

/// Waits until `nodes` nodes are ready, printing progress; why not, if one fails or the bound
/// passes.
async fn all_ready(
    status: &mut watch::Receiver<WorkloadStatus>,
    nodes: usize,
    started: Instant,
) -> Result<(), String> {
    let deadline = tokio::time::Instant::from_std(started + READY_BOUND);
    let mut said = 0;
    loop {
        let now = status.borrow_and_update().clone();
        if let Some((id, why)) = now.iter().find_map(|(id, s)| match &s.state {
            NodeState::Failed(why) => Some((id, why.clone())),
            _ => None,
        }) {
            return Err(format!("{id} failed: {why}"));
        }
        let ready = now.values().filter(|s| s.state == NodeState::Ready).count();
        if ready != said {
            println!(
                "  {ready}/{nodes} ready ({} into the step)",
                secs(started.elapsed())
            );
            said = ready;
        }
        if ready == nodes && now.len() == nodes {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, status.changed())
            .await
            .is_err()
        {
            return Err(format!(
                "only {ready} of {nodes} ready within {} s",
                READY_BOUND.as_secs()
            ));
        }
    }
}

/// Asks `https://<name>:8448/_matrix/federation/v1/version` from the host, verifying the
/// run's CA; curl's own `time_total` (connect, TLS handshake, request, answer).
async fn probe(ca: &Path, id: NodeId, ip: Ipv4Addr) -> Result<Duration, String> {
    let name = id.name();
    let mut cmd = Command::new("curl");
    cmd.args(["--silent", "--show-error", "--output", "/dev/null"])
        .args(["--write-out", "%{http_code} %{time_total}"])
        .arg("--max-time")
        .arg(PROBE_TIMEOUT.as_secs().to_string())
        .arg("--cacert")
        .arg(ca)
        .arg("--resolve")
        .arg(format!("{name}:{FEDERATION_PORT}:{ip}"))
        .arg(format!(
            "https://{name}:{FEDERATION_PORT}/_matrix/federation/v1/version"
        ));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("running curl: {e}"))?;
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, total) = said.split_once(' ').unwrap_or((&said, ""));
    if !out.status.success() || code != "200" {
        return Err(format!(
            "status {code}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    total
        .trim()
        .parse::<f64>()
        .map(Duration::from_secs_f64)
        .map_err(|e| format!("curl's time_total {total:?}: {e}"))
}

/// MemAvailable the run took from `baseline`, per node, MiB.
fn used_per_node(baseline: u64, row: &StepFigures) -> f64 {
    baseline.saturating_sub(row.mem_available) as f64 / (1 << 20) as f64 / row.nodes as f64
}

fn report(rows: &[StepFigures], stop: &Stop, baseline: u64) -> Result<()> {
    ensure!(!rows.is_empty(), "no step passed: {}", describe(stop));
    println!(
        "\n| nodes | all ready + TLS | version p50 | version worst | total PSS | PSS per node (median / max) | MemAvailable | MemAvailable used per node |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.0} MiB | {:.0} / {:.0} MiB | {:.1} GiB | {:.0} MiB |",
            nodes_label(r),
            secs(r.to_ready),
            ms(r.median),
            ms(r.worst),
            r.pss_mib.iter().sum::<f64>(),
            median(&r.pss_mib),
            r.pss_mib.last().copied().unwrap_or(0.0),
            gib(r.mem_available),
            used_per_node(baseline, r)
        );
    }
    let passed = rows.iter().take_while(|r| r.worst <= LATENCY_LIMIT).last();
    let first = &rows[0];
    println!(
        "\nfrom an empty mesh to {} nodes federating (ready, answering over TLS): {}",
        first.nodes,
        secs(first.to_ready)
    );
    match passed {
        Some(last) => {
            let per_node = used_per_node(baseline, last);
            println!(
                "the last step that passed: {} Synapse nodes, every one answering within {} s (worst {}); PSS per node median {:.0} MiB, max {:.0} MiB; MemAvailable used {per_node:.0} MiB per node, so about {:.0} would fit above the {:.0} GiB floor",
                nodes_label(last),
                LATENCY_LIMIT.as_secs_f64(),
                ms(last.worst),
                median(&last.pss_mib),
                last.pss_mib.last().copied().unwrap_or(0.0),
                baseline.saturating_sub(MEM_FLOOR) as f64 / (1 << 20) as f64 / per_node.max(1.0),
                gib(MEM_FLOOR)
            )
        }
        None => println!("no step passed"),
    }
    println!("stopped: {}", describe(stop));
    if let Stop::Failed(_) = stop
        && passed.is_none()
    {
        bail!("no step passed: {}", describe(stop));
    }
    Ok(())
}

/// `48`, or `48, idle 300 s` for the figures taken again after `--idle`.
fn nodes_label(row: &StepFigures) -> String {
    match row.idle {
        Some(idle) => format!("{}, idle {}", row.nodes, secs(idle)),
        None => row.nodes.to_string(),
    }
}

fn describe(stop: &Stop) -> String {
    match stop {
        Stop::Failed(why) => format!("the next step failed ({why})"),
        Stop::Memory => format!("MemAvailable fell below {:.0} GiB", gib(MEM_FLOOR)),
        Stop::Cap => "the cap of nodes".to_owned(),
        Stop::Budget => format!(
            "another step would pass the {} min budget",
            BUDGET.as_secs() / 60
        ),
    }
}

/// Grid position of the `i`th node.
fn grid(i: usize) -> (f64, f64) {
    let (row, col) = (i / COLUMNS, i % COLUMNS);
    (SPACING * (col as f64 + 1.0), SPACING * (row as f64 + 1.0))
}

/// Proportional set size (KiB) summed per process group, over every process of the machine.
fn pss_by_group() -> BTreeMap<u32, u64> {
    let mut groups = BTreeMap::new();
    for pid in all_pids() {
        let group = ProcStat::of(pid).map(|s| s.group);
        // Proportional: a page shared by n processes (forked from the zygote, or merged by
        // KSM) counts 1/n to each.
        let pss = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|s| field_kib(&s, "Pss"));
        if let (Some(group), Some(pss)) = (group, pss) {
            *groups.entry(group).or_insert(0) += pss;
        }
    }
    groups
}

/// Bytes of a /proc/meminfo field.
fn meminfo(field: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    field_kib(&text, field)
        .map(|kib| kib * 1024)
        .with_context(|| format!("no {field} in /proc/meminfo"))
}

/// A `Name:   123 kB` line's number.
fn field_kib(text: &str, field: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn median(sorted: &[f64]) -> f64 {
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}
