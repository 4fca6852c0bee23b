//! `ttmem bench forecast`: how right the out-of-memory forecast is, against the simulator,
//! which knows when its allocator fails. A workload is stepped on a fake clock (so an hour of
//! leak takes seconds), the collector samples its history every fake second, and the forecast
//! of chip 0's DRAM is read every second: for the leaky profile, its error at 25, 50 and 75 % of
//! the way to the failure; for profiles that do not climb, how often it said anything at all.

use std::time::Duration;

use serde::Serialize;
use ttmem_client::{Config, Tracker};
use ttmem_daemon::collector::{Collector, CollectorConfig, Now};
use ttmem_sim::chip::Shape;
use ttmem_sim::workload::{Profile, RunOptions, Workload};

use crate::BenchError;

/// What one workload's run showed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProfileRun {
    /// Chip 0's DRAM forecast (seconds to full) at every fake second.
    pub forecasts: Vec<Option<f64>>,
    /// The fake second the allocator first failed (None: it did not; a burst that failed counts).
    pub ran_out_s: Option<u64>,
    /// The fake second the built-in forecast alert (`TtmemDramFullSoon`) first fired.
    pub alert_fired_s: Option<u64>,
}

/// Steps `profile` on `shape` for `max_s` fake seconds (the leaky one only until its allocator
/// fails) through the real collector with the built-in alert rules.
pub fn run_profile(profile: Profile, shape: Shape, steps_per_s: u32, max_s: u64) -> Result<ProfileRun, BenchError> {
    let dir = crate::tempdir()?;
    let t = Tracker::new(Config {
        dir: dir.path().into(),
        ..Config::default()
    });
    let mut w = Workload::new(
        &t,
        RunOptions {
            profile,
            shape,
            ..RunOptions::default()
        },
    )
    .map_err(|e| BenchError::Setup(e.to_string()))?;
    w.setup();
    let mut c = Collector::new(
        CollectorConfig {
            retention: Duration::from_secs(60),
            ..CollectorConfig::new(dir.path().into())
        },
        0,
    );
    let mut run = ProfileRun::default();
    const S: u64 = 1_000_000_000;
    for s in 0..max_s {
        for _ in 0..steps_per_s {
            w.step();
        }
        let now = Now {
            monotonic_ns: s * S,
            unix_ns: 1_700_000_000 * S + s * S,
        };
        c.tick(now);
        if run.alert_fired_s.is_none() && c.alerts().firing().iter().any(|a| a.rule == "TtmemDramFullSoon") {
            run.alert_fired_s = Some(s);
        }
        if w.summary().oom > 0 && run.ran_out_s.is_none() {
            run.ran_out_s = Some(s);
            // The leak is done; a bursty workload's bursts fail now and then and go on.
            if profile == Profile::Leaky {
                return Ok(run);
            }
        }
        let dram = c
            .forecasts(now.unix_ns / S, 600)
            .into_iter()
            .find(|f| f.device == 0 && f.category == "DRAM");
        run.forecasts.push(dram.and_then(|f| f.time_to_full_s));
    }
    Ok(run)
}

/// One workload's result.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ForecastRun {
    /// Profile.
    pub profile: String,
    /// Board shape.
    pub shape: String,
    /// Fake second the allocator first failed.
    pub ran_out_s: Option<u64>,
    /// (share of the way, relative error of the forecast time to full) for a workload that ran
    /// out: negative means it predicted too soon.
    pub errors: Vec<(f64, f64)>,
    /// Seconds with a forecast, of those sampled (0 is right for a workload that does not climb).
    pub seconds_forecast: usize,
    /// Seconds sampled.
    pub seconds: usize,
    /// The fake second the built-in forecast alert first fired (None is right for a workload
    /// that does not climb).
    pub alert_fired_s: Option<u64>,
}

/// The whole report (`--json` prints it).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ForecastReport {
    /// Which bench.
    pub bench: String,
    /// Simulator steps per fake second.
    pub steps_per_s: u32,
    /// Runs.
    pub runs: Vec<ForecastRun>,
}

