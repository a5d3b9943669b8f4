//! Server configuration: command-line flags (each also settable from the environment) and the
//! named limits that bound everything the server holds.
//!
//! Read once at start-up on the main thread, then shared read-only (`Arc<Config>`) by every core
//! and the control plane.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

/// AWS's synchronous invoke payload limit (request and response): 6 MB.
pub const INVOKE_PAYLOAD_BYTES_MAX: usize = 6 * 1024 * 1024;
/// AWS's asynchronous (`InvocationType: Event`) invoke payload limit: 256 KB.
pub const EVENT_PAYLOAD_BYTES_MAX: usize = 256 * 1024;
/// The User API carries base64 zips (50 MB zipped → ~67 MB encoded) in CreateFunction bodies.
pub const USER_API_BODY_BYTES_MAX: usize = 70 * 1024 * 1024;
/// What `X-Amz-Log-Type: Tail` returns: the last 4 KB of the invocation's log.
pub const LOG_TAIL_BYTES: usize = 4 * 1024;
/// Per-instance log memory kept for tails.
pub const LOG_RING_BYTES: usize = 64 * 1024;
/// Event invocations queued (accepted, not done) across all functions before new ones are
/// refused with 429 (`--event-queue-max`).
pub const EVENT_QUEUE_MAX: usize = 100_000;
/// Payload bytes of the queued events across all functions (`--event-queue-bytes-max`): the
/// queue keeps payloads in memory as well as on disk, so this bounds its memory.
pub const EVENT_QUEUE_BYTES_MAX: usize = 512 * 1024 * 1024;
/// Event invocations queued for one function (`--event-queue-function-max`): one function's
/// backlog cannot take the whole queue.
pub const EVENT_QUEUE_FUNCTION_MAX: usize = 20_000;
/// Payload bytes queued for one function (`--event-queue-function-bytes-max`).
pub const EVENT_QUEUE_FUNCTION_BYTES_MAX: usize = 128 * 1024 * 1024;
/// Messages waiting in the event queue's inbox before cores refuse events with 429: the cores
/// never wait for room, and while the queue's thread syncs a batch the next one gathers here.
pub const EVENT_INBOX_MAX: usize = 4096;
/// Default first instance uid: above the ids distributions hand out to people (1000..60000) and
/// below the 2^31 boundary some tools mishandle; rootless container setups usually start their
/// subordinate ranges at 100000 with 65536 ids, which this range (200000..265536) avoids.
pub const INSTANCE_UID_BASE_DEFAULT: u32 = 200_000;
/// Default number of instance uids: more than the instances a machine can run at once.
pub const INSTANCE_UIDS_DEFAULT: u32 = 65_536;
/// Room for a few warm slots of the common sizes (128 to 1024 MB); an idle slot is a waiting
/// shell, so its real footprint is far below its memory limit.
pub const DOCKER_POOL_MB_DEFAULT: u64 = 2048;
/// Pre-started Node processes kept by default: one serves the next cold start while the other
/// is being replaced, for about 100 MB of memory in all.
pub const NODE_POOL_DEFAULT: usize = 2;
/// AWS's retry interval after a function error: about one minute, then two
/// (`--event-retry-base-ms` scales every event delay by itself / this).
pub const EVENT_RETRY_BASE_MS: u64 = 60_000;
/// Instances starting or initialising at once per data-plane core, by default
/// (`--max-concurrent-inits`): enough to keep Docker's create/start round trips overlapped, few
/// enough that each start gets the CPU it needs at once.
pub const INITS_PER_CORE: usize = 4;

