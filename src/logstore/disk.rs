//! The function log store on disk: log groups, their streams, and each stream's append-only
//! segment files, bounded by total size and by age (oldest segment dropped first).
//!
//! Owned and used only by the log-writer thread (`super`); nothing else opens these files while
//! the server runs. Layout and record format (docs/logs.md):
//!
//! ```text
//! <data-dir>/logs/g-<16 hex>/group.json            {"name", "creationTime", "retentionInDays"}
//! <data-dir>/logs/g-<16 hex>/s-<16 hex>/stream.json {"name", "creationTime", "function"}
//! <data-dir>/logs/g-<16 hex>/s-<16 hex>/<seq>.log  records: "<timestamp>\t<ingestion>\t<message>\n"
//! ```
//!
//! Directory names are hashes of the group and stream names (names may hold `/` and be 512
//! bytes long); the names themselves are in the JSON files. A message never holds `\n` (output
//! is split into lines before it gets here), so a record is one line and a segment can be read
//! with nothing but the file. Invariants: records are only appended; a segment is deleted whole;
//! segment numbers only grow within a stream; a torn last record (a crash mid-write) is cut off
//! when the store is opened; `total_bytes` is the sum of the segments' sizes.
//! Limits: a segment holds at most `Bounds::segment_bytes` (a record larger than that gets a
//! segment of its own); reading a segment reads it whole (at most `SEGMENT_BYTES_MAX`).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Largest segment file: reading a segment reads it whole, so this bounds the memory and time
/// of one read.
pub const SEGMENT_BYTES_MAX: u64 = 1024 * 1024;
/// Smallest segment file, whatever the total bound: below it the per-file overhead dominates.
pub const SEGMENT_BYTES_MIN: u64 = 4 * 1024;
/// Segments per total bound: the oldest segment, dropped whole, is at most this fraction of
/// the store.
const SEGMENTS_PER_BOUND: u64 = 16;
/// Bytes read from each end of a segment at start-up to find its first and last timestamps.
const SCAN_WINDOW_BYTES: u64 = 64 * 1024;

const GROUP_FILE: &str = "group.json";
const STREAM_FILE: &str = "stream.json";

/// How much the store keeps.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// Total bytes of all segments.
    pub bytes_max: u64,
    /// Age of the newest event of a segment past which the segment is dropped (ms).
    pub age_max_ms: u64,
    /// Where a segment is closed and the next one begun.
    pub segment_bytes: u64,
}

impl Bounds {
    pub fn new(bytes_max: u64, age_max_ms: u64) -> Bounds {
        Bounds {
            bytes_max,
            age_max_ms,
            segment_bytes: (bytes_max / SEGMENTS_PER_BOUND)
                .clamp(SEGMENT_BYTES_MIN, SEGMENT_BYTES_MAX),
        }
    }
}

/// One log event to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub ts: u64,
    pub message: String,
}

/// A position in a stream: segment number and byte offset in it. Positions order the events of
/// a stream and stay valid when older segments are dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub seq: u32,
    pub offset: u64,
}

/// An event read back.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    pub ts: u64,
    pub ingest: u64,
    pub message: String,
    pub pos: Pos,
    /// Where the next record begins.
    pub next: Pos,
}

#[derive(Debug)]
struct Segment {
    seq: u32,
    bytes: u64,
    first_ts: u64,
    last_ts: u64,
}

#[derive(Serialize, Deserialize)]
struct GroupMeta {
    name: String,
    #[serde(rename = "creationTime")]
    creation_ms: u64,
    #[serde(rename = "retentionInDays", default)]
    retention_days: Option<u32>,
}

#[derive(Serialize, Deserialize)]
struct StreamMeta {
    name: String,
    #[serde(rename = "creationTime")]
    creation_ms: u64,
    function: String,
}

pub struct Stream {
    dir: PathBuf,
    pub creation_ms: u64,
    pub function: String,
    /// A stable number for event ids (from the group and stream names).
    pub key: u64,
    segments: Vec<Segment>,
    /// Append handle of the last segment, while this run writes to it.
    file: Option<File>,
    next_seq: u32,
    pub last_ingest: Option<u64>,
}

