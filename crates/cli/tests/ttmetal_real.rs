//! The real TT-Metal runtime (the `ttnn` 0.81.1 wheel, installed by `scripts/setup-ttnn.sh`)
//! on mock Wormhole n150, n300 (a 1×2 mesh) and Blackhole p150 chips, with no change to it:
//! ttmem must list its processes with exactly the bytes TT-Metal's own counter files hold, with
//! and without a daemon, and tell a killed process and a reused pid from a live one.
//!
//! Each test gives its chips unique ids (the counter files in /dev/shm are named by them) and
//! removes its files afterwards. Where the runtime cannot be installed (no Python 3.12), the
//! tests say SKIPPED, and fail under CI, which must run them.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use ttmem_bench::ttmetal::{Board, MockRuntime, N150, N300, P150};

const MIB: u64 = 1 << 20;
/// The tensors every workload allocates: 1024 tiles of DRAM and 64 of L1 (bfloat16).
const TENSORS: &str = r#"[["dram", [1, 1, 1024, 1024]], ["l1", [1, 1, 256, 256]]]"#;
const DRAM_BYTES: u64 = 2 * MIB;
const L1_BYTES: u64 = 128 << 10;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The runtime, installed once per test binary; None (with the reason printed) where it cannot
/// be had, which fails the test under CI.
fn runtime() -> Option<&'static MockRuntime> {
    static RT: OnceLock<Result<MockRuntime, String>> = OnceLock::new();
    let rt = RT.get_or_init(|| {
        let home = match std::env::var_os("TTMEM_TTNN_HOME") {
            Some(h) if Path::new(&h).join(".complete").exists() => PathBuf::from(h),
            _ => {
                let out = Command::new(repo().join("scripts/setup-ttnn.sh"))
                    .output()
                    .map_err(|e| format!("cannot run scripts/setup-ttnn.sh: {e}"))?;
                if !out.status.success() {
                    return Err(format!(
                        "scripts/setup-ttnn.sh failed: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                }
                PathBuf::from(String::from_utf8_lossy(&out.stdout).lines().last().unwrap_or("").trim())
            }
        };
        MockRuntime::at(Some(home)).map_err(|e| e.to_string())
    });
    match rt {
        Ok(r) => Some(r),
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must run the real-runtime tests, but: {why}"
            );
            eprintln!("SKIPPED: the real TT-Metal runtime is not available here: {why}");
            None
        }
    }
}

/// One test's mock cluster: a descriptor with chip ids no other test uses, and the counter
/// files those ids name, removed when dropped.
struct Cluster {
    board: Board,
    ids: Vec<u64>,
    yaml: PathBuf,
    work: tempfile::TempDir,
}

impl Cluster {
    fn new(board: Board) -> Cluster {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // UMD reads the board type from a chip id's upper bits: only the low 20 bits change,
        // by a value whose low 4 bits are zero, so a board's consecutive ids stay consecutive.
        let unique = ((std::process::id() as u64) * 64 + n) & 0xFFFF;
        let template = board.descriptor();
        // The templates' ids, in chip order, become this cluster's.
        let originals: Vec<String> = template
            .lines()
            .skip_while(|l| !l.starts_with("chip_unique_ids:"))
            .skip(1)
            .take(board.chips)
            .map(|l| l.split(':').nth(1).unwrap().trim().to_string())
            .collect();
        let ids: Vec<u64> = originals
            .iter()
            .map(|o| {
                let o: u64 = o.parse().unwrap();
                (o & !0xF_FFFF) | ((o ^ (unique << 4)) & 0xF_FFFF)
            })
            .collect();
        let mut yaml_text = template.to_string();
        for (old, new) in originals.iter().zip(&ids) {
            yaml_text = yaml_text.replace(old.as_str(), &new.to_string());
        }
        let work = tempfile::tempdir().unwrap();
        let yaml = work.path().join(format!("{}.yaml", board.name));
        std::fs::write(&yaml, yaml_text).unwrap();
        Cluster { board, ids, yaml, work }
    }

    fn file(&self, id: u64) -> PathBuf {
        PathBuf::from(format!("/dev/shm/tt_device_{id}_memory"))
    }

