//! The system snapshot behind `ttmem ps` and `ttmem info`, and its renderings.
//!
//! [`Snapshot::from_scan`] turns decoded regions into per-device and per-process rows; the
//! renderers ([`render_table`], [`render_devices_csv`], [`render_processes_csv`], and serde
//! JSON) are pure functions of it. The JSON form is a stable interface (schema 1, documented in
//! `docs/ps-json.md`); the daemon's API will answer with the same objects.

#![deny(missing_docs)]

pub mod check;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use ttmem_scan::{Liveness, ProcessRegion, Scan};

/// Version of the JSON schema. Bumped only for incompatible changes; fields may be added.
pub const SCHEMA_VERSION: u32 = 1;

/// One category of one device: used against total.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceCategory {
    /// Category name as the device declared it.
    pub name: String,
    /// Bytes held by running processes.
    pub used: u64,
    /// Allocatable bytes (0: unknown).
    pub total: u64,
    /// Live allocations held by running processes.
    pub count: u64,
}

/// One device (chip), system-wide.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceRow {
    /// Host-wide id: devices sorted by kind and hardware id.
    pub id: u32,
    /// Stable hardware id, hex (`0x…`; `pid:N/index:M` when the runtime gave none).
    pub hw_id: String,
    /// Device kind (`tt`, `tt-sim`, `cuda`, …).
    pub kind: String,
    /// Architecture.
    pub arch: String,
    /// Display name.
    pub name: String,
    /// A remote chip.
    pub remote: bool,
    /// Per category, in declaration order.
    pub categories: Vec<DeviceCategory>,
    /// Running processes using it.
    pub processes: u32,
}

/// One category of one device in one process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessCategory {
    /// Category name.
    pub name: String,
    /// Live bytes (for an exited process: left behind).
    pub bytes: u64,
    /// Live allocations.
    pub count: u64,
    /// Peak live bytes.
    pub peak: u64,
    /// Allocations ever.
    pub allocs: u64,
    /// Frees ever.
    pub frees: u64,
}

/// One device as one process uses it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessDevice {
    /// The host-wide device id ([`DeviceRow::id`]).
    pub id: u32,
    /// Hardware id.
    pub hw_id: String,
    /// Display name.
    pub name: String,
    /// The process's logical id for it.
    pub logical_id: i32,
    /// Per category.
    pub categories: Vec<ProcessCategory>,
}

/// Event ring figures of one process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct EventStats {
    /// Events written.
    pub written: u64,
    /// Events lost before an attached reader read them.
    pub lost: u64,
    /// Ring capacity per thread.
    pub ring_capacity: u32,
}

/// One process.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ProcessRow {
    /// Process id.
    pub pid: u32,
    /// Start time, clock ticks since boot (with `pid`, the identity).
    pub start_time: u64,
    /// User id.
    pub uid: u32,
    /// User name (or the uid as text).
    pub user: String,
    /// Executable name.
    pub name: String,
    /// Command line.
    pub cmdline: String,
    /// `running` or `exited`.
    pub state: String,
    /// An exited process that still held memory when it died.
    pub left_behind: bool,
    /// Seconds since the process registered (wall clock at region creation).
    pub age_s: f64,
    /// Per device.
    pub devices: Vec<ProcessDevice>,
    /// Sum over devices per category name.
    pub totals: Vec<ProcessCategory>,
    /// Sum over devices and categories of the peaks (an upper bound of the combined peak).
    pub peak_bytes: u64,
    /// Ring figures.
    pub events: EventStats,
    /// Calls naming an unregistered device or category.
    pub rejected: u64,
    /// The region file.
    pub region: String,
    /// Ids of the devices it uses; with the daemon's `?detail=totals`, `devices` is left out and
    /// only this remains.
    #[serde(default)]
    pub device_ids: Vec<u32>,
}

/// A region that could not be used.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SkippedRegion {
    /// The file.
    pub path: String,
    /// Why.
    pub reason: String,
}