/// Bytes of function logs kept on disk across all functions (`--log-bytes-max`); past it the
/// oldest segments are dropped.
pub const LOG_STORE_BYTES_MAX: u64 = 1024 * 1024 * 1024;
/// Days function log events are kept (`--log-retention-days`); a log group's own retention
/// (PutRetentionPolicy) can only shorten it.
pub const LOG_RETENTION_DAYS: u64 = 30;
/// Cores are numbered in a 64-bit mask (`FunctionCounters::idle_cores`).
pub const CORES_MAX: usize = 64;
/// Seconds the control plane waits at shutdown, after killing every instance, for the instances
/// to report that they ended; past it, shutdown goes on without the stragglers so it cannot hang.
pub const SHUTDOWN_WAIT_S: u64 = 15;
/// How many folders above the executable are searched for `runtimes/` (the executable sits in
/// `target/<profile>/` or `target/<profile>/deps/` of a checkout, or next to `runtimes/` when
/// installed).
const RUNTIMES_DIR_ANCESTORS_MAX: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExecutorChoice {
    /// Each instance is a child process group on the host.
    Process,
    /// Each instance is a hardened Docker container.
    Docker,
    /// Docker when a daemon answers, the process executor otherwise.
    Auto,
    /// Each instance is `lah-agent` as a host process, linked to the Runtime API over one
    /// WebSocket (the Swarm executor's path on one host, to test and measure it; docs/swarm.md).
    Agent,
    /// Each instance is a Docker Swarm service (one task) placed by Swarm on any node, with
    /// `lah-agent` inside; `DOCKER_HOST` names the manager (docs/swarm.md).
    Swarm,
}

/// When a pending invocation gets a new instance (`--scale-out`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScaleOut {
    /// As AWS: whenever no instance is idle or about to ask for work, start one; instances track
    /// concurrency.
    Eager,
    /// Also wait for a busy instance when the function's invocations are far shorter than a cold
    /// start (a busy one serves several before a new one could start): on a host with few CPUs, a
    /// closed loop of fast invocations runs on a handful of warm instances instead of one
    /// process per caller. Functions whose invocations are long (I/O, sleeps) scale as `eager`.
    Adaptive,
}

/// Whether the User API checks SigV4 signatures (`--auth`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AuthChoice {
    /// On when `--bind` is not a loopback address, off on loopback.
    Auto,
    /// Every User API request but `/healthz` and `/metrics` must be signed.
    On,
    /// Signatures are not checked (the region of a signature still names ARNs).
    Off,
}

/// A secret from a flag or the environment: never printed, not even by `{:?}` of the `Config`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "lambda-at-home-server",
    version,
    about = "Self-hosted AWS-Lambda-compatible function runner (thread-per-core, io_uring)"
)]
pub struct Config {
    /// Address both APIs listen on.
    #[arg(long, env = "LAH_BIND", default_value = "127.0.0.1")]
    pub bind: IpAddr,

    /// User API port (AWS Lambda REST API: CreateFunction, Invoke, ...).
    #[arg(long, env = "LAH_USER_API_PORT", default_value_t = 9000)]
    pub user_api_port: u16,

    /// Runtime API port (AWS Runtime API 2018-06-01 and the WebSocket runtime API).
    #[arg(long, env = "LAH_RUNTIME_API_PORT", default_value_t = 9001)]
    pub runtime_api_port: u16,

    /// Address the Runtime API's shared port listens on (default: `--bind`). Remote instances
    /// (`--executor swarm`) link to it, so it must be reachable from every node then; the
    /// per-instance addresses stay on loopback.
    #[arg(long, env = "LAH_RUNTIME_BIND")]
    pub runtime_bind: Option<IpAddr>,

    /// `host:port` at which the agents of remote instances reach the Runtime API (default: the
    /// Runtime API's address, which must then not be a wildcard). The code endpoint is reached at
    /// the same host.
    #[arg(long, env = "LAH_AGENT_LINK")]
    pub agent_link: Option<String>,

    /// Port of the code endpoint remote instances fetch their code from (on the Runtime API's
    /// address; 0: any free port).
    #[arg(long, env = "LAH_AGENT_CODE_PORT", default_value_t = 0)]
    pub agent_code_port: u16,

    /// The `lah-agent` executable for `--executor agent` (default: next to the server's).
    #[arg(long, env = "LAH_AGENT_PATH")]
    pub agent_path: Option<PathBuf>,

