//! End-to-end tests of response streaming (`InvokeWithResponseStream`): real Node
//! (`awslambda.streamifyResponse`) and Python (generator) functions over the HTTP and WebSocket
//! Runtime APIs, read by a raw client that timestamps each event-stream message as it arrives.
//!
//! What they prove: the first chunk reaches the caller while the handler is still sleeping; a
//! timeout, a crash or a handler error mid-stream ends the stream with `InvokeComplete`'s
//! `ErrorCode`/`ErrorDetails`; a caller that disconnects frees its instance's concurrency
//! without waiting for the handler; a plain Invoke of a streaming handler gets the whole body;
//! a non-streaming handler behind the streaming endpoint answers in one chunk. Every wait is
//! bounded (`common::IO_TIMEOUT` on sockets, explicit limits on polls).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{describe, expect_json, unique_name, TestServer, IO_TIMEOUT};
use lambda_at_home::protocols::eventstream::{self, Message};
use serde_json::{json, Value};

/// The handlers' pause between their two chunks.
const PAUSE: Duration = Duration::from_millis(1500);
/// How much earlier than the end the first chunk must arrive: most of the pause.
const EARLY_BY: Duration = Duration::from_millis(1000);

const NODE_STREAM: &str = r#"
exports.handler = awslambda.streamifyResponse(async (event, responseStream, context) => {
  responseStream.setContentType('text/plain');
  responseStream.write('first;');
  await new Promise((r) => setTimeout(r, event.pause_ms));
  if (event.mode === 'throw') throw new Error('broke mid-stream');
  if (event.mode === 'exit') process.exit(3);
  if (event.mode === 'hang') await new Promise((r) => setTimeout(r, 60000));
  responseStream.write('second:' + context.awsRequestId.length);
  responseStream.end();
});
"#;

const NODE_HTTP_INTEGRATION: &str = r#"
exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 201, headers: { 'x-custom': 'yes' },
  });
  stream.write('body');
  stream.end();
});
"#;

const PY_STREAM: &str = r#"
import os, time

def handler(event, context):
    context.response_content_type = "text/plain"
    yield "first;"
    time.sleep(event["pause_ms"] / 1000)
    mode = event.get("mode")
    if mode == "throw":
        raise ValueError("broke mid-stream")
    if mode == "exit":
        os._exit(3)
    if mode == "hang":
        time.sleep(60)
    yield b"second:%d" % len(context.aws_request_id)
"#;

const PY_PLAIN: &str = r#"
def handler(event, context):
    return {"plain": event}
"#;

/// One message as received, with when it arrived.
struct Received {
    at: Instant,
    message: Message,
}

impl Received {
    fn event_type(&self) -> &str {
        self.message.header(":event-type").unwrap_or_default()
    }
}

/// A streamed answer: status, head fields, and its messages in arrival order.
struct Streamed {
    status: u16,
    head: String,
    body: Vec<u8>,
    sent_at: Instant,
    messages: Vec<Received>,
}

impl Streamed {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    fn payload(&self) -> Vec<u8> {
        self.messages
            .iter()
            .filter(|m| m.event_type() == "PayloadChunk")
            .flat_map(|m| m.message.payload.to_vec())
            .collect()
    }

    fn complete(&self) -> Value {
        let last = self.messages.last().expect("at least one message");
        assert_eq!(last.event_type(), "InvokeComplete", "{}", self.describe());
        serde_json::from_slice(&last.message.payload).expect("InvokeComplete is JSON")
    }

    fn describe(&self) -> String {
        let events: Vec<String> = self
            .messages
            .iter()
            .map(|m| {
                format!(
                    "{} +{:?} {:?}",
                    m.event_type(),
                    m.at - self.sent_at,
                    String::from_utf8_lossy(&m.message.payload)
                )
            })
            .collect();
        format!(
            "{} {}\n{}\n{:?}",
            self.status,
            self.head,
            events.join("\n"),
            String::from_utf8_lossy(&self.body)
        )
    }
}

/// The streaming endpoint of `name`, which may end with `?query`.
fn stream_path(name: &str) -> String {
    match name.split_once('?') {
        Some((name, query)) => {
            format!("/2021-11-15/functions/{name}/response-streaming-invocations?{query}")
        }
        None => format!("/2021-11-15/functions/{name}/response-streaming-invocations"),
    }
}

