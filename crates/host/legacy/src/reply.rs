//! What the allocation server answers: QUERY (bytes per category of one device) and
//! DEVICE_INFO_QUERY (the chip's architecture and capacities), built from facts the caller
//! looks up. The protocol's own rules live here (its architecture codes, the per-channel and
//! per-core figures, `is_available` for device -1); the daemon only supplies the numbers.

use crate::book::Category;
use crate::wire::{Message, MsgType};

/// Architecture code of the protocol for an arch name (0: unknown).
pub fn arch_code(arch: &str) -> u32 {
    let a = arch.to_ascii_lowercase();
    if a.starts_with("grayskull") {
        1
    } else if a.starts_with("wormhole") {
        2
    } else if a.starts_with("blackhole") {
        3
    } else if a.starts_with("quasar") {
        4
    } else {
        0
    }
}

/// The QUERY answer for `device_id`: `used(category)` gives the bytes running processes hold.
pub fn query_reply(device_id: i32, used: impl Fn(Category) -> u64) -> Message {
    Message {
        msg_type: MsgType::Response as u8,
        device_id,
        dram_allocated: used(Category::Dram),
        l1_allocated: used(Category::L1),
        l1_small_allocated: used(Category::L1Small),
        trace_allocated: used(Category::Trace),
        cb_allocated: used(Category::Cb),
        kernel_allocated: used(Category::Kernel),
        ..Message::default()
    }
}

/// One address space of a chip, as DEVICE_INFO reports it.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Space {
    /// Allocatable bytes over all banks.
    pub capacity: u64,
    /// Banks (DRAM channels, L1 cores).
    pub banks: u32,
    /// End of one bank's range (0: unknown).
    pub addr_end: u64,
}

/// What DEVICE_INFO_QUERY reports of one chip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChipFacts {
    /// Architecture name (`wormhole_b0`, `blackhole`, …).
    pub arch: String,
    /// DRAM, when the chip declares it.
    pub dram: Option<Space>,
    /// L1, when the chip declares it.
    pub l1: Option<Space>,
}

/// `is_available` of a device whose capacities no source reported: the figures are the
/// architecture's nominal ones ([`nominal`]). Clients that test `is_available != 0` still show
/// the device; ttmem's own readers can tell.
pub const AVAILABLE_NOMINAL: u32 = 2;

/// The nominal facts of an architecture (Wormhole when unknown, the most common), from the
/// published layouts: Wormhole 12 DRAM banks of 1 GiB and 64 worker cores of 1464 KiB of L1;
/// Blackhole 8 banks of 4 GiB and 120 cores of 1.5 MiB.
pub fn nominal(arch: &str) -> ChipFacts {
    let blackhole = arch.to_ascii_lowercase().starts_with("blackhole");
    let (banks, bank, cores, l1) = if blackhole {
        (8u32, 4u64 << 30, 120u32, 1536u64 << 10)
    } else {
        (12, 1 << 30, 64, 1464 << 10)
    };
    ChipFacts {
        arch: if blackhole { "blackhole" } else { "wormhole_b0" }.into(),
        dram: Some(Space {
            capacity: bank * banks as u64,
            banks,
            addr_end: bank,
        }),
        l1: Some(Space {
            capacity: l1 * cores as u64,
            banks: cores,
            addr_end: l1,
        }),
    }
}

