//! The `process` executor: each instance is a child process in its own process group on the host.
//!
//! The embedded default, for machines without Docker. The runtime's stdout and stderr share one
//! pipe whose read end goes to the home core.
//!
//! Identity: when the server is root and the runtime's interpreter, bootstrap and the data dir's
//! parents are usable by an unprivileged uid (checked once per runtime family at start, logged),
//! each instance runs as its own uid with a view of the data dir that holds only its own code and
//! layers (`sandbox`); otherwise it runs as the server's user, unverified (counted in
//! `lah_instances_unverified_total`). See docs/isolation.md.
//!
//! Python instances may instead start as forks of a template that already imported the handler
//! (`fork`, docs/cold-starts.md), Node instances as a pre-started process of a pool
//! (`node_pool`); every fallback of those paths ends here.
//!
//! Where the server can write cgroups (root; see `cgroup`), each instance runs in its own cgroup:
//! everything it starts dies with it (also processes that left its process group), its memory is
//! limited to MemorySize without swap, and an OOM kill is reported as Docker's is. Without
//! cgroups, the instance's process group is killed, plus every process that carries its
//! `LAMBDA_INSTANCE_ID` in its environment; memory is not limited (a warning at start).
//! The runtime itself dies with the server (PR_SET_PDEATHSIG); what it started is killed at the
//! next start (`cleanup_orphans`: the data dir's cgroups, and processes whose `LAMBDA_TASK_ROOT`
//! is under this data dir's functions).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::cgroup::{Cgroups, InstanceCgroup};
use super::sandbox::{self, DataView, Need};
use super::{BoxFuture, ExecError, Executor, Instance, LayerPaths};
use crate::model::types::{ExitInfo, InstanceSpec};

