//! The HTTP side: the JSON API under `/api`, the WebSocket `/ws`, Prometheus `/metrics`, and
//! the canvas at `/`, all on one listener.
//!
//! Every change goes through the [`SimHandle`], and every read comes from the state the Sim
//! published, so the canvas, the API and `meshsim up` can never disagree. One resource per
//! module, each with its own router; [`ApiError`] is the one error answer; [`security`]
//! guards every request before any handler runs.

mod assets;
mod client;
mod cuts;
mod error;
mod events;
mod extract;
mod limits;
mod links;
mod metrics;
mod nodes;
mod scenario;
mod security;
mod settings;
mod state;
mod telemetry;
mod topology;
mod workloads;
mod ws;

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use axum::{Router, extract::DefaultBodyLimit, http::Method, response::IntoResponse};
pub use error::ApiError;
pub use limits::{MAX_IN_FLIGHT, MAX_WS_CLIENTS};
pub use metrics::to_classic as metrics_to_classic;
pub use security::Security;
pub use telemetry::{LinkTraffic, NodeTraffic, TrafficFrame};
use tokio::{
    net::TcpListener,
    sync::{broadcast, watch},
    task::JoinHandle,
};

use crate::{
    scenario::desk::Desk,
    sim::{SimError, SimHandle},
    workload::{WorkloadStatus, matrix::Matrix, restart::RestartPolicies},
};

/// The largest request body taken (413 above it). A topology document of a few thousand
/// nodes is far below it.
pub const BODY_LIMIT: usize = 1 << 20;

/// Where the canvas is served unless `--listen` says otherwise: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the telemetry: {0}")]
    Sim(#[from] SimError),
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

#[derive(Clone)]
pub struct ServerOptions {
    /// Required as a bearer token on `/api`, `/ws` and `/metrics` when set.
    pub token: Option<String>,
    /// Time between traffic frames.
    pub traffic_interval: Duration,
    /// The run's Matrix view (`runtime::Runtime::matrix`), when nodes run homeservers.
    pub matrix: Option<Arc<Matrix>>,
    /// Every node's workload state (`runtime::Runtime::workload_status`).
    pub workloads: Option<watch::Receiver<WorkloadStatus>>,
    /// Every node's restart policy (`runtime::Runtime::restarts`), when nodes run
    /// homeservers.
    pub restarts: Option<RestartPolicies>,
    /// The scenario desk (the timeline, the recording); shared with a headless run.
    pub desk: Arc<Desk>,
    /// Where scenarios started from the canvas write their results (a folder each).
    pub results_dir: PathBuf,
    /// meshsim's version, for reports.
    pub version: String,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            token: None,
            // 20 Hz: smooth dots on the canvas, and the cost of a poll stays small.
            traffic_interval: Duration::from_millis(50),
            matrix: None,
            workloads: None,
            restarts: None,
            desk: Desk::new(),
            results_dir: std::env::temp_dir().join("meshsim-scenarios"),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    sim: SimHandle,
    /// Serialised messages for every WebSocket client: traffic frames from the telemetry
    /// task, Matrix events from the events task.
    feed: broadcast::Sender<axum::extract::ws::Utf8Bytes>,
    matrix: Option<Arc<Matrix>>,
    workloads: Option<watch::Receiver<WorkloadStatus>>,
    restarts: Option<RestartPolicies>,
    metrics: Arc<metrics::Metrics>,
    /// Turns true when the server stops, so WebSocket sessions end and the graceful shutdown
    /// does not wait for them forever.
    shutdown: watch::Receiver<bool>,
    desk: Arc<Desk>,
    results_dir: Arc<PathBuf>,
    version: Arc<str>,
    ws_seats: limits::WsSeats,
    /// Requests refused for being over `limits::MAX_IN_FLIGHT`.
    refused: Arc<std::sync::atomic::AtomicU64>,
    /// The latest state message, serialised once for every WebSocket client.
    ws_state: Arc<ws::StateCache>,
}

/// Binds `addr`, before anything else is started, so a taken port fails fast.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

/// A server ready to serve on its listener.
pub struct Server {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    tasks: Vec<AbortOnDrop>,
    shutdown: watch::Sender<bool>,
}

/// The server's tasks (telemetry, events) live as long as it, also one dropped unserved.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Server {
    /// Builds the routes and starts the telemetry task for `sim`.
    pub async fn new(
        listener: TcpListener,
        sim: SimHandle,
        options: ServerOptions,
    ) -> Result<Self, ServerError> {
        let addr = listener.local_addr().map_err(|source| ServerError::Bind {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            source,
        })?;
        if !addr.ip().is_loopback() {
            tracing::warn!(
                "listening on {addr}, which is not loopback: anyone who can reach it can reshape \
                 this host's mesh{}",
                if options.token.is_some() {
                    " if they have the token"
                } else {
                    " (set --token)"
                }
            );
        }
        let (router, tasks, shutdown) = build(addr, sim, options).await?;
        Ok(Self {
            listener,
            addr,
            router,
            tasks,
            shutdown,
        })
    }

    /// The same router and tasks as [`Server::new`], answering as if bound to `addr`, with
    /// no listener: requests go in through `tower` (the fuzz targets, their regression tests).
    #[cfg(any(test, feature = "fuzzing"))]
    pub async fn in_process(
        addr: SocketAddr,
        sim: SimHandle,
        options: ServerOptions,
    ) -> Result<InProcess, ServerError> {
        let (router, tasks, shutdown) = build(addr, sim, options).await?;
        Ok(InProcess {
            router,
            _tasks: tasks,
            _shutdown: shutdown,
        })
    }

    /// The address it answers on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `stop` completes, then closes WebSocket sessions and waits for requests
    /// in flight.
    pub async fn serve(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let Server {
            listener,
            router,
            tasks,
            shutdown,
            ..
        } = self;
        let stopping = async move {
            stop.await;
            let _ = shutdown.send(true);
        };
        let result = axum::serve(listener, router)
            .with_graceful_shutdown(stopping)
            .await
            .map_err(ServerError::Serve);
        drop(tasks);
        result
    }
}

