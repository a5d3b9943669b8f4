//! The agent's translation between AWS's HTTP Runtime API (2018-06-01, what the runtime in the
//! instance speaks to the agent) and the WebSocket Runtime API (what the agent speaks to the
//! server, `docs/websocket-protocol.md`, binary envelopes). Pure: no I/O, no state.
//!
//! Runs on whichever agent thread serves the runtime's request or reads the link. Invariants:
//! an invocation's payload and a response's body are carried as raw bytes, never re-serialised
//! (binary envelopes both ways); the headers of `/next` are exactly AWS's
//! (`Lambda-Runtime-Aws-Request-Id`, `-Deadline-Ms`, `-Invoked-Function-Arn`, `-Trace-Id`,
//! `-Client-Context` when the caller sent one).

use serde_json::{json, Value};

/// Length of the big-endian header length that opens a binary envelope.
const BINARY_LEN_BYTES: usize = 4;
/// Largest JSON header of an envelope the agent accepts (the server's own bound).
const BINARY_HEADER_BYTES_MAX: usize = 64 * 1024;

/// One invocation as the server sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub request_id: String,
    pub deadline_ms: u64,
    pub invoked_function_arn: String,
    pub trace_id: String,
    pub client_context: Option<String>,
    pub payload: Vec<u8>,
}

/// A Runtime API route the runtime asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Next,
    Response(String),
    Error(String),
    InitError,
    NotFound,
}

/// Which route `method` `path` is (AWS's paths; a query string is ignored).
pub fn route(method: &str, path: &str) -> Route {
    let path = path.split('?').next().unwrap_or_default();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (method, segs.as_slice()) {
        ("GET", ["2018-06-01", "runtime", "invocation", "next"]) => Route::Next,
        ("POST", ["2018-06-01", "runtime", "invocation", id, "response"]) => {
            Route::Response(id.to_string())
        }
        ("POST", ["2018-06-01", "runtime", "invocation", id, "error"]) => {
            Route::Error(id.to_string())
        }
        ("POST", ["2018-06-01", "runtime", "init", "error"]) => Route::InitError,
        _ => Route::NotFound,
    }
}

/// What the server sent that the agent acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    Invocation(Invocation),
    /// An `error_response`: the server refused something the agent sent.
    ErrorResponse(String),
    /// Anything else (the server sends nothing else today); ignored.
    Other,
}

/// Parses a binary frame from the server (an `invocation` envelope).
pub fn parse_binary(frame: &[u8]) -> Result<ServerMessage, String> {
    let Some((len, rest)) = frame.split_first_chunk::<BINARY_LEN_BYTES>() else {
        return Err("binary frame shorter than its header length".into());
    };
    let header_bytes = u32::from_be_bytes(*len) as usize;
    if header_bytes > BINARY_HEADER_BYTES_MAX || header_bytes > rest.len() {
        return Err(format!(
            "binary header of {header_bytes} bytes does not fit"
        ));
    }
    let header: Value = serde_json::from_slice(&rest[..header_bytes])
        .map_err(|e| format!("binary header is not JSON: {e}"))?;
    message_of(&header, rest[header_bytes..].to_vec())
}

/// Parses a text frame from the server (an `invocation` with a JSON payload, or an
/// `error_response`).
pub fn parse_text(text: &[u8]) -> Result<ServerMessage, String> {
    let value: Value =
        serde_json::from_slice(text).map_err(|e| format!("text frame is not JSON: {e}"))?;
    let payload = match value.get("payload") {
        Some(p) => serde_json::to_vec(p).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    message_of(&value, payload)
}

fn message_of(header: &Value, payload: Vec<u8>) -> Result<ServerMessage, String> {
    let text = |key: &str| -> Result<String, String> {
        header
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("{key} missing"))
    };
    match header.get("type").and_then(Value::as_str) {
        Some("invocation") => Ok(ServerMessage::Invocation(Invocation {
            request_id: text("request_id")?,
            deadline_ms: header
                .get("deadline_ms")
                .and_then(Value::as_u64)
                .ok_or("deadline_ms missing")?,
            invoked_function_arn: text("invoked_function_arn")?,
            trace_id: text("trace_id")?,
            client_context: header
                .get("client_context")
                .and_then(Value::as_str)
                .map(str::to_string),
            payload,
        })),
        Some("error_response") => Ok(ServerMessage::ErrorResponse(format!(
            "{}: {}",
            header.get("code").and_then(Value::as_str).unwrap_or("?"),
            header.get("message").and_then(Value::as_str).unwrap_or("")
        ))),
        _ => Ok(ServerMessage::Other),
    }
}

