//! A minimal HTTP/1.1 keep-alive client: one `Conn` is one TCP connection used for one request at
//! a time, reconnected lazily after any failure.
//!
//! It shares the machine with the server it measures, so it does the least per request: the head
//! and body go out in one `write`, the response is decoded by the server crate's own
//! `ResponseDecoder` straight from the read buffer, and nothing is logged. Only `http://` endpoints
//! are supported. Every request is bounded by `Conn::timeout` so a hung server shows up as a
//! `timeout` error instead of a hung run.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use lambda_at_home::protocols::http::{
    write_request_head, ClientResponse, HttpError, ResponseDecoder,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::sigv4::{sign_now, Credentials};

/// Largest response body we accept: AWS's 6 MB synchronous payload limit plus framing slack.
pub const RESPONSE_BYTES_MAX: usize = 6 * 1024 * 1024 + 64 * 1024;
/// Free space ensured in the read buffer before each `read`.
const READ_CHUNK_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid endpoint {0:?}: {1}")]
    Endpoint(String, &'static str),
    #[error("cannot resolve {0}: {1}")]
    Resolve(String, std::io::Error),
    #[error("connect to {0} failed: {1}")]
    Connect(SocketAddr, std::io::Error),
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad response: {0}")]
    Http(#[from] HttpError),
    #[error("connection closed by the server before the response")]
    Closed,
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// The peer had already closed a kept-alive connection when we used it.
    fn is_stale_connection(&self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        match self {
            ClientError::Closed => true,
            ClientError::Io(e) => {
                matches!(e.kind(), BrokenPipe | ConnectionReset | ConnectionAborted)
            }
            _ => false,
        }
    }

    /// A short, stable label for error tallies.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Endpoint(..) | ClientError::Resolve(..) => "endpoint",
            ClientError::Connect(..) => "connect",
            ClientError::Io(_) => "io",
            ClientError::Http(_) => "bad_response",
            ClientError::Closed => "closed",
            ClientError::Timeout(_) => "timeout",
        }
    }
}

/// Where requests go: a resolved address plus the `Host` header value, and the credentials
/// every request is signed with (SigV4, `--sign`), if any.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub url: String,
    pub addr: SocketAddr,
    pub host: String,
    pub sign: Option<Arc<Credentials>>,
}

impl Endpoint {
    /// Parses `http://host[:port][/]` and resolves it once (start-up only; blocking is fine).
    pub fn parse(url: &str) -> Result<Endpoint, ClientError> {
        let bad = |why| ClientError::Endpoint(url.to_owned(), why);
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("expected http://host:port with no path"));
        }
        let has_port = match authority.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => authority.contains(':'),
        };
        let with_port = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        let addr = with_port
            .to_socket_addrs()
            .map_err(|e| ClientError::Resolve(with_port.clone(), e))?
            .next()
            .ok_or_else(|| bad("host resolved to no address"))?;
        Ok(Endpoint {
            url: format!("http://{authority}"),
            addr,
            host: authority.to_owned(),
            sign: None,
        })
    }

    /// Whether the server runs on this machine, so its `/proc` entries can be read.
    pub fn is_local(&self) -> bool {
        self.addr.ip().is_loopback()
    }
}

/// One keep-alive connection; `request` reconnects if the previous exchange broke it.
pub struct Conn {
    addr: SocketAddr,
    host: String,
    sign: Option<Arc<Credentials>>,
    stream: Option<TcpStream>,
    read_buf: BytesMut,
    write_buf: Vec<u8>,
    decoder: ResponseDecoder,
    pub timeout: Duration,
}

impl Conn {
    pub fn new(endpoint: &Endpoint, timeout: Duration) -> Conn {
        Conn {
            addr: endpoint.addr,
            host: endpoint.host.clone(),
            sign: endpoint.sign.clone(),
            stream: None,
            read_buf: BytesMut::with_capacity(READ_CHUNK_BYTES),
            write_buf: Vec::with_capacity(1024),
            decoder: ResponseDecoder::new(RESPONSE_BYTES_MAX),
            timeout,
        }
    }

