//! `lah-agent`: the in-instance agent of remote instances (`--executor swarm`, and `agent`, its
//! single-host form; see `docs/swarm.md`).
//!
//! It runs inside the instance (as the container's entrypoint, or as a host process), and:
//! fetches the function's code and layers from the server by content hash (`code`), unpacks them
//! under `LAH_AGENT_TASK_DIR` / `LAH_AGENT_OPT_DIR`; serves AWS's HTTP Runtime API on
//! `LAH_AGENT_LISTEN` (default `127.0.0.1:9001`, the instance's own loopback) for the runtime it
//! starts (the command line after the agent's own name), with `AWS_LAMBDA_RUNTIME_API` pointing
//! there and `LAMBDA_USE_WEBSOCKET=false`, so unmodified runtime clients speak HTTP to it; and
//! holds ONE WebSocket to the server's Runtime API (`LAH_AGENT_LINK`, `host:port`), opened and
//! registered (`LAMBDA_INSTANCE_ID`, the instance's secret) at the runtime's first `/next`, which
//! is when the runtime is ready. Requests and answers are translated one to one (`translate`).
//! The runtime's stdout and stderr go to the server as `log` messages on the same connection;
//! before an answer is forwarded, whatever the runtime wrote until then is sent first, so the
//! server's log tail of the invocation is exact.
//!
//! Threads (std, blocking): main (start-up, then waits for the runtime's exit), the Runtime API
//! acceptor and one thread per runtime connection, the log pump, the link reader. The link's
//! writes are serialised by one mutex, which also covers log pumping, so output and answers
//! reach the server in the order the runtime produced them.
//!
//! Ends: when the runtime exits, the agent closes the link and exits with the runtime's status
//! (128 + signal for a signal); when the link drops without the agent closing it, it kills the
//! runtime and exits with status `LINK_LOST_EXIT`. An init error (`/init/error`) answers the
//! invocation that started the instance (an `error` with `"init_error": true`, which ends the
//! instance on the server) and closes the link (see `init_error`). Before exiting, the agent
//! waits (at most `LINK_CLOSE_WAIT_MS`) for the server to end the link it closed, so its exit
//! never overtakes its last answer. Limits: output produced before the link is registered is kept up to
//! `PENDING_LOG_BYTES_MAX` (the rest is dropped with a note); output read in the background at
//! `OUTPUT_BYTES_PER_S`; one invocation at a time, as the server sends them.

mod code;
mod http;
mod translate;

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use lambda_at_home::protocols::ws::{self, Decoder, Message, Role};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

use translate::{Invocation, Route, ServerMessage};

/// Output the runtime writes before the link is registered (its init), kept until then.
const PENDING_LOG_BYTES_MAX: usize = 1024 * 1024;
/// How fast the runtime's output is read on average, and how much it may write at once beyond
/// that: the server bounds a local instance's pipe the same way (`dataplane::logs`), and a
/// remote instance's output costs its home core as much; past it the pipe fills and the
/// runtime's writes wait. Output sent ahead of an answer is never held back (the answer waits
/// for it), so the bound applies to the background pump only.
const OUTPUT_BYTES_PER_S: f64 = 4.0 * 1024.0 * 1024.0;
const OUTPUT_BURST_BYTES: f64 = 1024.0 * 1024.0;
/// Bytes taken from the runtime's output per read.
const LOG_READ_BYTES: usize = 64 * 1024;
/// Exit status when the server's link drops (distinct from the runtime's own statuses).
const LINK_LOST_EXIT: i32 = 70;
/// Exit status for a start-up failure (settings, code, listener, spawn).
const START_FAILED_EXIT: i32 = 71;
/// Exit status when the kernel's OOM killer took the runtime (the Swarm executor reports the
/// instance as killed out of memory; `control::executor::swarm::OOM_EXIT`).
const OOM_EXIT: i32 = 72;
/// Time to connect the link and finish its handshake.
const LINK_CONNECT_TIMEOUT_S: u64 = 10;
/// TCP keepalive of the link (idle seconds, seconds between probes, probes): a server whose
/// machine or network vanished sends no FIN, and the agent would wait for it forever; with
/// probes it ends (exit `LINK_LOST_EXIT`) about 25 s after the silence began.
const LINK_KEEPALIVE_IDLE_S: u64 = 10;
const LINK_KEEPALIVE_INTERVAL_S: u64 = 5;
const LINK_KEEPALIVE_PROBES: u32 = 3;
/// Largest handshake answer of the server.
const HANDSHAKE_BYTES_MAX: usize = 16 * 1024;
/// How long the agent waits, after its runtime's init failed, for the invocation to answer with
/// the init error: the server hands one to a ready instance at once when any is pending.
const INIT_ERROR_WAIT_MS: u64 = 1_000;
/// How long the agent, its runtime gone, waits for the server to end the link it closed before
/// it exits. The server reads the link in order, so once it has answered the agent's close it
/// has taken every answer sent before it; the agent's exit reaches the server's scheduler by
/// another path (the executor's report), and an agent that exited at once could have it arrive
/// first, failing the invocation the last answer was for as a bare `Runtime.ExitError`.
const LINK_CLOSE_WAIT_MS: u64 = 1_000;
/// Largest piece of a streamed response sent as one `response_chunk`.
const CHUNK_BYTES_MAX: usize = 1024 * 1024;

