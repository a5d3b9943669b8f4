//! End-to-end tests of function URLs (process executor, real Python runtime): the management
//! calls, the payload 2.0 event a URL request becomes, the mapping of results back to HTTP (a
//! `statusCode` object, a bare string, a function error), CORS preflights, and a URL's life
//! (it survives a restart; deleting it, or its function, removes it).
//!
//! Requests go to the returned `FunctionUrl` itself: with curl when the machine has it (curl
//! resolves `*.localhost` to the loopback address without DNS), and always as raw HTTP to the
//! User API port with the URL's `Host`.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use lambda_at_home::protocols::http::{write_request_head, ClientResponse};
use serde_json::{json, Value};

/// Echoes the event at `/echo` (with a cookie and a custom header), returns a bare string at
/// `/bare`, raises at `/boom`.
const ECHO_PY: &str = r#"
import json
def handler(event, context):
    path = event.get('rawPath')
    if path == '/boom':
        raise ValueError('boom')
    if path == '/bare':
        return 'just text'
    return {'statusCode': 201, 'headers': {'content-type': 'application/json', 'x-echo': 'yes'},
            'cookies': ['seen=1; Path=/', 'other=2'], 'body': json.dumps(event)}
"#;

fn url_path(name: &str, qualifier: Option<&str>) -> String {
    match qualifier {
        Some(q) => format!("/2021-10-31/functions/{name}/url?Qualifier={q}"),
        None => format!("/2021-10-31/functions/{name}/url"),
    }
}

/// `http://<id>.lambda-url.<region>.localhost:<port>/` split into (host with port, URL).
fn url_host(url: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    rest.trim_end_matches('/').to_string()
}

/// One raw HTTP request to the server's User API port with `host` as the `Host` header.
fn url_call(
    server: &TestServer,
    host: &str,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> ClientResponse {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut all: Vec<(&str, &str)> = vec![("Connection", "close")];
    all.extend_from_slice(headers);
    let mut out = Vec::new();
    write_request_head(&mut out, method, target, host, &all, body.len());
    out.extend_from_slice(body);
    stream.write_all(&out).unwrap();
    read_response(&mut stream, method == "HEAD").unwrap()
}

fn headers_all<'a>(resp: &'a ClientResponse, name: &str) -> Vec<&'a str> {
    resp.headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| std::str::from_utf8(v).unwrap().trim())
        .collect()
}

fn create_url(server: &TestServer, name: &str, qualifier: Option<&str>, body: Value) -> Value {
    expect_json(
        &server.call_json("POST", &url_path(name, qualifier), &body),
        201,
    )
}

fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn url_requests_become_events_and_results_become_responses() {
    let server = TestServer::new();
    let name = unique_name("url");
    server.create_python(&name, ECHO_PY, json!({}));
    let created = create_url(
        &server,
        &name,
        None,
        json!({"AuthType": "NONE", "Cors": {"AllowOrigins": ["https://app.example"],
            "AllowMethods": ["GET", "POST"], "AllowHeaders": ["x-custom"],
            "ExposeHeaders": ["x-echo"], "MaxAge": 300, "AllowCredentials": true}}),
    );
    let url = created["FunctionUrl"].as_str().unwrap().to_string();
    let port = server.addr.port();
    let id = url
        .strip_prefix("http://")
        .and_then(|u| u.split('.').next())
        .unwrap()
        .to_string();
    assert_eq!(id.len(), 32, "{url}");
    assert!(id
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    assert_eq!(
        url,
        format!("http://{id}.lambda-url.us-east-1.localhost:{port}/")
    );
    assert_eq!(created["AuthType"], "NONE");
    assert_eq!(created["InvokeMode"], "BUFFERED");
    assert_eq!(created["Cors"]["MaxAge"], 300);
    assert!(created["CreationTime"].is_string());
    assert!(created.get("LastModifiedTime").is_none());
    let host = url_host(&url);

    // GET with a query and cookies: the event's fields as AWS fills them.
    let resp = url_call(
        &server,
        &host,
        "GET",
        "/echo?a=1&a=2&b=x%20y&empty=",
        &[
            ("Cookie", "k=v; k2=v2"),
            ("User-Agent", "e2e-test/1"),
            ("X-Multi", "one"),
            ("X-Multi", "two"),
            ("Origin", "https://app.example"),
        ],
        b"",
    );
    assert_eq!(resp.status, 201, "{}", describe(&resp));
    assert_eq!(resp.header_str("x-echo"), Some("yes"));
    assert_eq!(
        headers_all(&resp, "set-cookie"),
        ["seen=1; Path=/", "other=2"]
    );
    assert_eq!(
        resp.header_str("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        resp.header_str("access-control-allow-credentials"),
        Some("true")
    );
    assert_eq!(
        resp.header_str("access-control-expose-headers"),
        Some("x-echo")
    );
    assert!(resp.header_str("x-amzn-RequestId").is_some());
    let event: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "$default");
    assert_eq!(event["rawPath"], "/echo");
    assert_eq!(event["rawQueryString"], "a=1&a=2&b=x%20y&empty=");
    assert_eq!(event["cookies"], json!(["k=v", "k2=v2"]));
    assert_eq!(
        event["queryStringParameters"],
        json!({"a": "1,2", "b": "x y", "empty": ""})
    );
    assert_eq!(event["headers"]["x-multi"], "one,two");
    assert_eq!(event["headers"]["user-agent"], "e2e-test/1");
    assert_eq!(event["headers"]["host"], host.as_str());
    assert!(event["headers"].get("cookie").is_none());
    assert_eq!(event["isBase64Encoded"], false);
    assert!(event.get("body").is_none());
    let ctx = &event["requestContext"];
    assert_eq!(ctx["http"]["method"], "GET");
    assert_eq!(ctx["http"]["path"], "/echo");
    assert_eq!(ctx["http"]["protocol"], "HTTP/1.1");
    assert_eq!(ctx["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(ctx["http"]["userAgent"], "e2e-test/1");
    assert_eq!(ctx["accountId"], "anonymous");
    assert_eq!(ctx["apiId"], id.as_str());
    assert_eq!(ctx["domainPrefix"], id.as_str());
    assert_eq!(
        ctx["domainName"],
        format!("{id}.lambda-url.us-east-1.localhost")
    );
    assert_eq!(ctx["routeKey"], "$default");
    assert_eq!(ctx["stage"], "$default");
    assert!(ctx["timeEpoch"].as_u64().unwrap() > 1_600_000_000_000);
    assert!(ctx["time"].as_str().unwrap().ends_with(" +0000"));
    assert_eq!(
        ctx["requestId"].as_str(),
        resp.header_str("x-amzn-RequestId")
    );

    // A binary body travels base64-encoded; a JSON body as text.
    let binary: Vec<u8> = (0..=255u8).collect();
    let resp = url_call(
        &server,
        &host,
        "POST",
        "/echo",
        &[("Content-Type", "application/octet-stream")],
        &binary,
    );
    assert_eq!(resp.status, 201, "{}", describe(&resp));
    let event: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(event["isBase64Encoded"], true);
    assert_eq!(b64_decode(event["body"].as_str().unwrap()), binary);
    assert_eq!(event["requestContext"]["http"]["method"], "POST");
    let resp = url_call(
        &server,
        &host,
        "POST",
        "/echo",
        &[("Content-Type", "application/json")],
        br#"{"k":"v"}"#,
    );
    let event: Value = serde_json::from_slice(&resp.body).unwrap();
    assert_eq!(event["isBase64Encoded"], false);
    assert_eq!(event["body"], r#"{"k":"v"}"#);

    // A CORS preflight is answered from the configuration.
    let resp = url_call(
        &server,
        &host,
        "OPTIONS",
        "/echo",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "POST"),
            ("Access-Control-Request-Headers", "x-custom"),
        ],
        b"",
    );
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    assert!(resp.body.is_empty());
    assert_eq!(
        resp.header_str("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        resp.header_str("access-control-allow-methods"),
        Some("GET,POST")
    );
    assert_eq!(
        resp.header_str("access-control-allow-headers"),
        Some("x-custom")
    );
    assert_eq!(resp.header_str("access-control-max-age"), Some("300"));
    // ... and an origin it does not list gets no CORS headers.
    let resp = url_call(
        &server,
        &host,
        "OPTIONS",
        "/echo",
        &[
            ("Origin", "https://evil.example"),
            ("Access-Control-Request-Method", "POST"),
        ],
        b"",
    );
    assert_eq!(resp.status, 200);
    assert_eq!(resp.header_str("access-control-allow-origin"), None);

    // A bare string result is a 200 application/json whose body is the string.
    let resp = url_call(&server, &host, "GET", "/bare", &[], b"");
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    assert_eq!(&resp.body[..], b"just text");
    assert_eq!(resp.header_str("content-type"), Some("application/json"));

    // HEAD runs the function and answers without a body.
    let resp = url_call(&server, &host, "HEAD", "/bare", &[], b"");
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    assert!(resp.body.is_empty());

    // A function error is a 502.
    let resp = url_call(&server, &host, "GET", "/boom", &[], b"");
    assert_eq!(resp.status, 502, "{}", describe(&resp));
    assert_eq!(&resp.body[..], b"Internal Server Error");

    // An unknown URL id is refused as AWS refuses it.
    let unknown = format!("{}.lambda-url.us-east-1.localhost:{port}", "a".repeat(32));
    let resp = url_call(&server, &unknown, "GET", "/", &[], b"");
    assert_eq!(resp.status, 403);
    assert_eq!(json_body(&resp), json!({"Message": "Forbidden"}));

    // The User API still answers on the same port for any other host.
    let resp = server.call("GET", "/healthz", &[], b"");
    assert_eq!(resp.status, 200);

    // curl reaches the URL exactly as returned: no DNS set-up, no Host override.
    if curl_available() {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "30", "-b", "ck=1"])
            .arg(format!("{url}echo?via=curl"))
            .output()
            .unwrap();
        assert!(out.status.success(), "curl failed: {out:?}");
        let event: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
        assert_eq!(event["queryStringParameters"]["via"], "curl");
        assert_eq!(event["cookies"], json!(["ck=1"]));
        assert!(event["requestContext"]["http"]["userAgent"]
            .as_str()
            .unwrap()
            .starts_with("curl/"));
    } else {
        eprintln!("curl not found: the curl part of this test was skipped");
    }
}

#[test]
fn url_management_follows_aws() {
    let server = TestServer::new();
    let name = unique_name("urlm");
    server.create_python(&name, ECHO_PY, json!({"Publish": true}));
    let created = create_url(&server, &name, None, json!({"AuthType": "AWS_IAM"}));

    // One URL per qualifier.
    let resp = server.call_json("POST", &url_path(&name, None), &json!({"AuthType": "NONE"}));
    expect_aws_error(&resp, 409, "ResourceConflictException");
    // Invalid values.
    for body in [
        json!({"AuthType": "OPEN"}),
        json!({"AuthType": "NONE", "InvokeMode": "STREAMING"}),
        json!({"AuthType": "NONE", "Cors": {"MaxAge": 86401}}),
        json!({"AuthType": "NONE", "Cors": {"AllowOrigins": ["x".repeat(254)]}}),
    ] {
        let resp = server.call_json("POST", &url_path(&name, None), &body);
        assert_eq!(resp.status, 400, "{body}: {}", describe(&resp));
    }
    // A version number cannot have a URL; a missing alias or function is not found.
    let resp = server.call_json(
        "POST",
        &url_path(&name, Some("1")),
        &json!({"AuthType": "NONE"}),
    );
    expect_aws_error(&resp, 400, "InvalidParameterValueException");
    let resp = server.call_json(
        "POST",
        &url_path(&name, Some("nope")),
        &json!({"AuthType": "NONE"}),
    );
    expect_aws_error(&resp, 404, "ResourceNotFoundException");
    let resp = server.call("GET", &url_path("no-such-function", None), &[], b"");
    expect_aws_error(&resp, 404, "ResourceNotFoundException");

    // An alias's URL invokes the alias.
    let alias = json!({"Name": "live", "FunctionVersion": "1"});
    expect_json(
        &server.call_json(
            "POST",
            &format!("/2015-03-31/functions/{name}/aliases"),
            &alias,
        ),
        201,
    );
    let live = create_url(&server, &name, Some("live"), json!({"AuthType": "NONE"}));
    assert!(live["FunctionArn"]
        .as_str()
        .unwrap()
        .ends_with(&format!(":function:{name}:live")));
    assert_ne!(live["FunctionUrl"], created["FunctionUrl"]);
    let resp = url_call(
        &server,
        &url_host(live["FunctionUrl"].as_str().unwrap()),
        "GET",
        "/bare",
        &[],
        b"",
    );
    assert_eq!(resp.status, 200, "{}", describe(&resp));

    // Update changes what it names and keeps the URL.
    let updated = expect_json(
        &server.call_json(
            "PUT",
            &url_path(&name, None),
            &json!({"AuthType": "NONE", "InvokeMode": "RESPONSE_STREAM", "Cors": {"AllowOrigins": ["*"]}}),
        ),
        200,
    );
    assert_eq!(updated["FunctionUrl"], created["FunctionUrl"]);
    assert_eq!(updated["AuthType"], "NONE");
    assert_eq!(updated["InvokeMode"], "RESPONSE_STREAM");
    assert_eq!(updated["Cors"]["AllowOrigins"], json!(["*"]));
    assert!(updated["LastModifiedTime"].is_string());
    // A RESPONSE_STREAM URL is served (buffered for now).
    let resp = url_call(
        &server,
        &url_host(created["FunctionUrl"].as_str().unwrap()),
        "GET",
        "/bare",
        &[("Origin", "https://any.example")],
        b"",
    );
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    assert_eq!(resp.header_str("access-control-allow-origin"), Some("*"));

    // List, paged.
    let list_path = format!("/2021-10-31/functions/{name}/urls");
    let all = expect_json(&server.call("GET", &list_path, &[], b""), 200);
    assert_eq!(all["FunctionUrlConfigs"].as_array().unwrap().len(), 2);
    let first = expect_json(
        &server.call("GET", &format!("{list_path}?MaxItems=1"), &[], b""),
        200,
    );
    assert_eq!(first["FunctionUrlConfigs"].as_array().unwrap().len(), 1);
    let marker = first["NextMarker"].as_str().unwrap();
    let second = expect_json(
        &server.call(
            "GET",
            &format!("{list_path}?MaxItems=1&Marker={marker}"),
            &[],
            b"",
        ),
        200,
    );
    assert_eq!(second["FunctionUrlConfigs"].as_array().unwrap().len(), 1);
    assert!(second.get("NextMarker").is_none());

    // A throttled function is a 429 through its URL.
    let concurrency = format!("/2017-10-31/functions/{name}/concurrency");
    let resp = server.call_json(
        "PUT",
        &concurrency,
        &json!({"ReservedConcurrentExecutions": 0}),
    );
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    let resp = url_call(
        &server,
        &url_host(created["FunctionUrl"].as_str().unwrap()),
        "GET",
        "/bare",
        &[],
        b"",
    );
    assert_eq!(resp.status, 429, "{}", describe(&resp));
    assert_eq!(json_body(&resp), json!({"Message": "Too Many Requests"}));
    let resp = server.call("DELETE", &concurrency, &[], b"");
    assert_eq!(resp.status, 204, "{}", describe(&resp));

    // Deleting the alias deletes its URL.
    let resp = server.call(
        "DELETE",
        &format!("/2015-03-31/functions/{name}/aliases/live"),
        &[],
        b"",
    );
    assert_eq!(resp.status, 204);
    let all = expect_json(&server.call("GET", &list_path, &[], b""), 200);
    assert_eq!(all["FunctionUrlConfigs"].as_array().unwrap().len(), 1);
}

#[test]
fn urls_survive_restarts_and_go_with_their_function() {
    let dir = tempfile::tempdir().unwrap();
    let name = unique_name("urlr");
    let id = {
        let server = TestServer::start_in(dir.path(), |_| {});
        server.create_python(&name, ECHO_PY, json!({}));
        let created = create_url(&server, &name, None, json!({"AuthType": "NONE"}));
        let url = created["FunctionUrl"].as_str().unwrap();
        let resp = url_call(&server, &url_host(url), "GET", "/bare", &[], b"");
        assert_eq!(resp.status, 200, "{}", describe(&resp));
        server.shutdown();
        url_host(url).split('.').next().unwrap().to_string()
    };
    let server = TestServer::start_in(dir.path(), |_| {});
    let got = expect_json(&server.call("GET", &url_path(&name, None), &[], b""), 200);
    let url = got["FunctionUrl"].as_str().unwrap();
    // Same id, on whatever port this server listens.
    assert!(
        url.starts_with(&format!("http://{id}.lambda-url.")),
        "{url}"
    );
    assert!(url.ends_with(&format!(":{}/", server.addr.port())), "{url}");
    let host = url_host(url);
    let resp = url_call(&server, &host, "GET", "/bare", &[], b"");
    assert_eq!(resp.status, 200, "{}", describe(&resp));

    // Deleting the URL removes it at once; a new one has a new id.
    let resp = server.call("DELETE", &url_path(&name, None), &[], b"");
    assert_eq!(resp.status, 204, "{}", describe(&resp));
    let resp = url_call(&server, &host, "GET", "/bare", &[], b"");
    assert_eq!(resp.status, 403);
    let resp = server.call("GET", &url_path(&name, None), &[], b"");
    expect_aws_error(&resp, 404, "ResourceNotFoundException");
    let again = create_url(&server, &name, None, json!({"AuthType": "NONE"}));
    let host = url_host(again["FunctionUrl"].as_str().unwrap());
    assert!(!host.starts_with(&id));
    let resp = url_call(&server, &host, "GET", "/bare", &[], b"");
    assert_eq!(resp.status, 200, "{}", describe(&resp));

    // Deleting the function removes its URL.
    let resp = server.call("DELETE", &format!("/2015-03-31/functions/{name}"), &[], b"");
    assert_eq!(resp.status, 204);
    let resp = url_call(&server, &host, "GET", "/bare", &[], b"");
    assert_eq!(resp.status, 403);
}

/// With the User API's authentication on: an `AWS_IAM` URL takes only requests signed with a
/// configured key (and its event names the key), a `NONE` URL takes anyone.
#[test]
fn aws_iam_urls_are_verified_when_authentication_is_on() {
    use lambda_at_home::config::{AuthChoice, Secret};
    use lambda_at_home::protocols::sigv4::{self, CanonicalInput, Signer};
    const KEY_ID: &str = "AKIDURLTEST";
    const SECRET: &str = "url/test+secret";
    let server = TestServer::with_config(|c| {
        c.auth = AuthChoice::On;
        c.access_key_id = Some(KEY_ID.to_string());
        c.secret_access_key = Some(Secret(SECRET.to_string()));
    });
    let api_host = server.addr.to_string();
    // Signs host and x-amz-date with `secret`, as botocore signs, and sends to `host`.
    let signed = |host: &str, secret: &str, method: &str, target: &str, body: &[u8]| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let amz_date = sigv4::format_amz_date(now);
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        let headers: Vec<(&str, &[u8])> = vec![
            ("host", host.as_bytes()),
            ("x-amz-date", amz_date.as_bytes()),
        ];
        let hash = sigv4::sha256_hex(body);
        let input = CanonicalInput {
            method,
            path,
            query,
            headers: || headers.iter().copied(),
            signed_headers: "host;x-amz-date",
            payload_hash: &hash,
        };
        let signer = Signer {
            access_key_id: KEY_ID,
            secret,
            region: "us-east-1",
            service: "lambda",
        };
        let authorization = signer.authorization(&amz_date, &input);
        url_call(
            &server,
            host,
            method,
            target,
            &[
                ("X-Amz-Date", &amz_date),
                ("Authorization", &authorization),
                ("Content-Type", "application/json"),
            ],
            body,
        )
    };
    let mut hosts = Vec::new();
    for auth in ["AWS_IAM", "NONE"] {
        let name = unique_name("urla");
        let create = json!({"FunctionName": name, "Runtime": "python3.12", "Role": ROLE,
            "Handler": "lambda_function.handler",
            "Code": {"ZipFile": zip_b64(&[("lambda_function.py", ECHO_PY.as_bytes(), 0o644)])}});
        let body = create.to_string();
        let resp = signed(
            &api_host,
            SECRET,
            "POST",
            "/2015-03-31/functions",
            body.as_bytes(),
        );
        expect_json(&resp, 201);
        let body = json!({"AuthType": auth}).to_string();
        let resp = signed(
            &api_host,
            SECRET,
            "POST",
            &url_path(&name, None),
            body.as_bytes(),
        );
        let created = expect_json(&resp, 201);
        hosts.push(url_host(created["FunctionUrl"].as_str().unwrap()));
    }
    let (iam, public) = (&hosts[0], &hosts[1]);

    let resp = url_call(&server, iam, "GET", "/echo", &[], b"");
    assert_eq!(resp.status, 403, "{}", describe(&resp));
    assert_eq!(json_body(&resp)["Message"], "Forbidden");
    let resp = signed(iam, "wrong-secret", "GET", "/echo?x=1", b"");
    assert_eq!(resp.status, 403, "{}", describe(&resp));
    let resp = signed(iam, SECRET, "GET", "/echo?x=1", b"");
    assert_eq!(resp.status, 201, "{}", describe(&resp));
    let event: Value = serde_json::from_slice(&resp.body).unwrap();
    let ctx = &event["requestContext"];
    assert_eq!(ctx["authorizer"]["iam"]["accessKey"], KEY_ID);
    assert_eq!(ctx["accountId"], "000000000000");

    let resp = url_call(&server, public, "GET", "/bare", &[], b"");
    assert_eq!(resp.status, 200, "{}", describe(&resp));
    // The User API itself still wants a signature.
    let resp = server.call("GET", "/2015-03-31/functions", &[], b"");
    assert_eq!(resp.status, 403, "{}", describe(&resp));
}

