//! End-to-end tests of the WebSocket Runtime API (`docs/websocket-protocol.md`): the opening handshake, the Node and Python runtimes over WebSocket
//! (and their fallback to HTTP), and the message protocol spoken by the test itself.
//!
//! Protocol tests create a `provided.al2023` function whose bootstrap only reports its
//! `AWS_LAMBDA_RUNTIME_API` and `LAMBDA_INSTANCE_ID` (one line per instance start) and sleeps; the
//! test then acts as the runtime over a raw `TcpStream`: a hand-written upgrade, masked client
//! frames, and the crate's own client-role decoder for the server's frames. Every wait is bounded.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use common::*;
use lambda_at_home::protocols::http::ClientResponse;
use lambda_at_home::protocols::ws::{self, Message, Role};
use serde_json::{json, Value};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Longest any single wait (a socket read, an instance start) may take.
const WAIT: Duration = Duration::from_secs(20);
/// Timeout of the fake functions: long enough that no invocation times out during a test.
const FAKE_TIMEOUT_S: u64 = 30;
/// How soon a dropped connection must fail the invocation it held.
const DROP_FAILS_WITHIN: Duration = Duration::from_secs(5);

const TEXT: OpCode = OpCode::Data(Data::Text);
const BINARY: OpCode = OpCode::Data(Data::Binary);

/// A runtime that leaves the Runtime API to the test: it appends `ADDRESS TOKEN` to the report
/// file named by `WSE2E_REPORT`, then sleeps until the server stops it.
const FAKE_BOOTSTRAP: &str = r#"#!/bin/sh
printf '%s %s\n' "$AWS_LAMBDA_RUNTIME_API" "$LAMBDA_INSTANCE_ID" >> "$WSE2E_REPORT"
exec sleep 600
"#;

const PY_HANDLER: &str = r#"def handler(event, context):
    if event.get("fail"):
        raise ValueError("asked to fail: %s" % event["fail"])
    return {"runtime": "python", "event": event, "rid": context.aws_request_id}
"#;

const NODE_HANDLER: &str = r#"exports.handler = async (event, context) => {
  if (event.fail) {
    throw new TypeError(`asked to fail: ${event.fail}`);
  }
  return { runtime: 'node', event, rid: context.awsRequestId };
};
"#;

// ---------------------------------------------------------------------------------------------
// Helpers: fake functions, background invokes, a minimal WebSocket client.
// ---------------------------------------------------------------------------------------------

/// A `provided.al2023` function running `FAKE_BOOTSTRAP`.
struct FakeFunction {
    name: String,
    arn: String,
    report: PathBuf,
    _dir: tempfile::TempDir,
}

/// One start of a fake function's instance, as its bootstrap reported it.
#[derive(Clone, Debug)]
struct Instance {
    addr: SocketAddr,
    token: String,
}

impl FakeFunction {
    fn create(server: &TestServer, prefix: &str) -> FakeFunction {
        let dir = tempfile::tempdir().expect("report dir");
        let report = dir.path().join("instances");
        let name = unique_name(prefix);
        let config = server.create_provided(
            &name,
            FAKE_BOOTSTRAP,
            json!({
                "Timeout": FAKE_TIMEOUT_S,
                "Environment": {"Variables": {"WSE2E_REPORT": report.display().to_string()}},
            }),
        );
        let arn = config["FunctionArn"]
            .as_str()
            .unwrap_or_else(|| panic!("no FunctionArn: {config}"))
            .to_string();
        FakeFunction {
            name,
            arn,
            report,
            _dir: dir,
        }
    }

    /// Waits for the `n`th (1-based) instance start.
    fn instance(&self, n: usize) -> Instance {
        let mut line = None;
        let started = wait_until(WAIT, || {
            let text = std::fs::read_to_string(&self.report).unwrap_or_default();
            line = text
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .nth(n - 1)
                .map(|l| l.trim().to_string());
            line.is_some()
        });
        assert!(started, "instance {n} of {} did not start", self.name);
        let line = line.unwrap_or_default();
        let (addr, token) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("bad report line {line:?}"));
        Instance {
            addr: addr
                .parse()
                .unwrap_or_else(|e| panic!("AWS_LAMBDA_RUNTIME_API {addr:?}: {e}")),
            token: token.to_string(),
        }
    }
}

type PendingInvoke = JoinHandle<(std::io::Result<ClientResponse>, Instant)>;

/// Invokes on another thread (the caller's side while the test plays the runtime).
fn invoke_in_background(
    server: &TestServer,
    name: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> PendingInvoke {
    let addr = server.addr;
    let path = format!("/2015-03-31/functions/{name}/invocations");
    let body = body.to_vec();
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    std::thread::spawn(move || {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let resp = http_call(addr, "POST", &path, &headers, &body);
        (resp, Instant::now())
    })
}

/// The caller's response and when it arrived.
fn finished(pending: PendingInvoke) -> (ClientResponse, Instant) {
    let (resp, at) = pending.join().expect("invoke thread panicked");
    (
        resp.unwrap_or_else(|e| panic!("invoke got no response: {e}")),
        at,
    )
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn connect(addr: SocketAddr) -> TcpStream {
    let stream =
        TcpStream::connect_timeout(&addr, WAIT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    stream.set_write_timeout(Some(WAIT)).expect("write timeout");
    stream.set_nodelay(true).expect("nodelay");
    stream
}

/// Reads an HTTP response head (through the blank line); returns it and any bytes after it.
fn read_head(stream: &mut TcpStream) -> (String, BytesMut) {
    let deadline = Instant::now() + WAIT;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).into_owned();
            return (head, BytesMut::from(&buf[end + 4..]));
        }
        assert!(Instant::now() < deadline, "no response head in time");
        match stream.read(&mut chunk) {
            Ok(0) => panic!(
                "connection closed before a response head: {:?}",
                String::from_utf8_lossy(&buf)
            ),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => panic!("no response head: {e}"),
        }
    }
}

