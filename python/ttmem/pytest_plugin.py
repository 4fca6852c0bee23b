"""pytest plugin (registered through the ``pytest11`` entry point):

- ``--ttmem-leaks``: a test that ends (after its fixtures' teardown) holding more device memory
  than it started with (once its fixtures were set up) fails, listing the leaked buffers (address, size, buffer type, tag)
  where the source has them: buffers reported through :class:`ttmem.Tracker` always; a
  process under ``ttmem run`` or one a daemon's ledger knows, from the daemon; TT-Metal's
  counter files give bytes only.
- ``--ttmem-max dram=80%`` (or ``l1=64M``; repeat or separate with commas): a test that
  crosses a limit fails. With :class:`ttmem.Tracker` the test's exact peak is checked; other
  sources are checked at the test's end and at their peak when it rose during the test.
- With either, the terminal report ends with each test's device memory: bytes at its end,
  its peak and what it left.

Memory is this process's, from the sources :mod:`ttmem.memory` documents.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Generator, List, Optional, Set, Tuple

import pytest

from . import _native, memory, tracker
from .client import Client
from ._types import Allocation
from .errors import DaemonError, TtmemError

Key = Tuple[str, str]  # (device label, buffer type)


@dataclass
class Limit:
    category: str
    percent: Optional[float] = None
    bytes: Optional[int] = None

    def describe(self) -> str:
        return f"{self.category}={self.percent:g}%" if self.percent is not None else f"{self.category}={self.bytes}"


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_limits(texts: List[str]) -> List[Limit]:
    """``["dram=80%", "l1=64M,trace=1G"]`` → limits; raises ``pytest.UsageError`` when
    malformed."""
    out = []
    for text in texts:
        for part in filter(None, (p.strip() for p in text.split(","))):
            m = re.fullmatch(r"([A-Za-z0-9_]+)\s*=\s*([0-9]+(?:\.[0-9]+)?)\s*(%|[KMGT]?)(?:i?B)?", part, re.IGNORECASE)
            if not m:
                raise pytest.UsageError(f"--ttmem-max {part!r}: give CATEGORY=PERCENT% or CATEGORY=BYTES[K|M|G|T], e.g. dram=80%")
            cat, value, unit = m.group(1).upper(), float(m.group(2)), m.group(3).upper()
            if unit == "%":
                if not 0 < value <= 100:
                    raise pytest.UsageError(f"--ttmem-max {part!r}: a percentage is over 0 and at most 100")
                out.append(Limit(cat, percent=value))
            else:
                out.append(Limit(cat, bytes=int(value * _UNITS[unit])))
    return out


@dataclass
class Reading:
    """One look at this process's memory: bytes, peak and capacity per (device, buffer type)."""

    bytes: Dict[Key, int] = field(default_factory=dict)
    peak: Dict[Key, int] = field(default_factory=dict)
    capacity: Dict[Key, int] = field(default_factory=dict)
    source: str = ""


def read() -> Reading:
    """This process's memory now, from the first source :mod:`ttmem.memory` documents."""
    r = Reading()
    tracked = [d for d in tracker.registered_devices() if d.categories]
    if tracked:
        r.source = "tracker"
        for i, d in enumerate(tracked):
            capacities = _native.capacities(d.index)
            for ci, name in enumerate(d.categories):
                c = _native.counters(d.index, ci)
                live, peak = _native.reported(d.index, ci)
                key = (f"{i}:{d.name}", name)
                r.bytes[key] = c[0] if c is not None else live
                r.peak[key] = peak
                r.capacity[key] = capacities[ci] if ci < len(capacities) else 0
        return r
    # The local sources directly, as ttmem.memory reads them: exact and immediate.
    snap, proc, chips = memory._own_process()
    r.source = proc.source if proc is not None else "none"
    for i, pd in enumerate(chips):
        chip = snap.device(pd.id)
        for pc in pd.categories:
            key = (f"{i}:{pd.name}", pc.name)
            r.bytes[key] = pc.bytes
            r.peak[key] = max(pc.peak, pc.bytes)
            cat = chip.category(pc.name) if chip is not None else None
            r.capacity[key] = cat.total if cat is not None else 0
    return r


