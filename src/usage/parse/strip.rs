//! Stripping: when the gateway injected `stream_options.include_usage` for a client that did not ask, the
//! usage-only chunk and the `"usage":null` fields are removed, event by event, so the client sees what the
//! upstream would have sent without the gateway.

use super::acc::Acc;
use super::buf::{bounded_extend, find_nl, reserve_bounded};
use super::json_text::{find_member, is_ws, skip_ws};
use super::sse::{on_line, EventName, Sse};
use super::{UsageMeter, EVENT_CAP, LINE_CAP, SHRINK_TO};

impl UsageMeter {
    /// Stripping SSE path: lines are copied into the current event, edited, and the event is released at its
    /// blank line (or dropped when it is the usage-only chunk).
    pub(super) fn strip_sse(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
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

/// What to do with a line when stripping.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum LineOut {
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

/// `null_member_span` for the common case of `usage`, written last and compactly, as OpenAI writes
/// it into every chunk of a stream with `include_usage` (`…,"usage":null}`): found from the end
/// instead of by walking the object. Only for JSON already known to be valid: there, a final
/// `}` closes the root object, so the member just before it is the root's own.
pub(super) fn trailing_null_usage_span(json: &[u8]) -> Option<(usize, usize)> {
    const TAIL: &[u8] = b",\"usage\":null}";
    let end = json.iter().rposition(|&b| !is_ws(b))? + 1;
    let start = end.checked_sub(TAIL.len())?;
    (json.get(start..end)? == TAIL).then_some((start, end - 1))
}

/// The bytes to delete to remove the top-level member `key` when its value is `null`: the member and one
/// adjacent comma, so the object stays valid and reads as if the member had never been written.
pub(super) fn null_member_span(s: &[u8], key: &[u8]) -> Option<(usize, usize)> {
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
