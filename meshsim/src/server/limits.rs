//! What the server takes at once. meshsim runs as root next to the mesh it drives, so a
//! flood of requests or sockets is answered at once (503 with `Retry-After`, the JSON error
//! saying which limit) instead of queueing without bound and starving the Sim's own work.
//!
//! - **Requests in flight**: at most [`MAX_IN_FLIGHT`] are handled at a time; one more is
//!   refused, not queued. A WebSocket counts only while it is being upgraded.
//! - **WebSocket clients**: at most [`MAX_WS_CLIENTS`] at once; each is a task with its own
//!   copy of every frame in its send buffer.
//!
//! The other limits (body size, nodes, links) are where their data is checked: `BODY_LIMIT`
//! in `server`, the maps' capacity in the Sim.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use axum::{
    Router,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// Requests handled at once. Far above what the canvas and scripts need (a handful), and
/// low enough that a flood costs bounded memory; the Sim serialises changes anyway.
pub const MAX_IN_FLIGHT: usize = 512;

/// WebSocket clients at once (one per canvas tab or script).
pub const MAX_WS_CLIENTS: usize = 1000;

/// Refuses requests beyond `max_in_flight` with 503 instead of queueing them, counting each
/// refusal in `refused`.
pub fn shed_load<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    max_in_flight: usize,
    refused: Arc<AtomicU64>,
) -> Router<S> {
    let slots = InFlight {
        slots: Arc::new(Semaphore::new(max_in_flight)),
        max: max_in_flight,
        refused,
    };
    router.layer(axum::middleware::from_fn_with_state(slots, admit))
}

#[derive(Clone)]
struct InFlight {
    slots: Arc<Semaphore>,
    max: usize,
    refused: Arc<AtomicU64>,
}

/// Holds a slot while the request is handled (a WebSocket's only while it is upgraded).
async fn admit(State(in_flight): State<InFlight>, request: Request, next: Next) -> Response {
    let Ok(_slot) = in_flight.slots.try_acquire() else {
        in_flight.refused.fetch_add(1, Ordering::Relaxed);
        return ApiError::Busy(format!(
            "the server is handling {} requests, the most it takes at once: retry in a \
             moment, or send fewer requests at a time",
            in_flight.max
        ))
        .into_response();
    };
    next.run(request).await
}

/// The places for WebSocket clients; a session holds one until it ends.
#[derive(Clone, Debug)]
pub struct WsSeats {
    seats: Arc<Semaphore>,
    max: usize,
}

impl WsSeats {
    pub fn new(max: usize) -> Self {
        Self {
            seats: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// A seat for one more client, or the answer that there is none.
    pub fn take(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        Arc::clone(&self.seats).try_acquire_owned().map_err(|_| {
            ApiError::Busy(format!(
                "{} WebSocket clients are connected, the most this server takes: close one \
                 (each canvas tab is one) and connect again",
                self.max
            ))
        })
    }

    /// Clients connected now.
    pub fn taken(&self) -> usize {
        self.max - self.seats.available_permits()
    }
}

/// `/metrics`' view of the limits, so a client fleet or a flood shows in Prometheus.
#[derive(Debug)]
pub struct LimitsCollector {
    pub seats: WsSeats,
    pub refused: Arc<AtomicU64>,
}

impl Collector for LimitsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = encoder.encode_descriptor(
            "meshsim_websocket_clients",
            "WebSocket clients connected now.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.seats.taken() as i64).encode(family)?;
        let family = encoder.encode_descriptor(
            "meshsim_http_requests_refused",
            "Requests refused with 503 because the server was handling as many as it takes.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.refused.load(Ordering::Relaxed)).encode(family)
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, response::IntoResponse, routing::get};
    use tokio::sync::Notify;
    use tower::ServiceExt as _;

    use super::*;

    #[test]
    fn a_seat_is_given_back_when_its_client_goes() {
        let seats = WsSeats::new(2);
        let a = seats.take().unwrap();
        let _b = seats.take().unwrap();
        assert_eq!(seats.taken(), 2);
        let refused = seats.take().unwrap_err();
        assert!(matches!(refused, ApiError::Busy(_)), "{refused:?}");
        assert!(
            refused.to_string().contains("2 WebSocket clients"),
            "{refused}"
        );
        drop(a);
        assert_eq!(seats.taken(), 1);
        let _c = seats.take().unwrap();
    }

    #[tokio::test]
    async fn a_request_over_the_limit_is_refused_not_queued() {
        // One slot, held by a request that waits until the test lets it go.
        let release = Arc::new(Notify::new());
        let entered = Arc::new(Notify::new());
        let router = shed_load(
            Router::new().route(
                "/slow",
                get({
                    let (release, entered) = (Arc::clone(&release), Arc::clone(&entered));
                    move || async move {
                        entered.notify_one();
                        release.notified().await;
                        "done"
                    }
                }),
            ),
            1,
            Arc::default(),
        );
        let request = || Request::get("/slow").body(Body::empty()).unwrap();
        let held = tokio::spawn(router.clone().oneshot(request()));
        entered.notified().await;

        let refused = router.clone().oneshot(request()).await.unwrap();
        assert_eq!(refused.status(), 503);
        assert_eq!(refused.headers()["retry-after"], "1");
        let body = axum::body::to_bytes(refused.into_body(), 1 << 16)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("1 requests"),
            "{body}"
        );

        release.notify_one();
        assert_eq!(held.await.unwrap().unwrap().status(), 200);
        // The slot is free again.
        let again = tokio::spawn(router.oneshot(request()));
        entered.notified().await;
        release.notify_one();
        assert_eq!(again.await.unwrap().unwrap().into_response().status(), 200);
    }
}
