//! Reader tests against real region files, valid and hostile.

use super::*;
use proptest::prelude::*;
use ttmem_client::{Config, DeviceSpec, Tracker, tt};
use ttmem_region::DeviceKind;

fn tracker(dir: &Path) -> Tracker {
    Tracker::new(Config {
        dir: dir.into(),
        ring_events: 64,
        max_shards: 4,
        ..Config::default()
    })
}

fn populated(dir: &Path) -> (Tracker, PathBuf) {
    let t = tracker(dir);
    let spec = DeviceSpec::tenstorrent(
        DeviceKind::SimulatedTenstorrent,
        0xAB,
        0,
        "wormhole_b0",
        "n150",
        tt::wormhole_categories(),
    );
    let d = t.register_device(&spec).unwrap();
    let _tag = t.tag("weights");
    t.alloc(d, tt::DRAM, 0x1000, 1 << 20);
    t.alloc(d, tt::L1, 0x40, 2048);
    t.free(d, tt::L1, 0x40, 2048);
    let path = t.region_path().unwrap();
    (t, path)
}

#[test]
fn a_live_region_is_read_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, path) = populated(dir.path());
    let s = scan(dir.path(), ScanOptions { events_per_shard: 16 }).unwrap();
    assert!(s.skipped.is_empty(), "{:?}", s.skipped);
    let r = &s.regions[0];
    assert_eq!(r.path, path);
    assert_eq!(r.header.pid, std::process::id());
    assert_eq!(r.liveness, Liveness::Running);
    assert_eq!(r.devices[0].device.hw_id, 0xAB);
    assert_eq!(r.devices[0].counters[tt::DRAM as usize].live_bytes, 1 << 20);
    assert_eq!(r.devices[0].counters[tt::L1 as usize].live_bytes, 0);
    assert_eq!(r.devices[0].counters[tt::L1 as usize].peak_bytes, 2048);
    assert_eq!(r.events_written(), 4);
    assert_eq!(r.events.len(), 4);
    let tagged = r.events.iter().find(|e| e.size == 1 << 20).unwrap();
    assert_eq!(r.strings.get(tagged.tag), Some("weights"));
}

#[test]
fn a_dead_pid_or_other_boot_is_exited() {
    let dir = tempfile::tempdir().unwrap();
    let (_t, path) = populated(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let header = decode::decode_header(&bytes, bytes.len() as u64).unwrap();
    // Same pid, different start time: a reused pid.
    let mut h = header.clone();
    h.start_time += 1;
    assert_eq!(liveness(&h, current_boot_id()), Liveness::Exited);
    let mut h = header.clone();
    h.boot_id[0] ^= 0xFF;
    assert_eq!(liveness(&h, current_boot_id()), Liveness::Exited);
    assert_eq!(liveness(&header, current_boot_id()), Liveness::Running);
    // A copy claiming a pid that does not exist is exited, and gc removes it (only it).
    bytes[32..36].copy_from_slice(&0x3FFF_FFF0u32.to_le_bytes());
    let ghost = dir.path().join(name_for(&bytes).unwrap());
    fs::write(&ghost, &bytes).unwrap();
    let dry = gc(dir.path(), true, false).unwrap();
    assert_eq!(dry.len(), 1);
    assert!(ghost.exists());
    let done = gc(dir.path(), false, false).unwrap();
    assert_eq!(done[0].path, ghost);
    assert!(done[0].removed);
    assert!(!ghost.exists());
    assert!(path.exists(), "a running process's region is never collected");
}

/// The name a region's bytes must carry: its header's identity (None when the header does
/// not decode).
fn name_for(bytes: &[u8]) -> Option<String> {
    let h = decode::decode_header(bytes, bytes.len() as u64).ok()?;
    Some(ttmem_region::region_file_name(h.uid, h.pid, h.start_time))
}

/// Writes a variant under the name its header gives (so the damage under test, not the name,
/// is what a reader refuses), else under `<name>.ttmem`.
fn write_variant(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name_for(bytes).unwrap_or_else(|| format!("{name}.ttmem")));
    fs::write(&p, bytes).unwrap();
    age(&p);
    p
}

