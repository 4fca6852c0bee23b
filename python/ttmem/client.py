"""Reading ttmem from Python: :func:`snapshot` and :class:`Client`.

Both use the same rules as the ``ttmem`` command, through the same Rust code: a daemon named by
``url`` or ``api_socket`` (or ``TTMEM_API_SOCKET``) must answer; without one named, the default
daemon is asked and, when none runs, the local sources are read directly (the per-process
regions in ``/dev/shm/ttmem``, TT-Metal's counter files and the kernel driver's pid lists).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import urllib.parse
from typing import Any, Dict, Iterator, List, Optional, Union

from . import _native
from ._types import (
    ALLOCATION_COLUMNS,
    Alert,
    Allocation,
    CategoryForecast,
    Device,
    Event,
    Fit,
    Process,
    Snapshot,
    StreamEvent,
    _build,
    _pandas,
    frame,
)
from .errors import DaemonError, NoDaemonError, TtmemError

PathLike = Union[str, "os.PathLike[str]"]


def _path(p: Optional[PathLike]) -> Optional[str]:
    return None if p is None else os.fspath(p)


def snapshot(
    *,
    url: Optional[str] = None,
    api_socket: Optional[PathLike] = None,
    dir: Optional[PathLike] = None,
    no_daemon: bool = False,
    tt_metal_dir: Optional[str] = None,
    proc_root: Optional[PathLike] = None,
) -> Snapshot:
    """Every chip and process now: what ``ttmem ps --json`` prints, with the same arguments
    (``--url``, ``--api-socket``, ``--dir``, ``--no-daemon``, ``--tt-metal-dir``,
    ``--proc-root``) and the same ``TTMEM_*`` variables.

    Raises :class:`NoDaemonError` when a daemon named does not answer.
    """
    text = _native.snapshot_json(
        url=url,
        api_socket=_path(api_socket),
        dir=_path(dir),
        no_daemon=no_daemon,
        tt_metal_dir=tt_metal_dir,
        proc_root=_path(proc_root),
    )
    return Snapshot.from_json(json.loads(text))


def _query(params: Dict[str, Any]) -> str:
    kept = {k: v for k, v in params.items() if v is not None}
    return "?" + urllib.parse.urlencode(kept) if kept else ""


def _unix_s(t: Union[None, int, float, _dt.datetime, _dt.timedelta]) -> Optional[int]:
    """A time as Unix seconds: a datetime, a Unix time, or a timedelta back from now."""
    if t is None:
        return None
    if isinstance(t, _dt.timedelta):
        return int((_dt.datetime.now(tz=_dt.timezone.utc) - t).timestamp())
    if isinstance(t, _dt.datetime):
        if t.tzinfo is None:
            raise ValueError("give a timezone-aware datetime (e.g. datetime.now(timezone.utc))")
        return int(t.timestamp())
    if isinstance(t, (int, float)) and t >= 0:
        return int(t)
    raise ValueError(f"not a time: {t!r} (a datetime, a Unix time or a timedelta)")


class Client:
    """A daemon's API (docs/api.md). ``url`` (``http://HOST:PORT``) or ``api_socket`` name it;
    with neither, ``TTMEM_API_SOCKET`` or the default socket. The daemon must answer: a call
    raises :class:`NoDaemonError` when none runs, and :class:`DaemonError` (with the daemon's
    ``status`` and ``reason``) when it refuses."""

    def __init__(self, url: Optional[str] = None, api_socket: Optional[PathLike] = None) -> None:
        if url is not None and api_socket is not None:
            raise ValueError("give url or api_socket, not both")
        self.url = url
        self.api_socket = _path(api_socket)
        self.endpoint, _ = _native.resolve(url=url, api_socket=self.api_socket)

    def __repr__(self) -> str:
        return f"ttmem.Client({self.endpoint!r})"

    def get_bytes(self, path: str) -> bytes:
        """One answer's body, as sent (``path`` like ``/api/v1/health``)."""
        status, body = _native.api_get(path, url=self.url, api_socket=self.api_socket)
        if not 200 <= status < 300:
            try:
                reason = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                reason = body.decode("utf-8", "replace").strip()
            raise DaemonError(status, reason)
        return body

    def get(self, path: str) -> Any:
        """One answer, decoded from JSON (``path`` under ``/api/v1/`` unless absolute)."""
        if not path.startswith("/"):
            path = "/api/v1/" + path
        return json.loads(self.get_bytes(path))

    def health(self) -> Dict[str, Any]:
        """The daemon's health: status, version, uptime, its region directory, the database."""
        answer: Dict[str, Any] = self.get("health")
        return answer

    def snapshot(self) -> Snapshot:
        """The daemon's snapshot (``source`` is ``daemon``)."""
        return Snapshot.from_json(self.get("snapshot"))

    def devices(self) -> List[Device]:
        return [Device.from_json(d) for d in self.get("devices")["devices"]]

    def processes(self) -> List[Process]:
        """Running and exited processes (exited ones kept for the retention period)."""
        return [Process.from_json(p) for p in self.get("processes")["processes"]]

    def allocations(self, pid: int, *, sort: str = "address", limit: Optional[int] = None) -> List[Allocation]:
        """A process's live allocations (all of them unless ``limit``), sorted by ``address``,
        ``size`` or ``age``. Only its owner and root may see them."""
        if sort not in ("address", "size", "age"):
            raise ValueError(f"sort by address, size or age, not {sort!r}")
        if limit is not None and limit < 0:
            raise ValueError("limit must be at least 0")
        out: List[Allocation] = []
        offset = 0
        while limit is None or len(out) < limit:
            page_size = 10_000 if limit is None else min(10_000, limit - len(out))
            page = self.get(f"processes/{int(pid)}/allocations{_query({'sort': sort, 'offset': offset, 'limit': page_size})}")
            out.extend(_build(Allocation, a) for a in page["items"])
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                break
        return out

    def allocations_frame(self, pid: int, *, sort: str = "address") -> Any:
        """:meth:`allocations` as a DataFrame (:data:`ttmem._types.ALLOCATION_COLUMNS`)."""
        rows = [a.__dict__ for a in self.allocations(pid, sort=sort)]
        return frame(rows, ALLOCATION_COLUMNS)

    def events(self, pid: int) -> List[Event]:
        """A process's flight recorder, oldest first (also after it died)."""
        answer = self.get(f"processes/{int(pid)}/events")
        clock = answer.get("clock")
        events = []
        for e in answer["events"]:
            when = None
            if clock:
                unix_ns = clock["unix_ns"] + e["time_ns"] - clock["monotonic_ns"]
                when = _dt.datetime.fromtimestamp(unix_ns / 1e9, tz=_dt.timezone.utc)
            events.append(_build(Event, e, time=when))
        return events

    def history(
        self,
        device: int,
        category: str = "DRAM",
        *,
        pid: Optional[int] = None,
        resolution: str = "1s",
        since: Union[None, int, float, _dt.datetime, _dt.timedelta] = None,
        until: Union[None, int, float, _dt.datetime, _dt.timedelta] = None,
    ) -> Any:
        """Bytes over time as a DataFrame: a UTC ``DatetimeIndex`` named ``time`` and an
        ``int64`` column ``bytes`` (a step series: each row holds until the next). ``since``
        and ``until`` take a datetime, a Unix time or a timedelta back from now."""
        if resolution not in ("1s", "10s", "1m"):
            raise ValueError(f"resolution is 1s, 10s or 1m, not {resolution!r}")
        q = _query(
            {
                "device": int(device),
                "category": category,
                "pid": pid,
                "resolution": resolution,
                "from": _unix_s(since),
                "to": _unix_s(until),
            }
        )
        points = self.get("history" + q)["points"]
        pd = _pandas()
        index = pd.to_datetime([p[0] for p in points], unit="s", utc=True)
        df = pd.DataFrame({"bytes": [p[1] for p in points]}, index=index).astype({"bytes": "int64"})
        df.index.name = "time"
        return df

    def fit(self, device: int, category: str, nbytes: int) -> Fit:
        """Can ``nbytes`` of ``category`` be allocated on ``device`` now, and where."""
        if nbytes < 0:
            raise ValueError("nbytes must be at least 0")
        return Fit.from_json(self.get(f"fit{_query({'device': int(device), 'category': category, 'bytes': int(nbytes)})}"))

    def alerts(self, *, include_resolved: bool = False) -> List[Alert]:
        """The alerts pending or firing (and recently resolved ones when asked)."""
        answer = self.get("alerts")
        found = answer["active"] + (answer["resolved"] if include_resolved else [])
        return [_build(Alert, a) for a in found]

    def forecast(self, window_s: Optional[int] = None) -> List[CategoryForecast]:
        """When each chip's buffer types fill up at their trend over ``window_s`` seconds."""
        answer = self.get("forecast" + _query({"window_s": window_s}))
        return [_build(CategoryForecast, f) for f in answer["forecasts"]]

    def export(self, pid: int, format: str = "perfetto", *, since: Union[None, int, float, _dt.datetime, _dt.timedelta] = None) -> bytes:
        """A process as a file for Perfetto (``perfetto``) or PyTorch's memory viewer
        (``memory-viz``), as ``ttmem export`` writes it."""
        if format not in ("perfetto", "memory-viz"):
            raise ValueError(f"format is perfetto or memory-viz, not {format!r}")
        return self.get_bytes(f"/api/v1/processes/{int(pid)}/export{_query({'format': format, 'since_s': _unix_s(since)})}")

    def stream(self, *, timeout_s: float = 30.0) -> Iterator[StreamEvent]:
        """The daemon's live events, as they come: the first ``update`` carries the whole
        state. Stop by breaking out of the loop; a silence longer than ``timeout_s`` raises
        ``TimeoutError``."""
        try:
            raw = _native.EventStream("/api/v1/stream", url=self.url, api_socket=self.api_socket, timeout_s=timeout_s)
        except _native.DaemonError as e:
            raise DaemonError(*e.args) from None
        try:
            for event, data in raw:
                try:
                    decoded: Any = json.loads(data)
                except ValueError:
                    decoded = data
                yield StreamEvent(event, decoded)
        finally:
            raw.close()


__all__ = ["Client", "snapshot", "NoDaemonError", "DaemonError", "TtmemError"]
