//! Textual JSON helpers, for edits that must keep every other byte. They never index out of bounds and
//! return `None` on anything malformed.

use super::buf::find_either;

pub(super) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

pub(super) fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while s.get(i).is_some_and(|&b| is_ws(b)) {
        i += 1;
    }
    i
}

/// `s[i]` opens a string; the index just past its closing quote.
fn string_end(s: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += find_either(s.get(j..)?, b'"', b'\\')?;
        match s.get(j)? {
            b'\\' => j += 2,
            _ => return Some(j + 1),
        }
    }
}

/// The index just past the JSON value that starts at `i`.
fn value_end(s: &[u8], i: usize) -> Option<usize> {
    match s.get(i)? {
        b'"' => string_end(s, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match s.get(j)? {
                    b'"' => {
                        j = string_end(s, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while s
                .get(j)
                .is_some_and(|&b| !is_ws(b) && !matches!(b, b',' | b'}' | b']'))
            {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

pub(super) struct Member {
    pub(super) key_start: usize,
    pub(super) value_start: usize,
    pub(super) value_end: usize,
}

/// The member named `key` (compared raw, unescaped) of the object that opens at `s[obj]`.
pub(super) fn find_member(s: &[u8], obj: usize, key: &[u8]) -> Option<Member> {
    if s.get(obj) != Some(&b'{') {
        return None;
    }
    let mut i = skip_ws(s, obj + 1);
    if s.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        if s.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i;
        let ke = string_end(s, i)?;
        let k = s.get(key_start + 1..ke - 1)?;
        i = skip_ws(s, ke);
        if s.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(s, i + 1);
        let value_end = value_end(s, value_start)?;
        if k == key {
            return Some(Member {
                key_start,
                value_start,
                value_end,
            });
        }
        i = skip_ws(s, value_end);
        if s.get(i) != Some(&b',') {
            return None;
        }
        i = skip_ws(s, i + 1);
    }
}

pub(super) fn splice(s: &[u8], a: usize, b: usize, with: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + with.len());
    v.extend_from_slice(s.get(..a).unwrap_or_default());
    v.extend_from_slice(with);
    v.extend_from_slice(s.get(b..).unwrap_or_default());
    v
}