    /// Overlay network the Swarm executor attaches its services to (must be attachable or
    /// swarm-scoped, and reach the Runtime API's address).
    #[arg(long, env = "LAH_SWARM_NETWORK")]
    pub swarm_network: Option<String>,

    /// Where functions (configuration and code) are persisted.
    #[arg(long, env = "LAH_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// Data-plane cores (threads, each with its own io_uring); default: the available CPUs.
    #[arg(long, env = "LAH_CORES")]
    pub cores: Option<usize>,

    /// Instance backend.
    #[arg(long, value_enum, env = "LAH_EXECUTOR", default_value = "auto")]
    pub executor: ExecutorChoice,

    /// Folder holding the runtime bootstraps (`node/`, `python/`); default: `runtimes/` next to
    /// the working directory or the executable.
    #[arg(long, env = "LAH_RUNTIMES_DIR")]
    pub runtimes_dir: Option<PathBuf>,

    /// Where the WebSocket client packages are installed (`runtimes/install-deps.sh DIR`);
    /// default: `<data-dir>/runtime-deps`.
    #[arg(long, env = "LAH_RUNTIME_DEPS_DIR")]
    pub runtime_deps_dir: Option<PathBuf>,

    /// Invocations running at once across all functions (AWS's account concurrency).
    #[arg(long, env = "LAH_CONCURRENCY", default_value_t = 256)]
    pub concurrency: u32,

    /// Seconds an instance may stay idle before it is paused (frozen).
    #[arg(long, env = "LAH_IDLE_PAUSE_S", default_value_t = 300)]
    pub idle_pause_s: u64,

    /// Seconds an instance may stay idle before it is removed.
    #[arg(long, env = "LAH_IDLE_REMOVE_S", default_value_t = 900)]
    pub idle_remove_s: u64,

    /// Seconds a new instance has to reach its first `/next` (Lambda's init limit is 10 s).
    #[arg(long, env = "LAH_INIT_TIMEOUT_S", default_value_t = 10)]
    pub init_timeout_s: u64,

    /// Instances that may be starting or initialising at once, across all functions; further
    /// starts wait their turn (0: four per data-plane core). A burst of cold starts that all
    /// share the CPUs finishes all at once, late, and under load past the init limit; taken a
    /// few at a time each one is quick.
    #[arg(long, env = "LAH_MAX_CONCURRENT_INITS", default_value_t = 0)]
    pub max_concurrent_inits: usize,

    /// When a pending invocation gets a new instance: `eager` (AWS: one per concurrent
    /// invocation) or `adaptive` (fast functions wait for a busy instance rather than start one
    /// that could not be ready sooner; see docs/scheduler.md).
    #[arg(long, env = "LAH_SCALE_OUT", value_enum, default_value_t = ScaleOut::Adaptive)]
    pub scale_out: ScaleOut,

    /// Timeout for functions created without one (AWS: 3 s).
    #[arg(long, env = "LAH_DEFAULT_TIMEOUT_S", default_value_t = 3)]
    pub default_timeout_s: u32,

    /// Memory for functions created without MemorySize (AWS: 128 MB).
    #[arg(long, env = "LAH_DEFAULT_MEMORY_MB", default_value_t = 128)]
    pub default_memory_mb: u32,

    /// Client connections (User API and the shared Runtime API port) one core holds at most;
    /// past it a new connection is closed at once. Instances' own Runtime API connections are
    /// bounded by the instances and not counted.
    #[arg(long, env = "LAH_CONNECTIONS_MAX", default_value_t = 4096)]
    pub connections_max: usize,

    /// Seconds a client connection may sit idle between requests before it is closed.
    #[arg(long, env = "LAH_IDLE_CONNECTION_S", default_value_t = 60)]
    pub idle_connection_s: u64,

    /// Seconds a request head may take from its first byte to its end (slowloris bound).
    #[arg(long, env = "LAH_HEADER_TIMEOUT_S", default_value_t = 10)]
    pub header_timeout_s: u64,

    /// The slowest body upload accepted, in KiB/s: a body of N KiB must arrive within
    /// `--header-timeout-s` + N / this many seconds.
    #[arg(long, env = "LAH_BODY_RATE_MIN_KIB_S", default_value_t = 64)]
    pub body_rate_min_kib_s: u64,

