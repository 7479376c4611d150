//! SSE streams with the usage-only chunk and `"usage":null` stripped.

use super::fixtures::*;
use super::*;
use crate::usage::parse::strip::{null_member_span, trailing_null_usage_span};

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
fn trailing_null_usage_span_agrees_with_the_walk_or_declines() {
    let found = [
        r#"{"a":1,"usage":null}"#,
        r#"{"a":"\"usage\":null","b":[1,{"c":2}],"usage":null}"#,
        "{\"a\":1,\"usage\":null}  \t",
        r#"{"id":"x","choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}"#,
    ];
    for input in found {
        let fast = trailing_null_usage_span(input.as_bytes());
        assert!(fast.is_some(), "{input}");
        assert_eq!(
            fast,
            null_member_span(input.as_bytes(), b"usage"),
            "{input}"
        );
    }
    // Anything else is left to the walk.
    for input in [
        r#"{"usage":null}"#,
        r#"{"a":1, "usage": null}"#,
        r#"{"usage":null,"a":1}"#,
        r#"{"a":1,"usage":{}}"#,
        r#"{"a":1,"usage":nullx}"#,
        r#"{"a":1,"Usage":null}"#,
        "",
    ] {
        assert_eq!(trailing_null_usage_span(input.as_bytes()), None, "{input}");
    }
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
