//! `application/x-www-form-urlencoded` text: query strings and form bodies, which `/prompt`,
//! sign-in, admission and the OAuth token exchange all read.

use percent_encoding::percent_decode_str;

/// The name/value pairs, decoded (`+` is a space), in their order; empty pairs are skipped.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_decode_str(&spaced).decode_utf8_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_pairs("a=1&b=x+y%21&c&&d="),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y!".into()),
                ("c".into(), "".into()),
                ("d".into(), "".into())
            ]
        );
    }
}
