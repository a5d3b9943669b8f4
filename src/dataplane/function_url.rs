//! Function URL invokes: a User API request whose `Host` names a function URL
//! (`<url-id>.lambda-url.<region>.localhost:<port>`) becomes an API Gateway HTTP API payload 2.0
//! event, is invoked like a synchronous Invoke, and the function's result is mapped back to an
//! HTTP response as AWS maps it.
//!
//! Runs on every core, on the connection that carried the request: the URL is looked up in the
//! published `FunctionTable::urls`, so serving one never asks the control plane, and its cost is
//! a plain invoke's plus building the event and reading the result as JSON. CORS preflights are
//! answered here from the URL's `Cors` without invoking. `AWS_IAM` URLs are verified with the
//! User API's credentials when its authentication is on, and accepted unverified otherwise.
//! `RESPONSE_STREAM` URLs are served buffered for now. Limits: the event is at most Invoke's
//! 6 MB (`INVOKE_PAYLOAD_BYTES_MAX`), counted after base64 encoding, as on AWS.
//!
//! Errors use the function URL service's shapes, not the Lambda API's: `{"Message":...}` bodies
//! (403 unknown URL or failed authentication, 413, 429, 503) and a plain `Internal Server Error`
//! (502) for function errors and results that do not map to a response.

use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use serde_json::Value;
use tokio::sync::oneshot;

use super::conn::{write_vectored, HttpConn, Response};
use super::core::Core;
use super::streaming::{next_watching, StreamEvent, StreamingInvocation};
use crate::config::INVOKE_PAYLOAD_BYTES_MAX;
use crate::model::types::{
    account_id, function_arn, Function, InvokeContext, InvokeOutcome, InvokeResult, RequestId,
    LATEST,
};
use crate::model::urls::{url_id_of_host, Cors, InvokeMode, UrlAuth, UrlRoute};
use crate::model::{Invocation, Permit};
use crate::protocols::http::{Method, Request};
use crate::protocols::percent::decode_query;

/// The URL id a request is addressed to, if its `Host` names a function URL.
pub fn url_id(req: &Request) -> Option<&str> {
    url_id_of_host(req.header_str("host")?)
}

/// The peer's address of a connection (the event's `sourceIp`), read once per connection.
pub fn peer_ip(conn: &HttpConn) -> Option<IpAddr> {
    // SAFETY: `fd` is the connection's open socket; the `ManuallyDrop` std stream borrows it for
    // one getpeername and never closes it.
    let std = std::mem::ManuallyDrop::new(unsafe {
        <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(conn.stream.as_raw_fd())
    });
    std.peer_addr().ok().map(|a| a.ip())
}

/// What a request to a function URL gets: a whole response, or, for a URL whose `InvokeMode` is
/// `RESPONSE_STREAM`, a stream the connection writes as it comes (`write_stream`).
pub enum Answer {
    Whole(Response),
    Stream(Box<UrlStream>),
}

impl From<Response> for Answer {
    fn from(resp: Response) -> Answer {
        Answer::Whole(resp)
    }
}

/// A streamed function URL invocation on its way to the client.
pub struct UrlStream {
    inv: StreamingInvocation,
    cors: Option<Cors>,
    origin: Option<String>,
}

/// Serves one request addressed to function URL `id`.
pub async fn serve(core: &Rc<Core>, id: &str, req: Request, peer: Option<IpAddr>) -> Answer {
    serve_inner(core, id, req, peer).await
}