/// Everything `ttmem ps` shows.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Snapshot {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Where the data came from (`regions` without a daemon).
    pub source: String,
    /// The region directory read.
    pub region_dir: String,
    /// Wall clock of the snapshot, ns since the epoch.
    pub timestamp_ns: u64,
    /// Devices.
    pub devices: Vec<DeviceRow>,
    /// Processes, running first, then exited; by pid.
    pub processes: Vec<ProcessRow>,
    /// Regions skipped.
    pub skipped: Vec<SkippedRegion>,
    /// Regions of other users this user may not read.
    #[serde(default)]
    pub not_permitted: usize,
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What numbers a device: (kind, hardware id) for devices with one, shared by every process
/// that uses the chip; (kind, 0, pid, index) for those without, which stay per process.
pub type DeviceIdentity = (u32, u64, u32, u32);

/// The identity of device `index` of process `pid`.
pub fn device_identity(pid: u32, index: u32, d: &ttmem_region::decode::Device) -> DeviceIdentity {
    if d.hw_id != 0 {
        (d.kind.code(), d.hw_id, 0, 0)
    } else {
        (d.kind.code(), 0, pid, index)
    }
}

/// Every device the regions declare, in id order (a device's id is its position), with its
/// hardware id as shown and its first declaration. The one rule for numbering devices: `ps`,
/// the API and the legacy protocol all use it.
pub fn device_table<'a>(
    regions: impl IntoIterator<Item = &'a ProcessRegion>,
) -> BTreeMap<DeviceIdentity, (String, &'a ttmem_region::decode::Device)> {
    let mut keys = BTreeMap::new();
    for r in regions {
        for d in &r.devices {
            let k = device_identity(r.header.pid, d.index, &d.device);
            keys.entry(k).or_insert_with(|| {
                let hw = if d.device.hw_id != 0 {
                    format!("{:#x}", d.device.hw_id)
                } else {
                    format!("pid:{}/index:{}", r.header.pid, d.index)
                };
                (hw, &d.device)
            });
        }
    }
    keys
}

impl Snapshot {
    /// Builds the snapshot from scanned regions. Device usage counts running processes only: a
    /// dead process's memory is no longer on the device, it is shown as left behind.
    pub fn from_scan(scan: &Scan) -> Snapshot {
        Self::from_scan_at(scan, now_ns())
    }

    /// Like [`Snapshot::from_scan`] at a given wall clock (for reproducible output).
    pub fn from_scan_at(scan: &Scan, now_ns: u64) -> Snapshot {
        let keys = device_table(&scan.regions);
        let key_of = device_identity;
        let ids: BTreeMap<_, u32> = keys.keys().enumerate().map(|(i, k)| (*k, i as u32)).collect();
        let mut devices: Vec<DeviceRow> = keys
            .iter()
            .map(|(k, (hw, d))| DeviceRow {
                id: ids[k],
                hw_id: hw.clone(),
                kind: d.kind.name(),
                arch: d.arch.clone(),
                name: d.name.clone(),
                remote: d.flags & ttmem_region::DEVICE_FLAG_REMOTE != 0,
                categories: d
                    .categories
                    .iter()
                    .map(|c| DeviceCategory {
                        name: c.name.clone(),
                        used: 0,
                        total: c.capacity,
                        count: 0,
                    })
                    .collect(),
                processes: 0,
            })
            .collect();

        let mut processes = Vec::new();
        for r in &scan.regions {
            let h = &r.header;
            let running = r.liveness == Liveness::Running;
            let mut pdevs = Vec::new();
            let mut totals: Vec<ProcessCategory> = Vec::new();
            let mut peak = 0u64;
            for d in &r.devices {
                let id = ids[&key_of(h.pid, d.index, &d.device)];
                let row = &mut devices[id as usize];
                let mut cats = Vec::new();
                for (c, desc) in d.counters.iter().zip(&d.device.categories) {
                    let pc = ProcessCategory {
                        name: desc.name.clone(),
                        bytes: c.live_bytes.max(0) as u64,
                        count: c.live_count.max(0) as u64,
                        peak: c.peak_bytes.max(0) as u64,
                        allocs: c.allocs,
                        frees: c.frees,
                    };
                    peak = peak.saturating_add(pc.peak);
                    if running && let Some(dc) = row.categories.iter_mut().find(|x| x.name == pc.name) {
                        dc.used = dc.used.saturating_add(pc.bytes);
                        dc.count = dc.count.saturating_add(pc.count);
                    }
                    match totals.iter_mut().find(|t| t.name == pc.name) {
                        Some(t) => {
                            // Counters come from untrusted regions: never overflow on them.
                            t.bytes = t.bytes.saturating_add(pc.bytes);
                            t.count = t.count.saturating_add(pc.count);
                            t.peak = t.peak.saturating_add(pc.peak);
                            t.allocs = t.allocs.saturating_add(pc.allocs);
                            t.frees = t.frees.saturating_add(pc.frees);
                        }
                        None => totals.push(pc.clone()),
                    }
                    cats.push(pc);
                }
                if running && d.counters.iter().any(|c| c.is_touched()) {
                    row.processes += 1;
                }
                pdevs.push(ProcessDevice {
                    id,
                    hw_id: row.hw_id.clone(),
                    name: row.name.clone(),
                    logical_id: d.device.logical_id,
                    categories: cats,
                });
            }
            let holds = totals.iter().any(|t| t.bytes > 0);
            processes.push(ProcessRow {
                pid: h.pid,
                start_time: h.start_time,
                uid: h.uid,
                user: ttmem_scan::user_name(h.uid).unwrap_or_else(|| h.uid.to_string()),
                name: h.exe.clone(),
                cmdline: h.cmdline.clone(),
                state: if running { "running" } else { "exited" }.into(),
                left_behind: !running && holds,
                age_s: now_ns.saturating_sub(h.clock_realtime_ns) as f64 / 1e9,
                devices: pdevs,
                totals,
                peak_bytes: peak,
                events: EventStats {
                    written: r.events_written(),
                    lost: r.events_lost(),
                    ring_capacity: h.geometry.ring_events,
                },
                rejected: r.rejected(),
                region: r.path.display().to_string(),
                device_ids: Vec::new(),
            });
        }
        for p in &mut processes {
            p.device_ids = p.devices.iter().map(|d| d.id).collect();
        }
        processes.sort_by_key(|p| (p.state != "running", p.pid, p.start_time));
        Snapshot {
            schema: SCHEMA_VERSION,
            source: "regions".into(),
            region_dir: scan.dir.display().to_string(),
            timestamp_ns: now_ns,
            devices,
            processes,
            skipped: scan
                .skipped
                .iter()
                .map(|s| SkippedRegion {
                    path: s.path.display().to_string(),
                    reason: s.reason.clone(),
                })
                .collect(),
            not_permitted: scan.not_permitted,
        }
    }

