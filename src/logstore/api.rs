//! The CloudWatch Logs API subset over the store: AWS JSON 1.1 (`POST /` with `X-Amz-Target:
//! Logs_20140328.<Operation>`), served on the User API port and answered by the log-writer
//! thread. Operations: DescribeLogGroups, DescribeLogStreams, GetLogEvents, FilterLogEvents,
//! DeleteLogGroup, PutRetentionPolicy, DeleteRetentionPolicy. Shapes and error types follow
//! botocore's `logs/2014-03-28` model; errors are JSON 1.1 (`__type`, `message`, HTTP 400).
//!
//! Limits: a page holds at most `limit` events (AWS's 10,000) and about `PAGE_BYTES_MAX` of
//! messages; FilterLogEvents reads every segment that overlaps its time range for each page.
//! Tokens: GetLogEvents `f/<position>` and `b/<position>` (a stream position, valid while the
//! segment it names is kept); FilterLogEvents the id of the last event returned (event ids sort
//! as the events do). A token that does not parse is InvalidParameterException.

use serde_json::{json, Map, Value};

use super::disk::{Pos, Store, StoredEvent, Stream};
use crate::model::types::account_id;
use crate::model::ApiAnswer;
use crate::protocols::http::{Method, Request};

/// The `X-Amz-Target` prefix of CloudWatch Logs operations.
pub const TARGET_PREFIX: &str = "Logs_20140328.";
/// AWS's largest page of events.
const EVENTS_LIMIT_MAX: i64 = 10_000;
/// About this many bytes of messages per page (AWS: 1 MB).
const PAGE_BYTES_MAX: usize = 1024 * 1024;
/// AWS's largest page of groups or streams.
const DESCRIBE_LIMIT_MAX: i64 = 50;
/// AWS's allowed `retentionInDays` values.
const RETENTION_DAYS: [u32; 22] = [
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];
const JSON_11: &str = "application/x-amz-json-1.1";

/// The operation a request names, if it is a CloudWatch Logs call.
pub fn operation(req: &Request) -> Option<&str> {
    if req.method != Method::Post || req.path() != "/" {
        return None;
    }
    req.header_str("x-amz-target")?.strip_prefix(TARGET_PREFIX)
}

/// An AWS JSON 1.1 error.
fn error(kind: &str, message: impl Into<String>) -> ApiAnswer {
    let status = if kind == "ServiceUnavailableException" {
        503
    } else {
        400
    };
    ApiAnswer {
        status,
        headers: vec![
            ("Content-Type", JSON_11.to_string()),
            ("x-amzn-ErrorType", kind.to_string()),
        ],
        body: json!({"__type": kind, "message": message.into()})
            .to_string()
            .into(),
    }
}

/// The answer when the store's thread is not running.
pub fn unavailable() -> ApiAnswer {
    error(
        "ServiceUnavailableException",
        "The log store is not running.",
    )
}

fn ok(v: Value) -> ApiAnswer {
    ApiAnswer {
        status: 200,
        headers: vec![("Content-Type", JSON_11.to_string())],
        body: v.to_string().into(),
    }
}

type Answer = Result<Value, ApiAnswer>;

fn invalid(message: impl Into<String>) -> ApiAnswer {
    error("InvalidParameterException", message)
}

fn group_not_found() -> ApiAnswer {
    error(
        "ResourceNotFoundException",
        "The specified log group does not exist.",
    )
}

fn bad_token() -> ApiAnswer {
    invalid("The specified nextToken is invalid.")
}

/// Answers one operation.
pub fn handle(store: &mut Store, operation: &str, body: &[u8], region: &str) -> ApiAnswer {
    let params = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(m)) => m,
            _ => {
                return error(
                    "SerializationException",
                    "The request body is not a JSON object.",
                )
            }
        }
    };
    let p = Params(&params);
    let result = match operation {
        "DescribeLogGroups" => describe_log_groups(store, &p, region),
        "DescribeLogStreams" => describe_log_streams(store, &p, region),
        "GetLogEvents" => get_log_events(store, &p),
        "FilterLogEvents" => filter_log_events(store, &p),
        "DeleteLogGroup" => delete_log_group(store, &p),
        "PutRetentionPolicy" => put_retention(store, &p),
        "DeleteRetentionPolicy" => delete_retention(store, &p),
        other => Err(error(
            "UnknownOperationException",
            format!("Operation {other} is not supported by this server."),
        )),
    };
    match result {
        Ok(v) => ok(v),
        Err(e) => e,
    }
}

