//! `ttmem top` in a real terminal: tmux runs it against a real daemon with real workloads; keys
//! are sent and the screen read back with capture-pane.

mod common;
use common::*;

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ttmem_apiclient::{Endpoint, get_json};

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private tmux server, so the user's own sessions are never touched.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new() -> Tmux {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let socket = format!("ttmem-test-{}-{n}", std::process::id());
        Tmux { socket }
    }
    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("tmux")
            .args(["-L", &self.socket, "-f", "/dev/null"])
            .args(args)
            .output()
            .expect("tmux must be installed (scripts/setup.sh installs it)")
    }
    fn screen(&self, session: &str) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", session]).stdout).into_owned()
    }
    fn wait_for(&self, session: &str, what: &str) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen(session);
            if s.contains(what) {
                return s;
            }
            // Generous: a loaded 2-core CI machine runs several of these at once.
            if start.elapsed() > Duration::from_secs(40) {
                let out = self.cmd(&["capture-pane", "-p", "-t", session]);
                panic!(
                    "no {what:?} on screen:\n{s}\n(capture-pane: {}, {})",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    fn keys(&self, session: &str, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", session];
        args.extend_from_slice(keys);
        assert!(self.cmd(&args).status.success());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

fn short(bytes: u64) -> String {
    ttmem_report::short_bytes(bytes)
}

#[test]
fn top_in_tmux_shows_the_api_numbers_and_answers_keys() {
    let dir = tempfile::tempdir().unwrap();
    let regions = dir.path().join("regions");
    let socket: PathBuf = dir.path().join("api.sock");
    let _daemon = Kill(
        hermetic()
            .args(["serve", "--no-http", "--no-legacy-socket", "--dir"])
            .arg(&regions)
            .arg("--api-socket")
            .arg(&socket)
            .arg("--db")
            .arg(dir.path().join("db"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ep = Endpoint::Unix(socket.clone());
    let start = Instant::now();
    while get_json::<Value>(&ep, "/api/v1/health").is_err() {
        assert!(start.elapsed() < Duration::from_secs(20));
        std::thread::sleep(Duration::from_millis(50));
    }
    let a = hold(&regions, "llm-inference", "n300", 0, 3);
    let b = hold(&regions, "training", "n150", 2, 3);
    // Wait until the daemon has drained both quiescent workloads, chip by chip.
    let want = [
        a.summary["chips"][0]["categories"][0]["allocated"].clone(),
        a.summary["chips"][1]["categories"][0]["allocated"].clone(),
        b.summary["chips"][0]["categories"][0]["allocated"].clone(),
    ];
    wait_until(|| {
        let d = get_json::<Value>(&ep, "/api/v1/devices").unwrap();
        (0..3).all(|i| d["devices"][i]["categories"][0]["used"] == want[i])
    });
    let devices: Value = get_json(&ep, "/api/v1/devices").unwrap();

    let tmux = Tmux::new();
    let top = format!(
        "{TTMEM} top --api-socket {} -r 200; echo TTMEM-TOP-EXITED; sleep 30",
        socket.display()
    );
    assert!(
        tmux.cmd(&["new-session", "-d", "-s", "top", "-x", "160", "-y", "50", &top])
            .status
            .success()
    );
    tmux.wait_for("top", "3 devices");
    let screen = tmux.wait_for("top", "2 processes (2 running)");
    // Every chip panel shows the API's numbers.
    for d in devices["devices"].as_array().unwrap() {
        let dram = &d["categories"][0];
        let text = format!(
            "{}/{}",
            short(dram["used"].as_u64().unwrap()),
            short(dram["total"].as_u64().unwrap())
        );
        assert!(screen.contains(&text), "chip {} should show {text}:\n{screen}", d["id"]);
        assert!(screen.contains(&format!("{} {}", d["id"], d["name"].as_str().unwrap())));
    }
    assert!(
        screen.contains("free≤"),
        "the memory map comes from the daemon:\n{screen}"
    );
    assert!(screen.contains("PID▲"));

    // Sort by the next column, then reverse it.
    tmux.keys("top", &["s"]);
    tmux.wait_for("top", "USER▲");
    tmux.keys("top", &["r"]);
    tmux.wait_for("top", "USER▼");

    // Drill down into the first process: its live allocations, as the API counts them.
    tmux.keys("top", &["Enter"]);
    let detail = tmux.wait_for("top", "live allocations (");
    let pid: u32 = detail
        .split("pid ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let page: Value = get_json(&ep, &format!("/api/v1/processes/{pid}/allocations?limit=1")).unwrap();
    assert!(
        detail.contains(&format!("live allocations ({} in all", page["total"])),
        "{detail}"
    );
    assert!(detail.contains("recent events"));
    tmux.keys("top", &["Escape"]);
    tmux.wait_for("top", "USER▼");

    // Help, then quit: the terminal is given back (the shell prints after top).
    tmux.keys("top", &["?"]);
    tmux.wait_for("top", "keys (? closes)");
    tmux.keys("top", &["?"]);
    tmux.keys("top", &["q"]);
    let after = tmux.wait_for("top", "TTMEM-TOP-EXITED");
    assert!(!after.contains("PID▲"), "the alternate screen was left:\n{after}");
}

#[test]
fn sigterm_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    // Without a daemon or regions it still runs (reading an empty directory); SIGTERM ends it.
    let script = format!(
        "timeout --foreground -s TERM 2 {TTMEM} top --no-daemon --tt-metal-dir off --dir {} -r 200; stty -a | grep -o -- '-\\?icanon' | head -1 | sed 's/^/MODE:/'; sleep 30",
        dir.path().display()
    );
    assert!(
        tmux.cmd(&["new-session", "-d", "-s", "term", "-x", "120", "-y", "30", &script])
            .status
            .success()
    );
    tmux.wait_for("term", "No devices");
    let screen = tmux.wait_for("term", "MODE:");
    assert!(
        screen.contains("MODE:icanon"),
        "canonical mode is back after SIGTERM:\n{screen}"
    );
}

#[test]
fn top_exits_when_its_terminal_goes_away() {
    let dir = tempfile::tempdir().unwrap();
    let tmux = Tmux::new();
    let cmd = format!(
        "{TTMEM} top --no-daemon --tt-metal-dir off --dir {} -r 200",
        dir.path().display()
    );
    assert!(
        tmux.cmd(&["new-session", "-d", "-s", "gone", "-x", "100", "-y", "30", &cmd])
            .status
            .success()
    );
    tmux.wait_for("gone", "No devices");
    let pid: i32 = String::from_utf8_lossy(&tmux.cmd(&["display", "-p", "-t", "gone", "#{pane_pid}"]).stdout)
        .trim()
        .parse()
        .unwrap();
    // The terminal disappears without a word: top must notice and exit, not spin.
    let _ = tmux.cmd(&["kill-server"]);
    let start = Instant::now();
    // An exited process whose new parent has not reaped it yet is a zombie ("Z"): gone.
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
        })
    };
    while running() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "ttmem top (pid {pid}) outlived its terminal"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_firing_alert_shows_in_top_and_goes_when_it_resolves() {
    let d = Daemon::start_with(
        "[alerts]\ninterval_s = 1\ndefault_rules = false\n[[alerts.rules]]\nname = \"DramUsed\"\nkind = \"threshold\"\ncategory = \"DRAM\"\nabove_percent = 10\n",
    );
    let (regions, socket) = (&d.regions, &d.socket);
    let held = hold(regions, "training", "n150", 0, 3);
    let tmux = Tmux::new();
    let top = format!("{TTMEM} top --api-socket {} -r 200; sleep 30", socket.display());
    assert!(
        tmux.cmd(&["new-session", "-d", "-s", "top", "-x", "160", "-y", "40", &top])
            .status
            .success()
    );
    let screen = tmux.wait_for("top", "ALERT DramUsed: DRAM of chip 0");
    // The line sits under the two header lines.
    assert!(
        screen.lines().nth(2).is_some_and(|l| l.starts_with("ALERT DramUsed")),
        "{screen}"
    );
    drop(held);
    let start = Instant::now();
    while tmux.screen("top").contains("ALERT") {
        assert!(start.elapsed() < Duration::from_secs(20), "{}", tmux.screen("top"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_demo_runs_a_whole_ttmem_in_80x24_and_leaves_nothing_behind() {
    let tmux = Tmux::new();
    let runtime = tempfile::tempdir().unwrap();
    let cmd = format!(
        "XDG_RUNTIME_DIR={} {TTMEM} demo -r 300; echo DEMO-EXITED; sleep 30",
        runtime.path().display()
    );
    assert!(
        tmux.cmd(&["new-session", "-d", "-s", "demo", "-x", "80", "-y", "24", &cmd])
            .status
            .success()
    );
    // Its own daemon, on a port of its own: top reads it, and the same URL serves the page.
    let screen = tmux.wait_for("demo", "6 devices");
    let url = screen
        .lines()
        .find_map(|l| l.strip_prefix("source: daemon "))
        .unwrap_or_else(|| panic!("no daemon source line:\n{screen}"))
        .trim()
        .to_string();
    let ep = Endpoint::parse(&url).unwrap();
    let (status, page) = ttmem_apiclient::get(&ep, "/").unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("<title>ttmem</title>"));
    let private: Vec<PathBuf> = std::fs::read_dir(runtime.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(private.len(), 1, "one private directory: {private:?}");
    // The crashing workload dies every few seconds; its dead copies never push the five live
    // workloads off the 24 lines.
    std::thread::sleep(Duration::from_secs(12));
    let screen = tmux.screen("demo");
    assert!(screen.lines().count() <= 24);
    // Process rows: the pid, the user, then a workload's name.
    let rows = |state: &str| {
        screen
            .lines()
            .filter(|l| {
                let words: Vec<&str> = l.split_whitespace().collect();
                words.len() > 4 && words[0].parse::<u32>().is_ok() && words[2].starts_with("sim:") && words[4] == state
            })
            .count()
    };
    assert!(rows("runni") >= 4, "live workloads on screen:\n{screen}");
    assert!(rows("exite") <= 2, "{screen}");
    // The README's picture of it.
    if have_tools(
        &["chromium", "chromedriver"],
        "the_demo_runs_a_whole_ttmem_in_80x24_and_leaves_nothing_behind",
    ) {
        common::browser::screenshot_terminal(&screen, 80, 24, "top-demo");
    }
    // q ends everything: top, the workloads, the daemon, and the private directory.
    tmux.keys("demo", &["q"]);
    let after = tmux.wait_for("demo", "DEMO-EXITED");
    assert!(after.contains("stopped 5 workload processes and the daemon"), "{after}");
    assert!(!private[0].exists(), "{} is left", private[0].display());
    assert!(
        ttmem_apiclient::get(&ep, "/api/v1/health").is_err(),
        "the daemon still answers"
    );
}
