//! `/api/settings`: the link rule's knobs and the defaults every link starts from.

use axum::{Router, extract::State, routing::get};

use super::{ApiError, AppState, extract::Json};
use crate::model::Settings;

pub fn router() -> Router<AppState> {
    Router::new().route("/settings", get(read).put(replace))
}

async fn read(State(app): State<AppState>) -> axum::Json<Settings> {
    axum::Json(app.sim.state().borrow().snapshot.settings.clone())
}

/// Replaces the settings; fields the body leaves out take their defaults (a PUT replaces the
/// whole resource), unknown fields are refused. Links and routes follow at once.
async fn replace(
    State(app): State<AppState>,
    Json(settings): Json<Settings>,
) -> Result<axum::Json<Settings>, ApiError> {
    app.sim.set_settings(settings).await?;
    Ok(axum::Json(
        app.sim.state().borrow().snapshot.settings.clone(),
    ))
}
