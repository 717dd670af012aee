"""glibc's malloc, set for chunk traffic: how many arenas a process uses, and where
chunk-sized blocks come from (glibc only; the server and every site).

glibc gives threads their own arenas (up to eight a core) and keeps the blocks freed in each.
gRPC's threads allocate and free a chunk-sized buffer (1 MiB) for every chunk sent to or read
from a site, on whichever thread runs; with an arena each, every arena ends up holding tens of
megabytes of freed chunks, resident, while the live buffers stay near a few megabytes a site.
On the deployment benchmark (20 sites, a 38 MB model) the server's peak fell by about 60 MB
with one arena, at the same throughput, and a site's by about 10 MB (docs/deployment.md,
Memory).

Blocks of a chunk's size sit at glibc's boundaries: its threshold for giving a block its own
``mmap`` moves with the blocks freed, and it returns the heap's top to the system once 2 MiB
of it are free, so a stream of chunks kept mapping fresh pages, each zeroed by the kernel on
its first touch (a site on that benchmark took about 7,800 page faults a round, 30 MB of fresh
pages for a 38 MB model and its update, beside 13,500 at start-up). :func:`keep_chunks_on_heap`
fixes both: blocks under 4 MiB (every chunk, at most 4 MiB, and gRPC's buffers for it) come
from the heap, and the heap keeps up to 16 MiB free at its top before it gives any back; a
model-sized vector still gets its own mapping and goes back whole when freed.

Both are ``mallopt`` calls that bound what is allocated from then on, so a process makes them
before its gRPC threads start. They do nothing where the C library is not glibc, or where the
environment already chose (``MALLOC_ARENA_MAX``, ``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``, or the same in ``GLIBC_TUNABLES``), which then stands.
"""

from __future__ import annotations

import ctypes
import os

from fedloom.core import validate

M_ARENA_MAX = -8
"""``mallopt``'s parameter for the most arenas (glibc's ``malloc.h``)."""
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
HEAP_BELOW = 4 << 20
"""Blocks smaller than this come from the heap: any chunk, and gRPC's buffers for it."""
TRIM_ABOVE = 16 << 20
"""Free memory at the heap's top beyond this goes back to the system."""


def environment_chooses(*variables: str) -> bool:
    """Whether the process's environment sets any of glibc's malloc ``variables`` itself
    (``MALLOC_ARENA_MAX`` and the like, or their tunables)."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    for variable in variables:
        tunable = "glibc.malloc." + variable.removeprefix("MALLOC_").rstrip("_").lower()
        if variable in os.environ or tunable in tunables:
            return True
    return False


def _mallopt() -> ctypes._NamedFuncPointer | None:
    """glibc's ``mallopt``; None elsewhere (musl's is a stub)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc's alone)
        mallopt = libc.mallopt
    except (AttributeError, OSError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt


def limit_malloc_arenas(count: int) -> bool:
    """Let glibc's malloc create at most ``count`` arenas from now on (``mallopt``); True if it
    accepted, False where it was not asked (not glibc, or the environment chose already)."""
    validate.positive_int("the malloc arena count", count)
    mallopt = _mallopt()
    if mallopt is None or environment_chooses("MALLOC_ARENA_MAX"):
        return False
    return bool(mallopt(M_ARENA_MAX, count) == 1)


def keep_chunks_on_heap() -> bool:
    """Serve blocks under :data:`HEAP_BELOW` from the heap and keep up to :data:`TRIM_ABOVE`
    of it free (``mallopt``); True if glibc accepted both, False where it was not asked."""
    mallopt = _mallopt()
    if mallopt is None or environment_chooses("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        return False
    mapped = mallopt(M_MMAP_THRESHOLD, HEAP_BELOW) == 1
    return bool(mapped and mallopt(M_TRIM_THRESHOLD, TRIM_ABOVE) == 1)


def tune_malloc(arenas: int) -> str:
    """:func:`limit_malloc_arenas` and :func:`keep_chunks_on_heap`, as a server or a site does
    before its gRPC threads start; what was done, in words, for its log."""
    limited = limit_malloc_arenas(arenas)
    kept = keep_chunks_on_heap()
    return "; ".join(
        (
            f"at most {arenas} arena{'s' if arenas > 1 else ''}"
            if limited
            else "arenas as they are",
            "chunks kept on the heap" if kept else "chunk blocks as glibc places them",
        )
    )
