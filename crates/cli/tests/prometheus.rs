//! A real Prometheus scrapes a real `ttmem serve` (issue 12): the exposition passes
//! `promtool check metrics` (Prometheus' own naming lint), and a PromQL query answers with the
//! figure the API gives. Needs `prometheus` and `promtool` (scripts/setup.sh installs them).

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use ttmem_apiclient::{Endpoint, get_json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether Prometheus is here; under CI it must be.
fn have_prometheus(test: &str) -> bool {
    let found = ["prometheus", "promtool"].iter().all(|b| {
        Command::new(b)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run {test} with Prometheus installed"
        );
        eprintln!("SKIPPED {test}: no prometheus/promtool (scripts/setup.sh installs them)");
    }
    found
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
    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: ttmem\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .unwrap();
    let _prometheus = Killed(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom = Endpoint::Tcp(format!("127.0.0.1:{prom_port}"));
    let query = "/api/v1/query?query=ttmem_device_memory_used_bytes%7Bchip%3D%220%22%2Ccategory%3D%22DRAM%22%7D";
    let start = Instant::now();
    let value = loop {
        if let Ok(v) = get_json::<Value>(&prom, query)
            && let Some(sample) = v["data"]["result"][0]["value"][1].as_str()
        {
            break sample.parse::<f64>().unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "Prometheus never had the series"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    let devices: Value = get_json(&ttmem_ep, "/api/v1/devices").unwrap();
    let dram = devices["devices"][0]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "DRAM")
        .unwrap()["used"]
        .as_f64()
        .unwrap();
    assert_eq!(value, dram, "the held workload's DRAM, as Prometheus stored it");
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