/// The DEVICE_INFO_QUERY answer: for device -1 whether any device exists, else the chip's facts
/// (`chip` None: no such device, reported as unavailable). A chip no source gave capacities is
/// answered with its architecture's [`nominal`] facts and `is_available` [`AVAILABLE_NOMINAL`]
/// (an old monitor printed `100 MB / 0 B`). Sizes that do not fit the protocol's 32-bit fields
/// are clamped.
pub fn device_info_reply(device_id: i32, num_devices: u32, chip: Option<&ChipFacts>) -> Message {
    let mut r = Message {
        msg_type: MsgType::DeviceInfoResponse as u8,
        device_id,
        num_devices,
        ..Message::default()
    };
    if device_id < 0 {
        r.is_available = (num_devices > 0) as u32;
        return r;
    }
    let Some(chip) = chip else { return r };
    let fallback;
    let (chip, available) = if chip.dram.is_none_or(|d| d.capacity == 0) {
        fallback = nominal(&chip.arch);
        (&fallback, AVAILABLE_NOMINAL)
    } else {
        (chip, 1)
    };
    let clamp = |x: u64| x.min(u32::MAX as u64) as u32;
    r.arch_type = arch_code(&chip.arch);
    r.is_available = available;
    if let Some(d) = chip.dram {
        r.total_dram_size = d.capacity;
        r.num_dram_channels = d.banks;
        r.dram_size_per_channel = clamp(d.capacity / d.banks.max(1) as u64);
    }
    if let Some(l) = chip.l1 {
        r.total_l1_size = l.capacity;
        r.l1_size_per_core = clamp(if l.addr_end > 0 {
            l.addr_end
        } else {
            l.capacity / l.banks.max(1) as u64
        });
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_codes_follow_the_protocol() {
        assert_eq!(
            ["grayskull", "wormhole_b0", "Blackhole", "quasar", "x"].map(arch_code),
            [1, 2, 3, 4, 0]
        );
    }

    #[test]
    fn device_info_for_all_devices_and_for_one() {
        let any = device_info_reply(-1, 2, None);
        assert_eq!((any.is_available, any.num_devices), (1, 2));
        assert_eq!(device_info_reply(-1, 0, None).is_available, 0);
        assert_eq!(device_info_reply(5, 2, None).is_available, 0);
        let chip = ChipFacts {
            arch: "wormhole_b0".into(),
            dram: Some(Space {
                capacity: 12 << 30,
                banks: 12,
                addr_end: 0,
            }),
            l1: Some(Space {
                capacity: 64 * 1464 * 1024,
                banks: 64,
                addr_end: 1464 * 1024,
            }),
        };
        let r = device_info_reply(0, 1, Some(&chip));
        assert_eq!((r.arch_type, r.is_available, r.num_dram_channels), (2, 1, 12));
        assert_eq!((r.dram_size_per_channel, r.l1_size_per_core), (1 << 30, 1464 * 1024));
        let huge = ChipFacts {
            dram: Some(Space {
                capacity: u64::MAX,
                banks: 1,
                addr_end: 0,
            }),
            ..chip
        };
        assert_eq!(device_info_reply(0, 1, Some(&huge)).dram_size_per_channel, u32::MAX);
    }

    #[test]
    fn a_chip_without_capacities_is_answered_with_nominal_ones_and_says_so() {
        let unknown = ChipFacts {
            arch: "unknown".into(),
            dram: None,
            l1: None,
        };
        let r = device_info_reply(0, 1, Some(&unknown));
        assert_eq!((r.is_available, r.arch_type), (AVAILABLE_NOMINAL, 2));
        assert_eq!((r.total_dram_size, r.num_dram_channels), (12 << 30, 12));
        assert_eq!(r.l1_size_per_core, 1464 << 10);
        let bh = ChipFacts {
            arch: "blackhole".into(),
            dram: Some(Space::default()),
            l1: None,
        };
        let r = device_info_reply(0, 1, Some(&bh));
        assert_eq!(
            (r.arch_type, r.is_available, r.total_dram_size),
            (3, AVAILABLE_NOMINAL, 32 << 30)
        );
    }

    #[test]
    fn query_reports_each_category_in_its_field() {
        let r = query_reply(3, |c| 1 << (c as u32));
        assert_eq!(r.device_id, 3);
        assert_eq!(
            [
                r.dram_allocated,
                r.l1_allocated,
                r.l1_small_allocated,
                r.trace_allocated,
                r.cb_allocated,
                r.kernel_allocated
            ],
            [
                1 << Category::Dram as u32,
                1 << Category::L1 as u32,
                1 << Category::L1Small as u32,
                1 << Category::Trace as u32,
                1 << Category::Cb as u32,
                1 << Category::Kernel as u32
            ]
        );
    }
}
