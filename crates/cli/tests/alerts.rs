//! Built-in alerts end to end (issue 12): a real daemon, real workload processes, the SQLite
//! file, the SSE stream, `ttmem alerts`, and notifiers that reach a receiver that is up, down,
//! slow or failing, and a real Alertmanager.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A rule that fires as soon as a workload holds DRAM, and clears when it stops.
const DRAM_RULE: &str = r#"
[alerts]
interval_s = 1
default_rules = false

[[alerts.rules]]
name = "DramUsed"
kind = "threshold"
category = "DRAM"
above_percent = 10
clear_below_percent = 5
for_s = 1
severity = "critical"
"#;

fn alerts(d: &Daemon) -> Value {
    d.get("/api/v1/alerts")
}

fn firing(d: &Daemon) -> Vec<Value> {
    alerts(d)["active"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["state"] == "firing")
        .cloned()
        .collect()
}

/// Reads `path`'s SSE stream until `needle` shows, returning what came.
fn stream_until(d: &Daemon, needle: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 8192];
    let start = Instant::now();
    while !seen.contains(needle) {
        assert!(start.elapsed() < Duration::from_secs(15), "no {needle:?} in {seen}");
        let n = s.read(&mut buf).unwrap();
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    seen
}

#[test]
fn a_threshold_alert_fires_shows_everywhere_resolves_and_is_kept_in_sqlite() {
    let d = Daemon::start_with(DRAM_RULE);
    assert_eq!(alerts(&d)["rules"][0]["name"], "DramUsed");
    let h = hold(&d.regions, "training", "n150", 0, 3);
    wait_until(|| !firing(&d).is_empty());
    let a = &firing(&d)[0];
    assert_eq!(a["labels"]["category"], "DRAM");
    assert_eq!(a["labels"]["device"], "0");
    assert_eq!(a["severity"], "critical");
    let active_since = a["active_since_unix_ns"].as_u64().unwrap();
    let firing_since = a["firing_since_unix_ns"].as_u64().unwrap();
    assert!(firing_since >= active_since + 1_000_000_000, "held for_s first: {a}");
    assert!(a["summary"].as_str().unwrap().contains("DRAM of chip 0"), "{a}");

    // ttmem alerts: the listing, exit 1 while it fires; --json is the API's answer.
    let listing = || {
        ttmem(&d.regions)
            .arg("alerts")
            .arg("--api-socket")
            .arg(&d.socket)
            .output()
            .unwrap()
    };
    let out = listing();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("1 firing, 0 pending, 1 rule"), "{text}");
    assert!(text.contains("FIRING   critical DramUsed"), "{text}");
    let json = ttmem(&d.regions)
        .args(["alerts", "--json", "--api-socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["active"][0]["rule"], "DramUsed");

    // The stream starts with the alerts that are active.
    let seen = stream_until(&d, "event: alert");
    assert!(seen.contains("\"rule\":\"DramUsed\""), "{seen}");

    // The workload ends: its bytes leave the chip, and the alert resolves.
    drop(h);
    wait_until(|| firing(&d).is_empty() && !alerts(&d)["resolved"].as_array().unwrap().is_empty());
    let r = &alerts(&d)["resolved"][0];
    assert_eq!(r["state"], "resolved");
    assert_eq!(r["firing_since_unix_ns"].as_u64(), Some(firing_since));
    assert_eq!(listing().status.code(), Some(0));

    // The SQLite file keeps the alert's whole life.
    let db = d.regions.parent().unwrap().join("ttmem.db");
    let row = || {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row(
            "SELECT state, firing_since_unix_ns, resolved_unix_ns, labels FROM alerts WHERE rule = 'DramUsed'",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<i64>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, String>(3)?,
                ))
            },
        )
        .ok()
    };
    wait_until(|| row().is_some_and(|r| r.0 == "resolved"));
    let (_, fired, resolved, labels) = row().unwrap();
    assert_eq!(fired, Some(firing_since as i64));
    assert!(resolved.unwrap() > fired.unwrap());
    assert!(labels.contains("\"category\":\"DRAM\""), "{labels}");
}

