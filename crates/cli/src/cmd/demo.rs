//! `ttmem demo`: a whole ttmem on private paths. A daemon of its own (with its web dashboard
//! and alerts), simulated chips with several workload processes (`ttmem_sim::fleet`), and
//! `ttmem top` on them; `q` or Ctrl-C ends everything and removes what it made.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use ttmem_apiclient::Endpoint;
use ttmem_sim::fleet::{DEMO, Fleet};

use super::{Paths, out};
use crate::args::DemoArgs;

/// The demo's daemon: its alerts evaluated every second, a forecast that looks at the last
/// minute (so the leak is announced while you watch), and few exited processes kept (the
/// crashing workload restarts every few seconds; its dead copies must not crowd the screen).
const CONFIG: &str = r#"legacy_socket = "off"
tt_metal_dir = "off"
retention_s = 30
max_exited_processes = 2
flush_interval_s = 5
hostname = "ttmem-demo"

[alerts]
interval_s = 1
default_rules = true

[[alerts.rules]]
name = "TtmemDramFullSoon"
kind = "forecast"
category = "DRAM"
within_s = 3600
window_s = 60
for_s = 5
"#;

/// A directory of the demo's own, removed when dropped.
struct PrivateDir(PathBuf);

impl PrivateDir {
    fn create() -> anyhow::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .map(PathBuf::from)
            .filter(|d| d.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        let dir = base.join(format!("ttmem-demo-{}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(PrivateDir(dir))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon child, stopped (SIGTERM, then SIGKILL) when dropped.
struct DaemonChild(Child);

impl Drop for DaemonChild {
    fn drop(&mut self) {
        // SAFETY: kill sends SIGTERM to the daemon this process started; no memory is involved.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_daemon(exe: &Path, dir: &Path, port: u16) -> anyhow::Result<(DaemonChild, Endpoint)> {
    let config = dir.join("ttmem.toml");
    std::fs::write(&config, CONFIG)?;
    let log = std::fs::File::create(dir.join("serve.log"))?;
    let child = Command::new(exe)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .arg("--dir")
        .arg(dir.join("regions"))
        .arg("--api-socket")
        .arg(dir.join("api.sock"))
        .arg("--db")
        .arg(dir.join("ttmem.db"))
        .args(["--http", &format!("127.0.0.1:{port}")])
        .env_remove("TTMEM_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start the demo's daemon")?;
    let daemon = DaemonChild(child);
    let endpoint = Endpoint::Tcp(format!("127.0.0.1:{port}"));
    let started = Instant::now();
    while ttmem_apiclient::get(&endpoint, "/api/v1/health").is_err() {
        if started.elapsed() > Duration::from_secs(15) {
            let said = std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default();
            anyhow::bail!("the demo's daemon did not start:\n{}", said.trim());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((daemon, endpoint))
}

pub fn demo(_dir: &Paths, a: &DemoArgs) -> anyhow::Result<ExitCode> {
    let stop = super::stop_on_signals(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]);
    let exe = std::env::current_exe().context("cannot find the ttmem executable")?;
    let private = PrivateDir::create()?;
    let (daemon, endpoint) = start_daemon(&exe, &private.0, free_port()?)?;
    let url = format!("{endpoint}/");
    let fleet = Arc::new(Mutex::new(Fleet::start(&exe, &private.0.join("regions"), &DEMO)?));
    eprintln!(
        "ttmem demo: {} workloads on simulated chips; the dashboard is at {url} (q or Ctrl-C ends it all)",
        DEMO.len()
    );
    if a.open {
        open_in_browser(&url);
    }
    // Restart the crashing workload whenever it dies, so crashes keep coming; end the demo
    // after --duration.
    let done = Arc::new(AtomicBool::new(false));
    let keeper = {
        let (fleet, done) = (fleet.clone(), done.clone());
        let (start, duration) = (Instant::now(), a.duration);
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                if let Ok(mut f) = fleet.lock() {
                    let _ = f.restart_exited();
                }
                if duration.is_some_and(|d| start.elapsed().as_secs_f64() >= d) {
                    stop.store(true, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    let viewed = if a.no_view {
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    } else if std::io::stdout().is_terminal() {
        ttmem_tui::run(ttmem_tui::TopOptions {
            sources: vec![ttmem_tui::source::Source::Daemon {
                label: "demo".into(),
                endpoint: endpoint.clone(),
                fallback: None,
            }],
            refresh_ms: a.refresh_ms,
            no_color: !super::color_allowed(false),
            stop,
        })
        .map_err(anyhow::Error::from)
    } else {
        // Not a terminal: the `ps` table now and then, for logs and scripts.
        let mut next = Instant::now();
        let mut result = Ok(());
        while !stop.load(Ordering::Relaxed) && result.is_ok() {
            if Instant::now() >= next {
                next += Duration::from_millis(a.refresh_ms.max(100));
                result = ttmem_apiclient::get_json::<ttmem_model::Snapshot>(&endpoint, "/api/v1/snapshot")
                    .map_err(anyhow::Error::from)
                    .and_then(|s| out(&format!("{}\n", ttmem_report::render_table(&s))));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        result
    };
    done.store(true, Ordering::Relaxed);
    let _ = keeper.join();
    let stopped = Arc::try_unwrap(fleet)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .map_or(0, Fleet::stop);
    drop(daemon);
    let path = private.0.display().to_string();
    drop(private);
    eprintln!("ttmem demo: stopped {stopped} workload processes and the daemon; removed {path}");
    viewed.map(|()| ExitCode::SUCCESS)
}

/// Opens `url` with the desktop's browser, if there is one to ask.
fn open_in_browser(url: &str) {
    let opened = Command::new("xdg-open")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    if opened.is_err() {
        eprintln!("ttmem demo: no xdg-open here; open {url} yourself");
    }
}
