//! A cache miss: ask the image pool's backends for one image, in round-robin, moving on from a
//! backend that cannot be reached, times out, answers 5xx or answers something that is not an
//! image. A backend's `url` reply is fetched over http(s) only, bounded in size and time.

use base64::Engine;
use bytes::Bytes;
use http::HeaderValue;
use serde_json::{json, Value};

use crate::gateway::upstream::{Pool, Resolver};
use crate::metrics::Metrics;
use crate::outbound::{request_head, HttpClient, Limits, OutboundError};

use super::params::PromptParams;

/// Larger images are refused: no image model produces them, and the bound keeps a misbehaving
/// backend from filling memory.
pub const MAX_IMAGE_BYTES: usize = 32 * 1024 * 1024;
/// Base64 grows data by 4/3; the rest is JSON around it.
const MAX_REPLY_BYTES: usize = MAX_IMAGE_BYTES / 3 * 4 + 64 * 1024;

#[derive(Clone, Debug)]
pub struct Generated {
    pub bytes: Bytes,
    pub content_type: &'static str,
    pub revised_prompt: Option<String>,
}

/// Why no image came back.
#[derive(Clone, Debug)]
pub enum Failure {
    /// Every backend failed (the cause of the last is kept for the log).
    Unavailable(String),
    /// A backend refused the request itself (4xx): passed on to the client unchanged.
    Refused {
        status: u16,
        content_type: String,
        body: Bytes,
    },
}

/// The image type from its first bytes; `None` when it is not an image we serve.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

pub fn decode_b64(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(text).ok()
}

/// What one attempt at one backend came to.
enum Attempt {
    Image(Generated),
    Refused(Failure),
    /// Try the next backend; the metric label and a description for the log.
    Failed(&'static str, String),
}

pub async fn generate(
    client: &HttpClient,
    resolver: &Resolver,
    pool: &Pool,
    metrics: &Metrics,
    params: &PromptParams,
) -> Result<Generated, Failure> {
    let body = Bytes::from(
        json!({
            "prompt": params.description,
            "n": 1,
            "model": params.model,
            "size": params.size(),
            "seed": params.seed,
        })
        .to_string(),
    );
    let mut tried = 0u64;
    let mut last = String::from("no backend");
    while let Some(index) = pool.pick(tried) {
        tried |= 1 << index;
        match attempt(client, resolver, pool, index, body.clone()).await {
            Attempt::Image(image) => {
                pool.record_success(index);
                return Ok(image);
            }
            Attempt::Refused(failure) => {
                pool.record_success(index);
                return Err(failure);
            }
            Attempt::Failed(kind, why) => {
                pool.record_failure(index);
                metrics
                    .upstream_errors
                    .with_label_values(&[pool.name.as_str(), kind])
                    .inc();
                log::warn!("image backend {index} of {}: {why}", pool.name);
                last = why;
            }
        }
    }
    Err(Failure::Unavailable(last))
}

async fn attempt(
    client: &HttpClient,
    resolver: &Resolver,
    pool: &Pool,
    index: usize,
    body: Bytes,
) -> Attempt {
    let backend = &pool.backends[index];
    let peer = match pool.peer(index, resolver).await {
        Ok(peer) => peer,
        Err(e) => return Attempt::Failed("connect", format!("cannot resolve: {e}")),
    };
    let path = backend.upstream_path("/v1/images/generations");
    let head = request_head("POST", &path).and_then(|mut head| {
        fn set(
            head: &mut pingora::http::RequestHeader,
            name: &'static str,
            value: impl TryInto<HeaderValue>,
        ) -> Result<(), OutboundError> {
            head.insert_header(name, value)
                .map_err(|_| OutboundError::Protocol(format!("invalid {name}")))
        }
        set(&mut head, "host", backend.authority.as_str())?;
        set(&mut head, "content-type", "application/json")?;
        if let Some(authorization) = pool.next_authorization() {
            set(&mut head, "authorization", authorization.clone())?;
        }
        Ok(head)
    });
    let head = match head {
        Ok(head) => head,
        Err(e) => return Attempt::Failed("connect", e.to_string()),
    };
    let deadline = pool.connect_timeout + pool.read_timeout;
    let reply = match client
        .exchange(&peer, head, body, MAX_REPLY_BYTES, deadline)
        .await
    {
        Ok(reply) => reply,
        Err(e) => return Attempt::Failed(error_kind(&e), e.to_string()),
    };
    if reply.status >= 500 {
        return Attempt::Failed("status", format!("answered {}", reply.status));
    }
    if reply.status >= 400 {
        return Attempt::Refused(Failure::Refused {
            status: reply.status,
            content_type: reply
                .header_str("content-type")
                .unwrap_or("application/json")
                .to_string(),
            body: reply.body,
        });
    }
    let Ok(json) = serde_json::from_slice::<Value>(&reply.body) else {
        return Attempt::Failed("malformed", "the reply is not JSON".into());
    };
    let item = &json["data"][0];
    let revised_prompt = item["revised_prompt"].as_str().map(str::to_owned);
    let bytes = if let Some(b64) = item["b64_json"].as_str() {
        match decode_b64(b64) {
            Some(bytes) => Bytes::from(bytes),
            None => return Attempt::Failed("malformed", "b64_json is not base64".into()),
        }
    } else if let Some(url) = item["url"].as_str() {
        let limits = Limits {
            connect_timeout: pool.connect_timeout,
            read_timeout: pool.read_timeout,
            total_timeout: deadline,
            max_response_bytes: MAX_IMAGE_BYTES,
            ca: pool.ca(),
        };
        match client
            .send(resolver, "GET", url, &[], Bytes::new(), &limits)
            .await
        {
            Ok(r) if (200..300).contains(&r.status) => r.body,
            Ok(r) => {
                return Attempt::Failed("status", format!("its image URL answered {}", r.status))
            }
            Err(e) => {
                return Attempt::Failed(error_kind(&e), format!("fetching its image URL: {e}"))
            }
        }
    } else {
        return Attempt::Failed(
            "malformed",
            "the reply has no data[0].b64_json or url".into(),
        );
    };
    match sniff(&bytes) {
        Some(content_type) => Attempt::Image(Generated {
            bytes,
            content_type,
            revised_prompt,
        }),
        None => Attempt::Failed(
            "malformed",
            "the reply is not a PNG, JPEG, GIF or WebP image".into(),
        ),
    }
}

fn error_kind(e: &OutboundError) -> &'static str {
    match e {
        OutboundError::Timeout => "timeout",
        OutboundError::Connect(_) | OutboundError::InvalidUrl(_) => "connect",
        OutboundError::TooLarge(_) | OutboundError::Protocol(_) => "malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_the_image_types_we_serve() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(sniff(b"GIF89a...."), Some("image/gif"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"<html>"), None);
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn decodes_standard_base64() {
        assert_eq!(decode_b64("aGk="), Some(b"hi".to_vec()));
        assert_eq!(decode_b64("not base64!"), None);
    }
}
