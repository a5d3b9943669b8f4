//! The code store's file work: unpacking an uploaded zip safely and writing files atomically.
//!
//! Runs on the control-plane thread only (blocking file I/O). An upload is untrusted: entries may
//! not leave the destination (absolute paths, `..`, symlinks resolving outside), and the bytes
//! actually written are counted against `UNZIPPED_BYTES_MAX` and `COMPRESSION_RATIO_MAX`, so a zip
//! bomb is refused after a bounded amount of work whatever its headers claim. The unix executable
//! bit is kept (a `provided` function's `bootstrap` must be executable). Limits follow AWS Lambda's
//! direct-upload quotas (DESIGN.md, "Compatibility targets").

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Cursor, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::model::error::ApiError;

/// AWS's limit on a zip uploaded directly (Code.ZipFile), in bytes.
pub const ZIP_BYTES_MAX: usize = 50 * 1024 * 1024;
/// AWS's limit on the unpacked code, in bytes (262144000).
pub const UNZIPPED_BYTES_MAX: u64 = 250 * 1024 * 1024;
/// Entries in one zip; more is refused before anything is written.
pub const ZIP_ENTRIES_MAX: usize = 20_000;
/// Zip bomb guard: uncompressed/compressed, per entry and over the whole archive.
pub const COMPRESSION_RATIO_MAX: u64 = 200;
/// Below this many bytes the ratio guard does not apply: small runs of zeros compress far better
/// than 200:1 and are harmless.
const RATIO_FLOOR_BYTES: u64 = 1024 * 1024;
/// Longest symlink target read from an entry (Linux PATH_MAX).
const SYMLINK_TARGET_BYTES_MAX: u64 = 4096;
/// Copy buffer for entry data.
const COPY_BUFFER_BYTES: usize = 64 * 1024;

/// The AWS message for any zip it cannot unpack.
const UNZIP_MESSAGE: &str =
    "Could not unzip uploaded file. Please check your file, then try to upload again.";

#[derive(Debug, thiserror::Error)]
pub enum CodeError {
    #[error("zip is {bytes} bytes, more than {ZIP_BYTES_MAX}")]
    ZipTooLarge { bytes: usize },
    #[error("not a zip file: {0}")]
    NotAZip(zip::result::ZipError),
    #[error("entry '{entry}' is unreadable: {reason}")]
    Corrupt { entry: String, reason: String },
    #[error("entry '{entry}' has a path outside the code directory")]
    PathEscape { entry: String },
    #[error("symlink '{entry}' points outside the code directory or nowhere")]
    SymlinkEscape { entry: String },
    #[error("{entries} entries, more than {ZIP_ENTRIES_MAX}")]
    TooManyEntries { entries: usize },
    #[error("unzipped size exceeds {UNZIPPED_BYTES_MAX} bytes")]
    TooLarge,
    #[error("entry '{entry}' expands more than {COMPRESSION_RATIO_MAX} times")]
    RatioTooHigh { entry: String },
    #[error("writing code: {0}")]
    Io(#[from] io::Error),
}

impl From<CodeError> for ApiError {
    fn from(e: CodeError) -> Self {
        match e {
            CodeError::ZipTooLarge { .. } => ApiError::invalid_param(format!(
                "Zipped size must be smaller than {ZIP_BYTES_MAX} bytes"
            )),
            CodeError::TooLarge => ApiError::invalid_param(format!(
                "Unzipped size must be smaller than {UNZIPPED_BYTES_MAX} bytes"
            )),
            // Names too long for the filesystem, a file and a directory of the same name:
            // the zip's content is at fault, not the server.
            CodeError::Io(e) if caused_by_content(&e) => ApiError::invalid_param(format!(
                "{UNZIP_MESSAGE} (an entry cannot be written: {})",
                io_reason(&e)
            )),
            // A full disk or a permission problem is ours, not the caller's.
            CodeError::Io(e) => {
                ApiError::service(format!("Could not store the code: {}", io_reason(&e)))
            }
            other => ApiError::invalid_param(format!("{UNZIP_MESSAGE} ({other})")),
        }
    }
}

/// Whether writing an entry failed because of what the zip holds (over-long names, an entry
/// that is both a file and a directory, names the filesystem refuses).
fn caused_by_content(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENAMETOOLONG | libc::ENOTDIR | libc::EEXIST | libc::EISDIR | libc::EILSEQ)
    )
}

