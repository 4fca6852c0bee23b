//! Ledger tests: aggregates, lifecycle, paging, and fragmentation/fit cross-checked against the
//! simulator's allocator model.

use super::*;
use crate::apply::MAX_BATCH;
use proptest::prelude::*;
use ttmem_sim::allocator::{BankAllocator, BankLayout, Policy};

const S: u64 = 1_000_000_000;

fn dram(banks: u32) -> DeviceInfo {
    DeviceInfo {
        kind: ttmem_region::DeviceKind::SimulatedTenstorrent,
        hw_id: 7,
        logical_id: 0,
        flags: 0,
        arch: "wormhole_b0".into(),
        name: "n150".into(),
        categories: vec![
            CategoryInfo {
                name: "DRAM".into(),
                capacity: 12 * 1024,
                addr_base: 0,
                addr_end: 1024,
                banks,
                alignment: 32,
            },
            CategoryInfo {
                name: "L1".into(),
                capacity: 0,
                addr_base: 0,
                addr_end: 0,
                banks: 1,
                alignment: 0,
            },
        ],
    }
}

fn ev(kind: EventKind, cat: u8, address: u64, size: u64, t: u64) -> Event {
    Event {
        kind,
        device: DeviceKey(0),
        category: cat,
        address,
        size,
        time_ns: t,
        tag: 0,
        stream: 0,
    }
}

#[test]
fn aggregates_follow_events_and_exits() {
    let mut l = Ledger::new(0);
    let d = l.add_device(dram(12));
    assert_eq!(l.add_device(dram(12)), d, "same hardware id, same key");
    l.add_process(ProcKey(1));
    l.add_process(ProcKey(2));
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 0, 1200, 0));
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 320, 600, S));
    l.apply(ProcKey(2), &ev(EventKind::Alloc, 1, 64, 10, S));
    l.apply(ProcKey(1), &ev(EventKind::Free, 0, 0, 1200, 2 * S));
    l.apply(ProcKey(1), &ev(EventKind::Free, 0, 999, 1, 2 * S)); // never allocated
    l.apply(ProcKey(9), &ev(EventKind::Alloc, 0, 0, 1, 0)); // unknown process
    let (_, _, t) = l.devices().next().unwrap();
    assert_eq!(
        t[0],
        Totals {
            bytes: 600,
            count: 1,
            peak: 1800,
            allocs: 2,
            frees: 1
        }
    );
    assert_eq!(t[1].bytes, 10);
    assert_eq!(
        l.process_totals(ProcKey(1)),
        vec![(
            DeviceKey(0),
            0,
            Totals {
                bytes: 600,
                count: 1,
                peak: 1800,
                allocs: 2,
                frees: 1
            }
        )]
    );
    assert_eq!(l.stats().unmatched_frees, 1);
    assert_eq!(l.stats().rejected, 1);
    assert_eq!(
        l.completeness(ProcKey(1)),
        Some(Completeness {
            lost: 0,
            unmatched_frees: 1,
            detail_since_ns: None
        })
    );
    let rec = l.recent(ProcKey(1)).unwrap();
    assert_eq!(rec.len(), 4);
    assert!(!rec.back().unwrap().matched);

    l.process_exited(ProcKey(1), 3 * S);
    let (_, _, t) = l.devices().next().unwrap();
    assert_eq!((t[0].bytes, t[0].count), (0, 0), "a dead process leaves the totals");
    assert_eq!(
        l.process_totals(ProcKey(1))[0].2.bytes,
        600,
        "and keeps what it left behind"
    );
    l.process_exited(ProcKey(1), 4 * S);
    assert_eq!(
        l.state(ProcKey(1)),
        Some(ProcState::Exited { at_ns: 3 * S }),
        "idempotent"
    );
    // Events a dead process's ring still held (drained after death) change only its record.
    l.apply(ProcKey(1), &ev(EventKind::Free, 0, 320, 600, 3 * S));
    assert_eq!(l.devices().next().unwrap().2[0].bytes, 0);
    assert_eq!(l.process_totals(ProcKey(1))[0].2.bytes, 0);
    l.remove_process(ProcKey(1));
    assert_eq!(l.state(ProcKey(1)), None);
}

