//! The server's own log lines (`tracing`) on their way to stdout, kept off the data plane.
//!
//! `tracing_subscriber::fmt` formats each event on the thread that logs it and then writes it.
//! Written straight to stdout that is one `write` system call per line on a data-plane core
//! (two per invocation at the default level, for the WebSocket protocol's `Got invocation` and
//! `Posted response for` lines), and a core that blocks in it when stdout is a pipe nobody reads
//! (`server | less`, paused) or a slow terminal stops serving every connection it owns.
//!
//! Here a formatted line is appended to one shared buffer under a mutex (no system call); a
//! `console` thread writes the buffer out in one `write` per flush: woken when the buffer
//! stops being empty, it first lets lines gather for `GATHER` (so a burst costs one write, and
//! the loggers one wake-up per burst), then writes everything, blocking as long as stdout needs.
//! Order is kept (one buffer, appended under the lock). The buffer is bounded
//! (`BUFFERED_BYTES_MAX`): while stdout does not keep up, lines beyond it are dropped and
//! counted, and a line after the lines kept says how many (a logging thread never waits for
//! stdout). Dropping the `Console` (at the end of `main`) has the console thread write what is
//! left and waits for it at most `EXIT_WAIT`: a stdout that stays blocked costs the last lines,
//! never a process that cannot exit.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long the console thread lets lines gather after the first of a burst.
pub const GATHER: Duration = Duration::from_millis(10);

/// The most bytes buffered for the output; lines beyond it are dropped (and counted) until the
/// console thread has written the buffer out.
pub const BUFFERED_BYTES_MAX: usize = 4 << 20;

/// How long dropping the `Console` waits for the last lines to be written.
pub const EXIT_WAIT: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Lines dropped since the last write because the buffer was full.
    dropped: u64,
    stopping: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the buffer stops being empty, and at shutdown.
    ready: Condvar,
    /// Where lines go, and the buffer of the last write (kept for its capacity); locked by
    /// whoever writes (the console thread, or `flush`), so that two writes never interleave.
    sink: Mutex<Sink>,
}

struct Sink {
    out: Box<dyn Write + Send>,
    spare: Vec<u8>,
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes what is buffered and writes it, then the count of lines dropped after it, if any.
    /// The buffers swap: loggers get the last write's (emptied, with its capacity), so a burst
    /// does not regrow one under their lock.
    fn write_out(&self) {
        let mut guard = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        let sink = &mut *guard;
        sink.spare.clear();
        let dropped = {
            let mut pending = self.pending();
            std::mem::swap(&mut pending.bytes, &mut sink.spare);
            std::mem::take(&mut pending.dropped)
        };
        if !sink.spare.is_empty() {
            let _ = sink.out.write_all(&sink.spare);
        }
        if dropped > 0 {
            let _ = writeln!(
                sink.out,
                "lambda-at-home: {dropped} log lines dropped: the log output did not keep up"
            );
        }
        let _ = sink.out.flush();
        if sink.spare.capacity() > BUFFERED_BYTES_MAX {
            sink.spare = Vec::new();
        }
    }
}

/// The buffered log output: hand `Console::writer` to the subscriber, keep the `Console` until exit.
pub struct Console {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Closed when the console thread ends (after its last write).
    done: std::sync::mpsc::Receiver<()>,
}

impl Console {
    /// Starts the console thread writing to `sink` (stdout in the server).
    pub fn start(sink: Box<dyn Write + Send>) -> std::io::Result<Console> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending::default()),
            ready: Condvar::new(),
            sink: Mutex::new(Sink {
                out: sink,
                spare: Vec::new(),
            }),
        });
        let worker = shared.clone();
        let (finished, done) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("console".into())
            .spawn(move || {
                run(&worker);
                drop(finished);
            })?;
        Ok(Console {
            shared,
            thread: Some(thread),
            done,
        })
    }

    /// A `MakeWriter` for `tracing_subscriber::fmt().with_writer(..)`.
    pub fn writer(&self) -> ConsoleWriter {
        ConsoleWriter(self.shared.clone())
    }

    /// Writes everything buffered now (blocking on the sink as long as it takes).
    pub fn flush(&self) {
        self.shared.write_out();
    }
}

impl Drop for Console {
    /// The console thread writes what is left and ends; this waits for it at most `EXIT_WAIT`
    /// (a blocked output keeps the thread, and the last lines, but not the process).
    fn drop(&mut self) {
        self.shared.pending().stopping = true;
        self.shared.ready.notify_one();
        let ended = matches!(
            self.done.recv_timeout(EXIT_WAIT),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected)
        );
        if let (true, Some(thread)) = (ended, self.thread.take()) {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let stopping = {
            let mut pending = shared.pending();
            while pending.bytes.is_empty() && pending.dropped == 0 && !pending.stopping {
                pending = shared
                    .ready
                    .wait(pending)
                    .unwrap_or_else(|e| e.into_inner());
            }
            pending.stopping
        };
        if !stopping {
            std::thread::sleep(GATHER);
        }
        shared.write_out();
        if stopping {
            return;
        }
    }
}

