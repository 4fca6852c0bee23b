//! The ledger: every live device allocation on the host, with the aggregates, fragmentation and
//! "will it fit" answers derived from it.
//!
//! Sources (regions, the legacy socket) turn what they read into [`Event`]s and feed them here;
//! APIs read from here. Pure logic: no I/O, no clocks (times come in with the events), so every
//! answer is reproducible in tests.
//!
//! Layout, chosen for the daemon's budgets (≥ 20 M events/s drained on one core, ≤ 64 B per
//! live allocation, totals in well under a millisecond at 1 M allocations):
//! - per (process, device, category) a *bucket*: a hash map from address to a 16-byte
//!   [`Entry`] plus the bucket's [`Totals`];
//! - per device, per category [`Totals`] over running processes, updated in O(1) per event;
//! - per process a bounded flight recorder of its last events;
//! - an allocation freed later in the same batch (a transient) never enters the address map:
//!   at high event rates most events are such short-lived buffers, since live memory is bounded.
//!
//! Free-block maps are not kept per event: [`Ledger::fragmentation`] and [`Ledger::fit`] sort
//! one device category's allocations when asked.

#![deny(missing_docs)]

use std::collections::VecDeque;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

/// A process, as the source that reported it numbers it (one key per (pid, start time)).
pub type ProcKey = u32;
/// A device, as numbered by [`Ledger::add_device`].
pub type DeviceKey = u32;

/// One category of a device: the region's declaration, the one device description every
/// source uses.
pub use ttmem_region::decode::Category as CategoryInfo;
/// A device (chip), host-wide, as a source declared it.
pub use ttmem_region::decode::Device as DeviceInfo;

/// What happened.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// An allocation.
    Alloc,
    /// A free.
    Free,
}

/// One allocation event, already mapped to host-wide device keys and monotonic time.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Alloc or free.
    pub kind: EventKind,
    /// Device.
    pub device: DeviceKey,
    /// Category index in the device's declaration.
    pub category: u8,
    /// Address (the same in every bank for interleaved buffers).
    pub address: u64,
    /// Bytes on the device (over all banks).
    pub size: u64,
    /// `CLOCK_MONOTONIC` nanoseconds.
    pub time_ns: u64,
    /// The process's tag id (0: none).
    pub tag: u32,
}

/// Live bytes and counts with their history.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Live bytes.
    pub bytes: u64,
    /// Live allocations.
    pub count: u64,
    /// Highest `bytes` seen.
    pub peak: u64,
    /// Allocations applied.
    pub allocs: u64,
    /// Frees applied (matched to a live allocation).
    pub frees: u64,
}

impl Totals {
    #[inline]
    fn add(&mut self, size: u64) {
        self.bytes = self.bytes.saturating_add(size);
        self.count += 1;
        self.allocs += 1;
        self.peak = self.peak.max(self.bytes);
    }
    #[inline]
    fn sub(&mut self, size: u64) {
        self.bytes = self.bytes.saturating_sub(size);
        self.count = self.count.saturating_sub(1);
        self.frees += 1;
    }
}

/// One live allocation: 16 bytes (the address is the map key).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(C)]
pub struct Entry {
    /// Bytes on the device.
    pub size: u64,
    /// Seconds since the ledger's epoch when it was allocated.
    pub time_s: u32,
    /// Tag id.
    pub tag: u32,
}

#[derive(Default)]
struct Bucket {
    live: HashMap<u64, Entry>,
    totals: Totals,
}

/// Whether a process runs.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "state")]
pub enum ProcState {
    /// Running.
    Running,
    /// Exited at this monotonic time; its allocations are what it left behind.
    Exited {
        /// `CLOCK_MONOTONIC` ns of the exit.
        at_ns: u64,
    },
}

/// An event as kept in a process's flight recorder.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentEvent {
    /// The event.
    #[serde(flatten)]
    pub event: Event,
    /// Whether a free matched a live allocation (false: allocated before tracking started, or
    /// its alloc event was lost).
    pub matched: bool,
}

struct Proc {
    state: ProcState,
    buckets: HashMap<(DeviceKey, u8), Bucket>,
    recent: VecDeque<RecentEvent>,
    lost: u64,
    unmatched_frees: u64,
    tags: HashMap<u32, Box<str>>,
}

/// How many events each process's flight recorder keeps.
pub const FLIGHT_RECORDER_EVENTS: usize = 256;

