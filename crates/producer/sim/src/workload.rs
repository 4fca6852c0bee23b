//! Workload profiles: what a simulated process allocates, step by step, through the real client.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use ttmem_client::{Device, Tracker, tt};

use crate::SimError;
use crate::allocator::Policy;
use crate::chip::{ChipModel, Shape, sim_hw_id};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

/// What a simulated process does.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Profile {
    /// Weights, a trace region, CBs and kernels, then decode steps with a growing KV cache.
    LlmInference,
    /// Weights, gradients and optimizer state, then forward/backward activation waves.
    Training,
    /// Frees three of every four buffers and keeps going until out of memory.
    Leaky,
    /// Like inference, then dies by SIGKILL (after `crash_after`).
    Crash,
    /// Mostly idle, then bursts of hundreds of short-lived buffers.
    Bursty,
}

impl Profile {
    /// Every profile, for help texts.
    pub const ALL: [Profile; 5] = [
        Profile::LlmInference,
        Profile::Training,
        Profile::Leaky,
        Profile::Crash,
        Profile::Bursty,
    ];

    /// The profile's name.
    pub fn name(self) -> &'static str {
        match self {
            Profile::LlmInference => "llm-inference",
            Profile::Training => "training",
            Profile::Leaky => "leaky",
            Profile::Crash => "crash",
            Profile::Bursty => "bursty",
        }
    }

    /// Parses a profile name.
    pub fn parse(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(s))
    }
}

/// How to run a workload.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// The profile.
    pub profile: Profile,
    /// The chips it opens.
    pub shape: Shape,
    /// First simulated chip number (hardware ids are unique per chip number). [`run`] claims
    /// the chips first ([`crate::claim`]): `None` takes the first free ones.
    pub chip_offset: Option<u32>,
    /// Stop after this long (None: until stopped).
    pub duration: Option<Duration>,
    /// After this many steps, print the allocator statistics as one JSON line and hold (stop
    /// allocating) until stopped: a fixed state for tests to compare against.
    pub hold_after_steps: Option<u64>,
    /// Print in-process stats this often.
    pub report_every: Option<Duration>,
    /// Pause between steps.
    pub step_interval: Duration,
    /// For [`Profile::Crash`]: when to die.
    pub crash_after: Duration,
    /// Random seed (same seed, same allocations).
    pub seed: u64,
    /// Free-list policy.
    pub policy: Policy,
    /// Set to stop the run cleanly (a caller's SIGINT/SIGTERM handler sets it).
    pub stop: &'static AtomicBool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            profile: Profile::LlmInference,
            shape: Shape::N150,
            chip_offset: None,
            duration: None,
            hold_after_steps: None,
            report_every: None,
            step_interval: Duration::from_millis(20),
            crash_after: Duration::from_secs(5),
            seed: 1,
            policy: Policy::FirstFit,
            stop: &NEVER,
        }
    }
}

/// One category's statistics as the allocator model sees them (what tests compare with ttmem).
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct CategoryStats {
    /// Category name.
    pub name: String,
    /// Allocated bytes over all banks.
    pub allocated: u64,
    /// Allocatable bytes.
    pub total: u64,
    /// Largest free block of one bank.
    pub largest_free_per_bank: u64,
    /// Live buffers.
    pub buffers: usize,
}

/// One chip's statistics.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ChipStats {
    /// Hardware id.
    pub hw_id: u64,
    /// Display name.
    pub name: String,
    /// Per category.
    pub categories: Vec<CategoryStats>,
}

/// The workload's own view, printed by `--hold-after` and at the end of a run.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Summary {
    /// Process id.
    pub pid: u32,
    /// Profile name.
    pub profile: String,
    /// Steps run.
    pub steps: u64,
    /// Allocations that failed with out-of-memory.
    pub oom: u64,
    /// Per chip.
    pub chips: Vec<ChipStats>,
}

/// Lifetime classes of buffers a profile keeps.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Life {
    Permanent,
    Kv,
    Step,
    Activation,
}

