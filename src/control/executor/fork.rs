//! Fork starts for the process executor's Python instances: the first start of a function
//! version starts a *template* that imports the handler (module init) and then waits; every
//! instance is a fork of it that only takes its own output, environment and cgroup and enters the
//! `/next` loop (SOCK / SnapStart style). See docs/cold-starts.md for the design and what a
//! function must respect.
//!
//! Runs on the control-plane thread; the blocking socket exchanges with a template run on tokio's
//! blocking pool (bounded by `TEMPLATE_INIT_MS_MAX` and `FORK_REPLY_MS_MAX`), `retire` on the
//! blocking pool of a management call.
//!
//! Protocol (a `SOCK_SEQPACKET` socketpair; the template's end is inherited across exec and named
//! by `_LAMBDA_FORK_CONTROL_FD`): the template sends `{"ready":true}` once its init is done, or
//! `{"refused":REASON}` (init error, threads) and exits. A fork request is `{}` with one end of a
//! new `SOCK_STREAM` pair attached (SCM_RIGHTS); the template forks and answers `{"pid":N}` with a
//! pidfd of the child, or `{"error":...}`. The child waits on the pair while the server moves it
//! into a cgroup of its own, then reads one byte (`FORK_MOVED`) that says it was moved (a spare
//! then copies the template's pages into its own memory while it waits); the *start message* on
//! the pair (`{"env":{...}}`, the instance's
//! environment, with the write end of its output pipe attached) makes it the instance. Each
//! template keeps one such child ready (`Spare`), so that a start pays neither the fork nor the
//! cgroup move (milliseconds to tens of milliseconds in the kernel). When a child ends, the
//! template reaps it and writes its 4-byte wait status on the pair, which is how
//! `ForkInstance::wait` learns the exit; if the template is gone first, the pidfd says when.
//!
//! Identity: a template runs under the uid of the start that created it, and all its forks share
//! that uid (an instance cannot give its forks fresh uids without privilege). The uid goes back to
//! the pool only once the template and every fork are gone, after everything still running under
//! it was killed (`Template`'s drop); siblings of one function version can therefore take each
//! other's invocations, instances of other functions cannot (docs/isolation.md).
//!
//! Limits: at most `TEMPLATES_MAX` templates (least recently used dropped first), each, and its
//! spare, in its own cgroup limited to the function's MemorySize. Every failure falls back to an ordinary start
//! (`None` from `Templates::start`); a failure of the template itself (refusal, init error,
//! timeout) turns fork starts off for that function version until its next change.
//!
//! Invariants: a uid a template holds is not in the pool until the template and its forks are
//! gone and nothing runs under it; a fork's end never kills under its uid (its siblings run there).

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use super::cgroup::{Cgroups, InstanceCgroup};
use super::process::{pipe, ProcessExecutor};
use super::{BoxFuture, ExecError, Instance};
use crate::control::identity;
use crate::model::types::{ExitInfo, Function, InstanceSpec};

/// A function's own variable that turns fork starts off for it (`false` or `0`).
pub const FORK_OPT_OUT_VAR: &str = "LAMBDA_USE_FORK";
/// The variable naming the template's control socket (the runtime removes it at once).
const CONTROL_FD_VAR: &str = "_LAMBDA_FORK_CONTROL_FD";
/// How long a template may take to import the handler: AWS's init limit. Beyond it the template
/// is killed and the instance starts normally.
const TEMPLATE_INIT_MS_MAX: u64 = 10_000;
/// How long a template may take to answer a fork request (a fork takes milliseconds; a template
/// that takes longer is stopped or broken and is dropped).
const FORK_REPLY_MS_MAX: u64 = 2_000;
/// Templates kept at once: each holds a whole initialised interpreter (up to its MemorySize).
pub const TEMPLATES_MAX: usize = 32;
/// Largest answer of a template (`{"pid":N}` or a short error).
const REPLY_BYTES_MAX: usize = 4096;

/// Whether `spec`'s instance may be a fork: a Python runtime, not opted out.
pub fn eligible(spec: &InstanceSpec) -> bool {
    let c = &spec.function.config;
    c.runtime.starts_with("python")
        && !opted_out(c.environment.get(FORK_OPT_OUT_VAR).map(String::as_str))
}

fn opted_out(value: Option<&str>) -> bool {
    matches!(
        value.map(|v| v.trim().to_ascii_lowercase()).as_deref(),
        Some("false" | "0" | "no" | "off")
    )
}

/// The state of one function version's (pool's) template.
enum Slot<T> {
    /// A start is creating it; starts meanwhile run normally.
    Starting { generation: u64 },
    Ready {
        generation: u64,
        template: T,
        used: Instant,
    },
    /// The template refused or failed: normal starts until the function changes.
    NoFork { generation: u64 },
}

impl<T> Slot<T> {
    fn generation(&self) -> u64 {
        match self {
            Slot::Starting { generation }
            | Slot::Ready { generation, .. }
            | Slot::NoFork { generation } => *generation,
        }
    }
}

/// What a start does.
#[derive(Debug, PartialEq)]
enum Plan<T> {
    Fork(T),
    /// Create the template (the slot is now `Starting`), then fork from it.
    Create,
    Exec,
}