/// The routes, the telemetry and events tasks, and the shutdown switch of a server
/// answering on `addr`.
async fn build(
    addr: SocketAddr,
    sim: SimHandle,
    options: ServerOptions,
) -> Result<(Router, Vec<AbortOnDrop>, watch::Sender<bool>), ServerError> {
    let (feed, _) = broadcast::channel(telemetry::BACKLOG);
    let mut tasks = vec![AbortOnDrop(telemetry::spawn(
        sim.counter_reader().await?,
        sim.state(),
        feed.clone(),
        options.traffic_interval,
    ))];
    if let Some(matrix) = &options.matrix {
        tasks.push(AbortOnDrop(events::spawn(
            Arc::clone(matrix),
            sim.state(),
            feed.clone(),
        )));
    }
    let ws_seats = limits::WsSeats::new(limits::MAX_WS_CLIENTS);
    let refused = Arc::default();
    let metrics = Arc::new(metrics::Metrics::new(
        sim.state(),
        sim.counter_reader().await?,
        options.matrix.clone(),
        options.workloads.clone(),
        limits::LimitsCollector {
            seats: ws_seats.clone(),
            refused: Arc::clone(&refused),
        },
    ));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let app = AppState {
        sim,
        feed,
        matrix: options.matrix.clone(),
        workloads: options.workloads.clone(),
        restarts: options.restarts.clone(),
        metrics,
        shutdown: shutdown_rx,
        desk: options.desk,
        results_dir: Arc::new(options.results_dir),
        version: options.version.into(),
        ws_seats,
        refused,
        ws_state: Arc::default(),
    };
    let security = Arc::new(Security::new(addr, options.token));
    Ok((router(app, security), tasks, shutdown))
}

/// A server's router without a listener ([`Server::in_process`]); its tasks and WebSocket
/// sessions live as long as this.
#[cfg(any(test, feature = "fuzzing"))]
pub struct InProcess {
    pub router: Router,
    _tasks: Vec<AbortOnDrop>,
    _shutdown: watch::Sender<bool>,
}

fn router(app: AppState, security: Arc<Security>) -> Router {
    let api = Router::new()
        .merge(state::router())
        .merge(nodes::router())
        .merge(links::router())
        .merge(settings::router())
        .merge(topology::router())
        .merge(events::router())
        .merge(client::router())
        .merge(cuts::router())
        .merge(scenario::router())
        .merge(workloads::router())
        .fallback(|uri: axum::extract::OriginalUri| async move {
            ApiError::NoRoute(format!(
                "{}: the API's resources are /api/state, /api/nodes, /api/nodes/{{id}}, \
                 /api/links/{{a}}/{{b}}, /api/settings, /api/topology, /api/events, \
                 /api/nodes/{{id}}/messages, /api/rooms/mesh, /api/client, \
                 /api/nodes/{{id}}/client, /api/cuts, /api/scenario and /api/recording \
                 (docs/api.md)",
                uri.path()
            ))
        });
    let routes = Router::new()
        .nest("/api", api)
        .merge(ws::router())
        .merge(metrics::router())
        .fallback(assets::serve)
        .method_not_allowed_fallback(|method: Method| async move {
            ApiError::MethodNotAllowed(method.to_string()).into_response()
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn_with_state(
            security,
            security::guard,
        ));
    let refused = Arc::clone(&app.refused);
    limits::shed_load(routes, limits::MAX_IN_FLIGHT, refused).with_state(app)
}
