//! The Docker executor's pool of started containers ("slots") waiting for a function, so that a
//! cold start skips container create and start (docs/cold-starts-docker.md).
//!
//! Runs on the control-plane thread: claims inside `DockerExecutor::start`, fills, the idle
//! sweep and the shutdown teardown as tasks on its runtime. A slot is keyed by what its
//! container fixed at create: image, memory size, whether it has an instance uid, whether it
//! mounts layers at `/opt`, and the runtimes dir. It is created with every hardening flag of an
//! ordinary instance (`docker::Hardened`), the label `lambda-at-home.pool` besides the server and
//! data-dir labels, and runs `WAITER`: a shell blocked reading a FIFO in its control dir; or, for
//! Python and Node functions it can honour (`starts_ahead`), our runtime itself, loaded and
//! blocked on that FIFO (`PRESTART`), which takes its environment from `start.json` when woken.
//!
//! A claim, for a spec whose key has an idle slot: bind-mount the function's code read-only onto
//! the slot's `task` dir (and its layers onto `opt`); the mount propagates into the container's
//! `/var/task` (`rslave`) because the pool dir is a shared mount; then write the environment file
//! and wake the waiter, which sources it, enters `/var/task` and `exec`s the runtime with its
//! output into the slot's log FIFO, exactly as an ordinary start. Any failure falls back to the
//! ordinary create + start: an invocation never fails because of the pool.
//!
//! Invariants: the code mount is in place before the waiter is woken; a claimed slot's wake-up
//! FIFO stays open on our side until its instance ends (a runtime still loading opens it late);
//! a runtime started ahead is never given a function with layers or a variable read only at
//! process start; a slot's uid comes from the
//! control plane's `UidPool`, is the instance's uid after a claim (the spec's uid goes back at
//! once: nothing ran under it) and goes back to the pool only once the slot's container is gone
//! and nothing runs under it. Fills never run on the invoke path. Idle slots' memory sizes sum to
//! at most `pool_mb`; a key nobody started for `DEMAND_TTL_S` loses its slot.
//!
//! Limits: needs root (mounts); without it, or when propagation into containers does not work
//! (checked once with a probe slot), the pool turns itself off and every start is ordinary.
//! Pooled containers carry no function, version or instance label and are named
//! `lah-<server>-pool-<n>`: Docker cannot relabel a container.

use std::collections::HashMap;
use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bollard::models::Mount;
use bollard::models::MountBindOptionsPropagationEnum;
use bollard::Docker;
use futures_util::StreamExt;

use super::docker::{
    bind_mount, bounded, check_readable_by, container_env, container_name, create_and_start,
    remove_container, runtime_command, DockerConfig, DockerInstance, Hardened, LogFifo,
    CONTAINER_GID, CONTAINER_UID, LABEL_OWNER, LABEL_SERVER, LAYERS_ROOT, LOG_FIFO_TARGET,
    RUNTIME_ROOT, TASK_ROOT,
};
use super::fork::discard_waiting;
use super::node_pool;
use crate::control::identity::{self, UidPool};
use crate::model::types::InstanceSpec;
use crate::model::Switchboard;

/// Marks a pool slot's container (value: the server id).
pub const LABEL_POOL: &str = "lambda-at-home.pool";
/// Where a slot's control dir (environment file and wake-up FIFO) appears in its container.
const CTL_TARGET: &str = "/var/lambda-at-home/slot";
/// The slot's entrypoint: waits for the wake-up (a blocking FIFO read, no CPU), takes the
/// assignment (exports and `set --` of the runtime command), enters the code now mounted on
/// `/var/task` (the old working directory is the empty dir under it; `cd` exports `OLDPWD`,
/// which an ordinary start does not have) and becomes the runtime with its output in the log
/// FIFO, as `docker::LOG_WRAPPER` does. Exit 70 if any step fails.
const WAITER: &str = "read -r go </var/lambda-at-home/slot/go || exit 70
. /var/lambda-at-home/slot/env || exit 70
cd /var/task || exit 70
unset OLDPWD
exec \"$@\" >/var/log/lambda/out 2>&1";
/// The entrypoint of a slot whose runtime starts ahead (`SlotKey::prestart`): the runtime itself,
/// with its output in the log FIFO, loads and waits for the wake-up (`_LAMBDA_SLOT_DIR`), then
/// takes `start.json` as its environment (runtimes/python/bootstrap.py `await_slot_start`,
/// runtimes/node/bootstrap.js `awaitSlotStart`).
const PRESTART: &str = "exec \"$@\" >/var/log/lambda/out 2>&1";
/// Tells our bootstraps that they run in a slot, and where its control dir is.
const SLOT_DIR_VAR: &str = "_LAMBDA_SLOT_DIR";
/// A started runtime's assignment: `{"env": {...}}`, the instance's whole environment.
const START_FILE: &str = "start.json";
/// Variables an interpreter, its libraries or the dynamic loader read once, when the process
/// starts: a runtime started ahead of its function cannot honour a function that sets one, so
/// such a function gets a slot whose runtime starts at the claim (as an ordinary start).
/// `PYTHONPATH` and `NODE_PATH` are the server's own (`docker::container_env`) and re-read at the
/// claim; `TZ` is re-read too (`time.tzset`; Node reads it when it formats).
const PYTHON_STARTUP_ONLY: &[&str] = &[
    "PYTHON",
    "LD_",
    "MALLOC_",
    "GLIBC_TUNABLES",
    "LC_",
    "LANG",
    "OPENSSL_",
    "SSL_CERT_",
];
/// The file the start-up probe mounts, and the check its container runs.
const PROBE_FILE: &str = "lah-pool-probe";
const PROBE_CHECK: &str =
    "test -f /var/task/lah-pool-probe && grep -q ' /var/task [^ ]* ro[, ]' /proc/mounts";
/// Idle slots wanted per key: one serves the next cold start of that size; a burst of starts
/// beyond it takes the ordinary path while the refill runs.
const SLOTS_PER_KEY: usize = 1;
/// How long a fill waits before it creates its container (see `Pool::refill`).
const REFILL_DELAY_MS: u64 = 500;
/// A key nobody started for this long loses its slot.
const DEMAND_TTL_S: u64 = 600;
/// How often idle slots of forgotten keys are removed.
const SWEEP_INTERVAL_S: u64 = 30;
/// How long shutdown waits for fills in flight to finish before it goes on.
const SHUTDOWN_FILL_WAIT_MS: u64 = 5_000;
const SHUTDOWN_POLL_MS: u64 = 50;

/// What a slot's container fixed when it was created.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct SlotKey {
    image: String,
    family: &'static str,
    memory_mb: u32,
    /// Runs as an instance uid of its own (identities on) rather than the images' user.
    identity: bool,
    /// Mounts layers at `/opt` (else the image's `/opt` stays visible, as on an ordinary start).
    layers: bool,
    /// Runs our runtime's bootstrap ahead of the claim, loaded and waiting (`PRESTART`), rather
    /// than a shell that starts it at the claim (`WAITER`): Python and Node functions without
    /// layers, a variable read only at start (`startup_only`) or `LAMBDA_USE_POOL=false`.
    prestart: bool,
    runtimes_dir: PathBuf,
}

/// One started container waiting for its function.
struct Slot {
    name: String,
    key: SlotKey,
    uid: Option<u32>,
    dir: PathBuf,
    fifo: LogFifo,
    /// Our end (read+write, so the waiter's open never blocks) of the wake-up FIFO.
    go: OwnedFd,
    /// The waiter's pidfd (`Pool::waiter_pidfd`); None: a claim asks Docker instead.
    waiter: Option<OwnedFd>,
}

#[derive(Default)]
struct State {
    idle: HashMap<SlotKey, Vec<Slot>>,
    filling: HashMap<SlotKey, usize>,
    /// When each key was last started: what the pool keeps warm.
    demand: HashMap<SlotKey, Instant>,
    /// Each claimed key's idle slots, published for the scheduler (`Instance::ready_start`):
    /// brought up to date whenever the state is let go (`Locked`). A handful of counters, one per
    /// image, size and kind started since the server began.
    ready: HashMap<SlotKey, Arc<AtomicU32>>,
    /// Set at shutdown: nothing new is created and fills finishing now remove their slot.
    shut: bool,
    sweeping: bool,
}

impl State {
    fn used_mb(&self) -> u64 {
        let idle = self
            .idle
            .iter()
            .map(|(k, v)| u64::from(k.memory_mb) * v.len() as u64);
        let filling = self
            .filling
            .iter()
            .map(|(k, n)| u64::from(k.memory_mb) * *n as u64);
        idle.chain(filling).sum()
    }
}

/// The locked state; publishes the number of idle slots when dropped.
struct Locked<'a> {
    guard: std::sync::MutexGuard<'a, State>,
    gauge: Option<&'a std::sync::atomic::AtomicI64>,
}

