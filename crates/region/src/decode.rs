//! Validation and decoding of region bytes a reader copied out of a file.
//!
//! Nothing here trusts its input: every count is checked against [`crate::limits`] and against
//! the geometry the header implies before anything is sized by it, and no function panics on
//! any input (property-tested in `tests/decode_props.rs`).

use core::mem::offset_of;

use crate::raw::*;
use crate::*;

/// Why a region's bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the part needs.
    Truncated {
        /// Bytes the part needs.
        need: u64,
        /// Bytes there are.
        have: u64,
    },
    /// The first eight bytes are not [`MAGIC`]: not a ttmem region.
    BadMagic,
    /// A layout version this reader does not know.
    UnsupportedVersion(u32),
    /// A size or count field disagrees with the layout.
    Inconsistent(&'static str),
    /// The counts describe an impossible geometry.
    Geometry(GeometryError),
    /// The state word holds a value no writer produces.
    BadState(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { need, have } => {
                write!(f, "truncated: needs {need} bytes, has {have}")
            }
            DecodeError::BadMagic => write!(f, "not a ttmem region (wrong magic)"),
            DecodeError::UnsupportedVersion(v) => write!(
                f,
                "layout version {v} is not supported by this ttmem (it reads version {LAYOUT_VERSION}); upgrade ttmem"
            ),
            DecodeError::Inconsistent(what) => write!(f, "inconsistent header: {what}"),
            DecodeError::Geometry(e) => write!(f, "impossible geometry: {e}"),
            DecodeError::BadState(s) => write!(f, "unknown state word {s}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn need(bytes: &[u8], n: usize) -> Result<(), DecodeError> {
    if bytes.len() < n {
        Err(DecodeError::Truncated {
            need: n as u64,
            have: bytes.len() as u64,
        })
    } else {
        Ok(())
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4-byte slice"))
}

#[inline]
fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8-byte slice"))
}

fn i64_at(b: &[u8], off: usize) -> i64 {
    u64_at(b, off) as i64
}

/// Everything a reader needs from a validated header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Where each part lives.
    pub geometry: Geometry,
    /// The writer's lifecycle state.
    pub state: RegionState,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Writer pid.
    pub pid: u32,
    /// Writer uid.
    pub uid: u32,
    /// Writer start time, clock ticks since boot.
    pub start_time: u64,
    /// Boot id of the boot the writer ran in.
    pub boot_id: [u8; 16],
    /// Clock calibration: wall clock ns.
    pub clock_realtime_ns: u64,
    /// Clock calibration: monotonic ns.
    pub clock_monotonic_ns: u64,
    /// Clock calibration: event ticks.
    pub clock_ticks: u64,
    /// Clock calibration: the writer's ticks-per-second estimate (0: unknown).
    pub clock_ticks_per_sec: u64,
    /// Resolution of event timestamps in µs (0: precise).
    pub clock_resolution_us: u32,
    /// Devices published (already capped at `max_devices`).
    pub num_devices: u32,
    /// Shards that may hold data (already capped at `max_shards`).
    pub shards_used: u32,
    /// Pid of the attached reader (0: none).
    pub reader_pid: u32,
    /// Client library version.
    pub lib_version: String,
    /// Executable name.
    pub exe: String,
    /// Command line.
    pub cmdline: String,
}

/// Decodes and validates a header. `file_len` is the file's size as the reader saw it; a header
/// claiming a larger region is refused as truncated.
pub fn decode_header(bytes: &[u8], file_len: u64) -> Result<Header, DecodeError> {
    need(bytes, 8)?;
    if bytes[..8] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    need(bytes, HEADER_SIZE)?;
    let version = u32_at(bytes, offset_of!(RawHeader, layout_version));
    if version != LAYOUT_VERSION {
        return Err(DecodeError::UnsupportedVersion(version));
    }
    let sizes = [
        (offset_of!(RawHeader, header_size), HEADER_SIZE, "header_size"),
        (
            offset_of!(RawHeader, device_entry_size),
            DEVICE_ENTRY_SIZE,
            "device_entry_size",
        ),
        (
            offset_of!(RawHeader, counter_cell_size),
            COUNTER_CELL_SIZE,
            "counter_cell_size",
        ),
        (offset_of!(RawHeader, event_size), EVENT_SIZE, "event_size"),
        (
            offset_of!(RawHeader, shard_header_size),
            SHARD_HEADER_SIZE,
            "shard_header_size",
        ),
        (offset_of!(RawHeader, max_categories), MAX_CATEGORIES, "max_categories"),
    ];
    for (off, want, what) in sizes {
        if u32_at(bytes, off) as usize != want {
            return Err(DecodeError::Inconsistent(what));
        }
    }
    let geometry = Geometry::new(
        u32_at(bytes, offset_of!(RawHeader, max_devices)),
        u32_at(bytes, offset_of!(RawHeader, max_shards)),
        u32_at(bytes, offset_of!(RawHeader, ring_events)),
        u64_at(bytes, offset_of!(RawHeader, strings_bytes)),
    )
    .map_err(DecodeError::Geometry)?;
    let stored = [
        (offset_of!(RawHeader, region_size), geometry.region_size, "region_size"),
        (
            offset_of!(RawHeader, devices_offset),
            geometry.devices_offset,
            "devices_offset",
        ),
        (
            offset_of!(RawHeader, shards_offset),
            geometry.shards_offset,
            "shards_offset",
        ),
        (
            offset_of!(RawHeader, counters_offset),
            geometry.counters_offset,
            "counters_offset",
        ),
        (
            offset_of!(RawHeader, rings_offset),
            geometry.rings_offset,
            "rings_offset",
        ),
        (
            offset_of!(RawHeader, strings_offset),
            geometry.strings_offset,
            "strings_offset",
        ),
    ];
    for (off, want, what) in stored {
        if u64_at(bytes, off) != want {
            return Err(DecodeError::Inconsistent(what));
        }
    }
    if geometry.region_size > file_len {
        return Err(DecodeError::Truncated {
            need: geometry.region_size,
            have: file_len,
        });
    }
    let state_word = u32_at(bytes, offset_of!(RawHeader, state));
    let state = RegionState::from_code(state_word).ok_or(DecodeError::BadState(state_word))?;
    let mut boot_id = [0u8; 16];
    boot_id.copy_from_slice(&bytes[offset_of!(RawHeader, boot_id)..][..16]);
    let field = |off: usize, len: usize| get_str(&bytes[off..off + len]);
    Ok(Header {
        state,
        flags: u32_at(bytes, offset_of!(RawHeader, flags)),
        pid: u32_at(bytes, offset_of!(RawHeader, pid)),
        uid: u32_at(bytes, offset_of!(RawHeader, uid)),
        start_time: u64_at(bytes, offset_of!(RawHeader, start_time)),
        boot_id,
        clock_realtime_ns: u64_at(bytes, offset_of!(RawHeader, clock_realtime_ns)),
        clock_monotonic_ns: u64_at(bytes, offset_of!(RawHeader, clock_monotonic_ns)),
        clock_ticks: u64_at(bytes, offset_of!(RawHeader, clock_ticks)),
        clock_ticks_per_sec: u64_at(bytes, offset_of!(RawHeader, clock_ticks_per_sec)),
        clock_resolution_us: u32_at(bytes, offset_of!(RawHeader, clock_resolution_us)),
        num_devices: u32_at(bytes, offset_of!(RawHeader, num_devices)).min(geometry.max_devices),
        shards_used: u32_at(bytes, offset_of!(RawHeader, shards_used)).min(geometry.max_shards),
        reader_pid: u32_at(bytes, offset_of!(RawHeader, reader_pid)),
        lib_version: field(offset_of!(RawHeader, lib_version), 16),
        exe: field(offset_of!(RawHeader, exe), EXE_LEN),
        cmdline: field(offset_of!(RawHeader, cmdline), CMDLINE_LEN),
        geometry,
    })
}

/// One category of a device as declared by the writer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Category {
    /// Name, e.g. `DRAM`.
    pub name: String,
    /// Allocatable bytes across all banks (0: unknown).
    pub capacity: u64,
    /// First allocatable address of one bank.
    pub addr_base: u64,
    /// End of one bank's range (exclusive).
    pub addr_end: u64,
    /// Banks the range repeats across.
    pub banks: u32,
    /// Alignment in bytes (0: unknown).
    pub alignment: u32,
}

