//! The web dashboard in a real browser: headless Chromium, driven over the DevTools protocol on
//! a pipe (`--remote-debugging-pipe`), against a real daemon with real workloads. It checks
//! what a person sees (chip cards with the API's figures, processes, a firing alert), that live
//! updates arrive over the stream, the phone-width and dark layouts, keyboard-reachable
//! controls, and that the console stays free of errors.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Chromium with a DevTools session on one page.
struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Errors the page reported (exceptions, console errors, failed loads).
    errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let (chrome_reads, we_write) = std::io::pipe().unwrap();
        let (we_read, chrome_writes) = std::io::pipe().unwrap();
        let (r, w): (OwnedFd, OwnedFd) = (chrome_reads.into(), chrome_writes.into());
        let (r_fd, w_fd) = (r.as_raw_fd(), w.as_raw_fd());
        // The browser itself: Debian's `chromium` is a shell script that does not pass the
        // DevTools pipe on.
        let binary = std::env::var("TTMEM_CHROMIUM").unwrap_or_else(|_| {
            let real = "/usr/lib/chromium/chromium";
            if Path::new(real).exists() {
                real.into()
            } else {
                "chromium".into()
            }
        });
        let mut cmd = Command::new(binary);
        cmd.args([
            "--headless",
            "--remote-debugging-pipe",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("about:blank")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec only fcntl, dup2 and close run (async-signal-safe), on
        // descriptors this process owns. DevTools reads commands on fd 3 and writes on fd 4; the
        // pipes are first copied above 10, since one of them may already be 3 or 4 (and dup2
        // onto itself would keep its close-on-exec flag).
        unsafe {
            cmd.pre_exec(move || {
                let r = libc::fcntl(r_fd, libc::F_DUPFD, 10);
                let w = libc::fcntl(w_fd, libc::F_DUPFD, 10);
                if r < 0 || w < 0 || libc::dup2(r, 3) < 0 || libc::dup2(w, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(r);
                libc::close(w);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("chromium runs (scripts/setup.sh installs it)");
        drop((r, w));
        let (tx, from) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(we_read);
            let mut buf = Vec::new();
            while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
                buf.pop();
                if let Ok(v) = serde_json::from_slice::<Value>(&buf)
                    && tx.send(v).is_err()
                {
                    return;
                }
                buf.clear();
            }
        });
        let mut b = Browser {
            child,
            to: std::fs::File::from(OwnedFd::from(we_write)),
            from,
            next_id: 0,
            session: String::new(),
            errors: Vec::new(),
            _profile: profile,
        };
        let target = b.call(None, "Target.createTarget", json!({"url": "about:blank"}));
        let attached = b.call(
            None,
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            b.page(domain, json!({}));
        }
        b
    }

    /// Sends a command and waits for its answer, noting the page's errors on the way.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = match self.from.recv_timeout(left) {
                Ok(v) => v,
                Err(RecvTimeoutError::Timeout) => panic!("no answer to {method}"),
                Err(RecvTimeoutError::Disconnected) => panic!("chromium went away during {method}"),
            };
            self.note(&v);
            if v["id"] == id {
                assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                return v["result"].clone();
            }
        }
    }

    fn note(&mut self, v: &Value) {
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => self.errors.push(v["params"]["exceptionDetails"].to_string()),
            Some("Runtime.consoleAPICalled") if v["params"]["type"] == "error" => {
                self.errors.push(v["params"]["args"].to_string())
            }
            Some("Log.entryAdded") if v["params"]["entry"]["level"] == "error" => self.errors.push(format!(
                "{} ({})",
                v["params"]["entry"]["text"], v["params"]["entry"]["url"]
            )),
            _ => {}
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.call(Some(&s), method, params)
    }

    /// Evaluates `expr` in the page and returns its value.
    fn eval(&mut self, expr: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r["exceptionDetails"].is_null(), "{expr}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Saves what the page shows now as `target/screenshots/<name>.png`, an artefact for a
    /// person to look at (and the README's pictures).
    fn screenshot(&mut self, name: &str) {
        use base64::Engine as _;
        let shot = self.page("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        let dir = Path::new(TTMEM).parent().unwrap().parent().unwrap().join("screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Waits until `expr` is true in the page.
    fn wait_for(&mut self, expr: &str) {
        let start = Instant::now();
        while self.eval(expr) != Value::Bool(true) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "never true: {expr}\n{}",
                self.eval("document.body.innerText")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_dashboard_shows_the_hosts_chips_processes_and_alerts_live() {
    if !have_tools(
        &["chromium"],
        "the_dashboard_shows_the_hosts_chips_processes_and_alerts_live",
    ) {
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = Daemon::start_with(&format!(
        "http = \"127.0.0.1:{port}\"\nhostname = \"tt-web-test\"\napi_tcp_detail = true\n[alerts]\ninterval_s = 1\ndefault_rules = false\n[[alerts.rules]]\nname = \"DramUsed\"\nkind = \"threshold\"\ncategory = \"DRAM\"\nabove_percent = 10\n"
    ));
    let held = hold(&d.regions, "training", "n300", 0, 3);
    // Once the daemon holds what the workload's allocator says it holds, chip by chip.
    let want: Vec<Value> = (0..2)
        .map(|i| held.summary["chips"][i]["categories"][0]["allocated"].clone())
        .collect();
    let dram = |d: &Daemon| -> Vec<Value> {
        d.get("/api/v1/devices")["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["categories"][0]["used"].clone())
            .collect()
    };
    wait_until(|| dram(&d) == want);
    let devices = d.get("/api/v1/devices");

    let mut b = Browser::start();
    b.page(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": false}),
    );
    let url = format!("http://127.0.0.1:{port}/");
    b.page("Page.navigate", json!({"url": url}));
    b.wait_for("document.querySelectorAll('[data-device]').length === 2");
    b.wait_for("document.querySelector('#status').textContent === 'live'");
    assert_eq!(b.eval("document.title"), "ttmem · tt-web-test");
    // Each chip card carries the API's exact figures in its gauges' labels.
    for dev in devices["devices"].as_array().unwrap() {
        let id = dev["id"].as_u64().unwrap();
        let dram = dev["categories"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "DRAM")
            .unwrap();
        let label = format!(
            "DRAM: {} of {} bytes",
            format_thousands(dram["used"].as_u64().unwrap()),
            format_thousands(dram["total"].as_u64().unwrap())
        );
        let labels = b.eval(&format!(
            "[...document.querySelectorAll('[data-device=\"{id}\"] [role=meter]')].map(m => m.getAttribute('aria-label')).join('\\n')"
        ));
        assert!(
            labels.as_str().unwrap().contains(&label),
            "chip {id}: want {label} in {labels}"
        );
    }
    // The process, and the alert the threshold fires, arrive over the stream.
    b.wait_for(&format!("!!document.querySelector('tr[data-pid=\"{}\"]')", pid(&held)));
    b.wait_for(
        "[...document.querySelectorAll('#alert-list li')].some(li => li.textContent.startsWith('FIRING DramUsed'))",
    );

    // DRAM over time: a line per chip, from the history and then the stream.
    b.wait_for("!!document.querySelector('[data-device=\"0\"] svg.spark path')");
    b.screenshot("dashboard-host");

    // The chip page: a map per buffer type with the largest free block outlined, and the fit
    // form answering as the API does.
    b.eval("location.hash = '#/chip/0'");
    b.wait_for("!document.querySelector('#view-chip').hidden && !!document.querySelector('.map[data-category=DRAM] .cells .gap')");
    assert_eq!(
        b.eval("document.querySelectorAll('.map[data-category=DRAM] .cells > div').length"),
        128
    );
    let fit = d.get("/api/v1/fit?device=0&category=DRAM&bytes=1073741824");
    b.eval("document.querySelector('#fit-bytes').value = '1G'; document.querySelector('#fit-category').value = 'DRAM'; document.querySelector('#fit-form').requestSubmit()");
    let want = if fit["fits"] == true { "Yes" } else { "No" };
    b.wait_for(&format!(
        "(document.querySelector('#fit-answer p')?.textContent ?? '').startsWith('{want}:')"
    ));
    assert_eq!(
        b.eval("document.querySelectorAll('#fit-answer li').length"),
        fit["best_gaps"].as_array().unwrap().len()
    );
    b.screenshot("dashboard-chip");
    // The process page: its allocations, as many as the API counts, and its recent events.
    let total = d.get(&format!("/api/v1/processes/{}/allocations?limit=1", pid(&held)))["total"].clone();
    b.eval(&format!("location.hash = '#/process/{}'", pid(&held)));
    b.wait_for(&format!(
        "document.querySelector('#alloc-count').textContent === '({} in all)'",
        format_thousands(total.as_u64().unwrap())
    ));
    b.wait_for("document.querySelectorAll('#allocs tbody tr').length === Math.min(50, Number(document.querySelector('#alloc-count').textContent.replace(/[^0-9]/g, '')))");
    b.wait_for("document.querySelectorAll('#events li').length > 0");
    b.screenshot("dashboard-process");
    b.eval("location.hash = '#/'");
    b.wait_for("!document.querySelector('#view-overview').hidden");

    // Live: a second workload appears without a reload; the first one's end resolves alerts.
    let second = hold(&d.regions, "llm-inference", "n150", 2, 3);
    b.wait_for("document.querySelectorAll('[data-device]').length === 3");
    b.wait_for(&format!(
        "!!document.querySelector('tr[data-pid=\"{}\"]')",
        pid(&second)
    ));
    let first = pid(&held);
    drop(held);
    drop(second);
    b.wait_for("document.querySelector('#alerts').hidden");
    b.wait_for("[...document.querySelectorAll('#procs tbody tr')].every(tr => tr.classList.contains('exited'))");
    // The flight recorder of the process that was killed: its last buffer events.
    b.eval(&format!("location.hash = '#/process/{first}'"));
    b.wait_for("document.querySelector('#proc-meta').textContent.includes('exited')");
    b.wait_for("document.querySelectorAll('#events li').length > 0");
    b.eval("location.hash = '#/'");
    b.wait_for("!document.querySelector('#view-overview').hidden");

    // The table sorts from the keyboard: Tab reaches the sort buttons, Enter on one sorts.
    b.page("Page.bringToFront", json!({}));
    let mut tabs = 0;
    while b.eval("document.activeElement?.dataset?.sort === 'pid'") != Value::Bool(true) {
        b.page(
            "Input.dispatchKeyEvent",
            json!({"type": "keyDown", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}),
        );
        b.page(
            "Input.dispatchKeyEvent",
            json!({"type": "keyUp", "key": "Tab", "code": "Tab", "windowsVirtualKeyCode": 9}),
        );
        tabs += 1;
        assert!(tabs < 20, "Tab never reached the PID column's button");
    }
    b.page(
        "Input.dispatchKeyEvent",
        json!({"type": "keyDown", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13, "text": "\r"}),
    );
    b.page(
        "Input.dispatchKeyEvent",
        json!({"type": "keyUp", "key": "Enter", "code": "Enter", "windowsVirtualKeyCode": 13}),
    );
    b.wait_for(
        "document.querySelector('th button[data-sort=pid]').closest('th').getAttribute('aria-sort') === 'ascending'",
    );

    // A phone-width screen: nothing wider than the screen.
    b.page(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 390, "height": 844, "deviceScaleFactor": 2, "mobile": true}),
    );
    b.wait_for("document.documentElement.scrollWidth <= window.innerWidth");
    b.screenshot("dashboard-phone");
    // Dark: the page follows the system's colour scheme.
    let light = b.eval("getComputedStyle(document.body).backgroundColor");
    b.page(
        "Emulation.setEmulatedMedia",
        json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    let dark = b.eval("getComputedStyle(document.body).backgroundColor");
    assert_ne!(light, dark);
    b.screenshot("dashboard-phone-dark");
    // Nothing went wrong in the page.
    let _ = b.eval("1");
    assert!(b.errors.is_empty(), "browser console: {:#?}", b.errors);
}

#[test]
fn the_dashboards_files_are_embedded_and_locked_to_the_daemon() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _d = Daemon::start_with(&format!("http = \"127.0.0.1:{port}\"\n"));
    let get = |path: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        std::io::Read::read_to_string(&mut s, &mut out).unwrap();
        out
    };
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let lower = page.to_ascii_lowercase();
    assert!(lower.contains("content-type: text/html"));
    assert!(lower.contains("content-security-policy: default-src 'self'"));
    // Nothing from elsewhere: every script and style is the daemon's own.
    for asset in ["/ui/app.js", "/ui/app.css", "/ui/icon.svg"] {
        assert!(page.contains(asset), "{asset}");
        assert!(get(asset).starts_with("HTTP/1.1 200"));
    }
    assert!(!page.contains("http://") && !page.contains("https://"));
    assert!(!get("/ui/app.js").contains("https://"));
}

/// `n` with commas every three digits, as the page's `toLocaleString()` writes it in en-US.
fn format_thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
