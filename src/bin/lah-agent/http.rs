//! The agent's HTTP/1.1 server side for the runtime in its instance: reads requests (head, then a
//! `Content-Length` or chunked body) from one blocking connection. No I/O beyond the socket
//! given, no state beyond the connection's read buffer.
//!
//! Runs on the agent's per-connection thread. Limits: a head of at most `HEAD_BYTES_MAX`, a whole
//! body of at most `BODY_BYTES_MAX` (the server refuses a response above 6 MB anyway; the bound is
//! the WebSocket message limit the answer must fit in), a chunk line of at most
//! `CHUNK_LINE_BYTES_MAX`. Only the runtime of this instance connects (the listener is on the
//! container's loopback).

use std::io::{self, Read};
use std::net::TcpStream;

/// Largest request head: AWS's runtime clients send a few short headers.
pub const HEAD_BYTES_MAX: usize = 64 * 1024;
/// Largest body of one request: the WebSocket message limit (8 MiB) less room for the envelope.
pub const BODY_BYTES_MAX: usize = 8 * 1024 * 1024 - 64 * 1024;
/// Largest chunk-size line or trailer line of a chunked body.
const CHUNK_LINE_BYTES_MAX: usize = 8 * 1024;
/// Headers parsed at most per request.
const HEADERS_MAX: usize = 64;
/// Bytes asked of the socket per read.
const READ_BYTES: usize = 64 * 1024;

/// A request head.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// One connection from the runtime.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more bytes into the buffer; false at end of stream.
    fn fill(&mut self) -> io::Result<bool> {
        let start = self.buf.len();
        self.buf.resize(start + READ_BYTES, 0);
        let n = self.stream.read(&mut self.buf[start..]);
        self.buf.truncate(start + *n.as_ref().unwrap_or(&0));
        Ok(n? > 0)
    }

    /// The next request head; `None` when the runtime closed the connection between requests.
    pub fn read_head(&mut self) -> io::Result<Option<Request>> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&self.buf).map_err(|e| invalid(e.to_string()))? {
                httparse::Status::Complete(len) => {
                    let head = Request {
                        method: req.method.unwrap_or_default().to_string(),
                        path: req.path.unwrap_or_default().to_string(),
                        headers: req
                            .headers
                            .iter()
                            .map(|h| {
                                (
                                    h.name.to_string(),
                                    String::from_utf8_lossy(h.value).into_owned(),
                                )
                            })
                            .collect(),
                    };
                    self.buf.drain(..len);
                    return Ok(Some(head));
                }
                httparse::Status::Partial if self.buf.len() > HEAD_BYTES_MAX => {
                    return Err(invalid("request head too long"));
                }
                httparse::Status::Partial => {
                    if !self.fill()? {
                        return if self.buf.is_empty() {
                            Ok(None)
                        } else {
                            Err(invalid("connection closed inside a request head"))
                        };
                    }
                }
            }
        }
    }

    /// The body of a request with `Content-Length` (none: empty).
    pub fn read_body(&mut self, req: &Request) -> io::Result<Vec<u8>> {
        let len = match req.header("content-length") {
            Some(v) => v
                .trim()
                .parse::<usize>()
                .map_err(|_| invalid("bad Content-Length"))?,
            None => 0,
        };
        if len > BODY_BYTES_MAX {
            return Err(invalid(format!(
                "body of {len} bytes exceeds {BODY_BYTES_MAX}"
            )));
        }
        self.take(len)
    }

    fn take(&mut self, len: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < len {
            if !self.fill()? {
                return Err(invalid("connection closed inside a body"));
            }
        }
        Ok(self.buf.drain(..len).collect())
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..pos]).into_owned();
                self.buf.drain(..pos + 2);
                return Ok(line);
            }
            if self.buf.len() > CHUNK_LINE_BYTES_MAX {
                return Err(invalid("chunk line too long"));
            }
            if !self.fill()? {
                return Err(invalid("connection closed inside a chunked body"));
            }
        }
    }

    /// The next chunk of a chunked body; `Ok(None)` at its end, after which `trailers` holds the
    /// trailers sent.
    pub fn read_chunk(
        &mut self,
        trailers: &mut Vec<(String, String)>,
    ) -> io::Result<Option<Vec<u8>>> {
        let line = self.line()?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
        if size > BODY_BYTES_MAX {
            return Err(invalid("chunk too large"));
        }
        if size == 0 {
            loop {
                let line = self.line()?;
                if line.is_empty() {
                    return Ok(None);
                }
                if let Some((k, v)) = line.split_once(':') {
                    trailers.push((k.trim().to_string(), v.trim().to_string()));
                }
            }
        }
        let data = self.take(size)?;
        if self.take(2)? != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        Ok(Some(data))
    }

    /// A whole chunked body (an ordinary, not streamed, response sent chunked).
    pub fn read_chunked_body(&mut self) -> io::Result<Vec<u8>> {
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        while let Some(chunk) = self.read_chunk(&mut trailers)? {
            body.extend_from_slice(&chunk);
            if body.len() > BODY_BYTES_MAX {
                return Err(invalid("body too large"));
            }
        }
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn pair(bytes: &'static [u8]) -> Conn {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            // Written in small pieces: every parser state sees a split.
            for piece in bytes.chunks(3) {
                s.write_all(piece).unwrap();
                s.flush().unwrap();
            }
        });
        let (stream, _) = listener.accept().unwrap();
        writer.join().unwrap();
        Conn::new(stream)
    }

    #[test]
    fn content_length_and_keep_alive() {
        let mut c = pair(b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiGET /b HTTP/1.1\r\n\r\n");
        let r = c.read_head().unwrap().unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/a"));
        assert_eq!(c.read_body(&r).unwrap(), b"hi");
        let r = c.read_head().unwrap().unwrap();
        assert_eq!(r.path, "/b");
        assert!(c.read_head().unwrap().is_none());
    }

    #[test]
    fn chunked_with_trailers() {
        let mut c = pair(
            b"POST /r HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nLambda-Runtime-Function-Error-Type: E\r\n\r\n",
        );
        let r = c.read_head().unwrap().unwrap();
        assert!(r.chunked());
        let mut trailers = Vec::new();
        assert_eq!(c.read_chunk(&mut trailers).unwrap().unwrap(), b"abc");
        assert_eq!(c.read_chunk(&mut trailers).unwrap().unwrap(), b"de");
        assert!(c.read_chunk(&mut trailers).unwrap().is_none());
        assert_eq!(
            trailers,
            vec![("Lambda-Runtime-Function-Error-Type".into(), "E".into())]
        );
    }

    #[test]
    fn truncated_and_oversized_requests_are_errors() {
        let mut c = pair(b"POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhi");
        let r = c.read_head().unwrap().unwrap();
        assert!(c.read_body(&r).is_err());
        let mut c = pair(b"POST /a HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n");
        let r = c.read_head().unwrap().unwrap();
        assert!(c.read_body(&r).is_err());
    }
}