pub struct ProcessExecutor {
    /// `<data-dir>/runtime-deps`: where `ws` (npm) and `websockets` (PyPI) may be installed for
    /// the WebSocket bootstraps, without touching the machine's global packages.
    deps_dir: PathBuf,
    /// The interpreters, resolved once: `python3` on PATH is often a shim (pyenv's is a bash
    /// script that costs ~45 ms per start), and every cold start would pay for it.
    node: PathBuf,
    python: PathBuf,
    /// This data dir's cgroups, when the server can write them.
    cgroups: Option<std::sync::Arc<Cgroups>>,
    /// `<data-dir>/functions`, absolute: instances' `LAMBDA_TASK_ROOT` is under it, which is how
    /// `cleanup_orphans` recognises their processes without cgroups.
    functions_dir: PathBuf,
    /// The data dir, absolute: what an instance with an identity sees only its part of.
    data_dir: PathBuf,
    /// Per runtime family (`nodejs`, `python`, `provided`): whether its instances can run under
    /// their own uid, or why not.
    identity: Vec<(&'static str, Result<(), String>)>,
    /// Fork templates of Python functions (`fork`); `None` with `--fork-start false`.
    forks: Option<super::fork::Templates>,
    /// Pre-started Node processes (`node_pool`); `None` with `--node-pool 0`.
    node_pool: Option<super::node_pool::NodePool>,
}

impl ProcessExecutor {
    /// `identities`: whether instances are to get their own uids (`--instance-uids` > 0);
    /// `fork_start`: whether Python instances start as forks of a template (`--fork-start`);
    /// `node_pool`: how many pre-started Node processes to keep (`--node-pool`, 0: none).
    pub fn new(
        deps_dir: PathBuf,
        data_dir: &Path,
        runtimes_dir: &Path,
        identities: bool,
        fork_start: bool,
        node_pool: usize,
    ) -> ProcessExecutor {
        let node = resolve_interpreter("node", &["-p", "process.execPath"]);
        let python = resolve_interpreter("python3", &["-c", "import sys; print(sys.executable)"]);
        tracing::debug!(node = %node.display(), python = %python.display(), "interpreters");
        let detected = Cgroups::detect(&super::cgroup::data_dir_key(data_dir));
        if let Some(reason) = &detected.no_memory_limit {
            tracing::warn!(
                "MemorySize is not enforced by the process executor ({reason}); run the server \
                 as root on a host with writable cgroups, or use --executor docker"
            );
        }
        if detected.cgroups.is_none() {
            tracing::warn!("no per-instance cgroups: processes an instance starts outside its process group are found by their environment only");
        }
        let functions_dir = data_dir.join("functions");
        let data_dir = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
        let identity = if identities {
            identity_by_family(&data_dir, runtimes_dir, &deps_dir, &node, &python)
        } else {
            Vec::new()
        };
        // One line per outcome (a non-root server gets one warning, not one per family).
        let mut outcomes: Vec<(Result<(), String>, Vec<&str>)> = Vec::new();
        for (family, verdict) in &identity {
            match outcomes.iter_mut().find(|(v, _)| v == verdict) {
                Some((_, families)) => families.push(family),
                None => outcomes.push((verdict.clone(), vec![family])),
            }
        }
        for (verdict, families) in outcomes {
            let families = families.join(", ");
            match verdict {
                Ok(()) => tracing::info!(
                    "{families} instances run under their own uids; their connections are verified"
                ),
                Err(why) => tracing::warn!(
                    "{families} instances run as the server's user, UNVERIFIED (another \
                     instance could take their invocations): {why}"
                ),
            }
        }
        let cgroups = detected.cgroups.map(std::sync::Arc::new);
        let functions_dir = std::path::absolute(&functions_dir).unwrap_or(functions_dir);
        let node_pool = (node_pool > 0).then(|| {
            let nodejs = identity
                .iter()
                .find(|(f, _)| *f == "nodejs")
                .map(|(_, verdict)| verdict.clone())
                .unwrap_or_else(|| Err("instance identities are off".into()));
            super::node_pool::NodePool::new(super::node_pool::PoolSetup {
                size: node_pool,
                node: node.clone(),
                runtimes_dir: std::path::absolute(runtimes_dir)
                    .unwrap_or_else(|_| runtimes_dir.to_path_buf()),
                deps_dir: deps_dir.clone(),
                data_dir: data_dir.clone(),
                functions_dir: functions_dir.clone(),
                identity: nodejs,
                cgroups: cgroups.clone(),
            })
        });
        ProcessExecutor {
            deps_dir,
            node,
            python,
            cgroups,
            functions_dir,
            data_dir,
            identity,
            forks: fork_start.then(super::fork::Templates::new),
            node_pool,
        }
    }

    /// Whether instances of `runtime` can run under their own uid.
    pub fn identity_for(&self, runtime: &str) -> Result<(), String> {
        let family = ["nodejs", "python", "provided"]
            .into_iter()
            .find(|f| runtime.starts_with(f))
            .ok_or_else(|| format!("unknown runtime {runtime}"))?;
        match self.identity.iter().find(|(f, _)| *f == family) {
            Some((_, verdict)) => verdict.clone(),
            None => Err("instance identities are off".into()),
        }
    }