/// One event's writer: the formatted line is appended to the shared buffer as one piece.
#[derive(Clone)]
pub struct ConsoleWriter(Arc<Shared>);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf)?;
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let mut pending = self.0.pending();
        let was_empty = pending.bytes.is_empty() && pending.dropped == 0;
        if pending.bytes.len() + buf.len() > BUFFERED_BYTES_MAX {
            pending.dropped += 1;
        } else {
            pending.bytes.extend_from_slice(buf);
        }
        drop(pending);
        if was_empty {
            self.0.ready.notify_one();
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ConsoleWriter {
    type Writer = ConsoleWriter;

    fn make_writer(&'a self) -> ConsoleWriter {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    /// A sink that records what it was given, in one shared buffer.
    #[derive(Clone, Default)]
    struct Recorder(Arc<Mutex<Vec<u8>>>);

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// A sink whose writes block until the test lets them through (a pipe nobody reads).
    struct Stuck(Mutex<mpsc::Receiver<()>>, Recorder);

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let _ = self.0.lock().unwrap().recv();
            self.1.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text(r: &Recorder) -> String {
        String::from_utf8(r.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn lines_reach_the_sink_in_order_and_whole_from_several_threads() {
        let out = Recorder::default();
        let console = Console::start(Box::new(out.clone())).unwrap();
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = console.writer();
                std::thread::spawn(move || {
                    for i in 0..500 {
                        w.write_all(format!("thread {t} line {i}\n").as_bytes())
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        // The console thread writes them without being asked.
        let deadline = Instant::now() + Duration::from_secs(10);
        while text(&out).lines().count() < 2000 {
            assert!(Instant::now() < deadline, "lines did not arrive");
            std::thread::sleep(Duration::from_millis(5));
        }
        let got = text(&out);
        for t in 0..4 {
            let mine: Vec<usize> = got
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("thread {t} line ")))
                .map(|n| n.parse().unwrap())
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>(), "thread {t}");
        }
        drop(console);
    }

    #[test]
    fn a_stuck_output_never_blocks_a_logger_and_the_drops_are_counted() {
        let out = Recorder::default();
        let (release, gate) = mpsc::channel();
        let console = Console::start(Box::new(Stuck(Mutex::new(gate), out.clone()))).unwrap();
        let mut w = console.writer();
        let mut line = vec![b'x'; 1023];
        line.push(b'\n');
        let started = Instant::now();
        // Far more than the buffer holds, while the sink takes nothing.
        let lines = 3 * BUFFERED_BYTES_MAX / 1024;
        for _ in 0..lines {
            w.write_all(&line).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "logging waited for the output"
        );
        // Let every write through; shutting down writes what is left.
        for _ in 0..100 {
            let _ = release.send(());
        }
        drop(release);
        drop(console);
        let got = text(&out);
        assert!(
            got.contains("log lines dropped: the log output did not keep up"),
            "{}",
            &got[..200.min(got.len())]
        );
        // What the console thread took before the sink stuck, and one full buffer after it.
        let kept = got.lines().filter(|l| l.starts_with('x')).count();
        assert!(kept > 0 && kept <= 2 * BUFFERED_BYTES_MAX / 1024, "{kept}");
        assert!(got
            .lines()
            .all(|l| l.len() == 1023 || l.contains("dropped")));
    }

    #[test]
    fn an_output_blocked_for_good_does_not_keep_the_process_from_exiting() {
        let (release, gate) = mpsc::channel();
        let console =
            Console::start(Box::new(Stuck(Mutex::new(gate), Recorder::default()))).unwrap();
        let mut w = console.writer();
        w.write_all(b"a line nobody reads\n").unwrap();
        // Let the console thread take it and block in the sink.
        std::thread::sleep(GATHER * 5);
        w.write_all(b"the last line\n").unwrap();
        let started = Instant::now();
        drop(console);
        let waited = started.elapsed();
        assert!(
            waited >= EXIT_WAIT && waited < EXIT_WAIT + Duration::from_secs(3),
            "{waited:?}"
        );
        drop(release); // frees the console thread
    }

    #[test]
    fn flush_and_shutdown_write_what_is_buffered_at_once() {
        let out = Recorder::default();
        let console = Console::start(Box::new(out.clone())).unwrap();
        let mut w = console.writer();
        w.write_all(b"first\n").unwrap();
        console.flush();
        assert_eq!(text(&out), "first\n");
        w.write_all(b"last\n").unwrap();
        drop(console);
        assert_eq!(text(&out), "first\nlast\n");
    }
}
