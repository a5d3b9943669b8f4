//! The JSON messages of the WebSocket Runtime API (described in full in
//! `docs/websocket-protocol.md`): parsing runtime messages, encoding server ones.
//! No I/O, no state. Payloads are never re-serialised: a response's `payload` is sliced out of
//! the received frame (zero copy); an invocation is written as `[prefix][payload][suffix]`.
//! `deadline_ms` is the ABSOLUTE deadline in Unix epoch milliseconds, identical to AWS's
//! `Lambda-Runtime-Deadline-Ms` header, not a duration.
//! Binary envelope (our addition to the original design, for large payloads; asked for with
//! `"binary": true` in `register`): a binary frame is `[u32 big-endian header_len][header: the
//! same JSON message without "payload"][raw payload bytes]`, used for `invocation` (server to
//! runtime) and `response`/`error`/`response_chunk` (runtime to server). Binary payload bytes
//! are opaque, never parsed.
//! Response streaming (our addition): `response_chunk` (`data`: base64 in a text frame, raw
//! bytes in a binary envelope) any number of times, then `response_end`, optionally with the
//! handler's error; see `docs/streaming.md`.
//! Logs (our addition, for instances whose output the server cannot read from a pipe: the
//! in-instance agent of remote instances, `docs/swarm.md`): `log` with `data` (base64 in a text
//! frame, raw bytes in a binary envelope).

use std::borrow::Cow;

use bytes::Bytes;
use sonic_rs::{JsonType, JsonValueTrait, LazyValue};

/// A JSON `ping` (a runtime may send it; the server never sends one unprompted), and the server's
/// answer to it.
pub const PING: &[u8] = br#"{"type":"ping"}"#;
pub const PONG: &[u8] = br#"{"type":"pong"}"#;
/// Largest JSON header of a binary envelope; headers only carry ids and a few strings.
pub const BINARY_HEADER_BYTES_MAX: usize = 64 * 1024;
/// Length of the big-endian `header_len` that opens a binary envelope.
const BINARY_LEN_BYTES: usize = 4;
/// Starting capacity of an invocation envelope's prefix or binary header: ids, deadline, ARN and
/// trace id fit without growing it in the common case.
const ENVELOPE_HEAD_BYTES: usize = 256;
// The error messages of `parse_client_binary` are static text that spells out these two limits:
// changing a limit fails the build here until its message is changed with it.
const _: () = assert!(BINARY_HEADER_BYTES_MAX == 64 * 1024, "message says 64 KiB");
const _: () = assert!(BINARY_LEN_BYTES == 4, "message says 4-byte");

/// The `code` values of `error_response` messages. Codes marked fatal are followed by a close
/// frame with status 1008 (policy violation); after the others the connection stays usable.
pub mod error_code {
    /// The text frame is not valid JSON, or not a JSON object.
    pub const INVALID_JSON: &str = "INVALID_JSON";
    /// A field is missing, has the wrong JSON type or appears twice, or a binary envelope is
    /// malformed.
    pub const INVALID_MESSAGE: &str = "INVALID_MESSAGE";
    /// `type` is not one a runtime may send.
    pub const UNKNOWN_TYPE: &str = "UNKNOWN_TYPE";
    /// Fatal: the first message was not a valid `register`.
    pub const NOT_REGISTERED: &str = "NOT_REGISTERED";
    /// Fatal: `register` names another function or an unknown `instance_id`.
    pub const REGISTER_REJECTED: &str = "REGISTER_REJECTED";
    /// A second `register` on a registered connection; it is ignored.
    pub const ALREADY_REGISTERED: &str = "ALREADY_REGISTERED";
    /// A `response`/`error` whose `request_id` is not the invocation this connection holds.
    pub const UNEXPECTED_REQUEST_ID: &str = "UNEXPECTED_REQUEST_ID";
}

/// A message from a runtime, as parsed from a text frame or a binary envelope.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Register(Register),
    /// `payload` is the raw JSON text of `"payload"` (text frame) or the raw bytes after the
    /// header (binary envelope), sliced from the frame without a copy.
    Response {
        request_id: String,
        payload: Bytes,
        headers: Vec<(String, String)>,
    },
    Error {
        request_id: String,
        error_message: String,
        error_type: String,
        stack_trace: Vec<String>,
        headers: Vec<(String, String)>,
        /// `"init_error": true` (our addition, sent by `lah-agent`): the error is the runtime's
        /// init failure, answered on the invocation that started the instance; the instance
        /// ends with it and takes no further invocation.
        init_error: bool,
    },
    /// One piece of a streamed response (our addition for response streaming): `data` is the
    /// base64 `"data"` of a text frame, decoded, or the raw bytes after a binary envelope's
    /// header. `content_type` counts on the first chunk of a stream only.
    ResponseChunk {
        request_id: String,
        data: Bytes,
        content_type: Option<String>,
    },
    /// The end of a streamed response; `error_type` set when the handler failed mid-stream
    /// (with `error_message` and `stack_trace`, as in `error`).
    ResponseEnd {
        request_id: String,
        content_type: Option<String>,
        error_type: Option<String>,
        error_message: Option<String>,
        stack_trace: Vec<String>,
    },
    /// Output of the instance's runtime (our addition, sent by `lah-agent`, whose runtime's
    /// stdout and stderr the server cannot read from a pipe): `data` is the base64 `"data"` of a
    /// text frame, decoded, or the raw bytes after a binary envelope's header. The bytes go to
    /// the instance's log exactly as if read from its output pipe.
    Log {
        data: Bytes,
    },
    Ping,
    Pong,
}

