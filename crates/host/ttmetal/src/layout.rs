//! The counter-file layouts, decoded from bytes by their version word.
//!
//! TT-Metal's `memory_stats_shm` struct, little-endian, one file per chip. There is no magic:
//! the first word is the version, and a version not listed in [`LAYOUTS`] is refused. Offsets
//! up to the end of the process slots are the same in v2, v3 and v4; v1 also counted kernels.
//! `init_state` (v4) is not trusted without the version: TT-Metal 0.81 rewrites a v4 file as v3
//! and leaves the old word in place.

use std::fmt;

/// Slots in the per-chip table.
pub const CHIP_SLOTS: usize = 16;
/// Slots in the per-process table.
pub const PROCESS_SLOTS: usize = 64;
/// Bytes of a slot's process name.
pub const NAME_BYTES: usize = 64;
/// `init_state` of a v4 file that is ready ("REDY").
pub const INIT_READY: u32 = 0x5245_4459;

/// Where one layout version keeps its fields.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The version word.
    pub version: u32,
    /// Categories counted, in order (`KERNEL` only in v1).
    pub categories: &'static [&'static str],
    /// Offset of the totals (one u64 per category).
    pub totals: usize,
    /// Offset and size of the chip table's entries.
    pub chips: (usize, usize),
    /// Chip id marking an unused chip slot.
    pub unused_chip: u32,
    /// Offset and size of the process table's entries.
    pub processes: (usize, usize),
    /// Offset of `init_state`, in layouts that have it.
    pub init_state: Option<usize>,
}

impl Layout {
    /// Bytes a file must have for every field of this layout.
    pub const fn size(&self) -> usize {
        let end = self.processes.0 + PROCESS_SLOTS * self.processes.1;
        match self.init_state {
            Some(at) => at + 4,
            None => end,
        }
    }
}

const V1_CATEGORIES: &[&str] = &["DRAM", "L1", "L1_SMALL", "TRACE", "CB", "KERNEL"];
const V2_CATEGORIES: &[&str] = &["DRAM", "L1", "L1_SMALL", "TRACE", "CB"];

/// Every layout ttmem understands (from TT-Metal's own comments, and v3 as 0.81.1 writes it).
pub const LAYOUTS: [Layout; 4] = [
    Layout {
        version: 1,
        categories: V1_CATEGORIES,
        totals: 48,
        chips: (96, 56),
        unused_chip: 0,
        processes: (992, 128),
        init_state: None,
    },
    V2,
    // v3 made some fields atomic: the same offsets.
    Layout { version: 3, ..V2 },
    // v4 appended init_state (and changed semantics: slots claimed at attach, dead ones reaped).
    Layout {
        version: 4,
        init_state: Some(8536),
        ..V2
    },
];

/// v2: the chip unique id in `asic_id`, 0xFFFFFFFF for an unused chip slot, no kernel counter.
const V2: Layout = Layout {
    version: 2,
    categories: V2_CATEGORIES,
    totals: 48,
    chips: (88, 48),
    unused_chip: u32::MAX,
    processes: (856, 120),
    init_state: None,
};

/// The layout of a version word.
pub fn layout(version: u32) -> Option<&'static Layout> {
    LAYOUTS.iter().find(|l| l.version == version)
}

/// Bytes per category, in the layout's category order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bytes(pub Vec<(&'static str, u64)>);

impl Bytes {
    /// The sum over categories (saturating: the values are untrusted).
    pub fn total(&self) -> u64 {
        self.0.iter().fold(0u64, |a, (_, b)| a.saturating_add(*b))
    }

    /// Bytes of one category (0 when the layout lacks it).
    pub fn get(&self, category: &str) -> u64 {
        self.0.iter().find(|(c, _)| *c == category).map_or(0, |(_, b)| *b)
    }
}

/// One used entry of the chip table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChipStat {
    /// The process's logical chip id.
    pub chip_id: u32,
    /// A remote chip (reached over Ethernet).
    pub remote: bool,
    /// Bytes per category.
    pub bytes: Bytes,
}

/// One used process slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Slot index.
    pub index: usize,
    /// The owner's pid (as TT-Metal recorded it; it may have died, or been reused).
    pub pid: u32,
    /// Bytes per category the owner holds (or held, when it died).
    pub bytes: Bytes,
    /// Last update of the slot, ns since the Unix epoch (0: never recorded).
    pub last_update_ns: u64,
    /// The owner's name (its comm, e.g. `python`), lossily decoded.
    pub name: String,
}

