//! `ttmem gc`: remove regions left by processes that no longer run.

use std::process::ExitCode;

use anyhow::Context;

use super::{Paths, out};
use crate::args::GcArgs;

pub fn gc(dir: &Paths, a: &GcArgs) -> anyhow::Result<ExitCode> {
    let done = ttmem_scan::gc(&dir.path, a.dry_run, a.invalid)
        .with_context(|| format!("cannot read region directory {}", dir.path.display()))?;
    let failed = done.iter().any(|c| c.error.is_some());
    if a.json {
        let files: Vec<serde_json::Value> = done
            .iter()
            .map(|c| {
                serde_json::json!({
                    "path": c.path.display().to_string(),
                    "reason": c.reason,
                    "removed": c.removed,
                    "error": c.error,
                })
            })
            .collect();
        out(&(serde_json::to_string_pretty(&serde_json::json!({
            "schema": ttmem_model::SCHEMA_VERSION,
            "dry_run": a.dry_run,
            "files": files,
        }))? + "\n"))?;
    } else {
        let mut text = String::new();
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
                text += &format!(" ({e})");
            }
            text += "\n";
        }
        if done.is_empty() {
            text += "nothing to remove\n";
        }
        out(&text)?;
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
