//! Command-line flags (values only: no I/O happens while parsing).
//!
//! One vocabulary across commands: `--api-socket`/`--url`/`--no-daemon` name the daemon a
//! reader asks; `-r MS` is always a refresh or report interval in milliseconds; `-d ID` is always
//! a `ps` device id (the simulator's board shape is `--shape`); `--json` prints the schema-1
//! objects; `--no-color` (or `NO_COLOR`) drops colours.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// ttmem: who uses device memory on Tenstorrent chips, per process, per buffer type.
#[derive(Debug, Parser)]
#[command(
    name = "ttmem",
    version,
    about = "ttmem: who uses device memory on Tenstorrent chips, per process and per buffer type",
    long_about = None,
    propagate_version = true
)]
pub struct Args {
    /// Region directory (default: $TTMEM_DIR, else /dev/shm/ttmem).
    #[arg(long, global = true, env = "TTMEM_DIR", hide_env_values = true, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where TT-Metal writes its per-chip counter files, or `off` (default /dev/shm).
    #[arg(
        long,
        global = true,
        env = "TTMEM_TT_METAL_DIR",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub tt_metal_dir: Option<String>,
    /// The proc root: the kernel driver's pid lists and process facts (default /proc).
    #[arg(
        long,
        global = true,
        env = "TTMEM_PROC_ROOT",
        hide_env_values = true,
        value_name = "DIR"
    )]
    pub proc_root: Option<PathBuf>,
    /// More log output on stderr (-v info, -vv debug); TTMEM_LOG takes a tracing filter.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Per-chip and per-process memory, once (like nvidia-smi, per buffer type).
    Ps(PsArgs),
    /// Run the host daemon: every allocation in one ledger, process lifecycle, one API.
    Serve(ServeArgs),
    /// The devices seen, with arch and capacities; exits 1 when there are none.
    Info(InfoArgs),
    /// A gate for CI and health checks: exit 0 ok, 1 a limit was crossed, 2 could not check.
    Check(CheckArgs),
    /// A live terminal view of every chip and process, per buffer type.
    Top(TopArgs),
    /// The old allocation monitor's screen, refreshed in place: each device's memory per
    /// category as `used / total [bar] pct%` (needs a daemon).
    Watch(WatchArgs),
    /// Remove regions left by processes that no longer run.
    Gc(GcArgs),
    /// The daemon's alerts: firing, pending and resolved lately, with the rules; exits 1 while
    /// one fires.
    Alerts(AlertsArgs),
    /// One process's memory as a file for Perfetto UI (`--format perfetto`) or PyTorch's memory
    /// viewer (`--format memory-viz`), from the daemon.
    Export(ExportArgs),
    /// One answer of the daemon's API, as JSON (`ttmem api processes/4242/allocations`): the
    /// endpoint rules and the API token of every reader, without curl.
    Api(ApiArgs),
    /// Simulated Tenstorrent chips and workloads.
    #[command(subcommand)]
    Sim(SimCommand),
    /// A whole ttmem on private paths: its own daemon and dashboard, simulated chips, five
    /// workloads, and `ttmem top` on them (q ends it all).
    Demo(DemoArgs),
    /// Run an unchanged TT-Metal program with every buffer tracked (preloads
    /// libttmem_ttmetal.so): `ttmem run -- python model.py`.
    Run(RunArgs),
    /// Measure ttmem's own overhead.
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// How to reach the daemon. A daemon named here (or by `TTMEM_API_SOCKET`) must answer, or the
/// command fails with the reason; without one, readers ask the default socket and fall back to
/// the regions when nothing listens there.
#[derive(Debug, Clone, clap::Args)]
pub struct DaemonArgs {
    /// The daemon's API socket (default: /run/ttmem/api.sock for root, else under $XDG_RUNTIME_DIR).
    #[arg(
        long,
        env = "TTMEM_API_SOCKET",
        hide_env_values = true,
        value_name = "PATH",
        global = true
    )]
    pub api_socket: Option<PathBuf>,
    /// The daemon's URL instead (http://HOST:PORT).
    #[arg(long, value_name = "URL", global = true, conflicts_with = "api_socket")]
    pub url: Option<String>,
    /// Read the regions directly even if a daemon runs.
    #[arg(long, global = true)]
    pub no_daemon: bool,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Config file (TOML; default /etc/ttmem/ttmem.toml or ~/.config/ttmem/ttmem.toml if present).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// API Unix socket.
    #[arg(long, value_name = "PATH")]
    pub api_socket: Option<PathBuf>,
    /// TCP address of the API (default 127.0.0.1:9477).
    #[arg(long, value_name = "ADDR:PORT", conflicts_with = "no_http")]
    pub http: Option<String>,
    /// No TCP API.
    #[arg(long)]
    pub no_http: bool,
    /// SQLite database for history and process records.
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// The legacy allocation-server socket existing TT-Metal builds report to
    /// [default: /tmp/tt_allocation_server.sock].
    #[arg(long, value_name = "PATH", conflicts_with = "no_legacy_socket")]
    pub legacy_socket: Option<PathBuf>,
    /// No legacy allocation-server socket.
    #[arg(long)]
    pub no_legacy_socket: bool,
    /// Do not read TT-Metal's counter files.
    #[arg(long)]
    pub no_tt_metal: bool,
    /// Use this legacy protocol version (P1, P2, P3 or P4) for every connection instead of
    /// detecting it per connection.
    #[arg(long, value_name = "VERSION")]
    pub legacy_version: Option<String>,
    /// Check the configuration (file, environment, flags), print what is in force, and exit:
    /// 0 when it is valid, 2 with the reason otherwise.
    #[arg(long)]
    pub check_config: bool,
}

