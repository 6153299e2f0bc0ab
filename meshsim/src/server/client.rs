//! Client links: `/api/client` (the run's default) and `/api/nodes/{id}/client` (a node's
//! own, or the default it follows). Each is `{latency_ms, jitter_ms, loss_pct,
//! bandwidth_up_bps, bandwidth_down_bps}`; a PUT replaces it whole (left-out fields are 0:
//! unshaped), DELETE puts a node back on the default.

use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Serialize;

use super::{
    ApiError, AppState,
    extract::{Json, NodePath},
};
use crate::{
    model::{ClientLink, NodeId},
    scenario::step::Action,
};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/client", get(read_default).put(set_default))
        .route(
            "/nodes/{id}/client",
            get(read_node).put(set_node).delete(unset_node),
        )
}

/// A node's client link: `{node, own, link}` (`own` false: it follows the default).
#[derive(Debug, Serialize)]
struct NodeClientBody {
    node: String,
    own: bool,
    #[serde(flatten)]
    link: ClientLink,
}

fn node_client(app: &AppState, id: NodeId) -> Result<NodeClientBody, ApiError> {
    let state = app.sim.state().borrow().clone();
    let facts = state
        .nodes
        .get(&id)
        .ok_or_else(|| ApiError::no_node_in_path(id))?;
    Ok(NodeClientBody {
        node: facts.name.clone(),
        own: state.clients.overridden(id),
        link: state.clients.of(id),
    })
}

async fn read_default(State(app): State<AppState>) -> axum::Json<ClientLink> {
    axum::Json(app.sim.state().borrow().clients.default)
}

async fn set_default(
    State(app): State<AppState>,
    Json(link): Json<ClientLink>,
) -> Result<axum::Json<ClientLink>, ApiError> {
    app.sim.set_client_default(link).await?;
    app.desk.record(Action::Client { node: None, link });
    Ok(axum::Json(app.sim.state().borrow().clients.default))
}

async fn read_node(
    State(app): State<AppState>,
    NodePath(id): NodePath,
) -> Result<axum::Json<NodeClientBody>, ApiError> {
    node_client(&app, id).map(axum::Json)
}

async fn set_node(
    State(app): State<AppState>,
    NodePath(id): NodePath,
    Json(link): Json<ClientLink>,
) -> Result<axum::Json<NodeClientBody>, ApiError> {
    app.sim
        .set_client(id, Some(link))
        .await
        .map_err(|e| ApiError::from_sim(e, &[("id", id)]))?;
    app.desk.record(Action::Client {
        node: Some(id),
        link,
    });
    node_client(&app, id).map(axum::Json)
}

async fn unset_node(
    State(app): State<AppState>,
    NodePath(id): NodePath,
) -> Result<Response, ApiError> {
    app.sim
        .set_client(id, None)
        .await
        .map_err(|e| ApiError::from_sim(e, &[("id", id)]))?;
    // A scenario step cannot say "back to the default": it sets the default's values.
    let link = app.sim.state().borrow().clients.default;
    app.desk.record(Action::Client {
        node: Some(id),
        link,
    });
    Ok(StatusCode::NO_CONTENT.into_response())
}
