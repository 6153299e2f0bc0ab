//! The results and their markdown report.

use super::*;

/// The unshaped pair's delay during a case.
pub(crate) struct Base {
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

impl Base {
    pub(crate) fn of(p: &Probed) -> Result<Base> {
        let s = sorted(&p.delays_ms);
        ensure!(!s.is_empty(), "no probe crossed the unshaped pair");
        Ok(Base {
            p50_ms: quantile(&s, 0.5),
            p99_ms: quantile(&s, 0.99),
        })
    }
}

pub(crate) struct DelayFigures {
    pub(crate) p50_err_us: f64,
    pub(crate) p99_err_us: f64,
    pub(crate) ping_rtt_ms: Option<f64>,
}

pub(crate) struct DelayRow {
    pub(crate) configured_ms: u64,
    pub(crate) meshsim: DelayFigures,
    pub(crate) netem: DelayFigures,
    pub(crate) control: Base,
}

pub(crate) struct JitterFigures {
    pub(crate) name: &'static str,
    pub(crate) probes: usize,
    pub(crate) effective: usize,
    pub(crate) mean_ms: f64,
    pub(crate) sd_ms: f64,
    pub(crate) ks: f64,
    /// KS against the configured distribution with the VM's timer lateness (measured on a
    /// fixed-delay link of the same shaper) folded in: the shape alone, without the emulator.
    pub(crate) ks_timers: Option<f64>,
    pub(crate) reordered: u64,
    pub(crate) reference: Reference,
    /// Delays minus the unshaped path's median, for the plot.
    pub(crate) delays_ms: Vec<f64>,
}

impl JitterFigures {
    /// `correlated`: (links pooled, correlation times each link ran) for meshsim's default mode.
    pub(crate) fn new(
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

    pub(crate) fn ks_timers_text(&self) -> String {
        self.ks_timers
            .map_or("-".to_owned(), |k| format!("{k:.3} {}", mark(k <= 0.05)))
    }

    /// The KS distance that independent samples of this count stay under 99% of the time.
    pub(crate) fn ks_noise(&self) -> f64 {
        1.628 / (self.effective.max(1) as f64).sqrt()
    }
}

pub(crate) struct JitterCase {
    pub(crate) dist: JitterDist,
    pub(crate) rows: Vec<JitterFigures>,
    pub(crate) control: Base,
}

/// meshsim default, meshsim independent, netem, unshaped.
pub(crate) struct ReorderRow {
    pub(crate) probes: u64,
    pub(crate) reordered: [u64; 4],
    pub(crate) received: [usize; 4],
}

pub(crate) struct TcpRow {
    pub(crate) rate_bps: u64,
    pub(crate) flows: usize,
    pub(crate) meshsim_bps: f64,
    pub(crate) netem_bps: f64,
}

impl TcpRow {
    pub(crate) fn expected(&self) -> f64 {
        self.rate_bps as f64 * PAYLOAD_SHARE
    }
    pub(crate) fn error_pct(&self, measured: f64) -> f64 {
        (measured / self.expected() - 1.0) * 100.0
    }
}

pub(crate) struct LossRow {
    pub(crate) loss: f64,
    pub(crate) meshsim_sent: u64,
    pub(crate) meshsim_lost: u64,
    pub(crate) meshsim_counted: u64,
    pub(crate) netem_sent: u64,
    pub(crate) netem_lost: u64,
}

/// One round of one cost case.
pub(crate) struct CostRow {
    pub(crate) name: &'static str,
    pub(crate) packets: u64,
    pub(crate) softirq_ns: f64,
    pub(crate) busy_ns: f64,
    /// The kernel's own accounting of the classifier's run time (both passes), per packet.
    pub(crate) classifier_ns: Option<f64>,
}

/// A cost case over all rounds: per-packet figures, sorted.
pub(crate) struct CostSummary {
    pub(crate) name: &'static str,
    pub(crate) packets: u64,
    pub(crate) busy_ns: Vec<f64>,
    pub(crate) softirq_ns: Vec<f64>,
}

pub(crate) struct ReconfRow {
    pub(crate) name: &'static str,
    pub(crate) changes: usize,
    pub(crate) median_us: f64,
    pub(crate) mean_us: f64,
    pub(crate) sent: u64,
    pub(crate) lost: u64,
    pub(crate) reordered: u64,
}

impl ReconfRow {
    pub(crate) fn new(
        name: &'static str,
        changes: usize,
        times_s: &[f64],
        p: &Probed,
    ) -> ReconfRow {
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

    pub(crate) fn summary(&self) -> String {
        format!(
            "reconfiguration, {}: {:.1} us per change, {} of {} packets lost, {} reordered",
            self.name, self.mean_us, self.lost, self.sent, self.reordered
        )
    }
}

pub(crate) struct Report {
    pub(crate) facts: String,
    pub(crate) delay: Vec<DelayRow>,
    pub(crate) jitter: Vec<JitterCase>,
    pub(crate) reorder: Option<ReorderRow>,
    pub(crate) tcp_latency: Vec<TcpRow>,
    pub(crate) rate: Vec<TcpRow>,
    pub(crate) loss: Vec<LossRow>,
    pub(crate) cost: Vec<CostSummary>,
    /// The classifier's own run time per packet, by the kernel's eBPF statistics.
    pub(crate) classifier_ns: Option<f64>,
    pub(crate) reconf: Vec<ReconfRow>,
}

pub(crate) fn dist_name(d: JitterDist) -> &'static str {
    match d {
        JitterDist::Uniform => "uniform",
        JitterDist::Normal => "normal",
        JitterDist::Pareto => "pareto",
        JitterDist::ParetoNormal => "paretonormal",
    }
}

pub(crate) fn bits(bps: f64) -> String {
    if bps >= 1e6 {
        format!("{:.2} Mbit/s", bps / 1e6)
    } else {
        format!("{:.1} kbit/s", bps / 1e3)
    }
}

pub(crate) fn mark(ok: bool) -> &'static str {
    if ok { "✓" } else { "✗" }
}

pub(crate) fn facts(host: &Option<String>) -> String {
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
    pub(crate) fn markdown(&self, took: Duration) -> String {
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

    pub(crate) fn delay_md(&self, o: &mut String) {
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

    pub(crate) fn jitter_md(&self, o: &mut String) {
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

    pub(crate) fn reorder_md(&self, o: &mut String) {
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

    pub(crate) fn loss_md(&self, o: &mut String) {
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

    pub(crate) fn cost_md(&self, o: &mut String) {
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

    pub(crate) fn reconf_md(&self, o: &mut String) {
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

pub(crate) fn micros(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1e3)
    } else {
        format!("{us:.1} us")
    }
}

pub(crate) fn tcp_md(o: &mut String, rows: &[TcpRow]) {
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
