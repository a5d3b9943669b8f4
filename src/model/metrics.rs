//! Counters for `GET /metrics` (Prometheus text format 0.0.4).
//!
//! Plain relaxed atomics shared by all cores: an increment is one uncontended `lock xadd`, cheap
//! enough for the invoke path. Histograms have fixed buckets (seconds, Prometheus convention).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::hostcpu::HostCpu;

/// Upper bounds of the duration histogram buckets, in microseconds.
const BUCKETS_US: [u64; 14] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 1_000_000,
    5_000_000, 30_000_000,
];
/// Microseconds per second: buckets and sums are kept in µs and exposed in seconds.
const US_PER_S: f64 = 1e6;
/// Starting capacity of the `/metrics` text; the whole page fits without growing it.
const METRICS_TEXT_BYTES: usize = 8192;

#[derive(Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_US.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    pub fn observe_us(&self, us: u64) {
        if let Some(i) = BUCKETS_US.iter().position(|&b| us <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (i, bound) in BUCKETS_US.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let le = *bound as f64 / US_PER_S;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / US_PER_S;
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Instances by state; gauges moved by the home core as an instance changes state.
#[derive(Default)]
pub struct InstanceGauges {
    pub starting: AtomicI64,
    pub idle: AtomicI64,
    pub busy: AtomicI64,
    pub paused: AtomicI64,
}

/// WebSocket Runtime API counters.
#[derive(Default)]
pub struct WsMetrics {
    pub connections_open: AtomicI64,
    pub connections_total: AtomicU64,
    pub messages_in: AtomicU64,
    pub messages_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub protocol_errors: AtomicU64,
    /// Runtimes that said they fell back to HTTP (an HTTP `/next` from an instance that had
    /// been told to use WebSocket).
    pub fallbacks_to_http: AtomicU64,
}

/// Client connections (User API and the shared Runtime API port).
#[derive(Default)]
pub struct ConnMetrics {
    pub open: AtomicI64,
    /// Closed at once because the core held `--connections-max` already.
    pub refused: AtomicU64,
    /// Closed because a request did not arrive (idle) or did not complete (slow head or body)
    /// in time.
    pub timed_out: AtomicU64,
    /// Accepts that failed (e.g. out of file descriptors).
    pub accept_errors: AtomicU64,
    /// Runtime API connections accepted on an instance's Unix socket (`LAMBDA_RUNTIME_API_SOCKET`).
    pub runtime_unix: AtomicU64,
    /// User API connections moved to the core that served their last invocations
    /// (`user_api::Follow`).
    pub followed: AtomicU64,
}

#[derive(Default)]
pub struct Metrics {
    pub invocations: AtomicU64,
    pub invocations_event: AtomicU64,
    pub function_errors: AtomicU64,
    pub service_errors: AtomicU64,
    pub timeouts: AtomicU64,
    pub throttles: AtomicU64,
    pub cold_starts: AtomicU64,
    /// Instances asked of the control plane (every cold start, whether or not it became ready).
    pub instance_starts: AtomicU64,
    pub instance_crashes: AtomicU64,
    /// Instances waiting for a place in the start gate (`--max-concurrent-inits`).
    pub start_gate_waiting: AtomicI64,
    /// User API requests refused by authentication (any of its 403s).
    pub auth_failures: AtomicU64,
    /// Connections refused because the kernel says they come from another uid than the
    /// instance's (Runtime API) or from an instance (User API).
    pub identity_refusals: AtomicU64,
    /// Instances that were to get an identity but run without one (the executor could not
    /// switch to their uid, e.g. a non-root process executor): their connections are unverified.
    pub instances_unverified: AtomicU64,
    /// Instances started as forks of a template (process executor, Python; docs/cold-starts.md).
    pub starts_fork: AtomicU64,
    /// Instances started from scratch (a new process or container).
    pub starts_exec: AtomicU64,
    /// Instances taken from the Docker pool of started containers (`docker_pool`) or from the
    /// process executor's pre-started Node processes (`node_pool`).
    pub starts_pooled: AtomicU64,
    pub duration: Histogram,
    pub init_duration: Histogram,
    /// The executor's part of a cold start (process spawn; container create + start).
    pub executor_start: Histogram,
    /// Started containers waiting in the Docker pool (`docker_pool`).
    pub docker_pool_idle_slots: AtomicI64,
    pub instances: InstanceGauges,
    pub ws: WsMetrics,
    pub conns: ConnMetrics,
    /// Event invocations accepted and not done (the event queue sets it).
    pub events_queued: AtomicI64,
    pub event_attempts: AtomicU64,
    pub events_succeeded: AtomicU64,
    /// Retries exhausted or too old (sent to OnFailure when there is one).
    pub events_failed: AtomicU64,
    /// Dropped because their function or version no longer exists.
    pub events_dropped: AtomicU64,
    pub event_destinations: AtomicU64,
    /// One write + `fdatasync` of a batch of the event log.
    pub event_log_sync: Histogram,
    /// Function log lines lost: the log store's inbox was full, or the disk refused them.
    pub log_lines_dropped: AtomicU64,
    /// Function log events written to the log store.
    pub log_events_stored: AtomicU64,
    /// Bytes the log store holds on disk (the log-writer thread sets it).
    pub log_bytes_stored: AtomicI64,
    /// The host's idle CPU (`crate::model::hostcpu`), and the adaptive starts it held back.
    pub host_cpu: std::sync::Arc<HostCpu>,
}

impl Metrics {
    pub fn render(&self, executor: &str) -> String {
        let mut out = String::with_capacity(METRICS_TEXT_BYTES);
        let counters: [(&str, &str, &AtomicU64); 12] = [
            (
                "lah_invocations_total",
                "Invocations completed (all types).",
                &self.invocations,
            ),
            (
                "lah_invocations_event_total",
                "Event (async) invocations accepted.",
                &self.invocations_event,
            ),
            (
                "lah_function_errors_total",
                "Invocations that ended in a function error.",
                &self.function_errors,
            ),
            (
                "lah_service_errors_total",
                "Invocations that failed in the platform.",
                &self.service_errors,
            ),
            (
                "lah_timeouts_total",
                "Invocations that hit their deadline.",
                &self.timeouts,
            ),
            (
                "lah_throttles_total",
                "Invocations refused with TooManyRequestsException.",
                &self.throttles,
            ),
            (
                "lah_cold_starts_total",
                "Invocations that started a new instance.",
                &self.cold_starts,
            ),
            (
                "lah_instance_starts_total",
                "Instances asked of the executor (started for pending invocations).",
                &self.instance_starts,
            ),
            (
                "lah_instance_crashes_total",
                "Instances that exited on their own.",
                &self.instance_crashes,
            ),
            (
                "lah_auth_failures_total",
                "User API requests refused by SigV4 authentication.",
                &self.auth_failures,
            ),
            (
                "lah_identity_refusals_total",
                "Connections refused because the kernel names another uid than the one allowed.",
                &self.identity_refusals,
            ),
            (
                "lah_instances_unverified_total",
                "Instances started without their own uid: their connections are not verified.",
                &self.instances_unverified,
            ),
        ];
        for (name, help, v) in counters {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP lah_executor_starts_total Instances the executor started, by kind: fork (of a \
             pre-initialised template), pooled (a started container of the Docker pool, or a \
             pre-started Node process of the process executor's pool) or exec \
             (from scratch).\n# TYPE lah_executor_starts_total \
             counter\nlah_executor_starts_total{{kind=\"fork\"}} {}\n\
             lah_executor_starts_total{{kind=\"pooled\"}} {}\n\
             lah_executor_starts_total{{kind=\"exec\"}} {}",
            self.starts_fork.load(Ordering::Relaxed),
            self.starts_pooled.load(Ordering::Relaxed),
            self.starts_exec.load(Ordering::Relaxed)
        );
        let waiting = self.start_gate_waiting.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP lah_start_gate_waiting Instances waiting for a place in the start gate \
             (--max-concurrent-inits).\n# TYPE lah_start_gate_waiting gauge\n\
             lah_start_gate_waiting {waiting}"
        );
        let idle = self.docker_pool_idle_slots.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP lah_docker_pool_idle_slots Started containers waiting in the Docker pool \
             (--docker-pool-mb).\n# TYPE lah_docker_pool_idle_slots gauge\n\
             lah_docker_pool_idle_slots {idle}"
        );
        let held = self.host_cpu.starts_held.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP lah_scale_out_held_total Instance starts --scale-out adaptive did not make \
             because no CPU of the host was idle.\n# TYPE lah_scale_out_held_total counter\n\
             lah_scale_out_held_total {held}"
        );
        let _ = writeln!(
            out,
            "# HELP lah_host_runnable_per_cpu Runnable tasks per CPU of the host over the last \
             300 ms, at least 1 (what --scale-out adaptive multiplies a start's cost by).\n\
             # TYPE lah_host_runnable_per_cpu gauge\nlah_host_runnable_per_cpu {}",
            self.host_cpu.contention_milli() as f64 / 1000.0
        );
        if let Some(milli) = self.host_cpu.idle_milli_cpus() {
            let _ = writeln!(
                out,
                "# HELP lah_host_idle_cpus CPUs of the host idle over the last 300 ms (summed \
                 over its CPUs).\n# TYPE lah_host_idle_cpus gauge\nlah_host_idle_cpus {}",
                milli as f64 / 1000.0
            );
        }
        self.render_events(&mut out);
        self.duration.render(
            &mut out,
            "lah_invocation_duration_seconds",
            "Time from request accepted to result, per invocation.",
        );
        self.init_duration.render(
            &mut out,
            "lah_init_duration_seconds",
            "Time from instance start to its runtime's first /next.",
        );
        self.executor_start.render(
            &mut out,
            "lah_executor_start_seconds",
            "Time the executor took to start an instance (spawn, container create and start, \
             or a claim from the Docker pool).",
        );
        let _ = writeln!(
            out,
            "# HELP lah_instances Instances by state.\n# TYPE lah_instances gauge"
        );
        let g = &self.instances;
        for (state, v) in [
            ("starting", &g.starting),
            ("idle", &g.idle),
            ("busy", &g.busy),
            ("paused", &g.paused),
        ] {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "lah_instances{{state=\"{state}\",executor=\"{executor}\"}} {v}"
            );
        }
        self.render_ws(&mut out);
        self.render_conns(&mut out);
        self.render_logs(&mut out);
        out
    }

    fn render_logs(&self, out: &mut String) {
        for (name, help, v) in [
            (
                "lah_log_lines_dropped_total",
                "Function log lines not stored (log inbox full, or the disk refused them).",
                &self.log_lines_dropped,
            ),
            (
                "lah_log_events_stored_total",
                "Function log events written to the log store.",
                &self.log_events_stored,
            ),
        ] {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        let bytes = self.log_bytes_stored.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP lah_log_bytes_stored Bytes of function logs on disk.\n# TYPE lah_log_bytes_stored gauge\nlah_log_bytes_stored {bytes}"
        );
    }

    fn render_conns(&self, out: &mut String) {
        let c = &self.conns;
        let open = c.open.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP lah_connections_open Client connections open (User API, shared Runtime API port).\n# TYPE lah_connections_open gauge\nlah_connections_open {open}"
        );
        for (name, v) in [
            ("lah_connections_refused_total", &c.refused),
            ("lah_connections_timed_out_total", &c.timed_out),
            ("lah_accept_errors_total", &c.accept_errors),
            ("lah_runtime_unix_connections_total", &c.runtime_unix),
            ("lah_connections_moved_total", &c.followed),
        ] {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
        }
    }

    fn render_events(&self, out: &mut String) {
        let queued = self.events_queued.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP lah_events_queued Event invocations accepted and not done.\n# TYPE lah_events_queued gauge\nlah_events_queued {queued}"
        );
        let counters: [(&str, &str, &AtomicU64); 5] = [
            (
                "lah_event_attempts_total",
                "Attempts of Event invocations started.",
                &self.event_attempts,
            ),
            (
                "lah_events_succeeded_total",
                "Event invocations whose function succeeded.",
                &self.events_succeeded,
            ),
            (
                "lah_events_failed_total",
                "Event invocations discarded: retries exhausted or too old.",
                &self.events_failed,
            ),
            (
                "lah_events_dropped_total",
                "Event invocations dropped because their function is gone.",
                &self.events_dropped,
            ),
            (
                "lah_event_destinations_total",
                "Invocation records enqueued for OnSuccess/OnFailure destinations.",
                &self.event_destinations,
            ),
        ];
        for (name, help, v) in counters {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        }
        self.event_log_sync.render(
            out,
            "lah_event_log_sync_seconds",
            "One write and fdatasync of a batch of the event log.",
        );
    }

    fn render_ws(&self, out: &mut String) {
        let w = &self.ws;
        let gauge = w.connections_open.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP lah_ws_connections_open WebSocket runtime connections open.\n# TYPE lah_ws_connections_open gauge\nlah_ws_connections_open {gauge}"
        );
        let counters: [(&str, &AtomicU64); 7] = [
            ("lah_ws_connections_total", &w.connections_total),
            ("lah_ws_messages_in_total", &w.messages_in),
            ("lah_ws_messages_out_total", &w.messages_out),
            ("lah_ws_bytes_in_total", &w.bytes_in),
            ("lah_ws_bytes_out_total", &w.bytes_out),
            ("lah_ws_protocol_errors_total", &w.protocol_errors),
            ("lah_ws_fallbacks_to_http_total", &w.fallbacks_to_http),
        ];
        for (name, v) in counters {
            let v = v.load(Ordering::Relaxed);
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {v}");
        }
    }
}
