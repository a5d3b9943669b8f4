//! Response streaming on the data plane: `InvokeWithResponseStream` (User API), the caller-side
//! handle any server can use to receive a streamed invocation chunk by chunk
//! (`StreamingInvocation`, meant also for a function-URL server in `RESPONSE_STREAM` mode), and
//! the runtime side shared by the HTTP and WebSocket Runtime APIs (`ResponseStream`).
//!
//! Runs on the cores: the caller's part on the core that accepted the caller, the runtime's part
//! on the instance's home core; between them only the `model::stream` channel (bounded,
//! `STREAM_QUEUE_ITEMS_MAX` items) and the invocation's `oneshot<InvokeResult>`, which always
//! comes after the last item. Nothing here is on the path of an ordinary invoke: a runtime's
//! upload is read as a stream only when it says `Lambda-Runtime-Function-Response-Mode:
//! streaming` (or sends WebSocket `response_chunk`s), and a caller gets a stream only from the
//! streaming endpoint.
//!
//! Limits: a streamed response is cut at `STREAM_RESPONSE_BYTES_MAX` (AWS's 20 MB soft limit)
//! with `Function.ResponseSizeTooLarge`; a streamed upload for a plain Invoke is collected and
//! held to Invoke's 6 MB. A caller that disconnects is noticed within `PEER_CHECK_MS` (or at the
//! next write); its invocation ends and its instance is recycled (`Scheduler::tick`). See
//! `docs/streaming.md`.

use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::{Bytes, BytesMut};
use tokio::sync::oneshot;

use super::conn::{write_vectored, HttpConn};
use super::core::Core;
use super::scheduler::{runtime_error_outcome, RuntimeRefusal};
use super::user_api::{error_response, parse_invoke, InvocationType};
use crate::config::INVOKE_PAYLOAD_BYTES_MAX;
use crate::model::error::ApiError;
use crate::model::stream::STREAM_RESPONSE_BYTES_MAX;
use crate::model::stream::{self, StreamItem, StreamReceiver, StreamSender};
use crate::model::types::{
    function_error_body, Function, InstanceId, InvokeContext, InvokeOutcome, InvokeResult,
    RequestId,
};
use crate::model::{Invocation, Permit};
use crate::protocols::eventstream;
use crate::protocols::http::{http_date, reason_phrase, Request};

/// How often a caller waiting for the next piece of its stream is checked for having closed
/// its connection: a handler that sleeps between chunks would otherwise hold its instance until
/// its next write. A non-blocking peek every 100 ms per open stream costs nothing measurable.
const PEER_CHECK_MS: u64 = 100;

/// The `Content-Type` of a streamed response whose runtime declared none (AWS's default).
const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// The Runtime API header that makes a `/response` a stream.
pub const RESPONSE_MODE_HEADER: &str = "lambda-runtime-function-response-mode";
/// Trailers a runtime sends when its handler failed mid-stream.
const ERROR_TYPE_TRAILER: &str = "lambda-runtime-function-error-type";
const ERROR_BODY_TRAILER: &str = "lambda-runtime-function-error-body";

/// What a streamed invocation yields to its caller, in order: `Start` at most once, `Chunk`s,
/// then `End` once.
#[derive(Debug)]
pub enum StreamEvent {
    /// The runtime began streaming, with the content type it declared.
    Start { content_type: Option<String> },
    /// Response bytes, as they arrived from the runtime.
    Chunk(Bytes),
    /// The invocation ended. A runtime that answered without streaming (an ordinary handler)
    /// ends with `Success { body }` and no `Start` before it; a failure, before or during the
    /// stream, is a `FunctionError` (timeout, crash, the handler's error) or `Service`.
    End(InvokeResult),
}

/// A caller's handle on one streamed invocation: the internal API for anything that serves a
/// stream to a client (`InvokeWithResponseStream` here; a function URL in `RESPONSE_STREAM` mode
/// later). Dropping it before `End` abandons the invocation: its instance is recycled within a
/// scheduler tick, and its concurrency released.
pub struct StreamingInvocation {
    pub id: RequestId,
    /// The version that runs it (`X-Amz-Executed-Version`).
    pub version: String,
    items: StreamReceiver,
    result: oneshot::Receiver<InvokeResult>,
    /// The result, once it arrived, while items queued before it are still handed out.
    ended: Option<InvokeResult>,
    done: bool,
}

