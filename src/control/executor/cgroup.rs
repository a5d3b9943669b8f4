//! Per-instance cgroups for the process executor: every process an instance starts (also one
//! that leaves its process group with `setsid`) is killed with the instance, its memory is
//! limited to the function's MemorySize without swap, and an out-of-memory kill is reported.
//!
//! Control-plane thread only (blocking writes to cgroupfs, a few microseconds each; `kill` polls
//! asynchronously). The server makes one directory per data dir,
//! `lambda-at-home-<hash of the data dir>`, under its own cgroup in each hierarchy it can write,
//! and one `i-<id>` directory per instance in it:
//! - cgroup v2 (`/sys/fs/cgroup` is cgroup2): memory (`memory.max`, `memory.swap.max` = 0, OOM
//!   kills counted in `memory.events`) when the memory controller can be delegated to it, and
//!   `cgroup.kill`;
//! - cgroup v1 with the v2 hierarchy beside it (hybrid, `/sys/fs/cgroup/unified`): memory from v1
//!   (`memory.limit_in_bytes`, `memory.memsw.limit_in_bytes`, `oom_kill` in
//!   `memory.oom_control`) and `cgroup.kill` from v2; pure v1: every pid in `cgroup.procs` is
//!   killed until none is left.
//!
//! When no hierarchy is writable (not root, no delegation), `detect` says why and the executor
//! falls back to process groups: no memory limit, and a process that leaves its group is found
//! by its environment instead. The name under the server's cgroup is stable per data dir, so the
//! next start of the server finds what a crashed run left (`cleanup_orphans`).

use std::fs;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where cgroup hierarchies are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// How long `kill` waits for an instance's cgroup to empty: SIGKILLed processes leave it within
/// milliseconds; one that does not (stuck in the kernel) leaves its directory to the next start.
const CGROUP_EMPTY_WAIT_MS: u64 = 3_000;
/// Pause between looks at a cgroup that is emptying.
const CGROUP_POLL_MS: u64 = 5;
/// Rounds of "kill every pid listed" on a cgroup without `cgroup.kill` (a process may fork while
/// the list is read; each round kills what the previous one missed).
const CGROUP_KILL_ROUNDS_MAX: usize = 50;

/// One hierarchy the server can write: `dir` is this data dir's directory in it.
#[derive(Clone, Debug)]
struct Base {
    dir: PathBuf,
    /// cgroup v2 (has `cgroup.kill`, `memory.max`, `memory.events`).
    v2: bool,
    /// The memory controller is enabled for the instance directories here.
    memory: bool,
}

/// The hierarchies instances are put in.
#[derive(Debug)]
pub struct Cgroups {
    bases: Vec<Base>,
}

/// What `detect` found: cgroups to use, and why memory is not limited if it is not.
pub struct Detected {
    pub cgroups: Option<Cgroups>,
    /// `None` when MemorySize is enforced; otherwise the reason, for the start-up warning.
    pub no_memory_limit: Option<String>,
}

impl Cgroups {
    /// Finds the writable hierarchies and makes this data dir's directory in each.
    pub fn detect(key: &str) -> Detected {
        let name = format!("lambda-at-home-{key}");
        let own = own_cgroups();
        let root = Path::new(CGROUP_ROOT);
        let mut bases = Vec::new();
        let mut errors = Vec::new();
        if root.join("cgroup.controllers").exists() {
            match make_base(root, own.v2.as_deref(), &name) {
                Ok(dir) => {
                    let memory = delegate_memory(&dir);
                    if let Err(e) = &memory {
                        errors.push(format!("the memory controller cannot be enabled: {e}"));
                    }
                    bases.push(Base {
                        dir,
                        v2: true,
                        memory: memory.is_ok(),
                    });
                }
                Err(e) => errors.push(format!("cannot create a cgroup (v2): {e}")),
            }
        } else {
            let memory = root.join("memory");
            if memory.join("cgroup.procs").exists() {
                match make_base(&memory, own.memory.as_deref(), &name) {
                    Ok(dir) => bases.push(Base {
                        dir,
                        v2: false,
                        memory: true,
                    }),
                    Err(e) => errors.push(format!("cannot create a cgroup (v1 memory): {e}")),
                }
            } else {
                errors.push("no cgroup memory controller is mounted".into());
            }
            let unified = root.join("unified");
            if unified.join("cgroup.procs").exists() {
                if let Ok(dir) = make_base(&unified, own.v2.as_deref(), &name) {
                    bases.push(Base {
                        dir,
                        v2: true,
                        memory: false,
                    });
                }
            }
        }
        let no_memory_limit = (!bases.iter().any(|b| b.memory)).then(|| {
            if errors.is_empty() {
                "no writable cgroup memory controller".to_string()
            } else {
                errors.join("; ")
            }
        });
        Detected {
            cgroups: (!bases.is_empty()).then_some(Cgroups { bases }),
            no_memory_limit,
        }
    }

