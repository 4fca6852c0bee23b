//! The collector driven tick by tick with injected clocks, over real region files written by
//! the real client: discovery, drain, the device numbering of allocations, death, records,
//! history sampling per wall-clock second, and retention.

use std::path::Path;
use std::time::Duration;

use ttmem_client::{Config, DeviceSpec, Tracker, tt};
use ttmem_daemon::collector::{Collector, CollectorConfig, Now, series_key};
use ttmem_ledger::SortBy;
use ttmem_model::ProcState;
use ttmem_sim::allocator::Policy;
use ttmem_sim::chip::{Arch, ChipModel};

const S: u64 = 1_000_000_000;

/// A tracker writing its region into `dir`, as a runtime's would.
fn tracker(dir: &Path) -> Tracker {
    Tracker::new(Config {
        dir: dir.into(),
        ..Config::default()
    })
}

/// A simulated Wormhole chip as the simulator declares it (`hw` 0: no hardware id).
fn spec(hw: u64, name: &str) -> DeviceSpec {
    ChipModel::new(Arch::WormholeB0, name, false, hw, 0, Policy::FirstFit).device_spec()
}

fn collector_config(dir: &Path, retention: Duration) -> CollectorConfig {
    CollectorConfig {
        retention,
        ..CollectorConfig::new(dir.into())
    }
}

fn collector(dir: &Path, retention: Duration) -> Collector {
    Collector::new(collector_config(dir, retention), 0)
}

/// Clocks at `s` seconds: monotonic from 0, wall clock from a fixed second.
fn at(s: f64) -> Now {
    Now {
        monotonic_ns: (s * S as f64) as u64,
        unix_ns: 1_700_000_000 * S + (s * S as f64) as u64,
    }
}

#[test]
fn allocations_name_every_device_by_its_ps_id_including_devices_without_a_hardware_id() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let chip = t.register_device(&spec(0x51, "n150")).unwrap();
    let anonymous = t.register_device(&spec(0, "no-hw-id")).unwrap();
    t.alloc(chip, tt::DRAM, 0x1000, 1 << 20);
    t.alloc(anonymous, tt::L1, 0x2000, 4096);

    let mut c = collector(dir.path(), Duration::from_secs(60));
    c.tick(at(0.0));
    let snap = c.snapshot_at(at(0.0).unix_ns);
    // Devices without a hardware id sort first within a kind: pid:N/index:1 is id 0.
    let ids: Vec<&str> = snap.devices.iter().map(|d| d.hw_id.as_str()).collect();
    assert_eq!(ids, [format!("pid:{}/index:1", std::process::id()).as_str(), "0x51"]);
    let key = c.key_of_pid(std::process::id()).unwrap();
    let page = c.ledger().allocations(key, SortBy::Address, 0, 10, 0).unwrap();
    let devices = c.device_ids();
    let mut named: Vec<(Option<u32>, u64)> = page
        .items
        .iter()
        .map(|a| (devices.get(&a.device).copied(), a.size))
        .collect();
    named.sort();
    assert_eq!(named, [(Some(0), 4096), (Some(1), 1 << 20)]);
    assert_eq!(
        c.ledger_device(1),
        page.items.iter().find(|a| a.size == 1 << 20).map(|a| a.device)
    );
}

