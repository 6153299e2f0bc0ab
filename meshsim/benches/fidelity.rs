//! The fidelity report (issue 6): how close a link shaped by meshsim's classifier comes to
//! what was configured, next to the same link shaped by `tc netem`, both measured in one run.
//!
//! It needs sch_fq and sch_netem, so it runs in the VM: `cargo xtask fidelity` builds it, boots
//! Debian's kernel under qemu, runs it there and copies the report out. By hand (as root, on a
//! kernel with both modules):
//! `fidelity [OUT_DIR] [--host=TEXT] [--progress=FILE] [--quick] [--only=SECTION,...]`; it
//! writes `OUT_DIR/fidelity.md` and `OUT_DIR/fidelity.png` and prints the tables.
//!
//! One lab (tests/support: node namespaces on a bridge inside a hub namespace) holds every link.
//! Five pairs of nodes have the classifier and fq on their bridge ports ("meshsim"); one pair has
//! no classifier and `netem` as the root qdisc of its ports ("netem": the baseline may use `tc`,
//! the product never does); one pair has neither (the unshaped path). Both shapers act at the
//! same spot, egress of the destination's bridge port, both directions alike. What is measured,
//! and how:
//!
//! - delay: UDP probes carrying a sequence number and the sender's `CLOCK_REALTIME`, timed by
//!   the kernel on arrival (`SO_TIMESTAMPNS`, realtime too: the VM has one clock for every
//!   namespace), so the receiving thread's wake-up is left out. Each case runs meshsim, netem
//!   and the unshaped pair at once, and the unshaped path's own delay is subtracted; ping's
//!   average RTT is a cross-check. Senders are pinned to a CPU each, so the host path does not
//!   reorder (the unshaped pair shows that);
//! - jitter: the same probes over 50 ms ± 10 ms for normal, uniform and pareto. meshsim's
//!   default jitter is a correlated process (correlation time T), so a probe stream on one link
//!   gives only about duration / T independent samples: four meshsim links run at once (their
//!   processes are independent) to pool more, beside one link in independent mode and netem;
//! - TCP goodput: payload the receiver acknowledged (cumulatively or selectively, from the
//!   senders' TCP_INFO) over a window after a warm-up, against the payload share of the rate;
//! - loss: UDP packets sent minus received, against the exact binomial 99% interval;
//! - cost: busy CPU of the VM (wall × CPUs − idle) and tick-sampled softirq per packet, at a
//!   fixed rate, against the unshaped pair;
//! - reconfiguration: a UDP flow runs while the link is changed 10,000 times.
//!
//! The VM runs under software emulation (TCG): its timers are much coarser than real hardware's
//! and its CPU is slow. Both columns come from the same run, so they share that.

#[path = "../tests/support/mod.rs"]
mod support;

use std::{
    fmt::Write as _,
    fs,
    io::{ErrorKind, IoSliceMut, Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use meshsim::datapath::{Datapath, LinkShape, tables::normal_cdf};
use meshsim_common::{JitterDist, LinkCounters, LinkKey};
use nix::{
    errno::Errno,
    sched::{CpuSet, sched_setaffinity},
    sys::{
        socket::{ControlMessageOwned, MsgFlags, recvmsg, setsockopt, sockopt::ReceiveTimestampns},
        time::TimeSpec,
    },
    time::{ClockId, clock_gettime},
    unistd::Pid,
};
use plotters::prelude::*;
use support::{Lab, Node};

/// Five meshsim pairs, one netem pair and one unshaped pair (node indices in the lab).
const MESHSIM: [(usize, usize); 5] = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)];
const NETEM: (usize, usize) = (10, 11);
/// Neither classifier nor qdisc: its probes run beside the shaped ones and give the path's
/// own delay at the same moment, which is subtracted.
const CONTROL: (usize, usize) = (12, 13);
const NODES: usize = 14;
/// The meshsim pair used where one is enough, and the one run in independent-jitter mode.
const MAIN: (usize, usize) = MESHSIM[0];
const INDEPENDENT: (usize, usize) = MESHSIM[4];
const CORRELATED: [(usize, usize); 4] = [MESHSIM[0], MESHSIM[1], MESHSIM[2], MESHSIM[3]];

const DELAYS_MS: [u64; 4] = [1, 10, 50, 200];
const DELAY_PROBES: u64 = 1000;
const DELAY_GAP: Duration = Duration::from_millis(5);
const PINGS: u32 = 20;

const JITTER_LATENCY: Duration = Duration::from_millis(50);
const JITTER: Duration = Duration::from_millis(10);
const JITTER_SECONDS: u64 = 60;
/// Pareto's correlation time is 4 × normal's (the classifier's minimum for heavy tails), so its
/// probes run longer to keep some of the effective samples.
const JITTER_SECONDS_PARETO: u64 = 120;
const JITTER_GAP: Duration = Duration::from_millis(10);
const REORDER_PROBES: u64 = 10_000;
const REORDER_GAP: Duration = Duration::from_millis(1);

const TCP_LATENCY: Duration = Duration::from_millis(50);
const TCP_LATENCY_RATES: [u64; 2] = [10_000_000, 100_000_000];
const RATES: [u64; 4] = [64_000, 1_000_000, 10_000_000, 100_000_000];
const FLOWS: [usize; 2] = [1, 8];
const TCP_WARMUP: Duration = Duration::from_secs(4);
const TCP_WINDOW: Duration = Duration::from_secs(6);
/// At 64 kbit/s a frame takes 190 ms: a longer window keeps the count's granularity small.
const SLOW_RATE: u64 = 100_000;
const SLOW_TCP_WINDOW: Duration = Duration::from_secs(12);
/// TCP payload per full frame: 1514 bytes on the wire (Ethernet 14, IPv4 20, TCP 20 + 12 of
/// timestamps) carry 1448.
const PAYLOAD_SHARE: f64 = 1448.0 / 1514.0;

const LOSSES: [f64; 3] = [0.01, 0.10, 0.40];
const LOSS_PACKETS: u64 = 20_000;
const LOSS_GAP: Duration = Duration::from_micros(500);

const COST_PPS: u64 = 2000;
const COST_TICK: Duration = Duration::from_millis(10);
const COST_SECONDS: u64 = 5;
/// Rounds of the three cost cases, interleaved; each case's median round is reported.
const COST_ROUNDS: usize = 5;
const COST_LATENCY: Duration = Duration::from_millis(10);

const CHANGES: usize = 10_000;
/// `--quick` divides every count and duration by this: a smoke run, not a report.
const QUICK_DIVISOR: u64 = 10;
static QUICK: AtomicBool = AtomicBool::new(false);
const TC_PROCESS_CHANGES: usize = 50;
const RECONF_GAP: Duration = Duration::from_millis(1);
/// meshsim's changes are spread over this much time.
const RECONF_SPAN: Duration = Duration::from_secs(5);

/// Where netem's distribution tables may be (iproute2's TC_LIB_DIR; Debian puts them under
/// the multiarch directory).
const TC_LIB_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/tc",
    "/usr/lib/aarch64-linux-gnu/tc",
    "/usr/lib/tc",
    "/usr/lib64/tc",
    "/usr/share/tc",
];
/// netem's tables hold the jitter multiple times this (`NETEM_DIST_SCALE`).
const NETEM_DIST_SCALE: f64 = 8192.0;

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse()?;
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let progress = Progress::new(args.progress.as_deref())?;
    let mut lab = Lab::new(NODES, true).await;
    for &(a, b) in &MESHSIM {
        lab.link(a, b, &LinkShape::default()).await;
    }
    // The netem and the unshaped pairs: no classifier on their ports, routes of their own;
    // the unshaped pair's ports get back the kernel's default qdisc (veth: none).
    let ports: Vec<u32> = [NETEM.0, NETEM.1, CONTROL.0, CONTROL.1]
        .iter()
        .map(|&n| lab.nodes[n].port)
        .collect();
    let dp = &mut lab.dp;
    lab.hub
        .run(|| ports.iter().try_for_each(|&p| dp.detach_egress(p)))??;
    for &port in &ports[2..] {
        lab.hub_nl.delete_root_qdisc(port).await?;
    }
    for (a, b) in [NETEM, CONTROL] {
        lab.route(a, b, b).await;
        lab.route(b, a, a).await;
    }
    let mut b = Bench {
        lab,
        progress,
        table: netem_table("pareto")?,
        lateness: None,
    };
    b.say(format_args!("lab of {NODES} nodes ready"));
    let mut report = Report {
        facts: facts(&args.host),
        delay: Vec::new(),
        jitter: Vec::new(),
        reorder: None,
        tcp_latency: Vec::new(),
        rate: Vec::new(),
        loss: Vec::new(),
        cost: Vec::new(),
        classifier_ns: None,
        reconf: Vec::new(),
    };
    if args.wants("delay") {
        report.delay = b.delays().await?;
    }
    if args.wants("jitter") {
        report.jitter = b.jitters().await?;
    }
    if args.wants("reorder") {
        report.reorder = Some(b.reordering().await?);
    }
    if args.wants("tcp") {
        report.tcp_latency = b.tcp_rows(TCP_LATENCY, &TCP_LATENCY_RATES).await?;
    }
    if args.wants("rate") {
        report.rate = b.tcp_rows(Duration::ZERO, &RATES).await?;
    }
    if args.wants("loss") {
        report.loss = b.losses().await?;
    }
    if args.wants("cost") {
        (report.cost, report.classifier_ns) = b.costs().await?;
    }
    if args.wants("reconf") {
        report.reconf = b.reconfiguration().await?;
    }
    let markdown = report.markdown(b.progress.started.elapsed());
    print!("{markdown}");
    let md = args.out.join("fidelity.md");
    fs::write(&md, &markdown).with_context(|| format!("writing {}", md.display()))?;
    if report.jitter.is_empty() {
        b.say(format_args!("wrote {} (no jitter, no plot)", md.display()));
    } else {
        let png = args.out.join("fidelity.png");
        plot(&png, &report.jitter, &b.table)?;
        b.say(format_args!("wrote {} and {}", md.display(), png.display()));
    }
    Ok(())
}

/// The report's sections, in order; `--only=a,b` runs some of them.
const SECTIONS: [&str; 8] = [
    "delay", "jitter", "reorder", "tcp", "rate", "loss", "cost", "reconf",
];

struct Args {
    out: PathBuf,
    host: Option<String>,
    progress: Option<PathBuf>,
    only: Option<Vec<String>>,
}