def _short(n: int) -> str:
    return memory._short(n)


class TtmemPlugin:
    def __init__(self, config: pytest.Config) -> None:
        self.leaks = config.getoption("ttmem_leaks")
        self.limits = parse_limits(config.getoption("ttmem_max") or [])
        self.results: List[Tuple[str, Reading, Reading]] = []
        self.start: Dict[str, Reading] = {}
        self.buffers_before: Dict[str, Set[Tuple[int, str, int]]] = {}
        self.ledger_before: Dict[str, Optional[Set[Tuple[Optional[int], str, int]]]] = {}
        tracker.keep_buffers(True)

    # Measure once the test's fixtures are set up (a module's device or weights are not the
    # test's), and again after they are torn down (a fixture may free what it held).
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        yield
        if tracker.registered_devices():
            _native.reset_peak()
        self.start[item.nodeid] = read()
        self.buffers_before[item.nodeid] = {(d.index, c, a) for d, c, a, _, _ in tracker.live_buffers()}
        start = self.start[item.nodeid]
        if self.leaks and start.source not in ("tracker", "none", "tt-metal-shm"):
            self.ledger_before[item.nodeid] = _ledger_keys(start)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
        outcome = yield
        report = outcome.get_result()
        if call.when != "teardown":
            return
        start = self.start.pop(item.nodeid, None)
        if start is None:
            return
        try:
            end = read()
        except TtmemError as e:
            report.sections.append(("ttmem", f"could not read device memory: {e}"))
            return
        self.results.append((item.nodeid, start, end))
        problems = self._limits(start, end) + (self._leaks(item, start, end) if self.leaks else [])
        if problems and report.outcome != "failed":
            report.outcome = "failed"
            report.longrepr = "\n".join(problems)

    def _limits(self, start: Reading, end: Reading) -> List[str]:
        out = []
        for limit in self.limits:
            for key in end.bytes:
                if key[1].upper() != limit.category:
                    continue
                highest = end.bytes[key]
                if end.source == "tracker" or end.peak.get(key, 0) > start.peak.get(key, 0):
                    highest = max(highest, end.peak.get(key, 0))
                if limit.bytes is not None:
                    cap, over = limit.bytes, highest > limit.bytes
                else:
                    total = end.capacity.get(key, 0)
                    if not total:
                        out.append(f"ttmem: --ttmem-max {limit.describe()}: {key[0]} declares no capacity for {key[1]}; give bytes instead")
                        continue
                    assert limit.percent is not None
                    cap = int(total * limit.percent / 100)
                    over = highest > cap
                if over:
                    out.append(
                        f"ttmem: {key[1]} on device {key[0]} reached {_short(highest)} ({highest} bytes), over the limit {limit.describe()} ({_short(cap)})"
                    )
        return out

    def _leaks(self, item: pytest.Item, start: Reading, end: Reading) -> List[str]:
        grown = {k: v - start.bytes.get(k, 0) for k, v in end.bytes.items() if v > start.bytes.get(k, 0)}
        if not grown:
            return []
        lines = [f"ttmem: the test ended holding more device memory than it started with ({end.source} source):"]
        for (dev, cat), delta in sorted(grown.items()):
            lines.append(f"  device {dev} {cat}: +{_short(delta)} ({delta} bytes)")
        before = self.buffers_before.get(item.nodeid, set())
        leaked: List[Tuple[Any, str, int, int, Optional[str]]] = [
            b for b in tracker.live_buffers() if (b[0].index, b[1], b[2]) not in before
        ]
        ledger_before = self.ledger_before.pop(item.nodeid, None)
        if not leaked and ledger_before is not None:
            leaked = _ledger_leaks(ledger_before, grown)
        if leaked:
            lines.append("  leaked buffers:")
            for dev, cat, address, size, tag in leaked[:50]:
                name = dev.name if hasattr(dev, "name") else f"id {dev}"
                lines.append(f"    {hex(address)}  {_short(size):>10}  {cat:<8} device {name}  tag {tag or '-'}")
            if len(leaked) > 50:
                lines.append(f"    ... and {len(leaked) - 50} more")
        elif end.source == "tt-metal-shm":
            lines.append(
                "  (TT-Metal's counter files give bytes, not buffers: run the tests under `ttmem run` with `ttmem serve` up to list them)"
            )
        return lines

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results:
            return
        tr = terminalreporter
        tr.section("ttmem device memory per test")
        for nodeid, start, end in self.results:
            seen = set(start.bytes) | set(end.bytes)
            keys = sorted(k for k in seen if end.bytes.get(k) or start.bytes.get(k) or end.peak.get(k))
            if not keys:
                tr.write_line(f"{nodeid}: no device memory")
                continue
            parts = []
            for k in keys:
                now = end.bytes.get(k, 0)
                delta = now - start.bytes.get(k, 0)
                parts.append(
                    f"{k[1]}@{k[0]} end {_short(now)} peak {_short(max(end.peak.get(k, 0), now, start.bytes.get(k, 0)))} {'+' if delta >= 0 else ''}{_short(delta)}"
                )
            tr.write_line(f"{nodeid}: " + "; ".join(parts))


