//! WebSocket (RFC 6455) codec for the Runtime API's `/2018-06-01/runtime/websocket` endpoint.
//!
//! Owns the opening handshake check, the frame decoder and the frame encoders; it does no I/O.
//! The per-core server reads into a `BytesMut` and calls [`Decoder::decode`], which splits each
//! consumed frame off that buffer and unmasks it in place, so an unfragmented message is handed
//! out without a copy. Fragmented messages are reassembled (one copy). Limits: a frame's payload
//! is at most `frame_bytes_max`, a reassembled message at most `message_bytes_max`, a control
//! frame at most [`CONTROL_BYTES_MAX`]; both are checked from the header, before any payload is
//! buffered. No extensions (compression) and no subprotocols are negotiated, so any reserved bit
//! is a protocol error. Text messages are always valid UTF-8 when they leave the decoder.

use bytes::{Buf, Bytes, BytesMut};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};

/// Largest payload of a single frame we accept.
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Largest reassembled message we accept.
pub const MESSAGE_BYTES_MAX: usize = 8 * 1024 * 1024;
/// RFC 6455 §5.5: control frames carry at most 125 payload bytes.
pub const CONTROL_BYTES_MAX: usize = 125;
/// The only protocol version RFC 6455 defines.
const VERSION: &str = "13";
/// Base64 of a 16-byte nonce: 22 significant characters and `==`.
const KEY_BASE64_BYTES: usize = 24;

// RFC 6455 §5.2 frame header. First byte: FIN, three reserved bits, the opcode.
const FIN_BIT: u8 = 0x80;
const RESERVED_BITS: u8 = 0x70;
const OPCODE_BITS: u8 = 0x0F;
// Second byte: MASK, then a 7-bit length, where two values announce a longer length after it.
const MASK_BIT: u8 = 0x80;
const LENGTH_BITS: u8 = 0x7F;
/// Largest payload length the 7-bit field holds itself.
const LENGTH_7_MAX: usize = 125;
/// This 7-bit length means: a 16-bit length follows.
const LENGTH_16_MARKER: u8 = 126;
/// This 7-bit length means: a 64-bit length follows.
const LENGTH_64_MARKER: u8 = 127;
/// Longest head of an unmasked (server) frame: 2 bytes and 8 of extended length.
pub const UNMASKED_FRAME_HEAD_BYTES_MAX: usize = 10;

/// Why an upgrade request was refused; [`HandshakeError::status`] is the HTTP status to answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandshakeError {
    #[error("WebSocket upgrade requires the GET method, got {0}")]
    Method(String),
    #[error("WebSocket upgrade requires HTTP/1.1 or later")]
    HttpVersion,
    #[error("missing or invalid Upgrade header: expected `Upgrade: websocket`")]
    Upgrade,
    #[error("Connection header must contain the `Upgrade` token")]
    Connection,
    #[error("missing Sec-WebSocket-Key header")]
    MissingKey,
    #[error("Sec-WebSocket-Key must be a base64-encoded 16-byte nonce")]
    InvalidKey,
    #[error("missing or unsupported Sec-WebSocket-Version: only version 13 is supported")]
    Version,
}

impl HandshakeError {
    /// HTTP status for the refusal: 426 when the client must change protocol version or
    /// upgrade, 400 for any other malformed request.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::Upgrade | HandshakeError::Version => 426,
            _ => 400,
        }
    }

    /// Headers the refusal must carry: RFC 7231 §6.5.15 requires `Upgrade` on a 426, and
    /// RFC 6455 §4.4 asks for the supported `Sec-WebSocket-Version`.
    pub fn response_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self.status() {
            426 => &[("Upgrade", "websocket"), ("Sec-WebSocket-Version", VERSION)],
            _ => &[],
        }
    }
}

/// Validates an upgrade request given its method, HTTP minor version and a header lookup
/// (lower-case name -> raw value; values borrow from the request, not from the name). Returns
/// the `Sec-WebSocket-Accept` value.
pub fn validate_upgrade<'h>(
    method: &str,
    version_minor: u8,
    header: &dyn Fn(&str) -> Option<&'h [u8]>,
) -> Result<String, HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::Method(method.to_owned()));
    }
    if version_minor < 1 {
        return Err(HandshakeError::HttpVersion);
    }
    if !header("upgrade").is_some_and(|v| has_token(v, b"websocket")) {
        return Err(HandshakeError::Upgrade);
    }
    if !header("connection").is_some_and(|v| has_token(v, b"upgrade")) {
        return Err(HandshakeError::Connection);
    }
    if header("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(VERSION.as_bytes()) {
        return Err(HandshakeError::Version);
    }
    let key = header("sec-websocket-key")
        .ok_or(HandshakeError::MissingKey)?
        .trim_ascii();
    if !is_valid_key(key) {
        return Err(HandshakeError::InvalidKey);
    }
    Ok(tungstenite::handshake::derive_accept_key(key))
}

/// True if the comma-separated header value contains `token` (ASCII case-insensitive).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// RFC 6455 §4.2.1: the key decodes to exactly 16 bytes, so it is 22 base64 characters and `==`,
/// and the last character carries only 2 significant bits.
fn is_valid_key(key: &[u8]) -> bool {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const LAST: &[u8] = b"AQgw";
    key.len() == KEY_BASE64_BYTES
        && key[..21].iter().all(|b| ALPHABET.contains(b))
        && LAST.contains(&key[21])
        && &key[22..] == b"=="
}

