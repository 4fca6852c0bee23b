//! Rendering snapshots on ratatui's test backend, and state tests.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ttmem_model::api::{Allocation, EventKind, RecentEvent};
use ttmem_model::{
    DeviceCategory, DeviceRow, EventStats, ProcState, ProcessCategory, ProcessDevice, ProcessIdentity, ProcessRow,
    Snapshot, SourceKind,
};

use super::*;
use crate::input::Action;
use crate::source::Detail;

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn device(id: u32, name: &str, remote: bool, dram: u64, l1: u64) -> DeviceRow {
    let cat = |n: &str, used, total| DeviceCategory {
        name: n.into(),
        used,
        total,
        count: used / MIB,
    };
    DeviceRow {
        id,
        hw_id: format!("{:#x}", 0x5157_0000_0000_0000u64 + id as u64),
        kind: "tt-sim".into(),
        arch: "wormhole_b0".into(),
        name: name.into(),
        remote,
        categories: vec![
            cat("DRAM", dram, 10 * GIB + GIB / 2),
            cat("L1", l1, 60 * MIB),
            cat("L1_SMALL", 256 << 10, 4 * MIB),
            cat("TRACE", 48 * MIB, 768 * MIB),
            cat("CB", 10 * MIB, 16 * MIB),
            cat("KERNEL", 4 * MIB, 6 * MIB),
        ],
        processes: 1,

        sources: vec![],
    }
}

fn allocation(address: u64, size: u64, category: &str, tag: &str) -> Allocation {
    Allocation {
        pid: 8,
        device: Some(0),
        category: category.into(),
        address,
        size,
        age_s: 75,
        tag: Some(tag.into()),
    }
}

fn process(pid: u32, name: &str, state: &str, chips: &[u32], dram: u64) -> ProcessRow {
    let pc = |n: &str, bytes| ProcessCategory {
        name: n.into(),
        bytes,
        count: 3,
        peak: bytes,
        allocs: 5,
        frees: 2,
    };
    ProcessRow {
        id: ProcessIdentity {
            pid,
            start_time: 100 + pid as u64,
            uid: 1000,
            user: "alice".into(),
            name: name.into(),
            cmdline: name.into(),
        },
        state: if state == "running" {
            ProcState::Running
        } else {
            ProcState::Exited
        },
        left_behind: state == "exited",
        age_s: 75.0,
        devices: chips
            .iter()
            .map(|&id| ProcessDevice {
                id,
                hw_id: format!("{id:#x}"),
                name: format!("chip{id}"),
                logical_id: 0,
                categories: vec![pc("DRAM", dram), pc("L1", 28 * MIB), pc("TRACE", 48 * MIB)],
            })
            .collect(),
        // As the report builds them: per category, summed over the process's devices.
        totals: vec![
            pc("DRAM", dram * chips.len() as u64),
            pc("L1", 28 * MIB * chips.len() as u64),
            pc("TRACE", 48 * MIB * chips.len() as u64),
        ],
        peak_bytes: dram * chips.len() as u64,
        events: EventStats {
            written: 10,
            lost: 0,
            ring_capacity: 4096,
        },
        rejected: 0,
        region: String::new(),
        device_ids: chips.to_vec(),
        source: SourceKind::Region,
        holds: vec![],
        updated_unix_ns: None,
    }
}

fn host(devices: Vec<DeviceRow>, processes: Vec<ProcessRow>, with_maps: bool) -> HostData {
    let maps = if with_maps {
        devices
            .iter()
            .map(|d| {
                (
                    d.id,
                    (
                        (0..64)
                            .map(|i| {
                                if i < 30 {
                                    1.0
                                } else if i < 40 {
                                    0.4
                                } else {
                                    0.0
                                }
                            })
                            .collect(),
                        4 * GIB,
                    ),
                )
            })
            .collect()
    } else {
        Default::default()
    };
    HostData {
        label: "local".into(),
        source: if with_maps {
            "daemon unix:/run/ttmem/api.sock".into()
        } else {
            "regions in /dev/shm/ttmem (no daemon: counters only)".into()
        },
        snapshot: Some(std::sync::Arc::new(Snapshot {
            schema: 1,
            source: "daemon".into(),
            region_dir: "/dev/shm/ttmem".into(),
            timestamp_ns: 0,
            devices,
            processes,
            skipped: vec![],
            not_permitted: 0,
            notes: vec![],
        })),
        maps,
        error: None,
        etag: None,
        changed: true,
        alert: None,
    }
}

