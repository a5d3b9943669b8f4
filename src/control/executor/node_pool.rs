//! Pooled starts for the process executor's Node instances: a few Node processes started ahead
//! of any function, each with the runtime's bootstrap loaded and no function yet; a cold start
//! hands one its function (code, handler, environment) and it `require`s the handler, instead of
//! starting Node from scratch (docs/cold-starts.md, "Node: pooled starts").
//!
//! Runs on the control-plane thread: claims inside `ProcessExecutor::start`, the fill task and
//! the shutdown teardown as tasks on its runtime (pooled processes must be spawned from that
//! long-lived thread: their death signal, `PR_SET_PDEATHSIG`, fires when the spawning thread
//! ends). Showing a function's code to a pooled process runs on a short-lived thread of its own
//! (`show_code`).
//!
//! A pooled process is spawned as an ordinary Node instance is (same interpreter, bootstrap,
//! process group, output pipe, death signal), with a minimal environment of its own plus the
//! inherited end of a `SOCK_STREAM` socketpair named by `_LAMBDA_POOL_CONTROL_FD`. In a cgroup of
//! its own (`p-N`) limited to `IDLE_MEMORY_MB`; with instance identities, under a uid taken from
//! the control plane's pool, in a mount namespace where the data dir is the empty read-only
//! tmpfs of `sandbox` (only the WebSocket packages bound back when they live under it). Its
//! bootstrap loads the runtime's modules, writes `{"ready":true}` on the socket and blocks reading
//! it. A claim: the function's code dir becomes visible read-only at its usual path in the
//! process's mount namespace (`show_code`), its cgroup's limit becomes the function's MemorySize,
//! output written so far is discarded, and the *start message* (`{"env":{...}}`, the instance's
//! whole environment as an ordinary start would set it) is written to the socket, which is then
//! closed; the bootstrap replaces its environment with it, enters the code dir and goes on as an
//! ordinary start. Output needs no descriptor passing: the process's stdout and stderr are the
//! pipe made at its spawn, whose read end the server kept and hands to the instance's home core.
//!
//! Invariants: a pooled process runs no function code before its claim (nothing of any function
//! is visible to it, and it loads none) and serves one instance only; a claim that fails at any
//! step kills the process and the start falls back to an ordinary one (`None`), so no invocation
//! fails because of the pool. The uid a pooled process runs under is the instance's after the
//! claim (the spec's uid goes back at once: nothing ran under it) and goes back to the control
//! plane's pool only once nothing runs under it. Functions the pool cannot honour start normally
//! (`unusable`).
//!
//! Limits: at most `--node-pool` idle processes (clamped to `NODE_POOL_MAX`), filled one at a
//! time, `REFILL_DELAY_MS` after the start that wants them; the pool fills from the first Node
//! start it could serve on, and is emptied when no such start came for `IDLE_TTL_S`.

use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

use super::cgroup::{Cgroups, InstanceCgroup};
use super::fork::{discard_waiting, set_nonblocking, stream_pair};
use super::process::{pipe, private_mount_namespace, ProcessExecutor, ProcessInstance};
use super::sandbox::{self, DataView};
use super::Instance;
use crate::control::identity::{self, UidPool};
use crate::model::types::InstanceSpec;

