//! The control plane: one ordinary tokio thread that owns the function registry, the executor
//! and every instance's lifecycle.
//!
//! The data plane talks to it only through `ControlMsg` and never waits on it on the warm invoke
//! path: User API management calls await a reply here, cold starts are fire-and-forget requests
//! answered with a `CoreMsg`. Slow work happens here so a core never blocks: starting processes
//! and containers on this thread, management calls (which may unzip and fsync tens of megabytes)
//! on tokio's blocking pool with the registry behind a mutex, so an upload never delays another
//! function's cold start. Each instance gets a task that waits for its exit and obeys kill, pause
//! and resume; its exit is reported to its home core, and its log stream (`LogStream`, named
//! here as the instance's environment names it) travels with its output pipe to that core.
//! CloudWatch Logs API calls are authenticated here like any management call, then handed to
//! the log store's thread (`crate::logstore`), which answers them.

pub mod api;
pub mod code;
pub mod executor;
pub mod held;
pub mod identity;
pub mod layers;
pub mod registry;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use crate::model::error::ApiError;
use crate::model::logsink::{log_stream_name, LogMsg, LogStream};
use crate::model::types::{region, Function, InstanceId, InstanceSpec};
use crate::model::{ApiAnswer, ControlMsg, CoreMsg, Switchboard};
use crate::protocols::http::Request;
use executor::{Executor, Instance};
use identity::UidPool;
use registry::Registry;

/// How long, at most, a started instance keeps its place in the start gate
/// (`--max-concurrent-inits`) while its runtime initialises. Runtimes of this host initialise in
/// tens to hundreds of milliseconds when they get the CPU; the gate exists so that a burst of
/// starts does not share the CPUs so thinly that every one of them misses the init limit. Beyond
/// this the init is slow for its own reasons and the next start goes ahead.
const INIT_SLOT: std::time::Duration = std::time::Duration::from_secs(2);

enum InstanceCmd {
    /// The runtime finished its init: release the start gate's permit.
    Ready,
    Kill,
    Pause,
    Resume,
}

/// Per-instance addresses: `instance_net` + offset, one /16 inside 127.0.0.0/8.
struct AddressPool {
    base: u32,
    in_use: HashSet<u32>,
    cursor: u32,
}

impl AddressPool {
    const SIZE: u32 = 65_534;

    fn take(&mut self) -> Option<Ipv4Addr> {
        for _ in 0..Self::SIZE {
            self.cursor = self.cursor % Self::SIZE + 1;
            if self.in_use.insert(self.cursor) {
                return Some(Ipv4Addr::from(self.base + self.cursor));
            }
        }
        None
    }

    fn give_back(&mut self, addr: Ipv4Addr) {
        self.in_use.remove(&(u32::from(addr) - self.base));
    }
}

pub struct ControlPlane {
    shared: Arc<Switchboard>,
    /// Locked only by management calls, which run on the blocking pool (`api`): a large upload
    /// being unzipped and flushed never holds up this thread's instance starts.
    registry: Arc<Mutex<Registry>>,
    executor: Arc<dyn Executor>,
    runtimes_dir: PathBuf,
    instances: HashMap<InstanceId, mpsc::UnboundedSender<InstanceCmd>>,
    addresses: AddressPool,
    /// The start gate: a permit per instance from before its start until its runtime's first
    /// request for work (or its end), `--max-concurrent-inits` in all.
    inits: Arc<tokio::sync::Semaphore>,
    /// The instances' uids (`identity`), shared with the executor (`Executor::attach`).
    uids: Arc<Mutex<UidPool>>,
    /// Instance tasks report their end here (what to give back).
    ended_tx: mpsc::UnboundedSender<Ended>,
    ended_rx: mpsc::UnboundedReceiver<Ended>,
    /// Uids the executor kept beyond an instance (a fork template's), given back once free.
    uid_returns: Option<mpsc::UnboundedReceiver<u32>>,
}

/// What an ended instance gives back: its address and, once nothing runs under it, its uid.
struct Ended {
    id: InstanceId,
    addr: Ipv4Addr,
    uid: Option<u32>,
}

