//! Signed, expiring tokens the gateway hands out and gets back: the `state` of the web flow and
//! the `device_code` of the device flow. `base64url(json) "." base64url(HMAC-SHA256(json))`,
//! keyed with `oauth.state_secret`; verified in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};

const BLOCK: usize = 64;

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; BLOCK];
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

pub fn sign<T: Serialize>(secret: &str, payload: &T) -> String {
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(payload).unwrap_or_default());
    let mac = URL_SAFE_NO_PAD.encode(hmac_sha256(secret.as_bytes(), body.as_bytes()));
    format!("{body}.{mac}")
}

/// The payload, if the token was signed with `secret` and not altered.
pub fn verify<T: DeserializeOwned>(secret: &str, token: &str) -> Option<T> {
    let (body, mac) = token.split_once('.')?;
    let given = URL_SAFE_NO_PAD.decode(mac).ok()?;
    let expected = hmac_sha256(secret.as_bytes(), body.as_bytes());
    if given.len() != expected.len()
        || given
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            != 0
    {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()
}

/// PKCE S256: the challenge for a verifier (RFC 7636).
pub fn pkce_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            crate::auth::hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct P {
        a: String,
        e: i64,
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let p = P {
            a: "x".into(),
            e: 5,
        };
        let token = sign("s".repeat(32).as_str(), &p);
        assert_eq!(verify::<P>(&"s".repeat(32), &token), Some(p));
        assert_eq!(verify::<P>(&"t".repeat(32), &token), None);
        let (body, mac) = token.split_once('.').unwrap();
        let other = URL_SAFE_NO_PAD.encode(br#"{"a":"y","e":5}"#);
        assert_eq!(
            verify::<P>(&"s".repeat(32), &format!("{other}.{mac}")),
            None
        );
        assert_eq!(verify::<P>(&"s".repeat(32), body), None);
        assert_eq!(verify::<P>(&"s".repeat(32), "garbage"), None);
    }

    #[test]
    fn pkce_matches_rfc_7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
