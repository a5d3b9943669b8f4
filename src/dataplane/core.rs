//! One data-plane core: a thread running its own tokio-uring runtime.
//!
//! Owns its SO_REUSEPORT listeners (User API and Runtime API), the listeners of the instances homed
//! here, the slab of connections it accepted, and its scheduler. Its inbox carries hand-offs from
//! other cores and the event queue, and instance events from the control plane. A 10 ms tick enforces deadlines and
//! idle limits. Everything is `Rc`/`RefCell`: no other thread ever touches it. Every connection
//! is admitted by `identity::admit` (the kernel's word on its peer's uid) before it is served.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::TcpListener as StdTcpListener;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use slab::Slab;
use tokio::sync::mpsc::{Sender, UnboundedReceiver};
use tokio_uring::net::{TcpListener, TcpStream};

use super::conn::{DeadlineCell, HttpConn, ReadDeadlines};
use super::logs::{LogSource, LogTee};
use super::peer::PeerLookup;
use super::scheduler::Scheduler;
use super::{identity, runtime_api, user_api};
use crate::model::logsink::LogStream;
use crate::model::types::InstanceId;
use crate::model::{CoreMsg, EventMsg, Switchboard};

/// How often deadlines and idle limits are checked: timeouts fire within this of their deadline.
const TICK: Duration = Duration::from_millis(10);
/// Connections a core's table holds before it first grows.
const CONNECTIONS_PREALLOCATED: usize = 1024;
/// Pause after a failed accept (such as running out of file descriptors) before trying again, so
/// the loop does not spin while the condition lasts.
const ACCEPT_RETRY_MS: u64 = 10;
/// How often connections' read deadlines are checked: a late client is closed within this of its
/// deadline. A sweep instead of a timer per read keeps the warm invoke path free of timer work.
const DEADLINE_SWEEP: Duration = Duration::from_millis(250);
/// At most one warning per this interval while accepts keep failing.
const ACCEPT_WARNING_INTERVAL: Duration = Duration::from_secs(10);

/// Which API a connection speaks, and for the Runtime API, which instance it belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnKind {
    User,
    /// Accepted on the shared Runtime API port: only the WebSocket endpoint (with a register
    /// naming its instance) is served there.
    RuntimeShared,
    /// Accepted on an instance's own address: it is that instance.
    Runtime(InstanceId),
}

pub struct ConnEntry {
    /// For shutting the socket down at exit.
    pub fd: RawFd,
    pub kind: ConnKind,
    /// The read deadline the connection is under, if any (checked by `sweep_deadlines`).
    pub deadline: Rc<DeadlineCell>,
}

pub struct Core {
    pub index: usize,
    pub shared: Arc<Switchboard>,
    pub sched: RefCell<Scheduler>,
    pub conns: RefCell<Slab<ConnEntry>>,
    /// The shared listeners' fds, shut down to stop accepting.
    listener_fds: RefCell<Vec<RawFd>>,
    /// The event queue's inbox (bounded: a full inbox refuses the event with 429).
    pub events: Sender<EventMsg>,
    /// This core's sock_diag socket (`identity`); `None` if the kernel refused one.
    pub peer: Option<PeerLookup>,
    /// The uid of each instance homed here that has one: its connections must come from it.
    pub identities: RefCell<HashMap<InstanceId, u32>>,
}

/// Runs core `index` on the current thread until it is told to exit.
pub fn run(
    index: usize,
    shared: Arc<Switchboard>,
    user: StdTcpListener,
    runtime: StdTcpListener,
    inbox: UnboundedReceiver<CoreMsg>,
    events: Sender<EventMsg>,
) {
    super::ring::builder().start(async move {
        let core = Rc::new(Core {
            index,
            sched: RefCell::new(Scheduler::new(index, shared.clone())),
            shared,
            conns: RefCell::new(Slab::with_capacity(CONNECTIONS_PREALLOCATED)),
            listener_fds: RefCell::new(vec![user.as_raw_fd(), runtime.as_raw_fd()]),
            events,
            peer: match PeerLookup::new() {
                Ok(lookup) => Some(lookup),
                Err(e) => {
                    tracing::warn!(
                        core = index,
                        "no sock_diag socket ({e}): connections of instances with an \
                             identity will be refused, the User API is not guarded"
                    );
                    None
                }
            },
            identities: RefCell::new(HashMap::new()),
        });
        tokio_uring::spawn(accept_loop(
            core.clone(),
            TcpListener::from_std(user),
            ConnKind::User,
        ));
        tokio_uring::spawn(accept_loop(
            core.clone(),
            TcpListener::from_std(runtime),
            ConnKind::RuntimeShared,
        ));
        tokio_uring::spawn(tick_loop(core.clone()));
        core.run_inbox(inbox).await;
    });
}

