//! What the executors of remote instances (`swarm`, and `agent`, its single-host form) share:
//! the code endpoint, from which an instance's agent (`lah-agent`) fetches its function's code
//! and merged layers by content hash, and the agent's settings.
//!
//! Runs on the control-plane thread (its tokio runtime): the listener's accept loop and one task
//! per request; packing a directory into a blob runs on the blocking pool. A blob is a zip
//! (stored, not compressed: the link is a LAN and the CPU is the server's) of a code or layers
//! directory, named by the hex SHA-256 of its bytes, packed once per directory and kept in memory
//! while an instance that may fetch it exists (then dropped). A request
//! (`GET /blobs/<sha256> HTTP/1.1`, `Authorization: Bearer <LAMBDA_INSTANCE_ID>`) is answered
//! only for a token of a live remote instance, and only with a blob of that instance's own
//! function version (`grant`); anything else is 403 (404 for a path that is not a blob).
//! Limits: `CODE_CONNECTIONS_MAX` connections at once (more are closed at accept), a request
//! head of `HEAD_BYTES_MAX` within `REQUEST_WAIT_S`, the answer within `RESPONSE_WAIT_S`; a
//! directory packs to at most `BLOB_BYTES_MAX`. Invariant: a token's grant is revoked when its instance ends, so a
//! token a replaced instance still holds fetches nothing.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ExecError;

/// Largest request head the code endpoint reads.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// A request head must arrive within this; agents send theirs at once.
const REQUEST_WAIT_S: u64 = 10;
/// Connections served at once; more are closed at accept. Every agent fetches once per start
/// (one or two blobs), so this is far above need, and it bounds the descriptors and memory a
/// client that opens connections without end can take from the server.
const CODE_CONNECTIONS_MAX: usize = 256;
/// A whole answer must be written within this (a 300 MB blob at 1 MB/s): a reader that stalls
/// cannot hold one of `CODE_CONNECTIONS_MAX` for ever.
const RESPONSE_WAIT_S: u64 = 300;
/// After a failed accept (out of descriptors), wait this long before the next: a failing
/// `accept` returns at once, and retrying at once would spin the control-plane thread.
const ACCEPT_RETRY_MS: u64 = 50;
/// Largest blob: AWS's unzipped limit (250 MB, code and layers) plus the zip's overhead.
pub const BLOB_BYTES_MAX: u64 = 300 * 1024 * 1024;

/// A packed directory.
struct Blob {
    bytes: Bytes,
    /// Grants that name it; dropped at 0.
    users: usize,
    dir: PathBuf,
}

#[derive(Default)]
struct State {
    /// By hex SHA-256.
    blobs: HashMap<String, Blob>,
    /// Directory → hash of its blob.
    by_dir: HashMap<PathBuf, String>,
    /// Instance token → the blobs it may fetch.
    grants: HashMap<String, Vec<String>>,
}