/// The first message on every connection: which runtime instance is speaking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Register {
    pub function_name: String,
    pub runtime: String,
    pub version: String,
    /// The `LAMBDA_INSTANCE_ID` the server gave this instance.
    pub instance_id: String,
    /// Our addition to the original design: send invocations as binary envelopes.
    pub binary: bool,
}

/// Why a runtime's message was refused; [`MessageError::code`] is the `error_response` code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MessageError {
    #[error("message is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("message must be a JSON object")]
    NotAnObject,
    #[error("message has no \"type\" field")]
    MissingType,
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    #[error("missing field {0:?}")]
    MissingField(&'static str),
    #[error("field {field:?} must be {expected}")]
    InvalidField {
        field: &'static str,
        expected: &'static str,
    },
    #[error("field {0:?} appears more than once")]
    DuplicateField(&'static str),
    #[error("malformed binary envelope: {0}")]
    BinaryEnvelope(&'static str),
}

impl MessageError {
    /// The `error_response` code (see [`error_code`]).
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::InvalidJson(_) | MessageError::NotAnObject => error_code::INVALID_JSON,
            MessageError::UnknownType(_) => error_code::UNKNOWN_TYPE,
            _ => error_code::INVALID_MESSAGE,
        }
    }
}

/// The known top-level fields of a client message, as unparsed JSON values.
#[derive(Default)]
struct Fields<'a> {
    kind: Option<LazyValue<'a>>,
    request_id: Option<LazyValue<'a>>,
    payload: Option<LazyValue<'a>>,
    headers: Option<LazyValue<'a>>,
    error_message: Option<LazyValue<'a>>,
    error_type: Option<LazyValue<'a>>,
    stack_trace: Option<LazyValue<'a>>,
    function_name: Option<LazyValue<'a>>,
    runtime: Option<LazyValue<'a>>,
    version: Option<LazyValue<'a>>,
    instance_id: Option<LazyValue<'a>>,
    binary: Option<LazyValue<'a>>,
    data: Option<LazyValue<'a>>,
    content_type: Option<LazyValue<'a>>,
    init_error: Option<LazyValue<'a>>,
}

impl<'a> Fields<'a> {
    /// The slot for a key; unknown keys are ignored so runtimes may send extra fields.
    fn slot(&mut self, key: &str) -> Option<(&'static str, &mut Option<LazyValue<'a>>)> {
        Some(match key {
            "type" => ("type", &mut self.kind),
            "request_id" => ("request_id", &mut self.request_id),
            "payload" => ("payload", &mut self.payload),
            "headers" => ("headers", &mut self.headers),
            "error_message" => ("error_message", &mut self.error_message),
            "error_type" => ("error_type", &mut self.error_type),
            "stack_trace" => ("stack_trace", &mut self.stack_trace),
            "function_name" => ("function_name", &mut self.function_name),
            "runtime" => ("runtime", &mut self.runtime),
            "version" => ("version", &mut self.version),
            "instance_id" => ("instance_id", &mut self.instance_id),
            "binary" => ("binary", &mut self.binary),
            "data" => ("data", &mut self.data),
            "content_type" => ("content_type", &mut self.content_type),
            "init_error" => ("init_error", &mut self.init_error),
            _ => return None,
        })
    }

    /// One validating pass over a JSON object; values stay borrowed from `json`.
    fn parse(json: &'a [u8]) -> Result<Self, MessageError> {
        let mut fields = Fields::default();
        // Where the last value ended: everything after it must be `}` and whitespace.
        let mut end = json
            .iter()
            .position(|b| !is_json_ws(*b))
            .map_or(0, |i| i + 1);
        for entry in sonic_rs::to_object_iter(json) {
            let (key, value) = entry.map_err(|e| json_error(json, e))?;
            end = offset_in(json, value.as_raw_str().as_bytes()).map_or(end, |r| r.end);
            let Some((name, slot)) = fields.slot(&key) else {
                continue;
            };
            if slot.replace(value).is_some() {
                return Err(MessageError::DuplicateField(name));
            }
        }
        match json.get(end..).map(trim_json_ws) {
            Some([b'}', rest @ ..]) if trim_json_ws(rest).is_empty() => Ok(fields),
            _ => Err(MessageError::InvalidJson(
                "trailing characters after the object".into(),
            )),
        }
    }

