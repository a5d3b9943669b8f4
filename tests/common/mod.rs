//! Shared harness for the end-to-end tests: an in-process server on ephemeral loopback ports
//! with its own temporary data dir, and a small blocking HTTP client built on the crate's own
//! response decoder.
//!
//! Every network wait is bounded (`IO_TIMEOUT` per call, explicit deadlines in polls), so a broken
//! server fails a test instead of hanging it. Only 127.0.0.1 is ever contacted.
#![allow(dead_code)]

pub mod boto3;
pub mod child;
pub mod logs;

use std::io::{Cursor, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::BytesMut;
use lambda_at_home::config::Config;
use lambda_at_home::protocols::http::{write_request_head, ClientResponse, ResponseDecoder};
use lambda_at_home::server::Server;
use serde_json::{json, Value};

/// Longest a single HTTP exchange with the server may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response body the client accepts (the invoke limit plus headroom).
const RESPONSE_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;
/// The role every test function is created with (ignored by the server, required by AWS).
pub const ROLE: &str = "arn:aws:iam::000000000000:role/lambda";

/// Tests run in parallel threads of one process on a small machine. A test that starts dozens of
/// instances at once (`TestServer::exclusive`) would starve the others' cold starts past the
/// init limit, so it runs alone: ordinary servers share the gate, heavy ones hold it exclusively.
struct Gate {
    /// (servers holding it shared, an exclusive holder is in, exclusive holders waiting)
    state: Mutex<(usize, bool, usize)>,
    changed: Condvar,
}

static GATE: Gate = Gate {
    state: Mutex::new((0, false, 0)),
    changed: Condvar::new(),
};

/// Held by a `TestServer` for its life; releases the gate when dropped.
struct GateGuard {
    exclusive: bool,
}

impl GateGuard {
    fn acquire(exclusive: bool) -> GateGuard {
        let mut s = GATE.state.lock().unwrap_or_else(|e| e.into_inner());
        if exclusive {
            s.2 += 1;
            while s.0 > 0 || s.1 {
                s = GATE.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.2 -= 1;
            s.1 = true;
        } else {
            // Waiting exclusive holders go first, or a stream of small tests would starve them.
            while s.1 || s.2 > 0 {
                s = GATE.changed.wait(s).unwrap_or_else(|e| e.into_inner());
            }
            s.0 += 1;
        }
        GateGuard { exclusive }
    }
}

impl Drop for GateGuard {
    fn drop(&mut self) {
        let mut s = GATE.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.exclusive {
            s.1 = false;
        } else {
            s.0 -= 1;
        }
        GATE.changed.notify_all();
    }
}

/// A server running in this process. Dropping it shuts it down (stopping its instances).
pub struct TestServer {
    server: Option<Server>,
    /// Declared after `server`: released only once the server (and its instances) are gone.
    _gate: GateGuard,
    /// Kept so the data dir lives as long as the server (and is removed after).
    _dir: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    pub runtime_addr: SocketAddr,
}

/// The config every test server uses: process executor, 2 cores, ephemeral ports.
pub fn test_config(data_dir: PathBuf) -> Config {
    let mut config = Config::for_tests(data_dir, 0, 0);
    config.cores = Some(2);
    config.shutdown_grace_s = 2;
    config
}

impl TestServer {
    /// A server on a fresh temporary data dir.
    pub fn new() -> TestServer {
        Self::with_config(|_| {})
    }

    /// A server on a fresh temporary data dir, with `adjust` applied to the test config.
    pub fn with_config(adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::in_temp_dir(false, adjust)
    }

    /// Like `with_config`, for a test that loads the machine: no other test server runs meanwhile.
    pub fn exclusive(adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::in_temp_dir(true, adjust)
    }

    fn in_temp_dir(exclusive: bool, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let gate = GateGuard::acquire(exclusive);
        let dir = tempfile::tempdir().expect("create a temporary data dir");
        let path = dir.path().to_path_buf();
        let mut server = Self::start(&path, gate, adjust);
        server._dir = Some(dir);
        server
    }

    /// A server on `data_dir`, which the caller keeps alive (used to restart on the same dir).
    pub fn start_in(data_dir: &Path, adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::start(data_dir, GateGuard::acquire(false), adjust)
    }

    /// Like `start_in`, for a test that loads the machine (see `exclusive`).
    pub fn start_exclusive_in(data_dir: &Path, adjust: impl FnOnce(&mut Config)) -> TestServer {
        Self::start(data_dir, GateGuard::acquire(true), adjust)
    }

    fn start(data_dir: &Path, gate: GateGuard, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let mut config = test_config(data_dir.to_path_buf());
        adjust(&mut config);
        let server = Server::start(config).expect("server starts");
        TestServer {
            addr: server.user_addr,
            runtime_addr: server.runtime_addr,
            server: Some(server),
            _gate: gate,
            _dir: None,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// Stops the server now (as `Drop` would) and waits until it is stopped.
    pub fn shutdown(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }

    /// One HTTP exchange on a fresh connection; panics (failing the test) on I/O errors.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> ClientResponse {
        http_call(self.addr, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `call` with a JSON body.
    pub fn call_json(&self, method: &str, path: &str, body: &Value) -> ClientResponse {
        self.call(method, path, &[], body.to_string().as_bytes())
    }

    /// CreateFunction with AWS's PascalCase body; `extra` (an object) is merged into it.
    pub fn create_function(
        &self,
        name: &str,
        runtime: &str,
        handler: &str,
        files: &[(&str, &[u8], u32)],
        extra: Value,
    ) -> ClientResponse {
        let mut body = json!({
            "FunctionName": name,
            "Runtime": runtime,
            "Role": ROLE,
            "Handler": handler,
            "Code": { "ZipFile": zip_b64(files) },
        });
        merge(&mut body, extra);
        self.call_json("POST", "/2015-03-31/functions", &body)
    }

    /// A Python function whose `lambda_function.py` is `source` (handler `lambda_function.handler`);
    /// asserts 201.
    pub fn create_python(&self, name: &str, source: &str, extra: Value) -> Value {
        let resp = self.create_function(
            name,
            "python3.12",
            "lambda_function.handler",
            &[("lambda_function.py", source.as_bytes(), 0o644)],
            extra,
        );
        expect_json(&resp, 201)
    }

    /// A `provided.al2023` function whose executable `bootstrap` is `script`; asserts 201.
    pub fn create_provided(&self, name: &str, script: &str, extra: Value) -> Value {
        let resp = self.create_function(
            name,
            "provided.al2023",
            "bootstrap",
            &[("bootstrap", script.as_bytes(), 0o755)],
            extra,
        );
        expect_json(&resp, 201)
    }

    /// UpdateFunctionCode with a new zip.
    pub fn update_code(&self, name: &str, files: &[(&str, &[u8], u32)]) -> ClientResponse {
        self.call_json(
            "PUT",
            &format!("/2015-03-31/functions/{name}/code"),
            &json!({ "ZipFile": zip_b64(files) }),
        )
    }

    /// Invoke (RequestResponse unless `headers` say otherwise).
    pub fn invoke(&self, name: &str, payload: &[u8], headers: &[(&str, &str)]) -> ClientResponse {
        self.call(
            "POST",
            &format!("/2015-03-31/functions/{name}/invocations"),
            headers,
            payload,
        )
    }

    /// Invoke with a JSON payload, asserting a 200 without a function error; returns the body.
    pub fn invoke_ok(&self, name: &str, payload: &Value) -> Value {
        let resp = self.invoke(name, payload.to_string().as_bytes(), &[]);
        assert_eq!(
            resp.header_str("X-Amz-Function-Error"),
            None,
            "unexpected function error: {}",
            describe(&resp)
        );
        expect_json(&resp, 200)
    }

    /// `GET /metrics` as (name → value) for the unlabelled samples.
    pub fn metrics(&self) -> std::collections::HashMap<String, f64> {
        let resp = self.call("GET", "/metrics", &[], b"");
        assert_eq!(resp.status, 200, "{}", describe(&resp));
        let text = String::from_utf8_lossy(&resp.body);
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.contains('{'))
            .filter_map(|l| {
                let (name, value) = l.split_once(' ')?;
                Some((name.to_string(), value.trim().parse().ok()?))
            })
            .collect()
    }

    /// One metric; panics when the server does not export it.
    pub fn metric(&self, name: &str) -> f64 {
        *self
            .metrics()
            .get(name)
            .unwrap_or_else(|| panic!("metric {name} missing from /metrics"))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown();
        }
    }
}

/// Merges the keys of `extra` (when it is an object) into `body`.
pub fn merge(body: &mut Value, extra: Value) {
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        for (k, v) in extra {
            body.insert(k, v);
        }
    }
}

/// A zip of `files` (name, content, unix mode), built in memory.
pub fn zip_bytes(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, content, mode) in files {
        let options = zip::write::SimpleFileOptions::default().unix_permissions(*mode);
        zip.start_file(*name, options).expect("zip entry");
        zip.write_all(content).expect("zip write");
    }
    zip.finish().expect("zip finish").into_inner()
}

pub fn zip_b64(files: &[(&str, &[u8], u32)]) -> String {
    b64(&zip_bytes(files))
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn b64_decode(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64 ({e}): {text}"))
}

/// Status, headers and body of a response, for assertion messages.
pub fn describe(resp: &ClientResponse) -> String {
    let headers: Vec<String> = resp
        .headers
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v)))
        .collect();
    let body = String::from_utf8_lossy(&resp.body);
    let body: String = body.chars().take(2000).collect();
    format!(
        "status {} [{}] body {body}",
        resp.status,
        headers.join("; ")
    )
}

