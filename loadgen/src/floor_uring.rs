//! `loadgen floor --server uring`: the floor server on a raw io_uring, the least a
//! single-threaded server can do per exchange short of polling. It exists to measure what a
//! different event loop would reach on this machine (see `floor`), not to serve anything else.
//!
//! One thread, one ring, one loop: `io_uring_enter` submits everything queued and waits for at
//! least one completion in the same call; the ring is set up with `SINGLE_ISSUER |
//! DEFER_TASKRUN` when the kernel takes them, so completion work runs only inside that call and
//! never interrupts the thread (a kernel that refuses gets a plain ring, and the loop is the
//! same). Every connection always has one `recv` in flight into its own buffer; answers are
//! written with one non-blocking `send` each (as the server's cores do), and only a short write
//! queues the rest as a `send` operation. Accepts and the watch on stdin (the parent closes it
//! to stop the floor) are ring operations too, so nothing else ever wakes the thread.
//!
//! The exchange is the tokio floor's, byte for byte: callers speak HTTP/1.1 keep-alive; runtimes
//! long-poll (`--protocol http`) or receive pushed length-prefixed frames (`--protocol frames`).
//! Events go to whichever runtime is free, oldest event first.

use std::collections::VecDeque;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};

use bytes::{Buf, BytesMut};
use io_uring::{opcode, squeue, types, IoUring};
use lambda_at_home::protocols::http::{write_response_head, Decoder, Limits};
use slab::Slab;

use crate::floor::{
    announce, push_frame, spawn_runtimes, stop_runtimes, Protocol, FRAME_BYTES_MAX,
    FRAME_PREFIX_BYTES, NEXT_PATH, READ_CHUNK_BYTES,
};

/// Submission queue entries: one recv per connection plus accepts and the odd send.
const RING_ENTRIES: u32 = 512;
/// Operation kinds, in the low byte of each operation's user data (the connection's key above).
const OP_ACCEPT_USER: u64 = 1;
const OP_ACCEPT_RUNTIME: u64 = 2;
const OP_STDIN: u64 = 3;
const OP_RECV: u64 = 4;
const OP_SEND: u64 = 5;
/// A failed accept (e.g. out of descriptors) is re-armed after this timeout, not at once (which
/// would spin and skew the measurement).
const OP_RETRY_USER: u64 = 6;
const OP_RETRY_RUNTIME: u64 = 7;
const ACCEPT_RETRY_NS: u32 = 10_000_000;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    User,
    Runtime,
}

/// One accepted connection.
struct Conn {
    stream: TcpStream,
    side: Side,
    /// Unique over the server's life: a reply to a caller that has gone (and whose slab key was
    /// reused) is dropped instead of reaching the wrong connection.
    id: u64,
    /// Where the in-flight `recv` writes (its heap buffer never moves while the op is queued).
    recv_buf: Vec<u8>,
    /// Bytes received and not yet parsed.
    buf: BytesMut,
    decoder: Decoder,
    /// What an in-flight `send` op writes (`in_flight[sent..]`; never touched while the op is
    /// queued), and bytes written after it, which go out when it is done.
    in_flight: Vec<u8>,
    sent: usize,
    queued: Vec<u8>,
    sending: bool,
    /// A caller: waiting for its event's answer. A runtime: the caller (key, id) whose event
    /// it holds.
    busy: Option<(usize, u64)>,
    /// The connection is closed for good: nothing more is queued for it; its slot is freed once
    /// no operation refers to it.
    closed: bool,
    recv_in_flight: bool,
    /// A runtime in the idle queue (a second `next`, or an unasked frame, does not queue it twice).
    idle: bool,
}

/// One invoke waiting for a runtime.
struct Job {
    caller: (usize, u64),
    body: bytes::Bytes,
}