/// A decoded counter file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterFile {
    /// The layout version.
    pub version: u32,
    /// Processes attached, as TT-Metal counts them.
    pub num_active_processes: u32,
    /// Last update of the file, ns since the Unix epoch.
    pub last_update_ns: u64,
    /// Reference count.
    pub reference_count: u32,
    /// The chip's unique id (its hardware id; it also names the file from v2 on).
    pub asic_id: u64,
    /// The writing process's logical id of the chip.
    pub device_id: u32,
    /// TT-Metal's own totals per category (dead owners' bytes included: they are never
    /// reclaimed in v3).
    pub totals: Bytes,
    /// Used entries of the chip table.
    pub chips: Vec<ChipStat>,
    /// Used process slots (pid not 0), in slot order.
    pub slots: Vec<Slot>,
    /// `init_state` of a v4 file.
    pub init_state: Option<u32>,
    /// Slots skipped for a pid no process can have (negative, or above the kernel's limit).
    pub bad_slots: u32,
}

/// Why bytes are not a counter file ttmem can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// Too short for even the version word.
    Empty(usize),
    /// A version ttmem does not know.
    UnknownVersion(u32),
    /// Shorter than the version's layout.
    Truncated {
        /// The version word.
        version: u32,
        /// Bytes there are.
        len: usize,
        /// Bytes the layout needs.
        needed: usize,
    },
    /// A v4 file still being initialised by its writer.
    NotReady(u32),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::Empty(n) => write!(f, "{n} bytes: too short for a TT-Metal counter file"),
            LayoutError::UnknownVersion(v) => write!(
                f,
                "layout version {v} is not one ttmem reads (it reads 1 to 4); a newer TT-Metal may need a newer ttmem"
            ),
            LayoutError::Truncated { version, len, needed } => {
                write!(f, "truncated: {len} bytes, layout version {version} needs {needed}")
            }
            LayoutError::NotReady(state) => write!(f, "still being initialised by its writer (init_state {state:#x})"),
        }
    }
}

impl std::error::Error for LayoutError {}

fn u32_at(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .map_or(0, |s| u32::from_le_bytes(s.try_into().expect("four bytes")))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().expect("eight bytes")))
}

fn bytes_at(b: &[u8], at: usize, categories: &'static [&'static str]) -> Bytes {
    Bytes(
        categories
            .iter()
            .enumerate()
            .map(|(i, c)| (*c, u64_at(b, at + 8 * i)))
            .collect(),
    )
}

/// The largest pid Linux can hand out (`PID_MAX_LIMIT` on 64-bit).
const PID_MAX: i32 = 1 << 22;

/// A process name from a fixed field that may lack its NUL: up to the first NUL, lossily, with
/// control characters replaced so that no terminal is driven by it.
fn name_at(b: &[u8], at: usize) -> String {
    let field = b.get(at..at + NAME_BYTES).unwrap_or(&[]);
    let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end])
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// The layout a file's bytes claim, before they are decoded.
pub fn layout_of(b: &[u8]) -> Result<&'static Layout, LayoutError> {
    if b.len() < 4 {
        return Err(LayoutError::Empty(b.len()));
    }
    let version = u32_at(b, 0);
    layout(version).ok_or(LayoutError::UnknownVersion(version))
}

