//! `${VAR}` interpolation and brace shielding.

use std::path::PathBuf;

use super::*;
use crate::config::interpolate::interpolate;

#[test]
fn interpolates_with_and_without_default() {
    let env = env_of(&[("A", "alpha"), ("EMPTY", "")]);
    assert_eq!(interpolate("x-${A}-y", &env).unwrap(), "x-alpha-y");
    assert_eq!(
        interpolate("${MISSING:-fallback}", &env).unwrap(),
        "fallback"
    );
    assert_eq!(interpolate("${A:-fallback}", &env).unwrap(), "alpha");
    assert_eq!(
        interpolate("${EMPTY:-fallback}", &env).unwrap(),
        "fallback",
        "shell :- semantics"
    );
    assert_eq!(interpolate("${EMPTY}", &env).unwrap(), "");
    assert_eq!(interpolate("${MISSING:-}", &env).unwrap(), "");
    assert_eq!(
        interpolate("$${A} costs $5", &env).unwrap(),
        "${A} costs $5",
        "escape and lone $"
    );
    assert_eq!(interpolate("${A}${A}", &env).unwrap(), "alphaalpha");
    let env2 = env_of(&[("B", "${A}")]);
    assert_eq!(
        interpolate("${B}", &env2).unwrap(),
        "${A}",
        "values are not re-scanned"
    );
    assert!(interpolate("${A", &env).is_err());
    assert!(interpolate("${1A}", &env).is_err());
    assert!(interpolate("${}", &env).is_err());
    assert_eq!(
        interpolate("${X} ${Y}", &env).unwrap_err().len(),
        2,
        "every unset variable is reported"
    );
}

#[test]
fn interpolation_in_config_values_and_lists() {
    let yaml = "
listen: [{addr: '${ADDR:-127.0.0.1:8080}'}]
storage: {path: ${STATE_DIR}/db}
upstreams: {openai: {backends: [https://api.openai.com], keys: [${K1}, ${K2:-}, '${K3:-}', literal]}}
admin: {listen: 127.0.0.1:8081, token: ${TOKEN}}
";
    let c = parse_env(
        yaml,
        &[
            ("STATE_DIR", "/srv"),
            ("K1", "sk-one"),
            ("TOKEN", "0123456789abcdef"),
        ],
    )
    .unwrap();
    assert_eq!(c.listen[0].addr, "127.0.0.1:8080");
    assert_eq!(c.storage.path, PathBuf::from("/srv/db"));
    assert_eq!(
        c.upstreams["openai"].keys,
        vec!["sk-one", "literal"],
        "empty interpolations are dropped"
    );
    assert_eq!(c.admin.unwrap().token, "0123456789abcdef");
}

#[test]
fn unset_variable_names_var_and_path() {
    let e = errs(&with(
        "admin: {listen: 127.0.0.1:8081, token: ${TOLLGATE_ADMIN_TOKEN}}",
    ));
    assert_has(&e, "admin.token", "TOLLGATE_ADMIN_TOKEN");
    let e = errs(
        "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/x}
upstreams: {openai: {backends: [https://api.openai.com], keys: [${OPENAI_API_KEY}]}}
",
    );
    assert_has(
        &e,
        "upstreams.openai.keys[0]",
        "environment variable OPENAI_API_KEY is not set",
    );
}

#[test]
fn comments_keys_and_numbers_are_not_interpolated() {
    let c = ok(&with(
        "# ${UNSET_IN_COMMENT}\nserver: {threads: 3}  # ${ALSO_UNSET}\n",
    ));
    assert_eq!(c.server.threads, 3);
    let e = errs(&with("server: {threads: '${THREADS:-4}'}"));
    assert_has(&e, "server.threads", "expected an integer, found a string");
}

#[test]
fn literal_empty_key_is_an_error() {
    let e = errs(
        "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/x}
upstreams: {openai: {backends: [https://api.openai.com], keys: ['', 'a b']}}
",
    );
    assert_has(&e, "upstreams.openai.keys[0]", "must not be empty");
    assert_has(&e, "upstreams.openai.keys[1]", "whitespace");
}

#[test]
fn shield_keeps_quoted_text_and_reports_unclosed() {
    let c = ok(&with("models: [{id: \"a${X:-b}c}\"}, {id: 'x}y'}]"));
    let ids: Vec<_> = c.models.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(ids, vec!["abc}", "x}y"]);
    let e = errs(&with("models: [{id: '${X'}]"));
    assert_has(&e, "models[0].id", "unclosed");
    // An escaped `$${` in a flow list is fine too.
    let c = ok(&with("models: [{id: $${literal}}]"));
    assert_eq!(c.models.unwrap()[0].id, "${literal}");
}