/// The whole HTTP response to `GET /next` for `inv`: AWS's headers and the payload.
pub fn next_response(inv: &Invocation) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
         Lambda-Runtime-Aws-Request-Id: {}\r\nLambda-Runtime-Deadline-Ms: {}\r\n\
         Lambda-Runtime-Invoked-Function-Arn: {}\r\nLambda-Runtime-Trace-Id: {}\r\n",
        header_safe(&inv.request_id),
        inv.deadline_ms,
        header_safe(&inv.invoked_function_arn),
        header_safe(&inv.trace_id),
    );
    if let Some(context) = &inv.client_context {
        head.push_str(&format!(
            "Lambda-Runtime-Client-Context: {}\r\n",
            header_safe(context)
        ));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", inv.payload.len()));
    let mut out = head.into_bytes();
    out.extend_from_slice(&inv.payload);
    out
}

/// A small JSON answer to the runtime (`202 {"status":"OK"}`, or an error in the Runtime API's
/// shape).
pub fn simple_response(status: u16, reason: &str, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// `202 Accepted` with AWS's body.
pub fn accepted() -> Vec<u8> {
    simple_response(202, "Accepted", &json!({"status": "OK"}))
}

/// An error answer in the Runtime API's shape.
pub fn runtime_error(status: u16, reason: &str, error_type: &str, message: &str) -> Vec<u8> {
    simple_response(
        status,
        reason,
        &json!({"errorMessage": message, "errorType": error_type}),
    )
}

/// Header values come from the server's ids and the caller's strings; a CR or LF would end the
/// header early, so they are dropped.
fn header_safe(value: &str) -> String {
    value.chars().filter(|c| *c != '\r' && *c != '\n').collect()
}

/// `[u32 BE header length][header][bytes]`.
pub fn envelope(header: &Value, bytes: &[u8]) -> Vec<u8> {
    let header = header.to_string();
    let mut out = Vec::with_capacity(BINARY_LEN_BYTES + header.len() + bytes.len());
    out.extend_from_slice(&(header.len() as u32).to_be_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    out
}

/// The `response` to `request_id`: the runtime's body as is.
pub fn response_envelope(request_id: &str, body: &[u8]) -> Vec<u8> {
    envelope(&json!({"type": "response", "request_id": request_id}), body)
}

/// One piece of a streamed response.
pub fn chunk_envelope(request_id: &str, content_type: Option<&str>, bytes: &[u8]) -> Vec<u8> {
    let mut header = json!({"type": "response_chunk", "request_id": request_id});
    if let Some(ct) = content_type {
        header["content_type"] = json!(ct);
    }
    envelope(&header, bytes)
}

/// Output of the runtime.
pub fn log_envelope(bytes: &[u8]) -> Vec<u8> {
    envelope(&json!({"type": "log"}), bytes)
}

/// The function error a runtime posts (`/error` body: AWS's `errorMessage`, `errorType`,
/// `stackTrace`), as the `error` message; a body that is not such an object becomes the
/// message, with the `Lambda-Runtime-Function-Error-Type` header (or `Unhandled`) as type.
pub fn error_message(request_id: &str, body: &[u8], error_type_header: Option<&str>) -> Value {
    let (message, error_type, stack) = error_fields(body, error_type_header);
    json!({
        "type": "error",
        "request_id": request_id,
        "error_message": message,
        "error_type": error_type,
        "stack_trace": stack,
    })
}

/// The end of a streamed response, with the handler's error when the trailers name one
/// (`Lambda-Runtime-Function-Error-Type`, `-Error-Body` in base64).
pub fn end_message(
    request_id: &str,
    error_type: Option<&str>,
    error_body_base64: Option<&str>,
) -> Value {
    let mut msg = json!({"type": "response_end", "request_id": request_id});
    if let Some(error_type) = error_type {
        use base64::Engine as _;
        let body = error_body_base64
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .unwrap_or_default();
        let (message, body_type, stack) = error_fields(&body, Some(error_type));
        msg["error_type"] = json!(body_type);
        msg["error_message"] = json!(message);
        msg["stack_trace"] = json!(stack);
    }
    msg
}

fn error_fields(body: &[u8], error_type_header: Option<&str>) -> (String, String, Vec<String>) {
    let fallback_type = error_type_header.unwrap_or("Unhandled").to_string();
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => {
            let message = o
                .get("errorMessage")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let error_type = o
                .get("errorType")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or(fallback_type);
            let stack = o
                .get("stackTrace")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            (message, error_type, stack)
        }
        _ => (
            String::from_utf8_lossy(body).into_owned(),
            fallback_type,
            Vec::new(),
        ),
    }
}

/// The `register` the agent sends for its instance (binary envelopes asked for).
pub fn register_message(function: &str, runtime: &str, version: &str, token: &str) -> Value {
    json!({
        "type": "register",
        "function_name": function,
        "runtime": runtime,
        "version": version,
        "instance_id": token,
        "binary": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use lambda_at_home::protocols::runtime_messages::{
        invocation_binary_header, parse_client_binary, parse_client_message, ClientMessage,
    };

    #[test]
    fn routes_are_aws_paths() {
        assert_eq!(
            route("GET", "/2018-06-01/runtime/invocation/next"),
            Route::Next
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/abc/response"),
            Route::Response("abc".into())
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/abc/error"),
            Route::Error("abc".into())
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/init/error"),
            Route::InitError
        );
        assert_eq!(
            route("POST", "/2018-06-01/runtime/invocation/next"),
            Route::NotFound
        );
        assert_eq!(route("GET", "/other"), Route::NotFound);
    }

    /// The server's own encoder produces what the agent parses, and `/next` carries AWS's headers.
    #[test]
    fn server_invocation_becomes_next_response() {
        let mut frame =
            invocation_binary_header("req-1", 1_700_000_000_000, "arn:f", "Root=1", None);
        frame.extend_from_slice(br#"{"k":1}"#);
        let ServerMessage::Invocation(inv) = parse_binary(&frame).unwrap() else {
            panic!("not an invocation");
        };
        assert_eq!(inv.request_id, "req-1");
        assert_eq!(inv.payload, br#"{"k":1}"#);
        let http = String::from_utf8(next_response(&inv)).unwrap();
        assert!(http.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(http.contains("Lambda-Runtime-Aws-Request-Id: req-1\r\n"));
        assert!(http.contains("Lambda-Runtime-Deadline-Ms: 1700000000000\r\n"));
        assert!(http.contains("Lambda-Runtime-Invoked-Function-Arn: arn:f\r\n"));
        assert!(http.contains("Lambda-Runtime-Trace-Id: Root=1\r\n"));
        assert!(!http.contains("Client-Context"));
        assert!(http.ends_with("Content-Length: 7\r\n\r\n{\"k\":1}"));

        let mut with_context = invocation_binary_header("r", 1, "a", "t", Some("{\"custom\":{}}"));
        with_context.extend_from_slice(b"{}");
        let ServerMessage::Invocation(inv) = parse_binary(&with_context).unwrap() else {
            panic!("not an invocation");
        };
        let http = String::from_utf8(next_response(&inv)).unwrap();
        assert!(http.contains("Lambda-Runtime-Client-Context: {\"custom\":{}}\r\n"));
    }

    /// What the agent sends, the server's own parser accepts as the same answer.
    #[test]
    fn runtime_answers_become_server_messages() {
        let frame = Bytes::from(response_envelope("req-1", b"\"hi\""));
        assert!(matches!(
            parse_client_binary(&frame),
            Ok(ClientMessage::Response { request_id, payload, .. })
                if request_id == "req-1" && payload == Bytes::from_static(b"\"hi\"")
        ));
        let body = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":["a","b"]}"#;
        let text = Bytes::from(error_message("req-1", body, None).to_string());
        assert_eq!(
            parse_client_message(&text),
            Ok(ClientMessage::Error {
                request_id: "req-1".into(),
                error_message: "boom".into(),
                error_type: "ValueError".into(),
                stack_trace: vec!["a".into(), "b".into()],
                headers: Vec::new(),
                init_error: false,
            })
        );
        let mut init = error_message("req-1", body, None);
        init["init_error"] = Value::Bool(true);
        assert!(matches!(
            parse_client_message(&Bytes::from(init.to_string())),
            Ok(ClientMessage::Error {
                init_error: true,
                ..
            })
        ));
        let text = Bytes::from(error_message("r", b"not json", Some("Custom")).to_string());
        assert!(matches!(
            parse_client_message(&text),
            Ok(ClientMessage::Error { error_message, error_type, .. })
                if error_message == "not json" && error_type == "Custom"
        ));
        let log = Bytes::from(log_envelope(b"line\n"));
        assert_eq!(
            parse_client_binary(&log),
            Ok(ClientMessage::Log {
                data: Bytes::from_static(b"line\n")
            })
        );
        let chunk = Bytes::from(chunk_envelope("r", Some("text/plain"), b"part"));
        assert!(matches!(
            parse_client_binary(&chunk),
            Ok(ClientMessage::ResponseChunk { data, content_type: Some(ct), .. })
                if data == Bytes::from_static(b"part") && ct == "text/plain"
        ));
        let end = Bytes::from(
            end_message("r", Some("E"), Some("eyJlcnJvck1lc3NhZ2UiOiJ4In0=")).to_string(),
        );
        assert!(matches!(
            parse_client_message(&end),
            Ok(ClientMessage::ResponseEnd { error_type: Some(t), error_message: Some(m), .. })
                if t == "E" && m == "x"
        ));
        let register =
            Bytes::from(register_message("f", "python3.12", "$LATEST", "i-1-2").to_string());
        assert!(matches!(
            parse_client_message(&register),
            Ok(ClientMessage::Register(r)) if r.binary && r.instance_id == "i-1-2"
        ));
    }

    #[test]
    fn malformed_server_frames_are_errors() {
        assert!(parse_binary(&[0, 0]).is_err());
        assert!(parse_binary(&[0, 0, 0, 9, b'{']).is_err());
        assert!(parse_text(b"nope").is_err());
        assert_eq!(
            parse_text(br#"{"type":"error_response","code":"X","message":"m"}"#),
            Ok(ServerMessage::ErrorResponse("X: m".into()))
        );
        assert_eq!(parse_text(br#"{"type":"pong"}"#), Ok(ServerMessage::Other));
    }

    #[test]
    fn header_values_cannot_break_the_head() {
        let inv = Invocation {
            request_id: "r".into(),
            deadline_ms: 1,
            invoked_function_arn: "a".into(),
            trace_id: "t\r\nX-Injected: 1".into(),
            client_context: None,
            payload: Vec::new(),
        };
        let http = String::from_utf8(next_response(&inv)).unwrap();
        assert!(!http.contains("\r\nX-Injected"));
    }
}