impl Core {
    async fn run_inbox(self: &Rc<Self>, mut inbox: UnboundedReceiver<CoreMsg>) {
        while let Some(msg) = inbox.recv().await {
            match msg {
                CoreMsg::Dispatch(inv) => self.sched.borrow_mut().accept_handoff(inv),
                CoreMsg::InstanceStarted {
                    id,
                    listener,
                    unix,
                    log,
                    uid,
                    stream,
                    start,
                } => self.instance_started(id, (listener, unix), log, uid, stream, start),
                CoreMsg::InstanceStartFailed { id, error } => {
                    self.sched.borrow_mut().start_failed(id, error)
                }
                CoreMsg::InstanceExited { id, exit } => {
                    self.identities.borrow_mut().remove(&id);
                    self.sched.borrow_mut().exited(id, exit)
                }
                CoreMsg::Retire { pool } => self.sched.borrow_mut().retire(&pool),
                CoreMsg::IdleInstance { pool, core } => {
                    self.sched.borrow_mut().idle_instance_on(&pool, core)
                }
                CoreMsg::AdoptWebSocket {
                    id,
                    fd,
                    buffered,
                    register,
                } => super::websocket::adopt(self, id, fd, buffered, register),
                CoreMsg::AdoptUserConn { fd, buffered } => {
                    let stream = TcpStream::from_std(std::net::TcpStream::from(fd));
                    serve_conn(self, stream, ConnKind::User, Some(buffered));
                }
                CoreMsg::StopAccepting => self.stop_accepting(),
                CoreMsg::Exit => {
                    self.sched.borrow_mut().abort_all();
                    self.close_connections();
                    return;
                }
            }
        }
    }

    fn instance_started(
        self: &Rc<Self>,
        id: InstanceId,
        (listener, unix): (StdTcpListener, Option<StdUnixListener>),
        log: Option<std::os::fd::OwnedFd>,
        uid: Option<u32>,
        stream: Arc<LogStream>,
        start: crate::model::types::StartFacts,
    ) {
        let tee = LogTee {
            stream,
            shared: self.shared.clone(),
        };
        let log = match LogSource::new(log, Some(tee)) {
            Ok(log) => log,
            Err(e) => {
                tracing::warn!(instance = %id, "cannot read instance output: {e}");
                LogSource::new(None, None).expect("no fd cannot fail")
            }
        };
        let mut fds = vec![listener.as_raw_fd()];
        fds.extend(unix.as_ref().map(|u| u.as_raw_fd()));
        if !self.sched.borrow_mut().started(id, log.clone(), fds, start) {
            return; // Already gone: dropping the listeners closes them.
        }
        if let Some(uid) = uid {
            self.identities.borrow_mut().insert(id, uid);
        }
        log.platform_init_start();
        tokio_uring::spawn(log.run());
        tokio_uring::spawn(accept_loop(
            self.clone(),
            TcpListener::from_std(listener),
            ConnKind::Runtime(id),
        ));
        if let Some(unix) = unix {
            tokio_uring::spawn(unix_accept_loop(self.clone(), unix, id));
        }
    }

