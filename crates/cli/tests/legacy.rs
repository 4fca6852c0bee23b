//! End-to-end tests of the legacy allocation-server socket: a real `ttmem serve`, real clients
//! speaking P1–P4 over a real Unix socket, real processes killed with SIGKILL.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ttmem_bench::legacy::{Client, alloc, free};
use ttmem_legacy::{Message, MsgType, Version};

const MIB: u64 = 1 << 20;

/// The old demo's sequence on device 0: 4 × 1 MiB L1, 4 × 25 MiB DRAM, 8 × 1 MiB L1 (ids 1..16).
fn demo_allocations(c: &mut Client) {
    for id in 1..=4 {
        c.send(&alloc(0, 1, id, MIB)).unwrap();
    }
    for id in 5..=8 {
        c.send(&alloc(0, 0, id, 25 * MIB)).unwrap();
    }
    for id in 9..=16 {
        c.send(&alloc(0, 1, id, MIB)).unwrap();
    }
}

/// A CB_ALLOC as the newest clients send it.
fn cb_alloc(device: i32, id: u64, size: u64) -> Message {
    Message {
        msg_type: MsgType::CbAlloc as u8,
        device_id: device,
        size,
        buffer_id: id,
        ..Message::default()
    }
}

/// `ttmem serve` on private paths under `dir` with the legacy socket at `legacy`.
fn serve_with_legacy_socket(dir: &std::path::Path, legacy: &std::path::Path) -> Command {
    let mut c = hermetic();
    c.args(["serve", "--no-http", "--dir"])
        .arg(dir.join("regions"))
        .arg("--api-socket")
        .arg(dir.join("api.sock"))
        .arg("--db")
        .arg(dir.join("db"))
        .arg("--legacy-socket")
        .arg(legacy)
        .env("XDG_CONFIG_HOME", dir);
    c
}

fn response(device: i32, dram: u64, l1: u64) -> Message {
    Message {
        msg_type: MsgType::Response as u8,
        device_id: device,
        dram_allocated: dram,
        l1_allocated: l1,
        ..Message::default()
    }
}

fn process(d: &Daemon, pid: u32) -> Option<Value> {
    d.process(pid as u64)
}

