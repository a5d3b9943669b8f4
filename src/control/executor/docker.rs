//! The `docker` executor: one hardened container per instance, through bollard.
//!
//! Owns the container's whole life: create (image by runtime family, host networking, read-only
//! root, no capabilities, memory and CPU shares from MemorySize), start, pause/unpause, wait,
//! kill and remove, plus the removal of containers an earlier run on the same data dir left behind
//! (label `lambda-at-home.data-dir`; other servers on the daemon are left alone). The
//! runtime's stdout+stderr go into a host FIFO bind-mounted into the container; its read end is
//! the instance's log (`take_log`). Every Docker call is bounded by `op_timeout_ms`, except the
//! wait for an instance's end. Containers are named `lah-<server_id>-<instance id>` and labelled
//! `lambda-at-home.*`. Images come from `runtimes/images/build.sh` (see its README).
//!
//! With `pool_mb` > 0 a start first tries the pool of started containers (`docker_pool`), which
//! builds its containers with the same hardening (`Hardened`) and hands back a `DockerInstance`
//! like this file's own; any failure there falls back to create + start here.

use std::collections::HashMap;
use std::ffi::CString;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::errors::Error as BollardError;
use bollard::models::{
    ContainerCreateBody, ContainerState, HostConfig, HostConfigLogConfig, Mount, MountTypeEnum,
    ResourcesUlimits, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;

use super::docker_pool::{self, Pool};
use super::{BoxFuture, ExecError, Executor, Instance, LayerPaths};
use crate::control::identity::UidPool;
use crate::model::types::{ExitInfo, InstanceSpec, ReadyStart};

/// Default bound of every Docker call.
pub const OP_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Images built by `runtimes/images/build.sh`.
pub const IMAGE_PYTHON: &str = "lambda-at-home/python:bookworm";
pub const IMAGE_NODEJS: &str = "lambda-at-home/nodejs:bookworm";
pub const IMAGE_PROVIDED: &str = "lambda-at-home/provided:bookworm";

pub const LABEL_SERVER: &str = "lambda-at-home.server";
/// Which data dir's server made the container (`DockerConfig::owner`): what start-up cleanup
/// removes, so that two servers with different data dirs on one host leave each other alone.
pub const LABEL_OWNER: &str = "lambda-at-home.data-dir";
pub const LABEL_FUNCTION: &str = "lambda-at-home.function";
pub const LABEL_VERSION: &str = "lambda-at-home.version";
pub const LABEL_INSTANCE: &str = "lambda-at-home.instance";

pub(super) const TASK_ROOT: &str = "/var/task";
pub(super) const RUNTIME_ROOT: &str = "/var/runtime";
/// Where the log FIFO appears inside the container.
pub(super) const LOG_FIFO_TARGET: &str = "/var/log/lambda/out";
/// Sends the runtime's stdout and stderr into the FIFO, then becomes the runtime (PID 1).
const LOG_WRAPPER: &str = "exec \"$@\" >/var/log/lambda/out 2>&1";
/// Lambda's PATH, so registry images (which keep their runtime in /var/lang) work too.
const CONTAINER_PATH: &str = "/var/lang/bin:/usr/local/bin:/usr/bin:/bin:/opt/bin";
/// Where Debian's node packages (node-ws) live, then the function's own modules.
const CONTAINER_NODE_PATH: &str =
    "/usr/share/nodejs:/usr/lib/x86_64-linux-gnu/nodejs:/var/task/node_modules";
/// Where the Python image keeps `websockets` (outside `/opt`, which layers own).
const IMAGE_PYTHON_PATH: &str = "/var/lang/lambda-at-home/python";
/// Where the function's merged layers are mounted, as on AWS.
pub(super) const LAYERS_ROOT: &str = "/opt";

/// Instances without an identity of their own (`InstanceSpec::uid` is `None`) run as this
/// unprivileged uid:gid (the images name it `sbx_user`); with one, as their uid:uid.
pub(super) const CONTAINER_UID: u32 = 1000;
pub(super) const CONTAINER_GID: u32 = 1000;
/// /tmp is a tmpfs of AWS's default ephemeral storage size; programs may run from it.
const TMP_MOUNT_OPTIONS: &str = "rw,exec,nosuid,nodev,size=512m,mode=1777";
const PIDS_MAX: i64 = 1024;
/// Lambda's quota of file descriptors per execution environment.
const NOFILE_MAX: i64 = 1024;
/// Lambda gives one full vCPU at 1769 MB; CPU shares scale with memory like it.
const CPU_SHARES_PER_VCPU: i64 = 1024;
const MEMORY_MB_PER_VCPU: i64 = 1769;
/// Docker's smallest accepted cpu_shares value.
const CPU_SHARES_MIN: i64 = 2;
const MIB_BYTES: i64 = 1024 * 1024;

/// Pause between attempts when waiting on a container fails for a reason other than its end.
const WAIT_RETRY_MS: u64 = 1_000;
/// Consecutive failed wait attempts after which the instance is reported as ended.
const WAIT_FAILURES_MAX: u32 = 60;
/// Docker reports a process killed by signal N as exit code 128 + N.
const SIGNAL_EXIT_BASE: i64 = 128;
const SIGNAL_MAX: i64 = 31;

/// How the docker executor runs containers.
#[derive(Clone, Debug)]
pub struct DockerConfig {
    /// Image tag per runtime family: `python`, `nodejs`, `provided`.
    pub images: HashMap<String, String>,
    /// Bound of every Docker call (default `OP_TIMEOUT_MS_DEFAULT`).
    pub op_timeout_ms: u64,
    /// Value of the `lambda-at-home.server` label and part of container names.
    pub server_id: String,
    /// Value of the `lambda-at-home.data-dir` label: stable per data dir (a hash of its path), so
    /// the next start on the same data dir finds what a crashed run left, and only that.
    pub owner: String,
    /// Where per-instance log FIFOs are created (created if missing).
    pub fifo_dir: PathBuf,
    /// Total memory size (MB) of the idle pool slots (`--docker-pool-mb`); 0: no pool.
    pub pool_mb: u64,
    /// Where the pool keeps its slots' directories and mounts (`docker_pool`).
    pub pool_dir: PathBuf,
}

impl DockerConfig {
    /// The images `runtimes/images/build.sh` builds, by runtime family.
    pub fn default_images() -> HashMap<String, String> {
        [
            ("python", IMAGE_PYTHON),
            ("nodejs", IMAGE_NODEJS),
            ("provided", IMAGE_PROVIDED),
        ]
        .into_iter()
        .map(|(family, image)| (family.to_string(), image.to_string()))
        .collect()
    }
}

/// Why one Docker call failed: kept apart from `ExecError` so callers can treat "no such
/// container" or "not running" as the expected outcomes they often are.
#[derive(Debug, thiserror::Error)]
pub(super) enum CallError {
    #[error("docker call timed out after {0} ms")]
    Timeout(u64),
    #[error(transparent)]
    Docker(#[from] BollardError),
}

impl CallError {
    /// The HTTP status of Docker's answer, when it answered with an error.
    pub(super) fn status(&self) -> Option<u16> {
        match self {
            CallError::Docker(BollardError::DockerResponseServerError { status_code, .. }) => {
                Some(*status_code)
            }
            _ => None,
        }
    }

    pub(super) fn into_exec(self, what: &str) -> ExecError {
        match self {
            CallError::Timeout(ms) => ExecError::Timeout(ms),
            CallError::Docker(BollardError::DockerResponseServerError { message, .. }) => {
                ExecError::Spawn(format!("{what}: {message}"))
            }
            CallError::Docker(other) => ExecError::Unavailable(format!("{what}: {other}")),
        }
    }
}

/// Runs one Docker call with the executor's bound.
pub(super) async fn bounded<T>(
    op_timeout_ms: u64,
    call: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(Duration::from_millis(op_timeout_ms), call).await {
        Ok(result) => result.map_err(CallError::from),
        Err(_) => Err(CallError::Timeout(op_timeout_ms)),
    }
}

/// The runtime family of a Lambda runtime name (`python3.12` → `python`), if we run it.
pub fn runtime_family(runtime: &str) -> Option<&'static str> {
    if runtime.starts_with("python3") {
        Some("python")
    } else if runtime.starts_with("nodejs") {
        Some("nodejs")
    } else if runtime.starts_with("provided") {
        Some("provided")
    } else {
        None
    }
}

/// The runtime's command inside the container, by family.
pub(super) fn runtime_command(family: &str) -> Vec<String> {
    let cmd: &[&str] = match family {
        "python" => &["python3", "/var/runtime/python/bootstrap.py"],
        "nodejs" => &["node", "/var/runtime/node/bootstrap.js"],
        _ => &["/var/task/bootstrap"],
    };
    cmd.iter().map(|s| s.to_string()).collect()
}

/// `lah-<server_id>-<instance id>`, with whatever Docker refuses in a name replaced by `-`.
pub(super) fn container_name(server_id: &str, instance: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    format!("lah-{}-{}", clean(server_id), clean(instance))
}

/// CPU shares proportional to memory, one vCPU (1024 shares) at 1769 MB.
pub(super) fn cpu_shares(memory_mb: u32) -> i64 {
    (CPU_SHARES_PER_VCPU * i64::from(memory_mb) / MEMORY_MB_PER_VCPU).max(CPU_SHARES_MIN)
}

/// `spec.env` plus the variables that depend on the container's layout; ours win.
pub(super) fn container_env(spec_env: &[(String, String)], runtime: &str) -> Vec<String> {
    let layers = LayerPaths::under(LAYERS_ROOT, runtime);
    let python_path = [
        vec![TASK_ROOT.to_string()],
        layers.python,
        vec![IMAGE_PYTHON_PATH.to_string()],
    ]
    .concat()
    .join(":");
    let node_path = [CONTAINER_NODE_PATH.to_string(), layers.node.join(":")].join(":");
    let ours = [
        ("LAMBDA_TASK_ROOT", TASK_ROOT.to_string()),
        ("LAMBDA_RUNTIME_DIR", RUNTIME_ROOT.to_string()),
        ("PYTHONPATH", python_path),
        ("NODE_PATH", node_path),
        ("PATH", CONTAINER_PATH.to_string()),
        ("LD_LIBRARY_PATH", layers.lib),
        ("HOME", "/tmp".to_string()),
        ("PYTHONUNBUFFERED", "1".to_string()),
    ];
    spec_env
        .iter()
        // A key with `=` (or none) cannot be expressed as Docker's `KEY=value`.
        .filter(|(k, _)| !k.is_empty() && !k.contains('='))
        .filter(|(k, _)| !ours.iter().any(|(o, _)| o == k))
        .map(|(k, v)| format!("{k}={v}"))
        .chain(ours.iter().map(|(k, v)| format!("{k}={v}")))
        .collect()
}

pub(super) fn bind_mount(source: &Path, target: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(target.to_string()),
        source: Some(source.to_string_lossy().into_owned()),
        typ: Some(MountTypeEnum::BIND),
        read_only: Some(read_only),
        ..Default::default()
    }
}