/// The body as JSON; panics with the whole response when it is not JSON.
pub fn json_body(resp: &ClientResponse) -> Value {
    serde_json::from_slice(&resp.body)
        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", describe(resp)))
}

/// Asserts the status and returns the JSON body.
pub fn expect_json(resp: &ClientResponse, status: u16) -> Value {
    assert_eq!(resp.status, status, "{}", describe(resp));
    json_body(resp)
}

/// Asserts a successful invocation (200, no `X-Amz-Function-Error`) and returns its JSON body.
pub fn expect_success(resp: &ClientResponse) -> Value {
    assert_eq!(
        resp.header_str("X-Amz-Function-Error"),
        None,
        "{}",
        describe(resp)
    );
    expect_json(resp, 200)
}

/// Asserts the runtime transport in use is the one asked for (no silent fallback either way).
pub fn assert_transport(server: &TestServer, ws: bool) {
    let ws_connections = server.metric("lah_ws_connections_total");
    if ws {
        assert!(
            ws_connections >= 1.0,
            "no WebSocket runtime connection was made"
        );
    } else {
        assert_eq!(ws_connections, 0.0, "WebSocket used although disabled");
    }
}

/// Asserts an AWS error: status, `x-amzn-ErrorType`, body `{Type, Message, message}`.
pub fn expect_aws_error(resp: &ClientResponse, status: u16, error_type: &str) -> Value {
    assert_eq!(resp.status, status, "{}", describe(resp));
    assert_eq!(
        resp.header_str("x-amzn-ErrorType"),
        Some(error_type),
        "{}",
        describe(resp)
    );
    let body = json_body(resp);
    assert!(body["Type"].is_string(), "no Type: {}", describe(resp));
    assert!(
        body["Message"].is_string(),
        "no Message: {}",
        describe(resp)
    );
    assert_eq!(body["Message"], body["message"], "{}", describe(resp));
    body
}