impl std::ops::Deref for Locked<'_> {
    type Target = State;
    fn deref(&self) -> &State {
        &self.guard
    }
}

impl std::ops::DerefMut for Locked<'_> {
    fn deref_mut(&mut self) -> &mut State {
        &mut self.guard
    }
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        for (key, slots) in &self.guard.ready {
            let idle = self.guard.idle.get(key).map_or(0, Vec::len);
            slots.store(u32::try_from(idle).unwrap_or(u32::MAX), Ordering::Relaxed);
        }
        if let Some(gauge) = self.gauge {
            let idle: usize = self.guard.idle.values().map(Vec::len).sum();
            gauge.store(i64::try_from(idle).unwrap_or(i64::MAX), Ordering::Relaxed);
        }
    }
}

/// Whether the pool's dir could be made a shared mount (root) and propagation into a container
/// works; decided once, at the first fill.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mounts {
    Ready,
    Unusable,
}

/// The pool of one `DockerExecutor`; shared with its background tasks.
pub struct Pool {
    docker: Docker,
    /// The executor's configuration: names, labels, FIFO dir, `pool_mb`, `pool_dir`.
    config: DockerConfig,
    /// The control plane's instance uids (`Pool::share_uids`); unset: slots without identity.
    uids: OnceLock<Arc<Mutex<UidPool>>>,
    /// Where `lah_docker_pool_idle_slots` is kept (`Pool::report_to`).
    shared: OnceLock<Arc<Switchboard>>,
    /// Locked briefly, never across an await.
    state: Mutex<State>,
    mounts: tokio::sync::OnceCell<Mounts>,
    /// Numbers the slots' container names.
    next: AtomicU64,
    /// Replaces `PROBE_CHECK` (tests make the probe fail with it).
    #[cfg(test)]
    probe_check: OnceLock<&'static str>,
}

impl Pool {
    pub fn new(docker: Docker, config: DockerConfig) -> Arc<Pool> {
        Arc::new(Pool {
            docker,
            config,
            uids: OnceLock::new(),
            shared: OnceLock::new(),
            state: Mutex::new(State::default()),
            mounts: tokio::sync::OnceCell::new(),
            next: AtomicU64::new(1),
            #[cfg(test)]
            probe_check: OnceLock::new(),
        })
    }