/// Code and runtimes read-only, the log FIFO, and the merged layers read-only at `/opt`.
fn mounts(spec: &InstanceSpec, fifo: &Path) -> Vec<Mount> {
    let mut mounts = vec![
        bind_mount(spec.function.code_dir(), TASK_ROOT, true),
        bind_mount(&spec.runtimes_dir, RUNTIME_ROOT, true),
        bind_mount(fifo, LOG_FIFO_TARGET, false),
    ];
    if let Some(opt) = spec.function.opt_dir() {
        mounts.push(bind_mount(opt, LAYERS_ROOT, true));
    }
    mounts
}

/// The hardened container of one instance.
fn container_body(
    spec: &InstanceSpec,
    image: &str,
    family: &str,
    fifo: &Path,
    server: &DockerConfig,
) -> ContainerCreateBody {
    let config = &spec.function.config;
    let labels = HashMap::from([
        (LABEL_SERVER.to_string(), server.server_id.clone()),
        (LABEL_OWNER.to_string(), server.owner.clone()),
        (LABEL_FUNCTION.to_string(), config.name.clone()),
        (LABEL_VERSION.to_string(), spec.function.version.clone()),
        (LABEL_INSTANCE.to_string(), spec.id.to_string()),
    ]);
    let entrypoint = ["/bin/sh", "-c", LOG_WRAPPER, "sh"];
    Hardened {
        image,
        memory_mb: config.memory_mb,
        user: user_of(spec),
        labels,
        mounts: mounts(spec, fifo),
        entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
        cmd: runtime_command(family),
        env: container_env(&spec.env, &spec.function.config.runtime),
    }
    .body()
}

/// What differs between the containers this executor creates (an instance's own, or a pool
/// slot's); everything else is the same hardening for all of them (`Hardened::body`).
pub(super) struct Hardened<'a> {
    pub image: &'a str,
    pub memory_mb: u32,
    pub user: (u32, u32),
    pub labels: HashMap<String, String>,
    pub mounts: Vec<Mount>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
}

impl Hardened<'_> {
    /// Host networking, read-only root, no capabilities, no new privileges, memory (no swap) and
    /// CPU shares from the memory size, pids and file limits, no Docker log, never restarted.
    pub fn body(self) -> ContainerCreateBody {
        let memory_bytes = i64::from(self.memory_mb) * MIB_BYTES;
        let host_config = HostConfig {
            network_mode: Some("host".to_string()),
            readonly_rootfs: Some(true),
            cap_drop: Some(vec!["ALL".to_string()]),
            security_opt: Some(vec!["no-new-privileges".to_string()]),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_string(),
                TMP_MOUNT_OPTIONS.to_string(),
            )])),
            memory: Some(memory_bytes),
            // Equal to memory: no swap, as on Lambda.
            memory_swap: Some(memory_bytes),
            cpu_shares: Some(cpu_shares(self.memory_mb)),
            pids_limit: Some(PIDS_MAX),
            ulimits: Some(vec![ResourcesUlimits {
                name: Some("nofile".to_string()),
                soft: Some(NOFILE_MAX),
                hard: Some(NOFILE_MAX),
            }]),
            mounts: Some(self.mounts),
            // The runtime writes into the FIFO: Docker's own log would stay empty.
            log_config: Some(HostConfigLogConfig {
                typ: Some("none".to_string()),
                config: None,
            }),
            // An instance that ends is replaced by the control plane, never restarted; we remove
            // it.
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            auto_remove: Some(false),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(self.image.to_string()),
            entrypoint: Some(self.entrypoint),
            cmd: Some(self.cmd),
            env: Some(self.env),
            working_dir: Some(TASK_ROOT.to_string()),
            user: Some(format!("{}:{}", self.user.0, self.user.1)),
            labels: Some(self.labels),
            host_config: Some(host_config),
            ..Default::default()
        }
    }
}

