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

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use bytes::Bytes;
use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

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

    /// Non-stripping SSE path: the chunk goes out as is; lines are assembled only for metering.
    fn meter_sse(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match find_nl(rest) {
                Some(i) => {
                    let (seg, tail) = rest.split_at(i);
                    self.complete_line_metered(seg);
                    rest = tail.get(1..).unwrap_or_default();
                }
                None => {
                    self.partial(rest);
                    break;
                }
            }
        }
    }

    /// A line ends with `seg` (the bytes before its `\n` in this chunk); meter it.
    fn complete_line_metered(&mut self, seg: &[u8]) {
        if self.sse.big.is_some() {
            self.partial(seg);
            self.finish_big();
        } else if self.sse.line.is_empty() {
            // The common case: the whole line is inside this chunk, parse it in place without copying.
            on_line(seg, &mut self.sse.ev, &mut self.acc, false);
        } else if self.sse.line.len() + seg.len() > LINE_CAP {
            self.partial(seg);
            self.finish_big();
        } else {
            bounded_extend(&mut self.sse.line, seg, LINE_CAP);
            on_line(&self.sse.line, &mut self.sse.ev, &mut self.acc, false);
            self.sse.line.clear();
            self.sse.line.shrink_to(SHRINK_TO);
        }
    }

    /// Bytes of a line whose end has not arrived yet.
    fn partial(&mut self, bytes: &[u8]) {
        if let Some(big) = self.sse.big.as_deref_mut() {
            big.feed(bytes);
            return;
        }
        let line = &mut self.sse.line;
        if line.len() + bytes.len() <= LINE_CAP {
            bounded_extend(line, bytes, LINE_CAP);
            return;
        }
        // Too long to hold: meter the rest of this line with the streaming JSON scanner if it is a `data:`
        // line (a streamed image can be several MiB), else skip it.
        let mut head = [0u8; 6];
        for (h, b) in head.iter_mut().zip(line.iter().chain(bytes.iter())) {
            *h = *b;
        }
        let mut big = if head.starts_with(b"data:") {
            BigLine::Data {
                scan: Box::default(),
                acc: Acc::default(),
            }
        } else {
            BigLine::Skip
        };
        let skip = if head.starts_with(b"data: ") { 6 } else { 5 };
        big.feed(line.get(skip.min(line.len())..).unwrap_or_default());
        big.feed(
            bytes
                .get(skip.saturating_sub(line.len()).min(bytes.len())..)
                .unwrap_or_default(),
        );
        *line = Vec::new();
        self.sse.big = Some(Box::new(big));
    }

    /// The over-long line ended: account for what the scanner found in it.
    fn finish_big(&mut self) {
        if let Some(big) = self.sse.big.take() {
            if let BigLine::Data { acc: found, .. } = *big {
                let ty = found.ty.as_deref().or(self.sse.ev.name());
                apply(
                    &mut self.acc,
                    Found {
                        ty,
                        model: found.model.as_deref(),
                        top_usage: found.usage,
                        resp_usage: None,
                        content: found.content,
                        delta: 0,
                    },
                );
                self.acc.images = self.acc.images.saturating_add(found.images);
            }
        }
    }

    /// Stripping SSE path: lines are copied into the current event, edited, and the event is released at its
    /// blank line (or dropped when it is the usage-only chunk).
    fn strip_sse(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let mut rest = chunk;
        while !rest.is_empty() {
            if !self.sse.strip {
                out.extend_from_slice(rest);
                self.meter_sse(rest);
                return;
            }
            let nl = find_nl(rest);
            let seg_len = nl.unwrap_or(rest.len());
            if self.sse.event_out.len() + self.sse.line.len() + seg_len > EVENT_CAP {
                self.stop_stripping(out);
                continue;
            }
            let Some(i) = nl else {
                bounded_extend(&mut self.sse.line, rest, LINE_CAP);
                break;
            };
            let (seg, tail) = rest.split_at(i);
            rest = tail.get(1..).unwrap_or_default();
            let Sse {
                line,
                ev,
                event_out,
                drop_event,
                ..
            } = &mut self.sse;
            if line.is_empty() {
                emit_line(seg, ev, &mut self.acc, event_out, drop_event, out);
            } else {
                bounded_extend(line, seg, LINE_CAP);
                emit_line(line, ev, &mut self.acc, event_out, drop_event, out);
                line.clear();
                line.shrink_to(SHRINK_TO);
            }
        }
    }

    /// An event outgrew `EVENT_CAP`: release what is held and pass the rest of the stream through.
    fn stop_stripping(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.sse.event_out);
        self.sse.event_out = Vec::new();
        // The partial line is released too but stays in `line` so its metering can complete.
        out.extend_from_slice(&self.sse.line);
        self.sse.strip = false;
        self.sse.drop_event = false;
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

