//! The `agent` executor: each instance is `lah-agent` started as a process on this host, which
//! fetches the code from the code endpoint, starts the runtime and links to the Runtime API over
//! one WebSocket, exactly as inside a Swarm task (`swarm`), minus the container. It exists to
//! prove and measure the agent's link on one host (the extra hop against the `process`
//! executor), not to isolate: instances run as the server's user without cgroups (no memory
//! limit), their connections are accepted on their secret alone (`Instance::uid` is `None`).
//!
//! Runs on the control-plane thread. Each instance gets a directory
//! `<data-dir>/agents/<instance id>/` (its `task` and `opt` unpacked there by the agent), removed
//! when the instance is killed, and at the next start for what a crashed server left
//! (`cleanup_orphans`). The agent runs in its own process group (killed as a whole) with
//! `PR_SET_PDEATHSIG`, and listens on an ephemeral port of 127.0.0.1 for its runtime.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use super::remote::{agent_env, CodeServer};
use super::{BoxFuture, ExecError, Executor, Instance, LayerPaths};
use crate::model::types::{ExitInfo, InstanceSpec};

/// How the agent executor starts instances.
pub struct AgentExecutor {
    /// The `lah-agent` executable.
    agent: PathBuf,
    /// `<data-dir>/agents`, absolute.
    dir: PathBuf,
    /// The WebSocket packages' dir (`--runtime-deps-dir`), for `LAMBDA_WS_CLIENT=library`.
    deps_dir: PathBuf,
    /// `host:port` of the Runtime API as the agents dial it.
    link: String,
    code: Arc<CodeServer>,
    code_host: String,
}

impl AgentExecutor {
    pub fn new(
        agent: PathBuf,
        dir: PathBuf,
        deps_dir: PathBuf,
        link: String,
        code: Arc<CodeServer>,
        code_host: String,
    ) -> Result<AgentExecutor, ExecError> {
        if !agent.is_file() {
            return Err(ExecError::Unavailable(format!(
                "lah-agent not found at {} (--agent-path)",
                agent.display()
            )));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| ExecError::Unavailable(format!("{}: {e}", dir.display())))?;
        Ok(AgentExecutor {
            agent,
            dir,
            deps_dir,
            link,
            code,
            code_host,
        })
    }

    async fn start_instance(&self, spec: InstanceSpec) -> Result<AgentInstance, ExecError> {
        let runtime = spec.function.config.runtime.clone();
        let token = env_of(&spec, "LAMBDA_INSTANCE_ID").to_string();
        let mut dirs: Vec<&Path> = vec![spec.function.code_dir()];
        dirs.extend(spec.function.opt_dir());
        let hashes = self.code.grant(&token, &dirs).await?;
        let home = self.dir.join(spec.id.to_string());
        let task = home.join("task");
        let opt = home.join("opt");
        let command = runtime_command(&spec, &task)?;
        let mut cmd = tokio::process::Command::new(&self.agent);
        cmd.args(&command)
            .env_clear()
            .envs(
                spec.env
                    .iter()
                    .filter(|(k, _)| k != "AWS_LAMBDA_RUNTIME_API")
                    .map(|(k, v)| (k, v)),
            )
            .envs(agent_env(
                &self.link,
                self.code.addr(),
                &self.code_host,
                &hashes,
            ))
            .envs(path_env(&runtime, &task, &opt, &self.deps_dir, &spec))
            .env("LAH_AGENT_TASK_DIR", &task)
            .env("LAH_AGENT_OPT_DIR", &opt)
            .env("LAH_AGENT_LISTEN", "127.0.0.1:0")
            .stdin(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.code.revoke(&token);
                return Err(ExecError::Spawn(format!("lah-agent: {e}")));
            }
        };
        Ok(AgentInstance {
            pgid: child.id().map(|p| p as i32),
            child,
            home,
            token,
            code: self.code.clone(),
        })
    }
}

fn env_of<'a>(spec: &'a InstanceSpec, key: &str) -> &'a str {
    spec.env
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_default()
}

