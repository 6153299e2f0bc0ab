//! A node's observer: a Client-Server session of the node's test user that long-polls
//! `/sync` from inside the node, and turns what each response brings into sightings for the
//! event log. It never crosses a shaped link (its socket is opened in the node's namespace to
//! the node's own 127.0.0.1:8008), so it neither shows in a counter nor is slowed by the mesh.

use std::{
    collections::BTreeSet,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::Value;

use super::{
    Matrix,
    client::{Client, ClientError},
    events::{EventKind, Sighting},
};
use crate::{
    net::NetNs,
    workload::{http::NodeHttp, synapse::CLIENT_PORT},
};

/// How long one `/sync` waits for news.
const LONG_POLL: Duration = Duration::from_secs(30);
/// After a failure (the server restarting, a slow start), wait this long, doubling up to the
/// most.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MOST: Duration = Duration::from_secs(5);

/// The first sync of a session only learns where the node stands: one event per room.
const FIRST_FILTER: &str = r#"{"presence":{"types":[]},"account_data":{"types":[]},"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}}}"#;
/// Later ones bring everything new; presence is left out (it is not a room's).
const FILTER: &str = r#"{"presence":{"types":[]},"account_data":{"types":[]},"room":{"timeline":{"limit":200},"state":{"lazy_load_members":true}}}"#;

/// The host's clock, in ms since the epoch: one clock for every node, comparable with
/// `origin_server_ts` (which the nodes, on the same host, take from the same clock).
pub fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Observes `node` until the task is aborted (when the node goes).
pub async fn observe(matrix: Arc<Matrix>, node: String, ns: NetNs) {
    let mut retry = RETRY_FIRST;
    let mut rooms: BTreeSet<String> = BTreeSet::new();
    let mut client: Option<Client> = None;
    loop {
        let result = async {
            if client.is_none() {
                let http = NodeHttp::new(ns.clone(), CLIENT_PORT);
                client = Some(Client::login(http, &matrix.user, &matrix.password).await?);
            }
            let session = client.as_mut().expect("logged in above");
            let since = matrix.since(&node);
            let filter = if since.is_some() {
                FILTER
            } else {
                FIRST_FILTER
            };
            let answer = session.sync(since.as_deref(), filter, LONG_POLL).await?;
            let seen_ms = now_ms();
            let next = answer
                .get("next_batch")
                .and_then(Value::as_str)
                .ok_or(ClientError::Malformed {
                    what: "syncing".into(),
                    field: "next_batch",
                })?
                .to_owned();
            update_rooms(&answer, &mut rooms);
            let invited = invites(&answer);
            if since.is_some() {
                for sighting in sightings(&answer, &node, seen_ms) {
                    matrix.record(sighting);
                }
            }
            matrix.synced(&node, next, &rooms);
            // Synapse accepts invites itself (auto_accept_invites); this catches one it has
            // not yet (its retries given up under a rate limit, say).
            matrix.after_sync(&node, invited);
            Ok::<(), ClientError>(())
        }
        .await;
        match result {
            Ok(()) => retry = RETRY_FIRST,
            Err(e) => {
                if e.is_unknown_token() {
                    client = None;
                }
                tracing::debug!(node = %node, "observer: {e}; again in {retry:?}");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(RETRY_MOST);
            }
        }
    }
}

/// Rooms the user joined (listed under `rooms.join`) and left.
fn update_rooms(sync: &Value, rooms: &mut BTreeSet<String>) {
    if let Some(joined) = sync.pointer("/rooms/join").and_then(Value::as_object) {
        rooms.extend(joined.keys().cloned());
    }
    if let Some(left) = sync.pointer("/rooms/leave").and_then(Value::as_object) {
        for room in left.keys() {
            rooms.remove(room);
        }
    }
}

fn invites(sync: &Value) -> Vec<String> {
    sync.pointer("/rooms/invite")
        .and_then(Value::as_object)
        .map(|rooms| rooms.keys().cloned().collect())
        .unwrap_or_default()
}

/// The server part of a user id (`@meshsim:n3` is on `n3`).
fn server_of(user: &str) -> Option<String> {
    user.split_once(':').map(|(_, server)| server.to_owned())
}

/// Every timeline and ephemeral event of a sync response, as sightings by `node`.
pub fn sightings(sync: &Value, node: &str, seen_ms: f64) -> Vec<Sighting> {
    let mut out = Vec::new();
    let Some(joined) = sync.pointer("/rooms/join").and_then(Value::as_object) else {
        return out;
    };
    for (room, data) in joined {
        let events = |section: &str| {
            data.pointer(&format!("/{section}/events"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        for event in events("timeline") {
            let (Some(id), Some(event_type)) = (
                event.get("event_id").and_then(Value::as_str),
                event.get("type").and_then(Value::as_str),
            ) else {
                continue;
            };
            let sender = event.get("sender").and_then(Value::as_str);
            out.push(Sighting {
                node: node.to_owned(),
                seen_ms,
                kind: EventKind::Timeline,
                id: id.to_owned(),
                room: room.clone(),
                event_type: event_type.to_owned(),
                sender: sender.map(str::to_owned),
                origin: sender.and_then(server_of),
                origin_server_ts: event.get("origin_server_ts").and_then(Value::as_u64),
                body: event
                    .pointer("/content/body")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            });
        }
        for event in events("ephemeral") {
            let ephemeral = |id: String, event_type: &str, user: &str, ts: Option<u64>| Sighting {
                node: node.to_owned(),
                seen_ms,
                kind: EventKind::Ephemeral,
                id,
                room: room.clone(),
                event_type: event_type.to_owned(),
                sender: Some(user.to_owned()),
                origin: server_of(user),
                origin_server_ts: ts,
                body: None,
            };
            match event.get("type").and_then(Value::as_str) {
                // {"$event": {"m.read": {"@user:n2": {"ts": 1}}}}
                Some("m.receipt") => {
                    let Some(content) = event.get("content").and_then(Value::as_object) else {
                        continue;
                    };
                    for (target, kinds) in content {
                        for (kind, users) in kinds.as_object().into_iter().flatten() {
                            for (user, receipt) in users.as_object().into_iter().flatten() {
                                let ts = receipt.get("ts").and_then(Value::as_u64);
                                let id = format!("receipt:{target}:{kind}:{user}");
                                out.push(ephemeral(id, "m.receipt", user, ts));
                            }
                        }
                    }
                }
                Some("m.typing") => {
                    let mut users: Vec<&str> = event
                        .pointer("/content/user_ids")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    users.sort_unstable();
                    if let Some(first) = users.first() {
                        let id = format!("typing:{room}:{}", users.join(","));
                        out.push(ephemeral(id, "m.typing", first, None));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_sync_response_becomes_sightings() {
        let sync = json!({
            "next_batch": "s1",
            "rooms": {"join": {"!r:n1": {
                "timeline": {"events": [{
                    "event_id": "$e1", "type": "m.room.message", "sender": "@meshsim:n1",
                    "origin_server_ts": 1000, "content": {"msgtype": "m.text", "body": "hi"}
                }]},
                "ephemeral": {"events": [
                    {"type": "m.receipt", "content": {"$e1": {"m.read": {"@meshsim:n2": {"ts": 1200}}}}},
                    {"type": "m.typing", "content": {"user_ids": ["@meshsim:n3"]}},
                    {"type": "m.typing", "content": {"user_ids": []}}
                ]}
            }}}
        });
        let s = sightings(&sync, "n2", 5.0);
        assert_eq!(s.len(), 3, "{s:#?}");
        assert_eq!(s[0].id, "$e1");
        assert_eq!(s[0].origin.as_deref(), Some("n1"));
        assert_eq!(s[0].body.as_deref(), Some("hi"));
        assert_eq!(s[0].origin_server_ts, Some(1000));
        assert_eq!(s[1].id, "receipt:$e1:m.read:@meshsim:n2");
        assert_eq!(
            (s[1].origin.as_deref(), s[1].origin_server_ts),
            (Some("n2"), Some(1200))
        );
        assert_eq!(s[2].id, "typing:!r:n1:@meshsim:n3");
        assert!(s.iter().all(|x| x.node == "n2" && x.seen_ms == 5.0));
    }

    #[test]
    fn rooms_follow_joins_and_leaves() {
        let mut rooms = BTreeSet::new();
        update_rooms(
            &json!({"rooms": {"join": {"!a": {}, "!b": {}}}}),
            &mut rooms,
        );
        update_rooms(&json!({"rooms": {"leave": {"!a": {}}}}), &mut rooms);
        assert_eq!(rooms, BTreeSet::from(["!b".to_owned()]));
        assert_eq!(invites(&json!({"rooms": {"invite": {"!c": {}}}})), ["!c"]);
    }
}