#[test]
fn a_dead_writer_is_exited_recorded_sampled_no_more_and_expires_after_retention() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(0x77, "n150")).unwrap();
    t.alloc(d, tt::DRAM, 0x1000, 5 << 20);
    // A copy of the region whose pid cannot exist: a writer that died holding 5 MiB.
    let mut bytes = std::fs::read(t.region_path().unwrap()).unwrap();
    bytes[32..36].copy_from_slice(&0x3FFF_FFF0u32.to_le_bytes());
    let h = ttmem_region::decode::decode_header(&bytes, bytes.len() as u64).unwrap();
    let dead_path = dir
        .path()
        .join(ttmem_region::region_file_name(h.uid, h.pid, h.start_time));
    std::fs::write(&dead_path, &bytes).unwrap();

    let mut c = collector(dir.path(), Duration::from_secs(30));
    c.tick(at(0.0));
    let snap = c.snapshot_at(at(0.0).unix_ns);
    let dead = snap
        .processes
        .iter()
        .find(|p| p.id.pid == 0x3FFF_FFF0)
        .expect("the dead writer is listed");
    assert_eq!(dead.state, ProcState::Exited);
    assert!(dead.left_behind);
    assert_eq!(dead.totals[0].bytes, 5 << 20);
    // Device use counts the running writer only (the dead copy's 5 MiB are not added).
    assert_eq!(snap.devices[0].categories[0].used, 5 << 20);
    assert_eq!(snap.devices[0].processes, 1);
    assert!(!dead_path.exists(), "a dead process's region is removed");
    assert_eq!(c.stats().deaths, 1);
    let records = c.take_records();
    let exit = records
        .iter()
        .find(|r| r.pid == 0x3FFF_FFF0 && r.exited_unix_ns.is_some())
        .unwrap();
    assert_eq!(exit.exited_unix_ns, Some(at(0.0).unix_ns));
    assert_eq!(exit.left_behind[0]["categories"][0]["bytes"], 5u64 << 20);

    // History: one sample per wall-clock second; the dead process has no series.
    let table = c.device_table();
    let device_series = series_key(&table, 0, "DRAM", None).unwrap();
    let dead_series = series_key(&table, 0, "DRAM", Some((0x3FFF_FFF0, dead.id.start_time))).unwrap();
    t.free(d, tt::DRAM, 0x1000, 5 << 20);
    c.tick(at(1.0));
    let t0 = at(0.0).unix_ns / S;
    assert_eq!(
        c.history().query(&device_series, 0, t0, t0 + 1),
        [(t0, 5 << 20), (t0 + 1, 0)]
    );
    assert!(c.history().query(&dead_series, 0, t0, t0 + 1).is_empty());

    // Retention counts from the death on the monotonic clock.
    c.tick(at(29.0));
    assert!(c.key_of_pid(0x3FFF_FFF0).is_some());
    c.tick(at(30.0));
    assert!(c.key_of_pid(0x3FFF_FFF0).is_none());
    assert_eq!(c.snapshot().processes.len(), 1);
}

#[test]
fn counters_follow_frees_and_the_generation_moves_only_on_change() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(0x9, "n150")).unwrap();
    t.alloc(d, tt::DRAM, 0x1000, 1 << 20);
    let mut c = collector(dir.path(), Duration::from_secs(60));
    c.tick(at(0.0));
    let g = c.generation();
    c.tick(at(0.1));
    assert_eq!(c.generation(), g, "nothing changed within the same second");
    t.free(d, tt::DRAM, 0x1000, 1 << 20);
    c.tick(at(0.2));
    assert!(c.generation() > g);
    let snap = c.snapshot_at(at(0.2).unix_ns);
    assert_eq!(snap.devices[0].categories[0].used, 0);
    assert_eq!(snap.processes[0].totals[0].frees, 1);
    assert_eq!(c.ledger().live_allocations(), 0);
}

#[test]
fn tt_metal_processes_join_the_snapshot_and_an_unchanged_reading_changes_nothing() {
    use ttmem_ttmetal::layout::fixture::{Spec, build};
    let dir = tempfile::tempdir().unwrap();
    let tt = dir.path().join("tt-metal");
    std::fs::create_dir(&tt).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let spec = Spec {
        asic_id: 0xabc,
        slots: vec![(
            0,
            std::process::id() as i32,
            vec![3 << 20, 0, 0, 0, 0],
            now,
            b"collector".to_vec(),
        )],
        ..Spec::default()
    };
    std::fs::write(tt.join("tt_device_2748_memory"), build(3, &spec)).unwrap();
    let mut c = Collector::new(
        CollectorConfig {
            retention: Duration::from_secs(60),
            tt_metal_dir: Some(tt.clone()),
            ..CollectorConfig::new(dir.path().join("regions"))
        },
        0,
    );
    c.tick(at(0.0));
    let snap = c.snapshot_at(at(0.0).unix_ns);
    let p = snap.processes.iter().find(|p| p.id.pid == std::process::id()).unwrap();
    assert_eq!(
        (p.state, p.source),
        (ProcState::Running, ttmem_model::SourceKind::TtMetalShm)
    );
    assert_eq!(snap.devices[0].hw_id, "0xabc");
    assert_eq!(snap.devices[0].categories[0].used, 3 << 20);
    // Read again a quarter second later, within the same wall-clock second: nothing moved.
    let g = c.generation();
    c.tick(at(0.3));
    assert_eq!(c.generation(), g, "an unchanged reading must not look like a change");
    // The file changes: the next reading shows it.
    let spec = Spec {
        slots: vec![(
            0,
            std::process::id() as i32,
            vec![1 << 20, 0, 0, 0, 0],
            now,
            b"collector".to_vec(),
        )],
        ..spec
    };
    std::fs::write(tt.join("tt_device_2748_memory"), build(3, &spec)).unwrap();
    c.tick(at(0.6));
    assert!(c.generation() > g);
    assert_eq!(c.device_table().rows()[0].categories[0].used, 1 << 20);
}