/// The uid and gid the container's processes run as: the instance's own identity, or the images'
/// unprivileged user.
fn user_of(spec: &InstanceSpec) -> (u32, u32) {
    spec.uid
        .map(|uid| (uid, uid))
        .unwrap_or((CONTAINER_UID, CONTAINER_GID))
}

/// What Docker's final state of a container says about how its process ended.
fn exit_info(state: &ContainerState) -> ExitInfo {
    let oom_killed = state.oom_killed.unwrap_or(false);
    match state.exit_code {
        Some(code) if (SIGNAL_EXIT_BASE + 1..=SIGNAL_EXIT_BASE + SIGNAL_MAX).contains(&code) => {
            ExitInfo {
                code: None,
                signal: i32::try_from(code - SIGNAL_EXIT_BASE).ok(),
                oom_killed,
            }
        }
        Some(code) => ExitInfo {
            code: i32::try_from(code).ok(),
            signal: None,
            oom_killed,
        },
        None => ExitInfo {
            code: None,
            signal: None,
            oom_killed,
        },
    }
}

fn killed_exit() -> ExitInfo {
    ExitInfo {
        code: None,
        signal: Some(libc::SIGKILL),
        oom_killed: false,
    }
}

/// `check_readable_by` for the images' default user.
#[cfg(test)]
fn check_readable_by_container(dir: &Path) -> Result<(), ExecError> {
    check_readable_by(dir, (CONTAINER_UID, CONTAINER_GID))
}

/// Bind mounts keep the host's permissions: the runtime (`uid`:`gid`) must be able to list and
/// read the code and runtime folders, or it dies at start with a bare "Permission denied".
pub(super) fn check_readable_by(dir: &Path, (uid, gid): (u32, u32)) -> Result<(), ExecError> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        std::fs::metadata(dir).map_err(|e| ExecError::Spawn(format!("{}: {e}", dir.display())))?;
    let mode = meta.mode();
    let readable = if meta.uid() == uid {
        mode & 0o500 == 0o500
    } else if meta.gid() == gid {
        mode & 0o050 == 0o050
    } else {
        mode & 0o005 == 0o005
    };
    if !meta.is_dir() || !readable {
        return Err(ExecError::Spawn(format!(
            "{} must be a directory readable by uid {uid} (mode {:o})",
            dir.display(),
            mode & 0o7777
        )));
    }
    Ok(())
}

/// The host side of an instance's log FIFO.
pub(super) struct LogFifo {
    pub path: PathBuf,
    /// Handed to the data plane by `take_log`.
    pub read: OwnedFd,
    /// Held until the instance ends, so a reader never sees EOF before the container has opened
    /// the FIFO for writing (a FIFO without writers reads as EOF).
    pub hold: OwnedFd,
}

impl LogFifo {
    pub fn create(dir: &Path, name: &str, user: (u32, u32)) -> io::Result<LogFifo> {
        let path = dir.join(format!("{name}.fifo"));
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let fifo = Self::open(path.clone(), user);
        if fifo.is_err() {
            let _ = std::fs::remove_file(&path);
        }
        fifo
    }

    fn open(path: PathBuf, (uid, gid): (u32, u32)) -> io::Result<LogFifo> {
        // The container's user must be able to open it for writing; without the right to chown
        // (a non-root server) other users may write it, but nobody else may read it (and its
        // directory is the server's alone).
        match std::os::unix::fs::chown(&path, Some(uid), Some(gid)) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o622))?;
            }
            Err(e) => return Err(e),
        }
        // Non-blocking: opening the read end must not wait for a writer, and the data plane
        // reads it non-blocking.
        let read = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)?;
        let hold = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)?;
        Ok(LogFifo {
            path,
            read: read.into(),
            hold: hold.into(),
        })
    }

    /// The container keeps its own reference through the bind mount; the name is not needed
    /// once the container runs.
    pub fn unlink(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), "cannot remove log fifo: {e}");
            }
        }
    }
}

/// Creates instances as Docker containers.
pub struct DockerExecutor {
    pub(super) docker: Docker,
    pub(super) config: DockerConfig,
    /// Started containers waiting for a function (`docker_pool`); None: `pool_mb` is 0.
    pool: Option<Arc<Pool>>,
}

impl DockerExecutor {
    /// Connects (unix socket /var/run/docker.sock or DOCKER_HOST) and pings within a bounded time;
    /// Err(ExecError::Unavailable) if no daemon answers.
    pub async fn connect(config: DockerConfig) -> Result<Self, ExecError> {
        Self::connect_client(Docker::connect_with_defaults(), config).await
    }