struct Params<'a>(&'a Map<String, Value>);

impl Params<'_> {
    fn string(&self, key: &str) -> Result<Option<String>, ApiAnswer> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(format!("{key} must be a string"))),
        }
    }

    fn required(&self, key: &str) -> Result<String, ApiAnswer> {
        self.string(key)?.ok_or_else(|| {
            invalid(format!(
                "1 validation error detected: Value null at '{key}' failed to satisfy constraint: Member must not be null"
            ))
        })
    }

    fn int(&self, key: &str) -> Result<Option<i64>, ApiAnswer> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid(format!("{key} must be an integer"))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>, ApiAnswer> {
        match self.0.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| invalid(format!("{key} must be a boolean"))),
        }
    }

    fn limit(&self, max: i64) -> Result<usize, ApiAnswer> {
        match self.int("limit")? {
            None => Ok(max as usize),
            Some(n) if (1..=max).contains(&n) => Ok(n as usize),
            Some(n) => Err(invalid(format!(
                "1 validation error detected: Value '{n}' at 'limit' failed to satisfy constraint: Member must have value between 1 and {max}"
            ))),
        }
    }

    /// `logGroupName`, or `logGroupIdentifier` (a name or an ARN).
    fn group(&self) -> Result<String, ApiAnswer> {
        if let Some(name) = self.string("logGroupName")? {
            return Ok(name);
        }
        match self.string("logGroupIdentifier")? {
            Some(id) => Ok(group_from_identifier(&id)),
            None => self.required("logGroupName"),
        }
    }

    fn time_range(&self) -> Result<(u64, u64), ApiAnswer> {
        let start = self.int("startTime")?.unwrap_or(0).max(0) as u64;
        let end = self.int("endTime")?.map_or(u64::MAX, |e| e.max(0) as u64);
        Ok((start, end))
    }
}

/// `arn:aws:logs:REGION:ACCOUNT:log-group:NAME[:*]` → NAME; a plain name stays.
fn group_from_identifier(id: &str) -> String {
    match id.strip_prefix("arn:") {
        Some(_) => {
            let name = id.split_once(":log-group:").map_or(id, |(_, n)| n);
            name.strip_suffix(":*").unwrap_or(name).to_string()
        }
        None => id.to_string(),
    }
}

