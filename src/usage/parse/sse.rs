//! SSE: splitting the stream into lines (which may span chunks) and metering each event's `data:` JSON.
//! A line longer than `LINE_CAP` is not held but fed to the streaming JSON scanner.

use super::acc::{apply, Acc, Found};
use super::buf::{bounded_extend, find_nl};
use super::fields::{Chunk, Field};
use super::json_scan::JsonScan;
use super::json_text::skip_ws;
use super::strip::{null_member_span, trailing_null_usage_span, LineOut};
use super::{UsageMeter, LINE_CAP, SHRINK_TO, TYPE_CAP};

impl UsageMeter {
    /// Non-stripping SSE path: the chunk goes out as is; lines are assembled only for metering.
    pub(super) fn meter_sse(&mut self, chunk: &[u8]) {
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
    pub(super) fn finish_big(&mut self) {
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
}

#[derive(Default)]
pub(super) struct Sse {
    /// Stripping is on (and has not been given up).
    pub(super) strip: bool,
    /// The current line so far, when it started in an earlier chunk (bounded by `LINE_CAP`).
    pub(super) line: Vec<u8>,
    /// The current line outgrew `LINE_CAP`.
    pub(super) big: Option<Box<BigLine>>,
    /// The `event:` name of the current event.
    pub(super) ev: EventName,
    /// Stripping: the current event's lines, already edited, waiting for the blank line.
    pub(super) event_out: Vec<u8>,
    /// Stripping: the current event's usage-only data line was dropped.
    pub(super) drop_event: bool,
}

pub(super) enum BigLine {
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
pub(super) struct EventName(String);

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
    pub(super) fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

/// Meters one complete SSE line (without `\n`; a trailing `\r` is allowed). `want_edit`: compute where a
/// `"usage":null` member is, for stripping.
pub(super) fn on_line(line: &[u8], ev: &mut EventName, acc: &mut Acc, want_edit: bool) -> LineOut {
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
        // Parsed above, so the JSON is valid, as the fast path needs.
        let span = trailing_null_usage_span(json).or_else(|| null_member_span(json, b"usage"));
        if let Some((a, b)) = span {
            return LineOut::Edit(off + start + a, off + start + b);
        }
    }
    LineOut::Keep
}
