//! What a `GET /prompt/{description}` asks for (SPEC §3.4), validated, and its cache key.

use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

use crate::auth::hex;
use crate::config::ImagesSection;

pub const MIN_SIDE: u32 = 64;
pub const MAX_SIDE: u32 = 4096;
pub const DEFAULT_SEED: i64 = 42;
/// Longer descriptions are refused rather than sent to a backend that would refuse them.
const MAX_DESCRIPTION_BYTES: usize = 4000;
const MAX_MODEL_BYTES: usize = 128;

/// A request parameter that is not acceptable: the parameter's name and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamError {
    pub param: &'static str,
    pub message: String,
}

fn invalid(param: &'static str, message: impl Into<String>) -> ParamError {
    ParamError {
        param,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptParams {
    /// Trimmed, case kept: this is what the backend is asked to draw.
    pub description: String,
    pub width: u32,
    pub height: u32,
    pub model: String,
    pub seed: i64,
}

/// The raw, optional parts of a request, as they arrive in a query or a purge body.
#[derive(Default)]
pub struct RawParams<'a> {
    pub width: Option<&'a str>,
    pub height: Option<&'a str>,
    pub model: Option<&'a str>,
    pub seed: Option<&'a str>,
}

impl PromptParams {
    /// From the path after `/prompt/` (still percent-encoded) and the query string.
    pub fn from_request(
        encoded: &str,
        query: Option<&str>,
        defaults: &ImagesSection,
    ) -> Result<PromptParams, ParamError> {
        let description = percent_decode_str(encoded)
            .decode_utf8()
            .map_err(|_| invalid("description", "The description is not valid UTF-8."))?;
        let pairs = crate::form::query_pairs(query.unwrap_or(""));
        let get = |name: &str| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let raw = RawParams {
            width: get("width"),
            height: get("height"),
            model: get("model"),
            seed: get("seed"),
        };
        Self::from_parts(&description, &raw, defaults)
    }

    pub fn from_parts(
        description: &str,
        raw: &RawParams<'_>,
        defaults: &ImagesSection,
    ) -> Result<PromptParams, ParamError> {
        let description = description.trim();
        if description.is_empty() {
            return Err(invalid("description", "The image description is empty."));
        }
        if description.len() > MAX_DESCRIPTION_BYTES {
            return Err(invalid(
                "description",
                format!("The description is longer than {MAX_DESCRIPTION_BYTES} bytes."),
            ));
        }
        let (default_width, default_height) = defaults.default_dimensions();
        let side = |param: &'static str, value: Option<&str>, default: u32| match value {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| (MIN_SIDE..=MAX_SIDE).contains(n))
                .ok_or_else(|| {
                    invalid(
                        param,
                        format!("`{param}` must be an integer from {MIN_SIDE} to {MAX_SIDE}."),
                    )
                }),
        };
        let model = match raw.model.map(str::trim) {
            None => defaults.default_model.clone(),
            Some(m) if m.is_empty() || m.len() > MAX_MODEL_BYTES || m.contains('|') => {
                return Err(invalid("model", "`model` is not a valid model name."))
            }
            Some(m) => m.to_string(),
        };
        let seed = match raw.seed {
            None => DEFAULT_SEED,
            Some(s) => s
                .trim()
                .parse::<i64>()
                .map_err(|_| invalid("seed", "`seed` must be an integer."))?,
        };
        Ok(PromptParams {
            description: description.to_string(),
            width: side("width", raw.width, default_width)?,
            height: side("height", raw.height, default_height)?,
            model,
            seed,
        })
    }

    /// SHA-256 hex of `lowercase(trim(description))|width|height|model|seed`, defaults applied.
    pub fn cache_key(&self) -> String {
        let canonical = format!(
            "{}|{}|{}|{}|{}",
            self.description.to_lowercase(),
            self.width,
            self.height,
            self.model,
            self.seed
        );
        hex(&Sha256::digest(canonical.as_bytes()))
    }

    pub fn size(&self) -> String {
        format!("{}x{}", self.width, self.height)
    }
}

/// A stored image's hash as it appears in URLs: 64 lowercase hex characters.
pub fn valid_hash(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> ImagesSection {
        ImagesSection {
            default_size: "512x768".into(),
            ..ImagesSection::default()
        }
    }

    #[test]
    fn defaults_apply_and_the_key_follows_the_spec_formula() {
        let p = PromptParams::from_request("%20A%20Red%20Fox%20", None, &defaults()).unwrap();
        assert_eq!(
            p,
            PromptParams {
                description: "A Red Fox".into(),
                width: 512,
                height: 768,
                model: "gpt-image-1".into(),
                seed: 42,
            }
        );
        let expected = hex(&Sha256::digest(b"a red fox|512|768|gpt-image-1|42"));
        assert_eq!(p.cache_key(), expected);
        assert_eq!(p.size(), "512x768");
    }

    #[test]
    fn same_image_however_it_is_spelled() {
        let a = PromptParams::from_request(
            "a%20red%20fox",
            Some("width=512&height=768&seed=42"),
            &defaults(),
        )
        .unwrap();
        let b = PromptParams::from_request(
            "A%20RED%20FOX%20%20",
            Some("seed=042&model=gpt-image-1&key=sk-x"),
            &defaults(),
        )
        .unwrap();
        assert_eq!(a.cache_key(), b.cache_key());
        let c = PromptParams::from_request("a%20red%20fox", Some("seed=43"), &defaults()).unwrap();
        assert_ne!(a.cache_key(), c.cache_key());
    }

    #[test]
    fn bad_parameters_name_themselves() {
        let d = defaults();
        for (path, query, param) in [
            ("x", "width=63", "width"),
            ("x", "width=4097", "width"),
            ("x", "width=abc", "width"),
            ("x", "width=", "width"),
            ("x", "height=-5", "height"),
            ("x", "seed=1.5", "seed"),
            ("x", "model=", "model"),
            ("x", "model=a%7Cb", "model"),
            ("%20%20", "", "description"),
            ("%FF", "", "description"),
        ] {
            let err = PromptParams::from_request(path, Some(query), &d).unwrap_err();
            assert_eq!(err.param, param, "{path}?{query}");
        }
        let ok = PromptParams::from_request("x", Some("width=64&height=4096&seed=-7"), &d).unwrap();
        assert_eq!((ok.width, ok.height, ok.seed), (64, 4096, -7));
    }

    #[test]
    fn hashes() {
        assert!(valid_hash(&"ab".repeat(32)));
        assert!(!valid_hash(&"AB".repeat(32)));
        assert!(!valid_hash("abc"));
    }
}
