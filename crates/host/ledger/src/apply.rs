//! Applying events: a batch in O(1) per event, with transient allocations paired first (see
//! the crate documentation), and the lifecycle of a process's memory.

use std::collections::VecDeque;

use hashbrown::HashMap;

use crate::{Bucket, DeviceKey, Entry, Event, EventKind, Ledger, Proc, ProcKey, ProcState, RecentEvent, Tie, Totals};

/// Events applied at a time (a longer batch is applied in parts, with the same result).
pub(crate) const MAX_BATCH: usize = 1 << 16;
/// Most ties a process keeps open (events waiting for another stream's event of the same tick).
const MAX_TIES: usize = 1 << 16;
/// Marks no partner in [`Transients::partner`].
const NO_PARTNER: u32 = u32::MAX;
/// Slots of the table that pairs a batch's frees with its allocations (a power of two, a few
/// times a drain round, small enough to stay in the L1 cache). Tests use a tiny table so that
/// collisions and stale slots are the common case.
const TRANSIENT_SLOTS: usize = if cfg!(test) { 8 } else { 1 << 12 };

/// Scratch space for finding a batch's transient allocations (see the crate documentation):
/// one map operation per pair instead of an insert and a remove.
pub(crate) struct Transients {
    /// Per batch event: its partner's index (alloc → its free, free → its alloc).
    partner: Vec<u32>,
    /// Per free: its paired allocation was found freed already (see [`crate::Tie`]), so it
    /// frees whatever the address holds instead.
    unpaired: Vec<bool>,
    /// Direct-mapped by (device, category, address): the index of the latest batch event on
    /// that key, or of a colliding one (verified against the batch, so stale slots are harmless).
    slots: Box<[u32]>,
}

impl Transients {
    pub(crate) fn new() -> Self {
        Transients {
            partner: Vec::new(),
            unpaired: Vec::new(),
            slots: vec![NO_PARTNER; TRANSIENT_SLOTS].into_boxed_slice(),
        }
    }

    /// Pairs each free with the allocation of the same device, category and address just before
    /// it in `events`, when no other event on that key lies between them. A collision in the
    /// table only loses a pairing, never makes a wrong one: a slot is trusted only if the event
    /// it names has the same key and no later event on the key overwrote it.
    /// An allocation `pairable` refuses still hides older events on its key from later frees.
    fn pair(&mut self, events: &[Event], valid: impl Fn(&Event) -> bool, pairable: impl Fn(&Event) -> bool) {
        self.partner.clear();
        self.partner.resize(events.len(), NO_PARTNER);
        self.unpaired.clear();
        self.unpaired.resize(events.len(), false);
        let slot_of = |e: &Event| {
            let key = e.address ^ ((e.device.0 as u64) << 40 | (e.category as u64) << 32).rotate_left(17);
            (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - TRANSIENT_SLOTS.trailing_zeros())) as usize
        };
        for (i, e) in events.iter().enumerate() {
            if !valid(e) {
                continue;
            }
            let slot = slot_of(e);
            let prev = self.slots[slot] as usize;
            if e.kind == EventKind::Free
                && prev < i
                && let Some(p) = events.get(prev)
                && p.kind == EventKind::Alloc
                && pairable(p)
                // Two streams' events of one clock tick have no known order (see `apply_batch`).
                && (p.stream == e.stream || p.time_ns != e.time_ns)
                && p.address == e.address
                && p.device == e.device
                && p.category == e.category
                && self.partner[prev] == NO_PARTNER
            {
                self.partner[prev] = i as u32;
                self.partner[i] = prev as u32;
            }
            self.slots[slot] = i as u32;
        }
    }
}

/// Whether another stream left a tie of this kind open on `e`'s address in `e`'s clock tick.
#[inline]
fn open_tie(ties: &HashMap<(DeviceKey, u8, u64), (u64, u16, Tie)>, e: &Event, kind: Tie) -> bool {
    !ties.is_empty()
        && ties
            .get(&(e.device, e.category, e.address))
            .is_some_and(|&(t, stream, tie)| tie == kind && t == e.time_ns && stream != e.stream)
}

impl Ledger {
    /// Starts tracking a process (idempotent).
    pub fn add_process(&mut self, proc: ProcKey) {
        self.procs.entry(proc).or_insert_with(|| Proc {
            state: ProcState::Running,
            buckets: HashMap::new(),
            recent: VecDeque::with_capacity(16),
            lost: 0,
            unmatched_frees: 0,
            detail_since_ns: None,
            ties: HashMap::new(),
            tags: HashMap::new(),
        });
    }

    /// Records tag texts of a process.
    pub fn set_tags(&mut self, proc: ProcKey, tags: impl IntoIterator<Item = (u32, String)>) {
        if let Some(p) = self.procs.get_mut(&proc) {
            for (id, text) in tags {
                p.tags.entry(id).or_insert_with(|| text.into_boxed_str());
            }
        }
    }