#[test]
fn reallocation_at_a_live_address_replaces_it() {
    let mut l = Ledger::new(0);
    l.add_device(dram(1));
    l.add_process(ProcKey(1));
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 64, 100, 0));
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 64, 40, 0));
    assert_eq!(l.devices().next().unwrap().2[0].bytes, 40);
    assert_eq!(l.stats().replaced, 1);
}

#[test]
fn flight_recorder_keeps_the_last_events() {
    let mut l = Ledger::new(0);
    l.add_device(dram(1));
    l.add_process(ProcKey(1));
    for i in 0..1000 {
        l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, i * 64, 1, i));
    }
    let rec = l.recent(ProcKey(1)).unwrap();
    assert_eq!(rec.len(), FLIGHT_RECORDER_EVENTS);
    assert_eq!(rec.back().unwrap().event.address, 999 * 64);
    assert_eq!(
        rec.front().unwrap().event.address,
        (1000 - FLIGHT_RECORDER_EVENTS as u64) * 64
    );
}

#[test]
fn a_longer_flight_recorder_keeps_more_and_a_shorter_one_trims() {
    let mut l = Ledger::new(0);
    l.add_device(dram(1));
    l.add_process(ProcKey(1));
    l.set_flight_recorder_events(600);
    for i in 0..1000 {
        l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, i * 64, 1, i));
    }
    assert_eq!(l.recent(ProcKey(1)).unwrap().len(), 600);
    assert_eq!(l.recent(ProcKey(1)).unwrap().front().unwrap().event.address, 400 * 64);
    l.set_flight_recorder_events(10);
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 1000 * 64, 1, 1000));
    let rec = l.recent(ProcKey(1)).unwrap();
    assert_eq!(rec.len(), 10);
    assert_eq!(rec.front().unwrap().event.address, 991 * 64);
    l.set_flight_recorder_events(0);
    assert_eq!(l.flight_recorder_events(), 1);
}

#[test]
fn pages_sort_and_slice() {
    let mut l = Ledger::new(0);
    l.add_device(dram(1));
    l.add_process(ProcKey(1));
    l.set_tags(ProcKey(1), [(5, "weights".to_string())]);
    for i in 0..100u64 {
        let mut e = ev(EventKind::Alloc, 0, i * 64, (i * 37) % 100 + 1, i * S);
        e.tag = if i == 3 { 5 } else { 0 };
        l.apply(ProcKey(1), &e);
    }
    let p = l.allocations(ProcKey(1), SortBy::Address, 10, 5, 200 * S).unwrap();
    assert_eq!(p.total, 100);
    assert_eq!(
        p.items.iter().map(|a| a.address).collect::<Vec<_>>(),
        [640, 704, 768, 832, 896]
    );
    let p = l.allocations(ProcKey(1), SortBy::Size, 0, 3, 200 * S).unwrap();
    assert!(p.items.windows(2).all(|w| w[0].size >= w[1].size));
    assert_eq!(p.items[0].size, 100);
    let p = l.allocations(ProcKey(1), SortBy::Age, 0, 4, 200 * S).unwrap();
    assert_eq!(p.items[0].age_s, 200);
    assert_eq!(p.items[3].tag.as_deref(), Some("weights"));
    assert!(
        l.allocations(ProcKey(1), SortBy::Age, 1000, 4, 0)
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        l.allocations(ProcKey(7), SortBy::Age, 0, 1, 0),
        Err(QueryError::UnknownProcess(ProcKey(7)))
    );
    let leaks = l.leak_suspects(150, 10, 200 * S);
    assert_eq!(leaks.len(), 10);
    assert_eq!(leaks[0].address, 0, "oldest first");
    assert!(leaks.iter().all(|a| a.age_s >= 150));
}