#[test]
fn an_alert_firing_when_the_daemon_stops_keeps_its_start_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let regions = dir.path().join("regions");
    let socket = dir.path().join("api.sock");
    let h = hold(&regions, "training", "n150", 0, 3);
    let start = |dir: &std::path::Path| {
        let mut d = Daemon {
            child: spawn_serve_with(&regions, &socket, dir, &dir.join("tt-metal"), DRAM_RULE),
            socket: socket.clone(),
            regions: regions.clone(),
            _dir: tempfile::tempdir().unwrap(),
        };
        d.wait_ready();
        d
    };
    let mut d = start(dir.path());
    wait_until(|| !firing(&d).is_empty());
    let since = firing(&d)[0]["active_since_unix_ns"].clone();
    // SIGTERM: the daemon flushes to the database as it stops.
    // SAFETY: kill sends a signal to the daemon child we started; no memory is involved.
    assert_eq!(unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) }, 0);
    d.child.wait().unwrap();
    let d = start(dir.path());
    wait_until(|| !firing(&d).is_empty());
    assert_eq!(firing(&d)[0]["active_since_unix_ns"], since);
    drop(h);
}

/// A receiver of webhooks: answers each POST with the next status (the last one repeats),
/// after `delay`, and keeps the bodies.
struct Receiver {
    port: u16,
    bodies: Arc<Mutex<Vec<Value>>>,
    requests: Arc<Mutex<usize>>,
}

fn receiver(statuses: Vec<u16>, delay: Duration) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let requests = Arc::new(Mutex::new(0usize));
    let (b, r) = (bodies.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; length];
            if reader.read_exact(&mut body).is_err() {
                continue;
            }
            let n = {
                let mut r = r.lock().unwrap();
                *r += 1;
                *r
            };
            let status = statuses[(n - 1).min(statuses.len() - 1)];
            std::thread::sleep(delay);
            if status == 200 {
                b.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    Receiver { port, bodies, requests }
}

fn with_notifier(notifier: &str) -> String {
    format!("{DRAM_RULE}\n[[alerts.notify]]\n{notifier}\n")
}

#[test]
fn a_webhook_that_fails_twice_gets_the_alert_on_the_third_try() {
    let r = receiver(vec![500, 503, 200], Duration::ZERO);
    let d = Daemon::start_with(&with_notifier(&format!(
        "kind = \"webhook\"\nurl = \"http://127.0.0.1:{}/hook\"\nretries = 3",
        r.port
    )));
    let _h = hold(&d.regions, "training", "n150", 0, 3);
    wait_until(|| !r.bodies.lock().unwrap().is_empty());
    let body = r.bodies.lock().unwrap()[0].clone();
    assert_eq!(body["alert"]["rule"], "DramUsed");
    assert_eq!(body["alert"]["state"], "firing");
    assert_eq!(*r.requests.lock().unwrap(), 3);
    assert_eq!(alerts(&d)["notifications_failed"], 0);
}

#[test]
fn a_notifier_that_is_down_or_slow_never_holds_the_daemon_up() {
    // Down: nothing listens on the port. Slow: answers after 30 s, past the 5 s timeout, so each
    // delivery takes it over 16 s of tries.
    let down = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let slow = receiver(vec![200], Duration::from_secs(30));
    let config = format!(
        "{DRAM_RULE}\n[[alerts.notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{down}/\"\nretries = 1\n\n[[alerts.notify]]\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/\"\ntimeout_s = 5\nretries = 2\n",
        slow.port
    );
    let d = Daemon::start_with(&config);
    let h = hold(&d.regions, "training", "n150", 0, 3);
    wait_until(|| !firing(&d).is_empty());
    // While the notifiers retry, the collector goes on: the alert resolves on time and every
    // request is answered at once.
    drop(h);
    let started = Instant::now();
    wait_until(|| firing(&d).is_empty());
    assert!(started.elapsed() < Duration::from_secs(8), "{:?}", started.elapsed());
    for _ in 0..20 {
        let t = Instant::now();
        d.get("/api/v1/devices");
        assert!(t.elapsed() < Duration::from_millis(500));
    }
    // Each gave up after its bounded retries, and said so.
    wait_until(|| alerts(&d)["notifications_failed"].as_u64() >= Some(2));
    assert!(*slow.requests.lock().unwrap() >= 1);
}

