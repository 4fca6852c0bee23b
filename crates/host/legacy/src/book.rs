//! What the server does with one client process's messages: the semantics existing clients
//! rely on, without the old server's defects.
//!
//! - ALLOC keys a buffer by (device id, buffer id). An ALLOC of a live key is a cached program
//!   buffer allocated again: its reference count goes up; size, type and owner stay as first
//!   reported.
//! - FREE of a live key lowers the count; at zero the buffer leaves the totals with its *stored*
//!   size and type (the FREE's size is not used, so no counter can underflow). FREE of an
//!   unknown key (allocated before tracking started) is counted and changes nothing.
//! - CB_ALLOC/CB_FREE and KERNEL_LOAD/KERNEL_UNLOAD follow the same rules in their own key
//!   spaces, so a repeated insert is counted, never a silent overwrite.
//! - Invalid fields (a device id out of range, an unknown buffer type) are counted and the
//!   message is ignored.
//!
//! One book per client *process* (the peer's credentials decide who that is): keys are per
//! process, so one process's messages can never touch another's buffers.

use std::collections::BTreeMap;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use crate::framing::MAX_DEVICE_ID;
use crate::wire::{Message, MsgType};

/// Where a buffer's bytes count (indices follow ttmem's standard TT category order).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Category {
    /// DRAM buffers.
    Dram = 0,
    /// L1 buffers.
    L1 = 1,
    /// The small L1 region.
    L1Small = 2,
    /// The trace region.
    Trace = 3,
    /// Circular buffers.
    Cb = 4,
    /// Kernel binaries.
    Kernel = 5,
    /// Host memory mapped for the device.
    SystemMemory = 6,
}

impl Category {
    /// Every category, by index.
    pub const ALL: [Category; 7] = [
        Category::Dram,
        Category::L1,
        Category::L1Small,
        Category::Trace,
        Category::Cb,
        Category::Kernel,
        Category::SystemMemory,
    ];

    /// The category of a tt-metal `BufferType` byte (0 DRAM, 1 L1, 2 SYSTEM_MEMORY, 3 L1_SMALL,
    /// 4 TRACE). SYSTEM_MEMORY is its own category: the old server counted it into L1_SMALL.
    pub fn from_buffer_type(b: u8) -> Option<Category> {
        match b {
            0 => Some(Category::Dram),
            1 => Some(Category::L1),
            2 => Some(Category::SystemMemory),
            3 => Some(Category::L1Small),
            4 => Some(Category::Trace),
            _ => None,
        }
    }

    /// The index in ttmem's standard TT category order.
    pub const fn index(self) -> u8 {
        self as u8
    }

    /// The category's name as ttmem shows it.
    pub const fn name(self) -> &'static str {
        match self {
            Category::Dram => "DRAM",
            Category::L1 => "L1",
            Category::L1Small => "L1_SMALL",
            Category::Trace => "TRACE",
            Category::Cb => "CB",
            Category::Kernel => "KERNEL",
            Category::SystemMemory => "SYSTEM_MEMORY",
        }
    }
}

/// Exact counters of one (device, category) of one process.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    /// Live bytes.
    pub live_bytes: u64,
    /// Live buffers.
    pub live_count: u64,
    /// Buffers that became live.
    pub allocs: u64,
    /// Buffers that stopped being live.
    pub frees: u64,
    /// Highest `live_bytes` seen.
    pub peak_bytes: u64,
}

/// One live buffer, CB or kernel.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Live {
    /// Bytes, as first reported.
    pub size: u64,
    /// References (ALLOCs not yet matched by a FREE).
    pub refs: u32,
    /// Category.
    pub category: Category,
    /// The buffer type byte as sent (for kernels: 0 application, 1 fabric, 2 dispatch).
    pub kind: u8,
}

/// A change to what is live, for the ledger (only the first ALLOC and the last FREE of a key).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A buffer became live.
    Alloc {
        /// Device id as the client numbers it.
        device: i32,
        /// Category.
        category: Category,
        /// Buffer id (the device address for buffers and CBs).
        id: u64,
        /// Bytes.
        size: u64,
    },
    /// A buffer stopped being live (its stored size and category).
    Free {
        /// Device id as the client numbers it.
        device: i32,
        /// Category.
        category: Category,
        /// Buffer id.
        id: u64,
        /// Bytes.
        size: u64,
    },
}