    /// Seconds SIGTERM/SIGINT waits for in-flight invocations before stopping instances.
    #[arg(long, env = "LAH_SHUTDOWN_GRACE_S", default_value_t = 10)]
    pub shutdown_grace_s: u64,

    /// Server-wide default for `LAMBDA_USE_WEBSOCKET` (a function's own variable wins).
    #[arg(long, env = "LAH_USE_WEBSOCKET", default_value_t = true, action = clap::ArgAction::Set)]
    pub use_websocket: bool,

    /// Process executor: each instance also gets a Unix socket for its Runtime API (an abstract
    /// name, `LAMBDA_RUNTIME_API_SOCKET`), which the bundled Node bootstrap and Python's HTTP
    /// loop use instead of loopback TCP (less CPU and latency per warm invoke;
    /// docs/architecture.md). `AWS_LAMBDA_RUNTIME_API` serves as before, for every other client.
    #[arg(long, env = "LAH_RUNTIME_UNIX_SOCKETS", default_value_t = true, action = clap::ArgAction::Set)]
    pub runtime_unix_sockets: bool,

    /// Python instances of the process executor start as forks of a template that has already
    /// imported the handler (docs/cold-starts.md); `false` starts every instance from scratch. A
    /// function opts out with its own `LAMBDA_USE_FORK=false`.
    #[arg(long, env = "LAH_FORK_START", default_value_t = true, action = clap::ArgAction::Set)]
    pub fork_start: bool,

    /// Process executor, Node: how many Node processes to keep started with the bootstrap loaded
    /// and no function yet, so that a cold start only hands one its function (docs/cold-starts.md);
    /// 0 turns the pool off. Each idle one holds about 40-50 MB. A function opts out with its own
    /// `LAMBDA_USE_POOL=false`.
    #[arg(long, env = "LAH_NODE_POOL", default_value_t = NODE_POOL_DEFAULT)]
    pub node_pool: usize,

    /// Remount the host's cgroup2 hierarchy with `favordynmods` while the server runs (root only;
    /// the options it had are restored at stop): moving a process into an instance's cgroup then
    /// never waits for an RCU grace period, which every process, fork and container start
    /// otherwise may (9–22 ms per move was seen here while namespaces and Docker engines were
    /// being set up and torn down; 0.2–0.3 ms on a quiet machine either way). Off by default:
    /// it changes a host-wide kernel setting; `scripts/cgroup-move-cost.py` shows whether a host
    /// gains from it (docs/cold-starts.md).
    #[arg(long, env = "LAH_CGROUP_FAVOR_DYNMODS", default_value_t = false, action = clap::ArgAction::Set)]
    pub cgroup_favor_dynmods: bool,

    /// First address of the per-instance Runtime API addresses (a /16 inside 127.0.0.0/8).
    #[arg(long, env = "LAH_INSTANCE_NET", default_value = "127.10.0.0")]
    pub instance_net: std::net::Ipv4Addr,

    /// First uid of the instance identities: each running instance gets its own uid (and a gid of
    /// the same number) from `[base, base + --instance-uids)`, and its Runtime API connections
    /// are accepted only from sockets the kernel says that uid owns (see docs/isolation.md).
    /// Pick a range no user or container of the host uses.
    #[arg(long, env = "LAH_INSTANCE_UID_BASE", default_value_t = INSTANCE_UID_BASE_DEFAULT)]
    pub instance_uid_base: u32,

    /// How many instance uids there are: at most this many instances run at once. 0 turns
    /// instance identities off (instances run as the executor's default user, unverified).
    #[arg(long, env = "LAH_INSTANCE_UIDS", default_value_t = INSTANCE_UIDS_DEFAULT)]
    pub instance_uids: u32,

    /// Docker executor: total memory size (MB) of the started containers kept waiting for a
    /// function (one per image and memory size started recently), so that a cold start skips
    /// container create and start (docs/cold-starts-docker.md). 0 turns the pool off.
    #[arg(long, env = "LAH_DOCKER_POOL_MB", default_value_t = DOCKER_POOL_MB_DEFAULT)]
    pub docker_pool_mb: u64,

