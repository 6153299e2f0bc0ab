//! HTTP to a server inside a node, over a socket opened in the node's network namespace: it
//! reaches the node's own 127.0.0.1, so it never crosses a shaped link, never shows in a
//! link counter and is not slowed by the mesh. Readiness probes, the test users'
//! registration and the event observers talk to Synapse this way.

use std::{
    net::{Ipv4Addr, SocketAddr},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::{
    Method, Request, StatusCode,
    client::conn::http1::{self, SendRequest},
    header,
};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::net::NetNs;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to 127.0.0.1:{port} in {ns}: {source}")]
    Connect {
        ns: String,
        port: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP to 127.0.0.1:{port} in {ns}: {source}")]
    Http {
        ns: String,
        port: u16,
        #[source]
        source: hyper::Error,
    },
    #[error("{what} in {ns} took longer than {after:?}")]
    Timeout {
        ns: String,
        what: String,
        after: Duration,
    },
}

/// An answer: its status and its body as JSON (`Null` when the body is empty or not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The Matrix error code of a refusal (`M_USER_IN_USE`, ...), if it has one.
    pub fn errcode(&self) -> Option<&str> {
        self.body.get("errcode").and_then(Value::as_str)
    }

    /// What a refusal says, for messages.
    pub fn describe(&self) -> String {
        match self.body.get("error").and_then(Value::as_str) {
            Some(error) => format!("{} {}", self.status, error),
            None => self.status.to_string(),
        }
    }
}

/// A client of one port on a node's loopback, keeping one connection open between requests.
pub struct NodeHttp {
    ns: NetNs,
    port: u16,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl NodeHttp {
    pub fn new(ns: NetNs, port: u16) -> Self {
        NodeHttp {
            ns,
            port,
            sender: None,
        }
    }

    /// `GET path`.
    pub async fn get(
        &mut self,
        path: &str,
        token: Option<&str>,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        self.request(Method::GET, path, token, None, timeout).await
    }

    /// One request, with a JSON body if there is one; `token` goes as a bearer token. A
    /// connection the server closed is made again, once.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Answer, HttpError> {
        let what = format!("{method} {path}");
        let ns = self.ns.name().to_owned();
        tokio::time::timeout(timeout, self.send(method, path, token, body))
            .await
            .map_err(|_| HttpError::Timeout {
                ns,
                what,
                after: timeout,
            })?
    }

    async fn send(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> Result<Answer, HttpError> {
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let host = format!("127.0.0.1:{}", self.port);
        for attempt in 0..2 {
            let sender = self.sender().await?;
            let mut request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, &host);
            if body.is_some() {
                request = request.header(header::CONTENT_TYPE, "application/json");
            }
            if let Some(token) = token {
                request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
            }
            let request = request
                .body(Full::new(bytes.clone()))
                .expect("a request from valid parts");
            match sender.send_request(request).await {
                Ok(response) => {
                    let status = response.status();
                    let collected = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|source| self.http_error(source))?
                        .to_bytes();
                    let body = serde_json::from_slice(&collected).unwrap_or(Value::Null);
                    return Ok(Answer { status, body });
                }
                // The server closed the kept connection (it may have restarted): once more
                // on a new one.
                Err(e) if attempt == 0 && (e.is_closed() || e.is_canceled()) => {
                    self.sender = None;
                }
                Err(source) => {
                    self.sender = None;
                    return Err(self.http_error(source));
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    fn http_error(&self, source: hyper::Error) -> HttpError {
        HttpError::Http {
            ns: self.ns.name().to_owned(),
            port: self.port,
            source,
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, HttpError> {
        if let Some(sender) = &self.sender
            && (sender.is_closed() || !sender.is_ready())
        {
            self.sender = None;
        }
        if self.sender.is_none() {
            let stream = connect_in(&self.ns, self.port).await?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|source| self.http_error(source))?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            self.sender = Some(sender);
        }
        Ok(self.sender.as_mut().expect("just made"))
    }
}

/// A TCP connection to `127.0.0.1:port` inside `ns`: the socket is made on a thread that
/// entered the namespace (and stays there), then handed to tokio.
pub async fn connect_in(ns: &NetNs, port: u16) -> Result<tokio::net::TcpStream, HttpError> {
    let fail = |source| HttpError::Connect {
        ns: ns.name().to_owned(),
        port,
        source,
    };
    let inside = ns.clone();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = tokio::task::spawn_blocking(move || {
        inside
            .run(|| std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)))
            .map_err(std::io::Error::other)?
    })
    .await
    .map_err(|e| fail(std::io::Error::other(e)))?
    .map_err(fail)?;
    stream.set_nonblocking(true).map_err(fail)?;
    stream.set_nodelay(true).map_err(fail)?;
    tokio::net::TcpStream::from_std(stream).map_err(fail)
}
