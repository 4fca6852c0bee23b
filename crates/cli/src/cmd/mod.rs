//! One module per subcommand; each turns parsed flags into one library call and prints.

mod alerts;
mod api;
mod bench;
mod check;
mod demo;
mod export;
mod gc;
mod info;
mod ps;
mod run;
mod serve;
mod sim;
mod source;
mod top;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::args::{Args, Command, SimCommand};

/// Where a command finds its sources: the region directory (and whether the user named it,
/// with `--dir` or `TTMEM_DIR`, rather than taking the default), TT-Metal's counter files and
/// the proc root.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The region directory.
    pub path: PathBuf,
    /// Named by the user.
    pub named: bool,
    /// TT-Metal's counter-file directory as named (`off` included), None for the default.
    pub tt_metal_named: Option<String>,
    /// TT-Metal's counter-file directory (None: not read).
    pub tt_metal: Option<PathBuf>,
    /// The proc root as named, None for the default.
    pub proc_root_named: Option<PathBuf>,
    /// The proc root.
    pub proc_root: PathBuf,
}

impl Paths {
    /// The sources a reader without a daemon reads.
    pub fn local(&self) -> ttmem_model::sources::Local {
        ttmem_model::sources::Local {
            regions: self.path.clone(),
            tt_metal: self.tt_metal.clone(),
            proc_root: self.proc_root.clone(),
        }
    }
}

/// Runs the parsed command; the exit code is the command's answer (errors are exit 2 in main).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let tt_metal = ttmem_ttmetal::dir_named(args.tt_metal_dir.as_deref());
    let dir = Paths {
        named: args.dir.is_some(),
        path: args.dir.unwrap_or_else(ttmem_region::default_dir),
        tt_metal_named: args.tt_metal_dir,
        tt_metal,
        proc_root: args
            .proc_root
            .clone()
            .unwrap_or_else(|| PathBuf::from(ttmem_ttmetal::DEFAULT_PROC_ROOT)),
        proc_root_named: args.proc_root,
    };
    match args.command {
        Command::Serve(a) => serve::serve(&dir, &a),
        Command::Ps(a) => ps::ps(&dir, &a),
        Command::Info(a) => info::info(&dir, &a),
        Command::Check(a) => check::check(&dir, &a),
        Command::Top(a) => top::top(&dir, &a),
        Command::Watch(a) => watch::watch(&a),
        Command::Gc(a) => gc::gc(&dir, &a),
        Command::Alerts(a) => alerts::alerts(&a),
        Command::Api(a) => api::api(&a),
        Command::Export(a) => export::export(&a),
        Command::Sim(SimCommand::Run(a)) => sim::run(&dir, &a),
        Command::Sim(SimCommand::List(a)) => sim::list(&a),
        Command::Demo(a) => demo::demo(&dir, &a),
        Command::Run(a) => run::run(&dir, &a),
        Command::Bench(b) => bench::bench(b),
    }
}

/// Whether to draw colours: not when `--no-color` is given, nor when `NO_COLOR` is set to
/// anything but the empty string (no-color.org).
pub fn color_allowed(no_color_flag: bool) -> bool {
    !no_color_flag && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Writes to stdout, turning a closed pipe into an error main treats quietly.
pub fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_all(text.as_bytes())?;
    o.flush()?;
    Ok(())
}

/// Set by the first stop signal [`stop_on_signals`] installed.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Turns `signals` into a flag the command's loop polls, so it can stop cleanly (children
/// stopped, terminal restored). The one signal handler of the binary: libraries take the flag.
pub fn stop_on_signals(signals: &[libc::c_int]) -> &'static std::sync::atomic::AtomicBool {
    for &sig in signals {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(sig, on_stop as *const () as libc::sighandler_t) };
    }
    &STOP
}
