"""``torch.cuda``-style queries about the current process's device memory.

Which source answers, in this order:

1. **This process's own reports** through :class:`ttmem.Tracker`, when it registered devices:
   ``device`` N is the N-th device it registered. ``memory_allocated`` is the exact live bytes
   of the process's region (every thread's reports); ``max_memory_allocated`` is the exact peak
   of what was reported since the process started or since :func:`reset_peak_memory_stats`.
   No daemon is needed.
2. **Otherwise, what the sources see of this pid**, read directly (``TTMEM_DIR``'s regions,
   TT-Metal's counter files; exact and immediate, where a daemon answers as of its last
   drain): a ttnn process seen
   through TT-Metal's own counter files (bytes per chip and buffer type), or one started under
   ``ttmem run`` (every buffer, through the preload's region). ``device`` N is the N-th chip the
   process uses, in host device-id order. ``max_memory_allocated`` is the source's peak since
   the process started (TT-Metal's counter files keep none: there it is the highest value seen
   by these calls); after :func:`reset_peak_memory_stats` it is the highest of the value at
   the reset, the present value, the source's peak when it has risen since the reset, and,
   when a daemon runs, its 1 s history of this process since the reset.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional, Tuple

from . import _native
from .client import Client, snapshot
from .errors import TtmemError
from ._types import Process, ProcessDevice, Snapshot
from .tracker import TrackedDevice, registered_devices

# Peaks seen through the sources: (device, category) → highest bytes seen by these calls.
_seen_peak: Dict[Tuple[int, str], int] = {}
# At each reset through the sources: (device, category) → (unix s, bytes then, source peak then).
_reset_at: Dict[Tuple[int, str], Tuple[float, int, int]] = {}


def _own_process() -> Tuple[Snapshot, Optional[Process], List[ProcessDevice]]:
    """This process as the sources see it, and its devices in id order (None: unseen). The
    local sources are read directly, not through a daemon: a process may always read its own
    region and counter files, and so gets exact values at once, not as of the daemon's last
    drain."""
    snap = snapshot(no_daemon=True)
    proc = next((p for p in snap.processes if p.pid == os.getpid() and p.running), None)
    if proc is None:
        return snap, None, []
    return snap, proc, sorted(proc.devices, key=lambda d: d.id)


def _tracked(device: int) -> Optional[TrackedDevice]:
    devices = [d for d in registered_devices() if d.categories]
    if not devices:
        return None
    if not 0 <= device < len(devices):
        raise ValueError(f"this process registered {len(devices)} device(s); there is no device {device}")
    return devices[device]


def memory_allocated(device: int = 0, category: str = "DRAM") -> int:
    """Bytes of ``category`` this process holds on its ``device``-th device now."""
    tracked = _tracked(device)
    if tracked is not None:
        c = tracked.category_index(category)
        counters = _native.counters(tracked.index, c)
        return counters[0] if counters is not None else _native.reported(tracked.index, c)[0]
    _, _, devices = _own_process()
    used = _source_value(devices, device, category)[0]
    key = (device, category.upper())
    _seen_peak[key] = max(_seen_peak.get(key, 0), used)
    return used


def _source_value(devices: List[ProcessDevice], device: int, category: str) -> Tuple[int, int]:
    """(bytes, source peak) of the ``device``-th device's category; 0s when it holds none."""
    if not devices:
        return 0, 0
    if not 0 <= device < len(devices):
        raise ValueError(f"this process uses {len(devices)} device(s); there is no device {device}")
    cat = devices[device].category(category)
    return (cat.bytes, cat.peak) if cat is not None else (0, 0)


def max_memory_allocated(device: int = 0, category: str = "DRAM") -> int:
    """The most bytes of ``category`` this process held on its ``device``-th device since it
    started or since :func:`reset_peak_memory_stats` (see the module's notes per source)."""
    tracked = _tracked(device)
    if tracked is not None:
        return _native.reported(tracked.index, tracked.category_index(category))[1]
    _, proc, devices = _own_process()
    return _source_peak(proc, devices, device, category)