/// Decides a start of `key` at `generation`; returns the templates to drop (replaced by a newer
/// generation, or evicted to stay within `TEMPLATES_MAX`).
fn plan<T: Clone>(
    slots: &mut HashMap<String, Slot<T>>,
    key: &str,
    generation: u64,
    now: Instant,
) -> (Plan<T>, Vec<T>) {
    let mut dropped = Vec::new();
    match slots.get_mut(key) {
        // A start for an older generation than the template's: those instances are retiring.
        Some(slot) if slot.generation() > generation => return (Plan::Exec, dropped),
        Some(Slot::Ready {
            generation: g,
            template,
            used,
        }) if *g == generation => {
            *used = now;
            return (Plan::Fork(template.clone()), dropped);
        }
        Some(slot) if slot.generation() == generation => return (Plan::Exec, dropped),
        _ => {}
    }
    if let Some(Slot::Ready { template, .. }) = slots.remove(key) {
        dropped.push(template);
    }
    let ready = |s: &Slot<T>| matches!(s, Slot::Ready { .. });
    while slots.values().filter(|s| ready(s)).count() >= TEMPLATES_MAX {
        let oldest = slots
            .iter()
            .filter_map(|(k, s)| match s {
                Slot::Ready { used, .. } => Some((*used, k.clone())),
                _ => None,
            })
            .min()
            .map(|(_, k)| k);
        match oldest.and_then(|k| slots.remove(&k)) {
            Some(Slot::Ready { template, .. }) => dropped.push(template),
            _ => break,
        }
    }
    slots.insert(key.to_string(), Slot::Starting { generation });
    (Plan::Create, dropped)
}