/// Decodes a counter file's bytes. Untrusted: every count is bounded by the layout, and a slot
/// with a pid no process can have is skipped and counted.
pub fn decode(b: &[u8]) -> Result<CounterFile, LayoutError> {
    let l = layout_of(b)?;
    if b.len() < l.size() {
        return Err(LayoutError::Truncated {
            version: l.version,
            len: b.len(),
            needed: l.size(),
        });
    }
    let init_state = l.init_state.map(|at| u32_at(b, at));
    if let Some(state) = init_state
        && state != INIT_READY
        && state != 0
    {
        return Err(LayoutError::NotReady(state));
    }
    let chips = (0..CHIP_SLOTS)
        .map(|i| l.chips.0 + i * l.chips.1)
        .filter(|&at| u32_at(b, at) != l.unused_chip)
        .map(|at| ChipStat {
            chip_id: u32_at(b, at),
            remote: u32_at(b, at + 4) != 0,
            bytes: bytes_at(b, at + 8, l.categories),
        })
        .collect();
    let mut slots = Vec::new();
    let mut bad_slots = 0;
    for index in 0..PROCESS_SLOTS {
        let at = l.processes.0 + index * l.processes.1;
        let pid = u32_at(b, at) as i32;
        if pid == 0 {
            continue;
        }
        if !(1..=PID_MAX).contains(&pid) {
            bad_slots += 1;
            continue;
        }
        let n = l.categories.len();
        slots.push(Slot {
            index,
            pid: pid as u32,
            bytes: bytes_at(b, at + 8, l.categories),
            last_update_ns: u64_at(b, at + 8 + 8 * n),
            name: name_at(b, at + 16 + 8 * n),
        });
    }
    Ok(CounterFile {
        version: l.version,
        num_active_processes: u32_at(b, 4),
        last_update_ns: u64_at(b, 8),
        reference_count: u32_at(b, 16),
        asic_id: u64_at(b, 32),
        device_id: u32_at(b, 40),
        totals: bytes_at(b, l.totals, l.categories),
        chips,
        slots,
        init_state,
        bad_slots,
    })
}

/// Builds a counter file's bytes in a given layout: the writer side, for fixtures and tests of
/// every version (ttmem itself never writes TT-Metal's files).
pub mod fixture {
    use super::*;

    /// A process slot to write: (slot index, pid, bytes per category, last update ns, name
    /// bytes).
    pub type SlotSpec = (usize, i32, Vec<u64>, u64, Vec<u8>);

    /// What to write.
    #[derive(Clone, Debug, Default)]
    pub struct Spec {
        /// The chip's unique id.
        pub asic_id: u64,
        /// The logical chip id.
        pub device_id: u32,
        /// File's last update, ns since the epoch.
        pub last_update_ns: u64,
        /// Chip table entries: (chip id, remote, bytes per category).
        pub chips: Vec<(u32, bool, Vec<u64>)>,
        /// Process slots.
        pub slots: Vec<SlotSpec>,
        /// `init_state` for v4 (None: ready).
        pub init_state: Option<u32>,
    }

    fn put(b: &mut [u8], at: usize, v: &[u8]) {
        b[at..at + v.len()].copy_from_slice(v);
    }

