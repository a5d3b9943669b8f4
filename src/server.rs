//! Start-up and shutdown: binds the listeners, starts the control-plane thread, the event queue's
//! thread (which replays its log), the function log store's thread, the host CPU sampler and one
//! data-plane thread per core, and on SIGTERM/SIGINT
//! stops in order (stop accepting, let in-flight invocations finish within the grace period,
//! stop the event queue with the rest of its events on disk, stop every instance, exit).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ExecutorChoice, EVENT_INBOX_MAX};
use crate::control::executor::dynmods::{self, Enabled, FavorDynmods};
use crate::control::executor::process::ProcessExecutor;
use crate::control::executor::Executor;
use crate::control::registry::{Defaults, Registry};
use crate::control::ControlPlane;
use crate::dataplane::core;
use crate::logstore::disk::Bounds;
use crate::model::auth::AuthSetup;
use crate::model::logsink::{LogMsg, LogSink, LOG_INBOX_MAX};
use crate::model::{ControlMsg, CoreMsg, Switchboard};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot open the data dir {0}: {1}")]
    DataDir(String, String),
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("cannot start a thread: {0}")]
    Thread(std::io::Error),
    #[error("no usable executor: {0}")]
    Executor(String),
    #[error("{0}")]
    Auth(String),
}

/// A running server (also used by the end-to-end tests, which start it in-process).
pub struct Server {
    pub user_addr: SocketAddr,
    pub runtime_addr: SocketAddr,
    pub shared: Arc<Switchboard>,
    cores: Vec<JoinHandle<()>>,
    control: JoinHandle<()>,
    events_tx: mpsc::Sender<crate::model::EventMsg>,
    events: JoinHandle<()>,
    logs: JoinHandle<()>,
    /// The cgroup2 option this server turned on, turned off again at stop.
    dynmods: Option<FavorDynmods>,
}

/// Pending connections each core's listener queues before the kernel refuses more: room for a
/// burst of clients connecting at once while the core is busy.
const LISTEN_BACKLOG: i32 = 1024;
/// How often shutdown checks whether the in-flight invocations have finished during the grace
/// period: short, so shutdown is not held up long after the last one ends.
const IN_FLIGHT_POLL_MS: u64 = 10;
/// Milliseconds per day (`--log-retention-days`).
const DAY_MS: u64 = 86_400_000;

/// A SO_REUSEPORT listener: every core binds its own on the same port and the kernel spreads
/// connections across them.
fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// One listener per core on `addr`; port 0 picks a free port, shared by all cores.
fn bind_per_core(addr: SocketAddr, cores: usize) -> Result<Vec<TcpListener>, ServerError> {
    let first = reuseport_listener(addr).map_err(|e| ServerError::Bind(addr, e))?;
    let addr = first.local_addr().map_err(|e| ServerError::Bind(addr, e))?;
    let mut all = vec![first];
    for _ in 1..cores {
        all.push(reuseport_listener(addr).map_err(|e| ServerError::Bind(addr, e))?);
    }
    Ok(all)
}

