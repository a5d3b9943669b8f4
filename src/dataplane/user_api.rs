//! The User API (AWS Lambda REST-JSON, port 9000): Invoke on the data plane, management calls
//! forwarded to the control plane.
//!
//! Runs on every core. Routing is one `match` on (method, path). Invoke never waits for the
//! control plane: it admits (concurrency), submits to this core's scheduler and awaits the result.
//! Management calls send their raw body to the control plane and await its reply. Every error
//! leaves here in AWS's shape (`error::ApiError`).

use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::conn::{ConnError, HttpConn, Response};
use super::core::Core;
use super::scheduler::Invocation;
use super::Permit;
use crate::api_model;
use crate::config::{EVENT_QUEUE_MAX, INVOKE_PAYLOAD_BYTES_MAX, USER_API_BODY_BYTES_MAX};
use crate::control::{ApiReply, ApiRequest, ControlMsg};
use crate::error::{ApiError, ErrorKind};
use crate::protocols::http::{Limits, Method, Request};
use crate::types::{InvokeContext, InvokeOutcome, InvokeResult, RequestId, LATEST};

pub fn limits() -> Limits {
    Limits {
        body_bytes_max: USER_API_BODY_BYTES_MAX,
        ..Limits::default()
    }
}

/// Serves one User API connection until it closes.
pub async fn serve(core: Rc<Core>, mut conn: HttpConn) {
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
                let _ = conn.write_response(resp, false).await;
                return;
            }
            Err(_) => return,
        };
        let keep_alive = req.keep_alive;
        let resp = route(&core, req).await;
        if conn.write_response(resp, keep_alive).await.is_err() || !keep_alive {
            return;
        }
    }
}

async fn route(core: &Rc<Core>, req: Request) -> Response {
    let path = req.path().to_string();
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let result = match (req.method, segs.as_slice()) {
        (Method::Post, ["2015-03-31", "functions", name, "invocations"]) => {
            return invoke(core, name, req).await
        }
        (Method::Post, ["2014-11-13", "functions", name, "invoke-async"]) => {
            return invoke_async_legacy(core, name, req).await
        }
        (Method::Get, ["healthz"]) => Ok(Response::new(200, "ok\n")),
        (Method::Get, ["metrics"]) => Ok(metrics(core)),
        (Method::Post, ["2015-03-31", "functions"]) => {
            management(core, ApiRequest::Create(req.body), 201).await
        }
        (Method::Get, ["2015-03-31", "functions"]) => list(core, &req).await,
        (Method::Get, ["2015-03-31", "functions", name]) => get_function(core, name, &req).await,
        (Method::Delete, ["2015-03-31", "functions", name]) => {
            with_name(name, |n| management(core, ApiRequest::Delete(n), 204)).await
        }
        (Method::Get, ["2015-03-31", "functions", name, "configuration"]) => {
            with_name(name, |n| management(core, ApiRequest::Get(n), 200)).await
        }
        (Method::Put, ["2015-03-31", "functions", name, "configuration"]) => {
            let body = req.body.clone();
            with_name(name, |n| {
                management(core, ApiRequest::UpdateConfig(n, body), 200)
            })
            .await
        }
        (Method::Put, ["2015-03-31", "functions", name, "code"]) => {
            let body = req.body.clone();
            with_name(name, |n| {
                management(core, ApiRequest::UpdateCode(n, body), 200)
            })
            .await
        }
        (Method::Get, ["2015-03-31", "functions", name, "code.zip"]) => {
            with_name(name, |n| management(core, ApiRequest::CodeZip(n), 200)).await
        }
        (Method::Put, ["2017-10-31", "functions", name, "concurrency"]) => {
            let body = req.body.clone();
            with_name(name, |n| {
                management(core, ApiRequest::PutConcurrency(n, body), 200)
            })
            .await
        }
        (Method::Delete, ["2017-10-31", "functions", name, "concurrency"]) => {
            with_name(name, |n| {
                management(core, ApiRequest::DeleteConcurrency(n), 204)
            })
            .await
        }
        (Method::Get, ["2019-09-30", "functions", name, "concurrency"]) => {
            with_name(name, |n| {
                management(core, ApiRequest::GetConcurrency(n), 200)
            })
            .await
        }
        (Method::Get, ["2016-08-19", "account-settings"]) => Ok(account_settings(core)),
        _ => Err(ApiError::new(
            ErrorKind::UnknownOperation,
            format!("Unknown operation: {} {}", req.method_str(), req.path()),
        )),
    };
    result.unwrap_or_else(|e| error_response(&e, None))
}

