//! Server side: the response head encoder (`write_response_head`) and what it writes: reason
//! phrases and the `Date` value, cached per thread for the current second.
//!
//! Runs on every core thread that writes responses; the `Date` cache is thread-local, so no lock.
//! Invariants: a header value can never split the message (CR and LF become spaces); the body is
//! never copied here, the caller writes it after the head.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_BYTES: usize = 29;

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

/// Decimal digits of the largest `usize` (`u64::MAX` has 20).
const USIZE_DIGITS_MAX: usize = 20;

/// Appends `value` in decimal, without allocating.
pub(super) fn push_decimal(out: &mut Vec<u8>, mut value: usize) {
    let mut digits = [0u8; USIZE_DIGITS_MAX];
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
pub(super) fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
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

/// The head of a response whose body follows in chunked transfer coding (a streamed answer):
/// like `write_response_head`, with `Transfer-Encoding: chunked` instead of a length.
pub fn write_chunked_response_head(
    out: &mut Vec<u8>,
    status: u16,
    headers: &[(&str, &str)],
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_decimal(out, usize::from(status));
    out.push(b' ');
    out.extend_from_slice(reason_phrase(status).as_bytes());
    out.extend_from_slice(b"\r\nDate: ");
    out.extend_from_slice(http_date().as_bytes());
    out.extend_from_slice(b"\r\nTransfer-Encoding: chunked\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    for (name, value) in headers {
        push_field(out, name, value);
    }
    out.extend_from_slice(b"\r\n");
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
