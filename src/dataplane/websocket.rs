//! The WebSocket Runtime API (`GET /2018-06-01/runtime/websocket?fn=NAME`), message for message as
//! `docs/websocket-protocol.md` describes.
//!
//! Runs on the instance's home core. A session is one registered instance: after `register` it is
//! parked in the scheduler like an HTTP `/next`, and each `response`/`error` parks it again. A
//! reader task owns the socket's reads; a writer task owns its writes (invocations, pongs,
//! `error_response`s, close), so a read is never dropped mid-flight. An invocation frame is the
//! envelope prefix, the caller's payload bytes and a suffix, written with one `writev`; a response
//! payload is sliced out of the runtime's frame. A streamed response (`response_chunk`s, then
//! `response_end`) is handed on chunk by chunk (`streaming::ResponseStream`); the reader waits
//! while the caller's queue is full, so a fast runtime is slowed by TCP. Closing the socket fails the in-flight invocation
//! and retires the instance. Upgrades on the shared Runtime API port are handed to the home core
//! of the instance their `register` names, which admits them only from that instance's uid
//! (`identity::check_instance`); such sessions (among them remote instances' agents, which have
//! no uid here and are admitted on their secret) get TCP keepalive, so a vanished peer ends its
//! session. A `log` message feeds the instance's log (`LogSource::feed`).

use std::cell::Cell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, Notify};
use tokio_uring::net::TcpStream;
use tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use super::conn::{read_into, write_vectored, HttpConn, READ_CHUNK_BYTES};
use super::core::{ConnKind, Core};
use super::scheduler::{runtime_error_outcome, Outgoing, RuntimeRefusal, Work};
use super::streaming::ResponseStream;
use crate::config::INVOKE_PAYLOAD_BYTES_MAX;
use crate::model::metrics::WsMetrics;
use crate::model::types::{function_error_body, InstanceId, InvokeOutcome};
use crate::model::CoreMsg;
use crate::protocols::http::Request;
use crate::protocols::runtime_messages::{
    self as msg, error_code, ClientMessage, MessageError, Register,
};
use crate::protocols::ws::{self, Message, Role};

/// Seconds a runtime has to send `register` after the upgrade; a socket that never registers
/// would otherwise hold a connection and a task forever.
const REGISTER_WAIT_S: u64 = 10;
/// Starting capacity of the `101 Switching Protocols` reply: its status line, three headers, the
/// 28-byte accept key and `Lambda-Runtime-Registered` fit without growing the buffer.
const HANDSHAKE_REPLY_BYTES: usize = 192;
/// Starting capacity of an invocation frame's head: the frame head and the envelope prefix (ids,
/// deadline, ARN, trace id) fit without growing it in the common case.
const INVOCATION_HEAD_BYTES: usize = 320;
/// Frames (pongs, error responses) the reader may queue before it stops reading until the writer
/// has sent some: what a runtime that never reads can make us hold.
const OUTGOING_FRAMES_MAX: usize = 64;
/// TCP keepalive of sessions registered on the shared port (which is where remote instances'
/// agents link from other machines): idle seconds before the first probe, seconds between
/// probes, unanswered probes before the kernel ends the connection. A peer whose machine or
/// network vanished sends no FIN; without probes its session (and its invocation, if Swarm does
/// not report the loss first) would wait forever. About 25 s from silence to the end.
const LINK_KEEPALIVE_IDLE_S: u64 = 10;
const LINK_KEEPALIVE_INTERVAL_S: u64 = 5;
const LINK_KEEPALIVE_PROBES: u32 = 3;