fn connect(server: &TestServer) -> TcpStream {
    let stream = TcpStream::connect(server.addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

fn send_request(stream: &mut TcpStream, path: &str, payload: &[u8], headers: &[(&str, &str)]) {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n",
        payload.len()
    );
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(payload).unwrap();
}

/// Reads until `buf` holds `\r\n\r\n`; returns the head's text and leaves the rest in `buf`.
fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> String {
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 4);
            return head;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("read the head");
        assert!(n > 0, "connection closed before the head");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Invokes `name` through the streaming endpoint and reads the whole answer, timestamping each
/// event as it is decoded. `stop_after` ends the read (and closes the connection) after that
/// many messages.
fn invoke_stream(
    server: &TestServer,
    name: &str,
    payload: &Value,
    headers: &[(&str, &str)],
    stop_after: Option<usize>,
) -> Streamed {
    let mut stream = connect(server);
    let sent_at = Instant::now();
    send_request(
        &mut stream,
        &stream_path(name),
        payload.to_string().as_bytes(),
        headers,
    );
    let mut wire = Vec::new();
    let head = read_head(&mut stream, &mut wire);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    let mut out = Streamed {
        status,
        head: head.clone(),
        body: Vec::new(),
        sent_at,
        messages: Vec::new(),
    };
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // An ordinary answer (an error before the stream): its Content-Length body.
        let length: usize = out
            .header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while wire.len() < length {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).expect("read the body");
            assert!(n > 0, "closed mid-body");
            wire.extend_from_slice(&chunk[..n]);
        }
        out.body = wire[..length].to_vec();
        return out;
    }
    // De-chunk by hand, decoding messages as soon as their bytes are there.
    let mut events = BytesMut::new();
    loop {
        // A whole size line, then that many bytes and CRLF.
        let line_end = loop {
            if let Some(p) = wire.windows(2).position(|w| w == b"\r\n") {
                break p;
            }
            read_more(&mut stream, &mut wire);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&wire[..line_end]).unwrap(), 16)
            .expect("chunk size");
        if size == 0 {
            break;
        }
        while wire.len() < line_end + 2 + size + 2 {
            read_more(&mut stream, &mut wire);
        }
        events.extend_from_slice(&wire[line_end + 2..line_end + 2 + size]);
        wire.drain(..line_end + 2 + size + 2);
        while let Some(message) = eventstream::decode(&mut events).expect("valid event stream") {
            out.messages.push(Received {
                at: Instant::now(),
                message,
            });
            if stop_after.is_some_and(|n| out.messages.len() >= n) {
                return out; // drops (closes) the connection mid-stream
            }
        }
    }
    out
}

fn read_more(stream: &mut TcpStream, wire: &mut Vec<u8>) {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).expect("read the stream");
    assert!(n > 0, "connection closed mid-stream");
    wire.extend_from_slice(&chunk[..n]);
}

fn create_streaming(server: &TestServer, node: bool, extra: Value) -> String {
    let name = unique_name(if node { "stream-node" } else { "stream-py" });
    let (runtime, handler, file, source) = if node {
        ("nodejs20.x", "index.handler", "index.js", NODE_STREAM)
    } else {
        (
            "python3.12",
            "lambda_function.handler",
            "lambda_function.py",
            PY_STREAM,
        )
    };
    let resp = server.create_function(
        &name,
        runtime,
        handler,
        &[(file, source.as_bytes(), 0o644)],
        extra,
    );
    expect_json(&resp, 201);
    name
}