/// Request side: given a complete chat/completions or completions request body, decides whether to inject
/// `stream_options.include_usage`. `None` when nothing is to change: not a JSON object, no `"stream": true`,
/// or the client already asked for usage. Otherwise the new body: a textual insertion that keeps every other
/// byte of the client's body, or, if the body is too unusual for that (escaped key names), a re-serialised
/// one.
pub fn inject_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let open = skip_ws(body, 0);
    if body.get(open) != Some(&b'{') {
        return None;
    }
    let req: StreamReq = serde_json::from_slice(body).ok()?;
    if req.stream.0 != Some(true) {
        return None;
    }
    if let Field::Obj(o) = &req.stream_options {
        if o.include_usage.0 == Some(true) {
            return None;
        }
    }
    let absent = matches!(req.stream_options, Field::Absent);
    match find_member(body, open, b"stream_options") {
        // The usual case. The object has at least `"stream"`, so a trailing comma is always right.
        None if absent => Some(splice(
            body,
            open + 1,
            open + 1,
            b"\"stream_options\":{\"include_usage\":true},",
        )),
        None => reserialize(body),
        Some(m) => {
            let edited = if body.get(m.value_start) == Some(&b'{') {
                match find_member(body, m.value_start, b"include_usage") {
                    Some(iu) => splice(body, iu.value_start, iu.value_end, b"true"),
                    None if body.get(skip_ws(body, m.value_start + 1)) == Some(&b'}') => splice(
                        body,
                        m.value_start + 1,
                        m.value_start + 1,
                        b"\"include_usage\":true",
                    ),
                    None => splice(
                        body,
                        m.value_start + 1,
                        m.value_start + 1,
                        b"\"include_usage\":true,",
                    ),
                }
            } else {
                splice(
                    body,
                    m.value_start,
                    m.value_end,
                    b"{\"include_usage\":true}",
                )
            };
            // Rare path: check the edit did what was meant before trusting it.
            if asks_usage(&edited) {
                Some(edited)
            } else {
                reserialize(body)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Accumulated results

/// What has been metered so far.
#[derive(Default)]
struct Acc {
    /// Prompt and completion tokens reported; `images` unused here.
    usage: Option<Usage>,
    content: u64,
    model: Option<String>,
    images: u64,
    /// The top-level `type` seen by the JSON scanner (only used when it meters an over-long SSE line).
    ty: Option<String>,
}

impl Acc {
    fn held(&self) -> usize {
        self.model.as_ref().map_or(0, String::capacity)
            + self.ty.as_ref().map_or(0, String::capacity)
    }
}

/// What one SSE data line told us.
struct Found<'a> {
    ty: Option<&'a str>,
    model: Option<&'a str>,
    /// A top-level `usage` (chat, completions, images events).
    top_usage: Option<Usage>,
    /// `response.usage` (Responses events).
    resp_usage: Option<Usage>,
    /// Generated text inside `choices`.
    content: u64,
    /// Length of a top-level `delta` string, counted only for the delta event types below.
    delta: u64,
}

/// Responses events whose `delta` is generated output (reasoning is billed as output tokens too).
const DELTA_TYPES: &[&str] = &[
    "response.output_text.delta",
    "response.refusal.delta",
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.reasoning_text.delta",
    "response.reasoning_summary_text.delta",
];

fn apply(acc: &mut Acc, f: Found<'_>) {
    if acc.model.is_none() {
        if let Some(m) = f.model {
            acc.model = Some(cap_str(m, MODEL_CAP).to_owned());
        }
    }
    let image_api_done = matches!(
        f.ty,
        Some("image_generation.completed" | "image_edit.completed")
    );
    if image_api_done || f.ty == Some("response.image_generation_call.completed") {
        acc.images = acc.images.saturating_add(1);
    }
    if let Some(u) = f.top_usage {
        acc.usage = Some(match acc.usage {
            // Each completed image of a streamed images request carries the usage of that image.
            Some(prev) if image_api_done => Usage {
                prompt_tokens: prev.prompt_tokens.saturating_add(u.prompt_tokens),
                completion_tokens: prev.completion_tokens.saturating_add(u.completion_tokens),
                images: 0,
            },
            _ => u,
        });
    }
    if let Some(u) = f.resp_usage {
        acc.usage = Some(u);
    }
    acc.content = acc.content.saturating_add(f.content);
    if f.delta > 0 && f.ty.is_some_and(|t| DELTA_TYPES.contains(&t)) {
        acc.content = acc.content.saturating_add(f.delta);
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn cap_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------------------
// SSE

#[derive(Default)]
struct Sse {
    /// Stripping is on (and has not been given up).
    strip: bool,
    /// The current line so far, when it started in an earlier chunk (bounded by `LINE_CAP`).
    line: Vec<u8>,
    /// The current line outgrew `LINE_CAP`.
    big: Option<Box<BigLine>>,
    /// The `event:` name of the current event.
    ev: EventName,
    /// Stripping: the current event's lines, already edited, waiting for the blank line.
    event_out: Vec<u8>,
    /// Stripping: the current event's usage-only data line was dropped.
    drop_event: bool,
}

enum BigLine {
    /// Not a data line: nothing to meter.
    Skip,
    /// A data line: its JSON is scanned as it streams.
    Data { scan: Box<JsonScan>, acc: Acc },
}

impl BigLine {
    fn feed(&mut self, bytes: &[u8]) {
        if let BigLine::Data { scan, acc } = self {
            scan.feed(bytes, acc);
        }
    }
}

#[derive(Default)]
struct EventName(String);

impl EventName {
    fn name(&self) -> Option<&str> {
        (!self.0.is_empty()).then_some(self.0.as_str())
    }
    fn set(&mut self, v: &[u8]) {
        self.0.clear();
        if v.len() <= TYPE_CAP {
            if let Ok(s) = std::str::from_utf8(v) {
                self.0.push_str(s);
            }
        }
    }
    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// What to do with a line when stripping.
#[derive(Debug, PartialEq, Eq)]
enum LineOut {
    /// The blank line that ends an event.
    Blank,
    /// Pass on as is.
    Keep,
    /// The usage-only chunk's data line: remove.
    Drop,
    /// Remove bytes `a..b` (the `"usage":null` member and one adjacent comma).
    Edit(usize, usize),
}

/// Stripping: one complete line (without its `\n`) goes into the current event, or ends it.
fn emit_line(
    l: &[u8],
    ev: &mut EventName,
    acc: &mut Acc,
    event_out: &mut Vec<u8>,
    drop_event: &mut bool,
    out: &mut Vec<u8>,
) {
    match on_line(l, ev, acc, true) {
        LineOut::Blank => {
            // An event whose only line was the usage chunk disappears with its blank line; anything else
            // (comments, `event:` lines) is released with it.
            if !(*drop_event && event_out.is_empty()) {
                out.append(event_out);
                out.extend_from_slice(l);
                out.push(b'\n');
            }
            event_out.clear();
            event_out.shrink_to(SHRINK_TO);
            *drop_event = false;
        }
        LineOut::Keep => {
            reserve_bounded(event_out, l.len() + 1, EVENT_CAP + 1);
            event_out.extend_from_slice(l);
            event_out.push(b'\n');
        }
        LineOut::Drop => *drop_event = true,
        LineOut::Edit(a, b) => {
            reserve_bounded(event_out, l.len() + 1, EVENT_CAP + 1);
            event_out.extend_from_slice(l.get(..a).unwrap_or_default());
            event_out.extend_from_slice(l.get(b..).unwrap_or_default());
            event_out.push(b'\n');
        }
    }
}

/// Meters one complete SSE line (without `\n`; a trailing `\r` is allowed). `want_edit`: compute where a
/// `"usage":null` member is, for stripping.
fn on_line(line: &[u8], ev: &mut EventName, acc: &mut Acc, want_edit: bool) -> LineOut {
    let l = line.strip_suffix(b"\r").unwrap_or(line);
    if l.is_empty() {
        ev.set(b"");
        return LineOut::Blank;
    }
    let Some(colon) = l.iter().position(|&c| c == b':') else {
        return LineOut::Keep;
    };
    if colon == 0 {
        return LineOut::Keep; // a comment, e.g. `: keep-alive`
    }
    let (field, value) = l.split_at(colon);
    let mut off = colon + 1;
    let mut value = value.get(1..).unwrap_or_default();
    if value.first() == Some(&b' ') {
        value = value.get(1..).unwrap_or_default();
        off += 1;
    }
    match field {
        b"data" => on_data(value, off, ev, acc, want_edit),
        b"event" => {
            ev.set(value);
            LineOut::Keep
        }
        _ => LineOut::Keep,
    }
}

fn on_data(value: &[u8], off: usize, ev: &EventName, acc: &mut Acc, want_edit: bool) -> LineOut {
    let start = skip_ws(value, 0);
    let json = value.get(start..).unwrap_or_default();
    // `[DONE]` and anything that is not an object carry nothing to meter.
    if json.first() != Some(&b'{') {
        return LineOut::Keep;
    }
    let Ok(c) = serde_json::from_slice::<Chunk<'_>>(json) else {
        return LineOut::Keep;
    };
    let (resp_model, resp_usage) = match &c.response {
        Field::Obj(r) => (r.model.0.as_deref(), r.usage.usage()),
        _ => (None, None),
    };
    apply(
        acc,
        Found {
            ty: c.ty.0.as_deref().or(ev.name()),
            model: c.model.0.as_deref().or(resp_model),
            top_usage: c.usage.usage(),
            resp_usage,
            content: c.choices.content,
            delta: c.delta.0,
        },
    );
    if c.choices.present && c.choices.n == 0 && matches!(c.usage, Field::Obj(_)) {
        return LineOut::Drop;
    }
    if want_edit && matches!(c.usage, Field::Null) {
        if let Some((a, b)) = null_member_span(json, b"usage") {
            return LineOut::Edit(off + start + a, off + start + b);
        }
    }
    LineOut::Keep
}

fn find_nl(s: &[u8]) -> Option<usize> {
    find_either(s, b'\n', b'\n')
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bits set in the bytes of `w` equal to `b`; the lowest set bit is exact (higher ones may be false
/// positives), which is all a forward search needs.
fn match_mask(w: u64, b: u8) -> u64 {
    let x = w ^ (LO * u64::from(b));
    x.wrapping_sub(LO) & !x & HI
}

/// First index of `a` or `b` in `s`, eight bytes at a time: the dependency list has no `memchr`, and a
/// byte-by-byte `position` is the hot spot of both the line splitter and the string skipper.
fn find_either(s: &[u8], a: u8, b: u8) -> Option<usize> {
    let mut words = s.chunks_exact(8);
    let mut base = 0;
    for c in words.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        let m = match_mask(w, a) | match_mask(w, b);
        if m != 0 {
            return Some(base + (m.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == a || c == b)
        .map(|p| base + p)
}

/// Bytes that change the scanner's state outside strings; runs of anything else (numbers, whitespace,
/// literals) are skipped in a tight loop.
const STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'}' as usize] = true;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t[b':' as usize] = true;
    t[b',' as usize] = true;
    t
};

/// Appends to a buffer that must stay within `cap` (the caller checked `v.len() + bytes.len() <= cap`),
/// growing it without the doubling that could overshoot the cap.
fn bounded_extend(v: &mut Vec<u8>, bytes: &[u8], cap: usize) {
    reserve_bounded(v, bytes.len(), cap);
    v.extend_from_slice(bytes);
}

/// Makes room for `extra` more bytes, doubling as `Vec` would but never past `cap` (unless the content
/// itself needs more).
fn reserve_bounded(v: &mut Vec<u8>, extra: usize, cap: usize) {
    let need = v.len() + extra;
    if need > v.capacity() {
        let want = need.max(v.capacity().saturating_mul(2)).min(cap.max(need));
        v.reserve_exact(want - v.len());
    }
}

// ---------------------------------------------------------------------------------------------------------
// Streaming JSON scanner

/// Which member of the root object the scanner is inside.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
enum Top {
    #[default]
    Other,
    Usage,
    Model,
    Type,
    Data,
    Choices,
    Output,
    Response,
}

/// What the bytes of the current string are.
#[derive(Clone, Copy, PartialEq, Eq, Default, Debug)]
enum Role {
    #[default]
    Skip,
    Key,
    Content,
}

/// Which value is being captured.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Cap {
    Usage,
    Model,
    Type,
    OutputType,
}

impl Cap {
    fn limit(self) -> usize {
        match self {
            Cap::Usage => USAGE_CAP,
            Cap::Model => MODEL_RAW_CAP,
            Cap::Type | Cap::OutputType => TYPE_CAP,
        }
    }
}

/// A byte-at-a-time JSON scanner that never holds more than one small captured value. It tolerates any
/// input (invalid JSON just yields nothing) and never recurses.
#[derive(Default)]
struct JsonScan {
    depth: u32,
    /// Bit `d - 1` set: the container at depth `d` is an object. Depths past 64 are not classified, which
    /// only means keys that deep are not recognised — nothing metered lives there.
    objs: u64,
    in_str: bool,
    esc: bool,
    /// In an object, before a member's key.
    expect_key: bool,
    role: Role,
    key: [u8; KEY_MAX],
    /// Length of the current key; `KEY_MAX + 1` when it is too long or escaped to be one we look for.
    key_len: usize,
    /// The next string value is generated content.
    content_next: bool,
    top: Top,
    cap: Vec<u8>,
    cap_what: Option<Cap>,
    /// Depth of the object whose member is being captured: the capture ends at a `,` or close there.
    cap_depth: u32,
    cap_over: bool,
    /// The current `data` element has been counted as an image.
    elem_image: bool,
}

impl JsonScan {
    fn is_obj(&self, d: u32) -> bool {
        (1..=64).contains(&d) && self.objs & (1u64 << (d - 1)) != 0
    }

    fn feed(&mut self, buf: &[u8], acc: &mut Acc) {
        let mut i = 0;
        while i < buf.len() {
            if self.in_str {
                if !self.esc && self.cap_what.is_none() && self.role != Role::Key {
                    // Fast path through string bytes nobody needs to look at one by one.
                    let rest = buf.get(i..).unwrap_or_default();
                    match find_either(rest, b'"', b'\\') {
                        Some(p) => {
                            if self.role == Role::Content {
                                acc.content = acc.content.saturating_add(p as u64);
                            }
                            i += p;
                        }
                        None => {
                            if self.role == Role::Content {
                                acc.content = acc.content.saturating_add(rest.len() as u64);
                            }
                            return;
                        }
                    }
                }
                let Some(&b) = buf.get(i) else { return };
                i += 1;
                self.capture_byte(b);
                if self.esc {
                    // The escaped character counts as one byte of content; escaped keys are not ours.
                    self.esc = false;
                    match self.role {
                        Role::Content => acc.content = acc.content.saturating_add(1),
                        Role::Key => self.key_len = KEY_MAX + 1,
                        Role::Skip => {}
                    }
                } else if b == b'\\' {
                    self.esc = true;
                } else if b == b'"' {
                    self.in_str = false;
                } else {
                    match self.role {
                        Role::Content => acc.content = acc.content.saturating_add(1),
                        Role::Key => {
                            if let Some(k) = self.key.get_mut(self.key_len) {
                                *k = b;
                                self.key_len += 1;
                            } else {
                                self.key_len = KEY_MAX + 1;
                            }
                        }
                        Role::Skip => {}
                    }
                }
                continue;
            }
            if self.cap_what.is_none() {
                while buf.get(i).is_some_and(|&c| !STRUCTURAL[usize::from(c)]) {
                    i += 1;
                }
            }
            let Some(&b) = buf.get(i) else { return };
            i += 1;
            if self.cap_what.is_some() {
                if self.depth == self.cap_depth && matches!(b, b',' | b'}' | b']') {
                    self.end_capture(acc);
                } else {
                    self.capture_byte(b);
                }
            }
            match b {
                b'"' => {
                    self.in_str = true;
                    if self.expect_key && self.is_obj(self.depth) {
                        self.role = Role::Key;
                        self.key_len = 0;
                    } else {
                        self.role = if self.content_next {
                            Role::Content
                        } else {
                            Role::Skip
                        };
                        self.content_next = false;
                    }
                }
                b'{' | b'[' => {
                    self.depth = self.depth.saturating_add(1);
                    let obj = b == b'{';
                    if (1..=64).contains(&self.depth) {
                        let bit = 1u64 << (self.depth - 1);
                        if obj {
                            self.objs |= bit;
                        } else {
                            self.objs &= !bit;
                        }
                    }
                    self.expect_key = obj;
                    self.content_next = false;
                }
                b'}' | b']' => {
                    self.depth = self.depth.saturating_sub(1);
                    self.expect_key = false;
                    self.content_next = false;
                }
                b':' => self.on_colon(acc),
                b',' => {
                    self.expect_key = self.is_obj(self.depth);
                    self.content_next = false;
                    if self.depth == 2 && self.top == Top::Data {
                        self.elem_image = false;
                    }
                }
                _ => {}
            }
        }
    }

    fn capture_byte(&mut self, b: u8) {
        if let Some(what) = self.cap_what {
            if self.cap.len() < what.limit() {
                self.cap.push(b);
            } else {
                self.cap_over = true;
            }
        }
    }

    fn start_capture(&mut self, what: Cap) {
        if self.cap_what.is_none() {
            self.cap.clear();
            self.cap_what = Some(what);
            self.cap_depth = self.depth;
            self.cap_over = false;
        }
    }

    fn end_capture(&mut self, acc: &mut Acc) {
        let Some(what) = self.cap_what.take() else {
            return;
        };
        if !self.cap_over {
            let raw = self.cap.as_slice();
            match what {
                Cap::Usage => {
                    if let Ok(f) = serde_json::from_slice::<Field<RawUsage>>(raw) {
                        if let Some(u) = f.usage() {
                            acc.usage = Some(u);
                        }
                    }
                }
                Cap::Model => {
                    if acc.model.is_none() {
                        if let Ok(Text(Some(m))) = serde_json::from_slice::<Text<'_>>(raw) {
                            acc.model = Some(cap_str(&m, MODEL_CAP).to_owned());
                        }
                    }
                }
                Cap::Type => {
                    if let Ok(Text(Some(t))) = serde_json::from_slice::<Text<'_>>(raw) {
                        acc.ty = Some(t.into_owned());
                    }
                }
                Cap::OutputType => {
                    if let Ok(Text(Some(t))) = serde_json::from_slice::<Text<'_>>(raw) {
                        if t == "image_generation_call" {
                            acc.images = acc.images.saturating_add(1);
                        }
                    }
                }
            }
        }
        self.cap.clear();
    }

    fn on_colon(&mut self, acc: &mut Acc) {
        self.expect_key = false;
        self.content_next = false;
        let key_buf = self.key;
        let key = key_buf.get(..self.key_len).unwrap_or_default();
        let d = self.depth;
        if d == 1 && self.is_obj(1) {
            self.top = match key {
                b"usage" => Top::Usage,
                b"model" => Top::Model,
                b"type" => Top::Type,
                b"data" => Top::Data,
                b"choices" => Top::Choices,
                b"output" => Top::Output,
                b"response" => Top::Response,
                _ => Top::Other,
            };
            self.elem_image = false;
            match self.top {
                Top::Usage => self.start_capture(Cap::Usage),
                Top::Model => self.start_capture(Cap::Model),
                Top::Type => self.start_capture(Cap::Type),
                _ => {}
            }
        } else if d == 2 && self.top == Top::Response && self.is_obj(2) {
            match key {
                b"usage" => self.start_capture(Cap::Usage),
                b"model" => self.start_capture(Cap::Model),
                _ => {}
            }
        } else if d == 3 && !self.is_obj(2) && self.is_obj(3) {
            if self.top == Top::Data && !self.elem_image && matches!(key, b"b64_json" | b"url") {
                acc.images = acc.images.saturating_add(1);
                self.elem_image = true;
            } else if self.top == Top::Output && key == b"type" {
                self.start_capture(Cap::OutputType);
            }
        }
        if d >= 2
            && matches!(self.top, Top::Choices | Top::Output)
            && matches!(
                key,
                b"content" | b"text" | b"refusal" | b"arguments" | b"reasoning_content"
            )
        {
            self.content_next = true;
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Lenient serde types: a field of an unexpected type must not make the whole chunk unreadable (that would
// lose its usage), so every field metering reads accepts any JSON value.

/// A JSON scalar, or `Other` for arrays and objects (skipped). `KEEP` false: strings give only their length,
/// so generated text is never copied.
enum Scalar<'a> {
    Str(Cow<'a, str>),
    Len(u64),
    U(u64),
    I(i64),
    F(f64),
    Bool(bool),
    Null,
    Other,
}

struct ScalarV<const KEEP: bool>;

impl<'de, const KEEP: bool> Visitor<'de> for ScalarV<KEEP> {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::I(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(if KEEP {
            Scalar::Str(Cow::Borrowed(v))
        } else {
            Scalar::Len(v.len() as u64)
        })
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(if KEEP {
            Scalar::Str(Cow::Owned(v.to_owned()))
        } else {
            Scalar::Len(v.len() as u64)
        })
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// A token count: a non-negative integer (floats rounded, numeric strings accepted), else absent.
#[derive(Default, Clone, Copy)]
struct Tok(Option<u64>);

impl<'de> Deserialize<'de> for Tok {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Tok(match d.deserialize_any(ScalarV::<true>)? {
            Scalar::U(v) => Some(v),
            Scalar::I(v) => u64::try_from(v).ok(),
            // `as` saturates, which is the right thing for an absurd count.
            Scalar::F(v) if v.is_finite() && v >= 0.0 => Some(v.round() as u64),
            Scalar::Str(s) => s.trim().parse().ok(),
            _ => None,
        }))
    }
}

/// Byte length of a string value (decoded), 0 for anything else.
#[derive(Default, Clone, Copy)]
struct StrLen(u64);

impl<'de> Deserialize<'de> for StrLen {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(StrLen(match d.deserialize_any(ScalarV::<false>)? {
            Scalar::Len(n) => n,
            _ => 0,
        }))
    }
}

/// A string value, borrowed from the input when it has no escapes.
#[derive(Default)]
struct Text<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Text(match d.deserialize_any(ScalarV::<true>)? {
            Scalar::Str(s) => Some(s),
            _ => None,
        }))
    }
}

/// A boolean value, else absent.
#[derive(Default)]
struct Flag(Option<bool>);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Flag(match d.deserialize_any(ScalarV::<false>)? {
            Scalar::Bool(b) => Some(b),
            _ => None,
        }))
    }
}

