//! The per-core scheduler: Lambda's execution-environment semantics for the instances homed on
//! this core.
//!
//! Owns the instances whose Runtime API connections this core accepts, the idle list and the
//! queue of pending invocations per function (its pool, dropped once the function is deleted
//! and nothing of it is left on this core, so function churn does not grow the map). Single-threaded: only the owning core calls it,
//! through `RefCell` borrows that never span an `.await`. Bounded by the account concurrency
//! (`Permit`): every invocation it holds, pending or in flight, holds a permit.
//!
//! An instance has two orthogonal states (diagram and triggers in `docs/scheduler.md`):
//! - `State`, its work cycle: `Starting` (started, no `/next` yet) → `Idle { paused }` (parked
//!   with a waiter; `paused` after `idle_pause_s`) → `Busy` (one invocation in flight) →
//!   `Returning { since, awaited }` (answered, not back at `/next` yet) → `Idle` again;
//! - `Life`, whether it takes work: `Serving` → `Retiring` (its function changed while it was
//!   busy; killed when that invocation ends) → `Killed` (the control plane was asked to end it;
//!   known until its exit arrives, then removed).
//!
//! `Transport` records which Runtime API the runtime uses (metrics only). Whether an instance
//! counts as supply for pending invocations is derived (`Instance::is_supply`: serving and
//! `Starting` or `Returning { awaited: true }`), and `update` is the one place a state or life
//! changes, keeping the pools' supply counts and the gauges in step.
//!
//! Invariants (checked by `check_invariants` at the end of every public entry point in debug
//! builds):
//! - an instance runs at most one invocation at a time: `Busy` exactly while `in_flight` is set;
//! - an instance answers only the invocation it was given (request id checked on every post);
//! - an instance is in its pool's idle list exactly while it is `Idle` and `Serving`, once, and
//!   then has a waiter; a `Killed` instance has none; only a busy instance is `Retiring`;
//! - a pool's `supply` equals the number of its instances for which `is_supply` holds;
//! - every pending invocation has an instance behind it (`pending.len() <= supply + capped +
//!   awaiting_busy`, kept by `rebalance`): one starting, or one that has just answered and is on
//!   its way back to `/next` (for the pool's return grace), or a busy one of a function whose
//!   invocations are much shorter than a cold start (`awaiting_busy`, re-checked every `tick`),
//!   or, when the cap held a start back (`capped`), one of another core, which hands itself over
//!   (`CoreMsg::IdleInstance`, `tick`); so a pending invocation ends on a warm instance, on its
//!   cold start, or with that cold start's error;
//! - a pool never has more instances holding a slot (`Instance::holds_slot`, counted on every
//!   core in `FunctionCounters::instances`) than its function has admitted invocations, except
//!   for slow returners that come back after their grace (docs/scheduler.md, "Instances track
//!   concurrency");
//! - an instance never takes an invocation of a newer generation of its function;
//! - every in-flight invocation ends: response, error, deadline (`tick`), instance exit, or (a
//!   streamed one) its caller dropping the stream (`tick`, which then kills the instance).

use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::logs::LogSource;
use crate::config::LOG_TAIL_BYTES;
use crate::model::error::{ApiError, ErrorKind};
use crate::model::logsink::Report;
use crate::model::stream::StreamSender;
use crate::model::types::{
    function_error_body, ExitInfo, Function, FunctionCounters, InstanceId, InvokeContext,
    InvokeOutcome, InvokeResult, ReadyStart, RequestId, StartFacts,
};
use crate::model::ControlMsg;
use crate::model::{CoreMsg, Invocation, Permit, Switchboard};

/// How long, at least, an instance that has just answered counts as about to take the next
/// pending invocation. Runtimes post a response and ask for the next invocation microseconds
/// apart on an idle machine; waiting that long beats starting a new instance (a cold start is
/// 10-100 ms).
const RETURN_GRACE: Duration = Duration::from_millis(50);

/// How long an instance that has answered may stay away from `/next` before it is killed. A
/// runtime asks for its next invocation right after posting a response; one that does not come
/// back within this bound has stopped serving (hung, or a client that answers once and leaves)
/// and would otherwise hold its process and count as busy for ever.
const RETURN_TIMEOUT: Duration = Duration::from_secs(5);

/// How much longer than the init limit a pending invocation may wait before it fails with
/// ResourceNotReadyException: the safety net behind "every pending invocation has an instance".
const PENDING_WAIT_SLACK: Duration = Duration::from_secs(5);

/// How long, at most, a returning instance counts as about to come back. Between the two bounds
/// the grace is the pool's last observed init duration (`Pool::return_grace`): under CPU
/// contention a runtime may take hundreds of milliseconds to ask again, and a cold start started
/// in its place would take at least as long as an init does, and leave an instance too many
/// once the slow one is back. Beyond this a runtime that answered is doing work after its answer
/// (or is stuck), and pending invocations stop waiting for it.
const RETURN_GRACE_MAX: Duration = Duration::from_secs(1);

/// How long an instance may wait for the executor to report it running: the start gate's queue
/// (`--max-concurrent-inits`) plus the executor's own start. Its init limit only counts from that
/// report; this bounds a start that never gets there (a wedged container engine).
const START_WAIT_MAX: Duration = Duration::from_secs(120);

/// A busy instance counts as soon free for pending invocations (`busy_capacity`) only
/// when it serves at least this many of them in the time a cold start takes: for functions
/// whose invocations are long relative to a start (I/O waits, sleeps), instances scale with
/// concurrency as on AWS.
const BUSY_CAPACITY_MIN: usize = 2;
/// At most this many pending invocations are left to one busy instance.
const BUSY_CAPACITY_MAX: usize = 1000;

/// Beside serving instances, `--scale-out adaptive` starts one only when the shortfall is at
/// least 1 / this of the invocations waiting on the core (`adaptive_starts`).
const SHORTFALL_SHARE_MIN: usize = 4;

/// Beside serving instances, a shortfall must last half as long as a start takes (the pool's
/// init estimate, within these bounds) before `--scale-out adaptive` starts for it
/// (`Scheduler::lasting_shortfall`).
const SHORTFALL_LASTS_MIN: Duration = Duration::from_millis(10);
const SHORTFALL_LASTS_MAX: Duration = Duration::from_millis(100);

/// A busy instance counts as soon serving (`Scheduler::soon_serving`) while its invocation has
/// run less than the next start takes, and never for less than this: with fork starts of 2 ms,
/// a stall of a few milliseconds (a busy instance descheduled) was enough to stop counting the
/// only instance of a 0.2 ms function and start another inside a measured window (issue 11: 1 of
/// 48 windows, a Python HTTP closed loop of 100 callers, its busy instance at 3.4 ms). Longer
/// than the stalls of the whole machine seen here (10-15 ms); shorter than the holds of `loadgen
/// cold`'s later-instance phase (50 ms and more), which must not wait for their starts.
const BUSY_SOON_MIN: Duration = Duration::from_millis(20);

/// One invocation's dispatch-to-answer time counts in the pool's service average as at most
/// this many times the average (`service_average`).
const SERVICE_SAMPLE_CAP: u64 = 4;

/// `Scheduler::start_cost_ns` multiplies a start's init by the host's runnable tasks per CPU up
/// to this (thousandths): 4 per CPU, about what a closed loop of 100 callers on two CPUs showed
/// (2–2.6, peaks of 7).
const CONTENTION_MAX_MILLI: u64 = 4000;
/// ... and never beyond this, or beyond the init itself where that is longer: waiting behind a
/// busy instance stays far within the init limit that expires pending invocations.
const START_COST_MAX: Duration = Duration::from_secs(1);
/// A hold of starts on a saturated host (`Scheduler::held_for_cpu`) ends once the pool's oldest
/// waiting invocation has waited this long.
const HELD_WAIT_MAX: Duration = Duration::from_secs(1);
/// For this long after a pool's last hold (`Scheduler::held_for_cpu`) the host counts as still
/// saturated while less than a whole CPU is idle (`SATURATION_ENDS_AT_MILLI_CPUS`) and the
/// runnable tasks are at most one more than the pool's instances and the server's cores: the
/// figures that start a hold sit right at its edge under a closed loop that saturates the host,
/// and one sampling window on the other side of it (a runnable count of 4.13 against 4 allowed,
/// idle CPU 0.38 before and after) started an instance inside a measured window (issue 11,
/// Python over HTTP at c=100, traced). Hysteresis, as a thermostat has.
const HOLD_LINGERS: Duration = Duration::from_secs(1);
/// A lingering hold (`HOLD_LINGERS`) ends once this much CPU is idle (thousandths of a CPU).
const SATURATION_ENDS_AT_MILLI_CPUS: u32 = 1000;

/// How long a runtime whose WebSocket closed mid-invocation has to be reported exited before
/// the invocation fails without its exit status. A local process's exit is reported at once;
/// a remote instance's (`--executor swarm`) comes from the executor's poll of the task states
/// every 500 ms plus a Docker API round trip or two, and with a 500 ms grace an out-of-memory
/// kill on a loaded machine was reported as a closed connection instead (seen in CI).
const EXIT_GRACE: Duration = Duration::from_millis(3000);

/// What a runtime receives for one invocation (the `/next` response or WebSocket message).
pub struct Work {
    pub id: RequestId,
    pub payload: Bytes,
    /// Absolute deadline, Unix epoch milliseconds (Lambda-Runtime-Deadline-Ms).
    pub deadline_ms: u64,
    pub function: Arc<Function>,
    pub context: InvokeContext,
}

/// A finished invocation's result on its way to the caller.
struct Delivery {
    reply: oneshot::Sender<InvokeResult>,
    result: InvokeResult,
}

impl Delivery {
    fn send(self) {
        // The caller may have gone (its connection closed): nothing to do then.
        let _ = self.reply.send(self.result);
    }
}

/// What a WebSocket session's writer sends: an invocation, or a ready-made frame.
pub enum Outgoing {
    Work(Work),
    Frame(Bytes),
}

/// How a parked runtime is handed its next invocation.
pub enum Waiter {
    /// An HTTP `/next` waiting on its connection.
    Http(oneshot::Sender<Work>),
    /// A registered WebSocket session's writer.
    Ws(tokio::sync::mpsc::UnboundedSender<Outgoing>),
}

impl Waiter {
    /// Whether the runtime behind it has gone (its `/next` connection or WebSocket closed).
    fn is_closed(&self) -> bool {
        match self {
            Waiter::Http(tx) => tx.is_closed(),
            Waiter::Ws(tx) => tx.is_closed(),
        }
    }

    fn send(self, work: Work) -> Result<(), ()> {
        match self {
            Waiter::Http(tx) => tx.send(work).map_err(|_| ()),
            Waiter::Ws(tx) => tx.send(Outgoing::Work(work)).map_err(|_| ()),
        }
    }
}

