//! Executors: how an instance (execution environment) is started, paused, resumed and killed.
//!
//! Runs on the control-plane thread only. The data plane never calls an executor: it asks the
//! control plane over a channel and learns the outcome from a message.
//!
//! Two local backends: `process` (a child process group on the host, the embedded default) and
//! `docker` (a hardened container through bollard). Both hand back the read end of a pipe (or
//! FIFO) that carries the instance's stdout and stderr; the instance's home core reads it, so the
//! log tail of an invocation is exact (see `dataplane::logs`). Two remote ones (`remote`):
//! `swarm` (a Swarm service per instance, on any node) and `agent` (its single-host form), whose
//! instances run `lah-agent`, fetch their code from the code endpoint and send their output over
//! their WebSocket link (`log` messages) instead of a pipe (docs/swarm.md).

pub mod agent_local;
pub mod cgroup;
pub mod docker;
pub mod docker_pool;
pub mod dynmods;
pub mod fork;
pub mod node_pool;
pub mod process;
pub mod remote;
pub mod sandbox;
pub mod swarm;

use std::future::Future;
use std::os::fd::OwnedFd;
use std::pin::Pin;

use crate::model::types::{ExitInfo, InstanceSpec};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("unsupported runtime {0:?}")]
    UnsupportedRuntime(String),
    #[error("cannot start instance: {0}")]
    Spawn(String),
    #[error("executor backend unavailable: {0}")]
    Unavailable(String),
    #[error("executor operation timed out after {0} ms")]
    Timeout(u64),
}

/// Where a function's layers put things under an `/opt` root, as AWS's runtimes look for them:
/// Python packages in `python` and `python/lib/pythonX.Y/site-packages`, Node modules in
/// `nodejs/node_modules`, programs in `bin`, shared libraries in `lib`.
pub struct LayerPaths {
    pub python: Vec<String>,
    pub node: Vec<String>,
    pub bin: String,
    pub lib: String,
}

impl LayerPaths {
    /// The layer paths under `opt` (the merged layers' directory, `/opt` in containers) for
    /// `runtime` (e.g. `python3.12`).
    pub fn under(opt: &str, runtime: &str) -> LayerPaths {
        let mut python = vec![format!("{opt}/python")];
        if runtime.starts_with("python") {
            python.insert(0, format!("{opt}/python/lib/{runtime}/site-packages"));
        }
        LayerPaths {
            python,
            node: vec![format!("{opt}/nodejs/node_modules")],
            bin: format!("{opt}/bin"),
            lib: format!("{opt}/lib"),
        }
    }
}

/// A backend that creates instances.
pub trait Executor: Send + Sync + 'static {
    /// `process` or `docker`: reported in logs and `/metrics`.
    fn name(&self) -> &'static str;

    /// Starts one instance and returns once its process or container runs (not once its runtime
    /// is ready: readiness is the runtime's first `/next`, which the data plane sees).
    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Box<dyn Instance>, ExecError>>;

    /// Whether its instances share the server's network namespace and run the bundled
    /// bootstraps there, so that an abstract Unix socket the server listens on reaches them
    /// (`LAMBDA_RUNTIME_API_SOCKET`). Containers and remote hosts do not get one.
    fn unix_runtime_api(&self) -> bool {
        false
    }

    /// Removes whatever an earlier run of this server left behind (containers by label).
    fn cleanup_orphans(&self) -> BoxFuture<'_, Result<usize, ExecError>> {
        Box::pin(async { Ok(0) })
    }

    /// The instances of pool `pool` (`NAME` or `NAME:N`) are stale (code or configuration
    /// changed, or the function or version was deleted): whatever the executor keeps for starting
    /// them (fork templates) goes. Called from the blocking pool; must not block for long.
    fn retire(&self, _pool: &str) {}

    /// The server is stopping and every instance has been killed: release what is left.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Where the executor gives back instance uids it took over from an instance's start (a fork
    /// template keeps the uid of the start that created it until it and its forks are gone);
    /// taken once by the control plane. `None`: the executor never keeps a uid.
    fn take_uid_returns(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<u32>> {
        None
    }

    /// Hands the executor the control plane's instance uids, for instances it prepares ahead of
    /// their start (the Docker pool's slots), and the switchboard its metrics live in.
    fn attach(
        &self,
        _uids: std::sync::Arc<std::sync::Mutex<crate::control::identity::UidPool>>,
        _shared: std::sync::Arc<crate::model::Switchboard>,
    ) {
    }
}

/// One running instance, owned by the control plane's task for it.
pub trait Instance: Send {
    /// The read end of the instance's stdout+stderr, handed once to the home core.
    fn take_log(&mut self) -> Option<OwnedFd>;

    /// Resolves when the instance has ended, however it ended.
    fn wait(&mut self) -> BoxFuture<'_, ExitInfo>;

    /// Ends the instance at once and releases everything it holds. Idempotent.
    fn kill(&mut self) -> BoxFuture<'_, ()>;

