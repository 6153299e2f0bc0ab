//! Who may talk to this server. meshsim runs as root and reshapes the host's network, so:
//!
//! - **DNS rebinding.** A web page on `evil.example` can make its name resolve to 127.0.0.1
//!   and then talk to us as a "same-origin" site. Its requests still carry `Host:
//!   evil.example`, so every request whose `Host` is not an address this server answers on
//!   is refused, and so is any request whose `Origin` (sent by browsers on cross-site
//!   requests, on every non-GET fetch and on every WebSocket) is not one of them either.
//!   On a wildcard listen address (`0.0.0.0`) the server cannot know its names, so it takes
//!   IP literals only: a rebinding attack needs a name, never an address.
//! - **A bearer token** (`--token`), when set, on every `/api`, `/ws` and `/metrics` request.
//!   Browsers cannot set headers on a WebSocket, so `/ws` also takes `?token=`. The static
//!   canvas is served without it: it holds no data, and the page needs the token from the
//!   user first.
//!
//! No endpoint runs commands: the API changes the mesh through the Sim only.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{Request, State},
    http::{HeaderMap, Uri, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::ApiError;

/// The checks of one server, made from the address it is bound to.
#[derive(Debug, Clone)]
pub struct Security {
    port: u16,
    /// Host names (lowercase, IPv6 in brackets) that name this server, without the port.
    hosts: Vec<String>,
    /// Any IP literal names this server (wildcard listen address).
    any_ip: bool,
    token: Option<String>,
}

impl Security {
    /// `listen` is the bound address (with the real port, also when 0 was asked for).
    pub fn new(listen: SocketAddr, token: Option<String>) -> Self {
        let ip = listen.ip();
        let mut hosts = vec![host_of(ip)];
        if ip.is_loopback() || ip.is_unspecified() {
            for name in ["localhost", "127.0.0.1", "[::1]"] {
                if !hosts.iter().any(|h| h == name) {
                    hosts.push(name.to_owned());
                }
            }
        }
        Self {
            port: listen.port(),
            hosts,
            any_ip: ip.is_unspecified(),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// Whether a `Host` header value (`name[:port]`) names this server.
    pub fn host_allowed(&self, host: &str) -> bool {
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        if port != self.port {
            return false;
        }
        let name = name.to_ascii_lowercase();
        self.hosts.contains(&name) || (self.any_ip && is_ip_literal(&name))
    }

    /// Whether an `Origin` header value is a page of this server.
    pub fn origin_allowed(&self, origin: &str) -> bool {
        let Some(rest) = origin
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("http://"))
            .map(|_| &origin[7..])
        else {
            // `null` (sandboxed frames, file: pages), https (we serve none), anything else.
            return false;
        };
        !rest.contains('/') && self.host_allowed(rest)
    }

    /// Whether a request to `uri` needs the token, and if so whether it carries it.
    pub fn authorised(&self, uri: &Uri, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        if !needs_token(uri.path()) {
            return true;
        }
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim());
        if bearer.is_some_and(|t| same(t, token)) {
            return true;
        }
        is_ws(uri.path())
            && axum::extract::Query::<HashMap<String, String>>::try_from_uri(uri)
                .ok()
                .and_then(|q| q.0.get("token").cloned())
                .is_some_and(|t| same(&t, token))
    }
}

/// The middleware: Host, then Origin, then the token.
pub async fn guard(State(security): State<Arc<Security>>, req: Request, next: Next) -> Response {
    match check(&security, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => {
            let (uri, headers) = (req.uri(), req.headers());
            let (host, origin) = (headers.get(header::HOST), headers.get(header::ORIGIN));
            // A foreign Host or Origin is what an attack looks like; a missing token is more
            // often a forgotten one.
            if matches!(e, ApiError::Forbidden(_)) {
                tracing::warn!(%uri, ?host, ?origin, "refused: {e}");
            } else {
                tracing::info!(%uri, ?host, ?origin, "refused: {e}");
            }
            e.into_response()
        }
    }
}

fn check(security: &Security, req: &Request) -> Result<(), ApiError> {
    let headers = req.headers();
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .ok_or_else(|| ApiError::Forbidden("a Host header is required".into()))?;
    if !security.host_allowed(host) {
        return Err(ApiError::Forbidden(format!(
            "Host {host:?} is not this server's address (DNS rebinding protection): \
             use the address meshsim listens on"
        )));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !security.origin_allowed(origin) {
            return Err(ApiError::Forbidden(format!(
                "Origin {origin:?} is not this server: cross-site requests are refused"
            )));
        }
    }
    if !security.authorised(req.uri(), headers) {
        return Err(ApiError::Unauthorized);
    }
    Ok(())
}

fn needs_token(path: &str) -> bool {
    ["/api", "/ws", "/metrics"]
        .iter()
        .any(|p| path == *p || path.strip_prefix(p).is_some_and(|r| r.starts_with('/')))
}

fn is_ws(path: &str) -> bool {
    path == "/ws"
}

/// Compares without stopping at the first difference, so response time does not tell an
/// attacker how much of a guess was right.
fn same(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn host_of(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Splits `name[:port]` (IPv6 in brackets); no port means 80, as browsers omit it there.
fn split_host(host: &str) -> Option<(&str, u16)> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        let (name, rest) = host.split_at(end + 1);
        match rest {
            "" => (name, None),
            _ => (name, Some(rest.strip_prefix(':')?)),
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        }
    };
    let port = match port {
        Some(p) => p.parse().ok()?,
        None => 80,
    };
    (!name.is_empty()).then_some((name, port))
}

fn is_ip_literal(name: &str) -> bool {
    match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => name.parse::<std::net::Ipv4Addr>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback() -> Security {
        Security::new("127.0.0.1:3000".parse().unwrap(), None)
    }

    #[test]
    fn loopback_takes_its_own_names_only() {
        let s = loopback();
        for ok in [
            "127.0.0.1:3000",
            "localhost:3000",
            "LOCALHOST:3000",
            "[::1]:3000",
        ] {
            assert!(s.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example:3000",
            "127.0.0.1:3001",
            "127.0.0.1",
            "localhost.evil.example:3000",
            "10.0.0.5:3000",
            "",
            ":3000",
            "127.0.0.1:x",
        ] {
            assert!(!s.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn a_missing_port_means_80() {
        let s = Security::new("127.0.0.1:80".parse().unwrap(), None);
        assert!(s.host_allowed("localhost"));
        assert!(s.host_allowed("[::1]"));
    }

    #[test]
    fn a_wildcard_listener_takes_ip_literals_but_no_names() {
        let s = Security::new("0.0.0.0:3000".parse().unwrap(), None);
        assert!(s.host_allowed("192.168.1.20:3000"));
        assert!(s.host_allowed("[fe80::1]:3000"));
        assert!(s.host_allowed("localhost:3000"));
        assert!(!s.host_allowed("lab.example:3000"));
    }

    #[test]
    fn a_specific_address_takes_only_itself() {
        let s = Security::new("192.168.1.20:3000".parse().unwrap(), None);
        assert!(s.host_allowed("192.168.1.20:3000"));
        assert!(!s.host_allowed("localhost:3000"));
        assert!(!s.host_allowed("192.168.1.21:3000"));
    }

    #[test]
    fn origins_must_be_http_pages_of_this_server() {
        let s = loopback();
        assert!(s.origin_allowed("http://127.0.0.1:3000"));
        assert!(s.origin_allowed("http://localhost:3000"));
        for bad in [
            "null",
            "https://127.0.0.1:3000",
            "http://evil.example:3000",
            "http://127.0.0.1:3000/x",
            "http://127.0.0.1:8080",
            "",
        ] {
            assert!(!s.origin_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn the_token_guards_api_ws_and_metrics_only() {
        let s = Security::new("127.0.0.1:3000".parse().unwrap(), Some("s3cret".into()));
        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        let mut wrong = HeaderMap::new();
        wrong.insert(header::AUTHORIZATION, "Bearer s3cres".parse().unwrap());
        let none = HeaderMap::new();
        let uri = |u: &str| u.parse::<Uri>().unwrap();
        for path in ["/api/state", "/api", "/metrics", "/ws"] {
            assert!(!s.authorised(&uri(path), &none), "{path}");
            assert!(!s.authorised(&uri(path), &wrong), "{path}");
            assert!(s.authorised(&uri(path), &bearer), "{path}");
        }
        assert!(s.authorised(&uri("/"), &none));
        assert!(s.authorised(&uri("/app.js"), &none));
        assert!(s.authorised(&uri("/apix.js"), &none));
        assert!(s.authorised(&uri("/ws?token=s3cret"), &none));
        assert!(!s.authorised(&uri("/ws?token=nope"), &none));
        assert!(!s.authorised(&uri("/api/state?token=s3cret"), &none));
    }

    #[test]
    fn without_a_token_everything_is_authorised() {
        assert!(loopback().authorised(&"/api/state".parse().unwrap(), &HeaderMap::new()));
    }
}
