//! A TT-Metal-like bank allocator: one bank's address space managed with a free list, replicated
//! across banks for interleaved buffers.
//!
//! Like TT-Metal's bank managers, an interleaved buffer of `size` bytes with page size `P` over
//! `B` banks takes `ceil(ceil(size / P) / B)` pages in *every* bank at the same address, so
//! fragmentation is a property of one bank's address space and the largest free block there
//! bounds the largest new buffer. Pure logic, no I/O.

use std::collections::BTreeMap;

/// How a free block is chosen.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The first block large enough, in address order (lowest first, or highest if top-down).
    FirstFit,
    /// The smallest block large enough.
    BestFit,
}

/// Why an allocation failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    /// Not enough contiguous space in one bank.
    #[error(
        "Out of Memory: Not enough space to allocate {requested} B {category} buffer across {banks} banks, \
         where each bank needs to store {per_bank} B, but the largest free block is only {largest_free} B \
         ({free_total} B free in total{fragmented})"
    )]
    OutOfMemory {
        /// Category name.
        category: String,
        /// Bytes asked for.
        requested: u64,
        /// Banks.
        banks: u32,
        /// Bytes needed in each bank.
        per_bank: u64,
        /// Largest free block of one bank.
        largest_free: u64,
        /// Free bytes over all banks.
        free_total: u64,
        /// ", so the failure is fragmentation" when enough bytes are free in total.
        fragmented: &'static str,
    },
    /// A zero-byte request.
    #[error("cannot allocate 0 bytes")]
    ZeroSize,
    /// Free of an address that is not allocated.
    #[error("address {0:#x} is not allocated")]
    NotAllocated(u64),
}

/// Allocator statistics, as TT-Metal's `get_statistics` reports them.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct Statistics {
    /// Allocatable bytes over all banks.
    pub total_allocatable: u64,
    /// Allocated bytes over all banks.
    pub allocated: u64,
    /// Free bytes over all banks.
    pub free: u64,
    /// Largest free block of one bank.
    pub largest_free_per_bank: u64,
    /// Live buffers.
    pub buffers: usize,
    /// Free blocks in one bank.
    pub free_blocks: usize,
}

impl Statistics {
    /// 1 - largest free block / free bytes (per bank): 0 when all free space is one block.
    pub fn fragmentation(&self, banks: u32) -> f64 {
        let free_per_bank = self.free / banks.max(1) as u64;
        if free_per_bank == 0 {
            0.0
        } else {
            1.0 - self.largest_free_per_bank as f64 / free_per_bank as f64
        }
    }
}

/// Where one category lives: `[base, end)` of one bank, repeated over `banks`, with the
/// interleaving page size (1 for a flat space), a power-of-two alignment, and the direction
/// (TT-Metal allocates L1 buffers top-down).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct BankLayout {
    /// Banks.
    pub banks: u32,
    /// First allocatable address of one bank.
    pub base: u64,
    /// End (exclusive) of one bank's range.
    pub end: u64,
    /// Interleaving page size.
    pub page: u64,
    /// Alignment.
    pub alignment: u64,
    /// Allocate from the top.
    pub top_down: bool,
}

/// One category's allocator: a free list over `[base, end)` of one bank, replicated `banks` times.
#[derive(Clone, Debug)]
pub struct BankAllocator {
    name: String,
    base: u64,
    end: u64,
    banks: u32,
    page: u64,
    alignment: u64,
    policy: Policy,
    top_down: bool,
    /// Free blocks: address → size, non-adjacent (merged on free).
    free: BTreeMap<u64, u64>,
    /// Live buffers: address → bytes per bank.
    live: BTreeMap<u64, u64>,
}

impl BankAllocator {
    /// An allocator for `[base, end)` per bank. `page` is the interleaving page size (1 for a
    /// An allocator for one category. Panics on an impossible layout (a programming error:
    /// layouts are constants of the chip model).
    pub fn new(name: &str, layout: BankLayout, policy: Policy) -> Self {
        let BankLayout {
            banks,
            base,
            end,
            page,
            alignment,
            top_down,
        } = layout;
        assert!(
            end > base && banks > 0 && page > 0 && alignment.is_power_of_two(),
            "bad allocator layout"
        );
        let mut free = BTreeMap::new();
        free.insert(base, end - base);
        BankAllocator {
            name: name.into(),
            base,
            end,
            banks,
            page,
            alignment,
            policy,
            top_down,
            free,
            live: BTreeMap::new(),
        }
    }

    /// Bytes one buffer of `size` takes in each bank.
    pub fn per_bank_bytes(&self, size: u64) -> u64 {
        let pages = size.div_ceil(self.page);
        let per_bank = pages.div_ceil(self.banks as u64) * self.page;
        per_bank.div_ceil(self.alignment) * self.alignment
    }

