//! Lambda@Home: a self-hosted, AWS-Lambda-compatible function runner for one Linux host.
//!
//! Module map, in the order a request travels:
//! - `config`: flags and the named limits; `console`: the server's own log lines to stdout,
//!   buffered and written by their own thread.
//! - `server`: start-up (listeners, threads) and ordered shutdown.
//! - `dataplane`: one tokio-uring thread per core. `core` (event loop, listeners, slab of
//!   connections), `conn` (socket + buffers), `user_api` (AWS Lambda REST API), `runtime_api`
//!   (Runtime API 2018-06-01), `websocket` (the WebSocket Runtime API), `streaming` (response
//!   streaming: InvokeWithResponseStream and streamed runtime answers), `scheduler` (Lambda's
//!   instance semantics), `logs` (instance output, log tails), `metrics`.
//! - `events`: the durable queue of `Event` invocations (its own thread): on-disk log, retries,
//!   destinations.
//! - `logstore`: the function log store (its own thread): log groups and streams on disk,
//!   AWS's line splitting and platform lines, the CloudWatch Logs API.
//! - `protocols`: wire codecs (HTTP/1.1, WebSocket frames, WebSocket runtime messages, AWS
//!   event-stream framing).
//! - `control`: the control-plane thread: `registry` (functions, persisted), `code` (safe unzip),
//!   `executor` (`process`, `docker`).
//! - `api_model`: the User API's JSON shapes; `error`: AWS's error shapes; `types`: what crosses
//!   between the planes.

pub mod config;
pub mod console;
pub mod control;
pub mod dataplane;
pub mod events;
pub mod logstore;
pub mod model;
pub mod protocols;
pub mod server;
