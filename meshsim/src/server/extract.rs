//! Request extractors whose rejections are [`ApiError`]s, so a malformed body, a bad number
//! or a path that names no node answers in the API's one error format instead of axum's
//! plain-text rejections.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{StatusCode, header, request::Parts},
};
use serde::{Deserialize, Deserializer, de::DeserializeOwned};

use super::{ApiError, AppState, BODY_LIMIT};
use crate::{model::NodeId, sim::MeshState};

/// A JSON body. Syntax errors are 400; a well-formed body with a bad value is 422 and names
/// the value's path (`x`, `settings.loss_pct`, `nodes[2].x`).
///
/// JSON has no NaN: a browser's `JSON.stringify(NaN)` sends `null`, which is refused as a
/// wrong type (422) for every number the API takes, never read as "absent".
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(ApiError::NotJson);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(body_error)?;
        parse(&bytes).map(Json)
    }
}

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}

fn body_error(e: BytesRejection) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::TooLarge { limit: BODY_LIMIT }
    } else {
        ApiError::BadRequest(format!("cannot read the request body: {e}"))
    }
}

/// Deserialises `bytes` as one JSON object of type `T`. Every body the API takes is an
/// object; serde would also read an array as a struct, field by field in order (`[1, 2]` as
/// `{"x": 1, "y": 2}`), which no client means.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{')
        && serde_json::from_slice::<serde::de::IgnoredAny>(bytes).is_ok()
    {
        return Err(ApiError::Invalid {
            field: None,
            message: "the body must be a JSON object ({...})".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        classify(&path, inner)
    })?;
    de.end().map_err(|e| classify(".", e))?;
    Ok(value)
}

fn classify(path: &str, e: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => {
            let message = e.to_string();
            let field = if path == "." {
                // Unknown and missing fields are reported at their parent: name them.
                named_field(&message)
            } else {
                Some(path.to_owned())
            };
            ApiError::Invalid { field, message }
        }
        // `1e999` is valid JSON syntax but no f64: a bad number, like a wrong type.
        Category::Syntax if e.to_string().starts_with("number out of range") => ApiError::Invalid {
            field: (path != ".").then(|| path.to_owned()),
            message: e.to_string(),
        },
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::BadRequest(format!("malformed JSON: {e}"))
        }
    }
}

/// The field serde names in "unknown field `x`, expected ..." or "missing field `x`".
fn named_field(message: &str) -> Option<String> {
    let rest = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))?;
    Some(rest.split('`').next()?.to_owned())
}

/// A node named in a path segment, e.g. `/api/nodes/{id}`: by its name (`n3`, as the
/// canvas, `/metrics` and the CLI show it) or by its number (`3`). One that does not exist
/// is a 404 that says what was looked up and which nodes there are.
pub fn resolve_node(field: &str, segment: &str, state: &MeshState) -> Result<NodeId, ApiError> {
    let id = segment
        .parse::<NodeId>()
        .ok()
        .or_else(|| segment.parse::<u32>().ok().filter(|&n| n > 0).map(NodeId));
    match id {
        Some(id) if state.nodes.contains_key(&id) => Ok(id),
        _ => Err(ApiError::UnknownNode {
            id: segment.to_owned(),
            field: Some(field.to_owned()),
            known: Some(known_nodes(state)),
        }),
    }
}

/// `n1, n2, n3` (at most 20, then how many more), or that there are none.
pub fn known_nodes(state: &MeshState) -> String {
    const SHOWN: usize = 20;
    if state.nodes.is_empty() {
        return "the mesh has no nodes".to_owned();
    }
    let mut names: Vec<String> = state
        .nodes
        .values()
        .take(SHOWN)
        .map(|n| n.name.clone())
        .collect();
    if state.nodes.len() > SHOWN {
        names.push(format!("and {} more", state.nodes.len() - SHOWN));
    }
    format!("nodes: {}", names.join(", "))
}

/// One node in the path: `/{id}`.
pub struct NodePath(pub NodeId);

impl FromRequestParts<AppState> for NodePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let segments = segments(parts, app).await?;
        let [id] = segments.as_slice() else {
            return Err(ApiError::NoRoute(parts.uri.path().to_owned()));
        };
        let state = app.sim.state().borrow().clone();
        Ok(NodePath(resolve_node("id", id, &state)?))
    }
}

/// Two nodes in the path: `/{a}/{b}`.
pub struct PairPath(pub NodeId, pub NodeId);

impl FromRequestParts<AppState> for PairPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let segments = segments(parts, app).await?;
        let [a, b] = segments.as_slice() else {
            return Err(ApiError::NoRoute(parts.uri.path().to_owned()));
        };
        let state = app.sim.state().borrow().clone();
        Ok(PairPath(
            resolve_node("a", a, &state)?,
            resolve_node("b", b, &state)?,
        ))
    }
}

async fn segments<S: Send + Sync>(parts: &mut Parts, state: &S) -> Result<Vec<String>, ApiError> {
    let axum::extract::Path(segments) =
        axum::extract::Path::<Vec<String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("cannot read the path: {e}")))?;
    Ok(segments)
}

/// A field that, when given, must hold a value: `null` is what a browser sends for NaN, and
/// reading it as "not given" would silently skip the user's input.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A query string, read into `T`; a bad one is a 400 in the API's format.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(q)| Query(q))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Xy {
        x: f64,
        y: f64,
    }

    fn field_of(body: &str) -> (StatusCode, Option<String>) {
        let e = parse::<Xy>(body.as_bytes()).unwrap_err();
        (e.status(), e.field().map(str::to_owned))
    }

    #[test]
    fn bad_values_name_their_field() {
        let unprocessable = StatusCode::UNPROCESSABLE_ENTITY;
        assert_eq!(
            field_of(r#"{"x":"1","y":2}"#),
            (unprocessable, Some("x".into()))
        );
        assert_eq!(
            field_of(r#"{"x":1,"y":null}"#),
            (unprocessable, Some("y".into()))
        );
        assert_eq!(field_of(r#"{"x":1}"#), (unprocessable, Some("y".into())));
        assert_eq!(
            field_of(r#"{"x":1,"y":2,"z":3}"#),
            (unprocessable, Some("z".into()))
        );
        assert_eq!(field_of(r#""hello""#), (unprocessable, None));
        assert_eq!(field_of("[1, 2]"), (unprocessable, None));
        assert_eq!(
            field_of(r#"{"x":1e999,"y":1}"#),
            (unprocessable, Some("x".into()))
        );
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        for body in [
            r#"{"x":1,"#,
            r#"{"x":NaN,"y":1}"#,
            "",
            r#"{"x":1,"y":2} {}"#,
        ] {
            assert_eq!(field_of(body), (StatusCode::BAD_REQUEST, None), "{body:?}");
        }
    }

    #[test]
    fn json_content_types_are_recognised() {
        let mut headers = axum::http::HeaderMap::new();
        assert!(!is_json(&headers));
        for (value, json) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            headers.insert(header::CONTENT_TYPE, value.parse().unwrap());
            assert_eq!(is_json(&headers), json, "{value}");
        }
    }
}
