//! Held directories: the code dirs and merged layer trees that running instances use, kept on
//! disk until the last instance of their generation is gone.
//!
//! Control-plane thread only (the registry owns the one `HeldDirs`). A directory that a stored
//! configuration names is handed out as one shared `Arc<CodeDir>` per path; `Function` snapshots
//! hold it, so the function table, the schedulers' instances and the control plane's instance
//! tasks all keep it alive. When no configuration names a directory any more, `release` removes
//! it at once if nothing holds it, or marks it obsolete; the last holder's drop then sends the
//! path back here (from whichever thread it ran on), and `reap` removes it on this thread.
//!
//! Invariant: a path is removed only when no live handle for it exists, checked again when the
//! reaper gets it, because a merged layer tree can be named again (and handed out anew) between
//! the last drop and the reap. A crash before a reap leaves the directory to the start-up
//! cleanup, which removes what no configuration names.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use crate::model::types::CodeDir;

pub struct HeldDirs {
    live: HashMap<PathBuf, Weak<CodeDir>>,
    tx: mpsc::UnboundedSender<PathBuf>,
    /// Paths whose last holder let go; taken by the control plane's loop (`take_released`).
    rx: Option<mpsc::UnboundedReceiver<PathBuf>>,
}

impl Default for HeldDirs {
    fn default() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        HeldDirs {
            live: HashMap::new(),
            tx,
            rx: Some(rx),
        }
    }
}

impl HeldDirs {
    /// The handle of `path`: the live one (no longer obsolete: it is named again), or a new one.
    pub fn hold(&mut self, path: &Path) -> Arc<CodeDir> {
        if let Some(dir) = self.live.get(path).and_then(Weak::upgrade) {
            dir.set_obsolete(false);
            return dir;
        }
        let dir = Arc::new(CodeDir::reaped(path.to_path_buf(), self.tx.clone()));
        self.live.insert(path.to_path_buf(), Arc::downgrade(&dir));
        dir
    }

    /// No configuration names `path` any more: it is removed now if nothing holds it, else when
    /// its last holder lets go.
    pub fn release(&mut self, path: &Path) {
        match self.live.get(path).and_then(Weak::upgrade) {
            Some(dir) => dir.set_obsolete(true),
            None => {
                self.live.remove(path);
                remove_dir_and_zip(path);
            }
        }
    }

    /// Whether some holder still keeps `path`.
    pub fn is_held(&self, path: &Path) -> bool {
        self.live.get(path).is_some_and(|w| w.strong_count() > 0)
    }

    /// The names of the held directories directly inside `parent`.
    pub fn held_in(&self, parent: &Path) -> BTreeSet<String> {
        self.live
            .iter()
            .filter(|(p, w)| p.parent() == Some(parent) && w.strong_count() > 0)
            .filter_map(|(p, _)| p.file_name()?.to_str().map(str::to_string))
            .collect()
    }

    /// Removes the obsolete directories whose last holder has let go since the last call.
    pub fn reap(&mut self) {
        while let Some(path) = self.rx.as_mut().and_then(|rx| rx.try_recv().ok()) {
            self.reap_one(path);
        }
    }

    /// The stream of paths whose last holder let go, for the control plane's event loop (which
    /// then calls `reap_one`). At most one taker.
    pub fn take_released(&mut self) -> Option<mpsc::UnboundedReceiver<PathBuf>> {
        self.rx.take()
    }

    /// Removes `path` (sent by its last holder) unless it has been handed out again since.
    pub fn reap_one(&mut self, path: PathBuf) {
        if self.is_held(&path) {
            return;
        }
        self.live.remove(&path);
        self.live.retain(|_, w| w.strong_count() > 0);
        tracing::debug!(path = %path.display(), "removing code no instance uses any more");
        remove_dir_and_zip(&path);
        // A deleted function's dir goes with its last code. `remove_dir` only removes an empty
        // dir, and this thread is the one that creates function dirs, so it races with nothing.
        if let Some(parent) = path.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// Removes a directory and its `.zip` sibling (the upload a function's code dir was unpacked
/// from; merged layer trees have none). A failure only leaks disk space until the next start.
pub fn remove_dir_and_zip(dir: &Path) {
    remove_tree(dir);
    let mut zip = dir.as_os_str().to_owned();
    zip.push(".zip");
    remove_tree(Path::new(&zip));
}

/// Removes a file or a directory tree; a missing one is fine, any other failure is logged.
pub fn remove_tree(path: &Path) {
    let result = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        _ => fs::remove_file(path),
    };
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "could not remove");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir_with_zip(root: &Path, name: &str) -> PathBuf {
        let dir = root.join(name);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("f"), b"x").unwrap();
        fs::write(root.join(format!("{name}.zip")), b"zip").unwrap();
        dir
    }

    #[test]
    fn released_dir_stays_while_held_and_goes_with_its_last_holder() {
        let tmp = tempfile::tempdir().unwrap();
        let mut held = HeldDirs::default();
        let dir = dir_with_zip(tmp.path(), "code-a");
        let a = held.hold(&dir);
        let b = held.hold(&dir);
        assert!(Arc::ptr_eq(&a, &b), "one handle per path");
        held.release(&dir);
        drop(a);
        held.reap();
        assert!(dir.join("f").exists(), "still held by b");
        drop(b);
        held.reap();
        assert!(!dir.exists());
        assert!(!tmp.path().join("code-a.zip").exists());
    }

    #[test]
    fn unheld_dir_goes_at_once_and_a_dir_named_again_survives_its_old_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let mut held = HeldDirs::default();
        let gone = dir_with_zip(tmp.path(), "code-b");
        held.release(&gone);
        assert!(!gone.exists());

        let merged = dir_with_zip(tmp.path(), "merged");
        let old = held.hold(&merged);
        held.release(&merged);
        drop(old);
        // Named again before the reaper ran: the new handle keeps it.
        let again = held.hold(&merged);
        held.reap();
        assert!(merged.exists());
        assert!(!again.is_obsolete());
        assert_eq!(
            held.held_in(tmp.path()),
            BTreeSet::from(["merged".to_string()])
        );
        drop(again);
        held.reap();
        assert!(
            merged.exists(),
            "not obsolete: a current dir is never reaped"
        );
    }
}
