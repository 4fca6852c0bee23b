//! The one counters view every source fills, the one device-numbering rule, and the one
//! snapshot builder that reads them.
//!
//! A source (a region read by `ps`, a region the daemon drains, a legacy socket client) keeps
//! one [`ProcessView`] per process: who it is, whether it runs, and its exact counters per
//! device and category. [`DeviceTable`] numbers every device those views declare and sums their
//! use; [`Snapshot::build`] turns the views into schema-1 rows. Nothing here reads a file.

use std::collections::BTreeMap;

use ttmem_region::decode;
pub use ttmem_scan::DeviceCounters;
use ttmem_scan::{Liveness, ProcessRegion, Scan};

use crate::snapshot::{
    DeviceCategory, DeviceRow, EventStats, ProcState, ProcessCategory, ProcessDevice, ProcessIdentity, ProcessRow,
    SCHEMA_VERSION, SkippedRegion, Snapshot, SourceKind,
};

/// One process as its source sees it: identity, state, and exact counters per device.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessView {
    /// Who it is (the user name looked up once by the source).
    pub id: ProcessIdentity,
    /// Wall clock when it started reporting, ns since the epoch (ages count from it).
    pub started_unix_ns: u64,
    /// Running or exited.
    pub state: ProcState,
    /// Which source reports it.
    pub source: SourceKind,
    /// Where the figures are read from (region file, legacy socket path).
    pub origin: String,
    /// Devices with exact counters per declared category.
    pub devices: Vec<DeviceCounters>,
    /// Event ring figures (zero for sources without a ring).
    pub events: EventStats,
    /// Calls naming an unregistered device or category.
    pub rejected: u64,
    /// Devices it holds open whose memory no source reports (`/dev/tenstorrent/N`).
    pub holds: Vec<String>,
    /// When its source last updated its figures (TT-Metal's counter files record it).
    pub updated_unix_ns: Option<u64>,
}

impl ProcessView {
    /// The view of a region read from its file, with the user name given by the caller (a
    /// lookup the caller does once, since the view is rebuilt often).
    pub fn from_region(r: &ProcessRegion, user: String) -> ProcessView {
        let h = &r.header;
        ProcessView {
            id: ProcessIdentity {
                pid: h.pid,
                start_time: h.start_time,
                uid: h.uid,
                user,
                name: h.exe.clone(),
                cmdline: h.cmdline.clone(),
            },
            started_unix_ns: h.clock_realtime_ns,
            state: match r.liveness {
                Liveness::Running => ProcState::Running,
                Liveness::Exited => ProcState::Exited,
            },
            source: SourceKind::Region,
            origin: r.path.display().to_string(),
            devices: r.devices.clone(),
            events: EventStats {
                written: r.events_written(),
                lost: r.events_lost(),
                ring_capacity: h.geometry.ring_events,
            },
            rejected: r.rejected(),
            holds: Vec::new(),
            updated_unix_ns: None,
        }
    }

    /// The identity of each of its devices.
    pub fn identities(&self) -> impl Iterator<Item = (DeviceIdentity, &DeviceCounters)> {
        self.devices
            .iter()
            .map(|d| (DeviceIdentity::of(self.id.pid, d.index, &d.device), d))
    }
}

/// What numbers a device: (kind, hardware id) for devices with one, shared by every process
/// that uses the chip; (kind, 0, pid, index) for those without, which stay per process.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceIdentity {
    kind: u32,
    hw_id: u64,
    pid: u32,
    index: u32,
}

impl DeviceIdentity {
    /// The identity of device `index` of process `pid`.
    pub fn of(pid: u32, index: u32, d: &decode::Device) -> DeviceIdentity {
        if d.hw_id != 0 {
            DeviceIdentity::chip(d.kind.code(), d.hw_id)
        } else {
            DeviceIdentity {
                kind: d.kind.code(),
                hw_id: 0,
                pid,
                index,
            }
        }
    }