/// The process executor's templates, by pool key.
pub struct Templates {
    slots: Mutex<HashMap<String, Slot<Arc<Template>>>>,
    uid_tx: mpsc::UnboundedSender<u32>,
    uid_rx: Mutex<Option<mpsc::UnboundedReceiver<u32>>>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

impl Templates {
    pub fn new() -> Templates {
        let (uid_tx, uid_rx) = mpsc::unbounded_channel();
        Templates {
            slots: Mutex::new(HashMap::new()),
            uid_tx,
            uid_rx: Mutex::new(Some(uid_rx)),
        }
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot<Arc<Template>>>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Where uids of templates that are gone are given back (taken once).
    pub fn take_uid_returns(&self) -> Option<mpsc::UnboundedReceiver<u32>> {
        self.uid_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Starts `spec`'s instance as a fork, creating the template on the version's first start;
    /// `None`: start it normally instead.
    pub async fn start(
        &self,
        exec: &ProcessExecutor,
        spec: &InstanceSpec,
    ) -> Option<Box<dyn Instance>> {
        let key = spec.function.pool_key.clone();
        let generation = spec.function.generation;
        let (plan, dropped) = plan(&mut self.slots(), &key, generation, Instant::now());
        for template in dropped {
            template.kill_now();
        }
        match plan {
            Plan::Exec => None,
            Plan::Fork(template) => match fork(exec, template.clone(), spec, None).await {
                Ok(instance) => Some(instance),
                Err(why) => {
                    tracing::warn!(function = %key, "fork start failed ({why}); the template is dropped and the instance starts normally");
                    let mut slots = self.slots();
                    if matches!(slots.get(&key), Some(Slot::Ready { template: t, .. }) if Arc::ptr_eq(t, &template))
                    {
                        slots.remove(&key);
                    }
                    drop(slots);
                    template.kill_now();
                    None
                }
            },
            Plan::Create => self.create(exec, spec, key, generation).await,
        }
    }

    /// Puts `slot` for `key` in place of the `Starting` entry this start made; false when that
    /// entry is gone (the function changed or was deleted meanwhile).
    fn settle(&self, key: &str, generation: u64, slot: Slot<Arc<Template>>) -> bool {
        let mut slots = self.slots();
        match slots.get(key) {
            Some(Slot::Starting { generation: g }) if *g == generation => {
                slots.insert(key.to_string(), slot);
                true
            }
            _ => false,
        }
    }

    async fn create(
        &self,
        exec: &ProcessExecutor,
        spec: &InstanceSpec,
        key: String,
        generation: u64,
    ) -> Option<Box<dyn Instance>> {
        let no_fork = Slot::NoFork { generation };
        let prepared = seqpacket_pair().and_then(|control| {
            let (read, write) = pipe()?;
            let keep = write.try_clone()?;
            Ok((control, (read, write), keep))
        });
        let ((ours, theirs), log, keep) = match prepared {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot prepare a fork template: {e}");
                self.settle(&key, generation, no_fork);
                return None;
            }
        };
        let name = format!("t-{}", spec.id);
        let inherit = Some((CONTROL_FD_VAR, theirs.as_raw_fd()));
        let spawned = exec.spawn(spec, &name, log, inherit).await;
        drop(theirs);
        let Ok(mut spawned) = spawned else {
            // The normal start fails the same way and reports why.
            self.settle(&key, generation, no_fork);
            return None;
        };
        let pid = spawned.child.id().map(|p| p as i32).unwrap_or(0);
        let waited = tokio::task::spawn_blocking(move || {
            wait_ready(&ours, TEMPLATE_INIT_MS_MAX).map(|()| ours)
        })
        .await
        .unwrap_or_else(|e| Err(format!("the wait failed: {e}")));
        let control = match waited {
            Ok(control) => control,
            Err(why) => {
                tracing::info!(function = %key, "no fork template ({why}): its instances start normally until it changes");
                self.settle(&key, generation, no_fork);
                let _ = spawned.child.kill().await;
                if let Some(cg) = spawned.cgroup.as_mut() {
                    cg.kill_and_remove().await;
                }
                // The normal start reuses the uid: nothing of the template may be left under it.
                if let Some(uid) = spawned.uid {
                    let _ = tokio::task::spawn_blocking(move || identity::kill_all_of(uid)).await;
                }
                return None;
            }
        };
        let template = Arc::new(Template {
            pid,
            control: Mutex::new(control),
            uid: Mutex::new(spawned.uid),
            process: Mutex::new(Some((spawned.child, spawned.cgroup))),
            uid_tx: self.uid_tx.clone(),
            spare: Mutex::new(SpareState::Empty),
            killed: std::sync::atomic::AtomicBool::new(false),
            _function: spec.function.clone(),
        });
        match fork(exec, template.clone(), spec, Some((spawned.log, keep))).await {
            Ok(instance) => {
                let ready = Slot::Ready {
                    generation,
                    template: template.clone(),
                    used: Instant::now(),
                };
                if !self.settle(&key, generation, ready) {
                    // Retired meanwhile: this instance runs on, the template goes.
                    template.kill_now();
                }
                Some(instance)
            }
            Err(why) => {
                tracing::warn!(function = %key, "the first fork of a template failed ({why}); its instances start normally until it changes");
                self.settle(&key, generation, no_fork);
                // The uid is the normal start's again: the template must not give it back, and
                // nothing of it may run under it.
                let uid = template
                    .uid
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                template.kill_now();
                drop(template);
                if let Some(uid) = uid {
                    let _ = tokio::task::spawn_blocking(move || identity::kill_all_of(uid)).await;
                }
                None
            }
        }
    }

    /// Drops the template of pool `pool` (its code or configuration changed, or it was deleted).
    pub fn retire(&self, pool: &str) {
        let removed = self.slots().remove(pool);
        if let Some(Slot::Ready { template, .. }) = removed {
            template.kill_now();
        }
    }

    /// Kills every template and waits until they are gone (the server stops).
    pub async fn shutdown(&self) {
        let slots: Vec<_> = self.slots().drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Slot::Ready { template, .. } = slot {
                template.kill_now();
                let process = template
                    .process
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                let uid = template
                    .uid
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                let pid = template.pid;
                drop(template);
                teardown(pid, process, uid, None).await;
            }
        }
    }
}

/// A running template.
struct Template {
    /// Its pid, which is also its process group (its forks have their own groups).
    pid: i32,
    /// The server's end of the control socket; one request at a time.
    control: Mutex<OwnedFd>,
    /// The uid it and its forks run under, when it has its own: given back when it is dropped.
    uid: Mutex<Option<u32>>,
    /// Its process and cgroup, killed and removed when it is dropped.
    process: Mutex<Option<(tokio::process::Child, Option<InstanceCgroup>)>>,
    uid_tx: mpsc::UnboundedSender<u32>,
    /// Its child waiting to be the next instance.
    spare: Mutex<SpareState>,
    /// Set by `kill_now`: no new spare is made.
    killed: std::sync::atomic::AtomicBool,
    /// Held: its code and layers stay on disk while it lives.
    _function: Arc<Function>,
}

impl Template {
    fn killed(&self) -> bool {
        self.killed.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn take_spare(&self) -> Option<Spare> {
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        match std::mem::replace(&mut *spare, SpareState::Empty) {
            SpareState::Ready(s) => Some(s),
            other => {
                *spare = other;
                None
            }
        }
    }

    /// Kills the template process and its spare now; its forks run on (their own process groups
    /// and cgroups). The cgroups go when it is dropped.
    fn kill_now(&self) {
        self.killed
            .store(true, std::sync::atomic::Ordering::Relaxed);
        if let SpareState::Ready(spare) =
            &*self.spare.lock().unwrap_or_else(PoisonError::into_inner)
        {
            signal_pidfd(&spare.pidfd, libc::SIGKILL);
        }
        if self.pid > 0 {
            // SAFETY: killpg of the template's own group; the template is not reaped before its
            // drop, so the group id cannot have been reused.
            unsafe {
                libc::killpg(self.pid, libc::SIGKILL);
            }
        }
    }
}

impl Drop for Template {
    /// The template and every fork are gone: remove the template's cgroup, kill whatever still
    /// runs under its uid, and give the uid back.
    fn drop(&mut self) {
        let process = self
            .process
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let uid = self
            .uid
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let tx = self.uid_tx.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(teardown(self.pid, process, uid, Some(tx)));
            }
            // Outside the runtime (the server is exiting): the process dies with the drop of its
            // child handle (kill on drop); the uid pool goes with the server.
            Err(_) => self.kill_now(),
        }
    }
}

