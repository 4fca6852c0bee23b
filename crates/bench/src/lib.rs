//! `ttmem bench producer`: what one tracked allocation costs, measured in one run next to the
//! untracked loop and the two mechanisms existing TT tools use (re-implemented here as
//! baselines), so ratios are taken side by side on the same machine at the same time.
//!
//! Method: each sample times a batch of alloc+free pairs with a monotonic clock and divides by
//! the number of operations; medians and p99s are over samples. Figures are per operation (one
//! alloc or one free) unless their name says "pair".

#![deny(missing_docs)]

pub mod baselines;
pub mod daemon;
pub mod forecast;
pub mod legacy;
pub mod load;
pub mod ttmetal;

use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use serde::Serialize;
use ttmem_client::{Config, Device, DeviceSpec, Tracker, tt};
use ttmem_region::DeviceKind;

/// One measured figure.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Figure {
    /// Stable name (used by the JSON consumers).
    pub name: String,
    /// What it measures.
    pub description: String,
    /// Median ns per operation.
    pub median_ns: f64,
    /// 99th percentile ns per operation (over batch samples).
    pub p99_ns: f64,
    /// Threads running at once.
    pub threads: u32,
    /// Samples taken.
    pub samples: usize,
}

/// A target from DESIGN.md checked against this run.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Target {
    /// What is checked.
    pub name: String,
    /// Measured value.
    pub value: f64,
    /// Limit.
    pub limit: f64,
    /// `<=` or `>=`.
    pub op: String,
    /// Whether the run met it.
    pub met: bool,
}

impl Target {
    /// A target checked now: `op` is `<=` (at most `limit`) or `>=` (at least `limit`).
    pub fn new(name: &str, value: f64, op: &str, limit: f64) -> Target {
        Target {
            name: name.into(),
            value,
            limit,
            op: op.into(),
            met: if op == "<=" { value <= limit } else { value >= limit },
        }
    }
}

/// The whole report (`--json` prints it).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Report {
    /// Which bench.
    pub bench: String,
    /// Logical CPUs of the machine (8-thread figures oversubscribe machines with fewer).
    pub cpus: usize,
    /// Figures.
    pub figures: Vec<Figure>,
    /// Ratios between figures (baseline / tracked).
    pub ratios: Vec<(String, f64)>,
    /// Targets.
    pub targets: Vec<Target>,
}

/// How much to measure.
#[derive(Copy, Clone, Debug)]
pub struct Options {
    /// Samples per figure.
    pub samples: usize,
    /// Alloc+free pairs per sample.
    pub batch: usize,
    /// Threads for the multi-thread figures.
    pub threads: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            samples: 2000,
            batch: 100,
            threads: 8,
        }
    }
}

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up a tracker or baseline failed.
    #[error("bench setup failed: {0}")]
    Setup(String),
}

fn stats(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99))
}

