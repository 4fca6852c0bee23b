"""`ttmem.Tracker`: counters equal what was reported, across threads and `os.fork()`, readers
see the process as they see a C++ runtime, and bad arguments raise."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import pytest
import ttmem

from conftest import ps_json, stable, wait_until

# Each test runs its tracking in a fresh interpreter: the tracker is process-wide and its
# region lives in the directory the process started with.
HEADER = "import os, sys, json, threading, ttmem\n"


def run(code: str, env_dir, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, TTMEM_DIR=str(env_dir), TTMEM_PROCESS_NAME="pytracker")
    return subprocess.run([sys.executable, "-c", HEADER + textwrap.dedent(code)], env=env, capture_output=True, text=True, check=check)


def test_counters_equal_what_threads_reported(env):
    out = run(
        """
        t = ttmem.Tracker()
        d = t.register_device("n150", hw_id=0x5151)
        def work(k):
            with t.tag(f"thread{k}"):
                for i in range(2000):
                    t.alloc(d, "DRAM", (k << 32) | (i << 12), 4096 + k)
                for i in range(0, 2000, 2):
                    t.free(d, "DRAM", (k << 32) | (i << 12), 4096 + k)
            for i in range(10):
                t.alloc(d, "L1", (k << 32) | i << 8, 256)
        threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
        [x.start() for x in threads]; [x.join() for x in threads]
        c = t.counters(d, "DRAM"); l1 = t.counters(d, "L1")
        print(json.dumps([c.live_bytes, c.live_count, c.allocs, c.frees, l1.live_bytes, ttmem.memory_allocated(0, "DRAM"), ttmem.max_memory_allocated(0, "DRAM")]))
        """,
        env,
    )
    live, count, allocs, frees, l1, allocated, peak = [int(x) for x in out.stdout.split("[")[1].split("]")[0].split(",")]
    want_live = sum(1000 * (4096 + k) for k in range(8))
    assert (live, count, allocs, frees) == (want_live, 8000, 16000, 8000)
    assert l1 == 8 * 10 * 256
    assert allocated == want_live
    # The peak: at least what is live, at most everything allocated before any free.
    assert want_live <= peak <= sum(2000 * (4096 + k) for k in range(8))


def test_a_forked_child_counts_only_its_own(env):
    out = run(
        """
        t = ttmem.Tracker()
        d = t.register_device("n150", hw_id=0x5152)
        t.alloc(d, "DRAM", 0x1000, 1 << 20)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            t.alloc(d, "DRAM", 0x200000, 4096)
            c = t.counters(d, "DRAM")
            os.write(w, json.dumps([c.live_bytes, c.allocs, ttmem.memory_allocated(), ttmem.max_memory_allocated()]).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        child = json.loads(os.read(r, 1000))
        c = t.counters(d, "DRAM")
        print(json.dumps({"child": child, "parent": [c.live_bytes, c.allocs, ttmem.memory_allocated(), ttmem.max_memory_allocated()]}))
        """,
        env,
    )
    import json

    got = json.loads(out.stdout)
    assert got["child"] == [4096, 1, 4096, 4096]
    assert got["parent"] == [1 << 20, 1, 1 << 20, 1 << 20]


def test_readers_see_a_python_process_with_its_tags(ttmem_bin, env, daemon):
    p = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HEADER
            + textwrap.dedent(
                """
                t = ttmem.Tracker()
                d = t.register_device("n300-L", arch="wormhole_b0", hw_id=0xABC, categories=[
                    ttmem.CategorySpec("DRAM", capacity=12 << 30, addr_base=0, addr_end=1 << 30, banks=12, alignment=32),
                    ttmem.CategorySpec("L1", capacity=64 << 20, addr_base=0, addr_end=1 << 20, banks=64, alignment=32)])
                with t.tag("kv_cache"):
                    t.alloc(d, "DRAM", 0x4000, 96 << 20)
                t.alloc(d, "L1", 0x100, 64 * 1024)
                print(t.region_path, flush=True)
                sys.stdin.readline()
                """
            ),
        ],
        env=dict(os.environ, TTMEM_PROCESS_NAME="pytracker"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        region = p.stdout.readline().strip()
        assert region.startswith(str(env)), region
        client = ttmem.Client(api_socket=daemon.socket)
        wait_until(lambda: len(client.allocations(p.pid)) == 2 if client.snapshot().process(p.pid) else False, what="the daemon to see the process")
        proc = client.snapshot().process(p.pid)
        assert proc.name == "pytracker" and proc.total("DRAM") == 96 << 20 and proc.total("L1") == 64 * 1024
        tags = {a.category: a.tag for a in client.allocations(p.pid)}
        assert tags == {"DRAM": "kv_cache", "L1": None}
        dev = client.snapshot().device(proc.device_ids[0])
        assert dev.category("DRAM").total == 12 << 30
        # ps --json without the daemon reads the same region.
        assert stable(ttmem.snapshot(no_daemon=True).raw)["processes"] == stable(ps_json(ttmem_bin, "--no-daemon"))["processes"]
    finally:
        p.stdin.close()
        p.wait(timeout=10)


def test_bad_arguments_raise():
    t = ttmem.Tracker()
    with pytest.raises(ValueError, match="no device"):
        t.alloc(12345, "DRAM", 0, 1)
    with pytest.raises(ValueError, match="unknown device kind"):
        t.register_device("x", kind="gpu-ish")
    with pytest.raises(ValueError, match="repeat"):
        t.register_device("x", categories=[ttmem.CategorySpec("DRAM"), ttmem.CategorySpec("DRAM")])
    with pytest.raises(ValueError, match="below addr_base"):
        t.register_device("x", categories=[ttmem.CategorySpec("DRAM", addr_base=10, addr_end=5)])
    with pytest.raises(OverflowError):
        ttmem._native.alloc(0, 0, -1, 5)
