//! What a whole mesh costs (needs root; `cargo xtask bench` runs both parts):
//!
//! 1. `host` (the default): the real Sim with the netns runtime brings up 100, then 500 nodes
//!    of a random topology with no workload, then applies three settings changes that rewrite
//!    every link (the last one also moves routes); the figures are the wall times and the
//!    Sim's own `last_apply` split (runtime, datapath map updates, routes).
//! 2. `vm` (`cargo xtask bench` runs it in Debian's 6.1 kernel under qemu, which has netem): a
//!    change of 1000 directed links done meshsim's way (one LINKS map update per link) and, in
//!    the same run, the way matrix-org's meshsim did it: on every node, delete the root qdisc
//!    and rebuild its prio + tbf + netem tree with a destination-MAC filter per peer, one `tc`
//!    process per command. The baseline may use `tc`; the product never does.
//!
//! Choose the part with the first argument (`host` or `vm`) or `MESHSIM_BENCH_PART`. Nothing is
//! asserted, but any failure ends the bench with an error. Both parts take the run lock and
//! remove every `ms-` namespace and interface before and after.

mod common;

use std::{
    f64::consts::PI,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use common::isolated;
use meshsim::{
    datapath::{Datapath, DatapathOptions, LinkShape},
    model::{BandwidthMode, CostMetric, NodeDoc, NodeId, Settings, Topology},
    net::{FqSupport, NetNs, Netlink, probe_fq},
    run_config::RunConfig,
    runtime::{self, names::PREFIX},
    sim::{ApplyTimings, MeshState, Sim, SimHandle},
    workload::WorkloadKind,
};
use meshsim_common::LinkKey;

const PART_ENV: &str = "MESHSIM_BENCH_PART";

#[tokio::main]
async fn main() -> Result<()> {
    match part()? {
        Part::Host => host().await,
        Part::Vm => vm().await,
    }
}

enum Part {
    Host,
    Vm,
}

fn part() -> Result<Part> {
    // `cargo bench` passes `--bench` to harness-less benches; flags are not ours to judge.
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let choice = arg.or_else(|| std::env::var(PART_ENV).ok());
    match choice.as_deref() {
        None | Some("host") => Ok(Part::Host),
        Some("vm") => Ok(Part::Vm),
        Some(other) => bail!("unknown part {other:?}: give `host` (the default) or `vm`"),
    }
}

// ---------------------------------------------------------------------------------------
// Part 1: the host.

const SIZES: [usize; 3] = [100, 500, 2000];
const SEED: u64 = 0x6d65_7368_7369_6d31;
/// How many nodes a node has within reach on average. Well above `neighbours`, so the
/// neighbour cap decides the links and the reach rarely does (except at the canvas edge).
const NODES_WITHIN_REACH: f64 = 16.0;
const TARGET_UP_NODES: usize = 500;
const TARGET_UP: Duration = Duration::from_secs(60);
/// A mesh past one bridge (1,023 ports) must come up within the same minute, and go down in
/// no more time than it took to come up.
const TARGET_LARGE_NODES: usize = 2000;
/// Datapath work for a change of this many link writes...
const TARGET_CHANGE_LINKS: usize = 1000;
/// ...may take this long.
const TARGET_CHANGE: Duration = Duration::from_millis(5);

async fn host() -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "mesh bench, host part: the real Sim + netns runtime, kernel {}, {cpus} CPUs",
        kernel.trim()
    );
    isolated(async {
        let fq = match probe_fq().await {
            FqSupport::Available => true,
            FqSupport::Missing => false,
            FqSupport::Unknown(why) => bail!("cannot tell whether this kernel has sch_fq: {why}"),
        };
        println!(
            "sch_fq: {}",
            if fq {
                "yes (every node port gets fq, as in a real run)"
            } else {
                "no (ports get no fq: delays would not be enforced, bring-up skips that step)"
            }
        );
        let settings = Settings::default();
        println!(
            "topology: random positions (SplitMix64, seed {SEED:#x}) on a square canvas sized so a node has ~{NODES_WITHIN_REACH} others within reach ({:.0} px); default settings (neighbours {}, max latency {} ms, jitter {} ms); no workload",
            reach_px(&settings),
            settings.neighbours,
            settings.max_latency_ms,
            settings.jitter_ms
        );
        let mut up_500 = None;
        let mut change_500 = None;
        let mut large = None;
        for n in SIZES {
            let figures = mesh(n, fq).await.with_context(|| format!("the {n}-node mesh"))?;
            if n == TARGET_UP_NODES {
                up_500 = Some(figures.up);
                change_500 = Some(figures.link_change);
            }
            if n == TARGET_LARGE_NODES {
                large = Some((figures.up, figures.down));
            }
        }
        let (Some(up), Some(change)) = (up_500, change_500) else {
            bail!("no {TARGET_UP_NODES}-node figures")
        };
        println!("\ntargets ({TARGET_UP_NODES}-node mesh):");
        target_line(
            &format!(
                "{TARGET_UP_NODES} nodes up in <= {} s",
                TARGET_UP.as_secs()
            ),
            &secs(up),
            up.as_secs_f64() / TARGET_UP.as_secs_f64(),
            Goal::AtMost,
        );
        let per_target = change.datapath.as_secs_f64() / change.links_written.max(1) as f64
            * TARGET_CHANGE_LINKS as f64;
        target_line(
            &format!(
                "a {TARGET_CHANGE_LINKS}-link change <= {} ms of datapath work",
                TARGET_CHANGE.as_millis()
            ),
            &format!(
                "{} link writes took {}, i.e. {} per {TARGET_CHANGE_LINKS}",
                change.links_written,
                ms(change.datapath),
                ms(Duration::from_secs_f64(per_target))
            ),
            per_target / TARGET_CHANGE.as_secs_f64(),
            Goal::AtMost,
        );
        if let Some((up, down)) = large {
            target_line(
                &format!(
                    "{TARGET_LARGE_NODES} nodes up in <= {} s",
                    TARGET_UP.as_secs()
                ),
                &secs(up),
                up.as_secs_f64() / TARGET_UP.as_secs_f64(),
                Goal::AtMost,
            );
            target_line(
                &format!("{TARGET_LARGE_NODES} nodes down in no more time than up"),
                &format!("{} down, {} up", secs(down), secs(up)),
                down.as_secs_f64() / up.as_secs_f64(),
                Goal::AtMost,
            );
        }
        Ok(())
    })
    .await
}

