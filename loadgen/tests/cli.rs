//! End-to-end tests of the `loadgen` binary: a short `floor` (and its server and exchange
//! variants, whose servers must answer each caller with its own event), `compare` on two small
//! reports (with and without a noise band), and `--invoke-only` against an endpoint that serves
//! nothing but the invoke path, with `--sign`. Each test runs the real binary; the servers are on
//! 127.0.0.1 with ephemeral ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::{Arc, Mutex};

fn loadgen() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
}

#[test]
fn floor_measures_the_exchange_and_writes_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = loadgen()
        .args([
            "floor",
            "--warm-invokes",
            "200",
            "--name",
            "floor-test",
            "-q",
            "--out",
        ])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("# loadgen floor"), "{stdout}");
    let json_path = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "json"))
        .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(json_path).unwrap()).unwrap();
    let floor = &v["floor"];
    assert_eq!(v["kind"], "floor");
    assert_eq!(floor["invokes"], 200);
    assert_eq!(floor["errors"], 0);
    let p50 = floor["latency"]["p50_ms"].as_f64().unwrap();
    let p99 = floor["latency"]["p99_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p99 >= p50, "{floor}");
    // The floor's server and runtime are processes whose CPU was read from /proc.
    assert!(
        floor["usage"]["server_cpu_us_per_invoke"].as_f64().unwrap() > 0.0,
        "{floor}"
    );
    assert!(
        floor["usage"]["runtime_cpu_us_per_invoke"]
            .as_f64()
            .unwrap()
            > 0.0,
        "{floor}"
    );
    assert!(!v["command_line"]
        .as_str()
        .unwrap()
        .contains(dir.path().to_str().unwrap()));
}

/// Every floor variant completes its exchanges: both servers (tokio and the raw io_uring loop),
/// both runtime exchanges (long poll and pushed frames), one caller and a closed loop of several
/// (the server hands events to whichever of its runtimes is free).
#[test]
fn every_floor_variant_completes_its_exchanges() {
    for server in ["tokio", "uring"] {
        for protocol in ["http", "frames"] {
            for callers in ["1", "4"] {
                let out = loadgen()
                    .args(["floor", "--server", server, "--protocol", protocol])
                    .args(["--callers", callers, "--warm-invokes", "300"])
                    .args(["--duration-s", "1", "--warmup-s", "0.2", "--payload-bytes"])
                    .args(["3000", "--json", "-q"])
                    .output()
                    .unwrap();
                let label = format!("{server} {protocol} callers={callers}");
                let stdout = String::from_utf8_lossy(&out.stdout);
                assert!(
                    out.status.success(),
                    "{label}: {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
                let floor = &v["floor"];
                assert_eq!(floor["server"], server, "{label}");
                assert_eq!(floor["protocol"], protocol, "{label}");
                assert_eq!(floor["errors"], 0, "{label}: {floor}");
                let invokes = floor["invokes"].as_u64().unwrap();
                if callers == "1" {
                    assert_eq!(invokes, 300, "{label}");
                    assert!(floor["measured_s"].is_null(), "{label}");
                } else {
                    // A closed loop of 4 over a second does far more than a handful.
                    assert!(invokes > 100, "{label}: {floor}");
                    assert!(floor["measured_s"].as_f64().unwrap() > 0.5, "{label}");
                }
                let server_cpu = floor["usage"]["server_cpu_us_per_invoke"].as_f64();
                assert!(server_cpu.is_some_and(|c| c > 0.0), "{label}: {floor}");
            }
        }
    }
}

/// Sends one invoke with `body` on `conn` and returns the answer's status line and body.
fn invoke_raw(conn: &mut std::net::TcpStream, body: &[u8]) -> (String, Vec<u8>) {
    let head = format!(
        "POST /2015-03-31/functions/floor/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    conn.write_all(body).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut answer = vec![0u8; len];
    reader.read_exact(&mut answer).unwrap();
    (status, answer)
}

/// The floor servers give each caller its own event back, whole: two callers at once with
/// different bodies, small and large (a large answer leaves a short write for the io_uring
/// server's `send` operation), through two runtimes; and the server (with its runtimes) exits
/// when its stdin closes.
#[test]
fn floor_servers_answer_each_caller_with_its_own_event() {
    for server in ["tokio", "uring"] {
        for protocol in ["http", "frames"] {
            let label = format!("{server} {protocol}");
            let mut child = loadgen()
                .args(["floor-serve", "--server", server, "--protocol", protocol])
                .args(["--runtime-count", "2"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut line = String::new();
            BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut line)
                .unwrap();
            let port: u16 = line.trim().parse().unwrap();
            let connect = || {
                let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                c.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                    .unwrap();
                c
            };
            let callers: Vec<_> = (0..2u8)
                .map(|n| {
                    let mut conn = connect();
                    std::thread::spawn(move || {
                        for size in [1usize, 64, 3000, 4 << 20] {
                            let body: Vec<u8> = (0..size)
                                .map(|i| b'a' + ((i + n as usize) % 26) as u8)
                                .collect();
                            let (status, answer) = invoke_raw(&mut conn, &body);
                            assert!(status.starts_with("HTTP/1.1 200"), "{status}");
                            assert!(answer == body, "caller {n}, {size} B: another answer");
                        }
                    })
                })
                .collect();
            for caller in callers {
                caller
                    .join()
                    .unwrap_or_else(|_| panic!("{label}: a caller failed"));
            }
            drop(child.stdin.take());
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    assert!(status.success(), "{label}: {status}");
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "{label}: the server did not exit"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    }
}

/// A report with `reps` repetitions of one warm phase whose p50 values are given.
fn report(name: &str, p50s: &[f64]) -> serde_json::Value {
    let phases: Vec<serde_json::Value> = p50s
        .iter()
        .enumerate()
        .map(|(i, p50)| {
            serde_json::json!({
                "scenario": "warm", "runtime": "node", "transport": "ws",
                "concurrency": null, "repetition": i + 1, "throughput_per_s": 1000.0,
                "latency": {"p50_ms": p50, "p99_ms": p50 * 3.0},
                "usage": {"server_cpu_us_per_invoke": 40.0, "runtime_cpu_us_per_invoke": 100.0},
                "cold_samples": []
            })
        })
        .collect();
    serde_json::json!({"name": name, "date": "2026-01-01", "phases": phases})
}

#[test]
fn compare_marks_noise_as_same_and_writes_markdown() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, v: serde_json::Value| {
        let p = dir.path().join(name);
        std::fs::write(&p, v.to_string()).unwrap();
        p
    };
    let a = write("a.json", report("a", &[0.10, 0.11, 0.12]));
    let b = write("b.json", report("b", &[0.115, 0.12, 0.13]));
    let c = write("c.json", report("c", &[0.05, 0.06, 0.055]));
    let out_dir = dir.path().join("cmp");
    let out = loadgen()
        .arg("compare")
        .args([&a, &b, &c])
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{md}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = md.lines().find(|l| l.contains("| p50 ms |")).unwrap();
    // B overlaps A (same); C is clearly faster (better), ratio 0.55.
    assert!(row.contains("| 1.09 | 0.96–1.30 | same |"), "{row}");
    assert!(row.contains("| 0.50 | 0.42–0.60 | better |"), "{row}");
    assert_eq!(
        std::fs::read_to_string(out_dir.join("compare.md")).unwrap(),
        md
    );
    // One repetition: a ratio, no band.
    let single = write("s.json", report("s", &[0.2]));
    let out = loadgen()
        .arg("compare")
        .args([&a, &single])
        .output()
        .unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(md.contains("no band (1 repetition)"), "{md}");
    // A single file is refused.
    assert!(!loadgen().arg("compare").arg(&a).status().unwrap().success());
}

/// An endpoint with nothing but `POST /2015-03-31/functions/NAME/invocations` (echo); every
/// other request gets 404 and is recorded, as is whether requests carried a SigV4 header.
fn invoke_only_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(sock) = sock else { return };
            let log = log.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(sock.try_clone().unwrap());
                let mut writer = sock;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let (mut length, mut signed) = (0usize, false);
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        let lower = h.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        signed |=
                            lower.starts_with("authorization: aws4-hmac-sha256 credential=akid/");
                        if h == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; length];
                    reader.read_exact(&mut body).unwrap();
                    let request = line.trim().to_owned();
                    let ok = request == "POST /2015-03-31/functions/echo/invocations HTTP/1.1";
                    if !ok || !signed {
                        log.lock()
                            .unwrap()
                            .push(format!("{request} signed={signed}"));
                    }
                    let resp = if ok {
                        let mut r =
                            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len())
                                .into_bytes();
                        r.extend_from_slice(&body);
                        r
                    } else {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()
                    };
                    writer.write_all(&resp).unwrap();
                }
            });
        }
    });
    (port, seen)
}