/// A header of a raw response head, by case-insensitive name.
fn head_header(head: &str, name: &str) -> Option<String> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// The test's side of a WebSocket Runtime API connection.
struct WsClient {
    stream: TcpStream,
    buf: BytesMut,
    decoder: ws::Decoder,
    /// Frames sent so far, their payload bytes and their bytes on the wire.
    sent_frames: usize,
    sent_payload_bytes: usize,
    sent_wire_bytes: usize,
}

impl WsClient {
    /// Connects to `addr` and upgrades `/2018-06-01/runtime/websocket?fn={function}`.
    fn connect(addr: SocketAddr, function: &str) -> WsClient {
        let (client, head) = WsClient::connect_with(addr, function, &[]);
        assert_eq!(
            head_header(&head, "Lambda-Runtime-Registered"),
            None,
            "{head}"
        );
        client
    }

    /// `connect` with extra request header lines; also returns the 101's head.
    fn connect_with(addr: SocketAddr, function: &str, headers: &[String]) -> (WsClient, String) {
        let mut stream = connect(addr);
        let key = b64(&rand::random::<[u8; 16]>());
        let extra: String = headers.iter().map(|h| format!("{h}\r\n")).collect();
        let request = format!(
            "GET /2018-06-01/runtime/websocket?fn={function} HTTP/1.1\r\nHost: {addr}\r\n\
             Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {key}\r\n\
             {extra}Sec-WebSocket-Version: 13\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .expect("write the upgrade");
        let (head, rest) = read_head(&mut stream);
        assert!(
            head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
            "upgrade refused: {head}"
        );
        let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
        assert_eq!(
            head_header(&head, "Sec-WebSocket-Accept"),
            Some(accept),
            "{head}"
        );
        let client = WsClient {
            stream,
            buf: rest,
            decoder: ws::Decoder::new(Role::Client, ws::FRAME_BYTES_MAX, ws::MESSAGE_BYTES_MAX),
            sent_frames: 0,
            sent_payload_bytes: 0,
            sent_wire_bytes: 0,
        };
        (client, head)
    }

    fn send(&mut self, opcode: OpCode, payload: &[u8]) {
        let mut out = Vec::with_capacity(payload.len() + 14);
        ws::encode_client_frame(&mut out, opcode, payload);
        self.stream.write_all(&out).expect("send a frame");
        self.sent_frames += 1;
        self.sent_payload_bytes += payload.len();
        self.sent_wire_bytes += out.len();
    }

    fn send_text(&mut self, text: &str) {
        self.send(TEXT, text.as_bytes());
    }

    fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string());
    }

    fn register(&mut self, function: &str, token: &str, binary: bool) {
        self.send_json(&json!({
            "type": "register",
            "function_name": function,
            "runtime": "provided.al2023",
            "version": "$LATEST",
            "instance_id": token,
            "binary": binary,
        }));
    }

    /// A `response` whose `payload` is the JSON text `payload` (sent as is).
    fn respond(&mut self, request_id: &str, payload: &str) {
        let id = Value::from(request_id);
        self.send_text(&format!(
            r#"{{"type":"response","request_id":{id},"payload":{payload}}}"#
        ));
    }

    /// The next message of any kind; `None` once the server has closed the connection.
    fn recv(&mut self) -> Option<Message> {
        let deadline = Instant::now() + WAIT;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(message)) => return Some(message),
                Ok(None) => {}
                Err(e) => panic!("the server sent an invalid frame: {e}"),
            }
            assert!(Instant::now() < deadline, "no message within {WAIT:?}");
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionReset
                            | ErrorKind::ConnectionAborted
                            | ErrorKind::BrokenPipe
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("no message within {WAIT:?}: {e}"),
            }
        }
    }

    /// The next data message or close; keep-alive pings are answered, pongs skipped.
    fn recv_data(&mut self) -> Message {
        loop {
            match self.recv() {
                Some(Message::Ping(p)) => self.send(OpCode::Control(Control::Pong), &p),
                Some(Message::Pong(_)) => {}
                Some(message) => return message,
                None => panic!("the server closed the connection instead of sending a message"),
            }
        }
    }

    /// The next text message as JSON, and its raw text.
    fn recv_json_raw(&mut self) -> (Value, Bytes) {
        match self.recv_data() {
            Message::Text(t) => {
                let value = serde_json::from_slice(&t).unwrap_or_else(|e| {
                    panic!(
                        "server text is not JSON ({e}): {}",
                        String::from_utf8_lossy(&t)
                    )
                });
                (value, t)
            }
            other => panic!("expected a text message, got {other:?}"),
        }
    }

    fn recv_json(&mut self) -> Value {
        self.recv_json_raw().0
    }

    /// Asserts the next message is an `error_response` with `code`.
    fn expect_error_response(&mut self, code: &str) -> Value {
        let got = self.recv_json();
        assert_eq!(got["type"], "error_response", "{got}");
        assert_eq!(got["code"], code, "{got}");
        assert!(
            got["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error_response without a message: {got}"
        );
        got
    }

    /// Asserts a close frame with `code`, then the end of the connection.
    fn expect_close(&mut self, code: u16) {
        match self.recv_data() {
            Message::Close(Some((got, reason))) => {
                assert_eq!(got, code, "close reason {reason:?}")
            }
            other => panic!("expected a close frame {code}, got {other:?}"),
        }
        assert!(
            self.recv().is_none(),
            "the server kept the connection open after its close frame"
        );
    }

    /// Asserts the next message is a text `invocation`; returns it and its raw text.
    fn invocation(&mut self) -> (Value, Bytes) {
        let (got, raw) = self.recv_json_raw();
        assert_eq!(got["type"], "invocation", "{got}");
        assert!(
            got["request_id"].as_str().is_some_and(|s| !s.is_empty()),
            "{got}"
        );
        (got, raw)
    }
}

