//! SSE streams, metered as they pass.

use super::fixtures::*;
use super::*;

#[test]
fn chat_sse_client_asked_for_usage() {
    let o = run_all(ResponseKind::Sse, false, CHAT_SSE_WITH_USAGE.as_bytes());
    assert_eq!(o.out, CHAT_SSE_WITH_USAGE.as_bytes());
    assert_eq!(o.reported, usage(19, 10));
    assert_eq!(o.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(o.content, chat_content());
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