async fn with_name<F, Fut>(raw: &str, f: F) -> Result<Response, ApiError>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Response, ApiError>>,
{
    let name = api_model::normalize_function_name(raw)?;
    f(name).await
}

/// Asks the control plane and renders its reply with `status`.
async fn management(
    core: &Rc<Core>,
    request: ApiRequest,
    status: u16,
) -> Result<Response, ApiError> {
    let reply = ask_control(core, request).await?;
    Ok(match reply {
        ApiReply::Function(f) if status == 200 || status == 201 => {
            json_response(status, &api_model::function_configuration(&f))
        }
        ApiReply::Function(_) | ApiReply::Deleted => Response::empty(204),
        ApiReply::Functions(fs, next) => {
            json_response(200, &api_model::list_functions(&fs, next.as_deref()))
        }
        ApiReply::Concurrency(n) => json_response(200, &api_model::concurrency(n)),
        ApiReply::Zip(zip) => Response::new(200, zip).header("Content-Type", "application/zip"),
    })
}

async fn ask_control(core: &Rc<Core>, request: ApiRequest) -> Result<ApiReply, ApiError> {
    let (tx, rx) = oneshot::channel();
    core.shared
        .send_control(ControlMsg::Api { request, reply: tx });
    rx.await
        .map_err(|_| ApiError::service("The control plane is not answering"))?
}

async fn get_function(core: &Rc<Core>, raw: &str, req: &Request) -> Result<Response, ApiError> {
    let name = api_model::normalize_function_name(raw)?;
    let ApiReply::Function(f) = ask_control(core, ApiRequest::Get(name.clone())).await? else {
        return Err(ApiError::service("unexpected control-plane reply"));
    };
    let host = req
        .header_str("host")
        .map(str::to_string)
        .unwrap_or_else(|| format!("127.0.0.1:{}", core.shared.config.user_api_port));
    let location = format!("http://{host}/2015-03-31/functions/{name}/code.zip");
    Ok(json_response(200, &api_model::get_function(&f, &location)))
}

async fn list(core: &Rc<Core>, req: &Request) -> Result<Response, ApiError> {
    let marker = req.query_param("Marker");
    let max_items = match req.query_param("MaxItems") {
        Some(v) => Some(
            v.parse::<u32>()
                .map_err(|_| ApiError::invalid_param(format!("Invalid MaxItems: {v}")))?,
        ),
        None => None,
    };
    management(core, ApiRequest::List { marker, max_items }, 200).await
}

fn metrics(core: &Rc<Core>) -> Response {
    let executor = core.shared.executor_name();
    Response::new(200, core.shared.metrics.render(executor))
        .header("Content-Type", "text/plain; version=0.0.4")
}

fn account_settings(core: &Rc<Core>) -> Response {
    let table = core.shared.table.load();
    let total_code: u64 = table.values().map(|f| f.config.code_size).sum();
    let body = serde_json::json!({
        "AccountLimit": {
            "TotalCodeSize": 80530636800u64,
            "CodeSizeUnzipped": 262144000,
            "CodeSizeZipped": 52428800,
            "ConcurrentExecutions": core.shared.config.concurrency,
            "UnreservedConcurrentExecutions": core.shared.config.concurrency,
        },
        "AccountUsage": { "TotalCodeSize": total_code, "FunctionCount": table.len() },
    });
    json_response(200, &body)
}

fn json_response(status: u16, v: &serde_json::Value) -> Response {
    Response::json(status, v.to_string())
}

