//! `tollgate serve -d`: the parent returns at once, the daemon writes its pid file, opens sled
//! after the fork (admin writes work) and stops on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::mock::MockUpstream;
use common::{GatewayConfig, TestGateway};

fn process_gone(pid: &str) -> bool {
    // A daemon is re-parented to init, which reaps it: its /proc entry disappears.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.split_whitespace().nth(2) == Some("Z"))
        .unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_d_daemonizes_serves_and_stops_on_sigterm() {
    let mock = MockUpstream::start().await;
    let mut gw = TestGateway::start(GatewayConfig::new(&mock.url())).await;
    gw.stop();
    let pid_file = gw.dir.join("tollgate.pid");
    let _ = std::fs::remove_file(&pid_file);

    // The daemon keeps the standard streams it was given: files, so nothing waits on a pipe.
    let config = gw.config_path.clone();
    let (out, err) = (gw.dir.join("stdout.log"), gw.dir.join("stderr.log"));
    let parent = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["serve", "-d", "-c"])
            .arg(&config)
            .stdout(std::fs::File::create(out).unwrap())
            .stderr(std::fs::File::create(err).unwrap())
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(parent.success(), "{}", gw.stderr());

    let ready = common::eventually(Duration::from_secs(30), || async {
        pid_file.exists()
            && gw
                .http
                .get(gw.url("/status"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert!(ready, "the daemon did not come up");
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    assert!(!process_gone(&pid));

    // sled was opened in the daemon, after the fork: writes and key checks work.
    let key = gw.create_user("daemon-user").await;
    let resp = gw.chat_request(&key).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let stopped = common::wait_until(Duration::from_secs(30), || process_gone(&pid)).await;
    assert!(stopped, "the daemon did not stop on SIGTERM");
}
