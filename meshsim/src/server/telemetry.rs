//! Traffic frames for the canvas: one task polls the per-link counters, computes what each
//! directed link carried since the previous poll, and broadcasts one serialised frame to
//! every WebSocket client.
//!
//! The counters are read through a [`ReadCounters`] of the task's own, never through the
//! Sim, so polling costs the Sim nothing; the deltas are computed once however many clients
//! watch; and a broadcast channel never waits for a receiver: a client that falls behind
//! loses the oldest frames (it gets the next ones), the task and the Sim carry on.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::extract::ws::Utf8Bytes;
use meshsim_common::LinkCounters;
use serde::Serialize;
use tokio::{
    sync::{broadcast, watch},
    task::JoinHandle,
    time::MissedTickBehavior,
};

use crate::{
    model::NodeId,
    sim::{MeshState, ReadCounters},
};

/// How many frames a client may fall behind before it skips some (about half a second).
pub const BACKLOG: usize = 8;

/// `{"type":"traffic", ...}`: what moved in the last `interval_ms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficFrame {
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The measured time since the previous frame (not the nominal tick), so rates computed
    /// from a frame are right even when a tick came late.
    pub interval_ms: u64,
    /// Directed links (a → b) that carried or dropped anything, by ascending (a, b).
    pub links: Vec<LinkTraffic>,
    /// Packets each node received over its links, for nodes that received any.
    pub nodes: Vec<NodeTraffic>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LinkTraffic {
    pub a: NodeId,
    pub b: NodeId,
    /// Sent over the link (not dropped).
    pub packets: u64,
    pub bytes: u64,
    /// Dropped by the link: random loss plus a full queue.
    pub dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeTraffic {
    pub id: NodeId,
    pub packets: u64,
}

/// One poll: every directed link's counter slot and counters.
pub type Poll = HashMap<(NodeId, NodeId), (u32, LinkCounters)>;

/// What moved between two polls `interval` apart.
///
/// A link that is new in `now`, or whose slot changed or whose counters went down (removed
/// and added again in between: its slot was zeroed), counts from zero.
pub fn frame(before: &Poll, now: &Poll, interval: Duration) -> TrafficFrame {
    let mut links: Vec<LinkTraffic> = now
        .iter()
        .filter_map(|(&(a, b), (slot, c))| {
            let base = match before.get(&(a, b)) {
                Some((s, old)) if s == slot && !went_down(old, c) => *old,
                _ => LinkCounters::default(),
            };
            let t = LinkTraffic {
                a,
                b,
                packets: c.packets - base.packets,
                bytes: c.bytes - base.bytes,
                dropped: (c.dropped_loss - base.dropped_loss)
                    + (c.dropped_queue - base.dropped_queue),
            };
            (t.packets > 0 || t.bytes > 0 || t.dropped > 0).then_some(t)
        })
        .collect();
    links.sort_by_key(|l| (l.a, l.b));
    let mut received: std::collections::BTreeMap<NodeId, u64> = Default::default();
    for l in &links {
        if l.packets > 0 {
            *received.entry(l.b).or_default() += l.packets;
        }
    }
    TrafficFrame {
        kind: "traffic",
        interval_ms: interval.as_millis().try_into().unwrap_or(u64::MAX),
        links,
        nodes: received
            .into_iter()
            .map(|(id, packets)| NodeTraffic { id, packets })
            .collect(),
    }
}

fn went_down(old: &LinkCounters, new: &LinkCounters) -> bool {
    new.packets < old.packets
        || new.bytes < old.bytes
        || new.dropped_loss < old.dropped_loss
        || new.dropped_queue < old.dropped_queue
}

/// Reads every link of `state` (a link whose read fails is left out of this poll).
fn poll(reader: &dyn ReadCounters, state: &MeshState) -> Poll {
    state
        .link_slots
        .iter()
        .filter_map(|(&pair, &slot)| match reader.link(slot) {
            Ok(c) => Some((pair, (slot, c))),
            Err(e) => {
                tracing::debug!(?pair, slot, "reading link counters: {e}");
                None
            }
        })
        .collect()
}

/// Starts the polling task; frames go to `tx` every `interval` while anyone listens. It ends
/// when the Sim stops (its state channel closes) or when aborted.
pub fn spawn(
    reader: Box<dyn ReadCounters>,
    mut state: watch::Receiver<Arc<MeshState>>,
    tx: broadcast::Sender<Utf8Bytes>,
    interval: Duration,
) -> JoinHandle<()> {
    let reader: Arc<dyn ReadCounters> = Arc::from(reader);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let mut previous: Option<(Instant, Poll)> = None;
        loop {
            ticker.tick().await;
            if state.has_changed().is_err() {
                return;
            }
            if tx.receiver_count() == 0 {
                // Nobody watches: read nothing, and start afresh for the next watcher.
                previous = None;
                continue;
            }
            let current = state.borrow_and_update().clone();
            let r = Arc::clone(&reader);
            // Map reads are syscalls, one per link: keep them off the async workers.
            let Ok(now_poll) = tokio::task::spawn_blocking(move || poll(&*r, &current)).await
            else {
                return;
            };
            let now = Instant::now();
            if let Some((then, before)) = &previous {
                let f = frame(before, &now_poll, now - *then);
                match serde_json::to_string(&f) {
                    Ok(text) => {
                        // An error only means every receiver left since the check above.
                        let _ = tx.send(Utf8Bytes::from(text));
                    }
                    Err(e) => tracing::error!("serialising a traffic frame: {e}"),
                }
            }
            previous = Some((now, now_poll));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(packets: u64, bytes: u64, loss: u64, queue: u64) -> LinkCounters {
        LinkCounters {
            packets,
            bytes,
            dropped_loss: loss,
            dropped_queue: queue,
        }
    }

    fn n(i: u32) -> NodeId {
        NodeId(i)
    }

    #[test]
    fn deltas_cover_only_links_that_moved_and_nodes_that_received() {
        let before: Poll = [
            ((n(1), n(2)), (0, counters(10, 1000, 0, 0))),
            ((n(2), n(1)), (1, counters(10, 1000, 0, 0))),
            ((n(2), n(3)), (2, counters(4, 400, 1, 0))),
        ]
        .into();
        let now: Poll = [
            ((n(1), n(2)), (0, counters(15, 1490, 0, 0))),
            ((n(2), n(1)), (1, counters(10, 1000, 0, 0))),
            ((n(2), n(3)), (2, counters(6, 600, 2, 3))),
            ((n(3), n(2)), (3, counters(2, 196, 0, 0))),
        ]
        .into();
        let f = frame(&before, &now, Duration::from_millis(50));
        assert_eq!(f.interval_ms, 50);
        assert_eq!(
            f.links,
            [
                LinkTraffic {
                    a: n(1),
                    b: n(2),
                    packets: 5,
                    bytes: 490,
                    dropped: 0
                },
                LinkTraffic {
                    a: n(2),
                    b: n(3),
                    packets: 2,
                    bytes: 200,
                    dropped: 4
                },
                // New since the last poll: counted from zero.
                LinkTraffic {
                    a: n(3),
                    b: n(2),
                    packets: 2,
                    bytes: 196,
                    dropped: 0
                },
            ]
        );
        assert_eq!(
            f.nodes,
            [
                NodeTraffic {
                    id: n(2),
                    packets: 7
                },
                NodeTraffic {
                    id: n(3),
                    packets: 2
                },
            ]
        );
    }

    #[test]
    fn a_link_added_again_counts_from_zero() {
        let before: Poll = [((n(1), n(2)), (0, counters(10, 1000, 0, 0)))].into();
        let reused_slot: Poll = [((n(1), n(2)), (0, counters(3, 300, 0, 0)))].into();
        let new_slot: Poll = [((n(1), n(2)), (7, counters(12, 1200, 0, 0)))].into();
        assert_eq!(
            frame(&before, &reused_slot, Duration::ZERO).links[0].packets,
            3
        );
        assert_eq!(
            frame(&before, &new_slot, Duration::ZERO).links[0].packets,
            12
        );
    }

    #[test]
    fn frames_serialise_as_the_protocol_says() {
        let now: Poll = [((n(1), n(2)), (0, counters(1, 98, 0, 0)))].into();
        let f = frame(&Poll::new(), &now, Duration::from_millis(51));
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({
                "type": "traffic",
                "interval_ms": 51,
                "links": [{"a": 1, "b": 2, "packets": 1, "bytes": 98, "dropped": 0}],
                "nodes": [{"id": 2, "packets": 1}],
            })
        );
    }
}