/// The agent's settings, all from its environment.
struct Settings {
    link: String,
    code_addr: String,
    code_sha256: String,
    opt_sha256: Option<String>,
    task_dir: PathBuf,
    opt_dir: PathBuf,
    listen: String,
    token: String,
    function: String,
    version: String,
    runtime: String,
    command: Vec<String>,
    /// `uid:gid` the runtime runs as when the agent starts as root (`LAH_AGENT_RUN_AS`).
    run_as: Option<(u32, u32)>,
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
        let or = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let command: Vec<String> = std::env::args().skip(1).collect();
        if command.is_empty() {
            return Err("usage: lah-agent RUNTIME-COMMAND [ARGS...]".into());
        }
        Ok(Settings {
            link: var("LAH_AGENT_LINK")?,
            code_addr: var("LAH_AGENT_CODE")?,
            code_sha256: var("LAH_AGENT_CODE_SHA256")?,
            opt_sha256: std::env::var("LAH_AGENT_OPT_SHA256")
                .ok()
                .filter(|s| !s.is_empty()),
            task_dir: or("LAH_AGENT_TASK_DIR", "/var/task").into(),
            opt_dir: or("LAH_AGENT_OPT_DIR", "/opt").into(),
            listen: or("LAH_AGENT_LISTEN", "127.0.0.1:9001"),
            token: var("LAMBDA_INSTANCE_ID")?,
            function: var("AWS_LAMBDA_FUNCTION_NAME")?,
            version: or("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            runtime: or("LAMBDA_RUNTIME_NAME", "provided"),
            command,
            run_as: match std::env::var("LAH_AGENT_RUN_AS") {
                Ok(v) if !v.is_empty() => {
                    let parse = |p: Option<&str>| p.and_then(|n| n.trim().parse::<u32>().ok());
                    let mut parts = v.split(':');
                    match (parse(parts.next()), parse(parts.next())) {
                        (Some(uid), Some(gid)) => Some((uid, gid)),
                        _ => return Err(format!("LAH_AGENT_RUN_AS wants UID:GID, got {v:?}")),
                    }
                }
                _ => None,
            },
        })
    }
}

/// The link's write side.
struct LinkWriter {
    stream: TcpStream,
}

impl LinkWriter {
    fn send(&mut self, opcode: OpCode, payload: &[u8]) -> std::io::Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + 14);
        ws::encode_client_frame(&mut frame, opcode, payload);
        self.stream.write_all(&frame)
    }

    fn text(&mut self, value: &serde_json::Value) -> std::io::Result<()> {
        self.send(OpCode::Data(Data::Text), value.to_string().as_bytes())
    }

    fn binary(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.send(OpCode::Data(Data::Binary), bytes)
    }
}

/// What the link mutex guards: the writer once registered, and output waiting for it.
#[derive(Default)]
struct LinkState {
    writer: Option<LinkWriter>,
    pending_logs: Vec<u8>,
    dropped_log_bytes: usize,
}

