//! `/api/topology`: the whole mesh as a document, to save and to load.

use axum::{Router, extract::State, routing::get};

use super::{ApiError, AppState, extract::Json, state::StateBody};
use crate::{
    model::{NodeId, Topology},
    sim::{Refusal, SimError},
};

pub fn router() -> Router<AppState> {
    Router::new().route("/topology", get(save).put(load))
}

/// Every pin is saved, also those of pairs a move has unlinked (they apply again if the
/// pair relinks).
async fn save(State(app): State<AppState>) -> Result<axum::Json<Topology>, ApiError> {
    Ok(axum::Json(app.sim.topology().await?))
}

/// Replaces the whole mesh with the document's; answers with the new state (as
/// `GET /api/state`). Errors name the document's field, e.g. `nodes[2].x`.
/// A node the host cannot take (an id whose address does not fit the subnet, one node more
/// than the bridge holds) is a 422 naming its place in the document, `nodes[2].id`; nothing
/// changes.
async fn load(
    State(app): State<AppState>,
    Json(topology): Json<Topology>,
) -> Result<axum::Json<StateBody>, ApiError> {
    if app.desk.recording() {
        return Err(ApiError::Conflict(
            "a recording is on: a whole new mesh is no step a scenario can replay; stop the \
             recording (DELETE /api/recording) first"
                .into(),
        ));
    }
    let ids: Vec<Option<NodeId>> = topology.nodes.iter().map(|n| n.id).collect();
    app.sim.load(topology, None).await.map_err(|e| match e {
        SimError::Refused(Refusal {
            node: Some(id),
            reason,
        }) => match ids.iter().position(|&i| i == Some(id)) {
            Some(i) => ApiError::invalid(format!("nodes[{i}].id"), reason),
            None => ApiError::Conflict(reason),
        },
        e => e.into(),
    })?;
    Ok(axum::Json(StateBody::new(&app.sim.state().borrow())))
}