impl ControlPlane {
    pub fn new(shared: Arc<Switchboard>, registry: Registry, executor: Arc<dyn Executor>) -> Self {
        let runtimes_dir = shared.config.resolve_runtimes_dir();
        let inits = shared.config.concurrent_inits();
        let base = u32::from(shared.config.instance_net) & 0xffff_0000;
        let (ended_tx, ended_rx) = mpsc::unbounded_channel();
        let uids = Arc::new(Mutex::new(UidPool::new(
            shared.config.instance_uid_base,
            shared.config.instance_uids,
        )));
        executor.attach(uids.clone(), shared.clone());
        let uid_returns = executor.take_uid_returns();
        ControlPlane {
            shared,
            registry: Arc::new(Mutex::new(registry)),
            executor,
            runtimes_dir,
            instances: HashMap::new(),
            inits: Arc::new(tokio::sync::Semaphore::new(inits)),
            addresses: AddressPool {
                base,
                in_use: HashSet::new(),
                cursor: 0,
            },
            uids,
            ended_tx,
            ended_rx,
            uid_returns,
        }
    }

    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<ControlMsg>) {
        let mut released = self
            .registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .held
            .take_released()
            .expect("the control plane is the only taker");
        loop {
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(ControlMsg::Shutdown { done }) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(msg) => self.handle(msg),
                    None => return,
                },
                Some(ended) = self.ended_rx.recv() => {
                    self.instances.remove(&ended.id);
                    self.addresses.give_back(ended.addr);
                    if let Some(uid) = ended.uid {
                        self.uids.lock().unwrap_or_else(|e| e.into_inner()).give_back(uid);
                    }
                }
                Some(uid) = next_uid_return(&mut self.uid_returns) => {
                    self.uids.lock().unwrap_or_else(|e| e.into_inner()).give_back(uid);
                }
                Some(path) = released.recv() => {
                    // On the blocking pool: the registry may be locked by a long upload.
                    let registry = self.registry.clone();
                    tokio::task::spawn_blocking(move || {
                        registry.lock().unwrap_or_else(|e| e.into_inner()).held.reap_one(path);
                    });
                }
            }
        }
    }

    fn handle(&mut self, msg: ControlMsg) {
        match msg {
            ControlMsg::Api { request, reply } => self.api(request, reply),
            ControlMsg::StartInstance {
                id,
                token,
                function,
                core,
            } => self.start(id, token, function, core),
            ControlMsg::KillInstance { id } => self.command(id, InstanceCmd::Kill),
            ControlMsg::InstanceReady { id } => self.command(id, InstanceCmd::Ready),
            ControlMsg::PauseInstance { id } => self.command(id, InstanceCmd::Pause),
            ControlMsg::ResumeInstance { id } => self.command(id, InstanceCmd::Resume),
            ControlMsg::Shutdown { .. } => unreachable!("handled in run"),
        }
    }

    fn command(&mut self, id: InstanceId, cmd: InstanceCmd) {
        if let Some(tx) = self.instances.get(&id) {
            let _ = tx.send(cmd);
        }
    }

    /// A management call, routed and answered on the blocking pool (it may unzip and fsync tens of
    /// megabytes); then the cores retire what it replaced.
    fn api(&mut self, request: Request, reply: oneshot::Sender<ApiAnswer>) {
        let registry = self.registry.clone();
        let shared = self.shared.clone();
        let executor = self.executor.clone();
        tokio::task::spawn_blocking(move || {
            // The core checked the header, key and clock; the signature, which hashes a body of
            // up to 70 MB, is checked here so that no core stalls on it.
            if let Some(credentials) = &shared.auth {
                if let Err(e) = credentials.verify(&request, std::time::SystemTime::now()) {
                    shared
                        .metrics
                        .auth_failures
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let _ = reply.send(ApiAnswer::error(&e));
                    return;
                }
            }
            // CloudWatch Logs API calls (JSON 1.1, `X-Amz-Target: Logs_20140328.*`) are the
            // log store's: handed to its thread, which answers the core directly.
            if let Some(operation) = crate::logstore::api::operation(&request) {
                let region = api::Ctx::from_request(&request, "").region;
                let msg = LogMsg::Api {
                    operation: operation.to_string(),
                    body: request.body.clone(),
                    region,
                    reply,
                };
                if let Err(LogMsg::Api { reply, .. }) = shared.logs.send_blocking(msg) {
                    let _ = reply.send(crate::logstore::api::unavailable());
                }
                return;
            }
            let default_host = format!("127.0.0.1:{}", shared.config.user_api_port);
            // A panic in a handler must not wedge every later call: the registry's state is
            // only ever replaced whole, so a poisoned lock still guards consistent data.
            let mut registry = registry.lock().unwrap_or_else(|e| e.into_inner());
            let mut call = api::Call {
                ctx: api::Ctx::from_request(&request, &default_host),
                registry: &mut registry,
                request: &request,
                concurrency_limit: shared.config.concurrency,
                retire: Vec::new(),
                deleted: Vec::new(),
            };
            let answer = api::route(&mut call).into();
            for pool in std::mem::take(&mut call.retire) {
                retire(&shared, &pool);
                executor.retire(&pool);
            }
            for name in std::mem::take(&mut call.deleted) {
                // On the blocking pool: waiting for room in the log store's inbox is allowed.
                let _ = shared.logs.send_blocking(LogMsg::FunctionDeleted { name });
            }
            let _ = reply.send(answer);
        });
    }

    fn start(&mut self, id: InstanceId, token: String, function: Arc<Function>, core: usize) {
        let Some(addr) = self.addresses.take() else {
            let error = ApiError::service("No free per-instance Runtime API address");
            self.shared
                .send_core(core, CoreMsg::InstanceStartFailed { id, error });
            return;
        };
        let runtime_api = SocketAddr::new(IpAddr::V4(addr), self.shared.config.runtime_api_port);
        let listener = match bind_instance_listener(runtime_api) {
            Ok(l) => l,
            Err(e) => {
                self.addresses.give_back(addr);
                let error = ApiError::service(format!("Cannot listen on {runtime_api}: {e}"));
                self.shared
                    .send_core(core, CoreMsg::InstanceStartFailed { id, error });
                return;
            }
        };
        let taken = {
            let mut uids = self.uids.lock().unwrap_or_else(|e| e.into_inner());
            uids.enabled().then(|| uids.take())
        };
        let uid = if let Some(taken) = taken {
            match taken {
                Some(uid) => Some(uid),
                None => {
                    self.addresses.give_back(addr);
                    let error = ApiError::service("No free instance uid (--instance-uids)");
                    self.shared
                        .send_core(core, CoreMsg::InstanceStartFailed { id, error });
                    return;
                }
            }
        } else {
            None
        };
        let mut env = instance_env(
            &function,
            runtime_api,
            id,
            &token,
            self.shared.config.use_websocket,
            self.shared.log_nonce,
        );
        let mut unix = None;
        if self.shared.config.runtime_unix_sockets && self.executor.unix_runtime_api() {
            let name = unix_socket_name(self.shared.log_nonce, id);
            match bind_unix_listener(&name) {
                Ok(listener) => {
                    env.push((UNIX_SOCKET_VAR.into(), format!("@{name}")));
                    unix = Some(listener);
                }
                // The instance still has its TCP address; only the shortcut is lost.
                Err(e) => tracing::warn!(instance = %id, "no Unix socket for the Runtime API: {e}"),
            }
        }
        let spec = InstanceSpec {
            id,
            uid,
            env,
            function,
            runtime_api,
            runtimes_dir: self.runtimes_dir.clone(),
        };
        let env_value = |key: &str| {
            spec.env
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let c = &spec.function.config;
        let stream = Arc::new(LogStream {
            instance: id,
            group: env_value("AWS_LAMBDA_LOG_GROUP_NAME"),
            name: env_value("AWS_LAMBDA_LOG_STREAM_NAME"),
            function: c.name.clone(),
            version: spec.function.version.clone(),
            runtime: c.runtime.clone(),
            format: c.logging.log_format,
            system_level: c.logging.system_level().map(str::to_string),
        });
        let (tx, rx) = mpsc::unbounded_channel();
        self.instances.insert(id, tx);
        let task = InstanceTask {
            id,
            core,
            addr,
            stream,
            shared: self.shared.clone(),
            executor: self.executor.clone(),
            ended: self.ended_tx.clone(),
            inits: self.inits.clone(),
        };
        tokio::spawn(task.run(spec, listener, unix, rx));
    }

    async fn shutdown(&mut self) {
        for tx in self.instances.values() {
            let _ = tx.send(InstanceCmd::Kill);
        }
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_secs(crate::config::SHUTDOWN_WAIT_S);
        while !self.instances.is_empty() {
            match tokio::time::timeout_at(deadline, self.ended_rx.recv()).await {
                Ok(Some(ended)) => {
                    self.instances.remove(&ended.id);
                }
                _ => break,
            }
        }
        self.executor.shutdown().await;
    }
}

