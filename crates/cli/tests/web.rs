//! The web dashboard in a real browser: Debian's headless Chromium, driven through Debian's
//! chromedriver over WebDriver (fantoccini), against a real daemon with real workloads. It checks
//! what a person sees (chip cards with the API's figures, processes, a firing alert), that live
//! updates arrive over the stream, the phone-width and dark layouts, keyboard-reachable
//! controls, and that the console stays free of errors.

mod common;
use common::*;

use std::io::Write;

use common::browser::Browser;

/// WebDriver's key codes for Tab and Enter.
const TAB: char = '\u{e004}';
const ENTER: char = '\u{e007}';
use serde_json::Value;
use ttmem_apiclient::get_json;

#[test]
fn the_dashboard_shows_the_hosts_chips_processes_and_alerts_live() {
    if !have_tools(
        &["chromium", "chromedriver"],
        "the_dashboard_shows_the_hosts_chips_processes_and_alerts_live",
    ) {
        return;
    }
    let port = free_port();
    let d = Daemon::start_with(&format!(
        "http = \"127.0.0.1:{port}\"\nhostname = \"tt-web-test\"\napi_tcp_detail = true\n[alerts]\ninterval_s = 1\ndefault_rules = false\n[[alerts.rules]]\nname = \"DramUsed\"\nkind = \"threshold\"\ncategory = \"DRAM\"\nabove_percent = 10\n"
    ));
    let held = hold_n300_drained(&d);
    let devices = d.get("/api/v1/devices");

    let mut b = Browser::start();
    b.viewport(1280, 800, false);
    b.goto(&format!("http://127.0.0.1:{port}/"));
    b.wait_for("document.querySelectorAll('[data-device]').length === 2");
    b.wait_for("document.querySelector('#status').textContent === 'live'");
    assert_eq!(b.eval("document.title"), "ttmem · tt-web-test");
    // Each chip card carries the API's exact figures in its gauges' labels.
    for dev in devices["devices"].as_array().unwrap() {
        let id = dev["id"].as_u64().unwrap();
        let labels = gauge_labels(&mut b, &format!("[data-device=\"{id}\"]"));
        assert!(labels.contains(&dram_label(dev)), "chip {id}: {labels}");
    }
    // The process, and the alert the threshold fires, arrive over the stream.
    b.wait_for(&format!("!!document.querySelector('tr[data-pid=\"{}\"]')", pid(&held)));
    b.wait_for(
        "[...document.querySelectorAll('#alert-list li')].some(li => li.textContent.startsWith('FIRING DramUsed'))",
    );

    // DRAM over time: a line per chip, from the history and then the stream.
    b.wait_for("!!document.querySelector('[data-device=\"0\"] svg.spark path')");
    // Hovering a chip's line reads its exact bytes, and keeps them through live redraws.
    let spark = b.eval("(() => { const r = document.querySelector('[data-device=\"0\"] svg.spark').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()");
    let s: Vec<f64> = spark.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    b.mouse_move(s[0] + s[2] - 1.0, s[1] + s[3] / 2.0);
    let chip0 = d.get("/api/v1/devices")["devices"][0]["categories"][0]["used"]
        .as_u64()
        .unwrap();
    let readout = format!("{} bytes of DRAM", format_thousands(chip0));
    b.wait_for(&format!(
        "document.querySelector('[data-spark=\"0\"] .spark-readout').textContent.endsWith('{readout}')"
    ));
    std::thread::sleep(std::time::Duration::from_millis(1200));
    b.wait_for(&format!(
        "document.querySelector('[data-spark=\"0\"] .spark-readout').textContent.endsWith('{readout}')"
    ));
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
    b.run("document.querySelector('#fit-bytes').value = '1G'; document.querySelector('#fit-category').value = 'DRAM'; document.querySelector('#fit-form').requestSubmit()");
    let want = if fit["fits"] == true { "Yes" } else { "No" };
    b.wait_for(&format!(
        "(document.querySelector('#fit-answer p')?.textContent ?? '').startsWith('{want}:')"
    ));
    assert_eq!(
        b.eval("document.querySelectorAll('#fit-answer li').length"),
        fit["best_gaps"].as_array().unwrap().len()
    );
    // Cells are coloured by the process holding most of each, as the map answer names it, and
    // the key links to that process.
    let map = d.get("/api/v1/devices/0/map?category=DRAM&cells=128");
    let owners: Vec<String> = map["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().map_or(String::new(), |p| p.to_string()))
        .collect();
    assert!(owners.contains(&pid(&held).to_string()), "{map}");
    let shown = b.eval(
        "[...document.querySelectorAll('.map[data-category=DRAM] .cells > div')].map(c => c.dataset.owner).join(',')",
    );
    assert_eq!(shown.as_str().unwrap(), owners.join(","));
    assert_eq!(
        b.eval("document.querySelector('.map[data-category=DRAM] .owners a').getAttribute('href')"),
        format!("#/process/{}", pid(&held))
    );
    // The history chart: hovering reads the API's exact value at that time; dragging zooms.
    b.wait_for("!!document.querySelector('.chart[data-category=DRAM] svg path')");
    let now_dram = d.get("/api/v1/devices")["devices"][0]["categories"][0]["used"]
        .as_u64()
        .unwrap();
    let rect = b.eval("(() => { document.querySelector('.chart[data-category=DRAM]').scrollIntoView({block: 'center'}); const r = document.querySelector('.chart[data-category=DRAM] svg').getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()");
    let r: Vec<f64> = rect.as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let (right, mid) = (r[0] + r[2] - 2.0, r[1] + r[3] / 2.0);
    b.mouse_move(right, mid);
    b.wait_for(&format!(
        "document.querySelector('.chart[data-category=DRAM] .readout').textContent.includes('{} bytes')",
        format_thousands(now_dram)
    ));
    b.drag((r[0] + r[2] * 0.5, mid), (right, mid));
    b.wait_for("[...document.querySelectorAll('#zoom button')].every(b => b.getAttribute('aria-pressed') === 'false')");
    b.eval("document.querySelector('#zoom button[data-window=\"600\"]').click()");
    b.wait_for("document.querySelector('#zoom button[data-window=\"600\"]').getAttribute('aria-pressed') === 'true'");
    b.eval("window.scrollTo(0, 0)");
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
    // The timeline draws one mark per recorded event.
    b.wait_for("document.querySelectorAll('#timeline svg line.alloc, #timeline svg line.free').length === document.querySelectorAll('#events li').length");
    // The download buttons fetch the exports: a trace that parses, and a pickle.
    let fetched = b.eval(
        "Promise.all([document.querySelector('#dl-perfetto').href, document.querySelector('#dl-memory-viz').href].map(async u => { const r = await fetch(u); const buf = new Uint8Array(await r.arrayBuffer()); return [r.status, r.headers.get('content-disposition'), buf[0], buf.length]; }))",
    );
    let perfetto = &fetched[0];
    assert_eq!(perfetto[0], 200, "{fetched}");
    assert!(
        perfetto[1]
            .as_str()
            .unwrap()
            .contains(&format!("ttmem-{}.trace.json", pid(&held)))
    );
    assert_eq!(perfetto[2], u64::from(b'{'));
    let pickle = &fetched[1];
    assert_eq!(
        (pickle[0].as_u64(), pickle[2].as_u64()),
        (Some(200), Some(0x80)),
        "{fetched}"
    );
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
    let mut tabs = 0;
    while b.eval("document.activeElement?.dataset?.sort === 'pid'") != Value::Bool(true) {
        b.key(TAB);
        tabs += 1;
        assert!(tabs < 20, "Tab never reached the PID column's button");
    }
    b.key(ENTER);
    b.wait_for(
        "document.querySelector('th button[data-sort=pid]').closest('th').getAttribute('aria-sort') === 'ascending'",
    );

    // A phone-width screen: nothing wider than the screen.
    b.viewport(390, 844, true);
    b.wait_for("document.documentElement.scrollWidth <= window.innerWidth");
    b.screenshot("dashboard-phone");
    // Dark: the page follows the system's colour scheme.
    let light = b.eval("getComputedStyle(document.body).backgroundColor");
    b.prefer_dark();
    let dark = b.eval("getComputedStyle(document.body).backgroundColor");
    assert_ne!(light, dark);
    b.screenshot("dashboard-phone-dark");
    // Nothing went wrong in the page.
    b.check_console();
    assert!(b.errors.is_empty(), "browser console: {:#?}", b.errors);
}

/// A training workload on an n300 (two chips), once the daemon holds what the workload's
/// allocator says it holds, chip by chip (it may still be draining when the workload holds).
fn hold_n300_drained(d: &Daemon) -> Held {
    let held = hold(&d.regions, "training", "n300", 0, 3);
    let want: Vec<Value> = (0..2)
        .map(|i| held.summary["chips"][i]["categories"][0]["allocated"].clone())
        .collect();
    wait_until(|| {
        let devices = d.get("/api/v1/devices");
        let dram: Vec<Value> = devices["devices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["categories"][0]["used"].clone())
            .collect();
        dram == want
    });
    held
}

/// Each chip's gauge labels on the page, by the card's attribute value.
fn gauge_labels(b: &mut Browser, selector: &str) -> String {
    b.eval(&format!(
        "[...document.querySelectorAll('{selector} [role=meter]')].map(m => m.getAttribute('aria-label')).join('\\n')"
    ))
    .as_str()
    .unwrap()
    .to_string()
}

/// The DRAM label a gauge carries for this device of an API answer.
fn dram_label(dev: &Value) -> String {
    let dram = dev["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "DRAM")
        .unwrap();
    format!(
        "DRAM: {} of {} bytes",
        format_thousands(dram["used"].as_u64().unwrap()),
        format_thousands(dram["total"].as_u64().unwrap())
    )
}

/// A server on a free port that answers every request with an HTML page holding a script.
fn html_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut head);
            let body = "<html><script>alert(document.cookie)</script></html>";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn the_dashboard_shows_other_hosts_through_its_own_daemon() {
    if !have_tools(
        &["chromium", "chromedriver"],
        "the_dashboard_shows_other_hosts_through_its_own_daemon",
    ) {
        return;
    }
    // Host B runs a workload; host A runs none and names B, a host that is down and a server
    // that is no ttmem daemon (it answers every request with a page and a script) as peers.
    let (port_a, port_b, port_down) = (free_port(), free_port(), free_port());
    let port_evil = html_server();
    let b_host = Daemon::start_with(&format!("http = \"127.0.0.1:{port_b}\"\nhostname = \"tt-host-b\"\n"));
    let a_host = Daemon::start_with(&format!(
        "http = \"127.0.0.1:{port_a}\"\nhostname = \"tt-host-a\"\n[[peers]]\nname = \"b\"\nurl = \"http://127.0.0.1:{port_b}/\"\n[[peers]]\nname = \"down\"\nurl = \"http://127.0.0.1:{port_down}\"\n[[peers]]\nname = \"evil\"\nurl = \"http://127.0.0.1:{port_evil}\"\n"
    ));
    let held = hold_n300_drained(&b_host);

    // The listing says how A's link to each peer stands; the ones down say why.
    let mut peers = Value::Null;
    wait_until(|| {
        peers = a_host.get("/api/v1/peers");
        peers["peers"][0]["reachable"] == true
            && peers["peers"][1]["error"].is_string()
            && peers["peers"][2]["error"].is_string()
    });
    assert_eq!(peers["peers"][0]["name"], "b");
    assert_eq!(peers["peers"][0]["reachable"], true, "{peers}");
    assert_eq!(peers["peers"][0]["hostname"], "tt-host-b");
    assert_eq!(peers["peers"][1]["reachable"], false, "{peers}");
    assert!(
        peers["peers"][1]["error"].as_str().unwrap().contains("cannot connect"),
        "{peers}"
    );
    // Through A, B answers as B does, with what B shows everyone: no command lines.
    assert_eq!(a_host.get("/api/v1/peers/b/devices"), b_host.get("/api/v1/devices"));
    let via_a = a_host.get("/api/v1/peers/b/processes");
    let own = b_host.get("/api/v1/processes");
    assert_eq!(via_a["processes"][0]["pid"], pid(&held));
    assert_eq!(via_a["processes"][0]["cmdline"], "");
    assert!(!own["processes"][0]["cmdline"].as_str().unwrap().is_empty());
    // Only the listed endpoints of the configured peers pass, and a peer that is down is a 502
    // that names it.
    let a_ep = a_host.ep();
    let refused = |path: &str| get_json::<Value>(&a_ep, path).unwrap_err().to_string();
    assert!(refused(&format!("/api/v1/peers/b/processes/{}/allocations", pid(&held))).contains("404"));
    assert!(refused("/api/v1/peers/b/legacy").contains("not read through a peer"));
    assert!(refused("/api/v1/peers/b/stream").contains("not read through a peer"));
    assert!(refused("/api/v1/peers/nobody/devices").contains("no peer named"));
    let down = refused("/api/v1/peers/down/devices");
    assert!(down.contains("502") && down.contains("peer down"), "{down}");
    // What is not a daemon's answer never passes (a page would run in A's origin).
    assert_eq!(peers["peers"][2]["reachable"], false, "{peers}");
    assert!(
        peers["peers"][2]["error"]
            .as_str()
            .unwrap()
            .contains("not application/json"),
        "{peers}"
    );
    let evil = refused("/api/v1/peers/evil/devices");
    assert!(evil.contains("502") && evil.contains("not application/json"), "{evil}");

    // A's own stream carries B's link and B's updates, with B's figures.
    let mut events = ttmem_apiclient::sse::open(
        &a_host.ep(),
        "/api/v1/stream?peers=true",
        std::time::Duration::from_secs(20),
    )
    .unwrap();
    let mut seen = Vec::new();
    let mut b_update = Value::Null;
    while b_update.is_null() || !seen.contains(&"down down".to_string()) || !seen.contains(&"evil down".to_string()) {
        let e = events.next_event().unwrap().expect("the stream goes on");
        if e.event != "peer" {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        seen.push(format!(
            "{} {}",
            v["peer"].as_str().unwrap(),
            v["kind"].as_str().unwrap()
        ));
        if v["peer"] == "b" && v["kind"] == "update" {
            b_update = v["data"].clone();
        }
    }
    assert_eq!(seen[0], "b up", "a page learns each link's state first: {seen:?}");
    let b_devices = b_host.get("/api/v1/devices");
    for (streamed, dev) in b_update["devices"]
        .as_array()
        .unwrap()
        .iter()
        .zip(b_devices["devices"].as_array().unwrap())
    {
        assert_eq!(streamed["id"], dev["id"]);
        assert_eq!(streamed["categories"], dev["categories"]);
    }

    // The page shows B's chips with B's exact figures, live.
    let mut b = Browser::start();
    b.viewport(1280, 800, false);
    b.goto(&format!("http://127.0.0.1:{port_a}/"));
    b.wait_for("document.querySelectorAll('[data-peer=b] [data-peer-device]').length === 2");
    b.wait_for("document.querySelector('[data-peer=b] h3 .badge').textContent === 'live'");
    b.wait_for("document.querySelector('[data-peer=down] .badge.down').textContent.startsWith('unreachable')");
    b.wait_for("document.querySelector('[data-peer=evil] .badge.down').textContent.startsWith('unreachable')");
    assert_eq!(
        b.eval("document.querySelector('[data-peer=b] h3 a').textContent"),
        "tt-host-b"
    );
    assert_eq!(b.eval("document.querySelectorAll('[data-device]').length"), 0);
    for dev in b_host.get("/api/v1/devices")["devices"].as_array().unwrap() {
        let id = dev["id"].as_u64().unwrap();
        let labels = gauge_labels(&mut b, &format!("[data-peer-device=\"b:{id}\"]"));
        assert!(labels.contains(&dram_label(dev)), "chip {id}: {labels}");
    }
    // A chip links to its page on B's own dashboard.
    assert_eq!(
        b.eval("document.querySelector('[data-peer-device=\"b:0\"] h3 a').getAttribute('href')"),
        format!("http://127.0.0.1:{port_b}/#/chip/0")
    );
    // A new workload on B reaches A's page over B's stream, forwarded by A.
    let second = hold(&b_host.regions, "llm-inference", "n150", 2, 3);
    b.wait_for("document.querySelectorAll('[data-peer=b] [data-peer-device]').length === 3");
    let chip2 = || {
        b_host.get("/api/v1/devices")["devices"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == 2)
            .cloned()
    };
    // Once B holds what the new workload's allocator says it holds (B may still be draining).
    let second_dram = second.summary["chips"][0]["categories"][0]["allocated"].clone();
    wait_until(|| chip2().is_some_and(|d| d["categories"][0]["used"] == second_dram));
    let chip2 = chip2().unwrap();
    b.wait_for(&format!(
        "[...document.querySelectorAll('[data-peer-device=\"b:2\"] [role=meter]')].some(m => m.getAttribute('aria-label').startsWith('{}'))",
        dram_label(&chip2)
    ));
    // This host's own chips stay beside the others'.
    let _local = hold(&a_host.regions, "llm-inference", "n150", 0, 3);
    b.wait_for("document.querySelectorAll('#chips [data-device]').length === 1");
    assert_eq!(
        b.eval("document.querySelectorAll('[data-peer=b] [data-peer-device]').length"),
        3
    );
    b.screenshot("dashboard-hosts");
    // On a phone the hosts stack, nothing wider than the screen.
    b.viewport(390, 844, true);
    b.wait_for("document.documentElement.scrollWidth <= window.innerWidth");
    b.viewport(1280, 800, false);
    b.check_console();
    assert!(b.errors.is_empty(), "browser console: {:#?}", b.errors);
    // B goes away: the page says so (A's link tries again; nothing the page asks for fails).
    drop(second);
    drop(held);
    drop(b_host);
    b.wait_for("document.querySelector('[data-peer=b] .badge.down')?.textContent.startsWith('unreachable') ?? false");
    assert_eq!(
        b.eval("document.querySelectorAll('[data-peer=b] [data-peer-device]').length"),
        0
    );
    b.check_console();
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

/// The console check the dashboard test ends with can fail: a page's console error and an
/// uncaught exception both reach it.
#[test]
fn the_console_check_sees_a_pages_errors() {
    if !have_tools(&["chromium", "chromedriver"], "the_console_check_sees_a_pages_errors") {
        return;
    }
    let mut b = Browser::start();
    b.goto("data:text/html,<script>console.error('broken on purpose'); undefinedFunction();</script>");
    b.wait_for("document.readyState === 'complete'");
    b.check_console();
    let all = b.errors.join("\n");
    assert!(all.contains("broken on purpose"), "{all}");
    assert!(all.contains("undefinedFunction"), "{all}");
}