/// A function's own variable that keeps its instances out of the pool (`false` or `0`).
pub const POOL_OPT_OUT_VAR: &str = "LAMBDA_USE_POOL";
/// The variable naming the pooled process's control socket (the runtime removes it at once).
const CONTROL_FD_VAR: &str = "_LAMBDA_POOL_CONTROL_FD";
/// Largest pool `--node-pool` may ask for: each idle process holds a whole Node runtime (about
/// 40-50 MB resident), so a larger pool is memory nobody uses.
pub const NODE_POOL_MAX: usize = 32;
/// How long a pooled process may take to load the bootstrap and report ready (it takes tens of
/// milliseconds; one that takes longer is stuck and is killed).
const READY_MS_MAX: u64 = 10_000;
/// How long a fill waits before it starts a process: the start that wants it is running its
/// init on the same few cores, and a Node start costs tens of milliseconds of CPU.
const REFILL_DELAY_MS: u64 = 200;
/// Memory limit of an idle pooled process's cgroup: AWS's smallest MemorySize, so that a claim
/// only ever raises or keeps it in practice (an idle Node runtime uses about 40-50 MB).
const IDLE_MEMORY_MB: u32 = 128;
/// Largest ready report of a pooled process (`{"ready":true}` or a short refusal).
const READY_BYTES_MAX: usize = 4096;
/// A pool no Node start wanted for this long is emptied (its memory goes back to the host) until
/// the next Node start; as the Docker pool forgets a key nobody started.
const IDLE_TTL_S: u64 = 600;
/// How often the pool checks whether it was forgotten.
const SWEEP_INTERVAL_S: u64 = 30;
/// How long shutdown waits for a fill in flight to end before it goes on.
const SHUTDOWN_FILL_WAIT_MS: u64 = 3_000;
const SHUTDOWN_POLL_MS: u64 = 20;
/// The task root a pooled process carries in its environment before its claim: a path under the
/// functions dir that no function uses, so that `cleanup_orphans` recognises it (it looks for
/// `LAMBDA_TASK_ROOT` under that dir and a `LAMBDA_INSTANCE_ID`).
const POOL_TASK_ROOT: &str = ".node-pool";

/// Variables Node, libuv, OpenSSL or the dynamic loader read once, when the process starts: a
/// pooled process started before its function was known cannot honour a function that sets one,
/// so such a function starts normally. `NODE_PATH` is re-read at the claim and `NODE_ENV` is
/// read by the function's own code only.
const STARTUP_ONLY_PREFIXES: &[&str] = &["NODE_", "UV_", "LD_", "OPENSSL_", "SSL_CERT_", "MALLOC_"];
const STARTUP_ONLY_NAMES: &[&str] = &["GLIBC_TUNABLES"];
const LIVE_NODE_VARS: &[&str] = &["NODE_PATH", "NODE_ENV"];

/// Pooled processes made so far: names their cgroups (`p-N`) and their pool token.
static POOLED_MADE: AtomicU64 = AtomicU64::new(0);

/// Why `spec`'s instance cannot be a pooled process, or `None` when it can.
fn unusable(spec: &InstanceSpec, runtimes_dir: &Path) -> Option<&'static str> {
    let c = &spec.function.config;
    if !c.runtime.starts_with("nodejs") {
        return Some("not a Node runtime");
    }
    if opted_out(c.environment.get(POOL_OPT_OUT_VAR).map(String::as_str)) {
        return Some("the function sets LAMBDA_USE_POOL=false");
    }
    if spec.function.opt_dir().is_some() {
        // The dynamic loader reads LD_LIBRARY_PATH (a layer's `lib`) once at start, and the
        // layers would have to be mounted at /opt too.
        return Some("the function has layers");
    }
    if c.environment.keys().any(|k| startup_only(k)) {
        return Some("the function sets a variable Node reads only when it starts");
    }
    let theirs = std::path::absolute(&spec.runtimes_dir).unwrap_or(spec.runtimes_dir.clone());
    if theirs != runtimes_dir {
        return Some("another runtimes dir");
    }
    None
}

pub(super) fn startup_only(key: &str) -> bool {
    !LIVE_NODE_VARS.contains(&key)
        && (STARTUP_ONLY_NAMES.contains(&key)
            || STARTUP_ONLY_PREFIXES.iter().any(|p| key.starts_with(p)))
}

pub(super) fn opted_out(value: Option<&str>) -> bool {
    matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("false" | "0" | "no" | "off")
    )
}

/// What the pool needs from the executor, fixed when the server starts.
pub struct PoolSetup {
    /// Idle processes wanted (`--node-pool`).
    pub size: usize,
    /// The Node interpreter (resolved as for ordinary starts).
    pub node: PathBuf,
    /// The runtimes dir, absolute: where `node/bootstrap.js` is.
    pub runtimes_dir: PathBuf,
    pub deps_dir: PathBuf,
    /// The data dir and its functions dir, absolute.
    pub data_dir: PathBuf,
    pub functions_dir: PathBuf,
    /// Whether Node instances can run under their own uid (the executor's start check).
    pub identity: Result<(), String>,
    pub cgroups: Option<Arc<Cgroups>>,
}

