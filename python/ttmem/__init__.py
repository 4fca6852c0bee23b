"""ttmem: who uses device memory on Tenstorrent chips, from Python.

Read every number (``ttmem.snapshot()``, ``ttmem.Client``), report allocations from a Python
runtime (``ttmem.Tracker``), ask ``torch.cuda``-style questions about this process
(``ttmem.memory_allocated()``), and catch device-memory leaks in tests (``pytest
--ttmem-leaks``). The numbers are the ones ``ttmem ps`` shows: the same Rust code reads them.

>>> import ttmem
>>> ttmem.snapshot().to_pandas()          # doctest: +SKIP
"""

from __future__ import annotations

from . import _native
from ._types import (
    ALLOCATION_COLUMNS,
    DEVICE_COLUMNS,
    PROCESS_COLUMNS,
    Alert,
    Allocation,
    Category,
    CategoryForecast,
    Device,
    Event,
    Fit,
    Gap,
    Neighbour,
    Process,
    ProcessCategory,
    ProcessDevice,
    Snapshot,
    StreamEvent,
)
from .client import Client, snapshot
from .errors import DaemonError, NoDaemonError, TtmemError
from .memory import max_memory_allocated, memory_allocated, memory_summary, reset_peak_memory_stats
from .tracker import TT_CATEGORIES, CategorySpec, Counters, TrackedDevice, Tracker, registered_devices

__version__: str = _native.version()

__all__ = [
    "ALLOCATION_COLUMNS",
    "DEVICE_COLUMNS",
    "PROCESS_COLUMNS",
    "Alert",
    "Allocation",
    "Category",
    "CategoryForecast",
    "CategorySpec",
    "Client",
    "Counters",
    "DaemonError",
    "Device",
    "Event",
    "Fit",
    "Gap",
    "Neighbour",
    "NoDaemonError",
    "Process",
    "ProcessCategory",
    "ProcessDevice",
    "Snapshot",
    "StreamEvent",
    "TT_CATEGORIES",
    "TrackedDevice",
    "Tracker",
    "TtmemError",
    "max_memory_allocated",
    "memory_allocated",
    "memory_summary",
    "registered_devices",
    "reset_peak_memory_stats",
    "snapshot",
]