/// What the targets are judged on.
struct MeshFigures {
    up: Duration,
    down: Duration,
    /// The change that rewrites every link and leaves the routes alone.
    link_change: ApplyTimings,
}

/// Brings up a fresh `n`-node mesh, changes it, and takes it down again, printing as it goes.
/// The Sim is shut down whatever happened.
async fn mesh(n: usize, fq: bool) -> Result<MeshFigures> {
    let dp = Datapath::load(DatapathOptions {
        fq,
        ..DatapathOptions::default()
    })
    .context("loading the classifier")?;
    let runtime = runtime::start(&RunConfig::default(), &WorkloadKind::None)
        .await
        .context("creating the mesh bridge")?;
    let (sim, task) = Sim::spawn(runtime, dp, Settings::default())?;
    let result = measure(&sim, n).await;
    let started = Instant::now();
    let stopped = sim.shutdown().await;
    let joined = task.await;
    let down = started.elapsed();
    let figures = result?;
    stopped.context("shutting the Sim down")?;
    joined.context("the Sim's task")?;
    println!("  down: {} (every node removed)", secs(down));
    Ok(MeshFigures { down, ..figures })
}

async fn measure(sim: &SimHandle, n: usize) -> Result<MeshFigures> {
    let topology = random_topology(n, SEED);
    let started = Instant::now();
    sim.load(topology, None)
        .await
        .context("loading the topology")?;
    let up = started.elapsed();
    let state = sim.state().borrow().clone();
    ensure!(
        state.nodes.len() == n,
        "{} nodes came up, not {n}",
        state.nodes.len()
    );
    let links = state.snapshot.links.len();
    println!(
        "\n{n} nodes, {links} links ({:.2} per node; a pair links only if each is among the other's {} nearest, so the mean stays below that)",
        2.0 * links as f64 / n as f64,
        state.snapshot.settings.neighbours
    );
    let t = state.last_apply;
    println!(
        "  up: {} ({:.1} nodes/s); of it runtime {} (namespaces, veths, addresses, programs{}), datapath {} ({} link writes), routes {} ({} route writes)",
        secs(up),
        n as f64 / up.as_secs_f64(),
        secs(t.runtime),
        if state.delays_enforced { ", fq" } else { "" },
        ms(t.datapath),
        t.links_written,
        secs(t.routes),
        t.routes_written
    );

    let mut settings = state.snapshot.settings.clone();
    settings.jitter_ms += 5.0;
    let link_change = change(
        sim,
        &format!(
            "jitter_ms {} -> {} (every link; costs, so routes, unchanged)",
            state.snapshot.settings.jitter_ms, settings.jitter_ms
        ),
        settings.clone(),
    )
    .await?;
    ensure!(
        link_change.links_written == 2 * links,
        "the jitter change wrote {} directed links, not all {}",
        link_change.links_written,
        2 * links
    );
    let before = settings.latency_scale_pct;
    settings.latency_scale_pct = before * 0.9;
    change(
        sim,
        &format!(
            "latency_scale_pct {before} -> {} (every link's latency; routes recomputed, but scaling every cost alike keeps the paths)",
            settings.latency_scale_pct
        ),
        settings.clone(),
    )
    .await?;
    settings.bandwidth_mode = BandwidthMode::DecayWithDistance;
    settings.cost = CostMetric::Bandwidth;
    change(
        sim,
        "bandwidth_mode fixed -> decay_with_distance, cost latency -> bandwidth (every link's bandwidth; paths now prefer short links)",
        settings,
    )
    .await?;
    Ok(MeshFigures {
        up,
        down: Duration::ZERO,
        link_change,
    })
}

