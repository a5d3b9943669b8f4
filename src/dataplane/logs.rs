//! An instance's stdout and stderr, read by its home core, kept for tails and teed to the log
//! store.
//!
//! The executor hands over the read end of a pipe (process) or FIFO (Docker); both stdout and
//! stderr are written to it. The home core reads it through the reactor (non-blocking fd) into a
//! bounded ring (`LOG_RING_BYTES`). Because the core that completes an invocation is the same core
//! that reads its log, it can drain the pipe synchronously right before building a `Tail`, and
//! every line the runtime wrote before posting its response is in the tail: runtimes write to
//! pipes synchronously (Node on Linux, Python with PYTHONUNBUFFERED), so those bytes are in the
//! pipe before the response is on the socket.
//!
//! Every chunk read is also offered to the log store's thread (`crate::logstore`) as one
//! `LogMsg::Output`: a copy of at most `DRAIN_CHUNK_BYTES` and a `try_send`, never a wait; a full
//! inbox drops the chunk and counts its lines (`lah_log_lines_dropped_total`). The same goes for
//! the platform lines (`platform_start`, `platform_end`), which go through the same channel
//! from the same core, so the store sees them in the order the core read the output. A function
//! that writes without pause is read at most `DRAIN_BYTES_PER_WAKE_MAX` at a time before the
//! reader yields, so it cannot hold its core away from other connections.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::io::unix::AsyncFd;

use crate::config::LOG_RING_BYTES;
use crate::model::logsink::{LogMsg, LogStream, Report};
use crate::model::types::RequestId;
use crate::model::Switchboard;

/// Bytes taken from the pipe per `read` while draining it: a stack buffer, so a chatty instance
/// costs a few syscalls per drain and no allocation beyond the copy sent to the log store.
const DRAIN_CHUNK_BYTES: usize = 8192;

/// Bytes the background reader takes from one instance's pipe before it lets the core's other
/// tasks run: an instance printing 64 KB chunks without pause gets its share of the core, not
/// all of it.
const DRAIN_BYTES_PER_WAKE_MAX: usize = 64 * 1024;

/// How fast one instance's output is read from its pipe, on average, and how much it may write
/// at once beyond that. Past it the pipe fills and the function's writes wait (as behind any slow
/// reader), so a function that prints without pause slows itself instead of taking the server's
/// CPU (reading, splitting and storing lines) and, on a small host, its neighbours' share: with
/// no bound, a Python function printing 64 KB chunks non-stop moved a neighbour's warm p50 by
/// +47-57 % on two CPUs (results/2026-12-01-scale-out.md). Lambda's own log shipping bounds
/// output the same way (CloudWatch Logs ingestion per stream).
const OUTPUT_BYTES_PER_S: f64 = 4.0 * 1024.0 * 1024.0;
const OUTPUT_BURST_BYTES: f64 = 1024.0 * 1024.0;

/// The last `LOG_RING_BYTES` bytes an instance wrote, with a running byte offset.
#[derive(Default)]
pub struct LogRing {
    buf: VecDeque<u8>,
    /// Bytes ever pushed: offsets taken at invocation start stay valid as the ring wraps.
    total: u64,
}

impl LogRing {
    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let data = &data[data.len().saturating_sub(LOG_RING_BYTES)..];
        let overflow = (self.buf.len() + data.len()).saturating_sub(LOG_RING_BYTES);
        self.buf.drain(..overflow);
        self.buf.extend(data);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// What was written since offset `start`, at most the last `max` bytes of it.
    pub fn since(&self, start: u64, max: usize) -> Vec<u8> {
        let written = (self.total - start.min(self.total)) as usize;
        let take = written.min(self.buf.len()).min(max);
        self.buf.range(self.buf.len() - take..).copied().collect()
    }
}

/// Where an instance's output is stored beyond the ring: its log stream and the store's inbox.
pub struct LogTee {
    pub stream: Arc<LogStream>,
    pub shared: Arc<Switchboard>,
}

/// What one bounded drain found.
#[derive(Debug, PartialEq, Eq)]
enum Drained {
    /// The writer closed its end.
    Eof,
    /// Nothing more to read now.
    Empty,
    /// The byte budget ran out with more possibly waiting.
    Budget,
}

/// One instance's output: the fd and what was read from it.
pub struct LogSource {
    fd: Option<AsyncFd<OwnedFd>>,
    pub ring: RefCell<LogRing>,
    tee: Option<LogTee>,
}