/// Streams through `HttpResponseStream.from` (status, header, cookie), with a pause between
/// its two chunks; `/plain` streams text/plain without a prelude; `/boom` fails mid-stream.
const NODE_URL_STREAM: &str = r#"
exports.handler = awslambda.streamifyResponse(async (event, responseStream) => {
  if (event.rawPath === '/plain') {
    responseStream.setContentType('text/plain');
    responseStream.write('plain;');
    responseStream.end();
    return;
  }
  const stream = awslambda.HttpResponseStream.from(responseStream, {
    statusCode: 202, headers: { 'x-streamed': 'yes' }, cookies: ['s=1'],
  });
  stream.write('first;');
  await new Promise((r) => setTimeout(r, 1500));
  if (event.rawPath === '/boom') throw new Error('broke mid-stream');
  stream.write('second');
  stream.end();
});
"#;

/// Reads a chunked body from `stream` until its last chunk or EOF: the data, when the first
/// data arrived, and whether the last chunk came (false: the body was cut short).
fn read_chunked(stream: &mut TcpStream, started: Instant) -> (Vec<u8>, Option<Duration>, bool) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    let mut first = None;
    loop {
        let n = stream.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if first.is_none() && !decode_chunks(&raw).0.is_empty() {
            first = Some(started.elapsed());
        }
        if decode_chunks(&raw).1 {
            break;
        }
    }
    let (data, complete) = decode_chunks(&raw);
    (data, first, complete)
}

