//! The `swarm` executor: each instance is one Docker Swarm service (one replica, restart policy
//! none) that Swarm places on any node with capacity; `lah-agent` inside it fetches the code
//! from the code endpoint (`remote`), starts the runtime and links to the Runtime API over one
//! WebSocket (docs/swarm.md). Nothing of the server's host is mounted: the task needs only its
//! image (`runtimes/images/add-agent.sh`) on its node.
//!
//! Runs on the control-plane thread. Talks to the manager's Docker API (`DOCKER_HOST`); every
//! call is bounded by `OP_TIMEOUT_MS`. Hardening as the Docker executor's: read-only root (with
//! tmpfs `/var/task`, `/opt`, `/tmp`), all capabilities dropped, a non-root user, memory limit =
//! MemorySize, a pids limit and a file limit; labels `lambda-at-home.*` (services of an earlier
//! run on the same data dir are removed at start, `cleanup_orphans`); endpoint mode dnsrr (no
//! VIP, no published port); attached to `--swarm-network`; spread over nodes.
//!
//! Ends: one watcher task lists the executor's tasks and the nodes every `WATCH_INTERVAL_MS`;
//! an instance has ended when its task reached a final state (its exit code says how: the
//! agent exits with the runtime's status, 128 + signal, or `OOM_EXIT` when the kernel's OOM
//! killer took the runtime), when its task's node is down or disconnected (the node is lost:
//! its invocation fails now rather than at its deadline, and the scheduler starts a
//! replacement where Swarm has room), or when its service vanished. A task a lost node still
//! runs cannot take work again: its service is removed, and with it its secret's grant, so the
//! server refuses its register and its code fetches.
//!
//! Not available in Swarm: pause. An idle instance keeps running until `--idle-remove-s`;
//! `pause`/`resume` do nothing (Swarm has no pause, and the node's engine is not ours to call).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::models::{
    EndpointSpec, EndpointSpecModeEnum, Limit, Mount, MountTmpfsOptions, MountTypeEnum,
    NetworkAttachmentConfig, NodeState, ResourcesUlimits, ServiceSpec, ServiceSpecMode,
    ServiceSpecModeReplicated, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement,
    TaskSpecPlacementPreferences, TaskSpecPlacementSpread, TaskSpecResources,
    TaskSpecRestartPolicy, TaskSpecRestartPolicyConditionEnum, TaskState,
};
use bollard::query_parameters::{ListNodesOptions, ListServicesOptions, ListTasksOptions};
use bollard::Docker;
use tokio::sync::oneshot;

use super::docker::{
    bounded, container_env, container_name, runtime_family, LABEL_FUNCTION, LABEL_INSTANCE,
    LABEL_OWNER, LABEL_SERVER, LABEL_VERSION,
};
use super::remote::{agent_env, CodeServer};
use super::{BoxFuture, ExecError, Executor, Instance};
use crate::model::types::{ExitInfo, InstanceSpec};