def _source_peak(proc: Optional[Process], devices: List[ProcessDevice], device: int, category: str) -> int:
    """:func:`max_memory_allocated` from a reading of the sources already made."""
    used, peak = _source_value(devices, device, category)
    key = (device, category.upper())
    seen = max(_seen_peak.get(key, 0), used)
    _seen_peak[key] = seen
    reset = _reset_at.get(key)
    if reset is None:
        return max(peak, seen)
    at, then, peak_then = reset
    best = max(then, seen)
    if peak > peak_then:
        best = max(best, peak)
    if proc is not None:
        best = max(best, _history_peak(devices[device].id if devices else 0, category, proc.pid, at))
    return best


def _history_peak(device_id: int, category: str, pid: int, since: float) -> int:
    try:
        frame = Client().history(device_id, category, pid=pid, since=int(since))
    except (TtmemError, ValueError, ImportError):
        return 0
    return int(frame["bytes"].max()) if len(frame) else 0


def reset_peak_memory_stats(device: Optional[int] = None) -> None:
    """Starts the peaks anew at the present values (all devices when ``device`` is None)."""
    tracked = registered_devices()
    if any(d.categories for d in tracked):
        if device is None:
            _native.reset_peak()
        else:
            mine = _tracked(device)
            _native.reset_peak(mine.index if mine is not None else device)
        return
    _, _, chips = _own_process()
    now = time.time()
    for i, chip in enumerate(chips):
        if device is not None and i != device:
            continue
        for pc in chip.categories:
            key = (i, pc.name.upper())
            _reset_at[key] = (now, pc.bytes, pc.peak)
            _seen_peak[key] = pc.bytes


def memory_summary(device: Optional[int] = None) -> str:
    """A table of this process's device memory: per device and buffer type, bytes now, peak,
    and allocations made and freed."""
    rows: List[Tuple[str, str, int, int, int, int]] = []
    tracked = [d for d in registered_devices() if d.categories]
    if tracked:
        for i, d in enumerate(tracked):
            if device is not None and i != device:
                continue
            for ci, name in enumerate(d.categories):
                c = _native.counters(d.index, ci)
                live, peak = _native.reported(d.index, ci)
                allocs, frees = (c[2], c[3]) if c is not None else (0, 0)
                rows.append((f"{i} {d.name}", name, c[0] if c else live, peak, allocs, frees))
        source = "this process's reports (ttmem.Tracker)"
    else:
        _, proc, chips = _own_process()
        for i, chip in enumerate(chips):
            if device is not None and i != device:
                continue
            for pc in chip.categories:
                peak = _source_peak(proc, chips, i, pc.name)
                rows.append((f"{i} {chip.name}", pc.name, pc.bytes, peak, pc.allocs, pc.frees))
        source = f"the {proc.source} source" if proc is not None else "no source reports this process"
    return _render_summary(rows, source)


def _short(n: int) -> str:
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    v, u = float(n), 0
    while abs(v) >= 1024 and u < len(units) - 1:
        v, u = v / 1024, u + 1
    return f"{n} B" if u == 0 else f"{v:.1f} {units[u]}"


def _render_summary(rows: List[Tuple[str, str, int, int, int, int]], source: str) -> str:
    head = ("device", "buffer type", "now", "peak", "allocs", "frees")
    cells = [head] + [(d, c, _short(n), _short(p), str(a), str(f)) for d, c, n, p, a, f in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(head))]
    lines = [f"ttmem memory summary (pid {os.getpid()}, from {source})"]
    for r in cells:
        lines.append("  ".join(x.ljust(w) if i < 2 else x.rjust(w) for i, (x, w) in enumerate(zip(r, widths))))
    if not rows:
        lines.append("(no device memory reported)")
    return "\n".join(lines) + "\n"


__all__ = ["memory_allocated", "max_memory_allocated", "reset_peak_memory_stats", "memory_summary"]
