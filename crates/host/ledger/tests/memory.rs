//! The daemon's memory budget (at most 64 bytes per live allocation), measured: a counting
//! global allocator sees every byte the ledger takes from the heap while a million
//! allocations go in, and the figure the daemon reports (`Ledger::map_bytes`) must agree with
//! it. One test in this binary, so no other test's allocations are counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ttmem_ledger::{CategoryInfo, DeviceInfo, Event, EventKind, Ledger, ProcKey};
use ttmem_region::DeviceKind;

/// Bytes currently allocated from the heap by this test binary.
static LIVE: AtomicUsize = AtomicUsize::new(0);

struct Counting;

// SAFETY: every call is forwarded to the system allocator unchanged; only a counter is kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's pointer and layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's arguments.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_add(new_size, Ordering::Relaxed);
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn a_million_live_allocations_take_at_most_64_bytes_each_of_heap() {
    const N: u64 = 1_000_000;
    let mut l = Ledger::new(0);
    let dev = l.add_device(DeviceInfo {
        kind: DeviceKind::SimulatedTenstorrent,
        hw_id: 7,
        logical_id: 0,
        flags: 0,
        arch: "wormhole_b0".into(),
        name: "n150".into(),
        categories: vec![CategoryInfo {
            name: "DRAM".into(),
            capacity: 12 << 30,
            addr_base: 0,
            addr_end: 1 << 30,
            banks: 12,
            alignment: 32,
        }],
    });
    l.add_process(ProcKey(1));
    // Batches as the collector applies them; the batch buffer is freed before measuring.
    let before = LIVE.load(Ordering::Relaxed);
    for chunk in (0..N).collect::<Vec<_>>().chunks(4096) {
        let events: Vec<Event> = chunk
            .iter()
            .map(|&i| Event {
                kind: EventKind::Alloc,
                device: dev,
                category: 0,
                address: i * 64,
                size: 64,
                time_ns: i,
                tag: 0,
                stream: 0,
            })
            .collect();
        l.apply_batch(ProcKey(1), &events);
    }
    let measured = LIVE.load(Ordering::Relaxed).saturating_sub(before) as f64 / N as f64;
    assert_eq!(l.live_allocations(), N);
    assert!(measured <= 64.0, "{measured:.1} bytes of heap per live allocation");
    // The daemon's own figure (/api/v1/stats) is the map's size: within 10 % of the heap the
    // whole ledger took (the rest is the flight recorder and the device table).
    let reported = l.map_bytes() as f64 / N as f64;
    eprintln!("heap per live allocation: {measured:.1} B measured, {reported:.1} B reported");
    assert!(
        (reported - measured).abs() <= measured * 0.1,
        "reported {reported:.1} B, measured {measured:.1} B per allocation"
    );
}
