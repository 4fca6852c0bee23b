//! TT-Metal's counter files and the kernel driver's pid lists as sources, end to end with the
//! real binary and real processes, over counter files written from the layout table (the real
//! runtime's own files are tested in `ttmetal_real.rs`).

mod common;
use common::*;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;
use ttmem_ttmetal::layout::fixture::{Spec, build};

const CHIP: u64 = 72059269368820857;
const MIB: u64 = 1 << 20;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A process that runs until dropped, standing in for a TT-Metal process.
struct Sleeper(Child);

impl Sleeper {
    fn start() -> Sleeper {
        Sleeper(Command::new("sleep").arg("60").spawn().unwrap())
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A pid that no process has now (one that just exited).
fn dead_pid() -> i32 {
    let mut c = Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    pid
}

/// Writes `tt_device_<chip>_memory` (layout v3, as TT-Metal 0.81 writes it) into `dir`.
fn write_counters(dir: &Path, chip: u64, slots: Vec<(usize, i32, Vec<u64>, u64, &str)>) {
    std::fs::create_dir_all(dir).unwrap();
    let spec = Spec {
        asic_id: chip,
        device_id: 0,
        last_update_ns: now_ns(),
        chips: vec![(0, false, vec![])],
        slots: slots
            .into_iter()
            .map(|(i, pid, bytes, ts, name)| (i, pid, bytes, ts, name.as_bytes().to_vec()))
            .collect(),
        init_state: None,
    };
    let tmp = dir.join(".tmp");
    std::fs::write(&tmp, build(3, &spec)).unwrap();
    std::fs::rename(tmp, dir.join(format!("tt_device_{chip}_memory"))).unwrap();
}

fn ps_json(dir: &Path) -> Value {
    let out = ttmem(dir).args(["ps", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn process(ps: &Value, pid: i32) -> Value {
    ps["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .cloned()
        .unwrap_or_else(|| panic!("pid {pid} missing from {ps:#}"))
}

#[test]
fn live_dead_and_reused_pid_slots_are_told_apart_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let live = Sleeper::start();
    let reused = Sleeper::start();
    let dead = dead_pid();
    let now = now_ns();
    write_counters(
        &dir.path().join("tt-metal"),
        CHIP,
        vec![
            (0, live.pid(), vec![2 * MIB, 128 << 10, 0, 0, 0], now, "python"),
            (1, dead, vec![5 * MIB, 0, 0, 0, 0], now, "python"),
            // The slot was last updated two minutes before this pid's process started.
            (
                2,
                reused.pid(),
                vec![3 * MIB, 0, 0, 0, 0],
                now - 120_000_000_000,
                "python",
            ),
        ],
    );
    let ps = ps_json(dir.path());
    let p = process(&ps, live.pid());
    assert_eq!(
        (p["state"].as_str(), p["source"].as_str()),
        (Some("running"), Some("tt-metal-shm"))
    );
    assert_eq!(p["name"], "python");
    assert_eq!(p["devices"][0]["hw_id"], format!("{CHIP:#x}"));
    assert_eq!(p["devices"][0]["categories"][0]["bytes"], 2 * MIB);
    assert_eq!(p["devices"][0]["categories"][1]["bytes"], 128 << 10);
    for (pid, bytes) in [(dead, 5 * MIB), (reused.pid(), 3 * MIB)] {
        let p = process(&ps, pid);
        assert_eq!(p["state"], "exited", "{p:#}");
        assert_eq!(p["left_behind"], true);
        assert_eq!(p["totals"][0]["bytes"], bytes);
    }
    // The chip counts live use only; TT-Metal's own totals (10 MiB) include the dead ones.
    let chip = &ps["devices"][0];
    assert_eq!(chip["hw_id"], format!("{CHIP:#x}"));
    assert_eq!(chip["sources"], serde_json::json!(["tt-metal-shm"]));
    assert_eq!(chip["categories"][0]["used"], 2 * MIB);
    assert_eq!(chip["processes"], 1);
    let notes = ps["notes"].as_array().unwrap();
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(notes.iter().any(|n| {
        n.as_str()
            .unwrap()
            .contains(&format!("include {} bytes of process {dead}", 5 * MIB))
    }));
    // The table says it too.
    let text = ttmem(dir.path()).arg("ps").output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("note: TT-Metal's own totals for chip"), "{text}");
}

#[test]
fn a_process_seen_by_its_region_and_by_tt_metal_is_one_process() {
    let dir = tempfile::tempdir().unwrap();
    let held = hold(dir.path(), "bursty", "n150", 0, 1);
    let pid = pid(&held) as i32;
    let hw = held.summary["chips"][0]["hw_id"].as_u64().unwrap();
    write_counters(
        &dir.path().join("tt-metal"),
        hw,
        vec![(0, pid, vec![1, 0, 0, 0, 0], now_ns(), "ttmem")],
    );
    let ps = ps_json(dir.path());
    let mine: Vec<&Value> = ps["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["pid"] == pid)
        .collect();
    assert_eq!(mine.len(), 1, "{ps:#}");
    assert_eq!(mine[0]["source"], "region", "the source with per-buffer detail wins");
    // Its devices are the region's (which knows the architecture and capacities). The counter
    // file's chip stays listed, empty: it is a real chip kind, the region's a simulated one.
    let chips = ps["devices"].as_array().unwrap();
    assert_eq!(chips.len(), 2, "{chips:#?}");
    let sim = chips.iter().find(|c| c["kind"] == "tt-sim").unwrap();
    assert_eq!(
        (sim["arch"].as_str(), sim["processes"].as_u64()),
        (Some("wormhole_b0"), Some(1))
    );
    let tt = chips.iter().find(|c| c["kind"] == "tt").unwrap();
    assert_eq!(
        (tt["processes"].as_u64(), tt["categories"][0]["used"].as_u64()),
        (Some(0), Some(0))
    );
    assert!(
        ps.get("notes").is_none(),
        "nothing died and nothing was compared: {ps:#}"
    );
}

/// A fabricated proc root: boot time, one process, and the kernel driver's pid list naming it.
fn fake_proc_root(root: &Path, pid: u32, devices: &[u32]) {
    std::fs::create_dir_all(root.join(pid.to_string())).unwrap();
    std::fs::write(root.join("stat"), "cpu 0\nbtime 1700000000\n").unwrap();
    let mut fields = vec!["0".to_string(); 25];
    fields[18] = "100".into();
    std::fs::write(
        root.join(format!("{pid}/stat")),
        format!("{pid} (tt-smi) S {}", fields.join(" ")),
    )
    .unwrap();
    std::fs::write(root.join(format!("{pid}/status")), "Uid:\t0\t0\t0\t0\n").unwrap();
    std::fs::write(root.join(format!("{pid}/comm")), "tt-smi\n").unwrap();
    std::fs::write(root.join(format!("{pid}/cmdline")), "tt-smi\0").unwrap();
    for d in devices {
        let dir = root.join(format!("driver/tenstorrent/{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("pids"), format!("{pid}\n{pid}\n")).unwrap();
    }
}

#[test]
fn a_process_the_kernel_driver_lists_holds_a_device_with_memory_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("proc");
    fake_proc_root(&root, 4321, &[0, 1]);
    let out = ttmem(dir.path())
        .args(["ps", "--json", "--proc-root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ps: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = process(&ps, 4321);
    assert_eq!(
        (p["source"].as_str(), p["name"].as_str()),
        (Some("kmd"), Some("tt-smi"))
    );
    assert_eq!(
        p["holds"],
        serde_json::json!(["/dev/tenstorrent/0", "/dev/tenstorrent/1"])
    );
    let text = ttmem(dir.path())
        .args(["ps", "--proc-root"])
        .arg(&root)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("holds /dev/tenstorrent/0, /dev/tenstorrent/1, memory unknown"),
        "{text}"
    );
}

#[test]
fn hostile_counter_files_are_skipped_with_a_reason_and_ps_still_answers() {
    let dir = tempfile::tempdir().unwrap();
    let tt = dir.path().join("tt-metal");
    std::fs::create_dir_all(&tt).unwrap();
    let mut v9 = build(3, &Spec::default());
    v9[0] = 9;
    std::fs::write(tt.join("tt_device_1_memory"), v9).unwrap();
    std::fs::write(tt.join("tt_device_2_memory"), b"garbage").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", tt.join("tt_device_3_memory")).unwrap();
    let ps = ps_json(dir.path());
    let skipped: Vec<String> = ps["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["path"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:#?}");
    assert!(
        skipped
            .iter()
            .any(|s| s.contains("tt_device_1_memory") && s.contains("layout version 9"))
    );
}

#[test]
fn the_daemon_shows_a_tt_metal_process_within_a_second_and_its_death_within_a_second() {
    let d = Daemon::start();
    let tt = d._dir.path().join("tt-metal");
    let mut live = Sleeper::start();
    write_counters(
        &tt,
        CHIP,
        vec![(0, live.pid(), vec![4 * MIB, 0, 0, 0, 0], now_ns(), "python")],
    );
    let t0 = Instant::now();
    wait_until(|| d.process(live.pid() as u64).is_some());
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "appeared after {:?}",
        t0.elapsed()
    );
    let p = d.process(live.pid() as u64).unwrap();
    assert_eq!(
        (p["state"].as_str(), p["source"].as_str()),
        (Some("running"), Some("tt-metal-shm"))
    );
    let used = |d: &Daemon| d.get("/api/v1/devices")["devices"][0]["categories"][0]["used"].clone();
    assert_eq!(used(&d), 4 * MIB);

    // SIGKILL: TT-Metal keeps the slot; ttmem shows the process exited, its bytes left behind.
    live.0.kill().unwrap();
    live.0.wait().unwrap();
    let t0 = Instant::now();
    wait_until(|| d.process(live.pid() as u64).is_some_and(|p| p["state"] == "exited"));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "seen dead after {:?}",
        t0.elapsed()
    );
    assert_eq!(used(&d), 0);
    let snap = d.get("/api/v1/snapshot");
    assert!(
        snap["notes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n.as_str().unwrap().contains("which died")),
        "{snap:#}"
    );
}

#[test]
fn alerts_fire_on_what_tt_metals_own_counter_files_report() {
    let d = Daemon::start_with(
        "[alerts]\ninterval_s = 1\ndefault_rules = false\n\n[[alerts.rules]]\nname = \"DramUsed\"\nkind = \"threshold\"\ncategory = \"DRAM\"\nabove_bytes = 33554432\n\n[[alerts.rules]]\nname = \"LeftBehind\"\nkind = \"left_behind\"\n",
    );
    let tt = d._dir.path().join("tt-metal");
    let mut live = Sleeper::start();
    write_counters(
        &tt,
        CHIP,
        vec![(0, live.pid(), vec![64 * MIB, 0, 0, 0, 0], now_ns(), "python")],
    );
    let active = |d: &Daemon| d.get("/api/v1/alerts")["active"].as_array().unwrap().clone();
    wait_until(|| {
        active(&d)
            .iter()
            .any(|a| a["rule"] == "DramUsed" && a["state"] == "firing")
    });
    let a = active(&d).into_iter().find(|a| a["rule"] == "DramUsed").unwrap();
    assert_eq!(a["labels"]["hw_id"], format!("{CHIP:#x}"), "{a}");
    // Killed holding 64 MiB: TT-Metal keeps the slot; ttmem says what it left behind.
    live.0.kill().unwrap();
    live.0.wait().unwrap();
    wait_until(|| active(&d).iter().any(|a| a["rule"] == "LeftBehind"));
    let left = active(&d).into_iter().find(|a| a["rule"] == "LeftBehind").unwrap();
    assert_eq!(left["labels"]["pid"], live.pid().to_string());
    assert_eq!(left["value"].as_f64(), Some((64 * MIB) as f64), "{left}");
    wait_until(|| active(&d).iter().all(|a| a["rule"] != "DramUsed"));
}
