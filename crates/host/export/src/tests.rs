use serde_json::Value;
use ttmem_model::api::{self, ClockPair, EventKind};

use crate::{AddressRange, Format, ProcessTrace, render};

fn event(kind: EventKind, address: u64, size: u64, time_ns: u64, tag: &str) -> api::RecentEvent {
    api::RecentEvent {
        kind,
        device: Some(0),
        category: Some("DRAM".into()),
        address,
        size,
        time_ns,
        tag: Some(tag.into()).filter(|t: &String| !t.is_empty()),
        matched: true,
    }
}

/// A process that had 100 bytes before its events (at 0x0), then allocated A at 0x100 and B at
/// 0x200 and freed A: 100 + 64 live at 0x0 and 0x200.
fn trace() -> ProcessTrace {
    let live = vec![
        api::Allocation {
            pid: 7,
            device: Some(0),
            category: "DRAM".into(),
            address: 0,
            size: 100,
            age_s: 30,
            tag: None,
        },
        api::Allocation {
            pid: 7,
            device: Some(0),
            category: "DRAM".into(),
            address: 0x200,
            size: 64,
            age_s: 0,
            tag: Some("kv".into()),
        },
    ];
    ProcessTrace {
        pid: 7,
        name: "model".into(),
        clock: ClockPair {
            monotonic_ns: 10_000_000_000,
            unix_ns: 1_800_000_000_000_000_000,
        },
        since_unix_ns: None,
        live,
        events: vec![
            event(EventKind::Alloc, 0x100, 32, 9_000_000_000, "a"),
            event(EventKind::Alloc, 0x200, 64, 9_100_000_000, "kv"),
            event(EventKind::Free, 0x100, 32, 9_200_000_000, "a"),
        ],
        history: vec![api::History {
            device: 0,
            category: "DRAM".into(),
            pid: Some(7),
            resolution: "1s".into(),
            from: 1_799_999_990,
            to: 1_800_000_000,
            points: vec![(1_799_999_990, 100), (1_799_999_999, 164)],
        }],
        ranges: vec![AddressRange {
            device: 0,
            category: "DRAM".into(),
            base: 0,
            end: 0x1000,
            banks: 1,
        }],
    }
}

#[test]
fn perfetto_counters_are_exact_at_every_event_and_end_at_the_live_sum() {
    let v: Value = serde_json::from_slice(&render(Format::Perfetto, &trace()).unwrap()).unwrap();
    let ev = v["traceEvents"].as_array().unwrap();
    let counters: Vec<(u64, u64)> = ev
        .iter()
        .filter(|e| e["ph"] == "C")
        .map(|e| (e["ts"].as_u64().unwrap(), e["args"]["bytes"].as_u64().unwrap()))
        .collect();
    let base = 1_800_000_000_000_000u64; // unix µs at monotonic 10 s
    // History before the first event (at 9 s): the first point only (the second is later).
    assert!(counters.contains(&(1_799_999_990_000_000, 100)));
    assert!(!counters.contains(&(1_799_999_999_000_000, 164)), "{counters:?}");
    // Just before the first event, after each, and now.
    for want in [
        (base - 1_000_000 - 1, 100),
        (base - 1_000_000, 132),
        (base - 900_000, 196),
        (base - 800_000, 164),
        (base, 164),
    ] {
        assert!(counters.contains(&want), "{want:?} in {counters:?}");
    }
    let instants: Vec<&Value> = ev.iter().filter(|e| e["ph"] == "i").collect();
    assert_eq!(instants.len(), 3);
    assert_eq!(instants[2]["name"], "free");
    assert_eq!(instants[2]["args"]["address"], 0x100);
    // Lifetimes: A from its alloc to its free, kv from its alloc to now, the untagged one
    // from its age.
    let begins: Vec<(&str, u64)> = ev
        .iter()
        .filter(|e| e["ph"] == "b")
        .map(|e| (e["name"].as_str().unwrap(), e["ts"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        begins,
        vec![
            ("a", base - 1_000_000),
            ("DRAM (untagged)", base - 30_000_000),
            ("kv", base - 900_000)
        ]
    );
    assert_eq!(ev.iter().filter(|e| e["ph"] == "e").count(), 3);
}

#[test]
fn since_drops_older_events_and_history() {
    let mut t = trace();
    t.since_unix_ns = Some(1_800_000_000_000_000_000 - 850_000_000);
    let v: Value = serde_json::from_slice(&render(Format::Perfetto, &t).unwrap()).unwrap();
    let ev = v["traceEvents"].as_array().unwrap();
    assert_eq!(ev.iter().filter(|e| e["ph"] == "i").count(), 1);
    assert!(
        ev.iter()
            .filter(|e| e["ph"] == "C")
            .all(|e| e["ts"].as_u64().unwrap() >= 1_799_999_999_150_000 - 1)
    );
}

#[test]
fn the_snapshot_tiles_the_bank_and_lists_the_events() {
    let bytes = render(Format::MemoryViz, &trace()).unwrap();
    let v: serde_json::Value = serde_pickle::from_slice(&bytes, serde_pickle::DeOptions::new()).unwrap();
    let seg = &v["segments"][0];
    assert_eq!(
        (
            seg["device"].as_u64(),
            seg["address"].as_u64(),
            seg["total_size"].as_u64()
        ),
        (Some(0), Some(0), Some(0x1000))
    );
    assert_eq!(seg["allocated_size"], 164);
    let blocks: Vec<(u64, u64, &str)> = seg["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_u64().unwrap(),
                b["size"].as_u64().unwrap(),
                b["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        blocks,
        vec![
            (0, 100, "active_allocated"),
            (100, 0x200 - 100, "inactive"),
            (0x200, 64, "active_allocated"),
            (0x240, 0x1000 - 0x240, "inactive")
        ]
    );
    let trace: Vec<(&str, u64)> = v["device_traces"][0]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["addr"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        trace,
        vec![
            ("alloc", 0x100),
            ("alloc", 0x200),
            ("free_requested", 0x100),
            ("free_completed", 0x100)
        ]
    );
    assert_eq!(v["device_traces"][0][1]["frames"][0]["name"], "kv");
    assert_eq!(v["device_traces"][0][1]["category"], "DRAM");
}

#[test]
fn an_event_on_an_absurd_chip_id_is_left_out_not_allocated_for() {
    let mut t = trace();
    t.events[0].device = Some(u32::MAX);
    let bytes = render(Format::MemoryViz, &t).unwrap();
    assert!(bytes.len() < 100_000);
    assert_eq!(Format::parse("memory-viz"), Some(Format::MemoryViz));
    assert_eq!(Format::parse("svg"), None);
}