    /// Whether instances get their own cgroup (and MemorySize is enforced when `memory`).
    pub fn has_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Which program runs a runtime family, and with which arguments.
    pub fn command_for(&self, spec: &InstanceSpec) -> Result<(PathBuf, Vec<PathBuf>), ExecError> {
        command_for(spec, &self.node, &self.python)
    }
}

/// The real executable behind `name` (asking it), or `name` itself when that fails.
fn resolve_interpreter(name: &str, args: &[&str]) -> PathBuf {
    let out = std::process::Command::new(name).args(args).output();
    match out {
        Ok(o) if o.status.success() => {
            let path = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if Path::new(&path).is_file() {
                return PathBuf::from(path);
            }
            PathBuf::from(name)
        }
        _ => PathBuf::from(name),
    }
}

/// For each runtime family, whether an unprivileged uid can run it: the server must be root (to
/// switch uids and mount), the data dir's parents searchable (an instance reaches its code at
/// its usual path), and the interpreter, its bootstrap and the WebSocket packages (when outside
/// the data dir) usable. `provided` bootstraps choose their own interpreter and use none of our
/// packages: only the data dir is checked for them.
fn identity_by_family(
    data_dir: &Path,
    runtimes_dir: &Path,
    deps_dir: &Path,
    node: &Path,
    python: &Path,
) -> Vec<(&'static str, Result<(), String>)> {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let common = || -> Result<(), String> {
        if !root {
            return Err(
                "the server is not root, so it cannot switch instances to their uids \
                        (use --executor docker, or run the server as root)"
                    .into(),
            );
        }
        sandbox::check_reachable(data_dir, Need::Reach)
    };
    let interpreted = |program: &Path, bootstrap: PathBuf| -> Result<(), String> {
        common()?;
        // Only our Node and Python bootstraps load the WebSocket packages.
        if deps_dir.exists() && !deps_dir.starts_with(data_dir) {
            sandbox::check_reachable(deps_dir, Need::Read)?;
        }
        // A bare name (no path) is looked up on PATH at spawn: resolve it the same way.
        let program = if program.is_absolute() {
            program.to_path_buf()
        } else {
            find_on_path(program).ok_or_else(|| format!("{} not found", program.display()))?
        };
        sandbox::check_reachable(&program, Need::Exec)?;
        sandbox::check_reachable(&bootstrap, Need::Read)
    };
    vec![
        (
            "nodejs",
            interpreted(node, runtimes_dir.join("node/bootstrap.js")),
        ),
        (
            "python",
            interpreted(python, runtimes_dir.join("python/bootstrap.py")),
        ),
        ("provided", common()),
    ]
}

/// The first `name` on the server's PATH.
fn find_on_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Which program runs a runtime family, and with which arguments.
pub fn command_for(
    spec: &InstanceSpec,
    node: &Path,
    python: &Path,
) -> Result<(PathBuf, Vec<PathBuf>), ExecError> {
    let runtime = spec.function.config.runtime.as_str();
    let rt = &spec.runtimes_dir;
    if runtime.starts_with("nodejs") {
        Ok((node.into(), vec![rt.join("node/bootstrap.js")]))
    } else if runtime.starts_with("python") {
        Ok((python.into(), vec![rt.join("python/bootstrap.py")]))
    } else if runtime.starts_with("provided") {
        Ok((spec.function.code_dir().join("bootstrap"), vec![]))
    } else {
        Err(ExecError::UnsupportedRuntime(runtime.to_string()))
    }
}