    /// Image per runtime family for the Docker executor, e.g. `python=lambda-at-home/python:bookworm`.
    #[arg(long = "image", env = "LAH_IMAGES", value_delimiter = ',')]
    pub images: Vec<String>,

    /// First retry delay of a failed Event invocation in ms (AWS: about 1 minute; the second is
    /// twice this). Throttle and system-error backoff (AWS: 1 s growing to 5 min) scale with it.
    /// Tests shorten it.
    #[arg(long, env = "LAH_EVENT_RETRY_BASE_MS", default_value_t = EVENT_RETRY_BASE_MS)]
    pub event_retry_base_ms: u64,

    /// Event invocations queued across all functions before new ones get 429.
    #[arg(long, env = "LAH_EVENT_QUEUE_MAX", default_value_t = EVENT_QUEUE_MAX)]
    pub event_queue_max: usize,

    /// Payload bytes queued across all functions before new events get 429.
    #[arg(long, env = "LAH_EVENT_QUEUE_BYTES_MAX", default_value_t = EVENT_QUEUE_BYTES_MAX)]
    pub event_queue_bytes_max: usize,

    /// Event invocations queued for one function before its new events get 429.
    #[arg(long, env = "LAH_EVENT_QUEUE_FUNCTION_MAX", default_value_t = EVENT_QUEUE_FUNCTION_MAX)]
    pub event_queue_function_max: usize,

    /// Payload bytes queued for one function before its new events get 429.
    #[arg(long, env = "LAH_EVENT_QUEUE_FUNCTION_BYTES_MAX", default_value_t = EVENT_QUEUE_FUNCTION_BYTES_MAX)]
    pub event_queue_function_bytes_max: usize,

    /// Bytes of function logs kept on disk (all functions); the oldest are dropped first.
    #[arg(long, env = "LAH_LOG_BYTES_MAX", default_value_t = LOG_STORE_BYTES_MAX)]
    pub log_bytes_max: u64,

    /// Days function log events are kept at most (a log group's retention policy may shorten it).
    #[arg(long, env = "LAH_LOG_RETENTION_DAYS", default_value_t = LOG_RETENTION_DAYS)]
    pub log_retention_days: u64,

    /// Region of instances' `AWS_REGION`, and of ARNs when a request's SigV4 credential scope
    /// names none.
    #[arg(long, env = "LAH_REGION", default_value = crate::model::types::REGION_DEFAULT, value_parser = parse_region)]
    pub region: String,

    /// The 12-digit account id in every ARN.
    #[arg(long, env = "LAH_ACCOUNT_ID", default_value = crate::model::types::ACCOUNT_ID_DEFAULT, value_parser = parse_account_id)]
    pub account_id: String,

    /// SigV4 authentication of the User API: `auto` is on unless `--bind` is a loopback address.
    #[arg(long, value_enum, env = "LAH_AUTH", default_value = "auto")]
    pub auth: AuthChoice,

    /// AWS shared credentials file (`[profile]` sections with `aws_access_key_id` and
    /// `aws_secret_access_key`); every key in it is accepted.
    #[arg(long, env = "LAH_CREDENTIALS_FILE")]
    pub credentials_file: Option<PathBuf>,

    /// An accepted access key id (with `--secret-access-key`).
    #[arg(long, env = "LAH_ACCESS_KEY_ID", requires = "secret_access_key")]
    pub access_key_id: Option<String>,

    /// The secret of `--access-key-id`; prefer the environment variable, which `ps` does not show.
    #[arg(
        long,
        env = "LAH_SECRET_ACCESS_KEY",
        requires = "access_key_id",
        hide_env_values = true
    )]
    pub secret_access_key: Option<Secret>,
}

/// AWS's region shape (`us-east-1`): clients and Terraform parse ARNs with it.
fn parse_region(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('-').collect();
    let ok = parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!("a region looks like us-east-1, got {s:?}"))
    }
}