/// Handles the upgrade request on a Runtime API connection. Returns when the session ends (the
/// connection is then finished) or after writing a refusal.
pub async fn upgrade(core: Rc<Core>, mut conn: HttpConn, req: Request, kind: ConnKind) {
    let function = req.query_param("fn").unwrap_or_default();
    tracing::info!("WebSocket connection request for function: {function}");
    let accept = ws::validate_upgrade(req.method_str(), req.version_minor, &|n| req.header(n));
    let accept = match accept {
        Ok(a) => a,
        Err(e) => {
            core.shared
                .metrics
                .ws
                .protocol_errors
                .fetch_add(1, Ordering::Relaxed);
            let mut out = Vec::new();
            ws::write_handshake_rejection(&mut out, &e);
            let _ = conn.write_raw(&out).await;
            return;
        }
    };
    // Registering in the upgrade request (docs/websocket-protocol.md): the instance's secret in
    // a header and its function in `?fn=` stand for the `register` message, which saves the
    // runtime a round trip before its first invocation. Checked exactly as a `register` is.
    let by_header = req
        .header_str(ws::INSTANCE_ID_HEADER)
        .map(|token| Register {
            function_name: function.clone(),
            runtime: req
                .header_str(ws::RUNTIME_NAME_HEADER)
                .unwrap_or_default()
                .to_string(),
            version: req
                .header_str(ws::FUNCTION_VERSION_HEADER)
                .unwrap_or_default()
                .to_string(),
            instance_id: token.to_string(),
            binary: false,
        });
    let mut out = Vec::with_capacity(HANDSHAKE_REPLY_BYTES);
    if by_header.is_some() {
        ws::write_switching_protocols_registered(&mut out, &accept);
    } else {
        ws::write_switching_protocols(&mut out, &accept);
    }
    if conn.write_raw(&out).await.is_err() {
        return;
    }
    tracing::info!("WebSocket connected");
    let m = &core.shared.metrics.ws;
    m.connections_total.fetch_add(1, Ordering::Relaxed);
    let buffered = conn.take_buffered();
    let stream = conn.stream;
    let mut reader = Reader::new(stream.clone(), buffered, core.clone());
    let ws_metrics = &core.shared.metrics.ws;
    let register = match by_header {
        Some(_) if function.is_empty() => {
            let why = "registering in the upgrade request needs ?fn=";
            return refuse(ws_metrics, &stream, why, error_code::REGISTER_REJECTED).await;
        }
        Some(register) => register,
        None => {
            let register_wait = Duration::from_secs(REGISTER_WAIT_S);
            match tokio::time::timeout(register_wait, reader.register()).await {
                Ok(Ok(r)) => r,
                Ok(Err(why)) => {
                    return refuse(ws_metrics, &stream, &why, error_code::NOT_REGISTERED).await
                }
                Err(_) => {
                    let why = format!("no register message within {REGISTER_WAIT_S} s");
                    return refuse(ws_metrics, &stream, &why, error_code::NOT_REGISTERED).await;
                }
            }
        }
    };
    let id = match claimed_instance(&register, kind, &function, core.shared.cores.len()) {
        Ok(id) => id,
        Err(why) => return refuse(ws_metrics, &stream, why, error_code::REGISTER_REJECTED).await,
    };
    if id.home_core() != core.index {
        return hand_off(&core, stream, reader.buf, register, id);
    }
    // A connection on the instance's own address was admitted by its uid at accept.
    let peer_checked = matches!(kind, ConnKind::Runtime(_));
    run_session(core, stream, reader, register, id, peer_checked).await;
}

/// Which instance a register claims: the connection's own, or (shared port) the one its token
/// names. The token's secret is checked on the instance's home core (`Scheduler::verify`).
fn claimed_instance(
    register: &Register,
    kind: ConnKind,
    fn_param: &str,
    cores: usize,
) -> Result<InstanceId, &'static str> {
    let claimed = InstanceId::from_token(&register.instance_id)
        .ok_or("register does not name an instance of this server")?;
    if matches!(kind, ConnKind::Runtime(own) if own != claimed) {
        return Err("register names another instance than this address serves");
    }
    if !fn_param.is_empty() && fn_param != register.function_name {
        return Err("register names another function than the connection's ?fn=");
    }
    if claimed.home_core() >= cores {
        return Err("register names an instance of no core of this server");
    }
    Ok(claimed)
}

