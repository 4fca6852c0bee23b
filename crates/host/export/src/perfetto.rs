//! Chrome trace-event JSON (the "JSON Array/Object Format" that Perfetto UI and
//! `chrome://tracing` open):
//! - one counter track (`"ph": "C"`) per chip and category: the process's bytes over time, from
//!   the daemon's 1 s history before the recorded events and exact at every event after;
//! - one instant event (`"ph": "i"`) per allocation and free, with its address, size and tag;
//! - one async slice (`"ph": "b"`/`"e"`) per allocation lifetime, so overlapping buffers show
//!   as bars.
//!
//! `pid` is the process's pid, `tid` its chip, and `ts` Unix microseconds.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};
use ttmem_model::api::EventKind;

use crate::{Placed, ProcessTrace, Track, label, walk_back};

/// The trace of one process as a JSON object (`{"traceEvents": [...], ...}`).
pub fn perfetto(t: &ProcessTrace) -> Value {
    let placed = t.placed();
    let live = t.live_bytes();
    let (after, before) = walk_back(&placed, &live);
    let mut out = Vec::new();
    out.push(json!({"ph": "M", "name": "process_name", "pid": t.pid, "tid": 0,
        "args": {"name": format!("{} (pid {})", t.name, t.pid)}}));
    let mut chips: Vec<u32> = live
        .keys()
        .map(|k| k.0)
        .chain(placed.iter().map(|p| p.device))
        .collect();
    chips.extend(t.history.iter().map(|h| h.device));
    chips.sort_unstable();
    chips.dedup();
    for chip in &chips {
        out.push(json!({"ph": "M", "name": "thread_name", "pid": t.pid, "tid": chip,
            "args": {"name": format!("chip {chip}")}}));
    }
    counters(t, &placed, &after, &before, &live, &mut out);
    for p in &placed {
        let e = p.event;
        out.push(json!({
            "ph": "i", "s": "t", "pid": t.pid, "tid": p.device, "ts": p.unix_us,
            "name": match e.kind { EventKind::Alloc => "alloc", EventKind::Free => "free" },
            "cat": p.category,
            "args": {"device": p.device, "category": p.category, "address": e.address,
                "address_hex": format!("{:#x}", e.address), "size": e.size, "tag": e.tag,
                "matched": e.matched},
        }));
    }
    lifetimes(t, &placed, &mut out);
    json!({
        "traceEvents": out,
        "displayTimeUnit": "ms",
        "otherData": {"producer": "ttmem", "version": env!("CARGO_PKG_VERSION"), "pid": t.pid,
            "process": t.name, "clock": "unix microseconds",
            "events": placed.len(), "live_allocations": t.live.len()},
    })
}

/// Counter samples: history points before the first event of a track, the value just before
/// that event, the exact value after each event, and the value now.
fn counters(
    t: &ProcessTrace,
    placed: &[Placed<'_>],
    after: &[u64],
    before: &BTreeMap<Track, u64>,
    live: &BTreeMap<Track, u64>,
    out: &mut Vec<Value>,
) {
    let since_us = t.since_unix_ns.unwrap_or(0) / 1000;
    let mut first: HashMap<Track, u64> = HashMap::new();
    for p in placed {
        first.entry((p.device, p.category.to_string())).or_insert(p.unix_us);
    }
    let sample = |device: u32, category: &str, ts: u64, bytes: u64| {
        json!({"ph": "C", "pid": t.pid, "tid": device, "ts": ts, "cat": "memory",
            "name": format!("chip {device} {category}"), "args": {"bytes": bytes}})
    };
    for h in &t.history {
        let until = first.get(&(h.device, h.category.clone())).copied().unwrap_or(u64::MAX);
        for &(s, bytes) in &h.points {
            let ts = s.saturating_mul(1_000_000);
            if ts >= since_us && ts < until {
                out.push(sample(h.device, &h.category, ts, bytes));
            }
        }
    }
    for (track, &ts) in &first {
        let v = before.get(track).copied().unwrap_or(0);
        out.push(sample(track.0, &track.1, ts.saturating_sub(1), v));
    }
    for (p, &v) in placed.iter().zip(after) {
        out.push(sample(p.device, p.category, p.unix_us, v));
    }
    let now = t.now_us();
    let tracks: std::collections::BTreeSet<Track> = live
        .keys()
        .chain(first.keys())
        .cloned()
        .chain(
            t.history
                .iter()
                .filter(|h| !h.points.is_empty())
                .map(|h| (h.device, h.category.clone())),
        )
        .collect();
    for track in &tracks {
        out.push(sample(track.0, &track.1, now, live.get(track).copied().unwrap_or(0)));
    }
}

/// Async slices from each allocation to its free (or to now, for a live one). A live allocation
/// made before the first recorded event starts at its age, to the second.
fn lifetimes(t: &ProcessTrace, placed: &[Placed<'_>], out: &mut Vec<Value>) {
    let mut open: HashMap<(u32, &str, u64), (u64, String)> = HashMap::new();
    let mut next_id = 0u64;
    let mut slice = |device: u32, category: &str, name: &str, address: u64, size: u64, from: u64, to: u64| {
        next_id += 1;
        let id = format!("{next_id:#x}");
        out.push(
            json!({"ph": "b", "pid": t.pid, "tid": device, "ts": from, "cat": category, "id": id,
            "name": name, "args": {"address": address, "address_hex": format!("{address:#x}"), "size": size}}),
        );
        out.push(
            json!({"ph": "e", "pid": t.pid, "tid": device, "ts": to, "cat": category, "id": id,
            "name": name}),
        );
    };
    for p in placed {
        let e = p.event;
        let key = (p.device, p.category, e.address);
        match e.kind {
            EventKind::Alloc => {
                open.insert(key, (p.unix_us, label(e.tag.as_deref(), p.category)));
            }
            EventKind::Free => {
                if let Some((from, name)) = open.remove(&key) {
                    slice(p.device, p.category, &name, e.address, e.size, from, p.unix_us);
                }
            }
        }
    }
    let now = t.now_us();
    let since_us = t.since_unix_ns.unwrap_or(0) / 1000;
    for a in &t.live {
        let Some(device) = a.device else { continue };
        let name = label(a.tag.as_deref(), &a.category);
        let from = match open.remove(&(device, a.category.as_str(), a.address)) {
            Some((from, _)) => from,
            None => now.saturating_sub(a.age_s.saturating_mul(1_000_000)).max(since_us),
        };
        slice(device, &a.category, &name, a.address, a.size, from, now);
    }
}