/// Makes a file look older than the creation grace period.
fn age(p: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    fs::File::options()
        .write(true)
        .open(p)
        .unwrap()
        .set_modified(old)
        .unwrap();
}

#[test]
fn a_region_being_created_is_retried_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("a.ttmem");
    let zeros = dir.path().join("b.ttmem");
    let junk = dir.path().join("c.ttmem");
    fs::write(&empty, b"").unwrap();
    fs::write(&zeros, vec![0u8; 64 << 10]).unwrap();
    fs::write(&junk, vec![0x5Au8; 64 << 10]).unwrap();
    let s = scan(dir.path(), ScanOptions::default()).unwrap();
    let names: Vec<_> = s
        .skipped
        .iter()
        .map(|k| k.path.file_name().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        ["c.ttmem"],
        "young empty or zero-filled files are still being created; garbage is reported at once"
    );
    age(&empty);
    age(&zeros);
    assert_eq!(
        scan(dir.path(), ScanOptions::default()).unwrap().skipped.len(),
        3,
        "once old, they are reported"
    );
}

#[test]
fn a_header_caught_mid_write_is_retried_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let src = tempfile::tempdir().unwrap();
    let (_t, path) = populated(src.path());
    let good = fs::read(&path).unwrap();
    // The writer has stored the magic and nothing else of the header yet (state: creating).
    let mut half = vec![0u8; good.len()];
    half[..8].copy_from_slice(&good[..8]);
    let half_path = dir.path().join("half.ttmem");
    fs::write(&half_path, &half).unwrap();
    let err = read_region(&half_path, ScanOptions::default(), None).unwrap_err();
    assert!(err.is_transient(&half_path), "{err}");
    // A first read saw zeros, the writer then finished: the error is stale, so look again.
    let done_path = dir.path().join("done.ttmem");
    fs::write(&done_path, &good).unwrap();
    assert!(RegionError::Decode(DecodeError::BadMagic).is_transient(&done_path));
    // A header of another layout version is not one being created, however young.
    let mut future = half.clone();
    future[8..12].copy_from_slice(&9u32.to_le_bytes());
    let future_path = dir.path().join("future.ttmem");
    fs::write(&future_path, &future).unwrap();
    let err_future = read_region(&future_path, ScanOptions::default(), None).unwrap_err();
    assert!(!err_future.is_transient(&future_path), "{err_future}");
    age(&half_path);
    age(&done_path);
    assert!(
        !err.is_transient(&half_path),
        "a header stuck half-written is reported once old"
    );
    assert!(!RegionError::Decode(DecodeError::BadMagic).is_transient(&done_path));
}