/// Where an instance is in its work cycle (see the module doc for the transitions).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Started; its runtime has not asked for work yet.
    Starting,
    /// Parked in `/next` (or ready on its WebSocket): can take an invocation now. `paused`: the
    /// control plane was asked to freeze it after `idle_pause_s`; resumed when dispatched to.
    Idle { paused: bool },
    /// Running an invocation (`Instance::in_flight` is set).
    Busy,
    /// Answered at `since`; its runtime has not asked for the next one yet. `awaited`: pending
    /// invocations count on it coming back (cleared by `tick` after `RETURN_GRACE`).
    Returning { since: Instant, awaited: bool },
}

impl State {
    fn idle() -> State {
        State::Idle { paused: false }
    }

    fn is_idle(self) -> bool {
        matches!(self, State::Idle { .. })
    }

    fn is_paused(self) -> bool {
        self == State::Idle { paused: true }
    }
}

/// Whether an instance takes work. Only moves forward: `Serving` → `Retiring` → `Killed`, or
/// `Serving` → `Killed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Life {
    /// Takes invocations.
    Serving,
    /// Its function changed or went away while it was busy: takes no new work and is killed when
    /// its current invocation ends.
    Retiring,
    /// The control plane was asked to end it; it stays known until its exit arrives.
    Killed,
}

/// Which Runtime API the instance's runtime uses (facts for metrics, not lifecycle).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transport {
    /// Told to use HTTP (LAMBDA_USE_WEBSOCKET off, or a runtime that speaks only HTTP).
    Http,
    /// Told to use WebSocket; has not asked for work yet.
    WsExpected,
    /// Registered a WebSocket session.
    Ws,
    /// Told to use WebSocket but asked over HTTP (counted once in `fallbacks_to_http`).
    FellBack,
}

struct InFlight {
    id: RequestId,
    reply: oneshot::Sender<InvokeResult>,
    deadline: Instant,
    dispatched_at: Instant,
    accepted_at: Instant,
    log_start: u64,
    want_tail: bool,
    cold: bool,
    _permit: Permit,
    /// Where a streamed response goes (`Invocation::stream`): set only for
    /// `InvokeWithResponseStream`, so ordinary invocations never look at it.
    stream: Option<StreamSender>,
}

struct Instance {
    id: InstanceId,
    function: Arc<Function>,
    started_at: Instant,
    /// When its init limit (`init_timeout_s`) began: when the executor reported it running
    /// (`running`), or its start request until then. Lambda's init limit covers the runtime's
    /// init, not the provisioning of the sandbox: under load a container may take longer to be
    /// created than the whole init limit, and was killed (and its invocation failed with
    /// `Runtime.InitTimeout`) before its runtime had run at all.
    init_since: Instant,
    /// Whether the executor has reported it running (`running`); until then its init limit has
    /// not begun (it may wait in the start gate), only `START_WAIT_MAX` applies.
    running: bool,
    state: State,
    life: Life,
    waiter: Option<Waiter>,
    /// When its WebSocket closed mid-invocation: the exit (with its real status) is awaited for
    /// `EXIT_GRACE` before the invocation fails with a generic message.
    disconnected_at: Option<Instant>,
    /// The secret the runtime gets as LAMBDA_INSTANCE_ID and must show in a WebSocket register.
    token: String,
    transport: Transport,
    in_flight: Option<InFlight>,
    served: u64,
    idle_since: Instant,
    init_duration: Option<Duration>,
    /// Its start included work the function's next start will not repeat
    /// (`executor::Instance::one_off_init`: a fork template's import and init): its init time is
    /// reported but not taken as the pool's start-cost estimate.
    one_off_init: bool,
    /// It took an instance its executor had ready (`ReadyStart::took_one`): its init goes into
    /// the pool's ready-start estimate (`ready_init_ns`), not the ordinary one.
    from_ready: bool,
    /// What the runtime posted to `/runtime/init/error`.
    init_error: Option<Bytes>,
    log: Option<Rc<LogSource>>,
    /// The per-instance Runtime API listeners (its TCP address, its Unix socket if it has one),
    /// shut down when the instance goes.
    listener_fds: Vec<RawFd>,
}

impl Instance {
    /// Whether a pending invocation may count on this instance (see `Pool::supply`). Derived
    /// from `state` and `life`, never stored.
    fn is_supply(&self) -> bool {
        self.life == Life::Serving
            && matches!(
                self.state,
                State::Starting | State::Returning { awaited: true, .. }
            )
    }

    /// Whether the instance is a start not yet reported running (most often waiting in the
    /// control plane's start gate). Derived.
    fn is_queued(&self) -> bool {
        self.life == Life::Serving && self.state == State::Starting && !self.running
    }

    /// Whether the instance counts in its pool's cross-core instance count
    /// (`FunctionCounters::instances`), which caps cold starts: serving, and not a returning
    /// instance past its grace. Derived, never stored.
    fn holds_slot(&self) -> bool {
        self.life == Life::Serving && !matches!(self.state, State::Returning { awaited: false, .. })
    }
}

#[derive(Default)]
struct Pool {
    idle: Vec<InstanceId>,
    pending: VecDeque<Invocation>,
    /// Instances that will take a pending invocation soon: starting, or answered within
    /// `RETURN_GRACE` (serving, not retiring or killed): the number of this pool's instances
    /// whose `Instance::is_supply` holds, kept in step by `update`. `rebalance` starts instances
    /// only beyond these.
    supply: usize,
    /// Pending invocations beyond `supply` that `rebalance` left without a cold start because
    /// the pool's instances on all cores already match the function's admitted invocations:
    /// each waits for an instance of another core (hand-off by `tick`, or at once when that
    /// core's instance parks and sends `CoreMsg::IdleInstance`). Recomputed by `rebalance`.
    capped: usize,
    /// Pending invocations beyond `supply` that `rebalance` left to this core's busy instances
    /// rather than start instances for: the function's invocations are so much shorter than a
    /// cold start (`busy_capacity`) that a busy or starting instance will have served them
    /// before a new one could. Recomputed by `rebalance`, which `tick` re-runs while any wait.
    awaiting_busy: usize,
    /// The last observed init duration of this pool's instances (0 before the first).
    init_estimate: Duration,
    /// Since when `rebalance` has seen a shortfall beside serving instances that calls for a
    /// start (`lasting_shortfall`); `None` while there is none.
    shortfall_since: Option<Instant>,
    /// Whether `rebalance` last held starts back because the host's CPUs were saturated
    /// (`held_for_cpu`): a hold is counted once (`lah_scale_out_held_total`), not per re-run.
    held_for_cpu: bool,
    /// When `rebalance` last held starts back for a saturated host: for `HOLD_LINGERS` after it,
    /// looser figures keep the hold (`held_for_cpu`). Not cleared when a hold ends, unlike
    /// `held_for_cpu` (which ends each time the waiting are served away).
    last_held: Option<Instant>,
    /// When the executor last reported an instance of this pool running: pending invocations
    /// are not expired as stale within an init limit (plus slack) of it (`expire_pending`).
    last_running: Option<Instant>,
    /// Whether this core's bit in the pool's `spare_cores` hint is set: `supply` exceeds
    /// `pending`, so an instance of this core is about to ask for work that no invocation here
    /// waits for. Kept by `sync_spare`, which touches the shared atomic only when this changes.
    spare_hinted: bool,
}

impl Pool {
    /// How long a returning instance of this pool counts as supply: about as long as a cold
    /// start would take, within `RETURN_GRACE..=RETURN_GRACE_MAX`.
    fn return_grace(&self) -> Duration {
        self.init_estimate.clamp(RETURN_GRACE, RETURN_GRACE_MAX)
    }
}

/// Why a runtime's request was refused (mapped to the Runtime API's status codes).
#[derive(Debug, PartialEq, Eq)]
pub enum RuntimeRefusal {
    /// Unknown or gone instance (410 Gone: the runtime should exit).
    UnknownInstance,
    /// The request id is not the one this instance was given (403).
    NotYourRequest,
    /// Another request for work is already parked for this instance and its runtime is still
    /// there (409): a second `/next` never silently replaces the first.
    AlreadyWaiting,
}

pub struct Scheduler {
    core: usize,
    shared: Arc<Switchboard>,
    instances: HashMap<InstanceId, Instance>,
    pools: HashMap<String, Pool>,
}

impl Scheduler {
    pub fn new(core: usize, shared: Arc<Switchboard>) -> Scheduler {
        Scheduler {
            core,
            shared,
            instances: HashMap::new(),
            pools: HashMap::new(),
        }
    }

    /// An invocation admitted on this core: local idle instance, else another core's, else queue
    /// it and start an instance. Returns the core it was handed to, if another (the caller's
    /// connection follows its invocations: `user_api::Follow`).
    pub fn submit(&mut self, inv: Invocation) -> Option<usize> {
        let name = inv.function.pool_key.as_str();
        if let Some(id) = self.take_idle(name, inv.function.generation) {
            self.dispatch(id, inv);
            self.checked();
            return None;
        }
        let others = !(1u64 << self.core);
        let counters = &inv.function.counters;
        let mask = counters.idle_cores.load(Ordering::Relaxed) & others;
        if mask != 0 {
            let target = mask.trailing_zeros() as usize;
            self.shared.send_core(target, CoreMsg::Dispatch(inv));
            return Some(target);
        }
        // No idle instance anywhere. One of this core that is about to ask for work takes it
        // here; else one of another core that is about to ask (it has just answered, typically)
        // takes it there, in one hand-off. Queued here instead, the invocation would wait under
        // the cold-start cap for that instance's wake-up and a hand-off back (two cross-core
        // messages per invocation for a sequential caller whose instance lives on the other
        // core), or, without the cap, start an instance the load does not need.
        let local_spare = self
            .pools
            .get(name)
            .is_some_and(|p| p.supply > p.pending.len());
        if !local_spare {
            let mask = counters.spare_cores.load(Ordering::Relaxed) & others;
            if mask != 0 {
                let target = mask.trailing_zeros() as usize;
                self.shared.send_core(target, CoreMsg::Dispatch(inv));
                return Some(target);
            }
        }
        self.enqueue(inv);
        self.checked();
        None
    }

    /// An invocation handed over by another core: never handed on again.
    pub fn accept_handoff(&mut self, inv: Invocation) {
        match self.take_idle(&inv.function.pool_key, inv.function.generation) {
            Some(id) => self.dispatch(id, inv),
            None => self.enqueue(inv),
        }
        self.checked();
    }

    fn enqueue(&mut self, inv: Invocation) {
        let name = inv.function.pool_key.clone();
        self.pools
            .entry(name.clone())
            .or_default()
            .pending
            .push_back(inv);
        self.rebalance(&name);
    }

