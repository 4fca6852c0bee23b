//! The byte layout of a ttmem tracking region.
//!
//! A region is one file per instrumented process (by default under `/dev/shm/ttmem/`). The
//! process (the *writer*) maps it and updates it with plain memory stores; readers (`ttmem ps`,
//! the daemon) read it without ever trusting it. This crate is the only place that knows the
//! layout, so writer and readers cannot disagree. It has no dependencies and does no I/O.
//!
//! Two halves:
//! - [`raw`]: `#[repr(C)]` structs with atomic fields, used by the writer through its mapping
//!   (and by mapping readers). Their offsets are asserted at compile time.
//! - [`decode`]: validation and decoding of untrusted bytes into plain values, used by readers.
//!
//! `docs/region-format.md` documents every byte.

#![deny(missing_docs)]

#[cfg(not(target_endian = "little"))]
compile_error!("the ttmem region format is defined for little-endian hosts only");

pub mod decode;
pub mod identity;
pub mod raw;

/// The first eight bytes of every region.
pub const MAGIC: [u8; 8] = *b"TTMEMRGN";
/// The layout version this crate writes and reads. Readers refuse any other.
pub const LAYOUT_VERSION: u32 = 1;

/// Size of the fixed header at offset 0.
pub const HEADER_SIZE: usize = 4096;
/// Size of one device-table entry.
pub const DEVICE_ENTRY_SIZE: usize = 1024;
/// Size of one category descriptor inside a device entry.
pub const CATEGORY_DESC_SIZE: usize = 56;
/// Size of one shard header.
pub const SHARD_HEADER_SIZE: usize = 64;
/// Size of one counter cell (one shard × device × category).
pub const COUNTER_CELL_SIZE: usize = 64;
/// Size of one event record.
pub const EVENT_SIZE: usize = 64;
/// Size of the string-table header that precedes its data.
pub const STRINGS_HEADER_SIZE: usize = 64;

/// Most categories one device may declare (the descriptor slots in a device entry).
pub const MAX_CATEGORIES: usize = 16;
/// Longest category name in bytes.
pub const CATEGORY_NAME_LEN: usize = 16;
/// Longest architecture string in bytes.
pub const ARCH_LEN: usize = 16;
/// Longest device name in bytes.
pub const DEVICE_NAME_LEN: usize = 32;
/// Longest executable name in bytes.
pub const EXE_LEN: usize = 64;
/// Longest command line in bytes (NUL separators replaced by spaces, truncated).
pub const CMDLINE_LEN: usize = 512;
/// Longest tag in bytes.
pub const MAX_TAG_LEN: usize = 255;

/// Region limits a reader accepts. A header that claims more is rejected before any allocation
/// is sized by it.
pub mod limits {
    /// Most devices per region.
    pub const MAX_DEVICES: u32 = 1024;
    /// Most shards per region.
    pub const MAX_SHARDS: u32 = 1024;
    /// Largest ring, in events per shard.
    pub const MAX_RING_EVENTS: u32 = 1 << 24;
    /// Smallest ring, in events per shard.
    pub const MIN_RING_EVENTS: u32 = 16;
    /// Largest string table, in bytes.
    pub const MAX_STRINGS_BYTES: u64 = 16 << 20;
    /// Largest region file, in bytes.
    pub const MAX_REGION_BYTES: u64 = 1 << 36;
}

/// Default number of devices a region has room for.
pub const DEFAULT_MAX_DEVICES: u32 = 64;
/// Default number of shards (thread slots, the last one shared by overflow threads).
pub const DEFAULT_MAX_SHARDS: u32 = 32;
/// Default ring size in events per shard: 1 MiB of shared memory per thread that reports,
/// enough to hold a burst of some ten thousand allocations (a model's buffers for 32 chips)
/// between two drains of a daemon that follows each ring's pace.
pub const DEFAULT_RING_EVENTS: u32 = 16384;
/// Default string-table size in bytes.
pub const DEFAULT_STRINGS_BYTES: u64 = 64 << 10;

/// Lifecycle of a region as its writer last set it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RegionState {
    /// The header is being written; readers must skip the region for now.
    Creating,
    /// The writer is (or was, if it crashed) running.
    Live,
    /// The writer exited cleanly (it had live allocations left, or it would have removed the file).
    Exited,
}

impl RegionState {
    /// The header word for this state.
    pub const fn code(self) -> u32 {
        match self {
            RegionState::Creating => 0,
            RegionState::Live => 1,
            RegionState::Exited => 2,
        }
    }
    /// Decodes a header word; `None` for a value no writer produces.
    pub const fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(RegionState::Creating),
            1 => Some(RegionState::Live),
            2 => Some(RegionState::Exited),
            _ => None,
        }
    }
}