def _by_category(amounts: Dict[Key, int]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for (_, cat), n in amounts.items():
        out[cat] = out.get(cat, 0) + n
    return out


def _bytes_by_category(allocs: List[Allocation]) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for a in allocs:
        out[a.category] = out.get(a.category, 0) + a.size
    return out


def _ledger_now(deadline: float) -> Optional[List[Allocation]]:
    """This process's allocations in the daemon's ledger; None when no daemon answers, or it
    has not attached this process by ``deadline`` (it attaches a new region within its drain
    interval)."""
    client = Client()
    while True:
        try:
            return client.allocations(os.getpid())
        except DaemonError as e:
            if e.status != 404 or time.monotonic() > deadline:
                return None
        except (TtmemError, ValueError):
            return None
        time.sleep(0.05)


def _ledger_keys(now: Reading, wait_s: float = 3.0) -> Optional[Set[Tuple[Optional[int], str, int]]]:
    """This process's live allocations in a daemon's ledger (None: no daemon knows them),
    once the ledger has caught up with the counters read in ``now`` (it drains at its own
    pace)."""
    want = _by_category(now.bytes)
    deadline = time.monotonic() + wait_s
    while True:
        allocs = _ledger_now(deadline)
        if allocs is None:
            return None
        got = _bytes_by_category(allocs)
        if all(got.get(c, 0) == n for c, n in want.items()) or time.monotonic() > deadline:
            return {(a.device, a.category, a.address) for a in allocs}
        time.sleep(0.05)


def _ledger_leaks(
    before: Set[Tuple[Optional[int], str, int]], grown: Dict[Key, int], wait_s: float = 3.0
) -> List[Tuple[Any, str, int, int, Optional[str]]]:
    """The allocations the ledger gained since ``before`` (a process under ``ttmem run``, whose
    every buffer the daemon knows). The daemon drains events on its own pace, so this waits up
    to ``wait_s`` for the new allocations to add up to what the counters say grew."""
    want = _by_category(grown)
    deadline = time.monotonic() + wait_s
    new: List[Allocation] = []
    while True:
        allocs = _ledger_now(deadline)
        if allocs is None:
            return []
        new = [a for a in allocs if (a.device, a.category, a.address) not in before]
        got = _bytes_by_category(new)
        if all(got.get(cat, 0) >= n for cat, n in want.items()) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return [(a.device, a.category, a.address, a.size, a.tag) for a in sorted(new, key=lambda a: (a.category, a.address))]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ttmem", "device memory (ttmem)")
    group.addoption(
        "--ttmem-leaks",
        action="store_true",
        default=False,
        help="fail a test that ends holding more device memory than it started with",
    )
    group.addoption(
        "--ttmem-max",
        action="append",
        default=[],
        metavar="CATEGORY=LIMIT",
        help="fail a test whose device memory crosses LIMIT: a percentage of capacity (dram=80%%) or bytes (l1=64M)",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("ttmem_leaks") or config.getoption("ttmem_max"):
        config.pluginmanager.register(TtmemPlugin(config), "ttmem-plugin")