async fn serve_inner(core: &Rc<Core>, id: &str, req: Request, peer: Option<IpAddr>) -> Answer {
    let request_id = RequestId::random();
    let route = core.shared.table.load().urls.get(id).cloned();
    let Some(route) = route else {
        return message(403, "Forbidden", &request_id).into();
    };
    let mut access_key = None;
    if route.auth_type == UrlAuth::AwsIam {
        if let Some(credentials) = &core.shared.auth {
            if credentials.verify(&req, SystemTime::now()).is_err() {
                core.shared
                    .metrics
                    .auth_failures
                    .fetch_add(1, Ordering::Relaxed);
                return message(403, "Forbidden", &request_id).into();
            }
            access_key = signed_access_key(&req);
        }
    }
    let origin = req.header_str("origin").map(str::to_string);
    let head = req.method == Method::Head;
    if let (Some(cors), Some(origin)) = (&route.cors, &origin) {
        let preflight =
            req.method == Method::Options && req.header("access-control-request-method").is_some();
        if preflight {
            return preflight_response(cors, origin, &request_id).into();
        }
    }
    if route.invoke_mode == InvokeMode::ResponseStream && !head {
        return match start_stream(core, &route, id, &req, peer, access_key, &request_id) {
            Ok(inv) => Answer::Stream(Box::new(UrlStream {
                inv,
                cors: route.cors.clone(),
                origin,
            })),
            Err(mut resp) => {
                if let Some(cors) = &route.cors {
                    add_cors_headers(&mut resp, cors, origin.as_deref());
                }
                resp.into()
            }
        };
    }
    let mut resp = invoke(core, &route, id, req, peer, access_key, &request_id).await;
    if let Some(cors) = &route.cors {
        add_cors_headers(&mut resp, cors, origin.as_deref());
    }
    // A response to HEAD has no body (the function still ran, as on AWS); writing one would
    // desynchronise a keep-alive client.
    if head {
        resp.body = Bytes::new();
    }
    resp.into()
}

/// The function and its event for a request to `route`, or the response that refuses it.
fn prepare(
    core: &Rc<Core>,
    route: &UrlRoute,
    id: &str,
    req: &Request,
    peer: Option<IpAddr>,
    access_key: Option<&str>,
    request_id: &RequestId,
) -> Result<(Arc<Function>, Vec<u8>, InvokeContext), Response> {
    if core.shared.shutting_down.load(Ordering::Relaxed) {
        return Err(message(503, "Service Unavailable", request_id));
    }
    let function = core
        .shared
        .table
        .load()
        .resolve(
            &route.function,
            Some(&route.qualifier),
            rand::random::<f64>(),
        )
        .cloned();
    let Some(function) = function else {
        // The table publishes a URL only with its function and alias; a version an alias routes
        // to is there too. Nothing to run is the platform's failure, answered as AWS does.
        return Err(internal_error(request_id));
    };
    let payload = event(req, id, peer, access_key, request_id);
    if payload.len() > INVOKE_PAYLOAD_BYTES_MAX {
        return Err(message(413, "Request Entity Too Large", request_id));
    }
    let alias_arn = (route.qualifier != LATEST).then(|| {
        Arc::from(format!(
            "{}:{}",
            function_arn(&route.function),
            route.qualifier
        ))
    });
    let trace_id = match req.header_str("x-amzn-trace-id") {
        Some(t) => Arc::from(t),
        None => Arc::from(new_trace_id()),
    };
    let context = InvokeContext {
        client_context: None,
        trace_id,
        alias_arn,
    };
    Ok((function, payload, context))
}

/// Admits and submits a streamed invocation for a `RESPONSE_STREAM` URL.
fn start_stream(
    core: &Rc<Core>,
    route: &UrlRoute,
    id: &str,
    req: &Request,
    peer: Option<IpAddr>,
    access_key: Option<String>,
    request_id: &RequestId,
) -> Result<StreamingInvocation, Response> {
    let (function, payload, context) = prepare(
        core,
        route,
        id,
        req,
        peer,
        access_key.as_deref(),
        request_id,
    )?;
    StreamingInvocation::start(
        core,
        function,
        Bytes::from(payload),
        context,
        false,
        request_id.clone(),
    )
    .map_err(|_| message(429, "Too Many Requests", request_id))
}