    /// Makes instance `name`'s cgroup with its memory limit (`memory_mb`, no swap).
    pub fn create(&self, name: &str, memory_mb: u32) -> io::Result<InstanceCgroup> {
        let mut cg = InstanceCgroup {
            dirs: Vec::new(),
            join: Vec::new(),
        };
        let bytes = u64::from(memory_mb) * 1024 * 1024;
        for base in &self.bases {
            let dir = base.dir.join(name);
            fs::create_dir_all(&base.dir)?;
            fs::create_dir(&dir)?;
            cg.dirs.push(Base {
                dir: dir.clone(),
                ..base.clone()
            });
            if base.memory {
                if base.v2 {
                    write(&dir.join("memory.max"), &bytes.to_string())?;
                    // Absent without swap accounting: there is no swap to limit then.
                    let _ = write(&dir.join("memory.swap.max"), "0");
                } else {
                    write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &bytes.to_string());
                }
            }
            let procs = fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(dir.join("cgroup.procs"))?;
            cg.join.push(OwnedFd::from(procs));
        }
        Ok(cg)
    }

    /// Kills and removes every instance cgroup a previous run of the server left; returns how
    /// many there were.
    pub async fn cleanup_orphans(&self) -> usize {
        let mut names = std::collections::BTreeSet::new();
        for base in &self.bases {
            if let Ok(entries) = fs::read_dir(&base.dir) {
                for entry in entries.flatten() {
                    if entry.path().is_dir() {
                        names.insert(entry.file_name());
                    }
                }
            }
        }
        for name in &names {
            let mut cg = InstanceCgroup {
                dirs: self
                    .bases
                    .iter()
                    .map(|b| Base {
                        dir: b.dir.join(name),
                        ..b.clone()
                    })
                    .collect(),
                join: Vec::new(),
            };
            cg.kill_and_remove().await;
        }
        names.len()
    }
}

impl Drop for Cgroups {
    /// The data dir's directories go with the executor when no instance cgroup is left in them
    /// (`remove_dir` removes only an empty cgroup).
    fn drop(&mut self) {
        for base in &self.bases {
            let _ = fs::remove_dir(&base.dir);
        }
    }
}

/// One instance's cgroup in each hierarchy.
pub struct InstanceCgroup {
    dirs: Vec<Base>,
    /// Open `cgroup.procs` files, written by the child between fork and exec to join.
    join: Vec<OwnedFd>,
}