impl Args {
    fn parse() -> Result<Args> {
        let mut args = Args {
            out: PathBuf::from("target/vm/fidelity"),
            host: None,
            progress: None,
            only: None,
        };
        for a in std::env::args().skip(1) {
            if let Some(v) = a.strip_prefix("--host=") {
                args.host = Some(v.to_owned());
            } else if let Some(v) = a.strip_prefix("--progress=") {
                args.progress = Some(PathBuf::from(v));
            } else if let Some(v) = a.strip_prefix("--only=") {
                let only: Vec<String> = v.split(',').map(str::to_owned).collect();
                if let Some(bad) = only.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
                    bail!("unknown section {bad:?}: the sections are {SECTIONS:?}");
                }
                args.only = Some(only);
            } else if a == "--quick" {
                QUICK.store(true, Ordering::Relaxed);
            } else if a.starts_with("--") {
                // `cargo bench` passes `--bench` to benches without a harness.
            } else {
                args.out = PathBuf::from(a);
            }
        }
        Ok(args)
    }

    fn wants(&self, section: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|s| s == section))
    }
}

/// Progress lines with the elapsed time: to a file when given (xtask shows it while the VM
/// runs), else to stderr.
struct Progress {
    started: Instant,
    file: Option<Mutex<fs::File>>,
}

impl Progress {
    fn new(path: Option<&Path>) -> Result<Progress> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
            )),
            None => None,
        };
        Ok(Progress {
            started: Instant::now(),
            file,
        })
    }
}

fn progress_line(p: &Progress, message: std::fmt::Arguments) {
    let line = format!("[{:>4.0} s] {message}\n", p.started.elapsed().as_secs_f64());
    match &p.file {
        Some(f) => {
            let mut f = f.lock().unwrap_or_else(|e| e.into_inner());
            let _ = f.write_all(line.as_bytes());
            let _ = f.flush();
        }
        None => eprint!("{line}"),
    }
}

/// One link setting, applied the same way to either shaper.
#[derive(Clone, Copy, Debug)]
struct Spec {
    latency: Duration,
    jitter: Duration,
    dist: JitterDist,
    /// meshsim only: the default time-correlated jitter, or independent samples.
    correlated: bool,
    rate_bps: u64,
    loss: f64,
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            dist: JitterDist::Normal,
            correlated: true,
            rate_bps: 0,
            loss: 0.0,
        }
    }
}

impl Spec {
    fn shape(&self) -> LinkShape {
        LinkShape {
            latency: self.latency,
            jitter: self.jitter,
            jitter_dist: self.dist,
            jitter_correlation: if self.correlated {
                LinkShape::default().jitter_correlation
            } else {
                None
            },
            rate_bytes_per_s: self.rate_bps / 8,
            loss: self.loss,
            queue: None,
        }
    }

    /// `netem ...` arguments. netem's own packet limit (1000) stays: it is never what limits
    /// these cases, since TCP's GSO packets count as one each.
    fn netem_args(&self) -> Vec<String> {
        let mut v = vec!["netem".to_owned()];
        if !self.latency.is_zero() || !self.jitter.is_zero() {
            v.push("delay".into());
            v.push(format!("{}us", self.latency.as_micros()));
            if !self.jitter.is_zero() {
                v.push(format!("{}us", self.jitter.as_micros()));
                match self.dist {
                    // netem's jitter without a table is uniform over ± jitter.
                    JitterDist::Uniform => {}
                    JitterDist::Normal => v.extend(["distribution".into(), "normal".into()]),
                    JitterDist::Pareto => v.extend(["distribution".into(), "pareto".into()]),
                    JitterDist::ParetoNormal => {
                        v.extend(["distribution".into(), "paretonormal".into()])
                    }
                }
            }
        }
        if self.rate_bps > 0 {
            v.push("rate".into());
            v.push(format!("{}bit", self.rate_bps));
        }
        if self.loss > 0.0 {
            v.extend(["loss".into(), "random".into()]);
            v.push(format!("{}%", self.loss * 100.0));
        }
        v
    }
}

struct Bench {
    lab: Lab,
    progress: Progress,
    /// netem's pareto table, standardised (jitter multiples), sorted.
    table: Vec<f64>,
    /// What the VM's timers add to a held packet, per shaper, from the fixed-delay case at the
    /// jitter cases' latency.
    lateness: Option<Lateness>,
}

/// Delays of a fixed-delay link beyond the configured delay and the unshaped path's median
/// (ms): the lateness of the timer that releases a held packet, which under emulation is
/// hundreds of microseconds and smears every sharp edge of a jitter distribution.
struct Lateness {
    meshsim: Vec<f64>,
    netem: Vec<f64>,
}

/// At most this many quantiles of the lateness go into the folded CDF.
const LATENESS_POINTS: usize = 200;

impl Lateness {
    fn of(p: &Probed, configured_ms: f64, base: &Base) -> Vec<f64> {
        let late = sorted(
            &p.delays_ms
                .iter()
                .map(|d| d - configured_ms - base.p50_ms)
                .collect::<Vec<_>>(),
        );
        let n = late.len().min(LATENESS_POINTS);
        (0..n)
            .map(|i| quantile(&late, (i as f64 + 0.5) / n as f64))
            .collect()
    }
}

impl Bench {
    fn say(&self, message: std::fmt::Arguments) {
        progress_line(&self.progress, message);
    }

    /// `probe` on this lab's nodes, saying when the kernel left probes unstamped.
    fn probe(&self, flows: &[Flow]) -> Result<Vec<Probed>> {
        let r = probe(&self.lab.nodes, flows, None)?;
        let unstamped: u64 = r.iter().map(|p| p.unstamped).sum();
        if unstamped > 0 {
            self.say(format_args!(
                "  note: {unstamped} probes had no kernel receive timestamp (stamped when read)"
            ));
        }
        Ok(r)
    }

    async fn meshsim(&mut self, (a, b): (usize, usize), spec: &Spec) {
        self.lab.link(a, b, &spec.shape()).await;
    }

    fn port_name(&self, node: usize) -> String {
        // tests/support names the bridge-side veth of node i `p{i+1}`.
        format!("p{}", node + 1)
    }