/// Content type of a streamed answer that starts with a JSON prelude (status, headers,
/// cookies) and 8 NUL bytes: what `awslambda.HttpResponseStream.from` writes.
const HTTP_INTEGRATION_CONTENT_TYPE: &str = "application/vnd.awslambda.http-integration-response";
/// What ends that prelude.
const PRELUDE_END: &[u8] = &[0; 8];
/// A prelude longer than this is not one: the stream is answered 502.
const PRELUDE_BYTES_MAX: usize = 64 * 1024;

/// Writes a streamed function URL answer as it comes: chunked, headed by the function's status
/// and headers (its HTTP-integration prelude, or 200 and its content type). A function that did
/// not stream is answered whole, like a `BUFFERED` URL. A failure after the head ends the
/// connection without the last chunk, so the client sees the body cut short. Returns whether the
/// connection may carry another request.
pub async fn write_stream(conn: &mut HttpConn, stream: UrlStream, keep_alive: bool) -> bool {
    let UrlStream {
        mut inv,
        cors,
        origin,
    } = stream;
    let request_id = inv.id.clone();
    let finish = |mut resp: Response| {
        if let Some(cors) = &cors {
            add_cors_headers(&mut resp, cors, origin.as_deref());
        }
        resp
    };
    let content_type = match next_watching(conn, &mut inv).await {
        None => return false,
        Some(StreamEvent::End(result)) => {
            let resp = finish(outcome_response(result.outcome, &request_id));
            return conn.write_response(resp, keep_alive).await.is_ok() && keep_alive;
        }
        Some(StreamEvent::Start { content_type }) => content_type,
        Some(StreamEvent::Chunk(_)) => None,
    };
    // The head: from the prelude, or 200 with the declared content type.
    let mut first = Vec::new();
    let mut pending_end = None;
    let mut head = if content_type.as_deref() == Some(HTTP_INTEGRATION_CONTENT_TYPE) {
        let mut prelude = Vec::new();
        loop {
            if let Some(at) = prelude
                .windows(PRELUDE_END.len())
                .position(|w| w == PRELUDE_END)
            {
                first = prelude.split_off(at + PRELUDE_END.len());
                prelude.truncate(at);
                break;
            }
            if prelude.len() > PRELUDE_BYTES_MAX {
                let resp = finish(internal_error(&request_id));
                return conn.write_response(resp, keep_alive).await.is_ok() && keep_alive;
            }
            match next_watching(conn, &mut inv).await {
                None => return false,
                Some(StreamEvent::Chunk(data)) => prelude.extend_from_slice(&data),
                Some(StreamEvent::Start { .. }) => {}
                Some(StreamEvent::End(result)) => {
                    if !matches!(result.outcome, InvokeOutcome::Success { .. }) {
                        let resp = finish(outcome_response(result.outcome, &request_id));
                        return conn.write_response(resp, keep_alive).await.is_ok() && keep_alive;
                    }
                    pending_end = Some(result);
                    break;
                }
            }
        }
        let mut prelude: Value = serde_json::from_slice(&prelude).unwrap_or(Value::Null);
        if let Some(obj) = prelude.as_object_mut() {
            obj.remove("body");
            obj.entry("statusCode").or_insert(Value::from(200));
        }
        match http_response(&Bytes::from(prelude.to_string())) {
            Some(resp) if prelude.is_object() => resp,
            _ => {
                let resp = finish(internal_error(&request_id));
                return conn.write_response(resp, keep_alive).await.is_ok() && keep_alive;
            }
        }
    } else {
        let mut resp = Response::new(200, Bytes::new());
        resp.owned_headers.push((
            "Content-Type".to_string(),
            content_type.unwrap_or_else(|| "application/octet-stream".to_string()),
        ));
        resp
    };
    head = finish(head).header("x-amzn-RequestId", request_id.to_string());
    let headers: Vec<(&str, &str)> = head
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(
            head.owned_headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str())),
        )
        .collect();
    let mut out = Vec::with_capacity(512);
    crate::protocols::http::write_chunked_response_head(
        &mut out,
        head.status,
        &headers,
        keep_alive,
    );
    let mut parts = vec![Bytes::from(out)];
    if !first.is_empty() {
        push_chunk(&mut parts, Bytes::from(first));
    }
    if let Some(result) = pending_end {
        return end_stream(conn, parts, result, keep_alive).await;
    }
    if write_vectored(&conn.stream, parts).await.is_err() {
        return false;
    }
    loop {
        match next_watching(conn, &mut inv).await {
            None => return false,
            Some(StreamEvent::Start { .. }) => {}
            Some(StreamEvent::Chunk(data)) => {
                let mut parts = Vec::with_capacity(3);
                push_chunk(&mut parts, data);
                if write_vectored(&conn.stream, parts).await.is_err() {
                    return false;
                }
            }
            Some(StreamEvent::End(result)) => {
                return end_stream(conn, Vec::new(), result, keep_alive).await;
            }
        }
    }
}