    /// The identity of a chip known by its hardware id (`hw_id` not 0).
    pub fn chip(kind: u32, hw_id: u64) -> DeviceIdentity {
        DeviceIdentity {
            kind,
            hw_id,
            pid: 0,
            index: 0,
        }
    }

    /// The hardware id as shown: hex, or `pid:N/index:M` for a device without one.
    pub fn hw_text(&self) -> String {
        if self.hw_id != 0 {
            format!("{:#x}", self.hw_id)
        } else {
            format!("pid:{}/index:{}", self.pid, self.index)
        }
    }
}

/// The history series name of a device: `kind:hw_id` as shown (stable across daemon restarts,
/// unlike the device's id, which moves when devices come and go).
pub fn series_device(kind: &str, hw_text: &str) -> String {
    format!("{kind}:{hw_text}")
}

struct TableEntry {
    identity: DeviceIdentity,
    hw_text: String,
    device: decode::Device,
    /// Per declared category of `device`: (bytes, allocations) over running processes.
    used: Vec<(u64, u64)>,
    processes: u32,
    sources: Vec<SourceKind>,
}

/// How much a declaration says about a chip: a known architecture and known capacities beat
/// a counter file's bare chip id.
fn richness(d: &decode::Device) -> (bool, u64) {
    (
        d.arch != crate::sources::UNKNOWN_ARCH,
        d.categories.iter().fold(0u64, |a, c| a.saturating_add(c.capacity)),
    )
}

/// Every device the views declare, numbered by the one rule (`ps`, the API, history and the
/// legacy protocol all use it): sorted by identity, a device's id is its position, and its
/// first declaration describes it. Use is summed over running processes only: a dead
/// process's memory is no longer on the device, it is shown as left behind.
pub struct DeviceTable {
    entries: Vec<TableEntry>,
    ids: BTreeMap<DeviceIdentity, u32>,
}

