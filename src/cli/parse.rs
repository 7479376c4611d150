//! Value parsers for durations (`--grace`, `--since`) and `--expires`.

use super::Expiry;

/// Parses `30d`, `12h`, `90m`, `45s`, `2w`, `1h30m` or a bare number of seconds into seconds.
///
/// Units (w, d, h, m, s) must appear at most once each, largest first.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err("empty duration".to_string());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse::<u64>()
            .map_err(|_| format!("duration `{s}` is too large"));
    }
    let bad = || format!("invalid duration `{s}` (expected e.g. 30d, 12h, 90m, 45s, 1h30m)");
    let mut total: u64 = 0;
    let mut number = String::new();
    let mut last_rank = usize::MAX;
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let (rank, unit) = match c {
            'w' => (4, 604_800u64),
            'd' => (3, 86_400),
            'h' => (2, 3_600),
            'm' => (1, 60),
            's' => (0, 1),
            _ => return Err(bad()),
        };
        if number.is_empty() || rank >= last_rank {
            return Err(bad());
        }
        last_rank = rank;
        let n: u64 = number.parse().map_err(|_| bad())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("duration `{s}` is too large"))?;
    }
    if !number.is_empty() {
        return Err(bad());
    }
    Ok(total)
}

/// Parses `--expires`: a duration (see [`parse_duration`]) or an RFC 3339 timestamp / `YYYY-MM-DD` date.
pub fn parse_expiry(s: &str) -> Result<Expiry, String> {
    if let Ok(secs) = parse_duration(s) {
        return Ok(Expiry::In(secs));
    }
    let t = s.trim();
    if crate::time::parse_rfc3339(t).is_some() {
        return Ok(Expiry::At(t.to_string()));
    }
    Err(format!(
        "invalid expiry `{s}` (expected a duration such as 30d or 12h, or a date such as 2026-12-31)"
    ))
}
