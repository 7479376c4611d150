//! Fixtures, in the shapes OpenAI sends.

pub(super) const CHAT_JSON: &str = r#"{
  "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
  "object": "chat.completion",
  "created": 1741569952,
  "model": "gpt-4.1-2025-04-14",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_3f58d112f7"
}
"#;

pub(super) const COMPLETIONS_JSON: &str = r#"{"id":"cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7","object":"text_completion","created":1589478378,"model":"gpt-3.5-turbo-instruct","system_fingerprint":"fp_44709d6fcb","choices":[{"text":"\n\nThis is indeed a test","index":0,"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":5,"completion_tokens":7,"total_tokens":12}}"#;

pub(super) const EMBEDDINGS_JSON: &str = r#"{
  "object": "list",
  "data": [
    {
      "object": "embedding",
      "index": 0,
      "embedding": [
        -0.006929283495992422,
        -0.005336422007530928,
        -4.547132266452536e-05,
        -0.024047505110502243
      ]
    },
    {
      "object": "embedding",
      "index": 1,
      "embedding": [0.0023064255, -0.009327292, 0.015797347]
    }
  ],
  "model": "text-embedding-3-small",
  "usage": {
    "prompt_tokens": 8,
    "total_tokens": 8
  }
}"#;

pub(super) const RESPONSES_JSON: &str = r#"{
  "id": "resp_67ccd2bed1ec8190b14f964abc0542670bb6a6b452d3795b",
  "object": "response",
  "created_at": 1741476542,
  "status": "completed",
  "error": null,
  "incomplete_details": null,
  "instructions": null,
  "max_output_tokens": null,
  "model": "gpt-4.1-2025-04-14",
  "output": [
    {
      "type": "message",
      "id": "msg_67ccd2bf17f0819081ff3bb2cf6508e60bb6a6b452d3795b",
      "status": "completed",
      "role": "assistant",
      "content": [
        {
          "type": "output_text",
          "text": "In a peaceful grove beneath a silver moon, a unicorn named Lumina slept.",
          "annotations": []
        }
      ]
    }
  ],
  "parallel_tool_calls": true,
  "previous_response_id": null,
  "reasoning": {"effort": null, "summary": null},
  "store": true,
  "temperature": 1.0,
  "text": {"format": {"type": "text"}},
  "tool_choice": "auto",
  "tools": [],
  "top_p": 1.0,
  "truncation": "disabled",
  "usage": {
    "input_tokens": 36,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 87,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 123
  },
  "user": null,
  "metadata": {}
}"#;

pub(super) const IMAGES_JSON: &str = r#"{
  "created": 1713833628,
  "data": [
    {"b64_json": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="},
    {"b64_json": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="}
  ],
  "background": "opaque",
  "output_format": "png",
  "quality": "high",
  "size": "1024x1024",
  "usage": {
    "total_tokens": 4260,
    "input_tokens": 50,
    "output_tokens": 4160,
    "input_tokens_details": {"text_tokens": 10, "image_tokens": 40}
  }
}"#;

pub(super) const DALLE_JSON: &str = r#"{"created":1713833628,"data":[{"revised_prompt":"A cute baby sea otter floating on its back","url":"https://oaidalleapiprodscus.blob.core.windows.net/private/img-abc.png?st=2024&sig=x%2By"}]}"#;

/// A chat stream as OpenAI sends it when `stream_options.include_usage` is true.
pub(super) const CHAT_SSE_WITH_USAGE: &str = concat!(
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Rj4kq"}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"xY"}"#,
    "\n\n",
    ": keep-alive\n\n",
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"! \"usage\":null\n"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"q"}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" Ça va? 😊"},"logprobs":null,"finish_reason":null}],"usage":null,"obfuscation":"Zp0"}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null,"obfuscation":"dQw4"}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}},"obfuscation":"sd"}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// The same stream as OpenAI sends it without `include_usage` (written by hand, not derived).
pub(super) const CHAT_SSE_PLAIN: &str = concat!(
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"obfuscation":"Rj4kq"}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"Hello"},"logprobs":null,"finish_reason":null}],"obfuscation":"xY"}"#,
    "\n\n",
    ": keep-alive\n\n",
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":"! \"usage\":null\n"},"logprobs":null,"finish_reason":null}],"obfuscation":"q"}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{"content":" Ça va? 😊"},"logprobs":null,"finish_reason":null}],"obfuscation":"Zp0"}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-C1x9Kq","object":"chat.completion.chunk","created":1754400000,"model":"gpt-4o-mini-2024-07-18","service_tier":"default","system_fingerprint":"fp_34a54ae93c","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"obfuscation":"dQw4"}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

/// Content of the chat stream: "" + "Hello" + `! "usage":null` + newline + " Ça va? 😊".
pub(super) fn chat_content() -> u64 {
    ("Hello".len() + "! \"usage\":null\n".len() + " Ça va? 😊".len()) as u64
}

/// Tool calls, with `usage` last in each chunk (the layout before `obfuscation` existed).
pub(super) const TOOL_SSE_WITH_USAGE: &str = concat!(
    r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Xq7","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\""}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":null}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[],"usage":{"prompt_tokens":81,"completion_tokens":15,"total_tokens":96,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