/// The code endpoint.
pub struct CodeServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl CodeServer {
    /// Binds `addr` and serves it on the current tokio runtime (the control plane's).
    pub async fn bind(addr: SocketAddr) -> Result<Arc<CodeServer>, ExecError> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| ExecError::Unavailable(format!("code endpoint on {addr}: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| ExecError::Unavailable(e.to_string()))?;
        let server = Arc::new(CodeServer {
            addr,
            state: Arc::default(),
        });
        let state = server.state.clone();
        let slots = Arc::new(tokio::sync::Semaphore::new(CODE_CONNECTIONS_MAX));
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                        continue;
                    }
                };
                // Over the limit: closed at once (dropped).
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    serve(stream, state).await;
                    drop(slot);
                });
            }
        });
        Ok(server)
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Lets `token` fetch the blobs of `dirs` (packed now if they are not yet); returns their
    /// hashes, in order.
    pub async fn grant(&self, token: &str, dirs: &[&Path]) -> Result<Vec<String>, ExecError> {
        let mut hashes = Vec::with_capacity(dirs.len());
        for dir in dirs {
            let known = lock(&self.state).by_dir.get(*dir).cloned();
            let hash = match known {
                Some(h) => h,
                None => {
                    let owned = dir.to_path_buf();
                    let (hash, bytes) = tokio::task::spawn_blocking(move || pack(&owned))
                        .await
                        .map_err(|e| ExecError::Spawn(format!("packing code: {e}")))?
                        .map_err(|e| ExecError::Spawn(format!("packing code: {e}")))?;
                    let mut state = lock(&self.state);
                    state.by_dir.insert(dir.to_path_buf(), hash.clone());
                    state.blobs.entry(hash.clone()).or_insert(Blob {
                        bytes,
                        users: 0,
                        dir: dir.to_path_buf(),
                    });
                    hash
                }
            };
            hashes.push(hash);
        }
        let mut state = lock(&self.state);
        for hash in &hashes {
            if let Some(blob) = state.blobs.get_mut(hash) {
                blob.users += 1;
            }
        }
        state.grants.insert(token.to_string(), hashes.clone());
        Ok(hashes)
    }

    /// `token` fetches nothing from now on; blobs no grant names are dropped.
    pub fn revoke(&self, token: &str) {
        let mut state = lock(&self.state);
        let Some(hashes) = state.grants.remove(token) else {
            return;
        };
        for hash in hashes {
            let unused = match state.blobs.get_mut(&hash) {
                Some(blob) => {
                    blob.users = blob.users.saturating_sub(1);
                    blob.users == 0
                }
                None => false,
            };
            if unused {
                if let Some(blob) = state.blobs.remove(&hash) {
                    state.by_dir.remove(&blob.dir);
                }
            }
        }
    }
}

/// One request on the code endpoint.
async fn serve(mut stream: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let mut head = Vec::with_capacity(1024);
    let read = tokio::time::timeout(Duration::from_secs(REQUEST_WAIT_S), async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < HEAD_BYTES_MAX {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
        true
    })
    .await;
    if read != Ok(true) {
        return;
    }
    let (status, body) = answer(&head, &state);
    let reason = match status {
        200 => "OK",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(RESPONSE_WAIT_S), async {
        if stream.write_all(head.as_bytes()).await.is_ok() {
            let _ = stream.write_all(&body).await;
        }
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The status and body for one request head.
fn answer(head: &[u8], state: &Mutex<State>) -> (u16, Bytes) {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    if !matches!(req.parse(head), Ok(httparse::Status::Complete(_))) {
        return (400, Bytes::from_static(b"bad request\n"));
    }
    let Some(hash) = req
        .path
        .and_then(|p| p.strip_prefix("/blobs/"))
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    else {
        return (404, Bytes::from_static(b"no such blob\n"));
    };
    let token = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let state = lock(state);
    let granted = state
        .grants
        .get(token)
        .is_some_and(|hashes| hashes.iter().any(|h| h == hash));
    match state.blobs.get(hash) {
        Some(blob) if granted => (200, blob.bytes.clone()),
        _ => (
            403,
            Bytes::from_static(b"not a blob of this instance's function\n"),
        ),
    }
}

/// Zips `dir` (stored, Unix modes kept, symlinks left out) and hashes the zip.
pub fn pack(dir: &Path) -> Result<(String, Bytes), String> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let mut total = 0u64;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = dir.join(&rel);
        let mut entries: Vec<_> = std::fs::read_dir(&full)
            .map_err(|e| format!("{}: {e}", rel.display()))?
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let meta = entry
                .metadata()
                .map_err(|e| format!("{}: {e}", rel.display()))?;
            let name = rel.join(entry.file_name());
            let name_str = name.to_string_lossy().into_owned();
            use std::os::unix::fs::PermissionsExt;
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .large_file(meta.len() >= u32::MAX as u64)
                .unix_permissions(meta.permissions().mode() & 0o777);
            if meta.is_dir() {
                zip.add_directory(name_str, options)
                    .map_err(|e| e.to_string())?;
                stack.push(name);
            } else if meta.is_file() {
                total += meta.len();
                if total > BLOB_BYTES_MAX {
                    return Err(format!("more than {BLOB_BYTES_MAX} bytes"));
                }
                zip.start_file(name_str, options)
                    .map_err(|e| e.to_string())?;
                let data = std::fs::read(entry.path()).map_err(|e| e.to_string())?;
                zip.write_all(&data).map_err(|e| e.to_string())?;
            }
        }
    }
    let bytes = zip.finish().map_err(|e| e.to_string())?.into_inner();
    let hash = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((hash, Bytes::from(bytes)))
}