fn category_bytes(p: &Value, name: &str) -> u64 {
    p["totals"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .map_or(0, |c| c["bytes"].as_u64().unwrap())
}

#[test]
fn every_version_runs_the_old_demo_sequence() {
    let d = Daemon::start();
    for v in Version::ALL {
        let mut c = Client::connect(&d.legacy_socket(), v).unwrap();
        demo_allocations(&mut c);
        assert_eq!(c.query(0).unwrap(), response(0, 100 * MIB, 12 * MIB), "{v} at peak");
        // The same process, seen through the API like any other.
        let p = process(&d, std::process::id()).expect("the client is a process of the daemon");
        assert_eq!(p["state"], "running");
        assert_eq!(category_bytes(&p, "DRAM"), 100 * MIB, "{v}");
        assert_eq!(category_bytes(&p, "L1"), 12 * MIB, "{v}");
        // The demo's FREEs carry device 0 and process id 0.
        for id in 1..=16 {
            c.send(&free(0, id)).unwrap();
        }
        assert_eq!(c.query(0).unwrap(), response(0, 0, 0), "{v} at the end");
    }
    let stats = d.get("/api/v1/legacy")["legacy"].clone();
    for v in ["P1", "P2", "P3", "P4"] {
        assert_eq!(stats["connections_by_version"][v], 1, "{stats}");
    }
    assert_eq!(stats["messages_by_type"]["ALLOC"], 64);
    assert_eq!(stats["messages_by_type"]["FREE"], 64);
    assert_eq!(stats["book"]["unknown_frees"], 0);
    // The old P2 monitor asks DEVICE_INFO for the legacy device no region declared: it gets the
    // nominal Wormhole layout, marked nominal, not zeros (it printed "100 MB / 0 B").
    let mut monitor = Client::connect(&d.legacy_socket(), Version::P2).unwrap();
    let info = monitor.device_info(0).unwrap();
    assert_eq!((info.is_available, info.arch_type), (2, 2), "{info:?}");
    assert_eq!((info.total_dram_size, info.num_dram_channels), (12 << 30, 12));
}

#[test]
fn a_p2_monitor_session_sees_the_daemons_devices() {
    let d = Daemon::start();
    let h = hold(&d.regions, "llm-inference", "n300", 0, 20);
    // Wait until the daemon has read the held workload's counters on both chips.
    let dram_used = |dev: &Value| {
        dev["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "DRAM")
            .unwrap()["used"]
            .as_u64()
            .unwrap()
    };
    let mut devices = Vec::new();
    wait_until(|| {
        devices = d.get("/api/v1/devices")["devices"].as_array().unwrap().clone();
        d.process(pid(&h)).is_some() && devices.len() == 2 && devices.iter().all(|x| dram_used(x) > 0)
    });
    assert_eq!(devices.len(), 2, "an n300 is two chips");
    let mut c = Client::connect(&d.legacy_socket(), Version::P2).unwrap();
    let all = c.device_info(-1).unwrap();
    assert_eq!(all.msg_type, MsgType::DeviceInfoResponse as u8);
    assert_eq!((all.num_devices, all.is_available), (2, 1));
    for dev in &devices {
        let id = dev["id"].as_u64().unwrap() as i32;
        let cat = |name: &str| {
            dev["categories"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == name)
                .unwrap()
                .clone()
        };
        let info = c.device_info(id).unwrap();
        assert_eq!(info.device_id, id);
        assert_eq!(info.arch_type, 2, "wormhole_b0");
        assert_eq!(info.num_dram_channels, 12);
        assert_eq!(info.total_dram_size, cat("DRAM")["total"].as_u64().unwrap());
        assert_eq!(info.total_l1_size, cat("L1")["total"].as_u64().unwrap());
        assert_eq!(info.l1_size_per_core, 1464 * 1024);
        assert_eq!(info.is_available, 1);
        let q = c.query(id).unwrap();
        assert_eq!(q.dram_allocated, cat("DRAM")["used"].as_u64().unwrap(), "device {id}");
        assert_eq!(q.l1_allocated, cat("L1")["used"].as_u64().unwrap(), "device {id}");
        assert_eq!(q.trace_allocated, cat("TRACE")["used"].as_u64().unwrap(), "device {id}");
        assert!(q.dram_allocated > 0, "the workload holds DRAM on device {id}");
    }
    // A device the table does not have is answered, not refused.
    let none = c.device_info(9).unwrap();
    assert_eq!((none.is_available, none.num_devices), (0, 2));
}

/// Run by `a_sigkilled_client_leaves_the_totals_within_a_second` as a separate process: it
/// reports three buffers over P4, says `ready`, and waits to be killed.
#[test]
#[ignore = "a helper process, started by another test"]
fn legacy_child_holding_buffers() {
    let Some(path) = std::env::var_os("TTMEM_TEST_LEGACY_SOCKET") else {
        return;
    };
    let mut c = Client::connect(path.as_ref(), Version::P4).unwrap();
    c.send(&alloc(0, 0, 0x1000, 10 * MIB)).unwrap();
    c.send(&alloc(0, 1, 0x2000, MIB)).unwrap();
    c.send(&cb_alloc(0, 0x3000, 64 << 10)).unwrap();
    c.query(0).unwrap();
    println!("ready");
    std::io::stdout().flush().unwrap();
    std::thread::sleep(Duration::from_secs(120));
}

#[test]
fn a_sigkilled_client_leaves_the_totals_within_a_second() {
    let d = Daemon::start();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "legacy_child_holding_buffers",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TTMEM_TEST_LEGACY_SOCKET", d.legacy_socket())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // libtest prints `test NAME ... ` before the test's own output on the same line.
    assert!(
        lines.any(|l| l.unwrap().trim_end().ends_with("ready")),
        "the child never got ready"
    );
    let mut c = Client::connect(&d.legacy_socket(), Version::P4).unwrap();
    let q = c.query(0).unwrap();
    assert_eq!(
        (q.dram_allocated, q.l1_allocated, q.cb_allocated),
        (10 * MIB, MIB, 64 << 10)
    );

    child.kill().unwrap();
    let killed = Instant::now();
    child.wait().unwrap();
    wait_until(|| c.query(0).unwrap().dram_allocated == 0);
    let took = killed.elapsed();
    assert!(took < Duration::from_secs(1), "the totals dropped after {took:?}");
    assert_eq!(c.query(0).unwrap(), response(0, 0, 0));
    // What it left behind is kept.
    let p = process(&d, child.id()).expect("the dead client is still listed");
    assert_eq!(p["state"], "exited");
    assert_eq!(p["left_behind"], true);
    assert_eq!(category_bytes(&p, "DRAM"), 10 * MIB);
    assert_eq!(category_bytes(&p, "CB"), 64 << 10);
}

/// Reads until the daemon closes the connection (EOF or reset), for at most five seconds.
fn closed_by_daemon(s: &mut UnixStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn garbage_and_truncated_streams_are_closed_and_change_nothing() {
    let mut d = Daemon::start();
    let sock = d.legacy_socket();
    // Not the protocol at all.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    assert!(closed_by_daemon(&mut s), "an HTTP request is refused");
    // Random bytes.
    let mut s = UnixStream::connect(&sock).unwrap();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    s.write_all(&noise).unwrap();
    assert!(closed_by_daemon(&mut s), "noise is refused");
    // Good messages, then one that lost its framing: the good ones count, the stream closes.
    let mut c = Client::connect(&sock, Version::P2).unwrap();
    c.send(&alloc(0, 1, 0x40, MIB)).unwrap();
    c.send(&alloc(0, 1, 0x80, MIB)).unwrap();
    assert_eq!(c.query(0).unwrap().l1_allocated, 2 * MIB);
    let mut bad = alloc(0, 1, 0xC0, MIB);
    bad.msg_type = 0;
    c.send(&bad).unwrap();
    let mut s = c.stream().try_clone().unwrap();
    assert!(
        closed_by_daemon(&mut s),
        "a type byte of 0 after detection closes the stream"
    );
    // Half a message, then hang up.
    let mut s = UnixStream::connect(&sock).unwrap();
    s.write_all(&alloc(0, 0, 0x100, 50 * MIB).encode(Version::P2)[..60])
        .unwrap();
    drop(s);
    // Queries from clients that hang up at once: the replies must not kill the daemon.
    for _ in 0..20 {
        let mut s = UnixStream::connect(&sock).unwrap();
        let _ = s.write_all(&Message::request(MsgType::Query, 0).encode(Version::P4));
    }
    std::thread::sleep(Duration::from_millis(100));
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon survived");

    let mut c = Client::connect(&sock, Version::P2).unwrap();
    assert_eq!(
        c.query(0).unwrap(),
        response(0, 0, 2 * MIB),
        "only the two framed ALLOCs count"
    );
    // Invalid fields are counted, not applied, and the connection stays.
    c.send(&alloc(5000, 0, 1, MIB)).unwrap();
    c.send(&alloc(0, 9, 1, MIB)).unwrap();
    c.send(&free(0, 0x40)).unwrap();
    c.send(&free(0, 0x80)).unwrap();
    assert_eq!(c.query(0).unwrap(), response(0, 0, 0));
    let stats = d.get("/api/v1/legacy")["legacy"].clone();
    assert!(stats["closed_unframeable"].as_u64().unwrap() >= 3, "{stats}");
    assert!(stats["invalid"].as_u64().unwrap() >= 2, "{stats}");
}

#[test]
fn a_p1_and_a_p4_client_at_the_same_time() {
    let d = Daemon::start();
    let mut p1 = Client::connect(&d.legacy_socket(), Version::P1).unwrap();
    let mut p4 = Client::connect(&d.legacy_socket(), Version::P4).unwrap();
    p1.send(&alloc(0, 1, 100, 2 * MIB)).unwrap();
    p4.send(&alloc(1, 0, 200, 3 * MIB)).unwrap();
    p4.send(&cb_alloc(1, 300, 64 << 10)).unwrap();
    p4.send(&Message {
        msg_type: MsgType::KernelLoad as u8,
        device_id: 1,
        size: 16 << 10,
        buffer_type: 2,
        buffer_id: 7,
        ..Message::default()
    })
    .unwrap();
    // Devices beyond 8 work.
    p4.send(&alloc(12, 4, 400, 5 * MIB)).unwrap();
    // Each gets its own layout back (the client reads exactly its struct size).
    assert_eq!(p1.query(0).unwrap(), response(0, 0, 2 * MIB));
    let q = p4.query(1).unwrap();
    assert_eq!(
        (q.dram_allocated, q.cb_allocated, q.kernel_allocated),
        (3 * MIB, 64 << 10, 16 << 10)
    );
    assert_eq!(p4.query(12).unwrap().trace_allocated, 5 * MIB);
    assert_eq!(p1.query(0).unwrap(), response(0, 0, 2 * MIB));

    // A cached buffer allocated again is counted once and freed at its last FREE.
    p1.send(&alloc(0, 1, 100, 2 * MIB)).unwrap();
    p1.send(&free(0, 100)).unwrap();
    assert_eq!(p1.query(0).unwrap().l1_allocated, 2 * MIB);
    p1.send(&free(0, 100)).unwrap();
    p1.send(&free(0, 999)).unwrap();
    assert_eq!(p1.query(0).unwrap().l1_allocated, 0);

    // Dumps go to the log and the API.
    p4.send(&Message::request(MsgType::DumpRemaining, 0)).unwrap();
    p4.send(&Message::request(MsgType::DumpKernels, 0)).unwrap();
    p4.query(1).unwrap();
    let dumps = d.get("/api/v1/legacy/dumps")["dumps"].as_array().unwrap().clone();
    let kernels = dumps.iter().find(|x| x["kind"] == "kernels").expect("a kernel dump");
    assert_eq!(kernels["total"], 1);
    assert_eq!(kernels["entries"][0]["id"], 7);
    assert_eq!(kernels["entries"][0]["kind"], 2);
    let remaining = dumps.iter().find(|x| x["kind"] == "remaining").expect("a buffer dump");
    assert_eq!(
        remaining["total"], 3,
        "DRAM 200, CB 300 and TRACE 400 are live: {remaining}"
    );
    let stats = d.get("/api/v1/legacy")["legacy"].clone();
    assert_eq!(stats["book"]["reallocs"], 1);
    assert_eq!(stats["book"]["unknown_frees"], 1);

    // A message claiming another process is logged and counted, and still the peer's.
    let mut claim = alloc(0, 0, 500, MIB);
    claim.process_id = 1;
    p1.send(&claim).unwrap();
    assert_eq!(p1.query(0).unwrap().dram_allocated, MIB);
    assert_eq!(d.get("/api/v1/legacy")["legacy"]["pid_mismatches"], 1);
    assert_eq!(
        category_bytes(&process(&d, std::process::id()).unwrap(), "DRAM"),
        4 * MIB
    );
    assert!(process(&d, 1).is_none(), "nothing is attributed to pid 1");
}

#[test]
fn the_socket_is_0660_and_a_live_server_is_never_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let d = Daemon::start();
    let mode = std::fs::metadata(d.legacy_socket()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o660);
    // A second daemon on the same legacy socket is refused, and the first keeps serving.
    let other = tempfile::tempdir().unwrap();
    let out = serve_with_legacy_socket(other.path(), &d.legacy_socket())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another allocation server is listening"),
        "{out:?}"
    );
    assert_eq!(
        Client::connect(&d.legacy_socket(), Version::P2)
            .unwrap()
            .query(0)
            .unwrap(),
        response(0, 0, 0)
    );
    // A stale socket file (its server is gone) is replaced.
    let stale = other.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    let mut child = serve_with_legacy_socket(other.path(), &stale)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut answered = false;
    while !answered && start.elapsed() < Duration::from_secs(20) {
        answered = Client::connect(&stale, Version::P1)
            .and_then(|mut c| c.query(0))
            .is_ok();
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(answered, "the daemon took over the stale socket");
}

#[test]
fn watch_draws_the_old_monitor_screen_from_the_daemon() {
    let d = Daemon::start();
    let mut c = Client::connect(&d.legacy_socket(), Version::P2).unwrap();
    demo_allocations(&mut c);
    c.query(0).unwrap();
    let out = hermetic()
        .args(["watch", "--once", "-d", "0", "--api-socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Device 0: legacy:0"), "{text}");
    let dram = text.lines().find(|l| l.trim_start().starts_with("DRAM")).unwrap();
    assert!(dram.contains("100M") && dram.contains('['), "{dram}");
    let l1 = text.lines().find(|l| l.trim_start().starts_with("L1 ")).unwrap();
    assert!(l1.contains("12.0M"), "{l1}");
    // No daemon: a clear error and exit 2.
    let out = hermetic()
        .args(["watch", "--once", "--api-socket", "/nonexistent/api.sock"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs a running daemon"));
}