    /// `python workload.py TENSORS` on this cluster, with the mock environment.
    fn command(&self, rt: &MockRuntime, tensors: &str) -> Command {
        self.command_in(rt, tensors, None)
    }

    /// The same, or (with a region directory) under `ttmem run` reporting there.
    fn command_in(&self, rt: &MockRuntime, tensors: &str, run_into: Option<&Path>) -> Command {
        let mut c = match run_into {
            Some(regions) => {
                let mut c = ttmem(regions);
                c.args(["--tt-metal-dir", "/dev/shm", "run", "--"]).arg(&rt.python);
                c
            }
            None => Command::new(&rt.python),
        };
        rt.environment(&mut c, self.board, &self.yaml, self.work.path());
        c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ttmetal/workload.py"))
            .arg(tensors)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    }

    /// Makes sure this board opens (links its firmware build key once).
    fn prepare(&self, rt: &MockRuntime) {
        static LOCK: Mutex<()> = Mutex::new(());
        let _one_at_a_time = LOCK.lock().unwrap_or_else(|p| p.into_inner());
        rt.prepare(self.board, &self.yaml, self.work.path())
            .unwrap_or_else(|e| panic!("{e}"));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for &id in &self.ids {
            let _ = std::fs::remove_file(self.file(id));
        }
    }
}

/// A running real TT-Metal process holding the tensors it was asked for.
struct Workload {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: std::sync::mpsc::Receiver<String>,
    ready: Value,
}

impl Workload {
    fn start(cluster: &Cluster, rt: &MockRuntime) -> Workload {
        Workload::spawn(cluster.command(rt, TENSORS), cluster)
    }

    /// Under `ttmem run`, reporting into `regions`.
    fn start_tracked(cluster: &Cluster, rt: &MockRuntime, regions: &Path) -> Workload {
        preload_library();
        Workload::spawn(cluster.command_in(rt, TENSORS, Some(regions)), cluster)
    }

    fn spawn(mut command: Command, cluster: &Cluster) -> Workload {
        let mut child = command.spawn().unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the workload on {} did not start", cluster.board.name));
        let ready: Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("{first:?}: {e}"));
        Workload {
            child,
            stdin,
            lines,
            ready,
        }
    }

    fn pid(&self) -> u64 {
        self.ready["pid"].as_u64().unwrap()
    }

    fn tell(&mut self, command: &str) -> String {
        writeln!(self.stdin.as_mut().unwrap(), "{command}").unwrap();
        self.lines.recv_timeout(Duration::from_secs(60)).unwrap_or_default()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds libttmem_ttmetal.so beside the ttmem binary, where `ttmem run` looks for it (`cargo
/// test` builds only what the tests link).
fn preload_library() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let bin = Path::new(TTMEM).parent().unwrap();
        let target = bin.parent().unwrap();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-p", "ttmem-preload", "--lib"])
            .env("CARGO_TARGET_DIR", target);
        if bin.file_name().unwrap() == "release" {
            cmd.arg("--release");
        }
        assert!(cmd.status().unwrap().success(), "building libttmem_ttmetal.so failed");
        assert!(bin.join("libttmem_ttmetal.so").exists());
    });
}