/// Header flag: timestamps are raw TSC ticks (x86-64 `rdtsc`), calibrated by the header's clock
/// pair; without it they are `CLOCK_MONOTONIC` nanoseconds (coarse to `clock_resolution_us`).
pub const FLAG_CLOCK_TSC: u32 = 1 << 0;
/// Header flag: the region lives in anonymous memory (the directory was unusable); readers never
/// see such a region, the flag exists for in-process snapshots.
pub const FLAG_ANONYMOUS: u32 = 1 << 1;

/// Device-table flag: the chip is remote (reached over Ethernet from a local chip, e.g. the
/// second chip of an n300).
pub const DEVICE_FLAG_REMOTE: u32 = 1 << 0;

/// What kind of device an entry describes. Readers show unknown codes as numbers; adding a kind
/// never changes a reader.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// A real Tenstorrent chip reported by its runtime.
    Tenstorrent,
    /// A simulated Tenstorrent chip (`ttmem sim`).
    SimulatedTenstorrent,
    /// A CUDA device.
    Cuda,
    /// A chip known only from the legacy allocation-server socket (no hardware id; numbered by
    /// the client's device id).
    LegacySocket,
    /// Anything else, by its raw code.
    Other(u32),
}

impl DeviceKind {
    /// The table code.
    pub const fn code(self) -> u32 {
        match self {
            DeviceKind::Tenstorrent => 1,
            DeviceKind::SimulatedTenstorrent => 2,
            DeviceKind::Cuda => 3,
            DeviceKind::LegacySocket => 4,
            DeviceKind::Other(c) => c,
        }
    }
    /// Decodes a table code.
    pub const fn from_code(code: u32) -> Self {
        match code {
            1 => DeviceKind::Tenstorrent,
            2 => DeviceKind::SimulatedTenstorrent,
            3 => DeviceKind::Cuda,
            4 => DeviceKind::LegacySocket,
            c => DeviceKind::Other(c),
        }
    }
    /// A short lowercase name for tables and JSON.
    pub fn name(self) -> String {
        match self {
            DeviceKind::Tenstorrent => "tt".into(),
            DeviceKind::SimulatedTenstorrent => "tt-sim".into(),
            DeviceKind::Cuda => "cuda".into(),
            DeviceKind::LegacySocket => "tt-legacy".into(),
            DeviceKind::Other(c) => format!("kind-{c}"),
        }
    }
}

/// What an event record says happened.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// An allocation: address and size.
    Alloc,
    /// A free: address and size.
    Free,
    /// A device was registered (address = hardware id, size = device index).
    DeviceRegistered,
    /// A free by address of an address the process never reported (nothing changed).
    FreeUnknown,
    /// A user mark (tag only), e.g. a phase boundary.
    Mark,
    /// A code no writer of this version produces.
    Unknown(u8),
}

impl EventKind {
    /// The record code.
    pub const fn code(self) -> u8 {
        match self {
            EventKind::Alloc => 1,
            EventKind::Free => 2,
            EventKind::DeviceRegistered => 3,
            EventKind::FreeUnknown => 4,
            EventKind::Mark => 5,
            EventKind::Unknown(c) => c,
        }
    }
    /// Decodes a record code.
    pub const fn from_code(code: u8) -> Self {
        match code {
            1 => EventKind::Alloc,
            2 => EventKind::Free,
            3 => EventKind::DeviceRegistered,
            4 => EventKind::FreeUnknown,
            5 => EventKind::Mark,
            c => EventKind::Unknown(c),
        }
    }
    /// A short lowercase name.
    pub fn name(self) -> String {
        match self {
            EventKind::Alloc => "alloc".into(),
            EventKind::Free => "free".into(),
            EventKind::DeviceRegistered => "device".into(),
            EventKind::FreeUnknown => "free-unknown".into(),
            EventKind::Mark => "mark".into(),
            EventKind::Unknown(c) => format!("kind-{c}"),
        }
    }
}

/// The geometry of a region: everything needed to compute where each part lives.
///
/// The writer builds one from its configuration with [`Geometry::new`]; a reader gets one from a
/// validated header. All offset helpers are infallible for indices inside the geometry.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Device-table slots.
    pub max_devices: u32,
    /// Category slots per device (always [`MAX_CATEGORIES`] in layout version 1).
    pub max_categories: u32,
    /// Shards; the last one is shared by threads that found no free shard.
    pub max_shards: u32,
    /// Events per shard ring (a power of two).
    pub ring_events: u32,
    /// Bytes of string data.
    pub strings_bytes: u64,
    /// Offset of the device table.
    pub devices_offset: u64,
    /// Offset of the shard headers.
    pub shards_offset: u64,
    /// Offset of the counter cells.
    pub counters_offset: u64,
    /// Offset of the rings.
    pub rings_offset: u64,
    /// Offset of the string table header (its data follows).
    pub strings_offset: u64,
    /// Total size of the region.
    pub region_size: u64,
}

