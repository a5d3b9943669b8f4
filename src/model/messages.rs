//! Messages between threads: `CoreMsg` (to a data-plane core, from other cores and the control
//! plane), `ControlMsg` (to the control plane, from the cores), `EventMsg` (to the event queue's
//! thread, from the cores and `server`), and `Invocation`, the unit of work that travels between
//! cores.
//!
//! Every value here is `Send` and moves by value over a channel; nothing is shared mutably.
//!
//! Why the two channels are unbounded and still cannot grow without bound. A bounded channel
//! between threads that also send to each other can deadlock (core A full towards B while B is
//! full towards A), so each is bounded by what can be outstanding instead:
//! - `CoreMsg` (one per core): `Dispatch` and `IdleInstance` carry admitted invocations, at most
//!   `--concurrency` in the whole server (each holds a `Permit`); instance events are at most a
//!   few per instance, and instances are at most the pending invocations plus the address pool;
//!   `Retire` is one per management change, and those are serialised by the control plane.
//! - `ControlMsg`: an `Api` call is one per client connection awaiting its answer (connections
//!   are capped per core by `--connections-max`); `StartInstance` is one per instance the cap
//!   allows (`FunctionCounters::instances`, at most the admitted invocations); kill, pause and
//!   resume are one per instance state change.

use std::net::TcpListener as StdTcpListener;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::error::ApiError;
use super::logsink::LogStream;
use super::stream::StreamSender;
use super::switchboard::Permit;
use super::types::{ExitInfo, Function, InstanceId, InvokeContext, InvokeResult, RequestId};
use crate::protocols::http::Request;
use crate::protocols::runtime_messages::Register;

/// One admitted invocation on its way to an instance. Owned by exactly one core at a time.
pub struct Invocation {
    pub id: RequestId,
    pub function: Arc<Function>,
    pub payload: Bytes,
    pub context: InvokeContext,
    /// When the caller's request was accepted (duration metrics, pending age).
    pub accepted_at: Instant,
    pub want_log_tail: bool,
    /// Where the result goes: the caller's core waits on the receiving end.
    pub reply: oneshot::Sender<InvokeResult>,
    /// Concurrency held until the invocation is dropped.
    pub permit: Permit,
    /// Where a streamed response goes as it arrives (`InvokeWithResponseStream`); `None` for
    /// every other invocation, whose response (streamed by its runtime or not) is delivered
    /// whole through `reply`.
    pub stream: Option<StreamSender>,
}

/// An `Event` invocation a core accepted, on its way to the event queue (`events`), which
/// acknowledges it once it is on disk.
pub struct NewEvent {
    pub id: RequestId,
    /// The function's name and the qualifier the caller invoked (`$LATEST` when none): the
    /// version an alias routes to is chosen at each attempt, as on AWS.
    pub function: String,
    pub qualifier: String,
    pub payload: Bytes,
    pub trace_id: Arc<str>,
    pub client_context: Option<Bytes>,
}

/// Messages the event queue's thread receives (over a bounded channel: a full channel is 429).
pub enum EventMsg {
    /// Append the event to the log; `ack` answers once the append is on disk (`Ok`), or why it
    /// was refused (queue bounds: `TooManyRequestsException`; the log failed: a service error).
    Enqueue {
        event: NewEvent,
        ack: oneshot::Sender<Result<(), ApiError>>,
    },
    /// Shutdown: start no attempt, record what the attempts that already ended returned, and
    /// answer `done`; whatever is still queued stays on disk for the next start.
    Shutdown { done: oneshot::Sender<()> },
}