/// The first chunk arrives while the handler sleeps; the rest after; headers as AWS's.
fn streams_as_produced(node: bool, ws: bool) {
    let server = TestServer::with_config(|c| c.use_websocket = ws);
    let name = create_streaming(&server, node, json!({ "Timeout": 10 }));
    // Once cold, once warm: both stream.
    for _ in 0..2 {
        let got = invoke_stream(
            &server,
            &name,
            &json!({ "pause_ms": PAUSE.as_millis() as u64 }),
            &[("X-Amz-Log-Type", "Tail")],
            None,
        );
        assert_eq!(got.status, 200, "{}", got.describe());
        assert_eq!(got.header("content-type"), Some("text/plain"));
        assert_eq!(got.header("x-amz-executed-version"), Some("$LATEST"));
        let chunks: Vec<&Received> = got
            .messages
            .iter()
            .filter(|m| m.event_type() == "PayloadChunk")
            .collect();
        assert!(chunks.len() >= 2, "{}", got.describe());
        assert_eq!(
            &chunks[0].message.payload[..],
            b"first;",
            "{}",
            got.describe()
        );
        assert_eq!(
            chunks[0].message.header(":content-type"),
            Some("application/octet-stream")
        );
        assert_eq!(got.payload(), b"first;second:36", "{}", got.describe());
        let end = got.messages.last().unwrap();
        assert!(
            chunks[0].at + EARLY_BY <= end.at,
            "the first chunk did not arrive well before the end:\n{}",
            got.describe()
        );
        let complete = got.complete();
        assert!(complete.get("ErrorCode").is_none(), "{complete}");
        let log = common::b64_decode(complete["LogResult"].as_str().expect("LogResult"));
        let log = String::from_utf8_lossy(&log);
        assert!(
            log.contains("START RequestId:") && log.contains("REPORT RequestId:"),
            "{log}"
        );
    }
    common::assert_transport(&server, ws);
}

#[test]
fn node_streams_over_http() {
    streams_as_produced(true, false);
}

#[test]
fn node_streams_over_websocket() {
    streams_as_produced(true, true);
}

#[test]
fn python_streams_over_http() {
    streams_as_produced(false, false);
}

#[test]
fn python_streams_over_websocket() {
    streams_as_produced(false, true);
}

/// A failure mid-stream: the chunks sent so far, then `InvokeComplete` with the error.
fn fails_mid_stream(node: bool, ws: bool, mode: &str, timeout_s: u32, code: &str, detail: &str) {
    let server = TestServer::with_config(|c| c.use_websocket = ws);
    let name = create_streaming(&server, node, json!({ "Timeout": timeout_s }));
    let got = invoke_stream(
        &server,
        &name,
        &json!({ "pause_ms": 200, "mode": mode }),
        &[],
        None,
    );
    assert_eq!(got.status, 200, "{}", got.describe());
    assert_eq!(got.payload(), b"first;", "{}", got.describe());
    let complete = got.complete();
    assert_eq!(complete["ErrorCode"], code, "{}", got.describe());
    let details = complete["ErrorDetails"].as_str().unwrap_or_default();
    assert!(details.contains(detail), "{}", got.describe());
    // The function still serves afterwards (a new instance where the old one died).
    let again = invoke_stream(&server, &name, &json!({ "pause_ms": 0 }), &[], None);
    assert_eq!(again.payload(), b"first;second:36", "{}", again.describe());
}

#[test]
fn timeout_mid_stream_ends_with_sandbox_timedout() {
    fails_mid_stream(
        false,
        false,
        "hang",
        2,
        "Sandbox.Timedout",
        "Task timed out after 2.00 seconds",
    );
    fails_mid_stream(
        true,
        true,
        "hang",
        2,
        "Sandbox.Timedout",
        "Task timed out after 2.00 seconds",
    );
}

#[test]
fn crash_mid_stream_ends_with_runtime_exit_error() {
    fails_mid_stream(
        false,
        true,
        "exit",
        10,
        "Runtime.ExitError",
        "exit status 3",
    );
    fails_mid_stream(
        true,
        false,
        "exit",
        10,
        "Runtime.ExitError",
        "exit status 3",
    );
}

#[test]
fn handler_error_mid_stream_is_reported() {
    fails_mid_stream(false, false, "throw", 10, "ValueError", "broke mid-stream");
    fails_mid_stream(true, true, "throw", 10, "Error", "broke mid-stream");
}

