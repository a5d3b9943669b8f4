//! WebSocket Runtime API hot paths: frame decoding, invocation encoding, response parsing.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use lambda_at_home::protocols::{runtime_messages, ws};
use tungstenite::protocol::frame::coding::{Data, OpCode};

const TEXT: OpCode = OpCode::Data(Data::Text);
const SIZES: [(&str, usize); 2] = [("64B", 64), ("1MB", 1024 * 1024)];

/// A JSON string literal of exactly `bytes` bytes, quotes included.
fn json_string_of(bytes: usize) -> String {
    format!("\"{}\"", "x".repeat(bytes - 2))
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("ws_decode_masked_text");
    for (name, bytes) in SIZES {
        let mut frame = Vec::new();
        ws::encode_client_frame(&mut frame, TEXT, json_string_of(bytes).as_bytes());
        group.throughput(Throughput::Bytes(bytes as u64));
        // Header parse, in-place unmask and UTF-8 check of one client text frame (buffer copy excluded).
        group.bench_function(name, |b| {
            let mut decoder =
                ws::Decoder::new(ws::Role::Server, ws::FRAME_BYTES_MAX, ws::MESSAGE_BYTES_MAX);
            b.iter_batched(
                || BytesMut::from(&frame[..]),
                |mut buf| decoder.decode(&mut buf),
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let payload_bytes = 64;
    let mut out = Vec::with_capacity(512);
    // Building the invocation envelope and its frame head: the per-invocation bytes the server writes before the payload.
    c.bench_function("ws_encode_invocation_head", |b| {
        b.iter(|| {
            out.clear();
            let envelope = runtime_messages::invocation_envelope(
                "8476a536-e9f4-11e8-9739-2dfe598c3fcd",
                1_700_000_000_000,
                "arn:aws:lambda:local:000000000000:function:my-function",
                "Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1",
                None,
            );
            ws::write_frame_head(&mut out, TEXT, envelope.message_bytes(payload_bytes), None);
            out.extend_from_slice(&envelope.prefix);
            out.extend_from_slice(envelope.suffix);
            out.len()
        });
    });
}

fn parse_response(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_response_payload");
    for (name, bytes) in SIZES {
        let payload = format!(r#"{{"body":{}}}"#, json_string_of(bytes - 10));
        let text = format!(
            r#"{{"type":"response","request_id":"8476a536-e9f4-11e8-9739-2dfe598c3fcd","payload":{payload},"headers":{{"X-Amz-Executed-Version":"1"}}}}"#
        );
        let text = Bytes::from(text);
        group.throughput(Throughput::Bytes(bytes as u64));
        // Validating parse of a response message and zero-copy extraction of its payload.
        group.bench_function(name, |b| {
            b.iter(|| runtime_messages::parse_client_message(&text))
        });
    }
    group.finish();
}

criterion_group!(benches, decode, encode, parse_response);
criterion_main!(benches);