/// Ledger-wide counters (the daemon's own statistics).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerStats {
    /// Events applied.
    pub events: u64,
    /// Frees that matched no live allocation.
    pub unmatched_frees: u64,
    /// Allocations at an address that was already live (the old one was replaced).
    pub replaced: u64,
    /// Events naming an unknown process, device or category (ignored).
    pub rejected: u64,
}

/// The ledger.
pub struct Ledger {
    devices: Vec<(DeviceInfo, Vec<Totals>)>,
    device_index: HashMap<(u32, u64), DeviceKey>,
    procs: HashMap<ProcKey, Proc>,
    epoch_ns: u64,
    stats: LedgerStats,
    transients: Transients,
}

/// Events applied at a time (a longer batch is applied in parts, with the same result).
const MAX_BATCH: usize = 1 << 16;
/// Marks no partner in [`Transients::partner`].
const NO_PARTNER: u32 = u32::MAX;
/// Slots of the table that pairs a batch's frees with its allocations (a power of two, a few
/// times a drain round, small enough to stay in the L1 cache). Tests use a tiny table so that
/// collisions and stale slots are the common case.
const TRANSIENT_SLOTS: usize = if cfg!(test) { 8 } else { 1 << 12 };

/// Scratch space for finding a batch's transient allocations (see the crate documentation):
/// one map operation per pair instead of an insert and a remove.
struct Transients {
    /// Per batch event: its partner's index (alloc → its free, free → its alloc).
    partner: Vec<u32>,
    /// Direct-mapped by (device, category, address): the index of the latest batch event on
    /// that key, or of a colliding one (verified against the batch, so stale slots are harmless).
    slots: Box<[u32]>,
}

impl Transients {
    fn new() -> Self {
        Transients {
            partner: Vec::new(),
            slots: vec![NO_PARTNER; TRANSIENT_SLOTS].into_boxed_slice(),
        }
    }

    /// Pairs each free with the allocation of the same device, category and address just before
    /// it in `events`, when no other event on that key lies between them. A collision in the
    /// table only loses a pairing, never makes a wrong one: a slot is trusted only if the event
    /// it names has the same key and no later event on the key overwrote it.
    fn pair(&mut self, events: &[Event], valid: impl Fn(&Event) -> bool) {
        self.partner.clear();
        self.partner.resize(events.len(), NO_PARTNER);
        let slot_of = |e: &Event| {
            let key = e.address ^ ((e.device as u64) << 40 | (e.category as u64) << 32).rotate_left(17);
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

/// How to order a process's allocations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Device, category, address ascending.
    Address,
    /// Largest first.
    Size,
    /// Oldest first.
    Age,
}

/// One allocation in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Owner.
    pub process: ProcKey,
    /// Device.
    pub device: DeviceKey,
    /// Category name.
    pub category: String,
    /// Address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
    /// Age in seconds at the time asked.
    pub age_s: u64,
    /// Tag text, if any.
    pub tag: Option<String>,
}

/// A page of allocations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Allocations matching, in total.
    pub total: u64,
    /// Offset of the first item.
    pub offset: u64,
    /// The items.
    pub items: Vec<Allocation>,
}

/// Free space of one device category, per bank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fragmentation {
    /// Free bytes of one bank.
    pub free_per_bank: u64,
    /// Largest free block of one bank.
    pub largest_free_per_bank: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// 1 − largest / free (0 when all free space is one block).
    pub ratio: f64,
    /// Live allocations considered.
    pub allocations: u64,
}

/// An allocation that bounds a free gap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    /// Owner.
    pub process: ProcKey,
    /// Address.
    pub address: u64,
    /// Bytes on the device.
    pub size: u64,
}

/// A free gap of one bank and what bounds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap {
    /// First free address.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// The allocation just below (None: the start of the range).
    pub below: Option<Neighbour>,
    /// The allocation just above (None: the end of the range).
    pub above: Option<Neighbour>,
}

/// The answer to "can N bytes of this category be allocated on this device now?".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit {
    /// Yes or no.
    pub fits: bool,
    /// Bytes requested over all banks.
    pub requested: u64,
    /// Bytes that needs in one bank (after interleaving and alignment).
    pub needed_per_bank: u64,
    /// Largest free block of one bank.
    pub largest_free_per_bank: u64,
    /// The largest gaps (up to five), with the allocations bounding them.
    pub best_gaps: Vec<Gap>,
    /// The free space picture.
    pub fragmentation: Fragmentation,
}

