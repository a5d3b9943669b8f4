//! Server side: the incremental request decoder (`Decoder`) and the decoded `Request`.
//!
//! One `Decoder` per connection, on the core thread that owns the connection. A request's head and
//! Content-Length body are split off the read buffer without copying; `Request` keeps its head as
//! the original bytes and slices into it on access. Limits: `Limits::header_bytes_max` bytes and
//! `Limits::headers_count_max` fields of head, `Limits::body_bytes_max` bytes of body, each
//! reported as soon as it is known to be exceeded. Partial input is `Ok(None)`, never an error.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::{ChunkedBody, ChunkedOutput};
use super::{
    find_section_end, from_httparse, rescan_from, trim_ows, FieldFacts, Framing, HttpError, Limits,
    Method, HEADERS_COUNT_MAX,
};
use crate::protocols::percent;

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
                percent::decode_query(key) == name
            } else {
                key == name
            };
            matches.then(|| percent::decode_query(value))
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
    /// This request's body limit (`Limits::body_bytes_max_of` its path and host).
    body_bytes_max: usize,
}

impl PendingRequest {
    /// The head alone, as a `Request` with an empty body (for a body that is streamed).
    fn head_request(&self) -> Request {
        Request {
            head: self.head.clone(),
            method_span: self.method_span,
            path_span: self.path_span,
            query_span: self.query_span,
            headers_start: self.headers_start,
            trailers: Vec::new(),
            method: self.method,
            body: Bytes::new(),
            keep_alive: self.keep_alive,
            version_minor: self.version_minor,
        }
    }

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
    /// The head was handed out (`Decoded::StreamHead`); its chunked body is handed out piece by
    /// piece (`Decoder::next_piece`).
    Streaming(PendingRequest),
}

/// What `Decoder::decode_or_stream` found at the start of the buffer.
#[derive(Debug)]
pub enum Decoded {
    /// A whole request, body included.
    Whole(Request),
    /// The head of a request whose chunked body is to be read piece by piece as it arrives
    /// (`Decoder::next_piece`); its `body` is empty.
    StreamHead(Request),
}