/// Bound of every call to the manager.
const OP_TIMEOUT_MS: u64 = 10_000;
/// How often the watcher lists tasks and nodes: how late, at most, an ended or lost instance
/// is noticed beyond Swarm's own delay (a node is marked down after a few heartbeats).
const WATCH_INTERVAL_MS: u64 = 500;
/// A service with no task for this long after its creation has lost its task (removed by
/// someone else, or never scheduled for a reason Swarm keeps to itself).
const NO_TASK_GRACE_MS: u64 = 30_000;
/// The agent's exit status when its runtime was killed by the OOM killer (`lah-agent`).
pub const OOM_EXIT: i64 = 72;
/// Docker reports a process killed by signal N as exit code 128 + N.
const SIGNAL_EXIT_BASE: i64 = 128;
const SIGNAL_MAX: i64 = 31;
/// Where the agent is in the images `add-agent.sh` builds.
pub const AGENT_IN_IMAGE: &str = "/usr/local/bin/lah-agent";
/// Where those images keep the bootstraps (the Docker executor mounts them there instead).
const RUNTIME_ROOT: &str = "/var/runtime";
/// The agent starts as root with only the capabilities to become the runtime's user (Swarm's
/// tmpfs mounts are root's, 0755, whatever mode is asked before API 1.46): it unpacks the code
/// into them, read-only for the runtime as AWS's `/var/task`, then starts the runtime as
/// `RUNTIME_USER` (the images' `sbx_user`) with no capability and no new privileges.
const AGENT_USER: &str = "0:0";
const AGENT_CAPABILITIES: [&str; 2] = ["CAP_SETUID", "CAP_SETGID"];
const RUNTIME_USER: &str = "1000:1000";
/// Writable tmpfs of the task: its code, its layers and AWS's /tmp (512 MB, as Lambda's default
/// ephemeral storage); bytes each may hold.
const TASK_TMPFS_BYTES: i64 = 512 * 1024 * 1024;
const PIDS_MAX: i64 = 1024;
/// Lambda's quota of file descriptors per execution environment.
const NOFILE_MAX: i64 = 1024;
const MIB_BYTES: i64 = 1024 * 1024;

/// The agent images by family, as `runtimes/images/add-agent.sh` tags them.
pub fn default_images() -> HashMap<String, String> {
    ["python", "nodejs", "provided"]
        .into_iter()
        .map(|f| (f.to_string(), format!("lambda-at-home/{f}-agent:bookworm")))
        .collect()
}

/// How the Swarm executor runs services.
pub struct SwarmConfig {
    pub images: HashMap<String, String>,
    pub server_id: String,
    pub owner: String,
    pub network: Option<String>,
    /// `host:port` of the Runtime API as tasks dial it.
    pub link: String,
    /// The host part of `link`: where tasks reach the code endpoint.
    pub code_host: String,
}

type Watches = Arc<Mutex<HashMap<String, Watch>>>;

struct Watch {
    ended: Option<oneshot::Sender<ExitInfo>>,
    created: std::time::Instant,
}

pub struct SwarmExecutor {
    docker: Docker,
    config: SwarmConfig,
    code: Arc<CodeServer>,
    watches: Watches,
}

