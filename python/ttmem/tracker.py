"""Tracking from Python: a runtime that allocates device memory itself reports each buffer.

:class:`Tracker` goes through the same client library as Rust and C callers (the process-wide
tracker of ``ttmem-client``): the same lock-free hot path, the same handling of ``fork`` (a
child starts with none of its parent's buffers), and the same ``TTMEM_*`` configuration
(``TTMEM_DIR``, ``TTMEM_DISABLE``, ``TTMEM_PROCESS_NAME``...). Readers (``ttmem ps``, the
daemon) see the process as they see a C++ runtime.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from . import _native

#: The seven buffer types a Tenstorrent chip declares, in TT-Metal's order.
TT_CATEGORIES = ("DRAM", "L1", "L1_SMALL", "TRACE", "CB", "KERNEL", "SYSTEM_MEMORY")


@dataclass(frozen=True)
class CategorySpec:
    """A buffer type a device declares: its name, capacity (0: unknown) and the address range
    of one bank, repeated over ``banks``."""

    name: str
    capacity: int = 0
    addr_base: int = 0
    addr_end: int = 0
    banks: int = 1
    alignment: int = 0

    def _tuple(self) -> Tuple[str, int, int, int, int, int]:
        return (self.name, self.capacity, self.addr_base, self.addr_end, self.banks, self.alignment)


@dataclass(frozen=True)
class Counters:
    """A device category's exact counters in this process's region."""

    live_bytes: int
    live_count: int
    allocs: int
    frees: int
    alloc_bytes: int
    free_bytes: int
    peak_bytes: int


@dataclass(frozen=True)
class TrackedDevice:
    """A device this process registered. ``index`` is its number in this process (0 for the
    first registered), as ``torch.cuda`` numbers devices; ``categories`` its buffer types."""

    index: int
    name: str
    arch: str
    hw_id: int
    categories: Tuple[str, ...]
    # Category name (as declared, and lower-case) or index → index: the hot path's one lookup.
    _cats: Dict[Union[str, int], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cats: Dict[Union[str, int], int] = {}
        for i, c in enumerate(self.categories):
            cats[c] = i
            cats.setdefault(c.lower(), i)
            cats[i] = i
        object.__setattr__(self, "_cats", cats)

    def category_index(self, category: Union[str, int]) -> int:
        try:
            return self._cats[category]
        except (KeyError, TypeError):
            raise ValueError(
                f"device {self.name} has no category {category!r} (it has {', '.join(self.categories)})"
            ) from None


_devices: List[TrackedDevice] = []
_devices_lock = threading.Lock()
_buffers_lock = threading.Lock()
#: (device, category, address) → (size, tag), kept only while someone asks for buffers
#: (the pytest plugin's leak report); None otherwise, so the hot path stays one native call.
_buffers: Optional[Dict[Tuple[int, int, int], Tuple[int, Optional[str]]]] = None
_tags = threading.local()


def registered_devices() -> List[TrackedDevice]:
    """The devices this process registered, in order."""
    with _devices_lock:
        return list(_devices)


def _current_tag() -> Optional[str]:
    stack = getattr(_tags, "stack", None)
    return stack[-1] if stack else None


def keep_buffers(on: bool = True) -> None:
    """Keep a list of live buffers reported from Python (for leak reports); off by default."""
    global _buffers
    with _buffers_lock:
        _buffers = {} if on else None


def live_buffers() -> List[Tuple[TrackedDevice, str, int, int, Optional[str]]]:
    """Live buffers reported since :func:`keep_buffers`: (device, category, address, size,
    tag)."""
    with _buffers_lock:
        items = list((_buffers or {}).items())
    devices = registered_devices()
    out = []
    for (d, c, address), (size, tag) in sorted(items):
        dev = devices[d] if d < len(devices) else None
        if dev is not None:
            out.append((dev, dev.categories[c], address, size, tag))
    return out


def _after_fork_in_child() -> None:
    _native.after_fork_in_child()
    global _buffers
    if _buffers is not None:
        _buffers = {}


os.register_at_fork(after_in_child=_after_fork_in_child)


class Tracker:
    """This process's tracker (every instance shares the one process-wide tracker).

    >>> t = ttmem.Tracker()
    >>> chip = t.register_device("n150", arch="wormhole_b0", hw_id=0x5157)
    >>> with t.tag("layers.3.attn"):
    ...     t.alloc(chip, "DRAM", 0x1000_0000, 8 << 20)
    >>> t.free(chip, "DRAM", 0x1000_0000, 8 << 20)

    Reporting never blocks and never raises for an address it does not know: like the C ABI,
    an unregistered device or category is counted as rejected.
    """

    def register_device(
        self,
        name: str,
        arch: str = "wormhole_b0",
        *,
        kind: str = "tenstorrent",
        hw_id: int = 0,
        logical_id: int = -1,
        remote: bool = False,
        categories: Optional[Sequence[Union[CategorySpec, Tuple[str, int, int, int, int, int]]]] = None,
    ) -> TrackedDevice:
        """Registers a device (again: the same handle for the same ``hw_id`` and
        ``logical_id``). ``categories`` default to the seven Tenstorrent buffer types of a
        Wormhole chip with its nominal address ranges."""
        specs: Optional[List[Tuple[str, int, int, int, int, int]]] = None
        names: Tuple[str, ...] = TT_CATEGORIES
        if categories is not None:
            specs = [(c if isinstance(c, CategorySpec) else CategorySpec(*c))._tuple() for c in categories]
            names = tuple(s[0] for s in specs)
            if len(set(names)) != len(names):
                raise ValueError(f"categories repeat a name: {names}")
        handle = _native.register_device(
            name, arch, kind=kind, hw_id=hw_id, logical_id=logical_id, remote=remote, categories=specs
        )
        with _devices_lock:
            while len(_devices) <= handle:
                _devices.append(TrackedDevice(len(_devices), "", "", 0, ()))
            device = TrackedDevice(handle, name, arch, hw_id, names)
            _devices[handle] = device
        return device

    @staticmethod
    def _device(device: Union[TrackedDevice, int]) -> TrackedDevice:
        if isinstance(device, TrackedDevice):
            return device
        with _devices_lock:
            if isinstance(device, int) and 0 <= device < len(_devices) and _devices[device].categories:
                return _devices[device]
        raise ValueError(f"no device {device!r} registered in this process (see Tracker.register_device)")

    def _resolve(self, device: Union[TrackedDevice, int], category: Union[str, int]) -> Tuple[int, int]:
        d = self._device(device)
        return d.index, d.category_index(category)

    def alloc(self, device: Union[TrackedDevice, int], category: Union[str, int], address: int, size: int) -> None:
        """Reports an allocation of ``size`` bytes at ``address``."""
        try:
            d, c = device.index, device._cats[category]  # type: ignore[union-attr]
        except (AttributeError, KeyError, TypeError):
            d, c = self._resolve(device, category)
        _native.alloc(d, c, address, size)
        if _buffers is not None:
            with _buffers_lock:
                if _buffers is not None:
                    _buffers[(d, c, address)] = (size, _current_tag())

    def free(self, device: Union[TrackedDevice, int], category: Union[str, int], address: int, size: int) -> None:
        """Reports that the buffer at ``address`` (of ``size`` bytes) was freed."""
        try:
            d, c = device.index, device._cats[category]  # type: ignore[union-attr]
        except (AttributeError, KeyError, TypeError):
            d, c = self._resolve(device, category)
        _native.free(d, c, address, size)
        if _buffers is not None:
            with _buffers_lock:
                if _buffers is not None:
                    _buffers.pop((d, c, address), None)

    @contextlib.contextmanager
    def tag(self, name: str) -> Iterator[None]:
        """Tags this thread's allocations inside the block (``with t.tag("layer3"):``); tags
        nest, and readers show the innermost."""
        previous = _native.push_tag(name)
        stack = getattr(_tags, "stack", None)
        if stack is None:
            stack = _tags.stack = []
        stack.append(name)
        try:
            yield
        finally:
            stack.pop()
            _native.pop_tag(previous)

    def counters(self, device: Union[TrackedDevice, int], category: Union[str, int]) -> Optional[Counters]:
        """The exact counters readers see for a device category (None while tracking is off
        or no region could be made)."""
        d = self._device(device)
        c = _native.counters(d.index, d.category_index(category))
        return None if c is None else Counters(*c)

    @property
    def region_path(self) -> Optional[str]:
        """This process's region file, which readers find (None: tracking is off)."""
        return _native.region()[0]

    @property
    def region_error(self) -> Optional[str]:
        """Why no region could be made, if none could."""
        return _native.region()[1]

    @property
    def enabled(self) -> bool:
        return _native.enabled()


__all__ = ["Tracker", "TrackedDevice", "CategorySpec", "Counters", "TT_CATEGORIES", "registered_devices"]
