//! Hand-rolled HTTP/1.1 codec (RFC 9112) on top of `httparse`, split by role:
//!
//! - `request`: the data plane's incremental request decoder (`Decoder` → `Request`).
//! - `chunked`: the in-place de-chunker for chunked bodies and their trailers, used by both
//!   decoders.
//! - `response`: the response head encoder (status line, cached `Date`, `Content-Length`).
//! - `client`: the client side (request head encoder, `ResponseDecoder` → `ClientResponse`), used
//!   only by the load generator and the tests.
//!
//! This file holds what the roles share: the limits, the error type, `Method`, and the header
//! field analysis that decides framing and persistence. Everything is re-exported here, so
//! `crate::protocols::http::X` names every public item.
//!
//! Owns no socket: one `Decoder` per connection turns bytes of a `BytesMut` into `Request`s, on the
//! core thread that owns the connection. Invariants: a request's head and Content-Length body are split
//! off the read buffer without copying; a chunked body is de-chunked in place (one `memmove`, no new
//! allocation); every size is bounded by `Limits` and exceeding a limit is reported as soon as it is
//! known, before the bytes are buffered. Partial input is `Ok(None)`, never an error. Any error means
//! the connection must answer `err.status()` and close, because framing is lost.

mod chunked;
mod client;
mod request;
mod response;
#[cfg(test)]
mod testing;

pub use client::{write_request_head, ClientResponse, ResponseDecoder};
pub use request::{BodyPiece, Decoded, Decoder, Request};
pub use response::{
    http_date, reason_phrase, write_chunked_response_head, write_response_head, DateString,
    DATE_BYTES,
};

/// Largest request head (request line, headers, final empty line) we buffer.
pub const HEADER_BYTES_MAX: usize = 16 * 1024;
/// Most header fields in one head (and in one trailer section). The parser's slots live on the
/// stack, so this is also the hard cap for `Limits::headers_count_max`.
pub const HEADERS_COUNT_MAX: usize = 64;
/// Largest request body: AWS's 6 MB synchronous payload plus room for framing overhead.
pub const BODY_BYTES_MAX: usize = 6 * 1024 * 1024 + 64 * 1024;
/// Longest chunk-size line (size plus ignored extensions); bounds the scan for its end.
pub const CHUNK_LINE_BYTES_MAX: usize = 4 * 1024;

/// Per-connection bounds on what a peer may make us buffer.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of the whole request head, including the final empty line.
    pub header_bytes_max: usize,
    /// Header fields per head or trailer section; values above `HEADERS_COUNT_MAX` are clamped.
    pub headers_count_max: usize,
    /// Bytes of the (de-chunked) body.
    pub body_bytes_max: usize,
    /// A smaller body limit for some requests, by path and `Host` (e.g. Invoke's 6 MB on a
    /// connection that also takes 70 MB uploads), applied when the head is parsed: a
    /// `Content-Length` over it is refused before any of the body is read.
    pub body_bytes_max_for: Option<BodyLimitFn>,
}

/// A per-request body limit: `(path, Host header)` to a limit, or `None` for the default.
pub type BodyLimitFn = fn(&str, Option<&[u8]>) -> Option<usize>;

impl Limits {
    /// The body limit of a request for `path` with `host` (its `Host` header).
    pub fn body_bytes_max_of(&self, path: &str, host: Option<&[u8]>) -> usize {
        self.body_bytes_max_for
            .and_then(|f| f(path, host))
            .map_or(self.body_bytes_max, |n| n.min(self.body_bytes_max))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_bytes_max: HEADER_BYTES_MAX,
            headers_count_max: HEADERS_COUNT_MAX,
            body_bytes_max: BODY_BYTES_MAX,
            body_bytes_max_for: None,
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

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
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

fn owned_fields(fields: &[httparse::Header<'_>]) -> Vec<(String, Vec<u8>)> {
    fields
        .iter()
        .map(|f| (f.name.to_owned(), f.value.to_vec()))
        .collect()
}
