//! Streaming JSON scanner: meters JSON bodies (and SSE `data:` lines too long to hold) as they stream,
//! following string, escape and nesting state and capturing only small values.

use super::acc::{cap_str, Acc};
use super::buf::find_either;
use super::fields::{Field, RawUsage, Text};
use super::{KEY_MAX, MODEL_CAP, MODEL_RAW_CAP, TYPE_CAP, USAGE_CAP};

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

/// A byte-at-a-time JSON scanner that never holds more than one small captured value. It tolerates any
/// input (invalid JSON just yields nothing) and never recurses.
#[derive(Default)]
pub(super) struct JsonScan {
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
    pub(super) cap: Vec<u8>,
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

    /// A captured value is the contiguous run of bytes between the `:` before it and the `,` or
    /// close after it, so it is not copied piece by piece as the scan goes: `from` marks where it
    /// starts in this chunk, and the run is copied once, at its end or at the chunk's.
    pub(super) fn feed(&mut self, buf: &[u8], acc: &mut Acc) {
        let mut from = 0;
        let mut i = 0;
        while i < buf.len() {
            let rest = buf.get(i..).unwrap_or_default();
            if self.in_str {
                if !self.esc {
                    // The run of plain string bytes up to the next quote or backslash is taken
                    // whole: counted, copied into the key, or skipped.
                    let run = find_either(rest, b'"', b'\\').unwrap_or(rest.len());
                    match self.role {
                        Role::Content => acc.content = acc.content.saturating_add(run as u64),
                        Role::Key => self.push_key(rest.get(..run).unwrap_or_default()),
                        Role::Skip => {}
                    }
                    i += run;
                }
                let Some(&b) = buf.get(i) else { break };
                i += 1;
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
                } else {
                    // The closing quote.
                    self.in_str = false;
                }
                continue;
            }
            // Numbers, whitespace and literals change no state: skip their run.
            let run = rest
                .iter()
                .position(|&c| STRUCTURAL[usize::from(c)])
                .unwrap_or(rest.len());
            i += run;
            let Some(&b) = buf.get(i) else { break };
            i += 1;
            let capturing = self.cap_what.is_some();
            if capturing && self.depth == self.cap_depth && matches!(b, b',' | b'}' | b']') {
                self.capture_slice(buf.get(from..i - 1).unwrap_or_default());
                self.end_capture(acc);
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
                b':' => {
                    self.on_colon(acc);
                    if !capturing && self.cap_what.is_some() {
                        // The value starts after the colon.
                        from = i;
                    }
                }
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
        // A value still open at the chunk's end: what this chunk holds of it.
        self.capture_slice(buf.get(from..).unwrap_or_default());
    }

    /// Appends to the value being captured, if any, up to its limit.
    fn capture_slice(&mut self, bytes: &[u8]) {
        if let Some(what) = self.cap_what {
            let room = what.limit().saturating_sub(self.cap.len());
            if bytes.len() > room {
                self.cap_over = true;
            }
            self.cap
                .extend_from_slice(bytes.get(..room.min(bytes.len())).unwrap_or_default());
        }
    }

    /// Appends to the current key; a key longer than any we look for is marked as such.
    fn push_key(&mut self, bytes: &[u8]) {
        let end = self.key_len + bytes.len();
        match self.key.get_mut(self.key_len..end) {
            Some(slot) if self.key_len <= KEY_MAX => {
                slot.copy_from_slice(bytes);
                self.key_len = end;
            }
            _ => self.key_len = KEY_MAX + 1,
        }
    }

    fn start_capture(&mut self, what: Cap) {
        if self.cap_what.is_none() {
            self.cap.clear();
            // Room for a whole usage object or name at once, instead of growing by doublings.
            self.cap.reserve(256);
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
        let d = self.depth;
        // Decided on the borrowed key first, acted on after: copying the key out to call the
        // `&mut self` methods cost more than the matching.
        let key = self.key.get(..self.key_len).unwrap_or_default();
        let mut capture = None;
        let mut image = false;
        let mut top = None;
        if d == 1 && self.is_obj(1) {
            top = Some(match key {
                b"usage" => Top::Usage,
                b"model" => Top::Model,
                b"type" => Top::Type,
                b"data" => Top::Data,
                b"choices" => Top::Choices,
                b"output" => Top::Output,
                b"response" => Top::Response,
                _ => Top::Other,
            });
        } else if d == 2 && self.top == Top::Response && self.is_obj(2) {
            capture = match key {
                b"usage" => Some(Cap::Usage),
                b"model" => Some(Cap::Model),
                _ => None,
            };
        } else if d == 3 && !self.is_obj(2) && self.is_obj(3) {
            if self.top == Top::Data && !self.elem_image && matches!(key, b"b64_json" | b"url") {
                image = true;
            } else if self.top == Top::Output && key == b"type" {
                capture = Some(Cap::OutputType);
            }
        }
        // Only below the root: `top` is not changing here.
        let content = d >= 2
            && matches!(self.top, Top::Choices | Top::Output)
            && matches!(
                key,
                b"content" | b"text" | b"refusal" | b"arguments" | b"reasoning_content"
            );
        if let Some(top) = top {
            self.top = top;
            self.elem_image = false;
            capture = match top {
                Top::Usage => Some(Cap::Usage),
                Top::Model => Some(Cap::Model),
                Top::Type => Some(Cap::Type),
                _ => None,
            };
        }
        if image {
            acc.images = acc.images.saturating_add(1);
            self.elem_image = true;
        }
        if let Some(what) = capture {
            self.start_capture(what);
        }
        if content {
            self.content_next = true;
        }
    }
}
