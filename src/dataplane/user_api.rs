//! The User API (AWS Lambda REST-JSON, port 9000): Invoke on the data plane, management calls
//! forwarded to the control plane.
//!
//! Runs on every core. Routing is one `match` on (method, path); InvokeWithResponseStream, which
//! writes its answer as it arrives, is served by `streaming` before it. Invoke never waits for the
//! control plane: it admits (concurrency), submits to this core's scheduler and awaits the result.
//! Management calls send their raw body to the control plane and await its reply. Every error
//! leaves here in AWS's shape (`error::ApiError`). With authentication on (`--auth`), every
//! request but `/healthz` and `/metrics` is checked before routing (`model::auth`): Invoke's
//! whole SigV4 signature here, a management call's header, key and clock here and its signature
//! on the control plane. A request whose `Host` names a function URL is not a User API call:
//! `function_url` serves it (with its own authentication rules) on the same connection.

use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::conn::{dup_socket, ConnError, HttpConn, Response};
use super::core::Core;
use super::function_url;
use crate::config::{EVENT_PAYLOAD_BYTES_MAX, INVOKE_PAYLOAD_BYTES_MAX, USER_API_BODY_BYTES_MAX};
use crate::model::error::{ApiError, ErrorKind};
use crate::model::names::{function_ref_from_path, validate_qualifier};
use crate::model::types::{
    function_arn, InvokeContext, InvokeOutcome, InvokeResult, RequestId, LATEST,
};
use crate::model::{ApiAnswer, ControlMsg, CoreMsg, EventMsg, Invocation, NewEvent, Permit};
use crate::protocols::http::{Limits, Method, Request};

pub fn limits() -> Limits {
    Limits {
        body_bytes_max: USER_API_BODY_BYTES_MAX,
        body_bytes_max_for: Some(invoke_body_limit),
        ..Limits::default()
    }
}

/// Invoke, and a request to a function URL, take at most AWS's 6 MB: a larger `Content-Length`
/// is refused (413) before any of the body is read, although the same connection may carry
/// 70 MB CreateFunction uploads.
fn invoke_body_limit(path: &str, host: Option<&[u8]>) -> Option<usize> {
    let invoke = path.ends_with("/invocations")
        || path.ends_with("/invoke-async")
        || path.ends_with("/response-streaming-invocations")
        || host
            .and_then(|h| std::str::from_utf8(h).ok())
            .is_some_and(|h| crate::model::urls::url_id_of_host(h).is_some());
    invoke.then_some(INVOKE_PAYLOAD_BYTES_MAX)
}

/// Serves one User API connection until it closes.
pub async fn serve(core: Rc<Core>, mut conn: HttpConn) {
    // The peer's address, read at the first function URL request (its events' `sourceIp`).
    let mut peer = None;
    let mut follow = Follow::default();
    loop {
        let req = match conn.next_request().await {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(ConnError::Http(e)) => {
                let kind = match e.status() {
                    413 => ErrorKind::RequestTooLarge,
                    _ => ErrorKind::BadRequest,
                };
                let mut resp = error_response(&ApiError::new(kind, e.reason()), None);
                resp.status = e.status();
                resp.close = true;
                if conn.write_response(resp, false).await.is_ok() {
                    conn.linger().await;
                }
                return;
            }
            // Counted by the sweep that cut it off (`Core::sweep_deadlines`).
            Err(ConnError::TimedOut) => return,
            Err(_) => return,
        };
        if req.method == Method::Post && super::streaming::is_stream_invoke(req.path()) {
            // InvokeWithResponseStream writes its answer as it comes (`streaming`).
            if super::streaming::serve_invoke(&core, &mut conn, req).await {
                continue;
            }
            return;
        }
        let keep_alive = req.keep_alive;
        let resp = match function_url::url_id(&req).map(str::to_string) {
            Some(id) => {
                let ip = *peer.get_or_insert_with(|| function_url::peer_ip(&conn));
                match function_url::serve(&core, &id, req, ip).await {
                    function_url::Answer::Whole(resp) => resp,
                    function_url::Answer::Stream(stream) => {
                        // HTTP/1.0 has no chunked coding: such a client gets it as 1.1 chunks
                        // only if it said keep-alive; it is rare enough to just close after.
                        if function_url::write_stream(&mut conn, *stream, keep_alive).await {
                            continue;
                        }
                        return;
                    }
                }
            }
            None => route(&core, req).await,
        };
        let served_on = resp.served_on;
        if conn.write_response(resp, keep_alive).await.is_err() || !keep_alive {
            return;
        }
        if let Some(target) = follow.after(served_on) {
            if let Some(fd) = may_move(&core, &conn, target) {
                return hand_over(&core, conn, fd, target);
            }
        }
    }
}

