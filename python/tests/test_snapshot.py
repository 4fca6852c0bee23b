"""`ttmem.snapshot()` is `ttmem ps --json`, with and without a daemon, and its DataFrames have
the documented columns and dtypes."""

from __future__ import annotations

import csv
import io

import pytest
import ttmem

from conftest import ps_csv, ps_json, stable, wait_until


def test_without_a_daemon_the_snapshot_is_ps_json(ttmem_bin, env, workloads):
    a = workloads("training", "n150", 5)
    b = workloads("llm-inference", "n300", 5)
    snap = ttmem.snapshot(no_daemon=True)
    want = ps_json(ttmem_bin, "--no-daemon")
    assert snap.source == "regions"
    assert stable(snap.raw) == stable(want)
    assert {p.pid for p in snap.processes} == {a.pid, b.pid}
    # Typed objects carry the same numbers.
    for p in want["processes"]:
        mine = snap.process(p["pid"])
        assert mine is not None and mine.running
        for d in p["devices"]:
            md = next(x for x in mine.devices if x.id == d["id"])
            for c in d["categories"]:
                assert md.category(c["name"]).bytes == c["bytes"]
                assert md.category(c["name"]).peak == c["peak"]
    for d in want["devices"]:
        dev = snap.device(d["id"])
        assert [c.used for c in dev.categories] == [c["used"] for c in d["categories"]]
    # Named by argument instead of TTMEM_DIR: the same.
    assert stable(ttmem.snapshot(dir=env, no_daemon=True, tt_metal_dir="off").raw) == stable(want)


def test_with_a_daemon_the_snapshot_is_the_daemons_ps_json(ttmem_bin, daemon, workloads):
    w = workloads("training", "n300", 5)
    expected_dram = sum(c["categories"][0]["allocated"] for c in w.summary["chips"])

    def held() -> bool:
        p = ttmem.snapshot(api_socket=daemon.socket).process(w.pid)
        return p is not None and p.total("DRAM") == expected_dram

    wait_until(held, what="the daemon to hold the workload")
    snap = ttmem.snapshot(api_socket=daemon.socket)
    want = ps_json(ttmem_bin, "--api-socket", str(daemon.socket))
    assert snap.source == "daemon" and want["source"] == "daemon"
    assert stable(snap.raw) == stable(want)
    # The client's snapshot and the default rule (TTMEM_API_SOCKET names the daemon) agree.
    assert stable(ttmem.Client(api_socket=daemon.socket).snapshot().raw) == stable(want)


def test_a_daemon_named_that_does_not_run_is_an_error(env, tmp_path):
    with pytest.raises(ttmem.NoDaemonError, match="no ttmem daemon"):
        ttmem.snapshot(api_socket=tmp_path / "nothing.sock")
    with pytest.raises(ValueError, match="unsupported daemon URL"):
        ttmem.snapshot(url="ftp://example")


def test_the_process_frame_is_ps_csv(ttmem_bin, env, workloads):
    workloads("training", "n300", 5)
    df = ttmem.snapshot(no_daemon=True).to_pandas()
    rows = list(csv.DictReader(io.StringIO(ps_csv(ttmem_bin, "--no-daemon"))))
    assert list(df.columns) == list(rows[0].keys()) == list(ttmem.PROCESS_COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == ttmem.PROCESS_COLUMNS
    assert len(df) == len(rows)
    for got, want in zip(df.to_dict("records"), rows):
        for col, dtype in ttmem.PROCESS_COLUMNS.items():
            if dtype == "int64":
                assert got[col] == int(want[col]), col
            elif dtype == "bool":
                assert got[col] == (want[col] == "true"), col
            else:
                assert got[col] == want[col], col


def test_the_device_frame_is_ps_csv_devices(ttmem_bin, env, workloads):
    workloads("llm-inference", "n150", 5)
    df = ttmem.snapshot(no_daemon=True).devices_frame()
    rows = list(csv.DictReader(io.StringIO(ps_csv(ttmem_bin, "--no-daemon", "--devices"))))
    assert list(df.columns) == list(rows[0].keys()) == list(ttmem.DEVICE_COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == ttmem.DEVICE_COLUMNS
    assert [int(r["used"]) for r in rows] == df["used"].tolist()


def test_an_empty_host_gives_empty_frames_with_the_columns(env):
    snap = ttmem.snapshot(no_daemon=True)
    assert snap.processes == [] and snap.devices == []
    df = snap.to_pandas()
    assert len(df) == 0 and list(df.columns) == list(ttmem.PROCESS_COLUMNS)
    assert {c: str(t) for c, t in df.dtypes.items()} == ttmem.PROCESS_COLUMNS
