//! Token metering of upstream responses as they stream through the gateway (SPEC §3.6).
//!
//! Everything here runs inside Pingora's synchronous `response_body_filter`, once per body chunk, so it is
//! pure logic: no I/O, no panics, no allocation proportional to the response. Chunks arrive with arbitrary
//! boundaries — a chunk may end inside a line, a UTF-8 character, a JSON string or an escape — so both the
//! SSE and the JSON paths are incremental state machines that keep at most one bounded line (SSE) or one
//! bounded captured value (JSON).
//!
//! Two response shapes are metered:
//! - JSON bodies (chat, completions, embeddings, Responses, images): a streaming scanner follows string,
//!   escape and nesting state, picks out the top-level `usage` (or `response.usage`) and `model`, counts
//!   images in `data`, and counts generated text for the estimate when no usage is reported.
//! - SSE streams: parsed line by line; each `data:` JSON is deserialised into small structs holding only
//!   the fields metering needs. When the gateway injected `stream_options.include_usage` for a client that
//!   did not ask for it, the usage-only chunk and the `"usage":null` fields are removed so the client sees
//!   what the upstream would have sent without the gateway.
//!
//! The request side, `inject_include_usage`, adds that option to a streaming request body.
//!
//! Layout:
//! - this file: the public API (`Usage`, `ResponseKind`, `UsageMeter`, `FeedInput`, `final_usage`) and the
//!   memory bounds every part shares;
//! - `sse`: SSE line splitting and per-event metering; `strip`: removing the usage-only chunk and the
//!   `"usage":null` fields;
//! - `json_scan`: the incremental JSON scanner for JSON bodies (and over-long SSE lines);
//! - `fields`: the lenient serde structs an SSE event or a request is read into, and usage extraction;
//! - `acc`: what has been metered so far; `inject`: `inject_include_usage`;
//! - `buf`, `json_text`: byte search, bounded buffers and textual JSON edits.

mod acc;
mod buf;
mod fields;
mod inject;
mod json_scan;
mod json_text;
mod sse;
mod strip;
#[cfg(test)]
mod tests;

use bytes::Bytes;

use acc::Acc;
use json_scan::JsonScan;
use sse::{on_line, BigLine, Sse};
use strip::LineOut;

pub use inject::inject_include_usage;

/// Longest SSE line held for parsing. A longer `data:` line (a streamed image, a `response.completed` that
/// carries generated images) is metered by the streaming JSON scanner instead of being buffered.
const LINE_CAP: usize = 1 << 20;
/// Longest event held back while stripping; past it the stream is released untouched (SPEC: bounded memory
/// wins over exactness of the strip for pathological events, which OpenAI does not send).
const EVENT_CAP: usize = 1 << 20;
/// A `usage` object is a few hundred bytes; anything far larger is not a usage object we understand.
const USAGE_CAP: usize = 4096;
/// Raw bytes kept of a `model` value (escapes included) before decoding and capping it.
const MODEL_RAW_CAP: usize = 1024;
/// The reported model is capped so a hostile upstream cannot make the gateway keep large strings.
const MODEL_CAP: usize = 128;
/// Event types (`type` field or `event:` line) are short identifiers.
const TYPE_CAP: usize = 128;
/// Keys longer than this are none of the keys the scanner looks for.
const KEY_MAX: usize = 24;
/// Buffers that grew for one large event are shrunk back to this after it, so an idle stream holds little.
const SHRINK_TO: usize = 64 * 1024;

/// Tokens (and images) used by one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub images: u64,
}

/// What the response looked like, decided from the request path and the response content-type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    Json,
    Sse,
}

/// Meters one upstream response, chunk by chunk.
pub struct UsageMeter {
    kind: ResponseKind,
    acc: Acc,
    json: JsonScan,
    sse: Sse,
}

impl UsageMeter {
    /// `strip_usage_chunk`: the gateway injected `stream_options.include_usage` for a client that did not
    /// ask; the usage-only chunk and every `"usage":null` field the injection caused are removed from what
    /// reaches the client. Only meaningful for SSE; ignored for JSON.
    pub fn new(kind: ResponseKind, strip_usage_chunk: bool) -> Self {
        UsageMeter {
            kind,
            acc: Acc::default(),
            json: JsonScan::default(),
            sse: Sse {
                strip: strip_usage_chunk && kind == ResponseKind::Sse,
                ..Sse::default()
            },
        }
    }