/// Invocations in a row a connection's core hands to the same other core before the connection
/// follows them there.
pub const FOLLOW_AFTER: u32 = 3;

/// Where a connection's invocations are served. A function's instances live on the core where
/// its invocations first queued, and SO_REUSEPORT puts each caller's connection on whichever core
/// it likes; an invocation whose connection is on another core than an idle instance is handed
/// across, and its answer handed back: two cross-thread wake-ups per invocation (an eventfd
/// write each, and often a sleeping core woken), about 30 µs of server CPU per sequential
/// invocation on a 2-CPU VM (results/2026-12-02-server-cpu-floors.md). After `FOLLOW_AFTER`
/// invocations in a row handed to the same core, the connection moves there (between requests;
/// the socket travels as a descriptor, `CoreMsg::AdoptUserConn`), and its next invocations find
/// the instance on their own core. A connection whose invocations are served here, or spread over
/// cores (this core's instances busy now and then), stays. Any other answer restarts the count.
#[derive(Debug, Default)]
pub(crate) struct Follow {
    core: usize,
    streak: u32,
}

impl Follow {
    /// After an answer: the core to move to, when the connection should move now.
    pub(crate) fn after(&mut self, served_on: Option<usize>) -> Option<usize> {
        match served_on {
            Some(core) if self.streak > 0 && self.core == core => self.streak += 1,
            Some(core) => {
                self.core = core;
                self.streak = 1;
            }
            None => self.streak = 0,
        }
        if self.streak >= FOLLOW_AFTER {
            self.streak = 0;
            return Some(self.core);
        }
        None
    }
}

/// Whether the connection may move to `target` now, and then a duplicate of its socket's
/// descriptor to travel there. Not during shutdown; not when `target` has no free client slot
/// (the slot is reserved here, so `--connections-max` holds on every core however connections
/// move; this core's slot is released when `serve` returns); not when out of descriptors. In
/// each case the connection simply stays.
fn may_move(core: &Rc<Core>, conn: &HttpConn, target: usize) -> Option<OwnedFd> {
    if core.shared.shutting_down.load(Ordering::Relaxed) {
        return None;
    }
    let fd = dup_socket(&conn.stream)?;
    core.shared.take_client_slot(target).then_some(fd)
}

/// Moves the connection to core `target`: `fd` (a duplicate of its socket's descriptor) travels
/// with the bytes read past the last request; this core's copy closes when `conn` is dropped
/// here. Called between requests, with no read or write in flight.
fn hand_over(core: &Rc<Core>, conn: HttpConn, fd: OwnedFd, target: usize) {
    let (_stream, buffered) = conn.into_parts();
    core.shared
        .metrics
        .conns
        .followed
        .fetch_add(1, Ordering::Relaxed);
    core.shared
        .send_core(target, CoreMsg::AdoptUserConn { fd, buffered });
}