impl InstanceCgroup {
    /// The `cgroup.procs` files the child writes "0" to before exec (then closed in the parent).
    pub fn take_join_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.join)
    }

    /// Sets the memory limit (`memory_mb`, no swap) of a cgroup that already holds its process:
    /// a pooled Node process is created under a pool limit and gets its function's MemorySize
    /// when it is claimed (a write, where moving it into a new cgroup would take milliseconds).
    /// Lowering the limit below what it uses makes the kernel reclaim, or OOM-kill it.
    pub fn set_memory_mb(&self, memory_mb: u32) -> io::Result<()> {
        let bytes = (u64::from(memory_mb) * 1024 * 1024).to_string();
        for base in self.dirs.iter().filter(|b| b.memory) {
            if base.v2 {
                write(&base.dir.join("memory.max"), &bytes)?;
            } else {
                // v1 refuses a memory limit above the memory+swap one: lower that one last.
                let memsw = base.dir.join("memory.memsw.limit_in_bytes");
                let _ = write(&memsw, &bytes);
                write(&base.dir.join("memory.limit_in_bytes"), &bytes)?;
                let _ = write(&memsw, &bytes);
            }
        }
        Ok(())
    }

    /// Whether the kernel's OOM killer killed a process of this instance.
    pub fn oom_killed(&self) -> bool {
        self.dirs.iter().filter(|b| b.memory).any(|b| {
            let file = if b.v2 {
                "memory.events"
            } else {
                "memory.oom_control"
            };
            fs::read_to_string(b.dir.join(file))
                .ok()
                .and_then(|text| counter(&text, "oom_kill"))
                .is_some_and(|n| n > 0)
        })
    }

    /// Kills every process in the cgroup, waits until it is empty and removes it. Idempotent.
    pub async fn kill_and_remove(&mut self) {
        let live: Vec<&Base> = self.dirs.iter().filter(|b| b.dir.exists()).collect();
        if live.is_empty() {
            return;
        }
        let killed = live
            .iter()
            .filter(|b| b.v2)
            .any(|b| write(&b.dir.join("cgroup.kill"), "1").is_ok());
        if !killed {
            for _ in 0..CGROUP_KILL_ROUNDS_MAX {
                let pids = live.iter().flat_map(|b| pids(&b.dir)).collect::<Vec<_>>();
                if pids.is_empty() {
                    break;
                }
                for pid in pids {
                    // SAFETY: kill has no memory preconditions; a pid that is gone yields ESRCH.
                    unsafe {
                        libc::kill(pid, libc::SIGKILL);
                        // A stopped (paused) process dies once continued.
                        libc::kill(pid, libc::SIGCONT);
                    }
                }
            }
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(CGROUP_EMPTY_WAIT_MS);
        for base in live {
            loop {
                match fs::remove_dir(&base.dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if tokio::time::Instant::now() >= deadline => {
                        tracing::warn!(cgroup = %base.dir.display(), error = %e, "cgroup not empty after kill; left for the next start");
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(CGROUP_POLL_MS)).await,
                }
            }
        }
    }
}

/// `mount` + the server's own cgroup `own` + `name`, created.
fn make_base(mount: &Path, own: Option<&str>, name: &str) -> io::Result<PathBuf> {
    let own = own.ok_or_else(|| io::Error::other("the server's own cgroup is unknown"))?;
    let dir = mount.join(own.trim_start_matches('/')).join(name);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The server's own cgroup paths: in the v2 hierarchy and in v1's memory hierarchy.
#[derive(Default)]
struct OwnCgroups {
    v2: Option<String>,
    memory: Option<String>,
}

fn own_cgroups() -> OwnCgroups {
    let mut own = OwnCgroups::default();
    let text = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            own.v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "memory") {
            own.memory = Some(path.to_string());
        }
    }
    own
}

/// Enables the memory controller for `dir`'s children (and for `dir` in its parent). A parent
/// that has processes of its own cannot delegate controllers (cgroup v2's "no internal
/// processes" rule): then this fails and memory is not limited.
fn delegate_memory(dir: &Path) -> io::Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    let enabled = |d: &Path| {
        fs::read_to_string(d.join("cgroup.subtree_control"))
            .is_ok_and(|t| t.split_whitespace().any(|c| c == "memory"))
    };
    if !enabled(parent) {
        write(&parent.join("cgroup.subtree_control"), "+memory")?;
    }
    if !enabled(dir) {
        write(&dir.join("cgroup.subtree_control"), "+memory")?;
    }
    Ok(())
}

fn write(path: &Path, value: &str) -> io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

/// The pids listed in a cgroup's `cgroup.procs`.
fn pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The value of `key` in a flat-keyed cgroup file (`key value` lines).
fn counter(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// A short stable name for a data dir (its absolute path hashed): the same after a restart, and
/// different for two servers with different data dirs on one host.
pub fn data_dir_key(data_dir: &Path) -> String {
    use sha2::{Digest, Sha256};
    let path = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let digest = Sha256::digest(path.as_os_str().as_encoded_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_read_from_flat_keyed_files() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
        assert_eq!(counter(v1, "oom_kill"), Some(2));
        let v2 = "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(counter(v2, "oom_kill"), Some(1));
        assert_eq!(counter(v2, "oom"), Some(1));
        assert_eq!(counter("", "oom_kill"), None);
    }

    #[test]
    fn data_dir_key_is_stable_and_distinct() {
        let a = data_dir_key(Path::new("/srv/a"));
        assert_eq!(a, data_dir_key(Path::new("/srv/a")));
        assert_ne!(a, data_dir_key(Path::new("/srv/b")));
        assert_eq!(a.len(), 12);
    }
}
