"""`ttmem.memory_allocated()` and friends follow what the process reports, and its peak resets
as torch.cuda's does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap


def run(code: str, env_dir) -> dict:
    env = dict(os.environ, TTMEM_DIR=str(env_dir))
    out = subprocess.run([sys.executable, "-c", "import json, ttmem\n" + textwrap.dedent(code)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_memory_allocated_follows_allocations_and_the_peak_resets(env):
    got = run(
        """
        t = ttmem.Tracker()
        a = t.register_device("n150-a", hw_id=0x61)
        b = t.register_device("n150-b", hw_id=0x62)
        seen = {}
        seen["start"] = ttmem.memory_allocated(0, "DRAM")
        t.alloc(a, "DRAM", 0x1000, 100)
        t.alloc(a, "DRAM", 0x2000, 50)
        t.alloc(b, "L1", 0x10, 7)
        seen["two"] = [ttmem.memory_allocated(0, "DRAM"), ttmem.memory_allocated(1, "L1"), ttmem.memory_allocated(1, "DRAM")]
        t.free(a, "DRAM", 0x1000, 100)
        seen["freed"] = [ttmem.memory_allocated(0, "DRAM"), ttmem.max_memory_allocated(0, "DRAM")]
        ttmem.reset_peak_memory_stats(0)
        seen["reset"] = [ttmem.max_memory_allocated(0, "DRAM"), ttmem.max_memory_allocated(1, "L1")]
        t.alloc(a, "DRAM", 0x3000, 30)
        t.free(a, "DRAM", 0x3000, 30)
        seen["after"] = ttmem.max_memory_allocated(0, "DRAM")
        ttmem.reset_peak_memory_stats()
        seen["all"] = ttmem.max_memory_allocated(1, "L1")
        seen["summary"] = ttmem.memory_summary()
        try:
            ttmem.memory_allocated(2)
        except ValueError as e:
            seen["error"] = str(e)
        print(json.dumps(seen))
        """,
        env,
    )
    assert got["start"] == 0
    assert got["two"] == [150, 7, 0]
    assert got["freed"] == [50, 150]
    assert got["reset"] == [50, 7], "a reset of device 0 leaves device 1's peak"
    assert got["after"] == 80
    assert got["all"] == 7
    assert "0 n150-a  DRAM" in got["summary"] and "50 B" in got["summary"] and "n150-b" in got["summary"]
    assert "no device 2" in got["error"]


def test_without_a_tracker_it_reads_the_sources(env, workloads):
    # This process registered nothing: the sources see no memory of it.
    import ttmem

    assert ttmem.memory_allocated(0, "DRAM") == 0
    assert "no source reports this process" in ttmem.memory_summary()