#[test]
fn fit_names_the_allocations_around_the_best_gap() {
    let mut l = Ledger::new(0);
    l.add_device(dram(2));
    l.add_process(ProcKey(1));
    l.add_process(ProcKey(2));
    // One bank is [0, 1024); allocations take size/2 per bank, aligned to 32.
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 0, 512, 0)); // [0, 256)
    l.apply(ProcKey(2), &ev(EventKind::Alloc, 0, 512, 256, 0)); // [512, 640)
    let f = l.fit(DeviceKey(0), "dram", 500).unwrap();
    assert!(f.fits);
    assert_eq!(f.needed_per_bank, 256);
    assert_eq!(f.largest_free_per_bank, 384);
    let best = &f.best_gaps[0];
    assert_eq!((best.start, best.end), (640, 1024));
    assert_eq!(
        best.below,
        Some(Neighbour {
            process: ProcKey(2),
            address: 512,
            size: 256
        })
    );
    assert_eq!(best.above, None);
    assert_eq!(f.best_gaps[1].below.as_ref().unwrap().process, ProcKey(1));
    assert!(!l.fit(DeviceKey(0), "DRAM", 1000).unwrap().fits);
    assert_eq!(f.fragmentation.free_per_bank, 640);
    assert_eq!(
        l.fit(DeviceKey(0), "L1", 1),
        Err(QueryError::NoAddressRange("L1".into()))
    );
    assert_eq!(
        l.fit(DeviceKey(0), "TRACE", 1),
        Err(QueryError::UnknownCategory("TRACE".into()))
    );
    assert_eq!(
        l.fit(DeviceKey(5), "DRAM", 1),
        Err(QueryError::UnknownDevice(DeviceKey(5)))
    );
    // A dead process's memory is free again.
    l.process_exited(ProcKey(2), 0);
    assert_eq!(
        l.fit(DeviceKey(0), "DRAM", 1).unwrap().largest_free_per_bank,
        1024 - 256
    );
}

proptest! {
    /// The ledger's view of free space equals the allocator model's own statistics, and "fit"
    /// agrees with whether the model can really allocate.
    #[test]
    fn fragmentation_matches_the_allocator_model(
        ops in proptest::collection::vec((any::<bool>(), 1u64..40_000, any::<prop::sample::Index>()), 1..150),
        probe in 1u64..200_000,
        best in any::<bool>(),
    ) {
        let layout = BankLayout { banks: 4, base: 4096, end: 1 << 16, page: 512, alignment: 64, top_down: false };
        let mut model = BankAllocator::new("DRAM", layout, if best { Policy::BestFit } else { Policy::FirstFit });
        let mut l = Ledger::new(0);
        let d = l.add_device(DeviceInfo {
            kind: ttmem_region::DeviceKind::SimulatedTenstorrent, hw_id: 1, logical_id: 0, flags: 0, arch: "x".into(), name: "x".into(),
            categories: vec![CategoryInfo { name: "DRAM".into(), capacity: 0, addr_base: 4096, addr_end: 1 << 16, banks: 4, alignment: 512 }],
        });
        l.add_process(ProcKey(1));
        let mut live: Vec<(u64, u64)> = Vec::new();
        for (alloc, size, idx) in ops {
            if alloc || live.is_empty() {
                if let Ok(addr) = model.allocate(size) {
                    let fp = model.footprint(size);
                    live.push((addr, fp));
                    l.apply(ProcKey(1), &Event { kind: EventKind::Alloc, device: d, category: 0, address: addr, size: fp, time_ns: 0, tag: 0, stream: 0 });
                }
            } else {
                let (addr, fp) = live.swap_remove(idx.index(live.len()));
                model.deallocate(addr).unwrap();
                l.apply(ProcKey(1), &Event { kind: EventKind::Free, device: d, category: 0, address: addr, size: fp, time_ns: 0, tag: 0, stream: 0 });
            }
        }
        let s = model.statistics();
        let f = l.fragmentation(d, "DRAM").unwrap();
        prop_assert_eq!(f.largest_free_per_bank, s.largest_free_per_bank);
        prop_assert_eq!(f.free_per_bank * 4, s.free);
        prop_assert_eq!(f.free_blocks as usize, s.free_blocks);
        prop_assert_eq!(l.devices().next().unwrap().2[0].bytes, s.allocated);
        let fit = l.fit(d, "DRAM", probe).unwrap();
        prop_assert_eq!(fit.fits, model.clone().allocate(probe).is_ok());
    }
}

