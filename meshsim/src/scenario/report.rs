//! What a run leaves in its output directory beside the event log: the counters as CSV,
//! each message's deliveries as CSV, three plots (SVG) and `report.md`, which says what
//! happened in numbers: the steps and how late each ran, the traffic of each link, Matrix
//! delivery times per server, and for each partition what crossed it, what was late and
//! how long the mesh took to converge after healing.
//!
//! The figures are computed by pure functions of [`RunData`] (unit-tested); the plots and
//! files are drawn from those.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    fs, io,
    path::Path,
};

use plotters::prelude::*;

use super::{
    record::round3,
    run::{RunData, Sample},
    step::Action,
};
use crate::model::{CutChange, NodeId};

/// Plot colours, distinguishable on white.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x17, 0xbe, 0xcf),
];

/// How many links the traffic plot draws (the busiest).
const PLOTTED_LINKS: usize = 8;

/// One message's delivery to one server.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub event: String,
    pub origin: String,
    /// When it was sent, ms since the start.
    pub sent_ms: f64,
    pub node: String,
    /// When `node` saw it, ms since the start; `None`: never during the run.
    pub seen_ms: Option<f64>,
}

impl Delivery {
    pub fn delay_ms(&self) -> Option<f64> {
        self.seen_ms.map(|s| s - self.sent_ms)
    }
}

/// Every scenario-sent message to every homeserver other than its origin that was in the
/// run (seen anything) — `servers` are the homeservers at the end of the run.
pub fn deliveries(data: &RunData, servers: &BTreeSet<String>) -> Vec<Delivery> {
    let mut out = Vec::new();
    for sent in &data.sent {
        let record = data.events.get(&sent.event_id);
        let sent_ms = record
            .and_then(|r| r.sent_ms())
            .map_or(sent.t_ms, |wall| data.clock.from_wall(wall));
        for node in servers.iter().filter(|n| **n != sent.from) {
            let seen_ms = record
                .and_then(|r| r.seen.get(node))
                .map(|wall| data.clock.from_wall(*wall));
            out.push(Delivery {
                event: sent.event_id.clone(),
                origin: sent.from.clone(),
                sent_ms,
                node: node.clone(),
                seen_ms,
            });
        }
    }
    out
}

/// A partition from its step to the heal that ended it (or the run's end).
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionWindow {
    pub step: usize,
    pub side: BTreeSet<String>,
    pub from_ms: f64,
    /// When it healed; `None`: it did not during the run.
    pub healed_ms: Option<f64>,
}

/// What happened to the messages sent across one partition while it stood.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionOutcome {
    pub window: PartitionWindow,
    /// Messages sent during the partition (from either side).
    pub messages: usize,
    /// (message, server on the other side) pairs.
    pub crossings: usize,
    /// Crossed while the partition stood (should be none).
    pub crossed_during: usize,
    /// Arrived after the heal.
    pub late: usize,
    /// Never arrived during the run.
    pub lost: usize,
    /// From the heal to the last late arrival: how long the mesh took to converge.
    pub converged_after_ms: Option<f64>,
}

/// The partitions of the run, from its steps: a `partition` step opens one; a `heal` step
/// that names one of its nodes (or `heal all`) closes it.
pub fn partition_windows(data: &RunData) -> Vec<PartitionWindow> {
    let mut open: Vec<PartitionWindow> = Vec::new();
    let mut closed = Vec::new();
    for step in data.steps.iter().filter(|s| s.error.is_none()) {
        let names =
            |ids: &[NodeId]| -> BTreeSet<String> { ids.iter().map(|id| id.name()).collect() };
        match &step.action {
            Action::Cut(CutChange::Partition(ids)) => {
                let side = names(ids);
                // Nodes partitioned again leave their old side.
                for w in &mut open {
                    w.side.retain(|n| !side.contains(n));
                }
                open.push(PartitionWindow {
                    step: step.index,
                    side,
                    from_ms: step.done_ms,
                    healed_ms: None,
                });
            }
            Action::Cut(CutChange::Heal(healed)) => {
                let healed = healed.as_deref().map(names);
                let (done, still): (Vec<_>, Vec<_>) = open.into_iter().partition(|w| {
                    healed
                        .as_ref()
                        .is_none_or(|h| w.side.iter().any(|n| h.contains(n)))
                });
                open = still;
                closed.extend(done.into_iter().map(|mut w| {
                    w.healed_ms = Some(step.done_ms);
                    w
                }));
            }
            _ => {}
        }
    }
    closed.extend(open);
    closed.sort_by(|a, b| a.from_ms.total_cmp(&b.from_ms));
    closed
}