impl Stream {
    pub fn first_ts(&self) -> Option<u64> {
        self.segments.first().map(|s| s.first_ts)
    }

    pub fn last_ts(&self) -> Option<u64> {
        self.segments.last().map(|s| s.last_ts)
    }

    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// The position after the last record.
    pub fn end(&self) -> Pos {
        match self.segments.last() {
            Some(s) => Pos {
                seq: s.seq,
                offset: s.bytes,
            },
            None => Pos {
                seq: self.next_seq,
                offset: 0,
            },
        }
    }

    /// Whether some segment may hold events at or after `from` within `[start, end]`.
    fn segments_in(&self, start: u64, end: u64) -> impl Iterator<Item = &Segment> {
        self.segments
            .iter()
            .filter(move |s| s.last_ts >= start && s.first_ts <= end)
    }

    fn segment_path(&self, seq: u32) -> PathBuf {
        self.dir.join(format!("{seq:010}.log"))
    }

    /// Every event of segment `seq`, in order.
    fn read_segment(&self, seq: u32) -> io::Result<Vec<StoredEvent>> {
        let data = match fs::read(self.segment_path(seq)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(parse_records(&data, seq))
    }
}

pub struct Group {
    dir: PathBuf,
    pub creation_ms: u64,
    pub retention_days: Option<u32>,
    pub streams: BTreeMap<String, Stream>,
}

impl Group {
    pub fn bytes(&self) -> u64 {
        self.streams.values().map(Stream::bytes).sum()
    }
}

pub struct Store {
    root: PathBuf,
    pub bounds: Bounds,
    pub groups: BTreeMap<String, Group>,
    total_bytes: u64,
}

fn hash_name(name: &str) -> u64 {
    let digest = Sha256::digest(name.as_bytes());
    u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

fn write_json_atomic(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, serde_json::to_vec(value).map_err(io::Error::other)?)?;
    fs::rename(&tmp, path)
}

/// Parses records; a torn last record (no newline) is left out.
fn parse_records(data: &[u8], seq: u32) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    let mut offset = 0usize;
    while let Some(len) = data[offset..].iter().position(|&b| b == b'\n') {
        let line = &data[offset..offset + len];
        let next = offset + len + 1;
        if let Some((ts, ingest, message)) = parse_record(line) {
            out.push(StoredEvent {
                ts,
                ingest,
                message,
                pos: Pos {
                    seq,
                    offset: offset as u64,
                },
                next: Pos {
                    seq,
                    offset: next as u64,
                },
            });
        }
        offset = next;
    }
    out
}

fn parse_record(line: &[u8]) -> Option<(u64, u64, String)> {
    let mut parts = line.splitn(3, |&b| b == b'\t');
    let ts = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let ingest = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let message = String::from_utf8_lossy(parts.next()?).into_owned();
    Some((ts, ingest, message))
}

/// Appends `ev`'s record to `out`: `TS\tINGEST\tMESSAGE\n`, newlines inside the message
/// stored as `\r`. Written straight into the batch's buffer, with no buffer or formatter of its
/// own per record: the log thread writes three or more records per invocation.
fn push_record(out: &mut Vec<u8>, ev: &Event, ingest: u64) {
    push_decimal(out, ev.ts);
    out.push(b'\t');
    push_decimal(out, ingest);
    out.push(b'\t');
    let start = out.len();
    out.extend_from_slice(ev.message.as_bytes());
    for b in &mut out[start..] {
        if *b == b'\n' {
            *b = b'\r';
        }
    }
    out.push(b'\n');
}

/// The length of `ev`'s record.
fn record_len(ev: &Event, ingest: u64) -> usize {
    decimal_len(ev.ts) + decimal_len(ingest) + ev.message.len() + 3
}