/// Invoke, InvokeAsync, health and metrics are served here, on the core; every other operation
/// is forwarded whole to the control plane, whose `control::api::route` is the routing table of
/// the management operations.
async fn route(core: &Rc<Core>, req: Request) -> Response {
    let path = req.path();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    if let Some(credentials) = &core.shared.auth {
        let now = SystemTime::now();
        let checked = match (req.method, segs.as_slice()) {
            // Probes and scrapers cannot sign; neither answer names a function.
            (Method::Get, ["healthz"] | ["metrics"]) => Ok(()),
            // Invoke is served here: its whole signature is checked here (payload ≤ 6 MB).
            (Method::Post, ["2015-03-31", "functions", _, "invocations"])
            | (Method::Post, ["2014-11-13", "functions", _, "invoke-async"]) => {
                credentials.verify(&req, now)
            }
            // Management calls: the cheap part here, so an unsigned or unknown caller never
            // reaches the control plane; the signature over the body there.
            _ => credentials.precheck(&req, now).map(|_| ()),
        };
        if let Err(e) = checked {
            core.shared
                .metrics
                .auth_failures
                .fetch_add(1, Ordering::Relaxed);
            return error_response(&e, None);
        }
    }
    match (req.method, segs.as_slice()) {
        (Method::Post, ["2015-03-31", "functions", name, "invocations"]) => {
            let name = name.to_string();
            invoke(core, &name, req).await
        }
        (Method::Post, ["2014-11-13", "functions", name, "invoke-async"]) => {
            let name = name.to_string();
            invoke_async_legacy(core, &name, req).await
        }
        (Method::Get, ["healthz"]) => Response::new(200, "ok\n"),
        (Method::Get, ["metrics"]) => metrics(core),
        _ => management(core, req).await,
    }
}

/// Forwards a management call to the control plane and renders its answer.
async fn management(core: &Rc<Core>, request: Request) -> Response {
    let (reply, rx) = oneshot::channel();
    core.shared.send_control(ControlMsg::Api { request, reply });
    let answer = match rx.await {
        Ok(answer) => answer,
        Err(_) => ApiAnswer::error(&ApiError::service("The control plane is not answering")),
    };
    let mut resp = Response::new(answer.status, answer.body);
    resp.headers = answer.headers;
    resp.header("x-amzn-RequestId", RequestId::random().to_string())
}

fn metrics(core: &Rc<Core>) -> Response {
    let executor = core.shared.executor_name();
    Response::new(200, core.shared.metrics.render(executor))
        .header("Content-Type", "text/plain; version=0.0.4")
}

/// AWS's error shape: status, `x-amzn-ErrorType`, JSON body.
pub fn error_response(e: &ApiError, request_id: Option<&RequestId>) -> Response {
    let id = request_id.cloned().unwrap_or_else(RequestId::random);
    Response::json(e.status(), e.body())
        .header("x-amzn-ErrorType", e.kind.name())
        .header("x-amzn-RequestId", id.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

/// Everything Invoke needs from the request, validated.
pub(super) struct InvokeRequest {
    pub(super) function: std::sync::Arc<crate::model::types::Function>,
    /// The qualifier the caller named (`$LATEST` when none): an Event keeps it, and the version
    /// an alias routes to is chosen at each attempt.
    qualifier: String,
    pub(super) kind: InvocationType,
    pub(super) payload: Bytes,
    pub(super) context: InvokeContext,
    pub(super) want_log_tail: bool,
}

pub(super) fn parse_invoke(
    core: &Rc<Core>,
    raw_name: &str,
    req: &Request,
) -> Result<InvokeRequest, ApiError> {
    let mut target = function_ref_from_path(raw_name)?;
    if let Some(q) = req.query_param("Qualifier") {
        validate_qualifier(&q)?;
        if target
            .qualifier
            .as_ref()
            .is_some_and(|existing| *existing != q)
        {
            return Err(ApiError::invalid_param(
                "The derived qualifier from the function name does not match the specified qualifier.",
            ));
        }
        target.qualifier = Some(q);
    }
    let function = {
        let table = core.shared.table.load();
        if table.latest(&target.name).is_none() {
            return Err(ApiError::not_found_function(&target.name));
        }
        table
            .resolve(
                &target.name,
                target.qualifier.as_deref(),
                rand::random::<f64>(),
            )
            .cloned()
            .ok_or_else(|| {
                ApiError::new(
                    ErrorKind::ResourceNotFound,
                    format!(
                        "Function not found: {}:{}",
                        function_arn(&target.name),
                        target.qualifier.as_deref().unwrap_or(LATEST)
                    ),
                )
            })?
    };
    let alias_arn = target
        .qualifier
        .as_deref()
        .filter(|q| *q != LATEST && !q.bytes().all(|b| b.is_ascii_digit()))
        .map(|alias| Arc::from(format!("{}:{alias}", function_arn(&target.name))));
    let kind = match req.header_str("x-amz-invocation-type") {
        None | Some("RequestResponse") => InvocationType::RequestResponse,
        Some("Event") => InvocationType::Event,
        Some("DryRun") => InvocationType::DryRun,
        Some(other) => {
            return Err(ApiError::invalid_param(format!(
                "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
            )))
        }
    };
    let limit = if kind == InvocationType::Event {
        EVENT_PAYLOAD_BYTES_MAX
    } else {
        INVOKE_PAYLOAD_BYTES_MAX
    };
    if req.body.len() > limit {
        return Err(ApiError::new(
            ErrorKind::RequestTooLarge,
            format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"),
        ));
    }
    let payload = validated_payload(&req.body)?;
    let want_log_tail = match req.header_str("x-amz-log-type") {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => return Err(ApiError::invalid_param(format!("Invalid LogType: {other}"))),
    };
    let client_context = match req.header("x-amz-client-context") {
        Some(b64) => Some(Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| {
                    ApiError::invalid_param(
                        "Client context must be a valid Base64-encoded JSON object.",
                    )
                })?,
        )),
        None => None,
    };
    let trace_id = match req.header_str("x-amzn-trace-id") {
        Some(t) => t.into(),
        None => new_trace_id().into(),
    };
    Ok(InvokeRequest {
        function,
        qualifier: target.qualifier.unwrap_or_else(|| LATEST.to_string()),
        kind,
        payload,
        context: InvokeContext {
            client_context,
            trace_id,
            alias_arn,
        },
        want_log_tail,
    })
}