impl Server {
    pub fn start(mut config: Config) -> Result<Server, ServerError> {
        crate::model::types::set_identity(&config.region, &config.account_id);
        // Decided before anything is bound, so a server that would run unprotected never listens.
        let auth = AuthSetup::from_config(&config).map_err(ServerError::Auth)?;
        let cores = config.core_count();
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            ServerError::DataDir(config.data_dir.display().to_string(), e.to_string())
        })?;
        let user = bind_per_core(SocketAddr::new(config.bind, config.user_api_port), cores)?;
        let runtime_ip = config.runtime_bind_addr();
        let runtime = bind_per_core(SocketAddr::new(runtime_ip, config.runtime_api_port), cores)?;
        let user_addr = user[0]
            .local_addr()
            .map_err(|e| ServerError::Bind(SocketAddr::new(config.bind, 0), e))?;
        let runtime_addr = runtime[0]
            .local_addr()
            .map_err(|e| ServerError::Bind(SocketAddr::new(runtime_ip, 0), e))?;
        config.user_api_port = user_addr.port();
        config.runtime_api_port = runtime_addr.port();

        let defaults = Defaults {
            timeout_s: config.default_timeout_s,
            memory_mb: config.default_memory_mb,
        };
        let registry = Registry::open(&config.data_dir, defaults).map_err(|e| {
            ServerError::DataDir(config.data_dir.display().to_string(), e.to_string())
        })?;
        let dynmods = favor_dynmods(&config);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (core_txs, core_rxs): (Vec<_>, Vec<_>) =
            (0..cores).map(|_| mpsc::unbounded_channel()).unzip();
        let auth_on = auth.credentials.is_some();
        match &auth.credentials {
            Some(keys) => tracing::info!(
                "User API authentication: on ({}); SigV4 signatures checked against {} access key(s)",
                auth.reason,
                keys.len()
            ),
            None if auth.credentials_unused => tracing::warn!(
                "User API authentication: off ({}); the configured credentials are not used (pass --auth on to check them)",
                auth.reason
            ),
            None => tracing::info!(
                "User API authentication: off ({}); anyone who can connect may manage and invoke functions",
                auth.reason
            ),
        }
        // Bounded: cores drop (and count) what does not fit instead of waiting (LOG_INBOX_MAX).
        let (logs_tx, logs_rx) = std::sync::mpsc::sync_channel(LOG_INBOX_MAX);
        let log_bounds = Bounds::new(
            config.log_bytes_max,
            config.log_retention_days.saturating_mul(DAY_MS),
        );
        let shared = Arc::new(
            Switchboard::new(Arc::new(config), registry.table(), core_txs, control_tx)
                .with_auth(auth.credentials)
                .with_logs(LogSink::new(logs_tx)),
        );
        let logs =
            crate::logstore::start(&shared.config.data_dir, log_bounds, shared.clone(), logs_rx)
                .map_err(|e| {
                    ServerError::DataDir(
                        shared.config.data_dir.display().to_string(),
                        format!("log store: {e}"),
                    )
                })?;
        let control = start_control(shared.clone(), registry, control_rx)?;
        // Only `--scale-out adaptive` reads it; it ends by itself once the switchboard is gone.
        if shared.config.scale_out == crate::config::ScaleOut::Adaptive {
            let _ = crate::model::hostcpu::spawn_sampler(std::sync::Arc::downgrade(
                &shared.metrics.host_cpu,
            ));
        }
        // Bounded: a core that finds it full answers 429 instead of waiting (EVENT_INBOX_MAX).
        let (events_tx, events_rx) = mpsc::channel(EVENT_INBOX_MAX);
        let events = crate::events::start(shared.clone(), events_rx).map_err(|e| {
            ServerError::DataDir(
                shared.config.data_dir.display().to_string(),
                format!("event log: {e}"),
            )
        })?;
        let mut handles = Vec::with_capacity(cores);
        for (i, ((u, r), rx)) in user.into_iter().zip(runtime).zip(core_rxs).enumerate() {
            let shared = shared.clone();
            let events_tx = events_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("core-{i}"))
                .spawn(move || core::run(i, shared, u, r, rx, events_tx))
                .map_err(ServerError::Thread)?;
            handles.push(h);
        }
        tracing::info!(
            %user_addr, %runtime_addr, cores, executor = shared.executor_name(), auth = auth_on,
            "Lambda@Home listening: User API http://{user_addr}, Runtime API http://{runtime_addr}"
        );
        Ok(Server {
            user_addr,
            runtime_addr,
            shared,
            cores: handles,
            control,
            events_tx,
            events,
            logs,
            dynmods,
        })
    }

    /// Stops in order and waits for every thread. Returns within grace + ~20 s at most.
    pub fn shutdown(self) {
        let shared = &self.shared;
        shared.shutting_down.store(true, Ordering::SeqCst);
        for core in 0..shared.cores.len() {
            shared.send_core(core, CoreMsg::StopAccepting);
        }
        let grace = Duration::from_secs(shared.config.shutdown_grace_s);
        let started = Instant::now();
        while shared.global_in_flight.load(Ordering::SeqCst) > 0 && started.elapsed() < grace {
            std::thread::sleep(Duration::from_millis(IN_FLIGHT_POLL_MS));
        }
        // The event queue started no attempt since `shutting_down`; it records the attempts
        // that ended and keeps the rest on disk for the next start.
        let (done, wait) = oneshot::channel();
        if self
            .events_tx
            .blocking_send(crate::model::EventMsg::Shutdown { done })
            .is_ok()
        {
            let _ = wait.blocking_recv();
        }
        let (done, wait) = oneshot::channel();
        shared.send_control(ControlMsg::Shutdown { done });
        let _ = wait.blocking_recv();
        for core in 0..shared.cores.len() {
            shared.send_core(core, CoreMsg::Exit);
        }
        for h in self.cores {
            let _ = h.join();
        }
        let _ = self.control.join();
        drop(self.events_tx);
        let _ = self.events.join();
        // Last: the cores and instances have said all they will (END lines, closed pipes).
        let (done, wait) = oneshot::channel();
        if shared.logs.send_blocking(LogMsg::Shutdown { done }).is_ok() {
            let _ = wait.blocking_recv();
        }
        let _ = self.logs.join();
        drop(self.dynmods);
        tracing::info!("Lambda@Home stopped");
    }
}