    fn stop_accepting(&self) {
        for fd in self.listener_fds.borrow_mut().drain(..) {
            // SAFETY: the listener is still open (its accept loop owns it); shutdown makes its
            // pending accept fail so the loop ends.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    fn close_connections(&self) {
        self.stop_accepting();
        for (_, c) in self.conns.borrow().iter() {
            // SAFETY: the connection's task still owns the open fd; shutdown only wakes its I/O.
            unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
        }
    }

    /// How long a connection of `kind` may take to send its requests. An instance's own
    /// connection has no idle limit: its runtime is silent while it runs an invocation.
    fn read_deadlines(&self, kind: ConnKind) -> ReadDeadlines {
        let c = &self.shared.config;
        let idle = match kind {
            ConnKind::Runtime(_) => None,
            _ => Some(Duration::from_secs(c.idle_connection_s)),
        };
        ReadDeadlines {
            idle,
            head: Duration::from_secs(c.header_timeout_s),
            body_rate_bytes_s: c.body_rate_min_kib_s.saturating_mul(1024),
        }
    }

    /// Shuts down every connection whose read deadline has passed (its pending read then ends,
    /// and the connection sees `expired`).
    fn sweep_deadlines(&self, now: Instant) {
        for (_, c) in self.conns.borrow().iter() {
            if c.deadline.deadline.get().is_some_and(|d| now >= d) && !c.deadline.expired.get() {
                c.deadline.expired.set(true);
                // Counted here, before the client can see the close: counted by the
                // connection's task (`ConnError::TimedOut`), a client that read the metric as
                // soon as its connection closed could find it not yet counted (seen in CI).
                self.shared
                    .metrics
                    .conns
                    .timed_out
                    .fetch_add(1, Ordering::Relaxed);
                // SAFETY: the connection's task still owns the open fd; shutdown only wakes its
                // pending read.
                unsafe { libc::shutdown(c.fd, libc::SHUT_RDWR) };
            }
        }
    }

    fn register(&self, stream: &TcpStream, kind: ConnKind, deadline: Rc<DeadlineCell>) -> usize {
        self.conns.borrow_mut().insert(ConnEntry {
            fd: stream.as_raw_fd(),
            kind,
            deadline,
        })
    }
}

async fn accept_loop(core: Rc<Core>, listener: TcpListener, kind: ConnKind) {
    let mut last_warning: Option<Instant> = None;
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // A shut-down listener fails its accept: that is how this loop is stopped.
                if core.shared.shutting_down.load(Ordering::Relaxed)
                    || matches!(kind, ConnKind::Runtime(_))
                    || e.raw_os_error() == Some(libc::EINVAL)
                {
                    return;
                }
                // Out of descriptors (EMFILE/ENFILE) lasts while it lasts: pause accepting, and
                // say so once per interval rather than once per attempt.
                core.shared
                    .metrics
                    .conns
                    .accept_errors
                    .fetch_add(1, Ordering::Relaxed);
                if last_warning.is_none_or(|t| t.elapsed() >= ACCEPT_WARNING_INTERVAL) {
                    tracing::warn!(core = core.index, "accept failed (pausing accepts): {e}");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(ACCEPT_RETRY_MS)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        serve_accepted(&core, stream, kind);
    }
}

/// Accepts instance `id`'s runtime connections on its Unix socket until the instance goes (the
/// scheduler shuts the listener down). Accepts are rare (one per runtime connection), so they
/// wait on tokio's reactor; the connection itself is served on the ring like a TCP one:
/// tokio-uring's `TcpStream` is a socket descriptor driven by io_uring reads, writes and
/// shutdowns, none of which depends on the socket's family, and nothing TCP-only
/// (`set_nodelay`, addresses) is used on a Runtime API connection (`identity` asks the kernel for
/// a Unix peer's uid with `SO_PEERCRED`).
///
/// A shut-down Unix listener stays readable while its accept says `EAGAIN` (tokio's own
/// `UnixListener::accept` then spins the core), so readiness is watched here: read-closed
/// (`EPOLLRDHUP`, what the shutdown raises) ends the loop.
async fn unix_accept_loop(core: Rc<Core>, listener: StdUnixListener, id: InstanceId) {
    // SAFETY: the `UnixListener` owns its fd, which stays open and the same for as long as the
    // `AsyncFd` that owns the listener lives.
    let registered = unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(listener, tokio::io::Interest::READABLE)
    };
    let listener = match registered {
        Ok(l) => l,
        Err(e) => {
            // The instance's runtime falls back to its TCP address when it cannot connect.
            tracing::warn!(instance = %id, "cannot watch the instance's Unix socket: {e}");
            return;
        }
    };
    loop {
        let Ok(mut ready) = listener.readable().await else {
            return;
        };
        if ready.ready().is_read_closed() {
            return; // shut down: the instance is gone
        }
        let stream = match listener.get_ref().accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                ready.clear_ready();
                continue;
            }
            // Out of descriptors, or shut down: either way the listener closes (its abstract
            // name with it) and the runtime's next connection goes to its TCP address instead.
            Err(_) => return,
        };
        // Blocking, as io_uring needs (a non-blocking socket's reads complete with EAGAIN):
        // `accept` does not pass the listener's O_NONBLOCK on.
        core.shared
            .metrics
            .conns
            .runtime_unix
            .fetch_add(1, Ordering::Relaxed);
        let stream = TcpStream::from_std(std::net::TcpStream::from(OwnedFd::from(stream)));
        serve_accepted(&core, stream, ConnKind::Runtime(id));
    }
}

