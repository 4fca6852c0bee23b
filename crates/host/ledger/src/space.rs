//! Address space: per-bank extents of live allocations, free gaps, fragmentation, occupancy
//! maps and "will N bytes fit". Computed when asked, never kept per event.

use serde::{Deserialize, Serialize};

use crate::{CategoryInfo, DeviceKey, Ledger, ProcKey, ProcState, QueryError};

/// Free space of one device category, per bank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fragmentation {
    /// Free bytes of one bank.
    pub free_per_bank: u64,
    /// Largest free block of one bank.
    pub largest_free_per_bank: u64,
    /// Free blocks.
    pub free_blocks: u64,
    /// 1 − largest / free (0 when all free space is one block).
    pub ratio: f64,
    /// Live allocations considered.
    pub allocations: u64,
}

/// An allocation that bounds a free gap. `O` names its owner: the ledger's process key, or
/// whatever an API maps it to ([`Fit::map_owners`]); serialized as `pid`, the API's name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour<O = ProcKey> {
    /// Owner.
    #[serde(rename = "pid")]
    pub process: O,
    /// Address.
    pub address: u64,
    /// Bytes on the device.
    pub size: u64,
}

/// A free gap of one bank and what bounds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gap<O = ProcKey> {
    /// First free address.
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// The allocation just below (None: the start of the range).
    pub below: Option<Neighbour<O>>,
    /// The allocation just above (None: the end of the range).
    pub above: Option<Neighbour<O>>,
}

/// The answer to "can N bytes of this category be allocated on this device now?".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fit<O = ProcKey> {
    /// Yes or no.
    pub fits: bool,
    /// Bytes requested over all banks.
    pub requested: u64,
    /// Bytes that needs in one bank (after interleaving and alignment).
    pub needed_per_bank: u64,
    /// Largest free block of one bank.
    pub largest_free_per_bank: u64,
    /// The largest gaps (up to five), with the allocations bounding them.
    pub best_gaps: Vec<Gap<O>>,
    /// The free space picture.
    pub fragmentation: Fragmentation,
}

impl<O> Fit<O> {
    /// The same answer with each neighbour's owner mapped (to a pid, for the API).
    pub fn map_owners<P>(self, f: impl Fn(O) -> P) -> Fit<P> {
        let neighbour = |n: Option<Neighbour<O>>| {
            n.map(|n| Neighbour {
                process: f(n.process),
                address: n.address,
                size: n.size,
            })
        };
        Fit {
            fits: self.fits,
            requested: self.requested,
            needed_per_bank: self.needed_per_bank,
            largest_free_per_bank: self.largest_free_per_bank,
            best_gaps: self
                .best_gaps
                .into_iter()
                .map(|g| Gap {
                    start: g.start,
                    end: g.end,
                    below: neighbour(g.below),
                    above: neighbour(g.above),
                })
                .collect(),
            fragmentation: self.fragmentation,
        }
    }
}

impl Ledger {
    /// A device category with an address range (its index and declaration): the one check
    /// every address-space answer starts with.
    fn address_space(&self, dev: DeviceKey, category: &str) -> Result<(u8, &CategoryInfo), QueryError> {
        let (info, _) = self.devices.get(dev.index()).ok_or(QueryError::UnknownDevice(dev))?;
        let (i, c) = info
            .categories
            .iter()
            .enumerate()
            .find(|(_, c)| c.name.eq_ignore_ascii_case(category))
            .ok_or_else(|| QueryError::UnknownCategory(category.to_string()))?;
        if c.addr_end <= c.addr_base {
            return Err(QueryError::NoAddressRange(c.name.clone()));
        }
        Ok((i as u8, c))
    }

    /// Per-bank extents of running processes' allocations in one device category, sorted:
    /// (start, end, owner, address, size).
    fn extents(&self, dev: DeviceKey, cat: u8, banks: u64, align: u64) -> Vec<(u64, u64, ProcKey, u64)> {
        let mut v = Vec::new();
        for (&pk, p) in self.procs.iter().filter(|(_, p)| p.state == ProcState::Running) {
            if let Some(b) = p.buckets.get(&(dev, cat)) {
                v.extend(b.live.iter().map(|(&a, e)| {
                    let per_bank = e.size.div_ceil(banks).div_ceil(align).saturating_mul(align);
                    (a, a.saturating_add(per_bank), pk, e.size)
                }));
            }
        }
        v.sort_unstable_by_key(|x| (x.0, x.1));
        v
    }

    /// Free gaps of one bank, with the allocations that bound them.
    fn gaps(&self, dev: DeviceKey, cat: u8, c: &CategoryInfo) -> (Vec<Gap>, u64) {
        let banks = c.banks.max(1) as u64;
        let align = (c.alignment as u64).max(1);
        let ext = self.extents(dev, cat, banks, align);
        let mut gaps = Vec::new();
        let mut cursor = c.addr_base;
        let mut below: Option<Neighbour> = None;
        for &(start, end, pk, size) in &ext {
            if start > cursor {
                gaps.push(Gap {
                    start: cursor,
                    end: start.min(c.addr_end),
                    below: below.clone(),
                    above: Some(Neighbour {
                        process: pk,
                        address: start,
                        size,
                    }),
                });
            }
            if end >= cursor {
                cursor = end;
                below = Some(Neighbour {
                    process: pk,
                    address: start,
                    size,
                });
            }
        }
        if cursor < c.addr_end {
            gaps.push(Gap {
                start: cursor,
                end: c.addr_end,
                below,
                above: None,
            });
        }
        gaps.retain(|g| g.end > g.start);
        (gaps, ext.len() as u64)
    }

