//! The serving tier: the HTTP API, the WebSocket, `/metrics` (through promtool) and the
//! canvas in a real browser, against a real mesh. Needs root: `cargo xtask test` runs it.

mod api;
mod browser;
mod limits;
mod metrics;
mod scenario;
mod ws;