/// `ttmem ps --json` reading the host's counter files.
fn ps(dir: &Path) -> Value {
    let out = ttmem(dir)
        .args(["ps", "--json", "--no-daemon", "--tt-metal-dir", "/dev/shm"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn find<'a>(v: &'a Value, key: &str, field: &str, want: &Value) -> Option<&'a Value> {
    v[key].as_array().unwrap().iter().find(|x| &x[field] == want)
}

/// What TT-Metal's own file for chip `id` says `pid` holds, per category.
fn file_bytes(cluster: &Cluster, id: u64, pid: u64) -> Vec<(String, u64)> {
    let f = ttmem_ttmetal::read_file(&cluster.file(id)).unwrap().file;
    let slot = f
        .slots
        .iter()
        .find(|s| s.pid as u64 == pid)
        .expect("the process has a slot");
    slot.bytes.0.iter().map(|(c, b)| (c.to_string(), *b)).collect()
}

fn lists_a_real_process_with_exactly_the_bytes_tt_metal_counts(board: Board) {
    let Some(rt) = runtime() else { return };
    let cluster = Cluster::new(board);
    cluster.prepare(rt);
    let mut w = Workload::start(&cluster, rt);
    let dir = tempfile::tempdir().unwrap();
    let snap = ps(dir.path());
    let p =
        find(&snap, "processes", "pid", &w.pid().into()).unwrap_or_else(|| panic!("pid {} missing: {snap:#}", w.pid()));
    assert_eq!(
        (p["source"].as_str(), p["state"].as_str()),
        (Some("tt-metal-shm"), Some("running"))
    );
    assert!(p["name"].as_str().unwrap().starts_with("python"), "{p:#}");
    assert_eq!(
        p["devices"].as_array().unwrap().len(),
        board.chips,
        "one device per chip: {p:#}"
    );
    for &id in &cluster.ids {
        let hw = format!("{id:#x}");
        let chip = find(&snap, "devices", "hw_id", &hw.clone().into()).unwrap_or_else(|| panic!("chip {hw}: {snap:#}"));
        assert_eq!(chip["kind"], "tt");
        let pd = p["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["hw_id"] == hw.as_str())
            .unwrap();
        let shown: Vec<(String, u64)> = pd["categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| (c["name"].as_str().unwrap().to_string(), c["bytes"].as_u64().unwrap()))
            .collect();
        assert_eq!(
            shown,
            file_bytes(&cluster, id, w.pid()),
            "chip {hw}: exactly TT-Metal's bytes"
        );
        // A mesh replicates each tensor on every chip, at its logical size.
        assert_eq!((shown[0].1, shown[1].1), (DRAM_BYTES, L1_BYTES), "chip {hw}");
        assert_eq!(chip["categories"][0]["used"], DRAM_BYTES);
    }
    // Freed tensors leave the counters.
    assert_eq!(w.tell("free"), "freed");
    let snap = ps(dir.path());
    for &id in &cluster.ids {
        let hw = format!("{id:#x}");
        let chip = find(&snap, "devices", "hw_id", &hw.into()).unwrap();
        assert_eq!(chip["categories"][0]["used"], 0);
    }
}

#[test]
fn n150_without_a_daemon() {
    lists_a_real_process_with_exactly_the_bytes_tt_metal_counts(N150);
}

#[test]
fn n300_mesh_without_a_daemon() {
    lists_a_real_process_with_exactly_the_bytes_tt_metal_counts(N300);
}

#[test]
fn p150_without_a_daemon() {
    lists_a_real_process_with_exactly_the_bytes_tt_metal_counts(P150);
}

#[test]
fn with_a_daemon_a_real_process_shows_within_a_second_and_a_sigkill_leaves_its_bytes_behind() {
    let Some(rt) = runtime() else { return };
    let cluster = Cluster::new(N150);
    cluster.prepare(rt);
    let d = Daemon::start_reading_with(tempfile::tempdir().unwrap(), Path::new("/dev/shm"), ALERT_RULES);
    let mut w = Workload::start(&cluster, rt);
    let t0 = Instant::now();
    wait_until(|| d.process(w.pid()).is_some());
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "appeared after {:?}",
        t0.elapsed()
    );
    let hw = format!("{:#x}", cluster.ids[0]);
    let used = |d: &Daemon| {
        let devices = d.get("/api/v1/devices");
        find(&devices, "devices", "hw_id", &hw.clone().into()).map(|c| c["categories"][0]["used"].clone())
    };
    assert_eq!(used(&d), Some(DRAM_BYTES.into()));

    w.child.kill().unwrap();
    w.child.wait().unwrap();
    let t0 = Instant::now();
    wait_until(|| d.process(w.pid()).is_some_and(|p| p["state"] == "exited"));
    assert!(
        t0.elapsed() < Duration::from_secs(1),
        "seen dead after {:?}",
        t0.elapsed()
    );
    let dead = d.process(w.pid()).unwrap();
    assert_eq!(dead["left_behind"], true);
    // The built-in kind of alert fires on what TT-Metal's own counters say was left behind.
    let left = |d: &Daemon| {
        d.get("/api/v1/alerts")["active"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["rule"] == "LeftBehind" && a["labels"]["pid"].as_str() == Some(&*w.pid().to_string()))
            .cloned()
    };
    wait_until(|| left(&d).is_some());
    let all: u64 = dead["totals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["bytes"].as_u64().unwrap())
        .sum();
    assert!(all >= DRAM_BYTES);
    assert_eq!(left(&d).unwrap()["value"].as_f64(), Some(all as f64));
    assert_eq!(dead["totals"][0]["bytes"], DRAM_BYTES);
    assert_eq!(used(&d), Some(0.into()), "a dead process's bytes are not live use");
    // TT-Metal 0.81 keeps them in its own totals forever; ttmem says so.
    assert_eq!(
        ttmem_ttmetal::read_file(&cluster.file(cluster.ids[0]))
            .unwrap()
            .file
            .totals
            .get("DRAM"),
        DRAM_BYTES
    );
    let notes = d.get("/api/v1/snapshot")["notes"].clone();
    let pid = w.pid();
    assert!(
        notes.as_array().unwrap().iter().any(|n| n
            .as_str()
            .unwrap()
            .contains(&format!("{DRAM_BYTES} bytes of process {pid}"))
            || n.as_str().unwrap().contains(&format!("of process {pid} ("))),
        "{notes:#}"
    );

    // The same slot naming a live, unrelated process that started after the slot's last
    // update: a reused pid, shown exited.
    std::thread::sleep(Duration::from_millis(300));
    let sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let own = tempfile::tempdir().unwrap();
    let tt = own.path().join("tt-metal");
    std::fs::create_dir_all(&tt).unwrap();
    let mut bytes = std::fs::read(cluster.file(cluster.ids[0])).unwrap();
    let f = ttmem_ttmetal::layout::decode(&bytes).unwrap();
    let layout = ttmem_ttmetal::layout::layout(f.version).unwrap();
    let slot = f.slots.iter().find(|s| s.pid as u64 == pid).unwrap();
    let at = layout.processes.0 + slot.index * layout.processes.1;
    bytes[at..at + 4].copy_from_slice(&(sleeper.id() as i32).to_le_bytes());
    std::fs::write(tt.join(format!("tt_device_{}_memory", cluster.ids[0])), bytes).unwrap();
    let out = ttmem(own.path()).args(["ps", "--json"]).output().unwrap();
    let snap: Value = serde_json::from_slice(&out.stdout).unwrap();
    let reused = find(&snap, "processes", "pid", &sleeper.id().into()).unwrap();
    assert_eq!(reused["state"], "exited", "{reused:#}");
    let mut sleeper = sleeper;
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// Alert rules the real-runtime tests check: DRAM held at all, and what a dead process left.
const ALERT_RULES: &str = "[alerts]\ninterval_s = 1\ndefault_rules = false\n[[alerts.rules]]\nname = \"DramHeld\"\nkind = \"threshold\"\ncategory = \"DRAM\"\nabove_bytes = 1\n[[alerts.rules]]\nname = \"LeftBehind\"\nkind = \"left_behind\"\n";

fn every_tensor_is_a_ledger_allocation_at_its_address(board: Board) {
    let Some(rt) = runtime() else { return };
    let cluster = Cluster::new(board);
    cluster.prepare(rt);
    let d = Daemon::start_reading_with(tempfile::tempdir().unwrap(), Path::new("/dev/shm"), ALERT_RULES);
    let mut w = Workload::start_tracked(&cluster, rt, &d.regions);
    let pid = w.pid();
    let path = format!("/api/v1/processes/{pid}/allocations?sort=address&limit=100");
    let page = |d: &Daemon| ttmem_apiclient::get_json::<Value>(&d.ep(), &path).unwrap_or_default();
    let want = 2 * board.chips as u64;
    wait_until(|| page(&d)["total"] == want);
    let p = d.process(pid).unwrap();
    assert_eq!(
        p["source"], "region",
        "the region (every buffer) wins over the counter files: {p:#}"
    );
    let devices = d.get("/api/v1/devices");
    let ids: Vec<u64> = cluster
        .ids
        .iter()
        .map(|id| {
            let chip = find(&devices, "devices", "hw_id", &format!("{id:#x}").into()).unwrap();
            assert_eq!(chip["kind"], "tt");
            assert_eq!(chip["arch"], if board.blackhole { "blackhole" } else { "wormhole_b0" });
            assert_eq!(
                chip["sources"],
                serde_json::json!(["region", "tt-metal-shm"]),
                "{chip:#}"
            );
            chip["id"].as_u64().unwrap()
        })
        .collect();
    // Each tensor is an allocation on each chip, at the address ttnn reports.
    let items = page(&d)["items"].as_array().unwrap().clone();
    for t in w.ready["tensors"].as_array().unwrap() {
        let category = if t["kind"] == "dram" { "DRAM" } else { "L1" };
        for &id in &ids {
            assert!(
                items.iter().any(|a| a["device"] == id
                    && a["address"] == t["address"]
                    && a["size"] == t["bytes"]
                    && a["category"] == category),
                "{t} on device {id}: {items:#?}"
            );
        }
    }
    // fit and fragmentation answer for the mock chip.
    let fit = d.get(&format!(
        "/api/v1/fit?device={}&category=DRAM&bytes={}",
        ids[0],
        64 * MIB
    ));
    assert_eq!(fit["fits"], true, "{fit:#}");
    let frag = d.get(&format!("/api/v1/devices/{}/fragmentation", ids[0]));
    let names: Vec<&str> = frag["categories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["DRAM", "L1"]);
    // A threshold alert fires on what the preload reported, on each chip.
    let firing = |d: &Daemon| -> Vec<String> {
        d.get("/api/v1/alerts")["active"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["rule"] == "DramHeld" && a["state"] == "firing")
            .map(|a| a["labels"]["hw_id"].as_str().unwrap().to_string())
            .collect()
    };
    // (Other tests' mock chips share /dev/shm: only this cluster's are looked for.)
    let ours: Vec<String> = cluster.ids.iter().map(|id| format!("{id:#x}")).collect();
    wait_until(|| {
        let now = firing(&d);
        ours.iter().all(|id| now.contains(id))
    });
    // ttnn.deallocate removes them.
    assert_eq!(w.tell("free"), "freed");
    wait_until(|| page(&d)["total"] == 0);
    // After a SIGKILL the flight recorder holds the last buffer events.
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    wait_until(|| d.process(pid).is_some_and(|p| p["state"] == "exited"));
    let events = d.get(&format!("/api/v1/processes/{pid}/events"));
    let kinds: Vec<(String, u64)> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["address"].as_u64().unwrap()))
        .collect();
    let dram = w.ready["tensors"][0]["address"].as_u64().unwrap();
    assert!(
        kinds.contains(&("alloc".into(), dram)) && kinds.contains(&("free".into(), dram)),
        "{kinds:?}"
    );
    assert_eq!(events["state"]["state"], "exited");
}

#[test]
fn under_ttmem_run_n150_buffers_are_in_the_ledger() {
    every_tensor_is_a_ledger_allocation_at_its_address(N150);
}

#[test]
fn under_ttmem_run_n300_mesh_buffers_are_on_both_chips() {
    every_tensor_is_a_ledger_allocation_at_its_address(N300);
}

/// Whether the ttnn venv has the Python package (scripts/setup-python.sh installs it there);
/// CI must have it.
fn ttmem_in_ttnn_venv(rt: &MockRuntime) -> bool {
    let has = Command::new(&rt.python)
        .args(["-c", "import ttmem, pytest"])
        .status()
        .is_ok_and(|s| s.success());
    if !has {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must test the pytest plugin under ttnn: scripts/setup-python.sh installs ttmem into {}",
            rt.python.display()
        );
        eprintln!("SKIPPED: ttmem is not installed in the ttnn venv (run scripts/setup-python.sh)");
    }
    has
}

/// `python -m pytest --ttmem-leaks -v ttnn_suite.py` on a mock chip, as `command` starts it
/// (plain, or under `ttmem run`); its whole output.
fn run_ttnn_suite(rt: &MockRuntime, cluster: &Cluster, mut c: Command) -> (Option<i32>, String) {
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ttmetal/ttnn_suite.py");
    rt.environment(&mut c, cluster.board, &cluster.yaml, cluster.work.path());
    let out = c
        .args(["-m", "pytest", "-p", "no:cacheprovider", "--ttmem-leaks", "-v"])
        .arg(&suite)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

/// The Python package in a real use: a ttnn test suite on a mock n150 run with `pytest
/// --ttmem-leaks` in the ttnn venv. The leaky test fails naming the DRAM it kept, the clean one
/// passes, and `ttmem.memory_allocated()` follows a tensor, all through TT-Metal's counter
/// files (which give bytes, not buffers).
#[test]
fn the_pytest_plugin_catches_a_leak_in_a_ttnn_suite_on_a_mock_chip() {
    let Some(rt) = runtime() else { return };
    if !ttmem_in_ttnn_venv(rt) {
        return;
    }
    let cluster = Cluster::new(N150);
    cluster.prepare(rt);
    let regions = tempfile::tempdir().unwrap();
    let mut c = Command::new(&rt.python);
    c.env("TTMEM_DIR", regions.path())
        .env_remove("TTMEM_API_SOCKET")
        .env_remove("TTMEM_TT_METAL_DIR");
    let (code, text) = run_ttnn_suite(rt, &cluster, c);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("ttnn_suite.py::test_clean PASSED"), "{text}");
    assert!(
        text.contains("ttnn_suite.py::test_memory_allocated_follows_the_tensor PASSED"),
        "{text}"
    );
    assert!(text.contains("ERROR at teardown of test_leaky"), "{text}");
    assert!(text.contains("(tt-metal-shm source)"), "{text}");
    assert!(text.contains("DRAM: +2.0 MiB (2097152 bytes)"), "{text}");
    assert!(text.contains("run the tests under `ttmem run`"), "{text}");
    assert!(
        text.contains("test_leaky: DRAM@0:tt:0 end 2.0 MiB peak 2.0 MiB +2.0 MiB"),
        "{text}"
    );
    assert!(
        text.contains("test_memory_allocated_follows_the_tensor: DRAM@0:tt:0 end 0 B peak 2.0 MiB -2.0 MiB"),
        "{text}"
    );
    assert!(text.contains("1 error"), "{text}");
}

/// The same suite under `ttmem run` with a daemon: the preload reports every buffer, so the
/// leak report lists the tensor the leaky test kept, at the address ttnn gave it, from the
/// daemon's ledger.
#[test]
fn under_ttmem_run_the_pytest_plugin_names_the_leaked_tensor() {
    let Some(rt) = runtime() else { return };
    if !ttmem_in_ttnn_venv(rt) {
        return;
    }
    preload_library();
    let cluster = Cluster::new(N150);
    cluster.prepare(rt);
    let d = Daemon::start_reading(tempfile::tempdir().unwrap(), Path::new("/dev/shm"));
    let mut c = ttmem(&d.regions);
    c.args(["--tt-metal-dir", "/dev/shm", "run", "--"])
        .arg(&rt.python)
        .env("TTMEM_API_SOCKET", &d.socket);
    if std::env::var_os("TTMEM_DEBUG_SUITE").is_some() {
        rt.environment(&mut c, cluster.board, &cluster.yaml, cluster.work.path());
        let o = c.arg("/tmp/dbg.py").output().unwrap();
        panic!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (code, text) = run_ttnn_suite(rt, &cluster, c);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("ERROR at teardown of test_leaky"), "{text}");
    assert!(text.contains("(region source)"), "{text}");
    assert!(text.contains("DRAM: +2.0 MiB (2097152 bytes)"), "{text}");
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.contains("leaked buffers:"))
        .skip(1)
        .take_while(|l| l.starts_with("    0x"))
        .collect();
    assert_eq!(listed.len(), 1, "one leaked tensor: {text}");
    assert!(listed[0].contains("2.0 MiB") && listed[0].contains("DRAM"), "{text}");
    assert!(text.contains("ttnn_suite.py::test_clean PASSED"), "{text}");
    assert!(text.contains("1 error"), "{text}");
}
