//! One HTTP connection on a core: its socket, read buffer and request decoder.
//!
//! Buffers are owned and passed to the ring and back (`(result, buf)`), as tokio-uring requires.
//! Requests are split off the read buffer without copying; responses are written as one buffer
//! when small and as a `writev` of head and body when the body is large, so an invocation payload
//! is never copied on its way through. Reads are never dropped mid-flight (a dropped tokio-uring
//! read is not cancelled and would lose its bytes): a connection task always awaits its read.

use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_uring::buf::BoundedBuf;
use tokio_uring::net::TcpStream;

use crate::protocols::http::{self, BodyPiece, Decoded, Decoder, HttpError, Limits, Request};

/// Spare capacity a read buffer must have before each read, and what a read asks of the kernel
/// when nothing bigger is known to be coming. Shared by the HTTP and WebSocket readers.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;
/// Most capacity reserved ahead of one read when the decoder announces a larger body: a bigger body
/// grows the buffer over several reads, so a peer's declared length alone cannot make us allocate
/// the whole of it at once.
const READ_RESERVE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most bytes, and longest time, read and discarded after an early error response (`linger`).
const LINGER_BYTES_MAX: usize = 16 * 1024 * 1024;
const LINGER_MS: u64 = 2_000;
/// Starting capacity of the reusable response-head buffer; a typical head and its headers fit
/// without growing it.
const HEAD_BUFFER_BYTES: usize = 1024;
/// Most buffers one `sendmsg` of `try_send_now` takes; `write_vectored` sends more through the ring.
const SEND_NOW_PARTS_MAX: usize = 4;
/// Bodies up to this size are copied next to their head and written with one `write`; larger
/// ones go out with `writev` (copying 16 KB costs less than a second iovec round trip).
const INLINE_BODY_BYTES_MAX: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("bad request: {0}")]
    Http(#[from] HttpError),
    #[error("connection closed mid-request")]
    UnexpectedEof,
    #[error("request not received in time")]
    TimedOut,
}

/// When the request being read must have arrived, shared between a connection and its core's
/// deadline sweep (`Core::sweep_deadlines`): the connection sets it around each read, the sweep
/// shuts down a socket whose deadline passed. No timer is armed per read (that cost ~20-60 µs of
/// server CPU per warm invoke); deadlines are enforced within the sweep interval instead.
#[derive(Default)]
pub struct DeadlineCell {
    pub deadline: Cell<Option<Instant>>,
    /// Set by the sweep when it shut the socket down for being late.
    pub expired: Cell<bool>,
}

/// How long a peer may take to send a request (see `Config`'s connection flags). Bounds what a
/// slow or silent client can hold: its connection slot and the bytes it sent.
#[derive(Clone, Copy, Debug)]
pub struct ReadDeadlines {
    /// Between requests; `None`: no limit (an instance's own Runtime API connection, idle while
    /// its runtime runs an invocation).
    pub idle: Option<Duration>,
    /// From a request's first byte to the end of its head, and the base of its body's allowance.
    pub head: Duration,
    /// The slowest accepted body upload, bytes per second.
    pub body_rate_bytes_s: u64,
}

impl ReadDeadlines {
    /// When a request that started at `started` (`None`: not yet) must have arrived, given the
    /// body bytes known (buffered plus still needed).
    fn deadline(&self, started: Option<Instant>, body_bytes: usize) -> Option<Instant> {
        match started {
            None => self.idle.map(|idle| Instant::now() + idle),
            Some(t) => {
                let body_s = body_bytes as u64 / self.body_rate_bytes_s.max(1);
                Some(t + self.head + Duration::from_secs(body_s))
            }
        }
    }
}