    /// Negotiates the API version (the daemon may be older than bollard) and pings.
    async fn connect_client(
        docker: Result<Docker, BollardError>,
        config: DockerConfig,
    ) -> Result<Self, ExecError> {
        let docker = docker.map_err(|e| ExecError::Unavailable(format!("docker client: {e}")))?;
        let ms = config.op_timeout_ms;
        let unavailable = |e: CallError| match e {
            CallError::Timeout(ms) => {
                ExecError::Unavailable(format!("docker daemon did not answer within {ms} ms"))
            }
            other => ExecError::Unavailable(format!("docker daemon: {other}")),
        };
        let docker = bounded(ms, docker.negotiate_version())
            .await
            .map_err(unavailable)?;
        bounded(ms, docker.ping()).await.map_err(unavailable)?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.fifo_dir)
            .map_err(|e| {
                ExecError::Unavailable(format!("fifo dir {}: {e}", config.fifo_dir.display()))
            })?;
        let pool = (config.pool_mb > 0).then(|| Pool::new(docker.clone(), config.clone()));
        Ok(DockerExecutor {
            docker,
            config,
            pool,
        })
    }

    /// The pool, for its tests.
    #[cfg(test)]
    pub(super) fn pool(&self) -> Option<&Arc<Pool>> {
        self.pool.as_ref()
    }

    /// Whether the image for each runtime family exists locally: (family, image, present),
    /// sorted by family.
    pub async fn check_images(&self) -> Vec<(String, String, bool)> {
        let mut images: Vec<_> = self.config.images.iter().collect();
        images.sort();
        let mut out = Vec::with_capacity(images.len());
        for (family, image) in images {
            let present = bounded(self.config.op_timeout_ms, self.docker.inspect_image(image))
                .await
                .is_ok();
            out.push((family.clone(), image.clone(), present));
        }
        out
    }

    async fn start_instance(&self, spec: InstanceSpec) -> Result<DockerInstance, ExecError> {
        let runtime = &spec.function.config.runtime;
        let family = runtime_family(runtime)
            .ok_or_else(|| ExecError::UnsupportedRuntime(runtime.clone()))?;
        let image = self.config.images.get(family).ok_or_else(|| {
            ExecError::UnsupportedRuntime(format!("{runtime} (no image for {family})"))
        })?;
        let mut ready = None;
        if let Some(pool) = &self.pool {
            let (claimed, slots) = pool.claim(&spec, family, image).await;
            if let Some(instance) = claimed {
                return Ok(instance.ready_from(slots));
            }
            ready = slots;
        }
        let user = user_of(&spec);
        for dir in [spec.function.code_dir(), spec.runtimes_dir.as_path()] {
            check_readable_by(dir, user)?;
        }
        let name = container_name(&self.config.server_id, &spec.id.to_string());
        let fifo = LogFifo::create(&self.config.fifo_dir, &name, user).map_err(|e| {
            ExecError::Spawn(format!(
                "log fifo in {}: {e}",
                self.config.fifo_dir.display()
            ))
        })?;
        let body = container_body(&spec, image, family, &fifo.path, &self.config);
        let ms = self.config.op_timeout_ms;
        let started = create_and_start(&self.docker, ms, &name, image, body).await;
        fifo.unlink();
        started?;
        Ok(
            DockerInstance::new(self.docker.clone(), name, ms, fifo, spec.uid, None)
                .ready_from(ready),
        )
    }

    async fn remove_orphans(&self) -> Result<usize, ExecError> {
        let ms = self.config.op_timeout_ms;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_OWNER}={}", self.config.owner)],
            )])),
            ..Default::default()
        };
        let containers = bounded(ms, self.docker.list_containers(Some(options)))
            .await
            .map_err(|e| e.into_exec("list containers"))?;
        let removals = containers
            .iter()
            .filter_map(|c| c.id.as_deref())
            .map(|id| remove_container(&self.docker, id, ms));
        let removed = futures_util::future::join_all(removals)
            .await
            .into_iter()
            .filter(|r| matches!(r, Ok(true)))
            .count();
        self.remove_stale_fifos();
        docker_pool::remove_stale_slots(&self.config.pool_dir);
        Ok(removed)
    }

    /// FIFOs of instances whose start was interrupted (the server died between mkfifo and start).
    fn remove_stale_fifos(&self) {
        let Ok(entries) = std::fs::read_dir(&self.config.fifo_dir) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("lah-") && name.ends_with(".fifo") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Creates and starts container `name`; on failure nothing of it is left.
pub(super) async fn create_and_start(
    docker: &Docker,
    ms: u64,
    name: &str,
    image: &str,
    body: ContainerCreateBody,
) -> Result<(), ExecError> {
    let options = || CreateContainerOptions {
        name: Some(name.to_string()),
        platform: String::new(),
    };
    let created = match bounded(ms, docker.create_container(Some(options()), body.clone())).await {
        // A container of an earlier run with the same server id and instance id.
        Err(e) if e.status() == Some(409) => {
            remove_container(docker, name, ms).await?;
            bounded(ms, docker.create_container(Some(options()), body)).await
        }
        other => other,
    };
    match created {
        Err(e) if e.status() == Some(404) => {
            return Err(ExecError::Spawn(format!(
                "image {image} not found locally: build it with runtimes/images/build.sh ({})",
                e.into_exec("create")
            )));
        }
        other => other.map_err(|e| e.into_exec("create container"))?,
    };
    if let Err(e) = bounded(
        ms,
        docker.start_container(
            name,
            None::<bollard::query_parameters::StartContainerOptions>,
        ),
    )
    .await
    {
        // Nothing runs; leave nothing behind.
        let _ = remove_container(docker, name, ms).await;
        return Err(e.into_exec("start container"));
    }
    Ok(())
}

/// Force-removes a container: Ok(true) if removed now, Ok(false) if it was already gone.
pub(super) async fn remove_container(
    docker: &Docker,
    name: &str,
    ms: u64,
) -> Result<bool, ExecError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match bounded(ms, docker.remove_container(name, Some(options))).await {
        Ok(()) => Ok(true),
        // 404: gone; 409: "removal already in progress" (another kill or the orphan sweep).
        Err(e) if matches!(e.status(), Some(404) | Some(409)) => Ok(false),
        Err(e) => Err(e.into_exec("remove container")),
    }
}

impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Box<dyn Instance>, ExecError>> {
        Box::pin(async move {
            let instance = self.start_instance(spec).await?;
            Ok(Box::new(instance) as Box<dyn Instance>)
        })
    }

    fn cleanup_orphans(&self) -> BoxFuture<'_, Result<usize, ExecError>> {
        Box::pin(self.remove_orphans())
    }

    fn attach(&self, uids: Arc<Mutex<UidPool>>, shared: Arc<crate::model::Switchboard>) {
        if let Some(pool) = &self.pool {
            pool.share_uids(uids);
            pool.report_to(shared);
        }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(pool) = &self.pool {
                pool.shutdown().await;
            }
        })
    }
}

/// One running container.
pub struct DockerInstance {
    docker: Docker,
    name: String,
    op_timeout_ms: u64,
    log: Option<OwnedFd>,
    /// Our write end of the log FIFO (see `LogFifo::hold`); dropped once the instance ended.
    hold: Option<OwnedFd>,
    /// Known once the container ended or was killed.
    exit: Option<ExitInfo>,
    /// The container no longer exists.
    removed: bool,
    /// Its own uid, when it has one (Docker runs it as that user whether or not we are root).
    uid: Option<u32>,
    /// The pool slot's directory, when the container came from the pool: its mounts are undone
    /// and it is removed once the container is gone.
    slot_dir: Option<PathBuf>,
    /// Our end of a pool slot's wake-up FIFO, held until the instance ended: a runtime started
    /// ahead (`docker_pool`) may open the FIFO only after the claim wrote to it, and what was
    /// written to a FIFO is lost once no descriptor of it is open.
    wake: Option<OwnedFd>,
    /// The pool's idle slots of the key this instance's spec has (`Pool::claim`): None when
    /// the pool is off or could not serve the spec (`Instance::ready_start`).
    ready: Option<Arc<AtomicU32>>,
}

impl DockerInstance {
    pub(super) fn new(
        docker: Docker,
        name: String,
        op_timeout_ms: u64,
        fifo: LogFifo,
        uid: Option<u32>,
        slot_dir: Option<PathBuf>,
    ) -> DockerInstance {
        DockerInstance {
            docker,
            name,
            op_timeout_ms,
            log: Some(fifo.read),
            hold: Some(fifo.hold),
            exit: None,
            removed: false,
            uid,
            slot_dir,
            wake: None,
            ready: None,
        }
    }

