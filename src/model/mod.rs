//! The vocabulary that crosses threads: what the data-plane cores and the control plane say to
//! each other, and the read-mostly state every thread holds.
//!
//! Dependency arrows run one way: `protocols` (wire codecs) ← `model` ← the planes
//! (`dataplane`, `control`) ← `server`. Nothing here knows how a core or the control plane works
//! inside; a type two planes share lives here, never in one plane's `mod.rs`.
//! - `auth`: the accepted credentials and SigV4 verification of User API requests.
//! - `types`: functions, instances, invocation results (plain data, `Send`).
//! - `error`: AWS's error shapes, the one place failures become what a client sees.
//! - `messages`: `CoreMsg` (to a core), `ControlMsg` (to the control plane), `EventMsg` (to the
//!   event queue), `Invocation`.
//! - `switchboard`: `Switchboard`, the state every thread reads (config, function table,
//!   channels, counters), and `Permit`, one invocation's hold on concurrency.
//! - `metrics`: the Prometheus counters every thread bumps.
//! - `hostcpu`: the host's idle CPU, sampled from `/proc/stat` (adaptive scale-out reads it).
//! - `stream`: the channel a streamed response travels on, from the instance's core to the
//!   caller's.
//! - `logsink`: what goes to the function log store's thread (`LogMsg`, `LogSink`, `LogStream`)
//!   and a function's `LoggingConfig`.
//! - `names`: function references, qualifiers and their validation, as AWS spells them.
//! - `urls`: function URLs: their stored configuration, CORS, and the route a core serves.

pub mod auth;
pub mod error;
pub mod hostcpu;
pub mod logsink;
pub mod messages;
pub mod metrics;
pub mod names;
pub mod stream;
pub mod switchboard;
pub mod types;
pub mod urls;

pub use messages::{ApiAnswer, ControlMsg, CoreMsg, EventMsg, Invocation, NewEvent};
pub use metrics::Metrics;
pub use switchboard::{Permit, Switchboard};