fn group_arn(region: &str, name: &str) -> String {
    format!("arn:aws:logs:{region}:{}:log-group:{name}", account_id())
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn describe_log_groups(store: &Store, p: &Params, region: &str) -> Answer {
    let prefix = p.string("logGroupNamePrefix")?;
    let pattern = p.string("logGroupNamePattern")?;
    if prefix.is_some() && pattern.is_some() {
        return Err(invalid(
            "LogGroup name prefix and LogGroup name pattern are mutually exclusive parameters.",
        ));
    }
    let limit = p.limit(DESCRIBE_LIMIT_MAX)?;
    let after = match p.string("nextToken")? {
        Some(t) => Some(t.strip_prefix("g/").and_then(unhex).ok_or_else(bad_token)?),
        None => None,
    };
    let pattern = pattern.map(|s| s.to_lowercase());
    let mut matching = store.groups.iter().filter(|(name, _)| {
        prefix
            .as_ref()
            .is_none_or(|pre| name.starts_with(pre.as_str()))
            && pattern
                .as_ref()
                .is_none_or(|pat| name.to_lowercase().contains(pat.as_str()))
            && after.as_ref().is_none_or(|a| name.as_str() > a.as_str())
    });
    let mut groups = Vec::new();
    let mut last = None;
    for (name, g) in matching.by_ref().take(limit) {
        let mut v = json!({
            "logGroupName": name,
            "creationTime": g.creation_ms,
            "metricFilterCount": 0,
            "arn": format!("{}:*", group_arn(region, name)),
            "logGroupArn": group_arn(region, name),
            "storedBytes": g.bytes(),
            "logGroupClass": "STANDARD",
        });
        if let Some(d) = g.retention_days {
            v["retentionInDays"] = json!(d);
        }
        groups.push(v);
        last = Some(name.clone());
    }
    let mut out = json!({ "logGroups": groups });
    if let (Some(last), Some(_)) = (last, matching.next()) {
        out["nextToken"] = json!(format!("g/{}", hex(&last)));
    }
    Ok(out)
}

fn stream_json(region: &str, group: &str, name: &str, s: &Stream) -> Value {
    let mut v = json!({
        "logStreamName": name,
        "creationTime": s.creation_ms,
        "arn": format!("{}:log-stream:{name}", group_arn(region, group)),
        "storedBytes": 0,
        "uploadSequenceToken": "1",
    });
    if let (Some(first), Some(last)) = (s.first_ts(), s.last_ts()) {
        v["firstEventTimestamp"] = json!(first);
        v["lastEventTimestamp"] = json!(last);
    }
    if let Some(i) = s.last_ingest {
        v["lastIngestionTime"] = json!(i);
    }
    v
}

fn describe_log_streams(store: &Store, p: &Params, region: &str) -> Answer {
    let group_name = p.group()?;
    let prefix = p.string("logStreamNamePrefix")?;
    let by_time = match p.string("orderBy")?.as_deref() {
        None | Some("LogStreamName") => false,
        Some("LastEventTime") => true,
        Some(other) => {
            return Err(invalid(format!(
                "1 validation error detected: Value '{other}' at 'orderBy' failed to satisfy constraint: Member must satisfy enum value set: [LastEventTime, LogStreamName]"
            )))
        }
    };
    if by_time && prefix.is_some() {
        return Err(invalid(
            "Cannot order by LastEventTime with a logStreamNamePrefix.",
        ));
    }
    let descending = p.bool("descending")?.unwrap_or(false);
    let limit = p.limit(DESCRIBE_LIMIT_MAX)?;
    let skip = match p.string("nextToken")? {
        Some(t) => t
            .strip_prefix("i/")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(bad_token)?,
        None => 0,
    };
    let group = store.groups.get(&group_name).ok_or_else(group_not_found)?;
    let mut streams: Vec<(&String, &Stream)> = group
        .streams
        .iter()
        .filter(|(n, _)| {
            prefix
                .as_ref()
                .is_none_or(|pre| n.starts_with(pre.as_str()))
        })
        .collect();
    if by_time {
        streams.sort_by_key(|(n, s)| (s.last_ts().unwrap_or(0), *n));
    }
    if descending {
        streams.reverse();
    }
    let page: Vec<Value> = streams
        .iter()
        .skip(skip)
        .take(limit)
        .map(|(n, s)| stream_json(region, &group_name, n, s))
        .collect();
    let mut out = json!({ "logStreams": page });
    if skip + limit < streams.len() {
        out["nextToken"] = json!(format!("i/{}", skip + limit));
    }
    Ok(out)
}

fn pos_token(dir: char, p: Pos) -> String {
    format!("{dir}/{:010}{:020}", p.seq, p.offset)
}

fn parse_pos_token(t: &str) -> Option<(char, Pos)> {
    let (dir, digits) = t.split_once('/')?;
    let dir = match dir {
        "f" => 'f',
        "b" => 'b',
        _ => return None,
    };
    if digits.len() != 30 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((
        dir,
        Pos {
            seq: digits[..10].parse().ok()?,
            offset: digits[10..].parse().ok()?,
        },
    ))
}

fn io_error(e: std::io::Error) -> ApiAnswer {
    error(
        "ServiceUnavailableException",
        format!("Reading the log store failed: {e}"),
    )
}

fn get_log_events(store: &Store, p: &Params) -> Answer {
    let group_name = p.group()?;
    let stream_name = p.required("logStreamName")?;
    let (start, end) = p.time_range()?;
    let limit = p.limit(EVENTS_LIMIT_MAX)?;
    let token = match p.string("nextToken")? {
        Some(t) => Some(parse_pos_token(&t).ok_or_else(bad_token)?),
        None => None,
    };
    let from_head = p.bool("startFromHead")?.unwrap_or(false);
    let group = store.groups.get(&group_name).ok_or_else(group_not_found)?;
    let stream = group.streams.get(&stream_name).ok_or_else(|| {
        error(
            "ResourceNotFoundException",
            "The specified log stream does not exist.",
        )
    })?;
    let (events, first, next) = match token {
        Some(('f', from)) => {
            let (evs, next) = Store::read_forward(stream, from, start, end, limit, PAGE_BYTES_MAX)
                .map_err(io_error)?;
            let first = evs.first().map_or(from, |e| e.pos);
            (evs, first, next)
        }
        Some((_, before)) => {
            let (evs, first) =
                Store::read_backward(stream, before, start, end, limit, PAGE_BYTES_MAX)
                    .map_err(io_error)?;
            let next = evs.last().map_or(before, |e| e.next);
            (evs, first, next)
        }
        None if from_head => {
            let from = Pos::default();
            let (evs, next) = Store::read_forward(stream, from, start, end, limit, PAGE_BYTES_MAX)
                .map_err(io_error)?;
            let first = evs.first().map_or(from, |e| e.pos);
            (evs, first, next)
        }
        None => {
            let end_pos = stream.end();
            let (evs, first) =
                Store::read_backward(stream, end_pos, start, end, limit, PAGE_BYTES_MAX)
                    .map_err(io_error)?;
            (evs, first, end_pos)
        }
    };
    let events: Vec<Value> = events
        .iter()
        .map(|e| json!({"timestamp": e.ts, "message": e.message, "ingestionTime": e.ingest}))
        .collect();
    Ok(json!({
        "events": events,
        "nextForwardToken": pos_token('f', next),
        "nextBackwardToken": pos_token('b', first),
    }))
}

/// A stored event's id: timestamp, stream and position as fixed-width digits, so ids sort in
/// the order FilterLogEvents returns events (by time, then stream, then position).
fn event_id(stream: &Stream, e: &StoredEvent) -> String {
    format!(
        "{:013}{:020}{:010}{:020}",
        e.ts, stream.key, e.pos.seq, e.pos.offset
    )
}
const EVENT_ID_LEN: usize = 63;

/// A plain-term filter pattern: every required term, one of the optional (`?`) terms when there
/// are some, and none of the excluded (`-`) terms, as case-sensitive substrings. Double quotes
/// group words into one term.
#[derive(Debug, Default, PartialEq)]
pub struct TermPattern {
    required: Vec<String>,
    optional: Vec<String>,
    excluded: Vec<String>,
}

impl TermPattern {
    pub fn parse(pattern: &str) -> Result<TermPattern, String> {
        let trimmed = pattern.trim();
        if trimmed.starts_with('{') || trimmed.starts_with('[') || trimmed.starts_with('%') {
            return Err(
                "Invalid filter pattern: this server supports plain-term patterns only (no JSON, space-delimited or regular-expression patterns)."
                    .to_string(),
            );
        }
        let mut out = TermPattern::default();
        let mut chars = trimmed.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&c) = chars.peek() else { break };
            let kind = match c {
                '?' | '-' => {
                    chars.next();
                    c
                }
                _ => ' ',
            };
            let mut term = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '"' {
                        closed = true;
                        break;
                    }
                    term.push(c);
                }
                if !closed {
                    return Err("Invalid filter pattern: unterminated quote.".to_string());
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    term.push(c);
                    chars.next();
                }
            }
            if term.is_empty() {
                continue;
            }
            match kind {
                '?' => out.optional.push(term),
                '-' => out.excluded.push(term),
                _ => out.required.push(term),
            }
        }
        Ok(out)
    }

    pub fn matches(&self, message: &str) -> bool {
        self.required.iter().all(|t| message.contains(t.as_str()))
            && (self.optional.is_empty()
                || self.optional.iter().any(|t| message.contains(t.as_str())))
            && !self.excluded.iter().any(|t| message.contains(t.as_str()))
    }
}

