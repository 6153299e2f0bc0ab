//! A real mesh behind the real server, for the API, WebSocket and /metrics tests: the Sim
//! with the netns runtime and the classifier, and the server on 127.0.0.1:0.
//!
//! These need root and use the real names (`ms-*`), so they take meshsim's run lock (waiting
//! a while for another test that holds it) and sweep leftovers before and after, as
//! tests/mesh.rs does. `cargo xtask test` runs them.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    os::unix::fs::MetadataExt as _,
    time::{Duration, Instant},
};

use meshsim::{
    datapath::{Datapath, DatapathOptions},
    model::{NodeId, Settings},
    net::{NetNs, Netlink},
    runtime::{
        Addressing,
        cleanup::remove_leftovers,
        lock::{self, LockError, RunLock},
        netns::{NetnsConfig, NetnsRuntime, PREFIX},
    },
    server::{self, Server, ServerError, ServerOptions},
    sim::{Sim, SimHandle},
    workload::WorkloadKind,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::{sync::oneshot, task::JoinHandle};

pub struct Lab {
    pub sim: SimHandle,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    token: Option<String>,
    task: Option<JoinHandle<()>>,
    serving: Option<JoinHandle<Result<(), ServerError>>>,
    stop: Option<oneshot::Sender<()>>,
    _lock: RunLock,
}

/// The run lock; another test or bench may hold it for a while.
async fn run_lock() -> RunLock {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        match lock::acquire() {
            Ok(lock) => return lock,
            Err(LockError::Held) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("the run lock (is a meshsim running?): {e}"),
        }
    }
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
        let lock = run_lock().await;
        remove_leftovers().await.unwrap();
        let dp = Datapath::load(DatapathOptions::default()).unwrap();
        let config = NetnsConfig {
            addressing: Addressing::default(),
            workload,
            log_dir: std::env::temp_dir(),
        };
        let runtime = NetnsRuntime::start(config).await.unwrap();
        let (sim, task) = Sim::spawn(runtime, dp, Settings::default(), false).unwrap();
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
            token,
            task: Some(task),
            serving: Some(serving),
            stop: Some(stop),
            _lock: lock,
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
        let ns = std::fs::metadata(format!("/run/netns/{PREFIX}{}", id.name())).unwrap();
        let mut found = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let Ok(net) = std::fs::metadata(format!("/proc/{pid}/ns/net")) else {
                continue;
            };
            if (net.dev(), net.ino()) == (ns.dev(), ns.ino()) {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                found.push(String::from_utf8_lossy(&cmdline).replace('\0', " "));
            }
        }
        found
    }

    pub fn ip(&self, id: NodeId) -> String {
        self.sim.state().borrow().nodes[&id].ip.to_string()
    }

    /// Pings `to` from inside `from`'s namespace.
    pub fn ping(&self, from: NodeId, to: NodeId, count: u32) -> std::process::Output {
        NetNs::open(&format!("{PREFIX}{}", from.name()))
            .unwrap()
            .command("ping")
            .args([
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                &self.ip(to),
            ])
            .output()
            .unwrap()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(10), self.serving.take().unwrap())
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
        self.sim.shutdown().await.unwrap();
        self.task.take().unwrap().await.unwrap();
        assert_eq!(
            NetNs::list_with_prefix(PREFIX).unwrap(),
            Vec::<String>::new(),
            "namespaces left"
        );
        let root = Netlink::connect().unwrap();
        assert!(
            root.links_with_prefix(PREFIX).await.unwrap().is_empty(),
            "links left"
        );
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

impl Drop for Lab {
    fn drop(&mut self) {
        // A failed test still leaves nothing behind: the Sim removes its nodes when its last
        // handle goes; if it is already gone, sweep by prefix.
        if self.task.is_some() {
            let _ = std::thread::spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let _ = remove_leftovers().await;
                })
            })
            .join();
        }
    }
}
