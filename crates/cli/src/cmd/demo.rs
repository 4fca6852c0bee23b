//! `ttmem demo`: simulated chips, several workload processes, and a live view.

use std::io::IsTerminal;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use ttmem_model::Snapshot;
use ttmem_scan::ScanOptions;

use super::out;
use crate::args::DemoArgs;

/// The demo's processes: (profile, shape, first chip).
const WORKLOADS: [(&str, &str, u32); 5] = [
    ("llm-inference", "n300", 0),
    ("training", "n150", 2),
    ("leaky", "p150", 3),
    ("bursty", "n150", 4),
    ("crash", "n150", 5),
];

fn spawn(dir: &Path, profile: &str, shape: &str, chip: u32, seed: u64) -> anyhow::Result<Child> {
    let exe = std::env::current_exe().context("cannot find the ttmem executable")?;
    let mut cmd = Command::new(exe);
    cmd.args(["sim", "run", "--profile", profile, "--device", shape])
        .args(["--chip-offset", &chip.to_string(), "--seed", &seed.to_string()])
        .env("TTMEM_DIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if profile == "crash" {
        cmd.args(["--crash-after", &(4 + seed % 5).to_string()]);
    }
    cmd.spawn()
        .with_context(|| format!("cannot start the {profile} workload"))
}

pub fn demo(dir: &Path, a: &DemoArgs) -> anyhow::Result<ExitCode> {
    let stop = super::stop_on_signals(&[libc::SIGINT, libc::SIGTERM]);
    let mut children: Vec<(usize, Child)> = Vec::new();
    let mut pids = Vec::new();
    for (i, (profile, shape, chip)) in WORKLOADS.iter().enumerate() {
        let c = spawn(dir, profile, shape, *chip, i as u64 + 1)?;
        pids.push(c.id());
        children.push((i, c));
    }
    let start = Instant::now();
    let tty = std::io::stdout().is_terminal();
    let mut seed = 100;
    let mut next_draw = Instant::now();
    while !stop.load(Ordering::Relaxed) && !a.duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
        // Restart the crashing workload whenever it dies, so crashes keep piling up.
        for (i, child) in children.iter_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                let (profile, shape, chip) = WORKLOADS[*i];
                seed += 1;
                *child = spawn(dir, profile, shape, chip, seed)?;
                pids.push(child.id());
            }
        }
        if !a.no_view && Instant::now() >= next_draw {
            next_draw += Duration::from_millis(a.refresh_ms.max(100));
            let scan = ttmem_scan::scan(dir, ScanOptions::default())?;
            let snap = Snapshot::from_scan(&scan);
            let mut text = String::new();
            if tty {
                text += "\x1b[H\x1b[2J";
            }
            text += &format!(
                "ttmem demo: {} workload processes on simulated chips, {:.0}s (Ctrl-C to stop; `ttmem ps` in another terminal)\n\n",
                WORKLOADS.len(),
                start.elapsed().as_secs_f64()
            );
            text += &ttmem_report::render_table(&snap);
            if !tty {
                text += "\n";
            }
            out(&text)?;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    for (_, c) in children.iter_mut() {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child.
        unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
    }
    for (_, c) in children.iter_mut() {
        let _ = c.wait();
    }
    // Remove what the crashed workloads left, but only the demo's own processes.
    if let Ok(scan) = ttmem_scan::scan(dir, ScanOptions::default()) {
        for r in scan
            .regions
            .iter()
            .filter(|r| pids.contains(&r.header.pid) && r.liveness == ttmem_scan::Liveness::Exited)
        {
            let _ = std::fs::remove_file(&r.path);
        }
    }
    eprintln!("ttmem demo: stopped {} workload processes", children.len());
    Ok(ExitCode::SUCCESS)
}
