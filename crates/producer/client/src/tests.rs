//! Unit tests of the tracker against its own region bytes.

use super::*;
use ttmem_region::decode;

fn tracker(dir: &std::path::Path) -> Tracker {
    Tracker::new(Config {
        dir: dir.into(),
        ring_events: 64,
        max_shards: 4,
        ..Config::default()
    })
}

fn spec(hw: u64) -> DeviceSpec {
    DeviceSpec::tenstorrent(
        DeviceKind::SimulatedTenstorrent,
        hw,
        0,
        "wormhole_b0",
        "n150",
        tt::wormhole_categories(),
    )
}

#[test]
fn counters_and_events_land_in_the_region_file() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(7)).unwrap();
    assert_eq!(t.register_device(&spec(7)).unwrap(), d, "registration is idempotent");
    t.alloc(d, tt::DRAM, 0x1000, 4096);
    t.alloc(d, tt::DRAM, 0x3000, 8192);
    t.free(d, tt::DRAM, 0x1000, 4096);
    t.alloc(d, tt::L1, 0x40, 32);
    let path = t.region_path().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let h = decode::decode_header(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(h.pid, std::process::id());
    assert_eq!(h.num_devices, 1);
    let dev = decode::decode_device(&bytes[h.geometry.device_offset(0) as usize..])
        .unwrap()
        .unwrap();
    assert_eq!(dev.hw_id, 7);
    assert_eq!(dev.categories[0].name, "DRAM");
    let mut dram = decode::Counters::default();
    for s in 0..h.geometry.max_shards {
        dram.add_shard(&decode::decode_cell(&bytes[h.geometry.cell_offset(s, 0, 0) as usize..]).unwrap());
    }
    assert_eq!(
        (dram.live_bytes, dram.live_count, dram.allocs, dram.frees),
        (8192, 1, 2, 1)
    );
    assert_eq!(dram.peak_bytes, 12288);
    let snap = t.snapshot();
    assert_eq!(snap.devices[0].categories[0].counters, dram);
    assert_eq!(snap.devices[0].categories[1].counters.live_bytes, 32);
    // The device registration plus four calls were recorded as events.
    assert_eq!(snap.events_written, 5);
    drop(t);
    assert!(!path.exists(), "dropping the tracker removes its region");
}

#[test]
fn events_are_decodable_with_tags() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(1)).unwrap();
    {
        let _g = t.tag("matmul_1");
        t.alloc(d, tt::L1, 0x100, 64);
    }
    t.alloc(d, tt::L1, 0x200, 64);
    let bytes = std::fs::read(t.region_path().unwrap()).unwrap();
    let h = decode::decode_header(&bytes, bytes.len() as u64).unwrap();
    let g = h.geometry;
    let strings = decode::Strings::decode(
        &bytes[g.strings_offset as usize..][..ttmem_region::STRINGS_HEADER_SIZE],
        &bytes[g.strings_data_offset() as usize..][..g.strings_bytes as usize],
    );
    let shard = (0..g.max_shards - 1)
        .find(|&s| decode::decode_shard(&bytes[g.shard_offset(s) as usize..]).unwrap().head == 3)
        .expect("the test thread owns one shard with three events");
    let reg = decode::decode_event(&bytes[g.event_offset(shard, 0) as usize..], 0).unwrap();
    assert_eq!((reg.kind, reg.address), (ttmem_region::EventKind::DeviceRegistered, 1));
    let e0 = decode::decode_event(&bytes[g.event_offset(shard, 1) as usize..], 1).unwrap();
    let e1 = decode::decode_event(&bytes[g.event_offset(shard, 2) as usize..], 2).unwrap();
    assert_eq!(e0.kind, ttmem_region::EventKind::Alloc);
    assert_eq!(strings.get(e0.tag), Some("matmul_1"));
    assert_eq!(e1.tag, 0, "the scope ended");
    assert_eq!(e0.thread, proc_info::thread_id());
}

#[test]
fn unregistered_devices_and_categories_are_rejected_not_counted() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(1)).unwrap();
    t.alloc(Device(9), tt::DRAM, 0, 10);
    t.alloc(d, 15, 0, 10);
    t.alloc(d, 200, 0, 10);
    let s = t.snapshot();
    assert_eq!(s.rejected, 3);
    assert!(s.devices[0].categories.iter().all(|c| c.counters.allocs == 0));
}

#[test]
fn free_by_address_uses_the_map() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(1)).unwrap();
    t.alloc_mapped(d, tt::TRACE, 0xAA00, 1 << 20);
    assert!(t.free_addr(d, 0xAA00));
    assert!(!t.free_addr(d, 0xAA00), "second free of the same address is unknown");
    let c = &t.snapshot().devices[0].categories[tt::TRACE as usize].counters;
    assert_eq!((c.live_bytes, c.allocs, c.frees, c.peak_bytes), (0, 1, 1, 1 << 20));
}