struct Buffer {
    chip: usize,
    category: u8,
    address: u64,
    life: Life,
}

/// A running simulated process.
pub struct Workload<'t> {
    tracker: &'t Tracker,
    chips: Vec<(ChipModel, Device)>,
    buffers: Vec<Buffer>,
    rng: fastrand::Rng,
    opts: RunOptions,
    steps: u64,
    oom: u64,
    last_oom: Option<String>,
}

impl<'t> Workload<'t> {
    /// Opens the shape's chips and registers them with `tracker`.
    pub fn new(tracker: &'t Tracker, opts: RunOptions) -> Result<Self, SimError> {
        let mut chips = Vec::new();
        for (i, (arch, name, remote)) in opts.shape.chips().into_iter().enumerate() {
            let chip = ChipModel::new(
                arch,
                &name,
                remote,
                sim_hw_id(opts.chip_offset.unwrap_or(0) + i as u32),
                i as i32,
                opts.policy,
            );
            let device = tracker.register_device(&chip.device_spec())?;
            chips.push((chip, device));
        }
        Ok(Workload {
            tracker,
            chips,
            buffers: Vec::new(),
            rng: fastrand::Rng::with_seed(opts.seed),
            opts,
            steps: 0,
            oom: 0,
            last_oom: None,
        })
    }

    fn alloc(&mut self, chip: usize, category: u8, size: u64, life: Life, tag: &str) -> bool {
        let (model, device) = &mut self.chips[chip];
        match model.allocate(category, size) {
            Ok((address, footprint)) => {
                let _scope = self.tracker.tag(tag);
                self.tracker.alloc(*device, category, address, footprint);
                self.buffers.push(Buffer {
                    chip,
                    category,
                    address,
                    life,
                });
                true
            }
            Err(e) => {
                self.oom += 1;
                self.last_oom = Some(format!("{}: {e}", model.name));
                false
            }
        }
    }

    fn free_where(&mut self, pred: impl Fn(&Buffer) -> bool) {
        let mut keep = Vec::with_capacity(self.buffers.len());
        for b in std::mem::take(&mut self.buffers) {
            if pred(&b) {
                let (model, device) = &mut self.chips[b.chip];
                if let Ok(footprint) = model.deallocate(b.category, b.address) {
                    self.tracker.free(*device, b.category, b.address, footprint);
                }
            } else {
                keep.push(b);
            }
        }
        self.buffers = keep;
    }

    fn count(&self, life: Life, chip: usize) -> usize {
        self.buffers.iter().filter(|b| b.life == life && b.chip == chip).count()
    }

