//! The event queue's append-only log on disk (`<data-dir>/events/queue.log`): what was accepted,
//! how many attempts each event has had, and which events are done.
//!
//! Used only by the event queue's thread (`events`), which may block on it: nothing here runs on
//! a data-plane core. Appends go to an in-memory batch; `commit` writes the batch with one
//! `write` and makes it durable with one `fdatasync` (group commit: every acknowledgement of the
//! batch waits for that one sync). The format (docs/events.md):
//!
//! ```text
//! file   := MAGIC record*
//! record := len:u32le crc:u32le body[len]          crc = CRC-32 (IEEE) of body
//! body   := 1 id:str8 accepted_ms:u64le attempts:u32le function:str16 qualifier:str16
//!             trace_id:str16 client_context:opt32 payload:rest        (enqueue)
//!         | 2 id:str8 attempts:u32le                                  (an attempt failed)
//!         | 3 id:str8                                                 (done)
//! str8/str16 := a u8/u16le length and UTF-8 bytes; opt32 := u32le length + 1 (0: absent), bytes
//! ```
//!
//! Invariants: replay stops at the first record that is incomplete or fails its checksum (a write
//! torn by a crash) and truncates the file there, so later appends never follow garbage; a
//! record is acknowledged only after the `fdatasync` that covers it; compaction rewrites the live
//! events into a temporary file, syncs it, renames it over the log and syncs the directory, so a
//! crash leaves the old or the new log, never a mix.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// First bytes of the file: the format and its version.
const MAGIC: &[u8; 8] = b"LAHEVQ01";
/// Bytes before a record's body: its length and checksum.
const RECORD_HEAD_BYTES: usize = 8;
/// The largest body a record may claim. An event's payload is at most 256 KB; destination
/// records carry a request and a response payload (6 MB at most) plus their envelope. A length
/// above this can only be garbage, so replay stops there.
const RECORD_BODY_BYTES_MAX: usize = 16 * 1024 * 1024;
/// The log is compacted at run time only once it is at least this large (and mostly dead), so
/// small queues are never rewritten over and over.
pub const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;

const KIND_ENQUEUE: u8 = 1;
const KIND_ATTEMPT: u8 = 2;
const KIND_DONE: u8 = 3;

/// One accepted event as the log keeps it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// The request id (the function sees it in every attempt, as on AWS).
    pub id: String,
    /// Unix milliseconds when it was acknowledged: its age counts from here, across restarts.
    pub accepted_ms: u64,
    /// Attempts that ran the function and failed (approximateInvokeCount before the next one).
    pub attempts: u32,
    pub function: String,
    pub qualifier: String,
    pub trace_id: String,
    pub client_context: Option<Bytes>,
    pub payload: Bytes,
}

/// The open log: the file, the batch not yet written, and what is live in it.
pub struct EventLog {
    dir: PathBuf,
    file: File,
    /// Records appended since the last commit.
    batch: Vec<u8>,
    /// Bytes in the file (after the last commit).
    file_bytes: u64,
    /// Encoded size of each live event's enqueue record: what a compaction would keep.
    live: HashMap<String, u64>,
    live_bytes: u64,
    compact_min_bytes: u64,
}

fn log_path(dir: &Path) -> PathBuf {
    dir.join("queue.log")
}