    /// The file's bytes in `version`'s layout (panics on an unknown version: fixtures only).
    pub fn build(version: u32, s: &Spec) -> Vec<u8> {
        let l = layout(version).expect("a known version");
        let mut b = vec![0u8; l.size().next_multiple_of(64)];
        put(&mut b, 0, &version.to_le_bytes());
        put(&mut b, 4, &(s.slots.len() as u32).to_le_bytes());
        put(&mut b, 8, &s.last_update_ns.to_le_bytes());
        put(&mut b, 32, &s.asic_id.to_le_bytes());
        put(&mut b, 40, &s.device_id.to_le_bytes());
        let n = l.categories.len();
        for i in 0..CHIP_SLOTS {
            put(&mut b, l.chips.0 + i * l.chips.1, &l.unused_chip.to_le_bytes());
        }
        let mut totals = vec![0u64; n];
        for (i, (chip, remote, bytes)) in s.chips.iter().enumerate().take(CHIP_SLOTS) {
            let at = l.chips.0 + i * l.chips.1;
            put(&mut b, at, &chip.to_le_bytes());
            put(&mut b, at + 4, &(*remote as u32).to_le_bytes());
            for (c, v) in bytes.iter().take(n).enumerate() {
                put(&mut b, at + 8 + 8 * c, &v.to_le_bytes());
            }
        }
        for (index, pid, bytes, ts, name) in &s.slots {
            let at = l.processes.0 + index * l.processes.1;
            put(&mut b, at, &pid.to_le_bytes());
            for (c, v) in bytes.iter().take(n).enumerate() {
                put(&mut b, at + 8 + 8 * c, &v.to_le_bytes());
                totals[c] = totals[c].wrapping_add(*v);
            }
            put(&mut b, at + 8 + 8 * n, &ts.to_le_bytes());
            let name = &name[..name.len().min(NAME_BYTES)];
            put(&mut b, at + 16 + 8 * n, name);
        }
        for (c, v) in totals.iter().enumerate() {
            put(&mut b, l.totals + 8 * c, &v.to_le_bytes());
        }
        if let Some(at) = l.init_state {
            put(&mut b, at, &s.init_state.unwrap_or(INIT_READY).to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::fixture::{Spec, build};
    use super::*;

    fn spec() -> Spec {
        Spec {
            asic_id: 72059269368820857,
            device_id: 0,
            last_update_ns: 1_700_000_000_000_000_000,
            // Chip 1: v1 marks an unused chip slot with chip id 0.
            chips: vec![(1, false, vec![2 << 20, 131072, 0, 0, 0, 4096])],
            slots: vec![
                (
                    0,
                    4242,
                    vec![2 << 20, 131072, 0, 0, 0, 4096],
                    1_700_000_000_000_000_001,
                    b"python".to_vec(),
                ),
                (5, 77, vec![100, 0, 0, 0, 8, 0], 5, vec![b'x'; NAME_BYTES]),
            ],
            init_state: None,
        }
    }

    #[test]
    fn every_layout_version_decodes_what_was_written() {
        for l in LAYOUTS {
            let f = decode(&build(l.version, &spec())).unwrap();
            assert_eq!((f.version, f.asic_id, f.device_id), (l.version, 72059269368820857, 0));
            assert_eq!(f.slots.len(), 2);
            let s = &f.slots[0];
            assert_eq!((s.index, s.pid, s.name.as_str()), (0, 4242, "python"));
            assert_eq!(s.bytes.get("DRAM"), 2 << 20);
            assert_eq!(s.bytes.get("L1"), 131072);
            assert_eq!(s.bytes.get("KERNEL"), if l.version == 1 { 4096 } else { 0 });
            assert_eq!(s.last_update_ns, 1_700_000_000_000_000_001);
            assert_eq!(
                f.slots[1].name,
                "x".repeat(NAME_BYTES),
                "a name without NUL stops at 64 bytes"
            );
            assert_eq!(f.totals.get("DRAM"), (2 << 20) + 100);
            assert_eq!(f.chips.len(), 1);
            assert_eq!(f.init_state, (l.version == 4).then_some(INIT_READY));
        }
    }

    #[test]
    fn unknown_truncated_and_unready_files_are_refused_with_the_reason() {
        assert_eq!(decode(&[1, 0]), Err(LayoutError::Empty(2)));
        let mut b = build(3, &spec());
        b[0] = 9;
        assert_eq!(decode(&b), Err(LayoutError::UnknownVersion(9)));
        assert!(decode(&b).unwrap_err().to_string().contains("version 9"));
        let b = build(3, &spec());
        assert_eq!(
            decode(&b[..1000]),
            Err(LayoutError::Truncated {
                version: 3,
                len: 1000,
                needed: 8536
            })
        );
        let b = build(
            4,
            &Spec {
                init_state: Some(1),
                ..spec()
            },
        );
        assert_eq!(decode(&b), Err(LayoutError::NotReady(1)));
        // A v3 file with a stale REDY word where v4 keeps it: the version decides, not the word.
        let mut b = build(3, &spec());
        b[8536..8540].copy_from_slice(&INIT_READY.to_le_bytes());
        assert_eq!(decode(&b).unwrap().init_state, None);
    }

    #[test]
    fn impossible_pids_and_control_characters_are_not_trusted() {
        let b = build(
            3,
            &Spec {
                slots: vec![
                    (0, -5, vec![1], 0, b"neg".to_vec()),
                    (1, i32::MAX, vec![1], 0, b"huge".to_vec()),
                    (2, 10, vec![1], 0, b"a\x1b[2Jb".to_vec()),
                ],
                ..spec()
            },
        );
        let f = decode(&b).unwrap();
        assert_eq!(f.bad_slots, 2);
        assert_eq!(f.slots.len(), 1);
        assert_eq!(f.slots[0].name, "a?[2Jb");
    }

    proptest::proptest! {
        /// Any bytes: decoding never panics, and what it returns stays within the layout.
        #[test]
        fn any_bytes_decode_or_are_refused(mut b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..9400), v in 0u32..6) {
            if b.len() >= 4 {
                b[..4].copy_from_slice(&v.to_le_bytes());
            }
            if let Ok(f) = decode(&b) {
                proptest::prop_assert!(f.slots.len() <= PROCESS_SLOTS && f.chips.len() <= CHIP_SLOTS);
                proptest::prop_assert!(f.slots.iter().all(|s| s.pid > 0 && s.name.len() <= 4 * NAME_BYTES));
            }
        }
    }
}
