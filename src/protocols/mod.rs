//! Wire codecs, hand-rolled for the hot path: HTTP/1.1 on httparse, WebSocket framing on
//! tungstenite's primitives, and the JSON messages of the WebSocket Runtime API. Pure functions
//! over byte buffers: no I/O, no threads; each one is unit-tested on raw bytes split at every
//! offset and fuzzed.

pub mod http;
pub mod percent;
pub mod runtime_messages;
pub mod ws;