pub(super) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element array for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: setting O_NONBLOCK on our own open fd.
    unsafe {
        let flags = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(r.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok((r, w))
}

impl Executor for ProcessExecutor {
    fn name(&self) -> &'static str {
        "process"
    }

    fn unix_runtime_api(&self) -> bool {
        true
    }

    /// Kills what an earlier run of the server on this data dir left running: the processes in
    /// its instance cgroups, and any process whose environment names an instance
    /// (`LAMBDA_INSTANCE_ID`) with its code under this data dir (`LAMBDA_TASK_ROOT`).
    fn cleanup_orphans(&self) -> BoxFuture<'_, Result<usize, ExecError>> {
        Box::pin(async move {
            let mut found = match &self.cgroups {
                Some(cgroups) => cgroups.cleanup_orphans().await,
                None => 0,
            };
            let mut root = b"LAMBDA_TASK_ROOT=".to_vec();
            root.extend_from_slice(self.functions_dir.as_os_str().as_encoded_bytes());
            root.push(b'/');
            let id = format!("{INSTANCE_ID_VAR}=").into_bytes();
            let scan = move || {
                kill_by_environ(|vars| {
                    vars.iter().any(|v| v.starts_with(&root))
                        && vars.iter().any(|v| v.starts_with(&id))
                })
            };
            found += tokio::task::spawn_blocking(scan).await.unwrap_or(0);
            Ok(found)
        })
    }

    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Box<dyn Instance>, ExecError>> {
        Box::pin(async move {
            if let Some(forks) = &self.forks {
                if super::fork::eligible(&spec) {
                    if let Some(instance) = forks.start(self, &spec).await {
                        return Ok(instance);
                    }
                }
            }
            if let Some(pool) = &self.node_pool {
                if let Some(instance) = pool.start(self, &spec).await {
                    return Ok(instance);
                }
            }
            let log = pipe().map_err(|e| ExecError::Spawn(e.to_string()))?;
            let spawned = self.spawn(&spec, &spec.id.to_string(), log, None).await?;
            let token = spec
                .env
                .iter()
                .find(|(k, _)| k == INSTANCE_ID_VAR)
                .map(|(_, v)| v.clone());
            Ok(Box::new(ProcessInstance {
                pgid: spawned.child.id().map(|p| p as i32),
                child: spawned.child,
                log: Some(spawned.log),
                cgroup: spawned.cgroup,
                token,
                uid: spawned.uid,
                pooled: false,
            }) as Box<dyn Instance>)
        })
    }

    fn retire(&self, pool: &str) {
        if let Some(forks) = &self.forks {
            forks.retire(pool);
        }
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(forks) = &self.forks {
                forks.shutdown().await;
            }
            if let Some(pool) = &self.node_pool {
                pool.shutdown().await;
            }
        })
    }

    fn attach(
        &self,
        uids: std::sync::Arc<std::sync::Mutex<crate::control::identity::UidPool>>,
        _shared: std::sync::Arc<crate::model::Switchboard>,
    ) {
        if let Some(pool) = &self.node_pool {
            pool.share_uids(uids);
        }
    }

    fn take_uid_returns(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<u32>> {
        self.forks
            .as_ref()
            .and_then(|forks| forks.take_uid_returns())
    }
}

/// A runtime process `spawn` started, not yet wrapped as an instance.
pub(super) struct Spawned {
    pub child: tokio::process::Child,
    /// The read end of its stdout+stderr pipe.
    pub log: OwnedFd,
    pub cgroup: Option<InstanceCgroup>,
    /// The uid it runs as, when it has its own.
    pub uid: Option<u32>,
}

impl ProcessExecutor {
    /// The environment an instance's runtime gets: the control plane's (`spec.env`) plus the
    /// path variables of this host.
    pub(super) fn full_env(&self, spec: &InstanceSpec) -> Vec<(String, String)> {
        let mut env = spec.env.clone();
        env.extend(path_env(spec, &self.deps_dir));
        env
    }

    /// Whether instances get their own cgroups, and the cgroups to make them in.
    pub(super) fn cgroups(&self) -> Option<&std::sync::Arc<Cgroups>> {
        self.cgroups.as_ref()
    }