    fn tc(&self, args: &[String]) -> Result<()> {
        let out = self
            .lab
            .hub
            .command("tc")
            .args(args)
            .output()
            .context("running tc")?;
        ensure!(
            out.status.success(),
            "tc {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(())
    }

    /// Puts netem with `spec` on both ports of the netem pair; `None` removes it (unshaped).
    /// Always starts from an empty qdisc, so nothing a previous case queued is left.
    fn netem(&self, spec: Option<&Spec>) -> Result<()> {
        for node in [NETEM.0, NETEM.1] {
            let dev = self.port_name(node);
            let _ = self.tc(&["qdisc", "del", "dev", dev.as_str(), "root"].map(String::from));
            if let Some(spec) = spec {
                let mut args = ["qdisc", "add", "dev", dev.as_str(), "root"]
                    .map(String::from)
                    .to_vec();
                args.extend(spec.netem_args());
                self.tc(&args)?;
            }
        }
        Ok(())
    }

    async fn delays(&mut self) -> Result<Vec<DelayRow>> {
        let mut rows = Vec::new();
        for ms in DELAYS_MS {
            let spec = Spec {
                latency: Duration::from_millis(ms),
                ..Default::default()
            };
            self.meshsim(MAIN, &spec).await;
            self.netem(Some(&spec))?;
            let flows = [MAIN, NETEM, CONTROL].map(|pair| {
                let mut f = Flow::new(pair, 5001, scaled(DELAY_PROBES), DELAY_GAP);
                f.drain = spec.latency + Duration::from_millis(500);
                f
            });
            let r = self.probe(&flows)?;
            let control = Base::of(&r[2])?;
            if Duration::from_millis(ms) == JITTER_LATENCY {
                self.lateness = Some(Lateness {
                    meshsim: Lateness::of(&r[0], ms as f64, &control),
                    netem: Lateness::of(&r[1], ms as f64, &control),
                });
            }
            let figures = |p: &Probed, pair| -> Result<DelayFigures> {
                let s = sorted(&p.delays_ms);
                ensure!(s.len() > 10, "only {} probes arrived at {ms} ms", s.len());
                let err = |q: f64, base: f64| (quantile(&s, q) - base - ms as f64) * 1e3;
                Ok(DelayFigures {
                    p50_err_us: err(0.5, control.p50_ms),
                    p99_err_us: err(0.99, control.p99_ms),
                    ping_rtt_ms: ping_avg(&self.lab, pair),
                })
            };
            let row = DelayRow {
                configured_ms: ms,
                meshsim: figures(&r[0], MAIN)?,
                netem: figures(&r[1], NETEM)?,
                control,
            };
            self.say(format_args!(
                "delay {ms} ms: error p50/p99 meshsim {:+.0}/{:+.0} us, netem {:+.0}/{:+.0} us (unshaped p50 {:.0} us, p99 {:.0} us)",
                row.meshsim.p50_err_us,
                row.meshsim.p99_err_us,
                row.netem.p50_err_us,
                row.netem.p99_err_us,
                row.control.p50_ms * 1e3,
                row.control.p99_ms * 1e3,
            ));
            rows.push(row);
        }
        Ok(rows)
    }

    async fn jitters(&mut self) -> Result<Vec<JitterCase>> {
        let mut cases = Vec::new();
        for dist in [JitterDist::Normal, JitterDist::Uniform, JitterDist::Pareto] {
            let spec = Spec {
                latency: JITTER_LATENCY,
                jitter: JITTER,
                dist,
                ..Default::default()
            };
            for pair in CORRELATED {
                self.meshsim(pair, &spec).await;
            }
            let independent = Spec {
                correlated: false,
                ..spec
            };
            self.meshsim(INDEPENDENT, &independent).await;
            self.netem(Some(&spec))?;
            let seconds = scaled(jitter_seconds(dist));
            let count = seconds * 1000 / JITTER_GAP.as_millis() as u64;
            self.say(format_args!(
                "jitter {}: {} s of probes on {} meshsim links (correlated), 1 (independent), netem and the unshaped pair, at once",
                dist_name(dist),
                seconds,
                CORRELATED.len()
            ));
            let flows: Vec<Flow> = CORRELATED
                .iter()
                .chain([&INDEPENDENT, &NETEM, &CONTROL])
                .map(|&pair| {
                    let mut f = Flow::new(pair, 5002, count, JITTER_GAP);
                    f.drain = Duration::from_secs(1);
                    f
                })
                .collect();
            let mut results = self.probe(&flows)?;
            let control = Base::of(&results.pop().context("unshaped flow")?)?;
            let netem = results.pop().context("netem flow")?;
            let indep = results.pop().context("independent flow")?;
            let correlation = spec.shape().to_params(0).jitter_corr_ns as f64 / 1e9;
            let reference = |shaper: Shaper| Reference::new(dist, shaper, &self.table);
            let mut corr = Probed::default();
            for r in results {
                corr.merge(r);
            }
            let late = |shaper: Shaper| {
                self.lateness.as_ref().map(|l| match shaper {
                    Shaper::Meshsim => l.meshsim.as_slice(),
                    Shaper::Netem => l.netem.as_slice(),
                })
            };
            let case = JitterCase {
                dist,
                rows: vec![
                    JitterFigures::new(
                        "meshsim default (correlated)",
                        &corr,
                        &control,
                        reference(Shaper::Meshsim),
                        Some((CORRELATED.len(), seconds as f64 / correlation)),
                        late(Shaper::Meshsim),
                    ),
                    JitterFigures::new(
                        "meshsim independent",
                        &indep,
                        &control,
                        reference(Shaper::Meshsim),
                        None,
                        late(Shaper::Meshsim),
                    ),
                    JitterFigures::new(
                        "netem",
                        &netem,
                        &control,
                        reference(Shaper::Netem),
                        None,
                        late(Shaper::Netem),
                    ),
                ],
                control,
            };
            for r in &case.rows {
                self.say(format_args!(
                    "  {}: mean {:+.2} ms, sd {:.2} ms, KS {:.3} (timers folded in {}), {} reordered, {} probes ({} effective)",
                    r.name,
                    r.mean_ms - JITTER_LATENCY.as_secs_f64() * 1e3,
                    r.sd_ms,
                    r.ks,
                    r.ks_timers_text(),
                    r.reordered,
                    r.probes,
                    r.effective
                ));
            }
            cases.push(case);
        }
        Ok(cases)
    }

    async fn reordering(&mut self) -> Result<ReorderRow> {
        let spec = Spec {
            latency: JITTER_LATENCY,
            jitter: JITTER,
            ..Default::default()
        };
        self.meshsim(MAIN, &spec).await;
        self.meshsim(
            INDEPENDENT,
            &Spec {
                correlated: false,
                ..spec
            },
        )
        .await;
        self.netem(Some(&spec))?;
        self.say(format_args!(
            "reordering: {} probes at {} pkt/s, normal 50 ms ± 10 ms, and the unshaped pair",
            scaled(REORDER_PROBES),
            1000 / REORDER_GAP.as_millis()
        ));
        let flows = [MAIN, INDEPENDENT, NETEM, CONTROL]
            .map(|pair| Flow::new(pair, 5003, scaled(REORDER_PROBES), REORDER_GAP));
        let r = self.probe(&flows)?;
        let row = ReorderRow {
            probes: scaled(REORDER_PROBES),
            reordered: [0, 1, 2, 3].map(|i| r[i].reordered),
            received: [0, 1, 2, 3].map(|i| r[i].delays_ms.len()),
        };
        self.say(format_args!(
            "  reordered: meshsim default {}, independent {}, netem {}, unshaped {}",
            row.reordered[0], row.reordered[1], row.reordered[2], row.reordered[3]
        ));
        Ok(row)
    }

    async fn tcp_rows(&mut self, latency: Duration, rates: &[u64]) -> Result<Vec<TcpRow>> {
        let mut rows = Vec::new();
        let mut port = 5201;
        for &rate in rates {
            for flows in FLOWS {
                let spec = Spec {
                    latency,
                    rate_bps: rate,
                    ..Default::default()
                };
                let window = scaled_time(if rate < SLOW_RATE {
                    SLOW_TCP_WINDOW
                } else {
                    TCP_WINDOW
                });
                let warmup = scaled_time(TCP_WARMUP);
                self.meshsim(MAIN, &spec).await;
                port += 1;
                let key = self.lab.key(MAIN.0, MAIN.1);
                let m = tcp_goodput(&self.lab, MAIN, port, flows, (warmup, window), Some(key))?;
                self.netem(Some(&spec))?;
                port += 1;
                let n = tcp_goodput(&self.lab, NETEM, port, flows, (warmup, window), None)?;
                // Drop what the flows left queued before the next case.
                self.netem(None)?;
                self.meshsim(MAIN, &Spec::default()).await;
                let row = TcpRow {
                    rate_bps: rate,
                    flows,
                    meshsim_bps: m.bps,
                    netem_bps: n.bps,
                };
                let (link_bps, queue_drops) = m.link.unwrap_or_default();
                self.say(format_args!(
                    "tcp {} ms one way, {}, {flows} flow(s): meshsim {} ({:+.1}%; read {}; its link accepted {} on the wire, dropped {queue_drops} for its queue), netem {} ({:+.1}%; read {})",
                    latency.as_millis(),
                    bits(rate as f64),
                    bits(m.bps),
                    row.error_pct(m.bps),
                    bits(m.read_bps),
                    bits(link_bps),
                    bits(n.bps),
                    row.error_pct(n.bps),
                    bits(n.read_bps),
                ));
                rows.push(row);
            }
        }
        Ok(rows)
    }

    async fn losses(&mut self) -> Result<Vec<LossRow>> {
        let mut rows = Vec::new();
        for loss in LOSSES {
            let spec = Spec {
                loss,
                ..Default::default()
            };
            // One direction only: the probes' way.
            let key = self.lab.key(MAIN.0, MAIN.1);
            let port = self.lab.nodes[MAIN.1].port;
            self.lab.dp.upsert_link(key, port, &spec.shape())?;
            let before = self.lab.dp.link_counters(&key)?.dropped_loss;
            self.netem(Some(&spec))?;
            let flows = [
                Flow::new(MAIN, 5004, scaled(LOSS_PACKETS), LOSS_GAP),
                Flow::new(NETEM, 5004, scaled(LOSS_PACKETS), LOSS_GAP),
            ];
            let r = self.probe(&flows)?;
            let counted = self.lab.dp.link_counters(&key)?.dropped_loss - before;
            let row = LossRow {
                loss,
                meshsim_sent: r[0].sent,
                meshsim_lost: r[0].sent - r[0].delays_ms.len() as u64,
                meshsim_counted: counted,
                netem_sent: r[1].sent,
                netem_lost: r[1].sent - r[1].delays_ms.len() as u64,
            };
            self.say(format_args!(
                "loss {:.0}%: meshsim {} of {} lost (link counted {}), netem {} of {}",
                loss * 100.0,
                row.meshsim_lost,
                row.meshsim_sent,
                row.meshsim_counted,
                row.netem_lost,
                row.netem_sent
            ));
            rows.push(row);
        }
        self.meshsim(MAIN, &Spec::default()).await;
        self.netem(None)?;
        Ok(rows)
    }

    /// The cost cases, and the classifier's run time per packet from one more meshsim round
    /// with the kernel's eBPF statistics on (they add clock reads to every run, so the rounds
    /// that measure CPU run without them).
    async fn costs(&mut self) -> Result<(Vec<CostSummary>, Option<f64>)> {
        let spec = Spec {
            latency: COST_LATENCY,
            ..Default::default()
        };
        self.meshsim(MAIN, &spec).await;
        self.netem(Some(&spec))?;
        let cases = [
            ("unshaped (no classifier, no qdisc)", CONTROL),
            ("meshsim, 10 ms", MAIN),
            ("netem, 10 ms", NETEM),
        ];
        // Let what earlier sections left (timers, closing sockets) settle first.
        std::thread::sleep(Duration::from_secs(1));
        let mut runs: Vec<Vec<CostRow>> = cases.iter().map(|_| Vec::new()).collect();
        for round in 0..COST_ROUNDS {
            for (i, &(name, pair)) in cases.iter().enumerate() {
                let row = self.cost_case(name, pair)?;
                self.say(format_args!(
                    "cost {name} (round {}): busy {:.0} ns/pkt, softirq (sampled) {:.0} ns/pkt ({} packets)",
                    round + 1,
                    row.busy_ns,
                    row.softirq_ns,
                    row.packets
                ));
                runs[i].push(row);
            }
        }
        let classifier_ns = {
            let _stats = Datapath::enable_run_stats()?;
            let row = self.cost_case(cases[1].0, cases[1].1)?;
            if let Some(ns) = row.classifier_ns {
                self.say(format_args!(
                    "cost: the classifier ran {ns:.0} ns per packet (both passes, kernel statistics)"
                ));
            }
            row.classifier_ns
        };
        self.netem(None)?;
        self.meshsim(MAIN, &Spec::default()).await;
        let summaries = runs
            .into_iter()
            .map(|rows| CostSummary {
                name: rows[0].name,
                packets: rows.iter().map(|r| r.packets).sum(),
                busy_ns: sorted(&rows.iter().map(|r| r.busy_ns).collect::<Vec<_>>()),
                softirq_ns: sorted(&rows.iter().map(|r| r.softirq_ns).collect::<Vec<_>>()),
            })
            .collect();
        Ok((summaries, classifier_ns))
    }

    /// UDP at `COST_PPS` over `pair`, sent in a burst every `COST_TICK` and read by a receiver
    /// that wakes as often: under emulation each thread wake-up costs more than a packet's
    /// path, so per-packet wake-ups (as the probes have) would bury what is measured.
    fn cost_case(&self, name: &'static str, (a, b): (usize, usize)) -> Result<CostRow> {
        let dst = SocketAddrV4::new(self.lab.nodes[b].ip, 5005);
        let rx = self.lab.nodes[b].ns.run(move || UdpSocket::bind(dst))??;
        set_int_option(&rx, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20)?;
        rx.set_nonblocking(true)?;
        let tx = self.lab.nodes[a]
            .ns
            .run(|| UdpSocket::bind("0.0.0.0:0"))??;
        let ticks = (scaled(COST_SECONDS) as u128 * 1000 / COST_TICK.as_millis()) as u32;
        let burst = COST_PPS as u128 * COST_TICK.as_millis() / 1000;
        let drain = COST_LATENCY + Duration::from_millis(300);
        let done = AtomicBool::new(false);
        let before = CpuTimes::read()?;
        let runs_before = self.lab.dp.run_stats()?;
        let packets = std::thread::scope(|s| -> Result<u64> {
            let receiver = s.spawn(|| -> Result<u64> {
                let (mut n, mut buf, mut done_at) = (0u64, [0u8; 256], None);
                loop {
                    std::thread::sleep(COST_TICK);
                    loop {
                        match rx.recv(&mut buf) {
                            Ok(_) => n += 1,
                            Err(e) if is_timeout(&e) => break,
                            Err(e) => return Err(e.into()),
                        }
                    }
                    if done.load(Ordering::Acquire)
                        && done_at.get_or_insert_with(Instant::now).elapsed() >= drain
                    {
                        return Ok(n);
                    }
                }
            });
            let payload = [0u8; 64];
            let start = Instant::now();
            for tick in 1..=ticks {
                for _ in 0..burst {
                    tx.send_to(&payload, dst)?;
                }
                if let Some(wait) = (COST_TICK * tick).checked_sub(start.elapsed()) {
                    std::thread::sleep(wait);
                }
            }
            done.store(true, Ordering::Release);
            receiver
                .join()
                .map_err(|_| anyhow!("the cost receiver panicked"))?
        })?;
        let after = CpuTimes::read()?;
        let runs = self.lab.dp.run_stats()?;
        ensure!(packets > 0, "{name}: nothing arrived");
        // Every shaped packet runs the classifier twice (the original, then its clone). Zero
        // runs counted means the statistics were off.
        let classifier_ns = (runs.run_time > runs_before.run_time)
            .then(|| (runs.run_time - runs_before.run_time).as_nanos() as f64 / packets as f64);
        let (busy, softirq) = before.until(&after);
        Ok(CostRow {
            name,
            packets,
            softirq_ns: softirq / packets as f64,
            busy_ns: busy / packets as f64,
            classifier_ns,
        })
    }

    async fn reconfiguration(&mut self) -> Result<Vec<ReconfRow>> {
        let a = Spec {
            latency: Duration::from_millis(10),
            rate_bps: 10_000_000,
            ..Default::default()
        };
        let b = Spec {
            latency: Duration::from_millis(11),
            rate_bps: 20_000_000,
            ..Default::default()
        };
        let mut rows = Vec::new();
        let changes = scaled(CHANGES as u64) as usize;
        let process_changes = scaled(TC_PROCESS_CHANGES as u64) as usize;

        self.meshsim(MAIN, &a).await;
        let key = self.lab.key(MAIN.0, MAIN.1);
        let port = self.lab.nodes[MAIN.1].port;
        let shapes = [b.shape(), a.shape()];
        let dp = &mut self.lab.dp;
        let mut times = Vec::with_capacity(changes);
        let flow = reconf_flow(MAIN);
        let stop = AtomicBool::new(false);
        let (r, changed) = std::thread::scope(|s| {
            let changer = s.spawn(|| {
                // Let the flow start first.
                std::thread::sleep(Duration::from_millis(300));
                let mut result = Ok(());
                // Spread over RECONF_SPAN, so that most of the flow's packets cross a link that
                // changed since the packet before (at full speed the changes take ~70 ms).
                let every = scaled_time(RECONF_SPAN) / changes.max(1) as u32;
                let start = Instant::now();
                for i in 0..changes {
                    let t = Instant::now();
                    if let Err(e) = dp.upsert_link(key, port, &shapes[i % 2]) {
                        result = Err(e);
                        break;
                    }
                    times.push(t.elapsed().as_secs_f64());
                    if let Some(wait) = (every * (i as u32 + 1)).checked_sub(start.elapsed()) {
                        std::thread::sleep(wait);
                    }
                }
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Relaxed);
                result
            });
            let r = probe(&self.lab.nodes, &[flow], Some(&stop));
            (r, changer.join())
        });
        changed.map_err(|_| anyhow!("the change thread panicked"))??;
        rows.push(ReconfRow::new(
            "meshsim: one LINKS map update per change",
            changes,
            &times,
            &r?[0],
        ));
        self.say(format_args!("{}", rows[0].summary()));

        let dev = self.port_name(NETEM.1);
        let netem_line = |verb: &str, s: &Spec| {
            format!("qdisc {verb} dev {dev} root {}\n", s.netem_args().join(" "))
        };
        let change: String = (0..changes)
            .map(|i| netem_line("change", if i % 2 == 0 { &b } else { &a }))
            .collect();
        let rebuild: String = (0..changes)
            .map(|i| {
                format!("qdisc del dev {dev} root\n")
                    + &netem_line("add", if i % 2 == 0 { &b } else { &a })
            })
            .collect();
        for (name, batch) in [
            ("netem: `tc qdisc change`, all in one `tc -batch`", change),
            (
                "netem: teardown + rebuild (`qdisc del` + `qdisc add`), all in one `tc -batch`",
                rebuild,
            ),
        ] {
            self.netem(Some(&a))?;
            let (r, elapsed) = self.with_flow(|| {
                let t = Instant::now();
                tc_batch(&self.lab, &batch)?;
                Ok(vec![t.elapsed().as_secs_f64() / changes as f64])
            })?;
            rows.push(ReconfRow::new(name, changes, &elapsed, &r));
            self.say(format_args!("{}", rows.last().unwrap().summary()));
        }

        self.netem(Some(&a))?;
        let (r, times) = self.with_flow(|| {
            let mut times = Vec::with_capacity(process_changes);
            for i in 0..process_changes {
                let s = if i % 2 == 0 { &b } else { &a };
                let mut args = ["qdisc", "change", "dev", dev.as_str(), "root"]
                    .map(String::from)
                    .to_vec();
                args.extend(s.netem_args());
                let t = Instant::now();
                self.tc(&args)?;
                times.push(t.elapsed().as_secs_f64());
            }
            Ok(times)
        })?;
        rows.push(ReconfRow::new(
            "netem: `tc qdisc change`, one `tc` process per change (as the seed ran tc)",
            process_changes,
            &times,
            &r,
        ));
        self.say(format_args!("{}", rows.last().unwrap().summary()));
        self.netem(None)?;
        Ok(rows)
    }

