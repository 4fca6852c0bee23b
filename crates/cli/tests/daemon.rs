//! End-to-end tests of `ttmem serve`: a real daemon, real workload processes, the real API.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use ttmem_apiclient::{ApiError, Endpoint, get_json};

/// Waits until the daemon has drained a quiescent workload's last events (its counters then
/// equal the model's), then asserts it.
fn wait_matches_model(d: &Daemon, h: &Held) {
    let matches = |p: &Value| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| assert_matches_model(p, &h.summary))).is_ok()
    };
    let start = Instant::now();
    while !d.process(pid(h)).is_some_and(|p| matches(&p)) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_matches_model(&d.process(pid(h)).unwrap(), &h.summary);
}

fn total_buffers(summary: &Value) -> u64 {
    summary["chips"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["categories"].as_array().unwrap())
        .map(|c| c["buffers"].as_u64().unwrap())
        .sum()
}

#[test]
fn api_totals_equal_the_models_and_a_killed_workload_leaves_within_a_second() {
    let d = Daemon::start();
    let mut inference = hold(&d.regions, "llm-inference", "n300", 0, 20);
    let training = hold(&d.regions, "training", "n150", 2, 20);
    for h in [&inference, &training] {
        wait_matches_model(&d, h);
    }
    // Device totals are the models' allocator statistics summed over the chip's processes.
    let devices = d.get("/api/v1/devices")["devices"].clone();
    assert_eq!(devices.as_array().unwrap().len(), 3);
    assert_eq!(
        devices[0]["categories"][0]["used"],
        inference.summary["chips"][0]["categories"][0]["allocated"]
    );
    assert_eq!(
        devices[2]["categories"][0]["used"],
        training.summary["chips"][0]["categories"][0]["allocated"]
    );

    // The ledger holds every live allocation, with tags, and agrees on free space.
    let page = d.get(&format!(
        "/api/v1/processes/{}/allocations?sort=size&limit=5",
        pid(&inference)
    ));
    assert_eq!(page["total"].as_u64().unwrap(), total_buffers(&inference.summary));
    assert_eq!(page["complete"], true);
    assert!(page["items"][0]["size"].as_u64() >= page["items"][4]["size"].as_u64());
    assert!(page["items"][0]["tag"].as_str().unwrap().starts_with("layers."));
    let fit = d.get("/api/v1/fit?device=0&category=DRAM&bytes=1073741824");
    assert_eq!(
        fit["largest_free_per_bank"],
        inference.summary["chips"][0]["categories"][0]["largest_free_per_bank"]
    );
    assert_eq!(fit["fits"], true);
    let huge = d.get("/api/v1/fit?device=0&category=DRAM&bytes=100000000000");
    assert_eq!(huge["fits"], false);
    assert_eq!(huge["best_gaps"][0]["below"]["pid"], pid(&inference));
    let frag = d.get("/api/v1/devices/0/fragmentation");
    assert!(frag["categories"].as_array().unwrap().iter().any(|c| c["name"] == "L1"));

    // ps asks the daemon.
    let ps = hermetic()
        .args(["ps", "--json", "--api-socket"])
        .arg(&d.socket)
        .env("TTMEM_DIR", &d.regions)
        .output()
        .unwrap();
    let ps: Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(ps["source"], "daemon");
    assert_eq!(ps["devices"], devices);

    // SIGKILL: within a second the memory leaves the totals and is kept as left behind.
    let killed = pid(&inference);
    inference.child.kill().unwrap();
    let t0 = Instant::now();
    inference.child.wait().unwrap();
    wait_until(|| d.get("/api/v1/devices")["devices"][0]["categories"][0]["used"] == 0);
    assert!(t0.elapsed() < Duration::from_secs(1), "took {:?}", t0.elapsed());
    let dead = d.process(killed).unwrap();
    assert_eq!(dead["state"], "exited");
    assert_eq!(dead["left_behind"], true);
    assert_matches_model(&dead, &inference.summary);
    let rec = d.get(&format!("/api/v1/processes/{killed}/events"));
    assert_eq!(rec["state"]["state"], "exited");
    let events = rec["events"].as_array().unwrap();
    assert!(
        !events.is_empty() && events.len() <= 1024,
        "the default flight recorder: {}",
        events.len()
    );
    assert!(events.iter().any(|e| e["kind"] == "alloc" && e["category"] == "DRAM"));
    wait_until(|| regions_in(&d.regions) == 1); // only training's remains
    assert_eq!(
        d.get(&format!("/api/v1/processes/{killed}/allocations"))["total"]
            .as_u64()
            .unwrap(),
        total_buffers(&inference.summary)
    );
    let stats = d.get("/api/v1/stats");
    assert_eq!(stats["collector"]["deaths"], 1);
    assert!(stats["bytes_per_live_allocation"].as_f64().unwrap() <= 64.0);
}

