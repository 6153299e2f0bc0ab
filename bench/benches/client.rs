//! The low-bandwidth question: what a client on a bad link gets from `/v3/sync` and from
//! Synapse's native simplified sliding sync (MSC4186), side by side in one run. Needs root
//! and the cached Synapse venv; `cargo xtask bench` runs it.
//!
//! Three Synapse nodes in a line (netns, the real Sim). n1's test user is in `ROOMS` rooms
//! it made, each with n2's and n3's users invited (they join: the rooms span the mesh), and
//! `MESSAGES` messages each. Then, for each client link profile set on n1 (through the
//! Sim, as `PUT /api/nodes/n1/client` does), a client on the host, speaking the plain
//! Client-Server API over HTTP:
//!
//! - an initial `/v3/sync`, and a sliding sync request for the 10 most recent rooms (one
//!   event each): time to the response, bytes down and up on n1's client link (its
//!   counters, each direction on its own);
//! - a message sent by n2's user, once n1's observer sees it on n1: how long until a
//!   waiting `/v3/sync` long poll, and a waiting sliding sync long poll, bring it to the
//!   client.
//!
//! Times are enforced only where the kernel has sch_fq; the bench says which. Bytes are
//! what crossed the link either way.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use meshsim::{
    model::{ClientLink, HOST, NodeId},
    sim::SimHandle,
    workload::{SynapseOptions, matrix::Matrix},
};
use meshsim_tests::{
    fixtures::line,
    id,
    mesh::{MeshConfig, MeshLab},
};
use serde_json::{Value, json};

const ROOMS: usize = 20;
const MESSAGES: usize = 50;
const SLIDING_SYNC: &str = "/_matrix/client/unstable/org.matrix.simplified_msc3575/sync";

/// (name, bandwidth each way, one-way latency, loss).
const PROFILES: [(&str, u64, f64, f64); 4] = [
    ("1 Mbit/s, 100 ms", 1_000_000, 100.0, 0.0),
    ("256 kbit/s, 300 ms", 256_000, 300.0, 0.0),
    ("64 kbit/s, 500 ms", 64_000, 500.0, 0.0),
    ("1 Mbit/s, 100 ms, 2 % loss", 1_000_000, 100.0, 2.0),
];

/// A client on the host, talking to one node's homeserver.
struct HostClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl HostClient {
    async fn login(base: String, user: &str, password: &str) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()?;
        let mut client = HostClient {
            http,
            base,
            token: String::new(),
        };
        let answer = client
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/login",
                Some(json!({
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": user},
                    "password": password,
                })),
            )
            .await?;
        client.token = answer["access_token"]
            .as_str()
            .context("no access_token")?
            .to_owned();
        Ok(client)
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| path.to_owned())?;
        let status = response.status();
        let answer: Value = response.json().await.with_context(|| path.to_owned())?;
        ensure!(status.is_success(), "{path}: {status} {answer}");
        Ok(answer)
    }
}

/// Bytes on n1's client link so far: (up, down).
async fn link_bytes(sim: &SimHandle, node: NodeId) -> Result<(u64, u64)> {
    let c = sim.counters().await?;
    let bytes = |k| c.links.get(&k).map_or(0, |l| l.bytes);
    Ok((bytes((HOST, node)), bytes((node, HOST))))
}

#[tokio::main]
async fn main() -> Result<()> {
    let options = SynapseOptions::default();
    let topology = line();
    let config = MeshConfig::synapse(
        &options,
        topology.settings.clone(),
        "meshsim-client-bench-logs",
    )
    .await;
    let mut mesh = MeshLab::start(config).await;
    println!(
        "client bench: a client on the host, n1's client link shaped; {ROOMS} rooms x \
         {MESSAGES} messages across 3 Synapse nodes; delays {}",
        if mesh.fq {
            "enforced (sch_fq)"
        } else {
            "NOT enforced (no sch_fq on this kernel): times are Synapse's and the host's, bytes are real"
        }
    );
    let result = run(&mut mesh, &options).await;
    mesh.stop().await;
    result
}