    /// Allocations made once at start. [`run`] calls it; a driver that steps at its own pace
    /// (a test's fake clock, a bench) calls it once, then [`Workload::step`].
    pub fn setup(&mut self) {
        let chips = self.chips.len();
        match self.opts.profile {
            Profile::LlmInference | Profile::Crash => {
                for c in 0..chips {
                    for k in 0..8 {
                        self.alloc(c, tt::KERNEL, 64 * 8 * KIB, Life::Permanent, &format!("kernel:op{k}"));
                    }
                    for (i, name) in ["rope.cache", "norm.weights", "embed.shard", "lm_head.shard"]
                        .iter()
                        .enumerate()
                    {
                        self.alloc(c, tt::L1, 64 * (64 + 32 * i as u64) * KIB, Life::Permanent, name);
                    }
                    for i in 0..4 {
                        self.alloc(c, tt::L1_SMALL, 64 * KIB, Life::Permanent, &format!("sem{i}"));
                    }
                    for layer in 0..32 {
                        for (name, size) in [
                            ("wq", 24 * MIB),
                            ("wkv", 16 * MIB),
                            ("wo", 24 * MIB),
                            ("w1", 48 * MIB),
                            ("w2", 48 * MIB),
                        ] {
                            self.alloc(c, tt::DRAM, size, Life::Permanent, &format!("layers.{layer}.{name}"));
                        }
                    }
                    self.alloc(c, tt::TRACE, 48 * MIB, Life::Permanent, "trace");
                    for cb in 0..10 {
                        self.alloc(c, tt::CB, 64 * 16 * KIB, Life::Permanent, &format!("cb{cb}"));
                    }
                }
            }
            Profile::Training => {
                for c in 0..chips {
                    for k in 0..6 {
                        self.alloc(
                            c,
                            tt::KERNEL,
                            64 * 8 * KIB,
                            Life::Permanent,
                            &format!("kernel:train{k}"),
                        );
                    }
                    for t in 0..48 {
                        self.alloc(c, tt::DRAM, 32 * MIB, Life::Permanent, &format!("param.{t}"));
                        self.alloc(c, tt::DRAM, 32 * MIB, Life::Permanent, &format!("grad.{t}"));
                        self.alloc(c, tt::DRAM, 64 * MIB, Life::Permanent, &format!("adam.{t}"));
                    }
                    for cb in 0..8 {
                        self.alloc(c, tt::CB, 64 * 16 * KIB, Life::Permanent, &format!("cb{cb}"));
                    }
                }
            }
            Profile::Leaky | Profile::Bursty => {
                for c in 0..chips {
                    self.alloc(c, tt::KERNEL, 64 * 16 * KIB, Life::Permanent, "kernel:main");
                    self.alloc(c, tt::DRAM, 256 * MIB, Life::Permanent, "model");
                }
            }
        }
    }

    /// One step of the profile, without the pause [`run`] takes between steps.
    pub fn step(&mut self) {
        let chips = self.chips.len();
        let n = self.steps;
        match self.opts.profile {
            Profile::LlmInference | Profile::Crash => {
                for c in 0..chips {
                    // A decode step: activations in L1, semaphores in L1_SMALL, one KV block.
                    for op in 0..4 {
                        let size = 64 * (64 + self.rng.u64(0..192)) * KIB / 8;
                        self.alloc(c, tt::L1, size, Life::Step, &format!("decode.op{op}.act"));
                    }
                    self.alloc(c, tt::L1_SMALL, 64 * 256, Life::Step, "semaphores");
                    if self.count(Life::Kv, c) >= 96 {
                        self.free_where(|b| b.life == Life::Kv && b.chip == c);
                    }
                    self.alloc(c, tt::DRAM, 8 * MIB, Life::Kv, "kv_cache");
                }
                self.free_where(|b| b.life == Life::Step);
            }
            Profile::Training => {
                let phase = n % 48;
                for c in 0..chips {
                    if phase < 24 {
                        let size = 24 * MIB + self.rng.u64(0..8) * MIB;
                        self.alloc(c, tt::DRAM, size, Life::Activation, &format!("fwd.{phase}"));
                    } else if let Some(i) = self
                        .buffers
                        .iter()
                        .rposition(|b| b.life == Life::Activation && b.chip == c)
                    {
                        let b = self.buffers.remove(i);
                        let (model, device) = &mut self.chips[b.chip];
                        if let Ok(fp) = model.deallocate(b.category, b.address) {
                            self.tracker.free(*device, b.category, b.address, fp);
                        }
                    }
                    self.alloc(c, tt::L1, 64 * 96 * KIB, Life::Step, "matmul.scratch");
                }
                self.free_where(|b| b.life == Life::Step);
            }
            Profile::Leaky => {
                for c in 0..chips {
                    for i in 0..4 {
                        let life = if i == 0 { Life::Permanent } else { Life::Step };
                        self.alloc(c, tt::DRAM, 4 * MIB, life, if i == 0 { "leaked" } else { "tmp" });
                    }
                    self.alloc(c, tt::L1, 64 * 64 * KIB, Life::Step, "tmp.l1");
                }
                self.free_where(|b| b.life == Life::Step);
            }
            Profile::Bursty => {
                // Every 50th step a burst of short-lived buffers, freed ten steps later.
                if n.is_multiple_of(50) {
                    for c in 0..chips {
                        let count = 200 + self.rng.usize(0..400);
                        for i in 0..count {
                            let (cat, size) = if i % 3 == 0 {
                                (tt::L1, 64 * (1 + self.rng.u64(0..8)) * KIB)
                            } else {
                                (tt::DRAM, (1 + self.rng.u64(0..16)) * MIB)
                            };
                            self.alloc(c, cat, size, Life::Activation, "burst");
                        }
                    }
                } else if n % 50 == 10 {
                    self.free_where(|b| b.life == Life::Activation);
                }
            }
        }
        self.steps += 1;
    }

