"""Where a process's memory goes: resident memory sampled by phase, and Python's allocations
(NumPy's included) at their peak.

A thread reads ``/proc/self/statm`` every few milliseconds and keeps the highest resident size
seen in each phase (a label the measured code sets with :meth:`Probe.phase`). With ``trace``,
``tracemalloc`` runs too and the thread takes a snapshot whenever resident memory passes its
previous high by a few megabytes, so the last snapshot is Python's allocations at (near) the
resident peak, grouped by where they were made (an array allocated but not yet written is in the
snapshot without being resident). Resident memory beyond the traced total is native: gRPC's
core and OpenSSL buffers, the interpreter and libraries, and pages the allocator keeps.

Used by ``bench/deploy_bench.py --probe``; Linux only (``/proc``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

MB = 1 << 20
STEP = 4 * MB
"""How far the traced total must pass its previous high before another snapshot is taken."""


class Probe:
    def __init__(self, *, trace: bool, interval: float = 0.003) -> None:
        self.current = "other"
        self.rss_peaks: dict[str, float] = {}
        self.snapshot: tracemalloc.Snapshot | None = None
        self.snapshot_phase = ""
        self.snapshot_rss = 0.0
        self.maps_high = 0.0
        self.maps: dict[str, object] = {}
        self.trace = trace
        self._interval = interval
        self._page = os.sysconf("SC_PAGE_SIZE")
        self._stop = threading.Event()
        if trace:
            tracemalloc.start(16)
        self._thread = threading.Thread(target=self._run, name="memory-probe", daemon=True)
        self._thread.start()

    def phase(self, name: str) -> None:
        self.current = name

    @contextlib.contextmanager
    def during(self, name: str) -> Iterator[None]:
        before = self.current
        self.current = name
        try:
            yield
        finally:
            self.current = before

    def rss_mb(self) -> float:
        fields = Path("/proc/self/statm").read_text().split()
        return int(fields[1]) * self._page / MB

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.rss_mb()
            name = self.current
            self.rss_peaks[name] = max(self.rss_peaks.get(name, 0.0), rss)
            if rss > self.maps_high + 2:
                self.maps_high = rss
                self.maps = {"phase": name, "rss_mb": rss, **_mappings(), **_malloc()}
                if self.trace:  # a walk of every object: only when tracing anyway
                    self.maps["arrays"] = _arrays()
            if self.trace and rss > self.snapshot_rss + STEP / MB:
                self.snapshot = tracemalloc.take_snapshot()
                self.snapshot_phase = name
                self.snapshot_rss = rss
            time.sleep(self._interval)

    def report(self, top: int = 14) -> dict[str, object]:
        self._stop.set()
        self._thread.join()
        out: dict[str, object] = {"rss_peak_mb_by_phase": self.rss_peaks, "at_peak": self.maps}
        if self.trace:
            _, peak = tracemalloc.get_traced_memory()
            out["traced_peak_mb"] = peak / MB
        if self.snapshot is not None:
            stats = self.snapshot.statistics("traceback")
            total = sum(s.size for s in stats)
            out["snapshot"] = {
                "phase": self.snapshot_phase,
                "rss_mb": self.snapshot_rss,
                "traced_mb": total / MB,
                "top": [
                    {"mb": s.size / MB, "count": s.count, "where": _where(s.traceback)}
                    for s in stats[:top]
                ],
            }
        return out


def _where(traceback: tracemalloc.Traceback) -> list[str]:
    """The allocation's frames, innermost first, as ``file:line`` with the path cut to the
    project or the package (the outermost frames, the thread's start, are left out)."""
    frames = []
    for frame in reversed(traceback):  # innermost first
        name = frame.filename
        for cut in ("/src/", "/bench/", "/site-packages/", "/lib/python3"):
            if cut in name:
                name = name.split(cut, 1)[1]
                break
        frames.append(f"{name}:{frame.lineno}")
    return frames[:8]


def _mappings() -> dict[str, object]:
    """Resident memory by kind of mapping: anonymous mappings with a megabyte or more resident,
    each listed as (size, resident) in MB (a NumPy array of 38.1 or 76.3 MB gets its own mapping;
    glibc's thread arenas are mappings of up to 64 MB), the rest of anonymous memory, the
    ``[heap]``, and files (libraries)."""
    kinds: dict[str, float] = {}
    large: list[tuple[float, float]] = []
    size_kb = 0
    kind = ""
    perms = ""
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and not parts[0].endswith(":"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
            size_kb = (end - start) // 1024
            perms = parts[1]
            path = parts[5] if len(parts) > 5 else ""
            if path == "[heap]":
                kind = "heap"
            elif path.startswith("/"):
                kind = "files"
            elif path:
                kind = path
            else:
                kind = "anon"
        elif parts[0] == "Rss:":
            rss_mb = int(parts[1]) / 1024
            if kind == "anon" and rss_mb >= 1 and perms.startswith("rw"):
                large.append((size_kb / 1024, rss_mb))
                kinds["anon, 1 MB resident or more"] = (
                    kinds.get("anon, 1 MB resident or more", 0.0) + rss_mb
                )
            else:
                kinds[kind] = kinds.get(kind, 0.0) + rss_mb
    large.sort(key=lambda m: -m[1])
    return {
        "by_kind_mb": {k: round(v, 1) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "large_anon_mb": [(round(size, 1), round(rss, 1)) for size, rss in large[:20]],
    }


_MALLINFO2 = (
    "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
    "keepcost",
)  # fmt: skip


class _MallInfo2(ctypes.Structure):
    """glibc's ``struct mallinfo2``: every field a ``size_t``."""

    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2]


def _malloc() -> dict[str, object]:
    """glibc's own account (``mallinfo2``, glibc 2.33 and later; nothing elsewhere): bytes its
    arenas hold from the system, how much of that is allocated and how much is free but kept,
    and the bytes of blocks mapped one apiece (NumPy's large arrays)."""
    try:
        info = ctypes.CDLL(None).mallinfo2
    except (AttributeError, OSError):
        return {}
    info.restype = _MallInfo2
    got = info()
    return {
        "malloc_mb": {
            "arenas": round(got.arena / MB, 1),
            "in use": round(got.uordblks / MB, 1),
            "free, kept": round(got.fordblks / MB, 1),
            "mapped blocks": round(got.hblkhd / MB, 1),
        }
    }


def _arrays() -> list[tuple[str, float, float]]:
    """NumPy arrays of 8 MB or more reachable from a container, by the container's type, with
    their size and resident MB (of the mappings they span: the kernel splits an array's mapping
    where NumPy asks for huge pages)."""
    import gc

    import numpy as np

    spans = []
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if "-" in parts[0] and not parts[0].endswith(":"):
            start, end = (int(x, 16) for x in parts[0].split("-"))
        elif parts[0] == "Rss:":
            spans.append((start, end, int(parts[1]) / 1024))
    found: dict[int, tuple[str, float, float]] = {}
    for holder in gc.get_objects():
        try:
            referents = gc.get_referents(holder)
        except Exception:
            continue
        for item in referents:
            if isinstance(item, np.ndarray) and item.nbytes >= 8 * MB:
                base = item if item.base is None else item.base
                if not isinstance(base, np.ndarray):
                    continue
                address = base.ctypes.data
                end = address + base.nbytes
                rss = sum(r for a, b, r in spans if a < end and address < b)
                label = type(holder).__name__
                if isinstance(holder, dict):
                    keys = [k for k, v in holder.items() if v is item][:1]
                    label = f"dict[{keys[0]!r}]" if keys else "dict"
                found.setdefault(address, (label, round(base.nbytes / MB, 1), round(rss, 1)))
    return sorted(found.values(), key=lambda f: -f[2])
