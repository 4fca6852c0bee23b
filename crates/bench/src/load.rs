//! `ttmem bench load`: a real `ttmem serve` under N writer processes that each report R events
//! per second for T seconds through the client's default ring. Per offered rate: events lost,
//! the daemon's CPU and memory, and how long an allocation takes to show in the API.
//!
//! Writers are this binary again (`ttmem bench load-worker`), so each is a separate process
//! with its own region, as real runtimes are. The latency probe is the bench process itself: it
//! allocates one marked buffer, then asks the API for its own allocations until the buffer is
//! listed.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use ttmem_apiclient::Endpoint;
use ttmem_client::{Config, DeviceSpec, Tracker, tt};
use ttmem_model::api::{AllocationPage, Stats};
use ttmem_region::DeviceKind;

use crate::BenchError;

/// What to offer the daemon.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// Writer processes.
    pub processes: u32,
    /// Events per second per process, one run each, in this order.
    pub rates: Vec<u64>,
    /// Seconds per run.
    pub seconds: f64,
    /// Stop after the first run that lost events.
    pub stop_at_loss: bool,
}

/// One run's figures.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LoadRun {
    /// Writer processes.
    pub processes: u32,
    /// Events per second each was asked to write.
    pub rate_per_process: u64,
    /// Events per second all wrote, as measured.
    pub offered_per_s: f64,
    /// Events written.
    pub written: u64,
    /// Events the daemon lost (overwritten before it read them).
    pub lost: u64,
    /// `lost / written`, in percent.
    pub lost_pct: f64,
    /// The daemon's CPU time over the run, in percent of one core.
    pub daemon_cpu_pct: f64,
    /// The daemon's resident memory at the end, in MiB.
    pub daemon_rss_mib: f64,
    /// The daemon's peak resident memory, in MiB.
    pub daemon_peak_rss_mib: f64,
    /// From `alloc` until the API lists the allocation: median, in ms.
    pub visible_p50_ms: f64,
    /// The same, 99th percentile.
    pub visible_p99_ms: f64,
    /// Probes taken.
    pub probes: usize,
    /// One `GET /metrics` at the end of the run, under the same state: median of 10, in ms
    /// (the request over the Unix socket included).
    pub metrics_scrape_ms: f64,
}

/// The whole report (`--json` prints it).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct LoadReport {
    /// Which bench.
    pub bench: String,
    /// Logical CPUs of the machine (writers and the daemon share them).
    pub cpus: usize,
    /// Events per ring (the client's default unless `TTMEM_RING_EVENTS` says otherwise).
    pub ring_events: u32,
    /// Runs, in the order taken.
    pub runs: Vec<LoadRun>,
}

/// Buffers each writer keeps live; every event allocates one or frees the oldest.
const LIVE_PER_WRITER: usize = 64;

/// The writer: `rate` events per second for `seconds`, written in 1 ms steps, then prints how
/// many it wrote. Its region goes where `TTMEM_DIR` says.
pub fn worker(rate: u64, seconds: f64, index: u32) -> Result<u64, BenchError> {
    let t = Tracker::new(Config::from_env());
    let spec = DeviceSpec::tenstorrent(
        DeviceKind::SimulatedTenstorrent,
        0x10AD_0000 + index as u64,
        0,
        "wormhole_b0",
        "bench-load",
        tt::wormhole_categories(),
    );
    let d = t.register_device(&spec).map_err(|e| BenchError::Setup(e.to_string()))?;
    let mut live = std::collections::VecDeque::with_capacity(LIVE_PER_WRITER);
    let (start, end) = (Instant::now(), Duration::from_secs_f64(seconds));
    let (mut written, mut next_address) = (0u64, 0u64);
    while start.elapsed() < end {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        while written < due {
            if live.len() < LIVE_PER_WRITER {
                let address = (next_address % (1 << 20)) * 4096;
                next_address += 1;
                t.alloc(d, tt::DRAM, address, 4096);
                live.push_back(address);
            } else if let Some(address) = live.pop_front() {
                t.free(d, tt::DRAM, address, 4096);
            }
            written += 1;
        }
        // Until the next event is due, but at least 1 ms: a slow writer sleeps long, and a
        // fast one writes its events in batches, as a runtime's bursts come.
        let next = Duration::from_secs_f64((written + 1) as f64 / rate.max(1) as f64);
        std::thread::sleep(next.saturating_sub(start.elapsed()).max(Duration::from_millis(1)));
    }
    Ok(written)
}