async fn teardown(
    pid: i32,
    process: Option<(tokio::process::Child, Option<InstanceCgroup>)>,
    uid: Option<u32>,
    give_back: Option<mpsc::UnboundedSender<u32>>,
) {
    if let Some((mut child, cgroup)) = process {
        if pid > 0 {
            // SAFETY: the template's own group, not reaped yet (see `kill_now`).
            unsafe {
                libc::killpg(pid, libc::SIGKILL);
            }
        }
        let _ = child.kill().await;
        if let Some(mut cg) = cgroup {
            cg.kill_and_remove().await;
        }
    }
    if let Some(uid) = uid {
        let _ = tokio::task::spawn_blocking(move || identity::kill_all_of(uid)).await;
        if let Some(tx) = give_back {
            let _ = tx.send(uid);
        }
    }
}

/// Spares made so far: names their cgroups (`s-N`), which must be unique under the data dir's.
static SPARES_MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A child of a template that waits for its start message, already in its own cgroup: a start
/// that finds one only sends that message (the fork and, above all, the move into a cgroup,
/// which takes the kernel milliseconds to tens of milliseconds, were paid ahead of it).
struct Spare {
    pid: i32,
    pidfd: OwnedFd,
    /// The server's end of its start/status socket.
    status: OwnedFd,
    cgroup: Option<InstanceCgroup>,
}

impl Spare {
    /// Kills it (it may be waiting or gone) and removes its cgroup.
    async fn discard(mut self) {
        signal_pidfd(&self.pidfd, libc::SIGKILL);
        if let Some(cg) = self.cgroup.as_mut() {
            cg.kill_and_remove().await;
        }
    }
}

/// A template's spare child.
enum SpareState {
    Empty,
    /// A task is making one.
    Preparing,
    Ready(Spare),
}

/// Checks that a template's answer to a fork request names its own child: `pidfd` is a pidfd
/// of process `pid`, whose parent is the template (`template_pid`), and which still runs. The
/// template runs function code (its module init, which can replace `os.fork` or write on the
/// control socket itself), so its answer is not trusted: a forged pid and pidfd of another
/// process, the server's or another function's, would have the server (root) move that process
/// into this fork's cgroup and later kill it. Nothing is signalled here: on a mismatch `pidfd`
/// may be a stranger's.
fn verify_child(template_pid: i32, pid: i32, pidfd: &OwnedFd) -> Result<(), String> {
    let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))
        .map_err(|e| format!("cannot read the fork's pidfd: {e}"))?;
    let of_pidfd = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse::<i32>().ok());
    if of_pidfd != Some(pid) {
        return Err(format!(
            "the template named pid {pid} with a descriptor of {of_pidfd:?}: not its fork"
        ));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("cannot read the fork's stat: {e}"))?;
    let parent = parent_in_stat(&stat);
    if parent != Some(template_pid) {
        return Err(format!(
            "pid {pid} named by the template is a child of {parent:?}, not of the template ({template_pid})"
        ));
    }
    // Still the same process: had it ended, its pid could belong to another one by now.
    if !pidfd_alive(pidfd) {
        return Err("the fork ended at once".into());
    }
    Ok(())
}

/// The parent pid in the text of `/proc/PID/stat` (the field after the state; the command name
/// before them is in parentheses and may itself contain spaces and parentheses).
fn parent_in_stat(stat: &str) -> Option<i32> {
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// Whether the process behind `pidfd` still runs (its pidfd is not readable yet).
fn pidfd_alive(pidfd: &OwnedFd) -> bool {
    let mut pfd = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd with a zero timeout.
    unsafe { libc::poll(&mut pfd, 1, 0) == 0 }
}

fn signal_pidfd(pidfd: &OwnedFd, sig: i32) {
    // SAFETY: pidfd_send_signal on a pidfd we own reaches exactly its process (or nothing).
    unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, 0, 0);
    }
}

/// The byte a fork reads on its status socket once it is in its own cgroup (before its start
/// message).
const FORK_MOVED: &[u8; 1] = b"m";

