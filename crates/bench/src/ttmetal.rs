//! The real TT-Metal runtime in mock-cluster mode (the `ttnn` wheel `scripts/setup-ttnn.sh`
//! installs), for `ttmem bench ttmetal` and the tests that run it.
//!
//! `ttmem bench ttmetal` times an allocate+deallocate pair of one DRAM tile in a real ttnn
//! process on a mock n150, in four configurations measured in one run, interleaved: TT-Metal's
//! own counters off (`TT_METAL_SHM_TRACKING_DISABLED=1`), on (its default), on under `ttmem
//! run`, and off under `ttmem run`. The preload's cost is the third minus the second.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{BenchError, Figure, Report, Target, stats};

/// The ttnn version the runtime is.
pub const TTNN_VERSION: &str = "0.81.1";

/// A mock board: its cluster descriptor and how ttnn opens it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Board {
    /// `n150`, `n300` or `p150`.
    pub name: &'static str,
    /// Chips on it.
    pub chips: usize,
    /// `MESH_SHAPE` for a mesh (the n300 as 1×2).
    pub mesh: Option<&'static str>,
    /// A Blackhole board (its firmware differs).
    pub blackhole: bool,
}

/// A Wormhole n150: one chip.
pub const N150: Board = Board {
    name: "n150",
    chips: 1,
    mesh: None,
    blackhole: false,
};
/// A Wormhole n300: two chips, opened as a 1×2 mesh.
pub const N300: Board = Board {
    name: "n300",
    chips: 2,
    mesh: Some("1,2"),
    blackhole: false,
};
/// A Blackhole p150: one chip.
pub const P150: Board = Board {
    name: "p150",
    chips: 1,
    mesh: None,
    blackhole: true,
};

impl Board {
    /// The board's UMD cluster descriptor (for `TT_METAL_MOCK_CLUSTER_DESC_PATH`).
    pub fn descriptor(&self) -> &'static str {
        match self.name {
            "n300" => include_str!("../clusters/n300.yaml"),
            "p150" => include_str!("../clusters/p150.yaml"),
            _ => include_str!("../clusters/n150.yaml"),
        }
    }
}

/// An installed runtime: the venv's Python, the runtime-root overlay, a cache.
#[derive(Clone, Debug)]
pub struct MockRuntime {
    /// The venv's Python.
    pub python: PathBuf,
    /// `TT_METAL_RUNTIME_ROOT`.
    pub rtroot: PathBuf,
    /// `TT_METAL_CACHE`.
    pub cache: PathBuf,
    /// The installed `ttnn` package (its pre-compiled firmware).
    pub package: PathBuf,
}

