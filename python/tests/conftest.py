"""Fixtures: the real `ttmem` binary, a private region directory, a real daemon on private
paths, and simulated workload processes (`ttmem sim run`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator, List

import pytest

pytest_plugins = ["pytester"]

REPO = Path(__file__).resolve().parents[2]


def ttmem_binary() -> str:
    found = os.environ.get("TTMEM_BIN") or str(REPO / "target" / "debug" / "ttmem")
    if not Path(found).exists():
        pytest.fail(f"no ttmem binary at {found}: run `cargo build` first (or set TTMEM_BIN)")
    return found


@pytest.fixture(scope="session")
def ttmem_bin() -> str:
    return ttmem_binary()


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private region directory in TTMEM_DIR, TT-Metal's counter files off, no daemon named."""
    regions = tmp_path / "regions"
    regions.mkdir()
    monkeypatch.setenv("TTMEM_DIR", str(regions))
    monkeypatch.setenv("TTMEM_TT_METAL_DIR", "off")
    monkeypatch.delenv("TTMEM_API_SOCKET", raising=False)
    monkeypatch.delenv("TTMEM_API_TOKEN", raising=False)
    return regions


def wait_until(check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Workload:
    """A `ttmem sim run` process that made `steps` steps and holds still."""

    def __init__(self, proc: subprocess.Popen, summary: dict) -> None:
        self.proc = proc
        self.summary = summary
        self.pid = summary["pid"]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def workloads(ttmem_bin: str, env: Path) -> Iterator[Callable[..., Workload]]:
    started: List[Workload] = []

    def start(profile: str = "training", shape: str = "n150", steps: int = 5) -> Workload:
        p = subprocess.Popen(
            [ttmem_bin, "sim", "run", "--profile", profile, "--shape", shape, "--step-ms", "1", "--hold-after", str(steps)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = p.stdout.readline() if p.stdout else ""
        w = Workload(p, json.loads(line))
        started.append(w)
        return w

    yield start
    for w in started:
        w.stop()


class Daemon:
    def __init__(self, proc: subprocess.Popen, socket: Path, regions: Path) -> None:
        self.proc = proc
        self.socket = socket
        self.regions = regions


@pytest.fixture
def daemon_with(ttmem_bin: str, env: Path, tmp_path: Path) -> Iterator[Callable[[str], Daemon]]:
    """Starts a real `ttmem serve` watching the private region directory (no TCP), with extra
    config lines."""
    started: List[subprocess.Popen] = []

    def start(extra: str = "") -> Daemon:
        import ttmem

        n = len(started)
        socket = tmp_path / f"api{n}.sock"
        config = tmp_path / f"ttmem{n}.toml"
        config.write_text("flush_interval_s = 1\n" + extra)
        p = subprocess.Popen(
            [
                ttmem_bin, "serve", "--config", str(config), "--no-http", "--dir", str(env),
                "--api-socket", str(socket), "--legacy-socket", str(tmp_path / f"legacy{n}.sock"),
                "--db", str(tmp_path / f"ttmem{n}.db"), "--tt-metal-dir", "off",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        started.append(p)

        def healthy() -> bool:
            try:
                ttmem.Client(api_socket=socket).health()
                return True
            except ttmem.TtmemError:
                return False

        wait_until(healthy, what="the daemon to answer")
        return Daemon(p, socket, env)

    yield start
    for p in started:
        p.terminate()
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@pytest.fixture
def daemon(daemon_with: Callable[[str], Daemon]) -> Daemon:
    return daemon_with("")


def ps_json(ttmem_bin: str, *args: str) -> dict:
    out = subprocess.run([ttmem_bin, "ps", "--json", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def ps_csv(ttmem_bin: str, *args: str) -> str:
    return subprocess.run([ttmem_bin, "ps", "--csv", *args], check=True, capture_output=True, text=True).stdout


def stable(snapshot: dict) -> dict:
    """A snapshot without what changes from one read to the next (times, ages)."""
    s = json.loads(json.dumps(snapshot))
    s.pop("timestamp_ns", None)
    for p in s.get("processes", []):
        p.pop("age_s", None)
    return s


def python() -> str:
    return sys.executable


def have(tool: str) -> bool:
    return shutil.which(tool) is not None
