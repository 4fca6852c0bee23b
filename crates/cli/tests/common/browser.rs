//! A real browser for the tests: Debian's Chromium, headless, driven over the DevTools
//! protocol on a pipe (`--remote-debugging-pipe`): no WebDriver, nothing downloaded.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::TTMEM;

/// Chromium with a DevTools session on one page.
pub struct Browser {
    child: Child,
    to: std::fs::File,
    from: Receiver<Value>,
    next_id: u64,
    session: String,
    /// Errors the page reported (exceptions, console errors, failed loads).
    pub errors: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    pub fn start() -> Browser {
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

    pub fn page(&mut self, method: &str, params: Value) -> Value {
        let s = self.session.clone();
        self.call(Some(&s), method, params)
    }

    /// Evaluates `expr` in the page and returns its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.page(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(r["exceptionDetails"].is_null(), "{expr}: {}", r["exceptionDetails"]);
        r["result"]["value"].clone()
    }

    /// Saves what the page shows now as `target/screenshots/<name>.png`, an artefact for a
    /// person to look at (and the README's pictures).
    pub fn screenshot(&mut self, name: &str) {
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
    pub fn wait_for(&mut self, expr: &str) {
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

/// Draws a terminal's text (as tmux's capture-pane gives it) in a monospace page and saves a
/// screenshot of it as `target/screenshots/<name>.png`.
pub fn screenshot_terminal(text: &str, cols: u32, rows: u32, name: &str) {
    use base64::Engine as _;
    let escaped = text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let html = format!(
        "<!doctype html><meta charset=utf-8><style>body{{margin:0;background:#141416}}pre{{margin:0;padding:10px;font:14px/17px 'DejaVu Sans Mono',monospace;color:#ececee}}</style><pre>{escaped}</pre>"
    );
    let mut b = Browser::start();
    // About 8.4 px per column of 14 px DejaVu Sans Mono, 17 px per row, and the padding.
    b.page(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": cols * 17 / 2 + 20, "height": rows * 17 + 20, "deviceScaleFactor": 1, "mobile": false}),
    );
    let url = format!(
        "data:text/html;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(html)
    );
    b.page("Page.navigate", json!({"url": url}));
    b.wait_for("document.readyState === 'complete' && !!document.querySelector('pre')");
    b.screenshot(name);
}