/// Why a geometry was refused.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum GeometryError {
    /// A count is zero or above its limit.
    OutOfRange(&'static str),
    /// The ring size is not a power of two.
    RingNotPowerOfTwo,
}

impl std::fmt::Display for GeometryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GeometryError::OutOfRange(what) => write!(f, "{what} is out of range"),
            GeometryError::RingNotPowerOfTwo => write!(f, "ring size is not a power of two"),
        }
    }
}

impl std::error::Error for GeometryError {}

const fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

impl Geometry {
    /// Lays out a region for the given counts. Sections are page-aligned so that untouched
    /// shards and rings cost no memory on tmpfs.
    pub fn new(max_devices: u32, max_shards: u32, ring_events: u32, strings_bytes: u64) -> Result<Self, GeometryError> {
        if max_devices == 0 || max_devices > limits::MAX_DEVICES {
            return Err(GeometryError::OutOfRange("max_devices"));
        }
        if !(2..=limits::MAX_SHARDS).contains(&max_shards) {
            return Err(GeometryError::OutOfRange("max_shards"));
        }
        if !(limits::MIN_RING_EVENTS..=limits::MAX_RING_EVENTS).contains(&ring_events) {
            return Err(GeometryError::OutOfRange("ring_events"));
        }
        if !ring_events.is_power_of_two() {
            return Err(GeometryError::RingNotPowerOfTwo);
        }
        if !(64..=limits::MAX_STRINGS_BYTES).contains(&strings_bytes) {
            return Err(GeometryError::OutOfRange("strings_bytes"));
        }
        const PAGE: u64 = 4096;
        let devices_offset = HEADER_SIZE as u64;
        let shards_offset = align_up(devices_offset + max_devices as u64 * DEVICE_ENTRY_SIZE as u64, PAGE);
        let counters_offset = align_up(shards_offset + max_shards as u64 * SHARD_HEADER_SIZE as u64, PAGE);
        let cells = max_shards as u64 * max_devices as u64 * MAX_CATEGORIES as u64;
        let rings_offset = align_up(counters_offset + cells * COUNTER_CELL_SIZE as u64, PAGE);
        let strings_offset = align_up(
            rings_offset + max_shards as u64 * ring_events as u64 * EVENT_SIZE as u64,
            PAGE,
        );
        let region_size = align_up(strings_offset + STRINGS_HEADER_SIZE as u64 + strings_bytes, PAGE);
        if region_size > limits::MAX_REGION_BYTES {
            return Err(GeometryError::OutOfRange("region size"));
        }
        Ok(Geometry {
            max_devices,
            max_categories: MAX_CATEGORIES as u32,
            max_shards,
            ring_events,
            strings_bytes,
            devices_offset,
            shards_offset,
            counters_offset,
            rings_offset,
            strings_offset,
            region_size,
        })
    }

    /// Offset of device-table entry `device`.
    pub fn device_offset(&self, device: u32) -> u64 {
        self.devices_offset + device as u64 * DEVICE_ENTRY_SIZE as u64
    }

    /// Offset of shard header `shard`.
    pub fn shard_offset(&self, shard: u32) -> u64 {
        self.shards_offset + shard as u64 * SHARD_HEADER_SIZE as u64
    }

    /// Offset of the first counter cell of `shard` (cells are ordered device-major, then
    /// category, so one device's cells of one shard are contiguous).
    pub fn shard_counters_offset(&self, shard: u32) -> u64 {
        self.counters_offset + shard as u64 * self.max_devices as u64 * MAX_CATEGORIES as u64 * COUNTER_CELL_SIZE as u64
    }

    /// Offset of counter cell (shard, device, category).
    pub fn cell_offset(&self, shard: u32, device: u32, category: u32) -> u64 {
        self.shard_counters_offset(shard)
            + (device as u64 * MAX_CATEGORIES as u64 + category as u64) * COUNTER_CELL_SIZE as u64
    }

    /// Offset of the first record of `shard`'s ring.
    pub fn ring_offset(&self, shard: u32) -> u64 {
        self.rings_offset + shard as u64 * self.ring_events as u64 * EVENT_SIZE as u64
    }

    /// Offset of the record that event number `seq_index` (0-based) of `shard` occupies.
    pub fn event_offset(&self, shard: u32, seq_index: u64) -> u64 {
        let slot = seq_index & (self.ring_events as u64 - 1);
        self.ring_offset(shard) + slot * EVENT_SIZE as u64
    }

    /// Offset of the first byte of string data.
    pub fn strings_data_offset(&self) -> u64 {
        self.strings_offset + STRINGS_HEADER_SIZE as u64
    }
}