/// The agent's settings for an instance (`LAH_AGENT_*`, see `src/bin/lah-agent/main.rs`).
pub fn agent_env(
    link: &str,
    code: SocketAddr,
    code_host: &str,
    hashes: &[String],
) -> Vec<(String, String)> {
    let mut env = vec![
        ("LAH_AGENT_LINK".to_string(), link.to_string()),
        (
            "LAH_AGENT_CODE".to_string(),
            format!("{code_host}:{}", code.port()),
        ),
    ];
    if let Some(code) = hashes.first() {
        env.push(("LAH_AGENT_CODE_SHA256".to_string(), code.clone()));
    }
    if let Some(opt) = hashes.get(1) {
        env.push(("LAH_AGENT_OPT_SHA256".to_string(), opt.clone()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pack_is_a_zip_with_modes_and_a_stable_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a.py"), b"x = 1\n").unwrap();
        std::fs::write(dir.path().join("run"), b"#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            dir.path().join("run"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        let (hash, bytes) = pack(dir.path()).unwrap();
        assert_eq!(pack(dir.path()).unwrap().0, hash);
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
        assert_eq!(
            archive.by_name("run").unwrap().unix_mode().unwrap() & 0o777,
            0o755
        );
        assert_eq!(archive.by_name("sub/a.py").unwrap().size(), 6);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn only_granted_tokens_get_their_blobs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.py"), b"def h(e, c): return 1\n").unwrap();
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("g.py"), b"secret\n").unwrap();
        let server = CodeServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mine = server.grant("tok-a", &[dir.path()]).await.unwrap();
        let theirs = server.grant("tok-b", &[other.path()]).await.unwrap();
        let get = |hash: String, token: &'static str| {
            let addr = server.addr();
            async move {
                let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
                let req =
                    format!("GET /blobs/{hash} HTTP/1.1\r\nAuthorization: Bearer {token}\r\n\r\n");
                s.write_all(req.as_bytes()).await.unwrap();
                let mut out = Vec::new();
                s.read_to_end(&mut out).await.unwrap();
                String::from_utf8_lossy(&out[..12]).into_owned()
            }
        };
        assert_eq!(get(mine[0].clone(), "tok-a").await, "HTTP/1.1 200");
        assert_eq!(get(theirs[0].clone(), "tok-a").await, "HTTP/1.1 403");
        assert_eq!(get(mine[0].clone(), "nobody").await, "HTTP/1.1 403");
        server.revoke("tok-a");
        assert_eq!(get(mine[0].clone(), "tok-a").await, "HTTP/1.1 403");
        assert!(!lock(&server.state).blobs.contains_key(&mine[0]));
        assert_eq!(get(theirs[0].clone(), "tok-b").await, "HTTP/1.1 200");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn connections_past_the_limit_are_closed_and_a_freed_slot_serves_again() {
        // A client that opens connections without end holds at most CODE_CONNECTIONS_MAX of
        // the server's descriptors; an agent gets a slot again as soon as one frees.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f.py"), b"x = 1\n").unwrap();
        let server = CodeServer::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let hashes = server.grant("tok", &[dir.path()]).await.unwrap();
        let mut idle = Vec::new();
        for _ in 0..CODE_CONNECTIONS_MAX {
            idle.push(tokio::net::TcpStream::connect(server.addr()).await.unwrap());
        }
        // Let the accept loop take them all.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut over = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), over.read(&mut buf))
            .await
            .expect("closed at once, not held")
            .unwrap_or(0);
        assert_eq!(n, 0, "a connection past the limit is closed unanswered");
        drop(idle.pop());
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut s = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
        let req = format!(
            "GET /blobs/{} HTTP/1.1\r\nAuthorization: Bearer tok\r\n\r\n",
            hashes[0]
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(
            out.starts_with(b"HTTP/1.1 200"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }
}
