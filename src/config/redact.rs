//! `Debug` without secrets: tokens, keys and client secrets never appear in `{:?}` output.

use std::fmt;

use super::sections::{
    AdminSection, HostSection, HostingSection, OauthProvider, OauthSection, UpstreamSection,
};

/// Stands in for a secret in `Debug` output.
struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Stands in for a list of secrets: only how many there are.
struct RedactedList(usize);

impl fmt::Debug for RedactedList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{} redacted]", self.0)
    }
}

fn redact_opt(secret: &Option<String>) -> Option<Redacted> {
    secret.as_ref().map(|_| Redacted)
}

impl fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminSection")
            .field("listen", &self.listen)
            .field("token", &Redacted)
            .finish()
    }
}

impl fmt::Debug for UpstreamSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamSection")
            .field("backends", &self.backends)
            .field("keys", &RedactedList(self.keys.len()))
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("read_timeout_ms", &self.read_timeout_ms)
            .field("health_check", &self.health_check)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl fmt::Debug for HostSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostSection")
            .field("origin", &self.origin)
            .field("keys", &RedactedList(self.keys.len()))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl fmt::Debug for HostingSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostingSection")
            .field("provider", &self.provider)
            .field("key", &redact_opt(&self.key))
            .field("url", &self.url)
            .field("auth_code", &redact_opt(&self.auth_code))
            .finish()
    }
}

impl fmt::Debug for OauthSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OauthSection")
            .field("redirect_base", &self.redirect_base)
            .field("state_secret", &Redacted)
            .field("providers", &self.providers)
            .field("allowed_emails", &self.allowed_emails)
            .field("allowed_redirects", &self.allowed_redirects)
            .field("new_user_limits", &self.new_user_limits)
            .field("max_keys_per_user", &self.max_keys_per_user)
            .finish()
    }
}

impl fmt::Debug for OauthProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OauthProvider")
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("client_secret", &Redacted)
            .field("issuer", &self.issuer)
            .field("base_url", &self.base_url)
            .field("api_url", &self.api_url)
            .field("scopes", &self.scopes)
            .finish()
    }
}
