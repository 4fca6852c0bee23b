#!/usr/bin/env python3
"""The cost of reporting from Python (`ttmem.Tracker`), next to the native call it wraps and
to an empty Python call, measured side by side in one run.

    target/python-venv/bin/python scripts/bench-python.py [--calls N] [--rounds R] [--json]

Each figure is nanoseconds per alloc+free pair (the median over rounds of N pairs):
- `python_noop`: two calls of an empty Python function with the same arguments, the floor any
  Python API pays;
- `native`: `ttmem._native.alloc` + `free`, the PyO3 binding over the Rust client;
- `tracker`: `Tracker.alloc` + `free` with a device handle and a category name, what users call;
- `tracker_tagged`: the same inside `with tracker.tag(...)` (the tag entered once per round).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("TTMEM_DIR", tempfile.mkdtemp(prefix="ttmem-bench-py-"))
    import ttmem
    from ttmem import _native

    t = ttmem.Tracker()
    chip = t.register_device("bench", hw_id=0xBE)
    n = args.calls

    def noop(device, category, address, size):
        pass

    def python_noop() -> None:
        for i in range(n):
            noop(chip, "DRAM", i << 12, 4096)
            noop(chip, "DRAM", i << 12, 4096)

    def native() -> None:
        a, f, d = _native.alloc, _native.free, chip.index
        for i in range(n):
            a(d, 0, i << 12, 4096)
            f(d, 0, i << 12, 4096)

    def tracker() -> None:
        for i in range(n):
            t.alloc(chip, "DRAM", i << 12, 4096)
            t.free(chip, "DRAM", i << 12, 4096)

    def tracker_tagged() -> None:
        with t.tag("bench"):
            tracker()

    cases = {"python_noop": python_noop, "native": native, "tracker": tracker, "tracker_tagged": tracker_tagged}
    samples = {k: [] for k in cases}
    for _ in range(args.rounds):
        # Interleaved, so a noisy moment hits every case alike.
        for name, fn in cases.items():
            start = time.perf_counter_ns()
            fn()
            samples[name].append((time.perf_counter_ns() - start) / n)
    medians = {k: statistics.median(v) for k, v in samples.items()}
    c = t.counters(chip, "DRAM")
    assert c is not None and c.live_bytes == 0 and c.allocs == 3 * n * args.rounds, c
    ratios = {
        "native / python_noop": medians["native"] / medians["python_noop"],
        "tracker / native": medians["tracker"] / medians["native"],
    }
    if args.json:
        print(json.dumps({"bench": "python", "calls": n, "rounds": args.rounds, "median_ns_per_pair": medians, "ratios": ratios}))
        return
    print(f"ttmem Python reporting: ns per alloc+free pair, median of {args.rounds} rounds of {n} pairs")
    for k, v in medians.items():
        print(f"  {k:<15} {v:8.1f}")
    for k, v in ratios.items():
        print(f"  {k:<22} {v:5.2f}x")


if __name__ == "__main__":
    main()
