//! Reading the ledger: process states and totals, the flight recorder, pages of live
//! allocations and leak suspects.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{DeviceKey, Entry, Ledger, LedgerStats, ProcKey, ProcState, QueryError, RecentEvent, Totals};

/// How to order a process's allocations.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum SortBy {
    /// Device, category, address ascending.
    Address,
    /// Largest first.
    Size,
    /// Oldest first.
    Age,
}

/// One allocation in a listing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Owner.
    pub process: ProcKey,
    /// Device.
    pub device: DeviceKey,
    /// Category name.
    pub category: String,
    /// Address.
    pub address: u64,
    /// Bytes.
    pub size: u64,
    /// Age in seconds at the time asked.
    pub age_s: u64,
    /// Tag text, if any.
    pub tag: Option<String>,
}

/// A page of allocations.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// Allocations matching, in total.
    pub total: u64,
    /// Offset of the first item.
    pub offset: u64,
    /// The items.
    pub items: Vec<Allocation>,
}

/// How far a process's detail can be trusted (its exact totals come from its counters, not
/// from here).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completeness {
    /// Events lost before they were read: allocations made before `detail_since_ns` are not
    /// listed (they may have been freed by a lost event).
    pub lost: u64,
    /// Frees that matched no listed allocation (allocated before tracking began, or dropped).
    pub unmatched_frees: u64,
    /// `CLOCK_MONOTONIC` ns from which the detail is complete again (None: it always was).
    pub detail_since_ns: Option<u64>,
}

impl Completeness {
    /// Whether every live allocation of the process is listed (no event was lost, and no
    /// misbehaving writer made the reader drop its detail).
    pub fn is_complete(&self) -> bool {
        self.lost == 0 && self.detail_since_ns.is_none()
    }
}