    fn probe_check(&self) -> &'static str {
        #[cfg(test)]
        if let Some(check) = self.probe_check.get() {
            return check;
        }
        PROBE_CHECK
    }

    pub fn share_uids(&self, uids: Arc<Mutex<UidPool>>) {
        let _ = self.uids.set(uids);
    }

    /// Where the pool reports its idle slots (`lah_docker_pool_idle_slots`).
    pub fn report_to(&self, shared: Arc<Switchboard>) {
        let _ = self.shared.set(shared);
    }

    /// The state, locked; the idle gauge is brought up to date when the lock is let go.
    fn state(&self) -> Locked<'_> {
        Locked {
            guard: self.state.lock().unwrap_or_else(|e| e.into_inner()),
            gauge: self.shared.get().map(|s| &s.metrics.docker_pool_idle_slots),
        }
    }

    /// The key of the slot that can serve `spec`, or None when no slot could honour it.
    fn key_of(spec: &InstanceSpec, family: &'static str, image: &str) -> Option<SlotKey> {
        // The waiter exports the environment from a shell script: a name the shell cannot
        // export takes the ordinary path (Docker passes any name without `=`).
        let env = container_env(&spec.env, &spec.function.config.runtime);
        if !env
            .iter()
            .all(|kv| kv.split_once('=').is_some_and(|(k, _)| is_shell_name(k)))
        {
            return None;
        }
        let layers = spec.function.opt_dir().is_some();
        let prestart = starts_ahead(family, layers, &spec.function.config.environment);
        Some(SlotKey {
            image: image.to_string(),
            family,
            memory_mb: spec.function.config.memory_mb,
            identity: spec.uid.is_some(),
            layers,
            prestart,
            runtimes_dir: spec.runtimes_dir.clone(),
        })
    }

    /// A started container running `spec`, taken from the pool, or None (the caller starts one
    /// the ordinary way). Either way the key is remembered and its slot refilled in the
    /// background. Also the key's idle-slot count (`State::ready`), None when the pool cannot
    /// serve the spec: what the scheduler estimates the function's next start by.
    pub(super) async fn claim(
        self: &Arc<Self>,
        spec: &InstanceSpec,
        family: &'static str,
        image: &str,
    ) -> (Option<DockerInstance>, Option<Arc<AtomicU32>>) {
        if self.mounts.get() == Some(&Mounts::Unusable) {
            return (None, None);
        }
        let Some(key) = Self::key_of(spec, family, image) else {
            return (None, None);
        };
        let (slot, ready) = {
            let mut state = self.state();
            state.demand.insert(key.clone(), Instant::now());
            let ready = state.ready.entry(key.clone()).or_default().clone();
            (state.idle.get_mut(&key).and_then(Vec::pop), ready)
        };
        self.refill(key);
        let Some(slot) = slot else {
            return (None, Some(ready));
        };
        let name = slot.name.clone();
        match self.assign(slot, spec).await {
            Ok(instance) => (Some(instance), Some(ready)),
            Err((slot, e)) => {
                tracing::warn!(container = %name, "pool claim failed, starting anew: {e}");
                let pool = self.clone();
                tokio::spawn(async move { pool.destroy(slot).await });
                (None, Some(ready))
            }
        }
    }

    /// Gives `slot` its function; on failure hands the slot back for removal.
    async fn assign(
        &self,
        slot: Slot,
        spec: &InstanceSpec,
    ) -> Result<DockerInstance, (Slot, String)> {
        let ms = self.config.op_timeout_ms;
        let running = match &slot.waiter {
            // No Docker call on the invoke path: the waiter's pidfd turns readable when it ends.
            Some(pidfd) => !exited(pidfd),
            None => {
                let options = None::<bollard::query_parameters::InspectContainerOptions>;
                bounded(ms, self.docker.inspect_container(&slot.name, options))
                    .await
                    .ok()
                    .and_then(|i| i.state)
                    .and_then(|s| s.running)
                    == Some(true)
            }
        };
        if !running {
            return Err((slot, "the slot's container is not running".into()));
        }
        if let Err(e) = self.prepare(&slot, spec) {
            return Err((slot, e));
        }
        if slot.key.prestart {
            // What a runtime started ahead wrote while it waited is not the function's.
            discard_waiting(&slot.fifo.read);
        }
        if let Err(e) = wake(&slot.go) {
            return Err((slot, e));
        }
        // The spec's uid never ran anything: the slot's is the instance's now.
        if let (Some(spec_uid), Some(slot_uid)) = (spec.uid, slot.uid) {
            if spec_uid != slot_uid {
                if let Some(uids) = self.uids.get() {
                    uids.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .give_back(spec_uid);
                }
            }
        }
        let Slot {
            name,
            uid,
            dir,
            fifo,
            go,
            ..
        } = slot;
        Ok(
            DockerInstance::new(self.docker.clone(), name, ms, fifo, uid, Some(dir))
                .holding_wake(go),
        )
    }

    /// Mounts the code (and layers) and writes the environment file; the waiter is not woken.
    fn prepare(&self, slot: &Slot, spec: &InstanceSpec) -> Result<(), String> {
        check_readable_by(&spec.runtimes_dir, user_of(slot.uid)).map_err(|e| e.to_string())?;
        let env = container_env(&spec.env, &spec.function.config.runtime);
        let command = runtime_command(slot.key.family);
        let opt = spec.function.opt_dir();
        self.deliver(slot, spec.function.code_dir(), opt, &env, &command)
    }

    /// Mounts `code` (and `opt`) read-only on the slot's dirs and writes its environment file.
    fn deliver(
        &self,
        slot: &Slot,
        code: &Path,
        opt: Option<&Path>,
        env: &[String],
        command: &[String],
    ) -> Result<(), String> {
        let user = user_of(slot.uid);
        check_readable_by(code, user).map_err(|e| e.to_string())?;
        mount_read_only(code, &slot.dir.join("task")).map_err(|e| format!("mount code: {e}"))?;
        if let Some(opt) = opt {
            mount_read_only(opt, &slot.dir.join("opt"))
                .map_err(|e| format!("mount layers: {e}"))?;
        }
        let (script, path) = if slot.key.prestart {
            (start_message(env), slot.dir.join("ctl").join(START_FILE))
        } else {
            (assignment(env, command), slot.dir.join("ctl/env"))
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o400)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        std::os::unix::fs::fchown(&file, Some(user.0), Some(user.1))
            .map_err(|e| format!("chown {}: {e}", path.display()))?;
        file.write_all(script.as_bytes())
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(())
    }

    /// Starts a fill of `key` in the background when it has fewer idle slots than wanted and the
    /// memory budget allows one more (idle slots of the least recently started other keys make
    /// room when they are older than this start).
    fn refill(self: &Arc<Self>, key: SlotKey) {
        let mut evicted = Vec::new();
        {
            let mut state = self.state();
            if state.shut || self.mounts.get() == Some(&Mounts::Unusable) {
                return;
            }
            let have = state.idle.get(&key).map_or(0, Vec::len)
                + state.filling.get(&key).copied().unwrap_or(0);
            if have >= SLOTS_PER_KEY {
                return;
            }
            let idle = state.idle.iter().map(|(k, v)| (k, v.len()));
            let Some(victims) = make_room(
                idle,
                &state.demand,
                state.used_mb(),
                &key,
                self.config.pool_mb,
            ) else {
                return;
            };
            for victim in victims {
                if let Some(slot) = state.idle.get_mut(&victim).and_then(Vec::pop) {
                    evicted.push(slot);
                }
            }
            *state.filling.entry(key.clone()).or_default() += 1;
            if !state.sweeping {
                state.sweeping = true;
                let pool = self.clone();
                tokio::spawn(async move { pool.sweep().await });
            }
        }
        self.destroy_all(evicted);
        let pool = self.clone();
        tokio::spawn(async move {
            // Not at once: the claimed instance's runtime is initialising, and a container create
            // and start beside it (about 80 ms of dockerd and runc CPU) slows its init down by
            // as much on a small host.
            tokio::time::sleep(Duration::from_millis(REFILL_DELAY_MS)).await;
            let slot = if pool.state().shut {
                Err("the server is stopping".to_string())
            } else {
                pool.fill(&key).await
            };
            // A slot made while the server stopped is removed here, before the fill counts as
            // done: shutdown waits for fills, so no container outlives it.
            let unwanted = {
                let mut state = pool.state();
                match slot {
                    Ok(slot) if !state.shut => {
                        state.idle.entry(key.clone()).or_default().push(slot);
                        None
                    }
                    Ok(slot) => Some(slot),
                    Err(e) => {
                        if !state.shut {
                            tracing::warn!("docker pool: cannot prepare a slot: {e}");
                        }
                        None
                    }
                }
            };
            if let Some(slot) = unwanted {
                pool.destroy(slot).await;
            }
            let mut state = pool.state();
            if let Some(n) = state.filling.get_mut(&key) {
                *n = n.saturating_sub(1);
            }
        });
    }

    fn destroy_all(self: &Arc<Self>, slots: Vec<Slot>) {
        for slot in slots {
            let pool = self.clone();
            tokio::spawn(async move { pool.destroy(slot).await });
        }
    }

    /// Creates and starts one slot of `key`.
    async fn fill(&self, key: &SlotKey) -> Result<Slot, String> {
        if self.mounts(key).await != Mounts::Ready {
            return Err("the pool is off (see the warning at its first use)".into());
        }
        self.create_slot(key).await
    }

    /// Makes the pool dir a shared mount and checks, with one probe slot, that a mount made after
    /// a container started shows in it read-only.
    async fn mounts(&self, key: &SlotKey) -> Mounts {
        *self
            .mounts
            .get_or_init(|| async {
                match self.check_mounts(key).await {
                    Ok(()) => Mounts::Ready,
                    Err(e) => {
                        tracing::warn!("docker pool off: {e}");
                        Mounts::Unusable
                    }
                }
            })
            .await
    }

    async fn check_mounts(&self, key: &SlotKey) -> Result<(), String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(
                "the server is not root and cannot mount code into started containers".into(),
            );
        }
        share_dir(&self.config.pool_dir).map_err(|e| {
            format!(
                "cannot make {} a shared mount: {e}",
                self.config.pool_dir.display()
            )
        })?;
        let probed = self.probe(key).await;
        if probed.is_err() {
            unmount_all(&self.config.pool_dir);
        }
        probed.map_err(|e| format!("a code mount does not reach a started container: {e}"))
    }

    /// Starts a slot of `key`'s image, mounts a dir with one file on its `task` dir and has the
    /// waiter run a check that the file is there and `/var/task` is mounted read-only.
    async fn probe(&self, key: &SlotKey) -> Result<(), String> {
        let probe_key = SlotKey {
            identity: false,
            layers: false,
            prestart: false,
            ..key.clone()
        };
        let code = self.config.pool_dir.join("probe-code");
        let _ = std::fs::remove_file(code.join(PROBE_FILE));
        let _ = std::fs::remove_dir(&code);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&code)
            .and_then(|()| std::fs::write(code.join(PROBE_FILE), "probe"))
            .and_then(|()| {
                std::fs::set_permissions(
                    code.join(PROBE_FILE),
                    std::fs::Permissions::from_mode(0o644),
                )
            })
            .map_err(|e| format!("{}: {e}", code.display()))?;
        let slot = self.create_slot_as(&probe_key, None).await?;
        let command: Vec<String> = ["/bin/sh", "-c", self.probe_check()]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let result = match self.deliver(&slot, &code, None, &[], &command) {
            Ok(()) => self.exit_code(&slot).await,
            Err(e) => Err(e),
        };
        self.destroy(slot).await;
        let _ = std::fs::remove_file(code.join(PROBE_FILE));
        let _ = std::fs::remove_dir(&code);
        match result? {
            0 => Ok(()),
            code => Err(format!("the probe's check exited with {code}")),
        }
    }

    /// Wakes `slot` and waits (bounded) for its container to end; its exit code.
    async fn exit_code(&self, slot: &Slot) -> Result<i64, String> {
        let name = &slot.name;
        wake(&slot.go)?;
        let mut stream = std::pin::pin!(self.docker.wait_container(
            name,
            None::<bollard::query_parameters::WaitContainerOptions>
        ));
        let ms = self.config.op_timeout_ms;
        match tokio::time::timeout(Duration::from_millis(ms), stream.next()).await {
            Ok(Some(Ok(r))) => Ok(r.status_code),
            Ok(Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. }))) => {
                Ok(code)
            }
            Ok(Some(Err(e))) => Err(format!("wait: {e}")),
            Ok(None) => Err("wait ended without a status".into()),
            Err(_) => Err(format!("the probe did not end within {ms} ms")),
        }
    }

    async fn create_slot(&self, key: &SlotKey) -> Result<Slot, String> {
        let uid = if key.identity {
            let uids = self.uids.get().ok_or("no instance uids shared")?;
            let taken = uids.lock().unwrap_or_else(|e| e.into_inner()).take();
            Some(taken.ok_or("no free instance uid")?)
        } else {
            None
        };
        let created = self.create_slot_as(key, uid).await;
        if created.is_err() {
            if let Some(uid) = uid {
                self.give_back_after_kill(uid).await;
            }
        }
        created
    }

    async fn create_slot_as(&self, key: &SlotKey, uid: Option<u32>) -> Result<Slot, String> {
        let user = user_of(uid);
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let name = container_name(&self.config.server_id, &format!("pool-{n}"));
        let dir = self.config.pool_dir.join(&name);
        let made = make_slot_dir(&dir, key.layers, user);
        let (go, fifo) = match made.and_then(|go| {
            LogFifo::create(&self.config.fifo_dir, &name, user).map(|fifo| (go, fifo))
        }) {
            Ok(v) => v,
            Err(e) => {
                remove_slot_dir(&dir);
                return Err(format!("slot dir {}: {e}", dir.display()));
            }
        };
        let slave = |source: &Path, target: &str, read_only: bool| Mount {
            bind_options: Some(bollard::models::MountBindOptions {
                propagation: Some(MountBindOptionsPropagationEnum::RSLAVE),
                ..Default::default()
            }),
            ..bind_mount(source, target, read_only)
        };
        let mut mounts = vec![
            slave(&dir.join("task"), TASK_ROOT, true),
            bind_mount(&key.runtimes_dir, RUNTIME_ROOT, true),
            bind_mount(&fifo.path, LOG_FIFO_TARGET, false),
            bind_mount(&dir.join("ctl"), CTL_TARGET, true),
        ];
        if key.layers {
            mounts.push(slave(&dir.join("opt"), LAYERS_ROOT, true));
        }
        let labels = HashMap::from([
            (LABEL_SERVER.to_string(), self.config.server_id.clone()),
            (LABEL_OWNER.to_string(), self.config.owner.clone()),
            (LABEL_POOL.to_string(), self.config.server_id.clone()),
        ]);
        let body = Hardened {
            image: &key.image,
            memory_mb: key.memory_mb,
            user,
            labels,
            mounts,
            entrypoint: entrypoint(key),
            cmd: Vec::new(),
            // The assignment replaces these with the function's values.
            env: slot_env(key),
        }
        .body();
        let started = create_and_start(
            &self.docker,
            self.config.op_timeout_ms,
            &name,
            &key.image,
            body,
        )
        .await;
        fifo.unlink();
        if let Err(e) = started {
            remove_slot_dir(&dir);
            return Err(e.to_string());
        }
        let waiter = self.waiter_pidfd(&name, key).await;
        Ok(Slot {
            name,
            key: key.clone(),
            uid,
            dir,
            fifo,
            go,
            waiter,
        })
    }

    /// A pidfd of the slot's waiter (its container's first process), so a claim can tell
    /// without Docker whether it still runs; None when the server does not see the container's
    /// processes (another pid namespace) or the process is not our waiter.
    async fn waiter_pidfd(&self, name: &str, key: &SlotKey) -> Option<OwnedFd> {
        let options = None::<bollard::query_parameters::InspectContainerOptions>;
        let inspect = bounded(
            self.config.op_timeout_ms,
            self.docker.inspect_container(name, options),
        )
        .await
        .ok()?;
        let pid = i32::try_from(inspect.state?.pid?).ok().filter(|p| *p > 0)?;
        // SAFETY: pidfd_open takes a pid and flags; the result is a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a new descriptor that nothing else owns.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        // The pid is Docker's view; make sure it names our waiter in this namespace, checked
        // after the pidfd is held so that a reused pid cannot slip in between.
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let ours = |args: &[String]| {
            let mut expected = Vec::new();
            for a in args {
                expected.extend_from_slice(a.as_bytes());
                expected.push(0);
            }
            cmdline.starts_with(&expected)
        };
        // A runtime started ahead is the shell until it `exec`s, then the runtime (same pid).
        let waits =
            ours(&entrypoint(key)[..3]) || (key.prestart && ours(&runtime_command(key.family)));
        (waits && !exited(&pidfd)).then_some(pidfd)
    }

    /// Removes a slot that will not be used: its container, its dir, then its uid.
    async fn destroy(&self, slot: Slot) {
        let Slot {
            name,
            uid,
            dir,
            fifo,
            go,
            ..
        } = slot;
        drop((fifo, go));
        match remove_container(&self.docker, &name, self.config.op_timeout_ms).await {
            Ok(_) => {
                remove_slot_dir(&dir);
                if let Some(uid) = uid {
                    self.give_back_after_kill(uid).await;
                }
            }
            // The uid stays taken: something may still run under it. The next start's orphan
            // sweep removes the container.
            Err(e) => tracing::warn!(container = %name, "cannot remove pool slot: {e}"),
        }
    }

    async fn give_back_after_kill(&self, uid: u32) {
        let _ = tokio::task::spawn_blocking(move || identity::kill_all_of(uid)).await;
        if let Some(uids) = self.uids.get() {
            uids.lock()
                .unwrap_or_else(|e| e.into_inner())
                .give_back(uid);
        }
    }

    /// Removes the idle slots of keys nobody started for `DEMAND_TTL_S`, until shutdown.
    async fn sweep(self: Arc<Self>) {
        loop {
            tokio::time::sleep(Duration::from_secs(SWEEP_INTERVAL_S)).await;
            let stale = {
                let mut state = self.state();
                if state.shut {
                    return;
                }
                let ttl = Duration::from_secs(DEMAND_TTL_S);
                let old: Vec<SlotKey> = state
                    .demand
                    .iter()
                    .filter(|(_, at)| at.elapsed() > ttl)
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut stale = Vec::new();
                for key in old {
                    state.demand.remove(&key);
                    stale.extend(state.idle.remove(&key).unwrap_or_default());
                }
                stale
            };
            self.destroy_all(stale);
        }
    }

    /// Removes every idle slot (waiting briefly for fills in flight) and the pool dir's mount.
    pub async fn shutdown(self: &Arc<Self>) {
        let idle: Vec<Slot> = {
            let mut state = self.state();
            state.shut = true;
            state.idle.drain().flat_map(|(_, v)| v).collect()
        };
        futures_util::future::join_all(idle.into_iter().map(|s| self.destroy(s))).await;
        let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_FILL_WAIT_MS);
        while self.state().filling.values().any(|n| *n > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(SHUTDOWN_POLL_MS)).await;
        }
        if self.mounts.get() == Some(&Mounts::Ready) {
            unmount_all(&self.config.pool_dir);
        }
    }

    /// Idle slots per memory size (tests and logs).
    #[cfg(test)]
    fn idle_sizes(&self) -> Vec<u32> {
        let state = self.state();
        let mut sizes: Vec<u32> = state
            .idle
            .iter()
            .flat_map(|(k, v)| std::iter::repeat_n(k.memory_mb, v.len()))
            .collect();
        sizes.sort_unstable();
        sizes
    }
}