impl DeviceTable {
    /// Numbers the devices of `views` and sums their use.
    pub fn new<'a>(views: impl IntoIterator<Item = &'a ProcessView>) -> DeviceTable {
        DeviceTable::with_chips(views, &[])
    }

    /// Like [`DeviceTable::new`], also listing `chips` that a source knows with no process on
    /// them (TT-Metal's counter files outlive their processes).
    pub fn with_chips<'a>(
        views: impl IntoIterator<Item = &'a ProcessView>,
        chips: &'a [(decode::Device, SourceKind)],
    ) -> DeviceTable {
        let views: Vec<&ProcessView> = views.into_iter().collect();
        // The richest declaration describes a device (the first of equals).
        let mut first: BTreeMap<DeviceIdentity, &decode::Device> = BTreeMap::new();
        let mut sources: BTreeMap<DeviceIdentity, Vec<SourceKind>> = BTreeMap::new();
        for (d, source) in chips.iter().filter(|(d, _)| d.hw_id != 0) {
            let k = DeviceIdentity::chip(d.kind.code(), d.hw_id);
            let e = first.entry(k).or_insert(d);
            if richness(d) > richness(e) {
                *e = d;
            }
            let s = sources.entry(k).or_default();
            if !s.contains(source) {
                s.push(*source);
            }
        }
        for v in &views {
            for (k, d) in v.identities() {
                let e = first.entry(k).or_insert(&d.device);
                if richness(&d.device) > richness(e) {
                    *e = &d.device;
                }
                let s = sources.entry(k).or_default();
                if !s.contains(&v.source) {
                    s.push(v.source);
                }
            }
        }
        let ids: BTreeMap<DeviceIdentity, u32> = first.keys().enumerate().map(|(i, k)| (*k, i as u32)).collect();
        let mut entries: Vec<TableEntry> = first
            .into_iter()
            .map(|(identity, device)| TableEntry {
                identity,
                hw_text: identity.hw_text(),
                used: vec![(0, 0); device.categories.len()],
                device: device.clone(),
                processes: 0,
                sources: {
                    let mut s = sources.remove(&identity).unwrap_or_default();
                    s.sort_by_key(|k| k.rank());
                    s
                },
            })
            .collect();
        for v in views.iter().filter(|v| v.state.is_running()) {
            for (k, d) in v.identities() {
                let e = &mut entries[ids[&k] as usize];
                for (c, desc) in d.counters.iter().zip(&d.device.categories) {
                    if let Some(i) = e.device.categories.iter().position(|x| x.name == desc.name) {
                        let u = &mut e.used[i];
                        u.0 = u.0.saturating_add(c.live_bytes.max(0) as u64);
                        u.1 = u.1.saturating_add(c.live_count.max(0) as u64);
                    }
                }
                if d.counters.iter().any(|c| c.is_touched() || c.live_bytes > 0) {
                    e.processes += 1;
                }
            }
        }
        DeviceTable { entries, ids }
    }

    /// Devices in the table.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no view declares a device.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The id of a device.
    pub fn id_of(&self, identity: &DeviceIdentity) -> Option<u32> {
        self.ids.get(identity).copied()
    }

    /// The identity of an id.
    pub fn identity(&self, id: u32) -> Option<DeviceIdentity> {
        self.entries.get(id as usize).map(|e| e.identity)
    }

    /// Identities in id order.
    pub fn identities(&self) -> impl Iterator<Item = DeviceIdentity> + '_ {
        self.entries.iter().map(|e| e.identity)
    }

    /// The device as first declared.
    pub fn device(&self, id: u32) -> Option<&decode::Device> {
        self.entries.get(id as usize).map(|e| &e.device)
    }

    /// Bytes of category `name` that running processes hold on device `id`.
    pub fn used(&self, id: u32, name: &str) -> u64 {
        self.entries.get(id as usize).map_or(0, |e| {
            e.device
                .categories
                .iter()
                .zip(&e.used)
                .filter(|(c, _)| c.name == name)
                .map(|(_, u)| u.0)
                .sum()
        })
    }

    /// The history series name of device `id` ([`series_device`]).
    pub fn series_name(&self, id: u32) -> Option<String> {
        self.entries
            .get(id as usize)
            .map(|e| series_device(&e.device.kind.name(), &e.hw_text))
    }

    /// The device rows, in id order.
    pub fn rows(&self) -> Vec<DeviceRow> {
        self.entries
            .iter()
            .enumerate()
            .map(|(id, e)| DeviceRow {
                id: id as u32,
                hw_id: e.hw_text.clone(),
                kind: e.device.kind.name(),
                arch: e.device.arch.clone(),
                name: e.device.name.clone(),
                remote: e.device.flags & ttmem_region::DEVICE_FLAG_REMOTE != 0,
                categories: e
                    .device
                    .categories
                    .iter()
                    .zip(&e.used)
                    .map(|(c, u)| DeviceCategory {
                        name: c.name.clone(),
                        used: u.0,
                        total: c.capacity,
                        count: u.1,
                    })
                    .collect(),
                processes: e.processes,
                sources: e.sources.clone(),
            })
            .collect()
    }

    /// One process's row, its devices numbered by this table, ages counted to `now_ns`.
    pub fn process_row(&self, v: &ProcessView, now_ns: u64) -> ProcessRow {
        let mut devices = Vec::with_capacity(v.devices.len());
        let mut totals: Vec<ProcessCategory> = Vec::new();
        let mut peak = 0u64;
        for (k, d) in v.identities() {
            let id = self.id_of(&k).unwrap_or(u32::MAX);
            let categories: Vec<ProcessCategory> = d
                .counters
                .iter()
                .zip(&d.device.categories)
                .map(|(c, desc)| ProcessCategory {
                    name: desc.name.clone(),
                    bytes: c.live_bytes.max(0) as u64,
                    count: c.live_count.max(0) as u64,
                    peak: c.peak_bytes.max(0) as u64,
                    allocs: c.allocs,
                    frees: c.frees,
                })
                .collect();
            for pc in &categories {
                peak = peak.saturating_add(pc.peak);
                match totals.iter_mut().find(|t| t.name == pc.name) {
                    Some(t) => t.accumulate(pc),
                    None => totals.push(pc.clone()),
                }
            }
            let entry = self.entries.get(id as usize);
            devices.push(ProcessDevice {
                id,
                hw_id: entry.map_or_else(|| k.hw_text(), |e| e.hw_text.clone()),
                name: entry.map_or_else(|| d.device.name.clone(), |e| e.device.name.clone()),
                logical_id: d.device.logical_id,
                categories,
            });
        }
        let holds = totals.iter().any(|t| t.bytes > 0);
        ProcessRow {
            id: v.id.clone(),
            state: v.state,
            left_behind: !v.state.is_running() && holds,
            age_s: now_ns.saturating_sub(v.started_unix_ns) as f64 / 1e9,
            device_ids: devices.iter().map(|d| d.id).collect(),
            devices,
            totals,
            peak_bytes: peak,
            events: v.events.clone(),
            rejected: v.rejected,
            region: v.origin.clone(),
            source: v.source,
            holds: v.holds.clone(),
            updated_unix_ns: v.updated_unix_ns,
        }
    }
}

