//! `ttmem ps`: per-chip and per-process memory, once.

use std::process::ExitCode;

use super::{Paths, out, source};
use crate::args::PsArgs;

pub fn ps(dir: &Paths, a: &PsArgs) -> anyhow::Result<ExitCode> {
    let s = source::snapshot(dir, &a.daemon)?;
    if a.json {
        out(&(serde_json::to_string_pretty(&s)? + "\n"))?;
    } else if a.csv && a.devices {
        out(&ttmem_report::render_devices_csv(&s))?;
    } else if a.csv {
        out(&ttmem_report::render_processes_csv(&s))?;
    } else {
        out(&ttmem_report::render_table(&s))?;
    }
    // Skipped regions and chips over capacity are reported on stderr too, so scripts reading
    // JSON or CSV still hear of them.
    if a.json || a.csv {
        for k in &s.skipped {
            tracing::warn!("skipped {}: {}", k.path, k.reason);
        }
        for d in s.devices.iter().filter(|d| d.over_capacity()) {
            tracing::warn!("device {} ({}) holds more than its capacity", d.id, d.name);
        }
    }
    Ok(ExitCode::SUCCESS)
}