#[test]
fn bad_regions_are_skipped_with_clear_reasons() {
    let dir = tempfile::tempdir().unwrap();
    let good_dir = tempfile::tempdir().unwrap();
    let (_t, path) = populated(good_dir.path());
    let good = fs::read(&path).unwrap();
    let mut cases: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    cases.push(("truncated", good[..good.len() / 2].to_vec(), "truncated"));
    cases.push(("short", good[..100].to_vec(), "truncated"));
    cases.push(("empty", Vec::new(), "truncated"));
    let mut m = good.clone();
    m[0..8].copy_from_slice(b"NOTTTMEM");
    cases.push(("magic", m, "wrong magic"));
    let mut v = good.clone();
    v[8..12].copy_from_slice(&7u32.to_le_bytes());
    cases.push(("future", v, "layout version 7 is not supported"));
    cases.push((
        "random",
        (0..20_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect(),
        "wrong magic",
    ));
    let mut big = good.clone();
    big[64..68].copy_from_slice(&900u32.to_le_bytes()); // max_devices: region larger than the file
    cases.push(("counts", big, "inconsistent header"));
    let mut huge = good.clone();
    huge[72..76].copy_from_slice(&u32::MAX.to_le_bytes()); // max_shards beyond every limit
    cases.push(("shards", huge, "impossible geometry"));
    let mut dev = good.clone();
    let g = decode::decode_header(&good, good.len() as u64).unwrap().geometry;
    let at = g.device_offset(0) as usize + 20;
    dev[at..at + 4].copy_from_slice(&999u32.to_le_bytes()); // num_categories
    cases.push(("categories", dev, "num_categories"));
    let paths: Vec<PathBuf> = cases
        .iter()
        .map(|(name, bytes, _)| write_variant(dir.path(), name, bytes))
        .collect();
    let s = scan(dir.path(), ScanOptions { events_per_shard: 8 }).unwrap();
    assert!(s.regions.is_empty());
    assert_eq!(s.skipped.len(), cases.len());
    for ((name, _, reason), path) in cases.iter().zip(&paths) {
        let k = s.skipped.iter().find(|k| &k.path == path).unwrap();
        assert!(k.reason.contains(reason), "{name}: {}", k.reason);
    }
    let removed = gc(dir.path(), false, true).unwrap();
    assert_eq!(removed.len(), cases.len());
}

#[test]
fn fifos_and_symlinks_are_refused_without_blocking_or_following() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.ttmem");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let secret = dir.path().join("secret");
    fs::write(&secret, b"not yours").unwrap();
    std::os::unix::fs::symlink(&secret, dir.path().join("link.ttmem")).unwrap();
    // Would block forever on the FIFO if it were opened plainly.
    let s = scan(dir.path(), ScanOptions::default()).unwrap();
    let reasons: Vec<_> = s
        .skipped
        .iter()
        .map(|k| {
            (
                k.path.file_name().unwrap().to_str().unwrap().to_string(),
                k.reason.clone(),
            )
        })
        .collect();
    assert!(
        reasons.contains(&("fifo.ttmem".into(), "not a regular file".into())),
        "{reasons:?}"
    );
    assert!(
        reasons.contains(&(
            "link.ttmem".into(),
            "is a symbolic link; regions are regular files".into()
        )),
        "{reasons:?}"
    );
    assert!(crate::attach::Attached::open(&fifo).is_err());
}

#[test]
fn other_files_and_a_missing_directory_are_fine() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("README"), "not a region").unwrap();
    let s = scan(dir.path(), ScanOptions::default()).unwrap();
    assert!(s.dir_exists && s.regions.is_empty() && s.skipped.is_empty());
    let s = scan(&dir.path().join("nope"), ScanOptions::default()).unwrap();
    assert!(!s.dir_exists);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// Any corruption of a real region is either read with bounded values or refused; the
    /// reader never panics.
    #[test]
    fn corrupted_regions_never_panic(flips in proptest::collection::vec((0usize..70_000, any::<u8>()), 1..64), cut in proptest::option::of(0usize..200_000)) {
        let dir = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let (_t, path) = populated(src.path());
        let mut bytes = fs::read(&path).unwrap();
        for (at, v) in flips {
            if at < bytes.len() {
                bytes[at] = v;
            }
        }
        if let Some(c) = cut {
            bytes.truncate(c);
        }
        let p = write_variant(dir.path(), "x", &bytes);
        if let Ok(r) = read_region(&p, ScanOptions { events_per_shard: 64 }, current_boot_id()) {
            prop_assert!(r.devices.len() <= r.header.geometry.max_devices as usize);
            prop_assert!(r.events.len() <= 64 * r.shards.len());
        }
    }
}

mod attached {
    use super::*;
    use crate::attach::{Attached, TickClock, monotonic_ns};
    use ttmem_region::EventKind;