    /// Opens the connection now (the first request would otherwise do it), so connection set-up
    /// is not part of a measured latency.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| ClientError::Connect(self.addr, e))?;
            stream.set_nodelay(true)?;
            self.stream = Some(stream);
        }
        Ok(())
    }

    /// Sends one request and waits for its whole response.
    pub async fn request(
        &mut self,
        method: &str,
        target: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<ClientResponse, ClientError> {
        self.write_buf.clear();
        let signed = self
            .sign
            .as_ref()
            .map(|creds| sign_now(creds, method, target, &self.host, body))
            .unwrap_or_default();
        let mut all: Vec<(&str, &str)> = headers.to_vec();
        all.extend(signed.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        write_request_head(
            &mut self.write_buf,
            method,
            target,
            &self.host,
            &all,
            body.len(),
        );
        self.write_buf.extend_from_slice(body);
        let reused = self.stream.is_some();
        match self.exchange(method == "HEAD").await {
            // A keep-alive connection the server closed while idle fails before any byte of the
            // response: that is not the request's fault, so it is sent once more on a new one.
            Err(e) if reused && e.is_stale_connection() => self.exchange(method == "HEAD").await,
            other => other,
        }
    }

    async fn exchange(&mut self, head_request: bool) -> Result<ClientResponse, ClientError> {
        let limit = self.timeout;
        let result = tokio::time::timeout(limit, self.exchange_inner(head_request)).await;
        let result = result.unwrap_or(Err(ClientError::Timeout(limit)));
        match &result {
            Ok(resp) if !wants_close(resp) => {}
            _ => self.reset(),
        }
        result
    }

    async fn exchange_inner(&mut self, head_request: bool) -> Result<ClientResponse, ClientError> {
        self.connect().await?;
        let Some(stream) = self.stream.as_mut() else {
            return Err(ClientError::Closed);
        };
        stream.write_all(&self.write_buf).await?;
        loop {
            if let Some(resp) = self.decoder.decode(&mut self.read_buf, head_request)? {
                return Ok(resp);
            }
            self.read_buf.reserve(READ_CHUNK_BYTES);
            let read = stream.read_buf(&mut self.read_buf).await?;
            if read == 0 {
                return match self.decoder.decode_eof(&mut self.read_buf)? {
                    Some(resp) => Ok(resp),
                    None => Err(ClientError::Closed),
                };
            }
        }
    }

    /// Drops the connection and any partial response; the next request reconnects.
    fn reset(&mut self) {
        self.stream = None;
        self.read_buf.clear();
        self.decoder = ResponseDecoder::new(RESPONSE_BYTES_MAX);
    }
}

fn wants_close(resp: &ClientResponse) -> bool {
    resp.header_str("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn endpoint_parsing() {
        let e = Endpoint::parse("http://127.0.0.1:9000").unwrap();
        assert_eq!(e.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(e.host, "127.0.0.1:9000");
        assert!(e.is_local());
        let e = Endpoint::parse("http://127.0.0.1/").unwrap();
        assert_eq!(e.addr.port(), 80);
        let e = Endpoint::parse("http://[::1]:9000").unwrap();
        assert_eq!(e.addr.port(), 9000);
        assert!(Endpoint::parse("https://127.0.0.1:9000").is_err());
        assert!(Endpoint::parse("http://127.0.0.1:9000/x").is_err());
        assert!(Endpoint::parse("http://").is_err());
    }

    /// A server that answers two requests on one connection, then closes it: the client must
    /// reuse the connection, then transparently reconnect for the third request.
    #[tokio::test]
    async fn keep_alive_and_reconnect() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let mut accepted = 0;
            for _ in 0..2 {
                let (mut sock, _) = listener.accept().await.unwrap();
                accepted += 1;
                let mut buf = vec![0u8; 4096];
                for i in 0..2 {
                    let mut got = Vec::new();
                    while !got.windows(6).any(|w| w == b"\r\n\r\nhi") {
                        let n = sock.read(&mut buf).await.unwrap();
                        if n == 0 {
                            return accepted;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    let body = format!("r{i}");
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{body}");
                    sock.write_all(resp.as_bytes()).await.unwrap();
                }
            }
            accepted
        });
        let endpoint = Endpoint::parse(&format!("http://{addr}")).unwrap();
        let mut conn = Conn::new(&endpoint, Duration::from_secs(5));
        let mut got = Vec::new();
        for _ in 0..3 {
            let resp = conn.request("POST", "/x", &[], b"hi").await.unwrap();
            got.push(String::from_utf8(resp.body.to_vec()).unwrap());
        }
        assert_eq!(got, ["r0", "r1", "r0"]);
        drop(conn);
        assert_eq!(server.await.unwrap(), 2);
    }

    #[tokio::test]
    async fn timeout_and_connect_errors() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hold = tokio::spawn(async move {
            let (sock, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(2)).await;
            drop(sock);
        });
        let endpoint = Endpoint::parse(&format!("http://{addr}")).unwrap();
        let mut conn = Conn::new(&endpoint, Duration::from_millis(100));
        let err = conn.request("GET", "/", &[], b"").await.unwrap_err();
        assert_eq!(err.kind(), "timeout");
        hold.abort();

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = closed.local_addr().unwrap();
        drop(closed);
        let endpoint = Endpoint::parse(&format!("http://{addr}")).unwrap();
        let mut conn = Conn::new(&endpoint, Duration::from_millis(500));
        let err = conn.request("GET", "/", &[], b"").await.unwrap_err();
        assert_eq!(err.kind(), "connect");
    }
}