/// One chunk of chunked transfer coding (an empty one would end the body: skipped).
fn push_chunk(parts: &mut Vec<Bytes>, data: Bytes) {
    if data.is_empty() {
        return;
    }
    parts.push(Bytes::from(format!("{:x}\r\n", data.len())));
    parts.push(data);
    parts.push(Bytes::from_static(b"\r\n"));
}

/// Ends a streamed body: the last chunk after a success; after a failure the connection is
/// closed without it, so the client knows the body is incomplete.
async fn end_stream(
    conn: &mut HttpConn,
    mut parts: Vec<Bytes>,
    result: InvokeResult,
    keep_alive: bool,
) -> bool {
    let ok = matches!(result.outcome, InvokeOutcome::Success { .. });
    if ok {
        parts.push(Bytes::from_static(b"0\r\n\r\n"));
    }
    if !parts.is_empty() && write_vectored(&conn.stream, parts).await.is_err() {
        return false;
    }
    ok && keep_alive
}

async fn invoke(
    core: &Rc<Core>,
    route: &UrlRoute,
    id: &str,
    req: Request,
    peer: Option<IpAddr>,
    access_key: Option<String>,
    request_id: &RequestId,
) -> Response {
    let (function, payload, context) = match prepare(
        core,
        route,
        id,
        &req,
        peer,
        access_key.as_deref(),
        request_id,
    ) {
        Ok(prepared) => prepared,
        Err(resp) => return resp,
    };
    let permit = match Permit::acquire(&core.shared, &function) {
        Ok(permit) => permit,
        Err(_) => return message(429, "Too Many Requests", request_id),
    };
    let (reply, rx) = oneshot::channel();
    core.sched.borrow_mut().submit(Invocation {
        id: request_id.clone(),
        function,
        payload: Bytes::from(payload),
        context,
        accepted_at: Instant::now(),
        want_log_tail: false,
        reply,
        permit,
        stream: None,
    });
    match rx.await {
        Ok(result) => outcome_response(result.outcome, request_id),
        Err(_) => internal_error(request_id),
    }
}

/// The response an invocation's outcome maps to, as AWS maps it.
fn outcome_response(outcome: InvokeOutcome, request_id: &RequestId) -> Response {
    match outcome {
        InvokeOutcome::Success { body } => match http_response(&body) {
            Some(resp) => resp.header("x-amzn-RequestId", request_id.to_string()),
            None => internal_error(request_id),
        },
        InvokeOutcome::FunctionError { .. } => internal_error(request_id),
        InvokeOutcome::Service(e) if e.status() == 429 => {
            message(429, "Too Many Requests", request_id)
        }
        InvokeOutcome::Service(_) => internal_error(request_id),
    }
}

/// `{"Message":"..."}` with `status`, the function URL service's error shape.
fn message(status: u16, text: &str, request_id: &RequestId) -> Response {
    let body = serde_json::json!({ "Message": text }).to_string();
    Response::json(status, body).header("x-amzn-RequestId", request_id.to_string())
}