    /// Notes that `n` events of a process were lost (ring overflow), every one of them written
    /// by `until_ns` (monotonic). Any allocation made by then may have been freed by a lost
    /// event, so all of them leave the detail, and those that arrive later stamped by then are
    /// not taken: the ledger never lists an allocation that is not live. The detail is complete
    /// again for allocations made after `until_ns` ([`Ledger::completeness`]).
    pub fn lost_until(&mut self, proc: ProcKey, n: u64, until_ns: u64) {
        let Some(p) = self.procs.get_mut(&proc) else { return };
        p.lost = p.lost.saturating_add(n);
        if p.detail_since_ns.is_some_and(|t| t >= until_ns) {
            return;
        }
        p.detail_since_ns = Some(until_ns);
        // Entries keep their time in whole seconds: those of the last second are dropped too
        // (a listing that lacks a live allocation is honest; one with a freed one is not).
        let until_s = (until_ns.saturating_sub(self.epoch_ns) / 1_000_000_000).min(u32::MAX as u64) as u32;
        let running = p.state == ProcState::Running;
        for (&(dev, cat), b) in &mut p.buckets {
            let before = (b.totals.bytes, b.totals.count);
            b.live.retain(|_, entry| {
                let keep = entry.time_s > until_s;
                if !keep {
                    b.totals.bytes = b.totals.bytes.saturating_sub(entry.size);
                    b.totals.count = b.totals.count.saturating_sub(1);
                }
                keep
            });
            if running
                && let Some(t) = self
                    .devices
                    .get_mut(dev.index())
                    .and_then(|(_, t)| t.get_mut(cat as usize))
            {
                t.bytes = t.bytes.saturating_sub(before.0 - b.totals.bytes);
                t.count = t.count.saturating_sub(before.1 - b.totals.count);
            }
        }
    }

    /// Notes that `n` events were missed without any risk to what is listed (events a reader
    /// never saw because they were written before it attached): the detail lacks allocations,
    /// but every one it lists is live.
    pub fn missed(&mut self, proc: ProcKey, n: u64) {
        if let Some(p) = self.procs.get_mut(&proc) {
            p.lost = p.lost.saturating_add(n);
        }
    }

    /// Applies one event of a running or exited process. O(1).
    #[inline]
    pub fn apply(&mut self, proc: ProcKey, e: &Event) {
        self.apply_batch(proc, std::slice::from_ref(e));
    }