/// Asserts a function error (200 + `X-Amz-Function-Error`) and returns the error document.
pub fn expect_function_error(resp: &ClientResponse) -> Value {
    assert_eq!(resp.status, 200, "{}", describe(resp));
    assert!(
        resp.header_str("X-Amz-Function-Error").is_some(),
        "no X-Amz-Function-Error: {}",
        describe(resp)
    );
    json_body(resp)
}

/// A process-unique name with `prefix` (function names must not collide across tests).
pub fn unique_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `command` with its output captured, killing it after `timeout`: its exit status (`None`
/// when it was killed), stdout and stderr. Both pipes are drained on threads so a chatty child
/// never blocks on a full pipe.
pub fn run_bounded(
    command: &mut std::process::Command,
    timeout: Duration,
) -> (Option<std::process::ExitStatus>, String, String) {
    use std::process::Stdio;
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {:?}: {e}", command.get_program()));
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipe.read_to_string(&mut s);
            s
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout")));
    let err = drain(Box::new(child.stderr.take().expect("stderr")));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// Polls `check` every 50 ms until it is true or `limit` passes; returns whether it became true.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One request on a fresh connection (`Connection: close`), bounded by `IO_TIMEOUT`.
pub fn http_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<ClientResponse> {
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let mut all: Vec<(&str, &str)> = vec![("Connection", "close")];
    let has_type = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if !body.is_empty() && !has_type {
        all.push(("Content-Type", "application/json"));
    }
    all.extend_from_slice(headers);
    let mut out = Vec::with_capacity(256 + body.len());
    write_request_head(&mut out, method, path, &addr.to_string(), &all, body.len());
    out.extend_from_slice(body);
    stream.write_all(&out)?;
    read_response(&mut stream, method == "HEAD")
}

/// Reads the next response of a connection whose responses may arrive together (pipelined
/// requests): bytes past it stay in `buf` for the next call. Bounded by `IO_TIMEOUT`.
pub fn read_pipelined(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
) -> std::io::Result<ClientResponse> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut decoder = ResponseDecoder::new(RESPONSE_BODY_BYTES_MAX);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let decoded = decoder
            .decode(buf, false)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}")))?;
        if let Some(resp) = decoded {
            return Ok(resp);
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no complete response in time",
            ));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Reads one response, bounded by `IO_TIMEOUT` overall. Bytes read past it are dropped: for