/// Which idle slots (one per entry) to remove so that a slot of `key` fits in `budget_mb` with
/// `used_mb` taken: those of the keys started least recently, other than `key`. None when it
/// cannot fit even then (then nothing is removed).
fn make_room<'a>(
    idle: impl Iterator<Item = (&'a SlotKey, usize)>,
    demand: &HashMap<SlotKey, Instant>,
    used_mb: u64,
    key: &SlotKey,
    budget_mb: u64,
) -> Option<Vec<SlotKey>> {
    let need = u64::from(key.memory_mb);
    let mut candidates: Vec<(Option<Instant>, &SlotKey, usize)> = idle
        .filter(|(k, n)| *k != key && *n > 0)
        .map(|(k, n)| (demand.get(k).copied(), k, n))
        .collect();
    // Forgotten keys (no demand) first, then the least recently started.
    candidates.sort_by_key(|(at, _, _)| *at);
    let mut used = used_mb;
    let mut victims = Vec::new();
    for (_, k, n) in candidates {
        for _ in 0..n {
            if used + need <= budget_mb {
                break;
            }
            victims.push(k.clone());
            used -= u64::from(k.memory_mb);
        }
    }
    (used + need <= budget_mb).then_some(victims)
}

/// Whether the process of `pidfd` has ended (a pidfd polls readable then).
fn exited(pidfd: &OwnedFd) -> bool {
    let mut poll = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready != 0
}

/// A slot's entrypoint: the runtime started ahead (`PRESTART`, then the runtime command), or
/// the waiting shell (`WAITER`; the command comes with the assignment).
fn entrypoint(key: &SlotKey) -> Vec<String> {
    let mut args: Vec<String> = [
        "/bin/sh",
        "-c",
        if key.prestart { PRESTART } else { WAITER },
        "sh",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if key.prestart {
        args.extend(runtime_command(key.family));
    }
    args
}

/// A slot's environment until its claim: an ordinary start's without a function, plus, for a
/// runtime started ahead, the slot dir and the locale and time zone every instance gets (its
/// interpreter reads them when it starts). Its `PYTHONPATH` leaves out `/var/task`: the code
/// mounted there at a claim must not be imported by a runtime that is still loading (a
/// function's `hashlib.py` would run before its start, and shadow the runtime's own module);
/// the runtime puts the instance's entries in place when woken.
fn slot_env(key: &SlotKey) -> Vec<String> {
    if !key.prestart {
        return container_env(&[], "provided");
    }
    let runtime = match key.family {
        "python" => "python3.12",
        _ => "nodejs20.x",
    };
    let mut env: Vec<String> = container_env(&[], runtime)
        .into_iter()
        .map(|kv| match kv.strip_prefix("PYTHONPATH=") {
            Some(path) => {
                let kept: Vec<&str> = path.split(':').filter(|p| *p != TASK_ROOT).collect();
                format!("PYTHONPATH={}", kept.join(":"))
            }
            None => kv,
        })
        .collect();
    env.push(format!("{SLOT_DIR_VAR}={CTL_TARGET}"));
    env.push(format!("TZ={}", crate::control::INSTANCE_TZ));
    env.push(format!("LANG={}", crate::control::INSTANCE_LANG));
    env
}

/// Whether a slot of `family` may run the runtime ahead of the claim for a function with these
/// own variables (`SlotKey::prestart`). A layer's `lib` is on LD_LIBRARY_PATH, which the loader
/// reads (and whose missing dirs it remembers) at start; an opted-out function keeps the
/// runtime's start in its init, as the process executor's pools do.
fn starts_ahead(
    family: &str,
    layers: bool,
    own: &std::collections::BTreeMap<String, String>,
) -> bool {
    matches!(family, "python" | "nodejs")
        && !layers
        && !node_pool::opted_out(own.get(node_pool::POOL_OPT_OUT_VAR).map(String::as_str))
        && !own.keys().any(|k| startup_only(family, k))
}

/// Whether a function's own variable `key` is read only when `family`'s runtime process starts.
fn startup_only(family: &str, key: &str) -> bool {
    match family {
        "python" => PYTHON_STARTUP_ONLY.iter().any(|p| key.starts_with(p)),
        _ => node_pool::startup_only(key),
    }
}

/// The start message of a runtime started ahead: `{"env": {...}}`.
fn start_message(env: &[String]) -> String {
    let map: serde_json::Map<String, serde_json::Value> = env
        .iter()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    serde_json::json!({ "env": map }).to_string()
}

/// Wakes a slot's waiter (it then takes its assignment).
fn wake(go: &OwnedFd) -> Result<(), String> {
    let line = b"go\n";
    // SAFETY: writes `line.len()` bytes from a live buffer to a descriptor we own.
    let written = unsafe { libc::write(go.as_raw_fd(), line.as_ptr().cast(), line.len()) };
    if usize::try_from(written).ok() != Some(line.len()) {
        return Err(format!("wake the slot: {}", io::Error::last_os_error()));
    }
    Ok(())
}

fn user_of(uid: Option<u32>) -> (u32, u32) {
    uid.map(|u| (u, u))
        .unwrap_or((CONTAINER_UID, CONTAINER_GID))
}

/// A name the shell can export: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_shell_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `'…'` with every `'` closed, escaped and reopened: the shell takes the rest literally.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

/// The environment file the waiter sources: one export per variable, then the runtime command
/// as the positional parameters.
fn assignment(env: &[String], command: &[String]) -> String {
    let mut script = String::new();
    for kv in env {
        if let Some((k, v)) = kv.split_once('=') {
            script.push_str(&format!("export {k}={}\n", shell_quote(v)));
        }
    }
    let args: Vec<String> = command.iter().map(|a| shell_quote(a)).collect();
    script.push_str(&format!("set -- {}\n", args.join(" ")));
    script
}

/// `task`, `ctl` (with the wake-up FIFO, which only the slot's user may read) and, for layers,
/// `opt` under `dir`; returns our read+write end of the FIFO.
fn make_slot_dir(dir: &Path, layers: bool, (uid, gid): (u32, u32)) -> io::Result<OwnedFd> {
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(0o755);
    builder.create(dir)?;
    for sub in ["task", "ctl"] {
        builder.create(dir.join(sub))?;
    }
    if layers {
        builder.create(dir.join("opt"))?;
    }
    let go = dir.join("ctl/go");
    let c_go = CString::new(go.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: c_go is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::mkfifo(c_go.as_ptr(), 0o600) } != 0 {
        return Err(io::Error::last_os_error());
    }
    std::os::unix::fs::chown(&go, Some(uid), Some(gid))?;
    // Read+write: never blocks, and the waiter's open for reading finds a writer at once.
    let fd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&go)?;
    Ok(fd.into())
}