/// The runtime's command line, which the agent starts (the bootstraps of this server's
/// `runtimes/`, or the function's own `bootstrap`).
fn runtime_command(spec: &InstanceSpec, task: &Path) -> Result<Vec<String>, ExecError> {
    let runtime = spec.function.config.runtime.as_str();
    let rt = &spec.runtimes_dir;
    let cmd = if runtime.starts_with("python") {
        vec![
            "python3".to_string(),
            rt.join("python/bootstrap.py").display().to_string(),
        ]
    } else if runtime.starts_with("nodejs") {
        vec![
            "node".to_string(),
            rt.join("node/bootstrap.js").display().to_string(),
        ]
    } else if runtime.starts_with("provided") {
        vec![task.join("bootstrap").display().to_string()]
    } else {
        return Err(ExecError::UnsupportedRuntime(runtime.to_string()));
    };
    Ok(cmd)
}

/// The path variables of the runtime, for the directories the agent unpacks into.
fn path_env(
    runtime: &str,
    task: &Path,
    opt: &Path,
    deps: &Path,
    spec: &InstanceSpec,
) -> Vec<(String, String)> {
    let task = task.display().to_string();
    let layers = LayerPaths::under(&opt.display().to_string(), runtime);
    let host_path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let python_path = [
        vec![task.clone()],
        layers.python,
        vec![deps.join("python").display().to_string()],
    ]
    .concat();
    let node_path = [
        vec![format!("{task}/node_modules")],
        layers.node,
        vec![deps.join("node/node_modules").display().to_string()],
    ]
    .concat();
    let mut env = vec![
        ("LAMBDA_TASK_ROOT".to_string(), task),
        (
            "LAMBDA_RUNTIME_DIR".to_string(),
            spec.runtimes_dir.display().to_string(),
        ),
        ("PATH".to_string(), format!("{}:{host_path}", layers.bin)),
        (
            "HOME".to_string(),
            std::env::var("HOME").unwrap_or_else(|_| "/tmp".into()),
        ),
        ("PYTHONUNBUFFERED".to_string(), "1".to_string()),
        ("PYTHONDONTWRITEBYTECODE".to_string(), "1".to_string()),
        ("PYTHONPATH".to_string(), python_path.join(":")),
        ("NODE_PATH".to_string(), node_path.join(":")),
        ("LD_LIBRARY_PATH".to_string(), layers.lib),
    ];
    // The pyenv shim on some hosts needs its root to find the interpreter.
    if let Ok(root) = std::env::var("PYENV_ROOT") {
        env.push(("PYENV_ROOT".to_string(), root));
    }
    env
}

impl Executor for AgentExecutor {
    fn name(&self) -> &'static str {
        "agent"
    }

    fn start(&self, spec: InstanceSpec) -> BoxFuture<'_, Result<Box<dyn Instance>, ExecError>> {
        Box::pin(async move {
            let instance = self.start_instance(spec).await?;
            Ok(Box::new(instance) as Box<dyn Instance>)
        })
    }

    /// Instance directories a crashed run left (their agents died with it: PDEATHSIG).
    fn cleanup_orphans(&self) -> BoxFuture<'_, Result<usize, ExecError>> {
        let dir = self.dir.clone();
        Box::pin(async move {
            let removed = tokio::task::spawn_blocking(move || {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    return 0;
                };
                entries
                    .flatten()
                    .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
                    .count()
            })
            .await
            .unwrap_or(0);
            Ok(removed)
        })
    }
}

/// One agent process and what it unpacked.
struct AgentInstance {
    child: tokio::process::Child,
    pgid: Option<i32>,
    home: PathBuf,
    token: String,
    code: Arc<CodeServer>,
}

impl AgentInstance {
    fn signal(&self, sig: i32) {
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg on the group we created; a stale group yields ESRCH, ignored.
            unsafe { libc::killpg(pgid, sig) };
        }
    }
}

impl Instance for AgentInstance {
    fn take_log(&mut self) -> Option<std::os::fd::OwnedFd> {
        // The runtime's output arrives over the link (`log` messages).
        None
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
            self.signal(libc::SIGKILL);
            self.signal(libc::SIGCONT);
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
            self.code.revoke(&self.token);
            let home = self.home.clone();
            let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(home)).await;
        })
    }

    fn pause(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            self.signal(libc::SIGSTOP);
            Ok(())
        })
    }

    fn resume(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async move {
            self.signal(libc::SIGCONT);
            Ok(())
        })
    }
}
