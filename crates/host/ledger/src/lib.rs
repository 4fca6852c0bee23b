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
//!
//! Files by job: `apply` (events in, lifecycle), `query` (totals, pages, leak suspects, the
//! flight recorder), `space` (gaps, fragmentation, occupancy, fit).

#![deny(missing_docs)]

use std::collections::VecDeque;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

/// A process, as the collector numbers it (one key per (pid, start time)): never a pid, so a
/// reused pid cannot be confused with the process that had it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcKey(pub u32);

/// A device, as numbered by [`Ledger::add_device`]: the ledger's index, not the `ps` id (which
/// moves when devices come and go).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeviceKey(pub u32);

impl DeviceKey {
    /// The index in the ledger's device table.
    #[inline]
    fn index(self) -> usize {
        self.0 as usize
    }
}

impl std::fmt::Display for ProcKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "process #{}", self.0)
    }
}

impl std::fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "device #{}", self.0)
    }
}

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
    /// Which of the process's event streams (a region's shard, one per thread) it came from:
    /// one stream's events are in order, while only their times order events of different
    /// streams, to the resolution of the writer's clock.
    #[serde(default)]
    pub stream: u16,
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

/// Events of different streams (threads) stamped in the same clock tick arrive merged in an
/// order that may not be theirs. In a valid allocator trace, two events on one address in one
/// tick from two streams allow one order only, so the ledger keeps what it saw first open:
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Tie {
    /// A free matched nothing: another stream's allocation of the address, later in the same
    /// tick, is what it freed.
    EarlyFree,
    /// An allocation took a live address: another stream's free of it, later in the same tick,
    /// freed what it replaced.
    Replaced,
}

struct Proc {
    state: ProcState,
    buckets: HashMap<(DeviceKey, u8), Bucket>,
    recent: VecDeque<RecentEvent>,
    lost: u64,
    unmatched_frees: u64,
    /// After events were lost: the monotonic ns up to which the detail was dropped. Every
    /// allocation made by then may have been freed by a lost event, so none is kept or taken.
    detail_since_ns: Option<u64>,
    /// Events of this clock tick whose order against another stream's is open, by (device,
    /// category, address), with their time and stream.
    ties: HashMap<(DeviceKey, u8, u64), (u64, u16, Tie)>,
    tags: HashMap<u32, Box<str>>,
}

/// How many events each process's flight recorder keeps unless the ledger is told otherwise
/// ([`Ledger::set_flight_recorder_events`]).
pub const FLIGHT_RECORDER_EVENTS: usize = 256;

/// The most events a flight recorder may be set to keep (about 40 MB per busy process).
pub const MAX_FLIGHT_RECORDER_EVENTS: usize = 1 << 20;

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
    transients: apply::Transients,
    recorder_events: usize,
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
            transients: apply::Transients::new(),
            recorder_events: FLIGHT_RECORDER_EVENTS,
        }
    }

    /// Sets how many events each process's flight recorder keeps (1 to
    /// [`MAX_FLIGHT_RECORDER_EVENTS`]): a longer recorder gives exports a longer trace. Recorders
    /// already longer are trimmed at their next event.
    pub fn set_flight_recorder_events(&mut self, events: usize) {
        self.recorder_events = events.clamp(1, MAX_FLIGHT_RECORDER_EVENTS);
    }

    /// How many events each process's flight recorder keeps.
    pub fn flight_recorder_events(&self) -> usize {
        self.recorder_events
    }

    /// Adds a device or returns the key it has (same kind and non-zero hardware id). A device
    /// without a hardware id always gets a new key.
    pub fn add_device(&mut self, info: DeviceInfo) -> DeviceKey {
        if info.hw_id != 0
            && let Some(&k) = self.device_index.get(&(info.kind.code(), info.hw_id))
        {
            return k;
        }
        let key = DeviceKey(self.devices.len() as u32);
        if info.hw_id != 0 {
            self.device_index.insert((info.kind.code(), info.hw_id), key);
        }
        let n = info.categories.len();
        self.devices.push((info, vec![Totals::default(); n]));
        key
    }

    /// Seconds since the ledger's epoch (entry ages are kept in this unit).
    fn time_s(&self, time_ns: u64) -> u32 {
        (time_ns.saturating_sub(self.epoch_ns) / 1_000_000_000).min(u32::MAX as u64) as u32
    }

    /// The devices, by key.
    pub fn devices(&self) -> impl Iterator<Item = (DeviceKey, &DeviceInfo, &[Totals])> {
        self.devices
            .iter()
            .enumerate()
            .map(|(k, (i, t))| (DeviceKey(k as u32), i, t.as_slice()))
    }
}

mod apply;
mod query;
mod space;

pub use query::{Allocation, Completeness, Page, SortBy};
pub use space::{Fit, Fragmentation, Gap, Neighbour};

#[cfg(test)]
mod tests;