/// A duplicate of a socket's descriptor, to hand the connection to another core (the socket
/// travels as the descriptor; the original closes when its `TcpStream` is dropped). Call with no
/// read or write in flight on it. `None` when out of descriptors.
pub fn dup_socket(stream: &TcpStream) -> Option<OwnedFd> {
    // SAFETY: dup of an open socket fd `stream` owns; the copy outlives the TcpStream, which
    // closes only its own fd when dropped.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    // SAFETY: dup returned a new fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A response ready to be written.
pub struct Response {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    /// Headers whose names are only known at run time (a function URL's response), written
    /// after `headers`. Empty, and not allocated, for every other response.
    pub owned_headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Close the connection after this response.
    pub close: bool,
    /// An invocation's answer: the core it was handed to, if not this one (`Scheduler::submit`;
    /// the connection follows its invocations, `user_api::Follow`). Not written.
    pub served_on: Option<usize>,
}

impl Response {
    pub fn new(status: u16, body: impl Into<Bytes>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            owned_headers: Vec::new(),
            body: body.into(),
            close: false,
            served_on: None,
        }
    }

    pub fn json(status: u16, body: impl Into<Bytes>) -> Response {
        Response::new(status, body).header("Content-Type", "application/json")
    }

    pub fn empty(status: u16) -> Response {
        Response::new(status, Bytes::new())
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }
}

pub struct HttpConn {
    pub stream: Rc<TcpStream>,
    buf: BytesMut,
    decoder: Decoder,
    deadlines: ReadDeadlines,
    /// Watched by the core's sweep.
    deadline: Rc<DeadlineCell>,
    /// Reused between responses so a warm connection does not allocate a head per response.
    out: Vec<u8>,
}

impl HttpConn {
    pub fn new(
        stream: TcpStream,
        limits: Limits,
        deadlines: ReadDeadlines,
        deadline: Rc<DeadlineCell>,
    ) -> HttpConn {
        HttpConn {
            stream: Rc::new(stream),
            buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            decoder: Decoder::new(limits),
            deadlines,
            deadline,
            out: Vec::with_capacity(HEAD_BUFFER_BYTES),
        }
    }

    /// A connection another core accepted and handed over between requests, with the bytes it
    /// had read past the last request (`user_api::Follow`).
    pub fn adopted(
        stream: TcpStream,
        buffered: BytesMut,
        limits: Limits,
        deadlines: ReadDeadlines,
        deadline: Rc<DeadlineCell>,
    ) -> HttpConn {
        let mut conn = HttpConn::new(stream, limits, deadlines, deadline);
        conn.buf = buffered;
        conn
    }

    /// The socket and the bytes read past the last request, for a hand-over to another core.
    /// Call only between requests, with no read or write in flight.
    pub fn into_parts(self) -> (Rc<TcpStream>, BytesMut) {
        (self.stream, self.buf)
    }

    /// The next complete request, or `None` when the peer closed cleanly between requests.
    /// A peer that stays silent past the idle limit, or sends its request slower than
    /// `ReadDeadlines` allow, gets `TimedOut` and its socket shut down.
    pub async fn next_request(&mut self) -> Result<Option<Request>, ConnError> {
        match self.next_request_or_stream(|_| false).await? {
            Some(Decoded::Whole(req)) => Ok(Some(req)),
            // `stream` never holds, so no head is handed out alone.
            Some(Decoded::StreamHead(_)) | None => Ok(None),
        }
    }

