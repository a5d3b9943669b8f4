//! Helpers and sample messages shared by the codec's unit tests (compiled for tests only): decode
//! a request whole, at every split offset, or byte by byte, and compare requests field by field.

use bytes::{Bytes, BytesMut};

use super::{Decoder, HttpError, Limits, Method, Request};

pub(super) type Summary = (
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

pub(super) fn summary(req: &Request) -> Summary {
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

pub(super) fn decode_one(raw: &[u8]) -> Result<Option<Request>, HttpError> {
    Decoder::new(Limits::default()).decode(&mut BytesMut::from(raw))
}

pub(super) fn decode_ok(raw: &[u8]) -> Request {
    match decode_one(raw) {
        Ok(Some(req)) => req,
        other => panic!("expected a request from {raw:?}, got {other:?}"),
    }
}

/// Feeds `raw[..k]`, then the rest, for every k, and checks each split yields the same request.
pub(super) fn assert_every_split(raw: &[u8]) -> Request {
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
pub(super) fn decode_bytewise(raw: &[u8]) -> Request {
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

pub(super) const GET: &[u8] =
    b"GET /2015-03-31/functions/f%20n/invocations?Qualifier=a%2Bb&x=1+2 HTTP/1.1\r\n\
Host: localhost:9000\r\nAccept: */*\r\nX-Empty:\r\n\r\n";

pub(super) const POST: &[u8] =
    b"POST /2015-03-31/functions/echo/invocations HTTP/1.1\r\nHost: 127.0.0.1:9000\r\n\
Content-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"hello\":\"world\"}";

pub(super) const CHUNKED: &[u8] =
    b"POST /2018-06-01/runtime/invocation/abc/response HTTP/1.1\r\nHost: h\r\n\
Transfer-Encoding: chunked\r\nTrailer: Lambda-Runtime-Function-Error-Type\r\n\r\n\
5;name=value\r\nhello\r\n1 ; ext\r\n,\r\n6\r\n world\r\n0;last\r\n\
Lambda-Runtime-Function-Error-Type: Runtime.Oops\r\nX-Other:  v \r\n\r\n";
