//! Reading the sections that shape what clients get: `auth`, `limits`, `idempotency`, `images`, `models`,
//! `oauth` and `cors`, with their format checks (image sizes, origins).

use std::collections::{BTreeMap, BTreeSet};

use serde_yaml::Value;

use super::backend_url::split_host_port;
use super::walk::{index, Cx, Obj};
use super::{
    AuthSection, Byok, CorsSection, HostingProvider, HostingSection, IdempotencySection,
    ImagesSection, LimitValues, LimitsSection, ModelEntry, OauthKind, OauthProvider, OauthSection,
    UpstreamSection,
};

impl<'e> Cx<'e> {
    pub(super) fn auth(&mut self, v: &Value, path: &str) -> AuthSection {
        let d = AuthSection::default();
        let Some(mut o) = self.object(v, path) else {
            return d;
        };
        let key_prefix = o.string_or(self, "key_prefix", &d.key_prefix);
        if key_prefix.is_empty()
            || key_prefix.len() > 32
            || !key_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.err(
                &o.at("key_prefix"),
                "must be 1 to 32 characters of letters, digits, `-` and `_`",
            );
        }
        let byok = match o.take("byok") {
            None | Some((Value::Bool(false), _)) => Byok::Off,
            Some((bv, bp)) => match self.string(bv, &bp).as_deref() {
                Some("off") => Byok::Off,
                Some("optional") => Byok::Optional,
                Some("required") => Byok::Required,
                Some(other) => {
                    self.err(
                        &bp,
                        format!("expected off, optional or required, found `{other}`"),
                    );
                    Byok::Off
                }
                None => Byok::Off,
            },
        };
        o.finish(self);
        AuthSection { key_prefix, byok }
    }

    pub(super) fn limits(&mut self, v: &Value, path: &str) -> LimitsSection {
        let d = LimitsSection::default();
        let Some(mut o) = self.object(v, path) else {
            return d;
        };
        let l = LimitsSection {
            requests_per_minute: o.u64_or(self, "requests_per_minute", d.requests_per_minute),
            requests_per_hour: o.u64_or(self, "requests_per_hour", d.requests_per_hour),
            requests_per_day: o.u64_or(self, "requests_per_day", d.requests_per_day),
            tokens_per_minute: o.u64_or(self, "tokens_per_minute", d.tokens_per_minute),
            tokens_per_day: o.u64_or(self, "tokens_per_day", d.tokens_per_day),
            images_per_day: o.u64_or(self, "images_per_day", d.images_per_day),
            max_concurrent: o.u64_or(self, "max_concurrent", d.max_concurrent),
            max_body_bytes: o.positive_or(self, "max_body_bytes", d.max_body_bytes),
        };
        o.finish(self);
        l
    }

    /// The seven optional limits, as in `oauth.new_user_limits`.
    fn limit_values(&mut self, v: &Value, path: &str) -> Option<LimitValues> {
        let mut o = self.object(v, path)?;
        let mut values = LimitValues::default();
        for field in LimitValues::FIELDS {
            let n = o.u64(self, field);
            if let Some(slot) = values.slot(field) {
                *slot = n;
            }
        }
        o.finish(self);
        Some(values)
    }

    pub(super) fn idempotency(&mut self, v: &Value, path: &str) -> IdempotencySection {
        let d = IdempotencySection::default();
        let Some(mut o) = self.object(v, path) else {
            return d;
        };
        let s = IdempotencySection {
            ttl_s: o.positive_or(self, "ttl_s", d.ttl_s),
            inflight_timeout_s: o.positive_or(self, "inflight_timeout_s", d.inflight_timeout_s),
            max_response_bytes: o.u64_or(self, "max_response_bytes", d.max_response_bytes),
        };
        o.finish(self);
        s
    }

    pub(super) fn images(
        &mut self,
        v: &Value,
        path: &str,
        upstreams: &BTreeMap<String, UpstreamSection>,
    ) -> Option<ImagesSection> {
        let d = ImagesSection::default();
        let mut o = self.object(v, path)?;
        let upstream = o.req_string(self, "upstream");
        if let Some(u) = upstream.as_ref().filter(|u| !upstreams.contains_key(*u)) {
            self.err(&o.at("upstream"), format!("no upstream named `{u}`"));
        }
        let upstream = upstream.unwrap_or_default();
        let default_model = o.nonempty_or(self, "default_model", &d.default_model);
        let default_size = o.string_or(self, "default_size", &d.default_size);
        if parse_size(&default_size).is_none() {
            self.err(
                &o.at("default_size"),
                format!("`{default_size}` is not WxH with both sides 64 to 4096"),
            );
        }
        let max_cache_bytes = o.u64_or(self, "max_cache_bytes", d.max_cache_bytes);
        let store_generations = o.bool_or(self, "store_generations", false);
        let public_url = o.string(self, "public_url").map(|u| {
            self.url(&o.at("public_url"), &u);
            u.trim_end_matches('/').to_string()
        });
        let hosting = o.take("hosting").and_then(|(hv, hp)| self.hosting(hv, &hp));
        o.finish(self);
        Some(ImagesSection {
            upstream,
            default_model,
            default_size,
            max_cache_bytes,
            store_generations,
            public_url,
            hosting,
        })
    }

    fn hosting(&mut self, v: &Value, path: &str) -> Option<HostingSection> {
        let mut o = self.object(v, path)?;
        let provider = match o.req_string(self, "provider").as_deref() {
            Some("smms") => Some(HostingProvider::Smms),
            Some("picgo") => Some(HostingProvider::Picgo),
            Some("cloudflare_imgbed") => Some(HostingProvider::CloudflareImgbed),
            Some(other) => {
                self.err(
                    &o.at("provider"),
                    format!("expected smms, picgo or cloudflare_imgbed, found `{other}`"),
                );
                None
            }
            None => None,
        };
        let key = o.string(self, "key");
        let url = o.string(self, "url");
        if let Some(u) = &url {
            self.url(&o.at("url"), u);
        }
        let auth_code = o.string(self, "auth_code");
        match provider {
            Some(HostingProvider::Smms) if key.as_deref().unwrap_or("").is_empty() => {
                self.err(&o.at("key"), "required for smms (the SM.MS API token)");
            }
            Some(HostingProvider::CloudflareImgbed) if url.is_none() => {
                self.err(
                    &o.at("url"),
                    "required for cloudflare_imgbed (its upload endpoint)",
                );
            }
            _ => {}
        }
        o.finish(self);
        Some(HostingSection {
            provider: provider.unwrap_or_default(),
            key,
            url,
            auth_code,
        })
    }

    pub(super) fn models(&mut self, v: &Value, path: &str) -> Option<Vec<ModelEntry>> {
        let items = self.list(v, path)?;
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let p = index(path, i);
            let Some(mut o) = self.object(item, &p) else {
                continue;
            };
            let id = o.req_string(self, "id");
            match &id {
                Some(id) if id.is_empty() => self.err(&o.at("id"), "must not be empty"),
                Some(id) if !seen.insert(id.clone()) => {
                    self.err(&o.at("id"), format!("`{id}` is listed twice"));
                }
                _ => {}
            }
            let id = id.unwrap_or_default();
            let owned_by = o.string_or(self, "owned_by", "tollgate");
            o.finish(self);
            out.push(ModelEntry { id, owned_by });
        }
        Some(out)
    }

    pub(super) fn oauth(&mut self, v: &Value, path: &str) -> Option<OauthSection> {
        let d = OauthSection::default();
        let mut o = self.object(v, path)?;
        let redirect_base = o.req_string(self, "redirect_base");
        if let Some(u) = &redirect_base {
            self.url(&o.at("redirect_base"), u);
        }
        let redirect_base = redirect_base.unwrap_or_default();
        let state_secret = o.req_string(self, "state_secret");
        let n = state_secret.as_ref().map_or(32, |s| s.chars().count());
        if n < 32 {
            self.err(
                &o.at("state_secret"),
                format!("must be at least 32 characters (it has {n})"),
            );
        }
        let state_secret = state_secret.unwrap_or_default();
        let mut providers = BTreeMap::new();
        if let Some((pv, pp)) = o.require(self, "providers") {
            let entries = self.named(pv, &pp);
            if entries.is_empty() && pv.is_mapping() {
                self.err(&pp, "at least one provider is required");
            }
            for (name, val, p) in entries {
                // The name is a path segment (/auth/{name}/login); `device` is taken by the device flow.
                if name.is_empty()
                    || !name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
                    })
                {
                    self.err(
                        &p,
                        "a provider name is lowercase letters, digits, `_` and `-`",
                    );
                } else if name == "device" {
                    self.err(
                        &p,
                        "`device` is reserved for /auth/device/…; pick another name",
                    );
                }
                if let Some(provider) = self.oauth_provider(val, &p) {
                    providers.insert(name.to_string(), provider);
                }
            }
        }
        let allowed_emails = o.string_list(self, "allowed_emails").unwrap_or_default();
        for (i, e) in allowed_emails.iter().enumerate() {
            if e != "*" && !e.contains('@') {
                self.err(
                    &index(&o.at("allowed_emails"), i),
                    format!("`{e}` is not `*` or an address pattern like *@example.com"),
                );
            }
        }
        let allowed_redirects = o.string_list(self, "allowed_redirects").unwrap_or_default();
        for (i, r) in allowed_redirects.iter().enumerate() {
            if !r.contains("://") {
                self.err(
                    &index(&o.at("allowed_redirects"), i),
                    format!("`{r}` is not a URL pattern like https://app.example.com/*"),
                );
            }
        }
        let new_user_limits = o
            .take("new_user_limits")
            .and_then(|(lv, lp)| self.limit_values(lv, &lp));
        let keys = o.positive_or(self, "max_keys_per_user", u64::from(d.max_keys_per_user));
        let max_keys_per_user = u32::try_from(keys).unwrap_or_else(|_| {
            self.err(&o.at("max_keys_per_user"), "is too large");
            d.max_keys_per_user
        });
        o.finish(self);
        Some(OauthSection {
            redirect_base: redirect_base.trim_end_matches('/').to_string(),
            state_secret,
            providers,
            allowed_emails,
            allowed_redirects,
            new_user_limits,
            max_keys_per_user,
        })
    }

    fn oauth_provider(&mut self, v: &Value, path: &str) -> Option<OauthProvider> {
        let mut o = self.object(v, path)?;
        let kind = match o.req_string(self, "type").as_deref() {
            Some("github") => Some(OauthKind::Github),
            Some("oidc") => Some(OauthKind::Oidc),
            Some(other) => {
                self.err(
                    &o.at("type"),
                    format!("expected github or oidc, found `{other}`"),
                );
                None
            }
            None => None,
        };
        let client_id = o.req_string(self, "client_id").unwrap_or_default();
        let client_secret = o.req_string(self, "client_secret").unwrap_or_default();
        let mut url = |o: &mut Obj, key: &'static str| {
            let u = o.string(self, key)?;
            self.url(&o.at(key), &u);
            Some(u)
        };
        let issuer = url(&mut o, "issuer");
        let base_url = url(&mut o, "base_url");
        let api_url = url(&mut o, "api_url");
        if kind == Some(OauthKind::Oidc) && issuer.is_none() {
            self.err(
                &o.at("issuer"),
                "required for type oidc (discovery starts there)",
            );
        }
        let scopes = o.string_list(self, "scopes");
        o.finish(self);
        Some(OauthProvider {
            kind: kind.unwrap_or_default(),
            client_id,
            client_secret,
            issuer,
            base_url,
            api_url,
            scopes,
        })
    }

    pub(super) fn cors(&mut self, v: &Value, path: &str) -> Option<CorsSection> {
        let d = CorsSection::default();
        let mut o = self.object(v, path)?;
        let allow_origins = o
            .string_list(self, "allow_origins")
            .unwrap_or(d.allow_origins);
        for (i, origin) in allow_origins.iter().enumerate() {
            if let Err(e) = check_origin(origin) {
                self.err(&index(&o.at("allow_origins"), i), e);
            }
        }
        let max_age_s = o.u64_or(self, "max_age_s", d.max_age_s);
        o.finish(self);
        Some(CorsSection {
            allow_origins,
            max_age_s,
        })
    }
}

/// `WxH` with both sides 64..=4096.
pub(super) fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    let side = |v: &str| {
        v.parse::<u32>()
            .ok()
            .filter(|n| (64..=4096).contains(n) && !v.starts_with('+'))
    };
    Some((side(w)?, side(h)?))
}

/// `*` or `scheme://host[:port]`, as browsers send in `Origin` (no path, not even `/`).
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    let usage =
        "expected `*` or an origin like https://app.example.com (scheme://host[:port], no path)";
    let Some((scheme, authority)) = origin.split_once("://") else {
        return Err(format!("`{origin}`: {usage}"));
    };
    let scheme_ok = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok || authority.contains(['/', '?', '#', '@']) {
        return Err(format!("`{origin}`: {usage}"));
    }
    split_host_port(authority)
        .map(|_| ())
        .map_err(|e| format!("`{origin}`: {e}"))
}