/// An object field that may be absent, `null`, of another type, or the object we want.
#[derive(Default)]
enum Field<T> {
    #[default]
    Absent,
    Null,
    Other,
    Obj(T),
}

struct FieldV<T>(PhantomData<fn() -> T>);

impl<'de, T: Deserialize<'de>> Visitor<'de> for FieldV<T> {
    type Value = Field<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Field::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Field::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Field::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, a: A) -> Result<Self::Value, A::Error> {
        T::deserialize(MapAccessDeserializer::new(a)).map(Field::Obj)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldV(PhantomData))
    }
}

impl Field<RawUsage> {
    fn usage(&self) -> Option<Usage> {
        match self {
            Field::Obj(u) => u.to_usage(),
            _ => None,
        }
    }
}

/// Generated text inside one element of an array.
trait HasContent {
    fn content(&self) -> u64;
}

/// An array whose elements are counted and whose generated text is summed, without keeping the elements.
struct Seq<T> {
    present: bool,
    n: u64,
    content: u64,
    _t: PhantomData<fn() -> T>,
}

impl<T> Default for Seq<T> {
    fn default() -> Self {
        Seq {
            present: false,
            n: 0,
            content: 0,
            _t: PhantomData,
        }
    }
}

struct SeqV<T>(PhantomData<fn() -> T>);