/// Why a message was ignored.
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The device id is out of range.
    #[error("device id {0} out of range 0..{MAX_DEVICE_ID}")]
    DeviceId(i32),
    /// The buffer type names no tt-metal `BufferType`.
    #[error("buffer type {0} is not one of 0 DRAM, 1 L1, 2 SYSTEM_MEMORY, 3 L1_SMALL, 4 TRACE")]
    BufferType(u8),
    /// The type byte names a reply, which a client never sends.
    #[error("a client sent a {0} (a server reply)")]
    Reply(&'static str),
    /// The process holds the most buffers the daemon keeps for one client.
    #[error("more than {0} live buffers for one process")]
    TooMany(usize),
    /// A size no device has (above [`MAX_SIZE`]).
    #[error("size {0} is larger than any device ({MAX_SIZE} bytes at most)")]
    Size(u64),
}

/// The largest buffer, CB or kernel a message may report (1 TiB, far above any chip). With at
/// most [`DEFAULT_MAX_LIVE`] keys, sums stay below 2^62: counters are exact, never saturated.
pub const MAX_SIZE: u64 = 1 << 40;

/// Counters over a book's life (the API's legacy statistics).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BookStats {
    /// ALLOC / CB_ALLOC / KERNEL_LOAD of a key already live (reference count raised).
    pub reallocs: u64,
    /// FREE / CB_FREE / KERNEL_UNLOAD that lowered a count above zero.
    pub partial_frees: u64,
    /// FREE of a key never allocated (allocated before tracking began).
    pub unknown_frees: u64,
    /// CB_FREE of an unknown CB.
    pub unknown_cb_frees: u64,
    /// KERNEL_UNLOAD of an unknown kernel.
    pub unknown_kernel_unloads: u64,
    /// Messages ignored for an invalid field.
    pub invalid: u64,
    /// KERNEL_LOADs with a kind other than 0, 1 or 2 (tracked anyway).
    pub unknown_kernel_kinds: u64,
}

impl std::ops::AddAssign for BookStats {
    /// Sums two books' figures (the daemon reports them over every client process).
    fn add_assign(&mut self, o: BookStats) {
        let BookStats {
            reallocs,
            partial_frees,
            unknown_frees,
            unknown_cb_frees,
            unknown_kernel_unloads,
            invalid,
            unknown_kernel_kinds,
        } = o;
        self.reallocs += reallocs;
        self.partial_frees += partial_frees;
        self.unknown_frees += unknown_frees;
        self.unknown_cb_frees += unknown_cb_frees;
        self.unknown_kernel_unloads += unknown_kernel_unloads;
        self.invalid += invalid;
        self.unknown_kernel_kinds += unknown_kernel_kinds;
    }
}

type Key = (i32, u64);

/// One client process's live buffers, CBs and kernels with exact counters.
#[derive(Debug)]
pub struct Book {
    buffers: HashMap<Key, Live>,
    cbs: HashMap<Key, Live>,
    kernels: HashMap<Key, Live>,
    counters: BTreeMap<i32, [Counter; 7]>,
    stats: BookStats,
    max_live: usize,
}

/// The default bound on one process's live keys (buffers, CBs and kernels together).
pub const DEFAULT_MAX_LIVE: usize = 1 << 22;

impl Default for Book {
    fn default() -> Self {
        Book::new(DEFAULT_MAX_LIVE)
    }
}

impl Book {
    /// An empty book holding at most `max_live` live keys.
    pub fn new(max_live: usize) -> Book {
        Book {
            buffers: HashMap::new(),
            cbs: HashMap::new(),
            kernels: HashMap::new(),
            counters: BTreeMap::new(),
            stats: BookStats::default(),
            max_live,
        }
    }

