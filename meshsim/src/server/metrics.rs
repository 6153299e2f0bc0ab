//! `/metrics`: every directed link's counters and configured parameters, in Prometheus form.
//!
//! A collector reads the counter maps at scrape time (through its own [`ReadCounters`]), so
//! a scrape shows exactly what the maps hold then, and nothing is kept in between.
//!
//! prometheus-client writes OpenMetrics text, which Prometheus asks for first. Other
//! clients (curl, `promtool check metrics`, older scrapers) get the classic text format
//! (0.0.4), converted from it: OpenMetrics names a counter family without `_total` and ends
//! with `# EOF`, which the classic parser reads as a second, untyped family.

use std::sync::Arc;

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use meshsim_common::LinkCounters;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _, NoLabelSet},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::{Registry, Unit},
};
use tokio::sync::watch;

use super::{ApiError, AppState};
use crate::{
    model::{LinkParams, NodeId},
    sim::{MeshState, ReadCounters},
    workload::{
        NodeState, WorkloadStatus,
        matrix::{DELIVERY_BUCKETS, Matrix},
    },
};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
}

/// The registry of one server.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(
        state: watch::Receiver<Arc<MeshState>>,
        reader: Box<dyn ReadCounters>,
        matrix: Option<Arc<Matrix>>,
        workloads: Option<watch::Receiver<WorkloadStatus>>,
        limits: super::limits::LimitsCollector,
    ) -> Self {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(MeshCollector { state, reader }));
        registry.register_collector(Box::new(limits));
        if let Some(matrix) = matrix {
            registry.register_collector(Box::new(MatrixCollector { matrix }));
        }
        if let Some(status) = workloads {
            registry.register_collector(Box::new(WorkloadCollector { status }));
        }
        Self { registry }
    }

    /// The OpenMetrics text of everything, read now.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }
}

async fn scrape(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let metrics = Arc::clone(&app.metrics);
    // A scrape reads one map entry per directed link: syscalls, off the async workers.
    let text = tokio::task::spawn_blocking(move || metrics.encode())
        .await
        .map_err(|e| ApiError::Internal(format!("scrape task: {e}")))?
        .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    let (body, content_type) = if wants_openmetrics(&headers) {
        (spell_infinities(&text), OPENMETRICS)
    } else {
        (to_classic(&text), CLASSIC)
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        body,
    )
        .into_response())
}

fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| {
            v.split(';').next().is_some_and(|t| {
                t.trim()
                    .eq_ignore_ascii_case("application/openmetrics-text")
            })
        })
}

/// Spells infinite sample values `+Inf`/`-Inf` as both formats require: prometheus-client
/// writes f64 values with `dtoa`, which gives `inf`, and not every parser takes that (Go's
/// does, so promtool would not notice).
fn spell_infinities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let fixed = if line.starts_with('#') {
            None
        } else if let Some(series) = line.strip_suffix(" inf") {
            Some(format!("{series} +Inf"))
        } else {
            line.strip_suffix(" -inf")
                .map(|series| format!("{series} -Inf"))
        };
        out.push_str(fixed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// OpenMetrics text to the classic format: counter families are named with their `_total`
/// (as their samples are), and `# UNIT` and `# EOF` go.
pub fn to_classic(openmetrics: &str) -> String {
    let openmetrics = spell_infinities(openmetrics);
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            help = Some((name, text));
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let family = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            let kind = if kind == "unknown" { "untyped" } else { kind };
            if let Some((_, text)) = help.take().filter(|(n, _)| *n == name) {
                out.push_str(&format!("# HELP {family} {text}\n"));
            }
            out.push_str(&format!("# TYPE {family} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Matrix events: the delivery time to each server (one histogram per destination, so the
/// series grow with the nodes, not with pairs of them) and the events each node saw.
struct MatrixCollector {
    matrix: Arc<Matrix>,
}

impl std::fmt::Debug for MatrixCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MatrixCollector").finish_non_exhaustive()
    }
}

impl Collector for MatrixCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "meshsim_matrix_event_delivery",
            "Time from a Matrix event's sighting on its origin server to its sighting on this server, by destination.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for (dst, h) in self.matrix.delivery_histograms() {
            let mut buckets: Vec<(f64, u64)> = DELIVERY_BUCKETS
                .iter()
                .zip(h.buckets)
                .map(|(&bound, count)| (bound, count))
                .collect();
            buckets.push((f64::INFINITY, h.buckets[DELIVERY_BUCKETS.len()]));
            family
                .encode_family(&[("dst", dst.as_str())])?
                .encode_histogram::<NoLabelSet>(h.sum_seconds, h.count, &buckets, None)?;
        }
        let mut family = encoder.encode_descriptor(
            "meshsim_matrix_events_seen",
            "Matrix events (room events, receipts, typing) a node's observer saw.",
            None,
            MetricType::Counter,
        )?;
        for (node, seen) in self.matrix.seen_per_node() {
            ConstCounter::new(seen).encode(family.encode_family(&[("node", node.as_str())])?)?;
        }
        Ok(())
    }
}