impl<'de, T: Deserialize<'de> + HasContent> Visitor<'de> for SeqV<T> {
    type Value = Seq<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(Seq::default())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Seq::default())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
        let mut s = Seq {
            present: true,
            ..Seq::default()
        };
        while let Some(e) = a.next_element::<Field<T>>()? {
            s.n += 1;
            if let Field::Obj(t) = e {
                s.content = s.content.saturating_add(t.content());
            }
        }
        Ok(s)
    }
}

impl<'de, T: Deserialize<'de> + HasContent> Deserialize<'de> for Seq<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SeqV(PhantomData))
    }
}

/// `usage` in any of its shapes: chat/completions/embeddings (`prompt_tokens`, `completion_tokens`) or
/// Responses/images (`input_tokens`, `output_tokens`).
#[derive(Deserialize, Default)]
#[serde(default)]
struct RawUsage {
    prompt_tokens: Tok,
    completion_tokens: Tok,
    input_tokens: Tok,
    output_tokens: Tok,
    total_tokens: Tok,
}

impl RawUsage {
    /// A usage counts as reported only with its prompt side and either its completion side or a total
    /// (embeddings report only `prompt_tokens` and `total_tokens`).
    fn to_usage(&self) -> Option<Usage> {
        let prompt = self.prompt_tokens.0.or(self.input_tokens.0)?;
        let completion = match self.completion_tokens.0.or(self.output_tokens.0) {
            Some(c) => c,
            None => self.total_tokens.0?.saturating_sub(prompt),
        };
        Some(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            images: 0,
        })
    }
}

/// One SSE data JSON: the union of the fields metering reads from chat, completions, Responses and images
/// events.
#[derive(Deserialize, Default)]
#[serde(default)]
struct Chunk<'a> {
    #[serde(rename = "type", borrow)]
    ty: Text<'a>,
    #[serde(borrow)]
    model: Text<'a>,
    choices: Seq<Choice>,
    usage: Field<RawUsage>,
    delta: StrLen,
    #[serde(borrow)]
    response: Field<RespEnv<'a>>,
}

/// The `response` object of Responses events.
#[derive(Deserialize, Default)]
#[serde(default)]
struct RespEnv<'a> {
    #[serde(borrow)]
    model: Text<'a>,
    usage: Field<RawUsage>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Choice {
    delta: Field<Delta>,
    /// Completions.
    text: StrLen,
}

