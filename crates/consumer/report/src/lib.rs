//! The renderings of a [`Snapshot`] (the model is `ttmem-model`'s): the `ps` table and CSV,
//! `info`, `watch`'s frame, and `check`'s verdict. Pure functions of their input, tested with
//! insta snapshots; JSON is serde's rendering of the model itself.

#![deny(missing_docs)]

pub mod alerts;
pub mod check;
pub mod clock;

use std::fmt::Write as _;

use ttmem_model::{DeviceRow, ProcessDevice, Snapshot};

pub use ttmem_model::short_bytes;

fn pad(s: &str, w: usize) -> String {
    format!("{s:<w$}")
}

/// The human table: one row per device, then one row per process × device.
pub fn render_table(s: &Snapshot) -> String {
    let mut out = String::new();
    let running = s.running().count();
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
                        "{:>5}/{:<5}{:>4.0}%{}",
                        short_bytes(x.used),
                        short_bytes(x.total),
                        100.0 * x.used as f64 / x.total as f64,
                        if x.used > x.total { "!" } else { "" }
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
                        pad(&p.id.pid.to_string(), 8),
                        pad(&truncate(&p.id.user, 9), 10),
                        pad(&truncate(&p.id.name, 15), 16),
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
            if !p.holds.is_empty() {
                let _ = writeln!(
                    out,
                    "{}holds {}, memory unknown (no source reports it)",
                    pad("", 8),
                    p.holds.join(", ")
                );
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
    for n in &s.notes {
        let _ = writeln!(out, "note: {n}");
    }
    for d in s.devices.iter().filter(|d| d.over_capacity()) {
        let _ = writeln!(
            out,
            "! device {} ({}) holds more than its capacity: more than one process uses the chip, or its declared capacity is wrong.",
            d.id, d.name
        );
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

/// `s` cut to `n` characters, the last one a `~` when something was cut.
pub fn truncate(s: &str, n: usize) -> String {
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
                    p.id.pid,
                    p.id.start_time,
                    csv_field(&p.id.user),
                    csv_field(&p.id.name),
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
            "device {}: {} {} ({}{}) hw_id {} used by {} process{}{}",
            d.id,
            d.name,
            d.arch,
            d.kind,
            if d.remote { ", remote" } else { "" },
            d.hw_id,
            d.processes,
            if d.processes == 1 { "" } else { "es" },
            if d.over_capacity() { " (OVER CAPACITY)" } else { "" }
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
        "  {name:<13} {:>9} / {:<9} {on}[{bar}]{off} {:>5.1}%{}\n",
        short_bytes(used),
        total_text,
        pct,
        if total > 0 && used > total {
            " OVER CAPACITY"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests;
