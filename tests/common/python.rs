//! Driving the official `openai` Python SDK against a gateway: the tests that need it fail
//! (rather than skip) when python3 or the package is missing.

use std::process::Command;

/// Panics unless `python3 -c "import openai"` succeeds.
pub fn require_openai() {
    let check = Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .map_err(|e| format!("cannot run python3 ({e})"))
        .and_then(|o| {
            if o.status.success() {
                Ok(())
            } else {
                Err(String::from_utf8_lossy(&o.stderr).into_owned())
            }
        });
    if let Err(why) = check {
        panic!(
            "this test needs python3 with the `openai` package: run `make deps` \
             (or `python3 -m pip install openai`).\n{why}"
        );
    }
}

/// `python3 -c SCRIPT` with GW_URL and GW_KEY set, the loopback exempt from proxies and no
/// OpenAI settings inherited from the environment.
pub fn sdk_command(script: &str, gw_url: &str, key: &str) -> Command {
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script])
        .env("GW_URL", gw_url)
        .env("GW_KEY", key)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("OPENAI_API_KEY");
    cmd
}

/// Runs `script` through `sdk_command` to the end, asserts that it succeeded and returns its
/// stdout.
pub async fn run_sdk_script(script: &'static str, gw_url: String, key: String) -> String {
    let out = tokio::task::spawn_blocking(move || {
        sdk_command(script, &gw_url, &key)
            .output()
            .expect("run python3")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the SDK script failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    stdout.into_owned()
}