/// An I/O error's reason without the context it may carry (never a host path in a message a
/// caller sees).
fn io_reason(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code).to_string(),
        None => e.kind().to_string(),
    }
}

/// base64 of the SHA-256 of `bytes`, as AWS reports CodeSha256.
pub fn sha256_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(bytes))
}

/// Unpacks `zip` into `dest`, which must not exist yet (its parent is created). Returns the
/// bytes written. On error `dest` may hold a partial tree: the caller removes it.
pub fn unpack_zip(zip: &[u8], dest: &Path) -> Result<u64, CodeError> {
    if zip.len() > ZIP_BYTES_MAX {
        return Err(CodeError::ZipTooLarge { bytes: zip.len() });
    }
    let mut archive = zip::ZipArchive::new(Cursor::new(zip)).map_err(CodeError::NotAZip)?;
    if archive.len() > ZIP_ENTRIES_MAX {
        return Err(CodeError::TooManyEntries {
            entries: archive.len(),
        });
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)?;
    }
    // A fresh directory guarantees no symlink exists under it while regular entries are written.
    fs::create_dir(dest)?;
    let mut budget = Budget::new(zip.len() as u64);
    let mut symlinks = Vec::new();
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(|e| CodeError::Corrupt {
            entry: format!("#{index}"),
            reason: e.to_string(),
        })?;
        let name = entry.name().to_string();
        let rel = entry_relative_path(&name).ok_or(CodeError::PathEscape {
            entry: name.clone(),
        })?;
        if rel.as_os_str().is_empty() {
            continue;
        }
        let path = dest.join(&rel);
        if entry.is_dir() {
            fs::create_dir_all(&path)?;
        } else if entry.is_symlink() {
            symlinks.push((name.clone(), path, read_symlink_target(&mut entry, &name)?));
        } else {
            let mode = file_mode(entry.unix_mode(), &rel);
            let limit = budget.entry_limit(entry.compressed_size());
            let written = write_entry(&mut entry, &path, mode, limit, &name)?;
            budget.charge(written, entry.compressed_size(), &name)?;
        }
    }
    // Symlinks last, so no regular entry is ever written through one.
    create_symlinks(dest, symlinks)?;
    Ok(budget.written)
}

/// Tracks bytes written against the total and ratio limits.
struct Budget {
    written: u64,
    /// min(UNZIPPED_BYTES_MAX, overall ratio cap).
    total_cap: u64,
}

impl Budget {
    fn new(zip_bytes: u64) -> Self {
        let ratio_cap = ratio_cap(zip_bytes);
        Budget {
            written: 0,
            total_cap: ratio_cap.min(UNZIPPED_BYTES_MAX),
        }
    }

    /// Most bytes this entry may produce before the archive is refused.
    fn entry_limit(&self, compressed: u64) -> u64 {
        ratio_cap(compressed).min(self.total_cap - self.written)
    }

    /// Accounts for `written` bytes; names the limit that was crossed, if any.
    fn charge(&mut self, written: u64, compressed: u64, entry: &str) -> Result<(), CodeError> {
        if written > ratio_cap(compressed) {
            return Err(CodeError::RatioTooHigh {
                entry: entry.to_string(),
            });
        }
        self.written += written;
        if self.written > UNZIPPED_BYTES_MAX {
            return Err(CodeError::TooLarge);
        }
        if self.written > self.total_cap {
            return Err(CodeError::RatioTooHigh {
                entry: entry.to_string(),
            });
        }
        Ok(())
    }
}

fn ratio_cap(compressed: u64) -> u64 {
    compressed
        .saturating_mul(COMPRESSION_RATIO_MAX)
        .max(RATIO_FLOOR_BYTES)
}