/// Runs `op(i)` as alloc+free pairs in batches on `threads` threads; returns per-op samples.
fn sample<F>(opts: Options, threads: u32, op: F) -> Vec<f64>
where
    F: Fn(u64, bool) + Send + Sync + 'static,
{
    let op = Arc::new(op);
    let barrier = Arc::new(Barrier::new(threads as usize));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (op, barrier) = (op.clone(), barrier.clone());
            std::thread::spawn(move || {
                let base = (t as u64) << 40;
                // Warm up: claim the shard, fault in the pages.
                for i in 0..opts.batch as u64 * 10 {
                    op(base | i << 6, true);
                    op(base | i << 6, false);
                }
                barrier.wait();
                let mut out = Vec::with_capacity(opts.samples);
                for s in 0..opts.samples {
                    let start = Instant::now();
                    for i in 0..opts.batch as u64 {
                        let addr = base | ((s as u64) << 20) | i << 6;
                        op(addr, true);
                        op(addr, false);
                    }
                    out.push(start.elapsed().as_nanos() as f64 / (2 * opts.batch) as f64);
                }
                out
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().expect("bench thread panicked"))
        .collect()
}

pub(crate) fn figure(name: &str, description: &str, threads: u32, samples: Vec<f64>) -> Figure {
    let n = samples.len();
    let (median_ns, p99_ns) = stats(samples);
    Figure {
        name: name.into(),
        description: description.into(),
        median_ns,
        p99_ns,
        threads,
        samples: n,
    }
}

fn bench_tracker(dir: &std::path::Path, disabled: bool) -> Result<(Arc<Tracker>, Device), BenchError> {
    let t = Arc::new(Tracker::new(Config {
        dir: dir.into(),
        disabled,
        ..Config::default()
    }));
    let spec = DeviceSpec::tenstorrent(
        DeviceKind::SimulatedTenstorrent,
        0xBE0C,
        0,
        "wormhole_b0",
        "bench",
        tt::wormhole_categories(),
    );
    let d = match t.register_device(&spec) {
        Ok(d) => d,
        Err(_) if disabled => Device(0),
        Err(e) => return Err(BenchError::Setup(e.to_string())),
    };
    Ok((t, d))
}

/// Measures the producer: tracked (1 and N threads), disabled, by-address, untracked, and the
/// two legacy baselines, then region creation.
pub fn producer(opts: Options, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let dir = tempdir()?;
    let mut figures = Vec::new();
    let n = opts.threads;

    progress("untracked loop");
    figures.push(figure(
        "untracked_1t",
        "the same loop with no tracking",
        1,
        sample(opts, 1, |a, alloc| {
            black_box((a, alloc));
        }),
    ));

    let start = Instant::now();
    let (t, d) = bench_tracker(dir.path(), false)?;
    let first_creation_ns = start.elapsed().as_nanos() as f64;
    for threads in [1, n] {
        progress(&format!("tracked, {threads} thread(s)"));
        let tr = t.clone();
        figures.push(figure(
            &format!("tracked_{threads}t"),
            "ttmem alloc or free (counters + ring event)",
            threads,
            sample(opts, threads, move |a, alloc| {
                if alloc {
                    tr.alloc(d, tt::DRAM, a, 4096)
                } else {
                    tr.free(d, tt::DRAM, a, 4096)
                }
            }),
        ));
    }
    progress("tracked by address");
    let tr = t.clone();
    figures.push(figure(
        "tracked_by_address_1t",
        "alloc_mapped / free_addr (process-local address map)",
        1,
        sample(opts, 1, move |a, alloc| {
            if alloc {
                tr.alloc_mapped(d, tt::DRAM, a, 4096)
            } else {
                tr.free_addr(d, a);
            }
        }),
    ));
    let (off, od) = bench_tracker(dir.path(), true)?;
    progress("disabled");
    figures.push(figure(
        "disabled_1t",
        "TTMEM_DISABLE=1: the call returns at once",
        1,
        sample(opts, 1, move |a, alloc| {
            if alloc {
                off.alloc(od, tt::DRAM, a, 4096)
            } else {
                off.free(od, tt::DRAM, a, 4096)
            }
        }),
    ));

    let shm = Arc::new(baselines::SharedCounters::new().map_err(|e| BenchError::Setup(e.to_string()))?);
    for threads in [1, n] {
        progress(&format!("shared atomic counters baseline, {threads} thread(s)"));
        let s = shm.clone();
        figures.push(figure(
            &format!("baseline_shm_atomic_{threads}t"),
            "TT-Metal shm tracking: atomic totals, chip and pid slot searches, two clock reads",
            threads,
            sample(opts, threads, move |_, alloc| s.record(0, alloc, 4096)),
        ));
    }
    progress("socket baseline");
    let sock = Arc::new(baselines::SocketClient::new().map_err(|e| BenchError::Setup(e.to_string()))?);
    let socket_opts = Options {
        samples: opts.samples.min(300),
        batch: opts.batch.min(20),
        ..opts
    };
    let s = sock.clone();
    figures.push(figure(
        "baseline_socket_1t",
        "one blocking 72-byte send() per event to a Unix socket, drained by a reader (allocation server)",
        1,
        sample(socket_opts, 1, move |a, alloc| s.send(a, alloc)),
    ));

    progress("region creation");
    // Each sample runs on a fresh thread, so tearing down the previous sample's region (its last
    // reference is the thread's shard) happens outside the timed window, as it would in a real
    // process, which creates its region once. Process facts read from /proc are cached per pid;
    // the first creation in this process paid for them and is reported on its own.
    figures.push(figure(
        "region_creation_first",
        "the first region of this process, reading /proc facts (one sample)",
        1,
        vec![first_creation_ns],
    ));
    let mut creation = Vec::new();
    for i in 0..200u64 {
        let dir = dir.path().to_path_buf();
        let ns = std::thread::spawn(move || {
            let spec = DeviceSpec::tenstorrent(
                DeviceKind::SimulatedTenstorrent,
                1 + i,
                0,
                "wormhole_b0",
                "x",
                tt::wormhole_categories(),
            );
            let start = Instant::now();
            let t = Tracker::new(Config {
                dir,
                ..Config::default()
            });
            t.register_device(&spec).map(|_| start.elapsed().as_nanos() as f64)
        })
        .join()
        .map_err(|_| BenchError::Setup("creation thread panicked".into()))?
        .map_err(|e| BenchError::Setup(e.to_string()))?;
        creation.push(ns);
    }
    figures.push(figure(
        "region_creation",
        "create, size, map and publish a region, register one device",
        1,
        creation,
    ));

    let get = |name: &str| {
        figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.median_ns)
            .unwrap_or(f64::NAN)
    };
    let p99 = |name: &str| {
        figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.p99_ns)
            .unwrap_or(f64::NAN)
    };
    let tracked = get("tracked_1t");
    let ratios = vec![
        (
            "baseline_shm_atomic_1t / tracked_1t".to_string(),
            get("baseline_shm_atomic_1t") / tracked,
        ),
        (
            format!("baseline_shm_atomic_{n}t / tracked_{n}t"),
            get(&format!("baseline_shm_atomic_{n}t")) / get(&format!("tracked_{n}t")),
        ),
        (
            "baseline_socket_1t / tracked_1t".to_string(),
            get("baseline_socket_1t") / tracked,
        ),
        (
            format!("tracked_{n}t / tracked_1t"),
            get(&format!("tracked_{n}t")) / tracked,
        ),
    ];
    let target = Target::new;
    let targets = vec![
        target("tracked_1t median ns", tracked, "<=", 20.0),
        target("tracked_1t p99 ns", p99("tracked_1t"), "<=", 100.0),
        target(&format!("tracked_{n}t / tracked_1t"), ratios[3].1, "<=", 2.0),
        target("shm atomic baseline / tracked", ratios[0].1, ">=", 5.0),
        target("socket baseline / tracked", ratios[2].1, ">=", 50.0),
        target("region creation median us", get("region_creation") / 1000.0, "<=", 50.0),
    ];
    drop(sock);
    Ok(Report {
        bench: "producer".into(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        figures,
        ratios,
        targets,
    })
}