/// What crossed each partition, and when.
pub fn partition_outcomes(
    windows: &[PartitionWindow],
    deliveries: &[Delivery],
) -> Vec<PartitionOutcome> {
    windows
        .iter()
        .map(|w| {
            let end = w.healed_ms.unwrap_or(f64::INFINITY);
            let during: Vec<&Delivery> = deliveries
                .iter()
                .filter(|d| d.sent_ms >= w.from_ms && d.sent_ms < end)
                .filter(|d| w.side.contains(&d.origin) != w.side.contains(&d.node))
                .collect();
            let messages: BTreeSet<&str> = during.iter().map(|d| d.event.as_str()).collect();
            let crossed_during = during
                .iter()
                .filter(|d| d.seen_ms.is_some_and(|s| s < end))
                .count();
            let late: Vec<f64> = during
                .iter()
                .filter_map(|d| d.seen_ms.filter(|&s| s >= end))
                .collect();
            let lost = during.iter().filter(|d| d.seen_ms.is_none()).count();
            PartitionOutcome {
                window: w.clone(),
                messages: messages.len(),
                crossings: during.len(),
                crossed_during,
                late: late.len(),
                lost,
                converged_after_ms: w.healed_ms.and_then(|healed| {
                    (lost == 0 && !late.is_empty())
                        .then(|| late.iter().copied().fold(f64::MIN, f64::max) - healed)
                }),
            }
        })
        .collect()
}

/// The `q` quantile (0..=1) of `values`, by nearest rank; `None` when empty.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

/// Each link's bytes per second between consecutive samples: (t in s, bytes/s) by link.
pub fn link_rates(samples: &[Sample]) -> BTreeMap<(String, String), Vec<(f64, f64)>> {
    let mut rates: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for pair in samples.windows(2) {
        let (before, after) = (&pair[0], &pair[1]);
        let dt = (after.t_ms - before.t_ms) / 1000.0;
        // The last sample may follow the one before by a few ms: too short for a rate.
        if dt < 0.25 {
            continue;
        }
        for (link, now) in &after.links {
            let then = before.links.get(link).map_or(0, |c| c.bytes);
            let rate = now.bytes.saturating_sub(then) as f64 / dt;
            rates
                .entry(link.clone())
                .or_default()
                .push((after.t_ms / 1000.0, rate));
        }
    }
    rates
}

/// The summary figures a run's directory and a `--repeat` summary share.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Figures {
    pub steps_done: usize,
    pub steps_total: usize,
    pub late_p50_ms: Option<f64>,
    pub late_p99_ms: Option<f64>,
    pub late_max_ms: Option<f64>,
    pub messages: usize,
    pub delivery_p50_ms: Option<f64>,
    pub delivery_p95_ms: Option<f64>,
    pub undelivered: usize,
    /// The longest convergence after a heal.
    pub converged_after_ms: Option<f64>,
    pub failure: Option<String>,
}

