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
    let ghost = dir.path().join("0-1073741808-1.ttmem");
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

fn write_variant(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(format!("{name}.ttmem"));
    fs::write(&p, bytes).unwrap();
    p
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
    for (name, bytes, _) in &cases {
        write_variant(dir.path(), name, bytes);
    }
    let s = scan(dir.path(), ScanOptions { events_per_shard: 8 }).unwrap();
    assert!(s.regions.is_empty());
    assert_eq!(s.skipped.len(), cases.len());
    for (name, _, reason) in &cases {
        let k = s.skipped.iter().find(|k| k.path.file_stem().unwrap() == *name).unwrap();
        assert!(k.reason.contains(reason), "{name}: {}", k.reason);
    }
    let removed = gc(dir.path(), false, true).unwrap();
    assert_eq!(removed.len(), cases.len());
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