/// A decoded device-table entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    /// Device kind.
    pub kind: DeviceKind,
    /// Stable hardware id (0: unknown).
    pub hw_id: u64,
    /// The writer's logical device id.
    pub logical_id: i32,
    /// `DEVICE_FLAG_*` bits.
    pub flags: u32,
    /// Architecture.
    pub arch: String,
    /// Display name.
    pub name: String,
    /// Declared categories, in index order.
    pub categories: Vec<Category>,
}

/// Decodes one device entry; `Ok(None)` when the slot is not (yet) published.
pub fn decode_device(bytes: &[u8]) -> Result<Option<Device>, DecodeError> {
    need(bytes, DEVICE_ENTRY_SIZE)?;
    match u32_at(bytes, offset_of!(RawDevice, state)) {
        0 => return Ok(None),
        1 => {}
        other => return Err(DecodeError::BadState(other)),
    }
    let n = u32_at(bytes, offset_of!(RawDevice, num_categories));
    if n as usize > MAX_CATEGORIES {
        return Err(DecodeError::Inconsistent("device num_categories"));
    }
    let mut categories = Vec::with_capacity(n as usize);
    for i in 0..n as usize {
        let c = &bytes[offset_of!(RawDevice, categories) + i * CATEGORY_DESC_SIZE..][..CATEGORY_DESC_SIZE];
        categories.push(Category {
            name: get_str(&c[..CATEGORY_NAME_LEN]),
            capacity: u64_at(c, offset_of!(RawCategory, capacity)),
            addr_base: u64_at(c, offset_of!(RawCategory, addr_base)),
            addr_end: u64_at(c, offset_of!(RawCategory, addr_end)),
            banks: u32_at(c, offset_of!(RawCategory, banks)),
            alignment: u32_at(c, offset_of!(RawCategory, alignment)),
        });
    }
    Ok(Some(Device {
        kind: DeviceKind::from_code(u32_at(bytes, offset_of!(RawDevice, kind))),
        hw_id: u64_at(bytes, offset_of!(RawDevice, hw_id)),
        logical_id: u32_at(bytes, offset_of!(RawDevice, logical_id)) as i32,
        flags: u32_at(bytes, offset_of!(RawDevice, flags)),
        arch: get_str(&bytes[offset_of!(RawDevice, arch)..][..ARCH_LEN]),
        name: get_str(&bytes[offset_of!(RawDevice, name)..][..DEVICE_NAME_LEN]),
        categories,
    }))
}