/// One pre-started Node process waiting for its function.
struct Pooled {
    child: tokio::process::Child,
    /// Its pid, also its process group.
    pid: i32,
    /// The server's end of its control socket (non-blocking).
    control: OwnedFd,
    /// The read end of its stdout+stderr pipe.
    log: OwnedFd,
    cgroup: Option<InstanceCgroup>,
    /// The uid it runs as, when it has its own.
    uid: Option<u32>,
    /// Its mount namespace, when it has a view of the data dir of its own (with a uid).
    mnt: Option<OwnedFd>,
}

#[derive(Default)]
struct State {
    idle: VecDeque<Pooled>,
    /// A fill task runs.
    filling: bool,
    /// A Node function the pool could serve was started, within `IDLE_TTL_S` of `last_wanted`.
    wanted: bool,
    last_wanted: Option<std::time::Instant>,
    /// A sweep task runs (`ensure_sweeping`).
    sweeping: bool,
    /// Set at shutdown: nothing new is made or handed out.
    shut: bool,
    /// Fills that failed in a row: the first is a warning, the next ones debug lines.
    failures: u32,
}

struct Inner {
    setup: PoolSetup,
    uids: OnceLock<Arc<Mutex<UidPool>>>,
    state: Mutex<State>,
    shut_tx: watch::Sender<bool>,
}

/// The process executor's pool of pre-started Node processes.
pub struct NodePool {
    inner: Arc<Inner>,
}

impl NodePool {
    pub fn new(mut setup: PoolSetup) -> NodePool {
        setup.size = setup.size.min(NODE_POOL_MAX);
        let (shut_tx, _) = watch::channel(false);
        NodePool {
            inner: Arc::new(Inner {
                setup,
                uids: OnceLock::new(),
                state: Mutex::new(State::default()),
                shut_tx,
            }),
        }
    }

    /// The control plane's instance uids: pooled processes take theirs from it.
    pub fn share_uids(&self, uids: Arc<Mutex<UidPool>>) {
        let _ = self.inner.uids.set(uids);
    }

    /// Starts `spec`'s instance as a pooled process when the pool can honour it and has one
    /// ready; `None`: start it normally instead. Either way a Node start makes the pool fill.
    pub async fn start(
        &self,
        exec: &ProcessExecutor,
        spec: &InstanceSpec,
    ) -> Option<Box<dyn Instance>> {
        let inner = &self.inner;
        if let Some(why) = unusable(spec, &inner.setup.runtimes_dir) {
            if spec.function.config.runtime.starts_with("nodejs") {
                tracing::debug!(function = %spec.function.pool_key, "not a pooled start: {why}");
            }
            return None;
        }
        {
            let mut state = inner.state();
            if state.shut {
                return None;
            }
            state.wanted = true;
            state.last_wanted = Some(std::time::Instant::now());
        }
        let pooled = loop {
            let Some(mut pooled) = inner.state().idle.pop_front() else {
                break None;
            };
            // One that ended while it waited (killed from outside) would be an instance that
            // ends at once: the next one, if any.
            if matches!(pooled.child.try_wait(), Ok(None)) {
                break Some(pooled);
            }
            tokio::spawn(discard(inner.clone(), pooled));
        };
        ensure_filling(inner);
        ensure_sweeping(inner);
        let pooled = pooled?;
        // A process with a uid of its own for a spec without one is fine (the spec's uid pool
        // ran dry, and the pooled process had taken its uid earlier); the other way round it
        // would run unverified where an ordinary start would not.
        if pooled.uid.is_none() && spec.uid.is_some() && inner.setup.identity.is_ok() {
            tokio::spawn(discard(inner.clone(), pooled));
            return None;
        }
        match claim(inner, exec, spec, &pooled) {
            Ok(()) => {}
            Err(why) => {
                tracing::warn!(function = %spec.function.pool_key, "pooled start failed ({why}); the instance starts normally");
                tokio::spawn(discard(inner.clone(), pooled));
                return None;
            }
        }
        // The spec's uid never ran anything: the pooled process's is the instance's now.
        if let (Some(spec_uid), Some(own)) = (spec.uid, pooled.uid) {
            if spec_uid != own {
                if let Some(uids) = inner.uids.get() {
                    uids.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .give_back(spec_uid);
                }
            }
        }
        let token = spec
            .env
            .iter()
            .find(|(k, _)| k == super::process::INSTANCE_ID_VAR)
            .map(|(_, v)| v.clone());
        let Pooled {
            child,
            pid,
            log,
            cgroup,
            uid,
            ..
        } = pooled;
        Some(Box::new(ProcessInstance {
            child,
            pgid: Some(pid),
            log: Some(log),
            cgroup,
            token,
            uid,
            pooled: true,
        }))
    }