/// The next uid the executor gives back; never resolves without an executor that keeps uids.
async fn next_uid_return(returns: &mut Option<mpsc::UnboundedReceiver<u32>>) -> Option<u32> {
    match returns {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The control plane's task for one instance: start it, hand its listener and output to its
/// home core, obey commands, report its end.
struct InstanceTask {
    id: InstanceId,
    core: usize,
    addr: Ipv4Addr,
    shared: Arc<Switchboard>,
    executor: Arc<dyn Executor>,
    ended: mpsc::UnboundedSender<Ended>,
    inits: Arc<tokio::sync::Semaphore>,
    /// Where the instance's output is stored (handed to its home core with the output pipe).
    stream: Arc<LogStream>,
}

impl InstanceTask {
    async fn run(
        self,
        spec: InstanceSpec,
        listener: std::net::TcpListener,
        unix: Option<std::os::unix::net::UnixListener>,
        mut rx: mpsc::UnboundedReceiver<InstanceCmd>,
    ) {
        let (id, core) = (self.id, self.core);
        // Held until the instance is gone: its code and layers stay on disk while it runs, even
        // when its function is updated or deleted meanwhile (see `held`).
        let function = spec.function.clone();
        let uid = spec.uid;
        // Wait for a place in the start gate; a kill meanwhile ends the instance unstarted.
        let waiting = &self.shared.metrics.start_gate_waiting;
        waiting.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut permit = tokio::select! {
            permit = self.inits.clone().acquire_owned() => permit.ok(),
            cmd = rx.recv() => match cmd {
                Some(InstanceCmd::Kill) | None => {
                    waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                    self.shared.send_core(
                        core,
                        CoreMsg::InstanceStartFailed {
                            id,
                            error: ApiError::service("The instance was stopped before it started"),
                        },
                    );
                    self.end(uid, false).await;
                    return;
                }
                // Nothing else is sent to an instance before it reports running.
                Some(_) => self.inits.clone().acquire_owned().await.ok(),
            },
        };
        waiting.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        let started = std::time::Instant::now();
        // The place in the start gate is held through the init's first moments only, also when
        // the executor's start includes an init (a fork template imports the handler inside it).
        let result = {
            let start = self.executor.start(spec);
            tokio::pin!(start);
            let slot_ends = tokio::time::sleep(INIT_SLOT);
            tokio::pin!(slot_ends);
            loop {
                tokio::select! {
                    result = &mut start => break result,
                    () = &mut slot_ends, if permit.is_some() => drop(permit.take()),
                }
            }
        };
        let start_us = started.elapsed().as_micros() as u64;
        self.shared.metrics.executor_start.observe_us(start_us);
        let mut instance = match result {
            Ok(i) => i,
            Err(e) => {
                let error = ApiError::service(format!("Cannot start instance: {e}"));
                self.shared
                    .send_core(core, CoreMsg::InstanceStartFailed { id, error });
                self.end(uid, false).await;
                return;
            }
        };
        let log = instance.take_log();
        let verified = instance.uid();
        let forked = instance.forked();
        let start = crate::model::types::StartFacts {
            one_off_init: instance.one_off_init(),
            ready: instance.ready_start(),
        };
        let kind = if forked {
            &self.shared.metrics.starts_fork
        } else if instance.pooled() {
            &self.shared.metrics.starts_pooled
        } else {
            &self.shared.metrics.starts_exec
        };
        kind.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if uid.is_some() && verified.is_none() {
            self.shared
                .metrics
                .instances_unverified
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.shared.send_core(
            core,
            CoreMsg::InstanceStarted {
                id,
                listener,
                unix,
                log,
                uid: verified,
                stream: self.stream.clone(),
                start,
            },
        );
        // The place in the start gate is held through the init's first moments only: an init
        // that sleeps or waits (or a hostile one) must not keep other functions from starting.
        let slot_ends = tokio::time::sleep(INIT_SLOT);
        tokio::pin!(slot_ends);
        let exit = loop {
            tokio::select! {
                exit = instance.wait() => break exit,
                () = &mut slot_ends, if permit.is_some() => drop(permit.take()),
                cmd = rx.recv() => match cmd {
                    Some(InstanceCmd::Ready) => drop(permit.take()),
                    Some(cmd) => obey(instance.as_mut(), cmd, id).await,
                    None => instance.kill().await,
                },
            }
        };
        // The process is gone; make sure nothing it left (its process group, its container)
        // outlives it.
        instance.kill().await;
        tracing::debug!(instance = %id, ?exit, "instance ended");
        self.shared
            .send_core(core, CoreMsg::InstanceExited { id, exit });
        drop(function);
        if forked {
            // A fork runs under its template's uid, which outlives it: `uid` either became the
            // template's (the start that created it) or was never used (given back as is).
            self.end(uid.filter(|u| Some(*u) != verified), false).await;
        } else {
            // The uid the instance ran under is the one to give back: a pooled container's own
            // (see `Instance::uid`), else the spec's.
            self.end(verified.or(uid), verified.is_some()).await;
        }
    }

    /// Reports the end; the uid goes back only once nothing runs under it: when the instance ran
    /// under it (`ran_as_uid`), whatever is left under it is killed first (by a root server; a
    /// non-root one only runs containers under it, whose processes die with the container).
    async fn end(self, uid: Option<u32>, ran_as_uid: bool) {
        if let Some(uid) = uid.filter(|_| ran_as_uid) {
            let _ = tokio::task::spawn_blocking(move || identity::kill_all_of(uid)).await;
        }
        let _ = self.ended.send(Ended {
            id: self.id,
            addr: self.addr,
            uid,
        });
    }
}

async fn obey(instance: &mut dyn Instance, cmd: InstanceCmd, id: InstanceId) {
    let result = match cmd {
        InstanceCmd::Ready => Ok(()),
        InstanceCmd::Kill => {
            instance.kill().await;
            Ok(())
        }
        InstanceCmd::Pause => instance.pause().await,
        InstanceCmd::Resume => instance.resume().await,
    };
    if let Err(e) = result {
        tracing::warn!(instance = %id, "instance command failed: {e}");
    }
}

/// Every core stops giving the instances of pool `pool` new work.
fn retire(shared: &Switchboard, pool: &str) {
    for core in 0..shared.cores.len() {
        shared.send_core(
            core,
            CoreMsg::Retire {
                pool: pool.to_string(),
            },
        );
    }
}

/// A listener for one instance's Runtime API address, non-blocking, ready for a core's ring.
fn bind_instance_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(64)?;
    Ok(socket.into())
}

/// The variable that names an instance's Unix socket for the Runtime API: `@NAME`, an abstract
/// socket (`@` stands for the leading NUL byte an environment cannot carry). Set only by
/// executors whose instances share the server's network namespace (`unix_runtime_api`).
pub const UNIX_SOCKET_VAR: &str = "LAMBDA_RUNTIME_API_SOCKET";

/// The abstract name of instance `id`'s Runtime API socket: unique to this server run (`nonce`)
/// and instance, like its TCP address.
fn unix_socket_name(nonce: u64, id: InstanceId) -> String {
    format!("lambda-at-home/{nonce:016x}/{id}")
}

/// An abstract address is `sun_path` after its leading NUL: 107 bytes, the name padded with NULs.
/// The whole of `sun_path` is the address because Node 20's `net.connect` always passes all of it
/// (Python and newer Node pass what they are given, so the bundled clients pad the name).
const ABSTRACT_ADDRESS_BYTES: usize = 107;

/// A listener on the abstract Unix socket `name`, non-blocking, for a core's reactor. An abstract
/// name has no file: no path to create, protect, make visible in an instance's mount namespace or
/// remove; it goes away when the listener closes. Anyone in the network namespace may connect,
/// as to a loopback address: the core admits only the instance's uid (`SO_PEERCRED`,
/// `dataplane::identity`). A name already taken (by anything) fails the bind.
fn bind_unix_listener(name: &str) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::linux::net::SocketAddrExt;
    let mut address = name.as_bytes().to_vec();
    if address.len() > ABSTRACT_ADDRESS_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "abstract socket name too long",
        ));
    }
    address.resize(ABSTRACT_ADDRESS_BYTES, 0);
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&address)?;
    let listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// The time zone and locale every instance gets, as on AWS (`TZ=:UTC`); a runtime started ahead