/// Has `template` fork a child that waits for its start, moved into a new cgroup `name` (when
/// the server has cgroups) limited to `memory_mb`.
async fn prepare(
    cgroups: Option<&Arc<Cgroups>>,
    template: &Arc<Template>,
    name: &str,
    memory_mb: u32,
) -> Result<Spare, String> {
    let mut cgroup = match cgroups {
        Some(cgroups) => Some(
            cgroups
                .create(name, memory_mb)
                .map_err(|e| format!("cannot create its cgroup: {e}"))?,
        ),
        None => None,
    };
    let forked = async {
        let (status, theirs) = stream_pair().map_err(|e| e.to_string())?;
        let t = template.clone();
        let (pid, pidfd) = tokio::task::spawn_blocking(move || {
            let control = t.control.lock().unwrap_or_else(PoisonError::into_inner);
            // `theirs` is dropped here: the child has its own copy.
            request_fork(&control, theirs.as_raw_fd())
        })
        .await
        .map_err(|e| e.to_string())??;
        // Before the pid or pidfd is used for anything (a cgroup move, a signal).
        verify_child(template.pid, pid, &pidfd)?;
        // Into its own cgroup before it runs any of an instance's code.
        if let Some(cg) = cgroup.as_mut() {
            let text = pid.to_string();
            for fd in cg.take_join_fds() {
                // SAFETY: writing our buffer to our own open cgroup.procs descriptor.
                let n = unsafe { libc::write(fd.as_raw_fd(), text.as_ptr().cast(), text.len()) };
                if n != text.len() as isize {
                    let e = io::Error::last_os_error();
                    signal_pidfd(&pidfd, libc::SIGKILL);
                    return Err(format!("cannot move the fork into its cgroup: {e}"));
                }
            }
        }
        // Tells the child it is in its own cgroup now: a spare copies the pages it shares with
        // the template only after this byte (bootstrap.py `_prefault`), so the copies are
        // charged to its own cgroup and limit, not to the template's.
        // SAFETY: writes one byte from a live buffer to our own end of its socket.
        let n = unsafe { libc::write(status.as_raw_fd(), FORK_MOVED.as_ptr().cast(), 1) };
        if n != 1 {
            let e = io::Error::last_os_error();
            signal_pidfd(&pidfd, libc::SIGKILL);
            return Err(format!("cannot tell the fork it was moved: {e}"));
        }
        Ok((pid, pidfd, status))
    }
    .await;
    match forked {
        Ok((pid, pidfd, status)) => Ok(Spare {
            pid,
            pidfd,
            status,
            cgroup,
        }),
        Err(e) => {
            if let Some(cg) = cgroup.as_mut() {
                cg.kill_and_remove().await;
            }
            Err(e)
        }
    }
}

/// Starts a new spare for `template` in the background unless it has one or one is coming.
fn refill(cgroups: Option<Arc<Cgroups>>, template: &Arc<Template>, memory_mb: u32) {
    {
        let mut spare = template
            .spare
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !matches!(*spare, SpareState::Empty) || template.killed() {
            return;
        }
        *spare = SpareState::Preparing;
    }
    let template = template.clone();
    tokio::spawn(async move {
        let n = SPARES_MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let made = prepare(cgroups.as_ref(), &template, &format!("s-{n}"), memory_mb).await;
        let unused = {
            let mut slot = template
                .spare
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match made {
                Ok(spare) if !template.killed() => {
                    *slot = SpareState::Ready(spare);
                    None
                }
                Ok(spare) => {
                    *slot = SpareState::Empty;
                    Some(spare)
                }
                // The next start forks inline (and tries again).
                Err(_) => {
                    *slot = SpareState::Empty;
                    None
                }
            }
        };
        if let Some(spare) = unused {
            spare.discard().await;
        }
    });
}

/// Starts `spec`'s instance from `template`: its spare when it has one, a new fork otherwise;
/// then has a new spare made. `log`: the output pipe (read, write) to give it, a new one when
/// `None`.
async fn fork(
    exec: &ProcessExecutor,
    template: Arc<Template>,
    spec: &InstanceSpec,
    log: Option<(OwnedFd, OwnedFd)>,
) -> Result<Box<dyn Instance>, String> {
    let memory_mb = spec.function.config.memory_mb;
    let spare = match template.take_spare() {
        // A spare that died while it waited (killed from outside) would be an instance that
        // ends at once: make another.
        Some(spare) if pidfd_alive(&spare.pidfd) => spare,
        dead => {
            if let Some(spare) = dead {
                spare.discard().await;
            }
            prepare(exec.cgroups(), &template, &spec.id.to_string(), memory_mb).await?
        }
    };
    let creates_template = log.is_some();
    let (read, write) = match log {
        Some(log) => log,
        None => match pipe() {
            Ok(log) => log,
            Err(e) => {
                spare.discard().await;
                return Err(e.to_string());
            }
        },
    };
    let env: serde_json::Map<String, serde_json::Value> = exec
        .full_env(spec)
        .into_iter()
        .map(|(k, v)| (k, serde_json::Value::String(v)))
        .collect();
    let body = serde_json::json!({ "env": env }).to_string();
    let uid = *template.uid.lock().unwrap_or_else(PoisonError::into_inner);
    let mut instance = launch(spare, body.as_bytes(), write, uid, template.clone()).await?;
    instance.log = Some(read);
    instance.one_off_init = creates_template;
    refill(exec.cgroups().cloned(), &template, memory_mb);
    Ok(Box::new(instance))
}