/// Every node's workload at scrape time: up or not, how often it ended on its own and was
/// started again.
#[derive(Debug)]
struct WorkloadCollector {
    status: watch::Receiver<WorkloadStatus>,
}

impl Collector for WorkloadCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let status = self.status.borrow().clone();
        let mut family = encoder.encode_descriptor(
            "meshsim_workload_up",
            "1 while a node's workload is ready (a homeserver answers), 0 while it starts, restarts or has failed.",
            None,
            MetricType::Gauge,
        )?;
        for s in status.values() {
            let up = i64::from(s.state == NodeState::Ready);
            ConstGauge::new(up).encode(family.encode_family(&[("node", s.name.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "meshsim_workload_crashes",
            "Times a node's workload ended on its own (exited or was killed) since the node was made.",
            None,
            MetricType::Counter,
        )?;
        for s in status.values() {
            ConstCounter::new(u64::from(s.crashes))
                .encode(family.encode_family(&[("node", s.name.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "meshsim_workload_restarts",
            "Times a node's workload was started again after it ended on its own.",
            None,
            MetricType::Counter,
        )?;
        for s in status.values() {
            ConstCounter::new(u64::from(s.restarts))
                .encode(family.encode_family(&[("node", s.name.as_str())])?)?;
        }
        Ok(())
    }
}

/// Reads the mesh at scrape time.
struct MeshCollector {
    state: watch::Receiver<Arc<MeshState>>,
    reader: Box<dyn ReadCounters>,
}

impl std::fmt::Debug for MeshCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshCollector").finish_non_exhaustive()
    }
}

/// One configured parameter of a link, in base units.
type ParamValue = fn(&LinkParams) -> f64;

/// One directed link's labels and counters.
struct Row {
    src: String,
    dst: String,
    counters: LinkCounters,
}

impl Collector for MeshCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let state = self.state.borrow().clone();
        let name = |id: NodeId| {
            state
                .nodes
                .get(&id)
                .or(state.host.as_ref().filter(|h| h.id == id))
                .map_or_else(|| id.name(), |f| f.name.clone())
        };
        let rows: Vec<Row> = state
            .link_slots
            .iter()
            .filter_map(|(&(from, to), &slot)| match self.reader.link(slot) {
                Ok(counters) => Some(Row {
                    src: name(from),
                    dst: name(to),
                    counters,
                }),
                Err(e) => {
                    tracing::warn!(%from, %to, "reading link counters for /metrics: {e}");
                    None
                }
            })
            .collect();

        let mut counter = |name: &str, help: &str, value: fn(&LinkCounters) -> u64| {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for row in &rows {
                let labels = [("src", row.src.as_str()), ("dst", row.dst.as_str())];
                ConstCounter::new(value(&row.counters)).encode(family.encode_family(&labels)?)?;
            }
            Ok::<_, std::fmt::Error>(())
        };
        counter(
            "meshsim_link_packets",
            "Packets a directed link carried (not dropped).",
            |c| c.packets,
        )?;
        counter(
            "meshsim_link_bytes",
            "Bytes a directed link carried, as on the wire (GSO segments counted).",
            |c| c.bytes,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "meshsim_link_dropped_packets",
                "Packets a directed link dropped: loss (random, configured) or queue (the link's queue was full).",
                None,
                MetricType::Counter,
            )?;
            for row in &rows {
                for (reason, value) in [
                    ("loss", row.counters.dropped_loss),
                    ("queue", row.counters.dropped_queue),
                ] {
                    let labels = [
                        ("src", row.src.as_str()),
                        ("dst", row.dst.as_str()),
                        ("reason", reason),
                    ];
                    ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
                }
            }
        }

        match self.reader.global() {
            Ok(g) => {
                let globals = [
                    (
                        "meshsim_unlinked_packets",
                        "Frames between two nodes that are not linked, dropped (strict mode).",
                        g.unlinked_packets,
                    ),
                    (
                        "meshsim_unlinked_bytes",
                        "Bytes of frames between two nodes that are not linked.",
                        g.unlinked_bytes,
                    ),
                    (
                        "meshsim_unmatched_packets",
                        "Frames on no link that passed unshaped (ARP broadcasts, host traffic).",
                        g.unmatched_packets,
                    ),
                    (
                        "meshsim_unmatched_bytes",
                        "Bytes of frames on no link that passed unshaped.",
                        g.unmatched_bytes,
                    ),
                    (
                        "meshsim_flooded_packets",
                        "Copies of node frames the bridge flooded to a port that is not the destination's, dropped.",
                        g.flooded_packets,
                    ),
                    (
                        "meshsim_clone_failed_packets",
                        "Shaped packets the kernel would not clone; sent still charged to their socket.",
                        g.clone_failed,
                    ),
                ];
                for (name, help, value) in globals {
                    let family =
                        encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
                    ConstCounter::new(value).encode(family)?;
                }
            }
            Err(e) => tracing::warn!("reading global counters for /metrics: {e}"),
        }

        let params: Vec<(String, String, LinkParams)> = state
            .snapshot
            .links
            .iter()
            .flat_map(|l| {
                let (a, b) = (name(l.pair.a()), name(l.pair.b()));
                [(a.clone(), b.clone(), l.params), (b, a, l.params)]
            })
            // Client links: host -> node (up) and node -> host (down).
            .chain(state.host.iter().flat_map(|host| {
                state.nodes.keys().flat_map(|&id| {
                    let (up, down) = state.clients.of(id).directions();
                    [
                        (host.name.clone(), name(id), up),
                        (name(id), host.name.clone(), down),
                    ]
                })
            }))
            .collect();
        let gauges: [(&str, &str, ParamValue); 4] = [
            (
                "meshsim_link_latency_seconds",
                "Configured latency of a directed link.",
                |p| p.latency_ms / 1000.0,
            ),
            (
                "meshsim_link_jitter_seconds",
                "Configured jitter of a directed link.",
                |p| p.jitter_ms / 1000.0,
            ),
            (
                "meshsim_link_bandwidth_bytes_per_second",
                "Configured rate of a directed link (bandwidth_bps / 8); +Inf when unlimited.",
                |p| match p.bandwidth_bps {
                    0 => f64::INFINITY,
                    bps => bps as f64 / 8.0,
                },
            ),
            (
                "meshsim_link_loss_ratio",
                "Configured loss of a directed link, 0..1.",
                |p| p.loss_pct / 100.0,
            ),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (src, dst, p) in &params {
                let labels = [("src", src.as_str()), ("dst", dst.as_str())];
                ConstGauge::new(value(p)).encode(family.encode_family(&labels)?)?;
            }
        }

        let scalars: [(&str, &str, i64); 3] = [
            (
                "meshsim_nodes",
                "Nodes in the mesh.",
                state.snapshot.nodes.len() as i64,
            ),
            (
                "meshsim_links",
                "Links in the mesh (each is two directed links).",
                state.snapshot.links.len() as i64,
            ),
            (
                "meshsim_delays_enforced",
                "1 when the kernel has sch_fq and links are delayed and rate-limited, 0 when only counted.",
                i64::from(state.delays_enforced),
            ),
        ];
        for (name, help, value) in scalars {
            let family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(value).encode(family)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_get_their_total_in_the_classic_format() {
        let om = "# HELP meshsim_link_packets Packets.\n\
                  # TYPE meshsim_link_packets counter\n\
                  meshsim_link_packets_total{src=\"n1\",dst=\"n2\"} 5\n\
                  # HELP meshsim_nodes Nodes.\n\
                  # TYPE meshsim_nodes gauge\n\
                  meshsim_nodes 2\n\
                  # EOF\n";
        assert_eq!(
            to_classic(om),
            "# HELP meshsim_link_packets_total Packets.\n\
             # TYPE meshsim_link_packets_total counter\n\
             meshsim_link_packets_total{src=\"n1\",dst=\"n2\"} 5\n\
             # HELP meshsim_nodes Nodes.\n\
             # TYPE meshsim_nodes gauge\n\
             meshsim_nodes 2\n"
        );
    }

    #[test]
    fn infinities_are_spelt_as_the_formats_say() {
        let text = "# HELP x_inf Help ending in inf\nx_inf{a=\"inf\"} inf\ny -inf\nz 1\n";
        assert_eq!(
            spell_infinities(text),
            "# HELP x_inf Help ending in inf\nx_inf{a=\"inf\"} +Inf\ny -Inf\nz 1\n"
        );
    }

    #[test]
    fn openmetrics_is_served_to_who_asks_for_it() {
        let mut headers = HeaderMap::new();
        assert!(!wants_openmetrics(&headers));
        headers.insert(
            header::ACCEPT,
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.4"
                .parse()
                .unwrap(),
        );
        assert!(wants_openmetrics(&headers));
    }
}
