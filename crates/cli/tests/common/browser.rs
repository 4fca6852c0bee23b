//! A real browser for the tests: Debian's Chromium, headless, driven through Debian's
//! chromedriver over WebDriver (fantoccini), with a fresh profile; nothing is downloaded.
//!
//! Standard WebDriver does navigation, scripts, input actions and screenshots. Two things it
//! has no command for use chromedriver's own endpoints: device emulation (a phone's width, the
//! dark colour scheme) through `goog/cdp/execute`, and the page's console through the
//! browser log (`goog:loggingPrefs`, `se/log`).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions, MouseActions, PointerAction};
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use super::TTMEM;

/// The flags every browser of the tests starts with (the profile directory is added).
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-extensions",
];

/// Chromium under chromedriver, with one WebDriver session.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    /// Console errors, exceptions and failed loads seen so far (see [`Browser::check_console`]).
    pub errors: Vec<String>,
    _profile: tempfile::TempDir,
}

/// A chromedriver command outside the WebDriver standard: `POST /session/{id}/<path>`.
#[derive(Debug)]
struct Chromedriver {
    path: &'static str,
    body: Value,
}

impl WebDriverCompatibleCommand for Chromedriver {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/{}", session_id.unwrap_or_default(), self.path))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(self.body.to_string()))
    }
}

fn chromium() -> String {
    std::env::var("TTMEM_CHROMIUM").unwrap_or_else(|_| {
        // The browser itself: Debian's `chromium` is a wrapper script.
        let real = "/usr/lib/chromium/chromium";
        if Path::new(real).exists() {
            real.into()
        } else {
            "/usr/bin/chromium".into()
        }
    })
}

impl Browser {
    pub fn start() -> Browser {
        let profile = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(std::env::var("TTMEM_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into()))
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver runs (scripts/setup.sh installs chromium-driver)");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|s| s.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium(), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let url = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        let client = loop {
            let connected = rt.block_on(async {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await
            });
            match connected {
                Ok(c) => break c,
                Err(e) if start.elapsed() > Duration::from_secs(30) => panic!("no WebDriver session at {url}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        Browser {
            rt,
            client: Some(client),
            driver,
            errors: Vec::new(),
            _profile: profile,
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn chromedriver(&mut self, path: &'static str, body: Value) -> Value {
        let cmd = Chromedriver { path, body };
        let what = format!("{cmd:?}");
        let client = self.client().clone();
        self.rt
            .block_on(async move { client.issue_cmd(cmd).await })
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// A DevTools command through chromedriver (`goog/cdp/execute`), for what WebDriver has no
    /// command for.
    fn cdp(&mut self, cmd: &str, params: Value) -> Value {
        self.chromedriver("goog/cdp/execute", json!({"cmd": cmd, "params": params}))
    }

    /// Lays the page out as a screen of this size (a phone when `mobile`).
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        let scale = if mobile { 2 } else { 1 };
        self.cdp(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile}),
        );
    }

    /// Makes the page see `prefers-color-scheme: dark`.
    pub fn prefer_dark(&mut self) {
        self.cdp(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
        );
    }

    pub fn goto(&mut self, url: &str) {
        let client = self.client().clone();
        let url = url.to_string();
        self.rt
            .block_on(async move { client.goto(&url).await })
            .unwrap_or_else(|e| panic!("navigating: {e}"));
    }

    /// Runs `script` (a function body) in the page; a promise it returns is awaited.
    fn execute(&mut self, script: String) -> Value {
        let client = self.client().clone();
        let what = script.clone();
        self.rt
            .block_on(async move { client.execute(&script, vec![]).await })
            .unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Evaluates the expression `expr` in the page (a promise is awaited) and returns its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        self.execute(format!("return ({expr});"))
    }

    /// Runs statements in the page.
    pub fn run(&mut self, statements: &str) {
        self.execute(statements.to_string());
    }

    /// Moves the mouse to a point of the viewport.
    pub fn mouse_move(&mut self, x: f64, y: f64) {
        self.mouse(vec![PointerAction::MoveTo { duration: None, x, y }]);
    }

    /// Presses the left button at `from`, moves to `to` and releases it there.
    pub fn drag(&mut self, from: (f64, f64), to: (f64, f64)) {
        self.mouse(vec![
            PointerAction::MoveTo {
                duration: None,
                x: from.0,
                y: from.1,
            },
            PointerAction::Down {
                button: fantoccini::actions::MOUSE_BUTTON_LEFT,
            },
            PointerAction::MoveTo {
                duration: Some(Duration::from_millis(50)),
                x: to.0,
                y: to.1,
            },
            PointerAction::Up {
                button: fantoccini::actions::MOUSE_BUTTON_LEFT,
            },
        ]);
    }

    fn mouse(&mut self, actions: Vec<PointerAction>) {
        let seq = actions
            .into_iter()
            .fold(MouseActions::new("mouse".into()), |s, a| s.then(a));
        let client = self.client().clone();
        self.rt
            .block_on(async move { client.perform_actions(seq).await })
            .unwrap_or_else(|e| panic!("mouse actions: {e}"));
    }

    /// Presses and releases a key (`fantoccini::key::Key` as a char, e.g. Tab).
    pub fn key(&mut self, key: char) {
        let seq = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key })
            .then(KeyAction::Up { value: key });
        let client = self.client().clone();
        self.rt
            .block_on(async move { client.perform_actions(seq).await })
            .unwrap_or_else(|e| panic!("key actions: {e}"));
    }

    /// Saves what the page shows now as `target/screenshots/<name>.png`, an artefact for a
    /// person to look at (and the README's pictures).
    pub fn screenshot(&mut self, name: &str) {
        let client = self.client().clone();
        let png = self
            .rt
            .block_on(async move { client.screenshot().await })
            .unwrap_or_else(|e| panic!("screenshot: {e}"));
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

    /// Reads the browser's console log since the last read into [`Browser::errors`]: console
    /// errors, uncaught exceptions and failed loads (chromedriver's `SEVERE` entries).
    pub fn check_console(&mut self) {
        let log = self.chromedriver("se/log", json!({"type": "browser"}));
        for entry in log.as_array().into_iter().flatten() {
            if entry["level"] == "SEVERE" {
                self.errors.push(entry["message"].to_string());
            }
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session, which closes Chromium.
            let _ = self.rt.block_on(async move { client.close().await });
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
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
    b.viewport(cols * 17 / 2 + 20, rows * 17 + 20, false);
    let url = format!(
        "data:text/html;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(html)
    );
    b.goto(&url);
    b.wait_for("document.readyState === 'complete' && !!document.querySelector('pre')");
    b.screenshot(name);
}