struct Daemon(Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// CPU seconds (user + system) a process has used, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which may hold spaces: utime and stime are the 12th
    // and 13th of them.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// (VmRSS, VmHWM) of a process in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One run: a fresh daemon (`daemon_bin serve`), `processes` writers (`ttmem bench
/// load-worker`) at `rate` each, probes throughout.
fn run(ttmem: &Path, daemon_bin: &Path, processes: u32, rate: u64, seconds: f64) -> Result<LoadRun, BenchError> {
    let dir = crate::tempdir()?;
    let regions = dir.path().join("regions");
    let socket = dir.path().join("api.sock");
    let child = Command::new(daemon_bin)
        .arg("serve")
        .args(["--no-http", "--no-legacy-socket", "--no-tt-metal", "--dir"])
        .arg(&regions)
        .arg("--api-socket")
        .arg(&socket)
        .arg("--db")
        .arg(dir.path().join("db"))
        .env_remove("TTMEM_CONFIG")
        .env("XDG_CONFIG_HOME", dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BenchError::Setup(format!("cannot start {}: {e}", daemon_bin.display())))?;
    let mut daemon = Daemon(child);
    let endpoint = Endpoint::Unix(socket.clone());
    let started = Instant::now();
    while ttmem_apiclient::get(&endpoint, "/api/v1/health").is_err() {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            return Err(BenchError::Setup(format!("ttmem serve exited: {status}")));
        }
        if started.elapsed() > Duration::from_secs(20) {
            return Err(BenchError::Setup(format!("{} never answered", socket.display())));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let daemon_pid = daemon.0.id();

    // The probe: this process, with its own region in the same directory.
    let probe = Tracker::new(Config {
        dir: regions.clone(),
        ..Config::default()
    });
    let chip = probe
        .register_device(&DeviceSpec::tenstorrent(
            DeviceKind::SimulatedTenstorrent,
            0x10AD_FFFF,
            0,
            "wormhole_b0",
            "bench-probe",
            tt::wormhole_categories(),
        ))
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let me = std::process::id();
    let listed = |endpoint: &Endpoint| -> u64 {
        ttmem_apiclient::get_json::<AllocationPage>(endpoint, &format!("/api/v1/processes/{me}/allocations?limit=1"))
            .map_or(0, |p| p.total)
    };
    // Wait until the daemon attached the probe's region.
    let wait_for = |want: u64| -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if listed(&endpoint) == want {
                return Some(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        None
    };
    probe.alloc(chip, tt::L1, 0, 64);
    wait_for(1).ok_or_else(|| BenchError::Setup("the daemon never listed the probe".into()))?;
    probe.free(chip, tt::L1, 0, 64);
    wait_for(0);

    let cpu0 = cpu_seconds(daemon_pid);
    let t0 = Instant::now();
    let mut writers = Vec::new();
    for i in 0..processes {
        let w = Command::new(ttmem)
            .args(["bench", "load-worker", "--rate"])
            .arg(rate.to_string())
            .arg("--seconds")
            .arg(seconds.to_string())
            .arg("--index")
            .arg(i.to_string())
            .env("TTMEM_DIR", &regions)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| BenchError::Setup(format!("cannot start a writer: {e}")))?;
        writers.push(w);
    }
    // Probes through the run, one every 20 ms.
    let mut latencies = Vec::new();
    let mut address = 64u64;
    while t0.elapsed().as_secs_f64() < seconds {
        let start = Instant::now();
        probe.alloc(chip, tt::L1, address, 64);
        if let Some(d) = wait_for(1) {
            latencies.push(d.max(start.elapsed()).as_secs_f64() * 1e3);
        }
        probe.free(chip, tt::L1, address, 64);
        wait_for(0);
        address += 64;
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut written = 0u64;
    for w in writers {
        let out = w
            .wait_with_output()
            .map_err(|e| BenchError::Setup(format!("writer: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        written += text.trim().parse::<u64>().map_err(|_| {
            BenchError::Setup(format!(
                "a writer ended with {} and printed {:?} instead of its count",
                out.status,
                text.trim()
            ))
        })?;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    // Let the daemon read what is left, then take its figures.
    let settle = Instant::now();
    let mut stats: Option<Stats> = None;
    while settle.elapsed() < Duration::from_secs(3) {
        stats = ttmem_apiclient::get_json::<Stats>(&endpoint, "/api/v1/stats").ok();
        if stats
            .as_ref()
            .is_some_and(|s| s.collector.events + s.collector.events_lost >= written)
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let cpu = cpu_seconds(daemon_pid) - cpu0;
    let mut scrapes: Vec<f64> = (0..10)
        .map(|_| {
            let t = Instant::now();
            let ok = ttmem_apiclient::get(&endpoint, "/metrics").is_ok_and(|(status, _)| status == 200);
            if ok { t.elapsed().as_secs_f64() * 1e3 } else { f64::NAN }
        })
        .collect();
    scrapes.sort_by(|a, b| a.total_cmp(b));
    let (rss, peak) = rss_mib(daemon_pid);
    let lost = stats.map_or(0, |s| s.collector.events_lost);
    latencies.sort_by(|a, b| a.total_cmp(b));
    drop(daemon);
    Ok(LoadRun {
        processes,
        rate_per_process: rate,
        offered_per_s: written as f64 / seconds,
        written,
        lost,
        lost_pct: if written == 0 {
            0.0
        } else {
            lost as f64 * 100.0 / written as f64
        },
        daemon_cpu_pct: cpu * 100.0 / elapsed,
        daemon_rss_mib: rss,
        daemon_peak_rss_mib: peak,
        visible_p50_ms: percentile(&latencies, 0.5),
        visible_p99_ms: percentile(&latencies, 0.99),
        probes: latencies.len(),
        metrics_scrape_ms: percentile(&scrapes, 0.5),
    })
}

/// Runs the bench: `ttmem` is the binary to start as the writers, `daemon_bin` the one to
/// start as the daemon (the same one, unless two builds are compared).
pub fn load(
    ttmem: &Path,
    daemon_bin: &Path,
    opts: LoadOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<LoadReport, BenchError> {
    let mut runs = Vec::new();
    for &rate in &opts.rates {
        progress(&format!(
            "{} processes x {rate} events/s for {} s",
            opts.processes, opts.seconds
        ));
        let r = run(ttmem, daemon_bin, opts.processes, rate, opts.seconds)?;
        let lost = r.lost > 0;
        runs.push(r);
        if lost && opts.stop_at_loss {
            break;
        }
    }
    Ok(LoadReport {
        bench: "load".into(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        ring_events: Config::from_env().ring_events,
        runs,
    })
}

/// The human table.
pub fn render(report: &LoadReport) -> String {
    let mut out = format!(
        "ttmem bench load ({} CPUs, {} events per ring; a real daemon, one writer process each)\n\n",
        report.cpus, report.ring_events
    );
    out += &format!(
        "{:>5} {:>10} {:>12} {:>11} {:>9} {:>7} {:>8} {:>8} {:>9} {:>9} {:>10}\n",
        "procs",
        "ev/s each",
        "offered ev/s",
        "written",
        "lost",
        "lost %",
        "cpu %",
        "rss MiB",
        "p50 ms",
        "p99 ms",
        "metrics ms"
    );
    for r in &report.runs {
        out += &format!(
            "{:>5} {:>10} {:>12.0} {:>11} {:>9} {:>7.2} {:>8.1} {:>8.1} {:>9.2} {:>9.2} {:>10.2}\n",
            r.processes,
            r.rate_per_process,
            r.offered_per_s,
            r.written,
            r.lost,
            r.lost_pct,
            r.daemon_cpu_pct,
            r.daemon_rss_mib,
            r.visible_p50_ms,
            r.visible_p99_ms,
            r.metrics_scrape_ms
        );
    }
    out += "\np50/p99: from alloc() until the API lists the allocation (probes every 20 ms).\n";
    out += "metrics: one GET /metrics with every writer's chip and process known, median of 10.\n";
    out
}
