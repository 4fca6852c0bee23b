//! Helpers shared by the end-to-end test binaries: the real `ttmem` binary and workload
//! processes held still at a known state.
#![allow(dead_code)] // each test binary uses a different subset

pub mod browser;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ttmem_apiclient::{Endpoint, get_json};

/// The binary under test.
pub const TTMEM: &str = env!("CARGO_BIN_EXE_ttmem");

/// `ttmem` that reads no TT-Metal counter files (the host's /dev/shm is not the test's).
pub fn hermetic() -> Command {
    let mut c = Command::new(TTMEM);
    c.env("TTMEM_TT_METAL_DIR", "off").env_remove("TTMEM_PROC_ROOT");
    c
}

/// `ttmem` with its region directory set and tracking enabled, reading TT-Metal's counter files
/// from `<dir>/tt-metal` (not the host's /dev/shm: tests see only what they write).
pub fn ttmem(dir: &Path) -> Command {
    let mut c = Command::new(TTMEM);
    c.env("TTMEM_DIR", dir)
        .env("TTMEM_TT_METAL_DIR", dir.join("tt-metal"))
        .env_remove("TTMEM_PROC_ROOT")
        .env_remove("TTMEM_DISABLE");
    c
}

/// A workload process held still after some steps, with the allocator model's statistics it
/// printed at that point; killed when dropped.
pub struct Held {
    /// The process.
    pub child: Child,
    /// Its `--hold-after` summary line.
    pub summary: Value,
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a workload on chips from `chip_offset` and waits until it holds still.
pub fn hold(dir: &Path, profile: &str, shape: &str, chip_offset: u32, steps: u32) -> Held {
    hold_on(dir, profile, shape, Some(chip_offset), steps)
}

/// Starts a workload and waits until it holds still; `None` lets it claim the first free chips.
pub fn hold_on(dir: &Path, profile: &str, shape: &str, chip_offset: Option<u32>, steps: u32) -> Held {
    hold_with(ttmem(dir), profile, shape, chip_offset, steps)
}

/// [`hold`] as another user (the caller must be root).
pub fn hold_as(uid: u32, dir: &Path, profile: &str, shape: &str, chip_offset: u32, steps: u32) -> Held {
    use std::os::unix::process::CommandExt;
    let mut cmd = ttmem(dir);
    cmd.uid(uid).gid(uid);
    hold_with(cmd, profile, shape, Some(chip_offset), steps)
}

fn hold_with(mut cmd: Command, profile: &str, shape: &str, chip_offset: Option<u32>, steps: u32) -> Held {
    cmd.args(["sim", "run", "--profile", profile, "--shape", shape, "--step-ms", "1"])
        .args(["--hold-after", &steps.to_string()]);
    if let Some(offset) = chip_offset {
        cmd.args(["--chip-offset", &offset.to_string()]);
    }
    let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let summary: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad summary line {line:?}: {e}"));
    Held { child, summary }
}

/// The held workload's pid.
pub fn pid(h: &Held) -> u64 {
    h.summary["pid"].as_u64().unwrap()
}

/// Region files in a directory (what else is there, like the simulator's chip claims, does
/// not count).
pub fn regions_in(dir: &Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "ttmem"))
            .count()
    })
}

