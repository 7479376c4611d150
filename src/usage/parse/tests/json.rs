//! JSON bodies.

use super::fixtures::*;
use super::*;

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
