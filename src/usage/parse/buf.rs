//! Byte search and bounded buffer growth, shared by the SSE line splitter, the JSON scanner and the
//! textual JSON helpers.

pub(super) fn find_nl(s: &[u8]) -> Option<usize> {
    find_either(s, b'\n', b'\n')
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bits set in the bytes of `w` equal to `b`; the lowest set bit is exact (higher ones may be false
/// positives), which is all a forward search needs.
fn match_mask(w: u64, b: u8) -> u64 {
    let x = w ^ (LO * u64::from(b));
    x.wrapping_sub(LO) & !x & HI
}

/// First index of `a` or `b` in `s`, eight bytes at a time: the dependency list has no `memchr`, and a
/// byte-by-byte `position` is the hot spot of both the line splitter and the string skipper.
pub(super) fn find_either(s: &[u8], a: u8, b: u8) -> Option<usize> {
    let mut words = s.chunks_exact(8);
    let mut base = 0;
    for c in words.by_ref() {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        let w = u64::from_le_bytes(w);
        let m = match_mask(w, a) | match_mask(w, b);
        if m != 0 {
            return Some(base + (m.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c == a || c == b)
        .map(|p| base + p)
}

/// Appends to a buffer that must stay within `cap` (the caller checked `v.len() + bytes.len() <= cap`),
/// growing it without the doubling that could overshoot the cap.
pub(super) fn bounded_extend(v: &mut Vec<u8>, bytes: &[u8], cap: usize) {
    reserve_bounded(v, bytes.len(), cap);
    v.extend_from_slice(bytes);
}

/// Makes room for `extra` more bytes, doubling as `Vec` would but never past `cap` (unless the content
/// itself needs more).
pub(super) fn reserve_bounded(v: &mut Vec<u8>, extra: usize, cap: usize) {
    let need = v.len() + extra;
    if need > v.capacity() {
        let want = need.max(v.capacity().saturating_mul(2)).min(cap.max(need));
        v.reserve_exact(want - v.len());
    }
}
