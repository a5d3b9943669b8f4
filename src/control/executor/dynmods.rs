//! Fast cgroup migrations while the server runs: the cgroup2 `favordynmods` mount option.
//!
//! Every start of the process executor moves a process into the instance's cgroups (the child
//! between fork and exec, a fork's spare, a pooled process on its claim), and Docker's runtime
//! does the same for every container. By default the kernel guards those moves with a per-CPU
//! rwsem (`cgroup_threadgroup_rwsem`) whose writer waits for an RCU grace period: measured on the
//! 2-core test VM, moving a sleeping process into a memory cgroup took 9–22 ms while Docker
//! engines and namespaces were set up and torn down (0.2–0.3 ms on a quiet machine, under a
//! CPU-bound load or a fork loop), and 8–100 ms was measured earlier inside fork starts. Mounted with
//! `favordynmods` (Linux 6.0+), the kernel keeps that rwsem in its slow-reader mode and a move
//! takes ~0.1 ms (same measurement), at the cost of forks and exits taking one more atomic
//! operation on a shared cache line. The option lives on the cgroup2 superblock but the rwsem is
//! global: it speeds up moves in the cgroup v1 hierarchies of a hybrid host as well.
//!
//! `enable` (server start, when `--cgroup-favor-dynmods true` was given and the server is root) remounts
//! the cgroup2 hierarchy with the option added to its current ones, unless it is already there;
//! dropping the `FavorDynmods` it returns (server stop, or a start that failed later) remounts it with exactly the options it had. A server
//! killed with SIGKILL leaves the option on (harmless: only the speed of the host's forks and
//! cgroup moves changes). A second server on the same host finds the option on and leaves it
//! alone; the first one's stop turns it off under it (its starts get slower, nothing breaks).
//!
//! Runs on the main thread at start and stop; no other state.

use std::path::{Path, PathBuf};

/// The mount table of the server's mount namespace.
const MOUNTINFO: &str = "/proc/self/mountinfo";

/// The option this module adds.
const OPTION: &str = "favordynmods";

/// The cgroup2 mount the option is set on: where it is, and what a remount must keep.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cgroup2Mount {
    point: PathBuf,
    /// Per-mount flags (`nosuid`, `nodev`, `relatime`, ...): a remount without them clears them.
    flags: libc::c_ulong,
    /// Superblock options without `rw`/`ro` (`nsdelegate`, `memory_recursiveprot`, ...): a
    /// cgroup2 remount sets exactly the options it is given.
    options: Vec<String>,
}

/// The option was turned on by this server: dropping this turns it off again.
#[derive(Debug)]
pub struct FavorDynmods {
    mount: Cgroup2Mount,
}

/// What `enable` did.
#[derive(Debug)]
pub enum Enabled {
    /// Turned on now; restore at stop.
    Now(FavorDynmods),
    /// Already on (set by the host or another server); nothing to restore.
    Already(PathBuf),
}

/// Turns `favordynmods` on for the host's cgroup2 hierarchy. An error says why it could not
/// (no cgroup2 mount in this namespace, not permitted, a kernel without the option).
pub fn enable() -> Result<Enabled, String> {
    let table = std::fs::read_to_string(MOUNTINFO).map_err(|e| format!("{MOUNTINFO}: {e}"))?;
    let mount = cgroup2_mount(&table).ok_or("no cgroup2 hierarchy is mounted")?;
    if mount.options.iter().any(|o| o == OPTION) {
        return Ok(Enabled::Already(mount.point));
    }
    let mut options = mount.options.clone();
    options.push(OPTION.to_string());
    remount(&mount.point, mount.flags, &options.join(","))?;
    // A kernel that does not know the option refuses the remount (EINVAL) on cgroup2; check what
    // it reports all the same, so the log never claims a speed-up that is not there.
    let now = std::fs::read_to_string(MOUNTINFO).map_err(|e| format!("{MOUNTINFO}: {e}"))?;
    match cgroup2_mount(&now) {
        Some(m) if m.options.iter().any(|o| o == OPTION) => {
            Ok(Enabled::Now(FavorDynmods { mount }))
        }
        _ => Err("the kernel accepted the remount but does not report the option".into()),
    }
}

impl FavorDynmods {
    /// Where the option was set.
    pub fn mount_point(&self) -> &Path {
        &self.mount.point
    }
}

impl Drop for FavorDynmods {
    /// Remounts the hierarchy with the options it had before `enable` (server stop, or a start
    /// that failed after `enable`).
    fn drop(&mut self) {
        let data = self.mount.options.join(",");
        match remount(&self.mount.point, self.mount.flags, &data) {
            Ok(()) => tracing::info!(
                "cgroup2 option {OPTION} turned off again on {}",
                self.mount.point.display()
            ),
            Err(e) => tracing::warn!(
                "cannot turn the cgroup2 option {OPTION} off again on {}: {e}",
                self.mount.point.display()
            ),
        }
    }
}

fn remount(point: &Path, flags: libc::c_ulong, data: &str) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(point.as_os_str().as_bytes())
        .map_err(|_| "the mount point has a NUL byte".to_string())?;
    let data_c = std::ffi::CString::new(data).map_err(|_| "an option has a NUL byte")?;
    // SAFETY: valid NUL-terminated strings that outlive the call; a null source and type are
    // what a remount takes.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | flags,
            data_c.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "remount of {} with \"{data}\": {}",
            point.display(),
            std::io::Error::last_os_error()
        ))
    }
}

/// The first cgroup2 mount of a `/proc/self/mountinfo` text.
fn cgroup2_mount(mountinfo: &str) -> Option<Cgroup2Mount> {
    mountinfo.lines().find_map(|line| {
        // id parent major:minor root mount-point mount-options [optional...] - type source super
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        if right.first() != Some(&"cgroup2") || left.len() < 6 || right.len() < 3 {
            return None;
        }
        Some(Cgroup2Mount {
            point: PathBuf::from(unescape(left[4])),
            flags: mount_flags(left[5]),
            options: right[2]
                .split(',')
                .filter(|o| !o.is_empty() && *o != "rw" && *o != "ro")
                .map(str::to_string)
                .collect(),
        })
    })
}

/// The `MS_*` flags of a mountinfo per-mount option list.
fn mount_flags(options: &str) -> libc::c_ulong {
    options
        .split(',')
        .map(|o| match o {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            "strictatime" => libc::MS_STRICTATIME,
            "sync" => libc::MS_SYNCHRONOUS,
            "dirsync" => libc::MS_DIRSYNC,
            _ => 0,
        })
        .fold(0, |a, f| a | f)
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
31 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
41 31 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
42 31 0:39 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,memory
";

    #[test]
    fn the_cgroup2_mount_keeps_its_flags_and_options_but_not_rw() {
        let m = cgroup2_mount(HYBRID).expect("found");
        assert_eq!(m.point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(
            m.flags,
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME
        );
        assert_eq!(m.options, vec!["nsdelegate".to_string()]);
    }

    #[test]
    fn a_v2_only_host_and_an_already_set_option_are_read() {
        let v2 = "30 1 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,favordynmods,memory_recursiveprot\n";
        let m = cgroup2_mount(v2).expect("found");
        assert_eq!(m.point, PathBuf::from("/sys/fs/cgroup"));
        assert!(m.options.iter().any(|o| o == OPTION));
        assert_eq!(m.options.len(), 3);
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }

    #[test]
    fn escaped_mount_points_are_unescaped() {
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/mnt/back\134slash"), r"/mnt/back\slash");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(
            unescape(r"/big\777"),
            r"/big\777",
            "not a byte: kept as it is"
        );
    }
}