#[test]
fn a_region_removed_while_its_process_runs_is_let_go_after_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(0x31, "n150")).unwrap();
    t.alloc(d, tt::DRAM, 0x1000, 1 << 20);
    let mut c = collector(dir.path(), Duration::from_secs(60));
    c.tick(at(0.0));
    assert!(c.key_of_pid(std::process::id()).is_some());
    std::fs::remove_file(t.region_path().unwrap()).unwrap();
    c.tick(at(0.5));
    assert!(
        c.key_of_pid(std::process::id()).is_some(),
        "a clean exit gets its grace"
    );
    c.tick(at(1.6));
    assert!(c.key_of_pid(std::process::id()).is_none(), "let go after a second");
    let snap = c.snapshot_at(at(1.6).unix_ns);
    assert!(snap.devices.is_empty() && snap.processes.is_empty(), "{snap:#?}");
}

#[test]
fn refused_files_are_forgotten_once_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = collector(dir.path(), Duration::from_secs(60));
    for i in 0..50 {
        std::fs::write(dir.path().join(format!("junk{i}.ttmem")), vec![0x5Au8; 8192]).unwrap();
    }
    c.tick(at(0.0));
    assert_eq!(c.snapshot_at(at(0.0).unix_ns).skipped.len(), 50);
    assert_eq!(c.stats().regions_refused, 50);
    c.tick(at(0.1));
    assert_eq!(
        c.stats().regions_refused,
        50,
        "an unchanged refused file is not read again"
    );
    for i in 0..50 {
        std::fs::remove_file(dir.path().join(format!("junk{i}.ttmem"))).unwrap();
    }
    c.request_rescan(); // what inotify does in the daemon
    c.tick(at(0.2));
    assert!(
        c.snapshot_at(at(0.2).unix_ns).skipped.is_empty(),
        "the set does not keep names of files that are gone"
    );
}

#[test]
fn the_open_file_limit_is_raised_to_the_hard_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    let hard = lim.rlim_max;
    if hard > 1024 {
        let low = libc::rlimit {
            rlim_cur: 1024,
            rlim_max: hard,
        };
        // SAFETY: lowering the soft limit of this test process is always allowed.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
    }
    assert_eq!(ttmem_daemon::raise_open_file_limit(), hard);
}

#[test]
fn the_directory_is_listed_on_a_change_or_every_two_seconds_not_every_tick() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = collector(dir.path(), Duration::from_secs(60));
    c.tick(at(0.0));
    std::fs::write(dir.path().join("junk.ttmem"), vec![0x5Au8; 8192]).unwrap();
    c.tick(at(0.5));
    assert_eq!(
        c.stats().regions_refused,
        0,
        "no change was reported: the directory is not listed"
    );
    c.tick(at(2.1));
    assert_eq!(c.stats().regions_refused, 1, "the backstop rescan finds it");
    std::fs::write(dir.path().join("junk2.ttmem"), vec![0x5Au8; 8192]).unwrap();
    c.request_rescan();
    c.tick(at(2.2));
    assert_eq!(
        c.stats().regions_refused,
        2,
        "a reported change is looked at on the next tick"
    );
}

/// A tracker with a small ring, so that a burst between two drains overflows it.
fn tracker_with_ring(dir: &Path, ring_events: u32) -> Tracker {
    Tracker::new(Config {
        dir: dir.into(),
        ring_events,
        ..Config::default()
    })
}

