//! The agent's code delivery: fetches a function's code (or merged layers) from the server's code
//! endpoint by content hash, checks the hash, and unpacks it. Runs once on the agent's main
//! thread before the runtime starts.
//!
//! Request: `GET /blobs/<sha256 hex> HTTP/1.1` with `Authorization: Bearer <LAMBDA_INSTANCE_ID>`
//! (the server answers only an instance it started, and only with its own function's blobs).
//! Limits: a blob of at most `BLOB_BYTES_MAX`, a fetch of at most `FETCH_TIMEOUT_S`; unpacked
//! paths must stay inside the target directory (`enclosed_name`), unpacked bytes at most
//! `UNPACKED_BYTES_MAX` (AWS's 250 MB).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

/// Largest blob fetched: AWS's unzipped limit (250 MB) plus the zip's own overhead.
const BLOB_BYTES_MAX: usize = 300 * 1024 * 1024;
/// AWS's limit on unzipped code and layers together; the same bound per blob here.
const UNPACKED_BYTES_MAX: u64 = 250 * 1024 * 1024;
/// A fetch that takes longer is stuck (the init limit is 10 s by default anyway).
const FETCH_TIMEOUT_S: u64 = 30;
/// Largest response head of the code endpoint.
const HEAD_BYTES_MAX: usize = 16 * 1024;

/// The blob `sha256` (hex) from the code endpoint at `addr` (`host:port`), checked.
pub fn fetch(addr: &str, sha256: &str, token: &str) -> Result<Vec<u8>, String> {
    let timeout = Duration::from_secs(FETCH_TIMEOUT_S);
    let target = addr
        .to_socket_addrs()
        .map_err(|e| format!("code endpoint {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("code endpoint {addr} has no address"))?;
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("cannot reach the code endpoint {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| e.to_string())?;
    let request = format!(
        "GET /blobs/{sha256} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("code request: {e}"))?;
    let mut data = Vec::new();
    stream
        .take(BLOB_BYTES_MAX as u64 + HEAD_BYTES_MAX as u64)
        .read_to_end(&mut data)
        .map_err(|e| format!("code response: {e}"))?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let head_len = match resp.parse(&data) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err("code endpoint sent no valid HTTP response".into()),
    };
    let body = &data[head_len..];
    if resp.code != Some(200) {
        return Err(format!(
            "code endpoint answered {}: {}",
            resp.code.unwrap_or(0),
            String::from_utf8_lossy(body).trim()
        ));
    }
    let got = hex(&Sha256::digest(body));
    if got != sha256 {
        return Err(format!(
            "code blob hash mismatch: wanted {sha256}, got {got}"
        ));
    }
    Ok(body.to_vec())
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unpacks the zip `blob` into `dir` (created), keeping Unix modes; returns the files written.
pub fn unpack(blob: &[u8], dir: &Path) -> Result<usize, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(blob))
        .map_err(|e| format!("code blob is not a zip: {e}"))?;
    let mut files = 0;
    let mut total = 0u64;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| e.to_string())?;
        let Some(name) = entry.enclosed_name() else {
            return Err(format!("zip entry {:?} leaves its directory", entry.name()));
        };
        let path = dir.join(name);
        if entry.is_dir() {
            std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            continue;
        }
        total += entry.size();
        if total > UNPACKED_BYTES_MAX {
            return Err(format!(
                "code unpacks to more than {UNPACKED_BYTES_MAX} bytes"
            ));
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let mut out =
            std::fs::File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        std::io::copy(&mut entry, &mut out).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(mode) = entry.unix_mode() {
            use std::os::unix::fs::PermissionsExt;
            let perms = std::fs::Permissions::from_mode(mode & 0o777);
            std::fs::set_permissions(&path, perms).map_err(|e| e.to_string())?;
        }
        files += 1;
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zip_of(entries: &[(&str, &[u8], u32)]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data, mode) in entries {
            let options = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored)
                .unix_permissions(*mode);
            w.start_file(*name, options).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn unpacks_with_modes_and_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let blob = zip_of(&[
            ("a/b.py", b"x = 1\n", 0o644),
            ("bootstrap", b"#!/bin/sh\n", 0o755),
        ]);
        assert_eq!(unpack(&blob, dir.path()).unwrap(), 2);
        assert_eq!(
            std::fs::read(dir.path().join("a/b.py")).unwrap(),
            b"x = 1\n"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("bootstrap"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        let evil = zip_of(&[("../evil", b"x", 0o644)]);
        assert!(unpack(&evil, &dir.path().join("t")).is_err());
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn fetch_checks_status_and_hash() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let body = b"blob bytes".to_vec();
        let good = hex(&Sha256::digest(&body));
        let server = std::thread::spawn(move || {
            for answer in [200, 200, 403] {
                let (mut s, _) = listener.accept().unwrap();
                let mut head = [0u8; 1024];
                let n = s.read(&mut head).unwrap();
                let head = String::from_utf8_lossy(&head[..n]).to_string();
                assert!(head.contains("Authorization: Bearer tok\r\n"), "{head}");
                let reply = if answer == 200 {
                    &b"blob bytes"[..]
                } else {
                    &b"no"[..]
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 {answer} X\r\nContent-Length: {}\r\n\r\n",
                    reply.len()
                );
                let _ = s.write_all(reply);
            }
        });
        assert_eq!(fetch(&addr, &good, "tok").unwrap(), body);
        let wrong = "00".repeat(32);
        assert!(fetch(&addr, &wrong, "tok")
            .unwrap_err()
            .contains("mismatch"));
        assert!(fetch(&addr, &good, "tok").unwrap_err().contains("403"));
        server.join().unwrap();
    }
}