#[derive(Debug, clap::Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print JSON (schema 1, docs/ps-json.md).
    #[arg(long, conflicts_with = "csv")]
    pub json: bool,
    /// Print CSV: one row per process × device × category.
    #[arg(long)]
    pub csv: bool,
    /// With --csv: one row per device × category instead.
    #[arg(long, requires = "csv")]
    pub devices: bool,
}

#[derive(Debug, clap::Args)]
pub struct AlertsArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print JSON (the API's `/api/v1/alerts` answer, docs/api.md).
    #[arg(long)]
    pub json: bool,
    /// Resolved alerts listed at most.
    #[arg(long, default_value_t = 10, value_name = "N")]
    pub resolved: usize,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The process.
    #[arg(long, value_name = "PID")]
    pub pid: u32,
    /// perfetto: Chrome trace-event JSON (ui.perfetto.dev, chrome://tracing); memory-viz: the
    /// snapshot pickle of PyTorch's memory viewer (pytorch.org/memory_viz).
    #[arg(long, default_value = "perfetto", value_parser = ["perfetto", "memory-viz"])]
    pub format: String,
    /// Leave out what came before: a duration back from now (`90s`, `10m`, `2h`) or a Unix
    /// time in seconds.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    /// Where to write (`-`: standard output); by default ttmem-PID.trace.json or
    /// ttmem-PID.pickle in the current directory.
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// The path to GET: `/api/v1/...`, or the part after `/api/v1/` (see docs/api.md).
    #[arg(value_name = "PATH")]
    pub path: String,
}

#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Refresh every MS milliseconds.
    #[arg(short = 'r', long = "refresh-ms", default_value_t = 1000, value_name = "MS")]
    pub refresh_ms: u64,
    /// A device id to show; repeatable [default: 0].
    #[arg(short = 'd', long = "device", value_name = "ID")]
    pub devices: Vec<u32>,
    /// Show every device.
    #[arg(short = 'a', long = "all", conflicts_with = "devices")]
    pub all: bool,
    /// Draw one frame and exit (exit 2 when no daemon answers).
    #[arg(long)]
    pub once: bool,
    /// Draw without colours.
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Refresh every MS milliseconds.
    #[arg(short = 'r', long = "refresh-ms", default_value_t = 1000, value_name = "MS")]
    pub refresh_ms: u64,
    /// Also show the host whose daemon is at URL (http://HOST:PORT); repeatable.
    #[arg(long, value_name = "URL")]
    pub remote: Vec<String>,
    /// Draw without colours.
    #[arg(long)]
    pub no_color: bool,
}