/// Moves a registered connection to the instance's home core (shared-port upgrades only).
fn hand_off(
    core: &Rc<Core>,
    stream: Rc<TcpStream>,
    buffered: BytesMut,
    register: Register,
    id: InstanceId,
) {
    // No read or write is in flight on it at this point.
    let Some(fd) = super::conn::dup_socket(&stream) else {
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    };
    core.shared.send_core(
        id.home_core(),
        CoreMsg::AdoptWebSocket {
            id,
            fd,
            buffered,
            register,
        },
    );
}

/// The home core's side of `hand_off`.
pub fn adopt(core: &Rc<Core>, id: InstanceId, fd: OwnedFd, buffered: BytesMut, register: Register) {
    let stream = Rc::new(TcpStream::from_std(std::net::TcpStream::from(fd)));
    let reader = Reader::new(stream.clone(), buffered, core.clone());
    let core = core.clone();
    tokio_uring::spawn(async move { run_session(core, stream, reader, register, id, false).await });
}

async fn refuse(m: &WsMetrics, stream: &Rc<TcpStream>, why: &str, code: &str) {
    m.protocol_errors.fetch_add(1, Ordering::Relaxed);
    tracing::info!("WebSocket register refused: {why}");
    let mut text = Vec::new();
    msg::error_response(&mut text, why, code);
    let mut out = Vec::new();
    ws::write_frame_head(&mut out, OpCode::Data(Data::Text), text.len(), None);
    out.extend_from_slice(&text);
    ws::encode_close(&mut out, CloseCode::Policy.into(), why);
    let (_, _) = stream.write_all(out).await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

async fn run_session(
    core: Rc<Core>,
    stream: Rc<TcpStream>,
    mut reader: Reader,
    register: Register,
    id: InstanceId,
    peer_checked: bool,
) {
    // On the shared port only the register names the instance: the kernel must agree that the
    // connection comes from that instance's uid (checked here, on its home core, which knows it).
    if !peer_checked {
        if let Err(why) = super::identity::check_instance(&core, stream.as_raw_fd(), id) {
            super::identity::refused(&core);
            let why = format!("register names another instance than the one connecting: {why}");
            let code = error_code::REGISTER_REJECTED;
            return refuse(&core.shared.metrics.ws, &stream, &why, code).await;
        }
    }
    let verified = core
        .sched
        .borrow()
        .verify(id, &register.instance_id, &register.function_name);
    if !verified {
        let why = "instance_id or function_name does not match a live instance";
        return refuse(
            &core.shared.metrics.ws,
            &stream,
            why,
            error_code::REGISTER_REJECTED,
        )
        .await;
    }
    if !peer_checked {
        keep_alive(stream.as_raw_fd());
    }
    tracing::info!(instance = %id, function = %register.function_name, "Container registered via WebSocket");
    let m = &core.shared.metrics.ws;
    m.connections_open.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::unbounded_channel();
    let backlog = Rc::new(Backlog::default());
    let writer = tokio_uring::spawn(write_loop(
        core.clone(),
        stream.clone(),
        rx,
        backlog.clone(),
        register.binary,
    ));
    let out = Outbox {
        tx: tx.clone(),
        backlog,
    };
    if core.sched.borrow_mut().ready_ws(id, tx.clone()).is_ok() {
        read_loop(&core, &mut reader, id, &out).await;
    }
    drop(out);
    core.sched.borrow_mut().disconnected(id);
    drop(tx);
    let _ = writer.await;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    core.shared
        .metrics
        .ws
        .connections_open
        .fetch_sub(1, Ordering::Relaxed);
}

/// Turns on `LINK_KEEPALIVE_*` probes on a session's socket; failure only costs the detection.
fn keep_alive(fd: std::os::fd::RawFd) {
    // SAFETY: the session's stream owns `fd` and keeps it open for this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(LINK_KEEPALIVE_IDLE_S))
        .with_interval(Duration::from_secs(LINK_KEEPALIVE_INTERVAL_S))
        .with_retries(LINK_KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(&borrowed).set_tcp_keepalive(&keepalive) {
        tracing::debug!("WebSocket keepalive not set: {e}");
    }
}

/// Reads messages until the connection ends; each `response`/`error` completes the in-flight
/// invocation and parks the instance again.
async fn read_loop(core: &Rc<Core>, reader: &mut Reader, id: InstanceId, out: &Outbox) {
    let m = &core.shared.metrics.ws;
    // The streamed response this runtime is sending, if any (`response_chunk`s so far).
    let mut streaming: Option<ResponseStream> = None;
    loop {
        out.room().await;
        let parsed = match reader.next_incoming().await {
            Ok(Some(Incoming::Client(parsed))) => parsed,
            Ok(Some(Incoming::Ping(pong))) => {
                out.frame(Bytes::from(pong));
                continue;
            }
            Ok(Some(Incoming::Pong)) => continue,
            Ok(Some(Incoming::Close)) => return send_close(out, CloseCode::Normal.into(), ""),
            Ok(None) => return,
            Err(e) => {
                m.protocol_errors.fetch_add(1, Ordering::Relaxed);
                return send_close(out, e.close_code(), &e.to_string());
            }
        };
        match parsed {
            Ok(ClientMessage::ResponseChunk {
                request_id,
                data,
                content_type,
            }) => {
                on_chunk(
                    core,
                    id,
                    &mut streaming,
                    request_id,
                    data,
                    content_type,
                    out,
                )
                .await
            }
            Ok(ClientMessage::ResponseEnd {
                request_id,
                content_type,
                error_type,
                error_message,
                stack_trace,
            }) => {
                let error = error_type.map(|error_type| InvokeOutcome::FunctionError {
                    function_error: "Unhandled",
                    body: function_error_body(
                        &error_type,
                        error_message.as_deref().unwrap_or_default(),
                        Some(&serde_json::json!(stack_trace)),
                    ),
                });
                let stream = match streaming.take() {
                    Some(s) if s.request_id == request_id => Some(s),
                    // A stream that ends without a chunk still starts (its content type).
                    _ => begin_stream(core, id, &request_id, content_type, out).await,
                };
                if let Some(stream) = stream {
                    let ended = stream.ended();
                    match stream.finish(error) {
                        Some(outcome) => deliver(core, id, request_id, outcome, out),
                        // Already answered (size limit): the runtime is ready again.
                        None if ended => {
                            let parked = core.sched.borrow_mut().ready_ws(id, out.tx.clone());
                            if let Err(r) = parked {
                                refused(out, &request_id, r);
                            }
                        }
                        None => {}
                    }
                }
            }
            Ok(message) => on_message(core, id, message, out),
            Err(e) => {
                m.protocol_errors.fetch_add(1, Ordering::Relaxed);
                send_error_response(out, &e.to_string(), e.code());
            }
        }
    }
}

fn on_message(core: &Rc<Core>, id: InstanceId, message: ClientMessage, out: &Outbox) {
    let (request_id, outcome) = match message {
        ClientMessage::Response {
            request_id,
            payload,
            ..
        } => (request_id, response_outcome(payload)),
        ClientMessage::Error {
            request_id,
            error_message,
            error_type,
            stack_trace,
            init_error,
            ..
        } => {
            let outcome = InvokeOutcome::FunctionError {
                function_error: "Unhandled",
                body: function_error_body(
                    &error_type,
                    &error_message,
                    Some(&serde_json::json!(stack_trace)),
                ),
            };
            if init_error {
                // The runtime's init failed and it is exiting: the instance ends with this
                // answer. Parked as ready instead, it was handed the next pending invocation
                // before its agent's close arrived, and that one failed as a bare exit.
                let answered = core
                    .sched
                    .borrow_mut()
                    .respond_ws_and_end(id, &request_id, outcome);
                if let Err(r) = answered {
                    refused(out, &request_id, r);
                }
                return;
            }
            (request_id, outcome)
        }
        ClientMessage::Ping => {
            return out.frame(text_frame(msg::PONG));
        }
        ClientMessage::Log { data } => {
            // Only from an instance without a pipe (a remote one's agent): a local instance's
            // output goes through its pipe, whose reads are rate-bounded per instance, and a
            // `log` message from its function code must not get around that bound.
            let log = core.sched.borrow().log_source(id);
            match log {
                Some(log) if !log.has_pipe() => log.feed(&data),
                Some(_) => {
                    tracing::debug!(instance = %id, "log message from an instance with an output pipe: ignored")
                }
                None => {}
            }
            return;
        }
        ClientMessage::Pong => return,
        ClientMessage::Register(_) => {
            return send_error_response(out, "already registered", error_code::ALREADY_REGISTERED);
        }
        // `read_loop` handles the streaming messages before they get here.
        ClientMessage::ResponseChunk { .. } | ClientMessage::ResponseEnd { .. } => return,
    };
    deliver(core, id, request_id, outcome, out);
}

/// One `response_chunk`: starts the stream on its first chunk, then hands the data on (waiting,
/// and so not reading more from the runtime, while the caller's queue is full).
async fn on_chunk(
    core: &Rc<Core>,
    id: InstanceId,
    streaming: &mut Option<ResponseStream>,
    request_id: String,
    data: Bytes,
    content_type: Option<String>,
    out: &Outbox,
) {
    if streaming
        .as_ref()
        .is_none_or(|s| s.request_id != request_id)
    {
        *streaming = begin_stream(core, id, &request_id, content_type, out).await;
    }
    let Some(stream) = streaming.as_mut() else {
        return;
    };
    if let Some(too_large) = stream.push(data).await {
        // Ended now so the caller is not kept waiting; the instance parks at `response_end`.
        let _ = core.sched.borrow_mut().respond(id, &request_id, too_large);
    }
}

/// Starts the stream of `request_id`, or tells the runtime why it may not.
async fn begin_stream(
    core: &Rc<Core>,
    id: InstanceId,
    request_id: &str,
    content_type: Option<String>,
    out: &Outbox,
) -> Option<ResponseStream> {
    match ResponseStream::begin(core, id, request_id, content_type).await {
        Ok(stream) => Some(stream),
        Err(r) => {
            refused(out, request_id, r);
            None
        }
    }
}

/// Hands the runtime's answer to the scheduler, which parks the instance again, and tells the
/// runtime if the answer was refused.
fn deliver(
    core: &Rc<Core>,
    id: InstanceId,
    request_id: String,
    outcome: InvokeOutcome,
    out: &Outbox,
) {
    let answered = core
        .sched
        .borrow_mut()
        .respond_ws(id, &request_id, outcome, out.tx.clone());
    match answered {
        Ok(()) => {
            tracing::info!(target: "invocations", "Posted response for: {request_id}");
        }
        Err(r) => refused(out, &request_id, r),
    }
}

/// Tells the runtime why its answer to `request_id` was refused.
fn refused(out: &Outbox, request_id: &str, refusal: RuntimeRefusal) {
    match refusal {
        RuntimeRefusal::NotYourRequest => {
            let why = format!("request {request_id} is not the invocation this connection holds");
            send_error_response(out, &why, error_code::UNEXPECTED_REQUEST_ID);
        }
        RuntimeRefusal::UnknownInstance => {
            // Answered, but the instance is retired: the writer closes the connection.
            send_close(out, CloseCode::Away.into(), "instance retired");
        }
        RuntimeRefusal::AlreadyWaiting => {
            // Another connection of this instance is parked for work: this one is superfluous.
            send_close(
                out,
                CloseCode::Policy.into(),
                "another connection is waiting for work",
            );
        }
    }
}

/// The session's outgoing queue as its reader sees it: invocations come from the scheduler (at
/// most one at a time), every other frame (pongs, error responses, close) from the reader, which
/// waits while `OUTGOING_FRAMES_MAX` of them are unwritten. A runtime that sends without
/// reading is thereby slowed to what it reads (TCP backpressure), never buffered.
struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    backlog: Rc<Backlog>,
}

/// Frames queued by the reader and not yet written (shared with the writer, same core).
#[derive(Default)]
struct Backlog {
    frames: Cell<usize>,
    drained: Notify,
}

impl Outbox {
    fn frame(&self, frame: Bytes) {
        if self.tx.send(Outgoing::Frame(frame)).is_ok() {
            self.backlog.frames.set(self.backlog.frames.get() + 1);
        }
    }

    /// Waits until the writer has caught up enough to queue another frame.
    async fn room(&self) {
        while self.backlog.frames.get() >= OUTGOING_FRAMES_MAX {
            self.backlog.drained.notified().await;
        }
    }
}

fn send_error_response(out: &Outbox, message: &str, code: &str) {
    let mut text = Vec::new();
    msg::error_response(&mut text, message, code);
    out.frame(text_frame(&text));
}

/// Queues a close frame; the writer ends the connection after sending it.
fn send_close(out: &Outbox, code: u16, reason: &str) {
    let mut frame = Vec::new();
    ws::encode_close(&mut frame, code, reason);
    out.frame(Bytes::from(frame));
}

fn text_frame(text: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(text.len() + ws::UNMASKED_FRAME_HEAD_BYTES_MAX);
    ws::write_frame_head(&mut out, OpCode::Data(Data::Text), text.len(), None);
    out.extend_from_slice(text);
    Bytes::from(out)
}

/// A `response` over the size Invoke allows fails the invocation as over HTTP
/// (`Function.ResponseSizeTooLarge`), rather than reaching the caller.
fn response_outcome(payload: Bytes) -> InvokeOutcome {
    if payload.len() > INVOKE_PAYLOAD_BYTES_MAX {
        return runtime_error_outcome(
            "Function.ResponseSizeTooLarge",
            &format!(
                "Response payload size exceeded maximum allowed payload size ({INVOKE_PAYLOAD_BYTES_MAX} bytes)."
            ),
        );
    }
    InvokeOutcome::Success { body: payload }
}

/// Writes everything the session sends, in order. Ends after a close frame or when the
/// session drops its sender.
async fn write_loop(
    core: Rc<Core>,
    stream: Rc<TcpStream>,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    backlog: Rc<Backlog>,
    binary: bool,
) {
    let m = &core.shared.metrics.ws;
    while let Some(out) = rx.recv().await {
        let (parts, is_close) = match out {
            Outgoing::Work(work) => {
                tracing::info!(target: "invocations", "Got invocation: {}", work.id);
                (invocation_frame(work, binary), false)
            }
            Outgoing::Frame(f) => {
                backlog.frames.set(backlog.frames.get().saturating_sub(1));
                backlog.drained.notify_one();
                let close = f.first().is_some_and(|&b| ws::is_close_frame_head(b));
                (vec![f], close)
            }
        };
        let bytes: usize = parts.iter().map(|p| p.len()).sum();
        m.messages_out.fetch_add(1, Ordering::Relaxed);
        m.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
        if write_vectored(&stream, parts).await.is_err() || is_close {
            let _ = stream.shutdown(std::net::Shutdown::Both);
            return;
        }
    }
}

/// `[frame head + envelope prefix][caller's payload][suffix]`: the payload is not copied.
fn invocation_frame(work: Work, binary: bool) -> Vec<Bytes> {
    let cc = work
        .context
        .client_context
        .as_ref()
        .map(|c| String::from_utf8_lossy(c).into_owned());
    let (id, arn, trace) = (
        work.id.as_str(),
        work.context.invoked_arn(&work.function),
        &*work.context.trace_id,
    );
    let mut head = Vec::with_capacity(INVOCATION_HEAD_BYTES);
    if binary {
        let header = msg::invocation_binary_header(id, work.deadline_ms, arn, trace, cc.as_deref());
        let len = header.len() + work.payload.len();
        ws::write_frame_head(&mut head, OpCode::Data(Data::Binary), len, None);
        head.extend_from_slice(&header);
        return vec![Bytes::from(head), work.payload];
    }
    let env = msg::invocation_envelope(id, work.deadline_ms, arn, trace, cc.as_deref());
    ws::write_frame_head(
        &mut head,
        OpCode::Data(Data::Text),
        env.message_bytes(work.payload.len()),
        None,
    );
    head.extend_from_slice(&env.prefix);
    vec![
        Bytes::from(head),
        work.payload,
        Bytes::from_static(env.suffix),
    ]
}

/// What one received message asks of the session; the same for the register phase and after.
enum Incoming {
    /// A Runtime API message (text or binary), or why it is not a valid one.
    Client(Result<ClientMessage, MessageError>),
    /// A ping, with the pong frame that answers it (RFC 6455 5.5.2).
    Ping(Vec<u8>),
    Pong,
    Close,
}

/// Frame reader over the socket: owns the read buffer and the decoder.
struct Reader {
    stream: Rc<TcpStream>,
    buf: BytesMut,
    decoder: ws::Decoder,
    /// For the byte counters.
    core: Rc<Core>,
}

impl Reader {
    fn new(stream: Rc<TcpStream>, buf: BytesMut, core: Rc<Core>) -> Reader {
        let m = &core.shared.metrics.ws;
        m.bytes_in.fetch_add(buf.len() as u64, Ordering::Relaxed);
        Reader {
            stream,
            buf,
            decoder: ws::Decoder::new(Role::Server, ws::FRAME_BYTES_MAX, ws::MESSAGE_BYTES_MAX),
            core,
        }
    }

    /// The next message; `None` at end of stream.
    async fn next(&mut self) -> Result<Option<Message>, ws::WsError> {
        loop {
            if let Some(m) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(m));
            }
            match read_into(&self.stream, &mut self.buf, READ_CHUNK_BYTES).await {
                Ok(0) | Err(_) => return Ok(None),
                Ok(n) => {
                    let m = &self.core.shared.metrics.ws;
                    m.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// The next message, counted and classified; `None` at end of stream.
    async fn next_incoming(&mut self) -> Result<Option<Incoming>, ws::WsError> {
        let Some(message) = self.next().await? else {
            return Ok(None);
        };
        self.core
            .shared
            .metrics
            .ws
            .messages_in
            .fetch_add(1, Ordering::Relaxed);
        Ok(Some(match message {
            Message::Text(t) => Incoming::Client(msg::parse_client_message(&t)),
            Message::Binary(b) => Incoming::Client(msg::parse_client_binary(&b)),
            Message::Ping(p) => {
                let mut pong = Vec::new();
                ws::encode_pong(&mut pong, &p);
                Incoming::Ping(pong)
            }
            Message::Pong(_) => Incoming::Pong,
            Message::Close(_) => Incoming::Close,
        }))
    }

    /// The first message must be a valid `register`.
    async fn register(&mut self) -> Result<Register, String> {
        loop {
            let parsed = match self.next_incoming().await {
                Ok(Some(Incoming::Client(parsed))) => parsed,
                Ok(Some(Incoming::Ping(pong))) => {
                    // No writer task exists yet: answer directly (RFC 6455 §5.5.2).
                    let (res, _) = self.stream.write_all(pong).await;
                    res.map_err(|e| e.to_string())?;
                    continue;
                }
                Ok(Some(Incoming::Pong)) => continue,
                Ok(Some(Incoming::Close)) => return Err("closed before register".into()),
                Ok(None) => return Err("connection closed before register".into()),
                Err(e) => return Err(e.to_string()),
            };
            return match parsed {
                Ok(ClientMessage::Register(r)) => Ok(r),
                Ok(_) => Err("the first message must be register".into()),
                Err(e) => Err(e.to_string()),
            };
        }
    }
}