/// Sends `spare` its start message (`body`, with `log` attached) and makes it an instance.
async fn launch(
    spare: Spare,
    body: &[u8],
    log: OwnedFd,
    uid: Option<u32>,
    template: Arc<Template>,
) -> Result<ForkInstance, String> {
    let sent = send_with_fds(spare.status.as_raw_fd(), body, &[log.as_raw_fd()])
        .and_then(|()| set_nonblocking(&spare.status));
    drop(log);
    if let Err(e) = sent {
        spare.discard().await;
        return Err(format!("cannot start the fork: {e}"));
    }
    let Spare {
        pid,
        pidfd,
        status,
        mut cgroup,
    } = spare;
    let pidfd_raw = pidfd.as_raw_fd();
    let registered = (|| {
        // SAFETY: both are OwnedFds moved in: nothing else can close or reuse them while they
        // are registered, and they are deregistered when the AsyncFds drop.
        let pidfd = unsafe { AsyncFd::register(pidfd) }.map_err(|e| e.to_string())?;
        // SAFETY: as above.
        let status = unsafe { AsyncFd::register(status) }.map_err(|e| {
            // SAFETY: the pidfd is still open (held by `pidfd`): the signal reaches the fork.
            unsafe {
                libc::syscall(libc::SYS_pidfd_send_signal, pidfd_raw, libc::SIGKILL, 0, 0);
            }
            e.to_string()
        })?;
        Ok::<_, String>((pidfd, status))
    })();
    let (pidfd, status) = match registered {
        Ok(fds) => fds,
        Err(e) => {
            if let Some(cg) = cgroup.as_mut() {
                cg.kill_and_remove().await;
            }
            return Err(format!("cannot watch the fork: {e}"));
        }
    };
    Ok(ForkInstance {
        pid,
        pidfd,
        status,
        status_open: true,
        log: None,
        cgroup,
        uid,
        exit: None,
        one_off_init: false,
        _template: template,
    })
}

/// One instance forked from a template.
struct ForkInstance {
    /// Its pid, also its process group.
    pid: i32,
    /// Readable once it has ended (whoever reaps it).
    pidfd: AsyncFd<OwnedFd>,
    /// Where its template writes its wait status when it ends.
    status: AsyncFd<OwnedFd>,
    /// False once the status socket closed without a status (the template is gone).
    status_open: bool,
    log: Option<OwnedFd>,
    cgroup: Option<InstanceCgroup>,
    uid: Option<u32>,
    /// How it ended, once known.
    exit: Option<ExitInfo>,
    /// Whether this is the template's first fork, whose start included the template's init
    /// (`Instance::one_off_init`).
    one_off_init: bool,
    /// Held: the template's uid is given back only when every fork is gone.
    _template: Arc<Template>,
}

impl ForkInstance {
    fn signal_group(&self, sig: i32) {
        if self.exit.is_none() && pidfd_alive(self.pidfd.get_ref()) {
            // SAFETY: signals to a live process's own group: a running process keeps its pid
            // (and so its group id) from being reused; an ended one is not signalled.
            unsafe {
                libc::killpg(self.pid, sig);
            }
        }
    }

    async fn wait_exit(&mut self) -> ExitInfo {
        while self.status_open {
            let Ok(mut guard) = self.status.readable().await else {
                break;
            };
            let mut buf = [0u8; 4];
            let read = guard.try_io(|fd| {
                // SAFETY: recv into our 4-byte buffer from our own socket.
                let n = unsafe {
                    libc::recv(
                        fd.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        4,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n < 0 {
                    Err(io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match read {
                Ok(Ok(4)) => return exit_info(i32::from_le_bytes(buf)),
                Ok(_) => self.status_open = false,
                Err(_would_block) => continue,
            }
        }
        let _ = self.pidfd.readable().await;
        ExitInfo {
            code: None,
            signal: None,
            oom_killed: false,
        }
    }
}

/// A wait status as `ExitInfo`.
fn exit_info(status: i32) -> ExitInfo {
    ExitInfo {
        code: libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)),
        signal: libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status)),
        oom_killed: false,
    }
}

impl Instance for ForkInstance {
    fn take_log(&mut self) -> Option<OwnedFd> {
        self.log.take()
    }

    fn wait(&mut self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(async move {
            let mut exit = match &self.exit {
                Some(exit) => exit.clone(),
                None => {
                    let exit = self.wait_exit().await;
                    self.exit = Some(exit.clone());
                    exit
                }
            };
            exit.oom_killed = self.cgroup.as_ref().is_some_and(InstanceCgroup::oom_killed);
            exit
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // The whole group, as for an ordinary instance, even once the fork itself has ended:
            // a process group id is not reused while the group has members.
            // SAFETY: killpg of the group the fork created; a stale one yields ESRCH.
            unsafe {
                libc::killpg(self.pid, libc::SIGKILL);
                libc::killpg(self.pid, libc::SIGCONT);
            }
            // SAFETY: pidfd_send_signal on our own pidfd reaches exactly this process.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    self.pidfd.get_ref().as_raw_fd(),
                    libc::SIGKILL,
                    0,
                    0,
                );
            }
            if let Some(cg) = self.cgroup.as_mut() {
                cg.kill_and_remove().await;
            }
        })
    }

    fn pause(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            self.signal_group(libc::SIGSTOP);
            Ok(())
        })
    }

    fn resume(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            self.signal_group(libc::SIGCONT);
            Ok(())
        })
    }

    fn uid(&self) -> Option<u32> {
        self.uid
    }

    fn forked(&self) -> bool {
        true
    }

    fn one_off_init(&self) -> bool {
        self.one_off_init
    }
}

