//! Instance identities: the uids instances run as, one per running instance, so that the kernel
//! can tell the data plane which instance a connection comes from (`dataplane::identity`).
//!
//! Control-plane thread only. A uid is taken from `[--instance-uid-base, + --instance-uids)` when
//! an instance is started and given back only once the instance has ended and, when the server is
//! root, every process still running under that uid has been killed (`kill_all_of`): a uid is
//! never handed to a new instance while something of the previous one can still connect with it.
//! The gid of an instance is the same number as its uid and it has no supplementary groups.
//!
//! Limits: the range must be used by nothing else on the host (the server cannot check that a uid
//! belongs to no user or container); a non-root server can neither switch to these uids nor kill
//! what runs under them (see docs/isolation.md for what each executor then promises).

use std::collections::HashSet;

/// Uids of running instances: `base + offset` for offsets in `0..count`.
pub struct UidPool {
    base: u32,
    count: u32,
    in_use: HashSet<u32>,
    /// Where the next search starts: uids are handed out round-robin, so a uid just given back
    /// is the last to be reused.
    cursor: u32,
}

impl UidPool {
    /// The pool of `count` uids from `base` (`count` 0: identities are off, `take` gives none).
    pub fn new(base: u32, count: u32) -> UidPool {
        // A range that runs past u32::MAX (or over the "no uid" value -1) is cut short.
        let count = count.min(u32::MAX - 1 - base.min(u32::MAX - 1));
        UidPool {
            base,
            count,
            in_use: HashSet::new(),
            cursor: 0,
        }
    }

    /// Whether instances get identities at all.
    pub fn enabled(&self) -> bool {
        self.count > 0
    }

    /// A uid no running instance has, or `None` when all are taken.
    pub fn take(&mut self) -> Option<u32> {
        for _ in 0..self.count {
            let offset = self.cursor;
            self.cursor = (self.cursor + 1) % self.count;
            if self.in_use.insert(offset) {
                return Some(self.base + offset);
            }
        }
        None
    }

    /// Makes `uid` available again; call only when nothing runs under it any more.
    pub fn give_back(&mut self, uid: u32) {
        self.in_use.remove(&(uid.wrapping_sub(self.base)));
    }
}

/// Kills every process running under `uid` (SIGKILL, then SIGCONT so stopped ones die too), when
/// the server is root; returns whether it could. Blocking (it forks a short-lived helper that
/// switches to `uid` and signals everything it may signal, which is exactly that uid's
/// processes), so it runs on the blocking pool.
pub fn kill_all_of(uid: u32) -> bool {
    use std::os::unix::process::CommandExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return false;
    }
    let mut cmd = std::process::Command::new("/bin/true");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: only async-signal-safe syscalls between fork and exec; nothing allocates.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(uid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // kill(-1) reaches every process this uid may signal but the caller itself.
            libc::kill(-1, libc::SIGKILL);
            libc::kill(-1, libc::SIGCONT);
            Ok(())
        });
    }
    match cmd.status() {
        Ok(status) => status.success(),
        Err(e) => {
            tracing::warn!(
                uid,
                "cannot kill the processes left under an instance uid: {e}"
            );
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_unique_while_taken_and_reused_last() {
        let mut pool = UidPool::new(200_000, 3);
        let taken: Vec<u32> = (0..3).map(|_| pool.take().unwrap()).collect();
        assert_eq!(taken, [200_000, 200_001, 200_002]);
        assert_eq!(pool.take(), None);
        pool.give_back(200_001);
        assert_eq!(pool.take(), Some(200_001));
        pool.give_back(200_000);
        pool.give_back(200_002);
        // Round robin: the search continues after the last uid handed out.
        assert_eq!(pool.take(), Some(200_002));
        assert_eq!(pool.take(), Some(200_000));
    }

    #[test]
    fn an_empty_range_turns_identities_off() {
        let mut pool = UidPool::new(200_000, 0);
        assert!(!pool.enabled());
        assert_eq!(pool.take(), None);
        // A range running past the largest uid is cut short instead of wrapping.
        let mut pool = UidPool::new(u32::MAX - 3, 100);
        assert_eq!(pool.take(), Some(u32::MAX - 3));
        assert_eq!(pool.take(), Some(u32::MAX - 2));
        assert_eq!(pool.take(), None);
    }

    #[test]
    fn kill_all_of_ends_what_runs_under_the_uid() {
        use std::os::unix::process::CommandExt;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("SKIP kill_all_of_ends_what_runs_under_the_uid: needs root");
            return;
        }
        let uid = 4243;
        let mut child = std::process::Command::new("/bin/sleep")
            .arg("30")
            .uid(uid)
            .gid(uid)
            .spawn()
            .unwrap();
        assert!(kill_all_of(uid));
        let status = child.wait().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    }
}