/// `request_id` of a message, as a String.
fn request_id(message: &Value) -> String {
    message["request_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no request_id: {message}"))
        .to_string()
}

/// Sends one raw request, asserts the refusal's `status`, and that it ended the connection.
fn refused(addr: SocketAddr, request: &str, status: u16) -> ClientResponse {
    let mut stream = connect(addr);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("read timeout");
    stream.write_all(request.as_bytes()).expect("write");
    let resp = read_response(&mut stream, false).expect("a response");
    assert_eq!(resp.status, status, "{}", describe(&resp));
    let mut rest = [0u8; 64];
    let closed = match stream.read(&mut rest) {
        Ok(n) => n == 0,
        Err(e) => e.kind() == ErrorKind::ConnectionReset,
    };
    assert!(
        closed,
        "connection still open after a refused upgrade: {}",
        describe(&resp)
    );
    resp
}

fn upgrade_request(method: &str, version: &str, headers: &[&str], addr: SocketAddr) -> String {
    let mut request = format!(
        "{method} /2018-06-01/runtime/websocket?fn=test-function {version}\r\nHost: {addr}\r\n"
    );
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

fn ws_counters(server: &TestServer) -> (f64, f64, f64) {
    (
        server.metric("lah_ws_connections_total"),
        server.metric("lah_ws_messages_in_total"),
        server.metric("lah_ws_fallbacks_to_http_total"),
    )
}

/// Creates `name` in the given runtime with the handler above and extra settings.
fn create_real(server: &TestServer, name: &str, node: bool, extra: Value) {
    let resp = if node {
        server.create_function(
            name,
            "nodejs20.x",
            "index.handler",
            &[("index.js", NODE_HANDLER.as_bytes(), 0o644)],
            extra,
        )
    } else {
        server.create_function(
            name,
            "python3.12",
            "lambda_function.handler",
            &[("lambda_function.py", PY_HANDLER.as_bytes(), 0o644)],
            extra,
        )
    };
    expect_json(&resp, 201);
}

/// Two successful invocations (checked against the handler) and, with `fail`, a function error.
fn invoke_real(server: &TestServer, name: &str, node: bool, fail: bool) {
    let runtime = if node { "node" } else { "python" };
    for i in 0..2 {
        let event = json!({"i": i, "nested": {"s": "héllo ✓", "list": [1, 2, 3]}});
        let resp = server.invoke(name, event.to_string().as_bytes(), &[]);
        let got = expect_success(&resp);
        assert_eq!(got["runtime"], runtime, "{got}");
        assert_eq!(got["event"], event, "{got}");
        assert_eq!(
            got["rid"].as_str(),
            resp.header_str("x-amzn-RequestId"),
            "context request id is the invocation's: {}",
            describe(&resp)
        );
    }
    if fail {
        let resp = server.invoke(name, br#"{"fail": "on purpose"}"#, &[]);
        let body = expect_function_error(&resp);
        let error_type = if node { "TypeError" } else { "ValueError" };
        assert_eq!(body["errorType"], error_type, "{}", describe(&resp));
        assert_eq!(
            body["errorMessage"],
            "asked to fail: on purpose",
            "{}",
            describe(&resp)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Handshake.
// ---------------------------------------------------------------------------------------------

/// The `curl` check of `docs/websocket-protocol.md`, byte for byte, on the shared Runtime API port.
#[test]
fn spec_curl_handshake_on_the_shared_port() {
    let server = TestServer::new();
    let addr = server.runtime_addr;
    let request = format!(
        "GET /2018-06-01/runtime/websocket?fn=test-function HTTP/1.1\r\nHost: {addr}\r\n\
         User-Agent: curl/8.5.0\r\nAccept: */*\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    let mut stream = connect(addr);
    stream.write_all(request.as_bytes()).expect("write");
    let (head, rest) = read_head(&mut stream);
    assert!(
        head.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{head}"
    );
    assert_eq!(
        head_header(&head, "Sec-WebSocket-Accept").as_deref(),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    assert!(
        head_header(&head, "Upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "{head}"
    );
    assert!(
        head_header(&head, "Connection").is_some_and(|v| v.eq_ignore_ascii_case("upgrade")),
        "{head}"
    );
    assert_eq!(
        head_header(&head, "Sec-WebSocket-Extensions"),
        None,
        "{head}"
    );
    assert_eq!(head_header(&head, "Sec-WebSocket-Protocol"), None, "{head}");
    assert!(rest.is_empty(), "the server sent frames before register");
}

/// A refused GET upgrade: (what, HTTP version, headers, status, a word the explanation contains).
type UpgradeCase = (
    &'static str,
    &'static str,
    &'static [&'static str],
    u16,
    &'static str,
);

#[test]
fn malformed_upgrades_are_refused_with_a_reason() {
    let server = TestServer::new();
    let addr = server.runtime_addr;
    const KEY: &str = "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
    const V13: &str = "Sec-WebSocket-Version: 13";
    const CONN: &str = "Connection: Upgrade";
    const UPG: &str = "Upgrade: websocket";
    let cases: &[UpgradeCase] = &[
        (
            "missing key",
            "HTTP/1.1",
            &[CONN, UPG, V13],
            400,
            "Sec-WebSocket-Key",
        ),
        (
            "key not a 16-byte nonce",
            "HTTP/1.1",
            &[CONN, UPG, "Sec-WebSocket-Key: bm90LWEtbm9uY2U=", V13],
            400,
            "Sec-WebSocket-Key",
        ),
        (
            "wrong version",
            "HTTP/1.1",
            &[CONN, UPG, KEY, "Sec-WebSocket-Version: 8"],
            426,
            "Sec-WebSocket-Version",
        ),
        (
            "missing version",
            "HTTP/1.1",
            &[CONN, UPG, KEY],
            426,
            "Sec-WebSocket-Version",
        ),
        (
            "missing Upgrade",
            "HTTP/1.1",
            &[CONN, KEY, V13],
            426,
            "Upgrade",
        ),
        (
            "Connection without Upgrade",
            "HTTP/1.1",
            &["Connection: keep-alive", UPG, KEY, V13],
            400,
            "Connection",
        ),
        (
            "HTTP/1.0",
            "HTTP/1.0",
            &[CONN, UPG, KEY, V13],
            400,
            "HTTP/1.1",
        ),
    ];
    for (what, version, headers, status, word) in cases {
        eprintln!("case: {what}");
        let resp = refused(
            addr,
            &upgrade_request("GET", version, headers, addr),
            *status,
        );
        let body = String::from_utf8_lossy(&resp.body);
        assert!(
            body.contains(word),
            "{what}: explanation lacks {word:?}: {body}"
        );
        assert!(
            resp.header_str("Content-Type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{what}: {}",
            describe(&resp)
        );
        if *status == 426 {
            assert_eq!(resp.header_str("Upgrade"), Some("websocket"), "{what}");
            assert_eq!(
                resp.header_str("Sec-WebSocket-Version"),
                Some("13"),
                "{what}"
            );
        }
    }
}

/// `docs/websocket-protocol.md`: "400 | method is not `GET`".
#[test]
fn post_upgrade_is_400() {
    let server = TestServer::new();
    let addr = server.runtime_addr;
    let request = upgrade_request(
        "POST",
        "HTTP/1.1",
        &[
            "Connection: Upgrade",
            "Upgrade: websocket",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            "Content-Length: 0",
        ],
        addr,
    );
    let resp = refused(addr, &request, 400);
    let body = String::from_utf8_lossy(&resp.body);
    assert!(
        body.contains("GET"),
        "explanation does not name GET: {body}"
    );
}

// ---------------------------------------------------------------------------------------------
// 2-4. The real runtimes: WebSocket by default, HTTP when disabled, fallback without packages.
// ---------------------------------------------------------------------------------------------

#[test]
fn node_and_python_answer_over_websocket_by_default() {
    let server = TestServer::new();
    assert_eq!(ws_counters(&server), (0.0, 0.0, 0.0));
    for node in [false, true] {
        let name = unique_name(if node { "wsnode" } else { "wspy" });
        create_real(&server, &name, node, json!({}));
        invoke_real(&server, &name, node, true);
    }
    let (connections, messages_in, fallbacks) = ws_counters(&server);
    assert!(
        connections >= 2.0,
        "one WebSocket connection per function expected, got {connections}"
    );
    // Per function at least two responses and an error (whether `register` counts is checked
    // by `ws_metrics_count_what_the_runtime_sent`).
    assert!(messages_in >= 6.0, "lah_ws_messages_in_total {messages_in}");
    assert_eq!(fallbacks, 0.0, "a runtime fell back to HTTP");
    assert!(server.metric("lah_ws_connections_open") >= 2.0);
}

#[test]
fn lambda_use_websocket_false_uses_http() {
    let server = TestServer::new();
    let env = json!({"Environment": {"Variables": {"LAMBDA_USE_WEBSOCKET": "false"}}});
    for node in [false, true] {
        let name = unique_name(if node { "httpnode" } else { "httppy" });
        create_real(&server, &name, node, env.clone());
        invoke_real(&server, &name, node, true);
    }
    assert_eq!(
        ws_counters(&server),
        (0.0, 0.0, 0.0),
        "(connections, messages in, fallbacks) moved although WebSocket is off"
    );
}

#[test]
fn missing_websocket_packages_fall_back_to_http() {
    let empty = tempfile::tempdir().expect("empty deps dir");
    let server = TestServer::with_config(|c| c.runtime_deps_dir = Some(empty.path().to_path_buf()));
    for node in [false, true] {
        let name = unique_name(if node { "fbnode" } else { "fbpy" });
        // Only the opt-in library clients need the packages; the default clients are built in.
        let env = json!({"Environment": {"Variables": {"LAMBDA_WS_CLIENT": "library"}}});
        create_real(&server, &name, node, env);
        invoke_real(&server, &name, node, false);
    }
    let (connections, _, fallbacks) = ws_counters(&server);
    assert!(
        fallbacks >= 2.0,
        "lah_ws_fallbacks_to_http_total {fallbacks}, expected one per function"
    );
    assert_eq!(connections, 0.0, "a runtime connected without its package");
}

/// `lah_ws_messages_in_total` and `lah_ws_bytes_in_total` count what a runtime sent: here a
/// `register`, a JSON `ping` and a `response`.
#[test]
fn ws_metrics_count_what_the_runtime_sent() {
    let server = TestServer::new();
    let fake = FakeFunction::create(&server, "wsmetrics");
    let pending = invoke_in_background(&server, &fake.name, b"{}", &[]);
    let inst = fake.instance(1);
    let mut client = WsClient::connect(inst.addr, &fake.name);
    client.register(&fake.name, &inst.token, false);
    let (inv, _) = client.invocation();
    client.send_json(&json!({"type": "ping"}));
    assert_eq!(client.recv_json(), json!({"type": "pong"}));
    client.respond(&request_id(&inv), "{}");
    let (resp, _) = finished(pending);
    assert_eq!(expect_json(&resp, 200), json!({}));
    assert_eq!(client.sent_frames, 3);
    let (connections, messages_in, fallbacks) = ws_counters(&server);
    assert_eq!((connections, fallbacks), (1.0, 0.0));
    let bytes_in = server.metric("lah_ws_bytes_in_total");
    let (payload, wire) = (client.sent_payload_bytes, client.sent_wire_bytes);
    let bytes_ok = bytes_in >= payload as f64 && bytes_in <= wire as f64;
    assert!(
        bytes_ok && messages_in == 3.0,
        "after register, ping, response ({payload} payload bytes, {wire} on the wire): \
         lah_ws_bytes_in_total {bytes_in}, lah_ws_messages_in_total {messages_in} (expected 3)"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Connection dropped mid-invocation.
// ---------------------------------------------------------------------------------------------

#[test]
fn dropped_connection_fails_the_invocation_and_a_new_instance_serves() {
    let server = TestServer::new();
    let fake = FakeFunction::create(&server, "wsdrop");
    // Whitespace and escapes that a re-encoding would change.
    let body = r#"{ "order": [3, 1, 2],  "text": "caf\u00e9 \"quoted\" ✓", "n": 1.50 }"#;
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1";
    let client_context = r#"{"custom":{"k":"v"}}"#;
    let cc_b64 = b64(client_context.as_bytes());
    let invoked_at_ms = epoch_ms();
    let pending = invoke_in_background(
        &server,
        &fake.name,
        body.as_bytes(),
        &[
            ("X-Amzn-Trace-Id", trace),
            ("X-Amz-Client-Context", &cc_b64),
        ],
    );
    let first = fake.instance(1);
    assert!(first.token.starts_with("i-"), "{first:?}");

    let mut client = WsClient::connect(first.addr, &fake.name);
    client.register(&fake.name, &first.token, false);
    let (inv, raw) = client.invocation();
    let received_ms = epoch_ms();
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let expected_body: Value = serde_json::from_str(body).expect("test body is JSON");
    assert_eq!(inv["payload"], expected_body, "{raw}");
    assert!(
        raw.contains(body),
        "the payload is not the caller's bytes as sent: {raw}"
    );
    let deadline = inv["deadline_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("deadline_ms is not an integer: {raw}"));
    let timeout_ms = FAKE_TIMEOUT_S * 1000;
    assert!(
        deadline >= invoked_at_ms + timeout_ms && deadline <= received_ms + timeout_ms,
        "deadline_ms {deadline} is not invoke time + {timeout_ms} ms (invoked {invoked_at_ms}, received {received_ms})"
    );
    assert_eq!(inv["invoked_function_arn"], fake.arn.as_str(), "{raw}");
    assert_eq!(inv["trace_id"], trace, "{raw}");
    assert_eq!(inv["client_context"], client_context, "{raw}");
    assert_eq!(inv["cognito_identity"], Value::Null, "{raw}");

    let closed_at = Instant::now();
    drop(client);
    let (resp, answered_at) = finished(pending);
    assert!(
        answered_at.duration_since(closed_at) < DROP_FAILS_WITHIN,
        "the caller waited {:?} after the runtime's connection closed",
        answered_at.duration_since(closed_at)
    );
    let err = expect_function_error(&resp);
    assert_eq!(err["errorType"], "Runtime.ExitError", "{}", describe(&resp));
    assert!(err["errorMessage"].is_string(), "{}", describe(&resp));
    assert_eq!(
        resp.header_str("x-amzn-RequestId"),
        inv["request_id"].as_str(),
        "{}",
        describe(&resp)
    );

    // The instance is gone: the next invocation starts a new one.
    let pending = invoke_in_background(&server, &fake.name, br#"{"again": true}"#, &[]);
    let second = fake.instance(2);
    assert_ne!(second.token, first.token, "the same instance was reused");
    let mut client = WsClient::connect(second.addr, &fake.name);
    client.register(&fake.name, &second.token, false);
    let (inv, _) = client.invocation();
    assert_eq!(inv["payload"], json!({"again": true}), "{inv}");
    client.respond(&request_id(&inv), r#"{"served_by":"second"}"#);
    let (resp, _) = finished(pending);
    assert_eq!(
        resp.header_str("X-Amz-Function-Error"),
        None,
        "{}",
        describe(&resp)
    );
    assert_eq!(expect_json(&resp, 200), json!({"served_by": "second"}));
}

// ---------------------------------------------------------------------------------------------
// 6. Malformed and out-of-order messages.
// ---------------------------------------------------------------------------------------------

#[test]
fn malformed_and_out_of_order_messages() {
    let server = TestServer::new();
    let fake = FakeFunction::create(&server, "wsorder");
    let pending = invoke_in_background(&server, &fake.name, br#"{"n": 1}"#, &[]);
    let inst = fake.instance(1);

    // Anything before register ends the connection.
    let mut early = WsClient::connect(inst.addr, &fake.name);
    early.send_json(&json!({"type": "response", "request_id": "r-1", "payload": {}}));
    early.expect_error_response("NOT_REGISTERED");
    early.expect_close(1008);

    let mut client = WsClient::connect(inst.addr, &fake.name);
    client.register(&fake.name, &inst.token, false);
    let (inv, _) = client.invocation();
    let rid = request_id(&inv);
    assert_eq!(inv["payload"], json!({"n": 1}));

    client.send_text("{not json");
    client.expect_error_response("INVALID_JSON");
    client.send_text("[1, 2, 3]");
    client.expect_error_response("INVALID_JSON");
    client.send_json(&json!({"type": "telepathy"}));
    client.expect_error_response("UNKNOWN_TYPE");
    client.send_json(&json!({"type": "response", "payload": {}}));
    client.expect_error_response("INVALID_MESSAGE");
    client.register(&fake.name, &inst.token, false);
    client.expect_error_response("ALREADY_REGISTERED");
    client.respond("8f2d4a6e-0000-4000-8000-000000000000", r#"{"stolen":true}"#);
    client.expect_error_response("UNEXPECTED_REQUEST_ID");
    client.send_json(&json!({
        "type": "error", "request_id": "not-the-one",
        "error_message": "x", "error_type": "Y",
    }));
    client.expect_error_response("UNEXPECTED_REQUEST_ID");
    client.send_json(&json!({"type": "ping"}));
    assert_eq!(client.recv_json(), json!({"type": "pong"}));
    client.send(OpCode::Control(Control::Ping), b"are-you-there");
    match client.recv() {
        Some(Message::Pong(p)) => assert_eq!(&p[..], b"are-you-there"),
        other => panic!("expected a pong frame, got {other:?}"),
    }

    // The held invocation is still waiting for its answer.
    assert!(!pending.is_finished(), "the invocation ended early");
    client.respond(&rid, r#"{"answered": 1}"#);
    let (resp, _) = finished(pending);
    assert_eq!(
        resp.header_str("X-Amz-Function-Error"),
        None,
        "{}",
        describe(&resp)
    );
    assert_eq!(expect_json(&resp, 200), json!({"answered": 1}));

    // The same connection serves the next invocation.
    let pending = invoke_in_background(&server, &fake.name, br#"{"n": 2}"#, &[]);
    let (inv, _) = client.invocation();
    assert_eq!(inv["payload"], json!({"n": 2}));
    assert_ne!(request_id(&inv), rid);
    client.respond(&request_id(&inv), r#"{"answered": 2}"#);
    let (resp, _) = finished(pending);
    assert_eq!(expect_json(&resp, 200), json!({"answered": 2}));
}

/// RFC 6455 §5.5.2 and the protocol doc: ping frames are answered "at any time".
#[test]
fn ping_frame_before_register_is_answered() {
    let server = TestServer::new();
    let fake = FakeFunction::create(&server, "wsping");
    let pending = invoke_in_background(&server, &fake.name, b"{}", &[]);
    let inst = fake.instance(1);
    let mut client = WsClient::connect(inst.addr, &fake.name);
    client.send(OpCode::Control(Control::Ping), b"early");
    client.register(&fake.name, &inst.token, false);
    match client.recv() {
        Some(Message::Pong(p)) => assert_eq!(&p[..], b"early"),
        other => panic!("expected a pong frame for the early ping, got {other:?}"),
    }
    let (inv, _) = client.invocation();
    client.respond(&request_id(&inv), "null");
    let (resp, _) = finished(pending);
    assert_eq!(&resp.body[..], b"null", "{}", describe(&resp));
}

// ---------------------------------------------------------------------------------------------
// 7. Registering as another instance.
// ---------------------------------------------------------------------------------------------

/// Opens a connection to `addr?fn=url_fn`, registers and expects REGISTER_REJECTED + close 1008.
fn expect_rejected(addr: SocketAddr, url_fn: &str, function: &str, token: &str) {
    let mut client = WsClient::connect(addr, url_fn);
    client.register(function, token, false);
    client.expect_error_response("REGISTER_REJECTED");
    client.expect_close(1008);
}

#[test]
fn register_as_another_instance_is_rejected_and_shared_port_handoff_works() {
    let server = TestServer::new();
    let fa = FakeFunction::create(&server, "wsA");
    let fb = FakeFunction::create(&server, "wsB");
    let pending_a = invoke_in_background(&server, &fa.name, br#"{"for": "A"}"#, &[]);
    let pending_b = invoke_in_background(&server, &fb.name, br#"{"for": "B"}"#, &[]);
    let a = fa.instance(1);
    let b = fb.instance(1);

    // Wrong secrets on A's own address.
    let (id_part, _secret) = a.token.rsplit_once('-').expect("token has a secret");
    expect_rejected(
        a.addr,
        &fa.name,
        &fa.name,
        &format!("{id_part}-0000000000000000"),
    );
    expect_rejected(a.addr, &fa.name, &fa.name, "not-a-token");
    expect_rejected(a.addr, &fa.name, &fa.name, "");
    // A's real token on B's address, claiming either function.
    expect_rejected(b.addr, &fa.name, &fa.name, &a.token);
    expect_rejected(b.addr, &fb.name, &fb.name, &a.token);
    // B's real token on A's address.
    expect_rejected(a.addr, &fb.name, &fb.name, &b.token);
    // The right token with another function's name, and with a ?fn= of another function.
    expect_rejected(a.addr, &fb.name, &fb.name, &a.token);
    expect_rejected(a.addr, &fb.name, &fa.name, &a.token);
    // The shared port checks tokens as well.
    expect_rejected(
        server.runtime_addr,
        &fa.name,
        &fa.name,
        &format!("{id_part}-0000000000000000"),
    );
    expect_rejected(server.runtime_addr, &fb.name, &fb.name, &a.token);

    // A registers on the shared port (handed to its home core), B on its own address.
    let mut ca = WsClient::connect(server.runtime_addr, &fa.name);
    ca.register(&fa.name, &a.token, false);
    let mut cb = WsClient::connect(b.addr, &fb.name);
    cb.register(&fb.name, &b.token, false);
    let (inv_a, _) = ca.invocation();
    assert_eq!(inv_a["payload"], json!({"for": "A"}), "{inv_a}");
    assert_eq!(inv_a["invoked_function_arn"], fa.arn.as_str());
    let (inv_b, _) = cb.invocation();
    assert_eq!(inv_b["payload"], json!({"for": "B"}), "{inv_b}");
    ca.respond(&request_id(&inv_a), r#"{"via":"shared port"}"#);
    cb.respond(&request_id(&inv_b), r#"{"via":"own address"}"#);
    let (resp, _) = finished(pending_a);
    assert_eq!(expect_json(&resp, 200), json!({"via": "shared port"}));
    let (resp, _) = finished(pending_b);
    assert_eq!(expect_json(&resp, 200), json!({"via": "own address"}));

    // The handed-off connection keeps serving A.
    let pending = invoke_in_background(&server, &fa.name, br#"{"again": 1}"#, &[]);
    let (inv, _) = ca.invocation();
    assert_eq!(inv["payload"], json!({"again": 1}));
    ca.respond(&request_id(&inv), r#"{"via":"shared port","n":2}"#);
    let (resp, _) = finished(pending);
    assert_eq!(
        expect_json(&resp, 200),
        json!({"via": "shared port", "n": 2})
    );
}

/// The registration in the upgrade request's headers instead of a `register` message
/// (docs/websocket-protocol.md, "Registering in the upgrade request"): checked exactly as a
/// `register` is, on an instance's own address and on the shared port alike, and the invocation
/// follows the 101 with no message from the runtime.
#[test]
fn registering_in_the_upgrade_request() {
    let server = TestServer::new();
    let fa = FakeFunction::create(&server, "wsHdrA");
    let fb = FakeFunction::create(&server, "wsHdrB");
    let pending_a = invoke_in_background(&server, &fa.name, br#"{"by": "header"}"#, &[]);
    let pending_b = invoke_in_background(&server, &fb.name, br#"{"via": "shared"}"#, &[]);
    let a = fa.instance(1);
    let b = fb.instance(1);
    let by_header = |token: &str| {
        vec![
            format!("Lambda-Runtime-Instance-Id: {token}"),
            "Lambda-Runtime-Name: provided.al2023".to_string(),
            "Lambda-Runtime-Function-Version: $LATEST".to_string(),
        ]
    };
    let (id_part, _secret) = a.token.rsplit_once('-').expect("token has a secret");
    let wrong = format!("{id_part}-0000000000000000");
    // Refused as a `register` would be: a wrong secret, another instance's token, another
    // function's name, no ?fn= at all; on the shared port a wrong secret too.
    for (addr, function, token) in [
        (a.addr, fa.name.as_str(), wrong.as_str()),
        (a.addr, fa.name.as_str(), b.token.as_str()),
        (a.addr, fb.name.as_str(), a.token.as_str()),
        (a.addr, "", a.token.as_str()),
        (server.runtime_addr, fa.name.as_str(), wrong.as_str()),
    ] {
        let (mut client, head) = WsClient::connect_with(addr, function, &by_header(token));
        assert_eq!(
            head_header(&head, "Lambda-Runtime-Registered").as_deref(),
            Some("true"),
            "{head}"
        );
        client.expect_error_response("REGISTER_REJECTED");
        client.expect_close(1008);
    }

    // On its own address: the invocation comes without a `register`; one now is one too many.
    let (mut ca, _) = WsClient::connect_with(a.addr, &fa.name, &by_header(&a.token));
    let (inv_a, _) = ca.invocation();
    assert_eq!(inv_a["payload"], json!({"by": "header"}), "{inv_a}");
    ca.register(&fa.name, &a.token, false);
    ca.expect_error_response("ALREADY_REGISTERED");
    ca.respond(&request_id(&inv_a), r#"{"ok":"a"}"#);
    let (resp, _) = finished(pending_a);
    assert_eq!(expect_json(&resp, 200), json!({"ok": "a"}));

    // On the shared port: handed to the instance's home core like a registered connection.
    let (mut cb, _) = WsClient::connect_with(server.runtime_addr, &fb.name, &by_header(&b.token));
    let (inv_b, _) = cb.invocation();
    assert_eq!(inv_b["payload"], json!({"via": "shared"}), "{inv_b}");
    cb.respond(&request_id(&inv_b), r#"{"ok":"b"}"#);
    let (resp, _) = finished(pending_b);
    assert_eq!(expect_json(&resp, 200), json!({"ok": "b"}));
}

/// A token whose id names a core the server does not have (low byte 0xff with 2 cores).
#[test]
fn shared_port_register_naming_a_missing_core_is_rejected() {
    let server = TestServer::new();
    expect_rejected(
        server.runtime_addr,
        "nobody",
        "nobody",
        "i-000000ff-0123456789abcdef",
    );
}

// ---------------------------------------------------------------------------------------------
// 8. Payload fidelity: nested JSON text, binary envelopes.
// ---------------------------------------------------------------------------------------------

#[test]
fn response_payload_reaches_the_caller_byte_for_byte() {
    let server = TestServer::new();
    let fake = FakeFunction::create(&server, "wsexact");
    let payloads = [
        r#"{"nested": {"list": [1, 2.50, -3e2, true, null, {"deep": ["x", {}]}],
  "escapes": "quote \" backslash \\ slash \/ newline \n tab \t ctrl \u0001",
  "unicode": "héllo wörld ✓ 😀", "escaped_unicode": "\u00e9\ud83d\ude00"},
 "empty": {}, "s": ""}"#,
        r#""just a string""#,
        "[ 1 ,2 ]",
    ];
    let mut client = None;
    for (i, payload) in payloads.iter().enumerate() {
        let pending = invoke_in_background(&server, &fake.name, br#"{"i": 0}"#, &[]);
        let c = client.get_or_insert_with(|| {
            let inst = fake.instance(1);
            let mut c = WsClient::connect(inst.addr, &fake.name);
            c.register(&fake.name, &inst.token, false);
            c
        });
        let (inv, _) = c.invocation();
        let id = Value::from(request_id(&inv));
        c.send_text(&format!(
            r#"{{"type":"response","request_id":{id},"payload":{payload},"headers":{{"X-Amz-Executed-Version":"$LATEST"}}}}"#
        ));
        let (resp, _) = finished(pending);
        assert_eq!(resp.status, 200, "payload {i}: {}", describe(&resp));
        assert_eq!(resp.header_str("X-Amz-Function-Error"), None, "payload {i}");
        assert_eq!(
            String::from_utf8_lossy(&resp.body),
            *payload,
            "payload {i} was altered on the way to the caller"
        );
    }
}

/// Splits a binary envelope into its JSON header and payload bytes.
fn split_envelope(frame: &[u8]) -> (Value, &[u8]) {
    let (len, rest) = frame.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
    assert!(len <= rest.len(), "header length {len} exceeds the frame");
    let (header, payload) = rest.split_at(len);
    let header = serde_json::from_slice(header).unwrap_or_else(|e| {
        panic!(
            "header is not JSON ({e}): {}",
            String::from_utf8_lossy(header)
        )
    });
    (header, payload)
}

fn envelope(header: &Value, payload: &[u8]) -> Vec<u8> {
    let header = header.to_string();
    let mut out = (header.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(payload);
    out
}

#[test]
fn binary_envelope_round_trip() {
    let server = TestServer::new();
    let fake = FakeFunction::create(&server, "wsbin");
    let body = r#"{ "binary": [1, 2, 3], "text": "ünïcödé ✓" }"#;
    let trace = "Root=1-00000000-000000000000000000000001;Sampled=0";
    let pending = invoke_in_background(
        &server,
        &fake.name,
        body.as_bytes(),
        &[("X-Amzn-Trace-Id", trace)],
    );
    let inst = fake.instance(1);
    let mut client = WsClient::connect(inst.addr, &fake.name);
    client.register(&fake.name, &inst.token, true);

    let frame = match client.recv_data() {
        Message::Binary(b) => b,
        other => panic!("expected a binary invocation, got {other:?}"),
    };
    let (header, payload) = split_envelope(&frame);
    assert_eq!(header["type"], "invocation", "{header}");
    assert!(
        header.get("payload").is_none(),
        "header carries payload: {header}"
    );
    assert_eq!(
        payload,
        body.as_bytes(),
        "payload bytes differ from the invoke body"
    );
    assert_eq!(
        header["invoked_function_arn"],
        fake.arn.as_str(),
        "{header}"
    );
    assert_eq!(header["trace_id"], trace, "{header}");
    let deadline = header["deadline_ms"].as_u64().unwrap_or(0);
    let now = epoch_ms();
    assert!(
        deadline > now && deadline <= now + FAKE_TIMEOUT_S * 1000,
        "deadline_ms {deadline}, now {now}"
    );

    // A binary response: the bytes reach the caller untouched (not even checked to be JSON).
    let answer: &[u8] = b"raw \x00\x01\xfe\xff bytes";
    let header_out = json!({"type": "response", "request_id": request_id(&header)});
    client.send(BINARY, &envelope(&header_out, answer));
    let (resp, _) = finished(pending);
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    assert_eq!(
        resp.header_str("X-Amz-Function-Error"),
        None,
        "{}",
        describe(&resp)
    );
    assert_eq!(&resp.body[..], answer, "{}", describe(&resp));

    // A binary error (header only) on the next invocation.
    let pending = invoke_in_background(&server, &fake.name, b"[]", &[]);
    let frame = match client.recv_data() {
        Message::Binary(b) => b,
        other => panic!("expected a binary invocation, got {other:?}"),
    };
    let (header, payload) = split_envelope(&frame);
    assert_eq!(payload, b"[]");
    let error = json!({
        "type": "error", "request_id": request_id(&header),
        "error_message": "broken in binary", "error_type": "BinaryError",
        "stack_trace": ["frame 1"],
    });
    client.send(BINARY, &envelope(&error, b""));
    let (resp, _) = finished(pending);
    let err = expect_function_error(&resp);
    assert_eq!(err["errorType"], "BinaryError", "{}", describe(&resp));
    assert_eq!(
        err["errorMessage"],
        "broken in binary",
        "{}",
        describe(&resp)
    );
}

/// A registered runtime that sends pings and never reads: the server stops reading it once
/// `OUTGOING_FRAMES_MAX` pongs wait unwritten, so the runtime's own writes block (TCP
/// backpressure) instead of the server queueing pongs without bound.
#[test]
fn ping_flood_without_reading_is_held_back() {
    let server = TestServer::new();
    let fake = FakeFunction::create(&server, "wsflood");
    let _pending = invoke_in_background(&server, &fake.name, br#"{"i": 0}"#, &[]);
    let inst = fake.instance(1);
    let mut client = WsClient::connect(inst.addr, &fake.name);
    client.register(&fake.name, &inst.token, false);
    client
        .stream
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    // 400,000 pings of 125 bytes ask for 50 MB of pongs: more than loopback's socket buffers
    // (a few MB each way) can hold for a client that does not read.
    let mut frame = Vec::new();
    ws::encode_client_frame(&mut frame, OpCode::Control(Control::Ping), &[b'p'; 125]);
    let batch: Vec<u8> = frame.repeat(1_000);
    let mut written = 0usize;
    let blocked = loop {
        if written >= 400_000 {
            break false;
        }
        match client.stream.write_all(&batch) {
            Ok(()) => written += 1_000,
            Err(_) => break true,
        }
    };
    assert!(
        blocked,
        "all {written} pings were taken without the client reading a pong"
    );
    let in_flight =
        server.metric("lah_ws_messages_in_total") - server.metric("lah_ws_messages_out_total");
    assert!(
        in_flight < 10_000.0,
        "{in_flight} pongs were queued for a runtime that does not read"
    );
}

/// A WebSocket `response` over 6 MB fails the invocation as an HTTP one does.
#[test]
fn oversized_websocket_response_is_refused_like_http() {
    let server = TestServer::new();
    let fake = FakeFunction::create(&server, "wsbig");
    let pending = invoke_in_background(&server, &fake.name, br#"{"i": 0}"#, &[]);
    let inst = fake.instance(1);
    let mut client = WsClient::connect(inst.addr, &fake.name);
    client.register(&fake.name, &inst.token, false);
    let (inv, _) = client.invocation();
    let big = format!("\"{}\"", "x".repeat(6 * 1024 * 1024 + 1));
    client.respond(&request_id(&inv), &big);
    let (resp, _) = finished(pending);
    let body = expect_function_error(&resp);
    assert_eq!(body["errorType"], "Function.ResponseSizeTooLarge", "{body}");
}