/// The payload as the runtime will get it: JSON validated without building a DOM; empty → `{}`.
fn validated_payload(body: &Bytes) -> Result<Bytes, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(Bytes::from_static(b"{}"));
    }
    match sonic_rs::from_slice::<serde::de::IgnoredAny>(body) {
        Ok(_) => Ok(body.clone()),
        Err(e) => Err(ApiError::new(
            ErrorKind::InvalidRequestContent,
            format!("Could not parse request body into json: {e}"),
        )),
    }
}

fn new_trace_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let r: u128 = rand::random();
    let parent: u64 = rand::random();
    format!(
        "Root=1-{secs:08x}-{:024x};Parent={parent:016x};Sampled=0",
        r >> 32
    )
}

async fn invoke(core: &Rc<Core>, raw_name: &str, req: Request) -> Response {
    let request_id = RequestId::random();
    let parsed = match parse_invoke(core, raw_name, &req) {
        Ok(p) => p,
        Err(e) => return error_response(&e, Some(&request_id)),
    };
    if core.shared.shutting_down.load(Ordering::Relaxed) {
        let e = ApiError::new(ErrorKind::ServiceUnavailable, "The server is shutting down");
        return error_response(&e, Some(&request_id));
    }
    match parsed.kind {
        InvocationType::DryRun => {
            Response::empty(204).header("x-amzn-RequestId", request_id.to_string())
        }
        InvocationType::Event => invoke_event(core, parsed, request_id).await,
        InvocationType::RequestResponse => invoke_sync(core, parsed, request_id).await,
    }
}

async fn invoke_sync(core: &Rc<Core>, p: InvokeRequest, id: RequestId) -> Response {
    let version = p.function.version.clone();
    let permit = match Permit::acquire(&core.shared, &p.function) {
        Ok(permit) => permit,
        Err(e) => return error_response(&e, Some(&id)),
    };
    let (reply, rx) = oneshot::channel();
    let inv = Invocation {
        id: id.clone(),
        function: p.function,
        payload: p.payload,
        context: p.context,
        accepted_at: Instant::now(),
        want_log_tail: p.want_log_tail,
        reply,
        permit,
        stream: None,
    };
    let served_on = core.sched.borrow_mut().submit(inv);
    let mut resp = match rx.await {
        Ok(result) => result_response(result, &id, &version),
        Err(_) => error_response(&ApiError::service("The invocation was lost"), Some(&id)),
    };
    resp.served_on = served_on;
    resp
}