    /// Remembers the pool's idle slots of the instance's key (`Instance::ready_start`).
    pub(super) fn ready_from(mut self, slots: Option<Arc<AtomicU32>>) -> DockerInstance {
        self.ready = slots;
        self
    }

    /// Holds a pool slot's wake-up FIFO open until the instance ended (see `wake`).
    pub(super) fn holding_wake(mut self, go: OwnedFd) -> DockerInstance {
        self.wake = Some(go);
        self
    }

    async fn wait_exit(&mut self) -> ExitInfo {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        self.wait_not_running().await;
        let exit = match self.inspect_state().await {
            Ok(Some(state)) => exit_info(&state),
            Ok(None) => killed_exit(),
            Err(e) => {
                tracing::warn!(container = %self.name, "inspect after exit: {e}");
                ExitInfo {
                    code: None,
                    signal: None,
                    oom_killed: false,
                }
            }
        };
        self.exit = Some(exit.clone());
        self.release().await;
        exit
    }

    /// Returns once the container is not running (or gone, or Docker kept failing).
    async fn wait_not_running(&self) {
        let mut failures = 0;
        loop {
            let mut stream = std::pin::pin!(self
                .docker
                .wait_container(&self.name, None::<WaitContainerOptions>));
            match stream.next().await {
                Some(Ok(_)) | Some(Err(BollardError::DockerContainerWaitError { .. })) => return,
                Some(Err(BollardError::DockerResponseServerError {
                    status_code: 404, ..
                })) => return,
                Some(Err(e)) => tracing::warn!(container = %self.name, "docker wait: {e}"),
                None => {
                    tracing::warn!(container = %self.name, "docker wait ended without a status")
                }
            }
            // The wait broke off (daemon restart, connection reset): is the container still up?
            if let Ok(Some(ContainerState {
                running: Some(false),
                ..
            })) = self.inspect_state().await
            {
                return;
            }
            failures += 1;
            if failures >= WAIT_FAILURES_MAX {
                tracing::error!(container = %self.name, "giving up waiting on the container");
                return;
            }
            tokio::time::sleep(Duration::from_millis(WAIT_RETRY_MS)).await;
        }
    }

    /// The container's state; Ok(None) when it no longer exists.
    async fn inspect_state(&self) -> Result<Option<ContainerState>, ExecError> {
        let options = None::<bollard::query_parameters::InspectContainerOptions>;
        match bounded(
            self.op_timeout_ms,
            self.docker.inspect_container(&self.name, options),
        )
        .await
        {
            Ok(inspect) => Ok(Some(inspect.state.unwrap_or_default())),
            Err(e) if e.status() == Some(404) => Ok(None),
            Err(e) => Err(e.into_exec("inspect container")),
        }
    }

    async fn kill_now(&mut self) {
        if self.removed {
            return;
        }
        let kill = self
            .docker
            .kill_container(&self.name, None::<KillContainerOptions>);
        let killed = bounded(self.op_timeout_ms, kill).await;
        match killed {
            _ if self.exit.is_some() => {}
            Ok(()) => self.exit = Some(killed_exit()),
            // 409: not running; it ended by itself, so its own exit status is the truth.
            Err(e) if e.status() == Some(409) => {
                self.exit = match self.inspect_state().await {
                    Ok(Some(state)) if state.running != Some(true) => Some(exit_info(&state)),
                    // Running yet refused (e.g. paused, on daemons that refuse that): the
                    // forced removal below kills it.
                    _ => Some(killed_exit()),
                };
            }
            Err(e) => {
                if e.status() != Some(404) {
                    tracing::warn!(container = %self.name, "docker kill: {e}");
                }
                self.exit = Some(killed_exit());
            }
        }
        self.release().await;
    }

    /// Removes the container and closes our end of the log FIFO, so its reader sees EOF.
    async fn release(&mut self) {
        self.hold = None;
        self.wake = None;
        if self.removed {
            return;
        }
        match remove_container(&self.docker, &self.name, self.op_timeout_ms).await {
            Ok(_) => {
                self.removed = true;
                if let Some(dir) = self.slot_dir.take() {
                    docker_pool::remove_slot_dir(&dir);
                }
            }
            // Left for the next attempt, `Drop`, or the orphan sweep of the next start.
            Err(e) => tracing::warn!(container = %self.name, "{e}"),
        }
    }
}

impl Instance for DockerInstance {
    fn take_log(&mut self) -> Option<OwnedFd> {
        self.log.take()
    }

    fn wait(&mut self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(self.wait_exit())
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(self.kill_now())
    }

    fn pause(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            bounded(self.op_timeout_ms, self.docker.pause_container(&self.name))
                .await
                .map_err(|e| e.into_exec("pause container"))
        })
    }

    fn resume(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            bounded(
                self.op_timeout_ms,
                self.docker.unpause_container(&self.name),
            )
            .await
            .map_err(|e| e.into_exec("unpause container"))
        })
    }

    fn uid(&self) -> Option<u32> {
        self.uid
    }

    fn pooled(&self) -> bool {
        self.slot_dir.is_some()
    }

    fn ready_start(&self) -> Option<ReadyStart> {
        self.ready.clone().map(|slots| ReadyStart {
            slots,
            took_one: self.pooled(),
        })
    }
}

impl Drop for DockerInstance {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Dropped without kill() or a finished wait(): remove the container in the background
        // when a runtime is there to do it; otherwise the next start's orphan sweep does.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let name = std::mem::take(&mut self.name);
            let ms = self.op_timeout_ms;
            let slot_dir = self.slot_dir.take();
            handle.spawn(async move {
                match remove_container(&docker, &name, ms).await {
                    Ok(_) => {
                        if let Some(dir) = slot_dir {
                            docker_pool::remove_slot_dir(&dir);
                        }
                    }
                    Err(e) => tracing::warn!(container = %name, "{e}"),
                }
            });
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::types::{Function, FunctionConfig, InstanceId};
    use std::collections::BTreeMap;
    use std::io::Read;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use tempfile::TempDir;

