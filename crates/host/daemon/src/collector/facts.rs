//! What alert rules are evaluated over, answered from the collector: the snapshot's chips and
//! processes (whatever source reported them: regions, the legacy socket, TT-Metal's counter
//! files, the preload), the history's series, and the ledger's free space.

use std::collections::BTreeMap;

use ttmem_alerts::{ChipCategory, Facts, FreeSpace, ProcessFacts};
use ttmem_history::forecast::Trend;
use ttmem_ledger::DeviceKey;
use ttmem_model::{DeviceTable, Snapshot};

use super::{Collector, series_key};

/// The collector at one moment, as the alert engine asks about it.
pub struct CollectorFacts<'a> {
    c: &'a Collector,
    snapshot: Snapshot,
    table: DeviceTable,
    ledger_of: BTreeMap<u32, DeviceKey>,
    now_s: u64,
}

impl<'a> CollectorFacts<'a> {
    /// The facts at `unix_ns`.
    pub fn new(c: &'a Collector, unix_ns: u64) -> CollectorFacts<'a> {
        let (views, notes) = c.merged_views();
        let table = c.table_of(&views);
        CollectorFacts {
            c,
            snapshot: c.snapshot_of(&views, notes, unix_ns),
            ledger_of: c.ledger_devices(&table),
            table,
            now_s: unix_ns / 1_000_000_000,
        }
    }

    fn trend(&self, device: u32, category: &str, process: Option<(u32, u64)>, window_s: u64) -> Option<Trend> {
        let key = series_key(&self.table, device, category, process)?;
        let from_s = self.now_s.saturating_sub(window_s);
        let points = self.c.history.query(&key, 0, from_s, self.now_s);
        ttmem_history::forecast::trend(&points, from_s, self.now_s, 1)
    }
}

impl Facts for CollectorFacts<'_> {
    fn chips(&self) -> Vec<ChipCategory> {
        self.snapshot
            .devices
            .iter()
            .flat_map(|d| {
                d.categories.iter().map(|c| ChipCategory {
                    device: d.id,
                    hw_id: d.hw_id.clone(),
                    category: c.name.clone(),
                    used: c.used,
                    capacity: c.total,
                })
            })
            .collect()
    }

    fn processes(&self) -> Vec<ProcessFacts> {
        self.snapshot
            .processes
            .iter()
            .map(|p| ProcessFacts {
                pid: p.id.pid,
                start_time: p.id.start_time,
                comm: p.id.name.clone(),
                user: p.id.user.clone(),
                running: p.state.is_running(),
                events_lost: p.events.lost,
                left_behind_bytes: if p.state.is_running() {
                    0
                } else {
                    p.totals.iter().map(|t| t.bytes).sum()
                },
                holdings: p
                    .devices
                    .iter()
                    .flat_map(|d| {
                        d.categories
                            .iter()
                            .filter(|c| c.bytes > 0)
                            .map(move |c| (d.id, c.name.clone()))
                    })
                    .collect(),
            })
            .collect()
    }

    fn chip_trend(&self, device: u32, category: &str, window_s: u64) -> Option<Trend> {
        self.trend(device, category, None, window_s)
    }

    fn process_trend(&self, pid: u32, start_time: u64, device: u32, category: &str, window_s: u64) -> Option<Trend> {
        self.trend(device, category, Some((pid, start_time)), window_s)
    }

    fn free_space(&self, device: u32, category: &str) -> Option<FreeSpace> {
        let f = self
            .c
            .ledger
            .fragmentation(*self.ledger_of.get(&device)?, category)
            .ok()?;
        Some(FreeSpace {
            free_per_bank: f.free_per_bank,
            largest_free_per_bank: f.largest_free_per_bank,
        })
    }
}