impl EventLog {
    /// Opens (or creates) the log in `dir` and replays it: returns the live events in the order
    /// they were accepted, with their attempt counts. A torn tail is cut off; a log with dead
    /// records is compacted before it is used.
    pub fn open(dir: &Path, compact_min_bytes: u64) -> io::Result<(EventLog, Vec<StoredEvent>)> {
        fs::create_dir_all(dir)?;
        let path = log_path(dir);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut f) => {
                f.read_to_end(&mut bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if !bytes.is_empty() && !bytes.starts_with(MAGIC) {
            // Not ours, or a format this version does not know: refuse rather than overwrite.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} is not an event log of this version", path.display()),
            ));
        }
        let (events, good, records) = replay(&bytes);
        if good < bytes.len() {
            tracing::warn!(
                kept_bytes = good,
                dropped_bytes = bytes.len() - good,
                "event log: incomplete or corrupt tail ignored (a write torn by a crash)"
            );
        }
        let mut log = EventLog {
            dir: dir.to_path_buf(),
            file: open_append(&path)?,
            batch: Vec::new(),
            file_bytes: 0,
            live: HashMap::new(),
            live_bytes: 0,
            compact_min_bytes,
        };
        // One live record per event and nothing torn: the file is already compact.
        if bytes.len() >= MAGIC.len() && good == bytes.len() && records == events.len() {
            log.file_bytes = bytes.len() as u64;
            for e in &events {
                log.track(e);
            }
        } else {
            log.compact(events.iter())?;
        }
        Ok((log, events))
    }

    fn track(&mut self, e: &StoredEvent) {
        let size = (RECORD_HEAD_BYTES + enqueue_body_len(e)) as u64;
        self.live_bytes += size;
        if let Some(old) = self.live.insert(e.id.clone(), size) {
            self.live_bytes -= old;
        }
    }

    /// Appends an accepted event (or a live event with its attempt count, at compaction).
    pub fn append_enqueue(&mut self, e: &StoredEvent) {
        let mut body = Vec::with_capacity(enqueue_body_len(e));
        encode_enqueue(&mut body, e);
        push_record(&mut self.batch, &body);
        self.track(e);
    }

    /// Records that attempt number `attempts` of `id` failed and the event will be retried.
    pub fn append_attempt(&mut self, id: &str, attempts: u32) {
        let mut body = Vec::with_capacity(2 + id.len() + 4);
        body.push(KIND_ATTEMPT);
        put_str8(&mut body, id);
        body.extend_from_slice(&attempts.to_le_bytes());
        push_record(&mut self.batch, &body);
    }

    /// Records that `id` is finished (succeeded, failed for good, or dropped).
    pub fn append_done(&mut self, id: &str) {
        let mut body = Vec::with_capacity(2 + id.len());
        body.push(KIND_DONE);
        put_str8(&mut body, id);
        push_record(&mut self.batch, &body);
        if let Some(size) = self.live.remove(id) {
            self.live_bytes -= size;
        }
    }

    /// Whether records are waiting for `commit`.
    pub fn has_batch(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Writes the batch and syncs it (one `fdatasync` for the whole batch). On failure the file
    /// is cut back to where the batch began, so no later record follows a partial one.
    pub fn commit(&mut self) -> io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let result = self
            .file
            .write_all_at(&self.batch, self.file_bytes)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.file_bytes += self.batch.len() as u64;
                self.batch.clear();
                Ok(())
            }
            Err(e) => {
                self.batch.clear();
                let _ = self.file.set_len(self.file_bytes);
                let _ = self.file.sync_data();
                Err(e)
            }
        }
    }

    /// Whether dead records dominate a log big enough to be worth rewriting.
    pub fn should_compact(&self) -> bool {
        self.file_bytes >= self.compact_min_bytes && self.live_bytes * 2 < self.file_bytes
    }

    pub fn file_bytes(&self) -> u64 {
        self.file_bytes
    }

    /// Rewrites the log with only `live` (each with its current attempt count), atomically:
    /// temporary file, `fdatasync`, rename over the log, sync of the directory. Any batch not
    /// yet committed is committed first.
    pub fn compact<'a>(&mut self, live: impl Iterator<Item = &'a StoredEvent>) -> io::Result<()> {
        self.commit()?;
        let path = log_path(&self.dir);
        let tmp = self.dir.join("queue.log.tmp");
        let mut out = Vec::from(&MAGIC[..]);
        self.live.clear();
        self.live_bytes = 0;
        for e in live {
            let mut body = Vec::with_capacity(enqueue_body_len(e));
            encode_enqueue(&mut body, e);
            push_record(&mut out, &body);
            self.track(e);
        }
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&out)?;
            f.sync_data()?;
        }
        fs::rename(&tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        self.file = open_append(&path)?;
        self.file_bytes = out.len() as u64;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

fn push_record(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

fn put_str8(out: &mut Vec<u8>, s: &str) {
    // Request ids are UUIDs (36 bytes); anything longer is cut at a character boundary.
    let mut end = s.len().min(u8::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn put_str16(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

fn enqueue_body_len(e: &StoredEvent) -> usize {
    1 + 1
        + e.id.len().min(u8::MAX as usize)
        + 8
        + 4
        + 2
        + e.function.len()
        + 2
        + e.qualifier.len()
        + 2
        + e.trace_id.len().min(u16::MAX as usize)
        + 4
        + e.client_context.as_ref().map_or(0, |c| c.len())
        + e.payload.len()
}

fn encode_enqueue(out: &mut Vec<u8>, e: &StoredEvent) {
    out.push(KIND_ENQUEUE);
    put_str8(out, &e.id);
    out.extend_from_slice(&e.accepted_ms.to_le_bytes());
    out.extend_from_slice(&e.attempts.to_le_bytes());
    put_str16(out, &e.function);
    put_str16(out, &e.qualifier);
    put_str16(out, &e.trace_id);
    match &e.client_context {
        Some(c) => {
            out.extend_from_slice(&(c.len() as u32 + 1).to_le_bytes());
            out.extend_from_slice(c);
        }
        None => out.extend_from_slice(&0u32.to_le_bytes()),
    }
    out.extend_from_slice(&e.payload);
}

/// A cursor over one record's body.
struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.b.len() < n {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn str8(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn str16(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
}

/// What a record says.
enum Record {
    Enqueue(StoredEvent),
    Attempt(String, u32),
    Done(String),
}

fn decode(body: &[u8]) -> Option<Record> {
    let mut r = Reader { b: body };
    match r.u8()? {
        KIND_ENQUEUE => {
            let id = r.str8()?;
            let accepted_ms = r.u64()?;
            let attempts = r.u32()?;
            let function = r.str16()?;
            let qualifier = r.str16()?;
            let trace_id = r.str16()?;
            let client_context = match r.u32()? {
                0 => None,
                n => Some(Bytes::copy_from_slice(r.take(n as usize - 1)?)),
            };
            Some(Record::Enqueue(StoredEvent {
                id,
                accepted_ms,
                attempts,
                function,
                qualifier,
                trace_id,
                client_context,
                payload: Bytes::copy_from_slice(r.b),
            }))
        }
        KIND_ATTEMPT => {
            let id = r.str8()?;
            let attempts = r.u32()?;
            Some(Record::Attempt(id, attempts))
        }
        KIND_DONE => Some(Record::Done(r.str8()?)),
        _ => None,
    }
}

/// Replays `bytes`: the live events in acceptance order, the length of the valid prefix, and
/// the number of records in it.
fn replay(bytes: &[u8]) -> (Vec<StoredEvent>, usize, usize) {
    if !bytes.starts_with(MAGIC) {
        return (Vec::new(), 0, 0);
    }
    let mut events: Vec<Option<StoredEvent>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut at = MAGIC.len();
    let mut records = 0;
    while bytes.len() - at >= RECORD_HEAD_BYTES {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"));
        let start = at + RECORD_HEAD_BYTES;
        if len > RECORD_BODY_BYTES_MAX || bytes.len() - start < len {
            break;
        }
        let body = &bytes[start..start + len];
        if crc32fast::hash(body) != crc {
            break;
        }
        let Some(record) = decode(body) else { break };
        match record {
            Record::Enqueue(e) => {
                index.insert(e.id.clone(), events.len());
                events.push(Some(e));
            }
            Record::Attempt(id, n) => {
                if let Some(Some(e)) = index.get(&id).map(|&i| events[i].as_mut()) {
                    e.attempts = n;
                }
            }
            Record::Done(id) => {
                if let Some(i) = index.remove(&id) {
                    events[i] = None;
                }
            }
        }
        records += 1;
        at = start + len;
    }
    (events.into_iter().flatten().collect(), at, records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, payload: &str) -> StoredEvent {
        StoredEvent {
            id: id.to_string(),
            accepted_ms: 1_700_000_000_000,
            attempts: 0,
            function: "f".to_string(),
            qualifier: "$LATEST".to_string(),
            trace_id: "Root=1-0-0".to_string(),
            client_context: None,
            payload: Bytes::from(payload.to_string()),
        }
    }

    fn reopen(dir: &Path) -> (EventLog, Vec<StoredEvent>) {
        EventLog::open(dir, COMPACT_MIN_BYTES).expect("open")
    }

    fn file_len(dir: &Path) -> u64 {
        fs::metadata(log_path(dir)).unwrap().len()
    }

    #[test]
    fn appended_events_replay_with_their_attempts_and_done_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, events) = reopen(dir.path());
        assert!(events.is_empty());
        let mut b = event("b", r#"{"n":2}"#);
        b.client_context = Some(Bytes::from_static(b"{\"custom\":1}"));
        for e in [
            event("a", r#"{"n":1}"#),
            b.clone(),
            event("c", r#"{"n":3}"#),
        ] {
            log.append_enqueue(&e);
        }
        log.commit().unwrap();
        log.append_attempt("b", 1);
        log.append_done("a");
        log.commit().unwrap();
        // Appended but never committed: not acknowledged, must not come back.
        log.append_enqueue(&event("d", "{}"));
        drop(log);

        let (_, events) = reopen(dir.path());
        b.attempts = 1;
        assert_eq!(events, vec![b, event("c", r#"{"n":3}"#)]);
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = reopen(dir.path());
        log.append_enqueue(&event("a", r#"{"n":1}"#));
        log.append_enqueue(&event("b", r#"{"n":2}"#));
        log.commit().unwrap();
        drop(log);
        let full = file_len(dir.path());
        // A crash in the middle of the second record's write: its tail is missing.
        let f = OpenOptions::new()
            .write(true)
            .open(log_path(dir.path()))
            .unwrap();
        f.set_len(full - 5).unwrap();
        drop(f);

        let (mut log, events) = reopen(dir.path());
        assert_eq!(events, vec![event("a", r#"{"n":1}"#)]);
        assert!(
            file_len(dir.path()) < full - 5,
            "the torn record is cut off"
        );
        // Appends after the cut replay normally.
        log.append_enqueue(&event("c", "{}"));
        log.commit().unwrap();
        drop(log);
        let (_, events) = reopen(dir.path());
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
    }

    #[test]
    fn a_record_with_a_bad_checksum_ends_the_replay() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = reopen(dir.path());
        log.append_enqueue(&event("a", r#"{"n":1}"#));
        log.commit().unwrap();
        let second_at = log.file_bytes();
        log.append_enqueue(&event("b", r#"{"n":2}"#));
        log.commit().unwrap();
        drop(log);
        // Flip one payload byte of the second record (the last byte of the file).
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(log_path(dir.path()))
            .unwrap();
        let len = f.metadata().unwrap().len();
        assert!(len > second_at);
        f.write_all_at(b"X", len - 1).unwrap();
        drop(f);
        let (_, events) = reopen(dir.path());
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a"]);
    }

    #[test]
    fn compaction_keeps_only_live_events_with_their_attempts() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = EventLog::open(dir.path(), 1024).unwrap();
        let payload = "x".repeat(200);
        for i in 0..20 {
            log.append_enqueue(&event(&format!("e{i}"), &format!("\"{payload}\"")));
        }
        log.commit().unwrap();
        assert!(!log.should_compact(), "all live: nothing to gain");
        for i in 0..18 {
            log.append_done(&format!("e{i}"));
        }
        log.append_attempt("e19", 2);
        log.commit().unwrap();
        assert!(log.should_compact(), "18 of 20 done");
        let before = log.file_bytes();
        let e18 = event("e18", &format!("\"{payload}\""));
        let mut e19 = e18.clone();
        e19.id = "e19".into();
        e19.attempts = 2;
        log.compact([e18.clone(), e19.clone()].iter()).unwrap();
        assert!(log.file_bytes() < before / 5);
        assert!(!log.should_compact());
        assert!(!dir.path().join("queue.log.tmp").exists());
        // The compacted log takes appends and replays them.
        log.append_done("e18");
        log.commit().unwrap();
        drop(log);
        let (_, events) = reopen(dir.path());
        assert_eq!(events, vec![e19]);
    }

    #[test]
    fn opening_a_log_with_dead_records_compacts_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = reopen(dir.path());
        for i in 0..10 {
            log.append_enqueue(&event(&format!("e{i}"), "{}"));
        }
        for i in 0..9 {
            log.append_done(&format!("e{i}"));
        }
        log.commit().unwrap();
        let before = file_len(dir.path());
        drop(log);
        let (_, events) = reopen(dir.path());
        assert_eq!(events.len(), 1);
        assert!(file_len(dir.path()) < before / 4);
        // Reopening the compact log changes nothing.
        let compact = file_len(dir.path());
        let (_, events) = reopen(dir.path());
        assert_eq!(events.len(), 1);
        assert_eq!(file_len(dir.path()), compact);
    }

    #[test]
    fn a_file_of_another_format_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(log_path(dir.path()), b"LAHEVQ99 something else").unwrap();
        assert!(EventLog::open(dir.path(), COMPACT_MIN_BYTES).is_err());
        assert_eq!(
            fs::read(log_path(dir.path())).unwrap(),
            b"LAHEVQ99 something else"
        );
    }

    #[test]
    fn a_failed_commit_acknowledges_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = reopen(dir.path());
        log.append_enqueue(&event("a", "{}"));
        log.commit().unwrap();
        // A read-only handle makes the next write fail, as a full or broken disk would.
        log.file = File::open(log_path(dir.path())).unwrap();
        log.append_enqueue(&event("b", "{}"));
        assert!(log.commit().is_err());
        assert!(!log.has_batch());
        drop(log);
        let (_, events) = reopen(dir.path());
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["a"]);
    }
}
