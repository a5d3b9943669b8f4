//! `loadgen floor`: the best this machine does for the exchange loadgen measures, with nothing
//! of Lambda@Home in it. A caller (loadgen's own client, the one every scenario uses) sends an
//! invoke over loopback HTTP/1.1 keep-alive to a trivial server; the server hands the event to
//! a trivial runtime that long-polls it like the Runtime API (`GET …/invocation/next`), the
//! runtime posts it back (`POST …/invocation/<id>/response`), and the server answers the
//! caller. Same payload, same connection reuse, same process layout (server process, runtime
//! as its child), one exchange at a time as in the warm scenario.
//!
//! Threads: the server is a hidden `loadgen floor-serve` process on one thread (hand-offs
//! between its connections are task wake-ups, not thread wake-ups); the runtime is a hidden
//! `loadgen floor-runtime` process with one blocking thread. Both exit when the measuring
//! loadgen closes the server's stdin (or dies). CPU per exchange comes from the same `/proc`
//! accounting as a real run: server = the floor server, runtime = its children.
//!
//! What the full report relates its figures to is the default: the tokio (epoll) server, the
//! HTTP long-poll exchange, one exchange at a time. `loadgen floor` also measures variants, to
//! say what a design could reach on this machine before anyone builds it (FloorArgs):
//! - `--server uring`: the same exchange through a server on a raw io_uring (`floor_uring`):
//!   one `io_uring_enter` per loop turn that submits and waits at once, `DEFER_TASKRUN` so that
//!   completions run only there, sends with one non-blocking `send` each. The fewest system
//!   calls and wake-ups a single-threaded server can have short of polling.
//! - `--protocol frames`: the runtime exchange with two messages instead of three, as over the
//!   WebSocket transport: the server pushes each event as a length-prefixed frame (big-endian
//!   u32, then the body) and the runtime answers with one (no request for the next event).
//! - `--callers N`: N callers in a closed loop against N runtimes for `--duration-s` after
//!   `--warmup-s`, as the throughput scenario at concurrency N; the server takes each event
//!   to whichever runtime is free.

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

pub(crate) const NEXT_PATH: &str = "/2018-06-01/runtime/invocation/next";
/// Free space ensured in a read buffer before each read.
pub(crate) const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Bytes of a frame's length prefix (`--protocol frames`).
pub(crate) const FRAME_PREFIX_BYTES: usize = 4;
/// The largest frame either side of the frames exchange accepts.
pub(crate) const FRAME_BYTES_MAX: usize = 6 * 1024 * 1024;
/// How long the floor server may take to start and report its port.
const START_WAIT_MAX: Duration = Duration::from_secs(10);

/// Which floor server (`--server`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ServerKind {
    /// One current-thread tokio runtime (epoll), as an ordinary async Rust server.
    #[default]
    Tokio,
    /// A raw io_uring event loop: submit-and-wait in one system call, `DEFER_TASKRUN`.
    Uring,
}

/// The runtime exchange (`--protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The Runtime API's long poll: `GET next`, its answer, `POST response`, its `202`.
    #[default]
    Http,
    /// Two length-prefixed frames per event (server → runtime, runtime → server), as over the
    /// WebSocket transport.
    Frames,
}

impl Protocol {
    fn as_arg(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Frames => "frames",
        }
    }
}

impl ServerKind {
    fn as_arg(self) -> &'static str {
        match self {
            ServerKind::Tokio => "tokio",
            ServerKind::Uring => "uring",
        }
    }
}

/// `loadgen floor` options (`--warm-invokes`, `--duration-s`, `--warmup-s`, `--payload-bytes`
/// and `--out` come from the global options). `Default` is what `loadgen floor` with none of
/// them measures, the floor `full` relates its figures to.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct FloorArgs {
    /// The floor server: `tokio` (epoll; what full reports relate to) or `uring` (a raw
    /// io_uring loop, the fewest system calls per wake-up).
    #[arg(long, value_enum, default_value_t = ServerKind::Tokio)]
    pub server: ServerKind,
    /// The runtime exchange: `http` (the Runtime API's long poll, three messages per event) or
    /// `frames` (two length-prefixed frames, as over the WebSocket transport).
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
    /// Callers and runtimes: 1 runs `--warm-invokes` sequential exchanges (the warm scenario);
    /// N > 1 runs N callers in a closed loop against N runtimes for `--duration-s` after
    /// `--warmup-s` (the throughput scenario at concurrency N).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=CALLERS_MAX))]
    pub callers: u32,
}

impl Default for FloorArgs {
    fn default() -> FloorArgs {
        FloorArgs {
            server: ServerKind::Tokio,
            protocol: Protocol::Http,
            callers: 1,
        }
    }
}

/// The most callers (and runtime processes) `--callers` starts.
pub const CALLERS_MAX: i64 = 256;

/// How the hidden floor server runs (`loadgen floor-serve`).
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    #[arg(long, value_enum, default_value_t = ServerKind::Tokio)]
    pub server: ServerKind,
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
    /// Runtime processes to start.
    #[arg(long, default_value_t = 1)]
    pub runtime_count: u32,
}

