//! Helpers shared by the end-to-end test binaries: the real `ttmem` binary and workload
//! processes held still at a known state.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test.
pub const TTMEM: &str = env!("CARGO_BIN_EXE_ttmem");

/// `ttmem` with its region directory set and tracking enabled.
pub fn ttmem(dir: &Path) -> Command {
    let mut c = Command::new(TTMEM);
    c.env("TTMEM_DIR", dir).env_remove("TTMEM_DISABLE");
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

/// Starts a workload and waits until it holds still.
pub fn hold(dir: &Path, profile: &str, shape: &str, chip_offset: u32, steps: u32) -> Held {
    let mut child = ttmem(dir)
        .args(["sim", "run", "--profile", profile, "--device", shape, "--step-ms", "1"])
        .args([
            "--chip-offset",
            &chip_offset.to_string(),
            "--hold-after",
            &steps.to_string(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
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
