//! The `process` executor: each instance is a child process in its own process group on the host.
//!
//! The embedded default, for machines without Docker. Isolation is that of a process (same user,
//! same filesystem): fast, but not a security boundary. The runtime's stdout and stderr share one
//! pipe whose read end goes to the home core. Every instance dies with the server
//! (PR_SET_PDEATHSIG) and is killed as a whole group, so no grandchild outlives it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

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
}

impl ProcessExecutor {
    pub fn new(deps_dir: PathBuf) -> ProcessExecutor {
        let node = resolve_interpreter("node", &["-p", "process.execPath"]);
        let python = resolve_interpreter("python3", &["-c", "import sys; print(sys.executable)"]);
        tracing::debug!(node = %node.display(), python = %python.display(), "interpreters");
        ProcessExecutor {
            deps_dir,
            node,
            python,
        }
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

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
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

    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Box<dyn Instance>, ExecError>> {
        Box::pin(async move {
            let (program, args) = self.command_for(&spec)?;
            let code_dir = spec.function.code_dir();
            let (read, write) = pipe().map_err(|e| ExecError::Spawn(e.to_string()))?;
            let write2 = write
                .try_clone()
                .map_err(|e| ExecError::Spawn(e.to_string()))?;
            let mut cmd = tokio::process::Command::new(&program);
            cmd.args(&args)
                .current_dir(code_dir)
                .env_clear()
                .envs(spec.env.iter().map(|(k, v)| (k, v)))
                .envs(path_env(&spec, &self.deps_dir))
                .stdin(Stdio::null())
                .stdout(Stdio::from(write))
                .stderr(Stdio::from(write2))
                .process_group(0)
                .kill_on_drop(true);
            let opt_source = opt_mount_source(&spec);
            // SAFETY: prctl, unshare and mount are async-signal-safe syscalls; the closure only
            // reads `opt_source`, prepared before the fork, and touches no allocator or lock.
            unsafe {
                cmd.pre_exec(move || {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                    if let Some(source) = &opt_source {
                        mount_opt(source);
                    }
                    Ok(())
                });
            }
            let child = cmd
                .spawn()
                .map_err(|e| ExecError::Spawn(format!("{}: {e}", program.display())))?;
            let pgid = child.id().map(|p| p as i32);
            Ok(Box::new(ProcessInstance {
                child,
                pgid,
                log: Some(read),
            }) as Box<dyn Instance>)
        })
    }
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

/// In the child, before exec: a private mount namespace with `source` bind-mounted read-only at
/// `/opt`. Best effort: on any failure the instance runs without `/opt` (its path variables still
/// name the layers' real directory).
///
/// # Safety
/// Only between fork and exec (it changes the calling process's mount namespace).
unsafe fn mount_opt(source: &std::ffi::CStr) {
    let none = std::ptr::null();
    // SAFETY: plain syscalls on NUL-terminated strings that outlive the calls.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            return;
        }
        // Nothing this process mounts may propagate back to the host's namespace.
        let private = libc::MS_REC | libc::MS_PRIVATE;
        if libc::mount(c"none".as_ptr(), c"/".as_ptr(), none, private, none.cast()) != 0 {
            return;
        }
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
    // The pyenv shim on some hosts needs its root to find the interpreter.
    if let Ok(root) = std::env::var("PYENV_ROOT") {
        env.push(("PYENV_ROOT".into(), root));
    }
    env
}

struct ProcessInstance {
    child: tokio::process::Child,
    /// The child's process group (its pid): killed as a whole.
    pgid: Option<i32>,
    log: Option<OwnedFd>,
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
            match self.child.wait().await {
                Ok(status) => ExitInfo {
                    code: status.code(),
                    signal: status.signal(),
                    oom_killed: false,
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
            // SIGCONT first: a paused (SIGSTOPped) group must be able to die and be reaped.
            let _ = self.signal_group(libc::SIGKILL);
            let _ = self.signal_group(libc::SIGCONT);
            let _ = self.child.start_kill();
        })
    }

    fn pause(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.signal_group(libc::SIGSTOP) })
    }

    fn resume(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move { self.signal_group(libc::SIGCONT) })
    }
}
