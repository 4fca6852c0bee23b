//! The files operators install (`deploy/`, `scripts/install.sh`), checked by the engines that
//! read them: systemd's own verifier, promtool, and a daemon started the way systemd starts it.

mod common;
use common::*;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn have(tool: &str, test: &str) -> bool {
    have_tools(&[tool], test)
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_and_scores_ok() {
    if !have(
        "systemd-analyze",
        "the_systemd_unit_passes_systemd_analyze_and_scores_ok",
    ) {
        return;
    }
    // The unit as install.sh writes it, pointing at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("ttmem.service");
    let text = std::fs::read_to_string(repo().join("deploy/systemd/ttmem.service")).unwrap();
    assert!(text.contains("Type=notify") && text.contains("RuntimeDirectory=ttmem"));
    assert!(text.contains("StateDirectory=ttmem") && text.contains("LimitNOFILE="));
    assert!(text.contains("ProtectSystem=strict") && text.contains("NoNewPrivileges=yes"));
    assert!(
        !text.lines().any(|l| l.starts_with("PrivateTmp")),
        "legacy clients need the real /tmp"
    );
    std::fs::write(&unit, text.replace("/usr/local/bin/ttmem", TTMEM)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&unit)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let line = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("{report}"));
    let exposure: f64 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    // systemd calls up to 3.9 "OK", up to 1.9 "SAFE".
    assert!(exposure < 4.0, "{line}");
}

#[test]
fn the_prometheus_rules_pass_promtool_and_their_unit_tests() {
    if !have("promtool", "the_prometheus_rules_pass_promtool_and_their_unit_tests") {
        return;
    }
    let dir = repo().join("deploy/prometheus");
    let check = Command::new("promtool")
        .args(["check", "rules", "ttmem-rules.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let test = Command::new("promtool")
        .args(["test", "rules", "ttmem-rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    let config = Command::new("promtool")
        .args(["check", "config", "prometheus.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(config.status.success(), "{}", String::from_utf8_lossy(&config.stdout));
}

#[test]
fn the_daemon_tells_systemd_when_it_is_ready_and_when_it_stops() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let api = dir.path().join("api.sock");
    let mut child = hermetic()
        .args(["serve", "--no-http", "--no-legacy-socket", "--no-tt-metal", "--dir"])
        .arg(dir.path().join("regions"))
        .arg("--api-socket")
        .arg(&api)
        .arg("--db")
        .arg(dir.path().join("db"))
        .env("NOTIFY_SOCKET", &notify)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    let said = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(said.lines().any(|l| l == "READY=1"), "{said}");
    // Ready means serving: the API answers at once.
    let started = Instant::now();
    ttmem_apiclient::get_json::<serde_json::Value>(&ttmem_apiclient::Endpoint::Unix(api), "/api/v1/health").unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    // SAFETY: kill sends SIGTERM to the daemon child we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STOPPING=1");
    assert!(child.wait().unwrap().success());
}

#[test]
fn install_sh_stages_every_file_with_paths_that_agree() {
    let stage = tempfile::tempdir().unwrap();
    // `cargo test` builds only the rlibs: the C library and the preload are built here, beside
    // the binary, with the same profile.
    let artifacts = Path::new(TTMEM).parent().unwrap();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build
        .args(["build", "-p", "ttmem-ffi", "-p", "ttmem-preload", "--lib"])
        .env("CARGO_TARGET_DIR", artifacts.parent().unwrap());
    if artifacts.file_name().unwrap() == "release" {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "building the libraries failed");
    let install = || {
        let out = Command::new(repo().join("scripts/install.sh"))
            .args(["--prefix", "/opt/ttmem", "--destdir"])
            .arg(stage.path())
            .arg("--artifacts")
            .arg(artifacts)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    install();
    let root = stage.path();
    for f in [
        "opt/ttmem/bin/ttmem",
        "opt/ttmem/lib/libttmem.so",
        "opt/ttmem/lib/libttmem.a",
        "opt/ttmem/lib/libttmem_ttmetal.so",
        "opt/ttmem/include/ttmem.h",
        "etc/ttmem/ttmem.toml",
        "etc/systemd/system/ttmem.service",
    ] {
        assert!(root.join(f).is_file(), "{f} missing");
    }
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/ttmem.service")).unwrap();
    assert!(
        unit.contains("ExecStart=/opt/ttmem/bin/ttmem serve --config /etc/ttmem/ttmem.toml"),
        "{unit}"
    );
    // The installed config is valid as it stands.
    let check = Command::new(root.join("opt/ttmem/bin/ttmem"))
        .args(["serve", "--check-config", "--config"])
        .arg(root.join("etc/ttmem/ttmem.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // Run again over an edited config: it is kept.
    std::fs::write(root.join("etc/ttmem/ttmem.toml"), "retention_s = 60\n").unwrap();
    install();
    assert_eq!(
        std::fs::read_to_string(root.join("etc/ttmem/ttmem.toml")).unwrap(),
        "retention_s = 60\n"
    );
}