/// pipelined requests use `read_pipelined`.
pub fn read_response(
    stream: &mut TcpStream,
    head_request: bool,
) -> std::io::Result<ClientResponse> {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut decoder = ResponseDecoder::new(RESPONSE_BODY_BYTES_MAX);
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let invalid = |e: lambda_at_home::protocols::http::HttpError| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{e:?}"))
    };
    loop {
        if let Some(resp) = decoder.decode(&mut buf, head_request).map_err(invalid)? {
            return Ok(resp);
        }
        if Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no complete response in time",
            ));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return decoder
                .decode_eof(&mut buf)
                .map_err(invalid)?
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed before a response",
                    )
                });
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// What a closed-loop run (`closed_loop`) saw.
#[derive(Debug)]
pub struct LoadRun {
    /// Invokes answered 200 without a function error, warm-up included.
    pub ok: u64,
    /// Every other outcome, as `status function-error: body`, warm-up included.
    pub errors: Vec<String>,
    /// The most instances (starting + idle + busy, from `/metrics`) seen at any sample.
    pub instances_max: u64,
    /// `lah_cold_starts_total` gained during the measured part (after warm-up): invocations
    /// that were an instance's first, whenever that instance was started.
    pub cold_starts_measured: u64,
    /// `lah_instance_starts_total` gained during the measured part: instances started then.
    pub starts_measured: u64,
}

/// Longest the warm-up of `closed_loop` may take (every worker answered twice): on a loaded
/// machine with the Docker executor, dozens of containers start.
pub const WARMUP_MAX: Duration = Duration::from_secs(180);
/// Interval at which `closed_loop` samples the instance gauges.
const INSTANCE_SAMPLE_MS: u64 = 50;

/// The instances the server has now: the sum of its `lah_instances` gauges but `paused` (a
/// paused instance is also counted idle).
pub fn instances_now(server: &TestServer) -> u64 {
    let resp = server.call("GET", "/metrics", &[], b"");
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    String::from_utf8_lossy(&resp.body)
        .lines()
        .filter(|l| l.starts_with("lah_instances{") && !l.contains("state=\"paused\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Drives `function` with `concurrency` closed-loop workers (each invokes again as soon as it has
/// its answer, on its own connections): a warm-up until every worker has been answered twice,
/// then `measured` more, while a sampler reads the instance gauges. Not timed: it asserts
/// nothing itself; the caller checks the errors and the instance count.
pub fn closed_loop(
    server: &TestServer,
    function: &str,
    concurrency: usize,
    measured: Duration,
) -> LoadRun {
    use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    let warm = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let ok = AtomicU64::new(0);
    let instances_max = AtomicU64::new(0);
    let errors = Mutex::new(Vec::new());
    let mut cold_starts_measured = 0;
    let mut starts_measured = 0;
    std::thread::scope(|s| {
        for _ in 0..concurrency {
            s.spawn(|| {
                let mut answered = 0;
                while !stop.load(Ordering::Relaxed) {
                    let resp = server.invoke(function, br#"{"load":true}"#, &[]);
                    if resp.status == 200 && resp.header_str("X-Amz-Function-Error").is_none() {
                        ok.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
                        errors.push(format!(
                            "{} {:?}: {}",
                            resp.status,
                            resp.header_str("X-Amz-Function-Error"),
                            String::from_utf8_lossy(&resp.body)
                        ));
                    }
                    answered += 1;
                    if answered == 2 {
                        warm.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                instances_max.fetch_max(instances_now(server), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(INSTANCE_SAMPLE_MS));
            }
        });
        let warmed = wait_until(WARMUP_MAX, || warm.load(Ordering::Relaxed) == concurrency);
        let before = server.metrics();
        if warmed {
            std::thread::sleep(measured);
        }
        let after = server.metrics();
        let gained = |name: &str| (after[name] - before[name]) as u64;
        cold_starts_measured = gained("lah_cold_starts_total");
        starts_measured = gained("lah_instance_starts_total");
        stop.store(true, Ordering::Relaxed);
        assert!(
            warmed,
            "only {} of {concurrency} workers were answered twice within {WARMUP_MAX:?}",
            warm.load(Ordering::Relaxed)
        );
    });
    LoadRun {
        ok: ok.into_inner(),
        errors: errors.into_inner().unwrap_or_else(|e| e.into_inner()),
        instances_max: instances_max.into_inner(),
        cold_starts_measured,
        starts_measured,
    }
}

/// The documented slack of the instance bound under a closed loop of `concurrency` workers
/// (docs/scheduler.md): at most 10 % more instances than workers, at least one.
pub fn instance_bound(concurrency: usize) -> u64 {
    (concurrency + concurrency.div_ceil(10)) as u64
}
