//! The event log: every Matrix event the observers saw, with the moment each node saw it
//! (one host clock for all nodes, so the times compare), and the delivery time to each
//! server: seen on that server minus seen on the event's origin. Pure: the observers feed it
//! sightings, the server reads it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use serde::Serialize;

/// How many events the log keeps; older ones are forgotten first.
pub const LOG_CAPACITY: usize = 10_000;
/// Ephemeral events (typing) have no id: the same room and users within this long are one
/// event, later ones a new one.
const EPHEMERAL_WINDOW_MS: f64 = 30_000.0;

/// What kind of event a sighting is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A room event (a PDU): it has an id and an origin server.
    Timeline,
    /// A receipt or a typing notification (an EDU), as far as `/sync` shows it.
    Ephemeral,
}

/// One node's sight of one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Sighting {
    /// The node whose observer saw it (`n3`).
    pub node: String,
    /// When meshsim saw it there: milliseconds since the Unix epoch, on the host's clock.
    pub seen_ms: f64,
    pub kind: EventKind,
    /// The event id; for an ephemeral event, a key built from what identifies it.
    pub id: String,
    pub room: String,
    pub event_type: String,
    pub sender: Option<String>,
    /// The server it came from (the sender's server name: a node's name).
    pub origin: Option<String>,
    /// The origin's own timestamp of the event, milliseconds since the epoch.
    pub origin_server_ts: Option<u64>,
    /// A message's text.
    pub body: Option<String>,
}

/// An event and every node's sight of it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EventRecord {
    /// Its place in the log: grows by one with every new event.
    pub seq: u64,
    pub id: String,
    pub room: String,
    pub kind: EventKind,
    #[serde(rename = "type")]
    pub event_type: String,
    pub sender: Option<String>,
    pub origin: Option<String>,
    pub origin_server_ts: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// When each node saw it (ms since the epoch, host clock).
    pub seen: BTreeMap<String, f64>,
}

impl EventRecord {
    /// When it was sent: its origin's own timestamp (every node runs on this host, so that
    /// is the host's clock too), or, for an event without one (typing), when its origin's
    /// observer saw it.
    pub fn sent_ms(&self) -> Option<f64> {
        self.origin_server_ts
            .map(|ts| ts as f64)
            .or_else(|| self.seen_at_origin())
    }

    /// Delivery time to each server that saw it, other than the origin: seen there minus
    /// [`sent_ms`](Self::sent_ms), in ms. Empty while that is unknown.
    pub fn deliveries(&self) -> BTreeMap<String, f64> {
        let Some(sent) = self.sent_ms() else {
            return BTreeMap::new();
        };
        self.seen
            .iter()
            .filter(|(node, _)| Some(*node) != self.origin.as_ref())
            .map(|(node, at)| (node.clone(), at - sent))
            .collect()
    }

    /// When its origin saw it, if it has.
    pub fn seen_at_origin(&self) -> Option<f64> {
        self.origin.as_ref().and_then(|o| self.seen.get(o)).copied()
    }
}

/// A delivery that became known: the event reached `node`, `ms` after its origin saw it.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub node: String,
    pub ms: f64,
}

/// What one sighting changed.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    pub record: EventRecord,
    /// Deliveries this sighting made known (one, or several when it was the origin's,
    /// seen after others).
    pub deliveries: Vec<Delivery>,
}

#[derive(Debug, Default)]
pub struct EventLog {
    records: VecDeque<EventRecord>,
    /// seq by id; ephemeral keys map to the record of their latest window.
    by_id: HashMap<String, u64>,
    next_seq: u64,
    /// Events seen per node, ever (the log forgets, these counters do not).
    seen_per_node: BTreeMap<String, u64>,
    /// Which nodes' test users are in each room, as their observers last saw.
    members: BTreeMap<String, BTreeSet<String>>,
    /// Since when (host clock, ms) each node's test user is in each room, by (room, node);
    /// kept while a node is away, so what was sent meanwhile still awaits it.
    member_since: BTreeMap<(String, String), f64>,
}

