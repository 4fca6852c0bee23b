//! `ttmem ps`, `ttmem info`, `ttmem gc`: one-shot readers of the regions.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use ttmem_model::Snapshot;
use ttmem_scan::ScanOptions;

use super::{out, shown};
use crate::args::{CheckArgs, DaemonArgs, GcArgs, InfoArgs, PsArgs};

/// The daemon endpoint the flags name (or the default socket).
pub fn endpoint(d: &DaemonArgs) -> anyhow::Result<ttmem_apiclient::Endpoint> {
    Ok(match (&d.url, &d.api_socket) {
        (Some(url), _) => ttmem_apiclient::Endpoint::parse(url)?,
        (None, Some(p)) => ttmem_apiclient::Endpoint::Unix(p.clone()),
        (None, None) => ttmem_apiclient::Endpoint::Unix(ttmem_daemon::Config::default_api_socket()),
    })
}

/// The snapshot from the daemon when one answers for this region directory, else read from
/// the regions directly.
fn snapshot_via(dir: &Path, daemon: Option<&DaemonArgs>) -> anyhow::Result<Snapshot> {
    if let Some(d) = daemon.filter(|d| !d.no_daemon) {
        let ep = endpoint(d)?;
        match ttmem_apiclient::get_json::<Snapshot>(&ep, "/api/v1/snapshot") {
            Ok(s) if Path::new(&s.region_dir) == dir => return Ok(s),
            Ok(s) => tracing::info!(
                "the daemon at {ep} watches {}, not {}; reading regions",
                s.region_dir,
                dir.display()
            ),
            Err(ttmem_apiclient::ApiError::NotRunning(_)) => {}
            Err(e) => tracing::warn!("{e}; reading regions directly"),
        }
    }
    let scan = ttmem_scan::scan(dir, ScanOptions::default())
        .with_context(|| format!("cannot read region directory {}", shown(dir).display()))?;
    Ok(Snapshot::from_scan(&scan))
}

fn snapshot(dir: &Path) -> anyhow::Result<Snapshot> {
    snapshot_via(dir, None)
}

pub fn ps(dir: &Path, a: &PsArgs) -> anyhow::Result<ExitCode> {
    let s = snapshot_via(dir, Some(&a.daemon))?;
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
        .filter(|p| p.state.is_running())
        .flat_map(|p| p.devices.iter().map(|d| d.id))
        .collect();
    s.devices.retain(|d| live.contains(&d.id));
    if a.json {
        out(&(serde_json::to_string_pretty(
            &serde_json::json!({ "schema": ttmem_model::SCHEMA_VERSION, "devices": s.devices }),
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

pub fn check(dir: &Path, a: &CheckArgs) -> anyhow::Result<ExitCode> {
    let snapshot = match snapshot_via(dir, Some(&a.daemon)) {
        Ok(s) => s,
        Err(e) => {
            // Could not check at all: exit 2 with the reason, in the form asked for.
            let reason = format!("{e:#}");
            if a.json {
                out(&(serde_json::to_string_pretty(
                    &serde_json::json!({ "exit_code": 2, "summary": format!("ttmem check: COULD NOT CHECK: {reason}"), "errors": [reason] }),
                )? + "\n"))?;
            } else {
                out(&format!("ttmem check: COULD NOT CHECK: {reason}\n"))?;
            }
            return Ok(ExitCode::from(2));
        }
    };
    let checks = ttmem_report::check::Checks {
        limits: a.max.clone(),
        no_leaks: a.no_leaks,
        require_devices: a.require_devices,
    };
    let report = ttmem_report::check::check(&snapshot, &checks);
    if a.json {
        out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        out(&format!("{}\n", report.summary))?;
    }
    Ok(ExitCode::from(report.exit_code))
}