fn result_response(result: InvokeResult, id: &RequestId, version: &str) -> Response {
    let resp = match result.outcome {
        InvokeOutcome::Success { body } => Response::json(200, body),
        InvokeOutcome::FunctionError {
            function_error,
            body,
        } => Response::json(200, body).header("X-Amz-Function-Error", function_error),
        InvokeOutcome::Service(e) => return error_response(&e, Some(id)),
    };
    let mut resp = resp
        .header("X-Amz-Executed-Version", version)
        .header("x-amzn-RequestId", id.to_string());
    if let Some(tail) = result.log_tail {
        resp = resp.header(
            "X-Amz-Log-Result",
            base64::engine::general_purpose::STANDARD.encode(&tail),
        );
    }
    resp
}

/// `Event`: handed to the event queue (`events`), answered 202 once the queue has it on disk.
/// A full queue (its bounds, or its inbox) is 429 `TooManyRequestsException` (`EventQueueFull`).
/// The core never waits for the disk itself: it awaits the queue's acknowledgement like any
/// other reply.
async fn invoke_event(core: &Rc<Core>, p: InvokeRequest, id: RequestId) -> Response {
    let (ack, rx) = oneshot::channel();
    let event = NewEvent {
        id: id.clone(),
        function: p.function.config.name.clone(),
        qualifier: p.qualifier,
        payload: p.payload,
        trace_id: p.context.trace_id,
        client_context: p.context.client_context,
    };
    if let Err(e) = core.events.try_send(EventMsg::Enqueue { event, ack }) {
        let error = match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => {
                core.shared
                    .metrics
                    .throttles
                    .fetch_add(1, Ordering::Relaxed);
                ApiError::throttled("EventQueueFull")
            }
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                ApiError::new(ErrorKind::ServiceUnavailable, "The server is shutting down")
            }
        };
        return error_response(&error, Some(&id));
    }
    match rx.await {
        Ok(Ok(())) => {
            core.shared
                .metrics
                .invocations_event
                .fetch_add(1, Ordering::Relaxed);
            Response::empty(202).header("x-amzn-RequestId", id.to_string())
        }
        Ok(Err(e)) => error_response(&e, Some(&id)),
        Err(_) => error_response(
            &ApiError::new(ErrorKind::ServiceUnavailable, "The event queue has stopped"),
            Some(&id),
        ),
    }
}

/// The deprecated InvokeAsync (2014-11-13): same as an Event invoke, answered `{"Status":202}`.
async fn invoke_async_legacy(core: &Rc<Core>, raw_name: &str, req: Request) -> Response {
    let id = RequestId::random();
    match parse_invoke(core, raw_name, &req) {
        Ok(mut p) => {
            p.kind = InvocationType::Event;
            let resp = invoke_event(core, p, id).await;
            if resp.status == 202 {
                return Response::json(202, r#"{"Status":202}"#);
            }
            resp
        }
        Err(e) => error_response(&e, Some(&id)),
    }
}

#[cfg(test)]
mod tests {
    use super::{Follow, FOLLOW_AFTER};

    #[test]
    fn a_connection_follows_after_invocations_in_a_row_handed_to_one_core() {
        let mut f = Follow::default();
        for _ in 1..FOLLOW_AFTER {
            assert_eq!(f.after(Some(1)), None);
        }
        assert_eq!(f.after(Some(1)), Some(1));
        // The count starts again after a move (the connection is elsewhere now).
        assert_eq!(f.after(Some(1)), None);
    }

    #[test]
    fn a_local_answer_or_another_core_restarts_the_count() {
        assert_eq!(FOLLOW_AFTER, 3, "the sequence below is written for 3");
        let mut f = Follow::default();
        for served_on in [
            Some(1),
            Some(1),
            None,
            Some(1),
            Some(1),
            Some(2),
            Some(1),
            Some(1),
        ] {
            assert_eq!(f.after(served_on), None, "{served_on:?}");
        }
        assert_eq!(f.after(Some(1)), Some(1));
    }
}