    /// Tests that touch the daemon run one at a time: `cleanup_orphans` removes every
    /// lambda-at-home container, including the other tests' ones.
    pub(crate) static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);
    const TEST_WAIT_S: u64 = 60;

    fn docker_required() -> bool {
        std::env::var("LAH_REQUIRE_DOCKER").is_ok_and(|v| !v.is_empty() && v != "0")
    }

    fn skip_or_fail(test: &str, why: &str) {
        assert!(
            !docker_required(),
            "LAH_REQUIRE_DOCKER is set but {why} (run .ci/docker.sh and runtimes/images/build.sh)"
        );
        eprintln!("SKIP {test}: {why}");
    }

    pub(crate) struct Fixture {
        pub dir: TempDir,
        pub executor: DockerExecutor,
    }

    impl Fixture {
        fn fifo_dir(&self) -> PathBuf {
            self.dir.path().join("fifo")
        }
    }

    /// An executor on the local daemon with the images of `families`, or None (test skipped).
    async fn fixture(test: &str, server_id: &str, families: &[&str]) -> Option<Fixture> {
        fixture_with_pool(test, server_id, families, 0).await
    }

    /// `fixture` with a pool of `pool_mb` (`DockerConfig::pool_mb`).
    pub(crate) async fn fixture_with_pool(
        test: &str,
        server_id: &str,
        families: &[&str],
        pool_mb: u64,
    ) -> Option<Fixture> {
        let dir = TempDir::new().expect("tempdir");
        let config = DockerConfig {
            images: DockerConfig::default_images(),
            op_timeout_ms: OP_TIMEOUT_MS_DEFAULT,
            server_id: format!("{server_id}-{}", std::process::id()),
            // One data dir per test (and test process): the cleanup test's two runs share it.
            owner: format!("t-{test}-{}", std::process::id()),
            fifo_dir: dir.path().join("fifo"),
            pool_mb,
            pool_dir: dir.path().join("pool"),
        };
        let executor = match DockerExecutor::connect(config).await {
            Ok(executor) => executor,
            Err(e) => {
                skip_or_fail(test, &format!("docker is unreachable: {e}"));
                return None;
            }
        };
        for (family, image, present) in executor.check_images().await {
            if families.contains(&family.as_str()) && !present {
                skip_or_fail(test, &format!("image {image} is missing"));
                return None;
            }
        }
        Some(Fixture { dir, executor })
    }

    fn write_file(path: &Path, content: &str, mode: u32) {
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(path, content).expect("write");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    }

    /// A spec whose runtime starts `script`: `bootstrap` in the code dir for provided.*, the
    /// family's bootstrap in the runtimes dir otherwise.
    pub(crate) fn spec(fx: &Fixture, runtime: &str, memory_mb: u32, script: &str) -> InstanceSpec {
        let id = NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed);
        let root = fx.dir.path().join(format!("case-{id}"));
        let code_dir = root.join("task");
        let runtimes_dir = root.join("runtimes");
        let (path, mode) = match runtime_family(runtime) {
            Some("python") => (runtimes_dir.join("python/bootstrap.py"), 0o644),
            Some("nodejs") => (runtimes_dir.join("node/bootstrap.js"), 0o644),
            _ => (code_dir.join("bootstrap"), 0o755),
        };
        write_file(&path, script, mode);
        for dir in [&root, &code_dir, &runtimes_dir] {
            std::fs::create_dir_all(dir).expect("mkdir");
        }
        for dir in [
            &root,
            &code_dir,
            &runtimes_dir,
            path.parent().expect("parent"),
        ] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let name = "docker-test-fn".to_string();
        let config = FunctionConfig {
            name: name.clone(),
            runtime: runtime.to_string(),
            handler: "handler".to_string(),
            role: String::new(),
            description: String::new(),
            timeout_s: 3,
            memory_mb,
            environment: BTreeMap::new(),
            code_sha256: String::new(),
            code_size: 0,
            last_modified: String::new(),
            revision_id: String::new(),
            reserved_concurrency: None,
            layers: Vec::new(),
            logging: Default::default(),
        };
        let function = Arc::new(Function::latest(config, code_dir, 1));
        let instance = InstanceId(id);
        let env = [
            ("AWS_LAMBDA_RUNTIME_API", "127.0.0.1:9001"),
            ("LAMBDA_INSTANCE_ID", &instance.to_string()),
            ("HOME", "/overridden"),
        ];
        InstanceSpec {
            id: instance,
            function,
            runtime_api: "127.0.0.1:9001".parse().expect("addr"),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            runtimes_dir,
            uid: None,
        }
    }

    pub(crate) async fn wait_bounded(instance: &mut Box<dyn Instance>) -> ExitInfo {
        tokio::time::timeout(Duration::from_secs(TEST_WAIT_S), instance.wait())
            .await
            .expect("instance did not end in time")
    }

    /// Everything in the log pipe; call once all writers are gone (after wait or kill).
    pub(crate) fn read_log(fd: OwnedFd) -> String {
        let mut out = Vec::new();
        std::fs::File::from(fd)
            .read_to_end(&mut out)
            .expect("read log fifo");
        String::from_utf8_lossy(&out).into_owned()
    }

    pub(crate) async fn inspect(
        fx: &Fixture,
        name: &str,
    ) -> Option<bollard::models::ContainerInspectResponse> {
        let options = None::<bollard::query_parameters::InspectContainerOptions>;
        match fx.executor.docker.inspect_container(name, options).await {
            Ok(inspect) => Some(inspect),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => None,
            Err(e) => panic!("inspect {name}: {e}"),
        }
    }

    fn name_of(fx: &Fixture, spec: &InstanceSpec) -> String {
        container_name(&fx.executor.config.server_id, &spec.id.to_string())
    }

    pub(crate) const PROBE_BOOTSTRAP: &str = r#"#!/bin/sh