#[test]
fn an_exec_notifier_runs_the_command_with_the_alert() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let d = Daemon::start_with(&with_notifier(&format!(
        "kind = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo \\\"$TTMEM_ALERT_RULE $TTMEM_ALERT_STATE\\\" >> {}; cat >> {}.json\"]",
        log.display(),
        log.display()
    )));
    let h = hold(&d.regions, "training", "n150", 0, 3);
    wait_until(|| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("DramUsed firing")));
    drop(h);
    wait_until(|| std::fs::read_to_string(&log).is_ok_and(|t| t.contains("DramUsed resolved")));
    let json = std::fs::read_to_string(dir.path().join("log.json")).unwrap();
    let first: Value = serde_json::Deserializer::from_str(&json)
        .into_iter()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(first["alert"]["labels"]["category"], "DRAM");
}

#[test]
fn a_config_with_a_bad_rule_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ttmem.toml");
    std::fs::write(
        &config,
        "http = \"off\"\n\n[alerts]\n\n[[alerts.rules]]\nname = \"hot\"\nkind = \"threshold\"\nabove_percent = 80\nclear_below_percent = 90\n",
    )
    .unwrap();
    for args in [vec!["serve", "--check-config"], vec!["serve"]] {
        let out = hermetic().args(&args).arg("--config").arg(&config).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("line 5"), "{err}");
        assert!(
            err.contains(
                "alert rule \"hot\" (threshold): clear_below_percent (90) must not be above above_percent (80)"
            ),
            "{err}"
        );
    }
    std::fs::write(
        &config,
        "[alerts]\n[[alerts.notify]]\nkind = \"webhook\"\nurl = \"https://x\"\n",
    )
    .unwrap();
    let out = hermetic()
        .args(["serve", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("only http:// is supported"));
    // The built-in rules when the file names none.
    std::fs::write(&config, "http = \"off\"\n").unwrap();
    let out = hermetic()
        .args(["serve", "--check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for rule in [
        "TtmemDramHigh",
        "TtmemDramFullSoon",
        "TtmemFragmented",
        "TtmemLeftBehind",
        "TtmemLeakSuspect",
        "TtmemEventLoss",
    ] {
        assert!(text.contains(rule), "{text}");
    }
}

#[test]
fn a_real_alertmanager_receives_the_alert_and_sees_it_resolved() {
    if !have_tools(
        &["prometheus-alertmanager"],
        "a_real_alertmanager_receives_the_alert_and_sees_it_resolved",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let cluster = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let am_config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &am_config,
        "route:\n  receiver: none\n  group_wait: 1s\nreceivers:\n  - name: none\n",
    )
    .unwrap();
    let mut am = std::process::Command::new("prometheus-alertmanager")
        .arg(format!("--config.file={}", am_config.display()))
        .arg(format!("--storage.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--cluster.listen-address=127.0.0.1:{cluster}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let am_ep = ttmem_apiclient::Endpoint::Tcp(format!("127.0.0.1:{port}"));
    let am_alerts = || ttmem_apiclient::get_json::<Value>(&am_ep, "/api/v2/alerts");
    wait_until(|| am_alerts().is_ok());
    let d = Daemon::start_with(&with_notifier(&format!(
        "kind = \"alertmanager\"\nurl = \"http://127.0.0.1:{port}\"\nresend_s = 2"
    )));
    let h = hold(&d.regions, "training", "n150", 0, 3);
    let ours = || {
        am_alerts()
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == "DramUsed")
            .cloned()
            .collect::<Vec<Value>>()
    };
    wait_until(|| !ours().is_empty());
    let a = &ours()[0];
    assert_eq!(a["labels"]["category"], "DRAM");
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["status"]["state"], "active");
    assert!(a["annotations"]["summary"].as_str().unwrap().contains("DRAM of chip 0"));
    // The workload ends: the resolution reaches Alertmanager, which stops listing it.
    drop(h);
    wait_until(|| ours().is_empty());
    let _ = am.kill();
    let _ = am.wait();
}
