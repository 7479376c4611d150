//! The README walkthrough, driven by the official OpenAI Python SDK: a user gets a key and
//! points `OpenAI(base_url=…/v1, api_key=key)` at the gateway.

mod common;

use common::mock::MockUpstream;
use common::{GatewayConfig, TestGateway};

/// Runs with GW_URL, GW_KEY; prints OK lines and exits non-zero with a reason on failure.
const SCRIPT: &str = r#"
import os, sys
import openai
from openai import OpenAI

base = os.environ["GW_URL"] + "/v1"
client = OpenAI(base_url=base, api_key=os.environ["GW_KEY"], max_retries=0, timeout=30)

reply = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Hello"}],
)
content = reply.choices[0].message.content
assert content == "Hello from mock", f"non-streaming content: {content!r}"
assert reply.usage is not None and reply.usage.total_tokens > 0, f"usage: {reply.usage!r}"
print("OK chat")

# What users write: every chunk has a choice (the gateway removes any usage-only chunk it
# asked for on its own account).
stream = client.chat.completions.create(
    model="gpt-4o-mini",
    messages=[{"role": "user", "content": "Hello"}],
    stream=True,
)
pieces = []
for chunk in stream:
    if not chunk.choices:
        sys.exit(f"a chunk without choices reached the client: {chunk!r}")
    pieces.append(chunk.choices[0].delta.content or "")
text = "".join(pieces)
assert text == "tok0 tok1 tok2 ", f"streamed text: {text!r}"
print("OK stream")

bad = OpenAI(base_url=base, api_key="sk-tg-" + "x" * 40, max_retries=0, timeout=30)
try:
    bad.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}]
    )
    sys.exit("a bad key was accepted")
except openai.AuthenticationError as e:
    assert e.status_code == 401, e.status_code
    code = e.body.get("code") if isinstance(e.body, dict) else None
    assert code == "invalid_api_key", f"error body: {e.body!r}"
print("OK auth")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_walkthrough() {
    common::python::require_openai();
    let mock = MockUpstream::start().await;
    let gw = TestGateway::start(GatewayConfig::new(&mock.url())).await;
    let key = gw.create_user("alice").await;

    let stdout = common::python::run_sdk_script(SCRIPT, gw.url(""), key).await;
    for step in ["OK chat", "OK stream", "OK auth"] {
        assert!(stdout.contains(step), "{step} missing:\n{stdout}");
    }
    // Two completions reached the upstream; the bad key did not.
    assert_eq!(mock.request_count(), 2);
}