/// of its function (`executor::docker_pool`) starts with them too, since its interpreter reads
/// them when it starts.
pub const INSTANCE_TZ: &str = ":UTC";
pub const INSTANCE_LANG: &str = "C.UTF-8";

/// AWS's environment for an instance, plus ours (LAMBDA_INSTANCE_ID, LAMBDA_USE_WEBSOCKET,
/// LAMBDA_RUNTIME_NAME), plus the function's own variables, which replace any but the server's
/// own (`SERVER_ENV_KEYS`). Path-dependent variables
/// (LAMBDA_TASK_ROOT, LAMBDA_RUNTIME_DIR, PATH, NODE_PATH, PYTHONPATH) are the executor's.
pub fn instance_env(
    f: &Function,
    runtime_api: SocketAddr,
    id: InstanceId,
    token: &str,
    use_websocket: bool,
    log_nonce: u64,
) -> Vec<(String, String)> {
    let c = &f.config;
    let date = utc_date_path();
    let mut env: Vec<(String, String)> = vec![
        ("AWS_LAMBDA_RUNTIME_API".into(), runtime_api.to_string()),
        ("AWS_LAMBDA_FUNCTION_NAME".into(), c.name.clone()),
        ("AWS_LAMBDA_FUNCTION_VERSION".into(), f.version.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".into(),
            c.memory_mb.to_string(),
        ),
        (
            "AWS_LAMBDA_FUNCTION_TIMEOUT".into(),
            c.timeout_s.to_string(),
        ),
        ("_HANDLER".into(), c.handler.clone()),
        ("AWS_REGION".into(), region().into()),
        ("AWS_DEFAULT_REGION".into(), region().into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME".into(),
            c.logging.group_for(&c.name),
        ),
        (
            "AWS_LAMBDA_LOG_STREAM_NAME".into(),
            log_stream_name(&date, &f.version, log_nonce, id),
        ),
        (
            "AWS_LAMBDA_LOG_FORMAT".into(),
            c.logging.log_format.as_str().into(),
        ),
        (
            "AWS_EXECUTION_ENV".into(),
            format!("AWS_Lambda_{}", c.runtime),
        ),
        ("AWS_LAMBDA_INITIALIZATION_TYPE".into(), "on-demand".into()),
        ("TZ".into(), INSTANCE_TZ.into()),
        ("LANG".into(), INSTANCE_LANG.into()),
        ("LAMBDA_INSTANCE_ID".into(), token.to_string()),
        ("LAMBDA_RUNTIME_NAME".into(), c.runtime.clone()),
        ("LAMBDA_USE_WEBSOCKET".into(), use_websocket.to_string()),
    ];
    if let Some(level) = c.logging.application_level() {
        env.push(("AWS_LAMBDA_LOG_LEVEL".into(), level.into()));
    }
    let ours = crate::control::api::functions::SERVER_ENV_KEYS;
    for (k, v) in c
        .environment
        .iter()
        .filter(|(k, _)| !ours.contains(&k.as_str()))
    {
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v.clone(),
            None => env.push((k.clone(), v.clone())),
        }
    }
    env
}

/// Today's date as `YYYY/MM/DD` (UTC), for log stream names.
fn utc_date_path() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = registry::civil_from_days((secs / 86_400) as i64);
    format!("{y:04}/{m:02}/{d:02}")
}
