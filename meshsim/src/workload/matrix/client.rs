//! The few Client-Server API calls meshsim makes as a node's test user: log in, sync, make
//! or join a room, send a message. Over [`NodeHttp`], so inside the node.

use std::time::Duration;

use hyper::Method;
use serde_json::{Value, json};

use crate::workload::http::{Answer, HttpError, NodeHttp};

/// How long a request other than a long poll may take.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("{what}: {answer}")]
    Refused {
        what: String,
        answer: String,
        errcode: Option<String>,
    },
    #[error("{what}: the answer has no {field}")]
    Malformed { what: String, field: &'static str },
}

impl ClientError {
    /// The server no longer knows the access token (a restart with a new database, a logout).
    pub fn is_unknown_token(&self) -> bool {
        matches!(self, ClientError::Refused { errcode: Some(code), .. } if code == "M_UNKNOWN_TOKEN")
    }
}

fn refused(what: &str, answer: &Answer) -> ClientError {
    ClientError::Refused {
        what: what.to_owned(),
        answer: answer.describe(),
        errcode: answer.errcode().map(str::to_owned),
    }
}

/// A logged-in test user on one node.
pub struct Client {
    http: NodeHttp,
    token: String,
}

impl Client {
    /// Logs in as `user` (the localpart) with `password`.
    pub async fn login(
        mut http: NodeHttp,
        user: &str,
        password: &str,
    ) -> Result<Self, ClientError> {
        let body = json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": user},
            "password": password,
            "initial_device_display_name": "meshsim observer",
        });
        let what = format!("logging in as {user}");
        let answer = http
            .request(
                Method::POST,
                "/_matrix/client/v3/login",
                None,
                Some(&body),
                TIMEOUT,
            )
            .await?;
        if !answer.ok() {
            return Err(refused(&what, &answer));
        }
        let token = answer
            .body
            .get("access_token")
            .and_then(Value::as_str)
            .ok_or(ClientError::Malformed {
                what,
                field: "access_token",
            })?
            .to_owned();
        Ok(Client { http, token })
    }

    async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
        what: &str,
    ) -> Result<Value, ClientError> {
        let answer = self
            .http
            .request(method, path, Some(&self.token), body, timeout)
            .await?;
        if answer.ok() {
            Ok(answer.body)
        } else {
            Err(refused(what, &answer))
        }
    }

    /// `/sync`, long-polling up to `wait` for something new after `since`.
    pub async fn sync(
        &mut self,
        since: Option<&str>,
        filter: &str,
        wait: Duration,
    ) -> Result<Value, ClientError> {
        let mut path = format!(
            "/_matrix/client/v3/sync?timeout={}&filter={}",
            wait.as_millis(),
            encode(filter)
        );
        if let Some(since) = since {
            path.push_str("&since=");
            path.push_str(&encode(since));
        }
        self.call(Method::GET, &path, None, wait + TIMEOUT, "syncing")
            .await
    }

    /// Makes a public room with the local alias `alias` (`#alias:<node>`); its id.
    pub async fn create_room(&mut self, alias: &str, name: &str) -> Result<String, ClientError> {
        let body = json!({"room_alias_name": alias, "name": name, "preset": "public_chat"});
        let answer = self
            .call(
                Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(&body),
                TIMEOUT,
                "making a room",
            )
            .await?;
        room_id(answer, "making a room")
    }

    /// Joins `room` (an id or an alias), asking the servers `via` if it is not known here.
    pub async fn join(&mut self, room: &str, via: &[String]) -> Result<String, ClientError> {
        let mut path = format!("/_matrix/client/v3/join/{}", encode(room));
        for (i, server) in via.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str("server_name=");
            path.push_str(&encode(server));
        }
        let what = format!("joining {room}");
        let answer = self
            .call(Method::POST, &path, Some(&json!({})), TIMEOUT, &what)
            .await?;
        room_id(answer, &what)
    }

    /// The users this server knows to be in `room` now.
    pub async fn joined_members(&mut self, room: &str) -> Result<Vec<String>, ClientError> {
        let path = format!("/_matrix/client/v3/rooms/{}/joined_members", encode(room));
        let what = format!("listing the members of {room}");
        let answer = self.call(Method::GET, &path, None, TIMEOUT, &what).await?;
        let joined =
            answer
                .get("joined")
                .and_then(Value::as_object)
                .ok_or(ClientError::Malformed {
                    what,
                    field: "joined",
                })?;
        Ok(joined.keys().cloned().collect())
    }

    /// Sends `body` as a text message to `room` with transaction id `txn`; the event's id.
    pub async fn send_text(
        &mut self,
        room: &str,
        txn: &str,
        body: &str,
    ) -> Result<String, ClientError> {
        let path = format!(
            "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            encode(room),
            encode(txn)
        );
        let content = json!({"msgtype": "m.text", "body": body});
        let what = format!("sending to {room}");
        let answer = self
            .call(Method::PUT, &path, Some(&content), TIMEOUT, &what)
            .await?;
        answer
            .get("event_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or(ClientError::Malformed {
                what,
                field: "event_id",
            })
    }
}

fn room_id(answer: Value, what: &str) -> Result<String, ClientError> {
    answer
        .get("room_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or(ClientError::Malformed {
            what: what.to_owned(),
            field: "room_id",
        })
}

/// Percent-encodes everything but RFC 3986's unreserved characters, for a path segment or a
/// query value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_ids_and_filters_are_percent_encoded() {
        assert_eq!(encode("!abc:n1"), "%21abc%3An1");
        assert_eq!(encode("#mesh:n1"), "%23mesh%3An1");
        assert_eq!(encode(r#"{"a":1}"#), "%7B%22a%22%3A1%7D");
        assert_eq!(encode("s72_1.x~"), "s72_1.x~");
    }
}