/// Applies `settings`, prints where the time went, and returns it.
async fn change(sim: &SimHandle, what: &str, settings: Settings) -> Result<ApplyTimings> {
    let version = sim.state().borrow().version;
    let started = Instant::now();
    sim.set_settings(settings)
        .await
        .with_context(|| format!("changing {what}"))?;
    let wall = started.elapsed();
    let state: std::sync::Arc<MeshState> = sim.state().borrow().clone();
    ensure!(state.version > version, "changing {what} changed nothing");
    let t = state.last_apply;
    let rest = wall.saturating_sub(t.runtime + t.datapath + t.routes);
    println!("  change {what}:");
    println!(
        "    datapath {} for {} directed link writes ({} per link); routes {} for {} route writes; total wall {} (of it {} in the model: links, Dijkstra, diff, publish)",
        ms(t.datapath),
        t.links_written,
        us(t.datapath / t.links_written.max(1) as u32),
        ms(t.routes),
        t.routes_written,
        ms(wall),
        ms(rest)
    );
    Ok(t)
}

/// The canvas distance at which the default settings stop linking.
fn reach_px(settings: &Settings) -> f64 {
    settings.max_latency_ms * 100.0 / settings.latency_scale_pct
}

/// `n` nodes at random positions on a square whose size gives each node about
/// [`NODES_WITHIN_REACH`] others within reach.
fn random_topology(n: usize, seed: u64) -> Topology {
    let settings = Settings::default();
    let reach = reach_px(&settings);
    let side = (n as f64 * PI * reach * reach / NODES_WITHIN_REACH).sqrt();
    let mut rng = SplitMix64(seed);
    let nodes = (1..=n as u32)
        .map(|id| NodeDoc {
            id: Some(NodeId(id)),
            name: None,
            x: rng.unit() * side,
            y: rng.unit() * side,
        })
        .collect();
    Topology {
        settings,
        nodes,
        pins: Vec::new(),
        ..Topology::default()
    }
}

/// Steele, Lea and Flood's SplitMix64: tiny, seedable, and good enough for node positions.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

// ---------------------------------------------------------------------------------------
// Part 2: the VM.

/// Nodes in the comparison; each shapes its links to `PEERS` others.
const VM_NODES: usize = 200;
const PEERS: usize = 5;
/// meshsim's change is measured this many times (alternating between two settings): under
/// emulation single changes vary several-fold, so the median of many is the figure.
const MAP_ROUNDS: usize = 21;
/// The seed's way takes seconds per node under emulation: stop measuring nodes after this
/// long (counting the untimed set-up of each node's first tree) and extrapolate.
const BASELINE_BUDGET: Duration = Duration::from_secs(300);
/// Measure at least this many nodes, whatever the budget says.
const BASELINE_MIN_NODES: usize = 5;
const TARGET_RATIO: f64 = 300.0;
/// The host's address on the mesh, which the seed's default band matched.
const GATEWAY: &str = "10.77.0.1";
/// tbf's burst as the seed computed it: MTU + 14 (Ethernet header) + 1.
const TBF_BURST: &str = "1515";
const TBF_LIMIT: &str = "10000";

