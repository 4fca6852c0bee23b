//! `#[repr(C)]` views of the region's parts, for code that maps a region.
//!
//! Every field another process may read while the writer updates it is an atomic, so a mapping
//! reader never races in the Rust memory-model sense. Fields that are written once before a
//! `Release` store of a state word (header identity, device entries) are plain bytes.
//!
//! Offsets are asserted at compile time below; `docs/region-format.md` must match them.

use core::mem::{offset_of, size_of};
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64};

use crate::*;

/// The fixed header at offset 0.
#[repr(C, align(64))]
pub struct RawHeader {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// [`HEADER_SIZE`].
    pub header_size: u32,
    /// Total bytes of the region.
    pub region_size: u64,
    /// A [`RegionState`] code; set to `Live` with `Release` once the header is complete.
    pub state: AtomicU32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Writer's process id.
    pub pid: u32,
    /// Writer's real user id.
    pub uid: u32,
    /// Writer's start time in clock ticks since boot (`/proc/PID/stat` field 22); with `pid` and
    /// `boot_id` it names the process uniquely.
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` as 16 bytes, so a region from an earlier boot is never
    /// taken for a live process.
    pub boot_id: [u8; 16],
    /// Device-table slots.
    pub max_devices: u32,
    /// Category slots per device.
    pub max_categories: u32,
    /// Shards.
    pub max_shards: u32,
    /// Events per shard ring.
    pub ring_events: u32,
    /// [`DEVICE_ENTRY_SIZE`].
    pub device_entry_size: u32,
    /// [`COUNTER_CELL_SIZE`].
    pub counter_cell_size: u32,
    /// [`EVENT_SIZE`].
    pub event_size: u32,
    /// [`SHARD_HEADER_SIZE`].
    pub shard_header_size: u32,
    /// Offset of the device table.
    pub devices_offset: u64,
    /// Offset of the shard headers.
    pub shards_offset: u64,
    /// Offset of the counter cells.
    pub counters_offset: u64,
    /// Offset of the rings.
    pub rings_offset: u64,
    /// Offset of the string table.
    pub strings_offset: u64,
    /// Bytes of string data.
    pub strings_bytes: u64,
    /// Wall clock (`CLOCK_REALTIME`, ns since the epoch) at calibration.
    pub clock_realtime_ns: u64,
    /// `CLOCK_MONOTONIC` ns at calibration.
    pub clock_monotonic_ns: u64,
    /// Event clock ticks at calibration (TSC or monotonic ns, see [`FLAG_CLOCK_TSC`]).
    pub clock_ticks: u64,
    /// Ticks per second as the writer estimated it (0: unknown; readers on the same boot compute
    /// it from their own clock pair).
    pub clock_ticks_per_sec: u64,
    /// Devices registered so far (entries `0..num_devices` are ready).
    pub num_devices: AtomicU32,
    /// Shards ever claimed (a high-water mark: shards `0..shards_used` may hold data; the shared
    /// last shard is used when this reaches `max_shards - 1`).
    pub shards_used: AtomicU32,
    /// Pid of a reader that publishes read positions in the shard headers (0: none). While set,
    /// the writer counts events it overwrites before that reader read them.
    pub reader_pid: AtomicU32,
    /// Resolution of coarse event timestamps in microseconds (0: every event is stamped
    /// precisely, e.g. with the TSC).
    pub clock_resolution_us: u32,
    /// The client library's version, NUL-padded.
    pub lib_version: [u8; 16],
    /// Executable name, NUL-padded.
    pub exe: [u8; EXE_LEN],
    /// Command line, spaces for NULs, NUL-padded.
    pub cmdline: [u8; CMDLINE_LEN],
    /// Reserved, zero.
    pub _reserved: [u8; HEADER_SIZE - 784],
}

/// One category of a device: what it is called, how big it is, where it lives.
#[repr(C)]
pub struct RawCategory {
    /// Name, e.g. `DRAM`, NUL-padded.
    pub name: [u8; CATEGORY_NAME_LEN],
    /// Allocatable bytes across all banks (0: unknown).
    pub capacity: u64,
    /// First allocatable address of one bank.
    pub addr_base: u64,
    /// End (exclusive) of one bank's allocatable range.
    pub addr_end: u64,
    /// Banks the address range repeats across (interleaved buffers take the same range in each);
    /// 0 or 1 for a flat space.
    pub banks: u32,
    /// Allocation alignment in bytes (0: unknown).
    pub alignment: u32,
    /// Reserved flags.
    pub flags: u32,
    /// Padding.
    pub _pad: u32,
}

/// One device-table entry. Written completely, then published by `state` = 1 (`Release`).
#[repr(C)]
pub struct RawDevice {
    /// 0: empty, 1: ready.
    pub state: AtomicU32,
    /// A [`DeviceKind`] code.
    pub kind: u32,
    /// Stable hardware id (e.g. the UMD unique chip id); 0 if unknown.
    pub hw_id: u64,
    /// The runtime's logical device id (per process; depends on `TT_VISIBLE_DEVICES`).
    pub logical_id: i32,
    /// Categories declared (`0..=MAX_CATEGORIES`).
    pub num_categories: u32,
    /// `DEVICE_FLAG_*` bits.
    pub flags: u32,
    /// Padding.
    pub _pad: u32,
    /// Architecture, e.g. `wormhole_b0`.
    pub arch: [u8; ARCH_LEN],
    /// Display name, e.g. `n300-R` or `T1:N3`.
    pub name: [u8; DEVICE_NAME_LEN],
    /// Reserved, zero.
    pub _reserved: [u8; 48],
    /// Category descriptors; `0..num_categories` are meaningful.
    pub categories: [RawCategory; MAX_CATEGORIES],
}

/// Per-shard control words. The writer owns `head`, `lost` and `rejected`; a reader owns
/// `read_pos`.
#[repr(C, align(64))]
pub struct RawShard {
    /// OS thread id of the owning thread; 0 when free; `u32::MAX` for the shared shard.
    pub owner_tid: AtomicU32,
    /// Reserved flags.
    pub flags: AtomicU32,
    /// Events ever written to this shard's ring.
    pub head: AtomicU64,
    /// Events the attached reader has consumed (written by the reader only).
    pub read_pos: AtomicU64,
    /// Events overwritten before the attached reader read them.
    pub lost: AtomicU64,
    /// Calls naming a device or category that was never registered (ignored, counted).
    pub rejected: AtomicU64,
    /// Reserved.
    pub _reserved: [u64; 3],
}

/// Exact counters of one shard × device × category. Readers sum the shards.
#[repr(C, align(64))]
pub struct RawCell {
    /// Bytes allocated minus bytes freed by this shard (may be negative when a thread frees what
    /// another allocated; the sum over shards is the process's live bytes).
    pub live_bytes: AtomicI64,
    /// Allocations minus frees by this shard.
    pub live_count: AtomicI64,
    /// Allocations.
    pub allocs: AtomicU64,
    /// Frees.
    pub frees: AtomicU64,
    /// Bytes allocated.
    pub alloc_bytes: AtomicU64,
    /// Bytes freed.
    pub free_bytes: AtomicU64,
    /// Highest `live_bytes` this shard reached.
    pub peak_bytes: AtomicI64,
    /// Reserved.
    pub _reserved: AtomicU64,
}

/// One ring record, guarded by its own sequence word (a seqlock).
#[repr(C, align(64))]
pub struct RawEvent {
    /// 0 while being written; otherwise the event's index in its shard plus one.
    pub seq: AtomicU64,
    /// Event clock ticks (see the header's clock fields).
    pub ticks: AtomicU64,
    /// Device address (or hardware id for `DeviceRegistered`).
    pub address: AtomicU64,
    /// Bytes (or device index for `DeviceRegistered`).
    pub size: AtomicU64,
    /// `kind | category << 8 | device << 16 | tag << 32`.
    pub packed: AtomicU64,
    /// `thread id | flags << 32`.
    pub thread: AtomicU64,
    /// Reserved.
    pub _reserved: [AtomicU64; 2],
}

/// Packs the event's small fields into [`RawEvent::packed`].
#[inline(always)]
pub const fn pack_event(kind: u8, category: u8, device: u16, tag: u32) -> u64 {
    kind as u64 | (category as u64) << 8 | (device as u64) << 16 | (tag as u64) << 32
}

/// The string table's header; data follows it. An entry is a `u8` length and that many bytes;
/// a tag id is the entry's offset in the data plus one (0 means "no tag").
#[repr(C, align(64))]
pub struct RawStrings {
    /// Bytes of data used; entries below this are complete (`Release` after writing them).
    pub used: AtomicU64,
    /// Entries written.
    pub count: AtomicU32,
    /// Padding.
    pub _pad: u32,
    /// Reserved.
    pub _reserved: [u64; 6],
}

// Compile-time layout assertions: a change here is a new layout version.
const _: () = {
    assert!(size_of::<RawHeader>() == HEADER_SIZE);
    assert!(offset_of!(RawHeader, magic) == 0);
    assert!(offset_of!(RawHeader, layout_version) == 8);
    assert!(offset_of!(RawHeader, header_size) == 12);
    assert!(offset_of!(RawHeader, region_size) == 16);
    assert!(offset_of!(RawHeader, state) == 24);
    assert!(offset_of!(RawHeader, flags) == 28);
    assert!(offset_of!(RawHeader, pid) == 32);
    assert!(offset_of!(RawHeader, uid) == 36);
    assert!(offset_of!(RawHeader, start_time) == 40);
    assert!(offset_of!(RawHeader, boot_id) == 48);
    assert!(offset_of!(RawHeader, max_devices) == 64);
    assert!(offset_of!(RawHeader, max_categories) == 68);
    assert!(offset_of!(RawHeader, max_shards) == 72);
    assert!(offset_of!(RawHeader, ring_events) == 76);
    assert!(offset_of!(RawHeader, device_entry_size) == 80);
    assert!(offset_of!(RawHeader, counter_cell_size) == 84);
    assert!(offset_of!(RawHeader, event_size) == 88);
    assert!(offset_of!(RawHeader, shard_header_size) == 92);
    assert!(offset_of!(RawHeader, devices_offset) == 96);
    assert!(offset_of!(RawHeader, shards_offset) == 104);
    assert!(offset_of!(RawHeader, counters_offset) == 112);
    assert!(offset_of!(RawHeader, rings_offset) == 120);
    assert!(offset_of!(RawHeader, strings_offset) == 128);
    assert!(offset_of!(RawHeader, strings_bytes) == 136);
    assert!(offset_of!(RawHeader, clock_realtime_ns) == 144);
    assert!(offset_of!(RawHeader, clock_monotonic_ns) == 152);
    assert!(offset_of!(RawHeader, clock_ticks) == 160);
    assert!(offset_of!(RawHeader, clock_ticks_per_sec) == 168);
    assert!(offset_of!(RawHeader, num_devices) == 176);
    assert!(offset_of!(RawHeader, shards_used) == 180);
    assert!(offset_of!(RawHeader, reader_pid) == 184);
    assert!(offset_of!(RawHeader, clock_resolution_us) == 188);
    assert!(offset_of!(RawHeader, lib_version) == 192);
    assert!(offset_of!(RawHeader, exe) == 208);
    assert!(offset_of!(RawHeader, cmdline) == 272);
    assert!(offset_of!(RawHeader, _reserved) == 784);

    assert!(size_of::<RawCategory>() == CATEGORY_DESC_SIZE);
    assert!(offset_of!(RawCategory, capacity) == 16);
    assert!(offset_of!(RawCategory, addr_base) == 24);
    assert!(offset_of!(RawCategory, addr_end) == 32);
    assert!(offset_of!(RawCategory, banks) == 40);
    assert!(offset_of!(RawCategory, alignment) == 44);
    assert!(offset_of!(RawCategory, flags) == 48);

    assert!(size_of::<RawDevice>() == DEVICE_ENTRY_SIZE);
    assert!(offset_of!(RawDevice, state) == 0);
    assert!(offset_of!(RawDevice, kind) == 4);
    assert!(offset_of!(RawDevice, hw_id) == 8);
    assert!(offset_of!(RawDevice, logical_id) == 16);
    assert!(offset_of!(RawDevice, num_categories) == 20);
    assert!(offset_of!(RawDevice, flags) == 24);
    assert!(offset_of!(RawDevice, arch) == 32);
    assert!(offset_of!(RawDevice, name) == 48);
    assert!(offset_of!(RawDevice, categories) == 128);

    assert!(size_of::<RawShard>() == SHARD_HEADER_SIZE);
    assert!(offset_of!(RawShard, owner_tid) == 0);
    assert!(offset_of!(RawShard, head) == 8);
    assert!(offset_of!(RawShard, read_pos) == 16);
    assert!(offset_of!(RawShard, lost) == 24);
    assert!(offset_of!(RawShard, rejected) == 32);

    assert!(size_of::<RawCell>() == COUNTER_CELL_SIZE);
    assert!(offset_of!(RawCell, live_bytes) == 0);
    assert!(offset_of!(RawCell, live_count) == 8);
    assert!(offset_of!(RawCell, allocs) == 16);
    assert!(offset_of!(RawCell, frees) == 24);
    assert!(offset_of!(RawCell, alloc_bytes) == 32);
    assert!(offset_of!(RawCell, free_bytes) == 40);
    assert!(offset_of!(RawCell, peak_bytes) == 48);

    assert!(size_of::<RawEvent>() == EVENT_SIZE);
    assert!(offset_of!(RawEvent, seq) == 0);
    assert!(offset_of!(RawEvent, ticks) == 8);
    assert!(offset_of!(RawEvent, address) == 16);
    assert!(offset_of!(RawEvent, size) == 24);
    assert!(offset_of!(RawEvent, packed) == 32);
    assert!(offset_of!(RawEvent, thread) == 40);

    assert!(size_of::<RawStrings>() == STRINGS_HEADER_SIZE);
    assert!(offset_of!(RawStrings, used) == 0);
    assert!(offset_of!(RawStrings, count) == 8);
};
