//! Simulated chips: per-architecture memory layouts, board shapes, and a chip model that owns
//! one [`BankAllocator`] per category.

use ttmem_client::{CategorySpec, DeviceSpec, tt};
use ttmem_region::DeviceKind;

use crate::allocator::{AllocError, BankAllocator, BankLayout, Policy, Statistics};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// A chip architecture with its nominal memory layout (TT_MEMORY.md).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Wormhole B0: 12 DRAM banks of 1 GiB, 64 worker cores of 1464 KiB L1.
    WormholeB0,
    /// Blackhole: 8 DRAM banks of 4 GiB, 120 worker cores of 1536 KiB L1.
    Blackhole,
}

impl Arch {
    /// The name runtimes use.
    pub fn name(self) -> &'static str {
        match self {
            Arch::WormholeB0 => "wormhole_b0",
            Arch::Blackhole => "blackhole",
        }
    }

    /// Per-category layouts in [`tt::NAMES`] order. DRAM reserves its first 64 MiB per bank
    /// (firmware, dispatch) and keeps the top of each bank for the trace region; L1 keeps
    /// firmware at the bottom, then KERNEL_CONFIG, CBs and L1_SMALL, and allocates buffers
    /// top-down like TT-Metal.
    fn layouts(self) -> [BankLayout; 7] {
        let (dram_banks, bank, trace, cores, l1_top) = match self {
            Arch::WormholeB0 => (12, GIB, 64 * MIB, 64, 1464 * KIB),
            Arch::Blackhole => (8, 4 * GIB, 128 * MIB, 120, 1536 * KIB),
        };
        let l = |banks, base, end, page, alignment, top_down| BankLayout {
            banks,
            base,
            end,
            page,
            alignment,
            top_down,
        };
        [
            l(dram_banks, 64 * MIB, bank - trace, 2 * KIB, 64, false),
            l(cores, 512 * KIB, l1_top, 2 * KIB, 32, true),
            l(cores, 448 * KIB, 512 * KIB, 1, 16, false),
            l(dram_banks, bank - trace, bank, 2 * KIB, 64, false),
            l(cores, 192 * KIB, 448 * KIB, 1, 16, false),
            l(cores, 96 * KIB, 192 * KIB, 1, 16, false),
            l(1, 0, GIB, 4 * KIB, 4096, false),
        ]
    }

    /// The category declarations a runtime would register for this chip.
    pub fn categories(self) -> Vec<CategorySpec> {
        tt::NAMES
            .iter()
            .zip(self.layouts())
            // Interleaved buffers take whole pages per bank, so the page is the effective
            // alignment a reader must assume (nested ceiling divisions compose exactly).
            .map(|(name, l)| tt::category(name, l.banks, l.base, l.end, l.alignment.max(l.page) as u32))
            .collect()
    }
}

/// A board or system shape: which chips a workload process opens.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One Wormhole chip.
    N150,
    /// Two Wormhole chips: one local on PCIe, one remote over Ethernet.
    N300,
    /// One Blackhole chip.
    P150,
    /// Eight Wormhole chips (four n300 cards).
    T3000,
    /// 32 Wormhole chips in four trays of eight.
    Galaxy,
}

impl Shape {
    /// Every shape, for help texts.
    pub const ALL: [Shape; 5] = [Shape::N150, Shape::N300, Shape::P150, Shape::T3000, Shape::Galaxy];

    /// Parses a shape name (`n150`, `n300`, `p150`, `t3000`, `galaxy`).
    pub fn parse(s: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|sh| sh.name().eq_ignore_ascii_case(s))
    }

    /// The shape's name.
    pub fn name(self) -> &'static str {
        match self {
            Shape::N150 => "n150",
            Shape::N300 => "n300",
            Shape::P150 => "p150",
            Shape::T3000 => "t3000",
            Shape::Galaxy => "galaxy",
        }
    }

    /// The chips of this shape: (arch, display name, remote).
    pub fn chips(self) -> Vec<(Arch, String, bool)> {
        match self {
            Shape::N150 => vec![(Arch::WormholeB0, "n150".into(), false)],
            Shape::P150 => vec![(Arch::Blackhole, "p150".into(), false)],
            Shape::N300 => vec![
                (Arch::WormholeB0, "n300-L".into(), false),
                (Arch::WormholeB0, "n300-R".into(), true),
            ],
            Shape::T3000 => (0..8)
                .map(|i| {
                    (
                        Arch::WormholeB0,
                        format!("T3K:{}{}", i / 2, if i % 2 == 0 { "L" } else { "R" }),
                        i % 2 == 1,
                    )
                })
                .collect(),
            Shape::Galaxy => (0..32)
                .map(|i| (Arch::WormholeB0, format!("T{}:N{}", i / 8 + 1, i % 8), false))
                .collect(),
        }
    }
}

