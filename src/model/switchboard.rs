//! `Switchboard`: the read-mostly state every thread holds, and `Permit`, one invocation's hold
//! on concurrency (global and per function), released on drop however the invocation ends.
//!
//! Built once by `server` before any thread starts. Cores read the function table through an
//! `ArcSwap` (no lock on the invoke path); counters are relaxed or acq-rel atomics.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::mpsc::UnboundedSender;

use super::auth::Credentials;
use super::error::ApiError;
use super::logsink::LogSink;
use super::messages::{ControlMsg, CoreMsg};
use super::metrics::Metrics;
use super::types::{Concurrency, Function, FunctionTable, InstanceId};
use crate::config::Config;

/// What every thread holds: the configuration, the published function table, a sender to every
/// core and to the control plane, the metrics, and the server-wide counters (global concurrency,
/// instance ids, shutdown). Read-mostly: the table is swapped whole, counters are atomics.
pub struct Switchboard {
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
    /// The keys User API requests must be signed with; `None` when authentication is off.
    pub auth: Option<Credentials>,
    /// The function log store's inbox (`crate::logstore`); disabled until `with_logs`.
    pub logs: LogSink,
    /// Random, fixed for this server's life: log stream names carry it (`log_stream_name`).
    pub log_nonce: u64,
    /// Client connections open on each core, bounded by `--connections-max` per core: taken by
    /// the core that accepts (`take_client_slot`), or reserved on the target core before a
    /// connection moves there (`user_api::Follow`); released by the core that serves it last.
    client_slots: Vec<AtomicUsize>,
}

impl Switchboard {
    pub fn new(
        config: Arc<Config>,
        table: Arc<ArcSwap<FunctionTable>>,
        cores: Vec<UnboundedSender<CoreMsg>>,
        control: UnboundedSender<ControlMsg>,
    ) -> Switchboard {
        let core_count = cores.len();
        Switchboard {
            config,
            table,
            cores,
            control,
            metrics: Metrics::default(),
            global_in_flight: AtomicU32::new(0),
            next_instance: AtomicU64::new(1),
            shutting_down: AtomicBool::new(false),
            executor_name: std::sync::OnceLock::new(),
            auth: None,
            logs: LogSink::default(),
            log_nonce: rand::random(),
            client_slots: (0..core_count).map(|_| AtomicUsize::new(0)).collect(),
        }
    }

    /// Takes one of `core`'s `--connections-max` client slots; `false` when none is free.
    pub fn take_client_slot(&self, core: usize) -> bool {
        let max = self.config.connections_max;
        self.client_slots[core]
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Gives back a slot `take_client_slot` took.
    pub fn release_client_slot(&self, core: usize) {
        self.client_slots[core].fetch_sub(1, Ordering::AcqRel);
    }

    /// The same switchboard, sending function output to the log store behind `logs`.
    pub fn with_logs(mut self, logs: LogSink) -> Switchboard {
        self.logs = logs;
        self
    }

    /// The same switchboard, with User API authentication on for `credentials` (`Some`).
    pub fn with_auth(mut self, credentials: Option<Credentials>) -> Switchboard {
        self.auth = credentials;
        self
    }

    pub fn executor_name(&self) -> &'static str {
        self.executor_name.get().copied().unwrap_or("none")
    }

    /// A new instance id; its low byte names the home core (see `InstanceId::home_core`).
    pub fn new_instance_id(&self, core: usize) -> InstanceId {
        let seq = self.next_instance.fetch_add(1, Ordering::Relaxed);
        InstanceId(seq << 8 | core as u64)
    }

    /// The runnable version with this pool key (`NAME` for `$LATEST`, `NAME:N`).
    pub fn function(&self, pool_key: &str) -> Option<Arc<Function>> {
        self.table.load().versions.get(pool_key).cloned()
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
    concurrency: Arc<Concurrency>,
    switchboard: Arc<Switchboard>,
}

impl Permit {
    /// Admits one invocation or says which limit refused it (AWS's `Reason`).
    pub fn acquire(
        switchboard: &Arc<Switchboard>,
        function: &Function,
    ) -> Result<Permit, ApiError> {
        let concurrency = &function.concurrency;
        let throttled = |reason| {
            switchboard
                .metrics
                .throttles
                .fetch_add(1, Ordering::Relaxed);
            Err(ApiError::throttled(reason))
        };
        if concurrency.reserved() == Some(0) {
            return throttled("ReservedFunctionConcurrentInvocationLimitExceeded");
        }
        let global = switchboard.config.concurrency;
        let admitted = switchboard
            .global_in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < global).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return throttled("ConcurrentInvocationLimitExceeded");
        }
        if !concurrency.try_acquire() {
            switchboard.global_in_flight.fetch_sub(1, Ordering::AcqRel);
            return throttled("ReservedFunctionConcurrentInvocationLimitExceeded");
        }
        Ok(Permit {
            concurrency: concurrency.clone(),
            switchboard: switchboard.clone(),
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.concurrency.release();
        let prev = self
            .switchboard
            .global_in_flight
            .fetch_sub(1, Ordering::AcqRel);
        debug_assert!(prev > 0);
    }
}