impl SwarmExecutor {
    /// Connects to the manager (`DOCKER_HOST`), checks that it is one and has the images, and
    /// starts the watcher.
    pub async fn connect(
        config: SwarmConfig,
        code: Arc<CodeServer>,
    ) -> Result<SwarmExecutor, ExecError> {
        let docker = Docker::connect_with_defaults()
            .map_err(|e| ExecError::Unavailable(format!("docker client: {e}")))?;
        let unavailable = |e: super::docker::CallError| ExecError::Unavailable(e.to_string());
        let docker = bounded(OP_TIMEOUT_MS, docker.negotiate_version())
            .await
            .map_err(unavailable)?;
        let info = bounded(OP_TIMEOUT_MS, docker.info())
            .await
            .map_err(unavailable)?;
        let manager = info
            .swarm
            .as_ref()
            .and_then(|s| s.control_available)
            .unwrap_or(false);
        if !manager {
            return Err(ExecError::Unavailable(
                "the Docker engine (DOCKER_HOST) is not a Swarm manager".into(),
            ));
        }
        // A family whose image the manager lacks cannot start; the others can.
        let mut config = config;
        let mut missing = Vec::new();
        for (family, image) in &config.images {
            if bounded(OP_TIMEOUT_MS, docker.inspect_image(image))
                .await
                .is_err()
            {
                missing.push((family.clone(), image.clone()));
            }
        }
        missing.sort();
        if missing.len() == config.images.len() {
            return Err(ExecError::Unavailable(format!(
                "no agent image on the manager ({}): build them with runtimes/images/add-agent.sh, then docker save | docker load on every node",
                missing.iter().map(|(_, i)| i.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        for (family, image) in missing {
            tracing::warn!("swarm executor: image {image} missing on the manager: {family} functions cannot start (runtimes/images/add-agent.sh)");
            config.images.remove(&family);
        }
        let watches: Watches = Arc::default();
        tokio::spawn(watch(docker.clone(), config.owner.clone(), watches.clone()));
        Ok(SwarmExecutor {
            docker,
            config,
            code,
            watches,
        })
    }

    async fn start_instance(&self, spec: InstanceSpec) -> Result<SwarmInstance, ExecError> {
        let runtime = &spec.function.config.runtime;
        let family = runtime_family(runtime)
            .ok_or_else(|| ExecError::UnsupportedRuntime(runtime.clone()))?;
        let image = self.config.images.get(family).ok_or_else(|| {
            ExecError::UnsupportedRuntime(format!("{runtime} (no image for {family})"))
        })?;
        let token = spec
            .env
            .iter()
            .find(|(k, _)| k == "LAMBDA_INSTANCE_ID")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        let mut dirs: Vec<&Path> = vec![spec.function.code_dir()];
        dirs.extend(spec.function.opt_dir());
        let hashes = self.code.grant(&token, &dirs).await?;
        let name = container_name(&self.config.server_id, &spec.id.to_string());
        let body = service_spec(
            &spec,
            &name,
            image,
            family,
            &self.config,
            &hashes,
            self.code.addr(),
        );
        let (tx, rx) = oneshot::channel();
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                name.clone(),
                Watch {
                    ended: Some(tx),
                    created: std::time::Instant::now(),
                },
            );
        if let Err(e) = bounded(OP_TIMEOUT_MS, self.docker.create_service(body, None)).await {
            self.watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            self.code.revoke(&token);
            // A create that timed out may still have happened.
            let _ = bounded(OP_TIMEOUT_MS, self.docker.delete_service(&name)).await;
            return Err(e.into_exec("create service"));
        }
        Ok(SwarmInstance {
            docker: self.docker.clone(),
            name,
            token,
            code: self.code.clone(),
            watches: self.watches.clone(),
            ended: Some(rx),
            exit: None,
            removed: false,
        })
    }

    async fn remove_orphans(&self) -> Result<usize, ExecError> {
        let options = ListServicesOptions {
            filters: Some(HashMap::from([(
                "label".to_string(),
                vec![format!("{LABEL_OWNER}={}", self.config.owner)],
            )])),
            ..Default::default()
        };
        let services = bounded(OP_TIMEOUT_MS, self.docker.list_services(Some(options)))
            .await
            .map_err(|e| e.into_exec("list services"))?;
        let mut removed = 0;
        for service in services {
            if let Some(id) = service.id {
                if bounded(OP_TIMEOUT_MS, self.docker.delete_service(&id))
                    .await
                    .is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// The service of one instance.
fn service_spec(
    spec: &InstanceSpec,
    name: &str,
    image: &str,
    family: &str,
    config: &SwarmConfig,
    hashes: &[String],
    code: SocketAddr,
) -> ServiceSpec {
    let function = &spec.function.config;
    let labels = HashMap::from([
        (LABEL_SERVER.to_string(), config.server_id.clone()),
        (LABEL_OWNER.to_string(), config.owner.clone()),
        (LABEL_FUNCTION.to_string(), function.name.clone()),
        (LABEL_VERSION.to_string(), spec.function.version.clone()),
        (LABEL_INSTANCE.to_string(), spec.id.to_string()),
    ]);
    let runtime_env: Vec<(String, String)> = spec
        .env
        .iter()
        .filter(|(k, _)| k != "AWS_LAMBDA_RUNTIME_API")
        .cloned()
        .chain(agent_env(&config.link, code, &config.code_host, hashes))
        .chain([("LAH_AGENT_RUN_AS".to_string(), RUNTIME_USER.to_string())])
        .collect();
    let env = container_env(&runtime_env, &function.runtime);
    let tmpfs = |target: &str, mode: i64| Mount {
        target: Some(target.to_string()),
        typ: Some(MountTypeEnum::TMPFS),
        tmpfs_options: Some(MountTmpfsOptions {
            size_bytes: Some(TASK_TMPFS_BYTES),
            mode: Some(mode),
            ..Default::default()
        }),
        ..Default::default()
    };
    let memory_bytes = i64::from(function.memory_mb) * MIB_BYTES;
    let container = TaskSpecContainerSpec {
        image: Some(image.to_string()),
        labels: Some(labels.clone()),
        command: Some(vec![AGENT_IN_IMAGE.to_string()]),
        args: Some(runtime_args(family)),
        env: Some(env),
        dir: Some("/var/task".to_string()),
        user: Some(AGENT_USER.to_string()),
        read_only: Some(true),
        mounts: Some(vec![
            tmpfs("/var/task", 0o755),
            tmpfs("/opt", 0o755),
            tmpfs("/tmp", 0o1777),
        ]),
        capability_drop: Some(vec!["ALL".to_string()]),
        capability_add: Some(AGENT_CAPABILITIES.iter().map(|c| c.to_string()).collect()),
        ulimits: Some(vec![ResourcesUlimits {
            name: Some("nofile".to_string()),
            soft: Some(NOFILE_MAX),
            hard: Some(NOFILE_MAX),
        }]),
        ..Default::default()
    };
    ServiceSpec {
        name: Some(name.to_string()),
        labels: Some(labels),
        task_template: Some(TaskSpec {
            container_spec: Some(container),
            resources: Some(TaskSpecResources {
                limits: Some(Limit {
                    memory_bytes: Some(memory_bytes),
                    pids: Some(PIDS_MAX),
                    ..Default::default()
                }),
                reservations: None,
            }),
            restart_policy: Some(TaskSpecRestartPolicy {
                condition: Some(TaskSpecRestartPolicyConditionEnum::NONE),
                ..Default::default()
            }),
            placement: Some(TaskSpecPlacement {
                preferences: Some(vec![TaskSpecPlacementPreferences {
                    spread: Some(TaskSpecPlacementSpread {
                        spread_descriptor: Some("node.id".to_string()),
                    }),
                }]),
                ..Default::default()
            }),
            networks: config.network.as_ref().map(|n| {
                vec![NetworkAttachmentConfig {
                    target: Some(n.clone()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        }),
        mode: Some(ServiceSpecMode {
            replicated: Some(ServiceSpecModeReplicated { replicas: Some(1) }),
            ..Default::default()
        }),
        endpoint_spec: Some(EndpointSpec {
            mode: Some(EndpointSpecModeEnum::DNSRR),
            ports: None,
        }),
        ..Default::default()
    }
}

/// The runtime's command inside the agent image, by family.
fn runtime_args(family: &str) -> Vec<String> {
    let cmd: Vec<String> = match family {
        "python" => vec![
            "python3".into(),
            format!("{RUNTIME_ROOT}/python/bootstrap.py"),
        ],
        "nodejs" => vec!["node".into(), format!("{RUNTIME_ROOT}/node/bootstrap.js")],
        _ => vec!["/var/task/bootstrap".into()],
    };
    cmd
}

/// How a task's final state says its agent ended.
fn exit_of(exit_code: Option<i64>) -> ExitInfo {
    match exit_code {
        Some(OOM_EXIT) => ExitInfo {
            code: None,
            signal: Some(libc::SIGKILL),
            oom_killed: true,
        },
        Some(code) if (SIGNAL_EXIT_BASE + 1..=SIGNAL_EXIT_BASE + SIGNAL_MAX).contains(&code) => {
            ExitInfo {
                code: None,
                signal: i32::try_from(code - SIGNAL_EXIT_BASE).ok(),
                oom_killed: false,
            }
        }
        Some(code) => ExitInfo {
            code: i32::try_from(code).ok(),
            signal: None,
            oom_killed: false,
        },
        None => ExitInfo {
            code: None,
            signal: None,
            oom_killed: false,
        },
    }
}

/// Lost with its node: reported as killed.
fn lost() -> ExitInfo {
    ExitInfo {
        code: None,
        signal: Some(libc::SIGKILL),
        oom_killed: false,
    }
}

/// The watcher: tells each watched instance when its task ended or its node was lost.
async fn watch(docker: Docker, owner: String, watches: Watches) {
    let label = format!("{LABEL_OWNER}={owner}");
    loop {
        tokio::time::sleep(Duration::from_millis(WATCH_INTERVAL_MS)).await;
        if watches.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            continue;
        }
        let tasks = bounded(
            OP_TIMEOUT_MS,
            docker.list_tasks(Some(ListTasksOptions {
                filters: Some(HashMap::from([("label".to_string(), vec![label.clone()])])),
            })),
        )
        .await;
        let nodes = bounded(OP_TIMEOUT_MS, docker.list_nodes(None::<ListNodesOptions>)).await;
        let (Ok(tasks), Ok(nodes)) = (tasks, nodes) else {
            continue;
        };
        let down: std::collections::HashSet<String> = nodes
            .iter()
            .filter(|n| {
                matches!(
                    n.status.as_ref().and_then(|s| s.state),
                    Some(NodeState::DOWN) | Some(NodeState::DISCONNECTED)
                )
            })
            .filter_map(|n| n.id.clone())
            .collect();
        // Service name → (ended, exit), from its task(s) (one per service: replicas 1, no restart).
        let mut seen: HashMap<String, Option<ExitInfo>> = HashMap::new();
        for task in &tasks {
            let Some(service) = service_name_of(task) else {
                continue;
            };
            let status = task.status.as_ref();
            let state = status.and_then(|s| s.state);
            let exit_code = status
                .and_then(|s| s.container_status.as_ref())
                .and_then(|c| c.exit_code);
            let err = status.and_then(|s| s.err.clone()).unwrap_or_default();
            let ended = match state {
                Some(
                    TaskState::COMPLETE
                    | TaskState::FAILED
                    | TaskState::SHUTDOWN
                    | TaskState::REJECTED
                    | TaskState::ORPHANED
                    | TaskState::REMOVE,
                ) => {
                    tracing::info!(service = %service, ?state, exit_code, "swarm task ended: {err}");
                    Some(exit_of(exit_code))
                }
                _ if task.node_id.as_ref().is_some_and(|n| down.contains(n)) => {
                    tracing::warn!(service = %service, node = ?task.node_id, "swarm task lost with its node");
                    Some(lost())
                }
                _ => None,
            };
            seen.insert(service, ended);
        }
        let mut watches = watches.lock().unwrap_or_else(|e| e.into_inner());
        for (name, w) in watches.iter_mut() {
            let ended = match seen.get(name) {
                Some(ended) => ended.clone(),
                None if w.created.elapsed() > Duration::from_millis(NO_TASK_GRACE_MS) => {
                    tracing::warn!(service = %name, "swarm service has no task");
                    Some(lost())
                }
                None => None,
            };
            if let Some(exit) = ended {
                if let Some(tx) = w.ended.take() {
                    let _ = tx.send(exit);
                }
            }
        }
    }
}

/// How the task of service `name` ended, if it has (one look, for a kill).
async fn final_state(docker: &Docker, name: &str) -> Option<ExitInfo> {
    let tasks = bounded(
        OP_TIMEOUT_MS,
        docker.list_tasks(Some(ListTasksOptions {
            filters: Some(HashMap::from([(
                "service".to_string(),
                vec![name.to_string()],
            )])),
        })),
    )
    .await
    .ok()?;
    tasks.iter().find_map(|task| {
        let status = task.status.as_ref()?;
        let done = matches!(
            status.state?,
            TaskState::COMPLETE | TaskState::FAILED | TaskState::REJECTED
        );
        let code = status.container_status.as_ref().and_then(|c| c.exit_code);
        if done {
            tracing::info!(service = %name, state = ?status.state, exit_code = code, "swarm task ended: {}", status.err.as_deref().unwrap_or_default());
        }
        done.then(|| exit_of(code))
    })
}

/// The service a task belongs to, by the name its labels give it (`lah-<server>-<instance>`),
/// which is its service's name.
fn service_name_of(task: &bollard::models::Task) -> Option<String> {
    let labels = task
        .spec
        .as_ref()?
        .container_spec
        .as_ref()?
        .labels
        .as_ref()?;
    let server = labels.get(LABEL_SERVER)?;
    let instance = labels.get(LABEL_INSTANCE)?;
    Some(container_name(server, instance))
}

impl Executor for SwarmExecutor {
    fn name(&self) -> &'static str {
        "swarm"
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
}

/// One instance's service.
struct SwarmInstance {
    docker: Docker,
    name: String,
    token: String,
    code: Arc<CodeServer>,
    watches: Watches,
    ended: Option<oneshot::Receiver<ExitInfo>>,
    exit: Option<ExitInfo>,
    removed: bool,
}

impl Instance for SwarmInstance {
    fn take_log(&mut self) -> Option<std::os::fd::OwnedFd> {
        // The runtime's output arrives over the link (`log` messages).
        None
    }

    fn wait(&mut self) -> BoxFuture<'_, ExitInfo> {
        Box::pin(async move {
            if let Some(exit) = &self.exit {
                return exit.clone();
            }
            // Awaited by reference: a wait dropped for a command (the control plane selects
            // over both) leaves the receiver for the next one.
            let exit = match self.ended.as_mut() {
                Some(rx) => rx.await.unwrap_or_else(|_| lost()),
                None => lost(),
            };
            self.ended = None;
            self.exit = Some(exit.clone());
            exit
        })
    }

    fn kill(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if self.removed {
                return;
            }
            self.removed = true;
            self.code.revoke(&self.token);
            // How it ended, if it did (its link closing is often what made the server kill it):
            // asked before the removal, which takes its task's state with it.
            if self.exit.is_none() {
                self.exit = final_state(&self.docker, &self.name).await;
            }
            let _ = bounded(OP_TIMEOUT_MS, self.docker.delete_service(&self.name)).await;
            let watch = self
                .watches
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.name);
            if self.exit.is_none() {
                self.exit = Some(lost());
            }
            drop(watch);
        })
    }

    fn pause(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        // Swarm has no pause (see the module doc): the idle instance keeps running.
        Box::pin(async { Ok(()) })
    }

    fn resume(&mut self) -> BoxFuture<'_, Result<(), ExecError>> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::types::{Function, FunctionConfig, InstanceId};
    use std::collections::BTreeMap;

    fn spec() -> InstanceSpec {
        let config = FunctionConfig {
            name: "f".to_string(),
            runtime: "python3.12".to_string(),
            handler: "lambda_function.handler".to_string(),
            role: String::new(),
            description: String::new(),
            timeout_s: 3,
            memory_mb: 256,
            environment: BTreeMap::new(),
            code_sha256: String::new(),
            code_size: 0,
            last_modified: String::new(),
            revision_id: String::new(),
            reserved_concurrency: None,
            layers: Vec::new(),
            logging: Default::default(),
        };
        let function = Arc::new(Function::latest(config, "code".into(), 1));
        InstanceSpec {
            id: InstanceId(0x101),
            function,
            runtime_api: "127.10.0.1:9001".parse().expect("addr"),
            env: vec![
                ("AWS_LAMBDA_RUNTIME_API".into(), "127.10.0.1:9001".into()),
                (
                    "LAMBDA_INSTANCE_ID".into(),
                    "i-00000101-0123456789abcdef".into(),
                ),
            ],
            runtimes_dir: "runtimes".into(),
            uid: None,
        }
    }

    /// The service carries the Docker executor's hardening, the agent's settings and no path
    /// of this host.
    #[test]
    fn service_is_hardened_and_self_contained() {
        let config = SwarmConfig {
            images: default_images(),
            server_id: "s1".into(),
            owner: "owner1".into(),
            network: Some("net".into()),
            link: "10.0.0.1:9001".into(),
            code_host: "10.0.0.1".into(),
        };
        let hashes = vec!["ab".repeat(32)];
        let code: SocketAddr = "10.0.0.1:7000".parse().unwrap();
        let image = "lambda-at-home/python-agent:bookworm";
        let service = service_spec(
            &spec(),
            "lah-s1-i-00000101",
            image,
            "python",
            &config,
            &hashes,
            code,
        );
        let task = service.task_template.as_ref().unwrap();
        let c = task.container_spec.as_ref().unwrap();
        assert_eq!(c.read_only, Some(true));
        assert_eq!(c.capability_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(c.command, Some(vec![AGENT_IN_IMAGE.to_string()]));
        assert_eq!(
            c.args,
            Some(vec![
                "python3".to_string(),
                "/var/runtime/python/bootstrap.py".to_string()
            ])
        );
        let env = c.env.as_ref().unwrap();
        let has = |kv: &str| env.iter().any(|e| e == kv);
        assert!(has("LAH_AGENT_LINK=10.0.0.1:9001"), "{env:?}");
        assert!(has("LAH_AGENT_CODE=10.0.0.1:7000"), "{env:?}");
        assert!(
            has(&format!("LAH_AGENT_CODE_SHA256={}", hashes[0])),
            "{env:?}"
        );
        assert!(has("LAH_AGENT_RUN_AS=1000:1000"), "{env:?}");
        assert!(has("LAMBDA_TASK_ROOT=/var/task"), "{env:?}");
        assert!(
            !env.iter().any(|e| e.starts_with("AWS_LAMBDA_RUNTIME_API=")),
            "{env:?}"
        );
        assert!(
            !env.iter().any(|e| e.contains("runtimes")),
            "no host path: {env:?}"
        );
        let mounts = c.mounts.as_ref().unwrap();
        assert!(
            mounts.iter().all(|m| m.typ == Some(MountTypeEnum::TMPFS)),
            "{mounts:?}"
        );
        let limits = task.resources.as_ref().unwrap().limits.as_ref().unwrap();
        assert_eq!(limits.memory_bytes, Some(256 * MIB_BYTES));
        assert_eq!(limits.pids, Some(PIDS_MAX));
        assert_eq!(
            task.restart_policy.as_ref().unwrap().condition,
            Some(TaskSpecRestartPolicyConditionEnum::NONE)
        );
        assert_eq!(
            task.networks.as_ref().unwrap()[0].target.as_deref(),
            Some("net")
        );
        assert_eq!(
            service.endpoint_spec.as_ref().unwrap().mode,
            Some(EndpointSpecModeEnum::DNSRR)
        );
        let labels = service.labels.as_ref().unwrap();
        assert_eq!(labels.get(LABEL_OWNER).map(String::as_str), Some("owner1"));
        assert_eq!(labels.get(LABEL_FUNCTION).map(String::as_str), Some("f"));
        assert_eq!(c.labels.as_ref(), Some(labels));
    }

    #[test]
    fn exit_codes_say_how_the_agent_ended() {
        assert_eq!(exit_of(Some(0)).code, Some(0));
        assert_eq!(
            exit_of(Some(1)).describe(),
            "Runtime exited with error: exit status 1"
        );
        assert_eq!(exit_of(Some(137)).signal, Some(9));
        assert!(exit_of(Some(OOM_EXIT)).oom_killed);
        assert!(lost().signal.is_some());
    }
}