    /// Builds the message; `payload` is the slice for a `response`'s payload, if any, and
    /// `binary` the bytes after a binary envelope's header (a `response_chunk`'s data).
    fn into_message(
        self,
        payload: Option<Bytes>,
        binary: Option<Bytes>,
    ) -> Result<ClientMessage, MessageError> {
        let kind = self.kind.ok_or(MessageError::MissingType)?;
        let kind = string(Some(&kind), "type")?;
        match kind.as_str() {
            "register" => Ok(ClientMessage::Register(Register {
                function_name: string(self.function_name.as_ref(), "function_name")?,
                runtime: string(self.runtime.as_ref(), "runtime")?,
                version: string(self.version.as_ref(), "version")?,
                instance_id: string(self.instance_id.as_ref(), "instance_id")?,
                binary: optional_bool(self.binary.as_ref(), "binary")?,
            })),
            "response" => Ok(ClientMessage::Response {
                request_id: string(self.request_id.as_ref(), "request_id")?,
                payload: payload.ok_or(MessageError::MissingField("payload"))?,
                headers: headers(self.headers.as_ref())?,
            }),
            "error" => Ok(ClientMessage::Error {
                request_id: string(self.request_id.as_ref(), "request_id")?,
                error_message: string(self.error_message.as_ref(), "error_message")?,
                error_type: string(self.error_type.as_ref(), "error_type")?,
                stack_trace: stack_trace(self.stack_trace.as_ref())?,
                headers: headers(self.headers.as_ref())?,
                init_error: optional_bool(self.init_error.as_ref(), "init_error")?,
            }),
            "response_chunk" => Ok(ClientMessage::ResponseChunk {
                request_id: string(self.request_id.as_ref(), "request_id")?,
                data: match binary {
                    Some(bytes) if self.data.is_none() => bytes,
                    Some(_) => {
                        return Err(MessageError::BinaryEnvelope(
                            "header must not contain \"data\"",
                        ))
                    }
                    None => base64_field(self.data.as_ref(), "data")?,
                },
                content_type: optional_string(self.content_type.as_ref(), "content_type")?,
            }),
            "response_end" => Ok(ClientMessage::ResponseEnd {
                request_id: string(self.request_id.as_ref(), "request_id")?,
                content_type: optional_string(self.content_type.as_ref(), "content_type")?,
                error_type: optional_string(self.error_type.as_ref(), "error_type")?,
                error_message: optional_string(self.error_message.as_ref(), "error_message")?,
                stack_trace: stack_trace(self.stack_trace.as_ref())?,
            }),
            "log" => Ok(ClientMessage::Log {
                data: match binary {
                    Some(bytes) if self.data.is_none() => bytes,
                    Some(_) => {
                        return Err(MessageError::BinaryEnvelope(
                            "header must not contain \"data\"",
                        ))
                    }
                    None => base64_field(self.data.as_ref(), "data")?,
                },
            }),
            "ping" => Ok(ClientMessage::Ping),
            "pong" => Ok(ClientMessage::Pong),
            _ => Err(MessageError::UnknownType(kind)),
        }
    }
}

/// JSON insignificant whitespace (RFC 8259 §2), narrower than `u8::is_ascii_whitespace`.
fn is_json_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn trim_json_ws(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_json_ws(*first) {
            break;
        }
        s = rest;
    }
    s
}

/// The byte range of `part` inside `whole`, if `part` borrows from it.
fn offset_in(whole: &[u8], part: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start + part.len();
    (end <= whole.len()).then_some(start..end)
}

/// Slices `part` out of `whole` without a copy when it borrows from it (always, for values the
/// object iterator returns); copies otherwise rather than panic.
fn slice_of(whole: &Bytes, part: &[u8]) -> Bytes {
    match offset_in(whole, part) {
        Some(range) => whole.slice(range),
        None => Bytes::copy_from_slice(part),
    }
}

fn json_error(json: &[u8], error: sonic_rs::Error) -> MessageError {
    let not_object = trim_json_ws(json).first().is_some_and(|b| *b != b'{');
    if not_object {
        MessageError::NotAnObject
    } else {
        MessageError::InvalidJson(error.to_string())
    }
}

/// A required string field, unescaped.
fn string(value: Option<&LazyValue>, field: &'static str) -> Result<String, MessageError> {
    let value = value.ok_or(MessageError::MissingField(field))?;
    unescape(value).ok_or(MessageError::InvalidField {
        field,
        expected: "a string",
    })
}

fn unescape(value: &LazyValue) -> Option<String> {
    if let Some(s) = value.as_str() {
        return Some(s.to_owned());
    }
    // `as_str` declines strings with escapes; parse those properly.
    match value.get_type() {
        JsonType::String => sonic_rs::from_str(value.as_raw_str()).ok(),
        _ => None,
    }
}

/// An optional string field: absent or null is `None`.
fn optional_string(
    value: Option<&LazyValue>,
    field: &'static str,
) -> Result<Option<String>, MessageError> {
    match value {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => unescape(v).map(Some).ok_or(MessageError::InvalidField {
            field,
            expected: "a string",
        }),
    }
}

/// A required base64 string field, decoded.
fn base64_field(value: Option<&LazyValue>, field: &'static str) -> Result<Bytes, MessageError> {
    use base64::Engine;
    let text = string(value, field)?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map(Bytes::from)
        .map_err(|_| MessageError::InvalidField {
            field,
            expected: "base64",
        })
}

fn optional_bool(value: Option<&LazyValue>, field: &'static str) -> Result<bool, MessageError> {
    match value {
        None => Ok(false),
        Some(v) if v.is_null() => Ok(false),
        Some(v) => v.as_bool().ok_or(MessageError::InvalidField {
            field,
            expected: "a boolean",
        }),
    }
}

