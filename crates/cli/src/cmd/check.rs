//! `ttmem check`: a gate for CI and health checks (exit 0 ok, 1 a limit crossed, 2 could not
//! check).

use std::process::ExitCode;

use super::{Paths, out, source};
use crate::args::CheckArgs;

/// Prints "could not check" in the form asked for; exit 2.
fn could_not_check(a: &CheckArgs, reason: &str) -> anyhow::Result<ExitCode> {
    let summary = format!("ttmem check: COULD NOT CHECK: {reason}");
    if a.json {
        out(&(serde_json::to_string_pretty(
            &serde_json::json!({ "exit_code": 2, "summary": summary, "errors": [reason] }),
        )? + "\n"))?;
    } else {
        out(&format!("{summary}\n"))?;
    }
    Ok(ExitCode::from(2))
}

pub fn check(dir: &Paths, a: &CheckArgs) -> anyhow::Result<ExitCode> {
    let snapshot = match source::snapshot(dir, &a.daemon) {
        Ok(s) => s,
        Err(e) => return could_not_check(a, &format!("{e:#}")),
    };
    if snapshot.devices.is_empty() && !a.allow_empty {
        return could_not_check(
            a,
            &format!(
                "no devices seen ({} in {}): nothing reports memory, so no limit can be checked; pass --allow-empty if an empty host is fine",
                snapshot.source, snapshot.region_dir
            ),
        );
    }
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