impl MockRuntime {
    /// The runtime `scripts/setup-ttnn.sh` installed in `home` (default: `TTMEM_TTNN_HOME`,
    /// else `~/.cache/ttmem/ttnn-<version>`).
    pub fn at(home: Option<PathBuf>) -> Result<MockRuntime, BenchError> {
        let home = home
            .or_else(|| std::env::var_os("TTMEM_TTNN_HOME").map(PathBuf::from))
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                    .join(format!(".cache/ttmem/ttnn-{TTNN_VERSION}"))
            });
        if !home.join(".complete").exists() {
            return Err(BenchError::Setup(format!(
                "no ttnn {TTNN_VERSION} runtime in {}: run scripts/setup-ttnn.sh",
                home.display()
            )));
        }
        let python = home.join("venv/bin/python");
        let out = Command::new(&python)
            .args([
                "-c",
                "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('ttnn').origin))",
            ])
            .output()
            .map_err(|e| BenchError::Setup(format!("cannot run {}: {e}", python.display())))?;
        Ok(MockRuntime {
            package: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()),
            python,
            rtroot: home.join("rtroot"),
            cache: home.join("cache"),
        })
    }

    /// `python` with the mock environment for `board` described by `yaml`, run in `workdir`
    /// (ttnn writes `./generated/` there).
    pub fn python(&self, board: Board, yaml: &Path, workdir: &Path) -> Command {
        let mut c = Command::new(&self.python);
        self.environment(&mut c, board, yaml, workdir);
        c
    }

    /// Sets the mock environment on any command (e.g. `ttmem run -- python …`).
    pub fn environment(&self, c: &mut Command, board: Board, yaml: &Path, workdir: &Path) {
        c.current_dir(workdir)
            .env("TT_METAL_RUNTIME_ROOT", format!("{}/", self.rtroot.display()))
            .env("TT_METAL_CACHE", format!("{}/", self.cache.display()))
            .env("TT_METAL_MOCK_CLUSTER_DESC_PATH", yaml)
            .env("OMPI_MCA_btl", "self")
            .env("TT_LOGGER_LEVEL", "error")
            .env_remove("TT_METAL_SHM_TRACKING_DISABLED");
        match board.mesh {
            Some(m) => c.env("MESH_SHAPE", m),
            None => c.env_remove("MESH_SHAPE"),
        };
    }

    /// Makes sure `board` opens: mock mode asks for a firmware build key that depends on the
    /// runtime root and the dispatch settings, and names it when it fails; the key is linked to
    /// firmware the wheel ships for the same architecture. Not safe to run concurrently.
    pub fn prepare(&self, board: Board, yaml: &Path, workdir: &Path) -> Result<(), BenchError> {
        let probe = "import os, ttnn\nm = os.environ.get('MESH_SHAPE')\nd = ttnn.open_mesh_device(ttnn.MeshShape(*map(int, m.split(',')))) if m else ttnn.open_device(device_id=0)\nttnn.close_device(d)\n";
        for _ in 0..3 {
            let out = self
                .python(board, yaml, workdir)
                .args(["-c", probe])
                .stdin(Stdio::null())
                .output()
                .map_err(|e| BenchError::Setup(e.to_string()))?;
            if out.status.success() {
                return Ok(());
            }
            let log = String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
            let key = log
                .split("tt-metal-cache")
                .skip(1)
                .filter_map(|rest| {
                    let rest = rest.trim_start_matches('/');
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    (!digits.is_empty() && rest[digits.len()..].starts_with("/firmware")).then_some(digits)
                })
                .next()
                .ok_or_else(|| {
                    BenchError::Setup(format!(
                        "the mock {} did not open, and not for want of firmware: {}",
                        board.name,
                        log.lines().rev().take(5).collect::<Vec<_>>().join(" / ")
                    ))
                })?;
            let marker = if board.blackhole { "active_erisc" } else { "erisc" };
            let mut shipped: Vec<PathBuf> = std::fs::read_dir(self.package.join("tt_metal/pre-compiled"))
                .map_err(|e| BenchError::Setup(e.to_string()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.join(marker).is_dir())
                .collect();
            shipped.sort();
            let firmware = shipped
                .first()
                .ok_or_else(|| BenchError::Setup(format!("the wheel ships no {marker} firmware")))?;
            let link = self.rtroot.join("tt_metal/pre-compiled").join(&key);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(firmware, &link).map_err(|e| BenchError::Setup(e.to_string()))?;
        }
        Err(BenchError::Setup(format!(
            "the mock {} still does not open",
            board.name
        )))
    }
}

/// How much `ttmem bench ttmetal` measures.
#[derive(Copy, Clone, Debug)]
pub struct TtMetalOptions {
    /// Pairs per sample.
    pub pairs: usize,
    /// Samples per process run.
    pub samples: usize,
    /// Rounds: each runs every configuration once, in turn.
    pub rounds: usize,
}

/// The four configurations: (name, description, TT-Metal's counters on, under `ttmem run`).
const CONFIGS: [(&str, &str, bool, bool); 4] = [
    (
        "ttmetal_counters_off",
        "allocate+deallocate pair, TT-Metal's own counters off (TT_METAL_SHM_TRACKING_DISABLED=1)",
        false,
        false,
    ),
    (
        "ttmetal_counters_on",
        "allocate+deallocate pair, TT-Metal's own counters on (its default)",
        true,
        false,
    ),
    (
        "ttmetal_run_counters_on",
        "allocate+deallocate pair under ttmem run, TT-Metal's counters on",
        true,
        true,
    ),
    (
        "ttmetal_run_counters_off",
        "allocate+deallocate pair under ttmem run, TT-Metal's counters off",
        false,
        true,
    ),
];