struct Server {
    ring: IoUring,
    conns: Slab<Conn>,
    next_id: u64,
    protocol: Protocol,
    /// Events no runtime has taken yet, oldest first.
    jobs: VecDeque<Job>,
    /// Runtimes free to take an event (long-polling, or between frames).
    idle: VecDeque<(usize, u64)>,
    out: Vec<u8>,
    /// The accept retry timeout's `Timespec` (an in-flight timeout op points at it).
    retry_after: types::Timespec,
}

/// Runs the uring floor server until the parent closes stdin.
pub fn serve(protocol: Protocol, runtimes: u32) -> io::Result<()> {
    let user = TcpListener::bind("127.0.0.1:0")?;
    let runtime = TcpListener::bind("127.0.0.1:0")?;
    let children = spawn_runtimes(protocol, runtime.local_addr()?.port(), runtimes)?;
    let served = (|| {
        let ring = build_ring()?;
        let mut server = Server {
            ring,
            conns: Slab::new(),
            next_id: 0,
            protocol,
            jobs: VecDeque::new(),
            idle: VecDeque::new(),
            out: Vec::with_capacity(1024),
            retry_after: types::Timespec::new().nsec(ACCEPT_RETRY_NS),
        };
        // Leaked: the stdin read may still be in flight when the loop returns.
        let stdin_byte: &'static mut [u8; 64] = Box::leak(Box::new([0u8; 64]));
        server.push(accept(&user, OP_ACCEPT_USER))?;
        server.push(accept(&runtime, OP_ACCEPT_RUNTIME))?;
        server.push(
            opcode::Read::new(
                types::Fd(0),
                stdin_byte.as_mut_ptr(),
                stdin_byte.len() as u32,
            )
            .build()
            .user_data(OP_STDIN),
        )?;
        announce(user.local_addr()?.port())?;
        let ran = server.run(&user, &runtime, stdin_byte);
        // Operations may still be in flight (recvs, the stdin read): their buffers must outlive
        // them, so they live until the process exits, right after this.
        std::mem::forget(server);
        ran
    })();
    stop_runtimes(children);
    served
}

/// The ring with `SINGLE_ISSUER | DEFER_TASKRUN` (Linux 6.1), or a plain one.
fn build_ring() -> io::Result<IoUring> {
    match IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(RING_ENTRIES)
    {
        Ok(ring) => Ok(ring),
        Err(e) => {
            eprintln!("loadgen floor-serve: DEFER_TASKRUN refused ({e}): a plain ring");
            IoUring::new(RING_ENTRIES)
        }
    }
}

fn accept(listener: &TcpListener, op: u64) -> squeue::Entry {
    opcode::Accept::new(
        types::Fd(listener.as_raw_fd()),
        std::ptr::null_mut(),
        std::ptr::null_mut(),
    )
    .build()
    .user_data(op)
}

