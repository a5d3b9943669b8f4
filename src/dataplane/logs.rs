//! An instance's stdout and stderr, read by its home core.
//!
//! The executor hands over the read end of a pipe (process) or FIFO (Docker). The home core
//! reads it through the reactor (non-blocking fd) into a bounded ring (`LOG_RING_BYTES`). Because
//! the core that completes an invocation is the same core that reads its log, it can drain the pipe
//! synchronously right before building a `Tail`, and every line the runtime wrote before posting
//! its response is in the tail: runtimes write to pipes synchronously (Node on Linux, Python with
//! PYTHONUNBUFFERED), so those bytes are in the pipe before the response is on the socket.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;

use tokio::io::unix::AsyncFd;

use crate::config::LOG_RING_BYTES;

/// Bytes taken from the pipe per `read` while draining it: a stack buffer, so a chatty instance
/// costs a few syscalls per drain and no allocation.
const DRAIN_CHUNK_BYTES: usize = 8192;

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

/// One instance's output: the fd and what was read from it.
pub struct LogSource {
    fd: Option<AsyncFd<OwnedFd>>,
    pub ring: RefCell<LogRing>,
    /// Function name, for the debug log of function output.
    function: String,
}

impl LogSource {
    /// `fd` must be non-blocking. Without one (the executor gave none), the ring stays empty.
    pub fn new(fd: Option<OwnedFd>, function: String) -> io::Result<Rc<LogSource>> {
        let fd = match fd {
            // SAFETY: we own `fd` (an OwnedFd moved in), so no one else can close or reuse it
            // while it is registered; it is deregistered when the AsyncFd drops.
            Some(fd) => Some(unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?),
            None => None,
        };
        Ok(Rc::new(LogSource {
            fd,
            ring: RefCell::new(LogRing::default()),
            function,
        }))
    }

    /// Reads what is in the pipe now, without waiting. Returns false at end of file.
    pub fn drain(&self) -> bool {
        let Some(fd) = &self.fd else { return false };
        let mut chunk = [0u8; DRAIN_CHUNK_BYTES];
        loop {
            // SAFETY: reading into a stack buffer of the given length from a valid fd.
            let n = unsafe {
                libc::read(
                    fd.get_ref().as_raw_fd(),
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                )
            };
            match n {
                0 => return false,
                n if n > 0 => {
                    let data = &chunk[..n as usize];
                    tracing::debug!(target: "function", function = %self.function, "{}", String::from_utf8_lossy(data).trim_end());
                    self.ring.borrow_mut().push(data);
                }
                _ => {
                    let err = io::Error::last_os_error();
                    return err.kind() != io::ErrorKind::UnexpectedEof
                        && matches!(
                            err.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                        );
                }
            }
        }
    }

    /// Reads until the writer closes its end (the instance ended).
    pub async fn run(self: Rc<Self>) {
        let Some(fd) = &self.fd else { return };
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
            if !self.drain() {
                return;
            }
            guard.clear_ready();
        }
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
