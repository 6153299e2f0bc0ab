//! What runs in the nodes: `GET /api/workloads` (every node's workload state, as the
//! WebSocket's `workloads` message) and `/api/nodes/{id}/restart` (whether a node's
//! homeserver starts again when it ends on its own: its own policy or the run's default).
//!
//! A restart policy is the workload's, like a message is the Matrix handle's: it changes
//! nothing of the mesh, so it does not go through the Sim.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::{Deserialize, Serialize};

use super::{
    ApiError, AppState,
    extract::{Json, NodePath},
    state::WorkloadBody,
};
use crate::{
    model::NodeId,
    workload::restart::{Restart, RestartPolicies},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/workloads", get(read_all)).route(
        "/nodes/{id}/restart",
        get(read_restart).put(set_restart).delete(unset_restart),
    )
}

/// `{nodes: [{id, name, state, detail?, restart_at_ms?, pid?, exit?, crashes, restarts}]}`.
#[derive(Debug, Serialize)]
struct WorkloadsBody {
    nodes: Vec<WorkloadBody>,
}

async fn read_all(State(app): State<AppState>) -> axum::Json<WorkloadsBody> {
    let nodes = app.workloads.as_ref().map_or_else(Vec::new, |status| {
        status
            .borrow()
            .iter()
            .map(|(&id, s)| WorkloadBody::new(id, s))
            .collect()
    });
    axum::Json(WorkloadsBody { nodes })
}

/// `{node, own, restart, default}`: `own` false when it follows the run's `default`.
#[derive(Debug, Serialize)]
struct RestartBody {
    node: String,
    own: bool,
    restart: Restart,
    default: Restart,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SetRestart {
    restart: Restart,
}

/// The run's policies and the node, which must exist.
fn policies_of(app: &AppState, id: NodeId) -> Result<(&RestartPolicies, String), ApiError> {
    let name = app
        .sim
        .state()
        .borrow()
        .nodes
        .get(&id)
        .map(|f| f.name.clone())
        .ok_or_else(|| ApiError::no_node_in_path(id))?;
    let policies = app.restarts.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "this run has no homeservers, and only homeservers are restarted: start meshsim \
             with `--workload synapse`"
                .into(),
        )
    })?;
    Ok((policies, name))
}

fn body(policies: &RestartPolicies, id: NodeId, node: String) -> RestartBody {
    RestartBody {
        node,
        own: policies.own(id),
        restart: policies.of(id),
        default: policies.default_policy(),
    }
}

async fn read_restart(
    State(app): State<AppState>,
    NodePath(id): NodePath,
) -> Result<axum::Json<RestartBody>, ApiError> {
    let (policies, node) = policies_of(&app, id)?;
    Ok(axum::Json(body(policies, id, node)))
}

async fn set_restart(
    State(app): State<AppState>,
    NodePath(id): NodePath,
    Json(set): Json<SetRestart>,
) -> Result<axum::Json<RestartBody>, ApiError> {
    let (policies, node) = policies_of(&app, id)?;
    policies.set(id, Some(set.restart));
    Ok(axum::Json(body(policies, id, node)))
}

async fn unset_restart(
    State(app): State<AppState>,
    NodePath(id): NodePath,
) -> Result<Response, ApiError> {
    let (policies, _) = policies_of(&app, id)?;
    policies.set(id, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}