impl EventLog {
    pub fn new() -> Self {
        EventLog {
            next_seq: 1,
            ..Default::default()
        }
    }

    /// Takes one sighting. A node's second sight of an event it saw already changes
    /// nothing (`None`).
    pub fn observe(&mut self, s: Sighting) -> Option<Observed> {
        let existing = self.by_id.get(&s.id).copied().and_then(|seq| {
            let record = self.get(seq)?;
            let expired = s.kind == EventKind::Ephemeral
                && record.seen.values().fold(f64::INFINITY, |a, &b| a.min(b))
                    < s.seen_ms - EPHEMERAL_WINDOW_MS;
            (!expired).then_some(seq)
        });
        let seq = match existing {
            Some(seq) => seq,
            None => self.insert(&s),
        };
        let index = self.index_of(seq)?;
        let record = &mut self.records[index];
        if record.seen.contains_key(&s.node) {
            return None;
        }
        let before = record.deliveries();
        record.seen.insert(s.node.clone(), s.seen_ms);
        // Fill in what an earlier sighting lacked (an origin's own sync has it all).
        record.sender = record.sender.take().or(s.sender);
        record.origin = record.origin.take().or(s.origin);
        record.origin_server_ts = record.origin_server_ts.or(s.origin_server_ts);
        record.body = record.body.take().or(s.body);
        *self.seen_per_node.entry(s.node.clone()).or_default() += 1;
        let record = record.clone();
        // This sighting's delivery, or every earlier one too when it made the sending time
        // known (an event without a timestamp, seen on its origin last).
        let deliveries = record
            .deliveries()
            .into_iter()
            .filter(|(node, _)| !before.contains_key(node))
            .map(|(node, ms)| Delivery { node, ms })
            .collect();
        Some(Observed { record, deliveries })
    }