/// Appends `HTTP/1.1 101 Switching Protocols` with Upgrade, Connection, Sec-WebSocket-Accept.
pub fn write_switching_protocols(out: &mut Vec<u8>, accept: &str) {
    write_switching_protocols_with(out, accept, b"");
}

/// Request header of an upgrade that registers the runtime itself (docs/websocket-protocol.md,
/// "Registering in the upgrade request"): the instance's `LAMBDA_INSTANCE_ID`, as in `register`.
pub const INSTANCE_ID_HEADER: &str = "lambda-runtime-instance-id";
/// Optional companions of `INSTANCE_ID_HEADER`: `register`'s `runtime` and `version` (not checked).
pub const RUNTIME_NAME_HEADER: &str = "lambda-runtime-name";
pub const FUNCTION_VERSION_HEADER: &str = "lambda-runtime-function-version";

/// The `101` of an upgrade that registered by `INSTANCE_ID_HEADER`: it carries
/// `Lambda-Runtime-Registered: true`, and the client sends no `register`.
pub fn write_switching_protocols_registered(out: &mut Vec<u8>, accept: &str) {
    write_switching_protocols_with(out, accept, b"Lambda-Runtime-Registered: true\r\n");
}

fn write_switching_protocols_with(out: &mut Vec<u8>, accept: &str, extra: &[u8]) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: ",
    );
    out.extend_from_slice(accept.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(extra);
    out.extend_from_slice(b"\r\n");
}

/// Appends a complete HTTP/1.1 refusal of an upgrade request (status, advice headers, a
/// plain-text body naming the problem); the connection is closed after it.
pub fn write_handshake_rejection(out: &mut Vec<u8>, error: &HandshakeError) {
    let reason = match error.status() {
        426 => "Upgrade Required",
        _ => "Bad Request",
    };
    let body = format!("{error}\n");
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", error.status()).as_bytes());
    for (name, value) in error.response_headers() {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
}

/// One complete WebSocket message as the decoder hands it out.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Always valid UTF-8.
    Text(Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// Status code and reason, or `None` when the close frame had no body.
    Close(Option<(u16, String)>),
}

/// A protocol violation by the peer; the connection must be closed with [`WsError::close_code`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsError {
    #[error("reserved bits set in frame header (no extension was negotiated)")]
    ReservedBits,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("client frames must be masked")]
    UnmaskedFrame,
    #[error("server frames must not be masked")]
    MaskedFrame,
    #[error("control frames must not be fragmented")]
    FragmentedControl,
    #[error("control frame payload of {0} bytes exceeds 125")]
    ControlTooLong(u64),
    #[error("continuation frame without a message to continue")]
    UnexpectedContinuation,
    #[error("new data frame while a fragmented message is unfinished")]
    UnfinishedMessage,
    #[error("close frame with a 1-byte payload")]
    CloseTooShort,
    #[error("close code {0} must not be sent")]
    InvalidCloseCode(u16),
    #[error("frame payload of {len} bytes exceeds the limit of {max}")]
    FrameTooBig { len: u64, max: usize },
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooBig { len: u64, max: usize },
    #[error("text message or close reason is not valid UTF-8")]
    InvalidUtf8,
}

impl WsError {
    /// RFC 6455 §7.4.1 status code for the close frame that answers this error.
    pub fn close_code(&self) -> u16 {
        let code = match self {
            WsError::InvalidUtf8 => CloseCode::Invalid,
            WsError::FrameTooBig { .. } | WsError::MessageTooBig { .. } => CloseCode::Size,
            _ => CloseCode::Protocol,
        };
        code.into()
    }
}

/// Which end of the connection the decoder sits on; it decides the masking rule (RFC 6455 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Incoming frames come from a client and must be masked.
    Server,
    /// Incoming frames come from a server and must not be masked.
    Client,
}

/// A parsed frame header; `head_bytes` is its length on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    fin: bool,
    opcode: OpCode,
    mask: Option<[u8; 4]>,
    payload_bytes: u64,
    head_bytes: usize,
}

/// Parses a frame header from the start of `buf`; `Ok(None)` if it is not complete yet.
/// Only checks what the header alone decides; the decoder applies role and limits.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, WsError> {
    let [first, second, ..] = *buf else {
        return Ok(None);
    };
    if first & RESERVED_BITS != 0 {
        return Err(WsError::ReservedBits);
    }
    let opcode = OpCode::from(first & OPCODE_BITS);
    if matches!(
        opcode,
        OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_))
    ) {
        return Err(WsError::UnknownOpcode(first & OPCODE_BITS));
    }
    let (payload_bytes, mut at) = match second & LENGTH_BITS {
        LENGTH_16_MARKER => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        LENGTH_64_MARKER => match buf.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let mask = if second & MASK_BIT != 0 {
        match buf
            .get(at..at + 4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        {
            Some(m) => {
                at += 4;
                Some(m)
            }
            None => return Ok(None),
        }
    } else {
        None
    };
    let fin = first & FIN_BIT != 0;
    Ok(Some(Head {
        fin,
        opcode,
        mask,
        payload_bytes,
        head_bytes: at,
    }))
}

/// XORs `buf` with the 4-byte `mask` starting at mask offset 0 (RFC 6455 §5.3). Works eight
/// bytes at a time because a 1 MB payload is unmasked on the hot path.
pub fn apply_mask(buf: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    // Chunks are multiples of 8 = 2 × 4, so the tail starts at mask offset 0 again.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i & 3];
    }
}