    /// Starts `spec`'s runtime in its own process group, in a new cgroup named `cgroup_name`
    /// (when the server has cgroups), under `spec.uid` when the runtime allows it, with `log`
    /// (read end, write end) as its stdout and stderr. `inherit`: a descriptor the runtime keeps
    /// across exec (a fork template's control socket) and the variable that names its number.
    pub(super) async fn spawn(
        &self,
        spec: &InstanceSpec,
        cgroup_name: &str,
        log: (OwnedFd, OwnedFd),
        inherit: Option<(&'static str, std::os::fd::RawFd)>,
    ) -> Result<Spawned, ExecError> {
        let (program, args) = self.command_for(spec)?;
        let code_dir = spec.function.code_dir();
        let (read, write) = log;
        let write2 = write
            .try_clone()
            .map_err(|e| ExecError::Spawn(e.to_string()))?;
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&args)
            .current_dir(code_dir)
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .envs(path_env(spec, &self.deps_dir))
            .stdin(Stdio::null())
            .stdout(Stdio::from(write))
            .stderr(Stdio::from(write2))
            .process_group(0)
            .kill_on_drop(true);
        if let Some((var, fd)) = inherit {
            cmd.env(var, fd.to_string());
        }
        let inherit_fd = inherit.map(|(_, fd)| fd);
        let opt_source = opt_mount_source(spec);
        // Its own uid when the runtime allows it; otherwise it runs as the server's user.
        let identity = match (spec.uid, self.identity_for(&spec.function.config.runtime)) {
            (Some(uid), Ok(())) => {
                let mut visible = vec![code_dir];
                visible.extend(spec.function.opt_dir());
                visible.push(&self.deps_dir);
                let view = DataView::prepare(&self.data_dir, &visible).map_err(|e| {
                    ExecError::Spawn(format!("cannot prepare its view of the data dir: {e}"))
                })?;
                Some((uid, view))
            }
            _ => None,
        };
        let uid = identity.as_ref().map(|(uid, _)| *uid);
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let mut cgroup = match &self.cgroups {
            Some(cgroups) => Some(
                cgroups
                    .create(cgroup_name, spec.function.config.memory_mb)
                    .map_err(|e| ExecError::Spawn(format!("cannot create its cgroup: {e}")))?,
            ),
            None => None,
        };
        let join = cgroup
            .as_mut()
            .map(InstanceCgroup::take_join_fds)
            .unwrap_or_default();
        let join_raw: Vec<i32> = join.iter().map(|fd| fd.as_raw_fd()).collect();
        // SAFETY: prctl, write, fcntl, unshare, mount, mkdir and the credential calls are
        // async-signal-safe syscalls; the closure only reads `opt_source`, `join_raw`,
        // `inherit_fd` and `identity`, prepared before the fork, and touches no allocator or lock.
        unsafe {
            cmd.pre_exec(move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                // Join the instance's cgroups before exec: everything the runtime starts is
                // in them. An instance that cannot join must not run outside them.
                for &fd in &join_raw {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // The one descriptor meant for the runtime survives exec (the fork is the
                // child's own copy of the table: the server's stays close-on-exec).
                if let Some(fd) = inherit_fd {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                let private = if opt_source.is_some() || identity.is_some() {
                    private_mount_namespace()
                } else {
                    false
                };
                if let (true, Some(source)) = (private, &opt_source) {
                    mount_opt(source);
                }
                if let Some((uid, view)) = &identity {
                    // An instance that was given a uid never runs without it.
                    if !private {
                        return Err(std::io::Error::last_os_error());
                    }
                    sandbox::enter(view, *uid, parent)?;
                }
                Ok(())
            });
        }
        let spawned = cmd.spawn();
        drop(join);
        match spawned {
            Ok(child) => Ok(Spawned {
                child,
                log: read,
                cgroup,
                uid,
            }),
            Err(e) => {
                if let Some(cg) = cgroup.as_mut() {
                    cg.kill_and_remove().await;
                }
                Err(ExecError::Spawn(spawn_error(spec, &program, &e)))
            }
        }
    }
}

/// The variable that carries an instance's token (set by the control plane, never by a function).
pub(super) const INSTANCE_ID_VAR: &str = "LAMBDA_INSTANCE_ID";

/// Why the runtime could not be started, without host paths: callers see this message, and
/// where the server keeps its data is none of theirs. A `provided` function's `bootstrap` is
/// named as such; an interpreter by its file name.
fn spawn_error(spec: &InstanceSpec, program: &Path, e: &std::io::Error) -> String {
    let what = if program.starts_with(spec.function.code_dir()) {
        "bootstrap".to_string()
    } else {
        program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "the runtime".into())
    };
    let reason = match e.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    };
    format!("{what}: {reason}")
}

/// Sends SIGKILL (and SIGCONT, so a stopped one dies) to every process but this one whose
/// environment `matches`; returns how many. Reads `/proc`, so it runs on a blocking thread.
fn kill_by_environ(matches: impl Fn(&[&[u8]]) -> bool) -> usize {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = environ.split(|&b| b == 0).collect();
        if matches(&vars) {
            // SAFETY: kill has no memory preconditions; a pid that is gone yields ESRCH.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
                libc::kill(pid as i32, libc::SIGCONT);
            }
            killed += 1;
        }
    }
    killed
}