/// Why a query could not be answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QueryError {
    /// No such device.
    UnknownDevice(DeviceKey),
    /// No such category on the device.
    UnknownCategory(String),
    /// No such process.
    UnknownProcess(ProcKey),
    /// The device did not declare an address range for the category.
    NoAddressRange(String),
}

impl std::fmt::Display for QueryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueryError::UnknownDevice(d) => write!(f, "no device {d}"),
            QueryError::UnknownCategory(c) => write!(f, "the device has no category {c}"),
            QueryError::UnknownProcess(p) => write!(f, "no process {p}"),
            QueryError::NoAddressRange(c) => write!(f, "the device declared no address range for {c}"),
        }
    }
}

impl std::error::Error for QueryError {}

impl Ledger {
    /// An empty ledger whose entry ages count from `epoch_ns` (monotonic).
    pub fn new(epoch_ns: u64) -> Self {
        Ledger {
            devices: Vec::new(),
            device_index: HashMap::new(),
            procs: HashMap::new(),
            epoch_ns,
            stats: LedgerStats::default(),
            transients: Transients::new(),
        }
    }

    /// Adds a device or returns the key it has (same kind and non-zero hardware id). A device
    /// without a hardware id always gets a new key.
    pub fn add_device(&mut self, info: DeviceInfo) -> DeviceKey {
        if info.hw_id != 0
            && let Some(&k) = self.device_index.get(&(info.kind.code(), info.hw_id))
        {
            return k;
        }
        let key = self.devices.len() as DeviceKey;
        if info.hw_id != 0 {
            self.device_index.insert((info.kind.code(), info.hw_id), key);
        }
        let n = info.categories.len();
        self.devices.push((info, vec![Totals::default(); n]));
        key
    }

    /// The devices, by key.
    pub fn devices(&self) -> impl Iterator<Item = (DeviceKey, &DeviceInfo, &[Totals])> {
        self.devices
            .iter()
            .enumerate()
            .map(|(k, (i, t))| (k as DeviceKey, i, t.as_slice()))
    }

