//! `ttmem run -- CMD …`: starts CMD, unchanged, with `libttmem_ttmetal.so` preloaded, so every
//! TT-Metal buffer it allocates is reported through its own region (like `memray run` and
//! `heaptrack`). The command replaces ttmem (exec), so its pid is the one readers show.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};

use super::Paths;
use crate::args::RunArgs;

/// The preload library's file name.
const LIBRARY: &str = "libttmem_ttmetal.so";

/// Where the preload library is: the flag, `TTMEM_PRELOAD`, beside the ttmem executable (a
/// build tree), or in `../lib` (an installed tree).
fn library(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("TTMEM_PRELOAD").map(PathBuf::from))
    {
        if !p.is_file() {
            bail!("the preload library {} does not exist", p.display());
        }
        return Ok(p);
    }
    let exe = std::env::current_exe().context("cannot find the ttmem executable")?;
    let dir = exe.parent().context("the ttmem executable has no directory")?;
    for candidate in [dir.join(LIBRARY), dir.join("../lib").join(LIBRARY)] {
        if candidate.is_file() {
            return Ok(candidate.canonicalize().unwrap_or(candidate));
        }
    }
    bail!(
        "{LIBRARY} is not beside {} nor in ../lib: build it with `cargo build --release` (it is built with ttmem), or pass --preload PATH",
        exe.display()
    )
}

pub fn run(dir: &Paths, a: &RunArgs) -> anyhow::Result<ExitCode> {
    let lib = library(a.preload.as_deref())?;
    let mut preload = OsString::from(lib.as_os_str());
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        preload.push(":");
        preload.push(existing);
    }
    let (program, args) = a.command.split_first().context("no command to run")?;
    let mut cmd = std::process::Command::new(program);
    cmd.args(args).env("LD_PRELOAD", preload);
    // The client in the program writes where this ttmem was told to look, and the library finds
    // the chips where this ttmem reads TT-Metal's counter files.
    if dir.named {
        cmd.env("TTMEM_DIR", &dir.path);
    }
    if let Some(tt) = &dir.tt_metal {
        cmd.env("TTMEM_TT_METAL_DIR", tt);
    }
    let err = cmd.exec();
    Err(err).with_context(|| format!("cannot run {}", Path::new(program).display()))
}
