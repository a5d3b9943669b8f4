//! Hand-rolled HTTP/1.1 codec (RFC 9112) on top of `httparse`: the data plane's request decoder,
//! response head encoder, and a small client-side response decoder for the load generator and tests.
//!
//! Owns no socket: one `Decoder` per connection turns bytes of a `BytesMut` into `Request`s, on the
//! core thread that owns the connection. Invariants: a request's head and Content-Length body are split
//! off the read buffer without copying; a chunked body is de-chunked in place (one `memmove`, no new
//! allocation); every size is bounded by `Limits` and exceeding a limit is reported as soon as it is
//! known, before the bytes are buffered. Partial input is `Ok(None)`, never an error. Any error means
//! the connection must answer `err.status()` and close, because framing is lost.

use std::cell::Cell;
use std::mem::MaybeUninit;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes, BytesMut};

/// Largest request head (request line, headers, final empty line) we buffer.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// Most header fields in one head (and in one trailer section). The parser's slots live on the
/// stack, so this is also the hard cap for `Limits::headers_count_max`.
pub const HEADERS_COUNT_MAX: usize = 64;
/// Largest request body: AWS's 6 MB synchronous payload plus room for framing overhead.
pub const BODY_BYTES_MAX: usize = 6 * 1024 * 1024 + 64 * 1024;
/// Longest chunk-size line (size plus ignored extensions); bounds the scan for its end.
pub const CHUNK_LINE_BYTES_MAX: usize = 4 * 1024;
/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_BYTES: usize = 29;

/// Per-connection bounds on what a peer may make us buffer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of the whole request head, including the final empty line.
    pub header_bytes_max: usize,
    /// Header fields per head or trailer section; values above `HEADERS_COUNT_MAX` are clamped.
    pub headers_count_max: usize,
    /// Bytes of the (de-chunked) body.
    pub body_bytes_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes_max: HEADER_BYTES_MAX,
            headers_count_max: HEADERS_COUNT_MAX,
            body_bytes_max: BODY_BYTES_MAX,
        }
    }
}

impl Limits {
    fn header_slots(&self) -> usize {
        self.headers_count_max.min(HEADERS_COUNT_MAX)
    }
}

/// Why a message could not be decoded. Every variant ends the connection.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("request header section too large")]
    HeaderTooLarge,
    #[error("too many header fields")]
    TooManyHeaders,
    #[error("body too large")]
    BodyTooLarge,
    #[error("malformed message: {0}")]
    Malformed(&'static str),
    #[error("bad chunked encoding: {0}")]
    BadChunk(&'static str),
    #[error("unsupported transfer-encoding")]
    UnsupportedTransferEncoding,
}

impl HttpError {
    /// The status code a server answers this error with before closing.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeaderTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::Malformed(_) | HttpError::BadChunk(_) => 400,
            HttpError::UnsupportedTransferEncoding => 501,
        }
    }

    /// A human-readable explanation, suitable for an error body.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

fn from_httparse(err: httparse::Error) -> HttpError {
    match err {
        httparse::Error::TooManyHeaders => HttpError::TooManyHeaders,
        httparse::Error::Version => HttpError::Malformed("unsupported HTTP version"),
        httparse::Error::Token => HttpError::Malformed("invalid token in request line"),
        httparse::Error::HeaderName => HttpError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HttpError::Malformed("invalid header value"),
        httparse::Error::NewLine => HttpError::Malformed("invalid line ending"),
        httparse::Error::Status => HttpError::Malformed("invalid status code"),
    }
}

/// Request methods the server routes on; anything else is `Other` (see `Request::method_str`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Delete,
    Patch,
    Options,
    Other,
}

impl Method {
    fn from_token(token: &str) -> Method {
        match token {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "OPTIONS" => Method::Options,
            _ => Method::Other,
        }
    }
}

/// A byte range inside a request head. `u32` keeps `Request` small; heads are far below 4 GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of(from: usize, len: usize) -> Span {
        // Heads are bounded by `header_bytes_max`, which `decode_head` checks fits in u32.
        Span {
            start: from as u32,
            end: (from + len) as u32,
        }
    }

    fn slice(self, bytes: &[u8]) -> &[u8] {
        bytes
            .get(self.start as usize..self.end as usize)
            .unwrap_or_default()
    }

    fn str(self, bytes: &[u8]) -> &str {
        // Spans only cover parts httparse validated as ASCII tokens or UTF-8 targets.
        std::str::from_utf8(self.slice(bytes)).unwrap_or_default()
    }
}

/// One decoded request. The head stays in its original bytes; accessors slice into it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The raw request head (request line through the final empty line), frozen.
    head: Bytes,
    /// The method token, kept for `Method::Other`.
    method_span: Span,
    /// The target without the query string.
    path_span: Span,
    /// The query string after `?`, if the target had one.
    query_span: Option<Span>,
    /// Offset of the first header line in `head`.
    headers_start: u32,
    /// Trailer fields of a chunked body; empty (no allocation) otherwise.
    trailers: Vec<(String, Vec<u8>)>,
    pub method: Method,
    /// The body, de-chunked if it was chunked; empty if there was none.
    pub body: Bytes,
    /// Whether the connection may carry another request after this one's response.
    pub keep_alive: bool,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
}

impl Request {
    /// The method exactly as sent.
    pub fn method_str(&self) -> &str {
        self.method_span.str(&self.head)
    }

    /// The request target without the query string, raw (not percent-decoded).
    pub fn path(&self) -> &str {
        self.path_span.str(&self.head)
    }

    /// The raw query string after `?`, if any.
    pub fn query(&self) -> Option<&str> {
        self.query_span.map(|span| span.str(&self.head))
    }

    /// The percent-decoded (`+` as space) value of the first query parameter named `name`.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let query = self.query()?;
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let matches = if key.contains(['%', '+']) {
                percent_decode(key) == name
            } else {
                key == name
            };
            matches.then(|| percent_decode(value))
        })
    }

    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// `header`, if its value is valid UTF-8, trimmed.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        let value = std::str::from_utf8(self.header(name)?).ok()?;
        Some(value.trim())
    }

    /// All header fields in order, values without surrounding whitespace.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        HeaderLines {
            rest: self
                .head
                .get(self.headers_start as usize..)
                .unwrap_or_default(),
        }
    }

    /// Trailer fields of a chunked body (may be empty).
    pub fn trailers(&self) -> &[(String, Vec<u8>)] {
        &self.trailers
    }
}

/// Re-lexes header lines of a head httparse already validated, so `Request` needs no header table.
struct HeaderLines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for HeaderLines<'a> {
    type Item = (&'a str, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let newline = self.rest.iter().position(|&b| b == b'\n')?;
        let line = &self.rest[..newline];
        self.rest = &self.rest[newline + 1..];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.rest = &[];
            return None;
        }
        let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
        let name = std::str::from_utf8(&line[..colon]).unwrap_or_default();
        let value = line.get(colon + 1..).unwrap_or_default();
        Some((name, trim_ows(value)))
    }
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes `application/x-www-form-urlencoded` text; invalid escapes are kept literally.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes[i..] {
            [b'%', hi, lo, ..] => hex_value(hi).zip(hex_value(lo)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, byte) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Finds the end of a header section: the index just past the first `\n\r\n` or `\n\n` at or
/// after `from`. httparse stays the authority on validity; this only avoids re-parsing a head on
/// every read, which would make a slow client cost quadratic time.
fn find_section_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while let Some(offset) = buf.get(at..)?.iter().position(|&b| b == b'\n') {
        let newline = at + offset;
        match buf.get(newline + 1..newline + 3) {
            Some([b'\n', _]) => return Some(newline + 2),
            Some(b"\r\n") => return Some(newline + 3),
            None if buf.get(newline + 1) == Some(&b'\n') => return Some(newline + 2),
            _ => at = newline + 1,
        }
    }
    None
}

