//! Accumulated results: what the SSE and JSON paths have found so far, and how one event adds to it.

use super::{Usage, MODEL_CAP};

/// What has been metered so far.
#[derive(Default)]
pub(super) struct Acc {
    /// Prompt and completion tokens reported; `images` unused here.
    pub(super) usage: Option<Usage>,
    pub(super) content: u64,
    pub(super) model: Option<String>,
    pub(super) images: u64,
    /// The top-level `type` seen by the JSON scanner (only used when it meters an over-long SSE line).
    pub(super) ty: Option<String>,
}

impl Acc {
    pub(super) fn held(&self) -> usize {
        self.model.as_ref().map_or(0, String::capacity)
            + self.ty.as_ref().map_or(0, String::capacity)
    }
}

/// What one SSE data line told us.
pub(super) struct Found<'a> {
    pub(super) ty: Option<&'a str>,
    pub(super) model: Option<&'a str>,
    /// A top-level `usage` (chat, completions, images events).
    pub(super) top_usage: Option<Usage>,
    /// `response.usage` (Responses events).
    pub(super) resp_usage: Option<Usage>,
    /// Generated text inside `choices`.
    pub(super) content: u64,
    /// Length of a top-level `delta` string, counted only for the delta event types below.
    pub(super) delta: u64,
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

pub(super) fn apply(acc: &mut Acc, f: Found<'_>) {
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
pub(super) fn cap_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default()
}