/// Where regions live unless configured otherwise: `$TTMEM_DIR`, else `/dev/shm/ttmem` where
/// `/dev/shm` exists, else `ttmem` in the temporary directory. Writer and readers share this so
/// that an unconfigured process and an unconfigured `ttmem ps` meet.
pub fn default_dir() -> std::path::PathBuf {
    if let Some(dir) = std::env::var_os("TTMEM_DIR").filter(|d| !d.is_empty()) {
        return dir.into();
    }
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        shm.join("ttmem")
    } else {
        std::env::temp_dir().join("ttmem")
    }
}

/// The file name of a region: `<uid>-<pid>-<start time>.ttmem`.
pub fn region_file_name(uid: u32, pid: u32, start_time: u64) -> String {
    format!("{uid}-{pid}-{start_time}.{REGION_EXTENSION}")
}

/// The extension every region file carries; readers ignore other files.
pub const REGION_EXTENSION: &str = "ttmem";

/// Copies `s` into a fixed, NUL-padded field, truncating on a UTF-8 character boundary.
pub fn put_str(field: &mut [u8], s: &str) {
    field.fill(0);
    let mut n = s.len().min(field.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Reads a fixed, NUL-padded field as text, replacing invalid UTF-8 and control characters.
pub fn get_str(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_geometry_is_page_aligned_and_ordered() {
        let g = Geometry::new(
            DEFAULT_MAX_DEVICES,
            DEFAULT_MAX_SHARDS,
            DEFAULT_RING_EVENTS,
            DEFAULT_STRINGS_BYTES,
        )
        .unwrap();
        for off in [
            g.devices_offset,
            g.shards_offset,
            g.counters_offset,
            g.rings_offset,
            g.strings_offset,
        ] {
            assert_eq!(off % 4096, 0, "section at {off} is not page aligned");
        }
        assert!(g.devices_offset < g.shards_offset);
        assert!(g.shards_offset < g.counters_offset);
        assert!(g.counters_offset < g.rings_offset);
        assert!(g.rings_offset < g.strings_offset);
        assert!(g.strings_data_offset() + g.strings_bytes <= g.region_size);
        // The last cell and the last event end inside their sections.
        let last_cell = g.cell_offset(g.max_shards - 1, g.max_devices - 1, MAX_CATEGORIES as u32 - 1);
        assert!(last_cell + COUNTER_CELL_SIZE as u64 <= g.rings_offset);
        let last_event = g.event_offset(g.max_shards - 1, u64::MAX);
        assert!(last_event + EVENT_SIZE as u64 <= g.strings_offset);
    }

    #[test]
    fn default_size_matches_the_documentation() {
        let g = Geometry::new(
            DEFAULT_MAX_DEVICES,
            DEFAULT_MAX_SHARDS,
            DEFAULT_RING_EVENTS,
            DEFAULT_STRINGS_BYTES,
        )
        .unwrap();
        assert_eq!(g.region_size, 35_794_944, "docs/region-format.md states this size");
        let doc = include_str!("../../../docs/region-format.md");
        assert!(doc.contains("35,794,944 bytes"));
    }

    #[test]
    fn geometry_rejects_bad_counts() {
        assert_eq!(
            Geometry::new(0, 4, 64, 4096),
            Err(GeometryError::OutOfRange("max_devices"))
        );
        assert_eq!(
            Geometry::new(4, 1, 64, 4096),
            Err(GeometryError::OutOfRange("max_shards"))
        );
        assert_eq!(Geometry::new(4, 4, 100, 4096), Err(GeometryError::RingNotPowerOfTwo));
        assert_eq!(
            Geometry::new(4, 4, 8, 4096),
            Err(GeometryError::OutOfRange("ring_events"))
        );
        assert!(Geometry::new(4, 4, 64, 1 << 30).is_err());
    }

    #[test]
    fn strings_round_trip_and_truncate_on_char_boundary() {
        let mut f = [0u8; 5];
        put_str(&mut f, "abcdéf");
        assert_eq!(get_str(&f), "abcd");
        put_str(&mut f, "ab");
        assert_eq!(&f, b"ab\0\0\0");
        assert_eq!(get_str(b"a\x01b\xff"), "a?b\u{fffd}");
    }

    #[test]
    fn codes_round_trip() {
        for k in [
            EventKind::Alloc,
            EventKind::Free,
            EventKind::DeviceRegistered,
            EventKind::FreeUnknown,
            EventKind::Mark,
        ] {
            assert_eq!(EventKind::from_code(k.code()), k);
        }
        for s in [RegionState::Creating, RegionState::Live, RegionState::Exited] {
            assert_eq!(RegionState::from_code(s.code()), Some(s));
        }
        assert_eq!(RegionState::from_code(7), None);
        assert_eq!(DeviceKind::from_code(2), DeviceKind::SimulatedTenstorrent);
        assert_eq!(DeviceKind::from_code(99).name(), "kind-99");
    }
}