/// Waits for the template's first message: `Ok` when it is ready, otherwise why not.
fn wait_ready(control: &OwnedFd, timeout_ms: u64) -> Result<(), String> {
    let mut buf = [0u8; REPLY_BYTES_MAX];
    let (n, _fds) = recv_with_fds(control.as_raw_fd(), &mut buf, timeout_ms)
        .map_err(|e| format!("the template did not report: {e}"))?;
    if n == 0 {
        return Err("the template exited during its init".into());
    }
    let reply: serde_json::Value =
        serde_json::from_slice(&buf[..n]).map_err(|e| format!("bad template message: {e}"))?;
    if reply.get("ready").and_then(serde_json::Value::as_bool) == Some(true) {
        return Ok(());
    }
    match reply.get("refused").and_then(serde_json::Value::as_str) {
        Some(reason) => Err(format!("the template refused: {reason}")),
        None => Err(format!("unexpected template message {reply}")),
    }
}

/// Asks the template for a child (which waits for its start message on `status`) and returns
/// the child's pid and pidfd.
fn request_fork(control: &OwnedFd, status: RawFd) -> Result<(i32, OwnedFd), String> {
    send_with_fds(control.as_raw_fd(), b"{}", &[status])
        .map_err(|e| format!("the template does not take requests: {e}"))?;
    let mut buf = [0u8; REPLY_BYTES_MAX];
    let (n, mut fds) = recv_with_fds(control.as_raw_fd(), &mut buf, FORK_REPLY_MS_MAX)
        .map_err(|e| format!("the template did not answer: {e}"))?;
    if n == 0 {
        return Err("the template is gone".into());
    }
    let reply: serde_json::Value =
        serde_json::from_slice(&buf[..n]).map_err(|e| format!("bad template answer: {e}"))?;
    match (
        reply.get("pid").and_then(serde_json::Value::as_i64),
        fds.len(),
    ) {
        (Some(pid), 1) if pid > 0 => Ok((pid as i32, fds.remove(0))),
        _ => Err(format!("the template could not fork: {reply}")),
    }
}

fn socketpair(kind: i32) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid two-element array for socketpair to fill.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            kind | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded: both descriptors are open and ours alone.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(libc::SOCK_SEQPACKET)
}

pub(super) fn stream_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    socketpair(libc::SOCK_STREAM)
}

/// At most this much is discarded by one `discard_waiting` (a pipe holds 64 KiB by default).
const DISCARD_BYTES_MAX: usize = 256 * 1024;

/// Reads and drops what waits in the non-blocking pipe or FIFO `fd` (a pooled process's or a
/// slot's output before its claim), at most `DISCARD_BYTES_MAX`: it runs on the control-plane
/// thread and must end even if something keeps writing.
pub(super) fn discard_waiting(fd: &OwnedFd) {
    let mut buf = [0u8; 16 * 1024];
    for _ in 0..DISCARD_BYTES_MAX / buf.len() {
        // SAFETY: reads at most `buf.len()` bytes into a live buffer from a descriptor we own.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            return;
        }
    }
}

pub(super) fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl flags of our own open descriptor.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Descriptors one message carries at most (ours carry one or two).
const MESSAGE_FDS_MAX: usize = 4;

/// One message with `fds` attached (SCM_RIGHTS).
fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    assert!(fds.len() <= MESSAGE_FDS_MAX);
    let bytes = std::mem::size_of_val(fds);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // u64 words: the control buffer must be aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero msghdr is valid; every pointer set below outlives the sendmsg call,
    // and CMSG_* stay inside `control` (CMSG_SPACE of 4 descriptors is 32 bytes, it holds 64).
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(bytes as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr().cast::<u8>(), libc::CMSG_DATA(cmsg), bytes);
        }
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL)
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(io::Error::other("short send"));
    }
    Ok(())
}

