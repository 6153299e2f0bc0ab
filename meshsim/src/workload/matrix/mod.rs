//! Matrix itself, seen from inside every homeserver node, without patching any server: an
//! observer per node (its test user's `/sync`, from inside the node) feeds one event log with
//! the moment each node saw each event; the mesh room gives every run something to watch;
//! and any node's test user can send a message. The server reads the log for the canvas,
//! the API and `/metrics`.

pub mod client;
pub mod events;
mod observer;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::{sync::broadcast, task::AbortHandle};

pub use self::{
    client::{Client, ClientError},
    events::{Delivery, EventKind, EventLog, EventRecord, Observed, Sighting},
    observer::now_ms,
};
use crate::{
    net::NetNs,
    workload::{http::NodeHttp, synapse::CLIENT_PORT},
};

/// The mesh room's local alias (`#mesh:<the node that made it>`) and name.
pub const MESH_ROOM: &str = "mesh";
/// The longest message body the API sends (Matrix caps a whole event at 64 KiB).
pub const MAX_BODY_BYTES: usize = 32 * 1024;
/// How many updates a slow reader of [`Matrix::subscribe`] may fall behind.
const UPDATES: usize = 1024;
/// A node not yet in the mesh room tries to join it at most this often.
const JOIN_RETRY: Duration = Duration::from_secs(5);