/// A link setting in both worlds' units.
#[derive(Clone, Copy)]
struct Setting {
    latency_ms: u64,
    jitter_ms: u64,
    rate_bps: u64,
    loss_pct: u64,
}

impl Setting {
    fn shape(self) -> LinkShape {
        LinkShape {
            latency: Duration::from_millis(self.latency_ms),
            jitter: Duration::from_millis(self.jitter_ms),
            bandwidth_bytes_per_s: self.rate_bps / 8,
            loss: self.loss_pct as f64 / 100.0,
            ..Default::default()
        }
    }
}

const BEFORE: Setting = Setting {
    latency_ms: 100,
    jitter_ms: 10,
    rate_bps: 512_000,
    loss_pct: 0,
};
const AFTER: Setting = Setting {
    latency_ms: 120,
    jitter_ms: 20,
    rate_bps: 512_000,
    loss_pct: 1,
};

/// One node of the comparison: a namespace whose `eth0` is a veth to the root namespace.
struct VmNode {
    ns: NetNs,
    mac: [u8; 6],
    /// The root-namespace end of the veth.
    port: u32,
}

impl VmNode {
    /// The nodes this one has links to: the next `PEERS` around a ring.
    fn peers(i: usize) -> impl Iterator<Item = usize> {
        (1..=PEERS).map(move |k| (i + k) % VM_NODES)
    }
}

async fn vm() -> Result<()> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "mesh bench, VM part: kernel {}, {cpus} CPUs (`cargo xtask bench` runs this part under qemu with software emulation, TCG)",
        kernel.trim()
    );
    println!(
        "note: under TCG every instruction is emulated, so absolute times are inflated for both columns; the ratio is the figure"
    );
    isolated(async {
        let started = Instant::now();
        let nodes = vm_nodes().await?;
        let links = nodes.len() * PEERS;
        println!(
            "setup: {} namespaces, each eth0 a veth to the root namespace, {PEERS} peers each = {links} directed links ({} to set up, not counted)",
            nodes.len(),
            secs(started.elapsed())
        );
        let map = tokio::task::block_in_place(|| map_change(&nodes))?;
        let seed = tokio::task::block_in_place(|| seed_change(&nodes))?;
        let ratio = seed.as_secs_f64() / map.as_secs_f64();
        println!(
            "\nratio (b)/(a), the seed's time for all {links} links over meshsim's mean change: meshsim is {ratio:.0}x faster"
        );
        target_line(
            &format!("meshsim >= {TARGET_RATIO:.0}x faster than the seed's way"),
            &format!("{ratio:.0}x"),
            ratio / TARGET_RATIO,
            Goal::AtLeast,
        );
        Ok(())
    })
    .await
}

async fn vm_nodes() -> Result<Vec<VmNode>> {
    let root = Netlink::connect()?;
    let mut nodes = Vec::with_capacity(VM_NODES);
    for i in 0..VM_NODES {
        let name = format!("{PREFIX}b{i}");
        let ns = NetNs::create(&name)?;
        let mac = [0x02, 0x6d, 0x62, 0, (i >> 8) as u8, i as u8];
        let port = root.create_veth(&name, "eth0", &ns, Some(mac)).await?;
        root.set_up(port).await?;
        let inside = Netlink::connect_in(&ns)?;
        let eth0 = inside
            .link_by_name("eth0")
            .await?
            .with_context(|| format!("{name} has no eth0"))?;
        inside.set_up(eth0.index).await?;
        nodes.push(VmNode { ns, mac, port });
    }
    Ok(nodes)
}

fn keys(nodes: &[VmNode]) -> Vec<(LinkKey, u32)> {
    let mut keys = Vec::with_capacity(nodes.len() * PEERS);
    for (i, node) in nodes.iter().enumerate() {
        for p in VmNode::peers(i) {
            let key = LinkKey {
                src: node.mac,
                dst: nodes[p].mac,
            };
            keys.push((key, nodes[p].port));
        }
    }
    keys
}

