//! Tests of the usage parser, run end to end through `UsageMeter` with bodies in the shapes OpenAI sends,
//! split at every boundary.

mod fixtures;
mod inject;
mod json;
mod meter;
mod sse;
mod strip;

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
