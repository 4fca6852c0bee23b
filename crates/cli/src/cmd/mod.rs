//! One module per subcommand; each turns parsed flags into one library call and prints.

mod bench;
mod demo;
mod ps;
mod serve;
mod sim;
mod top;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use crate::args::{Args, Command, SimCommand};

/// Runs the parsed command; the exit code is the command's answer (errors are exit 2 in main).
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if let Command::Serve(a) = &args.command {
        return serve::serve(args.dir.as_deref(), a);
    }
    let dir = args.dir.unwrap_or_else(ttmem_region::default_dir);
    match args.command {
        Command::Serve(_) => unreachable!("handled above"),
        Command::Ps(a) => ps::ps(&dir, &a),
        Command::Info(a) => ps::info(&dir, &a),
        Command::Check(a) => ps::check(&dir, &a),
        Command::Top(a) => top::top(&dir, &a),
        Command::Watch(a) => watch::watch(&a),
        Command::Gc(a) => ps::gc(&dir, &a),
        Command::Sim(SimCommand::Run(a)) => sim::run(&dir, &a),
        Command::Sim(SimCommand::List) => sim::list(),
        Command::Demo(a) => demo::demo(&dir, &a),
        Command::Bench(b) => bench::bench(b),
    }
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

/// The region directory as given, for messages.
pub fn shown(dir: &std::path::Path) -> PathBuf {
    dir.to_path_buf()
}