struct Agent {
    settings: Settings,
    link: Mutex<LinkState>,
    /// Read end of the runtime's stdout+stderr, non-blocking.
    log_fd: OwnedFd,
    invocations: Mutex<VecDeque<Invocation>>,
    arrived: Condvar,
    runtime_pid: AtomicI32,
    /// The agent closes the link itself (the runtime exited, or its init failed): the link's
    /// end is then expected, not a loss.
    closing: AtomicBool,
    /// The link's reader: `None` before a link was opened, `Some(false)` while it reads,
    /// `Some(true)` once the link has ended (`LINK_CLOSE_WAIT_MS`).
    link_ended: Mutex<Option<bool>>,
    link_end: Condvar,
}

fn main() {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    if let Err(e) = prepare_code(&settings) {
        fail_reported(&settings, &e);
    }
    let listener = TcpListener::bind(&settings.listen).unwrap_or_else(|e| {
        fail_reported(
            &settings,
            &format!("cannot listen on {}: {e}", settings.listen),
        )
    });
    let (log_read, log_write) =
        pipe().unwrap_or_else(|e| fail_reported(&settings, &format!("pipe: {e}")));
    let mut child = runtime_command(&settings, &listener, log_write)
        .spawn()
        .unwrap_or_else(|e| {
            fail_reported(
                &settings,
                &format!("cannot start {:?}: {e}", settings.command),
            )
        });
    let agent = Arc::new(Agent {
        settings,
        link: Mutex::new(LinkState::default()),
        log_fd: log_read,
        invocations: Mutex::new(VecDeque::new()),
        arrived: Condvar::new(),
        runtime_pid: AtomicI32::new(child.id() as i32),
        closing: AtomicBool::new(false),
        link_ended: Mutex::new(None),
        link_end: Condvar::new(),
    });
    {
        let agent = agent.clone();
        std::thread::spawn(move || accept_loop(agent, listener));
    }
    let pump = {
        let agent = agent.clone();
        std::thread::spawn(move || log_pump(agent))
    };
    let status = child.wait();
    // Everything the runtime wrote is in the pipe now; send it, then say goodbye.
    let _ = pump.join();
    let code = match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            match s.signal() {
                Some(libc::SIGKILL) if std::process::id() == 1 && oom_kills() > 0 => OOM_EXIT,
                Some(sig) => 128 + sig,
                None => s.code().unwrap_or(START_FAILED_EXIT),
            }
        }
        Err(_) => START_FAILED_EXIT,
    };
    let mut link = lock(&agent.link);
    pump_logs(&agent, &mut link);
    close_link(&agent, &mut link, "runtime exited");
    drop(link);
    let ended = lock(&agent.link_ended);
    let _ =
        agent
            .link_end
            .wait_timeout_while(ended, Duration::from_millis(LINK_CLOSE_WAIT_MS), |e| {
                *e == Some(false)
            });
    std::process::exit(code);
}

/// OOM kills in the agent's own memory cgroup, as the container sees it (cgroup v2's
/// `memory.events`, or v1's `memory.oom_control`); 0 when neither can be read. Asked only when
/// the agent is its container's PID 1 (a host process's view is the host's cgroups).
fn oom_kills() -> u64 {
    [
        "/sys/fs/cgroup/memory.events",
        "/sys/fs/cgroup/memory/memory.oom_control",
    ]
    .iter()
    .filter_map(|p| std::fs::read_to_string(p).ok())
    .flat_map(|text| {
        text.lines()
            .filter_map(|l| l.strip_prefix("oom_kill "))
            .filter_map(|n| n.trim().parse::<u64>().ok())
            .collect::<Vec<_>>()
    })
    .max()
    .unwrap_or(0)
}

/// A start-up failure, also sent to the function's log over the link when the link works (a
/// remote task's own output is nowhere the operator looks), then the exit.
fn fail_reported(s: &Settings, why: &str) -> ! {
    if let Ok((stream, _)) = connect_link(&s.link, &s.function) {
        let mut w = LinkWriter { stream };
        let register = translate::register_message(&s.function, &s.runtime, &s.version, &s.token);
        let line = format!("lah-agent: {why}\n");
        let _ = w
            .text(&register)
            .and_then(|()| w.binary(&translate::log_envelope(line.as_bytes())));
    }
    fail(why)
}