#[test]
fn after_lost_events_the_ledger_lists_no_allocation_that_was_freed() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker_with_ring(dir.path(), 64);
    let chip = t.register_device(&spec(0x61, "n150")).unwrap();
    let mut c = collector(dir.path(), Duration::from_secs(60));
    // Ten buffers the daemon sees being allocated.
    for i in 0..10u64 {
        t.alloc(chip, tt::DRAM, i << 20, 1 << 20);
    }
    c.tick(Now::system());
    let key = c.key_of_pid(std::process::id()).unwrap();
    assert_eq!(
        c.ledger().allocations(key, SortBy::Address, 0, 100, 0).unwrap().total,
        10
    );
    assert!(c.ledger().completeness(key).unwrap().is_complete());
    // Half of them are freed, then a burst overwrites those frees in the ring before the next
    // drain; after a pause, three more buffers.
    for i in 0..5u64 {
        t.free(chip, tt::DRAM, i << 20, 1 << 20);
    }
    for i in 0..500u64 {
        t.alloc(chip, tt::L1, 0x10_0000 + i * 64, 64);
        t.free(chip, tt::L1, 0x10_0000 + i * 64, 64);
    }
    std::thread::sleep(Duration::from_millis(30));
    for i in 20..23u64 {
        t.alloc(chip, tt::DRAM, i << 20, 1 << 20);
    }
    c.tick(Now::system());

    let listed: Vec<u64> = c
        .ledger()
        .allocations(key, SortBy::Address, 0, 100, 0)
        .unwrap()
        .items
        .iter()
        .map(|a| a.address)
        .collect();
    for address in &listed {
        let i = address >> 20;
        assert!(
            (5..10).contains(&i) || (20..23).contains(&i),
            "{address:#x} was freed but is listed"
        );
    }
    for i in 20..23u64 {
        assert!(
            listed.contains(&(i << 20)),
            "{:#x}, allocated after the loss, is not listed",
            i << 20
        );
    }
    let completeness = c.ledger().completeness(key).unwrap();
    assert!(completeness.lost >= 900, "{completeness:?}");
    assert!(completeness.detail_since_ns.is_some());
    // Every answer built from the detail names the process, on its chip and host-wide.
    let now = Now::system();
    let named = c.incomplete_detail(Some(0), now.monotonic_ns, now.unix_ns);
    assert_eq!(named.len(), 1);
    assert_eq!(named[0].pid, std::process::id());
    assert_eq!(named[0].events_lost, completeness.lost);
    let since = named[0].detail_since_unix_ns.unwrap();
    assert!(
        since <= now.unix_ns && now.unix_ns - since < 60 * S,
        "{since} vs {}",
        now.unix_ns
    );
    assert_eq!(c.incomplete_detail(None, now.monotonic_ns, now.unix_ns), named);
    assert!(c.incomplete_detail(Some(1), now.monotonic_ns, now.unix_ns).is_empty());
    // The exact counters still say eight buffers of DRAM.
    let snap = c.snapshot();
    let dram = snap.devices[0].categories.iter().find(|x| x.name == "DRAM").unwrap();
    assert_eq!(dram.used, 8 << 20);
}

#[test]
fn a_free_on_another_thread_never_reaches_the_ledger_before_its_allocation() {
    let dir = tempfile::tempdir().unwrap();
    let t = std::sync::Arc::new(tracker_with_ring(dir.path(), 1 << 14));
    let chip = t.register_device(&spec(0x62, "n150")).unwrap();
    // One thread allocates more buffers than a drain round takes per shard; another frees
    // them all, newest first; the daemon drains both shards' backlogs at once, so the frees of
    // the newest buffers come in the same round as the oldest allocations.
    // (Both threads live until both are done, so each keeps its own shard.)
    const N: u64 = 6000;
    let allocated = std::sync::Arc::new(std::sync::Barrier::new(2));
    let done = std::sync::Arc::new(std::sync::Barrier::new(2));
    let (writer, a1, d1) = (t.clone(), allocated.clone(), done.clone());
    let alloc_thread = std::thread::spawn(move || {
        for i in 0..N {
            writer.alloc(chip, tt::DRAM, i << 12, 4096);
        }
        a1.wait();
        d1.wait();
    });
    allocated.wait();
    for i in (0..N).rev() {
        t.free(chip, tt::DRAM, i << 12, 4096);
    }
    done.wait();
    alloc_thread.join().unwrap();
    let mut c = collector(dir.path(), Duration::from_secs(60));
    c.tick(Now::system());
    let key = c.key_of_pid(std::process::id()).unwrap();
    let page = c.ledger().allocations(key, SortBy::Address, 0, 10, 0).unwrap();
    assert_eq!(page.total, 0, "freed buffers listed: {:?}", &page.items);
    assert_eq!(c.ledger().stats().unmatched_frees, 0);
    assert!(c.ledger().completeness(key).unwrap().is_complete());
}

