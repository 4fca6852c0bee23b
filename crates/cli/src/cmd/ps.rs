//! `ttmem ps`, `ttmem info`, `ttmem gc`: one-shot readers of the regions.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use ttmem_report::Snapshot;
use ttmem_scan::ScanOptions;

use super::{out, shown};
use crate::args::{GcArgs, InfoArgs, PsArgs};

fn snapshot(dir: &Path) -> anyhow::Result<Snapshot> {
    let scan = ttmem_scan::scan(dir, ScanOptions::default())
        .with_context(|| format!("cannot read region directory {}", shown(dir).display()))?;
    Ok(Snapshot::from_scan(&scan))
}

pub fn ps(dir: &Path, a: &PsArgs) -> anyhow::Result<ExitCode> {
    let s = snapshot(dir)?;
    if a.json {
        out(&(serde_json::to_string_pretty(&s)? + "\n"))?;
    } else if a.csv && a.devices {
        out(&ttmem_report::render_devices_csv(&s))?;
    } else if a.csv {
        out(&ttmem_report::render_processes_csv(&s))?;
    } else {
        out(&ttmem_report::render_table(&s))?;
    }
    // Skipped regions are reported on stderr too, so scripts reading JSON still hear of them.
    if a.json || a.csv {
        for k in &s.skipped {
            tracing::warn!("skipped {}: {}", k.path, k.reason);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn info(dir: &Path, a: &InfoArgs) -> anyhow::Result<ExitCode> {
    let mut s = snapshot(dir)?;
    // Devices of running processes only: a health check asks what is there now.
    let live: std::collections::BTreeSet<u32> = s
        .processes
        .iter()
        .filter(|p| p.state == "running")
        .flat_map(|p| p.devices.iter().map(|d| d.id))
        .collect();
    s.devices.retain(|d| live.contains(&d.id));
    if a.json {
        out(&(serde_json::to_string_pretty(
            &serde_json::json!({ "schema": ttmem_report::SCHEMA_VERSION, "devices": s.devices }),
        )? + "\n"))?;
    } else if !s.devices.is_empty() {
        out(&ttmem_report::render_info(&s))?;
    }
    if s.devices.is_empty() {
        eprintln!(
            "ttmem info: no devices: no running process reports to ttmem in {}",
            dir.display()
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn gc(dir: &Path, a: &GcArgs) -> anyhow::Result<ExitCode> {
    let done = ttmem_scan::gc(dir, a.dry_run, a.invalid)
        .with_context(|| format!("cannot read region directory {}", dir.display()))?;
    let mut text = String::new();
    let mut failed = false;
    for c in &done {
        let verb = if a.dry_run {
            "would remove"
        } else if c.removed {
            "removed"
        } else {
            "could not remove"
        };
        text += &format!("{verb} {}: {}", c.path.display(), c.reason);
        if let Some(e) = &c.error {
            failed = true;
            text += &format!(" ({e})");
        }
        text += "\n";
    }
    if done.is_empty() {
        text += "nothing to remove\n";
    }
    out(&text)?;
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
