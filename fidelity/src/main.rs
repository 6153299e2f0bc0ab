//! The fidelity report (issue 6): how close a link shaped by meshsim's classifier comes to
//! what was configured, next to the same link shaped by `tc netem`, both measured in one run.
//!
//! It needs sch_fq and sch_netem, so it runs in the VM: `cargo xtask fidelity` builds it, boots
//! Debian's kernel under qemu, runs it there and copies the report out. By hand (as root, on a
//! kernel with both modules):
//! `fidelity [OUT_DIR] [--host=TEXT] [--progress=FILE] [--quick] [--only=SECTION,...]`; it
//! writes `OUT_DIR/fidelity.md` and `OUT_DIR/fidelity.png` and prints the tables.
//!
//! One lab (`meshsim_tests::hub`: node namespaces on a bridge inside a hub namespace) holds every link.
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

mod cases;
mod cpu;
mod plot;
mod probe;
mod reference;
mod report;
mod tcp;

use std::{
    fmt::Write as _,
    fs,
    io::{ErrorKind, IoSliceMut, Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail, ensure};
use meshsim::datapath::{Datapath, LinkShape, tables::normal_cdf};
use meshsim_common::{JitterDist, LinkCounters, LinkKey};
use meshsim_stats::{binomial_interval, ks_sorted as ks, mean_sd, quantile, sorted};
use meshsim_tests::hub::{Lab, Node};
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

use crate::{cases::*, cpu::*, plot::*, probe::*, reference::*, report::*, tcp::*};

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

/// `n`, or a tenth of it in a quick run.
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