impl Ledger {
    /// Processes and their states.
    pub fn processes(&self) -> impl Iterator<Item = (ProcKey, ProcState)> + '_ {
        self.procs.iter().map(|(&k, p)| (k, p.state))
    }

    /// A process's state.
    pub fn state(&self, proc: ProcKey) -> Option<ProcState> {
        self.procs.get(&proc).map(|p| p.state)
    }

    /// A process's totals per (device, category).
    pub fn process_totals(&self, proc: ProcKey) -> Vec<(DeviceKey, u8, Totals)> {
        let mut v: Vec<_> = self
            .procs
            .get(&proc)
            .map(|p| p.buckets.iter().map(|(&(d, c), b)| (d, c, b.totals)).collect())
            .unwrap_or_default();
        v.sort_by_key(|&(d, c, _)| (d, c));
        v
    }

    /// Live allocations a process has in the ledger (what it left behind, once it exited).
    pub fn live_count(&self, proc: ProcKey) -> u64 {
        self.procs
            .get(&proc)
            .map_or(0, |p| p.buckets.values().map(|b| b.live.len() as u64).sum())
    }

    /// How far a process's detail can be trusted: events lost, frees that matched nothing, and
    /// since when the detail holds (after a loss).
    pub fn completeness(&self, proc: ProcKey) -> Option<Completeness> {
        self.procs.get(&proc).map(|p| Completeness {
            lost: p.lost,
            unmatched_frees: p.unmatched_frees,
            detail_since_ns: p.detail_since_ns,
        })
    }

    /// A process's flight recorder, oldest first.
    pub fn recent(&self, proc: ProcKey) -> Option<&VecDeque<RecentEvent>> {
        self.procs.get(&proc).map(|p| &p.recent)
    }

    /// Tag text of a process's tag id.
    pub fn tag(&self, proc: ProcKey, tag: u32) -> Option<&str> {
        self.procs.get(&proc)?.tags.get(&tag).map(|s| &**s)
    }

    /// Ledger-wide counters.
    pub fn stats(&self) -> LedgerStats {
        self.stats
    }

    /// Live allocations of every process.
    pub fn live_allocations(&self) -> u64 {
        self.procs
            .values()
            .flat_map(|p| p.buckets.values())
            .map(|b| b.live.len() as u64)
            .sum()
    }

    /// Bytes of memory the ledger's allocation maps hold (capacity × slot size, plus control
    /// bytes): what "daemon bytes per live allocation" measures.
    pub fn map_bytes(&self) -> u64 {
        let slot = (std::mem::size_of::<u64>() + std::mem::size_of::<Entry>()) as u64;
        self.procs
            .values()
            .flat_map(|p| p.buckets.values())
            .map(|b| {
                let cap = b.live.capacity() as u64;
                // hashbrown: buckets = next power of two of cap * 8 / 7; one control byte each.
                let buckets = if cap == 0 { 0 } else { (cap * 8 / 7).next_power_of_two() };
                buckets * (slot + 1)
            })
            .sum()
    }

    fn category_name(&self, dev: DeviceKey, cat: u8) -> String {
        self.devices
            .get(dev.index())
            .and_then(|(i, _)| i.categories.get(cat as usize))
            .map(|c| c.name.clone())
            .unwrap_or_else(|| format!("#{cat}"))
    }

    fn to_allocation(
        &self,
        proc: ProcKey,
        dev: DeviceKey,
        cat: u8,
        address: u64,
        e: &Entry,
        now_ns: u64,
    ) -> Allocation {
        Allocation {
            process: proc,
            device: dev,
            category: self.category_name(dev, cat),
            address,
            size: e.size,
            age_s: self.time_s(now_ns).saturating_sub(e.time_s) as u64,
            tag: if e.tag == 0 {
                None
            } else {
                self.tag(proc, e.tag).map(str::to_string)
            },
        }
    }

    /// One page of a process's live allocations. Selects the page in O(n) before sorting only
    /// the page, so the first page of a million allocations stays fast.
    pub fn allocations(
        &self,
        proc: ProcKey,
        sort: SortBy,
        offset: u64,
        limit: u64,
        now_ns: u64,
    ) -> Result<Page, QueryError> {
        let p = self.procs.get(&proc).ok_or(QueryError::UnknownProcess(proc))?;
        let mut all: Vec<(DeviceKey, u8, u64, Entry)> =
            Vec::with_capacity(p.buckets.values().map(|b| b.live.len()).sum());
        for (&(d, c), b) in &p.buckets {
            all.extend(b.live.iter().map(|(&a, &e)| (d, c, a, e)));
        }
        let total = all.len() as u64;
        let key = |x: &(DeviceKey, u8, u64, Entry)| -> (u64, u64, u64) {
            match sort {
                SortBy::Address => (((x.0.0 as u64) << 8) | x.1 as u64, x.2, 0),
                SortBy::Size => (u64::MAX - x.3.size, ((x.0.0 as u64) << 8) | x.1 as u64, x.2),
                SortBy::Age => (x.3.time_s as u64, ((x.0.0 as u64) << 8) | x.1 as u64, x.2),
            }
        };
        let start = offset.min(total) as usize;
        let end = offset.saturating_add(limit).min(total) as usize;
        if end < all.len() && end > 0 {
            all.select_nth_unstable_by_key(end, key);
            all.truncate(end);
        }
        all.sort_unstable_by_key(key);
        let items = all[start.min(all.len())..end.min(all.len())]
            .iter()
            .map(|(d, c, a, e)| self.to_allocation(proc, *d, *c, *a, e, now_ns))
            .collect();
        Ok(Page { total, offset, items })
    }

    /// Live allocations of running processes older than `min_age_s`, oldest first.
    pub fn leak_suspects(&self, min_age_s: u64, limit: usize, now_ns: u64) -> Vec<Allocation> {
        let now_s = self.time_s(now_ns) as u64;
        let mut v: Vec<(ProcKey, DeviceKey, u8, u64, Entry)> = Vec::new();
        for (&pk, p) in self.procs.iter().filter(|(_, p)| p.state == ProcState::Running) {
            for (&(d, c), b) in &p.buckets {
                v.extend(
                    b.live
                        .iter()
                        .filter(|(_, e)| now_s.saturating_sub(e.time_s as u64) >= min_age_s)
                        .map(|(&a, &e)| (pk, d, c, a, e)),
                );
            }
        }
        let key = |x: &(ProcKey, DeviceKey, u8, u64, Entry)| (x.4.time_s, x.0, x.3);
        if limit < v.len() {
            v.select_nth_unstable_by_key(limit, key);
            v.truncate(limit);
        }
        v.sort_unstable_by_key(key);
        v.iter()
            .map(|(p, d, c, a, e)| self.to_allocation(*p, *d, *c, *a, e, now_ns))
            .collect()
    }
}
