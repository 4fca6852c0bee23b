//! A real Prometheus scrapes a real `ttmem serve` (issue 12): the exposition passes
//! `promtool check metrics` (Prometheus' own naming lint), and a PromQL query answers with the
//! figure the API gives. Needs `prometheus` and `promtool` (scripts/setup.sh installs them).

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ttmem_apiclient::{Endpoint, get_json};

/// A real Prometheus with the configuration `yaml`, its files in `dir`, and its API.
fn start_prometheus(dir: &std::path::Path, yaml: &str) -> (Killed, Endpoint) {
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, yaml).unwrap();
    let p = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    (p, Endpoint::Tcp(format!("127.0.0.1:{port}")))
}

fn have_prometheus(test: &str) -> bool {
    have_tools(&["prometheus", "promtool"], test)
}

struct Killed(std::process::Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_the_metrics_and_answers_with_the_apis_figures() {
    if !have_prometheus("prometheus_scrapes_the_metrics_and_answers_with_the_apis_figures") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let regions = dir.path().join("regions");
    let _daemon = Killed(
        hermetic()
            .args([
                "serve",
                "--no-legacy-socket",
                "--http",
                &format!("127.0.0.1:{port}"),
                "--dir",
            ])
            .arg(&regions)
            .arg("--api-socket")
            .arg(dir.path().join("api.sock"))
            .arg("--db")
            .arg(dir.path().join("db"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ttmem_ep = Endpoint::Tcp(format!("127.0.0.1:{port}"));
    wait_until(|| get_json::<Value>(&ttmem_ep, "/api/v1/health").is_ok());
    let h = hold(&regions, "llm-inference", "n150", 0, 3);
    wait_until(|| {
        get_json::<Value>(&ttmem_ep, "/api/v1/devices")
            .is_ok_and(|d| d["devices"].as_array().is_some_and(|a| !a.is_empty()))
    });

    // Prometheus' own lint of the exposition.
    let (_, body) = ttmem_apiclient::get(&ttmem_ep, "/metrics").unwrap();
    let mut lint = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    lint.stdin.take().unwrap().write_all(&body).unwrap();
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // A real Prometheus scraping every second.
    let (_prometheus, prom) = start_prometheus(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ttmem\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    );
    let query = "/api/v1/query?query=ttmem_device_memory_used_bytes%7Bchip%3D%220%22%2Ccategory%3D%22DRAM%22%7D";
    // The daemon may still be draining the workload's events when Prometheus first scrapes it,
    // so both sides are read again until they meet (the workload holds still, so they must).
    let start = Instant::now();
    loop {
        let scraped = get_json::<Value>(&prom, query).ok().and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()
                .map(|s| s.parse::<f64>().unwrap())
        });
        let dram = chip0_dram(&ttmem_ep);
        if scraped == Some(dram) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never had the API's chip-0 DRAM {dram}: {scraped:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    // The scrape was healthy, and the per-process series names the workload.
    let up: Value = get_json(&prom, "/api/v1/query?query=up%7Bjob%3D%22ttmem%22%7D").unwrap();
    assert_eq!(up["data"]["result"][0]["value"][1], "1");
    let q = format!(
        "/api/v1/query?query=ttmem_process_memory_bytes%7Bpid%3D%22{}%22%7D",
        pid(&h)
    );
    let per_process: Value = get_json(&prom, &q).unwrap();
    assert!(
        !per_process["data"]["result"].as_array().unwrap().is_empty(),
        "{per_process}"
    );
}

/// A daemon serving its API on `port`, with `config` in its file.
fn serve_on(dir: &std::path::Path, port: u16, config: &str) -> Killed {
    let file = dir.join("ttmem.toml");
    std::fs::write(&file, config).unwrap();
    let d = Killed(
        hermetic()
            .args(["serve", "--no-legacy-socket", "--no-tt-metal", "--config"])
            .arg(&file)
            .args(["--http", &format!("127.0.0.1:{port}"), "--dir"])
            .arg(dir.join("regions"))
            .arg("--api-socket")
            .arg(dir.join("api.sock"))
            .arg("--db")
            .arg(dir.join("db"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let ep = Endpoint::Tcp(format!("127.0.0.1:{port}"));
    wait_until(|| get_json::<Value>(&ep, "/api/v1/health").is_ok());
    d
}

/// Every PromQL expression of the Grafana dashboard, with its variables set to "all".
fn dashboard_exprs() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/grafana/ttmem-dashboard.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|x| walk(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&dash, &mut out);
    out.iter()
        .map(|e| {
            e.replace("$hostname", ".*")
                .replace("$chip", ".*")
                .replace("$category", ".*")
                .replace("$__rate_interval", "1m")
        })
        .collect()
}

/// The rules file's expressions: each recording rule's expression and the series it records,
/// and every `ttmem` series an alerting rule compares (the comparisons themselves are checked
/// by `promtool test rules`).
fn rule_exprs(rules: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = rules.lines().map(str::trim);
    while let Some(l) = lines.next() {
        if let Some(name) = l.strip_prefix("- record: ") {
            out.push(name.to_string());
            let expr = lines.next().unwrap().strip_prefix("expr: ").unwrap();
            out.push(expr.to_string());
        } else if l.starts_with("- alert: ") {
            let expr = lines.next().unwrap().strip_prefix("expr: ").unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
                if word.starts_with("ttmem") && !out.contains(&word.to_string()) {
                    out.push(word.to_string());
                }
            }
        }
    }
    out
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn two_hosts_one_prometheus_and_every_deployed_expression_answers() {
    if !have_prometheus("two_hosts_one_prometheus_and_every_deployed_expression_answers") {
        return;
    }
    let rules_file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/prometheus/ttmem-rules.yml");
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    // Host A fires a built-in alert (so the alert series exist); host B runs the defaults.
    let _da = serve_on(
        a.path(),
        port_a,
        "hostname = \"tt-host-a\"\n[alerts]\ninterval_s = 1\n[[alerts.rules]]\nname = \"DramUsed\"\nkind = \"threshold\"\nabove_percent = 1\n",
    );
    let _db = serve_on(b.path(), port_b, "hostname = \"tt-host-b\"\n");
    let _held_a = hold(&a.path().join("regions"), "training", "n150", 0, 3);
    let _held_b = hold(&b.path().join("regions"), "llm-inference", "n150", 0, 3);
    // A process killed while it holds memory leaves it behind; a leaky one grows steadily (the
    // forecast).
    drop(hold(&a.path().join("regions"), "bursty", "n150", 2, 2));
    let _leaky = Killed(
        ttmem(&a.path().join("regions"))
            .args([
                "sim",
                "run",
                "--profile",
                "leaky",
                "--shape",
                "n150",
                "--chip-offset",
                "1",
                "--step-ms",
                "100",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let dir = tempfile::tempdir().unwrap();
    let (_prometheus, prom) = start_prometheus(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {rules_file}\nscrape_configs:\n  - job_name: ttmem\n    honor_labels: true\n    static_configs:\n      - targets: ['127.0.0.1:{port_a}', '127.0.0.1:{port_b}']\n"
        ),
    );
    let query = |q: &str| -> Vec<Value> {
        get_json::<Value>(&prom, &format!("/api/v1/query?query={}", percent_encode(q)))
            .ok()
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    };

    // The cluster's DRAM on chip 0 of each host, summed by Prometheus, equals the two APIs'.
    let api_dram = |port: u16| chip0_dram(&Endpoint::Tcp(format!("127.0.0.1:{port}")));
    let has_devices = |port: u16| {
        get_json::<Value>(&Endpoint::Tcp(format!("127.0.0.1:{port}")), "/api/v1/devices")
            .is_ok_and(|d| d["devices"].as_array().is_some_and(|a| !a.is_empty()))
    };
    wait_until(|| has_devices(port_a) && has_devices(port_b));
    // Both daemons may still be draining their workloads' events, so the APIs are read again
    // on every try; the held workloads hold still, so the two sides must meet.
    let start = Instant::now();
    loop {
        let want = api_dram(port_a) + api_dram(port_b);
        let got = query("sum(ttmem_device_memory_used_bytes{category=\"DRAM\", chip=\"0\"})");
        let hosts = query("count(count by (hostname) (ttmem_device_memory_used_bytes))");
        if got
            .first()
            .and_then(|r| r["value"][1].as_str())
            .map(|v| v.parse::<f64>().unwrap())
            == Some(want)
            && hosts.first().map(|r| r["value"][1].clone()) == Some(Value::from("2"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never summed {want}: {got:?}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }

    // Every expression of the dashboard and the rules answers with data (the forecast needs
    // ten seconds of the leaky process's growth).
    let rules = std::fs::read_to_string(rules_file).unwrap();
    let mut exprs = dashboard_exprs();
    exprs.extend(rule_exprs(&rules));
    assert!(exprs.len() >= 20, "{exprs:?}");
    for e in &exprs {
        let start = Instant::now();
        while query(e).is_empty() {
            assert!(start.elapsed() < Duration::from_secs(45), "no data for {e}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// The DRAM bytes a daemon's API says chip 0 holds.
fn chip0_dram(ep: &Endpoint) -> f64 {
    let d: Value = get_json(ep, "/api/v1/devices").unwrap();
    d["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|dev| dev["id"] == 0)
        .expect("chip 0 in the API's devices")["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "DRAM")
        .unwrap()["used"]
        .as_f64()
        .unwrap()
}