/// Sends a close frame: the server ends the session and retires the instance, which takes no
/// more work. The link's end that follows is not a loss (`closing`).
fn close_link(agent: &Agent, link: &mut LinkState, reason: &str) {
    agent.closing.store(true, Ordering::SeqCst);
    if let Some(mut w) = link.writer.take() {
        let mut close = Vec::new();
        ws::encode_close(&mut close, 1000, reason);
        let _ = w.send(OpCode::Control(Control::Close), &close[2..]);
    }
}

fn fail(why: &str) -> ! {
    eprintln!("lah-agent: {why}");
    std::process::exit(START_FAILED_EXIT);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Where a Swarm task's tmpfs mounts come out root-owned and 0755 whatever mode was asked (Docker
/// before API 1.46 ignores it for services), so the agent starts as root and, before the runtime
/// runs as `LAH_AGENT_RUN_AS`, makes `/tmp` writable for it as AWS's is.
fn prepare_dirs(s: &Settings) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if s.run_as.is_none() || unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions("/tmp", std::fs::Permissions::from_mode(0o1777))
        .map_err(|e| format!("/tmp: {e}"))
}

fn prepare_code(s: &Settings) -> Result<(), String> {
    prepare_dirs(s)?;
    let blob = code::fetch(&s.code_addr, &s.code_sha256, &s.token)?;
    code::unpack(&blob, &s.task_dir)?;
    if let Some(opt) = &s.opt_sha256 {
        let blob = code::fetch(&s.code_addr, opt, &s.token)?;
        code::unpack(&blob, &s.opt_dir)?;
    }
    Ok(())
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both fds are open and owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(r.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok((r, w))
}

/// The runtime's command: its environment without the agent's settings and the secret, the
/// Runtime API at the agent's listener over HTTP, output into the log pipe.
fn runtime_command(s: &Settings, listener: &TcpListener, log_write: OwnedFd) -> Command {
    let mut cmd = Command::new(&s.command[0]);
    cmd.args(&s.command[1..]);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("LAH_AGENT_") {
            cmd.env_remove(&k);
        }
    }
    let api = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| s.listen.clone());
    cmd.env_remove("LAMBDA_INSTANCE_ID")
        .env("AWS_LAMBDA_RUNTIME_API", api)
        .env("LAMBDA_USE_WEBSOCKET", "false")
        .current_dir(&s.task_dir)
        .stdin(Stdio::null());
    if let Some((uid, gid)) = s.run_as {
        use std::os::unix::process::CommandExt;
        // SAFETY: setgroups, setgid, setuid and prctl are async-signal-safe syscalls on values
        // copied into the closure; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                let dropped = libc::geteuid() != 0
                    || (libc::setgroups(0, std::ptr::null()) == 0
                        && libc::setgid(gid) == 0
                        && libc::setuid(uid) == 0);
                if !dropped {
                    return Err(std::io::Error::last_os_error());
                }
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
                Ok(())
            });
        }
    }
    let err = log_write.try_clone().map(Stdio::from);
    cmd.stdout(Stdio::from(log_write));
    if let Ok(err) = err {
        cmd.stderr(err);
    }
    cmd
}

