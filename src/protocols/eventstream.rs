//! AWS's event-stream framing (`application/vnd.amazon.eventstream`), the body of an
//! `InvokeWithResponseStream` answer: the encoder of the two events Lambda sends
//! (`PayloadChunk`, `InvokeComplete`) and a decoder, used by the tests and by any client of ours.
//!
//! A message is `[u32 total_len][u32 headers_len][u32 crc32(first 8 bytes)][headers][payload]
//! [u32 crc32(everything before)]`, all big-endian. A header is `[u8 name_len][name][u8 type]
//! [value]`; Lambda uses only type 7 (string: `[u16 len][bytes]`), which is all this encodes and
//! decodes. Pure functions over byte buffers: no I/O, no state; runs on whichever thread calls it.
//! Limits: a message is at most `MESSAGE_BYTES_MAX` (AWS's own decoders refuse larger ones), so
//! a larger payload is split over several `PayloadChunk`s by `payload_chunks`.

use bytes::{BufMut, Bytes, BytesMut};

/// Largest message AWS's event-stream decoders accept (16 MiB); `payload_chunks` keeps every
/// `PayloadChunk` below it.
pub const MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Largest payload put in one `PayloadChunk`: a runtime's chunk larger than this goes out as
/// several events, so each message stays well under `MESSAGE_BYTES_MAX` with its headers.
pub const CHUNK_PAYLOAD_BYTES_MAX: usize = 1024 * 1024;
/// Prelude (total length, headers length, prelude CRC) plus the trailing message CRC.
const FRAMING_BYTES: usize = 16;
/// The header value type "string" of the event-stream format.
const TYPE_STRING: u8 = 7;

/// One event as decoded: its string headers in order, and its payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl Message {
    /// The value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why bytes are not a valid event-stream message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("prelude CRC mismatch")]
    PreludeCrc,
    #[error("message CRC mismatch")]
    MessageCrc,
    #[error("message length {0} out of bounds")]
    Length(usize),
    #[error("malformed header section")]
    Headers,
}

/// Encodes one event message with `headers` (all strings) and `payload`.
pub fn encode(out: &mut BytesMut, headers: &[(&str, &str)], payload: &[u8]) {
    let headers_len: usize = headers
        .iter()
        .map(|(n, v)| 1 + n.len() + 1 + 2 + v.len())
        .sum();
    let total = FRAMING_BYTES + headers_len + payload.len();
    let start = out.len();
    out.reserve(total);
    out.put_u32(total as u32);
    out.put_u32(headers_len as u32);
    let prelude_crc = crc32fast::hash(&out[start..start + 8]);
    out.put_u32(prelude_crc);
    for (name, value) in headers {
        debug_assert!(name.len() <= u8::MAX as usize && value.len() <= u16::MAX as usize);
        out.put_u8(name.len() as u8);
        out.put_slice(name.as_bytes());
        out.put_u8(TYPE_STRING);
        out.put_u16(value.len() as u16);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(payload);
    let crc = crc32fast::hash(&out[start..]);
    out.put_u32(crc);
}

/// `PayloadChunk` events for `payload`, one per `CHUNK_PAYLOAD_BYTES_MAX` slice (none for an
/// empty payload: an empty chunk tells the caller nothing).
pub fn payload_chunks(out: &mut BytesMut, payload: &[u8]) {
    for part in payload.chunks(CHUNK_PAYLOAD_BYTES_MAX) {
        encode(
            out,
            &[
                (":event-type", "PayloadChunk"),
                (":content-type", "application/octet-stream"),
                (":message-type", "event"),
            ],
            part,
        );
    }
}

/// The `InvokeComplete` event: `{"ErrorCode","ErrorDetails","LogResult"}`, each only when set,
/// as Lambda sends it.
pub fn invoke_complete(
    out: &mut BytesMut,
    error_code: Option<&str>,
    error_details: Option<&str>,
    log_result: Option<&str>,
) {
    let mut body = serde_json::Map::new();
    if let Some(code) = error_code {
        body.insert("ErrorCode".into(), code.into());
    }
    if let Some(details) = error_details {
        body.insert("ErrorDetails".into(), details.into());
    }
    if let Some(log) = log_result {
        body.insert("LogResult".into(), log.into());
    }
    let payload = serde_json::Value::Object(body).to_string();
    encode(
        out,
        &[
            (":event-type", "InvokeComplete"),
            (":content-type", "application/json"),
            (":message-type", "event"),
        ],
        payload.as_bytes(),
    );
}

/// Decodes the first message of `buf`: `Ok(None)` when it is not complete yet; on success the
/// message's bytes are split off `buf`.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Message>, DecodeError> {
    if buf.len() < 12 {
        return Ok(None);
    }
    let total = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let headers_len = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    let prelude_crc = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
    if crc32fast::hash(&buf[..8]) != prelude_crc {
        return Err(DecodeError::PreludeCrc);
    }
    if total > MESSAGE_BYTES_MAX || total < FRAMING_BYTES + headers_len {
        return Err(DecodeError::Length(total));
    }
    if buf.len() < total {
        return Ok(None);
    }
    let message = buf.split_to(total).freeze();
    let crc_at = total - 4;
    let crc = u32::from_be_bytes([
        message[crc_at],
        message[crc_at + 1],
        message[crc_at + 2],
        message[crc_at + 3],
    ]);
    if crc32fast::hash(&message[..crc_at]) != crc {
        return Err(DecodeError::MessageCrc);
    }
    let headers = decode_headers(&message[12..12 + headers_len])?;
    Ok(Some(Message {
        headers,
        payload: message.slice(12 + headers_len..crc_at),
    }))
}