/// What a snapshot says about where it came from.
#[derive(Clone, Debug, Default)]
pub struct SnapshotMeta {
    /// `regions` or `daemon`.
    pub source: String,
    /// The region directory.
    pub region_dir: String,
    /// Wall clock, ns since the epoch.
    pub timestamp_ns: u64,
    /// Regions that could not be used.
    pub skipped: Vec<SkippedRegion>,
    /// Regions of other users this user may not read.
    pub not_permitted: usize,
    /// Notes from the sources ([`Snapshot::notes`]).
    pub notes: Vec<String>,
    /// Chips a source knows with no process on them ([`DeviceTable::with_chips`]).
    pub chips: Vec<(decode::Device, SourceKind)>,
}

impl Snapshot {
    /// The one snapshot builder: devices numbered by [`DeviceTable`], processes running first,
    /// then exited, by pid.
    pub fn build<'a>(views: impl IntoIterator<Item = &'a ProcessView>, meta: SnapshotMeta) -> Snapshot {
        let views: Vec<&ProcessView> = views.into_iter().collect();
        let table = DeviceTable::with_chips(views.iter().copied(), &meta.chips);
        let mut processes: Vec<ProcessRow> = views.iter().map(|v| table.process_row(v, meta.timestamp_ns)).collect();
        processes.sort_by_key(|p| (!p.state.is_running(), p.id.pid, p.id.start_time));
        Snapshot {
            schema: SCHEMA_VERSION,
            source: meta.source,
            region_dir: meta.region_dir,
            timestamp_ns: meta.timestamp_ns,
            devices: table.rows(),
            processes,
            skipped: meta.skipped,
            not_permitted: meta.not_permitted,
            notes: meta.notes,
        }
    }
}

impl Snapshot {
    /// The snapshot of regions read from a directory (no daemon), ages counted to now. Looks up
    /// each process's user name.
    pub fn from_scan(scan: &Scan) -> Snapshot {
        Self::from_scan_at(scan, crate::now_ns())
    }

