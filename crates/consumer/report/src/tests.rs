//! Snapshot-model tests over real region files, and rendering snapshots over fixed data.

use super::*;
use std::path::Path;
use ttmem_client::{Config, DeviceSpec, Tracker, tt};
use ttmem_model::*;
use ttmem_region::DeviceKind;
use ttmem_scan::{ScanOptions, scan};

fn tracker(dir: &Path) -> Tracker {
    Tracker::new(Config {
        dir: dir.into(),
        ring_events: 64,
        max_shards: 4,
        ..Config::default()
    })
}

fn spec(hw: u64, name: &str) -> DeviceSpec {
    DeviceSpec::tenstorrent(
        DeviceKind::SimulatedTenstorrent,
        hw,
        0,
        "wormhole_b0",
        name,
        tt::wormhole_categories(),
    )
}

#[test]
fn devices_count_running_processes_and_exited_ones_show_what_they_left() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let a = t.register_device(&spec(0x10, "n300-L")).unwrap();
    let b = t
        .register_device(&DeviceSpec {
            remote: true,
            logical_id: 1,
            ..spec(0x11, "n300-R")
        })
        .unwrap();
    t.alloc(a, tt::DRAM, 0, 100 << 20);
    t.alloc(b, tt::L1, 0, 1 << 20);
    t.alloc(b, tt::TRACE, 0, 7 << 20);
    // A dead process that held 5 MiB of DRAM on the first chip: a copy of the region with a pid
    // that cannot exist.
    let mut bytes = std::fs::read(t.region_path().unwrap()).unwrap();
    bytes[32..36].copy_from_slice(&0x3FFF_FFF0u32.to_le_bytes());
    let h = ttmem_region::decode::decode_header(&bytes, bytes.len() as u64).unwrap();
    let name = ttmem_region::region_file_name(h.uid, h.pid, h.start_time);
    std::fs::write(dir.path().join(name), &bytes).unwrap();

    let s = Snapshot::from_scan(&scan(dir.path(), ScanOptions::default()).unwrap());
    assert_eq!(s.schema, 1);
    assert_eq!(s.devices.len(), 2);
    let d0 = &s.devices[0];
    assert_eq!(
        (d0.id, d0.hw_id.as_str(), d0.name.as_str(), d0.remote),
        (0, "0x10", "n300-L", false)
    );
    let dram = d0.categories.iter().find(|c| c.name == "DRAM").unwrap();
    assert_eq!(dram.used, 100 << 20, "only the running process counts");
    assert_eq!(dram.total, tt::wormhole_categories()[0].capacity);
    assert_eq!(d0.processes, 1);
    assert!(s.devices[1].remote);
    assert_eq!(s.processes.len(), 2);
    let (live, dead) = (&s.processes[0], &s.processes[1]);
    assert_eq!((live.state.as_str(), live.id.pid), ("running", std::process::id()));
    assert_eq!(dead.state, ProcState::Exited);
    assert!(dead.left_behind);
    assert_eq!(dead.totals.iter().find(|c| c.name == "TRACE").unwrap().bytes, 7 << 20);
    assert_eq!(live.devices[1].categories[tt::L1 as usize].bytes, 1 << 20);
    assert_eq!(s.columns(), ["DRAM", "L1", "TRACE"]);
    // The JSON round-trips through the documented field names.
    let v: serde_json::Value = serde_json::to_value(&s).unwrap();
    assert_eq!(v["devices"][0]["categories"][0]["used"], 100u64 << 20);
    assert_eq!(v["processes"][1]["state"], "exited");
    assert_eq!(v["processes"][0]["devices"][1]["categories"][3]["name"], "TRACE");
}

fn fixed() -> Snapshot {
    let cat = |name: &str, used: u64, total: u64| DeviceCategory {
        name: name.into(),
        used,
        total,
        count: used / 4096,
    };
    let pcat = |name: &str, bytes: u64| ProcessCategory {
        name: name.into(),
        bytes,
        count: 3,
        peak: bytes * 2,
        allocs: 10,
        frees: 7,
    };
    let dev = |id: u32, name: &str, dram: u64| DeviceRow {
        id,
        hw_id: format!("{:#x}", 0x5157_0000_0000_0000u64 + id as u64),
        kind: "tt-sim".into(),
        arch: "wormhole_b0".into(),
        name: name.into(),
        remote: id == 1,
        categories: vec![
            cat("DRAM", dram, 11 << 30),
            cat("L1", 3 << 20, 60 << 20),
            cat("L1_SMALL", 0, 4 << 20),
            cat("TRACE", 48 << 20, 768 << 20),
        ],
        processes: 1,

        sources: vec![],
    };
    let proc_ = |pid: u32, state: ProcState, left: bool| ProcessRow {
        id: ProcessIdentity {
            pid,
            start_time: 1000 + pid as u64,
            uid: 1000,
            user: "alice".into(),
            name: "ttmem, \"sim\"".into(),
            cmdline: "ttmem sim run".into(),
        },
        state,
        left_behind: left,
        age_s: 12.5,
        devices: vec![ProcessDevice {
            id: 0,
            hw_id: "0x5157000000000000".into(),
            name: "n300-L".into(),
            logical_id: 0,
            categories: vec![pcat("DRAM", 5 << 30), pcat("L1", 3 << 20), pcat("TRACE", 48 << 20)],
        }],
        totals: vec![],
        peak_bytes: 10 << 30,
        events: EventStats {
            written: 100,
            lost: 0,
            ring_capacity: 4096,
        },
        rejected: 0,
        region: "/dev/shm/ttmem/x.ttmem".into(),
        device_ids: vec![0],
        source: SourceKind::Region,
        holds: vec![],
        updated_unix_ns: None,
    };
    Snapshot {
        schema: 1,
        source: "regions".into(),
        region_dir: "/dev/shm/ttmem".into(),
        timestamp_ns: 0,
        devices: vec![dev(0, "n300-L", 5 << 30), dev(1, "n300-R", 0)],
        processes: vec![
            proc_(4242, ProcState::Running, false),
            proc_(4343, ProcState::Exited, true),
        ],
        not_permitted: 2,
        notes: vec![],
        skipped: vec![SkippedRegion {
            path: "/dev/shm/ttmem/bad.ttmem".into(),
            reason: "not a ttmem region (wrong magic)".into(),
        }],
    }
}

#[test]
fn table_rendering() {
    insta::assert_snapshot!(render_table(&fixed()));
}

#[test]
fn csv_rendering() {
    insta::assert_snapshot!(render_devices_csv(&fixed()));
    insta::assert_snapshot!(render_processes_csv(&fixed()));
}

#[test]
fn info_rendering() {
    insta::assert_snapshot!(render_info(&fixed()));
}

#[test]
fn empty_system_says_so() {
    let s = Snapshot {
        devices: vec![],
        processes: vec![],
        skipped: vec![],
        ..fixed()
    };
    assert!(render_table(&s).contains("No devices: no process has reported to ttmem in /dev/shm/ttmem."));
}

#[test]
fn short_units() {
    assert_eq!(short_bytes(0), "0B");
    assert_eq!(short_bytes(1023), "1023B");
    assert_eq!(short_bytes(1536), "1.5K");
    assert_eq!(short_bytes(11 << 30), "11.0G");
    assert_eq!(short_bytes(768 << 20), "768M");
}
