//! `/ws`: the canvas's live feed. On connect a full `state` (and, when nodes run
//! homeservers, their `workloads` and the latest `events`); a new full `state` after every
//! change; `workloads` when a node's workload starts, is ready or fails; `traffic` frames from
//! the telemetry task and `events` from the observers in between (docs/api.md, "The
//! WebSocket").
//!
//! Each client has its own task, and nothing it does reaches the Sim or the telemetry: state
//! comes from a watch channel (a slow client skips to the latest state), traffic and events
//! from a broadcast channel (a slow client skips messages), and a client that does not take
//! a message within [`SEND_TIMEOUT`] is dropped.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{
        State, WebSocketUpgrade,
        ws::{
            CloseFrame, Message, Utf8Bytes, WebSocket, close_code,
            rejection::WebSocketUpgradeRejection,
        },
    },
    response::{IntoResponse, Response},
    routing::get,
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;

use super::{
    ApiError, AppState, events,
    state::{StateBody, WorkloadBody},
};
use crate::{scenario::desk::Status, sim::MeshState, workload::WorkloadStatus};

/// How long one message may take to go out before the client counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients only say small things (close, ping); anything bigger is not ours.
const MAX_INCOMING: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

async fn upgrade(
    State(app): State<AppState>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    match ws {
        Ok(ws) => {
            let seat = match app.ws_seats.take() {
                Ok(seat) => seat,
                Err(busy) => return busy.into_response(),
            };
            ws.max_message_size(MAX_INCOMING)
                .on_upgrade(move |socket| async move {
                    session(socket, app).await;
                    drop(seat);
                })
        }
        Err(e) => {
            ApiError::BadRequest(format!("expected a WebSocket upgrade: {e}")).into_response()
        }
    }
}

/// `{"type":"state","version":N, ...GET /api/state}`.
#[derive(Serialize)]
struct StateMessage {
    #[serde(rename = "type")]
    kind: &'static str,
    version: u64,
    #[serde(flatten)]
    body: StateBody,
}

/// The state message of the latest version, made once however many clients send it: with a
/// thousand clients and a drag changing the mesh twenty times a second, serialising it per
/// client would cost more than everything else the server does.
#[derive(Default)]
pub struct StateCache(std::sync::Mutex<Option<(u64, Utf8Bytes)>>);

impl StateCache {
    fn message(&self, state: &Arc<MeshState>) -> Option<Utf8Bytes> {
        // Held while serialising, so clients woken by one change wait for one serialisation
        // instead of each making their own.
        let mut cached = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some((version, text)) = cached.as_ref()
            && *version == state.version
        {
            return Some(text.clone());
        }
        let text = state_message(state)?;
        *cached = Some((state.version, text.clone()));
        Some(text)
    }
}

fn state_message(state: &Arc<MeshState>) -> Option<Utf8Bytes> {
    let message = StateMessage {
        kind: "state",
        version: state.version,
        body: StateBody::new(state),
    };
    match serde_json::to_string(&message) {
        Ok(text) => Some(text.into()),
        Err(e) => {
            tracing::error!("serialising a state message: {e}");
            None
        }
    }
}

/// `{"type":"workloads","nodes":[{"id":3,"name":"n3","state":"ready","detail":...}]}`.
#[derive(Serialize)]
struct WorkloadsMessage {
    #[serde(rename = "type")]
    kind: &'static str,
    nodes: Vec<WorkloadBody>,
}

fn workloads_message(status: &WorkloadStatus) -> Option<Utf8Bytes> {
    let message = WorkloadsMessage {
        kind: "workloads",
        nodes: status
            .iter()
            .map(|(&id, s)| WorkloadBody::new(id, s))
            .collect(),
    };
    serde_json::to_string(&message).ok().map(Into::into)
}

/// `{"type":"scenario", ...GET /api/scenario}`.
#[derive(Serialize)]
struct ScenarioMessage<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(flatten)]
    status: &'a Status,
}

fn scenario_message(status: &Status) -> Option<Utf8Bytes> {
    let message = ScenarioMessage {
        kind: "scenario",
        status,
    };
    serde_json::to_string(&message).ok().map(Into::into)
}

async fn session(socket: WebSocket, app: AppState) {
    let (mut tx, mut rx) = socket.split();
    let mut state = app.sim.state();
    let mut scenario = app.desk.status();
    let mut feed = app.feed.subscribe();
    let mut shutdown = app.shutdown.clone();
    let mut workloads = app.workloads.clone();
    let current = state.borrow_and_update().clone();
    if send(&mut tx, app.ws_state.message(&current)).await.is_err() {
        return;
    }
    if let Some(status) = &mut workloads {
        let message = workloads_message(&status.borrow_and_update());
        if send(&mut tx, message).await.is_err() {
            return;
        }
    }
    if let Some(matrix) = &app.matrix {
        let latest = events::message(matrix.latest_events(events::ON_CONNECT), matrix, &current);
        if send(&mut tx, latest).await.is_err() {
            return;
        }
    }
    let message = scenario_message(&scenario.borrow_and_update());
    if send(&mut tx, message).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            changed = scenario.changed() => {
                if changed.is_err() {
                    continue;
                }
                let message = scenario_message(&scenario.borrow_and_update());
                if send(&mut tx, message).await.is_err() {
                    return;
                }
            }
            changed = async { workloads.as_mut()?.changed().await.ok() }, if workloads.is_some() => {
                let Some(status) = workloads.as_mut().filter(|_| changed.is_some()) else {
                    workloads = None;
                    continue;
                };
                let message = workloads_message(&status.borrow_and_update());
                if send(&mut tx, message).await.is_err() {
                    return;
                }
            }
            changed = state.changed() => {
                if changed.is_err() {
                    // The Sim has stopped.
                    close(&mut tx, close_code::AWAY, "meshsim stopped").await;
                    return;
                }
                let latest = state.borrow_and_update().clone();
                if send(&mut tx, app.ws_state.message(&latest)).await.is_err() {
                    return;
                }
            }
            frame = feed.recv() => match frame {
                Ok(text) => {
                    if send(&mut tx, Some(text)).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(skipped)) => {
                    tracing::debug!(skipped, "a slow WebSocket client skipped messages");
                }
                Err(RecvError::Closed) => return,
            },
            incoming = rx.next() => match incoming {
                // Pings are answered by the WebSocket layer; the API is read-only here.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            _ = async { drop(shutdown.wait_for(|stop| *stop).await) } => {
                close(&mut tx, close_code::AWAY, "meshsim is shutting down").await;
                return;
            }
        }
    }
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

/// Sends one text message; `Err` means the client is gone or too slow, and is dropped.
async fn send(tx: &mut Sink, text: Option<Utf8Bytes>) -> Result<(), ()> {
    let Some(text) = text else {
        return Ok(());
    };
    match tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Text(text))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            tracing::info!("dropping a WebSocket client that stopped reading");
            Err(())
        }
    }
}

async fn close(tx: &mut Sink, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = tokio::time::timeout(SEND_TIMEOUT, tx.send(Message::Close(Some(frame)))).await;
}