    /// Category names to show as columns: those any device or process uses, plus each device's
    /// first two (DRAM and L1 for TT), in declaration order.
    pub fn columns(&self) -> Vec<String> {
        let mut cols: Vec<String> = Vec::new();
        let mut add = |n: &str| {
            if !cols.iter().any(|c| c == n) {
                cols.push(n.to_string());
            }
        };
        for d in &self.devices {
            for (i, c) in d.categories.iter().enumerate() {
                let used_anywhere = c.used > 0
                    || self.processes.iter().any(|p| {
                        p.devices
                            .iter()
                            .any(|pd| pd.id == d.id && pd.categories.iter().any(|pc| pc.name == c.name && pc.bytes > 0))
                    });
                if i < 2 || used_anywhere {
                    add(&c.name);
                }
            }
        }
        cols
    }
}

/// Bytes in short binary units (`512B`, `1.5K`, `10.5G`).
pub fn short_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else if v >= 100.0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn pad(s: &str, w: usize) -> String {
    format!("{s:<w$}")
}

/// The human table: one row per device, then one row per process × device.
pub fn render_table(s: &Snapshot) -> String {
    let mut out = String::new();
    let running = s.processes.iter().filter(|p| p.state == "running").count();
    let _ = writeln!(
        out,
        "ttmem ps: {} device{}, {} process{} ({} running, {} exited); source: {} in {}",
        s.devices.len(),
        if s.devices.len() == 1 { "" } else { "s" },
        s.processes.len(),
        if s.processes.len() == 1 { "" } else { "es" },
        running,
        s.processes.len() - running,
        s.source,
        s.region_dir
    );
    let cols = s.columns();
    if s.devices.is_empty() {
        let _ = writeln!(
            out,
            "\nNo devices: no process has reported to ttmem in {}.",
            s.region_dir
        );
    } else {
        let _ = write!(out, "\n{}{}{}", pad("ID", 4), pad("DEVICE", 10), pad("ARCH", 13));
        for c in &cols {
            let _ = write!(out, "{}", pad(c, 18));
        }
        let _ = writeln!(out, "PROCS");
        for d in &s.devices {
            let _ = write!(
                out,
                "{}{}{}",
                pad(&d.id.to_string(), 4),
                pad(&d.name, 10),
                pad(&d.arch, 13)
            );
            for c in &cols {
                let cell = match d.categories.iter().find(|x| &x.name == c) {
                    Some(x) if x.total > 0 => format!(
                        "{:>5}/{:<5}{:>4.0}%",
                        short_bytes(x.used),
                        short_bytes(x.total),
                        100.0 * x.used as f64 / x.total as f64
                    ),
                    Some(x) => short_bytes(x.used),
                    None => "-".into(),
                };
                let _ = write!(out, "{}", pad(&cell, 18));
            }
            let _ = writeln!(out, "{}", d.processes);
        }
    }
    if !s.processes.is_empty() {
        let _ = write!(
            out,
            "\n{}{}{}{}{}",
            pad("PID", 8),
            pad("USER", 10),
            pad("NAME", 16),
            pad("STATE", 14),
            pad("DEV", 5)
        );
        for c in &cols {
            let _ = write!(out, "{}", pad(c, 10));
        }
        let _ = writeln!(out, "PEAK");
        for p in &s.processes {
            let state = if p.left_behind { "exited*" } else { p.state.as_str() };
            let mut first = true;
            let rows: Vec<Option<&ProcessDevice>> = if p.devices.is_empty() {
                vec![None]
            } else {
                p.devices.iter().map(Some).collect()
            };
            for pd in rows {
                if first {
                    let _ = write!(
                        out,
                        "{}{}{}{}",
                        pad(&p.pid.to_string(), 8),
                        pad(&truncate(&p.user, 9), 10),
                        pad(&truncate(&p.name, 15), 16),
                        pad(state, 14)
                    );
                } else {
                    let _ = write!(out, "{}", pad("", 48));
                }
                let _ = write!(out, "{}", pad(&pd.map(|d| d.id.to_string()).unwrap_or("-".into()), 5));
                for c in &cols {
                    let v = pd
                        .and_then(|d| d.categories.iter().find(|x| &x.name == c))
                        .map(|x| short_bytes(x.bytes))
                        .unwrap_or("-".into());
                    let _ = write!(out, "{}", pad(&v, 10));
                }
                let _ = writeln!(
                    out,
                    "{}",
                    if first {
                        short_bytes(p.peak_bytes)
                    } else {
                        String::new()
                    }
                    .trim_end()
                );
                first = false;
            }
        }
        if s.processes.iter().any(|p| p.left_behind) {
            let _ = writeln!(
                out,
                "\n* exited while holding memory: the bytes shown were left behind at exit (ttmem gc removes the record)."
            );
        }
        if s.processes.iter().any(|p| p.events.lost > 0) {
            let _ = writeln!(
                out,
                "Some processes lost ring events (a reader fell behind); their counters are still exact."
            );
        }
    }
    for k in &s.skipped {
        let _ = writeln!(out, "skipped {}: {}", k.path, k.reason);
    }
    if s.not_permitted > 0 {
        let _ = writeln!(
            out,
            "{} region{} of other users {} not readable by you: run as root to see every process.",
            s.not_permitted,
            if s.not_permitted == 1 { "" } else { "s" },
            if s.not_permitted == 1 { "is" } else { "are" }
        );
    }
    out
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n.saturating_sub(1)).chain(['~']).collect()
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Devices as CSV, one row per device × category.
pub fn render_devices_csv(s: &Snapshot) -> String {
    let mut out = String::from("device_id,hw_id,kind,arch,name,remote,category,used,total,count,processes\n");
    for d in &s.devices {
        for c in &d.categories {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{},{},{},{},{},{}",
                d.id,
                csv_field(&d.hw_id),
                csv_field(&d.kind),
                csv_field(&d.arch),
                csv_field(&d.name),
                d.remote,
                csv_field(&c.name),
                c.used,
                c.total,
                c.count,
                d.processes
            );
        }
    }
    out
}

