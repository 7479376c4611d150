//! One admin command: the request each resource and verb sends, and [`execute`], which sends it
//! and prints the reply.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::render::{pretty_json, render, Render};
use super::{encode_segment, query_string, AdminClient, Method};
use crate::cli::{
    AdminResource, Expiry, HostsVerb, ImagesVerb, KeysVerb, LimitArgs, UsersVerb, EXIT_ERROR,
    EXIT_OK, EXIT_USAGE,
};

pub(super) fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What to send for one command.
struct Call {
    method: Method,
    path: String,
    body: Option<Value>,
    render: Render,
}

fn segment(what: &str, value: &str) -> Result<String, String> {
    if value.trim().is_empty() {
        Err(format!("empty {what}"))
    } else {
        Ok(encode_segment(value))
    }
}

/// The `limits` of a `limits` command: the flags given, or null with `--clear`.
fn limits_body(limits: &LimitArgs, clear: bool) -> Result<Value, String> {
    match (limits.to_json(), clear) {
        (_, true) => Ok(Value::Null),
        (Some(set), false) => Ok(set),
        (None, false) => Err("give at least one limit (--rpm, --tpd, …) or --clear".into()),
    }
}

fn build_call(resource: &AdminResource, now: i64) -> Result<Call, String> {
    let call = |method, path: String, body, render| Call {
        method,
        path,
        body,
        render,
    };
    Ok(match resource {
        AdminResource::Users { verb } => match verb {
            UsersVerb::Add {
                name,
                email,
                limits,
            } => {
                segment("user name", name)?;
                let mut body = Map::new();
                body.insert("name".into(), json!(name));
                if let Some(e) = email {
                    body.insert("email".into(), json!(e));
                }
                if let Some(l) = limits.to_json() {
                    body.insert("limits".into(), l);
                }
                call(
                    Method::Post,
                    "/admin/users".into(),
                    Some(Value::Object(body)),
                    Render::UserCreated,
                )
            }
            UsersVerb::List => call(Method::Get, "/admin/users".into(), None, Render::UserList),
            UsersVerb::Show { name } => call(
                Method::Get,
                format!("/admin/users/{}", segment("user name", name)?),
                None,
                Render::UserShow,
            ),
            UsersVerb::Rm { name } => call(
                Method::Delete,
                format!("/admin/users/{}", segment("user name", name)?),
                None,
                Render::UserRemoved(name.clone()),
            ),
            UsersVerb::Limits {
                name,
                limits,
                clear,
            } => call(
                Method::Patch,
                format!("/admin/users/{}", segment("user name", name)?),
                Some(json!({ "limits": limits_body(limits, *clear)? })),
                Render::UserShow,
            ),
        },
        AdminResource::Keys { verb } => match verb {
            KeysVerb::Create(k) => {
                let mut body = Map::new();
                if let Some(l) = &k.label {
                    body.insert("label".into(), json!(l));
                }
                match &k.expires {
                    Some(Expiry::In(s)) => {
                        body.insert("expires_in_s".into(), json!(s));
                    }
                    Some(Expiry::At(t)) => {
                        body.insert("expires_at".into(), json!(t));
                    }
                    None => {}
                }
                if let Some(models) = &k.models {
                    let models: Vec<&str> = models
                        .iter()
                        .map(|m| m.trim())
                        .filter(|m| !m.is_empty())
                        .collect();
                    if models.is_empty() {
                        return Err("--models needs at least one model name".into());
                    }
                    body.insert("models".into(), json!(models));
                }
                if let Some(l) = k.limits.to_json() {
                    body.insert("limits".into(), l);
                }
                call(
                    Method::Post,
                    format!("/admin/users/{}/keys", segment("user name", &k.user)?),
                    Some(Value::Object(body)),
                    Render::KeyCreated(k.user.clone()),
                )
            }
            KeysVerb::List { user } => call(
                Method::Get,
                format!("/admin/keys{}", query_string(&[("user", user.clone())])),
                None,
                Render::KeyList,
            ),
            KeysVerb::Show { id } => call(
                Method::Get,
                format!("/admin/keys/{}", segment("key id", id)?),
                None,
                Render::KeyShow,
            ),
            KeysVerb::Revoke { id } => call(
                Method::Delete,
                format!("/admin/keys/{}", segment("key id", id)?),
                None,
                Render::KeyRevoked(id.clone()),
            ),
            KeysVerb::Rotate { id, grace } => {
                let grace = grace.unwrap_or(0);
                call(
                    Method::Post,
                    format!("/admin/keys/{}/rotate", segment("key id", id)?),
                    Some(json!({ "grace_s": grace })),
                    Render::KeyRotated(id.clone(), grace),
                )
            }
            KeysVerb::Limits { id, limits, clear } => call(
                Method::Patch,
                format!("/admin/keys/{}", segment("key id", id)?),
                Some(json!({ "limits": limits_body(limits, *clear)? })),
                Render::KeyShow,
            ),
            KeysVerb::Disable { id } | KeysVerb::Enable { id } => {
                let disabled = matches!(verb, KeysVerb::Disable { .. });
                call(
                    Method::Patch,
                    format!("/admin/keys/{}", segment("key id", id)?),
                    Some(json!({ "disabled": disabled })),
                    Render::KeyToggled(id.clone(), disabled),
                )
            }
        },
        AdminResource::Hosts { verb } => match verb {
            HostsVerb::Set { host, keys, origin } => {
                let mut body = Map::new();
                body.insert("keys".into(), json!(keys));
                if let Some(o) = origin {
                    body.insert("origin".into(), json!(o));
                }
                call(
                    Method::Put,
                    format!("/admin/hosts/{}", segment("host", host)?),
                    Some(Value::Object(body)),
                    Render::HostSet(host.clone()),
                )
            }
            HostsVerb::List => call(Method::Get, "/admin/hosts".into(), None, Render::HostList),
            HostsVerb::Rm { host } => call(
                Method::Delete,
                format!("/admin/hosts/{}", segment("host", host)?),
                None,
                Render::HostRemoved(host.clone()),
            ),
        },
        AdminResource::Usage(u) => {
            let from = u.since.map(|s| {
                let s = i64::try_from(s).unwrap_or(i64::MAX);
                // Clamp to the epoch: the server's formats start there.
                crate::time::rfc3339(now.saturating_sub(s).max(0))
            });
            let q = query_string(&[
                ("user", u.user.clone()),
                ("key", u.key.clone()),
                ("from", from),
                ("by", u.by.map(|b| b.as_str().to_string())),
            ]);
            call(Method::Get, format!("/admin/usage{q}"), None, Render::Usage)
        }
        AdminResource::Images {
            verb: ImagesVerb::Purge(p),
        } => match (&p.hash, &p.prompt) {
            (Some(hash), _) => call(
                Method::Delete,
                format!("/admin/images/{}", segment("hash", hash)?),
                None,
                Render::ImageDeleted(Some(hash.clone())),
            ),
            (None, Some(prompt)) => {
                let mut body = Map::new();
                body.insert("description".into(), json!(prompt));
                if let Some(w) = p.width {
                    body.insert("width".into(), json!(w));
                }
                if let Some(h) = p.height {
                    body.insert("height".into(), json!(h));
                }
                if let Some(m) = &p.model {
                    body.insert("model".into(), json!(m));
                }
                if let Some(s) = p.seed {
                    body.insert("seed".into(), json!(s));
                }
                call(
                    Method::Post,
                    "/admin/images/purge".into(),
                    Some(Value::Object(body)),
                    Render::ImageDeleted(None),
                )
            }
            (None, None) => return Err("images purge needs a HASH or --prompt".into()),
        },
    })
}