/// AWS's error shape: status, `x-amzn-ErrorType`, JSON body.
pub fn error_response(e: &ApiError, request_id: Option<&RequestId>) -> Response {
    let id = request_id.cloned().unwrap_or_else(RequestId::random);
    Response::json(e.status(), e.body())
        .header("x-amzn-ErrorType", e.kind.name())
        .header("x-amzn-RequestId", id.to_string())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

/// Everything Invoke needs from the request, validated.
struct InvokeRequest {
    function: std::sync::Arc<crate::types::Function>,
    kind: InvocationType,
    payload: Bytes,
    context: InvokeContext,
    want_log_tail: bool,
}

fn parse_invoke(core: &Rc<Core>, raw_name: &str, req: &Request) -> Result<InvokeRequest, ApiError> {
    let name = api_model::normalize_function_name(raw_name)?;
    if let Some(q) = req.query_param("Qualifier") {
        if q != LATEST {
            return Err(ApiError::new(
                ErrorKind::ResourceNotFound,
                format!(
                    "Function not found: {}:{q}",
                    crate::types::function_arn(&name)
                ),
            ));
        }
    }
    let function = core
        .shared
        .function(&name)
        .ok_or_else(|| ApiError::not_found_function(&name))?;
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
        256 * 1024
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
        kind,
        payload,
        context: InvokeContext {
            client_context,
            trace_id,
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
        InvocationType::Event => invoke_event(core, parsed, request_id),
        InvocationType::RequestResponse => invoke_sync(core, parsed, request_id).await,
    }
}

async fn invoke_sync(core: &Rc<Core>, p: InvokeRequest, id: RequestId) -> Response {
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
    };
    core.sched.borrow_mut().submit(inv);
    match rx.await {
        Ok(result) => result_response(result, &id),
        Err(_) => error_response(&ApiError::service("The invocation was lost"), Some(&id)),
    }
}

fn result_response(result: InvokeResult, id: &RequestId) -> Response {
    let resp = match result.outcome {
        InvokeOutcome::Success { body } => Response::json(200, body),
        InvokeOutcome::FunctionError {
            function_error,
            body,
        } => Response::json(200, body).header("X-Amz-Function-Error", function_error),
        InvokeOutcome::Service(e) => return error_response(&e, Some(id)),
    };
    let mut resp = resp
        .header("X-Amz-Executed-Version", LATEST)
        .header("x-amzn-RequestId", id.to_string());
    if let Some(tail) = result.log_tail {
        resp = resp.header(
            "X-Amz-Log-Result",
            base64::engine::general_purpose::STANDARD.encode(&tail),
        );
    }
    resp
}

/// `Event`: acknowledged with 202 at once, run in the background on this core. A throttled event
/// is retried (as Lambda's async queue does) with backoff for up to `EVENT_RETRY_FOR`.
fn invoke_event(core: &Rc<Core>, p: InvokeRequest, id: RequestId) -> Response {
    const EVENT_RETRY_FOR: Duration = Duration::from_secs(300);
    if core.events_queued.get() >= EVENT_QUEUE_MAX {
        return error_response(&ApiError::throttled("EventQueueFull"), Some(&id));
    }
    core.events_queued.set(core.events_queued.get() + 1);
    core.shared
        .metrics
        .invocations_event
        .fetch_add(1, Ordering::Relaxed);
    let core2 = core.clone();
    let id2 = id.clone();
    tokio_uring::spawn(async move {
        let started = Instant::now();
        let mut backoff = Duration::from_millis(20);
        let permit = loop {
            match Permit::acquire(&core2.shared, &p.function) {
                Ok(permit) => break Some(permit),
                Err(_) if started.elapsed() < EVENT_RETRY_FOR => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(e) => {
                    tracing::warn!(request_id = %id2, "event dropped after retries: {e}");
                    break None;
                }
            }
        };
        if let Some(permit) = permit {
            let (reply, rx) = oneshot::channel();
            let inv = Invocation {
                id: id2.clone(),
                function: p.function,
                payload: p.payload,
                context: p.context,
                accepted_at: Instant::now(),
                want_log_tail: false,
                reply,
                permit,
            };
            core2.sched.borrow_mut().submit(inv);
            if let Ok(result) = rx.await {
                tracing::debug!(request_id = %id2, outcome = ?result.outcome, "event invocation done");
            }
        }
        core2.events_queued.set(core2.events_queued.get() - 1);
    });
    Response::empty(202).header("x-amzn-RequestId", id.to_string())
}

/// The deprecated InvokeAsync (2014-11-13): same as an Event invoke, answered `{"Status":202}`.
async fn invoke_async_legacy(core: &Rc<Core>, raw_name: &str, req: Request) -> Response {
    let id = RequestId::random();
    match parse_invoke(core, raw_name, &req) {
        Ok(mut p) => {
            p.kind = InvocationType::Event;
            let resp = invoke_event(core, p, id);
            if resp.status == 202 {
                return Response::json(202, r#"{"Status":202}"#);
            }
            resp
        }
        Err(e) => error_response(&e, Some(&id)),
    }
}