/// Runs the bench. `exe` is the ttmem binary, beside which `libttmem_ttmetal.so` is.
pub fn ttmetal(exe: &Path, opts: TtMetalOptions, progress: &mut dyn FnMut(&str)) -> Result<Report, BenchError> {
    let rt = MockRuntime::at(None)?;
    let preload = exe.with_file_name("libttmem_ttmetal.so");
    if !preload.is_file() {
        return Err(BenchError::Setup(format!(
            "{} is missing: build it with `cargo build --release`",
            preload.display()
        )));
    }
    let work = crate::tempdir()?;
    let yaml = work.path().join("n150.yaml");
    std::fs::write(&yaml, N150.descriptor()).map_err(|e| BenchError::Setup(e.to_string()))?;
    let script = work.path().join("pairs.py");
    std::fs::write(&script, include_str!("ttmetal_pairs.py")).map_err(|e| BenchError::Setup(e.to_string()))?;
    let regions = work.path().join("regions");
    progress("opening the mock n150 once (firmware)");
    rt.prepare(N150, &yaml, work.path())?;
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); CONFIGS.len()];
    // Per round, each configuration's median: paired differences cancel what drifts between
    // rounds (frequency, the other core's load), which dwarfs the preload's cost otherwise.
    let mut per_round: Vec<[f64; 4]> = Vec::new();
    for round in 0..opts.rounds.max(1) {
        let mut medians = [0.0; 4];
        for (i, (name, _, counters, run)) in CONFIGS.iter().enumerate() {
            progress(&format!("round {}: {name}", round + 1));
            let mut c = rt.python(N150, &yaml, work.path());
            c.arg(&script)
                .arg(opts.pairs.max(1).to_string())
                .arg(opts.samples.max(1).to_string())
                .env("TTMEM_DIR", &regions)
                .stderr(Stdio::null());
            if !counters {
                c.env("TT_METAL_SHM_TRACKING_DISABLED", "1");
            }
            if *run {
                c.env("LD_PRELOAD", &preload);
            }
            let out = c.output().map_err(|e| BenchError::Setup(e.to_string()))?;
            let line = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = serde_json::from_str(line.lines().last().unwrap_or("[]"))
                .map_err(|e| BenchError::Setup(format!("{name}: the ttnn process printed no timings ({e}): {line}")))?;
            medians[i] = stats(v.clone()).0;
            samples[i].extend(v);
        }
        per_round.push(medians);
    }
    let mut figures: Vec<Figure> = CONFIGS
        .iter()
        .zip(samples)
        .map(|((name, description, _, _), s)| {
            let n = s.len();
            let (median_ns, p99_ns) = stats(s);
            Figure {
                name: (*name).into(),
                description: (*description).into(),
                median_ns,
                p99_ns,
                threads: 1,
                samples: n,
            }
        })
        .collect();
    // A pair is two events (allocate and deallocate): costs per event are half a pair's.
    let paired = |a: usize, b: usize| stats(per_round.iter().map(|r| (r[a] - r[b]) / 2.0).collect());
    let (preload, preload_worst) = paired(2, 1);
    let (counters, counters_worst) = paired(1, 0);
    for (name, description, (median_ns, p99_ns)) in [
        (
            "preload_per_event",
            "ttmem run's cost per event: (under ttmem run - counters on) / 2, median of per-round differences",
            (preload, preload_worst),
        ),
        (
            "ttmetal_counters_per_event",
            "TT-Metal's own counters' cost per event: (on - off) / 2, median of per-round differences",
            (counters, counters_worst),
        ),
    ] {
        figures.push(Figure {
            name: name.into(),
            description: description.into(),
            median_ns,
            p99_ns,
            threads: 1,
            samples: per_round.len(),
        });
    }
    let m = |i: usize| figures[i].median_ns;
    let ratios = vec![("run_counters_off_vs_ttmetal_default".to_string(), m(3) / m(1))];
    let targets = vec![Target::new("preload cost per event (ns)", preload, "<=", 100.0)];
    Ok(Report {
        bench: "ttmetal".into(),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        figures,
        ratios,
        targets,
    })
}
