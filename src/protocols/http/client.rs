//! Client side: the request head encoder (`write_request_head`) and the incremental response
//! decoder (`ResponseDecoder` → `ClientResponse`). Only the load generator and the tests use it;
//! the server never decodes a response.
//!
//! One decoder per client connection, on the thread that owns that connection. Limits: the head is
//! bounded by `HEADER_BYTES_MAX` and `HEADERS_COUNT_MAX`, the body by the `body_bytes_max` given
//! to `ResponseDecoder::new`. A response to a HEAD request, and every 1xx, 204 and 304 response,
//! has no body whatever its head says.

use bytes::{Buf, Bytes, BytesMut};

use super::chunked::ChunkedBody;
use super::response::{push_decimal, push_field};
use super::{
    find_section_end, from_httparse, owned_fields, rescan_from, FieldFacts, Framing, HttpError,
    Limits, HEADERS_COUNT_MAX,
};

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
pub struct ClientResponse {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Bytes,
}

impl ClientResponse {
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
    ) -> Result<Option<ClientResponse>, HttpError> {
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
    pub fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<ClientResponse>, HttpError> {
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

    fn finish(&mut self, body: Bytes) -> Option<ClientResponse> {
        match std::mem::replace(&mut self.state, ResponseState::Head { scanned: 0 }) {
            ResponseState::Body {
                status, headers, ..
            } => Some(ClientResponse {
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
    use super::super::testing::decode_ok;
    use super::super::{write_response_head, BODY_BYTES_MAX};
    use super::*;

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

    fn decode_response(raw: &[u8], head_request: bool) -> ClientResponse {
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
}