    /// Bytes one buffer of `size` takes over all banks (what it costs the device).
    pub fn footprint(&self, size: u64) -> u64 {
        self.per_bank_bytes(size) * self.banks as u64
    }

    /// Allocates a buffer; returns its address (the same in every bank).
    pub fn allocate(&mut self, size: u64) -> Result<u64, AllocError> {
        if size == 0 {
            return Err(AllocError::ZeroSize);
        }
        let need = self.per_bank_bytes(size);
        let fits = |(&addr, &len): (&u64, &u64)| -> Option<(u64, u64, u64)> {
            // The aligned start inside this block, bottom-up or top-down.
            let start = if self.top_down {
                (addr + len).checked_sub(need)? / self.alignment * self.alignment
            } else {
                addr.div_ceil(self.alignment) * self.alignment
            };
            (start >= addr && start + need <= addr + len).then_some((addr, len, start))
        };
        let choice = match (self.policy, self.top_down) {
            (Policy::FirstFit, false) => self.free.iter().find_map(fits),
            (Policy::FirstFit, true) => self.free.iter().rev().find_map(fits),
            (Policy::BestFit, _) => self
                .free
                .iter()
                .filter_map(fits)
                .min_by_key(|&(addr, len, _)| (len, if self.top_down { u64::MAX - addr } else { addr })),
        };
        let Some((addr, len, start)) = choice else {
            let s = self.statistics();
            return Err(AllocError::OutOfMemory {
                category: self.name.clone(),
                requested: size,
                banks: self.banks,
                per_bank: need,
                largest_free: s.largest_free_per_bank,
                free_total: s.free,
                fragmented: if s.free >= need * self.banks as u64 {
                    ", so the failure is fragmentation"
                } else {
                    ""
                },
            });
        };
        self.free.remove(&addr);
        if start > addr {
            self.free.insert(addr, start - addr);
        }
        if start + need < addr + len {
            self.free.insert(start + need, addr + len - start - need);
        }
        self.live.insert(start, need);
        Ok(start)
    }

    /// Frees the buffer at `addr`; returns its footprint over all banks.
    pub fn deallocate(&mut self, addr: u64) -> Result<u64, AllocError> {
        let len = self.live.remove(&addr).ok_or(AllocError::NotAllocated(addr))?;
        let (mut start, mut size) = (addr, len);
        if let Some((&prev, &plen)) = self.free.range(..addr).next_back()
            && prev + plen == addr
        {
            self.free.remove(&prev);
            start = prev;
            size += plen;
        }
        if let Some(&nlen) = self.free.get(&(addr + len)) {
            self.free.remove(&(addr + len));
            size += nlen;
        }
        self.free.insert(start, size);
        Ok(len * self.banks as u64)
    }

    /// Current statistics.
    pub fn statistics(&self) -> Statistics {
        let free_per_bank: u64 = self.free.values().sum();
        let banks = self.banks as u64;
        Statistics {
            total_allocatable: (self.end - self.base) * banks,
            allocated: (self.end - self.base - free_per_bank) * banks,
            free: free_per_bank * banks,
            largest_free_per_bank: self.free.values().copied().max().unwrap_or(0),
            buffers: self.live.len(),
            free_blocks: self.free.len(),
        }
    }

    /// Live buffers: (address, footprint over all banks).
    pub fn buffers(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.live.iter().map(|(&a, &l)| (a, l * self.banks as u64))
    }

    /// Banks.
    pub fn banks(&self) -> u32 {
        self.banks
    }

    /// Category name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `[base, end)` of one bank.
    pub fn range(&self) -> (u64, u64) {
        (self.base, self.end)
    }