impl StreamingInvocation {
    /// Admits (concurrency: 429 at once over the limit) and submits an invocation of `function`
    /// on this core, as a stream. Must be called on a data-plane core.
    pub fn start(
        core: &Rc<Core>,
        function: Arc<Function>,
        payload: Bytes,
        context: InvokeContext,
        want_log_tail: bool,
        id: RequestId,
    ) -> Result<StreamingInvocation, ApiError> {
        let permit = Permit::acquire(&core.shared, &function)?;
        let version = function.version.clone();
        let (reply, result) = oneshot::channel();
        let (tx, items) = stream::channel();
        let inv = Invocation {
            id: id.clone(),
            function,
            payload,
            context,
            accepted_at: Instant::now(),
            want_log_tail,
            reply,
            permit,
            stream: Some(tx),
        };
        core.sched.borrow_mut().submit(inv);
        Ok(StreamingInvocation {
            id,
            version,
            items,
            result,
            ended: None,
            done: false,
        })
    }

    /// The next event; `None` after `End`. Cancel-safe (nothing is lost if the future is
    /// dropped before it completes), so it may be raced against a timer.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        if self.done {
            return None;
        }
        loop {
            if self.ended.is_some() {
                // Items sent before the result are in the queue already: hand them out first.
                if let Ok(item) = self.items.try_recv() {
                    return Some(event_of(item));
                }
                self.done = true;
                return self.ended.take().map(StreamEvent::End);
            }
            tokio::select! {
                biased;
                item = self.items.recv() => match item {
                    Some(item) => return Some(event_of(item)),
                    // Every sender is gone: only the result is left.
                    None => self.ended = Some(lost((&mut self.result).await)),
                },
                result = &mut self.result => self.ended = Some(lost(result)),
            }
        }
    }
}

fn event_of(item: StreamItem) -> StreamEvent {
    match item {
        StreamItem::Start { content_type } => StreamEvent::Start { content_type },
        StreamItem::Chunk(data) => StreamEvent::Chunk(data),
    }
}

fn lost(result: Result<InvokeResult, oneshot::error::RecvError>) -> InvokeResult {
    result.unwrap_or_else(|_| InvokeResult {
        outcome: InvokeOutcome::Service(ApiError::service("The invocation was lost")),
        log_tail: None,
        cold_start: false,
    })
}

/// Whether `path` is `InvokeWithResponseStream`'s.
pub fn is_stream_invoke(path: &str) -> bool {
    path.starts_with("/2021-11-15/functions/") && path.ends_with("/response-streaming-invocations")
}

/// Serves one `InvokeWithResponseStream` request on a User API connection: an AWS error
/// response, or a 200 whose chunked body is event-stream messages written as they come.
/// Returns whether the connection may carry another request.
pub async fn serve_invoke(core: &Rc<Core>, conn: &mut HttpConn, req: Request) -> bool {
    // HTTP/1.0 has no chunked coding: its stream is delimited by closing the connection.
    let chunked = req.version_minor >= 1;
    let keep_alive = req.keep_alive && chunked;
    let mut inv = match start_invoke(core, &req) {
        Ok(Some(inv)) => inv,
        Ok(None) => {
            let resp = super::conn::Response::empty(204)
                .header("x-amzn-RequestId", RequestId::random().to_string());
            return conn.write_response(resp, keep_alive).await.is_ok() && keep_alive;
        }
        Err((e, id)) => {
            let resp = error_response(&e, Some(&id));
            return conn.write_response(resp, keep_alive).await.is_ok() && keep_alive;
        }
    };
    let first = match next_watching(conn, &mut inv).await {
        Some(event) => event,
        None => return false,
    };
    let content_type = match &first {
        StreamEvent::Start { content_type } => content_type.clone(),
        StreamEvent::End(InvokeResult {
            outcome: InvokeOutcome::Service(e),
            ..
        }) => {
            let resp = error_response(e, Some(&inv.id));
            return conn.write_response(resp, keep_alive).await.is_ok() && keep_alive;
        }
        _ => None,
    };
    let mut head = Vec::with_capacity(256);
    stream_head(
        &mut head,
        content_type.as_deref().unwrap_or(DEFAULT_CONTENT_TYPE),
        &inv,
        chunked,
        keep_alive,
    );
    if write_vectored(&conn.stream, vec![Bytes::from(head)])
        .await
        .is_err()
    {
        return false;
    }
    let mut event = first;
    loop {
        let mut out = BytesMut::new();
        let end = match event {
            StreamEvent::Start { .. } => false,
            StreamEvent::Chunk(data) => {
                eventstream::payload_chunks(&mut out, &data);
                false
            }
            StreamEvent::End(result) => {
                complete_event(&mut out, result);
                true
            }
        };
        let mut parts = Vec::with_capacity(4);
        if !out.is_empty() && chunked {
            parts.push(Bytes::from(format!("{:x}\r\n", out.len())));
            parts.push(out.freeze());
            parts.push(Bytes::from_static(b"\r\n"));
        } else if !out.is_empty() {
            parts.push(out.freeze());
        }
        if end && chunked {
            parts.push(Bytes::from_static(b"0\r\n\r\n"));
        }
        if !parts.is_empty() && write_vectored(&conn.stream, parts).await.is_err() {
            return false;
        }
        if end {
            return keep_alive;
        }
        event = match next_watching(conn, &mut inv).await {
            Some(next) => next,
            None => return false,
        };
    }
}

