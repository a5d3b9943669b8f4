//! The progress line on stderr during long phases: one line rewritten in place on a terminal,
//! a plain line every few seconds otherwise (so CI logs stay short).
//!
//! Workers only bump two relaxed atomics; a separate task reads them and prints, so progress
//! costs the measured path one uncontended increment per request.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the line is redrawn on a terminal, and printed otherwise.
const TTY_PERIOD: Duration = Duration::from_millis(250);
const LOG_PERIOD: Duration = Duration::from_secs(5);

/// What a phase is expected to do, so progress can be shown as a fraction.
#[derive(Clone, Copy, Debug)]
pub enum Plan {
    Count(u64),
    Time(Duration),
}

#[derive(Debug, Default)]
pub struct Counters {
    pub done: AtomicU64,
    pub errors: AtomicU64,
    stop: AtomicBool,
}

impl Counters {
    pub fn record(&self, ok: bool) {
        self.done.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A running progress display; `finish` ends it and prints the phase's summary line.
pub struct Progress {
    pub counters: Arc<Counters>,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(label: String, plan: Plan, quiet: bool) -> Progress {
        let counters = Arc::new(Counters::default());
        let ticker = (!quiet).then(|| tokio::spawn(tick(label, plan, counters.clone())));
        Progress { counters, ticker }
    }

    pub async fn finish(mut self, summary: &str) {
        self.counters.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.await;
            eprintln!("{summary}");
        }
    }
}

async fn tick(label: String, plan: Plan, counters: Arc<Counters>) {
    let tty = std::io::stderr().is_terminal();
    let period = if tty { TTY_PERIOD } else { LOG_PERIOD };
    let started = Instant::now();
    let mut last_print = Instant::now();
    while !counters.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(TTY_PERIOD).await;
        if last_print.elapsed() < period {
            continue;
        }
        last_print = Instant::now();
        let done = counters.done.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        let elapsed = started.elapsed().as_secs_f64();
        let of = match plan {
            Plan::Count(n) => format!("{done}/{n}"),
            Plan::Time(d) => format!("{elapsed:.0}/{:.0} s, {done} done", d.as_secs_f64()),
        };
        let line = format!("[{label}] {of}, {errors} errors");
        let mut err = std::io::stderr().lock();
        let _ = if tty {
            write!(err, "\r\x1b[2K{line}")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
    }
    if tty {
        eprint!("\r\x1b[2K");
    }
}
