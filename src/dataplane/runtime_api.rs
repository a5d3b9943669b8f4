//! The Runtime API (2018-06-01) that runtimes inside instances call, over HTTP.
//!
//! Runs on the instance's home core. An instance is known by the address it connected to (its
//! own listener), so AWS's unmodified runtime clients, which only know
//! `AWS_LAMBDA_RUNTIME_API=host:port`, cannot be mistaken for another instance. A runtime gets
//! only its own function's invocations and can answer only the one it was given (403 otherwise).
//! `/next` parks the connection until the scheduler hands it work; the payload goes out as the
//! caller's `Bytes`, untouched. A `/response` with `Lambda-Runtime-Function-Response-Mode:
//! streaming` is read piece by piece and handed on as it arrives (`streaming::ResponseStream`);
//! every other request is read whole, as before.

use std::rc::Rc;

use bytes::Bytes;

use super::conn::{ConnError, HttpConn, Response};
use super::core::{ConnKind, Core};
use super::scheduler::{runtime_error_outcome, RuntimeRefusal, Work};
use super::streaming::{is_streamed_response, trailer_error, ResponseStream};
use crate::config::INVOKE_PAYLOAD_BYTES_MAX;
use crate::model::types::{function_error_body, InstanceId, InvokeOutcome};
use crate::protocols::http::{BodyPiece, Decoded, Limits, Method, Request};

/// A response may exceed the invoke limit a little so the runtime is told 413 (and the caller
/// `Function.ResponseSizeTooLarge`) instead of the connection being cut.
const RESPONSE_BYTES_MAX: usize = INVOKE_PAYLOAD_BYTES_MAX + 1024 * 1024;

pub fn limits() -> Limits {
    Limits {
        body_bytes_max: RESPONSE_BYTES_MAX,
        ..Limits::default()
    }
}