pub(super) const TOOL_SSE_PLAIN: &str = concat!(
    r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_Xq7","type":"function","function":{"name":"get_weather","arguments":""}}],"refusal":null},"logprobs":null,"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\""}}]},"logprobs":null,"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"city\":\"Paris\"}"}}]},"logprobs":null,"finish_reason":null}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-T0","object":"chat.completion.chunk","created":1754400001,"model":"gpt-4.1-2025-04-14","system_fingerprint":"fp_b3f1157249","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}]}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

pub(super) const COMPLETIONS_SSE_WITH_USAGE: &str = concat!(
    r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":"Once","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","usage":null}"#,
    "\n\n",
    r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":" upon","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct","usage":null}"#,
    "\n\n",
    r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"length"}],"model":"gpt-3.5-turbo-instruct","usage":null}"#,
    "\n\n",
    r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"model":"gpt-3.5-turbo-instruct","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

pub(super) const COMPLETIONS_SSE_PLAIN: &str = concat!(
    r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":"Once","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}"#,
    "\n\n",
    r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":" upon","index":0,"logprobs":null,"finish_reason":null}],"model":"gpt-3.5-turbo-instruct"}"#,
    "\n\n",
    r#"data: {"id":"cmpl-9xQ","object":"text_completion","created":1754400002,"choices":[{"text":"","index":0,"logprobs":null,"finish_reason":"length"}],"model":"gpt-3.5-turbo-instruct"}"#,
    "\n\n",
    "data: [DONE]\n\n",
);

pub(super) const RESPONSES_SSE: &str = concat!(
    "event: response.created\n",
    r#"data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_68a1","object":"response","created_at":1754400003,"status":"in_progress","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-mini-2025-04-14","output":[],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":null,"user":null,"metadata":{}}}"#,
    "\n\n",
    "event: response.in_progress\n",
    r#"data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_68a1","object":"response","created_at":1754400003,"status":"in_progress","model":"gpt-4.1-mini-2025-04-14","output":[],"usage":null}}"#,
    "\n\n",
    "event: response.output_item.added\n",
    r#"data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"msg_68a1","type":"message","status":"in_progress","content":[],"role":"assistant"}}"#,
    "\n\n",
    "event: response.content_part.added\n",
    r#"data: {"type":"response.content_part.added","sequence_number":3,"item_id":"msg_68a1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}"#,
    "\n\n",
    "event: response.output_text.delta\n",
    r#"data: {"type":"response.output_text.delta","sequence_number":4,"item_id":"msg_68a1","output_index":0,"content_index":0,"delta":"Hi","logprobs":[],"obfuscation":"x1"}"#,
    "\n\n",
    "event: response.output_text.delta\n",
    r#"data: {"type":"response.output_text.delta","sequence_number":5,"item_id":"msg_68a1","output_index":0,"content_index":0,"delta":" there \u2014 ünïcode","logprobs":[],"obfuscation":"x2"}"#,
    "\n\n",
    "event: response.output_text.done\n",
    r#"data: {"type":"response.output_text.done","sequence_number":6,"item_id":"msg_68a1","output_index":0,"content_index":0,"text":"Hi there — ünïcode","logprobs":[]}"#,
    "\n\n",
    "event: response.content_part.done\n",
    r#"data: {"type":"response.content_part.done","sequence_number":7,"item_id":"msg_68a1","output_index":0,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi there — ünïcode"}}"#,
    "\n\n",
    "event: response.output_item.done\n",
    r#"data: {"type":"response.output_item.done","sequence_number":8,"output_index":0,"item":{"id":"msg_68a1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi there — ünïcode"}],"role":"assistant"}}"#,
    "\n\n",
    "event: response.completed\n",
    r#"data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_68a1","object":"response","created_at":1754400003,"status":"completed","background":false,"error":null,"incomplete_details":null,"instructions":null,"max_output_tokens":null,"model":"gpt-4.1-mini-2025-04-14","output":[{"id":"msg_68a1","type":"message","status":"completed","content":[{"type":"output_text","annotations":[],"logprobs":[],"text":"Hi there — ünïcode"}],"role":"assistant"}],"parallel_tool_calls":true,"previous_response_id":null,"reasoning":{"effort":null,"summary":null},"store":true,"temperature":1.0,"text":{"format":{"type":"text"},"verbosity":"medium"},"tool_choice":"auto","tools":[],"top_p":1.0,"truncation":"disabled","usage":{"input_tokens":37,"input_tokens_details":{"cached_tokens":0},"output_tokens":11,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":48},"user":null,"metadata":{}}}"#,
    "\n\n",
);

pub(super) const IMAGES_SSE: &str = concat!(
    "event: image_generation.partial_image\n",
    r#"data: {"type":"image_generation.partial_image","b64_json":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJ","created_at":1754400004,"size":"1024x1024","quality":"high","background":"opaque","output_format":"png","partial_image_index":0}"#,
    "\n\n",
    "event: image_generation.completed\n",
    r#"data: {"type":"image_generation.completed","b64_json":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk","created_at":1754400004,"size":"1024x1024","quality":"high","background":"opaque","output_format":"png","usage":{"total_tokens":4230,"input_tokens":70,"output_tokens":4160,"input_tokens_details":{"text_tokens":70,"image_tokens":0}}}"#,
    "\n\n",
);
