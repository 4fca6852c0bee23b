"""Typed objects for what ttmem reports: the objects of ``ttmem ps --json`` and of the daemon's
API (docs/ps-json.md, docs/api.md), with DataFrame helpers.

Every object keeps the JSON it came from in ``raw``, so fields added later in schema 1 are never
lost.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Type, TypeVar

T = TypeVar("T")

#: Columns of :meth:`Snapshot.to_pandas`, the same as ``ttmem ps --csv``, with their dtypes.
PROCESS_COLUMNS: Dict[str, str] = {
    "pid": "int64",
    "start_time": "int64",
    "user": "string",
    "name": "string",
    "state": "string",
    "left_behind": "bool",
    "device_id": "int64",
    "hw_id": "string",
    "device_name": "string",
    "category": "string",
    "bytes": "int64",
    "count": "int64",
    "peak": "int64",
    "allocs": "int64",
    "frees": "int64",
}

#: Columns of :meth:`Snapshot.devices_frame`, the same as ``ttmem ps --csv --devices``.
DEVICE_COLUMNS: Dict[str, str] = {
    "device_id": "int64",
    "hw_id": "string",
    "kind": "string",
    "arch": "string",
    "name": "string",
    "remote": "bool",
    "category": "string",
    "used": "int64",
    "total": "int64",
    "count": "int64",
    "processes": "int64",
}

#: Columns of :meth:`ttmem.Client.allocations_frame`.
ALLOCATION_COLUMNS: Dict[str, str] = {
    "pid": "int64",
    "device": "Int64",
    "category": "string",
    "address": "uint64",
    "size": "int64",
    "age_s": "int64",
    "tag": "string",
}


def _pandas() -> Any:
    try:
        import pandas
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "DataFrame helpers need pandas: pip install 'ttmem[pandas]' (or pandas)"
        ) from e
    return pandas


def frame(rows: List[Dict[str, Any]], columns: Dict[str, str]) -> Any:
    """A DataFrame with exactly ``columns`` in order and their documented dtypes, also when
    ``rows`` is empty."""
    pd = _pandas()
    data = {c: [r.get(c) for r in rows] for c in columns}
    df = pd.DataFrame(data, columns=list(columns))
    return df.astype(columns)


def _build(cls: Type[T], d: Dict[str, Any], **override: Any) -> T:
    """``cls`` from a JSON object: known fields taken (missing ones get their defaults), the
    whole object kept in ``raw``."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {k: v for k, v in d.items() if k in names}
    kwargs.update(override)
    if "raw" in names:
        kwargs["raw"] = d
    return cls(**kwargs)


@dataclass(frozen=True)
class Category:
    """One buffer type of a chip: bytes held by running processes, and its capacity."""

    name: str
    used: int = 0
    total: int = 0
    count: int = 0

    @property
    def fraction(self) -> Optional[float]:
        """Used over capacity (None when the capacity is unknown)."""
        return self.used / self.total if self.total else None


@dataclass(frozen=True)
class Device:
    """A chip, as every reader numbers it (``id`` is the host-wide device id)."""

    id: int
    hw_id: str
    kind: str
    arch: str
    name: str
    remote: bool = False
    categories: List[Category] = field(default_factory=list)
    processes: int = 0
    sources: List[str] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def from_json(d: Dict[str, Any]) -> "Device":
        return _build(Device, d, categories=[_build(Category, c) for c in d.get("categories", [])])

    def category(self, name: str) -> Optional[Category]:
        """A buffer type by name (case-insensitive)."""
        return next((c for c in self.categories if c.name.lower() == name.lower()), None)


@dataclass(frozen=True)
class ProcessCategory:
    """A process's exact counters for one buffer type of one chip."""

    name: str
    bytes: int = 0
    count: int = 0
    peak: int = 0
    allocs: int = 0
    frees: int = 0


@dataclass(frozen=True)
class ProcessDevice:
    """What a process holds on one chip."""

    id: int
    hw_id: str
    name: str
    logical_id: Optional[int] = None
    categories: List[ProcessCategory] = field(default_factory=list)

    @staticmethod
    def from_json(d: Dict[str, Any]) -> "ProcessDevice":
        cats = [_build(ProcessCategory, c) for c in d.get("categories", [])]
        return _build(ProcessDevice, d, categories=cats)

    def category(self, name: str) -> Optional[ProcessCategory]:
        return next((c for c in self.categories if c.name.lower() == name.lower()), None)


@dataclass(frozen=True)
class Process:
    """A process that reports device memory, running or exited (``left_behind``: it exited
    holding memory, and the figures are what it left)."""

    pid: int
    start_time: int
    uid: int
    user: str
    name: str
    cmdline: str = ""
    state: str = "running"
    left_behind: bool = False
    age_s: float = 0.0
    devices: List[ProcessDevice] = field(default_factory=list)
    totals: List[ProcessCategory] = field(default_factory=list)
    device_ids: List[int] = field(default_factory=list)
    peak_bytes: int = 0
    source: str = "region"
    region: str = ""
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def from_json(d: Dict[str, Any]) -> "Process":
        devices = [ProcessDevice.from_json(x) for x in d.get("devices", [])]
        totals = [_build(ProcessCategory, c) for c in d.get("totals", [])]
        ids = d.get("device_ids") or [x.id for x in devices]
        return _build(Process, d, devices=devices, totals=totals, device_ids=ids)

    @property
    def running(self) -> bool:
        return self.state == "running"

    def total(self, category: str) -> int:
        """Bytes of a buffer type over all chips."""
        return next((c.bytes for c in self.totals if c.name.lower() == category.lower()), 0)