    /// Applies one message. `Ok(None)` for messages that change nothing live (queries, dumps,
    /// reference counts, unknown frees); `Err` for a message ignored as invalid.
    pub fn apply(&mut self, m: &Message) -> Result<Option<Effect>, Invalid> {
        let Some(kind) = m.kind() else {
            // The framer refuses such streams; a direct caller gets the same answer as invalid.
            self.stats.invalid += 1;
            return Err(Invalid::Reply("message of unknown type"));
        };
        let r = match kind {
            MsgType::Alloc | MsgType::Free => {
                let category = match Category::from_buffer_type(m.buffer_type) {
                    Some(c) => c,
                    None if kind == MsgType::Free => Category::Dram, // FREE uses the stored type
                    None => {
                        self.stats.invalid += 1;
                        return Err(Invalid::BufferType(m.buffer_type));
                    }
                };
                self.keyed(kind == MsgType::Alloc, Space::Buffers, m, category)
            }
            MsgType::CbAlloc | MsgType::CbFree => self.keyed(kind == MsgType::CbAlloc, Space::Cbs, m, Category::Cb),
            MsgType::KernelLoad | MsgType::KernelUnload => {
                let load = kind == MsgType::KernelLoad;
                if load && m.buffer_type > 2 && check_device(m.device_id).is_ok() {
                    self.stats.unknown_kernel_kinds += 1;
                }
                self.keyed(load, Space::Kernels, m, Category::Kernel)
            }
            MsgType::Response | MsgType::DeviceInfoResponse => Err(Invalid::Reply(kind.name())),
            MsgType::Query | MsgType::DeviceInfoQuery | MsgType::DumpRemaining | MsgType::DumpKernels => Ok(None),
        };
        if r.is_err() {
            self.stats.invalid += 1;
        }
        r
    }

    fn keyed(&mut self, alloc: bool, space: Space, m: &Message, category: Category) -> Result<Option<Effect>, Invalid> {
        check_device(m.device_id)?;
        let key = (m.device_id, m.buffer_id);
        let live_total = self.buffers.len() + self.cbs.len() + self.kernels.len();
        let map = match space {
            Space::Buffers => &mut self.buffers,
            Space::Cbs => &mut self.cbs,
            Space::Kernels => &mut self.kernels,
        };
        if alloc {
            if m.size > MAX_SIZE {
                return Err(Invalid::Size(m.size));
            }
            if let Some(live) = map.get_mut(&key) {
                live.refs = live.refs.saturating_add(1);
                self.stats.reallocs += 1;
                return Ok(None);
            }
            if live_total >= self.max_live {
                return Err(Invalid::TooMany(self.max_live));
            }
            map.insert(
                key,
                Live {
                    size: m.size,
                    refs: 1,
                    category,
                    kind: m.buffer_type,
                },
            );
            let c = &mut self.counters.entry(m.device_id).or_default()[category as usize];
            c.live_bytes = c.live_bytes.saturating_add(m.size);
            c.live_count += 1;
            c.allocs += 1;
            c.peak_bytes = c.peak_bytes.max(c.live_bytes);
            return Ok(Some(Effect::Alloc {
                device: m.device_id,
                category,
                id: m.buffer_id,
                size: m.size,
            }));
        }
        let Some(live) = map.get_mut(&key) else {
            match space {
                Space::Buffers => self.stats.unknown_frees += 1,
                Space::Cbs => self.stats.unknown_cb_frees += 1,
                Space::Kernels => self.stats.unknown_kernel_unloads += 1,
            }
            return Ok(None);
        };
        if live.refs > 1 {
            live.refs -= 1;
            self.stats.partial_frees += 1;
            return Ok(None);
        }
        let live = map.remove(&key).expect("looked up above");
        let c = &mut self.counters.entry(m.device_id).or_default()[live.category as usize];
        c.live_bytes = c.live_bytes.saturating_sub(live.size);
        c.live_count = c.live_count.saturating_sub(1);
        c.frees += 1;
        Ok(Some(Effect::Free {
            device: m.device_id,
            category: live.category,
            id: m.buffer_id,
            size: live.size,
        }))
    }

    /// Exact counters per device id (as the client numbers devices), per [`Category`] index.
    pub fn counters(&self) -> &BTreeMap<i32, [Counter; 7]> {
        &self.counters
    }

    /// Statistics.
    pub fn stats(&self) -> BookStats {
        self.stats
    }

    /// Live buffers and CBs: ((device, id), buffer), in no particular order.
    pub fn live_buffers(&self) -> impl Iterator<Item = (&(i32, u64), &Live)> {
        self.buffers.iter().chain(self.cbs.iter())
    }

    /// Loaded kernels: ((device, kernel id), kernel).
    pub fn live_kernels(&self) -> impl Iterator<Item = (&(i32, u64), &Live)> {
        self.kernels.iter()
    }

    /// Live keys of every kind.
    pub fn live(&self) -> usize {
        self.buffers.len() + self.cbs.len() + self.kernels.len()
    }