fn filter_log_events(store: &Store, p: &Params) -> Answer {
    let group_name = p.group()?;
    let names: Option<Vec<String>> = match p.0.get("logStreamNames") {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<_>>()
                .ok_or_else(|| invalid("logStreamNames must be strings"))?,
        ),
        Some(_) => return Err(invalid("logStreamNames must be a list")),
    };
    let prefix = p.string("logStreamNamePrefix")?;
    if names.is_some() && prefix.is_some() {
        return Err(invalid(
            "logStreamNames and logStreamNamePrefix are mutually exclusive parameters.",
        ));
    }
    let (start, end) = p.time_range()?;
    let limit = p.limit(EVENTS_LIMIT_MAX)?;
    let pattern =
        TermPattern::parse(&p.string("filterPattern")?.unwrap_or_default()).map_err(invalid)?;
    let after = match p.string("nextToken")? {
        Some(t) if t.len() == EVENT_ID_LEN && t.bytes().all(|b| b.is_ascii_digit()) => Some(t),
        Some(_) => return Err(bad_token()),
        None => None,
    };
    // The token's timestamp bounds the scan from below.
    let start = after
        .as_ref()
        .and_then(|t| t[..13].parse::<u64>().ok())
        .map_or(start, |ts| ts.max(start));
    let group = store.groups.get(&group_name).ok_or_else(group_not_found)?;
    let mut found: Vec<(String, &String, StoredEvent)> = Vec::new();
    let mut searched = Vec::new();
    for (name, stream) in &group.streams {
        let selected = names.as_ref().is_none_or(|ns| ns.contains(name))
            && prefix
                .as_ref()
                .is_none_or(|pre| name.starts_with(pre.as_str()));
        if !selected {
            continue;
        }
        searched.push(json!({"logStreamName": name, "searchedCompletely": true}));
        for e in Store::read_range(stream, start, end).map_err(io_error)? {
            let id = event_id(stream, &e);
            if after.as_ref().is_some_and(|a| id <= *a) || !pattern.matches(&e.message) {
                continue;
            }
            found.push((id, name, e));
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let mut events = Vec::new();
    let mut bytes = 0;
    let mut last_id = None;
    let total = found.len();
    for (id, name, e) in found {
        if events.len() >= limit || bytes >= PAGE_BYTES_MAX {
            break;
        }
        bytes += e.message.len();
        events.push(json!({
            "logStreamName": name,
            "timestamp": e.ts,
            "message": e.message,
            "ingestionTime": e.ingest,
            "eventId": id,
        }));
        last_id = Some(id);
    }
    let mut out = json!({"events": events, "searchedLogStreams": searched});
    if events_left(total, out["events"].as_array().map_or(0, Vec::len)) {
        out["nextToken"] = json!(last_id);
    }
    Ok(out)
}

fn events_left(total: usize, returned: usize) -> bool {
    returned < total
}

fn delete_log_group(store: &mut Store, p: &Params) -> Answer {
    let name = p.required("logGroupName")?;
    match store.delete_group(&name) {
        Ok(true) => Ok(json!({})),
        Ok(false) => Err(group_not_found()),
        Err(e) => Err(io_error(e)),
    }
}

fn put_retention(store: &mut Store, p: &Params) -> Answer {
    let name = p.required("logGroupName")?;
    let days = p.int("retentionInDays")?.ok_or_else(|| {
        invalid("1 validation error detected: Value null at 'retentionInDays' failed to satisfy constraint: Member must not be null")
    })?;
    if !RETENTION_DAYS.iter().any(|&d| d as i64 == days) {
        let allowed: Vec<String> = RETENTION_DAYS.iter().map(u32::to_string).collect();
        return Err(invalid(format!(
            "1 validation error detected: Value '{days}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        )));
    }
    match store.set_retention(&name, Some(days as u32)) {
        Ok(true) => {
            store.prune(super::lines::now_ms());
            Ok(json!({}))
        }
        Ok(false) => Err(group_not_found()),
        Err(e) => Err(io_error(e)),
    }
}

fn delete_retention(store: &mut Store, p: &Params) -> Answer {
    let name = p.required("logGroupName")?;
    match store.set_retention(&name, None) {
        Ok(true) => Ok(json!({})),
        Ok(false) => Err(group_not_found()),
        Err(e) => Err(io_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::super::disk::{Bounds, Event};
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::open(dir.path(), Bounds::new(1 << 20, u64::MAX)).unwrap();
        let events: Vec<Event> = (1..=5)
            .map(|i| Event {
                ts: i,
                message: format!("line {i}{}", if i % 2 == 0 { " ERROR" } else { "" }),
            })
            .collect();
        s.append("/aws/lambda/f", "s1", "f", &events, 10).unwrap();
        (dir, s)
    }

    fn call(s: &mut Store, op: &str, body: Value) -> (u16, Value) {
        let a = handle(s, op, body.to_string().as_bytes(), "us-east-1");
        (a.status, serde_json::from_slice(&a.body).unwrap())
    }

    #[test]
    fn get_log_events_pages_both_ways() {
        let (_d, mut s) = store();
        let (st, v) = call(
            &mut s,
            "GetLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "logStreamName": "s1", "limit": 2}),
        );
        assert_eq!(st, 200);
        let msgs: Vec<&str> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["message"].as_str().unwrap())
            .collect();
        assert_eq!(msgs, ["line 4 ERROR", "line 5"]);
        let back = v["nextBackwardToken"].as_str().unwrap().to_string();
        let fwd = v["nextForwardToken"].as_str().unwrap().to_string();
        let (_, v) = call(
            &mut s,
            "GetLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "logStreamName": "s1", "limit": 2, "nextToken": back}),
        );
        assert_eq!(v["events"][0]["message"], "line 2 ERROR");
        // At the end, the forward token comes back unchanged.
        let (_, v) = call(
            &mut s,
            "GetLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "logStreamName": "s1", "nextToken": fwd}),
        );
        assert_eq!(v["events"].as_array().unwrap().len(), 0);
        assert_eq!(v["nextForwardToken"], fwd);
        let (st, v) = call(
            &mut s,
            "GetLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "logStreamName": "s1", "nextToken": "bogus"}),
        );
        assert_eq!(st, 400);
        assert_eq!(v["__type"], "InvalidParameterException");
        let (st, v) = call(
            &mut s,
            "GetLogEvents",
            json!({"logGroupName": "/aws/lambda/nope", "logStreamName": "s1"}),
        );
        assert_eq!(st, 400);
        assert_eq!(v["__type"], "ResourceNotFoundException");
    }

    #[test]
    fn filter_by_terms_time_and_token() {
        let (_d, mut s) = store();
        let (_, v) = call(
            &mut s,
            "FilterLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "filterPattern": "ERROR", "limit": 1}),
        );
        assert_eq!(v["events"][0]["message"], "line 2 ERROR");
        let token = v["nextToken"].as_str().unwrap().to_string();
        let (_, v) = call(
            &mut s,
            "FilterLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "filterPattern": "ERROR", "nextToken": token}),
        );
        assert_eq!(v["events"][0]["message"], "line 4 ERROR");
        assert!(v.get("nextToken").is_none());
        let (_, v) = call(
            &mut s,
            "FilterLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "startTime": 2, "endTime": 3, "filterPattern": "-ERROR"}),
        );
        assert_eq!(v["events"].as_array().unwrap().len(), 1);
        assert_eq!(v["events"][0]["message"], "line 3");
        let (st, _) = call(
            &mut s,
            "FilterLogEvents",
            json!({"logGroupName": "/aws/lambda/f", "filterPattern": "{ $.level = \"ERROR\" }"}),
        );
        assert_eq!(st, 400);
    }

    #[test]
    fn term_patterns() {
        let p = TermPattern::parse(r#"?ERROR ?WARN -"health check""#).unwrap();
        assert!(p.matches("WARN disk"));
        assert!(!p.matches("INFO"));
        assert!(!p.matches("ERROR in health check"));
        assert!(TermPattern::parse("").unwrap().matches("anything"));
    }

    #[test]
    fn groups_streams_retention_and_delete() {
        let (_d, mut s) = store();
        let (_, v) = call(
            &mut s,
            "DescribeLogGroups",
            json!({"logGroupNamePrefix": "/aws/lambda/"}),
        );
        assert_eq!(v["logGroups"][0]["logGroupName"], "/aws/lambda/f");
        let (_, v) = call(
            &mut s,
            "DescribeLogStreams",
            json!({"logGroupName": "/aws/lambda/f"}),
        );
        assert_eq!(v["logStreams"][0]["logStreamName"], "s1");
        assert_eq!(v["logStreams"][0]["lastEventTimestamp"], 5);
        let (st, _) = call(
            &mut s,
            "PutRetentionPolicy",
            json!({"logGroupName": "/aws/lambda/f", "retentionInDays": 2}),
        );
        assert_eq!(st, 400);
        let (st, _) = call(
            &mut s,
            "PutRetentionPolicy",
            json!({"logGroupName": "/aws/lambda/f", "retentionInDays": 3653}),
        );
        assert_eq!(st, 200);
        let (_, v) = call(&mut s, "DescribeLogGroups", json!({}));
        assert_eq!(v["logGroups"][0]["retentionInDays"], 3653);
        let (st, _) = call(
            &mut s,
            "DeleteLogGroup",
            json!({"logGroupName": "/aws/lambda/f"}),
        );
        assert_eq!(st, 200);
        let (st, v) = call(
            &mut s,
            "DeleteLogGroup",
            json!({"logGroupName": "/aws/lambda/f"}),
        );
        assert_eq!(
            (st, v["__type"].as_str()),
            (400, Some("ResourceNotFoundException"))
        );
    }
}