/// A shard's control words.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Shard {
    /// Owning thread id (0 free, `u32::MAX` shared).
    pub owner_tid: u32,
    /// Events ever written.
    pub head: u64,
    /// Events the attached reader consumed.
    pub read_pos: u64,
    /// Events overwritten before the attached reader read them.
    pub lost: u64,
    /// Calls naming an unregistered device or category.
    pub rejected: u64,
}

/// Decodes a shard header.
pub fn decode_shard(bytes: &[u8]) -> Result<Shard, DecodeError> {
    need(bytes, SHARD_HEADER_SIZE)?;
    Ok(Shard {
        owner_tid: u32_at(bytes, offset_of!(RawShard, owner_tid)),
        head: u64_at(bytes, offset_of!(RawShard, head)),
        read_pos: u64_at(bytes, offset_of!(RawShard, read_pos)),
        lost: u64_at(bytes, offset_of!(RawShard, lost)),
        rejected: u64_at(bytes, offset_of!(RawShard, rejected)),
    })
}

/// Counter values; summing cells of all shards gives a process's exact totals.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Live bytes.
    pub live_bytes: i64,
    /// Live allocations.
    pub live_count: i64,
    /// Allocations.
    pub allocs: u64,
    /// Frees.
    pub frees: u64,
    /// Bytes allocated.
    pub alloc_bytes: u64,
    /// Bytes freed.
    pub free_bytes: u64,
    /// Peak live bytes (see [`Counters::add_shard`] for how shards combine).
    pub peak_bytes: i64,
}

impl Counters {
    /// Adds one shard's cell. Every field but the peak is exact. The peak of the sum is bounded
    /// by the sum of the shards' peaks; it is exact when one shard did all the work, which is
    /// the common case (one thread owns a device's allocator), and never below the live bytes.
    pub fn add_shard(&mut self, cell: &Counters) {
        self.live_bytes = self.live_bytes.wrapping_add(cell.live_bytes);
        self.live_count = self.live_count.wrapping_add(cell.live_count);
        self.allocs = self.allocs.wrapping_add(cell.allocs);
        self.frees = self.frees.wrapping_add(cell.frees);
        self.alloc_bytes = self.alloc_bytes.wrapping_add(cell.alloc_bytes);
        self.free_bytes = self.free_bytes.wrapping_add(cell.free_bytes);
        self.peak_bytes = self.peak_bytes.wrapping_add(cell.peak_bytes.max(0));
        self.peak_bytes = self.peak_bytes.max(self.live_bytes);
    }

