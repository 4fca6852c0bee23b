//! `ttmem bench`.

use std::process::ExitCode;

use super::out;
use crate::args::BenchCommand;

pub fn bench(b: BenchCommand) -> anyhow::Result<ExitCode> {
    match b {
        BenchCommand::Producer(a) => {
            let opts = ttmem_bench::Options {
                samples: a.samples.max(10),
                batch: a.batch.max(1),
                threads: a.threads.max(1),
            };
            let quiet = a.json;
            let report = ttmem_bench::producer(opts, &mut |step| {
                if !quiet {
                    eprintln!("measuring: {step}");
                }
            })?;
            if a.json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                out(&ttmem_bench::render(&report))?;
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Daemon(a) => {
            let quiet = a.json;
            let report = ttmem_bench::daemon::daemon(a.allocations.max(1), &mut |step| {
                if !quiet {
                    eprintln!("measuring: {step}");
                }
            })?;
            if a.json {
                out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
            } else {
                out(&ttmem_bench::render(&report))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