impl HasContent for Choice {
    fn content(&self) -> u64 {
        let d = match &self.delta {
            Field::Obj(d) => d.content(),
            _ => 0,
        };
        d.saturating_add(self.text.0)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Delta {
    content: StrLen,
    refusal: StrLen,
    /// Reasoning text of OpenAI-compatible servers (billed as completion tokens).
    reasoning_content: StrLen,
    tool_calls: Seq<ToolCall>,
    /// The legacy single function call.
    function_call: Field<FnCall>,
}

impl HasContent for Delta {
    fn content(&self) -> u64 {
        let f = match &self.function_call {
            Field::Obj(f) => f.arguments.0,
            _ => 0,
        };
        self.content
            .0
            .saturating_add(self.refusal.0)
            .saturating_add(self.reasoning_content.0)
            .saturating_add(self.tool_calls.content)
            .saturating_add(f)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ToolCall {
    function: Field<FnCall>,
}

impl HasContent for ToolCall {
    fn content(&self) -> u64 {
        match &self.function {
            Field::Obj(f) => f.arguments.0,
            _ => 0,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FnCall {
    arguments: StrLen,
}

/// The request fields `inject_include_usage` reads.
#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamReq {
    stream: Flag,
    stream_options: Field<StreamOpts>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StreamOpts {
    include_usage: Flag,
}

fn asks_usage(body: &[u8]) -> bool {
    match serde_json::from_slice::<StreamReq>(body) {
        Ok(r) => {
            r.stream.0 == Some(true)
                && matches!(&r.stream_options, Field::Obj(o) if o.include_usage.0 == Some(true))
        }
        Err(_) => false,
    }
}

/// Fallback for bodies the textual edit cannot handle: parse, set, re-serialise (key order may change).
fn reserialize(body: &[u8]) -> Option<Vec<u8>> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object_mut()?;
    let so = obj
        .entry("stream_options")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
    if !so.is_object() {
        *so = serde_json::Value::Object(serde_json::Map::new());
    }
    so.as_object_mut()?
        .insert("include_usage".to_owned(), serde_json::Value::Bool(true));
    serde_json::to_vec(&v).ok()
}

// ---------------------------------------------------------------------------------------------------------
// Textual JSON helpers, for edits that must keep every other byte. They never index out of bounds and
// return `None` on anything malformed.

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_ws(b)) {
        i += 1;
    }
    i
}

/// `s[i]` opens a string; the index just past its closing quote.
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += find_either(s.get(j..)?, b'"', b'\\')?;
        match s.get(j)? {
            b'\\' => j += 2,
            _ => return Some(j + 1),
        }
    }
}

/// The index just past the JSON value that starts at `i`.
fn value_end(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => string_end(s, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match s.get(j)? {
                    b'"' => {
                        j = string_end(s, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while s
                .get(j)
                .is_some_and(|&b| !is_ws(b) && !matches!(b, b',' | b'}' | b']'))
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

struct Member {
    key_start: usize,
    value_start: usize,
    value_end: usize,
}

/// The member named `key` (compared raw, unescaped) of the object that opens at `s[obj]`.
fn find_member(s: &[u8], obj: usize, key: &[u8]) -> Option<Member> {
    if s.get(obj) != Some(&b'{') {
        return None;
    }
    let mut i = skip_ws(s, obj + 1);
    if s.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        if s.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i;
        let ke = string_end(s, i)?;
        let k = s.get(key_start + 1..ke - 1)?;
        i = skip_ws(s, ke);
        if s.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(s, i + 1);
        let value_end = value_end(s, value_start)?;
        if k == key {
            return Some(Member {
                key_start,
                value_start,
                value_end,
            });
        }
        i = skip_ws(s, value_end);
        if s.get(i) != Some(&b',') {
            return None;
        }
        i = skip_ws(s, i + 1);
    }
}

/// The bytes to delete to remove the top-level member `key` when its value is `null`: the member and one
/// adjacent comma, so the object stays valid and reads as if the member had never been written.
fn null_member_span(s: &[u8], key: &[u8]) -> Option<(usize, usize)> {
    let obj = skip_ws(s, 0);
    let m = find_member(s, obj, key)?;
    if s.get(m.value_start..m.value_end)? != b"null" {
        return None;
    }
    let mut j = m.key_start;
    while j > obj + 1 && s.get(j - 1).is_some_and(|&b| is_ws(b)) {
        j -= 1;
    }
    if j > obj + 1 && s.get(j - 1) == Some(&b',') {
        return Some((j - 1, m.value_end));
    }
    let k = skip_ws(s, m.value_end);
    if s.get(k) == Some(&b',') {
        return Some((m.key_start, skip_ws(s, k + 1)));
    }
    Some((m.key_start, m.value_end))
}

fn splice(s: &[u8], a: usize, b: usize, with: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + with.len());
    v.extend_from_slice(s.get(..a).unwrap_or_default());
    v.extend_from_slice(with);
    v.extend_from_slice(s.get(b..).unwrap_or_default());
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        out: Vec<u8>,
        reported: Option<Usage>,
        content: u64,
        model: Option<String>,
        images: u64,
    }

    fn run(kind: ResponseKind, strip: bool, pieces: &[&[u8]]) -> Outcome {
        let mut m = UsageMeter::new(kind, strip);
        let mut out = Vec::new();
        for p in pieces {
            out.extend_from_slice(&m.feed(Bytes::copy_from_slice(p)));
        }
        out.extend_from_slice(&m.finish());
        Outcome {
            out,
            reported: m.reported(),
            content: m.content_bytes(),
            model: m.model().map(str::to_owned),
            images: m.images(),
        }
    }

    /// Runs the body whole, split in two at every boundary, in three at a spread of boundaries, and byte by
    /// byte; every run must give the same output and the same metering.
    fn run_all(kind: ResponseKind, strip: bool, body: &[u8]) -> Outcome {
        let whole = run(kind, strip, &[body]);
        for i in 0..=body.len() {
            let o = run(kind, strip, &[&body[..i], &body[i..]]);
            assert_eq!(o, whole, "split at {i}");
        }
        let step = (body.len() / 37).max(1);
        for i in (0..body.len()).step_by(step) {
            for j in (i..body.len()).step_by(step.max(3) / 3) {
                let o = run(kind, strip, &[&body[..i], &body[i..j], &body[j..]]);
                assert_eq!(o, whole, "split at {i} and {j}");
            }
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(run(kind, strip, &bytes), whole, "byte by byte");
        whole
    }

    fn usage(p: u64, c: u64) -> Option<Usage> {
        Some(Usage {
            prompt_tokens: p,
            completion_tokens: c,
            images: 0,
        })
    }

    fn crlf(s: &str) -> String {
        s.replace('\n', "\r\n")
    }

    // --- Fixtures, in the shapes OpenAI sends -----------------------------------------------------------

    const CHAT_JSON: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_3f58d112f7"
}
"#;

    const COMPLETIONS_JSON: &str = r#"{"id":"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7","object":"text_completion","created":1589478378,"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb","choices":[{"text":"\n\nThis is indeed a test","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;

    const EMBEDDINGS_JSON: &str = r#"{
  "object": "list",
  "data": [
    {
      "object": "embedding",
      "index": 0,
      "embedding": [
        -0.006929283495992422,
        -0.005336422007530928,
        -4.547132266452536e-05,
        -0.024047505110502243
      ]
    },
    {
      "object": "embedding",
      "index": 1,
      "embedding": [0.0023064255, -0.009327292, 0.015797347]
    }
  ],
  "model": "text-embedding-3-small",
  "usage": {
    "prompt_tokens": 8,
    "total_tokens": 8
  }
}"#;

    const RESPONSES_JSON: &str = r#"{
  "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  "object": "response",
  "created_at": 1741476542,
  "status": "completed",
  "error": null,
  "incomplete_details": null,
  "instructions": null,
  "max_output_tokens": null,
  "model": "gpt-4.1-2025-04-14",
  "output": [
    {
      "type": "message",
      "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
      "status": "completed",
      "role": "assistant",
      "content": [
        {
          "type": "output_text",
          "text": "In a peaceful grove beneath a silver moon, a unicorn named Lumina slept.",
          "annotations": []
        }
      ]
    }
  ],
  "parallel_tool_calls": true,
  "previous_response_id": null,
  "reasoning": {"effort": null, "summary": null},
  "store": true,
  "temperature": 1.0,
  "text": {"format": {"type": "text"}},
  "tool_choice": "auto",
  "tools": [],
  "top_p": 1.0,
  "truncation": "disabled",
  "usage": {
    "input_tokens": 36,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 87,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 123
  },
  "user": null,
  "metadata": {}
}"#;

    const IMAGES_JSON: &str = r#"{
  "created": 1713833628,
  "data": [
    {"b64_json": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="},
    {"b64_json": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="}
  ],
  "background": "opaque",
  "output_format": "png",
  "quality": "high",
  "size": "1024x1024",
  "usage": {
    "total_tokens": 4260,
    "input_tokens": 50,
    "output_tokens": 4160,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 40}
  }
}"#;

    const DALLE_JSON: &str = r#"{"created":1713833628,"data":[{"revised_prompt":"A cute baby sea otter floating on its back","url":"https://oaidalleapiprodscus.blob.core.windows.net/private/img-abc.png?st=2024&sig=x%2By"}]}"#;

    /// A chat stream as OpenAI sends it when `stream_options.include_usage` is true.
    const CHAT_SSE_WITH_USAGE: &str = concat!(
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Rj4kq"}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"xY"}"#,
        "\n\n",
        ": keep-alive\n\n",
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"! \"usage\":null\n"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"q"}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" Ça va? 😊"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Zp0"}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null,"obfuscation":"dQw4"}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"sd"}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    /// The same stream as OpenAI sends it without `include_usage` (written by hand, not derived).
    const CHAT_SSE_PLAIN: &str = concat!(
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"obfuscation":"Rj4kq"}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"obfuscation":"xY"}"#,
        "\n\n",
        ": keep-alive\n\n",
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"! \"usage\":null\n"},"logprobs":null,"finish_reason":null}],"obfuscation":"q"}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" Ça va? 😊"},"logprobs":null,"finish_reason":null}],"obfuscation":"Zp0"}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"obfuscation":"dQw4"}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    /// Content of the chat stream: "" + "Hello" + `! "usage":null` + newline + " Ça va? 😊".
    fn chat_content() -> u64 {
        ("Hello".len() + "! \"usage\":null\n".len() + " Ça va? 😊".len()) as u64
    }

    /// Tool calls, with `usage` last in each chunk (the layout before `obfuscation` existed).
    const TOOL_SSE_WITH_USAGE: &str = concat!(
        r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Xq7","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\""}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[],"usage":{"prompt_tokens":81,"completion_tokens":15,"total_tokens":96,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    const TOOL_SSE_PLAIN: &str = concat!(
        r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Xq7","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\""}}]},"logprobs":null,"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":null}]}"#,
        "\n\n",
        r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    const COMPLETIONS_SSE_WITH_USAGE: &str = concat!(
        r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":"Once","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","usage":null}"#,
        "\n\n",
        r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":" upon","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","usage":null}"#,
        "\n\n",
        r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"length"}],"model":"gpt-3.5-turbo-instruct","usage":null}"#,
        "\n\n",
        r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"model":"gpt-3.5-turbo-instruct","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    const COMPLETIONS_SSE_PLAIN: &str = concat!(
        r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":"Once","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}"#,
        "\n\n",
        r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":" upon","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}"#,
        "\n\n",
        r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"length"}],"model":"gpt-3.5-turbo-instruct"}"#,
        "\n\n",
        "data: [DONE]\n\n",
    );

    const RESPONSES_SSE: &str = concat!(
        "event: response.created\n",
        r#"data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_68a1","object":"response","created_at":1754400003,"status":"in_progress","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-mini-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}}"#,
        "\n\n",
        "event: response.in_progress\n",
        r#"data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_68a1","object":"response","created_at":1754400003,"status":"in_progress","model":"gpt-4.1-mini-2025-04-14","output":[],"usage":null}}"#,
        "\n\n",
        "event: response.output_item.added\n",
        r#"data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_68a1","type":"message","status":"in_progress","content":[],"role":"assistant"}}"#,
        "\n\n",
        "event: response.content_part.added\n",
        r#"data: {"type":"response.content_part.added","sequence_number":3,"item_id":"msg_68a1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#,
        "\n\n",
        "event: response.output_text.delta\n",
        r#"data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_68a1","output_index":0,"content_index":0,"delta":"Hi","logprobs":[],"obfuscation":"x1"}"#,
        "\n\n",
        "event: response.output_text.delta\n",
        r#"data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_68a1","output_index":0,"content_index":0,"delta":" there \u2014 ünïcode","logprobs":[],"obfuscation":"x2"}"#,
        "\n\n",
        "event: response.output_text.done\n",
        r#"data: {"type":"response.output_text.done","sequence_number":6,"item_id":"msg_68a1","output_index":0,"content_index":0,"text":"Hi there — ünïcode","logprobs":[]}"#,
        "\n\n",
        "event: response.content_part.done\n",
        r#"data: {"type":"response.content_part.done","sequence_number":7,"item_id":"msg_68a1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi there — ünïcode"}}"#,
        "\n\n",
        "event: response.output_item.done\n",
        r#"data: {"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_68a1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi there — ünïcode"}],"role":"assistant"}}"#,
        "\n\n",
        "event: response.completed\n",
        r#"data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_68a1","object":"response","created_at":1754400003,"status":"completed","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-mini-2025-04-14","output":[{"id":"msg_68a1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi there — ünïcode"}],"role":"assistant"}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48},"user":null,"metadata":{}}}"#,
        "\n\n",
    );

    const IMAGES_SSE: &str = concat!(
        "event: image_generation.partial_image\n",
        r#"data: {"type":"image_generation.partial_image","b64_json":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ","created_at":1754400004,"size":"1024x1024","quality":"high","background":"opaque","output_format":"png","partial_image_index":0}"#,
        "\n\n",
        "event: image_generation.completed\n",
        r#"data: {"type":"image_generation.completed","b64_json":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk","created_at":1754400004,"size":"1024x1024","quality":"high","background":"opaque","output_format":"png","usage":{"total_tokens":4230,"input_tokens":70,"output_tokens":4160,"input_tokens_details":{"text_tokens":70,"image_tokens":0}}}"#,
        "\n\n",
    );

    // --- JSON sources ---------------------------------------------------------------------------------

    #[test]
    fn chat_json() {
        let o = run_all(ResponseKind::Json, false, CHAT_JSON.as_bytes());
        assert_eq!(o.out, CHAT_JSON.as_bytes());
        assert_eq!(o.reported, usage(19, 10));
        assert_eq!(o.model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(o.content, "Hello! How can I assist you today?".len() as u64);
        assert_eq!(o.images, 0);
    }

    #[test]
    fn completions_json() {
        let o = run_all(ResponseKind::Json, false, COMPLETIONS_JSON.as_bytes());
        assert_eq!(o.reported, usage(5, 7));
        assert_eq!(o.model.as_deref(), Some("gpt-3.5-turbo-instruct"));
        // Each escape counts as one byte: "\n\nThis is indeed a test".
        assert_eq!(o.content, 2 + "This is indeed a test".len() as u64);
    }

    #[test]
    fn embeddings_json() {
        let o = run_all(ResponseKind::Json, false, EMBEDDINGS_JSON.as_bytes());
        assert_eq!(o.reported, usage(8, 0));
        assert_eq!(o.model.as_deref(), Some("text-embedding-3-small"));
        assert_eq!(o.images, 0, "embeddings are not images");
        assert_eq!(o.content, 0);
    }

    #[test]
    fn responses_json() {
        let o = run_all(ResponseKind::Json, false, RESPONSES_JSON.as_bytes());
        assert_eq!(o.reported, usage(36, 87));
        assert_eq!(o.model.as_deref(), Some("gpt-4.1-2025-04-14"));
        assert_eq!(
            o.content,
            "In a peaceful grove beneath a silver moon, a unicorn named Lumina slept.".len() as u64
        );
    }

    #[test]
    fn responses_json_image_tool_counts_images() {
        let body = r#"{"id":"resp_1","object":"response","model":"gpt-4.1","output":[{"type":"image_generation_call","id":"ig_1","status":"completed","result":"iVBORw0KGgo="},{"type":"message","content":[{"type":"output_text","text":"Here it is."}]}],"usage":{"input_tokens":2000,"output_tokens":1500,"total_tokens":3500}}"#;
        let o = run_all(ResponseKind::Json, false, body.as_bytes());
        assert_eq!(o.images, 1);
        assert_eq!(o.reported.map(|u| u.images), Some(1));
        assert_eq!(o.content, "Here it is.".len() as u64);
    }

    #[test]
    fn images_json_gpt_image() {
        let o = run_all(ResponseKind::Json, false, IMAGES_JSON.as_bytes());
        assert_eq!(o.images, 2);
        assert_eq!(
            o.reported,
            Some(Usage {
                prompt_tokens: 50,
                completion_tokens: 4160,
                images: 2
            })
        );
        assert_eq!(o.model, None);
    }

    #[test]
    fn images_json_dalle_has_no_usage() {
        let o = run_all(ResponseKind::Json, false, DALLE_JSON.as_bytes());
        assert_eq!(o.images, 1);
        assert_eq!(o.reported, None);
        let mut m = UsageMeter::new(ResponseKind::Json, false);
        m.feed(Bytes::from_static(DALLE_JSON.as_bytes()));
        let (u, estimated) = final_usage(&m, 81);
        assert!(estimated);
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 21,
                completion_tokens: 0,
                images: 1
            }
        );
    }

    #[test]
    fn usage_null_or_incomplete_is_not_reported() {
        for body in [
            r#"{"model":"m","usage":null}"#,
            r#"{"model":"m","usage":{}}"#,
            r#"{"model":"m","usage":{"prompt_tokens":5}}"#,
            r#"{"model":"m","usage":{"completion_tokens":5}}"#,
            r#"{"model":"m","usage":{"prompt_tokens":-5,"completion_tokens":1}}"#,
            r#"{"model":"m","usage":"lots"}"#,
            r#"{"model":"m","choices":[{"message":{"usage":{"prompt_tokens":1,"completion_tokens":2}}}]}"#,
        ] {
            let o = run_all(ResponseKind::Json, false, body.as_bytes());
            assert_eq!(o.reported, None, "{body}");
            assert_eq!(o.model.as_deref(), Some("m"), "{body}");
        }
        // Lenient number shapes still count.
        let o = run(
            ResponseKind::Json,
            false,
            &[br#"{"usage":{"prompt_tokens":5.0,"completion_tokens":"7"}}"#],
        );
        assert_eq!(o.reported, usage(5, 7));
    }

    #[test]
    fn json_error_and_garbage_report_nothing() {
        for body in [
            r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            "<html><body>502 Bad Gateway</body></html>",
            r#"[{"usage":{"prompt_tokens":1,"completion_tokens":1}}]"#,
            r#"{"usage":{"prompt_tokens":1,"completion_tokens":"#,
            "",
        ] {
            let o = run_all(ResponseKind::Json, false, body.as_bytes());
            assert_eq!(o.reported, None, "{body}");
            assert_eq!(o.out, body.as_bytes());
        }
    }

    #[test]
    fn model_is_capped_at_128_bytes_on_a_char_boundary() {
        let long = "é".repeat(100);
        let body =
            format!(r#"{{"model":"{long}","usage":{{"prompt_tokens":1,"completion_tokens":2}}}}"#);
        let o = run(ResponseKind::Json, false, &[body.as_bytes()]);
        let m = o.model.unwrap_or_default();
        assert_eq!(m.len(), 128);
        assert!(long.starts_with(&m));
        let sse = format!("data: {{\"model\":\"{long}\",\"choices\":[]}}\n\n");
        let o = run(ResponseKind::Sse, false, &[sse.as_bytes()]);
        assert_eq!(o.model.map(|m| m.len()), Some(128));
        // Escaped model names are decoded.
        let o = run(ResponseKind::Json, false, &[br#"{"model":"gpt\u002d4o"}"#]);
        assert_eq!(o.model.as_deref(), Some("gpt-4o"));
    }

    #[test]
    fn json_twenty_megabyte_data_array_stays_bounded() {
        let mut body = Vec::with_capacity(21 << 20);
        body.extend_from_slice(b"{\n  \"object\": \"list\",\n  \"data\": [");
        let floats: String = (0..1536)
            .map(|i| {
                format!(
                    "{}{:.10}",
                    if i % 3 == 0 { "-" } else { "" },
                    i as f64 / 7919.0
                )
            })
            .collect::<Vec<_>>()
            .join(",\n        ");
        let mut n = 0;
        while body.len() < 20 << 20 {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(
                format!(
                    "\n    {{\n      \"object\": \"embedding\",\n      \"index\": {n},\n      \"embedding\": [\n        {floats}\n      ]\n    }}"
                )
                .as_bytes(),
            );
            n += 1;
        }
        body.extend_from_slice(
            b"\n  ],\n  \"model\": \"text-embedding-3-large\",\n  \"usage\": {\n    \"prompt_tokens\": 123456,\n    \"total_tokens\": 123456\n  }\n}\n",
        );
        let mut m = UsageMeter::new(ResponseKind::Json, false);
        let mut max = 0;
        for c in body.chunks(65_521) {
            let out = m.feed(Bytes::copy_from_slice(c));
            assert_eq!(out.len(), c.len());
            max = max.max(m.buffered_bytes());
        }
        assert!(max <= 8 * 1024, "meter held {max} bytes");
        assert_eq!(m.reported(), usage(123_456, 0));
        assert_eq!(m.model(), Some("text-embedding-3-large"));
        assert_eq!(m.images(), 0);
        assert_eq!(m.content_bytes(), 0);
    }

    // --- SSE sources ----------------------------------------------------------------------------------

    #[test]
    fn chat_sse_client_asked_for_usage() {
        let o = run_all(ResponseKind::Sse, false, CHAT_SSE_WITH_USAGE.as_bytes());
        assert_eq!(o.out, CHAT_SSE_WITH_USAGE.as_bytes());
        assert_eq!(o.reported, usage(19, 10));
        assert_eq!(o.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
        assert_eq!(o.content, chat_content());
    }

    #[test]
    fn chat_sse_strip_gives_what_openai_sends_without_include_usage() {
        let o = run_all(ResponseKind::Sse, true, CHAT_SSE_WITH_USAGE.as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&o.out),
            CHAT_SSE_PLAIN,
            "stripped stream differs"
        );
        assert_eq!(o.reported, usage(19, 10));
        assert_eq!(o.content, chat_content());
        // And with CRLF line endings, which must survive untouched.
        let o = run_all(
            ResponseKind::Sse,
            true,
            crlf(CHAT_SSE_WITH_USAGE).as_bytes(),
        );
        assert_eq!(String::from_utf8_lossy(&o.out), crlf(CHAT_SSE_PLAIN));
        assert_eq!(o.reported, usage(19, 10));
    }

    #[test]
    fn tool_call_sse_strip_and_content() {
        let o = run_all(ResponseKind::Sse, true, TOOL_SSE_WITH_USAGE.as_bytes());
        assert_eq!(String::from_utf8_lossy(&o.out), TOOL_SSE_PLAIN);
        assert_eq!(o.reported, usage(81, 15));
        assert_eq!(o.content, "{\"city\":\"Paris\"}".len() as u64);
        assert_eq!(o.model.as_deref(), Some("gpt-4.1-2025-04-14"));
    }

    #[test]
    fn completions_sse_strip() {
        let o = run_all(
            ResponseKind::Sse,
            true,
            COMPLETIONS_SSE_WITH_USAGE.as_bytes(),
        );
        assert_eq!(String::from_utf8_lossy(&o.out), COMPLETIONS_SSE_PLAIN);
        assert_eq!(o.reported, usage(5, 2));
        assert_eq!(o.content, "Once upon".len() as u64);
        let o = run_all(
            ResponseKind::Sse,
            false,
            COMPLETIONS_SSE_WITH_USAGE.as_bytes(),
        );
        assert_eq!(o.out, COMPLETIONS_SSE_WITH_USAGE.as_bytes());
        assert_eq!(o.reported, usage(5, 2));
    }

    #[test]
    fn responses_sse() {
        let o = run_all(ResponseKind::Sse, false, RESPONSES_SSE.as_bytes());
        assert_eq!(o.out, RESPONSES_SSE.as_bytes());
        assert_eq!(o.reported, usage(37, 11));
        assert_eq!(o.model.as_deref(), Some("gpt-4.1-mini-2025-04-14"));
        assert_eq!(o.content, "Hi there — ünïcode".len() as u64);
        assert_eq!(o.images, 0);
        // `event:` lines alone name the event when the JSON has no `type`.
        let s = RESPONSES_SSE.replace(r#""type":"response.output_text.delta","#, "");
        let o = run(ResponseKind::Sse, false, &[s.as_bytes()]);
        assert_eq!(o.content, "Hi there — ünïcode".len() as u64);
    }

    #[test]
    fn responses_sse_incomplete_reports_usage() {
        let s = concat!(
            "event: response.incomplete\n",
            r#"data: {"type":"response.incomplete","sequence_number":9,"response":{"id":"resp_2","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"model":"o4-mini","usage":{"input_tokens":12,"output_tokens":64,"output_tokens_details":{"reasoning_tokens":64},"total_tokens":76}}}"#,
            "\n\n"
        );
        let o = run_all(ResponseKind::Sse, false, s.as_bytes());
        assert_eq!(o.reported, usage(12, 64));
        assert_eq!(o.model.as_deref(), Some("o4-mini"));
    }

    #[test]
    fn images_sse() {
        let o = run_all(ResponseKind::Sse, false, IMAGES_SSE.as_bytes());
        assert_eq!(o.out, IMAGES_SSE.as_bytes());
        assert_eq!(o.images, 1);
        assert_eq!(
            o.reported,
            Some(Usage {
                prompt_tokens: 70,
                completion_tokens: 4160,
                images: 1
            })
        );
    }

    #[test]
    fn sse_data_without_space_and_done_without_space() {
        let s = "data:{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"abc\"}}]}\r\n\r\ndata:{\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\r\n\r\ndata:[DONE]\r\n\r\n";
        let o = run_all(ResponseKind::Sse, false, s.as_bytes());
        assert_eq!(o.reported, usage(3, 1));
        assert_eq!(o.content, 3);
        let o = run_all(ResponseKind::Sse, true, s.as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&o.out),
            "data:{\"model\":\"m\",\"choices\":[{\"delta\":{\"content\":\"abc\"}}]}\r\n\r\ndata:[DONE]\r\n\r\n"
        );
    }

    #[test]
    fn stream_cut_short_is_estimated() {
        // The stream stops mid-way through a chunk: no usage ever arrives.
        let full = CHAT_SSE_WITH_USAGE.as_bytes();
        let cut = full
            .windows(6)
            .position(|w| w == b"\"stop\"")
            .unwrap_or(full.len());
        let o = run_all(ResponseKind::Sse, true, &full[..cut]);
        assert_eq!(o.reported, None);
        assert_eq!(o.content, chat_content());
        let mut m = UsageMeter::new(ResponseKind::Sse, true);
        m.feed(Bytes::copy_from_slice(&full[..cut]));
        let (u, estimated) = final_usage(&m, 1001);
        assert!(estimated);
        assert_eq!(
            u,
            Usage {
                prompt_tokens: 251,
                completion_tokens: chat_content().div_ceil(4),
                images: 0
            }
        );
        // Without `finish` (a client hang-up) the content already seen is still counted.
        assert_eq!(m.content_bytes(), chat_content());
    }

    #[test]
    fn reported_usage_is_not_estimated() {
        let mut m = UsageMeter::new(ResponseKind::Sse, false);
        m.feed(Bytes::from_static(CHAT_SSE_WITH_USAGE.as_bytes()));
        assert_eq!(
            final_usage(&m, 10_000),
            (usage(19, 10).unwrap_or_default(), false)
        );
    }

    #[test]
    fn strip_keeps_events_that_are_not_the_usage_chunk() {
        // A provider that puts usage on a chunk with choices: only the null fields go, the chunk stays.
        let s = concat!(
            "event: message\n",
            "id: 7\n",
            r#"data: {"choices":[{"delta":{"content":"x"}}], "usage": null }"#,
            "\n\n",
            r#"data: {"usage":null,"choices":[{"delta":{"content":"y"},"finish_reason":"stop"}],"usage_extra":null}"#,
            "\n\n",
            r#"data: {"usage":null}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":2,"completion_tokens":2}}"#,
            "\n\n",
            ": comment with the usage chunk\n",
            r#"data: {"choices":[],"usage":{"prompt_tokens":2,"completion_tokens":3}}"#,
            "\n\n",
        );
        let expected = concat!(
            "event: message\n",
            "id: 7\n",
            r#"data: {"choices":[{"delta":{"content":"x"}}] }"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{"content":"y"},"finish_reason":"stop"}],"usage_extra":null}"#,
            "\n\n",
            r#"data: {}"#,
            "\n\n",
            r#"data: {"choices":[{"delta":{}}],"usage":{"prompt_tokens":2,"completion_tokens":2}}"#,
            "\n\n",
            ": comment with the usage chunk\n",
            "\n",
        );
        let o = run_all(ResponseKind::Sse, true, s.as_bytes());
        assert_eq!(String::from_utf8_lossy(&o.out), expected);
        assert_eq!(o.reported, usage(2, 3));
        assert_eq!(o.content, 2);
    }

    #[test]
    fn stream_ending_without_newline() {
        let s = "data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}],\"usage\":null}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":4,\"completion_tokens\":5}}";
        let o = run_all(ResponseKind::Sse, true, s.as_bytes());
        assert_eq!(
            String::from_utf8_lossy(&o.out),
            "data: {\"choices\":[{\"delta\":{\"content\":\"ab\"}}]}\n\n"
        );
        assert_eq!(o.reported, usage(4, 5));
        let o = run_all(ResponseKind::Sse, false, s.as_bytes());
        assert_eq!(o.out, s.as_bytes());
        assert_eq!(o.reported, usage(4, 5));
    }

    #[test]
    fn null_member_span_cases() {
        let cases: [(&str, &str); 6] = [
            (r#"{"a":1,"usage":null}"#, r#"{"a":1}"#),
            (r#"{"a":1, "usage": null}"#, r#"{"a":1}"#),
            (r#"{"usage":null,"a":1}"#, r#"{"a":1}"#),
            (r#"{ "usage" : null , "a":1}"#, r#"{ "a":1}"#),
            (r#"{"usage":null}"#, r#"{}"#),
            (
                r#"{"a":"\"usage\":null","usage":null,"b":2}"#,
                r#"{"a":"\"usage\":null","b":2}"#,
            ),
        ];
        for (input, want) in cases {
            let (a, b) = null_member_span(input.as_bytes(), b"usage").unwrap_or((0, 0));
            let got = format!("{}{}", &input[..a], &input[b..]);
            assert_eq!(got, want, "{input}");
        }
        assert_eq!(null_member_span(br#"{"usage":{}}"#, b"usage"), None);
        assert_eq!(null_member_span(br#"{"x":{"usage":null}}"#, b"usage"), None);
    }

    #[test]
    fn sse_big_image_line_is_metered_without_buffering_it() {
        let b64 = "QUJD".repeat(800_000); // 3.2 MB, like a real 1024x1024 PNG
        let s = format!(
            "event: image_generation.partial_image\ndata: {{\"type\":\"image_generation.partial_image\",\"b64_json\":\"{b64}\",\"partial_image_index\":0}}\n\nevent: image_generation.completed\ndata: {{\"type\":\"image_generation.completed\",\"b64_json\":\"{b64}\",\"created_at\":1754400004,\"usage\":{{\"total_tokens\":300,\"input_tokens\":100,\"output_tokens\":200}}}}\n\n"
        );
        for strip in [false, true] {
            let mut m = UsageMeter::new(ResponseKind::Sse, strip);
            let mut out = Vec::new();
            let mut max = 0;
            for c in s.as_bytes().chunks(16_411) {
                out.extend_from_slice(&m.feed(Bytes::copy_from_slice(c)));
                max = max.max(m.buffered_bytes());
            }
            out.extend_from_slice(&m.finish());
            assert_eq!(out, s.as_bytes());
            assert!(max <= LINE_CAP + EVENT_CAP + 64 * 1024, "held {max}");
            assert_eq!(m.images(), 1);
            assert_eq!(
                m.reported(),
                Some(Usage {
                    prompt_tokens: 100,
                    completion_tokens: 200,
                    images: 1
                })
            );
        }
        // Without an `event:` line and without a space after `data:` the scanner still finds the type.
        let s = format!(
            "data:{{\"type\":\"image_edit.completed\",\"b64_json\":\"{b64}\",\"usage\":{{\"input_tokens\":1,\"output_tokens\":2}}}}\n\n"
        );
        let mut m = UsageMeter::new(ResponseKind::Sse, false);
        for c in s.as_bytes().chunks(100_000) {
            m.feed(Bytes::copy_from_slice(c));
        }
        assert_eq!(m.images(), 1);
        assert_eq!(
            m.reported(),
            Some(Usage {
                prompt_tokens: 1,
                completion_tokens: 2,
                images: 1
            })
        );
    }

    #[test]
    fn sse_big_response_completed_line() {
        // A Responses stream whose final event carries a generated image inline.
        let b64 = "iVBO".repeat(400_000);
        let s = format!(
            "event: response.image_generation_call.completed\ndata: {{\"type\":\"response.image_generation_call.completed\",\"output_index\":0,\"item_id\":\"ig_1\",\"sequence_number\":5}}\n\nevent: response.completed\ndata: {{\"type\":\"response.completed\",\"response\":{{\"id\":\"resp_3\",\"model\":\"gpt-4.1\",\"output\":[{{\"type\":\"image_generation_call\",\"result\":\"{b64}\"}}],\"usage\":{{\"input_tokens\":2200,\"output_tokens\":1300,\"total_tokens\":3500}}}}}}\n\n"
        );
        let mut m = UsageMeter::new(ResponseKind::Sse, false);
        for c in s.as_bytes().chunks(8192) {
            m.feed(Bytes::copy_from_slice(c));
        }
        m.finish();
        assert_eq!(m.images(), 1);
        assert_eq!(m.model(), Some("gpt-4.1"));
        assert_eq!(
            m.reported().map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((2200, 1300))
        );
        assert!(m.buffered_bytes() <= LINE_CAP + 64 * 1024);
    }

    #[test]
    fn strip_gives_up_on_an_event_over_one_mebibyte() {
        let big = "x".repeat(EVENT_CAP + 10);
        let s = format!(
            "data: {{\"choices\":[{{\"delta\":{{\"content\":\"a\"}}}}],\"usage\":null}}\n\ndata: {{\"choices\":[{{\"delta\":{{\"content\":\"{big}\"}}}}],\"usage\":null}}\n\ndata: {{\"choices\":[{{\"delta\":{{\"content\":\"b\"}}}}],\"usage\":null}}\n\ndata: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":2}}}}\n\n"
        );
        // Everything after the first event passes untouched once the big one forced a release.
        let first_plain = "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\n";
        let first_len = s.find("\n\n").unwrap_or(0) + 2;
        let expected = format!("{first_plain}{}", &s[first_len..]);
        for chunk in [1000, 65_536, 1 << 21] {
            let mut m = UsageMeter::new(ResponseKind::Sse, true);
            let mut out = Vec::new();
            for c in s.as_bytes().chunks(chunk) {
                out.extend_from_slice(&m.feed(Bytes::copy_from_slice(c)));
                assert!(m.buffered_bytes() <= LINE_CAP + EVENT_CAP + 64 * 1024);
            }
            out.extend_from_slice(&m.finish());
            assert!(out == expected.as_bytes(), "chunk size {chunk}");
            assert_eq!(m.reported(), usage(1, 2));
            assert_eq!(m.content_bytes(), 2 + big.len() as u64);
        }
    }

    #[test]
    fn over_long_non_data_line_is_skipped() {
        let s = format!(
            ": {}\n\ndata: {{\"choices\":[],\"usage\":{{\"prompt_tokens\":1,\"completion_tokens\":1}}}}\n\n",
            "k".repeat(LINE_CAP * 2)
        );
        let mut m = UsageMeter::new(ResponseKind::Sse, false);
        for c in s.as_bytes().chunks(50_000) {
            m.feed(Bytes::copy_from_slice(c));
            assert!(m.buffered_bytes() <= LINE_CAP + 64 * 1024);
        }
        assert_eq!(m.reported(), usage(1, 1));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_pass_through() {
        // A small xorshift generator: deterministic, no dependency.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let alphabet = b"data: {}[]\":,\\\n\r usage null choices event 0123 \xc3\xa9 \xff";
        for round in 0..300 {
            let len = (next() % 600) as usize;
            let body: Vec<u8> = (0..len)
                .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
                .collect();
            for kind in [ResponseKind::Json, ResponseKind::Sse] {
                for strip in [false, true] {
                    let mut m = UsageMeter::new(kind, strip);
                    let mut out = Vec::new();
                    let mut rest = &body[..];
                    while !rest.is_empty() {
                        let n = ((next() % 40) as usize + 1).min(rest.len());
                        out.extend_from_slice(&m.feed(Bytes::copy_from_slice(&rest[..n])));
                        rest = &rest[n..];
                    }
                    out.extend_from_slice(&m.finish());
                    if !strip || kind == ResponseKind::Json {
                        assert_eq!(out, body, "round {round}");
                    }
                }
            }
        }
        // Deep nesting is fine too.
        let deep = format!("{}{}", "[{\"a\":".repeat(10_000), "}]".repeat(10_000));
        run(ResponseKind::Json, false, &[deep.as_bytes()]);
        let deep_sse = format!("data: {}\n\n", "[".repeat(100_000));
        run(ResponseKind::Sse, true, &[deep_sse.as_bytes()]);
    }

    #[test]
    fn feed_accepts_bytes_refs_and_slices_without_copying_bytes() {
        let body = Bytes::from_static(CHAT_SSE_WITH_USAGE.as_bytes());
        let mut m = UsageMeter::new(ResponseKind::Sse, false);
        let out = m.feed(&body);
        assert_eq!(out.as_ptr(), body.as_ptr(), "no copy when nothing changes");
        let mut m2 = UsageMeter::new(ResponseKind::Sse, false);
        let slice: &[u8] = &body;
        assert_eq!(m2.feed(slice), body);
        let v = body.to_vec();
        let mut m3 = UsageMeter::new(ResponseKind::Json, false);
        assert_eq!(m3.feed(&v), body);
        assert_eq!(m.reported(), m2.reported());
    }

    // --- Request side ---------------------------------------------------------------------------------

    fn inject(s: &str) -> Option<String> {
        inject_include_usage(s.as_bytes()).map(|v| String::from_utf8_lossy(&v).into_owned())
    }

    #[test]
    fn inject_cases() {
        // Nothing to change.
        assert_eq!(inject(r#"{"model":"gpt-4o","messages":[]}"#), None);
        assert_eq!(inject(r#"{"model":"gpt-4o","stream":false}"#), None);
        assert_eq!(inject(r#"{"model":"gpt-4o","stream":"true"}"#), None);
        assert_eq!(
            inject(r#"{"stream":true,"stream_options":{"include_usage":true}}"#),
            None
        );
        assert_eq!(inject(r#"{"stream":true,"#), None, "invalid JSON");
        assert_eq!(inject(r#"[{"stream":true}]"#), None, "not an object");
        assert_eq!(inject(r#"true"#), None);
        assert_eq!(inject(""), None);
        assert_eq!(
            inject(r#"{"stream":true,"stream":true}"#),
            None,
            "duplicate key"
        );

        // Insertion right after `{`, every other byte kept.
        assert_eq!(
            inject(
                r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
            )
            .as_deref(),
            Some(
                r#"{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
            )
        );
        let odd = "  \n{\n\t\"model\" :  \"gpt-4o\",\r\n  \"stream\"\t:\ttrue ,\n  \"messages\": [ ]\n}\n";
        assert_eq!(
            inject(odd).as_deref(),
            Some("  \n{\"stream_options\":{\"include_usage\":true},\n\t\"model\" :  \"gpt-4o\",\r\n  \"stream\"\t:\ttrue ,\n  \"messages\": [ ]\n}\n")
        );

        // Existing stream_options.
        assert_eq!(
            inject(r#"{"stream":true,"stream_options":{"include_usage":false},"model":"m"}"#)
                .as_deref(),
            Some(r#"{"stream":true,"stream_options":{"include_usage":true},"model":"m"}"#)
        );
        assert_eq!(
            inject(r#"{"stream":true,"stream_options":{"include_usage": null}}"#).as_deref(),
            Some(r#"{"stream":true,"stream_options":{"include_usage": true}}"#)
        );
        assert_eq!(
            inject(r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#).as_deref(),
            Some(
                r#"{"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#
            )
        );
        assert_eq!(
            inject(r#"{"stream":true,"stream_options":{ }}"#).as_deref(),
            Some(r#"{"stream":true,"stream_options":{"include_usage":true }}"#)
        );
        assert_eq!(
            inject(r#"{"stream":true,"stream_options":null}"#).as_deref(),
            Some(r#"{"stream":true,"stream_options":{"include_usage":true}}"#)
        );
        // An escaped key cannot be edited in place: re-serialised, still correct.
        let v = inject(r#"{"stream":true,"stream\u005foptions":{"include_usage":false},"n":1}"#)
            .unwrap_or_default();
        let parsed: serde_json::Value = serde_json::from_str(&v).unwrap_or_default();
        assert_eq!(parsed["stream_options"]["include_usage"], true);
        assert_eq!(parsed["n"], 1);
        // Strings that look like the keys are not touched.
        assert_eq!(
            inject(r#"{"messages":[{"content":"\"stream_options\":{}"}],"stream":true}"#)
                .as_deref(),
            Some(
                r#"{"stream_options":{"include_usage":true},"messages":[{"content":"\"stream_options\":{}"}],"stream":true}"#
            )
        );
    }

    // --- Micro benchmark ------------------------------------------------------------------------------

    /// `cargo test --release -- --ignored --nocapture bench_sse_chunk` prints the cost of one 4 KiB chunk.
    #[test]
    #[ignore]
    fn bench_sse_chunk() {
        let one = r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" token"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"xY"}"#;
        let mut chunk = Vec::new();
        while chunk.len() + one.len() + 2 <= 4096 {
            chunk.extend_from_slice(one.as_bytes());
            chunk.extend_from_slice(b"\n\n");
        }
        let events = chunk.len() / (one.len() + 2);
        let chunk = Bytes::from(chunk);
        // The bulk of a large JSON body: embedding floats inside `data`.
        let mut floats = Vec::new();
        while floats.len() < 4096 - 24 {
            floats.extend_from_slice(b"\n        -0.0069292834,");
        }
        let json = Bytes::from(floats);
        for (name, kind, strip, data) in [
            ("sse meter", ResponseKind::Sse, false, &chunk),
            ("sse strip", ResponseKind::Sse, true, &chunk),
            ("json embeddings", ResponseKind::Json, false, &json),
        ] {
            let mut m = UsageMeter::new(kind, strip);
            if kind == ResponseKind::Json {
                m.feed(Bytes::from_static(
                    b"{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"embedding\":[",
                ));
            }
            let n = 100_000u32;
            let t = std::time::Instant::now();
            let mut total = 0usize;
            for _ in 0..n {
                total += m.feed(data.clone()).len();
            }
            let ns = t.elapsed().as_nanos() / u128::from(n);
            println!(
                "{name}: {} bytes -> {ns} ns/chunk, {:.0} MB/s (out {total}; SSE chunk = {events} events)",
                data.len(),
                data.len() as f64 * 1e3 / ns as f64
            );
        }
    }
}
