//! The asynchronous (`Event`) invocation queue: durable, retried and delivered to destinations
//! with AWS's semantics. Design, format and measured cost: docs/events.md.
//!
//! Runs on its own thread (`events`, a current-thread tokio runtime) and owns the on-disk log
//! (`log.rs`), every accepted event not yet done, their retry timers and the per-function and
//! global queue usage. It may block on the disk; the data-plane cores never do: a core sends an
//! `EventMsg::Enqueue` over a bounded channel (full: 429) and answers 202 only when the queue
//! acknowledges the event, after the `fdatasync` that covers it (group commit: one sync per batch
//! of everything that arrived while the previous sync ran).
//!
//! Each attempt is an ordinary `Invocation` with a concurrency permit, handed to a core with
//! `CoreMsg::Dispatch` (a core with an idle instance of the version when one advertises it);
//! the result comes back on the invocation's oneshot. Rules, as on AWS:
//! - a function error or timeout is retried `MaximumRetryAttempts` times (default 2) after about
//!   1 then 2 minutes (`--event-retry-base-ms` scales every delay);
//! - a throttle or platform error is retried with backoff growing from 1 s to 5 min, without
//!   counting as an attempt, until the event is `MaximumEventAgeInSeconds` old (default 6 h);
//! - an event older than that is dropped to OnFailure with `EventAgeExceeded`; exhausted retries
//!   go to OnFailure with `RetriesExhausted`; success goes to OnSuccess. A destination is a
//!   function of this server, invoked asynchronously through this same queue (its record is
//!   enqueued in the same batch that marks the event done, before the done record).
//!
//! Invariants: an event is acknowledged only once its enqueue record is synced; it is marked
//! done (or its failed attempt recorded) only after the attempt ended, so a crash during an
//! attempt reruns that attempt on the next start (at-least-once); at shutdown no attempt starts,
//! the ones that end within the grace are recorded, and everything else stays on disk.

pub mod destination;
pub mod log;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::{mpsc, oneshot};

use self::destination::{Condition, LastResponse, RecordInput};
use self::log::{EventLog, StoredEvent, COMPACT_MIN_BYTES};
use crate::config::EVENT_RETRY_BASE_MS;
use crate::model::error::{ApiError, ErrorKind};
use crate::model::names::parse_function_ref;
use crate::model::types::{
    function_arn, EventSettings, Function, InvokeContext, InvokeOutcome, InvokeResult, RequestId,
    LATEST,
};
use crate::model::{CoreMsg, EventMsg, Invocation, NewEvent, Permit, Switchboard};

/// At shutdown, how long the queue waits for attempts that have already ended (their results
/// are in flight between threads) before it stops: the grace period itself was spent by
/// `server` waiting for in-flight invocations, so anything still running after this reruns at
/// the next start.
const SHUTDOWN_SETTLE_MS: u64 = 500;
/// AWS's backoff for throttled events and platform errors: from 1 s ...
const THROTTLE_BACKOFF_FIRST_MS: u64 = 1_000;
/// ... doubling up to 5 minutes.
const THROTTLE_BACKOFF_MAX_MS: u64 = 300_000;
/// How long the loop sleeps when no timer is due: it wakes for messages and results anyway.
const IDLE_WAKE_S: u64 = 3600;

/// Starts the queue's thread: opens and replays the log first (on the caller's thread, so a
/// broken data dir fails start-up), then runs until `EventMsg::Shutdown`.
pub fn start(
    shared: Arc<Switchboard>,
    inbox: mpsc::Receiver<EventMsg>,
) -> std::io::Result<JoinHandle<()>> {
    let dir = shared.config.data_dir.join("events");
    let (log, replayed) = EventLog::open(&dir, COMPACT_MIN_BYTES)?;
    if !replayed.is_empty() {
        tracing::info!(
            events = replayed.len(),
            "event queue: acknowledged events replayed from the log"
        );
    }
    std::thread::Builder::new()
        .name("events".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!("event queue: no runtime: {e}");
                    return;
                }
            };
            rt.block_on(Queue::new(shared, log, replayed).run(inbox));
        })
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Events and payload bytes queued (for one function, or all).
#[derive(Clone, Copy, Default)]
struct Usage {
    count: usize,
    bytes: usize,
}