/// The kind of a fragmented data message in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DataKind {
    Text,
    Binary,
}

/// Incremental frame decoder: frames in, complete messages out.
#[derive(Debug)]
pub struct Decoder {
    /// Decides whether incoming frames must or must not be masked.
    role: Role,
    /// Largest frame payload accepted; checked from the header before buffering.
    frame_bytes_max: usize,
    /// Largest reassembled message accepted.
    message_bytes_max: usize,
    /// The fragmented message being reassembled, if any. Control frames may interleave.
    partial: Option<(DataKind, BytesMut)>,
}

impl Decoder {
    pub fn new(role: Role, frame_bytes_max: usize, message_bytes_max: usize) -> Self {
        Decoder {
            role,
            frame_bytes_max,
            message_bytes_max,
            partial: None,
        }
    }

    /// `Ok(Some(msg))` per complete message, `Ok(None)` needs more bytes; splits consumed bytes
    /// off `buf`. For an unfragmented frame the payload is split off the buffer with no copy.
    /// After an error the connection must be closed; the decoder state is then unspecified.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, WsError> {
        loop {
            let Some(head) = parse_head(buf)? else {
                return Ok(None);
            };
            self.check_head(&head)?;
            // check_head bounded payload_bytes by a usize limit, so this cannot truncate.
            let frame_bytes = head.head_bytes + head.payload_bytes as usize;
            if buf.len() < frame_bytes {
                buf.reserve(frame_bytes - buf.len());
                return Ok(None);
            }
            let mut payload = buf.split_to(frame_bytes);
            payload.advance(head.head_bytes);
            if let Some(mask) = head.mask {
                apply_mask(&mut payload, mask);
            }
            if let Some(message) = self.on_frame(head, payload)? {
                return Ok(Some(message));
            }
        }
    }

    /// Applies the masking rule, the control frame rules and the size limits to a header.
    fn check_head(&self, head: &Head) -> Result<(), WsError> {
        match (self.role, head.mask.is_some()) {
            (Role::Server, false) => return Err(WsError::UnmaskedFrame),
            (Role::Client, true) => return Err(WsError::MaskedFrame),
            _ => {}
        }
        let len = head.payload_bytes;
        if let OpCode::Control(_) = head.opcode {
            if !head.fin {
                return Err(WsError::FragmentedControl);
            }
            if len > CONTROL_BYTES_MAX as u64 {
                return Err(WsError::ControlTooLong(len));
            }
            return Ok(());
        }
        if len > self.frame_bytes_max as u64 {
            return Err(WsError::FrameTooBig {
                len,
                max: self.frame_bytes_max,
            });
        }
        let buffered = self.partial.as_ref().map_or(0, |(_, b)| b.len() as u64);
        if buffered + len > self.message_bytes_max as u64 {
            let max = self.message_bytes_max;
            return Err(WsError::MessageTooBig {
                len: buffered + len,
                max,
            });
        }
        Ok(())
    }

    /// Turns one unmasked frame into a message, or stores it as a fragment (`Ok(None)`).
    fn on_frame(&mut self, head: Head, payload: BytesMut) -> Result<Option<Message>, WsError> {
        let kind = match head.opcode {
            OpCode::Control(Control::Ping) => return Ok(Some(Message::Ping(payload.freeze()))),
            OpCode::Control(Control::Pong) => return Ok(Some(Message::Pong(payload.freeze()))),
            OpCode::Control(_) => return parse_close(&payload).map(Some),
            OpCode::Data(Data::Text) => DataKind::Text,
            OpCode::Data(Data::Binary) => DataKind::Binary,
            OpCode::Data(_) => return self.on_continuation(head.fin, payload),
        };
        if self.partial.is_some() {
            return Err(WsError::UnfinishedMessage);
        }
        if head.fin {
            return finish(kind, payload.freeze()).map(Some);
        }
        self.partial = Some((kind, payload));
        Ok(None)
    }

    fn on_continuation(
        &mut self,
        fin: bool,
        payload: BytesMut,
    ) -> Result<Option<Message>, WsError> {
        let Some((kind, buffered)) = self.partial.as_mut() else {
            return Err(WsError::UnexpectedContinuation);
        };
        buffered.extend_from_slice(&payload);
        if !fin {
            return Ok(None);
        }
        let kind = *kind;
        let whole = std::mem::take(buffered).freeze();
        self.partial = None;
        finish(kind, whole).map(Some)
    }
}

/// Builds the final data message, validating UTF-8 for text (RFC 6455 §8.1).
fn finish(kind: DataKind, payload: Bytes) -> Result<Message, WsError> {
    match kind {
        DataKind::Binary => Ok(Message::Binary(payload)),
        DataKind::Text => match std::str::from_utf8(&payload) {
            Ok(_) => Ok(Message::Text(payload)),
            Err(_) => Err(WsError::InvalidUtf8),
        },
    }
}

/// Parses a close frame body (RFC 6455 §5.5.1): empty, or a status code and a UTF-8 reason.
fn parse_close(payload: &[u8]) -> Result<Message, WsError> {
    let (code, reason) = match payload {
        [] => return Ok(Message::Close(None)),
        [_] => return Err(WsError::CloseTooShort),
        [hi, lo, reason @ ..] => (u16::from_be_bytes([*hi, *lo]), reason),
    };
    if !CloseCode::from(code).is_allowed() {
        return Err(WsError::InvalidCloseCode(code));
    }
    let reason = std::str::from_utf8(reason).map_err(|_| WsError::InvalidUtf8)?;
    Ok(Message::Close(Some((code, reason.to_owned()))))
}