#[test]
fn invoke_only_makes_no_management_calls_and_signs() {
    let (port, unexpected) = invoke_only_server();
    let dir = tempfile::tempdir().unwrap();
    let out = loadgen()
        .args([
            "warm",
            "--function",
            "echo",
            "--invoke-only",
            "--sign",
            "--warm-invokes",
            "50",
        ])
        .args([
            "--runtimes",
            "python",
            "--transports",
            "http",
            "-q",
            "--json",
        ])
        .arg("--endpoint")
        .arg(format!("http://127.0.0.1:{port}"))
        .arg("--out")
        .arg(dir.path())
        .env("AWS_ACCESS_KEY_ID", "AKID")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .env("AWS_REGION", "eu-west-1")
        .env_remove("AWS_SESSION_TOKEN")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    let phase = &v["phases"][0];
    assert_eq!(phase["scenario"], "warm");
    assert_eq!(phase["ok"], 50);
    assert!(
        unexpected.lock().unwrap().is_empty(),
        "{:?}",
        unexpected.lock().unwrap()
    );
    // Every file of the run, including the page and the charts.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    for ext in [
        ".json",
        ".md",
        ".html",
        "-warm-latency.svg",
        "-warm-cpu.svg",
    ] {
        assert!(
            names.iter().any(|n| n.ends_with(ext)),
            "{ext} missing in {names:?}"
        );
    }
    // Without credentials --sign is refused before anything is sent.
    let out = loadgen()
        .args(["warm", "--function", "echo", "--invoke-only", "--sign"])
        .arg("--endpoint")
        .arg(format!("http://127.0.0.1:{port}"))
        .env_remove("AWS_ACCESS_KEY_ID")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("AWS_ACCESS_KEY_ID"));
}
