//! Request side: adding `stream_options.include_usage` to a streaming request body.

use serde::Deserialize;

use super::fields::{Field, Flag};
use super::json_text::{find_member, skip_ws, splice};

/// Request side: given a complete chat/completions or completions request body, decides whether to inject
/// `stream_options.include_usage`. `None` when nothing is to change: not a JSON object, no `"stream": true`,
/// or the client already asked for usage. Otherwise the new body: a textual insertion that keeps every other
/// byte of the client's body, or, if the body is too unusual for that (escaped key names), a re-serialised
/// one.
pub fn inject_include_usage(body: &[u8]) -> Option<Vec<u8>> {
    let open = skip_ws(body, 0);
    if body.get(open) != Some(&b'{') || !may_name_stream(body) {
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

/// Whether `body` can hold a `stream` member at all: spelled plainly, or with a `\u` escape,
/// which is the only other way JSON can write those letters. Most requests do not stream, and
/// this look is far cheaper than parsing them.
fn may_name_stream(body: &[u8]) -> bool {
    body.windows(8).any(|w| w == b"\"stream\"") || body.windows(2).any(|w| w == b"\\u")
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
