//! Operations (issue 7): the systemd unit, zero-downtime upgrades with the sled handoff under
//! load, graceful stop, and crash safety. systemd itself does not run here: the tests drive
//! the mechanics its unit uses (`-u` and SIGQUIT, SIGTERM, SIGKILL) on the real binary.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::mock::MockUpstream;
use common::{eventually, fresh_client, new_user, wait_until, GatewayConfig, TestGateway};

const WAIT: Duration = Duration::from_secs(60);

/// The requests of key `id` in the usage report, all periods added up.
async fn usage_requests(gw: &TestGateway, id: &str) -> u64 {
    let (status, body) = gw
        .admin("GET", &format!("/admin/usage?key={id}&by=day"), None)
        .await;
    if status != 200 {
        return 0;
    }
    body["data"]
        .as_array()
        .map(|rows| rows.iter().filter_map(|r| r["requests"].as_u64()).sum())
        .unwrap_or(0)
}

/// A streaming chat request that takes about `events × 150 ms`; true when the transcript
/// arrived whole (ends with `[DONE]`).
async fn stream_completes(url: String, key: String, events: u32) -> bool {
    let resp = fresh_client()
        .post(url)
        .bearer_auth(key)
        .header("x-mock-chunks", events.to_string())
        .header("x-mock-delay-ms", "150")
        .json(&json!({"model": "gpt-4o-mini", "stream": true,
                      "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await;
    match resp {
        Ok(r) if r.status() == 200 => r
            .text()
            .await
            .is_ok_and(|t| t.trim_end().ends_with("data: [DONE]")),
        _ => false,
    }
}

/// Steady load: `workers` loops of non-streaming requests on fresh connections until `stop`.
/// Each request carries its own Idempotency-Key and is retried when the connection fails
/// before an answer (see `three_upgrades…` for why); `retried` counts those retries.
fn start_load(
    gw: &TestGateway,
    key: &str,
    workers: usize,
    stop: Arc<AtomicBool>,
    counters: Arc<LoadCounters>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..workers)
        .map(|worker| {
            let (url, key) = (gw.url("/v1/chat/completions"), key.to_string());
            let (stop, counters) = (stop.clone(), counters.clone());
            tokio::spawn(async move {
                let client = fresh_client();
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    n += 1;
                    let mut answered = false;
                    for attempt in 0..3 {
                        let sent = client
                            .post(&url)
                            .bearer_auth(&key)
                            .header("idempotency-key", format!("load-{worker}-{n}"))
                            .json(&common::chat_body("gpt-4o-mini"))
                            .send()
                            .await;
                        match sent {
                            Ok(r) if r.status() == 200 => {
                                answered = r.bytes().await.is_ok();
                                break;
                            }
                            Ok(r) => {
                                eprintln!("failed request: {}", r.status());
                                break;
                            }
                            Err(e) => {
                                eprintln!("attempt {attempt} failed: {e:?}");
                                counters.retried.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                    }
                    if answered {
                        counters.answered(Instant::now());
                    } else {
                        counters.failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect()
}

#[derive(Default)]
struct LoadCounters {
    ok: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    /// When each answer arrived, for the crash test's loss window.
    answered_at: Mutex<Vec<Instant>>,
}

impl LoadCounters {
    fn answered(&self, at: Instant) {
        self.answered_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(at);
        self.ok.fetch_add(1, Ordering::SeqCst);
    }

    /// Answers that had arrived `window` before `at`.
    fn answered_before(&self, at: Instant, window: Duration) -> u64 {
        let Some(cutoff) = at.checked_sub(window) else {
            return 0;
        };
        let times = self.answered_at.lock().unwrap_or_else(|p| p.into_inner());
        times.iter().filter(|t| **t < cutoff).count() as u64
    }
}

/// How much usage `kill -9` may lose, as the README states it: the pending batch, written and
/// flushed once a second (`usage::WRITE_EVERY`). A request is answered just before its usage
/// is added, and the write and flush take time of their own on a busy test machine; the other
/// second covers both.
const CRASH_LOSS_WINDOW: Duration = Duration::from_secs(2);

#[tokio::test]
async fn three_upgrades_under_load_lose_no_request_stream_or_usage() {
    let mock = MockUpstream::start().await;
    let mut config = GatewayConfig::new(&mock.url());
    config.grace_period_s = 2;
    let mut gw = TestGateway::start(config).await;
    let (id, key) = new_user(&gw, "steady").await;

    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(LoadCounters::default());
    let (ok, failed) = (&counters.ok, &counters.failed);
    let load = start_load(&gw, &key, 4, stop.clone(), counters.clone());
    let mut streams = 0u64;
    for round in 0..3 {
        // Streams that are open when the upgrade starts, and last through the handoff.
        let open: Vec<_> = (0..3)
            .map(|_| {
                tokio::spawn(stream_completes(
                    gw.url("/v1/chat/completions"),
                    key.clone(),
                    12,
                ))
            })
            .collect();
        let before = ok.load(Ordering::SeqCst);
        assert!(
            wait_until(WAIT, || ok.load(Ordering::SeqCst) >= before + 5).await,
            "load is flowing before upgrade {round}"
        );
        let mut old = gw.upgrade().await;
        let old_pid = old.id();
        assert!(
            wait_until(WAIT, || common::has_exited(old_pid)).await,
            "the old process exits after draining"
        );
        let status = old.wait().unwrap();
        assert!(status.success(), "old process exit status {status:?}");
        for s in open {
            assert!(
                s.await.unwrap(),
                "a stream open across upgrade {round} was cut"
            );
            streams += 1;
        }
        assert!(
            eventually(WAIT, || async {
                gw.http
                    .get(gw.url("/status"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            })
            .await
        );
    }
    let before = ok.load(Ordering::SeqCst);
    assert!(wait_until(WAIT, || ok.load(Ordering::SeqCst) >= before + 5).await);
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed requests");
    eprintln!(
        "{} requests answered, {} connections retried",
        ok.load(Ordering::SeqCst),
        counters.retried.load(Ordering::SeqCst)
    );
    let sent = ok.load(Ordering::SeqCst) + streams;
    assert!(sent > 50, "{sent} requests");
    // Usage of requests that drained in old processes reaches the current one's store.
    let complete = eventually(WAIT, || async { usage_requests(&gw, &id).await == sent }).await;
    let last = usage_requests(&gw, &id).await;
    assert!(
        complete,
        "usage counts {last} requests, {sent} were answered"
    );
    let logs: String = std::fs::read_dir(&gw.dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("stderr"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert_eq!(
        logs.matches("storage handed over to the new process")
            .count(),
        3,
        "{logs}"
    );
}

#[tokio::test]
async fn sigterm_lets_streams_finish_flushes_usage_and_exits_zero() {
    let mock = MockUpstream::start().await;
    let mut config = GatewayConfig::new(&mock.url());
    config.grace_period_s = 4;
    let mut gw = TestGateway::start(config).await;
    let (id, key) = new_user(&gw, "stopper").await;
    let stream = tokio::spawn(stream_completes(
        gw.url("/v1/chat/completions"),
        key.clone(),
        12,
    ));
    assert!(mock.wait_for_requests(1, WAIT).await);
    let pid = gw.pid();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(stream.await.unwrap(), "the stream in flight finished");
    // New connections are refused once the stop has begun.
    assert!(
        eventually(WAIT, || async {
            fresh_client().get(gw.url("/status")).send().await.is_err()
        })
        .await
    );
    let exit = gw.wait_exit(WAIT).await;
    assert_eq!(exit, Some(0), "exit status");
    // The usage was flushed before exit: a new process finds it.
    gw.spawn().await;
    assert_eq!(usage_requests(&gw, &id).await, 1);
}

#[tokio::test]
async fn kill_9_under_load_keeps_keys_usage_and_leaves_no_idempotency_key_locked() {
    let mock = MockUpstream::start().await;
    let mut gw = TestGateway::start(GatewayConfig::new(&mock.url())).await;
    let (id, key) = new_user(&gw, "crashy").await;
    // Keys acknowledged just before the crash.
    let mut issued = Vec::new();
    for i in 0..5 {
        let (_, secret) = gw
            .create_key("crashy", json!({"label": format!("k{i}")}))
            .await;
        issued.push(secret);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(LoadCounters::default());
    let ok = &counters.ok;
    let load = start_load(&gw, &key, 4, stop.clone(), counters.clone());
    // Enough answers older than the loss window that losing them would show.
    assert!(
        wait_until(WAIT, || counters
            .answered_before(Instant::now(), CRASH_LOSS_WINDOW)
            >= 40)
        .await
    );
    // An Idempotency-Key whose request is in flight when the process dies.
    let stuck = {
        let url = gw.url("/v1/chat/completions");
        let key = key.clone();
        tokio::spawn(async move {
            fresh_client()
                .post(url)
                .bearer_auth(key)
                .header("idempotency-key", "crash-1")
                .header("x-mock-delay-ms", "5000")
                .json(&common::chat_body("gpt-4o-mini"))
                .send()
                .await
        })
    };
    assert!(
        eventually(WAIT, || async {
            mock.requests()
                .iter()
                .any(|r| r.header("x-mock-delay-ms") == Some("5000"))
        })
        .await
    );
    let answered_before_crash = ok.load(Ordering::SeqCst);
    let killed_at = Instant::now();
    gw.stop(); // SIGKILL
    stop.store(true, Ordering::SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let _ = stuck.await;
    gw.spawn().await;

    for secret in &issued {
        let (status, _) = gw.chat_reply(secret, "gpt-4o-mini").await;
        assert_eq!(status, 200, "a key acknowledged before the crash works");
    }
    // At most the last batch of usage is lost: everything answered before the loss window
    // is counted. Nothing is counted twice: at most the few requests the gateway finished
    // but the killed connections never delivered are counted without an answer.
    let durable = counters.answered_before(killed_at, CRASH_LOSS_WINDOW);
    let counted = usage_requests(&gw, &id).await;
    assert!(counted <= answered_before_crash + 8, "{counted}");
    assert!(
        counted >= durable,
        "usage {counted}, but {durable} of the {answered_before_crash} answers came over {CRASH_LOSS_WINDOW:?} before the kill"
    );
    // The key that was in flight is free again: the retry goes upstream and succeeds.
    let retry = fresh_client()
        .post(gw.url("/v1/chat/completions"))
        .bearer_auth(&key)
        .header("idempotency-key", "crash-1")
        .json(&common::chat_body("gpt-4o-mini"))
        .send()
        .await
        .unwrap();
    assert_eq!(retry.status(), 200);
    let body: Value = retry.json().await.unwrap();
    assert!(body["choices"].is_array(), "{body}");
}

#[test]
fn the_systemd_unit_has_what_production_needs_and_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/tollgate.service"
    ))
    .unwrap();
    for line in [
        "Type=forking",
        "PIDFile=/run/tollgate/tollgate.pid",
        "ExecStartPre=/usr/local/bin/tollgate check -c /etc/tollgate/tollgate.yaml",
        "ExecStart=/usr/local/bin/tollgate serve -c /etc/tollgate/tollgate.yaml -d",
        "ExecReload=/usr/local/bin/tollgate serve -c /etc/tollgate/tollgate.yaml -d -u",
        "ExecReload=/bin/kill -QUIT $MAINPID",
        "KillSignal=SIGTERM",
        "User=tollgate",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "StateDirectory=tollgate",
        "RuntimeDirectory=tollgate",
        "PrivateTmp=true",
        "LimitNOFILE=",
        "EnvironmentFile=/etc/tollgate/tollgate.env",
        "TimeoutStopSec=",
    ] {
        assert!(
            unit.lines().any(|l| l.trim().starts_with(line)),
            "missing: {line}"
        );
    }
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/tollgate.env.example"
    ))
    .unwrap();
    assert!(example.contains("TOLLGATE_ADMIN_TOKEN="));

    // `systemd-analyze verify` checks the syntax, and that the programs exist: point them at
    // the binary under test.
    let Ok(analyze) = which("systemd-analyze") else {
        panic!("systemd-analyze is missing: make test installs it (apt-get install systemd)");
    };
    let dir = common::temp_dir("unit");
    let path = dir.join("tollgate.service");
    std::fs::write(
        &path,
        unit.replace("/usr/local/bin/tollgate", env!("CARGO_BIN_EXE_tollgate")),
    )
    .unwrap();
    let out = std::process::Command::new(analyze)
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    assert!(
        !stderr.contains("tollgate.service"),
        "warnings about the unit: {stderr}"
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join(program))
                .find(|p| p.is_file())
        })
        .ok_or(())
}