    /// Kills every idle process (and any a fill is making) and gives their uids back.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        let idle: Vec<Pooled> = {
            let mut state = inner.state();
            state.shut = true;
            state.idle.drain(..).collect()
        };
        inner.shut_tx.send_replace(true);
        for pooled in idle {
            discard(inner.clone(), pooled).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(SHUTDOWN_FILL_WAIT_MS);
        while inner.state().filling && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
        }
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Makes `pooled` the instance of `spec`: shows it the function's code, sets its memory limit,
/// drops what it wrote so far and sends the start message. On an error the caller kills it.
fn claim(
    inner: &Inner,
    exec: &ProcessExecutor,
    spec: &InstanceSpec,
    pooled: &Pooled,
) -> Result<(), String> {
    if let Some(ns) = &pooled.mnt {
        show_code(ns, &inner.setup.data_dir, spec.function.code_dir())
            .map_err(|e| format!("cannot show it the function's code: {e}"))?;
    }
    if let Some(cg) = &pooled.cgroup {
        cg.set_memory_mb(spec.function.config.memory_mb)
            .map_err(|e| format!("cannot set its memory limit: {e}"))?;
    }
    // A pooled process's output before its claim (a Node warning) is not its instance's.
    discard_waiting(&pooled.log);
    let env: serde_json::Map<String, serde_json::Value> = exec
        .full_env(spec)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let body = serde_json::json!({ "env": env }).to_string();
    // SAFETY: send of our buffer on our own socket; MSG_NOSIGNAL: a gone peer is an error.
    let n = unsafe {
        libc::send(
            pooled.control.as_raw_fd(),
            body.as_ptr().cast(),
            body.len(),
            libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
        )
    };
    if n != body.len() as isize {
        return Err(format!(
            "cannot send the start message ({} of {} bytes): {}",
            n.max(0),
            body.len(),
            io::Error::last_os_error()
        ));
    }
    // The end of the message: the process reads until the server's end is closed.
    // SAFETY: shutdown of our own socket.
    unsafe {
        libc::shutdown(pooled.control.as_raw_fd(), libc::SHUT_WR);
    }
    Ok(())
}

/// Makes `code_dir` (under `data_dir`) visible read-only at its own path in the mount namespace
/// `ns`, whose data dir is `sandbox`'s read-only tmpfs. The code is cloned as a detached mount
/// (`open_tree`) in the server's namespace, made read-only, nosuid and nodev (`mount_setattr`),
/// then attached in `ns` (`move_mount`) by a short-lived thread that joins `ns` (a thread may
/// join a mount namespace once it has its own filesystem context, `unshare(CLONE_FS)`; the
/// server's other threads keep theirs). The cover is writable only while the mount point is made.
fn show_code(ns: &OwnedFd, data_dir: &Path, code_dir: &Path) -> io::Result<()> {
    let rel = code_dir
        .strip_prefix(data_dir)
        .map_err(|_| io::Error::other("the code is not under the data dir"))?;
    let mut mkdirs = Vec::new();
    let mut at = data_dir.to_path_buf();
    for part in rel.components() {
        at.push(part);
        mkdirs.push(cstring(&at)?);
    }
    let code = cstring(code_dir)?;
    let cover = cstring(data_dir)?;
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_RECURSIVE as u32;
    // SAFETY: open_tree on a NUL-terminated path; the result is checked before it is owned.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, code.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor of ours alone.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: mount_setattr on our detached tree with a valid attribute struct and its size.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let (ns, tree) = (ns.as_raw_fd(), tree.as_raw_fd());
    std::thread::scope(|s| {
        s.spawn(|| attach_in(ns, tree, &cover, &mkdirs, &code))
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the mount thread panicked")))
    })
}