    /// Like `next_request`, but a chunked request for which `stream` holds is returned as soon
    /// as its head has arrived (`Decoded::StreamHead`); its body must then be read with
    /// `next_piece` before the next request.
    pub async fn next_request_or_stream(
        &mut self,
        stream: fn(&Request) -> bool,
    ) -> Result<Option<Decoded>, ConnError> {
        let mut started = (!self.buf.is_empty()).then(Instant::now);
        loop {
            if let Some(decoded) = self.decoder.decode_or_stream(&mut self.buf, stream)? {
                return Ok(Some(decoded));
            }
            if self.decoder.take_continue() {
                self.write_raw(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            let body_bytes = self.buf.len() + self.decoder.bytes_needed().unwrap_or(0);
            self.deadline
                .deadline
                .set(self.deadlines.deadline(started, body_bytes));
            let read = self.read_more().await;
            self.deadline.deadline.set(None);
            // The sweep shut the socket down under a late read: that read ended early.
            if self.deadline.expired.get() {
                return Err(ConnError::TimedOut);
            }
            let n = read?;
            if n == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ConnError::UnexpectedEof)
                };
            }
            started.get_or_insert_with(Instant::now);
        }
    }

    /// The next piece of a streamed body (after `Decoded::StreamHead`), waiting for it as long
    /// as it takes: a streamed body arrives at the pace its sender produces it, so no read
    /// deadline applies (the invocation's own deadline bounds it, by killing its instance).
    pub async fn next_piece(&mut self) -> Result<BodyPiece, ConnError> {
        loop {
            if let Some(piece) = self.decoder.next_piece(&mut self.buf)? {
                return Ok(piece);
            }
            if self.decoder.take_continue() {
                self.write_raw(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
            }
            if self.read_more().await? == 0 {
                return Err(ConnError::UnexpectedEof);
            }
        }
    }

    /// Reads what the peer has sent into the buffer's spare capacity; 0 means end of stream.
    /// The buffer grows with what has arrived (at most doubling per read), never with what a
    /// header announces: a `Content-Length` alone cannot make us allocate.
    pub async fn read_more(&mut self) -> io::Result<usize> {
        let announced = self.decoder.bytes_needed().unwrap_or(0);
        let want = announced
            .min(self.buf.len().max(READ_CHUNK_BYTES))
            .clamp(READ_CHUNK_BYTES, READ_RESERVE_BYTES_MAX);
        read_into(&self.stream, &mut self.buf, want).await
    }

    /// After an early error response (e.g. 413 from a `Content-Length`): stop sending, then read
    /// and discard what the peer is still sending, for at most `LINGER_BYTES_MAX` bytes and
    /// `LINGER_MS`, so a client that writes its whole body before reading sees the response
    /// instead of a reset. Memory stays at one read buffer.
    pub async fn linger(&mut self) {
        // SAFETY: the fd is open (owned by `stream`); shutdown neither closes nor frees it.
        unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_WR) };
        let deadline = Instant::now() + Duration::from_millis(LINGER_MS);
        let mut drained = 0;
        while drained < LINGER_BYTES_MAX {
            self.buf.clear();
            let read = tokio::time::timeout_at(deadline.into(), self.read_more()).await;
            match read {
                Ok(Ok(n)) if n > 0 => drained += n,
                _ => break,
            }
        }
        self.shut_down();
    }

    /// Shuts the socket down both ways (wakes any read in flight on it).
    pub fn shut_down(&self) {
        // SAFETY: the fd is open (owned by `stream`); shutdown neither closes nor frees it.
        unsafe { libc::shutdown(self.stream.as_raw_fd(), libc::SHUT_RDWR) };
    }

    /// Bytes read past the last request (for a protocol upgrade).
    pub fn take_buffered(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }

    pub async fn write_raw(&mut self, data: &[u8]) -> io::Result<()> {
        let sent = try_send_now(&self.stream, &[data])?;
        if sent == data.len() {
            return Ok(());
        }
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        out.extend_from_slice(&data[sent..]);
        let (res, out) = self.stream.write_all(out).await;
        self.out = out;
        res
    }

    /// Writes `resp` (head and body); the head says `Connection: close` unless `keep_alive` and the
    /// response itself allows reuse.
    pub async fn write_response(&mut self, resp: Response, keep_alive: bool) -> io::Result<()> {
        let keep_alive = keep_alive && !resp.close;
        let mut out = std::mem::take(&mut self.out);
        out.clear();
        let headers: Vec<(&str, &str)> = resp
            .headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(
                resp.owned_headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str())),
            )
            .collect();
        http::write_response_head(&mut out, resp.status, &headers, resp.body.len(), keep_alive);
        if resp.body.len() <= INLINE_BODY_BYTES_MAX {
            out.extend_from_slice(&resp.body);
            let res = self.write_raw_owned(out).await;
            return res;
        }
        let head = Bytes::from(out);
        let res = write_vectored(&self.stream, vec![head, resp.body]).await;
        self.out = Vec::with_capacity(HEAD_BUFFER_BYTES);
        res
    }

    /// `write_raw` for a buffer we own (kept for reuse afterwards).
    async fn write_raw_owned(&mut self, out: Vec<u8>) -> io::Result<()> {
        let sent = match try_send_now(&self.stream, &[&out]) {
            Ok(n) => n,
            Err(e) => {
                self.out = out;
                return Err(e);
            }
        };
        if sent == out.len() {
            self.out = out;
            return Ok(());
        }
        let rest = Bytes::from(out).slice(sent..);
        let (res, _) = self.stream.write_all(rest).await;
        self.out = Vec::with_capacity(HEAD_BUFFER_BYTES);
        res
    }
}