/// Everything a ledger shows about process 1, for comparing two ledgers.
#[allow(clippy::type_complexity)]
fn observable(
    l: &Ledger,
) -> (
    Vec<Vec<Totals>>,
    Vec<(DeviceKey, u8, Totals)>,
    Page,
    Vec<RecentEvent>,
    LedgerStats,
    Option<Completeness>,
    u64,
) {
    let devices: Vec<Vec<Totals>> = l.devices().map(|(_, _, t)| t.to_vec()).collect();
    let mut totals = l.process_totals(ProcKey(1));
    totals.sort_by_key(|(d, c, _)| (*d, *c));
    let page = l.allocations(ProcKey(1), SortBy::Address, 0, 1000, 0).unwrap();
    let recent: Vec<RecentEvent> = l.recent(ProcKey(1)).unwrap().iter().copied().collect();
    (
        devices,
        totals,
        page,
        recent,
        l.stats(),
        l.completeness(ProcKey(1)),
        l.live_allocations(),
    )
}

proptest! {
    /// Applying events in batches (where frees pair with allocations earlier in the batch and
    /// such transient allocations skip the address map) gives exactly what applying them one
    /// at a time gives: totals, peaks, counts, replaced and unmatched frees, live allocations
    /// and the flight recorder, with unknown devices and categories, re-allocations at a live
    /// address, double frees and an exit in between.
    #[test]
    fn batches_equal_one_event_at_a_time(
        ops in proptest::collection::vec((any::<bool>(), 0u32..3, 0u8..3, 0u64..6, 1u64..1000), 0..400),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
        exit_at in proptest::option::of(any::<prop::sample::Index>()),
        loss_at in proptest::option::of((any::<prop::sample::Index>(), 0u64..400)),
    ) {
        let events: Vec<Event> = ops
            .iter()
            .enumerate()
            .map(|(i, &(alloc, device, category, slot, size))| Event {
                kind: if alloc { EventKind::Alloc } else { EventKind::Free },
                device: DeviceKey(device),
                category,
                address: slot * 64,
                size,
                time_ns: i as u64 * S / 10,
                tag: i as u32,
                stream: 0,
            })
            .collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(events.len() + 1)).collect();
        let exit_at = exit_at.map(|x| x.index(events.len() + 1));
        cuts.extend(exit_at);
        let loss_at = loss_at.map(|(x, until)| (x.index(events.len() + 1), until * S / 10));
        cuts.extend(loss_at.map(|(x, _)| x));
        cuts.extend([0, events.len()]);
        cuts.sort_unstable();
        cuts.dedup();
        let fresh = || {
            let mut l = Ledger::new(0);
            l.add_device(dram(1));
            l.add_device(DeviceInfo { hw_id: 8, ..dram(2) });
            l.add_process(ProcKey(1));
            l
        };
        let (mut one, mut batched) = (fresh(), fresh());
        for w in cuts.windows(2) {
            if exit_at == Some(w[0]) {
                one.process_exited(ProcKey(1), 1);
                batched.process_exited(ProcKey(1), 1);
            }
            if let Some((at, until)) = loss_at
                && at == w[0]
            {
                one.lost_until(ProcKey(1), 3, until);
                batched.lost_until(ProcKey(1), 3, until);
            }
            for e in &events[w[0]..w[1]] {
                one.apply(ProcKey(1), e);
            }
            batched.apply_batch(ProcKey(1), &events[w[0]..w[1]]);
        }
        let (a, b) = (observable(&one), observable(&batched));
        prop_assert_eq!(a.0, b.0, "device totals");
        prop_assert_eq!(a.1, b.1, "process totals");
        prop_assert_eq!(a.2, b.2, "live allocations");
        prop_assert_eq!(a.3, b.3, "flight recorder");
        prop_assert_eq!(a.4, b.4, "stats");
        prop_assert_eq!(a.5, b.5, "completeness");
        prop_assert_eq!(a.6, b.6, "live count");
    }
}