async fn run(mesh: &mut MeshLab, options: &SynapseOptions) -> Result<()> {
    let n1 = id("n1");
    mesh.sim.load(line(), None).await?;
    mesh.ready(3, options.start_timeout).await;
    let matrix = mesh.matrix.clone().context("a Matrix view")?;
    let mesh_room = wait_for(Duration::from_secs(120), async || {
        let room = matrix.mesh_room()?;
        (matrix.members(&room).len() == 3 && matrix.converged(&room).await).then_some(room)
    })
    .await
    .context("the mesh room did not converge")?;

    // The rooms, made over an unshaped link.
    let client = HostClient::login(
        format!("http://{}:8008", mesh.ip(n1)),
        &options.user,
        &options.password,
    )
    .await?;
    let setup = Instant::now();
    for r in 0..ROOMS {
        let made = client
            .call(
                reqwest::Method::POST,
                "/_matrix/client/v3/createRoom",
                Some(json!({
                    "name": format!("room {r}"),
                    "preset": "private_chat",
                    "invite": ["@meshsim:n2", "@meshsim:n3"],
                })),
            )
            .await?;
        let room = made["room_id"].as_str().context("room_id")?.to_owned();
        for m in 0..MESSAGES {
            let path = format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/bench-{r}-{m}");
            client
                .call(
                    reqwest::Method::PUT,
                    &path,
                    Some(json!({"msgtype": "m.text", "body": format!("message {m} in room {r}")})),
                )
                .await?;
        }
    }
    println!(
        "{ROOMS} rooms with {MESSAGES} messages each made in {:.1} s",
        setup.elapsed().as_secs_f64()
    );

    let mut rows = Vec::new();
    for (name, bps, latency, loss) in PROFILES {
        let link = ClientLink {
            latency_ms: latency,
            loss_pct: loss,
            bandwidth_up_bps: bps,
            bandwidth_down_bps: bps,
            ..ClientLink::default()
        };
        mesh.sim.set_client(n1, Some(link)).await?;
        rows.push(measure(mesh, &matrix, &client, &mesh_room, name).await?);
    }
    println!();
    println!(
        "| client link | /v3/sync initial: time | bytes down / up | sliding sync (10 rooms): time | bytes down / up | new message to the client: /v3/sync | sliding sync |"
    );
    println!("|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}

/// One profile's row.
async fn measure(
    mesh: &MeshLab,
    matrix: &Matrix,
    client: &HostClient,
    mesh_room: &str,
    name: &str,
) -> Result<String> {
    let n1 = id("n1");
    let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);

    let (up0, down0) = link_bytes(&mesh.sim, n1).await?;
    let started = Instant::now();
    let sync = client
        .call(reqwest::Method::GET, "/_matrix/client/v3/sync", None)
        .await?;
    let sync_took = started.elapsed();
    let (up1, down1) = link_bytes(&mesh.sim, n1).await?;
    let joined = sync["rooms"]["join"].as_object().map_or(0, |r| r.len());
    ensure!(joined > ROOMS, "the initial sync has {joined} rooms");
    let since = sync["next_batch"]
        .as_str()
        .context("next_batch")?
        .to_owned();

    let body = json!({"lists": {"recent": {
        "ranges": [[0, 9]], "timeline_limit": 1, "required_state": [["m.room.name", ""]]
    }}});
    let started = Instant::now();
    let slid = client
        .call(reqwest::Method::POST, SLIDING_SYNC, Some(body.clone()))
        .await?;
    let slide_took = started.elapsed();
    let (up2, down2) = link_bytes(&mesh.sim, n1).await?;
    let pos = slid["pos"].as_str().context("pos")?.to_owned();

    // A new message from n2, and both long polls waiting for it on n1 (each polls again
    // when it returns with something else, as a client does).
    let event_id = std::sync::OnceLock::<String>::new();
    let has_it = |v: &Value| {
        event_id
            .get()
            .is_some_and(|id| v.to_string().contains(id.as_str()))
    };
    let by_sync = async {
        let mut since = since.clone();
        loop {
            let path = format!("/_matrix/client/v3/sync?since={since}&timeout=60000");
            let answer = client.call(reqwest::Method::GET, &path, None).await?;
            if has_it(&answer) {
                return Ok::<f64, anyhow::Error>(meshsim::workload::matrix::now_ms());
            }
            since = answer["next_batch"]
                .as_str()
                .context("next_batch")?
                .to_owned();
        }
    };
    let by_slide = async {
        let mut pos = pos.clone();
        loop {
            let path = format!("{SLIDING_SYNC}?pos={pos}&timeout=60000");
            let answer = client
                .call(reqwest::Method::POST, &path, Some(body.clone()))
                .await?;
            if has_it(&answer) {
                return Ok::<f64, anyhow::Error>(meshsim::workload::matrix::now_ms());
            }
            pos = answer["pos"].as_str().context("pos")?.to_owned();
        }
    };
    let sent = async {
        // Both polls are on their way before the message is sent.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let text = format!("news for n1's client ({name})");
        let event = matrix.send("n2", Some(mesh_room), &text).await?;
        let _ = event_id.set(event.event_id.clone());
        wait_for(Duration::from_secs(60), async || {
            matrix
                .events_since(0, 10_000)
                .into_iter()
                .find(|e| e.id == event.event_id)
                .and_then(|e| e.seen.get("n1").copied())
        })
        .await
        .context("n1 never had the message")
    };
    let (sync_at, slide_at, on_n1_ms) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::try_join!(by_sync, by_slide, sent)
    })
    .await
    .context("the message did not reach the client within 2 minutes")??;
    let delay = |at: f64| format!("{:.0} ms", (at - on_n1_ms).max(0.0));
    Ok(format!(
        "| {name} | {} | {} / {} | {} | {} / {} | {} | {} |",
        ms(sync_took),
        down1 - down0,
        up1 - up0,
        ms(slide_took),
        down2 - down1,
        up2 - up1,
        delay(sync_at),
        delay(slide_at),
    ))
}

async fn wait_for<T>(within: Duration, mut probe: impl AsyncFnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(v) = probe().await {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}
