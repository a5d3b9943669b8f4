//! Criterion benches for the hot-path HTTP/1.1 codec (`protocols::http`).

use bytes::BytesMut;
use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use lambda_at_home::protocols::http::{write_response_head, Decoder, Limits};

/// An Invoke POST as aws-cli sends it (SigV4 headers included), with a 100-byte JSON body.
fn invoke_request() -> Vec<u8> {
    let body = format!(
        "{{\"key1\":\"value1\",\"key2\":\"value2\",\"padding\":\"{}\"}}",
        "x".repeat(54)
    );
    assert_eq!(body.len(), 100);
    let head = format!(
        "POST /2015-03-31/functions/my-function/invocations HTTP/1.1\r\n\
Host: 127.0.0.1:9000\r\n\
Accept-Encoding: identity\r\n\
X-Amz-Invocation-Type: RequestResponse\r\n\
X-Amz-Log-Type: None\r\n\
User-Agent: aws-cli/2.15.30 Python/3.11.8 Linux/6.5.0 exe/x86_64.ubuntu.22 prompt/off command/lambda.invoke\r\n\
X-Amz-Date: 20240501T120000Z\r\n\
X-Amz-Content-SHA256: 5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef\r\n\
Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20240501/us-east-1/lambda/aws4_request, \
SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-invocation-type;x-amz-log-type, \
Signature=fe5f80f77d5fa3beca038a248ff027d0445342fe2855ddc963176630326f1024\r\n\
amz-sdk-invocation-id: 8f2b5a3c-1d4e-4f6a-9b7c-0e1d2c3b4a59\r\n\
amz-sdk-request: attempt=1; max=3\r\n\
Content-Length: {}\r\n\r\n",
        body.len()
    );
    [head.as_bytes(), body.as_bytes()].concat()
}

/// A runtime's `/response` POST as aws-lambda-go sends it: chunked, with a trailer.
fn chunked_request() -> Vec<u8> {
    let mut raw = b"POST /2018-06-01/runtime/invocation/8f2b5a3c-1d4e-4f6a-9b7c-0e1d2c3b4a59/response HTTP/1.1\r\n\
Host: 127.0.0.1:9001\r\nUser-Agent: Go-http-client/1.1\r\nContent-Type: application/json\r\n\
Trailer: Lambda-Runtime-Function-Error-Type\r\nTransfer-Encoding: chunked\r\n\r\n"
        .to_vec();
    for _ in 0..4 {
        raw.extend_from_slice(b"400\r\n");
        raw.extend_from_slice(&[b'a'; 0x400]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\nLambda-Runtime-Function-Error-Type: \r\n\r\n");
    raw
}

fn decode_bench(c: &mut Criterion, name: &str, raw: &[u8]) {
    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Bytes(raw.len() as u64));
    let mut decoder = Decoder::new(Limits::default());
    group.bench_function(name, |b| {
        b.iter(|| {
            let mut buf = BytesMut::from(black_box(raw));
            black_box(decoder.decode(&mut buf).expect("valid").expect("complete"))
        })
    });
    group.finish();
}

fn benches(c: &mut Criterion) {
    // Decoding one complete Invoke request (head + 100-byte body), buffer copy included.
    decode_bench(c, "parse_invoke_post", &invoke_request());
    // Decoding one 4 KiB chunked body with a trailer, de-chunked in place.
    decode_bench(c, "parse_chunked_4k", &chunked_request());
    // Encoding a typical Invoke response head into a reused buffer (cached Date).
    c.bench_function("http/write_response_head", |b| {
        let mut out = Vec::with_capacity(512);
        let headers = [
            ("Content-Type", "application/json"),
            ("X-Amz-Executed-Version", "$LATEST"),
            ("X-Amzn-RequestId", "8f2b5a3c-1d4e-4f6a-9b7c-0e1d2c3b4a59"),
        ];
        b.iter(|| {
            out.clear();
            write_response_head(&mut out, 200, black_box(&headers), black_box(100), true);
            black_box(out.len())
        })
    });
}

criterion_group!(http, benches);
criterion_main!(http);
