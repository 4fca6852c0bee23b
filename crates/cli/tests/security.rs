//! A hostile local user against the real daemon: a region accepted only when the file's owner,
//! the header's uid and the live process's real uid agree and the file is named after that
//! identity (issue 11, items 1 to 3), a cap on regions per user (item 8), and who sees what
//! (item 4, two unprivileged users). Each test fails on the code before the fix. CI runs them
//! as root, which they need to act as other users (numeric uids, no account needed).
//!
//! The standing campaign of issue 11, probe by probe:
//! 1. reporting as root, 2. speaking for another user's process, 3. copies and deleted files:
//!    here, and `tests/collector.rs` (a removed region is let go of).
//! 4. who sees what: here (`each_user_sees_...`), `tests/daemon.rs` (TCP and the token).
//! 5. phantom allocations after a loss: `crates/host/daemon/tests/collector.rs`,
//!    `crates/host/ledger` (property test), `tests/daemon.rs` (ring overflow).
//! 6. loss under load: `tests/daemon.rs` (a bursty Galaxy workload loses nothing); the curve is
//!    `ttmem bench load`.
//! 7. descriptors, idle and slow clients: `tests/daemon.rs` (timeouts and caps), the open-file
//!    limit in `crates/host/daemon/tests/collector.rs`.
//! 8. junk files, huge and leaping regions, regions per user:
//!    `crates/host/daemon/tests/collector.rs` and here.
//! 9. refused names kept forever: `crates/host/daemon/tests/collector.rs`.
//! 10. errors that are not JSON: `tests/daemon.rs`, `crates/host/daemon/tests/api_requests.rs`
//!     and the `request` fuzz target.
//! 11. the legacy monitor's DEVICE_INFO: `tests/legacy.rs`.

mod common;
use common::*;

use std::mem::offset_of;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use ttmem_region::raw::RawHeader;

const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs only as root (CI is root); says so elsewhere.
fn needs_root(test: &str) -> bool {
    if is_root() {
        return true;
    }
    assert!(std::env::var_os("CI").is_none(), "CI must run {test} as root");
    eprintln!("SKIPPED {test}: needs root to write files as another user");
    false
}

/// The bytes of a held workload's region.
fn region_bytes(dir: &Path) -> Vec<u8> {
    let file = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "ttmem"))
        .expect("the workload's region");
    std::fs::read(file).unwrap()
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Writes `bytes` into `dir` under the name their header's identity gives, owned by `uid`.
fn plant(dir: &Path, bytes: &[u8], uid: u32) -> PathBuf {
    let h = ttmem_region::decode::decode_header(bytes, bytes.len() as u64).unwrap();
    let path = dir.join(ttmem_region::region_file_name(h.uid, h.pid, h.start_time));
    // Written aside and renamed into place, so the daemon never sees half a file.
    let tmp = dir.join("planting");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        std::os::unix::fs::chown(&tmp, Some(uid), Some(uid)).unwrap();
    }
    std::fs::rename(&tmp, &path).unwrap();
    path
}

