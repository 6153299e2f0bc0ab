//! A real mesh behind the real server, for the API, WebSocket and /metrics tests: a
//! [`MeshLab`] (netns) and the server on 127.0.0.1:0.

use std::{
    io::Write as _,
    net::SocketAddr,
    process::{Command, Stdio},
    time::Duration,
};

use meshsim::{
    model::NodeId,
    server::{self, Server, ServerError, ServerOptions},
    sim::SimHandle,
    workload::WorkloadKind,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::mesh::{MeshConfig, MeshLab};

pub struct Lab {
    pub sim: SimHandle,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub mesh: MeshLab,
    token: Option<String>,
    serving: Option<JoinHandle<Result<(), ServerError>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl Lab {
    pub async fn start() -> Lab {
        Self::start_with(ServerOptions::default()).await
    }

    pub async fn start_with(options: ServerOptions) -> Lab {
        Self::start_running(WorkloadKind::None, options).await
    }

    /// A lab whose nodes run `workload` (unless added with `"workload": "none"`).
    pub async fn start_running(workload: WorkloadKind, options: ServerOptions) -> Lab {
        let config = MeshConfig {
            workload,
            ..MeshConfig::default()
        };
        Self::start_mesh(config, options).await
    }

    /// A lab on a mesh made as `config` says; the server shows its Matrix events and
    /// workloads unless `options` has its own.
    pub async fn start_mesh(config: MeshConfig, mut options: ServerOptions) -> Lab {
        let mesh = MeshLab::start(config).await;
        let sim = mesh.sim.clone();
        options.matrix = options.matrix.or_else(|| mesh.matrix.clone());
        options.workloads = options.workloads.or_else(|| Some(mesh.status.clone()));
        options.restarts = options.restarts.or_else(|| mesh.restarts.clone());
        let listener = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let token = options.token.clone();
        let server = Server::new(listener, sim.clone(), options).await.unwrap();
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Lab {
            sim,
            addr,
            http: reqwest::Client::new(),
            mesh,
            token,
            serving: Some(serving),
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with the lab's token (if any).
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, self.url(path));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// Sends a JSON body (or none) and reads the JSON answer (`Null` for an empty one).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut r = self.request(method, path);
        if let Some(body) = body {
            r = r.json(&body);
        }
        answer(r.send().await.unwrap()).await
    }

    /// Sends `body` as it is, with `Content-Type: application/json`.
    pub async fn call_raw(&self, method: Method, path: &str, body: &str) -> (StatusCode, Value) {
        let r = self
            .request(method, path)
            .header("content-type", "application/json")
            .body(body.to_owned());
        answer(r.send().await.unwrap()).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }

    /// Adds a node over the API and returns its id.
    pub async fn add_node(&self, x: f64, y: f64) -> NodeId {
        let (status, node) = self
            .call(
                Method::POST,
                "/api/nodes",
                Some(serde_json::json!({"x": x, "y": y})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{node}");
        NodeId(node["id"].as_u64().unwrap() as u32)
    }

    /// The command lines of every process in `id`'s network namespace, read from /proc.
    pub fn processes_in(&self, id: NodeId) -> Vec<String> {
        crate::processes_in(&id.name())
    }

    pub fn ip(&self, id: NodeId) -> String {
        self.mesh.ip(id)
    }

    /// Pings `to` from inside `from`'s namespace.
    pub fn ping(&self, from: NodeId, to: NodeId, count: u32) -> std::process::Output {
        self.mesh.ping(from, to, count, "0.2")
    }

    /// Stops the server, then the mesh (which checks that nothing is left).
    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.serving.take().unwrap())
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
        self.mesh.stop().await;
    }
}

pub async fn answer(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: not JSON ({e}): {}",
                String::from_utf8_lossy(&bytes)
            )
        })
    };
    (status, body)
}

/// Asserts the API's error shape: `{"error": "...", "field": ...}` with this status and field.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, field: Option<&str>) {
    let (s, body) = got;
    assert_eq!(*s, status, "{body}");
    let error = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {body}"));
    assert!(!error.is_empty());
    assert_eq!(body.get("field").and_then(Value::as_str), field, "{body}");
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert!(
        keys.iter().all(|k| *k == "error" || *k == "field"),
        "unexpected keys in {body}"
    );
}

/// `promtool check metrics` on `text`; panics with what it says.
pub fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install Debian's `prometheus` (./x setup does)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- the metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