    /// The allocator models' own statistics.
    pub fn summary(&self) -> Summary {
        Summary {
            pid: std::process::id(),
            profile: self.opts.profile.name().into(),
            steps: self.steps,
            oom: self.oom,
            chips: self
                .chips
                .iter()
                .map(|(m, _)| ChipStats {
                    hw_id: m.hw_id,
                    name: m.name.clone(),
                    categories: m
                        .statistics()
                        .iter()
                        .zip(tt::NAMES)
                        .map(|(s, name)| CategoryStats {
                            name: name.into(),
                            allocated: s.allocated,
                            total: s.total_allocatable,
                            largest_free_per_bank: s.largest_free_per_bank,
                            buffers: s.buffers,
                        })
                        .collect(),
                })
                .collect(),
        }
    }

    /// The in-process report printed every `-r` interval: ttmem's own counters next to the
    /// allocator model's statistics (they must agree).
    pub fn report(&self, out: &mut dyn Write, elapsed: Duration) -> std::io::Result<()> {
        let snap = self.tracker.snapshot();
        writeln!(
            out,
            "[{:>7.1}s] pid {} {} on {}: steps {} oom {} events {} lost {}",
            elapsed.as_secs_f64(),
            std::process::id(),
            self.opts.profile.name(),
            self.opts.shape.name(),
            self.steps,
            self.oom,
            snap.events_written,
            snap.events_lost
        )?;
        if !self.tracker.is_enabled() {
            writeln!(
                out,
                "  tracking disabled (TTMEM_DISABLE): showing the allocator model only"
            )?;
        }
        for ((model, device), stats) in self.chips.iter().zip(self.summary().chips) {
            let usage = snap.devices.iter().find(|d| d.device == *device);
            let mut line = format!("  {:<8}", model.name);
            for (i, cat) in stats.categories.iter().enumerate() {
                if cat.total == 0 || i == tt::SYSTEM_MEMORY as usize {
                    continue;
                }
                let tracked = usage
                    .and_then(|u| u.categories.get(i))
                    .map(|c| c.counters.live_bytes)
                    .unwrap_or(0);
                let flag = if tracked as u64 == cat.allocated || !self.tracker.is_enabled() {
                    ""
                } else {
                    " MISMATCH"
                };
                line.push_str(&format!(
                    " {} {}/{} ({:.0}%){flag}",
                    cat.name,
                    human(cat.allocated),
                    human(cat.total),
                    100.0 * cat.allocated as f64 / cat.total as f64
                ));
            }
            writeln!(out, "{line}")?;
        }
        if let Some(e) = &self.last_oom {
            writeln!(out, "  last error: {e}")?;
        }
        Ok(())
    }
}

/// Bytes in binary units with one decimal.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// A stop flag nobody sets: the default of [`RunOptions::stop`].
static NEVER: AtomicBool = AtomicBool::new(false);