/// What AWS answers for a function error or an unusable result.
fn internal_error(request_id: &RequestId) -> Response {
    Response::json(502, "Internal Server Error")
        .header("x-amzn-ErrorType", "Function.ResponseError")
        .header("x-amzn-RequestId", request_id.to_string())
}

/// The access key of a (verified) SigV4 `Authorization` header.
fn signed_access_key(req: &Request) -> Option<String> {
    let auth = req.header_str("authorization")?;
    let credential = auth.split("Credential=").nth(1)?;
    Some(credential.split('/').next()?.to_string())
}

// ---------------------------------------------------------------------------------------------
// The request as an HTTP API payload 2.0 event

/// Whether a body of `content_type` travels as text (else base64), as AWS decides.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime.starts_with("text/")
        || mime.ends_with("/json")
        || mime.ends_with("+json")
        || mime.ends_with("/xml")
        || mime.ends_with("+xml")
        || mime == "application/javascript"
        || mime == "application/x-javascript"
        || mime == "application/ecmascript"
        || mime == "application/x-www-form-urlencoded"
        || mime == "application/graphql"
        || mime == "application/yaml"
}

/// The payload 2.0 event of `req`, as JSON text.
fn event(
    req: &Request,
    id: &str,
    peer: Option<IpAddr>,
    access_key: Option<&str>,
    request_id: &RequestId,
) -> Vec<u8> {
    // Headers lower-cased, repeated ones joined with commas; cookies go to `cookies`.
    let mut headers: Vec<(String, String)> = Vec::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in req.headers() {
        let value = String::from_utf8_lossy(value);
        let name = name.to_ascii_lowercase();
        if name == "cookie" {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            );
            continue;
        }
        match headers.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push(',');
                v.push_str(&value);
            }
            None => headers.push((name, value.into_owned())),
        }
    }
    let source_ip = peer.map(|ip| ip.to_string()).unwrap_or_default();
    for (name, value) in [
        ("x-forwarded-proto", "http".to_string()),
        ("x-forwarded-for", source_ip.clone()),
    ] {
        if !headers.iter().any(|(n, _)| n == name) {
            headers.push((name.to_string(), value));
        }
    }
    let raw_query = req.query().unwrap_or("");
    let mut query: Vec<(String, String)> = Vec::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (decode_query(k), decode_query(v));
        match query.iter_mut().find(|(n, _)| *n == k) {
            Some((_, existing)) => {
                existing.push(',');
                existing.push_str(&v);
            }
            None => query.push((k, v)),
        }
    }
    let host = req.header_str("host").unwrap_or("");
    let domain = host.rsplit_once(':').map_or(host, |(h, _)| h);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();

    let mut out = String::with_capacity(1024 + req.body.len() * 4 / 3);
    out.push_str(r#"{"version":"2.0","routeKey":"$default","rawPath":"#);
    push_str(&mut out, req.path());
    out.push_str(r#","rawQueryString":"#);
    push_str(&mut out, raw_query);
    if !cookies.is_empty() {
        out.push_str(r#","cookies":["#);
        for (i, c) in cookies.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_str(&mut out, c);
        }
        out.push(']');
    }
    out.push_str(r#","headers":"#);
    push_map(&mut out, &headers);
    if !query.is_empty() {
        out.push_str(r#","queryStringParameters":"#);
        push_map(&mut out, &query);
    }
    out.push_str(r#","requestContext":{"accountId":"#);
    match access_key {
        Some(_) => push_str(&mut out, account_id()),
        None => push_str(&mut out, "anonymous"),
    }
    out.push_str(r#","apiId":"#);
    push_str(&mut out, id);
    if let Some(key) = access_key {
        out.push_str(r#","authorizer":{"iam":{"accessKey":"#);
        push_str(&mut out, key);
        out.push_str(r#","accountId":"#);
        push_str(&mut out, account_id());
        out.push_str(r#","callerId":null,"cognitoIdentity":null,"principalOrgId":null,"userArn":null,"userId":null}}"#);
    }
    out.push_str(r#","domainName":"#);
    push_str(&mut out, domain);
    out.push_str(r#","domainPrefix":"#);
    push_str(&mut out, id);
    out.push_str(r#","http":{"method":"#);
    push_str(&mut out, req.method_str());
    out.push_str(r#","path":"#);
    push_str(&mut out, req.path());
    out.push_str(r#","protocol":"#);
    push_str(
        &mut out,
        if req.version_minor == 0 {
            "HTTP/1.0"
        } else {
            "HTTP/1.1"
        },
    );
    out.push_str(r#","sourceIp":"#);
    push_str(&mut out, &source_ip);
    out.push_str(r#","userAgent":"#);
    push_str(&mut out, req.header_str("user-agent").unwrap_or(""));
    out.push_str(r#"},"requestId":"#);
    push_str(&mut out, request_id.as_str());
    out.push_str(r#","routeKey":"$default","stage":"$default","time":"#);
    push_str(&mut out, &clf_time(now.as_secs()));
    out.push_str(r#","timeEpoch":"#);
    out.push_str(&now.as_millis().to_string());
    out.push('}');
    if !req.body.is_empty() {
        out.push_str(r#","body":"#);
        let text = is_text(req.header_str("content-type"))
            .then(|| std::str::from_utf8(&req.body).ok())
            .flatten();
        match text {
            Some(text) => {
                push_str(&mut out, text);
                out.push_str(r#","isBase64Encoded":false"#);
            }
            None => {
                out.push('"');
                base64::engine::general_purpose::STANDARD.encode_string(&req.body, &mut out);
                out.push_str(r#"","isBase64Encoded":true"#);
            }
        }
    } else {
        out.push_str(r#","isBase64Encoded":false"#);
    }
    out.push('}');
    out.into_bytes()
}

/// Appends `s` as a JSON string literal.
fn push_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

fn push_map(out: &mut String, pairs: &[(String, String)]) {
    out.push('{');
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(out, k);
        out.push(':');
        push_str(out, v);
    }
    out.push('}');
}

/// `01/Dec/2026:10:41:27 +0000`, the event's `requestContext.time`, rearranged from the
/// HTTP date (`Tue, 01 Dec 2026 10:41:27 GMT`).
fn clf_time(unix_s: u64) -> String {
    let t = UNIX_EPOCH + std::time::Duration::from_secs(unix_s);
    let date = httpdate::fmt_http_date(t);
    let parts: Vec<&str> = date.split_whitespace().collect();
    match parts.as_slice() {
        [_, day, month, year, time, _] => format!("{day}/{month}/{year}:{time} +0000"),
        _ => date,
    }
}

fn new_trace_id() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let r: u128 = rand::random();
    format!("Root=1-{secs:08x}-{:024x}", r >> 32)
}

// ---------------------------------------------------------------------------------------------
// The result as an HTTP response

/// Response headers the server writes itself; a function's own values for them are dropped.
const FRAMING_HEADERS: [&str; 5] = [
    "content-length",
    "transfer-encoding",
    "connection",
    "date",
    "keep-alive",
];

/// The HTTP response a function's result maps to, as AWS maps it: an object with `statusCode`
/// gives status, headers, cookies and body; anything else is a 200 `application/json` whose body
/// is the result (a JSON string's text without its quotes). `None`: a result AWS answers 502 to.
fn http_response(result: &Bytes) -> Option<Response> {
    let value: Value = match serde_json::from_slice(result) {
        Ok(v) => v,
        // A runtime may post a body that is not JSON: it is the response body as it stands.
        Err(_) => return Some(Response::json(200, result.clone())),
    };
    let obj = match value {
        Value::Object(obj) if obj.contains_key("statusCode") => obj,
        Value::String(s) => return Some(Response::json(200, s)),
        _ => return Some(Response::json(200, result.clone())),
    };
    let status = obj
        .get("statusCode")
        .and_then(Value::as_u64)
        .filter(|s| (100..=599).contains(s))? as u16;
    let mut owned: Vec<(String, String)> = Vec::new();
    let mut push = |name: &str, value: String| {
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if valid && !FRAMING_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            owned.push((name.to_string(), value));
        }
    };
    if let Some(headers) = obj.get("headers").and_then(Value::as_object) {
        for (name, v) in headers {
            if let Some(v) = scalar(v) {
                push(name, v);
            }
        }
    }
    if let Some(multi) = obj.get("multiValueHeaders").and_then(Value::as_object) {
        for (name, values) in multi {
            for v in values.as_array().into_iter().flatten() {
                if let Some(v) = scalar(v) {
                    push(name, v);
                }
            }
        }
    }
    if let Some(cookies) = obj.get("cookies").and_then(Value::as_array) {
        for c in cookies.iter().filter_map(Value::as_str) {
            push("Set-Cookie", c.to_string());
        }
    }
    let body = match obj.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) => {
            if obj.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
                Bytes::from(base64::engine::general_purpose::STANDARD.decode(s).ok()?)
            } else {
                Bytes::from(s.clone())
            }
        }
        Some(other) => Bytes::from(other.to_string()),
    };
    let has_type = owned
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    let mut resp = Response::new(status, body);
    if !has_type {
        resp = resp.header("Content-Type", "application/json");
    }
    resp.owned_headers = owned;
    Some(resp)
}

/// A header value from JSON: strings as they are, numbers and booleans as their text.
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// CORS

/// A preflight's answer, from the URL's configuration alone (the function is not invoked).
/// An origin the configuration does not allow gets no CORS headers, so the browser refuses.
fn preflight_response(cors: &Cors, origin: &str, request_id: &RequestId) -> Response {
    let mut resp = Response::empty(200).header("x-amzn-RequestId", request_id.to_string());
    let Some(allowed) = cors.allowed_origin(origin) else {
        return resp;
    };
    resp = resp.header("Access-Control-Allow-Origin", allowed);
    if allowed != "*" {
        resp = resp.header("Vary", "Origin");
    }
    if let Some(methods) = cors.allow_methods.as_ref().filter(|m| !m.is_empty()) {
        resp = resp.header("Access-Control-Allow-Methods", methods.join(","));
    }
    if let Some(headers) = cors.allow_headers.as_ref().filter(|h| !h.is_empty()) {
        resp = resp.header("Access-Control-Allow-Headers", headers.join(","));
    }
    if let Some(expose) = cors.expose_headers.as_ref().filter(|h| !h.is_empty()) {
        resp = resp.header("Access-Control-Expose-Headers", expose.join(","));
    }
    if let Some(age) = cors.max_age_s {
        resp = resp.header("Access-Control-Max-Age", age.to_string());
    }
    if cors.allow_credentials == Some(true) {
        resp = resp.header("Access-Control-Allow-Credentials", "true");
    }
    resp
}

/// CORS headers on a response to a request from `origin`: the URL's configuration replaces
/// whatever CORS headers the function set, as on AWS.
fn add_cors_headers(resp: &mut Response, cors: &Cors, origin: Option<&str>) {
    resp.owned_headers.retain(|(n, _)| {
        !n.get(..15)
            .is_some_and(|p| p.eq_ignore_ascii_case("access-control-"))
    });
    let Some(allowed) = origin.and_then(|o| cors.allowed_origin(o)) else {
        return;
    };
    let mut add = |n: &'static str, v: String| resp.headers.push((n, v));
    add("Access-Control-Allow-Origin", allowed.to_string());
    if allowed != "*" {
        add("Vary", "Origin".to_string());
    }
    if let Some(expose) = cors.expose_headers.as_ref().filter(|h| !h.is_empty()) {
        add("Access-Control-Expose-Headers", expose.join(","));
    }
    if cors.allow_credentials == Some(true) {
        add("Access-Control-Allow-Credentials", "true".to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(r: &Response) -> String {
        String::from_utf8(r.body.to_vec()).unwrap()
    }

    fn header<'a>(r: &'a Response, name: &str) -> Vec<&'a str> {
        r.headers
            .iter()
            .map(|(n, v)| (*n, v.as_str()))
            .chain(
                r.owned_headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str())),
            )
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
            .collect()
    }

    #[test]
    fn results_map_as_aws_maps_them() {
        let r = http_response(&Bytes::from_static(b"\"hello\"")).unwrap();
        assert_eq!((r.status, body_of(&r)), (200, "hello".to_string()));
        assert_eq!(header(&r, "content-type"), ["application/json"]);
        let r = http_response(&Bytes::from_static(b"{\"a\":1}")).unwrap();
        assert_eq!((r.status, body_of(&r)), (200, "{\"a\":1}".to_string()));
        let r = http_response(&Bytes::from_static(b"1.25")).unwrap();
        assert_eq!(body_of(&r), "1.25");
        let r = http_response(&Bytes::from_static(
            br#"{"statusCode":201,"headers":{"content-type":"text/plain","x-n":3,"content-length":"99"},
                "multiValueHeaders":{"x-m":["a","b"]},"cookies":["a=1","b=2; Path=/"],
                "body":"aGk=","isBase64Encoded":true}"#,
        ))
        .unwrap();
        assert_eq!((r.status, body_of(&r)), (201, "hi".to_string()));
        assert_eq!(header(&r, "content-type"), ["text/plain"]);
        assert_eq!(header(&r, "x-n"), ["3"]);
        assert_eq!(header(&r, "x-m"), ["a", "b"]);
        assert_eq!(header(&r, "set-cookie"), ["a=1", "b=2; Path=/"]);
        assert!(header(&r, "content-length").is_empty());
        assert!(http_response(&Bytes::from_static(br#"{"statusCode":"x"}"#)).is_none());
        assert!(http_response(&Bytes::from_static(
            br#"{"statusCode":200,"body":"*","isBase64Encoded":true}"#
        ))
        .is_none());
    }

    #[test]
    fn text_types() {
        for t in [
            "text/plain",
            "application/json; charset=utf-8",
            "application/ld+json",
            "application/xml",
            "application/x-www-form-urlencoded",
        ] {
            assert!(is_text(Some(t)), "{t}");
        }
        for t in [
            "application/octet-stream",
            "image/png",
            "multipart/form-data",
        ] {
            assert!(!is_text(Some(t)), "{t}");
        }
        assert!(!is_text(None));
    }

    #[test]
    fn escaping_and_time() {
        let mut s = String::new();
        push_str(&mut s, "a\"b\\c\n\u{1}é");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001é\"");
        assert_eq!(clf_time(0), "01/Jan/1970:00:00:00 +0000");
    }

    #[test]
    fn cors_replaces_the_functions_headers() {
        let cors = Cors {
            allow_origins: Some(vec!["https://a.example".into()]),
            expose_headers: Some(vec!["x-a".into()]),
            allow_credentials: Some(true),
            ..Cors::default()
        };
        let mut r = Response::new(200, "");
        r.owned_headers
            .push(("Access-Control-Allow-Origin".into(), "*".into()));
        add_cors_headers(&mut r, &cors, Some("https://a.example"));
        assert_eq!(
            header(&r, "access-control-allow-origin"),
            ["https://a.example"]
        );
        assert_eq!(header(&r, "access-control-allow-credentials"), ["true"]);
        let p = preflight_response(&cors, "https://b.example", &RequestId::random());
        assert!(header(&p, "access-control-allow-origin").is_empty());
    }
}