/// One message and the descriptors attached to it, waiting at most `timeout_ms`; 0 bytes: the
/// other end closed.
fn recv_with_fds(
    sock: RawFd,
    buf: &mut [u8],
    timeout_ms: u64,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let deadline = Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        let mut pfd = libc::pollfd {
            fd: sock,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll on one valid pollfd.
        let ready =
            unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if ready < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if ready > 0 {
            break;
        }
    }
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let mut control = [0u64; 8];
    let mut fds = Vec::new();
    // SAFETY: as in `send_with_fds`; received descriptors are wrapped at once (close-on-exec).
    let n = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n >= 0 {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg);
                    let len = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        n
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((n as usize, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pidfd_of(pid: i32) -> OwnedFd {
        // SAFETY: pidfd_open on a pid; the result is checked before it is owned.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
        assert!(fd >= 0, "pidfd_open {pid}: {}", io::Error::last_os_error());
        // SAFETY: a new descriptor of ours alone.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    #[test]
    fn parent_pid_is_read_past_a_command_name_with_spaces_and_parens() {
        assert_eq!(parent_in_stat("42 (a) b) c) S 7 42 42 0"), Some(7));
        assert_eq!(parent_in_stat("42 (python3) R 1 2 3"), Some(1));
        assert_eq!(parent_in_stat("garbage"), None);
    }

    #[test]
    fn a_fork_answer_must_name_a_running_child_of_the_template_by_its_own_pidfd() {
        // This test process plays the template; `child` is its fork.
        let me = std::process::id() as i32;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        assert_eq!(verify_child(me, pid, &pidfd_of(pid)), Ok(()));
        // A process that is not the template's child (here: the test's own parent), named
        // with its own pidfd: what a template whose `os.fork` was replaced would answer.
        let parent = std::os::unix::process::parent_id() as i32;
        let err = verify_child(me, parent, &pidfd_of(parent)).unwrap_err();
        assert!(err.contains("not of the template"), "{err}");
        // A pid with the pidfd of another process.
        let err = verify_child(me, pid, &pidfd_of(other.id() as i32)).unwrap_err();
        assert!(err.contains("not its fork"), "{err}");
        // Not a pidfd at all.
        let file = std::fs::File::open("/dev/null").unwrap();
        let err = verify_child(me, pid, &OwnedFd::from(file)).unwrap_err();
        assert!(err.contains("not its fork"), "{err}");
        // A child that has ended (and was reaped) is not accepted either.
        let fd = pidfd_of(pid);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(verify_child(me, pid, &fd).is_err());
        other.kill().unwrap();
        other.wait().unwrap();
    }

    #[test]
    fn opt_out_values() {
        assert!(opted_out(Some("false")));
        assert!(opted_out(Some(" 0 ")));
        assert!(opted_out(Some("OFF")));
        assert!(!opted_out(Some("true")));
        assert!(!opted_out(Some("")));
        assert!(!opted_out(None));
    }

    #[test]
    fn a_version_gets_one_template_and_a_change_replaces_it() {
        let mut slots: HashMap<String, Slot<u32>> = HashMap::new();
        let now = Instant::now();
        assert_eq!(plan(&mut slots, "f", 1, now).0, Plan::Create);
        // Created but not ready: the next start runs normally.
        assert_eq!(plan(&mut slots, "f", 1, now).0, Plan::Exec);
        slots.insert(
            "f".into(),
            Slot::Ready {
                generation: 1,
                template: 7,
                used: now,
            },
        );
        assert_eq!(plan(&mut slots, "f", 1, now).0, Plan::Fork(7));
        // An older generation's start never uses nor replaces the newer template.
        assert_eq!(plan(&mut slots, "f", 0, now), (Plan::Exec, vec![]));
        // A newer generation drops the template and creates its own.
        assert_eq!(plan(&mut slots, "f", 2, now), (Plan::Create, vec![7]));
        slots.insert("f".into(), Slot::NoFork { generation: 2 });
        assert_eq!(plan(&mut slots, "f", 2, now).0, Plan::Exec);
        assert_eq!(plan(&mut slots, "f", 3, now).0, Plan::Create);
    }

    #[test]
    fn templates_are_bounded_and_the_least_recently_used_goes() {
        let mut slots: HashMap<String, Slot<usize>> = HashMap::new();
        let start = Instant::now();
        for i in 0..TEMPLATES_MAX {
            slots.insert(
                format!("f{i}"),
                Slot::Ready {
                    generation: 1,
                    template: i,
                    used: start + Duration::from_millis(i as u64 + 10),
                },
            );
        }
        // f3 was used last of all: f0 is now the least recently used.
        let later = start + Duration::from_secs(1);
        assert_eq!(plan(&mut slots, "f3", 1, later).0, Plan::Fork(3));
        let (p, dropped) = plan(&mut slots, "new", 1, later);
        assert_eq!(p, Plan::Create);
        assert_eq!(dropped, vec![0]);
        let ready = slots
            .values()
            .filter(|s| matches!(s, Slot::Ready { .. }))
            .count();
        assert_eq!(ready, TEMPLATES_MAX - 1);
    }

    #[test]
    fn descriptors_travel_with_a_message() {
        let (a, b) = seqpacket_pair().unwrap();
        let (r, w) = pipe().unwrap();
        send_with_fds(a.as_raw_fd(), b"hello", &[w.as_raw_fd()]).unwrap();
        drop(w);
        let mut buf = [0u8; 64];
        let (n, fds) = recv_with_fds(b.as_raw_fd(), &mut buf, 1000).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(fds.len(), 1);
        // The received descriptor is the pipe's write end: what is written comes out of `r`.
        // SAFETY: plain writes and reads on our own descriptors.
        unsafe {
            assert_eq!(libc::write(fds[0].as_raw_fd(), b"x".as_ptr().cast(), 1), 1);
            let mut c = [0u8; 1];
            assert_eq!(libc::read(r.as_raw_fd(), c.as_mut_ptr().cast(), 1), 1);
            assert_eq!(&c, b"x");
        }
        drop(a);
        let (n, _) = recv_with_fds(b.as_raw_fd(), &mut buf, 1000).unwrap();
        assert_eq!(n, 0, "the peer closed");
        let (_c, d) = seqpacket_pair().unwrap();
        let e = recv_with_fds(d.as_raw_fd(), &mut buf, 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[test]
    fn wait_statuses_become_exit_info() {
        let exited = exit_info(3 << 8);
        assert_eq!((exited.code, exited.signal), (Some(3), None));
        let killed = exit_info(libc::SIGKILL);
        assert_eq!((killed.code, killed.signal), (None, Some(libc::SIGKILL)));
    }
}