fn parse_account_id(s: &str) -> Result<String, String> {
    if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(s.to_string())
    } else {
        Err(format!("an account id is 12 digits, got {s:?}"))
    }
}

impl Config {
    /// How many instances may be starting or initialising at once (`--max-concurrent-inits`).
    pub fn concurrent_inits(&self) -> usize {
        match self.max_concurrent_inits {
            0 => INITS_PER_CORE * self.core_count(),
            n => n,
        }
    }

    pub fn core_count(&self) -> usize {
        let n = self.cores.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        });
        n.clamp(1, CORES_MAX)
    }

    /// Where the bootstraps are: the flag, else `./runtimes`, else next to the executable.
    pub fn resolve_runtimes_dir(&self) -> PathBuf {
        if let Some(dir) = &self.runtimes_dir {
            return absolute(dir);
        }
        let cwd = PathBuf::from("runtimes");
        if cwd.join("node").is_dir() {
            return absolute(&cwd);
        }
        let mut candidates = vec![PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runtimes")];
        if let Ok(exe) = std::env::current_exe() {
            for up in exe.ancestors().skip(1).take(RUNTIMES_DIR_ANCESTORS_MAX) {
                candidates.push(up.join("runtimes"));
            }
        }
        candidates
            .into_iter()
            .find(|c| c.join("node").is_dir())
            .unwrap_or_else(|| absolute(&cwd))
    }

    pub fn resolve_runtime_deps_dir(&self) -> PathBuf {
        absolute(
            &self
                .runtime_deps_dir
                .clone()
                .unwrap_or_else(|| self.data_dir.join("runtime-deps")),
        )
    }

    /// The Runtime API's shared port's address (`--runtime-bind`, else `--bind`).
    pub fn runtime_bind_addr(&self) -> IpAddr {
        self.runtime_bind.unwrap_or(self.bind)
    }

    /// `host:port` agents dial for the Runtime API (`--agent-link`, else the Runtime API's own
    /// address when it is not a wildcard).
    pub fn agent_link_addr(&self) -> Result<String, String> {
        if let Some(link) = &self.agent_link {
            return Ok(link.clone());
        }
        let ip = self.runtime_bind_addr();
        if ip.is_unspecified() {
            return Err("the Runtime API listens on a wildcard address: give --agent-link".into());
        }
        Ok(std::net::SocketAddr::new(ip, self.runtime_api_port).to_string())
    }

    /// Whether `uid` is one of the instance identities (`--instance-uid-base`, `--instance-uids`).
    pub fn is_instance_uid(&self, uid: u32) -> bool {
        uid >= self.instance_uid_base && uid - self.instance_uid_base < self.instance_uids
    }

    /// A config for tests: ephemeral ports are chosen by the caller.
    pub fn for_tests(data_dir: PathBuf, user_api_port: u16, runtime_api_port: u16) -> Config {
        let mut c = Config::parse_from(["lambda-at-home-server"]);
        c.data_dir = data_dir;
        c.user_api_port = user_api_port;
        c.runtime_api_port = runtime_api_port;
        c.executor = ExecutorChoice::Process;
        // The test suite installs the runtimes' WebSocket packages here (scripts/test.sh).
        let deps = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runtimes/.deps");
        c.runtime_deps_dir = Some(deps);
        // Many tests play an instance's runtime from the test process itself (connecting to the
        // address an instance reported), which instance identities refuse by design: tests that
        // exercise identities turn them on (`tests/e2e_isolation.rs`).
        c.instance_uids = 0;
        // The Docker tests look at each instance's container by its function label, which a
        // pooled container (created before its function was known) cannot carry: tests of the
        // pool turn it on (`tests/e2e_docker.rs`, `tests/e2e_isolation.rs`).
        c.docker_pool_mb = 0;
        // Likewise for the Node pool: its processes start in the background after a Node start,
        // which would load every test that starts a Node function; its tests turn it on
        // (`tests/e2e_node_pool.rs`).
        c.node_pool = 0;
        c
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}