fn app(hosts: Vec<HostData>) -> App {
    let mut a = App::new(1000, true, "tt-host".into());
    for i in 0..20 {
        // A rising history so the sparkline shows.
        let mut h = hosts.clone();
        for d in h
            .iter_mut()
            .filter_map(|h| h.snapshot.as_mut())
            .flat_map(|s| std::sync::Arc::make_mut(s).devices.iter_mut())
        {
            d.categories[0].used = d.categories[0].used * (i + 1) / 20;
        }
        a.update(h, "2026-11-24 00:10:00".into());
    }
    a
}

fn draw(a: &App, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::render(f, a)).unwrap();
    t.backend().to_string()
}

#[test]
fn one_chip() {
    let a = app(vec![host(
        vec![device(0, "n150", false, 5 * GIB, 28 * MIB)],
        vec![process(4242, "sim:llm-inference", "running", &[0], 5 * GIB)],
        true,
    )]);
    insta::assert_snapshot!(draw(&a, 120, 30));
}

#[test]
fn a_firing_alert_gets_a_line_under_the_header() {
    let mut h = host(
        vec![device(0, "n150", false, 10 * GIB, 28 * MIB)],
        vec![process(4242, "sim:llm-inference", "running", &[0], 10 * GIB)],
        true,
    );
    h.alert = Some("ALERT TtmemDramHigh: DRAM of chip 0 (0x5157000000000000) is 95.2% used".into());
    let screen = draw(&app(vec![h]), 120, 30);
    let lines: Vec<&str> = screen.lines().collect();
    assert!(lines[2].contains("ALERT TtmemDramHigh: DRAM of chip 0"), "{screen}");
    assert!(lines[3].contains("n150") || screen.contains("n150"), "{screen}");
    let quiet = draw(
        &app(vec![host(vec![device(0, "n150", false, GIB, MIB)], vec![], true)]),
        120,
        30,
    );
    assert!(!quiet.contains("ALERT"));
}

#[test]
fn n300_local_and_remote() {
    let a = app(vec![host(
        vec![
            device(0, "n300-L", false, 9 * GIB + GIB / 2, 28 * MIB),
            device(1, "n300-R", true, 2 * GIB, 55 * MIB),
        ],
        vec![process(10, "sim:llm-inference", "running", &[0, 1], 5 * GIB)],
        true,
    )]);
    insta::assert_snapshot!(draw(&a, 120, 34));
}

#[test]
fn galaxy_32_chips_is_compact() {
    let devices = (0..32)
        .map(|i| {
            device(
                i,
                &format!("T{}:N{}", i / 8 + 1, i % 8),
                false,
                (i as u64 % 10 + 1) * GIB,
                10 * MIB,
            )
        })
        .collect();
    let procs = (0..4)
        .map(|i| process(100 + i, "sim:training", "running", &[i * 8, i * 8 + 1], 3 * GIB))
        .collect();
    let a = app(vec![host(devices, procs, true)]);
    let screen = draw(&a, 140, 50);
    assert!(screen.contains("T4:N7"), "every chip fits in compact mode:\n{screen}");
    insta::assert_snapshot!(screen);
}

#[test]
fn exited_process_and_its_flight_recorder() {
    let mut a = app(vec![host(
        vec![device(0, "n150", false, 5 * GIB, 28 * MIB)],
        vec![
            process(7, "sim:inference", "running", &[0], 5 * GIB),
            process(8, "sim:crash", "exited", &[0], 5 * GIB),
        ],
        true,
    )]);
    let main = draw(&a, 110, 28);
    assert!(main.contains("exited*"));
    insta::assert_snapshot!("exited_main", main);
    a.sort = (0, true); // PID descending: the exited one first
    assert_eq!(a.rows()[0].process.id.pid, 8);
    a.selected = 0;
    let (_, open) = a.apply(Action::Open);
    assert_eq!(open, Some((0, 8)));
    a.detail = Some(Detail {
        allocations: vec![
            allocation(0x4000000, 48 * MIB, "TRACE", "trace"),
            allocation(0x8000000, 24 * MIB, "DRAM", "layers.0.wq"),
        ],
        total: 2,
        events: vec![RecentEvent {
            kind: EventKind::Alloc,
            device: Some(0),
            category: Some("DRAM".into()),
            address: 0x8000000,
            size: 24 * MIB,
            time_ns: 0,
            tag: Some("layers.0.wq".into()),
            matched: true,
        }],
        note: None,
    });
    insta::assert_snapshot!("exited_detail", draw(&a, 110, 24));
}

