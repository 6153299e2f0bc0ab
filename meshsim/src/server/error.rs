//! The one error type of the HTTP API and its JSON form.
//!
//! Every refusal, from a bad coordinate to a foreign `Host`, answers
//! `{"error": "...", "field": "..."}` (`field` only when one input field is to blame), so the
//! canvas can show the server's own message next to the right input. Bad values are 422,
//! not 400: the request was well-formed JSON, its content was refused; 400 is kept for bodies
//! that are not JSON at all. 5xx details go to the log, never to the client: they can name
//! host interfaces and paths, and this server may face a network.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    model::{ModelError, NodeId},
    sim::SimError,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A value was refused: out of range, of the wrong type, or inconsistent (422).
    #[error("{message}")]
    Invalid {
        field: Option<String>,
        message: String,
    },
    /// The body is not JSON, or a query string cannot be read (400).
    #[error("{0}")]
    BadRequest(String),
    /// A body without `Content-Type: application/json` (415). Requiring it also means a
    /// cross-site form cannot post to the API without a CORS preflight.
    #[error("expected a JSON body with Content-Type: application/json")]
    NotJson,
    /// The body is larger than the server takes (413).
    #[error("the request body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    /// A node that does not exist, named by the input `field` (404); `known` says which
    /// nodes there are, when the caller knows.
    #[error("no node {id:?}{}", known.as_ref().map(|k| format!(" ({k})")).unwrap_or_default())]
    UnknownNode {
        id: String,
        field: Option<String>,
        known: Option<String>,
    },
    /// No route has this path (404).
    #[error("no such resource: {0}")]
    NoRoute(String),
    /// The path exists but not with this method (405).
    #[error("method {0} is not allowed here")]
    MethodNotAllowed(String),
    /// A missing or wrong bearer token (401).
    #[error("a valid bearer token is required (Authorization: Bearer <token>)")]
    Unauthorized,
    /// Host or Origin is not this server's (403).
    #[error("{0}")]
    Forbidden(String),
    /// A request that cannot be honoured in the current state (409).
    #[error("{0}")]
    Conflict(String),
    /// The Sim has stopped: meshsim is shutting down (503).
    #[error("meshsim is shutting down")]
    Stopped,
    /// The server is at one of its limits (`server::limits`); the text says which and what
    /// to do (503, with `Retry-After`).
    #[error("{0}")]
    Busy(String),
    /// A node's homeserver refused or failed what meshsim asked of it for the client (502);
    /// its answer is shown, as it is the homeserver's and says what went wrong.
    #[error("{0}")]
    Homeserver(String),
    /// Anything the client could not have caused (500); the detail is logged, not shown.
    #[error("internal error: see meshsim's log")]
    Internal(String),
}

impl ApiError {
    /// The node the path names (`/api/nodes/{id}/...`) does not exist.
    pub fn no_node_in_path(id: NodeId) -> Self {
        Self::UnknownNode {
            id: id.name(),
            field: Some("id".into()),
            known: None,
        }
    }

    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: Some(field.into()),
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotJson => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnknownNode { .. } | Self::NoRoute(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Stopped | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Homeserver(_) => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } | Self::UnknownNode { field, .. } => field.as_deref(),
            _ => None,
        }
    }

    /// Maps a Sim error for a request whose path named the nodes `path` (`("id", 3)` or
    /// `("a", 1), ("b", 2)`), so an unknown node is blamed on the right path parameter.
    pub fn from_sim(e: SimError, path: &[(&str, NodeId)]) -> Self {
        match e {
            SimError::Model(ModelError::UnknownNode(id)) => Self::UnknownNode {
                id: id.name(),
                known: None,
                field: path
                    .iter()
                    .find(|(_, p)| *p == id)
                    .map(|(name, _)| (*name).to_owned()),
            },
            SimError::Model(e @ (ModelError::NotLinked(..) | ModelError::SameNode(_))) => {
                // The pair is the input; `b` is where it goes wrong, as in topology documents.
                Self::invalid("b", e.to_string())
            }
            SimError::Model(e @ ModelError::Invalid { .. }) => Self::Invalid {
                field: e.field().map(str::to_owned),
                message: e.to_string(),
            },
            SimError::Model(e @ ModelError::IdsExhausted) => Self::Conflict(e.to_string()),
            // A limit of the host (addresses, bridge ports, map capacity): nothing changed.
            SimError::Refused(refusal) => Self::Conflict(refusal.to_string()),
            // A drag's earlier position was folded into a later one that failed.
            SimError::Folded(why) => {
                Self::Conflict(format!("superseded by a later move that failed: {why}"))
            }
            SimError::Stopped => Self::Stopped,
            e @ SimError::Host(_) => Self::Internal(e.to_string()),
        }
    }
}

impl From<SimError> for ApiError {
    fn from(e: SimError) -> Self {
        Self::from_sim(e, &[])
    }
}

/// The JSON body of every error answer.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal(detail) = &self {
            tracing::error!("{detail}");
        }
        let body = ErrorBody {
            error: self.to_string(),
            field: self.field(),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if matches!(self, Self::Busy(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: ApiError) -> (StatusCode, serde_json::Value) {
        let response = e.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    #[tokio::test]
    async fn model_errors_keep_their_field_and_get_422() {
        let e = ApiError::from(SimError::Model(ModelError::Invalid {
            field: "loss_pct".into(),
            reason: "must be within 0..=100, got 101".into(),
        }));
        let (status, body) = body_of(e).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(body["field"], "loss_pct");
        assert_eq!(body["error"], "loss_pct: must be within 0..=100, got 101");
    }

    #[tokio::test]
    async fn unknown_nodes_are_blamed_on_their_path_parameter() {
        let e = ApiError::from_sim(
            SimError::Model(ModelError::UnknownNode(NodeId(9))),
            &[("a", NodeId(1)), ("b", NodeId(9))],
        );
        let (status, body) = body_of(e).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body["field"], "b");
    }

    #[tokio::test]
    async fn internal_details_are_not_shown() {
        let (status, body) = body_of(ApiError::Internal("veth ms-n1: EPERM".into())).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!body["error"].as_str().unwrap().contains("veth"));
        assert!(body.get("field").is_none());
    }
}
