//! The CLI's one vocabulary, end to end: a daemon the user names must answer, every reader asks
//! it the same way, an empty host cannot pass `check`, simulated chips are claimed like real
//! ones, and the listing commands print JSON.

mod common;
use common::*;

use std::process::Command;

use serde_json::Value;

/// `ttmem ARGS --api-socket SOCKET` with no region directory named; its output.
fn ask(socket: &std::path::Path, args: &[&str]) -> std::process::Output {
    bare().args(args).arg("--api-socket").arg(socket).output().unwrap()
}

/// Where a successful `ps --json` says its snapshot came from.
fn source_of(out: &std::process::Output) -> Value {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap()["source"].clone()
}

/// `ttmem` with no region directory named (neither `--dir` nor `TTMEM_DIR`).
fn bare() -> Command {
    let mut c = Command::new(TTMEM);
    c.env_remove("TTMEM_DIR")
        .env("TTMEM_TT_METAL_DIR", "off")
        .env_remove("TTMEM_API_SOCKET")
        .env_remove("TTMEM_DISABLE");
    c
}

#[test]
fn a_named_daemon_must_answer_or_the_reader_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-daemon.sock");
    for cmd in ["ps", "info", "check"] {
        let out = ttmem(dir.path())
            .arg(cmd)
            .arg("--api-socket")
            .arg(&missing)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
        let text = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("no answer from the daemon at"), "{cmd}: {text}");
    }
    // The default daemon may be absent: the regions are read instead.
    let out = ttmem(dir.path())
        .args(["ps", "--json"])
        .env("XDG_RUNTIME_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(source_of(&out), "regions");
}

#[test]
fn every_reader_asks_the_named_daemon_and_never_shows_another_directory_silently() {
    let d = Daemon::start();
    let held = hold(&d.regions, "training", "n300", 0, 3);
    // Until the daemon holds all of it: two readers asked one after the other must agree.
    wait_until(|| {
        let devices = d.get("/api/v1/devices");
        (0..2).all(|i| {
            devices["devices"][i]["categories"][0]["used"] == held.summary["chips"][i]["categories"][0]["allocated"]
        })
    });

    // Named daemon, no directory named: its answer, whatever it watches.
    let ps = bare()
        .args(["ps", "--json", "--api-socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(ps.status.success(), "{}", String::from_utf8_lossy(&ps.stderr));
    let ps: Value = serde_json::from_slice(&ps.stdout).unwrap();
    assert_eq!(ps["source"], "daemon");
    assert_eq!(ps["region_dir"], d.regions.display().to_string());
    let info = bare()
        .args(["info", "--json", "--api-socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert!(info.status.success(), "{}", String::from_utf8_lossy(&info.stderr));
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["devices"], ps["devices"], "info and ps agree");
    assert_eq!(info["devices"].as_array().unwrap().len(), 2);
    let check = ask(&d.socket, &["check", "--require-devices", "2"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    // Named daemon and another directory named: refused, with the reason.
    let other = tempfile::tempdir().unwrap();
    let out = ttmem(other.path())
        .args(["ps", "--api-socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("watches") && err.contains("--no-daemon"), "{err}");
    // --no-daemon reads that directory.
    let out = ttmem(other.path())
        .args(["ps", "--json", "--no-daemon", "--api-socket"])
        .arg(&d.socket)
        .output()
        .unwrap();
    assert_eq!(source_of(&out), "regions");
}

#[test]
fn check_on_an_empty_host_cannot_pass_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let out = ttmem(dir.path()).args(["check", "--max", "dram=90%"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains("no devices seen"));
    let json = ttmem(dir.path()).args(["check", "--json"]).output().unwrap();
    assert_eq!(json.status.code(), Some(2));
    assert_eq!(serde_json::from_slice::<Value>(&json.stdout).unwrap()["exit_code"], 2);
    let allowed = ttmem(dir.path()).args(["check", "--allow-empty"]).output().unwrap();
    assert_eq!(
        allowed.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&allowed.stdout)
    );
    let too_few = ttmem(dir.path())
        .args(["check", "--allow-empty", "--require-devices", "1"])
        .output()
        .unwrap();
    assert_eq!(too_few.status.code(), Some(1));
}

#[test]
fn simulated_chips_are_claimed_one_workload_each() {
    let dir = tempfile::tempdir().unwrap();
    let a = hold_on(dir.path(), "training", "n150", None, 3);
    let b = hold_on(dir.path(), "training", "n150", None, 3);
    assert_ne!(
        a.summary["chips"][0]["hw_id"], b.summary["chips"][0]["hw_id"],
        "the second workload took the next free chip"
    );
    let ps = ttmem(dir.path()).args(["ps", "--json"]).output().unwrap();
    let ps: Value = serde_json::from_slice(&ps.stdout).unwrap();
    let devices = ps["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2);
    for d in devices {
        assert_eq!(d["processes"], 1);
        let dram = &d["categories"][0];
        assert!(dram["used"].as_u64() <= dram["total"].as_u64(), "{d:#}");
    }
    // A chip named by number that another workload holds is refused, with the holder.
    let on_chip_0 = |duration: &str| {
        let mut c = ttmem(dir.path());
        c.args(["sim", "run", "-p", "training", "-s", "n150"]);
        c.args(["--chip-offset", "0", "--duration", duration]).output().unwrap()
    };
    let taken = on_chip_0("1");
    assert_eq!(taken.status.code(), Some(2));
    let err = String::from_utf8_lossy(&taken.stderr);
    assert!(
        err.contains("simulated chip 0 is held by another workload") && err.contains(&format!("pid {}", pid(&a))),
        "{err}"
    );
    // A killed workload's chips are free again at once (the kernel dropped its lock).
    drop(a);
    let again = on_chip_0("0.1");
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    drop(b);
}

#[test]
fn gc_and_sim_list_print_json() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.ttmem"), b"not a region").unwrap();
    let out = ttmem(dir.path())
        .args(["gc", "--json", "--invalid", "--dry-run"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dry_run"], true);
    assert_eq!(
        v["files"][0]["path"],
        dir.path().join("junk.ttmem").display().to_string()
    );
    assert_eq!(v["files"][0]["removed"], false);
    let out = ttmem(dir.path()).args(["sim", "list", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n300 = v["shapes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "n300")
        .unwrap();
    assert_eq!(n300["chips"].as_array().unwrap().len(), 2);
    assert!(v["profiles"].as_array().unwrap().contains(&Value::from("crash")));
}