/// One live event.
struct Queued {
    event: StoredEvent,
    /// The next wait after a throttle or platform error.
    backoff: Duration,
    /// The version the last attempt ran, and its answer (for destination records).
    last: Option<LastResponse>,
    executed_version: String,
}

type AttemptResult = (String, Result<InvokeResult, oneshot::error::RecvError>);

struct Queue {
    shared: Arc<Switchboard>,
    log: EventLog,
    events: HashMap<String, Queued>,
    /// Events ready to start, oldest first.
    ready: VecDeque<String>,
    /// Events waiting for a retry: (due, sequence, id).
    timers: BTreeSet<(Instant, u64, String)>,
    timer_seq: u64,
    running: FuturesUnordered<Pin<Box<dyn Future<Output = AttemptResult>>>>,
    total: Usage,
    per_function: HashMap<String, Usage>,
    /// Acknowledgements waiting for the next commit.
    acks: Vec<oneshot::Sender<Result<(), ApiError>>>,
    /// Events accepted in the batch not yet committed (forgotten if the commit fails).
    fresh: Vec<String>,
    next_core: usize,
    /// Shutdown asked: whom to tell, and when to stop waiting for attempts that ended.
    shutdown: Option<(oneshot::Sender<()>, Instant)>,
}

impl Queue {
    fn new(shared: Arc<Switchboard>, log: EventLog, replayed: Vec<StoredEvent>) -> Queue {
        let mut q = Queue {
            shared,
            log,
            events: HashMap::new(),
            ready: VecDeque::new(),
            timers: BTreeSet::new(),
            timer_seq: 0,
            running: FuturesUnordered::new(),
            total: Usage::default(),
            per_function: HashMap::new(),
            acks: Vec::new(),
            fresh: Vec::new(),
            next_core: 0,
            shutdown: None,
        };
        for e in replayed {
            q.add(e);
        }
        q
    }

    async fn run(mut self, mut inbox: mpsc::Receiver<EventMsg>) {
        let mut inbox_open = true;
        loop {
            self.start_ready();
            if let Some((_, settle_by)) = &self.shutdown {
                if self.running.is_empty() || Instant::now() >= *settle_by {
                    break;
                }
            }
            let wake = self.next_wake();
            tokio::select! {
                msg = inbox.recv(), if inbox_open => match msg {
                    Some(msg) => {
                        self.handle(msg);
                        // Everything that queued up meanwhile joins this batch.
                        while let Ok(msg) = inbox.try_recv() {
                            self.handle(msg);
                        }
                    }
                    None => inbox_open = false,
                },
                Some((id, result)) = self.running.next(), if !self.running.is_empty() => {
                    self.finished(&id, result);
                    while let Some(Some((id, result))) = futures_util::FutureExt::now_or_never(self.running.next()) {
                        self.finished(&id, result);
                    }
                }
                _ = tokio::time::sleep_until(wake.into()) => self.fire_timers(Instant::now()),
            }
            self.commit();
            if !inbox_open && self.shutdown.is_none() && self.events.is_empty() {
                break;
            }
        }
        self.commit();
        if let Some((done, _)) = self.shutdown.take() {
            let _ = done.send(());
        }
    }

    fn stopping(&self) -> bool {
        self.shutdown.is_some() || self.shared.shutting_down.load(Ordering::SeqCst)
    }

    fn next_wake(&self) -> Instant {
        let mut wake = Instant::now() + Duration::from_secs(IDLE_WAKE_S);
        if let Some((due, _, _)) = self.timers.first() {
            wake = wake.min(*due);
        }
        if let Some((_, settle_by)) = &self.shutdown {
            wake = wake.min(*settle_by);
        }
        wake
    }

    /// `nominal_ms` of AWS's timing, scaled by `--event-retry-base-ms`.
    fn scaled(&self, nominal_ms: u64) -> Duration {
        let base = self.shared.config.event_retry_base_ms;
        Duration::from_micros(
            nominal_ms.saturating_mul(1000).saturating_mul(base) / EVENT_RETRY_BASE_MS,
        )
        .max(Duration::from_millis(1))
    }