/// `n` in decimal, as `Display` writes it.
fn push_decimal(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// The first and last timestamps of a segment file, and its length up to the last complete
/// record (a torn tail is cut off).
fn scan_segment(path: &Path) -> io::Result<Option<Segment>> {
    let mut f = OpenOptions::new().read(true).write(true).open(path)?;
    let len = f.metadata()?.len();
    let tail_start = len.saturating_sub(SCAN_WINDOW_BYTES);
    let mut tail = Vec::new();
    f.seek(SeekFrom::Start(tail_start))?;
    Read::by_ref(&mut f)
        .take(SCAN_WINDOW_BYTES)
        .read_to_end(&mut tail)?;
    let Some(last_nl) = tail.iter().rposition(|&b| b == b'\n') else {
        if tail_start == 0 {
            return Ok(None); // Empty, or one torn record.
        }
        // One record longer than the window: read it all.
        let data = fs::read(path)?;
        return Ok(scan_whole(&data, path, &mut f, len));
    };
    let complete = tail_start + last_nl as u64 + 1;
    if complete < len {
        f.set_len(complete)?;
    }
    let before = tail[..last_nl].iter().rposition(|&b| b == b'\n');
    let last_line = match before {
        Some(b) => &tail[b + 1..last_nl],
        None if tail_start == 0 => &tail[..last_nl],
        None => {
            let data = fs::read(path)?;
            return Ok(scan_whole(&data, path, &mut f, len));
        }
    };
    let last_ts = parse_record(last_line).map(|r| r.0);
    let mut head = Vec::new();
    f.seek(SeekFrom::Start(0))?;
    Read::by_ref(&mut f)
        .take(SCAN_WINDOW_BYTES)
        .read_to_end(&mut head)?;
    let first_ts = head
        .iter()
        .position(|&b| b == b'\n')
        .and_then(|n| parse_record(&head[..n]))
        .map(|r| r.0);
    let seq = seq_of(path).unwrap_or(0);
    Ok(match (first_ts, last_ts) {
        (Some(first_ts), Some(last_ts)) => Some(Segment {
            seq,
            bytes: complete,
            first_ts,
            last_ts,
        }),
        _ => {
            let data = fs::read(path)?;
            scan_whole(&data, path, &mut f, len)
        }
    })
}

fn scan_whole(data: &[u8], path: &Path, f: &mut File, len: u64) -> Option<Segment> {
    let seq = seq_of(path).unwrap_or(0);
    let events = parse_records(data, seq);
    let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |n| n + 1) as u64;
    if complete < len {
        let _ = f.set_len(complete);
    }
    Some(Segment {
        seq,
        bytes: complete,
        first_ts: events.first()?.ts,
        last_ts: events.last()?.ts,
    })
}

fn seq_of(path: &Path) -> Option<u32> {
    path.file_name()?
        .to_str()?
        .strip_suffix(".log")?
        .parse()
        .ok()
}

