//! `images.store_generations`: the `b64_json` images of a `/v1/images/generations` or
//! `/v1/images/edits` response are kept, and each `data[i]` gets a `url` of
//! `{public_url}/images/{hash}.{ext}`; `b64_json` stays only when the client asked for it.
//!
//! The response body filter is synchronous, so the rewrite is pure computation over the
//! buffered body; the images are handed to `Images::keep_generations`, served from memory
//! until the write-behind task has put them on disk.

use bytes::Bytes;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::hex;

use super::generate::{decode_b64, sniff, MAX_IMAGE_BYTES};
use super::store::{ImageMeta, ImageSource};
use super::{Images, Ready};

/// Responses larger than this pass through untouched (n=10 large images fit).
const MAX_BUFFERED: usize = 10 * (MAX_IMAGE_BYTES / 3 * 4) + 64 * 1024;

/// Who generated the images and where their URLs point.
#[derive(Clone, Debug)]
pub struct Keeper {
    /// The client asked for `response_format: b64_json`.
    pub keep_b64: bool,
    pub owner: String,
    pub key_id: String,
    /// Base of the image URLs, without a trailing slash.
    pub base_url: String,
}

/// The rewrite of one response in progress.
pub struct Rewrite {
    keeper: Keeper,
    buffer: Vec<u8>,
    /// The body outgrew the buffer and passes through as it is.
    passing: bool,
}

impl Rewrite {
    pub fn new(keeper: Keeper) -> Rewrite {
        Rewrite {
            keeper,
            buffer: Vec::new(),
            passing: false,
        }
    }

    /// Holds the body back until it is complete, then replaces it with the rewritten one.
    pub fn feed(&mut self, images: &Images, body: &mut Option<Bytes>, end_of_stream: bool) {
        if self.passing {
            return;
        }
        if let Some(chunk) = body.take() {
            if self.buffer.len() + chunk.len() > MAX_BUFFERED {
                let mut all = std::mem::take(&mut self.buffer);
                all.extend_from_slice(&chunk);
                *body = Some(Bytes::from(all));
                self.passing = true;
                return;
            }
            self.buffer.extend_from_slice(&chunk);
        }
        if !end_of_stream {
            return;
        }
        let original = std::mem::take(&mut self.buffer);
        let now = crate::time::now_unix();
        match rewrite(&original, &self.keeper, now) {
            Some((rewritten, kept)) => {
                if images.keep_generations(kept) {
                    *body = Some(Bytes::from(rewritten));
                } else {
                    // Too much waiting to be written: the client gets the images themselves.
                    log::warn!("the image write-behind is behind; a response keeps its b64_json");
                    *body = Some(Bytes::from(original));
                }
            }
            None => *body = Some(Bytes::from(original)),
        }
    }
}

/// The rewritten body and the images to keep; `None` when there is nothing to rewrite (not
/// JSON, or no `b64_json` image in it).
pub fn rewrite(body: &[u8], keeper: &Keeper, now: i64) -> Option<(Vec<u8>, Vec<Ready>)> {
    let mut json: Value = serde_json::from_slice(body).ok()?;
    let data = json.get_mut("data")?.as_array_mut()?;
    let mut kept = Vec::new();
    for item in data.iter_mut() {
        let Some(obj) = item.as_object_mut() else {
            continue;
        };
        let Some(bytes) = obj
            .get("b64_json")
            .and_then(Value::as_str)
            .and_then(decode_b64)
        else {
            continue;
        };
        let Some(content_type) = sniff(&bytes) else {
            continue;
        };
        let meta = ImageMeta {
            hash: hex(&Sha256::digest(&bytes)),
            content_type: content_type.to_string(),
            size: bytes.len() as u64,
            created: now,
            last_access: now,
            hits: 0,
            revised_prompt: obj
                .get("revised_prompt")
                .and_then(Value::as_str)
                .map(str::to_owned),
            hosted_url: None,
            owner: Some(keeper.owner.clone()),
            key_id: Some(keeper.key_id.clone()),
            source: ImageSource::Generation,
        };
        let url = format!("{}/images/{}.{}", keeper.base_url, meta.hash, meta.ext());
        obj.insert("url".into(), Value::String(url));
        if !keeper.keep_b64 {
            obj.remove("b64_json");
        }
        kept.push(Ready {
            meta,
            bytes: Bytes::from(bytes),
        });
    }
    if kept.is_empty() {
        return None;
    }
    serde_json::to_vec(&json).ok().map(|body| (body, kept))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n-not-really-but-sniffable";

    fn keeper(keep_b64: bool) -> Keeper {
        Keeper {
            keep_b64,
            owner: "alice".into(),
            key_id: "k1".into(),
            base_url: "https://gw.example.com".into(),
        }
    }

    fn body() -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD.encode(PNG);
        serde_json::to_vec(&serde_json::json!({
            "created": 1,
            "data": [{"b64_json": b64, "revised_prompt": "a fox"}, {"url": "https://elsewhere/x.png"}],
            "usage": {"input_tokens": 5, "output_tokens": 7}
        }))
        .unwrap()
    }

    #[test]
    fn b64_images_become_urls_and_are_kept() {
        let (out, kept) = rewrite(&body(), &keeper(false), 100).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        let hash = hex(&Sha256::digest(PNG));
        assert_eq!(
            out["data"][0],
            serde_json::json!({"url": format!("https://gw.example.com/images/{hash}.png"), "revised_prompt": "a fox"})
        );
        assert_eq!(out["data"][1]["url"], "https://elsewhere/x.png");
        assert_eq!(out["usage"]["output_tokens"], 7);
        assert_eq!(kept.len(), 1);
        assert_eq!(&kept[0].bytes[..], PNG);
        assert_eq!(kept[0].meta.owner.as_deref(), Some("alice"));
        assert_eq!(kept[0].meta.source, ImageSource::Generation);
        assert_eq!(kept[0].meta.revised_prompt.as_deref(), Some("a fox"));
    }

    #[test]
    fn b64_stays_when_asked_for() {
        let (out, _) = rewrite(&body(), &keeper(true), 100).unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert!(out["data"][0]["b64_json"].is_string());
        assert!(out["data"][0]["url"].is_string());
    }

    #[test]
    fn nothing_to_rewrite() {
        assert!(rewrite(b"not json", &keeper(false), 1).is_none());
        assert!(rewrite(br#"{"data":[{"url":"u"}]}"#, &keeper(false), 1).is_none());
        assert!(rewrite(br#"{"data":[{"b64_json":"PGh0bWw+"}]}"#, &keeper(false), 1).is_none());
    }
}