/// `--cgroup-favor-dynmods`: turns the option on when the server may (root), says what it did.
fn favor_dynmods(config: &Config) -> Option<FavorDynmods> {
    // SAFETY: geteuid has no preconditions.
    if !config.cgroup_favor_dynmods || unsafe { libc::geteuid() } != 0 {
        return None;
    }
    match dynmods::enable() {
        Ok(Enabled::Now(d)) => {
            tracing::info!(
                "cgroup2 option favordynmods turned on for {} until the server stops: moving a process into an instance's cgroup no longer waits for an RCU grace period",
                d.mount_point().display()
            );
            Some(d)
        }
        Ok(Enabled::Already(point)) => {
            tracing::info!(
                "cgroup2 option favordynmods already on for {}",
                point.display()
            );
            None
        }
        Err(e) => {
            tracing::info!("cgroup2 option favordynmods not set ({e}): each cgroup move waits for an RCU grace period");
            None
        }
    }
}

fn start_control(
    shared: Arc<Switchboard>,
    registry: Registry,
    rx: mpsc::UnboundedReceiver<ControlMsg>,
) -> Result<JoinHandle<()>, ServerError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let handle = std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let executor = match choose_executor(&shared).await {
                    Ok(e) => e,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = shared.executor_name.set(executor.name());
                match executor.cleanup_orphans().await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!("removed {n} instances left by an earlier run"),
                    Err(e) => tracing::warn!("cannot clean up earlier instances: {e}"),
                }
                let _ = ready_tx.send(Ok(()));
                ControlPlane::new(shared, registry, executor).run(rx).await;
            });
        })
        .map_err(ServerError::Thread)?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => Err(ServerError::Executor(e)),
        Err(_) => Err(ServerError::Executor("control thread died".into())),
    }
}

async fn choose_executor(shared: &Arc<Switchboard>) -> Result<Arc<dyn Executor>, String> {
    let config = &shared.config;
    let process = || {
        Arc::new(ProcessExecutor::new(
            config.resolve_runtime_deps_dir(),
            &config.data_dir,
            &config.resolve_runtimes_dir(),
            config.instance_uids > 0,
            config.fork_start,
            config.node_pool,
        )) as Arc<dyn Executor>
    };
    match config.executor {
        ExecutorChoice::Process => Ok(process()),
        ExecutorChoice::Agent => crate::control::executor::connect_agent(config)
            .await
            .map_err(|e| e.to_string()),
        ExecutorChoice::Swarm => crate::control::executor::connect_swarm(config)
            .await
            .map_err(|e| e.to_string()),
        ExecutorChoice::Docker => crate::control::executor::connect_docker(config)
            .await
            .map_err(|e| e.to_string()),
        ExecutorChoice::Auto => match crate::control::executor::connect_docker(config).await {
            Ok(docker) => {
                tracing::info!("executor: docker (a Docker daemon answered; --executor process to run instances as host processes)");
                Ok(docker)
            }
            Err(e) => {
                tracing::info!("executor: process (Docker unavailable: {e})");
                Ok(process())
            }
        },
    }
}