    /// Free space of one device category (running processes' allocations), computed now.
    pub fn fragmentation(&self, dev: DeviceKey, category: &str) -> Result<Fragmentation, QueryError> {
        let (cat, c) = self.address_space(dev, category)?;
        let (gaps, allocations) = self.gaps(dev, cat, c);
        Ok(Self::summarize(&gaps, allocations))
    }

    fn summarize(gaps: &[Gap], allocations: u64) -> Fragmentation {
        let free: u64 = gaps.iter().map(|g| g.end - g.start).sum();
        let largest = gaps.iter().map(|g| g.end - g.start).max().unwrap_or(0);
        Fragmentation {
            free_per_bank: free,
            largest_free_per_bank: largest,
            free_blocks: gaps.len() as u64,
            ratio: if free == 0 {
                0.0
            } else {
                1.0 - largest as f64 / free as f64
            },
            allocations,
        }
    }

    /// One bank's address range of a device category, `[base, end)`: where a map's cells lie.
    pub fn address_range(&self, dev: DeviceKey, category: &str) -> Result<(u64, u64), QueryError> {
        let (_, c) = self.address_space(dev, category)?;
        Ok((c.addr_base, c.addr_end))
    }

    /// Occupancy of one bank's address range cut into `cells` equal parts (0.0 free to 1.0
    /// full), for a memory map.
    pub fn occupancy(&self, dev: DeviceKey, category: &str, cells: usize) -> Result<Vec<f32>, QueryError> {
        Ok(self.occupancy_by_owner(dev, category, cells)?.0)
    }

    /// [`Ledger::occupancy`] with, per cell, the process holding most of it (None: a free
    /// cell), so a map can colour cells by owner.
    pub fn occupancy_by_owner(
        &self,
        dev: DeviceKey,
        category: &str,
        cells: usize,
    ) -> Result<(Vec<f32>, Vec<Option<ProcKey>>), QueryError> {
        let (cat, c) = self.address_space(dev, category)?;
        let cells = cells.clamp(1, 4096);
        let span = c.addr_end - c.addr_base;
        let width = span.div_ceil(cells as u64).max(1);
        let mut used = vec![0u64; cells];
        // Per cell, the bytes of each owner in it: few owners share a cell, so a short list.
        let mut owners: Vec<Vec<(ProcKey, u64)>> = vec![Vec::new(); cells];
        let banks = c.banks.max(1) as u64;
        let align = (c.alignment as u64).max(1);
        for (start, end, owner, _) in self.extents(dev, cat, banks, align) {
            let (s, e) = (
                start.clamp(c.addr_base, c.addr_end) - c.addr_base,
                end.clamp(c.addr_base, c.addr_end) - c.addr_base,
            );
            let mut at = s;
            while at < e {
                let cell = ((at / width) as usize).min(cells - 1);
                let cell_end = ((cell as u64 + 1) * width).min(e).max(at + 1);
                used[cell] += cell_end - at;
                match owners[cell].iter_mut().find(|(k, _)| *k == owner) {
                    Some((_, b)) => *b += cell_end - at,
                    None => owners[cell].push((owner, cell_end - at)),
                }
                at = cell_end;
            }
        }
        let fill = used
            .iter()
            .enumerate()
            .map(|(i, &u)| {
                let cell_span = width.min(span - (i as u64 * width).min(span)).max(1);
                (u as f64 / cell_span as f64).min(1.0) as f32
            })
            .collect();
        let top = owners
            .iter()
            .map(|o| {
                o.iter()
                    .max_by_key(|(k, b)| (*b, std::cmp::Reverse(*k)))
                    .map(|(k, _)| *k)
            })
            .collect();
        Ok((fill, top))
    }

    /// Can `bytes` of `category` be allocated on `dev` now? Interleaving over the category's
    /// banks and its alignment are applied as the runtime's allocator would.
    pub fn fit(&self, dev: DeviceKey, category: &str, bytes: u64) -> Result<Fit, QueryError> {
        let (cat, c) = self.address_space(dev, category)?;
        let banks = c.banks.max(1) as u64;
        let align = (c.alignment as u64).max(1);
        // `bytes` comes from a query and sizes from untrusted regions: saturate, never overflow.
        let needed = bytes.div_ceil(banks).div_ceil(align).saturating_mul(align);
        let (mut gaps, allocations) = self.gaps(dev, cat, c);
        let fragmentation = Self::summarize(&gaps, allocations);
        gaps.sort_by_key(|g| std::cmp::Reverse(g.end - g.start));
        gaps.truncate(5);
        Ok(Fit {
            fits: fragmentation.largest_free_per_bank >= needed,
            requested: bytes,
            needed_per_bank: needed,
            largest_free_per_bank: fragmentation.largest_free_per_bank,
            best_gaps: gaps,
            fragmentation,
        })
    }
}