/// (a): every link rewritten by one map update, as the Sim does. Returns the mean change,
/// the statistic the seed's way gets too.
fn map_change(nodes: &[VmNode]) -> Result<Duration> {
    let mut dp = Datapath::load(DatapathOptions::default()).context("loading the classifier")?;
    let keys = keys(nodes);
    let before = BEFORE.shape();
    for (key, port) in &keys {
        dp.upsert_link(*key, *port, &before)?;
    }
    let mut rounds = Vec::with_capacity(MAP_ROUNDS);
    for round in 0..MAP_ROUNDS {
        let shape = if round % 2 == 0 { AFTER } else { BEFORE }.shape();
        let started = Instant::now();
        for (key, port) in &keys {
            dp.upsert_link(*key, *port, &shape)?;
        }
        rounds.push(started.elapsed());
    }
    let first = rounds[0];
    let mean = rounds.iter().sum::<Duration>() / MAP_ROUNDS as u32;
    rounds.sort();
    println!(
        "\n(a) meshsim: {} directed links rewritten by LINKS map updates (Datapath::upsert_link), {MAP_ROUNDS} changes",
        keys.len()
    );
    println!(
        "    mean {} ({} per link); median {}, min {}, max {}; the first change {}",
        ms(mean),
        us(mean / keys.len() as u32),
        ms(rounds[MAP_ROUNDS / 2]),
        ms(rounds[0]),
        ms(rounds[MAP_ROUNDS - 1]),
        ms(first)
    );
    Ok(mean)
}

/// (b): the seed's way. Returns the time for all nodes, extrapolated if the budget ran out.
fn seed_change(nodes: &[VmNode]) -> Result<Duration> {
    let commands_per_node = 4 + 3 * PEERS;
    println!(
        "\n(b) the seed's way (matrix-org/meshsim's clear_hs_peer_health.sh + set_hs_peer_health.sh): per node `tc qdisc del dev eth0 root`, then prio ({} bands) + default sfq band + host filter + {PEERS} x (tbf rate, netem delay/jitter/loss, u32 dst-MAC filter): {commands_per_node} tc processes, one after another, node after node",
        PEERS + 1
    );
    println!("    (generous to the seed: its HTTP request and bash scripts per node are left out)");
    let budget = Instant::now();
    let mut per_node = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        if per_node.len() >= BASELINE_MIN_NODES && budget.elapsed() >= BASELINE_BUDGET {
            break;
        }
        let peers: Vec<&VmNode> = VmNode::peers(i).map(|p| &nodes[p]).collect();
        // The tree before the change, in one untimed `tc -batch`.
        let first = seed_tree(&peers, BEFORE);
        tc_batch(node, &first).with_context(|| format!("building node {i}'s first tree"))?;
        let mut change = vec![args(&["qdisc", "del", "dev", "eth0", "root"])];
        change.extend(seed_tree(&peers, AFTER));
        let started = Instant::now();
        for command in &change {
            tc(node, command).with_context(|| format!("changing node {i}"))?;
        }
        per_node.push(started.elapsed());
        if i == 0 {
            check_seed_tree(node)?;
        }
        if per_node.len() % 10 == 0 {
            eprintln!(
                "    ... {} nodes changed the seed's way ({} so far)",
                per_node.len(),
                secs(budget.elapsed())
            );
        }
    }
    let measured: Duration = per_node.iter().sum();
    let count = per_node.len();
    let mut sorted = per_node.clone();
    sorted.sort();
    println!(
        "    per node: median {}, min {}, max {} ({} per tc process)",
        secs(sorted[count / 2]),
        secs(sorted[0]),
        secs(sorted[count - 1]),
        ms(measured / (count * commands_per_node) as u32)
    );
    if count == nodes.len() {
        println!(
            "    all {count} nodes ({} links): {}",
            count * PEERS,
            secs(measured)
        );
        Ok(measured)
    } else {
        let total = measured.mul_f64(nodes.len() as f64 / count as f64);
        println!(
            "    measured {count} of {} nodes ({} of {} links) in {} (a {}-s budget keeps the VM run short); EXTRAPOLATED to all {} nodes: {}",
            nodes.len(),
            count * PEERS,
            nodes.len() * PEERS,
            secs(measured),
            BASELINE_BUDGET.as_secs(),
            nodes.len(),
            secs(total)
        );
        Ok(total)
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// The seed's tree for one node (without the delete that precedes a change): a prio root
/// with band 1 for the host and one band per peer, each a tbf with a netem child, and a u32
/// filter per peer on the peer's MAC.
fn seed_tree(peers: &[&VmNode], s: Setting) -> Vec<Vec<String>> {
    let bands = (peers.len() + 1).to_string();
    let mut root = args(&[
        "qdisc", "add", "dev", "eth0", "root", "handle", "1:", "prio",
    ]);
    root.extend(args(&["bands", &bands, "priomap"]));
    // The seed's explicit priomap: everything unfiltered goes to band 1.
    root.extend(std::iter::repeat_n("0".to_owned(), 16));
    let mut tree = vec![
        root,
        args(&[
            "qdisc", "add", "dev", "eth0", "parent", "1:1", "handle", "10:", "sfq",
        ]),
        args(&[
            "filter", "add", "dev", "eth0", "protocol", "ip", "parent", "1:", "u32", "match", "ip",
            "dst", GATEWAY, "flowid", "1:1",
        ]),
    ];
    for (i, peer) in peers.iter().enumerate() {
        let band = i + 2;
        let m = peer.mac;
        let mac = format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        );
        tree.push(args(&[
            "qdisc",
            "add",
            "dev",
            "eth0",
            "parent",
            &format!("1:{band}"),
            "handle",
            &format!("{band}0:"),
            "tbf",
            "rate",
            &format!("{}bit", s.rate_bps),
            "burst",
            TBF_BURST,
            "limit",
            TBF_LIMIT,
        ]));
        tree.push(args(&[
            "qdisc",
            "add",
            "dev",
            "eth0",
            "parent",
            &format!("{band}0:1"),
            "handle",
            &format!("{band}1:"),
            "netem",
            "delay",
            &format!("{}ms", s.latency_ms),
            &format!("{}ms", s.jitter_ms),
            "25%",
            "loss",
            &format!("{}%", s.loss_pct),
        ]));
        tree.push(args(&[
            "filter",
            "add",
            "dev",
            "eth0",
            "protocol",
            "ip",
            "parent",
            "1:",
            "u32",
            "match",
            "ether",
            "dst",
            &mac,
            "flowid",
            &format!("1:{band}"),
        ]));
    }
    tree
}