    /// Runs `work` while a UDP flow crosses the netem pair; returns the flow and `work`'s
    /// result.
    fn with_flow<T: Send>(&self, work: impl FnOnce() -> Result<T> + Send) -> Result<(Probed, T)> {
        let stop = AtomicBool::new(false);
        let flow = reconf_flow(NETEM);
        std::thread::scope(|s| {
            let worker = s.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                let r = work();
                std::thread::sleep(Duration::from_millis(300));
                stop.store(true, Ordering::Relaxed);
                r
            });
            let probed = probe(&self.lab.nodes, &[flow], Some(&stop));
            let out = worker
                .join()
                .map_err(|_| anyhow!("the change thread panicked"))??;
            let [p] = probed?.try_into().map_err(|_| anyhow!("one flow"))?;
            Ok((p, out))
        })
    }
}

fn reconf_flow(pair: (usize, usize)) -> Flow {
    let mut flow = Flow::new(pair, 5006, u64::MAX, RECONF_GAP);
    flow.drain = Duration::from_millis(500);
    flow
}

fn tc_batch(lab: &Lab, batch: &str) -> Result<()> {
    let mut child = lab
        .hub
        .command("tc")
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting tc -batch")?;
    child
        .stdin
        .take()
        .context("tc's stdin")?
        .write_all(batch.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "tc -batch failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// A stream of timestamped UDP probes from `pair.0` to `pair.1`.
struct Flow {
    from: usize,
    to: usize,
    port: u16,
    count: u64,
    gap: Duration,
    /// How long the receiver keeps listening after the last probe was sent.
    drain: Duration,
}

impl Flow {
    fn new((from, to): (usize, usize), port: u16, count: u64, gap: Duration) -> Flow {
        Flow {
            from,
            to,
            port,
            count,
            gap,
            drain: Duration::from_millis(500),
        }
    }
}

/// What the receiver of a flow saw.
#[derive(Default)]
struct Probed {
    sent: u64,
    /// One-way delays in ms, in arrival order.
    delays_ms: Vec<f64>,
    /// Probes that arrived after one with a higher sequence number.
    reordered: u64,
    /// Probes the kernel gave no receive timestamp (stamped on reading instead).
    unstamped: u64,
}

impl Probed {
    fn merge(&mut self, other: Probed) {
        self.sent += other.sent;
        self.delays_ms.extend(other.delays_ms);
        self.reordered += other.reordered;
        self.unstamped += other.unstamped;
    }
}

/// The clock of the probes: realtime, because the kernel's receive timestamps are in it.
fn realtime_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_REALTIME).expect("CLOCK_REALTIME");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

/// Sets an int socket option through libc (std has no setter for these).
fn set_int_option(fd: &impl AsRawFd, level: i32, name: i32, value: i32) -> Result<()> {
    // SAFETY: the pointer and length describe `value`, which outlives the call.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "setsockopt: {}", std::io::Error::last_os_error());
    Ok(())
}

/// Closing sends a reset and drops unsent data, so a finished case leaves nothing to send.
fn set_linger_zero(s: &TcpStream) -> Result<()> {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: as in `set_int_option`.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    ensure!(rc == 0, "SO_LINGER: {}", std::io::Error::last_os_error());
    Ok(())
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// Reads one probe: its bytes and the kernel's receive time (ns, realtime), if it gave one.
/// `Ok(None)` when the read timed out.
fn recv_stamped(rx: &UdpSocket, buf: &mut [u8]) -> Result<Option<(usize, Option<u64>)>> {
    let mut cmsg = nix::cmsg_space!(TimeSpec);
    let mut iov = [IoSliceMut::new(buf)];
    match recvmsg::<()>(rx.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty()) {
        Ok(msg) => {
            let stamp = msg.cmsgs()?.find_map(|c| match c {
                ControlMessageOwned::ScmTimestampns(ts) => {
                    Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64)
                }
                _ => None,
            });
            Ok(Some((msg.bytes, stamp)))
        }
        Err(Errno::EAGAIN | Errno::EINTR) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Runs `flows` at once and returns what each receiver saw. With `stop`, a flow of
/// `u64::MAX` probes ends when it is set.
fn probe(nodes: &[Node], flows: &[Flow], stop: Option<&AtomicBool>) -> Result<Vec<Probed>> {
    let mut ends = Vec::new();
    for f in flows {
        let dst = SocketAddrV4::new(nodes[f.to].ip, f.port);
        let rx = nodes[f.to]
            .ns
            .run(move || UdpSocket::bind(dst))?
            .with_context(|| format!("binding {dst}"))?;
        // Root may exceed rmem_max: a receiver that falls behind under emulation must not
        // turn into loss.
        set_int_option(&rx, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 16 << 20)?;
        setsockopt(&rx, ReceiveTimestampns, &true)?;
        rx.set_read_timeout(Some(Duration::from_millis(50)))?;
        let tx = nodes[f.from].ns.run(|| UdpSocket::bind("0.0.0.0:0"))??;
        ends.push((rx, tx, dst));
    }
    let done: Vec<AtomicBool> = flows.iter().map(|_| AtomicBool::new(false)).collect();
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|s| {
        let handles: Vec<_> = flows
            .iter()
            .zip(ends)
            .zip(&done)
            .enumerate()
            .map(|(i, ((f, (rx, tx, dst)), done))| {
                let sender = s.spawn(move || -> Result<u64> {
                    // One CPU per sender: a thread that moves between CPUs can have its next
                    // packet through the bridge before the last (each CPU has its own backlog),
                    // which is the host reordering, not the shaper.
                    let mut cpu = CpuSet::new();
                    cpu.set(i % cpus)?;
                    sched_setaffinity(Pid::from_raw(0), &cpu)?;
                    let mut msg = [0u8; 64];
                    let start = Instant::now();
                    let mut seq = 0u64;
                    while seq < f.count && !stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                        seq += 1;
                        msg[0..8].copy_from_slice(&seq.to_le_bytes());
                        msg[8..16].copy_from_slice(&realtime_ns().to_le_bytes());
                        tx.send_to(&msg, dst)?;
                        let due = f.gap.saturating_mul(seq.min(u32::MAX as u64) as u32);
                        if let Some(wait) = due.checked_sub(start.elapsed()) {
                            std::thread::sleep(wait);
                        }
                    }
                    done.store(true, Ordering::Release);
                    Ok(seq)
                });
                let drain = f.drain;
                let receiver = s.spawn(move || -> Result<Probed> {
                    let mut p = Probed::default();
                    let mut buf = [0u8; 2048];
                    let mut highest = 0u64;
                    let mut done_at = None;
                    loop {
                        if let Some((n, stamp)) = recv_stamped(&rx, &mut buf)?
                            && n >= 16
                        {
                            let at = stamp.unwrap_or_else(|| {
                                p.unstamped += 1;
                                realtime_ns()
                            });
                            let seq = u64::from_le_bytes(buf[0..8].try_into()?);
                            let sent = u64::from_le_bytes(buf[8..16].try_into()?);
                            p.delays_ms.push((at as i64 - sent as i64) as f64 / 1e6);
                            if seq < highest {
                                p.reordered += 1;
                            }
                            highest = highest.max(seq);
                        }
                        if done.load(Ordering::Acquire) {
                            let at = *done_at.get_or_insert_with(Instant::now);
                            if at.elapsed() >= drain {
                                return Ok(p);
                            }
                        }
                    }
                });
                (sender, receiver)
            })
            .collect();
        handles
            .into_iter()
            .map(|(sender, receiver)| {
                let sent = sender
                    .join()
                    .map_err(|_| anyhow!("a probe sender panicked"))??;
                let mut p = receiver
                    .join()
                    .map_err(|_| anyhow!("a probe receiver panicked"))??;
                p.sent = sent;
                Ok(p)
            })
            .collect()
    })
}

/// Average ping RTT in ms (the cross-check of the probes), if ping answered.
fn ping_avg(lab: &Lab, (a, b): (usize, usize)) -> Option<f64> {
    let out = lab.ping(a, b, PINGS, "0.05");
    let text = String::from_utf8_lossy(&out.stdout);
    // "rtt min/avg/max/mdev = 100.1/100.3/100.9/0.2 ms"
    let stats = text.lines().find(|l| l.contains("min/avg/max"))?;
    stats
        .split('=')
        .nth(1)?
        .trim()
        .split('/')
        .nth(1)?
        .parse()
        .ok()
}

/// What a TCP case measured.
struct Goodput {
    /// Payload the receiver acknowledged over the window (cumulatively or selectively), in
    /// bit/s: see [`delivered`].
    bps: f64,
    /// The receiver's reads between its first and last read inside the window, in bit/s.
    read_bps: f64,
    /// meshsim only: what the link's counters accepted over the window, on the wire, in
    /// bit/s, and the packets its queue limit dropped then (progress lines only: counted on
    /// acceptance, it differs from what left by the change in the queue's fill, up to 200 ms
    /// of data).
    link: Option<(f64, u64)>,
}

/// Payload bytes the receivers have, as their senders know it: acknowledged cumulatively plus
/// acknowledged selectively (SACKed segments, of one MSS each). Unlike the bytes a receiver has
/// read, this does not jump when a retransmission fills a hole and releases everything held
/// behind it, which over a window of seconds at 64 kbit/s would skew the figure by a whole
/// queue's worth (measured: +13%).
fn delivered(conns: &[TcpStream]) -> Result<u64> {
    let mut total = 0;
    for c in conns {
        // SAFETY: tcp_info is plain old data; zero is a valid value of every field.
        let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        // SAFETY: the pointer and length describe `info`, which outlives the call.
        let rc = unsafe {
            libc::getsockopt(
                c.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_INFO,
                (&mut info as *mut libc::tcp_info).cast(),
                &mut len,
            )
        };
        ensure!(rc == 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        total += info.tcpi_bytes_acked + u64::from(info.tcpi_sacked) * u64::from(info.tcpi_snd_mss);
    }
    Ok(total)
}

/// One look at a TCP case at a window's end.
struct Sample {
    at: Instant,
    delivered: u64,
    link: Option<LinkCounters>,
}

/// TCP from `pair.0` to `pair.1` with `flows` connections, measured over `window` after
/// `warmup`; with `link`, that meshsim link's counters are read at the window's ends too.
fn tcp_goodput(
    lab: &Lab,
    (a, b): (usize, usize),
    port: u16,
    flows: usize,
    (warmup, window): (Duration, Duration),
    link: Option<LinkKey>,
) -> Result<Goodput> {
    let addr = SocketAddrV4::new(lab.nodes[b].ip, port);
    let listener = lab.nodes[b].ns.run(move || TcpListener::bind(addr))??;
    let senders: Vec<TcpStream> = lab.nodes[a]
        .ns
        .run(move || {
            (0..flows)
                .map(|_| TcpStream::connect_timeout(&addr.into(), Duration::from_secs(10)))
                .collect::<std::io::Result<Vec<_>>>()
        })?
        .with_context(|| format!("connecting to {addr}"))?;
    let receivers = (0..flows)
        .map(|_| listener.accept().map(|(s, _)| s))
        .collect::<std::io::Result<Vec<_>>>()?;
    for conn in &senders {
        set_linger_zero(conn)?;
        conn.set_write_timeout(Some(Duration::from_millis(100)))?;
    }
    let start = Instant::now();
    let (w0, w1) = (start + warmup, start + warmup + window);
    let stop_at = w1 + Duration::from_millis(300);
    let sample = |at: Instant| -> Result<Sample> {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        Ok(Sample {
            at: Instant::now(),
            delivered: delivered(&senders)?,
            link: link.map(|key| lab.dp.link_counters(&key)).transpose()?,
        })
    };
    let (events, (s0, s1)) = std::thread::scope(|s| -> Result<_> {
        let sampler = s.spawn(|| -> Result<_> { Ok((sample(w0)?, sample(w1)?)) });
        for conn in &senders {
            s.spawn(move || {
                let chunk = vec![0x55u8; 1 << 16];
                let mut conn = conn;
                while Instant::now() < stop_at {
                    match conn.write(&chunk) {
                        Ok(_) => {}
                        Err(e) if is_timeout(&e) => {}
                        Err(_) => break,
                    }
                }
            });
        }
        let readers: Vec<_> = receivers
            .into_iter()
            .map(|mut conn| {
                s.spawn(move || {
                    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                    let mut buf = vec![0u8; 1 << 16];
                    let mut events = Vec::new();
                    while Instant::now() < stop_at {
                        match conn.read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => events.push((Instant::now(), n)),
                            Err(e) if is_timeout(&e) => {}
                            Err(_) => break,
                        }
                    }
                    events
                })
            })
            .collect();
        let mut all = Vec::new();
        for r in readers {
            all.extend(r.join().map_err(|_| anyhow!("a TCP reader panicked"))?);
        }
        let samples = sampler
            .join()
            .map_err(|_| anyhow!("the sampler panicked"))??;
        Ok((all, samples))
    })?;
    let seconds = s1.at.duration_since(s0.at).as_secs_f64();
    let link = match (s0.link, s1.link) {
        (Some(c0), Some(c1)) => Some((
            (c1.bytes - c0.bytes) as f64 * 8.0 / seconds,
            c1.dropped_queue - c0.dropped_queue,
        )),
        _ => None,
    };
    let mut inside: Vec<(Instant, usize)> = events
        .into_iter()
        .filter(|(t, _)| *t >= w0 && *t <= w1)
        .collect();
    inside.sort_by_key(|(t, _)| *t);
    let span = match (inside.first(), inside.last()) {
        (Some(first), Some(last)) => last.0.duration_since(first.0).as_secs_f64(),
        _ => 0.0,
    };
    let bytes: usize = inside.iter().skip(1).map(|(_, n)| n).sum();
    Ok(Goodput {
        bps: (s1.delivered - s0.delivered) as f64 * 8.0 / seconds,
        read_bps: if span > 0.0 {
            bytes as f64 * 8.0 / span
        } else {
            0.0
        },
        link,
    })
}

/// CPU time of the whole VM from /proc/stat (all CPUs).
///
/// Busy time is wall time times CPUs minus idle and iowait: the kernel accounts idle time
/// exactly (from the clock, at each idle entry and exit, with NO_HZ), while user, system,
/// irq and softirq are sampled at the tick, which under emulation and with bursty packet
/// work swings by several times between identical runs. softirq is still read, as sampled.
struct CpuTimes {
    at: Instant,
    idle: u64,
    softirq: u64,
}

impl CpuTimes {
    fn read() -> Result<CpuTimes> {
        let stat = fs::read_to_string("/proc/stat")?;
        let line = stat
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no cpu line in /proc/stat")?;
        // user nice system idle iowait irq softirq steal ...
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        ensure!(v.len() >= 8, "short cpu line in /proc/stat: {line}");
        Ok(CpuTimes {
            at: Instant::now(),
            idle: v[3] + v[4],
            softirq: v[6],
        })
    }

    /// (busy, softirq) ns from `self` to `later`.
    fn until(&self, later: &CpuTimes) -> (f64, f64) {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let tick_ns = 1e9 / hz;
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        let wall = later.at.duration_since(self.at).as_nanos() as f64 * cpus;
        let idle = (later.idle - self.idle) as f64 * tick_ns;
        let softirq = (later.softirq - self.softirq) as f64 * tick_ns;
        ((wall - idle).max(0.0), softirq)
    }
}

fn scaled(n: u64) -> u64 {
    if QUICK.load(Ordering::Relaxed) {
        (n / QUICK_DIVISOR).max(1)
    } else {
        n
    }
}

fn scaled_time(d: Duration) -> Duration {
    Duration::from_nanos(scaled(d.as_nanos() as u64))
}

// ---- statistics -------------------------------------------------------------------------

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// The `q` quantile of sorted data (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Kolmogorov-Smirnov distance between sorted data and a CDF.
fn ks(sorted: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    let n = sorted.len() as f64;
    sorted
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            (f - i as f64 / n).max((i + 1) as f64 / n - f)
        })
        .fold(0.0, f64::max)
}

