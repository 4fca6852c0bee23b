//! PyTorch's memory snapshot, the dict that `torch.cuda.memory._snapshot()` returns and
//! `memory_viz` (pytorch.org/memory_viz, `torch.cuda._memory_viz`) loads, as documented in
//! `torch.cuda.memory._snapshot`'s docstring. What ttmem fills:
//! - `segments`: one per chip and category, spanning the category's address range over all
//!   its banks (or the allocations' span where the source gave none), with `device`, `address`, `total_size`,
//!   `allocated_size`, `active_size`, `requested_size`, `stream` (0), `segment_type`
//!   (`"large"`), `is_expandable` (false), `frames` (empty), and `blocks` that tile it: each
//!   live allocation `active_allocated`, each gap `inactive`. ttmem adds `category`.
//! - `device_traces`: one list per chip id, of `alloc`, `free_requested` and `free_completed`
//!   entries with `addr`, `size`, `stream` (0), `time_us` (Unix) and `frames`; ttmem adds
//!   `category` (the buffer type).
//! - `frames`: one frame whose `name` is the allocation's tag (`filename` `"ttmem"`, `line` 0).
//!
//! Addresses are flat: a category interleaved over N banks spans N times its bank's range, and
//! an address `a` becomes `base + (a - base) * N` ([`crate::AddressRange::flat`]), so each
//! buffer shows its whole size without overlapping the next. With one bank they are the real
//! addresses.
//!
//! Left out: `segment_pool_id` (a tuple, and the file holds only dicts, lists, ints, strings
//! and bools), `allocator_settings`, and segment_alloc entries (a chip's banks are not
//! allocated in segments).

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use ttmem_model::api::EventKind;

use crate::{ProcessTrace, Track, label};

/// The highest chip id given its own trace list.
const MAX_CHIP: usize = 4095;

/// The snapshot's top level.
#[derive(Serialize, Debug)]
pub struct Snapshot {
    segments: Vec<Segment>,
    device_traces: Vec<Vec<TraceEntry>>,
}

#[derive(Serialize, Debug)]
struct Segment {
    device: u32,
    address: u64,
    total_size: u64,
    allocated_size: u64,
    active_size: u64,
    requested_size: u64,
    stream: u64,
    segment_type: &'static str,
    is_expandable: bool,
    frames: Vec<Frame>,
    blocks: Vec<Block>,
    category: String,
}

#[derive(Serialize, Debug)]
struct Block {
    address: u64,
    size: u64,
    requested_size: u64,
    state: &'static str,
    frames: Vec<Frame>,
}

#[derive(Serialize, Debug, Clone)]
struct Frame {
    filename: &'static str,
    line: u64,
    name: String,
}

#[derive(Serialize, Debug)]
struct TraceEntry {
    action: &'static str,
    addr: u64,
    size: u64,
    stream: u64,
    time_us: u64,
    frames: Vec<Frame>,
    category: String,
}

fn frames(tag: Option<&str>, category: &str) -> Vec<Frame> {
    vec![Frame {
        filename: "ttmem",
        line: 0,
        name: label(tag, category),
    }]
}

/// The snapshot of one process.
pub fn memory_viz(t: &ProcessTrace) -> Snapshot {
    let mut by_track: BTreeMap<Track, Vec<&ttmem_model::api::Allocation>> = BTreeMap::new();
    for a in &t.live {
        if let Some(d) = a.device {
            by_track.entry((d, a.category.clone())).or_default().push(a);
        }
    }
    for r in &t.ranges {
        by_track.entry((r.device, r.category.clone())).or_default();
    }
    let mut segments = Vec::new();
    for ((device, category), mut allocs) in by_track {
        allocs.sort_by_key(|a| a.address);
        let range = t.ranges.iter().find(|r| r.device == device && r.category == category);
        let flat = |a: u64| range.map_or(a, |r| r.flat(a));
        let lo = allocs.first().map_or(u64::MAX, |a| flat(a.address));
        let hi = allocs
            .iter()
            .map(|a| flat(a.address).saturating_add(a.size))
            .max()
            .unwrap_or(0);
        let (base, end) = match range {
            Some(r) => (r.base.min(lo), r.flat(r.end).max(hi)),
            None if allocs.is_empty() => continue,
            None => (lo, hi),
        };
        let mut blocks = Vec::new();
        let mut cursor = base;
        for a in &allocs {
            let at = flat(a.address);
            if at > cursor {
                blocks.push(Block {
                    address: cursor,
                    size: at - cursor,
                    requested_size: 0,
                    state: "inactive",
                    frames: Vec::new(),
                });
            }
            blocks.push(Block {
                address: at,
                size: a.size,
                requested_size: a.size,
                state: "active_allocated",
                frames: frames(a.tag.as_deref(), &category),
            });
            cursor = cursor.max(at.saturating_add(a.size));
        }
        if end > cursor {
            blocks.push(Block {
                address: cursor,
                size: end - cursor,
                requested_size: 0,
                state: "inactive",
                frames: Vec::new(),
            });
        }
        let allocated: u64 = allocs.iter().map(|a| a.size).sum();
        segments.push(Segment {
            device,
            address: base,
            total_size: end - base,
            allocated_size: allocated,
            active_size: allocated,
            requested_size: allocated,
            stream: 0,
            segment_type: "large",
            is_expandable: false,
            frames: Vec::new(),
            blocks,
            category,
        });
    }
    let placed = t.placed();
    let chips: BTreeSet<u32> = segments
        .iter()
        .map(|s| s.device)
        .chain(placed.iter().map(|p| p.device))
        .collect();
    let mut device_traces: Vec<Vec<TraceEntry>> = Vec::new();
    // Chip ids are the daemon's table indices, so small; a bound keeps a bad one from sizing this.
    device_traces.resize_with(chips.last().map_or(1, |&m| (m as usize).min(MAX_CHIP) + 1), Vec::new);
    for p in &placed {
        let e = p.event;
        let range = t
            .ranges
            .iter()
            .find(|r| r.device == p.device && r.category == p.category);
        let entry = |action| TraceEntry {
            action,
            addr: range.map_or(e.address, |r| r.flat(e.address)),
            size: e.size,
            stream: 0,
            time_us: p.unix_us,
            frames: frames(e.tag.as_deref(), p.category),
            category: p.category.to_string(),
        };
        let Some(list) = device_traces.get_mut(p.device as usize) else {
            continue;
        };
        match e.kind {
            EventKind::Alloc => list.push(entry("alloc")),
            EventKind::Free => {
                list.push(entry("free_requested"));
                list.push(entry("free_completed"));
            }
        }
    }
    Snapshot {
        segments,
        device_traces,
    }
}