#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// A limit: [CHIP:]CATEGORY=N% or [CHIP:]CATEGORY=SIZE (e.g. dram=90%, 0:l1=32MiB); repeatable.
    #[arg(long = "max", value_name = "SPEC", value_parser = parse_limit)]
    pub max: Vec<ttmem_report::check::Limit>,
    /// Fail if an exited process left memory behind.
    #[arg(long)]
    pub no_leaks: bool,
    /// Fail with fewer than N devices.
    #[arg(long, value_name = "N")]
    pub require_devices: Option<usize>,
    /// Pass when no device is seen at all (by default that cannot be checked: exit 2, since a
    /// gate that passes on an empty host hides a broken setup).
    #[arg(long)]
    pub allow_empty: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_limit(s: &str) -> Result<ttmem_report::check::Limit, String> {
    ttmem_report::check::Limit::parse(s)
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// Print the devices as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Only list what would be removed.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove files that are not valid regions.
    #[arg(long)]
    pub invalid: bool,
    /// Print what was done as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SimCommand {
    /// Run one simulated workload process on simulated chips.
    Run(SimRunArgs),
    /// List device shapes and workload profiles.
    List(SimListArgs),
}

#[derive(Debug, clap::Args)]
pub struct SimListArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Copy, Clone, Debug, ValueEnum)]
pub enum PolicyArg {
    FirstFit,
    BestFit,
}

#[derive(Debug, clap::Args)]
pub struct SimRunArgs {
    /// Workload profile: llm-inference, training, leaky, crash, bursty.
    #[arg(long, short = 'p', value_parser = parse_profile)]
    pub profile: ttmem_sim::workload::Profile,
    /// Board shape: n150, n300, p150, t3000, galaxy.
    #[arg(long, short = 's', visible_alias = "device", value_parser = parse_shape)]
    pub shape: ttmem_sim::chip::Shape,
    /// Print this process's own stats every MS milliseconds.
    #[arg(short = 'r', long = "report-ms", value_name = "MS")]
    pub report_ms: Option<u64>,
    /// End after SECONDS (default: run until stopped).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// First simulated chip number. Chips are claimed like real ones, one process each: by
    /// default the workload takes the first free chips; a chip given here that another
    /// workload holds is refused.
    #[arg(long, value_name = "N")]
    pub chip_offset: Option<u32>,
    /// Random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// After STEPS steps print the allocator statistics as one JSON line and hold still.
    #[arg(long, value_name = "STEPS")]
    pub hold_after: Option<u64>,
    /// Milliseconds between steps.
    #[arg(long, default_value_t = 20)]
    pub step_ms: u64,
    /// For the crash profile: seconds until SIGKILL.
    #[arg(long, default_value_t = 5.0)]
    pub crash_after: f64,
    /// Free-list policy of the allocator model.
    #[arg(long, value_enum, default_value_t = PolicyArg::FirstFit)]
    pub policy: PolicyArg,
}

fn parse_profile(s: &str) -> Result<ttmem_sim::workload::Profile, String> {
    ttmem_sim::workload::Profile::parse(s).ok_or_else(|| {
        let all: Vec<_> = ttmem_sim::workload::Profile::ALL.iter().map(|p| p.name()).collect();
        format!("unknown profile '{s}' (one of: {})", all.join(", "))
    })
}