    fn insert(&mut self, s: &Sighting) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.records.len() == LOG_CAPACITY
            && let Some(old) = self.records.pop_front()
            && self.by_id.get(&old.id) == Some(&old.seq)
        {
            self.by_id.remove(&old.id);
        }
        self.records.push_back(EventRecord {
            seq,
            id: s.id.clone(),
            room: s.room.clone(),
            kind: s.kind,
            event_type: s.event_type.clone(),
            sender: None,
            origin: None,
            origin_server_ts: None,
            body: None,
            seen: BTreeMap::new(),
        });
        self.by_id.insert(s.id.clone(), seq);
        seq
    }

    fn index_of(&self, seq: u64) -> Option<usize> {
        let first = self.records.front()?.seq;
        let index = seq.checked_sub(first)? as usize;
        (index < self.records.len()).then_some(index)
    }

    pub fn get(&self, seq: u64) -> Option<&EventRecord> {
        self.index_of(seq).map(|i| &self.records[i])
    }

    /// Events with `seq > after`, oldest first, at most `limit`.
    pub fn since(&self, after: u64, limit: usize) -> Vec<EventRecord> {
        self.records
            .iter()
            .filter(|r| r.seq > after)
            .take(limit)
            .cloned()
            .collect()
    }

    /// The latest `limit` events, oldest first.
    pub fn latest(&self, limit: usize) -> Vec<EventRecord> {
        let skip = self.records.len().saturating_sub(limit);
        self.records.iter().skip(skip).cloned().collect()
    }

    /// The highest seq handed out so far (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }

    /// How many events each node has seen.
    pub fn seen_per_node(&self) -> &BTreeMap<String, u64> {
        &self.seen_per_node
    }

    /// Records which rooms `node`'s test user is in at `now_ms` (host clock).
    pub fn set_rooms(&mut self, node: &str, rooms: &BTreeSet<String>, now_ms: f64) {
        self.member_since
            .retain(|(room, n), _| n != node || rooms.contains(room));
        for room in rooms {
            self.member_since
                .entry((room.clone(), node.to_owned()))
                .or_insert(now_ms);
        }
        self.set_members(node, rooms);
    }

    fn set_members(&mut self, node: &str, rooms: &BTreeSet<String>) {
        for (room, members) in &mut self.members {
            if !rooms.contains(room) {
                members.remove(node);
            }
        }
        for room in rooms {
            self.members
                .entry(room.clone())
                .or_default()
                .insert(node.to_owned());
        }
        self.members.retain(|_, m| !m.is_empty());
    }

    /// The nodes in `record`'s room that were in it when it was sent (seen on its origin,
    /// or wherever it was seen first) and have not seen it yet.
    pub fn awaiting(&self, record: &EventRecord) -> Vec<String> {
        let sent = record
            .seen_at_origin()
            .or_else(|| record.seen.values().copied().reduce(f64::min))
            .unwrap_or(f64::INFINITY);
        self.members(&record.room)
            .into_iter()
            .filter(|n| !record.seen.contains_key(n))
            .filter(|n| {
                self.member_since
                    .get(&(record.room.clone(), n.clone()))
                    .is_some_and(|&since| since <= sent)
            })
            .collect()
    }

    /// The rooms `node`'s test user is in.
    pub fn rooms_of(&self, node: &str) -> BTreeSet<String> {
        self.members
            .iter()
            .filter(|(_, m)| m.contains(node))
            .map(|(room, _)| room.clone())
            .collect()
    }

    /// The nodes whose test users are in `room`.
    pub fn members(&self, room: &str) -> BTreeSet<String> {
        self.members.get(room).cloned().unwrap_or_default()
    }

    /// Forgets a node's memberships (it was removed; its sightings stay, and so does since
    /// when it is in each room: it is away, not gone from them).
    pub fn forget_node(&mut self, node: &str) {
        self.set_members(node, &BTreeSet::new());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(node: &str, seen_ms: f64) -> Sighting {
        Sighting {
            node: node.into(),
            seen_ms,
            kind: EventKind::Timeline,
            id: "$e1".into(),
            room: "!r:n1".into(),
            event_type: "m.room.message".into(),
            sender: Some("@meshsim:n1".into()),
            origin: Some("n1".into()),
            origin_server_ts: Some(1_000),
            body: Some("hi".into()),
        }
    }

    #[test]
    fn deliveries_are_sightings_minus_the_sending_time() {
        let mut log = EventLog::new();
        let first = log.observe(message("n1", 1_010.0)).unwrap();
        assert_eq!(first.record.seq, 1);
        assert!(first.deliveries.is_empty());
        let second = log.observe(message("n3", 1_250.0)).unwrap();
        assert_eq!(
            second.deliveries,
            [Delivery {
                node: "n3".into(),
                ms: 250.0
            }],
            "from the origin's timestamp"
        );
        // A second sight by the same node changes nothing.
        assert!(log.observe(message("n3", 1_900.0)).is_none());
        let record = log.get(1).unwrap();
        assert_eq!(record.deliveries(), BTreeMap::from([("n3".into(), 250.0)]));
        assert_eq!(log.seen_per_node()["n3"], 1);
    }

    #[test]
    fn without_a_timestamp_a_sighting_is_delivered_once_the_origin_is_seen() {
        let mut log = EventLog::new();
        let untimed = |node: &str, at: f64| Sighting {
            origin_server_ts: None,
            ..message(node, at)
        };
        assert!(
            log.observe(untimed("n2", 1_100.0))
                .unwrap()
                .deliveries
                .is_empty()
        );
        let at_origin = log.observe(untimed("n1", 1_020.0)).unwrap();
        assert_eq!(
            at_origin.deliveries,
            [Delivery {
                node: "n2".into(),
                ms: 80.0
            }]
        );
    }

    #[test]
    fn a_join_seen_by_the_server_it_joined_through_first_is_still_a_delivery_from_its_sending() {
        // n2 joins through n3: n3 stores the join before n2 does.
        let mut log = EventLog::new();
        let join = |node: &str, at: f64| Sighting {
            event_type: "m.room.member".into(),
            sender: Some("@meshsim:n2".into()),
            origin: Some("n2".into()),
            body: None,
            ..message(node, at)
        };
        let at_n3 = log.observe(join("n3", 1_050.0)).unwrap();
        assert_eq!(
            at_n3.deliveries,
            [Delivery {
                node: "n3".into(),
                ms: 50.0
            }]
        );
        assert!(
            log.observe(join("n2", 1_300.0))
                .unwrap()
                .deliveries
                .is_empty()
        );
        assert_eq!(
            log.get(1).unwrap().deliveries(),
            BTreeMap::from([("n3".into(), 50.0)])
        );
    }

    #[test]
    fn typing_within_a_window_is_one_event_and_later_a_new_one() {
        let mut log = EventLog::new();
        let typing = |node: &str, at: f64| Sighting {
            kind: EventKind::Ephemeral,
            id: "typing:!r:n1:@meshsim:n1".into(),
            event_type: "m.typing".into(),
            body: None,
            origin_server_ts: None,
            ..message(node, at)
        };
        assert_eq!(log.observe(typing("n1", 0.0)).unwrap().record.seq, 1);
        assert_eq!(log.observe(typing("n2", 100.0)).unwrap().record.seq, 1);
        assert_eq!(log.observe(typing("n1", 40_000.0)).unwrap().record.seq, 2);
    }

    #[test]
    fn the_log_is_bounded_and_pages_by_seq() {
        let mut log = EventLog::new();
        for i in 0..LOG_CAPACITY + 5 {
            let mut s = message("n1", i as f64);
            s.id = format!("$e{i}");
            log.observe(s);
        }
        assert_eq!(log.latest(usize::MAX).len(), LOG_CAPACITY);
        assert!(log.get(1).is_none(), "the oldest are forgotten");
        let page = log.since(LOG_CAPACITY as u64, 3);
        assert_eq!(
            page.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [
                LOG_CAPACITY as u64 + 1,
                LOG_CAPACITY as u64 + 2,
                LOG_CAPACITY as u64 + 3
            ]
        );
        assert_eq!(log.last_seq(), LOG_CAPACITY as u64 + 5);
    }

    #[test]
    fn memberships_follow_what_observers_report() {
        let mut log = EventLog::new();
        log.set_rooms("n1", &BTreeSet::from(["!a".into(), "!b".into()]), 0.0);
        log.set_rooms("n2", &BTreeSet::from(["!a".into()]), 0.0);
        assert_eq!(
            log.members("!a"),
            BTreeSet::from(["n1".into(), "n2".into()])
        );
        log.set_rooms("n1", &BTreeSet::from(["!a".into()]), 0.0);
        assert!(log.members("!b").is_empty());
        log.forget_node("n2");
        assert_eq!(log.members("!a"), BTreeSet::from(["n1".into()]));
    }

    #[test]
    fn an_event_awaits_only_those_in_the_room_when_it_was_sent() {
        let mut log = EventLog::new();
        let room = BTreeSet::from(["!r:n1".to_owned()]);
        log.set_rooms("n1", &room, 0.0);
        log.set_rooms("n2", &room, 0.0);
        let sent = log.observe(message("n1", 100.0)).unwrap().record;
        // n3 joins after the message: it never waits for it.
        log.set_rooms("n3", &room, 200.0);
        assert_eq!(log.awaiting(&sent), ["n2"]);
        // n2 goes away and comes back: the message still awaits it.
        log.forget_node("n2");
        assert!(
            log.awaiting(&sent).is_empty(),
            "an absent node awaits nothing"
        );
        log.set_rooms("n2", &room, 300.0);
        assert_eq!(log.awaiting(&sent), ["n2"]);
        let seen = log.observe(message("n2", 400.0)).unwrap().record;
        assert!(log.awaiting(&seen).is_empty());
    }
}
