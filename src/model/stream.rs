//! A streamed response on its way from an instance to its caller (`InvokeWithResponseStream`,
//! and later function URLs in `RESPONSE_STREAM` mode): the items of the channel and its bounds.
//!
//! The caller's core creates the channel and puts the sender in the `Invocation`
//! (`Invocation::stream`); the instance's home core (which may be another core, hence a `Send`
//! tokio channel) sends what the runtime streams, in order, as it arrives; the invocation's end
//! still travels through its `oneshot<InvokeResult>`, after the last item. Bounded: a caller
//! that reads slowly holds the runtime back (its upload waits, then TCP stops it), never
//! buffered without limit. A caller that goes away drops the receiver; the instance's scheduler
//! sees the closed channel on its next tick and ends the invocation (`docs/streaming.md`).

use bytes::Bytes;

/// Items queued between the runtime's upload and the caller: enough to keep both sides busy.
/// An item is what one read of the runtime's socket de-chunked (typically 16 KiB) or one
/// WebSocket message, so a stream holds at most 16 of those, and never more than the stream's
/// own limit (`STREAM_RESPONSE_BYTES_MAX`) in all.
pub const STREAM_QUEUE_ITEMS_MAX: usize = 16;

/// AWS's soft limit on a streamed response (20 MB): beyond it the stream ends with
/// `Function.ResponseSizeTooLarge`.
pub const STREAM_RESPONSE_BYTES_MAX: usize = 20 * 1024 * 1024;

/// What the instance's core sends the caller, in this order: `Start` once, then `Chunk`s.
#[derive(Debug)]
pub enum StreamItem {
    /// The runtime began streaming; `content_type` is what it declared (its `Content-Type`
    /// header, e.g. `application/vnd.awslambda.http-integration-response` from Node's
    /// `HttpResponseStream`), if any.
    Start { content_type: Option<String> },
    /// Response bytes as they arrived, never empty.
    Chunk(Bytes),
}

pub type StreamSender = tokio::sync::mpsc::Sender<StreamItem>;
pub type StreamReceiver = tokio::sync::mpsc::Receiver<StreamItem>;

/// A new stream's two ends.
pub fn channel() -> (StreamSender, StreamReceiver) {
    tokio::sync::mpsc::channel(STREAM_QUEUE_ITEMS_MAX)
}
