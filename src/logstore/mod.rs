//! The function log store: every line an instance writes, and Lambda's platform lines, kept per
//! function in CloudWatch-style log groups and streams, and the CloudWatch Logs API over them.
//! Format, bounds and semantics: docs/logs.md.
//!
//! Runs on its own thread (`logs`), the only one that touches the store's files. It receives
//! `LogMsg`s over a bounded channel (`LOG_INBOX_MAX`) from the data-plane cores (output chunks,
//! START/END/REPORT), the control plane (CloudWatch Logs API calls, function deletions) and
//! `server` (shutdown). Cores never wait for it: a full inbox drops their message and counts
//! its lines (`lah_log_lines_dropped_total`). A failed write (a full disk) drops that batch's
//! lines with the same counter; nothing here can fail an invocation.
//!
//! Work per round: take every message waiting (up to `BATCH_MSGS_MAX`), split output into
//! lines per instance (`lines.rs`: AWS's rules), append each stream's new events with one write,
//! and enforce the size bound; the age bound is checked every `PRUNE_INTERVAL_MS`. API calls are
//! answered after the batch before them is written, so a line is visible to the API as soon as
//! the thread has taken it (within `DRAIN_INTERVAL_MS`).
//!
//! The thread polls its inbox every `DRAIN_INTERVAL_MS` instead of blocking on it: a blocked
//! receiver is woken by every send, and with a START, END and REPORT per invocation that wake-up
//! (a futex wake on the core, a context switch here) cost 30-90 us of server CPU per warm
//! invoke (results/2026-12-01-scale-out.md). Polled, the cores' sends never wake anyone.

pub mod api;
pub mod disk;
pub mod lines;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::model::logsink::{LogMsg, LogStream};
use crate::model::types::InstanceId;
use crate::model::Switchboard;
use disk::{Bounds, Event, Store};
use lines::LineSplitter;

/// Messages taken from the inbox before a batch is written: bounds a batch's memory (at most
/// this many 8 KiB chunks) and how long an API call waits behind it.
const BATCH_MSGS_MAX: usize = 1024;
/// A partial line (no newline yet) older than this is stored as it is, so output printed
/// without a newline still shows up.
const PARTIAL_LINE_MS: u64 = 500;
/// How often the thread looks at its inbox (see the module doc): the most a line waits before
/// the API can see it, and what an API call waits at most before its turn.
const DRAIN_INTERVAL_MS: u64 = 20;
/// How often segments past their age are looked for.
const PRUNE_INTERVAL_MS: u64 = 60_000;
/// An instance with no unfinished line and no output for this long is forgotten: its `Closed`
/// may have been dropped with a full inbox, and its entry must not stay for ever. (Output that
/// comes later starts a fresh entry.)
const PARTIAL_FORGET_MS: u64 = 15 * 60_000;

/// The store's thread: the store and each live instance's unfinished line.
struct Writer {
    store: Store,
    shared: Arc<Switchboard>,
    /// Per instance: its stream and the bytes after its last newline.
    partial: HashMap<InstanceId, (Arc<LogStream>, LineSplitter)>,
    /// Events of this batch, per group and stream (with the stream's function). Nested rather
    /// than keyed by the pair so that adding to a stream already in the batch, the usual case,
    /// looks it up by reference without copying its names.
    batch: BTreeMap<String, BTreeMap<String, (String, Vec<Event>)>>,
    last_prune_ms: u64,
}

/// Opens the store under `<data_dir>/logs` (on the caller's thread, so a broken data dir fails
/// start-up) and starts its thread.
pub fn start(
    data_dir: &Path,
    bounds: Bounds,
    shared: Arc<Switchboard>,
    inbox: Receiver<LogMsg>,
) -> std::io::Result<JoinHandle<()>> {
    let mut store = Store::open(&data_dir.join("logs"), bounds)?;
    let now = lines::now_ms();
    store.prune(now);
    shared
        .metrics
        .log_bytes_stored
        .store(store.total_bytes() as i64, Ordering::Relaxed);
    let mut writer = Writer {
        store,
        shared,
        partial: HashMap::new(),
        batch: BTreeMap::new(),
        last_prune_ms: now,
    };
    std::thread::Builder::new()
        .name("logs".into())
        .spawn(move || writer.run(inbox))
}