/// A private temporary directory for bench regions, removed on drop.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    /// The path.
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn tempdir() -> Result<TempDir, BenchError> {
    let base = ttmem_region::default_dir()
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or_else(std::env::temp_dir);
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = base.join(format!("ttmem-bench-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&p).map_err(|e| BenchError::Setup(format!("{}: {e}", p.display())))?;
    Ok(TempDir(p))
}

/// The human table.
pub fn render(report: &Report) -> String {
    let mut out = format!(
        "ttmem bench {} ({} CPUs; ns per operation, one alloc or one free)\n\n",
        report.bench, report.cpus
    );
    out += &format!(
        "{:<28} {:>8} {:>10} {:>10}  {}\n",
        "figure", "threads", "median ns", "p99 ns", "what"
    );
    for f in &report.figures {
        let (m, p) = (f.median_ns, f.p99_ns);
        out += &format!(
            "{:<28} {:>8} {:>10.1} {:>10.1}  {}\n",
            f.name, f.threads, m, p, f.description
        );
    }
    out += "\nratios (same run):\n";
    for (name, v) in &report.ratios {
        out += &format!("  {name:<44} {v:>8.1}x\n");
    }
    out += "\ntargets:\n";
    for t in &report.targets {
        out += &format!(
            "  {:<44} {:>10.2} {} {:<8} {}\n",
            t.name,
            t.value,
            t.op,
            t.limit,
            if t.met { "met" } else { "NOT MET" }
        );
    }
    out
}

/// Sleeps briefly; used by baselines to let a reader start.
pub(crate) fn settle() {
    std::thread::sleep(Duration::from_millis(20));
}