/// A caller that leaves mid-stream frees the instance's concurrency at once: with a reserved
/// concurrency of 1 a second invocation succeeds long before the first handler would end.
fn disconnect_frees_the_instance(node: bool, ws: bool) {
    let server = TestServer::with_config(|c| c.use_websocket = ws);
    let name = create_streaming(&server, node, json!({ "Timeout": 60 }));
    let resp = server.call_json(
        "PUT",
        &format!("/2017-10-31/functions/{name}/concurrency"),
        &json!({ "ReservedConcurrentExecutions": 1 }),
    );
    expect_json(&resp, 200);
    let started = Instant::now();
    let first = invoke_stream(
        &server,
        &name,
        &json!({ "pause_ms": 0, "mode": "hang" }),
        &[],
        Some(1),
    );
    assert_eq!(first.payload(), b"first;", "{}", first.describe());
    // The caller is gone; the handler sleeps for a minute. The next invocation gets through.
    let deadline = Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let resp = server.invoke(&name, br#"{"pause_ms": 0}"#, &[]);
        if resp.status == 200 {
            break resp;
        }
        assert_eq!(resp.status, 429, "{}", describe(&resp));
        assert!(Instant::now() < deadline, "the instance was never freed");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(
        &answer.body[..],
        b"first;second:36",
        "{}",
        describe(&answer)
    );
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[test]
fn client_disconnect_frees_the_instance_http() {
    disconnect_frees_the_instance(false, false);
}

#[test]
fn client_disconnect_frees_the_instance_websocket() {
    disconnect_frees_the_instance(true, true);
}

/// A plain Invoke of a streaming handler gets the whole response, as on AWS.
#[test]
fn plain_invoke_of_a_streaming_handler_is_buffered() {
    for ws in [false, true] {
        let server = TestServer::with_config(|c| c.use_websocket = ws);
        for node in [true, false] {
            let name = create_streaming(&server, node, json!({ "Timeout": 10 }));
            let resp = server.invoke(&name, br#"{"pause_ms": 10}"#, &[]);
            assert_eq!(resp.status, 200, "{}", describe(&resp));
            assert_eq!(&resp.body[..], b"first;second:36", "{}", describe(&resp));
            let resp = server.invoke(&name, br#"{"pause_ms": 10, "mode": "throw"}"#, &[]);
            let error = common::expect_function_error(&resp);
            assert!(
                error["errorMessage"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("broke mid-stream"),
                "{error}"
            );
        }
    }
}

/// An ordinary handler behind the streaming endpoint answers in one chunk; errors before the
/// stream are AWS's errors; DryRun is 204.
#[test]
fn non_streaming_handler_and_errors_on_the_streaming_endpoint() {
    let server = TestServer::new();
    let name = unique_name("stream-plain");
    server.create_python(&name, PY_PLAIN, json!({}));
    let got = invoke_stream(&server, &name, &json!({"a": 1}), &[], None);
    assert_eq!(got.status, 200, "{}", got.describe());
    let payload: Value = serde_json::from_slice(&got.payload()).expect("JSON");
    assert_eq!(payload, json!({"plain": {"a": 1}}));
    assert!(got.complete().get("ErrorCode").is_none());

    // Qualifier: a published version runs, and says so.
    let resp = server.call_json(
        "POST",
        &format!("/2015-03-31/functions/{name}/versions"),
        &json!({}),
    );
    assert_eq!(expect_json(&resp, 201)["Version"], "1");
    let qualified = invoke_stream(
        &server,
        &format!("{name}?Qualifier=1"),
        &json!({}),
        &[],
        None,
    );
    assert_eq!(qualified.status, 200, "{}", qualified.describe());
    assert_eq!(qualified.header("x-amz-executed-version"), Some("1"));
    let by_arn_suffix = invoke_stream(&server, &format!("{name}:1"), &json!({}), &[], None);
    assert_eq!(by_arn_suffix.header("x-amz-executed-version"), Some("1"));

    let missing = invoke_stream(&server, "no-such-function", &json!({}), &[], None);
    assert_eq!(missing.status, 404, "{}", missing.describe());
    let body: Value = serde_json::from_slice(&missing.body).unwrap();
    assert_eq!(body["Type"], "User");
    assert!(missing.head.contains("ResourceNotFoundException"));

    let dry = invoke_stream(
        &server,
        &name,
        &json!({}),
        &[("X-Amz-Invocation-Type", "DryRun")],
        None,
    );
    assert_eq!(dry.status, 204, "{}", dry.describe());
    let event = invoke_stream(
        &server,
        &name,
        &json!({}),
        &[("X-Amz-Invocation-Type", "Event")],
        None,
    );
    assert_eq!(event.status, 400, "{}", event.describe());
}

/// Node's `HttpResponseStream.from`: its content type, and the prelude + 8 NUL bytes, are
/// passed through untouched.
#[test]
fn node_http_integration_prelude_passes_through() {
    let server = TestServer::new();
    let name = unique_name("stream-http-int");
    let resp = server.create_function(
        &name,
        "nodejs20.x",
        "index.handler",
        &[("index.js", NODE_HTTP_INTEGRATION.as_bytes(), 0o644)],
        json!({}),
    );
    expect_json(&resp, 201);
    let got = invoke_stream(&server, &name, &json!({}), &[], None);
    assert_eq!(
        got.header("content-type"),
        Some("application/vnd.awslambda.http-integration-response"),
        "{}",
        got.describe()
    );
    let payload = got.payload();
    let nul = payload
        .windows(8)
        .position(|w| w == [0u8; 8])
        .expect("the 8-NUL delimiter");
    let prelude: Value = serde_json::from_slice(&payload[..nul]).expect("JSON prelude");
    assert_eq!(
        prelude,
        json!({"statusCode": 201, "headers": {"x-custom": "yes"}})
    );
    assert_eq!(&payload[nul + 8..], b"body");
}

const PY_LARGE: &str = r#"
def handler(event, context):
    chunk = b"x" * (1024 * 1024)
    for _ in range(event["mib"]):
        yield chunk
"#;

/// A stream past 20 MiB ends with `Function.ResponseSizeTooLarge` (what came before it is
/// delivered); a plain Invoke is held to 6 MB. The instance keeps serving afterwards.
#[test]
fn oversized_streams_end_with_response_size_too_large() {
    for ws in [false, true] {
        let server = TestServer::with_config(|c| c.use_websocket = ws);
        let name = unique_name("stream-large");
        server.create_python(&name, PY_LARGE, json!({ "Timeout": 30 }));
        let got = invoke_stream(&server, &name, &json!({ "mib": 21 }), &[], None);
        assert_eq!(got.status, 200, "{}", got.head);
        let complete = got.complete();
        assert_eq!(
            complete["ErrorCode"], "Function.ResponseSizeTooLarge",
            "{complete}"
        );
        let delivered = got.payload().len();
        assert!(
            (19 * 1024 * 1024..=20 * 1024 * 1024).contains(&delivered),
            "{delivered} bytes delivered"
        );
        let resp = server.invoke(&name, br#"{"mib": 7}"#, &[]);
        let error = common::expect_function_error(&resp);
        assert_eq!(
            error["errorType"], "Function.ResponseSizeTooLarge",
            "{error}"
        );
        // Within the limits, the same function answers whole.
        let small = invoke_stream(&server, &name, &json!({ "mib": 2 }), &[], None);
        assert_eq!(small.payload().len(), 2 * 1024 * 1024);
        assert!(small.complete().get("ErrorCode").is_none());
    }
}

/// An HTTP/1.0 caller (no chunked coding) gets the event stream delimited by the close.
#[test]
fn http_1_0_caller_gets_the_stream_until_close() {
    let server = TestServer::new();
    let name = create_streaming(&server, false, json!({}));
    let mut stream = connect(&server);
    let payload = br#"{"pause_ms": 0}"#;
    let request = format!(
        "POST {} HTTP/1.0\r\nContent-Length: {}\r\n\r\n",
        stream_path(&name),
        payload.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    stream.write_all(payload).unwrap();
    let mut wire = Vec::new();
    stream
        .read_to_end(&mut wire)
        .expect("read until the server closes");
    let mut rest = wire.clone();
    let head = read_head(&mut stream, &mut rest);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "{head}"
    );
    assert!(head.contains("Connection: close"), "{head}");
    let mut events = BytesMut::from(&rest[..]);
    let mut payload = Vec::new();
    let mut last = None;
    while let Some(m) = eventstream::decode(&mut events).expect("valid event stream") {
        if m.header(":event-type") == Some("PayloadChunk") {
            payload.extend_from_slice(&m.payload);
        }
        last = m.header(":event-type").map(str::to_string);
    }
    assert!(events.is_empty());
    assert_eq!(payload, b"first;second:36");
    assert_eq!(last.as_deref(), Some("InvokeComplete"));
}
