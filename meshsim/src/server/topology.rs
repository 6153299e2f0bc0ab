//! `/api/topology`: the whole mesh as a document, to save and to load.

use axum::{Router, extract::State, routing::get};

use super::{ApiError, AppState, extract::Json, state::StateBody};
use crate::model::Topology;

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
async fn load(
    State(app): State<AppState>,
    Json(topology): Json<Topology>,
) -> Result<axum::Json<StateBody>, ApiError> {
    app.sim.load(topology, None).await?;
    Ok(axum::Json(StateBody::new(&app.sim.state().borrow())))
}