#[test]
fn a_region_whose_counters_outgrow_what_a_reader_reads_is_refused_not_read() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let t = Tracker::new(Config {
        dir: dir.path().into(),
        max_devices: 1024,
        max_shards: 1024,
        ring_events: 16,
        ..Config::default()
    });
    let chip = t.register_device(&spec(0x71, "n150")).unwrap();
    t.alloc(chip, tt::DRAM, 0, 4096);
    let path = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    // The writer claims all 1024 devices and all 1024 shards: 1 GiB of counters per read.
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let geometry = ttmem_scan::attach::Attached::open(&path).unwrap().header().geometry;
    let mut entry = vec![0u8; ttmem_region::DEVICE_ENTRY_SIZE];
    file.read_exact_at(&mut entry, geometry.device_offset(0)).unwrap();
    for i in 1..1024 {
        file.write_all_at(&entry, geometry.device_offset(i)).unwrap();
    }
    file.write_all_at(&1024u32.to_le_bytes(), 176).unwrap();
    file.write_all_at(&1024u32.to_le_bytes(), 180).unwrap();

    let mut c = collector(dir.path(), Duration::from_secs(60));
    c.tick(Now::system());
    assert!(c.key_of_pid(std::process::id()).is_none(), "the region is not followed");
    let snap = c.snapshot();
    assert!(snap.processes.is_empty());
    let skipped = &snap.skipped;
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].reason.contains("more than the 16777216 a reader reads"),
        "{}",
        skipped[0].reason
    );
    // The one-shot reader refuses it the same way.
    let err = ttmem_scan::read_region(&path, ttmem_scan::ScanOptions::default(), None).unwrap_err();
    assert!(matches!(err, ttmem_scan::RegionError::TooLarge { .. }), "{err}");
}

#[test]
fn a_writer_that_leaps_its_ring_heads_costs_one_ring_per_drain_and_keeps_its_totals() {
    use std::os::unix::fs::FileExt;
    let dir = tempfile::tempdir().unwrap();
    let t = tracker_with_ring(dir.path(), 64);
    let chip = t.register_device(&spec(0x81, "n150")).unwrap();
    for i in 0..5u64 {
        t.alloc(chip, tt::DRAM, i << 20, 1 << 20);
    }
    let mut c = collector(dir.path(), Duration::from_secs(60));
    c.tick(Now::system());
    let key = c.key_of_pid(std::process::id()).unwrap();
    let path = std::fs::read_dir(dir.path()).unwrap().next().unwrap().unwrap().path();
    let file = std::fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let g = ttmem_scan::attach::Attached::open(&path).unwrap().header().geometry;
    // A hostile writer leaps shard 0's head by 2^40 before every drain, and once sets it back.
    let head_at = g.shard_offset(0) + 8;
    let mut head = [0u8; 8];
    for round in 0..6u64 {
        file.read_exact_at(&mut head, head_at).unwrap();
        let leapt = if round == 3 {
            1
        } else {
            u64::from_le_bytes(head).wrapping_add(1 << 40)
        };
        file.write_all_at(&leapt.to_le_bytes(), head_at).unwrap();
        c.tick(Now::system());
    }
    let stats = c.stats();
    assert!(stats.events_lost >= 5 << 40, "{stats:?}");
    assert!(stats.anomalies >= 1, "the head went back once: {stats:?}");
    // Each drain read one ring at most, and the counters (which the writer keeps) stay exact.
    assert!(stats.events < 6 * 64 + 5, "{stats:?}");
    assert!(c.ledger().completeness(key).is_some_and(|x| !x.is_complete()));
    let snap = c.snapshot();
    let dram = snap.devices[0].categories.iter().find(|x| x.name == "DRAM").unwrap();
    assert_eq!(dram.used, 5 << 20);
    // And its listing holds no allocation that the loss may have freed.
    assert_eq!(c.ledger().allocations(key, SortBy::Address, 0, 10, 0).unwrap().total, 0);
}