/// Validates and admits the request: the invocation, `None` for a DryRun, or the error with
/// its request id.
fn start_invoke(
    core: &Rc<Core>,
    req: &Request,
) -> Result<Option<StreamingInvocation>, (ApiError, RequestId)> {
    let id = RequestId::random();
    if let Some(credentials) = &core.shared.auth {
        if let Err(e) = credentials.verify(req, SystemTime::now()) {
            core.shared
                .metrics
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            return Err((e, id));
        }
    }
    let path = req.path();
    let name = path
        .trim_start_matches("/2021-11-15/functions/")
        .trim_end_matches("/response-streaming-invocations");
    if name.is_empty() || name.contains('/') {
        return Err((
            ApiError::invalid_param("The function name is missing from the path"),
            id,
        ));
    }
    let parsed = parse_invoke(core, name, req).map_err(|e| (e, id.clone()))?;
    match parsed.kind {
        InvocationType::DryRun => return Ok(None),
        InvocationType::Event => {
            return Err((
                ApiError::invalid_param(
                    "1 validation error detected: Value 'Event' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [RequestResponse, DryRun]",
                ),
                id,
            ))
        }
        InvocationType::RequestResponse => {}
    }
    if core.shared.shutting_down.load(Ordering::Relaxed) {
        let e = ApiError::new(
            crate::model::error::ErrorKind::ServiceUnavailable,
            "The server is shutting down",
        );
        return Err((e, id));
    }
    StreamingInvocation::start(
        core,
        parsed.function,
        parsed.payload,
        parsed.context,
        parsed.want_log_tail,
        id.clone(),
    )
    .map(Some)
    .map_err(|e| (e, id))
}

/// The 200 head of a streamed answer with the function's content type: chunked, or (HTTP/1.0)
/// delimited by the connection's close.
fn stream_head(
    out: &mut Vec<u8>,
    content_type: &str,
    inv: &StreamingInvocation,
    chunked: bool,
    keep: bool,
) {
    use std::io::Write;
    let _ = write!(
        out,
        "HTTP/1.1 200 {}\r\nDate: {}\r\n{}Content-Type: {}\r\nX-Amz-Executed-Version: {}\r\nx-amzn-RequestId: {}\r\n{}\r\n",
        reason_phrase(200),
        http_date().as_str(),
        if chunked { "Transfer-Encoding: chunked\r\n" } else { "" },
        content_type.replace(['\r', '\n'], ""),
        inv.version,
        inv.id,
        if keep { "" } else { "Connection: close\r\n" },
    );
}

/// The `InvokeComplete` event for how the invocation ended (a non-streaming answer is sent as
/// its payload first, in `PayloadChunk`s).
fn complete_event(out: &mut BytesMut, result: InvokeResult) {
    let log = result
        .log_tail
        .as_ref()
        .map(|tail| base64::engine::general_purpose::STANDARD.encode(tail));
    let (code, details) = match result.outcome {
        InvokeOutcome::Success { body } => {
            eventstream::payload_chunks(out, &body);
            (None, None)
        }
        InvokeOutcome::FunctionError { body, .. } => {
            let doc: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            let code = doc["errorType"].as_str().unwrap_or("Unhandled").to_string();
            let details = match doc["errorMessage"].as_str() {
                Some(message) => message.to_string(),
                None => String::from_utf8_lossy(&body).into_owned(),
            };
            (Some(code), Some(details))
        }
        InvokeOutcome::Service(e) => (Some(e.kind.name().to_string()), Some(e.message.clone())),
    };
    eventstream::invoke_complete(out, code.as_deref(), details.as_deref(), log.as_deref());
}