/// On a thread of its own (its namespace changes for good): joins the mount namespace `ns` and
/// attaches the detached mount `tree` at `code`, making the directories `mkdirs` in the cover
/// `cover` first.
fn attach_in(
    ns: i32,
    tree: i32,
    cover: &CString,
    mkdirs: &[CString],
    code: &CString,
) -> io::Result<()> {
    let fail = || Err(io::Error::last_os_error());
    let none: *const libc::c_char = std::ptr::null();
    let cover_flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let options = sandbox::COVER_OPTIONS.as_ptr().cast();
    // SAFETY: syscalls on descriptors the caller keeps open and NUL-terminated strings that
    // outlive the calls; they change only this thread's filesystem context and namespace.
    unsafe {
        if libc::unshare(libc::CLONE_FS) != 0 || libc::setns(ns, libc::CLONE_NEWNS) != 0 {
            return fail();
        }
        let rw = libc::MS_REMOUNT | cover_flags;
        if libc::mount(none, cover.as_ptr(), none, rw, options) != 0 {
            return fail();
        }
        let mut result = Ok(());
        for dir in mkdirs {
            if libc::mkdir(dir.as_ptr(), 0o755) != 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
            {
                result = fail();
                break;
            }
        }
        if result.is_ok()
            && libc::syscall(
                libc::SYS_move_mount,
                tree,
                c"".as_ptr(),
                libc::AT_FDCWD,
                code.as_ptr(),
                libc::MOVE_MOUNT_F_EMPTY_PATH,
            ) != 0
        {
            result = fail();
        }
        // Read-only again whatever happened (the caller kills the process on an error anyway).
        let ro = libc::MS_REMOUNT | libc::MS_RDONLY | cover_flags;
        if libc::mount(none, cover.as_ptr(), none, ro, options) != 0 && result.is_ok() {
            result = fail();
        }
        result
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// Starts the fill task unless one runs, the pool is full, unwanted or shut.
fn ensure_filling(inner: &Arc<Inner>) {
    {
        let mut state = inner.state();
        if state.filling || state.shut || !state.wanted || state.idle.len() >= inner.setup.size {
            return;
        }
        state.filling = true;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(REFILL_DELAY_MS)).await;
        loop {
            {
                let state = inner.state();
                if state.shut || state.idle.len() >= inner.setup.size {
                    break;
                }
            }
            match fill_one(&inner).await {
                Ok(pooled) => {
                    let unused = {
                        let mut state = inner.state();
                        state.failures = 0;
                        if state.shut {
                            Some(pooled)
                        } else {
                            state.idle.push_back(pooled);
                            None
                        }
                    };
                    if let Some(pooled) = unused {
                        discard(inner.clone(), pooled).await;
                        break;
                    }
                }
                // The next Node start tries again.
                Err(why) => {
                    let first = {
                        let mut state = inner.state();
                        state.failures += 1;
                        state.failures == 1
                    };
                    if first {
                        tracing::warn!("cannot pre-start a Node process ({why}); Node instances start normally meanwhile");
                    } else {
                        tracing::debug!("cannot pre-start a Node process ({why})");
                    }
                    break;
                }
            }
        }
        inner.state().filling = false;
    });
}