/// Processes as CSV, one row per process × device × category.
pub fn render_processes_csv(s: &Snapshot) -> String {
    let mut out = String::from(
        "pid,start_time,user,name,state,left_behind,device_id,hw_id,device_name,category,bytes,count,peak,allocs,frees\n",
    );
    for p in &s.processes {
        for d in &p.devices {
            for c in &d.categories {
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    p.pid,
                    p.start_time,
                    csv_field(&p.user),
                    csv_field(&p.name),
                    p.state,
                    p.left_behind,
                    d.id,
                    csv_field(&d.hw_id),
                    csv_field(&d.name),
                    csv_field(&c.name),
                    c.bytes,
                    c.count,
                    c.peak,
                    c.allocs,
                    c.frees
                );
            }
        }
    }
    out
}

/// The `ttmem info` text: devices with arch and capacities.
pub fn render_info(s: &Snapshot) -> String {
    let mut out = String::new();
    for d in &s.devices {
        let _ = writeln!(
            out,
            "device {}: {} {} ({}{}) hw_id {} used by {} process{}",
            d.id,
            d.name,
            d.arch,
            d.kind,
            if d.remote { ", remote" } else { "" },
            d.hw_id,
            d.processes,
            if d.processes == 1 { "" } else { "es" }
        );
        for c in &d.categories {
            let _ = writeln!(
                out,
                "  {:<14} {:>10} total  {:>10} used",
                c.name,
                short_bytes(c.total),
                short_bytes(c.used)
            );
        }
    }
    out
}