    /// Feeds one chunk of the response body as received from upstream and returns the bytes to send to the
    /// client instead: the same `Bytes` (no copy) unless stripping is on. With stripping on, complete SSE
    /// events are released as soon as their terminating blank line has arrived; a partial event is held, up
    /// to 1 MiB, after which holding and stripping stop for the rest of the stream.
    ///
    /// Takes `Bytes`, `&Bytes`, `&[u8]` or `&Vec<u8>`; with `Bytes`/`&Bytes` and no stripping the chunk
    /// is handed back without copying.
    pub fn feed<C: FeedInput>(&mut self, chunk: C) -> Bytes {
        match self.kind {
            ResponseKind::Json => {
                self.json.feed(chunk.as_slice(), &mut self.acc);
                chunk.into_bytes()
            }
            ResponseKind::Sse if !self.sse.strip => {
                self.meter_sse(chunk.as_slice());
                chunk.into_bytes()
            }
            ResponseKind::Sse => {
                let chunk = chunk.as_slice();
                let mut out = Vec::with_capacity(chunk.len());
                self.strip_sse(chunk, &mut out);
                Bytes::from(out)
            }
        }
    }

    /// End of the response: meters a last line that had no newline and returns any held bytes.
    pub fn finish(&mut self) -> Bytes {
        if self.kind == ResponseKind::Json {
            return Bytes::new();
        }
        let mut out = Vec::new();
        if self.sse.big.is_some() {
            self.finish_big();
        } else if !self.sse.line.is_empty() {
            let Sse {
                line,
                ev,
                event_out,
                strip,
                ..
            } = &mut self.sse;
            let r = on_line(line, ev, &mut self.acc, *strip);
            if *strip {
                // The stream ended without a newline: pass the line on as it came, edited like any other.
                match r {
                    LineOut::Drop => {}
                    LineOut::Edit(a, b) => {
                        event_out.extend_from_slice(line.get(..a).unwrap_or_default());
                        event_out.extend_from_slice(line.get(b..).unwrap_or_default());
                    }
                    LineOut::Keep | LineOut::Blank => event_out.extend_from_slice(line),
                }
            }
            line.clear();
        }
        if self.sse.strip {
            out.append(&mut self.sse.event_out);
        }
        Bytes::from(out)
    }

    /// The usage the upstream reported, if it reported one (`images` filled from `images()`).
    pub fn reported(&self) -> Option<Usage> {
        self.acc.usage.map(|u| Usage {
            images: self.acc.images,
            ..u
        })
    }

    /// Bytes of generated content seen so far, for the 4-bytes-a-token estimate when no usage arrives.
    pub fn content_bytes(&self) -> u64 {
        self.acc.content
    }

    /// The `model` of the response (first seen), capped at 128 bytes.
    pub fn model(&self) -> Option<&str> {
        self.acc.model.as_deref()
    }

    /// Images in the response: `data` entries with `b64_json`/`url` and Responses `image_generation_call`
    /// outputs for JSON; completed-image events for streams.
    pub fn images(&self) -> u64 {
        self.acc.images
    }

    /// Capacity of everything the meter holds, for tests and diagnostics: it stays bounded (about 2 MiB
    /// worst case while stripping, a few KiB for JSON) whatever the size of the response.
    pub fn buffered_bytes(&self) -> usize {
        let big = match self.sse.big.as_deref() {
            Some(BigLine::Data { scan, acc }) => scan.cap.capacity() + acc.held(),
            _ => 0,
        };
        self.json.cap.capacity()
            + self.sse.line.capacity()
            + self.sse.event_out.capacity()
            + self.sse.ev.capacity()
            + self.acc.held()
            + big
    }
}

/// A body chunk `UsageMeter::feed` accepts: `Bytes` and `&Bytes` are passed back without a copy when the
/// chunk goes out unchanged; plain slices are copied only then.
pub trait FeedInput {
    fn as_slice(&self) -> &[u8];
    fn into_bytes(self) -> Bytes;
}

impl FeedInput for Bytes {
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn into_bytes(self) -> Bytes {
        self
    }
}

impl FeedInput for &Bytes {
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn into_bytes(self) -> Bytes {
        self.clone()
    }
}

impl FeedInput for &[u8] {
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

impl FeedInput for &Vec<u8> {
    fn as_slice(&self) -> &[u8] {
        self
    }
    fn into_bytes(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}

/// The final usage: reported, or estimated at 4 bytes a token (rounded up) from the request body (prompt)
/// and the generated content (completion) when none was reported. The flag is true for an estimate.
pub fn final_usage(meter: &UsageMeter, request_body_bytes: u64) -> (Usage, bool) {
    match meter.reported() {
        Some(u) => (u, false),
        None => (
            Usage {
                prompt_tokens: request_body_bytes.div_ceil(4),
                completion_tokens: meter.content_bytes().div_ceil(4),
                images: meter.images(),
            },
            true,
        ),
    }
}
