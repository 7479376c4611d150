//! Request side: `inject_include_usage`.

use super::*;

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

    // A `stream` key written with escapes streams too.
    assert_eq!(
        inject(r#"{"str\u0065am":true}"#).as_deref(),
        Some(r#"{"stream_options":{"include_usage":true},"str\u0065am":true}"#)
    );

    // Insertion right after `{`, every other byte kept.
    assert_eq!(
        inject(r#"{"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#)
            .as_deref(),
        Some(
            r#"{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"hi"}]}"#
        )
    );
    let odd =
        "  \n{\n\t\"model\" :  \"gpt-4o\",\r\n  \"stream\"\t:\ttrue ,\n  \"messages\": [ ]\n}\n";
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
        inject(r#"{"messages":[{"content":"\"stream_options\":{}"}],"stream":true}"#).as_deref(),
        Some(
            r#"{"stream_options":{"include_usage":true},"messages":[{"content":"\"stream_options\":{}"}],"stream":true}"#
        )
    );
}