/// The 99% interval of Binomial(n, p): the 0.5% and 99.5% quantiles, computed exactly.
fn binomial_interval(n: u64, p: f64) -> (u64, u64) {
    let ln_ratio = (p / (1.0 - p)).ln();
    // ln pmf(k) up to a constant, by pmf(k+1)/pmf(k) = (n-k)/(k+1) · p/(1-p).
    let mut ln_pmf = Vec::with_capacity(n as usize + 1);
    let mut acc = 0.0;
    ln_pmf.push(acc);
    for k in 0..n {
        acc += ((n - k) as f64 / (k + 1) as f64).ln() + ln_ratio;
        ln_pmf.push(acc);
    }
    let top = ln_pmf.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let pmf: Vec<f64> = ln_pmf.iter().map(|l| (l - top).exp()).collect();
    let total: f64 = pmf.iter().sum();
    let (mut cdf, mut lo, mut hi) = (0.0, None, n);
    for (k, w) in pmf.iter().enumerate() {
        cdf += w / total;
        if lo.is_none() && cdf >= 0.005 {
            lo = Some(k as u64);
        }
        if cdf >= 0.995 {
            hi = k as u64;
            break;
        }
    }
    (lo.unwrap_or(0), hi)
}

// ---- the configured distributions ---------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Shaper {
    Meshsim,
    Netem,
}

