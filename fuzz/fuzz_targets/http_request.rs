//! Fuzzes the server's HTTP/1.1 request decoder: it must never panic, and decoding the input
//! in pieces must give the same requests as decoding it whole, and fail only if that fails too
//! (pieces may notice a bad head later, never wrongly).
#![no_main]

use bytes::BytesMut;
use lambda_at_home::protocols::http::{Decoder, HttpError, Limits, Request};
use libfuzzer_sys::fuzz_target;

/// Decodes `data` fed `piece` bytes at a time; returns the requests and the error, if any.
fn decode_stream(data: &[u8], piece: usize, limits: Limits) -> (Vec<Request>, Option<HttpError>) {
    let mut decoder = Decoder::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    for part in data.chunks(piece.max(1)) {
        buf.extend_from_slice(part);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(request)) => requests.push(request),
                Ok(None) => break,
                Err(err) => return (requests, Some(err)),
            }
        }
        let _ = (decoder.take_continue(), decoder.bytes_needed());
    }
    (requests, None)
}

/// Touches every accessor so lazily parsed parts of the head are exercised too.
fn inspect(request: &Request) {
    let _ = (request.method_str(), request.path(), request.query());
    let _ = request.query_param("Qualifier");
    let _ = request.header_str("content-type");
    for (name, value) in request.headers() {
        assert!(!name.is_empty());
        assert!(value.first() != Some(&b' ') && value.last() != Some(&b' '));
    }
    let _ = request.trailers().len();
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, data)) = data.split_first() else {
        return;
    };
    // Small limits make every limit reachable with short inputs.
    let limits = Limits {
        header_bytes_max: 512,
        headers_count_max: 8,
        body_bytes_max: 1024,
        body_bytes_max_for: None,
    };
    let (whole, whole_err) = decode_stream(data, data.len(), limits);
    let (pieces, pieces_err) = decode_stream(data, usize::from(first % 32) + 1, limits);
    assert_eq!(whole, pieces);
    assert!(
        whole_err.is_some() || pieces_err.is_none(),
        "{pieces_err:?}"
    );
    whole.iter().for_each(inspect);
});