pub fn figures(
    data: &RunData,
    deliveries: &[Delivery],
    partitions: &[PartitionOutcome],
) -> Figures {
    let late: Vec<f64> = data.steps.iter().map(|s| s.started_ms - s.due_ms).collect();
    let delays: Vec<f64> = deliveries.iter().filter_map(Delivery::delay_ms).collect();
    Figures {
        steps_done: data.steps.iter().filter(|s| s.error.is_none()).count(),
        steps_total: data.total_steps,
        late_p50_ms: quantile(&late, 0.5),
        late_p99_ms: quantile(&late, 0.99),
        late_max_ms: late.iter().copied().reduce(f64::max),
        messages: data.sent.len(),
        delivery_p50_ms: quantile(&delays, 0.5),
        delivery_p95_ms: quantile(&delays, 0.95),
        undelivered: deliveries.iter().filter(|d| d.seen_ms.is_none()).count(),
        converged_after_ms: partitions
            .iter()
            .filter_map(|p| p.converged_after_ms)
            .reduce(f64::max),
        failure: data.failure.clone(),
    }
}

/// What the report's header says about the run.
#[derive(Debug, Clone)]
pub struct RunFacts {
    pub scenario: String,
    pub version: String,
    pub backend: String,
    pub workload: String,
    /// The `--set` overrides, as given.
    pub overrides: Vec<String>,
    /// Homeservers at the end of the run.
    pub servers: BTreeSet<String>,
}

/// Writes counters.csv, deliveries.csv, the plots and report.md into `dir`; returns the
/// run's figures.
pub fn write(dir: &Path, data: &RunData, facts: &RunFacts) -> io::Result<Figures> {
    let deliveries = deliveries(data, &facts.servers);
    let windows = partition_windows(data);
    let partitions = partition_outcomes(&windows, &deliveries);
    let figures = figures(data, &deliveries, &partitions);

    write_counters_csv(&dir.join("counters.csv"), &data.samples)?;
    write_deliveries_csv(&dir.join("deliveries.csv"), &deliveries)?;
    let rates = link_rates(&data.samples);
    let markers: Vec<(f64, String)> = data
        .steps
        .iter()
        .filter(|s| {
            !matches!(
                s.action,
                Action::WaitFor(_) | Action::WaitUntil { .. } | Action::Send { .. }
            )
        })
        .map(|s| {
            let label = match &s.action {
                Action::Mark(name) => name.clone(),
                _ => s.kind.to_owned(),
            };
            (s.started_ms / 1000.0, label)
        })
        .collect();
    register_font();
    let plots = [
        (
            "traffic.svg",
            plot_traffic(
                &dir.join("traffic.svg"),
                &rates,
                &markers,
                data.ended_ms / 1000.0,
            ),
        ),
        (
            "delivery-cdf.svg",
            plot_cdf(&dir.join("delivery-cdf.svg"), &deliveries),
        ),
        (
            "delivery-time.svg",
            plot_over_time(
                &dir.join("delivery-time.svg"),
                &deliveries,
                &markers,
                data.ended_ms / 1000.0,
            ),
        ),
    ];
    let mut drawn = BTreeSet::new();
    for (name, result) in plots {
        match result {
            Ok(true) => {
                drawn.insert(name);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!("drawing {name}: {e}"),
        }
    }
    let text = report_text(data, facts, &figures, &deliveries, &partitions, &drawn);
    fs::write(dir.join("report.md"), text)?;
    Ok(figures)
}

/// Lays text out with the DejaVu font compiled in (plotters' ab_glyph needs one registered).
fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if plotters::style::register_font("sans-serif", FontStyle::Normal, dejavu::sans::regular())
            .is_err()
        {
            tracing::warn!("the bundled DejaVu font did not load: the report's plots lack text");
        }
    });
}

fn write_counters_csv(path: &Path, samples: &[Sample]) -> io::Result<()> {
    let mut out = String::from("t_ms,from,to,packets,bytes,dropped_loss,dropped_queue\n");
    for sample in samples {
        for ((from, to), c) in &sample.links {
            let _ = writeln!(
                out,
                "{},{from},{to},{},{},{},{}",
                round3(sample.t_ms),
                c.packets,
                c.bytes,
                c.dropped_loss,
                c.dropped_queue
            );
        }
    }
    fs::write(path, out)
}

