//! The process executor's instance identity: what a child does between fork and exec to become
//! its instance's uid with a view of the data dir that holds only what it needs.
//!
//! Runs on the control-plane thread (`DataView::prepare`, `check_reachable`) and in the forked
//! child (`enter`, async-signal-safe syscalls only). Root only: a non-root server cannot switch
//! uids or mount, and then runs instances unverified (see `ProcessExecutor`).
//!
//! The child, in its own mount namespace (unshared by the caller): covers the data dir with an
//! empty read-only tmpfs and binds back, read-only and at their own paths, only the directories
//! the instance uses (its code, its merged layers, the WebSocket packages when they are under the
//! data dir). So no other function's code or configuration, no event log and no other server file
//! under the data dir exists for it, whatever their modes; paths stay as they were, so
//! `LAMBDA_TASK_ROOT` and the search paths need no change. Then it drops every group and switches
//! to the instance's uid and gid (the same number), forbids itself new privileges (setuid
//! programs), and asks again to die with the server (a uid change clears that request).
//!
//! Invariant: `enter` either finishes every step or fails the spawn; an instance never runs
//! under its uid with the whole data dir visible, nor as root when a uid was asked.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Size cap of the tmpfs that covers the data dir: it holds only empty mount points, and a cap
/// keeps a bug from turning it into a memory sink (it is read-only once set up anyway).
pub(super) const COVER_OPTIONS: &std::ffi::CStr = c"mode=0755,size=64k";

/// What the child needs, prepared before the fork (nothing may allocate after it).
pub struct DataView {
    /// The absolute data dir: where the tmpfs goes.
    data_dir: CString,
    /// Directories to create inside the tmpfs, parents first.
    mkdirs: Vec<CString>,
    /// (directory, `/proc/self/fd/N` it is opened as in the child, fd N): binds after the cover.
    binds: Vec<(CString, CString, RawFd)>,
    /// Descriptor numbers reserved for the sources (placeholders on `/dev/null`, close-on-exec):
    /// the child opens each directory in its own mount namespace (a bind's source must be a mount
    /// of the caller's namespace) and moves it onto its number, so the source's name is known
    /// before the fork.
    _reserved: Vec<OwnedFd>,
}

impl DataView {
    /// A view of `data_dir` in which only `visible` (directories under it) exist. Directories
    /// outside the data dir are left as they are (the host's permissions govern them).
    pub fn prepare(data_dir: &Path, visible: &[&Path]) -> io::Result<DataView> {
        let data_dir = std::path::absolute(data_dir)?;
        let mut mkdirs = Vec::new();
        let mut binds = Vec::new();
        let mut reserved = Vec::new();
        for dir in visible {
            let dir = std::path::absolute(dir)?;
            let Ok(rel) = dir.strip_prefix(&data_dir) else {
                continue;
            };
            if rel.as_os_str().is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the whole data dir cannot be shown to an instance",
                ));
            }
            let mut at = data_dir.clone();
            for part in rel.components() {
                at.push(part);
                mkdirs.push(cstring(&at)?);
            }
            if !dir.is_dir() {
                continue;
            }
            let fd: OwnedFd = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_CLOEXEC)
                .open("/dev/null")?
                .into();
            let source = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .expect("no NUL in a number");
            binds.push((cstring(&dir)?, source, fd.as_raw_fd()));
            reserved.push(fd);
        }
        Ok(DataView {
            data_dir: cstring(&data_dir)?,
            mkdirs,
            binds,
            _reserved: reserved,
        })
    }
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// In the child, after the caller unshared the mount namespace and made it private: shows only
/// `view` of the data dir, then becomes `uid`. `parent` is the server's pid, to notice a server
/// that died before the death signal was set again.
///
/// # Safety
/// Only between fork and exec: it changes the calling process's mounts and credentials.
pub unsafe fn enter(view: &DataView, uid: u32, parent: libc::pid_t) -> io::Result<()> {
    let none: *const libc::c_char = std::ptr::null();
    let fail = || Err(io::Error::last_os_error());
    // SAFETY: plain syscalls on NUL-terminated strings owned by `view`, alive for the calls.
    unsafe {
        // The sources, opened in this namespace before the cover hides them.
        for (dir, _, slot) in &view.binds {
            let fd = libc::open(
                dir.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            );
            if fd < 0 || libc::dup3(fd, *slot, libc::O_CLOEXEC) < 0 {
                return fail();
            }
            libc::close(fd);
        }
        let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        if libc::mount(
            c"tmpfs".as_ptr(),
            view.data_dir.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            COVER_OPTIONS.as_ptr().cast(),
        ) != 0
        {
            return fail();
        }
        for dir in &view.mkdirs {
            if libc::mkdir(dir.as_ptr(), 0o755) != 0
                && io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
            {
                return fail();
            }
        }
        for (target, source, _) in &view.binds {
            let bind = libc::MS_BIND | libc::MS_REC;
            if libc::mount(source.as_ptr(), target.as_ptr(), none, bind, none.cast()) != 0 {
                return fail();
            }
            let read_only = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID;
            if libc::mount(none, target.as_ptr(), none, read_only, none.cast()) != 0 {
                return fail();
            }
        }
        let cover_ro = libc::MS_REMOUNT | libc::MS_RDONLY | flags;
        if libc::mount(
            none,
            view.data_dir.as_ptr(),
            none,
            cover_ro,
            COVER_OPTIONS.as_ptr().cast(),
        ) != 0
        {
            return fail();
        }
        if libc::setgroups(0, std::ptr::null()) != 0
            || libc::setgid(uid) != 0
            || libc::setuid(uid) != 0
        {
            return fail();
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return fail();
        }
        // The uid change cleared the death signal set before it.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            return Err(io::Error::from_raw_os_error(libc::ESRCH));
        }
    }
    Ok(())
}