#[test]
fn threads_give_exact_counters_even_beyond_the_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    // Four shards: three owned plus one shared, with eight threads at once.
    let t = Arc::new(tracker(dir.path()));
    let d = t.register_device(&spec(1)).unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let handles: Vec<_> = (0..8u64)
        .map(|i| {
            let (t, b) = (t.clone(), barrier.clone());
            std::thread::spawn(move || {
                b.wait();
                for j in 0..10_000u64 {
                    t.alloc(d, tt::DRAM, i << 32 | j, 100 + i);
                    if j % 2 == 0 {
                        t.free(d, tt::DRAM, i << 32 | j, 100 + i);
                    }
                }
                b.wait();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let c = &t.snapshot().devices[0].categories[0].counters;
    let per_thread_live: i64 = (0..8).map(|i| 5_000 * (100 + i)).sum();
    assert_eq!(c.allocs, 80_000);
    assert_eq!(c.frees, 40_000);
    assert_eq!(c.live_count, 40_000);
    assert_eq!(c.live_bytes, per_thread_live);
    assert!(c.peak_bytes >= c.live_bytes);
}

#[test]
fn disabled_tracker_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::new(Config {
        dir: dir.path().into(),
        disabled: true,
        ..Config::default()
    });
    assert!(!t.is_enabled());
    assert_eq!(
        t.register_device(&spec(1)).unwrap(),
        Device(0),
        "a no-op handle, not an error"
    );
    t.alloc(Device(0), 0, 0, 1);
    assert_eq!(t.snapshot(), Snapshot::default());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn unusable_directory_falls_back_to_in_process_counting() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let t = Tracker::new(Config {
        dir: file,
        ..Config::default()
    });
    let d = t.register_device(&spec(1)).unwrap();
    t.alloc(d, tt::DRAM, 0, 64);
    let s = t.snapshot();
    assert_eq!(s.region_path, None);
    assert_eq!(s.devices[0].categories[0].counters.live_bytes, 64);
}

#[test]
fn ring_overwrites_and_counts_loss_for_an_attached_reader() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(1)).unwrap();
    // Pretend a reader attached and read nothing.
    let region = t.state.lock().current.clone().unwrap();
    region.header().reader_pid.store(1, Ordering::Relaxed);
    for i in 0..100u64 {
        t.alloc(d, tt::L1, i * 64, 64);
    }
    let s = t.snapshot();
    assert_eq!(s.events_written, 101);
    assert_eq!(
        s.events_lost,
        101 - 64,
        "events beyond the 64-slot ring overwrote unread ones"
    );
    assert_eq!(
        s.devices[0].categories[1].counters.live_count, 100,
        "counters stay exact"
    );
    assert!(region.bytes().len() as u64 == region.geometry.region_size);
}

#[test]
fn a_hostile_read_position_cannot_break_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(1)).unwrap();
    let region = t.state.lock().current.clone().unwrap();
    region.header().reader_pid.store(1, Ordering::Relaxed);
    for s in 0..region.geometry.max_shards {
        region.shard(s).read_pos.store(u64::MAX, Ordering::Relaxed);
    }
    for i in 0..200u64 {
        t.alloc(d, tt::L1, i, 1);
    }
    let s = t.snapshot();
    assert_eq!(
        s.events_lost, 0,
        "a read position ahead of the writer counts nothing as lost"
    );
    assert_eq!(s.devices[0].categories[1].counters.live_count, 200);
}

#[test]
fn events_carry_monotonic_coarse_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(1)).unwrap();
    t.alloc(d, tt::DRAM, 0, 1);
    // The ticker is a thread: on a loaded machine it may run late, so leave wide margins.
    std::thread::sleep(std::time::Duration::from_millis(100));
    t.alloc(d, tt::DRAM, 64, 1);
    let bytes = std::fs::read(t.region_path().unwrap()).unwrap();
    let h = decode::decode_header(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(h.flags & ttmem_region::FLAG_CLOCK_TSC, 0);
    assert_eq!((h.clock_ticks_per_sec, h.clock_resolution_us), (1_000_000_000, 1000));
    let g = h.geometry;
    let shard = (0..g.max_shards - 1)
        .find(|&s| decode::decode_shard(&bytes[g.shard_offset(s) as usize..]).unwrap().head == 3)
        .unwrap();
    let e: Vec<_> = (0..3)
        .map(|i| decode::decode_event(&bytes[g.event_offset(shard, i) as usize..], i).unwrap())
        .collect();
    assert!(
        e[0].ticks + 1_000_000_000 >= h.clock_monotonic_ns,
        "stamped near region creation"
    );
    assert!(
        e[2].ticks >= e[1].ticks + 50_000_000,
        "100 ms apart, seen through a 1 ms clock"
    );
    assert!(e[2].ticks <= clock::monotonic_ns());
}

/// Small enough for Miri (`scripts/test.sh` runs it there): threads, shard claiming, the shared
/// shard, ring writes and snapshot reads on an anonymous region.
#[test]
fn miri_threads_on_an_anonymous_region() {
    let t = Arc::new(Tracker::new(Config {
        dir: "/dev/null".into(), // not a directory: the anonymous fallback
        ring_events: 16,
        max_shards: 2,
        clock: ClockMode::Tsc,
        ..Config::default()
    }));
    let d = t.register_device(&spec(3)).unwrap();
    let handles: Vec<_> = (0..3u64)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                let _tag = t.tag("miri");
                for j in 0..20u64 {
                    t.alloc(d, tt::L1, i << 32 | j, 8);
                    if j % 2 == 1 {
                        t.free(d, tt::L1, i << 32 | j, 8);
                    }
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let c = &t.snapshot().devices[0].categories[tt::L1 as usize].counters;
    assert_eq!((c.allocs, c.frees, c.live_bytes), (60, 30, 240));
}
