//! End-to-end tests of what a hostile client can make the server hold: connections, bytes and
//! time are bounded before they are held (connection cap, body limits from `Content-Length`,
//! buffers that grow only with what arrives, idle/header/body timeouts).
//!
//! Memory is measured on the real binary run as a child process (its allocator, its RSS);
//! the other tests run their in-process server exclusively (`TestServer::exclusive`).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// Whether the server closed `stream` (read returns 0 or a reset) within `limit`.
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn announced_bodies_do_not_reserve_memory() {
    // The real binary (with its allocator), measured from outside.
    let dir = tempfile::tempdir().unwrap();
    let server = child::ChildServer::start(dir.path(), &["--cores", "2"]);
    let before = server.rss_kib();
    // 300 connections announce a 69 MB CreateFunction body and send 100 bytes of it.
    let mut conns = Vec::new();
    for _ in 0..300 {
        let mut s = TcpStream::connect(server.addr).unwrap();
        let head = format!(
            "POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            69 * 1024 * 1024
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&[b'{'; 100]).unwrap();
        conns.push(s);
    }
    // Let every connection be accepted and read.
    std::thread::sleep(Duration::from_millis(800));
    let during = server.rss_kib();
    drop(conns);
    // 300 read buffers of 16 KiB are ~5 MB; the claims (20 GB in all) must not count.
    let grown_kib = during.saturating_sub(before);
    assert!(
        grown_kib < 48 * 1024,
        "RSS grew by {grown_kib} KiB for 300 announced bodies"
    );
    // The server is still there and serving.
    let resp = http_call(server.addr, "GET", "/healthz", &[], b"").expect("healthz");
    assert_eq!(resp.status, 200);
}

#[test]
fn invoke_body_over_6_mb_is_refused_from_its_header() {
    let server = TestServer::exclusive(|_| {});
    server.create_python(
        &unique_name("big"),
        "def handler(e, c):\n    return e\n",
        json!({}),
    );
    let mut s = TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /2015-03-31/functions/any/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        69 * 1024 * 1024
    );
    s.write_all(head.as_bytes()).unwrap();
    // No body byte is sent: the answer must come from the header alone.
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let resp = read_response(&mut s, false).expect("a response before any body byte");
    expect_aws_error(&resp, 413, "RequestTooLargeException");
    // A 6 MB body on a management path is still fine to announce (uploads are up to 70 MB).
    let mut s = TcpStream::connect(server.addr).unwrap();
    let head = format!(
        "POST /2015-03-31/functions HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        7 * 1024 * 1024
    );
    s.write_all(head.as_bytes()).unwrap();
    assert!(
        !closed_within(&mut s, Duration::from_millis(300)),
        "a 7 MB upload is not refused up front"
    );
}

#[test]
fn slow_and_idle_clients_are_closed() {
    let server = TestServer::exclusive(|c| {
        c.header_timeout_s = 1;
        c.idle_connection_s = 1;
    });
    // Slowloris: a head trickled one byte every 100 ms never completes.
    let mut slow = TcpStream::connect(server.addr).unwrap();
    let started = Instant::now();
    let head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let mut closed = false;
    for i in 0..60 {
        if slow.write_all(&[head[i % head.len()]]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        closed || closed_within(&mut slow, Duration::from_secs(1)),
        "a trickled head was not cut off"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Idle keep-alive connection: closed after the idle limit.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(4)),
        "an idle connection was kept"
    );
    assert!(server.metric("lah_connections_timed_out_total") >= 2.0);
    // A well-behaved client is served.
    assert_eq!(server.call("GET", "/healthz", &[], b"").status, 200);
}

#[test]
fn connections_past_the_cap_are_closed_at_once() {
    let server = TestServer::exclusive(|c| c.connections_max = 4);
    // Two cores, four each: of 20 connections at least 12 are refused.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(TcpStream::connect(server.addr).unwrap());
    }
    // Let the server accept (and refuse) them all before looking.
    std::thread::sleep(Duration::from_millis(300));
    let mut refused = 0;
    for s in held.iter_mut() {
        if closed_within(s, Duration::from_millis(200)) {
            refused += 1;
        }
    }
    assert!(refused >= 12, "{refused} of 20 were refused");
    drop(held);
    // Room again once they are gone.
    assert!(wait_until(Duration::from_secs(5), || {
        http_call(server.addr, "GET", "/healthz", &[], b"").is_ok_and(|r| r.status == 200)
    }));
    assert!(server.metric("lah_connections_refused_total") >= 12.0);
}
