"""ttmem's exceptions. Every one derives from :class:`TtmemError`."""

from __future__ import annotations

from . import _native

#: Base class of ttmem's errors.
TtmemError = _native.TtmemError

#: No daemon answers at the address asked (start one with ``ttmem serve``).
NoDaemonError = _native.NoDaemonError


class DaemonError(_native.DaemonError):
    """The daemon answered with an error: ``status`` (HTTP) and the daemon's ``reason``."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(status, reason)
        self.status = status
        self.reason = reason

    def __str__(self) -> str:
        return f"the daemon answered {self.status}: {self.reason}"


__all__ = ["TtmemError", "NoDaemonError", "DaemonError"]
