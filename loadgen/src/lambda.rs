//! The AWS Lambda User API as loadgen uses it (REST-JSON, path prefix `2015-03-31`): create,
//! reconfigure, invoke and delete the echo test functions, and read the server's `/metrics`.
//!
//! Also owns the test functions themselves (a Node and a Python echo handler zipped in memory),
//! the invoke payload, and how a response is classified: success, function error
//! (`X-Amz-Function-Error`), or an HTTP error status with its `x-amzn-ErrorType`. Control calls
//! (create, update, delete) are not timed; only `invoke` is on the measured path.

use std::collections::BTreeMap;
use std::io::Write;

use base64::Engine;
use lambda_at_home::protocols::http::ClientResponse;
use serde_json::{json, Value};

use crate::client::{ClientError, Conn};

/// The env variable the runtimes read to choose their transport.
pub const TRANSPORT_ENV: &str = "LAMBDA_USE_WEBSOCKET";
/// The env variable changed to retire a function's instances (forces a cold start).
pub const GENERATION_ENV: &str = "LOADGEN_GENERATION";
const FUNCTIONS_PATH: &str = "/2015-03-31/functions";
/// Function URL configs live under another API version's path.
const URL_FUNCTIONS_PATH: &str = "/2021-10-31/functions";
const ROLE_ARN: &str = "arn:aws:iam::000000000000:role/loadgen";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{op} returned HTTP {status} {error_type}: {message}")]
    Status {
        op: &'static str,
        status: u16,
        error_type: String,
        message: String,
    },
    #[error("{op}: unexpected response body: {detail}")]
    Body { op: &'static str, detail: String },
    #[error("building the function zip failed: {0}")]
    Zip(String),
}

/// The environment variable whose value (ms) the echo functions sleep in their module init.
pub const INIT_SLEEP_ENV: &str = "LOADGEN_INIT_SLEEP_MS";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Node,
    Python,
}

impl RuntimeKind {
    pub fn label(self) -> &'static str {
        match self {
            RuntimeKind::Node => "node",
            RuntimeKind::Python => "python",
        }
    }

    pub fn aws_runtime(self) -> &'static str {
        match self {
            RuntimeKind::Node => "nodejs20.x",
            RuntimeKind::Python => "python3.11",
        }
    }

    pub fn handler(self) -> &'static str {
        match self {
            RuntimeKind::Node => "index.handler",
            RuntimeKind::Python => "lambda_function.handler",
        }
    }

    /// The echo function: returns its event unchanged. An event with `loadgen_hold_ms` is
    /// answered that much later (`loadgen cold`'s later-instance samples keep instances busy
    /// with it), and `LOADGEN_INIT_SLEEP_MS` in the environment makes module init sleep that
    /// long (`--init-sleep-ms`: a function with a slow init, without a CPU-burning one).
    fn source(self) -> (&'static str, &'static str) {
        match self {
            RuntimeKind::Node => (
                "index.js",
                "const initSleep = Number(process.env.LOADGEN_INIT_SLEEP_MS || 0);\n\
                 if (initSleep > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, initSleep);\n\
                 exports.handler = async (event) => {\n\
                 \x20 if (event && event.loadgen_hold_ms) await new Promise((r) => setTimeout(r, event.loadgen_hold_ms));\n\
                 \x20 return event;\n\
                 };\n",
            ),
            RuntimeKind::Python => (
                "lambda_function.py",
                "import os\nimport time\n\n\
                 _INIT_SLEEP_MS = int(os.environ.get(\"LOADGEN_INIT_SLEEP_MS\") or 0)\n\
                 if _INIT_SLEEP_MS > 0:\n    time.sleep(_INIT_SLEEP_MS / 1000)\n\n\n\
                 def handler(event, context):\n\
                 \x20   if isinstance(event, dict) and event.get(\"loadgen_hold_ms\"):\n\
                 \x20       time.sleep(event[\"loadgen_hold_ms\"] / 1000)\n\
                 \x20   return event\n",
            ),
        }
    }

    /// Guesses the family of an existing function from its AWS runtime id.
    pub fn from_aws(runtime: &str) -> Option<RuntimeKind> {
        if runtime.starts_with("nodejs") {
            Some(RuntimeKind::Node)
        } else if runtime.starts_with("python") {
            Some(RuntimeKind::Python)
        } else {
            None
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Http,
    Ws,
}

impl Transport {
    pub fn label(self) -> &'static str {
        match self {
            Transport::Http => "http",
            Transport::Ws => "ws",
        }
    }

    pub fn env_value(self) -> &'static str {
        match self {
            Transport::Http => "false",
            Transport::Ws => "true",
        }
    }
}