    /// Like [`Snapshot::from_scan`] at a given wall clock (for reproducible output).
    pub fn from_scan_at(scan: &Scan, now_ns: u64) -> Snapshot {
        let proc = ttmem_ttmetal::proc::ProcRoot::new(std::path::Path::new(ttmem_ttmetal::DEFAULT_PROC_ROOT));
        Snapshot::from_sources(scan, None, &[], &proc, now_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttmem_region::DeviceKind;

    fn device(hw_id: u64, cats: &[(&str, u64)]) -> decode::Device {
        decode::Device {
            kind: DeviceKind::SimulatedTenstorrent,
            hw_id,
            logical_id: 0,
            flags: 0,
            arch: "wormhole_b0".into(),
            name: "n150".into(),
            categories: cats
                .iter()
                .map(|(n, cap)| decode::Category {
                    name: (*n).into(),
                    capacity: *cap,
                    addr_base: 0,
                    addr_end: 0,
                    banks: 1,
                    alignment: 0,
                })
                .collect(),
        }
    }

    fn counters(bytes: i64) -> decode::Counters {
        decode::Counters {
            live_bytes: bytes,
            live_count: 1,
            allocs: 1,
            peak_bytes: bytes,
            ..decode::Counters::default()
        }
    }

    fn view(pid: u32, state: ProcState, devices: Vec<(u64, i64)>) -> ProcessView {
        ProcessView {
            id: ProcessIdentity {
                pid,
                start_time: 7,
                uid: 0,
                user: "root".into(),
                name: format!("p{pid}"),
                cmdline: String::new(),
            },
            started_unix_ns: 1_000_000_000,
            state,
            source: SourceKind::Region,
            origin: "x".into(),
            devices: devices
                .into_iter()
                .enumerate()
                .map(|(i, (hw, bytes))| DeviceCounters {
                    index: i as u32,
                    device: device(hw, &[("DRAM", 100), ("L1", 10)]),
                    counters: vec![counters(bytes), decode::Counters::default()],
                })
                .collect(),
            events: EventStats::default(),
            rejected: 0,
            holds: Vec::new(),
            updated_unix_ns: None,
        }
    }

    #[test]
    fn a_chip_shared_by_processes_is_one_device_and_only_running_use_counts() {
        let views = [
            view(2, ProcState::Running, vec![(0xb, 30)]),
            view(1, ProcState::Running, vec![(0xa, 10), (0xb, 20)]),
            view(3, ProcState::Exited, vec![(0xb, 40)]),
            view(4, ProcState::Running, vec![(0, 5)]),
        ];
        let s = Snapshot::build(
            &views,
            SnapshotMeta {
                timestamp_ns: 3_000_000_000,
                ..Default::default()
            },
        );
        let ids: Vec<&str> = s.devices.iter().map(|d| d.hw_id.as_str()).collect();
        assert_eq!(ids, ["pid:4/index:0", "0xa", "0xb"]);
        let b = &s.devices[2];
        assert_eq!((b.categories[0].used, b.categories[0].count, b.processes), (50, 2, 2));
        let pids: Vec<(u32, ProcState)> = s.processes.iter().map(|p| (p.id.pid, p.state)).collect();
        assert_eq!(
            pids,
            [
                (1, ProcState::Running),
                (2, ProcState::Running),
                (4, ProcState::Running),
                (3, ProcState::Exited)
            ]
        );
        let dead = &s.processes[3];
        assert!(dead.left_behind);
        assert_eq!((dead.device_ids.as_slice(), dead.totals[0].bytes), ([2].as_slice(), 40));
        assert_eq!(s.processes[0].age_s, 2.0);
        assert_eq!(s.processes[0].peak_bytes, 30);
    }

    #[test]
    fn over_capacity_is_flagged() {
        let views = [
            view(1, ProcState::Running, vec![(0xa, 60)]),
            view(2, ProcState::Running, vec![(0xa, 50)]),
        ];
        let s = Snapshot::build(&views, SnapshotMeta::default());
        assert!(s.devices[0].over_capacity());
        let one = Snapshot::build(&views[..1], SnapshotMeta::default());
        assert!(!one.devices[0].over_capacity());
    }

    #[test]
    fn state_and_source_serialize_as_schema_1_words() {
        let s = Snapshot::build(&[view(1, ProcState::Exited, vec![])], SnapshotMeta::default());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["processes"][0]["state"], "exited");
        assert_eq!(v["processes"][0]["source"], "region");
        // A schema-1 reader's older object, without `source`, still reads.
        let mut old = v["processes"][0].clone();
        old.as_object_mut().unwrap().remove("source");
        let row: ProcessRow = serde_json::from_value(old).unwrap();
        assert_eq!(row.source, SourceKind::Region);
    }
}