    /// Applies a process's events in order. O(1) per event; the process, its current bucket
    /// and the device totals are looked up once per run of events that share them, and only
    /// the batch's last flight-recorder-length events are written to the flight recorder.
    pub fn apply_batch(&mut self, proc: ProcKey, events: &[Event]) {
        // Batch indices are u32 in the pairing table, and its scratch stays small.
        if events.len() > MAX_BATCH {
            for chunk in events.chunks(MAX_BATCH) {
                self.apply_batch(proc, chunk);
            }
            return;
        }
        let Ledger {
            devices,
            procs,
            stats,
            epoch_ns,
            transients,
            recorder_events,
            ..
        } = self;
        let recorder_events = *recorder_events;
        let Some(p) = procs.get_mut(&proc) else {
            stats.rejected += events.len() as u64;
            return;
        };
        let known = |e: &Event| {
            devices
                .get(e.device.index())
                .is_some_and(|(_, t)| (e.category as usize) < t.len())
        };
        // After a loss, allocations made by its end are not taken (see `lost_until`).
        let since = p.detail_since_ns;
        let stale = |e: &Event| e.kind == EventKind::Alloc && since.is_some_and(|t| e.time_ns <= t);
        transients.pair(events, known, |e| !stale(e));
        let Transients { partner, unpaired, .. } = transients;
        // Unmatched frees of an earlier clock tick can no longer meet their allocation.
        if let Some(first) = events.first() {
            p.ties.retain(|_, (t, _, _)| *t >= first.time_ns);
        }
        // Only the batch's last `recorder_events` applied events can stay in the recorder
        // (rejected ones are never recorded, so they do not count).
        let mut recent_from = events.len();
        let mut recorded = 0;
        while recent_from > 0 && recorded < recorder_events {
            recent_from -= 1;
            recorded += usize::from(known(&events[recent_from]));
        }
        let running = p.state == ProcState::Running;
        let mut current: Option<((DeviceKey, u8), &mut Bucket, &mut Totals)> = None;
        for (i, e) in events.iter().enumerate() {
            let key = (e.device, e.category);
            if current.as_ref().is_none_or(|(k, _, _)| *k != key) {
                current = None;
                let Some(dev_total) = devices
                    .get_mut(e.device.index())
                    .and_then(|(_, t)| t.get_mut(e.category as usize))
                else {
                    stats.rejected += 1;
                    continue;
                };
                // The bucket borrows `p.buckets` and the totals `devices`: disjoint, and both
                // borrows end when `current` is replaced.
                let bucket = p.buckets.entry(key).or_default();
                current = Some((key, bucket, dev_total));
            }
            let (_, bucket, dev_total) = current.as_mut().expect("set above");
            stats.events += 1;
            let time_s = (e.time_ns.saturating_sub(*epoch_ns) / 1_000_000_000).min(u32::MAX as u64) as u32;
            let matched = match e.kind {
                EventKind::Alloc if stale(e) => true,
                // Another stream (thread) freed it within the same clock tick, and that free came
                // first.
                EventKind::Alloc if open_tie(&p.ties, e, Tie::EarlyFree) => {
                    p.ties.remove(&(e.device, e.category, e.address));
                    if partner[i] != NO_PARTNER {
                        unpaired[partner[i] as usize] = true;
                    }
                    stats.unmatched_frees = stats.unmatched_frees.saturating_sub(1);
                    p.unmatched_frees = p.unmatched_frees.saturating_sub(1);
                    bucket.totals.add(e.size);
                    bucket.totals.sub(e.size);
                    if running {
                        dev_total.add(e.size);
                        dev_total.sub(e.size);
                    }
                    true
                }
                EventKind::Alloc => {
                    // A transient allocation only takes the place of what was live at its
                    // address; its free (later in this batch) finds it gone from the map.
                    let old = if partner[i] != NO_PARTNER {
                        bucket.live.remove(&e.address)
                    } else {
                        bucket.live.insert(
                            e.address,
                            Entry {
                                size: e.size,
                                time_s,
                                tag: e.tag,
                            },
                        )
                    };
                    if let Some(old) = old {
                        // A re-allocation at a live address: the runtime reused it without a free
                        // we saw, or another stream's free of it in the same tick comes later.
                        stats.replaced += 1;
                        if p.ties.len() < MAX_TIES {
                            p.ties
                                .insert((e.device, e.category, e.address), (e.time_ns, e.stream, Tie::Replaced));
                        }
                        bucket.totals.sub(old.size);
                        if running {
                            dev_total.sub(old.size);
                        }
                    }
                    bucket.totals.add(e.size);
                    if running {
                        dev_total.add(e.size);
                    }
                    true
                }
                EventKind::Free if partner[i] != NO_PARTNER && !unpaired[i] => {
                    let size = events[partner[i] as usize].size;
                    bucket.totals.sub(size);
                    if running {
                        dev_total.sub(size);
                    }
                    true
                }
                // Another stream allocated at this address in the same tick, taking the place of
                // what this frees: the free came first.
                EventKind::Free if open_tie(&p.ties, e, Tie::Replaced) => {
                    p.ties.remove(&(e.device, e.category, e.address));
                    stats.replaced = stats.replaced.saturating_sub(1);
                    true
                }
                EventKind::Free => match bucket.live.remove(&e.address) {
                    Some(old) => {
                        bucket.totals.sub(old.size);
                        if running {
                            dev_total.sub(old.size);
                        }
                        true
                    }
                    None => {
                        stats.unmatched_frees += 1;
                        p.unmatched_frees += 1;
                        // Threads' events within one clock tick cannot be ordered: the
                        // allocation this frees may come later in the same tick.
                        if p.ties.len() < MAX_TIES {
                            p.ties
                                .insert((e.device, e.category, e.address), (e.time_ns, e.stream, Tie::EarlyFree));
                        }
                        false
                    }
                },
            };
            if i >= recent_from {
                while p.recent.len() >= recorder_events {
                    p.recent.pop_front();
                }
                p.recent.push_back(RecentEvent { event: *e, matched });
            }
        }
    }

    /// Marks a process exited: its live bytes leave the device totals at once and stay in the
    /// ledger as what it left behind. Idempotent.
    pub fn process_exited(&mut self, proc: ProcKey, at_ns: u64) {
        let Some(p) = self.procs.get_mut(&proc) else { return };
        if p.state != ProcState::Running {
            return;
        }
        p.state = ProcState::Exited { at_ns };
        for (&(dev, cat), b) in &p.buckets {
            if let Some(t) = self
                .devices
                .get_mut(dev.index())
                .and_then(|(_, t)| t.get_mut(cat as usize))
            {
                t.bytes = t.bytes.saturating_sub(b.totals.bytes);
                t.count = t.count.saturating_sub(b.totals.count);
            }
        }
    }

    /// Forgets a process (after its retention period).
    pub fn remove_process(&mut self, proc: ProcKey) {
        self.process_exited(proc, 0);
        self.procs.remove(&proc);
    }
}