/// A piece of a streamed chunked body (`Decoder::next_piece`).
#[derive(Debug, PartialEq, Eq)]
pub enum BodyPiece {
    /// De-chunked data that has arrived (not aligned to the sender's chunks).
    Data(Bytes),
    /// The end of the body: its last data, and its trailer fields.
    End {
        data: Bytes,
        trailers: Vec<(String, Vec<u8>)>,
    },
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
        let limits = Limits {
            body_bytes_max: pending.body_bytes_max,
            ..self.limits
        };
        match pending.body.decode(buf, &limits)? {
            Some((body, trailers)) => {
                let state = std::mem::replace(&mut self.state, DecodeState::Head { scanned: None });
                match state {
                    DecodeState::Body(pending) => Ok(Some(pending.into_request(body, trailers))),
                    DecodeState::Head { .. } | DecodeState::Streaming(_) => Ok(None),
                }
            }
            None => {
                self.continue_ready |= std::mem::take(&mut pending.expect_continue);
                self.needed = pending.body.bytes_needed(buf.len());
                Ok(None)
            }
        }
    }

    /// Like `decode`, but a request with a chunked body for which `stream` holds is handed out as
    /// soon as its head is parsed (`Decoded::StreamHead`); its body then comes from
    /// `next_piece`. `stream` is asked once per chunked request, never for other framings, so a
    /// connection that never streams pays one framing check per request.
    pub fn decode_or_stream(
        &mut self,
        buf: &mut BytesMut,
        stream: fn(&Request) -> bool,
    ) -> Result<Option<Decoded>, HttpError> {
        if let DecodeState::Head { scanned } = self.state {
            self.needed = None;
            match self.decode_head(buf, scanned)? {
                Some(pending) => {
                    let chunked = matches!(pending.body, BodyDecoder::Chunked(_));
                    if chunked && stream(&pending.head_request()) {
                        let head = pending.head_request();
                        self.continue_ready |= pending.expect_continue;
                        self.state = DecodeState::Streaming(pending);
                        return Ok(Some(Decoded::StreamHead(head)));
                    }
                    self.state = DecodeState::Body(pending);
                }
                None => return Ok(None),
            }
        }
        Ok(self.decode(buf)?.map(Decoded::Whole))
    }

    /// The next piece of the body of the request handed out as `Decoded::StreamHead`:
    /// `Ok(None)` when more bytes are needed (or no body is being streamed). After
    /// `BodyPiece::End` the decoder expects the next request. The body limit applies to each
    /// chunk the sender declares, not to the whole body, which the caller bounds itself.
    pub fn next_piece(&mut self, buf: &mut BytesMut) -> Result<Option<BodyPiece>, HttpError> {
        let limits = self.limits;
        let DecodeState::Streaming(pending) = &mut self.state else {
            return Ok(None);
        };
        let BodyDecoder::Chunked(chunked) = &mut pending.body else {
            return Ok(None);
        };
        let limits = Limits {
            body_bytes_max: pending.body_bytes_max,
            ..limits
        };
        match chunked.decode(buf, &limits)? {
            Some((data, trailers)) => {
                self.state = DecodeState::Head { scanned: None };
                self.needed = None;
                Ok(Some(BodyPiece::End { data, trailers }))
            }
            None => {
                self.needed = chunked.bytes_needed();
                let data = chunked.take_decoded(buf);
                Ok((!data.is_empty()).then_some(BodyPiece::Data(data)))
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
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    // The host only matters when a per-request limit is configured (the User API's).
    let host = limits.body_bytes_max_for.and_then(|_| {
        parsed
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .map(|h| h.value)
    });
    let limits = Limits {
        body_bytes_max: limits.body_bytes_max_of(path, host),
        ..*limits
    };
    let body = body_decoder(facts.framing()?, &limits)?;

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
        body_bytes_max: limits.body_bytes_max,
    };
    Ok(Some((end, pending)))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::super::testing::{
        assert_every_split, decode_bytewise, decode_ok, decode_one, summary, CHUNKED, GET, POST,
    };
    use super::super::{BODY_BYTES_MAX, HEADER_BYTES_MAX};
    use super::*;

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
    fn content_length_body_is_not_copied() {
        let mut buf = BytesMut::from(POST);
        let body_start = buf.as_ptr() as usize + POST.len() - 17;
        let req = Decoder::new(Limits::default())
            .decode(&mut buf)
            .unwrap()
            .unwrap();
        assert_eq!(req.body.as_ptr() as usize, body_start);
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

    proptest! {
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
            let limits = Limits { header_bytes_max: 256, headers_count_max: 4, body_bytes_max: 64, body_bytes_max_for: None };
            let whole = decode_stream(&raw, &[raw.len().max(1)], limits);
            let pieces = decode_stream(&raw, &feeds, limits);
            prop_assert_eq!(&whole.0, &pieces.0);
            prop_assert!(whole.1 || !pieces.1);
        }
    }

    fn is_streaming(req: &Request) -> bool {
        req.header_str("x-mode") == Some("streaming")
    }

    /// A streamed body arrives as pieces whose concatenation is the de-chunked body, with its
    /// trailers at the end, however the wire bytes are split; the next request follows.
    #[test]
    fn streamed_body_at_every_split() {
        let raw: &[u8] = b"POST /r HTTP/1.1\r\nX-Mode: streaming\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n7\r\n, world\r\n0\r\nX-Err: boom\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
        for split in 0..=raw.len() {
            let mut decoder = Decoder::new(Limits::default());
            let mut buf = BytesMut::new();
            let (mut head, mut data, mut trailers, mut next) = (None, Vec::new(), None, None);
            for part in [&raw[..split], &raw[split..]] {
                buf.extend_from_slice(part);
                loop {
                    if head.is_none() {
                        match decoder.decode_or_stream(&mut buf, is_streaming).unwrap() {
                            Some(Decoded::StreamHead(h)) => head = Some(h),
                            Some(Decoded::Whole(_)) => panic!("streamed as a whole"),
                            None => break,
                        }
                    } else if trailers.is_none() {
                        match decoder.next_piece(&mut buf).unwrap() {
                            Some(BodyPiece::Data(d)) => data.extend_from_slice(&d),
                            Some(BodyPiece::End {
                                data: d,
                                trailers: t,
                            }) => {
                                data.extend_from_slice(&d);
                                trailers = Some(t);
                            }
                            None => break,
                        }
                    } else {
                        match decoder.decode_or_stream(&mut buf, is_streaming).unwrap() {
                            Some(Decoded::Whole(r)) => next = Some(r),
                            Some(Decoded::StreamHead(_)) => panic!("not a streamed request"),
                            None => {}
                        }
                        break;
                    }
                }
            }
            let head = head.expect("head");
            assert_eq!(head.path(), "/r");
            assert!(head.body.is_empty());
            assert_eq!(data, b"hello, world", "split at {split}");
            assert_eq!(trailers.unwrap(), [("X-Err".to_owned(), b"boom".to_vec())]);
            assert_eq!(next.expect("next request").path(), "/next");
        }
    }

    /// Without the predicate's consent a chunked body is decoded whole, as by `decode`.
    #[test]
    fn unstreamed_chunked_request_is_whole() {
        let mut decoder = Decoder::new(Limits::default());
        let mut buf = BytesMut::from(
            &b"POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"[..],
        );
        match decoder.decode_or_stream(&mut buf, is_streaming).unwrap() {
            Some(Decoded::Whole(r)) => assert_eq!(&r.body[..], b"ok"),
            other => panic!("{other:?}"),
        }
    }
}
