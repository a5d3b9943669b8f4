//! Wire codecs, hand-rolled for the hot path: HTTP/1.1 on httparse (`http/`, split by role),
//! WebSocket framing on tungstenite's primitives, the JSON messages of the WebSocket Runtime API,
//! AWS's event-stream framing of `InvokeWithResponseStream` (`eventstream`), the one
//! percent-decoder for URL paths and query strings (`percent`), and AWS Signature
//! Version 4 canonicalisation and signatures (`sigv4`). Pure functions
//! over byte buffers: no I/O, no threads; each one is unit-tested on raw bytes split at every
//! offset and fuzzed.

pub mod eventstream;
pub mod http;
pub mod percent;
pub mod runtime_messages;
pub mod sigv4;
pub mod ws;