/// What an unprivileged uid must be able to do with a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Reach it (every directory on the way searchable).
    Reach,
    /// Read it (a file) or list it (a directory).
    Read,
    /// Execute it (a program).
    Exec,
}

/// Whether a uid that owns nothing on the host and is in none of its groups (an instance's) can
/// use `path` as `need` says: the "other" permission bits of every directory on the way and of
/// the path itself, for the path as given and with its symlinks resolved. A missing path is
/// reported as such. Approximate by design: ACLs and LSMs are not consulted.
pub fn check_reachable(path: &Path, need: Need) -> Result<(), String> {
    let resolved = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let given = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    for p in [given, resolved.clone()] {
        let mut at = PathBuf::from("/");
        let parents: Vec<_> = p
            .parent()
            .map(|d| d.components().collect())
            .unwrap_or_default();
        for part in parents {
            at.push(part);
            let meta = std::fs::metadata(&at).map_err(|e| format!("{}: {e}", at.display()))?;
            if meta.is_dir() && meta.mode() & 0o001 == 0 {
                return Err(format!(
                    "{} is not searchable by other users (mode {:o})",
                    at.display(),
                    meta.mode() & 0o7777
                ));
            }
        }
    }
    let meta = std::fs::metadata(&resolved).map_err(|e| format!("{}: {e}", path.display()))?;
    let bits = match need {
        Need::Reach => 0,
        Need::Read if meta.is_dir() => 0o005,
        Need::Read => 0o004,
        Need::Exec => 0o001,
    };
    if meta.mode() & bits != bits {
        return Err(format!(
            "{} is not {} by other users (mode {:o})",
            path.display(),
            match need {
                Need::Exec => "executable",
                _ => "readable",
            },
            meta.mode() & 0o7777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn reachability_follows_every_directory_and_the_final_bits() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let sub = root.join("sub");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("prog");
        std::fs::write(&file, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(check_reachable(&file, Need::Exec), Ok(()));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o750)).unwrap();
        assert!(check_reachable(&file, Need::Exec).is_err());
        assert!(check_reachable(&file, Need::Read).is_err());
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A closed directory on the way closes everything below it.
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = check_reachable(&file, Need::Exec).unwrap_err();
        assert!(e.contains("not searchable"), "{e}");
        // Through a symlink: the link's own directories and the target's both count.
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o755)).unwrap();
        let link = root.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert_eq!(check_reachable(&link, Need::Exec), Ok(()));
        assert!(check_reachable(&root.join("missing"), Need::Reach).is_err());
    }

    #[test]
    fn a_view_shows_only_directories_under_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("functions/f/code-1");
        std::fs::create_dir_all(&code).unwrap();
        let outside = tempfile::tempdir().unwrap();
        let view = DataView::prepare(dir.path(), &[&code, outside.path()]).unwrap();
        assert_eq!(view.binds.len(), 1);
        assert_eq!(view.mkdirs.len(), 3, "functions, f, code-1");
        assert!(DataView::prepare(dir.path(), &[dir.path()]).is_err());
    }
}
#[cfg(test)]
mod child_tests {
    use std::os::unix::process::CommandExt;

    #[test]
    fn a_child_sees_only_its_part_of_the_data_dir_and_runs_as_its_uid() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP a_child_sees_only_its_part_of_the_data_dir: needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let code = dir.path().join("functions/f/code-1");
        let other = dir.path().join("functions/g/code-1");
        for d in [&code, &other] {
            std::fs::create_dir_all(d).unwrap();
            std::fs::write(d.join("x"), b"hi").unwrap();
        }
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let view = super::DataView::prepare(dir.path(), &[&code]).unwrap();
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        let d = dir.path().display();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(format!(
            "id -u; cat {d}/functions/f/code-1/x; echo; ls {d} {d}/functions; \
             cat {d}/functions/g/code-1/x 2>&1 || echo hidden; touch {d}/functions/f/code-1/y 2>&1 || echo read-only"
        ));
        // SAFETY: the closure makes only syscalls on data prepared before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let private = libc::MS_REC | libc::MS_PRIVATE;
                let none = std::ptr::null();
                libc::mount(c"none".as_ptr(), c"/".as_ptr(), none, private, none.cast());
                super::enter(&view, 4244, parent)
            });
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "4244", "{text}");
        assert_eq!(lines[1], "hi", "{text}");
        assert!(!text.contains("config.json"), "{text}");
        assert!(!text.contains("\ng\n"), "{text}");
        assert!(text.contains("hidden"), "{text}");
        assert!(text.contains("read-only"), "{text}");
        // The host's view is untouched.
        assert!(other.join("x").exists());
    }
}