/// Where the next scan for a section end must restart so a terminator split across reads is found.
fn rescan_from(len: usize) -> usize {
    len.saturating_sub(2)
}

/// Comma-separated list elements of a field value, trimmed, empty elements skipped (RFC 9110 5.6.1).
fn list_elements(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &d| {
        acc.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

/// How the body of a message is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// What the head's header fields say about framing and connection reuse.
#[derive(Default)]
struct FieldFacts {
    content_length: Option<u64>,
    transfer_encoding: bool,
    chunked_count: u32,
    other_coding: bool,
    close: bool,
    keep_alive: bool,
    expect_continue: bool,
}

impl FieldFacts {
    fn gather(headers: &[httparse::Header<'_>]) -> Result<FieldFacts, HttpError> {
        let mut facts = FieldFacts::default();
        for header in headers {
            let name = header.name;
            if name.eq_ignore_ascii_case("content-length") {
                facts.add_content_length(header.value)?;
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                facts.add_transfer_encoding(header.value);
            } else if name.eq_ignore_ascii_case("connection") {
                for token in list_elements(header.value) {
                    facts.close |= token.eq_ignore_ascii_case(b"close");
                    facts.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
            } else if name.eq_ignore_ascii_case("expect") {
                facts.expect_continue |= header.value.eq_ignore_ascii_case(b"100-continue");
            }
        }
        Ok(facts)
    }

    /// Repeated or listed Content-Length values are accepted only if they all agree (RFC 9112 6.3).
    fn add_content_length(&mut self, value: &[u8]) -> Result<(), HttpError> {
        let mut any = false;
        for element in value.split(|&b| b == b',').map(trim_ows) {
            let length =
                parse_decimal(element).ok_or(HttpError::Malformed("invalid Content-Length"))?;
            if self.content_length.is_some_and(|seen| seen != length) {
                return Err(HttpError::Malformed("conflicting Content-Length"));
            }
            self.content_length = Some(length);
            any = true;
        }
        if !any {
            return Err(HttpError::Malformed("invalid Content-Length"));
        }
        Ok(())
    }

    fn add_transfer_encoding(&mut self, value: &[u8]) {
        self.transfer_encoding = true;
        for coding in list_elements(value) {
            if coding.eq_ignore_ascii_case(b"chunked") {
                self.chunked_count += 1;
            } else {
                self.other_coding = true;
            }
        }
    }

    /// Body framing; Transfer-Encoding wins over Content-Length (RFC 9112 6.3).
    fn framing(&self) -> Result<Option<Framing>, HttpError> {
        if !self.transfer_encoding {
            return Ok(self.content_length.map(Framing::Length));
        }
        if self.other_coding {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        if self.chunked_count != 1 {
            return Err(HttpError::Malformed("invalid Transfer-Encoding"));
        }
        Ok(Some(Framing::Chunked))
    }

    /// Persistence per RFC 9112 9.3. A request with both Transfer-Encoding and Content-Length, or
    /// Transfer-Encoding in HTTP/1.0, may be a smuggling attempt: serve it, then close.
    fn keep_alive(&self, version_minor: u8) -> bool {
        let suspicious_framing =
            self.transfer_encoding && (self.content_length.is_some() || version_minor == 0);
        let persistent = match version_minor {
            0 => self.keep_alive && !self.close,
            _ => !self.close,
        };
        persistent && !suspicious_framing
    }
}

/// What the next `ChunkedBody::step` expects at `read`.
#[derive(Clone, Copy, Debug)]
enum ChunkState {
    /// A chunk-size line.
    Size,
    /// `remaining` bytes of chunk data.
    Data { remaining: usize },
    /// The CRLF closing a chunk's data.
    DataEnd,
    /// The trailer section; `scanned` bytes after `read` held no section end.
    Trailers { scanned: usize },
}

enum Step {
    Continue,
    NeedMore,
    /// The whole chunked body ends at this offset of the buffer.
    Done(usize),
}

/// Incremental, in-place de-chunker. The buffer starts at the body; de-chunked data is compacted
/// to `buf[..written]` while `buf[read..]` is wire data not yet consumed, so the buffer never
/// holds much more than the decoded body and no chunk is parsed twice.
#[derive(Debug)]
struct ChunkedBody {
    state: ChunkState,
    read: usize,
    written: usize,
    trailers: Vec<(String, Vec<u8>)>,
}

type ChunkedOutput = (Bytes, Vec<(String, Vec<u8>)>);

impl ChunkedBody {
    fn new() -> ChunkedBody {
        ChunkedBody {
            state: ChunkState::Size,
            read: 0,
            written: 0,
            trailers: Vec::new(),
        }
    }

    fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<ChunkedOutput>, HttpError> {
        loop {
            let step = match self.state {
                ChunkState::Size => self.size_line(buf, limits)?,
                ChunkState::Data { remaining } => self.data(buf, remaining),
                ChunkState::DataEnd => self.data_end(buf)?,
                ChunkState::Trailers { scanned } => self.trailer_section(buf, scanned, limits)?,
            };
            match step {
                Step::Continue => {}
                Step::NeedMore => {
                    self.compact(buf);
                    return Ok(None);
                }
                Step::Done(end) => {
                    let mut body = buf.split_to(end);
                    body.truncate(self.written);
                    return Ok(Some((body.freeze(), std::mem::take(&mut self.trailers))));
                }
            }
        }
    }

    /// Moves unconsumed wire bytes down to the end of the decoded data; they are at most a
    /// partial size line or trailer section, since chunk data is moved as soon as it arrives.
    fn compact(&mut self, buf: &mut BytesMut) {
        if self.read > self.written {
            let pending = buf.len() - self.read;
            buf.copy_within(self.read.., self.written);
            buf.truncate(self.written + pending);
            self.read = self.written;
        }
    }

    /// Bytes still needed for the current chunk, if the decoder is inside one.
    fn bytes_needed(&self) -> Option<usize> {
        match self.state {
            ChunkState::Data { remaining } => Some(remaining + 2),
            _ => None,
        }
    }

    fn size_line(&mut self, buf: &[u8], limits: &Limits) -> Result<Step, HttpError> {
        let pending = &buf[self.read..];
        let scan = &pending[..pending.len().min(CHUNK_LINE_BYTES_MAX + 1)];
        let Some(newline) = scan.iter().position(|&b| b == b'\n') else {
            if scan.len() > CHUNK_LINE_BYTES_MAX {
                return Err(HttpError::BadChunk("chunk size line too long"));
            }
            return Ok(Step::NeedMore);
        };
        let line = pending[..newline]
            .strip_suffix(b"\r")
            .ok_or(HttpError::BadChunk("chunk size line not ended by CRLF"))?;
        let size = parse_chunk_size(line)?;
        self.read += newline + 1;
        if size == 0 {
            self.state = ChunkState::Trailers { scanned: 0 };
            return Ok(Step::Continue);
        }
        if size > limits.body_bytes_max.saturating_sub(self.written) {
            return Err(HttpError::BodyTooLarge);
        }
        self.state = ChunkState::Data { remaining: size };
        Ok(Step::Continue)
    }

    fn data(&mut self, buf: &mut [u8], remaining: usize) -> Step {
        let available = remaining.min(buf.len() - self.read);
        if available == 0 {
            return Step::NeedMore;
        }
        buf.copy_within(self.read..self.read + available, self.written);
        self.read += available;
        self.written += available;
        self.state = match remaining - available {
            0 => ChunkState::DataEnd,
            remaining => ChunkState::Data { remaining },
        };
        Step::Continue
    }

    fn data_end(&mut self, buf: &[u8]) -> Result<Step, HttpError> {
        match buf.get(self.read..self.read + 2) {
            None if buf.get(self.read).is_none_or(|&b| b == b'\r') => Ok(Step::NeedMore),
            Some(b"\r\n") => {
                self.read += 2;
                self.state = ChunkState::Size;
                Ok(Step::Continue)
            }
            _ => Err(HttpError::BadChunk("chunk data not followed by CRLF")),
        }
    }

    fn trailer_section(
        &mut self,
        buf: &[u8],
        scanned: usize,
        limits: &Limits,
    ) -> Result<Step, HttpError> {
        let pending = &buf[self.read..];
        match pending {
            [] | [b'\r'] => return Ok(Step::NeedMore),
            [b'\r', b'\n', ..] => return Ok(Step::Done(self.read + 2)),
            _ => {}
        }
        let window = &pending[..pending.len().min(limits.header_bytes_max)];
        let Some(end) = find_section_end(window, scanned) else {
            if pending.len() > limits.header_bytes_max {
                return Err(HttpError::HeaderTooLarge);
            }
            self.state = ChunkState::Trailers {
                scanned: rescan_from(pending.len()),
            };
            return Ok(Step::NeedMore);
        };
        let mut slots = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let slots = &mut slots[..limits.header_slots()];
        match httparse::parse_headers(&pending[..end], slots) {
            Ok(httparse::Status::Complete((used, fields))) => {
                self.trailers = owned_fields(fields);
                Ok(Step::Done(self.read + used))
            }
            Ok(httparse::Status::Partial) => Err(HttpError::BadChunk("invalid trailer section")),
            Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
            Err(_) => Err(HttpError::BadChunk("invalid trailer field")),
        }
    }
}

/// Parses `1*HEXDIG [ BWS ";" chunk-ext ]`; extensions are ignored (RFC 9112 7.1.1).
fn parse_chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::BadChunk("missing chunk size"));
    }
    // 15 hex digits exceed any body limit yet cannot overflow a u64.
    if digits > 15 {
        return Err(HttpError::BodyTooLarge);
    }
    let rest = trim_ows(&line[digits..]);
    if !rest.is_empty() && rest[0] != b';' {
        return Err(HttpError::BadChunk("invalid chunk size"));
    }
    let size = line[..digits]
        .iter()
        .filter_map(|&b| hex_value(b))
        .fold(0u64, |acc, d| acc << 4 | u64::from(d));
    usize::try_from(size).map_err(|_| HttpError::BodyTooLarge)
}

fn owned_fields(fields: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    fields
        .iter()
        .map(|f| (f.name.to_owned(), f.value.to_vec()))
        .collect()
}

/// The body decoder of a request whose head has been parsed.
#[derive(Debug)]
enum BodyDecoder {
    Length(usize),
    Chunked(ChunkedBody),
}

impl BodyDecoder {
    fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
    ) -> Result<Option<ChunkedOutput>, HttpError> {
        match self {
            BodyDecoder::Length(0) => Ok(Some((Bytes::new(), Vec::new()))),
            BodyDecoder::Length(length) if buf.len() >= *length => {
                Ok(Some((buf.split_to(*length).freeze(), Vec::new())))
            }
            BodyDecoder::Length(_) => Ok(None),
            BodyDecoder::Chunked(chunked) => chunked.decode(buf, limits),
        }
    }

    fn bytes_needed(&self, buffered: usize) -> Option<usize> {
        match self {
            BodyDecoder::Length(length) => Some(length.saturating_sub(buffered)),
            BodyDecoder::Chunked(chunked) => chunked.bytes_needed(),
        }
    }
}

fn body_decoder(framing: Option<Framing>, limits: &Limits) -> Result<BodyDecoder, HttpError> {
    match framing {
        None => Ok(BodyDecoder::Length(0)),
        Some(Framing::Chunked) => Ok(BodyDecoder::Chunked(ChunkedBody::new())),
        Some(Framing::Length(length)) => usize::try_from(length)
            .ok()
            .filter(|&length| length <= limits.body_bytes_max)
            .map(BodyDecoder::Length)
            .ok_or(HttpError::BodyTooLarge),
    }
}

/// A parsed request head waiting for its body.
#[derive(Debug)]
struct PendingRequest {
    head: Bytes,
    method: Method,
    method_span: Span,
    path_span: Span,
    query_span: Option<Span>,
    headers_start: u32,
    version_minor: u8,
    keep_alive: bool,
    /// Still owed a `100 Continue` if the body does not arrive with the head.
    expect_continue: bool,
    body: BodyDecoder,
}

impl PendingRequest {
    fn into_request(self, body: Bytes, trailers: Vec<(String, Vec<u8>)>) -> Request {
        Request {
            head: self.head,
            method_span: self.method_span,
            path_span: self.path_span,
            query_span: self.query_span,
            headers_start: self.headers_start,
            trailers,
            method: self.method,
            body,
            keep_alive: self.keep_alive,
            version_minor: self.version_minor,
        }
    }
}

#[derive(Debug)]
enum DecodeState {
    /// Waiting for a complete head. `None` until httparse first saw a partial head; then the
    /// number of bytes of the buffer known to hold no head end.
    Head {
        scanned: Option<usize>,
    },
    Body(PendingRequest),
}

/// Incremental request decoder; one per connection. Remembers how far it got so a large body is
/// not re-parsed.
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    state: DecodeState,
    /// Set when the caller should write `100 Continue`; cleared by `take_continue`.
    continue_ready: bool,
    /// Hint computed at the end of the last `decode`.
    needed: Option<usize>,
}

