"""`ttmem.Client` against a real daemon with real workloads: every reader method, its typed
objects and DataFrames, the stream, exports, and errors with the daemon's reason."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
import ttmem

from conftest import wait_until


@pytest.fixture
def held(daemon, workloads):
    """A daemon holding a training workload on an n300, drained."""
    w = workloads("training", "n300", 8)
    client = ttmem.Client(api_socket=daemon.socket)

    def drained() -> bool:
        # The daemon's counters and its ledger both hold what the workload's allocator says.
        p = client.snapshot().process(w.pid)
        if p is None:
            return False
        devices = sorted(p.devices, key=lambda d: d.id)
        for chip, d in zip(w.summary["chips"], devices):
            for c in chip["categories"]:
                got = d.category(c["name"])
                if got is None or (got.bytes, got.count) != (c["allocated"], c["buffers"]):
                    return False
        want = sum(c["buffers"] for chip in w.summary["chips"] for c in chip["categories"])
        return len(devices) == len(w.summary["chips"]) and len(client.allocations(w.pid)) == want

    wait_until(drained, what="the daemon to list the workload's allocations")
    return client, w


def test_devices_and_processes_are_typed(held):
    client, w = held
    devices = client.devices()
    assert [d.id for d in devices] == [0, 1]
    assert all(isinstance(d, ttmem.Device) and d.category("dram").total > 0 for d in devices)
    p = next(p for p in client.processes() if p.pid == w.pid)
    assert p.running and p.name == "sim:training" and p.device_ids == [0, 1]
    for chip, d in zip(w.summary["chips"], sorted(p.devices, key=lambda d: d.id)):
        for c in chip["categories"]:
            assert d.category(c["name"]).bytes == c["allocated"]
            assert d.category(c["name"]).count == c["buffers"]


def test_allocations_page_through_and_sum_to_the_process_totals(held):
    client, w = held
    allocs = client.allocations(w.pid)
    p = next(p for p in client.processes() if p.pid == w.pid)
    for t in p.totals:
        assert sum(a.size for a in allocs if a.category == t.name) == t.bytes, t.name
    assert len({(a.device, a.category, a.address) for a in allocs}) == len(allocs)
    by_size = client.allocations(w.pid, sort="size", limit=5)
    assert len(by_size) == 5 and [a.size for a in by_size] == sorted((a.size for a in allocs), reverse=True)[:5]
    df = client.allocations_frame(w.pid)
    assert {c: str(t) for c, t in df.dtypes.items()} == ttmem.ALLOCATION_COLUMNS
    assert len(df) == len(allocs) and int(df["size"].sum()) == sum(a.size for a in allocs)
    assert any(a.tag for a in allocs), "the workload tags its buffers"


def test_events_history_fit_alerts_forecast_export(held):
    client, w = held
    events = client.events(w.pid)
    assert events and {e.kind for e in events} <= {"alloc", "free"}
    assert all(isinstance(e.time, dt.datetime) and e.time.tzinfo is not None for e in events)
    now = dt.datetime.now(dt.timezone.utc)
    assert all(abs((now - e.time).total_seconds()) < 120 for e in events)

    dram = client.devices()[0].category("DRAM").used

    def sampled() -> bool:
        h = client.history(0, "DRAM", since=dt.timedelta(minutes=5))
        return len(h) > 0 and int(h["bytes"].iloc[-1]) == dram

    wait_until(sampled, what="a history sample")
    h = client.history(0, "DRAM", since=dt.timedelta(minutes=5))
    assert str(h.index.dtype).startswith("datetime64") and str(h.index.tz) == "UTC"
    assert h.index.name == "time" and list(h.columns) == ["bytes"] and str(h["bytes"].dtype) == "int64"
    mine = client.history(0, "DRAM", pid=w.pid, since=dt.timedelta(minutes=5))
    assert int(mine["bytes"].iloc[-1]) == sum(a.size for a in client.allocations(w.pid) if a.device == 0 and a.category == "DRAM")

    fit = client.fit(0, "DRAM", 1 << 20)
    raw = client.get(f"fit?device=0&category=DRAM&bytes={1 << 20}")
    assert fit.fits == raw["fits"] and fit.largest_free_per_bank == raw["largest_free_per_bank"]
    assert [g.start for g in fit.best_gaps] == [g["start"] for g in raw["best_gaps"]]
    assert all(g.below is None or g.below.pid in (w.pid, None) for g in fit.best_gaps)

    forecasts = client.forecast(window_s=60)
    assert {(f.device, f.category) for f in forecasts} >= {(0, "DRAM"), (1, "DRAM")}

    trace = client.export(w.pid)
    assert trace.startswith(b"{") and b"traceEvents" in trace
    assert client.export(w.pid, "memory-viz")[:1] == b"\x80"


def test_the_stream_yields_the_whole_state_first(held):
    client, w = held
    events = list(itertools.islice(client.stream(), 1))
    first = events[0]
    assert first.event == "update"
    assert [d["id"] for d in first.data["devices"]] == [0, 1]
    assert any(c["pid"] == w.pid for c in first.data["process_changes"])


def test_errors_carry_the_daemons_reason(held, tmp_path):
    client, _ = held
    with pytest.raises(ttmem.DaemonError) as e:
        client.allocations(999_999_999)
    assert e.value.status == 404 and "no process with pid 999999999" in e.value.reason
    with pytest.raises(ttmem.DaemonError, match="unknown resolution|resolution"):
        client.get("history?device=0&category=DRAM&resolution=2s")
    for bad in (
        lambda: client.allocations(1, sort="colour"),
        lambda: client.history(0, resolution="2s"),
        lambda: client.fit(0, "DRAM", -1),
        lambda: client.export(1, "svg"),
        lambda: client.history(0, since=dt.datetime(2026, 1, 1)),
        lambda: ttmem.Client(url="http://x:1", api_socket="/y"),
    ):
        with pytest.raises(ValueError):
            bad()
    missing = ttmem.Client(api_socket=tmp_path / "none.sock")
    with pytest.raises(ttmem.NoDaemonError):
        missing.health()
    with pytest.raises(ttmem.NoDaemonError):
        next(missing.stream())
    assert isinstance(ttmem.NoDaemonError("x"), ttmem.TtmemError)


def test_alerts_are_typed(daemon_with, workloads):
    d = daemon_with(
        "[alerts]\ninterval_s = 1\ndefault_rules = false\n[[alerts.rules]]\nname = \"DramUsed\"\n"
        "kind = \"threshold\"\ncategory = \"DRAM\"\nabove_percent = 10\nfor_s = 1\n"
    )
    workloads("training", "n150", 5)
    client = ttmem.Client(api_socket=d.socket)
    wait_until(lambda: any(a.firing for a in client.alerts()), what="the alert to fire")
    a = next(a for a in client.alerts() if a.firing)
    assert isinstance(a, ttmem.Alert) and a.rule == "DramUsed" and a.labels["device"] == "0"
    assert a.firing_since_unix_ns >= a.active_since_unix_ns > 0
    assert "DRAM" in a.summary