/// Serves one accepted connection on its own task: counted, registered in the core's table,
/// admitted by `identity`, then served by the API its `kind` names.
fn serve_accepted(core: &Rc<Core>, stream: TcpStream, kind: ConnKind) {
    serve_conn(core, stream, kind, None);
}

/// Serves a connection this core accepted (`adopted` = `None`), or one another core accepted,
/// admitted and served, and handed over between requests with the bytes it had read past the
/// last (`CoreMsg::AdoptUserConn`): it was admitted there, and the core that handed it over
/// reserved its client slot here (`Switchboard::take_client_slot`), so neither is done again.
fn serve_conn(core: &Rc<Core>, stream: TcpStream, kind: ConnKind, adopted: Option<BytesMut>) {
    let client = !matches!(kind, ConnKind::Runtime(_));
    if client && adopted.is_none() && !core.shared.take_client_slot(core.index) {
        // Full: close at once (the peer sees a reset, not a hang).
        core.shared
            .metrics
            .conns
            .refused
            .fetch_add(1, Ordering::Relaxed);
        // SAFETY: the fd is open and owned by `stream`, dropped right after.
        unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_RDWR) };
        return;
    }
    let deadline = Rc::new(DeadlineCell::default());
    let key = core.register(&stream, kind, deadline.clone());
    let core2 = core.clone();
    if client {
        core.shared
            .metrics
            .conns
            .open
            .fetch_add(1, Ordering::Relaxed);
    }
    tokio_uring::spawn(async move {
        let limits = match kind {
            ConnKind::User => user_api::limits(),
            _ => runtime_api::limits(),
        };
        let fd = stream.as_raw_fd();
        let deadlines = core2.read_deadlines(kind);
        let (mut conn, admitted) = match adopted {
            Some(buffered) => (
                HttpConn::adopted(stream, buffered, limits, deadlines, deadline),
                Ok(()),
            ),
            None => (
                HttpConn::new(stream, limits, deadlines, deadline),
                identity::admit(&core2, fd, kind),
            ),
        };
        match admitted {
            Ok(()) => match kind {
                ConnKind::User => user_api::serve(core2.clone(), conn).await,
                _ => runtime_api::serve(core2.clone(), conn, kind).await,
            },
            Err(refusal) => {
                if conn.write_response(refusal, false).await.is_ok() {
                    conn.linger().await;
                }
            }
        }
        core2.conns.borrow_mut().remove(key);
        if client {
            core2.shared.release_client_slot(core2.index);
            core2
                .shared
                .metrics
                .conns
                .open
                .fetch_sub(1, Ordering::Relaxed);
        }
    });
}

async fn tick_loop(core: Rc<Core>) {
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_sweep = Instant::now();
    loop {
        interval.tick().await;
        let now = Instant::now();
        core.sched.borrow_mut().tick(now);
        if now.duration_since(last_sweep) >= DEADLINE_SWEEP {
            core.sweep_deadlines(now);
            last_sweep = now;
        }
    }
}
