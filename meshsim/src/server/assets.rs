//! The canvas (`web/`), embedded in the binary so `sudo meshsim` needs no files next to it.

use axum::{
    http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use rust_embed::RustEmbed;

use super::ApiError;

#[derive(RustEmbed)]
// Relative to this crate's manifest.
#[folder = "../web"]
struct Web;

/// Serves `web/<path>`, `/` being `index.html`. Anything else under `/api` never gets here
/// (the API's own fallback answers it), so a missing file is a plain 404 in the API's format.
pub async fn serve(method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if method != Method::GET && method != Method::HEAD {
        return ApiError::MethodNotAllowed(method.to_string()).into_response();
    }
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let Some(file) = Web::get(path) else {
        return ApiError::NoRoute(uri.path().to_owned()).into_response();
    };
    // The file's hash is its version: a reload after a rebuild gets the new canvas, and an
    // unchanged one costs a 304.
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let cached = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if cached {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        file.data.into_owned().into_response()
    };
    let h = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type(path, file.metadata.mimetype())) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The guessed type, with a charset for text (ES modules must be served as JavaScript or
/// browsers refuse to run them).
fn content_type(path: &str, guessed: &str) -> String {
    let guessed = match path.rsplit('.').next() {
        Some("mjs") => "text/javascript",
        _ => guessed,
    };
    let textual = guessed.starts_with("text/")
        || matches!(
            guessed,
            "application/javascript" | "application/json" | "image/svg+xml"
        );
    if textual && !guessed.contains("charset") {
        format!("{guessed}; charset=utf-8")
    } else {
        guessed.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canvas_is_embedded() {
        assert!(Web::get("index.html").is_some());
    }

    #[test]
    fn text_gets_a_charset_and_modules_are_javascript() {
        assert_eq!(
            content_type("index.html", "text/html"),
            "text/html; charset=utf-8"
        );
        assert_eq!(
            content_type("app.mjs", "application/octet-stream"),
            "text/javascript; charset=utf-8"
        );
        assert_eq!(content_type("icon.png", "image/png"), "image/png");
    }
}