    /// Freezes an idle instance (SIGSTOP / docker pause); it keeps its connections.
    fn pause(&mut self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// Undoes `pause`.
    fn resume(&mut self) -> BoxFuture<'_, Result<(), ExecError>>;

    /// The uid every process of this instance runs as, when the executor guarantees that no
    /// other instance runs as it (`InstanceSpec::uid` was applied); `None`: unverifiable. It may
    /// differ from `InstanceSpec::uid` (a pooled container already ran under a uid of its own,
    /// taken from the shared `UidPool`): then the executor gave the spec's uid back, nothing ever
    /// ran under it, and this one is what the control plane gives back at the end.
    fn uid(&self) -> Option<u32> {
        None
    }

    /// Whether it is a fork of a template (`fork`): the uid it runs as is then its template's,
    /// shared with its siblings and outliving it, so its end neither kills what runs under that
    /// uid nor gives the uid back (the template's end does both).
    fn forked(&self) -> bool {
        false
    }

    /// Whether this start included work the function's next start will not repeat (the first
    /// instance of a fork template: its start ran the template's import and init, the next one
    /// is a fork of it). Its init time then says nothing about what another instance costs, and
    /// the scheduler does not take it as the function's start-cost estimate (`init_ns`).
    fn one_off_init(&self) -> bool {
        false
    }

    /// Whether the instance came from the Docker pool of started containers rather than a new
    /// start (`lah_executor_starts_total{kind="pooled"}`).
    fn pooled(&self) -> bool {
        false
    }

    /// The executor's ready instances for starts like this one, and whether this start took
    /// one (the Docker pool's started containers): the scheduler then estimates the function's
    /// next start as a ready one while one waits, and as an ordinary one otherwise. None: the
    /// executor keeps no ready instance for it, and every start counts alike.
    fn ready_start(&self) -> Option<crate::model::types::ReadyStart> {
        None
    }
}

/// Connects to the Docker daemon and checks the runtime images; an error says why Docker
/// cannot be used (the `auto` choice then falls back to the process executor).
pub async fn connect_docker(
    config: &crate::config::Config,
) -> Result<std::sync::Arc<dyn Executor>, ExecError> {
    let mut images = docker::DockerConfig::default_images();
    for spec in &config.images {
        let (family, image) = spec.split_once('=').ok_or_else(|| {
            ExecError::Unavailable(format!("--image wants FAMILY=IMAGE, got {spec:?}"))
        })?;
        images.insert(family.trim().to_string(), image.trim().to_string());
    }
    let server_id = format!("{:08x}", rand::random::<u32>());
    let docker = docker::DockerExecutor::connect(docker::DockerConfig {
        images,
        op_timeout_ms: docker::OP_TIMEOUT_MS_DEFAULT,
        server_id,
        owner: cgroup::data_dir_key(&config.data_dir),
        fifo_dir: std::path::absolute(config.data_dir.join("fifos"))
            .unwrap_or_else(|_| config.data_dir.join("fifos")),
        pool_mb: config.docker_pool_mb,
        pool_dir: std::path::absolute(config.data_dir.join("docker-pool"))
            .unwrap_or_else(|_| config.data_dir.join("docker-pool")),
    })
    .await?;
    let missing: Vec<String> = docker
        .check_images()
        .await
        .into_iter()
        .filter(|(_, _, present)| !present)
        .map(|(family, image, _)| format!("{family}={image}"))
        .collect();
    if !missing.is_empty() {
        return Err(ExecError::Unavailable(format!(
            "runtime images missing: {} (build them with runtimes/images/build.sh)",
            missing.join(", ")
        )));
    }
    Ok(std::sync::Arc::new(docker))
}

/// The code endpoint of remote instances (`remote`), on the Runtime API's address, and where
/// agents reach it and the Runtime API.
async fn remote_setup(
    config: &crate::config::Config,
) -> Result<(std::sync::Arc<remote::CodeServer>, String, String), ExecError> {
    let link = config.agent_link_addr().map_err(ExecError::Unavailable)?;
    let code_host = link
        .rsplit_once(':')
        .map(|(host, _)| host.to_string())
        .ok_or_else(|| {
            ExecError::Unavailable(format!("--agent-link wants HOST:PORT, got {link:?}"))
        })?;
    let bind = std::net::SocketAddr::new(config.runtime_bind_addr(), config.agent_code_port);
    let code = remote::CodeServer::bind(bind).await?;
    tracing::info!(%link, code = %code.addr(), "remote instances link to the Runtime API at {link}");
    Ok((code, link, code_host))
}

/// The `agent` executor: `lah-agent` processes on this host (`--agent-path`, default next to
/// the server's executable).
pub async fn connect_agent(
    config: &crate::config::Config,
) -> Result<std::sync::Arc<dyn Executor>, ExecError> {
    let (code, link, code_host) = remote_setup(config).await?;
    let agent = match &config.agent_path {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| {
                // Tests run from target/<profile>/deps: the agent is one folder up.
                exe.ancestors()
                    .skip(1)
                    .take(2)
                    .map(|d| d.join("lah-agent"))
                    .find(|p| p.is_file())
            })
            .unwrap_or_else(|| std::path::PathBuf::from("lah-agent")),
    };
    let dir = std::path::absolute(config.data_dir.join("agents"))
        .unwrap_or_else(|_| config.data_dir.join("agents"));
    let executor = agent_local::AgentExecutor::new(
        agent,
        dir,
        config.resolve_runtime_deps_dir(),
        link,
        code,
        code_host,
    )?;
    Ok(std::sync::Arc::new(executor))
}

/// The `swarm` executor: one service per instance on the Swarm whose manager `DOCKER_HOST` names.
pub async fn connect_swarm(
    config: &crate::config::Config,
) -> Result<std::sync::Arc<dyn Executor>, ExecError> {
    let mut images = swarm::default_images();
    for spec in &config.images {
        let (family, image) = spec.split_once('=').ok_or_else(|| {
            ExecError::Unavailable(format!("--image wants FAMILY=IMAGE, got {spec:?}"))
        })?;
        images.insert(family.trim().to_string(), image.trim().to_string());
    }
    let (code, link, code_host) = remote_setup(config).await?;
    let executor = swarm::SwarmExecutor::connect(
        swarm::SwarmConfig {
            images,
            server_id: format!("{:08x}", rand::random::<u32>()),
            owner: cgroup::data_dir_key(&config.data_dir),
            network: config.swarm_network.clone(),
            link,
            code_host,
        },
        code,
    )
    .await?;
    Ok(std::sync::Arc::new(executor))
}