impl Store {
    /// Opens (creating) the store under `root` and indexes what an earlier run left.
    pub fn open(root: &Path, bounds: Bounds) -> io::Result<Store> {
        fs::create_dir_all(root)?;
        let mut store = Store {
            root: root.to_path_buf(),
            bounds,
            groups: BTreeMap::new(),
            total_bytes: 0,
        };
        for entry in fs::read_dir(root)? {
            let dir = entry?.path();
            let is_group = dir
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("g-"));
            if !is_group {
                continue;
            }
            match store.load_group(&dir) {
                Ok(()) => {}
                Err(e) => tracing::warn!(dir = %dir.display(), "log store: skipping a group: {e}"),
            }
        }
        Ok(store)
    }

    fn load_group(&mut self, dir: &Path) -> io::Result<()> {
        let meta: GroupMeta =
            serde_json::from_slice(&fs::read(dir.join(GROUP_FILE))?).map_err(io::Error::other)?;
        let mut group = Group {
            dir: dir.to_path_buf(),
            creation_ms: meta.creation_ms,
            retention_days: meta.retention_days,
            streams: BTreeMap::new(),
        };
        for entry in fs::read_dir(dir)? {
            let sdir = entry?.path();
            if !sdir.is_dir() {
                continue;
            }
            let Ok(raw) = fs::read(sdir.join(STREAM_FILE)) else {
                continue;
            };
            let Ok(smeta) = serde_json::from_slice::<StreamMeta>(&raw) else {
                continue;
            };
            let mut segments = Vec::new();
            for f in fs::read_dir(&sdir)? {
                let path = f?.path();
                if seq_of(&path).is_none() {
                    continue;
                }
                match scan_segment(&path)? {
                    Some(seg) => segments.push(seg),
                    None => {
                        let _ = fs::remove_file(&path);
                    }
                }
            }
            segments.sort_by_key(|s| s.seq);
            let bytes: u64 = segments.iter().map(|s| s.bytes).sum();
            self.total_bytes += bytes;
            let next_seq = segments.last().map_or(1, |s| s.seq + 1);
            let key = hash_name(&format!("{}\n{}", meta.name, smeta.name));
            group.streams.insert(
                smeta.name,
                Stream {
                    dir: sdir,
                    creation_ms: smeta.creation_ms,
                    function: smeta.function,
                    key,
                    last_ingest: segments.last().map(|s| s.last_ts),
                    segments,
                    file: None,
                    next_seq,
                },
            );
        }
        self.groups.insert(meta.name, group);
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    fn group_mut(&mut self, name: &str, now_ms: u64) -> io::Result<&mut Group> {
        if !self.groups.contains_key(name) {
            let dir = self.root.join(format!("g-{:016x}", hash_name(name)));
            fs::create_dir_all(&dir)?;
            let meta = GroupMeta {
                name: name.to_string(),
                creation_ms: now_ms,
                retention_days: None,
            };
            write_json_atomic(&dir.join(GROUP_FILE), &meta)?;
            self.groups.insert(
                name.to_string(),
                Group {
                    dir,
                    creation_ms: now_ms,
                    retention_days: None,
                    streams: BTreeMap::new(),
                },
            );
        }
        Ok(self.groups.get_mut(name).expect("inserted above"))
    }

    /// Appends `events` (in order) to a stream, creating its group and stream as needed.
    /// `now_ms` is their ingestion time.
    pub fn append(
        &mut self,
        group: &str,
        stream: &str,
        function: &str,
        events: &[Event],
        now_ms: u64,
    ) -> io::Result<()> {
        let segment_max = self.bounds.segment_bytes;
        let g = self.group_mut(group, now_ms)?;
        if !g.streams.contains_key(stream) {
            let dir = g.dir.join(format!("s-{:016x}", hash_name(stream)));
            fs::create_dir_all(&dir)?;
            let meta = StreamMeta {
                name: stream.to_string(),
                creation_ms: now_ms,
                function: function.to_string(),
            };
            write_json_atomic(&dir.join(STREAM_FILE), &meta)?;
            let key = hash_name(&format!("{group}\n{stream}"));
            g.streams.insert(
                stream.to_string(),
                Stream {
                    dir,
                    creation_ms: now_ms,
                    function: function.to_string(),
                    key,
                    segments: Vec::new(),
                    file: None,
                    next_seq: 1,
                    last_ingest: None,
                },
            );
        }
        let s = g.streams.get_mut(stream).expect("inserted above");
        let mut added = 0u64;
        let mut buf = Vec::new();
        for ev in events {
            let rec_len = record_len(ev, now_ms);
            let full = match (&s.file, s.segments.last()) {
                (Some(_), Some(seg)) => {
                    let pending = seg.bytes + buf.len() as u64;
                    pending > 0 && pending + rec_len as u64 > segment_max
                }
                _ => true,
            };
            if full {
                added += flush(s, &mut buf)?;
                // Begin a new segment: always when no handle is open (a segment of an earlier
                // run, or none yet), so appends never go to a file this run did not create.
                let seq = s.next_seq;
                s.next_seq += 1;
                let path = s.segment_path(seq);
                let file = OpenOptions::new().create(true).append(true).open(&path)?;
                s.file = Some(file);
                s.segments.push(Segment {
                    seq,
                    bytes: 0,
                    first_ts: ev.ts,
                    last_ts: ev.ts,
                });
            }
            let seg = s.segments.last_mut().expect("a segment is open");
            seg.last_ts = seg.last_ts.max(ev.ts);
            push_record(&mut buf, ev, now_ms);
        }
        added += flush(s, &mut buf)?;
        s.last_ingest = Some(now_ms);
        self.total_bytes += added;
        Ok(())
    }

    /// Drops segments past their age, then the oldest segments until the store fits its size
    /// bound. Returns the bytes removed.
    pub fn prune(&mut self, now_ms: u64) -> u64 {
        let before = self.total_bytes;
        let age_max = self.bounds.age_max_ms;
        for g in self.groups.values_mut() {
            let limit = g
                .retention_days
                .map_or(age_max, |d| (d as u64 * 86_400_000).min(age_max));
            let cutoff = now_ms.saturating_sub(limit);
            for s in g.streams.values_mut() {
                while s.segments.first().is_some_and(|seg| seg.last_ts < cutoff) {
                    self.total_bytes -= remove_first_segment(s);
                }
            }
        }
        while self.total_bytes > self.bounds.bytes_max {
            let oldest = self
                .groups
                .iter()
                .flat_map(|(gn, g)| {
                    g.streams
                        .iter()
                        .filter_map(move |(sn, s)| Some((s.segments.first()?.last_ts, gn, sn)))
                })
                .min()
                .map(|(_, g, s)| (g.clone(), s.clone()));
            let Some((g, s)) = oldest else { break };
            let stream = self
                .groups
                .get_mut(&g)
                .and_then(|g| g.streams.get_mut(&s))
                .expect("found above");
            self.total_bytes -= remove_first_segment(stream);
        }
        // Streams left without segments go (a later line makes them anew).
        for g in self.groups.values_mut() {
            g.streams.retain(|_, s| {
                let keep = !s.segments.is_empty();
                if !keep {
                    let _ = fs::remove_dir_all(&s.dir);
                }
                keep
            });
        }
        before - self.total_bytes
    }

    /// Deletes a group and everything in it.
    pub fn delete_group(&mut self, name: &str) -> io::Result<bool> {
        let Some(g) = self.groups.remove(name) else {
            return Ok(false);
        };
        self.total_bytes -= g.bytes();
        fs::remove_dir_all(&g.dir)?;
        Ok(true)
    }

    /// Deletes every stream function `function` wrote, and the groups left empty by it.
    pub fn delete_function(&mut self, function: &str) -> io::Result<()> {
        let mut emptied = Vec::new();
        for (name, g) in self.groups.iter_mut() {
            let before = g.streams.len();
            let mut removed = 0;
            g.streams.retain(|_, s| {
                let keep = s.function != function;
                if !keep {
                    removed += s.bytes();
                    let _ = fs::remove_dir_all(&s.dir);
                }
                keep
            });
            self.total_bytes -= removed;
            if before > 0 && g.streams.is_empty() {
                emptied.push(name.clone());
            }
        }
        for name in emptied {
            self.delete_group(&name)?;
        }
        Ok(())
    }

    pub fn set_retention(&mut self, group: &str, days: Option<u32>) -> io::Result<bool> {
        let Some(g) = self.groups.get_mut(group) else {
            return Ok(false);
        };
        g.retention_days = days;
        let meta = GroupMeta {
            name: group.to_string(),
            creation_ms: g.creation_ms,
            retention_days: days,
        };
        write_json_atomic(&g.dir.join(GROUP_FILE), &meta)?;
        Ok(true)
    }

    /// Events of a stream from `from` on, within `[start, end]` ms, at most `limit` of them and
    /// about `bytes_max` of messages. Returns them and where the next read continues.
    pub fn read_forward(
        stream: &Stream,
        from: Pos,
        start: u64,
        end: u64,
        limit: usize,
        bytes_max: usize,
    ) -> io::Result<(Vec<StoredEvent>, Pos)> {
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut next = from.max(Pos {
            seq: stream.segments.first().map_or(from.seq, |s| s.seq),
            offset: 0,
        });
        for seg in stream.segments.iter().filter(|s| s.seq >= from.seq) {
            let in_range = seg.last_ts >= start && seg.first_ts <= end;
            if in_range {
                for ev in stream.read_segment(seg.seq)? {
                    if ev.pos < from {
                        continue;
                    }
                    if out.len() >= limit || bytes >= bytes_max {
                        return Ok((out, next));
                    }
                    next = ev.next;
                    if ev.ts >= start && ev.ts <= end {
                        bytes += ev.message.len();
                        out.push(ev);
                    }
                }
            }
            next = next.max(Pos {
                seq: seg.seq,
                offset: seg.bytes,
            });
        }
        Ok((out, next.max(from)))
    }

    /// The last `limit` events of a stream before `before`, within `[start, end]` ms, oldest
    /// first; and the position of the first one returned (`before` when none).
    pub fn read_backward(
        stream: &Stream,
        before: Pos,
        start: u64,
        end: u64,
        limit: usize,
        bytes_max: usize,
    ) -> io::Result<(Vec<StoredEvent>, Pos)> {
        let mut out: Vec<StoredEvent> = Vec::new();
        let mut bytes = 0;
        'segments: for seg in stream
            .segments_in(start, end)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            if seg.seq > before.seq {
                continue;
            }
            for ev in stream.read_segment(seg.seq)?.into_iter().rev() {
                if ev.pos >= before || ev.ts < start || ev.ts > end {
                    continue;
                }
                if out.len() >= limit || bytes >= bytes_max {
                    break 'segments;
                }
                bytes += ev.message.len();
                out.push(ev);
            }
        }
        out.reverse();
        let first = out.first().map_or(before, |e| e.pos);
        Ok((out, first))
    }

    /// Every event of a stream within `[start, end]` ms (FilterLogEvents' scan).
    pub fn read_range(stream: &Stream, start: u64, end: u64) -> io::Result<Vec<StoredEvent>> {
        let mut out = Vec::new();
        for seg in stream.segments_in(start, end) {
            out.extend(
                stream
                    .read_segment(seg.seq)?
                    .into_iter()
                    .filter(|e| e.ts >= start && e.ts <= end),
            );
        }
        Ok(out)
    }

    /// Flushes nothing (appends are written at once) but makes them durable: used at shutdown.
    pub fn sync(&mut self) {
        for g in self.groups.values_mut() {
            for s in g.streams.values_mut() {
                if let Some(f) = s.file.take() {
                    let _ = f.sync_data();
                }
            }
        }
    }
}

