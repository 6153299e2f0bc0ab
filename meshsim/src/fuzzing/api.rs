//! Every API request body, through the real router on a Sim with the fake host: a few
//! requests per input (so later ones meet the nodes, pins and cuts earlier ones made), each
//! a method and a path from the API's list, node ids, a query and a body from the input. No
//! answer may be a 5xx (the fake host never fails, so a 500 is a bug), and nothing may panic.

use std::time::Duration;

use axum::{
    body::Body,
    http::{Method, Request, header},
};
use tower::ServiceExt as _;

use super::{ADDR, Input};

/// Requests per input.
const MAX_REQUESTS: usize = 8;
/// A request that takes longer has hung (the fake host answers at once).
const TIMEOUT: Duration = Duration::from_secs(10);

const METHODS: [Method; 6] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::HEAD,
];

/// The API's resources (docs/api.md), `{a}` and `{b}` standing for node ids; a few that are
/// not there, and the other routes of the same router.
const PATHS: [&str; 22] = [
    "/api/state",
    "/api/nodes",
    "/api/nodes/{a}",
    "/api/links/{a}/{b}",
    "/api/settings",
    "/api/topology",
    "/api/events",
    "/api/nodes/{a}/messages",
    "/api/rooms/mesh",
    "/api/client",
    "/api/nodes/{a}/client",
    "/api/cuts",
    "/api/scenario",
    "/api/scenario/pause",
    "/api/scenario/resume",
    "/api/recording",
    "/metrics",
    "/ws",
    "/",
    "/app.js",
    "/api/",
    "/api/nodes/{a}/{b}",
];

const CONTENT_TYPES: [Option<&str>; 4] = [
    Some("application/json"),
    None,
    Some("text/plain"),
    Some("application/json; charset=utf-8"),
];

/// A node id as a path segment: mostly the names of the first nodes, sometimes their number,
/// sometimes something that names no node.
fn id(b: u8) -> String {
    match b {
        0..=199 => format!("n{}", b % 10),
        200..=229 => format!("{}", b % 10),
        _ => [
            "n0",
            "n01",
            "x",
            "n4294967296",
            "%FF",
            "n-1",
            "",
            "n99999",
            "%20n1",
        ][usize::from(b % 9)]
        .to_owned(),
    }
}

/// Percent-encodes what a query may not hold as it is, so any bytes make a valid URI.
fn query(raw: &[u8]) -> String {
    let mut out = String::with_capacity(raw.len());
    for &b in raw {
        if b.is_ascii_alphanumeric() || b"=&._~-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request decoded from the input.
#[derive(Debug)]
pub struct Call {
    pub method: Method,
    pub uri: String,
    pub content_type: Option<&'static str>,
    pub body: Vec<u8>,
}

fn decode(input: &mut Input) -> Call {
    let method = METHODS[usize::from(input.byte()) % METHODS.len()].clone();
    let path = PATHS[usize::from(input.byte()) % PATHS.len()];
    let (a, b) = (id(input.byte()), id(input.byte()));
    let content_type = CONTENT_TYPES[usize::from(input.byte()) % CONTENT_TYPES.len()];
    let query_len = usize::from(input.byte() % 64);
    let query = query(input.take(query_len));
    let body_len = usize::from(input.u16());
    let body = input.take(body_len).to_vec();
    let mut uri = path.replace("{a}", &a).replace("{b}", &b);
    if !query.is_empty() {
        uri = format!("{uri}?{query}");
    }
    Call {
        method,
        uri,
        content_type,
        body,
    }
}

/// Sends every request the input holds to a fresh server; panics on a 5xx or a hang.
pub fn check(data: &[u8]) {
    super::no_panic_on_this_thread(|| {
        super::runtime().block_on(async {
            let server = super::server().await;
            let mut input = Input::new(data);
            for _ in 0..MAX_REQUESTS {
                if input.is_empty() {
                    break;
                }
                let call = decode(&mut input);
                let mut request = Request::builder()
                    .method(call.method.clone())
                    .uri(&call.uri)
                    .header(header::HOST, ADDR);
                if let Some(content_type) = call.content_type {
                    request = request.header(header::CONTENT_TYPE, content_type);
                }
                let request = request
                    .body(Body::from(call.body.clone()))
                    .unwrap_or_else(|e| panic!("{call:?} makes no request: {e}"));
                let response =
                    tokio::time::timeout(TIMEOUT, server.router.clone().oneshot(request))
                        .await
                        .unwrap_or_else(|_| panic!("{call:?} hung"))
                        .unwrap_or_else(|never| match never {});
                let status = response.status();
                let body = tokio::time::timeout(
                    TIMEOUT,
                    axum::body::to_bytes(response.into_body(), usize::MAX),
                )
                .await
                .unwrap_or_else(|_| panic!("{call:?}: the answer's body hung"))
                .unwrap_or_else(|e| panic!("{call:?}: reading the answer: {e}"));
                assert!(
                    !status.is_server_error(),
                    "{call:?} answered {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
        });
    });
    super::clean_results();
}