fn write_deliveries_csv(path: &Path, deliveries: &[Delivery]) -> io::Result<()> {
    let mut out = String::from("event,origin,sent_ms,node,seen_ms,delay_ms\n");
    for d in deliveries {
        let opt = |v: Option<f64>| v.map(|v| round3(v).to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{},{},{},{},{},{}",
            d.event,
            d.origin,
            round3(d.sent_ms),
            d.node,
            opt(d.seen_ms),
            opt(d.delay_ms())
        );
    }
    fs::write(path, out)
}

fn ms(v: Option<f64>) -> String {
    v.map_or("–".to_owned(), |v| {
        if v.abs() >= 1000.0 {
            format!("{:.2} s", v / 1000.0)
        } else {
            format!("{v:.1} ms")
        }
    })
}

fn report_text(
    data: &RunData,
    facts: &RunFacts,
    figures: &Figures,
    deliveries: &[Delivery],
    partitions: &[PartitionOutcome],
    drawn: &BTreeSet<&str>,
) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "# Run of {}\n", facts.scenario);
    let _ = writeln!(
        r,
        "meshsim {}, backend {}, workload {}; {} homeservers at the end; {:.1} s.",
        facts.version,
        facts.backend,
        facts.workload,
        facts.servers.len(),
        data.ended_ms / 1000.0
    );
    if !facts.overrides.is_empty() {
        let _ = writeln!(r, "\nOverrides: `{}`.", facts.overrides.join("`, `"));
    }
    match &data.failure {
        None => {
            let _ = writeln!(r, "\n**Outcome: every step ran.**");
        }
        Some(why) => {
            let _ = writeln!(r, "\n**Outcome: stopped early: {why}.**");
        }
    }

    let _ = writeln!(r, "\n## Steps\n");
    let _ = writeln!(
        r,
        "Applied within {} of their time at the median, {} at p99, {} at most ({} of {} steps ran).\n",
        ms(figures.late_p50_ms),
        ms(figures.late_p99_ms),
        ms(figures.late_max_ms),
        figures.steps_done,
        figures.steps_total
    );
    let _ = writeln!(r, "| # | line | due | started | took | step | result |");
    let _ = writeln!(r, "|---|---|---|---|---|---|---|");
    for s in &data.steps {
        let _ = writeln!(
            r,
            "| {} | {} | {:.3} s | +{:.1} ms | {} | {} | {} |",
            s.index + 1,
            s.line,
            s.due_ms / 1000.0,
            s.started_ms - s.due_ms,
            ms(Some(s.done_ms - s.started_ms)),
            s.what.replace('|', "\\|"),
            s.error.as_deref().unwrap_or("ok").replace('|', "\\|")
        );
    }
    if !data.flaps.is_empty() {
        let downs = data.flaps.iter().filter(|f| f.down).count();
        let _ = writeln!(
            r,
            "\nFlapping links went down {downs} times (every edge is in events.jsonl)."
        );
    }

    let _ = writeln!(r, "\n## Traffic\n");
    if drawn.contains("traffic.svg") {
        let _ = writeln!(
            r,
            "![bytes per second on the busiest links, steps marked](traffic.svg)\n"
        );
    }
    let last = data.samples.last();
    if let Some(last) = last {
        let mut links: Vec<_> = last.links.iter().filter(|(_, c)| c.packets > 0).collect();
        links.sort_by_key(|(_, c)| std::cmp::Reverse(c.bytes));
        if links.is_empty() {
            let _ = writeln!(r, "No link carried a packet.");
        } else {
            let _ = writeln!(
                r,
                "Busiest directed links over the run (all of them are in counters.csv):\n"
            );
        }
        if !links.is_empty() {
            let _ = writeln!(
                r,
                "| link | packets | bytes | lost (loss or cut) | dropped (queue) |"
            );
            let _ = writeln!(r, "|---|---|---|---|---|");
        }
        for ((from, to), c) in links.iter().take(12) {
            let _ = writeln!(
                r,
                "| {from} → {to} | {} | {} | {} | {} |",
                c.packets, c.bytes, c.dropped_loss, c.dropped_queue
            );
        }
        let lost: u64 = last.links.values().map(|c| c.dropped_loss).sum();
        let _ = writeln!(
            r,
            "\n{} links, {lost} packets lost in all.",
            last.links.len()
        );
    } else {
        let _ = writeln!(r, "No counters were sampled.");
    }

    let _ = writeln!(r, "\n## Matrix delivery\n");
    if data.sent.is_empty() {
        let _ = writeln!(r, "The scenario sent no messages.");
    } else {
        let _ = writeln!(
            r,
            "{} messages sent; delivery (seen on a server minus sent) {} at the median, {} at p95; {} deliveries never happened during the run.\n",
            figures.messages,
            ms(figures.delivery_p50_ms),
            ms(figures.delivery_p95_ms),
            figures.undelivered
        );
        if drawn.contains("delivery-cdf.svg") {
            let _ = writeln!(r, "![delivery time per server, CDF](delivery-cdf.svg)\n");
        }
        if drawn.contains("delivery-time.svg") {
            let _ = writeln!(
                r,
                "![delivery time of each message over the run, steps marked](delivery-time.svg)\n"
            );
        }
        let _ = writeln!(
            r,
            "| server | delivered | p50 | p95 | max | not delivered |"
        );
        let _ = writeln!(r, "|---|---|---|---|---|---|");
        let mut by_node: BTreeMap<&str, (Vec<f64>, usize)> = BTreeMap::new();
        for d in deliveries {
            let e = by_node.entry(&d.node).or_default();
            match d.delay_ms() {
                Some(v) => e.0.push(v),
                None => e.1 += 1,
            }
        }
        for (node, (delays, missing)) in &by_node {
            let _ = writeln!(
                r,
                "| {node} | {} | {} | {} | {} | {missing} |",
                delays.len(),
                ms(quantile(delays, 0.5)),
                ms(quantile(delays, 0.95)),
                ms(delays.iter().copied().reduce(f64::max)),
            );
        }
    }

    if !partitions.is_empty() {
        let _ = writeln!(r, "\n## Partitions\n");
        for p in partitions {
            let side: Vec<&str> = p.window.side.iter().map(String::as_str).collect();
            let _ = writeln!(
                r,
                "- **{}** cut off at {:.1} s (step {}), {}: {} messages sent across it, {} (message, server) crossings; {} crossed while it stood, {} arrived after the heal, {} never arrived.{}",
                side.join(" "),
                p.window.from_ms / 1000.0,
                p.window.step + 1,
                p.window
                    .healed_ms
                    .map_or("never healed".to_owned(), |h| format!(
                        "healed at {:.1} s",
                        h / 1000.0
                    )),
                p.messages,
                p.crossings,
                p.crossed_during,
                p.late,
                p.lost,
                match p.converged_after_ms {
                    Some(c) => format!(" **Converged {} after healing.**", ms(Some(c))),
                    None => String::new(),
                }
            );
        }
    }
    let _ = writeln!(
        r,
        "\n## Files\n\n- `events.jsonl`: every step, Sim change, Matrix sighting, message and mark, with `t_ms` (since the start, monotonic) and `wall_ms`.\n- `counters.csv`: each directed link's counters, sampled every second.\n- `deliveries.csv`: each message to each server: sent, seen, delay.\n- `scenario.toml` and `run.json`: what ran, and with which settings."
    );
    r
}