/// Messages a core receives (from other cores and from the control plane).
pub enum CoreMsg {
    /// Another core had no idle instance of the function and this core advertised one.
    Dispatch(Invocation),
    /// The control plane started an instance homed on this core: accept its runtime's
    /// connections on `listener` (and on `unix`, its Unix socket, when it has one) and read its
    /// output from `log`.
    InstanceStarted {
        id: InstanceId,
        listener: StdTcpListener,
        unix: Option<std::os::unix::net::UnixListener>,
        log: Option<OwnedFd>,
        /// The uid its processes run as (`Instance::uid`): its connections must come from it.
        /// `None`: the executor could not give it an identity, its connections are unverified.
        uid: Option<u32>,
        /// The log stream its output is stored in.
        stream: Arc<LogStream>,
        /// What its start says about the function's next start (one-off work, ready instances).
        start: crate::model::types::StartFacts,
    },
    /// The instance could not be started at all.
    InstanceStartFailed { id: InstanceId, error: ApiError },
    /// The instance's process or container ended.
    InstanceExited { id: InstanceId, exit: ExitInfo },
    /// A function version changed or went away: its current instances must not take new work.
    /// `pool` is the version's pool key (`Function::pool_key`).
    Retire { pool: String },
    /// A WebSocket registered on another core's shared Runtime API port for an instance homed
    /// here: continue its session on this core.
    AdoptWebSocket {
        id: InstanceId,
        fd: OwnedFd,
        buffered: BytesMut,
        register: Register,
    },
    /// A User API connection whose last invocations were all served by instances of this core:
    /// continue serving it here (between requests; `buffered` is what was read past the last).
    AdoptUserConn { fd: OwnedFd, buffered: BytesMut },
    /// Another core (`core`) parked an instance of `pool` with nothing to do, and this core
    /// advertised pending invocations that wait for another core's instance: hand one over.
    IdleInstance { pool: String, core: usize },
    /// Stop accepting connections (shutdown has begun).
    StopAccepting,
    /// Leave the event loop.
    Exit,
}

/// Requests to the control plane.
pub enum ControlMsg {
    /// A User API management call (anything but Invoke): the core forwards the request as it was
    /// decoded and awaits the rendered answer. Bodies are parsed on the control plane, not on the
    /// cores (base64 zips can be tens of megabytes).
    Api {
        request: Request,
        reply: oneshot::Sender<ApiAnswer>,
    },
    /// Start an instance of `function` homed on `core`.
    StartInstance {
        id: InstanceId,
        /// The instance's LAMBDA_INSTANCE_ID (its id and a secret).
        token: String,
        function: Arc<Function>,
        core: usize,
    },
    KillInstance {
        id: InstanceId,
    },
    /// The instance's runtime finished its init (asked for work the first time): its place in
    /// the start gate goes to the next start.
    InstanceReady {
        id: InstanceId,
    },
    PauseInstance {
        id: InstanceId,
    },
    ResumeInstance {
        id: InstanceId,
    },
    /// Kill every instance and wait for them to end.
    Shutdown {
        done: oneshot::Sender<()>,
    },
}

/// A management call's rendered answer: status, extra headers, body (JSON unless a header says
/// otherwise). Errors arrive already in AWS's shape (`ApiAnswer::error`).
#[derive(Debug)]
pub struct ApiAnswer {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
}

impl ApiAnswer {
    /// A JSON body.
    pub fn json(status: u16, value: &serde_json::Value) -> ApiAnswer {
        ApiAnswer {
            status,
            headers: vec![("Content-Type", "application/json".to_string())],
            body: Bytes::from(value.to_string()),
        }
    }

    /// No body (204 and friends).
    pub fn empty(status: u16) -> ApiAnswer {
        ApiAnswer {
            status,
            headers: Vec::new(),
            body: Bytes::new(),
        }
    }

    /// AWS's error shape: status, `x-amzn-ErrorType`, JSON body.
    pub fn error(e: &ApiError) -> ApiAnswer {
        ApiAnswer {
            status: e.status(),
            headers: vec![
                ("Content-Type", "application/json".to_string()),
                ("x-amzn-ErrorType", e.kind.name().to_string()),
            ],
            body: Bytes::from(e.body()),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> ApiAnswer {
        self.headers.push((name, value.into()));
        self
    }
}

impl From<Result<ApiAnswer, ApiError>> for ApiAnswer {
    fn from(result: Result<ApiAnswer, ApiError>) -> ApiAnswer {
        result.unwrap_or_else(|e| ApiAnswer::error(&e))
    }
}