/// Undoes a slot dir: unmounts code and layers, removes the control files and the (then empty)
/// dirs. Never removes anything under a mount that could not be undone (a function's code).
pub fn remove_slot_dir(dir: &Path) {
    for sub in ["task", "opt"] {
        let path = dir.join(sub);
        while umount_detach(&path) {}
    }
    let _ = std::fs::remove_file(dir.join("ctl/env"));
    let _ = std::fs::remove_file(dir.join("ctl").join(START_FILE));
    let _ = std::fs::remove_file(dir.join("ctl/go"));
    for sub in ["ctl", "task", "opt", ""] {
        let path = dir.join(sub);
        if let Err(e) = std::fs::remove_dir(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), "cannot remove pool slot dir: {e}");
            }
        }
    }
}

/// Removes what a crashed earlier run left in the pool dir (its containers are removed by label).
pub fn remove_stale_slots(pool_dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(pool_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("lah-") {
                remove_slot_dir(&entry.path());
            }
        }
    }
    unmount_all(pool_dir);
}

/// Detaches every mount stacked on `pool_dir` (with whatever is mounted below it).
fn unmount_all(pool_dir: &Path) {
    while umount_detach(pool_dir) {}
}

/// `umount2(path, MNT_DETACH)`: true when something was unmounted.
fn umount_detach(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    unsafe { libc::umount2(c_path.as_ptr(), libc::MNT_DETACH) == 0 }
}