#[test]
fn the_daemon_survives_kill_9_and_rebuilds_from_the_rings() {
    let mut d = Daemon::start();
    let a = hold(&d.regions, "llm-inference", "n150", 0, 10);
    let b = hold(&d.regions, "bursty", "n150", 1, 1);
    wait_until(|| d.process(pid(&a)).is_some() && d.process(pid(&b)).is_some());
    // kill -9 the daemon while the workloads run, then start it again.
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    assert!(d.socket.exists(), "a killed daemon leaves its socket behind");
    let c = hold(&d.regions, "training", "n150", 2, 5); // starts while no daemon runs
    d.child = spawn_serve(&d.regions, &d.socket, d._dir.path(), &d._dir.path().join("tt-metal"));
    d.wait_ready();
    for h in [&a, &b, &c] {
        wait_matches_model(&d, h);
        assert_eq!(d.process(pid(h)).unwrap()["state"], "running");
        let page = d.get(&format!("/api/v1/processes/{}/allocations?limit=1", pid(h)));
        assert_eq!(
            page["total"].as_u64().unwrap(),
            total_buffers(&h.summary),
            "ledger rebuilt from the ring"
        );
    }
}

#[test]
fn api_errors_are_json_with_a_reason() {
    let d = Daemon::start();
    let ep = d.ep();
    let refused = |path: &str| match get_json::<Value>(&ep, path) {
        Err(ApiError::Refused { status, reason }) => (status, reason),
        other => panic!("{path}: expected an error, got {other:?}"),
    };
    assert_eq!(refused("/api/v1/nope").0, 404);
    assert_eq!(
        refused("/api/v1/processes/999999/allocations"),
        (404, "no process with pid 999999".into())
    );
    let (status, reason) = refused("/api/v1/fit?device=0");
    assert_eq!(status, 400);
    assert!(reason.contains("fit needs device, category and bytes"));
    assert_eq!(refused("/api/v1/fit?device=7&category=DRAM&bytes=1").0, 404);
    assert_eq!(refused("/api/v1/fit?device=x&category=DRAM&bytes=1").0, 400);
    let h = hold(&d.regions, "bursty", "n150", 0, 1);
    wait_until(|| d.process(pid(&h)).is_some());
    let (status, reason) = refused(&format!("/api/v1/processes/{}/allocations?sort=color", pid(&h)));
    assert_eq!(
        (status, reason.as_str()),
        (400, "unknown sort \"color\" (address, size or age)")
    );
    assert_eq!(
        refused("/api/v1/fit?device=0&category=GPU&bytes=1"),
        (400, "the device has no category GPU".into())
    );
    // Every refusal is a JSON object with a reason, parse errors included, and validation is
    // the same everywhere.
    let json_error = |path: &str| {
        let (status, body) = ttmem_apiclient::get(&ep, path).unwrap();
        let v: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
        (
            status,
            v["error"].as_str().unwrap_or_else(|| panic!("{path}: {v}")).to_string(),
        )
    };
    let (status, reason) = json_error("/api/v1/fit?device=x&category=DRAM&bytes=1");
    assert_eq!(status, 400);
    assert!(reason.starts_with("bad query"), "{reason}");
    let (status, reason) = json_error("/api/v1/processes/abc/allocations");
    assert_eq!(status, 400);
    assert!(reason.starts_with("bad path"), "{reason}");
    assert_eq!(
        json_error("/api/v1/maps?category=GPU"),
        (400, "no device has a category \"GPU\"".into())
    );
    assert_eq!(
        json_error("/api/v1/history?device=0&category=GPU"),
        (404, "device 0 has no category \"GPU\"".into())
    );
    // A method the API does not serve.
    use std::io::{Read, Write};
    let mut sock = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    sock.write_all(b"POST /api/v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(
        answer.contains("application/json") && answer.contains("use GET"),
        "{answer}"
    );
}