#[test]
fn a_batch_longer_than_the_pairing_table_applies_in_parts() {
    // Alloc/free pairs straddle the part boundary; the result must not depend on it.
    let events: Vec<Event> = (0..MAX_BATCH as u64 + 11)
        .map(|i| {
            let kind = if i % 2 == 1 { EventKind::Alloc } else { EventKind::Free };
            ev(kind, 0, i.div_ceil(2) % 7 * 64, 10 + i % 5, i)
        })
        .collect();
    let fresh = || {
        let mut l = Ledger::new(0);
        l.add_device(dram(1));
        l.add_process(ProcKey(1));
        l
    };
    let (mut one, mut batched) = (fresh(), fresh());
    for e in &events {
        one.apply(ProcKey(1), e);
    }
    batched.apply_batch(ProcKey(1), &events);
    assert_eq!(observable(&one), observable(&batched));
    assert_eq!(batched.stats().events, events.len() as u64);
}

#[test]
fn extreme_sizes_and_queries_saturate() {
    let mut l = Ledger::new(u64::MAX);
    l.add_device(dram(3));
    l.add_process(ProcKey(1));
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, u64::MAX - 1, u64::MAX, 0));
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 0, u64::MAX, u64::MAX));
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 64, u64::MAX, u64::MAX));
    assert_eq!(l.devices().next().unwrap().2[0].bytes, u64::MAX);
    assert!(!l.fit(DeviceKey(0), "DRAM", u64::MAX).unwrap().fits);
    let _ = l.fragmentation(DeviceKey(0), "DRAM").unwrap();
    let _ = l.allocations(ProcKey(1), SortBy::Size, u64::MAX, u64::MAX, 0).unwrap();
    let _ = l.leak_suspects(0, usize::MAX, u64::MAX);
}

#[test]
fn occupancy_cuts_the_range_into_cells() {
    let mut l = Ledger::new(0);
    l.add_device(dram(1));
    l.add_process(ProcKey(1));
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 0, 256, 0)); // [0, 256) of [0, 1024)
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 640, 128, 0)); // [640, 768)
    let o = l.occupancy(DeviceKey(0), "DRAM", 4).unwrap();
    assert_eq!(o, vec![1.0, 0.0, 0.5, 0.0]);
    assert_eq!(l.occupancy(DeviceKey(0), "DRAM", 1).unwrap(), vec![0.375]);
    assert!(l.occupancy(DeviceKey(0), "L1", 4).is_err());
}

#[test]
fn each_cell_of_a_map_names_the_process_holding_most_of_it() {
    let mut l = Ledger::new(0);
    l.add_device(dram(1));
    l.add_process(ProcKey(1));
    l.add_process(ProcKey(2));
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 0, 256, 0)); // cell 0, whole
    l.apply(ProcKey(2), &ev(EventKind::Alloc, 0, 512, 64, 0)); // cell 2: 64 bytes of process 2
    l.apply(ProcKey(1), &ev(EventKind::Alloc, 0, 576, 32, 0)); // and 32 of process 1
    let (fill, owners) = l.occupancy_by_owner(DeviceKey(0), "DRAM", 4).unwrap();
    assert_eq!(fill, vec![1.0, 0.0, 0.375, 0.0]);
    assert_eq!(owners, vec![Some(ProcKey(1)), None, Some(ProcKey(2)), None]);
}