echo "hello from $LAMBDA_INSTANCE_ID uid=$(id -u) home=$HOME root=$LAMBDA_TASK_ROOT api=$AWS_LAMBDA_RUNTIME_API pwd=$(pwd)"
touch /probe 2>/dev/null && echo rootfs-writable || echo rootfs-readonly
touch /var/task/probe 2>/dev/null && echo task-writable || echo task-readonly
touch /tmp/probe && echo tmp-writable
echo "to stderr" >&2
exit 3
"#;
    pub(crate) const SLEEP_BOOTSTRAP: &str = "#!/bin/sh\nexec sleep 300\n";

    #[tokio::test]
    async fn exit_code_and_log_reach_the_host() {
        let _serial = SERIAL.lock().await;
        let Some(fx) = fixture("exit_code_and_log", "t-exit", &["provided"]).await else {
            return;
        };
        let spec = spec(&fx, "provided.al2023", 128, PROBE_BOOTSTRAP);
        let name = name_of(&fx, &spec);
        let instance_id = spec.id.to_string();
        let mut instance = fx.executor.start(spec).await.expect("start");
        let log = instance.take_log().expect("log fd");
        assert!(instance.take_log().is_none(), "the log is handed out once");
        // The FIFO's name is gone once the container runs; the mount keeps it alive.
        let left: Vec<_> = std::fs::read_dir(fx.fifo_dir())
            .expect("fifo dir")
            .collect();
        assert!(left.is_empty(), "fifo left behind: {left:?}");

        let exit = wait_bounded(&mut instance).await;
        assert_eq!(
            (exit.code, exit.signal, exit.oom_killed),
            (Some(3), None, false)
        );
        let text = read_log(log);
        let expected = format!(
            "hello from {instance_id} uid=1000 home=/tmp root=/var/task api=127.0.0.1:9001 pwd=/var/task"
        );
        for line in [
            &expected[..],
            "rootfs-readonly",
            "task-readonly",
            "tmp-writable",
            "to stderr",
        ] {
            assert!(text.contains(line), "log lacks {line:?}: {text:?}");
        }
        // wait() released the container.
        assert!(inspect(&fx, &name).await.is_none(), "container not removed");
        instance.kill().await;
        assert_eq!(wait_bounded(&mut instance).await.code, Some(3));
    }

    #[tokio::test]
    async fn oom_is_reported() {
        let _serial = SERIAL.lock().await;
        let Some(fx) = fixture("oom_is_reported", "t-oom", &["python"]).await else {
            return;
        };
        let script = "data = b'x' * (300 * 1024 * 1024)\nprint('survived', len(data))\n";
        let spec = spec(&fx, "python3.11", 128, script);
        let mut instance = fx.executor.start(spec).await.expect("start");
        let log = instance.take_log().expect("log fd");
        let exit = wait_bounded(&mut instance).await;
        assert!(exit.oom_killed, "not OOM-killed: {exit:?}");
        assert!(
            exit.describe().contains("out of memory"),
            "{}",
            exit.describe()
        );
        assert!(!read_log(log).contains("survived"));
    }

    /// The images carry the WebSocket libraries the bundled runtimes use, on the paths the
    /// executor sets.
    #[tokio::test]
    async fn runtime_images_carry_websocket_libraries() {
        let _serial = SERIAL.lock().await;
        let test = "runtime_images";
        let Some(fx) = fixture(test, "t-images", &["python", "nodejs"]).await else {
            return;
        };
        let cases = [
            (
                "python3.11",
                "import sys, websockets\nprint('py', sys.version_info[:2], 'websockets', websockets.__version__)\n",
                "py (3, 11) websockets ",
            ),
            (
                "nodejs18.x",
                "const { WebSocket } = require('ws');\nconsole.log('node', process.version.split('.')[0], typeof WebSocket);\n",
                "node v18 function",
            ),
        ];
        for (runtime, script, expected) in cases {
            let spec = spec(&fx, runtime, 128, script);
            let mut instance = fx.executor.start(spec).await.expect("start");
            let log = instance.take_log().expect("log fd");
            let exit = wait_bounded(&mut instance).await;
            let text = read_log(log);
            assert_eq!(exit.code, Some(0), "{runtime}: {exit:?} {text}");
            assert!(text.contains(expected), "{runtime}: {text:?}");
        }
    }

    #[tokio::test]
    async fn kill_stops_and_removes() {
        let _serial = SERIAL.lock().await;
        let Some(fx) = fixture("kill_stops_and_removes", "t-kill", &["provided"]).await else {
            return;
        };
        let spec = spec(&fx, "provided.al2023", 128, SLEEP_BOOTSTRAP);
        let name = name_of(&fx, &spec);
        let mut instance = fx.executor.start(spec).await.expect("start");
        let state = inspect(&fx, &name).await.expect("container exists").state;
        assert_eq!(state.and_then(|s| s.running), Some(true));
        instance.kill().await;
        assert!(inspect(&fx, &name).await.is_none(), "container not removed");
        instance.kill().await;
        let exit = wait_bounded(&mut instance).await;
        assert_eq!(exit.signal, Some(libc::SIGKILL), "{exit:?}");
    }

    #[tokio::test]
    async fn pause_and_resume() {
        let _serial = SERIAL.lock().await;
        let Some(fx) = fixture("pause_and_resume", "t-pause", &["provided"]).await else {
            return;
        };
        let spec = spec(&fx, "provided.al2023", 128, SLEEP_BOOTSTRAP);
        let name = name_of(&fx, &spec);
        let mut instance = fx.executor.start(spec).await.expect("start");
        let paused = |i: Option<bollard::models::ContainerInspectResponse>| {
            i.and_then(|i| i.state).and_then(|s| s.paused)
        };
        instance.pause().await.expect("pause");
        assert_eq!(paused(inspect(&fx, &name).await), Some(true));
        instance.resume().await.expect("resume");
        assert_eq!(paused(inspect(&fx, &name).await), Some(false));
        // An idle (paused) instance can be killed as it is.
        instance.pause().await.expect("pause again");
        instance.kill().await;
        assert!(
            inspect(&fx, &name).await.is_none(),
            "paused container not removed"
        );
        assert_eq!(
            wait_bounded(&mut instance).await.signal,
            Some(libc::SIGKILL)
        );
        assert!(
            instance.pause().await.is_err(),
            "paused a removed container"
        );
    }

    #[tokio::test]
    async fn container_is_hardened() {
        let _serial = SERIAL.lock().await;
        let Some(fx) = fixture("container_is_hardened", "t-hard", &["provided"]).await else {
            return;
        };
        let spec = spec(&fx, "provided.al2023", 256, SLEEP_BOOTSTRAP);
        let name = name_of(&fx, &spec);
        let instance_id = spec.id.to_string();
        let mut instance = fx.executor.start(spec).await.expect("start");
        let inspect = inspect(&fx, &name).await.expect("container exists");
        instance.kill().await;

        let host = inspect.host_config.expect("host config");
        let config = inspect.config.expect("config");
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.memory, Some(256 * MIB_BYTES));
        assert_eq!(host.memory_swap, Some(256 * MIB_BYTES));
        assert_eq!(host.cpu_shares, Some(cpu_shares(256)));
        assert_eq!(host.pids_limit, Some(PIDS_MAX));
        assert!(host
            .security_opt
            .unwrap_or_default()
            .contains(&"no-new-privileges".to_string()));
        let restart = host.restart_policy.and_then(|p| p.name);
        assert_eq!(restart, Some(RestartPolicyNameEnum::NO));
        assert_eq!(host.auto_remove, Some(false));
        assert_eq!(config.user.as_deref(), Some("1000:1000"));
        assert_eq!(config.working_dir.as_deref(), Some("/var/task"));
        let labels = config.labels.unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_SERVER),
            Some(&fx.executor.config.server_id)
        );
        assert_eq!(
            labels.get(LABEL_FUNCTION).map(String::as_str),
            Some("docker-test-fn")
        );
        assert_eq!(
            labels.get(LABEL_VERSION).map(String::as_str),
            Some("$LATEST")
        );
        assert_eq!(labels.get(LABEL_INSTANCE), Some(&instance_id));
        let mounts = inspect.mounts.unwrap_or_default();
        let rw = |target: &str| {
            mounts
                .iter()
                .find(|m| m.destination.as_deref() == Some(target))
                .and_then(|m| m.rw)
        };
        assert_eq!(rw("/var/task"), Some(false));
        assert_eq!(rw("/var/runtime"), Some(false));
        assert_eq!(rw(LOG_FIFO_TARGET), Some(true));
    }

    #[tokio::test]
    async fn cleanup_orphans_removes_earlier_runs_containers_and_leaves_other_servers_alone() {
        let _serial = SERIAL.lock().await;
        let test = "cleanup_orphans";
        let Some(earlier) = fixture(test, "t-earlier-run", &["provided"]).await else {
            return;
        };
        let Some(now) = fixture(test, "t-this-run", &["provided"]).await else {
            return;
        };
        // Another server, on another data dir, running on the same daemon at the same time.
        let Some(other) = fixture("cleanup_orphans_other", "t-other", &["provided"]).await else {
            return;
        };
        let orphan_spec = spec(&earlier, "provided.al2023", 128, SLEEP_BOOTSTRAP);
        let name = name_of(&earlier, &orphan_spec);
        let mut orphan = earlier.executor.start(orphan_spec).await.expect("start");
        let other_spec = spec(&other, "provided.al2023", 128, SLEEP_BOOTSTRAP);
        let other_name = name_of(&other, &other_spec);
        let mut neighbour = other.executor.start(other_spec).await.expect("start");
        let removed = now.executor.cleanup_orphans().await.expect("cleanup");
        assert_eq!(removed, 1, "only the earlier run's container");
        assert!(inspect(&now, &name).await.is_none(), "orphan survived");
        assert!(
            inspect(&other, &other_name).await.is_some(),
            "another server's container was removed"
        );
        assert_eq!(now.executor.cleanup_orphans().await.expect("cleanup"), 0);
        orphan.kill().await;
        neighbour.kill().await;
    }

    #[tokio::test]
    async fn unknown_runtime_and_missing_image_are_errors() {
        let _serial = SERIAL.lock().await;
        let Some(mut fx) = fixture("unknown_runtime", "t-errors", &[]).await else {
            return;
        };
        let spec_java = spec(&fx, "java21", 128, SLEEP_BOOTSTRAP);
        match fx.executor.start(spec_java).await {
            Err(ExecError::UnsupportedRuntime(r)) => assert_eq!(r, "java21"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("started an unknown runtime"),
        }
        let missing = "lambda-at-home/missing:never-built".to_string();
        fx.executor
            .config
            .images
            .insert("provided".into(), missing.clone());
        let spec = spec(&fx, "provided.al2023", 128, SLEEP_BOOTSTRAP);
        match fx.executor.start(spec).await {
            Err(ExecError::Spawn(msg)) => assert!(msg.contains(&missing), "{msg}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("started a missing image"),
        }
        let images = fx.executor.check_images().await;
        assert!(
            images.contains(&("provided".into(), missing, false)),
            "{images:?}"
        );
        // Nothing of the failed start is left: no FIFO.
        assert_eq!(
            std::fs::read_dir(fx.fifo_dir()).expect("fifo dir").count(),
            0
        );
    }

    #[tokio::test]
    async fn silent_daemon_is_unavailable() {
        let dir = TempDir::new().expect("tempdir");
        let socket = dir.path().join("docker.sock");
        // Accepts connections (kernel backlog) and never answers.
        let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
        let config = DockerConfig {
            images: DockerConfig::default_images(),
            op_timeout_ms: 300,
            server_id: "t-silent".into(),
            owner: "t-silent".into(),
            fifo_dir: dir.path().join("fifo"),
            pool_mb: 0,
            pool_dir: dir.path().join("pool"),
        };
        let client = Docker::connect_with_unix(
            &format!("unix://{}", socket.display()),
            5,
            bollard::API_DEFAULT_VERSION,
        );
        let started = std::time::Instant::now();
        match DockerExecutor::connect_client(client, config.clone()).await {
            Err(ExecError::Unavailable(msg)) => assert!(msg.contains("300 ms"), "{msg}"),
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("connected to a silent socket"),
        }
        assert!(started.elapsed() < Duration::from_secs(3));
        let absent = Docker::connect_with_unix(
            "unix:///nonexistent/docker.sock",
            5,
            bollard::API_DEFAULT_VERSION,
        );
        assert!(matches!(
            DockerExecutor::connect_client(absent, config).await,
            Err(ExecError::Unavailable(_))
        ));
    }

    #[test]
    fn runtime_families() {
        assert_eq!(runtime_family("python3.12"), Some("python"));
        assert_eq!(runtime_family("python3.9"), Some("python"));
        assert_eq!(runtime_family("nodejs20.x"), Some("nodejs"));
        assert_eq!(runtime_family("provided.al2023"), Some("provided"));
        assert_eq!(runtime_family("provided"), Some("provided"));
        assert_eq!(runtime_family("java21"), None);
        assert_eq!(runtime_family("python2.7"), None);
        assert_eq!(
            runtime_command("nodejs")[1],
            "/var/runtime/node/bootstrap.js"
        );
        assert_eq!(
            runtime_command("provided"),
            vec!["/var/task/bootstrap".to_string()]
        );
    }

    #[test]
    fn cpu_shares_follow_memory() {
        assert_eq!(cpu_shares(1769), 1024);
        assert_eq!(cpu_shares(128), 74);
        assert_eq!(cpu_shares(10240), 5927);
        assert_eq!(cpu_shares(1), CPU_SHARES_MIN);
    }

    #[test]
    fn our_environment_wins() {
        let spec_env = vec![
            (
                "AWS_LAMBDA_RUNTIME_API".to_string(),
                "127.0.0.1:9001".to_string(),
            ),
            ("PATH".to_string(), "/evil".to_string()),
            ("BAD=KEY".to_string(), "x".to_string()),
            ("".to_string(), "x".to_string()),
            ("GREETING".to_string(), "a=b".to_string()),
        ];
        let env = container_env(&spec_env, "python3.12");
        assert!(env.contains(&"AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001".to_string()));
        assert!(env.contains(&"GREETING=a=b".to_string()));
        assert!(env.contains(&format!("PATH={CONTAINER_PATH}")));
        assert!(env.contains(&"HOME=/tmp".to_string()));
        assert!(!env
            .iter()
            .any(|e| e == "PATH=/evil" || e.starts_with("BAD") || e.starts_with('=')));
        assert_eq!(env.iter().filter(|e| e.starts_with("PATH=")).count(), 1);
        assert!(env.contains(&"PYTHONPATH=/var/task:/opt/python/lib/python3.12/site-packages:/opt/python:/var/lang/lambda-at-home/python".to_string()));
        assert!(env.contains(&"LD_LIBRARY_PATH=/opt/lib".to_string()));
        assert!(env
            .iter()
            .any(|e| e.starts_with("NODE_PATH=") && e.ends_with(":/opt/nodejs/node_modules")));
    }

    #[test]
    fn container_names_are_docker_safe() {
        assert_eq!(
            container_name("srv-1", "i-0000002a"),
            "lah-srv-1-i-0000002a"
        );
        assert_eq!(container_name("a b/c:d", "i-1"), "lah-a-b-c-d-i-1");
    }

    #[test]
    fn exit_codes_decode() {
        let state = |code: i64, oom: bool| ContainerState {
            exit_code: Some(code),
            oom_killed: Some(oom),
            ..Default::default()
        };
        let e = exit_info(&state(137, true));
        assert_eq!(
            (e.code, e.signal, e.oom_killed),
            (None, Some(libc::SIGKILL), true)
        );
        let e = exit_info(&state(3, false));
        assert_eq!((e.code, e.signal), (Some(3), None));
        let e = exit_info(&state(255, false));
        assert_eq!((e.code, e.signal), (Some(255), None));
        let e = exit_info(&state(143, false));
        assert_eq!(e.signal, Some(libc::SIGTERM));
    }

    #[test]
    fn unreadable_code_dir_is_refused() {
        let dir = TempDir::new().expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        assert!(matches!(
            check_readable_by_container(dir.path()),
            Err(ExecError::Spawn(_))
        ));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        assert!(check_readable_by_container(dir.path()).is_ok());
    }
}
