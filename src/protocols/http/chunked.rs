//! Chunked transfer coding (RFC 9112 7.1): the incremental, in-place de-chunker shared by the
//! server's request decoder and the client's response decoder, and the chunk-size line parser.
//! Chunk extensions are ignored; trailer fields are returned with the body.
//!
//! Runs inside whichever decoder owns it, on that decoder's thread. Limits: a chunk-size line is at
//! most `CHUNK_LINE_BYTES_MAX` bytes, the trailer section at most `Limits::header_bytes_max` bytes
//! and `Limits::headers_count_max` fields, the de-chunked body at most `Limits::body_bytes_max`;
//! a chunk whose declared size would pass the body limit fails before its data is read.
//! Invariant: de-chunked data is compacted to the front of the buffer as it arrives, so the buffer
//! never holds much more than the decoded body and no chunk is parsed twice.

use bytes::{Bytes, BytesMut};

use super::{
    find_section_end, owned_fields, rescan_from, trim_ows, HttpError, Limits, CHUNK_LINE_BYTES_MAX,
    HEADERS_COUNT_MAX,
};

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
pub(super) struct ChunkedBody {
    state: ChunkState,
    read: usize,
    written: usize,
    trailers: Vec<(String, Vec<u8>)>,
}

/// A de-chunked body and its trailer fields.
pub(super) type ChunkedOutput = (Bytes, Vec<(String, Vec<u8>)>);

impl ChunkedBody {
    pub(super) fn new() -> ChunkedBody {
        ChunkedBody {
            state: ChunkState::Size,
            read: 0,
            written: 0,
            trailers: Vec::new(),
        }
    }

    pub(super) fn decode(
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

    /// Splits off the data de-chunked so far (after `decode` returned `Ok(None)`), for a body
    /// that is handed on piece by piece; the decoder goes on from the remaining wire bytes.
    pub(super) fn take_decoded(&mut self, buf: &mut BytesMut) -> Bytes {
        debug_assert!(self.read >= self.written);
        let data = buf.split_to(self.written).freeze();
        self.read -= self.written;
        self.written = 0;
        data
    }

    /// Bytes still needed for the current chunk, if the decoder is inside one.
    pub(super) fn bytes_needed(&self) -> Option<usize> {
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

/// Most hex digits of a chunk size: 15 exceed any body limit yet cannot overflow a u64.
const CHUNK_SIZE_DIGITS_MAX: usize = 15;

/// Parses `1*HEXDIG [ BWS ";" chunk-ext ]`; extensions are ignored (RFC 9112 7.1.1).
fn parse_chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 {
        return Err(HttpError::BadChunk("missing chunk size"));
    }
    if digits > CHUNK_SIZE_DIGITS_MAX {
        return Err(HttpError::BodyTooLarge);
    }
    let rest = trim_ows(&line[digits..]);
    if !rest.is_empty() && rest[0] != b';' {
        return Err(HttpError::BadChunk("invalid chunk size"));
    }
    let size = line[..digits]
        .iter()
        .filter_map(|&b| char::from(b).to_digit(16))
        .fold(0u64, |acc, d| acc << 4 | u64::from(d));
    usize::try_from(size).map_err(|_| HttpError::BodyTooLarge)
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use proptest::prelude::*;

    use super::super::testing::{
        assert_every_split, decode_bytewise, decode_one, summary, CHUNKED,
    };
    use super::super::{Decoder, HttpError, Limits, Method, HEADER_BYTES_MAX};
    use super::*;

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
    }
}