/// Starts the sweep task unless one runs: every `SWEEP_INTERVAL_S` it empties the pool once no
/// Node start wanted it for `IDLE_TTL_S`, and then ends (the next Node start fills it again).
fn ensure_sweeping(inner: &Arc<Inner>) {
    {
        let mut state = inner.state();
        if state.sweeping || state.shut {
            return;
        }
        state.sweeping = true;
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(SWEEP_INTERVAL_S)).await;
            let (forgotten, done) = {
                let mut state = inner.state();
                let ttl = Duration::from_secs(IDLE_TTL_S);
                let stale = state.last_wanted.is_none_or(|t| t.elapsed() >= ttl);
                if state.shut {
                    state.sweeping = false;
                    (Vec::new(), true)
                } else if stale && !state.filling {
                    state.wanted = false;
                    state.sweeping = false;
                    (state.idle.drain(..).collect::<Vec<_>>(), true)
                } else {
                    (Vec::new(), false)
                }
            };
            if !forgotten.is_empty() {
                tracing::debug!(
                    "no Node start for {IDLE_TTL_S} s: {} pooled Node processes stopped",
                    forgotten.len()
                );
            }
            for pooled in forgotten {
                discard(inner.clone(), pooled).await;
            }
            if done {
                break;
            }
        }
    });
}

/// Starts one pooled process and waits until it is ready.
async fn fill_one(inner: &Arc<Inner>) -> Result<Pooled, String> {
    let uid = match (&inner.setup.identity, inner.uids.get()) {
        (Ok(()), Some(uids)) => {
            let mut uids = uids.lock().unwrap_or_else(PoisonError::into_inner);
            if uids.enabled() {
                Some(uids.take().ok_or("no instance uid is free")?)
            } else {
                None
            }
        }
        _ => None,
    };
    let n = POOLED_MADE.fetch_add(1, Ordering::Relaxed);
    let (child, log, cgroup, control) = match spawn(&inner.setup, n, uid) {
        Ok(spawned) => spawned,
        Err(e) => {
            if let Some(uid) = uid {
                give_back_after_kill(inner, uid).await;
            }
            return Err(e);
        }
    };
    let pid = child.id().map(|p| p as i32).unwrap_or(0);
    let mut pooled = Pooled {
        child,
        pid,
        control,
        log,
        cgroup,
        uid,
        mnt: None,
    };
    let ready = wait_ready(&pooled.control, inner.shut_tx.subscribe()).await;
    let opened = ready.and_then(|()| {
        if pooled.uid.is_some() {
            // Our own child, not reaped: the pid is its own.
            let ns = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))
                .map_err(|e| format!("cannot open its mount namespace: {e}"))?;
            pooled.mnt = Some(OwnedFd::from(ns));
        }
        Ok(())
    });
    match opened {
        Ok(()) => Ok(pooled),
        Err(why) => {
            discard(inner.clone(), pooled).await;
            Err(why)
        }
    }
}

/// Spawns pooled process number `n`, under `uid` (with its view of the data dir) when given.
/// Returns it, the read end of its output pipe, its cgroup and the server's end of its control
/// socket.
#[allow(clippy::type_complexity)]
fn spawn(
    setup: &PoolSetup,
    n: u64,
    uid: Option<u32>,
) -> Result<
    (
        tokio::process::Child,
        OwnedFd,
        Option<InstanceCgroup>,
        OwnedFd,
    ),
    String,