/// Runs one admin command against `client`, writing results to `out` and errors to `err`.
/// Returns the exit status: 0 success, 1 error reply / unreachable / bad reply, 2 usage error.
pub fn execute(
    client: &AdminClient,
    resource: &AdminResource,
    json: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let call = match build_call(resource, now_unix()) {
        Ok(c) => c,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_USAGE;
        }
    };
    let reply = match client.request(call.method, &call.path, call.body.as_ref()) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_ERROR;
        }
    };
    if json {
        if !reply.body.trim().is_empty() {
            let text = pretty_json(&reply.body).unwrap_or_else(|| reply.body.clone());
            let _ = writeln!(out, "{text}");
        }
        return EXIT_OK;
    }
    let v = reply.json();
    let needs_json = !matches!(
        call.render,
        Render::UserRemoved(_)
            | Render::KeyRevoked(_)
            | Render::HostRemoved(_)
            | Render::KeyToggled(..)
            | Render::HostSet(_)
            | Render::ImageDeleted(Some(_))
    );
    if needs_json && !v.is_object() {
        let _ = writeln!(
            err,
            "error: bad reply from admin API at {}: expected a JSON object (HTTP {})",
            client.base_url(),
            reply.status
        );
        return EXIT_ERROR;
    }
    let text = render(&call.render, &v, now_unix());
    let _ = out.write_all(text.as_bytes());
    EXIT_OK
}
