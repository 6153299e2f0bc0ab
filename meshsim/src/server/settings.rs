//! `/api/settings`: the link rule's knobs and the defaults every link starts from.

use axum::{Router, extract::State, routing::get};

use super::{ApiError, AppState, extract::Json};
use crate::{model::Settings, scenario::step::Action};

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
    let before = app.sim.state().borrow().snapshot.settings.clone();
    app.sim.set_settings(settings.clone()).await?;
    if let Some(patch) = changed_settings(&before, &settings) {
        app.desk.record(Action::Settings(patch));
    }
    Ok(axum::Json(
        app.sim.state().borrow().snapshot.settings.clone(),
    ))
}

/// The settings that differ between `before` and `after`, as a scenario step writes them;
/// `None` when none do.
fn changed_settings(before: &Settings, after: &Settings) -> Option<toml::Table> {
    let (Ok(toml::Value::Table(old)), Ok(toml::Value::Table(new))) =
        (toml::Value::try_from(before), toml::Value::try_from(after))
    else {
        return None;
    };
    let patch: toml::Table = new
        .into_iter()
        .filter(|(k, v)| old.get(k) != Some(v))
        .collect();
    (!patch.is_empty()).then_some(patch)
}
