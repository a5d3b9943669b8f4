//! `loadgen floor`: the best this machine does for the exchange loadgen measures, with nothing
//! of Lambda@Home in it. A caller (loadgen's own client, the one every scenario uses) sends an
//! invoke over loopback HTTP/1.1 keep-alive to a trivial server; the server hands the event to
//! a trivial runtime that long-polls it like the Runtime API (`GET …/invocation/next`), the
//! runtime posts it back (`POST …/invocation/<id>/response`), and the server answers the
//! caller. Same payload, same connection reuse, same process layout (server process, runtime
//! as its child), one exchange at a time as in the warm scenario.
//!
//! Threads: the server is a hidden `loadgen floor-serve` process on one current-thread tokio
//! runtime (hand-offs between its connections are task wake-ups, not thread wake-ups); the
//! runtime is a hidden `loadgen floor-runtime` process with one blocking thread. Both exit when
//! the measuring loadgen closes the server's stdin (or dies). CPU per exchange comes from the
//! same `/proc` accounting as a real run: server = the floor server, runtime = its child.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use lambda_at_home::protocols::http::{
    write_request_head, write_response_head, ClientResponse, Decoder, Limits, ResponseDecoder,
};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, Mutex};

use crate::client::{Conn, Endpoint, RESPONSE_BYTES_MAX};
use crate::lambda::{Api, RuntimeKind, Transport};
use crate::procstat::{Usage, Watch};
use crate::report::{GitInfo, Machine, ReportError};
use crate::scenarios::{self, Bench, Target};
use crate::stats::Summary;

const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";
/// Free space ensured in a read buffer before each read.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// How long the floor server may take to start and report its port.
const START_WAIT_MAX: Duration = Duration::from_secs(10);

/// What `floor` measured.
#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    pub exchange: &'static str,
    pub invokes: u64,
    pub errors: u64,
    pub payload_bytes: usize,
    /// Caller-side latency of one exchange.
    pub latency: Option<Summary>,
    /// `server_*`: the floor server; `runtime_*`: the floor runtime; `loadgen_*`: the caller.
    pub usage: Usage,
}

/// The report of `loadgen floor`: the floor with the machine and checkout it was measured on.
/// Its `floor` object has the same shape as a run report's, so either file works as `--floor`.
#[derive(Clone, Debug, Serialize)]
pub struct FloorReport {
    pub kind: &'static str,
    pub name: String,
    pub date: String,
    pub started_unix_s: u64,
    pub command_line: String,
    pub git: GitInfo,
    pub loadgen_version: &'static str,
    pub machine: Machine,
    pub floor: Floor,
}

impl FloorReport {
    pub fn markdown(&self) -> String {
        let f = &self.floor;
        let m = &self.machine;
        let ms = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.3}"));
        let us = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
        let l = f.latency.as_ref();
        format!(
            "# loadgen floor ({})\n\n\
             - Command: `{}`\n\
             - Git commit: `{}`\n\
             - Machine: {} × {} logical CPUs; load average {} at start, {} at end\n\
             - Exchange: {}; {} B payload; {} sequential exchanges, {} errors\n\n\
             | p50 ms | p90 ms | p99 ms | max ms | Server CPU µs/exchange | Runtime CPU µs/exchange | loadgen CPU µs/exchange |\n\
             |---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} | {} | {} | {} |\n",
            self.date,
            self.command_line,
            self.git.commit.as_deref().unwrap_or("unknown"),
            m.cpu_model,
            m.logical_cpus,
            m.loadavg_start,
            m.loadavg_end,
            f.exchange,
            f.payload_bytes,
            f.invokes,
            f.errors,
            ms(l.map(|l| l.p50_ms)),
            ms(l.map(|l| l.p90_ms)),
            ms(l.map(|l| l.p99_ms)),
            ms(l.map(|l| l.max_ms)),
            us(f.usage.server_cpu_us_per_invoke),
            us(f.usage.runtime_cpu_us_per_invoke),
            us(f.usage.loadgen_cpu_us_per_invoke),
        )
    }

    /// Writes `<dir>/<date>-<name>.json` and `.md`.
    pub fn write_files(&self, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
        std::fs::create_dir_all(dir).map_err(|e| ReportError::Write(dir.to_owned(), e))?;
        let stem = format!("{}-{}", self.date, self.name);
        let json = dir.join(format!("{stem}.json"));
        let md = dir.join(format!("{stem}.md"));
        let text = serde_json::to_string_pretty(self)? + "\n";
        std::fs::write(&json, text).map_err(|e| ReportError::Write(json.clone(), e))?;
        std::fs::write(&md, self.markdown()).map_err(|e| ReportError::Write(md.clone(), e))?;
        Ok(vec![json, md])
    }
}