/// The merged layers to show at `/opt`, when the server can give the instance its own mount
/// namespace (it runs as root); otherwise only the path variables point at them.
fn opt_mount_source(spec: &InstanceSpec) -> Option<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let dir = spec.function.opt_dir().filter(|_| root)?;
    std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()
}

/// In the child, before exec: its own mount namespace, from which nothing propagates back to
/// the host's. Whether that worked.
///
/// # Safety
/// Only between fork and exec (it changes the calling process's mount namespace).
pub(super) unsafe fn private_mount_namespace() -> bool {
    let none = std::ptr::null();
    // SAFETY: plain syscalls on NUL-terminated strings that outlive the calls.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return false;
        }
        let private = libc::MS_REC | libc::MS_PRIVATE;
        libc::mount(c"none".as_ptr(), c"/".as_ptr(), none, private, none.cast()) == 0
    }
}

/// In the child, before exec, in its private mount namespace: `source` bind-mounted read-only at
/// `/opt`. Best effort: on any failure the instance runs without `/opt` (its path variables still
/// name the layers' real directory).
///
/// # Safety
/// Only between fork and exec (it changes the calling process's mount namespace).
unsafe fn mount_opt(source: &std::ffi::CStr) {
    let none = std::ptr::null();
    // SAFETY: plain syscalls on NUL-terminated strings that outlive the calls.
    unsafe {
        let bind = libc::MS_BIND | libc::MS_REC;
        if libc::mount(source.as_ptr(), c"/opt".as_ptr(), none, bind, none.cast()) != 0 {
            return;
        }
        let read_only = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC;
        libc::mount(none, c"/opt".as_ptr(), none, read_only, none.cast());
    }
}

/// The variables that depend on where things are on this host. With layers, their merged
/// directory's `python`, `nodejs/node_modules`, `bin` and `lib` come first, as AWS's `/opt`
/// paths do (the real directory, which works whether or not `/opt` could be mounted).
fn path_env(spec: &InstanceSpec, deps: &Path) -> Vec<(String, String)> {
    let task_root = spec.function.code_dir().display().to_string();
    let mut host_path =
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    let mut python_path = vec![task_root.clone()];
    let mut node_path = vec![format!("{task_root}/node_modules")];
    let mut lib_path = None;
    if let Some(opt) = spec.function.opt_dir() {
        let layers = LayerPaths::under(&opt.display().to_string(), &spec.function.config.runtime);
        python_path.extend(layers.python);
        node_path.extend(layers.node);
        host_path = format!("{}:{host_path}", layers.bin);
        lib_path = Some(layers.lib);
    }
    python_path.push(deps.join("python").display().to_string());
    node_path.push(deps.join("node/node_modules").display().to_string());
    let mut env = vec![
        ("LAMBDA_TASK_ROOT".into(), task_root.clone()),
        (
            "LAMBDA_RUNTIME_DIR".into(),
            spec.runtimes_dir.display().to_string(),
        ),
        ("PATH".into(), host_path),
        ("HOME".into(), home),
        ("PYTHONUNBUFFERED".into(), "1".into()),
        ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
        ("PYTHONPATH".into(), python_path.join(":")),
        ("NODE_PATH".into(), node_path.join(":")),
    ];
    if let Some(lib) = lib_path {
        env.push(("LD_LIBRARY_PATH".into(), lib));
    }
    honour_user_paths(&mut env, &spec.function.config.environment);
    // The pyenv shim on some hosts needs its root to find the interpreter.
    if let Ok(root) = std::env::var("PYENV_ROOT") {
        env.push(("PYENV_ROOT".into(), root));
    }
    env
}

/// Search paths AWS lets a function set (not reserved): the function's value comes first, and
/// the server's entries follow, so its own directories win lookups while the runtime still finds
/// the handler, the layers and the WebSocket packages.
const USER_PATH_KEYS: &[&str] = &["PATH", "PYTHONPATH", "NODE_PATH", "LD_LIBRARY_PATH"];