@dataclass(frozen=True)
class Snapshot:
    """Every chip and process at one instant: the object ``ttmem ps --json`` prints."""

    schema: int
    source: str
    region_dir: str
    timestamp_ns: int
    devices: List[Device]
    processes: List[Process]
    skipped: List[Dict[str, Any]] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def from_json(d: Dict[str, Any]) -> "Snapshot":
        return _build(
            Snapshot,
            d,
            devices=[Device.from_json(x) for x in d.get("devices", [])],
            processes=[Process.from_json(x) for x in d.get("processes", [])],
            skipped=d.get("skipped", []),
            notes=d.get("notes", []),
        )

    @property
    def timestamp(self) -> _dt.datetime:
        return _dt.datetime.fromtimestamp(self.timestamp_ns / 1e9, tz=_dt.timezone.utc)

    def device(self, id: int) -> Optional[Device]:
        return next((d for d in self.devices if d.id == id), None)

    def process(self, pid: int) -> Optional[Process]:
        """The process with this pid (a running one before an exited one)."""
        return next((p for p in self.processes if p.pid == pid), None)

    def to_pandas(self) -> Any:
        """One row per process × chip × buffer type, the columns of ``ttmem ps --csv``
        (:data:`PROCESS_COLUMNS`)."""
        rows = []
        for p in self.processes:
            for d in p.devices:
                for c in d.categories:
                    rows.append(
                        {
                            "pid": p.pid,
                            "start_time": p.start_time,
                            "user": p.user,
                            "name": p.name,
                            "state": p.state,
                            "left_behind": p.left_behind,
                            "device_id": d.id,
                            "hw_id": d.hw_id,
                            "device_name": d.name,
                            "category": c.name,
                            "bytes": c.bytes,
                            "count": c.count,
                            "peak": c.peak,
                            "allocs": c.allocs,
                            "frees": c.frees,
                        }
                    )
        return frame(rows, PROCESS_COLUMNS)

    def devices_frame(self) -> Any:
        """One row per chip × buffer type, the columns of ``ttmem ps --csv --devices``
        (:data:`DEVICE_COLUMNS`)."""
        rows = []
        for d in self.devices:
            for c in d.categories:
                rows.append(
                    {
                        "device_id": d.id,
                        "hw_id": d.hw_id,
                        "kind": d.kind,
                        "arch": d.arch,
                        "name": d.name,
                        "remote": d.remote,
                        "category": c.name,
                        "used": c.used,
                        "total": c.total,
                        "count": c.count,
                        "processes": d.processes,
                    }
                )
        return frame(rows, DEVICE_COLUMNS)


@dataclass(frozen=True)
class Allocation:
    """One live buffer of a process."""

    pid: int
    device: Optional[int]
    category: str
    address: int
    size: int
    age_s: int = 0
    tag: Optional[str] = None


@dataclass(frozen=True)
class Event:
    """One event of a process's flight recorder. ``time_ns`` is ``CLOCK_MONOTONIC``;
    ``time`` the same instant on the wall clock, when the daemon said how its clocks relate."""

    kind: str
    device: Optional[int]
    category: Optional[str]
    address: int
    size: int
    time_ns: int
    tag: Optional[str] = None
    matched: bool = True
    time: Optional[_dt.datetime] = None


@dataclass(frozen=True)
class Neighbour:
    """An allocation beside a free gap, and its owner's pid (None: a process now forgotten)."""

    pid: Optional[int]
    address: int
    size: int


@dataclass(frozen=True)
class Gap:
    """A free gap of one bank: ``[start, end)`` and the allocations around it."""

    start: int
    end: int
    below: Optional[Neighbour] = None
    above: Optional[Neighbour] = None

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Fit:
    """Whether ``requested`` bytes of a buffer type fit on a chip now."""

    device: int
    category: str
    fits: bool
    requested: int
    needed_per_bank: int
    largest_free_per_bank: int
    best_gaps: List[Gap] = field(default_factory=list)
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @staticmethod
    def from_json(d: Dict[str, Any]) -> "Fit":
        def nb(x: Optional[Dict[str, Any]]) -> Optional[Neighbour]:
            return None if x is None else _build(Neighbour, x)

        gaps = [Gap(g["start"], g["end"], nb(g.get("below")), nb(g.get("above"))) for g in d.get("best_gaps", [])]
        return _build(Fit, d, best_gaps=gaps)


@dataclass(frozen=True)
class Alert:
    """One of the daemon's alerts: pending, firing or resolved."""

    rule: str
    kind: str
    severity: str
    state: str
    labels: Dict[str, str]
    summary: str
    value: Optional[float] = None
    active_since_unix_ns: int = 0
    firing_since_unix_ns: Optional[int] = None
    resolved_unix_ns: Optional[int] = None
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def firing(self) -> bool:
        return self.state == "firing"


@dataclass(frozen=True)
class CategoryForecast:
    """When one chip's buffer type fills up at its recent trend (None: no confident trend)."""

    device: int
    hw_id: str
    category: str
    used: int
    capacity: int
    slope_bytes_per_s: Optional[float] = None
    r2: Optional[float] = None
    samples: int = 0
    time_to_full_s: Optional[float] = None


@dataclass(frozen=True)
class StreamEvent:
    """One event of the daemon's stream: ``update`` (changed chips and processes) or
    ``alert``; ``data`` is its decoded JSON."""

    event: str
    data: Any