    /// Approximate bytes this book holds per live key (for the daemon's memory figure).
    pub fn map_bytes(&self) -> u64 {
        let per = (std::mem::size_of::<(Key, Live)>() + 1) as u64;
        [self.buffers.capacity(), self.cbs.capacity(), self.kernels.capacity()]
            .iter()
            .map(|&c| c as u64 * per)
            .sum()
    }
}

impl Book {
    /// Checks that the counters equal what the live keys add up to (for tests and fuzzing):
    /// a message stream of any content must leave this true.
    pub fn check_consistency(&self) -> Result<(), String> {
        let mut sums: BTreeMap<i32, [(u64, u64); 7]> = BTreeMap::new();
        for ((device, _), live) in self.buffers.iter().chain(&self.cbs).chain(&self.kernels) {
            if live.refs == 0 {
                return Err(format!("live key on device {device} with no reference"));
            }
            let s = &mut sums.entry(*device).or_default()[live.category as usize];
            s.0 = s.0.saturating_add(live.size);
            s.1 += 1;
        }
        for (device, counters) in &self.counters {
            for (i, c) in counters.iter().enumerate() {
                let (bytes, count) = sums.get(device).map_or((0, 0), |s| s[i]);
                if c.live_count != count || c.live_bytes != bytes {
                    return Err(format!(
                        "device {device} {}: counters say {} B in {}, live keys hold {bytes} B in {count}",
                        Category::ALL[i].name(),
                        c.live_bytes,
                        c.live_count
                    ));
                }
                if c.allocs - c.frees != c.live_count || c.peak_bytes < c.live_bytes {
                    return Err(format!(
                        "device {device} {}: allocs, frees and peak disagree",
                        Category::ALL[i].name()
                    ));
                }
            }
        }
        if sums.keys().any(|d| !self.counters.contains_key(d)) {
            return Err("a live key on a device without counters".into());
        }
        Ok(())
    }
}

#[derive(Copy, Clone)]
enum Space {
    Buffers,
    Cbs,
    Kernels,
}