#[test]
fn hostile_regions_are_refused_and_sigterm_stops_cleanly() {
    let mut d = Daemon::start();
    std::fs::write(d.regions.join("junk.ttmem"), vec![0x5Au8; 8192]).unwrap();
    let h = hold(&d.regions, "bursty", "n150", 0, 1);
    wait_until(|| d.process(pid(&h)).is_some());
    wait_until(|| !d.get("/api/v1/snapshot")["skipped"].as_array().unwrap().is_empty());
    let snap = d.get("/api/v1/snapshot");
    assert_eq!(
        snap["skipped"][0]["reason"], "not a ttmem region (wrong magic)",
        "{}",
        snap["skipped"]
    );
    assert_eq!(d.get("/api/v1/health")["status"], "ok");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.child.id() as i32, libc::SIGTERM) };
    let status = d.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!d.socket.exists(), "the socket is removed on a clean stop");
}

#[test]
fn a_second_daemon_on_the_same_socket_is_refused() {
    let d = Daemon::start();
    let out = hermetic()
        .args(["serve", "--no-http", "--no-legacy-socket", "--dir"])
        .arg(&d.regions)
        .arg("--api-socket")
        .arg(&d.socket)
        .env("XDG_CONFIG_HOME", d._dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another ttmem daemon is already serving on"));
}

#[test]
fn history_and_process_records_survive_kill_9_in_the_sqlite_file() {
    let mut d = Daemon::start();
    let h = hold(&d.regions, "llm-inference", "n150", 0, 5);
    wait_matches_model(&d, &h);
    let mut victim = hold(&d.regions, "bursty", "n150", 1, 1);
    wait_matches_model(&d, &victim);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    wait_until(|| d.process(pid(&victim)).is_some_and(|p| p["state"] == "exited"));
    // A few seconds of history, flushed every second, then kill -9.
    std::thread::sleep(Duration::from_millis(3500));
    let before = d.get("/api/v1/history?device=0&category=DRAM&resolution=1s");
    let points = before["points"].as_array().unwrap().clone();
    assert!(!points.is_empty());
    assert_eq!(
        points.last().unwrap()[1],
        h.summary["chips"][0]["categories"][0]["allocated"]
    );
    let per_process = d.get(&format!("/api/v1/history?device=0&category=DRAM&pid={}", pid(&h)));
    assert_eq!(
        per_process["points"].as_array().unwrap().last().unwrap()[1],
        h.summary["chips"][0]["categories"][0]["allocated"]
    );
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let restart = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    d.child = spawn_serve(&d.regions, &d.socket, d._dir.path(), &d._dir.path().join("tt-metal"));
    d.wait_ready();
    let after = d.get(&format!(
        "/api/v1/history?device=0&category=DRAM&resolution=1s&to={}",
        restart - 2
    ));
    let old: Vec<&Value> = after["points"].as_array().unwrap().iter().collect();
    assert!(
        !old.is_empty(),
        "history from before the kill is in the database: {after}"
    );
    assert_eq!(
        old.last().unwrap()[1],
        h.summary["chips"][0]["categories"][0]["allocated"]
    );
    let records = d.get("/api/v1/process-records")["processes"].clone();
    let dead = records
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["pid"] == pid(&victim))
        .expect("the dead process is remembered");
    assert!(dead["exited_unix_ns"].is_u64());
    let left: u64 = dead["left_behind"][0]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["bytes"].as_u64().unwrap())
        .sum();
    assert!(left > 0, "what it left behind is recorded: {dead}");
    assert!(records.as_array().unwrap().iter().any(|r| r["pid"] == pid(&h)));
    assert_eq!(d.get("/api/v1/health")["database"]["ok"], true);
}