/// One `tc` process inside the node, as the seed's scripts ran it.
fn tc(node: &VmNode, command: &[String]) -> Result<String> {
    let out = node
        .ns
        .command("tc")
        .args(command)
        .stdin(Stdio::null())
        .output()
        .context("starting tc")?;
    if !out.status.success() {
        bail!(
            "`tc {}` in {} failed ({}): {}",
            command.join(" "),
            node.ns.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn tc_batch(node: &VmNode, commands: &[Vec<String>]) -> Result<()> {
    let batch: String = commands.iter().map(|c| c.join(" ") + "\n").collect();
    meshsim_tests::tc::tc_batch(&node.ns, &batch).map_err(|e| anyhow::anyhow!(e))
}

/// The rebuilt tree is the seed's: every band shaped and filtered (checked once, untimed).
fn check_seed_tree(node: &VmNode) -> Result<()> {
    let qdiscs = tc(node, &args(&["qdisc", "show", "dev", "eth0"]))?;
    let filters = tc(node, &args(&["filter", "show", "dev", "eth0"]))?;
    let count = |text: &str, what: &str| text.lines().filter(|l| l.contains(what)).count();
    let found = (
        count(&qdiscs, "qdisc prio 1: root"),
        count(&qdiscs, "qdisc tbf"),
        count(&qdiscs, "qdisc netem"),
        count(&qdiscs, &format!("loss {}%", AFTER.loss_pct)),
        count(&filters, "flowid 1:"),
    );
    ensure!(
        found == (1, PEERS, PEERS, PEERS, PEERS + 1),
        "the rebuilt tree is not the seed's (prio, tbf, netem, netem with the new loss, filters: {found:?}):\n{qdiscs}{filters}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Printing.

/// `ratio` is measured / target; `Goal` says which side of 1 meets it.
fn target_line(what: &str, measured: &str, ratio: f64, goal: Goal) {
    let met = match goal {
        Goal::AtMost => ratio <= 1.0,
        Goal::AtLeast => ratio >= 1.0,
    };
    let verdict = if met { "met" } else { "NOT met" };
    println!("  target {what}: {measured} -> {verdict} (measured/target {ratio:.3})");
}

#[derive(Clone, Copy)]
enum Goal {
    AtMost,
    AtLeast,
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}