/// A zip holding only the echo handler of `runtime`.
pub fn function_zip(runtime: RuntimeKind) -> Result<Vec<u8>, ApiError> {
    let (name, source) = runtime.source();
    zip_file(name, source)
}

/// A zip holding one file, `name`, with `source` as its text.
pub fn zip_file(name: &str, source: &str) -> Result<Vec<u8>, ApiError> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .unix_permissions(0o644);
    zip.start_file(name, options)
        .map_err(|e| ApiError::Zip(e.to_string()))?;
    zip.write_all(source.as_bytes())
        .map_err(|e| ApiError::Zip(e.to_string()))?;
    let cursor = zip.finish().map_err(|e| ApiError::Zip(e.to_string()))?;
    Ok(cursor.into_inner())
}

/// A JSON event of exactly `bytes` bytes (at least the 11 of `{"data":""}`).
pub fn payload(bytes: usize) -> Vec<u8> {
    let frame = br#"{"data":""}"#;
    let fill = bytes.saturating_sub(frame.len());
    let mut out = Vec::with_capacity(frame.len() + fill);
    out.extend_from_slice(&frame[..9]);
    out.resize(9 + fill, b'x');
    out.extend_from_slice(&frame[9..]);
    out
}

/// The error label of a response, `None` for a success. Labels: `function_error:<value>`,
/// `http_<status>` or `http_<status>:<x-amzn-ErrorType>`.
pub fn classify(resp: &ClientResponse) -> Option<String> {
    if let Some(kind) = resp.header_str("x-amz-function-error") {
        return Some(format!("function_error:{kind}"));
    }
    if resp.status == 200 {
        return None;
    }
    Some(match resp.header_str("x-amzn-errortype") {
        Some(kind) if !kind.is_empty() => format!("http_{}:{kind}", resp.status),
        _ => format!("http_{}", resp.status),
    })
}

/// The invoke target path of `function`.
/// The host (with port) of a function URL, `http://HOST/` → `HOST`, sent as `Host` to the
/// endpoint's address (so `*.localhost` names need no resolver).
pub fn url_host(function_url: &str) -> Option<String> {
    let host = function_url.strip_prefix("http://")?.trim_end_matches('/');
    (!host.is_empty() && !host.contains('/')).then(|| host.to_owned())
}

pub fn invoke_path(function: &str) -> String {
    format!("{FUNCTIONS_PATH}/{function}/invocations")
}

/// What a logged (`X-Amz-Log-Type: Tail`) invoke returned.
pub struct TailedInvoke {
    pub response: ClientResponse,
    /// The decoded log tail, if the server returned one.
    pub log: Option<String>,
}

impl TailedInvoke {
    /// `Init Duration` from the REPORT line, present only when this invoke cold-started.
    pub fn init_duration_ms(&self) -> Option<f64> {
        let log = self.log.as_deref()?;
        let report = log.lines().rev().find(|l| l.starts_with("REPORT"))?;
        let (_, rest) = report.split_once("Init Duration:")?;
        rest.split_whitespace().next()?.parse().ok()
    }
}

/// The control connection: every User API call that is not on the measured path.
pub struct Api {
    pub conn: Conn,
    /// Whether `metrics` asks the server (off for `--invoke-only`: a Lambda-style endpoint has
    /// no `/metrics`, and the request would be a stray one).
    pub metrics_enabled: bool,
}