/// The distribution a shaper was configured with, in ms of one-way delay.
#[derive(Clone)]
enum Reference {
    Normal {
        mean: f64,
        sd: f64,
    },
    Uniform {
        lo: f64,
        hi: f64,
    },
    /// meshsim's pareto: shape 3, standardised to mean 0 and sd 1, times the jitter.
    Pareto {
        latency: f64,
        jitter: f64,
    },
    /// netem's table (sorted jitter multiples), times the jitter.
    Table {
        latency: f64,
        jitter: f64,
        values: Vec<f64>,
    },
}

const PARETO_SD: f64 = 0.866_025_403_784_438_6; // sqrt(3)/2, of Pareto(3, 1)

impl Reference {
    fn new(dist: JitterDist, shaper: Shaper, netem_pareto: &[f64]) -> Reference {
        let latency = JITTER_LATENCY.as_secs_f64() * 1e3;
        let jitter = JITTER.as_secs_f64() * 1e3;
        match (dist, shaper) {
            (JitterDist::Uniform, _) => Reference::Uniform {
                lo: latency - jitter,
                hi: latency + jitter,
            },
            (JitterDist::Pareto, Shaper::Meshsim) => Reference::Pareto { latency, jitter },
            (JitterDist::Pareto, Shaper::Netem) => Reference::Table {
                latency,
                jitter,
                values: netem_pareto.to_vec(),
            },
            _ => Reference::Normal {
                mean: latency,
                sd: jitter,
            },
        }
    }

    fn cdf(&self, x: f64) -> f64 {
        match self {
            Reference::Normal { mean, sd } => normal_cdf((x - mean) / sd),
            Reference::Uniform { lo, hi } => ((x - lo) / (hi - lo)).clamp(0.0, 1.0),
            Reference::Pareto { latency, jitter } => {
                let p = 1.5 + PARETO_SD * (x - latency) / jitter;
                if p < 1.0 { 0.0 } else { 1.0 - p.powi(-3) }
            }
            Reference::Table {
                latency,
                jitter,
                values,
            } => {
                let z = (x - latency) / jitter;
                values.partition_point(|&v| v <= z) as f64 / values.len() as f64
            }
        }
    }

    fn density(&self, x: f64) -> f64 {
        match self {
            Reference::Normal { mean, sd } => {
                let z = (x - mean) / sd;
                (-0.5 * z * z).exp() / (sd * (2.0 * std::f64::consts::PI).sqrt())
            }
            Reference::Uniform { lo, hi } => {
                if x >= *lo && x < *hi {
                    1.0 / (hi - lo)
                } else {
                    0.0
                }
            }
            Reference::Pareto { latency, jitter } => {
                let p = 1.5 + PARETO_SD * (x - latency) / jitter;
                if p < 1.0 {
                    0.0
                } else {
                    3.0 * PARETO_SD / jitter * p.powi(-4)
                }
            }
            // Over a 1 ms bin centred on x.
            Reference::Table { .. } => self.cdf(x + 0.5) - self.cdf(x - 0.5),
        }
    }

    /// Where the density jumps.
    fn jumps(&self) -> Vec<f64> {
        match self {
            Reference::Uniform { lo, hi } => vec![*lo, *hi],
            // The lower end of the pareto: 1.5 + PARETO_SD · (x − latency) / jitter = 1.
            Reference::Pareto { latency, jitter } => vec![latency - 0.5 * jitter / PARETO_SD],
            Reference::Normal { .. } | Reference::Table { .. } => Vec::new(),
        }
    }

    fn mean_sd(&self) -> (f64, f64) {
        match self {
            Reference::Normal { mean, sd } => (*mean, *sd),
            Reference::Uniform { lo, hi } => ((lo + hi) / 2.0, (hi - lo) / 12f64.sqrt()),
            Reference::Pareto { latency, jitter } => (*latency, *jitter),
            Reference::Table {
                latency,
                jitter,
                values,
            } => {
                let (m, s) = mean_sd(values);
                (latency + m * jitter, s * jitter)
            }
        }
    }
}

/// netem's distribution table `name`, as sorted jitter multiples.
fn netem_table(name: &str) -> Result<Vec<f64>> {
    for dir in TC_LIB_DIRS {
        let path = Path::new(dir).join(format!("{name}.dist"));
        if let Ok(text) = fs::read_to_string(&path) {
            let values: Vec<f64> = text
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .flat_map(|l| l.split_whitespace())
                .map(|v| v.parse::<f64>().map(|v| v / NETEM_DIST_SCALE))
                .collect::<Result<_, _>>()
                .with_context(|| format!("reading {}", path.display()))?;
            ensure!(!values.is_empty(), "{} is empty", path.display());
            return Ok(sorted(&values));
        }
    }
    bail!("netem's {name}.dist is in none of {TC_LIB_DIRS:?} (install iproute2)")
}

// ---- results ------------------------------------------------------------------------------

/// The unshaped pair's delay during a case.
struct Base {
    p50_ms: f64,
    p99_ms: f64,
}

impl Base {
    fn of(p: &Probed) -> Result<Base> {
        let s = sorted(&p.delays_ms);
        ensure!(!s.is_empty(), "no probe crossed the unshaped pair");
        Ok(Base {
            p50_ms: quantile(&s, 0.5),
            p99_ms: quantile(&s, 0.99),
        })
    }
}

struct DelayFigures {
    p50_err_us: f64,
    p99_err_us: f64,
    ping_rtt_ms: Option<f64>,
}

struct DelayRow {
    configured_ms: u64,
    meshsim: DelayFigures,
    netem: DelayFigures,
    control: Base,
}

struct JitterFigures {
    name: &'static str,
    probes: usize,
    effective: usize,
    mean_ms: f64,
    sd_ms: f64,
    ks: f64,
    /// KS against the configured distribution with the VM's timer lateness (measured on a
    /// fixed-delay link of the same shaper) folded in: the shape alone, without the emulator.
    ks_timers: Option<f64>,
    reordered: u64,
    reference: Reference,
    /// Delays minus the unshaped path's median, for the plot.
    delays_ms: Vec<f64>,
}

impl JitterFigures {
    /// `correlated`: (links pooled, correlation times each link ran) for meshsim's default mode.
    fn new(
        name: &'static str,
        p: &Probed,
        base: &Base,
        reference: Reference,
        correlated: Option<(usize, f64)>,
        lateness: Option<&[f64]>,
    ) -> JitterFigures {
        let delays: Vec<f64> = p.delays_ms.iter().map(|d| d - base.p50_ms).collect();
        let s = sorted(&delays);
        let (mean, sd) = mean_sd(&s);
        let effective = match correlated {
            // Each link's process gives about one independent value per correlation time.
            Some((links, times)) => ((links as f64 * times) as usize).min(s.len()),
            None => s.len(),
        };
        JitterFigures {
            name,
            probes: s.len(),
            effective,
            mean_ms: mean,
            sd_ms: sd,
            ks: ks(&s, |x| reference.cdf(x)),
            // P(configured + lateness <= x), the lateness taken as its quantiles.
            ks_timers: lateness.filter(|l| !l.is_empty()).map(|late| {
                ks(&s, |x| {
                    late.iter().map(|l| reference.cdf(x - l)).sum::<f64>() / late.len() as f64
                })
            }),
            reordered: p.reordered,
            reference,
            delays_ms: delays,
        }
    }

    fn ks_timers_text(&self) -> String {
        self.ks_timers
            .map_or("-".to_owned(), |k| format!("{k:.3} {}", mark(k <= 0.05)))
    }

    /// The KS distance that independent samples of this count stay under 99% of the time.
    fn ks_noise(&self) -> f64 {
        1.628 / (self.effective.max(1) as f64).sqrt()
    }
}

struct JitterCase {
    dist: JitterDist,
    rows: Vec<JitterFigures>,
    control: Base,
}

/// meshsim default, meshsim independent, netem, unshaped.
struct ReorderRow {
    probes: u64,
    reordered: [u64; 4],
    received: [usize; 4],
}

struct TcpRow {
    rate_bps: u64,
    flows: usize,
    meshsim_bps: f64,
    netem_bps: f64,
}

impl TcpRow {
    fn expected(&self) -> f64 {
        self.rate_bps as f64 * PAYLOAD_SHARE
    }
    fn error_pct(&self, measured: f64) -> f64 {
        (measured / self.expected() - 1.0) * 100.0
    }
}

struct LossRow {
    loss: f64,
    meshsim_sent: u64,
    meshsim_lost: u64,
    meshsim_counted: u64,
    netem_sent: u64,
    netem_lost: u64,
}

/// One round of one cost case.
struct CostRow {
    name: &'static str,
    packets: u64,
    softirq_ns: f64,
    busy_ns: f64,
    /// The kernel's own accounting of the classifier's run time (both passes), per packet.
    classifier_ns: Option<f64>,
}

/// A cost case over all rounds: per-packet figures, sorted.
struct CostSummary {
    name: &'static str,
    packets: u64,
    busy_ns: Vec<f64>,
    softirq_ns: Vec<f64>,
}

struct ReconfRow {
    name: &'static str,
    changes: usize,
    median_us: f64,
    mean_us: f64,
    sent: u64,
    lost: u64,
    reordered: u64,
}

impl ReconfRow {
    fn new(name: &'static str, changes: usize, times_s: &[f64], p: &Probed) -> ReconfRow {
        let s = sorted(times_s);
        let (mean, _) = mean_sd(&s);
        ReconfRow {
            name,
            changes,
            median_us: if s.is_empty() {
                0.0
            } else {
                quantile(&s, 0.5) * 1e6
            },
            mean_us: mean * 1e6,
            sent: p.sent,
            lost: p.sent - p.delays_ms.len() as u64,
            reordered: p.reordered,
        }
    }

