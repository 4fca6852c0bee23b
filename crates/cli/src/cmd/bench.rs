//! `ttmem bench`.

use std::process::ExitCode;

use super::out;
use crate::args::BenchCommand;

pub fn bench(b: BenchCommand) -> anyhow::Result<ExitCode> {
    let json = match &b {
        BenchCommand::Producer(a) => a.json,
        BenchCommand::Daemon(a) => a.json,
        BenchCommand::Legacy(a) => a.json,
        BenchCommand::Ttmetal(a) => a.json,
        BenchCommand::Load(a) => a.json,
        BenchCommand::LoadWorker(_) => true,
        BenchCommand::Forecast(a) => a.json,
    };
    // Progress goes to stderr, and not at all when the output is JSON for a script.
    let mut progress = |step: &str| {
        if !json {
            eprintln!("measuring: {step}");
        }
    };
    let report = match b {
        BenchCommand::Producer(a) => ttmem_bench::producer(
            ttmem_bench::Options {
                samples: a.samples.max(10),
                batch: a.batch.max(1),
                threads: a.threads.max(1),
            },
            &mut progress,
        )?,
        BenchCommand::Daemon(a) => ttmem_bench::daemon::daemon(a.allocations.max(1), a.samples.max(1), &mut progress)?,
        BenchCommand::Legacy(a) => ttmem_bench::legacy::legacy(
            &std::env::current_exe()?,
            ttmem_bench::legacy::LegacyOptions {
                pairs: a.pairs.max(1),
                samples: a.samples.max(1),
            },
            &mut progress,
        )?,
        BenchCommand::Forecast(a) => {
            let mut shapes = Vec::new();
            for name in &a.shapes {
                shapes.push(
                    ttmem_sim::chip::Shape::parse(name)
                        .ok_or_else(|| anyhow::anyhow!("unknown shape {name:?} (n150, n300, p150, t3000, galaxy)"))?,
                );
            }
            let report =
                ttmem_bench::forecast::forecast(&shapes, a.steps_per_s.max(1), a.quiet_s.max(20), &mut progress)?;
            if json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                out(&ttmem_bench::forecast::render(&report))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::LoadWorker(a) => {
            let written = ttmem_bench::load::worker(a.rate, a.seconds.max(0.0), a.index)?;
            out(&format!("{written}\n"))?;
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Load(a) => {
            let me = std::env::current_exe()?;
            let report = ttmem_bench::load::load(
                &me,
                a.daemon_bin.as_deref().unwrap_or(&me),
                ttmem_bench::load::LoadOptions {
                    processes: a.processes.max(1),
                    rates: a.rates,
                    seconds: a.seconds.clamp(0.5, 3600.0),
                    stop_at_loss: !a.all,
                },
                &mut progress,
            )?;
            if json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                out(&ttmem_bench::load::render(&report))?;
            }
            return Ok(ExitCode::SUCCESS);
        }
        BenchCommand::Ttmetal(a) => ttmem_bench::ttmetal::ttmetal(
            &std::env::current_exe()?,
            ttmem_bench::ttmetal::TtMetalOptions {
                pairs: a.pairs,
                samples: a.samples,
                rounds: a.rounds,
            },
            &mut progress,
        )?,
    };
    if json {
        out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    } else {
        out(&ttmem_bench::render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}