/// How the hidden floor runtime runs (`loadgen floor-runtime`; the server is `--endpoint`).
#[derive(Clone, Debug, clap::Args)]
pub struct RuntimeArgs {
    #[arg(long, value_enum, default_value_t = Protocol::Http)]
    pub protocol: Protocol,
}

/// What `floor` measured.
#[derive(Clone, Debug, Serialize)]
pub struct Floor {
    pub exchange: String,
    pub server: ServerKind,
    pub protocol: Protocol,
    /// Callers (and runtimes) at once; 1 = sequential.
    pub callers: u32,
    /// With `callers` > 1: the measured window in seconds.
    pub measured_s: Option<f64>,
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
             - Exchange: {}; {} B payload; {}, {} errors\n\n\
             | Server | Protocol | Callers | p50 ms | p90 ms | p99 ms | max ms | Exchanges/s | Server CPU µs/exchange | Runtime CPU µs/exchange | loadgen CPU µs/exchange |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            self.date,
            self.command_line,
            self.git.commit.as_deref().unwrap_or("unknown"),
            m.cpu_model,
            m.logical_cpus,
            m.loadavg_start,
            m.loadavg_end,
            f.exchange,
            f.payload_bytes,
            match f.measured_s {
                Some(secs) => format!(
                    "{} exchanges by {} callers in a closed loop over {secs:.1} s",
                    f.invokes, f.callers
                ),
                None => format!("{} sequential exchanges", f.invokes),
            },
            f.errors,
            f.server.as_arg(),
            f.protocol.as_arg(),
            f.callers,
            ms(l.map(|l| l.p50_ms)),
            ms(l.map(|l| l.p90_ms)),
            ms(l.map(|l| l.p99_ms)),
            ms(l.map(|l| l.max_ms)),
            f.measured_s
                .filter(|secs| *secs > 0.0)
                .map_or("–".to_owned(), |secs| format!("{:.0}", f.invokes as f64 / secs)),
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

/// Runs the floor: the server process (which starts the runtimes), then `invokes` sequential
/// exchanges after the warm scenario's warm-up (one caller), or `duration` of closed-loop load
/// by `callers` after `warmup` (more than one); then the server is stopped.
pub async fn measure(
    args: &FloorArgs,
    invokes: u64,
    (duration, warmup): (Duration, Duration),
    payload: Arc<Vec<u8>>,
    timeout: Duration,
) -> Result<Floor, String> {
    if args.callers == 0 {
        return Err("a floor needs at least one caller".into());
    }
    let exe = std::env::current_exe().map_err(|e| format!("cannot find loadgen's binary: {e}"))?;
    let mut child = std::process::Command::new(exe)
        .arg("floor-serve")
        .args(["--server", args.server.as_arg()])
        .args(["--protocol", args.protocol.as_arg()])
        .args(["--runtime-count", &args.callers.to_string()])
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
    let phase = if args.callers > 1 {
        let callers = args.callers as usize;
        scenarios::throughput(&mut bench, &target, callers, duration, warmup).await
    } else {
        scenarios::warm(&mut bench, &target, invokes).await
    };
    drop(server);
    Ok(Floor {
        exchange: describe(args),
        server: args.server,
        protocol: args.protocol,
        callers: args.callers,
        measured_s: (args.callers > 1).then_some(phase.measured_s),
        invokes: phase.ok,
        errors: phase.errors.values().sum(),
        payload_bytes,
        latency: phase.latency,
        usage: phase.usage,
    })
}

/// The exchange a floor measures, in words.
fn describe(args: &FloorArgs) -> String {
    let runtime = match args.protocol {
        Protocol::Http => "runtime (long poll)",
        Protocol::Frames => "runtime (length-prefixed frames, pushed)",
    };
    let server = match args.server {
        ServerKind::Tokio => "server (tokio, epoll)",
        ServerKind::Uring => "server (raw io_uring)",
    };
    format!(
        "caller → {server} → {runtime} → server → caller, loopback; callers on HTTP/1.1 keep-alive"
    )
}

/// The floor server process (`loadgen floor-serve`): prints its invoke port, serves until its
/// stdin closes.
pub fn serve_main(args: &ServeArgs) -> ExitCode {
    let served = match args.server {
        ServerKind::Uring => crate::floor_uring::serve(args.protocol, args.runtime_count),
        ServerKind::Tokio => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .and_then(|rt| rt.block_on(serve(args.protocol, args.runtime_count))),
    };
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen floor-serve: {e}");
            ExitCode::from(2)
        }
    }
}