impl Decoder {
    pub fn new(limits: Limits) -> Self {
        Decoder {
            limits,
            state: DecodeState::Head { scanned: None },
            continue_ready: false,
            needed: None,
        }
    }

    /// Ok(Some(req)) when a whole request (head + body) is in `buf` (it is split off `buf`;
    /// pipelined bytes after it stay in buf); Ok(None) when more bytes are needed; Err on bad input
    /// (the connection should answer `err.status()` and close).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, HttpError> {
        self.needed = None;
        if let DecodeState::Head { scanned } = self.state {
            match self.decode_head(buf, scanned)? {
                Some(pending) => self.state = DecodeState::Body(pending),
                None => return Ok(None),
            }
        }
        let DecodeState::Body(pending) = &mut self.state else {
            return Ok(None);
        };
        match pending.body.decode(buf, &self.limits)? {
            Some((body, trailers)) => {
                let state = std::mem::replace(&mut self.state, DecodeState::Head { scanned: None });
                match state {
                    DecodeState::Body(pending) => Ok(Some(pending.into_request(body, trailers))),
                    DecodeState::Head { .. } => Ok(None),
                }
            }
            None => {
                self.continue_ready |= std::mem::take(&mut pending.expect_continue);
                self.needed = pending.body.bytes_needed(buf.len());
                Ok(None)
            }
        }
    }

    /// True exactly once per request when the head was parsed, it had `Expect: 100-continue`, and
    /// the body is not complete yet: the caller then writes `HTTP/1.1 100 Continue\r\n\r\n`.
    pub fn take_continue(&mut self) -> bool {
        std::mem::take(&mut self.continue_ready)
    }

    /// A hint of how many more bytes the current request needs (for buffer reservation), if known.
    pub fn bytes_needed(&self) -> Option<usize> {
        self.needed
    }

    fn decode_head(
        &mut self,
        buf: &mut BytesMut,
        scanned: Option<usize>,
    ) -> Result<Option<PendingRequest>, HttpError> {
        skip_empty_lines(buf);
        // A head ending past the limit is an error however it ends, so never look beyond it.
        let window = &buf[..buf.len().min(self.limits.header_bytes_max)];
        // The first attempt goes straight to httparse, since a head usually arrives in one read.
        // Later attempts wait until a cheap scan sees a head end, so a client trickling its head
        // costs linear time, not quadratic.
        let ready = scanned.is_none_or(|from| find_section_end(window, from).is_some());
        let parsed = match ready {
            true => parse_request_head(window, &self.limits)?,
            false => None,
        };
        let Some((end, mut pending)) = parsed else {
            if buf.len() > self.limits.header_bytes_max {
                return Err(HttpError::HeaderTooLarge);
            }
            self.state = DecodeState::Head {
                scanned: Some(rescan_from(buf.len())),
            };
            return Ok(None);
        };
        pending.head = buf.split_to(end).freeze();
        Ok(Some(pending))
    }
}

