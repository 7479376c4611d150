//! `x-ratelimit-*` and retry headers (SPEC §3.6), in the forms OpenAI clients parse: resets
//! as Go-style durations (`1s`, `59.2s`, `6m0s`), `Retry-After` in whole seconds rounded up
//! and `retry-after-ms`.

use std::time::Duration;

use super::{LimitName, Refusal, Standing};

/// `0s`, `350ms`, `1s`, `59.2s`, `6m0s`, `1h2m3s`.
pub fn format_reset(d: Duration) -> String {
    let ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let s_ms = ms % 60_000;
    let seconds = if s_ms % 1000 == 0 {
        format!("{}s", s_ms / 1000)
    } else {
        let text = format!("{}.{:03}", s_ms / 1000, s_ms % 1000);
        format!("{}s", text.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => seconds,
        (0, m) => format!("{m}m{seconds}"),
        (h, m) => format!("{h}h{m}m{seconds}"),
    }
}

fn tightest(standings: &[Standing], tokens: bool) -> Option<&Standing> {
    standings
        .iter()
        .filter(|s| s.limit != LimitName::MaxConcurrent && s.limit != LimitName::ImagesPerDay)
        .filter(|s| s.limit.is_tokens() == tokens)
        .min_by_key(|s| (s.remaining, std::cmp::Reverse(s.reset)))
}

/// The request and token trios for the tightest window of each kind that applies.
pub fn rate_limit_headers(standings: &[Standing]) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if let Some(s) = tightest(standings, false) {
        out.push(("x-ratelimit-limit-requests", s.max.to_string()));
        out.push(("x-ratelimit-remaining-requests", s.remaining.to_string()));
        out.push(("x-ratelimit-reset-requests", format_reset(s.reset)));
    }
    if let Some(s) = tightest(standings, true) {
        out.push(("x-ratelimit-limit-tokens", s.max.to_string()));
        out.push(("x-ratelimit-remaining-tokens", s.remaining.to_string()));
        out.push(("x-ratelimit-reset-tokens", format_reset(s.reset)));
    }
    out
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