/// Writes `buf` to the stream's open segment; returns the bytes written.
fn flush(s: &mut Stream, buf: &mut Vec<u8>) -> io::Result<u64> {
    if buf.is_empty() {
        return Ok(0);
    }
    let (Some(file), Some(seg)) = (s.file.as_mut(), s.segments.last_mut()) else {
        return Err(io::Error::other("no open segment"));
    };
    match file.write_all(buf) {
        Ok(()) => {
            seg.bytes += buf.len() as u64;
            let n = buf.len() as u64;
            buf.clear();
            Ok(n)
        }
        Err(e) => {
            // A partial write leaves a torn record: cut the file back to its last complete one
            // and start a fresh segment next time.
            let _ = file.set_len(seg.bytes);
            s.file = None;
            buf.clear();
            Err(e)
        }
    }
}

/// Removes a stream's oldest segment; returns its size.
fn remove_first_segment(s: &mut Stream) -> u64 {
    let seg = s.segments.remove(0);
    if s.segments.is_empty() {
        s.file = None;
    }
    let _ = fs::remove_file(s.segment_path(seg.seq));
    seg.bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, m: &str) -> Event {
        Event {
            ts,
            message: m.to_string(),
        }
    }

    /// The records are the bytes the formatter made before (`{ts}\t{ingest}\t`, then the
    /// message with its newlines as `\r`), at every digit count.
    #[test]
    fn records_match_the_formatted_layout() {
        let mut values = vec![0u64, 9, 10, 99, 100, 1_764_590_000_123, u64::MAX];
        values.extend((0..20).map(|p| 10u64.pow(p) - 1));
        for &ts in &values {
            for message in [
                "",
                "START RequestId: r Version: $LATEST",
                "a\nb\r\nc\n",
                "é\t✓",
            ] {
                let e = ev(ts, message);
                let ingest = ts / 3;
                let mut want = format!("{ts}\t{ingest}\t").into_bytes();
                want.extend(message.bytes().map(|b| if b == b'\n' { b'\r' } else { b }));
                want.push(b'\n');
                let mut got = b"before".to_vec();
                push_record(&mut got, &e, ingest);
                assert_eq!(&got[6..], &want[..]);
                assert_eq!(record_len(&e, ingest), want.len());
            }
        }
    }

    #[test]
    fn appends_reads_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let bounds = Bounds::new(1 << 20, u64::MAX);
        let mut s = Store::open(dir.path(), bounds).unwrap();
        s.append(
            "/aws/lambda/f",
            "a",
            "f",
            &[ev(1, "one"), ev(2, "two\tt")],
            5,
        )
        .unwrap();
        s.append("/aws/lambda/f", "a", "f", &[ev(3, "three")], 6)
            .unwrap();
        let st = &s.groups["/aws/lambda/f"].streams["a"];
        let (evs, next) =
            Store::read_forward(st, Pos::default(), 0, u64::MAX, 10, usize::MAX).unwrap();
        let msgs: Vec<_> = evs.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(msgs, ["one", "two\tt", "three"]);
        assert_eq!(next, st.end());
        let (back, first) = Store::read_backward(st, st.end(), 0, u64::MAX, 2, usize::MAX).unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[0].message, "two\tt");
        assert_eq!(first, back[0].pos);
        let total = s.total_bytes();
        drop(s);
        // A torn record at the end is cut off when the store is reopened.
        let seg = dir
            .path()
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let sdir = seg
            .read_dir()
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.is_dir())
            .unwrap();
        let file = sdir.join("0000000001.log");
        let mut f = OpenOptions::new().append(true).open(&file).unwrap();
        f.write_all(b"7\t7\ttorn").unwrap();
        let s = Store::open(dir.path(), bounds).unwrap();
        assert_eq!(s.total_bytes(), total);
        let st = &s.groups["/aws/lambda/f"].streams["a"];
        assert_eq!(st.last_ts(), Some(3));
        assert_eq!(st.function, "f");
    }

    #[test]
    fn oldest_segments_go_first_at_the_size_bound() {
        let dir = tempfile::tempdir().unwrap();
        let bounds = Bounds::new(64 * 1024, u64::MAX);
        assert_eq!(bounds.segment_bytes, SEGMENT_BYTES_MIN);
        let mut s = Store::open(dir.path(), bounds).unwrap();
        let line = "x".repeat(1000);
        for i in 0..200u64 {
            let stream = if i % 2 == 0 { "even" } else { "odd" };
            s.append("g", stream, "f", &[ev(i, &format!("{i} {line}"))], i)
                .unwrap();
            s.prune(i);
        }
        assert!(s.total_bytes() <= bounds.bytes_max);
        let g = &s.groups["g"];
        let first = g
            .streams
            .values()
            .filter_map(Stream::first_ts)
            .min()
            .unwrap();
        assert!(first > 100, "the oldest events went first: {first}");
        assert_eq!(g.streams["even"].last_ts(), Some(198));
        assert_eq!(g.streams["odd"].last_ts(), Some(199));
    }

    #[test]
    fn age_and_retention_drop_old_segments() {
        let dir = tempfile::tempdir().unwrap();
        let day = 86_400_000;
        let mut s = Store::open(dir.path(), Bounds::new(1 << 30, 30 * day)).unwrap();
        s.append("g", "old", "f", &[ev(day, "old")], day).unwrap();
        s.append("g", "new", "f", &[ev(40 * day, "new")], 40 * day)
            .unwrap();
        s.prune(40 * day);
        assert!(!s.groups["g"].streams.contains_key("old"));
        assert!(s.set_retention("g", Some(1)).unwrap());
        s.prune(42 * day);
        assert!(s.groups["g"].streams.is_empty());
    }

    #[test]
    fn deleting_a_function_removes_its_streams_and_emptied_groups() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), Bounds::new(1 << 20, u64::MAX)).unwrap();
        s.append("/aws/lambda/f", "a", "f", &[ev(1, "x")], 1)
            .unwrap();
        s.append("shared", "b", "f", &[ev(1, "x")], 1).unwrap();
        s.append("shared", "c", "g", &[ev(1, "y")], 1).unwrap();
        s.delete_function("f").unwrap();
        assert!(!s.groups.contains_key("/aws/lambda/f"));
        assert_eq!(s.groups["shared"].streams.len(), 1);
        assert_eq!(s.total_bytes(), s.groups["shared"].bytes());
    }
}
