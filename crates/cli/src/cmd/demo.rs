//! `ttmem demo`: simulated chips, several workload processes (`ttmem_sim::fleet`), and a live
//! view of them.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use ttmem_model::Snapshot;
use ttmem_scan::ScanOptions;
use ttmem_sim::fleet::{DEMO, Fleet};

use super::{Paths, out};
use crate::args::DemoArgs;

pub fn demo(dir: &Paths, a: &DemoArgs) -> anyhow::Result<ExitCode> {
    let stop = super::stop_on_signals(&[libc::SIGINT, libc::SIGTERM]);
    let exe = std::env::current_exe().context("cannot find the ttmem executable")?;
    let mut fleet = Fleet::start(&exe, &dir.path, &DEMO)?;
    let start = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut next_draw = Instant::now();
    let result = (|| -> anyhow::Result<()> {
        while !stop.load(Ordering::Relaxed) && !a.duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
            // Restart the crashing workload whenever it dies, so crashes keep piling up.
            fleet.restart_exited()?;
            if !a.no_view && Instant::now() >= next_draw {
                next_draw += Duration::from_millis(a.refresh_ms.max(100));
                let scan = ttmem_scan::scan(&dir.path, ScanOptions::default())?;
                let mut text = String::new();
                if tty {
                    text += "\x1b[H\x1b[2J";
                }
                text += &format!(
                    "ttmem demo: {} workload processes on simulated chips, {:.0}s (Ctrl-C to stop; `ttmem ps` in another terminal)\n\n",
                    fleet.len(),
                    start.elapsed().as_secs_f64()
                );
                text += &ttmem_report::render_table(&Snapshot::from_scan(&scan));
                if !tty {
                    text += "\n";
                }
                out(&text)?;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    })();
    let stopped = fleet.stop();
    eprintln!("ttmem demo: stopped {stopped} workload processes");
    result.map(|()| ExitCode::SUCCESS)
}