/// `headers`: absent or null means none; otherwise an object of strings, in received order.
fn headers(value: Option<&LazyValue>) -> Result<Vec<(String, String)>, MessageError> {
    const INVALID: MessageError = MessageError::InvalidField {
        field: "headers",
        expected: "an object of strings",
    };
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    if value.get_type() != JsonType::Object {
        return Err(INVALID);
    }
    let mut out = Vec::new();
    for entry in sonic_rs::to_object_iter(value.as_raw_str()) {
        let (name, v): (Cow<str>, LazyValue) = entry.map_err(|_| INVALID)?;
        out.push((name.into_owned(), unescape(&v).ok_or(INVALID)?));
    }
    Ok(out)
}

/// `stack_trace`: absent or null means none; otherwise an array of strings.
fn stack_trace(value: Option<&LazyValue>) -> Result<Vec<String>, MessageError> {
    match value {
        None => Ok(Vec::new()),
        Some(v) if v.is_null() => Ok(Vec::new()),
        Some(v) => sonic_rs::from_str(v.as_raw_str()).map_err(|_| MessageError::InvalidField {
            field: "stack_trace",
            expected: "an array of strings",
        }),
    }
}

/// Parses a text frame from a runtime. A response's payload is sliced out of `text`.
pub fn parse_client_message(text: &Bytes) -> Result<ClientMessage, MessageError> {
    let fields = Fields::parse(text)?;
    let payload = fields
        .payload
        .as_ref()
        .map(|v| slice_of(text, v.as_raw_str().as_bytes()));
    fields.into_message(payload, None)
}

/// Parses a binary envelope from a runtime: `[u32 BE header_len][JSON header][payload]`. The
/// payload (everything after the header) is sliced out of `frame`; only a `response` may have
/// one, and the header must not contain `"payload"`.
pub fn parse_client_binary(frame: &Bytes) -> Result<ClientMessage, MessageError> {
    let Some((len, _)) = frame.split_first_chunk::<BINARY_LEN_BYTES>() else {
        return Err(MessageError::BinaryEnvelope(
            "shorter than its 4-byte header length",
        ));
    };
    let header_bytes = u32::from_be_bytes(*len) as usize;
    if header_bytes > BINARY_HEADER_BYTES_MAX {
        return Err(MessageError::BinaryEnvelope("header longer than 64 KiB"));
    }
    let header_end = BINARY_LEN_BYTES + header_bytes;
    if header_end > frame.len() {
        return Err(MessageError::BinaryEnvelope(
            "header length exceeds the frame",
        ));
    }
    let fields = Fields::parse(&frame[BINARY_LEN_BYTES..header_end])?;
    if fields.payload.is_some() {
        return Err(MessageError::BinaryEnvelope(
            "header must not contain \"payload\"",
        ));
    }
    let body = frame.slice(header_end..);
    let message = fields.into_message(Some(body.clone()), Some(body))?;
    let payload_allowed = matches!(
        message,
        ClientMessage::Response { .. }
            | ClientMessage::ResponseChunk { .. }
            | ClientMessage::Log { .. }
    );
    if !payload_allowed && header_end != frame.len() {
        return Err(MessageError::BinaryEnvelope(
            "only a response carries payload bytes",
        ));
    }
    Ok(message)
}

/// Zero-copy splice: the bytes that go before and after the caller's raw JSON payload, so the
/// server writes `[frame head][prefix][payload][suffix]` with writev and never copies the
/// payload. The payload must be valid JSON; it is written last so that `suffix` is constant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvocationEnvelope {
    pub prefix: Vec<u8>,
    pub suffix: &'static [u8],
}

impl InvocationEnvelope {
    /// Bytes of the whole message for a payload of `payload_bytes`: the frame head's length.
    pub fn message_bytes(&self, payload_bytes: usize) -> usize {
        self.prefix.len() + payload_bytes + self.suffix.len()
    }
}

/// The `invocation` message around a payload. `deadline_ms` is absolute (Unix epoch ms);
/// `client_context` is the JSON text of the client context, sent as a string, or `null`.
pub fn invocation_envelope(
    request_id: &str,
    deadline_ms: u64,
    invoked_function_arn: &str,
    trace_id: &str,
    client_context: Option<&str>,
) -> InvocationEnvelope {
    let mut prefix = Vec::with_capacity(ENVELOPE_HEAD_BYTES);
    write_invocation_fields(
        &mut prefix,
        request_id,
        deadline_ms,
        invoked_function_arn,
        trace_id,
        client_context,
    );
    prefix.extend_from_slice(br#","payload":"#);
    InvocationEnvelope {
        prefix,
        suffix: b"}",
    }
}

/// The binary-envelope form of an invocation: the 4-byte length and the JSON header (the
/// invocation without `payload`); the raw payload bytes follow it in the same binary frame.
pub fn invocation_binary_header(
    request_id: &str,
    deadline_ms: u64,
    invoked_function_arn: &str,
    trace_id: &str,
    client_context: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_HEAD_BYTES);
    out.extend_from_slice(&[0; BINARY_LEN_BYTES]);
    write_invocation_fields(
        &mut out,
        request_id,
        deadline_ms,
        invoked_function_arn,
        trace_id,
        client_context,
    );
    out.push(b'}');
    // Headers are built from ids and names, far below 4 GiB.
    let header_bytes = (out.len() - BINARY_LEN_BYTES) as u32;
    out[..BINARY_LEN_BYTES].copy_from_slice(&header_bytes.to_be_bytes());
    out
}