impl Writer {
    fn run(&mut self, inbox: Receiver<LogMsg>) {
        loop {
            let mut taken = 0;
            let mut disconnected = false;
            while taken < BATCH_MSGS_MAX {
                match inbox.try_recv() {
                    Ok(msg) => {
                        if let Some(done) = self.take(msg) {
                            self.write_batch();
                            self.store.sync();
                            let _ = done.send(());
                            return;
                        }
                        taken += 1;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            let now = lines::now_ms();
            self.flush_stale_partials(now);
            self.write_batch();
            if now.saturating_sub(self.last_prune_ms) >= PRUNE_INTERVAL_MS {
                self.prune(now);
            }
            if disconnected {
                break;
            }
            // A full batch means more is waiting: take it at once.
            if taken < BATCH_MSGS_MAX {
                std::thread::sleep(Duration::from_millis(DRAIN_INTERVAL_MS));
            }
        }
        self.write_batch();
        self.store.sync();
    }

    /// Handles one message; returns the shutdown acknowledgement when told to stop.
    fn take(&mut self, msg: LogMsg) -> Option<tokio::sync::oneshot::Sender<()>> {
        match msg {
            LogMsg::Output {
                stream,
                at_ms,
                data,
            } => {
                let (_, splitter) = self
                    .partial
                    .entry(stream.instance)
                    .or_insert_with(|| (stream.clone(), LineSplitter::default()));
                let mut events = Vec::new();
                splitter.push(&data, at_ms, &mut events);
                self.add(&stream, events);
            }
            LogMsg::Closed { stream, at_ms } => {
                self.flush_partial(stream.instance, at_ms);
                self.partial.remove(&stream.instance);
            }
            LogMsg::InitStart { stream, at_ms } => {
                let events = lines::init_start(&stream, at_ms);
                self.add(&stream, events);
            }
            LogMsg::Start {
                stream,
                at_ms,
                request,
            } => {
                let events = lines::start(&stream, at_ms, &request);
                self.add(&stream, events);
            }
            LogMsg::End {
                stream,
                at_ms,
                request,
                report,
            } => {
                // What the function printed without a newline belongs before its END.
                self.flush_partial(stream.instance, at_ms);
                let events = lines::end(&stream, at_ms, &request, &report);
                self.add(&stream, events);
            }
            LogMsg::Api {
                operation,
                body,
                region,
                reply,
            } => {
                self.write_batch();
                let answer = api::handle(&mut self.store, &operation, &body, &region);
                self.publish_size();
                let _ = reply.send(answer);
            }
            LogMsg::FunctionDeleted { name } => {
                self.write_batch();
                if let Err(e) = self.store.delete_function(&name) {
                    tracing::warn!(
                        function = name,
                        "log store: deleting the function's logs: {e}"
                    );
                }
                self.publish_size();
            }
            LogMsg::Shutdown { done } => return Some(done),
        }
        None
    }

    fn add(&mut self, stream: &LogStream, events: Vec<Event>) {
        if events.is_empty() {
            return;
        }
        if let Some((_, batched)) = self
            .batch
            .get_mut(&stream.group)
            .and_then(|streams| streams.get_mut(&stream.name))
        {
            batched.extend(events);
            return;
        }
        self.batch
            .entry(stream.group.clone())
            .or_default()
            .insert(stream.name.clone(), (stream.function.clone(), events));
    }

    fn flush_partial(&mut self, id: InstanceId, at_ms: u64) {
        let Some((stream, splitter)) = self.partial.get_mut(&id) else {
            return;
        };
        let stream = stream.clone();
        let mut events = Vec::new();
        splitter.finish(at_ms, &mut events);
        self.add(&stream, events);
    }

    fn flush_stale_partials(&mut self, now_ms: u64) {
        let stale: Vec<InstanceId> = self
            .partial
            .iter()
            .filter(|(_, (_, s))| {
                s.pending_since()
                    .is_some_and(|t| now_ms >= t + PARTIAL_LINE_MS)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.flush_partial(id, now_ms);
        }
        self.partial.retain(|_, (_, s)| {
            s.pending_since().is_some() || now_ms < s.last_ms + PARTIAL_FORGET_MS
        });
    }

    fn write_batch(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let now = lines::now_ms();
        let m = &self.shared.metrics;
        for (group, streams) in std::mem::take(&mut self.batch) {
            for (stream, (function, events)) in streams {
                match self.store.append(&group, &stream, &function, &events, now) {
                    Ok(()) => {
                        m.log_events_stored
                            .fetch_add(events.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        m.log_lines_dropped
                            .fetch_add(events.len() as u64, Ordering::Relaxed);
                        tracing::debug!(
                            group,
                            stream,
                            "log store: write failed, lines dropped: {e}"
                        );
                    }
                }
            }
        }
        if self.store.total_bytes() > self.store.bounds.bytes_max {
            self.store.prune(now);
        }
        self.publish_size();
    }

    fn prune(&mut self, now_ms: u64) {
        self.store.prune(now_ms);
        self.last_prune_ms = now_ms;
        self.publish_size();
    }

    fn publish_size(&self) {
        self.shared
            .metrics
            .log_bytes_stored
            .store(self.store.total_bytes() as i64, Ordering::Relaxed);
    }
}