fn parse_shape(s: &str) -> Result<ttmem_sim::chip::Shape, String> {
    ttmem_sim::chip::Shape::parse(s).ok_or_else(|| {
        let all: Vec<_> = ttmem_sim::chip::Shape::ALL.iter().map(|p| p.name()).collect();
        format!("unknown device shape '{s}' (one of: {})", all.join(", "))
    })
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The preload library [default: $TTMEM_PRELOAD, else libttmem_ttmetal.so beside ttmem or
    /// in ../lib].
    #[arg(long, value_name = "PATH")]
    pub preload: Option<PathBuf>,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<std::ffi::OsString>,
}

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// End after SECONDS (default: until Ctrl-C).
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,
    /// Refresh the view every MS milliseconds.
    #[arg(short = 'r', long = "refresh-ms", default_value_t = 1000, value_name = "MS")]
    pub refresh_ms: u64,
    /// Run the daemon and the workloads without drawing the view (watch them on the dashboard).
    #[arg(long)]
    pub no_view: bool,
    /// Open the dashboard in the desktop's browser (xdg-open).
    #[arg(long)]
    pub open: bool,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The cost of one tracked alloc or free, next to untracked and legacy-mechanism baselines.
    Producer(BenchProducerArgs),
    /// The daemon: drain rate into the ledger, query latency and memory with many live allocations.
    Daemon(BenchDaemonArgs),
    /// The legacy socket: P2 messages per second into a real `ttmem serve`, next to the old
    /// server re-implemented, with final totals checked by QUERY.
    Legacy(BenchLegacyArgs),
    /// A real TT-Metal process (ttnn on a mock n150): an allocate+deallocate pair with
    /// TT-Metal's counters off and on, each also under `ttmem run` (needs scripts/setup-ttnn.sh).
    Ttmetal(BenchTtmetalArgs),
    /// The daemon under load: N writer processes at R events/s each for T seconds, with the
    /// default ring; events lost, daemon CPU and memory, and the time until an allocation shows
    /// in the API (p50, p99), per rate.
    Load(BenchLoadArgs),
    /// One writer of `bench load` (started by it).
    #[command(hide = true)]
    LoadWorker(BenchLoadWorkerArgs),
    /// How right the out-of-memory forecast is: simulated workloads on a fake clock, the leaky
    /// one until its allocator fails (error at 25, 50 and 75 % of the way), the others for a
    /// while (a forecast there is a false alarm).
    Forecast(BenchForecastArgs),
}

#[derive(Debug, clap::Args)]
pub struct BenchForecastArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Board shapes (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = ["n150".to_string(), "n300".to_string(), "t3000".to_string()])]
    pub shapes: Vec<String>,
    /// Simulator steps per fake second.
    #[arg(long, default_value_t = 20)]
    pub steps_per_s: u32,
    /// Fake seconds for the workloads that do not run out.
    #[arg(long, default_value_t = 600)]
    pub quiet_s: u64,
}

#[derive(Debug, clap::Args)]
pub struct BenchLoadArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Writer processes.
    #[arg(short = 'n', long, default_value_t = 32)]
    pub processes: u32,
    /// Events per second per process, one run each (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1_000u64, 10_000, 100_000, 300_000, 1_000_000])]
    pub rates: Vec<u64>,
    /// Seconds per run.
    #[arg(short = 't', long, default_value_t = 5.0)]
    pub seconds: f64,
    /// Run every rate, also after one lost events.
    #[arg(long)]
    pub all: bool,
    /// The ttmem binary to run as the daemon (default: this one), to compare two builds side
    /// by side.
    #[arg(long, value_name = "PATH")]
    pub daemon_bin: Option<std::path::PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BenchLoadWorkerArgs {
    /// Events per second.
    #[arg(long)]
    pub rate: u64,
    /// Seconds.
    #[arg(long)]
    pub seconds: f64,
    /// Which writer (its chip's hardware id).
    #[arg(long, default_value_t = 0)]
    pub index: u32,
}

#[derive(Debug, clap::Args)]
pub struct BenchTtmetalArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Pairs per sample.
    #[arg(long, default_value_t = 2000)]
    pub pairs: usize,
    /// Samples per process run.
    #[arg(long, default_value_t = 10)]
    pub samples: usize,
    /// Rounds of the four configurations, interleaved.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
}

#[derive(Debug, clap::Args)]
pub struct BenchLegacyArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// ALLOC/FREE pairs per client per sample.
    #[arg(long, default_value_t = 100_000)]
    pub pairs: u64,
    /// Samples per figure.
    #[arg(long, default_value_t = 5)]
    pub samples: usize,
}

#[derive(Debug, clap::Args)]
pub struct BenchDaemonArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Live allocations to build up.
    #[arg(long, default_value_t = 1_000_000)]
    pub allocations: u64,
    /// Churn samples for the drain figure (each drains 1 M events; the median is reported).
    #[arg(long, default_value_t = 7)]
    pub samples: usize,
}

#[derive(Debug, clap::Args)]
pub struct BenchProducerArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Samples per figure.
    #[arg(long, default_value_t = 2000)]
    pub samples: usize,
    /// Alloc+free pairs per sample.
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Threads for the multi-thread figures.
    #[arg(long, default_value_t = 8)]
    pub threads: u32,
}
