//! The measurements, one method per section of the report: each sets up the lab's links,
//! runs the probes and returns its rows.

use super::*;

/// One link setting, applied the same way to either shaper.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec {
    pub(crate) latency: Duration,
    pub(crate) jitter: Duration,
    pub(crate) dist: JitterDist,
    /// meshsim only: the default time-correlated jitter, or independent samples.
    pub(crate) correlated: bool,
    pub(crate) rate_bps: u64,
    pub(crate) loss: f64,
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
    pub(crate) fn shape(&self) -> LinkShape {
        LinkShape {
            latency: self.latency,
            jitter: self.jitter,
            jitter_dist: self.dist,
            jitter_correlation: if self.correlated {
                LinkShape::default().jitter_correlation
            } else {
                None
            },
            bandwidth_bytes_per_s: self.rate_bps / 8,
            loss: self.loss,
            queue: None,
        }
    }

    /// `netem ...` arguments. netem's own packet limit (1000) stays: it is never what limits
    /// these cases, since TCP's GSO packets count as one each.
    pub(crate) fn netem_args(&self) -> Vec<String> {
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

pub(crate) struct Bench {
    pub(crate) lab: Lab,
    pub(crate) progress: Progress,
    /// netem's pareto table, standardised (jitter multiples), sorted.
    pub(crate) table: Vec<f64>,
    /// What the VM's timers add to a held packet, per shaper, from the fixed-delay case at the
    /// jitter cases' latency.
    pub(crate) lateness: Option<Lateness>,
}

/// Delays of a fixed-delay link beyond the configured delay and the unshaped path's median
/// (ms): the lateness of the timer that releases a held packet, which under emulation is
/// hundreds of microseconds and smears every sharp edge of a jitter distribution.
pub(crate) struct Lateness {
    pub(crate) meshsim: Vec<f64>,
    pub(crate) netem: Vec<f64>,
}

/// At most this many quantiles of the lateness go into the folded CDF.
pub(crate) const LATENESS_POINTS: usize = 200;

impl Lateness {
    pub(crate) fn of(p: &Probed, configured_ms: f64, base: &Base) -> Vec<f64> {
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
    pub(crate) fn say(&self, message: std::fmt::Arguments) {
        progress_line(&self.progress, message);
    }

    /// `probe` on this lab's nodes, saying when the kernel left probes unstamped.
    pub(crate) fn probe(&self, flows: &[Flow]) -> Result<Vec<Probed>> {
        let r = probe(&self.lab.nodes, flows, None)?;
        let unstamped: u64 = r.iter().map(|p| p.unstamped).sum();
        if unstamped > 0 {
            self.say(format_args!(
                "  note: {unstamped} probes had no kernel receive timestamp (stamped when read)"
            ));
        }
        Ok(r)
    }

    pub(crate) async fn meshsim(&mut self, (a, b): (usize, usize), spec: &Spec) {
        self.lab.link(a, b, &spec.shape()).await;
    }

    pub(crate) fn port_name(&self, node: usize) -> String {
        // tests/support names the bridge-side veth of node i `p{i+1}`.
        format!("p{}", node + 1)
    }

    pub(crate) fn tc(&self, args: &[String]) -> Result<()> {
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
    pub(crate) fn netem(&self, spec: Option<&Spec>) -> Result<()> {
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

    pub(crate) async fn delays(&mut self) -> Result<Vec<DelayRow>> {
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

    pub(crate) async fn jitters(&mut self) -> Result<Vec<JitterCase>> {
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

    pub(crate) async fn reordering(&mut self) -> Result<ReorderRow> {
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

    pub(crate) async fn tcp_rows(
        &mut self,
        latency: Duration,
        rates: &[u64],
    ) -> Result<Vec<TcpRow>> {
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

    pub(crate) async fn losses(&mut self) -> Result<Vec<LossRow>> {
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
    pub(crate) async fn costs(&mut self) -> Result<(Vec<CostSummary>, Option<f64>)> {
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
    pub(crate) fn cost_case(&self, name: &'static str, (a, b): (usize, usize)) -> Result<CostRow> {
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

    pub(crate) async fn reconfiguration(&mut self) -> Result<Vec<ReconfRow>> {
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
    pub(crate) fn with_flow<T: Send>(
        &self,
        work: impl FnOnce() -> Result<T> + Send,
    ) -> Result<(Probed, T)> {
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