/// Makes `dir` (created if missing) a mount of its own with shared propagation, so mounts made
/// under it later appear in containers that bind-mounted parts of it `rslave`.
fn share_dir(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))?;
    unmount_all(dir);
    let c_dir = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let none = std::ptr::null();
    // SAFETY: valid NUL-terminated paths; null fstype and data are allowed for these flags.
    unsafe {
        if libc::mount(
            c_dir.as_ptr(),
            c_dir.as_ptr(),
            none,
            libc::MS_BIND,
            none.cast(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        for flags in [libc::MS_PRIVATE, libc::MS_SHARED] {
            if libc::mount(none, c_dir.as_ptr(), none, flags, none.cast()) != 0 {
                let e = io::Error::last_os_error();
                libc::umount2(c_dir.as_ptr(), libc::MNT_DETACH);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Kernel ABI of the new mount API (linux/mount.h), spelled out: not every libc version has it.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Bind-mounts `source` on `target` read-only, nosuid, nodev. The mount is made read-only
/// before it is attached (open_tree, mount_setattr, move_mount): a remount after an ordinary
/// bind would not reach the copies propagated into containers, which would stay writable.
fn mount_read_only(source: &Path, target: &Path) -> io::Result<()> {
    let c_source = CString::new(source.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let c_target = CString::new(target.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let empty = c"";
    // SAFETY: valid NUL-terminated paths; the returned descriptor is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c_source.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: open_tree returned a new descriptor that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: attr is a valid mount_attr of the size passed; the paths are NUL-terminated.
    let set = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if set != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    let moved = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            c_target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if moved != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_quotes_every_value_for_the_shell() {
        let env = vec![
            "A=plain".to_string(),
            "B=it's $HOME `x` \"q\"\nline2".to_string(),
            "C=".to_string(),
        ];
        let cmd = vec![
            "python3".to_string(),
            "/var/runtime/python/bootstrap.py".to_string(),
        ];
        let script = assignment(&env, &cmd);
        assert_eq!(
            script,
            "export A='plain'\nexport B='it'\\''s $HOME `x` \"q\"\nline2'\nexport C=''\n\
             set -- 'python3' '/var/runtime/python/bootstrap.py'\n"
        );
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "{script}printf '%s|%s|%s|%s' \"$B\" \"$C\" \"$1\" \"$#\""
            ))
            .output()
            .expect("sh");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's $HOME `x` \"q\"\nline2||python3|2"
        );
    }

    fn key(memory_mb: u32) -> SlotKey {
        SlotKey {
            image: "img".into(),
            family: "python",
            memory_mb,
            identity: true,
            layers: false,
            prestart: true,
            runtimes_dir: PathBuf::from("runtimes"),
        }
    }

    #[test]
    fn runtimes_start_ahead_only_for_functions_they_can_honour() {
        let env = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let plain = env(&[("GREETING", "hi"), ("TZ", "Europe/Paris"), ("PATH", "/x")]);
        assert!(starts_ahead("python", false, &plain));
        assert!(starts_ahead("nodejs", false, &plain));
        assert!(!starts_ahead("provided", false, &plain), "not our runtime");
        assert!(!starts_ahead("python", true, &plain), "layers");
        for opt_out in ["false", "0", "off"] {
            let e = env(&[("LAMBDA_USE_POOL", opt_out)]);
            assert!(!starts_ahead("python", false, &e), "{opt_out}");
            assert!(!starts_ahead("nodejs", false, &e), "{opt_out}");
        }
        for key in [
            "PYTHONWARNINGS",
            "PYTHONHASHSEED",
            "PYTHONIOENCODING",
            "LD_PRELOAD",
            "LC_ALL",
            "LANG",
            "MALLOC_ARENA_MAX",
            "GLIBC_TUNABLES",
            "SSL_CERT_FILE",
        ] {
            assert!(!starts_ahead("python", false, &env(&[(key, "x")])), "{key}");
        }
        for key in [
            "NODE_OPTIONS",
            "UV_THREADPOOL_SIZE",
            "LD_PRELOAD",
            "OPENSSL_CONF",
        ] {
            assert!(!starts_ahead("nodejs", false, &env(&[(key, "x")])), "{key}");
        }
        // Read at the claim: the server's own path variables, and a variable of another runtime.
        assert!(starts_ahead(
            "nodejs",
            false,
            &env(&[("NODE_ENV", "production")])
        ));
        assert!(starts_ahead(
            "nodejs",
            false,
            &env(&[("PYTHONWARNINGS", "x")])
        ));
        assert!(starts_ahead(
            "python",
            false,
            &env(&[("NODE_OPTIONS", "x")])
        ));
    }

    #[test]
    fn a_started_runtime_gets_its_environment_as_json_and_waits_in_its_own_command() {
        let env = vec![
            "A=plain".to_string(),
            "B=it's $HOME `x` \"q\"\nline2=3".to_string(),
            "C=".to_string(),
        ];
        let message: serde_json::Value = serde_json::from_str(&start_message(&env)).expect("JSON");
        assert_eq!(
            message,
            serde_json::json!({"env": {"A": "plain", "B": "it's $HOME `x` \"q\"\nline2=3", "C": ""}})
        );
        let ahead = key(128);
        let args = entrypoint(&ahead);
        assert_eq!(
            args,
            [
                "/bin/sh",
                "-c",
                PRESTART,
                "sh",
                "python3",
                "/var/runtime/python/bootstrap.py"
            ]
        );
        let env = slot_env(&ahead);
        assert!(env.contains(&format!("{SLOT_DIR_VAR}={CTL_TARGET}")));
        assert!(env.contains(&"TZ=:UTC".to_string()), "{env:?}");
        assert!(env.contains(&"LANG=C.UTF-8".to_string()), "{env:?}");
        // The code mounted at a claim is not importable while the runtime loads.
        let path = env.iter().find_map(|kv| kv.strip_prefix("PYTHONPATH="));
        assert!(
            path.is_some_and(|p| !p.split(':').any(|e| e == TASK_ROOT)),
            "{env:?}"
        );
        let ordinary = container_env(&[], "python3.12");
        let ordinary_path = ordinary
            .iter()
            .find_map(|kv| kv.strip_prefix("PYTHONPATH="));
        assert!(ordinary_path.is_some_and(|p| p.starts_with(TASK_ROOT)));
        let waiting = SlotKey {
            prestart: false,
            ..key(128)
        };
        assert_eq!(entrypoint(&waiting), ["/bin/sh", "-c", WAITER, "sh"]);
        assert!(!slot_env(&waiting)
            .iter()
            .any(|kv| kv.starts_with(SLOT_DIR_VAR)));
    }

    #[test]
    fn the_budget_evicts_least_recently_started_sizes_and_nothing_when_it_cannot_fit() {
        let now = Instant::now();
        let (k128, k256, k512) = (key(128), key(256), key(512));
        let demand = HashMap::from([
            (k128.clone(), now - Duration::from_secs(60)),
            (k256.clone(), now - Duration::from_secs(5)),
        ]);
        let idle = [(&k128, 1), (&k256, 1)];
        // Room enough: nothing goes.
        assert_eq!(
            make_room(idle.iter().copied(), &demand, 384, &k512, 1024),
            Some(vec![])
        );
        // 512 more in 768: the 128 MB slot (started a minute ago) goes first, then the 256.
        assert_eq!(
            make_room(idle.iter().copied(), &demand, 384, &k512, 768),
            Some(vec![k128.clone()])
        );
        assert_eq!(
            make_room(idle.iter().copied(), &demand, 384, &k512, 600),
            Some(vec![k128.clone(), k256.clone()])
        );
        // Larger than the whole budget: no slot, and no other slot is removed for nothing.
        assert_eq!(
            make_room(idle.iter().copied(), &demand, 384, &k512, 500),
            None
        );
        // A key's own idle slot is never evicted for it.
        assert_eq!(
            make_room([(&k256, 1)].into_iter(), &demand, 256, &k256, 256),
            None
        );
    }

    #[test]
    fn only_shell_names_are_poolable() {
        assert!(is_shell_name("AWS_LAMBDA_RUNTIME_API"));
        assert!(is_shell_name("_x1"));
        assert!(!is_shell_name("1x"));
        assert!(!is_shell_name("a-b"));
        assert!(!is_shell_name(""));
        assert!(!is_shell_name("a.b"));
    }
}

/// Docker-gated like the executor's own tests (skipped without a daemon or image unless
/// LAH_REQUIRE_DOCKER is set); they run as root, which the pool needs.
#[cfg(test)]
mod docker_tests {
    use super::*;
    use crate::control::executor::docker::tests::{
        fixture_with_pool, inspect, read_log, spec, wait_bounded, Fixture, SERIAL, SLEEP_BOOTSTRAP,
    };
    use crate::control::executor::docker::DockerExecutor;
    use crate::control::executor::Executor;

    const POOL_MB: u64 = 512;
    /// Longest a test waits for a background fill.
    const FILL_WAIT_S: u64 = 60;

    /// Prints what the pooled runtime sees; `ls /var/task` must list the function's files only.
    const POOL_PROBE: &str = r#"#!/bin/sh
echo "hello from $LAMBDA_INSTANCE_ID uid=$(id -u) home=$HOME root=$LAMBDA_TASK_ROOT api=$AWS_LAMBDA_RUNTIME_API pwd=$(pwd) quoted=$QUOTED"
echo "task: $(ls /var/task | tr '\n' ' ')"
touch /probe 2>/dev/null && echo rootfs-writable || echo rootfs-readonly
touch /var/task/probe 2>/dev/null && echo task-writable || echo task-readonly
grep -q ' /var/task [^ ]* ro[, ]' /proc/mounts && echo task-mounted-ro || echo task-mount-rw
touch /tmp/probe && echo tmp-writable
ls /var/lambda-at-home/slot
echo "to stderr" >&2
exit 3
"#;

    fn root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    /// Removes, even when a test fails, the containers of the fixture's data dir and the pool
    /// dir's mounts (a failed assertion skips the test's own teardown).
    struct Leftovers {
        owner: String,
        pool_dir: PathBuf,
    }

    impl Drop for Leftovers {
        fn drop(&mut self) {
            let filter = format!("label={LABEL_OWNER}={}", self.owner);
            if let Ok(out) = std::process::Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                let ids = String::from_utf8_lossy(&out.stdout).into_owned();
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let _ = std::process::Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .output();
                }
            }
            remove_stale_slots(&self.pool_dir);
        }
    }

    /// A fixture with a pool, or None (skipped) without Docker, the image, or root.
    async fn pool_fixture(test: &str, server_id: &str) -> Option<(Fixture, Leftovers)> {
        pool_fixture_of(test, server_id, POOL_MB).await
    }

    async fn pool_fixture_of(
        test: &str,
        server_id: &str,
        pool_mb: u64,
    ) -> Option<(Fixture, Leftovers)> {
        if !root() {
            eprintln!("SKIP {test}: the pool mounts code and needs root");
            return None;
        }
        let fx = fixture_with_pool(test, server_id, &["provided"], pool_mb).await?;
        let leftovers = Leftovers {
            owner: fx.executor.config.owner.clone(),
            pool_dir: fx.executor.config.pool_dir.clone(),
        };
        Some((fx, leftovers))
    }

    /// A `provided` spec whose runtimes dir is the fixture's shared one, as a server's is (the
    /// plain test spec has a runtimes dir of its own, which no slot could serve).
    fn pool_spec(fx: &Fixture, memory_mb: u32, script: &str) -> InstanceSpec {
        let mut spec = spec(fx, "provided.al2023", memory_mb, script);
        let shared = fx.dir.path().join("runtimes");
        std::fs::create_dir_all(&shared).expect("mkdir");
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        spec.runtimes_dir = shared;
        spec
    }

    fn pool(fx: &Fixture) -> &Arc<Pool> {
        fx.executor.pool().expect("pool on")
    }

    /// Waits until the pool holds `sizes` idle slots (sorted).
    async fn wait_for_slots(fx: &Fixture, sizes: &[u32]) {
        let deadline = Instant::now() + Duration::from_secs(FILL_WAIT_S);
        while pool(fx).idle_sizes() != sizes {
            assert!(
                Instant::now() < deadline,
                "pool has {:?}, not {sizes:?}",
                pool(fx).idle_sizes()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn idle_names(fx: &Fixture) -> Vec<String> {
        let state = pool(fx).state();
        state
            .idle
            .values()
            .flatten()
            .map(|s| s.name.clone())
            .collect()
    }

    /// Warms the pool for `memory_mb` with one ordinary start (which teaches it the size).
    async fn warm(fx: &Fixture, memory_mb: u32) {
        let mut first = fx
            .executor
            .start(pool_spec(fx, memory_mb, SLEEP_BOOTSTRAP))
            .await
            .expect("start");
        assert!(
            !first.pooled(),
            "the first start of a size cannot be pooled"
        );
        let ready = first.ready_start().expect("the pool serves this size");
        assert!(!ready.took_one);
        first.kill().await;
        wait_for_slots(fx, &[memory_mb]).await;
        assert_eq!(
            ready.slots.load(Ordering::Relaxed),
            1,
            "its slot is counted"
        );
    }

    fn mounts_under(dir: &Path) -> Vec<String> {
        let dir = dir.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mountinfo")
            .expect("mountinfo")
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&dir))
            .collect()
    }

    #[tokio::test]
    async fn pooled_start_runs_the_function_with_its_env_code_read_only_and_log() {
        let _serial = SERIAL.lock().await;
        let test = "pooled_start_runs_the_function";
        let Some((fx, _leftovers)) = pool_fixture(test, "t-pool-run").await else {
            return;
        };
        warm(&fx, 128).await;
        let slot = idle_names(&fx).pop().expect("a slot");
        let mut spec = pool_spec(&fx, 128, POOL_PROBE);
        spec.env.push(("QUOTED".into(), "it's $HOME".into()));
        let instance_id = spec.id.to_string();
        std::fs::write(spec.function.code_dir().join("handler.txt"), "x").expect("write");
        let mut instance = fx.executor.start(spec).await.expect("start");
        assert!(
            instance.pooled(),
            "a warm size was not served from the pool"
        );
        let log = instance.take_log().expect("log fd");
        let exit = wait_bounded(&mut instance).await;
        let text = read_log(log);
        assert_eq!((exit.code, exit.signal), (Some(3), None), "{text}");
        let expected = format!(
            "hello from {instance_id} uid=1000 home=/tmp root=/var/task api=127.0.0.1:9001 pwd=/var/task quoted=it's $HOME"
        );
        for line in [
            &expected[..],
            "task: bootstrap handler.txt \n",
            "rootfs-readonly",
            "task-readonly",
            "task-mounted-ro",
            "tmp-writable",
            "to stderr",
        ] {
            assert!(text.contains(line), "log lacks {line:?}: {text:?}");
        }
        // The instance ended: its container and the slot's dir and mounts are gone.
        assert!(inspect(&fx, &slot).await.is_none(), "slot container left");
        assert!(!fx.executor.config.pool_dir.join(&slot).exists());
        fx.executor.shutdown().await;
        assert!(
            mounts_under(fx.dir.path()).is_empty(),
            "{:?}",
            mounts_under(fx.dir.path())
        );
    }

    /// The runtime's environment in a pooled container is the one an ordinary start gives it:
    /// the same variables with the same values, but for the container's hostname and the
    /// instance's own id.
    #[tokio::test]
    async fn pooled_environment_equals_the_ordinary_one() {
        let _serial = SERIAL.lock().await;
        let test = "pooled_environment";
        let Some((fx, _leftovers)) = pool_fixture(test, "t-pool-env").await else {
            return;
        };
        let dump = "#!/bin/sh\nenv | sort\n";
        let mut envs = Vec::new();
        for expect_pooled in [false, true] {
            let mut spec = pool_spec(&fx, 128, dump);
            spec.env
                .push(("MULTI".into(), "line one\nline 'two'".into()));
            let id = spec.id.to_string();
            let mut instance = fx.executor.start(spec).await.expect("start");
            assert_eq!(instance.pooled(), expect_pooled);
            let log = instance.take_log().expect("log");
            assert_eq!(wait_bounded(&mut instance).await.code, Some(0));
            let text = read_log(log).replace(&id, "<instance>");
            let vars: Vec<String> = text
                .lines()
                .filter(|l| !l.starts_with("HOSTNAME="))
                .map(str::to_string)
                .collect();
            envs.push(vars);
            if !expect_pooled {
                wait_for_slots(&fx, &[128]).await;
            }
        }
        assert!(envs[0].iter().any(|l| l == "line 'two'"), "{:?}", envs[0]);
        assert_eq!(envs[0], envs[1], "ordinary vs pooled environment");
        fx.executor.shutdown().await;
    }

    /// A function with layers gets a slot that mounts them read-only at `/opt`; a function
    /// without layers is never given that slot (its `/opt` is the image's, as on an ordinary
    /// start).
    #[tokio::test]
    async fn layers_get_slots_of_their_own_with_opt_mounted_read_only() {
        let _serial = SERIAL.lock().await;
        let test = "pooled_layers";
        let Some((fx, _leftovers)) = pool_fixture(test, "t-pool-layers").await else {
            return;
        };
        let opt = fx.dir.path().join("layers");
        std::fs::create_dir_all(opt.join("bin")).expect("mkdir");
        for dir in [&opt, &opt.join("bin")] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        std::fs::write(opt.join("bin/layer-tool"), "x").expect("write");
        std::fs::set_permissions(
            opt.join("bin/layer-tool"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("chmod");
        let with_layers = |script: &str| {
            let mut spec = pool_spec(&fx, 128, script);
            let f = &spec.function;
            let function = crate::model::types::Function {
                opt: Some(crate::model::types::CodeDir::fixed(opt.clone())),
                ..crate::model::types::Function::latest(
                    f.config.clone(),
                    f.code_dir().to_path_buf(),
                    1,
                )
            };
            spec.function = Arc::new(function);
            spec
        };
        let mut first = fx
            .executor
            .start(with_layers(SLEEP_BOOTSTRAP))
            .await
            .expect("start");
        assert!(!first.pooled());
        first.kill().await;
        wait_for_slots(&fx, &[128]).await;
        let script = "#!/bin/sh\necho \"opt: $(ls /opt | tr '\\n' ' ')\"\n\
                      grep -q ' /opt [^ ]* ro[, ]' /proc/mounts && echo opt-ro\n";
        let mut plain = fx
            .executor
            .start(pool_spec(&fx, 128, SLEEP_BOOTSTRAP))
            .await
            .expect("start");
        assert!(
            !plain.pooled(),
            "a function without layers took a layers slot"
        );
        plain.kill().await;
        let mut instance = fx.executor.start(with_layers(script)).await.expect("start");
        assert!(instance.pooled());
        let log = instance.take_log().expect("log");
        assert_eq!(wait_bounded(&mut instance).await.code, Some(0));
        let text = read_log(log);
        assert!(text.contains("opt: bin \n"), "{text}");
        assert!(text.contains("opt-ro"), "{text}");
        fx.executor.shutdown().await;
    }

    #[tokio::test]
    async fn pooled_container_keeps_every_hardening_flag_and_refills_after_a_claim() {
        let _serial = SERIAL.lock().await;
        let test = "pooled_container_is_hardened";
        let Some((fx, _leftovers)) = pool_fixture(test, "t-pool-hard").await else {
            return;
        };
        warm(&fx, 256).await;
        let slot = idle_names(&fx).pop().expect("a slot");
        let mut instance = fx
            .executor
            .start(pool_spec(&fx, 256, SLEEP_BOOTSTRAP))
            .await
            .expect("start");
        assert!(instance.pooled());
        // What the scheduler estimates the next start by: this one took the key's only slot.
        let ready = instance.ready_start().expect("a key of the pool");
        assert!(ready.took_one);
        assert_eq!(ready.slots.load(Ordering::Relaxed), 0);
        let inspect_slot = inspect(&fx, &slot).await.expect("container exists");
        let host = inspect_slot.host_config.expect("host config");
        let config = inspect_slot.config.expect("config");
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.memory, Some(256 * 1024 * 1024));
        assert_eq!(host.memory_swap, Some(256 * 1024 * 1024));
        assert_eq!(host.cpu_shares, Some(super::super::docker::cpu_shares(256)));
        assert_eq!(host.pids_limit, Some(1024));
        assert!(host
            .security_opt
            .unwrap_or_default()
            .contains(&"no-new-privileges".to_string()));
        let ulimits = host.ulimits.unwrap_or_default();
        assert_eq!(ulimits[0].name.as_deref(), Some("nofile"));
        assert_eq!(ulimits[0].hard, Some(1024));
        assert_eq!(config.user.as_deref(), Some("1000:1000"));
        let labels = config.labels.unwrap_or_default();
        assert_eq!(labels.get(LABEL_POOL), Some(&fx.executor.config.server_id));
        assert_eq!(labels.get(LABEL_OWNER), Some(&fx.executor.config.owner));
        let mounts = inspect_slot.mounts.unwrap_or_default();
        let rw = |target: &str| {
            mounts
                .iter()
                .find(|m| m.destination.as_deref() == Some(target))
                .and_then(|m| m.rw)
        };
        assert_eq!(rw("/var/task"), Some(false));
        assert_eq!(rw("/var/runtime"), Some(false));
        assert_eq!(rw(CTL_TARGET), Some(false));
        assert_eq!(rw(LOG_FIFO_TARGET), Some(true));
        // No layers: the image's /opt stays as on an ordinary start.
        assert_eq!(rw("/opt"), None);
        // The claim started a refill in the background: a new slot of the same size.
        wait_for_slots(&fx, &[256]).await;
        assert_ne!(idle_names(&fx), vec![slot.clone()]);
        assert_eq!(
            ready.slots.load(Ordering::Relaxed),
            1,
            "the refill is counted"
        );
        instance.kill().await;
        assert!(
            inspect(&fx, &slot).await.is_none(),
            "claimed slot not removed"
        );
        fx.executor.shutdown().await;
        assert!(pool(&fx).idle_sizes().is_empty());
        assert!(mounts_under(fx.dir.path()).is_empty());
    }

    /// A slot whose container died while it waited is not handed out: the start falls back to
    /// an ordinary one and succeeds. Here the claim notices through the waiter's pidfd, without
    /// asking Docker.
    #[tokio::test]
    async fn a_dead_slot_falls_back_to_an_ordinary_start() {
        let _serial = SERIAL.lock().await;
        let test = "dead_slot";
        let Some((fx, _leftovers)) = pool_fixture(test, "t-pool-dead").await else {
            return;
        };
        warm(&fx, 128).await;
        let slot = {
            let state = pool(&fx).state();
            let slot = state.idle.values().flatten().next().expect("a slot");
            assert!(slot.waiter.is_some(), "no pidfd of the waiter");
            slot.name.clone()
        };
        bounded(
            5_000,
            fx.executor.docker.kill_container(
                &slot,
                None::<bollard::query_parameters::KillContainerOptions>,
            ),
        )
        .await
        .expect("kill the slot");
        let deadline = Instant::now() + Duration::from_secs(FILL_WAIT_S);
        while inspect(&fx, &slot)
            .await
            .and_then(|i| i.state)
            .and_then(|s| s.running)
            == Some(true)
        {
            assert!(Instant::now() < deadline, "the slot did not die");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut instance = fx
            .executor
            .start(pool_spec(&fx, 128, "#!/bin/sh\necho served\n"))
            .await
            .expect("start");
        assert!(!instance.pooled(), "a dead slot was handed out");
        let log = instance.take_log().expect("log");
        assert_eq!(wait_bounded(&mut instance).await.code, Some(0));
        assert!(read_log(log).contains("served"));
        fx.executor.shutdown().await;
    }

    /// `pool_mb` bounds the idle slots' memory: a newly started size takes the place of the size
    /// started less recently, and a size larger than the whole budget gets no slot (and takes
    /// none away).
    #[tokio::test]
    async fn the_memory_budget_keeps_the_most_recently_started_sizes() {
        let _serial = SERIAL.lock().await;
        let test = "pool_budget";
        let Some((fx, _leftovers)) = pool_fixture_of(test, "t-pool-budget", 256).await else {
            return;
        };
        warm(&fx, 128).await;
        let mut i = fx
            .executor
            .start(pool_spec(&fx, 256, SLEEP_BOOTSTRAP))
            .await
            .expect("start");
        i.kill().await;
        wait_for_slots(&fx, &[256]).await;
        let mut i = fx
            .executor
            .start(pool_spec(&fx, 512, SLEEP_BOOTSTRAP))
            .await
            .expect("start");
        assert!(!i.pooled());
        i.kill().await;
        tokio::time::sleep(Duration::from_millis(REFILL_DELAY_MS * 2)).await;
        assert_eq!(pool(&fx).idle_sizes(), vec![256]);
        fx.executor.shutdown().await;
    }

    /// When a code mount does not reach a started container (the probe's check fails, as it
    /// would with a daemon in another mount namespace), the pool turns itself off: no slot is
    /// made, every start is ordinary and succeeds, and nothing stays mounted.
    #[tokio::test]
    async fn a_failed_probe_turns_the_pool_off_and_starts_stay_ordinary() {
        let _serial = SERIAL.lock().await;
        let test = "pool_probe_fails";
        let Some((fx, _leftovers)) = pool_fixture(test, "t-pool-probe").await else {
            return;
        };
        pool(&fx).probe_check.set("exit 1").expect("first use");
        for _ in 0..2 {
            let mut i = fx
                .executor
                .start(pool_spec(&fx, 128, "#!/bin/sh\necho served\n"))
                .await
                .expect("start");
            assert!(!i.pooled());
            let log = i.take_log().expect("log");
            assert_eq!(wait_bounded(&mut i).await.code, Some(0));
            assert!(read_log(log).contains("served"));
        }
        let deadline = Instant::now() + Duration::from_secs(FILL_WAIT_S);
        while pool(&fx).mounts.get().is_none() {
            assert!(Instant::now() < deadline, "the probe never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(pool(&fx).mounts.get(), Some(&Mounts::Unusable));
        assert!(pool(&fx).idle_sizes().is_empty());
        assert!(mounts_under(fx.dir.path()).is_empty());
        let filter = format!("label={LABEL_OWNER}={}", fx.executor.config.owner);
        let left = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
            .expect("docker ps");
        assert!(left.stdout.is_empty(), "probe container left");
    }

    #[tokio::test]
    async fn a_size_without_a_slot_takes_the_ordinary_start() {
        let _serial = SERIAL.lock().await;
        let test = "size_without_slot";
        let Some((fx, _leftovers)) = pool_fixture(test, "t-pool-miss").await else {
            return;
        };
        warm(&fx, 128).await;
        let mut other = fx
            .executor
            .start(pool_spec(&fx, 192, SLEEP_BOOTSTRAP))
            .await
            .expect("start");
        assert!(!other.pooled(), "a 192 MB start used a 128 MB slot");
        other.kill().await;
        // It taught the pool the new size; the 128 MB slot stays.
        wait_for_slots(&fx, &[128, 192]).await;
        fx.executor.shutdown().await;
    }

    #[tokio::test]
    async fn pooled_instance_runs_as_the_slot_uid_and_the_spec_uid_goes_back() {
        let _serial = SERIAL.lock().await;
        let test = "pooled_identity";
        let Some((fx, _leftovers)) = pool_fixture(test, "t-pool-uid").await else {
            return;
        };
        let base = 231_000 + std::process::id() % 1000 * 8;
        let uids = Arc::new(Mutex::new(UidPool::new(base, 8)));
        pool(&fx).share_uids(uids.clone());
        let take = || uids.lock().unwrap().take();
        let mut first = pool_spec(&fx, 128, SLEEP_BOOTSTRAP);
        first.uid = take();
        let mut first = fx.executor.start(first).await.expect("start");
        first.kill().await;
        wait_for_slots(&fx, &[128]).await;
        let slot_uid = pool(&fx)
            .state()
            .idle
            .values()
            .flatten()
            .next()
            .unwrap()
            .uid;
        assert!(slot_uid.is_some(), "an identity slot without a uid");
        let mut probe = pool_spec(&fx, 128, POOL_PROBE);
        let spec_uid = take();
        probe.uid = spec_uid;
        let mut instance = fx.executor.start(probe).await.expect("start");
        assert!(instance.pooled());
        assert_eq!(instance.uid(), slot_uid);
        let log = instance.take_log().expect("log");
        wait_bounded(&mut instance).await;
        let text = read_log(log);
        assert!(
            text.contains(&format!("uid={}", slot_uid.unwrap())),
            "{text}"
        );
        // The spec's uid is free again; the slot's is the instance's until the control plane
        // gives it back.
        let mut held = Vec::new();
        while let Some(uid) = take() {
            held.push(uid);
        }
        assert!(held.contains(&spec_uid.unwrap()), "spec uid not given back");
        assert!(
            !held.contains(&slot_uid.unwrap()),
            "slot uid handed out twice"
        );
        fx.executor.shutdown().await;
    }

    #[tokio::test]
    async fn cleanup_orphans_removes_an_earlier_runs_pool_slots_and_mounts() {
        let _serial = SERIAL.lock().await;
        let test = "pool_orphans";
        let Some((earlier, _leftovers)) = pool_fixture(test, "t-pool-earlier").await else {
            return;
        };
        warm(&earlier, 128).await;
        let slot = idle_names(&earlier).pop().expect("a slot");
        // The earlier run dies without shutdown; the next run on the same data dir (same owner
        // label and pool dir) cleans up at start.
        let now_config = DockerConfig {
            server_id: format!("t-pool-now-{}", std::process::id()),
            ..earlier.executor.config.clone()
        };
        let now = DockerExecutor::connect(now_config).await.expect("connect");
        assert!(!mounts_under(earlier.dir.path()).is_empty());
        let removed = now.cleanup_orphans().await.expect("cleanup");
        assert_eq!(removed, 1, "the earlier run's slot");
        assert!(inspect(&earlier, &slot).await.is_none(), "slot survived");
        assert!(mounts_under(earlier.dir.path()).is_empty());
        let left: Vec<_> = std::fs::read_dir(&earlier.executor.config.pool_dir)
            .expect("pool dir")
            .collect();
        assert!(left.is_empty(), "{left:?}");
        // The earlier pool's memory of its slot is stale now; forget it without touching Docker.
        pool(&earlier).state().idle.clear();
    }

    #[tokio::test]
    async fn pool_off_starts_every_instance_anew_and_mounts_nothing() {
        let _serial = SERIAL.lock().await;
        let Some(fx) = fixture_with_pool("pool_off", "t-pool-off", &["provided"], 0).await else {
            return;
        };
        assert!(fx.executor.pool().is_none());
        for _ in 0..2 {
            let mut i = fx
                .executor
                .start(pool_spec(&fx, 128, SLEEP_BOOTSTRAP))
                .await
                .expect("start");
            assert!(!i.pooled());
            assert!(i.ready_start().is_none(), "no ready slots to count on");
            i.kill().await;
        }
        assert!(!fx.executor.config.pool_dir.exists());
        assert!(mounts_under(fx.dir.path()).is_empty());
    }
}