proptest! {
    /// The invariant after a loss: the ledger never lists an allocation that is not live, and
    /// it lists every live one allocated after its detail resumed. Two shards (threads) write a
    /// valid allocator trace (a thread may free what another allocated); a window of shard 0's
    /// events is lost. The reader delivers the rest in time order (the daemon merges its
    /// shards by time), in batches of any size, and reports the loss at any point before the
    /// first event after the gap, stamped with that event's time (or the present when the gap
    /// reaches it). With a coarse clock, three events share each tick and the merge cannot
    /// order shards within one: a free may come before the allocation it frees.
    #[test]
    fn after_a_loss_every_listed_allocation_is_live(
        ops in proptest::collection::vec((any::<bool>(), 0u64..12, 0u8..2), 1..300),
        gap in (any::<prop::sample::Index>(), 1usize..60),
        detect in any::<prop::sample::Index>(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        coarse in any::<bool>(),
        lossless in any::<bool>(),
    ) {
        // The trace, in time order (event i at second i + 1, or three a second), and what is
        // live at the end.
        let mut live: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
        let mut trace: Vec<(u8, Event)> = Vec::new();
        // Events of one tick on one address: at most two with a coarse clock (more than two
        // events of two threads in one tick on one address have no knowable order).
        let mut in_tick: std::collections::HashMap<(u64, u64), u32> = std::collections::HashMap::new();
        for (i, &(alloc, slot, shard)) in ops.iter().enumerate() {
            let address = slot * 64;
            let t = if coarse { (i as u64 / 3 + 1) * S } else { (i as u64 + 1) * S };
            let n = in_tick.entry((t, address)).or_default();
            if *n == 2 {
                continue;
            }
            *n += 1;
            let kind = match (alloc, live.contains_key(&address)) {
                (true, false) => { live.insert(address, t); EventKind::Alloc }
                (_, true) => { live.remove(&address); EventKind::Free }
                (false, false) => continue,
            };
            trace.push((shard, Event { stream: shard as u16, ..ev(kind, 0, address, 64, t) }));
        }
        // The merge: by time, then shard by shard.
        trace.sort_by_key(|(shard, e)| (e.time_ns, *shard));
        let shard0: Vec<usize> = (0..trace.len()).filter(|&i| trace[i].0 == 0).collect();
        let start = gap.0.index(shard0.len() + 1);
        let gap_len = if lossless { 0 } else { gap.1 };
        let lost: Vec<usize> = shard0[start..(start + gap_len).min(shard0.len())].to_vec();
        let after_gap = shard0.get(start + lost.len()).copied();
        let until = after_gap.map_or((ops.len() as u64 + 2) * S, |i| trace[i].1.time_ns);
        let delivered: Vec<Event> = (0..trace.len()).filter(|i| !lost.contains(i)).map(|i| trace[i].1).collect();
        let first_after = after_gap.map_or(delivered.len(), |i| i - lost.iter().filter(|&&x| x < i).count());
        let detect = if lost.is_empty() { None } else { Some(detect.index(first_after + 1)) };
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c.index(delivered.len() + 1)).collect();
        cuts.extend(detect);
        cuts.extend([0, delivered.len()]);
        cuts.sort_unstable();
        cuts.dedup();

        let mut l = Ledger::new(0);
        l.add_device(dram(1));
        l.add_process(ProcKey(1));
        for w in cuts.windows(2) {
            if detect == Some(w[0]) {
                l.lost_until(ProcKey(1), lost.len() as u64, until);
            }
            l.apply_batch(ProcKey(1), &delivered[w[0]..w[1]]);
        }
        if detect == Some(delivered.len()) {
            l.lost_until(ProcKey(1), lost.len() as u64, until);
        }
        let listed = l.allocations(ProcKey(1), SortBy::Address, 0, 1000, 0).unwrap();
        for a in &listed.items {
            prop_assert!(live.contains_key(&a.address), "{:#x} is listed but was freed", a.address);
        }
        let since = l.completeness(ProcKey(1)).unwrap().detail_since_ns.unwrap_or(0);
        let listed: std::collections::HashSet<u64> = listed.items.iter().map(|a| a.address).collect();
        if lost.is_empty() {
            prop_assert_eq!(listed.len(), live.len(), "without a loss the listing is exact");
        }
        for (&address, &t) in &live {
            if t > since && !coarse {
                prop_assert!(listed.contains(&address), "{address:#x} (allocated at {t}) is live but not listed");
            }
        }
        prop_assert_eq!(l.completeness(ProcKey(1)).unwrap().lost, lost.len() as u64);
    }
}