/// The runs: the leaky profile on each shape until it runs out, and the profiles that do not
/// climb for `quiet_s` fake seconds each.
pub fn forecast(
    shapes: &[Shape],
    steps_per_s: u32,
    quiet_s: u64,
    progress: &mut dyn FnMut(&str),
) -> Result<ForecastReport, BenchError> {
    let mut runs = Vec::new();
    for &shape in shapes {
        for profile in [
            Profile::Leaky,
            Profile::Bursty,
            Profile::LlmInference,
            Profile::Training,
        ] {
            progress(&format!("{} on {}", profile.name(), shape.name()));
            let max_s = if profile == Profile::Leaky { 100_000 } else { quiet_s };
            let run = run_profile(profile, shape, steps_per_s, max_s)?;
            let (forecasts, ran_out) = (&run.forecasts, run.ran_out_s);
            let errors = match (profile, ran_out) {
                (Profile::Leaky, Some(out)) => [0.25, 0.5, 0.75]
                    .iter()
                    .filter_map(|&share| {
                        let s = (out as f64 * share) as usize;
                        let actual = out as f64 - s as f64;
                        forecasts.get(s)?.map(|p| (share, (p - actual) / actual))
                    })
                    .collect(),
                _ => Vec::new(),
            };
            runs.push(ForecastRun {
                profile: profile.name().into(),
                shape: shape.name().into(),
                ran_out_s: ran_out,
                errors,
                seconds_forecast: forecasts.iter().filter(|f| f.is_some()).count(),
                seconds: forecasts.len(),
                alert_fired_s: run.alert_fired_s,
            });
        }
    }
    Ok(ForecastReport {
        bench: "forecast".into(),
        steps_per_s,
        runs,
    })
}

/// The human table.
pub fn render(report: &ForecastReport) -> String {
    let mut out = format!(
        "ttmem bench forecast (simulated, {} steps per fake second; chip 0's DRAM)\n\n",
        report.steps_per_s
    );
    out += &format!(
        "{:<14} {:<7} {:>10} {:>9} {:>9} {:>9} {:>16} {:>10}\n",
        "profile", "shape", "ran out s", "err 25%", "err 50%", "err 75%", "seconds forecast", "alert at s"
    );
    for r in &report.runs {
        let err = |share: f64| {
            r.errors
                .iter()
                .find(|(s, _)| *s == share)
                .map_or("-".to_string(), |(_, e)| format!("{:+.2}%", e * 100.0))
        };
        out += &format!(
            "{:<14} {:<7} {:>10} {:>9} {:>9} {:>9} {:>16} {:>10}\n",
            r.profile,
            r.shape,
            r.ran_out_s.map_or("-".into(), |s| s.to_string()),
            err(0.25),
            err(0.5),
            err(0.75),
            format!("{} of {}", r.seconds_forecast, r.seconds),
            r.alert_fired_s.map_or("-".into(), |s| s.to_string())
        );
    }
    out += "\nerr: (forecast time to full - actual) / actual; negative predicts too soon.\n";
    out += "alert at: when the built-in TtmemDramFullSoon alert (full within an hour, held a minute) fired.\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_forecast_of_a_leak_is_within_a_fifth_from_halfway_and_quiet_workloads_get_none() {
        let leaky = run_profile(Profile::Leaky, Shape::N150, 20, 100_000).unwrap();
        let (forecasts, ran_out) = (&leaky.forecasts, leaky.ran_out_s);
        let out = ran_out.expect("the leaky workload runs out of DRAM") as f64;
        // The alert fired before the allocator failed, within the hour the rule looks ahead.
        let fired = leaky.alert_fired_s.expect("the forecast alert fired") as f64;
        assert!(
            fired < out && out - fired <= 3600.0 + 60.0,
            "fired at {fired}, ran out at {out}"
        );
        for share in [0.5, 0.75] {
            let s = (out * share) as usize;
            let predicted = forecasts[s].unwrap_or_else(|| panic!("no forecast at {share}"));
            let error = (predicted - (out - s as f64)) / (out - s as f64);
            assert!(error.abs() <= 0.2, "at {share}: {error}");
        }
        for profile in [Profile::Bursty, Profile::LlmInference] {
            let run = run_profile(profile, Shape::N150, 20, 100).unwrap();
            assert_eq!(run.alert_fired_s, None, "{}", profile.name());
            let forecasts = run.forecasts;
            assert!(forecasts.len() >= 90, "{}", profile.name());
            assert!(
                forecasts.iter().all(Option::is_none),
                "{}: {forecasts:?}",
                profile.name()
            );
        }
    }
}