/// Unix milliseconds now (a vDSO clock read).
pub fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl LogSource {
    /// `fd` must be non-blocking. Without one (the executor gave none), the ring stays empty.
    pub fn new(fd: Option<OwnedFd>, tee: Option<LogTee>) -> io::Result<Rc<LogSource>> {
        let fd = match fd {
            // SAFETY: we own `fd` (an OwnedFd moved in), so no one else can close or reuse it
            // while it is registered; it is deregistered when the AsyncFd drops.
            Some(fd) => Some(unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?),
            None => None,
        };
        Ok(Rc::new(LogSource {
            fd,
            ring: RefCell::new(LogRing::default()),
            tee,
        }))
    }

    fn offer(&self, msg: impl FnOnce(Arc<LogStream>) -> LogMsg) {
        if let Some(t) = &self.tee {
            t.shared
                .logs
                .offer(&t.shared.metrics, msg(t.stream.clone()));
        }
    }

    /// INIT_START: the instance's runtime is starting.
    pub fn platform_init_start(&self) {
        self.offer(|stream| LogMsg::InitStart {
            stream,
            at_ms: epoch_ms(),
        });
    }

    /// START: invocation `request` was handed to the instance.
    pub fn platform_start(&self, request: &RequestId) {
        self.offer(|stream| LogMsg::Start {
            stream,
            at_ms: epoch_ms(),
            request: request.clone(),
        });
    }

    /// END and REPORT of invocation `request`. The pipe is drained first so that what the
    /// function printed before answering is stored before its END.
    pub fn platform_end(&self, request: &RequestId, report: Report) {
        if self.tee.is_none() {
            return;
        }
        self.drain();
        self.offer(|stream| LogMsg::End {
            stream,
            at_ms: epoch_ms(),
            request: request.clone(),
            report,
        });
    }

    /// Output of the instance: bytes read from its pipe (`drain_up_to`), or sent over its
    /// WebSocket (`log` messages of `lah-agent`, for remote instances that have no pipe to this
    /// host), kept and stored alike. The agent sends what its runtime wrote before it forwards the runtime's answer,
    /// on the same connection, so a tail built at the answer holds it too.
    pub fn feed(&self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if let Some(t) = &self.tee {
            tracing::debug!(target: "function", function = %t.stream.function, "{}", String::from_utf8_lossy(data).trim_end());
        }
        self.ring.borrow_mut().push(data);
        self.offer(|stream| LogMsg::Output {
            stream,
            at_ms: epoch_ms(),
            data: Bytes::copy_from_slice(data),
        });
    }

    /// Whether the instance's output comes from a pipe read here (local instances); remote
    /// instances have none and send their output as `log` messages instead.
    pub fn has_pipe(&self) -> bool {
        self.fd.is_some()
    }

    /// Reads what is in the pipe now, without waiting. Returns false at end of file.
    pub fn drain(&self) -> bool {
        loop {
            match self.drain_up_to(usize::MAX).0 {
                Drained::Eof => return false,
                Drained::Empty => return true,
                Drained::Budget => {}
            }
        }
    }

    /// Reads until the pipe is empty, at its end, or `budget` bytes were taken; also returns
    /// the bytes taken.
    fn drain_up_to(&self, budget: usize) -> (Drained, usize) {
        let Some(fd) = &self.fd else {
            return (Drained::Eof, 0);
        };
        let mut chunk = [0u8; DRAIN_CHUNK_BYTES];
        let mut taken = 0usize;
        while taken < budget {
            // SAFETY: reading into a stack buffer of the given length from a valid fd.
            let n = unsafe {
                libc::read(
                    fd.get_ref().as_raw_fd(),
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                )
            };
            match n {
                0 => return (Drained::Eof, taken),
                n if n > 0 => {
                    let data = &chunk[..n as usize];
                    taken += data.len();
                    self.feed(data);
                }
                _ => {
                    let err = io::Error::last_os_error();
                    let again = matches!(
                        err.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    );
                    let end = if again { Drained::Empty } else { Drained::Eof };
                    return (end, taken);
                }
            }
        }
        (Drained::Budget, taken)
    }

    /// Reads until the writer closes its end (the instance ended), then tells the store.
    pub async fn run(self: Rc<Self>) {
        let Some(fd) = &self.fd else { return };
        // A token bucket of `OUTPUT_BYTES_PER_S`, starting full.
        let mut tokens = OUTPUT_BURST_BYTES;
        let mut refilled = std::time::Instant::now();
        loop {
            let now = std::time::Instant::now();
            let earned = now.duration_since(refilled).as_secs_f64() * OUTPUT_BYTES_PER_S;
            tokens = (tokens + earned).min(OUTPUT_BURST_BYTES);
            refilled = now;
            if tokens < DRAIN_CHUNK_BYTES as f64 {
                let wait = (DRAIN_CHUNK_BYTES as f64 - tokens) / OUTPUT_BYTES_PER_S;
                tokio::time::sleep(std::time::Duration::from_secs_f64(wait)).await;
                continue;
            }
            let Ok(mut guard) = fd.readable().await else {
                break;
            };
            let budget = DRAIN_BYTES_PER_WAKE_MAX.min(tokens as usize);
            let (drained, taken) = self.drain_up_to(budget);
            tokens -= taken as f64;
            match drained {
                Drained::Eof => break,
                Drained::Empty => guard.clear_ready(),
                Drained::Budget => {
                    drop(guard);
                    tokio::task::yield_now().await;
                }
            }
        }
        self.offer(|stream| LogMsg::Closed {
            stream,
            at_ms: epoch_ms(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_offsets_across_wrap() {
        let mut r = LogRing::default();
        r.push(b"hello ");
        let start = r.total();
        r.push(b"world");
        assert_eq!(r.since(start, 100), b"world");
        assert_eq!(r.since(start, 3), b"rld");
        let big = vec![b'x'; LOG_RING_BYTES * 2];
        r.push(&big);
        assert_eq!(r.since(0, usize::MAX).len(), LOG_RING_BYTES);
        assert_eq!(r.since(r.total(), 10), b"");
    }
}