/// The entry's path relative to the destination, or `None` when it could leave it (absolute,
/// drive-prefixed, `..`, NUL). Backslashes count as separators, as zips made on Windows use them.
fn entry_relative_path(name: &str) -> Option<PathBuf> {
    if name.starts_with('/') || name.starts_with('\\') || name.contains('\0') {
        return None;
    }
    let mut rel = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return None,
            p if p.contains(':') => return None,
            p => rel.push(p),
        }
    }
    // Belt and braces: the result must consist of normal components only.
    rel.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then_some(rel)
}

/// 0755 when the zip marks the file executable, else 0644 (setuid and friends are dropped).
/// A `bootstrap` at the root is always 0755: a `provided` runtime must be able to run it, and zips
/// made on Windows carry no unix modes (or DOS ones without an executable bit).
fn file_mode(unix_mode: Option<u32>, rel: &Path) -> u32 {
    match unix_mode {
        _ if rel == Path::new("bootstrap") => 0o755,
        Some(m) if m & 0o111 != 0 => 0o755,
        _ => 0o644,
    }
}

/// Copies at most `limit + 1` bytes of the entry to a new file; returns the count copied.
fn write_entry(
    entry: &mut impl Read,
    path: &Path,
    mode: u32,
    limit: u64,
    name: &str,
) -> Result<u64, CodeError> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    // Explicitly, because the process umask applies to `mode` above.
    file.set_permissions(Permissions::from_mode(mode))?;
    let mut reader = entry.take(limit.saturating_add(1));
    let mut buf = vec![0u8; COPY_BUFFER_BYTES];
    let mut copied = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(corrupt(name, e)),
        };
        file.write_all(&buf[..n])?;
        copied += n as u64;
    }
}

fn corrupt(name: &str, e: impl std::fmt::Display) -> CodeError {
    CodeError::Corrupt {
        entry: name.to_string(),
        reason: e.to_string(),
    }
}

fn read_symlink_target(entry: &mut impl Read, name: &str) -> Result<PathBuf, CodeError> {
    let mut target = Vec::new();
    entry
        .take(SYMLINK_TARGET_BYTES_MAX + 1)
        .read_to_end(&mut target)
        .map_err(|e| corrupt(name, e))?;
    let escape = || CodeError::SymlinkEscape {
        entry: name.to_string(),
    };
    if target.is_empty() || target.len() as u64 > SYMLINK_TARGET_BYTES_MAX {
        return Err(escape());
    }
    let target = String::from_utf8(target).map_err(|_| escape())?;
    if target.starts_with('/') || target.contains('\0') {
        return Err(escape());
    }
    Ok(PathBuf::from(target))
}

