//! `x-ratelimit-*` and retry headers (SPEC §3.6), in the forms OpenAI clients parse: resets
//! as Go-style durations (`1s`, `59.2s`, `6m0s`), `Retry-After` in whole seconds rounded up
//! and `retry-after-ms`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::{LimitName, Refusal, Standing};

/// `0s`, `350ms`, `1s`, `59.2s`, `6m0s`, `1h2m3s`.
pub fn format_reset(d: Duration) -> String {
    let mut out = Vec::with_capacity(16);
    push_reset(&mut out, d);
    // Only ASCII digits and letters were written.
    String::from_utf8(out).unwrap_or_default()
}

/// Appends `format_reset`'s text. Built by hand, in bytes, rather than with `format!` or
/// `String::push`: every proxied response carries two of these, and the formatting machinery
/// cost more than the rest of the rate-limit headers together.
fn push_reset(out: &mut Vec<u8>, d: Duration) {
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        push_decimal(out, ms);
        out.extend_from_slice(if ms == 0 { b"s" } else { b"ms" });
        return;
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    if h > 0 {
        push_decimal(out, h);
        out.push(b'h');
    }
    if h > 0 || m > 0 {
        push_decimal(out, m);
        out.push(b'm');
    }
    let s_ms = ms % 60_000;
    push_decimal(out, s_ms / 1000);
    let fraction = s_ms % 1000;
    if fraction != 0 {
        // Milliseconds as a decimal fraction, trailing zeros dropped: 200 -> ".2".
        let digits = [fraction / 100, fraction / 10 % 10, fraction % 10];
        let kept = digits
            .iter()
            .rposition(|&d| d != 0)
            .map_or(0, |last| last + 1);
        out.push(b'.');
        out.extend(digits[..kept].iter().map(|&d| b'0' + d as u8));
    }
    out.push(b's');
}