/// Starts `count` floor runtimes against the runtime listener on `port`.
pub(crate) fn spawn_runtimes(
    protocol: Protocol,
    port: u16,
    count: u32,
) -> std::io::Result<Vec<Child>> {
    let exe = std::env::current_exe()?;
    let mut children = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let child = std::process::Command::new(&exe)
            .args([
                "floor-runtime",
                "--protocol",
                protocol.as_arg(),
                "--endpoint",
            ])
            .arg(format!("http://127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .spawn();
        match child {
            Ok(child) => children.push(child),
            Err(e) => {
                stop_runtimes(children);
                return Err(e);
            }
        }
    }
    Ok(children)
}

/// Kills and reaps the floor runtimes.
pub(crate) fn stop_runtimes(children: Vec<Child>) {
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Prints the invoke port for the parent (the floor is ready to be invoked: the first invoke
/// waits until a runtime asks for it).
pub(crate) fn announce(user_port: u16) -> std::io::Result<()> {
    let mut stdout = std::io::stdout();
    writeln!(stdout, "{user_port}")?;
    stdout.flush()
}

async fn serve(protocol: Protocol, runtimes: u32) -> std::io::Result<()> {
    let user = TcpListener::bind("127.0.0.1:0").await?;
    let runtime = TcpListener::bind("127.0.0.1:0").await?;
    let runtime_port = runtime.local_addr()?.port();
    let user_port = user.local_addr()?.port();
    let children = spawn_runtimes(protocol, runtime_port, runtimes)?;
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<Job>();
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    tokio::spawn(async move {
        while let Ok((sock, _)) = runtime.accept().await {
            let _ = sock.set_nodelay(true);
            match protocol {
                Protocol::Http => tokio::spawn(runtime_conn(sock, jobs_rx.clone())),
                Protocol::Frames => tokio::spawn(runtime_conn_frames(sock, jobs_rx.clone())),
            };
        }
    });
    tokio::spawn(async move {
        while let Ok((sock, _)) = user.accept().await {
            let _ = sock.set_nodelay(true);
            tokio::spawn(user_conn(sock, jobs_tx.clone()));
        }
    });
    announce(user_port)?;
    // Serve until the parent closes our stdin (or exits).
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await;
    stop_runtimes(children);
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

/// A runtime connection of the frames exchange: push each event as a frame, wait for the
/// runtime's frame, hand it to the caller.
async fn runtime_conn_frames(mut sock: TcpStream, jobs: Arc<Mutex<mpsc::UnboundedReceiver<Job>>>) {
    let mut out = Vec::with_capacity(1024);
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    loop {
        let job = { jobs.lock().await.recv().await };
        let Some(job) = job else { return };
        out.clear();
        push_frame(&mut out, &job.body);
        if sock.write_all(&out).await.is_err() || sock.read_exact(&mut prefix).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > FRAME_BYTES_MAX {
            return;
        }
        let mut body = vec![0u8; len];
        if sock.read_exact(&mut body).await.is_err() {
            return;
        }
        let _ = job.reply.send(Bytes::from(body));
    }
}

/// Appends `body` as one frame of the frames exchange.
pub(crate) fn push_frame(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
}

/// The floor runtime process (`loadgen floor-runtime --endpoint URL`): next, respond, repeat
/// (or, with frames, read a frame and answer it), until the server closes the connection.
pub fn runtime_main(endpoint: &str, args: &RuntimeArgs) -> ExitCode {
    let ran = match args.protocol {
        Protocol::Http => runtime_loop(endpoint),
        Protocol::Frames => frames_loop(endpoint),
    };
    match ran {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen floor-runtime: {e}");
            ExitCode::from(2)
        }
    }
}

/// The frames runtime: read an event frame, write it back as the response frame.
fn frames_loop(endpoint: &str) -> Result<(), String> {
    let ep = Endpoint::parse(endpoint).map_err(|e| e.to_string())?;
    let mut sock = std::net::TcpStream::connect(ep.addr).map_err(|e| e.to_string())?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    let mut out = Vec::with_capacity(1024);
    loop {
        if sock.read_exact(&mut prefix).is_err() {
            return Ok(()); // the server went away: the measurement is over
        }
        let len = u32::from_be_bytes(prefix) as usize;
        if len > FRAME_BYTES_MAX {
            return Err(format!("a frame of {len} bytes"));
        }
        let mut body = vec![0u8; len];
        if sock.read_exact(&mut body).is_err() {
            return Ok(());
        }
        out.clear();
        push_frame(&mut out, &body);
        if sock.write_all(&out).is_err() {
            return Ok(());
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

#[cfg(test)]
mod tests {
    use super::FloorArgs;
    use clap::{Args, FromArgMatches};

    /// The floor `full` measures (`FloorArgs::default()`) is the one `loadgen floor` measures
    /// when given no variant: one caller against one runtime, tokio, the long poll.
    #[test]
    fn the_default_floor_is_the_one_the_command_line_defaults_to() {
        let cmd = FloorArgs::augment_args(clap::Command::new("floor"));
        let matches = cmd.try_get_matches_from(["floor"]).unwrap();
        let parsed = FloorArgs::from_arg_matches(&matches).unwrap();
        assert_eq!(parsed, FloorArgs::default());
        assert_eq!(parsed.callers, 1);
    }
}