/// Creates the symlinks, then checks that each one resolves to an existing path inside `dest`.
/// Checking after creation catches chains (`a -> .`, `b -> a/..`) that a lexical check misses.
fn create_symlinks(dest: &Path, links: Vec<(String, PathBuf, PathBuf)>) -> Result<(), CodeError> {
    for (name, path, target) in &links {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        std::os::unix::fs::symlink(target, path).map_err(|e| corrupt(name, e))?;
    }
    let root = dest.canonicalize()?;
    for (name, path, _) in &links {
        match path.canonicalize() {
            Ok(resolved) if resolved.starts_with(&root) => {}
            _ => {
                return Err(CodeError::SymlinkEscape {
                    entry: name.clone(),
                })
            }
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` so that a crash leaves either the old or the new content: a temp
/// file (`<path>.tmp`) in the same directory, fsync, rename, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory so that renames and removals in it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes the whole filesystem holding `path` (syncfs(2)): one call makes a freshly unpacked
/// tree of thousands of files durable, where an fsync per file would take seconds.
pub fn sync_filesystem(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    // SAFETY: the descriptor stays open (owned by `file`) for the duration of the call, and
    // syncfs neither keeps nor closes it.
    let rc = unsafe { libc::syncfs(file.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;

    fn build_zip(add: impl FnOnce(&mut zip::ZipWriter<Cursor<Vec<u8>>>)) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        add(&mut w);
        w.finish().unwrap().into_inner()
    }

    fn opts(mode: u32) -> SimpleFileOptions {
        SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated)
            .unix_permissions(mode)
    }

    /// `zip` as a Windows tool writes it: "version made by" MS-DOS and DOS attributes (archive)
    /// in every central directory entry, so no unix mode.
    fn as_made_on_windows(mut zip: Vec<u8>) -> Vec<u8> {
        let mut i = 0;
        while i + 46 <= zip.len() {
            if zip[i..i + 4] == [0x50, 0x4b, 0x01, 0x02] {
                zip[i + 5] = 0; // made by: MS-DOS
                zip[i + 38..i + 42].copy_from_slice(&0x20u32.to_le_bytes());
                i += 46;
            } else {
                i += 1;
            }
        }
        zip
    }

    #[test]
    fn bootstrap_from_a_windows_zip_is_executable() {
        let zip = as_made_on_windows(build_zip(|w| {
            w.start_file("bootstrap", opts(0o644)).unwrap();
            w.write_all(b"#!/bin/sh\n").unwrap();
            w.start_file("lib.sh", opts(0o644)).unwrap();
            w.write_all(b"x\n").unwrap();
        }));
        let archive = zip::ZipArchive::new(Cursor::new(zip.clone())).unwrap();
        let mut archive = archive;
        let mode = archive.by_index(0).unwrap().unix_mode();
        assert!(mode.is_none_or(|m| m & 0o111 == 0), "{mode:?}");
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("code");
        unpack_zip(&zip, &dest).unwrap();
        let mode = |f: &str| fs::metadata(dest.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode("bootstrap"), 0o755);
        assert_eq!(mode("lib.sh"), 0o644);
    }

    #[test]
    fn unwritable_entries_are_the_callers_fault_and_name_no_host_path() {
        let long = format!("{}.txt", "a".repeat(300));
        let file_then_dir = build_zip(|w| {
            w.start_file("x", opts(0o644)).unwrap();
            w.write_all(b"file").unwrap();
            w.start_file("x/y", opts(0o644)).unwrap();
            w.write_all(b"under a file").unwrap();
        });
        let too_long = build_zip(|w| {
            w.start_file(long.as_str(), opts(0o644)).unwrap();
            w.write_all(b"x").unwrap();
        });
        for zip in [file_then_dir, too_long] {
            let dir = tempfile::tempdir().unwrap();
            let e = ApiError::from(unpack_zip(&zip, &dir.path().join("code")).unwrap_err());
            assert_eq!(
                e.kind,
                crate::model::error::ErrorKind::InvalidParameterValue,
                "{e:?}"
            );
            let text = format!("{e:?}");
            assert!(!text.contains(dir.path().to_str().unwrap()), "{text}");
        }
        let ours = CodeError::Io(io::Error::from_raw_os_error(libc::ENOSPC));
        let e = ApiError::from(ours);
        assert_eq!(e.kind, crate::model::error::ErrorKind::Service, "{e:?}");
    }

    #[test]
    fn unpacks_files_dirs_and_exec_bit() {
        let zip = build_zip(|w| {
            w.start_file("bootstrap", opts(0o755)).unwrap();
            w.write_all(b"#!/bin/sh\necho hi\n").unwrap();
            w.add_directory("lib/", opts(0o755)).unwrap();
            w.start_file("lib/deep/mod.py", opts(0o644)).unwrap();
            w.write_all(b"X = 1\n").unwrap();
        });
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("code");
        let n = unpack_zip(&zip, &dest).unwrap();
        assert_eq!(n, 18 + 6);
        let boot = fs::metadata(dest.join("bootstrap")).unwrap();
        assert_eq!(boot.permissions().mode() & 0o777, 0o755);
        let module = fs::metadata(dest.join("lib/deep/mod.py")).unwrap();
        assert_eq!(module.permissions().mode() & 0o777, 0o644);
        assert_eq!(fs::read(dest.join("lib/deep/mod.py")).unwrap(), b"X = 1\n");
        assert!(dest.join("lib").is_dir());
    }

    fn unpack_err(zip: &[u8]) -> CodeError {
        let dir = tempfile::tempdir().unwrap();
        unpack_zip(zip, &dir.path().join("code")).unwrap_err()
    }

    #[test]
    fn refuses_path_escapes() {
        for name in ["../x", "/abs", "a/../../x", "a\\..\\x", "C:/x"] {
            let zip = build_zip(|w| {
                w.start_file(name, opts(0o644)).unwrap();
                w.write_all(b"evil").unwrap();
            });
            assert!(
                matches!(unpack_err(&zip), CodeError::PathEscape { .. }),
                "{name}"
            );
        }
    }

    fn symlink_zip(links: &[(&str, &str)]) -> Vec<u8> {
        build_zip(|w| {
            w.start_file("real/file", opts(0o644)).unwrap();
            w.write_all(b"data").unwrap();
            for (name, target) in links {
                w.add_symlink(*name, *target, opts(0o777)).unwrap();
            }
        })
    }

    #[test]
    fn symlinks_inside_are_kept_outside_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("code");
        unpack_zip(&symlink_zip(&[("bin/f", "../real/file")]), &dest).unwrap();
        assert_eq!(fs::read(dest.join("bin/f")).unwrap(), b"data");
        for links in [
            vec![("l", "/etc/passwd")],
            vec![("l", "../../x")],
            vec![("a", "."), ("b", "a/..")],
            vec![("dangling", "nothing")],
        ] {
            let err = unpack_err(&symlink_zip(&links));
            assert!(matches!(err, CodeError::SymlinkEscape { .. }), "{links:?}");
        }
    }

    #[test]
    fn refuses_not_a_zip() {
        assert!(matches!(
            unpack_err(b"definitely not a zip"),
            CodeError::NotAZip(_)
        ));
        let api: ApiError = unpack_err(b"").into();
        assert!(api.message.starts_with(UNZIP_MESSAGE));
        assert_eq!(api.status(), 400);
    }

    #[test]
    fn refuses_zip_bomb_early() {
        let zip = build_zip(|w| {
            w.start_file("bomb", opts(0o644)).unwrap();
            let chunk = vec![0u8; 1024 * 1024];
            for _ in 0..300 {
                w.write_all(&chunk).unwrap();
            }
        });
        assert!(zip.len() < 1024 * 1024);
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("code");
        let err = unpack_zip(&zip, &dest).unwrap_err();
        assert!(matches!(err, CodeError::RatioTooHigh { .. }), "{err:?}");
        let written = fs::metadata(dest.join("bomb")).unwrap().len();
        assert!(written <= ratio_cap(zip.len() as u64) + 1, "{written}");
    }

    #[test]
    fn total_limit_counts_real_bytes() {
        let mut budget = Budget::new(ZIP_BYTES_MAX as u64);
        assert_eq!(budget.total_cap, UNZIPPED_BYTES_MAX);
        budget
            .charge(UNZIPPED_BYTES_MAX, u64::MAX / 1000, "a")
            .unwrap();
        let err = budget.charge(1, 1, "b").unwrap_err();
        assert!(matches!(err, CodeError::TooLarge));
        let api: ApiError = err.into();
        assert_eq!(
            api.message,
            "Unzipped size must be smaller than 262144000 bytes"
        );
    }

    #[test]
    fn refuses_too_large_zip_and_too_many_entries() {
        let big = vec![0u8; ZIP_BYTES_MAX + 1];
        assert!(matches!(unpack_err(&big), CodeError::ZipTooLarge { .. }));
        let zip = build_zip(|w| {
            for i in 0..=ZIP_ENTRIES_MAX {
                w.add_directory(format!("d{i}/"), opts(0o755)).unwrap();
            }
        });
        assert!(matches!(unpack_err(&zip), CodeError::TooManyEntries { .. }));
    }

    #[test]
    fn sha256_matches_known_value() {
        assert_eq!(
            sha256_base64(b"abc"),
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0="
        );
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }
}