/// The pids of the exited processes the collector keeps.
fn exited_pids(c: &Collector) -> Vec<u32> {
    c.snapshot()
        .processes
        .iter()
        .filter(|p| p.state == ProcState::Exited)
        .map(|p| p.id.pid)
        .collect()
}

/// Copies of a region under pids that cannot exist (writers that died holding what the copy
/// holds), found one a second by the collector.
fn plant_dead_copies(c: &mut Collector, dir: &Path, template: &[u8], pids: std::ops::Range<u32>) {
    for (i, pid) in pids.enumerate() {
        let mut bytes = template.to_vec();
        bytes[32..36].copy_from_slice(&pid.to_le_bytes());
        let h = ttmem_region::decode::decode_header(&bytes, bytes.len() as u64).unwrap();
        std::fs::write(
            dir.join(ttmem_region::region_file_name(h.uid, h.pid, h.start_time)),
            &bytes,
        )
        .unwrap();
        c.request_rescan();
        c.tick(at(i as f64));
    }
}

#[test]
fn exited_processes_beyond_the_cap_go_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(0x78, "n150")).unwrap();
    t.alloc(d, tt::DRAM, 0x1000, 1 << 20);
    let template = std::fs::read(t.region_path().unwrap()).unwrap();
    let mut c = Collector::new(
        CollectorConfig {
            max_exited: 2,
            ..collector_config(dir.path(), Duration::from_secs(3600))
        },
        0,
    );
    // Four writers that died holding memory, found one second apart.
    plant_dead_copies(&mut c, dir.path(), &template, 0x3FFF_FF00..0x3FFF_FF04);
    let kept = exited_pids(&c);
    assert_eq!(kept.len(), 2, "{kept:x?}");
    assert!(kept.contains(&0x3FFF_FF02) && kept.contains(&0x3FFF_FF03), "{kept:x?}");
    assert!(
        c.key_of_pid(std::process::id()).is_some(),
        "running processes are never capped"
    );
}

#[test]
fn what_exited_processes_left_behind_is_capped_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(0x79, "n150")).unwrap();
    // Each dead copy holds ten allocations.
    for i in 0..10u64 {
        t.alloc(d, tt::DRAM, i << 20, 1 << 20);
    }
    let template = std::fs::read(t.region_path().unwrap()).unwrap();
    let mut c = Collector::new(
        CollectorConfig {
            max_exited_allocations: 25,
            ..collector_config(dir.path(), Duration::from_secs(3600))
        },
        0,
    );
    plant_dead_copies(&mut c, dir.path(), &template, 0x3FFF_FE00..0x3FFF_FE04);
    // Forty left behind, at most 25 kept: the two newest dead processes stay.
    let kept = exited_pids(&c);
    assert_eq!(kept.len(), 2, "{kept:x?}");
    assert!(kept.contains(&0x3FFF_FE02) && kept.contains(&0x3FFF_FE03), "{kept:x?}");
    assert!(c.key_of_pid(std::process::id()).is_some());
}

#[test]
fn a_steady_climb_is_forecast_to_fill_and_flat_categories_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let t = tracker(dir.path());
    let d = t.register_device(&spec(0x7A, "n150")).unwrap();
    let mut c = collector(dir.path(), Duration::from_secs(60));
    // One more MiB of DRAM every second for a minute, sampled each second.
    for s in 0..60u64 {
        t.alloc(d, tt::DRAM, s << 20, 1 << 20);
        c.tick(at(s as f64));
    }
    let now_s = at(59.0).unix_ns / S;
    let forecasts = c.forecasts(now_s, 60);
    let dram = forecasts.iter().find(|f| f.category == "DRAM").unwrap();
    assert_eq!(dram.used, 60 << 20);
    let slope = dram.slope_bytes_per_s.unwrap();
    assert!((slope - (1u64 << 20) as f64).abs() < 1024.0, "{dram:?}");
    assert!(dram.r2.unwrap() > 0.99);
    let expected = (dram.capacity - dram.used) as f64 / slope;
    assert!((dram.time_to_full_s.unwrap() - expected).abs() < 1.0, "{dram:?}");
    // A category nothing uses has no trend to fill at.
    let l1 = forecasts.iter().find(|f| f.category == "L1").unwrap();
    assert_eq!((l1.used, l1.time_to_full_s), (0, None));
}