/// One invoke waiting for the runtime, and where its result goes.
struct Job {
    body: Bytes,
    reply: oneshot::Sender<Bytes>,
}

/// Kills the floor server if measuring ends early; closing its stdin ends it otherwise.
struct ServerProcess(Child);

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        if !matches!(self.0.try_wait(), Ok(Some(_))) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

/// Runs the floor: the server process, `invokes` sequential exchanges after the warm scenario's
/// warm-up, then the server is stopped.
pub async fn measure(
    invokes: u64,
    payload: Arc<Vec<u8>>,
    timeout: Duration,
) -> Result<Floor, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find loadgen's binary: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .arg("floor-serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start the floor server: {e}"))?;
    let stdout = child.stdout.take();
    let server = ServerProcess(child);
    let line = tokio::time::timeout(
        START_WAIT_MAX,
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            if let Some(out) = stdout {
                let _ = BufReader::new(out).read_line(&mut line);
            }
            line
        }),
    )
    .await
    .map_err(|_| "the floor server did not start".to_owned())?
    .map_err(|e| e.to_string())?;
    let port: u16 = line
        .trim()
        .parse()
        .map_err(|_| format!("the floor server said {line:?} instead of its port"))?;
    let endpoint =
        Endpoint::parse(&format!("http://127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let mut bench = Bench {
        endpoint: endpoint.clone(),
        api: Api::new(Conn::new(&endpoint, timeout)),
        watch: Watch::new(Some(server.0.id())),
        request_timeout: timeout,
        quiet: true,
    };
    let payload_bytes = payload.len();
    // The labels are not used: the floor has no runtime language and no transport choice.
    let target = Target {
        function: "floor".into(),
        runtime: RuntimeKind::Node,
        transport: Transport::Http,
        base_env: Default::default(),
        payload,
        first_invoke: None,
        url_host: None,
    };
    let phase = scenarios::warm(&mut bench, &target, invokes).await;
    drop(server);
    Ok(Floor {
        exchange:
            "caller → server → runtime (long poll) → server → caller, loopback HTTP/1.1 keep-alive",
        invokes: phase.ok,
        errors: phase.errors.values().sum(),
        payload_bytes,
        latency: phase.latency,
        usage: phase.usage,
    })
}

/// The floor server process (`loadgen floor-serve`): prints its invoke port, serves until its
/// stdin closes.
pub fn serve_main() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen floor-serve: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(serve()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen floor-serve: {e}");
            ExitCode::from(2)
        }
    }
}

async fn serve() -> std::io::Result<()> {
    let user = TcpListener::bind("127.0.0.1:0").await?;
    let runtime = TcpListener::bind("127.0.0.1:0").await?;
    let runtime_port = runtime.local_addr()?.port();
    let user_port = user.local_addr()?.port();
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .args(["floor-runtime", "--endpoint"])
        .arg(format!("http://127.0.0.1:{runtime_port}"))
        .stdin(Stdio::null())
        .spawn()?;
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<Job>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    tokio::spawn(async move {
        while let Ok((sock, _)) = runtime.accept().await {
            let _ = sock.set_nodelay(true);
            tokio::spawn(runtime_conn(sock, jobs_rx.clone()));
        }
    });
    tokio::spawn(async move {
        while let Ok((sock, _)) = user.accept().await {
            let _ = sock.set_nodelay(true);
            tokio::spawn(user_conn(sock, jobs_tx.clone()));
        }
    });
    let mut stdout = std::io::stdout();
    // The runtime process is started and both listeners accept: the parent may invoke now (the
    // first invoke waits in the job queue until the runtime's first long poll arrives).
    writeln!(stdout, "{user_port}")?;
    stdout.flush()?;
    // Serve until the parent closes our stdin (or exits).
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}