    /// Starts tracking a process (idempotent).
    pub fn add_process(&mut self, proc: ProcKey) {
        self.procs.entry(proc).or_insert_with(|| Proc {
            state: ProcState::Running,
            buckets: HashMap::new(),
            recent: VecDeque::with_capacity(16),
            lost: 0,
            unmatched_frees: 0,
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

    /// Notes that `n` events of a process were lost (ring overflow): its detail is incomplete.
    pub fn mark_lost(&mut self, proc: ProcKey, n: u64) {
        if let Some(p) = self.procs.get_mut(&proc) {
            p.lost = p.lost.saturating_add(n);
        }
    }

    fn time_s(&self, time_ns: u64) -> u32 {
        (time_ns.saturating_sub(self.epoch_ns) / 1_000_000_000).min(u32::MAX as u64) as u32
    }

    /// Applies one event of a running or exited process. O(1).
    #[inline]
    pub fn apply(&mut self, proc: ProcKey, e: &Event) {
        self.apply_batch(proc, std::slice::from_ref(e));
    }

    /// Applies a process's events in order. O(1) per event; the process, its current bucket
    /// and the device totals are looked up once per run of events that share them, and only
    /// the batch's last [`FLIGHT_RECORDER_EVENTS`] events are written to the flight recorder.
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
            ..
        } = self;
        let Some(p) = procs.get_mut(&proc) else {
            stats.rejected += events.len() as u64;
            return;
        };
        let known = |e: &Event| {
            devices
                .get(e.device as usize)
                .is_some_and(|(_, t)| (e.category as usize) < t.len())
        };
        transients.pair(events, known);
        let partner = &transients.partner;
        // Only the batch's last FLIGHT_RECORDER_EVENTS applied events can stay in the recorder
        // (rejected ones are never recorded, so they do not count).
        let mut recent_from = events.len();
        let mut recorded = 0;
        while recent_from > 0 && recorded < FLIGHT_RECORDER_EVENTS {
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
                    .get_mut(e.device as usize)
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
                        // A re-allocation at a live address: the runtime reused it without a free we saw.
                        stats.replaced += 1;
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
                EventKind::Free if partner[i] != NO_PARTNER => {
                    let size = events[partner[i] as usize].size;
                    bucket.totals.sub(size);
                    if running {
                        dev_total.sub(size);
                    }
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
                        false
                    }
                },
            };
            if i >= recent_from {
                if p.recent.len() == FLIGHT_RECORDER_EVENTS {
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
                .get_mut(dev as usize)
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

    /// Processes and their states.
    pub fn processes(&self) -> impl Iterator<Item = (ProcKey, ProcState)> + '_ {
        self.procs.iter().map(|(&k, p)| (k, p.state))
    }

    /// A process's state.
    pub fn state(&self, proc: ProcKey) -> Option<ProcState> {
        self.procs.get(&proc).map(|p| p.state)
    }

    /// A process's totals per (device, category).
    pub fn process_totals(&self, proc: ProcKey) -> Vec<(DeviceKey, u8, Totals)> {
        let mut v: Vec<_> = self
            .procs
            .get(&proc)
            .map(|p| p.buckets.iter().map(|(&(d, c), b)| (d, c, b.totals)).collect())
            .unwrap_or_default();
        v.sort_by_key(|&(d, c, _)| (d, c));
        v
    }

    /// Events lost for a process (its detail is incomplete when non-zero), and frees that
    /// matched nothing.
    pub fn completeness(&self, proc: ProcKey) -> Option<(u64, u64)> {
        self.procs.get(&proc).map(|p| (p.lost, p.unmatched_frees))
    }

    /// A process's flight recorder, oldest first.
    pub fn recent(&self, proc: ProcKey) -> Option<&VecDeque<RecentEvent>> {
        self.procs.get(&proc).map(|p| &p.recent)
    }

    /// Tag text of a process's tag id.
    pub fn tag(&self, proc: ProcKey, tag: u32) -> Option<&str> {
        self.procs.get(&proc)?.tags.get(&tag).map(|s| &**s)
    }

    /// Ledger-wide counters.
    pub fn stats(&self) -> LedgerStats {
        self.stats
    }

    /// Live allocations of every process.
    pub fn live_allocations(&self) -> u64 {
        self.procs
            .values()
            .flat_map(|p| p.buckets.values())
            .map(|b| b.live.len() as u64)
            .sum()
    }

    /// Bytes of memory the ledger's allocation maps hold (capacity × slot size, plus control
    /// bytes): what "daemon bytes per live allocation" measures.
    pub fn map_bytes(&self) -> u64 {
        let slot = (std::mem::size_of::<u64>() + std::mem::size_of::<Entry>()) as u64;
        self.procs
            .values()
            .flat_map(|p| p.buckets.values())
            .map(|b| {
                let cap = b.live.capacity() as u64;
                // hashbrown: buckets = next power of two of cap * 8 / 7; one control byte each.
                let buckets = if cap == 0 { 0 } else { (cap * 8 / 7).next_power_of_two() };
                buckets * (slot + 1)
            })
            .sum()
    }

    fn category_name(&self, dev: DeviceKey, cat: u8) -> String {
        self.devices
            .get(dev as usize)
            .and_then(|(i, _)| i.categories.get(cat as usize))
            .map(|c| c.name.clone())
            .unwrap_or_else(|| format!("#{cat}"))
    }

    fn to_allocation(
        &self,
        proc: ProcKey,
        dev: DeviceKey,
        cat: u8,
        address: u64,
        e: &Entry,
        now_ns: u64,
    ) -> Allocation {
        Allocation {
            process: proc,
            device: dev,
            category: self.category_name(dev, cat),
            address,
            size: e.size,
            age_s: self.time_s(now_ns).saturating_sub(e.time_s) as u64,
            tag: if e.tag == 0 {
                None
            } else {
                self.tag(proc, e.tag).map(str::to_string)
            },
        }
    }

    /// One page of a process's live allocations. Selects the page in O(n) before sorting only
    /// the page, so the first page of a million allocations stays fast.
    pub fn allocations(
        &self,
        proc: ProcKey,
        sort: SortBy,
        offset: u64,
        limit: u64,
        now_ns: u64,
    ) -> Result<Page, QueryError> {
        let p = self.procs.get(&proc).ok_or(QueryError::UnknownProcess(proc))?;
        let mut all: Vec<(DeviceKey, u8, u64, Entry)> =
            Vec::with_capacity(p.buckets.values().map(|b| b.live.len()).sum());
        for (&(d, c), b) in &p.buckets {
            all.extend(b.live.iter().map(|(&a, &e)| (d, c, a, e)));
        }
        let total = all.len() as u64;
        let key = |x: &(DeviceKey, u8, u64, Entry)| -> (u64, u64, u64) {
            match sort {
                SortBy::Address => (((x.0 as u64) << 8) | x.1 as u64, x.2, 0),
                SortBy::Size => (u64::MAX - x.3.size, ((x.0 as u64) << 8) | x.1 as u64, x.2),
                SortBy::Age => (x.3.time_s as u64, ((x.0 as u64) << 8) | x.1 as u64, x.2),
            }
        };
        let start = offset.min(total) as usize;
        let end = offset.saturating_add(limit).min(total) as usize;
        if end < all.len() && end > 0 {
            all.select_nth_unstable_by_key(end, key);
            all.truncate(end);
        }
        all.sort_unstable_by_key(key);
        let items = all[start.min(all.len())..end.min(all.len())]
            .iter()
            .map(|(d, c, a, e)| self.to_allocation(proc, *d, *c, *a, e, now_ns))
            .collect();
        Ok(Page { total, offset, items })
    }

    /// Live allocations of running processes older than `min_age_s`, oldest first.
    pub fn leak_suspects(&self, min_age_s: u64, limit: usize, now_ns: u64) -> Vec<Allocation> {
        let now_s = self.time_s(now_ns) as u64;
        let mut v: Vec<(ProcKey, DeviceKey, u8, u64, Entry)> = Vec::new();
        for (&pk, p) in self.procs.iter().filter(|(_, p)| p.state == ProcState::Running) {
            for (&(d, c), b) in &p.buckets {
                v.extend(
                    b.live
                        .iter()
                        .filter(|(_, e)| now_s.saturating_sub(e.time_s as u64) >= min_age_s)
                        .map(|(&a, &e)| (pk, d, c, a, e)),
                );
            }
        }
        let key = |x: &(ProcKey, DeviceKey, u8, u64, Entry)| (x.4.time_s, x.0, x.3);
        if limit < v.len() {
            v.select_nth_unstable_by_key(limit, key);
            v.truncate(limit);
        }
        v.sort_unstable_by_key(key);
        v.iter()
            .map(|(p, d, c, a, e)| self.to_allocation(*p, *d, *c, *a, e, now_ns))
            .collect()
    }

    fn category(&self, dev: DeviceKey, category: &str) -> Result<(u8, &CategoryInfo), QueryError> {
        let (info, _) = self.devices.get(dev as usize).ok_or(QueryError::UnknownDevice(dev))?;
        info.categories
            .iter()
            .enumerate()
            .find(|(_, c)| c.name.eq_ignore_ascii_case(category))
            .map(|(i, c)| (i as u8, c))
            .ok_or_else(|| QueryError::UnknownCategory(category.to_string()))
    }

    /// Per-bank extents of running processes' allocations in one device category, sorted:
    /// (start, end, owner, address, size).
    fn extents(&self, dev: DeviceKey, cat: u8, banks: u64, align: u64) -> Vec<(u64, u64, ProcKey, u64)> {
        let mut v = Vec::new();
        for (&pk, p) in self.procs.iter().filter(|(_, p)| p.state == ProcState::Running) {
            if let Some(b) = p.buckets.get(&(dev, cat)) {
                v.extend(b.live.iter().map(|(&a, e)| {
                    let per_bank = e.size.div_ceil(banks).div_ceil(align).saturating_mul(align);
                    (a, a.saturating_add(per_bank), pk, e.size)
                }));
            }
        }
        v.sort_unstable_by_key(|x| (x.0, x.1));
        v
    }

    /// Free gaps of one bank, with the allocations that bound them.
    fn gaps(&self, dev: DeviceKey, cat: u8, c: &CategoryInfo) -> (Vec<Gap>, u64) {
        let banks = c.banks.max(1) as u64;
        let align = (c.alignment as u64).max(1);
        let ext = self.extents(dev, cat, banks, align);
        let mut gaps = Vec::new();
        let mut cursor = c.addr_base;
        let mut below: Option<Neighbour> = None;
        for &(start, end, pk, size) in &ext {
            if start > cursor {
                gaps.push(Gap {
                    start: cursor,
                    end: start.min(c.addr_end),
                    below: below.clone(),
                    above: Some(Neighbour {
                        process: pk,
                        address: start,
                        size,
                    }),
                });
            }
            if end >= cursor {
                cursor = end;
                below = Some(Neighbour {
                    process: pk,
                    address: start,
                    size,
                });
            }
        }
        if cursor < c.addr_end {
            gaps.push(Gap {
                start: cursor,
                end: c.addr_end,
                below,
                above: None,
            });
        }
        gaps.retain(|g| g.end > g.start);
        (gaps, ext.len() as u64)
    }

    /// Free space of one device category (running processes' allocations), computed now.
    pub fn fragmentation(&self, dev: DeviceKey, category: &str) -> Result<Fragmentation, QueryError> {
        let (cat, c) = self.category(dev, category)?;
        if c.addr_end <= c.addr_base {
            return Err(QueryError::NoAddressRange(c.name.clone()));
        }
        let (gaps, allocations) = self.gaps(dev, cat, c);
        Ok(Self::summarize(&gaps, allocations))
    }

    fn summarize(gaps: &[Gap], allocations: u64) -> Fragmentation {
        let free: u64 = gaps.iter().map(|g| g.end - g.start).sum();
        let largest = gaps.iter().map(|g| g.end - g.start).max().unwrap_or(0);
        Fragmentation {
            free_per_bank: free,
            largest_free_per_bank: largest,
            free_blocks: gaps.len() as u64,
            ratio: if free == 0 {
                0.0
            } else {
                1.0 - largest as f64 / free as f64
            },
            allocations,
        }
    }

    /// Occupancy of one bank's address range cut into `cells` equal parts (0.0 free to 1.0
    /// full), for a memory map.
    pub fn occupancy(&self, dev: DeviceKey, category: &str, cells: usize) -> Result<Vec<f32>, QueryError> {
        let (cat, c) = self.category(dev, category)?;
        if c.addr_end <= c.addr_base {
            return Err(QueryError::NoAddressRange(c.name.clone()));
        }
        let cells = cells.clamp(1, 4096);
        let span = c.addr_end - c.addr_base;
        let width = span.div_ceil(cells as u64).max(1);
        let mut used = vec![0u64; cells];
        let banks = c.banks.max(1) as u64;
        let align = (c.alignment as u64).max(1);
        for (start, end, _, _) in self.extents(dev, cat, banks, align) {
            let (s, e) = (
                start.clamp(c.addr_base, c.addr_end) - c.addr_base,
                end.clamp(c.addr_base, c.addr_end) - c.addr_base,
            );
            let mut at = s;
            while at < e {
                let cell = (at / width) as usize;
                let cell_end = ((cell as u64 + 1) * width).min(e);
                used[cell.min(cells - 1)] += cell_end - at;
                at = cell_end;
            }
        }
        Ok(used
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                let cell_span = width.min(span - (i as u64 * width).min(span)).max(1);
                (u as f64 / cell_span as f64).min(1.0) as f32
            })
            .collect())
    }