/// Draws `series` over `x` from 0 to `x_end`, with markers; false when there is nothing.
fn plot_traffic(
    path: &Path,
    rates: &BTreeMap<(String, String), Vec<(f64, f64)>>,
    markers: &[(f64, String)],
    x_end: f64,
) -> Result<bool, Box<dyn std::error::Error>> {
    let mut busiest: Vec<(&(String, String), f64)> = rates
        .iter()
        .map(|(link, points)| (link, points.iter().map(|p| p.1).sum::<f64>()))
        .filter(|(_, total)| *total > 0.0)
        .collect();
    if busiest.is_empty() {
        return Ok(false);
    }
    busiest.sort_by(|a, b| b.1.total_cmp(&a.1));
    busiest.truncate(PLOTTED_LINKS);
    let y_max = busiest
        .iter()
        .flat_map(|(link, _)| rates[*link].iter().map(|p| p.1))
        .fold(1.0, f64::max)
        * 1.1;
    let frame = Frame {
        path,
        title: "Bytes per second on the busiest links",
        x: (x_end.max(1.0), "time since the start (s)"),
        y: (y_max, "bytes/s"),
        y_labels: 70,
        legend: SeriesLabelPosition::UpperRight,
    };
    draw_plot(frame, |chart| {
        draw_markers(chart, markers, y_max)?;
        for (i, (link, _)) in busiest.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(LineSeries::new(
                    rates[*link].iter().copied(),
                    colour.stroke_width(2),
                ))?
                .label(format!("{} → {}", link.0, link.1))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        Ok(())
    })?;
    Ok(true)
}