fn skipped_reason(snap: &Value, path: &Path) -> String {
    snap["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["path"] == path.display().to_string())
        .map(|s| s["reason"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("{} is not refused: {snap:#}", path.display()))
}

#[test]
fn a_user_cannot_report_as_root() {
    if !needs_root("a_user_cannot_report_as_root") {
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let held = hold(src.path(), "bursty", "n150", 0, 1);
    let d = Daemon::start();
    // A copy whose header says uid 0, in a file nobody owns.
    let mut bytes = region_bytes(src.path());
    put_u32(&mut bytes, offset_of!(RawHeader, uid), 0);
    let forged = plant(&d.regions, &bytes, NOBODY);
    wait_until(|| d.get("/api/v1/stats")["collector"]["regions_refused"] == 1);
    assert!(d.process(pid(&held)).is_none(), "the forgery is not listed");
    let reason = skipped_reason(&d.get("/api/v1/snapshot"), &forged);
    assert!(
        reason.contains("file owner uid 65534 does not match the uid 0"),
        "{reason}"
    );
}

#[test]
fn a_user_cannot_speak_for_another_users_process() {
    // A region with the forger's own uid but the pid and start time of a process of another
    // user: pid 1 (root's init; as root, the forger is nobody).
    // SAFETY: getuid has no preconditions.
    let me = unsafe { libc::getuid() };
    let forger = if is_root() { NOBODY } else { me };
    let init_start = start_time_of(1);
    let init_uid: u32 = std::fs::read_to_string("/proc/1/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    if init_uid == forger {
        eprintln!("SKIPPED: pid 1 runs as this user here");
        return;
    }
    let src = tempfile::tempdir().unwrap();
    let _held = hold(src.path(), "bursty", "n150", 0, 1);
    let d = Daemon::start();
    if is_root() {
        // The daemon's directory is world-writable like the real one.
        std::fs::set_permissions(&d.regions, std::fs::Permissions::from_mode(0o1777)).unwrap();
    }
    let mut bytes = region_bytes(src.path());
    put_u32(&mut bytes, offset_of!(RawHeader, uid), forger);
    put_u32(&mut bytes, offset_of!(RawHeader, pid), 1);
    put_u64(&mut bytes, offset_of!(RawHeader, start_time), init_start);
    let forged = plant(&d.regions, &bytes, forger);
    wait_until(|| d.get("/api/v1/stats")["collector"]["regions_refused"] == 1);
    assert!(d.process(1).is_none(), "nobody speaks for pid 1");
    let reason = skipped_reason(&d.get("/api/v1/snapshot"), &forged);
    assert!(
        reason.contains(&format!("process 1 runs as uid {init_uid}, not as the uid {forger}")),
        "{reason}"
    );
    // The reader without a daemon applies the same rule.
    let out = hermetic()
        .args(["ps", "--json", "--no-daemon", "--dir"])
        .arg(&d.regions)
        .output()
        .unwrap();
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(skipped_reason(&snap, &forged).contains("process 1 runs as uid"));
}

#[test]
fn a_copy_of_a_region_under_another_name_does_not_count_twice() {
    let d = Daemon::start();
    let held = hold(&d.regions, "training", "n150", 0, 3);
    let dram = held.summary["chips"][0]["categories"][0]["allocated"].as_u64().unwrap();
    let used = |d: &Daemon| d.get("/api/v1/devices")["devices"][0]["categories"][0]["used"].clone();
    wait_until(|| used(&d) == dram);
    let copy = d.regions.join("copy.ttmem");
    let tmp = d.regions.join("copying");
    std::fs::write(&tmp, region_bytes(&d.regions)).unwrap();
    std::fs::rename(&tmp, &copy).unwrap();
    let refused = || d.get("/api/v1/stats")["collector"]["regions_refused"].as_u64().unwrap();
    wait_until(|| refused() >= 1);
    // Only the copy: the workload's own region, even if caught while being created, is not.
    assert_eq!(refused(), 1, "{:#}", d.get("/api/v1/snapshot")["skipped"]);
    assert_eq!(used(&d), dram, "the copy does not double the chip's use");
    let reason = skipped_reason(&d.get("/api/v1/snapshot"), &copy);
    assert!(reason.contains("named unlike its header"), "{reason}");
    let ps = ttmem(&d.regions)
        .args(["ps", "--json", "--no-daemon"])
        .output()
        .unwrap();
    let ps: Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(ps["devices"][0]["categories"][0]["used"], dram);
}

/// The start time (in clock ticks since boot) of a running process.
fn start_time_of(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn a_user_gets_at_most_its_cap_of_regions_followed() {
    if !needs_root("a_user_gets_at_most_its_cap_of_regions_followed") {
        return;
    }
    // Three processes of one user, each with a region that is truly its own (owner, header and
    // process agree): the daemon follows two and says why not the third.
    let src = tempfile::tempdir().unwrap();
    let _held = hold(src.path(), "bursty", "n150", 0, 1);
    let template = region_bytes(src.path());
    let d = Daemon::start_with("max_regions_per_user = 2\n");
    std::fs::set_permissions(&d.regions, std::fs::Permissions::from_mode(0o1777)).unwrap();
    use std::os::unix::process::CommandExt;
    let mut sleepers: Vec<std::process::Child> = (0..3)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("60")
                .uid(NOBODY)
                .gid(NOBODY)
                .spawn()
                .unwrap()
        })
        .collect();
    let mut planted = Vec::new();
    for s in &sleepers {
        let mut bytes = template.clone();
        put_u32(&mut bytes, offset_of!(RawHeader, uid), NOBODY);
        put_u32(&mut bytes, offset_of!(RawHeader, pid), s.id());
        put_u64(&mut bytes, offset_of!(RawHeader, start_time), start_time_of(s.id()));
        planted.push(plant(&d.regions, &bytes, NOBODY));
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    wait_until(|| d.get("/api/v1/stats")["collector"]["regions_refused"].as_u64() >= Some(1));
    let followed = sleepers.iter().filter(|s| d.process(s.id() as u64).is_some()).count();
    assert_eq!(followed, 2);
    let snap = d.get("/api/v1/snapshot");
    let refused: Vec<String> = planted
        .iter()
        .filter(|p| {
            snap["skipped"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s["path"] == p.display().to_string())
        })
        .map(|p| skipped_reason(&snap, p))
        .collect();
    assert_eq!(refused.len(), 1, "{snap:#}");
    assert!(
        refused[0].contains("its user (uid 65534) has 2 regions followed already"),
        "{}",
        refused[0]
    );
    for s in &mut sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
}

#[test]
fn each_user_sees_everyones_totals_and_only_their_own_processes_detail() {
    if !needs_root("each_user_sees_everyones_totals_and_only_their_own_processes_detail") {
        return;
    }
    // Two users without any privilege, each running a workload that reports to one daemon.
    const ALICE: u32 = 64101;
    const BOB: u32 = 64102;
    let d = Daemon::start();
    // The API socket's directory is reachable by everyone, like /run/ttmem.
    std::fs::set_permissions(d._dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&d.regions, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let a = hold_as(ALICE, &d.regions, "llm-inference", "n150", 0, 2);
    let b = hold_as(BOB, &d.regions, "training", "n150", 1, 3);
    wait_until(|| d.process(pid(&a)).is_some() && d.process(pid(&b)).is_some());
    let as_user = |uid: u32, args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let out = hermetic()
            .args(args)
            .arg("--api-socket")
            .arg(&d.socket)
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    for (me, mine, theirs) in [(ALICE, &a, &b), (BOB, &b, &a)] {
        // Everyone's totals and the process list, like nvidia-smi; only one's own command line.
        let (code, stdout, stderr) = as_user(me, &["ps", "--json"]);
        assert_eq!(code, Some(0), "{stderr}");
        let snap: Value = serde_json::from_str(&stdout).unwrap();
        let row = |h: &Held| {
            snap["processes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["pid"] == pid(h))
                .cloned()
                .unwrap_or_else(|| panic!("{} is not listed to uid {me}", pid(h)))
        };
        assert!(row(mine)["cmdline"].as_str().unwrap().contains("sim run"));
        assert_eq!(row(theirs)["cmdline"], "", "another user's command line");
        assert!(
            row(theirs)["totals"].as_array().is_some_and(|t| !t.is_empty()),
            "their totals"
        );
        // One's own allocations and events; not the other's.
        let (code, stdout, _) = as_user(me, &["api", &format!("processes/{}/allocations?limit=3", pid(mine))]);
        assert_eq!(code, Some(0));
        let page: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(page["items"].as_array().unwrap().len(), 3);
        for what in ["allocations", "events"] {
            let (code, _, stderr) = as_user(me, &["api", &format!("processes/{}/{what}", pid(theirs))]);
            assert_eq!(code, Some(1), "{stderr}");
            assert!(
                stderr.contains("403")
                    && stderr.contains(&format!(
                        "the {what} of process {} are shown only to its owner",
                        pid(theirs)
                    )),
                "{stderr}"
            );
        }
        // Leak suspects: one's own only.
        let (_, stdout, _) = as_user(me, &["api", "leaks?min_age_s=0&limit=10000"]);
        let leaks: Value = serde_json::from_str(&stdout).unwrap();
        let pids: std::collections::BTreeSet<u64> = leaks["allocations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["pid"].as_u64().unwrap())
            .collect();
        assert_eq!(pids, [pid(mine)].into_iter().collect());
    }
    // Root sees everything.
    let page = d.get(&format!("/api/v1/processes/{}/allocations?limit=1", pid(&b)));
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    // The database is the daemon's only.
    let mode = std::fs::metadata(d._dir.path().join("ttmem.db"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}