/// Reads the runtime's output until it closes its end, sending it on (or keeping it until the
/// link is registered).
fn log_pump(agent: Arc<Agent>) {
    let mut tokens = OUTPUT_BURST_BYTES;
    let mut refilled = std::time::Instant::now();
    loop {
        let now = std::time::Instant::now();
        tokens = (tokens + now.duration_since(refilled).as_secs_f64() * OUTPUT_BYTES_PER_S)
            .min(OUTPUT_BURST_BYTES);
        refilled = now;
        if tokens < LOG_READ_BYTES as f64 {
            let wait = (LOG_READ_BYTES as f64 - tokens) / OUTPUT_BYTES_PER_S;
            std::thread::sleep(Duration::from_secs_f64(wait));
            continue;
        }
        let mut pfd = libc::pollfd {
            fd: agent.log_fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        let mut link = lock(&agent.link);
        let (open, taken) = pump_logs_up_to(&agent, &mut link, tokens as usize);
        tokens -= taken as f64;
        if !open {
            return;
        }
    }
}

/// Takes what is in the output pipe now and sends it (or keeps it); false at its end.
fn pump_logs(agent: &Agent, link: &mut LinkState) -> bool {
    pump_logs_up_to(agent, link, usize::MAX).0
}

/// `pump_logs`, stopping after about `budget` bytes; also returns the bytes taken.
fn pump_logs_up_to(agent: &Agent, link: &mut LinkState, budget: usize) -> (bool, usize) {
    let mut buf = vec![0u8; LOG_READ_BYTES];
    let mut taken = 0usize;
    loop {
        if taken >= budget {
            return (true, taken);
        }
        // SAFETY: reading into a buffer of the given length from an fd we own.
        let n = unsafe { libc::read(agent.log_fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match n {
            0 => return (false, taken),
            n if n > 0 => {
                let data = &buf[..n as usize];
                taken += data.len();
                match link.writer.as_mut() {
                    Some(w) => {
                        let _ = w.binary(&translate::log_envelope(data));
                    }
                    None => {
                        let room = PENDING_LOG_BYTES_MAX - link.pending_logs.len();
                        let keep = data.len().min(room);
                        link.pending_logs.extend_from_slice(&data[..keep]);
                        link.dropped_log_bytes += data.len() - keep;
                    }
                }
            }
            _ => {
                let err = std::io::Error::last_os_error();
                let open = matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                );
                return (open, taken);
            }
        }
    }
}

fn accept_loop(agent: Arc<Agent>, listener: TcpListener) {
    for conn in listener.incoming() {
        let Ok(stream) = conn else { continue };
        let _ = stream.set_nodelay(true);
        let agent = agent.clone();
        std::thread::spawn(move || serve(agent, stream));
    }
}

/// One runtime connection: requests in order, each answered before the next is read.
fn serve(agent: Arc<Agent>, stream: TcpStream) {
    let mut conn = http::Conn::new(stream);
    while let Ok(Some(req)) = conn.read_head() {
        let answer = match handle(&agent, &mut conn, &req) {
            Ok(answer) => answer,
            Err(e) => translate::runtime_error(400, "Bad Request", "InvalidRequest", &e),
        };
        if conn.stream.write_all(&answer).is_err() {
            return;
        }
    }
}

fn handle(
    agent: &Arc<Agent>,
    conn: &mut http::Conn,
    req: &http::Request,
) -> Result<Vec<u8>, String> {
    let route = translate::route(&req.method, &req.path);
    let streaming = req
        .header("lambda-runtime-function-response-mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("streaming"));
    if let Route::Response(id) = &route {
        if streaming && req.chunked() {
            return stream_response(agent, conn, req, id);
        }
    }
    let body = if req.chunked() {
        conn.read_chunked_body()
    } else {
        conn.read_body(req)
    }
    .map_err(|e| e.to_string())?;
    match route {
        Route::Next => {
            if let Err(e) = ensure_link(agent) {
                // Without its link the instance can never serve: end it, as a lost link does.
                eprintln!("lah-agent: {e}; stopping the runtime");
                // SAFETY: signalling the runtime child we started.
                unsafe { libc::kill(agent.runtime_pid.load(Ordering::Relaxed), libc::SIGKILL) };
                std::process::exit(LINK_LOST_EXIT);
            }
            let mut queue = lock(&agent.invocations);
            loop {
                if let Some(inv) = queue.pop_front() {
                    return Ok(translate::next_response(&inv));
                }
                queue = agent.arrived.wait(queue).unwrap_or_else(|e| e.into_inner());
            }
        }
        Route::Response(id) => {
            send_answer(agent, |w| {
                w.binary(&translate::response_envelope(&id, &body))
            })?;
            Ok(translate::accepted())
        }
        Route::Error(id) => {
            let error_type = req.header("lambda-runtime-function-error-type");
            let msg = translate::error_message(&id, &body, error_type);
            send_answer(agent, |w| w.text(&msg))?;
            Ok(translate::accepted())
        }
        Route::InitError => {
            init_error(
                agent,
                &body,
                req.header("lambda-runtime-function-error-type"),
            );
            Ok(translate::accepted())
        }
        Route::NotFound => Ok(translate::runtime_error(
            404,
            "Not Found",
            "NotFound",
            &format!("No such Runtime API route: {} {}", req.method, req.path),
        )),
    }
}

/// The runtime's init failed (`/init/error`, after which it exits). The WebSocket API has no
/// init error message, and the invocation that caused this cold start is what must carry the
/// error, as AWS's and the local executors' callers see it: the agent registers, takes the
/// invocation the server hands a ready instance (waiting at most `INIT_ERROR_WAIT_MS`, for an
/// instance started with nothing pending), and answers it with the init error. The error also
/// goes to the function's log.
fn init_error(agent: &Arc<Agent>, body: &[u8], error_type: Option<&str>) {
    let line = format!(
        "lah-agent: init error: {}\n",
        String::from_utf8_lossy(body).trim()
    );
    {
        let mut link = lock(&agent.link);
        pump_logs(agent, &mut link);
        match link.writer.as_mut() {
            Some(w) => {
                let _ = w.binary(&translate::log_envelope(line.as_bytes()));
            }
            None => link.pending_logs.extend_from_slice(line.as_bytes()),
        }
    }
    if let Err(e) = ensure_link(agent) {
        eprintln!("lah-agent: init error not forwarded: {e}");
        return;
    }
    let queue = lock(&agent.invocations);
    let (mut queue, _) = agent
        .arrived
        .wait_timeout_while(queue, Duration::from_millis(INIT_ERROR_WAIT_MS), |q| {
            q.is_empty()
        })
        .unwrap_or_else(|e| e.into_inner());
    let Some(inv) = queue.pop_front() else {
        return;
    };
    drop(queue);
    let mut msg = translate::error_message(&inv.request_id, body, error_type);
    // The server ends the instance with this answer instead of handing it the next invocation.
    msg["init_error"] = serde_json::Value::Bool(true);
    if let Err(e) = send_answer(agent, |w| w.text(&msg)) {
        eprintln!("lah-agent: init error not forwarded: {e}");
    }
    // This instance must take no further invocation: its runtime is about to exit.
    close_link(agent, &mut lock(&agent.link), "init error");
}

/// Sends the runtime's answer after every byte of output it wrote before it.
fn send_answer(
    agent: &Agent,
    send: impl FnOnce(&mut LinkWriter) -> std::io::Result<()>,
) -> Result<(), String> {
    let mut link = lock(&agent.link);
    pump_logs(agent, &mut link);
    let w = link.writer.as_mut().ok_or("no invocation was handed out")?;
    send(w).map_err(|e| format!("link: {e}"))
}

/// A streamed `/response`: each chunk goes to the server as it arrives, then `response_end`
/// with the trailers' error, if any.
fn stream_response(
    agent: &Agent,
    conn: &mut http::Conn,
    req: &http::Request,
    id: &str,
) -> Result<Vec<u8>, String> {
    let mut content_type = req.header("content-type").map(str::to_string);
    let mut trailers = Vec::new();
    while let Some(chunk) = conn.read_chunk(&mut trailers).map_err(|e| e.to_string())? {
        for piece in chunk.chunks(CHUNK_BYTES_MAX) {
            let ct = content_type.take();
            send_answer(agent, |w| {
                w.binary(&translate::chunk_envelope(id, ct.as_deref(), piece))
            })?;
        }
    }
    let trailer = |name: &str| {
        trailers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let end = translate::end_message(
        id,
        trailer("Lambda-Runtime-Function-Error-Type"),
        trailer("Lambda-Runtime-Function-Error-Body"),
    );
    let mut end = end;
    if let Some(ct) = content_type {
        end["content_type"] = serde_json::json!(ct);
    }
    send_answer(agent, |w| w.text(&end))?;
    Ok(translate::accepted())
}

/// Opens and registers the link, once (at the runtime's first `/next`).
fn ensure_link(agent: &Arc<Agent>) -> Result<(), String> {
    let mut link = lock(&agent.link);
    if link.writer.is_some() {
        return Ok(());
    }
    let s = &agent.settings;
    let (stream, leftover) = connect_link(&s.link, &s.function)?;
    let mut writer = LinkWriter {
        stream: stream.try_clone().map_err(|e| e.to_string())?,
    };
    let register = translate::register_message(&s.function, &s.runtime, &s.version, &s.token);
    writer
        .text(&register)
        .map_err(|e| format!("register: {e}"))?;
    let pending = std::mem::take(&mut link.pending_logs);
    if link.dropped_log_bytes > 0 {
        let note = format!(
            "lah-agent: {} bytes of init output dropped (more than {PENDING_LOG_BYTES_MAX} before the first /next)\n",
            link.dropped_log_bytes
        );
        let _ = writer.binary(&translate::log_envelope(note.as_bytes()));
    }
    if !pending.is_empty() {
        let _ = writer.binary(&translate::log_envelope(&pending));
    }
    link.writer = Some(writer);
    *lock(&agent.link_ended) = Some(false);
    drop(link);
    let agent = agent.clone();
    std::thread::spawn(move || link_reader(stream, leftover, agent));
    Ok(())
}

/// TCP connect and WebSocket handshake; returns the stream and bytes read past the handshake.
fn connect_link(link: &str, function: &str) -> Result<(TcpStream, Vec<u8>), String> {
    let timeout = Duration::from_secs(LINK_CONNECT_TIMEOUT_S);
    let addr = link
        .to_socket_addrs()
        .map_err(|e| format!("link {link}: {e}"))?
        .next()
        .ok_or_else(|| format!("link {link} has no address"))?;
    let mut stream =
        TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("link {link}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(timeout));
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(LINK_KEEPALIVE_IDLE_S))
        .with_interval(Duration::from_secs(LINK_KEEPALIVE_INTERVAL_S))
        .with_retries(LINK_KEEPALIVE_PROBES);
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 16]>());
    let request = format!(
        "GET /2018-06-01/runtime/websocket?fn={function} HTTP/1.1\r\nHost: {link}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("link handshake: {e}"))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos + 4;
        }
        if buf.len() > HANDSHAKE_BYTES_MAX {
            return Err("link handshake answer too long".into());
        }
        let n = stream
            .read(&mut chunk)
            .map_err(|e| format!("link handshake: {e}"))?;
        if n == 0 {
            return Err("link closed during the handshake".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let status_line = String::from_utf8_lossy(&buf[..end]);
    if !status_line.starts_with("HTTP/1.1 101") {
        return Err(format!(
            "link refused the upgrade: {}",
            status_line.lines().next().unwrap_or_default()
        ));
    }
    let _ = stream.set_read_timeout(None);
    Ok((stream, buf[end..].to_vec()))
}

/// Reads the server's frames: invocations go to the queue `/next` waits on. When the link
/// ends, the runtime is killed and the agent exits.
fn link_reader(mut stream: TcpStream, leftover: Vec<u8>, agent: Arc<Agent>) {
    let mut decoder = Decoder::new(Role::Client, ws::FRAME_BYTES_MAX, ws::MESSAGE_BYTES_MAX);
    let mut buf = BytesMut::from(&leftover[..]);
    let mut chunk = vec![0u8; 64 * 1024];
    let why = loop {
        match decoder.decode(&mut buf) {
            Ok(Some(message)) => {
                let parsed = match &message {
                    Message::Binary(b) => translate::parse_binary(b),
                    Message::Text(t) => translate::parse_text(t),
                    Message::Close(c) => break format!("server closed the link: {c:?}"),
                    Message::Ping(p) => {
                        let mut pong = Vec::new();
                        ws::encode_client_frame(&mut pong, OpCode::Control(Control::Pong), p);
                        let _ = stream.write_all(&pong);
                        continue;
                    }
                    Message::Pong(_) => continue,
                };
                match parsed {
                    Ok(ServerMessage::Invocation(inv)) => {
                        lock(&agent.invocations).push_back(inv);
                        agent.arrived.notify_one();
                    }
                    Ok(ServerMessage::ErrorResponse(e)) => eprintln!("lah-agent: server: {e}"),
                    Ok(ServerMessage::Other) => {}
                    Err(e) => eprintln!("lah-agent: bad frame from the server: {e}"),
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => break format!("link protocol error: {e}"),
        }
        match stream.read(&mut chunk) {
            Ok(0) => break "link closed".to_string(),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break format!("link read: {e}"),
        }
    };
    *lock(&agent.link_ended) = Some(true);
    agent.link_end.notify_all();
    if agent.closing.load(Ordering::SeqCst) {
        return;
    }
    eprintln!("lah-agent: {why}; stopping the runtime");
    // SAFETY: signalling the runtime child we started.
    unsafe { libc::kill(agent.runtime_pid.load(Ordering::Relaxed), libc::SIGKILL) };
    std::process::exit(LINK_LOST_EXIT);
}