    /// Can `bytes` of `category` be allocated on `dev` now? Interleaving over the category's
    /// banks and its alignment are applied as the runtime's allocator would.
    pub fn fit(&self, dev: DeviceKey, category: &str, bytes: u64) -> Result<Fit, QueryError> {
        let (cat, c) = self.category(dev, category)?;
        if c.addr_end <= c.addr_base {
            return Err(QueryError::NoAddressRange(c.name.clone()));
        }
        let banks = c.banks.max(1) as u64;
        let align = (c.alignment as u64).max(1);
        // `bytes` comes from a query and sizes from untrusted regions: saturate, never overflow.
        let needed = bytes.div_ceil(banks).div_ceil(align).saturating_mul(align);
        let (mut gaps, allocations) = self.gaps(dev, cat, c);
        let fragmentation = Self::summarize(&gaps, allocations);
        gaps.sort_by_key(|g| std::cmp::Reverse(g.end - g.start));
        gaps.truncate(5);
        Ok(Fit {
            fits: fragmentation.largest_free_per_bank >= needed,
            requested: bytes,
            needed_per_bank: needed,
            largest_free_per_bank: fragmentation.largest_free_per_bank,
            best_gaps: gaps,
            fragmentation,
        })
    }
}

#[cfg(test)]
mod tests;