fn check_device(d: i32) -> Result<(), Invalid> {
    if (0..MAX_DEVICE_ID).contains(&d) {
        Ok(())
    } else {
        Err(Invalid::DeviceId(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(t: MsgType, device: i32, buffer_type: u8, id: u64, size: u64) -> Message {
        Message {
            msg_type: t as u8,
            device_id: device,
            buffer_type,
            buffer_id: id,
            size,
            ..Message::default()
        }
    }

    fn live(b: &Book, device: i32, c: Category) -> u64 {
        b.counters().get(&device).map_or(0, |c2| c2[c as usize].live_bytes)
    }

    #[test]
    fn cached_buffers_are_reference_counted_with_their_first_size() {
        let mut b = Book::default();
        assert!(b.apply(&msg(MsgType::Alloc, 0, 0, 0x1000, 100)).unwrap().is_some());
        assert_eq!(b.apply(&msg(MsgType::Alloc, 0, 1, 0x1000, 999)).unwrap(), None);
        assert_eq!(live(&b, 0, Category::Dram), 100);
        assert_eq!(b.apply(&msg(MsgType::Free, 0, 0, 0x1000, 5)).unwrap(), None);
        assert_eq!(live(&b, 0, Category::Dram), 100);
        let e = b.apply(&msg(MsgType::Free, 0, 0, 0x1000, 5)).unwrap();
        assert_eq!(
            e,
            Some(Effect::Free {
                device: 0,
                category: Category::Dram,
                id: 0x1000,
                size: 100
            })
        );
        assert_eq!(live(&b, 0, Category::Dram), 0);
        assert_eq!(b.stats().reallocs, 1);
        assert_eq!(b.stats().partial_frees, 1);
    }

    #[test]
    fn unknown_frees_are_counted_and_change_nothing() {
        let mut b = Book::default();
        b.apply(&msg(MsgType::Alloc, 0, 1, 1, 64)).unwrap();
        assert_eq!(b.apply(&msg(MsgType::Free, 0, 1, 2, 64)).unwrap(), None);
        assert_eq!(b.apply(&msg(MsgType::CbFree, 0, 0, 7, 1 << 40)).unwrap(), None);
        assert_eq!(b.apply(&msg(MsgType::KernelUnload, 0, 0, 7, 1 << 40)).unwrap(), None);
        assert_eq!(live(&b, 0, Category::L1), 64);
        assert_eq!(live(&b, 0, Category::Cb), 0);
        let s = b.stats();
        assert_eq!(
            (s.unknown_frees, s.unknown_cb_frees, s.unknown_kernel_unloads),
            (1, 1, 1)
        );
    }

    #[test]
    fn cb_and_kernel_totals_never_underflow_and_repeats_are_counted() {
        let mut b = Book::default();
        b.apply(&msg(MsgType::CbAlloc, 2, 0, 0x100, 4096)).unwrap();
        b.apply(&msg(MsgType::CbAlloc, 2, 0, 0x100, 8192)).unwrap();
        b.apply(&msg(MsgType::KernelLoad, 2, 1, 77, 3000)).unwrap();
        assert_eq!(live(&b, 2, Category::Cb), 4096);
        assert_eq!(live(&b, 2, Category::Kernel), 3000);
        // A CB_FREE with a huge size removes what was stored, not what it says.
        b.apply(&msg(MsgType::CbFree, 2, 0, 0x100, u64::MAX)).unwrap();
        b.apply(&msg(MsgType::CbFree, 2, 0, 0x100, u64::MAX)).unwrap();
        b.apply(&msg(MsgType::CbFree, 2, 0, 0x100, u64::MAX)).unwrap();
        b.apply(&msg(MsgType::KernelUnload, 2, 0, 77, 0)).unwrap();
        assert_eq!(live(&b, 2, Category::Cb), 0);
        assert_eq!(live(&b, 2, Category::Kernel), 0);
        assert_eq!(b.stats().reallocs, 1);
        assert_eq!(b.stats().unknown_cb_frees, 1);
        assert_eq!(b.counters()[&2][Category::Cb as usize].peak_bytes, 4096);
    }

    #[test]
    fn invalid_fields_are_counted_and_ignored() {
        let mut b = Book::default();
        assert_eq!(b.apply(&msg(MsgType::Alloc, -1, 0, 1, 1)), Err(Invalid::DeviceId(-1)));
        assert_eq!(
            b.apply(&msg(MsgType::Alloc, MAX_DEVICE_ID, 0, 1, 1)),
            Err(Invalid::DeviceId(MAX_DEVICE_ID))
        );
        assert_eq!(b.apply(&msg(MsgType::Alloc, 0, 9, 1, 1)), Err(Invalid::BufferType(9)));
        assert_eq!(
            b.apply(&msg(MsgType::Alloc, 0, 0, 1, u64::MAX)),
            Err(Invalid::Size(u64::MAX))
        );
        assert!(matches!(
            b.apply(&msg(MsgType::Response, 0, 0, 1, 1)),
            Err(Invalid::Reply(_))
        ));
        assert_eq!(b.stats().invalid, 5);
        assert!(b.counters().is_empty());
    }

    #[test]
    fn devices_beyond_eight_work() {
        let mut b = Book::default();
        for d in 0..64 {
            b.apply(&msg(MsgType::Alloc, d, 0, 1, d as u64 + 1)).unwrap();
        }
        assert_eq!(live(&b, 63, Category::Dram), 64);
        assert_eq!(b.counters().len(), 64);
    }

    #[test]
    fn system_memory_is_not_l1_small() {
        let mut b = Book::default();
        b.apply(&msg(MsgType::Alloc, 0, 2, 1, 10)).unwrap();
        b.apply(&msg(MsgType::Alloc, 0, 3, 2, 20)).unwrap();
        b.apply(&msg(MsgType::Alloc, 0, 4, 3, 30)).unwrap();
        assert_eq!(live(&b, 0, Category::SystemMemory), 10);
        assert_eq!(live(&b, 0, Category::L1Small), 20);
        assert_eq!(live(&b, 0, Category::Trace), 30);
    }

    #[test]
    fn the_live_bound_holds() {
        let mut b = Book::new(3);
        for id in 0..3 {
            b.apply(&msg(MsgType::Alloc, 0, 0, id, 1)).unwrap();
        }
        assert_eq!(b.apply(&msg(MsgType::Alloc, 0, 0, 99, 1)), Err(Invalid::TooMany(3)));
        // A re-allocation of a live key is still fine.
        assert_eq!(b.apply(&msg(MsgType::Alloc, 0, 0, 1, 1)), Ok(None));
        assert_eq!(b.live(), 3);
    }
}