/// RFC 9112 2.2: a server SHOULD ignore empty lines received before the request line.
fn skip_empty_lines(buf: &mut BytesMut) {
    loop {
        match buf[..] {
            [b'\r', b'\n', ..] => buf.advance(2),
            [b'\n', ..] => buf.advance(1),
            _ => return,
        }
    }
}

/// Parses the head at the start of `window` into its length and everything but its bytes;
/// `Ok(None)` if the head is not complete yet.
fn parse_request_head(
    window: &[u8],
    limits: &Limits,
) -> Result<Option<(usize, PendingRequest)>, HttpError> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; HEADERS_COUNT_MAX];
    let mut parsed = httparse::Request::new(&mut []);
    let status = parsed
        .parse_with_uninit_headers(window, &mut slots[..limits.header_slots()])
        .map_err(from_httparse)?;
    let httparse::Status::Complete(end) = status else {
        return Ok(None);
    };
    if u32::try_from(end).is_err() {
        return Err(HttpError::HeaderTooLarge);
    }
    let head = &window[..end];
    let (Some(method), Some(target), Some(version_minor)) =
        (parsed.method, parsed.path, parsed.version)
    else {
        return Err(HttpError::Malformed("incomplete request line"));
    };
    let facts = FieldFacts::gather(parsed.headers)?;
    let body = body_decoder(facts.framing()?, limits)?;

    let offset = |part: &str| part.as_ptr() as usize - head.as_ptr() as usize;
    let target_start = offset(target);
    let (path_span, query_span) = match target.split_once('?') {
        Some((path, query)) => (
            Span::of(target_start, path.len()),
            Some(Span::of(offset(query), query.len())),
        ),
        None => (Span::of(target_start, target.len()), None),
    };
    let target_end = target_start + target.len();
    let request_line_end = head[target_end..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(head.len(), |n| target_end + n + 1);
    let pending = PendingRequest {
        head: Bytes::new(),
        method: Method::from_token(method),
        method_span: Span::of(offset(method), method.len()),
        path_span,
        query_span,
        headers_start: request_line_end as u32,
        version_minor,
        keep_alive: facts.keep_alive(version_minor),
        // RFC 9110 10.1.1: an HTTP/1.0 client's 100-continue expectation is ignored.
        expect_continue: facts.expect_continue && version_minor >= 1,
        body,
    };
    Ok(Some((end, pending)))
}

/// The reason phrase for a status code (RFC 9110 15), empty for unknown codes.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

/// An IMF-fixdate, as cached for the current second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateString([u8; DATE_BYTES]);