    #[test]
    fn drains_every_event_once_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (t, path) = populated(dir.path());
        let mut a = Attached::open(&path).unwrap();
        let devs = a.new_devices().unwrap();
        assert_eq!(devs.len(), 1);
        assert!(a.new_devices().unwrap().is_empty(), "only new devices are returned");
        assert_eq!(a.new_tags().unwrap(), vec![(1, "weights".to_string())]);
        let mut out = Vec::new();
        let s = a.drain(1000, &mut out).unwrap();
        assert_eq!((s.events, s.lost, s.anomalies), (4, 0, 0));
        assert_eq!(out[0].1.kind, EventKind::DeviceRegistered);
        assert_eq!(out.iter().filter(|(_, e)| e.kind == EventKind::Alloc).count(), 2);
        out.clear();
        assert_eq!(a.drain(1000, &mut out).unwrap().events, 0, "nothing new");
        let d = ttmem_client::Device(0);
        t.alloc(d, tt::CB, 0x77, 10);
        let _t2 = t.tag("later");
        assert_eq!(a.new_tags().unwrap(), vec![(9, "later".to_string())]);
        assert_eq!(a.drain(1000, &mut out).unwrap().events, 1);
        assert_eq!(out[0].1.address, 0x77);
        let c = a.counters().unwrap();
        assert_eq!(c[0].counters[tt::CB as usize].live_bytes, 10);
        // Timestamps are monotonic ns from the coarse clock, near now.
        let clock = TickClock::for_header(a.header());
        let ns = clock.to_ns(out[0].1.ticks);
        assert!(ns <= monotonic_ns() && ns + 5_000_000_000 > monotonic_ns());
    }

    #[test]
    fn an_attached_reader_keeps_reading_after_a_clean_exit_removed_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (t, path) = populated(dir.path());
        let mut a = Attached::open(&path).unwrap();
        // The writer frees what it held, then exits cleanly: its file is removed.
        t.free(ttmem_client::Device(0), tt::DRAM, 0x1000, 1 << 20);
        t.shutdown();
        assert!(!path.exists());
        let mut out = Vec::new();
        assert!(a.drain(1000, &mut out).unwrap().events > 0);
        let r = a.read().unwrap();
        assert_eq!(r.header.state, ttmem_region::RegionState::Exited);
        assert_eq!(
            r.devices[0].counters[tt::DRAM as usize].live_bytes,
            0,
            "the last free is seen"
        );
        assert_eq!(a.counters().unwrap()[0].counters[tt::DRAM as usize].frees, 1);
    }

    #[test]
    fn overflow_is_counted_and_a_late_reader_gets_the_last_events() {
        let dir = tempfile::tempdir().unwrap();
        let t = tracker(dir.path());
        let spec = DeviceSpec::tenstorrent(
            DeviceKind::SimulatedTenstorrent,
            1,
            0,
            "wormhole_b0",
            "n150",
            tt::wormhole_categories(),
        );
        let d = t.register_device(&spec).unwrap();
        let path = t.region_path().unwrap();
        let mut early = Attached::open(&path).unwrap();
        for i in 0..200u64 {
            t.alloc(d, tt::DRAM, i * 64, 64);
        }
        let mut out = Vec::new();
        let s = early.drain(10_000, &mut out).unwrap();
        assert_eq!(s.events, 64, "the ring holds 64");
        assert_eq!(s.lost, 201 - 64);
        assert_eq!(out.last().unwrap().1.address, 199 * 64);
        // A reader attaching now (a restarted daemon) starts from the oldest event still held.
        let mut late = Attached::open(&path).unwrap();
        out.clear();
        let s = late.drain(10_000, &mut out).unwrap();
        assert_eq!((s.events, s.lost), (64, 0));
        assert_eq!(out[0].1.address, (200 - 64) * 64);
        // Bounded drains continue where they stopped.
        let mut bounded = Attached::open(&path).unwrap();
        out.clear();
        bounded.drain(10, &mut out).unwrap();
        bounded.drain(100, &mut out).unwrap();
        assert_eq!(out.len(), 64);
        assert!(out.windows(2).all(|w| w[0].1.index + 1 == w[1].1.index));
    }

    #[test]
    fn a_hostile_region_changing_under_the_reader_is_refused_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        let (_t, real) = populated(src.path());
        let path = dir.path().join(name_for(&fs::read(&real).unwrap()).unwrap());
        fs::copy(&real, &path).unwrap();
        let mut a = Attached::open(&path).unwrap();
        let mut out = Vec::new();
        a.drain(1000, &mut out).unwrap();
        let g = a.header().geometry;
        let mut bytes = fs::read(&path).unwrap();
        // Move a head backwards: an anomaly, then the reader follows the new head.
        let shard = (0..g.max_shards).find(|&s| a.positions()[s as usize] > 0).unwrap();
        let at = g.shard_offset(shard) as usize + 8;
        bytes[at..at + 8].copy_from_slice(&1u64.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        assert_eq!(a.drain(1000, &mut out).unwrap().anomalies, 1);
        // Make a head leap: only a ring's worth is read, the rest is lost, records that do not
        // carry their sequence number are refused.
        bytes[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
        fs::write(&path, &bytes).unwrap();
        let s = a.drain(u64::MAX, &mut out).unwrap();
        assert_eq!(s.events, 0);
        assert!(s.lost > 0);
        // Truncate the file under the reader: a clear error, never a crash.
        fs::write(&path, &bytes[..5000]).unwrap();
        assert!(matches!(a.drain(1000, &mut out), Err(RegionError::Changed { .. })));
        assert!(a.counters().is_err());
        assert!(a.new_devices().is_err() || a.new_devices().unwrap().is_empty());
    }

    #[test]
    fn a_reader_racing_a_writer_accepts_only_whole_events_and_accounts_for_all() {
        let dir = tempfile::tempdir().unwrap();
        let t = std::sync::Arc::new(tracker(dir.path()));
        let spec = DeviceSpec::tenstorrent(
            DeviceKind::SimulatedTenstorrent,
            1,
            0,
            "wormhole_b0",
            "n150",
            tt::wormhole_categories(),
        );
        let d = t.register_device(&spec).unwrap();
        let mut a = Attached::open(&t.region_path().unwrap()).unwrap();
        const N: u64 = 200_000;
        let writer = {
            let t = t.clone();
            std::thread::spawn(move || {
                for i in 1..=N {
                    // Every field derives from i, so a torn record cannot look whole.
                    t.alloc(d, tt::DRAM, i << 6, i * 3);
                }
            })
        };
        let mut out = Vec::new();
        let (mut accepted, mut lost) = (0u64, 0u64);
        loop {
            let done = writer.is_finished();
            out.clear();
            let s = a.drain(50, &mut out).unwrap();
            accepted += s.events;
            lost += s.lost;
            for (_, e) in &out {
                if e.kind == EventKind::Alloc {
                    assert_eq!(e.size, (e.address >> 6) * 3, "a torn event was accepted: {e:?}");
                }
            }
            if done && s.events == 0 {
                break;
            }
        }
        writer.join().unwrap();
        assert_eq!(accepted + lost, N + 1, "every event is either read or counted lost");
        assert!(accepted > 0);
    }

    #[test]
    fn hostile_clock_calibration_cannot_overflow() {
        use std::mem::offset_of;
        use ttmem_region::raw::RawHeader;
        let dir = tempfile::tempdir().unwrap();
        let (_t, path) = populated(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let put = |bytes: &mut Vec<u8>, at: usize, v: &[u8]| bytes[at..at + v.len()].copy_from_slice(v);
        put(
            &mut bytes,
            offset_of!(RawHeader, flags),
            &ttmem_region::FLAG_CLOCK_TSC.to_le_bytes(),
        );
        let ticks_at = [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX];
        // (monotonic ns, ticks) at calibration, and what the ticks above must convert to when
        // the calibration is refused as unphysical (then one tick counts one nanosecond from
        // the header's pair, saturating at both ends).
        let refused: [(u64, u64, [u64; 5]); 3] = [
            (0, u64::MAX, [0, 0, 0, 0, 0]),
            (u64::MAX, 0, [u64::MAX; 5]),
            (1, u64::MAX - 1, [0, 0, 0, 1, 2]),
        ];
        for (mono, ticks, expected) in refused {
            put(
                &mut bytes,
                offset_of!(RawHeader, clock_monotonic_ns),
                &mono.to_le_bytes(),
            );
            put(&mut bytes, offset_of!(RawHeader, clock_ticks), &ticks.to_le_bytes());
            let h = decode::decode_header(&bytes, bytes.len() as u64).unwrap();
            assert_eq!((h.clock_monotonic_ns, h.clock_ticks), (mono, ticks));
            let c = TickClock::for_header(&h);
            assert_eq!(ticks_at.map(|t| c.to_ns(t)), expected, "calibration ({mono}, {ticks})");
        }
        // A plausible calibration (ticks and ns both since boot) is accepted: conversion is
        // exact at the calibration point, never decreasing, and at a physical rate (0.01 to 100
        // ns per tick), saturating instead of wrapping.
        put(
            &mut bytes,
            offset_of!(RawHeader, clock_monotonic_ns),
            &0u64.to_le_bytes(),
        );
        put(&mut bytes, offset_of!(RawHeader, clock_ticks), &1u64.to_le_bytes());
        let h = decode::decode_header(&bytes, bytes.len() as u64).unwrap();
        let c = TickClock::for_header(&h);
        let ns = ticks_at.map(|t| c.to_ns(t));
        assert_eq!(ns[1], 0, "the calibration point maps to its own time");
        assert!(ns.windows(2).all(|w| w[0] <= w[1]), "{ns:?}");
        assert!(
            ns[4] >= u64::MAX / 100,
            "the rate is physical and nothing wrapped: {ns:?}"
        );
    }

    fn edge_u64() -> impl Strategy<Value = u64> {
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(u64::MAX),
            Just(u64::MAX - 1),
            Just(1 << 63),
            any::<u64>(),
            0u64..200
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        /// Whole 64-bit values (extremes included) in every shard head, read position and the
        /// clock fields, rewritten between drains: the reader never panics or overflows.
        #[test]
        fn extreme_counters_never_overflow_the_reader(heads in proptest::collection::vec(edge_u64(), 4), clock in (edge_u64(), edge_u64()), tsc in any::<bool>()) {
            let dir = tempfile::tempdir().unwrap();
            let src = tempfile::tempdir().unwrap();
            let (_t, real) = populated(src.path());
            let path = dir.path().join(name_for(&fs::read(&real).unwrap()).unwrap());
            fs::copy(&real, &path).unwrap();
            let mut a = Attached::open(&path).unwrap();
            let mut out = Vec::new();
            a.drain(1000, &mut out).unwrap();
            let g = a.header().geometry;
            let mut bytes = fs::read(&path).unwrap();
            for (s, h) in heads.iter().enumerate() {
                let at = g.shard_offset(s as u32) as usize + 8;
                bytes[at..at + 8].copy_from_slice(&h.to_le_bytes());
                bytes[at + 8..at + 16].copy_from_slice(&h.wrapping_mul(3).to_le_bytes());
            }
            bytes[152..160].copy_from_slice(&clock.0.to_le_bytes());
            bytes[160..168].copy_from_slice(&clock.1.to_le_bytes());
            if tsc {
                bytes[28..32].copy_from_slice(&ttmem_region::FLAG_CLOCK_TSC.to_le_bytes());
            }
            fs::write(&path, &bytes).unwrap();
            for _ in 0..3 {
                let _ = a.drain(u64::MAX, &mut out);
            }
            if let Ok(h) = decode::decode_header(&bytes, bytes.len() as u64) {
                let c = TickClock::for_header(&h);
                for (_, e) in &out {
                    let _ = c.to_ns(e.ticks);
                }
            }
            if let Ok(r) = read_region(&path, ScanOptions { events_per_shard: 64 }, current_boot_id()) {
                prop_assert!(r.events.len() <= 64 * r.shards.len());
                let _ = (r.events_written(), r.events_lost(), r.rejected());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(100))]
        /// Any rewrite of a region between drains leaves the reader with an error or bounded
        /// results; it never panics.
        #[test]
        fn rewrites_between_drains_never_panic(flips in proptest::collection::vec((0usize..11_000_000, any::<u8>()), 1..200), cut in proptest::option::of(0usize..11_000_000)) {
            let dir = tempfile::tempdir().unwrap();
            let src = tempfile::tempdir().unwrap();
            let (_t, real) = populated(src.path());
            let path = dir.path().join(name_for(&fs::read(&real).unwrap()).unwrap());
            fs::copy(&real, &path).unwrap();
            let mut a = Attached::open(&path).unwrap();
            let mut out = Vec::new();
            a.drain(1000, &mut out).unwrap();
            let mut bytes = fs::read(&path).unwrap();
            let len = bytes.len();
            for (at, v) in flips {
                bytes[at % len] = v;
            }
            if let Some(c) = cut {
                bytes.truncate(c % len);
            }
            fs::write(&path, &bytes).unwrap();
            let _ = a.new_devices();
            let _ = a.new_tags();
            if a.drain(1 << 20, &mut out).is_ok() {
                prop_assert!(out.len() as u64 <= 4 + a.header().geometry.ring_events as u64 * a.header().geometry.max_shards as u64);
            }
            let _ = a.counters();
        }
    }
}