impl Api {
    pub fn new(conn: Conn) -> Api {
        Api {
            conn,
            metrics_enabled: true,
        }
    }

    async fn call(
        &mut self,
        op: &'static str,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> Result<ClientResponse, ApiError> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("Content-Type", "application/json")]
        } else {
            &[]
        };
        let resp = self.conn.request(method, path, headers, &bytes).await?;
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        let message = serde_json::from_slice::<Value>(&resp.body)
            .ok()
            .and_then(|v| {
                v.get("Message")
                    .or_else(|| v.get("message"))?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).into_owned());
        Err(ApiError::Status {
            op,
            status: resp.status,
            error_type: resp
                .header_str("x-amzn-errortype")
                .unwrap_or_default()
                .to_owned(),
            message,
        })
    }

    /// ListFunctions: a harmless call that proves the endpoint speaks the Lambda API.
    pub async fn list_functions(&mut self) -> Result<(), ApiError> {
        self.call("ListFunctions", "GET", FUNCTIONS_PATH, None)
            .await
            .map(drop)
    }

    /// CreateFunction for the echo handler of `runtime`; an existing function of that name is
    /// deleted first (a leftover of an interrupted run).
    pub async fn create_function(
        &mut self,
        name: &str,
        runtime: RuntimeKind,
        env: &BTreeMap<String, String>,
        memory_mb: u32,
    ) -> Result<(), ApiError> {
        let zip = function_zip(runtime)?;
        self.create_function_code(name, runtime, env, memory_mb, &zip)
            .await
    }

    /// CreateFunction with the code in `zip` (whose handler is `runtime.handler()`); an existing
    /// function of that name is deleted first.
    pub async fn create_function_code(
        &mut self,
        name: &str,
        runtime: RuntimeKind,
        env: &BTreeMap<String, String>,
        memory_mb: u32,
        zip: &[u8],
    ) -> Result<(), ApiError> {
        let zip = base64::engine::general_purpose::STANDARD.encode(zip);
        let body = json!({
            "FunctionName": name,
            "Runtime": runtime.aws_runtime(),
            "Role": ROLE_ARN,
            "Handler": runtime.handler(),
            "Code": {"ZipFile": zip},
            "Environment": {"Variables": env},
            "MemorySize": memory_mb,
            "Timeout": 30,
        });
        match self
            .call("CreateFunction", "POST", FUNCTIONS_PATH, Some(&body))
            .await
        {
            Err(ApiError::Status { status: 409, .. }) => {
                self.delete_function(name).await?;
                self.call("CreateFunction", "POST", FUNCTIONS_PATH, Some(&body))
                    .await
                    .map(drop)
            }
            other => other.map(drop),
        }
    }

    /// The function's URL (`FunctionUrl`), and whether this call created it: CreateFunctionUrlConfig
    /// with AuthType NONE, or GetFunctionUrlConfig when the function already has one.
    pub async fn function_url(&mut self, name: &str) -> Result<(String, bool), ApiError> {
        let path = format!("{URL_FUNCTIONS_PATH}/{name}/url");
        let body = json!({"AuthType": "NONE"});
        let (resp, created) = match self
            .call("CreateFunctionUrlConfig", "POST", &path, Some(&body))
            .await
        {
            Err(ApiError::Status { status: 409, .. }) => (
                self.call("GetFunctionUrlConfig", "GET", &path, None)
                    .await?,
                false,
            ),
            other => (other?, true),
        };
        let config: Value = serde_json::from_slice(&resp.body).map_err(|e| ApiError::Body {
            op: "CreateFunctionUrlConfig",
            detail: e.to_string(),
        })?;
        let url = config["FunctionUrl"].as_str().ok_or(ApiError::Body {
            op: "CreateFunctionUrlConfig",
            detail: "no FunctionUrl".to_owned(),
        })?;
        Ok((url.to_owned(), created))
    }

    pub async fn delete_function_url(&mut self, name: &str) -> Result<(), ApiError> {
        let path = format!("{URL_FUNCTIONS_PATH}/{name}/url");
        self.call("DeleteFunctionUrlConfig", "DELETE", &path, None)
            .await
            .map(drop)
    }

    pub async fn delete_function(&mut self, name: &str) -> Result<(), ApiError> {
        let path = format!("{FUNCTIONS_PATH}/{name}");
        self.call("DeleteFunction", "DELETE", &path, None)
            .await
            .map(drop)
    }

    /// GetFunctionConfiguration, as JSON.
    pub async fn configuration(&mut self, name: &str) -> Result<Value, ApiError> {
        let path = format!("{FUNCTIONS_PATH}/{name}/configuration");
        let resp = self
            .call("GetFunctionConfiguration", "GET", &path, None)
            .await?;
        serde_json::from_slice(&resp.body).map_err(|e| ApiError::Body {
            op: "GetFunctionConfiguration",
            detail: e.to_string(),
        })
    }

    /// UpdateFunctionConfiguration of the environment only; a changed environment retires the
    /// function's instances, so the next invoke is a cold start.
    pub async fn set_environment(
        &mut self,
        name: &str,
        env: &BTreeMap<String, String>,
    ) -> Result<(), ApiError> {
        let path = format!("{FUNCTIONS_PATH}/{name}/configuration");
        let body = json!({"Environment": {"Variables": env}});
        self.call("UpdateFunctionConfiguration", "PUT", &path, Some(&body))
            .await
            .map(drop)
    }

    /// UpdateFunctionCode of `$LATEST` with the code in `zip`; new code retires the function's
    /// instances (and, on Lambda@Home, the old code directory once none runs it).
    pub async fn update_function_code(&mut self, name: &str, zip: &[u8]) -> Result<(), ApiError> {
        let path = format!("{FUNCTIONS_PATH}/{name}/code");
        let body = json!({"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)});
        self.call("UpdateFunctionCode", "PUT", &path, Some(&body))
            .await
            .map(drop)
    }

    /// Invoke with the log tail requested; HTTP errors are returned as responses, not `Err`.
    pub async fn invoke_tail(
        &mut self,
        name: &str,
        payload: &[u8],
    ) -> Result<TailedInvoke, ClientError> {
        let headers = [("X-Amz-Log-Type", "Tail")];
        let response = self
            .conn
            .request("POST", &invoke_path(name), &headers, payload)
            .await?;
        let log = response
            .header_str("x-amz-log-result")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .map(|raw| String::from_utf8_lossy(&raw).into_owned());
        Ok(TailedInvoke { response, log })
    }

    /// The server's Prometheus metrics, if it has a `/metrics` page.
    pub async fn metrics(&mut self) -> Option<Metrics> {
        if !self.metrics_enabled {
            return None;
        }
        let resp = self.conn.request("GET", "/metrics", &[], b"").await.ok()?;
        (resp.status == 200).then(|| Metrics::parse(&String::from_utf8_lossy(&resp.body)))
    }
}

/// A `/metrics` snapshot: series (name with labels) → value.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub series: BTreeMap<String, f64>,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (name, value) = l.trim().rsplit_once(' ')?;
                Some((name.to_owned(), value.parse().ok()?))
            })
            .collect();
        Metrics { series }
    }

    /// The `executor` label of the instance gauges (`process`, `docker`).
    pub fn executor(&self) -> Option<String> {
        self.series.keys().find_map(|k| {
            let (_, rest) = k.split_once("executor=\"")?;
            Some(rest.split('"').next()?.to_owned())
        })
    }

    /// Instances the server is still starting (the sum of its `lah_instances{state="starting"}`
    /// series); None when it exports none.
    pub fn starting(&self) -> Option<f64> {
        let mut series = self
            .series
            .iter()
            .filter(|(k, _)| k.starts_with("lah_instances{") && k.contains("state=\"starting\""))
            .peekable();
        series.peek()?;
        Some(series.map(|(_, v)| v).sum())
    }

    /// The kinds of executor start (`lah_executor_starts_total{kind="..."}`: `exec`, `fork`,
    /// `pooled`) counted since `before`, joined with `+` when several; None when none was.
    pub fn start_kinds_since(&self, before: &Metrics) -> Option<String> {
        let kinds: Vec<&str> = self
            .series
            .iter()
            .filter(|(k, v)| **v > before.series.get(*k).copied().unwrap_or(0.0))
            .filter_map(|(k, _)| {
                let rest = k.strip_prefix("lah_executor_starts_total{")?;
                let (_, kind) = rest.split_once("kind=\"")?;
                kind.split('"').next()
            })
            .collect();
        (!kinds.is_empty()).then(|| kinds.join("+"))
    }

    /// Changes of the `_total` counters between `before` and `self` (unchanged ones omitted).
    pub fn counter_deltas(&self, before: &Metrics) -> BTreeMap<String, f64> {
        self.series
            .iter()
            .filter(|(k, _)| k.ends_with("_total"))
            .filter_map(|(k, v)| {
                let delta = v - before.series.get(k).copied().unwrap_or(0.0);
                (delta != 0.0).then(|| (k.clone(), delta))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_has_exact_size_and_is_json() {
        for n in [0, 11, 12, 64, 1000] {
            let p = payload(n);
            assert_eq!(p.len(), n.max(11));
            let v: Value = serde_json::from_slice(&p).unwrap();
            assert_eq!(v["data"].as_str().unwrap().len(), n.max(11) - 11);
        }
    }

    #[test]
    fn zips_hold_the_handler() {
        for runtime in [RuntimeKind::Node, RuntimeKind::Python] {
            let bytes = function_zip(runtime).unwrap();
            let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
            let (name, source) = runtime.source();
            let mut file = archive.by_name(name).unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut file, &mut text).unwrap();
            assert_eq!(text, source);
        }
    }

    /// Runs the echo handler of `runtime` with the host's interpreter: module init with
    /// `INIT_SLEEP_ENV` = `init_ms`, then the handler with a plain event and with a hold event.
    /// Prints `init_ms`, the plain echo, `hold_ms` and the held echo, one per line.
    fn run_echo(runtime: RuntimeKind, init_ms: u64, hold_ms: u64) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let (name, source) = runtime.source();
        std::fs::write(dir.path().join(name), source).unwrap();
        let hold = String::from_utf8(crate::scenarios::hold_event(hold_ms)).unwrap();
        let (program, script) = match runtime {
            RuntimeKind::Node => (
                "node",
                format!(
                    "const t0 = Date.now(); const m = require('./index.js'); const init = Date.now() - t0;\n\
                     (async () => {{ const plain = await m.handler({{a: [1]}});\n\
                     const t1 = Date.now(); const held = await m.handler({hold});\n\
                     console.log([init, JSON.stringify(plain), Date.now() - t1, JSON.stringify(held)].join('\\n')); }})();"
                ),
            ),
            RuntimeKind::Python => (
                "python3",
                format!(
                    "import json, time\nt0 = time.time()\nimport lambda_function as m\n\
                     init = int((time.time() - t0) * 1000)\nplain = m.handler({{'a': [1]}}, None)\n\
                     t1 = time.time()\nheld = m.handler(json.loads('{hold}'), None)\n\
                     print(init, json.dumps(plain, separators=(',', ':')), int((time.time() - t1) * 1000), json.dumps(held, separators=(',', ':')), sep='\\n')\n"
                ),
            ),
        };
        let out = std::process::Command::new(program)
            .arg(if program == "node" { "-e" } else { "-c" })
            .arg(script)
            .current_dir(dir.path())
            .env(INIT_SLEEP_ENV, init_ms.to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn echo_handlers_echo_hold_and_sleep_in_init_when_asked() {
        for runtime in [RuntimeKind::Node, RuntimeKind::Python] {
            let lines = run_echo(runtime, 120, 80);
            let num = |i: usize| lines[i].parse::<u64>().unwrap();
            assert!(num(0) >= 115, "{runtime:?} init slept: {lines:?}");
            assert_eq!(lines[1], r#"{"a":[1]}"#, "{runtime:?}");
            assert!(num(2) >= 75, "{runtime:?} held: {lines:?}");
            assert_eq!(lines[3], r#"{"loadgen_hold_ms":80}"#, "{runtime:?}");
            // No sleep asked: the handler still answers, and a 0 hold is a plain echo.
            let quick = run_echo(runtime, 0, 0);
            assert_eq!(quick[3], r#"{"loadgen_hold_ms":0}"#, "{runtime:?}");
        }
    }

    fn response(status: u16, headers: &[(&str, &str)]) -> ClientResponse {
        ClientResponse {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
            body: Default::default(),
        }
    }

    #[test]
    fn classification() {
        assert_eq!(classify(&response(200, &[])), None);
        assert_eq!(
            classify(&response(200, &[("X-Amz-Function-Error", "Unhandled")])).as_deref(),
            Some("function_error:Unhandled")
        );
        assert_eq!(
            classify(&response(
                429,
                &[("x-amzn-ErrorType", "TooManyRequestsException")]
            ))
            .as_deref(),
            Some("http_429:TooManyRequestsException")
        );
        assert_eq!(classify(&response(502, &[])).as_deref(), Some("http_502"));
    }

    #[test]
    fn init_duration_from_report_line() {
        let log = "START RequestId: a Version: $LATEST\nEND RequestId: a\nREPORT RequestId: a\t\
                   Duration: 1.20 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 9 MB\t\
                   Init Duration: 41.57 ms\n";
        let tail = TailedInvoke {
            response: response(200, &[]),
            log: Some(log.to_owned()),
        };
        assert_eq!(tail.init_duration_ms(), Some(41.57));
        let warm = TailedInvoke {
            response: response(200, &[]),
            log: Some(log.replace("\tInit Duration: 41.57 ms", "")),
        };
        assert_eq!(warm.init_duration_ms(), None);
    }

    #[test]
    fn metrics_parsing_and_deltas() {
        let before = Metrics::parse(
            "# HELP x\nlah_invocations_total 10\nlah_instances{state=\"idle\",executor=\"process\"} 2\n",
        );
        let after = Metrics::parse(
            "lah_invocations_total 25\nlah_cold_starts_total 1\nlah_instances{state=\"idle\",executor=\"process\"} 3\n",
        );
        assert_eq!(after.executor().as_deref(), Some("process"));
        let d = after.counter_deltas(&before);
        assert_eq!(d.get("lah_invocations_total"), Some(&15.0));
        assert_eq!(d.get("lah_cold_starts_total"), Some(&1.0));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn start_kinds_are_the_executor_start_counters_that_rose() {
        let before = Metrics::parse(
            "lah_executor_starts_total{kind=\"exec\"} 3\nlah_executor_starts_total{kind=\"pooled\"} 1\n",
        );
        let pooled = Metrics::parse(
            "lah_executor_starts_total{kind=\"exec\"} 3\nlah_executor_starts_total{kind=\"pooled\"} 2\n",
        );
        assert_eq!(pooled.start_kinds_since(&before).as_deref(), Some("pooled"));
        let both = Metrics::parse(
            "lah_executor_starts_total{kind=\"exec\"} 4\nlah_executor_starts_total{kind=\"pooled\"} 2\nlah_cold_starts_total 9\n",
        );
        assert_eq!(
            both.start_kinds_since(&before).as_deref(),
            Some("exec+pooled")
        );
        assert_eq!(before.start_kinds_since(&before), None);
    }

    #[test]
    fn starting_instances_sum_the_starting_series() {
        let m = Metrics::parse(
            "lah_instances{state=\"starting\",executor=\"docker\"} 3\nlah_instances{state=\"idle\",executor=\"docker\"} 7\n",
        );
        assert_eq!(m.starting(), Some(3.0));
        assert_eq!(Metrics::parse("lah_invocations_total 1\n").starting(), None);
    }
}