/// The next event of `inv`, watching the caller's connection meanwhile: `None` when the caller
/// has gone (the invocation is then dropped, which abandons it).
pub async fn next_watching(conn: &HttpConn, inv: &mut StreamingInvocation) -> Option<StreamEvent> {
    loop {
        match tokio::time::timeout(Duration::from_millis(PEER_CHECK_MS), inv.next()).await {
            Ok(event) => return event,
            Err(_) if peer_closed(conn) => return None,
            Err(_) => {}
        }
    }
}

/// Whether the caller closed or reset its connection, without consuming anything it sent (a
/// pipelined request stays in the socket for the connection's next read).
fn peer_closed(conn: &HttpConn) -> bool {
    let mut byte = 0u8;
    // SAFETY: the fd is open (owned by `conn.stream`); the kernel writes at most one byte into
    // `byte`, which outlives the call; MSG_PEEK leaves the data queued.
    let n = unsafe {
        libc::recv(
            conn.stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n > 0 {
        return false;
    }
    if n == 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    !matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
    )
}

/// The runtime side of one streamed answer, on the instance's home core: forwards what the
/// runtime streams to the caller (or collects it, for a caller that asked for a plain Invoke)
/// and says how the invocation ends. Used by the HTTP Runtime API (a `/response` with
/// `Lambda-Runtime-Function-Response-Mode: streaming`) and the WebSocket one
/// (`response_chunk` / `response_end`).
pub struct ResponseStream {
    pub request_id: String,
    sink: Sink,
    bytes: usize,
    /// The invocation was already ended (the response passed its size limit): the rest of the
    /// upload is read and dropped.
    ended: bool,
}

enum Sink {
    /// The caller reads a stream; `None` once it has gone.
    Caller(Option<StreamSender>),
    /// The caller wants the response whole (plain Invoke): collected up to Invoke's limit.
    Whole(BytesMut),
}

impl ResponseStream {
    /// Starts the stream of `request_id` of instance `id` (refused as any answer would be:
    /// unknown instance, not its invocation).
    pub async fn begin(
        core: &Rc<Core>,
        id: InstanceId,
        request_id: &str,
        content_type: Option<String>,
    ) -> Result<ResponseStream, RuntimeRefusal> {
        let target = core.sched.borrow().stream_to(id, request_id)?;
        let sink = match target {
            Some(tx) => {
                let open = tx.send(StreamItem::Start { content_type }).await.is_ok();
                Sink::Caller(open.then_some(tx))
            }
            None => Sink::Whole(BytesMut::new()),
        };
        Ok(ResponseStream {
            request_id: request_id.to_string(),
            sink,
            bytes: 0,
            ended: false,
        })
    }

    /// Whether the invocation has been ended early (see `push`).
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Hands on `data` (waiting while the caller's queue is full). `Some(outcome)` when the
    /// response has just passed its size limit: the caller of `push` must end the invocation
    /// with it now; what follows is dropped.
    pub async fn push(&mut self, data: Bytes) -> Option<InvokeOutcome> {
        if self.ended || data.is_empty() {
            return None;
        }
        self.bytes += data.len();
        let limit = match self.sink {
            Sink::Caller(_) => STREAM_RESPONSE_BYTES_MAX,
            Sink::Whole(_) => INVOKE_PAYLOAD_BYTES_MAX,
        };
        if self.bytes > limit {
            self.ended = true;
            self.sink = Sink::Caller(None);
            return Some(runtime_error_outcome(
                "Function.ResponseSizeTooLarge",
                &format!(
                    "Response payload size exceeded maximum allowed payload size ({limit} bytes)."
                ),
            ));
        }
        match &mut self.sink {
            Sink::Caller(Some(tx)) => {
                if tx.send(StreamItem::Chunk(data)).await.is_err() {
                    // The caller went away; the scheduler's tick recycles the instance.
                    self.sink = Sink::Caller(None);
                }
            }
            Sink::Caller(None) => {}
            Sink::Whole(buf) => buf.extend_from_slice(&data),
        }
        None
    }

    /// The stream ended; `error` is the runtime's report of a failed handler. The outcome to
    /// answer the invocation with, or `None` if it was already ended.
    pub fn finish(self, error: Option<InvokeOutcome>) -> Option<InvokeOutcome> {
        if self.ended {
            return None;
        }
        Some(match (error, self.sink) {
            (Some(error), _) => error,
            (None, Sink::Whole(buf)) => InvokeOutcome::Success { body: buf.freeze() },
            (None, Sink::Caller(_)) => InvokeOutcome::Success { body: Bytes::new() },
        })
    }
}

/// The function error a streamed HTTP upload reports in its trailers
/// (`Lambda-Runtime-Function-Error-Type`, and `-Body` as base64 of the error document).
pub fn trailer_error(trailers: &[(String, Vec<u8>)]) -> Option<InvokeOutcome> {
    let field = |name: &str| {
        trailers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    };
    let error_type = field(ERROR_TYPE_TRAILER)?;
    let error_type = String::from_utf8_lossy(error_type).into_owned();
    let body = field(ERROR_BODY_TRAILER)
        .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
        .filter(|doc| serde_json::from_slice::<serde::de::IgnoredAny>(doc).is_ok())
        .map(Bytes::from)
        .unwrap_or_else(|| function_error_body(&error_type, "", None));
    Some(InvokeOutcome::FunctionError {
        function_error: "Unhandled",
        body,
    })
}

/// Whether a Runtime API request is a streamed `/response` (read piece by piece).
pub fn is_streamed_response(req: &Request) -> bool {
    req.path().ends_with("/response")
        && req
            .header_str(RESPONSE_MODE_HEADER)
            .is_some_and(|m| m.eq_ignore_ascii_case("streaming"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_make_the_error_document() {
        let doc = br#"{"errorType":"Error","errorMessage":"boom"}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(doc);
        let trailers = vec![
            (
                "Lambda-Runtime-Function-Error-Type".to_string(),
                b"Error".to_vec(),
            ),
            (
                "Lambda-Runtime-Function-Error-Body".to_string(),
                b64.into_bytes(),
            ),
        ];
        match trailer_error(&trailers) {
            Some(InvokeOutcome::FunctionError { body, .. }) => assert_eq!(&body[..], doc),
            other => panic!("{other:?}"),
        }
        // Only the type: the document is built from it.
        let only_type = &trailers[..1];
        match trailer_error(only_type) {
            Some(InvokeOutcome::FunctionError { body, .. }) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(v["errorType"], "Error");
            }
            other => panic!("{other:?}"),
        }
        assert!(trailer_error(&[]).is_none());
    }

    #[test]
    fn complete_event_carries_the_error_and_the_log() {
        let mut out = BytesMut::new();
        complete_event(
            &mut out,
            InvokeResult {
                outcome: runtime_error_outcome("Sandbox.Timedout", "Task timed out"),
                log_tail: Some(Bytes::from_static(b"log")),
                cold_start: false,
            },
        );
        let m = eventstream::decode(&mut out).unwrap().unwrap();
        assert_eq!(m.header(":event-type"), Some("InvokeComplete"));
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        assert_eq!(body["ErrorCode"], "Sandbox.Timedout");
        assert_eq!(body["ErrorDetails"], "Task timed out");
        assert_eq!(body["LogResult"], "bG9n");
        // A whole answer goes out as its payload, then a clean InvokeComplete.
        let mut out = BytesMut::new();
        complete_event(
            &mut out,
            InvokeResult {
                outcome: InvokeOutcome::Success {
                    body: Bytes::from_static(b"whole"),
                },
                log_tail: None,
                cold_start: false,
            },
        );
        let chunk = eventstream::decode(&mut out).unwrap().unwrap();
        assert_eq!(&chunk.payload[..], b"whole");
        let end = eventstream::decode(&mut out).unwrap().unwrap();
        assert_eq!(&end.payload[..], b"{}");
    }

    #[test]
    fn stream_paths() {
        assert!(is_stream_invoke(
            "/2021-11-15/functions/f/response-streaming-invocations"
        ));
        assert!(!is_stream_invoke("/2015-03-31/functions/f/invocations"));
    }
}