async fn user_conn(mut sock: TcpStream, jobs: mpsc::UnboundedSender<Job>) {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut out = Vec::with_capacity(1024);
    loop {
        loop {
            let req = match decoder.decode(&mut buf) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(_) => return,
            };
            out.clear();
            if req.path().ends_with("/invocations") {
                let (reply, result) = oneshot::channel();
                if jobs
                    .send(Job {
                        body: req.body.clone(),
                        reply,
                    })
                    .is_err()
                {
                    return;
                }
                let Ok(body) = result.await else { return };
                write_response_head(
                    &mut out,
                    200,
                    &[("Content-Type", "application/json")],
                    body.len(),
                    true,
                );
                out.extend_from_slice(&body);
            } else {
                write_response_head(&mut out, 404, &[], 0, true);
            }
            if sock.write_all(&out).await.is_err() {
                return;
            }
        }
        buf.reserve(READ_CHUNK_BYTES);
        match sock.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

async fn runtime_conn(mut sock: TcpStream, jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut out = Vec::with_capacity(1024);
    let mut pending: Option<oneshot::Sender<Bytes>> = None;
    let mut request_id = 0u64;
    loop {
        loop {
            let req = match decoder.decode(&mut buf) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(_) => return,
            };
            out.clear();
            if req.path() == NEXT_PATH {
                // The long poll: no answer until an invoke arrives.
                let job = { jobs.lock().await.recv().await };
                let Some(job) = job else { return };
                request_id += 1;
                let id = request_id.to_string();
                let headers = [
                    ("Lambda-Runtime-Aws-Request-Id", id.as_str()),
                    ("Content-Type", "application/json"),
                ];
                write_response_head(&mut out, 200, &headers, job.body.len(), true);
                out.extend_from_slice(&job.body);
                pending = Some(job.reply);
            } else if req.path().ends_with("/response") {
                if let Some(reply) = pending.take() {
                    let _ = reply.send(req.body.clone());
                }
                write_response_head(&mut out, 202, &[], 0, true);
            } else {
                write_response_head(&mut out, 404, &[], 0, true);
            }
            if sock.write_all(&out).await.is_err() {
                return;
            }
        }
        buf.reserve(READ_CHUNK_BYTES);
        match sock.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// The floor runtime process (`loadgen floor-runtime --endpoint URL`): next, respond, repeat,
/// until the server closes the connection.
pub fn runtime_main(endpoint: &str) -> ExitCode {
    match runtime_loop(endpoint) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen floor-runtime: {e}");
            ExitCode::from(2)
        }
    }
}

fn runtime_loop(endpoint: &str) -> Result<(), String> {
    let ep = Endpoint::parse(endpoint).map_err(|e| e.to_string())?;
    let mut sock = std::net::TcpStream::connect(ep.addr).map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut decoder = ResponseDecoder::new(RESPONSE_BYTES_MAX);
    let mut out = Vec::with_capacity(1024);
    loop {
        out.clear();
        write_request_head(&mut out, "GET", NEXT_PATH, &ep.host, &[], 0);
        let Some(event) = exchange(&mut sock, &out, &mut buf, &mut decoder)? else {
            return Ok(()); // the server went away: the measurement is over
        };
        let id = event
            .header_str("lambda-runtime-aws-request-id")
            .unwrap_or("0");
        let path = format!("/2018-06-01/runtime/invocation/{id}/response");
        out.clear();
        write_request_head(&mut out, "POST", &path, &ep.host, &[], event.body.len());
        out.extend_from_slice(&event.body);
        if exchange(&mut sock, &out, &mut buf, &mut decoder)?.is_none() {
            return Ok(());
        }
    }
}

/// Writes one request and reads its response; `None` when the server closed the connection.
fn exchange(
    sock: &mut std::net::TcpStream,
    request: &[u8],
    buf: &mut BytesMut,
    decoder: &mut ResponseDecoder,
) -> Result<Option<ClientResponse>, String> {
    if sock.write_all(request).is_err() {
        return Ok(None);
    }
    let mut chunk = vec![0u8; READ_CHUNK_BYTES];
    loop {
        if let Some(resp) = decoder.decode(buf, false).map_err(|e| e.to_string())? {
            return Ok(Some(resp));
        }
        match sock.read(&mut chunk) {
            Ok(0) | Err(_) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
