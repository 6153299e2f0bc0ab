//! `/api/nodes`: create at (x, y) running the run's workload or nothing, read one with its
//! neighbours and routes, move, delete.

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize};

use super::{
    ApiError, AppState,
    extract::{Json, NodePath, present},
    state::NodeBody,
};
use crate::{
    model::NodeId,
    scenario::step::Action,
    workload::{NodeWorkload, node_workload, restart::Restart},
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/nodes", post(create))
        .route("/nodes/{id}", get(read).patch(move_to).delete(remove))
}

/// A position on the canvas. Both coordinates are required: a `null` (what a browser sends
/// for NaN) is refused rather than taken as "keep the old one".
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Position {
    x: f64,
    y: f64,
}

/// A new node: where, and optionally what it runs (`"none"`, or the run's workload, which is
/// also what it runs when left out).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNode {
    x: f64,
    y: f64,
    /// Left out: the run's workload; `null` is refused (a client that sends it meant
    /// something, and none of the workloads is called null).
    #[serde(default, deserialize_with = "present")]
    workload: Option<String>,
    /// Whether its homeserver starts again when it ends on its own; left out, the run's
    /// default.
    #[serde(default, deserialize_with = "present")]
    restart: Option<Restart>,
}

async fn create(
    State(app): State<AppState>,
    Json(new): Json<NewNode>,
) -> Result<Response, ApiError> {
    let workload = match new.workload.as_deref() {
        None => NodeWorkload::Run,
        Some(name) => {
            let run = app.sim.state().borrow().run.workload;
            node_workload(name, run).map_err(|e| ApiError::invalid("workload", e.to_string()))?
        }
    };
    if new.restart.is_some() && app.restarts.is_none() {
        return Err(ApiError::invalid(
            "restart",
            "only homeservers are restarted, and this run has none: start meshsim with \
             `--workload synapse`",
        ));
    }
    let node = app.sim.add_node_running(new.x, new.y, workload).await?;
    if let (Some(policy), Some(restarts)) = (new.restart, &app.restarts) {
        restarts.set(node.id, Some(policy));
    }
    app.desk.record(Action::Add {
        id: node.id,
        x: new.x,
        y: new.y,
    });
    // The Sim publishes before it answers, so the new state has the node's addresses.
    let body = found(&app, node.id)?;
    let location = format!("/api/nodes/{}", node.id.0);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        axum::Json(body),
    )
        .into_response())
}

/// `GET /api/nodes/{id}`: what the canvas's node panel shows.
#[derive(Debug, Serialize)]
struct NodeDetail {
    node: NodeBody,
    /// The nodes it is linked to, by ascending id.
    neighbours: Vec<NodeId>,
    /// Where it sends packets for every node it can reach, by ascending destination.
    routes: Vec<RouteBody>,
}

#[derive(Debug, Serialize)]
struct RouteBody {
    dst: NodeId,
    next_hop: NodeId,
}

async fn read(
    State(app): State<AppState>,
    NodePath(id): NodePath,
) -> Result<axum::Json<NodeDetail>, ApiError> {
    let state = app.sim.state().borrow().clone();
    let node = NodeBody::find(id, &state).ok_or_else(|| unknown(id))?;
    let neighbours = state
        .snapshot
        .links
        .iter()
        .filter(|l| l.pair.contains(id))
        .map(|l| {
            if l.pair.a() == id {
                l.pair.b()
            } else {
                l.pair.a()
            }
        })
        .collect();
    let routes = app
        .sim
        .routes_of(id)
        .await?
        .into_iter()
        .map(|r| RouteBody {
            dst: r.dst,
            next_hop: r.next_hop,
        })
        .collect();
    Ok(axum::Json(NodeDetail {
        node,
        neighbours,
        routes,
    }))
}

async fn move_to(
    State(app): State<AppState>,
    NodePath(id): NodePath,
    Json(at): Json<Position>,
) -> Result<axum::Json<NodeBody>, ApiError> {
    app.sim
        .move_node(id, at.x, at.y)
        .await
        .map_err(|e| ApiError::from_sim(e, &[("id", id)]))?;
    app.desk.record(Action::Move {
        node: id,
        x: at.x,
        y: at.y,
    });
    Ok(axum::Json(found(&app, id)?))
}

async fn remove(
    State(app): State<AppState>,
    NodePath(id): NodePath,
) -> Result<StatusCode, ApiError> {
    app.sim
        .remove_node(id)
        .await
        .map_err(|e| ApiError::from_sim(e, &[("id", id)]))?;
    app.desk.record(Action::Remove(id));
    Ok(StatusCode::NO_CONTENT)
}

/// The node as the latest state shows it; gone already if another client removed it since.
fn found(app: &AppState, id: NodeId) -> Result<NodeBody, ApiError> {
    NodeBody::find(id, &app.sim.state().borrow()).ok_or_else(|| unknown(id))
}

fn unknown(id: NodeId) -> ApiError {
    ApiError::no_node_in_path(id)
}