    /// The most recently idle instance of `name` that runs at least `generation` (an instance
    /// of an older generation whose Retire has not arrived yet is retired now).
    fn take_idle(&mut self, name: &str, generation: u64) -> Option<InstanceId> {
        loop {
            let pool = self.pools.get_mut(name)?;
            let Some(id) = pool.idle.pop() else {
                self.mark_idle_core(name, false);
                return None;
            };
            if pool.idle.is_empty() {
                self.mark_idle_core(name, false);
            }
            if self.instances[&id].function.generation >= generation {
                return Some(id);
            }
            self.kill(id);
        }
    }

    fn mark_idle_core(&self, name: &str, idle: bool) {
        let Some(f) = self.shared.function(name) else {
            return;
        };
        let bit = 1u64 << self.core;
        if idle {
            f.counters.idle_cores.fetch_or(bit, Ordering::Relaxed);
        } else {
            f.counters.idle_cores.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// Starts instances until every pending invocation has one behind it (see `Pool::supply`),
    /// but never more instances of the pool, counted on every core, than the function has
    /// admitted invocations: a pending invocation beyond that waits for an instance of another
    /// core, which is free (idle, or about to be) because fewer invocations than instances run.
    /// Without this cap a core whose own instances are all busy starts one while another core's
    /// instance is just coming back, and under a steady closed-loop load the pool outgrows the
    /// load. The excess is `Pool::capped`; `tick` hands it to idle cores and re-runs this.
    fn rebalance(&mut self, name: &str) {
        self.sync_spare(name);
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        let missing = pool.pending.len().saturating_sub(pool.supply);
        pool.capped = 0;
        pool.awaiting_busy = 0;
        if missing == 0 {
            pool.held_for_cpu = false;
            pool.shortfall_since = None;
            self.hint_waiting(name, false);
            return;
        }
        let Some(function) = self.shared.function(name) else {
            let error = ApiError::not_found_function(name);
            self.fail_pending(name, usize::MAX, |_| InvokeOutcome::Service(error.clone()));
            self.hint_waiting(name, false);
            return;
        };
        // `adaptive`, for a function whose invocations are far shorter than a cold start: each
        // of this core's instances that will serve soon (busy for less than a start takes, or
        // starting) serves `per_instance` pending invocations one after another before a new
        // instance could; start one instance per `per_instance` invocations beyond that. (A
        // closed loop of 100 callers on two CPUs ran 100 processes whose caches and JITs never
        // warmed, at half the throughput of ten.) `tick` re-runs this, so a busy instance that
        // runs long stops counting within a tick.
        let per_instance = self.per_instance_capacity(&function.counters);
        let (want, awaiting) = if per_instance == 0 {
            (missing, 0)
        } else {
            let cover = self.soon_serving(name, &function.counters) * per_instance;
            let mut want = adaptive_starts(missing, cover, per_instance);
            if cover > 0 {
                want = self.held_for_cpu(name, &function.counters, want);
                want = self.lasting_shortfall(name, &function.counters, want);
            } else {
                if let Some(pool) = self.pools.get_mut(name) {
                    pool.held_for_cpu = false;
                }
                // None here, some on other cores: while they are all busy, what waits here is
                // advertised (`hint_waiting` below) and the first of them to park takes it,
                // microseconds later for invocations this short. Starting at once instead put
                // a cold start inside measured windows of a steady load whenever a caller's
                // invocation reached a core without instances while the other core's were busy
                // (issue 11, traced in high-frequency runs). A shortfall that lasts still
                // starts, as beside this core's own instances.
                if self.instances_elsewhere(name, &function.counters) {
                    want = self.lasting_shortfall(name, &function.counters, want);
                }
            }
            (want, missing - want)
        };
        let pool = self.pools.get_mut(name).expect("looked up above");
        pool.awaiting_busy = awaiting;
        // Invocations left to this core's busy instances are advertised too: an instance of
        // another core that parks with nothing to do takes the oldest of them at once
        // (`wake_a_waiting_core`). Invocations queue on the core their caller's connection
        // arrived on, so without this a core with one busy instance kept dozens waiting while
        // another core's instances sat idle, until the shortfall started instances (issue 11).
        self.hint_waiting(name, true);
        if want == 0 {
            return;
        }
        let demand = function.concurrency.in_flight.load(Ordering::Acquire);
        let mut started = 0;
        while started < want && reserve_slot(&function.counters, demand) {
            self.start_instance(function.clone());
            started += 1;
        }
        if started > 0 && per_instance > 0 {
            self.trace_scale_out(name, &function.counters, missing, per_instance, started);
        }
        let pool = self.pools.get_mut(name).expect("looked up above");
        pool.capped = want - started;
        if pool.capped == 0 && pool.awaiting_busy == 0 {
            self.hint_waiting(name, false);
        }
    }

    /// How many pending invocations one instance of the function may be left to serve in turn
    /// under `--scale-out adaptive` (see `busy_capacity`); 0: start instances as `eager` does.
    fn per_instance_capacity(&self, counters: &FunctionCounters) -> usize {
        if self.shared.config.scale_out != crate::config::ScaleOut::Adaptive {
            return 0;
        }
        busy_capacity(
            counters.service_ns.load(Ordering::Relaxed),
            self.start_cost_ns(counters),
        )
    }

    /// What a start of the pool takes now: its init average (measured when the start ran) times
    /// the host's contention (`HostCpu::contention_milli`, runnable tasks per CPU). A start is
    /// CPU work (a fork and its page copies, a runtime's imports) and on a contended host it
    /// waits for a CPU as every invocation does; without this, the service average grew with
    /// contention while the start cost stayed what it was on an idle host, so a fast function
    /// looked slow next to its starts and `busy_capacity` fell below its minimum: 89 instances
    /// started at once inside a measured window (issue 11, a closed loop of 100 callers over
    /// HTTP with 3 ms fork starts and 1.3 ms invocations on two saturated CPUs). The `swarm`
    /// executor's instances start on other hosts.
    ///
    /// Bounded (`CONTENTION_MAX_MILLI`, `START_COST_MAX`): the figure is the whole host's, and
    /// another load's runnable tasks (a function of busy threads) raise it for every pool, also
    /// for I/O-bound functions and for containers with CPU shares of their own, which it does not
    /// slow as much. Unbounded, a co-tenant of 2000 busy threads made a start cost a thousand
    /// inits: one busy instance covered hundreds of waiting invocations and they expired with
    /// ResourceNotReady.
    ///
    /// This is the cost of the pool's starts in general (`typical_init_ns`), what an instance's
    /// share of the waiting is measured by; how long a busy instance is counted on is measured
    /// by the next start's (`next_start_cost_ns`).
    fn start_cost_ns(&self, counters: &FunctionCounters) -> u64 {
        self.under_contention(typical_init_ns(counters))
    }

    /// What the pool's next start costs now (`expected_init_ns`: a ready start's while its
    /// executor holds a ready instance for it), scaled as `start_cost_ns`: how long a busy
    /// instance is counted on to serve the waiting (`soon_serving`). One Docker pool slot makes
    /// the next start cheap, not every start: the share of the waiting each instance is left
    /// (`busy_capacity`) stays that of the pool's starts in general, or a closed loop that
    /// saturates the host saw instances as worth a tenth of what they are and started one inside
    /// a measured window (1 of 48 Docker throughput windows before this split, none of 72
    /// before the ready estimate).
    fn next_start_cost_ns(&self, counters: &FunctionCounters) -> u64 {
        self.under_contention(expected_init_ns(counters))
    }

    fn under_contention(&self, init: u64) -> u64 {
        if self.shared.executor_name() == "swarm" {
            return init;
        }
        let contention =
            (self.shared.metrics.host_cpu.contention_milli() as u64).min(CONTENTION_MAX_MILLI);
        let cost = init.saturating_mul(contention) / 1000;
        cost.min(init.max(START_COST_MAX.as_nanos() as u64))
    }

    /// `want` starts beside serving instances unless no CPU of the host is idle, in which case
    /// none (`want` 0; `tick` re-runs `rebalance` while invocations wait, so they start once a
    /// CPU is free again). A new instance of a function this fast (adaptive waits for busy
    /// instances only when one serves at least `BUSY_CAPACITY_MIN` invocations in a start's time)
    /// runs on CPU or not at all: on a saturated host it adds no throughput, only shares the same
    /// CPUs among more processes, and every invocation gets longer, so each instance's share of
    /// the waiting shrinks and the rule asks for more instances still. Under a closed loop of 100
    /// callers this fed on itself: 2–3 instances served the load, a stall of the machine made
    /// the service average eight times itself, and 19 instances started inside a measured window
    /// (issue 11). Not held: a pool with fewer instances than the server has cores (a runtime is
    /// one process; one per CPU is the least a CPU-bound load needs); a pool that is not what
    /// saturates the host (`saturated_by_pool`); and the `swarm` executor, whose instances run
    /// on other hosts. A hold ends once the oldest waiting invocation has waited `HELD_WAIT_MAX`,
    /// whatever the figures say: a co-tenant that keeps the host on the edge of saturation must
    /// not keep a pool from growing for ever. Within `HOLD_LINGERS` of the pool's last hold the
    /// figures may sit a little on the other side of the edge (less than a CPU idle, one runnable
    /// task more) and the hold stays.
    fn held_for_cpu(&mut self, name: &str, counters: &FunctionCounters, want: usize) -> usize {
        let instances = counters.instances.load(Ordering::Relaxed) as usize;
        let host = &self.shared.metrics.host_cpu;
        let cores = self.shared.cores.len();
        let Some(pool) = self.pools.get_mut(name) else {
            return want;
        };
        let now = Instant::now();
        let waited_long = pool.pending.front().is_some_and(|oldest| {
            now.saturating_duration_since(oldest.accepted_at) >= HELD_WAIT_MAX
        });
        let lingering = pool
            .last_held
            .is_some_and(|at| now.saturating_duration_since(at) < HOLD_LINGERS);
        // Lingering, the edge moves: less than a whole CPU idle, one runnable task more.
        let (idle_below, runnable_slack) = if lingering {
            (SATURATION_ENDS_AT_MILLI_CPUS, 1000)
        } else {
            (crate::model::hostcpu::SATURATED_BELOW_MILLI_CPUS, 0)
        };
        let saturated = host.idle_below(idle_below)
            && saturated_by_pool(
                host.runnable_low_milli()
                    .map(|r| r.saturating_sub(runnable_slack)),
                instances,
                cores,
            );
        let held = want > 0
            && !waited_long
            && saturated
            && self.shared.executor_name() != "swarm"
            && instances >= cores;
        if held {
            pool.last_held = Some(now);
        }
        if held && !pool.held_for_cpu {
            self.shared
                .metrics
                .host_cpu
                .starts_held
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!(
                target: "lah::scale_out",
                core = self.core,
                function = name,
                want,
                idle_milli_cpus = self.shared.metrics.host_cpu.idle_milli_cpus(),
                runnable_milli = self.shared.metrics.host_cpu.runnable_milli(),
                runnable_low_milli = self.shared.metrics.host_cpu.runnable_low_milli(),
                instances = counters.instances.load(Ordering::Relaxed),
                "adaptive scale-out held: no CPU of the host is idle"
            );
        }
        pool.held_for_cpu = held;
        if held {
            0
        } else {
            want
        }
    }

    /// `want` starts beside serving instances if the shortfall behind them has lasted half as
    /// long as a start takes, else none (`tick` re-runs `rebalance` every 10 ms while
    /// invocations wait). A stall of the machine (10–15 ms here: every busy invocation late at
    /// once) raises the service average for a few dozen invocations and shrinks each instance's
    /// share for as long; without this, five instances started inside a measured window for a
    /// load that had not changed (issue 11). A real rise in load waits half a start's time more
    /// for its instances (the service average is back within a few milliseconds of a stall),
    /// and the waiting are served by the busy instances meanwhile. Half, not a whole: a busy
    /// instance stops counting once its invocation has run as long as a start (`soon_serving`).
    fn lasting_shortfall(&mut self, name: &str, counters: &FunctionCounters, want: usize) -> usize {
        let lasts = (Duration::from_nanos(self.start_cost_ns(counters)) / 2)
            .clamp(SHORTFALL_LASTS_MIN, SHORTFALL_LASTS_MAX);
        // `rebalance` runs on the invoke path: no key allocation (its caller found the pool).
        let Some(pool) = self.pools.get_mut(name) else {
            return want;
        };
        if want == 0 {
            pool.shortfall_since = None;
            return 0;
        }
        let now = Instant::now();
        match pool.shortfall_since {
            Some(since) if now.duration_since(since) >= lasts => {
                pool.shortfall_since = None;
                want
            }
            Some(_) => 0,
            None => {
                pool.shortfall_since = Some(now);
                0
            }
        }
    }

    /// Whether other cores have instances of pool `name` that serve or will (the pool's
    /// cross-core count, `FunctionCounters::instances`, beyond this core's share of it). Walks
    /// this core's instances: `rebalance` asks only when none of its own will serve soon.
    fn instances_elsewhere(&self, name: &str, counters: &FunctionCounters) -> bool {
        let here = self
            .instances
            .values()
            .filter(|i| i.function.pool_key == name && i.holds_slot())
            .count();
        counters.instances.load(Ordering::Relaxed) as usize > here
    }

    /// This core's instances of pool `name` that will serve pending invocations one after
    /// another soon: busy ones whose invocation has run for less than a cold start takes (and
    /// than `BUSY_SOON_MIN`), starting ones, and ones that have just answered and are on their
    /// way back to `/next` (an HTTP runtime spends a good part of each cycle there).
    fn soon_serving(&self, name: &str, counters: &FunctionCounters) -> usize {
        let init = Duration::from_nanos(self.next_start_cost_ns(counters)).max(BUSY_SOON_MIN);
        let now = Instant::now();
        self.instances
            .values()
            .filter(|i| i.function.pool_key == name && i.life == Life::Serving)
            .filter(|i| match &i.in_flight {
                Some(f) => now.saturating_duration_since(f.dispatched_at) < init,
                None => i.is_supply(),
            })
            .count()
    }

    /// Why `--scale-out adaptive` started instances while the pool had some (target
    /// `lah::scale_out`, debug level): the numbers `rebalance` decided on and the state of this
    /// core's instances of the pool, so an unexpected start under steady load can be explained.
    fn trace_scale_out(
        &self,
        name: &str,
        counters: &FunctionCounters,
        missing: usize,
        per_instance: usize,
        started: usize,
    ) {
        if !tracing::enabled!(target: "lah::scale_out", tracing::Level::DEBUG) {
            return;
        }
        let now = Instant::now();
        let mut states = String::new();
        for i in self.instances.values() {
            if i.function.pool_key != name {
                continue;
            }
            let what = match (&i.state, &i.in_flight) {
                (State::Busy, Some(f)) => {
                    format!(
                        "busy {}us",
                        now.saturating_duration_since(f.dispatched_at).as_micros()
                    )
                }
                (State::Returning { since, awaited }, _) => format!(
                    "returning {}us{}",
                    now.saturating_duration_since(*since).as_micros(),
                    if *awaited { "" } else { " (not awaited)" }
                ),
                (State::Starting, _) => format!("starting running={}", i.running),
                (State::Idle { .. }, _) => "idle".to_string(),
                (s, _) => format!("{s:?}"),
            };
            states.push_str(&format!("[{} {:?} {}] ", i.id, i.life, what));
        }
        tracing::debug!(
            target: "lah::scale_out",
            core = self.core,
            function = name,
            missing,
            per_instance,
            started,
            service_us = counters.service_ns.load(Ordering::Relaxed) / 1000,
            init_us = typical_init_ns(counters) / 1000,
            next_init_us = expected_init_ns(counters) / 1000,
            contention_milli = self.shared.metrics.host_cpu.contention_milli(),
            instances = counters.instances.load(Ordering::Relaxed),
            "adaptive scale-out started instances; this core's: {states}"
        );
    }

    /// Sets or clears this core's bit in the pool's `spare_cores` hint after `supply` or
    /// `pending` of pool `name` changed (see `Pool::spare_hinted`).
    fn sync_spare(&mut self, name: &str) {
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        let spare = pool.supply > pool.pending.len();
        if spare == pool.spare_hinted {
            return;
        }
        pool.spare_hinted = spare;
        let Some(f) = self.shared.function(name) else {
            return;
        };
        let bit = 1u64 << self.core;
        if spare {
            f.counters.spare_cores.fetch_or(bit, Ordering::Relaxed);
        } else {
            f.counters.spare_cores.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// Sets or clears this core's bit in the pool's `waiting_cores` hint.
    fn hint_waiting(&self, name: &str, waiting: bool) {
        let Some(f) = self.shared.function(name) else {
            return;
        };
        let bit = 1u64 << self.core;
        let waiting_cores = &f.counters.waiting_cores;
        if waiting {
            waiting_cores.fetch_or(bit, Ordering::Relaxed);
        } else if waiting_cores.load(Ordering::Relaxed) & bit != 0 {
            waiting_cores.fetch_and(!bit, Ordering::Relaxed);
        }
    }

    /// Creates a `Starting` instance and asks the control plane for it. Its slot in the pool's
    /// cross-core instance count was reserved by the caller (`reserve_slot`).
    fn start_instance(&mut self, function: Arc<Function>) {
        let id = self.shared.new_instance_id(self.core);
        // 128 random bits: remote instances (docs/swarm.md) are admitted on this secret alone,
        // from another machine, with no uid the kernel could check.
        let token = format!("{id}-{:032x}", rand::random::<u128>());
        let expects_ws = expects_websocket(&function, self.shared.config.use_websocket);
        let now = Instant::now();
        self.instances.insert(
            id,
            Instance {
                id,
                function: function.clone(),
                started_at: now,
                init_since: now,
                running: false,
                state: State::Starting,
                life: Life::Serving,
                waiter: None,
                disconnected_at: None,
                token: token.clone(),
                transport: if expects_ws {
                    Transport::WsExpected
                } else {
                    Transport::Http
                },
                in_flight: None,
                served: 0,
                idle_since: now,
                init_duration: None,
                one_off_init: false,
                from_ready: false,
                init_error: None,
                log: None,
                listener_fds: Vec::new(),
            },
        );
        self.pools
            .entry(function.pool_key.clone())
            .or_default()
            .supply += 1;
        self.sync_spare(&function.pool_key);
        self.gauge(State::Starting, 1);
        self.shared
            .metrics
            .instance_starts
            .fetch_add(1, Ordering::Relaxed);
        self.shared.send_control(ControlMsg::StartInstance {
            id,
            token,
            function,
            core: self.core,
        });
    }

    /// Counts one instance in `state` in (or out of) the instance gauges.
    fn gauge(&self, state: State, delta: i64) {
        let g = &self.shared.metrics.instances;
        let gauge = match state {
            State::Starting => &g.starting,
            State::Idle { .. } => &g.idle,
            State::Busy | State::Returning { .. } => &g.busy,
        };
        gauge.fetch_add(delta, Ordering::Relaxed);
        if state.is_paused() {
            g.paused.fetch_add(delta, Ordering::Relaxed);
        }
    }

    /// Applies `change` to instance `id` and keeps what is derived from its `state` and `life`
    /// in step: its pool's `supply` count, the pool's cross-core instance count and the instance
    /// gauges. Every change of an existing
    /// instance's `state` or `life` goes through here.
    fn update<R>(&mut self, id: InstanceId, change: impl FnOnce(&mut Instance) -> R) -> Option<R> {
        let inst = self.instances.get_mut(&id)?;
        let (was_supply, was, had_slot) = (inst.is_supply(), inst.state, inst.holds_slot());
        let r = change(inst);
        let (is_supply, is, has_slot) = (inst.is_supply(), inst.state, inst.holds_slot());
        if had_slot != has_slot {
            let slots = &inst.function.counters.instances;
            if has_slot {
                slots.fetch_add(1, Ordering::Relaxed);
            } else {
                slots.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if was_supply != is_supply {
            let name = inst.function.pool_key.clone();
            let pool = self.pools.entry(name.clone()).or_default();
            if is_supply {
                pool.supply += 1;
            } else {
                pool.supply -= 1;
            }
            self.sync_spare(&name);
        }
        if was != is {
            self.gauge(was, -1);
            self.gauge(is, 1);
        }
        Some(r)
    }

    fn set_state(&mut self, id: InstanceId, to: State) {
        self.update(id, |inst| inst.state = to);
    }

    fn dispatch(&mut self, id: InstanceId, inv: Invocation) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return self.enqueue(inv);
        };
        debug_assert!(inst.state.is_idle() && inst.in_flight.is_none());
        if inst.state.is_paused() {
            self.set_state(id, State::idle());
            self.shared.send_control(ControlMsg::ResumeInstance { id });
        }
        let inst = self.instances.get_mut(&id).expect("checked above");
        let Some(waiter) = inst.waiter.take() else {
            return self.enqueue(inv);
        };
        let now = Instant::now();
        let timeout = Duration::from_secs(inst.function.config.timeout_s as u64);
        let log_start = inst.log.as_ref().map_or(0, |l| {
            if inv.want_log_tail {
                l.drain();
            }
            l.platform_start(&inv.id);
            l.ring.borrow().total()
        });
        let cold = inst.served == 0;
        inst.served += 1;
        let work = Work {
            id: inv.id.clone(),
            payload: inv.payload,
            deadline_ms: epoch_ms() + timeout.as_millis() as u64,
            function: inst.function.clone(),
            context: inv.context,
        };
        inst.in_flight = Some(InFlight {
            id: inv.id,
            reply: inv.reply,
            deadline: now + timeout,
            dispatched_at: now,
            accepted_at: inv.accepted_at,
            log_start,
            want_tail: inv.want_log_tail,
            cold,
            _permit: inv.permit,
            stream: inv.stream,
        });
        self.set_state(id, State::Busy);
        if cold {
            self.shared
                .metrics
                .cold_starts
                .fetch_add(1, Ordering::Relaxed);
        }
        if waiter.send(work).is_err() {
            // The runtime's connection went away while parked: the instance cannot be trusted.
            self.finish(id, service_outcome("the runtime disconnected"));
            self.kill(id);
        }
    }

    /// An HTTP runtime asks for work (`/next`): the receiver yields it.
    pub fn next(&mut self, id: InstanceId) -> Result<oneshot::Receiver<Work>, RuntimeRefusal> {
        if let Some(inst) = self.instances.get_mut(&id) {
            if inst.transport == Transport::WsExpected {
                inst.transport = Transport::FellBack;
                self.shared
                    .metrics
                    .ws
                    .fallbacks_to_http
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let (tx, rx) = oneshot::channel();
        let parked = self.park(id, Waiter::Http(tx));
        self.checked();
        parked.map(|()| rx)
    }

    /// A registered WebSocket session is ready for its next invocation.
    pub fn ready_ws(
        &mut self,
        id: InstanceId,
        tx: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    ) -> Result<(), RuntimeRefusal> {
        if let Some(inst) = self.instances.get_mut(&id) {
            // A runtime that got as far as WebSocket did not fall back.
            inst.transport = Transport::Ws;
        }
        let parked = self.park(id, Waiter::Ws(tx));
        self.checked();
        parked
    }

    /// Whether `token` and `function_name` prove a WebSocket register comes from instance `id`.
    pub fn verify(&self, id: InstanceId, token: &str, function_name: &str) -> bool {
        self.instances.get(&id).is_some_and(|i| {
            i.life != Life::Killed && i.token == token && i.function.config.name == function_name
        })
    }

    /// The runtime's WebSocket closed: what it was running fails, and the instance is retired
    /// (a runtime that lost its connection cannot be trusted with more work).
    pub fn disconnected(&mut self, id: InstanceId) {
        let Some(inst) = self.instances.get_mut(&id) else {
            return;
        };
        if inst.in_flight.is_some() && inst.life != Life::Killed {
            // Most often the runtime died: its exit, with the real status, is about to arrive.
            inst.disconnected_at = Some(Instant::now());
            return;
        }
        self.kill(id);
        self.checked();
    }

    /// A disconnected instance whose exit did not come within `EXIT_GRACE`: fail and kill it.
    fn give_up_on_disconnected(&mut self, id: InstanceId) {
        let Some(f) = self.instances.get(&id).and_then(|i| i.in_flight.as_ref()) else {
            return self.kill(id);
        };
        let message = format!(
            "RequestId: {} Error: the runtime's WebSocket connection closed during the invocation",
            f.id
        );
        self.finish(id, runtime_error_outcome("Runtime.ExitError", &message));
        self.kill(id);
    }

    /// The runtime is ready for work: dispatch a pending invocation or join the idle list.
    fn park(&mut self, id: InstanceId, waiter: Waiter) -> Result<(), RuntimeRefusal> {
        let inst = self
            .instances
            .get_mut(&id)
            .filter(|i| i.life != Life::Killed)
            .ok_or(RuntimeRefusal::UnknownInstance)?;
        if inst.state == State::Starting {
            let init = inst.started_at.elapsed();
            inst.init_duration = Some(init);
            self.shared
                .metrics
                .init_duration
                .observe_us(init.as_micros() as u64);
            // What the next start of the function will cost, for `--scale-out adaptive` and the
            // return grace. Not a template's first fork: its ~200 ms of import and init made
            // every busy instance look worth waiting for through a Python function's warm-up,
            // and the first 6 ms fork start inside the measured window then set off a burst of
            // starts (issue 11). Until a start that repeats has been seen, the cost is unknown
            // and starts are eager.
            if !inst.one_off_init {
                let name = inst.function.pool_key.clone();
                let sample = init.as_nanos() as u64;
                let counters = &inst.function.counters;
                let average = if inst.from_ready {
                    &counters.ready_init_ns
                } else {
                    &counters.init_ns
                };
                let _ = average.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |was| {
                    Some(moving_average(was, sample))
                });
                self.pools.entry(name).or_default().init_estimate = init;
            }
            // Its init is over: the next start may take its place in the start gate.
            self.shared.send_control(ControlMsg::InstanceReady { id });
        }
        if inst.in_flight.is_some() {
            // Asking for more work without answering: Lambda treats the invocation as failed.
            self.finish(
                id,
                runtime_error_outcome(
                    "Runtime.NoResponse",
                    "The runtime asked for the next invocation without answering this one",
                ),
            );
        }
        let name = self.instances[&id].function.pool_key.clone();
        if self.instances[&id].life == Life::Retiring {
            self.kill(id);
            return Err(RuntimeRefusal::UnknownInstance);
        }
        // An instance of an older generation (the update's Retire has not reached this core yet)
        // must not run an invocation of a newer one: like `take_idle`, kill it; the pending
        // invocation gets an instance of its own generation from `rebalance`.
        let generation = self.instances[&id].function.generation;
        let newer_waiting = self.pools.get(&name).and_then(|p| p.pending.front());
        if newer_waiting.is_some_and(|inv| inv.function.generation > generation) {
            self.kill(id);
            return Err(RuntimeRefusal::UnknownInstance);
        }
        let inst = self.instances.get_mut(&id).expect("checked above");
        if inst.state.is_idle() {
            // Already parked and listed idle. A second request for work is refused while the
            // first one's runtime is still there; one whose connection has gone is replaced.
            if inst.waiter.as_ref().is_some_and(|w| !w.is_closed()) {
                return Err(RuntimeRefusal::AlreadyWaiting);
            }
            inst.waiter = Some(waiter);
            return Ok(());
        }
        inst.waiter = Some(waiter);
        inst.idle_since = Instant::now();
        self.set_state(id, State::idle());
        let pool = self.pools.entry(name.clone()).or_default();
        if let Some(inv) = pool.pending.pop_front() {
            let drained = pool.pending.is_empty();
            self.sync_spare(&name);
            if drained {
                // Nothing waits here any more: another core's instance that parks must not
                // send a wake-up for nothing.
                self.hint_waiting(&name, false);
            }
            self.dispatch(id, inv);
        } else {
            pool.idle.push(id);
            if pool.idle.len() == 1 {
                self.mark_idle_core(&name, true);
            }
            self.wake_a_waiting_core(&name);
        }
        Ok(())
    }

    /// An instance of `name` parked here with nothing to do: if another core holds invocations
    /// that wait for an instance of another core, tell one such core now (it hands one over)
    /// rather than leave them until its next tick.
    fn wake_a_waiting_core(&self, name: &str) {
        let Some(f) = self.shared.function(name) else {
            return;
        };
        let others = f.counters.waiting_cores.load(Ordering::Relaxed) & !(1u64 << self.core);
        if others != 0 {
            let target = others.trailing_zeros() as usize;
            self.shared.send_core(
                target,
                CoreMsg::IdleInstance {
                    pool: name.to_string(),
                    core: self.core,
                },
            );
        }
    }

    /// Core `core` has an idle instance of `pool` (`CoreMsg::IdleInstance`): hand it the oldest
    /// pending invocation, if this core still has one.
    pub fn idle_instance_on(&mut self, pool: &str, core: usize) {
        if core == self.core {
            return;
        }
        // Even an invocation a returning instance of this core would take goes: the idle
        // instance takes it now. With nothing pending any more (this core's own instances took
        // it), `rebalance` stops the advertising, or every instance of another core that parks
        // idle would send a wake-up for nothing.
        let oldest = self.pools.get_mut(pool).and_then(|p| p.pending.pop_front());
        if let Some(inv) = oldest {
            self.shared.send_core(core, CoreMsg::Dispatch(inv));
        }
        if self.pools.contains_key(pool) {
            self.rebalance(pool);
        } else {
            self.hint_waiting(pool, false);
        }
        self.checked();
    }

    /// The runtime's answer for `request_id`.
    pub fn respond(
        &mut self,
        id: InstanceId,
        request_id: &str,
        outcome: InvokeOutcome,
    ) -> Result<(), RuntimeRefusal> {
        let answer = self.take_answer(id, request_id, outcome);
        self.checked();
        answer?.send();
        Ok(())
    }

    /// The runtime of `id` starts streaming its answer to `request_id`: the stream's sender when
    /// the caller takes it as a stream, `None` when it wants the response whole (the streamed
    /// bytes are then collected and answered with `respond`). Nothing changes here: the
    /// invocation stays in flight, under its deadline, until `respond` ends it.
    pub fn stream_to(
        &self,
        id: InstanceId,
        request_id: &str,
    ) -> Result<Option<StreamSender>, RuntimeRefusal> {
        let inst = self
            .instances
            .get(&id)
            .ok_or(RuntimeRefusal::UnknownInstance)?;
        match &inst.in_flight {
            Some(f) if f.id.as_str() == request_id => Ok(f.stream.clone()),
            _ => Err(RuntimeRefusal::NotYourRequest),
        }
    }

    /// A WebSocket runtime's answer: the instance is parked again *before* the caller gets the
    /// result, so a caller that invokes again at once finds it idle instead of starting another.
    /// `Err(UnknownInstance)` after delivering means the instance was retired.
    pub fn respond_ws(
        &mut self,
        id: InstanceId,
        request_id: &str,
        outcome: InvokeOutcome,
        tx: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    ) -> Result<(), RuntimeRefusal> {
        let delivery = self.take_answer(id, request_id, outcome)?;
        let parked = self.ready_ws(id, tx);
        self.checked();
        delivery.send();
        parked
    }

    /// A WebSocket runtime's answer that is also its last (`"init_error": true`: its init failed
    /// and it exits next): the invocation gets it, and the instance is ended at once instead of
    /// parked for the next invocation, as `/runtime/init/error` ends a local one.
    pub fn respond_ws_and_end(
        &mut self,
        id: InstanceId,
        request_id: &str,
        outcome: InvokeOutcome,
    ) -> Result<(), RuntimeRefusal> {
        let delivery = self.take_answer(id, request_id, outcome)?;
        self.kill(id);
        self.checked();
        delivery.send();
        Ok(())
    }

    fn take_answer(
        &mut self,
        id: InstanceId,
        request_id: &str,
        outcome: InvokeOutcome,
    ) -> Result<Delivery, RuntimeRefusal> {
        let inst = self
            .instances
            .get(&id)
            .ok_or(RuntimeRefusal::UnknownInstance)?;
        match &inst.in_flight {
            Some(f) if f.id.as_str() == request_id => {}
            _ => return Err(RuntimeRefusal::NotYourRequest),
        }
        let delivery = self
            .complete(id, outcome)
            .ok_or(RuntimeRefusal::NotYourRequest)?;
        if self
            .instances
            .get(&id)
            .is_some_and(|i| i.life == Life::Retiring)
        {
            self.kill(id);
        }
        Ok(delivery)
    }

    /// `/runtime/init/error`: remember the error; the instance is killed and its exit fails
    /// the pending invocation that waited for it.
    pub fn init_error(&mut self, id: InstanceId, body: Bytes) -> Result<(), RuntimeRefusal> {
        let inst = self
            .instances
            .get_mut(&id)
            .ok_or(RuntimeRefusal::UnknownInstance)?;
        inst.init_error = Some(body);
        self.kill(id);
        self.checked();
        Ok(())
    }

    /// Ends the in-flight invocation of `id` and hands the result to its caller.
    fn finish(&mut self, id: InstanceId, outcome: InvokeOutcome) {
        if let Some(delivery) = self.complete(id, outcome) {
            delivery.send();
        }
    }

    /// Ends the in-flight invocation of `id` and returns its result, still to be delivered.
    fn complete(&mut self, id: InstanceId, outcome: InvokeOutcome) -> Option<Delivery> {
        let inst = self.instances.get_mut(&id)?;
        let f = inst.in_flight.take()?;
        let now = Instant::now();
        let log_tail = if f.want_tail {
            inst.log.as_ref().map(|l| {
                l.drain();
                report_tail(
                    inst,
                    &f,
                    &l.ring.borrow().since(f.log_start, LOG_TAIL_BYTES),
                    now,
                )
            })
        } else {
            None
        };
        if let Some(l) = &inst.log {
            let report = Report {
                duration_ms: now.duration_since(f.dispatched_at).as_secs_f64() * 1000.0,
                memory_mb: inst.function.config.memory_mb,
                init_ms: inst
                    .init_duration
                    .filter(|_| f.cold)
                    .map(|d| d.as_secs_f64() * 1000.0),
                success: matches!(outcome, InvokeOutcome::Success { .. }),
            };
            l.platform_end(&f.id, report);
        }
        let m = &self.shared.metrics;
        m.invocations.fetch_add(1, Ordering::Relaxed);
        m.duration
            .observe_us(now.duration_since(f.accepted_at).as_micros() as u64);
        match &outcome {
            InvokeOutcome::Success { .. } => {}
            InvokeOutcome::FunctionError { .. } => {
                m.function_errors.fetch_add(1, Ordering::Relaxed);
            }
            InvokeOutcome::Service(_) => {
                m.service_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
        let delivery = Delivery {
            reply: f.reply,
            result: InvokeResult {
                outcome,
                log_tail,
                cold_start: f.cold,
            },
        };
        let since = Instant::now();
        let served = since.saturating_duration_since(f.dispatched_at).as_nanos() as u64;
        let service = &self.instances[&id].function.counters.service_ns;
        // Cores race benignly on it.
        let was = service.load(Ordering::Relaxed);
        service.store(moving_average(was, served), Ordering::Relaxed);
        self.set_state(
            id,
            State::Returning {
                since,
                awaited: true,
            },
        );
        Some(delivery)
    }

    /// Asks the control plane to end the instance; it stays known until its exit arrives.
    fn kill(&mut self, id: InstanceId) {
        let name = self.update(id, |inst| {
            if inst.life == Life::Killed {
                return None;
            }
            inst.life = Life::Killed;
            inst.waiter = None;
            if inst.state.is_paused() {
                inst.state = State::idle();
            }
            Some(inst.function.pool_key.clone())
        });
        let Some(Some(name)) = name else {
            return;
        };
        if let Some(pool) = self.pools.get_mut(&name) {
            if let Some(pos) = pool.idle.iter().position(|&i| i == id) {
                pool.idle.swap_remove(pos);
                if pool.idle.is_empty() {
                    self.mark_idle_core(&name, false);
                }
            }
        }
        self.shared.send_control(ControlMsg::KillInstance { id });
        self.rebalance(&name);
    }

    /// Where instance `id`'s output is kept, once it started (for `log` messages of its
    /// WebSocket session).
    pub fn log_source(&self, id: InstanceId) -> Option<Rc<LogSource>> {
        self.instances.get(&id).and_then(|inst| inst.log.clone())
    }

    /// The control plane started the instance: remember how to reach its output and listener.
    pub fn started(
        &mut self,
        id: InstanceId,
        log: Rc<LogSource>,
        listener_fds: Vec<RawFd>,
        start: StartFacts,
    ) -> bool {
        if start.one_off_init {
            self.init_is_one_off(id);
        }
        if let Some(ready) = start.ready {
            self.started_ready(id, ready);
        }
        match self.instances.get_mut(&id) {
            Some(inst) => {
                inst.log = Some(log);
                inst.listener_fds = listener_fds;
                self.running(id, Instant::now());
                true
            }
            None => false,
        }
    }

    /// The executor keeps ready instances for starts like this one (`ReadyStart`): from now on
    /// the pool's start cost is a ready start's while one waits (`expected_init_ns`), and this
    /// start's init counts as a ready start's when it took one.
    pub fn started_ready(&mut self, id: InstanceId, ready: ReadyStart) {
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.from_ready = ready.took_one;
            inst.function.counters.ready_slots.store(Some(ready.slots));
        }
    }

    /// The executor says the instance's start included work the function's next start will not
    /// repeat (`executor::Instance::one_off_init`).
    pub fn init_is_one_off(&mut self, id: InstanceId) {
        if let Some(inst) = self.instances.get_mut(&id) {
            inst.one_off_init = true;
        }
    }

    /// The executor reports the instance's process or container running at `at`: its init
    /// limit counts from here (see `Instance::init_since`).
    pub fn running(&mut self, id: InstanceId, at: Instant) {
        if let Some(inst) = self.instances.get_mut(&id) {
            if inst.state == State::Starting {
                let name = inst.function.pool_key.clone();
                self.update(id, |inst| {
                    inst.init_since = at;
                    inst.running = true;
                });
                let pool = self.pools.entry(name).or_default();
                pool.last_running = Some(pool.last_running.map_or(at, |t| t.max(at)));
            }
        }
    }

    /// The instance could not be started: the oldest pending invocation gets the error.
    pub fn start_failed(&mut self, id: InstanceId, error: ApiError) {
        let Some(inst) = self.instances.get(&id) else {
            return;
        };
        let counted = inst.life == Life::Serving;
        let name = inst.function.pool_key.clone();
        self.remove(id);
        if counted {
            self.fail_pending(&name, 1, |_| InvokeOutcome::Service(error.clone()));
        }
        self.rebalance(&name);
        self.forget_if_gone(&name);
        self.checked();
    }

    /// The instance's process ended.
    pub fn exited(&mut self, id: InstanceId, exit: ExitInfo) {
        let Some(inst) = self.instances.get(&id) else {
            return;
        };
        let name = inst.function.pool_key.clone();
        if inst.life != Life::Killed {
            self.shared
                .metrics
                .instance_crashes
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(f) = &inst.in_flight {
            let message = format!("RequestId: {} Error: {}", f.id, exit.describe());
            self.finish(id, runtime_error_outcome("Runtime.ExitError", &message));
        }
        let inst = &self.instances[&id];
        // An instance that never served ended during init: that is the init failure of the
        // oldest pending invocation, unless we retired it (update, delete), which fails nothing.
        let failed_init =
            inst.served == 0 && (inst.init_error.is_some() || inst.life == Life::Serving);
        let init_error = inst.init_error.clone();
        self.remove(id);
        if failed_init {
            self.fail_pending(&name, 1, |inv| match &init_error {
                Some(body) => InvokeOutcome::FunctionError {
                    function_error: "Unhandled",
                    body: body.clone(),
                },
                None => {
                    let msg = format!("RequestId: {} Error: {}", inv.id, exit.describe());
                    runtime_error_outcome("Runtime.ExitError", &msg)
                }
            });
        }
        self.rebalance(&name);
        self.forget_if_gone(&name);
        self.checked();
    }

    /// Drops pool `name` once its function is gone (deleted) and nothing of it is left on this
    /// core: no instance, pending invocation, supply or hint. Without this every function ever
    /// invoked here would keep its pool entry for the life of the server, which grows without
    /// bound under function churn (create, invoke, delete). What an empty pool still holds (the
    /// init estimate, when an instance last ran) only matters to instances of its function, and
    /// there will be none; a function created again under the same name starts a fresh pool.
    /// Called at the end of the entry points that end instances or retire a pool, after
    /// `rebalance` (which could otherwise create the entry again).
    fn forget_if_gone(&mut self, name: &str) {
        let empty = self.pools.get(name).is_some_and(|p| {
            p.pending.is_empty()
                && p.idle.is_empty()
                && p.supply == 0
                && p.capped == 0
                && !p.spare_hinted
        });
        if !empty || self.shared.function(name).is_some() {
            return;
        }
        // Killed instances stay until their exit arrives and still name their pool.
        if self.instances.values().any(|i| i.function.pool_key == name) {
            return;
        }
        self.pools.remove(name);
    }

    fn remove(&mut self, id: InstanceId) {
        let Some(inst) = self.instances.remove(&id) else {
            return;
        };
        let name = &inst.function.pool_key;
        if inst.holds_slot() {
            inst.function
                .counters
                .instances
                .fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(pool) = self.pools.get_mut(name) {
            if inst.is_supply() {
                pool.supply -= 1;
                self.sync_spare(name);
            }
            let pool = self.pools.get_mut(name).expect("looked up above");
            if let Some(pos) = pool.idle.iter().position(|&i| i == id) {
                pool.idle.swap_remove(pos);
                if pool.idle.is_empty() {
                    self.mark_idle_core(name, false);
                }
            }
        }
        self.gauge(inst.state, -1);
        for &fd in &inst.listener_fds {
            // SAFETY: the fd belongs to this instance's listener, still open (the accept loop owns
            // it); shutdown wakes its pending accept so the loop ends and closes it.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    /// Fails up to `n` of the oldest pending invocations of `name`.
    fn fail_pending(
        &mut self,
        name: &str,
        n: usize,
        outcome: impl Fn(&Invocation) -> InvokeOutcome,
    ) {
        let Some(pool) = self.pools.get_mut(name) else {
            return;
        };
        for _ in 0..n {
            let Some(inv) = pool.pending.pop_front() else {
                break;
            };
            let result = InvokeResult {
                outcome: outcome(&inv),
                log_tail: None,
                cold_start: true,
            };
            let m = &self.shared.metrics;
            m.invocations.fetch_add(1, Ordering::Relaxed);
            match result.outcome {
                InvokeOutcome::Service(_) => m.service_errors.fetch_add(1, Ordering::Relaxed),
                _ => m.function_errors.fetch_add(1, Ordering::Relaxed),
            };
            let _ = inv.reply.send(result);
        }
        self.sync_spare(name);
    }

    /// The function changed or went away: its instances take no new work.
    pub fn retire(&mut self, name: &str) {
        let ids: Vec<InstanceId> = self
            .instances
            .values()
            .filter(|i| i.function.pool_key == name && i.life == Life::Serving)
            .map(|i| i.id)
            .collect();
        for id in ids {
            let state = self.instances[&id].state;
            match state {
                State::Busy => {
                    self.update(id, |i| i.life = Life::Retiring);
                }
                State::Starting | State::Idle { .. } | State::Returning { .. } => self.kill(id),
            }
        }
        self.rebalance(name);
        self.forget_if_gone(name);
        self.checked();
    }

    /// Deadlines, init limits, runtimes that never come back after answering (`RETURN_TIMEOUT`),
    /// idle pause/removal, stale pending invocations. Called every tick.
    pub fn tick(&mut self, now: Instant) {
        let cfg = &self.shared.config;
        let init_limit = Duration::from_secs(cfg.init_timeout_s);
        let pause_after = Duration::from_secs(cfg.idle_pause_s);
        let remove_after = Duration::from_secs(cfg.idle_remove_s);
        let mut timed_out = Vec::new();
        let mut lost = Vec::new();
        let mut slow_return = Vec::new();
        let mut to_kill = Vec::new();
        let mut to_pause = Vec::new();
        let mut abandoned = Vec::new();
        for inst in self.instances.values() {
            if inst.life == Life::Killed {
                continue;
            }
            if inst
                .disconnected_at
                .is_some_and(|t| now.duration_since(t) >= EXIT_GRACE)
            {
                lost.push(inst.id);
                continue;
            }
            match inst.state {
                State::Busy if inst.in_flight.as_ref().is_some_and(|f| now >= f.deadline) => {
                    timed_out.push(inst.id);
                }
                // The caller of a streamed invocation went away (it dropped the stream's
                // receiver): nobody will read the rest.
                State::Busy
                    if inst
                        .in_flight
                        .as_ref()
                        .and_then(|f| f.stream.as_ref())
                        .is_some_and(|s| s.is_closed()) =>
                {
                    abandoned.push(inst.id);
                }
                State::Returning { since, .. } if now.duration_since(since) >= RETURN_TIMEOUT => {
                    to_kill.push(inst.id);
                }
                State::Returning { since, .. }
                    if inst.is_supply()
                        && now.duration_since(since)
                            >= self
                                .pools
                                .get(&inst.function.pool_key)
                                .map_or(RETURN_GRACE, Pool::return_grace) =>
                {
                    slow_return.push(inst.id);
                }
                State::Starting
                    if (inst.running && now.duration_since(inst.init_since) >= init_limit)
                        || now.duration_since(inst.started_at) >= START_WAIT_MAX =>
                {
                    to_kill.push(inst.id);
                }
                State::Idle { paused } => {
                    let idle = now.duration_since(inst.idle_since);
                    if idle >= remove_after {
                        to_kill.push(inst.id);
                    } else if idle >= pause_after && !paused {
                        to_pause.push(inst.id);
                    }
                }
                _ => {}
            }
        }
        for id in timed_out {
            self.time_out(id);
        }
        for id in lost {
            self.give_up_on_disconnected(id);
        }
        for id in abandoned {
            // The handler cannot be told to stop, and may stream (or sleep) until its deadline:
            // the instance is recycled so its concurrency is free at once (docs/streaming.md).
            self.finish(
                id,
                service_outcome("the caller disconnected from the stream"),
            );
            self.kill(id);
        }
        for id in slow_return {
            // Not back at `/next` in time: pending invocations stop counting on it.
            self.update(id, |inst| {
                if let State::Returning { awaited, .. } = &mut inst.state {
                    *awaited = false;
                }
            });
            if let Some(name) = self.function_name(id) {
                self.rebalance(&name);
            }
        }
        for id in to_kill {
            if let Some(inst) = self.instances.get_mut(&id) {
                if inst.state == State::Starting && !inst.running {
                    let secs = START_WAIT_MAX.as_secs_f64();
                    tracing::warn!(
                        instance = %id,
                        function = %inst.function.pool_key,
                        "the executor did not report the instance running within {secs:.0} s"
                    );
                    inst.init_error = Some(function_error_body(
                        "Runtime.InitTimeout",
                        &format!("The instance was not started within {secs:.0} seconds"),
                        None,
                    ));
                } else if inst.state == State::Starting && inst.init_error.is_none() {
                    let secs = init_limit.as_secs_f64();
                    tracing::warn!(
                        instance = %id,
                        function = %inst.function.pool_key,
                        "init timed out after {secs:.2} s ({:.2} s since the start request)",
                        now.duration_since(inst.started_at).as_secs_f64()
                    );
                    inst.init_error = Some(function_error_body(
                        "Runtime.InitTimeout",
                        &format!("Init timed out after {secs:.2} seconds"),
                        None,
                    ));
                }
            }
            self.kill(id);
        }
        for id in to_pause {
            if self
                .update(id, |inst| inst.state = State::Idle { paused: true })
                .is_some()
            {
                self.shared.send_control(ControlMsg::PauseInstance { id });
            }
        }
        self.expire_pending(now, init_limit + PENDING_WAIT_SLACK);
        self.offload_pending();
        // A shortfall served away (instances took what waited) ends here: `rebalance` sees only
        // the shortfalls that remain, and one left set would let the next shortfall, however
        // brief, start an instance at once as if it had lasted all along.
        for pool in self.pools.values_mut() {
            if pool.pending.len() <= pool.supply {
                pool.shortfall_since = None;
            }
        }
        // Pending invocations left waiting for another core's instance: the cap may allow a
        // start by now (an instance went away, or demand grew), and the hint must stay current.
        let capped: Vec<String> = self
            .pools
            .iter()
            .filter(|(_, p)| p.capped > 0 || p.pending.len() > p.supply)
            .map(|(n, _)| n.clone())
            .collect();
        for name in capped {
            self.rebalance(&name);
        }
        self.checked();
    }

    /// Pending invocations wait for a cold start on this core while another core may have an
    /// idle instance of the function by now: hand one over to each such core.
    fn offload_pending(&mut self) {
        let names: Vec<String> = self
            .pools
            .iter()
            .filter(|(_, p)| !p.pending.is_empty())
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            let Some(f) = self.shared.function(&name) else {
                continue;
            };
            let mut mask = f.counters.idle_cores.load(Ordering::Relaxed) & !(1u64 << self.core);
            while mask != 0 {
                let target = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                let pool = self.pools.get_mut(&name).expect("listed above");
                let Some(inv) = pool.pending.pop_front() else {
                    break;
                };
                self.shared.send_core(target, CoreMsg::Dispatch(inv));
            }
            self.sync_spare(&name);
        }
    }

    fn time_out(&mut self, id: InstanceId) {
        let inst = &self.instances[&id];
        let secs = inst.function.config.timeout_s as f64;
        let request = inst.in_flight.as_ref().map(|f| f.id.clone());
        let Some(request) = request else { return };
        self.shared.metrics.timeouts.fetch_add(1, Ordering::Relaxed);
        let message = format!("RequestId: {request} Error: Task timed out after {secs:.2} seconds");
        self.finish(id, runtime_error_outcome("Sandbox.Timedout", &message));
        self.kill(id);
    }

    /// Safety net: a pending invocation never waits longer than an init can take, counted from
    /// when it was accepted or, if later, when the executor last reported an instance of its
    /// pool running (a slow container start under load is not the invocation's init).
    fn expire_pending(&mut self, now: Instant, limit: Duration) {
        let stale_in = |p: &Pool| {
            p.pending
                .iter()
                .take_while(|i| {
                    let since = p
                        .last_running
                        .map_or(i.accepted_at, |r| r.max(i.accepted_at));
                    now.saturating_duration_since(since) > limit
                })
                .count()
        };
        let stale: Vec<(String, usize)> = self
            .pools
            .iter()
            .map(|(n, p)| (n, stale_in(p)))
            .filter(|(_, count)| *count > 0)
            .map(|(n, count)| (n.clone(), count))
            .collect();
        if stale.is_empty() {
            return;
        }
        // A pool with an instance still waiting in the start gate (not reported running) has
        // not had its chance yet: its invocations wait for it, within `START_WAIT_MAX`.
        let queued: std::collections::HashSet<&str> = self
            .instances
            .values()
            .filter(|i| i.is_queued())
            .map(|i| i.function.pool_key.as_str())
            .collect();
        let stale: Vec<(String, usize)> = stale
            .into_iter()
            .filter(|(name, _)| !queued.contains(name.as_str()))
            .collect();
        for (name, count) in stale {
            self.fail_pending(&name, count, |_| {
                InvokeOutcome::Service(ApiError::new(
                    ErrorKind::ResourceNotReady,
                    "No instance of the function became ready in time",
                ))
            });
        }
    }

    pub fn function_name(&self, id: InstanceId) -> Option<String> {
        self.instances.get(&id).map(|i| i.function.pool_key.clone())
    }

    /// The function an instance runs, while it is not killed.
    pub fn function_of(&self, id: InstanceId) -> Option<Arc<Function>> {
        self.instances
            .get(&id)
            .filter(|i| i.life != Life::Killed)
            .map(|i| i.function.clone())
    }

    /// Instances homed here (for shutdown and tests).
    pub fn instance_count(&self) -> usize {
        self.instances.len()
    }

    /// Panics if the scheduler's invariants (module doc) do not hold. Debug builds only: it walks
    /// every instance and pool, so release builds never pay for it.
    #[cfg(any(test, debug_assertions))]
    pub fn check_invariants(&self) {
        let mut supply: HashMap<&str, usize> = HashMap::new();
        for (id, inst) in &self.instances {
            let name = inst.function.pool_key.as_str();
            assert_eq!(*id, inst.id);
            assert_eq!(
                inst.state == State::Busy,
                inst.in_flight.is_some(),
                "{id}: Busy exactly while an invocation is in flight"
            );
            if inst.is_supply() {
                *supply.entry(name).or_default() += 1;
            }
            match inst.life {
                Life::Serving => {}
                // Retiring lasts while its invocation runs (and after `abort_all` at shutdown).
                Life::Retiring => assert!(
                    matches!(inst.state, State::Busy | State::Returning { .. }),
                    "{id}: only a busy instance retires; any other is killed at once"
                ),
                Life::Killed => assert!(
                    inst.waiter.is_none() && !inst.state.is_paused(),
                    "{id}: a killed instance holds no waiter and is not counted paused"
                ),
            }
            let listed = self.pools.get(name).is_some_and(|p| p.idle.contains(id));
            let parked = inst.state.is_idle() && inst.life == Life::Serving;
            assert_eq!(listed, parked, "{id}: listed idle exactly while parked");
            if parked {
                assert!(inst.waiter.is_some(), "{id}: an idle instance has a waiter");
            }
        }
        for (name, pool) in &self.pools {
            let counted = supply.get(name.as_str()).copied().unwrap_or(0);
            assert_eq!(pool.supply, counted, "{name}: supply counts its instances");
            assert!(
                pool.pending.len() <= pool.supply + pool.capped + pool.awaiting_busy,
                "{name}: every pending invocation has an instance behind it (here, or on \
                 another core when the cap held a start back)"
            );
            assert_eq!(
                pool.spare_hinted,
                pool.supply > pool.pending.len(),
                "{name}: the spare-instance hint follows supply and pending"
            );
            let mut idle = pool.idle.clone();
            idle.sort_unstable();
            idle.dedup();
            assert_eq!(idle.len(), pool.idle.len(), "{name}: listed idle once");
        }
    }

    /// Checks the invariants at the end of a public entry point (debug builds only).
    fn checked(&self) {
        #[cfg(debug_assertions)]
        self.check_invariants();
    }

    /// Fails everything still queued or running (shutdown after the grace period).
    pub fn abort_all(&mut self) {
        let ids: Vec<InstanceId> = self.instances.keys().copied().collect();
        for id in ids {
            self.finish(id, service_outcome("the server is shutting down"));
        }
        let names: Vec<String> = self.pools.keys().cloned().collect();
        for name in names {
            self.fail_pending(&name, usize::MAX, |_| {
                service_outcome("the server is shutting down")
            });
        }
        self.checked();
    }
}

#[cfg(test)]
mod tests;

/// How many pending invocations one instance may be left to serve in turn, given the
/// function's average invocation (`service_ns`) and its last init (`init_ns`): as many as it
/// serves while a cold start would still be initialising, and 0 (start instances, as AWS does)
/// when that is below `BUSY_CAPACITY_MIN` or either duration is still unknown.
fn busy_capacity(service_ns: u64, init_ns: u64) -> usize {
    if service_ns == 0 || init_ns == 0 {
        return 0;
    }
    let n = (init_ns / service_ns).min(BUSY_CAPACITY_MAX as u64) as usize;
    if n < BUSY_CAPACITY_MIN {
        0
    } else {
        n.min(BUSY_CAPACITY_MAX)
    }
}

/// What the pool's starts take to init in general, in nanoseconds (0: unknown): an ordinary
/// start's (`init_ns`), or a ready one's (`ready_init_ns`) while no ordinary start has been
/// seen.
fn typical_init_ns(counters: &FunctionCounters) -> u64 {
    match counters.init_ns.load(Ordering::Relaxed) {
        0 => counters.ready_init_ns.load(Ordering::Relaxed),
        ordinary => ordinary,
    }
}

/// What the pool's next start is expected to take to init, in nanoseconds (0: unknown): a
/// start from a ready instance (`ready_init_ns`) while its executor holds one for the pool
/// (`ready_slots`), else an ordinary one (`init_ns`); the one that is known when the other is
/// not. A Docker pool's slot serves one start of its key at a time and is refilled half a second
/// later, so a burst's first start is a ready one and the rest ordinary, and a scale-out start
/// after a pause finds its slot again. Taking the average of both instead made a pool of
/// instances that started from slots in 5–8 ms wait about 120–190 ms for busy instances before
/// each scale-out start (Node over HTTP, `loadgen cold` later instances, before this), the
/// ordinary starts' 200 ms having raised the average.
fn expected_init_ns(counters: &FunctionCounters) -> u64 {
    let ordinary = counters.init_ns.load(Ordering::Relaxed);
    let ready = counters.ready_init_ns.load(Ordering::Relaxed);
    if ready == 0 {
        return ordinary;
    }
    let one_waits = counters
        .ready_slots
        .load()
        .as_ref()
        .is_some_and(|slots| slots.load(Ordering::Relaxed) > 0);
    if one_waits || ordinary == 0 {
        ready
    } else {
        ordinary
    }
}

/// Whether a pool of `instances` instances (on all cores) is what keeps the host's CPUs busy,
/// given `runnable_milli` runnable tasks on the host (thousandths; `None`: unknown, taken as
/// no): no more runnable tasks than the pool's instances, the server's `cores` threads that
/// carry its invocations, and one more (a load generator's thread, the server's other threads)
/// could be. Otherwise the saturation is at least partly another load's (another function,
/// another program), and holding this pool back would hand the CPUs to it: with per-task (and
/// Docker's per-container) CPU shares, a pool's share of a saturated host grows with its
/// instances, as on AWS. The other load's runnable tasks count against the pool's, so a
/// co-tenant with a few busy threads more than the pool's idle instances already ends the hold,
/// and the pool grows as it would without it (`held_for_cpu`).
///
/// `held_for_cpu` passes the lowest figure of the last second (`HostCpu::runnable_low_milli`):
/// another load is one that lasts. Without the extra task and the lowest figure, a closed loop
/// of 100 callers on two CPUs (two instances, two cores, the load generator) sat at 4.0–4.2
/// runnable tasks against 4, and one window of a stall read 7.5: each ended the hold and
/// started instances inside a measured window (1, and 9 at once; issue 11, traced).
fn saturated_by_pool(runnable_milli: Option<u32>, instances: usize, cores: usize) -> bool {
    runnable_milli.is_some_and(|r| r as u64 <= 1000 * (instances + cores + 1) as u64)
}

/// How many instances `--scale-out adaptive` starts for `missing` pending invocations when this
/// core's soon-serving instances cover `cover` of them and one instance serves `per_instance`
/// in the time a start takes. With nothing serving, one per `per_instance` begun (someone must
/// serve them). Beside serving instances, none unless the shortfall is a real one, then one per
/// `per_instance` rounded to the nearest:
/// - the shortfall must be at least `1 / SHORTFALL_SHARE_MIN` of what waits. Under a closed loop
///   that saturates the CPUs the pending count and the cover both sit near the callers' count
///   and flicker by a few per cent of it, while an instance's share shrinks as instances are
///   added (each one lengthens every invocation: the CPUs are shared), so a rule in units of
///   shares alone kept starting instances inside the measured window: 1–3 per window with
///   40 waiting, a cover of 35 and shares of 5–7 (issue 11;
///   `adaptive_a_shortfall_small_next_to_what_waits_starts_nothing`). The waiting then get at
///   most 4/3 of the wait the rule aims for;
/// - a new instance pays off only if it takes at least half an instance's share, otherwise the
///   pool would grow by one each time the shortfall flickers above zero
///   (`adaptive_a_small_shortfall_beside_serving_instances_starts_nothing`).
fn adaptive_starts(missing: usize, cover: usize, per_instance: usize) -> usize {
    let excess = missing.saturating_sub(cover);
    if cover == 0 {
        excess.div_ceil(per_instance)
    } else if excess * SHORTFALL_SHARE_MIN < missing {
        0
    } else {
        (excess + per_instance / 2) / per_instance
    }
}

/// A pool's moving average (about the last eight samples) after a sample of `sample` ns, from
/// `was` (0: none yet): the dispatch-to-answer time of its invocations (`service_ns`) and the
/// init of its starts (`init_ns`). One sample moves it by at most `SERVICE_SAMPLE_CAP` times the
/// average. A single stall (a garbage collection, a runtime descheduled on a busy machine)
/// otherwise multiplied a sub-millisecond service average tenfold, and `--scale-out adaptive`
/// started a burst of instances for a load that had not changed; likewise one fork start that
/// waited 120 ms for its cgroup move (8 ms usually) made every busy instance look worth waiting
/// for through a warm-up, and the next ordinary start let the held-back starts go inside the
/// measured window. A real change in either still gets through within a few dozen samples, and
/// a busy instance that runs longer than a start stops counting as soon free anyway
/// (`soon_serving`).
fn moving_average(was: u64, sample: u64) -> u64 {
    if was == 0 {
        return sample;
    }
    let sample = sample.min(was.saturating_mul(SERVICE_SAMPLE_CAP));
    (was * 7 + sample) / 8
}

/// Takes one slot in the pool's cross-core instance count if it is below `demand` (the
/// function's admitted invocations). Atomic, so two cores racing for the last slot start one
/// instance between them, not two.
fn reserve_slot(counters: &FunctionCounters, demand: u32) -> bool {
    counters
        .instances
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < demand).then_some(n + 1)
        })
        .is_ok()
}

/// LAMBDA_USE_WEBSOCKET as the instance will see it, for runtimes that speak WebSocket.
fn expects_websocket(f: &Function, server_default: bool) -> bool {
    let speaks_ws =
        f.config.runtime.starts_with("nodejs") || f.config.runtime.starts_with("python");
    let setting = f
        .config
        .environment
        .get("LAMBDA_USE_WEBSOCKET")
        .map(|v| v != "false");
    speaks_ws && setting.unwrap_or(server_default)
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn service_outcome(why: &str) -> InvokeOutcome {
    InvokeOutcome::Service(ApiError::service(format!("Invocation failed: {why}")))
}

/// A platform-made function error, shaped as Lambda's (`{"errorType","errorMessage"}`).
pub fn runtime_error_outcome(error_type: &str, message: &str) -> InvokeOutcome {
    InvokeOutcome::function_error(error_type, message)
}

/// The invocation's log as Lambda tails it: START, the function's output, END and REPORT.
fn report_tail(inst: &Instance, f: &InFlight, output: &[u8], now: Instant) -> Bytes {
    let ms = now.duration_since(f.dispatched_at).as_secs_f64() * 1000.0;
    let mut s = format!(
        "START RequestId: {} Version: {}\n",
        f.id, inst.function.version
    )
    .into_bytes();
    s.extend_from_slice(output);
    if !output.is_empty() && !output.ends_with(b"\n") {
        s.push(b'\n');
    }
    let memory = inst.function.config.memory_mb;
    let mut report = format!(
        "END RequestId: {id}\nREPORT RequestId: {id}\tDuration: {ms:.2} ms\tBilled Duration: {billed} ms\tMemory Size: {memory} MB",
        id = f.id,
        billed = ms.ceil().max(1.0) as u64,
    );
    if let (true, Some(init)) = (f.cold, inst.init_duration) {
        report.push_str(&format!(
            "\tInit Duration: {:.2} ms",
            init.as_secs_f64() * 1000.0
        ));
    }
    report.push('\n');
    s.extend_from_slice(report.as_bytes());
    let start = s.len().saturating_sub(LOG_TAIL_BYTES);
    Bytes::copy_from_slice(&s[start..])
}