#[test]
fn the_stream_sends_the_state_then_changes() {
    use std::io::{Read, Write};
    let d = Daemon::start();
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /api/v1/stream HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let mut read_until = |s: &mut std::os::unix::net::UnixStream, needle: &str| {
        let start = Instant::now();
        while !seen.contains(needle) {
            assert!(start.elapsed() < Duration::from_secs(15), "no {needle:?} in {seen}");
            let n = s.read(&mut buf).unwrap();
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        seen.clone()
    };
    let first = read_until(&mut s, "event: update");
    assert!(first.contains("text/event-stream"), "{first}");
    let h = hold(&d.regions, "training", "n150", 0, 1);
    let text = read_until(&mut s, &format!("\"pid\":{}", pid(&h)));
    let line = text
        .lines()
        .filter(|l| l.starts_with("data:"))
        .find(|l| l.contains(&format!("\"pid\":{}", pid(&h))))
        .unwrap();
    let v: Value = serde_json::from_str(line.trim_start_matches("data:").trim()).unwrap();
    assert_eq!(v["process_changes"][0]["state"], "running");
    assert_eq!(v["process_changes"][0]["name"], "sim:training");
}

#[test]
fn history_errors_are_clear() {
    let d = Daemon::start();
    let ep = d.ep();
    let refused = |path: &str| match get_json::<Value>(&ep, path) {
        Err(ApiError::Refused { status, reason }) => (status, reason),
        other => panic!("{path}: expected an error, got {other:?}"),
    };
    assert_eq!(refused("/api/v1/history?device=0").0, 400);
    let h = hold(&d.regions, "bursty", "n150", 0, 1);
    wait_until(|| d.process(pid(&h)).is_some());
    assert_eq!(
        refused("/api/v1/history?device=0&category=DRAM&resolution=1h"),
        (400, "unknown resolution \"1h\" (1s, 10s or 1m)".into())
    );
    assert_eq!(refused("/api/v1/history?device=0&category=DRAM&from=10&to=5").0, 400);
    assert_eq!(refused("/api/v1/history?device=9&category=DRAM").0, 404);
    assert_eq!(refused("/api/v1/history?device=0&category=DRAM&pid=1").0, 404);
}

#[test]
fn ring_overflow_is_reported_while_totals_stay_exact() {
    let d = Daemon::start();
    // A 16-event ring and bursts of hundreds of allocations: the daemon cannot keep up.
    let mut child = hermetic()
        .args([
            "sim",
            "run",
            "--profile",
            "bursty",
            "--shape",
            "n150",
            "--step-ms",
            "1",
            "--hold-after",
            "60",
        ])
        .env("TTMEM_DIR", &d.regions)
        .env("TTMEM_RING_EVENTS", "16")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let h = Held {
        summary: serde_json::from_str(&line).unwrap(),
        child,
    };
    wait_matches_model(&d, &h);
    let page = d.get(&format!("/api/v1/processes/{}/allocations?limit=1", pid(&h)));
    assert_eq!(page["complete"], false, "{page}");
    assert!(page["events_lost"].as_u64().unwrap() > 0);
    let p = d.process(pid(&h)).unwrap();
    assert!(p["events"]["lost"].as_u64().unwrap() > 0, "{}", p["events"]);
    assert!(d.get("/api/v1/stats")["collector"]["events_lost"].as_u64().unwrap() > 0);
}

/// A daemon serving TCP on a free loopback port besides its Unix socket, with `config` as its
/// config file.
fn serve_tcp(config: &str) -> (Daemon, u16) {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config_file = dir.path().join("ttmem.toml");
    std::fs::write(&config_file, config).unwrap();
    let (regions, socket) = (dir.path().join("regions"), dir.path().join("api.sock"));
    let child = hermetic()
        .args(["serve", "--config"])
        .arg(&config_file)
        .args(["--no-legacy-socket", "--http", &format!("127.0.0.1:{port}"), "--dir"])
        .arg(&regions)
        .arg("--api-socket")
        .arg(&socket)
        .arg("--db")
        .arg(dir.path().join("db"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut d = Daemon {
        child,
        socket,
        regions,
        _dir: dir,
    };
    d.wait_ready();
    (d, port)
}

#[test]
fn the_same_api_answers_over_tcp_which_shows_detail_only_with_the_token() {
    use std::os::unix::fs::PermissionsExt;
    let token_dir = tempfile::tempdir().unwrap();
    let token = token_dir.path().join("token");
    std::fs::write(&token, "let-me-see\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (mut d, port) = serve_tcp(&format!("api_token_file = {:?}\n", token.display().to_string()));
    let tcp = Endpoint::Tcp(format!("127.0.0.1:{port}"));
    let h = hold(&d.regions, "llm-inference", "n150", 0, 2);
    wait_matches_model(&d, &h);
    let over_tcp: Value = get_json(&tcp, "/api/v1/devices").unwrap();
    assert_eq!(over_tcp, d.get("/api/v1/devices"), "one API, two transports");
    // TCP names no peer: what every user sees, no detail.
    let leaks: Value = get_json(&tcp, "/api/v1/leaks?min_age_s=0&limit=5").unwrap();
    assert_eq!(leaks["allocations"], serde_json::json!([]));
    let (status, body) = ttmem_apiclient::get(&tcp, &format!("/api/v1/processes/{}/allocations", pid(&h))).unwrap();
    let reason = String::from_utf8_lossy(&body);
    assert_eq!(status, 403, "{reason}");
    assert!(
        reason.contains("shown only to its owner (root) and root") && reason.contains("API token"),
        "{reason}"
    );
    let listed: Value = get_json(&tcp, "/api/v1/processes").unwrap();
    assert_eq!(
        listed["processes"][0]["pid"],
        pid(&h),
        "the process list is for everyone"
    );
    assert_eq!(listed["processes"][0]["cmdline"], "", "command lines are not");
    // With the operator's token, everything.
    let with_token = |path: &str| -> (u16, Value) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer let-me-see\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).unwrap();
        let (status, body) = ttmem_apiclient::parse_response(&raw).unwrap();
        (status, serde_json::from_slice(&body).unwrap())
    };
    let (status, leaks) = with_token("/api/v1/leaks?min_age_s=0&limit=5");
    assert_eq!(status, 200);
    let items = leaks["allocations"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    assert!(items.iter().all(|a| a["pid"] == pid(&h)));
    assert_eq!(with_token(&format!("/api/v1/processes/{}/allocations", pid(&h))).0, 200);
    // Readers present $TTMEM_API_TOKEN.
    let ps = |token: Option<&str>| -> Value {
        let mut cmd = hermetic();
        cmd.args(["ps", "--json", "--url"])
            .arg(format!("http://127.0.0.1:{port}"))
            .env("TTMEM_DIR", &d.regions);
        if let Some(t) = token {
            cmd.env("TTMEM_API_TOKEN", t);
        }
        serde_json::from_slice(&cmd.output().unwrap().stdout).unwrap()
    };
    let public = ps(None);
    assert_eq!(public["source"], "daemon");
    assert_eq!(public["processes"][0]["cmdline"], "");
    let full = ps(Some("let-me-see"));
    assert!(
        full["processes"][0]["cmdline"].as_str().unwrap().contains("sim run"),
        "{full}"
    );
    d.child.kill().unwrap();
    let _ = d.child.wait();
}

#[test]
fn snapshots_can_be_light_and_conditional() {
    let d = Daemon::start();
    let h = hold(&d.regions, "bursty", "n150", 0, 1);
    wait_matches_model(&d, &h);
    let light = d.get("/api/v1/snapshot?detail=totals");
    let p = &light["processes"][0];
    assert!(p["devices"].as_array().unwrap().is_empty(), "{p}");
    assert_eq!(p["device_ids"], serde_json::json!([0]));
    assert_eq!(p["totals"], d.process(pid(&h)).unwrap()["totals"]);
    // An unchanged snapshot is not sent again. The generation also moves once a second (ages
    // change), so a few tries may be needed to ask twice within one.
    let ep = d.ep();
    let mut not_modified = false;
    for _ in 0..20 {
        let (s1, tag, body1) = ttmem_apiclient::get_conditional(&ep, "/api/v1/snapshot?detail=totals", None).unwrap();
        assert_eq!(s1, 200);
        assert!(!body1.is_empty() && tag.is_some());
        let (s2, _, body2) =
            ttmem_apiclient::get_conditional(&ep, "/api/v1/snapshot?detail=totals", tag.as_deref()).unwrap();
        if s2 == 304 {
            assert!(body2.is_empty());
            not_modified = true;
            break;
        }
    }
    assert!(not_modified, "a matching If-None-Match gets 304");
    match get_json::<Value>(&ep, "/api/v1/snapshot?detail=all") {
        Err(ApiError::Refused { status, reason }) => assert_eq!(
            (status, reason.as_str()),
            (400, "unknown detail \"all\" (full or totals)")
        ),
        other => panic!("{other:?}"),
    }
    let maps = d.get("/api/v1/maps?category=DRAM&cells=16");
    assert_eq!(maps["maps"][0]["cells"].as_array().unwrap().len(), 16);
}

#[test]
fn the_api_socket_path_never_costs_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let precious = dir.path().join("precious.txt");
    std::fs::write(&precious, b"keep me").unwrap();
    let out = hermetic()
        .args(["serve", "--no-http", "--no-legacy-socket", "--dir"])
        .arg(dir.path().join("regions"))
        .arg("--api-socket")
        .arg(&precious)
        .arg("--db")
        .arg(dir.path().join("db"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists and is not a socket"));
    assert_eq!(std::fs::read(&precious).unwrap(), b"keep me");
}

#[test]
fn idle_and_slow_clients_are_closed_and_connections_are_capped_per_listener_and_user() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::unix::net::UnixStream;
    let (d, port) = serve_tcp("api_header_timeout_s = 1\napi_max_connections = 4\napi_max_connections_per_user = 3\n");
    let closed_within = |mut s: UnixStream, limit: Duration| {
        s.set_read_timeout(Some(limit + Duration::from_secs(5))).unwrap();
        let t0 = Instant::now();
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        (n, t0.elapsed())
    };
    // A client that sends nothing, and one that trickles its headers (slowloris), are closed
    // once the header timeout passes.
    let idle = UnixStream::connect(&d.socket).unwrap();
    let (n, took) = closed_within(idle, Duration::from_secs(1));
    assert_eq!(n, 0, "closed without an answer");
    assert!(took < Duration::from_secs(4), "an idle connection stayed {took:?}");
    let mut slow = UnixStream::connect(&d.socket).unwrap();
    let t0 = Instant::now();
    let mut closed_after = None;
    for b in b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nX-Slow: "
        .iter()
        .cycle()
        .take(60)
    {
        if slow.write_all(&[*b]).is_err() {
            closed_after = Some(t0.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let closed_after = closed_after.expect("a client trickling its headers for 6 s was kept");
    assert!(closed_after < Duration::from_secs(4), "{closed_after:?}");

    // TCP: four at once; the fifth is told why and closed; the Unix socket still answers.
    let tcp_idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut fifth = TcpStream::connect(("127.0.0.1", port)).unwrap();
    fifth.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut answer = String::new();
    let _ = fifth.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("application/json") && answer.contains("too many connections"),
        "{answer}"
    );
    assert_eq!(
        d.get("/api/v1/health")["status"],
        "ok",
        "the Unix socket is its own listener"
    );
    drop(tcp_idle);
    // Places are given back when connections close.
    wait_until(|| get_json::<Value>(&Endpoint::Tcp(format!("127.0.0.1:{port}")), "/api/v1/health").is_ok());

    // The Unix socket: one user (this one) holds at most three at once.
    let held: Vec<UnixStream> = (0..3).map(|_| UnixStream::connect(&d.socket).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let (status, body) = ttmem_apiclient::get(&d.ep(), "/api/v1/health").unwrap();
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("from your user"));
    drop(held);
    wait_until(|| get_json::<Value>(&d.ep(), "/api/v1/health").is_ok());
}

#[test]
fn a_bursty_workload_loses_no_event_with_the_default_ring() {
    // Issue 11, item 6: bursts of some 3,200 allocations on 8 chips once a second, freed 200 ms
    // later. The default ring holds a burst and its frees, and the daemon drains at the ring's
    // pace: nothing is lost and the detail stays complete, even on a busy machine. (A Galaxy's
    // bursts, four times larger, are measured by `ttmem bench load` and the closing notes.)
    let d = Daemon::start();
    let mut child = hermetic()
        .args([
            "sim",
            "run",
            "--profile",
            "bursty",
            "--shape",
            "t3000",
            "--duration",
            "4",
        ])
        .env("TTMEM_DIR", &d.regions)
        .env_remove("TTMEM_RING_EVENTS")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = None;
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() && start.elapsed() < Duration::from_secs(30) {
        if let Some(p) = d.get("/api/v1/processes")["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "sim:bursty")
        {
            seen = Some(p["pid"].as_u64().unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(child.wait().unwrap().success());
    let pid = seen.expect("the workload was listed while it ran");
    let p = d.process(pid).unwrap();
    assert!(p["events"]["written"].as_u64().unwrap() > 10_000, "{}", p["events"]);
    assert_eq!(p["events"]["lost"], 0, "{}", p["events"]);
    assert_eq!(p["events"]["ring_capacity"], 16384);
    assert_eq!(d.get("/api/v1/stats")["collector"]["events_lost"], 0);
}

#[test]
fn metrics_match_the_api_in_both_text_formats() {
    let d = Daemon::start();
    let h = hold(&d.regions, "llm-inference", "n300", 0, 3);
    wait_matches_model(&d, &h);
    let (status, body) = ttmem_apiclient::get(&d.ep(), "/metrics").unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(body).unwrap();
    // One sample's value, by metric name and labels it must carry.
    let sample = |name: &str, labels: &[(&str, String)]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(&format!("{name}{{")))
            .find(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
            .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
            .unwrap_or_else(|| panic!("no {name} with {labels:?} in:\n{text}"))
    };
    let devices = d.get("/api/v1/devices");
    for dev in devices["devices"].as_array().unwrap() {
        for cat in dev["categories"].as_array().unwrap() {
            let labels = [
                ("chip", dev["id"].to_string()),
                ("hw_id", dev["hw_id"].as_str().unwrap().to_string()),
                ("category", cat["name"].as_str().unwrap().to_string()),
            ];
            assert_eq!(
                sample("ttmem_device_memory_used_bytes", &labels),
                cat["used"].as_f64().unwrap()
            );
            assert_eq!(
                sample("ttmem_device_memory_capacity_bytes", &labels),
                cat["total"].as_f64().unwrap()
            );
        }
    }
    let p = d.process(pid(&h)).unwrap();
    let dram = p["devices"][0]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "DRAM")
        .unwrap()["bytes"]
        .as_f64()
        .unwrap();
    assert_eq!(
        sample(
            "ttmem_process_memory_bytes",
            &[
                ("pid", pid(&h).to_string()),
                ("comm", p["name"].as_str().unwrap().to_string()),
                ("chip", "0".into()),
                ("category", "DRAM".into())
            ]
        ),
        dram
    );
    // The classic format names a counter by its sample and has no EOF; OpenMetrics on request.
    assert!(text.contains("# TYPE ttmem_events_drained_total counter"), "{text}");
    assert!(sample("ttmem_events_drained_total", &[]) > 0.0);
    assert_eq!(sample("ttmem_process_sources", &[("source", "region".into())]), 1.0);
    assert_eq!(sample("ttmem_processes", &[("state", "running".into())]), 1.0);
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(
        raw.contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{raw}"
    );
    assert!(raw.contains("# UNIT ttmem_device_memory_used_bytes bytes") && raw.trim_end().ends_with("# EOF"));
}