/// Runs a workload until its duration ends, `opts.stop` is set (the caller's signal handler),
/// or (crash profile) it kills itself. Progress lines go to `out`.
pub fn run(tracker: &Tracker, mut opts: RunOptions, out: &mut dyn Write) -> Result<Summary, SimError> {
    // Disabled tracking writes nothing, so it claims nothing either.
    let _claim = if tracker.is_enabled() {
        let c = crate::claim::claim(&tracker.config().dir, opts.shape.chips().len() as u32, opts.chip_offset)?;
        opts.chip_offset = Some(c.first());
        Some(c)
    } else {
        None
    };
    let start = Instant::now();
    let mut w = Workload::new(tracker, opts.clone())?;
    w.setup();
    let mut next_report = opts.report_every.map(|r| start + r);
    let mut held = false;
    while !opts.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if opts.duration.is_some_and(|d| now - start >= d) {
            break;
        }
        if opts.profile == Profile::Crash && now - start >= opts.crash_after {
            let _ = writeln!(out, "crash: pid {} dies now (SIGKILL)", std::process::id());
            let _ = out.flush();
            // SAFETY: raising a signal at ourselves has no memory-safety preconditions.
            unsafe { libc::raise(libc::SIGKILL) };
        }
        if opts.hold_after_steps.is_some_and(|n| w.steps >= n) {
            if !held {
                held = true;
                writeln!(
                    out,
                    "{}",
                    serde_json::to_string(&w.summary()).expect("summary serializes")
                )?;
                out.flush()?;
            }
        } else {
            w.step();
        }
        if let Some(at) = next_report.filter(|&at| now >= at) {
            w.report(out, now - start)?;
            out.flush()?;
            next_report = Some(at + opts.report_every.unwrap_or_default());
        }
        std::thread::sleep(opts.step_interval);
    }
    Ok(w.summary())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ttmem_client::Config;

    fn tracker() -> (tempfile::TempDir, Tracker) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let t = Tracker::new(Config {
            dir: dir.path().into(),
            ..Config::default()
        });
        (dir, t)
    }

    #[test]
    fn every_profile_keeps_ttmem_equal_to_the_allocator_model() {
        for profile in Profile::ALL {
            let (_d, t) = tracker();
            let mut w = Workload::new(
                &t,
                RunOptions {
                    profile,
                    shape: Shape::N300,
                    ..RunOptions::default()
                },
            )
            .unwrap();
            w.setup();
            for _ in 0..120 {
                w.step();
            }
            let snap = t.snapshot();
            for ((model, device), stats) in w.chips.iter().zip(w.summary().chips) {
                let usage = snap.devices.iter().find(|d| d.device == *device).unwrap();
                assert_eq!(usage.hw_id, model.hw_id);
                for (i, cat) in stats.categories.iter().enumerate() {
                    let c = &usage.categories[i].counters;
                    assert_eq!(
                        c.live_bytes as u64,
                        cat.allocated,
                        "{} {} {}",
                        profile.name(),
                        model.name,
                        cat.name
                    );
                    assert_eq!(c.live_count as usize, cat.buffers);
                }
            }
            assert!(snap.events_written > 0);
        }
    }

    #[test]
    fn only_the_leaky_profile_runs_out_of_memory() {
        for profile in [Profile::LlmInference, Profile::Training, Profile::Bursty] {
            let (_d, t) = tracker();
            let mut w = Workload::new(
                &t,
                RunOptions {
                    profile,
                    ..RunOptions::default()
                },
            )
            .unwrap();
            w.setup();
            for _ in 0..500 {
                w.step();
            }
            assert_eq!(w.oom, 0, "{}: {:?}", profile.name(), w.last_oom);
        }
    }

    #[test]
    fn leaky_grows_until_out_of_memory() {
        let (_d, t) = tracker();
        let mut w = Workload::new(
            &t,
            RunOptions {
                profile: Profile::Leaky,
                ..RunOptions::default()
            },
        )
        .unwrap();
        w.setup();
        for _ in 0..3000 {
            w.step();
        }
        assert!(
            w.oom > 0,
            "a leak of 4 MiB per step exhausts ~10.5 GiB of DRAM within 3000 steps"
        );
        assert!(w.last_oom.as_deref().unwrap().contains("Out of Memory"));
    }

    #[test]
    fn human_units() {
        assert_eq!(human(512), "512B");
        assert_eq!(human(1536), "1.5KiB");
        assert_eq!(human(12 << 30), "12.0GiB");
    }
}
