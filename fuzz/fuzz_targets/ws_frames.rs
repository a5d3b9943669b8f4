//! Fuzz target: the server-side WebSocket frame decoder and the runtime message parser.
//!
//! Any byte stream, fed whole or in two pieces, must decode to the same messages or the same
//! error, and never panic; every text or binary message is then parsed as a runtime message.
#![no_main]

use bytes::{Bytes, BytesMut};
use lambda_at_home::protocols::runtime_messages::{parse_client_binary, parse_client_message};
use lambda_at_home::protocols::ws::{Decoder, Message, Role};
use libfuzzer_sys::fuzz_target;

/// Small limits so the fuzzer reaches the size checks.
const FRAME_BYTES_MAX: usize = 4096;
const MESSAGE_BYTES_MAX: usize = 8192;

fn decode_all(chunks: &[&[u8]]) -> (Vec<Message>, bool) {
    let mut decoder = Decoder::new(Role::Server, FRAME_BYTES_MAX, MESSAGE_BYTES_MAX);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let whole = decode_all(&[data]);
    let split = data.len() / 2;
    let pieces = decode_all(&[&data[..split], &data[split..]]);
    assert_eq!(whole, pieces, "decoding must not depend on how the bytes arrive");
    for message in whole.0 {
        match message {
            Message::Text(t) => {
                let _ = parse_client_message(&t);
            }
            Message::Binary(b) => {
                let _ = parse_client_binary(&Bytes::from(b));
            }
            _ => {}
        }
    }
});