    fn handle(&mut self, msg: EventMsg) {
        match msg {
            EventMsg::Enqueue { event, ack } => {
                if let Err(e) = self.accept(event) {
                    let _ = ack.send(Err(e));
                } else {
                    self.acks.push(ack);
                }
            }
            EventMsg::Shutdown { done } => {
                let settle_by = Instant::now() + Duration::from_millis(SHUTDOWN_SETTLE_MS);
                self.shutdown = Some((done, settle_by));
            }
        }
    }

    /// Appends a new event to the batch if the queue bounds allow it.
    fn accept(&mut self, e: NewEvent) -> Result<(), ApiError> {
        if self.stopping() {
            return Err(ApiError::new(
                ErrorKind::ServiceUnavailable,
                "The server is shutting down",
            ));
        }
        let c = &self.shared.config;
        let size = e.payload.len();
        let f = self
            .per_function
            .get(&e.function)
            .copied()
            .unwrap_or_default();
        if self.total.count >= c.event_queue_max
            || self.total.bytes + size > c.event_queue_bytes_max
            || f.count >= c.event_queue_function_max
            || f.bytes + size > c.event_queue_function_bytes_max
        {
            self.shared
                .metrics
                .throttles
                .fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::throttled("EventQueueFull"));
        }
        let stored = StoredEvent {
            id: e.id.to_string(),
            accepted_ms: now_ms(),
            attempts: 0,
            function: e.function,
            qualifier: e.qualifier,
            trace_id: e.trace_id.to_string(),
            client_context: e.client_context,
            payload: e.payload,
        };
        self.log.append_enqueue(&stored);
        self.fresh.push(stored.id.clone());
        self.add(stored);
        Ok(())
    }

    /// Makes `e` live and ready (it starts after the batch holding it is committed).
    fn add(&mut self, e: StoredEvent) {
        let usage = self.per_function.entry(e.function.clone()).or_default();
        usage.count += 1;
        usage.bytes += e.payload.len();
        self.total.count += 1;
        self.total.bytes += e.payload.len();
        self.shared
            .metrics
            .events_queued
            .store(self.total.count as i64, Ordering::Relaxed);
        self.ready.push_back(e.id.clone());
        let backoff = self.scaled(THROTTLE_BACKOFF_FIRST_MS);
        self.events.insert(
            e.id.clone(),
            Queued {
                event: e,
                backoff,
                last: None,
                executed_version: LATEST.to_string(),
            },
        );
    }

    /// Forgets `id` (after its done record is appended, or when its batch failed).
    fn forget(&mut self, id: &str) -> Option<Queued> {
        let q = self.events.remove(id)?;
        let size = q.event.payload.len();
        if let Some(u) = self.per_function.get_mut(&q.event.function) {
            u.count -= 1;
            u.bytes -= size;
            if u.count == 0 {
                self.per_function.remove(&q.event.function);
            }
        }
        self.total.count -= 1;
        self.total.bytes -= size;
        self.shared
            .metrics
            .events_queued
            .store(self.total.count as i64, Ordering::Relaxed);
        Some(q)
    }

    /// Writes and syncs the batch, then answers its acknowledgements.
    fn commit(&mut self) {
        if !self.log.has_batch() {
            for ack in self.acks.drain(..) {
                let _ = ack.send(Ok(()));
            }
            return;
        }
        let started = Instant::now();
        match self.log.commit() {
            Ok(()) => {
                let m = &self.shared.metrics;
                m.event_log_sync
                    .observe_us(started.elapsed().as_micros() as u64);
                self.fresh.clear();
                for ack in self.acks.drain(..) {
                    let _ = ack.send(Ok(()));
                }
                if self.log.should_compact() {
                    let mut live: Vec<&StoredEvent> =
                        self.events.values().map(|q| &q.event).collect();
                    live.sort_by_key(|e| e.accepted_ms);
                    if let Err(e) = self.log.compact(live.into_iter()) {
                        tracing::error!("event log: compaction failed: {e}");
                    }
                }
            }
            Err(e) => {
                tracing::error!("event log: write failed, the batch is refused: {e}");
                for id in std::mem::take(&mut self.fresh) {
                    self.forget(&id);
                    self.ready.retain(|r| *r != id);
                }
                for ack in self.acks.drain(..) {
                    let _ = ack.send(Err(ApiError::service(format!(
                        "Could not store the event: {e}"
                    ))));
                }
            }
        }
    }

    fn fire_timers(&mut self, now: Instant) {
        while let Some(first) = self.timers.first() {
            if first.0 > now {
                break;
            }
            let (_, _, id) = self.timers.pop_first().expect("checked");
            self.ready.push_back(id);
        }
    }

    /// Puts `id` back after `delay`, but no later than the moment it becomes too old (then it
    /// is dropped to OnFailure with EventAgeExceeded).
    fn retry_after(&mut self, id: &str, delay: Duration, settings: &EventSettings) {
        let Some(q) = self.events.get(id) else { return };
        let expires_ms = q.event.accepted_ms + u64::from(settings.maximum_event_age_s) * 1000;
        let until_expiry = Duration::from_millis(expires_ms.saturating_sub(now_ms()) + 1);
        self.timer_seq += 1;
        self.timers.insert((
            Instant::now() + delay.min(until_expiry),
            self.timer_seq,
            id.to_string(),
        ));
    }

    fn start_ready(&mut self) {
        if self.stopping() {
            return;
        }
        while let Some(id) = self.ready.pop_front() {
            self.start(&id);
        }
    }

    /// Starts one attempt of `id`, or retires it (too old, function gone), or backs off.
    fn start(&mut self, id: &str) {
        let table = self.shared.table.load();
        let Some(q) = self.events.get(id) else { return };
        let (name, qualifier) = (q.event.function.clone(), q.event.qualifier.clone());
        let settings = table.event_settings(&name, &qualifier);
        let age_ms = now_ms().saturating_sub(q.event.accepted_ms);
        if age_ms > u64::from(settings.maximum_event_age_s) * 1000 {
            self.fail(id, Condition::EventAgeExceeded, &settings);
            return;
        }
        let q_opt = (qualifier != LATEST).then_some(qualifier.as_str());
        let Some(function) = table.resolve(&name, q_opt, rand::random::<f64>()).cloned() else {
            tracing::warn!(
                request_id = id,
                function = name,
                qualifier,
                "event dropped: the function no longer exists"
            );
            self.shared
                .metrics
                .events_dropped
                .fetch_add(1, Ordering::Relaxed);
            self.done(id);
            return;
        };
        let permit = match Permit::acquire(&self.shared, &function) {
            Ok(p) => p,
            Err(_) => {
                self.back_off(id, &settings);
                return;
            }
        };
        let core = self.pick_core(&function);
        let q = self.events.get_mut(id).expect("checked above");
        q.executed_version = function.version.clone();
        let alias_arn = q_opt
            .filter(|q| !q.bytes().all(|b| b.is_ascii_digit()))
            .map(|alias| Arc::from(format!("{}:{alias}", function_arn(&name))));
        let (reply, rx) = oneshot::channel();
        let inv = Invocation {
            id: RequestId(Arc::from(id)),
            function,
            payload: q.event.payload.clone(),
            context: InvokeContext {
                client_context: q.event.client_context.clone(),
                trace_id: Arc::from(q.event.trace_id.as_str()),
                alias_arn,
            },
            accepted_at: Instant::now(),
            want_log_tail: false,
            reply,
            permit,
            stream: None,
        };
        self.shared.send_core(core, CoreMsg::Dispatch(inv));
        self.shared
            .metrics
            .event_attempts
            .fetch_add(1, Ordering::Relaxed);
        let id = id.to_string();
        self.running.push(Box::pin(async move { (id, rx.await) }));
    }

    /// A core that advertises an idle instance of the version, else the next in turn.
    fn pick_core(&mut self, function: &Function) -> usize {
        let cores = self.shared.cores.len();
        let mask = function.counters.idle_cores.load(Ordering::Relaxed);
        let core = mask.trailing_zeros() as usize;
        if mask != 0 && core < cores {
            return core;
        }
        self.next_core = (self.next_core + 1) % cores;
        self.next_core
    }

    /// A throttle or platform error: try again later, without counting an attempt.
    fn back_off(&mut self, id: &str, settings: &EventSettings) {
        let max = self.scaled(THROTTLE_BACKOFF_MAX_MS);
        let Some(q) = self.events.get_mut(id) else {
            return;
        };
        let delay = q.backoff;
        q.backoff = (q.backoff * 2).min(max);
        self.retry_after(id, delay, settings);
    }

    /// An attempt ended.
    fn finished(&mut self, id: &str, result: Result<InvokeResult, oneshot::error::RecvError>) {
        let stopping = self.stopping();
        let Some(q) = self.events.get_mut(id) else {
            return;
        };
        let settings = self
            .shared
            .table
            .load()
            .event_settings(&q.event.function, &q.event.qualifier);
        let outcome = match result {
            Ok(r) => r.outcome,
            Err(_) if stopping => return,
            Err(_) => InvokeOutcome::Service(ApiError::service("The attempt was lost")),
        };
        match outcome {
            InvokeOutcome::Success { body } => {
                q.event.attempts += 1;
                q.last = Some(LastResponse {
                    executed_version: q.executed_version.clone(),
                    function_error: None,
                    body,
                });
                self.shared
                    .metrics
                    .events_succeeded
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(arn) = settings.on_success.clone() {
                    self.deliver(id, &arn, Condition::Success);
                }
                self.done(id);
            }
            InvokeOutcome::FunctionError {
                function_error,
                body,
            } => {
                q.event.attempts += 1;
                let attempts = q.event.attempts;
                q.last = Some(LastResponse {
                    executed_version: q.executed_version.clone(),
                    function_error: Some(function_error),
                    body,
                });
                if attempts > settings.maximum_retry_attempts {
                    self.fail(id, Condition::RetriesExhausted, &settings);
                } else {
                    self.log.append_attempt(id, attempts);
                    // AWS: about one minute before the first retry, two before the second.
                    let nominal = EVENT_RETRY_BASE_MS << (attempts - 1).min(16);
                    let delay = self.scaled(nominal);
                    self.retry_after(id, delay, &settings);
                }
            }
            // Cut short by shutdown: not recorded, so it runs again at the next start.
            InvokeOutcome::Service(_) if stopping => {}
            InvokeOutcome::Service(e) if e.kind == ErrorKind::ResourceNotFound => {
                tracing::warn!(request_id = id, "event dropped: {}", e.message);
                self.shared
                    .metrics
                    .events_dropped
                    .fetch_add(1, Ordering::Relaxed);
                self.done(id);
            }
            InvokeOutcome::Service(_) => self.back_off(id, &settings),
        }
    }

    /// Retries exhausted or too old: the OnFailure record, then done.
    fn fail(&mut self, id: &str, condition: Condition, settings: &EventSettings) {
        tracing::warn!(
            request_id = id,
            condition = condition.name(),
            "event discarded"
        );
        self.shared
            .metrics
            .events_failed
            .fetch_add(1, Ordering::Relaxed);
        if let Some(arn) = settings.on_failure.clone() {
            self.deliver(id, &arn, condition);
        }
        self.done(id);
    }

    /// Enqueues the invocation record of `id` for the destination function `arn` (bounds do not
    /// apply: at most one record per event, and it must not be lost to a full queue).
    fn deliver(&mut self, id: &str, arn: &str, condition: Condition) {
        let Some(q) = self.events.get(id) else { return };
        let target = match parse_function_ref(arn) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(
                    request_id = id,
                    destination = arn,
                    "bad destination: {}",
                    e.message
                );
                return;
            }
        };
        let record = destination::record(&RecordInput {
            request_id: id,
            function_arn: &format!("{}:{}", function_arn(&q.event.function), q.event.qualifier),
            condition,
            approximate_invoke_count: q.event.attempts,
            request_payload: &q.event.payload,
            response: q.last.as_ref(),
            now_ms: now_ms(),
        });
        let dest = StoredEvent {
            id: RequestId::random().to_string(),
            accepted_ms: now_ms(),
            attempts: 0,
            function: target.name,
            qualifier: target.qualifier.unwrap_or_else(|| LATEST.to_string()),
            trace_id: q.event.trace_id.clone(),
            client_context: None,
            payload: Bytes::from(record),
        };
        self.log.append_enqueue(&dest);
        self.shared
            .metrics
            .event_destinations
            .fetch_add(1, Ordering::Relaxed);
        self.add(dest);
    }

    fn done(&mut self, id: &str) {
        self.log.append_done(id);
        self.forget(id);
    }
}