/// Writes `{"type":"invocation",` and every field but `payload`, leaving the object open.
fn write_invocation_fields(
    out: &mut Vec<u8>,
    request_id: &str,
    deadline_ms: u64,
    invoked_function_arn: &str,
    trace_id: &str,
    client_context: Option<&str>,
) {
    out.extend_from_slice(br#"{"type":"invocation","request_id":"#);
    write_json_string(out, request_id);
    out.extend_from_slice(br#","deadline_ms":"#);
    out.extend_from_slice(deadline_ms.to_string().as_bytes());
    out.extend_from_slice(br#","invoked_function_arn":"#);
    write_json_string(out, invoked_function_arn);
    out.extend_from_slice(br#","trace_id":"#);
    write_json_string(out, trace_id);
    out.extend_from_slice(br#","client_context":"#);
    match client_context {
        Some(context) => write_json_string(out, context),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","cognito_identity":null"#);
}

/// Appends the server's `error_response` message.
pub fn error_response(out: &mut Vec<u8>, message: &str, code: &str) {
    out.extend_from_slice(br#"{"type":"error_response","message":"#);
    write_json_string(out, message);
    out.extend_from_slice(br#","code":"#);
    write_json_string(out, code);
    out.push(b'}');
}

/// Appends `s` as a JSON string literal (RFC 8259 §7): quotes, backslashes and control
/// characters escaped, everything else copied as UTF-8.
fn write_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0C => b"\\f",
            0..=0x1F => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xF)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean_from..i]);
        out.extend_from_slice(short);
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn parse(text: &str) -> Result<ClientMessage, MessageError> {
        parse_client_message(&Bytes::copy_from_slice(text.as_bytes()))
    }

    /// A response carrying `payload_json` verbatim; returns the parsed payload slice.
    fn response_payload(payload_json: &str) -> Bytes {
        let text = format!(r#"{{"type":"response","request_id":"r","payload":{payload_json}}}"#);
        let text = Bytes::from(text);
        let Ok(ClientMessage::Response { payload, .. }) = parse_client_message(&text) else {
            panic!("expected a response for payload {payload_json}");
        };
        let range = text.as_ptr() as usize..text.as_ptr() as usize + text.len();
        assert!(
            range.contains(&(payload.as_ptr() as usize)),
            "payload was copied"
        );
        payload
    }

    fn binary_frame(header: &str, payload: &[u8]) -> Bytes {
        let mut out = (header.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(payload);
        Bytes::from(out)
    }

    #[test]
    fn spec_register() {
        let text = r#"{
  "type": "register",
  "function_name": "my-function",
  "runtime": "nodejs18.x",
  "version": "1",
  "instance_id": "container-123"
}"#;
        let expected = Register {
            function_name: "my-function".into(),
            runtime: "nodejs18.x".into(),
            version: "1".into(),
            instance_id: "container-123".into(),
            binary: false,
        };
        assert_eq!(parse(text), Ok(ClientMessage::Register(expected)));
    }

    #[test]
    fn register_asking_for_binary() {
        let text = r#"{"type":"register","function_name":"f","runtime":"provided","version":"$LATEST","instance_id":"i-1","binary":true}"#;
        let Ok(ClientMessage::Register(register)) = parse(text) else {
            panic!("expected a register");
        };
        assert!(register.binary);
        let text = text.replace("true", "\"yes\"");
        let expected = MessageError::InvalidField {
            field: "binary",
            expected: "a boolean",
        };
        assert_eq!(parse(&text), Err(expected));
    }

    #[test]
    fn spec_response() {
        let text = r#"{
  "type": "response",
  "request_id": "req-123",
  "payload": {"result": "success"},
  "headers": {
    "X-Amz-Executed-Version": "1"
  }
}"#;
        let expected = ClientMessage::Response {
            request_id: "req-123".into(),
            payload: Bytes::from_static(br#"{"result": "success"}"#),
            headers: vec![("X-Amz-Executed-Version".into(), "1".into())],
        };
        assert_eq!(parse(text), Ok(expected));
    }

    #[test]
    fn spec_error() {
        let text = r#"{
  "type": "error",
  "request_id": "req-123",
  "error_message": "Something went wrong",
  "error_type": "Unhandled",
  "stack_trace": ["line 1", "line 2"],
  "headers": {
    "X-Amz-Function-Error": "Unhandled"
  }
}"#;
        let expected = ClientMessage::Error {
            request_id: "req-123".into(),
            error_message: "Something went wrong".into(),
            error_type: "Unhandled".into(),
            stack_trace: vec!["line 1".into(), "line 2".into()],
            headers: vec![("X-Amz-Function-Error".into(), "Unhandled".into())],
            init_error: false,
        };
        assert_eq!(parse(text), Ok(expected));
    }

    #[test]
    fn error_may_say_it_is_the_init_failure() {
        let base = r#""type":"error","request_id":"r","error_message":"m","error_type":"t""#;
        let Ok(ClientMessage::Error { init_error, .. }) =
            parse(&format!(r#"{{{base},"init_error":true}}"#))
        else {
            panic!("expected an error message");
        };
        assert!(init_error);
        assert!(parse(&format!(r#"{{{base},"init_error":"yes"}}"#)).is_err());
    }

    #[test]
    fn error_optional_fields_may_be_absent_or_null() {
        let base = r#""type":"error","request_id":"r","error_message":"m","error_type":"t""#;
        for extra in ["", r#","stack_trace":null,"headers":null"#] {
            let Ok(ClientMessage::Error {
                stack_trace,
                headers,
                ..
            }) = parse(&format!("{{{base}{extra}}}"))
            else {
                panic!("expected an error message");
            };
            assert!(stack_trace.is_empty() && headers.is_empty());
        }
    }

    #[test]
    fn spec_ping_and_pong() {
        assert_eq!(parse(r#"{"type": "ping"}"#), Ok(ClientMessage::Ping));
        assert_eq!(parse(r#"{"type": "pong"}"#), Ok(ClientMessage::Pong));
        let constants = [PING, PONG].map(|c| parse(std::str::from_utf8(c).expect("utf-8")));
        assert_eq!(
            constants,
            [Ok(ClientMessage::Ping), Ok(ClientMessage::Pong)]
        );
    }

    #[test]
    fn escaped_strings_are_unescaped() {
        let text = r#"{"type":"error","request_id":"r\"1","error_message":"a\nb \u00e9","error_type":"T","stack_trace":["x\ty"],"headers":{"K\u0041":"v\\"}}"#;
        let Ok(ClientMessage::Error {
            request_id,
            error_message,
            stack_trace,
            headers,
            ..
        }) = parse(text)
        else {
            panic!("expected an error message");
        };
        assert_eq!(request_id, "r\"1");
        assert_eq!(error_message, "a\nb é");
        assert_eq!(stack_trace, vec!["x\ty".to_owned()]);
        assert_eq!(headers, vec![("KA".to_owned(), "v\\".to_owned())]);
    }

    #[test]
    fn missing_fields() {
        let cases = [
            (
                r#"{"type":"register","runtime":"r","version":"1","instance_id":"i"}"#,
                "function_name",
            ),
            (
                r#"{"type":"register","function_name":"f","version":"1","instance_id":"i"}"#,
                "runtime",
            ),
            (
                r#"{"type":"register","function_name":"f","runtime":"r","instance_id":"i"}"#,
                "version",
            ),
            (
                r#"{"type":"register","function_name":"f","runtime":"r","version":"1"}"#,
                "instance_id",
            ),
            (r#"{"type":"response","payload":1}"#, "request_id"),
            (r#"{"type":"response","request_id":"r"}"#, "payload"),
            (
                r#"{"type":"error","request_id":"r","error_type":"t"}"#,
                "error_message",
            ),
            (
                r#"{"type":"error","request_id":"r","error_message":"m"}"#,
                "error_type",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err, MessageError::MissingField(field), "{text}");
            assert_eq!(err.code(), "INVALID_MESSAGE");
        }
        assert_eq!(
            parse(r#"{"request_id":"r"}"#),
            Err(MessageError::MissingType)
        );
    }

    #[test]
    fn wrongly_typed_fields() {
        let cases = [
            (r#"{"type":7}"#, "type"),
            (
                r#"{"type":"response","request_id":5,"payload":1}"#,
                "request_id",
            ),
            (
                r#"{"type":"response","request_id":"r","payload":1,"headers":["a"]}"#,
                "headers",
            ),
            (
                r#"{"type":"response","request_id":"r","payload":1,"headers":{"a":1}}"#,
                "headers",
            ),
            (
                r#"{"type":"error","request_id":"r","error_message":"m","error_type":"t","stack_trace":"s"}"#,
                "stack_trace",
            ),
            (
                r#"{"type":"error","request_id":"r","error_message":"m","error_type":"t","stack_trace":[1]}"#,
                "stack_trace",
            ),
        ];
        for (text, field) in cases {
            let err = parse(text).expect_err(text);
            assert!(
                matches!(err, MessageError::InvalidField { field: f, .. } if f == field),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn unknown_and_server_only_types() {
        for kind in ["invocation", "error_response", "hello"] {
            let err = parse(&format!(r#"{{"type":"{kind}"}}"#)).expect_err(kind);
            assert_eq!(err, MessageError::UnknownType(kind.to_owned()));
            assert_eq!(err.code(), "UNKNOWN_TYPE");
        }
    }

    #[test]
    fn unknown_fields_are_ignored_and_duplicates_refused() {
        assert_eq!(
            parse(r#"{"type":"ping","extra":{"a":[1]}}"#),
            Ok(ClientMessage::Ping)
        );
        let dup = r#"{"type":"response","request_id":"r","payload":1,"payload":2}"#;
        assert_eq!(parse(dup), Err(MessageError::DuplicateField("payload")));
    }

    #[test]
    fn invalid_json() {
        let cases = [
            "",
            "{",
            r#"{"type":"ping""#,
            r#"{"type":"ping",}"#,
            r#"{"type":"ping"} x"#,
            r#"{"type":"ping"}}"#,
            r#"{"type":"response","request_id":"r","payload":{"a":}}"#,
            r#"{"type":"response","request_id":"r","payload":[1,2}"#,
            r#"{"type":"response","request_id":"r","payload":01}"#,
            r#"{"type":"response","request_id":"r","payload":"bad \x escape"}"#,
            "{\"type\":\"response\",\"request_id\":\"r\",\"payload\":\"raw\ncontrol\"}",
            r#"{"type":"ping"}{"type":"ping"}"#,
        ];
        for text in cases {
            let err = parse(text).expect_err(text);
            assert!(
                matches!(err, MessageError::InvalidJson(_)),
                "{text:?}: {err:?}"
            );
            assert_eq!(err.code(), "INVALID_JSON");
        }
        for text in ["[1]", "\"type\"", "null", " 42"] {
            assert_eq!(parse(text), Err(MessageError::NotAnObject), "{text}");
        }
        assert_eq!(
            parse(" { \"type\" : \"ping\" } \r\n"),
            Ok(ClientMessage::Ping)
        );
        assert_eq!(parse("{}"), Err(MessageError::MissingType));
        assert_eq!(parse(" { } "), Err(MessageError::MissingType));
    }

    #[test]
    fn payload_slice_equals_raw_text() {
        let payloads = [
            r#"{"result": "success"}"#,
            r#"{"a":{"b":[1,{"c":null}],"d":"e"},"f":[[],[{}]]}"#,
            r#""a \"quoted\" \\ string \u00e9 \n""#,
            r#""plain""#,
            "-12.5e+3",
            "0",
            "null",
            "true",
            "[]",
            "{}",
            r#"[1, "two", {"three": 3}]"#,
            "{ \"spaced\" :\n [ 1 , 2 ] }",
        ];
        for raw in payloads {
            assert_eq!(response_payload(raw), raw.as_bytes(), "{raw}");
        }
    }

    #[test]
    fn payload_before_other_fields() {
        let text = r#"{"payload":{"x":[1,2]},"type":"response","headers":{},"request_id":"r"}"#;
        let Ok(ClientMessage::Response {
            payload, headers, ..
        }) = parse(text)
        else {
            panic!("expected a response");
        };
        assert_eq!(payload, r#"{"x":[1,2]}"#.as_bytes());
        assert!(headers.is_empty());
    }

    #[test]
    fn spec_invocation_envelope_splice() {
        let envelope = invocation_envelope(
            "req-123",
            30000,
            "arn:aws:lambda:local:000000000000:function:my-function",
            "trace-123",
            None,
        );
        let payload = br#"{"key": "value"}"#;
        let mut message = envelope.prefix.clone();
        message.extend_from_slice(payload);
        message.extend_from_slice(envelope.suffix);
        assert_eq!(envelope.message_bytes(payload.len()), message.len());
        let parsed: Value = serde_json::from_slice(&message).expect("valid JSON");
        let expected = json!({
            "type": "invocation",
            "request_id": "req-123",
            "payload": {"key": "value"},
            "deadline_ms": 30000,
            "invoked_function_arn": "arn:aws:lambda:local:000000000000:function:my-function",
            "trace_id": "trace-123",
            "client_context": null,
            "cognito_identity": null
        });
        assert_eq!(parsed, expected);
    }

    #[test]
    fn envelope_escapes_strings() {
        let nasty = "q\"b\\s/\n\r\t\u{8}\u{c}\u{1}\u{1f}é🦀";
        let envelope = invocation_envelope(
            nasty,
            u64::MAX,
            nasty,
            nasty,
            Some(r#"{"custom":{"k":"v"}}"#),
        );
        let mut message = envelope.prefix.clone();
        message.extend_from_slice(b"[null]");
        message.extend_from_slice(envelope.suffix);
        let parsed: Value = serde_json::from_slice(&message).expect("valid JSON");
        assert_eq!(parsed["request_id"], nasty);
        assert_eq!(parsed["invoked_function_arn"], nasty);
        assert_eq!(parsed["trace_id"], nasty);
        assert_eq!(parsed["deadline_ms"], u64::MAX);
        assert_eq!(parsed["client_context"], r#"{"custom":{"k":"v"}}"#);
        assert_eq!(parsed["payload"], json!([null]));
    }

    #[test]
    fn error_response_message() {
        let mut out = Vec::new();
        error_response(&mut out, "Connection \"failed\"", "CONNECTION_ERROR");
        let parsed: Value = serde_json::from_slice(&out).expect("valid JSON");
        let expected = json!({
            "type": "error_response",
            "message": "Connection \"failed\"",
            "code": "CONNECTION_ERROR"
        });
        assert_eq!(parsed, expected);
    }

    #[test]
    fn invocation_binary_header_layout() {
        let header = invocation_binary_header("req-1", 1_700_000_000_000, "arn", "t", Some("c"));
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        assert_eq!(len, header.len() - 4);
        let parsed: Value = serde_json::from_slice(&header[4..]).expect("valid JSON");
        let expected = json!({
            "type": "invocation",
            "request_id": "req-1",
            "deadline_ms": 1_700_000_000_000u64,
            "invoked_function_arn": "arn",
            "trace_id": "t",
            "client_context": "c",
            "cognito_identity": null
        });
        assert_eq!(parsed, expected);
    }

    #[test]
    fn log_in_text_and_binary_frames() {
        assert_eq!(
            parse(r#"{"type":"log","data":"aGkK"}"#),
            Ok(ClientMessage::Log {
                data: Bytes::from_static(b"hi\n")
            })
        );
        assert_eq!(
            parse(r#"{"type":"log"}"#),
            Err(MessageError::MissingField("data"))
        );
        let frame = binary_frame(r#"{"type":"log"}"#, b"line 1\nline 2\n");
        assert_eq!(
            parse_client_binary(&frame),
            Ok(ClientMessage::Log {
                data: Bytes::from_static(b"line 1\nline 2\n")
            })
        );
        let both = binary_frame(r#"{"type":"log","data":"aGkK"}"#, b"x");
        assert!(matches!(
            parse_client_binary(&both),
            Err(MessageError::BinaryEnvelope(_))
        ));
    }

    #[test]
    fn binary_response_round_trip() {
        let header =
            r#"{"type":"response","request_id":"req-9","headers":{"X-Amz-Executed-Version":"1"}}"#;
        let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let frame = binary_frame(header, &body);
        let Ok(ClientMessage::Response {
            request_id,
            payload,
            headers,
        }) = parse_client_binary(&frame)
        else {
            panic!("expected a response");
        };
        assert_eq!(request_id, "req-9");
        assert_eq!(payload, body);
        assert_eq!(
            payload.as_ptr(),
            frame[4 + header.len()..].as_ptr(),
            "payload was copied"
        );
        assert_eq!(headers, vec![("X-Amz-Executed-Version".into(), "1".into())]);
        let empty = binary_frame(r#"{"type":"response","request_id":"r"}"#, b"");
        assert!(
            matches!(parse_client_binary(&empty), Ok(ClientMessage::Response { payload, .. }) if payload.is_empty())
        );
    }

    #[test]
    fn binary_error_round_trip() {
        let header = r#"{"type":"error","request_id":"r","error_message":"m","error_type":"t"}"#;
        let Ok(ClientMessage::Error { request_id, .. }) =
            parse_client_binary(&binary_frame(header, b""))
        else {
            panic!("expected an error message");
        };
        assert_eq!(request_id, "r");
        let with_bytes = parse_client_binary(&binary_frame(header, b"x"));
        assert!(matches!(with_bytes, Err(MessageError::BinaryEnvelope(_))));
    }

    #[test]
    fn malformed_binary_envelopes() {
        let response = r#"{"type":"response","request_id":"r"}"#;
        let mut too_long = binary_frame(response, b"").to_vec();
        too_long[3] += 1;
        const HUGE: &[u8] = &[0, 1, 0, 1]; // 65 537: over the header limit
        let cases = [
            Bytes::from_static(b"\0\0\0"),
            Bytes::from(too_long),
            Bytes::from_static(HUGE),
            binary_frame(r#"{"type":"response","request_id":"r","payload":1}"#, b""),
        ];
        for frame in cases {
            let err = parse_client_binary(&frame).expect_err("malformed");
            assert!(matches!(err, MessageError::BinaryEnvelope(_)), "{err:?}");
            assert_eq!(err.code(), "INVALID_MESSAGE");
        }
        let not_json = binary_frame("{nope", b"payload");
        assert!(matches!(
            parse_client_binary(&not_json),
            Err(MessageError::InvalidJson(_))
        ));
        let trailing = binary_frame(r#"{"type":"ping"} }"#, b"");
        assert!(matches!(
            parse_client_binary(&trailing),
            Err(MessageError::InvalidJson(_))
        ));
    }

    #[test]
    fn response_chunks_text_and_binary() {
        let text = parse(
            r#"{"type":"response_chunk","request_id":"r","data":"aGVsbG8=","content_type":"text/plain"}"#,
        );
        assert_eq!(
            text,
            Ok(ClientMessage::ResponseChunk {
                request_id: "r".into(),
                data: Bytes::from_static(b"hello"),
                content_type: Some("text/plain".into()),
            })
        );
        let frame = binary_frame(r#"{"type":"response_chunk","request_id":"r"}"#, b"\0raw");
        assert_eq!(
            parse_client_binary(&frame),
            Ok(ClientMessage::ResponseChunk {
                request_id: "r".into(),
                data: Bytes::from_static(b"\0raw"),
                content_type: None,
            })
        );
        let bad = parse(r#"{"type":"response_chunk","request_id":"r","data":"!!"}"#);
        assert!(matches!(
            bad,
            Err(MessageError::InvalidField { field: "data", .. })
        ));
        let missing = parse(r#"{"type":"response_chunk","request_id":"r"}"#);
        assert_eq!(missing, Err(MessageError::MissingField("data")));
    }

    #[test]
    fn response_end_with_and_without_error() {
        assert_eq!(
            parse(r#"{"type":"response_end","request_id":"r"}"#),
            Ok(ClientMessage::ResponseEnd {
                request_id: "r".into(),
                content_type: None,
                error_type: None,
                error_message: None,
                stack_trace: vec![],
            })
        );
        let failed = parse(
            r#"{"type":"response_end","request_id":"r","error_type":"Error","error_message":"boom","stack_trace":["at x"]}"#,
        );
        assert_eq!(
            failed,
            Ok(ClientMessage::ResponseEnd {
                request_id: "r".into(),
                content_type: None,
                error_type: Some("Error".into()),
                error_message: Some("boom".into()),
                stack_trace: vec!["at x".into()],
            })
        );
        let frame = binary_frame(r#"{"type":"response_end","request_id":"r"}"#, b"x");
        assert!(matches!(
            parse_client_binary(&frame),
            Err(MessageError::BinaryEnvelope(_))
        ));
    }
}
