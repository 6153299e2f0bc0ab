//! Matrix events: `GET /api/events` (the log, paged), `POST /api/nodes/{id}/messages` (send
//! as a node's test user), `GET /api/rooms/mesh` (the mesh room and whether it converged), and the `events` messages of the WebSocket, each event with its
//! sightings, its delivery time to every server and the routed path it took there.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::Duration,
};

use axum::{
    Router,
    extract::{State, ws::Utf8Bytes},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};
use tokio::{
    sync::{broadcast, watch},
    task::JoinHandle,
};

use super::{
    ApiError, AppState,
    extract::{Json, NodePath, Query, present},
};
use crate::{
    model::NodeId,
    sim::MeshState,
    workload::{
        NodeWorkload,
        matrix::{EventRecord, MAX_BODY_BYTES, Matrix, SendError},
    },
};

/// Events per page of `GET /api/events`, unless asked for fewer.
const PAGE: usize = 100;
/// The most a page holds.
const MAX_PAGE: usize = 1000;
/// Events a new WebSocket client gets at once, so its list is not empty.
pub const ON_CONNECT: usize = 50;
/// Updates are gathered this long into one WebSocket message.
const BATCH: Duration = Duration::from_millis(100);

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/events", get(list))
        .route("/nodes/{id}/messages", post(send))
        .route("/rooms/mesh", get(mesh_room))
}

/// `{room, members, converged}`: the mesh room, the nodes whose test user is in it, and
/// whether every one of their servers knows all the others are (only then does a message
/// from any of them reach all).
#[derive(Debug, Serialize)]
struct MeshRoomBody {
    room: Option<String>,
    members: Vec<String>,
    converged: bool,
}

async fn mesh_room(State(app): State<AppState>) -> Result<axum::Json<MeshRoomBody>, ApiError> {
    let matrix = matrix_of(&app)?;
    let Some(room) = matrix.mesh_room() else {
        return Ok(axum::Json(MeshRoomBody {
            room: None,
            members: Vec::new(),
            converged: false,
        }));
    };
    let converged = matrix.converged(&room).await;
    Ok(axum::Json(MeshRoomBody {
        members: matrix.members(&room).into_iter().collect(),
        room: Some(room),
        converged,
    }))
}

/// One event as the API and the WebSocket show it.
#[derive(Debug, Clone, Serialize)]
pub struct EventBody {
    #[serde(flatten)]
    pub record: EventRecord,
    /// Whether it is in the mesh room.
    pub mesh_room: bool,
    /// Delivery time to every server that saw it other than the origin, in ms.
    pub deliveries: BTreeMap<String, f64>,
    /// Servers whose test user was in the room when it was sent and have not seen it (yet).
    pub pending: Vec<String>,
    /// The routed path from the origin to every server that saw it or should, as of now.
    pub paths: BTreeMap<String, Vec<String>>,
}

impl EventBody {
    pub fn new(record: EventRecord, matrix: &Matrix, state: &MeshState) -> Self {
        let pending = matrix.awaiting(&record);
        let origin = record
            .origin
            .as_deref()
            .and_then(|o| o.parse::<NodeId>().ok());
        let mut paths = BTreeMap::new();
        if let Some(origin) = origin {
            for dst in record.seen.keys().chain(&pending) {
                let Ok(to) = dst.parse::<NodeId>() else {
                    continue;
                };
                if to != origin
                    && let Some(path) = state.routes.path(origin, to)
                {
                    paths.insert(dst.clone(), path.iter().map(|n| n.name()).collect());
                }
            }
        }
        EventBody {
            mesh_room: matrix.mesh_room().as_deref() == Some(record.room.as_str()),
            deliveries: record.deliveries(),
            pending,
            paths,
            record,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    /// Events after this seq (0: from the oldest kept).
    #[serde(default)]
    since: u64,
    #[serde(default)]
    limit: Option<usize>,
}

/// `{events: [...], next: seq to ask for after, last: the newest seq}`.
#[derive(Debug, Serialize)]
struct EventPage {
    events: Vec<EventBody>,
    next: u64,
    last: u64,
}

fn matrix_of(app: &AppState) -> Result<&Arc<Matrix>, ApiError> {
    app.matrix.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "this run has no homeservers: start meshsim with `--workload synapse` to see Matrix events"
                .into(),
        )
    })
}