/// Which devices `ttmem watch` draws.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchDevices {
    /// Every device.
    All,
    /// These ids, in this order.
    Ids(Vec<u32>),
}

/// One `ttmem watch` frame: the old allocation monitor's screen (per device, each category as
/// `used / total [bar] pct%`, red from 90 %, yellow from 75 %) with every category that holds
/// memory and a per-device total. DRAM and L1 are always drawn; `color` adds ANSI colours.
pub fn render_watch(devices: &[DeviceRow], which: &WatchDevices, color: bool, header: &str) -> String {
    const BAR: usize = 30;
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let chosen: Vec<(u32, Option<&DeviceRow>)> = match which {
        WatchDevices::All => devices.iter().map(|d| (d.id, Some(d))).collect(),
        WatchDevices::Ids(ids) => ids
            .iter()
            .map(|&id| (id, devices.iter().find(|d| d.id == id)))
            .collect(),
    };
    if chosen.is_empty() {
        let _ = writeln!(out, "\nNo devices: no process has reported memory yet.");
    }
    for (id, d) in chosen {
        let _ = writeln!(out);
        let Some(d) = d else {
            let _ = writeln!(out, "Device {id}: not present");
            continue;
        };
        let _ = writeln!(
            out,
            "Device {}: {} ({}, {}) · {} process{}",
            d.id,
            d.name,
            d.arch,
            d.kind,
            d.processes,
            if d.processes == 1 { "" } else { "es" }
        );
        let (mut used, mut total) = (0u64, 0u64);
        for c in &d.categories {
            used = used.saturating_add(c.used);
            total = total.saturating_add(c.total);
            if c.used == 0 && c.name != "DRAM" && c.name != "L1" {
                continue;
            }
            out.push_str(&watch_line(&c.name, c.used, c.total, BAR, color));
        }
        out.push_str(&watch_line("Total", used, total, BAR, color));
    }
    out
}

fn watch_line(name: &str, used: u64, total: u64, width: usize, color: bool) -> String {
    let pct = if total == 0 {
        0.0
    } else {
        used as f64 * 100.0 / total as f64
    };
    let filled = ((pct / 100.0) * width as f64).round().clamp(0.0, width as f64) as usize;
    let bar = format!("{}{}", "█".repeat(filled), "░".repeat(width - filled));
    let (on, off) = match (color, pct) {
        (false, _) => ("", ""),
        (true, p) if p >= 90.0 => ("\x1b[31m", "\x1b[0m"),
        (true, p) if p >= 75.0 => ("\x1b[33m", "\x1b[0m"),
        (true, _) => ("\x1b[32m", "\x1b[0m"),
    };
    let total_text = if total == 0 {
        "?".to_string()
    } else {
        short_bytes(total)
    };
    format!(
        "  {name:<13} {:>9} / {:<9} {on}[{bar}]{off} {:>5.1}%\n",
        short_bytes(used),
        total_text,
        pct
    )
}

#[cfg(test)]
mod tests;