    fn summary(&self) -> String {
        format!(
            "reconfiguration, {}: {:.1} us per change, {} of {} packets lost, {} reordered",
            self.name, self.mean_us, self.lost, self.sent, self.reordered
        )
    }
}

struct Report {
    facts: String,
    delay: Vec<DelayRow>,
    jitter: Vec<JitterCase>,
    reorder: Option<ReorderRow>,
    tcp_latency: Vec<TcpRow>,
    rate: Vec<TcpRow>,
    loss: Vec<LossRow>,
    cost: Vec<CostSummary>,
    /// The classifier's own run time per packet, by the kernel's eBPF statistics.
    classifier_ns: Option<f64>,
    reconf: Vec<ReconfRow>,
}

fn dist_name(d: JitterDist) -> &'static str {
    match d {
        JitterDist::Uniform => "uniform",
        JitterDist::Normal => "normal",
        JitterDist::Pareto => "pareto",
        JitterDist::ParetoNormal => "paretonormal",
    }
}

fn bits(bps: f64) -> String {
    if bps >= 1e6 {
        format!("{:.2} Mbit/s", bps / 1e6)
    } else {
        format!("{:.1} kbit/s", bps / 1e3)
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

fn facts(host: &Option<String>) -> String {
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mut s = format!(
        "Run {date}, in a VM: Linux {} under qemu software emulation (TCG), {cpus} vCPUs",
        kernel.trim()
    );
    if let Some(h) = host {
        write!(s, "; host: {h}").unwrap();
    }
    s.push('.');
    s
}

impl Report {
    fn markdown(&self, took: Duration) -> String {
        let mut o = String::new();
        writeln!(o, "# Fidelity: meshsim vs netem\n").unwrap();
        writeln!(o, "{}\n", self.facts).unwrap();
        if QUICK.load(Ordering::Relaxed) {
            writeln!(
                o,
                "**A quick smoke run (`--quick`): every count and duration is a tenth of the report's; these figures are not the report.**\n"
            )
            .unwrap();
        }
        writeln!(
            o,
            "Both columns of every row come from this one run (it took {:.0} s). The VM is software-emulated: its timers and clocks are far noisier, and its CPU far slower, than real hardware; both columns share that. \
             Delays are the kernel's receive timestamp (`SO_TIMESTAMPNS`) minus the sender's `CLOCK_REALTIME` stamp, so the receiving thread's wake-up (milliseconds under emulation) is left out; both clocks are the VM's one realtime clock. \
             Probes over an unshaped pair (neither classifier nor qdisc) run at the same time as every delay and jitter case, and the path's own delay they see is subtracted. \
             ✓ / ✗: the issue's target met or not.\n",
            took.as_secs_f64(),
        )
        .unwrap();
        self.delay_md(&mut o);
        self.jitter_md(&mut o);
        self.reorder_md(&mut o);
        if !self.tcp_latency.is_empty() {
            writeln!(
                o,
                "## TCP with 50 ms one way (both directions)\n\nGoodput over {} s after a {} s warm-up (payload the receiver acknowledged, cumulatively or selectively, read from the senders' TCP_INFO at the window's ends), against the payload share of the rate (1448 of every 1514 bytes on the wire). This is where packets held for their departure that still charged the sender's socket would show. Target: error ≤ 2%.\n",
                TCP_WINDOW.as_secs(),
                TCP_WARMUP.as_secs()
            )
            .unwrap();
            tcp_md(&mut o, &self.tcp_latency);
        }
        if !self.rate.is_empty() {
            writeln!(
                o,
                "## Rate\n\nTCP goodput without added latency, measured as above ({} s window at 64 kbit/s). meshsim's queue is its default (200 ms of data, at least 10 full frames); netem's is its default 1000 packets. Target: error ≤ 2%.\n",
                SLOW_TCP_WINDOW.as_secs()
            )
            .unwrap();
            tcp_md(&mut o, &self.rate);
        }
        self.loss_md(&mut o);
        self.cost_md(&mut o);
        self.reconf_md(&mut o);
        o
    }

    fn delay_md(&self, o: &mut String) {
        if self.delay.is_empty() {
            return;
        }
        writeln!(
            o,
            "## One-way delay error\n\n{} timestamped UDP probes per case at {} pkt/s, read on the receiving side; meshsim, netem and the unshaped pair at once. \
             p50 error = p50 − unshaped p50 − configured; p99 error = p99 − unshaped p99 − configured (the path's own tail, which shaping did not add, taken out). \
             Target: |error| ≤ max(1%, 100 us). Ping: average RTT of {PINGS} pings, a cross-check (≈ 2 × configured).\n",
            scaled(DELAY_PROBES),
            1000 / DELAY_GAP.as_millis()
        )
        .unwrap();
        writeln!(
            o,
            "| configured | target | meshsim p50 | meshsim p99 | netem p50 | netem p99 | unshaped p50 / p99 | ping RTT meshsim / netem |\n|---|---|---|---|---|---|---|---|"
        )
        .unwrap();
        for r in &self.delay {
            let target = (r.configured_ms as f64 * 10.0).max(100.0);
            let cell = |e: f64| format!("{e:+.0} us {}", mark(e.abs() <= target));
            let ping = |p: Option<f64>| p.map_or("-".to_owned(), |v| format!("{v:.2} ms"));
            writeln!(
                o,
                "| {} ms | ±{target:.0} us | {} | {} | {} | {} | {:.0} / {:.0} us | {} / {} |",
                r.configured_ms,
                cell(r.meshsim.p50_err_us),
                cell(r.meshsim.p99_err_us),
                cell(r.netem.p50_err_us),
                cell(r.netem.p99_err_us),
                r.control.p50_ms * 1e3,
                r.control.p99_ms * 1e3,
                ping(r.meshsim.ping_rtt_ms),
                ping(r.netem.ping_rtt_ms),
            )
            .unwrap();
        }
        writeln!(o).unwrap();
    }

    fn jitter_md(&self, o: &mut String) {
        if self.jitter.is_empty() {
            return;
        }
        let corr_ms = |dist| {
            Spec {
                jitter: JITTER,
                dist,
                ..Default::default()
            }
            .shape()
            .to_params(0)
            .jitter_corr_ns as f64
                / 1e6
        };
        let (normal_ms, pareto_ms) = (corr_ms(JitterDist::Normal), corr_ms(JitterDist::Pareto));
        let (secs, pareto_secs) = (
            scaled(jitter_seconds(JitterDist::Normal)),
            scaled(jitter_seconds(JitterDist::Pareto)),
        );
        writeln!(
            o,
            "## Jitter: 50 ms ± 10 ms\n\nProbes every {} ms for {secs} s ({pareto_secs} s for pareto); every shaper of a distribution at once, with the unshaped pair, whose median is subtracted. \
             meshsim's default jitter is time-correlated (correlation time T = {normal_ms:.0} ms here, 8 × the jitter; {pareto_ms:.0} ms, 32 × the jitter, for pareto, whose steep tail needs the slower process to keep departures in order without clamping), so one stream gives only about the probing time / T independent values: {} meshsim links run side by side (their processes are independent) and are pooled. \
             \"Effective\" is that count of independent values; the KS noise level is the distance that many independent samples stay under 99% of the time (1.63/√n). \
             KS is against the configured distribution as each shaper defines it: normal N(50, 10); uniform 40..60 ms; pareto: meshsim's is shape 3 standardised to sd 10 ms, netem's is its pareto.dist table (sd 8.2 ms, mean −0.3 ms, cut at 4 × the jitter). \
             Every held packet also leaves late by whatever the VM's timers add (the p50 delay error above, hundreds of microseconds, spread as widely), which smears sharp edges: pareto's lower edge jumps to a density of 0.26/ms, so a lateness of 0.2 ms alone costs a KS of about 0.05. \"KS, timers folded in\" is the distance from the configured distribution plus that lateness, as measured on the same shaper's fixed {} ms link in the delay section (the sum of the two, taken as independent): the shaper's shape without the emulator's timers. \
             Target: KS ≤ 0.05 and, for meshsim's default, 0 reordered.\n",
            JITTER_GAP.as_millis(),
            CORRELATED.len(),
            JITTER_LATENCY.as_millis()
        )
        .unwrap();
        writeln!(
            o,
            "| distribution | shaper | probes (effective) | mean − 50 ms (configured) | sd (configured) | KS (noise level) | KS, timers folded in | reordered |\n|---|---|---|---|---|---|---|---|"
        )
        .unwrap();
        for c in &self.jitter {
            for r in &c.rows {
                let (cm, csd) = r.reference.mean_sd();
                let reordered = if r.name.starts_with("meshsim default") {
                    format!("{} {}", r.reordered, mark(r.reordered == 0))
                } else {
                    r.reordered.to_string()
                };
                writeln!(
                    o,
                    "| {} | {} | {} ({}) | {:+.2} ms ({:+.2}) | {:.2} ms ({csd:.2}) | {:.3} {} ({:.3}) | {} | {reordered} |",
                    dist_name(c.dist),
                    r.name,
                    r.probes,
                    r.effective,
                    r.mean_ms - 50.0,
                    cm - 50.0,
                    r.sd_ms,
                    r.ks,
                    mark(r.ks <= 0.05),
                    r.ks_noise(),
                    r.ks_timers_text(),
                )
                .unwrap();
            }
        }
        let medians: Vec<String> = self
            .jitter
            .iter()
            .map(|c| format!("{:.0} us", c.control.p50_ms * 1e3))
            .collect();
        writeln!(
            o,
            "\nUnshaped median subtracted: {} (normal, uniform, pareto).\n",
            medians.join(", ")
        )
        .unwrap();
    }

    fn reorder_md(&self, o: &mut String) {
        let Some(r) = &self.reorder else {
            return;
        };
        writeln!(
            o,
            "## Reordering with jitter on\n\nNormal 50 ms ± 10 ms, {} probes at {} pkt/s, one flow per shaper and one over the unshaped pair, at once; a probe counts when it arrives after one sent later. Target: meshsim default 0.\n",
            r.probes,
            1000 / REORDER_GAP.as_millis()
        )
        .unwrap();
        writeln!(
            o,
            "| meshsim default (correlated) | meshsim independent | netem | unshaped |\n|---|---|---|---|"
        )
        .unwrap();
        writeln!(
            o,
            "| {} {} (of {} received) | {} (of {}) | {} (of {}) | {} (of {}) |\n",
            r.reordered[0],
            mark(r.reordered[0] == 0),
            r.received[0],
            r.reordered[1],
            r.received[1],
            r.reordered[2],
            r.received[2],
            r.reordered[3],
            r.received[3],
        )
        .unwrap();
    }

    fn loss_md(&self, o: &mut String) {
        if self.loss.is_empty() {
            return;
        }
        writeln!(
            o,
            "## Loss\n\nUDP, {} packets per shaper at {} pkt/s, both at once; lost = sent − received. The interval is the exact binomial 99% interval of the lost count; meshsim's link counter is shown too.\n",
            scaled(LOSS_PACKETS),
            1_000_000 / LOSS_GAP.as_micros()
        )
        .unwrap();
        writeln!(
            o,
            "| configured | 99% interval | meshsim lost (link counted) | netem lost |\n|---|---|---|---|"
        )
        .unwrap();
        for r in &self.loss {
            let (lo, hi) = binomial_interval(r.meshsim_sent, r.loss);
            let (nlo, nhi) = binomial_interval(r.netem_sent, r.loss);
            let within = |v: u64, lo: u64, hi: u64| mark(v >= lo && v <= hi);
            let interval = if (lo, hi) == (nlo, nhi) {
                format!("{lo}..{hi}")
            } else {
                format!("{lo}..{hi} / {nlo}..{nhi}")
            };
            writeln!(
                o,
                "| {:.0}% of {} | {interval} | {} ({:.2}%) {} ({}) | {} ({:.2}%) {} |",
                r.loss * 100.0,
                r.meshsim_sent,
                r.meshsim_lost,
                r.meshsim_lost as f64 * 100.0 / r.meshsim_sent.max(1) as f64,
                within(r.meshsim_lost, lo, hi),
                r.meshsim_counted,
                r.netem_lost,
                r.netem_lost as f64 * 100.0 / r.netem_sent.max(1) as f64,
                within(r.netem_lost, nlo, nhi),
            )
            .unwrap();
        }
        writeln!(o).unwrap();
    }

    fn cost_md(&self, o: &mut String) {
        if self.cost.is_empty() {
            return;
        }
        writeln!(
            o,
            "## Cost\n\nUDP 64-byte payloads at {COST_PPS} pkt/s ({} every {} ms, read as often) for {} s over a 10 ms link; {COST_ROUNDS} rounds of the three cases interleaved; the median over rounds and their range (packets: all rounds). CPU time of the whole VM per packet received, from /proc/stat: busy = wall time × CPUs − idle, which the kernel accounts exactly (it includes the probe programs' own sending and receiving, the same in every case, hence the column minus unshaped); softirq as the tick samples it, which is coarse. A shaper delivers each held burst from one timer event while the unshaped path delivers every packet inside its send call, so a shaped path can cost less per packet than the unshaped one under emulation; compare meshsim with netem.\n",
            COST_PPS as u128 * COST_TICK.as_millis() / 1000,
            COST_TICK.as_millis(),
            scaled(COST_SECONDS)
        )
        .unwrap();
        writeln!(
            o,
            "| shaper | packets | busy CPU per packet: median (rounds' range) | median minus unshaped | softirq per packet, tick-sampled | minus unshaped |\n|---|---|---|---|---|---|"
        )
        .unwrap();
        let median = |v: &[f64]| quantile(v, 0.5);
        let range = |v: &[f64]| {
            format!(
                "{:.1} us ({:.1}..{:.1})",
                median(v) / 1e3,
                v[0] / 1e3,
                v[v.len() - 1] / 1e3
            )
        };
        let Some(base) = self.cost.first() else {
            return;
        };
        for c in &self.cost {
            writeln!(
                o,
                "| {} | {} | {} | {:+.1} us | {} | {:+.1} us |",
                c.name,
                c.packets,
                range(&c.busy_ns),
                (median(&c.busy_ns) - median(&base.busy_ns)) / 1e3,
                range(&c.softirq_ns),
                (median(&c.softirq_ns) - median(&base.softirq_ns)) / 1e3,
            )
            .unwrap();
        }
        if let Some(ns) = self.classifier_ns {
            writeln!(
                o,
                "\nmeshsim's classifier itself, by the kernel's eBPF run-time statistics (`BPF_ENABLE_STATS`, one more round with them on): {ns:.0} ns per packet, both passes (the original and its clone). On this host's kernel, without emulation, `BPF_PROG_TEST_RUN` puts a link hit at ~53 ns and the clone at ~310 ns (`cargo xtask bench`)."
            )
            .unwrap();
        }
        writeln!(o).unwrap();
    }

    fn reconf_md(&self, o: &mut String) {
        if self.reconf.is_empty() {
            return;
        }
        writeln!(
            o,
            "## Reconfiguration\n\nA UDP flow at {} pkt/s crosses the link while it is changed, alternating 10 ms at 10 Mbit/s and 11 ms at 20 Mbit/s; lost = sent − received (nothing else drops). Time per change: meshsim's is each map update (median / mean); a `tc -batch` is one process for all changes (total / count); one process per change is what the seed paid for each `tc` command it ran. Target: 0 lost.\n",
            1000 / RECONF_GAP.as_millis()
        )
        .unwrap();
        writeln!(
            o,
            "| way | changes | time per change (median / mean) | packets | lost | reordered |\n|---|---|---|---|---|---|"
        )
        .unwrap();
        for r in &self.reconf {
            writeln!(
                o,
                "| {} | {} | {} / {} | {} | {} {} | {} |",
                r.name,
                r.changes,
                micros(r.median_us),
                micros(r.mean_us),
                r.sent,
                r.lost,
                mark(r.lost == 0),
                r.reordered
            )
            .unwrap();
        }
        writeln!(o).unwrap();
    }
}

fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1e3)
    } else {
        format!("{us:.1} us")
    }
}

