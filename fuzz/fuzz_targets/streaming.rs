//! Fuzzes the two codecs of response streaming: the request decoder handing a chunked body out
//! piece by piece (`Decoder::decode_or_stream` + `next_piece`) must never panic, and the pieces
//! must add up to the body `decode` gives for the same bytes, with the same trailers; the
//! event-stream decoder (`eventstream::decode`) must never panic on any input.
#![no_main]

use bytes::BytesMut;
use lambda_at_home::protocols::eventstream;
use lambda_at_home::protocols::http::{BodyPiece, Decoded, Decoder, Limits, Request};
use libfuzzer_sys::fuzz_target;

fn always(_: &Request) -> bool {
    true
}

/// (body, trailers) of the first request, streamed and fed `piece` bytes at a time; `None` on
/// an error or an incomplete request.
fn streamed(data: &[u8], piece: usize) -> Option<(Vec<u8>, Vec<(String, Vec<u8>)>)> {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    let mut in_body = false;
    for part in data.chunks(piece.max(1)) {
        buf.extend_from_slice(part);
        loop {
            if !in_body {
                match decoder.decode_or_stream(&mut buf, always).ok()? {
                    Some(Decoded::Whole(req)) => return Some((req.body.to_vec(), req.trailers().to_vec())),
                    Some(Decoded::StreamHead(_)) => in_body = true,
                    None => break,
                }
            } else {
                match decoder.next_piece(&mut buf).ok()? {
                    Some(BodyPiece::Data(d)) => body.extend_from_slice(&d),
                    Some(BodyPiece::End { data, trailers }) => {
                        body.extend_from_slice(&data);
                        return Some((body, trailers));
                    }
                    None => break,
                }
            }
        }
    }
    None
}

fn whole(data: &[u8]) -> Option<(Vec<u8>, Vec<(String, Vec<u8>)>)> {
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = BytesMut::from(data);
    let req = decoder.decode(&mut buf).ok()??;
    Some((req.body.to_vec(), req.trailers().to_vec()))
}

fuzz_target!(|data: &[u8]| {
    let Some((&piece, rest)) = data.split_first() else {
        return;
    };
    if let (Some(a), Some(b)) = (streamed(rest, piece as usize), whole(rest)) {
        assert_eq!(a, b);
    }
    let mut buf = BytesMut::from(rest);
    while let Ok(Some(_)) = eventstream::decode(&mut buf) {}
});