    /// Whether any allocation was ever counted.
    pub fn is_touched(&self) -> bool {
        self.allocs != 0 || self.frees != 0
    }
}

/// Decodes a counter cell.
pub fn decode_cell(bytes: &[u8]) -> Result<Counters, DecodeError> {
    need(bytes, COUNTER_CELL_SIZE)?;
    Ok(Counters {
        live_bytes: i64_at(bytes, offset_of!(RawCell, live_bytes)),
        live_count: i64_at(bytes, offset_of!(RawCell, live_count)),
        allocs: u64_at(bytes, offset_of!(RawCell, allocs)),
        frees: u64_at(bytes, offset_of!(RawCell, frees)),
        alloc_bytes: u64_at(bytes, offset_of!(RawCell, alloc_bytes)),
        free_bytes: u64_at(bytes, offset_of!(RawCell, free_bytes)),
        peak_bytes: i64_at(bytes, offset_of!(RawCell, peak_bytes)),
    })
}

/// A decoded ring record.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Index of the event in its shard (0-based).
    pub index: u64,
    /// Clock ticks.
    pub ticks: u64,
    /// What happened.
    pub kind: EventKind,
    /// Device index in the writer's table.
    pub device: u16,
    /// Category index in the device's declaration.
    pub category: u8,
    /// Tag id (0: none).
    pub tag: u32,
    /// Address (or hardware id).
    pub address: u64,
    /// Bytes (or device index).
    pub size: u64,
    /// Writer's thread id.
    pub thread: u32,
}

/// Decodes a record copied from the ring; `None` if it is not event `index` (being written,
/// overwritten by a later lap, or never written). Copies taken with a plain read can still be
/// torn: a mapping reader must use the seqlock protocol in `docs/region-format.md`.
#[inline]
pub fn decode_event(bytes: &[u8], index: u64) -> Option<Event> {
    if bytes.len() < EVENT_SIZE {
        return None;
    }
    let seq = event_seq(bytes);
    if seq == 0 || seq != index.wrapping_add(1) {
        return None;
    }
    let packed = u64_at(bytes, offset_of!(RawEvent, packed));
    Some(Event {
        index,
        ticks: u64_at(bytes, offset_of!(RawEvent, ticks)),
        kind: EventKind::from_code(packed as u8),
        category: (packed >> 8) as u8,
        device: (packed >> 16) as u16,
        tag: (packed >> 32) as u32,
        address: u64_at(bytes, offset_of!(RawEvent, address)),
        size: u64_at(bytes, offset_of!(RawEvent, size)),
        thread: u64_at(bytes, offset_of!(RawEvent, thread)) as u32,
    })
}

/// The sequence word of a record copied from the ring (0: never written, or being written).
#[inline]
pub fn event_seq(bytes: &[u8]) -> u64 {
    if bytes.len() < 8 {
        0
    } else {
        u64_at(bytes, offset_of!(RawEvent, seq))
    }
}

/// The entries of a string table's data from byte `base` on (`data` starts there): (id, text)
/// pairs and the bytes they take. Stops at the first entry that is empty or runs off `data`,
/// so a reader that follows a growing table reads each new part once.
pub fn string_entries(data: &[u8], base: u64) -> (Vec<(u32, String)>, usize) {
    let mut entries = Vec::new();
    let mut off = 0usize;
    while off < data.len() {
        let len = data[off] as usize;
        let end = off + 1 + len;
        if len == 0 || end > data.len() {
            break;
        }
        let id = (base + off as u64 + 1).min(u32::MAX as u64) as u32;
        entries.push((id, get_str(&data[off + 1..end])));
        off = end;
    }
    (entries, off)
}

/// Interned tags read from a region's string table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Strings {
    entries: Vec<(u32, String)>,
}

impl Strings {
    /// Decodes the table from its header and data bytes. Entries past the published `used`
    /// length or running off the data are ignored.
    pub fn decode(header: &[u8], data: &[u8]) -> Self {
        let mut entries = Vec::new();
        if header.len() < STRINGS_HEADER_SIZE {
            return Strings { entries };
        }
        let used = u64_at(header, offset_of!(RawStrings, used)).min(data.len() as u64) as usize;
        entries = string_entries(&data[..used], 0).0;
        Strings { entries }
    }

