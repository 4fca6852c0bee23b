//! `ttmem info`: the devices running processes use, with arch and capacities.

use std::process::ExitCode;

use super::{Paths, out, source};
use crate::args::InfoArgs;

pub fn info(dir: &Paths, a: &InfoArgs) -> anyhow::Result<ExitCode> {
    let mut s = source::snapshot(dir, &a.daemon)?;
    // Devices of running processes only: a health check asks what is there now.
    let live: std::collections::BTreeSet<u32> = s.running().flat_map(|p| p.device_ids.iter().copied()).collect();
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
            "ttmem info: no devices: no running process reports to ttmem ({} in {})",
            s.source, s.region_dir
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