impl Server {
    /// Queues one operation (submitting first when the queue is full).
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every buffer an entry points at outlives its operation: connection
            // buffers are freed only once no operation refers to them (`reap`), and the stdin
            // buffer lives for the whole `run`.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn run(
        &mut self,
        user: &TcpListener,
        runtime: &TcpListener,
        stdin_byte: &mut [u8],
    ) -> io::Result<()> {
        let mut done = Vec::with_capacity(64);
        loop {
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                // The completion queue is full: reap it, then submit again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            done.clear();
            done.extend(
                self.ring
                    .completion()
                    .map(|cqe| (cqe.user_data(), cqe.result())),
            );
            for &(data, result) in &done {
                let key = (data >> 8) as usize;
                match data & 0xff {
                    OP_STDIN => {
                        if result <= 0 {
                            return Ok(()); // the parent closed stdin: the floor is over
                        }
                        self.push(
                            opcode::Read::new(
                                types::Fd(0),
                                stdin_byte.as_mut_ptr(),
                                stdin_byte.len() as u32,
                            )
                            .build()
                            .user_data(OP_STDIN),
                        )?;
                    }
                    OP_ACCEPT_USER if result < 0 => self.retry_later(OP_RETRY_USER)?,
                    OP_ACCEPT_RUNTIME if result < 0 => self.retry_later(OP_RETRY_RUNTIME)?,
                    OP_ACCEPT_USER | OP_RETRY_USER => {
                        if data & 0xff == OP_ACCEPT_USER {
                            self.accepted(result, Side::User)?;
                        }
                        self.push(accept(user, OP_ACCEPT_USER))?;
                    }
                    OP_ACCEPT_RUNTIME | OP_RETRY_RUNTIME => {
                        if data & 0xff == OP_ACCEPT_RUNTIME {
                            self.accepted(result, Side::Runtime)?;
                        }
                        self.push(accept(runtime, OP_ACCEPT_RUNTIME))?;
                    }
                    OP_RECV => self.received(key, result)?,
                    OP_SEND => self.sent(key, result)?,
                    _ => {}
                }
            }
        }
    }

    /// A failed accept (e.g. out of descriptors) is tried again after `ACCEPT_RETRY_NS`.
    fn retry_later(&mut self, op: u64) -> io::Result<()> {
        let entry = opcode::Timeout::new(&self.retry_after)
            .build()
            .user_data(op);
        self.push(entry)
    }

    fn accepted(&mut self, result: i32, side: Side) -> io::Result<()> {
        // SAFETY: a successful accept returns a new descriptor that nothing else owns.
        let stream = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(result) };
        let _ = stream.set_nodelay(true);
        self.next_id += 1;
        let key = self.conns.insert(Conn {
            stream,
            side,
            id: self.next_id,
            recv_buf: vec![0; READ_CHUNK_BYTES],
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            decoder: Decoder::new(Limits::default()),
            in_flight: Vec::new(),
            sent: 0,
            queued: Vec::new(),
            sending: false,
            busy: None,
            closed: false,
            recv_in_flight: false,
            idle: false,
        });
        if side == Side::Runtime && self.protocol == Protocol::Frames {
            let id = self.next_id;
            self.runtime_free(key, id)?;
        }
        self.arm_recv(key)
    }

    fn arm_recv(&mut self, key: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if conn.closed {
            return self.reap(key);
        }
        conn.recv_in_flight = true;
        let entry = opcode::Recv::new(
            types::Fd(conn.stream.as_raw_fd()),
            conn.recv_buf.as_mut_ptr(),
            conn.recv_buf.len() as u32,
        )
        .build()
        .user_data(((key as u64) << 8) | OP_RECV);
        self.push(entry)
    }

    fn received(&mut self, key: usize, result: i32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.recv_in_flight = false;
        if result <= 0 || conn.closed {
            return self.close(key);
        }
        let n = result as usize;
        conn.buf.extend_from_slice(&conn.recv_buf[..n]);
        let handled = match conn.side {
            Side::User => self.user_input(key),
            Side::Runtime => match self.protocol {
                Protocol::Http => self.runtime_http_input(key),
                Protocol::Frames => self.runtime_frames_input(key),
            },
        };
        match handled {
            Ok(()) => self.arm_recv(key),
            Err(_) => self.close(key),
        }
    }

    /// A caller's bytes: at most one invoke at a time per caller (the next is parsed once the
    /// answer is out).
    fn user_input(&mut self, key: usize) -> Result<(), ()> {
        loop {
            let conn = self.conns.get_mut(key).ok_or(())?;
            if conn.busy.is_some() || conn.closed {
                return Ok(());
            }
            let Some(req) = conn.decoder.decode(&mut conn.buf).map_err(drop)? else {
                return Ok(());
            };
            let id = conn.id;
            if req.path().ends_with("/invocations") {
                conn.busy = Some((key, id));
                let job = Job {
                    caller: (key, id),
                    body: req.body.clone(),
                };
                match self.idle.pop_front() {
                    Some(runtime) => self.deliver(runtime, job).map_err(drop)?,
                    None => self.jobs.push_back(job),
                }
            } else {
                self.reply_empty(key, 404).map_err(drop)?;
            }
        }
    }

    fn runtime_http_input(&mut self, key: usize) -> Result<(), ()> {
        loop {
            let conn = self.conns.get_mut(key).ok_or(())?;
            if conn.closed {
                return Ok(());
            }
            let Some(req) = conn.decoder.decode(&mut conn.buf).map_err(drop)? else {
                return Ok(());
            };
            let id = conn.id;
            if req.path() == NEXT_PATH {
                self.runtime_free(key, id).map_err(drop)?;
            } else if req.path().ends_with("/response") {
                let caller = conn.busy.take();
                self.reply_empty(key, 202).map_err(drop)?;
                if let Some(caller) = caller {
                    self.answer(caller, &req.body).map_err(drop)?;
                }
            } else {
                self.reply_empty(key, 404).map_err(drop)?;
            }
        }
    }

    fn runtime_frames_input(&mut self, key: usize) -> Result<(), ()> {
        loop {
            let conn = self.conns.get_mut(key).ok_or(())?;
            if conn.closed || conn.buf.len() < FRAME_PREFIX_BYTES {
                return Ok(());
            }
            let mut prefix = [0u8; FRAME_PREFIX_BYTES];
            prefix.copy_from_slice(&conn.buf[..FRAME_PREFIX_BYTES]);
            let len = u32::from_be_bytes(prefix) as usize;
            if len > FRAME_BYTES_MAX {
                return Err(());
            }
            if conn.buf.len() < FRAME_PREFIX_BYTES + len {
                return Ok(());
            }
            conn.buf.advance(FRAME_PREFIX_BYTES);
            let body = conn.buf.split_to(len).freeze();
            let id = conn.id;
            // A frame nobody asked for (the runtime holds no event) is ignored.
            let Some(caller) = conn.busy.take() else {
                continue;
            };
            self.answer(caller, &body).map_err(drop)?;
            self.runtime_free(key, id).map_err(drop)?;
        }
    }

    /// A runtime can take an event: the oldest waiting one, or it waits in the idle queue
    /// (once: a runtime already waiting, or holding an event, is not queued again).
    fn runtime_free(&mut self, key: usize, id: u64) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if conn.idle || conn.busy.is_some() {
            return Ok(());
        }
        match self.jobs.pop_front() {
            Some(job) => self.deliver((key, id), job),
            None => {
                conn.idle = true;
                self.idle.push_back((key, id));
                Ok(())
            }
        }
    }

    /// Hands `job` to the runtime `(key, id)`; if that runtime has gone (or goes while the
    /// event is written to it), to the next free one; with none, the job waits at the front.
    fn deliver(&mut self, runtime: (usize, u64), job: Job) -> io::Result<()> {
        let mut runtime = Some(runtime);
        while let Some((key, id)) = runtime {
            let live = self.conns.get(key).is_some_and(|c| c.id == id && !c.closed);
            if let (true, Some(conn)) = (live, self.conns.get_mut(key)) {
                conn.idle = false;
            }
            if live {
                self.out.clear();
                match self.protocol {
                    Protocol::Http => {
                        let headers = [
                            ("Lambda-Runtime-Aws-Request-Id", "1"),
                            ("Content-Type", "application/json"),
                        ];
                        write_response_head(&mut self.out, 200, &headers, job.body.len(), true);
                        self.out.extend_from_slice(&job.body);
                    }
                    Protocol::Frames => push_frame(&mut self.out, &job.body),
                }
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.busy = Some(job.caller);
                }
                self.send_out(key)?;
                if self.conns.get(key).is_some_and(|c| !c.closed) {
                    return Ok(());
                }
                // The write found the runtime gone: the next free one gets the event.
            }
            runtime = self.idle.pop_front();
        }
        self.jobs.push_front(job);
        Ok(())
    }

    /// The runtime's answer goes to its caller, if the caller is still there.
    fn answer(&mut self, (key, id): (usize, u64), body: &[u8]) -> io::Result<()> {
        let live = self.conns.get(key).is_some_and(|c| c.id == id && !c.closed);
        if !live {
            return Ok(());
        }
        self.out.clear();
        write_response_head(
            &mut self.out,
            200,
            &[("Content-Type", "application/json")],
            body.len(),
            true,
        );
        self.out.extend_from_slice(body);
        self.send_out(key)?;
        if let Some(conn) = self.conns.get_mut(key) {
            conn.busy = None;
        }
        // A pipelined next invoke may already be buffered.
        if self.user_input(key).is_err() {
            self.close(key)?;
        }
        Ok(())
    }

    /// An answer with no body and this status.
    fn reply_empty(&mut self, key: usize, status: u16) -> io::Result<()> {
        self.out.clear();
        write_response_head(&mut self.out, status, &[], 0, true);
        self.send_out(key)
    }

    /// Writes what `self.out` holds to a connection (`write`).
    fn send_out(&mut self, key: usize) -> io::Result<()> {
        let out = std::mem::take(&mut self.out);
        let sent = self.write(key, &out);
        self.out = out;
        sent
    }

    /// Writes `bytes` to a connection: one non-blocking `send`; what it leaves goes out through
    /// a `send` operation.
    fn write(&mut self, key: usize, bytes: &[u8]) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        if conn.closed {
            return Ok(());
        }
        if conn.sending {
            conn.queued.extend_from_slice(bytes);
            return Ok(());
        }
        let written = send_now(conn.stream.as_raw_fd(), bytes);
        if written == usize::MAX {
            return self.close(key);
        }
        if written < bytes.len() {
            conn.in_flight.clear();
            conn.in_flight.extend_from_slice(&bytes[written..]);
            conn.sent = 0;
            return self.arm_send(key);
        }
        Ok(())
    }

    fn arm_send(&mut self, key: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.sending = true;
        let rest = &conn.in_flight[conn.sent..];
        let entry = opcode::Send::new(
            types::Fd(conn.stream.as_raw_fd()),
            rest.as_ptr(),
            rest.len() as u32,
        )
        .build()
        .user_data(((key as u64) << 8) | OP_SEND);
        self.push(entry)
    }

    fn sent(&mut self, key: usize, result: i32) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        conn.sending = false;
        if result < 0 || conn.closed {
            return self.close(key);
        }
        conn.sent += result as usize;
        if conn.sent >= conn.in_flight.len() {
            if conn.queued.is_empty() {
                return Ok(());
            }
            std::mem::swap(&mut conn.in_flight, &mut conn.queued);
            conn.queued.clear();
            conn.sent = 0;
        }
        self.arm_send(key)
    }

    /// Closes a connection for good: its pending work is dropped (a runtime's caller is closed
    /// too), its slot is freed once no operation refers to it.
    fn close(&mut self, key: usize) -> io::Result<()> {
        let Some(conn) = self.conns.get_mut(key) else {
            return Ok(());
        };
        let mut orphan = None;
        if !conn.closed {
            conn.closed = true;
            let _ = conn.stream.shutdown(std::net::Shutdown::Both);
            if conn.side == Side::Runtime {
                orphan = conn.busy.take();
            }
        }
        self.reap(key)?;
        // A runtime that goes with an event: its caller's connection is closed too, so the
        // caller sees the failure at once (as with the tokio floor), not at its time-out.
        match orphan {
            Some((caller, id)) if self.conns.get(caller).is_some_and(|c| c.id == id) => {
                self.close(caller)
            }
            _ => Ok(()),
        }
    }

    fn reap(&mut self, key: usize) -> io::Result<()> {
        let idle = self
            .conns
            .get(key)
            .is_some_and(|c| c.closed && !c.recv_in_flight && !c.sending);
        if idle {
            self.conns.remove(key);
        }
        Ok(())
    }
}

/// One non-blocking send; the bytes written, or `usize::MAX` when the connection is broken.
fn send_now(fd: RawFd, bytes: &[u8]) -> usize {
    // SAFETY: `bytes` is a valid slice for the duration of the call.
    let n = unsafe {
        libc::send(
            fd,
            bytes.as_ptr().cast(),
            bytes.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return n as usize;
    }
    match io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EINTR) => 0,
        _ => usize::MAX,
    }
}