/// Upper bounds of the delivery-time histogram, in seconds.
pub const DELIVERY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Delivery times to one server, in [`DELIVERY_BUCKETS`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeliveryHistogram {
    /// Count per bucket (not cumulative); one more for beyond the last bound.
    pub buckets: [u64; DELIVERY_BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl DeliveryHistogram {
    fn add(&mut self, seconds: f64) {
        let i = DELIVERY_BUCKETS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(DELIVERY_BUCKETS.len());
        self.buckets[i] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }
}

/// Why a message was not sent.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}'s homeserver is not ready yet: try again once it answers")]
    NotReady(String),
    #[error("{node}'s test user is not in the room {room:?}; its rooms: {rooms}")]
    UnknownRoom {
        node: String,
        room: String,
        rooms: String,
    },
    #[error("there is no mesh room yet: no homeserver is ready")]
    NoMeshRoom,
    #[error("sending as {node}: {source}")]
    Client {
        node: String,
        #[source]
        source: ClientError,
    },
}

/// A message the API sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sent {
    pub room: String,
    pub event_id: String,
}

/// A node's sending session, made on first use.
type Session = Arc<tokio::sync::Mutex<Option<Client>>>;

/// What meshsim knows of one observed node.
struct NodeView {
    ns: NetNs,
    /// Its first sync is done: it can send.
    ready: bool,
    syncs: u64,
    /// The last time it tried to join the mesh room.
    tried_join: Option<Instant>,
    /// Joins under way for it, off its observer's loop: they hold its namespace and a
    /// connection in it, so they end with the node (a namespace kept alive by a socket
    /// keeps its veth, and the run's end waited for it).
    errands: Vec<AbortHandle>,
}

/// The run's Matrix view, shared by every node's observer and the server.
pub struct Matrix {
    user: String,
    password: String,
    log: Mutex<EventLog>,
    histograms: Mutex<BTreeMap<String, DeliveryHistogram>>,
    updates: broadcast::Sender<Arc<Observed>>,
    /// Where each node's sync stands, kept when it goes: a node added back resumes there.
    since: Mutex<HashMap<String, String>>,
    nodes: Mutex<BTreeMap<String, NodeView>>,
    /// The mesh room; held while it is made, so only one node makes it.
    mesh_room: tokio::sync::Mutex<Option<String>>,
    /// The mesh room's id once made, for readers: the lock above is held through every
    /// node's join, which must not make a send or the room's state see no room.
    mesh_room_id: Mutex<Option<String>>,
    /// A session per node for sends and joins (the observer's is busy long-polling), each
    /// behind its own lock so a slow node never holds up another.
    senders: Mutex<HashMap<String, Session>>,
    txn: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Matrix {
    /// Observers log in as `user` with `password` (every node's test user).
    pub fn new(user: &str, password: &str) -> Arc<Self> {
        Arc::new(Matrix {
            user: user.to_owned(),
            password: password.to_owned(),
            log: Mutex::new(EventLog::new()),
            histograms: Mutex::default(),
            updates: broadcast::channel(UPDATES).0,
            since: Mutex::default(),
            nodes: Mutex::default(),
            mesh_room: tokio::sync::Mutex::new(None),
            mesh_room_id: Mutex::new(None),
            senders: Mutex::default(),
            txn: AtomicU64::new(0),
        })
    }

    /// Observes `node`, whose homeserver answers, until the returned future is dropped
    /// (the node's workload stops).
    pub async fn observe(self: Arc<Self>, node: String, ns: NetNs) {
        lock(&self.nodes).insert(
            node.clone(),
            NodeView {
                ns: ns.clone(),
                ready: false,
                syncs: 0,
                tried_join: None,
                errands: Vec::new(),
            },
        );
        observer::observe(self, node, ns).await;
    }

    /// `node` is gone: it is no longer in any room and cannot send. Where its sync stood is
    /// kept, for when it comes back.
    pub fn forget(&self, node: &str) {
        if let Some(view) = lock(&self.nodes).remove(node) {
            for errand in view.errands {
                errand.abort();
            }
        }
        lock(&self.senders).remove(node);
        lock(&self.log).forget_node(node);
    }

    fn since(&self, node: &str) -> Option<String> {
        lock(&self.since).get(node).cloned()
    }

    /// A sync of `node` came back: where it stands, and its rooms.
    fn synced(&self, node: &str, next: String, rooms: &BTreeSet<String>) {
        lock(&self.since).insert(node.to_owned(), next);
        lock(&self.log).set_rooms(node, rooms, now_ms());
        if let Some(n) = lock(&self.nodes).get_mut(node) {
            n.ready = true;
            n.syncs += 1;
        }
    }

    fn record(&self, sighting: Sighting) {
        let Some(observed) = lock(&self.log).observe(sighting) else {
            return;
        };
        let mut histograms = lock(&self.histograms);
        for delivery in &observed.deliveries {
            histograms
                .entry(delivery.node.clone())
                .or_default()
                .add(delivery.ms.max(0.0) / 1000.0);
        }
        drop(histograms);
        let _ = self.updates.send(Arc::new(observed));
    }

    /// After each sync of `node`: joins rooms it is invited to that Synapse has not yet
    /// accepted for it, and makes or joins the mesh room. Off the observer's loop (a join over
    /// federation can take seconds on a slow mesh, and must not delay what the observer sees).
    fn after_sync(self: &Arc<Self>, node: &str, invited: Vec<String>) {
        let in_mesh_room = self
            .mesh_room()
            .is_some_and(|room| lock(&self.log).members(&room).contains(node));
        if invited.is_empty() && in_mesh_room {
            return;
        }
        let matrix = Arc::clone(self);
        let name = node.to_owned();
        let node = name.clone();
        let errand = tokio::spawn(async move {
            let Ok((session, ns)) = matrix.session_of(&node) else {
                return;
            };
            let mut session = session.lock().await;
            let Ok(client) = matrix.logged_in(&node, ns, &mut session).await else {
                return;
            };
            for room in invited {
                if let Err(e) = client.join(&room, &[]).await {
                    tracing::debug!(node = %node, "joining {room} on invite: {e}");
                }
            }
            if !in_mesh_room {
                matrix.join_mesh_room(&node, client).await;
            }
        })
        .abort_handle();
        match lock(&self.nodes).get_mut(&name) {
            Some(view) => {
                view.errands.retain(|e| !e.is_finished());
                view.errands.push(errand);
            }
            // Forgotten meanwhile.
            None => errand.abort(),
        }
    }

    /// `node`'s sending session and namespace, when it is observed and has synced.
    fn session_of(&self, node: &str) -> Result<(Session, NetNs), SendError> {
        let ns = match lock(&self.nodes).get(node) {
            Some(entry) if entry.ready => entry.ns.clone(),
            _ => return Err(SendError::NotReady(node.to_owned())),
        };
        let session = Arc::clone(lock(&self.senders).entry(node.to_owned()).or_default());
        Ok((session, ns))
    }

    /// The session, logged in first if it is not.
    async fn logged_in<'a>(
        &self,
        node: &str,
        ns: NetNs,
        session: &'a mut Option<Client>,
    ) -> Result<&'a mut Client, SendError> {
        if session.is_none() {
            let http = NodeHttp::new(ns, CLIENT_PORT);
            let client = Client::login(http, &self.user, &self.password)
                .await
                .map_err(|source| SendError::Client {
                    node: node.to_owned(),
                    source,
                })?;
            *session = Some(client);
        }
        Ok(session.as_mut().expect("logged in above"))
    }

    /// Makes the mesh room on `node` if there is none, or has `node` join it (through the
    /// servers in it), unless it is in it or tried a moment ago.
    async fn join_mesh_room(&self, node: &str, session: &mut Client) {
        // Held through the join too: one join at a time lets every server learn of the
        // others. With joins at once, six servers still did not all know each other after
        // 300 s (CI's partition scenario).
        let mut room = self.mesh_room.lock().await;
        match room.as_ref() {
            None => match session.create_room(MESH_ROOM, MESH_ROOM).await {
                Ok(id) => {
                    tracing::info!("{node} made the mesh room #{MESH_ROOM}:{node} ({id})");
                    *lock(&self.mesh_room_id) = Some(id.clone());
                    *room = Some(id);
                }
                Err(e) => tracing::warn!("{node} could not make the mesh room: {e}"),
            },
            Some(id) => {
                let members = lock(&self.log).members(id);
                if members.contains(node) {
                    return;
                }
                {
                    let mut nodes = lock(&self.nodes);
                    let Some(entry) = nodes.get_mut(node) else {
                        return;
                    };
                    if entry.tried_join.is_some_and(|t| t.elapsed() < JOIN_RETRY) {
                        return;
                    }
                    entry.tried_join = Some(Instant::now());
                }
                let via: Vec<String> = members.into_iter().collect();
                match session.join(id, &via).await {
                    Ok(_) => tracing::debug!("{node} joined the mesh room"),
                    Err(e) => tracing::debug!("{node} could not join the mesh room yet: {e}"),
                }
            }
        }
    }

    /// Updates as they happen: an event and what its latest sighting made known.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Observed>> {
        self.updates.subscribe()
    }

    /// Events after `seq`, oldest first, at most `limit`.
    pub fn events_since(&self, seq: u64, limit: usize) -> Vec<EventRecord> {
        lock(&self.log).since(seq, limit)
    }

    /// The latest `limit` events, oldest first.
    pub fn latest_events(&self, limit: usize) -> Vec<EventRecord> {
        lock(&self.log).latest(limit)
    }

    pub fn last_seq(&self) -> u64 {
        lock(&self.log).last_seq()
    }

    /// The nodes in `record`'s room that were in it when it was sent and have not seen it.
    pub fn awaiting(&self, record: &EventRecord) -> Vec<String> {
        lock(&self.log).awaiting(record)
    }

    /// The nodes whose test users are in `room`.
    pub fn members(&self, room: &str) -> BTreeSet<String> {
        lock(&self.log).members(room)
    }

    /// Events seen per node, ever.
    pub fn seen_per_node(&self) -> BTreeMap<String, u64> {
        lock(&self.log).seen_per_node().clone()
    }

    /// Delivery times per destination server.
    pub fn delivery_histograms(&self) -> BTreeMap<String, DeliveryHistogram> {
        lock(&self.histograms).clone()
    }

    /// How many syncs `node`'s observer has made (0 when it is not observed).
    pub fn syncs(&self, node: &str) -> u64 {
        lock(&self.nodes).get(node).map_or(0, |n| n.syncs)
    }

    /// Whether `node` is observed and can send.
    pub fn is_ready(&self, node: &str) -> bool {
        lock(&self.nodes).get(node).is_some_and(|n| n.ready)
    }

    /// The mesh room's id; `None` until it is made.
    pub fn mesh_room(&self) -> Option<String> {
        lock(&self.mesh_room_id).clone()
    }

    /// Whether every server in `room` knows every other one is in it, as each server itself
    /// says (`joined_members`, asked inside each node). Only then does a message from any of
    /// them reach all: a server sends an event to the servers *it* knows are in the room,
    /// and a join still on its way to the sender leaves the joiner out of that message
    /// (it learns of it only with a later event that refers back to it).
    pub async fn converged(&self, room: &str) -> bool {
        let members = self.members(room);
        if members.is_empty() {
            return false;
        }
        for node in &members {
            let Ok((session, ns)) = self.session_of(node) else {
                return false;
            };
            let mut session = session.lock().await;
            let Ok(client) = self.logged_in(node, ns, &mut session).await else {
                return false;
            };
            let Ok(users) = client.joined_members(room).await else {
                return false;
            };
            let servers: BTreeSet<String> = users
                .iter()
                .filter_map(|u| u.split_once(':').map(|(_, server)| server.to_owned()))
                .collect();
            if !members.is_subset(&servers) {
                return false;
            }
        }
        true
    }

    /// Sends `body` as `node`'s test user to `room` (the mesh room when `None`).
    pub async fn send(
        &self,
        node: &str,
        room: Option<&str>,
        body: &str,
    ) -> Result<Sent, SendError> {
        let (session, ns) = self.session_of(node)?;
        let room = match room {
            Some(room) => room.to_owned(),
            None => self.mesh_room().ok_or(SendError::NoMeshRoom)?,
        };
        let members = lock(&self.log).members(&room);
        if !members.contains(node) {
            let rooms = lock(&self.log)
                .rooms_of(node)
                .into_iter()
                .collect::<Vec<_>>()
                .join(", ");
            return Err(SendError::UnknownRoom {
                node: node.to_owned(),
                room,
                rooms: if rooms.is_empty() {
                    "none".into()
                } else {
                    rooms
                },
            });
        }
        let txn = format!(
            "meshsim-{}-{}",
            std::process::id(),
            self.txn.fetch_add(1, Ordering::Relaxed)
        );
        let mut session = session.lock().await;
        let client = self.logged_in(node, ns, &mut session).await?;
        match client.send_text(&room, &txn, body).await {
            Ok(event_id) => Ok(Sent { room, event_id }),
            Err(source) => {
                // A session the server forgot (or a broken connection) is made anew next time.
                *session = None;
                Err(SendError::Client {
                    node: node.to_owned(),
                    source,
                })
            }
        }
    }
}
