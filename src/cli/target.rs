//! Where `tollgate admin` goes: admin URL and token from flags, environment or config file,
//! with `${VAR}` interpolation and listen address → URL.

use std::fmt;
use std::path::Path;

use super::{ConfigReader, ENV_ADMIN_TOKEN, ENV_ADMIN_URL};

/// Replaces `${VAR}` and `${VAR:-default}` in `s` using `lookup` (the default applies when VAR
/// is unset or empty). An unset `${VAR}` without default is an error naming VAR.
pub fn interpolate_with(
    s: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{s}`"))?;
        let expr = &after[..end];
        let (name, default) = match expr.find(":-") {
            Some(i) => (&expr[..i], Some(&expr[i + 2..])),
            None => (expr, None),
        };
        let valid = !name.is_empty()
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && !name.as_bytes()[0].is_ascii_digit();
        if !valid {
            return Err(format!("invalid variable reference `${{{expr}}}`"));
        }
        let value = match (lookup(name), default) {
            (Some(v), Some(d)) if v.is_empty() => d.to_string(),
            (Some(v), _) => v,
            (None, Some(d)) => d.to_string(),
            (None, None) => return Err(format!("environment variable {name} is not set")),
        };
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Turns an `admin.listen` address into a base URL: `127.0.0.1:8081` → `http://127.0.0.1:8081`;
/// wildcard addresses (`0.0.0.0`, `[::]`, empty host) become the loopback address.
/// A value that already has a scheme is kept (minus a trailing `/`).
pub fn listen_to_url(listen: &str) -> String {
    let l = listen.trim();
    if l.contains("://") {
        return l.trim_end_matches('/').to_string();
    }
    let (host, port) = match l.rfind(':') {
        Some(i) if !l[i + 1..].is_empty() && l[i + 1..].bytes().all(|b| b.is_ascii_digit()) => {
            (&l[..i], Some(&l[i + 1..]))
        }
        _ => (l, None),
    };
    let host = match host {
        "" | "0.0.0.0" | "*" => "127.0.0.1",
        "[::]" | "::" => "[::1]",
        h => h,
    };
    match port {
        Some(p) => format!("http://{host}:{p}"),
        None => format!("http://{host}"),
    }
}

/// Normalises a `--url` / `TOLLGATE_ADMIN_URL` value: adds `http://` when there is no scheme
/// and drops trailing slashes.
pub fn normalize_url(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    if u.contains("://") {
        u.to_string()
    } else {
        format!("http://{u}")
    }
}

/// Where the admin client should go.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminTarget {
    /// Base URL without trailing slash, e.g. `http://127.0.0.1:8081`.
    pub url: String,
    pub token: String,
}

impl fmt::Debug for AdminTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminTarget")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Resolves URL and token: flag / environment (already merged by clap) first, then the config
/// file (`config`, else `default_config` when given). `from_config` returns the file's
/// `(admin.listen, admin.token)`; `${VAR}` references in them are expanded with `lookup`.
pub fn resolve_target(
    url: Option<&str>,
    token: Option<&str>,
    config: Option<&Path>,
    default_config: Option<&Path>,
    from_config: &ConfigReader<'_>,
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<AdminTarget, String> {
    let url = url.map(str::trim).filter(|s| !s.is_empty());
    let token = token.filter(|s| !s.trim().is_empty());
    if let (Some(u), Some(t)) = (url, token) {
        return Ok(AdminTarget {
            url: normalize_url(u),
            token: t.to_string(),
        });
    }
    let Some(path) = config.or(default_config) else {
        let missing = if url.is_none() { "URL" } else { "token" };
        return Err(format!(
            "no admin {missing}: pass --url and --token, set {ENV_ADMIN_URL} and {ENV_ADMIN_TOKEN}, \
             or point -c at a config file with an admin section"
        ));
    };
    let shown = path.display();
    let (listen, cfg_token) =
        from_config(path).map_err(|e| format!("cannot read admin settings from {shown}: {e}"))?;
    let final_url = match url {
        Some(u) => normalize_url(u),
        None => {
            let listen = interpolate_with(&listen, lookup)
                .map_err(|e| format!("{shown}: admin.listen: {e}"))?;
            if listen.trim().is_empty() {
                return Err(format!(
                    "{shown} has no admin.listen; pass --url or set {ENV_ADMIN_URL}"
                ));
            }
            listen_to_url(&listen)
        }
    };
    let final_token = match token {
        Some(t) => t.to_string(),
        None => {
            let t = interpolate_with(&cfg_token, lookup)
                .map_err(|e| format!("{shown}: admin.token: {e}"))?;
            if t.trim().is_empty() {
                return Err(format!(
                    "{shown} has no admin.token; pass --token or set {ENV_ADMIN_TOKEN}"
                ));
            }
            t
        }
    };
    Ok(AdminTarget {
        url: final_url,
        token: final_token,
    })
}