async fn list(
    State(app): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<EventPage>, ApiError> {
    let matrix = matrix_of(&app)?;
    let limit = q.limit.unwrap_or(PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::invalid(
            "limit",
            format!("must be within 1..={MAX_PAGE}, got {limit}"),
        ));
    }
    let state = app.sim.state().borrow().clone();
    let records = matrix.events_since(q.since, limit);
    let next = records.last().map_or(q.since, |r| r.seq);
    Ok(axum::Json(EventPage {
        events: records
            .into_iter()
            .map(|r| EventBody::new(r, matrix, &state))
            .collect(),
        next,
        last: matrix.last_seq(),
    }))
}

/// `{room?, body}`: a text message from the node's test user; the room is the mesh room
/// unless named (an id the user is in).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Message {
    #[serde(default, deserialize_with = "present")]
    room: Option<String>,
    body: String,
}

#[derive(Debug, Serialize)]
struct SentBody {
    event_id: String,
    room: String,
}

async fn send(
    State(app): State<AppState>,
    NodePath(id): NodePath,
    Json(message): Json<Message>,
) -> Result<Response, ApiError> {
    if message.body.trim().is_empty() {
        return Err(ApiError::invalid("body", "must not be empty"));
    }
    if message.body.len() > MAX_BODY_BYTES {
        return Err(ApiError::invalid(
            "body",
            format!(
                "must be at most {MAX_BODY_BYTES} bytes, got {}",
                message.body.len()
            ),
        ));
    }
    let node = {
        let state = app.sim.state().borrow().clone();
        let facts = state
            .nodes
            .get(&id)
            .ok_or_else(|| ApiError::no_node_in_path(id))?;
        if facts.workload == NodeWorkload::None || app.matrix.is_none() {
            return Err(ApiError::Conflict(format!(
                "{} runs no homeserver",
                facts.name
            )));
        }
        facts.name.clone()
    };
    let matrix = matrix_of(&app)?;
    let sent = matrix
        .send(&node, message.room.as_deref(), &message.body)
        .await
        .map_err(|e| match e {
            SendError::UnknownRoom { .. } => ApiError::invalid("room", e.to_string()),
            SendError::NotReady(_) | SendError::NoMeshRoom => ApiError::Conflict(e.to_string()),
            SendError::Client { .. } => ApiError::Homeserver(e.to_string()),
        })?;
    app.desk.record(crate::scenario::step::Action::Send {
        from: id,
        body: Some(message.body.clone()),
        room: message.room.clone(),
        count: 1,
        every: std::time::Duration::ZERO,
    });
    Ok((
        StatusCode::CREATED,
        axum::Json(SentBody {
            event_id: sent.event_id,
            room: sent.room,
        }),
    )
        .into_response())
}

/// `{"type":"events","events":[EventBody...]}`.
#[derive(Serialize)]
struct EventsMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    events: &'a [EventBody],
}

/// The `events` message for `records`.
pub fn message(records: Vec<EventRecord>, matrix: &Matrix, state: &MeshState) -> Option<Utf8Bytes> {
    if records.is_empty() {
        return None;
    }
    let events: Vec<EventBody> = records
        .into_iter()
        .map(|r| EventBody::new(r, matrix, state))
        .collect();
    match serde_json::to_string(&EventsMessage {
        kind: "events",
        events: &events,
    }) {
        Ok(text) => Some(text.into()),
        Err(e) => {
            tracing::error!("serialising an events message: {e}");
            None
        }
    }
}

/// Forwards the observers' updates to WebSocket clients, gathered into one message every
/// [`BATCH`] (the latest version of each event). Ends when the Sim stops.
pub fn spawn(
    matrix: Arc<Matrix>,
    mut state: watch::Receiver<Arc<MeshState>>,
    feed: broadcast::Sender<Utf8Bytes>,
) -> JoinHandle<()> {
    let mut updates = matrix.subscribe();
    tokio::spawn(async move {
        loop {
            let mut batch: HashMap<u64, EventRecord> = HashMap::new();
            match updates.recv().await {
                Ok(first) => {
                    batch.insert(first.record.seq, first.record.clone());
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            }
            let deadline = tokio::time::Instant::now() + BATCH;
            while let Ok(Ok(more)) = tokio::time::timeout_at(deadline, updates.recv()).await {
                batch.insert(more.record.seq, more.record.clone());
            }
            if state.has_changed().is_err() {
                return;
            }
            let current = state.borrow_and_update().clone();
            let mut records: Vec<EventRecord> = batch.into_values().collect();
            records.sort_by_key(|r| r.seq);
            if let Some(text) = message(records, &matrix, &current) {
                let _ = feed.send(text);
            }
        }
    })
}