/// A TCP port on loopback that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` until it holds, for at most 20 seconds.
pub fn wait_until(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The process's bytes and counts per (hw_id, category), as `ps --json` or the API show them,
/// equal the model's statistics.
pub fn assert_matches_model(p: &Value, summary: &Value) {
    for chip in summary["chips"].as_array().unwrap() {
        let hw = format!("{:#x}", chip["hw_id"].as_u64().unwrap());
        let dev = p["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["hw_id"] == hw.as_str())
            .unwrap();
        for cat in chip["categories"].as_array().unwrap() {
            let got = dev["categories"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["name"] == cat["name"])
                .unwrap();
            assert_eq!(got["bytes"], cat["allocated"], "{hw} {}", cat["name"]);
            assert_eq!(got["count"], cat["buffers"], "{hw} {}", cat["name"]);
        }
    }
}

/// A real `ttmem serve` on private paths (its legacy socket is `legacy.sock` beside them).
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub regions: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Daemon {
    /// The legacy allocation-server socket.
    pub fn legacy_socket(&self) -> PathBuf {
        self._dir.path().join("legacy.sock")
    }

    pub fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let tt_metal = dir.path().join("tt-metal");
        Daemon::start_reading(dir, &tt_metal)
    }

    /// A daemon that reads TT-Metal's counter files in `tt_metal` (e.g. the host's /dev/shm).
    pub fn start_reading(dir: tempfile::TempDir, tt_metal: &Path) -> Daemon {
        Daemon::start_configured(dir, tt_metal, "")
    }

    /// [`Daemon::start_reading`] with `config` in its file.
    pub fn start_reading_with(dir: tempfile::TempDir, tt_metal: &Path, config: &str) -> Daemon {
        Daemon::start_configured(dir, tt_metal, config)
    }

    /// A daemon with these lines added to its config file.
    pub fn start_with(config: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let tt_metal = dir.path().join("tt-metal");
        Daemon::start_configured(dir, &tt_metal, config)
    }

    fn start_configured(dir: tempfile::TempDir, tt_metal: &Path, config: &str) -> Daemon {
        let regions = dir.path().join("regions");
        let socket = dir.path().join("api.sock");
        let mut d = Daemon {
            child: spawn_serve_with(&regions, &socket, dir.path(), tt_metal, config),
            socket,
            regions,
            _dir: dir,
        };
        d.wait_ready();
        d
    }

    pub fn wait_ready(&mut self) {
        wait_until(|| get_json::<Value>(&self.ep(), "/api/v1/health").is_ok());
    }

    pub fn ep(&self) -> Endpoint {
        Endpoint::Unix(self.socket.clone())
    }

    pub fn get(&self, path: &str) -> Value {
        get_json(&self.ep(), path).unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn process(&self, pid: u64) -> Option<Value> {
        self.get("/api/v1/processes")["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["pid"] == pid)
            .cloned()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn spawn_serve(regions: &Path, socket: &Path, dir: &Path, tt_metal: &Path) -> Child {
    spawn_serve_with(regions, socket, dir, tt_metal, "")
}

/// [`spawn_serve`] with these lines added to its config file.
pub fn spawn_serve_with(regions: &Path, socket: &Path, dir: &Path, tt_metal: &Path, extra: &str) -> Child {
    // Flush history every second.
    let config = dir.join("ttmem.toml");
    std::fs::write(&config, format!("flush_interval_s = 1\n{extra}")).unwrap();
    // No TCP API unless the config names one.
    let http = extra.lines().any(|l| l.trim_start().starts_with("http ="));
    Command::new(TTMEM)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(if http { &[][..] } else { &["--no-http"][..] })
        .arg("--dir")
        .arg(regions)
        .arg("--api-socket")
        .arg(socket)
        .arg("--legacy-socket")
        .arg(dir.join("legacy.sock"))
        .arg("--db")
        .arg(dir.join("ttmem.db"))
        .arg("--tt-metal-dir")
        .arg(tt_metal)
        .env_remove("TTMEM_CONFIG")
        .env("XDG_CONFIG_HOME", dir)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Whether every one of `tools` runs here (`--version`); under CI they must, since
/// scripts/setup.sh installs them. Says SKIPPED with the test's name otherwise.
#[allow(dead_code)]
pub fn have_tools(tools: &[&str], test: &str) -> bool {
    let found = tools.iter().all(|t| {
        Command::new(t)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run {test} with {} installed (scripts/setup.sh installs them)",
            tools.join(", ")
        );
        eprintln!(
            "SKIPPED {test}: no {} (scripts/setup.sh installs them)",
            tools.join(", ")
        );
    }
    found
}