/// The stable hardware id of simulated chip number `n` (unique per host as long as workloads
/// use distinct `--chip-offset` ranges).
pub fn sim_hw_id(n: u32) -> u64 {
    0x5157_0000_0000_0000 | n as u64
}

/// One simulated chip: its identity and an allocator per category.
#[derive(Clone, Debug)]
pub struct ChipModel {
    /// Architecture.
    pub arch: Arch,
    /// Display name.
    pub name: String,
    /// Remote chip.
    pub remote: bool,
    /// Stable hardware id.
    pub hw_id: u64,
    /// Logical id in the owning process.
    pub logical_id: i32,
    allocators: Vec<BankAllocator>,
}

impl ChipModel {
    /// A fresh chip with every category empty.
    pub fn new(arch: Arch, name: &str, remote: bool, hw_id: u64, logical_id: i32, policy: Policy) -> Self {
        let allocators = tt::NAMES
            .iter()
            .zip(arch.layouts())
            .map(|(n, l)| BankAllocator::new(n, l, policy))
            .collect();
        ChipModel {
            arch,
            name: name.into(),
            remote,
            hw_id,
            logical_id,
            allocators,
        }
    }

    /// The device registration for this chip.
    pub fn device_spec(&self) -> DeviceSpec {
        DeviceSpec {
            kind: DeviceKind::SimulatedTenstorrent,
            hw_id: self.hw_id,
            logical_id: self.logical_id,
            arch: self.arch.name().into(),
            name: self.name.clone(),
            remote: self.remote,
            categories: self.arch.categories(),
        }
    }

    /// Allocates `size` bytes of `category`; returns (address, footprint).
    pub fn allocate(&mut self, category: u8, size: u64) -> Result<(u64, u64), AllocError> {
        let a = &mut self.allocators[category as usize];
        let addr = a.allocate(size)?;
        Ok((addr, a.footprint(size)))
    }

    /// Frees the buffer at `addr`; returns its footprint.
    pub fn deallocate(&mut self, category: u8, addr: u64) -> Result<u64, AllocError> {
        self.allocators[category as usize].deallocate(addr)
    }

    /// One category's allocator.
    pub fn allocator(&self, category: u8) -> &BankAllocator {
        &self.allocators[category as usize]
    }

    /// Statistics per category in [`tt::NAMES`] order.
    pub fn statistics(&self) -> Vec<Statistics> {
        self.allocators.iter().map(BankAllocator::statistics).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wormhole_layout_matches_nominal_capacities() {
        let c = ChipModel::new(Arch::WormholeB0, "n150", false, 1, 0, Policy::FirstFit);
        let s = c.statistics();
        // 12 banks × (1 GiB - 64 MiB reserved - 64 MiB trace).
        assert_eq!(s[tt::DRAM as usize].total_allocatable, 12 * (GIB - 128 * MIB));
        assert_eq!(s[tt::TRACE as usize].total_allocatable, 12 * 64 * MIB);
        assert_eq!(s[tt::L1 as usize].total_allocatable, 64 * (1464 - 512) * KIB);
        // The declared capacities are what readers will show as totals.
        let spec = c.device_spec();
        for (cat, st) in spec.categories.iter().zip(&s) {
            assert_eq!(cat.capacity, st.total_allocatable, "{}", cat.name);
        }
    }

    #[test]
    fn shapes_have_the_right_chips() {
        assert_eq!(Shape::N300.chips().iter().filter(|c| c.2).count(), 1);
        assert_eq!(Shape::T3000.chips().len(), 8);
        let g = Shape::Galaxy.chips();
        assert_eq!(g.len(), 32);
        assert_eq!(g[9].1, "T2:N1");
        assert_eq!(Shape::parse("GALAXY"), Some(Shape::Galaxy));
        assert_eq!(Shape::parse("n999"), None);
        assert_eq!(Shape::P150.chips()[0].0, Arch::Blackhole);
    }

    #[test]
    fn a_chip_runs_out_of_dram_like_the_real_one() {
        let mut c = ChipModel::new(Arch::WormholeB0, "n150", false, 1, 0, Policy::FirstFit);
        let mut n = 0;
        while c.allocate(tt::DRAM, GIB).is_ok() {
            n += 1;
        }
        assert_eq!(n, 10, "ten 1 GiB buffers fit in 12 × 896 MiB");
        let e = c.allocate(tt::DRAM, GIB).unwrap_err();
        assert!(e.to_string().starts_with("Out of Memory"), "{e}");
    }
}