impl DateString {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII: it is written only from httpdate's output.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

thread_local! {
    /// The `Date` value and the Unix second it was made for; per thread, so no locking.
    static DATE_CACHE: Cell<(u64, DateString)> =
        const { Cell::new((u64::MAX, DateString([b' '; DATE_BYTES]))) };
}

/// The `Date` header value for now, regenerated at most once per second per thread.
pub fn http_date() -> DateString {
    let now = SystemTime::now();
    let second = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    DATE_CACHE.with(|cache| {
        let (cached_second, date) = cache.get();
        if cached_second == second {
            return date;
        }
        let formatted = httpdate::fmt_http_date(now);
        let mut fresh = DateString([b' '; DATE_BYTES]);
        if formatted.len() == DATE_BYTES {
            fresh.0.copy_from_slice(formatted.as_bytes());
        }
        cache.set((second, fresh));
        fresh
    })
}

fn push_decimal(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends a header line. CR and LF become spaces so no value can split the message.
fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    for part in [name, ": ", value] {
        let start = out.len();
        out.extend_from_slice(part.as_bytes());
        for byte in &mut out[start..] {
            if *byte == b'\r' || *byte == b'\n' {
                *byte = b' ';
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// RFC 9110 8.6: no Content-Length in 1xx and 204 responses; a 304's would describe another
/// representation, which the callers never know, so it is left out too.
fn status_has_content_length(status: u16) -> bool {
    !(status < 200 || status == 204 || status == 304)
}

/// Appends a response head: status line with reason phrase, `Date` (cached per thread),
/// `Content-Length`, `Connection: close` when `!keep_alive`, then `headers`, then the blank line.
/// The caller writes the body separately (zero copy). An HTTP/1.0 keep-alive client needs
/// `("Connection", "keep-alive")` in `headers`.
pub fn write_response_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    content_length: usize,
    keep_alive: bool,
) {
    debug_assert!(
        (100..=999).contains(&status),
        "status {status} is not three digits"
    );
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(http_date().as_bytes());
    out.extend_from_slice(b"\r\n");
    if status_has_content_length(status) {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, content_length);
        out.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    for (name, value) in headers {
        push_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Client side: appends a request head with `Host` and `Content-Length` (left out for a bodiless
/// GET or HEAD, as RFC 9110 8.6 asks), then `headers`, then the blank line.
pub fn write_request_head(
    out: &mut Vec<u8>,
    method: &str,
    target: &str,
    host: &str,
    headers: &[(&str, &str)],
    content_length: usize,
) {
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    push_field(out, "Host", host);
    if content_length > 0 || !(method == "GET" || method == "HEAD") {
        out.extend_from_slice(b"Content-Length: ");
        push_decimal(out, content_length);
        out.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        push_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// One decoded response (client side).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

impl Response {
    /// The value of the first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    /// `header`, if its value is valid UTF-8, trimmed.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        std::str::from_utf8(self.header(name)?).ok().map(str::trim)
    }
}

#[derive(Debug)]
enum ResponseBody {
    Length(usize),
    Chunked(ChunkedBody),
    UntilClose,
}

#[derive(Debug)]
enum ResponseState {
    Head {
        scanned: usize,
    },
    Body {
        status: u16,
        headers: Vec<(String, Vec<u8>)>,
        body: ResponseBody,
    },
}

/// Client-side incremental response decoder: Content-Length, chunked, or no body for
/// 1xx/204/304/HEAD responses; a body delimited by close is returned by `decode_eof`.
#[derive(Debug)]
pub struct ResponseDecoder {
    limits: Limits,
    state: ResponseState,
}

impl ResponseDecoder {
    pub fn new(body_bytes_max: usize) -> Self {
        ResponseDecoder {
            limits: Limits {
                body_bytes_max,
                ..Limits::default()
            },
            state: ResponseState::Head { scanned: 0 },
        }
    }

    /// Ok(Some(resp)) when a whole response is in `buf` (split off it); Ok(None) when more bytes
    /// are needed. `head_request` says the response answers a HEAD request, so it has no body.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        head_request: bool,
    ) -> Result<Option<Response>, HttpError> {
        if let ResponseState::Head { scanned } = self.state {
            let window = &buf[..buf.len().min(self.limits.header_bytes_max)];
            let Some(end) = find_section_end(window, scanned) else {
                if buf.len() > self.limits.header_bytes_max {
                    return Err(HttpError::HeaderTooLarge);
                }
                self.state = ResponseState::Head {
                    scanned: rescan_from(buf.len()),
                };
                return Ok(None);
            };
            self.state = self.parse_head(&buf[..end], head_request)?;
            buf.advance(end);
        }
        let ResponseState::Body { body, .. } = &mut self.state else {
            return Ok(None);
        };
        let decoded = match body {
            ResponseBody::Length(length) if buf.len() >= *length => buf.split_to(*length).freeze(),
            ResponseBody::Length(_) => return Ok(None),
            ResponseBody::Chunked(chunked) => match chunked.decode(buf, &self.limits)? {
                Some((decoded, _trailers)) => decoded,
                None => return Ok(None),
            },
            ResponseBody::UntilClose if buf.len() > self.limits.body_bytes_max => {
                return Err(HttpError::BodyTooLarge)
            }
            ResponseBody::UntilClose => return Ok(None),
        };
        Ok(self.finish(decoded))
    }

    /// Call when the peer closed the connection: completes a response whose body runs until
    /// close (taking all of `buf`); any other unfinished response is `Malformed`.
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Response>, HttpError> {
        match &self.state {
            ResponseState::Head { .. } if buf.is_empty() => Ok(None),
            ResponseState::Body {
                body: ResponseBody::UntilClose,
                ..
            } => {
                let body = buf.split().freeze();
                Ok(self.finish(body))
            }
            _ => Err(HttpError::Malformed("connection closed mid-response")),
        }
    }

    fn finish(&mut self, body: Bytes) -> Option<Response> {
        match std::mem::replace(&mut self.state, ResponseState::Head { scanned: 0 }) {
            ResponseState::Body {
                status, headers, ..
            } => Some(Response {
                status,
                headers,
                body,
            }),
            ResponseState::Head { .. } => None,
        }
    }

    fn parse_head(&self, head: &[u8], head_request: bool) -> Result<ResponseState, HttpError> {
        let mut slots = [httparse::EMPTY_HEADER; HEADERS_COUNT_MAX];
        let mut parsed = httparse::Response::new(&mut slots);
        if parsed.parse(head).map_err(from_httparse)? != httparse::Status::Complete(head.len()) {
            return Err(HttpError::Malformed("incomplete response head"));
        }
        let status = parsed.code.ok_or(HttpError::Malformed("missing status"))?;
        let facts = FieldFacts::gather(parsed.headers)?;
        let bodiless = head_request || status < 200 || status == 204 || status == 304;
        let body = match facts.framing()? {
            _ if bodiless => ResponseBody::Length(0),
            Some(Framing::Chunked) => ResponseBody::Chunked(ChunkedBody::new()),
            Some(Framing::Length(length)) => usize::try_from(length)
                .ok()
                .filter(|&length| length <= self.limits.body_bytes_max)
                .map(ResponseBody::Length)
                .ok_or(HttpError::BodyTooLarge)?,
            None => ResponseBody::UntilClose,
        };
        Ok(ResponseState::Body {
            status,
            headers: owned_fields(parsed.headers),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Summary = (
        Method,
        String,
        String,
        Option<String>,
        Vec<(String, Vec<u8>)>,
        Bytes,
        Vec<(String, Vec<u8>)>,
        bool,
        u8,
    );

    fn summary(req: &Request) -> Summary {
        (
            req.method,
            req.method_str().to_owned(),
            req.path().to_owned(),
            req.query().map(str::to_owned),
            req.headers()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
            req.body.clone(),
            req.trailers().to_vec(),
            req.keep_alive,
            req.version_minor,
        )
    }

    fn decode_one(raw: &[u8]) -> Result<Option<Request>, HttpError> {
        Decoder::new(Limits::default()).decode(&mut BytesMut::from(raw))
    }

    fn decode_ok(raw: &[u8]) -> Request {
        match decode_one(raw) {
            Ok(Some(req)) => req,
            other => panic!("expected a request from {raw:?}, got {other:?}"),
        }
    }

    /// Feeds `raw[..k]`, then the rest, for every k, and checks each split yields the same request.
    fn assert_every_split(raw: &[u8]) -> Request {
        let whole = decode_ok(raw);
        for k in 0..raw.len() {
            let mut decoder = Decoder::new(Limits::default());
            let mut buf = BytesMut::from(&raw[..k]);
            assert_eq!(decoder.decode(&mut buf), Ok(None), "split at {k}");
            buf.extend_from_slice(&raw[k..]);
            let req = decoder.decode(&mut buf).expect("valid").expect("complete");
            assert_eq!(summary(&req), summary(&whole), "split at {k}");
            assert!(buf.is_empty(), "split at {k} left {buf:?}");
        }
        whole
    }

    /// Feeds one byte at a time, which exercises every resumable state in sequence.
    fn decode_bytewise(raw: &[u8]) -> Request {
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::new();
        for (i, &byte) in raw.iter().enumerate() {
            buf.extend_from_slice(&[byte]);
            match decoder.decode(&mut buf).expect("valid") {
                Some(req) => {
                    assert_eq!(i, raw.len() - 1, "completed early");
                    return req;
                }
                None => assert!(i < raw.len() - 1, "incomplete at end"),
            }
        }
        panic!("no request decoded")
    }

    const GET: &[u8] =
        b"GET /2015-03-31/functions/f%20n/invocations?Qualifier=a%2Bb&x=1+2 HTTP/1.1\r\n\
Host: localhost:9000\r\nAccept: */*\r\nX-Empty:\r\n\r\n";

    const POST: &[u8] =
        b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\
Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"hello\":\"world\"}";

    const CHUNKED: &[u8] =
        b"POST /2018-06-01/runtime/invocation/abc/response HTTP/1.1\r\nHost: h\r\n\
Transfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type\r\n\r\n\
5;name=value\r\nhello\r\n1 ; ext\r\n,\r\n6\r\n world\r\n0;last\r\n\
Lambda-Runtime-Function-Error-Type: Runtime.Oops\r\nX-Other:  v \r\n\r\n";

    #[test]
    fn get_every_split() {
        let req = assert_every_split(GET);
        assert_eq!(req.method, Method::Get);
        assert_eq!(req.method_str(), "GET");
        assert_eq!(req.path(), "/2015-03-31/functions/f%20n/invocations");
        assert_eq!(req.query(), Some("Qualifier=a%2Bb&x=1+2"));
        assert_eq!(req.query_param("Qualifier").as_deref(), Some("a+b"));
        assert_eq!(req.query_param("x").as_deref(), Some("1 2"));
        assert_eq!(req.query_param("missing"), None);
        assert_eq!(req.header("host"), Some(&b"localhost:9000"[..]));
        assert_eq!(req.header_str("ACCEPT"), Some("*/*"));
        assert_eq!(req.header("x-empty"), Some(&b""[..]));
        assert_eq!(req.headers().count(), 3);
        assert!(req.body.is_empty());
        assert!(req.keep_alive);
        assert_eq!(req.version_minor, 1);
        assert_eq!(summary(&decode_bytewise(GET)), summary(&req));
    }

    #[test]
    fn post_every_split() {
        let req = assert_every_split(POST);
        assert_eq!(req.method, Method::Post);
        assert_eq!(&req.body[..], b"{\"hello\":\"world\"}");
        assert_eq!(req.header_str("content-type"), Some("application/json"));
        assert_eq!(req.query(), None);
        assert!(req.trailers().is_empty());
        assert_eq!(summary(&decode_bytewise(POST)), summary(&req));
    }

    #[test]
    fn chunked_every_split() {
        let req = assert_every_split(CHUNKED);
        assert_eq!(&req.body[..], b"hello, world");
        assert_eq!(
            req.trailers(),
            &[
                (
                    "Lambda-Runtime-Function-Error-Type".to_owned(),
                    b"Runtime.Oops".to_vec()
                ),
                ("X-Other".to_owned(), b"v".to_vec()),
            ]
        );
        assert_eq!(req.header_str("transfer-encoding"), Some("chunked"));
        assert!(req.keep_alive);
        assert_eq!(summary(&decode_bytewise(CHUNKED)), summary(&req));
    }

    #[test]
    fn chunked_without_trailers() {
        let raw = b"PUT /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let req = assert_every_split(raw);
        assert_eq!(req.method, Method::Put);
        assert_eq!(&req.body[..], b"abc");
        assert!(req.trailers().is_empty());
    }

    #[test]
    fn pipelined_requests() {
        let mut raw = Vec::new();
        raw.extend_from_slice(POST);
        raw.extend_from_slice(CHUNKED);
        raw.extend_from_slice(GET);
        raw.extend_from_slice(b"GET /partial HT");
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&raw[..]);
        let first = decoder.decode(&mut buf).unwrap().unwrap();
        let second = decoder.decode(&mut buf).unwrap().unwrap();
        let third = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&first.body[..], b"{\"hello\":\"world\"}");
        assert_eq!(&second.body[..], b"hello, world");
        assert_eq!(third.method, Method::Get);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"GET /partial HT");
        // The first request's head and body stay valid while the buffer is reused.
        assert_eq!(first.header_str("host"), Some("127.0.0.1:9000"));
    }

    #[test]
    fn leading_empty_lines_are_ignored() {
        let req = decode_ok(b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert_eq!(req.path(), "/");
        assert_eq!(req.header_str("host"), Some("a"));
    }

    #[test]
    fn keep_alive_rules() {
        let cases: &[(&[u8], bool)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", true),
            (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nConnection: Upgrade, CLOSE\r\n\r\n", false),
            (b"GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", true),
            (b"GET / HTTP/1.0\r\n\r\n", false),
            (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
            (
                b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
                false,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n",
                false,
            ),
            (
                b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                false,
            ),
        ];
        for (raw, keep_alive) in cases {
            let req = decode_ok(raw);
            assert_eq!(
                req.keep_alive,
                *keep_alive,
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
        assert_eq!(decode_ok(b"GET / HTTP/1.0\r\n\r\n").version_minor, 0);
    }

    #[test]
    fn chunked_wins_over_content_length() {
        let raw =
            b"POST / HTTP/1.1\r\nContent-Length: 100\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(&decode_ok(raw).body[..], b"ok");
    }

    #[test]
    fn duplicate_equal_content_length_is_accepted() {
        let raw = b"POST / HTTP/1.1\r\nContent-Length: 2\r\ncontent-length: 2, 2\r\n\r\nok";
        assert_eq!(&decode_ok(raw).body[..], b"ok");
    }

    #[test]
    fn get_with_content_length_has_body() {
        let req = decode_ok(b"GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        assert_eq!(&req.body[..], b"abc");
    }

    #[test]
    fn other_methods() {
        let req = decode_ok(b"PROPFIND /x HTTP/1.1\r\n\r\n");
        assert_eq!(req.method, Method::Other);
        assert_eq!(req.method_str(), "PROPFIND");
        for (token, method) in [
            ("HEAD", Method::Head),
            ("DELETE", Method::Delete),
            ("PATCH", Method::Patch),
            ("OPTIONS", Method::Options),
        ] {
            let raw = format!("{token} / HTTP/1.1\r\n\r\n");
            assert_eq!(decode_ok(raw.as_bytes()).method, method);
        }
    }

    #[test]
    fn expect_continue_once_when_body_pending() {
        let head = b"POST /big HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&head[..]);
        assert!(!decoder.take_continue());
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(decoder.bytes_needed(), Some(4));
        assert!(decoder.take_continue());
        assert!(!decoder.take_continue());
        buf.extend_from_slice(b"ab");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(decoder.bytes_needed(), Some(2));
        assert!(!decoder.take_continue());
        buf.extend_from_slice(b"cd");
        let req = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&req.body[..], b"abcd");
        assert!(!decoder.take_continue());
    }

    #[test]
    fn expect_continue_not_needed_when_body_arrived() {
        let raw = b"POST / HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 2\r\n\r\nok";
        let mut decoder = Decoder::new(Limits::default());
        assert!(decoder
            .decode(&mut BytesMut::from(&raw[..]))
            .unwrap()
            .is_some());
        assert!(!decoder.take_continue());
        // HTTP/1.0 clients' expectations are ignored.
        let raw = b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(decoder.decode(&mut BytesMut::from(&raw[..])), Ok(None));
        assert!(!decoder.take_continue());
    }

    #[test]
    fn expect_continue_for_chunked_body() {
        let raw = b"POST / HTTP/1.1\r\nExpect: 100-continue\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&raw[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(decoder.take_continue());
        buf.extend_from_slice(b"4\r\nbody\r\n");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(!decoder.take_continue());
        buf.extend_from_slice(b"0\r\n\r\n");
        assert_eq!(
            &decoder.decode(&mut buf).unwrap().unwrap().body[..],
            b"body"
        );
    }

    #[test]
    fn malformed_inputs() {
        let cases: &[(&[u8], HttpError)] = &[
            (
                b"GARBAGE\r\n\r\n",
                HttpError::Malformed("invalid token in request line"),
            ),
            (
                b"\x00\x01\x02\x03\r\n\r\n",
                HttpError::Malformed("invalid token in request line"),
            ),
            (
                b"G@T / HTTP/1.1\r\n\r\n",
                HttpError::Malformed("invalid token in request line"),
            ),
            (
                b"GET  / HTTP/1.1\r\n\r\n",
                HttpError::Malformed("invalid token in request line"),
            ),
            (
                b"GET / HTTP/2.0\r\n\r\n",
                HttpError::Malformed("unsupported HTTP version"),
            ),
            (
                b"GET / FTP/1.1\r\n\r\n",
                HttpError::Malformed("unsupported HTTP version"),
            ),
            (
                b"GET / HTTP/1.1\r\nHost a\r\n\r\n",
                HttpError::Malformed("invalid header name"),
            ),
            (
                b"GET / HTTP/1.1\r\nHo st: a\r\n\r\n",
                HttpError::Malformed("invalid header name"),
            ),
            (
                b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
                HttpError::Malformed("invalid header name"),
            ),
            (
                b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
                HttpError::Malformed("invalid header name"),
            ),
            (
                b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
                HttpError::Malformed("invalid header value"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                HttpError::Malformed("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n",
                HttpError::Malformed("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
                HttpError::Malformed("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
                HttpError::Malformed("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
                HttpError::Malformed("conflicting Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                HttpError::Malformed("invalid Content-Length"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
                HttpError::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                HttpError::UnsupportedTransferEncoding,
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                HttpError::Malformed("invalid Transfer-Encoding"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding:\r\n\r\n",
                HttpError::Malformed("invalid Transfer-Encoding"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                HttpError::BadChunk("missing chunk size"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3x\r\n",
                HttpError::BadChunk("invalid chunk size"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\n",
                HttpError::BadChunk("chunk size line not ended by CRLF"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX",
                HttpError::BadChunk("chunk data not followed by CRLF"),
            ),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
                HttpError::BadChunk("invalid trailer field"),
            ),
        ];
        for (raw, expected) in cases {
            let got = decode_one(raw);
            assert_eq!(
                got.as_ref().err(),
                Some(expected),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
            assert!(matches!(expected.status(), 400 | 501));
        }
        assert_eq!(HttpError::UnsupportedTransferEncoding.status(), 501);
        assert_eq!(HttpError::BadChunk("x").status(), 400);
        assert_eq!(
            HttpError::Malformed("invalid header name").reason(),
            "malformed message: invalid header name"
        );
    }

    #[test]
    fn garbage_fails_before_head_end() {
        // A TLS ClientHello to the plain-text port fails on its first read, not at a timeout.
        let hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
        assert_eq!(
            decode_one(hello).err(),
            Some(HttpError::Malformed("invalid token in request line"))
        );
    }

    #[test]
    fn oversized_head_incomplete() {
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nX-Big: "[..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&vec![b'a'; HEADER_BYTES_MAX]);
        assert_eq!(decoder.decode(&mut buf), Err(HttpError::HeaderTooLarge));
        assert_eq!(HttpError::HeaderTooLarge.status(), 431);
    }

    #[test]
    fn oversized_head_complete() {
        let mut raw = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        raw.extend_from_slice(&vec![b'a'; HEADER_BYTES_MAX]);
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(decode_one(&raw).err(), Some(HttpError::HeaderTooLarge));
        // Just under the limit is fine.
        let mut raw = b"GET / HTTP/1.1\r\nX-Big: ".to_vec();
        raw.extend_from_slice(&vec![b'a'; HEADER_BYTES_MAX - raw.len() - 4]);
        raw.extend_from_slice(b"\r\n\r\n");
        assert_eq!(raw.len(), HEADER_BYTES_MAX);
        assert!(decode_ok(&raw).header("x-big").is_some());
    }

    #[test]
    fn too_many_headers() {
        let mut raw = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..HEADERS_COUNT_MAX {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        let mut exact = raw.clone();
        exact.extend_from_slice(b"\r\n");
        assert_eq!(decode_ok(&exact).headers().count(), HEADERS_COUNT_MAX);
        raw.extend_from_slice(b"X-One-More: v\r\n\r\n");
        assert_eq!(decode_one(&raw).err(), Some(HttpError::TooManyHeaders));
        let small = Limits {
            headers_count_max: 2,
            ..Limits::default()
        };
        let raw = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        let got = Decoder::new(small).decode(&mut BytesMut::from(&raw[..]));
        assert_eq!(got.err(), Some(HttpError::TooManyHeaders));
    }

    #[test]
    fn oversized_declared_body_fails_before_buffering() {
        let raw = format!(
            "POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            BODY_BYTES_MAX + 1
        );
        assert_eq!(
            decode_one(raw.as_bytes()).err(),
            Some(HttpError::BodyTooLarge)
        );
        let raw = format!("POST / HTTP/1.1\r\nContent-Length: {BODY_BYTES_MAX}\r\n\r\n");
        let mut decoder = Decoder::new(Limits::default());
        assert_eq!(
            decoder.decode(&mut BytesMut::from(raw.as_bytes())),
            Ok(None)
        );
        assert_eq!(decoder.bytes_needed(), Some(BODY_BYTES_MAX));
        assert_eq!(HttpError::BodyTooLarge.status(), 413);
    }

    #[test]
    fn oversized_chunked_body_fails_at_chunk_size() {
        let limits = Limits {
            body_bytes_max: 10,
            ..Limits::default()
        };
        let head = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut decoder = Decoder::new(limits);
        let mut buf = BytesMut::from(&head[..]);
        buf.extend_from_slice(b"6\r\nabcdef\r\n");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        // The second chunk's size alone pushes the body over the limit: no data needed.
        buf.extend_from_slice(b"5\r\n");
        assert_eq!(decoder.decode(&mut buf), Err(HttpError::BodyTooLarge));

        let mut raw = head.to_vec();
        raw.extend_from_slice(b"fffffffffffffffffffff\r\n");
        assert_eq!(decode_one(&raw).err(), Some(HttpError::BodyTooLarge));
    }

    #[test]
    fn oversized_chunk_line_and_trailers() {
        let mut raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        raw.extend_from_slice(&vec![b'e'; CHUNK_LINE_BYTES_MAX]);
        assert_eq!(
            decode_one(&raw).err(),
            Some(HttpError::BadChunk("chunk size line too long"))
        );
        let mut raw = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ".to_vec();
        raw.extend_from_slice(&vec![b'v'; HEADER_BYTES_MAX]);
        assert_eq!(decode_one(&raw).err(), Some(HttpError::HeaderTooLarge));
    }

    #[test]
    fn chunked_buffer_is_compacted_while_streaming() {
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"[..]);
        let mut expected = Vec::new();
        for i in 0..100u8 {
            buf.extend_from_slice(b"3;ext=1\r\n");
            buf.extend_from_slice(&[i, i, i]);
            buf.extend_from_slice(b"\r\n");
            expected.extend_from_slice(&[i, i, i]);
            assert_eq!(decoder.decode(&mut buf), Ok(None));
            // Only de-chunked data remains: framing bytes were squeezed out.
            assert_eq!(&buf[..], &expected[..]);
        }
        buf.extend_from_slice(b"0\r\n\r\nGET");
        let req = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&req.body[..], &expected[..]);
        assert_eq!(&buf[..], b"GET");
    }

    #[test]
    fn content_length_body_is_not_copied() {
        let mut buf = BytesMut::from(POST);
        let body_start = buf.as_ptr() as usize + POST.len() - 17;
        let req = Decoder::new(Limits::default())
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(req.body.as_ptr() as usize, body_start);
    }

    fn strip_date(head: &[u8]) -> String {
        let text = String::from_utf8(head.to_vec()).unwrap();
        let date = http_date();
        assert_eq!(date.as_str().len(), DATE_BYTES);
        text.replace(date.as_str(), "<date>")
    }

    #[test]
    fn response_head_encoding() {
        let mut out = Vec::new();
        write_response_head(
            &mut out,
            200,
            &[
                ("Content-Type", "application/json"),
                ("X-Amz-Executed-Version", "$LATEST"),
            ],
            42,
            true,
        );
        assert_eq!(
            strip_date(&out),
            "HTTP/1.1 200 OK\r\nDate: <date>\r\nContent-Length: 42\r\n\
Content-Type: application/json\r\nX-Amz-Executed-Version: $LATEST\r\n\r\n"
        );
        out.clear();
        write_response_head(&mut out, 413, &[("X-Evil", "a\r\nInjected: 1")], 0, false);
        assert_eq!(
            strip_date(&out),
            "HTTP/1.1 413 Content Too Large\r\nDate: <date>\r\nContent-Length: 0\r\n\
Connection: close\r\nX-Evil: a  Injected: 1\r\n\r\n"
        );
        out.clear();
        write_response_head(&mut out, 204, &[], 0, true);
        assert_eq!(
            strip_date(&out),
            "HTTP/1.1 204 No Content\r\nDate: <date>\r\n\r\n"
        );
        out.clear();
        write_response_head(&mut out, 299, &[], 1234567890, true);
        assert!(strip_date(&out).starts_with("HTTP/1.1 299 \r\n"));
        assert!(strip_date(&out).contains("Content-Length: 1234567890\r\n"));
    }

    #[test]
    fn date_is_cached_and_well_formed() {
        let first = http_date();
        let text = first.as_str();
        assert!(text.ends_with(" GMT"), "{text}");
        assert!(httpdate::parse_http_date(text).is_ok());
        let second = http_date();
        // Both calls fall in the same second except across a second boundary.
        let parsed = |d: DateString| httpdate::parse_http_date(d.as_str()).unwrap();
        assert!(parsed(second) >= parsed(first));
    }

    #[test]
    fn request_head_encoding_round_trips() {
        let mut out = Vec::new();
        write_request_head(
            &mut out,
            "POST",
            "/2015-03-31/functions/f/invocations",
            "127.0.0.1:9000",
            &[("X-Amz-Invocation-Type", "RequestResponse")],
            5,
        );
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            "POST /2015-03-31/functions/f/invocations HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\
Content-Length: 5\r\nX-Amz-Invocation-Type: RequestResponse\r\n\r\n"
        );
        out.extend_from_slice(b"hello");
        let req = decode_ok(&out);
        assert_eq!(&req.body[..], b"hello");
        out.clear();
        write_request_head(&mut out, "GET", "/", "h", &[], 0);
        assert_eq!(&out[..], b"GET / HTTP/1.1\r\nHost: h\r\n\r\n");
    }

    fn decode_response(raw: &[u8], head_request: bool) -> Response {
        let mut decoder = ResponseDecoder::new(BODY_BYTES_MAX);
        // Every split, as for requests.
        for k in 0..raw.len() {
            let mut buf = BytesMut::from(&raw[..k]);
            let mut fresh = ResponseDecoder::new(BODY_BYTES_MAX);
            assert!(
                fresh.decode(&mut buf, head_request).unwrap().is_none(),
                "{k}"
            );
            buf.extend_from_slice(&raw[k..]);
            assert!(
                fresh.decode(&mut buf, head_request).unwrap().is_some(),
                "{k}"
            );
            assert!(buf.is_empty());
        }
        let mut buf = BytesMut::from(raw);
        decoder.decode(&mut buf, head_request).unwrap().unwrap()
    }

    #[test]
    fn response_round_trip_content_length() {
        let mut raw = Vec::new();
        write_response_head(&mut raw, 200, &[("Content-Type", "text/plain")], 5, true);
        raw.extend_from_slice(b"hello");
        let resp = decode_response(&raw, false);
        assert_eq!(resp.status, 200);
        assert_eq!(&resp.body[..], b"hello");
        assert_eq!(resp.header_str("content-type"), Some("text/plain"));
        assert_eq!(resp.header_str("content-length"), Some("5"));
        assert!(resp.header("date").is_some());
    }

    #[test]
    fn response_round_trip_chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nX-T: 1\r\n\r\n";
        let resp = decode_response(raw, false);
        assert_eq!(&resp.body[..], b"Wikipedia");
    }

    #[test]
    fn bodiless_responses() {
        let mut raw = Vec::new();
        write_response_head(&mut raw, 200, &[], 1000, true);
        let resp = decode_response(&raw, true);
        assert!(resp.body.is_empty());
        let resp = decode_response(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(resp.status, 304);
        let resp = decode_response(b"HTTP/1.1 100 Continue\r\n\r\n", false);
        assert_eq!(resp.status, 100);
        let resp = decode_response(b"HTTP/1.1 204 No Content\r\n\r\n", false);
        assert!(resp.body.is_empty());
    }

    #[test]
    fn response_pipelined_and_until_close() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 202 Accepted\r\nContent-Length: 2\r\n\r\n{}\
HTTP/1.0 200 OK\r\n\r\nrest of"[..],
        );
        let mut decoder = ResponseDecoder::new(1024);
        assert_eq!(
            decoder.decode(&mut buf, false).unwrap().unwrap().status,
            100
        );
        let accepted = decoder.decode(&mut buf, false).unwrap().unwrap();
        assert_eq!((accepted.status, &accepted.body[..]), (202, &b"{}"[..]));
        assert!(decoder.decode(&mut buf, false).unwrap().is_none());
        buf.extend_from_slice(b" the body");
        assert!(decoder.decode(&mut buf, false).unwrap().is_none());
        let last = decoder.decode_eof(&mut buf).unwrap().unwrap();
        assert_eq!(&last.body[..], b"rest of the body");
        assert_eq!(decoder.decode_eof(&mut buf), Ok(None));
    }

    #[test]
    fn response_errors() {
        let mut decoder = ResponseDecoder::new(4);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf, false).err(),
            Some(HttpError::BodyTooLarge)
        );
        let mut decoder = ResponseDecoder::new(4);
        let mut buf = BytesMut::from(&b"HTTP/1.1 2x0 OK\r\n\r\n"[..]);
        assert_eq!(
            decoder.decode(&mut buf, false).err(),
            Some(HttpError::Malformed("invalid status code"))
        );
        let mut decoder = ResponseDecoder::new(4);
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nab"[..]);
        assert!(decoder.decode(&mut buf, false).unwrap().is_none());
        assert!(decoder.decode_eof(&mut buf).is_err());
    }

    /// Pieces of requests, valid and not, that the differential property test stitches together.
    const FRAGMENTS: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"POST /p?q=1 HTTP/1.1\r\n",
        b"GET / HTTP/1.0\r\n",
        b"Host: h\r\n",
        b"Content-Length: 3\r\n",
        b"Content-Length: 100\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Connection: close\r\n",
        b"Expect: 100-continue\r\n",
        b"\r\n",
        b"\n",
        b"abc",
        b"3\r\nabc\r\n",
        b"2;e=1\r\nab\r\n",
        b"0\r\n\r\n",
        b"0\r\nX-T: v\r\n\r\n",
        b"ffff\r\n",
        b"X-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
        b" ",
        b"\r",
    ];

    /// Decodes `raw` fed in pieces of the given sizes (cycled); returns the requests and whether
    /// decoding stopped on an error.
    fn decode_stream(raw: &[u8], feeds: &[usize], limits: Limits) -> (Vec<Request>, bool) {
        let mut decoder = Decoder::new(limits);
        let mut buf = BytesMut::new();
        let mut requests = Vec::new();
        let mut offset = 0;
        let mut feeds = feeds.iter().cycle();
        while offset < raw.len() {
            let take = (*feeds.next().unwrap_or(&1)).clamp(1, raw.len() - offset);
            buf.extend_from_slice(&raw[offset..offset + take]);
            offset += take;
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(req)) => requests.push(req),
                    Ok(None) => break,
                    Err(_) => return (requests, true),
                }
            }
        }
        (requests, false)
    }

    /// Encodes `body` as chunks of the given sizes (cycled), with optional extensions and trailers.
    fn chunk_encode(body: &[u8], sizes: &[usize], extensions: bool, trailers: bool) -> Vec<u8> {
        let mut raw = b"POST /r HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let size = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            let ext = if extensions { ";a=b" } else { "" };
            raw.extend_from_slice(format!("{size:x}{ext}\r\n").as_bytes());
            raw.extend_from_slice(&rest[..size]);
            raw.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        raw.extend_from_slice(b"0\r\n");
        if trailers {
            raw.extend_from_slice(b"X-Trailer: yes\r\n");
        }
        raw.extend_from_slice(b"\r\n");
        raw
    }

    proptest! {
        #[test]
        fn random_chunkings_decode_to_same_body(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            sizes in proptest::collection::vec(1usize..600, 1..20),
            feeds in proptest::collection::vec(1usize..700, 1..40),
            extensions in any::<bool>(),
            trailers in any::<bool>(),
        ) {
            let raw = chunk_encode(&body, &sizes, extensions, trailers);
            let mut decoder = Decoder::new(Limits::default());
            let mut buf = BytesMut::new();
            let mut offset = 0;
            let mut feeds = feeds.iter().cycle();
            let mut decoded = None;
            while offset < raw.len() {
                let take = (*feeds.next().unwrap_or(&1)).min(raw.len() - offset);
                buf.extend_from_slice(&raw[offset..offset + take]);
                offset += take;
                if let Some(req) = decoder.decode(&mut buf).expect("valid") {
                    prop_assert_eq!(offset, raw.len());
                    decoded = Some(req);
                }
            }
            let req = decoded.expect("decoded");
            prop_assert_eq!(&req.body[..], &body[..]);
            prop_assert_eq!(req.trailers().len(), usize::from(trailers));
            prop_assert!(buf.is_empty());
        }

        /// Inputs stitched from protocol fragments decode the same whether they arrive whole or
        /// in random pieces: same requests, and no error in pieces that whole input does not
        /// have. (Pieces may detect a bad head later: after a partial head, httparse only runs
        /// again once a head end is in sight.)
        #[test]
        fn incremental_matches_one_shot(
            picks in proptest::collection::vec(0usize..FRAGMENTS.len(), 0..24),
            noise in proptest::collection::vec(any::<u8>(), 0..4),
            feeds in proptest::collection::vec(1usize..40, 1..10),
        ) {
            let mut raw: Vec<u8> = picks.iter().flat_map(|&i| FRAGMENTS[i].iter().copied()).collect();
            raw.extend_from_slice(&noise);
            let limits = Limits { header_bytes_max: 256, headers_count_max: 4, body_bytes_max: 64 };
            let whole = decode_stream(&raw, &[raw.len().max(1)], limits);
            let pieces = decode_stream(&raw, &feeds, limits);
            prop_assert_eq!(&whole.0, &pieces.0);
            prop_assert!(whole.1 || !pieces.1);
        }
    }
}
