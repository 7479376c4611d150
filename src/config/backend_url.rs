//! Backend and origin URLs: `http(s)://host[:port][/base-path]`, and the `host[:port]` syntax they share
//! with `hosts` keys and CORS origins.

use std::net::Ipv6Addr;

/// A backend or origin URL taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendUrl {
    pub tls: bool,
    /// Lowercased; an IPv6 address keeps its brackets (`[::1]`) so `format!("{host}:{port}")` and the
    /// `Host` header work unchanged.
    pub host: String,
    /// Given, or 80/443 from the scheme.
    pub port: u16,
    /// `""` or `/…` without a trailing slash. Kept as written: `/v1` handling is the gateway's.
    pub base_path: String,
}

impl BackendUrl {
    /// `host:port`, for connecting.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// `host` or `host:port` when the port is not the scheme's default: the `Host` header value.
    pub fn authority(&self) -> String {
        if self.port == if self.tls { 443 } else { 80 } {
            self.host.clone()
        } else {
            self.addr()
        }
    }
}

/// Takes a backend or origin URL apart: `http(s)://host[:port][/base-path]`, nothing else.
pub fn parse_backend_url(s: &str) -> Result<BackendUrl, String> {
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a URL must not contain whitespace".to_string());
    }
    let Some((scheme, rest)) = s.split_once("://") else {
        return Err(format!("`{s}` is not a URL like https://api.openai.com"));
    };
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "http" => false,
        "https" => true,
        other => return Err(format!("unsupported scheme `{other}`: use http or https")),
    };
    if rest.contains(['?', '#']) {
        return Err("a backend URL must not have a query or fragment".to_string());
    }
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(
            "a backend URL must not contain user info; put credentials in `keys`".to_string(),
        );
    }
    let (host, port) = split_host_port(authority)?;
    Ok(BackendUrl {
        tls,
        host,
        port: port.unwrap_or(if tls { 443 } else { 80 }),
        base_path: path.trim_end_matches('/').to_string(),
    })
}

/// `host[:port]` → (lowercased host, port). IPv6 needs brackets and keeps them.
pub(super) fn split_host_port(a: &str) -> Result<(String, Option<u16>), String> {
    if a.is_empty() {
        return Err("the host is missing".to_string());
    }
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let Some((ip, after)) = rest.split_once(']') else {
            return Err("unclosed `[` in an IPv6 address".to_string());
        };
        if ip.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{ip}` is not an IPv6 address"));
        }
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(p) => Some(p),
                None => return Err(format!("unexpected `{after}` after the IPv6 address")),
            },
        };
        (format!("[{}]", ip.to_ascii_lowercase()), port)
    } else {
        let (host, port) = match a.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err("an IPv6 address needs brackets, like [::1]:8080".to_string());
        }
        check_hostname(host)?;
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 && !p.starts_with('+') => Some(n),
            _ => return Err(format!("`{p}` is not a port (1-65535)")),
        },
    };
    Ok((host, port))
}

/// A DNS name or IPv4 address: labels of `[A-Za-z0-9_-]`, 1..=63 long, 253 in all.
fn check_hostname(h: &str) -> Result<(), String> {
    if h.is_empty() {
        return Err("the host is missing".to_string());
    }
    let ok = h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("`{h}` is not a valid host name"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_urls() {
        let u = |s: &str| parse_backend_url(s).unwrap();
        assert_eq!(
            u("https://api.openai.com"),
            BackendUrl {
                tls: true,
                host: "api.openai.com".into(),
                port: 443,
                base_path: "".into()
            }
        );
        assert_eq!(
            u("http://10.0.0.5:8000"),
            BackendUrl {
                tls: false,
                host: "10.0.0.5".into(),
                port: 8000,
                base_path: "".into()
            }
        );
        assert_eq!(
            u("https://img.example.com/v1").base_path,
            "/v1",
            "/v1 is the gateway's business"
        );
        assert_eq!(
            u("https://h/openai/v1/").base_path,
            "/openai/v1",
            "trailing slash dropped"
        );
        assert_eq!(u("https://h/").base_path, "");
        assert_eq!(u("HTTPS://API.Example.COM:8443").host, "api.example.com");
        assert_eq!(u("HTTPS://API.Example.COM:8443").port, 8443);
        assert_eq!(u("http://h").port, 80);
        let v6 = u("http://[::1]:8000/x");
        assert_eq!(
            (v6.host.as_str(), v6.port, v6.addr()),
            ("[::1]", 8000, "[::1]:8000".to_string())
        );
        assert_eq!(u("https://h").authority(), "h");
        assert_eq!(u("https://h:8443").authority(), "h:8443");
        for bad in [
            "api.openai.com",
            "ftp://h",
            "https://",
            "https://:443",
            "https://h:0",
            "https://h:65536",
            "https://h:abc",
            "https://h?x=1",
            "https://h/p#frag",
            "https://user:pw@h",
            "https://h h",
            "http://::1:80",
            "http://[::1",
            "http://[zz]:80",
            "https://a..b",
        ] {
            assert!(parse_backend_url(bad).is_err(), "{bad} should be refused");
        }
    }
}