fn honour_user_paths(
    env: &mut Vec<(String, String)>,
    user: &std::collections::BTreeMap<String, String>,
) {
    for key in USER_PATH_KEYS {
        let Some(value) = user.get(*key).filter(|v| !v.is_empty()) else {
            continue;
        };
        match env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = format!("{value}:{}", slot.1),
            None => env.push((key.to_string(), value.clone())),
        }
    }
}

pub(super) struct ProcessInstance {
    pub child: tokio::process::Child,
    /// The child's process group (its pid): killed as a whole.
    pub pgid: Option<i32>,
    pub log: Option<OwnedFd>,
    /// Its cgroup: killed as a whole, then removed.
    pub cgroup: Option<InstanceCgroup>,
    /// Its `LAMBDA_INSTANCE_ID`: without a cgroup, what finds processes that left its group.
    pub token: Option<String>,
    /// The uid it runs as, when it has its own.
    pub uid: Option<u32>,
    /// Whether it was a pre-started Node process of the pool (`node_pool`) rather than a new
    /// start (`lah_executor_starts_total{kind="pooled"}`).
    pub pooled: bool,
}

impl ProcessInstance {
    fn signal_group(&self, sig: i32) -> Result<(), ExecError> {
        let Some(pgid) = self.pgid else {
            return Ok(());
        };
        // SAFETY: killpg with a process group we created; a stale group yields ESRCH, ignored.
        let rc = unsafe { libc::killpg(pgid, sig) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::ESRCH) {
                return Err(ExecError::Spawn(format!("killpg: {err}")));
            }
        }
        Ok(())
    }
}

impl Instance for ProcessInstance {
    fn take_log(&mut self) -> Option<OwnedFd> {
        self.log.take()
    }

    fn wait(&mut self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(async move {
            let status = self.child.wait().await;
            let oom_killed = self.cgroup.as_ref().is_some_and(InstanceCgroup::oom_killed);
            match status {
                Ok(status) => ExitInfo {
                    code: status.code(),
                    signal: status.signal(),
                    oom_killed,
                },
                Err(_) => ExitInfo {
                    code: None,
                    signal: None,
                    oom_killed: false,
                },
            }
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // SIGCONT after SIGKILL: a paused (SIGSTOPped) group must be able to die and be
            // reaped.
            let _ = self.signal_group(libc::SIGKILL);
            let _ = self.signal_group(libc::SIGCONT);
            let _ = self.child.start_kill();
            match (&mut self.cgroup, self.token.take()) {
                (Some(cgroup), _) => cgroup.kill_and_remove().await,
                (None, Some(token)) => {
                    let entry = format!("{INSTANCE_ID_VAR}={token}").into_bytes();
                    let scan = move || kill_by_environ(|vars| vars.contains(&entry.as_slice()));
                    let _ = tokio::task::spawn_blocking(scan).await;
                }
                (None, None) => {}
            }
        })
    }

    fn pause(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.signal_group(libc::SIGSTOP) })
    }

    fn resume(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.signal_group(libc::SIGCONT) })
    }

    fn uid(&self) -> Option<u32> {
        self.uid
    }

    fn pooled(&self) -> bool {
        self.pooled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn user_search_paths_come_first_and_the_servers_follow() {
        let mut env = vec![
            ("PATH".to_string(), "/usr/bin".to_string()),
            ("PYTHONPATH".to_string(), "/task".to_string()),
        ];
        let user = BTreeMap::from([
            ("PATH".to_string(), "/mine/bin".to_string()),
            ("PYTHONPATH".to_string(), "/mine/py".to_string()),
            ("LD_LIBRARY_PATH".to_string(), "/mine/lib".to_string()),
            ("NODE_PATH".to_string(), String::new()),
        ]);
        honour_user_paths(&mut env, &user);
        assert_eq!(
            env,
            [
                ("PATH".to_string(), "/mine/bin:/usr/bin".to_string()),
                ("PYTHONPATH".to_string(), "/mine/py:/task".to_string()),
                ("LD_LIBRARY_PATH".to_string(), "/mine/lib".to_string()),
            ]
        );
    }
}