/// The one read primitive of the data plane: one ring read into `buf`'s spare capacity, after
/// reserving `reserve` bytes if less than `READ_CHUNK_BYTES` is spare. Returns the bytes read (0 at
/// end of stream). The buffer is handed to the ring and back, so it is whole again on return,
/// also on error; callers must await it to the end (a dropped read would lose its bytes).
pub async fn read_into(
    stream: &TcpStream,
    buf: &mut BytesMut,
    reserve: usize,
) -> io::Result<usize> {
    if buf.capacity() - buf.len() < READ_CHUNK_BYTES {
        buf.reserve(reserve);
    }
    let (len, cap) = (buf.len(), buf.capacity());
    let owned = std::mem::take(buf);
    let (res, slice) = stream.read(owned.slice(len..cap)).await;
    *buf = slice.into_inner();
    res
}

/// Sends what the socket takes right now without blocking, in one `sendmsg`. A small write to a
/// loopback peer almost always goes out whole, and then costs one syscall and no completion
/// wake-up of the ring (which would cost a park/unpark of the core); what is left goes through
/// the ring. Callers never have another write in flight on the same socket.
fn try_send_now(stream: &TcpStream, parts: &[&[u8]]) -> io::Result<usize> {
    debug_assert!(parts.len() <= SEND_NOW_PARTS_MAX);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; SEND_NOW_PARTS_MAX];
    for (slot, part) in iov.iter_mut().zip(parts) {
        slot.iov_base = part.as_ptr() as *mut libc::c_void;
        slot.iov_len = part.len();
    }
    // SAFETY: msghdr is plain data; zeroed is a valid empty header, filled in below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = parts.len().min(SEND_NOW_PARTS_MAX) as _;
    // SAFETY: the iovecs point into `parts`, alive for the call; the kernel only reads them.
    let n = unsafe {
        libc::sendmsg(
            stream.as_raw_fd(),
            &msg,
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n >= 0 {
        return Ok(n as usize);
    }
    let err = io::Error::last_os_error();
    match err.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
        _ => Err(err),
    }
}

/// Writes every part, in order, with as few syscalls as the kernel allows: at once when the
/// socket takes it, else through the ring.
pub async fn write_vectored(stream: &TcpStream, parts: Vec<Bytes>) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let slices: Vec<&[u8]> = parts.iter().map(|p| p.as_ref()).collect();
    let mut written = if slices.len() <= SEND_NOW_PARTS_MAX {
        try_send_now(stream, &slices)?
    } else {
        0
    };
    if written == total {
        return Ok(());
    }
    if written == 0 {
        let (res, _) = stream.writev(parts.clone()).await;
        written = res?;
        if written == total {
            return Ok(());
        }
    }
    // Short write: send the rest part by part.
    for part in parts {
        if written >= part.len() {
            written -= part.len();
            continue;
        }
        let rest = part.slice(written..);
        written = 0;
        let (res, _) = stream.write_all(rest).await;
        res?;
    }
    Ok(())
}