> {
    let (ours, theirs) = stream_pair().map_err(|e| format!("socketpair: {e}"))?;
    let (read, write) = pipe().map_err(|e| format!("pipe: {e}"))?;
    let write2 = write.try_clone().map_err(|e| e.to_string())?;
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let home = std::env::var("HOME").unwrap_or_else(|_| "/tmp".into());
    let task_root = setup.functions_dir.join(POOL_TASK_ROOT);
    let mut cmd = tokio::process::Command::new(&setup.node);
    cmd.arg(setup.runtimes_dir.join("node/bootstrap.js"))
        .current_dir("/")
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env(super::process::INSTANCE_ID_VAR, format!("pool-{n}"))
        .env("LAMBDA_TASK_ROOT", &task_root)
        .env(CONTROL_FD_VAR, theirs.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::from(write))
        .stderr(Stdio::from(write2))
        .process_group(0)
        .kill_on_drop(true);
    let identity = match uid {
        Some(uid) => {
            let view = DataView::prepare(&setup.data_dir, &[&setup.deps_dir])
                .map_err(|e| format!("cannot prepare its view of the data dir: {e}"))?;
            Some((uid, view))
        }
        None => None,
    };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut cgroup = match &setup.cgroups {
        Some(cgroups) => Some(
            cgroups
                .create(&format!("p-{n}"), IDLE_MEMORY_MB)
                .map_err(|e| format!("cannot create its cgroup: {e}"))?,
        ),
        None => None,
    };
    let join = cgroup
        .as_mut()
        .map(InstanceCgroup::take_join_fds)
        .unwrap_or_default();
    let join_raw: Vec<i32> = join.iter().map(|fd| fd.as_raw_fd()).collect();
    let inherit = theirs.as_raw_fd();
    // SAFETY: as in `ProcessExecutor::spawn`: async-signal-safe syscalls only, on data prepared
    // before the fork; nothing allocates or locks.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            for &fd in &join_raw {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(io::Error::last_os_error());
                }
            }
            if libc::fcntl(inherit, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some((uid, view)) = &identity {
                if !private_mount_namespace() {
                    return Err(io::Error::last_os_error());
                }
                sandbox::enter(view, *uid, parent)?;
            }
            Ok(())
        });
    }
    let spawned = cmd.spawn();
    drop(join);
    drop(theirs);
    match spawned {
        Ok(child) => Ok((child, read, cgroup, ours)),
        Err(e) => {
            if let Some(mut cg) = cgroup {
                tokio::spawn(async move { cg.kill_and_remove().await });
            }
            Err(format!("cannot start node: {e}"))
        }
    }
}