    /// Alignment.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn dram(policy: Policy) -> BankAllocator {
        BankAllocator::new(
            "DRAM",
            BankLayout {
                banks: 12,
                base: 0,
                end: 1 << 20,
                page: 2048,
                alignment: 64,
                top_down: false,
            },
            policy,
        )
    }

    #[test]
    fn interleaving_rounds_to_pages_per_bank() {
        let mut a = dram(Policy::FirstFit);
        // 25 pages over 12 banks → 3 pages per bank.
        assert_eq!(a.per_bank_bytes(25 * 2048), 3 * 2048);
        let addr = a.allocate(25 * 2048).unwrap();
        assert_eq!(addr, 0);
        assert_eq!(a.statistics().allocated, 3 * 2048 * 12);
        assert_eq!(a.allocate(1).unwrap(), 3 * 2048, "next buffer follows in every bank");
    }

    #[test]
    fn frees_merge_and_best_fit_picks_the_tightest_hole() {
        let mut a = BankAllocator::new(
            "L1",
            BankLayout {
                banks: 1,
                base: 0,
                end: 1000,
                page: 1,
                alignment: 1,
                top_down: false,
            },
            Policy::BestFit,
        );
        let x = a.allocate(100).unwrap();
        let _y = a.allocate(10).unwrap();
        let z = a.allocate(50).unwrap();
        let _w = a.allocate(10).unwrap();
        a.deallocate(x).unwrap();
        a.deallocate(z).unwrap();
        assert_eq!(a.statistics().free_blocks, 3);
        assert_eq!(
            a.allocate(40).unwrap(),
            z,
            "best fit takes the 50-byte hole, not the 100-byte one"
        );
        let mut f = BankAllocator::new(
            "L1",
            BankLayout {
                banks: 1,
                base: 0,
                end: 1000,
                page: 1,
                alignment: 1,
                top_down: false,
            },
            Policy::FirstFit,
        );
        let x = f.allocate(100).unwrap();
        let _ = f.allocate(10).unwrap();
        f.deallocate(x).unwrap();
        assert_eq!(f.allocate(40).unwrap(), 0, "first fit takes the lowest hole");
        assert_eq!(f.deallocate(0).unwrap(), 40);
        assert_eq!(
            f.statistics().free_blocks,
            2,
            "the freed block merged with its free neighbour"
        );
    }

    #[test]
    fn top_down_allocates_from_the_end_aligned() {
        let mut a = BankAllocator::new(
            "L1",
            BankLayout {
                banks: 64,
                base: 1024,
                end: 4096,
                page: 1,
                alignment: 32,
                top_down: true,
            },
            Policy::FirstFit,
        );
        let addr = a.allocate(64 * 100).unwrap();
        assert_eq!(addr % 32, 0);
        assert_eq!(addr + a.per_bank_bytes(6400), 4096);
    }

    #[test]
    fn out_of_memory_says_whether_it_is_fragmentation() {
        let mut a = BankAllocator::new(
            "DRAM",
            BankLayout {
                banks: 1,
                base: 0,
                end: 1000,
                page: 1,
                alignment: 1,
                top_down: false,
            },
            Policy::FirstFit,
        );
        let xs: Vec<u64> = (0..10).map(|_| a.allocate(100).unwrap()).collect();
        for x in xs.iter().step_by(2) {
            a.deallocate(*x).unwrap();
        }
        let e = a.allocate(200).unwrap_err();
        assert!(e.to_string().contains("fragmentation"), "{e}");
        assert!(matches!(
            e,
            AllocError::OutOfMemory {
                largest_free: 100,
                free_total: 500,
                ..
            }
        ));
        let e = a.allocate(600).unwrap_err();
        assert!(!e.to_string().contains("fragmentation"));
        assert_eq!(a.deallocate(12345), Err(AllocError::NotAllocated(12345)));
        assert_eq!(a.allocate(0), Err(AllocError::ZeroSize));
    }

    proptest! {
        #[test]
        fn accounting_always_balances(ops in proptest::collection::vec((any::<bool>(), 1u64..50_000, any::<prop::sample::Index>()), 1..200), best in any::<bool>(), top in any::<bool>()) {
            let mut a = BankAllocator::new("X", BankLayout { banks: 4, base: 4096, end: 1 << 20, page: 512, alignment: 64, top_down: top }, if best { Policy::BestFit } else { Policy::FirstFit });
            let mut live: Vec<(u64, u64)> = Vec::new();
            for (alloc, size, idx) in ops {
                if alloc || live.is_empty() {
                    if let Ok(addr) = a.allocate(size) {
                        let fp = a.footprint(size);
                        // No overlap with any live buffer.
                        for &(b, bfp) in &live {
                            let (l1, l2) = (fp / 4, bfp / 4);
                            prop_assert!(addr + l1 <= b || b + l2 <= addr);
                        }
                        prop_assert!(addr >= 4096 && addr + fp / 4 <= 1 << 20 && addr % 64 == 0);
                        live.push((addr, fp));
                    }
                } else {
                    let (addr, fp) = live.swap_remove(idx.index(live.len()));
                    prop_assert_eq!(a.deallocate(addr).unwrap(), fp);
                }
                let s = a.statistics();
                prop_assert_eq!(s.allocated, live.iter().map(|l| l.1).sum::<u64>());
                prop_assert_eq!(s.allocated + s.free, s.total_allocatable);
                prop_assert!(s.largest_free_per_bank * 4 <= s.free);
            }
        }
    }
}