fn decode_headers(mut section: &[u8]) -> Result<Vec<(String, String)>, DecodeError> {
    let mut headers = Vec::new();
    while let [name_len, rest @ ..] = section {
        let name_len = *name_len as usize;
        let name = rest.get(..name_len).ok_or(DecodeError::Headers)?;
        let rest = &rest[name_len..];
        let [TYPE_STRING, hi, lo, rest @ ..] = rest else {
            return Err(DecodeError::Headers);
        };
        let value_len = u16::from_be_bytes([*hi, *lo]) as usize;
        let value = rest.get(..value_len).ok_or(DecodeError::Headers)?;
        headers.push((
            String::from_utf8(name.to_vec()).map_err(|_| DecodeError::Headers)?,
            String::from_utf8(value.to_vec()).map_err(|_| DecodeError::Headers)?,
        ));
        section = &rest[value_len..];
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message survives being cut at any offset (boto3's decoder in
    /// `tests/boto3_streaming.py` checks the same bytes against AWS's own implementation).
    #[test]
    fn round_trip_at_every_split() {
        let mut wire = BytesMut::new();
        payload_chunks(&mut wire, b"hello ");
        payload_chunks(&mut wire, b"world");
        invoke_complete(&mut wire, Some("Sandbox.Timedout"), Some("late"), None);
        let whole = wire.freeze();
        for split in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..split]);
            let mut got = Vec::new();
            while let Some(m) = decode(&mut buf).unwrap() {
                got.push(m);
            }
            buf.extend_from_slice(&whole[split..]);
            while let Some(m) = decode(&mut buf).unwrap() {
                got.push(m);
            }
            assert!(buf.is_empty());
            assert_eq!(got.len(), 3, "split at {split}");
            assert_eq!(got[0].header(":event-type"), Some("PayloadChunk"));
            assert_eq!(&got[0].payload[..], b"hello ");
            assert_eq!(&got[1].payload[..], b"world");
            assert_eq!(got[2].header(":event-type"), Some("InvokeComplete"));
            assert_eq!(got[2].header(":content-type"), Some("application/json"));
            let body: serde_json::Value = serde_json::from_slice(&got[2].payload).unwrap();
            assert_eq!(
                body,
                serde_json::json!({"ErrorCode": "Sandbox.Timedout", "ErrorDetails": "late"})
            );
        }
    }

    #[test]
    fn layout_matches_the_format() {
        let mut wire = BytesMut::new();
        encode(&mut wire, &[("a", "bc")], b"xyz");
        // 16 bytes of framing, one header of 1+1+1+2+2 = 7 bytes, 3 bytes of payload.
        assert_eq!(wire.len(), 26);
        assert_eq!(&wire[..4], &26u32.to_be_bytes());
        assert_eq!(&wire[4..8], &7u32.to_be_bytes());
        assert_eq!(&wire[12..19], b"\x01a\x07\x00\x02bc");
        assert_eq!(&wire[19..22], b"xyz");
        let crc = crc32fast::hash(&wire[..22]);
        assert_eq!(&wire[22..], &crc.to_be_bytes());
    }

    #[test]
    fn corrupt_messages_are_refused() {
        let mut wire = BytesMut::new();
        encode(&mut wire, &[("a", "b")], b"payload");
        let mut bad_prelude = wire.clone();
        bad_prelude[1] ^= 1;
        assert_eq!(decode(&mut bad_prelude), Err(DecodeError::PreludeCrc));
        let mut bad_body = wire.clone();
        let last = bad_body.len() - 6;
        bad_body[last] ^= 1;
        assert_eq!(decode(&mut bad_body), Err(DecodeError::MessageCrc));
    }

    #[test]
    fn large_payloads_are_split() {
        let mut wire = BytesMut::new();
        let payload = vec![7u8; CHUNK_PAYLOAD_BYTES_MAX * 2 + 5];
        payload_chunks(&mut wire, &payload);
        let mut sizes = Vec::new();
        while let Some(m) = decode(&mut wire).unwrap() {
            sizes.push(m.payload.len());
        }
        assert_eq!(sizes, [CHUNK_PAYLOAD_BYTES_MAX, CHUNK_PAYLOAD_BYTES_MAX, 5]);
        payload_chunks(&mut wire, b"");
        assert!(wire.is_empty());
    }
}