    /// The tag with this id, if present.
    pub fn get(&self, id: u32) -> Option<&str> {
        self.entries
            .binary_search_by_key(&id, |(k, _)| *k)
            .ok()
            .map(|i| self.entries[i].1.as_str())
    }

    /// Number of tags.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid_header() -> Vec<u8> {
        let g = Geometry::new(4, 4, 64, 4096).unwrap();
        let mut b = vec![0u8; HEADER_SIZE];
        b[..8].copy_from_slice(&MAGIC);
        let put32 = |b: &mut Vec<u8>, off: usize, v: u32| b[off..off + 4].copy_from_slice(&v.to_le_bytes());
        let put64 = |b: &mut Vec<u8>, off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        put32(&mut b, 8, LAYOUT_VERSION);
        put32(&mut b, 12, HEADER_SIZE as u32);
        put64(&mut b, 16, g.region_size);
        put32(&mut b, 24, 1);
        put32(&mut b, 32, 42);
        put32(&mut b, 64, 4);
        put32(&mut b, 68, MAX_CATEGORIES as u32);
        put32(&mut b, 72, 4);
        put32(&mut b, 76, 64);
        put32(&mut b, 80, DEVICE_ENTRY_SIZE as u32);
        put32(&mut b, 84, COUNTER_CELL_SIZE as u32);
        put32(&mut b, 88, EVENT_SIZE as u32);
        put32(&mut b, 92, SHARD_HEADER_SIZE as u32);
        put64(&mut b, 96, g.devices_offset);
        put64(&mut b, 104, g.shards_offset);
        put64(&mut b, 112, g.counters_offset);
        put64(&mut b, 120, g.rings_offset);
        put64(&mut b, 128, g.strings_offset);
        put64(&mut b, 136, 4096);
        put32(&mut b, 176, 999); // num_devices beyond max: must be capped
        b
    }

    #[test]
    fn valid_header_decodes_and_caps_counts() {
        let b = valid_header();
        let h = decode_header(&b, 1 << 30).unwrap();
        assert_eq!(h.pid, 42);
        assert_eq!(h.state, RegionState::Live);
        assert_eq!(h.num_devices, 4);
    }

    #[test]
    fn header_errors_are_specific() {
        let b = valid_header();
        assert_eq!(
            decode_header(&b[..4], 1 << 30),
            Err(DecodeError::Truncated { need: 8, have: 4 })
        );
        assert!(matches!(
            decode_header(&b[..100], 1 << 30),
            Err(DecodeError::Truncated { .. })
        ));
        let mut m = b.clone();
        m[0] = b'X';
        assert_eq!(decode_header(&m, 1 << 30), Err(DecodeError::BadMagic));
        let mut v = b.clone();
        v[8] = 2;
        assert_eq!(decode_header(&v, 1 << 30), Err(DecodeError::UnsupportedVersion(2)));
        assert!(matches!(decode_header(&b, 4096), Err(DecodeError::Truncated { .. })));
        let mut s = b.clone();
        s[24] = 9;
        assert_eq!(decode_header(&s, 1 << 30), Err(DecodeError::BadState(9)));
        let mut big = b.clone();
        big[64..68].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode_header(&big, u64::MAX), Err(DecodeError::Geometry(_))));
        let mut off = b;
        off[120] ^= 1;
        assert_eq!(
            decode_header(&off, 1 << 30),
            Err(DecodeError::Inconsistent("rings_offset"))
        );
    }

    #[test]
    fn strings_stop_at_bad_entries() {
        let mut header = vec![0u8; STRINGS_HEADER_SIZE];
        let data = b"\x03abc\x02xy\x09short".to_vec();
        header[..8].copy_from_slice(&(data.len() as u64).to_le_bytes());
        let s = Strings::decode(&header, &data);
        assert_eq!(s.len(), 2);
        assert_eq!(s.get(1), Some("abc"));
        assert_eq!(s.get(5), Some("xy"));
        assert_eq!(s.get(2), None);
    }

    #[test]
    fn events_need_matching_sequence() {
        let mut b = vec![0u8; EVENT_SIZE];
        b[..8].copy_from_slice(&8u64.to_le_bytes());
        b[32..40].copy_from_slice(&pack_event(1, 2, 3, 4).to_le_bytes());
        let e = decode_event(&b, 7).unwrap();
        assert_eq!((e.kind, e.category, e.device, e.tag), (EventKind::Alloc, 2, 3, 4));
        assert_eq!(decode_event(&b, 6), None);
        assert_eq!(decode_event(&b[..10], 7), None);
    }
}
