//! A completed response as stored for replay: status, headers (less hop-by-hop) and body,
//! with the SHA-256 of the request body it answered.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Headers that belong to the connection, not the response; a replay recomputes the length.
const NOT_REPLAYED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub body_hash: [u8; 32],
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub expires_at: i64,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    body_hash: String,
    status: u16,
    headers: Vec<(String, String)>,
}

/// Whether a header of the upstream response belongs in the stored response. Values that
/// are not UTF-8 are left out (providers do not send them).
pub fn keep_header(name: &str) -> bool {
    !NOT_REPLAYED.contains(&name)
}

fn hex32(s: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if s.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(s.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Record {
    /// `[u32 meta length][meta JSON][body]`: the body stays raw bytes (audio, SSE).
    pub fn encode(&self) -> Vec<u8> {
        let meta = Meta {
            body_hash: crate::auth::hex(&self.body_hash),
            status: self.status,
            headers: self.headers.clone(),
        };
        let meta = serde_json::to_vec(&meta).unwrap_or_default();
        let mut out = Vec::with_capacity(4 + meta.len() + self.body.len());
        out.extend_from_slice(&(meta.len() as u32).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        out
    }

    pub fn decode(bytes: &[u8], expires_at: i64) -> Option<Record> {
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        let meta: Meta = serde_json::from_slice(bytes.get(4..4 + len)?).ok()?;
        Some(Record {
            body_hash: hex32(&meta.body_hash)?,
            status: meta.status,
            headers: meta.headers,
            body: Bytes::copy_from_slice(bytes.get(4 + len..)?),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_binary_bodies() {
        let record = Record {
            body_hash: [7; 32],
            status: 200,
            headers: vec![("content-type".into(), "audio/mpeg".into())],
            body: Bytes::from((0..=255u8).collect::<Vec<_>>()),
            expires_at: 42,
        };
        assert_eq!(Record::decode(&record.encode(), 42), Some(record));
        assert_eq!(Record::decode(b"\0\0", 1), None);
        assert!(!keep_header("transfer-encoding"));
        assert!(keep_header("x-request-id"));
    }
}
