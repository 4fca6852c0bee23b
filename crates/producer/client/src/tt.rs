//! Tenstorrent conventions: the standard category order and nominal per-chip layouts.
//!
//! Categories are data (each device declares its own); these helpers only spare a TT runtime
//! from spelling out the usual set. Indices below are valid for devices registered with
//! [`categories`] or the per-architecture helpers.

use crate::CategorySpec;

/// DRAM buffers (interleaved across banks).
pub const DRAM: u8 = 0;
/// L1 buffers (per-core SRAM).
pub const L1: u8 = 1;
/// The small reserved L1 region.
pub const L1_SMALL: u8 = 2;
/// The trace region.
pub const TRACE: u8 = 3;
/// Circular buffers of cached programs.
pub const CB: u8 = 4;
/// Kernel binaries (KERNEL_CONFIG).
pub const KERNEL: u8 = 5;
/// Host memory mapped for the device.
pub const SYSTEM_MEMORY: u8 = 6;

/// The category names in index order.
pub const NAMES: [&str; 7] = ["DRAM", "L1", "L1_SMALL", "TRACE", "CB", "KERNEL", "SYSTEM_MEMORY"];

/// A flat category with a name, a capacity and an address range replicated over `banks`.
pub fn category(name: &str, banks: u32, addr_base: u64, addr_end: u64, alignment: u32) -> CategorySpec {
    CategorySpec {
        name: name.into(),
        capacity: addr_end.saturating_sub(addr_base) * banks.max(1) as u64,
        addr_base,
        addr_end,
        banks,
        alignment,
    }
}

/// The standard seven categories from per-bank ranges (all in [`NAMES`] order).
pub fn categories(ranges: [(u32, u64, u64, u32); 7]) -> Vec<CategorySpec> {
    NAMES
        .iter()
        .zip(ranges)
        .map(|(name, (banks, base, end, align))| category(name, banks, base, end, align))
        .collect()
}

/// Nominal Wormhole B0 layout (12 DRAM banks of 1 GiB, 64 cores of 1464 KiB L1).
pub fn wormhole_categories() -> Vec<CategorySpec> {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    categories([
        (12, 64 * MIB, 1024 * MIB - 256 * MIB, 64),
        (64, 512 * KIB, 1464 * KIB, 32),
        (64, 448 * KIB, 512 * KIB, 16),
        (12, 1024 * MIB - 256 * MIB, 1024 * MIB, 64),
        (64, 192 * KIB, 448 * KIB, 16),
        (64, 96 * KIB, 192 * KIB, 16),
        (1, 0, 1024 * MIB, 64),
    ])
}