#[test]
fn narrow_terminal_still_reads() {
    let a = app(vec![host(
        vec![
            device(0, "n300-L", false, 5 * GIB, 28 * MIB),
            device(1, "n300-R", true, GIB, 0),
        ],
        vec![process(1, "sim:bursty", "running", &[0], GIB)],
        false,
    )]);
    insta::assert_snapshot!(draw(&a, 60, 30));
}

#[test]
fn help_overlay_lists_the_keys() {
    let mut a = app(vec![host(vec![device(0, "n150", false, GIB, 0)], vec![], true)]);
    a.apply(Action::Help);
    let screen = draw(&a, 100, 30);
    assert!(screen.contains("reverse the sort") && screen.contains("filter by name"));
    a.apply(Action::Help);
    assert!(!draw(&a, 100, 30).contains("reverse the sort"));
}

#[test]
fn sorting_and_filters_change_the_rows() {
    let mut a = app(vec![host(
        vec![device(0, "a", false, GIB, 0), device(1, "b", false, GIB, 0)],
        vec![
            process(3, "alpha", "running", &[0], 3 * GIB),
            process(1, "beta", "running", &[1], GIB),
            process(2, "gamma", "exited", &[0], 2 * GIB),
        ],
        true,
    )]);
    let pids = |a: &App| a.rows().iter().map(|r| r.process.id.pid).collect::<Vec<_>>();
    assert_eq!(pids(&a), [1, 2, 3], "by PID");
    let dram = a.columns().iter().position(|c| c == "DRAM").unwrap();
    a.sort = (dram, true);
    assert_eq!(pids(&a), [3, 2, 1], "largest DRAM first");
    a.apply(Action::ChipFilter);
    assert_eq!(a.chip_filter, Some((0, 0)));
    assert_eq!(pids(&a), [3, 2]);
    a.apply(Action::ChipFilter);
    assert_eq!(pids(&a), [1]);
    a.apply(Action::ChipFilter);
    assert_eq!(a.chip_filter, None);
    a.apply(Action::StartFilter);
    for c in "GAM".chars() {
        a.apply(Action::FilterChar(c));
    }
    a.apply(Action::FilterDone);
    assert_eq!(pids(&a), [2], "case-insensitive name filter");
    a.apply(Action::FilterCancel);
    assert_eq!(pids(&a).len(), 3);
    a.apply(Action::Down);
    a.apply(Action::Down);
    a.apply(Action::Down);
    assert_eq!(a.selected, 2, "selection stays on the table");
    a.apply(Action::SortNext);
    assert_eq!(a.sort.0, dram + 1);
    assert_eq!(a.apply(Action::Quit), (true, None));
    a.apply(Action::Faster);
    assert_eq!(a.refresh_ms, 500);
}

#[test]
fn without_a_daemon_it_says_only_counters_are_shown() {
    let a = app(vec![host(
        vec![device(0, "n150", false, GIB, 0)],
        vec![process(1, "x", "running", &[0], GIB)],
        false,
    )]);
    let screen = draw(&a, 120, 30);
    assert!(screen.contains("no daemon: counters only"), "{screen}");
    assert!(screen.contains("(needs the daemon)"));
    let d = Source::Regions(ttmem_model::sources::Local {
        regions: "/nonexistent".into(),
        tt_metal: None,
        proc_root: "/proc".into(),
    })
    .detail(1, &a.hosts[0]);
    assert!(d.note.unwrap().contains("only counters are known"));
}

#[test]
fn several_hosts_side_by_side() {
    let mut a = host(
        vec![device(0, "n150", false, 5 * GIB, 28 * MIB)],
        vec![process(1, "sim:a", "running", &[0], GIB)],
        true,
    );
    a.label = "alpha".into();
    let mut b = host(
        vec![device(0, "p150", false, 9 * GIB, 0)],
        vec![process(1, "sim:b", "running", &[0], 2 * GIB)],
        true,
    );
    b.label = "beta".into();
    let app = app(vec![a, b]);
    assert_eq!(app.columns()[0], "HOST");
    let screen = draw(&app, 140, 34);
    assert!(
        screen.contains("alpha:0 n150") && screen.contains("beta:0 p150"),
        "{screen}"
    );
    insta::assert_snapshot!(screen);
}