/// Appends a frame header (FIN set) for a payload of `len` bytes; `mask` is `Some` for client
/// frames (the caller masks the payload).
pub fn write_frame_head(out: &mut Vec<u8>, opcode: OpCode, len: usize, mask: Option<[u8; 4]>) {
    debug_assert!(matches!(opcode, OpCode::Data(_)) || len <= CONTROL_BYTES_MAX);
    let mask_bit = if mask.is_some() { MASK_BIT } else { 0 };
    out.push(FIN_BIT | u8::from(opcode));
    match len {
        0..=LENGTH_7_MAX => out.push(mask_bit | len as u8),
        _ if len <= usize::from(u16::MAX) => {
            out.push(mask_bit | LENGTH_16_MARKER);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(mask_bit | LENGTH_64_MARKER);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    if let Some(mask) = mask {
        out.extend_from_slice(&mask);
    }
}

/// Whether a frame starting with the byte `first` is a close frame.
pub fn is_close_frame_head(first: u8) -> bool {
    first & OPCODE_BITS == u8::from(OpCode::Control(Control::Close))
}

/// Appends a server close frame. The reason is cut at a character boundary so the payload
/// stays within [`CONTROL_BYTES_MAX`].
pub fn encode_close(out: &mut Vec<u8>, code: u16, reason: &str) {
    let mut end = reason.len().min(CONTROL_BYTES_MAX - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason.as_bytes()[..end];
    write_frame_head(out, OpCode::Control(Control::Close), 2 + reason.len(), None);
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(reason);
}

/// Appends a server pong echoing `payload`, cut to [`CONTROL_BYTES_MAX`] (a decoded ping's
/// payload always fits).
pub fn encode_pong(out: &mut Vec<u8>, payload: &[u8]) {
    let payload = &payload[..payload.len().min(CONTROL_BYTES_MAX)];
    write_frame_head(out, OpCode::Control(Control::Pong), payload.len(), None);
    out.extend_from_slice(payload);
}

/// Client side (tests, load generator): appends a whole frame masked with a random key.
pub fn encode_client_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    encode_masked_frame(out, opcode, payload, rand::random());
}

/// Appends a whole frame masked with the given key.
pub fn encode_masked_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], mask: [u8; 4]) {
    write_frame_head(out, opcode, payload.len(), Some(mask));
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], mask);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;
    use tungstenite::protocol::frame::FrameHeader;

    const TEXT: OpCode = OpCode::Data(Data::Text);
    const BINARY: OpCode = OpCode::Data(Data::Binary);
    const CONTINUE: OpCode = OpCode::Data(Data::Continue);
    const PING: OpCode = OpCode::Control(Control::Ping);
    const CLOSE: OpCode = OpCode::Control(Control::Close);
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    /// Builds a frame with tungstenite's header encoder, an independent reference for ours.
    fn frame(opcode: OpCode, fin: bool, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let header = FrameHeader {
            is_final: fin,
            opcode,
            mask,
            ..FrameHeader::default()
        };
        let mut out = Vec::new();
        header
            .format(payload.len() as u64, &mut out)
            .expect("write to Vec");
        let start = out.len();
        out.extend_from_slice(payload);
        if let Some(mask) = mask {
            for (i, b) in out[start..].iter_mut().enumerate() {
                *b ^= mask[i % 4];
            }
        }
        out
    }

    fn masked(opcode: OpCode, fin: bool, payload: &[u8]) -> Vec<u8> {
        frame(opcode, fin, payload, Some(MASK))
    }

    fn server() -> Decoder {
        Decoder::new(Role::Server, FRAME_BYTES_MAX, MESSAGE_BYTES_MAX)
    }

    /// Decodes every complete message in `bytes`, asserting the buffer is then empty.
    fn decode_all(decoder: &mut Decoder, bytes: &[u8]) -> Result<Vec<Message>, WsError> {
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = decoder.decode(&mut buf)? {
            out.push(m);
        }
        assert!(buf.is_empty(), "{} bytes left undecoded", buf.len());
        Ok(out)
    }

    fn decode_one(bytes: &[u8]) -> Result<Message, WsError> {
        let mut messages = decode_all(&mut server(), bytes)?;
        assert_eq!(messages.len(), 1);
        Ok(messages.remove(0))
    }

    /// Feeds `bytes` in the given chunk sizes, as reads from a socket would.
    fn decode_chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Message> {
        let mut decoder = server();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        for &cut in cuts.iter().chain(std::iter::once(&bytes.len())) {
            let cut = cut.clamp(at, bytes.len());
            buf.extend_from_slice(&bytes[at..cut]);
            at = cut;
            while let Some(m) = decoder.decode(&mut buf).expect("valid stream") {
                out.push(m);
            }
        }
        assert!(buf.is_empty());
        out
    }

    /// A stream with every frame kind: plain text, fragmented binary with a ping and a pong
    /// between fragments, a 16-bit length frame, and a close.
    fn mixed_stream() -> (Vec<u8>, Vec<Message>) {
        let long = vec![b'x'; 300];
        let mut bytes = masked(TEXT, true, b"{\"type\":\"ping\"}");
        bytes.extend(masked(BINARY, false, b"ab"));
        bytes.extend(masked(PING, true, b"p"));
        bytes.extend(masked(CONTINUE, false, b""));
        bytes.extend(masked(OpCode::Control(Control::Pong), true, b""));
        bytes.extend(masked(CONTINUE, true, b"cd"));
        bytes.extend(masked(TEXT, true, &long));
        bytes.extend(masked(CLOSE, true, &[0x03, 0xe8, b'o', b'k']));
        let expected = vec![
            Message::Text(Bytes::from_static(b"{\"type\":\"ping\"}")),
            Message::Ping(Bytes::from_static(b"p")),
            Message::Pong(Bytes::new()),
            Message::Binary(Bytes::from_static(b"abcd")),
            Message::Text(Bytes::from(long)),
            Message::Close(Some((1000, "ok".to_owned()))),
        ];
        (bytes, expected)
    }

    #[test]
    fn close_frames_are_recognised_by_their_first_byte() {
        let mut close = Vec::new();
        encode_close(&mut close, 1000, "");
        assert!(is_close_frame_head(close[0]));
        let mut pong = Vec::new();
        encode_pong(&mut pong, b"p");
        assert!(!is_close_frame_head(pong[0]));
        let mut text = Vec::new();
        write_frame_head(&mut text, OpCode::Data(Data::Text), 1, None);
        assert!(!is_close_frame_head(text[0]));
    }

    #[test]
    fn round_trip_client_frame() {
        let mut out = Vec::new();
        encode_client_frame(&mut out, TEXT, "héllo".as_bytes());
        assert_eq!(out[1] & 0x80, 0x80, "client frames are masked");
        assert_ne!(
            &out[6..],
            "héllo".as_bytes(),
            "payload is masked on the wire"
        );
        let decoded = decode_one(&out).expect("valid");
        assert_eq!(decoded, Message::Text(Bytes::from("héllo")));
    }

    #[test]
    fn mixed_stream_decodes_in_order() {
        let (bytes, expected) = mixed_stream();
        assert_eq!(decode_all(&mut server(), &bytes).expect("valid"), expected);
    }

    #[test]
    fn split_at_every_offset() {
        let (bytes, expected) = mixed_stream();
        for cut in 0..=bytes.len() {
            assert_eq!(decode_chunked(&bytes, &[cut]), expected, "cut at {cut}");
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let (bytes, expected) = mixed_stream();
        let cuts: Vec<usize> = (0..bytes.len()).collect();
        assert_eq!(decode_chunked(&bytes, &cuts), expected);
    }

    #[test]
    fn incomplete_frame_consumes_nothing() {
        let bytes = masked(BINARY, true, &[7; 200]);
        let mut buf = BytesMut::from(&bytes[..bytes.len() - 1]);
        assert_eq!(server().decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), bytes.len() - 1);
        assert!(
            buf.capacity() >= bytes.len(),
            "decoder reserves room for the frame"
        );
    }

    #[test]
    fn unfragmented_payload_is_not_copied() {
        let mut buf = BytesMut::from(&masked(BINARY, true, &[1; 1000])[..]);
        let range = buf.as_ptr() as usize..buf.as_ptr() as usize + buf.len();
        let Some(Message::Binary(payload)) = server().decode(&mut buf).expect("valid") else {
            panic!("expected a binary message");
        };
        assert!(range.contains(&(payload.as_ptr() as usize)));
        assert_eq!(payload, vec![1u8; 1000]);
    }

    #[test]
    fn server_rejects_unmasked_frames() {
        let bytes = frame(TEXT, true, b"hi", None);
        assert_eq!(decode_one(&bytes), Err(WsError::UnmaskedFrame));
        assert_eq!(WsError::UnmaskedFrame.close_code(), 1002);
    }

    #[test]
    fn client_accepts_unmasked_and_rejects_masked_frames() {
        let mut client = Decoder::new(Role::Client, FRAME_BYTES_MAX, MESSAGE_BYTES_MAX);
        let unmasked = frame(BINARY, true, b"hi", None);
        let decoded = decode_all(&mut client, &unmasked).expect("valid");
        assert_eq!(decoded, vec![Message::Binary(Bytes::from_static(b"hi"))]);
        let masked = masked(BINARY, true, b"hi");
        assert_eq!(decode_all(&mut client, &masked), Err(WsError::MaskedFrame));
    }

    #[test]
    fn fragmented_text_with_char_split_across_fragments() {
        let text = "añb".as_bytes(); // ñ is two bytes; split it between fragments
        let mut bytes = masked(TEXT, false, &text[..2]);
        bytes.extend(masked(PING, true, b""));
        bytes.extend(masked(CONTINUE, true, &text[2..]));
        let decoded = decode_all(&mut server(), &bytes).expect("valid");
        let expected = vec![
            Message::Ping(Bytes::new()),
            Message::Text(Bytes::from("añb")),
        ];
        assert_eq!(decoded, expected);
    }

    #[test]
    fn oversize_frame_rejected_from_header_alone() {
        let mut decoder = Decoder::new(Role::Server, 1000, 4000);
        let bytes = masked(BINARY, true, &[0; 1001]);
        let mut buf = BytesMut::from(&bytes[..8]); // header only
        let err = decoder.decode(&mut buf).expect_err("too big");
        assert_eq!(
            err,
            WsError::FrameTooBig {
                len: 1001,
                max: 1000
            }
        );
        assert_eq!(err.close_code(), 1009);
    }

    #[test]
    fn oversize_message_rejected() {
        let mut decoder = Decoder::new(Role::Server, 1000, 1500);
        let mut bytes = masked(BINARY, false, &[0; 1000]);
        bytes.extend(masked(CONTINUE, true, &[0; 501]));
        let err = decode_all(&mut decoder, &bytes).expect_err("too big");
        assert_eq!(
            err,
            WsError::MessageTooBig {
                len: 1501,
                max: 1500
            }
        );
        assert_eq!(err.close_code(), 1009);
        let mut decoder = Decoder::new(Role::Server, 1000, 1500);
        let mut bytes = masked(BINARY, false, &[0; 1000]);
        bytes.extend(masked(CONTINUE, true, &[0; 500]));
        assert_eq!(
            decode_all(&mut decoder, &bytes)
                .expect("at the limit")
                .len(),
            1
        );
    }

    #[test]
    fn largest_length_is_frame_too_big() {
        let mut bytes = vec![0x82, 0xFF];
        bytes.extend_from_slice(&u64::MAX.to_be_bytes());
        bytes.extend_from_slice(&MASK);
        let err = decode_one(&bytes).expect_err("too big");
        assert!(matches!(err, WsError::FrameTooBig { len: u64::MAX, .. }));
    }

    #[test]
    fn invalid_utf8_text() {
        let err = decode_one(&masked(TEXT, true, &[b'a', 0xFF])).expect_err("bad utf-8");
        assert_eq!(err, WsError::InvalidUtf8);
        assert_eq!(err.close_code(), 1007);
        // A character cut off at the end of the last fragment is invalid too.
        let mut bytes = masked(TEXT, false, b"a");
        bytes.extend(masked(CONTINUE, true, &"ñ".as_bytes()[..1]));
        assert_eq!(decode_all(&mut server(), &bytes), Err(WsError::InvalidUtf8));
    }

    #[test]
    fn binary_may_hold_any_bytes() {
        let decoded = decode_one(&masked(BINARY, true, &[0xFF, 0xFE])).expect("valid");
        assert_eq!(decoded, Message::Binary(Bytes::from_static(&[0xFF, 0xFE])));
    }

    #[test]
    fn reserved_bits_rejected() {
        for bit in [0x40u8, 0x20, 0x10] {
            let mut bytes = masked(TEXT, true, b"x");
            bytes[0] |= bit;
            let err = decode_one(&bytes).expect_err("reserved bit");
            assert_eq!(err, WsError::ReservedBits);
            assert_eq!(err.close_code(), 1002);
        }
    }

    #[test]
    fn unknown_opcodes_rejected() {
        for op in [3u8, 7, 0xB, 0xF] {
            let mut bytes = masked(TEXT, true, b"x");
            bytes[0] = 0x80 | op;
            assert_eq!(decode_one(&bytes), Err(WsError::UnknownOpcode(op)));
        }
    }

    #[test]
    fn control_frame_rules() {
        assert_eq!(
            decode_one(&masked(PING, false, b"")),
            Err(WsError::FragmentedControl)
        );
        let long = masked(PING, true, &[0; 126]);
        assert_eq!(decode_one(&long), Err(WsError::ControlTooLong(126)));
        let max = masked(PING, true, &[9; 125]);
        assert_eq!(
            decode_one(&max),
            Ok(Message::Ping(Bytes::from(vec![9; 125])))
        );
    }

    #[test]
    fn continuation_rules() {
        let lone = masked(CONTINUE, true, b"x");
        assert_eq!(decode_one(&lone), Err(WsError::UnexpectedContinuation));
        let mut interleaved = masked(TEXT, false, b"a");
        interleaved.extend(masked(BINARY, true, b"b"));
        let result = decode_all(&mut server(), &interleaved);
        assert_eq!(result, Err(WsError::UnfinishedMessage));
    }

    #[test]
    fn close_frame_parsing() {
        assert_eq!(
            decode_one(&masked(CLOSE, true, b"")),
            Ok(Message::Close(None))
        );
        let normal = masked(CLOSE, true, b"\x03\xe8bye");
        let expected = Message::Close(Some((1000, "bye".to_owned())));
        assert_eq!(decode_one(&normal), Ok(expected));
        let app = masked(CLOSE, true, &4000u16.to_be_bytes());
        assert_eq!(
            decode_one(&app),
            Ok(Message::Close(Some((4000, String::new()))))
        );
        assert_eq!(
            decode_one(&masked(CLOSE, true, b"\x03")),
            Err(WsError::CloseTooShort)
        );
        for code in [0u16, 999, 1005, 1006, 1015, 5000] {
            let bytes = masked(CLOSE, true, &code.to_be_bytes());
            assert_eq!(decode_one(&bytes), Err(WsError::InvalidCloseCode(code)));
        }
        let bad_reason = masked(CLOSE, true, b"\x03\xe8\xff");
        assert_eq!(decode_one(&bad_reason), Err(WsError::InvalidUtf8));
    }

    #[test]
    fn server_close_and_pong_decode_on_the_client() {
        let mut out = Vec::new();
        encode_close(&mut out, 1008, "register failed");
        encode_pong(&mut out, b"abc");
        let mut client = Decoder::new(Role::Client, FRAME_BYTES_MAX, MESSAGE_BYTES_MAX);
        let decoded = decode_all(&mut client, &out).expect("valid");
        let expected = vec![
            Message::Close(Some((1008, "register failed".to_owned()))),
            Message::Pong(Bytes::from_static(b"abc")),
        ];
        assert_eq!(decoded, expected);
    }

    #[test]
    fn close_reason_is_cut_at_a_char_boundary() {
        let reason = "é".repeat(100); // 200 bytes; 123 is mid-character
        let mut out = Vec::new();
        encode_close(&mut out, 1011, &reason);
        assert_eq!(out[1] as usize, 2 + 122);
        let mut client = Decoder::new(Role::Client, FRAME_BYTES_MAX, MESSAGE_BYTES_MAX);
        let decoded = decode_all(&mut client, &out).expect("valid");
        assert_eq!(decoded, vec![Message::Close(Some((1011, "é".repeat(61))))]);
    }

    #[test]
    fn frame_head_matches_tungstenite() {
        for len in [0usize, 1, 125, 126, 127, 65535, 65536, 1 << 20] {
            for mask in [None, Some(MASK)] {
                let mut ours = Vec::new();
                write_frame_head(&mut ours, BINARY, len, mask);
                let header = FrameHeader {
                    opcode: BINARY,
                    mask,
                    ..FrameHeader::default()
                };
                let mut theirs = Vec::new();
                header
                    .format(len as u64, &mut theirs)
                    .expect("write to Vec");
                assert_eq!(ours, theirs, "len {len} mask {mask:?}");
                let parsed = parse_head(&ours).expect("valid").expect("complete");
                let (their_head, their_len) = FrameHeader::parse(&mut Cursor::new(&ours))
                    .expect("valid")
                    .expect("complete");
                assert_eq!(parsed.payload_bytes, their_len);
                assert_eq!(parsed.mask, their_head.mask);
                assert_eq!(parsed.head_bytes, ours.len());
                assert!(parsed.fin && their_head.is_final);
            }
        }
    }

    #[test]
    fn mask_matches_bytewise_xor_at_any_alignment() {
        let data: Vec<u8> = (0..64u8).collect();
        for start in 0..8 {
            for len in 0..40 {
                let mut fast = data[start..start + len].to_vec();
                apply_mask(&mut fast[..], MASK);
                let slow: Vec<u8> = data[start..start + len]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ MASK[i % 4])
                    .collect();
                assert_eq!(fast, slow);
            }
        }
    }

    /// An in-memory socket so tungstenite itself can play the other end.
    struct Pipe {
        input: Cursor<Vec<u8>>,
        output: Vec<u8>,
    }

    impl std::io::Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.input.read(buf)
        }
    }

    impl std::io::Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.output.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn interoperates_with_tungstenite() {
        use tungstenite::protocol::{Role as TRole, WebSocket};
        use tungstenite::Message as TMessage;
        let pipe = Pipe {
            input: Cursor::new(Vec::new()),
            output: Vec::new(),
        };
        let mut peer = WebSocket::from_raw_socket(pipe, TRole::Client, None);
        let big = "z".repeat(70_000);
        peer.send(TMessage::text(big.clone())).expect("send");
        peer.send(TMessage::Ping(Bytes::from_static(b"hb")))
            .expect("send");
        let sent = std::mem::take(&mut peer.get_mut().output);
        let decoded = decode_all(&mut server(), &sent).expect("valid");
        let expected = vec![
            Message::Text(Bytes::from(big)),
            Message::Ping(Bytes::from("hb")),
        ];
        assert_eq!(decoded, expected);

        let mut reply = Vec::new();
        write_frame_head(&mut reply, TEXT, 5, None);
        reply.extend_from_slice(b"hello");
        encode_close(&mut reply, 1000, "done");
        peer.get_mut().input = Cursor::new(reply);
        assert_eq!(peer.read().expect("text"), TMessage::text("hello"));
        let TMessage::Close(Some(close)) = peer.read().expect("close") else {
            panic!("expected a close frame");
        };
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (1000, "done")
        );
    }

    const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

    /// The headers of the `curl -i -N -H ...` check in `docs/websocket-protocol.md`, plus curl's
    /// own.
    fn spec_headers(name: &str) -> Option<&'static [u8]> {
        match name {
            "host" => Some(b"127.0.0.1:9001"),
            "connection" => Some(b"Upgrade"),
            "upgrade" => Some(b"websocket"),
            "sec-websocket-key" => Some(KEY),
            "sec-websocket-version" => Some(b"13"),
            _ => None,
        }
    }

    /// Those headers with one replaced (`Some`) or removed (`None`).
    fn with(
        name: &'static str,
        value: Option<&'static [u8]>,
    ) -> impl Fn(&str) -> Option<&'static [u8]> {
        move |n: &str| if n == name { value } else { spec_headers(n) }
    }

    #[test]
    fn spec_curl_request_is_accepted() {
        // What the documented `curl -i -N -H ...` sends, with curl's own headers.
        let request = "GET /2018-06-01/runtime/websocket?fn=test-function HTTP/1.1\r\n\
                       Host: 127.0.0.1:9001\r\nUser-Agent: curl/8.5.0\r\nAccept: */*\r\n\
                       Connection: Upgrade\r\nUpgrade: websocket\r\n\
                       Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                       Sec-WebSocket-Version: 13\r\n\r\n"
            .to_owned();
        let headers: Vec<(String, &[u8])> = request
            .split("\r\n")
            .skip(1)
            .filter_map(|line| line.split_once(": "))
            .map(|(name, value)| (name.to_ascii_lowercase(), value.as_bytes()))
            .collect();
        // The lookup borrows values from the request, as the server's will.
        let lookup = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        let accept = validate_upgrade("GET", 1, &lookup).expect("valid");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        let mut out = Vec::new();
        write_switching_protocols(&mut out, &accept);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
        );
        let mut out = Vec::new();
        write_switching_protocols_registered(&mut out, &accept);
        assert_eq!(
            out,
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
              Lambda-Runtime-Registered: true\r\n\r\n"
        );
    }

    #[test]
    fn header_tokens_are_case_insensitive_lists() {
        let h = with("connection", Some(b"keep-alive, Upgrade"));
        assert!(validate_upgrade("GET", 1, &h).is_ok());
        let h = with("upgrade", Some(b" WebSocket "));
        assert!(validate_upgrade("GET", 1, &h).is_ok());
    }

    #[test]
    fn handshake_errors() {
        type Lookup<'a> = &'a dyn Fn(&str) -> Option<&'static [u8]>;
        let cases: [(&str, u8, Lookup, HandshakeError, u16); 9] = [
            (
                "POST",
                1,
                &spec_headers,
                HandshakeError::Method("POST".into()),
                400,
            ),
            ("GET", 0, &spec_headers, HandshakeError::HttpVersion, 400),
            (
                "GET",
                1,
                &with("upgrade", None),
                HandshakeError::Upgrade,
                426,
            ),
            (
                "GET",
                1,
                &with("upgrade", Some(b"h2c")),
                HandshakeError::Upgrade,
                426,
            ),
            (
                "GET",
                1,
                &with("connection", Some(b"close")),
                HandshakeError::Connection,
                400,
            ),
            (
                "GET",
                1,
                &with("sec-websocket-key", None),
                HandshakeError::MissingKey,
                400,
            ),
            (
                "GET",
                1,
                &with("sec-websocket-key", Some(b"c2hvcnQ=")),
                HandshakeError::InvalidKey,
                400,
            ),
            (
                "GET",
                1,
                &with("sec-websocket-version", Some(b"8")),
                HandshakeError::Version,
                426,
            ),
            (
                "GET",
                1,
                &with("sec-websocket-version", None),
                HandshakeError::Version,
                426,
            ),
        ];
        for (method, minor, headers, expected, status) in cases {
            let err = validate_upgrade(method, minor, headers).expect_err("invalid");
            assert_eq!(err, expected);
            assert_eq!(err.status(), status, "{err}");
        }
    }

    #[test]
    fn keys_must_decode_to_16_bytes() {
        for bad in [
            &b"dGhlIHNhbXBsZSBub25jZQ="[..],
            b"dGhlIHNhbXBsZSBub25jZR==",
            b"dGhl*HNhbXBsZSBub25jZQ==",
        ] {
            assert!(!is_valid_key(bad), "{}", String::from_utf8_lossy(bad));
        }
        assert!(is_valid_key(b"AAAAAAAAAAAAAAAAAAAAAA=="));
    }

    #[test]
    fn version_refusal_advises_version_13() {
        let err = validate_upgrade("GET", 1, &with("sec-websocket-version", Some(b"8")))
            .expect_err("wrong version");
        let mut out = Vec::new();
        write_handshake_rejection(&mut out, &err);
        let text = String::from_utf8(out).expect("ascii");
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
        assert!(text.contains("\r\nUpgrade: websocket\r\n"), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("only version 13"));
    }

    /// Splits `payload` into fragments at the given (sorted, clamped) cut points.
    fn fragments<'a>(payload: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
        points.sort_unstable();
        let mut at = 0;
        let mut out = Vec::new();
        for p in points {
            out.push(&payload[at..p]);
            at = p;
        }
        out.push(&payload[at..]);
        out
    }

    proptest! {
        #[test]
        fn prop_round_trip(
            messages in proptest::collection::vec(
                (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..2000),
                 proptest::collection::vec(any::<usize>(), 0..4)),
                1..5),
            chunk_cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut bytes = Vec::new();
            let mut expected = Vec::new();
            for (is_text, payload, cuts) in &messages {
                let (op, payload) = if *is_text {
                    let text = String::from_utf8_lossy(payload).into_owned().into_bytes();
                    (TEXT, text)
                } else {
                    (BINARY, payload.clone())
                };
                let parts = fragments(&payload, cuts);
                for (i, part) in parts.iter().enumerate() {
                    let opcode = if i == 0 { op } else { CONTINUE };
                    let mask = rand::random();
                    bytes.extend(frame(opcode, i + 1 == parts.len(), part, Some(mask)));
                }
                let payload = Bytes::from(payload);
                expected.push(if *is_text { Message::Text(payload) } else { Message::Binary(payload) });
            }
            let mut cuts: Vec<usize> = chunk_cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            prop_assert_eq!(decode_chunked(&bytes, &cuts), expected);
        }

        #[test]
        fn prop_client_frame_round_trip(payload in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            let mut out = Vec::new();
            encode_client_frame(&mut out, BINARY, &payload);
            prop_assert_eq!(decode_one(&out), Ok(Message::Binary(Bytes::from(payload))));
        }
    }
}
