//! The hot path, on one screen: [`Region::record`] and [`Region::write_event`] over a
//! precomputed [`ShardRef`].
//!
//! **Invariant:** no system call, no lock, no allocation, and no locked instruction except on
//! the shared overflow shard; nothing here can fail or panic. A single-writer shard is updated
//! with plain loads and stores; each event is published with a seqlock (sequence word zeroed,
//! fields written, sequence word released) so a reader in another process never takes a torn
//! record for a whole one.

use std::sync::atomic::{Ordering, fence};

use ttmem_region::raw::pack_event;
use ttmem_region::raw::{RawCell, RawEvent, RawShard};
use ttmem_region::{EventKind, MAX_CATEGORIES};

use super::Region;
use crate::clock;

/// What a hot-path call records.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Alloc,
    Free,
}

impl Region {
    /// Number of categories device `index` declared (0: not registered).
    #[inline(always)]
    pub(crate) fn categories_of(&self, device: u32) -> u32 {
        match self.category_counts.get(device as usize) {
            Some(c) => c.load(Ordering::Relaxed) as u32,
            None => 0,
        }
    }

    #[inline(always)]
    fn ticks(&self) -> u64 {
        if self.tsc { clock::tsc() } else { clock::coarse_ns() }
    }

    /// The hot path: updates the counters of (shard, device, category) and appends an event.
    /// Returns false (and counts a rejection) when the device or category is not registered.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &self,
        s: &ShardRef,
        op: Op,
        device: u16,
        category: u8,
        address: u64,
        size: u64,
        tag: u32,
    ) -> bool {
        // SAFETY: `s` was made by `shard_ref` of this region, which is alive (callers hold it).
        let header = unsafe { &*s.header };
        if (category as u32) >= self.categories_of(device as u32) {
            bump(&header.rejected, 1, s.shared);
            return false;
        }
        // SAFETY: device < max_devices (categories_of returns 0 beyond the table) and category <
        // the device's declared count <= MAX_CATEGORIES, so the cell lies in this shard's cells.
        let cell = unsafe { &*s.cells.add(device as usize * MAX_CATEGORIES + category as usize) };
        let signed = size as i64;
        if s.shared {
            match op {
                Op::Alloc => {
                    let live = cell
                        .live_bytes
                        .fetch_add(signed, Ordering::Relaxed)
                        .wrapping_add(signed);
                    cell.live_count.fetch_add(1, Ordering::Relaxed);
                    cell.allocs.fetch_add(1, Ordering::Relaxed);
                    cell.alloc_bytes.fetch_add(size, Ordering::Relaxed);
                    cell.peak_bytes.fetch_max(live, Ordering::Relaxed);
                }
                Op::Free => {
                    cell.live_bytes.fetch_sub(signed, Ordering::Relaxed);
                    cell.live_count.fetch_sub(1, Ordering::Relaxed);
                    cell.frees.fetch_add(1, Ordering::Relaxed);
                    cell.free_bytes.fetch_add(size, Ordering::Relaxed);
                }
            }
        } else {
            // Single writer: plain loads and stores, no locked instructions.
            match op {
                Op::Alloc => {
                    let live = cell.live_bytes.load(Ordering::Relaxed).wrapping_add(signed);
                    cell.live_bytes.store(live, Ordering::Relaxed);
                    cell.live_count.store(
                        cell.live_count.load(Ordering::Relaxed).wrapping_add(1),
                        Ordering::Relaxed,
                    );
                    bump(&cell.allocs, 1, false);
                    bump(&cell.alloc_bytes, size, false);
                    if live > cell.peak_bytes.load(Ordering::Relaxed) {
                        cell.peak_bytes.store(live, Ordering::Relaxed);
                    }
                }
                Op::Free => {
                    cell.live_bytes.store(
                        cell.live_bytes.load(Ordering::Relaxed).wrapping_sub(signed),
                        Ordering::Relaxed,
                    );
                    cell.live_count.store(
                        cell.live_count.load(Ordering::Relaxed).wrapping_sub(1),
                        Ordering::Relaxed,
                    );
                    bump(&cell.frees, 1, false);
                    bump(&cell.free_bytes, size, false);
                }
            }
        }
        let kind = match op {
            Op::Alloc => EventKind::Alloc.code(),
            Op::Free => EventKind::Free.code(),
        };
        self.write_event(s, kind, category, device, tag, address, size);
        true
    }

    /// Appends one record to a shard's ring, overwriting the oldest (flight-recorder semantics).
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_event(
        &self,
        s: &ShardRef,
        kind: u8,
        category: u8,
        device: u16,
        tag: u32,
        address: u64,
        size: u64,
    ) {
        // SAFETY: `s` was made by `shard_ref` of this live region.
        let header = unsafe { &*s.header };
        let index = if s.shared {
            header.head.fetch_add(1, Ordering::Relaxed)
        } else {
            header.head.load(Ordering::Relaxed)
        };
        // Events an attached reader has not read yet are about to be overwritten: count them.
        // `read_pos` is written by another process: never trust it not to overflow.
        if self.header().reader_pid.load(Ordering::Relaxed) != 0
            && index.saturating_sub(header.read_pos.load(Ordering::Relaxed)) > s.mask
        {
            bump(&header.lost, 1, s.shared);
        }
        // SAFETY: the index is masked into the ring of ring_events records.
        let e = unsafe { &*s.ring.add((index & s.mask) as usize) };
        // Seqlock: mark the record busy, write it, then publish its sequence number.
        e.seq.store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        e.ticks.store(self.ticks(), Ordering::Relaxed);
        e.address.store(address, Ordering::Relaxed);
        e.size.store(size, Ordering::Relaxed);
        e.packed
            .store(pack_event(kind, category, device, tag), Ordering::Relaxed);
        e.thread.store(s.tid as u64, Ordering::Relaxed);
        e.seq.store(index + 1, Ordering::Release);
        if !s.shared {
            header.head.store(index + 1, Ordering::Release);
        }
    }
}

/// Adds to a counter: a plain load and store for a single-writer shard, an atomic add for the
/// shared one.
#[inline(always)]
fn bump(counter: &core::sync::atomic::AtomicU64, by: u64, shared: bool) {
    if shared {
        counter.fetch_add(by, Ordering::Relaxed);
    } else {
        counter.store(counter.load(Ordering::Relaxed).wrapping_add(by), Ordering::Relaxed);
    }
}

/// Pointers to one shard of a region, precomputed by [`Region::shard_ref`]. Valid while the
/// region lives; the tracker guarantees that for every `ShardRef` it hands to `record`.
#[derive(Copy, Clone, Debug)]
pub(crate) struct ShardRef {
    pub(crate) region: *const Region,
    pub(super) cells: *const RawCell,
    pub(super) header: *const RawShard,
    pub(super) ring: *const RawEvent,
    pub(super) mask: u64,
    pub(crate) shared: bool,
    pub(crate) tid: u32,
}

impl ShardRef {
    /// A reference to no region (never equal to a live region's pointer).
    pub(crate) const NONE: ShardRef = ShardRef {
        region: std::ptr::null(),
        cells: std::ptr::null(),
        header: std::ptr::null(),
        ring: std::ptr::null(),
        mask: 0,
        shared: false,
        tid: 0,
    };
}
