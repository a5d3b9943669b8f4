//! The data plane: one thread per core, each running its own tokio-uring runtime.
//!
//! A core owns: its SO_REUSEPORT listeners for the User API and the Runtime API, the per-instance
//! Runtime API listeners of the instances whose home it is, a slab of its connections, and its
//! scheduler (the instances homed here, their pending invocations). Nothing a core owns is touched
//! by another thread; cores talk to each other and to the control plane only through `CoreMsg` and
//! `ControlMsg` channels, and read the function table through a lock-free `ArcSwap`.
//! A core never blocks: no locks on the invoke path, no blocking syscalls but the occasional
//! non-blocking log drain.

pub mod conn;
pub mod core;
pub mod logs;
pub mod metrics;
pub mod runtime_api;
pub mod scheduler;
pub mod user_api;
pub mod websocket;

use std::net::TcpListener as StdTcpListener;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc::UnboundedSender;

use crate::config::Config;
use crate::control::registry::FunctionTable;
use crate::control::ControlMsg;
use crate::error::ApiError;
use crate::types::{ExitInfo, Function, FunctionCounters, InstanceId};

pub use self::metrics::Metrics;
pub use self::scheduler::Invocation;

/// Messages a core receives (from other cores and from the control plane).
pub enum CoreMsg {
    /// Another core had no idle instance of the function and this core advertised one.
    Dispatch(Invocation),
    /// The control plane started an instance homed on this core: accept its runtime's
    /// connections on `listener` and read its output from `log`.
    InstanceStarted {
        id: InstanceId,
        listener: StdTcpListener,
        log: Option<OwnedFd>,
    },
    /// The instance could not be started at all.
    InstanceStartFailed { id: InstanceId, error: ApiError },
    /// The instance's process or container ended.
    InstanceExited { id: InstanceId, exit: ExitInfo },
    /// The function was updated or deleted: its current instances must not take new work.
    Retire { function: String },
    /// A WebSocket registered on another core's shared Runtime API port for an instance homed
    /// here: continue its session on this core.
    AdoptWebSocket {
        id: InstanceId,
        fd: OwnedFd,
        buffered: bytes::BytesMut,
        register: crate::protocols::runtime_messages::Register,
    },
    /// Stop accepting connections (shutdown has begun).
    StopAccepting,
    /// Leave the event loop.
    Exit,
}

/// State every thread can read: configuration, the function table, channels, counters.
pub struct Shared {
    pub config: Arc<Config>,
    /// The function table, published by the control plane before it acknowledges a change.
    pub table: Arc<ArcSwap<FunctionTable>>,
    pub cores: Vec<UnboundedSender<CoreMsg>>,
    pub control: UnboundedSender<ControlMsg>,
    pub metrics: Metrics,
    /// Invocations admitted and not yet finished, across all functions.
    pub global_in_flight: AtomicU32,
    /// Source of instance ids.
    next_instance: AtomicU64,
    pub shutting_down: AtomicBool,
    /// `process` or `docker`, set once the control plane has chosen.
    pub executor_name: std::sync::OnceLock<&'static str>,
}

impl Shared {
    pub fn new(
        config: Arc<Config>,
        table: Arc<ArcSwap<FunctionTable>>,
        cores: Vec<UnboundedSender<CoreMsg>>,
        control: UnboundedSender<ControlMsg>,
    ) -> Shared {
        Shared {
            config,
            table,
            cores,
            control,
            metrics: Metrics::default(),
            global_in_flight: AtomicU32::new(0),
            next_instance: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            executor_name: std::sync::OnceLock::new(),
        }
    }

    pub fn executor_name(&self) -> &'static str {
        self.executor_name.get().copied().unwrap_or("none")
    }

    /// A new instance id; its low byte names the home core (see `InstanceId::home_core`).
    pub fn new_instance_id(&self, core: usize) -> InstanceId {
        let seq = self.next_instance.fetch_add(1, Ordering::Relaxed);
        InstanceId(seq << 8 | core as u64)
    }

    pub fn function(&self, name: &str) -> Option<Arc<Function>> {
        self.table.load().get(name).cloned()
    }

    /// Sends to a core; a core that has exited drops the message (only during shutdown).
    pub fn send_core(&self, core: usize, msg: CoreMsg) {
        let _ = self.cores[core].send(msg);
    }

    pub fn send_control(&self, msg: ControlMsg) {
        let _ = self.control.send(msg);
    }
}

/// One admitted invocation's hold on concurrency: released when dropped, however the invocation
/// ends (completed, failed, timed out, or its owner dropped it).
pub struct Permit {
    counters: Arc<FunctionCounters>,
    shared: Arc<Shared>,
}

impl Permit {
    /// Admits one invocation or says which limit refused it (AWS's `Reason`).
    pub fn acquire(shared: &Arc<Shared>, function: &Function) -> Result<Permit, ApiError> {
        let reserved = function.config.reserved_concurrency;
        if reserved == Some(0) {
            shared.metrics.throttles.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::throttled(
                "ReservedFunctionConcurrentInvocationLimitExceeded",
            ));
        }
        let global = shared.config.concurrency;
        let admitted = shared
            .global_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < global).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            shared.metrics.throttles.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::throttled("ConcurrentInvocationLimitExceeded"));
        }
        if !function.counters.try_acquire(reserved.unwrap_or(u32::MAX)) {
            shared.global_in_flight.fetch_sub(1, Ordering::AcqRel);
            shared.metrics.throttles.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::throttled(
                "ReservedFunctionConcurrentInvocationLimitExceeded",
            ));
        }
        Ok(Permit {
            counters: function.counters.clone(),
            shared: shared.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.counters.release();
        let prev = self.shared.global_in_flight.fetch_sub(1, Ordering::AcqRel);
        debug_assert!(prev > 0);
    }
}
