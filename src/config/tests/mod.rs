//! Tests of the whole module, mostly through [`Config::parse`]; the helpers below are shared.

mod api;
mod checks;
mod files;
mod interpolation;
mod structure;

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Config, ConfigError};

const BASE: &str = "
listen: [{addr: 127.0.0.1:8080}]
storage: {path: /tmp/tollgate-cfg-test}
upstreams: {openai: {backends: [https://api.openai.com]}}
";

fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

fn parse_env(yaml: &str, vars: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
    Config::parse(yaml, &env_of(vars))
}

fn ok(yaml: &str) -> Config {
    match parse_env(yaml, &[]) {
        Ok(c) => c,
        Err(e) => panic!("expected success, got {e:#?}"),
    }
}

fn errs(yaml: &str) -> Vec<String> {
    match parse_env(yaml, &[]) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

/// BASE plus `extra` top-level sections.
fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[track_caller]
fn assert_has(errors: &[String], path: &str, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(&format!("{path}: ")) && e.contains(needle)),
        "no error at `{path}` containing `{needle}` in {errors:#?}"
    );
}

/// A file that exists, for TLS and CA paths.
fn temp_file() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "tollgate-cfg-{}-{}.pem",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&p, "pem").unwrap();
    p.display().to_string()
}