/// The data of the complete chunks in `raw`, and whether the last (empty) chunk is among them.
fn decode_chunks(raw: &[u8]) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut at = 0;
    while let Some(line_end) = raw[at..].windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&raw[at..at + line_end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size else {
            break;
        };
        let start = at + line_end + 2;
        if size == 0 {
            return (data, true);
        }
        if raw.len() < start + size + 2 {
            break;
        }
        data.extend_from_slice(&raw[start..start + size]);
        at = start + size + 2;
    }
    (data, false)
}

/// Sends a GET for `target` to a URL host and returns the socket positioned after the head,
/// with the head's text.
fn open_stream(server: &TestServer, host: &str, target: &str) -> (TcpStream, String, Instant) {
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let started = Instant::now();
    write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nOrigin: https://app.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "head cut short");
        head.push(byte[0]);
    }
    (stream, String::from_utf8(head).unwrap(), started)
}

#[test]
fn response_stream_urls_deliver_chunks_as_they_are_produced() {
    let server = TestServer::new();
    let name = unique_name("url-stream");
    let resp = server.create_function(
        &name,
        "nodejs20.x",
        "index.handler",
        &[("index.js", NODE_URL_STREAM.as_bytes(), 0o644)],
        json!({"Timeout": 10}),
    );
    expect_json(&resp, 201);
    let created = create_url(
        &server,
        &name,
        None,
        json!({"AuthType": "NONE", "InvokeMode": "RESPONSE_STREAM",
            "Cors": {"AllowOrigins": ["https://app.example"]}}),
    );
    assert_eq!(created["InvokeMode"], "RESPONSE_STREAM");
    let host = url_host(created["FunctionUrl"].as_str().unwrap());

    // The prelude's status, header and cookie; CORS; chunks as they come.
    let (mut stream, head, started) = open_stream(&server, &host, "/");
    let lower = head.to_ascii_lowercase();
    assert!(head.starts_with("HTTP/1.1 202 "), "{head}");
    assert!(lower.contains("transfer-encoding: chunked"), "{head}");
    assert!(lower.contains("x-streamed: yes"), "{head}");
    assert!(lower.contains("set-cookie: s=1"), "{head}");
    assert!(
        lower.contains("access-control-allow-origin: https://app.example"),
        "{head}"
    );
    let (body, first, complete) = read_chunked(&mut stream, started);
    let total = started.elapsed();
    assert_eq!(String::from_utf8_lossy(&body), "first;second");
    assert!(complete, "the stream ended with its last chunk");
    let first = first.expect("data arrived");
    assert!(
        total.saturating_sub(first) >= Duration::from_millis(1000),
        "first chunk after {first:?}, whole body after {total:?}: not streamed"
    );

    // No prelude: 200 with the declared content type.
    let (mut stream, head, started) = open_stream(&server, &host, "/plain");
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    let (body, _, complete) = read_chunked(&mut stream, started);
    assert_eq!(body, b"plain;");
    assert!(complete);

    // A failure mid-stream: what was sent stays sent, and the body is cut short.
    let (mut stream, head, started) = open_stream(&server, &host, "/boom");
    assert!(head.starts_with("HTTP/1.1 202 "), "{head}");
    let (body, _, complete) = read_chunked(&mut stream, started);
    assert_eq!(body, b"first;");
    assert!(
        !complete,
        "a failed stream must not end like a complete one"
    );

    // curl -N reads the same stream.
    if curl_available() {
        let url = created["FunctionUrl"].as_str().unwrap();
        let out = Command::new("curl")
            .args(["-sS", "-N", "--max-time", "20", url])
            .output()
            .expect("curl runs");
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "first;second");
    }
}

#[test]
fn url_requests_over_6_mb_are_refused_before_the_body_is_read() {
    // The User API takes 70 MB uploads on the same port; a function URL request is held to
    // Invoke's 6 MB from its Content-Length, so no client can make the server buffer more.
    let server = TestServer::new();
    let name = unique_name("url-big");
    server.create_python(&name, ECHO_PY, json!({}));
    let created = create_url(&server, &name, None, json!({"AuthType": "NONE"}));
    let host = url_host(created["FunctionUrl"].as_str().unwrap());
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    write!(
        stream,
        "POST /echo HTTP/1.1\r\nHost: {host}\r\nContent-Length: 7000000\r\n\r\n"
    )
    .unwrap();
    // Nothing of the body is sent: the answer must come from the head alone.
    let resp = read_response(&mut stream, false).unwrap();
    assert_eq!(resp.status, 413, "{}", describe(&resp));
}