fn tcp_md(o: &mut String, rows: &[TcpRow]) {
    writeln!(
        o,
        "| rate | flows | expected goodput | meshsim | netem |\n|---|---|---|---|---|"
    )
    .unwrap();
    for r in rows {
        let cell = |v: f64| {
            let e = r.error_pct(v);
            format!("{} ({e:+.1}%) {}", bits(v), mark(e.abs() <= 2.0))
        };
        writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            bits(r.rate_bps as f64),
            r.flows,
            bits(r.expected()),
            cell(r.meshsim_bps),
            cell(r.netem_bps)
        )
        .unwrap();
    }
    writeln!(o).unwrap();
}

// ---- the plot -----------------------------------------------------------------------------

const PLOT_BIN_MS: f64 = 1.0;

fn jitter_seconds(dist: JitterDist) -> u64 {
    match dist {
        JitterDist::Pareto | JitterDist::ParetoNormal => JITTER_SECONDS_PARETO,
        JitterDist::Normal | JitterDist::Uniform => JITTER_SECONDS,
    }
}

/// The delays (ms) a distribution's panel shows.
fn plot_range(dist: JitterDist) -> (f64, f64) {
    match dist {
        JitterDist::Uniform => (30.0, 70.0),
        JitterDist::Pareto | JitterDist::ParetoNormal => (40.0, 100.0),
        JitterDist::Normal => (10.0, 90.0),
    }
}

/// Step outline of the histogram of `delays` over `(lo, hi)`, as densities per ms.
fn histogram(delays: &[f64], (lo, hi): (f64, f64)) -> Vec<(f64, f64)> {
    let bins = ((hi - lo) / PLOT_BIN_MS) as usize;
    let mut counts = vec![0u64; bins];
    for &d in delays {
        if d >= lo && d < hi {
            counts[((d - lo) / PLOT_BIN_MS) as usize] += 1;
        }
    }
    let n = delays.len().max(1) as f64;
    let mut points = vec![(lo, 0.0)];
    for (i, c) in counts.iter().enumerate() {
        let d = *c as f64 / n / PLOT_BIN_MS;
        let x0 = lo + i as f64 * PLOT_BIN_MS;
        points.push((x0, d));
        points.push((x0 + PLOT_BIN_MS, d));
    }
    points.push((hi, 0.0));
    points
}

/// The density of `reference` over `(lo, hi)`. Where it jumps, the curve gets an exactly
/// vertical segment: plotters draws a thick, steep but not vertical segment past the end of the
/// axis.
fn curve(reference: &Reference, (lo, hi): (f64, f64)) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = (0..=800)
        .map(|i| lo + (hi - lo) * i as f64 / 800.0)
        .map(|x| (x, reference.density(x)))
        .collect();
    for edge in reference.jumps() {
        if edge > lo && edge < hi {
            let at = points.partition_point(|p| p.0 < edge);
            let below = reference.density(edge - 1e-9);
            let above = reference.density(edge + 1e-9);
            points.splice(at..at, [(edge, below), (edge, above)]);
        }
    }
    points
}

/// One line of a panel and its legend.
struct Curve {
    name: String,
    points: Vec<(f64, f64)>,
    style: ShapeStyle,
}

fn plot(path: &Path, cases: &[JitterCase], netem_pareto: &[f64]) -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow!("the bundled DejaVu font did not load"))?;
    let root = BitMapBackend::new(path, (1650, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(44);
    title.draw_text(
        "One-way delay, 50 ms ± 10 ms: configured vs meshsim vs netem (same run, VM under software emulation; unshaped median subtracted)",
        &("sans-serif", 19).into_font().color(&BLACK),
        (16, 14),
    )?;
    let colours = [
        RGBColor(31, 97, 196),
        RGBColor(46, 160, 67),
        RGBColor(214, 39, 40),
    ];
    for (area, case) in body.split_evenly((1, cases.len())).iter().zip(cases) {
        let range = plot_range(case.dist);
        let mut curves = vec![Curve {
            name: format!("configured ({})", dist_name(case.dist)),
            points: curve(&case.rows[0].reference, range),
            style: BLACK.stroke_width(2),
        }];
        if case.dist == JitterDist::Pareto {
            let table = Reference::new(case.dist, Shaper::Netem, netem_pareto);
            curves.push(Curve {
                name: "configured, netem's pareto table".to_owned(),
                points: curve(&table, range),
                style: RGBColor(150, 150, 150).stroke_width(2),
            });
        }
        for (row, colour) in case.rows.iter().zip(colours) {
            curves.push(Curve {
                name: format!("{} (n={})", row.name, row.probes),
                points: histogram(&row.delays_ms, range),
                style: colour.stroke_width(1),
            });
        }
        let top = curves
            .iter()
            .flat_map(|c| c.points.iter().map(|p| p.1))
            .fold(0.0, f64::max)
            * 1.25;
        let mut chart = ChartBuilder::on(area)
            .caption(dist_name(case.dist), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(58)
            .build_cartesian_2d(range.0..range.1, 0.0..top.max(1e-3))?;
        chart
            .configure_mesh()
            .x_desc("one-way delay (ms)")
            .y_desc("density (1/ms)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 14))
            .light_line_style(RGBColor(236, 236, 236))
            .draw()?;
        for c in curves {
            let style = c.style;
            chart
                .draw_series(LineSeries::new(c.points, style))?
                .label(c.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}