fn plot_cdf(path: &Path, deliveries: &[Delivery]) -> Result<bool, Box<dyn std::error::Error>> {
    let mut by_node: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for d in deliveries {
        if let Some(v) = d.delay_ms() {
            by_node.entry(&d.node).or_default().push(v);
        }
    }
    if by_node.is_empty() {
        return Ok(false);
    }
    let x_max = by_node.values().flatten().copied().fold(1.0, f64::max) * 1.05;
    let frame = Frame {
        path,
        title: "Delivery time per server (CDF)",
        x: (x_max, "delivery time (ms)"),
        y: (1.0, "fraction delivered"),
        y_labels: 60,
        legend: SeriesLabelPosition::LowerRight,
    };
    draw_plot(frame, |chart| {
        for (i, (node, delays)) in by_node.iter_mut().enumerate() {
            delays.sort_by(f64::total_cmp);
            let n = delays.len() as f64;
            let colour = PALETTE[i % PALETTE.len()];
            let points: Vec<(f64, f64)> = delays
                .iter()
                .enumerate()
                .flat_map(|(k, &v)| [(v, k as f64 / n), (v, (k + 1) as f64 / n)])
                .collect();
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))?
                .label(node.to_string())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
                });
        }
        Ok(())
    })?;
    Ok(true)
}

fn plot_over_time(
    path: &Path,
    deliveries: &[Delivery],
    markers: &[(f64, String)],
    x_end: f64,
) -> Result<bool, Box<dyn std::error::Error>> {
    let mut by_node: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for d in deliveries {
        if let Some(v) = d.delay_ms() {
            by_node
                .entry(&d.node)
                .or_default()
                .push((d.sent_ms / 1000.0, v));
        }
    }
    if by_node.is_empty() {
        return Ok(false);
    }
    let y_max = by_node.values().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let frame = Frame {
        path,
        title: "Delivery time of each message, by when it was sent",
        x: (x_end.max(1.0), "sent at (s since the start)"),
        y: (y_max, "delivery time (ms)"),
        y_labels: 70,
        legend: SeriesLabelPosition::UpperRight,
    };
    draw_plot(frame, |chart| {
        draw_markers(chart, markers, y_max)?;
        for (i, (node, points)) in by_node.iter().enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, colour.filled())))?
                .label(node.to_string())
                .legend(move |(x, y)| Circle::new((x + 8, y), 3, colour.filled()));
        }
        Ok(())
    })?;
    Ok(true)
}

type Chart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

type PlotResult = Result<(), Box<dyn std::error::Error>>;