/// Serves one Runtime API connection until it closes.
pub async fn serve(core: Rc<Core>, mut conn: HttpConn, kind: ConnKind) {
    loop {
        let req = match conn.next_request_or_stream(is_streamed_response).await {
            Ok(Some(Decoded::Whole(req))) => req,
            Ok(Some(Decoded::StreamHead(head))) => {
                let keep_alive = head.keep_alive;
                let resp = match kind {
                    ConnKind::Runtime(id) => streamed_response(&core, id, &mut conn, head).await,
                    _ => drain(&mut conn).await.map(|()| {
                        error(
                            403,
                            "UnknownInstance",
                            "This address serves no instance: use the AWS_LAMBDA_RUNTIME_API you were given",
                        )
                    }),
                };
                let Some(resp) = resp else { return };
                let close = resp.close;
                if conn.write_response(resp, keep_alive).await.is_err() || !keep_alive || close {
                    return;
                }
                continue;
            }
            Ok(None) => return,
            Err(ConnError::Http(e)) => {
                let mut resp = error(e.status(), "InvalidRequest", &e.reason());
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
        // Any method: the upgrade check answers a non-GET with 400 and says why.
        if req.path() == "/2018-06-01/runtime/websocket" {
            return super::websocket::upgrade(core, conn, req, kind).await;
        }
        let keep_alive = req.keep_alive;
        let resp = match kind {
            ConnKind::Runtime(id) => handle(&core, id, req).await,
            _ => error(
                403,
                "UnknownInstance",
                "This address serves no instance: use the AWS_LAMBDA_RUNTIME_API you were given",
            ),
        };
        let close = resp.close;
        if conn.write_response(resp, keep_alive).await.is_err() || !keep_alive || close {
            return;
        }
    }
}

async fn handle(core: &Rc<Core>, id: InstanceId, req: Request) -> Response {
    let path = req.path().to_string();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (req.method, segs.as_slice()) {
        (Method::Get, ["2018-06-01", "runtime", "invocation", "next"]) => next(core, id).await,
        (Method::Post, ["2018-06-01", "runtime", "invocation", request_id, "response"]) => {
            let resp = deliver_outcome(core, id, request_id, response_outcome(&req));
            if resp.status == 202 && req.body.len() > INVOKE_PAYLOAD_BYTES_MAX {
                return error(413, "RequestEntityTooLarge", "Response payload too large");
            }
            resp
        }
        (Method::Post, ["2018-06-01", "runtime", "invocation", request_id, "error"]) => {
            deliver_outcome(core, id, request_id, error_outcome(&req))
        }
        (Method::Post, ["2018-06-01", "runtime", "init", "error"]) => {
            let body = error_body(&req);
            match core.sched.borrow_mut().init_error(id, body) {
                Ok(()) => accepted(),
                Err(r) => refusal(r),
            }
        }
        _ => error(
            404,
            "NotFound",
            &format!(
                "No such Runtime API route: {} {}",
                req.method_str(),
                req.path()
            ),
        ),
    }
}

/// A `/response` streamed by its runtime (`Lambda-Runtime-Function-Response-Mode: streaming`):
/// each piece of the chunked upload goes to the caller as it arrives (`streaming`), the
/// trailers say whether the handler failed. `None` when the connection broke mid-stream: the
/// runtime is gone or going, and its exit (or the deadline) ends the invocation.
async fn streamed_response(
    core: &Rc<Core>,
    id: InstanceId,
    conn: &mut HttpConn,
    head: Request,
) -> Option<Response> {
    let path = head.path().to_string();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let request_id = match (head.method, segs.as_slice()) {
        (Method::Post, ["2018-06-01", "runtime", "invocation", request_id, "response"]) => {
            request_id.to_string()
        }
        _ => {
            drain(conn).await?;
            return Some(error(
                404,
                "NotFound",
                "No such Runtime API route for a stream",
            ));
        }
    };
    let content_type = head.header_str("content-type").map(str::to_string);
    let mut stream = match ResponseStream::begin(core, id, &request_id, content_type).await {
        Ok(stream) => stream,
        Err(r) => {
            drain(conn).await?;
            return Some(refusal(r));
        }
    };
    let trailers = loop {
        let (data, end) = match conn.next_piece().await {
            Ok(BodyPiece::Data(data)) => (data, None),
            Ok(BodyPiece::End { data, trailers }) => (data, Some(trailers)),
            Err(_) => return None,
        };
        if let Some(too_large) = stream.push(data).await {
            // Ended now, so the caller is not kept waiting; the rest of the upload is dropped.
            let _ = core.sched.borrow_mut().respond(id, &request_id, too_large);
        }
        if let Some(trailers) = end {
            break trailers;
        }
    };
    match stream.finish(trailer_error(&trailers)) {
        Some(outcome) => Some(deliver_outcome(core, id, &request_id, outcome)),
        // Already ended for passing the size limit.
        None => Some(error(
            413,
            "RequestEntityTooLarge",
            "Response payload too large",
        )),
    }
}

/// Reads and drops a streamed body that will not be used. `None` if the connection broke.
async fn drain(conn: &mut HttpConn) -> Option<()> {
    loop {
        match conn.next_piece().await {
            Ok(BodyPiece::Data(_)) => {}
            Ok(BodyPiece::End { .. }) => return Some(()),
            Err(_) => return None,
        }
    }
}

async fn next(core: &Rc<Core>, id: InstanceId) -> Response {
    let outcome = core.sched.borrow_mut().next(id);
    match outcome {
        Ok(rx) => match rx.await {
            Ok(work) => next_response(work),
            Err(_) => gone(),
        },
        Err(r) => refusal(r),
    }
}

/// The `/next` answer: AWS's headers, the caller's payload as the body.
pub fn next_response(work: Work) -> Response {
    let mut resp = Response::json(200, work.payload)
        .header("Lambda-Runtime-Aws-Request-Id", work.id.to_string())
        .header("Lambda-Runtime-Deadline-Ms", work.deadline_ms.to_string())
        .header(
            "Lambda-Runtime-Invoked-Function-Arn",
            work.context.invoked_arn(&work.function).to_string(),
        )
        .header("Lambda-Runtime-Trace-Id", work.context.trace_id.to_string());
    if let Some(cc) = &work.context.client_context {
        resp = resp.header(
            "Lambda-Runtime-Client-Context",
            String::from_utf8_lossy(cc).into_owned(),
        );
    }
    resp
}

fn response_outcome(req: &Request) -> InvokeOutcome {
    if req.body.len() > INVOKE_PAYLOAD_BYTES_MAX {
        return runtime_error_outcome(
            "Function.ResponseSizeTooLarge",
            &format!(
                "Response payload size exceeded maximum allowed payload size ({INVOKE_PAYLOAD_BYTES_MAX} bytes)."
            ),
        );
    }
    InvokeOutcome::Success {
        body: req.body.clone(),
    }
}

fn error_outcome(req: &Request) -> InvokeOutcome {
    InvokeOutcome::FunctionError {
        function_error: "Unhandled",
        body: error_body(req),
    }
}

/// The runtime's error document as posted; built from the error-type header when it sent none.
fn error_body(req: &Request) -> Bytes {
    if !req.body.is_empty() {
        return req.body.clone();
    }
    let error_type = req
        .header_str("lambda-runtime-function-error-type")
        .unwrap_or("Unhandled");
    function_error_body(error_type, "", None)
}

/// Hands the runtime's answer to invocation `request_id` to the scheduler (`Scheduler::respond`)
/// and says how that went: 202, or why the runtime may not answer it.
fn deliver_outcome(
    core: &Rc<Core>,
    id: InstanceId,
    request_id: &str,
    outcome: InvokeOutcome,
) -> Response {
    match core.sched.borrow_mut().respond(id, request_id, outcome) {
        Ok(()) => accepted(),
        Err(r) => refusal(r),
    }
}

fn accepted() -> Response {
    Response::json(202, r#"{"status":"OK"}"#)
}

fn refusal(r: RuntimeRefusal) -> Response {
    match r {
        RuntimeRefusal::NotYourRequest => error(
            403,
            "InvalidRequestID",
            "This request id was not given to this instance, or it has already been answered",
        ),
        RuntimeRefusal::UnknownInstance => gone(),
        RuntimeRefusal::AlreadyWaiting => error(
            409,
            "AlreadyWaiting",
            "Another request for the next invocation of this instance is already waiting",
        ),
    }
}

fn gone() -> Response {
    let mut resp = error(
        410,
        "InstanceGone",
        "This instance has been retired; the runtime should exit",
    );
    resp.close = true;
    resp
}

/// The Runtime API's own error answers to the runtime share the document's shape.
fn error(status: u16, error_type: &str, message: &str) -> Response {
    Response::json(status, function_error_body(error_type, message, None))
}
