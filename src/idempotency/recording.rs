//! What one claimed request records on its way through: the SHA-256 of its body, and the
//! response as the client received it, bounded by `max_response_bytes`. Plain memory work,
//! safe in Pingora's synchronous body filters.

use bytes::Bytes;
use pingora::http::ResponseHeader;
use sha2::{Digest, Sha256};

use super::record::{keep_header, Record};

pub struct Recording {
    pub scope: [u8; 32],
    pub claim: u64,
    hasher: Sha256,
    request_hash: Option<[u8; 32]>,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Why the response will not be stored, once known.
    unstorable: bool,
}

/// Responses a retry should not get back (SPEC §3.5): server errors, timeouts, conflicts and
/// rate limits are worth retrying for real.
fn storable_status(status: u16) -> bool {
    status < 500 && !matches!(status, 408 | 409 | 429)
}

impl Recording {
    pub fn new(scope: [u8; 32], claim: u64) -> Self {
        Recording {
            scope,
            claim,
            hasher: Sha256::new(),
            request_hash: None,
            status: None,
            headers: Vec::new(),
            body: Vec::new(),
            unstorable: false,
        }
    }

    pub fn hash_request_chunk(&mut self, chunk: &[u8]) {
        self.hasher.update(chunk);
    }

    /// The request body is complete: its hash.
    pub fn finish_request(&mut self) -> [u8; 32] {
        let hash: [u8; 32] = std::mem::take(&mut self.hasher).finalize().into();
        self.request_hash = Some(hash);
        hash
    }

    pub fn response_head(&mut self, resp: &ResponseHeader) {
        let status = resp.status.as_u16();
        self.status = Some(status);
        if !storable_status(status) {
            self.unstorable = true;
            return;
        }
        self.headers = resp
            .headers
            .iter()
            .filter(|(name, _)| keep_header(name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
    }

    /// A chunk of the response as the client gets it.
    pub fn response_chunk(&mut self, chunk: &[u8], max_bytes: u64) {
        if self.unstorable {
            return;
        }
        if (self.body.len() + chunk.len()) as u64 > max_bytes {
            self.unstorable = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    /// The record to keep, if the response was complete and storable.
    pub fn into_record(mut self, complete: bool, expires_at: i64) -> Option<Record> {
        if !complete || self.unstorable {
            return None;
        }
        let body_hash = match self.request_hash {
            Some(hash) => hash,
            None => self.finish_request(),
        };
        Some(Record {
            body_hash,
            status: self.status?,
            headers: self.headers,
            body: Bytes::from(self.body),
            expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16) -> ResponseHeader {
        let mut h = ResponseHeader::build(status, None).unwrap();
        h.insert_header("content-type", "text/event-stream")
            .unwrap();
        h.insert_header("transfer-encoding", "chunked").unwrap();
        h
    }

    #[test]
    fn records_complete_storable_responses_only() {
        let mut r = Recording::new([0; 32], 1);
        r.hash_request_chunk(b"{\"a\":");
        r.hash_request_chunk(b"1}");
        let hash = r.finish_request();
        assert_eq!(hash, <[u8; 32]>::from(Sha256::digest(b"{\"a\":1}")));
        r.response_head(&head(200));
        r.response_chunk(b"data: 1\n\n", 100);
        r.response_chunk(b"data: [DONE]\n\n", 100);
        let record = r.into_record(true, 9).unwrap();
        assert_eq!(&record.body[..], b"data: 1\n\ndata: [DONE]\n\n");
        assert_eq!(
            record.headers,
            vec![("content-type".to_string(), "text/event-stream".to_string())]
        );

        for status in [500, 503, 408, 409, 429] {
            let mut r = Recording::new([0; 32], 1);
            r.finish_request();
            r.response_head(&head(status));
            assert!(r.into_record(true, 9).is_none(), "{status}");
        }
        let mut cut = Recording::new([0; 32], 1);
        cut.finish_request();
        cut.response_head(&head(200));
        assert!(cut.into_record(false, 9).is_none());
        let mut big = Recording::new([0; 32], 1);
        big.finish_request();
        big.response_head(&head(200));
        big.response_chunk(&[0; 60], 100);
        big.response_chunk(&[0; 60], 100);
        assert!(big.into_record(true, 9).is_none());
    }
}
