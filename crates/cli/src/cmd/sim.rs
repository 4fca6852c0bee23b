//! `ttmem sim`: one simulated workload process, and the list of shapes and profiles.

use std::process::ExitCode;
use std::time::Duration;

use ttmem_client::{Config, Tracker};
use ttmem_sim::allocator::Policy;
use ttmem_sim::chip::Shape;
use ttmem_sim::workload::{self, Profile, RunOptions};

use super::{Paths, out};
use crate::args::{PolicyArg, SimListArgs, SimRunArgs};

pub fn run(dir: &Paths, a: &SimRunArgs) -> anyhow::Result<ExitCode> {
    let env = Config::from_env();
    let name = env
        .process_name
        .clone()
        .unwrap_or_else(|| format!("sim:{}", a.profile.name()));
    let tracker = Tracker::new(Config {
        dir: dir.path.clone(),
        process_name: Some(name),
        ..env
    });
    let secs = |s: f64| Duration::try_from_secs_f64(s.max(0.0)).unwrap_or(Duration::MAX);
    let opts = RunOptions {
        profile: a.profile,
        shape: a.shape,
        chip_offset: a.chip_offset,
        duration: a.duration.map(secs),
        hold_after_steps: a.hold_after,
        report_every: a.report_ms.map(|ms| Duration::from_millis(ms.max(1))),
        step_interval: Duration::from_millis(a.step_ms),
        crash_after: secs(a.crash_after),
        seed: a.seed,
        policy: match a.policy {
            PolicyArg::FirstFit => Policy::FirstFit,
            PolicyArg::BestFit => Policy::BestFit,
        },
        stop: super::stop_on_signals(&[libc::SIGINT, libc::SIGTERM]),
    };
    let mut stdout = std::io::stdout();
    workload::run(&tracker, opts, &mut stdout)?;
    Ok(ExitCode::SUCCESS)
}

pub fn list(a: &SimListArgs) -> anyhow::Result<ExitCode> {
    if a.json {
        let shapes: Vec<serde_json::Value> = Shape::ALL
            .iter()
            .map(|s| {
                let chips: Vec<serde_json::Value> = s
                    .chips()
                    .iter()
                    .map(|(arch, name, remote)| serde_json::json!({ "arch": arch.name(), "name": name, "remote": remote }))
                    .collect();
                serde_json::json!({ "name": s.name(), "chips": chips })
            })
            .collect();
        let profiles: Vec<&str> = Profile::ALL.iter().map(|p| p.name()).collect();
        out(&(serde_json::to_string_pretty(&serde_json::json!({ "shapes": shapes, "profiles": profiles }))? + "\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = String::from("device shapes:\n");
    for s in Shape::ALL {
        let chips = s.chips();
        text += &format!(
            "  {:<8} {} chip{} ({})\n",
            s.name(),
            chips.len(),
            if chips.len() == 1 { "" } else { "s" },
            chips[0].0.name()
        );
    }
    text += "workload profiles:\n";
    for p in Profile::ALL {
        text += &format!("  {}\n", p.name());
    }
    out(&text)?;
    Ok(ExitCode::SUCCESS)
}