/// Waits until the process on the other end of `control` reports ready (at most
/// `READY_MS_MAX`, and not past shutdown); leaves the socket non-blocking.
async fn wait_ready(control: &OwnedFd, mut shut: watch::Receiver<bool>) -> Result<(), String> {
    set_nonblocking(control).map_err(|e| e.to_string())?;
    // Registered by number while `control` (borrowed for the whole wait) stays open; it is
    // deregistered when `fd` drops at the end of this function.
    // SAFETY: `control` is borrowed, so open, for as long as `fd` is registered.
    let fd = unsafe { AsyncFd::register(control.as_fd()) }.map_err(|e| e.to_string())?;
    let mut report = Vec::new();
    let read = async {
        loop {
            let mut guard = fd.readable().await.map_err(|e| e.to_string())?;
            let mut chunk = [0u8; 512];
            let got = guard.try_io(|inner| {
                // SAFETY: recv into our buffer from our own socket.
                let n = unsafe {
                    libc::recv(
                        inner.get_ref().as_raw_fd(),
                        chunk.as_mut_ptr().cast(),
                        chunk.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match got {
                Ok(Ok(0)) => return Err("it exited before it was ready".to_string()),
                Ok(Ok(n)) => {
                    report.extend_from_slice(&chunk[..n]);
                    if report.contains(&b'\n') {
                        return Ok(());
                    }
                    if report.len() > READY_BYTES_MAX {
                        return Err("its report is too long".to_string());
                    }
                }
                Ok(Err(e)) => return Err(e.to_string()),
                Err(_would_block) => continue,
            }
        }
    };
    tokio::select! {
        read = tokio::time::timeout(Duration::from_millis(READY_MS_MAX), read) => {
            read.map_err(|_| format!("not ready within {READY_MS_MAX} ms"))??;
        }
        _ = shut.wait_for(|shut| *shut) => return Err("the server is stopping".into()),
    }
    let line = report.split(|&b| b == b'\n').next().unwrap_or_default();
    let reply: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| format!("bad ready report: {e}"))?;
    if reply.get("ready").and_then(serde_json::Value::as_bool) == Some(true) {
        return Ok(());
    }
    match reply.get("refused").and_then(serde_json::Value::as_str) {
        Some(reason) => Err(format!("it refused: {reason}")),
        None => Err(format!("unexpected report {reply}")),
    }
}

/// Kills a pooled process that will not serve, removes its cgroup and gives its uid back once
/// nothing runs under it.
async fn discard(inner: Arc<Inner>, mut pooled: Pooled) {
    if pooled.pid > 0 {
        // SAFETY: the process group of our own child, not reaped yet (its id cannot be reused).
        unsafe {
            libc::killpg(pooled.pid, libc::SIGKILL);
        }
    }
    let _ = pooled.child.kill().await;
    if let Some(cg) = pooled.cgroup.as_mut() {
        cg.kill_and_remove().await;
    }
    if let Some(uid) = pooled.uid {
        give_back_after_kill(&inner, uid).await;
    }
}

async fn give_back_after_kill(inner: &Inner, uid: u32) {
    let _ = tokio::task::spawn_blocking(move || identity::kill_all_of(uid)).await;
    if let Some(uids) = inner.uids.get() {
        uids.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .give_back(uid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn startup_only_variables_keep_a_function_out_of_the_pool() {
        for key in [
            "NODE_OPTIONS",
            "NODE_EXTRA_CA_CERTS",
            "UV_THREADPOOL_SIZE",
            "LD_LIBRARY_PATH",
            "LD_PRELOAD",
            "OPENSSL_CONF",
            "SSL_CERT_FILE",
            "GLIBC_TUNABLES",
            "MALLOC_ARENA_MAX",
        ] {
            assert!(startup_only(key), "{key}");
        }
        for key in [
            "NODE_PATH",
            "NODE_ENV",
            "TZ",
            "PATH",
            "MY_NODE_OPTIONS",
            "AWS_REGION",
        ] {
            assert!(!startup_only(key), "{key}");
        }
    }

    /// A child in a view of the data dir with nothing in it (as a pooled process) sees, once
    /// `show_code` ran, exactly the code dir, read-only even for root, and no other function's.
    #[test]
    fn shown_code_appears_read_only_in_the_waiting_process_only() {
        use std::io::{BufRead, Write};
        use std::os::unix::process::CommandExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP shown_code_appears_read_only: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let data = std::path::absolute(dir.path()).unwrap();
        let code = data.join("functions/f/code-1");
        let other = data.join("functions/g/code-1");
        for d in [&code, &other] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("x"), b"hi").unwrap();
        }
        let view = DataView::prepare(&data, &[]).unwrap();
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let (c, o) = (code.display(), other.display());
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(format!(
                "ls {c} 2>&1 || echo before-hidden; echo waiting; read go; cat {c}/x; echo; \
                 cat {o}/x 2>&1 || echo other-hidden; touch {c}/y 2>&1 || echo read-only"
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // SAFETY: only syscalls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if !private_mount_namespace() {
                    return Err(io::Error::last_os_error());
                }
                sandbox::enter(&view, 0, parent)
            });
        }
        let mut child = cmd.spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut before = String::new();
        while !before.contains("waiting") {
            assert!(out.read_line(&mut before).unwrap() > 0, "{before}");
        }
        assert!(before.contains("before-hidden"), "{before}");
        let ns =
            OwnedFd::from(std::fs::File::open(format!("/proc/{}/ns/mnt", child.id())).unwrap());
        show_code(&ns, &data, &code).unwrap();
        child.stdin.take().unwrap().write_all(b"go\n").unwrap();
        let mut after = String::new();
        std::io::Read::read_to_string(&mut out, &mut after).unwrap();
        child.wait().unwrap();
        let lines: Vec<&str> = after.lines().collect();
        assert_eq!(lines[0], "hi", "{after}");
        assert!(after.contains("other-hidden"), "{after}");
        assert!(after.contains("read-only"), "{after}");
        // The server's own view is untouched: nothing was mounted here.
        assert!(!code.join("y").exists());
        assert!(std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .all(|l| !l.contains(&*data.to_string_lossy())));
    }

    #[test]
    fn opt_out_values() {
        assert!(opted_out(Some("false")));
        assert!(opted_out(Some(" 0 ")));
        assert!(opted_out(Some("Off")));
        assert!(!opted_out(Some("true")));
        assert!(!opted_out(None));
    }
}