/// A plot's file, title, axes (end of range, description) and legend place; every plot of
/// the report is 960 × 420 with the same margins, grid and legend style.
struct Frame<'a> {
    path: &'a Path,
    title: &'a str,
    x: (f64, &'a str),
    y: (f64, &'a str),
    /// The width left for the y axis's labels.
    y_labels: u32,
    legend: SeriesLabelPosition,
}

/// Draws `frame`, then what `series` draws in it (labelling its series), then the legend.
fn draw_plot(
    frame: Frame<'_>,
    series: impl FnOnce(&mut Chart<'_, '_>) -> PlotResult,
) -> PlotResult {
    let root = SVGBackend::new(frame.path, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(frame.title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(frame.y_labels)
        .build_cartesian_2d(0f64..frame.x.0, 0f64..frame.y.0)?;
    chart
        .configure_mesh()
        .x_desc(frame.x.1)
        .y_desc(frame.y.1)
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .draw()?;
    series(&mut chart)?;
    chart
        .configure_series_labels()
        .position(frame.legend)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A grey vertical line with the step's kind at each marker.
fn draw_markers(
    chart: &mut Chart<'_, '_>,
    markers: &[(f64, String)],
    y_max: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let grey = RGBColor(0x99, 0x99, 0x99);
    for (i, (t, label)) in markers.iter().enumerate() {
        // Labels of steps close in time go on three rows, so they do not overlap.
        let row = 0.97 - 0.05 * (i % 3) as f64;
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(*t, 0.0), (*t, y_max)],
            grey.stroke_width(1),
        )))?;
        chart.draw_series(std::iter::once(Text::new(
            label.clone(),
            (*t, y_max * row),
            ("sans-serif", 12).into_font().color(&grey),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use meshsim_common::LinkCounters;

    use super::*;
    use crate::scenario::{
        record::Clock,
        run::{SentMessage, StepRecord},
    };

    fn step(index: usize, action: Action, at_ms: f64) -> StepRecord {
        StepRecord {
            index,
            line: 10 + index,
            kind: action.kind(),
            what: action.describe(),
            action,
            due_ms: at_ms,
            started_ms: at_ms + 1.0,
            done_ms: at_ms + 2.0,
            error: None,
        }
    }

    fn partition(ids: &[u32]) -> Action {
        Action::Cut(CutChange::Partition(
            ids.iter().map(|&i| NodeId(i)).collect(),
        ))
    }

    fn data(steps: Vec<StepRecord>) -> RunData {
        RunData {
            clock: Clock::now(),
            total_steps: steps.len(),
            steps,
            sent: Vec::new(),
            samples: Vec::new(),
            flaps: Vec::new(),
            events: BTreeMap::new(),
            ended_ms: 60_000.0,
            failure: None,
        }
    }

    fn delivery(
        event: &str,
        origin: &str,
        sent_ms: f64,
        node: &str,
        seen_ms: Option<f64>,
    ) -> Delivery {
        Delivery {
            event: event.into(),
            origin: origin.into(),
            sent_ms,
            node: node.into(),
            seen_ms,
        }
    }

    #[test]
    fn a_partition_lasts_from_its_step_to_the_heal_that_names_it() {
        let d = data(vec![
            step(0, partition(&[1, 2]), 1000.0),
            step(1, partition(&[5]), 2000.0),
            step(
                2,
                Action::Cut(CutChange::Heal(Some(vec![NodeId(5)]))),
                3000.0,
            ),
            step(3, Action::Cut(CutChange::Heal(None)), 9000.0),
            step(4, partition(&[3]), 10_000.0),
        ]);
        let w = partition_windows(&d);
        let spans: Vec<(usize, Option<f64>)> = w.iter().map(|w| (w.step, w.healed_ms)).collect();
        assert_eq!(spans, [(0, Some(9002.0)), (1, Some(3002.0)), (4, None)]);
        assert_eq!(
            w[0].side,
            BTreeSet::from(["n1".to_owned(), "n2".to_owned()])
        );
    }

    #[test]
    fn messages_across_a_partition_are_late_lost_or_crossed() {
        let window = PartitionWindow {
            step: 0,
            side: BTreeSet::from(["n1".to_owned()]),
            from_ms: 1000.0,
            healed_ms: Some(5000.0),
        };
        let deliveries = [
            // Sent before the partition: not counted.
            delivery("$a", "n1", 500.0, "n2", Some(600.0)),
            // Across, arrived after the heal.
            delivery("$b", "n1", 2000.0, "n2", Some(5600.0)),
            delivery("$b", "n1", 2000.0, "n3", Some(7000.0)),
            // Across the other way, arrived during the partition (it leaked).
            delivery("$c", "n3", 3000.0, "n1", Some(3100.0)),
            // Same side of the cut: not counted.
            delivery("$c", "n3", 3000.0, "n2", Some(3050.0)),
        ];
        let outcome = &partition_outcomes(std::slice::from_ref(&window), &deliveries)[0];
        assert_eq!(
            (
                outcome.messages,
                outcome.crossings,
                outcome.crossed_during,
                outcome.late,
                outcome.lost
            ),
            (2, 3, 1, 2, 0)
        );
        assert_eq!(outcome.converged_after_ms, Some(2000.0));
        // One never arriving: no convergence figure.
        let mut lost = deliveries.to_vec();
        lost[2].seen_ms = None;
        let outcome = &partition_outcomes(&[window], &lost)[0];
        assert_eq!(
            (outcome.late, outcome.lost, outcome.converged_after_ms),
            (1, 1, None)
        );
    }

    #[test]
    fn quantiles_take_the_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(3.0));
        assert_eq!(quantile(&v, 0.99), Some(5.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }

    #[test]
    fn rates_are_bytes_between_samples_over_their_interval() {
        let sample = |t_ms: f64, bytes: u64| Sample {
            t_ms,
            links: BTreeMap::from([(
                ("n1".to_owned(), "n2".to_owned()),
                LinkCounters {
                    bytes,
                    ..LinkCounters::default()
                },
            )]),
        };
        let rates = link_rates(&[
            sample(0.0, 0),
            sample(1000.0, 500),
            sample(3000.0, 2500),
            sample(3010.0, 9000),
        ]);
        assert_eq!(
            rates[&("n1".to_owned(), "n2".to_owned())],
            [(1.0, 500.0), (3.0, 1000.0)],
            "the last, 10 ms after the one before, is too short for a rate"
        );
    }

    #[test]
    fn a_run_writes_its_report_plots_and_tables() {
        let mut d = data(vec![
            step(0, partition(&[1]), 1000.0),
            step(1, Action::Cut(CutChange::Heal(None)), 4000.0),
        ]);
        d.samples = (0..6)
            .map(|k| Sample {
                t_ms: k as f64 * 1000.0,
                links: BTreeMap::from([(
                    ("n1".to_owned(), "n2".to_owned()),
                    LinkCounters {
                        packets: k * 10,
                        bytes: k * 1000,
                        dropped_loss: k,
                        dropped_queue: 0,
                    },
                )]),
            })
            .collect();
        d.sent.push(SentMessage {
            step: 1,
            from: "n1".into(),
            event_id: "$x".into(),
            t_ms: 2000.0,
        });
        let dir = std::env::temp_dir().join(format!("meshsim-report-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let facts = RunFacts {
            scenario: "s.toml".into(),
            version: "test".into(),
            backend: "netns".into(),
            workload: "synapse".into(),
            overrides: vec!["client.loss_pct=1".into()],
            servers: BTreeSet::from(["n1".to_owned(), "n2".to_owned()]),
        };
        let figures = write(&dir, &d, &facts).unwrap();
        // The message never reached n2: one undelivered, and the partition says it was lost.
        assert_eq!((figures.messages, figures.undelivered), (1, 1));
        let report = fs::read_to_string(dir.join("report.md")).unwrap();
        assert!(report.contains("![bytes per second"), "{report}");
        assert!(
            report.contains("| n1 → n2 | 50 | 5000 | 5 | 0 |"),
            "{report}"
        );
        assert!(report.contains("1 never arrived"), "{report}");
        assert!(report.contains("client.loss_pct=1"), "{report}");
        let svg = fs::read_to_string(dir.join("traffic.svg")).unwrap();
        assert!(svg.contains("<svg") && svg.contains("n1 → n2") && svg.contains("partition"));
        let csv = fs::read_to_string(dir.join("counters.csv")).unwrap();
        assert_eq!(csv.lines().count(), 7);
        let deliveries = fs::read_to_string(dir.join("deliveries.csv")).unwrap();
        assert_eq!(deliveries.lines().nth(1), Some("$x,n1,2000,n2,,"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