fn push_decimal(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

fn tightest(standings: &[Standing], tokens: bool) -> Option<&Standing> {
    standings
        .iter()
        .filter(|s| s.limit != LimitName::MaxConcurrent && s.limit != LimitName::ImagesPerDay)
        .filter(|s| s.limit.is_tokens() == tokens)
        .min_by_key(|s| (s.remaining, std::cmp::Reverse(s.reset)))
}

/// The request trio's names, then the token trio's: limit, remaining, reset.
const NAMES: [&str; 6] = [
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
];

/// The same names, prepared: inserting them parses and copies nothing.
const HEADER_NAMES: [HeaderName; 6] = [
    HeaderName::from_static(NAMES[0]),
    HeaderName::from_static(NAMES[1]),
    HeaderName::from_static(NAMES[2]),
    HeaderName::from_static(NAMES[3]),
    HeaderName::from_static(NAMES[4]),
    HeaderName::from_static(NAMES[5]),
];

/// The tightest window of each kind that applies, with where its trio starts in `NAMES`.
fn trios(standings: &[Standing]) -> impl Iterator<Item = (usize, &Standing)> {
    [(0, false), (3, true)]
        .into_iter()
        .filter_map(|(first, tokens)| tightest(standings, tokens).map(|s| (first, s)))
}

/// The request and token trios for the tightest window of each kind that applies.
pub fn rate_limit_headers(standings: &[Standing]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for (first, s) in trios(standings) {
        out.push((NAMES[first], s.max.to_string()));
        out.push((NAMES[first + 1], s.remaining.to_string()));
        out.push((NAMES[first + 2], format_reset(s.reset)));
    }
    out
}

/// The same headers as `rate_limit_headers`, put straight into a header map. The six values
/// are written into one buffer and each header gets a slice of it: two allocations in all,
/// where building each value on its own took two apiece.
pub fn insert_rate_limit_headers(standings: &[Standing], headers: &mut HeaderMap) {
    if trios(standings).next().is_none() {
        // No limit applies (or the gateway's own answer): no buffer either.
        return;
    }
    let mut text = Vec::with_capacity(96);
    // Where each value ends in `text`, by its index in `NAMES`; the next starts there.
    let mut ends: [Option<usize>; 6] = [None; 6];
    for (first, s) in trios(standings) {
        push_decimal(&mut text, s.max);
        ends[first] = Some(text.len());
        push_decimal(&mut text, s.remaining);
        ends[first + 1] = Some(text.len());
        push_reset(&mut text, s.reset);
        ends[first + 2] = Some(text.len());
    }
    let text = Bytes::from(text);
    let mut start = 0;
    for (name, end) in HEADER_NAMES.iter().zip(ends) {
        let Some(end) = end else { continue };
        // Digits, letters and a dot: always a valid value.
        if let Ok(value) = HeaderValue::from_maybe_shared(text.slice(start..end)) {
            headers.insert(name.clone(), value);
        }
        start = end;
    }
}

/// What a 429 carries besides its body: when to retry, or that retrying will not help.
pub fn refusal_headers(refusal: &Refusal) -> Vec<(&'static str, String)> {
    let retry = |after: Duration| {
        let ms = after.as_millis().max(1) as u64;
        vec![
            ("retry-after", ms.div_ceil(1000).to_string()),
            ("retry-after-ms", ms.to_string()),
        ]
    };
    match refusal {
        Refusal::Budget { .. } => vec![("x-should-retry", "false".to_string())],
        Refusal::Window { retry_after, .. } => retry(*retry_after),
        Refusal::Concurrency { .. } => retry(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openais() {
        assert_eq!(format_reset(Duration::ZERO), "0s");
        assert_eq!(format_reset(Duration::from_millis(350)), "350ms");
        assert_eq!(format_reset(Duration::from_secs(1)), "1s");
        assert_eq!(format_reset(Duration::from_millis(59_200)), "59.2s");
        assert_eq!(format_reset(Duration::from_millis(1_250)), "1.25s");
        assert_eq!(format_reset(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_reset(Duration::from_secs(3723)), "1h2m3s");
        assert_eq!(format_reset(Duration::from_millis(60_050)), "1m0.05s");
        assert_eq!(format_reset(Duration::from_millis(7_206_007)), "2h0m6.007s");
        assert_eq!(format_reset(Duration::from_millis(999)), "999ms");
        assert_eq!(format_reset(Duration::from_secs(86_400)), "24h0m0s");
    }

    #[test]
    fn the_tightest_window_of_each_kind_is_reported() {
        let s = |limit, max, remaining, reset_s| Standing {
            limit,
            max,
            remaining,
            reset: Duration::from_secs(reset_s),
        };
        let standings = [
            s(LimitName::RequestsPerMinute, 10, 9, 60),
            s(LimitName::RequestsPerDay, 100, 3, 3600),
            s(LimitName::TokensPerMinute, 1000, 999, 1),
            s(LimitName::MaxConcurrent, 1, 0, 0),
        ];
        let headers = rate_limit_headers(&standings);
        assert_eq!(
            headers,
            vec![
                ("x-ratelimit-limit-requests", "100".to_string()),
                ("x-ratelimit-remaining-requests", "3".to_string()),
                ("x-ratelimit-reset-requests", "1h0m0s".to_string()),
                ("x-ratelimit-limit-tokens", "1000".to_string()),
                ("x-ratelimit-remaining-tokens", "999".to_string()),
                ("x-ratelimit-reset-tokens", "1s".to_string()),
            ]
        );
        assert!(rate_limit_headers(&[]).is_empty());

        // The map form carries exactly the same headers: with both trios, with only one of
        // them (each value is a slice of one shared buffer, so where each starts matters),
        // and with none.
        let only_tokens = [standings[2]];
        let only_requests = [standings[0], standings[3]];
        for standings in [&standings[..], &only_tokens, &only_requests, &[]] {
            let mut map = HeaderMap::new();
            insert_rate_limit_headers(standings, &mut map);
            let from_map: Vec<_> = map
                .iter()
                .map(|(n, v)| (n.as_str().to_string(), v.to_str().unwrap().to_string()))
                .collect();
            let expected: Vec<_> = rate_limit_headers(standings)
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect();
            assert_eq!(from_map, expected);
        }
        assert_eq!(rate_limit_headers(&only_tokens).len(), 3);
        assert_eq!(rate_limit_headers(&only_requests).len(), 3);
    }

    #[test]
    fn retry_headers_round_up() {
        let window = Refusal::Window {
            limit: LimitName::RequestsPerMinute,
            scope: super::super::Scope::Key,
            max: 1,
            retry_after: Duration::from_millis(1_001),
        };
        assert_eq!(
            refusal_headers(&window),
            vec![
                ("retry-after", "2".to_string()),
                ("retry-after-ms", "1001".to_string())
            ]
        );
        let budget = Refusal::Budget {
            limit: LimitName::RequestsPerDay,
            scope: super::super::Scope::Key,
            max: 1,
        };
        assert_eq!(
            refusal_headers(&budget),
            vec![("x-should-retry", "false".to_string())]
        );
    }
}
